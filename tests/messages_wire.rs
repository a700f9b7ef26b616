//! Wire format of the task-processing topics, checked against hand-written samples in the shape
//! the original Go services produce: nil UUIDs, `null` for nil slices and maps, base64 byte
//! fields and Go field names in `meta` and in result errors.

use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{TimeZone, Timelike, Utc};
use serde_json::{json, Value};
use uuid::Uuid;
use ylem_runtime::messages::{
    DecodeError, ErrorSeverity, Message, TaskKind, TaskMessage, TaskRunResult,
};
use ylem_runtime::transport::partition_for_key;

/// Every sample file under `tests/fixtures/messages`, without the `.json` extension.
const SAMPLES: &[&str] = &[
    "tasks.run_query",
    "tasks.check_condition",
    "tasks.aggregate_data",
    "tasks.transform_data",
    "tasks.call_api",
    "tasks.send_notification",
    "tasks.run_for_each",
    "tasks.merge",
    "tasks.filter",
    "tasks.external_trigger",
    "tasks.execute_code",
    "tasks.call_openapi_gpt",
    "tasks.process_data",
    "tasks.run_pipeline",
    "result.task_run.successful",
    "result.task_run.failed",
    "source.status_toggled",
];

/// Samples of the task types that this runtime does not execute. Their type fields are kept as
/// they came.
const UNEXECUTED_TASK_SAMPLES: &[&str] = &[
    "tasks.aggregate_data",
    "tasks.merge",
    "tasks.filter",
    "tasks.external_trigger",
    "tasks.execute_code",
    "tasks.call_openapi_gpt",
    "tasks.run_pipeline",
];

const RUN_UUID: &str = "6f1c2a5e-8b7d-4c3e-9a10-2b3c4d5e6f70";
const PIPELINE_UUID: &str = "0b8e6a43-5d2f-4f7c-8e1a-93c4d2b1a7e5";
const ORGANIZATION_UUID: &str = "4c9d7e21-3a6b-4e8f-b2d1-7f5a9c3e1b04";
const SOURCE_UUID: &str = "9e3b5c71-2d4a-4f6e-8b1c-5a7d9e2f4b60";
const PENGUINS_JSON: &str =
    r#"[{"species":"Adelie","island":"Torgersen"},{"species":"Gentoo","island":"Biscoe"}]"#;
const PENGUINS_BASE64: &str = "W3sic3BlY2llcyI6IkFkZWxpZSIsImlzbGFuZCI6IlRvcmdlcnNlbiJ9LHsic3BlY2llcyI6IkdlbnRvbyIsImlzbGFuZCI6IkJpc2NvZSJ9XQ==";

fn uuid(text: &str) -> Uuid {
    Uuid::parse_str(text).expect("test UUID is valid")
}

/// Builds the `task_uuid` of sample number `number`.
fn task_uuid(number: u8) -> Uuid {
    uuid(&format!("1a2b3c4d-0001-4000-8000-0000000000{number:02}"))
}

fn sample_bytes(stem: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/messages")
        .join(format!("{stem}.json"));
    std::fs::read(&path).unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
}

fn sample_json(stem: &str) -> Value {
    serde_json::from_slice(&sample_bytes(stem))
        .unwrap_or_else(|err| panic!("sample {stem} is not JSON: {err}"))
}

fn decode_sample(stem: &str) -> Message {
    Message::decode(&sample_bytes(stem))
        .unwrap_or_else(|err| panic!("sample {stem} does not decode: {err}"))
}

fn decode_value(value: &Value) -> Result<Message, DecodeError> {
    Message::decode(&serde_json::to_vec(value).expect("test JSON serializes"))
}

fn task_sample(stem: &str) -> TaskMessage {
    match decode_sample(stem) {
        Message::Task(task) => *task,
        other => panic!("sample {stem} decoded to {other:?}, expected a task"),
    }
}

fn result_sample(stem: &str) -> TaskRunResult {
    match decode_sample(stem) {
        Message::Result(result) => *result,
        other => panic!("sample {stem} decoded to {other:?}, expected a result"),
    }
}

