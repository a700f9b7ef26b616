//! `query` tasks: SQL run on a source from the `[sources]` configuration.
//!
//! The output is a JSON array of row objects whose keys follow the select order, and
//! `column_order` lists the column names in that order.

mod pools;
mod rows;

use sqlx::{AssertSqlSafe, Executor, SqlSafeStr};

use super::expression::{render_template, Evaluator};
use super::{ExecutionContext, TaskFailure, TaskOutput};
use crate::messages::{ErrorCode, Meta, RunQuery};

use pools::SourcePool;
pub use pools::SourcePools;

/// Templates the query with the input, runs it and outputs the rows.
pub async fn run(
    query: &RunQuery,
    input: &[u8],
    meta: &Meta,
    context: &ExecutionContext,
) -> Result<TaskOutput, TaskFailure> {
    let source_name = query.source.name.as_str();
    let pool = context
        .source_pools
        .get_or_create(source_name, &context.config)?;

    let evaluator = Evaluator::new(input, &meta.env_vars);
    let sql = render_template(&query.query, &evaluator).map_err(|error| {
        TaskFailure::new(ErrorCode::QueryFailed, format!("query template: {error}"))
    })?;
    if sql.trim().is_empty() {
        return Err(TaskFailure::new(
            ErrorCode::BadRequest,
            "the query is empty",
        ));
    }

    // NOTE: the SQL is the task's text with `{{expr}}` values inserted as they are, as in Ylem,
    // so the source's database user must only have the rights the pipeline may use.
    let table = match &pool {
        SourcePool::Sqlite(pool) => run_sqlite(pool, sql).await,
        SourcePool::Postgres(pool) => run_postgres(pool, sql).await,
    }
    .map_err(|error| classify_error(source_name, error))?;

    Ok(TaskOutput {
        outputs: vec![table.to_json()],
        column_order: Some(table.columns),
    })
}

async fn run_sqlite(pool: &sqlx::SqlitePool, sql: String) -> Result<rows::Table, sqlx::Error> {
    let fetched = sqlx::query(AssertSqlSafe(sql.clone()))
        .fetch_all(pool)
        .await?;
    if fetched.is_empty() {
        let columns = describe_columns(pool, sql).await;
        return Ok(rows::Table::empty(columns));
    }
    rows::Table::from_sqlite(&fetched)
}

/// Runs Postgres queries through the simple query protocol, whose results are text. Text
/// keeps every type readable (numeric, dates, arrays) without a decoder per type.
async fn run_postgres(pool: &sqlx::PgPool, sql: String) -> Result<rows::Table, sqlx::Error> {
    let fetched = sqlx::raw_sql(AssertSqlSafe(sql.clone()))
        .fetch_all(pool)
        .await?;
    if fetched.is_empty() {
        let columns = describe_columns(pool, sql).await;
        return Ok(rows::Table::empty(columns));
    }
    rows::Table::from_postgres(&fetched)
}

/// Column names of a query that returned no rows, read by preparing it. A statement that
/// cannot be prepared alone (several statements in one text) has no known columns.
async fn describe_columns<'p, E>(executor: E, sql: String) -> Vec<String>
where
    E: Executor<'p>,
{
    use sqlx::{Column, Statement};

    match executor.prepare(AssertSqlSafe(sql).into_sql_str()).await {
        Ok(statement) => statement
            .columns()
            .iter()
            .map(|column| column.name().to_owned())
            .collect(),
        Err(error) => {
            tracing::debug!(%error, "could not prepare the query to read its columns");
            Vec::new()
        }
    }
}

/// Maps a database error to the task's code: connection problems are 10001, everything the
/// database reports about the SQL is 10000 with the database's message.
fn classify_error(source_name: &str, error: sqlx::Error) -> TaskFailure {
    match error {
        sqlx::Error::Database(database_error) => {
            let message = database_error.message().to_owned();
            let code = database_error
                .code()
                .map(|code| code.into_owned())
                .unwrap_or_default();
            if is_connection_sqlstate(&code) {
                return TaskFailure::new(
                    ErrorCode::QueryConnection,
                    format!(
                        "failed to connect to source {source_name}: {message} (SQLSTATE {code})"
                    ),
                );
            }
            let code_suffix = if code.is_empty() {
                String::new()
            } else {
                format!(" (code {code})")
            };
            TaskFailure::new(
                ErrorCode::QueryFailed,
                format!("query on source {source_name} failed: {message}{code_suffix}"),
            )
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => TaskFailure::retryable(
            ErrorCode::QueryConnection,
            format!("failed to connect to source {source_name}: {error}"),
        ),
        sqlx::Error::Configuration(_) => TaskFailure::new(
            ErrorCode::QueryConnection,
            format!("failed to connect to source {source_name}: {error}"),
        ),
        other => TaskFailure::new(
            ErrorCode::QueryFailed,
            format!("query on source {source_name} failed: {other}"),
        ),
    }
}

/// Checks whether a database error code means the connection could not be used: Postgres SQLSTATE
/// classes 08 (connection exception) and 28 (invalid authorization), and 3D000 (unknown
/// database). SQLite's codes are numbers, and 14 (SQLITE_CANTOPEN) means the file could not be
/// opened.
fn is_connection_sqlstate(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("28") || code == "3D000" || code == "14"
}
