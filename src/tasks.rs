//! Task executors: what the task runner does with each task type.
//!
//! [`execute`] turns one task message into its outputs or a failure. It does not apply the
//! time limit, catch panics or build result messages; the partition worker does those, so
//! every executor stays a plain async function of its message and input.

mod api_call;
mod condition;
pub mod expression;
mod for_each;
mod http;
mod notification;
mod processor;
mod query;
mod transformer;

use std::sync::Arc;

use anyhow::Context;
use tracing::Instrument;

use crate::config::Config;
use crate::messages::{ErrorCode, TaskKind, TaskMessage};

/// Outputs of a successful execution.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskOutput {
    /// One output for most types; for_each emits one per input element.
    pub outputs: Vec<Vec<u8>>,
    /// Column order of a query's rows, carried to later tasks in `meta`.
    pub column_order: Option<Vec<String>>,
}

impl TaskOutput {
    pub fn single(output: Vec<u8>) -> TaskOutput {
        TaskOutput {
            outputs: vec![output],
            column_order: None,
        }
    }
}

/// Why an execution failed: the result's error code and message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message} (code {})", code.as_u32())]
pub struct TaskFailure {
    pub code: ErrorCode,
    pub message: String,
    /// Whether running the task again may succeed (connection refused, timeout, HTTP 429/5xx).
    pub retryable: bool,
}

impl TaskFailure {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> TaskFailure {
        TaskFailure {
            code,
            message: message.into(),
            retryable: false,
        }
    }

    pub fn retryable(code: ErrorCode, message: impl Into<String>) -> TaskFailure {
        TaskFailure {
            code,
            message: message.into(),
            retryable: true,
        }
    }
}

/// Shared resources of the executors: source connection pools, the HTTP client and compiled
/// jq programs. One context serves every task of the process.
pub struct ExecutionContext {
    pub config: Arc<Config>,
    http_client: reqwest::Client,
    source_pools: query::SourcePools,
    jq_programs: processor::ProgramCache,
}

impl ExecutionContext {
    /// Builds the HTTP client with `task_runner.http_user_agent`. Source pools are created
    /// when a query first uses their source.
    pub fn new(config: Arc<Config>) -> anyhow::Result<ExecutionContext> {
        let http_client = reqwest::Client::builder()
            .user_agent(config.task_runner.http_user_agent.clone())
            .build()
            .context("failed to build the HTTP client of api_call and notification tasks")?;
        Ok(ExecutionContext {
            config,
            http_client,
            source_pools: query::SourcePools::default(),
            jq_programs: processor::ProgramCache::default(),
        })
    }
}

/// Task types this runtime executes, for error messages.
const SUPPORTED_TASK_TYPES: &str =
    "query, condition, transformer, processor, api_call, notification, for_each";

/// Executes one task.
pub async fn execute(
    task: &TaskMessage,
    context: &ExecutionContext,
) -> Result<TaskOutput, TaskFailure> {
    let span = tracing::debug_span!(
        "execute_task",
        pipeline_run_uuid = %task.common.pipeline_run_uuid,
        task_uuid = %task.common.task_uuid,
        task_type = task.kind.task_type(),
    );
    let result = execute_kind(task, context).instrument(span.clone()).await;
    if let Err(failure) = &result {
        span.in_scope(|| {
            tracing::debug!(
                code = failure.code.as_u32(),
                retryable = failure.retryable,
                error = %failure.message,
                "task execution failed"
            );
        });
    }
    result
}

async fn execute_kind(
    task: &TaskMessage,
    context: &ExecutionContext,
) -> Result<TaskOutput, TaskFailure> {
    let input = task.common.input.as_slice();
    let meta = &task.common.meta;
    match &task.kind {
        TaskKind::RunQuery(run_query) => query::run(run_query, input, meta, context).await,
        TaskKind::CheckCondition(condition) => condition::run(condition, input, meta),
        TaskKind::TransformData(transform) => transformer::run(transform, input, meta),
        TaskKind::ProcessData(process) => processor::run(process, input, &context.jq_programs).await,
        TaskKind::CallApi(call) => api_call::run(call, input, meta, &context.http_client).await,
        TaskKind::SendNotification(notification) => {
            notification::run(notification, &task.common, &context.http_client).await
        }
        TaskKind::RunForEach => for_each::run(input),
        TaskKind::Other { message_name, .. } => Err(TaskFailure::new(
            ErrorCode::UnknownTaskType,
            format!(
                "task type {} ({message_name}) is not supported by this runtime; supported: {SUPPORTED_TASK_TYPES}",
                task.kind.task_type()
            ),
        )),
    }
}

/// Names the type of a JSON value in messages ("an array", "a string").
fn json_type_name(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
