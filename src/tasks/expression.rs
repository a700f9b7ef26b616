//! Ylem's expression language, used by conditions and by `{{expr}}` templates.
//!
//! Expressions are parsed and evaluated by `evalexpr` with a context built from the task input.
//! Before evaluation the JSON input is reshaped ([`reshape`]): an array of row objects becomes
//! columns `{col: [values…]}`, a one-row array becomes that row and a scalar becomes
//! `{"value": x}`. The top-level keys are the variables, and columns become tuples.
//!
//! Ylem's spellings that `evalexpr` does not accept are rewritten first ([`normalize_syntax`]):
//! the words `AND`, `OR` and `NOT` become `&&`, `||` and `!`, and single-quoted strings become
//! double-quoted ones. `ENV_NAME` reads `NAME` from the run's `meta.EnvVars`, then from the
//! process environment.

mod functions;
mod syntax;
mod template;

use std::collections::{BTreeMap, HashMap};

use evalexpr::error::EvalexprResultValue;
use evalexpr::{Context, EvalexprError, EvalexprResult, Value};

pub use syntax::normalize_syntax;
pub use template::render_template;

/// An expression that could not be evaluated, with the expression text and the problem.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("expression `{expression}` failed: {problem}")]
pub struct ExpressionError {
    pub expression: String,
    pub problem: String,
}

impl ExpressionError {
    fn new(expression: &str, problem: impl Into<String>) -> ExpressionError {
        ExpressionError {
            expression: expression.to_owned(),
            problem: problem.into(),
        }
    }
}

/// Prefix of variables that read an environment variable.
const ENV_PREFIX: &str = "ENV_";

/// Evaluates expressions against one task input.
pub struct Evaluator<'a> {
    raw_input: &'a [u8],
    variables: HashMap<String, Value>,
    env_vars: &'a BTreeMap<String, serde_json::Value>,
}

impl<'a> Evaluator<'a> {
    /// Builds the variables from `raw_input`. Input that is not JSON yields no variables, but
    /// `INPUT()` still returns it. `env_vars` is the run's `meta.EnvVars`.
    pub fn new(
        raw_input: &'a [u8],
        env_vars: &'a BTreeMap<String, serde_json::Value>,
    ) -> Evaluator<'a> {
        let variables = match serde_json::from_slice::<serde_json::Value>(raw_input) {
            Ok(json) => reshape(json)
                .into_iter()
                .map(|(name, value)| (name, json_to_value(value)))
                .collect(),
            Err(_) => HashMap::new(),
        };
        Evaluator {
            raw_input,
            variables,
            env_vars,
        }
    }

    /// Evaluates one expression.
    pub fn evaluate(&self, expression: &str) -> Result<Value, ExpressionError> {
        let normalized = normalize_syntax(expression)
            .map_err(|problem| ExpressionError::new(expression, problem))?;
        let tree = evalexpr::build_operator_tree::<evalexpr::DefaultNumericTypes>(&normalized)
            .map_err(|err| ExpressionError::new(expression, describe_error(&err)))?;

        let mut context = EvaluationContext {
            variables: &self.variables,
            env_values: HashMap::new(),
            raw_input: self.raw_input,
        };
        for identifier in tree.iter_read_variable_identifiers() {
            self.resolve_variable(identifier, &mut context)
                .map_err(|problem| ExpressionError::new(expression, problem))?;
        }

        tree.eval_with_context(&context)
            .map_err(|err| ExpressionError::new(expression, describe_error(&err)))
    }

    /// Checks that `identifier` names an input variable, or reads it from the environment.
    fn resolve_variable(
        &self,
        identifier: &str,
        context: &mut EvaluationContext<'_>,
    ) -> Result<(), String> {
        if self.variables.contains_key(identifier) {
            return Ok(());
        }
        if let Some(env_name) = identifier.strip_prefix(ENV_PREFIX) {
            let value = self.read_env(env_name)?;
            context.env_values.insert(identifier.to_owned(), value);
            return Ok(());
        }
        Err(format!(
            "unknown variable `{identifier}`: {}",
            self.describe_available_variables()
        ))
    }

    fn read_env(&self, name: &str) -> Result<Value, String> {
        if let Some(value) = self.env_vars.get(name) {
            return Ok(json_to_value(value.clone()));
        }
        match std::env::var(name) {
            Ok(text) => Ok(Value::String(text)),
            Err(_) => Err(format!(
                "environment variable {name} (read by `{ENV_PREFIX}{name}`) is not set in meta.EnvVars or the runtime's environment"
            )),
        }
    }

    fn describe_available_variables(&self) -> String {
        if self.variables.is_empty() {
            return "the input has no variables (it is empty, not JSON, or an empty array)"
                .to_owned();
        }
        let mut names: Vec<&str> = self.variables.keys().map(String::as_str).collect();
        names.sort_unstable();
        format!("available variables are {}", names.join(", "))
    }
}

