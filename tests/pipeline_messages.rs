//! Task messages built from a pipeline, and stable task run ids.

use uuid::Uuid;
use ylem_runtime::messages::{IdFilter, Meta, PipelineRunConfig, TaskKind};
use ylem_runtime::pipeline::{parse_pipeline, task_run_uuid, Pipeline, RunContext, TaskRunCause};

const PIPELINE: &str = "
name: messages
tasks:
  - {name: load, type: query, source: penguins, sql: SELECT 1}
  - {name: check, type: condition, expression: x > 1}
  - {name: done, type: processor, jq: .}
triggers:
  - {from: load, to: check}
  - {from: check, to: done, type: condition_true}
";

fn pipeline() -> Pipeline {
    parse_pipeline("messages.yaml", PIPELINE).unwrap_or_else(|errors| panic!("{errors}"))
}

fn run_context(meta: Meta, is_initial: bool) -> RunContext {
    RunContext {
        run_uuid: Uuid::from_u128(1),
        task_run_uuid: Uuid::from_u128(2),
        organization_uuid: Uuid::from_u128(3),
        input: b"[1,2]".to_vec(),
        meta,
        is_initial,
    }
}

#[test]
fn task_message_fills_common_fields() {
    let pipeline = pipeline();
    let load = pipeline.task_by_name("load").unwrap();

    let message = pipeline.task_message(load, run_context(Meta::default(), true));

    let common = &message.common;
    assert_eq!(common.pipeline_type, "generic");
    assert_eq!(common.pipeline_run_uuid, Uuid::from_u128(1));
    assert_eq!(common.task_run_uuid, Uuid::from_u128(2));
    assert_eq!(common.organization_uuid, Uuid::from_u128(3));
    assert_eq!(common.pipeline_uuid, pipeline.uuid);
    assert_eq!(common.task_uuid, load.uuid);
    assert_eq!(common.task_name, "load");
    assert!(common.is_initial_task);
    assert!(!common.is_final_task);
    assert_eq!(common.input, b"[1,2]");
    assert_eq!(common.attempt, Some(1));
    assert_eq!(message.kind, load.kind);
    assert!(matches!(message.kind, TaskKind::RunQuery(_)));
}

#[test]
fn final_flag_uses_run_config() {
    let pipeline = pipeline();
    let check = pipeline.task_by_name("check").unwrap();
    let done = pipeline.task_by_name("done").unwrap();

    let full_run = pipeline.task_message(check, run_context(Meta::default(), false));
    assert!(!full_run.common.is_final_task);

    let meta = Meta {
        pipeline_run_config: PipelineRunConfig {
            task_ids: IdFilter {
                mode: "disabled".to_owned(),
                ids: vec![done.uuid.to_string()],
            },
            ..PipelineRunConfig::default()
        },
        ..Meta::default()
    };
    let without_done = pipeline.task_message(check, run_context(meta, false));
    assert!(without_done.common.is_final_task);
    assert!(!without_done.common.is_initial_task);
}

#[test]
fn task_run_uuid_stable_per_cause() {
    let run = Uuid::from_u128(10);
    let task = Uuid::from_u128(20);
    let result = Uuid::from_u128(30);
    let first_output = TaskRunCause::Output {
        task_run_uuid: result,
        output_index: 0,
    };
    let second_output = TaskRunCause::Output {
        task_run_uuid: result,
        output_index: 1,
    };
    let nil_output = TaskRunCause::Output {
        task_run_uuid: Uuid::nil(),
        output_index: 0,
    };

    assert_eq!(
        task_run_uuid(run, task, first_output),
        task_run_uuid(run, task, first_output)
    );
    assert_eq!(task_run_uuid(run, task, first_output).get_version_num(), 5);
    assert_ne!(
        task_run_uuid(run, task, first_output),
        task_run_uuid(run, task, second_output)
    );
    assert_ne!(
        task_run_uuid(run, task, TaskRunCause::Initial),
        task_run_uuid(run, task, nil_output)
    );
    assert_ne!(
        task_run_uuid(run, task, first_output),
        task_run_uuid(Uuid::from_u128(11), task, first_output)
    );
    assert_ne!(
        task_run_uuid(run, task, first_output),
        task_run_uuid(run, Uuid::from_u128(21), first_output)
    );
}
