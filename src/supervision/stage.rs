//! The supervisor of one stage: starts its children linked beneath it and restarts each one
//! that fails, one for one, under the stage's [`RestartPolicy`].
//!
//! A child that fails more often than the policy allows makes the stage fail in turn; the
//! daemon treats that as fatal and exits with [`super::EXIT_STAGE_GAVE_UP`], so a service
//! manager can restart the whole process.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SpawnErr, SupervisionEvent};
use tracing::{error, info, warn};

use super::policy::{RestartDecision, RestartPolicy, RestartTracker};
use super::registry::ActorRegistry;

type StartFuture = Pin<Box<dyn Future<Output = Result<ActorCell, SpawnErr>> + Send>>;

/// How to start (and restart) one child under a supervisor.
#[derive(Clone)]
pub struct ChildSpec {
    /// Path of the child in the tree, e.g. `publisher/schedule_publisher`.
    pub path: String,
    start: Arc<dyn Fn(ActorCell) -> StartFuture + Send + Sync>,
}

impl ChildSpec {
    /// `start` spawns the child linked to the supervisor cell it is given.
    pub fn new<F, Fut>(path: impl Into<String>, start: F) -> ChildSpec
    where
        F: Fn(ActorCell) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ActorCell, SpawnErr>> + Send + 'static,
    {
        ChildSpec {
            path: path.into(),
            start: Arc::new(move |supervisor| Box::pin(start(supervisor))),
        }
    }

    pub async fn start(&self, supervisor: ActorCell) -> Result<ActorCell, SpawnErr> {
        (self.start)(supervisor).await
    }
}

pub struct StageSupervisorArgs {
    pub stage: String,
    pub children: Vec<ChildSpec>,
    pub policy: RestartPolicy,
    pub registry: ActorRegistry,
}

pub enum StageMsg {
    /// Start child `index` again after its backoff.
    Restart(usize),
}

pub struct StageState {
    stage: String,
    children: Vec<ChildSpec>,
    running: Vec<Option<ActorCell>>,
    tracker: RestartTracker,
    registry: ActorRegistry,
}

pub struct StageSupervisor;

impl StageState {
    fn child_index(&self, cell: &ActorCell) -> Option<usize> {
        self.running.iter().position(|running| {
            running
                .as_ref()
                .is_some_and(|child| child.get_id() == cell.get_id())
        })
    }

    /// Applies the policy to a child's exit; an error makes the stage itself fail.
    fn on_child_exit(
        &mut self,
        myself: &ActorRef<StageMsg>,
        index: usize,
        reason: String,
    ) -> Result<(), ActorProcessingErr> {
        self.running[index] = None;
        let path = self.children[index].path.clone();
        match self.tracker.on_failure(Instant::now()) {
            RestartDecision::Restart {
                delay,
                restarts_in_window,
            } => {
                warn!(
                    stage = %self.stage,
                    actor = %path,
                    %reason,
                    delay_ms = delay.as_millis() as u64,
                    restarts_in_window,
                    "actor failed, restarting"
                );
                self.registry.failed(&path, &reason, true);
                myself.send_after(delay, move || StageMsg::Restart(index));
                Ok(())
            }
            RestartDecision::GiveUp { failures_in_window } => {
                let window_secs = self.tracker.policy().window.as_secs();
                error!(
                    stage = %self.stage,
                    actor = %path,
                    %reason,
                    failures_in_window,
                    window_secs,
                    "stage gave up: too many actor failures"
                );
                self.registry.failed(&path, &reason, false);
                // ractor skips post_stop when a handler fails, so the stage records its own end.
                self.registry
                    .failed(&self.stage, &format!("gave up: {path}: {reason}"), false);
                Err(format!(
                    "stage {} gave up after {failures_in_window} failures within {window_secs}s; last: {path}: {reason}",
                    self.stage
                )
                .into())
            }
        }
    }
}

impl Actor for StageSupervisor {
    type Msg = StageMsg;
    type State = StageState;
    type Arguments = StageSupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut running = Vec::with_capacity(args.children.len());
        for child in &args.children {
            let cell = child.start(myself.get_cell()).await?;
            args.registry.started(&child.path, Some(&args.stage));
            running.push(Some(cell));
        }
        args.registry.started(&args.stage, None);
        info!(stage = %args.stage, children = args.children.len(), "stage started");
        Ok(StageState {
            stage: args.stage,
            children: args.children,
            running,
            tracker: RestartTracker::new(args.policy),
            registry: args.registry,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for running in state.running.iter().flatten() {
            running.stop(Some("stage stopping".to_owned()));
        }
        for child in &state.children {
            state.registry.stopped(&child.path);
        }
        state.registry.stopped(&state.stage);
        info!(stage = %state.stage, "stage stopped");
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            StageMsg::Restart(index) => {
                let child = state.children[index].clone();
                match child.start(myself.get_cell()).await {
                    Ok(cell) => {
                        info!(stage = %state.stage, actor = %child.path, "actor restarted");
                        state.registry.started(&child.path, Some(&state.stage));
                        state.running[index] = Some(cell);
                    }
                    Err(err) => {
                        let reason = format!("restart failed: {err}");
                        state.on_child_exit(&myself, index, reason)?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                if let Some(index) = state.child_index(&cell) {
                    state.on_child_exit(&myself, index, format!("{err:#}"))?;
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                // Children are permanent: one that stops by itself is restarted like a failure.
                if let Some(index) = state.child_index(&cell) {
                    let reason = match reason {
                        Some(reason) => format!("stopped: {reason}"),
                        None => "stopped unexpectedly".to_owned(),
                    };
                    state.on_child_exit(&myself, index, reason)?;
                }
            }
            SupervisionEvent::ActorStarted(_) | SupervisionEvent::ProcessGroupChanged(_) => {}
        }
        Ok(())
    }
}
