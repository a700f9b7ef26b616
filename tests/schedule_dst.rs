//! Fire times across the 2026 daylight-saving changes, checked against instants computed
//! here from the zone's UTC offsets rather than by the cron library.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use ylem_runtime::schedule::{Schedule, ScheduleError, ScheduleSpec};

fn schedule(cron: &str, timezone: &str) -> Schedule {
    Schedule::parse(&ScheduleSpec {
        cron: cron.to_owned(),
        timezone: timezone.to_owned(),
    })
    .unwrap_or_else(|error| panic!("{cron} in {timezone}: {error}"))
}

fn utc(year: i32, month: u32, day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(year, month, day, hour, minute, 0)
        .unwrap()
}

/// Returns the UTC instants of local midnight at the start and the end of `date` in `zone`.
fn local_day_bounds(zone: Tz, date: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
    let start_of = |day: NaiveDate| {
        zone.from_local_datetime(&day.and_hms_opt(0, 0, 0).unwrap())
            .single()
            .expect("midnight is unambiguous in the tested zones")
            .with_timezone(&Utc)
    };
    (start_of(date), start_of(date.succ_opt().unwrap()))
}

/// Lists every instant in `[start, end)` whose wall time in `zone` is on a quarter hour,
/// stepping through UTC minute by minute.
fn quarter_hours_by_brute_force(
    zone: Tz,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    let mut instants = Vec::new();
    let mut instant = start;
    while instant < end {
        let local = instant.with_timezone(&zone);
        if local.minute().is_multiple_of(15) && local.second() == 0 {
            instants.push(instant);
        }
        instant += Duration::minutes(1);
    }
    instants
}

fn assert_strictly_increasing(fire_times: &[DateTime<Utc>]) {
    for pair in fire_times.windows(2) {
        assert!(pair[0] < pair[1], "{} is not before {}", pair[0], pair[1]);
    }
}

/// Fire times of `schedule` on the local calendar day `date`.
fn fire_times_on_local_day(schedule: &Schedule, date: NaiveDate) -> Vec<DateTime<Utc>> {
    let (start, end) = local_day_bounds(schedule.timezone(), date);
    // The window excludes `after`, so start one second early to include local midnight.
    schedule.fire_times(start - Duration::seconds(1), end - Duration::seconds(1))
}

fn date(year: i32, month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, day).unwrap()
}

#[test]
fn amsterdam_daily_skipped_time_fires_after_gap() {
    // 2026-03-29: clocks go from 02:00 CET to 03:00 CEST, so 02:30 does not exist.
    let daily = schedule("30 2 * * *", "Europe/Amsterdam");

    let fire_times = daily.fire_times(utc(2026, 3, 27, 12, 0), utc(2026, 3, 30, 12, 0));

    // In UTC: 02:30 CET is 01:30, 03:00 CEST is 01:00 and 02:30 CEST is 00:30.
    let expected = vec![
        utc(2026, 3, 28, 1, 30),
        utc(2026, 3, 29, 1, 0),
        utc(2026, 3, 30, 0, 30),
    ];
    assert_eq!(fire_times, expected);
}

#[test]
fn amsterdam_daily_repeated_time_fires_once() {
    // 2026-10-25: clocks go from 03:00 CEST back to 02:00 CET, so 02:30 occurs twice.
    let daily = schedule("30 2 * * *", "Europe/Amsterdam");

    let fire_times = daily.fire_times(utc(2026, 10, 23, 12, 0), utc(2026, 10, 26, 12, 0));

    // The first 02:30 on the 25th is CEST (00:30 UTC). The second one (01:30 UTC) is skipped.
    let expected = vec![
        utc(2026, 10, 24, 0, 30),
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 26, 1, 30),
    ];
    assert_eq!(fire_times, expected);
}

#[test]
fn new_york_daily_skipped_time_fires_after_gap() {
    // 2026-03-08: clocks go from 02:00 EST to 03:00 EDT.
    let daily = schedule("30 2 * * *", "America/New_York");

    let fire_times = daily.fire_times(utc(2026, 3, 6, 12, 0), utc(2026, 3, 9, 12, 0));

    // In UTC: 02:30 EST is 07:30, 03:00 EDT is 07:00 and 02:30 EDT is 06:30.
    let expected = vec![
        utc(2026, 3, 7, 7, 30),
        utc(2026, 3, 8, 7, 0),
        utc(2026, 3, 9, 6, 30),
    ];
    assert_eq!(fire_times, expected);
}

