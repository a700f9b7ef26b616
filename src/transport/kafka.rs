//! The Kafka transport, through rdkafka (librdkafka).
//!
//! Producing: one idempotent producer (`acks=all`); [`Transport::send`] returns once the
//! broker acknowledged the record. A record without an explicit partition is placed by
//! [`super::partition_for_key`], the partitioner of the Ylem services, so both runtimes put a
//! run on the same partition of a shared topic.
//!
//! Consuming: each member owns a `BaseConsumer` polled on a dedicated thread, because
//! librdkafka runs rebalance callbacks on the polling thread and a revocation here blocks
//! until the member drained the partitions (see [`ConsumerEvent::Revoked`]); blocking a tokio
//! worker for that could stall the very tasks being drained. The thread hands records to the
//! async side through a bounded channel, so together with `queued.max.messages.kbytes` the
//! memory held per member stays bounded. Offsets are stored explicitly
//! (`enable.auto.offset.store=false`) and committed by librdkafka's auto-commit, and
//! synchronously when partitions are revoked.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use dashmap::DashMap;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::{
    partition_for_key, Consumer, ConsumerEvent, Delivery, DrainAck, OutgoingRecord, Record,
    TopicPartition, Transport, TransportError,
};
use crate::config::KafkaConfig;

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// Records handed from a polling thread to its async consumer before the thread waits.
const HANDOFF_CAPACITY: usize = 256;

pub struct KafkaTransport {
    config: KafkaConfig,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    partition_counts: DashMap<String, u32>,
}

impl KafkaTransport {
    /// Connects to the cluster. Fails when no broker responds to a metadata request.
    pub async fn connect(config: &KafkaConfig) -> anyhow::Result<KafkaTransport> {
        let mut producer_config = base_config(config);
        producer_config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", config.message_timeout_ms.to_string())
            .set("compression.type", "lz4");
        let producer: FutureProducer = producer_config.create().map_err(|err| {
            anyhow::anyhow!(
                "failed to create a Kafka producer for {}: {err}",
                config.bootstrap_servers
            )
        })?;
        let admin: AdminClient<DefaultClientContext> = base_config(config)
            .create()
            .map_err(|err| anyhow::anyhow!("failed to create a Kafka admin client: {err}"))?;

        let probe = producer.clone();
        tokio::task::spawn_blocking(move || probe.client().fetch_metadata(None, METADATA_TIMEOUT))
            .await?
            .map_err(|err| {
                anyhow::anyhow!(
                    "no Kafka broker responded at transport.kafka.bootstrap_servers = {}: {err}; start one (scripts/kafka.sh start) or fix the address",
                    config.bootstrap_servers
                )
            })?;
        info!(bootstrap_servers = %config.bootstrap_servers, "connected to Kafka");
        Ok(KafkaTransport {
            config: config.clone(),
            producer,
            admin,
            partition_counts: DashMap::new(),
        })
    }

    async fn fetch_partition_count(&self, topic: &str) -> Result<u32, TransportError> {
        let producer = self.producer.clone();
        let name = topic.to_owned();
        let metadata = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&name), METADATA_TIMEOUT)
        })
        .await
        .map_err(|err| TransportError::Other(err.to_string()))?
        .map_err(|err| TransportError::Other(format!("metadata of topic {topic}: {err}")))?;
        let Some(found) = metadata
            .topics()
            .iter()
            .find(|candidate| candidate.name() == topic)
        else {
            return Err(TransportError::UnknownTopic(topic.to_owned()));
        };
        if found.error().is_some() || found.partitions().is_empty() {
            return Err(TransportError::UnknownTopic(topic.to_owned()));
        }
        let count = found.partitions().len() as u32;
        self.partition_counts.insert(topic.to_owned(), count);
        Ok(count)
    }
}

fn base_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.bootstrap_servers);
    for (key, value) in &config.librdkafka {
        client.set(key, value);
    }
    client
}

