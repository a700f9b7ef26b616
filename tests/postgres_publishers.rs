//! Two schedule publisher processes sharing one PostgreSQL store and one Kafka broker.
//!
//! Needs the servers of `scripts/postgres.sh start` and `scripts/kafka.sh start` (or the ones
//! named by `YLEM_TEST_POSTGRES_URL`, `YLEM_TEST_POSTGRES_PASSWORD` and
//! `YLEM_TEST_KAFKA_BOOTSTRAP`). The test gets a database, topics and consumer groups of its
//! own.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, Row};
use uuid::Uuid;
use ylem_runtime::catalog::pipeline_record;
use ylem_runtime::config::Config;
use ylem_runtime::daemon::{Daemon, Runtime, Stage};
use ylem_runtime::messages::Message;
use ylem_runtime::pipeline::parse_pipeline;
use ylem_runtime::store::postgres::PgStore;
use ylem_runtime::store::{RunStatus, Store};
use ylem_runtime::transport::{Consumer, ConsumerEvent};

const PASSWORD_VARIABLE: &str = "YLEM_TEST_POSTGRES_PASSWORD";
const DEFAULT_POSTGRES_URL: &str = "postgres://ylem@127.0.0.1:15432/ylem";
const DEFAULT_POSTGRES_PASSWORD: &str = "ylem-test";
const RUNS: usize = 300;

const PIPELINE: &str = "name: echo\ntasks:\n  - name: echo\n    type: processor\n    jq: '.'\n";

fn postgres_url() -> String {
    std::env::var("YLEM_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

fn postgres_password() -> String {
    std::env::var(PASSWORD_VARIABLE).unwrap_or_else(|_| DEFAULT_POSTGRES_PASSWORD.to_owned())
}

async fn admin_connection() -> PgConnection {
    let options = PgConnectOptions::from_str(&postgres_url())
        .unwrap()
        .password(&postgres_password());
    PgConnection::connect_with(&options)
        .await
        .unwrap_or_else(|err| {
            panic!(
            "failed to connect to {}: {err}; start the test server with scripts/postgres.sh start",
            postgres_url()
        )
        })
}

/// A database of this test's own, dropped when this value is dropped.
struct TestDatabase {
    name: String,
}

impl TestDatabase {
    async fn create() -> TestDatabase {
        let name = format!("test_{}", Uuid::new_v4().simple());
        let mut admin = admin_connection().await;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        TestDatabase { name }
    }

    /// The database's URL, without a password.
    fn url(&self) -> String {
        let url = postgres_url();
        let (server, _database) = url
            .rsplit_once('/')
            .expect("YLEM_TEST_POSTGRES_URL has the form postgres://USER@HOST:PORT/DB");
        format!("{server}/{}", self.name)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside async code, so the database is dropped on a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut admin = admin_connection().await;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(_))) {
            eprintln!("failed to drop test database {}: {dropped:?}", self.name);
        }
    }
}

/// A `ylem run` process, killed when this value is dropped.
struct StageProcess(Child);

impl Drop for StageProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The parts of `config` a separate publisher process needs, as TOML. The store URL names
/// the process in pg_stat_activity.
fn publisher_toml(config: &Config, application_name: &str) -> String {
    let topics = &config.topics;
    format!(
        r#"
[store]
url = "{store}?application_name={application_name}"
password_env = "{PASSWORD_VARIABLE}"

[transport]
kind = "kafka"

[transport.kafka]
bootstrap_servers = "{bootstrap}"
session_timeout_ms = {session}

[topics]
task_runs = "{task_runs}"
task_runs_load_balanced = "{balanced}"
task_run_results = "{results}"
query_task_run_results = "{query_results}"
notification_task_run_results = "{notification_results}"

[schedule_publisher]
poll_interval_ms = {poll}
batch_size = {batch}

[http]
enabled = false

[pipelines]
apply_on_start = []
"#,
        store = config.store.url,
        bootstrap = config.transport.kafka.bootstrap_servers,
        session = config.transport.kafka.session_timeout_ms,
        task_runs = topics.task_runs,
        balanced = topics.task_runs_load_balanced,
        results = topics.task_run_results,
        query_results = topics.query_task_run_results,
        notification_results = topics.notification_task_run_results,
        poll = config.schedule_publisher.poll_interval_ms,
        batch = config.schedule_publisher.batch_size,
    )
}

fn spawn_publisher(config: &Config, folder: &std::path::Path, name: &str) -> StageProcess {
    let path = folder.join(format!("{name}.toml"));
    std::fs::write(&path, publisher_toml(config, name)).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ylem"))
        .args(["run", "--stages", "publisher", "--config"])
        .arg(&path)
        .env("YLEM_LOG", "warn")
        .env(PASSWORD_VARIABLE, postgres_password())
        .stdin(Stdio::null())
        .spawn()
        .expect("the ylem binary starts");
    StageProcess(child)
}

/// Names of the applications connected to `database`.
async fn connected_applications(database: &str) -> Vec<String> {
    let mut admin = admin_connection().await;
    let rows = sqlx::query(
        "SELECT DISTINCT application_name FROM pg_stat_activity WHERE datname = $1 \
         ORDER BY application_name",
    )
    .bind(database)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    rows.iter()
        .map(|row| row.try_get("application_name").unwrap())
        .collect()
}

