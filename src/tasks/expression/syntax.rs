//! Rewrites Ylem expression syntax into the syntax `evalexpr` parses.

/// Rewrites the words `AND`, `OR` and `NOT` (any case) outside string literals into `&&`, `||`
/// and `!`, and single-quoted strings into double-quoted ones. A backslash escapes the quote
/// character inside either kind of string. Returns a message when a string is not closed.
pub fn normalize_syntax(expression: &str) -> Result<String, String> {
    let mut normalized = String::with_capacity(expression.len());
    let mut word = String::new();
    let mut characters = expression.chars();

    while let Some(character) = characters.next() {
        if is_word_character(character) {
            word.push(character);
            continue;
        }
        push_word(&mut normalized, &mut word);
        match character {
            '"' => copy_string(&mut characters, '"', &mut normalized)?,
            '\'' => copy_string(&mut characters, '\'', &mut normalized)?,
            other => normalized.push(other),
        }
    }
    push_word(&mut normalized, &mut word);
    Ok(normalized)
}

fn is_word_character(character: char) -> bool {
    character.is_alphanumeric() || character == '_' || character == '.'
}

fn push_word(normalized: &mut String, word: &mut String) {
    let replacement = match word.to_ascii_uppercase().as_str() {
        "AND" => "&&",
        "OR" => "||",
        "NOT" => "!",
        _ => word.as_str(),
    };
    normalized.push_str(replacement);
    word.clear();
}

/// Copies a string literal that started with `quote` as a double-quoted `evalexpr` string.
fn copy_string(
    characters: &mut std::str::Chars<'_>,
    quote: char,
    normalized: &mut String,
) -> Result<(), String> {
    normalized.push('"');
    while let Some(character) = characters.next() {
        match character {
            '\\' => match characters.next() {
                Some(escaped) if escaped == quote || escaped == '\\' => {
                    push_escaped(normalized, escaped)
                }
                Some(other) => {
                    normalized.push_str("\\\\");
                    push_escaped(normalized, other);
                }
                None => {
                    return Err("the expression ends inside a string after a backslash".to_owned())
                }
            },
            closing if closing == quote => {
                normalized.push('"');
                return Ok(());
            }
            other => push_escaped(normalized, other),
        }
    }
    Err(format!("a string opened with {quote} is not closed"))
}

fn push_escaped(normalized: &mut String, character: char) {
    if character == '"' || character == '\\' {
        normalized.push('\\');
    }
    normalized.push(character);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_become_operators() {
        assert_eq!(
            normalize_syntax("a AND b or NOT c").unwrap(),
            "a && b || ! c"
        );
    }

    #[test]
    fn words_inside_strings_are_kept() {
        assert_eq!(
            normalize_syntax(r#"s == "A AND B""#).unwrap(),
            r#"s == "A AND B""#
        );
        assert_eq!(
            normalize_syntax("s == 'x OR y'").unwrap(),
            r#"s == "x OR y""#
        );
    }

    #[test]
    fn identifiers_containing_words_are_kept() {
        assert_eq!(
            normalize_syntax("ORDER_count > 1 && android").unwrap(),
            "ORDER_count > 1 && android"
        );
    }

    #[test]
    fn single_quoted_string_escapes() {
        assert_eq!(
            normalize_syntax(r#"'say "hi"'"#).unwrap(),
            r#""say \"hi\"""#
        );
        assert_eq!(normalize_syntax(r"'it\'s'").unwrap(), r#""it's""#);
    }

    #[test]
    fn unclosed_string_is_error() {
        assert!(normalize_syntax("'abc").unwrap_err().contains("not closed"));
    }
}
