//! The body of each command.

mod stats;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};
use uuid::Uuid;

use super::{
    table, Cli, Command, PipelineCommand, RunsCommand, StatsCommand, EXIT_FAILURE,
    EXIT_INVALID_INPUT,
};
use crate::catalog::{apply_path, ApplyError};
use crate::config::Config;
use crate::daemon::{parse_stages, Daemon, Runtime};
use crate::store::{self, NewQueuedRun, RunDetail, RunKind, RunStatus, Store};

/// Runs a parsed command line; returns the exit code.
pub async fn dispatch(cli: Cli) -> i32 {
    match run_command(cli).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            EXIT_FAILURE
        }
    }
}

async fn run_command(cli: Cli) -> anyhow::Result<i32> {
    let config = match load_config(&cli.config) {
        Ok(config) => Arc::new(config),
        Err(err) => {
            eprintln!("error: {err:#}");
            return Ok(EXIT_INVALID_INPUT);
        }
    };
    match cli.command {
        Command::Run {
            stages,
            apply,
            http_listen,
        } => {
            let mut config = Arc::unwrap_or_clone(config);
            match http_listen.as_deref() {
                Some("off") => config.http.enabled = false,
                Some(listen) => {
                    config.http.enabled = true;
                    config.http.listen = listen.to_owned();
                    if let Err(err) = config.validate() {
                        eprintln!("error: --http-listen: {err}");
                        return Ok(EXIT_INVALID_INPUT);
                    }
                }
                None => {}
            }
            run_daemon(Arc::new(config), &stages, &apply).await
        }
        Command::Pipeline(command) => {
            let store = open_store(&config).await?;
            match command {
                PipelineCommand::Apply {
                    path,
                    dry_run,
                    json,
                } => apply(&*store, &path, dry_run, json).await,
                PipelineCommand::List { json } => list_pipelines(&*store, json).await,
                PipelineCommand::Run {
                    name,
                    input,
                    wait,
                    timeout_secs,
                    json,
                } => run_pipeline(&*store, &name, input.as_deref(), wait, timeout_secs, json).await,
            }
        }
        Command::Runs(command) => {
            let store = open_store(&config).await?;
            match command {
                RunsCommand::List {
                    pipeline,
                    limit,
                    json,
                } => list_runs(&*store, pipeline.as_deref(), limit, json).await,
                RunsCommand::Show { run_uuid, json } => show_run(&*store, &run_uuid, json).await,
                RunsCommand::Cancel { run_uuid } => cancel_run(&*store, &run_uuid).await,
            }
        }
        Command::Actors { url, json } => show_actors(&url, json).await,
        Command::Stats(command) => {
            let store = open_store(&config).await?;
            let statistics = crate::statistics::open(&config, store.clone());
            match command {
                StatsCommand::Pipeline {
                    name,
                    last_runs,
                    since,
                    json,
                } => {
                    stats::pipeline_stats(&*store, &*statistics, &name, last_runs, since, json)
                        .await
                }
                StatsCommand::SlowTasks {
                    threshold_ms,
                    since,
                    limit,
                    json,
                } => {
                    stats::slow_tasks(&*store, &*statistics, threshold_ms, since, limit, json).await
                }
            }
        }
    }
}

fn load_config(path: &Path) -> anyhow::Result<Config> {
    if !path.exists() && path == Path::new("config.toml") {
        warn!("no config.toml in the working directory; using built-in defaults, whose store is ylem.db in this directory; pass --config to use another configuration");
        return Ok(Config::default());
    }
    Config::load(path)
}

async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    store::open_configured(&config.store).await
}

async fn run_daemon(
    config: Arc<Config>,
    stages: &str,
    apply: &[std::path::PathBuf],
) -> anyhow::Result<i32> {
    let stages = match parse_stages(stages) {
        Ok(stages) => stages,
        Err(problem) => {
            eprintln!("error: --stages: {problem}");
            return Ok(EXIT_INVALID_INPUT);
        }
    };
    let store = open_store(&config).await?;

    let mut paths: Vec<std::path::PathBuf> = config
        .pipelines
        .apply_on_start
        .iter()
        .map(Into::into)
        .collect();
    paths.extend(apply.iter().cloned());
    for path in &paths {
        match apply_path(&*store, path, false).await {
            Ok(outcomes) => {
                for outcome in outcomes {
                    info!(pipeline = %outcome.name, change = ?outcome.change, path = %path.display(), "pipeline applied");
                }
            }
            Err(ApplyError::Invalid(errors)) => {
                eprintln!(
                    "error: pipelines in {} are invalid; nothing was applied:\n{errors}",
                    path.display()
                );
                return Ok(EXIT_INVALID_INPUT);
            }
            Err(ApplyError::Store(err)) => return Err(err),
        }
    }

    let transport = crate::transport::connect(&config).await?;
    let runtime = Runtime::new(config.clone(), store, transport);
    runtime.ensure_topics().await?;
    let http = if config.http.enabled {
        let listen = config.http.listen.parse()?;
        Some(crate::http::serve(runtime.clone(), listen).await?)
    } else {
        None
    };
    let daemon = Daemon::start(runtime, &stages).await?;
    let code = daemon.run_until_signal().await;
    if let Some(http) = http {
        http.abort();
    }
    Ok(code)
}

