//! Runtime configuration: `config.toml` parsed, defaulted and validated.
//!
//! Every option has a default, so an empty file is a valid embedded-default configuration.
//! Unknown keys are rejected so that a misspelt option fails at start instead of being ignored.

mod sections;
pub mod supervision;

use std::path::Path;

use anyhow::Context;
pub use sections::*;

/// A configuration value that makes no sense, with the key and the fix in its text.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {key} = {value}: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub value: String,
    pub problem: String,
}

impl ConfigError {
    fn new(key: &str, value: impl std::fmt::Display, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            key: key.to_owned(),
            value: value.to_string(),
            problem: problem.into(),
        }
    }
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read config file {}", path.display()))?;
        Config::parse(&text).with_context(|| format!("in config file {}", path.display()))
    }

    /// Parses and validates configuration text.
    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let config: Config = toml::from_str(text).map_err(|err| anyhow::anyhow!("{err}"))?;
        config.validate()?;
        Ok(config)
    }

    /// Rejects impossible values, naming the key and what to do.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let balancer = &self.load_balancer;
        if !(balancer.slow_pool_share > 0.0 && balancer.slow_pool_share < 1.0) {
            return Err(ConfigError::new(
                "load_balancer.slow_pool_share",
                balancer.slow_pool_share,
                "must be between 0 and 1 (exclusive); 0.6 keeps 60% of the partitions for slow pipelines",
            ));
        }
        if !(balancer.duration_quantile > 0.0 && balancer.duration_quantile <= 1.0) {
            return Err(ConfigError::new(
                "load_balancer.duration_quantile",
                balancer.duration_quantile,
                "must be in (0, 1]; 0.8 uses the 80th percentile of recent run durations",
            ));
        }
        if balancer.history_runs == 0 {
            return Err(ConfigError::new(
                "load_balancer.history_runs",
                0,
                "must be at least 1",
            ));
        }
        for (key, count) in [
            (
                "topics.partitions.task_runs",
                self.topics.partitions.task_runs,
            ),
            (
                "topics.partitions.task_runs_load_balanced",
                self.topics.partitions.task_runs_load_balanced,
            ),
            (
                "topics.partitions.task_run_results",
                self.topics.partitions.task_run_results,
            ),
        ] {
            if count == 0 {
                return Err(ConfigError::new(
                    key,
                    count,
                    "a topic needs at least 1 partition",
                ));
            }
        }
        if self.topics.dead_letter_suffix.is_empty() {
            return Err(ConfigError::new(
                "topics.dead_letter_suffix",
                "\"\"",
                "must not be empty, or dead letters would go back to the topic they came from; the default is .dlq",
            ));
        }
        let kafka = &self.transport.kafka;
        if self.transport.kind == TransportKind::Kafka && kafka.bootstrap_servers.trim().is_empty()
        {
            return Err(ConfigError::new(
                "transport.kafka.bootstrap_servers",
                "\"\"",
                "is required with transport.kind = \"kafka\"; write host:port, e.g. 127.0.0.1:19092",
            ));
        }
        if !matches!(kafka.auto_offset_reset.as_str(), "earliest" | "latest") {
            return Err(ConfigError::new(
                "transport.kafka.auto_offset_reset",
                &kafka.auto_offset_reset,
                "must be earliest or latest",
            ));
        }
        if kafka.replication_factor < 1 {
            return Err(ConfigError::new(
                "transport.kafka.replication_factor",
                kafka.replication_factor,
                "must be at least 1",
            ));
        }
        if self.task_runner.max_in_flight_per_partition == 0 {
            return Err(ConfigError::new(
                "task_runner.max_in_flight_per_partition",
                0,
                "must be at least 1; 1 runs the tasks of a partition one at a time",
            ));
        }
        if self.task_runner.max_attempts == 0 {
            return Err(ConfigError::new(
                "task_runner.max_attempts",
                0,
                "must be at least 1; 1 runs each task once without retries",
            ));
        }
        if self.task_runner.retry_backoff_min_ms > self.task_runner.retry_backoff_max_ms {
            return Err(ConfigError::new(
                "task_runner.retry_backoff_min_ms",
                self.task_runner.retry_backoff_min_ms,
                format!(
                    "is larger than task_runner.retry_backoff_max_ms ({}); lower it or raise the maximum",
                    self.task_runner.retry_backoff_max_ms
                ),
            ));
        }
        if self.schedule_generator.horizon_hours == 0 {
            return Err(ConfigError::new(
                "schedule_generator.horizon_hours",
                0,
                "must be at least 1",
            ));
        }
        if let Err(err) = self.http.listen.parse::<std::net::SocketAddr>() {
            return Err(ConfigError::new(
                "http.listen",
                &self.http.listen,
                format!("is not a socket address ({err}); write it as 127.0.0.1:7335"),
            ));
        }
        self.supervision.validate()?;
        let runner_stuck_ms = self
            .supervision
            .for_workers("runner")
            .stuck_after_secs
            .saturating_mul(1000);
        let longest_timeout_ms = self
            .task_runner
            .timeouts_ms
            .values()
            .copied()
            .max()
            .unwrap_or(0);
        if runner_stuck_ms <= longest_timeout_ms {
            return Err(ConfigError::new(
                "supervision.stuck_after_secs",
                runner_stuck_ms / 1000,
                format!(
                    "must exceed the longest task timeout ({longest_timeout_ms} ms in task_runner.timeouts_ms) for the runner, or running tasks would count as stuck; raise it or set [supervision.stages.runner] stuck_after_secs"
                ),
            ));
        }
        for (name, source) in &self.sources {
            source.validate(name)?;
        }
        self.statistics.validate()?;
        self.store.validate()?;
        Ok(())
    }
}

