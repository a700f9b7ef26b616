//! The actors of every stage, one file each.
//!
//! Stages that consume a topic share one shape: a [`consumer::ConsumerActor`] per
//! subscription owns the group membership and feeds one [`partition_worker::PartitionWorker`]
//! per assigned partition, which runs the stage's [`RecordHandler`] and reports the offsets
//! that are safe to commit. The stage-specific work is the handler.

pub mod consumer;
pub mod load_balancer;
pub mod partition_worker;
pub mod schedule_generator;
pub mod schedule_publisher;
pub mod statistics_listener;
pub mod task_runner;
pub mod trigger_listener;

use async_trait::async_trait;

use crate::transport::Record;

/// The stage-specific processing of one consumed record.
///
/// `Ok` means the record is done and its offset may be committed once every earlier record of
/// the partition is done too. An `Err` is a fault of the stage, not of the record (the store or
/// the broker is unreachable): the worker fails and is restarted, and the record is processed
/// again. Bad records must therefore be handled inside, as failed results or log lines.
#[async_trait]
pub trait RecordHandler: Send + Sync + 'static {
    async fn handle(&self, record: &Record) -> anyhow::Result<()>;

    /// Called once for a record that failed its worker too often, before it goes to the
    /// dead-letter topic; a stage that owes a result for it publishes one here.
    async fn give_up(&self, _record: &Record, _reason: &str) -> anyhow::Result<()> {
        Ok(())
    }
}
