//! Faults on a real Kafka broker: rebalances with tasks in flight, a second runner process,
//! a broker restart, a runner killed mid-run, and a poison record.
//!
//! The tests share the broker of `scripts/kafka.sh` and one of them restarts it, so they run
//! one at a time (see `serial`).

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{wait_for, Backend, Receiver, TestEnv};
use tokio::sync::Mutex;
use uuid::Uuid;
use ylem_runtime::config::Config;
use ylem_runtime::daemon::{Daemon, Stage};
use ylem_runtime::messages::Message;
use ylem_runtime::store::{NewQueuedRun, RunKind, RunStatus};
use ylem_runtime::transport::{Consumer, ConsumerEvent, OutgoingRecord};

static SERIAL: Mutex<()> = Mutex::const_new(());

/// Builds a three-task chain of HTTP calls: each run makes three requests to `receiver`.
fn chain_pipeline(name: &str, receiver: &Receiver) -> String {
    let url = receiver.url(&format!("/{name}"));
    format!(
        "name: {name}\ntasks:\n  - {{name: one, type: api_call, url: '{url}'}}\n  - {{name: two, type: api_call, url: '{url}'}}\n  - {{name: three, type: api_call, url: '{url}'}}\ntriggers:\n  - {{from: one, to: two}}\n  - {{from: two, to: three}}\n"
    )
}

/// Writes the parts of `config` that a separate `ylem run` process needs, as TOML.
fn config_toml(config: &Config) -> String {
    let topics = &config.topics;
    let groups = &config.consumer_groups;
    format!(
        r#"
[store]
url = "{store}"

[transport]
kind = "kafka"

[transport.kafka]
bootstrap_servers = "{bootstrap}"
session_timeout_ms = {session}

[topics]
task_runs = "{task_runs}"
task_runs_load_balanced = "{balanced}"
task_run_results = "{results}"
query_task_run_results = "{query_results}"
notification_task_run_results = "{notification_results}"

[consumer_groups]
load_balancer = "{group_balancer}"
load_balancer_results = "{group_balancer_results}"
task_runner = "{group_runner}"
trigger_listener = "{group_triggers}"
statistics = "{group_statistics}"

[http]
enabled = false

[pipelines]
apply_on_start = []
"#,
        store = config.store.url,
        bootstrap = config.transport.kafka.bootstrap_servers,
        session = config.transport.kafka.session_timeout_ms,
        task_runs = topics.task_runs,
        balanced = topics.task_runs_load_balanced,
        results = topics.task_run_results,
        query_results = topics.query_task_run_results,
        notification_results = topics.notification_task_run_results,
        group_balancer = groups.load_balancer,
        group_balancer_results = groups.load_balancer_results,
        group_runner = groups.task_runner,
        group_triggers = groups.trigger_listener,
        group_statistics = groups.statistics,
    )
}

