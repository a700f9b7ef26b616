//! One suite of store behaviour, run against SQLite and PostgreSQL.
//!
//! Each test is declared once as `async fn NAME(backend: Backend)` and run twice by
//! `store_suite!`: `sqlite::NAME` on a SQLite file in a temporary folder, and
//! `postgres::NAME` on a fresh database of the server that `scripts/postgres.sh start` runs.
//! `YLEM_TEST_POSTGRES_URL` (a URL without a password, default
//! `postgres://ylem@127.0.0.1:15432/ylem`) and `YLEM_TEST_POSTGRES_PASSWORD` (default
//! `ylem-test`) name another server; its role needs the CREATEDB privilege.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;
use ylem_runtime::config::StoreConfig;
use ylem_runtime::store::postgres::PgStore;
use ylem_runtime::store::{
    self, ApplyChange, NewQueuedRun, NewRun, PipelineRecord, ResultRecord, RunKind, RunStatus,
    StatisticsRow, Store, TaskRecord, TriggerRecord,
};

const DEFAULT_POSTGRES_URL: &str = "postgres://ylem@127.0.0.1:15432/ylem";
const DEFAULT_POSTGRES_PASSWORD: &str = "ylem-test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

fn postgres_url() -> String {
    std::env::var("YLEM_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

fn postgres_password() -> String {
    std::env::var("YLEM_TEST_POSTGRES_PASSWORD")
        .unwrap_or_else(|_| DEFAULT_POSTGRES_PASSWORD.to_owned())
}

/// The test server's URL with its database replaced by `database`.
fn url_with_database(database: &str) -> String {
    let url = postgres_url();
    let (server, _database) = url
        .rsplit_once('/')
        .expect("YLEM_TEST_POSTGRES_URL has the form postgres://USER@HOST:PORT/DB");
    format!("{server}/{database}")
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

/// A store for one test. A PostgreSQL test gets a database of its own, dropped when this
/// value is dropped, also when the test panics.
struct TestStore {
    store: Arc<dyn Store>,
    _folder: Option<tempfile::TempDir>,
    database: Option<String>,
}

impl TestStore {
    async fn open(backend: Backend) -> TestStore {
        match backend {
            Backend::Sqlite => {
                let folder = tempfile::tempdir().unwrap();
                let url = format!(
                    "sqlite://{}?mode=rwc",
                    folder.path().join("store.db").display()
                );
                let store = store::open(&url, 4).await.unwrap();
                TestStore {
                    store,
                    _folder: Some(folder),
                    database: None,
                }
            }
            Backend::Postgres => {
                let database = format!("test_{}", Uuid::new_v4().simple());
                let mut admin = admin_connection().await;
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                admin.close().await.unwrap();
                let store =
                    PgStore::open(&url_with_database(&database), 8, Some(&postgres_password()))
                        .await
                        .unwrap();
                TestStore {
                    store: Arc::new(store),
                    _folder: None,
                    database: Some(database),
                }
            }
        }
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        let Some(database) = self.database.take() else {
            return;
        };
        // Drop runs outside async code, so the database is dropped on a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut admin = admin_connection().await;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {database} WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(_))) {
            eprintln!("failed to drop a test database: {dropped:?}");
        }
    }
}

/// A two-task pipeline, `first` then `second`. `revision` changes its source text.
fn pipeline(name: &str, schedule: Option<&str>, revision: u32) -> PipelineRecord {
    let uuid = Uuid::new_v5(&Uuid::NAMESPACE_OID, name.as_bytes());
    let first = Uuid::new_v5(&uuid, b"first");
    let second = Uuid::new_v5(&uuid, b"second");
    PipelineRecord {
        uuid,
        name: name.to_owned(),
        description: format!("{name} revision {revision}"),
        source_yaml: format!("name: {name}\n# revision {revision}\n"),
        schedule_fingerprint: schedule.map(str::to_owned),
        tasks: vec![
            TaskRecord {
                uuid: first,
                name: "first".to_owned(),
                task_type: "processor".to_owned(),
            },
            TaskRecord {
                uuid: second,
                name: "second".to_owned(),
                task_type: "processor".to_owned(),
            },
        ],
        triggers: vec![TriggerRecord {
            uuid: Uuid::new_v5(&uuid, b"first->second"),
            from: first,
            to: second,
            trigger_type: "output".to_owned(),
        }],
    }
}

fn new_run(pipeline: &PipelineRecord, run_uuid: Uuid, outstanding: u32) -> NewRun {
    NewRun {
        run_uuid,
        pipeline_uuid: pipeline.uuid,
        pipeline_name: pipeline.name.clone(),
        kind: RunKind::Manual,
        outstanding,
        scheduled_for: None,
    }
}

fn result(run_uuid: Uuid, task_name: &str, is_successful: bool) -> ResultRecord {
    ResultRecord {
        result_uuid: Uuid::new_v4(),
        run_uuid,
        pipeline_uuid: Uuid::nil(),
        task_run_uuid: Uuid::new_v4(),
        task_uuid: Uuid::new_v4(),
        task_name: task_name.to_owned(),
        task_type: "processor".to_owned(),
        is_successful,
        duration_ms: 12,
        output_bytes: 34,
        errors: if is_successful {
            Vec::new()
        } else {
            vec!["[100] boom".to_owned()]
        },
        batch_index: None,
        batch_size: 1,
        attempt: Some(1),
        executed_at: Utc::now(),
    }
}

/// The current time at the millisecond precision that both stores keep.
fn now_ms() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap()
}

fn hours(count: i64) -> chrono::Duration {
    chrono::Duration::hours(count)
}

/// Claims every due run at `now` with a one-hour lease.
async fn claim_all(store: &dyn Store, now: DateTime<Utc>) -> Vec<store::QueuedRun> {
    store
        .claim_due_runs("suite", now, Duration::from_secs(3600), 1000)
        .await
        .unwrap()
}

macro_rules! store_suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Postgres).await
                }
            )*
        }
    };
}

