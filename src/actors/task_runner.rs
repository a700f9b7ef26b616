//! The task runner stage: executes task messages from `task_runs_load_balanced` and publishes
//! their results to `task_run_results`.
//!
//! Every consumed record ends as at least one published result, so a run never waits on a
//! record that was dropped: a record that cannot be decoded becomes a failed result with code
//! 100 carrying whatever ids could be read from it, an unknown message name gets code 9999, a
//! panic or a timeout in an executor gets code 101.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use tracing::{info, info_span, warn, Instrument};

use super::partition_worker::panic_text;
use super::RecordHandler;
use crate::config::{Config, TopicsConfig};
use crate::dead_letter::DeadLetters;
use crate::messages::{
    ErrorCode, Message, TaskCommon, TaskKind, TaskMessage, TaskRunError, TaskRunResult,
};
use crate::store::{RunStatus, Store};
use crate::tasks::{execute, ExecutionContext, TaskFailure, TaskOutput};
use crate::transport::{send_message, OutgoingRecord, Record, Transport};

mod retry;

pub struct TaskRunner {
    transport: Arc<dyn Transport>,
    store: Arc<dyn Store>,
    dead_letters: DeadLetters,
    topics: TopicsConfig,
    config: Arc<Config>,
    context: Arc<ExecutionContext>,
}

impl TaskRunner {
    pub fn new(
        transport: Arc<dyn Transport>,
        store: Arc<dyn Store>,
        dead_letters: DeadLetters,
        config: Arc<Config>,
        context: Arc<ExecutionContext>,
    ) -> TaskRunner {
        TaskRunner {
            transport,
            store,
            dead_letters,
            topics: config.topics.clone(),
            config,
            context,
        }
    }

    /// Executes one task under its time limit, catching panics, and publishes its results or
    /// its next attempt.
    async fn run_task(&self, task: TaskMessage, record: &Record) -> anyhow::Result<()> {
        let run = task.common.pipeline_run_uuid;
        if let Some(not_before) = task.common.retry_not_before_ms {
            let wait_ms = (not_before - Utc::now().timestamp_millis()).max(0) as u64;
            let wait_ms = wait_ms.min(self.config.task_runner.retry_backoff_max_ms);
            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        }
        if self.is_cancelled(run).await {
            info!(pipeline_run_uuid = %run, task_uuid = %task.common.task_uuid, "run was cancelled; task skipped");
            return Ok(());
        }
        if self.already_recorded(&task).await {
            // A publisher or trigger listener that crashed before committing sends a task
            // again with the same task run id; its result is already recorded.
            info!(pipeline_run_uuid = %run, task_run_uuid = %task.common.task_run_uuid, "task run already has a result; repeat skipped");
            return Ok(());
        }
        let task_type = task.kind.task_type().to_owned();
        let (outcome, duration_ms) = self.execute_with_limit(&task, &task_type).await;

        if let Err(failure) = &outcome {
            if let Some(next) = retry::next_attempt(&task, &self.config.task_runner, failure) {
                warn!(pipeline_run_uuid = %run, task_uuid = %task.common.task_uuid, attempt = retry::attempt_of(&task), error = %failure.message, "task failed; retrying");
                return self.publish_retry(next, record).await;
            }
        }
        let mut results = self.build_results(&task, &task_type, outcome, duration_ms);
        for result in &mut results {
            retry::add_previous_errors(result, &task);
        }
        for result in results {
            if !result.is_successful {
                info!(pipeline_run_uuid = %result.pipeline_run_uuid, task_uuid = %result.task_uuid, error = result.first_error_message().unwrap_or(""), "task failed");
            }
            self.publish(result, record).await?;
        }
        Ok(())
    }

    /// Returns whether the run was cancelled. A store error counts as not cancelled, so that
    /// the task still runs.
    async fn is_cancelled(&self, run: uuid::Uuid) -> bool {
        match self.store.run_status(run).await {
            Ok(status) => status == Some(RunStatus::Cancelled),
            Err(err) => {
                warn!(pipeline_run_uuid = %run, error = %err, "failed to read the run status; running the task");
                false
            }
        }
    }

    /// Returns whether the trigger listener already recorded a result of this task run. Tasks from
    /// Ylem carry a nil task run id and are never skipped.
    async fn already_recorded(&self, task: &TaskMessage) -> bool {
        if task.common.task_run_uuid.is_nil() {
            return false;
        }
        let dedupe_key = format!("{}:0", task.common.task_run_uuid);
        match self.store.has_result(&dedupe_key).await {
            Ok(found) => found,
            Err(err) => {
                warn!(task_run_uuid = %task.common.task_run_uuid, error = %err, "failed to look up earlier results; running the task");
                false
            }
        }
    }