async fn apply(store: &dyn Store, path: &Path, dry_run: bool, json: bool) -> anyhow::Result<i32> {
    let outcomes = match apply_path(store, path, dry_run).await {
        Ok(outcomes) => outcomes,
        Err(ApplyError::Invalid(errors)) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "applied": false, "problems": errors.problems() })
                );
            } else {
                eprintln!(
                    "error: nothing was applied; fix these problems and apply again:\n{errors}"
                );
            }
            return Ok(EXIT_INVALID_INPUT);
        }
        Err(ApplyError::Store(err)) => return Err(err),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&outcomes)?);
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|outcome| {
            let change = if dry_run {
                "valid".to_owned()
            } else {
                format!("{:?}", outcome.change).to_lowercase()
            };
            vec![
                outcome.name.clone(),
                change,
                outcome.removed_scheduled_runs.to_string(),
            ]
        })
        .collect();
    table::print(&["PIPELINE", "CHANGE", "REMOVED_SCHEDULED_RUNS"], &rows);
    Ok(0)
}

async fn list_pipelines(store: &dyn Store, json: bool) -> anyhow::Result<i32> {
    let pipelines = store.list_pipelines().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&pipelines)?);
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = pipelines
        .iter()
        .map(|pipeline| {
            vec![
                pipeline.name.clone(),
                pipeline.tasks.to_string(),
                pipeline.schedule.clone().unwrap_or_else(|| "-".to_owned()),
                pipeline.version.to_string(),
                pipeline.uuid.to_string(),
            ]
        })
        .collect();
    table::print(&["NAME", "TASKS", "SCHEDULE", "VERSION", "UUID"], &rows);
    Ok(0)
}