/// Reshapes a JSON input into the variables of an expression.
///
/// An array of objects becomes one column per key (missing keys give `null`), except that a
/// one-element array becomes its only object. An object stays as it is. Anything else, including
/// an array of scalars, becomes `{"value": input}`. An empty array has no variables.
pub fn reshape(input: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::Value as Json;

    match input {
        Json::Object(object) => object,
        Json::Array(rows) if rows.is_empty() => serde_json::Map::new(),
        Json::Array(rows) if rows.iter().all(Json::is_object) => {
            if rows.len() == 1 {
                let Some(Json::Object(row)) = rows.into_iter().next() else {
                    unreachable!("a one-element array of objects holds one object");
                };
                return row;
            }
            columns_of_rows(rows)
        }
        other => serde_json::Map::from_iter([("value".to_owned(), other)]),
    }
}

fn columns_of_rows(rows: Vec<serde_json::Value>) -> serde_json::Map<String, serde_json::Value> {
    let row_count = rows.len();
    let mut columns: serde_json::Map<String, serde_json::Value> = serde_json::Map::new();
    for (row_index, row) in rows.into_iter().enumerate() {
        let serde_json::Value::Object(row) = row else {
            continue;
        };
        for (key, cell) in row {
            let column = columns.entry(key).or_insert_with(|| {
                serde_json::Value::Array(vec![serde_json::Value::Null; row_count])
            });
            if let serde_json::Value::Array(cells) = column {
                cells[row_index] = cell;
            }
        }
    }
    columns
}

/// Converts JSON to an expression value: arrays become tuples, `null` becomes empty and
/// objects become their JSON text.
pub fn json_to_value(json: serde_json::Value) -> Value {
    use serde_json::Value as Json;

    match json {
        Json::Null => Value::Empty,
        Json::Bool(flag) => Value::Boolean(flag),
        Json::Number(number) => match number.as_i64() {
            Some(integer) => Value::Int(integer),
            None => Value::Float(number.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(text) => Value::String(text),
        Json::Array(items) => Value::Tuple(items.into_iter().map(json_to_value).collect()),
        Json::Object(object) => Value::String(serde_json::Value::Object(object).to_string()),
    }
}

/// Converts an expression value to JSON: tuples become arrays, empty becomes `null`, and a
/// float that is not finite becomes `null`.
pub fn value_to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::String(text) => serde_json::Value::String(text.clone()),
        Value::Float(number) => serde_json::Number::from_f64(*number)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        Value::Int(integer) => serde_json::Value::from(*integer),
        Value::Boolean(flag) => serde_json::Value::Bool(*flag),
        Value::Tuple(items) => serde_json::Value::Array(items.iter().map(value_to_json).collect()),
        Value::Empty => serde_json::Value::Null,
    }
}

/// Names the type of an expression value in messages.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Float(_) => "a float",
        Value::Int(_) => "an integer",
        Value::Boolean(_) => "a boolean",
        Value::Tuple(_) => "a tuple",
        Value::Empty => "an empty value",
    }
}

fn describe_error(error: &EvalexprError) -> String {
    match error {
        EvalexprError::FunctionIdentifierNotFound(name) => format!(
            "unknown function `{name}`: available functions are {}",
            functions::FUNCTION_NAMES.join(", ")
        ),
        other => other.to_string(),
    }
}

/// The variables of one evaluation: the reshaped input and the environment variables it reads.
struct EvaluationContext<'a> {
    variables: &'a HashMap<String, Value>,
    env_values: HashMap<String, Value>,
    raw_input: &'a [u8],
}