store_suite!(
    apply_reports_each_change,
    schedule_change_keeps_claimed_and_manual_runs,
    insert_scheduled_runs_skips_known_fire_times,
    claim_respects_lease,
    claim_returns_oldest_first_up_to_limit,
    completed_fire_time_is_not_inserted_again,
    record_result_counts_outstanding,
    for_each_batch_counts_every_result,
    duplicate_result_changes_nothing,
    failed_result_fails_run,
    result_of_unknown_run_creates_external_run,
    fail_run_ends_only_running_runs,
    list_runs_and_run_detail,
    statistics_dedup_and_percentiles,
    concurrent_claims_take_disjoint_runs,
    concurrent_results_lose_no_update,
    cancel_ends_running_run_only,
    cancel_drops_queued_start,
);

async fn apply_reports_each_change(backend: Backend) {
    let test = TestStore::open(backend).await;
    let store = &*test.store;
    let hourly = pipeline("hourly", Some("0 * * * *|UTC"), 1);
    let manual = pipeline("manual", None, 1);

    let outcomes = store
        .apply_pipelines(&[hourly.clone(), manual.clone()])
        .await
        .unwrap();
    assert_eq!(outcomes[0].change, ApplyChange::Created);
    assert_eq!(outcomes[1].change, ApplyChange::Created);

    let outcomes = store
        .apply_pipelines(&[hourly.clone(), pipeline("manual", None, 2)])
        .await
        .unwrap();
    assert_eq!(outcomes[0].change, ApplyChange::Unchanged);
    assert_eq!(outcomes[1].change, ApplyChange::Updated);

    let listed = store.list_pipelines().await.unwrap();
    let names: Vec<&str> = listed.iter().map(|summary| summary.name.as_str()).collect();
    assert_eq!(names, ["hourly", "manual"]);
    assert_eq!(listed[0].tasks, 2);
    assert_eq!(listed[0].version, 1);
    assert_eq!(listed[0].schedule.as_deref(), Some("0 * * * *|UTC"));
    assert_eq!(listed[1].version, 2);
    assert_eq!(listed[1].description, "manual revision 2");
    assert_eq!(listed[1].schedule, None);

    let by_name = store.pipeline_by_name("manual").await.unwrap().unwrap();
    assert_eq!(by_name.uuid, manual.uuid);
    assert_eq!(by_name.source_yaml, pipeline("manual", None, 2).source_yaml);
    assert!(by_name.is_active);
    let by_uuid = store.pipeline_by_uuid(hourly.uuid).await.unwrap().unwrap();
    assert_eq!(by_uuid.name, "hourly");
    assert!(store.pipeline_by_name("missing").await.unwrap().is_none());
    assert!(store
        .pipeline_by_uuid(Uuid::new_v4())
        .await
        .unwrap()
        .is_none());

    let scheduled = store.scheduled_pipelines().await.unwrap();
    assert_eq!(scheduled.len(), 1);
    assert_eq!(scheduled[0].uuid, hourly.uuid);
    assert_eq!(scheduled[0].latest_fire_time, None);
}

