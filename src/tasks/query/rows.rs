//! Conversion of result rows to JSON, keeping the select order of the columns.

use base64::Engine;
use serde_json::Value as Json;
use sqlx::postgres::{PgRow, PgValueFormat};
use sqlx::sqlite::SqliteRow;
use sqlx::{Column, Row, TypeInfo, ValueRef};

/// Result rows with their column names in select order.
pub struct Table {
    pub columns: Vec<String>,
    rows: Vec<Vec<Json>>,
}

impl Table {
    pub fn empty(columns: Vec<String>) -> Table {
        Table {
            columns,
            rows: Vec::new(),
        }
    }

    pub fn from_sqlite(rows: &[SqliteRow]) -> Result<Table, sqlx::Error> {
        Table::from_rows(rows, sqlite_cell)
    }

    pub fn from_postgres(rows: &[PgRow]) -> Result<Table, sqlx::Error> {
        Table::from_rows(rows, postgres_cell)
    }

    fn from_rows<R: Row>(
        rows: &[R],
        cell: fn(&R, usize) -> Result<Json, sqlx::Error>,
    ) -> Result<Table, sqlx::Error> {
        let columns: Vec<String> = rows
            .first()
            .map(|row| {
                row.columns()
                    .iter()
                    .map(|column| column.name().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        let mut converted = Vec::with_capacity(rows.len());
        for row in rows {
            let cells = (0..row.len())
                .map(|index| cell(row, index))
                .collect::<Result<_, _>>()?;
            converted.push(cells);
        }
        Ok(Table {
            columns,
            rows: converted,
        })
    }

    /// Writes the rows as a JSON array of objects. The keys are written in column order, which
    /// a `serde_json::Map` would sort.
    pub fn to_json(&self) -> Vec<u8> {
        let keys: Vec<String> = self
            .columns
            .iter()
            .map(|column| Json::String(column.clone()).to_string())
            .collect();
        let mut json = String::from("[");
        for (row_index, row) in self.rows.iter().enumerate() {
            if row_index > 0 {
                json.push(',');
            }
            json.push('{');
            for (cell_index, (key, cell)) in keys.iter().zip(row).enumerate() {
                if cell_index > 0 {
                    json.push(',');
                }
                json.push_str(key);
                json.push(':');
                json.push_str(&cell.to_string());
            }
            json.push('}');
        }
        json.push(']');
        json.into_bytes()
    }
}

fn base64_json(bytes: &[u8]) -> Json {
    Json::String(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn float_json(number: f64) -> Json {
    serde_json::Number::from_f64(number)
        .map(Json::Number)
        .unwrap_or_else(|| Json::String(number.to_string()))
}

/// Converts one SQLite value by its storage class. An integer in a column declared BOOLEAN
/// becomes a JSON boolean; dates are stored as text and stay text.
fn sqlite_cell(row: &SqliteRow, index: usize) -> Result<Json, sqlx::Error> {
    let raw = row.try_get_raw(index)?;
    if raw.is_null() {
        return Ok(Json::Null);
    }
    let storage_class = raw.type_info().name().to_owned();
    let declared = row.columns()[index].type_info().name().to_ascii_uppercase();

    let value = match storage_class.as_str() {
        "INTEGER" if declared == "BOOLEAN" => {
            Json::Bool(row.try_get_unchecked::<i64, _>(index)? != 0)
        }
        "INTEGER" | "NUMERIC" => Json::from(row.try_get_unchecked::<i64, _>(index)?),
        "BOOLEAN" => Json::Bool(row.try_get_unchecked::<bool, _>(index)?),
        "REAL" => float_json(row.try_get_unchecked::<f64, _>(index)?),
        "BLOB" => base64_json(&row.try_get_unchecked::<Vec<u8>, _>(index)?),
        _ => Json::String(row.try_get_unchecked::<String, _>(index)?),
    };
    Ok(value)
}

/// Converts one Postgres value from its text form by the column's type name.
fn postgres_cell(row: &PgRow, index: usize) -> Result<Json, sqlx::Error> {
    let raw = row.try_get_raw(index)?;
    if raw.is_null() {
        return Ok(Json::Null);
    }
    let type_name = raw.type_info().name().to_owned();
    if raw.format() != PgValueFormat::Text {
        return Err(decode_error(
            index,
            &type_name,
            "the value is not in text format",
        ));
    }
    let text = raw
        .as_str()
        .map_err(|error| decode_error(index, &type_name, &error.to_string()))?;
    Ok(postgres_text_to_json(&type_name, text))
}

fn decode_error(index: usize, type_name: &str, problem: &str) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: index.to_string(),
        source: format!("cannot read a {type_name} value: {problem}").into(),
    }
}

/// Maps the text form of a Postgres value to JSON. Integers, floats, booleans, JSON and bytea
/// are converted; numeric becomes a number when an f64 represents it exactly as written, and a
/// string otherwise. Everything else (dates, uuid, arrays, intervals) stays text.
pub fn postgres_text_to_json(type_name: &str, text: &str) -> Json {
    match type_name {
        "INT2" | "INT4" | "INT8" | "OID" => text
            .parse::<i64>()
            .map(Json::from)
            .unwrap_or_else(|_| Json::String(text.to_owned())),
        "FLOAT4" | "FLOAT8" => match text.parse::<f64>() {
            Ok(number) if number.is_finite() => float_json(number),
            _ => Json::String(text.to_owned()),
        },
        "NUMERIC" => numeric_to_json(text),
        "BOOL" => Json::Bool(text == "t"),
        "JSON" | "JSONB" => {
            serde_json::from_str(text).unwrap_or_else(|_| Json::String(text.to_owned()))
        }
        "BYTEA" => match decode_bytea_hex(text) {
            Some(bytes) => base64_json(&bytes),
            None => Json::String(text.to_owned()),
        },
        _ => Json::String(text.to_owned()),
    }
}

fn numeric_to_json(text: &str) -> Json {
    let Ok(number) = text.parse::<f64>() else {
        return Json::String(text.to_owned());
    };
    let digits = text.chars().filter(char::is_ascii_digit).count();
    // An f64 represents any decimal of up to 15 significant digits exactly.
    if number.is_finite() && digits <= 15 {
        return float_json(number);
    }
    Json::String(text.to_owned())
}

/// Decodes bytea's hex text form `\x0a1b…`.
fn decode_bytea_hex(text: &str) -> Option<Vec<u8>> {
    let hex = text.strip_prefix("\\x")?;
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|start| u8::from_str_radix(hex.get(start..start + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keeps_column_order() {
        let table = Table {
            columns: vec!["z".into(), "a".into()],
            rows: vec![
                vec![Json::from(1), Json::Null],
                vec![Json::from(2), Json::from("x")],
            ],
        };
        assert_eq!(
            String::from_utf8(table.to_json()).unwrap(),
            r#"[{"z":1,"a":null},{"z":2,"a":"x"}]"#
        );
    }

    #[test]
    fn empty_table_is_empty_array() {
        assert_eq!(Table::empty(vec!["a".into()]).to_json(), b"[]");
    }

    #[test]
    fn postgres_text_values() {
        assert_eq!(postgres_text_to_json("INT8", "42"), Json::from(42));
        assert_eq!(postgres_text_to_json("FLOAT8", "1.5"), Json::from(1.5));
        assert_eq!(postgres_text_to_json("FLOAT8", "NaN"), Json::from("NaN"));
        assert_eq!(postgres_text_to_json("BOOL", "t"), Json::Bool(true));
        assert_eq!(postgres_text_to_json("NUMERIC", "12.50"), Json::from(12.5));
        assert_eq!(
            postgres_text_to_json("NUMERIC", "12345678901234567890.5"),
            Json::from("12345678901234567890.5")
        );
        assert_eq!(
            postgres_text_to_json("JSONB", r#"{"a": [1]}"#),
            serde_json::json!({"a": [1]})
        );
        assert_eq!(
            postgres_text_to_json("BYTEA", "\\x0102ff"),
            Json::from("AQL/")
        );
        assert_eq!(
            postgres_text_to_json("DATE", "2024-01-31"),
            Json::from("2024-01-31")
        );
        assert_eq!(
            postgres_text_to_json("UUID", "0e1f7b2c-0000-4000-8000-000000000000"),
            Json::from("0e1f7b2c-0000-4000-8000-000000000000")
        );
    }
}
