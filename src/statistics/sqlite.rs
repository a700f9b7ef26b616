//! Statistics in the store database's `task_run_statistics` table.
//!
//! Writes go through [`Store::store_statistics`], which skips a result uuid already stored.
//! The queries need a time range that the [`Store`] trait does not offer, so they read the
//! table through a small pool of their own on the same SQLite file; `executed_at` is stored
//! there in milliseconds since the Unix epoch.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::Row;
use uuid::Uuid;

use super::{OutcomeCounts, SlowTask, StatisticsStore};
use crate::store::{StatisticsRow, Store};

pub struct SqliteStatistics {
    store: Arc<dyn Store>,
    /// The read pool, or why there is none; the queries then return that error.
    pool: Result<SqlitePool, String>,
}

impl SqliteStatistics {
    /// Uses `store` for writes and opens a lazy read pool on `store_url` when it is a SQLite URL.
    pub fn new(store: Arc<dyn Store>, store_url: &str) -> SqliteStatistics {
        SqliteStatistics {
            store,
            pool: read_pool(store_url),
        }
    }

    fn pool(&self) -> anyhow::Result<&SqlitePool> {
        self.pool
            .as_ref()
            .map_err(|problem| anyhow::anyhow!("{problem}"))
    }
}

fn read_pool(store_url: &str) -> Result<SqlitePool, String> {
    // TODO: the PostgreSQL store has the same table; give these queries a Store method so
    // that statistics.backend = "sqlite" works with it too.
    if !store_url.starts_with("sqlite:") {
        return Err("statistics.backend = \"sqlite\" reads the task_run_statistics table of a SQLite store, but store.url is not a sqlite: URL; set statistics.backend = \"clickhouse\"".to_owned());
    }
    let options = SqliteConnectOptions::from_str(store_url)
        .map_err(|err| format!("invalid store.url {store_url}: {err}"))?
        .busy_timeout(Duration::from_secs(30));
    Ok(SqlitePoolOptions::new()
        .max_connections(2)
        .connect_lazy_with(options))
}

/// Milliseconds since the Unix epoch of `since`, or the smallest value for no lower bound.
fn since_millis(since: Option<DateTime<Utc>>) -> i64 {
    since.map_or(i64::MIN, |time| time.timestamp_millis())
}

fn parse_uuid(text: &str) -> anyhow::Result<Uuid> {
    Uuid::parse_str(text).with_context(|| format!("invalid uuid {text:?} in task_run_statistics"))
}

#[async_trait]
impl StatisticsStore for SqliteStatistics {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn insert(&self, rows: &[StatisticsRow]) -> anyhow::Result<()> {
        self.store
            .store_statistics(rows)
            .await
            .context("failed to store statistics in the store database")?;
        Ok(())
    }

