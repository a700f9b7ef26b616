//! Pipelines and the queue of scheduled and manual runs.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::Row;
use uuid::Uuid;

use super::{from_millis, to_millis, PgStore};
use crate::store::{
    ApplyChange, ApplyOutcome, NewQueuedRun, PipelineRecord, PipelineSummary, QueuedRun, RunKind,
    ScheduledPipeline, StoreResult, StoredPipeline,
};

/// The column a pipeline is looked up by.
pub(super) enum PipelineKey<'a> {
    Name(&'a str),
    Uuid(Uuid),
}

impl PgStore {
    pub(super) async fn apply(
        &self,
        pipelines: &[PipelineRecord],
    ) -> StoreResult<Vec<ApplyOutcome>> {
        let now = to_millis(Utc::now());
        let mut transaction = self.pool.begin().await?;
        // Applies run one at a time, so two processes applying the same new pipeline do not
        // both report it created. Readers are not blocked by this lock mode.
        sqlx::query("LOCK TABLE pipelines IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *transaction)
            .await?;

        let mut outcomes = Vec::with_capacity(pipelines.len());
        for pipeline in pipelines {
            let existing = sqlx::query(
                "SELECT source_yaml, schedule_fingerprint, is_active FROM pipelines WHERE uuid = $1",
            )
            .bind(pipeline.uuid)
            .fetch_optional(&mut *transaction)
            .await?;

            let change = match &existing {
                None => ApplyChange::Created,
                Some(row) => {
                    let same_text =
                        row.try_get::<String, _>("source_yaml")? == pipeline.source_yaml;
                    let active: bool = row.try_get("is_active")?;
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
                     is_active, version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, TRUE, 1, $6, $6) \
                     ON CONFLICT (uuid) DO UPDATE SET name = excluded.name, \
                     description = excluded.description, source_yaml = excluded.source_yaml, \
                     schedule_fingerprint = excluded.schedule_fingerprint, is_active = TRUE, \
                     version = pipelines.version + 1, updated_at = excluded.updated_at",
                )
                .bind(pipeline.uuid)
                .bind(&pipeline.name)
                .bind(&pipeline.description)
                .bind(&pipeline.source_yaml)
                .bind(&pipeline.schedule_fingerprint)
                .bind(now)
                .execute(&mut *transaction)
                .await?;
                replace_graph(&mut transaction, pipeline).await?;

                if old_fingerprint.is_some() && old_fingerprint != pipeline.schedule_fingerprint {
                    // Only unclaimed runs of the old schedule are deleted. Manual runs and runs
                    // a publisher has claimed stay.
                    removed_scheduled_runs = sqlx::query(
                        "DELETE FROM scheduled_runs WHERE pipeline_uuid = $1 AND kind = 'schedule' \
                         AND schedule_fingerprint IS DISTINCT FROM $2 AND execute_at > $3 \
                         AND published_at IS NULL AND (claimed_until IS NULL OR claimed_until < $3)",
                    )
                    .bind(pipeline.uuid)
                    .bind(&pipeline.schedule_fingerprint)
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
             FROM pipelines p WHERE p.is_active ORDER BY p.name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(PipelineSummary {
                    uuid: row.try_get("uuid")?,
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

    pub(super) async fn pipeline_by(
        &self,
        key: PipelineKey<'_>,
    ) -> StoreResult<Option<StoredPipeline>> {
        let query = match key {
            PipelineKey::Name(name) => sqlx::query(
                "SELECT uuid, name, source_yaml, version, is_active FROM pipelines WHERE name = $1",
            )
            .bind(name.to_owned()),
            PipelineKey::Uuid(uuid) => sqlx::query(
                "SELECT uuid, name, source_yaml, version, is_active FROM pipelines WHERE uuid = $1",
            )
            .bind(uuid),
        };
        let Some(row) = query.fetch_optional(&self.pool).await? else {
            return Ok(None);
        };
        Ok(Some(StoredPipeline {
            uuid: row.try_get("uuid")?,
            name: row.try_get("name")?,
            source_yaml: row.try_get("source_yaml")?,
            version: row.try_get("version")?,
            is_active: row.try_get("is_active")?,
        }))
    }

    pub(super) async fn scheduled(&self) -> StoreResult<Vec<ScheduledPipeline>> {
        let rows = sqlx::query(
            "SELECT p.uuid, p.name, p.source_yaml, \
             (SELECT MAX(s.execute_at) FROM scheduled_runs s WHERE s.pipeline_uuid = p.uuid \
              AND s.kind = 'schedule' AND s.schedule_fingerprint = p.schedule_fingerprint) AS latest \
             FROM pipelines p WHERE p.is_active AND p.schedule_fingerprint IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let latest: Option<i64> = row.try_get("latest")?;
                Ok(ScheduledPipeline {
                    uuid: row.try_get("uuid")?,
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
        // One statement per chunk. ON CONFLICT DO NOTHING skips a fire time that is already
        // stored, or that repeats within the chunk, through the partial unique index.
        for chunk in fire_times.chunks(1000) {
            let run_uuids: Vec<Uuid> = chunk.iter().map(|_| Uuid::new_v4()).collect();
            let execute_at: Vec<i64> = chunk.iter().map(|time| to_millis(*time)).collect();
            inserted += sqlx::query(
                "INSERT INTO scheduled_runs (pipeline_uuid, pipeline_run_uuid, kind, \
                 schedule_fingerprint, execute_at, created_at) \
                 SELECT $1, fire.run_uuid, 'schedule', $2, fire.execute_at, $3 \
                 FROM UNNEST($4::UUID[], $5::BIGINT[]) AS fire (run_uuid, execute_at) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(pipeline_uuid)
            .bind(fingerprint)
            .bind(now)
            .bind(&run_uuids)
            .bind(&execute_at)
            .execute(&self.pool)
            .await?
            .rows_affected();
        }
        Ok(inserted)
    }

    pub(super) async fn enqueue(&self, run: NewQueuedRun) -> StoreResult<()> {
        let now = to_millis(Utc::now());
        sqlx::query(
            "INSERT INTO scheduled_runs (pipeline_uuid, pipeline_run_uuid, kind, execute_at, input, \
             run_config, created_at) VALUES ($1, $2, $3, $4, $5, $6, $4)",
        )
        .bind(run.pipeline_uuid)
        .bind(run.run_uuid)
        .bind(run.kind.as_str())
        .bind(now)
        .bind(run.input)
        .bind(run.run_config)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Claims due runs. `SKIP LOCKED` makes concurrent publishers pass over the rows another
    /// publisher is claiming, so each row goes to one of them. A row claimed and committed in
    /// between is re-checked against the lease condition when it is locked, and left out.
    pub(super) async fn claim(
        &self,
        claimer: &str,
        now: DateTime<Utc>,
        lease: std::time::Duration,
        limit: u32,
    ) -> StoreResult<Vec<QueuedRun>> {
        let now_ms = to_millis(now);
        let until_ms = now_ms + lease.as_millis() as i64;
        let rows = sqlx::query(
            "UPDATE scheduled_runs SET claimed_by = $1, claimed_until = $2 WHERE id IN ( \
             SELECT id FROM scheduled_runs WHERE execute_at <= $3 AND published_at IS NULL \
             AND (claimed_until IS NULL OR claimed_until < $3) ORDER BY execute_at, id LIMIT $4 \
             FOR UPDATE SKIP LOCKED) \
             RETURNING id, pipeline_uuid, pipeline_run_uuid, kind, execute_at, input, run_config",
        )
        .bind(claimer)
        .bind(until_ms)
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut claimed = rows
            .iter()
            .map(queued_run)
            .collect::<StoreResult<Vec<_>>>()?;
        claimed.sort_by_key(|run| (run.execute_at, run.id));
        Ok(claimed)
    }

    pub(super) async fn complete_queued(&self, id: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE scheduled_runs SET published_at = $1, claimed_until = NULL WHERE id = $2",
        )
        .bind(to_millis(Utc::now()))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn prune_published(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        Ok(sqlx::query(
            "DELETE FROM scheduled_runs WHERE published_at IS NOT NULL AND execute_at < $1",
        )
        .bind(to_millis(before))
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    pub(super) async fn release_queued(&self, id: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE scheduled_runs SET claimed_by = NULL, claimed_until = NULL WHERE id = $1",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

fn queued_run(row: &PgRow) -> StoreResult<QueuedRun> {
    Ok(QueuedRun {
        id: row.try_get("id")?,
        pipeline_uuid: row.try_get("pipeline_uuid")?,
        run_uuid: row.try_get("pipeline_run_uuid")?,
        kind: RunKind::parse(&row.try_get::<String, _>("kind")?),
        execute_at: from_millis(row.try_get("execute_at")?),
        input: row.try_get("input")?,
        run_config: row.try_get("run_config")?,
    })
}

/// Replaces the stored tasks and triggers of a pipeline with those of its new definition.
async fn replace_graph(
    transaction: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    pipeline: &PipelineRecord,
) -> StoreResult<()> {
    sqlx::query("DELETE FROM task_triggers WHERE pipeline_uuid = $1")
        .bind(pipeline.uuid)
        .execute(&mut **transaction)
        .await?;
    sqlx::query("DELETE FROM tasks WHERE pipeline_uuid = $1")
        .bind(pipeline.uuid)
        .execute(&mut **transaction)
        .await?;
    for task in &pipeline.tasks {
        sqlx::query("INSERT INTO tasks (uuid, pipeline_uuid, name, type) VALUES ($1, $2, $3, $4)")
            .bind(task.uuid)
            .bind(pipeline.uuid)
            .bind(&task.name)
            .bind(&task.task_type)
            .execute(&mut **transaction)
            .await?;
    }
    for trigger in &pipeline.triggers {
        sqlx::query(
            "INSERT INTO task_triggers (uuid, pipeline_uuid, trigger_task_uuid, triggered_task_uuid, \
             trigger_type) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(trigger.uuid)
        .bind(pipeline.uuid)
        .bind(trigger.from)
        .bind(trigger.to)
        .bind(&trigger.trigger_type)
        .execute(&mut **transaction)
        .await?;
    }
    Ok(())
}
