//! Reading the JSON that the `temporal` CLI (`-o json`) and the test scripts print, with
//! `serde_json`. Objects compare ignoring key order (serde_json's map is sorted), which is what
//! comparing the CLI's output direct and through Strait needs.

use base64::Engine as _;
pub use serde_json::Value;

/// Parses one JSON document (surrounding whitespace allowed, nothing after it).
pub fn parse(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))
}

/// A number, or a numeric string: the CLI prints int64s as strings.
pub fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Short lookups by JSON pointer (`/a/0/b`, RFC 6901) for assertions.
pub trait JsonExt {
    /// The string at `pointer`, if there is one.
    fn str_at(&self, pointer: &str) -> Option<&str>;
    /// The number (or numeric string) at `pointer`.
    fn number_at(&self, pointer: &str) -> Option<f64>;
    /// The array at `pointer`, empty if there is none.
    fn array_at(&self, pointer: &str) -> &[Value];
}

impl JsonExt for Value {
    fn str_at(&self, pointer: &str) -> Option<&str> {
        self.pointer(pointer).and_then(Value::as_str)
    }

    fn number_at(&self, pointer: &str) -> Option<f64> {
        self.pointer(pointer).and_then(number)
    }

    fn array_at(&self, pointer: &str) -> &[Value] {
        self.pointer(pointer)
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }
}

/// The text in a CLI-rendered payload (`{"metadata": .., "data": base64}`).
pub fn payload_text(payload: &Value) -> String {
    let data = payload
        .str_at("/data")
        .unwrap_or_else(|| panic!("payload without data: {payload}"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .unwrap_or_else(|e| panic!("payload data is not base64 ({e}): {payload}"));
    String::from_utf8(bytes)
        .unwrap_or_else(|e| panic!("payload data is not UTF-8 ({e}): {payload}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cli_output_ignoring_key_order() {
        let a = parse(r#"{"a": [1, "2", "x\"\u00e9\ud83d\ude00"], "b": {"c": null, "d": true}}"#)
            .unwrap();
        let b = parse(r#"{"b":{"d":true,"c":null},"a":[1,"2","x\"é😀"]}"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.str_at("/a/2"), Some("x\"é😀"));
        assert_eq!(a.number_at("/a/0"), Some(1.0));
        assert_eq!(a.number_at("/a/1"), Some(2.0));
        assert_eq!(a.array_at("/a").len(), 3);
        assert!(a.array_at("/b").is_empty());
        assert!(parse("{\"a\":1} x").is_err());
        assert!(parse("[1,]").is_err());
    }

    #[test]
    fn decodes_payload_text() {
        let payload =
            parse(r#"{"metadata": {"encoding": "anNvbi9wbGFpbg=="}, "data": "ImhpIg=="}"#).unwrap();
        assert_eq!(payload_text(&payload), "\"hi\"");
    }
}