#[test]
fn new_york_daily_on_fall_back_day() {
    // 2026-11-01: clocks go from 02:00 EDT back to 01:00 EST, so 01:30 occurs twice and
    // 02:30 once.
    let at_0230 = schedule("30 2 * * *", "America/New_York");
    let at_0130 = schedule("30 1 * * *", "America/New_York");
    let after = utc(2026, 10, 31, 12, 0);
    let until = utc(2026, 11, 2, 12, 0);

    // 02:30 EST is 07:30 UTC.
    let expected_0230 = vec![utc(2026, 11, 1, 7, 30), utc(2026, 11, 2, 7, 30)];
    assert_eq!(at_0230.fire_times(after, until), expected_0230);

    // The first 01:30 on the 1st is EDT (05:30 UTC). The EST one (06:30 UTC) is skipped.
    let expected_0130 = vec![utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)];
    assert_eq!(at_0130.fire_times(after, until), expected_0130);
}

#[test]
fn quarter_hours_on_change_days() {
    let cases = [
        ("Europe/Amsterdam", date(2026, 3, 29), 92),
        ("Europe/Amsterdam", date(2026, 10, 25), 100),
        ("America/New_York", date(2026, 3, 8), 92),
        ("America/New_York", date(2026, 11, 1), 100),
        ("Europe/Amsterdam", date(2026, 6, 1), 96),
    ];

    for (zone_name, day, expected_count) in cases {
        let quarter_hourly = schedule("*/15 * * * *", zone_name);
        let (start, end) = local_day_bounds(quarter_hourly.timezone(), day);

        let fire_times = fire_times_on_local_day(&quarter_hourly, day);
        let expected = quarter_hours_by_brute_force(quarter_hourly.timezone(), start, end);

        assert_eq!(
            expected.len(),
            expected_count,
            "{zone_name} {day}: brute force count"
        );
        assert_eq!(
            fire_times.len(),
            expected_count,
            "{zone_name} {day}: fire time count"
        );
        assert_eq!(fire_times, expected, "{zone_name} {day}: fire times");
        assert_strictly_increasing(&fire_times);
    }
}

#[test]
fn quarter_hours_across_both_changes() {
    // One call covering a whole DST season in Amsterdam, from before spring forward to
    // after fall back.
    let quarter_hourly = schedule("*/15 * * * *", "Europe/Amsterdam");
    let after = utc(2026, 3, 28, 0, 0);
    let until = utc(2026, 10, 26, 0, 0);

    let fire_times = quarter_hourly.fire_times(after, until);

    // Every UTC quarter hour is a local quarter hour in a whole-hour-offset zone.
    let expected_count = ((until - after).num_minutes() / 15) as usize;
    assert_eq!(fire_times.len(), expected_count);
    assert_eq!(fire_times.first(), Some(&(after + Duration::minutes(15))));
    assert_eq!(fire_times.last(), Some(&until));
    assert_strictly_increasing(&fire_times);
}

#[test]
fn seconds_schedule_every_twenty_seconds() {
    let every_20_secs = schedule("*/20 * * * * *", "Europe/Amsterdam");
    let after = utc(2026, 3, 29, 0, 55);
    let until = utc(2026, 3, 29, 1, 5);

    let fire_times = every_20_secs.fire_times(after, until);

    // Ten minutes across the spring-forward instant (01:00 UTC): 3 per minute.
    assert_eq!(fire_times.len(), 30);
    assert_eq!(fire_times[0], after + Duration::seconds(20));
    assert_eq!(fire_times.last(), Some(&until));
    for pair in fire_times.windows(2) {
        assert_eq!(pair[1] - pair[0], Duration::seconds(20));
    }
}

#[test]
fn hourly_fires_twice_in_repeated_hour() {
    // A pattern with a wildcard hour fires on elapsed time: both 02:30s on fall-back day.
    let hourly = schedule("30 * * * *", "Europe/Amsterdam");

    let fire_times = fire_times_on_local_day(&hourly, date(2026, 10, 25));

    assert_eq!(fire_times.len(), 25);
    assert!(fire_times.contains(&utc(2026, 10, 25, 0, 30)));
    assert!(fire_times.contains(&utc(2026, 10, 25, 1, 30)));
    assert_strictly_increasing(&fire_times);
}

