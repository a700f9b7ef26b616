//! The `[supervision]` section: restart policies of the stage supervisors and of the
//! per-partition worker pools beneath them.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::ConfigError;

/// How a supervisor restarts its children when one of them fails.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Only the failed child is restarted.
    #[default]
    OneForOne,
    /// Every child of the supervisor is stopped and restarted.
    OneForAll,
    /// The failed child and the children started after it are restarted, in order.
    RestForOne,
}

/// When a child is restarted.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ChildRestart {
    /// Always, after a failure or after stopping by itself.
    #[default]
    Permanent,
    /// Only after a failure.
    Transient,
    /// Never.
    Temporary,
}

/// Restart settings of every supervisor, with optional overrides per stage and for the
/// partition worker pools.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisionConfig {
    pub strategy: Strategy,
    /// Restarts allowed within the window; one more failure makes the supervisor give up. A
    /// stage that gives up stops the process with exit code 3.
    pub max_restarts: u32,
    pub max_restarts_window_secs: u64,
    /// Delay before the first restart; it doubles with each further restart up to the maximum.
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
    /// Random extra delay, as a fraction of the backoff (0.2 adds up to 20%).
    pub backoff_jitter: f64,
    /// After this long without a restart, the next backoff starts again at the minimum.
    pub backoff_reset_after_secs: u64,
    /// Time a stopping actor gets to finish its work before it is stopped at once.
    pub shutdown_timeout_ms: u64,
    /// Overrides per stage, by stage name (`runner`, `triggers`, …).
    pub stages: BTreeMap<String, PolicyOverrides>,
    /// Overrides for the partition worker pools under each consumer.
    pub workers: PolicyOverrides,
    /// Restart type per child path, e.g. `"generator/schedule_generator" = "transient"`.
    pub children: BTreeMap<String, ChildRestart>,
}

/// Any subset of the policy keys of `[supervision]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyOverrides {
    pub strategy: Option<Strategy>,
    pub max_restarts: Option<u32>,
    pub max_restarts_window_secs: Option<u64>,
    pub backoff_min_ms: Option<u64>,
    pub backoff_max_ms: Option<u64>,
    pub backoff_jitter: Option<f64>,
    pub backoff_reset_after_secs: Option<u64>,
    pub shutdown_timeout_ms: Option<u64>,
}

impl Default for SupervisionConfig {
    fn default() -> Self {
        SupervisionConfig {
            strategy: Strategy::OneForOne,
            max_restarts: 10,
            max_restarts_window_secs: 60,
            backoff_min_ms: 100,
            backoff_max_ms: 10_000,
            backoff_jitter: 0.2,
            backoff_reset_after_secs: 300,
            shutdown_timeout_ms: 30_000,
            stages: BTreeMap::new(),
            workers: PolicyOverrides::default(),
            children: BTreeMap::new(),
        }
    }
}

/// Stage names accepted under `[supervision.stages]`.
pub const STAGE_NAMES: [&str; 6] = [
    "generator",
    "publisher",
    "balancer",
    "runner",
    "triggers",
    "statistics",
];

/// The effective settings of one supervisor.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectivePolicy {
    pub strategy: Strategy,
    pub max_restarts: u32,
    pub max_restarts_window_secs: u64,
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
    pub backoff_jitter: f64,
    pub backoff_reset_after_secs: u64,
    pub shutdown_timeout_ms: u64,
}

impl SupervisionConfig {
    fn base(&self) -> EffectivePolicy {
        EffectivePolicy {
            strategy: self.strategy,
            max_restarts: self.max_restarts,
            max_restarts_window_secs: self.max_restarts_window_secs,
            backoff_min_ms: self.backoff_min_ms,
            backoff_max_ms: self.backoff_max_ms,
            backoff_jitter: self.backoff_jitter,
            backoff_reset_after_secs: self.backoff_reset_after_secs,
            shutdown_timeout_ms: self.shutdown_timeout_ms,
        }
    }

    /// Settings of a stage supervisor.
    pub fn for_stage(&self, stage: &str) -> EffectivePolicy {
        match self.stages.get(stage) {
            Some(overrides) => overrides.apply(self.base()),
            None => self.base(),
        }
    }

    /// Settings of the partition workers under a consumer of `stage`.
    pub fn for_workers(&self, stage: &str) -> EffectivePolicy {
        let mut policy = self.workers.apply(self.for_stage(stage));
        // Partition workers are independent of each other.
        policy.strategy = Strategy::OneForOne;
        policy
    }

    /// Restart type of the child at `path`.
    pub fn child_restart(&self, path: &str) -> ChildRestart {
        self.children.get(path).copied().unwrap_or_default()
    }

    /// Rejects impossible values and combinations, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_policy("supervision", &self.base())?;
        for (stage, overrides) in &self.stages {
            let key = format!("supervision.stages.{stage}");
            if !STAGE_NAMES.contains(&stage.as_str()) {
                return Err(ConfigError::new(
                    &key,
                    stage,
                    format!("is not a stage; use one of {}", STAGE_NAMES.join(", ")),
                ));
            }
            check_policy(&key, &overrides.apply(self.base()))?;
        }
        if let Some(strategy) = self.workers.strategy {
            if strategy != Strategy::OneForOne {
                return Err(ConfigError::new(
                    "supervision.workers.strategy",
                    format!("{strategy:?}"),
                    "must be one_for_one, because each partition worker is independent of the others",
                ));
            }
        }
        for stage in STAGE_NAMES {
            check_policy("supervision.workers", &self.for_workers(stage))?;
        }
        for path in self.children.keys() {
            let stage = path.split('/').next().unwrap_or_default();
            if !STAGE_NAMES.contains(&stage) || !path.contains('/') {
                return Err(ConfigError::new(
                    &format!("supervision.children.\"{path}\""),
                    path,
                    "must be a child path such as \"generator/schedule_generator\"; `ylem actors` lists the paths",
                ));
            }
        }
        Ok(())
    }
}

