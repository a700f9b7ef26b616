//! Statistics queries on the default backend, the store database's SQLite table.

mod common;
mod statistics_scenario;

use common::{Backend, Receiver, TestEnv};
use ylem_runtime::config::StatisticsBackend;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_queries_match_task_runs() {
    let receiver = Receiver::start().await;
    let mut env = TestEnv::start(Backend::Embedded, |config, _| {
        config.statistics.backend = StatisticsBackend::Sqlite;
        config.statistics.batch_size = 4;
        config.statistics.batch_interval_ms = 20;
    })
    .await;
    let pipeline = env
        .apply(&statistics_scenario::pipeline_yaml(&receiver))
        .await;

    let runs = statistics_scenario::run_pipeline(&env, &receiver).await;
    let statistics = env.runtime.statistics.clone();
    assert_eq!(statistics.backend(), "sqlite");
    statistics_scenario::wait_until_stored(&*statistics, pipeline, &runs).await;
    statistics_scenario::check_queries(&*statistics, pipeline, &runs).await;

    env.stop().await;
}
