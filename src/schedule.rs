//! Cron schedules of pipelines, evaluated in an IANA time zone.
//!
//! A schedule is a 5-field cron pattern (minute first) or a 6-field one (seconds first),
//! parsed by `croner`, plus a time zone from `chrono-tz`. [`Schedule::fire_times`] lists
//! the instants in a window, and the schedule generator turns each into a scheduled run.
//!
//! # Daylight-saving changes
//!
//! The rules follow croner 4, which computes in the schedule's zone:
//!
//! - A fixed-time pattern (one value each for second, minute and hour, such as `30 2 * * *`)
//!   fires once per matching day. A wall time that occurs twice when clocks fall back fires
//!   at its first occurrence only. A wall time that clocks skip when they spring forward
//!   fires once, at the first valid instant after the gap (03:00 for a 02:30 schedule in
//!   Europe/Amsterdam).
//! - Any other pattern (`*/15 * * * *`, `30 * * * *`) fires on elapsed time: every instant
//!   whose wall time matches, so a repeated hour fires twice and a skipped hour not at all.
//!
//! Either way each instant appears once and the list is strictly increasing.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::errors::CronError;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use serde::{Deserialize, Serialize};

/// The zone a schedule uses when its `timezone` is empty.
pub const DEFAULT_TIMEZONE: &str = "UTC";

/// Maximum number of fire times that one [`Schedule::fire_times`] call returns. A window
/// that contains more is cut after the first `MAX_FIRE_TIMES_PER_CALL`, and the caller asks
/// again from the last returned instant. At one fire time per second this is about 27
/// hours of a `* * * * * *` schedule.
pub const MAX_FIRE_TIMES_PER_CALL: usize = 100_000;

/// A schedule as written in a pipeline file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// 5 fields (`minute hour day-of-month month day-of-week`) or 6 with seconds first.
    #[serde(default)]
    pub cron: String,
    /// IANA time zone name such as `Europe/Amsterdam`. Empty means [`DEFAULT_TIMEZONE`].
    #[serde(default)]
    pub timezone: String,
}

/// Error in a [`ScheduleSpec`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("invalid cron pattern {pattern:?}: {message}; write 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first")]
    InvalidCron { pattern: String, message: String },
    #[error("unknown time zone {0:?}; use an IANA name such as Europe/Amsterdam or UTC")]
    UnknownTimezone(String),
}

/// A parsed cron pattern and time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    pattern: String,
    timezone: Tz,
}

impl Schedule {
    /// Parses the pattern and the time zone of `spec`.
    pub fn parse(spec: &ScheduleSpec) -> Result<Schedule, ScheduleError> {
        let pattern = spec.cron.trim().to_owned();
        let cron = parse_cron(&pattern)?;

        let zone_name = match spec.timezone.trim() {
            "" => DEFAULT_TIMEZONE,
            name => name,
        };
        let timezone: Tz = zone_name
            .parse()
            .map_err(|_| ScheduleError::UnknownTimezone(zone_name.to_owned()))?;

        Ok(Schedule {
            cron,
            pattern,
            timezone,
        })
    }

    /// Returns the time zone the pattern is evaluated in.
    pub fn timezone(&self) -> Tz {
        self.timezone
    }

    /// Returns the cron pattern, trimmed.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Returns a stable text of the pattern and zone, such as `*/5 * * * *@Europe/Amsterdam`. Two
    /// schedules with the same fingerprint fire at the same instants, so a stored scheduled
    /// run whose fingerprint differs from its pipeline's current one came from an older
    /// schedule.
    pub fn fingerprint(&self) -> String {
        let normalized_pattern = self
            .pattern
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        format!("{normalized_pattern}@{}", self.timezone.name())
    }

