//! `encode_to`: encodes an array of row objects as CSV or XML.

use serde_json::Value as Json;

use super::transformer_failure;
use crate::messages::{ErrorCode, Meta};
use crate::tasks::{json_type_name, TaskFailure};

type Row = serde_json::Map<String, Json>;

/// Encodes the input rows in `encode_format` (`CSV` or `XML`, any case). Columns follow
/// `meta.SqlQueryColumnOrder` when it is set, else the key order of the input rows.
pub fn encode_rows(encode_format: &str, input: &[u8], meta: &Meta) -> Result<Vec<u8>, TaskFailure> {
    let format = encode_format.to_ascii_uppercase();
    if format != "CSV" && format != "XML" {
        return Err(TaskFailure::new(
            ErrorCode::BadRequest,
            format!("encode_format {encode_format:?} is not supported; use CSV or XML"),
        ));
    }

    let rows = parse_rows(input)?;
    let columns = match &meta.sql_query_column_order {
        Some(order) if !order.is_empty() => order.clone(),
        _ => columns_in_input_order(input),
    };
    if format == "CSV" {
        encode_csv(&rows, &columns)
    } else {
        Ok(encode_xml(&rows, &columns).into_bytes())
    }
}

fn parse_rows(input: &[u8]) -> Result<Vec<Row>, TaskFailure> {
    let parsed: Json = serde_json::from_slice(input).map_err(|error| {
        transformer_failure(format!(
            "encode_to needs a JSON array of objects, but the input is not JSON: {error}"
        ))
    })?;
    let items = match parsed {
        Json::Array(items) => items,
        Json::Object(row) => vec![Json::Object(row)],
        other => {
            return Err(transformer_failure(format!(
                "encode_to needs a JSON array of objects, but the input is {}",
                json_type_name(&other)
            )));
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| match item {
            Json::Object(row) => Ok(row),
            other => Err(transformer_failure(format!(
                "encode_to needs a JSON array of objects, but element {index} is {}",
                json_type_name(&other)
            ))),
        })
        .collect()
}

/// Column names in the order they first appear in the input text. `serde_json` sorts object
/// keys, so the order is read with gjson, which walks the text.
fn columns_in_input_order(input: &[u8]) -> Vec<String> {
    let Ok(text) = std::str::from_utf8(input) else {
        return Vec::new();
    };
    let document = gjson::parse(text);
    let rows = match document.kind() {
        gjson::Kind::Array => document.array(),
        _ => vec![document],
    };
    let mut columns: Vec<String> = Vec::new();
    for row in &rows {
        row.each(|key, _| {
            let name = key.str().to_owned();
            if !columns.contains(&name) {
                columns.push(name);
            }
            true
        });
    }
    columns
}

/// Formats a cell: strings as they are, `null` as nothing, anything else as JSON.
fn cell_text(value: Option<&Json>) -> String {
    match value {
        None | Some(Json::Null) => String::new(),
        Some(Json::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    }
}

fn encode_csv(rows: &[Row], columns: &[String]) -> Result<Vec<u8>, TaskFailure> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let write_failure = |error: csv::Error| {
        TaskFailure::new(ErrorCode::Internal, format!("failed to write CSV: {error}"))
    };

    writer.write_record(columns).map_err(write_failure)?;
    for row in rows {
        let record: Vec<String> = columns
            .iter()
            .map(|column| cell_text(row.get(column)))
            .collect();
        writer.write_record(&record).map_err(write_failure)?;
    }
    writer.into_inner().map_err(|error| {
        TaskFailure::new(ErrorCode::Internal, format!("failed to write CSV: {error}"))
    })
}

/// Encodes rows as `<rows><row><column>value</column>…</row>…</rows>`. A column name that is not
/// a valid XML name has its invalid characters replaced by `_`.
fn encode_xml(rows: &[Row], columns: &[String]) -> String {
    let element_names: Vec<String> = columns
        .iter()
        .map(|column| xml_element_name(column))
        .collect();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<rows>");
    for row in rows {
        xml.push_str("<row>");
        for (column, element) in columns.iter().zip(&element_names) {
            let text = escape_xml(&cell_text(row.get(column)));
            xml.push_str(&format!("<{element}>{text}</{element}>"));
        }
        xml.push_str("</row>");
    }
    xml.push_str("</rows>\n");
    xml
}

fn xml_element_name(column: &str) -> String {
    let mut name: String = column
        .chars()
        .map(|character| {
            if character.is_alphanumeric() || matches!(character, '_' | '-' | '.') {
                character
            } else {
                '_'
            }
        })
        .collect();
    let starts_validly = name
        .chars()
        .next()
        .is_some_and(|first| first.is_alphabetic() || first == '_');
    if !starts_validly || name.to_ascii_lowercase().starts_with("xml") {
        name.insert(0, '_');
    }
    name
}

fn escape_xml(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            other => escaped.push(other),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(format: &str, input: &str, order: Option<&[&str]>) -> Result<String, TaskFailure> {
        let meta = Meta {
            sql_query_column_order: order
                .map(|names| names.iter().map(|name| name.to_string()).collect()),
            ..Meta::default()
        };
        encode_rows(format, input.as_bytes(), &meta).map(|bytes| String::from_utf8(bytes).unwrap())
    }

    #[test]
    fn csv_follows_input_key_order_and_quotes() {
        let input = r#"[{"z": "a,b", "a": 1}, {"z": "say \"hi\"", "a": null}]"#;
        let csv = encode("csv", input, None).unwrap();
        assert_eq!(csv, "z,a\n\"a,b\",1\n\"say \"\"hi\"\"\",\n");
    }

    #[test]
    fn csv_uses_meta_column_order() {
        let csv = encode("CSV", r#"[{"a": 1, "b": 2}]"#, Some(&["b", "a"])).unwrap();
        assert_eq!(csv, "b,a\n2,1\n");
    }

    #[test]
    fn xml_escapes_text_and_names() {
        let xml = encode(
            "XML",
            r#"[{"first name": "<Tom & Jerry>", "1st": true}]"#,
            None,
        )
        .unwrap();
        assert_eq!(
            xml,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<rows><row><first_name>&lt;Tom &amp; Jerry&gt;</first_name><_1st>true</_1st></row></rows>\n"
        );
    }

    #[test]
    fn scalar_element_fails() {
        let failure = encode("CSV", r#"[{"a": 1}, 2]"#, None).unwrap_err();
        assert_eq!(failure.code, ErrorCode::TransformerFailed);
        assert!(
            failure.message.contains("element 1 is a number"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn unknown_format_is_bad_request() {
        assert_eq!(
            encode("YAML", "[]", None).unwrap_err().code,
            ErrorCode::BadRequest
        );
    }
}
