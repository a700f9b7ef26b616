//! The whole task-processing cycle, on the embedded bus and on a real Kafka broker: runs from
//! publisher to trigger listener, with real HTTP receivers and a real SQLite source.

mod common;

use common::{closed_port, wait_for, Backend, Receiver, TestEnv};
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

async fn condition_true_branch_runs_to_webhook(backend: Backend) {
    let receiver = Receiver::start().await;
    let mut env = TestEnv::start_with_sources(backend, &[("shop", SALES)], |_, _| {}).await;
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

async fn condition_false_branch_sends_input_through(backend: Backend) {
    let receiver = Receiver::start().await;
    let mut env = TestEnv::start_with_sources(backend, &[("shop", SALES)], |_, _| {}).await;
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

async fn for_each_runs_downstream_per_item(backend: Backend) {
    let receiver = Receiver::start().await;
    let mut env = TestEnv::start_with_sources(backend, &[("shop", SALES)], |_, _| {}).await;
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

async fn failing_query_fails_run(backend: Backend) {
    let mut env = TestEnv::start_with_sources(backend, &[("shop", SALES)], |_, _| {}).await;
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

async fn unreachable_http_target_fails_run(backend: Backend) {
    let port = closed_port().await;
    let mut env = TestEnv::start(backend, |_, _| {}).await;
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

async fn http_error_status_fails_run(backend: Backend) {
    let receiver = Receiver::start().await;
    receiver.set_status(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    let mut env = TestEnv::start(backend, |_, _| {}).await;
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
    // A 500 is retryable, so each of the default three attempts reaches the target.
    assert_eq!(detail.task_runs[0].errors.len(), 3);
    assert_eq!(receiver.received_at("/fail").len(), 3);
    env.stop().await;
}

async fn malformed_task_record_fails_its_run_and_partition_moves_on(backend: Backend) {
    let receiver = Receiver::start().await;
    let mut env = TestEnv::start(backend, |_, _| {}).await;
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
    let topic_name = topic.clone();
    let key = broken_run.to_string();
    let dead_letter_topic = format!("{topic}.dlq");
    let probe = env
        .transport
        .subscribe(
            &format!("probe-{}", uuid::Uuid::new_v4()),
            std::slice::from_ref(&dead_letter_topic),
        )
        .await
        .unwrap();
    ylem_runtime::transport::Transport::send(
        &*env.transport,
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
        &*env.transport,
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

    // The record that is not JSON waits in the dead-letter topic with its reason.
    let dead = loop {
        let event = tokio::time::timeout(Duration::from_secs(20), probe.next_event())
            .await
            .expect("a dead letter arrives")
            .unwrap();
        if let ylem_runtime::transport::ConsumerEvent::Record(record) = event {
            break record;
        }
    };
    assert_eq!(dead.payload, b"\x00\x01garbage");
    assert_eq!(dead.key_text(), broken_run.to_string());
    let reason = String::from_utf8_lossy(dead.header("x-dead-letter-reason").unwrap()).into_owned();
    assert!(reason.contains("not a JSON envelope"), "{reason}");
    assert_eq!(dead.header("x-original-topic"), Some(topic_name.as_bytes()));

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

async fn bad_task_input_fails_with_code(backend: Backend) {
    let mut env = TestEnv::start(backend, |_, _| {}).await;
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

async fn for_each_over_empty_array_runs_nothing_after(backend: Backend) {
    let receiver = Receiver::start().await;
    let mut env = TestEnv::start(backend, |_, _| {}).await;
    env.apply(&format!(
        "name: empty-items\ntasks:\n  - {{name: each, type: for_each}}\n  - {{name: post, type: api_call, url: '{}'}}\ntriggers:\n  - {{from: each, to: post}}\n",
        receiver.url("/item")
    ))
    .await;

    let run = env.run("empty-items", Some("[]")).await;
    let detail = env.finished_run(run).await;

    assert_eq!(detail.run.status, RunStatus::Succeeded, "{detail:#?}");
    let names: Vec<&str> = detail
        .task_runs
        .iter()
        .map(|task| task.task_name.as_str())
        .collect();
    assert_eq!(names, ["each"]);
    assert!(receiver.received_at("/item").is_empty());
    env.stop().await;
}

const GREETING: &str = r#"
name: greeting
tasks:
  - name: shape
    type: processor
    jq: '{greeting: ("hello " + .name)}'
  - name: check
    type: condition
    expression: greeting == "hello ylem"
triggers:
  - {from: shape, to: check, type: output}
"#;

async fn task_message_from_ylem_runs(backend: Backend) {
    let mut env = TestEnv::start(backend, |_, _| {}).await;
    env.apply(GREETING).await;
    let pipeline = ylem_runtime::pipeline::parse_pipeline("greeting.yaml", GREETING).unwrap();
    let shape = pipeline.task_by_name("shape").unwrap();

    // As the Ylem publisher writes it: nil task run and creator ids, Go-style meta with nil
    // slices, base64 input, the task fields flattened in, and the run uuid as the key.
    let run = uuid::Uuid::new_v4();
    let payload = serde_json::json!({
        "headers": {"X-Message-Name": "tasks.process_data"},
        "message": {
            "pipeline_type": "generic",
            "pipeline_run_uuid": run,
            "task_run_uuid": "00000000-0000-0000-0000-000000000000",
            "task_uuid": shape.uuid,
            "pipeline_uuid": pipeline.uuid,
            "organization_uuid": "2b0a2f4e-3f7d-4a38-9a55-6f1f3f0b8c11",
            "creator_uuid": "00000000-0000-0000-0000-000000000000",
            "task_name": "shape",
            "is_initial_task": true,
            "is_final_task": false,
            "input": "eyJuYW1lIjoieWxlbSJ9",
            "meta": {
                "SqlQueryColumnOrder": null,
                "InputCount": 0,
                "EnvVars": null,
                "PipelineRunConfig": {
                    "task_ids": {"type": "", "ids": null},
                    "task_trigger_ids": {"type": "", "ids": null}
                }
            },
            "expression": "{greeting: (\"hello \" + .name)}",
            "strategy": ""
        }
    });
    let topic = env.runtime.config.topics.task_runs.clone();
    env.transport
        .send(ylem_runtime::transport::OutgoingRecord::keyed(
            topic,
            run.to_string(),
            payload.to_string().into_bytes(),
        ))
        .await
        .unwrap();

    let detail = env.finished_run(run).await;
    assert_eq!(detail.run.status, RunStatus::Succeeded, "{detail:#?}");
    let names: Vec<&str> = detail
        .task_runs
        .iter()
        .map(|task| task.task_name.as_str())
        .collect();
    assert_eq!(names, ["shape", "check"]);
    assert_eq!(detail.run.kind, ylem_runtime::store::RunKind::External);
    env.stop().await;
}

on_both_transports!(
    for_each_over_empty_array_runs_nothing_after,
    task_message_from_ylem_runs,
    condition_true_branch_runs_to_webhook,
    condition_false_branch_sends_input_through,
    for_each_runs_downstream_per_item,
    failing_query_fails_run,
    unreachable_http_target_fails_run,
    http_error_status_fails_run,
    malformed_task_record_fails_its_run_and_partition_moves_on,
    bad_task_input_fails_with_code,
);
