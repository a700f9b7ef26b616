//! The supervisor of one stage: starts its children linked beneath it and restarts them under
//! the stage's [`RestartPolicy`]: its strategy (one_for_one, one_for_all, rest_for_one), each
//! child's restart type (permanent, transient, temporary), and its intensity and backoff.
//!
//! More failures than the policy allows within its window make the stage fail in turn. The
//! daemon treats that as fatal and exits with [`super::EXIT_STAGE_GAVE_UP`], so that a service
//! manager can restart the whole process.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SpawnErr, SupervisionEvent};
use tracing::{error, info, warn};

use super::policy::{ChildRestart, RestartDecision, RestartPolicy, RestartTracker, Strategy};
use super::registry::ActorRegistry;

type StartFuture = Pin<Box<dyn Future<Output = Result<ActorCell, SpawnErr>> + Send>>;

/// How to start (and restart) one child under a supervisor.
#[derive(Clone)]
pub struct ChildSpec {
    /// Path of the child in the tree, e.g. `publisher/schedule_publisher`.
    pub path: String,
    /// When the child is restarted; permanent unless configured otherwise.
    pub restart: ChildRestart,
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
            restart: ChildRestart::Permanent,
            start: Arc::new(move |supervisor| Box::pin(start(supervisor))),
        }
    }

    pub fn with_restart(mut self, restart: ChildRestart) -> ChildSpec {
        self.restart = restart;
        self
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
    /// Start these children again, in this order, after their backoff.
    Restart(Vec<usize>),
}

pub struct StageState {
    stage: String,
    children: Vec<ChildSpec>,
    running: Vec<Option<ActorCell>>,
    /// Children stopped on purpose for a group restart; their exit is not a failure.
    stopped_for_restart: BTreeSet<ActorId>,
    tracker: RestartTracker,
    registry: ActorRegistry,
}

pub struct StageSupervisor;

/// How a child ended.
enum ChildExit {
    Failed(String),
    Stopped(Option<String>),
}

impl StageState {
    fn child_index(&self, cell: &ActorCell) -> Option<usize> {
        self.running.iter().position(|running| {
            running
                .as_ref()
                .is_some_and(|child| child.get_id() == cell.get_id())
        })
    }

    /// The children a failure of child `index` restarts under the strategy, in start order.
    fn restart_group(&self, index: usize) -> Vec<usize> {
        match self.tracker.policy().strategy {
            Strategy::OneForOne => vec![index],
            Strategy::OneForAll => (0..self.children.len()).collect(),
            Strategy::RestForOne => (index..self.children.len()).collect(),
        }
    }

    /// Applies the policy to a child's exit; an error makes the stage itself fail.
    fn on_child_exit(
        &mut self,
        myself: &ActorRef<StageMsg>,
        index: usize,
        exit: ChildExit,
    ) -> Result<(), ActorProcessingErr> {
        self.running[index] = None;
        let path = self.children[index].path.clone();
        let (failed, reason) = match exit {
            ChildExit::Failed(reason) => (true, reason),
            ChildExit::Stopped(reason) => (false, reason.unwrap_or_else(|| "stopped".to_owned())),
        };
        let restart = match self.children[index].restart {
            ChildRestart::Permanent => true,
            ChildRestart::Transient => failed,
            ChildRestart::Temporary => false,
        };
        if !restart {
            info!(stage = %self.stage, actor = %path, %reason, restart = ?self.children[index].restart, "actor ended and is not restarted");
            if failed {
                self.registry.failed(&path, &reason, false);
            } else {
                self.registry.stopped(&path);
            }
            return Ok(());
        }

        match self.tracker.on_failure(Instant::now()) {
            RestartDecision::Restart {
                delay,
                restarts_in_window,
            } => {
                let group: Vec<usize> = self
                    .restart_group(index)
                    .into_iter()
                    .filter(|member| {
                        *member == index
                            || self.children[*member].restart != ChildRestart::Temporary
                    })
                    .collect();
                let siblings: Vec<&str> = group
                    .iter()
                    .filter(|member| **member != index)
                    .map(|member| self.children[*member].path.as_str())
                    .collect();
                warn!(
                    stage = %self.stage,
                    actor = %path,
                    %reason,
                    delay_ms = delay.as_millis() as u64,
                    restarts_in_window,
                    siblings = ?siblings,
                    "actor ended, restarting"
                );
                self.registry.failed(&path, &reason, true);
                for member in group.iter().copied().filter(|member| *member != index) {
                    let sibling_reason = format!("restarted with {path}");
                    self.registry
                        .failed(&self.children[member].path, &sibling_reason, true);
                    if let Some(cell) = self.running[member].take() {
                        self.stopped_for_restart.insert(cell.get_id());
                        cell.stop(Some(sibling_reason));
                    }
                }
                myself.send_after(delay, move || StageMsg::Restart(group));
                Ok(())
            }
            RestartDecision::GiveUp { failures_in_window } => {
                let window_secs = self.tracker.policy().window.as_secs();
                error!(stage = %self.stage, actor = %path, %reason, failures_in_window, window_secs, "stage gave up: too many actor failures");
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

    async fn restart(
        &mut self,
        myself: &ActorRef<StageMsg>,
        group: Vec<usize>,
    ) -> Result<(), ActorProcessingErr> {
        for index in group {
            if self.running[index].is_some() {
                continue;
            }
            let child = self.children[index].clone();
            match child.start(myself.get_cell()).await {
                Ok(cell) => {
                    info!(stage = %self.stage, actor = %child.path, "actor restarted");
                    self.registry.started(&child.path, Some(&self.stage));
                    self.running[index] = Some(cell);
                }
                Err(err) => {
                    self.on_child_exit(
                        myself,
                        index,
                        ChildExit::Failed(format!("restart failed: {err}")),
                    )?;
                }
            }
        }
        Ok(())
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
        info!(stage = %args.stage, children = args.children.len(), strategy = ?args.policy.strategy, "stage started");
        Ok(StageState {
            stage: args.stage,
            children: args.children,
            running,
            stopped_for_restart: BTreeSet::new(),
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
            StageMsg::Restart(group) => state.restart(&myself, group).await?,
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, exit) = match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                (cell, ChildExit::Failed(format!("{err:#}")))
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, ChildExit::Stopped(reason))
            }
            SupervisionEvent::ActorStarted(_) | SupervisionEvent::ProcessGroupChanged(_) => {
                return Ok(())
            }
        };
        if state.stopped_for_restart.remove(&cell.get_id()) {
            return Ok(());
        }
        if let Some(index) = state.child_index(&cell) {
            state.on_child_exit(&myself, index, exit)?;
        }
        Ok(())
    }
}
