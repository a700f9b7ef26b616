//! A shared record of every supervised actor: its state, restarts and last failure.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorState {
    Running,
    Restarting,
    Stopped,
    Failed,
}

/// Status of one actor in the tree, keyed by its path (`runner/consumer/task_runs_load_balanced-3`).
#[derive(Debug, Clone, Serialize)]
pub struct ActorStatus {
    pub path: String,
    pub supervisor: Option<String>,
    pub state: ActorState,
    pub restarts: u64,
    pub last_failure: Option<String>,
    pub last_failure_at: Option<DateTime<Utc>>,
}

/// Cloning shares the registry.
#[derive(Debug, Clone, Default)]
pub struct ActorRegistry {
    actors: Arc<DashMap<String, ActorStatus>>,
}

impl ActorRegistry {
    pub fn new() -> ActorRegistry {
        ActorRegistry::default()
    }

    pub fn started(&self, path: &str, supervisor: Option<&str>) {
        let mut entry = self
            .actors
            .entry(path.to_owned())
            .or_insert_with(|| ActorStatus {
                path: path.to_owned(),
                supervisor: supervisor.map(str::to_owned),
                state: ActorState::Running,
                restarts: 0,
                last_failure: None,
                last_failure_at: None,
            });
        entry.state = ActorState::Running;
    }

    pub fn failed(&self, path: &str, reason: &str, restarting: bool) {
        if let Some(mut entry) = self.actors.get_mut(path) {
            entry.state = if restarting {
                ActorState::Restarting
            } else {
                ActorState::Failed
            };
            entry.last_failure = Some(reason.to_owned());
            entry.last_failure_at = Some(Utc::now());
            if restarting {
                entry.restarts += 1;
            }
        }
    }

    pub fn stopped(&self, path: &str) {
        if let Some(mut entry) = self.actors.get_mut(path) {
            entry.state = ActorState::Stopped;
        }
    }

    pub fn remove(&self, path: &str) {
        self.actors.remove(path);
    }

    pub fn get(&self, path: &str) -> Option<ActorStatus> {
        self.actors.get(path).map(|entry| entry.clone())
    }

    /// Returns every actor, sorted by path.
    pub fn snapshot(&self) -> Vec<ActorStatus> {
        let mut all: Vec<ActorStatus> = self.actors.iter().map(|entry| entry.clone()).collect();
        // Paths sort by segment, numbers by value, so partition 10 follows partition 9.
        all.sort_by_cached_key(|status| path_key(&status.path));
        all
    }
}

/// Sort key of a tree path: its segments, with numeric segments compared as numbers.
fn path_key(path: &str) -> Vec<(u64, String)> {
    path.split('/')
        .map(|segment| match segment.parse::<u64>() {
            Ok(number) => (number, String::new()),
            Err(_) => (u64::MAX, segment.to_owned()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_sorts_partitions_by_number() {
        let registry = ActorRegistry::new();
        for path in [
            "runner/topic/10",
            "runner/topic/2",
            "runner",
            "runner/topic/1",
        ] {
            registry.started(path, None);
        }
        let paths: Vec<String> = registry
            .snapshot()
            .into_iter()
            .map(|status| status.path)
            .collect();
        assert_eq!(
            paths,
            [
                "runner",
                "runner/topic/1",
                "runner/topic/2",
                "runner/topic/10"
            ]
        );
    }
}
