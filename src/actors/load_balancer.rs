//! The load balancer stage: forwards each task from `task_runs` to a partition of
//! `task_runs_load_balanced` chosen by [`Balancer`], and learns durations from results.
//!
//! The balancing state lives in one [`LoadBalancer`] actor so that both subscriptions (tasks
//! and results) change it in order. The handlers reach the current actor through a
//! [`BalancerHandle`], which a restarted actor fills again after warming its statistics from
//! the store.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::{info, warn};
use uuid::Uuid;

use super::RecordHandler;
use crate::config::{Config, LoadBalancerConfig};
use crate::dead_letter::DeadLetters;
use crate::load_balancing::{Balancer, Observation, Placement};
use crate::messages::Message;
use crate::store::Store;
use crate::transport::{OutgoingRecord, Record, Transport};

/// Kafka headers the Ylem load balancer adds, each a UUID as 16 raw bytes.
pub const HEADER_PIPELINE_ID: &str = "x-pipeline-id";
pub const HEADER_PIPELINE_RUN_ID: &str = "x-pipeline-run-id";
pub const HEADER_ORGANIZATION_ID: &str = "x-organization-id";

const PARTITION_REFRESH: Duration = Duration::from_secs(30);

pub enum BalancerMsg {
    Place {
        pipeline: Uuid,
        run: Uuid,
        task: Uuid,
        task_run: Uuid,
        reply: RpcReplyPort<Placement>,
    },
    Observe(Observation),
    RefreshPartitions,
    /// Outstanding expected work per partition, for status pages and tests.
    Outstanding(RpcReplyPort<Vec<u64>>),
}

/// The slot through which handlers find the running balancer actor.
#[derive(Clone, Default)]
pub struct BalancerHandle {
    actor: Arc<RwLock<Option<ActorRef<BalancerMsg>>>>,
}

impl BalancerHandle {
    fn set(&self, actor: Option<ActorRef<BalancerMsg>>) {
        *self
            .actor
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = actor;
    }

    fn get(&self) -> anyhow::Result<ActorRef<BalancerMsg>> {
        self.actor
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
            .ok_or_else(|| anyhow::anyhow!("the load balancer actor is not running"))
    }

    /// Outstanding expected work per partition of `task_runs_load_balanced`, in ms.
    pub async fn outstanding_ms(&self) -> anyhow::Result<Vec<u64>> {
        let actor = self.get()?;
        Ok(ractor::call!(actor, BalancerMsg::Outstanding)?)
    }
}

pub struct LoadBalancerArgs {
    pub config: LoadBalancerConfig,
    pub transport: Arc<dyn Transport>,
    pub store: Arc<dyn Store>,
    pub topic: String,
    pub handle: BalancerHandle,
}

pub struct LoadBalancerState {
    balancer: Balancer,
    transport: Arc<dyn Transport>,
    topic: String,
    handle: BalancerHandle,
}

pub struct LoadBalancer;

impl Actor for LoadBalancer {
    type Msg = BalancerMsg;
    type State = LoadBalancerState;
    type Arguments = LoadBalancerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let partitions = args.transport.partition_count(&args.topic).await?;
        let mut balancer = Balancer::new(args.config.clone(), partitions);
        let history = args
            .store
            .recent_run_durations(args.config.history_runs as u32)
            .await
            .map_err(|err| format!("failed to warm load balancer statistics: {err}"))?;
        for (pipeline, durations) in &history {
            balancer.warm(*pipeline, durations);
        }
        let (slow, fast) = balancer.pools();
        info!(topic = %args.topic, partitions, slow_pool = ?slow, fast_pool = ?fast, warmed_pipelines = history.len(), "load balancer started");
        myself.send_interval(PARTITION_REFRESH, || BalancerMsg::RefreshPartitions);
        args.handle.set(Some(myself));
        Ok(LoadBalancerState {
            balancer,
            transport: args.transport,
            topic: args.topic,
            handle: args.handle,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.handle.set(None);
        info!(topic = %state.topic, "load balancer stopped");
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            BalancerMsg::Place {
                pipeline,
                run,
                task,
                task_run,
                reply,
            } => {
                let placement = state.balancer.place(pipeline, run, task, task_run);
                let _ = reply.send(placement);
            }
            BalancerMsg::Observe(observation) => state.balancer.observe(observation),
            BalancerMsg::RefreshPartitions => {
                match state.transport.partition_count(&state.topic).await {
                    Ok(count) if count != state.balancer.partitions() => {
                        info!(topic = %state.topic, old = state.balancer.partitions(), new = count, "partition count changed");
                        state.balancer.set_partitions(count);
                    }
                    Ok(_) => {}
                    Err(err) => {
                        warn!(topic = %state.topic, error = %err, "failed to read the partition count; keeping the old one")
                    }
                }
            }
            BalancerMsg::Outstanding(reply) => {
                let _ = reply.send(state.balancer.outstanding_ms().to_vec());
            }
        }
        Ok(())
    }
}

