//! Pipelines and the queue of scheduled and manual runs.

use chrono::{DateTime, Utc};
use sqlx::Row;
use uuid::Uuid;

use super::{from_millis, parse_uuid, to_millis, SqliteStore};
use crate::store::{
    ApplyChange, ApplyOutcome, NewQueuedRun, PipelineRecord, PipelineSummary, QueuedRun, RunKind,
    ScheduledPipeline, StoreResult, StoredPipeline,
};

impl SqliteStore {
    pub(super) async fn apply(
        &self,
        pipelines: &[PipelineRecord],
    ) -> StoreResult<Vec<ApplyOutcome>> {
        let now = to_millis(Utc::now());
        let mut transaction = self.begin_write().await?;
        let mut outcomes = Vec::with_capacity(pipelines.len());
        for pipeline in pipelines {
            let existing = sqlx::query(
                "SELECT source_yaml, schedule_fingerprint, is_active FROM pipelines WHERE uuid = ?",
            )
            .bind(pipeline.uuid.to_string())
            .fetch_optional(&mut *transaction)
            .await?;

            let change = match &existing {
                None => ApplyChange::Created,
                Some(row) => {
                    let same_text =
                        row.try_get::<String, _>("source_yaml")? == pipeline.source_yaml;
                    let active = row.try_get::<i64, _>("is_active")? != 0;
                    if same_text && active {
                        ApplyChange::Unchanged
                    } else {
                        ApplyChange::Updated
                    }
                }
            };
            let old_fingerprint: Option<String> = match &existing {
                Some(row) => row.try_get("schedule_fingerprint")?,
                None => None,
            };

            let mut removed_scheduled_runs = 0;
            if change != ApplyChange::Unchanged {
                sqlx::query(
                    "INSERT INTO pipelines (uuid, name, description, source_yaml, schedule_fingerprint, \
                     is_active, version, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 1, 1, ?, ?) \
                     ON CONFLICT (uuid) DO UPDATE SET name = excluded.name, \
                     description = excluded.description, source_yaml = excluded.source_yaml, \
                     schedule_fingerprint = excluded.schedule_fingerprint, is_active = 1, \
                     version = pipelines.version + 1, updated_at = excluded.updated_at",
                )
                .bind(pipeline.uuid.to_string())
                .bind(&pipeline.name)
                .bind(&pipeline.description)
                .bind(&pipeline.source_yaml)
                .bind(&pipeline.schedule_fingerprint)
                .bind(now)
                .bind(now)
                .execute(&mut *transaction)
                .await?;
                replace_graph(&mut transaction, pipeline).await?;

                if old_fingerprint.is_some() && old_fingerprint != pipeline.schedule_fingerprint {
                    // Only runs of the old schedule that no publisher has claimed are deleted; manual runs and
                    // runs already claimed for publishing stay.
                    removed_scheduled_runs = sqlx::query(
                        "DELETE FROM scheduled_runs WHERE pipeline_uuid = ? AND kind = 'schedule' \
                         AND schedule_fingerprint IS NOT ? AND execute_at > ? AND published_at IS NULL \
                         AND (claimed_until IS NULL OR claimed_until < ?)",
                    )
                    .bind(pipeline.uuid.to_string())
                    .bind(&pipeline.schedule_fingerprint)
                    .bind(now)
                    .bind(now)
                    .execute(&mut *transaction)
                    .await?
                    .rows_affected();
                }
            }
            outcomes.push(ApplyOutcome {
                name: pipeline.name.clone(),
                change,
                removed_scheduled_runs,
            });
        }
        transaction.commit().await?;
        Ok(outcomes)
    }

