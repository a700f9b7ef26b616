//! Result statistics: one row per result, run duration percentiles and recent durations.

use std::collections::BTreeMap;

use sqlx::types::Json;
use sqlx::Row;
use uuid::Uuid;

use super::{to_millis, PgStore};
use crate::store::{quantile, PipelineStatistics, StatisticsRow, StoreResult};

impl PgStore {
    pub(super) async fn insert_statistics(&self, rows: &[StatisticsRow]) -> StoreResult<u64> {
        let mut transaction = self.pool.begin().await?;
        let mut inserted = 0;
        for row in rows {
            inserted += sqlx::query(
                "INSERT INTO task_run_statistics (result_uuid, organization_uuid, pipeline_uuid, \
                 pipeline_run_uuid, task_uuid, task_type, pipeline_type, is_initial_task, is_final_task, \
                 is_successful, duration_ms, output_bytes, errors, executed_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
                 ON CONFLICT (result_uuid) DO NOTHING",
            )
            .bind(row.result_uuid)
            .bind(row.organization_uuid)
            .bind(row.pipeline_uuid)
            .bind(row.pipeline_run_uuid)
            .bind(row.task_uuid)
            .bind(&row.task_type)
            .bind(&row.pipeline_type)
            .bind(row.is_initial_task)
            .bind(row.is_final_task)
            .bind(row.is_successful)
            .bind(row.duration_ms as i64)
            .bind(row.output_bytes as i64)
            .bind(Json(&row.errors))
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
             COUNT(*) FILTER (WHERE is_successful) AS successes, COUNT(*) AS total \
             FROM task_run_statistics WHERE pipeline_uuid = $1",
        )
        .bind(pipeline_uuid)
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

    /// Run durations (sum of task durations) per pipeline, newest run first, at most
    /// `per_pipeline` of each. The newest run is the one with the latest task execution.
    pub(super) async fn run_durations(
        &self,
        pipeline_uuid: Option<Uuid>,
        per_pipeline: u32,
    ) -> StoreResult<BTreeMap<Uuid, Vec<u64>>> {
        let rows = sqlx::query(
            "SELECT pipeline_uuid, duration FROM ( \
               SELECT pipeline_uuid, SUM(duration_ms)::BIGINT AS duration, \
               ROW_NUMBER() OVER (PARTITION BY pipeline_uuid \
                 ORDER BY MAX(executed_at) DESC, pipeline_run_uuid) AS recency \
               FROM task_run_statistics WHERE $1::UUID IS NULL OR pipeline_uuid = $1 \
               GROUP BY pipeline_uuid, pipeline_run_uuid \
             ) AS runs WHERE recency <= $2 ORDER BY pipeline_uuid, recency",
        )
        .bind(pipeline_uuid)
        .bind(i64::from(per_pipeline))
        .fetch_all(&self.pool)
        .await?;
        let mut durations: BTreeMap<Uuid, Vec<u64>> = BTreeMap::new();
        for row in &rows {
            let pipeline: Uuid = row.try_get("pipeline_uuid")?;
            let duration: i64 = row.try_get("duration")?;
            durations.entry(pipeline).or_default().push(duration as u64);
        }
        Ok(durations)
    }
}
