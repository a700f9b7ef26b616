//! The in-process bus of the embedded default: Kafka's model kept in memory.
//!
//! Topics are partitioned logs; consumer groups spread partitions over their members
//! (round-robin over sorted partitions, recomputed when a member joins or leaves) and keep the
//! committed offset per partition, so a member that restarts resumes where its group left off.
//! Records below every subscribed group's committed offset are dropped to bound memory.
//!
//! NOTE: the bus lives in the process; records that no stage has finished are lost when the
//! process exits. Runs left unfinished that way stay `running` in the store.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::watch;

use super::{
    partition_for_key, Consumer, ConsumerEvent, Delivery, OutgoingRecord, Record, TopicPartition,
    Transport, TransportError,
};

/// The embedded bus. Cloning shares it.
#[derive(Clone)]
pub struct MemoryBus {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<BusState>,
    /// Bumped on every change that a waiting consumer may care about.
    changes: watch::Sender<u64>,
}

#[derive(Default)]
struct BusState {
    topics: HashMap<String, Vec<PartitionLog>>,
    groups: HashMap<String, Group>,
    next_member_id: u64,
    round_robin: u64,
}

#[derive(Default)]
struct PartitionLog {
    /// Offset of `records[0]`.
    base_offset: u64,
    records: VecDeque<StoredRecord>,
}

impl PartitionLog {
    fn end_offset(&self) -> u64 {
        self.base_offset + self.records.len() as u64
    }
}

struct StoredRecord {
    key: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
    payload: Vec<u8>,
}

#[derive(Default)]
struct Group {
    topics: BTreeSet<String>,
    members: BTreeMap<u64, Member>,
    committed: HashMap<TopicPartition, u64>,
}

#[derive(Default)]
struct Member {
    assigned: BTreeSet<TopicPartition>,
    positions: HashMap<TopicPartition, u64>,
    paused: BTreeSet<TopicPartition>,
    events: VecDeque<ConsumerEvent>,
}

