//! Task timeouts, retries with backoff and run cancellation, on both transports.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::{wait_for, Backend, Receiver, TestEnv};
use ylem_runtime::store::RunStatus;

fn fast_retries(config: &mut ylem_runtime::config::Config, _: &std::path::Path) {
    config.task_runner.retry_backoff_min_ms = 100;
    config.task_runner.retry_backoff_max_ms = 400;
}

async fn hung_call_is_retried_until_target_recovers(backend: Backend) {
    let receiver = Receiver::start().await;
    receiver.set_delay(Duration::from_secs(5));
    let mut env = TestEnv::start(backend, fast_retries).await;
    env.apply(&format!(
        "name: hung\ntasks:\n  - name: call\n    type: api_call\n    url: {}\n    timeout_ms: 300\n    max_attempts: 5\n",
        receiver.url("/hung")
    ))
    .await;

    let run = env.run("hung", Some("{}")).await;
    wait_for("a timed-out attempt", Duration::from_secs(20), || {
        let count = receiver.received_at("/hung").len();
        async move { (count >= 2).then_some(()) }
    })
    .await;
    receiver.set_delay(Duration::ZERO);

    let detail = env.finished_run(run).await;
    assert_eq!(detail.run.status, RunStatus::Succeeded, "{detail:#?}");
    let call = &detail.task_runs[0];
    assert_eq!(call.status, "succeeded");
    assert!(call.attempt.unwrap() >= 2, "{call:?}");
    assert!(
        call.errors[0].contains("attempt 1 of 5"),
        "{:?}",
        call.errors
    );
    assert!(call.errors[0].contains("timed out"), "{:?}", call.errors);
    env.stop().await;
}

async fn exhausted_attempts_fail_with_every_error(backend: Backend) {
    let receiver = Receiver::start().await;
    receiver.set_status(StatusCode::SERVICE_UNAVAILABLE);
    let mut env = TestEnv::start(backend, fast_retries).await;
    env.apply(&format!(
        "name: unavailable\ntasks:\n  - name: call\n    type: api_call\n    url: {}\n    max_attempts: 3\n",
        receiver.url("/down")
    ))
    .await;

    let run = env.run("unavailable", Some("{}")).await;
    let detail = env.finished_run(run).await;

    assert_eq!(detail.run.status, RunStatus::Failed);
    assert_eq!(detail.task_runs.len(), 1, "one result for the task run");
    let errors = &detail.task_runs[0].errors;
    assert_eq!(errors.len(), 3, "{errors:?}");
    for (index, error) in errors.iter().enumerate() {
        assert!(
            error.contains(&format!("attempt {} of 3", index + 1)),
            "{errors:?}"
        );
        assert!(error.contains("[10201]"), "{errors:?}");
    }
    assert_eq!(receiver.received_at("/down").len(), 3);
    env.stop().await;
}

async fn permanent_failure_is_not_retried(backend: Backend) {
    let receiver = Receiver::start().await;
    receiver.set_status(StatusCode::NOT_FOUND);
    let mut env = TestEnv::start(backend, fast_retries).await;
    env.apply(&format!(
        "name: missing\ntasks:\n  - name: call\n    type: api_call\n    url: {}\n",
        receiver.url("/missing")
    ))
    .await;

    let run = env.run("missing", Some("{}")).await;
    let detail = env.finished_run(run).await;
    assert_eq!(detail.run.status, RunStatus::Failed);
    assert_eq!(detail.task_runs[0].errors.len(), 1);
    assert_eq!(receiver.received_at("/missing").len(), 1);
    env.stop().await;
}

async fn cancel_skips_queued_tasks_and_retries(backend: Backend) {
    let receiver = Receiver::start().await;
    receiver.set_status(StatusCode::SERVICE_UNAVAILABLE);
    let mut env = TestEnv::start(backend, |config, folder| {
        fast_retries(config, folder);
        config.task_runner.retry_backoff_min_ms = 1_000;
        config.task_runner.retry_backoff_max_ms = 1_000;
    })
    .await;
    let url = receiver.url("/flaky");
    env.apply(&format!(
        "name: flaky\ntasks:\n  - {{name: first, type: api_call, url: '{url}', max_attempts: 10}}\n  - {{name: second, type: api_call, url: '{url}'}}\ntriggers:\n  - {{from: first, to: second}}\n"
    ))
    .await;

    let run = env.run("flaky", Some("{}")).await;
    wait_for("the first attempt", Duration::from_secs(20), || {
        let count = receiver.received_at("/flaky").len();
        async move { (count >= 1).then_some(()) }
    })
    .await;
    assert_eq!(
        env.store.cancel_run(run).await.unwrap(),
        Some(RunStatus::Cancelled)
    );
    let attempts_at_cancel = receiver.received_at("/flaky").len();
    receiver.set_status(StatusCode::OK);

    // The retry that was already scheduled wakes up, finds the run cancelled and stops.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(receiver.received_at("/flaky").len() <= attempts_at_cancel + 1);
    let detail = env.store.run(run).await.unwrap().unwrap();
    assert_eq!(detail.run.status, RunStatus::Cancelled);
    assert!(detail
        .task_runs
        .iter()
        .all(|task| task.task_name != "second"));
    env.stop().await;
}

async fn cancel_before_start_never_publishes(backend: Backend) {
    let receiver = Receiver::start().await;
    let mut env = TestEnv::prepare(backend, |_, _| {}).await;
    env.apply(&format!(
        "name: never\ntasks:\n  - name: call\n    type: api_call\n    url: {}\n",
        receiver.url("/never")
    ))
    .await;
    let run = env.run("never", Some("{}")).await;
    assert_eq!(
        env.store.cancel_run(run).await.unwrap(),
        Some(RunStatus::Cancelled)
    );

    env.start_stages(&ylem_runtime::daemon::Stage::ALL).await;
    let later = env.run("never", Some("{}")).await;
    assert_eq!(
        env.finished_run(later).await.run.status,
        RunStatus::Succeeded
    );
    assert_eq!(
        receiver.received_at("/never").len(),
        1,
        "only the later run called"
    );
    assert_eq!(
        env.store.run(run).await.unwrap().unwrap().run.status,
        RunStatus::Cancelled
    );
    env.stop().await;
}

on_both_transports!(
    hung_call_is_retried_until_target_recovers,
    exhausted_attempts_fail_with_every_error,
    permanent_failure_is_not_retried,
    cancel_skips_queued_tasks_and_retries,
    cancel_before_start_never_publishes,
);
