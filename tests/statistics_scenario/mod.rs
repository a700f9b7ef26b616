//! The statistics scenario both backends must pass: real pipeline runs with varied task
//! durations and some failures, then every statistics query compared with values computed
//! here from the task runs the store recorded.
#![allow(dead_code)]

use std::time::Duration;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::common::{wait_for, Receiver, TestEnv};
use ylem_runtime::statistics::StatisticsStore;
use ylem_runtime::store::{quantile, RunDetail, TaskRunRow};

pub const PIPELINE: &str = "timed-calls";

/// Delay of the HTTP target per run, in ms, and whether that run's call fails.
const RUNS: [(u64, bool); 7] = [
    (5, false),
    (60, false),
    (20, true),
    (45, false),
    (10, false),
    (80, true),
    (30, false),
];

/// A pipeline whose second task calls `receiver`, so it takes at least the receiver's delay.
pub fn pipeline_yaml(receiver: &Receiver) -> String {
    format!(
        "name: {PIPELINE}\ntasks:\n  - name: prepare\n    type: processor\n    jq: '.'\n  - name: call\n    type: api_call\n    url: {}\ntriggers:\n  - {{from: prepare, to: call}}\n",
        receiver.url("/timed")
    )
}

/// Runs the pipeline once per entry of [`RUNS`], one after another, and returns the runs as
/// the store recorded them.
pub async fn run_pipeline(env: &TestEnv, receiver: &Receiver) -> Vec<RunDetail> {
    let mut runs = Vec::new();
    for (delay_ms, fails) in RUNS {
        receiver.set_delay(Duration::from_millis(delay_ms));
        receiver.set_status(if fails {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        });
        let run = env.run(PIPELINE, Some("{}")).await;
        runs.push(env.finished_run(run).await);
    }
    runs
}

pub fn task_runs(runs: &[RunDetail]) -> Vec<&TaskRunRow> {
    runs.iter().flat_map(|run| run.task_runs.iter()).collect()
}

/// Waits until the statistics backend counts every task run of `runs`.
pub async fn wait_until_stored(
    statistics: &dyn StatisticsStore,
    pipeline_uuid: Uuid,
    runs: &[RunDetail],
) {
    let expected = task_runs(runs).len() as u64;
    wait_for(
        &format!("{expected} task runs in the statistics backend"),
        Duration::from_secs(60),
        || async move {
            let counts = statistics.outcome_counts(pipeline_uuid, None).await.ok()?;
            (counts.successful_task_runs + counts.failed_task_runs == expected).then_some(())
        },
    )
    .await;
}

/// The time of a run's newest task run, which orders runs newest first.
fn last_executed(run: &RunDetail) -> DateTime<Utc> {
    run.task_runs
        .iter()
        .map(|task| task.executed_at)
        .max()
        .expect("a finished run has task runs")
}

/// Run durations of the newest `last_runs` runs with task runs at or after `since`.
fn expected_durations(runs: &[RunDetail], since: DateTime<Utc>, last_runs: usize) -> Vec<u64> {
    let mut selected: Vec<(DateTime<Utc>, String, u64)> = runs
        .iter()
        .filter_map(|run| {
            let tasks: Vec<&TaskRunRow> = run
                .task_runs
                .iter()
                .filter(|task| task.executed_at >= since)
                .collect();
            if tasks.is_empty() {
                return None;
            }
            let last = tasks.iter().map(|task| task.executed_at).max()?;
            let duration = tasks.iter().map(|task| task.duration_ms).sum();
            Some((last, run.run.run_uuid.to_string(), duration))
        })
        .collect();
    selected.sort_by(|left, right| right.0.cmp(&left.0).then(right.1.cmp(&left.1)));
    selected
        .into_iter()
        .take(last_runs)
        .map(|(_, _, duration)| duration)
        .collect()
}