async fn run_pipeline(
    store: &dyn Store,
    name: &str,
    input: Option<&str>,
    wait: bool,
    timeout_secs: u64,
    json: bool,
) -> anyhow::Result<i32> {
    if let Some(input) = input {
        if let Err(err) = serde_json::from_str::<serde_json::Value>(input) {
            eprintln!("error: --input is not valid JSON ({err}); quote it for the shell, e.g. --input '{{\"limit\": 10}}'");
            return Ok(EXIT_INVALID_INPUT);
        }
    }
    let Some(pipeline) = store.pipeline_by_name(name).await? else {
        eprintln!(
            "error: pipeline {name:?} not found; `ylem pipeline list` shows the applied pipelines"
        );
        return Ok(EXIT_INVALID_INPUT);
    };
    let run_uuid = Uuid::new_v4();
    store
        .enqueue_run(NewQueuedRun {
            pipeline_uuid: pipeline.uuid,
            run_uuid,
            kind: RunKind::Manual,
            input: input.map(|input| input.as_bytes().to_vec()),
            run_config: None,
        })
        .await?;
    if !wait {
        if json {
            println!("{}", serde_json::json!({ "run_uuid": run_uuid }));
        } else {
            println!("{run_uuid}");
        }
        return Ok(0);
    }
    if !json {
        eprintln!("run {run_uuid} queued; waiting for it to end");
    }

    let started = Instant::now();
    let mut warned = false;
    let detail = loop {
        if let Some(detail) = store.run(run_uuid).await? {
            if detail.run.status.is_terminal() {
                break detail;
            }
        } else if !warned && started.elapsed() > Duration::from_secs(15) {
            warned = true;
            warn!(%run_uuid, "no daemon has started the run yet; is `ylem run` running with the publisher stage on this store?");
        }
        if started.elapsed() > Duration::from_secs(timeout_secs) {
            eprintln!("error: run {run_uuid} did not end within {timeout_secs} s; `ylem runs show {run_uuid}` shows its progress");
            return Ok(EXIT_FAILURE);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    print_run(&detail, json)?;
    if detail.run.status == RunStatus::Succeeded {
        Ok(0)
    } else if detail.run.status == RunStatus::Cancelled {
        eprintln!("error: run {run_uuid} was cancelled");
        Ok(EXIT_FAILURE)
    } else {
        let error = detail
            .run
            .error
            .clone()
            .unwrap_or_else(|| "run failed".to_owned());
        eprintln!("error: {error}");
        Ok(EXIT_FAILURE)
    }
}

async fn list_runs(
    store: &dyn Store,
    pipeline: Option<&str>,
    limit: u32,
    json: bool,
) -> anyhow::Result<i32> {
    let runs = store.list_runs(pipeline, limit).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|run| {
            let duration = run
                .finished_at
                .map(|finished| format!("{} ms", (finished - run.started_at).num_milliseconds()))
                .unwrap_or_else(|| "-".to_owned());
            vec![
                run.run_uuid.to_string(),
                run.pipeline_name.clone(),
                run.kind.as_str().to_owned(),
                run.status.as_str().to_owned(),
                run.task_results.to_string(),
                run.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                duration,
            ]
        })
        .collect();
    table::print(
        &[
            "RUN",
            "PIPELINE",
            "KIND",
            "STATUS",
            "RESULTS",
            "STARTED (UTC)",
            "DURATION",
        ],
        &rows,
    );
    Ok(0)
}

async fn cancel_run(store: &dyn Store, run_uuid: &str) -> anyhow::Result<i32> {
    let run_uuid = match Uuid::parse_str(run_uuid) {
        Ok(uuid) => uuid,
        Err(err) => {
            eprintln!("error: {run_uuid:?} is not a run uuid ({err}); `ylem runs list` shows them");
            return Ok(EXIT_INVALID_INPUT);
        }
    };
    match store.cancel_run(run_uuid).await? {
        Some(RunStatus::Cancelled) => {
            println!("run {run_uuid} cancelled");
            Ok(0)
        }
        Some(status) => {
            eprintln!("error: run {run_uuid} already ended as {}", status.as_str());
            Ok(EXIT_FAILURE)
        }
        None => {
            eprintln!("error: run {run_uuid} not found");
            Ok(EXIT_FAILURE)
        }
    }
}

async fn show_run(store: &dyn Store, run_uuid: &str, json: bool) -> anyhow::Result<i32> {
    let run_uuid = match Uuid::parse_str(run_uuid) {
        Ok(uuid) => uuid,
        Err(err) => {
            eprintln!("error: {run_uuid:?} is not a run uuid ({err}); `ylem runs list` shows them");
            return Ok(EXIT_INVALID_INPUT);
        }
    };
    let Some(detail) = store.run(run_uuid).await? else {
        eprintln!("error: run {run_uuid} not found");
        return Ok(EXIT_FAILURE);
    };
    print_run(&detail, json)?;
    Ok(0)
}

fn print_run(detail: &RunDetail, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(detail)?);
        return Ok(());
    }
    let run = &detail.run;
    println!("run:       {}", run.run_uuid);
    println!("pipeline:  {}", run.pipeline_name);
    println!("status:    {}", run.status.as_str());
    println!("kind:      {}", run.kind.as_str());
    println!(
        "started:   {}",
        run.started_at.format("%Y-%m-%d %H:%M:%S%.3f UTC")
    );
    if let Some(finished) = run.finished_at {
        println!(
            "finished:  {}",
            finished.format("%Y-%m-%d %H:%M:%S%.3f UTC")
        );
    }
    if let Some(error) = &run.error {
        println!("error:     {error}");
    }
    println!();
    let rows: Vec<Vec<String>> = detail
        .task_runs
        .iter()
        .map(|task| {
            vec![
                task.task_name.clone(),
                task.task_type.clone(),
                task.status.to_owned(),
                format!("{} ms", task.duration_ms),
                format!("{} B", task.output_bytes),
                task.batch_index
                    .map(|index| index.to_string())
                    .unwrap_or_else(|| "-".to_owned()),
                task.errors.join("; "),
            ]
        })
        .collect();
    table::print(
        &[
            "TASK", "TYPE", "STATUS", "DURATION", "OUTPUT", "ITEM", "ERROR",
        ],
        &rows,
    );
    Ok(())
}

async fn show_actors(url: &str, json: bool) -> anyhow::Result<i32> {
    let endpoint = format!("{}/api/actors", url.trim_end_matches('/'));
    let response = match reqwest::get(&endpoint).await {
        Ok(response) => response,
        Err(err) => {
            eprintln!("error: failed to reach the daemon at {endpoint}: {err}; is `ylem run` running with its HTTP endpoint on that address?");
            return Ok(EXIT_FAILURE);
        }
    };
    if !response.status().is_success() {
        eprintln!("error: {endpoint} returned {}", response.status());
        return Ok(EXIT_FAILURE);
    }
    let actors: Vec<serde_json::Value> = response.json().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&actors)?);
        return Ok(0);
    }
    let text = |value: &serde_json::Value| match value {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let rows: Vec<Vec<String>> = actors
        .iter()
        .map(|actor| {
            vec![
                text(&actor["path"]),
                text(&actor["state"]),
                text(&actor["restarts"]),
                text(&actor["last_failure_at"]),
                text(&actor["last_failure"]),
            ]
        })
        .collect();
    table::print(
        &[
            "ACTOR",
            "STATE",
            "RESTARTS",
            "LAST FAILURE AT",
            "LAST FAILURE",
        ],
        &rows,
    );
    Ok(0)
}
