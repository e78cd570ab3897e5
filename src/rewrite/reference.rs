//! The same edits done the conventional way — decode into a `DynamicMessage`, walk it by reflection,
//! re-encode — as temporalio/s2s-proxy does with generated structs. It is the oracle of the walker's
//! tests (the walker's output, decoded, must equal this) and the baseline of the rewrite benchmark.

use prost::Message;
use prost_reflect::{DynamicMessage, Kind, MapKey, ReflectMessage, Value};

use super::plan::{Targets, TextKind, DATA_BLOB, HIDING_ELEMENTS, HISTORY, HISTORY_BLOB_FIELDS};
use super::walker::{EditError, EditStats, TextEdit, TextEditor};
use crate::classify::classify_string;

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
pub(crate) fn edit(
    message: &mut DynamicMessage,
    targets: Targets,
    editor: &dyn TextEditor,
    stats: &mut EditStats,
) -> Result<(), EditError> {
    // Hidden names outside any element that could be dropped are kept, as by the walker.
    edit_inner(message, targets, editor, stats).map(|_| ())
}

/// Kinds of hidden value found in a message and not yet consumed by an enclosing element that is
/// dropped for them (the walker's `TextEdit::Hide`).
#[derive(Debug, Clone, Copy, Default)]
struct Hidden {
    namespace: bool,
    search_attribute: bool,
}

impl Hidden {
    fn of(kind: TextKind) -> Hidden {
        Hidden {
            namespace: kind == TextKind::Namespace,
            search_attribute: kind == TextKind::SearchAttribute,
        }
    }

    fn add(&mut self, other: Hidden) {
        self.namespace |= other.namespace;
        self.search_attribute |= other.search_attribute;
    }

    /// Consumes the flag of `kind`: whether an element hidden by `kind` is dropped.
    fn take(&mut self, kind: Option<TextKind>) -> bool {
        match kind {
            Some(TextKind::Namespace) => std::mem::take(&mut self.namespace),
            Some(TextKind::SearchAttribute) => std::mem::take(&mut self.search_attribute),
            _ => false,
        }
    }
}

/// What hides an element of a repeated or map field whose element type is `child` (the plan's
/// rule, restated by reflection).
fn hidden_by(
    field: &prost_reflect::FieldDescriptor,
    child: &prost_reflect::MessageDescriptor,
    targets: Targets,
) -> Option<TextKind> {
    if !field.is_list() && !field.is_map() {
        return None;
    }
    if child.is_map_entry() {
        let attribute = child
            .fields()
            .any(|f| classify_string(child, &f) == TextKind::SearchAttribute);
        return (targets.search_attributes && attribute).then_some(TextKind::SearchAttribute);
    }
    (targets.namespaces && HIDING_ELEMENTS.contains(&child.full_name()))
        .then_some(TextKind::Namespace)
}

fn edit_inner(
    message: &mut DynamicMessage,
    targets: Targets,
    editor: &dyn TextEditor,
    stats: &mut EditStats,
) -> Result<Hidden, EditError> {
    let descriptor = message.descriptor();
    let mut hidden = Hidden::default();
    for field in descriptor.fields() {
        if !message.has_field(&field) {
            continue;
        }
        let history_blob = matches!(field.kind(), Kind::Message(ref m) if m.full_name() == DATA_BLOB)
            && HISTORY_BLOB_FIELDS.contains(&field.name());
        let element_kind = match field.kind() {
            Kind::Message(ref child) => hidden_by(&field, child, targets),
            _ => None,
        };
        let value = message.get_field_mut(&field);
        match value {
            Value::String(text) => {
                let kind = classify_string(&descriptor, &field);
                if edit_text(text, kind, targets, editor, stats)? {
                    hidden.add(Hidden::of(kind));
                }
            }
            Value::Message(child) if history_blob => {
                hidden.add(edit_blob(child, targets, editor, stats)?)
            }
            Value::Message(child) => hidden.add(edit_inner(child, targets, editor, stats)?),
            Value::List(items) => {
                let old = std::mem::take(items);
                for mut item in old {
                    let keep = match &mut item {
                        // A hidden element of a repeated string is dropped.
                        Value::String(text) => {
                            let kind = classify_string(&descriptor, &field);
                            !edit_text(text, kind, targets, editor, stats)?
                        }
                        Value::Message(child) => {
                            let mut inner = if history_blob {
                                edit_blob(child, targets, editor, stats)?
                            } else {
                                edit_inner(child, targets, editor, stats)?
                            };
                            let dropped = inner.take(element_kind);
                            hidden.add(inner);
                            !dropped
                        }
                        _ => true,
                    };
                    if keep {
                        items.push(item);
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
                    let mut inner = Hidden::default();
                    let key = match key {
                        MapKey::String(mut text) => {
                            if edit_text(&mut text, key_kind, targets, editor, stats)? {
                                inner.add(Hidden::of(key_kind));
                            }
                            MapKey::String(text)
                        }
                        other => other,
                    };
                    let value_hidden = match &mut value {
                        Value::String(text) => edit_text(text, value_kind, targets, editor, stats)?
                            .then(|| Hidden::of(value_kind)),
                        Value::Message(child) => Some(edit_inner(child, targets, editor, stats)?),
                        _ => None,
                    };
                    inner.add(value_hidden.unwrap_or_default());
                    let dropped = inner.take(element_kind);
                    hidden.add(inner);
                    if !dropped {
                        map.insert(key, value);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(hidden)
}

/// Edits one string; returns whether the editor hid it.
fn edit_text(
    text: &mut String,
    kind: TextKind,
    targets: Targets,
    editor: &dyn TextEditor,
    stats: &mut EditStats,
) -> Result<bool, EditError> {
    let wanted = match kind {
        TextKind::Namespace => targets.namespaces,
        TextKind::SearchAttribute | TextKind::Query => targets.search_attributes,
        TextKind::Plain => false,
    };
    if !wanted {
        return Ok(false);
    }
    match editor.edit(kind, text.as_bytes(), stats)? {
        TextEdit::Keep => Ok(false),
        TextEdit::Replace(new) => {
            *text = String::from_utf8_lossy(&new).into_owned();
            Ok(false)
        }
        TextEdit::Hide => Ok(true),
    }
}

/// A history `DataBlob`: decode its data as a `History`, edit, re-encode.
fn edit_blob(
    blob: &mut DynamicMessage,
    targets: Targets,
    editor: &dyn TextEditor,
    stats: &mut EditStats,
) -> Result<Hidden, EditError> {
    let encoding = blob
        .get_field_by_number(1)
        .and_then(|v| v.as_enum_number())
        .unwrap_or(0);
    if encoding != ENCODING_PROTO3 {
        return Ok(Hidden::default());
    }
    let Some(data) = blob
        .get_field_by_number(2)
        .and_then(|v| v.as_bytes().cloned())
    else {
        return Ok(Hidden::default());
    };
    let pool = blob.descriptor().parent_pool().clone();
    let Some(history) = pool.get_message_by_name(HISTORY) else {
        return Ok(Hidden::default());
    };
    let Ok(mut history) = DynamicMessage::decode(history, data) else {
        return Ok(Hidden::default());
    };
    let hidden = edit_inner(&mut history, targets, editor, stats)?;
    blob.set_field_by_number(2, Value::Bytes(history.encode_to_vec().into()));
    Ok(hidden)
}
