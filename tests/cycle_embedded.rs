//! The whole task-processing cycle on the embedded bus: runs from publisher to trigger
//! listener, with real HTTP receivers and a real SQLite source.

mod common;

use common::{closed_port, wait_for, Receiver, TestEnv};
use std::time::Duration;
use ylem_runtime::store::RunStatus;

const SALES: &[&str] = &[
    "CREATE TABLE sales (region TEXT, amount INTEGER)",
    "INSERT INTO sales VALUES ('north', 120), ('south', 80), ('east', 300), ('west', 50)",
];

fn branching_pipeline(threshold: u32, receiver: &Receiver) -> String {
    format!(
        r#"
name: sales-check
tasks:
  - name: load
    type: query
    source: shop
    sql: SELECT region, amount FROM sales ORDER BY region
  - name: big_total
    type: condition
    expression: SUM(amount) > {threshold}
  - name: summarize
    type: processor
    jq: '{{regions: length, total: (map(.amount) | add)}}'
  - name: report
    type: notification
    channel: webhook
    url: {report}
    body: "total {{{{total}}}} over {{{{regions}}}} regions"
  - name: too_small
    type: api_call
    url: {small}
    method: POST
triggers:
  - {{from: load, to: big_total}}
  - {{from: big_total, to: summarize, type: condition_true}}
  - {{from: summarize, to: report}}
  - {{from: big_total, to: too_small, type: condition_false}}
"#,
        report = receiver.url("/report"),
        small = receiver.url("/small"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn condition_true_branch_runs_to_webhook() {
    let receiver = Receiver::start().await;
    let mut env = TestEnv::start_with_sources(&[("shop", SALES)], |_, _| {}).await;
    env.apply(&branching_pipeline(100, &receiver)).await;

    let run = env.run("sales-check", None).await;
    let detail = env.finished_run(run).await;

    assert_eq!(detail.run.status, RunStatus::Succeeded, "{detail:#?}");
    let names: Vec<&str> = detail
        .task_runs
        .iter()
        .map(|task| task.task_name.as_str())
        .collect();
    assert_eq!(names, ["load", "big_total", "summarize", "report"]);
    assert!(detail.task_runs[0].output_bytes > 0);
    let reports = receiver.received_at("/report");
    assert_eq!(reports.len(), 1);
    let body = reports[0].json();
    assert_eq!(body["body"], "total 550 over 4 regions");
    assert!(receiver.received_at("/small").is_empty());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn condition_false_branch_sends_input_through() {
    let receiver = Receiver::start().await;
    let mut env = TestEnv::start_with_sources(&[("shop", SALES)], |_, _| {}).await;
    env.apply(&branching_pipeline(1000, &receiver)).await;

    let run = env.run("sales-check", None).await;
    let detail = env.finished_run(run).await;

    assert_eq!(detail.run.status, RunStatus::Succeeded, "{detail:#?}");
    let names: Vec<&str> = detail
        .task_runs
        .iter()
        .map(|task| task.task_name.as_str())
        .collect();
    assert_eq!(names, ["load", "big_total", "too_small"]);
    let posts = receiver.received_at("/small");
    assert_eq!(posts.len(), 1);
    // A condition passes its own input on, so the API call receives the query rows.
    let rows = posts[0].json();
    assert_eq!(rows.as_array().map(Vec::len), Some(4));
    assert_eq!(rows[0]["region"], "east");
    assert!(receiver.received_at("/report").is_empty());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn for_each_runs_downstream_per_item() {
    let receiver = Receiver::start().await;
    let mut env = TestEnv::start_with_sources(&[("shop", SALES)], |_, _| {}).await;
    let yaml = format!(
        r#"
name: per-region
tasks:
  - name: load
    type: query
    source: shop
    sql: SELECT region, amount FROM sales
  - name: each
    type: for_each
  - name: post
    type: api_call
    url: {url}
triggers:
  - {{from: load, to: each}}
  - {{from: each, to: post}}
"#,
        url = receiver.url("/item")
    );
    env.apply(&yaml).await;

    let run = env.run("per-region", None).await;
    let detail = env.finished_run(run).await;

    assert_eq!(detail.run.status, RunStatus::Succeeded, "{detail:#?}");
    let items = receiver.received_at("/item");
    assert_eq!(items.len(), 4);
    let mut regions: Vec<String> = items
        .iter()
        .map(|item| item.json()[0]["region"].as_str().unwrap().to_owned())
        .collect();
    regions.sort();
    assert_eq!(regions, ["east", "north", "south", "west"]);
    let each_results = detail
        .task_runs
        .iter()
        .filter(|task| task.task_name == "each")
        .count();
    let post_results = detail
        .task_runs
        .iter()
        .filter(|task| task.task_name == "post")
        .count();
    assert_eq!(each_results, 4);
    assert_eq!(post_results, 4);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_query_fails_run() {
    let mut env = TestEnv::start_with_sources(&[("shop", SALES)], |_, _| {}).await;
    env.apply(
        r#"
name: broken-query
tasks:
  - name: load
    type: query
    source: shop
    sql: SELECT missing_column FROM sales
  - name: after
    type: processor
    jq: '.'
triggers:
  - {from: load, to: after}
"#,
    )
    .await;

    let run = env.run("broken-query", None).await;
    let detail = env.finished_run(run).await;

    assert_eq!(detail.run.status, RunStatus::Failed);
    assert_eq!(detail.task_runs.len(), 1);
    let load = &detail.task_runs[0];
    assert_eq!(load.status, "failed");
    assert!(load.errors[0].contains("[10000]"), "{:?}", load.errors);
    assert!(
        load.errors[0].contains("missing_column"),
        "{:?}",
        load.errors
    );
    let error = detail.run.error.as_deref().unwrap_or_default();
    assert!(error.contains("task load failed"), "{error}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_http_target_fails_run() {
    let port = closed_port().await;
    let mut env = TestEnv::start(|_, _| {}).await;
    env.apply(&format!(
        r#"
name: down-target
tasks:
  - name: call
    type: api_call
    url: http://127.0.0.1:{port}/ingest
"#
    ))
    .await;

    let run = env.run("down-target", Some(r#"{"id": 1}"#)).await;
    let detail = env.finished_run(run).await;

    assert_eq!(detail.run.status, RunStatus::Failed);
    let call = &detail.task_runs[0];
    assert_eq!(call.status, "failed");
    assert!(call.errors[0].contains("[10200]"), "{:?}", call.errors);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_error_status_fails_run() {
    let receiver = Receiver::start().await;
    receiver.set_status(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    let mut env = TestEnv::start(|_, _| {}).await;
    env.apply(&format!(
        "name: error-target\ntasks:\n  - name: call\n    type: api_call\n    url: {}\n",
        receiver.url("/fail")
    ))
    .await;

    let run = env.run("error-target", Some("{}")).await;
    let detail = env.finished_run(run).await;

    assert_eq!(detail.run.status, RunStatus::Failed);
    assert!(
        detail.task_runs[0].errors[0].contains("[10201]"),
        "{:?}",
        detail.task_runs[0].errors
    );
    assert_eq!(receiver.received_at("/fail").len(), 1);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_task_record_fails_its_run_and_partition_moves_on() {
    let receiver = Receiver::start().await;
    let mut env = TestEnv::start(|_, _| {}).await;
    let pipeline = env
        .apply(&format!(
            "name: ping\ntasks:\n  - name: call\n    type: api_call\n    url: {}\n",
            receiver.url("/ping")
        ))
        .await;

    // A run whose only task message is broken: its input is not base64.
    let broken_run = uuid::Uuid::new_v4();
    env.store
        .start_run(ylem_runtime::store::NewRun {
            run_uuid: broken_run,
            pipeline_uuid: pipeline,
            pipeline_name: "ping".to_owned(),
            kind: ylem_runtime::store::RunKind::Api,
            outstanding: 1,
            scheduled_for: None,
        })
        .await
        .unwrap();
    let payload = serde_json::json!({
        "headers": {"X-Message-Name": "tasks.call_api"},
        "message": {"pipeline_run_uuid": broken_run, "pipeline_uuid": pipeline, "input": "***not base64***"}
    });
    let topic = env.runtime.config.topics.task_runs.clone();
    let key = broken_run.to_string();
    ylem_runtime::transport::Transport::send(
        &env.bus,
        ylem_runtime::transport::OutgoingRecord::keyed(
            topic.clone(),
            key.clone(),
            payload.to_string().into_bytes(),
        ),
    )
    .await
    .unwrap();
    // Not JSON at all, on the same partition.
    ylem_runtime::transport::Transport::send(
        &env.bus,
        ylem_runtime::transport::OutgoingRecord::keyed(topic, key, b"\x00\x01garbage".to_vec()),
    )
    .await
    .unwrap();

    let detail = env.finished_run(broken_run).await;
    assert_eq!(detail.run.status, RunStatus::Failed);
    assert!(
        detail.task_runs[0].errors[0].contains("[100]"),
        "{:?}",
        detail.task_runs[0].errors
    );

    // Later runs still complete.
    let run = env.run("ping", Some("{}")).await;
    let detail = env.finished_run(run).await;
    assert_eq!(detail.run.status, RunStatus::Succeeded);
    wait_for("the ping to arrive", Duration::from_secs(5), || {
        let count = receiver.received_at("/ping").len();
        async move { (count == 1).then_some(()) }
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_task_input_fails_with_code() {
    let mut env = TestEnv::start(|_, _| {}).await;
    env.apply(
        r#"
name: not-an-array
tasks:
  - name: each
    type: for_each
"#,
    )
    .await;

    let run = env.run("not-an-array", Some(r#"{"a": 1}"#)).await;
    let detail = env.finished_run(run).await;

    assert_eq!(detail.run.status, RunStatus::Failed);
    assert!(
        detail.task_runs[0].errors[0].contains("[10600]"),
        "{:?}",
        detail.task_runs[0].errors
    );
    env.stop().await;
}
