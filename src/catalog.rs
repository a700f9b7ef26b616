//! Pipelines read from the store and parsed once per stored version.

use std::sync::Arc;

use dashmap::DashMap;
use uuid::Uuid;

use crate::pipeline::{parse_pipeline, Pipeline};
use crate::store::{retry_transient, Store};

/// A parsed-pipeline cache in front of the store. Each lookup reads the stored version, so an
/// applied change is seen by the next task of any run.
pub struct Catalog {
    store: Arc<dyn Store>,
    parsed: DashMap<Uuid, (i64, Arc<Pipeline>)>,
}

impl Catalog {
    pub fn new(store: Arc<dyn Store>) -> Catalog {
        Catalog {
            store,
            parsed: DashMap::new(),
        }
    }

    /// Returns the active pipeline with this uuid, or `None` when it is unknown or deleted.
    pub async fn pipeline(&self, uuid: Uuid) -> anyhow::Result<Option<Arc<Pipeline>>> {
        let lookup =
            retry_transient("pipeline_by_uuid", || self.store.pipeline_by_uuid(uuid)).await?;
        let Some(stored) = lookup else {
            return Ok(None);
        };
        if !stored.is_active {
            return Ok(None);
        }
        if let Some(entry) = self.parsed.get(&uuid) {
            if entry.0 == stored.version {
                return Ok(Some(entry.1.clone()));
            }
        }
        let pipeline = parse_pipeline(&stored.name, &stored.source_yaml).map_err(|errors| {
            anyhow::anyhow!("stored pipeline {} no longer parses: {errors}", stored.name)
        })?;
        let pipeline = Arc::new(pipeline);
        self.parsed.insert(uuid, (stored.version, pipeline.clone()));
        Ok(Some(pipeline))
    }
}

/// Converts a validated pipeline to the store's form.
pub fn pipeline_record(pipeline: &Pipeline) -> anyhow::Result<crate::store::PipelineRecord> {
    use crate::store::{PipelineRecord, TaskRecord, TriggerRecord};

    let schedule_fingerprint = match &pipeline.schedule {
        Some(spec) => Some(crate::schedule::Schedule::parse(spec)?.fingerprint()),
        None => None,
    };
    Ok(PipelineRecord {
        uuid: pipeline.uuid,
        name: pipeline.name.clone(),
        description: pipeline.description.clone(),
        source_yaml: pipeline.source_yaml.clone(),
        schedule_fingerprint,
        tasks: pipeline
            .tasks
            .iter()
            .map(|task| TaskRecord {
                uuid: task.uuid,
                name: task.name.clone(),
                task_type: task.task_type.to_string(),
            })
            .collect(),
        triggers: pipeline
            .triggers
            .iter()
            .map(|trigger| TriggerRecord {
                uuid: trigger.uuid,
                from: trigger.from,
                to: trigger.to,
                trigger_type: trigger.trigger_type.as_str().to_owned(),
            })
            .collect(),
    })
}

/// Failure to apply pipeline files.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The files are invalid; nothing was stored.
    #[error("{0}")]
    Invalid(crate::pipeline::PipelineErrors),
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// Validates a pipeline file or folder and stores every pipeline in it, or none.
pub async fn apply_path(
    store: &dyn Store,
    path: &std::path::Path,
    dry_run: bool,
) -> Result<Vec<crate::store::ApplyOutcome>, ApplyError> {
    let pipelines = crate::pipeline::load_path(path).map_err(ApplyError::Invalid)?;
    let records = pipelines
        .iter()
        .map(pipeline_record)
        .collect::<anyhow::Result<Vec<_>>>()?;
    if dry_run {
        return Ok(records
            .iter()
            .map(|record| crate::store::ApplyOutcome {
                name: record.name.clone(),
                change: crate::store::ApplyChange::Unchanged,
                removed_scheduled_runs: 0,
            })
            .collect());
    }
    Ok(store
        .apply_pipelines(&records)
        .await
        .map_err(anyhow::Error::from)?)
}
