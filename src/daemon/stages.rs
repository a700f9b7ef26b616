//! The children of each stage supervisor.

use std::sync::Arc;
use std::time::Duration;

use ractor::Actor;

use super::{Runtime, Stage};
use crate::actors::consumer::{ConsumerActor, ConsumerArgs};
use crate::actors::load_balancer::{LoadBalancer, LoadBalancerArgs, ResultObserver, TaskRouter};
use crate::actors::schedule_generator::{ScheduleGenerator, ScheduleGeneratorArgs};
use crate::actors::schedule_publisher::{SchedulePublisher, SchedulePublisherArgs};
use crate::actors::statistics_listener::StatisticsListener;
use crate::actors::task_runner::TaskRunner;
use crate::actors::trigger_listener::TriggerListener;
use crate::actors::RecordHandler;
use crate::statistics::writer::{StatisticsWriter, WriterSettings};
use crate::supervision::{ChildSpec, RestartPolicy};
use crate::tasks::ExecutionContext;

/// Builds a child that is actor `A`, started with the arguments `make_args` builds for each start.
fn actor_spec<A, F>(path: String, actor: fn() -> A, make_args: F) -> ChildSpec
where
    A: Actor,
    F: Fn() -> A::Arguments + Send + Sync + 'static,
{
    ChildSpec::new(path, move |supervisor| {
        let handler = actor();
        let args = make_args();
        async move {
            let (actor_ref, _) = Actor::spawn_linked(None, handler, args, supervisor).await?;
            Ok(actor_ref.get_cell())
        }
    })
}

fn consumer_spec(
    runtime: &Runtime,
    stage: Stage,
    path: String,
    group: String,
    topic: String,
    handler: Arc<dyn RecordHandler>,
    max_in_flight: usize,
) -> ChildSpec {
    let max_buffered_records = max_in_flight.max(1) * 64;
    consumer_spec_with_backlog(
        runtime,
        stage,
        path,
        group,
        topic,
        handler,
        max_in_flight,
        max_buffered_records,
    )
}

/// Builds a consumer whose partitions pause once `max_buffered_records` records are uncommitted.
#[allow(clippy::too_many_arguments)]
fn consumer_spec_with_backlog(
    runtime: &Runtime,
    stage: Stage,
    path: String,
    group: String,
    topic: String,
    handler: Arc<dyn RecordHandler>,
    max_in_flight: usize,
    max_buffered_records: usize,
) -> ChildSpec {
    let runtime = runtime.clone();
    let consumer_path = path.clone();
    let workers = runtime.config.supervision.for_workers(stage.name());
    actor_spec(
        path,
        || ConsumerActor,
        move || ConsumerArgs {
            path: consumer_path.clone(),
            transport: runtime.transport.clone(),
            group: group.clone(),
            topics: vec![topic.clone()],
            handler: handler.clone(),
            max_in_flight,
            max_buffered_records,
            policy: RestartPolicy::from(&workers),
            registry: runtime.registry.clone(),
            shutdown: runtime.shutdown.clone(),
            stuck_after: Duration::from_secs(workers.stuck_after_secs),
            max_record_failures: workers.max_record_failures,
            dead_letters: Some(runtime.dead_letters()),
        },
    )
}

