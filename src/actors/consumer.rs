//! Owns one consumer-group subscription and one partition worker per assigned partition.
//!
//! A background task reads assignment changes and records from the transport and casts them
//! here. The actor keeps every record of a partition that is not yet committed, so a worker
//! that fails is restarted under the restart policy and fed the same records again, in order,
//! without seeking. A partition whose uncommitted backlog reaches `max_buffered_records` is
//! paused until its worker catches up, which bounds memory under any backlog.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use super::partition_worker::{PartitionWorker, PartitionWorkerArgs, WorkerMsg};
use super::RecordHandler;
use crate::dead_letter::DeadLetters;
use crate::supervision::{
    ActorRegistry, RestartDecision, RestartPolicy, RestartTracker, ShutdownSignal,
};
use crate::transport::{Consumer, ConsumerEvent, DrainAck, Record, TopicPartition, Transport};

pub struct ConsumerArgs {
    /// Path in the supervision tree, e.g. `runner/task_runs_load_balanced`.
    pub path: String,
    pub transport: Arc<dyn Transport>,
    pub group: String,
    pub topics: Vec<String>,
    pub handler: Arc<dyn RecordHandler>,
    pub max_in_flight: usize,
    pub max_buffered_records: usize,
    pub policy: RestartPolicy,
    pub registry: ActorRegistry,
    pub shutdown: Arc<ShutdownSignal>,
    /// A record in flight this long makes its worker fail as stuck.
    pub stuck_after: Duration,
    /// Worker failures a record may cause before it is given up and dead-lettered.
    pub max_record_failures: u32,
    /// Destination of given-up records. Without it they are logged and skipped.
    pub dead_letters: Option<DeadLetters>,
}

pub enum ConsumerMsg {
    /// The record at `offset` made its worker fail.
    RecordFailed {
        partition: TopicPartition,
        offset: u64,
        reason: String,
    },
    /// The process is stopping: read no more records, drain every partition, report.
    BeginShutdown,
    Event(ConsumerEvent),
    PollFailed(String),
    /// Every record of the partition before `next_offset` is done.
    Committable {
        partition: TopicPartition,
        worker: ActorId,
        next_offset: u64,
    },
    RestartWorker(TopicPartition),
    /// A revoked partition's worker finished its in-flight records and stopped.
    Drained {
        partition: TopicPartition,
        worker: ActorId,
        next_offset: Option<u64>,
    },
}

struct PartitionSlot {
    worker: Option<ActorRef<WorkerMsg>>,
    /// Records handed to the worker and not yet committed, in offset order.
    uncommitted: VecDeque<Arc<Record>>,
    paused: bool,
    /// Revoked: the worker finishes what it started and takes nothing new.
    draining: bool,
    tracker: RestartTracker,
    /// Every worker this partition had since it was assigned. A failed worker's last commit
    /// report can arrive after its failure (supervision events overtake ordinary messages),
    /// and it is still valid: a worker reports only offsets below which all is done.
    workers: Vec<ActorId>,
    /// Offset of the last commit, which only moves forward.
    committed: Option<u64>,
    /// Worker failures per record offset, with the last reason.
    record_failures: HashMap<u64, (u32, String)>,
}

/// A revocation or shutdown waiting for its partitions to drain.
struct PendingDrain {
    ack: DrainWaiter,
    partitions: BTreeSet<TopicPartition>,
}

/// Waiter of a drain.
enum DrainWaiter {
    Transport(DrainAck),
    Shutdown,
}

pub struct ConsumerState {
    args: ConsumerArgs,
    consumer: Arc<dyn Consumer>,
    poller: JoinHandle<()>,
    partitions: HashMap<TopicPartition, PartitionSlot>,
    pending_drains: Vec<PendingDrain>,
    shutdown_watch: JoinHandle<()>,
    /// Set once this consumer reported itself drained for shutdown.
    reported_drained: bool,
}

mod drain;
mod poison;

pub struct ConsumerActor;

impl ConsumerState {
    fn worker_path(&self, partition: &TopicPartition) -> String {
        format!("{}/{}", self.args.path, partition)
    }

    async fn spawn_worker(
        &self,
        myself: &ActorRef<ConsumerMsg>,
        partition: &TopicPartition,
    ) -> Result<ActorRef<WorkerMsg>, ActorProcessingErr> {
        let (worker, _) = Actor::spawn_linked(
            None,
            PartitionWorker,
            PartitionWorkerArgs {
                partition: partition.clone(),
                handler: self.args.handler.clone(),
                max_in_flight: self.args.max_in_flight,
                consumer: myself.clone(),
                stuck_after: self.args.stuck_after,
            },
            myself.get_cell(),
        )
        .await?;
        self.args
            .registry
            .started(&self.worker_path(partition), Some(&self.args.path));
        Ok(worker)
    }