async fn schedule_change_keeps_claimed_and_manual_runs(backend: Backend) {
    let test = TestStore::open(backend).await;
    let store = &*test.store;
    let old = pipeline("reports", Some("0 * * * *|UTC"), 1);
    store
        .apply_pipelines(std::slice::from_ref(&old))
        .await
        .unwrap();

    let now = now_ms();
    let past = now - hours(1);
    let future: Vec<DateTime<Utc>> = (1..=3).map(|count| now + hours(count)).collect();
    let mut fire_times = vec![past];
    fire_times.extend(&future);
    let inserted = store
        .insert_scheduled_runs(old.uuid, "0 * * * *|UTC", &fire_times)
        .await
        .unwrap();
    assert_eq!(inserted, 4);
    let manual_run = Uuid::new_v4();
    store
        .enqueue_run(NewQueuedRun {
            pipeline_uuid: old.uuid,
            run_uuid: manual_run,
            kind: RunKind::Manual,
            input: Some(b"{\"x\": 1}".to_vec()),
            run_config: None,
        })
        .await
        .unwrap();

    // A publisher four hours ahead claims the past run, the manual run and the first future
    // run. The two later future runs stay unclaimed.
    let held = store
        .claim_due_runs("ahead", now + hours(4), Duration::from_secs(3600), 3)
        .await
        .unwrap();
    assert_eq!(held.len(), 3);

    let new = pipeline("reports", Some("30 * * * *|UTC"), 2);
    let outcomes = store.apply_pipelines(&[new]).await.unwrap();
    assert_eq!(outcomes[0].change, ApplyChange::Updated);
    assert_eq!(outcomes[0].removed_scheduled_runs, 2);

    // The runs of the old schedule no longer count as the new schedule's latest fire time.
    let scheduled = store.scheduled_pipelines().await.unwrap();
    assert_eq!(scheduled[0].latest_fire_time, None);

    let left = claim_all(store, now + hours(6)).await;
    let left_runs: BTreeSet<Uuid> = left.iter().map(|run| run.run_uuid).collect();
    let held_runs: BTreeSet<Uuid> = held.iter().map(|run| run.run_uuid).collect();
    assert_eq!(left_runs, held_runs);
    assert!(left_runs.contains(&manual_run));
    let manual = left.iter().find(|run| run.run_uuid == manual_run).unwrap();
    assert_eq!(manual.kind, RunKind::Manual);
    assert_eq!(manual.input.as_deref(), Some(&b"{\"x\": 1}"[..]));
}

async fn insert_scheduled_runs_skips_known_fire_times(backend: Backend) {
    let test = TestStore::open(backend).await;
    let store = &*test.store;
    let first = pipeline("first", Some("0 * * * *|UTC"), 1);
    let second = pipeline("second", Some("0 * * * *|UTC"), 1);
    store
        .apply_pipelines(&[first.clone(), second.clone()])
        .await
        .unwrap();
    let base = DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let (a, b, c) = (base, base + hours(1), base + hours(2));

    let inserted = store
        .insert_scheduled_runs(first.uuid, "0 * * * *|UTC", &[a, b, b])
        .await
        .unwrap();
    assert_eq!(
        inserted, 2,
        "a fire time repeated in one call is stored once"
    );
    let inserted = store
        .insert_scheduled_runs(first.uuid, "0 * * * *|UTC", &[b, c])
        .await
        .unwrap();
    assert_eq!(inserted, 1);
    let inserted = store
        .insert_scheduled_runs(first.uuid, "other", &[a])
        .await
        .unwrap();
    assert_eq!(
        inserted, 0,
        "a fire time is unique per pipeline, whatever the schedule"
    );
    let inserted = store
        .insert_scheduled_runs(second.uuid, "0 * * * *|UTC", &[a])
        .await
        .unwrap();
    assert_eq!(inserted, 1, "another pipeline may fire at the same time");

    let scheduled = store.scheduled_pipelines().await.unwrap();
    let latest = scheduled
        .iter()
        .find(|entry| entry.uuid == first.uuid)
        .unwrap()
        .latest_fire_time;
    assert_eq!(latest, Some(c));

    let many: Vec<DateTime<Utc>> = (0..1500)
        .map(|minute| base + chrono::Duration::minutes(minute))
        .collect();
    let inserted = store
        .insert_scheduled_runs(second.uuid, "0 * * * *|UTC", &many)
        .await
        .unwrap();
    assert_eq!(
        inserted, 1499,
        "only the fire time at base was stored before"
    );
}

