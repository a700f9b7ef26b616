//! Graceful shutdown with tasks in flight, on both transports: in-flight results are
//! published before the stages stop, and a restarted daemon finishes the runs without running
//! a finished task again.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{wait_for, Backend, Receiver, TestEnv};
use ylem_runtime::daemon::{Daemon, Runtime, Stage};
use ylem_runtime::messages::Message;
use ylem_runtime::store::RunStatus;
use ylem_runtime::transport::ConsumerEvent;

fn slow_chain(receiver: &Receiver) -> String {
    let url = receiver.url("/slow");
    format!(
        "name: slow-chain\ntasks:\n  - {{name: one, type: api_call, url: '{url}'}}\n  - {{name: two, type: api_call, url: '{url}'}}\ntriggers:\n  - {{from: one, to: two}}\n"
    )
}

async fn shutdown_publishes_in_flight_results(backend: Backend) {
    let receiver = Receiver::start().await;
    receiver.set_delay(Duration::from_millis(800));
    let mut env = TestEnv::start(backend, |_, _| {}).await;
    env.apply(&slow_chain(&receiver)).await;
    let results_topic = env.runtime.config.topics.task_run_results.clone();
    let probe = env
        .transport
        .subscribe(
            &format!("probe-{}", uuid::Uuid::new_v4()),
            std::slice::from_ref(&results_topic),
        )
        .await
        .unwrap();

    let mut runs = Vec::new();
    for _ in 0..4 {
        runs.push(env.run("slow-chain", Some("{}")).await);
    }
    wait_for("tasks in flight", Duration::from_secs(30), || {
        let count = receiver.received().len();
        async move { (count >= 2).then_some(()) }
    })
    .await;

    let daemon = env.daemon.take().unwrap();
    assert!(daemon.drain().await, "every consumer drained");
    let executed = receiver.received().len();
    daemon.stop().await;

    // Every task that reached the target before the shutdown has its result published.
    let mut published = 0;
    while published < executed {
        let event = tokio::time::timeout(Duration::from_secs(20), probe.next_event())
            .await
            .unwrap_or_else(|_| {
                panic!("{published} of {executed} in-flight results were published")
            })
            .unwrap();
        if let ConsumerEvent::Record(record) = event {
            assert!(matches!(
                Message::decode(&record.payload),
                Ok(Message::Result(_))
            ));
            published += 1;
        }
    }

    // A new daemon on the same store and topics finishes the runs.
    let runtime = Runtime::new(
        env.runtime.config.clone(),
        env.store.clone(),
        env.transport.clone(),
    );
    let restarted = Daemon::start(runtime, &Stage::ALL).await.unwrap();
    for run in &runs {
        let detail = env.finished_run(*run).await;
        assert_eq!(detail.run.status, RunStatus::Succeeded, "{detail:#?}");
        assert_eq!(detail.task_runs.len(), 2);
    }
    assert_eq!(
        receiver.received().len(),
        runs.len() * 2,
        "no task ran twice"
    );
    restarted.stop().await;
    let _ = Arc::clone(&env.store);
}

on_both_transports!(shutdown_publishes_in_flight_results);
