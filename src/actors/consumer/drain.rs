//! Draining partitions: on revocation, where the transport waits for the drain, and on
//! shutdown, where the process waits for it.

use std::collections::BTreeSet;

use ractor::ActorId;
use tracing::{info, warn};

use super::{ConsumerState, DrainWaiter, PendingDrain};
use crate::actors::partition_worker::WorkerMsg;
use crate::transport::TopicPartition;

impl ConsumerState {
    /// Lets the workers of revoked partitions finish their in-flight records, then releases
    /// the partitions through `ack`.
    pub(super) fn drain(&mut self, partitions: Vec<TopicPartition>, ack: DrainWaiter) {
        let mut waiting = BTreeSet::new();
        for partition in partitions {
            let Some(slot) = self.partitions.get_mut(&partition) else {
                continue;
            };
            match &slot.worker {
                Some(worker) if worker.cast(WorkerMsg::Drain).is_ok() => {
                    slot.draining = true;
                    waiting.insert(partition);
                }
                _ => {
                    self.partitions.remove(&partition);
                    self.args.registry.remove(&self.worker_path(&partition));
                }
            }
        }
        if waiting.is_empty() {
            self.release(ack);
        } else {
            self.pending_drains.push(PendingDrain {
                ack,
                partitions: waiting,
            });
        }
    }

    /// Forgets a drained partition and releases revocations that wait for nothing else.
    pub(super) fn finish_drain(&mut self, partition: &TopicPartition) {
        self.partitions.remove(partition);
        self.args.registry.remove(&self.worker_path(partition));
        for pending in &mut self.pending_drains {
            pending.partitions.remove(partition);
        }
        let (finished, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending_drains)
            .into_iter()
            .partition(|pending| pending.partitions.is_empty());
        self.pending_drains = waiting;
        for pending in finished {
            self.release(pending.ack);
        }
    }

    fn release(&mut self, waiter: DrainWaiter) {
        match waiter {
            DrainWaiter::Transport(ack) => ack.done(),
            DrainWaiter::Shutdown => {
                info!(consumer = %self.args.path, "consumer drained for shutdown");
                self.reported_drained = true;
                self.args.shutdown.mark_drained();
            }
        }
    }

    /// Stops reading and drains every partition; the shutdown signal learns when it is done.
    pub(super) fn begin_shutdown(&mut self) {
        if self.reported_drained
            || self
                .pending_drains
                .iter()
                .any(|pending| matches!(pending.ack, DrainWaiter::Shutdown))
        {
            return;
        }
        self.poller.abort();
        let partitions: Vec<TopicPartition> = self.partitions.keys().cloned().collect();
        info!(consumer = %self.args.path, partitions = partitions.len(), "draining for shutdown");
        self.drain(partitions, DrainWaiter::Shutdown);
    }

    pub(super) fn on_drained(
        &mut self,
        partition: TopicPartition,
        worker: ActorId,
        next_offset: Option<u64>,
    ) {
        let Some(slot) = self.partitions.get(&partition) else {
            return;
        };
        if !slot.draining || slot.worker.as_ref().map(|current| current.get_id()) != Some(worker) {
            return;
        }
        if let Some(next_offset) = next_offset {
            if let Err(err) = self.consumer.commit(&partition, next_offset) {
                warn!(consumer = %self.args.path, %partition, next_offset, error = %err, "offset commit of a drained partition failed");
            }
        }
        info!(consumer = %self.args.path, %partition, ?next_offset, "partition drained");
        self.finish_drain(&partition);
    }
}
