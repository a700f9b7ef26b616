//! Pipelines: graphs of tasks joined by triggers, read from one YAML file each.
//!
//! [`parse_pipeline`] reads one file and [`load_path`] a file or a folder. Both check the
//! whole file and report every problem at once as [`PipelineErrors`]. A parsed
//! [`Pipeline`] answers the graph questions of a run (which tasks start it, which follow
//! a result, which end it) and builds the task messages that the publisher and the
//! trigger listener send.
//!
//! Identifiers are UUID v5 values derived from names, so applying the same file again
//! gives the same pipeline, task and trigger ids, and a store can keep only the file text
//! ([`Pipeline::source_yaml`]) and parse it again.

mod errors;
mod file;
mod graph;
mod load;
mod message;
mod strict;
mod task_spec;
mod validate;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::messages::TaskKind;
use crate::schedule::ScheduleSpec;

pub use errors::{PipelineErrors, Problem};
pub use load::load_path;
pub use message::{task_run_uuid, RunContext, TaskRunCause};
pub use task_spec::{ENCODE_FORMATS, HTTP_METHODS, NOTIFICATION_CHANNELS, TASK_TYPES, TRANSFORMS};

/// Namespace of pipeline uuids. Changing it changes every pipeline, task and trigger id.
pub const PIPELINE_NAMESPACE: Uuid = Uuid::from_u128(0xbd66d160_4719_49ec_a2e8_001503369b44);

/// A validated pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    /// UUID v5 of the name in [`PIPELINE_NAMESPACE`].
    pub uuid: Uuid,
    pub name: String,
    pub description: String,
    pub schedule: Option<ScheduleSpec>,
    /// Tasks in file order.
    pub tasks: Vec<TaskDefinition>,
    /// Triggers in file order.
    pub triggers: Vec<Trigger>,
    /// The file text this pipeline was parsed from.
    pub source_yaml: String,
}

/// One task of a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskDefinition {
    /// UUID v5 of the task name in the pipeline's uuid.
    pub uuid: Uuid,
    pub name: String,
    /// The `type` from the file, one of [`TASK_TYPES`].
    pub task_type: &'static str,
    /// The type-specific fields of the task message.
    pub kind: TaskKind,
    /// Time limit of one execution in milliseconds, when the file sets one.
    pub timeout_ms: Option<u64>,
    /// Executions allowed for retryable failures, when the file sets it.
    pub max_attempts: Option<u32>,
}

/// Kind of result of the source task that fires a trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerType {
    /// Any successful result of a task that is not a condition.
    Output,
    /// A condition task whose expression was true.
    ConditionTrue,
    /// A condition task whose expression was false.
    ConditionFalse,
}

impl TriggerType {
    pub const ALL: [TriggerType; 3] = [
        TriggerType::Output,
        TriggerType::ConditionTrue,
        TriggerType::ConditionFalse,
    ];

    /// Returns the name used in pipeline files and storage: `output`, `condition_true` or
    /// `condition_false`.
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerType::Output => "output",
            TriggerType::ConditionTrue => "condition_true",
            TriggerType::ConditionFalse => "condition_false",
        }
    }

    /// Parses a name returned by [`TriggerType::as_str`].
    pub fn parse(name: &str) -> Option<TriggerType> {
        TriggerType::ALL
            .into_iter()
            .find(|trigger_type| trigger_type.as_str() == name)
    }
}

/// An edge of the pipeline graph: when `from` produces a result of `trigger_type`, `to`
/// runs with that result as input.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    /// UUID v5 of the source name, target name and type in the pipeline's uuid.
    pub uuid: Uuid,
    /// Uuid of the source task.
    pub from: Uuid,
    /// Uuid of the target task.
    pub to: Uuid,
    pub trigger_type: TriggerType,
}

/// Parses and validates one pipeline file. `file_label` names the file in problems,
/// usually its path.
pub fn parse_pipeline(file_label: &str, yaml: &str) -> Result<Pipeline, PipelineErrors> {
    file::parse_file(file_label, yaml)
}

/// Returns the uuid of the pipeline called `name`.
pub fn pipeline_uuid(name: &str) -> Uuid {
    Uuid::new_v5(&PIPELINE_NAMESPACE, name.as_bytes())
}

/// Returns the uuid of the task called `task_name` in the pipeline `pipeline_uuid`.
pub fn task_uuid(pipeline_uuid: Uuid, task_name: &str) -> Uuid {
    Uuid::new_v5(&pipeline_uuid, task_name.as_bytes())
}

/// Returns the uuid of the trigger from task `from` to task `to` (names) in the pipeline
/// `pipeline_uuid`.
pub fn trigger_uuid(pipeline_uuid: Uuid, from: &str, to: &str, trigger_type: TriggerType) -> Uuid {
    // A JSON array keeps the three names apart whatever characters they contain.
    let key = serde_json::json!([from, to, trigger_type.as_str()]).to_string();
    Uuid::new_v5(&pipeline_uuid, key.as_bytes())
}
