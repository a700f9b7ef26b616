//! The SQLite store of the embedded default.
//!
//! The database runs in WAL mode with a busy timeout, so the daemon and CLI commands in other
//! terminals share it. Write transactions start with `BEGIN IMMEDIATE`: a deferred transaction
//! that reads and then writes can fail at once with SQLITE_BUSY instead of waiting.

mod pipelines;
mod runs;

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{SqlSafeStr, SqlitePool};
use uuid::Uuid;

use super::{StoreError, StoreResult};

/// Schema migrations, embedded so that the binary needs no files beside it.
fn migrator() -> Migrator {
    let migrations = vec![Migration::new(
        1,
        Cow::Borrowed("init"),
        MigrationType::Simple,
        include_str!("../../migrations/sqlite/0001_init.sql").into_sql_str(),
        false,
    )];
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` and migrates it.
    pub async fn open(url: &str, max_connections: u32) -> anyhow::Result<SqliteStore> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|err| anyhow::anyhow!("invalid store.url {url}: {err}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections.max(1))
            .connect_with(options)
            .await
            .map_err(|err| anyhow::anyhow!("failed to open the SQLite store at {url}: {err}"))?;
        migrator()
            .run(&pool)
            .await
            .map_err(|err| anyhow::anyhow!("failed to migrate the SQLite store at {url}: {err}"))?;
        Ok(SqliteStore { pool })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn begin_write(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

pub(super) fn to_millis(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}

pub(super) fn from_millis(millis: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(millis)
        .single()
        .unwrap_or_default()
}

pub(super) fn parse_uuid(text: &str) -> StoreResult<Uuid> {
    Uuid::parse_str(text)
        .map_err(|err| StoreError::Corrupt(format!("invalid uuid {text:?}: {err}")))
}

#[async_trait::async_trait]
impl super::Store for SqliteStore {
    async fn apply_pipelines(
        &self,
        pipelines: &[super::PipelineRecord],
    ) -> StoreResult<Vec<super::ApplyOutcome>> {
        self.apply(pipelines).await
    }

    async fn list_pipelines(&self) -> StoreResult<Vec<super::PipelineSummary>> {
        self.pipelines().await
    }

    async fn pipeline_by_name(&self, name: &str) -> StoreResult<Option<super::StoredPipeline>> {
        self.pipeline_where("name", name.to_owned()).await
    }

    async fn pipeline_by_uuid(&self, uuid: Uuid) -> StoreResult<Option<super::StoredPipeline>> {
        self.pipeline_where("uuid", uuid.to_string()).await
    }

    async fn scheduled_pipelines(&self) -> StoreResult<Vec<super::ScheduledPipeline>> {
        self.scheduled().await
    }

    async fn insert_scheduled_runs(
        &self,
        pipeline_uuid: Uuid,
        schedule_fingerprint: &str,
        fire_times: &[DateTime<Utc>],
    ) -> StoreResult<u64> {
        self.insert_fire_times(pipeline_uuid, schedule_fingerprint, fire_times)
            .await
    }

    async fn enqueue_run(&self, run: super::NewQueuedRun) -> StoreResult<()> {
        self.enqueue(run).await
    }

    async fn claim_due_runs(
        &self,
        claimer: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> StoreResult<Vec<super::QueuedRun>> {
        self.claim(claimer, now, lease, limit).await
    }

    async fn complete_queued_run(&self, id: i64) -> StoreResult<()> {
        self.complete_queued(id).await
    }

    async fn prune_published_runs(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        self.prune_published(before).await
    }

    async fn release_queued_run(&self, id: i64) -> StoreResult<()> {
        self.release_queued(id).await
    }

    async fn start_run(&self, run: super::NewRun) -> StoreResult<()> {
        self.insert_run(run).await
    }

    async fn fail_run(&self, run_uuid: Uuid, error: &str) -> StoreResult<()> {
        self.mark_run_failed(run_uuid, error).await
    }

    async fn record_result(
        &self,
        result: &super::ResultRecord,
        next_tasks: u32,
    ) -> StoreResult<super::RecordOutcome> {
        self.insert_result(result, next_tasks).await
    }

    async fn cancel_run(&self, run_uuid: Uuid) -> StoreResult<Option<super::RunStatus>> {
        self.cancel(run_uuid).await
    }

    async fn run_status(&self, run_uuid: Uuid) -> StoreResult<Option<super::RunStatus>> {
        self.status_of(run_uuid).await
    }

    async fn has_result(&self, dedupe_key: &str) -> StoreResult<bool> {
        let found = sqlx::query("SELECT 1 FROM task_runs WHERE dedupe_key = ?")
            .bind(dedupe_key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    async fn list_runs(
        &self,
        pipeline: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<super::RunSummary>> {
        self.runs(pipeline, limit).await
    }

    async fn run(&self, run_uuid: Uuid) -> StoreResult<Option<super::RunDetail>> {
        self.run_detail(run_uuid).await
    }

    async fn store_statistics(&self, results: &[super::StatisticsRow]) -> StoreResult<u64> {
        self.insert_statistics(results).await
    }

    async fn pipeline_statistics(
        &self,
        pipeline_uuid: Uuid,
        last_runs: u32,
    ) -> StoreResult<super::PipelineStatistics> {
        self.statistics(pipeline_uuid, last_runs).await
    }

    async fn recent_run_durations(&self, per_pipeline: u32) -> StoreResult<Vec<(Uuid, Vec<u64>)>> {
        Ok(self
            .run_durations(None, per_pipeline)
            .await?
            .into_iter()
            .collect())
    }
}
