//! `result.task_run`: the outcome of one task execution, published to `task_run_results`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::codes::ErrorCode;
use super::task::{Meta, TaskCommon};

pub const RESULT_MESSAGE_NAME: &str = "result.task_run";

/// Severity of a task error; a warning does not by itself fail a task in Ylem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorSeverity {
    Error,
    Warning,
}

/// One error of a failed task. The capitalised keys are Go field names without JSON tags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRunError {
    #[serde(rename = "Code")]
    pub code: u32,
    #[serde(rename = "Severity")]
    pub severity: ErrorSeverity,
    #[serde(rename = "Message")]
    pub message: String,
}

impl TaskRunError {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> TaskRunError {
        TaskRunError {
            code: code.as_u32(),
            severity: ErrorSeverity::Error,
            message: message.into(),
        }
    }
}

/// The result of one task execution.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRunResult {
    #[serde(default = "default_pipeline_type")]
    pub pipeline_type: String,
    #[serde(default)]
    pub pipeline_run_uuid: Uuid,
    #[serde(default)]
    pub task_run_uuid: Uuid,
    #[serde(default)]
    pub task_uuid: Uuid,
    #[serde(default)]
    pub task_type: String,
    #[serde(default)]
    pub pipeline_uuid: Uuid,
    #[serde(default)]
    pub organization_uuid: Uuid,
    #[serde(default)]
    pub creator_uuid: Uuid,
    #[serde(default)]
    pub is_initial_task: bool,
    #[serde(default)]
    pub is_final_task: bool,
    #[serde(default)]
    pub meta: Meta,
    /// A fresh id for every result.
    #[serde(default)]
    pub uuid: Uuid,
    #[serde(default)]
    pub is_successful: bool,
    /// `null` when there are no errors, as Go encodes a nil slice.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub errors: Vec<TaskRunError>,
    /// Ylem never sets the result input, so it is `null` on the wire.
    #[serde(default, with = "super::base64_bytes::option")]
    pub input: Option<Vec<u8>>,
    #[serde(default, with = "super::base64_bytes")]
    pub output: Vec<u8>,
    /// When the task finished, RFC 3339.
    #[serde(rename = "executedAt", with = "rfc3339")]
    pub executed_at: DateTime<Utc>,
    /// Duration in milliseconds.
    #[serde(default)]
    pub duration: u64,
    /// Index of this result among the results of one task run (for_each emits one per item).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_index: Option<u32>,
    /// Number of results the task run emits; absent means one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    /// Execution attempt that produced this result, starting at 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_name: Option<String>,
}

fn default_pipeline_type() -> String {
    "generic".to_owned()
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<TaskRunError>, D::Error> {
    Ok(Option::<Vec<TaskRunError>>::deserialize(deserializer)?.unwrap_or_default())
}

impl std::fmt::Debug for TaskRunResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskRunResult")
            .field("uuid", &self.uuid)
            .field("pipeline_run_uuid", &self.pipeline_run_uuid)
            .field("task_run_uuid", &self.task_run_uuid)
            .field("task_uuid", &self.task_uuid)
            .field("task_type", &self.task_type)
            .field("is_successful", &self.is_successful)
            .field("errors", &self.errors)
            .field("output_bytes", &self.output.len())
            .field("duration_ms", &self.duration)
            .finish()
    }
}

impl TaskRunResult {
    /// Starts a result for the task in `common`, copying the ids and flags Ylem copies.
    pub fn for_task(common: &TaskCommon, task_type: &str) -> TaskRunResult {
        TaskRunResult {
            pipeline_type: common.pipeline_type.clone(),
            pipeline_run_uuid: common.pipeline_run_uuid,
            task_run_uuid: common.task_run_uuid,
            task_uuid: common.task_uuid,
            task_type: task_type.to_owned(),
            pipeline_uuid: common.pipeline_uuid,
            organization_uuid: common.organization_uuid,
            creator_uuid: common.creator_uuid,
            is_initial_task: common.is_initial_task,
            is_final_task: common.is_final_task,
            meta: common.meta.clone(),
            uuid: Uuid::new_v4(),
            is_successful: true,
            errors: Vec::new(),
            input: None,
            output: Vec::new(),
            executed_at: Utc::now(),
            duration: 0,
            batch_index: None,
            batch_size: None,
            attempt: common.attempt,
            task_name: (!common.task_name.is_empty()).then(|| common.task_name.clone()),
        }
    }

    /// Builds a failed result with one error.
    pub fn failure(common: &TaskCommon, task_type: &str, error: TaskRunError) -> TaskRunResult {
        let mut result = TaskRunResult::for_task(common, task_type);
        result.is_successful = false;
        result.errors.push(error);
        result
    }

    /// Message of the first error, for run summaries.
    pub fn first_error_message(&self) -> Option<&str> {
        self.errors.first().map(|error| error.message.as_str())
    }

    /// Serializes to the `message` object, adding Ylem's `executed_at` text field.
    pub fn to_json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).expect("result serializes");
        if let serde_json::Value::Object(object) = &mut value {
            object.insert(
                "executed_at".to_owned(),
                self.executed_at
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string()
                    .into(),
            );
        }
        value
    }
}

/// RFC 3339 timestamps, written with as many fraction digits as needed (up to nanoseconds, as
/// Go writes them) and read with any precision or offset.
mod rfc3339 {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        time: &DateTime<Utc>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&time.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(deserializer)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|time| time.with_timezone(&Utc))
            .map_err(|err| serde::de::Error::custom(format!("invalid executedAt {text:?}: {err}")))
    }
}
