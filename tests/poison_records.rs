//! Records that keep failing their worker: panics, errors and hangs. Such a record is retried
//! through worker restarts, then given up and dead-lettered, and the records after it on its
//! partition complete. For the task runner, a given-up task ends as a failed result.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::{wait_for, Backend, Receiver, TestEnv};
use ractor::Actor;
use ylem_runtime::actors::consumer::{ConsumerActor, ConsumerArgs};
use ylem_runtime::actors::task_runner::TaskRunner;
use ylem_runtime::actors::RecordHandler;
use ylem_runtime::daemon::Stage;
use ylem_runtime::dead_letter::DeadLetters;
use ylem_runtime::messages::Message;
use ylem_runtime::store::RunStatus;
use ylem_runtime::supervision::{ActorRegistry, RestartPolicy, ShutdownSignal};
use ylem_runtime::tasks::ExecutionContext;
use ylem_runtime::transport::memory::MemoryBus;
use ylem_runtime::transport::{ConsumerEvent, OutgoingRecord, Record, Transport};

/// How a test handler misbehaves on the poisoned offset.
#[derive(Clone, Copy)]
enum Fault {
    Panic,
    Error,
    Hang,
}

struct FaultyHandler {
    poisoned_offset: u64,
    fault: Fault,
    handled: Mutex<Vec<u64>>,
    given_up: Mutex<Vec<u64>>,
}

#[async_trait]
impl RecordHandler for FaultyHandler {
    async fn handle(&self, record: &Record) -> anyhow::Result<()> {
        if record.offset == self.poisoned_offset {
            match self.fault {
                Fault::Panic => panic!("poisoned record"),
                Fault::Error => anyhow::bail!("poisoned record"),
                Fault::Hang => std::future::pending::<()>().await,
            }
        }
        self.handled.lock().unwrap().push(record.offset);
        Ok(())
    }

    async fn give_up(&self, record: &Record, _reason: &str) -> anyhow::Result<()> {
        self.given_up.lock().unwrap().push(record.offset);
        Ok(())
    }
}

fn quick_policy() -> RestartPolicy {
    RestartPolicy {
        max_restarts: 10,
        backoff_min: Duration::from_millis(1),
        backoff_max: Duration::from_millis(5),
        backoff_jitter: 0.0,
        ..RestartPolicy::default()
    }
}

