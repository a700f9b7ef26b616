//! HTTP requests of api_call and notification tasks: authentication, sending and the
//! classification of failures.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::Method;

use crate::messages::ApiIntegration;

/// Bytes of a response body quoted in a status failure.
const BODY_EXCERPT_BYTES: usize = 500;

/// Failure of an HTTP request made by a task.
#[derive(Debug, thiserror::Error)]
pub enum HttpCallError {
    /// The task's request settings are unusable: a bad method, URL or header, or a missing
    /// credential variable.
    #[error("{0}")]
    InvalidRequest(String),
    /// The request did not get a response.
    #[error("request to {target} failed: {detail}")]
    Transport {
        target: String,
        detail: String,
        /// Connection failures and timeouts; other transport errors are not retried.
        retryable: bool,
    },
    /// The response status is not 2xx.
    #[error("{target} returned HTTP {status}: {body_excerpt}")]
    Status {
        target: String,
        status: u16,
        body_excerpt: String,
    },
}

impl HttpCallError {
    /// Checks whether sending the request again may succeed: connection failures, timeouts, and the
    /// statuses 429 and 5xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            HttpCallError::InvalidRequest(_) => false,
            HttpCallError::Transport { retryable, .. } => *retryable,
            HttpCallError::Status { status, .. } => *status == 429 || *status >= 500,
        }
    }
}

/// One request of a task.
pub struct TaskRequest<'a> {
    pub method: Method,
    pub url: String,
    /// Name of the target in errors. A Slack webhook URL is a credential, so it is not
    /// always the URL itself.
    pub target: String,
    pub headers: HeaderMap,
    pub body: Option<Vec<u8>>,
    pub integration: &'a ApiIntegration,
    /// Return the body of a non-2xx response instead of failing.
    pub accept_error_status: bool,
}

/// Parses an HTTP method name, any case.
pub fn parse_method(name: &str) -> Result<Method, HttpCallError> {
    Method::from_bytes(name.trim().to_ascii_uppercase().as_bytes())
        .map_err(|_| HttpCallError::InvalidRequest(format!("HTTP method {name:?} is invalid")))
}

/// Sets `Content-Type: application/json` when no content type is set and the body is JSON.
pub fn default_json_content_type(headers: &mut HeaderMap, body: &[u8]) {
    if !headers.contains_key(CONTENT_TYPE)
        && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
    {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
}

/// Adds one header, rejecting names and values that HTTP does not allow.
pub fn insert_header(
    headers: &mut HeaderMap,
    name: &str,
    value: &str,
) -> Result<(), HttpCallError> {
    let header_name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| HttpCallError::InvalidRequest(format!("header name {name:?} is invalid")))?;
    let header_value = HeaderValue::from_str(value).map_err(|_| {
        HttpCallError::InvalidRequest(format!(
            "the value of header {name} contains characters HTTP does not allow"
        ))
    })?;
    headers.insert(header_name, header_value);
    Ok(())
}

/// Sends the request and returns the response body.
pub async fn send(
    client: &reqwest::Client,
    request: TaskRequest<'_>,
) -> Result<Vec<u8>, HttpCallError> {
    let url = reqwest::Url::parse(&request.url).map_err(|error| {
        HttpCallError::InvalidRequest(format!("URL {:?} is invalid: {error}", request.target))
    })?;
    let mut builder = client.request(request.method, url).headers(request.headers);
    builder = apply_auth(builder, request.integration)?;
    if let Some(body) = request.body {
        builder = builder.body(body);
    }

    let response = builder
        .send()
        .await
        .map_err(|error| transport_error(&request.target, error))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|error| transport_error(&request.target, error))?;

    if status.is_success() || request.accept_error_status {
        return Ok(body.to_vec());
    }
    Err(HttpCallError::Status {
        target: request.target,
        status: status.as_u16(),
        body_excerpt: excerpt(&body),
    })
}

