//! Restarts under the stage supervisor and the consumer actor: failed children come back, a
//! child that keeps failing makes its stage fail, and a partition worker that fails replays its
//! uncommitted records in order without skipping or losing any.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ractor::{
    Actor, ActorCell, ActorProcessingErr, ActorRef, ActorStatus, RpcReplyPort, SupervisionEvent,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use ylem_runtime::actors::consumer::{ConsumerActor, ConsumerArgs, ConsumerMsg};
use ylem_runtime::actors::RecordHandler;
use ylem_runtime::supervision::{
    ActorRegistry, ActorState, ChildSpec, RestartPolicy, StageSupervisor, StageSupervisorArgs,
};
use ylem_runtime::transport::memory::MemoryBus;
use ylem_runtime::transport::{Consumer, ConsumerEvent, OutgoingRecord, Record, Transport};

/// Upper bound for anything a test waits for. Reaching it means the awaited state never came.
const DEADLINE: Duration = Duration::from_secs(10);

/// Polls `condition` until it holds, failing the test with `description` after [`DEADLINE`].
async fn wait_until(description: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {description}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Awaits `future`, failing the test with `description` after [`DEADLINE`].
async fn within_deadline<T>(description: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {description}"))
}

/// Builds a restart policy with millisecond backoff, so restarts happen at once.
fn quick_policy(max_restarts: u32) -> RestartPolicy {
    RestartPolicy {
        max_restarts,
        window: Duration::from_secs(60),
        backoff_min: Duration::from_millis(1),
        backoff_max: Duration::from_millis(5),
        ..RestartPolicy::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Stage supervisor

/// A stage child that fails on request and reports which start it is.
struct FlakyChild;

enum FlakyMsg {
    /// Return an error from `handle`, which fails the actor.
    Fail,
    /// Reply with the start number of this instance (1 for the first start).
    StartNumber(RpcReplyPort<usize>),
}

#[derive(Clone, Default)]
struct FlakyShared {
    starts: Arc<AtomicUsize>,
    current: Arc<Mutex<Option<ActorRef<FlakyMsg>>>>,
}

impl FlakyShared {
    fn starts(&self) -> usize {
        self.starts.load(Ordering::SeqCst)
    }

    fn current(&self) -> ActorRef<FlakyMsg> {
        self.current
            .lock()
            .unwrap()
            .clone()
            .expect("the child has started")
    }
}

impl Actor for FlakyChild {
    type Msg = FlakyMsg;
    type State = usize;
    type Arguments = FlakyShared;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        shared: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        *shared.current.lock().unwrap() = Some(myself);
        Ok(shared.starts.fetch_add(1, Ordering::SeqCst) + 1)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        start_number: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            FlakyMsg::Fail => Err("requested failure".into()),
            FlakyMsg::StartNumber(reply) => {
                let _ = reply.send(*start_number);
                Ok(())
            }
        }
    }
}

fn flaky_spec(path: &str, shared: &FlakyShared) -> ChildSpec {
    let shared = shared.clone();
    ChildSpec::new(path, move |supervisor: ActorCell| {
        let shared = shared.clone();
        async move {
            let (child, _) = Actor::spawn_linked(None, FlakyChild, shared, supervisor).await?;
            Ok(child.get_cell())
        }
    })
}

/// Forwards the supervision events of the actors linked beneath it, as text.
struct Observer;

impl Actor for Observer {
    type Msg = ();
    type State = mpsc::UnboundedSender<String>;
    type Arguments = mpsc::UnboundedSender<String>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        events: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(events)
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        events: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let text = match event {
            SupervisionEvent::ActorFailed(_, err) => format!("failed: {err}"),
            SupervisionEvent::ActorTerminated(_, _, reason) => format!("terminated: {reason:?}"),
            _ => return Ok(()),
        };
        let _ = events.send(text);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_child_is_restarted() {
    let registry = ActorRegistry::new();
    let shared = FlakyShared::default();
    let (stage, stage_handle) = Actor::spawn(
        None,
        StageSupervisor,
        StageSupervisorArgs {
            stage: "restart_stage".to_owned(),
            children: vec![flaky_spec("restart_stage/flaky", &shared)],
            policy: quick_policy(3),
            registry: registry.clone(),
        },
    )
    .await
    .expect("stage starts");
    let first = registry
        .get("restart_stage/flaky")
        .expect("child registered");
    assert_eq!(first.state, ActorState::Running);
    assert_eq!(first.restarts, 0);
    assert_eq!(first.supervisor.as_deref(), Some("restart_stage"));
    assert_eq!(shared.starts(), 1);

    shared
        .current()
        .cast(FlakyMsg::Fail)
        .expect("child accepts");
    wait_until("the child runs again after one restart", || {
        registry
            .get("restart_stage/flaky")
            .is_some_and(|status| status.restarts == 1 && status.state == ActorState::Running)
    })
    .await;

    assert_eq!(shared.starts(), 2);
    let status = registry.get("restart_stage/flaky").unwrap();
    assert!(
        status
            .last_failure
            .as_deref()
            .is_some_and(|reason| reason.contains("requested failure")),
        "last failure: {:?}",
        status.last_failure
    );
    let start_number = ractor::call_t!(shared.current(), FlakyMsg::StartNumber, 5_000)
        .expect("the restarted child answers");
    assert_eq!(start_number, 2);
    assert_eq!(
        registry.get("restart_stage").map(|status| status.state),
        Some(ActorState::Running)
    );

    stage
        .stop_and_wait(None, Some(DEADLINE))
        .await
        .expect("stage stops");
    within_deadline("the stage task", stage_handle)
        .await
        .unwrap();
    assert_eq!(
        registry
            .get("restart_stage/flaky")
            .map(|status| status.state),
        Some(ActorState::Stopped)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_gives_up_past_limit() {
    let registry = ActorRegistry::new();
    let shared = FlakyShared::default();
    let (events, mut received) = mpsc::unbounded_channel();
    let (observer, _) = Actor::spawn(None, Observer, events)
        .await
        .expect("observer starts");
    let (stage, stage_handle) = Actor::spawn_linked(
        None,
        StageSupervisor,
        StageSupervisorArgs {
            stage: "give_up_stage".to_owned(),
            children: vec![flaky_spec("give_up_stage/flaky", &shared)],
            policy: quick_policy(2),
            registry: registry.clone(),
        },
        observer.get_cell(),
    )
    .await
    .expect("stage starts");

    // Two failures are restarted, and the third within the window exceeds max_restarts.
    for start in 1..=3 {
        wait_until(&format!("start {start} of the child"), || {
            shared.starts() == start
        })
        .await;
        shared
            .current()
            .cast(FlakyMsg::Fail)
            .expect("child accepts");
    }
    within_deadline("the stage to stop", stage_handle)
        .await
        .unwrap();

    assert_eq!(stage.get_status(), ActorStatus::Stopped);
    let event = within_deadline("the stage's exit event", received.recv())
        .await
        .expect("observer is running");
    assert!(event.starts_with("failed: "), "stage exit: {event}");
    assert!(event.contains("gave up"), "stage exit: {event}");
    let status = registry
        .get("give_up_stage/flaky")
        .expect("child registered");
    assert_eq!(status.state, ActorState::Failed);
    assert_eq!(status.restarts, 2);
    assert!(
        status
            .last_failure
            .as_deref()
            .is_some_and(|reason| reason.contains("requested failure")),
        "last failure: {:?}",
        status.last_failure
    );
    assert_eq!(shared.starts(), 3, "no start after the stage gave up");

    observer.stop(None);
}

// ---------------------------------------------------------------------------------------------
// Consumer actor

/// The way the test handler fails the first time it handles one chosen offset.
#[derive(Clone, Copy)]
enum FirstFailure {
    Panic,
    Error,
}

/// A handler that records every attempt and every success, by offset.
#[derive(Default)]
struct RecordingHandler {
    failing_offset: Option<(u64, FirstFailure)>,
    failed_once: AtomicBool,
    /// Offsets whose handling sleeps `(delay_base - offset)` milliseconds, so that lower
    /// offsets finish later.
    delay_base: Option<u64>,
    /// An offset whose handling never finishes.
    stuck_offset: Option<u64>,
    attempts: Mutex<Vec<u64>>,
    successes: Mutex<Vec<u64>>,
    in_flight: AtomicUsize,
    max_in_flight_seen: AtomicUsize,
}

impl RecordingHandler {
    fn attempts(&self) -> Vec<u64> {
        self.attempts.lock().unwrap().clone()
    }

    fn successes(&self) -> Vec<u64> {
        self.successes.lock().unwrap().clone()
    }

    /// Counts the successes of each offset.
    fn success_counts(&self) -> BTreeMap<u64, usize> {
        let mut counts = BTreeMap::new();
        for offset in self.successes() {
            *counts.entry(offset).or_insert(0) += 1;
        }
        counts
    }

    async fn process(&self, record: &Record) -> anyhow::Result<()> {
        self.attempts.lock().unwrap().push(record.offset);
        if let Some((offset, failure)) = self.failing_offset {
            if record.offset == offset && !self.failed_once.swap(true, Ordering::SeqCst) {
                match failure {
                    FirstFailure::Panic => panic!("test handler panics on offset {offset}"),
                    FirstFailure::Error => anyhow::bail!("test handler fails on offset {offset}"),
                }
            }
        }
        if self.stuck_offset == Some(record.offset) {
            std::future::pending::<()>().await;
        }
        if let Some(base) = self.delay_base {
            let millis = base.saturating_sub(record.offset) * 3;
            tokio::time::sleep(Duration::from_millis(millis)).await;
        }
        self.successes.lock().unwrap().push(record.offset);
        Ok(())
    }
}

#[async_trait]
impl RecordHandler for RecordingHandler {
    async fn handle(&self, record: &Record) -> anyhow::Result<()> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight_seen.fetch_max(now, Ordering::SeqCst);
        // Counted down by a guard, so a panic or a cancelled future also leaves the count.
        struct Leave<'a>(&'a AtomicUsize);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _leave = Leave(&self.in_flight);
        self.process(record).await
    }
}

const CONSUMER_PATH: &str = "test_stage/consumer";

struct ConsumerFixture {
    bus: MemoryBus,
    topic: String,
    group: String,
    registry: ActorRegistry,
    handler: Arc<RecordingHandler>,
}

impl ConsumerFixture {
    async fn new(topic: &str, handler: RecordingHandler) -> ConsumerFixture {
        let bus = MemoryBus::new();
        bus.ensure_topic(topic, 1).await.expect("topic is created");
        ConsumerFixture {
            bus,
            topic: topic.to_owned(),
            group: format!("{topic}-group"),
            registry: ActorRegistry::new(),
            handler: Arc::new(handler),
        }
    }

    /// Returns the registry path of the worker of partition 0.
    fn worker_path(&self) -> String {
        format!("{CONSUMER_PATH}/{}/0", self.topic)
    }

    async fn start(&self, max_in_flight: usize) -> (ActorRef<ConsumerMsg>, JoinHandle<()>) {
        Actor::spawn(
            None,
            ConsumerActor,
            ConsumerArgs {
                path: CONSUMER_PATH.to_owned(),
                transport: Arc::new(self.bus.clone()),
                group: self.group.clone(),
                topics: vec![self.topic.clone()],
                handler: self.handler.clone(),
                max_in_flight,
                max_buffered_records: 100,
                policy: quick_policy(5),
                registry: self.registry.clone(),
                shutdown: Arc::new(ylem_runtime::supervision::ShutdownSignal::default()),
            },
        )
        .await
        .expect("consumer starts")
    }

    async fn send(&self, count: u8) {
        for index in 0..count {
            self.bus
                .send(OutgoingRecord::keyed(
                    self.topic.clone(),
                    "run-1",
                    vec![index],
                ))
                .await
                .expect("record is sent");
        }
    }

    /// Waits until the group has committed every record: the bus drops committed records.
    async fn wait_all_committed(&self) {
        wait_until("the group commits every record", || {
            self.bus.retained_records(&self.topic, 0) == 0
        })
        .await;
    }

    async fn stop(&self, consumer: ActorRef<ConsumerMsg>, handle: JoinHandle<()>) {
        consumer
            .stop_and_wait(None, Some(DEADLINE))
            .await
            .expect("consumer stops");
        within_deadline("the consumer task", handle).await.unwrap();
    }

    /// Joins the group as a new member, sends one more record, and returns the first record
    /// the member reads: the one at the group's committed offset.
    async fn first_record_of_new_member(&self) -> Record {
        let member: Arc<dyn Consumer> = self
            .bus
            .subscribe(&self.group, std::slice::from_ref(&self.topic))
            .await
            .expect("new member joins");
        self.bus
            .send(OutgoingRecord::keyed(
                self.topic.clone(),
                "run-1",
                vec![255],
            ))
            .await
            .expect("marker record is sent");
        within_deadline("a record for the new member", async {
            loop {
                match member.next_event().await.expect("member polls") {
                    ConsumerEvent::Record(record) => return record,
                    ConsumerEvent::Assigned(_) | ConsumerEvent::Revoked { .. } => {}
                }
            }
        })
        .await
    }
}

/// Runs five records through a consumer whose handler fails on offset 2 the first time, and
/// checks the replay, the restart count and the committed offsets.
async fn check_replay_after_failure(topic: &str, failure: FirstFailure) {
    let fixture = ConsumerFixture::new(
        topic,
        RecordingHandler {
            failing_offset: Some((2, failure)),
            ..RecordingHandler::default()
        },
    )
    .await;
    let (consumer, handle) = fixture.start(1).await;

    fixture.send(5).await;
    wait_until("five records succeed", || {
        fixture.handler.successes().len() >= 5
    })
    .await;
    fixture.wait_all_committed().await;

    assert_eq!(
        fixture.handler.successes(),
        vec![0, 1, 2, 3, 4],
        "each record succeeds once, in offset order"
    );
    assert_eq!(
        fixture.handler.attempts(),
        vec![0, 1, 2, 2, 3, 4],
        "only the failed record is handled again"
    );
    let worker = fixture
        .registry
        .get(&fixture.worker_path())
        .expect("worker registered");
    assert_eq!(worker.restarts, 1);
    assert_eq!(worker.state, ActorState::Running);
    assert_eq!(worker.supervisor.as_deref(), Some(CONSUMER_PATH));
    assert!(
        worker
            .last_failure
            .as_deref()
            .is_some_and(|reason| reason.contains("offset 2")),
        "last failure: {:?}",
        worker.last_failure
    );

    fixture.stop(consumer, handle).await;
    let first = fixture.first_record_of_new_member().await;
    assert_eq!(
        first.offset, 5,
        "a new member starts after the five records"
    );
    assert_eq!(first.payload, vec![255]);
    assert_eq!(fixture.handler.successes().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_record_is_replayed() {
    check_replay_after_failure("panics", FirstFailure::Panic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_record_is_replayed() {
    check_replay_after_failure("errors", FirstFailure::Error).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_completion_commits_all() {
    let fixture = ConsumerFixture::new(
        "out_of_order",
        RecordingHandler {
            delay_base: Some(8),
            ..RecordingHandler::default()
        },
    )
    .await;
    let (consumer, handle) = fixture.start(4).await;

    fixture.send(8).await;
    wait_until("eight records succeed", || {
        fixture.handler.successes().len() >= 8
    })
    .await;
    fixture.wait_all_committed().await;

    let expected: BTreeMap<u64, usize> = (0..8).map(|offset| (offset, 1)).collect();
    assert_eq!(fixture.handler.success_counts(), expected);
    assert_eq!(fixture.handler.attempts().len(), 8);
    let max_seen = fixture.handler.max_in_flight_seen.load(Ordering::SeqCst);
    assert!(max_seen <= 4, "{max_seen} records were in flight at once");

    fixture.stop(consumer, handle).await;
    let first = fixture.first_record_of_new_member().await;
    assert_eq!(
        first.offset, 8,
        "a new member starts after the highest offset"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_record_is_not_skipped() {
    let fixture = ConsumerFixture::new(
        "stuck_first",
        RecordingHandler {
            stuck_offset: Some(0),
            ..RecordingHandler::default()
        },
    )
    .await;
    let (consumer, handle) = fixture.start(4).await;

    fixture.send(8).await;
    // Offset 0 never finishes; the other seven pass it within the four in-flight slots.
    wait_until("offsets 1 to 7 succeed", || {
        fixture.handler.successes().len() >= 7
    })
    .await;

    let mut successes = fixture.handler.successes();
    successes.sort_unstable();
    assert_eq!(successes, vec![1, 2, 3, 4, 5, 6, 7]);
    let max_seen = fixture.handler.max_in_flight_seen.load(Ordering::SeqCst);
    assert!(max_seen <= 4, "{max_seen} records were in flight at once");
    assert_eq!(
        fixture.bus.retained_records(&fixture.topic, 0),
        8,
        "nothing is committed while offset 0 is unfinished"
    );

    fixture.stop(consumer, handle).await;
    let first = fixture.first_record_of_new_member().await;
    assert_eq!(first.offset, 0, "a new member redoes the unfinished record");
    assert_eq!(first.payload, vec![0]);
}
