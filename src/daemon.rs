//! Starts the selected stages as supervised actor trees and runs them until a signal arrives
//! or a stage gives up.

use std::str::FromStr;
use std::sync::Arc;

mod stages;

use ractor::{Actor, ActorCell, ActorRef};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::actors::load_balancer::BalancerHandle;
use crate::catalog::Catalog;
use crate::config::Config;
use crate::store::Store;
use crate::supervision::{
    ActorRegistry, RestartPolicy, ShutdownSignal, StageMsg, StageSupervisor, StageSupervisorArgs,
    EXIT_STAGE_GAVE_UP,
};
use crate::transport::Transport;

/// The six stages of the task-processing cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    Generator,
    Publisher,
    Balancer,
    Runner,
    Triggers,
    Statistics,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::Generator,
        Stage::Publisher,
        Stage::Balancer,
        Stage::Runner,
        Stage::Triggers,
        Stage::Statistics,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Generator => "generator",
            Stage::Publisher => "publisher",
            Stage::Balancer => "balancer",
            Stage::Runner => "runner",
            Stage::Triggers => "triggers",
            Stage::Statistics => "statistics",
        }
    }
}

impl FromStr for Stage {
    type Err = String;

    fn from_str(text: &str) -> Result<Stage, String> {
        Stage::ALL
            .into_iter()
            .find(|stage| stage.name() == text)
            .ok_or_else(|| {
                let names: Vec<_> = Stage::ALL.iter().map(|stage| stage.name()).collect();
                format!(
                    "unknown stage {text:?}; valid stages are {}",
                    names.join(", ")
                )
            })
    }
}

/// Parses a comma-separated stage list such as `runner,triggers`.
pub fn parse_stages(text: &str) -> Result<Vec<Stage>, String> {
    let mut stages = Vec::new();
    for part in text
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
    {
        let stage: Stage = part.parse()?;
        if !stages.contains(&stage) {
            stages.push(stage);
        }
    }
    if stages.is_empty() {
        return Err("no stage selected; list one or more of generator, publisher, balancer, runner, triggers, statistics".to_owned());
    }
    Ok(stages)
}

/// Everything the stages share.
#[derive(Clone)]
pub struct Runtime {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub transport: Arc<dyn Transport>,
    pub catalog: Arc<Catalog>,
    pub registry: ActorRegistry,
    pub balancer: BalancerHandle,
    pub shutdown: Arc<ShutdownSignal>,
}

impl Runtime {
    pub fn new(
        config: Arc<Config>,
        store: Arc<dyn Store>,
        transport: Arc<dyn Transport>,
    ) -> Runtime {
        Runtime {
            catalog: Arc::new(Catalog::new(store.clone())),
            config,
            store,
            transport,
            registry: ActorRegistry::new(),
            balancer: BalancerHandle::default(),
            shutdown: Arc::new(ShutdownSignal::default()),
        }
    }

    /// Creates every topic the stages use, with the configured partition counts.
    pub async fn ensure_topics(&self) -> anyhow::Result<()> {
        let topics = &self.config.topics;
        let partitions = &topics.partitions;
        for (topic, count) in [
            (&topics.task_runs, partitions.task_runs),
            (
                &topics.task_runs_load_balanced,
                partitions.task_runs_load_balanced,
            ),
            (&topics.task_run_results, partitions.task_run_results),
            (&topics.query_task_run_results, partitions.side_topics),
            (
                &topics.notification_task_run_results,
                partitions.side_topics,
            ),
        ] {
            self.transport.ensure_topic(topic, count).await?;
        }
        for topic in [
            &topics.task_runs,
            &topics.task_runs_load_balanced,
            &topics.task_run_results,
        ] {
            let dead_letters = format!("{topic}{}", topics.dead_letter_suffix);
            self.transport
                .ensure_topic(&dead_letters, partitions.side_topics)
                .await?;
        }
        Ok(())
    }

    pub fn dead_letters(&self) -> crate::dead_letter::DeadLetters {
        crate::dead_letter::DeadLetters::new(
            self.transport.clone(),
            &self.config.topics.dead_letter_suffix,
        )
    }
}

