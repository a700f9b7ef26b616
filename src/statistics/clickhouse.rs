//! Statistics in a ClickHouse table, through the `clickhouse` crate's HTTP client.
//!
//! Tested with ClickHouse 18.16.1 (Debian 12's package), which shapes the SQL here:
//!
//! - the client runs with schema validation off, because validation uses the
//!   `RowBinaryWithNamesAndTypes` format that 18.16 does not know. Rows are then sent and read
//!   as plain `RowBinary`, so every selected column is cast to the exact type of its Rust
//!   field (`toUInt64(...)`). A mismatch misreads the bytes instead of failing clearly;
//! - there is no `DateTime64`, so `executed_at_ms` (UInt64) carries the millisecond time used
//!   for ordering and ranges, and `executed_at` (DateTime) is the partition key;
//! - there is no table `TTL`, so retention drops whole monthly partitions from the runtime;
//! - values are bound on the client side (`?`), because server-side query parameters are
//!   missing too.
//!
//! The table is a `ReplacingMergeTree` ordered by `(pipeline_uuid, uuid)`: a result stored
//! twice (a redelivered record, a retried batch) has the same `executed_at`, so both copies
//! land in one partition and merge into one row. Until the merge runs both copies exist, so
//! every query reads the table with `FINAL`.

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Datelike, TimeZone, Utc};
use clickhouse::Client;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;
use tracing::info;
use uuid::Uuid;

use super::{OutcomeCounts, SlowTask, StatisticsStore};
use crate::config::StatisticsConfig;
use crate::store::StatisticsRow;

pub struct ClickHouseStatistics {
    client: Result<Client, String>,
    database: String,
    /// `database.table`, both validated as plain identifiers by the config.
    table: String,
    schema: OnceCell<()>,
}

/// One row of the table, in column order.
#[derive(Debug, Clone, clickhouse::Row, Serialize, Deserialize)]
struct TaskRunRow {
    #[serde(with = "clickhouse::serde::uuid")]
    uuid: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    organization_uuid: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    pipeline_uuid: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    pipeline_run_uuid: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    task_uuid: Uuid,
    task_type: String,
    pipeline_type: String,
    is_initial_task: u8,
    is_final_task: u8,
    is_successful: u8,
    duration_ms: u32,
    output_bytes: u64,
    /// JSON array of error messages, as in the SQLite table.
    errors: String,
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    executed_at: DateTime<Utc>,
    executed_at_ms: u64,
}

