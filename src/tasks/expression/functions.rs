//! The functions of Ylem expressions. Names are case-insensitive.
//!
//! A function receives one argument: a tuple when it was called with several arguments or with a
//! column. Aggregates flatten nested tuples and skip empty values (JSON `null`).

use evalexpr::error::EvalexprResultValue;
use evalexpr::{EvalexprError, Value};

/// Function names, for error messages.
pub const FUNCTION_NAMES: &[&str] = &[
    "AVG", "SUM", "COUNT", "MIN", "MAX", "FIRST", "LAST", "NOW", "INPUT", "ROUND", "ABS", "NEG",
    "STRING", "INT", "SIGN",
];

/// Calls the function `name`; `raw_input` is the task input that `INPUT()` returns.
pub fn call(name: &str, argument: &Value, raw_input: &[u8]) -> EvalexprResultValue {
    match name.to_ascii_uppercase().as_str() {
        "AVG" => average(argument),
        "SUM" => sum(argument),
        "COUNT" => Ok(Value::Int(count(argument))),
        "MIN" => extreme(argument, "MIN", |candidate, best| candidate < best),
        "MAX" => extreme(argument, "MAX", |candidate, best| candidate > best),
        "FIRST" => Ok(elements(argument).first().cloned().unwrap_or(Value::Empty)),
        "LAST" => Ok(elements(argument).last().cloned().unwrap_or(Value::Empty)),
        "NOW" => Ok(Value::String(
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )),
        "INPUT" => Ok(Value::String(
            String::from_utf8_lossy(raw_input).into_owned(),
        )),
        "ROUND" => round(argument),
        "ABS" => map_number(argument, "ABS", i64::wrapping_abs, f64::abs),
        "NEG" => map_number(argument, "NEG", i64::wrapping_neg, |x| -x),
        "SIGN" => sign(argument),
        "STRING" => Ok(Value::String(display(single(argument, "STRING")?))),
        "INT" => to_int(single(argument, "INT")?),
        _ => Err(EvalexprError::FunctionIdentifierNotFound(name.to_owned())),
    }
}

/// Lists the elements of an argument: the items of a tuple, nothing for empty, or the value itself.
fn elements(argument: &Value) -> Vec<Value> {
    match argument {
        Value::Tuple(items) => items.clone(),
        Value::Empty => Vec::new(),
        other => vec![other.clone()],
    }
}

/// Collects the numbers of an argument, flattening nested tuples and skipping empty values.
fn numbers(argument: &Value, function: &str) -> Result<Vec<Value>, EvalexprError> {
    let mut found = Vec::new();
    collect_numbers(argument, function, &mut found)?;
    Ok(found)
}

fn collect_numbers(
    value: &Value,
    function: &str,
    found: &mut Vec<Value>,
) -> Result<(), EvalexprError> {
    match value {
        Value::Tuple(items) => {
            for item in items {
                collect_numbers(item, function, found)?;
            }
            Ok(())
        }
        Value::Empty => Ok(()),
        Value::Int(_) | Value::Float(_) => {
            found.push(value.clone());
            Ok(())
        }
        other => Err(EvalexprError::CustomMessage(format!(
            "{function} needs numbers, got {other:?}"
        ))),
    }
}

fn as_float(value: &Value) -> f64 {
    match value {
        Value::Int(integer) => *integer as f64,
        Value::Float(number) => *number,
        _ => f64::NAN,
    }
}

fn sum(argument: &Value) -> EvalexprResultValue {
    let values = numbers(argument, "SUM")?;
    if values.iter().all(|value| matches!(value, Value::Int(_))) {
        let mut total: i64 = 0;
        for value in &values {
            if let Value::Int(integer) = value {
                total = total.checked_add(*integer).ok_or_else(|| {
                    EvalexprError::CustomMessage("SUM overflows a 64-bit integer".to_owned())
                })?;
            }
        }
        return Ok(Value::Int(total));
    }
    Ok(Value::Float(values.iter().map(as_float).sum()))
}

