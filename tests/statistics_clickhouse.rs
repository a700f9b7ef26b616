//! Statistics on a real ClickHouse server: the server of `scripts/clickhouse.sh start`, or the
//! one at `YLEM_TEST_CLICKHOUSE_URL`. Every test uses a database of its own.
//!
//! One test stops and restarts the script's server, so the tests of this file take a shared
//! lock: the others hold it for reading, the outage test for writing.

mod common;
mod statistics_scenario;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use common::{wait_for, Backend, Receiver, TestEnv};
use serde::Deserialize;
use tokio::sync::RwLock;
use uuid::Uuid;
use ylem_runtime::config::{Config, StatisticsBackend};
use ylem_runtime::statistics::clickhouse::ClickHouseStatistics;
use ylem_runtime::statistics::StatisticsStore;
use ylem_runtime::store::{RunStatus, StatisticsRow};

const SCRIPT_URL: &str = "http://127.0.0.1:18123";

static SERVER: RwLock<()> = RwLock::const_new(());

fn clickhouse_url() -> String {
    std::env::var("YLEM_TEST_CLICKHOUSE_URL").unwrap_or_else(|_| SCRIPT_URL.to_owned())
}

/// A database name unique to one test.
fn unique_database() -> String {
    format!("ylem_test_{}", &Uuid::new_v4().simple().to_string()[..12])
}

/// Points `config` at the test server, in `database`, with small batches.
fn use_clickhouse(config: &mut Config, database: &str) {
    let statistics = &mut config.statistics;
    statistics.backend = StatisticsBackend::Clickhouse;
    statistics.url = clickhouse_url();
    statistics.database = database.to_owned();
    statistics.batch_size = 4;
    statistics.batch_interval_ms = 20;
    statistics.max_buffered_results = 8;
}

fn client() -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(clickhouse_url())
        .with_validation(false)
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct RowCounts {
    rows: u64,
    distinct_results: u64,
    final_rows: u64,
}