impl StoreConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let is_postgres =
            self.url.starts_with("postgres://") || self.url.starts_with("postgresql://");
        if !self.url.starts_with("sqlite:") && !is_postgres {
            return Err(ConfigError::new(
                "store.url",
                redact_url(&self.url),
                "must start with sqlite: or postgres://",
            ));
        }
        if is_postgres && url_has_password(&self.url) {
            return Err(ConfigError::new(
                "store.url",
                redact_url(&self.url),
                "contains a password; remove it from the URL, put it in an environment variable and name that variable in store.password_env",
            ));
        }
        if self.password_env.as_deref() == Some("") {
            return Err(ConfigError::new(
                "store.password_env",
                "\"\"",
                "must name an environment variable, e.g. YLEM_STORE_PASSWORD, or be left out",
            ));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::new(
                "store.max_connections",
                0,
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Returns whether the user information of `scheme://user:password@host/...` contains a password.
fn url_has_password(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    match authority.rsplit_once('@') {
        Some((userinfo, _host)) => userinfo.contains(':'),
        None => false,
    }
}

impl SourceConfig {
    fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let key = format!("sources.{name}.url");
        let expected_prefix = match self.kind {
            SourceKind::Sqlite => "sqlite:",
            SourceKind::Postgres => "postgres",
        };
        if !self.url.starts_with(expected_prefix) {
            return Err(ConfigError::new(
                &key,
                redact_url(&self.url),
                format!(
                    "a {:?} source URL must start with {expected_prefix}",
                    self.kind
                ),
            ));
        }
        if self.url.contains('@')
            && self
                .url
                .split('@')
                .next()
                .is_some_and(|userinfo| userinfo.matches(':').count() > 1)
        {
            return Err(ConfigError::new(
                &key,
                redact_url(&self.url),
                format!("contains a password; put it in an environment variable and name it in sources.{name}.password_env"),
            ));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::new(
                &format!("sources.{name}.max_connections"),
                0,
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

impl StatisticsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("statistics.batch_size", self.batch_size as u64),
            ("statistics.batch_interval_ms", self.batch_interval_ms),
            ("statistics.retention_days", u64::from(self.retention_days)),
            (
                "statistics.max_buffered_results",
                self.max_buffered_results as u64,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::new(key, 0, "must be at least 1"));
            }
        }
        if self.max_buffered_results < self.batch_size {
            return Err(ConfigError::new(
                "statistics.max_buffered_results",
                self.max_buffered_results,
                format!(
                    "is smaller than statistics.batch_size ({}), so a batch could never fill; raise it or lower the batch size",
                    self.batch_size
                ),
            ));
        }
        if self.backend != StatisticsBackend::Clickhouse {
            return Ok(());
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(ConfigError::new(
                "statistics.url",
                redact_url(&self.url),
                "must be the ClickHouse HTTP interface, e.g. http://127.0.0.1:18123",
            ));
        }
        if self.url.contains('@') {
            return Err(ConfigError::new(
                "statistics.url",
                redact_url(&self.url),
                "must not contain credentials; set statistics.user and name the password's environment variable in statistics.password_env",
            ));
        }
        // Both names are written into SQL statements, so only plain identifiers are accepted.
        for (key, name) in [
            ("statistics.database", &self.database),
            ("statistics.table", &self.table),
        ] {
            if !is_plain_identifier(name) {
                return Err(ConfigError::new(
                    key,
                    format!("{name:?}"),
                    "must be a plain identifier: a letter or _ followed by letters, digits or _",
                ));
            }
        }
        if self.user.is_empty() {
            return Err(ConfigError::new(
                "statistics.user",
                "\"\"",
                "must not be empty; the packaged ClickHouse user is default",
            ));
        }
        if self.password_env.as_deref() == Some("") {
            return Err(ConfigError::new(
                "statistics.password_env",
                "\"\"",
                "must name an environment variable, or be left out for no password",
            ));
        }
        Ok(())
    }
}

/// Returns whether `name` is `[A-Za-z_][A-Za-z0-9_]*`.
fn is_plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|rest| rest.is_ascii_alphanumeric() || rest == '_')
}