/// A running daemon: its stage supervisors.
pub struct Daemon {
    runtime: Runtime,
    stages: Vec<(Stage, ActorRef<StageMsg>, JoinHandle<()>)>,
}

impl Daemon {
    /// Starts `stages`; topics must exist.
    pub async fn start(runtime: Runtime, stages: &[Stage]) -> anyhow::Result<Daemon> {
        let mut started = Vec::new();
        for stage in stages {
            let children = stages::stage_children(&runtime, *stage)?;
            let (actor, join) = Actor::spawn(
                None,
                StageSupervisor,
                StageSupervisorArgs {
                    stage: stage.name().to_owned(),
                    children,
                    policy: RestartPolicy::from(
                        &runtime.config.supervision.for_stage(stage.name()),
                    ),
                    registry: runtime.registry.clone(),
                },
            )
            .await
            .map_err(|err| anyhow::anyhow!("failed to start stage {}: {err}", stage.name()))?;
            started.push((*stage, actor, join));
        }
        let names: Vec<_> = stages.iter().map(|stage| stage.name()).collect();
        info!(stages = ?names, "daemon started");
        Ok(Daemon {
            runtime,
            stages: started,
        })
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Waits until a shutdown signal (returns 0) or a stage that gave up (returns its exit code).
    pub async fn run_until_signal(mut self) -> i32 {
        let joins = std::mem::take(&mut self.stages);
        let (names, actors): (Vec<Stage>, Vec<ActorRef<StageMsg>>) = joins
            .iter()
            .map(|(stage, actor, _)| (*stage, actor.clone()))
            .unzip();
        let handles: Vec<JoinHandle<()>> = joins.into_iter().map(|(_, _, join)| join).collect();
        let stage_exit = futures::future::select_all(handles);

        let code = tokio::select! {
            _ = shutdown_signal() => {
                info!("shutdown signal received; draining in-flight work (a second signal stops at once)");
                self.drain_with_second_signal().await;
                0
            }
            (_, index, _) = stage_exit => {
                error!(stage = names[index].name(), exit_code = EXIT_STAGE_GAVE_UP, "stage stopped after too many failures; exiting so that the service manager restarts the process");
                EXIT_STAGE_GAVE_UP
            }
        };
        for actor in &actors {
            actor.stop(Some("daemon stopping".to_owned()));
        }
        for actor in actors {
            wait_for_stop(actor.get_cell()).await;
        }
        info!(exit_code = code, "daemon stopped");
        code
    }

    /// Lets consumers finish their in-flight records, within the shutdown timeout or until a
    /// second signal.
    async fn drain_with_second_signal(&self) {
        tokio::select! {
            drained = self.drain() => {
                if !drained {
                    warn!(timeout_ms = self.runtime.config.supervision.shutdown_timeout_ms, "shutdown timeout passed with work in flight; unfinished records are redone after a restart");
                }
            }
            _ = shutdown_signal() => warn!("second shutdown signal; stopping at once"),
        }
    }

    /// Stops reading new records and waits until every consumer of this process finished its
    /// in-flight records and published their results, or the shutdown timeout passes. Returns
    /// whether everything drained. The stages still run afterwards; stop them with [`Daemon::stop`].
    pub async fn drain(&self) -> bool {
        let timeout =
            std::time::Duration::from_millis(self.runtime.config.supervision.shutdown_timeout_ms);
        let drained = self.runtime.shutdown.drain(timeout).await;
        info!(drained, "in-flight work drained");
        drained
    }

    /// Stops every stage and waits for them.
    pub async fn stop(self) {
        for (_, actor, _) in &self.stages {
            actor.stop(Some("daemon stopping".to_owned()));
        }
        for (_, _, join) in self.stages {
            let _ = join.await;
        }
    }
}

async fn wait_for_stop(cell: ActorCell) {
    while cell.get_status() != ractor::ActorStatus::Stopped {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(err) => {
                    error!(error = %err, "cannot listen for SIGTERM; only Ctrl-C stops the daemon");
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
