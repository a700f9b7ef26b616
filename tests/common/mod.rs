//! Shared harness of the integration tests: a daemon on the embedded bus with a SQLite store
//! in a temporary folder, an HTTP receiver on 127.0.0.1, and a SQLite query source.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::Router;
use uuid::Uuid;

use ylem_runtime::catalog::pipeline_record;
use ylem_runtime::config::{Config, SourceConfig, SourceKind};
use ylem_runtime::daemon::{Daemon, Runtime, Stage};
use ylem_runtime::pipeline::parse_pipeline;
use ylem_runtime::store::{self, NewQueuedRun, RunDetail, RunKind, Store};
use ylem_runtime::transport::Transport;

/// The transport a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    /// The broker started by `scripts/kafka.sh start`, or `YLEM_TEST_KAFKA_BOOTSTRAP`.
    Kafka,
}

/// Bootstrap address of the test broker.
pub fn kafka_bootstrap() -> String {
    std::env::var("YLEM_TEST_KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:19092".to_owned())
}

/// Gives every topic and consumer group of `config` a suffix unique to this test, so tests
/// sharing one broker never see each other's records.
pub fn isolate_on_kafka(config: &mut Config) {
    let suffix = format!("-{}", &Uuid::new_v4().simple().to_string()[..12]);
    config.transport.kind = ylem_runtime::config::TransportKind::Kafka;
    config.transport.kafka.bootstrap_servers = kafka_bootstrap();
    config.transport.kafka.session_timeout_ms = 6_000;
    let topics = &mut config.topics;
    for name in [
        &mut topics.task_runs,
        &mut topics.task_runs_load_balanced,
        &mut topics.task_run_results,
        &mut topics.query_task_run_results,
        &mut topics.notification_task_run_results,
    ] {
        name.push_str(&suffix);
    }
    let groups = &mut config.consumer_groups;
    for name in [
        &mut groups.load_balancer,
        &mut groups.load_balancer_results,
        &mut groups.task_runner,
        &mut groups.trigger_listener,
        &mut groups.statistics,
    ] {
        name.push_str(&suffix);
    }
}

/// Sends logs to the test output, filtered by `RUST_LOG` (warnings and errors by default).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Builds a configuration for fast tests: short polls, no HTTP endpoint, a store in `folder`.
pub fn test_config(folder: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.store.url = format!("sqlite://{}?mode=rwc", folder.join("store.db").display());
    config.schedule_publisher.poll_interval_ms = 50;
    config.schedule_generator.interval_secs = 1;
    config.http.enabled = false;
    config.supervision.backoff_min_ms = 10;
    config.supervision.backoff_max_ms = 100;
    config.task_runner.retry_backoff_min_ms = 50;
    config.task_runner.retry_backoff_max_ms = 200;
    config
}

pub struct TestEnv {
    pub folder: tempfile::TempDir,
    pub store: Arc<dyn Store>,
    pub transport: Arc<dyn Transport>,
    pub runtime: Runtime,
    pub daemon: Option<Daemon>,
}

impl TestEnv {
    /// Prepares the store and bus without starting stages.
    pub async fn prepare(
        backend: Backend,
        adjust: impl FnOnce(&mut Config, &std::path::Path),
    ) -> TestEnv {
        TestEnv::prepare_with_sources(backend, &[], adjust).await
    }

    /// Prepares the store and bus, and SQLite query sources made by their SQL statements.
    pub async fn prepare_with_sources(
        backend: Backend,
        sources: &[(&str, &[&str])],
        adjust: impl FnOnce(&mut Config, &std::path::Path),
    ) -> TestEnv {
        init_tracing();
        let folder = tempfile::tempdir().unwrap();
        let mut config = test_config(folder.path());
        if backend == Backend::Kafka {
            isolate_on_kafka(&mut config);
        }
        for (name, statements) in sources {
            add_sqlite_source(&mut config, folder.path(), name, statements).await;
        }
        adjust(&mut config, folder.path());
        config.validate().unwrap();
        let store = store::open_configured(&config.store).await.unwrap();
        let transport = ylem_runtime::transport::connect(&config)
            .await
            .unwrap_or_else(|err| {
                panic!("{err:#}; the Kafka tests need the broker of `scripts/kafka.sh start`")
            });
        let runtime = Runtime::new(Arc::new(config), store.clone(), transport.clone());
        runtime.ensure_topics().await.unwrap();
        TestEnv {
            folder,
            store,
            transport,
            runtime,
            daemon: None,
        }
    }

    /// Prepares and starts every stage.
    pub async fn start(
        backend: Backend,
        adjust: impl FnOnce(&mut Config, &std::path::Path),
    ) -> TestEnv {
        TestEnv::start_with_sources(backend, &[], adjust).await
    }