async fn claim_respects_lease(backend: Backend) {
    let test = TestStore::open(backend).await;
    let store = &*test.store;
    let hourly = pipeline("hourly", Some("0 * * * *|UTC"), 1);
    store
        .apply_pipelines(std::slice::from_ref(&hourly))
        .await
        .unwrap();
    let now = now_ms();
    let fire_times: Vec<DateTime<Utc>> = (1..=3).map(|count| now - hours(count)).collect();
    store
        .insert_scheduled_runs(hourly.uuid, "0 * * * *|UTC", &fire_times)
        .await
        .unwrap();
    let lease = Duration::from_secs(60);

    let first = store.claim_due_runs("a", now, lease, 10).await.unwrap();
    assert_eq!(first.len(), 3);
    let during_lease = store
        .claim_due_runs("b", now + chrono::Duration::seconds(59), lease, 10)
        .await
        .unwrap();
    assert!(during_lease.is_empty(), "{during_lease:?}");

    let after_lease = store
        .claim_due_runs("b", now + chrono::Duration::seconds(61), lease, 10)
        .await
        .unwrap();
    let first_ids: Vec<i64> = first.iter().map(|run| run.id).collect();
    let after_ids: Vec<i64> = after_lease.iter().map(|run| run.id).collect();
    assert_eq!(after_ids, first_ids);

    // A released run can be claimed at once.
    store.release_queued_run(after_ids[0]).await.unwrap();
    let released = store
        .claim_due_runs("c", now + chrono::Duration::seconds(62), lease, 10)
        .await
        .unwrap();
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].id, after_ids[0]);
}

async fn claim_returns_oldest_first_up_to_limit(backend: Backend) {
    let test = TestStore::open(backend).await;
    let store = &*test.store;
    let hourly = pipeline("hourly", Some("0 * * * *|UTC"), 1);
    store
        .apply_pipelines(std::slice::from_ref(&hourly))
        .await
        .unwrap();
    let now = now_ms();
    let fire_times: Vec<DateTime<Utc>> = (1..=5).map(|count| now - hours(count)).collect();
    store
        .insert_scheduled_runs(hourly.uuid, "0 * * * *|UTC", &fire_times)
        .await
        .unwrap();
    store
        .insert_scheduled_runs(hourly.uuid, "0 * * * *|UTC", &[now + hours(1)])
        .await
        .unwrap();

    let claimed = store
        .claim_due_runs("a", now, Duration::from_secs(60), 2)
        .await
        .unwrap();
    let times: Vec<DateTime<Utc>> = claimed.iter().map(|run| run.execute_at).collect();
    assert_eq!(times, [fire_times[4], fire_times[3]]);
    assert!(claimed.iter().all(|run| run.kind == RunKind::Schedule));
    assert!(claimed.iter().all(|run| run.pipeline_uuid == hourly.uuid));

    let rest = claim_all(store, now).await;
    assert_eq!(rest.len(), 3, "the future run is not due yet");
}

