//! The task entries of a pipeline file and their translation into task message fields.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_yaml_ng::Mapping;

use super::errors::ProblemList;
use super::strict::{decode_mapping, join_path};
use crate::messages::{
    ApiIntegration, CallApi, CheckCondition, ProcessData, RunQuery, SendNotification, Source,
    TaskKind, TransformData,
};

/// Task types a pipeline file may use, as written in `type`.
pub const TASK_TYPES: &[&str] = &[
    "query",
    "condition",
    "transformer",
    "processor",
    "api_call",
    "notification",
    "for_each",
];

/// Values of a transformer's `transform`.
pub const TRANSFORMS: &[&str] = &["extract_from_json", "cast_to", "str_split", "encode_to"];

/// Values of a transformer's `encode_format`.
pub const ENCODE_FORMATS: &[&str] = &["csv", "xml"];

/// Values of a notification's `channel`.
pub const NOTIFICATION_CHANNELS: &[&str] = &["webhook", "slack"];

/// HTTP methods an api_call task may use.
pub const HTTP_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];

/// Keys every task has. The type-specific structs declare the rest.
pub(crate) const COMMON_TASK_KEYS: &[&str] = &["name", "type", "timeout_ms", "max_attempts"];

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct CommonTaskFields {
    pub name: String,
    #[serde(rename = "type")]
    pub task_type: String,
    pub timeout_ms: Option<u64>,
    pub max_attempts: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct QueryTask {
    source: String,
    sql: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ConditionTask {
    expression: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct TransformerTask {
    transform: String,
    json_path: String,
    cast_to: String,
    delimiter: String,
    encode_format: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ProcessorTask {
    jq: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ApiCallTask {
    url: String,
    method: String,
    payload: String,
    query_string: String,
    headers: BTreeMap<String, String>,
    auth: Option<AuthSpec>,
    accept_error_status: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct NotificationTask {
    channel: String,
    url: String,
    body: String,
    severity: String,
    auth: Option<AuthSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ForEachTask {}

/// HTTP authentication of an api_call or notification. Secrets are named by environment
/// variable, so the file never contains them.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum AuthSpec {
    None,
    Basic { user: String, password_env: String },
    Bearer { token_env: String },
    Header { name: String, value_env: String },
}

/// Builds the message fields of task `path` of type `task_type` from its type-specific
/// keys. Returns `None` after pushing each problem found.
pub(crate) fn build_task_kind(
    task_type: &str,
    mapping: &Mapping,
    path: &str,
    problems: &mut ProblemList,
) -> Option<TaskKind> {
    let what = format!("a {task_type} task");
    let mut check = FieldCheck {
        path,
        problems,
        rejected_keys: BTreeSet::new(),
        valid: true,
    };

    let kind = match task_type {
        "query" => {
            let task: QueryTask = check.decode(mapping, &what);
            check.require(
                "source",
                &task.source,
                "the name of a source in [sources] of config.toml",
            );
            check.require("sql", &task.sql, "the SQL statement to run");
            TaskKind::RunQuery(RunQuery {
                source: Source {
                    name: task.source,
                    ..Source::default()
                },
                query: task.sql,
            })
        }
        "condition" => {
            let task: ConditionTask = check.decode(mapping, &what);
            check.require(
                "expression",
                &task.expression,
                "a boolean expression such as `AVG(x) > 4`",
            );
            TaskKind::CheckCondition(CheckCondition {
                expression: task.expression,
            })
        }
        "transformer" => {
            let task: TransformerTask = check.decode(mapping, &what);
            check_transformer(&task, &mut check);
            TaskKind::TransformData(TransformData {
                transform_type: task.transform,
                json_query_expression: task.json_path,
                delimiter: task.delimiter,
                cast_to_type: task.cast_to,
                decode_format: String::new(),
                encode_format: task.encode_format,
            })
        }
        "processor" => {
            let task: ProcessorTask = check.decode(mapping, &what);
            check.require("jq", &task.jq, "the jq program applied to the input");
            TaskKind::ProcessData(ProcessData {
                expression: task.jq,
                strategy: String::new(),
            })
        }
        "api_call" => {
            let task: ApiCallTask = check.decode(mapping, &what);
            build_api_call(task, &mut check)
        }
        "notification" => {
            let task: NotificationTask = check.decode(mapping, &what);
            build_notification(task, &mut check)
        }
        "for_each" => {
            let _: ForEachTask = check.decode(mapping, &what);
            TaskKind::RunForEach
        }
        _ => unreachable!("the caller checks the task type against TASK_TYPES"),
    };

    check.valid.then_some(kind)
}

/// Pushes problems about the fields of one task and remembers whether any was found.
struct FieldCheck<'a> {
    path: &'a str,
    problems: &'a mut ProblemList,
    /// Keys already reported while decoding, whose later checks are skipped.
    rejected_keys: BTreeSet<String>,
    valid: bool,
}

impl FieldCheck<'_> {
    fn decode<T: DeserializeOwned + Default>(&mut self, mapping: &Mapping, what: &str) -> T {
        let decoded =
            decode_mapping::<T>(mapping, self.path, COMMON_TASK_KEYS, what, self.problems);
        self.valid &= decoded.complete;
        self.rejected_keys = decoded.rejected_keys;
        decoded.value
    }

    /// Pushes a problem at `key` (such as `sql` or `auth.user`) unless that key, or the
    /// mapping it is in, was already reported while decoding.
    fn fail(&mut self, key: &str, message: String) {
        self.valid = false;
        let top_key = key.split('.').next().unwrap_or(key);
        if self.rejected_keys.contains(top_key) {
            return;
        }
        self.problems.push(join_path(self.path, key), message);
    }

    fn require(&mut self, key: &str, value: &str, content: &str) {
        if value.trim().is_empty() {
            self.fail(key, format!("missing field; set it to {content}"));
        }
    }

    fn require_one_of(&mut self, key: &str, value: &str, allowed: &[&str]) {
        if value.is_empty() {
            self.fail(
                key,
                format!("missing field; set it to one of: {}", allowed.join(", ")),
            );
        } else if !allowed.contains(&value) {
            self.fail(
                key,
                format!(
                    "invalid value {value:?}; use one of: {}",
                    allowed.join(", ")
                ),
            );
        }
    }

    fn reject_unused(&mut self, key: &str, value: &str, transform: &str) {
        if !value.is_empty() {
            self.fail(key, format!("not used by transform {transform}; remove it"));
        }
    }

    fn require_http_url(&mut self, key: &str, url: &str) {
        if url.trim().is_empty() {
            self.fail(
                key,
                "missing field; set it to an http:// or https:// URL".to_owned(),
            );
        } else if !(url.starts_with("http://") || url.starts_with("https://")) {
            self.fail(
                key,
                format!("invalid URL {url:?}; it must start with http:// or https://"),
            );
        }
    }
}

fn check_transformer(task: &TransformerTask, check: &mut FieldCheck<'_>) {
    check.require_one_of("transform", &task.transform, TRANSFORMS);

    // Each transform reads one parameter, so a parameter of another transform is a mistake.
    let parameters = [
        ("json_path", task.json_path.as_str(), "extract_from_json"),
        ("cast_to", task.cast_to.as_str(), "cast_to"),
        ("delimiter", task.delimiter.as_str(), "str_split"),
        ("encode_format", task.encode_format.as_str(), "encode_to"),
    ];
    if TRANSFORMS.contains(&task.transform.as_str()) {
        for (key, value, used_by) in parameters {
            if task.transform != used_by {
                check.reject_unused(key, value, &task.transform);
            }
        }
    }

    match task.transform.as_str() {
        "extract_from_json" => check.require(
            "json_path",
            &task.json_path,
            "a gjson path such as `0.species`",
        ),
        // NOTE: the cast_to value is not checked here because the transformer executor defines the types.
        "cast_to" => check.require(
            "cast_to",
            &task.cast_to,
            "the type to cast to, such as `integer`",
        ),
        // A delimiter may be a space, so only an empty one is missing.
        "str_split" if task.delimiter.is_empty() => check.fail(
            "delimiter",
            "missing field; set it to the string to split on, such as \",\"".to_owned(),
        ),
        "encode_to" => check.require_one_of("encode_format", &task.encode_format, ENCODE_FORMATS),
        _ => {}
    }
}

fn build_api_call(task: ApiCallTask, check: &mut FieldCheck<'_>) -> TaskKind {
    check.require_http_url("url", &task.url);

    let method = match task.method.trim() {
        "" => "POST".to_owned(),
        method => method.to_ascii_uppercase(),
    };
    if !HTTP_METHODS.contains(&method.as_str()) {
        check.fail(
            "method",
            format!(
                "invalid HTTP method {:?}; use one of: {}",
                task.method,
                HTTP_METHODS.join(", ")
            ),
        );
    }

    // No headers are sent as "", the default of the message field, rather than "{}".
    let headers = if task.headers.is_empty() {
        String::new()
    } else {
        serde_json::to_string(&task.headers).expect("a map of strings serializes to JSON")
    };

    let mut integration = integration_with_auth(task.auth, check);
    integration.integration_type = "api".to_owned();
    integration.value = task.url;
    integration.method = method.clone();

    TaskKind::CallApi(CallApi {
        method,
        payload: task.payload,
        query_string: task.query_string,
        headers,
        attached_file_name: String::new(),
        integration,
        accept_error_status: task.accept_error_status,
    })
}

fn build_notification(task: NotificationTask, check: &mut FieldCheck<'_>) -> TaskKind {
    check.require_one_of("channel", &task.channel, NOTIFICATION_CHANNELS);
    check.require_http_url("url", &task.url);
    check.require(
        "body",
        &task.body,
        "the message text, which may use {{...}} expressions",
    );

    let mut integration = integration_with_auth(task.auth, check);
    integration.integration_type = task.channel.clone();
    integration.value = task.url;
    integration.method = "POST".to_owned();

    TaskKind::SendNotification(SendNotification {
        notification_type: task.channel,
        body: task.body,
        integration,
        severity: task.severity,
        attached_file_name: String::new(),
        is_confirmed: false,
    })
}

/// Translates `auth` into the integration's auth fields, checking that each named
/// environment variable and header name is set.
fn integration_with_auth(auth: Option<AuthSpec>, check: &mut FieldCheck<'_>) -> ApiIntegration {
    let mut integration = ApiIntegration {
        auth_type: "none".to_owned(),
        ..ApiIntegration::default()
    };
    let Some(auth) = auth else {
        return integration;
    };

    match auth {
        AuthSpec::None => {}
        AuthSpec::Basic { user, password_env } => {
            check.require("auth.user", &user, "the user name");
            check.require(
                "auth.password_env",
                &password_env,
                "the environment variable that contains the password",
            );
            integration.auth_type = "basic".to_owned();
            integration.auth_basic_user_name = user;
            integration.auth_basic_password_env = password_env;
        }
        AuthSpec::Bearer { token_env } => {
            check.require(
                "auth.token_env",
                &token_env,
                "the environment variable that contains the token",
            );
            integration.auth_type = "bearer".to_owned();
            integration.auth_bearer_token_env = token_env;
        }
        AuthSpec::Header { name, value_env } => {
            check.require("auth.name", &name, "the header name, such as X-Api-Key");
            check.require(
                "auth.value_env",
                &value_env,
                "the environment variable that contains the header value",
            );
            integration.auth_type = "header".to_owned();
            integration.auth_header_name = name;
            integration.auth_header_value_env = value_env;
        }
    }
    integration
}
