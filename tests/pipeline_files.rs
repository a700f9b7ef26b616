//! Parsing, validation and loading of pipeline files.

use std::path::{Path, PathBuf};

use ylem_runtime::messages::{IdFilter, PipelineRunConfig, TaskKind};
use ylem_runtime::pipeline::{load_path, parse_pipeline, Pipeline, PipelineErrors, TriggerType};

fn fixture(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pipelines")
        .join(relative)
}

fn penguin_report() -> Pipeline {
    let path = fixture("valid/penguin-report.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap();
    parse_pipeline("penguin-report.yaml", &yaml).unwrap_or_else(|errors| panic!("{errors}"))
}

fn names<'a>(
    tasks: impl IntoIterator<Item = &'a ylem_runtime::pipeline::TaskDefinition>,
) -> Vec<&'a str> {
    tasks.into_iter().map(|task| task.name.as_str()).collect()
}

fn uuid_of(pipeline: &Pipeline, name: &str) -> uuid::Uuid {
    pipeline.task_by_name(name).unwrap().uuid
}

fn filter(mode: &str, ids: Vec<String>) -> IdFilter {
    IdFilter {
        mode: mode.to_owned(),
        ids,
    }
}

#[test]
fn valid_pipeline_parses() {
    let pipeline = penguin_report();

    assert_eq!(pipeline.name, "penguin-report");
    assert_eq!(pipeline.tasks.len(), 7);
    assert_eq!(pipeline.triggers.len(), 6);
    let schedule = pipeline.schedule.as_ref().unwrap();
    assert_eq!(schedule.cron, "*/5 * * * *");
    assert_eq!(schedule.timezone, "Europe/Amsterdam");
    assert_eq!(
        pipeline.task_by_name("load").unwrap().timeout_ms,
        Some(5000)
    );
    assert_eq!(pipeline.task_by_name("heavy").unwrap().timeout_ms, None);
}

