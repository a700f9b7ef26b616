//! Graceful shutdown: consumers stop reading, let their partitions' in-flight records finish,
//! and report when they are drained, so that their results are published and offsets
//! committed before the process exits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{watch, Notify};

/// Shared by the daemon and every consumer actor of one process.
pub struct ShutdownSignal {
    begin: watch::Sender<bool>,
    registered: AtomicUsize,
    drained: AtomicUsize,
    changed: Notify,
}

impl Default for ShutdownSignal {
    fn default() -> Self {
        ShutdownSignal {
            begin: watch::channel(false).0,
            registered: AtomicUsize::new(0),
            drained: AtomicUsize::new(0),
            changed: Notify::new(),
        }
    }
}

impl ShutdownSignal {
    /// A receiver that changes to `true` when the shutdown begins.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.begin.subscribe()
    }

    pub fn has_begun(&self) -> bool {
        *self.begin.borrow()
    }

    /// Counts a running consumer that the shutdown waits for.
    pub fn register(&self) {
        self.registered.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Forgets a consumer that stopped; `was_drained` says whether it had reported.
    pub fn unregister(&self, was_drained: bool) {
        self.registered.fetch_sub(1, Ordering::SeqCst);
        if was_drained {
            self.drained.fetch_sub(1, Ordering::SeqCst);
        }
        self.changed.notify_waiters();
    }

    /// Reports that one consumer has nothing in flight any more.
    pub fn mark_drained(&self) {
        self.drained.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Starts the shutdown and waits until every registered consumer is drained or `timeout`
    /// passes. Returns whether all were drained.
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.begin.send_replace(true);
        let all_drained = async {
            loop {
                let notified = self.changed.notified();
                if self.drained.load(Ordering::SeqCst) >= self.registered.load(Ordering::SeqCst) {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, all_drained).await.is_ok()
    }
}
