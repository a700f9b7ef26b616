//! The transport interface between stages: Kafka-shaped topics, partitions and consumer groups.
//!
//! Stages talk only to [`Transport`] and [`Consumer`], so the in-process bus of the embedded
//! default ([`memory::MemoryBus`]) and a Kafka broker are interchangeable under every actor.
//! The semantics are Kafka's: keyed records land on a partition by key hash, a consumer group
//! shares the partitions of its topics among its members, and each member commits the next
//! offset to read per partition.

pub mod kafka;
pub mod memory;

use std::sync::Arc;

use async_trait::async_trait;

/// A partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: u32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: u32) -> TopicPartition {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// A record to produce. With `partition` unset, the partition is chosen by key.
#[derive(Clone)]
pub struct OutgoingRecord {
    pub topic: String,
    pub partition: Option<u32>,
    pub key: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub payload: Vec<u8>,
}

impl OutgoingRecord {
    /// Builds a record keyed by `key` with no headers.
    pub fn keyed(
        topic: impl Into<String>,
        key: impl Into<Vec<u8>>,
        payload: Vec<u8>,
    ) -> OutgoingRecord {
        OutgoingRecord {
            topic: topic.into(),
            partition: None,
            key: Some(key.into()),
            headers: Vec::new(),
            payload,
        }
    }
}

/// A consumed record.
#[derive(Clone)]
pub struct Record {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub key: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub payload: Vec<u8>,
}

impl Record {
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition::new(self.topic.clone(), self.partition)
    }

    /// Returns the value of the first header named `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_slice())
    }

    /// Returns the key as UTF-8 text, for logs.
    pub fn key_text(&self) -> String {
        self.key
            .as_deref()
            .map(|key| String::from_utf8_lossy(key).into_owned())
            .unwrap_or_default()
    }
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("key", &self.key_text())
            .field("payload_bytes", &self.payload.len())
            .finish()
    }
}

/// Partition and offset of a produced record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub partition: u32,
    pub offset: u64,
}

/// Event delivered to a group member: its partitions change, or a record arrives.
#[derive(Debug, Clone)]
pub enum ConsumerEvent {
    Assigned(Vec<TopicPartition>),
    /// The partitions are taken away; the member must stop processing them. With `drained`
    /// set, the transport keeps the partitions until the member calls [`DrainAck::done`],
    /// after finishing its in-flight records and committing their offsets.
    Revoked {
        partitions: Vec<TopicPartition>,
        drained: Option<DrainAck>,
    },
    Record(Record),
}

/// Signals that revoked partitions have nothing in flight and their offsets are committed.
#[derive(Clone)]
pub struct DrainAck {
    sender: std::sync::Arc<std::sync::Mutex<Option<std::sync::mpsc::SyncSender<()>>>>,
}

impl DrainAck {
    /// Creates an acknowledgement and the receiver the transport waits on.
    pub fn new() -> (DrainAck, std::sync::mpsc::Receiver<()>) {
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        let ack = DrainAck {
            sender: std::sync::Arc::new(std::sync::Mutex::new(Some(sender))),
        };
        (ack, receiver)
    }

    /// Releases the partitions; later calls do nothing.
    pub fn done(&self) {
        let sender = self
            .sender
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(sender) = sender {
            let _ = sender.try_send(());
        }
    }
}

impl std::fmt::Debug for DrainAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DrainAck")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("topic {0} does not exist")]
    UnknownTopic(String),
    #[error("partition {partition} does not exist in topic {topic} ({count} partitions)")]
    UnknownPartition {
        topic: String,
        partition: u32,
        count: u32,
    },
    #[error("topic {topic} has {existing} partitions but the configuration needs {required}; add partitions to the topic or lower topics.partitions.{topic}")]
    TooFewPartitions {
        topic: String,
        existing: u32,
        required: u32,
    },
    #[error("the consumer has left its group")]
    Closed,
    #[error("transport failure: {0}")]
    Other(String),
}

/// A producer and consumer factory for one cluster.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Creates the topic with `partitions` partitions if it is missing. An existing topic with
    /// fewer partitions is an error; one with more is used as it is.
    async fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<(), TransportError>;

    /// Current number of partitions of a topic.
    async fn partition_count(&self, topic: &str) -> Result<u32, TransportError>;

    /// Produces a record and waits until the cluster has acknowledged it.
    async fn send(&self, record: OutgoingRecord) -> Result<Delivery, TransportError>;

    /// Joins consumer group `group` subscribed to `topics`.
    async fn subscribe(
        &self,
        group: &str,
        topics: &[String],
    ) -> Result<Arc<dyn Consumer>, TransportError>;
}

/// One member of a consumer group.
#[async_trait]
pub trait Consumer: Send + Sync + 'static {
    /// Waits for the next assignment change or record.
    async fn next_event(&self) -> Result<ConsumerEvent, TransportError>;

    /// Stores `next_offset` as the committed position of a partition: everything before it is done.
    fn commit(&self, partition: &TopicPartition, next_offset: u64) -> Result<(), TransportError>;

    /// Stops fetching a partition until [`Consumer::resume`].
    fn pause(&self, partition: &TopicPartition);

    fn resume(&self, partition: &TopicPartition);

    /// Leaves the group; its partitions go to the remaining members.
    fn close(&self);
}

/// Builds the transport that `config` selects.
pub async fn connect(config: &crate::config::Config) -> anyhow::Result<Arc<dyn Transport>> {
    match config.transport.kind {
        crate::config::TransportKind::Embedded => Ok(Arc::new(memory::MemoryBus::new())),
        crate::config::TransportKind::Kafka => {
            let transport = kafka::KafkaTransport::connect(&config.transport.kafka).await?;
            Ok(Arc::new(transport))
        }
    }
}

/// Encodes `message` and produces it keyed by `key`, waiting for the acknowledgement.
pub async fn send_message(
    transport: &dyn Transport,
    topic: &str,
    key: &str,
    message: &crate::messages::Message,
    headers: Vec<(String, Vec<u8>)>,
) -> Result<Delivery, TransportError> {
    let mut record = OutgoingRecord::keyed(topic, key, message.encode());
    record.headers = headers;
    transport.send(record).await
}

/// Chooses a partition for a key the way the Ylem services' Go producer does (sarama's hash
/// partitioner with FNV-1a 32): the hash as a signed 32-bit integer, remainder by the partition
/// count, negated when negative. Both runtimes therefore place a run on the same partition.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in key {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    let count = i64::from(partitions.max(1));
    let remainder = i64::from(hash as i32) % count;
    remainder.unsigned_abs() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_partitioning_is_stable() {
        // FNV-1a 32 of "a" is 0xe40c292c, which is -468965076 as a signed integer.
        assert_eq!(partition_for_key(b"a", 1000), 76);
        assert_eq!(
            partition_for_key(b"run-1", 8),
            partition_for_key(b"run-1", 8)
        );
        assert!(partition_for_key(b"anything", 3) < 3);
    }
}