/// Rows of the table before merges, distinct result uuids, and rows read with FINAL.
async fn row_counts(database: &str) -> RowCounts {
    client()
        .query(&format!(
            "SELECT toUInt64(count()) AS rows, \
             toUInt64(uniqExact(uuid)) AS distinct_results, \
             toUInt64((SELECT count() FROM {database}.task_runs FINAL)) AS final_rows \
             FROM {database}.task_runs"
        ))
        .fetch_one()
        .await
        .unwrap()
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct ResultUuid {
    #[serde(with = "clickhouse::serde::uuid")]
    uuid: Uuid,
}

async fn stored_result_uuids(database: &str) -> BTreeSet<Uuid> {
    let rows: Vec<ResultUuid> = client()
        .query(&format!("SELECT uuid FROM {database}.task_runs FINAL"))
        .fetch_all()
        .await
        .unwrap();
    rows.into_iter().map(|row| row.uuid).collect()
}

async fn drop_database(database: &str) {
    client()
        .query(&format!("DROP DATABASE IF EXISTS {database}"))
        .execute()
        .await
        .unwrap();
}

fn statistics_row(
    pipeline: Uuid,
    run: Uuid,
    duration_ms: u64,
    executed_at_ms: i64,
) -> StatisticsRow {
    StatisticsRow {
        result_uuid: Uuid::new_v4(),
        organization_uuid: Uuid::nil(),
        pipeline_uuid: pipeline,
        pipeline_run_uuid: run,
        task_uuid: Uuid::new_v4(),
        task_type: "processor".to_owned(),
        pipeline_type: "generic".to_owned(),
        is_initial_task: true,
        is_final_task: true,
        is_successful: true,
        duration_ms,
        output_bytes: 2,
        errors: Vec::new(),
        executed_at: Utc.timestamp_millis_opt(executed_at_ms).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_queries_match_task_runs() {
    let _server = SERVER.read().await;
    let database = unique_database();
    let receiver = Receiver::start().await;
    let mut env = TestEnv::start(Backend::Embedded, |config, _| {
        use_clickhouse(config, &database)
    })
    .await;
    let pipeline = env
        .apply(&statistics_scenario::pipeline_yaml(&receiver))
        .await;

    let runs = statistics_scenario::run_pipeline(&env, &receiver).await;
    let statistics = env.runtime.statistics.clone();
    assert_eq!(statistics.backend(), "clickhouse");
    statistics_scenario::wait_until_stored(&*statistics, pipeline, &runs).await;
    statistics_scenario::check_queries(&*statistics, pipeline, &runs).await;

    env.stop().await;
    drop_database(&database).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_results_count_once() {
    let _server = SERVER.read().await;
    let database = unique_database();
    let mut config = Config::default();
    use_clickhouse(&mut config, &database);
    let statistics: &dyn StatisticsStore = &ClickHouseStatistics::new(&config.statistics);

    let pipeline = Uuid::new_v4();
    let run = Uuid::new_v4();
    let now_ms = Utc::now().timestamp_millis();
    let rows = vec![
        statistics_row(pipeline, run, 100, now_ms - 20),
        statistics_row(pipeline, run, 250, now_ms - 10),
    ];
    // Three inserts of the same rows, as retried batches would write them.
    for _ in 0..3 {
        statistics.insert(&rows).await.unwrap();
    }

    let counts = row_counts(&database).await;
    assert!(counts.rows >= 2, "{counts:?}");
    assert_eq!(counts.distinct_results, 2);
    assert_eq!(counts.final_rows, 2);
    let outcome = statistics.outcome_counts(pipeline, None).await.unwrap();
    assert_eq!(outcome.runs, 1);
    assert_eq!(outcome.successful_task_runs, 2);
    let history = statistics
        .run_durations(Some(pipeline), None, 5)
        .await
        .unwrap();
    assert_eq!(history, vec![(pipeline, vec![350])]);
    let slow = statistics
        .slow_tasks(200, Utc::now() - chrono::Duration::hours(1), 10)
        .await
        .unwrap();
    assert_eq!(slow.len(), 1);
    assert_eq!(slow[0].duration_ms, 250);

    drop_database(&database).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_old_months() {
    let _server = SERVER.read().await;
    let database = unique_database();
    let mut config = Config::default();
    use_clickhouse(&mut config, &database);
    let statistics: &dyn StatisticsStore = &ClickHouseStatistics::new(&config.statistics);

    let pipeline = Uuid::new_v4();
    let old_ms = Utc
        .with_ymd_and_hms(2020, 1, 15, 0, 0, 0)
        .unwrap()
        .timestamp_millis();
    let recent_ms = Utc::now().timestamp_millis();
    statistics
        .insert(&[
            statistics_row(pipeline, Uuid::new_v4(), 10, old_ms),
            statistics_row(pipeline, Uuid::new_v4(), 20, recent_ms),
        ])
        .await
        .unwrap();

    let cutoff = Utc::now() - chrono::Duration::days(90);
    assert_eq!(statistics.apply_retention(cutoff).await.unwrap(), 1);
    assert_eq!(statistics.apply_retention(cutoff).await.unwrap(), 0);
    let history = statistics
        .run_durations(Some(pipeline), None, 5)
        .await
        .unwrap();
    assert_eq!(history, vec![(pipeline, vec![20])]);

    drop_database(&database).await;
}

/// Runs `scripts/clickhouse.sh COMMAND` and fails the test when it fails.
fn clickhouse_script(command: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/clickhouse.sh");
    let status = std::process::Command::new(script)
        .arg(command)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "scripts/clickhouse.sh {command} failed: {status}"
    );
}

/// Starts the script's server again when dropped, so a failed test leaves it running.
struct RestartOnDrop;

impl Drop for RestartOnDrop {
    fn drop(&mut self) {
        clickhouse_script("start");
    }
}

fn echo_pipeline() -> &'static str {
    "name: echo-twice\ntasks:\n  - name: first\n    type: processor\n    jq: '.'\n  - name: second\n    type: processor\n    jq: '.'\ntriggers:\n  - {from: first, to: second}\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_stores_every_result_once() {
    if clickhouse_url() != SCRIPT_URL {
        eprintln!("skipped: YLEM_TEST_CLICKHOUSE_URL names a server that scripts/clickhouse.sh does not control");
        return;
    }
    let _server = SERVER.write().await;
    let database = unique_database();
    let mut env = TestEnv::start(Backend::Embedded, |config, _| {
        use_clickhouse(config, &database)
    })
    .await;
    let pipeline = env.apply(echo_pipeline()).await;
    let statistics = env.runtime.statistics.clone();

    // Results flow while the server is up.
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(env.run("echo-twice", Some("{}")).await);
    }
    for run in &runs {
        assert_eq!(
            env.finished_run(*run).await.run.status,
            RunStatus::Succeeded
        );
    }

    // Twelve runs while the server is down make 24 results, three times the writer's
    // buffer of 8, so the listener stops consuming until the server is back.
    let restart = RestartOnDrop;
    clickhouse_script("stop");
    assert!(statistics.outcome_counts(pipeline, None).await.is_err());
    let mut outage_runs = Vec::new();
    for _ in 0..12 {
        outage_runs.push(env.run("echo-twice", Some("{}")).await);
    }
    for run in &outage_runs {
        assert_eq!(
            env.finished_run(*run).await.run.status,
            RunStatus::Succeeded
        );
    }
    assert!(statistics.outcome_counts(pipeline, None).await.is_err());
    drop(restart);
    runs.extend(outage_runs);

    let mut expected = BTreeSet::new();
    for run in &runs {
        let detail = env.store.run(*run).await.unwrap().unwrap();
        expected.extend(detail.task_runs.iter().map(|task| task.result_uuid));
    }
    assert_eq!(expected.len(), 30);
    let database_name = database.clone();
    wait_for(
        "every result stored after the outage",
        Duration::from_secs(60),
        || {
            let database = database_name.clone();
            async move {
                let counts = client()
                    .query(&format!(
                        "SELECT toUInt64(uniqExact(uuid)) AS distinct_results FROM {database}.task_runs"
                    ))
                    .fetch_one::<u64>()
                    .await
                    .ok()?;
                (counts >= 30).then_some(())
            }
        },
    )
    .await;

    // Rows before merges may include a retried batch twice; FINAL and uniqExact never do.
    let counts = row_counts(&database).await;
    assert!(counts.rows >= 30, "{counts:?}");
    assert_eq!(counts.distinct_results, 30, "{counts:?}");
    assert_eq!(counts.final_rows, 30, "{counts:?}");
    assert_eq!(stored_result_uuids(&database).await, expected);
    let outcome = statistics.outcome_counts(pipeline, None).await.unwrap();
    assert_eq!(outcome.runs, 15);
    assert_eq!(outcome.successful_task_runs, 30);

    env.stop().await;
    drop_database(&database).await;
}
