//! `api_call` tasks: one HTTP request; the output is the response body.

use reqwest::header::HeaderMap;
use reqwest::Method;

use super::expression::{render_template, Evaluator};
use super::http::{self, HttpCallError, TaskRequest};
use super::{TaskFailure, TaskOutput};
use crate::messages::{CallApi, ErrorCode, Meta};

/// Sends the request and outputs the response body.
///
/// The method is `type`, else `integration.method`, else POST. The URL is `integration.value`
/// followed by the templated `query_string`. The body is the templated `payload`, or the input
/// when `payload` is empty, except that GET and HEAD requests have no body.
pub async fn run(
    call: &CallApi,
    input: &[u8],
    meta: &Meta,
    client: &reqwest::Client,
) -> Result<TaskOutput, TaskFailure> {
    let request = build_request(call, input, meta).map_err(to_task_failure)?;
    let body = http::send(client, request).await.map_err(to_task_failure)?;
    Ok(TaskOutput::single(body))
}

fn build_request<'a>(
    call: &'a CallApi,
    input: &[u8],
    meta: &Meta,
) -> Result<TaskRequest<'a>, HttpCallError> {
    let method_name = [call.method.as_str(), call.integration.method.as_str()]
        .into_iter()
        .find(|name| !name.trim().is_empty())
        .unwrap_or("POST");
    let method = http::parse_method(method_name)?;

    let evaluator = Evaluator::new(input, &meta.env_vars);
    let render = |field: &str, template: &str| {
        render_template(template, &evaluator)
            .map_err(|error| HttpCallError::InvalidRequest(format!("api_call {field}: {error}")))
    };

    if call.integration.value.trim().is_empty() {
        return Err(HttpCallError::InvalidRequest(
            "api_call integration.value (the target URL) is empty".to_owned(),
        ));
    }
    let url = append_query_string(
        call.integration.value.trim(),
        &render("query_string", &call.query_string)?,
    );

    let mut headers = parse_headers(&render("headers", &call.headers)?)?;
    let body = if method == Method::GET || method == Method::HEAD {
        None
    } else if call.payload.is_empty() {
        Some(input.to_vec())
    } else {
        Some(render("payload", &call.payload)?.into_bytes())
    };
    if let Some(body) = &body {
        http::default_json_content_type(&mut headers, body);
    }

    Ok(TaskRequest {
        method,
        target: url.clone(),
        url,
        headers,
        body,
        integration: &call.integration,
        accept_error_status: call.accept_error_status,
    })
}

fn append_query_string(url: &str, query_string: &str) -> String {
    let query_string = query_string.trim().trim_start_matches(['?', '&']);
    if query_string.is_empty() {
        return url.to_owned();
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{query_string}")
}

/// Parses `headers`, a JSON object. String values are used as they are and other values as
/// their JSON text.
fn parse_headers(text: &str) -> Result<HeaderMap, HttpCallError> {
    let mut headers = HeaderMap::new();
    if text.trim().is_empty() {
        return Ok(headers);
    }
    let parsed: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|error| {
            HttpCallError::InvalidRequest(format!(
                "api_call headers must be a JSON object of strings: {error}"
            ))
        })?;
    for (name, value) in parsed {
        let value = match value {
            serde_json::Value::String(text) => text,
            other => other.to_string(),
        };
        http::insert_header(&mut headers, &name, &value)?;
    }
    Ok(headers)
}

fn to_task_failure(error: HttpCallError) -> TaskFailure {
    let code = match &error {
        HttpCallError::InvalidRequest(_) => ErrorCode::BadRequest,
        HttpCallError::Transport { .. } => ErrorCode::ApiCallFailed,
        HttpCallError::Status { .. } => ErrorCode::ApiCallStatus,
    };
    TaskFailure {
        code,
        retryable: error.is_retryable(),
        message: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::ApiIntegration;

    fn call(fields: serde_json::Value) -> CallApi {
        serde_json::from_value(fields).unwrap()
    }

    #[test]
    fn query_string_is_appended() {
        assert_eq!(append_query_string("http://h/p", "a=1"), "http://h/p?a=1");
        assert_eq!(
            append_query_string("http://h/p?x=2", "?a=1"),
            "http://h/p?x=2&a=1"
        );
        assert_eq!(append_query_string("http://h/p", ""), "http://h/p");
    }

    #[test]
    fn payload_and_query_are_templated() {
        let call = call(serde_json::json!({
            "payload": "{\"total\": {{SUM(n)}}}",
            "query_string": "count={{COUNT(n)}}",
            "integration": {"value": "http://127.0.0.1:1/x"},
        }));
        let request = build_request(&call, br#"[{"n":2},{"n":3}]"#, &Meta::default()).unwrap();
        assert_eq!(request.method, Method::POST);
        assert_eq!(request.url, "http://127.0.0.1:1/x?count=2");
        assert_eq!(request.body.as_deref(), Some(br#"{"total": 5}"#.as_slice()));
        assert_eq!(request.headers["content-type"], "application/json");
    }

    #[test]
    fn empty_payload_sends_input() {
        let call = call(serde_json::json!({"type": "put", "integration": {"value": "http://h/"}}));
        let request = build_request(&call, b"raw", &Meta::default()).unwrap();
        assert_eq!(request.method, Method::PUT);
        assert_eq!(request.body.as_deref(), Some(b"raw".as_slice()));
    }

    #[test]
    fn integration_method_is_fallback() {
        let mut call =
            call(serde_json::json!({"integration": {"value": "http://h/", "method": "GET"}}));
        call.integration = ApiIntegration {
            method: "GET".into(),
            ..call.integration
        };
        let request = build_request(&call, b"ignored", &Meta::default()).unwrap();
        assert_eq!(request.method, Method::GET);
        assert!(request.body.is_none());
    }

    #[test]
    fn headers_must_be_object() {
        let call =
            call(serde_json::json!({"headers": "[1]", "integration": {"value": "http://h/"}}));
        let Err(error) = build_request(&call, b"", &Meta::default()) else {
            panic!("a header array was accepted");
        };
        assert!(error.to_string().contains("JSON object"), "{error}");
    }

    #[test]
    fn extra_headers_are_set() {
        let call = call(serde_json::json!({
            "headers": "{\"X-Count\": \"{{COUNT(n)}}\", \"X-Num\": 5}",
            "integration": {"value": "http://h/"},
        }));
        let request = build_request(&call, br#"[{"n":1},{"n":1}]"#, &Meta::default()).unwrap();
        assert_eq!(request.headers["x-count"], "2");
        assert_eq!(request.headers["x-num"], "5");
    }

    #[test]
    fn empty_url_is_bad_request() {
        let call = call(serde_json::json!({}));
        let Err(error) = build_request(&call, b"", &Meta::default()) else {
            panic!("an empty URL was accepted");
        };
        assert_eq!(to_task_failure(error).code, ErrorCode::BadRequest);
    }
}
