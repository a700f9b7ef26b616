//! Partition choice of the load balancer, kept apart from the actor so it can be tested alone.
//!
//! The partitions of `task_runs_load_balanced` are split into a slow pool (the first
//! `slow_pool_share` of them) and a fast pool (the rest). A pipeline is slow when its expected
//! run duration, a quantile of its recent run durations, reaches `slow_threshold_ms`; a
//! pipeline with no history goes to `unknown_pipeline_pool`. Within its pool a run goes to the
//! partition with the least outstanding expected work, and every later task of the run follows
//! it there. Work is added when a task is placed and removed when its result arrives.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroUsize;
use std::ops::Range;

use lru::LruCache;
use serde::Serialize;
use uuid::Uuid;

use crate::config::{LoadBalancerConfig, Pool};
use crate::store::quantile;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Placement {
    pub partition: u32,
    pub pool: PoolName,
    pub expected_task_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolName {
    Slow,
    Fast,
}

/// Facts the balancer takes from one result.
#[derive(Debug, Clone, Copy)]
pub struct Observation {
    pub pipeline: Uuid,
    pub run: Uuid,
    pub task: Uuid,
    pub task_run: Uuid,
    pub duration_ms: u64,
    pub is_final: bool,
}

/// The pool and placement state of one load balancer.
pub struct Balancer {
    config: LoadBalancerConfig,
    partitions: u32,
    outstanding_ms: Vec<u64>,
    affinity: LruCache<Uuid, u32>,
    /// Recent (run, duration) per pipeline, newest last.
    history: HashMap<Uuid, VecDeque<(Uuid, u64)>>,
    /// Sum of task durations so far per run.
    run_totals: LruCache<Uuid, (Uuid, u64)>,
    /// Moving average of each task's duration.
    task_estimates: HashMap<Uuid, u64>,
    /// Work placed and not yet reported, by (run, task run).
    placed: LruCache<(Uuid, Uuid), (u32, u64)>,
}

impl Balancer {
    pub fn new(config: LoadBalancerConfig, partitions: u32) -> Balancer {
        let capacity = NonZeroUsize::new(config.run_affinity_capacity.max(1)).expect("nonzero");
        Balancer {
            partitions: partitions.max(1),
            outstanding_ms: vec![0; partitions.max(1) as usize],
            affinity: LruCache::new(capacity),
            history: HashMap::new(),
            run_totals: LruCache::new(capacity),
            task_estimates: HashMap::new(),
            placed: LruCache::new(capacity),
            config,
        }
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Adopts a new partition count; runs pinned to removed partitions are placed again.
    pub fn set_partitions(&mut self, partitions: u32) {
        let partitions = partitions.max(1);
        self.partitions = partitions;
        self.outstanding_ms.resize(partitions as usize, 0);
    }

    /// Returns the slow and fast pools. With one partition both pools are that partition.
    pub fn pools(&self) -> (Range<u32>, Range<u32>) {
        if self.partitions == 1 {
            return (0..1, 0..1);
        }
        let slow = (f64::from(self.partitions) * self.config.slow_pool_share).round() as u32;
        let slow = slow.clamp(1, self.partitions - 1);
        (0..slow, slow..self.partitions)
    }

    /// Expected run duration of a pipeline from its recent runs.
    pub fn expected_run_ms(&self, pipeline: Uuid) -> Option<u64> {
        let runs = self.history.get(&pipeline)?;
        let durations: Vec<u64> = runs.iter().map(|(_, duration)| *duration).collect();
        quantile(&durations, self.config.duration_quantile)
    }

    pub fn pool_for(&self, pipeline: Uuid) -> PoolName {
        match self.expected_run_ms(pipeline) {
            Some(expected) if expected >= self.config.slow_threshold_ms => PoolName::Slow,
            Some(_) => PoolName::Fast,
            None => match self.config.unknown_pipeline_pool {
                Pool::Slow => PoolName::Slow,
                Pool::Fast => PoolName::Fast,
            },
        }
    }

    /// Chooses the partition of one task and books its expected work there.
    pub fn place(&mut self, pipeline: Uuid, run: Uuid, task: Uuid, task_run: Uuid) -> Placement {
        let pool = self.pool_for(pipeline);
        let expected_task_ms = self
            .task_estimates
            .get(&task)
            .copied()
            .unwrap_or(self.config.default_task_duration_ms);

        let pinned = self
            .affinity
            .get(&run)
            .copied()
            .filter(|partition| *partition < self.partitions);
        let partition = match pinned {
            Some(partition) => partition,
            None => {
                let (slow, fast) = self.pools();
                let range = if pool == PoolName::Slow { slow } else { fast };
                let partition = range
                    .min_by_key(|partition| (self.outstanding_ms[*partition as usize], *partition))
                    .expect("pools are never empty");
                self.affinity.put(run, partition);
                partition
            }
        };

        self.outstanding_ms[partition as usize] += expected_task_ms;
        if let Some((old_partition, old_ms)) = self
            .placed
            .put((run, task_run), (partition, expected_task_ms))
        {
            // The same task placed twice (a redelivery): book its work once.
            self.release(old_partition, old_ms);
        }
        Placement {
            partition,
            pool,
            expected_task_ms,
        }
    }

    fn release(&mut self, partition: u32, work_ms: u64) {
        if let Some(outstanding) = self.outstanding_ms.get_mut(partition as usize) {
            *outstanding = outstanding.saturating_sub(work_ms);
        }
    }

    /// Returns a finished task's work and updates the duration statistics.
    pub fn observe(&mut self, observation: Observation) {
        if let Some((partition, work_ms)) =
            self.placed.pop(&(observation.run, observation.task_run))
        {
            self.release(partition, work_ms);
        }

        let estimate = self
            .task_estimates
            .entry(observation.task)
            .or_insert(observation.duration_ms);
        // Exponential moving average with weight 1/4 for the newest duration.
        *estimate = (*estimate * 3 + observation.duration_ms) / 4;

        let total = match self.run_totals.get_mut(&observation.run) {
            Some((_, total)) => {
                *total += observation.duration_ms;
                *total
            }
            None => {
                self.run_totals.put(
                    observation.run,
                    (observation.pipeline, observation.duration_ms),
                );
                observation.duration_ms
            }
        };
        if observation.is_final {
            self.record_run(observation.pipeline, observation.run, total);
        }
    }

    /// Records a run's duration; a later final result of the same run updates its entry.
    fn record_run(&mut self, pipeline: Uuid, run: Uuid, duration_ms: u64) {
        let runs = self.history.entry(pipeline).or_default();
        if let Some(entry) = runs.iter_mut().find(|(known, _)| *known == run) {
            entry.1 = duration_ms;
            return;
        }
        runs.push_back((run, duration_ms));
        while runs.len() > self.config.history_runs {
            runs.pop_front();
        }
    }

    /// Seeds a pipeline's history with durations from storage, newest first.
    pub fn warm(&mut self, pipeline: Uuid, durations_newest_first: &[u64]) {
        for duration in durations_newest_first
            .iter()
            .take(self.config.history_runs)
            .rev()
        {
            self.record_run(pipeline, Uuid::new_v4(), *duration);
        }
    }

    pub fn outstanding_ms(&self) -> &[u64] {
        &self.outstanding_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn balancer(partitions: u32) -> Balancer {
        Balancer::new(LoadBalancerConfig::default(), partitions)
    }

    #[test]
    fn pools_split_sixty_forty() {
        let balancer = balancer(10);
        assert_eq!(balancer.pools(), (0..6, 6..10));
    }

    #[test]
    fn single_partition_serves_both_pools() {
        assert_eq!(balancer(1).pools(), (0..1, 0..1));
    }

    #[test]
    fn unknown_pipeline_goes_to_configured_pool() {
        let mut balancer = balancer(10);
        let placement = balancer.place(
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
        );
        assert_eq!(placement.pool, PoolName::Slow);
        assert!(placement.partition < 6);
    }

    #[test]
    fn fast_pipeline_stays_in_fast_pool() {
        let mut balancer = balancer(10);
        let pipeline = Uuid::new_v4();
        balancer.warm(pipeline, &[100, 200, 150]);
        for _ in 0..50 {
            let placement =
                balancer.place(pipeline, Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
            assert_eq!(placement.pool, PoolName::Fast);
            assert!((6..10).contains(&placement.partition), "{placement:?}");
        }
    }

    #[test]
    fn least_loaded_partition_wins() {
        let mut balancer = balancer(10);
        let pipeline = Uuid::new_v4();
        balancer.warm(pipeline, &[10]);
        let first = balancer.place(pipeline, Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let second = balancer.place(pipeline, Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        assert_ne!(first.partition, second.partition);
    }

    #[test]
    fn run_tasks_share_partition() {
        let mut balancer = balancer(10);
        let (pipeline, run) = (Uuid::new_v4(), Uuid::new_v4());
        let first = balancer.place(pipeline, run, Uuid::new_v4(), Uuid::new_v4());
        for _ in 0..5 {
            let next = balancer.place(pipeline, run, Uuid::new_v4(), Uuid::new_v4());
            assert_eq!(next.partition, first.partition);
        }
    }

    #[test]
    fn result_returns_capacity() {
        let mut balancer = balancer(10);
        let (pipeline, run, task, task_run) = (
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
        );
        let placement = balancer.place(pipeline, run, task, task_run);
        assert_eq!(
            balancer.outstanding_ms()[placement.partition as usize],
            1_000
        );
        balancer.observe(Observation {
            pipeline,
            run,
            task,
            task_run,
            duration_ms: 40_000,
            is_final: true,
        });
        assert_eq!(balancer.outstanding_ms()[placement.partition as usize], 0);
        assert_eq!(balancer.expected_run_ms(pipeline), Some(40_000));
        assert_eq!(balancer.pool_for(pipeline), PoolName::Slow);
    }

    #[test]
    fn removed_partition_releases_affinity() {
        let mut balancer = balancer(10);
        let pipeline = Uuid::new_v4();
        balancer.warm(pipeline, &[10]);
        let run = Uuid::new_v4();
        let first = balancer.place(pipeline, run, Uuid::new_v4(), Uuid::new_v4());
        balancer.set_partitions(first.partition);
        let again = balancer.place(pipeline, run, Uuid::new_v4(), Uuid::new_v4());
        assert!(again.partition < first.partition.max(1));
    }
}
