//! Processes the records of one partition, several at once, and reports the commit point.
//!
//! Records may finish out of order when more than one is in flight, so the worker reports as
//! committable only the offset below which every record is done: the lowest offset still in
//! flight or queued. A crash therefore never skips an unfinished record.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use futures::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::AbortHandle;
use tracing::{debug, error};

use super::consumer::{ConsumerMsg, DRAINED_REASON};
use super::RecordHandler;
use crate::transport::{Record, TopicPartition};

pub struct PartitionWorkerArgs {
    pub partition: TopicPartition,
    pub handler: Arc<dyn RecordHandler>,
    pub max_in_flight: usize,
    pub consumer: ActorRef<ConsumerMsg>,
}

pub enum WorkerMsg {
    Record(Arc<Record>),
    Done {
        offset: u64,
        outcome: Result<(), String>,
    },
    /// The partition is revoked: finish the records in flight, start no more, then stop.
    Drain,
}

pub struct WorkerState {
    partition: TopicPartition,
    handler: Arc<dyn RecordHandler>,
    max_in_flight: usize,
    consumer: ActorRef<ConsumerMsg>,
    queue: VecDeque<Arc<Record>>,
    in_flight: BTreeSet<u64>,
    running: HashMap<u64, AbortHandle>,
    next_after_dispatched: Option<u64>,
    last_reported: Option<u64>,
    draining: bool,
}

pub struct PartitionWorker;

impl WorkerState {
    /// Starts queued records while there is room.
    fn dispatch(&mut self, myself: &ActorRef<WorkerMsg>) {
        while self.in_flight.len() < self.max_in_flight {
            let Some(record) = self.queue.pop_front() else {
                return;
            };
            let offset = record.offset;
            self.in_flight.insert(offset);
            self.next_after_dispatched = Some(offset + 1);
            let handler = self.handler.clone();
            let worker = myself.clone();
            let task = tokio::spawn(async move {
                let outcome = std::panic::AssertUnwindSafe(handler.handle(&record))
                    .catch_unwind()
                    .await;
                let outcome = match outcome {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(err)) => Err(format!("{err:#}")),
                    Err(panic) => Err(format!("record handler panicked: {}", panic_text(&panic))),
                };
                // The worker may have been stopped meanwhile; the record is then redone.
                let _ = worker.cast(WorkerMsg::Done { offset, outcome });
            });
            self.running.insert(offset, task.abort_handle());
        }
    }

    /// Reports the final commit point and stops, once nothing is in flight.
    fn finish_drain_if_idle(
        &mut self,
        myself: &ActorRef<WorkerMsg>,
    ) -> Result<(), ActorProcessingErr> {
        if !self.draining || !self.in_flight.is_empty() {
            return Ok(());
        }
        self.consumer.cast(ConsumerMsg::Drained {
            partition: self.partition.clone(),
            worker: myself.get_id(),
            next_offset: self.commit_point(),
        })?;
        myself.stop(Some(DRAINED_REASON.to_owned()));
        Ok(())
    }

    /// Returns the offset below which every record of this worker is done.
    fn commit_point(&self) -> Option<u64> {
        let lowest_pending = self
            .in_flight
            .first()
            .copied()
            .into_iter()
            .chain(self.queue.front().map(|record| record.offset))
            .min();
        lowest_pending.or(self.next_after_dispatched)
    }
}

/// Text of a panic payload.
pub fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "unknown panic payload".to_owned()
    }
}

impl Actor for PartitionWorker {
    type Msg = WorkerMsg;
    type State = WorkerState;
    type Arguments = PartitionWorkerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        debug!(partition = %args.partition, "partition worker started");
        Ok(WorkerState {
            partition: args.partition,
            handler: args.handler,
            max_in_flight: args.max_in_flight.max(1),
            consumer: args.consumer,
            queue: VecDeque::new(),
            in_flight: BTreeSet::new(),
            running: HashMap::new(),
            next_after_dispatched: None,
            last_reported: None,
            draining: false,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Unfinished records are redone by the next owner of the partition.
        for task in state.running.values() {
            task.abort();
        }
        debug!(partition = %state.partition, in_flight = state.in_flight.len(), "partition worker stopped");
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WorkerMsg::Record(record) => {
                if state.draining {
                    return Ok(());
                }
                state.queue.push_back(record);
                state.dispatch(&myself);
            }
            WorkerMsg::Drain => {
                state.draining = true;
                // Records not started stay uncommitted and go to the partition's next owner.
                state.queue.clear();
                state.finish_drain_if_idle(&myself)?;
            }
            WorkerMsg::Done { offset, outcome } => {
                state.running.remove(&offset);
                if let Err(reason) = outcome {
                    error!(partition = %state.partition, offset, %reason, "record processing failed");
                    return Err(format!("offset {offset} of {}: {reason}", state.partition).into());
                }
                state.in_flight.remove(&offset);
                if let Some(next_offset) = state.commit_point() {
                    if state
                        .last_reported
                        .is_none_or(|reported| next_offset > reported)
                    {
                        state.last_reported = Some(next_offset);
                        state.consumer.cast(ConsumerMsg::Committable {
                            partition: state.partition.clone(),
                            worker: myself.get_id(),
                            next_offset,
                        })?;
                    }
                }
                if state.draining {
                    state.finish_drain_if_idle(&myself)?;
                } else {
                    state.dispatch(&myself);
                }
            }
        }
        Ok(())
    }
}
