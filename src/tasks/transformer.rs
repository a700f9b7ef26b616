//! `transformer` tasks: extract a JSON path, cast values, split text or encode rows.

mod cast;
mod encode;

use super::{json_type_name, TaskFailure, TaskOutput};
use crate::messages::{ErrorCode, Meta, TransformData};

/// Runs the transformation named by `type`.
pub fn run(
    transform: &TransformData,
    input: &[u8],
    meta: &Meta,
) -> Result<TaskOutput, TaskFailure> {
    let output = match transform.transform_type.as_str() {
        "extract_from_json" => extract_from_json(&transform.json_query_expression, input)?,
        "cast_to" => cast::cast_input(&transform.cast_to_type, input)?,
        "str_split" => split_string(&transform.delimiter, input)?,
        "encode_to" => encode::encode_rows(&transform.encode_format, input, meta)?,
        other => {
            return Err(TaskFailure::new(
                ErrorCode::BadRequest,
                format!(
                    "transformer type {other:?} is not supported; use extract_from_json, cast_to, str_split or encode_to"
                ),
            ));
        }
    };
    Ok(TaskOutput::single(output))
}

fn transformer_failure(message: impl Into<String>) -> TaskFailure {
    TaskFailure::new(ErrorCode::TransformerFailed, message)
}

/// Outputs the JSON that the gjson `path` selects from the input.
fn extract_from_json(path: &str, input: &[u8]) -> Result<Vec<u8>, TaskFailure> {
    let text = std::str::from_utf8(input).map_err(|_| {
        transformer_failure("extract_from_json needs a JSON input, but the input is not UTF-8 text")
    })?;
    if !gjson::valid(text) {
        return Err(transformer_failure(
            "extract_from_json needs a JSON input, but the input is not valid JSON",
        ));
    }
    let found = gjson::get(text, path);
    if !found.exists() {
        return Err(transformer_failure(format!(
            "extract_from_json path {path:?} matched nothing in the input"
        )));
    }
    Ok(found.json().as_bytes().to_vec())
}

/// Splits a JSON string, or raw text that is not JSON, by `delimiter` into a JSON array of
/// strings. An empty delimiter splits into characters.
fn split_string(delimiter: &str, input: &[u8]) -> Result<Vec<u8>, TaskFailure> {
    let text = match serde_json::from_slice::<serde_json::Value>(input) {
        Ok(serde_json::Value::String(text)) => text,
        Ok(serde_json::Value::Array(_)) | Ok(serde_json::Value::Object(_)) => {
            let parsed: serde_json::Value = serde_json::from_slice(input).unwrap_or_default();
            return Err(transformer_failure(format!(
                "str_split needs a string input, but the input is {}",
                json_type_name(&parsed)
            )));
        }
        _ => String::from_utf8(input.to_vec()).map_err(|_| {
            transformer_failure("str_split needs a text input, but the input is not UTF-8")
        })?,
    };

    let parts: Vec<String> = if delimiter.is_empty() {
        text.chars().map(String::from).collect()
    } else {
        text.split(delimiter).map(str::to_owned).collect()
    };
    serde_json::to_vec(&parts).map_err(|error| {
        TaskFailure::new(
            ErrorCode::Internal,
            format!("failed to encode the split parts: {error}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transform(fields: serde_json::Value, input: &str) -> Result<String, TaskFailure> {
        let transform: TransformData = serde_json::from_value(fields).unwrap();
        let output = run(&transform, input.as_bytes(), &Meta::default())?;
        Ok(String::from_utf8(output.outputs[0].clone()).unwrap())
    }

    #[test]
    fn extract_nested_value() {
        let fields = serde_json::json!({"type": "extract_from_json", "json_query_expression": "data.items.1.name"});
        let output =
            transform(fields, r#"{"data":{"items":[{"name":"a"},{"name":"b"}]}}"#).unwrap();
        assert_eq!(output, r#""b""#);
    }

    #[test]
    fn extract_array_query() {
        let fields =
            serde_json::json!({"type": "extract_from_json", "json_query_expression": "rows.#.id"});
        let output = transform(fields, r#"{"rows":[{"id":1},{"id":2}]}"#).unwrap();
        assert_eq!(output, "[1,2]");
    }

    #[test]
    fn extract_missing_path_fails() {
        let fields =
            serde_json::json!({"type": "extract_from_json", "json_query_expression": "nope"});
        let failure = transform(fields, r#"{"a":1}"#).unwrap_err();
        assert_eq!(failure.code, ErrorCode::TransformerFailed);
        assert!(failure.message.contains("\"nope\""), "{}", failure.message);
    }

    #[test]
    fn extract_from_invalid_json_fails() {
        let fields = serde_json::json!({"type": "extract_from_json", "json_query_expression": "a"});
        let failure = transform(fields, "{oops").unwrap_err();
        assert_eq!(failure.code, ErrorCode::TransformerFailed);
    }

    #[test]
    fn split_json_string_and_raw_text() {
        let fields = serde_json::json!({"type": "str_split", "delimiter": ","});
        assert_eq!(
            transform(fields.clone(), r#""a,b,c""#).unwrap(),
            r#"["a","b","c"]"#
        );
        assert_eq!(transform(fields.clone(), "x,y").unwrap(), r#"["x","y"]"#);
        assert_eq!(transform(fields, "1,2").unwrap(), r#"["1","2"]"#);
    }

    #[test]
    fn split_array_input_fails() {
        let fields = serde_json::json!({"type": "str_split", "delimiter": ","});
        let failure = transform(fields, "[1]").unwrap_err();
        assert_eq!(failure.code, ErrorCode::TransformerFailed);
        assert!(failure.message.contains("an array"), "{}", failure.message);
    }

    #[test]
    fn unsupported_type_is_bad_request() {
        let fields = serde_json::json!({"type": "decode_from"});
        let failure = transform(fields, "{}").unwrap_err();
        assert_eq!(failure.code, ErrorCode::BadRequest);
        assert!(
            failure.message.contains("decode_from"),
            "{}",
            failure.message
        );
    }
}