    async fn on_assigned(
        &mut self,
        myself: &ActorRef<ConsumerMsg>,
        partitions: Vec<TopicPartition>,
    ) -> Result<(), ActorProcessingErr> {
        info!(consumer = %self.args.path, group = %self.args.group, partitions = ?partitions, "partitions assigned");
        if self.args.shutdown.has_begun() {
            // A shutting-down member starts no work; the group moves the partitions on.
            return Ok(());
        }
        for partition in partitions {
            let worker = self.spawn_worker(myself, &partition).await?;
            let worker_id = worker.get_id();
            self.partitions.insert(
                partition,
                PartitionSlot {
                    worker: Some(worker),
                    uncommitted: VecDeque::new(),
                    paused: false,
                    draining: false,
                    tracker: RestartTracker::new(self.args.policy.clone()),
                    workers: vec![worker_id],
                    committed: None,
                    record_failures: HashMap::new(),
                },
            );
        }
        Ok(())
    }

    fn on_revoked(&mut self, partitions: Vec<TopicPartition>, drained: Option<DrainAck>) {
        info!(consumer = %self.args.path, group = %self.args.group, partitions = ?partitions, "partitions revoked");
        if let Some(ack) = drained {
            self.drain(partitions, DrainWaiter::Transport(ack));
            return;
        }
        for partition in partitions {
            let Some(slot) = self.partitions.remove(&partition) else {
                continue;
            };
            // The new owner starts at the committed offset, so unfinished records are redone
            // there; ids derived from the run and task let later stages recognise repeats.
            if let Some(worker) = slot.worker {
                worker.stop(Some("partition revoked".to_owned()));
            }
            self.args.registry.remove(&self.worker_path(&partition));
        }
    }

    fn on_record(&mut self, record: Record) {
        let partition = record.topic_partition();
        let Some(slot) = self.partitions.get_mut(&partition) else {
            warn!(consumer = %self.args.path, %partition, offset = record.offset, "record for a partition that is not assigned; it is left to its owner");
            return;
        };
        if slot.draining {
            // Not started and not committed: the partition's next owner reads it again.
            return;
        }
        let record = Arc::new(record);
        slot.uncommitted.push_back(record.clone());
        if let Some(worker) = &slot.worker {
            if let Err(err) = worker.cast(WorkerMsg::Record(record)) {
                // The worker is stopping; the restart replays every uncommitted record.
                warn!(consumer = %self.args.path, %partition, error = %err, "record not delivered to its worker");
            }
        }
        if !slot.paused && slot.uncommitted.len() >= self.args.max_buffered_records {
            slot.paused = true;
            self.consumer.pause(&partition);
            info!(consumer = %self.args.path, %partition, backlog = slot.uncommitted.len(), "partition paused until its worker catches up");
        }
    }

    fn on_committable(&mut self, partition: TopicPartition, worker: ActorId, next_offset: u64) {
        let Some(slot) = self.partitions.get_mut(&partition) else {
            return;
        };
        if !slot.workers.contains(&worker)
            || slot
                .committed
                .is_some_and(|committed| next_offset <= committed)
        {
            return;
        }
        if let Err(err) = self.consumer.commit(&partition, next_offset) {
            warn!(consumer = %self.args.path, %partition, next_offset, error = %err, "offset commit failed; the records after the last commit may be processed again");
            return;
        }
        slot.committed = Some(next_offset);
        while slot
            .uncommitted
            .front()
            .is_some_and(|record| record.offset < next_offset)
        {
            slot.uncommitted.pop_front();
        }
        if slot.paused && slot.uncommitted.len() <= self.args.max_buffered_records / 2 {
            slot.paused = false;
            self.consumer.resume(&partition);
            info!(consumer = %self.args.path, %partition, "partition resumed");
        }
    }

    fn partition_of_worker(&self, cell: &ActorCell) -> Option<TopicPartition> {
        self.partitions.iter().find_map(|(partition, slot)| {
            let worker = slot.worker.as_ref()?;
            (worker.get_id() == cell.get_id()).then(|| partition.clone())
        })
    }

    fn on_worker_exit(
        &mut self,
        myself: &ActorRef<ConsumerMsg>,
        partition: TopicPartition,
        reason: String,
    ) -> Result<(), ActorProcessingErr> {
        let path = self.worker_path(&partition);
        let Some(slot) = self.partitions.get_mut(&partition) else {
            return Ok(());
        };
        slot.worker = None;
        match slot.tracker.on_failure(Instant::now()) {
            RestartDecision::Restart {
                delay,
                restarts_in_window,
            } => {
                warn!(actor = %path, %reason, delay_ms = delay.as_millis() as u64, restarts_in_window, replay = slot.uncommitted.len(), "partition worker failed, restarting");
                self.args.registry.failed(&path, &reason, true);
                myself.send_after(delay, move || ConsumerMsg::RestartWorker(partition));
                Ok(())
            }
            RestartDecision::GiveUp { failures_in_window } => {
                error!(actor = %path, %reason, failures_in_window, "partition worker keeps failing; restarting the consumer");
                self.args.registry.failed(&path, &reason, false);
                Err(
                    format!("worker of {partition} failed {failures_in_window} times: {reason}")
                        .into(),
                )
            }
        }
    }

