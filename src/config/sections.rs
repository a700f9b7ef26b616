//! The sections of `config.toml`. Each field's doc comment is its user documentation;
//! `config.toml` at the repository root repeats them with the defaults.

use std::collections::BTreeMap;

use serde::Deserialize;

pub use super::supervision::SupervisionConfig;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub store: StoreConfig,
    pub transport: TransportConfig,
    pub topics: TopicsConfig,
    pub consumer_groups: ConsumerGroupsConfig,
    pub schedule_generator: ScheduleGeneratorConfig,
    pub schedule_publisher: SchedulePublisherConfig,
    pub load_balancer: LoadBalancerConfig,
    pub task_runner: TaskRunnerConfig,
    pub trigger_listener: TriggerListenerConfig,
    pub statistics: StatisticsConfig,
    pub supervision: SupervisionConfig,
    pub http: HttpConfig,
    pub pipelines: PipelinesConfig,
    /// Query sources by name; a pipeline's query task names one of them.
    pub sources: BTreeMap<String, SourceConfig>,
}

/// Store of pipelines, schedules and runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite://PATH?mode=rwc` for the embedded store, or `postgres://USER@HOST:PORT/DB`
    /// for PostgreSQL. A PostgreSQL URL carries no password: see `password_env`.
    pub url: String,
    /// Maximum open connections.
    pub max_connections: u32,
    /// Environment variable that contains the PostgreSQL password, read when the store opens.
    pub password_env: Option<String>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "sqlite://ylem.db?mode=rwc".to_owned(),
            max_connections: 8,
            password_env: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// The in-process bus: every stage in one process, nothing to install.
    #[default]
    Embedded,
    /// An Apache Kafka cluster: stages may run in separate processes on separate machines.
    Kafka,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TransportConfig {
    pub kind: TransportKind,
    pub kafka: KafkaConfig,
}

/// The Kafka transport, used when `transport.kind = "kafka"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list.
    pub bootstrap_servers: String,
    /// Replication factor of topics this runtime creates.
    pub replication_factor: i32,
    /// Start position of a new consumer group: `earliest` reads what was produced before it first
    /// joined (no task is missed), `latest` only new records.
    pub auto_offset_reset: String,
    /// Upper bound of records librdkafka prefetches per consumer, in KiB.
    pub queued_max_messages_kbytes: u32,
    /// A member that sends no heartbeat for this long leaves its group.
    pub session_timeout_ms: u32,
    /// Time a produce may take, retries included, before it fails.
    pub message_timeout_ms: u32,
    /// Maximum wait for in-flight records of revoked partitions before they are released.
    pub revoke_drain_timeout_ms: u64,
    /// Extra librdkafka options for every client, e.g. `"security.protocol" = "SSL"`.
    pub librdkafka: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap_servers: "127.0.0.1:19092".to_owned(),
            replication_factor: 1,
            auto_offset_reset: "earliest".to_owned(),
            queued_max_messages_kbytes: 16 * 1024,
            session_timeout_ms: 10_000,
            message_timeout_ms: 30_000,
            revoke_drain_timeout_ms: 30_000,
            librdkafka: BTreeMap::new(),
        }
    }
}

/// Topic names; the defaults are the names the Ylem services use.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    pub task_runs: String,
    pub task_runs_load_balanced: String,
    pub task_run_results: String,
    pub query_task_run_results: String,
    pub notification_task_run_results: String,
    /// Appended to a topic name to form its dead-letter topic, which receives records that
    /// are not valid JSON or name an unknown message type.
    pub dead_letter_suffix: String,
    pub partitions: PartitionsConfig,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            task_runs: "task_runs".to_owned(),
            task_runs_load_balanced: "task_runs_load_balanced".to_owned(),
            task_run_results: "task_run_results".to_owned(),
            query_task_run_results: "query_task_run_results".to_owned(),
            notification_task_run_results: "notification_task_run_results".to_owned(),
            dead_letter_suffix: ".dlq".to_owned(),
            partitions: PartitionsConfig::default(),
        }
    }
}

/// Partition counts used when a topic is created.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PartitionsConfig {
    pub task_runs: u32,
    pub task_runs_load_balanced: u32,
    pub task_run_results: u32,
    pub side_topics: u32,
}

