//! `notification` tasks: a templated message sent to a webhook or a Slack incoming webhook.

use reqwest::header::HeaderMap;
use reqwest::Method;
use serde::Serialize;
use uuid::Uuid;

use super::expression::{render_template, Evaluator};
use super::http::{self, HttpCallError, TaskRequest};
use super::{TaskFailure, TaskOutput};
use crate::messages::{ErrorCode, SendNotification, TaskCommon};

/// The JSON a `webhook` notification posts.
#[derive(Serialize)]
struct WebhookMessage<'a> {
    subject: &'a str,
    body: &'a str,
    severity: &'a str,
    pipeline_run_uuid: Uuid,
    task_uuid: Uuid,
}

/// The JSON a `slack` notification posts to an incoming webhook.
#[derive(Serialize)]
struct SlackMessage<'a> {
    text: &'a str,
}

/// Sends the notification. The output is empty, as in Ylem.
pub async fn run(
    notification: &SendNotification,
    common: &TaskCommon,
    client: &reqwest::Client,
) -> Result<TaskOutput, TaskFailure> {
    let evaluator = Evaluator::new(&common.input, &common.meta.env_vars);
    let body = render_template(&notification.body, &evaluator).map_err(|error| {
        TaskFailure::new(
            ErrorCode::NotificationFailed,
            format!("notification body: {error}"),
        )
    })?;

    let notification_type = notification.notification_type.as_str();
    let (payload, target) = match notification_type {
        "webhook" => {
            let message = WebhookMessage {
                subject: &common.task_name,
                body: &body,
                severity: &notification.severity,
                pipeline_run_uuid: common.pipeline_run_uuid,
                task_uuid: common.task_uuid,
            };
            (
                serde_json::to_vec(&message),
                notification.integration.value.trim().to_owned(),
            )
        }
        // The URL of a Slack incoming webhook is its credential, so errors name only the service.
        "slack" => (
            serde_json::to_vec(&SlackMessage { text: &body }),
            "the Slack incoming webhook".to_owned(),
        ),
        other => {
            return Err(TaskFailure::new(
                ErrorCode::BadRequest,
                format!("notification type {other} is not supported; use webhook or slack"),
            ));
        }
    };
    let payload = payload.map_err(|error| {
        TaskFailure::new(
            ErrorCode::Internal,
            format!("failed to encode the notification: {error}"),
        )
    })?;

    if notification.integration.value.trim().is_empty() {
        return Err(TaskFailure::new(
            ErrorCode::BadRequest,
            format!("{notification_type} notification integration.value (the target URL) is empty"),
        ));
    }
    let mut headers = HeaderMap::new();
    http::default_json_content_type(&mut headers, &payload);
    let request = TaskRequest {
        method: Method::POST,
        url: notification.integration.value.trim().to_owned(),
        target,
        headers,
        body: Some(payload),
        integration: &notification.integration,
        accept_error_status: false,
    };

    http::send(client, request).await.map_err(to_task_failure)?;
    Ok(TaskOutput::single(Vec::new()))
}

fn to_task_failure(error: HttpCallError) -> TaskFailure {
    let code = match &error {
        HttpCallError::InvalidRequest(_) => ErrorCode::BadRequest,
        HttpCallError::Transport { .. } | HttpCallError::Status { .. } => {
            ErrorCode::NotificationFailed
        }
    };
    TaskFailure {
        code,
        retryable: error.is_retryable(),
        message: format!("failed to send the notification: {error}"),
    }
}