fn average(argument: &Value) -> EvalexprResultValue {
    let values = numbers(argument, "AVG")?;
    if values.is_empty() {
        return Err(EvalexprError::CustomMessage("AVG of no numbers".to_owned()));
    }
    let total: f64 = values.iter().map(as_float).sum();
    Ok(Value::Float(total / values.len() as f64))
}

fn count(argument: &Value) -> i64 {
    match argument {
        Value::Tuple(items) => items.len() as i64,
        Value::Empty => 0,
        _ => 1,
    }
}

fn extreme(argument: &Value, function: &str, better: fn(f64, f64) -> bool) -> EvalexprResultValue {
    let values = numbers(argument, function)?;
    let mut best: Option<Value> = None;
    for value in values {
        let replace = match &best {
            None => true,
            Some(current) => better(as_float(&value), as_float(current)),
        };
        if replace {
            best = Some(value);
        }
    }
    best.ok_or_else(|| EvalexprError::CustomMessage(format!("{function} of no numbers")))
}

fn single<'a>(argument: &'a Value, function: &str) -> Result<&'a Value, EvalexprError> {
    match argument {
        Value::Tuple(items) if items.len() != 1 => Err(EvalexprError::CustomMessage(format!(
            "{function} takes one argument, got {}",
            items.len()
        ))),
        Value::Tuple(items) => Ok(&items[0]),
        other => Ok(other),
    }
}

fn round(argument: &Value) -> EvalexprResultValue {
    let (number, digits) = match argument {
        Value::Tuple(items) if items.len() == 2 => {
            let Value::Int(digits) = items[1] else {
                return Err(EvalexprError::CustomMessage(
                    "ROUND's second argument, the number of decimal places, must be an integer"
                        .to_owned(),
                ));
            };
            (&items[0], Some(digits))
        }
        other => (single(other, "ROUND")?, None),
    };
    let value = match number {
        Value::Int(integer) => return Ok(Value::Int(*integer)),
        Value::Float(value) => *value,
        other => {
            return Err(EvalexprError::CustomMessage(format!(
                "ROUND needs a number, got {other:?}"
            )));
        }
    };
    match digits {
        None if value.is_finite() && value.abs() < i64::MAX as f64 => {
            Ok(Value::Int(value.round() as i64))
        }
        None => Ok(Value::Float(value.round())),
        Some(digits) => {
            let scale = 10f64.powi(digits.clamp(-300, 300) as i32);
            Ok(Value::Float((value * scale).round() / scale))
        }
    }
}

fn map_number(
    argument: &Value,
    function: &str,
    on_int: fn(i64) -> i64,
    on_float: fn(f64) -> f64,
) -> EvalexprResultValue {
    match single(argument, function)? {
        Value::Int(integer) => Ok(Value::Int(on_int(*integer))),
        Value::Float(number) => Ok(Value::Float(on_float(*number))),
        other => Err(EvalexprError::CustomMessage(format!(
            "{function} needs a number, got {other:?}"
        ))),
    }
}

fn sign(argument: &Value) -> EvalexprResultValue {
    match single(argument, "SIGN")? {
        Value::Int(integer) => Ok(Value::Int(integer.signum())),
        Value::Float(number) if *number > 0.0 => Ok(Value::Int(1)),
        Value::Float(number) if *number < 0.0 => Ok(Value::Int(-1)),
        Value::Float(_) => Ok(Value::Int(0)),
        other => Err(EvalexprError::CustomMessage(format!(
            "SIGN needs a number, got {other:?}"
        ))),
    }
}

