//! Pipeline runs and their task runs.

use chrono::Utc;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::Row;
use uuid::Uuid;

use super::{from_millis, to_millis, PgStore};
use crate::store::{
    NewRun, RecordOutcome, ResultRecord, RunDetail, RunKind, RunStatus, RunSummary, StoreResult,
    TaskRunRow,
};

const RUN_COLUMNS: &str = "run_uuid, pipeline_uuid, pipeline_name, kind, status, outstanding, \
    task_results, failed_tasks, error, scheduled_for, started_at, finished_at";

impl PgStore {
    pub(super) async fn insert_run(&self, run: NewRun) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO pipeline_runs (run_uuid, pipeline_uuid, pipeline_name, kind, status, \
             outstanding, scheduled_for, started_at) VALUES ($1, $2, $3, $4, 'running', $5, $6, $7) \
             ON CONFLICT (run_uuid) DO NOTHING",
        )
        .bind(run.run_uuid)
        .bind(run.pipeline_uuid)
        .bind(&run.pipeline_name)
        .bind(run.kind.as_str())
        .bind(i64::from(run.outstanding))
        .bind(run.scheduled_for.map(to_millis))
        .bind(to_millis(Utc::now()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn cancel(&self, run_uuid: Uuid) -> StoreResult<Option<RunStatus>> {
        let now = to_millis(Utc::now());
        let mut transaction = self.pool.begin().await?;
        sqlx::query(
            "UPDATE pipeline_runs SET status = 'cancelled', error = 'cancelled by request', finished_at = $1 \
             WHERE run_uuid = $2 AND status = 'running'",
        )
        .bind(now)
        .bind(run_uuid)
        .execute(&mut *transaction)
        .await?;
        let queued = sqlx::query(
            "DELETE FROM scheduled_runs WHERE pipeline_run_uuid = $1 AND published_at IS NULL \
             AND (claimed_until IS NULL OR claimed_until < $2) RETURNING pipeline_uuid, kind, execute_at",
        )
        .bind(run_uuid)
        .bind(now)
        .fetch_optional(&mut *transaction)
        .await?;
        if let Some(queued) = queued {
            // Cancelled before any publisher took it: the run is recorded as cancelled.
            let pipeline_uuid: Uuid = queued.try_get("pipeline_uuid")?;
            sqlx::query(
                "INSERT INTO pipeline_runs (run_uuid, pipeline_uuid, pipeline_name, kind, status, \
                 outstanding, error, scheduled_for, started_at, finished_at) \
                 SELECT $1, $2, COALESCE((SELECT name FROM pipelines WHERE uuid = $2), ''), $3, 'cancelled', 0, \
                 'cancelled by request', $4, $5, $5 ON CONFLICT (run_uuid) DO NOTHING",
            )
            .bind(run_uuid)
            .bind(pipeline_uuid)
            .bind(queued.try_get::<String, _>("kind")?)
            .bind(queued.try_get::<i64, _>("execute_at")?)
            .bind(now)
            .execute(&mut *transaction)
            .await?;
        }
        let status = sqlx::query("SELECT status FROM pipeline_runs WHERE run_uuid = $1")
            .bind(run_uuid)
            .fetch_optional(&mut *transaction)
            .await?
            .map(|row| row.try_get::<String, _>("status"))
            .transpose()?
            .map(|status| RunStatus::parse(&status));
        transaction.commit().await?;
        Ok(status)
    }

    pub(super) async fn status_of(&self, run_uuid: Uuid) -> StoreResult<Option<RunStatus>> {
        let row = sqlx::query("SELECT status FROM pipeline_runs WHERE run_uuid = $1")
            .bind(run_uuid)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .map(|row| row.try_get::<String, _>("status"))
            .transpose()?
            .map(|status| RunStatus::parse(&status)))
    }

    pub(super) async fn mark_run_failed(&self, run_uuid: Uuid, error: &str) -> StoreResult<()> {
        sqlx::query(
            "UPDATE pipeline_runs SET status = 'failed', error = $1, outstanding = 0, finished_at = $2 \
             WHERE run_uuid = $3 AND status = 'running'",
        )
        .bind(error)
        .bind(to_millis(Utc::now()))
        .bind(run_uuid)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a result in one transaction that first locks the run's row. Every result of a
    /// run therefore waits for the one before it to commit, and two trigger listeners cannot
    /// both read the same outstanding count. A redelivered result finds its dedupe key taken
    /// once the lock is free, and the transaction is rolled back.
    pub(super) async fn insert_result(
        &self,
        result: &ResultRecord,
        next_tasks: u32,
    ) -> StoreResult<RecordOutcome> {
        let now = to_millis(Utc::now());
        let mut transaction = self.pool.begin().await?;

        // A run started outside this runtime has no row yet: it is counted from this result on.
        sqlx::query(
            "INSERT INTO pipeline_runs (run_uuid, pipeline_uuid, pipeline_name, kind, status, \
             outstanding, started_at) VALUES ($1, $2, '', 'external', 'running', 1, $3) \
             ON CONFLICT (run_uuid) DO NOTHING",
        )
        .bind(result.run_uuid)
        .bind(result.pipeline_uuid)
        .bind(now)
        .execute(&mut *transaction)
        .await?;
        sqlx::query("SELECT 1 FROM pipeline_runs WHERE run_uuid = $1 FOR UPDATE")
            .bind(result.run_uuid)
            .fetch_one(&mut *transaction)
            .await?;

        let inserted = sqlx::query(
            "INSERT INTO task_runs (dedupe_key, result_uuid, run_uuid, task_run_uuid, task_uuid, \
             task_name, task_type, is_successful, duration_ms, output_bytes, errors, batch_index, \
             attempt, executed_at, recorded_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
             ON CONFLICT (dedupe_key) DO NOTHING",
        )
        .bind(result.dedupe_key())
        .bind(result.result_uuid)
        .bind(result.run_uuid)
        .bind(result.task_run_uuid)
        .bind(result.task_uuid)
        .bind(&result.task_name)
        .bind(&result.task_type)
        .bind(result.is_successful)
        .bind(result.duration_ms as i64)
        .bind(result.output_bytes as i64)
        .bind(Json(&result.errors))
        .bind(result.batch_index.map(|index| index as i32))
        .bind(result.attempt.map(|attempt| attempt as i32))
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
            "UPDATE pipeline_runs SET outstanding = outstanding + $1, task_results = task_results + 1, \
             failed_tasks = failed_tasks + $2, error = COALESCE(error, $3) \
             WHERE run_uuid = $4 RETURNING outstanding, failed_tasks, status",
        )
        .bind(delta)
        .bind(failed)
        .bind(error)
        .bind(result.run_uuid)
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
            sqlx::query(
                "UPDATE pipeline_runs SET status = $1, finished_at = $2 WHERE run_uuid = $3",
            )
            .bind(final_status.as_str())
            .bind(now)
            .bind(result.run_uuid)
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
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM pipeline_runs \
             WHERE $1::TEXT IS NULL OR pipeline_name = $1 \
             ORDER BY started_at DESC, id DESC LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(pipeline)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(run_summary).collect()
    }

    pub(super) async fn run_detail(&self, run_uuid: Uuid) -> StoreResult<Option<RunDetail>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM pipeline_runs WHERE run_uuid = $1");
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(run_uuid)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let run = run_summary(&row)?;
        let rows = sqlx::query(
            "SELECT task_run_uuid, result_uuid, task_uuid, task_name, task_type, is_successful, \
             duration_ms, output_bytes, errors, batch_index, attempt, executed_at \
             FROM task_runs WHERE run_uuid = $1 ORDER BY id",
        )
        .bind(run_uuid)
        .fetch_all(&self.pool)
        .await?;
        let task_runs = rows
            .iter()
            .map(task_run_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Some(RunDetail { run, task_runs }))
    }
}