    /// Publishes the next attempt of a task to the partition it came from.
    async fn publish_retry(&self, next: TaskMessage, record: &Record) -> anyhow::Result<()> {
        let outgoing = OutgoingRecord {
            topic: record.topic.clone(),
            partition: Some(record.partition),
            key: record.key.clone(),
            headers: record.headers.clone(),
            payload: Message::Task(Box::new(next)).encode(),
        };
        self.transport.send(outgoing).await.map_err(|err| {
            anyhow::anyhow!(
                "failed to publish a retry to {}/{}: {err}",
                record.topic,
                record.partition
            )
        })?;
        Ok(())
    }

    async fn execute_with_limit(
        &self,
        task: &TaskMessage,
        task_type: &str,
    ) -> (Result<TaskOutput, TaskFailure>, u64) {
        let task_type = task_type.to_owned();
        let limit = task
            .common
            .timeout_ms
            .map(Duration::from_millis)
            .unwrap_or_else(|| self.config.task_runner.timeout_for(&task_type));
        let started = Instant::now();

        let task = Arc::new(task.clone());
        let execution = {
            let task = task.clone();
            let context = self.context.clone();
            tokio::spawn(async move { execute(&task, &context).await })
        };
        let abort = execution.abort_handle();
        let outcome = match tokio::time::timeout(limit, execution).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(join_error)) if join_error.is_panic() => Err(TaskFailure::new(
                ErrorCode::Internal,
                format!(
                    "task execution panicked: {}",
                    panic_text(&join_error.into_panic())
                ),
            )),
            Ok(Err(join_error)) => Err(TaskFailure::new(
                ErrorCode::Internal,
                format!("task execution was cancelled: {join_error}"),
            )),
            Err(_) => {
                abort.abort();
                Err(TaskFailure::retryable(
                    ErrorCode::Internal,
                    format!(
                        "task timed out after {} ms; raise timeout_ms on the task or task_runner.timeouts_ms.{task_type}",
                        limit.as_millis()
                    ),
                ))
            }
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        (outcome, duration_ms)
    }

    fn build_results(
        &self,
        task: &TaskMessage,
        task_type: &str,
        outcome: Result<TaskOutput, TaskFailure>,
        duration_ms: u64,
    ) -> Vec<TaskRunResult> {
        let output = match outcome {
            Ok(output) => output,
            Err(failure) => {
                let error = retry::attempt_error(task, &self.config.task_runner, &failure);
                let mut result = TaskRunResult::failure(&task.common, task_type, error);
                result.duration = duration_ms;
                return vec![result];
            }
        };
        let limit = self.config.task_runner.max_output_bytes;
        if let Some(oversized) = output.outputs.iter().find(|bytes| bytes.len() > limit) {
            let message = format!(
                "task output of {} bytes exceeds task_runner.max_output_bytes ({limit}); reduce the output, for example with LIMIT or a processor",
                oversized.len()
            );
            let mut result = TaskRunResult::failure(
                &task.common,
                task_type,
                TaskRunError::error(ErrorCode::Internal, message),
            );
            result.duration = duration_ms;
            return vec![result];
        }

        let batch_size = output.outputs.len() as u32;
        let is_batch = matches!(task.kind, TaskKind::RunForEach);
        output
            .outputs
            .into_iter()
            .enumerate()
            .map(|(index, bytes)| {
                let mut result = TaskRunResult::for_task(&task.common, task_type);
                if let Some(columns) = &output.column_order {
                    result.meta.sql_query_column_order = Some(columns.clone());
                }
                if is_batch {
                    result.batch_index = Some(index as u32);
                    result.batch_size = Some(batch_size);
                    // An empty array gives one result that ends its branch, as in Ylem: the
                    // tasks after the for_each run once per element, so here not at all.
                    if bytes == b"[]" {
                        result.is_final_task = true;
                    }
                }
                result.output = bytes;
                result.duration = duration_ms;
                result.executed_at = Utc::now();
                result
            })
            .collect()
    }

    async fn publish(&self, result: TaskRunResult, record: &Record) -> anyhow::Result<()> {
        let key = if result.pipeline_run_uuid.is_nil() {
            record.key_text()
        } else {
            result.pipeline_run_uuid.to_string()
        };
        // Failed notifications and API calls are also sent to the notification topic, as the
        // Ylem services do, for consumers that alert on delivery failures.
        let copy_to_notifications = !result.is_successful
            && matches!(result.task_type.as_str(), "notification" | "api_call");
        let message = Message::Result(Box::new(result));
        send_message(
            &*self.transport,
            &self.topics.task_run_results,
            &key,
            &message,
            Vec::new(),
        )
        .await
        .map_err(|err| {
            anyhow::anyhow!(
                "failed to publish a result to {}: {err}",
                self.topics.task_run_results
            )
        })?;
        if copy_to_notifications {
            send_message(
                &*self.transport,
                &self.topics.notification_task_run_results,
                &key,
                &message,
                Vec::new(),
            )
            .await
            .map_err(|err| {
                anyhow::anyhow!(
                    "failed to publish a result to {}: {err}",
                    self.topics.notification_task_run_results
                )
            })?;
        }
        Ok(())
    }
}

