//! Task messages published to `task_runs` and `task_runs_load_balanced`.
//!
//! A task message is the common fields of every task flattened together with the fields of its
//! type. The type is not a field: it is the envelope's `X-Message-Name`, so [`TaskKind`] is
//! chosen by name when decoding and the two halves are merged into one object when encoding.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Fields shared by every task message.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCommon {
    /// `generic` or `metric`.
    #[serde(default = "default_pipeline_type")]
    pub pipeline_type: String,
    /// The pipeline run this task belongs to; also the record key.
    #[serde(default)]
    pub pipeline_run_uuid: Uuid,
    /// Ylem always sends the nil UUID here. This runtime sets a stable id derived from the run,
    /// the task and the result that triggered it, so a redelivered task is recognised.
    #[serde(default)]
    pub task_run_uuid: Uuid,
    #[serde(default)]
    pub task_uuid: Uuid,
    #[serde(default)]
    pub pipeline_uuid: Uuid,
    #[serde(default)]
    pub organization_uuid: Uuid,
    #[serde(default)]
    pub creator_uuid: Uuid,
    #[serde(default)]
    pub task_name: String,
    #[serde(default)]
    pub is_initial_task: bool,
    #[serde(default)]
    pub is_final_task: bool,
    /// The output of the task that triggered this one, or the run input for an initial task.
    #[serde(default, with = "super::base64_bytes")]
    pub input: Vec<u8>,
    #[serde(default)]
    pub meta: Meta,
    /// Execution attempt of this task run, starting at 1. Absent in Ylem's messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Time limit of this task from its pipeline file; absent means the runner's default for
    /// the task type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Executions allowed for retryable failures; absent means the runner's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// A retry waits until this time (Unix milliseconds) before it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_not_before_ms: Option<i64>,
    /// Errors of the earlier attempts of this task run, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_errors: Vec<super::result::TaskRunError>,
}

fn default_pipeline_type() -> String {
    "generic".to_owned()
}

impl std::fmt::Debug for TaskCommon {
    // Prints sizes instead of payloads, so logs never carry task data.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskCommon")
            .field("pipeline_run_uuid", &self.pipeline_run_uuid)
            .field("task_run_uuid", &self.task_run_uuid)
            .field("task_uuid", &self.task_uuid)
            .field("pipeline_uuid", &self.pipeline_uuid)
            .field("task_name", &self.task_name)
            .field("is_initial_task", &self.is_initial_task)
            .field("is_final_task", &self.is_final_task)
            .field("input_bytes", &self.input.len())
            .finish()
    }
}

/// Run-scoped data carried from task to task. The keys are Go field names without JSON tags.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    #[serde(rename = "SqlQueryColumnOrder", default)]
    pub sql_query_column_order: Option<Vec<String>>,
    #[serde(rename = "InputCount", default)]
    pub input_count: i64,
    #[serde(rename = "EnvVars", default, deserialize_with = "null_as_default")]
    pub env_vars: BTreeMap<String, serde_json::Value>,
    #[serde(rename = "PipelineRunConfig", default)]
    pub pipeline_run_config: PipelineRunConfig,
}

/// Restricts a run to a subset of tasks and triggers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PipelineRunConfig {
    #[serde(default)]
    pub task_ids: IdFilter,
    #[serde(default)]
    pub task_trigger_ids: IdFilter,
}

/// An id list with a mode: `enabled` keeps only the ids, `disabled` drops them, `""` filters nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IdFilter {
    #[serde(rename = "type", default)]
    pub mode: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub ids: Vec<String>,
}

impl IdFilter {
    /// Returns whether `id` passes this filter.
    pub fn allows(&self, id: &str) -> bool {
        match self.mode.as_str() {
            "enabled" => self.ids.iter().any(|allowed| allowed == id),
            "disabled" => !self.ids.iter().any(|denied| denied == id),
            _ => true,
        }
    }
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A query source. Ylem sends encrypted connection details; this runtime sends only the source
/// `name`, which the task runner looks up in its own `[sources]` configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Source {
    #[serde(default)]
    pub uuid: Uuid,
    #[serde(default)]
    pub status: String,
    #[serde(rename = "type", default)]
    pub source_type: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

/// `tasks.run_query`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunQuery {
    #[serde(default)]
    pub source: Source,
    #[serde(default)]
    pub query: String,
}