impl PolicyOverrides {
    fn apply(&self, mut policy: EffectivePolicy) -> EffectivePolicy {
        if let Some(value) = self.strategy {
            policy.strategy = value;
        }
        if let Some(value) = self.max_restarts {
            policy.max_restarts = value;
        }
        if let Some(value) = self.max_restarts_window_secs {
            policy.max_restarts_window_secs = value;
        }
        if let Some(value) = self.backoff_min_ms {
            policy.backoff_min_ms = value;
        }
        if let Some(value) = self.backoff_max_ms {
            policy.backoff_max_ms = value;
        }
        if let Some(value) = self.backoff_jitter {
            policy.backoff_jitter = value;
        }
        if let Some(value) = self.backoff_reset_after_secs {
            policy.backoff_reset_after_secs = value;
        }
        if let Some(value) = self.shutdown_timeout_ms {
            policy.shutdown_timeout_ms = value;
        }
        policy
    }
}

fn check_policy(prefix: &str, policy: &EffectivePolicy) -> Result<(), ConfigError> {
    if policy.backoff_min_ms > policy.backoff_max_ms {
        return Err(ConfigError::new(
            &format!("{prefix}.backoff_min_ms"),
            policy.backoff_min_ms,
            format!(
                "is larger than backoff_max_ms ({}); lower it or raise the maximum",
                policy.backoff_max_ms
            ),
        ));
    }
    if policy.max_restarts_window_secs == 0 {
        return Err(ConfigError::new(
            &format!("{prefix}.max_restarts_window_secs"),
            0,
            "must be at least 1",
        ));
    }
    if !(0.0..=1.0).contains(&policy.backoff_jitter) {
        return Err(ConfigError::new(
            &format!("{prefix}.backoff_jitter"),
            policy.backoff_jitter,
            "must be between 0 and 1; 0.2 adds up to 20% to each backoff",
        ));
    }
    if policy.backoff_reset_after_secs < policy.backoff_max_ms.div_ceil(1000) {
        return Err(ConfigError::new(
            &format!("{prefix}.backoff_reset_after_secs"),
            policy.backoff_reset_after_secs,
            "must be at least backoff_max_ms in seconds, or the backoff would reset while a restart is still waiting",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    #[test]
    fn stage_override_applies_to_its_stage_only() {
        let config = Config::parse(
            "[supervision.stages.runner]\nstrategy = \"one_for_all\"\nmax_restarts = 3\n",
        )
        .unwrap();
        let runner = config.supervision.for_stage("runner");
        assert_eq!(runner.strategy, super::Strategy::OneForAll);
        assert_eq!(runner.max_restarts, 3);
        assert_eq!(config.supervision.for_stage("triggers").max_restarts, 10);
    }

    #[test]
    fn workers_inherit_stage_then_override() {
        let config = Config::parse(
            "[supervision.stages.runner]\nmax_restarts = 3\n[supervision.workers]\nbackoff_min_ms = 5\n",
        )
        .unwrap();
        let workers = config.supervision.for_workers("runner");
        assert_eq!(workers.max_restarts, 3);
        assert_eq!(workers.backoff_min_ms, 5);
        assert_eq!(workers.strategy, super::Strategy::OneForOne);
    }

    #[test]
    fn invalid_combinations_name_the_key() {
        let cases = [
            (
                "[supervision]\nbackoff_min_ms = 500\nbackoff_max_ms = 100\n",
                "supervision.backoff_min_ms",
            ),
            (
                "[supervision.stages.cooker]\nmax_restarts = 1\n",
                "supervision.stages.cooker",
            ),
            (
                "[supervision.workers]\nstrategy = \"one_for_all\"\n",
                "supervision.workers.strategy",
            ),
            (
                "[supervision]\nbackoff_jitter = 1.5\n",
                "supervision.backoff_jitter",
            ),
            (
                "[supervision.stages.runner]\nbackoff_max_ms = 900000\n",
                "supervision.stages.runner.backoff_reset_after_secs",
            ),
            (
                "[supervision.children]\n\"nowhere\" = \"transient\"\n",
                "supervision.children",
            ),
            ("[supervision]\nstrategy = \"one_for_some\"\n", "strategy"),
        ];
        for (text, key) in cases {
            let err = Config::parse(text).unwrap_err();
            assert!(format!("{err:#}").contains(key), "{text}: {err:#}");
        }
    }

    #[test]
    fn child_restart_defaults_to_permanent() {
        let config = Config::parse(
            "[supervision.children]\n\"generator/schedule_generator\" = \"transient\"\n",
        )
        .unwrap();
        assert_eq!(
            config
                .supervision
                .child_restart("generator/schedule_generator"),
            super::ChildRestart::Transient
        );
        assert_eq!(
            config
                .supervision
                .child_restart("runner/task_runs_load_balanced"),
            super::ChildRestart::Permanent
        );
    }
}