impl From<&StatisticsRow> for TaskRunRow {
    fn from(row: &StatisticsRow) -> TaskRunRow {
        TaskRunRow {
            uuid: row.result_uuid,
            organization_uuid: row.organization_uuid,
            pipeline_uuid: row.pipeline_uuid,
            pipeline_run_uuid: row.pipeline_run_uuid,
            task_uuid: row.task_uuid,
            task_type: row.task_type.clone(),
            pipeline_type: row.pipeline_type.clone(),
            is_initial_task: u8::from(row.is_initial_task),
            is_final_task: u8::from(row.is_final_task),
            is_successful: u8::from(row.is_successful),
            // UInt32 stores up to 49 days of milliseconds, so longer durations are stored as the maximum.
            duration_ms: u32::try_from(row.duration_ms).unwrap_or(u32::MAX),
            output_bytes: row.output_bytes,
            errors: serde_json::to_string(&row.errors).unwrap_or_else(|_| "[]".to_owned()),
            executed_at: row.executed_at,
            executed_at_ms: u64::try_from(row.executed_at.timestamp_millis()).unwrap_or(0),
        }
    }
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct CountsRow {
    runs: u64,
    successful_runs: u64,
    failed_runs: u64,
    successful_task_runs: u64,
    failed_task_runs: u64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct RunDurationRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pipeline_uuid: Uuid,
    duration_ms: u64,
    /// Read only because RowBinary needs every selected column; the query orders by it.
    #[allow(dead_code)]
    last_executed_ms: u64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct SlowTaskRow {
    #[serde(with = "clickhouse::serde::uuid")]
    uuid: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    pipeline_uuid: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    pipeline_run_uuid: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    task_uuid: Uuid,
    task_type: String,
    duration_ms: u64,
    is_successful: u8,
    executed_at_ms: u64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct PartitionRow {
    partition: String,
}

impl ClickHouseStatistics {
    /// Builds the client; nothing is sent until the first use. A missing password variable is
    /// reported by every operation.
    pub fn new(config: &StatisticsConfig) -> ClickHouseStatistics {
        let client = build_client(config);
        ClickHouseStatistics {
            client,
            database: config.database.clone(),
            table: format!("{}.{}", config.database, config.table),
            schema: OnceCell::new(),
        }
    }

    fn client(&self) -> anyhow::Result<&Client> {
        self.client
            .as_ref()
            .map_err(|problem| anyhow::anyhow!("{problem}"))
    }

    /// Creates the database and table once per process, before the first write or query.
    async fn ensure_schema(&self) -> anyhow::Result<&Client> {
        let client = self.client()?;
        self.schema
            .get_or_try_init(|| async {
                client
                    .query(&create_database_sql(&self.database))
                    .execute()
                    .await
                    .with_context(|| {
                        format!("failed to create ClickHouse database {}", self.database)
                    })?;
                client
                    .query(&create_table_sql(&self.table))
                    .execute()
                    .await
                    .with_context(|| format!("failed to create ClickHouse table {}", self.table))?;
                info!(table = %self.table, "clickhouse statistics table ready");
                anyhow::Ok(())
            })
            .await?;
        Ok(client)
    }
}

fn build_client(config: &StatisticsConfig) -> Result<Client, String> {
    let mut client = Client::default()
        .with_url(config.url.clone())
        .with_user(config.user.clone())
        .with_compression(clickhouse::Compression::Lz4)
        .with_validation(false);
    if let Some(variable) = &config.password_env {
        let password = std::env::var(variable).map_err(|_| {
            format!("environment variable {variable}, named by statistics.password_env, is not set")
        })?;
        client = client.with_password(password);
    }
    Ok(client)
}

pub fn create_database_sql(database: &str) -> String {
    format!("CREATE DATABASE IF NOT EXISTS {database}")
}

pub fn create_table_sql(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (\
         uuid UUID, organization_uuid UUID, pipeline_uuid UUID, pipeline_run_uuid UUID, \
         task_uuid UUID, task_type String, pipeline_type String, is_initial_task UInt8, \
         is_final_task UInt8, is_successful UInt8, duration_ms UInt32, output_bytes UInt64, \
         errors String, executed_at DateTime, executed_at_ms UInt64) \
         ENGINE = ReplacingMergeTree PARTITION BY toYYYYMM(executed_at) \
         ORDER BY (pipeline_uuid, uuid)"
    )
}

/// Outcome counts; binds the pipeline uuid, then the lower bound in ms.
pub fn outcome_counts_sql(table: &str) -> String {
    format!(
        "SELECT toUInt64(count()) AS runs, \
         toUInt64(countIf(failures = 0)) AS successful_runs, \
         toUInt64(countIf(failures > 0)) AS failed_runs, \
         toUInt64(sum(successes)) AS successful_task_runs, \
         toUInt64(sum(failures)) AS failed_task_runs \
         FROM (SELECT pipeline_run_uuid, toUInt64(countIf(is_successful = 1)) AS successes, \
               toUInt64(countIf(is_successful = 0)) AS failures \
               FROM {table} FINAL \
               WHERE pipeline_uuid = toUUID(?) AND executed_at_ms >= ? \
               GROUP BY pipeline_run_uuid)"
    )
}

/// Newest run durations per pipeline; binds the pipeline uuid when `one_pipeline`, then the
/// lower bound in ms, then the runs per pipeline.
pub fn run_durations_sql(table: &str, one_pipeline: bool) -> String {
    let pipeline_filter = if one_pipeline {
        "pipeline_uuid = toUUID(?) AND "
    } else {
        ""
    };
    format!(
        "SELECT pipeline_uuid, toUInt64(sum(duration_ms)) AS duration_ms, \
         max(executed_at_ms) AS last_executed_ms \
         FROM {table} FINAL WHERE {pipeline_filter}executed_at_ms >= ? \
         GROUP BY pipeline_uuid, pipeline_run_uuid \
         ORDER BY pipeline_uuid, last_executed_ms DESC, toString(pipeline_run_uuid) DESC \
         LIMIT ? BY pipeline_uuid"
    )
}

/// Slow task runs; binds the threshold, the lower bound in ms and the limit.
pub fn slow_tasks_sql(table: &str) -> String {
    format!(
        "SELECT uuid, pipeline_uuid, pipeline_run_uuid, task_uuid, task_type, \
         toUInt64(duration_ms) AS duration_ms, is_successful, executed_at_ms \
         FROM {table} FINAL WHERE duration_ms > ? AND executed_at_ms >= ? \
         ORDER BY executed_at_ms DESC, toString(uuid) DESC LIMIT ?"
    )
}

/// Active partitions of the table; binds the database and the table name.
pub fn partitions_sql() -> &'static str {
    "SELECT DISTINCT partition FROM system.parts WHERE database = ? AND table = ? AND active"
}

/// Partitions (`toYYYYMM` values) that hold only rows executed before `cutoff`.
pub fn expired_partitions(partitions: &[String], cutoff: DateTime<Utc>) -> Vec<u32> {
    let cutoff_month = cutoff.year() as u32 * 100 + cutoff.month();
    partitions
        .iter()
        .filter_map(|partition| partition.trim_matches('\'').parse::<u32>().ok())
        .filter(|month| *month < cutoff_month)
        .collect()
}

fn since_ms(since: Option<DateTime<Utc>>) -> u64 {
    since.map_or(0, |time| {
        u64::try_from(time.timestamp_millis()).unwrap_or(0)
    })
}

#[async_trait]
impl StatisticsStore for ClickHouseStatistics {
    fn backend(&self) -> &'static str {
        "clickhouse"
    }

