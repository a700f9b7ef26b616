//! `{{expr}}` templates: each placeholder is replaced by the value of its expression.

use super::functions::display;
use super::{Evaluator, ExpressionError};

const OPEN: &str = "{{";
const CLOSE: &str = "}}";

/// Replaces every `{{expr}}` in `template` with the value of `expr` evaluated by `evaluator`.
/// Strings are inserted without quotes and tuples as JSON arrays. An `{{` without a closing
/// `}}` is kept as text.
pub fn render_template(
    template: &str,
    evaluator: &Evaluator<'_>,
) -> Result<String, ExpressionError> {
    let mut rendered = String::with_capacity(template.len());
    let mut rest = template;

    while let Some(start) = rest.find(OPEN) {
        let after_open = &rest[start + OPEN.len()..];
        let Some(length) = after_open.find(CLOSE) else {
            break;
        };
        rendered.push_str(&rest[..start]);
        let value = evaluator.evaluate(after_open[..length].trim())?;
        rendered.push_str(&display(&value));
        rest = &after_open[length + CLOSE.len()..];
    }
    rendered.push_str(rest);
    Ok(rendered)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn render(input: &str, template: &str) -> Result<String, ExpressionError> {
        let env_vars = BTreeMap::new();
        render_template(template, &Evaluator::new(input.as_bytes(), &env_vars))
    }

    #[test]
    fn replaces_placeholders() {
        let input = r#"[{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]"#;
        assert_eq!(
            render(input, "count={{ COUNT(id) }}, first={{FIRST(name)}}").unwrap(),
            "count=2, first=a"
        );
    }

    #[test]
    fn text_without_placeholders_is_unchanged() {
        assert_eq!(render("", "plain {text}").unwrap(), "plain {text}");
    }

    #[test]
    fn unclosed_placeholder_is_text() {
        assert_eq!(render(r#"{"a": 1}"#, "{{a}} and {{a").unwrap(), "1 and {{a");
    }

    #[test]
    fn tuple_renders_as_json_array() {
        assert_eq!(render(r#"[{"a": 1}, {"a": 2}]"#, "{{a}}").unwrap(), "[1,2]");
    }

    #[test]
    fn error_names_expression() {
        let error = render(r#"{"a": 1}"#, "x={{ b + 1 }}").unwrap_err();
        assert_eq!(error.expression, "b + 1");
    }
}