fn owned_headers(headers: &[(String, Vec<u8>)]) -> OwnedHeaders {
    headers
        .iter()
        .fold(OwnedHeaders::new(), |all, (key, value)| {
            all.insert(Header {
                key,
                value: Some(value.as_slice()),
            })
        })
}

#[async_trait]
impl Transport for KafkaTransport {
    async fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<(), TransportError> {
        let new_topic = NewTopic::new(
            topic,
            partitions as i32,
            TopicReplication::Fixed(self.config.replication_factor),
        );
        let outcome = self
            .admin
            .create_topics(
                [&new_topic],
                &AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT)),
            )
            .await
            .map_err(|err| {
                TransportError::Other(format!("failed to create topic {topic}: {err}"))
            })?;
        for result in outcome {
            match result {
                Ok(_) => info!(topic, partitions, "topic created"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => {
                    return Err(TransportError::Other(format!(
                        "failed to create topic {topic}: {code}"
                    )))
                }
            }
        }
        // Metadata can lag behind a fresh topic for a moment.
        let mut attempts = 0;
        let existing = loop {
            match self.fetch_partition_count(topic).await {
                Ok(count) => break count,
                Err(err) if attempts < 50 => {
                    attempts += 1;
                    debug!(topic, error = %err, "waiting for topic metadata");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => return Err(err),
            }
        };
        if existing < partitions {
            return Err(TransportError::TooFewPartitions {
                topic: topic.to_owned(),
                existing,
                required: partitions,
            });
        }
        Ok(())
    }

    async fn partition_count(&self, topic: &str) -> Result<u32, TransportError> {
        self.fetch_partition_count(topic).await
    }

    async fn send(&self, record: OutgoingRecord) -> Result<Delivery, TransportError> {
        let partition = match (record.partition, &record.key) {
            (Some(partition), _) => Some(partition),
            (None, Some(key)) => {
                let count = match self.partition_counts.get(&record.topic).map(|count| *count) {
                    Some(count) => count,
                    None => self.fetch_partition_count(&record.topic).await?,
                };
                Some(partition_for_key(key, count))
            }
            (None, None) => None,
        };
        let mut future_record = FutureRecord::to(&record.topic)
            .payload(&record.payload)
            .headers(owned_headers(&record.headers));
        if let Some(key) = &record.key {
            future_record = future_record.key(key);
        }
        if let Some(partition) = partition {
            future_record = future_record.partition(partition as i32);
        }
        let timeout = Duration::from_millis(u64::from(self.config.message_timeout_ms));
        match self.producer.send(future_record, timeout).await {
            Ok(delivery) => Ok(Delivery {
                partition: delivery.partition as u32,
                offset: delivery.offset as u64,
            }),
            Err((err, _)) => {
                if matches!(
                    err,
                    KafkaError::MessageProduction(RDKafkaErrorCode::UnknownPartition)
                ) {
                    // The partition count changed; the next send reads it again.
                    self.partition_counts.remove(&record.topic);
                }
                Err(TransportError::Other(format!(
                    "failed to produce to {}: {err}",
                    record.topic
                )))
            }
        }
    }

    async fn subscribe(
        &self,
        group: &str,
        topics: &[String],
    ) -> Result<Arc<dyn Consumer>, TransportError> {
        for topic in topics {
            self.fetch_partition_count(topic).await?;
        }
        KafkaConsumer::start(&self.config, group, topics)
            .map(|consumer| Arc::new(consumer) as Arc<dyn Consumer>)
    }
}

/// Forwards rebalances from the polling thread, in order with the records.
struct MemberContext {
    group: String,
    handoff: mpsc::Sender<Result<ConsumerEvent, TransportError>>,
    drain_timeout: Duration,
    /// Set when the member leaves. No worker drains after that, and librdkafka may run the final
    /// revocation on whichever thread drops the consumer, possibly a tokio worker.
    closing: Arc<AtomicBool>,
}

