//! Dead-letter topics: where records that no stage can read are kept, with the reason.
//!
//! A record that is not JSON, has no message name, or names an unknown message type goes to
//! `<topic><topics.dead_letter_suffix>` unchanged (same key, payload and headers), with headers
//! that give the reason and where it came from. Its partition then moves on.

use std::sync::Arc;

use tracing::warn;

use crate::messages::DecodeError;
use crate::transport::{OutgoingRecord, Record, Transport};

pub const HEADER_REASON: &str = "x-dead-letter-reason";
pub const HEADER_ORIGINAL_TOPIC: &str = "x-original-topic";
pub const HEADER_ORIGINAL_PARTITION: &str = "x-original-partition";
pub const HEADER_ORIGINAL_OFFSET: &str = "x-original-offset";

#[derive(Clone)]
pub struct DeadLetters {
    transport: Arc<dyn Transport>,
    suffix: String,
}

impl DeadLetters {
    pub fn new(transport: Arc<dyn Transport>, suffix: &str) -> DeadLetters {
        DeadLetters {
            transport,
            suffix: suffix.to_owned(),
        }
    }

    /// Returns the dead-letter topic of `topic`.
    pub fn topic_for(&self, topic: &str) -> String {
        format!("{topic}{}", self.suffix)
    }

    /// Returns whether a decode error means the record can never be read, rather than a readable
    /// message with invalid fields.
    pub fn is_unreadable(error: &DecodeError) -> bool {
        matches!(
            error,
            DecodeError::NotJson(_) | DecodeError::MissingName | DecodeError::UnknownName(_)
        )
    }

    /// Produces the record to its dead-letter topic and waits for the acknowledgement.
    pub async fn send(&self, record: &Record, reason: &str) -> anyhow::Result<()> {
        let topic = self.topic_for(&record.topic);
        warn!(
            topic = %record.topic,
            partition = record.partition,
            offset = record.offset,
            dead_letter_topic = %topic,
            %reason,
            "record sent to the dead-letter topic"
        );
        let mut headers = record.headers.clone();
        headers.push((HEADER_REASON.to_owned(), reason.as_bytes().to_vec()));
        headers.push((
            HEADER_ORIGINAL_TOPIC.to_owned(),
            record.topic.as_bytes().to_vec(),
        ));
        headers.push((
            HEADER_ORIGINAL_PARTITION.to_owned(),
            record.partition.to_string().into_bytes(),
        ));
        headers.push((
            HEADER_ORIGINAL_OFFSET.to_owned(),
            record.offset.to_string().into_bytes(),
        ));
        let outgoing = OutgoingRecord {
            topic: topic.clone(),
            partition: None,
            key: record.key.clone(),
            headers,
            payload: record.payload.clone(),
        };
        self.transport.send(outgoing).await.map_err(|err| {
            anyhow::anyhow!("failed to produce to dead-letter topic {topic}: {err}")
        })?;
        Ok(())
    }
}
