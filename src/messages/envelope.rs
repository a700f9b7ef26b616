//! The JSON envelope around every record value, and decoding by message name.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::result::{TaskRunResult, RESULT_MESSAGE_NAME};
use super::task::{is_task_message_name, TaskMessage};

/// The in-JSON header that names the message type.
pub const HEADER_MESSAGE_NAME: &str = "X-Message-Name";

#[derive(Serialize, Deserialize)]
struct RawEnvelope {
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    message: serde_json::Value,
}

/// A decoded record value.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Task(Box<TaskMessage>),
    Result(Box<TaskRunResult>),
    /// `source.status_toggled`: a query outcome contradicted the source's recorded status.
    SourceStatusToggled {
        uuid: uuid::Uuid,
    },
}

/// Failure to decode a record value. Each variant's text names the problem.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("record value is not a JSON envelope: {0}")]
    NotJson(serde_json::Error),
    #[error("envelope has no {HEADER_MESSAGE_NAME} header")]
    MissingName,
    #[error("unknown message name {0:?}")]
    UnknownName(String),
    #[error("invalid {name} message: {source}")]
    InvalidMessage {
        name: String,
        source: serde_json::Error,
    },
}

impl Message {
    /// Returns the envelope `X-Message-Name` of this message.
    pub fn name(&self) -> &str {
        match self {
            Message::Task(task) => task.kind.message_name(),
            Message::Result(_) => RESULT_MESSAGE_NAME,
            Message::SourceStatusToggled { .. } => "source.status_toggled",
        }
    }

    /// Decodes a record value.
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        let raw: RawEnvelope = serde_json::from_slice(bytes).map_err(DecodeError::NotJson)?;
        let name = match raw.headers.get(HEADER_MESSAGE_NAME) {
            Some(name) if !name.is_empty() => name.clone(),
            _ => return Err(DecodeError::MissingName),
        };
        let invalid = |source| DecodeError::InvalidMessage {
            name: name.clone(),
            source,
        };

        if name == RESULT_MESSAGE_NAME {
            let result: TaskRunResult = serde_json::from_value(raw.message).map_err(invalid)?;
            return Ok(Message::Result(Box::new(result)));
        }
        if name == "source.status_toggled" {
            #[derive(Deserialize)]
            struct Toggled {
                uuid: uuid::Uuid,
            }
            let toggled: Toggled = serde_json::from_value(raw.message).map_err(invalid)?;
            return Ok(Message::SourceStatusToggled { uuid: toggled.uuid });
        }
        if is_task_message_name(&name) {
            let task = TaskMessage::from_json(&name, raw.message).map_err(invalid)?;
            return Ok(Message::Task(Box::new(task)));
        }
        Err(DecodeError::UnknownName(name))
    }

    /// Encodes the message as a record value.
    pub fn encode(&self) -> Vec<u8> {
        let message = match self {
            Message::Task(task) => task.to_json(),
            Message::Result(result) => result.to_json(),
            Message::SourceStatusToggled { uuid } => serde_json::json!({ "uuid": uuid }),
        };
        let envelope = RawEnvelope {
            headers: BTreeMap::from([(HEADER_MESSAGE_NAME.to_owned(), self.name().to_owned())]),
            message,
        };
        serde_json::to_vec(&envelope).expect("envelope serializes")
    }
}
