//! Serde helpers for Go `[]byte` fields, which JSON carries as base64 strings or `null`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Deserializer, Serializer};

/// Serializes bytes as a standard base64 string.
pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&STANDARD.encode(bytes))
}

/// Deserializes a base64 string, treating `null` as empty bytes the way Go's nil slice does.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    let text: Option<String> = Option::deserialize(deserializer)?;
    match text {
        None => Ok(Vec::new()),
        Some(text) => STANDARD.decode(text.as_bytes()).map_err(|err| {
            serde::de::Error::custom(format!("invalid base64 in byte field: {err}"))
        }),
    }
}

/// The same encoding for an optional field that Ylem leaves `null` (the result's `input`).
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(
        bytes: &Option<Vec<u8>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(bytes) => super::serialize(bytes, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        let text: Option<String> = Option::deserialize(deserializer)?;
        text.map(|text| {
            STANDARD.decode(text.as_bytes()).map_err(|err| {
                serde::de::Error::custom(format!("invalid base64 in byte field: {err}"))
            })
        })
        .transpose()
    }
}
