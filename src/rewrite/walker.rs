//! The walker: one pass over a message's wire bytes guided by the [`Plan`], collecting splices for the
//! fields that change. Untouched fields are skipped by length; untargeted subtrees are never parsed;
//! unknown fields stay as they are. A message with nothing to change comes back as the same `Bytes`.
//! A list element that names something hidden from the listener's clients is dropped in the same
//! pass: the splices made inside it are discarded for one that removes it.

use bytes::Bytes;

use super::plan::{Action, MsgId, Plan, TextKind};
pub(crate) use crate::wire::MAX_DEPTH;
use crate::wire::{self, Chunks, Field, Fields, Source, Splice, WireError, WireType};

/// `temporal.api.enums.v1.EncodingType.ENCODING_TYPE_PROTO3`.
const ENCODING_PROTO3: u64 = 1;
const BLOB_ENCODING_FIELD: u32 = 1;
const BLOB_DATA_FIELD: u32 = 2;

/// Why a message could not be edited. The message is then not forwarded at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("malformed {message}: {source}")]
    Wire { message: String, source: WireError },
    #[error(
        "malformed {message}: field {field} has wire type {found:?}, expected length-delimited"
    )]
    WireType {
        message: String,
        field: u32,
        found: WireType,
    },
    #[error("{message} nests deeper than {MAX_DEPTH} levels")]
    TooDeep { message: String },
    #[error("visibility query cannot be translated: {0}")]
    Query(String),
    /// A request names something this listener's clients cannot see (an upstream-side name that
    /// is the target of a mapping): refused as the upstream refuses a name it does not know.
    #[error("{0}")]
    Unknown(Unknown),
}

/// A name refused in a request because, for this listener's clients, it does not exist. The texts
/// are Temporal's own for a name it does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unknown {
    /// Answered NOT_FOUND.
    #[error("Namespace {0} is not found.")]
    Namespace(String),
    /// A search-attribute name in a request's attribute map or list; answered INVALID_ARGUMENT.
    #[error("Namespace {namespace} has no mapping defined for search attribute {name}")]
    SearchAttribute { namespace: String, name: String },
    /// A search-attribute name in a visibility query; answered INVALID_ARGUMENT.
    #[error("invalid query: invalid search attribute: {0}")]
    QueryAttribute(String),
}

/// Counts of what an edit changed, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EditStats {
    pub namespaces: u64,
    pub search_attributes: u64,
    pub(crate) queries: u64,
    pub(crate) utf8_repairs: u64,
}

impl EditStats {
    pub(crate) fn add(&mut self, other: &EditStats) {
        self.namespaces += other.namespaces;
        self.search_attributes += other.search_attributes;
        self.queries += other.queries;
        self.utf8_repairs += other.utf8_repairs;
    }
}

/// What becomes of one string value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextEdit {
    Keep,
    Replace(Vec<u8>),
    /// The value names something the listener's clients cannot see (a response's upstream name
    /// that collides with a client-side name): the list element it identifies is dropped — an
    /// element of a repeated string, a map entry keyed (or valued) by it, or, for a namespace, the
    /// nearest enclosing [`Action::Element`] of namespace kind (if a value occurs more than once
    /// there, the last one decides). Elsewhere the value is kept.
    Hide,
}

/// Decides the new value of one string field.
pub trait TextEditor {
    fn edit(
        &self,
        kind: TextKind,
        value: &[u8],
        stats: &mut EditStats,
    ) -> Result<TextEdit, EditError>;
}

/// Edits `body`, a message of type `message`; returns the same `Bytes` when nothing changes.
pub fn edit_message(
    plan: &Plan,
    message: MsgId,
    body: &Bytes,
    editor: &dyn TextEditor,
    stats: &mut EditStats,
) -> Result<Bytes, EditError> {
    let splices = walk(plan, message, &body[..], editor, stats)?;
    Ok(wire::apply_bytes(body, splices))
}

crate::internal! {
/// Edits `body`, a message of type `message` held in pieces, without copying them together: the
/// result shares every large untouched run with `body`, and is `body` itself when nothing changes.
pub fn edit_chunks(
    plan: &Plan,
    message: MsgId,
    body: &Chunks,
    editor: &dyn TextEditor,
    stats: &mut EditStats,
) -> Result<Chunks, EditError> {
    let splices = walk(plan, message, body, editor, stats)?;
    Ok(body.spliced(splices))
}
}

/// The splices that edit `buf`, a message of type `message`.
fn walk<S: Source + ?Sized>(
    plan: &Plan,
    message: MsgId,
    buf: &S,
    editor: &dyn TextEditor,
    stats: &mut EditStats,
) -> Result<Vec<Splice>, EditError> {
    let mut walk = Walk {
        plan,
        buf,
        editor,
        stats,
        splices: Vec::new(),
        elements: Vec::new(),
    };
    walk.message(message, 0, buf.len(), 0)?;
    Ok(walk.splices)
}

/// The first value of a top-level namespace field of `body`, if any (the call's namespace when the
/// request names it only in its body).
pub(crate) fn top_level_namespace<S: Source + ?Sized>(
    plan: &Plan,
    message: MsgId,
    body: &S,
) -> Option<String> {
    let message_plan = plan.message(message);
    for field in Fields::over(body, 0, body.len()) {
        let field = field.ok()?;
        let action = message_plan.action(field.number);
        if field.wire_type == WireType::Len
            && matches!(
                action,
                Some(Action::Text(TextKind::Namespace) | Action::Item(TextKind::Namespace))
            )
        {
            return std::str::from_utf8(&body.range(field.value_start, field.end))
                .ok()
                .map(str::to_owned);
        }
    }
    None
}

