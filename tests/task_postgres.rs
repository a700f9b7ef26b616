//! Query tasks on a real PostgreSQL server.
//!
//! These tests run only when `YLEM_TEST_POSTGRES_URL` names a server (a URL without a
//! password, e.g. `postgres://ylem@127.0.0.1:5432/postgres`) and `YLEM_TEST_POSTGRES_PASSWORD`
//! contains the password. Without them each test prints that it was skipped and passes.

use std::sync::Arc;

use serde_json::json;
use ylem_runtime::config::Config;
use ylem_runtime::messages::{ErrorCode, TaskMessage};
use ylem_runtime::tasks::{execute, ExecutionContext};

const URL_VARIABLE: &str = "YLEM_TEST_POSTGRES_URL";
const PASSWORD_VARIABLE: &str = "YLEM_TEST_POSTGRES_PASSWORD";

fn postgres_context() -> Option<ExecutionContext> {
    let Ok(url) = std::env::var(URL_VARIABLE) else {
        eprintln!("skipped: {URL_VARIABLE} is not set");
        return None;
    };
    let config_text = format!(
        "[sources.warehouse]\ntype = \"postgres\"\nurl = \"{url}\"\npassword_env = \"{PASSWORD_VARIABLE}\"\n"
    );
    let config = Config::parse(&config_text).unwrap();
    Some(ExecutionContext::new(Arc::new(config)).unwrap())
}

fn run_query(sql: &str) -> TaskMessage {
    TaskMessage::from_json(
        "tasks.run_query",
        json!({"query": sql, "source": {"name": "warehouse"}}),
    )
    .unwrap()
}

#[tokio::test]
async fn postgres_types_map_to_json() {
    let Some(context) = postgres_context() else {
        return;
    };
    let sql =
        "SELECT 7::int8 AS big, 1.5::float8 AS ratio, 12.50::numeric AS price, true AS flag, \
               NULL::text AS nothing, '{\"a\": [1]}'::jsonb AS doc, '\\x0102'::bytea AS raw, \
               DATE '2024-05-01' AS day, '6f2a3c1e-0000-4000-8000-000000000001'::uuid AS id";

    let output = execute(&run_query(sql), &context).await.unwrap();

    let rows: serde_json::Value = serde_json::from_slice(&output.outputs[0]).unwrap();
    assert_eq!(
        rows,
        json!([{
            "big": 7, "ratio": 1.5, "price": 12.5, "flag": true, "nothing": null,
            "doc": {"a": [1]}, "raw": "AQI=", "day": "2024-05-01",
            "id": "6f2a3c1e-0000-4000-8000-000000000001",
        }])
    );
    let order = output.column_order.unwrap();
    assert_eq!(
        order,
        ["big", "ratio", "price", "flag", "nothing", "doc", "raw", "day", "id"]
    );
}

#[tokio::test]
async fn postgres_sql_error_is_10000() {
    let Some(context) = postgres_context() else {
        return;
    };

    let failure = execute(&run_query("SELECT * FROM no_such_table"), &context)
        .await
        .unwrap_err();

    assert_eq!(failure.code, ErrorCode::QueryFailed);
    assert!(
        failure.message.contains("no_such_table"),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn postgres_empty_result_keeps_columns() {
    let Some(context) = postgres_context() else {
        return;
    };

    let output = execute(
        &run_query("SELECT 1 AS one, 2 AS two WHERE false"),
        &context,
    )
    .await
    .unwrap();

    assert_eq!(output.outputs[0], b"[]");
    assert_eq!(
        output.column_order,
        Some(vec!["one".to_owned(), "two".to_owned()])
    );
}

#[tokio::test]
async fn postgres_wrong_password_is_10001() {
    let Ok(url) = std::env::var(URL_VARIABLE) else {
        eprintln!("skipped: {URL_VARIABLE} is not set");
        return;
    };
    std::env::set_var("YLEM_TEST_POSTGRES_WRONG_PASSWORD", "not-the-password");
    let config_text = format!(
        "[sources.warehouse]\ntype = \"postgres\"\nurl = \"{url}\"\npassword_env = \"YLEM_TEST_POSTGRES_WRONG_PASSWORD\"\n"
    );
    let config = Config::parse(&config_text).unwrap();
    let context = ExecutionContext::new(Arc::new(config)).unwrap();

    let failure = execute(&run_query("SELECT 1"), &context).await.unwrap_err();

    assert_eq!(
        failure.code,
        ErrorCode::QueryConnection,
        "{}",
        failure.message
    );
    assert!(
        !failure.message.contains("not-the-password"),
        "{}",
        failure.message
    );
}