/// Checks percentiles, outcome counts, slow tasks and warm-up durations against `runs`.
pub async fn check_queries(
    statistics: &dyn StatisticsStore,
    pipeline_uuid: Uuid,
    runs: &[RunDetail],
) {
    let tasks = task_runs(runs);
    let failed_runs = runs
        .iter()
        .filter(|run| run.task_runs.iter().any(|task| task.status == "failed"))
        .count() as u64;
    let failed_tasks = tasks.iter().filter(|task| task.status == "failed").count() as u64;
    assert_eq!(failed_runs, 2, "the scenario makes two runs fail");

    // Every run, all time.
    let report = statistics
        .pipeline_report(pipeline_uuid, 100, None)
        .await
        .unwrap();
    let all = expected_durations(runs, DateTime::<Utc>::MIN_UTC, 100);
    assert_eq!(report.runs, runs.len() as u64);
    assert_eq!(report.failed_runs, failed_runs);
    assert_eq!(report.successful_runs, runs.len() as u64 - failed_runs);
    assert_eq!(report.failed_task_runs, failed_tasks);
    assert_eq!(
        report.successful_task_runs,
        tasks.len() as u64 - failed_tasks
    );
    assert_eq!(report.percentile_runs, runs.len() as u64);
    assert_eq!(report.duration_p50_ms, quantile(&all, 0.5));
    assert_eq!(report.duration_p80_ms, quantile(&all, 0.8));
    assert_eq!(report.duration_p95_ms, quantile(&all, 0.95));

    // The newest four runs only.
    let report = statistics
        .pipeline_report(pipeline_uuid, 4, None)
        .await
        .unwrap();
    let newest = expected_durations(runs, DateTime::<Utc>::MIN_UTC, 4);
    assert_eq!(report.percentile_runs, 4);
    assert_eq!(report.duration_p50_ms, quantile(&newest, 0.5));
    assert_eq!(report.duration_p80_ms, quantile(&newest, 0.8));
    assert_eq!(report.duration_p95_ms, quantile(&newest, 0.95));

    // A range that starts at the fourth run's first task run.
    let since = runs[3]
        .task_runs
        .iter()
        .map(|task| task.executed_at)
        .min()
        .unwrap();
    let in_range: Vec<&&TaskRunRow> = tasks
        .iter()
        .filter(|task| task.executed_at >= since)
        .collect();
    let counts = statistics
        .outcome_counts(pipeline_uuid, Some(since))
        .await
        .unwrap();
    assert_eq!(
        counts.failed_task_runs,
        in_range
            .iter()
            .filter(|task| task.status == "failed")
            .count() as u64
    );
    assert_eq!(
        counts.successful_task_runs,
        in_range
            .iter()
            .filter(|task| task.status == "succeeded")
            .count() as u64
    );
    let report = statistics
        .pipeline_report(pipeline_uuid, 100, Some(since))
        .await
        .unwrap();
    let ranged = expected_durations(runs, since, 100);
    assert_eq!(report.runs, ranged.len() as u64);
    assert_eq!(report.duration_p50_ms, quantile(&ranged, 0.5));
    assert_eq!(report.duration_p95_ms, quantile(&ranged, 0.95));

    // A range after every result.
    let future = Utc::now() + chrono::Duration::hours(1);
    let empty = statistics
        .pipeline_report(pipeline_uuid, 100, Some(future))
        .await
        .unwrap();
    assert_eq!(empty.runs, 0);
    assert_eq!(empty.duration_p50_ms, None);

    // Slow tasks above 25 ms, newest first, at most three.
    let threshold_ms = 25;
    let mut slow: Vec<&&TaskRunRow> = tasks
        .iter()
        .filter(|task| task.duration_ms > threshold_ms)
        .collect();
    slow.sort_by(|left, right| {
        right.executed_at.cmp(&left.executed_at).then(
            right
                .result_uuid
                .to_string()
                .cmp(&left.result_uuid.to_string()),
        )
    });
    let hour_ago = Utc::now() - chrono::Duration::hours(1);
    let found = statistics
        .slow_tasks(threshold_ms, hour_ago, 3)
        .await
        .unwrap();
    let expected: Vec<(Uuid, u64)> = slow
        .iter()
        .take(3)
        .map(|task| (task.result_uuid, task.duration_ms))
        .collect();
    let found_pairs: Vec<(Uuid, u64)> = found
        .iter()
        .map(|task| (task.result_uuid, task.duration_ms))
        .collect();
    assert!(
        slow.len() >= 3,
        "the scenario has at least three slow calls: {slow:?}"
    );
    assert_eq!(found_pairs, expected);
    assert!(found.iter().all(|task| task.pipeline_uuid == pipeline_uuid));
    assert!(found.iter().all(|task| task.task_type == "api_call"));
    let none = statistics
        .slow_tasks(threshold_ms, future, 3)
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:?}");

    // The load balancer's warm-up: the newest three run durations of the pipeline.
    let history = statistics.run_durations(None, None, 3).await.unwrap();
    let durations = history
        .iter()
        .find(|(pipeline, _)| *pipeline == pipeline_uuid)
        .map(|(_, durations)| durations.clone());
    assert_eq!(
        durations,
        Some(expected_durations(runs, DateTime::<Utc>::MIN_UTC, 3))
    );
}