impl MemoryBus {
    pub fn new() -> MemoryBus {
        let (changes, _) = watch::channel(0);
        MemoryBus {
            shared: Arc::new(Shared {
                state: Mutex::new(BusState::default()),
                changes,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BusState> {
        // A panic while the lock is held leaves consistent data (every update is a single step),
        // so a poisoned lock is taken over rather than spreading the panic to every stage.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn notify(&self) {
        self.shared
            .changes
            .send_modify(|counter| *counter = counter.wrapping_add(1));
    }

    /// Number of records retained in a partition, for tests of the retention rule.
    pub fn retained_records(&self, topic: &str, partition: u32) -> usize {
        let state = self.lock();
        state
            .topics
            .get(topic)
            .and_then(|partitions| partitions.get(partition as usize))
            .map_or(0, |log| log.records.len())
    }

    /// End offset of every partition of a topic.
    pub fn end_offsets(&self, topic: &str) -> Vec<u64> {
        let state = self.lock();
        state
            .topics
            .get(topic)
            .map(|partitions| partitions.iter().map(PartitionLog::end_offset).collect())
            .unwrap_or_default()
    }
}

impl Default for MemoryBus {
    fn default() -> Self {
        MemoryBus::new()
    }
}

impl BusState {
    /// Recomputes the assignment of a group and queues revoke and assign events.
    fn rebalance(&mut self, group_id: &str) {
        let Some(group) = self.groups.get(group_id) else {
            return;
        };
        let mut partitions = Vec::new();
        for topic in &group.topics {
            let count = self.topics.get(topic).map_or(0, Vec::len) as u32;
            partitions
                .extend((0..count).map(|partition| TopicPartition::new(topic.clone(), partition)));
        }
        let group = self.groups.get_mut(group_id).expect("group exists");
        let member_ids: Vec<u64> = group.members.keys().copied().collect();
        if member_ids.is_empty() {
            return;
        }
        let mut target: HashMap<u64, BTreeSet<TopicPartition>> = HashMap::new();
        for (index, partition) in partitions.into_iter().enumerate() {
            target
                .entry(member_ids[index % member_ids.len()])
                .or_default()
                .insert(partition);
        }
        for (member_id, member) in group.members.iter_mut() {
            let wanted = target.remove(member_id).unwrap_or_default();
            let revoked: Vec<_> = member.assigned.difference(&wanted).cloned().collect();
            let assigned: Vec<_> = wanted.difference(&member.assigned).cloned().collect();
            if !revoked.is_empty() {
                for partition in &revoked {
                    member.positions.remove(partition);
                    member.paused.remove(partition);
                }
                member.events.push_back(ConsumerEvent::Revoked {
                    partitions: revoked,
                    drained: None,
                });
            }
            if !assigned.is_empty() {
                for partition in &assigned {
                    // A new owner starts at the group's committed offset, or at the oldest
                    // retained record when the group has none.
                    let base = self
                        .topics
                        .get(&partition.topic)
                        .and_then(|logs| logs.get(partition.partition as usize))
                        .map_or(0, |log| log.base_offset);
                    let start = group
                        .committed
                        .get(partition)
                        .copied()
                        .unwrap_or(base)
                        .max(base);
                    member.positions.insert(partition.clone(), start);
                }
                member.events.push_back(ConsumerEvent::Assigned(assigned));
            }
            member.assigned = wanted;
        }
    }

    /// Drops records that every group subscribed to the topic has committed.
    fn trim(&mut self, topic: &str, partition: u32) {
        let tp = TopicPartition::new(topic, partition);
        let mut low_water: Option<u64> = None;
        for group in self
            .groups
            .values()
            .filter(|group| group.topics.contains(topic))
        {
            let committed = group.committed.get(&tp).copied().unwrap_or(0);
            low_water = Some(low_water.map_or(committed, |low| low.min(committed)));
        }
        let Some(low_water) = low_water else {
            return;
        };
        if let Some(log) = self
            .topics
            .get_mut(topic)
            .and_then(|logs| logs.get_mut(partition as usize))
        {
            while log.base_offset < low_water && !log.records.is_empty() {
                log.records.pop_front();
                log.base_offset += 1;
            }
        }
    }
}

#[async_trait]
impl Transport for MemoryBus {
    async fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<(), TransportError> {
        let mut state = self.lock();
        match state.topics.get(topic) {
            Some(existing) if (existing.len() as u32) < partitions => {
                return Err(TransportError::TooFewPartitions {
                    topic: topic.to_owned(),
                    existing: existing.len() as u32,
                    required: partitions,
                })
            }
            Some(_) => return Ok(()),
            None => {}
        }
        let logs = (0..partitions.max(1))
            .map(|_| PartitionLog::default())
            .collect();
        state.topics.insert(topic.to_owned(), logs);
        let group_ids: Vec<String> = state
            .groups
            .iter()
            .filter(|(_, group)| group.topics.contains(topic))
            .map(|(id, _)| id.clone())
            .collect();
        for group_id in group_ids {
            state.rebalance(&group_id);
        }
        drop(state);
        self.notify();
        Ok(())
    }

    async fn partition_count(&self, topic: &str) -> Result<u32, TransportError> {
        let state = self.lock();
        state
            .topics
            .get(topic)
            .map(|logs| logs.len() as u32)
            .ok_or_else(|| TransportError::UnknownTopic(topic.to_owned()))
    }

    async fn send(&self, record: OutgoingRecord) -> Result<Delivery, TransportError> {
        let mut state = self.lock();
        let round_robin = state.round_robin;
        let Some(logs) = state.topics.get_mut(&record.topic) else {
            return Err(TransportError::UnknownTopic(record.topic));
        };
        let count = logs.len() as u32;
        let partition = match (record.partition, &record.key) {
            (Some(partition), _) => partition,
            (None, Some(key)) => partition_for_key(key, count),
            (None, None) => (round_robin % u64::from(count)) as u32,
        };
        let Some(log) = logs.get_mut(partition as usize) else {
            return Err(TransportError::UnknownPartition {
                topic: record.topic,
                partition,
                count,
            });
        };
        let offset = log.end_offset();
        log.records.push_back(StoredRecord {
            key: record.key,
            headers: record.headers,
            payload: record.payload,
        });
        state.round_robin = round_robin.wrapping_add(1);
        drop(state);
        self.notify();
        Ok(Delivery { partition, offset })
    }

    async fn subscribe(
        &self,
        group_id: &str,
        topics: &[String],
    ) -> Result<Arc<dyn Consumer>, TransportError> {
        let mut state = self.lock();
        for topic in topics {
            if !state.topics.contains_key(topic) {
                return Err(TransportError::UnknownTopic(topic.clone()));
            }
        }
        let member_id = state.next_member_id;
        state.next_member_id += 1;
        let group = state.groups.entry(group_id.to_owned()).or_default();
        group.topics.extend(topics.iter().cloned());
        group.members.insert(member_id, Member::default());
        state.rebalance(group_id);
        drop(state);
        self.notify();
        Ok(Arc::new(MemoryConsumer {
            bus: self.clone(),
            group_id: group_id.to_owned(),
            member_id,
            changes: tokio::sync::Mutex::new(self.shared.changes.subscribe()),
        }))
    }
}

/// A member of a consumer group on the embedded bus. Dropping it leaves the group.
pub struct MemoryConsumer {
    bus: MemoryBus,
    group_id: String,
    member_id: u64,
    changes: tokio::sync::Mutex<watch::Receiver<u64>>,
}

impl MemoryConsumer {
    /// Takes the next pending event or record without waiting.
    fn poll(&self) -> Result<Option<ConsumerEvent>, TransportError> {
        let mut state = self.bus.lock();
        let state = &mut *state;
        let group = state
            .groups
            .get_mut(&self.group_id)
            .ok_or(TransportError::Closed)?;
        let member = group
            .members
            .get_mut(&self.member_id)
            .ok_or(TransportError::Closed)?;
        if let Some(event) = member.events.pop_front() {
            return Ok(Some(event));
        }
        // Rotate the starting partition so one busy partition does not starve the others.
        let readable: Vec<TopicPartition> = member
            .assigned
            .iter()
            .filter(|partition| !member.paused.contains(*partition))
            .cloned()
            .collect();
        if readable.is_empty() {
            return Ok(None);
        }
        let start = (state.round_robin as usize) % readable.len();
        state.round_robin = state.round_robin.wrapping_add(1);
        for index in 0..readable.len() {
            let partition = &readable[(start + index) % readable.len()];
            let Some(log) = state
                .topics
                .get(&partition.topic)
                .and_then(|logs| logs.get(partition.partition as usize))
            else {
                continue;
            };
            let position = member
                .positions
                .get(partition)
                .copied()
                .unwrap_or(log.base_offset);
            let position = position.max(log.base_offset);
            if position >= log.end_offset() {
                continue;
            }
            let stored = &log.records[(position - log.base_offset) as usize];
            let record = Record {
                topic: partition.topic.clone(),
                partition: partition.partition,
                offset: position,
                key: stored.key.clone(),
                headers: stored.headers.clone(),
                payload: stored.payload.clone(),
            };
            member.positions.insert(partition.clone(), position + 1);
            return Ok(Some(ConsumerEvent::Record(record)));
        }
        Ok(None)
    }
}

#[async_trait]
impl Consumer for MemoryConsumer {
    async fn next_event(&self) -> Result<ConsumerEvent, TransportError> {
        let mut changes = self.changes.lock().await;
        loop {
            changes.borrow_and_update();
            if let Some(event) = self.poll()? {
                return Ok(event);
            }
            if changes.changed().await.is_err() {
                return Err(TransportError::Closed);
            }
        }
    }

    fn commit(&self, partition: &TopicPartition, next_offset: u64) -> Result<(), TransportError> {
        let mut state = self.bus.lock();
        let group = state
            .groups
            .get_mut(&self.group_id)
            .ok_or(TransportError::Closed)?;
        let member = group
            .members
            .get(&self.member_id)
            .ok_or(TransportError::Closed)?;
        if !member.assigned.contains(partition) {
            // Kafka rejects commits for partitions a member no longer owns; so does the bus, so
            // that a slow former owner cannot move the new owner's position.
            return Err(TransportError::Other(format!(
                "partition {partition} is not assigned to this member"
            )));
        }
        group.committed.insert(partition.clone(), next_offset);
        state.trim(&partition.topic, partition.partition);
        Ok(())
    }

    fn pause(&self, partition: &TopicPartition) {
        let mut state = self.bus.lock();
        if let Some(member) = state
            .groups
            .get_mut(&self.group_id)
            .and_then(|group| group.members.get_mut(&self.member_id))
        {
            member.paused.insert(partition.clone());
        }
    }

    fn resume(&self, partition: &TopicPartition) {
        let mut state = self.bus.lock();
        if let Some(member) = state
            .groups
            .get_mut(&self.group_id)
            .and_then(|group| group.members.get_mut(&self.member_id))
        {
            member.paused.remove(partition);
        }
        drop(state);
        self.bus.notify();
    }

    fn close(&self) {
        let mut state = self.bus.lock();
        let removed = state
            .groups
            .get_mut(&self.group_id)
            .and_then(|group| group.members.remove(&self.member_id));
        if removed.is_some() {
            state.rebalance(&self.group_id);
        }
        drop(state);
        self.bus.notify();
    }
}

impl Drop for MemoryConsumer {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn next_record(consumer: &Arc<dyn Consumer>) -> Record {
        loop {
            if let ConsumerEvent::Record(record) = consumer.next_event().await.unwrap() {
                return record;
            }
        }
    }

    #[tokio::test]
    async fn keyed_records_keep_partition_order() {
        let bus = MemoryBus::new();
        bus.ensure_topic("t", 4).await.unwrap();
        let mut partitions = BTreeSet::new();
        for index in 0..5u8 {
            let delivery = bus
                .send(OutgoingRecord::keyed("t", "run-a", vec![index]))
                .await
                .unwrap();
            partitions.insert(delivery.partition);
        }
        assert_eq!(partitions.len(), 1);
        let consumer = bus.subscribe("g", &["t".to_owned()]).await.unwrap();
        for index in 0..5u8 {
            assert_eq!(next_record(&consumer).await.payload, vec![index]);
        }
    }

    #[tokio::test]
    async fn new_member_resumes_from_committed_offset() {
        let bus = MemoryBus::new();
        bus.ensure_topic("t", 1).await.unwrap();
        for index in 0..3u8 {
            bus.send(OutgoingRecord::keyed("t", "k", vec![index]))
                .await
                .unwrap();
        }
        let first = bus.subscribe("g", &["t".to_owned()]).await.unwrap();
        let record = next_record(&first).await;
        first
            .commit(&record.topic_partition(), record.offset + 1)
            .unwrap();
        first.close();
        drop(first);

        let second = bus.subscribe("g", &["t".to_owned()]).await.unwrap();
        assert_eq!(next_record(&second).await.payload, vec![1]);
    }

    #[tokio::test]
    async fn members_share_partitions() {
        let bus = MemoryBus::new();
        bus.ensure_topic("t", 4).await.unwrap();
        let first = bus.subscribe("g", &["t".to_owned()]).await.unwrap();
        let second = bus.subscribe("g", &["t".to_owned()]).await.unwrap();
        let mut first_owned = BTreeSet::new();
        // The first member was given all four partitions, then lost two to the second.
        for _ in 0..2 {
            match first.next_event().await.unwrap() {
                ConsumerEvent::Assigned(parts) => first_owned.extend(parts),
                ConsumerEvent::Revoked { partitions, .. } => partitions.iter().for_each(|part| {
                    first_owned.remove(part);
                }),
                ConsumerEvent::Record(_) => unreachable!(),
            }
        }
        let ConsumerEvent::Assigned(second_owned) = second.next_event().await.unwrap() else {
            panic!("second member got no assignment");
        };
        assert_eq!(first_owned.len(), 2);
        assert_eq!(second_owned.len(), 2);
        assert!(second_owned.iter().all(|part| !first_owned.contains(part)));
    }

    #[tokio::test]
    async fn committed_records_are_trimmed() {
        let bus = MemoryBus::new();
        bus.ensure_topic("t", 1).await.unwrap();
        let consumer = bus.subscribe("g", &["t".to_owned()]).await.unwrap();
        for index in 0..10u8 {
            bus.send(OutgoingRecord::keyed("t", "k", vec![index]))
                .await
                .unwrap();
        }
        let tp = TopicPartition::new("t", 0);
        consumer.commit(&tp, 7).unwrap();
        assert_eq!(bus.retained_records("t", 0), 3);
    }

    #[tokio::test]
    async fn topic_with_too_few_partitions_is_rejected() {
        let bus = MemoryBus::new();
        bus.ensure_topic("t", 2).await.unwrap();
        let err = bus.ensure_topic("t", 5).await.unwrap_err();
        assert!(err.to_string().contains("topics.partitions.t"), "{err}");
    }
}