/// Reads the task_runs topic until it has been idle for a while, counting initial-task
/// records per run.
async fn count_initial_tasks(consumer: &dyn Consumer, expected: usize) -> BTreeMap<Uuid, usize> {
    let mut counts: BTreeMap<Uuid, usize> = BTreeMap::new();
    let mut total = 0;
    loop {
        // Once every expected record arrived, a few idle seconds give a duplicate published
        // late the chance to show up.
        let idle = if total >= expected {
            Duration::from_secs(5)
        } else {
            Duration::from_secs(60)
        };
        let event = match tokio::time::timeout(idle, consumer.next_event()).await {
            Ok(event) => event.unwrap(),
            Err(_) if total >= expected => break,
            Err(_) => panic!("only {total} of {expected} task records arrived on task_runs"),
        };
        let ConsumerEvent::Record(record) = event else {
            continue;
        };
        let Ok(Message::Task(task)) = Message::decode(&record.payload) else {
            panic!("record on task_runs is not a task message");
        };
        if task.common.is_initial_task {
            *counts.entry(task.common.pipeline_run_uuid).or_insert(0) += 1;
            total += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_publishers_publish_each_run_once() {
    common::init_tracing();
    let database = TestDatabase::create().await;
    let folder = tempfile::tempdir().unwrap();
    let mut config = common::test_config(folder.path());
    common::isolate_on_kafka(&mut config);
    config.store.url = database.url();
    config.store.password_env = Some(PASSWORD_VARIABLE.to_owned());
    // Small batches, so that the two publishers take turns on the 300 runs.
    config.schedule_publisher.batch_size = 10;
    config.validate().unwrap();

    let store: Arc<dyn Store> = Arc::new(
        PgStore::open(&config.store.url, 8, Some(&postgres_password()))
            .await
            .unwrap(),
    );
    let transport = ylem_runtime::transport::connect(&config)
        .await
        .unwrap_or_else(|err| {
            panic!("{err:#}; this test needs the broker of `scripts/kafka.sh start`")
        });
    let runtime = Runtime::new(Arc::new(config.clone()), store.clone(), transport.clone());
    runtime.ensure_topics().await.unwrap();

    let pipeline =
        parse_pipeline("echo.yaml", PIPELINE).unwrap_or_else(|errors| panic!("{errors}"));
    store
        .apply_pipelines(&[pipeline_record(&pipeline).unwrap()])
        .await
        .unwrap();
    let probe = transport
        .subscribe(
            &format!("probe-{}", Uuid::new_v4()),
            std::slice::from_ref(&config.topics.task_runs),
        )
        .await
        .unwrap();
    let daemon = Daemon::start(
        runtime.clone(),
        &[Stage::Balancer, Stage::Runner, Stage::Triggers],
    )
    .await
    .unwrap();

    let publishers = [
        spawn_publisher(&config, folder.path(), "publisher-a"),
        spawn_publisher(&config, folder.path(), "publisher-b"),
    ];
    // Both publishers have migrated and are about to poll before any run is due.
    common::wait_for(
        "both publishers to connect to PostgreSQL",
        Duration::from_secs(60),
        || {
            let name = database.name.clone();
            async move {
                let names = connected_applications(&name).await;
                let both = names.iter().any(|name| name == "publisher-a")
                    && names.iter().any(|name| name == "publisher-b");
                both.then_some(())
            }
        },
    )
    .await;

    let started = std::time::Instant::now();
    let now = Utc::now();
    let fire_times: Vec<_> = (1..=RUNS as i64)
        .map(|minute| now - chrono::Duration::minutes(minute))
        .collect();
    let inserted = store
        .insert_scheduled_runs(pipeline.uuid, "test", &fire_times)
        .await
        .unwrap();
    assert_eq!(inserted, RUNS as u64);

    let runs = common::wait_for("every run to finish", Duration::from_secs(300), || {
        let store = store.clone();
        async move {
            let runs = store.list_runs(None, 2 * RUNS as u32).await.unwrap();
            let finished = runs.iter().filter(|run| run.status.is_terminal()).count();
            (finished >= RUNS).then_some(runs)
        }
    })
    .await;
    eprintln!(
        "{RUNS} runs published and finished in {:?}",
        started.elapsed()
    );
    assert_eq!(runs.len(), RUNS, "run rows");
    let not_succeeded: Vec<_> = runs
        .iter()
        .filter(|run| run.status != RunStatus::Succeeded)
        .collect();
    assert!(not_succeeded.is_empty(), "{not_succeeded:#?}");
    assert!(runs.iter().all(|run| run.task_results == 1));

    let counts = count_initial_tasks(&*probe, RUNS).await;
    assert_eq!(counts.len(), RUNS, "runs with an initial task on task_runs");
    let repeated: Vec<_> = counts.iter().filter(|(_, count)| **count != 1).collect();
    assert!(
        repeated.is_empty(),
        "runs published more than once: {repeated:?}"
    );

    let pg_store = PgStore::open(&config.store.url, 1, Some(&postgres_password()))
        .await
        .unwrap();
    let claims = sqlx::query(
        "SELECT claimed_by, COUNT(*) AS runs, COUNT(published_at) AS published \
         FROM scheduled_runs GROUP BY claimed_by",
    )
    .fetch_all(pg_store.pool())
    .await
    .unwrap();
    let mut published = 0;
    for row in &claims {
        let runs: i64 = row.try_get("runs").unwrap();
        let published_runs: i64 = row.try_get("published").unwrap();
        let claimer: Option<String> = row.try_get("claimed_by").unwrap();
        eprintln!("{claimer:?} published {published_runs} runs");
        assert_eq!(
            runs, published_runs,
            "every scheduled run is marked published"
        );
        published += published_runs;
    }
    assert_eq!(published, RUNS as i64);
    assert_eq!(claims.len(), 2, "both publishers claimed runs");
    pg_store.pool().close().await;

    drop(publishers);
    daemon.stop().await;
}
