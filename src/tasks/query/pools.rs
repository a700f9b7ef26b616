//! Connection pools of query sources, created when a source is first used.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Mutex;

use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

use crate::config::{redact_url, Config, SourceConfig, SourceKind};
use crate::messages::ErrorCode;
use crate::tasks::TaskFailure;

/// A pool of one source.
#[derive(Clone)]
pub enum SourcePool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// Pools by source name. Pools connect lazily, so creating one does not wait on the network.
#[derive(Default)]
pub struct SourcePools {
    pools: Mutex<HashMap<String, SourcePool>>,
}

impl SourcePools {
    /// Returns the pool of `source_name`, creating it from `config.sources` on first use.
    pub fn get_or_create(
        &self,
        source_name: &str,
        config: &Config,
    ) -> Result<SourcePool, TaskFailure> {
        let mut pools = self
            .pools
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(pool) = pools.get(source_name) {
            return Ok(pool.clone());
        }

        let Some(source) = config.sources.get(source_name) else {
            return Err(unknown_source(source_name, config));
        };
        let pool = create_pool(source_name, source)?;
        tracing::info!(
            source = source_name,
            kind = ?source.kind,
            url = %redact_url(&source.url),
            max_connections = source.max_connections,
            "created query source pool"
        );
        pools.insert(source_name.to_owned(), pool.clone());
        Ok(pool)
    }
}

fn unknown_source(source_name: &str, config: &Config) -> TaskFailure {
    let configured = if config.sources.is_empty() {
        "no sources are configured".to_owned()
    } else {
        let names: Vec<&str> = config.sources.keys().map(String::as_str).collect();
        format!("configured sources: {}", names.join(", "))
    };
    let key = if source_name.is_empty() {
        "NAME"
    } else {
        source_name
    };
    TaskFailure::new(
        ErrorCode::QueryConnection,
        format!(
            "source {source_name:?} is not configured ({configured}); add a [sources.{key}] section with type and url to the runtime config"
        ),
    )
}

fn create_pool(source_name: &str, source: &SourceConfig) -> Result<SourcePool, TaskFailure> {
    let invalid_url = |error: sqlx::Error| {
        TaskFailure::new(
            ErrorCode::QueryConnection,
            format!(
                "sources.{source_name}.url {} is invalid: {error}",
                redact_url(&source.url)
            ),
        )
    };
    let password = read_password(source_name, source)?;

    match source.kind {
        SourceKind::Sqlite => {
            let options = SqliteConnectOptions::from_str(&source.url).map_err(invalid_url)?;
            let pool = sqlx::pool::PoolOptions::<sqlx::Sqlite>::new()
                .max_connections(source.max_connections)
                .connect_lazy_with(options);
            Ok(SourcePool::Sqlite(pool))
        }
        SourceKind::Postgres => {
            let mut options = PgConnectOptions::from_str(&source.url).map_err(invalid_url)?;
            if let Some(password) = &password {
                options = options.password(password);
            }
            let pool = sqlx::pool::PoolOptions::<sqlx::Postgres>::new()
                .max_connections(source.max_connections)
                .connect_lazy_with(options);
            Ok(SourcePool::Postgres(pool))
        }
    }
}

/// Reads the password from the variable named by `password_env`. Errors name the variable,
/// never its value.
fn read_password(source_name: &str, source: &SourceConfig) -> Result<Option<String>, TaskFailure> {
    let Some(variable) = &source.password_env else {
        return Ok(None);
    };
    match std::env::var(variable) {
        Ok(password) => Ok(Some(password)),
        Err(_) => Err(TaskFailure::new(
            ErrorCode::QueryConnection,
            format!(
                "environment variable {variable} (named by sources.{source_name}.password_env) is not set in the runtime's environment"
            ),
        )),
    }
}
