//! Durations written on the command line, such as `30m`, `24h` or `7d`.

use std::time::Duration;

/// Parses a whole number followed by a unit: `s` seconds, `m` minutes, `h` hours, `d` days or
/// `w` weeks.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let invalid = |problem: &str| {
        format!("invalid duration {text:?}: {problem}; write a whole number and a unit (s, m, h, d or w), e.g. 30m, 24h or 7d")
    };
    let unit_start = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| invalid("the unit is missing"))?;
    let (number, unit) = text.split_at(unit_start);
    if number.is_empty() {
        return Err(invalid("the number is missing"));
    }
    let count: u64 = number
        .parse()
        .map_err(|_| invalid("the number is too large"))?;
    let unit_secs: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(invalid(&format!("unknown unit {unit:?}"))),
    };
    if count == 0 {
        return Err(invalid("the duration must be longer than zero"));
    }
    // Ten years is more than any retention; larger values are a typing mistake.
    const MAX_SECS: u64 = 10 * 366 * 86_400;
    let secs = count
        .checked_mul(unit_secs)
        .filter(|secs| *secs <= MAX_SECS)
        .ok_or_else(|| invalid("the duration is longer than ten years"))?;
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        let cases = [
            ("45s", 45),
            ("30m", 1_800),
            ("24h", 86_400),
            ("7d", 604_800),
            ("2w", 1_209_600),
            (" 1h ", 3_600),
        ];
        for (text, secs) in cases {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
    }

    #[test]
    fn rejects_invalid_text() {
        let cases = [
            ("", "unit is missing"),
            ("24", "unit is missing"),
            ("h", "number is missing"),
            ("-1h", "number is missing"),
            ("1.5h", "unknown unit"),
            ("3y", "unknown unit"),
            ("24 h", "unknown unit"),
            ("0m", "longer than zero"),
            ("99999999999999999999d", "too large"),
            ("5000d", "ten years"),
        ];
        for (text, problem) in cases {
            let err = parse_duration(text).unwrap_err();
            assert!(err.contains(problem), "{text:?}: {err}");
            assert!(err.contains("e.g. 30m"), "{text:?}: {err}");
        }
    }
}