impl MemberContext {
    /// Hands an event over without blocking a tokio worker thread.
    fn hand_over(&self, event: ConsumerEvent) -> bool {
        if tokio::runtime::Handle::try_current().is_ok() {
            return self.handoff.try_send(Ok(event)).is_ok();
        }
        send_unless_stopped(&self.handoff, event, &self.closing)
    }
}

impl ClientContext for MemberContext {}

fn partitions_of(list: &TopicPartitionList) -> Vec<TopicPartition> {
    list.elements()
        .iter()
        .map(|element| TopicPartition::new(element.topic(), element.partition() as u32))
        .collect()
}

impl ConsumerContext for MemberContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(list) = rebalance else {
            return;
        };
        let partitions = partitions_of(list);
        if partitions.is_empty() || self.closing.load(Ordering::Relaxed) {
            return;
        }
        let (ack, drained) = DrainAck::new();
        let event = ConsumerEvent::Revoked {
            partitions: partitions.clone(),
            drained: Some(ack),
        };
        if self.hand_over(event) {
            match drained.recv_timeout(self.drain_timeout) {
                Ok(()) => debug!(group = %self.group, ?partitions, "revoked partitions drained"),
                Err(_) => {
                    warn!(group = %self.group, ?partitions, timeout_ms = self.drain_timeout.as_millis() as u64, "revoked partitions not drained in time; their unfinished records go to the next owner")
                }
            }
        }
        // Commit what the drain stored before the partitions change hands.
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(err) => {
                warn!(group = %self.group, error = %err, "offset commit on revocation failed")
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let partitions = partitions_of(list);
                if !partitions.is_empty() && !self.closing.load(Ordering::Relaxed) {
                    self.hand_over(ConsumerEvent::Assigned(partitions));
                }
            }
            Rebalance::Error(err) => warn!(group = %self.group, error = %err, "rebalance failed"),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// A consumer-group member on Kafka.