/// Replaces the password of a URL with `***`, for errors and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_valid() {
        let config = Config::parse("").unwrap();
        assert_eq!(config.topics.task_runs, "task_runs");
        assert_eq!(config.load_balancer.slow_pool_share, 0.6);
    }

    #[test]
    fn unknown_key_is_rejected() {
        let err = Config::parse("[load_balancer]\nslow_share = 0.5\n").unwrap_err();
        assert!(format!("{err:#}").contains("slow_share"), "{err:#}");
    }

    #[test]
    fn slow_share_out_of_range_names_key() {
        let err = Config::parse("[load_balancer]\nslow_pool_share = 1.5\n").unwrap_err();
        assert!(
            format!("{err:#}").contains("load_balancer.slow_pool_share"),
            "{err:#}"
        );
    }

    #[test]
    fn source_password_in_url_is_rejected() {
        let text =
            "[sources.pg]\ntype = \"postgres\"\nurl = \"postgres://app:hunter2@127.0.0.1/db\"\n";
        let err = Config::parse(text).unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("password_env"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn statistics_invalid_values_name_key() {
        let cases = [
            ("batch_size = 0", "statistics.batch_size"),
            ("batch_interval_ms = 0", "statistics.batch_interval_ms"),
            ("retention_days = 0", "statistics.retention_days"),
            (
                "batch_size = 100\nmax_buffered_results = 10",
                "statistics.max_buffered_results",
            ),
            (
                "backend = \"clickhouse\"\nurl = \"127.0.0.1:18123\"",
                "statistics.url",
            ),
            (
                "backend = \"clickhouse\"\ntable = \"runs; DROP TABLE x\"",
                "statistics.table",
            ),
            (
                "backend = \"clickhouse\"\ndatabase = \"1stats\"",
                "statistics.database",
            ),
            (
                "backend = \"clickhouse\"\npassword_env = \"\"",
                "statistics.password_env",
            ),
        ];
        for (section, key) in cases {
            let err = Config::parse(&format!("[statistics]\n{section}\n")).unwrap_err();
            assert!(format!("{err:#}").contains(key), "{section}: {err:#}");
        }
    }

    #[test]
    fn statistics_url_credentials_rejected() {
        let text =
            "[statistics]\nbackend = \"clickhouse\"\nurl = \"http://u:hunter2@127.0.0.1:18123\"\n";
        let message = format!("{:#}", Config::parse(text).unwrap_err());
        assert!(message.contains("password_env"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn store_password_in_url_is_rejected() {
        let text = "[store]\nurl = \"postgres://ylem:hunter2@127.0.0.1:5432/ylem\"\n";
        let err = Config::parse(text).unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("store.password_env"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn statistics_clickhouse_section_parses() {
        let text =
            "[statistics]\nbackend = \"clickhouse\"\ndatabase = \"stats_1\"\ntable = \"_runs\"\n";
        let config = Config::parse(text).unwrap();
        assert_eq!(config.statistics.backend, StatisticsBackend::Clickhouse);
        assert_eq!(config.statistics.table, "_runs");
    }

    #[test]
    fn store_postgres_url_with_password_env_is_valid() {
        let text = "[store]\nurl = \"postgres://ylem@127.0.0.1:5432/ylem\"\npassword_env = \"YLEM_STORE_PASSWORD\"\n";
        let config = Config::parse(text).unwrap();
        assert_eq!(
            config.store.password_env.as_deref(),
            Some("YLEM_STORE_PASSWORD")
        );
    }

    #[test]
    fn url_password_detection() {
        assert!(url_has_password("postgres://u:p@h:5432/d"));
        assert!(!url_has_password("postgres://u@h:5432/d"));
        assert!(!url_has_password("postgres://h:5432/d"));
        assert!(!url_has_password("postgres://u@h:5432/d?options=a:b@c"));
        assert!(!url_has_password("sqlite://ylem.db?mode=rwc"));
    }

    #[test]
    fn redact_url_hides_password() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/d"),
            "postgres://u:***@h:5432/d"
        );
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
    }
}

#[cfg(test)]
mod shipped_config_tests {
    use super::*;

    #[test]
    fn shipped_config_is_valid() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        let config = Config::load(&path).unwrap();
        let defaults = Config::default();
        assert_eq!(config.store.url, defaults.store.url);
        assert_eq!(
            config.topics.partitions.task_runs_load_balanced,
            defaults.topics.partitions.task_runs_load_balanced
        );
        assert_eq!(
            config.supervision.max_restarts,
            defaults.supervision.max_restarts
        );
        assert_eq!(
            config.task_runner.timeouts_ms,
            defaults.task_runner.timeouts_ms
        );
        assert!(config.sources.contains_key("penguins"));
    }
}

#[cfg(test)]
mod shipped_kafka_config_tests {
    use super::*;

    #[test]
    fn shipped_kafka_config_is_valid() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.kafka.toml");
        let config = Config::load(&path).unwrap();
        assert_eq!(config.transport.kind, TransportKind::Kafka);
        assert_eq!(config.topics.partitions.task_runs_load_balanced, 12);
        assert_eq!(config.transport.kafka.bootstrap_servers, "127.0.0.1:19092");
    }
}
