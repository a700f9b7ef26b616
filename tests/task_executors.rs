//! Task executors run against real components: SQLite files and HTTP servers on 127.0.0.1.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::routing::any;
use axum::Router;
use serde_json::json;
use ylem_runtime::config::Config;
use ylem_runtime::messages::{ErrorCode, TaskMessage};
use ylem_runtime::tasks::{execute, ExecutionContext, TaskFailure, TaskOutput};

/// One request received by the test server.
#[derive(Clone, Debug)]
struct ReceivedRequest {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

type Received = Arc<Mutex<Vec<ReceivedRequest>>>;

/// Starts a server that records every request. `/status/{code}` responds with that status and
/// a body naming it; any other path responds 200 with `pong`.
async fn start_server() -> (SocketAddr, Received) {
    let received: Received = Arc::default();
    let app = Router::new()
        .route("/status/{code}", any(respond_with_status))
        .fallback(respond_pong)
        .with_state(Arc::clone(&received));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (address, received)
}

fn record(received: &Received, method: Method, path: String, headers: HeaderMap, body: Bytes) {
    received.lock().unwrap().push(ReceivedRequest {
        method,
        path,
        headers,
        body,
    });
}

async fn respond_with_status(
    State(received): State<Received>,
    Path(code): Path<u16>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    record(&received, method, format!("/status/{code}"), headers, body);
    let status = StatusCode::from_u16(code).unwrap();
    (status, format!("server responded {code}"))
}

async fn respond_pong(
    State(received): State<Received>,
    uri: axum::http::Uri,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> &'static str {
    let path = uri
        .path_and_query()
        .map(|value| value.to_string())
        .unwrap_or_default();
    record(&received, method, path, headers, body);
    "pong"
}

fn context(config_text: &str) -> ExecutionContext {
    let config = Config::parse(config_text).unwrap();
    ExecutionContext::new(Arc::new(config)).unwrap()
}

fn task(message_name: &str, fields: serde_json::Value) -> TaskMessage {
    TaskMessage::from_json(message_name, fields).unwrap()
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn text(output: &TaskOutput) -> String {
    assert_eq!(output.outputs.len(), 1, "expected one output");
    String::from_utf8(output.outputs[0].clone()).unwrap()
}

/// Creates a SQLite file with a `penguins` table and returns its directory and a config
/// with the source `birds`.
async fn penguin_database() -> (tempfile::TempDir, String) {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("penguins.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE penguins (id INTEGER PRIMARY KEY, species TEXT, mass REAL, tagged BOOLEAN, photo BLOB, seen DATE);
         INSERT INTO penguins VALUES (1, 'Adelie', 3.75, 1, x'0102', '2024-05-01');
         INSERT INTO penguins VALUES (2, 'Gentoo', NULL, 0, NULL, '2024-05-02');",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let config = format!(
        "[sources.birds]\ntype = \"sqlite\"\nurl = \"sqlite://{}?mode=ro\"\n",
        path.display()
    );
    (directory, config)
}

fn run_query(sql: &str, source: &str, input: &[u8]) -> TaskMessage {
    task(
        "tasks.run_query",
        json!({"query": sql, "source": {"name": source}, "input": base64(input)}),
    )
}

#[tokio::test]
async fn query_returns_rows_in_select_order() {
    let (_directory, config) = penguin_database().await;
    let context = context(&config);
    let message = run_query(
        "SELECT species, id, mass, tagged, photo, seen FROM penguins ORDER BY id",
        "birds",
        b"",
    );

    let output = execute(&message, &context).await.unwrap();

    assert_eq!(
        text(&output),
        r#"[{"species":"Adelie","id":1,"mass":3.75,"tagged":true,"photo":"AQI=","seen":"2024-05-01"},{"species":"Gentoo","id":2,"mass":null,"tagged":false,"photo":null,"seen":"2024-05-02"}]"#
    );
    let expected_order: Vec<String> = ["species", "id", "mass", "tagged", "photo", "seen"]
        .map(String::from)
        .to_vec();
    assert_eq!(output.column_order, Some(expected_order));
}

#[tokio::test]
async fn query_templates_input_values() {
    let (_directory, config) = penguin_database().await;
    let context = context(&config);
    let message = run_query(
        "SELECT id FROM penguins WHERE id > {{ value }}",
        "birds",
        b"1",
    );

    let output = execute(&message, &context).await.unwrap();

    assert_eq!(text(&output), r#"[{"id":2}]"#);
}

#[tokio::test]
async fn query_without_rows_keeps_columns() {
    let (_directory, config) = penguin_database().await;
    let context = context(&config);
    let message = run_query(
        "SELECT id, species FROM penguins WHERE id > 100",
        "birds",
        b"",
    );

    let output = execute(&message, &context).await.unwrap();

    assert_eq!(text(&output), "[]");
    assert_eq!(
        output.column_order,
        Some(vec!["id".to_owned(), "species".to_owned()])
    );
}

#[tokio::test]
async fn query_sql_error_is_10000() {
    let (_directory, config) = penguin_database().await;
    let context = context(&config);
    let message = run_query("SELECT nope FROM penguins", "birds", b"");

    let failure = execute(&message, &context).await.unwrap_err();

    assert_eq!(failure.code, ErrorCode::QueryFailed);
    assert!(
        failure.message.contains("no such column"),
        "{}",
        failure.message
    );
    assert!(!failure.retryable);
}

#[tokio::test]
async fn query_unknown_source_is_10001() {
    let (_directory, config) = penguin_database().await;
    let context = context(&config);
    let message = run_query("SELECT 1", "warehouse", b"");

    let failure = execute(&message, &context).await.unwrap_err();

    assert_eq!(failure.code, ErrorCode::QueryConnection);
    assert!(
        failure.message.contains("[sources.warehouse]"),
        "{}",
        failure.message
    );
    assert!(failure.message.contains("birds"), "{}", failure.message);
}

#[tokio::test]
async fn query_missing_database_file_is_10001() {
    let directory = tempfile::tempdir().unwrap();
    let missing = directory.path().join("absent.db");
    let config = format!(
        "[sources.gone]\ntype = \"sqlite\"\nurl = \"sqlite://{}?mode=ro\"\n",
        missing.display()
    );
    let context = context(&config);

    let failure = execute(&run_query("SELECT 1", "gone", b""), &context)
        .await
        .unwrap_err();

    assert_eq!(
        failure.code,
        ErrorCode::QueryConnection,
        "{}",
        failure.message
    );
}

fn call_api(fields: serde_json::Value, input: &[u8]) -> TaskMessage {
    let mut message = fields;
    message["input"] = json!(base64(input));
    task("tasks.call_api", message)
}

#[tokio::test]
async fn api_call_outputs_body_and_sends_bearer_token() {
    let (address, received) = start_server().await;
    std::env::set_var("YLEM_TEST_API_CALL_TOKEN", "token-123");
    let message = call_api(
        json!({
            "payload": "{\"total\": {{SUM(n)}}}",
            "query_string": "rows={{COUNT(n)}}",
            "integration": {
                "value": format!("http://{address}/hook"),
                "auth_type": "bearer",
                "auth_bearer_token_env": "YLEM_TEST_API_CALL_TOKEN",
            },
        }),
        br#"[{"n": 2}, {"n": 5}]"#,
    );

    let output = execute(&message, &context("")).await.unwrap();

    assert_eq!(text(&output), "pong");
    let requests = received.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, Method::POST);
    assert_eq!(requests[0].path, "/hook?rows=2");
    assert_eq!(requests[0].headers["authorization"], "Bearer token-123");
    assert_eq!(requests[0].headers["content-type"], "application/json");
    assert!(requests[0].headers["user-agent"]
        .to_str()
        .unwrap()
        .starts_with("ylem-runtime/"));
    assert_eq!(requests[0].body, Bytes::from_static(br#"{"total": 7}"#));
}

#[tokio::test]
async fn api_call_missing_token_variable_names_it() {
    let (address, received) = start_server().await;
    let message = call_api(
        json!({"integration": {
            "value": format!("http://{address}/hook"),
            "auth_type": "bearer",
            "auth_bearer_token_env": "YLEM_TEST_SURELY_UNSET_TOKEN",
        }}),
        b"{}",
    );

    let failure = execute(&message, &context("")).await.unwrap_err();

    assert_eq!(failure.code, ErrorCode::BadRequest);
    assert!(
        failure.message.contains("YLEM_TEST_SURELY_UNSET_TOKEN"),
        "{}",
        failure.message
    );
    assert!(received.lock().unwrap().is_empty());
}

async fn api_call_status(code: u16) -> TaskFailure {
    let (address, _received) = start_server().await;
    let message = call_api(
        json!({"integration": {"value": format!("http://{address}/status/{code}")}}),
        b"{}",
    );
    execute(&message, &context("")).await.unwrap_err()
}

#[tokio::test]
async fn api_call_server_error_is_retryable_10201() {
    let failure = api_call_status(500).await;

    assert_eq!(failure.code, ErrorCode::ApiCallStatus);
    assert!(failure.retryable);
    assert!(failure.message.contains("HTTP 500"), "{}", failure.message);
    assert!(
        failure.message.contains("server responded 500"),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn api_call_too_many_requests_is_retryable() {
    let failure = api_call_status(429).await;

    assert_eq!(failure.code, ErrorCode::ApiCallStatus);
    assert!(failure.retryable);
}

#[tokio::test]
async fn api_call_not_found_is_not_retryable() {
    let failure = api_call_status(404).await;

    assert_eq!(failure.code, ErrorCode::ApiCallStatus);
    assert!(!failure.retryable);
    assert!(failure.message.contains("HTTP 404"), "{}", failure.message);
}

#[tokio::test]
async fn api_call_accepts_error_status_when_asked() {
    let (address, _received) = start_server().await;
    let message = call_api(
        json!({"accept_error_status": true, "integration": {"value": format!("http://{address}/status/404")}}),
        b"{}",
    );

    let output = execute(&message, &context("")).await.unwrap();

    assert_eq!(text(&output), "server responded 404");
}

#[tokio::test]
async fn api_call_connection_refused_is_retryable_10200() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_address = listener.local_addr().unwrap();
    drop(listener);
    let message = call_api(
        json!({"integration": {"value": format!("http://{closed_address}/x")}}),
        b"{}",
    );

    let failure = execute(&message, &context("")).await.unwrap_err();

    assert_eq!(failure.code, ErrorCode::ApiCallFailed);
    assert!(failure.retryable);
}

#[tokio::test]
async fn api_call_get_sends_no_body() {
    let (address, received) = start_server().await;
    let message = call_api(
        json!({"type": "get", "integration": {"value": format!("http://{address}/items")}}),
        b"[1]",
    );

    execute(&message, &context("")).await.unwrap();

    let requests = received.lock().unwrap().clone();
    assert_eq!(requests[0].method, Method::GET);
    assert!(requests[0].body.is_empty());
}

fn notification(fields: serde_json::Value) -> TaskMessage {
    let mut message = fields;
    message["task_name"] = json!("Low stock");
    message["pipeline_run_uuid"] = json!("6f2a3c1e-0000-4000-8000-000000000001");
    message["task_uuid"] = json!("6f2a3c1e-0000-4000-8000-000000000002");
    message["input"] = json!(base64(br#"[{"item": "tea", "left": 3}]"#));
    task("tasks.send_notification", message)
}

#[tokio::test]
async fn webhook_notification_posts_message() {
    let (address, received) = start_server().await;
    std::env::set_var("YLEM_TEST_WEBHOOK_SECRET", "s3cret");
    let message = notification(json!({
        "type": "webhook",
        "body": "{{item}} has {{left}} left",
        "severity": "high",
        "integration": {
            "value": format!("http://{address}/notify"),
            "auth_type": "header",
            "auth_header_name": "X-Webhook-Secret",
            "auth_header_value_env": "YLEM_TEST_WEBHOOK_SECRET",
        },
    }));

    let output = execute(&message, &context("")).await.unwrap();

    assert_eq!(output.outputs, vec![Vec::<u8>::new()]);
    let requests = received.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/notify");
    assert_eq!(requests[0].headers["x-webhook-secret"], "s3cret");
    let posted: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(
        posted,
        json!({
            "subject": "Low stock",
            "body": "tea has 3 left",
            "severity": "high",
            "pipeline_run_uuid": "6f2a3c1e-0000-4000-8000-000000000001",
            "task_uuid": "6f2a3c1e-0000-4000-8000-000000000002",
        })
    );
}

#[tokio::test]
async fn slack_notification_posts_text() {
    let (address, received) = start_server().await;
    let message = notification(json!({
        "type": "slack",
        "body": "only {{left}} {{item}}",
        "integration": {"value": format!("http://{address}/services/T1/B2/XYZ")},
    }));

    execute(&message, &context("")).await.unwrap();

    let requests = received.lock().unwrap().clone();
    let posted: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(posted, json!({"text": "only 3 tea"}));
}

#[tokio::test]
async fn notification_server_error_is_retryable_10100() {
    let (address, _received) = start_server().await;
    let message = notification(json!({
        "type": "webhook",
        "body": "x",
        "integration": {"value": format!("http://{address}/status/503")},
    }));

    let failure = execute(&message, &context("")).await.unwrap_err();

    assert_eq!(failure.code, ErrorCode::NotificationFailed);
    assert!(failure.retryable);
}

#[tokio::test]
async fn unsupported_notification_type_is_200() {
    let message = notification(
        json!({"type": "sms", "body": "x", "integration": {"value": "http://127.0.0.1:9/"}}),
    );

    let failure = execute(&message, &context("")).await.unwrap_err();

    assert_eq!(failure.code, ErrorCode::BadRequest);
    assert!(
        failure
            .message
            .contains("notification type sms is not supported"),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn condition_for_each_and_processor_through_execute() {
    let context = context("");
    let input = br#"[{"n": 1}, {"n": 4}]"#;

    let condition = task(
        "tasks.check_condition",
        json!({"expression": "MAX(n) > 3", "input": base64(input)}),
    );
    let output = execute(&condition, &context).await.unwrap();
    assert_eq!(
        text(&output),
        format!(r#"{{"result":true,"original_input":"{}"}}"#, base64(input))
    );

    let for_each = task("tasks.run_for_each", json!({"input": base64(input)}));
    let output = execute(&for_each, &context).await.unwrap();
    assert_eq!(
        output.outputs,
        vec![br#"[{"n":1}]"#.to_vec(), br#"[{"n":4}]"#.to_vec()]
    );

    let processor = task(
        "tasks.process_data",
        json!({"expression": "map(.n) | add", "input": base64(input)}),
    );
    let output = execute(&processor, &context).await.unwrap();
    assert_eq!(text(&output), "5");
}

#[tokio::test]
async fn unsupported_task_type_is_9999() {
    let message = task("tasks.merge", json!({}));

    let failure = execute(&message, &context("")).await.unwrap_err();

    assert_eq!(failure.code, ErrorCode::UnknownTaskType);
    assert!(
        failure.message.contains("task type merge"),
        "{}",
        failure.message
    );
    assert!(
        failure.message.contains("supported: query"),
        "{}",
        failure.message
    );
}
