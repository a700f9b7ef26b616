//! The trigger listener stage: publishes the next tasks of a run when a result arrives, and
//! tracks each run until no task of it is left.
//!
//! For one result, the steps are: decode it, find the triggered tasks for its outcome
//! (`output` for most tasks, `condition_true` or `condition_false` for a condition), publish
//! them to `task_runs` with the previous output as input, then record the result with the
//! number of tasks published. Publishing comes first: after a crash in between, the result is
//! consumed again and the tasks published again with the same task run ids, and the store
//! counts the result once.

use std::sync::Arc;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use tracing::{info, warn};

use super::RecordHandler;
use crate::catalog::Catalog;
use crate::config::Config;
use crate::dead_letter::DeadLetters;
use crate::messages::{Message, TaskRunResult};
use crate::pipeline::{task_run_uuid, Pipeline, RunContext, TaskRunCause, TriggerType};
use crate::store::{retry_transient, ResultRecord, RunStatus, Store};
use crate::transport::{send_message, Record, Transport};

pub struct TriggerListener {
    store: Arc<dyn Store>,
    catalog: Arc<Catalog>,
    transport: Arc<dyn Transport>,
    dead_letters: DeadLetters,
    config: Arc<Config>,
}

/// Trigger type and input of the tasks that follow a result.
struct NextStep {
    trigger_type: TriggerType,
    input: Vec<u8>,
}

impl TriggerListener {
    pub fn new(
        store: Arc<dyn Store>,
        catalog: Arc<Catalog>,
        transport: Arc<dyn Transport>,
        dead_letters: DeadLetters,
        config: Arc<Config>,
    ) -> TriggerListener {
        TriggerListener {
            store,
            catalog,
            transport,
            dead_letters,
            config,
        }
    }

    /// Publishes the tasks triggered by a successful result; returns how many.
    async fn publish_next(
        &self,
        pipeline: &Pipeline,
        result: &TaskRunResult,
        step: NextStep,
    ) -> anyhow::Result<u32> {
        let run_config = &result.meta.pipeline_run_config;
        let next = pipeline.next_tasks(result.task_uuid, step.trigger_type, run_config);
        let cause = TaskRunCause::Output {
            task_run_uuid: result.task_run_uuid,
            output_index: result.batch_index.unwrap_or(0),
        };
        let meta = result.meta.clone();
        for task in &next {
            let message = pipeline.task_message(
                task,
                RunContext {
                    run_uuid: result.pipeline_run_uuid,
                    task_run_uuid: task_run_uuid(result.pipeline_run_uuid, task.uuid, cause),
                    organization_uuid: result.organization_uuid,
                    input: step.input.clone(),
                    meta: meta.clone(),
                    is_initial: false,
                },
            );
            send_message(
                &*self.transport,
                &self.config.topics.task_runs,
                &result.pipeline_run_uuid.to_string(),
                &Message::Task(Box::new(message)),
                Vec::new(),
            )
            .await
            .map_err(|err| {
                anyhow::anyhow!(
                    "failed to publish task {} of run {}: {err}",
                    task.name,
                    result.pipeline_run_uuid
                )
            })?;
        }
        Ok(next.len() as u32)
    }
}

/// Chooses the trigger type and next input of a successful result, or explains why the
/// output cannot go on.
fn next_step(result: &TaskRunResult) -> Result<NextStep, String> {
    if result.task_type != "condition" {
        return Ok(NextStep {
            trigger_type: TriggerType::Output,
            input: result.output.clone(),
        });
    }
    #[derive(serde::Deserialize)]
    struct ConditionOutput {
        result: bool,
        #[serde(default)]
        original_input: Option<String>,
    }
    let output: ConditionOutput = serde_json::from_slice(&result.output).map_err(|err| {
        format!("condition output is not {{\"result\": bool, \"original_input\": base64}}: {err}")
    })?;
    let input = match output.original_input {
        Some(text) => STANDARD
            .decode(text.as_bytes())
            .map_err(|err| format!("condition original_input is not base64: {err}"))?,
        None => Vec::new(),
    };
    Ok(NextStep {
        trigger_type: if output.result {
            TriggerType::ConditionTrue
        } else {
            TriggerType::ConditionFalse
        },
        input,
    })
}

fn result_record(result: &TaskRunResult, task_name: String) -> ResultRecord {
    ResultRecord {
        result_uuid: result.uuid,
        run_uuid: result.pipeline_run_uuid,
        pipeline_uuid: result.pipeline_uuid,
        task_run_uuid: result.task_run_uuid,
        task_uuid: result.task_uuid,
        task_name,
        task_type: result.task_type.clone(),
        is_successful: result.is_successful,
        duration_ms: result.duration,
        output_bytes: result.output.len() as u64,
        errors: result
            .errors
            .iter()
            .map(|error| format!("[{}] {}", error.code, error.message))
            .collect(),
        batch_index: result.batch_index,
        batch_size: result.batch_size.unwrap_or(1),
        attempt: result.attempt,
        executed_at: result.executed_at,
    }
}

