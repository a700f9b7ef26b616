//! Strict decoding of one YAML mapping into a struct, reporting every problem.
//!
//! serde stops at the first error of a struct, so one run would show only one mistake per
//! task. [`decode_mapping`] instead checks each key on its own: a key the struct does not
//! declare is reported as unknown, and a key whose value has the wrong type is reported
//! under its own path. Structs decoded this way give every field a default, so that only
//! unknown keys and wrong types are serde errors and missing fields are checked afterwards
//! with messages that name the value to add.

use std::collections::BTreeSet;

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde_yaml_ng::{Mapping, Value};

use super::errors::ProblemList;

/// A struct decoded from the keys of a mapping that passed their checks.
pub(crate) struct Decoded<T> {
    /// The struct, with defaults in place of rejected keys.
    pub value: T,
    /// Keys reported as unknown or of the wrong type. Checks of these keys are skipped,
    /// so each key is reported once.
    pub rejected_keys: BTreeSet<String>,
    /// Whether every key was accepted.
    pub complete: bool,
}

impl<T> Decoded<T> {
    pub(crate) fn is_rejected(&self, key: &str) -> bool {
        self.rejected_keys.contains(key)
    }
}

/// Decodes `mapping` into `T`, whose fields must all have defaults, pushing a problem for
/// each unknown key and each value of the wrong type. The caller handles the keys in
/// `also_allowed` itself, so they are skipped here but named in the list of valid fields.
pub(crate) fn decode_mapping<T: DeserializeOwned + Default>(
    mapping: &Mapping,
    path: &str,
    also_allowed: &[&str],
    what: &str,
    problems: &mut ProblemList,
) -> Decoded<T> {
    let known_fields = struct_fields::<T>();
    let mut accepted = Mapping::new();
    let mut rejected_keys = BTreeSet::new();
    let mut complete = true;

    for (key, value) in mapping {
        let Some(key_text) = key.as_str() else {
            problems.push(
                path,
                format!(
                    "invalid key, found {}: keys must be strings",
                    describe_value(key)
                ),
            );
            complete = false;
            continue;
        };
        if also_allowed.contains(&key_text) {
            continue;
        }
        let field_path = join_path(path, key_text);
        if !known_fields.contains(&key_text) {
            let valid_fields = also_allowed
                .iter()
                .chain(known_fields)
                .copied()
                .collect::<Vec<_>>()
                .join(", ");
            problems.push(
                field_path,
                format!("unknown field; valid fields of {what} are: {valid_fields}"),
            );
            rejected_keys.insert(key_text.to_owned());
            continue;
        }

        // A mapping of this one key decodes unless the value has the wrong type, because
        // every other field has a default.
        let mut single_key = Mapping::new();
        single_key.insert(key.clone(), value.clone());
        if let Err(error) = serde_yaml_ng::from_value::<T>(Value::Mapping(single_key)) {
            problems.push(field_path, strip_field_prefix(&error.to_string(), key_text));
            rejected_keys.insert(key_text.to_owned());
            continue;
        }
        accepted.insert(key.clone(), value.clone());
    }

    let value = match serde_yaml_ng::from_value::<T>(Value::Mapping(accepted)) {
        Ok(value) => value,
        Err(error) => {
            // Unreachable while each key decodes on its own, but reported rather than lost.
            problems.push(path, error.to_string());
            complete = false;
            T::default()
        }
    };
    Decoded {
        value,
        complete: complete && rejected_keys.is_empty(),
        rejected_keys,
    }
}

/// Joins a field path and a key: `tasks[0]` and `sql` give `tasks[0].sql`.
pub(crate) fn join_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Names the YAML type of `value` for messages.
pub(crate) fn describe_value(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

fn strip_field_prefix(message: &str, key: &str) -> String {
    message
        .strip_prefix(&format!("{key}: "))
        .unwrap_or(message)
        .to_owned()
}

/// Returns the field names that `T`'s derived `Deserialize` declares, by asking it to
/// deserialize from a deserializer that records the names and then fails.
pub(crate) fn struct_fields<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldNameRecorder {
        fields: &mut fields,
    });
    fields
}

struct FieldNameRecorder<'a> {
    fields: &'a mut &'static [&'static str],
}

impl<'de> Deserializer<'de> for FieldNameRecorder<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("only structs declare field names"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.fields = fields;
        Err(de::Error::custom("field names recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Sample {
        text: String,
        count: Option<u64>,
    }

    fn mapping(yaml: &str) -> Mapping {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn struct_fields_lists_declared_names() {
        assert_eq!(struct_fields::<Sample>(), &["text", "count"]);
    }

    #[test]
    fn decode_reports_every_problem() {
        let mut problems = ProblemList::new("sample.yaml");
        let input = mapping("text: hi\ncount: many\nextra: 1\nname: kept\n");

        let decoded =
            decode_mapping::<Sample>(&input, "item", &["name"], "a sample", &mut problems);

        assert!(!decoded.complete);
        assert!(decoded.is_rejected("count"));
        assert!(decoded.is_rejected("extra"));
        assert_eq!(decoded.value.text, "hi");
        let problems = problems.into_problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0].field, "item.count");
        assert!(
            problems[0].message.contains("invalid type"),
            "{}",
            problems[0].message
        );
        assert_eq!(problems[1].field, "item.extra");
        assert!(
            problems[1].message.contains("name, text, count"),
            "{}",
            problems[1].message
        );
    }

    #[test]
    fn decode_accepts_valid_mapping() {
        let mut problems = ProblemList::new("sample.yaml");
        let input = mapping("text: hi\ncount: 3\nname: kept\n");

        let decoded =
            decode_mapping::<Sample>(&input, "item", &["name"], "a sample", &mut problems);

        assert!(problems.is_empty());
        let expected = Sample {
            text: "hi".to_owned(),
            count: Some(3),
        };
        assert!(decoded.complete);
        assert_eq!(decoded.value, expected);
    }
}