/// Forwards task records to the partition the balancer chooses.
pub struct TaskRouter {
    handle: BalancerHandle,
    transport: Arc<dyn Transport>,
    dead_letters: DeadLetters,
    topic: String,
}

impl TaskRouter {
    pub fn new(
        handle: BalancerHandle,
        transport: Arc<dyn Transport>,
        dead_letters: DeadLetters,
        config: &Config,
    ) -> TaskRouter {
        TaskRouter {
            handle,
            transport,
            dead_letters,
            topic: config.topics.task_runs_load_balanced.clone(),
        }
    }
}

#[async_trait]
impl RecordHandler for TaskRouter {
    async fn handle(&self, record: &Record) -> anyhow::Result<()> {
        // A readable task message with invalid fields is still forwarded: the task runner turns
        // it into a failed result, so its run ends instead of waiting for it. A record that
        // cannot be read at all goes to the dead-letter topic.
        let (pipeline, run, task, task_run, organization) = match Message::decode(&record.payload) {
            Ok(Message::Task(task)) => (
                task.common.pipeline_uuid,
                task.common.pipeline_run_uuid,
                task.common.task_uuid,
                task.common.task_run_uuid,
                task.common.organization_uuid,
            ),
            Ok(other) => {
                warn!(
                    offset = record.offset,
                    partition = record.partition,
                    name = other.name(),
                    "non-task record on the task topic; forwarded for the runner to reject"
                );
                let run = Uuid::parse_str(&record.key_text()).unwrap_or_default();
                (Uuid::nil(), run, Uuid::nil(), Uuid::nil(), Uuid::nil())
            }
            Err(err) if DeadLetters::is_unreadable(&err) => {
                return self.dead_letters.send(record, &err.to_string()).await;
            }
            Err(err) => {
                warn!(offset = record.offset, partition = record.partition, error = %err, "undecodable task record; forwarded for the runner to reject");
                let run = Uuid::parse_str(&record.key_text()).unwrap_or_default();
                (Uuid::nil(), run, Uuid::nil(), Uuid::nil(), Uuid::nil())
            }
        };
        // Tasks from Ylem carry a nil task run id, so the task id identifies their work instead.
        let work_key = if task_run.is_nil() { task } else { task_run };
        let balancer = self.handle.get()?;
        let placement = ractor::call!(balancer, |reply| BalancerMsg::Place {
            pipeline,
            run,
            task,
            task_run: work_key,
            reply,
        })?;
        let outgoing = OutgoingRecord {
            topic: self.topic.clone(),
            partition: Some(placement.partition),
            key: record.key.clone(),
            headers: vec![
                (HEADER_PIPELINE_ID.to_owned(), pipeline.as_bytes().to_vec()),
                (HEADER_PIPELINE_RUN_ID.to_owned(), run.as_bytes().to_vec()),
                (
                    HEADER_ORGANIZATION_ID.to_owned(),
                    organization.as_bytes().to_vec(),
                ),
            ],
            payload: record.payload.clone(),
        };
        self.transport.send(outgoing).await.map_err(|err| {
            anyhow::anyhow!(
                "failed to forward a task to {}/{}: {err}",
                self.topic,
                placement.partition
            )
        })?;
        Ok(())
    }
}

/// Feeds results back into the balancer: capacity returns and durations update.
pub struct ResultObserver {
    handle: BalancerHandle,
}

impl ResultObserver {
    pub fn new(handle: BalancerHandle) -> ResultObserver {
        ResultObserver { handle }
    }
}

#[async_trait]
impl RecordHandler for ResultObserver {
    async fn handle(&self, record: &Record) -> anyhow::Result<()> {
        let Ok(Message::Result(result)) = Message::decode(&record.payload) else {
            // The trigger and statistics listeners log bad records on this topic.
            return Ok(());
        };
        let task_run = if result.task_run_uuid.is_nil() {
            result.task_uuid
        } else {
            result.task_run_uuid
        };
        self.handle.get()?.cast(BalancerMsg::Observe(Observation {
            pipeline: result.pipeline_uuid,
            run: result.pipeline_run_uuid,
            task: result.task_uuid,
            task_run,
            duration_ms: result.duration,
            is_final: result.is_final_task,
        }))?;
        Ok(())
    }
}
