//! The restart decision: restart intensity within a window, with capped exponential backoff.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::SupervisionConfig;

/// Restart rules of a supervisor for failing children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Restarts allowed within `window`; one more failure makes the supervisor give up.
    pub max_restarts: u32,
    pub window: Duration,
    /// Delay before the first restart in a window; doubled for each further one.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl From<&SupervisionConfig> for RestartPolicy {
    fn from(config: &SupervisionConfig) -> Self {
        RestartPolicy {
            max_restarts: config.max_restarts,
            window: Duration::from_secs(config.max_restarts_window_secs),
            backoff_min: Duration::from_millis(config.backoff_min_ms),
            backoff_max: Duration::from_millis(config.backoff_max_ms),
        }
    }
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy::from(&SupervisionConfig::default())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartDecision {
    /// Restart the child after `delay`; `restarts_in_window` counts this one.
    Restart {
        delay: Duration,
        restarts_in_window: u32,
    },
    /// Too many failures within the window: the supervisor must fail itself.
    GiveUp { failures_in_window: u32 },
}

/// Failure history of one supervisor, turned into decisions by its policy.
#[derive(Debug, Clone)]
pub struct RestartTracker {
    policy: RestartPolicy,
    failures: VecDeque<Instant>,
}

impl RestartTracker {
    pub fn new(policy: RestartPolicy) -> RestartTracker {
        RestartTracker {
            policy,
            failures: VecDeque::new(),
        }
    }

    pub fn policy(&self) -> &RestartPolicy {
        &self.policy
    }

    /// Records a failure at `now` and decides what to do about it.
    pub fn on_failure(&mut self, now: Instant) -> RestartDecision {
        while let Some(oldest) = self.failures.front() {
            if now.duration_since(*oldest) > self.policy.window {
                self.failures.pop_front();
            } else {
                break;
            }
        }
        self.failures.push_back(now);
        let failures_in_window = self.failures.len() as u32;
        if failures_in_window > self.policy.max_restarts {
            return RestartDecision::GiveUp { failures_in_window };
        }
        RestartDecision::Restart {
            delay: self.backoff(failures_in_window),
            restarts_in_window: failures_in_window,
        }
    }

    /// Backoff before the `restart_number`-th restart of the window (1-based).
    fn backoff(&self, restart_number: u32) -> Duration {
        let doublings = restart_number.saturating_sub(1).min(30);
        let delay = self.policy.backoff_min.saturating_mul(1 << doublings);
        delay.min(self.policy.backoff_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            max_restarts: 3,
            window: Duration::from_secs(10),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_millis(250),
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let mut tracker = RestartTracker::new(policy());
        let start = Instant::now();
        let delays: Vec<_> = (0..3)
            .map(
                |step| match tracker.on_failure(start + Duration::from_millis(step)) {
                    RestartDecision::Restart { delay, .. } => delay,
                    other => panic!("unexpected {other:?}"),
                },
            )
            .collect();
        assert_eq!(delays[0], Duration::from_millis(100));
        assert_eq!(delays[1], Duration::from_millis(200));
        assert_eq!(delays[2], Duration::from_millis(250));
    }

    #[test]
    fn gives_up_past_intensity() {
        let mut tracker = RestartTracker::new(policy());
        let start = Instant::now();
        for step in 0..3 {
            assert!(matches!(
                tracker.on_failure(start + Duration::from_secs(step)),
                RestartDecision::Restart { .. }
            ));
        }
        assert_eq!(
            tracker.on_failure(start + Duration::from_secs(3)),
            RestartDecision::GiveUp {
                failures_in_window: 4
            }
        );
    }

    #[test]
    fn old_failures_leave_window() {
        let mut tracker = RestartTracker::new(policy());
        let start = Instant::now();
        for step in 0..3 {
            tracker.on_failure(start + Duration::from_secs(step));
        }
        let later = start + Duration::from_secs(30);
        assert_eq!(
            tracker.on_failure(later),
            RestartDecision::Restart {
                delay: Duration::from_millis(100),
                restarts_in_window: 1
            }
        );
    }
}