    async fn outcome_counts(
        &self,
        pipeline_uuid: Uuid,
        since: Option<DateTime<Utc>>,
    ) -> anyhow::Result<OutcomeCounts> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS runs, \
             COALESCE(SUM(failures = 0), 0) AS successful_runs, \
             COALESCE(SUM(failures > 0), 0) AS failed_runs, \
             COALESCE(SUM(successes), 0) AS successful_task_runs, \
             COALESCE(SUM(failures), 0) AS failed_task_runs \
             FROM (SELECT pipeline_run_uuid, SUM(is_successful <> 0) AS successes, \
                   SUM(is_successful = 0) AS failures \
                   FROM task_run_statistics WHERE pipeline_uuid = ? AND executed_at >= ? \
                   GROUP BY pipeline_run_uuid)",
        )
        .bind(pipeline_uuid.to_string())
        .bind(since_millis(since))
        .fetch_one(self.pool()?)
        .await
        .context("failed to count results in task_run_statistics")?;
        let count =
            |column: &str| -> anyhow::Result<u64> { Ok(row.try_get::<i64, _>(column)? as u64) };
        Ok(OutcomeCounts {
            runs: count("runs")?,
            successful_runs: count("successful_runs")?,
            failed_runs: count("failed_runs")?,
            successful_task_runs: count("successful_task_runs")?,
            failed_task_runs: count("failed_task_runs")?,
        })
    }

    async fn run_durations(
        &self,
        pipeline_uuid: Option<Uuid>,
        since: Option<DateTime<Utc>>,
        per_pipeline: u32,
    ) -> anyhow::Result<Vec<(Uuid, Vec<u64>)>> {
        let pipeline_text = pipeline_uuid.map(|uuid| uuid.to_string());
        let rows = sqlx::query(
            "SELECT pipeline_uuid, SUM(duration_ms) AS duration, MAX(executed_at) AS last_executed \
             FROM task_run_statistics \
             WHERE (? IS NULL OR pipeline_uuid = ?) AND executed_at >= ? \
             GROUP BY pipeline_uuid, pipeline_run_uuid \
             ORDER BY last_executed DESC, pipeline_run_uuid DESC",
        )
        .bind(pipeline_text.clone())
        .bind(pipeline_text)
        .bind(since_millis(since))
        .fetch_all(self.pool()?)
        .await
        .context("failed to read run durations from task_run_statistics")?;
        let mut durations: BTreeMap<Uuid, Vec<u64>> = BTreeMap::new();
        for row in &rows {
            let pipeline = parse_uuid(&row.try_get::<String, _>("pipeline_uuid")?)?;
            let runs = durations.entry(pipeline).or_default();
            if runs.len() < per_pipeline as usize {
                runs.push(row.try_get::<i64, _>("duration")? as u64);
            }
        }
        Ok(durations.into_iter().collect())
    }

    async fn slow_tasks(
        &self,
        threshold_ms: u64,
        since: DateTime<Utc>,
        limit: u32,
    ) -> anyhow::Result<Vec<SlowTask>> {
        let rows = sqlx::query(
            "SELECT result_uuid, pipeline_uuid, pipeline_run_uuid, task_uuid, task_type, \
             duration_ms, is_successful, executed_at FROM task_run_statistics \
             WHERE duration_ms > ? AND executed_at >= ? \
             ORDER BY executed_at DESC, result_uuid DESC LIMIT ?",
        )
        .bind(i64::try_from(threshold_ms).unwrap_or(i64::MAX))
        .bind(since.timestamp_millis())
        .bind(i64::from(limit))
        .fetch_all(self.pool()?)
        .await
        .context("failed to read slow tasks from task_run_statistics")?;
        rows.iter()
            .map(|row| {
                let executed_at_ms: i64 = row.try_get("executed_at")?;
                Ok(SlowTask {
                    result_uuid: parse_uuid(&row.try_get::<String, _>("result_uuid")?)?,
                    pipeline_uuid: parse_uuid(&row.try_get::<String, _>("pipeline_uuid")?)?,
                    pipeline_run_uuid: parse_uuid(&row.try_get::<String, _>("pipeline_run_uuid")?)?,
                    task_uuid: parse_uuid(&row.try_get::<String, _>("task_uuid")?)?,
                    task_type: row.try_get("task_type")?,
                    duration_ms: row.try_get::<i64, _>("duration_ms")? as u64,
                    is_successful: row.try_get::<bool, _>("is_successful")?,
                    executed_at: Utc
                        .timestamp_millis_opt(executed_at_ms)
                        .single()
                        .unwrap_or_default(),
                })
            })
            .collect()
    }

    async fn apply_retention(&self, cutoff: DateTime<Utc>) -> anyhow::Result<u64> {
        let deleted = sqlx::query("DELETE FROM task_run_statistics WHERE executed_at < ?")
            .bind(cutoff.timestamp_millis())
            .execute(self.pool()?)
            .await
            .context("failed to delete expired rows from task_run_statistics")?
            .rows_affected();
        Ok(deleted)
    }
}
