//! Task executors: what the task runner does with each task type.
//!
//! [`execute`] turns one task message into its outputs or a failure. It does not apply the
//! time limit, catch panics or build result messages; the partition worker does those, so
//! every executor stays a plain async function of its message and input.

use std::sync::Arc;

use crate::config::Config;
use crate::messages::{ErrorCode, TaskKind, TaskMessage};

/// What a successful execution produced.
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

/// Shared resources of the executors: source connection pools and the HTTP client.
pub struct ExecutionContext {
    pub config: Arc<Config>,
}

impl ExecutionContext {
    pub fn new(config: Arc<Config>) -> anyhow::Result<ExecutionContext> {
        Ok(ExecutionContext { config })
    }
}

/// Executes one task.
pub async fn execute(task: &TaskMessage, _context: &ExecutionContext) -> Result<TaskOutput, TaskFailure> {
    match &task.kind {
        TaskKind::RunForEach => Err(TaskFailure::new(ErrorCode::Internal, "not built yet")),
        other => Err(TaskFailure::new(
            ErrorCode::UnknownTaskType,
            format!("task type {} is not supported by this runtime", other.task_type()),
        )),
    }
}