/// Builds the children of one stage supervisor.
pub(super) fn stage_children(runtime: &Runtime, stage: Stage) -> anyhow::Result<Vec<ChildSpec>> {
    let config = runtime.config.clone();
    let topics = &config.topics;
    let groups = &config.consumer_groups;
    let children = match stage {
        Stage::Generator => {
            let runtime = runtime.clone();
            vec![actor_spec(
                "generator/schedule_generator".to_owned(),
                || ScheduleGenerator,
                move || ScheduleGeneratorArgs {
                    config: runtime.config.schedule_generator.clone(),
                    store: runtime.store.clone(),
                },
            )]
        }
        Stage::Publisher => {
            let runtime = runtime.clone();
            vec![actor_spec(
                "publisher/schedule_publisher".to_owned(),
                || SchedulePublisher,
                move || SchedulePublisherArgs {
                    config: runtime.config.clone(),
                    store: runtime.store.clone(),
                    catalog: runtime.catalog.clone(),
                    transport: runtime.transport.clone(),
                },
            )]
        }
        Stage::Balancer => {
            let balancer_runtime = runtime.clone();
            let balancer = actor_spec(
                "balancer/load_balancer".to_owned(),
                || LoadBalancer,
                move || LoadBalancerArgs {
                    config: balancer_runtime.config.load_balancer.clone(),
                    transport: balancer_runtime.transport.clone(),
                    statistics: balancer_runtime.statistics.clone(),
                    topic: balancer_runtime
                        .config
                        .topics
                        .task_runs_load_balanced
                        .clone(),
                    handle: balancer_runtime.balancer.clone(),
                },
            );
            let router = Arc::new(TaskRouter::new(
                runtime.balancer.clone(),
                runtime.transport.clone(),
                runtime.dead_letters(),
                &config,
            ));
            let observer = Arc::new(ResultObserver::new(runtime.balancer.clone()));
            vec![
                balancer,
                consumer_spec(
                    runtime,
                    stage,
                    format!("balancer/{}", topics.task_runs),
                    groups.load_balancer.clone(),
                    topics.task_runs.clone(),
                    router,
                    1,
                ),
                consumer_spec(
                    runtime,
                    stage,
                    format!("balancer/{}", topics.task_run_results),
                    groups.load_balancer_results.clone(),
                    topics.task_run_results.clone(),
                    observer,
                    1,
                ),
            ]
        }
        Stage::Runner => {
            let context = Arc::new(ExecutionContext::new(config.clone())?);
            let runner = Arc::new(TaskRunner::new(
                runtime.transport.clone(),
                runtime.store.clone(),
                runtime.dead_letters(),
                config.clone(),
                context,
            ));
            vec![consumer_spec(
                runtime,
                stage,
                format!("runner/{}", topics.task_runs_load_balanced),
                groups.task_runner.clone(),
                topics.task_runs_load_balanced.clone(),
                runner,
                config.task_runner.max_in_flight_per_partition,
            )]
        }
        Stage::Triggers => {
            let listener = Arc::new(TriggerListener::new(
                runtime.store.clone(),
                runtime.catalog.clone(),
                runtime.transport.clone(),
                runtime.dead_letters(),
                config.clone(),
            ));
            // One result at a time per partition: a run's results share a partition, and its
            // outstanding count is updated in their order.
            vec![consumer_spec(
                runtime,
                stage,
                format!("triggers/{}", topics.task_run_results),
                groups.trigger_listener.clone(),
                topics.task_run_results.clone(),
                listener,
                1,
            )]
        }
        Stage::Statistics => {
            let settings = WriterSettings::from(&config.statistics);
            let writer = StatisticsWriter::start(runtime.statistics.clone(), settings);
            let listener = Arc::new(StatisticsListener::new(writer));
            // Each handler call waits until its result's batch is stored, so a partition
            // needs up to a batch of records in flight to fill batches. The writer bounds the
            // rows waiting across partitions by max_buffered_results.
            let max_in_flight = settings.batch_size.min(settings.max_buffered_results);
            vec![consumer_spec_with_backlog(
                runtime,
                stage,
                format!("statistics/{}", topics.task_run_results),
                groups.statistics.clone(),
                topics.task_run_results.clone(),
                listener,
                max_in_flight,
                max_in_flight * 2,
            )]
        }
    };
    let supervision = &runtime.config.supervision;
    Ok(children
        .into_iter()
        .map(|child| {
            let restart = supervision.child_restart(&child.path);
            child.with_restart(restart)
        })
        .collect())
}
