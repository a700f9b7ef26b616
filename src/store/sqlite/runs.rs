//! Pipeline runs, their task runs, and result statistics.

use std::collections::BTreeMap;

use chrono::Utc;
use sqlx::Row;
use uuid::Uuid;

use super::{from_millis, parse_uuid, to_millis, SqliteStore};
use crate::store::{
    quantile, NewRun, PipelineStatistics, RecordOutcome, ResultRecord, RunDetail, RunKind,
    RunStatus, RunSummary, StatisticsRow, StoreResult, TaskRunRow,
};

const RUN_COLUMNS: &str = "run_uuid, pipeline_uuid, pipeline_name, kind, status, outstanding, \
    task_results, failed_tasks, error, scheduled_for, started_at, finished_at";

impl SqliteStore {
    pub(super) async fn insert_run(&self, run: NewRun) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO pipeline_runs (run_uuid, pipeline_uuid, pipeline_name, kind, status, \
             outstanding, scheduled_for, started_at) VALUES (?, ?, ?, ?, 'running', ?, ?, ?) \
             ON CONFLICT (run_uuid) DO NOTHING",
        )
        .bind(run.run_uuid.to_string())
        .bind(run.pipeline_uuid.to_string())
        .bind(&run.pipeline_name)
        .bind(run.kind.as_str())
        .bind(i64::from(run.outstanding))
        .bind(run.scheduled_for.map(to_millis))
        .bind(to_millis(Utc::now()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn mark_run_failed(&self, run_uuid: Uuid, error: &str) -> StoreResult<()> {
        sqlx::query(
            "UPDATE pipeline_runs SET status = 'failed', error = ?, outstanding = 0, finished_at = ? \
             WHERE run_uuid = ? AND status = 'running'",
        )
        .bind(error)
        .bind(to_millis(Utc::now()))
        .bind(run_uuid.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn cancel(&self, run_uuid: Uuid) -> StoreResult<Option<RunStatus>> {
        let now = to_millis(Utc::now());
        let mut transaction = self.begin_write().await?;
        sqlx::query(
            "UPDATE pipeline_runs SET status = 'cancelled', error = 'cancelled by request', finished_at = ? \
             WHERE run_uuid = ? AND status = 'running'",
        )
        .bind(now)
        .bind(run_uuid.to_string())
        .execute(&mut *transaction)
        .await?;
        let queued = sqlx::query(
            "DELETE FROM scheduled_runs WHERE pipeline_run_uuid = ? AND published_at IS NULL \
             AND (claimed_until IS NULL OR claimed_until < ?) RETURNING pipeline_uuid, kind, execute_at",
        )
        .bind(run_uuid.to_string())
        .bind(now)
        .fetch_optional(&mut *transaction)
        .await?;
        if let Some(queued) = queued {
            // Cancelled before any publisher took it: the run is recorded as cancelled.
            sqlx::query(
                "INSERT INTO pipeline_runs (run_uuid, pipeline_uuid, pipeline_name, kind, status, \
                 outstanding, error, scheduled_for, started_at, finished_at) \
                 SELECT ?, ?, COALESCE((SELECT name FROM pipelines WHERE uuid = ?), ''), ?, 'cancelled', 0, \
                 'cancelled by request', ?, ?, ? ON CONFLICT (run_uuid) DO NOTHING",
            )
            .bind(run_uuid.to_string())
            .bind(queued.try_get::<String, _>("pipeline_uuid")?)
            .bind(queued.try_get::<String, _>("pipeline_uuid")?)
            .bind(queued.try_get::<String, _>("kind")?)
            .bind(queued.try_get::<i64, _>("execute_at")?)
            .bind(now)
            .bind(now)
            .execute(&mut *transaction)
            .await?;
        }
        let status = sqlx::query("SELECT status FROM pipeline_runs WHERE run_uuid = ?")
            .bind(run_uuid.to_string())
            .fetch_optional(&mut *transaction)
            .await?
            .map(|row| row.try_get::<String, _>("status"))
            .transpose()?
            .map(|status| RunStatus::parse(&status));
        transaction.commit().await?;
        Ok(status)
    }

    pub(super) async fn status_of(&self, run_uuid: Uuid) -> StoreResult<Option<RunStatus>> {
        let row = sqlx::query("SELECT status FROM pipeline_runs WHERE run_uuid = ?")
            .bind(run_uuid.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .map(|row| row.try_get::<String, _>("status"))
            .transpose()?
            .map(|status| RunStatus::parse(&status)))
    }

    pub(super) async fn insert_result(
        &self,
        result: &ResultRecord,
        next_tasks: u32,
    ) -> StoreResult<RecordOutcome> {
        let now = to_millis(Utc::now());
        let mut transaction = self.begin_write().await?;

        let inserted = sqlx::query(
            "INSERT INTO task_runs (dedupe_key, result_uuid, run_uuid, task_run_uuid, task_uuid, \
             task_name, task_type, is_successful, duration_ms, output_bytes, errors, batch_index, \
             attempt, executed_at, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (dedupe_key) DO NOTHING",
        )
        .bind(result.dedupe_key())
        .bind(result.result_uuid.to_string())
        .bind(result.run_uuid.to_string())
        .bind(result.task_run_uuid.to_string())
        .bind(result.task_uuid.to_string())
        .bind(&result.task_name)
        .bind(&result.task_type)
        .bind(result.is_successful)
        .bind(result.duration_ms as i64)
        .bind(result.output_bytes as i64)
        .bind(serde_json::to_string(&result.errors).unwrap_or_default())
        .bind(result.batch_index.map(i64::from))
        .bind(result.attempt.map(i64::from))
        .bind(to_millis(result.executed_at))
        .bind(now)
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        if inserted == 0 {
            transaction.rollback().await?;
            return Ok(RecordOutcome {
                duplicate: true,
                finished: None,
            });
        }

        // A run started outside this runtime has no row yet: it is counted from this result on.
        sqlx::query(
            "INSERT INTO pipeline_runs (run_uuid, pipeline_uuid, pipeline_name, kind, status, \
             outstanding, started_at) VALUES (?, ?, '', 'external', 'running', 1, ?) \
             ON CONFLICT (run_uuid) DO NOTHING",
        )
        .bind(result.run_uuid.to_string())
        .bind(result.pipeline_uuid.to_string())
        .bind(now)
        .execute(&mut *transaction)
        .await?;

        // The first result of a batch announces the rest of the batch.
        let announced = if result.batch_index.unwrap_or(0) == 0 {
            i64::from(result.batch_size.max(1)) - 1
        } else {
            0
        };
        let delta = i64::from(next_tasks) + announced - 1;
        let failed = i64::from(!result.is_successful);
        let error = (!result.is_successful).then(|| {
            let message = result.errors.last().map(String::as_str).unwrap_or("failed");
            format!("task {} failed: {message}", result.task_name)
        });
        let row = sqlx::query(
            "UPDATE pipeline_runs SET outstanding = outstanding + ?, task_results = task_results + 1, \
             failed_tasks = failed_tasks + ?, error = COALESCE(error, ?) \
             WHERE run_uuid = ? RETURNING outstanding, failed_tasks, status",
        )
        .bind(delta)
        .bind(failed)
        .bind(error)
        .bind(result.run_uuid.to_string())
        .fetch_one(&mut *transaction)
        .await?;
        let outstanding: i64 = row.try_get("outstanding")?;
        let failed_tasks: i64 = row.try_get("failed_tasks")?;
        let status = RunStatus::parse(&row.try_get::<String, _>("status")?);

        let mut finished = None;
        if outstanding <= 0 && status == RunStatus::Running {
            let final_status = if failed_tasks > 0 {
                RunStatus::Failed
            } else {
                RunStatus::Succeeded
            };
            sqlx::query("UPDATE pipeline_runs SET status = ?, finished_at = ? WHERE run_uuid = ?")
                .bind(final_status.as_str())
                .bind(now)
                .bind(result.run_uuid.to_string())
                .execute(&mut *transaction)
                .await?;
            finished = Some(final_status);
        }
        transaction.commit().await?;
        Ok(RecordOutcome {
            duplicate: false,
            finished,
        })
    }

    pub(super) async fn runs(
        &self,
        pipeline: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<RunSummary>> {
        let rows = match pipeline {
            Some(name) => {
                let sql = format!(
                    "SELECT {RUN_COLUMNS} FROM pipeline_runs WHERE pipeline_name = ? \
                     ORDER BY started_at DESC, rowid DESC LIMIT ?"
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(name)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                let sql = format!(
                    "SELECT {RUN_COLUMNS} FROM pipeline_runs ORDER BY started_at DESC, rowid DESC LIMIT ?"
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(run_summary).collect()
    }

    pub(super) async fn run_detail(&self, run_uuid: Uuid) -> StoreResult<Option<RunDetail>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM pipeline_runs WHERE run_uuid = ?");
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(run_uuid.to_string())
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let run = run_summary(&row)?;
        let rows = sqlx::query(
            "SELECT task_run_uuid, result_uuid, task_uuid, task_name, task_type, is_successful, \
             duration_ms, output_bytes, errors, batch_index, attempt, executed_at \
             FROM task_runs WHERE run_uuid = ? ORDER BY id",
        )
        .bind(run_uuid.to_string())
        .fetch_all(&self.pool)
        .await?;
        let task_runs = rows
            .iter()
            .map(|row| {
                let errors: String = row.try_get("errors")?;
                Ok(TaskRunRow {
                    task_run_uuid: parse_uuid(&row.try_get::<String, _>("task_run_uuid")?)?,
                    result_uuid: parse_uuid(&row.try_get::<String, _>("result_uuid")?)?,
                    task_uuid: parse_uuid(&row.try_get::<String, _>("task_uuid")?)?,
                    task_name: row.try_get("task_name")?,
                    task_type: row.try_get("task_type")?,
                    status: if row.try_get::<bool, _>("is_successful")? {
                        "succeeded"
                    } else {
                        "failed"
                    },
                    duration_ms: row.try_get::<i64, _>("duration_ms")? as u64,
                    output_bytes: row.try_get::<i64, _>("output_bytes")? as u64,
                    errors: serde_json::from_str(&errors).unwrap_or_default(),
                    batch_index: row
                        .try_get::<Option<i64>, _>("batch_index")?
                        .map(|index| index as u32),
                    attempt: row
                        .try_get::<Option<i64>, _>("attempt")?
                        .map(|attempt| attempt as u32),
                    executed_at: from_millis(row.try_get("executed_at")?),
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Some(RunDetail { run, task_runs }))
    }

    pub(super) async fn insert_statistics(&self, rows: &[StatisticsRow]) -> StoreResult<u64> {
        let mut transaction = self.begin_write().await?;
        let mut inserted = 0;
        for row in rows {
            inserted += sqlx::query(
                "INSERT INTO task_run_statistics (result_uuid, organization_uuid, pipeline_uuid, \
                 pipeline_run_uuid, task_uuid, task_type, pipeline_type, is_initial_task, is_final_task, \
                 is_successful, duration_ms, output_bytes, errors, executed_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (result_uuid) DO NOTHING",
            )
            .bind(row.result_uuid.to_string())
            .bind(row.organization_uuid.to_string())
            .bind(row.pipeline_uuid.to_string())
            .bind(row.pipeline_run_uuid.to_string())
            .bind(row.task_uuid.to_string())
            .bind(&row.task_type)
            .bind(&row.pipeline_type)
            .bind(row.is_initial_task)
            .bind(row.is_final_task)
            .bind(row.is_successful)
            .bind(row.duration_ms as i64)
            .bind(row.output_bytes as i64)
            .bind(serde_json::to_string(&row.errors).unwrap_or_default())
            .bind(to_millis(row.executed_at))
            .execute(&mut *transaction)
            .await?
            .rows_affected();
        }
        transaction.commit().await?;
        Ok(inserted)
    }

    pub(super) async fn statistics(
        &self,
        pipeline_uuid: Uuid,
        last_runs: u32,
    ) -> StoreResult<PipelineStatistics> {
        let counts = sqlx::query(
            "SELECT COUNT(DISTINCT pipeline_run_uuid) AS runs, \
             COALESCE(SUM(is_successful), 0) AS successes, COUNT(*) AS total \
             FROM task_run_statistics WHERE pipeline_uuid = ?",
        )
        .bind(pipeline_uuid.to_string())
        .fetch_one(&self.pool)
        .await?;
        let successes: i64 = counts.try_get("successes")?;
        let total: i64 = counts.try_get("total")?;
        let durations = self.run_durations(Some(pipeline_uuid), last_runs).await?;
        let durations: Vec<u64> = durations.into_values().next().unwrap_or_default();
        Ok(PipelineStatistics {
            runs: counts.try_get::<i64, _>("runs")? as u64,
            successful_task_runs: successes as u64,
            failed_task_runs: (total - successes) as u64,
            duration_p50_ms: quantile(&durations, 0.5),
            duration_p80_ms: quantile(&durations, 0.8),
            duration_p95_ms: quantile(&durations, 0.95),
        })
    }

    /// Run durations (sum of task durations) per pipeline, newest run first.
    pub(super) async fn run_durations(
        &self,
        pipeline_uuid: Option<Uuid>,
        per_pipeline: u32,
    ) -> StoreResult<BTreeMap<Uuid, Vec<u64>>> {
        let rows = sqlx::query(
            "SELECT pipeline_uuid, pipeline_run_uuid, SUM(duration_ms) AS duration, \
             MAX(executed_at) AS last_executed FROM task_run_statistics \
             WHERE (? IS NULL OR pipeline_uuid = ?) \
             GROUP BY pipeline_uuid, pipeline_run_uuid ORDER BY last_executed DESC",
        )
        .bind(pipeline_uuid.map(|uuid| uuid.to_string()))
        .bind(pipeline_uuid.map(|uuid| uuid.to_string()))
        .fetch_all(&self.pool)
        .await?;
        let mut durations: BTreeMap<Uuid, Vec<u64>> = BTreeMap::new();
        for row in &rows {
            let pipeline = parse_uuid(&row.try_get::<String, _>("pipeline_uuid")?)?;
            let entry = durations.entry(pipeline).or_default();
            if entry.len() < per_pipeline as usize {
                entry.push(row.try_get::<i64, _>("duration")? as u64);
            }
        }
        Ok(durations)
    }
}

fn run_summary(row: &sqlx::sqlite::SqliteRow) -> StoreResult<RunSummary> {
    Ok(RunSummary {
        run_uuid: parse_uuid(&row.try_get::<String, _>("run_uuid")?)?,
        pipeline_uuid: parse_uuid(&row.try_get::<String, _>("pipeline_uuid")?)?,
        pipeline_name: row.try_get("pipeline_name")?,
        kind: RunKind::parse(&row.try_get::<String, _>("kind")?),
        status: RunStatus::parse(&row.try_get::<String, _>("status")?),
        outstanding: row.try_get("outstanding")?,
        task_results: row.try_get("task_results")?,
        failed_tasks: row.try_get("failed_tasks")?,
        error: row.try_get("error")?,
        scheduled_for: row
            .try_get::<Option<i64>, _>("scheduled_for")?
            .map(from_millis),
        started_at: from_millis(row.try_get("started_at")?),
        finished_at: row
            .try_get::<Option<i64>, _>("finished_at")?
            .map(from_millis),
    })
}
