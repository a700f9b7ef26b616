//! The PostgreSQL store, for runtimes whose stages run in several processes or on several
//! machines.
//!
//! It keeps the tables of the SQLite store and behaves the same way. Two places differ
//! because several publishers and trigger listeners may write at once. Due runs are claimed
//! with `FOR UPDATE SKIP LOCKED`, so concurrent publishers take disjoint rows. A result is
//! recorded in a transaction that first locks its run's row (see `runs.rs`).
//!
//! Times are Unix milliseconds in BIGINT columns. Lease expiry compares them with the time
//! the caller passes in, so publishers on different machines need synchronised clocks.

mod pipelines;
mod runs;
mod statistics;

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, SqlSafeStr};
use uuid::Uuid;

use super::StoreResult;
use crate::config::redact_url;

/// Time limit of each connection attempt while the store opens.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Schema migrations, embedded so that the binary needs no files beside it. sqlx takes an
/// advisory lock while it migrates, so processes starting at once do not race.
fn migrator() -> Migrator {
    let migrations = vec![Migration::new(
        1,
        Cow::Borrowed("init"),
        MigrationType::Simple,
        include_str!("../../migrations/postgres/0001_init.sql").into_sql_str(),
        false,
    )];
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to the database at `url` and migrates it. `password` overrides any password
    /// in the URL. Errors show the URL with its password replaced by `***`.
    pub async fn open(
        url: &str,
        max_connections: u32,
        password: Option<&str>,
    ) -> anyhow::Result<PgStore> {
        let shown_url = redact_url(url);
        let mut options = PgConnectOptions::from_str(url)
            .map_err(|err| anyhow::anyhow!("invalid store.url {shown_url}: {err}"))?;
        // pg_stat_activity shows this name; `?application_name=...` in the URL overrides it.
        if options.get_application_name().is_none() {
            options = options.application_name("ylem");
        }
        if let Some(password) = password {
            options = options.password(password);
        }
        let connect_failed = |err: sqlx::Error| {
            anyhow::anyhow!(
                "failed to connect to the PostgreSQL store at {shown_url}: {err}; check that the server runs and that the variable named by store.password_env contains the password"
            )
        };
        // One direct connection first: when it fails, its error names the cause (connection
        // refused, authentication failed), which a pool's acquire timeout would hide.
        let probe = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "failed to connect to the PostgreSQL store at {shown_url}: timed out after {} s",
                    CONNECT_TIMEOUT.as_secs()
                )
            })?
            .map_err(connect_failed)?;
        probe.close().await.map_err(connect_failed)?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(connect_failed)?;
        migrator().run(&pool).await.map_err(|err| {
            anyhow::anyhow!("failed to migrate the PostgreSQL store at {shown_url}: {err}")
        })?;
        Ok(PgStore { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
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

#[async_trait::async_trait]
impl super::Store for PgStore {
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
        self.pipeline_by(pipelines::PipelineKey::Name(name)).await
    }

    async fn pipeline_by_uuid(&self, uuid: Uuid) -> StoreResult<Option<super::StoredPipeline>> {
        self.pipeline_by(pipelines::PipelineKey::Uuid(uuid)).await
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
        let found = sqlx::query("SELECT 1 FROM task_runs WHERE dedupe_key = $1")
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