impl Default for PartitionsConfig {
    fn default() -> Self {
        PartitionsConfig {
            task_runs: 4,
            task_runs_load_balanced: 12,
            task_run_results: 4,
            side_topics: 1,
        }
    }
}

/// Consumer group ids; the defaults are the Ylem services' group names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsumerGroupsConfig {
    pub load_balancer: String,
    /// The load balancer's second subscription, to results, which returns capacity and
    /// updates its duration statistics.
    pub load_balancer_results: String,
    pub task_runner: String,
    pub trigger_listener: String,
    pub statistics: String,
}

impl Default for ConsumerGroupsConfig {
    fn default() -> Self {
        ConsumerGroupsConfig {
            load_balancer: "task_load_balancer".to_owned(),
            load_balancer_results: "task_load_balancer_results".to_owned(),
            task_runner: "task_runner".to_owned(),
            trigger_listener: "trigger_listener".to_owned(),
            statistics: "task_run_result_consumer".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleGeneratorConfig {
    /// How far ahead scheduled runs are created.
    pub horizon_hours: u32,
    /// Pause between two passes over the schedules.
    pub interval_secs: u64,
}

impl Default for ScheduleGeneratorConfig {
    fn default() -> Self {
        ScheduleGeneratorConfig {
            horizon_hours: 48,
            interval_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulePublisherConfig {
    /// Pause between polls for due runs when the last poll found none.
    pub poll_interval_ms: u64,
    /// Maximum due runs claimed per poll.
    pub batch_size: u32,
    /// How long a claim lasts; a publisher that dies leaves the run to another after this.
    pub claim_lease_secs: u64,
}

impl Default for SchedulePublisherConfig {
    fn default() -> Self {
        SchedulePublisherConfig {
            poll_interval_ms: 500,
            batch_size: 100,
            claim_lease_secs: 60,
        }
    }
}

/// Pool of a pipeline with no duration history.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Pool {
    Slow,
    Fast,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoadBalancerConfig {
    /// Share of `task_runs_load_balanced` partitions kept for slow pipelines; the rest are fast.
    pub slow_pool_share: f64,
    /// A pipeline whose expected run duration is at least this is slow.
    pub slow_threshold_ms: u64,
    /// Pool for pipelines with no recorded run.
    pub unknown_pipeline_pool: Pool,
    /// Number of recent runs per pipeline that the duration statistics keep.
    pub history_runs: usize,
    /// Quantile of the recent run durations taken as the expected run duration.
    pub duration_quantile: f64,
    /// Expected duration of a task with no recorded execution.
    pub default_task_duration_ms: u64,
    /// Runs remembered for keeping all tasks of a run on one partition.
    pub run_affinity_capacity: usize,
}

impl Default for LoadBalancerConfig {
    fn default() -> Self {
        LoadBalancerConfig {
            slow_pool_share: 0.6,
            slow_threshold_ms: 30_000,
            unknown_pipeline_pool: Pool::Slow,
            history_runs: 5,
            duration_quantile: 0.8,
            default_task_duration_ms: 1_000,
            run_affinity_capacity: 100_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TaskRunnerConfig {
    /// Tasks of one partition executed at once; offsets are committed in order regardless.
    pub max_in_flight_per_partition: usize,
    /// Outputs larger than this fail the task with code 101.
    pub max_output_bytes: usize,
    /// Time limit of one task execution, per task type; `default` covers the rest.
    pub timeouts_ms: BTreeMap<String, u64>,
    /// User-Agent of HTTP requests made by api_call and notification tasks.
    pub http_user_agent: String,
    /// Executions of a task whose failure is retryable (connection refused, timeout, HTTP 429
    /// and 5xx); 1 disables retries. A task's own `max_attempts` wins.
    pub max_attempts: u32,
    /// Delay before the first retry; it doubles for each further retry up to the maximum.
    pub retry_backoff_min_ms: u64,
    pub retry_backoff_max_ms: u64,
}

impl Default for TaskRunnerConfig {
    fn default() -> Self {
        TaskRunnerConfig {
            max_in_flight_per_partition: 4,
            max_output_bytes: 50 * 1024 * 1024,
            timeouts_ms: BTreeMap::from([
                ("default".to_owned(), 60_000),
                ("api_call".to_owned(), 30_000),
                ("notification".to_owned(), 30_000),
                ("query".to_owned(), 300_000),
            ]),
            http_user_agent: concat!("ylem-runtime/", env!("CARGO_PKG_VERSION")).to_owned(),
            max_attempts: 3,
            retry_backoff_min_ms: 1_000,
            retry_backoff_max_ms: 60_000,
        }
    }
}

impl TaskRunnerConfig {
    /// Delay before the retry that follows failed attempt `attempt` (1-based).
    pub fn retry_backoff(&self, attempt: u32) -> std::time::Duration {
        let doublings = attempt.saturating_sub(1).min(20);
        let delay = self.retry_backoff_min_ms.saturating_mul(1 << doublings);
        std::time::Duration::from_millis(delay.min(self.retry_backoff_max_ms))
    }

    /// Returns the time limit for a task type.
    pub fn timeout_for(&self, task_type: &str) -> std::time::Duration {
        let millis = self
            .timeouts_ms
            .get(task_type)
            .or_else(|| self.timeouts_ms.get("default"))
            .copied()
            .unwrap_or(60_000);
        std::time::Duration::from_millis(millis)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TriggerListenerConfig {
    /// A next-task input larger than this fails the triggering task instead of being published.
    pub max_next_input_bytes: usize,
}

impl Default for TriggerListenerConfig {
    fn default() -> Self {
        TriggerListenerConfig {
            max_next_input_bytes: 15 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StatisticsBackend {
    /// The `task_run_statistics` table of the store database.
    #[default]
    Sqlite,
    /// A ClickHouse table, written in batches over HTTP.
    Clickhouse,
}

impl StatisticsBackend {
    pub fn name(self) -> &'static str {
        match self {
            StatisticsBackend::Sqlite => "sqlite",
            StatisticsBackend::Clickhouse => "clickhouse",
        }
    }
}

/// Statistics backend of the results, and how they are written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatisticsConfig {
    pub backend: StatisticsBackend,
    /// ClickHouse HTTP interface (clickhouse only).
    pub url: String,
    /// ClickHouse database, created when missing (clickhouse only).
    pub database: String,
    /// ClickHouse table, created when missing (clickhouse only).
    pub table: String,
    /// ClickHouse user (clickhouse only).
    pub user: String,
    /// Environment variable that contains the ClickHouse password; no password when unset.
    pub password_env: Option<String>,
    /// A batch is written once it has this many results.
    pub batch_size: usize,
    /// A batch that is not full is written this long after its first result arrived.
    pub batch_interval_ms: u64,
    /// Results older than this many days are deleted. ClickHouse drops whole months, so it
    /// keeps up to one month more.
    pub retention_days: u32,
    /// Results received but not yet stored, at most. When the backend is unreachable the
    /// listener stops consuming at this bound and resumes once the backend accepts writes.
    pub max_buffered_results: usize,
}

impl Default for StatisticsConfig {
    fn default() -> Self {
        StatisticsConfig {
            backend: StatisticsBackend::Sqlite,
            url: "http://127.0.0.1:18123".to_owned(),
            database: "statistics".to_owned(),
            table: "task_runs".to_owned(),
            user: "default".to_owned(),
            password_env: None,
            batch_size: 1000,
            batch_interval_ms: 1000,
            retention_days: 90,
            max_buffered_results: 10000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the daemon's HTTP endpoint (health and run queries).
    pub listen: String,
    /// Whether the daemon serves HTTP at all.
    pub enabled: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:7335".to_owned(),
            enabled: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PipelinesConfig {
    /// Pipeline files or folders applied when the daemon starts.
    pub apply_on_start: Vec<String>,
    /// Organization uuid written into messages; Ylem's services require one.
    pub organization_uuid: Option<uuid::Uuid>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Sqlite,
    Postgres,
}

/// A database that query tasks run against.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    #[serde(rename = "type")]
    pub kind: SourceKind,
    /// Connection URL without a password, e.g. `sqlite://data/penguins.db?mode=ro` or
    /// `postgres://reader@127.0.0.1:5432/warehouse`.
    pub url: String,
    /// Environment variable holding the password; read by the task runner, never logged.
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default = "default_source_connections")]
    pub max_connections: u32,
}

fn default_source_connections() -> u32 {
    4
}
