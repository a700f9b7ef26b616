//! `ylem stats`: reports read from the statistics backend of `[statistics]`.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::cli::{table, EXIT_INVALID_INPUT};
use crate::statistics::{SlowTask, StatisticsStore};
use crate::store::Store;

/// The time `since` before now.
fn start_of_range(since: Duration) -> anyhow::Result<DateTime<Utc>> {
    let since = chrono::Duration::from_std(since)
        .map_err(|err| anyhow::anyhow!("invalid duration {since:?}: {err}"))?;
    Ok(Utc::now() - since)
}

fn format_ms(value: Option<u64>) -> String {
    value
        .map(|ms| format!("{ms} ms"))
        .unwrap_or_else(|| "-".to_owned())
}

pub(super) async fn pipeline_stats(
    store: &dyn Store,
    statistics: &dyn StatisticsStore,
    name: &str,
    last_runs: u32,
    since: Option<Duration>,
    json: bool,
) -> anyhow::Result<i32> {
    let Some(pipeline) = store.pipeline_by_name(name).await? else {
        eprintln!(
            "error: pipeline {name:?} not found; `ylem pipeline list` shows the applied pipelines"
        );
        return Ok(EXIT_INVALID_INPUT);
    };
    let since = since.map(start_of_range).transpose()?;
    let report = statistics
        .pipeline_report(pipeline.uuid, last_runs, since)
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(0);
    }
    let range = since
        .map(|time| format!("since {}", time.format("%Y-%m-%d %H:%M:%S UTC")))
        .unwrap_or_else(|| "all stored results".to_owned());
    println!("pipeline:             {name}");
    println!("range:                {range}");
    println!("runs:                 {}", report.runs);
    println!("successful runs:      {}", report.successful_runs);
    println!("failed runs:          {}", report.failed_runs);
    println!("successful task runs: {}", report.successful_task_runs);
    println!("failed task runs:     {}", report.failed_task_runs);
    println!(
        "run duration p50:     {} (last {} runs)",
        format_ms(report.duration_p50_ms),
        report.percentile_runs
    );
    println!(
        "run duration p80:     {}",
        format_ms(report.duration_p80_ms)
    );
    println!(
        "run duration p95:     {}",
        format_ms(report.duration_p95_ms)
    );
    Ok(0)
}

/// A slow task run with its pipeline's name, as printed by `--json`.
#[derive(Serialize)]
struct NamedSlowTask {
    pipeline_name: Option<String>,
    #[serde(flatten)]
    task: SlowTask,
}

pub(super) async fn slow_tasks(
    store: &dyn Store,
    statistics: &dyn StatisticsStore,
    threshold_ms: u64,
    since: Duration,
    limit: u32,
    json: bool,
) -> anyhow::Result<i32> {
    let tasks = statistics
        .slow_tasks(threshold_ms, start_of_range(since)?, limit)
        .await?;
    let names: HashMap<_, _> = store
        .list_pipelines()
        .await?
        .into_iter()
        .map(|pipeline| (pipeline.uuid, pipeline.name))
        .collect();
    let named: Vec<NamedSlowTask> = tasks
        .into_iter()
        .map(|task| NamedSlowTask {
            pipeline_name: names.get(&task.pipeline_uuid).cloned(),
            task,
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&named)?);
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = named
        .iter()
        .map(|slow| {
            let task = &slow.task;
            vec![
                task.executed_at.to_rfc3339(),
                slow.pipeline_name
                    .clone()
                    .unwrap_or_else(|| task.pipeline_uuid.to_string()),
                task.task_uuid.to_string(),
                task.task_type.clone(),
                format!("{} ms", task.duration_ms),
                if task.is_successful {
                    "succeeded"
                } else {
                    "failed"
                }
                .to_owned(),
                task.pipeline_run_uuid.to_string(),
            ]
        })
        .collect();
    table::print(
        &[
            "EXECUTED AT",
            "PIPELINE",
            "TASK",
            "TYPE",
            "DURATION",
            "STATUS",
            "RUN",
        ],
        &rows,
    );
    Ok(0)
}