/// Decodes a sample, encodes it again and parses the encoding as JSON for key checks.
fn encoded_json(stem: &str) -> Value {
    serde_json::from_slice(&decode_sample(stem).encode()).expect("encoding is JSON")
}

/// Asserts the run-wide ids that every task sample shares, and the nil UUIDs Ylem sends.
fn assert_run_ids(task: &TaskMessage) {
    assert_eq!(task.common.pipeline_run_uuid, uuid(RUN_UUID));
    assert_eq!(task.common.pipeline_uuid, uuid(PIPELINE_UUID));
    assert_eq!(task.common.organization_uuid, uuid(ORGANIZATION_UUID));
    assert_eq!(task.common.task_run_uuid, Uuid::nil());
    assert_eq!(task.common.creator_uuid, Uuid::nil());
}

/// Returns the header name of a sample: the file stem without the variant suffix of the result
/// samples.
fn message_name_of(stem: &str) -> &str {
    stem.strip_suffix(".successful")
        .or_else(|| stem.strip_suffix(".failed"))
        .unwrap_or(stem)
}

#[test]
fn every_sample_decodes_by_name() {
    for stem in SAMPLES {
        let message = decode_sample(stem);

        assert_eq!(message.name(), message_name_of(stem), "sample {stem}");
    }
}

#[test]
fn run_query_decodes_source_and_meta() {
    let task = task_sample("tasks.run_query");

    assert_run_ids(&task);
    assert_eq!(task.common.pipeline_type, "generic");
    assert_eq!(task.common.task_uuid, task_uuid(1));
    assert_eq!(task.common.task_name, "Load penguins");
    assert!(task.common.is_initial_task);
    assert!(!task.common.is_final_task);
    assert!(
        task.common.input.is_empty(),
        "null input decodes as no bytes"
    );
    assert_eq!(task.common.meta.sql_query_column_order, None);
    assert_eq!(task.common.meta.input_count, 0);
    assert!(task.common.meta.env_vars.is_empty());
    assert_eq!(task.common.meta.pipeline_run_config.task_ids.mode, "");
    assert!(task.common.meta.pipeline_run_config.task_ids.ids.is_empty());
    assert!(task
        .common
        .meta
        .pipeline_run_config
        .task_trigger_ids
        .ids
        .is_empty());
    assert_eq!(task.kind.task_type(), "query");

    let TaskKind::RunQuery(run_query) = &task.kind else {
        panic!("expected RunQuery, got {:?}", task.kind);
    };
    assert_eq!(
        run_query.query,
        "SELECT species, island FROM penguins LIMIT 2"
    );
    assert_eq!(run_query.source.uuid, uuid(SOURCE_UUID));
    assert_eq!(run_query.source.status, "online");
    assert_eq!(run_query.source.source_type, "postgresql");
    assert_eq!(run_query.source.name, "Penguin warehouse");
    assert_eq!(run_query.source.database.as_deref(), Some("penguins"));
}

#[test]
fn check_condition_decodes_input_and_meta() {
    let task = task_sample("tasks.check_condition");

    assert_run_ids(&task);
    assert_eq!(task.common.task_uuid, task_uuid(2));
    assert!(!task.common.is_initial_task);
    assert_eq!(task.common.input, PENGUINS_JSON.as_bytes());

    let meta = &task.common.meta;
    assert_eq!(
        meta.sql_query_column_order,
        Some(vec!["species".to_owned(), "island".to_owned()])
    );
    assert_eq!(meta.input_count, 2);
    assert_eq!(meta.env_vars.get("REGION"), Some(&json!("eu-west-1")));
    assert_eq!(meta.env_vars.get("THRESHOLD"), Some(&json!(100)));
    let run_config = &meta.pipeline_run_config;
    assert_eq!(run_config.task_ids.mode, "enabled");
    assert_eq!(
        run_config.task_ids.ids,
        vec![task_uuid(2).to_string()],
        "task ids of the run config"
    );
    assert!(run_config.task_ids.allows(&task_uuid(2).to_string()));
    assert!(!run_config.task_ids.allows(&task_uuid(3).to_string()));
    assert_eq!(run_config.task_trigger_ids.mode, "disabled");
    assert_eq!(
        run_config.task_trigger_ids.ids,
        vec!["7d1e9f3a-0002-4000-8000-000000000001".to_owned()]
    );

    let TaskKind::CheckCondition(condition) = &task.kind else {
        panic!("expected CheckCondition, got {:?}", task.kind);
    };
    assert_eq!(condition.expression, "COUNT() > 1");
}