/// Adds the credentials that `integration.auth_type` names, read from environment variables.
fn apply_auth(
    builder: reqwest::RequestBuilder,
    integration: &ApiIntegration,
) -> Result<reqwest::RequestBuilder, HttpCallError> {
    match integration.auth_type.to_ascii_lowercase().as_str() {
        "" | "none" => Ok(builder),
        "bearer" => {
            let token = read_secret(
                "integration.auth_bearer_token_env",
                &integration.auth_bearer_token_env,
            )?;
            Ok(builder.bearer_auth(token))
        }
        "basic" => {
            let password = read_secret(
                "integration.auth_basic_password_env",
                &integration.auth_basic_password_env,
            )?;
            Ok(builder.basic_auth(&integration.auth_basic_user_name, Some(password)))
        }
        "header" => {
            let value = read_secret(
                "integration.auth_header_value_env",
                &integration.auth_header_value_env,
            )?;
            let name =
                HeaderName::from_bytes(integration.auth_header_name.as_bytes()).map_err(|_| {
                    HttpCallError::InvalidRequest(format!(
                        "integration.auth_header_name {:?} is not a valid header name",
                        integration.auth_header_name
                    ))
                })?;
            let mut header_value = HeaderValue::from_str(&value).map_err(|_| {
                HttpCallError::InvalidRequest(format!(
                    "the value of environment variable {} contains characters HTTP headers do not allow",
                    integration.auth_header_value_env
                ))
            })?;
            header_value.set_sensitive(true);
            Ok(builder.header(name, header_value))
        }
        other => Err(HttpCallError::InvalidRequest(format!(
            "integration.auth_type {other:?} is not supported; use none, bearer, basic or header"
        ))),
    }
}

/// Reads a credential from the environment variable named by the field `field`. Errors name
/// the variable, never its value.
fn read_secret(field: &str, variable: &str) -> Result<String, HttpCallError> {
    if variable.is_empty() {
        return Err(HttpCallError::InvalidRequest(format!(
            "{field} is empty; set it to the name of the environment variable that contains the credential"
        )));
    }
    std::env::var(variable).map_err(|_| {
        HttpCallError::InvalidRequest(format!(
            "environment variable {variable} (named by {field}) is not set in the runtime's environment"
        ))
    })
}

fn transport_error(target: &str, error: reqwest::Error) -> HttpCallError {
    let retryable = error.is_connect() || error.is_timeout();
    HttpCallError::Transport {
        target: target.to_owned(),
        detail: error_chain(&error.without_url()),
        retryable,
    }
}

/// Joins an error with its sources, because reqwest's own message leaves out the cause
/// ("connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Cuts a response body to its first 500 bytes as text, at a character boundary.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(BODY_EXCERPT_BYTES)]);
    let mut excerpt = text.trim_end_matches('\u{FFFD}').to_owned();
    if body.len() > BODY_EXCERPT_BYTES {
        excerpt.push('…');
    }
    excerpt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_is_limited() {
        let body = "é".repeat(400);
        let text = excerpt(body.as_bytes());
        assert!(text.ends_with('…'));
        assert_eq!(text.trim_end_matches('…').len(), BODY_EXCERPT_BYTES);
    }

    #[test]
    fn status_retry_rules() {
        let status = |status| HttpCallError::Status {
            target: "t".into(),
            status,
            body_excerpt: String::new(),
        };
        assert!(status(429).is_retryable());
        assert!(status(503).is_retryable());
        assert!(!status(404).is_retryable());
    }

    #[test]
    fn missing_credential_names_variable() {
        let error = read_secret(
            "integration.auth_bearer_token_env",
            "YLEM_TEST_SURELY_UNSET_TOKEN",
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("YLEM_TEST_SURELY_UNSET_TOKEN"),
            "{error}"
        );
        assert!(!error.is_retryable());
    }

    #[test]
    fn json_body_gets_content_type() {
        let mut headers = HeaderMap::new();
        default_json_content_type(&mut headers, br#"{"a":1}"#);
        assert_eq!(headers[CONTENT_TYPE], "application/json");

        let mut plain = HeaderMap::new();
        default_json_content_type(&mut plain, b"hello");
        assert!(!plain.contains_key(CONTENT_TYPE));
    }
}
