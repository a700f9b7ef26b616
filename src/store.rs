//! Durable state: pipelines, scheduled runs, pipeline runs with their task runs, and the
//! statistics of every result.
//!
//! Stages use the [`Store`] trait only. The embedded default implements it on SQLite
//! ([`sqlite::SqliteStore`]); the CLI reads the same database, which is how `ylem runs list`
//! works from another terminal while the daemon runs. [`postgres::PgStore`] implements it on
//! PostgreSQL, for stages spread over several processes or machines.

mod models;
pub mod postgres;
mod retry;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use models::*;
pub use retry::retry_transient;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("pipeline {0:?} not found; `ylem pipeline list` shows the applied pipelines")]
    PipelineNotFound(String),
    #[error("stored value is invalid: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores pipelines in one transaction. A pipeline whose schedule changed loses the
    /// unclaimed future runs its old schedule produced; manual runs are kept.
    async fn apply_pipelines(&self, pipelines: &[PipelineRecord])
        -> StoreResult<Vec<ApplyOutcome>>;

    async fn list_pipelines(&self) -> StoreResult<Vec<PipelineSummary>>;

    async fn pipeline_by_name(&self, name: &str) -> StoreResult<Option<StoredPipeline>>;

    async fn pipeline_by_uuid(&self, uuid: Uuid) -> StoreResult<Option<StoredPipeline>>;

    /// Active pipelines that have a schedule, with the latest fire time already stored.
    async fn scheduled_pipelines(&self) -> StoreResult<Vec<ScheduledPipeline>>;

    /// Inserts scheduled runs for fire times, skipping times that already have one.
    /// Returns the number inserted.
    async fn insert_scheduled_runs(
        &self,
        pipeline_uuid: Uuid,
        schedule_fingerprint: &str,
        fire_times: &[DateTime<Utc>],
    ) -> StoreResult<u64>;

    /// Queues a run to start now (manual or API run); the publisher picks it up.
    async fn enqueue_run(&self, run: NewQueuedRun) -> StoreResult<()>;

    /// Claims up to `limit` due runs for `lease` so that no other publisher takes them.
    async fn claim_due_runs(
        &self,
        claimer: &str,
        now: DateTime<Utc>,
        lease: std::time::Duration,
        limit: u32,
    ) -> StoreResult<Vec<QueuedRun>>;

    /// Marks a queued run published, after the broker acknowledged its initial tasks.
    async fn complete_queued_run(&self, id: i64) -> StoreResult<()>;

    /// Deletes published runs whose fire time is before `before`; returns how many.
    async fn prune_published_runs(&self, before: DateTime<Utc>) -> StoreResult<u64>;

    /// Gives a claimed run back, to be published by a later poll.
    async fn release_queued_run(&self, id: i64) -> StoreResult<()>;

    /// Records the start of a run expecting `outstanding` task executions. Idempotent.
    async fn start_run(&self, run: NewRun) -> StoreResult<()>;

    /// Ends a run that cannot start (no initial task, pipeline deleted) as failed.
    async fn fail_run(&self, run_uuid: Uuid, error: &str) -> StoreResult<()>;

    /// Records one result and adjusts the run's outstanding count by `next_tasks`, the number
    /// of tasks published because of it. A result seen before changes nothing.
    async fn record_result(
        &self,
        result: &ResultRecord,
        next_tasks: u32,
    ) -> StoreResult<RecordOutcome>;

    /// Ends a running run as cancelled and drops its queued, unpublished start. Returns the
    /// status after the call, or `None` for an unknown run.
    async fn cancel_run(&self, run_uuid: Uuid) -> StoreResult<Option<RunStatus>>;

    /// Status of a run, or `None` for an unknown run.
    async fn run_status(&self, run_uuid: Uuid) -> StoreResult<Option<RunStatus>>;

    /// Returns whether a result with this dedupe key was recorded.
    async fn has_result(&self, dedupe_key: &str) -> StoreResult<bool>;

    async fn list_runs(&self, pipeline: Option<&str>, limit: u32) -> StoreResult<Vec<RunSummary>>;

    async fn run(&self, run_uuid: Uuid) -> StoreResult<Option<RunDetail>>;

    /// Stores results for statistics, once per result uuid; returns the number inserted.
    async fn store_statistics(&self, results: &[StatisticsRow]) -> StoreResult<u64>;

    /// Run duration percentiles and outcome counts of a pipeline.
    async fn pipeline_statistics(
        &self,
        pipeline_uuid: Uuid,
        last_runs: u32,
    ) -> StoreResult<PipelineStatistics>;

    /// Recent run durations (sum of task durations) per pipeline, newest first, for warming the
    /// load balancer.
    async fn recent_run_durations(&self, per_pipeline: u32) -> StoreResult<Vec<(Uuid, Vec<u64>)>>;
}

/// Opens the store named by a URL and brings its schema up to date. A PostgreSQL URL
/// connects with the password it contains, if any; [`open_configured`] reads it from
/// `store.password_env` instead.
pub async fn open(url: &str, max_connections: u32) -> anyhow::Result<Arc<dyn Store>> {
    open_with_password(url, max_connections, None).await
}

/// Opens the store of the `[store]` section, with the password from the environment
/// variable named by `store.password_env`.
pub async fn open_configured(
    config: &crate::config::StoreConfig,
) -> anyhow::Result<Arc<dyn Store>> {
    let password = match &config.password_env {
        Some(variable) => Some(std::env::var(variable).map_err(|_| {
            anyhow::anyhow!(
                "environment variable {variable} (named by store.password_env) is not set; set it to the password of {}",
                crate::config::redact_url(&config.url)
            )
        })?),
        None => None,
    };
    open_with_password(&config.url, config.max_connections, password.as_deref()).await
}

async fn open_with_password(
    url: &str,
    max_connections: u32,
    password: Option<&str>,
) -> anyhow::Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        let store = sqlite::SqliteStore::open(url, max_connections).await?;
        return Ok(Arc::new(store));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = postgres::PgStore::open(url, max_connections, password).await?;
        return Ok(Arc::new(store));
    }
    anyhow::bail!(
        "unsupported store URL {}: this build supports sqlite: and postgres:// URLs",
        crate::config::redact_url(url)
    )
}
