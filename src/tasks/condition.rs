//! `condition` tasks: a boolean expression over the input.

use base64::Engine;
use evalexpr::Value;
use serde::Serialize;

use super::expression::{type_name, Evaluator};
use super::{TaskFailure, TaskOutput};
use crate::messages::{CheckCondition, ErrorCode, Meta};

/// The output of a condition. The field order and names are the bytes Ylem's trigger listener
/// reads: it forwards `original_input` to the next task.
#[derive(Serialize)]
struct ConditionOutput {
    result: bool,
    original_input: String,
}

/// Evaluates the condition and outputs `{"result": bool, "original_input": base64(input)}`.
pub fn run(
    condition: &CheckCondition,
    input: &[u8],
    meta: &Meta,
) -> Result<TaskOutput, TaskFailure> {
    let expression = condition.expression.as_str();
    if let Err(error) = serde_json::from_slice::<serde_json::Value>(input) {
        return Err(TaskFailure::new(
            ErrorCode::ConditionFailed,
            format!(
                "condition `{expression}` needs a JSON input, but the input is not JSON: {error}"
            ),
        ));
    }

    let evaluator = Evaluator::new(input, &meta.env_vars);
    let value = evaluator
        .evaluate(expression)
        .map_err(|error| TaskFailure::new(ErrorCode::ConditionFailed, error.to_string()))?;
    let Value::Boolean(result) = value else {
        return Err(TaskFailure::new(
            ErrorCode::ConditionFailed,
            format!(
                "condition `{expression}` must return a boolean, but it returned {} ({})",
                type_name(&value),
                super::expression::value_to_json(&value)
            ),
        ));
    };

    let output = ConditionOutput {
        result,
        original_input: base64::engine::general_purpose::STANDARD.encode(input),
    };
    let bytes = serde_json::to_vec(&output).map_err(|error| {
        TaskFailure::new(
            ErrorCode::Internal,
            format!("failed to encode the condition output: {error}"),
        )
    })?;
    Ok(TaskOutput::single(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(expression: &str, input: &str) -> Result<TaskOutput, TaskFailure> {
        let condition = CheckCondition {
            expression: expression.to_owned(),
        };
        run(&condition, input.as_bytes(), &Meta::default())
    }

    #[test]
    fn output_bytes_are_exact() {
        let output = check("a > 1", r#"{"a":2}"#).unwrap();
        assert_eq!(output.outputs.len(), 1);
        assert_eq!(
            String::from_utf8(output.outputs[0].clone()).unwrap(),
            r#"{"result":true,"original_input":"eyJhIjoyfQ=="}"#
        );
    }

    #[test]
    fn false_result() {
        let output = check("SUM(a) > 10", r#"[{"a":2},{"a":3}]"#).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&output.outputs[0]).unwrap();
        assert_eq!(json["result"], false);
    }

    #[test]
    fn non_boolean_result_fails() {
        let failure = check("a + 1", r#"{"a":2}"#).unwrap_err();
        assert_eq!(failure.code, ErrorCode::ConditionFailed);
        assert!(failure.message.contains("`a + 1`"), "{}", failure.message);
        assert!(
            failure.message.contains("an integer (3)"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn non_json_input_fails() {
        let failure = check("true", "plain text").unwrap_err();
        assert_eq!(failure.code, ErrorCode::ConditionFailed);
        assert!(failure.message.contains("not JSON"), "{}", failure.message);
    }

    #[test]
    fn unknown_variable_fails_with_names() {
        let failure = check("b > 1", r#"{"a":2}"#).unwrap_err();
        assert_eq!(failure.code, ErrorCode::ConditionFailed);
        assert!(
            failure.message.contains("available variables are a"),
            "{}",
            failure.message
        );
    }
}
