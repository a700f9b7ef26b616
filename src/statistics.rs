//! Result statistics: where every task run result is stored for reporting and for the load
//! balancer's duration history, behind the [`StatisticsStore`] trait.
//!
//! Two backends implement it: [`sqlite::SqliteStatistics`] on the store database's
//! `task_run_statistics` table, and [`clickhouse::ClickHouseStatistics`] on a ClickHouse
//! table. Both run the same queries with the same definitions, so a report does not depend on
//! the backend:
//!
//! - a run's duration is the sum of the durations of its task runs;
//! - runs are ordered newest first by the latest `executed_at` of their task runs, then by run
//!   uuid (descending, as lowercase text) for ties;
//! - percentiles use the nearest-rank method of [`crate::store::quantile`], computed in the
//!   runtime from the selected run durations;
//! - a result uuid stored twice is counted once.

pub mod clickhouse;
pub mod duration;
pub mod sqlite;
pub mod writer;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::config::{Config, StatisticsBackend};
use crate::store::{quantile, StatisticsRow, Store};

pub use duration::parse_duration;

/// Run duration percentiles and outcome counts of one pipeline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PipelineReport {
    pub pipeline_uuid: Uuid,
    /// Start of the counted range; `None` counts every stored result.
    pub since: Option<DateTime<Utc>>,
    /// Runs with at least one task run in the range.
    pub runs: u64,
    /// Runs in the range whose task runs all succeeded.
    pub successful_runs: u64,
    /// Runs in the range with at least one failed task run.
    pub failed_runs: u64,
    pub successful_task_runs: u64,
    pub failed_task_runs: u64,
    /// Runs the percentiles cover: the newest `last_runs` runs in the range.
    pub percentile_runs: u64,
    pub duration_p50_ms: Option<u64>,
    pub duration_p80_ms: Option<u64>,
    pub duration_p95_ms: Option<u64>,
}

/// Counts of one pipeline's results in a time range.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutcomeCounts {
    pub runs: u64,
    pub successful_runs: u64,
    pub failed_runs: u64,
    pub successful_task_runs: u64,
    pub failed_task_runs: u64,
}

/// A task run slower than a threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlowTask {
    pub result_uuid: Uuid,
    pub pipeline_uuid: Uuid,
    pub pipeline_run_uuid: Uuid,
    pub task_uuid: Uuid,
    pub task_type: String,
    pub duration_ms: u64,
    pub is_successful: bool,
    pub executed_at: DateTime<Utc>,
}

#[async_trait]
pub trait StatisticsStore: Send + Sync + 'static {
    /// Returns the backend's name for logs: `sqlite` or `clickhouse`.
    fn backend(&self) -> &'static str;

    /// Stores rows. Storing a result uuid again is allowed and never makes a query count it
    /// twice, so a batch may be retried after an error.
    async fn insert(&self, rows: &[StatisticsRow]) -> anyhow::Result<()>;

    /// Outcome counts of a pipeline's results executed at or after `since` (all when `None`).
    async fn outcome_counts(
        &self,
        pipeline_uuid: Uuid,
        since: Option<DateTime<Utc>>,
    ) -> anyhow::Result<OutcomeCounts>;

    /// Durations of the newest `per_pipeline` runs of each pipeline (or of `pipeline_uuid`
    /// only), newest first, counting task runs executed at or after `since`.
    async fn run_durations(
        &self,
        pipeline_uuid: Option<Uuid>,
        since: Option<DateTime<Utc>>,
        per_pipeline: u32,
    ) -> anyhow::Result<Vec<(Uuid, Vec<u64>)>>;

    /// Task runs that took longer than `threshold_ms`, executed at or after `since`, newest
    /// first, at most `limit`.
    async fn slow_tasks(
        &self,
        threshold_ms: u64,
        since: DateTime<Utc>,
        limit: u32,
    ) -> anyhow::Result<Vec<SlowTask>>;

    /// Deletes results executed before `cutoff`, as far as the backend's granularity allows;
    /// returns the rows or partitions removed.
    async fn apply_retention(&self, cutoff: DateTime<Utc>) -> anyhow::Result<u64>;
}

impl dyn StatisticsStore {
    /// Percentiles over the newest `last_runs` runs and outcome counts, both limited to
    /// results executed at or after `since`.
    pub async fn pipeline_report(
        &self,
        pipeline_uuid: Uuid,
        last_runs: u32,
        since: Option<DateTime<Utc>>,
    ) -> anyhow::Result<PipelineReport> {
        let counts = self.outcome_counts(pipeline_uuid, since).await?;
        let durations = self
            .run_durations(Some(pipeline_uuid), since, last_runs)
            .await?
            .into_iter()
            .find(|(pipeline, _)| *pipeline == pipeline_uuid)
            .map(|(_, durations)| durations)
            .unwrap_or_default();
        Ok(PipelineReport {
            pipeline_uuid,
            since,
            runs: counts.runs,
            successful_runs: counts.successful_runs,
            failed_runs: counts.failed_runs,
            successful_task_runs: counts.successful_task_runs,
            failed_task_runs: counts.failed_task_runs,
            percentile_runs: durations.len() as u64,
            duration_p50_ms: quantile(&durations, 0.5),
            duration_p80_ms: quantile(&durations, 0.8),
            duration_p95_ms: quantile(&durations, 0.95),
        })
    }
}

/// Builds the statistics backend selected by `config.statistics`. Both backends connect on
/// first use, and the ClickHouse backend creates its table then.
pub fn open(config: &Config, store: Arc<dyn Store>) -> Arc<dyn StatisticsStore> {
    match config.statistics.backend {
        StatisticsBackend::Sqlite => {
            Arc::new(sqlite::SqliteStatistics::new(store, &config.store.url))
        }
        StatisticsBackend::Clickhouse => {
            Arc::new(clickhouse::ClickHouseStatistics::new(&config.statistics))
        }
    }
}

/// Start of the retained range: `retention_days` before `now`.
pub fn retention_cutoff(now: DateTime<Utc>, retention_days: u32) -> DateTime<Utc> {
    now - chrono::Duration::days(i64::from(retention_days))
}
