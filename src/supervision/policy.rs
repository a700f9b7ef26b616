//! The restart decision: restart intensity within a window, with capped, jittered
//! exponential backoff that starts over after a healthy period.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::supervision::EffectivePolicy;
pub use crate::config::supervision::{ChildRestart, Strategy};

/// Restart rules of a supervisor for failing children.
#[derive(Debug, Clone, PartialEq)]
pub struct RestartPolicy {
    pub strategy: Strategy,
    /// Restarts allowed within `window`; one more failure makes the supervisor give up.
    pub max_restarts: u32,
    pub window: Duration,
    /// Delay before the first restart after a healthy period; doubled for each further one.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Random extra delay as a fraction of the backoff, in `[0, 1]`.
    pub backoff_jitter: f64,
    /// A restart this long after the previous one starts the backoff again at the minimum.
    pub backoff_reset_after: Duration,
    pub shutdown_timeout: Duration,
}

impl From<&EffectivePolicy> for RestartPolicy {
    fn from(config: &EffectivePolicy) -> Self {
        RestartPolicy {
            strategy: config.strategy,
            max_restarts: config.max_restarts,
            window: Duration::from_secs(config.max_restarts_window_secs),
            backoff_min: Duration::from_millis(config.backoff_min_ms),
            backoff_max: Duration::from_millis(config.backoff_max_ms),
            backoff_jitter: config.backoff_jitter,
            backoff_reset_after: Duration::from_secs(config.backoff_reset_after_secs),
            shutdown_timeout: Duration::from_millis(config.shutdown_timeout_ms),
        }
    }
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy::from(&crate::config::SupervisionConfig::default().for_stage("runner"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RestartDecision {
    /// Restart after `delay`; `restarts_in_window` counts this restart.
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
    /// Restarts since the last healthy period; the backoff exponent.
    streak: u32,
    last_failure: Option<Instant>,
}

impl RestartTracker {
    pub fn new(policy: RestartPolicy) -> RestartTracker {
        RestartTracker {
            policy,
            failures: VecDeque::new(),
            streak: 0,
            last_failure: None,
        }
    }

    pub fn policy(&self) -> &RestartPolicy {
        &self.policy
    }

    /// Records a failure at `now` and decides what to do about it. `random` in `[0, 1)`
    /// scales the jitter; pass `rand::random()` outside tests.
    pub fn on_failure_with(&mut self, now: Instant, random: f64) -> RestartDecision {
        while let Some(oldest) = self.failures.front() {
            if now.duration_since(*oldest) > self.policy.window {
                self.failures.pop_front();
            } else {
                break;
            }
        }
        let healthy = self
            .last_failure
            .is_none_or(|last| now.duration_since(last) >= self.policy.backoff_reset_after);
        self.streak = if healthy {
            1
        } else {
            self.streak.saturating_add(1)
        };
        self.last_failure = Some(now);

        self.failures.push_back(now);
        let failures_in_window = self.failures.len() as u32;
        if failures_in_window > self.policy.max_restarts {
            return RestartDecision::GiveUp { failures_in_window };
        }
        RestartDecision::Restart {
            delay: self.backoff(self.streak, random),
            restarts_in_window: failures_in_window,
        }
    }

    /// Records a failure now, with random jitter.
    pub fn on_failure(&mut self, now: Instant) -> RestartDecision {
        self.on_failure_with(now, rand::random::<f64>())
    }

    /// Backoff before the `restart_number`-th restart of a streak (1-based).
    fn backoff(&self, restart_number: u32, random: f64) -> Duration {
        let doublings = restart_number.saturating_sub(1).min(30);
        let base = self.policy.backoff_min.saturating_mul(1 << doublings);
        let jitter = base.mul_f64(self.policy.backoff_jitter * random.clamp(0.0, 1.0));
        (base + jitter).min(self.policy.backoff_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            strategy: Strategy::OneForOne,
            max_restarts: 3,
            window: Duration::from_secs(10),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_millis(250),
            backoff_jitter: 0.0,
            backoff_reset_after: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(1),
        }
    }

    fn delay(decision: RestartDecision) -> Duration {
        match decision {
            RestartDecision::Restart { delay, .. } => delay,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let mut tracker = RestartTracker::new(policy());
        let start = Instant::now();
        let delays: Vec<_> = (0..3)
            .map(|step| delay(tracker.on_failure_with(start + Duration::from_millis(step), 0.5)))
            .collect();
        assert_eq!(delays[0], Duration::from_millis(100));
        assert_eq!(delays[1], Duration::from_millis(200));
        assert_eq!(delays[2], Duration::from_millis(250));
    }

    #[test]
    fn jitter_adds_up_to_its_fraction() {
        let mut with_jitter = policy();
        with_jitter.backoff_jitter = 0.2;
        with_jitter.backoff_max = Duration::from_secs(10);
        let start = Instant::now();
        let lowest = delay(RestartTracker::new(with_jitter.clone()).on_failure_with(start, 0.0));
        let highest =
            delay(RestartTracker::new(with_jitter.clone()).on_failure_with(start, 0.999_999));
        let middle = delay(RestartTracker::new(with_jitter).on_failure_with(start, 0.5));
        assert_eq!(lowest, Duration::from_millis(100));
        assert_eq!(middle, Duration::from_millis(110));
        assert!(
            highest > Duration::from_millis(119) && highest <= Duration::from_millis(120),
            "{highest:?}"
        );
    }

    #[test]
    fn jitter_never_passes_the_cap() {
        let mut capped = policy();
        capped.backoff_jitter = 1.0;
        let mut tracker = RestartTracker::new(capped);
        let start = Instant::now();
        for step in 0..3 {
            let next = delay(tracker.on_failure_with(start + Duration::from_millis(step), 0.99));
            assert!(next <= Duration::from_millis(250), "{next:?}");
        }
    }

    #[test]
    fn backoff_resets_after_healthy_period() {
        let mut long_window = policy();
        long_window.window = Duration::from_secs(600);
        long_window.max_restarts = 100;
        let mut tracker = RestartTracker::new(long_window);
        let start = Instant::now();
        delay(tracker.on_failure_with(start, 0.0));
        assert_eq!(
            delay(tracker.on_failure_with(start + Duration::from_secs(1), 0.0)),
            Duration::from_millis(200)
        );
        let after_quiet = start + Duration::from_secs(120);
        assert_eq!(
            delay(tracker.on_failure_with(after_quiet, 0.0)),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn gives_up_past_intensity() {
        let mut tracker = RestartTracker::new(policy());
        let start = Instant::now();
        for step in 0..3 {
            assert!(matches!(
                tracker.on_failure_with(start + Duration::from_secs(step), 0.0),
                RestartDecision::Restart { .. }
            ));
        }
        assert_eq!(
            tracker.on_failure_with(start + Duration::from_secs(3), 0.0),
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
            tracker.on_failure_with(start + Duration::from_secs(step), 0.0);
        }
        let later = start + Duration::from_secs(90);
        assert_eq!(
            tracker.on_failure_with(later, 0.0),
            RestartDecision::Restart {
                delay: Duration::from_millis(100),
                restarts_in_window: 1
            }
        );
    }
}