#[test]
fn utc_is_default_zone() {
    let daily = schedule("0 6 * * *", "");

    let fire_times = daily.fire_times(utc(2026, 3, 29, 0, 0), utc(2026, 3, 30, 0, 0));

    assert_eq!(fire_times, vec![utc(2026, 3, 29, 6, 0)]);
    assert_eq!(daily.fingerprint(), "0 6 * * *@UTC");
}

#[test]
fn window_excludes_after_includes_until() {
    let hourly = schedule("0 * * * *", "Europe/Amsterdam");
    let after = utc(2026, 10, 24, 12, 0);
    let until = after + Duration::hours(48);

    let fire_times = hourly.fire_times(after, until);

    assert_eq!(fire_times.len(), 48);
    assert_eq!(fire_times.first(), Some(&(after + Duration::hours(1))));
    assert_eq!(fire_times.last(), Some(&until));
    assert!(!fire_times.contains(&after));
    assert_strictly_increasing(&fire_times);
}

#[test]
fn invalid_cron_rejected() {
    for pattern in ["61 * * * *", "* * *", "every day", "*/0 * * * *", ""] {
        let result = Schedule::parse(&ScheduleSpec {
            cron: pattern.to_owned(),
            timezone: "UTC".to_owned(),
        });
        let Err(ScheduleError::InvalidCron {
            pattern: reported,
            message,
        }) = result
        else {
            panic!("{pattern:?} was not rejected as an invalid cron pattern");
        };
        assert_eq!(reported, pattern);
        assert!(!message.is_empty(), "{pattern:?} has an empty message");
    }
}

#[test]
fn unknown_zone_rejected() {
    let result = Schedule::parse(&ScheduleSpec {
        cron: "0 * * * *".to_owned(),
        timezone: "Mars/Olympus_Mons".to_owned(),
    });

    let error = result.unwrap_err();
    assert_eq!(
        error,
        ScheduleError::UnknownTimezone("Mars/Olympus_Mons".to_owned())
    );
    assert!(error.to_string().contains("IANA"), "{error}");
}

#[test]
fn chunked_windows_match_one_window() {
    // The schedule generator requests short windows one after another, so a window edge
    // inside a repeated or skipped hour must not add or lose a fire time.
    let patterns = [
        "30 2 * * *",
        "30 1 * * *",
        "*/15 * * * *",
        "30 * * * *",
        "*/20 * * * * *",
    ];
    let zones = ["Europe/Amsterdam", "America/New_York"];
    let windows = [
        (utc(2026, 3, 7, 0, 0), utc(2026, 3, 10, 0, 0)),
        (utc(2026, 3, 28, 0, 0), utc(2026, 3, 30, 0, 0)),
        (utc(2026, 10, 24, 0, 0), utc(2026, 10, 26, 0, 0)),
        (utc(2026, 10, 31, 0, 0), utc(2026, 11, 2, 0, 0)),
    ];

    for zone_name in zones {
        for pattern in patterns {
            let schedule = schedule(pattern, zone_name);
            for (start, end) in windows {
                let whole = schedule.fire_times(start, end);

                let mut chunked = Vec::new();
                let mut chunk_start = start;
                while chunk_start < end {
                    // 7 minutes and 1 second, so chunk edges fall on and off fire times.
                    let chunk_end = (chunk_start + Duration::seconds(421)).min(end);
                    chunked.extend(schedule.fire_times(chunk_start, chunk_end));
                    chunk_start = chunk_end;
                }

                assert_eq!(chunked, whole, "{pattern} in {zone_name} from {start}");
                assert_strictly_increasing(&whole);
            }
        }
    }
}

#[test]
fn window_starting_in_repeated_hour() {
    // 00:45 UTC on 2026-10-25 is 02:45 CEST, after the first 02:30 and before the second.
    let daily = schedule("30 2 * * *", "Europe/Amsterdam");

    let fire_times = daily.fire_times(utc(2026, 10, 25, 0, 45), utc(2026, 10, 26, 12, 0));

    assert_eq!(fire_times, vec![utc(2026, 10, 26, 1, 30)]);
}