struct Walk<'a, S: ?Sized> {
    plan: &'a Plan,
    buf: &'a S,
    editor: &'a dyn TextEditor,
    stats: &'a mut EditStats,
    splices: Vec<Splice>,
    /// The elements being walked, innermost last: (what hides one, whether something did).
    elements: Vec<(TextKind, bool)>,
}

impl<S: Source + ?Sized> Walk<'_, S> {
    /// Walks the message in `buf[start..end]`; returns how much its length changes.
    fn message(
        &mut self,
        id: MsgId,
        start: usize,
        end: usize,
        depth: usize,
    ) -> Result<isize, EditError> {
        let plan = self.plan;
        let message = plan.message(id);
        if depth > MAX_DEPTH {
            return Err(EditError::TooDeep {
                message: message.name.clone(),
            });
        }
        let mut delta = 0isize;
        for field in Fields::over(self.buf, start, end) {
            let field = field.map_err(|source| EditError::Wire {
                message: message.name.clone(),
                source,
            })?;
            let Some(action) = message.action(field.number) else {
                continue;
            };
            if field.wire_type != WireType::Len {
                return Err(EditError::WireType {
                    message: message.name.clone(),
                    field: field.number,
                    found: field.wire_type,
                });
            }
            delta += match action {
                Action::Text(kind) => self.text(kind, &field, false)?,
                Action::Item(kind) => self.text(kind, &field, true)?,
                Action::Message(child) => {
                    let inner = self.message(child, field.value_start, field.end, depth + 1)?;
                    self.resize(&field, inner)
                }
                Action::Element(child, hidden_by) => {
                    self.element(child, hidden_by, &field, depth + 1)?
                }
                Action::HistoryBlob(history) => {
                    let inner = self.history_blob(history, &field, depth + 1)?;
                    self.resize(&field, inner)
                }
            };
        }
        Ok(delta)
    }

    /// A string field; `item` when it is an element of a repeated string (removed when hidden).
    fn text(&mut self, kind: TextKind, field: &Field, item: bool) -> Result<isize, EditError> {
        let value = self.buf.range(field.value_start, field.end);
        let edit = self.editor.edit(kind, &value, self.stats)?;
        if !item {
            // The element's last value of this kind decides, as the last occurrence of a field
            // is the one a decoder keeps.
            if let Some(element) = self.elements.iter_mut().rev().find(|(k, _)| *k == kind) {
                element.1 = edit == TextEdit::Hide;
            }
        }
        let splice = match edit {
            TextEdit::Keep => return Ok(0),
            TextEdit::Replace(new) => Splice::len_value(field, &new),
            TextEdit::Hide if item => Splice::remove(field),
            TextEdit::Hide => return Ok(0),
        };
        let delta = splice.delta();
        self.splices.push(splice);
        Ok(delta)
    }

    /// An element of a list or map: walked like any message, then dropped whole — the edits made
    /// inside it discarded — when a value of kind `hidden_by` inside it was hidden.
    fn element(
        &mut self,
        child: MsgId,
        hidden_by: TextKind,
        field: &Field,
        depth: usize,
    ) -> Result<isize, EditError> {
        let mark = self.splices.len();
        self.elements.push((hidden_by, false));
        let inner = self.message(child, field.value_start, field.end, depth);
        let hidden = self.elements.pop().is_some_and(|(_, hidden)| hidden);
        let inner = inner?;
        if !hidden {
            return Ok(self.resize(field, inner));
        }
        self.splices.truncate(mark);
        let removal = Splice::remove(field);
        let delta = removal.delta();
        self.splices.push(removal);
        Ok(delta)
    }

    /// A length-delimited field whose content changed size by `inner`: re-encode its length.
    fn resize(&mut self, field: &Field, inner: isize) -> isize {
        if inner == 0 {
            return 0;
        }
        let splice = Splice::len_prefix(field, inner);
        let delta = inner + splice.delta();
        self.splices.push(splice);
        delta
    }

    /// A `DataBlob` field: walks its data as a `History` when its encoding is proto3.
    fn history_blob(
        &mut self,
        history: MsgId,
        blob: &Field,
        depth: usize,
    ) -> Result<isize, EditError> {
        let mut encoding = 0;
        let mut data = None;
        for field in Fields::over(self.buf, blob.value_start, blob.end) {
            let field = field.map_err(|source| EditError::Wire {
                message: super::plan::DATA_BLOB.to_owned(),
                source,
            })?;
            match (field.number, field.wire_type) {
                (BLOB_ENCODING_FIELD, WireType::Varint) => {
                    encoding = self
                        .buf
                        .varint(field.value_start, field.end)
                        .map_err(|source| EditError::Wire {
                            message: super::plan::DATA_BLOB.to_owned(),
                            source,
                        })?
                        .0;
                }
                (BLOB_DATA_FIELD, WireType::Len) => data = Some(field),
                _ => {}
            }
        }
        match data {
            Some(data) if encoding == ENCODING_PROTO3 => {
                let inner = self.message(history, data.value_start, data.end, depth)?;
                Ok(self.resize(&data, inner))
            }
            _ => Ok(0),
        }
    }
}