pub struct KafkaConsumer {
    group: String,
    consumer: Arc<BaseConsumer<MemberContext>>,
    events: tokio::sync::Mutex<mpsc::Receiver<Result<ConsumerEvent, TransportError>>>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl KafkaConsumer {
    fn start(
        config: &KafkaConfig,
        group: &str,
        topics: &[String],
    ) -> Result<KafkaConsumer, TransportError> {
        let (handoff, events) = mpsc::channel(HANDOFF_CAPACITY);
        let stop = Arc::new(AtomicBool::new(false));
        let context = MemberContext {
            group: group.to_owned(),
            handoff: handoff.clone(),
            drain_timeout: Duration::from_millis(config.revoke_drain_timeout_ms),
            closing: stop.clone(),
        };
        let mut client = base_config(config);
        client
            .set("group.id", group)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", &config.auto_offset_reset)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", config.session_timeout_ms.to_string())
            .set(
                "heartbeat.interval.ms",
                (config.session_timeout_ms / 4).max(100).to_string(),
            )
            .set(
                "queued.max.messages.kbytes",
                config.queued_max_messages_kbytes.to_string(),
            )
            .set("queued.min.messages", "1000");
        let consumer: BaseConsumer<MemberContext> =
            client.create_with_context(context).map_err(|err| {
                TransportError::Other(format!(
                    "failed to create a consumer for group {group}: {err}"
                ))
            })?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names).map_err(|err| {
            TransportError::Other(format!(
                "failed to subscribe group {group} to {topics:?}: {err}"
            ))
        })?;
        let consumer = Arc::new(consumer);
        let thread = {
            let consumer = consumer.clone();
            let stop = stop.clone();
            let group = group.to_owned();
            std::thread::Builder::new()
                .name(format!("kafka-{group}"))
                .spawn(move || poll_loop(&consumer, &handoff, &stop, &group))
                .map_err(|err| {
                    TransportError::Other(format!("failed to start the polling thread: {err}"))
                })?
        };
        Ok(KafkaConsumer {
            group: group.to_owned(),
            consumer,
            events: tokio::sync::Mutex::new(events),
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }
}

/// Polls librdkafka until stopped, handing records and errors to the async side.
fn poll_loop(
    consumer: &BaseConsumer<MemberContext>,
    handoff: &mpsc::Sender<Result<ConsumerEvent, TransportError>>,
    stop: &AtomicBool,
    group: &str,
) {
    let mut outage_errors: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let Some(polled) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let event = match polled {
            Ok(message) => {
                if outage_errors > 0 {
                    info!(
                        group,
                        errors = outage_errors,
                        "consumer reading again after broker errors"
                    );
                    outage_errors = 0;
                }
                let headers = message
                    .headers()
                    .map(|headers| {
                        headers
                            .iter()
                            .map(|header| {
                                (
                                    header.key.to_owned(),
                                    header.value.map(<[u8]>::to_vec).unwrap_or_default(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                ConsumerEvent::Record(Record {
                    topic: message.topic().to_owned(),
                    partition: message.partition() as u32,
                    offset: message.offset() as u64,
                    key: message.key().map(<[u8]>::to_vec),
                    headers,
                    payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                })
            }
            Err(err) => {
                // librdkafka reconnects by itself; an outage is logged once, then counted.
                if outage_errors == 0 {
                    warn!(group, error = %err, "consumer error; librdkafka keeps retrying");
                }
                outage_errors += 1;
                continue;
            }
        };
        if !send_unless_stopped(handoff, event, stop) {
            return;
        }
    }
}

/// Waits for room in the handoff channel, giving up when the member stops, so that a full
/// channel that is no longer read cannot keep the polling thread alive.
fn send_unless_stopped(
    handoff: &mpsc::Sender<Result<ConsumerEvent, TransportError>>,
    event: ConsumerEvent,
    stop: &AtomicBool,
) -> bool {
    let mut pending = Ok(event);
    loop {
        match handoff.try_send(pending) {
            Ok(()) => return true,
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
            Err(mpsc::error::TrySendError::Full(event)) => {
                if stop.load(Ordering::Relaxed) {
                    return false;
                }
                pending = event;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

#[async_trait]
impl Consumer for KafkaConsumer {
    async fn next_event(&self) -> Result<ConsumerEvent, TransportError> {
        let mut events = self.events.lock().await;
        events.recv().await.unwrap_or(Err(TransportError::Closed))
    }

    fn commit(&self, partition: &TopicPartition, next_offset: u64) -> Result<(), TransportError> {
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(
            &partition.topic,
            partition.partition as i32,
            Offset::Offset(next_offset as i64),
        )
        .map_err(|err| TransportError::Other(err.to_string()))?;
        self.consumer.store_offsets(&list).map_err(|err| {
            TransportError::Other(format!(
                "failed to store offset {next_offset} of {partition}: {err}"
            ))
        })
    }

    fn pause(&self, partition: &TopicPartition) {
        let mut list = TopicPartitionList::new();
        list.add_partition(&partition.topic, partition.partition as i32);
        if let Err(err) = self.consumer.pause(&list) {
            warn!(group = %self.group, %partition, error = %err, "failed to pause partition");
        }
    }

    fn resume(&self, partition: &TopicPartition) {
        let mut list = TopicPartitionList::new();
        list.add_partition(&partition.topic, partition.partition as i32);
        if let Err(err) = self.consumer.resume(&list) {
            warn!(group = %self.group, %partition, error = %err, "failed to resume partition");
        }
    }

    fn close(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
        if let Err(err) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            debug!(group = %self.group, error = %err, "final offset commit");
        }
    }
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        self.close();
    }
}

/// Header values by name, for tests and logs.
pub fn header_map(record: &Record) -> HashMap<String, Vec<u8>> {
    record.headers.iter().cloned().collect()
}
