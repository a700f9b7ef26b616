//! Batches statistics rows and writes them, retrying while the backend is unreachable.
//!
//! A caller of [`StatisticsWriter::write`] waits until its row's batch is stored. At most
//! `max_buffered_results` rows wait at once; more callers wait for room. The statistics
//! listener is such a caller, so while the backend is down its records stay in flight, their
//! offsets are not committed, and the consumer pauses each partition once the partition's
//! uncommitted backlog reaches its bound. Nothing is dropped, and a row retried after an
//! ambiguous error is counted once because the backends ignore a repeated result uuid.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, error, info, warn};

use super::{retention_cutoff, StatisticsStore};
use crate::config::StatisticsConfig;
use crate::store::StatisticsRow;

/// First pause after a failed write; it doubles per retry up to [`RETRY_BACKOFF_MAX`].
const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(100);
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// During an outage, a warning repeats every this many retries.
const RETRY_WARN_EVERY: u32 = 20;
const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy)]
pub struct WriterSettings {
    pub batch_size: usize,
    pub batch_interval: Duration,
    pub max_buffered_results: usize,
    pub retention_days: u32,
}

impl From<&StatisticsConfig> for WriterSettings {
    fn from(config: &StatisticsConfig) -> WriterSettings {
        WriterSettings {
            batch_size: config.batch_size.max(1),
            batch_interval: Duration::from_millis(config.batch_interval_ms.max(1)),
            max_buffered_results: config.max_buffered_results.max(1),
            retention_days: config.retention_days,
        }
    }
}

/// A row waiting for its batch; dropping it after the write frees its buffer slot.
struct PendingRow {
    row: StatisticsRow,
    stored: oneshot::Sender<()>,
    _slot: OwnedSemaphorePermit,
}

/// The sending side of the batch writer task. The task ends once every clone is dropped and
/// the last batch is written.
#[derive(Clone)]
pub struct StatisticsWriter {
    sender: mpsc::UnboundedSender<PendingRow>,
    slots: Arc<Semaphore>,
}

impl StatisticsWriter {
    /// Spawns the batch writer task on the current Tokio runtime.
    pub fn start(
        statistics: Arc<dyn StatisticsStore>,
        settings: WriterSettings,
    ) -> StatisticsWriter {
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(run_writer(statistics, settings, receiver));
        StatisticsWriter {
            sender,
            slots: Arc::new(Semaphore::new(settings.max_buffered_results)),
        }
    }

    /// Adds `row` to the next batch and waits until that batch is stored.
    pub async fn write(&self, row: StatisticsRow) -> anyhow::Result<()> {
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| anyhow::anyhow!("statistics writer is closed"))?;
        let (stored, stored_rx) = oneshot::channel();
        self.sender
            .send(PendingRow {
                row,
                stored,
                _slot: slot,
            })
            .map_err(|_| anyhow::anyhow!("statistics writer task stopped"))?;
        stored_rx.await.map_err(|_| {
            anyhow::anyhow!("statistics writer task stopped before the row was stored")
        })
    }
}

async fn run_writer(
    statistics: Arc<dyn StatisticsStore>,
    settings: WriterSettings,
    mut receiver: mpsc::UnboundedReceiver<PendingRow>,
) {
    let backend = statistics.backend();
    info!(
        backend,
        batch_size = settings.batch_size,
        batch_interval_ms = settings.batch_interval.as_millis() as u64,
        "statistics writer started"
    );
    let mut batch: Vec<PendingRow> = Vec::new();
    let mut batch_deadline = Instant::now();
    // The first tick fires at once, so retention runs at start and then hourly.
    let mut retention = tokio::time::interval(RETENTION_INTERVAL);
    retention.set_missed_tick_behavior(MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            received = receiver.recv() => {
                let Some(pending) = received else {
                    break;
                };
                if batch.is_empty() {
                    batch_deadline = Instant::now() + settings.batch_interval;
                }
                batch.push(pending);
                if batch.len() >= settings.batch_size {
                    write_batch(&*statistics, std::mem::take(&mut batch)).await;
                }
            }
            _ = tokio::time::sleep_until(batch_deadline), if !batch.is_empty() => {
                write_batch(&*statistics, std::mem::take(&mut batch)).await;
            }
            _ = retention.tick() => {
                apply_retention(&*statistics, settings.retention_days).await;
            }
        }
    }
    write_batch(&*statistics, batch).await;
    info!(backend, "statistics writer stopped");
}

/// Writes `batch`, retrying with capped exponential backoff until it is stored or every
/// caller waiting for it has gone (their records are then redelivered to the next consumer).
async fn write_batch(statistics: &dyn StatisticsStore, mut batch: Vec<PendingRow>) {
    if batch.is_empty() {
        return;
    }
    let backend = statistics.backend();
    let rows: Vec<StatisticsRow> = batch.iter().map(|pending| pending.row.clone()).collect();
    let mut retries: u32 = 0;
    let mut backoff = RETRY_BACKOFF_MIN;
    let outage_start = Instant::now();
    loop {
        match statistics.insert(&rows).await {
            Ok(()) => {
                if retries > 0 {
                    info!(
                        backend,
                        retries,
                        outage_secs = outage_start.elapsed().as_secs(),
                        rows = rows.len(),
                        "statistics backend accepts writes again; buffered results stored"
                    );
                } else {
                    debug!(backend, rows = rows.len(), "statistics batch stored");
                }
                for pending in batch {
                    let _ = pending.stored.send(());
                }
                return;
            }
            Err(err) => {
                batch.retain(|pending| !pending.stored.is_closed());
                if batch.is_empty() {
                    warn!(backend, retries, error = %format!("{err:#}"), "statistics batch abandoned after its records were released; they will be redelivered");
                    return;
                }
                if retries == 0 {
                    error!(backend, rows = rows.len(), error = %format!("{err:#}"), "failed to store statistics; retrying until the backend accepts writes");
                } else if retries.is_multiple_of(RETRY_WARN_EVERY) {
                    warn!(backend, retries, outage_secs = outage_start.elapsed().as_secs(), error = %format!("{err:#}"), "statistics backend still rejects writes");
                }
                retries += 1;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
            }
        }
    }
}

async fn apply_retention(statistics: &dyn StatisticsStore, retention_days: u32) {
    let cutoff = retention_cutoff(chrono::Utc::now(), retention_days);
    match statistics.apply_retention(cutoff).await {
        Ok(0) => {}
        Ok(removed) => {
            info!(backend = statistics.backend(), removed, %cutoff, "expired statistics deleted")
        }
        Err(err) => {
            warn!(backend = statistics.backend(), error = %format!("{err:#}"), "failed to delete expired statistics; retrying in an hour")
        }
    }
}
