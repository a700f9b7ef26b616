//! The load balancer: slow pipelines stay off the fast pool, on both transports.

mod common;

use chrono::Utc;
use common::{Backend, TestEnv};
use std::collections::BTreeMap;
use uuid::Uuid;
use ylem_runtime::daemon::Stage;
use ylem_runtime::messages::Message;
use ylem_runtime::store::{RunStatus, StatisticsRow};
use ylem_runtime::transport::ConsumerEvent;

fn echo_pipeline(name: &str) -> String {
    format!("name: {name}\ntasks:\n  - name: first\n    type: processor\n    jq: '.'\n  - name: second\n    type: processor\n    jq: '.'\ntriggers:\n  - {{from: first, to: second}}\n")
}

/// Stores `runs` finished runs of `duration_ms` each, as the statistics listener would.
async fn seed_history(env: &TestEnv, pipeline: Uuid, duration_ms: u64, runs: usize) {
    let rows: Vec<StatisticsRow> = (0..runs)
        .map(|_| StatisticsRow {
            result_uuid: Uuid::new_v4(),
            organization_uuid: Uuid::nil(),
            pipeline_uuid: pipeline,
            pipeline_run_uuid: Uuid::new_v4(),
            task_uuid: Uuid::new_v4(),
            task_type: "processor".to_owned(),
            pipeline_type: "generic".to_owned(),
            is_initial_task: true,
            is_final_task: true,
            is_successful: true,
            duration_ms,
            output_bytes: 2,
            errors: Vec::new(),
            executed_at: Utc::now(),
        })
        .collect();
    env.store.store_statistics(&rows).await.unwrap();
}

async fn slow_pipelines_stay_off_fast_pool(backend: Backend) {
    // A long history keeps the seeded durations dominant while the test's quick runs are added.
    let mut env =
        TestEnv::prepare(backend, |config, _| config.load_balancer.history_runs = 50).await;
    let slow = env.apply(&echo_pipeline("slow-report")).await;
    let fast = env.apply(&echo_pipeline("fast-report")).await;
    let fresh = env.apply(&echo_pipeline("fresh-report")).await;
    seed_history(&env, slow, 120_000, 5).await;
    seed_history(&env, fast, 50, 5).await;

    // A probe group reads every balanced record, next to the task runners.
    let topic = env.runtime.config.topics.task_runs_load_balanced.clone();
    let probe = env
        .transport
        .subscribe(
            &format!("probe-{}", Uuid::new_v4()),
            std::slice::from_ref(&topic),
        )
        .await
        .unwrap();
    env.start_stages(&Stage::ALL).await;

    // A pipeline without history is placed by the configured default (the slow pool); once
    // its first run is observed, its live statistics make it fast.
    let first_fresh = env.run("fresh-report", Some("{}")).await;
    assert_eq!(
        env.finished_run(first_fresh).await.run.status,
        RunStatus::Succeeded
    );

    let mut runs = vec![first_fresh];
    for _ in 0..6 {
        for name in ["slow-report", "fast-report"] {
            runs.push(env.run(name, Some("{}")).await);
        }
    }
    for run in &runs {
        assert_eq!(
            env.finished_run(*run).await.run.status,
            RunStatus::Succeeded
        );
    }
    let second_fresh = env.run("fresh-report", Some("{}")).await;
    assert_eq!(
        env.finished_run(second_fresh).await.run.status,
        RunStatus::Succeeded
    );
    runs.push(second_fresh);

    let expected_records = runs.len() * 2;
    let mut partitions: BTreeMap<Uuid, Vec<u32>> = BTreeMap::new();
    let mut run_partitions: BTreeMap<Uuid, Vec<u32>> = BTreeMap::new();
    let mut seen = 0;
    while seen < expected_records {
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), probe.next_event())
            .await
            .expect("probe received every balanced record")
            .unwrap();
        let ConsumerEvent::Record(record) = event else {
            continue;
        };
        seen += 1;
        let Ok(Message::Task(task)) = Message::decode(&record.payload) else {
            panic!("balanced record is not a task");
        };
        assert_eq!(
            record.header("x-pipeline-id"),
            Some(task.common.pipeline_uuid.as_bytes().as_slice())
        );
        assert_eq!(
            record.header("x-pipeline-run-id"),
            Some(task.common.pipeline_run_uuid.as_bytes().as_slice())
        );
        partitions
            .entry(task.common.pipeline_uuid)
            .or_default()
            .push(record.partition);
        run_partitions
            .entry(task.common.pipeline_run_uuid)
            .or_default()
            .push(record.partition);
    }

    // Twelve partitions: 0..7 are the slow pool, 7..12 the fast pool.
    assert!(
        partitions[&slow].iter().all(|partition| *partition < 7),
        "{:?}",
        partitions[&slow]
    );
    assert!(
        partitions[&fast].iter().all(|partition| *partition >= 7),
        "{:?}",
        partitions[&fast]
    );
    assert!(
        run_partitions[&first_fresh]
            .iter()
            .all(|partition| *partition < 7),
        "{:?}",
        run_partitions[&first_fresh]
    );
    assert!(
        run_partitions[&second_fresh]
            .iter()
            .all(|partition| *partition >= 7),
        "{:?}",
        run_partitions[&second_fresh]
    );
    assert_eq!(partitions[&fresh].len(), 4);
    // Both tasks of a run share a partition.
    for (run, parts) in &run_partitions {
        assert_eq!(parts.len(), 2, "run {run}");
        assert_eq!(parts[0], parts[1], "run {run}");
    }
    env.stop().await;
}

on_both_transports!(slow_pipelines_stay_off_fast_pool,);