#[async_trait]
impl RecordHandler for TriggerListener {
    async fn handle(&self, record: &Record) -> anyhow::Result<()> {
        let result = match Message::decode(&record.payload) {
            Ok(Message::Result(result)) => result,
            Ok(other) => {
                warn!(topic = %record.topic, partition = record.partition, offset = record.offset, name = other.name(), "record on the results topic is not a result; skipped");
                return Ok(());
            }
            Err(err) => {
                // The statistics listener reads the same topic and skips such records, so the
                // dead letter is produced once, here.
                return self.dead_letters.send(record, &err.to_string()).await;
            }
        };
        if result.pipeline_run_uuid.is_nil() {
            warn!(result_uuid = %result.uuid, task_uuid = %result.task_uuid, errors = ?result.errors, "result without a run uuid belongs to no run; skipped");
            return Ok(());
        }

        let pipeline = self.catalog.pipeline(result.pipeline_uuid).await?;
        let task_name = pipeline
            .as_ref()
            .and_then(|pipeline| pipeline.task(result.task_uuid))
            .map(|task| task.name.clone())
            .or_else(|| result.task_name.clone())
            .unwrap_or_else(|| result.task_uuid.to_string());
        let mut recorded = result_record(&result, task_name);
        let dedupe_key = recorded.dedupe_key();
        let seen = retry_transient("has_result", || self.store.has_result(&dedupe_key))
            .await
            .map_err(|err| {
                anyhow::anyhow!(
                    "failed to look up result {} of run {}: {err}",
                    result.uuid,
                    result.pipeline_run_uuid
                )
            })?;
        if seen {
            // Recorded means its next tasks were published before; nothing is left to do.
            info!(pipeline_run_uuid = %result.pipeline_run_uuid, result_uuid = %result.uuid, "result seen before; skipped");
            return Ok(());
        }

        let cancelled = retry_transient("run_status", || {
            self.store.run_status(result.pipeline_run_uuid)
        })
        .await
        .map_err(|err| {
            anyhow::anyhow!(
                "failed to read the status of run {}: {err}",
                result.pipeline_run_uuid
            )
        })? == Some(RunStatus::Cancelled);
        if cancelled {
            info!(pipeline_run_uuid = %result.pipeline_run_uuid, task_uuid = %result.task_uuid, "run was cancelled; no next task is started");
        }

        let mut published = 0;
        if result.is_successful && !result.is_final_task && !cancelled {
            match (&pipeline, next_step(&result)) {
                (None, _) => {
                    warn!(pipeline_run_uuid = %result.pipeline_run_uuid, pipeline_uuid = %result.pipeline_uuid, "pipeline of the result is unknown or deleted; its run ends here");
                }
                (Some(_), Err(problem)) => {
                    warn!(pipeline_run_uuid = %result.pipeline_run_uuid, task_uuid = %result.task_uuid, %problem, "result output cannot trigger the next tasks");
                    recorded.is_successful = false;
                    recorded.errors.push(problem);
                }
                (Some(_), Ok(step))
                    if step.input.len() > self.config.trigger_listener.max_next_input_bytes =>
                {
                    let problem = format!(
                        "output of {} bytes exceeds trigger_listener.max_next_input_bytes ({}), so the next tasks were not started",
                        step.input.len(),
                        self.config.trigger_listener.max_next_input_bytes
                    );
                    warn!(pipeline_run_uuid = %result.pipeline_run_uuid, task_uuid = %result.task_uuid, %problem, "next input too large");
                    recorded.is_successful = false;
                    recorded.errors.push(problem);
                }
                (Some(pipeline), Ok(step)) => {
                    published = self.publish_next(pipeline, &result, step).await?;
                }
            }
        }

        let outcome = retry_transient("record_result", || {
            self.store.record_result(&recorded, published)
        })
        .await
        .map_err(|err| {
            anyhow::anyhow!(
                "failed to record result {} of run {}: {err}",
                result.uuid,
                result.pipeline_run_uuid
            )
        })?;
        if outcome.duplicate {
            info!(pipeline_run_uuid = %result.pipeline_run_uuid, result_uuid = %result.uuid, "result seen before; not counted again");
        }
        if let Some(status) = outcome.finished {
            match status {
                RunStatus::Failed => {
                    warn!(pipeline_run_uuid = %result.pipeline_run_uuid, pipeline_uuid = %result.pipeline_uuid, "run failed")
                }
                _ => {
                    info!(pipeline_run_uuid = %result.pipeline_run_uuid, pipeline_uuid = %result.pipeline_uuid, status = status.as_str(), "run finished")
                }
            }
        }
        Ok(())
    }
}