#[test]
fn task_fields_become_message_fields() {
    let pipeline = penguin_report();

    let TaskKind::RunQuery(query) = &pipeline.task_by_name("load").unwrap().kind else {
        panic!("load is not a query");
    };
    assert_eq!(query.source.name, "penguins");
    assert_eq!(query.query, "SELECT species, body_mass_g FROM penguins");

    let TaskKind::CallApi(call) = &pipeline.task_by_name("post").unwrap().kind else {
        panic!("post is not an api_call");
    };
    assert_eq!(call.method, "POST");
    assert_eq!(call.integration.value, "http://127.0.0.1:8089/ingest");
    assert_eq!(call.integration.auth_type, "bearer");
    assert_eq!(call.integration.auth_bearer_token_env, "INGEST_TOKEN");
    assert_eq!(call.headers, r#"{"X-Source":"ylem"}"#);
    assert_eq!(call.payload, r#"{"n": {{COUNT(species)}}}"#);

    let TaskKind::TransformData(transform) = &pipeline.task_by_name("pick").unwrap().kind else {
        panic!("pick is not a transformer");
    };
    assert_eq!(transform.transform_type, "extract_from_json");
    assert_eq!(transform.json_query_expression, "0.species");

    let TaskKind::SendNotification(notification) = &pipeline.task_by_name("notify").unwrap().kind
    else {
        panic!("notify is not a notification");
    };
    assert_eq!(notification.notification_type, "webhook");
    assert_eq!(notification.integration.value, "http://127.0.0.1:8089/hook");
    assert_eq!(notification.severity, "medium");

    assert_eq!(
        pipeline.task_by_name("each").unwrap().kind,
        TaskKind::RunForEach
    );
    assert_eq!(
        pipeline.task_by_name("reshape").unwrap().task_type,
        "processor"
    );
}

#[test]
fn graph_follows_trigger_types() {
    let pipeline = penguin_report();
    let all = PipelineRunConfig::default();
    let heavy = uuid_of(&pipeline, "heavy");
    let reshape = uuid_of(&pipeline, "reshape");

    assert_eq!(names(pipeline.initial_tasks(&all)), ["load"]);
    assert_eq!(
        names(pipeline.next_tasks(uuid_of(&pipeline, "load"), TriggerType::Output, &all)),
        ["heavy"]
    );
    assert_eq!(
        names(pipeline.next_tasks(heavy, TriggerType::ConditionTrue, &all)),
        ["reshape"]
    );
    assert_eq!(
        names(pipeline.next_tasks(heavy, TriggerType::ConditionFalse, &all)),
        ["notify"]
    );
    assert!(pipeline
        .next_tasks(heavy, TriggerType::Output, &all)
        .is_empty());
    assert_eq!(
        names(pipeline.next_tasks(reshape, TriggerType::Output, &all)),
        ["each", "pick"]
    );
    assert_eq!(
        names(pipeline.next_tasks(uuid_of(&pipeline, "each"), TriggerType::Output, &all)),
        ["post"]
    );
}

#[test]
fn final_flags_follow_triggers() {
    let pipeline = penguin_report();
    let all = PipelineRunConfig::default();

    for name in ["post", "pick", "notify"] {
        assert!(
            pipeline.is_final(uuid_of(&pipeline, name), &all),
            "{name} should be final"
        );
    }
    for name in ["load", "heavy", "reshape", "each"] {
        assert!(
            !pipeline.is_final(uuid_of(&pipeline, name), &all),
            "{name} should not be final"
        );
    }
}

#[test]
fn run_config_filters_tasks() {
    let pipeline = penguin_report();
    let reshape = uuid_of(&pipeline, "reshape");

    // Running only reshape and pick makes reshape initial and pick its only next task.
    let enabled = PipelineRunConfig {
        task_ids: filter(
            "enabled",
            vec![reshape.to_string(), uuid_of(&pipeline, "pick").to_string()],
        ),
        ..PipelineRunConfig::default()
    };
    assert_eq!(names(pipeline.initial_tasks(&enabled)), ["reshape"]);
    assert_eq!(
        names(pipeline.next_tasks(reshape, TriggerType::Output, &enabled)),
        ["pick"]
    );
    assert!(pipeline.is_final(uuid_of(&pipeline, "pick"), &enabled));

    // Dropping each makes pick reshape's only next task. Post loses its only active
    // incoming trigger, so it starts the run next to load.
    let disabled = PipelineRunConfig {
        task_ids: filter("disabled", vec![uuid_of(&pipeline, "each").to_string()]),
        ..PipelineRunConfig::default()
    };
    assert_eq!(names(pipeline.initial_tasks(&disabled)), ["load", "post"]);
    assert_eq!(
        names(pipeline.next_tasks(reshape, TriggerType::Output, &disabled)),
        ["pick"]
    );
}

#[test]
fn run_config_filters_triggers() {
    let pipeline = penguin_report();
    let heavy = uuid_of(&pipeline, "heavy");
    let false_trigger = pipeline
        .triggers
        .iter()
        .find(|trigger| {
            trigger.from == heavy && trigger.trigger_type == TriggerType::ConditionFalse
        })
        .unwrap();

    let config = PipelineRunConfig {
        task_trigger_ids: filter("disabled", vec![false_trigger.uuid.to_string()]),
        ..PipelineRunConfig::default()
    };

    assert!(pipeline
        .next_tasks(heavy, TriggerType::ConditionFalse, &config)
        .is_empty());
    assert_eq!(
        names(pipeline.next_tasks(heavy, TriggerType::ConditionTrue, &config)),
        ["reshape"]
    );
    // Without its incoming trigger, notify starts the run too.
    assert_eq!(names(pipeline.initial_tasks(&config)), ["load", "notify"]);
}

#[test]
fn uuids_stable_across_parses() {
    let first = penguin_report();
    let second = penguin_report();

    assert_eq!(first.uuid, second.uuid);
    assert_eq!(
        first.uuid,
        ylem_runtime::pipeline::pipeline_uuid("penguin-report")
    );
    for (a, b) in first.tasks.iter().zip(&second.tasks) {
        assert_eq!(a.uuid, b.uuid);
    }
    for (a, b) in first.triggers.iter().zip(&second.triggers) {
        assert_eq!(a.uuid, b.uuid);
    }
    let task_uuids: std::collections::BTreeSet<_> =
        first.tasks.iter().map(|task| task.uuid).collect();
    assert_eq!(task_uuids.len(), first.tasks.len(), "task uuids collide");
    let trigger_uuids: std::collections::BTreeSet<_> =
        first.triggers.iter().map(|trigger| trigger.uuid).collect();
    assert_eq!(
        trigger_uuids.len(),
        first.triggers.len(),
        "trigger uuids collide"
    );
}

#[test]
fn uuids_differ_by_pipeline_name() {
    let yaml = std::fs::read_to_string(fixture("valid/penguin-report.yaml")).unwrap();
    let renamed_yaml = yaml.replace("name: penguin-report", "name: penguin-report-copy");

    let original = parse_pipeline("a.yaml", &yaml).unwrap();
    let renamed = parse_pipeline("b.yaml", &renamed_yaml).unwrap();

    assert_ne!(original.uuid, renamed.uuid);
    assert_ne!(original.tasks[0].uuid, renamed.tasks[0].uuid);
}

#[test]
fn source_yaml_round_trips() {
    let pipeline = penguin_report();

    let reparsed = parse_pipeline("stored", &pipeline.source_yaml).unwrap();

    assert_eq!(reparsed, pipeline);
}

#[test]
fn folder_loads_sorted() {
    let pipelines = load_path(&fixture("valid")).unwrap_or_else(|errors| panic!("{errors}"));

    let names: Vec<&str> = pipelines
        .iter()
        .map(|pipeline| pipeline.name.as_str())
        .collect();
    assert_eq!(names, ["hourly-count", "penguin-report"]);
}

#[test]
fn single_file_loads() {
    let pipelines = load_path(&fixture("valid/hourly-count.yml")).unwrap();

    assert_eq!(pipelines.len(), 1);
    assert_eq!(pipelines[0].name, "hourly-count");
    assert!(pipelines[0].schedule.is_none());
}

#[test]
fn folder_with_invalid_file_rejected() {
    let errors: PipelineErrors = load_path(&fixture("mixed")).unwrap_err();

    let problems = errors.problems();
    assert_eq!(problems.len(), 1, "{errors}");
    assert!(problems[0].file.ends_with("b-invalid.yaml"), "{errors}");
    assert_eq!(problems[0].field, "tasks[0].sql");
    assert!(problems[0].message.contains("missing"), "{errors}");
    assert!(
        errors
            .to_string()
            .contains("b-invalid.yaml: tasks[0].sql: missing field"),
        "{errors}"
    );
}

#[test]
fn duplicate_names_across_files_rejected() {
    let errors = load_path(&fixture("duplicate_names")).unwrap_err();

    let problems = errors.problems();
    assert_eq!(problems.len(), 1, "{errors}");
    assert!(problems[0].file.ends_with("second.yaml"), "{errors}");
    assert_eq!(problems[0].field, "name");
    assert!(problems[0].message.contains("first.yaml"), "{errors}");
}

#[test]
fn missing_path_rejected() {
    let errors = load_path(&fixture("no-such-folder")).unwrap_err();

    assert_eq!(errors.problems().len(), 1);
    assert!(
        errors.to_string().contains("failed to read the path"),
        "{errors}"
    );
}
