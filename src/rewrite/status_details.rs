//! Names inside errors: `grpc-message` text and `grpc-status-details-bin` (a base64 `google.rpc.Status`
//! whose `details` are `Any`s such as `temporal.api.errordetails.v1.NamespaceNotFoundFailure`).
//! Translated upstream → client so that an error names the namespace the client knows.

use http::{HeaderMap, HeaderValue};

use super::plan::Plan;
use super::walker::{self, EditStats};
use super::{Direction, Rewriter};
use crate::grpc::status::percent_encode;
use crate::wire::{self, Fields, Splice, WireType};

const STATUS_MESSAGE: u32 = 2;
const STATUS_DETAILS: u32 = 3;
const ANY_TYPE_URL: u32 = 1;
const ANY_VALUE: u32 = 2;

/// Translates names in the status headers of a response's trailers (or trailers-only headers).
/// Anything that cannot be parsed is left as it is: an error report is never made worse.
pub(crate) fn translate_status(
    headers: &mut HeaderMap,
    rewriter: &Rewriter,
    client_namespace: Option<&str>,
    stats: &mut EditStats,
) {
    // Error text names namespaces and, for the call's namespace, search attributes ("invalid value
    // for search attribute OrderCustomer"): both are translated back, as whole words.
    let namespaces = rewriter.namespaces.get(Direction::ToClient);
    let attributes = client_namespace
        .and_then(|ns| rewriter.attributes_for(ns))
        .map(|m| m.get(Direction::ToClient));
    let names = |word: &str| {
        namespaces
            .get(word)
            .or_else(|| attributes.and_then(|m| m.get(word)))
            .map(String::as_str)
    };
    if let Some(message) = headers.get("grpc-message").and_then(|v| v.to_str().ok()) {
        let decoded = percent_decode(message);
        if let Some(new) = replace_names(&decoded, &names) {
            if let Ok(value) = HeaderValue::from_str(&percent_encode(&new)) {
                stats.namespaces += 1;
                headers.insert("grpc-message", value);
            }
        }
    }
    let Some(details) = headers
        .get("grpc-status-details-bin")
        .and_then(|v| base64_decode(v.as_bytes()))
    else {
        return;
    };
    let plan = rewriter.plan(Direction::ToClient);
    let editor = rewriter.editor(Direction::ToClient, client_namespace);
    let Some(new) = edit_status(&details, plan, &editor, &names, stats) else {
        return;
    };
    if let Ok(value) = HeaderValue::from_str(&base64_encode(&new)) {
        headers.insert("grpc-status-details-bin", value);
    }
}

/// Edits a serialized `google.rpc.Status`; `None` when unchanged or unparseable.
fn edit_status<'m>(
    status: &[u8],
    plan: &Plan,
    editor: &dyn walker::TextEditor,
    names: &dyn Fn(&str) -> Option<&'m str>,
    stats: &mut EditStats,
) -> Option<Vec<u8>> {
    let mut splices = Vec::new();
    for field in Fields::new(status, 0, status.len()) {
        let field = field.ok()?;
        if field.wire_type != WireType::Len {
            continue;
        }
        let value = &status[field.value_start..field.end];
        match field.number {
            STATUS_MESSAGE => {
                if let Some(new) = std::str::from_utf8(value)
                    .ok()
                    .and_then(|t| replace_names(t, names))
                {
                    splices.push(Splice::len_value(&field, new.as_bytes()));
                }
            }
            STATUS_DETAILS => {
                if let Some(new) = edit_any(value, plan, editor, stats) {
                    splices.push(Splice::len_value(&field, &new));
                }
            }
            _ => {}
        }
    }
    (!splices.is_empty()).then(|| wire::apply(status, splices))
}

/// Edits a serialized `google.protobuf.Any` whose type the plan knows.
fn edit_any(
    any: &[u8],
    plan: &Plan,
    editor: &dyn walker::TextEditor,
    stats: &mut EditStats,
) -> Option<Vec<u8>> {
    let mut type_name = None;
    let mut value = None;
    for field in Fields::new(any, 0, any.len()) {
        let field = field.ok()?;
        match (field.number, field.wire_type) {
            (ANY_TYPE_URL, WireType::Len) => {
                let url = std::str::from_utf8(&any[field.value_start..field.end]).ok()?;
                type_name = Some(url.rsplit('/').next().unwrap_or(url));
            }
            (ANY_VALUE, WireType::Len) => value = Some(field),
            _ => {}
        }
    }
    let (message, field) = (plan.message_id(type_name?)?, value?);
    let body = bytes::Bytes::copy_from_slice(&any[field.value_start..field.end]);
    let edited = walker::edit_message(plan, message, &body, editor, stats).ok()?;
    if edited == body {
        return None;
    }
    Some(wire::apply(any, vec![Splice::len_value(&field, &edited)]))
}

/// Replaces whole words of `text` that `names` maps. A word is a run of letters, digits, `-`, `_`
/// and `.` (the characters of Temporal namespace names), so `orders` never matches inside `orders-eu`.
pub(crate) fn replace_names<'m>(
    text: &str,
    names: &dyn Fn(&str) -> Option<&'m str>,
) -> Option<String> {
    let is_word = |c: char| c.is_alphanumeric() || c == '-' || c == '_' || c == '.';
    let mut out = String::new();
    let mut last = 0;
    let mut changed = false;
    let mut chars = text.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if !is_word(c) {
            continue;
        }
        let mut end = start + c.len_utf8();
        while let Some(&(i, c)) = chars.peek() {
            if !is_word(c) {
                break;
            }
            end = i + c.len_utf8();
            chars.next();
        }
        // Sentence punctuation may end a word: try the word without trailing dots too.
        let word = &text[start..end];
        let trimmed = word.trim_end_matches('.');
        if let Some(new) = names(word)
            .map(|n| (n, word.len()))
            .or_else(|| names(trimmed).map(|n| (n, trimmed.len())))
        {
            out.push_str(&text[last..start]);
            out.push_str(new.0);
            last = start + new.1;
            changed = true;
        }
    }
    if !changed {
        return None;
    }
    out.push_str(&text[last..]);
    Some(out)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64, padded or not (gRPC accepts both for `-bin` headers).
pub fn base64_decode(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for &c in input.iter().filter(|c| **c != b'=') {
        let v = BASE64.iter().position(|b| *b == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Standard base64 with padding.
pub fn base64_encode(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(BASE64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn base64_round_trip() {
        for data in [&b""[..], b"a", b"ab", b"abc", b"abcd", &[0, 255, 17, 3, 99]] {
            let text = base64_encode(data);
            assert_eq!(base64_decode(text.as_bytes()).unwrap(), data);
            assert_eq!(
                base64_decode(text.trim_end_matches('=').as_bytes()).unwrap(),
                data
            );
        }
        assert_eq!(base64_encode(b"hello"), "aGVsbG8=");
        assert!(base64_decode(b"a*b").is_none());
    }

    #[test]
    fn whole_words_only() {
        let map = |w: &str| (w == "orders-prod").then_some("orders");
        assert_eq!(
            replace_names("Namespace orders-prod is not found.", &map).unwrap(),
            "Namespace orders is not found."
        );
        assert_eq!(
            replace_names("namespace: orders-prod.", &map).unwrap(),
            "namespace: orders."
        );
        assert!(replace_names("orders-prod-eu and xorders-prod", &map).is_none());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%25c%"), "a b%c%");
        assert_eq!(percent_decode("%C3%BC"), "ü");
        assert_eq!(percent_decode("%é%"), "%é%");
    }
}