async fn completed_fire_time_is_not_inserted_again(backend: Backend) {
    let test = TestStore::open(backend).await;
    let store = &*test.store;
    let hourly = pipeline("hourly", Some("0 * * * *|UTC"), 1);
    store
        .apply_pipelines(std::slice::from_ref(&hourly))
        .await
        .unwrap();
    let now = now_ms();
    let fire_time = now - hours(1);
    store
        .insert_scheduled_runs(hourly.uuid, "0 * * * *|UTC", &[fire_time])
        .await
        .unwrap();

    let claimed = claim_all(store, now).await;
    assert_eq!(claimed.len(), 1);
    store.complete_queued_run(claimed[0].id).await.unwrap();

    assert!(claim_all(store, now + hours(10)).await.is_empty());
    let inserted = store
        .insert_scheduled_runs(hourly.uuid, "0 * * * *|UTC", &[fire_time])
        .await
        .unwrap();
    assert_eq!(inserted, 0);

    let pruned = store.prune_published_runs(fire_time).await.unwrap();
    assert_eq!(pruned, 0, "pruning keeps runs fired at the cut-off");
    let pruned = store
        .prune_published_runs(fire_time + chrono::Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(pruned, 1);
}

async fn record_result_counts_outstanding(backend: Backend) {
    let test = TestStore::open(backend).await;
    let store = &*test.store;
    let chain = pipeline("chain", None, 1);
    let run = Uuid::new_v4();
    store.start_run(new_run(&chain, run, 1)).await.unwrap();
    // A second start changes nothing.
    store.start_run(new_run(&chain, run, 5)).await.unwrap();

    let outcome = store
        .record_result(&result(run, "first", true), 2)
        .await
        .unwrap();
    assert!(!outcome.duplicate);
    assert_eq!(outcome.finished, None);
    let outcome = store
        .record_result(&result(run, "second", true), 0)
        .await
        .unwrap();
    assert_eq!(outcome.finished, None);
    let detail = store.run(run).await.unwrap().unwrap();
    assert_eq!(detail.run.outstanding, 1);
    assert_eq!(detail.run.status, RunStatus::Running);

    let outcome = store
        .record_result(&result(run, "second", true), 0)
        .await
        .unwrap();
    assert_eq!(outcome.finished, Some(RunStatus::Succeeded));
    let detail = store.run(run).await.unwrap().unwrap();
    assert_eq!(detail.run.status, RunStatus::Succeeded);
    assert_eq!(detail.run.outstanding, 0);
    assert_eq!(detail.run.task_results, 3);
    assert_eq!(detail.run.failed_tasks, 0);
    assert!(detail.run.finished_at.is_some());
}

async fn for_each_batch_counts_every_result(backend: Backend) {
    let test = TestStore::open(backend).await;
    let store = &*test.store;
    let chain = pipeline("for-each", None, 1);
    let run = Uuid::new_v4();
    store.start_run(new_run(&chain, run, 1)).await.unwrap();
    let task_run = Uuid::new_v4();
    let batch_result = |index: u32| ResultRecord {
        task_run_uuid: task_run,
        batch_index: Some(index),
        batch_size: 3,
        ..result(run, "split", true)
    };

    let outcome = store.record_result(&batch_result(0), 0).await.unwrap();
    assert_eq!(outcome.finished, None);
    assert_eq!(store.run(run).await.unwrap().unwrap().run.outstanding, 2);
    let outcome = store.record_result(&batch_result(1), 0).await.unwrap();
    assert_eq!(outcome.finished, None);

    let redelivered = store.record_result(&batch_result(1), 0).await.unwrap();
    assert!(redelivered.duplicate);
    assert_eq!(store.run(run).await.unwrap().unwrap().run.outstanding, 1);

    let outcome = store.record_result(&batch_result(2), 0).await.unwrap();
    assert_eq!(outcome.finished, Some(RunStatus::Succeeded));
    let detail = store.run(run).await.unwrap().unwrap();
    let indexes: Vec<Option<u32>> = detail
        .task_runs
        .iter()
        .map(|task| task.batch_index)
        .collect();
    assert_eq!(indexes, [Some(0), Some(1), Some(2)]);
}

async fn duplicate_result_changes_nothing(backend: Backend) {
    let test = TestStore::open(backend).await;
    let store = &*test.store;
    let chain = pipeline("chain", None, 1);
    let run = Uuid::new_v4();
    store.start_run(new_run(&chain, run, 2)).await.unwrap();
    let first = result(run, "first", true);
    assert!(!store.has_result(&first.dedupe_key()).await.unwrap());

    store.record_result(&first, 0).await.unwrap();
    assert!(store.has_result(&first.dedupe_key()).await.unwrap());
    // Same task run, new result uuid: the key is the task run and batch index.
    let redelivered = ResultRecord {
        result_uuid: Uuid::new_v4(),
        ..first.clone()
    };
    let outcome = store.record_result(&redelivered, 3).await.unwrap();
    assert!(outcome.duplicate);
    assert_eq!(outcome.finished, None);

    // Without a task run id the result uuid is the key.
    let anonymous = ResultRecord {
        task_run_uuid: Uuid::nil(),
        ..result(run, "second", true)
    };
    assert_eq!(anonymous.dedupe_key(), anonymous.result_uuid.to_string());
    store.record_result(&anonymous, 0).await.unwrap();
    let outcome = store.record_result(&anonymous, 0).await.unwrap();
    assert!(outcome.duplicate);

    let detail = store.run(run).await.unwrap().unwrap();
    assert_eq!(detail.run.task_results, 2);
    assert_eq!(detail.run.outstanding, 0);
    assert_eq!(detail.run.status, RunStatus::Succeeded);
    assert_eq!(detail.task_runs.len(), 2);
}

async fn failed_result_fails_run(backend: Backend) {
    let test = TestStore::open(backend).await;
    let store = &*test.store;
    let chain = pipeline("chain", None, 1);
    let run = Uuid::new_v4();
    store.start_run(new_run(&chain, run, 2)).await.unwrap();

    let outcome = store
        .record_result(&result(run, "first", false), 0)
        .await
        .unwrap();
    assert_eq!(outcome.finished, None, "another task is still outstanding");
    let outcome = store
        .record_result(&result(run, "second", true), 0)
        .await
        .unwrap();
    assert_eq!(outcome.finished, Some(RunStatus::Failed));

    let detail = store.run(run).await.unwrap().unwrap();
    assert_eq!(detail.run.status, RunStatus::Failed);
    assert_eq!(detail.run.failed_tasks, 1);
    assert_eq!(
        detail.run.error.as_deref(),
        Some("task first failed: [100] boom")
    );
    let failed = &detail.task_runs[0];
    assert_eq!(failed.status, "failed");
    assert_eq!(failed.errors, ["[100] boom"]);
    assert_eq!(detail.task_runs[1].status, "succeeded");
}

async fn result_of_unknown_run_creates_external_run(backend: Backend) {
    let test = TestStore::open(backend).await;
    let store = &*test.store;
    let run = Uuid::new_v4();
    let external = ResultRecord {
        pipeline_uuid: Uuid::new_v4(),
        ..result(run, "outside", true)
    };

    let outcome = store.record_result(&external, 1).await.unwrap();
    assert_eq!(outcome.finished, None);
    let detail = store.run(run).await.unwrap().unwrap();
    assert_eq!(detail.run.kind, RunKind::External);
    assert_eq!(detail.run.pipeline_uuid, external.pipeline_uuid);
    assert_eq!(detail.run.outstanding, 1);

    let outcome = store
        .record_result(&result(run, "next", true), 0)
        .await
        .unwrap();
    assert_eq!(outcome.finished, Some(RunStatus::Succeeded));
}

async fn fail_run_ends_only_running_runs(backend: Backend) {
    let test = TestStore::open(backend).await;
    let store = &*test.store;
    let chain = pipeline("chain", None, 1);
    let run = Uuid::new_v4();
    store.start_run(new_run(&chain, run, 0)).await.unwrap();

    store.fail_run(run, "no initial task").await.unwrap();
    store.fail_run(run, "second reason").await.unwrap();

    let detail = store.run(run).await.unwrap().unwrap();
    assert_eq!(detail.run.status, RunStatus::Failed);
    assert_eq!(detail.run.error.as_deref(), Some("no initial task"));
    assert_eq!(detail.run.outstanding, 0);
    assert!(detail.run.finished_at.is_some());
}

async fn cancel_ends_running_run_only(backend: Backend) {
    let test = TestStore::open(backend).await;
    let store = &*test.store;
    let chain = pipeline("chain", None, 1);
    store
        .apply_pipelines(std::slice::from_ref(&chain))
        .await
        .unwrap();
    let running = Uuid::new_v4();
    store.start_run(new_run(&chain, running, 2)).await.unwrap();

    assert_eq!(
        store.cancel_run(running).await.unwrap(),
        Some(RunStatus::Cancelled)
    );
    assert_eq!(
        store.run_status(running).await.unwrap(),
        Some(RunStatus::Cancelled)
    );
    // A result arriving afterwards is recorded but does not end the run a second time.
    let outcome = store
        .record_result(&result(running, "first", true), 0)
        .await
        .unwrap();
    assert_eq!(outcome.finished, None);
    assert_eq!(
        store.run_status(running).await.unwrap(),
        Some(RunStatus::Cancelled)
    );

    let finished = Uuid::new_v4();
    store.start_run(new_run(&chain, finished, 1)).await.unwrap();
    store
        .record_result(&result(finished, "first", true), 0)
        .await
        .unwrap();
    assert_eq!(
        store.cancel_run(finished).await.unwrap(),
        Some(RunStatus::Succeeded)
    );
    assert_eq!(store.cancel_run(Uuid::new_v4()).await.unwrap(), None);
    assert_eq!(store.run_status(Uuid::new_v4()).await.unwrap(), None);
}

async fn cancel_drops_queued_start(backend: Backend) {
    let test = TestStore::open(backend).await;
    let store = &*test.store;
    let chain = pipeline("chain", None, 1);
    store
        .apply_pipelines(std::slice::from_ref(&chain))
        .await
        .unwrap();
    let queued = Uuid::new_v4();
    store
        .enqueue_run(store::NewQueuedRun {
            pipeline_uuid: chain.uuid,
            run_uuid: queued,
            kind: RunKind::Manual,
            input: None,
            run_config: None,
        })
        .await
        .unwrap();

    assert_eq!(
        store.cancel_run(queued).await.unwrap(),
        Some(RunStatus::Cancelled)
    );
    let detail = store.run(queued).await.unwrap().unwrap();
    assert_eq!(detail.run.pipeline_name, "chain");
    assert!(
        claim_all(store, Utc::now() + hours(1)).await.is_empty(),
        "the queued start is gone"
    );
}

async fn list_runs_and_run_detail(backend: Backend) {
    let test = TestStore::open(backend).await;
    let store = &*test.store;
    let alpha = pipeline("alpha", None, 1);
    let beta = pipeline("beta", None, 1);
    let mut alpha_runs = Vec::new();
    for _ in 0..3 {
        let run = Uuid::new_v4();
        store.start_run(new_run(&alpha, run, 1)).await.unwrap();
        alpha_runs.push(run);
    }
    let beta_run = Uuid::new_v4();
    let scheduled_for = DateTime::parse_from_rfc3339("2030-01-01T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    store
        .start_run(NewRun {
            kind: RunKind::Schedule,
            scheduled_for: Some(scheduled_for),
            ..new_run(&beta, beta_run, 1)
        })
        .await
        .unwrap();

    let all = store.list_runs(None, 10).await.unwrap();
    let order: Vec<Uuid> = all.iter().map(|run| run.run_uuid).collect();
    let expected = [beta_run, alpha_runs[2], alpha_runs[1], alpha_runs[0]];
    assert_eq!(order, expected, "newest first");
    let alpha_only = store.list_runs(Some("alpha"), 2).await.unwrap();
    let order: Vec<Uuid> = alpha_only.iter().map(|run| run.run_uuid).collect();
    assert_eq!(order, [alpha_runs[2], alpha_runs[1]]);
    assert!(store.list_runs(Some("gamma"), 10).await.unwrap().is_empty());

    let task = ResultRecord {
        duration_ms: 250,
        output_bytes: 4096,
        attempt: Some(2),
        ..result(beta_run, "first", true)
    };
    store.record_result(&task, 0).await.unwrap();
    let detail = store.run(beta_run).await.unwrap().unwrap();
    assert_eq!(detail.run.pipeline_name, "beta");
    assert_eq!(detail.run.kind, RunKind::Schedule);
    assert_eq!(detail.run.scheduled_for, Some(scheduled_for));
    assert_eq!(detail.task_runs.len(), 1);
    let row = &detail.task_runs[0];
    assert_eq!(row.task_run_uuid, task.task_run_uuid);
    assert_eq!(row.result_uuid, task.result_uuid);
    assert_eq!(row.task_uuid, task.task_uuid);
    assert_eq!(row.task_name, "first");
    assert_eq!(row.task_type, "processor");
    assert_eq!(row.duration_ms, 250);
    assert_eq!(row.output_bytes, 4096);
    assert_eq!(row.attempt, Some(2));
    assert_eq!(row.batch_index, None);
    assert!(row.errors.is_empty());
    assert_eq!(
        row.executed_at.timestamp_millis(),
        task.executed_at.timestamp_millis()
    );

    assert!(store.run(Uuid::new_v4()).await.unwrap().is_none());
}

async fn statistics_dedup_and_percentiles(backend: Backend) {
    let test = TestStore::open(backend).await;
    let store = &*test.store;
    let pipeline_uuid = Uuid::new_v4();
    let other_pipeline = Uuid::new_v4();
    let base = Utc::now() - hours(1);
    let row = |pipeline: Uuid, run: Uuid, duration_ms: u64, minute: i64, ok: bool| StatisticsRow {
        result_uuid: Uuid::new_v4(),
        organization_uuid: Uuid::nil(),
        pipeline_uuid: pipeline,
        pipeline_run_uuid: run,
        task_uuid: Uuid::new_v4(),
        task_type: "processor".to_owned(),
        pipeline_type: "generic".to_owned(),
        is_initial_task: true,
        is_final_task: true,
        is_successful: ok,
        duration_ms,
        output_bytes: 10,
        errors: Vec::new(),
        executed_at: base + chrono::Duration::minutes(minute),
    };

    // Five runs of 100..500 ms, the newest last; each run has two tasks of half its length.
    let mut rows = Vec::new();
    for index in 0..5u64 {
        let run = Uuid::new_v4();
        let half = (index + 1) * 50;
        let minute = index as i64 * 2;
        rows.push(row(pipeline_uuid, run, half, minute, true));
        rows.push(row(pipeline_uuid, run, half, minute + 1, index != 4));
    }
    rows.push(row(other_pipeline, Uuid::new_v4(), 7, 0, true));
    assert_eq!(store.store_statistics(&rows).await.unwrap(), 11);
    assert_eq!(
        store.store_statistics(&rows[..3]).await.unwrap(),
        0,
        "a result uuid is stored once"
    );

    let statistics = store.pipeline_statistics(pipeline_uuid, 10).await.unwrap();
    assert_eq!(statistics.runs, 5);
    assert_eq!(statistics.successful_task_runs, 9);
    assert_eq!(statistics.failed_task_runs, 1);
    assert_eq!(statistics.duration_p50_ms, Some(300));
    assert_eq!(statistics.duration_p80_ms, Some(400));
    assert_eq!(statistics.duration_p95_ms, Some(500));

    let last_two = store.pipeline_statistics(pipeline_uuid, 2).await.unwrap();
    assert_eq!(last_two.duration_p50_ms, Some(400));
    assert_eq!(last_two.duration_p95_ms, Some(500));

    let unknown = store.pipeline_statistics(Uuid::new_v4(), 10).await.unwrap();
    assert_eq!(unknown.runs, 0);
    assert_eq!(unknown.duration_p50_ms, None);

    let recent = store.recent_run_durations(3).await.unwrap();
    let mine = recent
        .iter()
        .find(|(uuid, _)| *uuid == pipeline_uuid)
        .unwrap();
    assert_eq!(mine.1, [500, 400, 300], "newest first");
    let other = recent
        .iter()
        .find(|(uuid, _)| *uuid == other_pipeline)
        .unwrap();
    assert_eq!(other.1, [7]);
    assert_eq!(recent.len(), 2);
}

/// Four publishers claim 300 due runs in small batches at the same time; every run goes to
/// exactly one of them.
async fn concurrent_claims_take_disjoint_runs(backend: Backend) {
    let test = TestStore::open(backend).await;
    let hourly = pipeline("hourly", Some("* * * * *|UTC"), 1);
    test.store
        .apply_pipelines(std::slice::from_ref(&hourly))
        .await
        .unwrap();
    let now = now_ms();
    let fire_times: Vec<DateTime<Utc>> = (1..=300)
        .map(|minute| now - chrono::Duration::minutes(minute))
        .collect();
    test.store
        .insert_scheduled_runs(hourly.uuid, "* * * * *|UTC", &fire_times)
        .await
        .unwrap();

    let mut publishers = Vec::new();
    for index in 0..4 {
        let store = test.store.clone();
        publishers.push(tokio::spawn(async move {
            let claimer = format!("publisher-{index}");
            let mut claimed = Vec::new();
            loop {
                let batch = store
                    .claim_due_runs(&claimer, now, Duration::from_secs(3600), 7)
                    .await
                    .unwrap();
                if batch.is_empty() {
                    break;
                }
                claimed.extend(batch.iter().map(|run| run.id));
            }
            claimed
        }));
    }
    let mut all = Vec::new();
    for publisher in publishers {
        all.extend(publisher.await.unwrap());
    }
    let distinct: BTreeSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), 300, "claims in all");
    assert_eq!(distinct.len(), 300, "distinct runs claimed");
}