    pub(super) async fn pipelines(&self) -> StoreResult<Vec<PipelineSummary>> {
        let rows = sqlx::query(
            "SELECT p.uuid, p.name, p.description, p.schedule_fingerprint, p.version, p.updated_at, \
             (SELECT COUNT(*) FROM tasks t WHERE t.pipeline_uuid = p.uuid) AS task_count \
             FROM pipelines p WHERE p.is_active = 1 ORDER BY p.name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(PipelineSummary {
                    uuid: parse_uuid(&row.try_get::<String, _>("uuid")?)?,
                    name: row.try_get("name")?,
                    description: row.try_get("description")?,
                    schedule: row.try_get("schedule_fingerprint")?,
                    tasks: row.try_get::<i64, _>("task_count")? as u32,
                    version: row.try_get("version")?,
                    updated_at: from_millis(row.try_get("updated_at")?),
                })
            })
            .collect()
    }

    pub(super) async fn pipeline_where(
        &self,
        column: &str,
        value: String,
    ) -> StoreResult<Option<StoredPipeline>> {
        let sql = match column {
            "name" => {
                "SELECT uuid, name, source_yaml, version, is_active FROM pipelines WHERE name = ?"
            }
            _ => "SELECT uuid, name, source_yaml, version, is_active FROM pipelines WHERE uuid = ?",
        };
        let Some(row) = sqlx::query(sql)
            .bind(value)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(StoredPipeline {
            uuid: parse_uuid(&row.try_get::<String, _>("uuid")?)?,
            name: row.try_get("name")?,
            source_yaml: row.try_get("source_yaml")?,
            version: row.try_get("version")?,
            is_active: row.try_get::<i64, _>("is_active")? != 0,
        }))
    }

    pub(super) async fn scheduled(&self) -> StoreResult<Vec<ScheduledPipeline>> {
        let rows = sqlx::query(
            "SELECT p.uuid, p.name, p.source_yaml, \
             (SELECT MAX(s.execute_at) FROM scheduled_runs s WHERE s.pipeline_uuid = p.uuid \
              AND s.kind = 'schedule' AND s.schedule_fingerprint = p.schedule_fingerprint) AS latest \
             FROM pipelines p WHERE p.is_active = 1 AND p.schedule_fingerprint IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let latest: Option<i64> = row.try_get("latest")?;
                Ok(ScheduledPipeline {
                    uuid: parse_uuid(&row.try_get::<String, _>("uuid")?)?,
                    name: row.try_get("name")?,
                    source_yaml: row.try_get("source_yaml")?,
                    latest_fire_time: latest.map(from_millis),
                })
            })
            .collect()
    }

    pub(super) async fn insert_fire_times(
        &self,
        pipeline_uuid: Uuid,
        fingerprint: &str,
        fire_times: &[DateTime<Utc>],
    ) -> StoreResult<u64> {
        let now = to_millis(Utc::now());
        let mut inserted = 0;
        for chunk in fire_times.chunks(500) {
            let mut transaction = self.begin_write().await?;
            for fire_time in chunk {
                inserted += sqlx::query(
                    "INSERT INTO scheduled_runs (pipeline_uuid, pipeline_run_uuid, kind, \
                     schedule_fingerprint, execute_at, created_at) VALUES (?, ?, 'schedule', ?, ?, ?) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(pipeline_uuid.to_string())
                .bind(Uuid::new_v4().to_string())
                .bind(fingerprint)
                .bind(to_millis(*fire_time))
                .bind(now)
                .execute(&mut *transaction)
                .await?
                .rows_affected();
            }
            transaction.commit().await?;
        }
        Ok(inserted)
    }

    pub(super) async fn enqueue(&self, run: NewQueuedRun) -> StoreResult<()> {
        let now = to_millis(Utc::now());
        sqlx::query(
            "INSERT INTO scheduled_runs (pipeline_uuid, pipeline_run_uuid, kind, execute_at, input, \
             run_config, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(run.pipeline_uuid.to_string())
        .bind(run.run_uuid.to_string())
        .bind(run.kind.as_str())
        .bind(now)
        .bind(run.input)
        .bind(run.run_config)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn claim(
        &self,
        claimer: &str,
        now: DateTime<Utc>,
        lease: std::time::Duration,
        limit: u32,
    ) -> StoreResult<Vec<QueuedRun>> {
        let now_ms = to_millis(now);
        let until_ms = now_ms + lease.as_millis() as i64;
        let mut transaction = self.begin_write().await?;
        let rows = sqlx::query(
            "UPDATE scheduled_runs SET claimed_by = ?, claimed_until = ? WHERE id IN ( \
             SELECT id FROM scheduled_runs WHERE execute_at <= ? AND published_at IS NULL \
             AND (claimed_until IS NULL OR claimed_until < ?) ORDER BY execute_at, id LIMIT ?) \
             RETURNING id, pipeline_uuid, pipeline_run_uuid, kind, execute_at, input, run_config",
        )
        .bind(claimer)
        .bind(until_ms)
        .bind(now_ms)
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&mut *transaction)
        .await?;
        transaction.commit().await?;
        let mut claimed = rows
            .iter()
            .map(|row| {
                Ok(QueuedRun {
                    id: row.try_get("id")?,
                    pipeline_uuid: parse_uuid(&row.try_get::<String, _>("pipeline_uuid")?)?,
                    run_uuid: parse_uuid(&row.try_get::<String, _>("pipeline_run_uuid")?)?,
                    kind: RunKind::parse(&row.try_get::<String, _>("kind")?),
                    execute_at: from_millis(row.try_get("execute_at")?),
                    input: row.try_get("input")?,
                    run_config: row.try_get("run_config")?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        claimed.sort_by_key(|run| (run.execute_at, run.id));
        Ok(claimed)
    }

    pub(super) async fn complete_queued(&self, id: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE scheduled_runs SET published_at = ?, claimed_until = NULL WHERE id = ?",
        )
        .bind(to_millis(Utc::now()))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn prune_published(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        Ok(sqlx::query(
            "DELETE FROM scheduled_runs WHERE published_at IS NOT NULL AND execute_at < ?",
        )
        .bind(to_millis(before))
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    pub(super) async fn release_queued(&self, id: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE scheduled_runs SET claimed_by = NULL, claimed_until = NULL WHERE id = ?",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// Replaces the stored tasks and triggers of a pipeline with those of its new definition.
async fn replace_graph(
    transaction: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    pipeline: &PipelineRecord,
) -> StoreResult<()> {
    let uuid = pipeline.uuid.to_string();
    sqlx::query("DELETE FROM task_triggers WHERE pipeline_uuid = ?")
        .bind(&uuid)
        .execute(&mut **transaction)
        .await?;
    sqlx::query("DELETE FROM tasks WHERE pipeline_uuid = ?")
        .bind(&uuid)
        .execute(&mut **transaction)
        .await?;
    for task in &pipeline.tasks {
        sqlx::query("INSERT INTO tasks (uuid, pipeline_uuid, name, type) VALUES (?, ?, ?, ?)")
            .bind(task.uuid.to_string())
            .bind(&uuid)
            .bind(&task.name)
            .bind(&task.task_type)
            .execute(&mut **transaction)
            .await?;
    }
    for trigger in &pipeline.triggers {
        sqlx::query(
            "INSERT INTO task_triggers (uuid, pipeline_uuid, trigger_task_uuid, triggered_task_uuid, \
             trigger_type) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(trigger.uuid.to_string())
        .bind(&uuid)
        .bind(trigger.from.to_string())
        .bind(trigger.to.to_string())
        .bind(&trigger.trigger_type)
        .execute(&mut **transaction)
        .await?;
    }
    Ok(())
}