#[test]
fn transform_data_decodes_type_fields() {
    let task = task_sample("tasks.transform_data");

    assert_run_ids(&task);
    assert_eq!(task.common.task_uuid, task_uuid(4));
    assert_eq!(task.common.task_name, "Extract species");
    assert_eq!(task.common.input, PENGUINS_JSON.as_bytes());
    assert_eq!(task.kind.task_type(), "transformer");

    let TaskKind::TransformData(transform) = &task.kind else {
        panic!("expected TransformData, got {:?}", task.kind);
    };
    assert_eq!(transform.transform_type, "extract_from_json");
    assert_eq!(transform.json_query_expression, "#.species");
    assert_eq!(transform.delimiter, "");
    assert_eq!(transform.cast_to_type, "");
}

#[test]
fn call_api_decodes_integration() {
    let task = task_sample("tasks.call_api");

    assert_run_ids(&task);
    assert_eq!(task.common.task_uuid, task_uuid(5));
    assert!(task.common.is_final_task);
    assert_eq!(task.common.input, br#"[{"count":152}]"#);
    assert_eq!(
        task.common.meta.sql_query_column_order,
        Some(vec!["count".to_owned()])
    );
    assert_eq!(task.kind.task_type(), "api_call");

    let TaskKind::CallApi(call) = &task.kind else {
        panic!("expected CallApi, got {:?}", task.kind);
    };
    assert_eq!(call.method, "POST");
    assert_eq!(call.payload, r#"{"count": {{ input.0.count }}}"#);
    assert_eq!(call.query_string, "source=ylem");
    assert_eq!(call.headers, r#"{"X-Team":"birds"}"#);
    assert!(!call.accept_error_status);
    assert_eq!(
        call.integration.uuid,
        uuid("2f4e6a8c-0003-4000-8000-000000000001")
    );
    assert_eq!(call.integration.integration_type, "api");
    assert_eq!(
        call.integration.value,
        "https://counts.example.test/v1/penguins"
    );
    assert_eq!(call.integration.auth_type, "bearer");
    // Ylem's encrypted token is not a field here, because secrets are named by environment
    // variable.
    assert_eq!(call.integration.auth_bearer_token_env, "");
}

#[test]
fn send_notification_decodes_type_fields() {
    let task = task_sample("tasks.send_notification");

    assert_run_ids(&task);
    assert_eq!(task.common.task_uuid, task_uuid(6));
    assert_eq!(task.common.input, br#"[{"count":152}]"#);
    assert_eq!(task.kind.task_type(), "notification");

    let TaskKind::SendNotification(notification) = &task.kind else {
        panic!("expected SendNotification, got {:?}", task.kind);
    };
    assert_eq!(notification.notification_type, "slack");
    assert_eq!(notification.body, "We counted {{ input.0.count }} penguins");
    assert_eq!(notification.severity, "high");
    assert!(notification.is_confirmed);
    assert_eq!(notification.integration.name, "Birds channel");
    assert_eq!(notification.integration.auth_type, "none");
}

#[test]
fn run_for_each_decodes_input() {
    let task = task_sample("tasks.run_for_each");

    assert_run_ids(&task);
    assert_eq!(task.kind, TaskKind::RunForEach);
    assert_eq!(task.common.task_uuid, task_uuid(7));
    assert_eq!(task.common.task_name, "Each penguin");
    assert_eq!(task.common.input, b"[1,2,3]");
    assert_eq!(task.common.meta.input_count, 1);
    assert_eq!(task.kind.task_type(), "for_each");
}

#[test]
fn process_data_decodes_type_fields() {
    let task = task_sample("tasks.process_data");

    assert_run_ids(&task);
    assert_eq!(task.common.task_uuid, task_uuid(13));
    assert_eq!(task.common.input, PENGUINS_JSON.as_bytes());
    assert_eq!(task.kind.task_type(), "processor");

    let TaskKind::ProcessData(process) = &task.kind else {
        panic!("expected ProcessData, got {:?}", task.kind);
    };
    assert_eq!(process.expression, "map(.species)");
    assert_eq!(process.strategy, "jq");
}

#[test]
fn unexecuted_task_types_keep_fields() {
    // (sample, task_type, task number, input bytes, type fields)
    let cases: &[(&str, &str, u8, &[u8], Value)] = &[
        (
            "tasks.aggregate_data",
            "aggregator",
            3,
            PENGUINS_JSON.as_bytes(),
            json!({"expression": "COUNT()", "variable_name": "penguin_count"}),
        ),
        (
            "tasks.merge",
            "merge",
            8,
            b"[1,2,3]",
            json!({"field_names": "species,island"}),
        ),
        (
            "tasks.filter",
            "filter",
            9,
            PENGUINS_JSON.as_bytes(),
            json!({"expression": "species == \"Adelie\""}),
        ),
        (
            "tasks.external_trigger",
            "external_trigger",
            10,
            br#"{"status":"ok"}"#,
            json!({}),
        ),
        (
            "tasks.execute_code",
            "code",
            11,
            b"[1,2,3]",
            json!({"code": "output = [x * 2 for x in input]", "type": "python"}),
        ),
        (
            "tasks.call_openapi_gpt",
            "gpt",
            12,
            br#"{"text":"Summarize the run"}"#,
            json!({"prompt": "Summarize these penguin counts in one sentence"}),
        ),
        (
            "tasks.run_pipeline",
            "run_pipeline",
            14,
            br#"{"status":"ok"}"#,
            json!({"pipeline_to_run_uuid": "5b7d9f1e-0004-4000-8000-000000000001"}),
        ),
    ];
    assert_eq!(cases.len(), UNEXECUTED_TASK_SAMPLES.len());

    for (stem, task_type, number, input, expected_fields) in cases {
        let task = task_sample(stem);

        assert_run_ids(&task);
        assert_eq!(task.common.task_uuid, task_uuid(*number), "sample {stem}");
        assert_eq!(task.common.input, *input, "input of {stem}");
        assert_eq!(task.kind.task_type(), *task_type, "sample {stem}");
        let TaskKind::Other {
            message_name,
            fields,
        } = &task.kind
        else {
            panic!("sample {stem} decoded to {:?}, expected Other", task.kind);
        };
        assert_eq!(message_name, stem);
        assert_eq!(
            &Value::Object(fields.clone()),
            expected_fields,
            "type fields of {stem} hold no common field"
        );
    }
    let aggregate = task_sample("tasks.aggregate_data");
    assert_eq!(aggregate.common.pipeline_type, "metric");
}

#[test]
fn successful_result_decodes_fields() {
    let result = result_sample("result.task_run.successful");

    assert_eq!(result.pipeline_run_uuid, uuid(RUN_UUID));
    assert_eq!(result.pipeline_uuid, uuid(PIPELINE_UUID));
    assert_eq!(result.organization_uuid, uuid(ORGANIZATION_UUID));
    assert_eq!(result.task_run_uuid, Uuid::nil());
    assert_eq!(result.creator_uuid, Uuid::nil());
    assert_eq!(result.task_uuid, task_uuid(1));
    assert_eq!(result.task_type, "query");
    assert_eq!(result.uuid, uuid("c3d5e7f9-0005-4000-8000-000000000001"));
    assert!(result.is_successful);
    assert!(result.errors.is_empty(), "null errors decode as none");
    assert_eq!(result.input, None);
    assert_eq!(result.output, PENGUINS_JSON.as_bytes());
    assert_eq!(result.duration, 1250);
    assert_eq!(
        result.meta.sql_query_column_order,
        Some(vec!["species".to_owned(), "island".to_owned()])
    );
    assert_eq!(
        result.executed_at,
        Utc.with_ymd_and_hms(2024, 3, 5, 10, 15, 30).unwrap()
            + chrono::Duration::nanoseconds(123_456_789)
    );
    assert_eq!(result.task_name, None);
    assert_eq!(result.batch_size, None);
}

#[test]
fn failed_result_decodes_errors() {
    let result = result_sample("result.task_run.failed");

    assert_eq!(result.pipeline_run_uuid, uuid(RUN_UUID));
    assert_eq!(result.uuid, uuid("c3d5e7f9-0005-4000-8000-000000000002"));
    assert!(!result.is_successful);
    assert_eq!(result.errors.len(), 2);
    assert_eq!(result.errors[0].code, 10000);
    assert_eq!(result.errors[0].severity, ErrorSeverity::Error);
    assert_eq!(
        result.errors[0].message,
        r#"pq: relation "penguins" does not exist"#
    );
    assert_eq!(result.errors[1].code, 10001);
    assert_eq!(result.errors[1].severity, ErrorSeverity::Warning);
    assert_eq!(
        result.first_error_message(),
        Some(r#"pq: relation "penguins" does not exist"#)
    );
    assert!(result.output.is_empty(), "null output decodes as no bytes");
    assert_eq!(result.duration, 37);
    // The sample is written at +01:00; the decoded instant is the same moment in UTC.
    assert_eq!(
        result.executed_at,
        Utc.with_ymd_and_hms(2024, 3, 5, 10, 16, 2).unwrap()
    );
}

#[test]
fn status_toggled_decodes_uuid() {
    let message = decode_sample("source.status_toggled");

    assert_eq!(
        message,
        Message::SourceStatusToggled {
            uuid: uuid(SOURCE_UUID)
        }
    );
}

#[test]
fn every_sample_survives_round_trip() {
    let mut mismatches = Vec::new();
    for stem in SAMPLES {
        let decoded = decode_sample(stem);

        let encoded = decoded.encode();
        let again = Message::decode(&encoded)
            .unwrap_or_else(|err| panic!("encoding of {stem} does not decode: {err}"));

        if again != decoded {
            mismatches.push(format!(
                "{stem}:\n  sample:  {}\n  encoded: {}",
                String::from_utf8_lossy(&sample_bytes(stem)),
                String::from_utf8_lossy(&encoded)
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "round trip changed {} sample(s):\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[test]
fn result_round_trip_keeps_nanoseconds() {
    // Go's time.Time.MarshalJSON writes RFC 3339 with sub-second precision, down to nanoseconds.
    let result = result_sample("result.task_run.successful");
    assert_eq!(result.executed_at.nanosecond(), 123_456_789);

    let again = match Message::decode(&Message::Result(Box::new(result)).encode()) {
        Ok(Message::Result(again)) => again,
        other => panic!("encoded result decoded to {other:?}"),
    };

    assert_eq!(again.executed_at.nanosecond(), 123_456_789);
}

#[test]
fn encoded_task_keeps_wire_names() {
    let encoded = encoded_json("tasks.check_condition");

    assert_eq!(
        encoded["headers"],
        json!({"X-Message-Name": "tasks.check_condition"})
    );
    let message = &encoded["message"];
    assert_eq!(message["pipeline_type"], "generic");
    assert_eq!(message["pipeline_run_uuid"], RUN_UUID);
    assert_eq!(
        message["task_run_uuid"],
        "00000000-0000-0000-0000-000000000000"
    );
    assert_eq!(message["task_uuid"], task_uuid(2).to_string());
    assert_eq!(message["pipeline_uuid"], PIPELINE_UUID);
    assert_eq!(message["organization_uuid"], ORGANIZATION_UUID);
    assert_eq!(
        message["creator_uuid"],
        "00000000-0000-0000-0000-000000000000"
    );
    assert_eq!(message["task_name"], "Enough penguins?");
    assert_eq!(message["is_initial_task"], false);
    assert_eq!(message["is_final_task"], false);
    assert_eq!(message["input"], PENGUINS_BASE64);
    assert_eq!(message["expression"], "COUNT() > 1");

    let meta = &message["meta"];
    assert_eq!(meta["SqlQueryColumnOrder"], json!(["species", "island"]));
    assert_eq!(meta["InputCount"], 2);
    assert_eq!(meta["EnvVars"]["REGION"], "eu-west-1");
    assert_eq!(meta["PipelineRunConfig"]["task_ids"]["type"], "enabled");
    assert_eq!(
        meta["PipelineRunConfig"]["task_ids"]["ids"],
        json!([task_uuid(2).to_string()])
    );
    assert_eq!(
        meta["PipelineRunConfig"]["task_trigger_ids"]["type"],
        "disabled"
    );
    let meta_keys: Vec<&str> = meta
        .as_object()
        .expect("meta is an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        meta_keys,
        [
            "EnvVars",
            "InputCount",
            "PipelineRunConfig",
            "SqlQueryColumnOrder"
        ]
    );
}

#[test]
fn encoded_query_keeps_source_names() {
    let encoded = encoded_json("tasks.run_query");

    assert_eq!(encoded["headers"]["X-Message-Name"], "tasks.run_query");
    let message = &encoded["message"];
    assert_eq!(
        message["query"],
        "SELECT species, island FROM penguins LIMIT 2"
    );
    assert_eq!(message["source"]["uuid"], SOURCE_UUID);
    assert_eq!(message["source"]["type"], "postgresql");
    assert_eq!(message["source"]["name"], "Penguin warehouse");
    assert_eq!(message["source"]["database"], "penguins");
    // A Go nil column order stays null rather than becoming an empty list.
    assert_eq!(message["meta"]["SqlQueryColumnOrder"], Value::Null);
    assert!(
        message.get("attempt").is_none(),
        "absent attempt is not written: {message}"
    );
}

#[test]
fn encoded_result_keeps_wire_names() {
    let encoded = encoded_json("result.task_run.failed");

    assert_eq!(
        encoded["headers"],
        json!({"X-Message-Name": "result.task_run"})
    );
    let message = &encoded["message"];
    assert_eq!(message["pipeline_run_uuid"], RUN_UUID);
    assert_eq!(message["task_type"], "query");
    assert_eq!(message["is_successful"], false);
    assert_eq!(message["duration"], 37);
    assert_eq!(message["input"], Value::Null);
    assert_eq!(
        message["errors"],
        json!([
            {"Code": 10000, "Severity": "error", "Message": "pq: relation \"penguins\" does not exist"},
            {"Code": 10001, "Severity": "warning", "Message": "connection retried once"}
        ])
    );

    let executed_at = message["executedAt"]
        .as_str()
        .expect("executedAt is a string");
    let parsed = chrono::DateTime::parse_from_rfc3339(executed_at)
        .unwrap_or_else(|err| panic!("executedAt {executed_at:?} is not RFC 3339: {err}"));
    assert_eq!(parsed, Utc.with_ymd_and_hms(2024, 3, 5, 10, 16, 2).unwrap());
    assert_eq!(message["executed_at"], "2024-03-05 10:16:02");
}

#[test]
fn encoded_result_output_is_base64() {
    let encoded = encoded_json("result.task_run.successful");
    let message = &encoded["message"];

    assert_eq!(message["output"], PENGUINS_BASE64);
    let output = message["output"].as_str().expect("output is a string");
    assert_eq!(
        STANDARD.decode(output).expect("output is base64"),
        PENGUINS_JSON.as_bytes()
    );
    assert_eq!(message["errors"], json!([]));
    assert_eq!(message["uuid"], "c3d5e7f9-0005-4000-8000-000000000001");
    assert_eq!(message["executed_at"], "2024-03-05 10:15:30");
}

/// Adds `extra_go_field` at every level of a sample where this runtime has a fixed struct.
fn with_unknown_fields(stem: &str) -> Value {
    let mut value = sample_json(stem);
    let extra = json!({"nested": [1, 2], "flag": true});
    value["trace"] = json!("envelope-level");
    value["headers"]["X-Trace-Id"] = json!("4bf92f3577b34da6");
    let message = &mut value["message"];
    if message.get("meta").is_some() {
        message["meta"]["extra_go_field"] = extra.clone();
        message["meta"]["PipelineRunConfig"]["extra_go_field"] = extra.clone();
        message["meta"]["PipelineRunConfig"]["task_ids"]["extra_go_field"] = extra.clone();
    }
    // Fields of the task types this runtime does not execute are kept, not ignored.
    if !UNEXECUTED_TASK_SAMPLES.contains(&stem) {
        message["extra_go_field"] = extra.clone();
    }
    if let Some(errors) = message.get_mut("errors").and_then(Value::as_array_mut) {
        for error in errors {
            error["Details"] = extra.clone();
        }
    }
    if message.get("source").is_some() {
        message["source"]["ssl_enabled"] = json!(false);
    }
    if message.get("integration").is_some() {
        message["integration"]["extra_go_field"] = extra;
    }
    value
}

#[test]
fn unknown_fields_are_ignored() {
    for stem in SAMPLES {
        let expected = decode_sample(stem);

        let decoded = decode_value(&with_unknown_fields(stem))
            .unwrap_or_else(|err| panic!("sample {stem} with unknown fields: {err}"));

        assert_eq!(decoded, expected, "sample {stem} with unknown fields");
    }
}

#[test]
fn non_json_is_not_json() {
    for bytes in [&b"not json"[..], b"", b"{\"headers\":", b"[1,2]"] {
        let err = Message::decode(bytes).expect_err("decode must fail");

        assert!(
            matches!(err, DecodeError::NotJson(_)),
            "{:?}: {err:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn missing_header_is_missing_name() {
    let message = sample_json("tasks.check_condition")["message"].clone();
    let envelopes = [
        json!({"message": message}),
        json!({"headers": {}, "message": message}),
        json!({"headers": {"X-Message-Name": ""}, "message": message}),
        json!({"headers": {"x-message-name": "tasks.check_condition"}, "message": message}),
    ];

    for envelope in envelopes {
        let err = decode_value(&envelope).expect_err("decode must fail");

        assert!(
            matches!(err, DecodeError::MissingName),
            "{}: {err:?}",
            envelope["headers"]
        );
    }
}

#[test]
fn unknown_name_is_rejected() {
    let mut envelope = sample_json("tasks.check_condition");
    envelope["headers"]["X-Message-Name"] = json!("tasks.teleport");

    let err = decode_value(&envelope).expect_err("decode must fail");

    match err {
        DecodeError::UnknownName(name) => assert_eq!(name, "tasks.teleport"),
        other => panic!("expected UnknownName, got {other:?}"),
    }
}

#[test]
fn invalid_base64_input_is_rejected() {
    for stem in ["tasks.check_condition", "tasks.merge", "tasks.run_for_each"] {
        let mut envelope = sample_json(stem);
        envelope["message"]["input"] = json!("not base64!!");

        let err = decode_value(&envelope).expect_err("decode must fail");

        match &err {
            DecodeError::InvalidMessage { name, source } => {
                assert_eq!(name, stem);
                assert!(
                    source.to_string().contains("base64"),
                    "error names the encoding: {source}"
                );
            }
            other => panic!("sample {stem}: expected InvalidMessage, got {other:?}"),
        }
    }
}

#[test]
fn invalid_base64_output_is_rejected() {
    let mut envelope = sample_json("result.task_run.successful");
    envelope["message"]["output"] = json!("%%%");

    let err = decode_value(&envelope).expect_err("decode must fail");

    assert!(
        matches!(&err, DecodeError::InvalidMessage { name, .. } if name == "result.task_run"),
        "{err:?}"
    );
}

#[test]
fn wrong_field_type_is_rejected() {
    // (sample, field path inside `message`, wrong value)
    let cases: &[(&str, &[&str], Value)] = &[
        ("tasks.check_condition", &["is_initial_task"], json!("yes")),
        (
            "tasks.check_condition",
            &["pipeline_run_uuid"],
            json!("not-a-uuid"),
        ),
        (
            "tasks.check_condition",
            &["meta", "InputCount"],
            json!("two"),
        ),
        ("tasks.check_condition", &["expression"], json!(42)),
        ("tasks.run_query", &["source"], json!("Penguin warehouse")),
        ("tasks.merge", &["task_uuid"], json!(17)),
        ("result.task_run.failed", &["duration"], json!("37ms")),
        (
            "result.task_run.failed",
            &["executedAt"],
            json!("yesterday"),
        ),
        (
            "result.task_run.failed",
            &["errors"],
            json!({"Code": 10000}),
        ),
        ("source.status_toggled", &["uuid"], json!(7)),
    ];

    for (stem, path, wrong) in cases {
        let mut envelope = sample_json(stem);
        let mut field = &mut envelope["message"];
        for key in *path {
            field = &mut field[*key];
        }
        *field = wrong.clone();

        let err = decode_value(&envelope).expect_err("decode must fail");

        match &err {
            DecodeError::InvalidMessage { name, .. } => {
                assert_eq!(name, message_name_of(stem), "{stem} {path:?}")
            }
            other => panic!("{stem} {path:?} = {wrong}: expected InvalidMessage, got {other:?}"),
        }
    }
}

#[test]
fn missing_executed_at_is_rejected() {
    let mut envelope = sample_json("result.task_run.successful");
    envelope["message"]
        .as_object_mut()
        .expect("message is an object")
        .remove("executedAt");

    let err = decode_value(&envelope).expect_err("decode must fail");

    assert!(matches!(err, DecodeError::InvalidMessage { .. }), "{err:?}");
}

/// FNV-1a 32-bit hash, written from the published algorithm (offset basis 2166136261,
/// prime 16777619).
fn fnv1a_32(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 2_166_136_261;
    for byte in bytes {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(16_777_619);
    }
    hash
}

/// Computes the partition by the rule of sarama's hash partitioner: the hash as a signed 32-bit
/// integer, its remainder by the partition count, and the absolute value of that.
fn sarama_partition(key: &[u8], partitions: u32) -> u32 {
    let signed = fnv1a_32(key) as i32;
    let remainder = signed % partitions as i32;
    remainder.unsigned_abs()
}

#[test]
fn fnv1a_reference_values_hold() {
    // Test vectors of the FNV-1a 32-bit hash.
    assert_eq!(fnv1a_32(b""), 0x811c_9dc5);
    assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
    assert_eq!(fnv1a_32(b"foobar"), 0xbf9c_f968);
}

#[test]
fn partition_matches_sarama_rule() {
    // (key, partitions, expected). "" and "a" hash above i32::MAX, so the signed rule gives a
    // different partition than an unsigned remainder would (5 and 220).
    let cases: &[(&[u8], u32, u32)] = &[
        (b"", 8, 3),
        (b"a", 1000, 76),
        (b"a", 12, 0),
        (b"foobar", 1000, 576),
        (b"run-1", 3, 1),
        (b"run-1", 8, 4),
        (RUN_UUID.as_bytes(), 12, 10),
        (RUN_UUID.as_bytes(), 1, 0),
    ];

    for (key, partitions, expected) in cases {
        let key_text = String::from_utf8_lossy(key);
        assert_eq!(
            sarama_partition(key, *partitions),
            *expected,
            "reference rule for {key_text:?} over {partitions}"
        );

        assert_eq!(
            partition_for_key(key, *partitions),
            *expected,
            "partition_for_key({key_text:?}, {partitions})"
        );
    }
}

#[test]
fn partition_agrees_on_many_keys() {
    for index in 0..500u32 {
        let key = format!("run-{index}");
        for partitions in [1, 2, 3, 7, 16, 100] {
            assert_eq!(
                partition_for_key(key.as_bytes(), partitions),
                sarama_partition(key.as_bytes(), partitions),
                "key {key:?} over {partitions} partitions"
            );
        }
    }
}