/// Fifty results of one run recorded at the same time: each is counted once and exactly one
/// of them ends the run.
async fn concurrent_results_lose_no_update(backend: Backend) {
    let test = TestStore::open(backend).await;
    let chain = pipeline("wide", None, 1);
    let run = Uuid::new_v4();
    test.store
        .start_run(new_run(&chain, run, 50))
        .await
        .unwrap();

    let mut listeners = Vec::new();
    for index in 0..50 {
        let store = test.store.clone();
        listeners.push(tokio::spawn(async move {
            let recorded = result(run, &format!("task-{index}"), true);
            store.record_result(&recorded, 0).await.unwrap()
        }));
    }
    let mut finished = 0;
    for listener in listeners {
        let outcome = listener.await.unwrap();
        assert!(!outcome.duplicate);
        if outcome.finished.is_some() {
            finished += 1;
        }
    }
    assert_eq!(finished, 1, "exactly one result ends the run");
    let detail = test.store.run(run).await.unwrap().unwrap();
    assert_eq!(detail.run.task_results, 50);
    assert_eq!(detail.run.outstanding, 0);
    assert_eq!(detail.run.status, RunStatus::Succeeded);
}

#[tokio::test]
async fn postgres_connection_error_hides_password() {
    let url = format!("{}?application_name=suite", url_with_database("ylem"));
    let err = match PgStore::open(&url, 1, Some("wrong-secret-password")).await {
        Ok(_) => panic!("a wrong password was accepted"),
        Err(err) => format!("{err:#}"),
    };
    assert!(err.contains("failed to connect"), "{err}");
    assert!(err.contains("127.0.0.1"), "{err}");
    assert!(!err.contains("wrong-secret-password"), "{err}");

    let with_password = url.replace("://ylem@", "://ylem:inline-secret@");
    let err = match PgStore::open(&with_password, 1, None).await {
        Ok(_) => panic!("a wrong password in the URL was accepted"),
        Err(err) => format!("{err:#}"),
    };
    assert!(!err.contains("inline-secret"), "{err}");
}

#[tokio::test]
async fn postgres_missing_password_variable_is_named() {
    let variable = format!("YLEM_TEST_UNSET_{}", Uuid::new_v4().simple());
    let config = StoreConfig {
        url: postgres_url(),
        max_connections: 1,
        password_env: Some(variable.clone()),
    };
    let err = match store::open_configured(&config).await {
        Ok(_) => panic!("opened without the password variable"),
        Err(err) => format!("{err:#}"),
    };
    assert!(err.contains(&variable), "{err}");
    assert!(err.contains("store.password_env"), "{err}");
}