    /// Prepares with query sources and starts every stage.
    pub async fn start_with_sources(
        backend: Backend,
        sources: &[(&str, &[&str])],
        adjust: impl FnOnce(&mut Config, &std::path::Path),
    ) -> TestEnv {
        let mut env = TestEnv::prepare_with_sources(backend, sources, adjust).await;
        env.start_stages(&Stage::ALL).await;
        env
    }

    pub async fn start_stages(&mut self, stages: &[Stage]) {
        self.daemon = Some(Daemon::start(self.runtime.clone(), stages).await.unwrap());
    }

    pub async fn stop(&mut self) {
        if let Some(daemon) = self.daemon.take() {
            daemon.stop().await;
        }
    }

    /// Validates and stores a pipeline given as YAML.
    pub async fn apply(&self, yaml: &str) -> Uuid {
        let pipeline =
            parse_pipeline("test.yaml", yaml).unwrap_or_else(|errors| panic!("{errors}"));
        let record = pipeline_record(&pipeline).unwrap();
        self.store.apply_pipelines(&[record]).await.unwrap();
        pipeline.uuid
    }

    /// Queues a manual run and returns its uuid.
    pub async fn run(&self, pipeline: &str, input: Option<&str>) -> Uuid {
        let stored = self
            .store
            .pipeline_by_name(pipeline)
            .await
            .unwrap()
            .expect("pipeline applied");
        let run_uuid = Uuid::new_v4();
        self.store
            .enqueue_run(NewQueuedRun {
                pipeline_uuid: stored.uuid,
                run_uuid,
                kind: RunKind::Manual,
                input: input.map(|text| text.as_bytes().to_vec()),
                run_config: None,
            })
            .await
            .unwrap();
        run_uuid
    }

    /// Waits until the run reaches a terminal state.
    pub async fn finished_run(&self, run_uuid: Uuid) -> RunDetail {
        self.finished_run_within(run_uuid, Duration::from_secs(60))
            .await
    }

    /// Waits up to `timeout` until the run reaches a terminal state.
    pub async fn finished_run_within(&self, run_uuid: Uuid, timeout: Duration) -> RunDetail {
        let store = self.store.clone();
        wait_for(&format!("run {run_uuid} to finish"), timeout, || {
            let store = store.clone();
            async move {
                let detail = store.run(run_uuid).await.unwrap()?;
                detail.run.status.is_terminal().then_some(detail)
            }
        })
        .await
    }
}

/// Adds a SQLite source to `config` backed by a database file created with `statements`.
pub async fn add_sqlite_source(
    config: &mut Config,
    folder: &std::path::Path,
    name: &str,
    statements: &[&str],
) {
    let path = folder.join(format!("{name}.db"));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    for statement in statements {
        sqlx::query(sqlx::AssertSqlSafe(statement.to_string()))
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
    config.sources.insert(
        name.to_owned(),
        SourceConfig {
            kind: SourceKind::Sqlite,
            url: format!("sqlite://{}?mode=ro", path.display()),
            password_env: None,
            max_connections: 2,
        },
    );
}

/// Declares each named scenario `fn(Backend)` as two tests: `embedded::NAME` on the in-process
/// bus and `kafka::NAME` on the real broker.
#[macro_export]
macro_rules! on_both_transports {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Embedded).await
                }
            )*
        }
        mod kafka {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Kafka).await
                }
            )*
        }
    };
}

/// Polls `check` until it returns a value, failing the test after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// One request received by a [`Receiver`].
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "body of {} is not JSON ({err}): {}",
                self.path,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// An HTTP server on 127.0.0.1 that records every request and responds with `status`.
#[derive(Clone)]
pub struct Receiver {
    pub address: SocketAddr,
    requests: Arc<Mutex<Vec<Received>>>,
    status: Arc<Mutex<StatusCode>>,
    delay: Arc<Mutex<Duration>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(Mutex::new(StatusCode::OK));
        let delay = Arc::new(Mutex::new(Duration::ZERO));
        let state = (requests.clone(), status.clone(), delay.clone());
        let app = Router::new().fallback(record_request).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            address,
            requests,
            status,
            delay,
        }
    }

    /// Makes every later request wait `delay` before the response is sent.
    pub fn set_delay(&self, delay: Duration) {
        *self.delay.lock().unwrap() = delay;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub fn set_status(&self, status: StatusCode) {
        *self.status.lock().unwrap() = status;
    }

    pub fn received(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }

    pub fn received_at(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|request| request.path == path)
            .collect()
    }
}

type ReceiverState = (
    Arc<Mutex<Vec<Received>>>,
    Arc<Mutex<StatusCode>>,
    Arc<Mutex<Duration>>,
);

async fn record_request(
    State((requests, status, delay)): State<ReceiverState>,
    uri: Uri,
    body: axum::body::Bytes,
) -> StatusCode {
    requests.lock().unwrap().push(Received {
        path: uri.path().to_owned(),
        body: body.to_vec(),
    });
    let delay = *delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    *status.lock().unwrap()
}

/// Returns a TCP port on 127.0.0.1 with nothing listening.
pub async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    port
}