#[async_trait]
impl RecordHandler for TaskRunner {
    async fn give_up(&self, record: &Record, reason: &str) -> anyhow::Result<()> {
        // The run still needs a result for this task, or it would wait for it forever.
        let (common, task_type) = match Message::decode(&record.payload) {
            Ok(Message::Task(task)) => (task.common.clone(), task.kind.task_type().to_owned()),
            _ => (salvage_common(&record.payload), "unknown".to_owned()),
        };
        let message =
            format!("task was given up: {reason}; its record went to the dead-letter topic");
        let result = TaskRunResult::failure(
            &common,
            &task_type,
            TaskRunError::error(ErrorCode::Internal, message),
        );
        self.publish(result, record).await
    }

    async fn handle(&self, record: &Record) -> anyhow::Result<()> {
        let results = match Message::decode(&record.payload) {
            Ok(Message::Task(task)) => {
                let span = info_span!(
                    "task_run",
                    pipeline_run_uuid = %task.common.pipeline_run_uuid,
                    task_uuid = %task.common.task_uuid,
                    task_run_uuid = %task.common.task_run_uuid,
                    task_type = task.kind.task_type(),
                );
                return self.run_task(*task, record).instrument(span).await;
            }
            Ok(other) => {
                let common = salvage_common(&record.payload);
                warn!(topic = %record.topic, partition = record.partition, offset = record.offset, name = other.name(), "record is not a task message");
                vec![TaskRunResult::failure(
                    &common,
                    "unknown",
                    TaskRunError::error(
                        ErrorCode::UnknownTaskType,
                        format!(
                            "message {} is not a task; only tasks.* messages belong on this topic",
                            other.name()
                        ),
                    ),
                )]
            }
            Err(err) if DeadLetters::is_unreadable(&err) => {
                return self.dead_letters.send(record, &err.to_string()).await;
            }
            Err(err) => {
                let common = salvage_common(&record.payload);
                warn!(topic = %record.topic, partition = record.partition, offset = record.offset, pipeline_run_uuid = %common.pipeline_run_uuid, error = %err, "undecodable task record");
                vec![TaskRunResult::failure(
                    &common,
                    "unknown",
                    TaskRunError::error(
                        ErrorCode::Decode,
                        format!("task message could not be decoded: {err}"),
                    ),
                )]
            }
        };
        for result in results {
            if !result.is_successful {
                info!(pipeline_run_uuid = %result.pipeline_run_uuid, task_uuid = %result.task_uuid, error = result.first_error_message().unwrap_or(""), "task failed");
            }
            self.publish(result, record).await?;
        }
        Ok(())
    }
}

/// Reads whatever common fields a broken task record still has, so that its failed result
/// reaches the right run.
fn salvage_common(payload: &[u8]) -> TaskCommon {
    let empty =
        || serde_json::from_value::<TaskCommon>(serde_json::json!({})).expect("defaults decode");
    let Ok(serde_json::Value::Object(mut envelope)) =
        serde_json::from_slice::<serde_json::Value>(payload)
    else {
        return empty();
    };
    let Some(serde_json::Value::Object(mut message)) = envelope.remove("message") else {
        return empty();
    };
    message.remove("input");
    message.remove("meta");
    let mut ids = serde_json::Map::new();
    for field in [
        "pipeline_run_uuid",
        "task_run_uuid",
        "task_uuid",
        "pipeline_uuid",
        "organization_uuid",
        "task_name",
    ] {
        if let Some(value) = message.remove(field) {
            if serde_json::from_value::<TaskCommon>(serde_json::json!({ field: value.clone() }))
                .is_ok()
            {
                ids.insert(field.to_owned(), value);
            }
        }
    }
    serde_json::from_value(serde_json::Value::Object(ids)).unwrap_or_else(|_| empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salvage_reads_valid_ids_only() {
        let run = uuid::Uuid::new_v4();
        let payload = serde_json::json!({
            "headers": {"X-Message-Name": "tasks.run_query"},
            "message": {"pipeline_run_uuid": run, "task_uuid": "not-a-uuid", "input": "%%%"}
        });
        let common = salvage_common(payload.to_string().as_bytes());
        assert_eq!(common.pipeline_run_uuid, run);
        assert!(common.task_uuid.is_nil());
    }

    #[test]
    fn salvage_of_garbage_is_empty() {
        let common = salvage_common(b"\x00not json");
        assert!(common.pipeline_run_uuid.is_nil());
    }
}