/// `tasks.check_condition`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckCondition {
    #[serde(default)]
    pub expression: String,
}

/// `tasks.transform_data`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TransformData {
    /// `str_split`, `cast_to`, `extract_from_json` or `encode_to`.
    #[serde(rename = "type", default)]
    pub transform_type: String,
    #[serde(default)]
    pub json_query_expression: String,
    #[serde(default)]
    pub delimiter: String,
    #[serde(default)]
    pub cast_to_type: String,
    #[serde(default)]
    pub decode_format: String,
    #[serde(default)]
    pub encode_format: String,
}

/// `tasks.process_data`: a jq program applied to the input.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessData {
    #[serde(default)]
    pub expression: String,
    #[serde(default)]
    pub strategy: String,
}

/// HTTP target of an api_call or webhook notification. Secrets are named by environment
/// variable (`*_env`) so that they never travel in a record; the task runner reads them.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApiIntegration {
    #[serde(default)]
    pub uuid: Uuid,
    #[serde(rename = "type", default)]
    pub integration_type: String,
    #[serde(default)]
    pub name: String,
    /// The target URL.
    #[serde(default)]
    pub value: String,
    #[serde(default)]
    pub method: String,
    /// `none`, `basic`, `bearer` or `header`.
    #[serde(default)]
    pub auth_type: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub auth_bearer_token_env: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub auth_basic_user_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub auth_basic_password_env: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub auth_header_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub auth_header_value_env: String,
}

impl std::fmt::Debug for ApiIntegration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiIntegration")
            .field("name", &self.name)
            .field("value", &self.value)
            .field("method", &self.method)
            .field("auth_type", &self.auth_type)
            .finish_non_exhaustive()
    }
}

/// `tasks.call_api`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallApi {
    /// HTTP method; Ylem also accepts it inside the integration.
    #[serde(rename = "type", default)]
    pub method: String,
    /// Request body template. Empty means the task input is sent as the body.
    #[serde(default)]
    pub payload: String,
    #[serde(default)]
    pub query_string: String,
    /// Extra request headers as a JSON object of strings.
    #[serde(default)]
    pub headers: String,
    #[serde(default)]
    pub attached_file_name: String,
    #[serde(default)]
    pub integration: ApiIntegration,
    /// Treat a non-2xx response as a success, as Ylem did. False by default.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub accept_error_status: bool,
}

/// `tasks.send_notification`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SendNotification {
    /// Channel type; this runtime sends `webhook` (and `slack` incoming webhooks).
    #[serde(rename = "type", default)]
    pub notification_type: String,
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub integration: ApiIntegration,
    #[serde(default)]
    pub severity: String,
    #[serde(default)]
    pub attached_file_name: String,
    #[serde(default)]
    pub is_confirmed: bool,
}

/// The type-specific half of a task message, chosen by the envelope's message name.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskKind {
    RunQuery(RunQuery),
    CheckCondition(CheckCondition),
    TransformData(TransformData),
    ProcessData(ProcessData),
    CallApi(CallApi),
    SendNotification(SendNotification),
    RunForEach,
    /// A Ylem task type this runtime does not execute yet; the fields are kept as they came.
    Other {
        message_name: String,
        fields: serde_json::Map<String, serde_json::Value>,
    },
}

impl TaskKind {
    /// Returns the envelope `X-Message-Name` of this kind.
    pub fn message_name(&self) -> &str {
        match self {
            TaskKind::RunQuery(_) => "tasks.run_query",
            TaskKind::CheckCondition(_) => "tasks.check_condition",
            TaskKind::TransformData(_) => "tasks.transform_data",
            TaskKind::ProcessData(_) => "tasks.process_data",
            TaskKind::CallApi(_) => "tasks.call_api",
            TaskKind::SendNotification(_) => "tasks.send_notification",
            TaskKind::RunForEach => "tasks.run_for_each",
            TaskKind::Other { message_name, .. } => message_name,
        }
    }

    /// Returns the `task_type` that results of this kind carry.
    pub fn task_type(&self) -> &str {
        match self {
            TaskKind::RunQuery(_) => "query",
            TaskKind::CheckCondition(_) => "condition",
            TaskKind::TransformData(_) => "transformer",
            TaskKind::ProcessData(_) => "processor",
            TaskKind::CallApi(_) => "api_call",
            TaskKind::SendNotification(_) => "notification",
            TaskKind::RunForEach => "for_each",
            TaskKind::Other { message_name, .. } => task_type_of_message_name(message_name),
        }
    }
}