impl Context for EvaluationContext<'_> {
    type NumericTypes = evalexpr::DefaultNumericTypes;

    fn get_value(&self, identifier: &str) -> Option<&Value> {
        self.variables
            .get(identifier)
            .or_else(|| self.env_values.get(identifier))
    }

    fn call_function(&self, identifier: &str, argument: &Value) -> EvalexprResultValue {
        functions::call(identifier, argument, self.raw_input)
    }

    fn are_builtin_functions_disabled(&self) -> bool {
        true
    }

    fn set_builtin_functions_disabled(&mut self, disabled: bool) -> EvalexprResult<()> {
        if disabled {
            Ok(())
        } else {
            Err(EvalexprError::CustomMessage(
                "evalexpr's builtin functions are disabled for Ylem expressions".to_owned(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn evaluate(input: &str, expression: &str) -> Result<Value, ExpressionError> {
        let env_vars = BTreeMap::new();
        Evaluator::new(input.as_bytes(), &env_vars).evaluate(expression)
    }

    #[test]
    fn reshape_rows_to_columns() {
        let shaped = reshape(json!([{"a": 1, "b": "x"}, {"a": 2}]));
        assert_eq!(shaped["a"], json!([1, 2]));
        assert_eq!(shaped["b"], json!(["x", null]));
    }

    #[test]
    fn reshape_one_row_to_object() {
        let shaped = reshape(json!([{"a": 1}]));
        assert_eq!(serde_json::Value::Object(shaped), json!({"a": 1}));
    }

    #[test]
    fn reshape_scalar_and_scalar_array() {
        assert_eq!(
            serde_json::Value::Object(reshape(json!(5))),
            json!({"value": 5})
        );
        assert_eq!(
            serde_json::Value::Object(reshape(json!("s"))),
            json!({"value": "s"})
        );
        assert_eq!(
            serde_json::Value::Object(reshape(json!([1, 2]))),
            json!({"value": [1, 2]})
        );
        assert!(reshape(json!([])).is_empty());
    }

    #[test]
    fn aggregates_over_columns() {
        let input = r#"[{"n": 1, "s": "a"}, {"n": 2, "s": "b"}, {"n": 6, "s": "c"}]"#;
        assert_eq!(evaluate(input, "SUM(n)").unwrap(), Value::Int(9));
        assert_eq!(evaluate(input, "avg(n)").unwrap(), Value::Float(3.0));
        assert_eq!(evaluate(input, "COUNT(n)").unwrap(), Value::Int(3));
        assert_eq!(evaluate(input, "MIN(n)").unwrap(), Value::Int(1));
        assert_eq!(evaluate(input, "Max(n)").unwrap(), Value::Int(6));
        assert_eq!(
            evaluate(input, "FIRST(s)").unwrap(),
            Value::String("a".into())
        );
        assert_eq!(
            evaluate(input, "LAST(s)").unwrap(),
            Value::String("c".into())
        );
    }

    #[test]
    fn word_operators_and_single_quotes() {
        let input = r#"{"a": 3, "name": "it's"}"#;
        assert_eq!(
            evaluate(input, "a > 1 AND NOT (a == 4)").unwrap(),
            Value::Boolean(true)
        );
        assert_eq!(
            evaluate(input, "a > 5 or a < 4").unwrap(),
            Value::Boolean(true)
        );
        assert_eq!(
            evaluate(input, r"name == 'it\'s'").unwrap(),
            Value::Boolean(true)
        );
        assert_eq!(
            evaluate(input, r#"name == "it's""#).unwrap(),
            Value::Boolean(true)
        );
    }

    #[test]
    fn scalar_input_is_value() {
        assert_eq!(evaluate("42", "value * 2").unwrap(), Value::Int(84));
    }

    #[test]
    fn unknown_variable_lists_available() {
        let error = evaluate(r#"{"a": 1, "b": 2}"#, "c > 1").unwrap_err();
        assert_eq!(error.expression, "c > 1");
        assert!(
            error.problem.contains("unknown variable `c`"),
            "{}",
            error.problem
        );
        assert!(
            error.problem.contains("available variables are a, b"),
            "{}",
            error.problem
        );
    }

    #[test]
    fn env_variable_from_meta_then_process() {
        let env_vars = BTreeMap::from([("LIMIT".to_owned(), json!(10))]);
        let evaluator = Evaluator::new(b"{\"a\": 3}", &env_vars);
        assert_eq!(
            evaluator.evaluate("a < ENV_LIMIT").unwrap(),
            Value::Boolean(true)
        );

        let missing = evaluator
            .evaluate("ENV_YLEM_TEST_SURELY_UNSET_VARIABLE")
            .unwrap_err();
        assert!(
            missing.problem.contains("YLEM_TEST_SURELY_UNSET_VARIABLE"),
            "{}",
            missing.problem
        );
    }

    #[test]
    fn unknown_function_names_available() {
        let error = evaluate("{}", "FOO(1)").unwrap_err();
        assert!(
            error.problem.contains("unknown function `FOO`"),
            "{}",
            error.problem
        );
    }

    #[test]
    fn input_function_returns_raw_text() {
        assert_eq!(
            evaluate("not json", "INPUT()").unwrap(),
            Value::String("not json".into())
        );
    }
}
