//! The same edits done the conventional way — decode into a `DynamicMessage`, walk it by reflection,
//! re-encode — as temporalio/s2s-proxy does with generated structs. It is the oracle of the walker's
//! tests (the walker's output, decoded, must equal this) and the baseline of the rewrite benchmark.

use prost::Message;
use prost_reflect::{DynamicMessage, Kind, MapKey, ReflectMessage, Value};

use super::plan::{classify_string, Targets, TextKind, DATA_BLOB, HISTORY, HISTORY_BLOB_FIELDS};
use super::walker::{EditError, EditStats, TextEditor};

const ENCODING_PROTO3: i32 = 1;

/// Decodes `body` as `message_name`, edits it in place, re-encodes it.
pub fn edit_bytes(
    pool: &prost_reflect::DescriptorPool,
    message_name: &str,
    body: &[u8],
    targets: Targets,
    editor: &dyn TextEditor,
    stats: &mut EditStats,
) -> Result<Vec<u8>, String> {
    let descriptor = pool
        .get_message_by_name(message_name)
        .ok_or("unknown message")?;
    let mut message = DynamicMessage::decode(descriptor, body).map_err(|e| e.to_string())?;
    edit(&mut message, targets, editor, stats).map_err(|e| e.to_string())?;
    Ok(message.encode_to_vec())
}

/// Edits a decoded message in place with the walker's classification rules.
pub fn edit(
    message: &mut DynamicMessage,
    targets: Targets,
    editor: &dyn TextEditor,
    stats: &mut EditStats,
) -> Result<(), EditError> {
    let descriptor = message.descriptor();
    for field in descriptor.fields() {
        if !message.has_field(&field) {
            continue;
        }
        let history_blob = matches!(field.kind(), Kind::Message(ref m) if m.full_name() == DATA_BLOB)
            && HISTORY_BLOB_FIELDS.contains(&field.name());
        let value = message.get_field_mut(&field);
        match value {
            Value::String(text) => {
                let kind = classify_string(&descriptor, &field);
                edit_text(text, kind, targets, editor, stats)?;
            }
            Value::Message(child) if history_blob => edit_blob(child, targets, editor, stats)?,
            Value::Message(child) => edit(child, targets, editor, stats)?,
            Value::List(items) => {
                for item in items.iter_mut() {
                    match item {
                        Value::String(text) => {
                            let kind = classify_string(&descriptor, &field);
                            edit_text(text, kind, targets, editor, stats)?;
                        }
                        Value::Message(child) if history_blob => {
                            edit_blob(child, targets, editor, stats)?
                        }
                        Value::Message(child) => edit(child, targets, editor, stats)?,
                        _ => {}
                    }
                }
            }
            Value::Map(map) => {
                let Kind::Message(entry) = field.kind() else {
                    continue;
                };
                let (Some(key_field), Some(value_field)) = (entry.get_field(1), entry.get_field(2))
                else {
                    continue;
                };
                let key_kind = classify_string(&entry, &key_field);
                let value_kind = classify_string(&entry, &value_field);
                let old = std::mem::take(map);
                for (key, mut value) in old {
                    let key = match key {
                        MapKey::String(mut text) => {
                            edit_text(&mut text, key_kind, targets, editor, stats)?;
                            MapKey::String(text)
                        }
                        other => other,
                    };
                    match &mut value {
                        Value::String(text) => edit_text(text, value_kind, targets, editor, stats)?,
                        Value::Message(child) => edit(child, targets, editor, stats)?,
                        _ => {}
                    }
                    map.insert(key, value);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn edit_text(
    text: &mut String,
    kind: TextKind,
    targets: Targets,
    editor: &dyn TextEditor,
    stats: &mut EditStats,
) -> Result<(), EditError> {
    let wanted = match kind {
        TextKind::Namespace => targets.namespaces,
        TextKind::SearchAttribute | TextKind::Query => targets.search_attributes,
        TextKind::Plain => false,
    };
    if !wanted {
        return Ok(());
    }
    if let Some(new) = editor.edit(kind, text.as_bytes(), stats)? {
        *text = String::from_utf8_lossy(&new).into_owned();
    }
    Ok(())
}

/// A history `DataBlob`: decode its data as a `History`, edit, re-encode.
fn edit_blob(
    blob: &mut DynamicMessage,
    targets: Targets,
    editor: &dyn TextEditor,
    stats: &mut EditStats,
) -> Result<(), EditError> {
    let encoding = blob
        .get_field_by_number(1)
        .and_then(|v| v.as_enum_number())
        .unwrap_or(0);
    if encoding != ENCODING_PROTO3 {
        return Ok(());
    }
    let Some(data) = blob
        .get_field_by_number(2)
        .and_then(|v| v.as_bytes().cloned())
    else {
        return Ok(());
    };
    let pool = blob.descriptor().parent_pool().clone();
    let Some(history) = pool.get_message_by_name(HISTORY) else {
        return Ok(());
    };
    let Ok(mut history) = DynamicMessage::decode(history, data) else {
        return Ok(());
    };
    edit(&mut history, targets, editor, stats)?;
    blob.set_field_by_number(2, Value::Bytes(history.encode_to_vec().into()));
    Ok(())
}
