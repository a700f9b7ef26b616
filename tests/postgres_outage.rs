//! The PostgreSQL store going away while runs flow: stages wait the outage out in place, and
//! every run ends once, with every task result, after the server is back.
//!
//! The test stops and starts the server of `scripts/postgres.sh`, so it lives in a test binary
//! of its own: test binaries run one after another.

mod common;

use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::Duration;

use common::{wait_for, Backend, TestEnv};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use uuid::Uuid;
use ylem_runtime::store::RunStatus;
use ylem_runtime::supervision::ActorState;

fn postgres_url() -> String {
    std::env::var("YLEM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://ylem@127.0.0.1:15432/ylem".to_owned())
}

fn postgres_password() -> String {
    std::env::var("YLEM_TEST_POSTGRES_PASSWORD").unwrap_or_else(|_| "ylem-test".to_owned())
}

fn postgres_script(command: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/postgres.sh");
    let status = Command::new(script)
        .arg(command)
        .stdout(Stdio::null())
        .status()
        .expect("scripts/postgres.sh runs");
    assert!(status.success(), "scripts/postgres.sh {command} failed");
}

/// Creates an empty database for this test and returns its URL.
async fn create_database() -> String {
    let name = format!("outage_{}", Uuid::new_v4().simple());
    let options = PgConnectOptions::from_str(&postgres_url())
        .unwrap()
        .password(&postgres_password());
    let mut admin = options
        .connect()
        .await
        .expect("the test PostgreSQL server is running");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    let base = postgres_url();
    let (server, _) = base.rsplit_once('/').unwrap();
    format!("{server}/{name}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_loses_and_doubles_no_run() {
    let url = create_database().await;
    std::env::set_var("YLEM_TEST_OUTAGE_PASSWORD", postgres_password());
    let mut env = TestEnv::start(Backend::Embedded, |config, _| {
        config.store.url = url.clone();
        config.store.password_env = Some("YLEM_TEST_OUTAGE_PASSWORD".to_owned());
    })
    .await;
    env.apply(
        "name: steady\ntasks:\n  - {name: one, type: processor, jq: '.'}\n  - {name: two, type: processor, jq: '.'}\ntriggers:\n  - {from: one, to: two}\n",
    )
    .await;

    let mut runs = Vec::new();
    for _ in 0..5 {
        runs.push(env.run("steady", Some("{}")).await);
    }
    let first = env.finished_run(runs[0]).await;
    assert_eq!(first.run.status, RunStatus::Succeeded);

    postgres_script("stop");
    tokio::time::sleep(Duration::from_secs(3)).await;
    postgres_script("start");

    for _ in 0..5 {
        runs.push(env.run("steady", Some("{}")).await);
    }
    for run in &runs {
        let detail = env.finished_run_within(*run, Duration::from_secs(90)).await;
        assert_eq!(detail.run.status, RunStatus::Succeeded, "{detail:#?}");
        assert_eq!(detail.task_runs.len(), 2, "{detail:#?}");
    }
    let listed = env.store.list_runs(Some("steady"), 100).await.unwrap();
    assert_eq!(listed.len(), runs.len(), "no run was created twice");
    for stage in ["publisher", "triggers", "runner"] {
        let status = env.runtime.registry.get(stage).unwrap();
        assert_eq!(
            status.state,
            ActorState::Running,
            "stage {stage} kept running"
        );
    }
    wait_for("stages to stay up", Duration::from_secs(1), || async {
        Some(())
    })
    .await;
    env.stop().await;
}
