//! Task messages of a run and their stable task run ids.

use uuid::Uuid;

use super::{Pipeline, TaskDefinition};
use crate::messages::{Meta, TaskCommon, TaskMessage};

/// Run-specific fields of one task message.
#[derive(Debug, Clone, PartialEq)]
pub struct RunContext {
    pub run_uuid: Uuid,
    /// Usually [`task_run_uuid`] of the run, the task and its cause.
    pub task_run_uuid: Uuid,
    pub organization_uuid: Uuid,
    /// The run input for an initial task, or the triggering result's output.
    pub input: Vec<u8>,
    /// Carried from the triggering result. Its run config decides `is_final_task`.
    pub meta: Meta,
    pub is_initial: bool,
}

/// Cause of a task run: the start of the run or one output of an earlier task run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskRunCause {
    /// The task is an initial task of the run.
    Initial,
    /// Output `output_index` of the result of task run `task_run_uuid`. A for_each result
    /// has one output per element, each a separate cause.
    Output {
        task_run_uuid: Uuid,
        output_index: u32,
    },
}

/// Returns the id of the run of `task_uuid` in `run_uuid` caused by `cause`: a UUID v5 in
/// the run's namespace of the task uuid and the cause. A redelivered result therefore
/// gives the same task run id again, so the duplicate task run can be recognised.
pub fn task_run_uuid(run_uuid: Uuid, task_uuid: Uuid, cause: TaskRunCause) -> Uuid {
    let mut key = Vec::with_capacity(36);
    key.extend_from_slice(task_uuid.as_bytes());
    match cause {
        TaskRunCause::Initial => key.extend_from_slice(Uuid::nil().as_bytes()),
        // The extra index bytes keep an output cause apart from the initial one even when
        // the earlier task run id is nil.
        TaskRunCause::Output {
            task_run_uuid,
            output_index,
        } => {
            key.extend_from_slice(task_run_uuid.as_bytes());
            key.extend_from_slice(&output_index.to_be_bytes());
        }
    }
    Uuid::new_v5(&run_uuid, &key)
}

impl Pipeline {
    /// Builds the task message that runs `task` in the run described by `run`.
    /// `is_final_task` is computed with the run config in `run.meta`.
    pub fn task_message(&self, task: &TaskDefinition, run: RunContext) -> TaskMessage {
        let is_final_task = self.is_final(task.uuid, &run.meta.pipeline_run_config);
        let common = TaskCommon {
            pipeline_type: "generic".to_owned(),
            pipeline_run_uuid: run.run_uuid,
            task_run_uuid: run.task_run_uuid,
            task_uuid: task.uuid,
            pipeline_uuid: self.uuid,
            organization_uuid: run.organization_uuid,
            creator_uuid: Uuid::nil(),
            task_name: task.name.clone(),
            is_initial_task: run.is_initial,
            is_final_task,
            input: run.input,
            meta: run.meta,
            attempt: Some(1),
            timeout_ms: task.timeout_ms,
            max_attempts: task.max_attempts,
            retry_not_before_ms: None,
            previous_errors: Vec::new(),
        };
        TaskMessage {
            common,
            kind: task.kind.clone(),
        }
    }
}