fn to_int(value: &Value) -> EvalexprResultValue {
    match value {
        Value::Int(integer) => Ok(Value::Int(*integer)),
        Value::Float(number) if number.is_finite() => Ok(Value::Int(number.trunc() as i64)),
        Value::Boolean(flag) => Ok(Value::Int(i64::from(*flag))),
        Value::String(text) => {
            let trimmed = text.trim();
            if let Ok(integer) = trimmed.parse::<i64>() {
                return Ok(Value::Int(integer));
            }
            match trimmed.parse::<f64>() {
                Ok(number) if number.is_finite() => Ok(Value::Int(number.trunc() as i64)),
                _ => Err(EvalexprError::CustomMessage(format!(
                    "INT cannot convert the string {text:?} to an integer"
                ))),
            }
        }
        other => Err(EvalexprError::CustomMessage(format!(
            "INT cannot convert {other:?} to an integer"
        ))),
    }
}

/// Formats a value as templates print it: strings without quotes, empty as nothing, tuples as
/// JSON arrays.
pub fn display(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Empty => String::new(),
        Value::Tuple(_) => super::value_to_json(value).to_string(),
        Value::Int(integer) => integer.to_string(),
        Value::Float(number) => number.to_string(),
        Value::Boolean(flag) => flag.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(values: &[Value]) -> Value {
        Value::Tuple(values.to_vec())
    }

    #[test]
    fn sum_mixes_ints_and_floats() {
        assert_eq!(
            call("SUM", &tuple(&[Value::Int(1), Value::Int(2)]), b"").unwrap(),
            Value::Int(3)
        );
        assert_eq!(
            call("sum", &tuple(&[Value::Int(1), Value::Float(0.5)]), b"").unwrap(),
            Value::Float(1.5)
        );
    }

    #[test]
    fn aggregates_skip_nulls() {
        let column = tuple(&[Value::Int(4), Value::Empty, Value::Int(2)]);
        assert_eq!(call("AVG", &column, b"").unwrap(), Value::Float(3.0));
        assert_eq!(call("MIN", &column, b"").unwrap(), Value::Int(2));
        assert_eq!(call("COUNT", &column, b"").unwrap(), Value::Int(3));
    }

    #[test]
    fn round_with_and_without_digits() {
        assert_eq!(
            call("ROUND", &Value::Float(2.6), b"").unwrap(),
            Value::Int(3)
        );
        assert_eq!(
            call("ROUND", &tuple(&[Value::Float(2.345), Value::Int(2)]), b"").unwrap(),
            Value::Float(2.35)
        );
    }

    #[test]
    fn abs_neg_sign() {
        assert_eq!(call("ABS", &Value::Int(-3), b"").unwrap(), Value::Int(3));
        assert_eq!(
            call("NEG", &Value::Float(1.5), b"").unwrap(),
            Value::Float(-1.5)
        );
        assert_eq!(
            call("SIGN", &Value::Float(-0.1), b"").unwrap(),
            Value::Int(-1)
        );
        assert_eq!(call("SIGN", &Value::Int(0), b"").unwrap(), Value::Int(0));
    }

    #[test]
    fn string_and_int_conversions() {
        assert_eq!(
            call("STRING", &Value::Int(7), b"").unwrap(),
            Value::String("7".into())
        );
        assert_eq!(
            call("INT", &Value::String(" 12 ".into()), b"").unwrap(),
            Value::Int(12)
        );
        assert_eq!(
            call("INT", &Value::Float(-2.9), b"").unwrap(),
            Value::Int(-2)
        );
        assert!(call("INT", &Value::String("abc".into()), b"").is_err());
    }

    #[test]
    fn sum_of_text_is_error() {
        let error = call("SUM", &tuple(&[Value::String("a".into())]), b"").unwrap_err();
        assert!(error.to_string().contains("SUM needs numbers"), "{error}");
    }

    #[test]
    fn now_is_rfc3339() {
        let Value::String(now) = call("now", &Value::Empty, b"").unwrap() else {
            panic!("NOW returned a non-string");
        };
        assert!(chrono::DateTime::parse_from_rfc3339(&now).is_ok(), "{now}");
    }
}
