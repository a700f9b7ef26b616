//! `for_each` tasks: one output per element of a JSON array.

use super::{json_type_name, TaskFailure, TaskOutput};
use crate::messages::ErrorCode;

/// Splits a JSON array input into one output `[element]` per element. An empty array gives one
/// output `[]`, so the run still continues past the task.
pub fn run(input: &[u8]) -> Result<TaskOutput, TaskFailure> {
    let parsed: serde_json::Value = serde_json::from_slice(input).map_err(|error| {
        TaskFailure::new(
            ErrorCode::ForEachFailed,
            format!("for_each needs a JSON array input, but the input is not JSON: {error}"),
        )
    })?;
    let serde_json::Value::Array(elements) = parsed else {
        return Err(TaskFailure::new(
            ErrorCode::ForEachFailed,
            format!(
                "for_each needs a JSON array input, but the input is {}",
                json_type_name(&parsed)
            ),
        ));
    };

    if elements.is_empty() {
        return Ok(TaskOutput::single(b"[]".to_vec()));
    }
    let outputs = elements
        .into_iter()
        .map(|element| {
            serde_json::Value::Array(vec![element])
                .to_string()
                .into_bytes()
        })
        .collect();
    Ok(TaskOutput {
        outputs,
        column_order: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(output: TaskOutput) -> Vec<String> {
        output
            .outputs
            .into_iter()
            .map(|bytes| String::from_utf8(bytes).unwrap())
            .collect()
    }

    #[test]
    fn one_output_per_element() {
        let output = run(br#"[{"a":1}, 2, "x"]"#).unwrap();
        assert_eq!(texts(output), vec![r#"[{"a":1}]"#, "[2]", r#"["x"]"#]);
    }

    #[test]
    fn empty_array_gives_one_empty_output() {
        assert_eq!(texts(run(b"[]").unwrap()), vec!["[]"]);
    }

    #[test]
    fn object_input_fails_naming_type() {
        let failure = run(br#"{"a":1}"#).unwrap_err();
        assert_eq!(failure.code, ErrorCode::ForEachFailed);
        assert!(failure.message.contains("an object"), "{}", failure.message);
    }

    #[test]
    fn non_json_input_fails() {
        let failure = run(b"abc").unwrap_err();
        assert_eq!(failure.code, ErrorCode::ForEachFailed);
        assert!(failure.message.contains("not JSON"), "{}", failure.message);
    }
}
