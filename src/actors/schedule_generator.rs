//! The schedule generator stage: keeps `scheduled_runs` filled for the horizon ahead.
//!
//! Each pass expands every active schedule from its latest stored fire time (or from now) to
//! now plus the horizon, in the schedule's time zone, and inserts the fire times. The unique
//! key on pipeline and fire time makes repeated or concurrent passes harmless. Between passes
//! the generator sleeps `interval_secs`.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{debug, info, warn};

use crate::config::ScheduleGeneratorConfig;
use crate::pipeline::parse_pipeline;
use crate::schedule::Schedule;
use crate::store::Store;

/// Published scheduled runs are kept this long past their fire time, so that a late generator
/// pass cannot create them again.
const PUBLISHED_RETENTION: chrono::Duration = chrono::Duration::days(7);

pub struct ScheduleGeneratorArgs {
    pub config: ScheduleGeneratorConfig,
    pub store: Arc<dyn Store>,
}

pub enum GeneratorMsg {
    Pass,
}

pub struct ScheduleGenerator;

/// Runs one generator pass as of `now`; returns the number of runs inserted.
pub async fn generate_once(
    store: &dyn Store,
    now: chrono::DateTime<Utc>,
    horizon: chrono::Duration,
) -> anyhow::Result<u64> {
    let until = now + horizon;
    let mut inserted = 0;
    for scheduled in store.scheduled_pipelines().await? {
        let pipeline = match parse_pipeline(&scheduled.name, &scheduled.source_yaml) {
            Ok(pipeline) => pipeline,
            Err(errors) => {
                warn!(pipeline = %scheduled.name, %errors, "stored pipeline does not parse; its schedule is skipped");
                continue;
            }
        };
        let Some(spec) = &pipeline.schedule else {
            continue;
        };
        let schedule = match Schedule::parse(spec) {
            Ok(schedule) => schedule,
            Err(err) => {
                warn!(pipeline = %scheduled.name, error = %err, "stored schedule is invalid; skipped");
                continue;
            }
        };
        let after = scheduled
            .latest_fire_time
            .map_or(now, |latest| latest.max(now));
        let fire_times = schedule.fire_times(after, until);
        if fire_times.is_empty() {
            continue;
        }
        let added = store
            .insert_scheduled_runs(scheduled.uuid, &schedule.fingerprint(), &fire_times)
            .await?;
        debug!(pipeline = %scheduled.name, added, "scheduled runs generated");
        inserted += added;
    }
    store
        .prune_published_runs(now - PUBLISHED_RETENTION)
        .await?;
    Ok(inserted)
}

impl Actor for ScheduleGenerator {
    type Msg = GeneratorMsg;
    type State = ScheduleGeneratorArgs;
    type Arguments = ScheduleGeneratorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        info!(
            horizon_hours = args.config.horizon_hours,
            interval_secs = args.config.interval_secs,
            "schedule generator started"
        );
        myself.cast(GeneratorMsg::Pass)?;
        Ok(args)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            GeneratorMsg::Pass => {
                let horizon = chrono::Duration::hours(i64::from(state.config.horizon_hours));
                match generate_once(&*state.store, Utc::now(), horizon).await {
                    Ok(0) => {}
                    Ok(inserted) => info!(inserted, "scheduled runs generated"),
                    Err(err) => {
                        warn!(error = %format!("{err:#}"), "schedule generator pass failed; retrying next pass")
                    }
                }
                myself.send_after(
                    Duration::from_secs(state.config.interval_secs.max(1)),
                    || GeneratorMsg::Pass,
                );
            }
        }
        Ok(())
    }
}
