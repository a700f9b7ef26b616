//! Rows that go in and out of the store.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// A validated pipeline as the store keeps it.
#[derive(Debug, Clone)]
pub struct PipelineRecord {
    pub uuid: Uuid,
    pub name: String,
    pub description: String,
    pub source_yaml: String,
    pub schedule_fingerprint: Option<String>,
    pub tasks: Vec<TaskRecord>,
    pub triggers: Vec<TriggerRecord>,
}

#[derive(Debug, Clone)]
pub struct TaskRecord {
    pub uuid: Uuid,
    pub name: String,
    pub task_type: String,
}

#[derive(Debug, Clone)]
pub struct TriggerRecord {
    pub uuid: Uuid,
    pub from: Uuid,
    pub to: Uuid,
    pub trigger_type: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ApplyChange {
    Created,
    Updated,
    Unchanged,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApplyOutcome {
    pub name: String,
    pub change: ApplyChange,
    /// Future scheduled runs removed because the schedule changed.
    pub removed_scheduled_runs: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PipelineSummary {
    pub uuid: Uuid,
    pub name: String,
    pub description: String,
    pub schedule: Option<String>,
    pub tasks: u32,
    pub version: i64,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct StoredPipeline {
    pub uuid: Uuid,
    pub name: String,
    pub source_yaml: String,
    pub version: i64,
    pub is_active: bool,
}

#[derive(Debug, Clone)]
pub struct ScheduledPipeline {
    pub uuid: Uuid,
    pub name: String,
    pub source_yaml: String,
    pub latest_fire_time: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    Schedule,
    Manual,
    Api,
    /// A run started by a message from outside this runtime.
    External,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Schedule => "schedule",
            RunKind::Manual => "manual",
            RunKind::Api => "api",
            RunKind::External => "external",
        }
    }

    pub fn parse(text: &str) -> RunKind {
        match text {
            "schedule" => RunKind::Schedule,
            "manual" => RunKind::Manual,
            "api" => RunKind::Api,
            _ => RunKind::External,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewQueuedRun {
    pub pipeline_uuid: Uuid,
    pub run_uuid: Uuid,
    pub kind: RunKind,
    pub input: Option<Vec<u8>>,
    pub run_config: Option<String>,
}

/// A scheduled or queued run claimed by a publisher.
#[derive(Debug, Clone)]
pub struct QueuedRun {
    pub id: i64,
    pub pipeline_uuid: Uuid,
    pub run_uuid: Uuid,
    pub kind: RunKind,
    pub execute_at: DateTime<Utc>,
    pub input: Option<Vec<u8>>,
    pub run_config: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewRun {
    pub run_uuid: Uuid,
    pub pipeline_uuid: Uuid,
    pub pipeline_name: String,
    pub kind: RunKind,
    pub outstanding: u32,
    pub scheduled_for: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> RunStatus {
        match text {
            "succeeded" => RunStatus::Succeeded,
            "failed" => RunStatus::Failed,
            "cancelled" => RunStatus::Cancelled,
            _ => RunStatus::Running,
        }
    }

    pub fn is_terminal(self) -> bool {
        self != RunStatus::Running
    }
}

/// One result, as the trigger listener records it for `ylem runs show`.
#[derive(Debug, Clone)]
pub struct ResultRecord {
    pub result_uuid: Uuid,
    pub run_uuid: Uuid,
    pub pipeline_uuid: Uuid,
    pub task_run_uuid: Uuid,
    pub task_uuid: Uuid,
    pub task_name: String,
    pub task_type: String,
    pub is_successful: bool,
    pub duration_ms: u64,
    pub output_bytes: u64,
    pub errors: Vec<String>,
    pub batch_index: Option<u32>,
    /// Results the task run emits in all; the first of a batch adds the others to the count.
    pub batch_size: u32,
    pub attempt: Option<u32>,
    pub executed_at: DateTime<Utc>,
}

impl ResultRecord {
    /// Key under which a redelivered result is recognised.
    pub fn dedupe_key(&self) -> String {
        if self.task_run_uuid.is_nil() {
            self.result_uuid.to_string()
        } else {
            format!("{}:{}", self.task_run_uuid, self.batch_index.unwrap_or(0))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordOutcome {
    /// The result was recorded before; nothing changed.
    pub duplicate: bool,
    /// Set when this result ended the run.
    pub finished: Option<RunStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub run_uuid: Uuid,
    pub pipeline_uuid: Uuid,
    pub pipeline_name: String,
    pub kind: RunKind,
    pub status: RunStatus,
    pub outstanding: i64,
    pub task_results: i64,
    pub failed_tasks: i64,
    pub error: Option<String>,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskRunRow {
    pub task_run_uuid: Uuid,
    pub result_uuid: Uuid,
    pub task_uuid: Uuid,
    pub task_name: String,
    pub task_type: String,
    pub status: &'static str,
    pub duration_ms: u64,
    pub output_bytes: u64,
    pub errors: Vec<String>,
    pub batch_index: Option<u32>,
    pub attempt: Option<u32>,
    pub executed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: RunSummary,
    pub task_runs: Vec<TaskRunRow>,
}

/// One result as the statistics listener stores it.
#[derive(Debug, Clone)]
pub struct StatisticsRow {
    pub result_uuid: Uuid,
    pub organization_uuid: Uuid,
    pub pipeline_uuid: Uuid,
    pub pipeline_run_uuid: Uuid,
    pub task_uuid: Uuid,
    pub task_type: String,
    pub pipeline_type: String,
    pub is_initial_task: bool,
    pub is_final_task: bool,
    pub is_successful: bool,
    pub duration_ms: u64,
    pub output_bytes: u64,
    pub errors: Vec<String>,
    pub executed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct PipelineStatistics {
    pub runs: u64,
    pub successful_task_runs: u64,
    pub failed_task_runs: u64,
    /// Run duration (sum of its task durations) percentiles over the last runs, in ms.
    pub duration_p50_ms: Option<u64>,
    pub duration_p80_ms: Option<u64>,
    pub duration_p95_ms: Option<u64>,
}

/// Nearest-rank quantile of `values` (any order); `None` when empty.
pub fn quantile(values: &[u64], q: f64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_nearest_rank() {
        let values = [50, 10, 40, 20, 30];
        assert_eq!(quantile(&values, 0.5), Some(30));
        assert_eq!(quantile(&values, 0.8), Some(40));
        assert_eq!(quantile(&values, 0.95), Some(50));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