    async fn insert(&self, rows: &[StatisticsRow]) -> anyhow::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let client = self.ensure_schema().await?;
        let mut insert = client
            .insert_unescaped::<TaskRunRow>(&self.table)
            .await
            .with_context(|| format!("failed to start an insert into {}", self.table))?;
        for row in rows {
            insert
                .write(&TaskRunRow::from(row))
                .await
                .with_context(|| format!("failed to send rows to {}", self.table))?;
        }
        insert
            .end()
            .await
            .with_context(|| format!("failed to insert {} rows into {}", rows.len(), self.table))
    }

    async fn outcome_counts(
        &self,
        pipeline_uuid: Uuid,
        since: Option<DateTime<Utc>>,
    ) -> anyhow::Result<OutcomeCounts> {
        let client = self.ensure_schema().await?;
        let row: CountsRow = client
            .query(&outcome_counts_sql(&self.table))
            .bind(pipeline_uuid.to_string())
            .bind(since_ms(since))
            .fetch_one()
            .await
            .with_context(|| format!("failed to count results in {}", self.table))?;
        Ok(OutcomeCounts {
            runs: row.runs,
            successful_runs: row.successful_runs,
            failed_runs: row.failed_runs,
            successful_task_runs: row.successful_task_runs,
            failed_task_runs: row.failed_task_runs,
        })
    }

    async fn run_durations(
        &self,
        pipeline_uuid: Option<Uuid>,
        since: Option<DateTime<Utc>>,
        per_pipeline: u32,
    ) -> anyhow::Result<Vec<(Uuid, Vec<u64>)>> {
        let client = self.ensure_schema().await?;
        let mut query = client.query(&run_durations_sql(&self.table, pipeline_uuid.is_some()));
        if let Some(pipeline) = pipeline_uuid {
            query = query.bind(pipeline.to_string());
        }
        let rows: Vec<RunDurationRow> = query
            .bind(since_ms(since))
            .bind(per_pipeline)
            .fetch_all()
            .await
            .with_context(|| format!("failed to read run durations from {}", self.table))?;
        // Rows come grouped by pipeline, newest run first within each.
        let mut durations: Vec<(Uuid, Vec<u64>)> = Vec::new();
        for row in rows {
            match durations.last_mut() {
                Some((pipeline, runs)) if *pipeline == row.pipeline_uuid => {
                    runs.push(row.duration_ms)
                }
                _ => durations.push((row.pipeline_uuid, vec![row.duration_ms])),
            }
        }
        Ok(durations)
    }

    async fn slow_tasks(
        &self,
        threshold_ms: u64,
        since: DateTime<Utc>,
        limit: u32,
    ) -> anyhow::Result<Vec<SlowTask>> {
        let client = self.ensure_schema().await?;
        let rows: Vec<SlowTaskRow> = client
            .query(&slow_tasks_sql(&self.table))
            .bind(threshold_ms)
            .bind(since_ms(Some(since)))
            .bind(limit)
            .fetch_all()
            .await
            .with_context(|| format!("failed to read slow tasks from {}", self.table))?;
        Ok(rows
            .into_iter()
            .map(|row| SlowTask {
                result_uuid: row.uuid,
                pipeline_uuid: row.pipeline_uuid,
                pipeline_run_uuid: row.pipeline_run_uuid,
                task_uuid: row.task_uuid,
                task_type: row.task_type,
                duration_ms: row.duration_ms,
                is_successful: row.is_successful != 0,
                executed_at: Utc
                    .timestamp_millis_opt(i64::try_from(row.executed_at_ms).unwrap_or(0))
                    .single()
                    .unwrap_or_default(),
            })
            .collect())
    }

    async fn apply_retention(&self, cutoff: DateTime<Utc>) -> anyhow::Result<u64> {
        let client = self.ensure_schema().await?;
        let table_name = self
            .table
            .split_once('.')
            .map_or(self.table.as_str(), |(_, name)| name);
        let partitions: Vec<PartitionRow> = client
            .query(partitions_sql())
            .bind(&self.database)
            .bind(table_name)
            .fetch_all()
            .await
            .with_context(|| format!("failed to list the partitions of {}", self.table))?;
        let partitions: Vec<String> = partitions.into_iter().map(|row| row.partition).collect();
        let expired = expired_partitions(&partitions, cutoff);
        for month in &expired {
            client
                .query(&format!(
                    "ALTER TABLE {} DROP PARTITION {month}",
                    self.table
                ))
                .execute()
                .await
                .with_context(|| format!("failed to drop partition {month} of {}", self.table))?;
            info!(table = %self.table, partition = month, "dropped expired statistics partition");
        }
        Ok(expired.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_replacing_merge_tree_by_month() {
        let sql = create_table_sql("stats.task_runs");
        assert!(
            sql.starts_with("CREATE TABLE IF NOT EXISTS stats.task_runs ("),
            "{sql}"
        );
        assert!(sql.contains("ENGINE = ReplacingMergeTree"), "{sql}");
        assert!(sql.contains("PARTITION BY toYYYYMM(executed_at)"), "{sql}");
        assert!(sql.contains("ORDER BY (pipeline_uuid, uuid)"), "{sql}");
        assert!(sql.contains("duration_ms UInt32"), "{sql}");
    }

    #[test]
    fn queries_read_with_final() {
        for sql in [
            outcome_counts_sql("s.t"),
            run_durations_sql("s.t", true),
            run_durations_sql("s.t", false),
            slow_tasks_sql("s.t"),
        ] {
            assert!(sql.contains("FROM s.t FINAL"), "{sql}");
            assert_eq!(sql.matches('?').count(), expected_binds(&sql), "{sql}");
        }
    }

    fn expected_binds(sql: &str) -> usize {
        if sql.contains("LIMIT ? BY") {
            2 + usize::from(sql.contains("toUUID(?)"))
        } else if sql.contains("duration_ms > ?") {
            3
        } else {
            2
        }
    }

    #[test]
    fn run_durations_filters_one_pipeline() {
        let one = run_durations_sql("s.t", true);
        let all = run_durations_sql("s.t", false);
        assert!(
            one.contains("pipeline_uuid = toUUID(?) AND executed_at_ms >= ?"),
            "{one}"
        );
        assert!(!all.contains("toUUID"), "{all}");
        assert!(all.contains("LIMIT ? BY pipeline_uuid"), "{all}");
    }

    #[test]
    fn selected_numbers_are_pinned_to_u64() {
        let counts = outcome_counts_sql("s.t");
        for column in [
            "runs",
            "successful_runs",
            "failed_runs",
            "successful_task_runs",
            "failed_task_runs",
        ] {
            assert!(
                counts.contains(&format!(") AS {column}")),
                "{column}: {counts}"
            );
        }
        assert!(slow_tasks_sql("s.t").contains("toUInt64(duration_ms) AS duration_ms"));
        assert!(run_durations_sql("s.t", false).contains("toUInt64(sum(duration_ms))"));
    }

    #[test]
    fn expired_partitions_before_cutoff_month() {
        let cutoff = Utc.with_ymd_and_hms(2024, 3, 15, 12, 0, 0).unwrap();
        let partitions =
            ["202401", "202402", "202403", "202404", "'202312'", "all"].map(str::to_owned);
        assert_eq!(
            expired_partitions(&partitions, cutoff),
            vec![202401, 202402, 202312]
        );
    }

    #[test]
    fn row_keeps_millis_and_caps_duration() {
        let executed_at = Utc.timestamp_millis_opt(1_700_000_000_123).unwrap();
        let row = StatisticsRow {
            result_uuid: Uuid::new_v4(),
            organization_uuid: Uuid::nil(),
            pipeline_uuid: Uuid::new_v4(),
            pipeline_run_uuid: Uuid::new_v4(),
            task_uuid: Uuid::new_v4(),
            task_type: "query".to_owned(),
            pipeline_type: "generic".to_owned(),
            is_initial_task: true,
            is_final_task: false,
            is_successful: true,
            duration_ms: u64::from(u32::MAX) + 5,
            output_bytes: 10,
            errors: vec!["timeout".to_owned()],
            executed_at,
        };
        let stored = TaskRunRow::from(&row);
        assert_eq!(stored.executed_at_ms, 1_700_000_000_123);
        assert_eq!(stored.duration_ms, u32::MAX);
        assert_eq!(stored.errors, r#"["timeout"]"#);
        assert_eq!(stored.is_initial_task, 1);
    }
}