/// Maps a Ylem task message name to its task type; unknown names map to `unknown`.
pub fn task_type_of_message_name(name: &str) -> &'static str {
    match name {
        "tasks.run_query" => "query",
        "tasks.check_condition" => "condition",
        "tasks.aggregate_data" => "aggregator",
        "tasks.transform_data" => "transformer",
        "tasks.call_api" => "api_call",
        "tasks.send_notification" => "notification",
        "tasks.run_for_each" => "for_each",
        "tasks.merge" => "merge",
        "tasks.filter" => "filter",
        "tasks.external_trigger" => "external_trigger",
        "tasks.execute_code" => "code",
        "tasks.call_openapi_gpt" => "gpt",
        "tasks.process_data" => "processor",
        "tasks.run_pipeline" => "run_pipeline",
        _ => "unknown",
    }
}

/// Returns whether `name` is one of the task message names Ylem defines.
pub fn is_task_message_name(name: &str) -> bool {
    task_type_of_message_name(name) != "unknown"
}

/// A complete task message: common fields plus the fields of its type.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskMessage {
    pub common: TaskCommon,
    pub kind: TaskKind,
}

impl TaskMessage {
    /// Decodes the `message` object of an envelope whose name is `message_name`.
    pub fn from_json(
        message_name: &str,
        message: serde_json::Value,
    ) -> Result<TaskMessage, serde_json::Error> {
        let common: TaskCommon = serde_json::from_value(message.clone())?;
        let kind = match message_name {
            "tasks.run_query" => TaskKind::RunQuery(serde_json::from_value(message)?),
            "tasks.check_condition" => TaskKind::CheckCondition(serde_json::from_value(message)?),
            "tasks.transform_data" => TaskKind::TransformData(serde_json::from_value(message)?),
            "tasks.process_data" => TaskKind::ProcessData(serde_json::from_value(message)?),
            "tasks.call_api" => TaskKind::CallApi(serde_json::from_value(message)?),
            "tasks.send_notification" => {
                TaskKind::SendNotification(serde_json::from_value(message)?)
            }
            "tasks.run_for_each" => TaskKind::RunForEach,
            other => {
                let serde_json::Value::Object(mut fields) = message else {
                    return Err(serde::de::Error::custom(
                        "task message is not a JSON object",
                    ));
                };
                for common_field in COMMON_FIELDS {
                    fields.remove(*common_field);
                }
                TaskKind::Other {
                    message_name: other.to_owned(),
                    fields,
                }
            }
        };
        Ok(TaskMessage { common, kind })
    }

    /// Encodes the `message` object: the common fields and the type fields in one object.
    pub fn to_json(&self) -> serde_json::Value {
        let mut object = match serde_json::to_value(&self.common) {
            Ok(serde_json::Value::Object(object)) => object,
            _ => unreachable!("TaskCommon always serializes to an object"),
        };
        let kind_fields = match &self.kind {
            TaskKind::RunQuery(fields) => serde_json::to_value(fields),
            TaskKind::CheckCondition(fields) => serde_json::to_value(fields),
            TaskKind::TransformData(fields) => serde_json::to_value(fields),
            TaskKind::ProcessData(fields) => serde_json::to_value(fields),
            TaskKind::CallApi(fields) => serde_json::to_value(fields),
            TaskKind::SendNotification(fields) => serde_json::to_value(fields),
            TaskKind::RunForEach => Ok(serde_json::Value::Object(Default::default())),
            TaskKind::Other { fields, .. } => Ok(serde_json::Value::Object(fields.clone())),
        };
        if let Ok(serde_json::Value::Object(kind_fields)) = kind_fields {
            object.extend(kind_fields);
        }
        serde_json::Value::Object(object)
    }
}

const COMMON_FIELDS: &[&str] = &[
    "pipeline_type",
    "pipeline_run_uuid",
    "task_run_uuid",
    "task_uuid",
    "pipeline_uuid",
    "organization_uuid",
    "creator_uuid",
    "task_name",
    "is_initial_task",
    "is_final_task",
    "input",
    "meta",
    "attempt",
    "timeout_ms",
    "max_attempts",
    "retry_not_before_ms",
    "previous_errors",
];
