//! The statistics listener stage: stores every result for statistics, once per result uuid.

use std::sync::Arc;

use async_trait::async_trait;
use tracing::{debug, warn};

use super::RecordHandler;
use crate::messages::{Message, TaskRunResult};
use crate::store::{StatisticsRow, Store};
use crate::transport::Record;

pub struct StatisticsListener {
    store: Arc<dyn Store>,
}

impl StatisticsListener {
    pub fn new(store: Arc<dyn Store>) -> StatisticsListener {
        StatisticsListener { store }
    }
}

/// Builds the statistics row of a result.
pub fn statistics_row(result: &TaskRunResult) -> StatisticsRow {
    StatisticsRow {
        result_uuid: result.uuid,
        organization_uuid: result.organization_uuid,
        pipeline_uuid: result.pipeline_uuid,
        pipeline_run_uuid: result.pipeline_run_uuid,
        task_uuid: result.task_uuid,
        task_type: result.task_type.clone(),
        pipeline_type: result.pipeline_type.clone(),
        is_initial_task: result.is_initial_task,
        is_final_task: result.is_final_task,
        is_successful: result.is_successful,
        duration_ms: result.duration,
        output_bytes: result.output.len() as u64,
        errors: result
            .errors
            .iter()
            .map(|error| error.message.clone())
            .collect(),
        executed_at: result.executed_at,
    }
}

#[async_trait]
impl RecordHandler for StatisticsListener {
    async fn handle(&self, record: &Record) -> anyhow::Result<()> {
        let result = match Message::decode(&record.payload) {
            Ok(Message::Result(result)) => result,
            Ok(other) => {
                warn!(topic = %record.topic, partition = record.partition, offset = record.offset, name = other.name(), "record on the results topic is not a result; skipped");
                return Ok(());
            }
            Err(err) => {
                // The trigger listener sends such records to the dead-letter topic.
                debug!(topic = %record.topic, partition = record.partition, offset = record.offset, error = %err, "undecodable result record; not counted");
                return Ok(());
            }
        };
        if result.pipeline_run_uuid.is_nil() {
            warn!(result_uuid = %result.uuid, task_uuid = %result.task_uuid, "result without a run uuid is not counted in statistics");
            return Ok(());
        }
        self.store
            .store_statistics(&[statistics_row(&result)])
            .await
            .map_err(|err| {
                anyhow::anyhow!(
                    "failed to store statistics of result {}: {err}",
                    result.uuid
                )
            })?;
        Ok(())
    }
}
