//! Records that keep failing their worker: given up after `max_record_failures` failures,
//! reported to the handler and sent to the dead-letter topic.

use std::collections::BTreeSet;
use std::sync::Arc;

use ractor::ActorProcessingErr;
use tracing::{error, warn};

use super::ConsumerState;
use crate::transport::{Record, TopicPartition};

impl ConsumerState {
    /// Dead-letters the records of a partition that failed their worker too often, and
    /// commits past them when nothing before them is pending.
    pub(super) async fn give_up_poison_records(
        &mut self,
        partition: &TopicPartition,
    ) -> Result<(), ActorProcessingErr> {
        let Some(slot) = self.partitions.get_mut(partition) else {
            return Ok(());
        };
        let limit = self.args.max_record_failures;
        let poisoned: Vec<(Arc<Record>, String)> = slot
            .uncommitted
            .iter()
            .filter_map(|record| {
                let (failures, reason) = slot.record_failures.get(&record.offset)?;
                (*failures >= limit).then(|| {
                    (
                        record.clone(),
                        format!("failed its worker {failures} times; last: {reason}"),
                    )
                })
            })
            .collect();
        if poisoned.is_empty() {
            return Ok(());
        }
        for (record, reason) in &poisoned {
            error!(consumer = %self.args.path, %partition, offset = record.offset, %reason, "giving up on a record");
            if let Err(err) = self.args.handler.give_up(record, reason).await {
                error!(consumer = %self.args.path, %partition, offset = record.offset, error = %format!("{err:#}"), "failed to report a given-up record");
            }
            match &self.args.dead_letters {
                Some(dead_letters) => dead_letters.send(record, reason).await.map_err(|err| {
                    format!(
                        "failed to dead-letter offset {} of {partition}: {err:#}",
                        record.offset
                    )
                })?,
                None => {
                    error!(consumer = %self.args.path, %partition, offset = record.offset, "no dead-letter topic configured; the record is skipped")
                }
            }
        }
        let slot = self.partitions.get_mut(partition).expect("checked above");
        let poisoned_offsets: BTreeSet<u64> =
            poisoned.iter().map(|(record, _)| record.offset).collect();
        slot.uncommitted
            .retain(|record| !poisoned_offsets.contains(&record.offset));
        for offset in &poisoned_offsets {
            slot.record_failures.remove(offset);
        }
        // Everything below the first pending record is finished or given up.
        let next_offset = match slot.uncommitted.front() {
            Some(record) => record.offset,
            None => poisoned_offsets.last().copied().unwrap_or_default() + 1,
        };
        let lowest_poisoned = poisoned_offsets.first().copied().unwrap_or_default();
        if slot
            .committed
            .is_none_or(|committed| committed <= lowest_poisoned)
            && next_offset > lowest_poisoned
        {
            match self.consumer.commit(partition, next_offset) {
                Ok(()) => slot.committed = Some(next_offset),
                Err(err) => {
                    warn!(consumer = %self.args.path, %partition, next_offset, error = %err, "offset commit after a given-up record failed")
                }
            }
        }
        Ok(())
    }
}