    async fn restart_worker(
        &mut self,
        myself: &ActorRef<ConsumerMsg>,
        partition: TopicPartition,
    ) -> Result<(), ActorProcessingErr> {
        if !self.partitions.contains_key(&partition) {
            return Ok(());
        }
        self.give_up_poison_records(&partition).await?;
        let worker = self.spawn_worker(myself, &partition).await?;
        let path = self.worker_path(&partition);
        let slot = self.partitions.get_mut(&partition).expect("checked above");
        slot.workers.push(worker.get_id());
        for record in &slot.uncommitted {
            worker.cast(WorkerMsg::Record(record.clone()))?;
        }
        info!(actor = %path, replayed = slot.uncommitted.len(), "partition worker restarted");
        slot.worker = Some(worker);
        Ok(())
    }
}

impl Actor for ConsumerActor {
    type Msg = ConsumerMsg;
    type State = ConsumerState;
    type Arguments = ConsumerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let consumer = args
            .transport
            .subscribe(&args.group, &args.topics)
            .await
            .map_err(|err| {
                format!(
                    "failed to join group {} on {:?}: {err}",
                    args.group, args.topics
                )
            })?;
        let poller = tokio::spawn(poll_events(consumer.clone(), myself.clone()));
        args.shutdown.register();
        let shutdown_watch =
            tokio::spawn(watch_shutdown(args.shutdown.subscribe(), myself.clone()));
        info!(consumer = %args.path, group = %args.group, topics = ?args.topics, "consumer started");
        Ok(ConsumerState {
            args,
            consumer,
            poller,
            partitions: HashMap::new(),
            pending_drains: Vec::new(),
            shutdown_watch,
            reported_drained: false,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.poller.abort();
        state.shutdown_watch.abort();
        state.args.shutdown.unregister(state.reported_drained);
        for (partition, slot) in state.partitions.drain() {
            if let Some(worker) = slot.worker {
                worker.stop(Some("consumer stopping".to_owned()));
            }
            state
                .args
                .registry
                .remove(&format!("{}/{}", state.args.path, partition));
        }
        state.consumer.close();
        info!(consumer = %state.args.path, group = %state.args.group, "consumer stopped");
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ConsumerMsg::Event(ConsumerEvent::Record(record)) => state.on_record(record),
            ConsumerMsg::Event(ConsumerEvent::Assigned(partitions)) => {
                state.on_assigned(&myself, partitions).await?
            }
            ConsumerMsg::Event(ConsumerEvent::Revoked {
                partitions,
                drained,
            }) => state.on_revoked(partitions, drained),
            ConsumerMsg::Drained {
                partition,
                worker,
                next_offset,
            } => state.on_drained(partition, worker, next_offset),
            ConsumerMsg::BeginShutdown => state.begin_shutdown(),
            ConsumerMsg::RecordFailed {
                partition,
                offset,
                reason,
            } => {
                if let Some(slot) = state.partitions.get_mut(&partition) {
                    let entry = slot
                        .record_failures
                        .entry(offset)
                        .or_insert((0, String::new()));
                    entry.0 += 1;
                    entry.1 = reason;
                }
            }
            ConsumerMsg::PollFailed(reason) => {
                return Err(
                    format!("consumer of group {} failed: {reason}", state.args.group).into(),
                )
            }
            ConsumerMsg::Committable {
                partition,
                worker,
                next_offset,
            } => state.on_committable(partition, worker, next_offset),
            ConsumerMsg::RestartWorker(partition) => {
                state.restart_worker(&myself, partition).await?
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, format!("{err:#}")),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "stopped".to_owned()))
            }
            _ => return Ok(()),
        };
        // Workers of revoked partitions were stopped on purpose and are no longer in the map.
        let Some(partition) = state.partition_of_worker(&cell) else {
            return Ok(());
        };
        if state
            .partitions
            .get(&partition)
            .is_some_and(|slot| slot.draining)
        {
            // A drained worker stops itself after sending `Drained`; any other exit while
            // draining ends the drain now, leaving unfinished records to the next owner.
            if reason != DRAINED_REASON {
                warn!(consumer = %state.args.path, %partition, %reason, "worker of a revoked partition failed while draining");
                state.finish_drain(&partition);
            }
            return Ok(());
        }
        state.on_worker_exit(&myself, partition, reason)
    }
}

/// Stop reason of a worker that drained its partition.
pub const DRAINED_REASON: &str = "drained";

/// Tells the consumer when the process begins to shut down.
async fn watch_shutdown(
    mut begin: tokio::sync::watch::Receiver<bool>,
    actor: ActorRef<ConsumerMsg>,
) {
    if begin.wait_for(|begun| *begun).await.is_ok() {
        let _ = actor.cast(ConsumerMsg::BeginShutdown);
    }
}

/// Reads the transport until it fails or the actor is gone.
async fn poll_events(consumer: Arc<dyn Consumer>, actor: ActorRef<ConsumerMsg>) {
    loop {
        match consumer.next_event().await {
            Ok(event) => {
                if actor.cast(ConsumerMsg::Event(event)).is_err() {
                    return;
                }
            }
            Err(err) => {
                error!(error = %err, "consumer poll failed");
                let _ = actor.cast(ConsumerMsg::PollFailed(err.to_string()));
                return;
            }
        }
    }
}
