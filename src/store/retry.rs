//! Waiting out database outages in place, so that a stage keeps its position instead of
//! failing and restarting while the database is away.

use std::future::Future;
use std::time::Duration;

use tracing::{info, warn};

use super::{StoreError, StoreResult};

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Failed attempts between two reminders that the outage goes on.
const REMINDER_EVERY: u32 = 20;

impl StoreError {
    /// Returns whether the database may succeed later: a lost or refused connection, a pool timeout,
    /// a server shutting down, a serialization conflict, or SQLite's busy and locked codes.
    pub fn is_transient(&self) -> bool {
        let StoreError::Database(error) = self else {
            return false;
        };
        match error {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(database) => {
                database.code().is_some_and(|code| transient_code(&code))
            }
            _ => false,
        }
    }
}

/// PostgreSQL SQLSTATE classes and codes, and SQLite result codes, that a retry can outlive.
fn transient_code(code: &str) -> bool {
    if code.starts_with("08")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "40001" | "40P01" | "53300"
        )
    {
        return true;
    }
    // SQLite reports numeric codes; the low byte is the primary code (5 busy, 6 locked).
    code.parse::<u32>()
        .is_ok_and(|number| matches!(number & 0xff, 5 | 6))
}

/// Runs `operation` until it succeeds or fails with an error that is not transient, waiting
/// with capped exponential backoff between attempts. The outage is logged when it starts,
/// every `REMINDER_EVERY` attempts, and when it ends.
pub async fn retry_transient<T, F, Fut>(operation_name: &str, mut operation: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = StoreResult<T>>,
{
    let mut failures: u32 = 0;
    let mut backoff = BACKOFF_MIN;
    loop {
        match operation().await {
            Ok(value) => {
                if failures > 0 {
                    info!(
                        operation = operation_name,
                        retries = failures,
                        "database reachable again"
                    );
                }
                return Ok(value);
            }
            Err(err) if err.is_transient() => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(REMINDER_EVERY) {
                    warn!(operation = operation_name, retries = failures, error = %err, "database unavailable; retrying");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            Err(err) => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_codes_are_transient() {
        assert!(transient_code("08006"));
        assert!(transient_code("57P01"));
        assert!(transient_code("40001"));
        assert!(transient_code("5"));
        assert!(transient_code("517"));
        assert!(!transient_code("23505"));
        assert!(!transient_code("42P01"));
        assert!(!transient_code("19"));
    }

    #[test]
    fn pool_timeout_is_transient() {
        assert!(StoreError::Database(sqlx::Error::PoolTimedOut).is_transient());
        assert!(!StoreError::Database(sqlx::Error::RowNotFound).is_transient());
        assert!(!StoreError::PipelineNotFound("x".to_owned()).is_transient());
    }

    #[tokio::test]
    async fn retries_until_success() {
        let mut calls = 0;
        let value = retry_transient("test", || {
            calls += 1;
            let attempt = calls;
            async move {
                if attempt < 3 {
                    Err(StoreError::Database(sqlx::Error::PoolTimedOut))
                } else {
                    Ok(attempt)
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(value, 3);
    }

    #[tokio::test]
    async fn permanent_error_is_returned_at_once() {
        let mut calls = 0;
        let result: StoreResult<()> = retry_transient("test", || {
            calls += 1;
            async { Err(StoreError::Corrupt("bad".to_owned())) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls, 1);
    }
}
