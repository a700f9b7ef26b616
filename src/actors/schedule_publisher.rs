//! The schedule publisher stage: claims due runs (scheduled, manual and API runs alike) and
//! publishes each run's initial tasks to `task_runs`.
//!
//! A claim is a lease in the store, and a claimed row is marked published only after the
//! broker acknowledged every initial task of its run. A publisher that dies in between leaves
//! the row to be claimed again when the lease expires; the run is then published again with
//! the same task run ids, which later stages recognise.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{info, warn};
use uuid::Uuid;

use crate::catalog::Catalog;
use crate::config::Config;
use crate::messages::{Message, Meta, PipelineRunConfig};
use crate::pipeline::{task_run_uuid, RunContext, TaskRunCause};
use crate::store::{NewRun, QueuedRun, RunStatus, Store};
use crate::transport::{send_message, Transport};

pub struct SchedulePublisherArgs {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub catalog: Arc<Catalog>,
    pub transport: Arc<dyn Transport>,
}

pub struct PublisherState {
    args: SchedulePublisherArgs,
    claimer: String,
}

pub enum PublisherMsg {
    Poll,
}

pub struct SchedulePublisher;

impl PublisherState {
    /// Claims and publishes one batch of due runs; returns how many were claimed.
    async fn publish_due(&self) -> anyhow::Result<usize> {
        let config = &self.args.config.schedule_publisher;
        let claimed = self
            .args
            .store
            .claim_due_runs(
                &self.claimer,
                Utc::now(),
                Duration::from_secs(config.claim_lease_secs),
                config.batch_size,
            )
            .await?;
        for queued in &claimed {
            if let Err(err) = self.publish_run(queued).await {
                warn!(pipeline_run_uuid = %queued.run_uuid, pipeline_uuid = %queued.pipeline_uuid, error = %format!("{err:#}"), "run not published; it will be retried");
                if let Err(release_err) = self.args.store.release_queued_run(queued.id).await {
                    warn!(pipeline_run_uuid = %queued.run_uuid, error = %release_err, "failed to release the claim; it expires after schedule_publisher.claim_lease_secs");
                }
            }
        }
        Ok(claimed.len())
    }

    async fn publish_run(&self, queued: &QueuedRun) -> anyhow::Result<()> {
        let store = &self.args.store;
        let Some(pipeline) = self.args.catalog.pipeline(queued.pipeline_uuid).await? else {
            self.end_unstartable(
                queued,
                &queued.pipeline_uuid.to_string(),
                "pipeline was deleted before the run started",
            )
            .await?;
            return Ok(());
        };
        let run_config: PipelineRunConfig = match &queued.run_config {
            Some(text) => serde_json::from_str(text)?,
            None => PipelineRunConfig::default(),
        };
        let initial = pipeline.initial_tasks(&run_config);
        if initial.is_empty() {
            self.end_unstartable(
                queued,
                &pipeline.name,
                "pipeline has no initial task under the run configuration",
            )
            .await?;
            return Ok(());
        }

        store
            .start_run(NewRun {
                run_uuid: queued.run_uuid,
                pipeline_uuid: pipeline.uuid,
                pipeline_name: pipeline.name.clone(),
                kind: queued.kind,
                outstanding: initial.len() as u32,
                scheduled_for: Some(queued.execute_at),
            })
            .await?;

        if store.run_status(queued.run_uuid).await? == Some(RunStatus::Cancelled) {
            info!(pipeline = %pipeline.name, pipeline_run_uuid = %queued.run_uuid, "run was cancelled before it started");
            store.complete_queued_run(queued.id).await?;
            return Ok(());
        }

        let input = match &queued.input {
            Some(input) if !input.is_empty() => input.clone(),
            _ => b"null".to_vec(),
        };
        let meta = Meta {
            pipeline_run_config: run_config.clone(),
            ..Meta::default()
        };
        let organization_uuid = self
            .args
            .config
            .pipelines
            .organization_uuid
            .unwrap_or_default();
        for task in &initial {
            let message = pipeline.task_message(
                task,
                RunContext {
                    run_uuid: queued.run_uuid,
                    task_run_uuid: task_run_uuid(queued.run_uuid, task.uuid, TaskRunCause::Initial),
                    organization_uuid,
                    input: input.clone(),
                    meta: meta.clone(),
                    is_initial: true,
                },
            );
            send_message(
                &*self.args.transport,
                &self.args.config.topics.task_runs,
                &queued.run_uuid.to_string(),
                &Message::Task(Box::new(message)),
                Vec::new(),
            )
            .await?;
        }
        store.complete_queued_run(queued.id).await?;
        info!(pipeline = %pipeline.name, pipeline_run_uuid = %queued.run_uuid, kind = queued.kind.as_str(), initial_tasks = initial.len(), "run published");
        Ok(())
    }

    /// Records a run that cannot start as failed, so that its caller sees why.
    async fn end_unstartable(
        &self,
        queued: &QueuedRun,
        pipeline_name: &str,
        reason: &str,
    ) -> anyhow::Result<()> {
        warn!(pipeline = %pipeline_name, pipeline_run_uuid = %queued.run_uuid, %reason, "run cannot start");
        let store = &self.args.store;
        store
            .start_run(NewRun {
                run_uuid: queued.run_uuid,
                pipeline_uuid: queued.pipeline_uuid,
                pipeline_name: pipeline_name.to_owned(),
                kind: queued.kind,
                outstanding: 0,
                scheduled_for: Some(queued.execute_at),
            })
            .await?;
        store.fail_run(queued.run_uuid, reason).await?;
        store.complete_queued_run(queued.id).await?;
        Ok(())
    }
}

impl Actor for SchedulePublisher {
    type Msg = PublisherMsg;
    type State = PublisherState;
    type Arguments = SchedulePublisherArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let claimer = format!("publisher-{}", Uuid::new_v4());
        info!(%claimer, poll_interval_ms = args.config.schedule_publisher.poll_interval_ms, "schedule publisher started");
        myself.cast(PublisherMsg::Poll)?;
        Ok(PublisherState { args, claimer })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            PublisherMsg::Poll => {
                let batch_size = state.args.config.schedule_publisher.batch_size as usize;
                let claimed = match state.publish_due().await {
                    Ok(claimed) => claimed,
                    Err(err) => {
                        warn!(error = %format!("{err:#}"), "claiming due runs failed; retrying after the poll interval");
                        0
                    }
                };
                if claimed >= batch_size {
                    // A full batch means more runs are due: poll again at once.
                    myself.cast(PublisherMsg::Poll)?;
                } else {
                    let interval = Duration::from_millis(
                        state.args.config.schedule_publisher.poll_interval_ms,
                    );
                    myself.send_after(interval, || PublisherMsg::Poll);
                }
            }
        }
        Ok(())
    }
}
