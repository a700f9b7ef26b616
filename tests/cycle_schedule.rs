//! Scheduled runs across daylight-saving changes, from generator to finished run.

mod common;

use chrono::{DateTime, TimeZone, Utc};
use common::{wait_for, TestEnv};
use std::collections::BTreeSet;
use std::time::Duration;
use ylem_runtime::actors::schedule_generator::generate_once;
use ylem_runtime::daemon::Stage;
use ylem_runtime::store::RunKind;

fn utc(year: i32, month: u32, day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(year, month, day, hour, minute, 0)
        .unwrap()
}

const NIGHTLY: &str = r#"
name: nightly
schedule:
  cron: "30 2 * * *"
  timezone: Europe/Amsterdam
tasks:
  - name: echo
    type: processor
    jq: '.'
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nightly_schedule_fires_once_per_fire_time_across_dst() {
    let mut env = TestEnv::prepare(|_, _| {}).await;
    let pipeline = env.apply(NIGHTLY).await;
    let horizon = chrono::Duration::hours(48);

    // Spring forward: 2026-03-29 02:00 CET jumps to 03:00 CEST, so 02:30 does not exist that
    // night and the run fires at the first instant after the gap.
    let spring_now = utc(2026, 3, 28, 0, 0);
    assert_eq!(
        generate_once(&*env.store, spring_now, horizon)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        generate_once(&*env.store, spring_now, horizon)
            .await
            .unwrap(),
        0
    );

    // Fall back: 2026-10-25 03:00 CEST returns to 02:00 CET, so 02:30 happens twice and fires
    // at its first occurrence only.
    let fall_now = utc(2026, 10, 24, 0, 0);
    assert_eq!(
        generate_once(&*env.store, fall_now, horizon).await.unwrap(),
        2
    );

    // A second generator computing the same fire times adds nothing.
    let again = env
        .store
        .insert_scheduled_runs(
            pipeline,
            "30 2 * * *@Europe/Amsterdam",
            &[utc(2026, 3, 28, 1, 30), utc(2026, 10, 25, 0, 30)],
        )
        .await
        .unwrap();
    assert_eq!(again, 0);

    // Every fire time is in the past, so the publisher starts them all at once.
    env.start_stages(&[
        Stage::Publisher,
        Stage::Balancer,
        Stage::Runner,
        Stage::Triggers,
    ])
    .await;
    let store = env.store.clone();
    let runs = wait_for(
        "four finished scheduled runs",
        Duration::from_secs(30),
        || {
            let store = store.clone();
            async move {
                let runs = store.list_runs(Some("nightly"), 100).await.unwrap();
                (runs.len() >= 4 && runs.iter().all(|run| run.status.is_terminal())).then_some(runs)
            }
        },
    )
    .await;

    let expected: BTreeSet<DateTime<Utc>> = [
        utc(2026, 3, 28, 1, 30),
        utc(2026, 3, 29, 1, 0),
        utc(2026, 10, 24, 0, 30),
        utc(2026, 10, 25, 0, 30),
    ]
    .into();
    let fired: Vec<DateTime<Utc>> = runs.iter().filter_map(|run| run.scheduled_for).collect();
    let distinct: BTreeSet<DateTime<Utc>> = fired.iter().copied().collect();
    assert_eq!(fired.len(), 4, "{fired:?}");
    assert_eq!(distinct, expected);
    assert!(runs.iter().all(|run| run.kind == RunKind::Schedule));

    // Later publisher polls find nothing left to start.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        env.store
            .list_runs(Some("nightly"), 100)
            .await
            .unwrap()
            .len(),
        4
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_schedule_replaces_only_its_future_runs() {
    let env = TestEnv::prepare(|_, _| {}).await;
    let pipeline = env.apply(NIGHTLY).await;
    let now = Utc::now();
    let generated = generate_once(&*env.store, now, chrono::Duration::hours(48))
        .await
        .unwrap();
    assert_eq!(generated, 2);
    let manual = env.run("nightly", None).await;

    let changed = NIGHTLY.replace("30 2 * * *", "0 4 * * *");
    env.apply(&changed).await;
    let regenerated = generate_once(&*env.store, now, chrono::Duration::hours(48))
        .await
        .unwrap();
    assert_eq!(regenerated, 2);

    // The manual run is still queued and due; the old schedule's runs are gone.
    let claimed = env
        .store
        .claim_due_runs(
            "test",
            now + chrono::Duration::hours(49),
            Duration::from_secs(60),
            100,
        )
        .await
        .unwrap();
    let manual_claimed = claimed.iter().filter(|run| run.run_uuid == manual).count();
    assert_eq!(manual_claimed, 1);
    let scheduled: Vec<_> = claimed
        .iter()
        .filter(|run| run.kind == RunKind::Schedule)
        .collect();
    assert_eq!(scheduled.len(), 2);
    assert!(scheduled.iter().all(
        |run| run.pipeline_uuid == pipeline && run.execute_at.format("%M").to_string() == "00"
    ));
}