    /// Lists every fire time `t` with `after < t <= until`, in increasing order, at most
    /// [`MAX_FIRE_TIMES_PER_CALL`] of them. An empty window (`until <= after`) gives none.
    pub fn fire_times(&self, after: DateTime<Utc>, until: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let mut fire_times = Vec::new();
        let mut cursor = after.with_timezone(&self.timezone);

        while fire_times.len() < MAX_FIRE_TIMES_PER_CALL {
            let next = match self.cron.find_next_occurrence(&cursor, false) {
                Ok(next) => next,
                // croner stops searching after year 5000 or a year without a match.
                Err(CronError::TimeSearchLimitExceeded) => break,
                Err(error) => {
                    tracing::warn!(
                        schedule = %self.fingerprint(),
                        %error,
                        "failed to compute the next fire time"
                    );
                    break;
                }
            };
            let next_utc = next.with_timezone(&Utc);
            if next_utc > until {
                break;
            }

            // croner returns increasing instants; this guards the "strictly increasing"
            // promise against a library change instead of looping on a repeated instant.
            if fire_times.last().is_some_and(|last| *last >= next_utc) {
                tracing::warn!(
                    schedule = %self.fingerprint(),
                    fire_time = %next_utc,
                    "cron search returned a non-increasing fire time"
                );
                break;
            }
            fire_times.push(next_utc);
            cursor = next;
        }

        if fire_times.len() == MAX_FIRE_TIMES_PER_CALL {
            tracing::warn!(
                schedule = %self.fingerprint(),
                limit = MAX_FIRE_TIMES_PER_CALL,
                "fire time window cut at the limit"
            );
        }
        fire_times
    }
}

/// Parses a 5- or 6-field pattern. croner also accepts a seventh year field, which the
/// pipeline file format does not allow, so the parser disallows it.
fn parse_cron(pattern: &str) -> Result<Cron, ScheduleError> {
    let invalid = |message: String| ScheduleError::InvalidCron {
        pattern: pattern.to_owned(),
        message,
    };

    let field_count = pattern.split_whitespace().count();
    let is_nickname = pattern.starts_with('@');
    if !is_nickname && !(5..=6).contains(&field_count) {
        return Err(invalid(format!("found {field_count} fields")));
    }

    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(pattern)
        .map_err(|error| invalid(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn spec(cron: &str, timezone: &str) -> ScheduleSpec {
        ScheduleSpec {
            cron: cron.to_owned(),
            timezone: timezone.to_owned(),
        }
    }

    #[test]
    fn empty_timezone_means_utc() {
        let schedule = Schedule::parse(&spec("0 * * * *", "")).unwrap();
        assert_eq!(schedule.timezone(), Tz::UTC);
    }

    #[test]
    fn fingerprint_normalizes_spaces() {
        let spaced = Schedule::parse(&spec(" 0  *  * * * ", "UTC")).unwrap();
        let plain = Schedule::parse(&spec("0 * * * *", "")).unwrap();
        assert_eq!(spaced.fingerprint(), "0 * * * *@UTC");
        assert_eq!(spaced.fingerprint(), plain.fingerprint());
    }

    #[test]
    fn fingerprint_differs_by_zone() {
        let utc = Schedule::parse(&spec("0 * * * *", "UTC")).unwrap();
        let amsterdam = Schedule::parse(&spec("0 * * * *", "Europe/Amsterdam")).unwrap();
        assert_ne!(utc.fingerprint(), amsterdam.fingerprint());
    }

    #[test]
    fn seven_fields_rejected() {
        let error = Schedule::parse(&spec("0 0 0 1 1 * 2030", "UTC")).unwrap_err();
        assert!(
            matches!(error, ScheduleError::InvalidCron { .. }),
            "{error}"
        );
    }

    #[test]
    fn four_fields_rejected() {
        let error = Schedule::parse(&spec("0 0 1 1", "UTC")).unwrap_err();
        assert!(error.to_string().contains("found 4 fields"), "{error}");
    }

    #[test]
    fn empty_window_gives_nothing() {
        let schedule = Schedule::parse(&spec("* * * * *", "UTC")).unwrap();
        let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        assert!(schedule.fire_times(at, at).is_empty());
        assert!(schedule
            .fire_times(at, at - chrono::Duration::hours(1))
            .is_empty());
    }

    #[test]
    fn window_cut_at_limit() {
        let schedule = Schedule::parse(&spec("* * * * * *", "UTC")).unwrap();
        let after = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let until = after + chrono::Duration::days(2);

        let fire_times = schedule.fire_times(after, until);

        assert_eq!(fire_times.len(), MAX_FIRE_TIMES_PER_CALL);
        assert_eq!(fire_times[0], after + chrono::Duration::seconds(1));
    }
}
