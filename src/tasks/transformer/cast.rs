//! `cast_to`: converts the input value, or each element of an input array, to one type.

use serde_json::Value as Json;

use super::transformer_failure;
use crate::messages::ErrorCode;
use crate::tasks::{json_type_name, TaskFailure};

#[derive(Clone, Copy)]
enum CastType {
    Integer,
    String,
    Float,
    Boolean,
}

/// Casts the input to `cast_to_type`. Input that is not JSON is cast as a string.
pub fn cast_input(cast_to_type: &str, input: &[u8]) -> Result<Vec<u8>, TaskFailure> {
    let target = match cast_to_type {
        "integer" | "int" => CastType::Integer,
        "string" => CastType::String,
        "float" => CastType::Float,
        "boolean" | "bool" => CastType::Boolean,
        other => {
            return Err(TaskFailure::new(
                ErrorCode::BadRequest,
                format!("cast_to_type {other:?} is not supported; use integer, string, float or boolean"),
            ));
        }
    };
    let value = match serde_json::from_slice::<Json>(input) {
        Ok(value) => value,
        Err(_) => Json::String(String::from_utf8_lossy(input).into_owned()),
    };

    let cast = match value {
        Json::Array(items) => Json::Array(
            items
                .into_iter()
                .map(|item| cast_value(item, target))
                .collect::<Result<_, _>>()?,
        ),
        scalar => cast_value(scalar, target)?,
    };
    Ok(cast.to_string().into_bytes())
}

fn cast_value(value: Json, target: CastType) -> Result<Json, TaskFailure> {
    let cast = match target {
        CastType::Integer => to_integer(&value).map(Json::from),
        CastType::Float => to_float(&value)
            .and_then(|number| serde_json::Number::from_f64(number).map(Json::Number)),
        CastType::Boolean => to_boolean(&value).map(Json::Bool),
        CastType::String => to_text(&value).map(Json::String),
    };
    cast.ok_or_else(|| {
        transformer_failure(format!(
            "cast_to cannot convert {} {value} to {}",
            json_type_name(&value),
            target_name(target)
        ))
    })
}

fn target_name(target: CastType) -> &'static str {
    match target {
        CastType::Integer => "integer",
        CastType::String => "string",
        CastType::Float => "float",
        CastType::Boolean => "boolean",
    }
}

fn to_integer(value: &Json) -> Option<i64> {
    match value {
        Json::Number(number) => number.as_i64().or_else(|| {
            number
                .as_f64()
                .filter(|x| x.is_finite())
                .map(|x| x.trunc() as i64)
        }),
        Json::Bool(flag) => Some(i64::from(*flag)),
        Json::String(text) => {
            let trimmed = text.trim();
            trimmed.parse::<i64>().ok().or_else(|| {
                trimmed
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .map(|x| x.trunc() as i64)
            })
        }
        _ => None,
    }
}

fn to_float(value: &Json) -> Option<f64> {
    match value {
        Json::Number(number) => number.as_f64(),
        Json::Bool(flag) => Some(if *flag { 1.0 } else { 0.0 }),
        Json::String(text) => text.trim().parse::<f64>().ok().filter(|x| x.is_finite()),
        _ => None,
    }
}

fn to_boolean(value: &Json) -> Option<bool> {
    match value {
        Json::Bool(flag) => Some(*flag),
        Json::Number(number) => number.as_f64().map(|x| x != 0.0),
        Json::String(text) => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "t" | "yes" | "y" | "1" => Some(true),
            "false" | "f" | "no" | "n" | "0" | "" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn to_text(value: &Json) -> Option<String> {
    match value {
        Json::String(text) => Some(text.clone()),
        Json::Null => None,
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cast(target: &str, input: &str) -> Result<String, TaskFailure> {
        cast_input(target, input.as_bytes()).map(|bytes| String::from_utf8(bytes).unwrap())
    }

    #[test]
    fn integer_from_strings_floats_and_bools() {
        assert_eq!(cast("integer", r#""42""#).unwrap(), "42");
        assert_eq!(cast("integer", "3.9").unwrap(), "3");
        assert_eq!(cast("integer", r#"["1", 2.5, true]"#).unwrap(), "[1,2,1]");
    }

    #[test]
    fn string_of_numbers_and_raw_text() {
        assert_eq!(
            cast("string", "[1, true, \"x\"]").unwrap(),
            r#"["1","true","x"]"#
        );
        assert_eq!(cast("string", "not json").unwrap(), r#""not json""#);
    }

    #[test]
    fn float_and_boolean() {
        assert_eq!(cast("float", r#""2.5""#).unwrap(), "2.5");
        assert_eq!(
            cast("boolean", r#"["yes", 0, "false"]"#).unwrap(),
            "[true,false,false]"
        );
    }

    #[test]
    fn unconvertible_value_fails() {
        let failure = cast("integer", r#""abc""#).unwrap_err();
        assert_eq!(failure.code, ErrorCode::TransformerFailed);
        assert!(failure.message.contains("\"abc\""), "{}", failure.message);
        let failure = cast("integer", r#"{"a":1}"#).unwrap_err();
        assert!(failure.message.contains("an object"), "{}", failure.message);
    }

    #[test]
    fn unknown_target_is_bad_request() {
        let failure = cast("date", "1").unwrap_err();
        assert_eq!(failure.code, ErrorCode::BadRequest);
    }
}