/// Starts `ylem run --stages STAGES` as a separate process on the test's configuration.
fn spawn_stage_process(env: &TestEnv, stages: &str) -> Child {
    let path = env
        .folder
        .path()
        .join(format!("config-{}.toml", Uuid::new_v4()));
    std::fs::write(&path, config_toml(&env.runtime.config)).unwrap();
    Command::new(env!("CARGO_BIN_EXE_ylem"))
        .args(["run", "--stages", stages, "--config"])
        .arg(&path)
        .env("YLEM_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("the ylem binary starts")
}

/// Reads every result of the results topic into a count per (task run, output index).
async fn count_results(consumer: &dyn Consumer, expected: usize) -> BTreeMap<(Uuid, u32), usize> {
    let mut counts = BTreeMap::new();
    let mut total = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while total < expected
        || tokio::time::Instant::now()
            < deadline.min(tokio::time::Instant::now() + Duration::from_secs(0))
    {
        let event = match tokio::time::timeout(Duration::from_secs(3), consumer.next_event()).await
        {
            Ok(event) => event.unwrap(),
            Err(_) if total >= expected => break,
            Err(_) => panic!("only {total} of {expected} results arrived"),
        };
        let ConsumerEvent::Record(record) = event else {
            continue;
        };
        let Ok(Message::Result(result)) = Message::decode(&record.payload) else {
            panic!("record on the results topic is not a result");
        };
        *counts
            .entry((result.task_run_uuid, result.batch_index.unwrap_or(0)))
            .or_insert(0) += 1;
        total += 1;
    }
    counts
}

async fn probe(env: &TestEnv, topic: &str) -> std::sync::Arc<dyn Consumer> {
    env.transport
        .subscribe(&format!("probe-{}", Uuid::new_v4()), &[topic.to_owned()])
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_with_tasks_in_flight_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let receiver = Receiver::start().await;
    receiver.set_delay(Duration::from_millis(1500));
    let mut env = TestEnv::start(Backend::Kafka, |_, _| {}).await;
    env.apply(&chain_pipeline("slow-chain", &receiver)).await;
    let results_topic = env.runtime.config.topics.task_run_results.clone();
    let results = probe(&env, &results_topic).await;

    let mut runs = Vec::new();
    for _ in 0..12 {
        runs.push(env.run("slow-chain", Some("{}")).await);
    }
    // Wait until tasks are running, then add a second runner to the group: the first one
    // gives up some partitions while their tasks are still in flight.
    wait_for("tasks in flight", Duration::from_secs(30), || {
        let count = receiver.received().len();
        async move { (count >= 4).then_some(()) }
    })
    .await;
    let second_runner = Daemon::start(env.runtime.clone(), &[Stage::Runner])
        .await
        .unwrap();

    for run in &runs {
        let detail = env.finished_run(*run).await;
        assert_eq!(detail.run.status, RunStatus::Succeeded, "{detail:#?}");
        assert_eq!(detail.task_runs.len(), 3);
    }
    let counts = count_results(&*results, runs.len() * 3).await;
    assert_eq!(counts.len(), runs.len() * 3);
    let repeated: Vec<_> = counts.iter().filter(|(_, count)| **count > 1).collect();
    assert!(repeated.is_empty(), "results published twice: {repeated:?}");
    assert_eq!(receiver.received().len(), runs.len() * 3);

    second_runner.stop().await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn second_runner_process_shares_work() {
    let _serial = SERIAL.lock().await;
    let receiver = Receiver::start().await;
    receiver.set_delay(Duration::from_millis(100));
    let mut env = TestEnv::prepare(Backend::Kafka, |_, _| {}).await;
    env.apply(&chain_pipeline("shared-chain", &receiver)).await;
    env.start_stages(&[
        Stage::Publisher,
        Stage::Balancer,
        Stage::Runner,
        Stage::Triggers,
    ])
    .await;
    let mut second = spawn_stage_process(&env, "runner");

    let mut runs = Vec::new();
    for _ in 0..20 {
        runs.push(env.run("shared-chain", Some("{}")).await);
    }
    for run in &runs {
        let detail = env.finished_run(*run).await;
        assert_eq!(detail.run.status, RunStatus::Succeeded, "{detail:#?}");
        assert_eq!(detail.task_runs.len(), 3, "{detail:#?}");
    }
    assert_eq!(receiver.received().len(), runs.len() * 3);

    second.kill().unwrap();
    let _ = second.wait();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runner_killed_mid_run_loses_no_result() {
    let _serial = SERIAL.lock().await;
    let receiver = Receiver::start().await;
    receiver.set_delay(Duration::from_millis(200));
    let mut env = TestEnv::prepare(Backend::Kafka, |_, _| {}).await;
    env.apply(&chain_pipeline("killed-chain", &receiver)).await;
    env.start_stages(&[
        Stage::Publisher,
        Stage::Balancer,
        Stage::Triggers,
        Stage::Statistics,
    ])
    .await;
    let mut runner = spawn_stage_process(&env, "runner");

    let mut runs = Vec::new();
    for _ in 0..10 {
        runs.push(env.run("killed-chain", Some("{}")).await);
    }
    wait_for("the runner to be halfway", Duration::from_secs(60), || {
        let count = receiver.received().len();
        async move { (count >= 12).then_some(()) }
    })
    .await;
    runner.kill().unwrap(); // SIGKILL: no drain, no final commit.
    let _ = runner.wait();
    let mut restarted = spawn_stage_process(&env, "runner");

    for run in &runs {
        let detail = env.finished_run(*run).await;
        assert_eq!(detail.run.status, RunStatus::Succeeded, "{detail:#?}");
        let mut names: Vec<&str> = detail
            .task_runs
            .iter()
            .map(|task| task.task_name.as_str())
            .collect();
        names.sort();
        assert_eq!(names, ["one", "three", "two"], "{detail:#?}");
    }
    // Tasks in flight at the kill ran again, so the target may see a few repeats, never fewer
    // calls than tasks.
    assert!(receiver.received().len() >= runs.len() * 3);

    restarted.kill().unwrap();
    let _ = restarted.wait();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_restart_keeps_runs_flowing() {
    let _serial = SERIAL.lock().await;
    let receiver = Receiver::start().await;
    let mut env = TestEnv::start(Backend::Kafka, |_, _| {}).await;
    env.apply(&chain_pipeline("restart-chain", &receiver)).await;

    let before = env.run("restart-chain", Some("{}")).await;
    assert_eq!(
        env.finished_run(before).await.run.status,
        RunStatus::Succeeded
    );

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka.sh");
    let status = Command::new(script).arg("stop").status().unwrap();
    assert!(status.success());
    // Runs queued while the broker is away are published once it is back.
    let mut during = Vec::new();
    for _ in 0..3 {
        during.push(env.run("restart-chain", Some("{}")).await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = Command::new(script)
        .arg("start")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());

    for run in &during {
        let detail = env
            .finished_run_within(*run, Duration::from_secs(120))
            .await;
        assert_eq!(detail.run.status, RunStatus::Succeeded, "{detail:#?}");
        assert_eq!(detail.task_runs.len(), 3);
    }
    let after = env.run("restart-chain", Some("{}")).await;
    assert_eq!(
        env.finished_run(after).await.run.status,
        RunStatus::Succeeded
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_record_is_dead_lettered_and_partition_moves_on() {
    let _serial = SERIAL.lock().await;
    let receiver = Receiver::start().await;
    let mut env = TestEnv::start(Backend::Kafka, |_, _| {}).await;
    let pipeline = env.apply(&chain_pipeline("after-poison", &receiver)).await;
    let topic = env.runtime.config.topics.task_runs.clone();
    let dead_letters = probe(&env, &format!("{topic}.dlq")).await;

    // The poison record and the run's tasks share a key, so they share a partition.
    let run = Uuid::new_v4();
    env.transport
        .send(OutgoingRecord::keyed(
            topic.clone(),
            run.to_string(),
            br#"{"headers":{"X-Message-Name":"tasks.unheard_of"},"message":{}}"#.to_vec(),
        ))
        .await
        .unwrap();
    env.store
        .enqueue_run(NewQueuedRun {
            pipeline_uuid: pipeline,
            run_uuid: run,
            kind: RunKind::Api,
            input: Some(b"{}".to_vec()),
            run_config: None,
        })
        .await
        .unwrap();

    let detail = env.finished_run(run).await;
    assert_eq!(detail.run.status, RunStatus::Succeeded);
    let dead = loop {
        let event = tokio::time::timeout(Duration::from_secs(30), dead_letters.next_event())
            .await
            .expect("the poison record reaches the dead-letter topic")
            .unwrap();
        if let ConsumerEvent::Record(record) = event {
            break record;
        }
    };
    assert_eq!(dead.key_text(), run.to_string());
    let reason = String::from_utf8_lossy(dead.header("x-dead-letter-reason").unwrap()).into_owned();
    assert!(reason.contains("unknown message name"), "{reason}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_runner_and_restart_finishes_runs() {
    let _serial = SERIAL.lock().await;
    let receiver = Receiver::start().await;
    receiver.set_delay(Duration::from_millis(800));
    let mut env = TestEnv::prepare(Backend::Kafka, |_, _| {}).await;
    env.apply(&chain_pipeline("term-chain", &receiver)).await;
    env.start_stages(&[Stage::Publisher, Stage::Balancer, Stage::Triggers])
        .await;
    let mut runner = spawn_stage_process(&env, "runner");

    let mut runs = Vec::new();
    for _ in 0..6 {
        runs.push(env.run("term-chain", Some("{}")).await);
    }
    wait_for("tasks in flight", Duration::from_secs(60), || {
        let count = receiver.received().len();
        async move { (count >= 3).then_some(()) }
    })
    .await;
    let status = Command::new("kill")
        .args(["-TERM", &runner.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || runner.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.code(), Some(0), "a drained runner exits 0");

    let mut restarted = spawn_stage_process(&env, "runner");
    for run in &runs {
        let detail = env.finished_run(*run).await;
        assert_eq!(detail.run.status, RunStatus::Succeeded, "{detail:#?}");
        assert_eq!(detail.task_runs.len(), 3);
    }
    assert_eq!(
        receiver.received().len(),
        runs.len() * 3,
        "no task ran twice"
    );
    restarted.kill().unwrap();
    let _ = restarted.wait();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_at_random_points_loses_no_run() {
    let _serial = SERIAL.lock().await;
    let receiver = Receiver::start().await;
    receiver.set_delay(Duration::from_millis(50));
    let mut env = TestEnv::prepare(Backend::Kafka, |_, _| {}).await;
    env.apply(&chain_pipeline("chaos-chain", &receiver)).await;
    env.start_stages(&[
        Stage::Publisher,
        Stage::Balancer,
        Stage::Triggers,
        Stage::Statistics,
    ])
    .await;

    let mut runs = Vec::new();
    for _ in 0..20 {
        runs.push(env.run("chaos-chain", Some("{}")).await);
    }
    // Kill the runner three times at random moments while the runs flow.
    let mut runner = spawn_stage_process(&env, "runner");
    for _ in 0..3 {
        let pause = Duration::from_millis(rand::random_range(300..1_500));
        tokio::time::sleep(pause).await;
        runner.kill().unwrap();
        let _ = runner.wait();
        runner = spawn_stage_process(&env, "runner");
    }

    for run in &runs {
        let detail = env
            .finished_run_within(*run, Duration::from_secs(120))
            .await;
        assert!(detail.run.status.is_terminal());
        assert_eq!(detail.run.status, RunStatus::Succeeded, "{detail:#?}");
        let mut names: Vec<&str> = detail
            .task_runs
            .iter()
            .map(|task| task.task_name.as_str())
            .collect();
        names.sort();
        assert_eq!(names, ["one", "three", "two"], "{detail:#?}");
    }
    runner.kill().unwrap();
    let _ = runner.wait();
    env.stop().await;
}
