//! Retries of failed task executions.
//!
//! A retryable failure (connection refused, timeout, HTTP 429 and 5xx) of a task with attempts
//! left is not published as a result. The runner publishes the task again, to the same
//! partition, with the next attempt number, the failure appended to `previous_errors` and a
//! `retry_not_before_ms` time after the backoff. The attempt count therefore travels with the
//! task: a runner that crashes and restarts does not start the count again. The final result
//! carries the errors of every attempt: as errors when the task failed, as warnings when a
//! later attempt succeeded.

use chrono::Utc;

use crate::config::TaskRunnerConfig;
use crate::messages::{ErrorSeverity, TaskMessage, TaskRunError, TaskRunResult};
use crate::tasks::TaskFailure;

/// Returns the attempt number of a task message, starting at 1.
pub fn attempt_of(task: &TaskMessage) -> u32 {
    task.common.attempt.unwrap_or(1).max(1)
}

/// Returns the number of executions allowed for a task.
pub fn max_attempts_of(task: &TaskMessage, config: &TaskRunnerConfig) -> u32 {
    task.common
        .max_attempts
        .unwrap_or(config.max_attempts)
        .max(1)
}

/// Builds the error of one failed attempt, numbered when the task may run more than once.
pub fn attempt_error(
    task: &TaskMessage,
    config: &TaskRunnerConfig,
    failure: &TaskFailure,
) -> TaskRunError {
    let max_attempts = max_attempts_of(task, config);
    // Numbered only where a retry was possible, so a permanent failure does not read as if
    // more attempts follow.
    let message = if max_attempts > 1 && (failure.retryable || attempt_of(task) > 1) {
        format!(
            "attempt {} of {max_attempts}: {}",
            attempt_of(task),
            failure.message
        )
    } else {
        failure.message.clone()
    };
    TaskRunError::error(failure.code, message)
}

/// Builds the task message of the next attempt, or `None` when the failure is final.
pub fn next_attempt(
    task: &TaskMessage,
    config: &TaskRunnerConfig,
    failure: &TaskFailure,
) -> Option<TaskMessage> {
    let attempt = attempt_of(task);
    if !failure.retryable || attempt >= max_attempts_of(task, config) {
        return None;
    }
    let mut retry = task.clone();
    retry.common.attempt = Some(attempt + 1);
    retry
        .common
        .previous_errors
        .push(attempt_error(task, config, failure));
    let backoff = config.retry_backoff(attempt);
    retry.common.retry_not_before_ms =
        Some(Utc::now().timestamp_millis() + backoff.as_millis() as i64);
    Some(retry)
}

/// Adds the errors of earlier attempts to a result: before its own error when it failed, as
/// warnings when it succeeded.
pub fn add_previous_errors(result: &mut TaskRunResult, task: &TaskMessage) {
    if task.common.previous_errors.is_empty() {
        return;
    }
    let mut errors: Vec<TaskRunError> = task.common.previous_errors.clone();
    if result.is_successful {
        for error in &mut errors {
            error.severity = ErrorSeverity::Warning;
        }
    }
    errors.append(&mut result.errors);
    result.errors = errors;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{ErrorCode, Message};

    fn task(attempt: Option<u32>, max_attempts: Option<u32>) -> TaskMessage {
        let json = serde_json::json!({
            "headers": {"X-Message-Name": "tasks.call_api"},
            "message": {"pipeline_run_uuid": uuid::Uuid::new_v4(), "task_name": "call"}
        });
        let Ok(Message::Task(mut task)) = Message::decode(json.to_string().as_bytes()) else {
            panic!("sample decodes");
        };
        task.common.attempt = attempt;
        task.common.max_attempts = max_attempts;
        *task
    }

    #[test]
    fn retryable_failure_schedules_next_attempt() {
        let config = TaskRunnerConfig::default();
        let failure = TaskFailure::retryable(ErrorCode::ApiCallFailed, "connection refused");
        let retry = next_attempt(&task(None, None), &config, &failure).unwrap();
        assert_eq!(retry.common.attempt, Some(2));
        assert_eq!(retry.common.previous_errors.len(), 1);
        assert_eq!(
            retry.common.previous_errors[0].message,
            "attempt 1 of 3: connection refused"
        );
        let wait = retry.common.retry_not_before_ms.unwrap() - Utc::now().timestamp_millis();
        assert!(wait > 900, "{wait}");
        assert!(wait <= 1_000, "{wait}");
    }

    #[test]
    fn last_attempt_is_final() {
        let config = TaskRunnerConfig::default();
        let failure = TaskFailure::retryable(ErrorCode::ApiCallFailed, "timeout");
        assert!(next_attempt(&task(Some(3), None), &config, &failure).is_none());
        assert!(next_attempt(&task(Some(1), Some(1)), &config, &failure).is_none());
    }

    #[test]
    fn permanent_failure_is_final() {
        let config = TaskRunnerConfig::default();
        let failure = TaskFailure::new(ErrorCode::BadRequest, "bad input");
        assert!(next_attempt(&task(None, None), &config, &failure).is_none());
    }

    #[test]
    fn backoff_doubles_up_to_maximum() {
        let config = TaskRunnerConfig {
            retry_backoff_min_ms: 100,
            retry_backoff_max_ms: 250,
            ..TaskRunnerConfig::default()
        };
        assert_eq!(config.retry_backoff(1).as_millis(), 100);
        assert_eq!(config.retry_backoff(2).as_millis(), 200);
        assert_eq!(config.retry_backoff(3).as_millis(), 250);
    }

    #[test]
    fn success_keeps_earlier_errors_as_warnings() {
        let mut earlier = task(Some(2), None);
        earlier.common.previous_errors.push(TaskRunError::error(
            ErrorCode::ApiCallStatus,
            "attempt 1 of 3: status 503",
        ));
        let mut result = TaskRunResult::for_task(&earlier.common, "api_call");
        add_previous_errors(&mut result, &earlier);
        assert!(result.is_successful);
        assert_eq!(result.errors.len(), 1);
        assert_eq!(result.errors[0].severity, ErrorSeverity::Warning);
    }
}