fn task_run_row(row: &PgRow) -> StoreResult<TaskRunRow> {
    let Json(errors): Json<Vec<String>> = row.try_get("errors")?;
    Ok(TaskRunRow {
        task_run_uuid: row.try_get("task_run_uuid")?,
        result_uuid: row.try_get("result_uuid")?,
        task_uuid: row.try_get("task_uuid")?,
        task_name: row.try_get("task_name")?,
        task_type: row.try_get("task_type")?,
        status: if row.try_get::<bool, _>("is_successful")? {
            "succeeded"
        } else {
            "failed"
        },
        duration_ms: row.try_get::<i64, _>("duration_ms")? as u64,
        output_bytes: row.try_get::<i64, _>("output_bytes")? as u64,
        errors,
        batch_index: row
            .try_get::<Option<i32>, _>("batch_index")?
            .map(|index| index as u32),
        attempt: row
            .try_get::<Option<i32>, _>("attempt")?
            .map(|attempt| attempt as u32),
        executed_at: from_millis(row.try_get("executed_at")?),
    })
}

fn run_summary(row: &PgRow) -> StoreResult<RunSummary> {
    Ok(RunSummary {
        run_uuid: row.try_get("run_uuid")?,
        pipeline_uuid: row.try_get("pipeline_uuid")?,
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