async fn poisoned_record_is_dead_lettered(fault: Fault) {
    let bus = MemoryBus::new();
    bus.ensure_topic("jobs", 1).await.unwrap();
    bus.ensure_topic("jobs.dlq", 1).await.unwrap();
    let transport: Arc<dyn Transport> = Arc::new(bus.clone());
    let dead_probe = bus
        .subscribe("probe", &["jobs.dlq".to_owned()])
        .await
        .unwrap();
    for index in 0..5u8 {
        bus.send(OutgoingRecord::keyed("jobs", "k", vec![index]))
            .await
            .unwrap();
    }
    let handler = Arc::new(FaultyHandler {
        poisoned_offset: 2,
        fault,
        handled: Mutex::new(Vec::new()),
        given_up: Mutex::new(Vec::new()),
    });
    let registry = ActorRegistry::new();
    let (consumer, _) = Actor::spawn(
        None,
        ConsumerActor,
        ConsumerArgs {
            path: "test/jobs".to_owned(),
            transport: transport.clone(),
            group: "workers".to_owned(),
            topics: vec!["jobs".to_owned()],
            handler: handler.clone(),
            max_in_flight: 1,
            max_buffered_records: 100,
            policy: quick_policy(),
            registry: registry.clone(),
            shutdown: Arc::new(ShutdownSignal::default()),
            stuck_after: Duration::from_millis(200),
            max_record_failures: 2,
            dead_letters: Some(DeadLetters::new(transport.clone(), ".dlq")),
        },
    )
    .await
    .unwrap();

    let dead = loop {
        let event = tokio::time::timeout(Duration::from_secs(20), dead_probe.next_event())
            .await
            .expect("the poisoned record is dead-lettered")
            .unwrap();
        if let ConsumerEvent::Record(record) = event {
            break record;
        }
    };
    assert_eq!(dead.payload, vec![2]);
    let reason = String::from_utf8_lossy(dead.header("x-dead-letter-reason").unwrap()).into_owned();
    assert!(reason.contains("failed its worker 2 times"), "{reason}");

    let handled = wait_for("the later records", Duration::from_secs(10), || {
        let handled: BTreeSet<u64> = handler.handled.lock().unwrap().iter().copied().collect();
        async move { (handled.len() == 4).then_some(handled) }
    })
    .await;
    assert_eq!(handled, BTreeSet::from([0, 1, 3, 4]));
    assert_eq!(*handler.given_up.lock().unwrap(), vec![2]);
    assert_eq!(registry.get("test/jobs/jobs/0").unwrap().restarts, 2);

    // A new member of the group starts after the last record: nothing is redone.
    consumer.stop(None);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let next = bus
        .subscribe("workers", &["jobs".to_owned()])
        .await
        .unwrap();
    bus.send(OutgoingRecord::keyed("jobs", "k", vec![5]))
        .await
        .unwrap();
    let first = loop {
        if let ConsumerEvent::Record(record) = next.next_event().await.unwrap() {
            break record;
        }
    };
    assert_eq!(first.offset, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_record_is_dead_lettered() {
    poisoned_record_is_dead_lettered(Fault::Panic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_record_is_dead_lettered() {
    poisoned_record_is_dead_lettered(Fault::Error).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_record_is_dead_lettered() {
    poisoned_record_is_dead_lettered(Fault::Hang).await;
}

/// The real task runner, except that it panics on the tasks of one run.
struct PanickyRunner {
    inner: TaskRunner,
    poisoned_run: uuid::Uuid,
}

#[async_trait]
impl RecordHandler for PanickyRunner {
    async fn handle(&self, record: &Record) -> anyhow::Result<()> {
        if let Ok(Message::Task(task)) = Message::decode(&record.payload) {
            if task.common.pipeline_run_uuid == self.poisoned_run {
                panic!("injected fault in the task runner");
            }
        }
        self.inner.handle(record).await
    }

    async fn give_up(&self, record: &Record, reason: &str) -> anyhow::Result<()> {
        self.inner.give_up(record, reason).await
    }
}

async fn runner_panic_ends_task_as_failed_result(backend: Backend) {
    let receiver = Receiver::start().await;
    let mut env = TestEnv::prepare(backend, |config, _| {
        config.supervision.max_record_failures = 2;
        config.supervision.backoff_min_ms = 1;
        config.supervision.backoff_max_ms = 5;
        // One partition, so that later runs share the poisoned record's partition.
        config.topics.partitions.task_runs_load_balanced = 1;
    })
    .await;
    env.apply(&format!(
        "name: ping\ntasks:\n  - name: call\n    type: api_call\n    url: {}\n",
        receiver.url("/ping")
    ))
    .await;
    env.start_stages(&[Stage::Publisher, Stage::Balancer, Stage::Triggers])
        .await;

    let poisoned_run = env.run("ping", Some("{}")).await;
    let config = env.runtime.config.clone();
    let runner = Arc::new(PanickyRunner {
        inner: TaskRunner::new(
            env.transport.clone(),
            env.store.clone(),
            env.runtime.dead_letters(),
            config.clone(),
            Arc::new(ExecutionContext::new(config.clone()).unwrap()),
        ),
        poisoned_run,
    });
    let (consumer, _) = Actor::spawn(
        None,
        ConsumerActor,
        ConsumerArgs {
            path: "runner/injected".to_owned(),
            transport: env.transport.clone(),
            group: config.consumer_groups.task_runner.clone(),
            topics: vec![config.topics.task_runs_load_balanced.clone()],
            handler: runner,
            max_in_flight: 2,
            max_buffered_records: 100,
            policy: quick_policy(),
            registry: env.runtime.registry.clone(),
            shutdown: env.runtime.shutdown.clone(),
            stuck_after: Duration::from_secs(60),
            max_record_failures: 2,
            dead_letters: Some(env.runtime.dead_letters()),
        },
    )
    .await
    .unwrap();

    let detail = env.finished_run(poisoned_run).await;
    assert_eq!(detail.run.status, RunStatus::Failed);
    let errors = detail.task_runs[0].errors.join("; ");
    assert!(errors.contains("[101]"), "{errors}");
    assert!(errors.contains("injected fault"), "{errors}");

    for _ in 0..3 {
        let run = env.run("ping", Some("{}")).await;
        assert_eq!(env.finished_run(run).await.run.status, RunStatus::Succeeded);
    }
    assert_eq!(receiver.received_at("/ping").len(), 3);
    consumer.stop(None);
    env.stop().await;
}

on_both_transports!(runner_panic_ends_task_as_failed_result);
