//! Reading internally tagged JSON objects (`{"kind": "...", ...}`) without serde's buffering.
//!
//! serde's derived `#[serde(tag = "kind")]` deserializer buffers the object and cannot read
//! numbers back when `serde_json/arbitrary_precision` is on, which any crate in the build can turn
//! on (the HIL harness's `defmt-decoder` does). The types here read a [`serde_json::Value`]
//! first and dispatch on the tag themselves, so configuration files read the same in every build.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Splits `value` into its `"kind"` tag and the remaining fields.
///
/// # Errors
/// A message when `value` is not an object or has no string `"kind"`.
pub(crate) fn split_kind(value: Value) -> Result<(String, Value), String> {
    let Value::Object(mut fields) = value else {
        return Err(format!("expected an object with a \"kind\", got {value}"));
    };
    match fields.remove("kind") {
        Some(Value::String(kind)) => Ok((kind, Value::Object(fields))),
        Some(other) => Err(format!("\"kind\" must be a string, got {other}")),
        None => Err("missing field \"kind\"".to_string()),
    }
}

/// Reads the fields left after [`split_kind`] as `T`.
///
/// # Errors
/// serde's message, prefixed with the tag, when the fields do not form a `T`.
pub(crate) fn fields<T: DeserializeOwned>(kind: &str, rest: Value) -> Result<T, String> {
    serde_json::from_value(rest).map_err(|e| format!("{kind}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_the_tag_and_explains_bad_objects() {
        let (kind, rest) = split_kind(serde_json::json!({"kind": "a", "x": 1})).unwrap();
        assert_eq!(kind, "a");
        assert_eq!(rest, serde_json::json!({"x": 1}));
        assert!(split_kind(serde_json::json!([1])).is_err());
        assert!(split_kind(serde_json::json!({"kind": 3})).is_err());
        assert!(split_kind(serde_json::json!({"x": 1}))
            .unwrap_err()
            .contains("kind"));
    }
}
