//! Which namespaces a message concerns, read from its wire bytes, and the removal of list elements
//! the namespace policy denies. A [`ScopePlan`] is compiled once from the descriptor set:
//!
//! - **references** (requests, and inside judged elements): string fields that name a namespace
//!   (`crate::classify`, as the rewriter) or identify one by ID (`namespace_id`,
//!   `*_namespace_id`, `namespace_ids`, `NamespaceInfo.id`). Serialized history inside `DataBlob`s
//!   is not read: a request is judged by the namespaces its own fields name.
//! - **elements** (responses): repeated fields whose element type is in [`FILTERED_ELEMENTS`]; each
//!   element is judged by its *owner* namespace, the references found at the shallowest nesting
//!   level inside it (a replication task's `namespace_id`, not the namespaces of child workflows
//!   deeper in its mutable state).
//!
//! Edits (removing an element and re-encoding the lengths of its ancestors) are splices built by
//! `crate::wire`, the only code that writes tags and lengths.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor};

use crate::classify::{child_message, classify_string, TextKind};
use crate::wire::{self, Field, Fields, Splice, WireError, WireType, MAX_DEPTH};

/// Why a message's namespaces could not be read, or its elements not removed: its bytes do not
/// fit its type. The message is then not forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
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
}

/// What a judged list element is, for errors and the `kind` label of denial metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElementKind {
    /// A replication task (workflow, activity, namespace, … replication) in a replication
    /// response or stream message.
    ReplicationTask,
    /// A namespace in a `ListNamespaces` response.
    NamespaceEntry,
}

/// Element types of repeated response fields that are judged one by one: a denied element is
/// dropped and the rest of the message goes on (a replication stream keeps flowing for the allowed
/// namespaces; its watermarks move past the dropped tasks, so they are never re-sent).
pub(crate) const FILTERED_ELEMENTS: &[(&str, ElementKind)] = &[
    (
        "temporal.server.api.replication.v1.ReplicationTask",
        ElementKind::ReplicationTask,
    ),
    (
        "temporal.api.workflowservice.v1.DescribeNamespaceResponse",
        ElementKind::NamespaceEntry,
    ),
];

/// A namespace as a message names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NamespaceRef {
    Name(String),
    Id(String),
}

/// A judged element found in a response: where it is and who owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// Offset of the element's tag in the message: its identity for [`ScopePlan::remove`].
    pub start: usize,
    pub kind: ElementKind,
    /// The references at the shallowest level inside the element; empty when it names none (it is
    /// then not namespace-scoped, e.g. a shard status task).
    pub owner: Vec<NamespaceRef>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Name,
    Id,
    Descend(u32),
    /// A judged element: its type's id in the references table.
    Element(u32, ElementKind),
}

/// Targeted fields of message types, by id; each list sorted by field number.
#[derive(Debug, Default)]
struct Table {
    names: Vec<String>,
    fields: Vec<Vec<(u32, Action)>>,
    by_name: HashMap<String, u32>,
}

impl Table {
    fn action(&self, id: u32, number: u32) -> Option<Action> {
        let fields = &self.fields[id as usize];
        fields
            .binary_search_by_key(&number, |(n, _)| *n)
            .ok()
            .map(|i| fields[i].1)
    }
}

/// The message types to read for a call: its request (references) and its response (elements).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MethodScope {
    pub(crate) request: Option<u32>,
    pub(crate) response: Option<u32>,
}

#[derive(Debug, Default)]
pub struct ScopePlan {
    references: Table,
    elements: Table,
    methods: HashMap<String, MethodScope>,
}

/// Whether a string field identifies a namespace by ID.
pub(crate) fn is_namespace_id(message: &MessageDescriptor, field: &FieldDescriptor) -> bool {
    let name = field.name();
    matches!(field.kind(), Kind::String)
        && !message.full_name().starts_with("google.protobuf.")
        && (name == "namespace_id"
            || name.ends_with("_namespace_id")
            || name == "namespace_ids"
            || (message.full_name() == "temporal.api.namespace.v1.NamespaceInfo" && name == "id"))
}

fn is_namespace_name(message: &MessageDescriptor, field: &FieldDescriptor) -> bool {
    matches!(field.kind(), Kind::String)
        && !message.is_map_entry()
        && classify_string(message, field) == TextKind::Namespace
}

fn element_kind(field: &FieldDescriptor) -> Option<ElementKind> {
    let child = child_message(field)?;
    if !field.is_list() {
        return None;
    }
    FILTERED_ELEMENTS
        .iter()
        .find(|(name, _)| *name == child.full_name())
        .map(|(_, kind)| *kind)
}

/// Message types from which `direct` is reachable through message fields (a fixpoint: types can be
/// recursive).
fn live_set(
    all: &[MessageDescriptor],
    direct: impl Fn(&MessageDescriptor) -> bool,
) -> HashSet<String> {
    let mut live: HashSet<String> = all
        .iter()
        .filter(|m| direct(m))
        .map(|m| m.full_name().to_owned())
        .collect();
    loop {
        let before = live.len();
        for message in all {
            if live.contains(message.full_name()) {
                continue;
            }
            let reaches = message
                .fields()
                .any(|f| child_message(&f).is_some_and(|c| live.contains(c.full_name())));
            if reaches {
                live.insert(message.full_name().to_owned());
            }
        }
        if live.len() == before {
            return live;
        }
    }
}

fn ids_of(all: &[MessageDescriptor], live: &HashSet<String>) -> (Table, Vec<MessageDescriptor>) {
    let mut table = Table::default();
    let mut kept = Vec::new();
    for message in all.iter().filter(|m| live.contains(m.full_name())) {
        table
            .by_name
            .insert(message.full_name().to_owned(), table.names.len() as u32);
        table.names.push(message.full_name().to_owned());
        table.fields.push(Vec::new());
        kept.push(message.clone());
    }
    (table, kept)
}

impl ScopePlan {
    pub fn compile(pool: &DescriptorPool) -> ScopePlan {
        let all: Vec<MessageDescriptor> = pool.all_messages().collect();

        let live = live_set(&all, |m| {
            m.fields()
                .any(|f| is_namespace_name(m, &f) || is_namespace_id(m, &f))
        });
        let (mut references, kept) = ids_of(&all, &live);
        for (id, message) in kept.iter().enumerate() {
            for field in message.fields() {
                let action = if is_namespace_name(message, &field) {
                    Some(Action::Name)
                } else if is_namespace_id(message, &field) {
                    Some(Action::Id)
                } else {
                    child_message(&field)
                        .and_then(|c| references.by_name.get(c.full_name()).copied())
                        .map(Action::Descend)
                };
                if let Some(action) = action {
                    references.fields[id].push((field.number(), action));
                }
            }
            references.fields[id].sort_by_key(|(n, _)| *n);
        }

        // Elements that name no namespace cannot be judged: they are not filtered.
        let judged = |f: &FieldDescriptor| {
            element_kind(f).filter(|_| {
                child_message(f).is_some_and(|c| references.by_name.contains_key(c.full_name()))
            })
        };
        let live = live_set(&all, |m| m.fields().any(|f| judged(&f).is_some()));
        let (mut elements, kept) = ids_of(&all, &live);
        for (id, message) in kept.iter().enumerate() {
            for field in message.fields() {
                let action = match (judged(&field), child_message(&field)) {
                    (Some(kind), Some(child)) => references
                        .by_name
                        .get(child.full_name())
                        .map(|c| Action::Element(*c, kind)),
                    (None, Some(child)) => elements
                        .by_name
                        .get(child.full_name())
                        .copied()
                        .map(Action::Descend),
                    _ => None,
                };
                if let Some(action) = action {
                    elements.fields[id].push((field.number(), action));
                }
            }
            elements.fields[id].sort_by_key(|(n, _)| *n);
        }

        let mut methods = HashMap::new();
        for service in pool.services() {
            for method in service.methods() {
                let scope = MethodScope {
                    request: references.by_name.get(method.input().full_name()).copied(),
                    response: elements.by_name.get(method.output().full_name()).copied(),
                };
                methods.insert(format!("/{}/{}", service.full_name(), method.name()), scope);
            }
        }
        ScopePlan {
            references,
            elements,
            methods,
        }
    }

    /// What to read for a `:path`; `None` for a method the descriptor set does not know (it names
    /// no namespace that Strait could see, so only the method policy applies to it).
    pub(crate) fn method(&self, path: &str) -> Option<MethodScope> {
        self.methods.get(path).copied()
    }

    /// The id of a message type in the references table (requests).
    #[cfg(feature = "internals")]
    pub fn request_type(&self, full_name: &str) -> Option<u32> {
        self.references.by_name.get(full_name).copied()
    }

    /// The id of a message type in the elements table (responses).
    #[cfg(feature = "internals")]
    pub fn response_type(&self, full_name: &str) -> Option<u32> {
        self.elements.by_name.get(full_name).copied()
    }

    /// Every namespace `body` (a message of references-table type `id`) names, in order.
    pub fn references(&self, id: u32, body: &[u8]) -> Result<Vec<NamespaceRef>, ScopeError> {
        let mut found = Vec::new();
        self.collect(id, body, 0, body.len(), 0, &mut found)?;
        Ok(found)
    }

    fn collect(
        &self,
        id: u32,
        buf: &[u8],
        start: usize,
        end: usize,
        depth: usize,
        found: &mut Vec<NamespaceRef>,
    ) -> Result<(), ScopeError> {
        let table = &self.references;
        check_depth(&table.names[id as usize], depth)?;
        for field in Fields::new(buf, start, end) {
            let field = field.map_err(|source| wire_error(&table.names[id as usize], source))?;
            let Some(action) = table.action(id, field.number) else {
                continue;
            };
            expect_len(&table.names[id as usize], &field)?;
            match action {
                Action::Name | Action::Id => {
                    if let Some(reference) = reference(action, buf, &field) {
                        found.push(reference);
                    }
                }
                Action::Descend(child) | Action::Element(child, _) => {
                    self.collect(child, buf, field.value_start, field.end, depth + 1, found)?;
                }
            }
        }
        Ok(())
    }

    /// The judged elements of `body` (a message of elements-table type `id`), each with its owner.
    pub fn elements(&self, id: u32, body: &[u8]) -> Result<Vec<Element>, ScopeError> {
        let mut found = Vec::new();
        self.find_elements(id, body, 0, body.len(), 0, &mut found)?;
        Ok(found)
    }

    fn find_elements(
        &self,
        id: u32,
        buf: &[u8],
        start: usize,
        end: usize,
        depth: usize,
        found: &mut Vec<Element>,
    ) -> Result<(), ScopeError> {
        let table = &self.elements;
        check_depth(&table.names[id as usize], depth)?;
        for field in Fields::new(buf, start, end) {
            let field = field.map_err(|source| wire_error(&table.names[id as usize], source))?;
            let Some(action) = table.action(id, field.number) else {
                continue;
            };
            expect_len(&table.names[id as usize], &field)?;
            match action {
                Action::Descend(child) => {
                    self.find_elements(child, buf, field.value_start, field.end, depth + 1, found)?
                }
                Action::Element(element, kind) => found.push(Element {
                    start: field.start,
                    kind,
                    owner: self.owner(element, buf, &field, depth + 1)?,
                }),
                Action::Name | Action::Id => {}
            }
        }
        Ok(())
    }

    /// The references at the shallowest level of the element in `field` that has any.
    fn owner(
        &self,
        id: u32,
        buf: &[u8],
        field: &Field,
        mut depth: usize,
    ) -> Result<Vec<NamespaceRef>, ScopeError> {
        let table = &self.references;
        let mut level = vec![(id, field.value_start, field.end)];
        while !level.is_empty() {
            let mut found = Vec::new();
            let mut next = Vec::new();
            for (id, start, end) in level {
                let name = &table.names[id as usize];
                check_depth(name, depth)?;
                for field in Fields::new(buf, start, end) {
                    let field = field.map_err(|source| wire_error(name, source))?;
                    let Some(action) = table.action(id, field.number) else {
                        continue;
                    };
                    expect_len(name, &field)?;
                    match action {
                        Action::Name | Action::Id => {
                            if let Some(reference) = reference(action, buf, &field) {
                                found.push(reference);
                            }
                        }
                        Action::Descend(child) | Action::Element(child, _) => {
                            next.push((child, field.value_start, field.end));
                        }
                    }
                }
            }
            if !found.is_empty() {
                return Ok(found);
            }
            level = next;
            depth += 1;
        }
        Ok(Vec::new())
    }

    /// `body` without the elements whose tag offsets are in `removed`; the same `Bytes` when none
    /// is removed.
    pub fn remove(
        &self,
        id: u32,
        body: &Bytes,
        removed: &HashSet<usize>,
    ) -> Result<Bytes, ScopeError> {
        if removed.is_empty() {
            return Ok(body.clone());
        }
        let mut splices = Vec::new();
        self.remove_walk(id, body, 0, body.len(), 0, removed, &mut splices)?;
        Ok(wire::apply_bytes(body, splices))
    }

    /// Returns how much the message in `buf[start..end]` shrinks or grows.
    #[allow(clippy::too_many_arguments)]
    fn remove_walk(
        &self,
        id: u32,
        buf: &[u8],
        start: usize,
        end: usize,
        depth: usize,
        removed: &HashSet<usize>,
        splices: &mut Vec<Splice>,
    ) -> Result<isize, ScopeError> {
        let table = &self.elements;
        check_depth(&table.names[id as usize], depth)?;
        let mut delta = 0isize;
        for field in Fields::new(buf, start, end) {
            let field = field.map_err(|source| wire_error(&table.names[id as usize], source))?;
            match table.action(id, field.number) {
                Some(Action::Descend(child)) => {
                    let inner = self.remove_walk(
                        child,
                        buf,
                        field.value_start,
                        field.end,
                        depth + 1,
                        removed,
                        splices,
                    )?;
                    if inner != 0 {
                        let prefix = Splice::len_prefix(&field, inner);
                        delta += inner + prefix.delta();
                        splices.push(prefix);
                    }
                }
                Some(Action::Element(..)) if removed.contains(&field.start) => {
                    let removal = Splice::remove(&field);
                    delta += removal.delta();
                    splices.push(removal);
                }
                _ => {}
            }
        }
        Ok(delta)
    }
}

fn reference(action: Action, buf: &[u8], field: &Field) -> Option<NamespaceRef> {
    let value = &buf[field.value_start..field.end];
    if value.is_empty() {
        return None;
    }
    // Invalid UTF-8 cannot be an allowed name: kept (lossily) so that it is judged, and denied.
    let text = String::from_utf8_lossy(value).into_owned();
    match action {
        Action::Name => Some(NamespaceRef::Name(text)),
        _ => Some(NamespaceRef::Id(text)),
    }
}

fn check_depth(message: &str, depth: usize) -> Result<(), ScopeError> {
    if depth > MAX_DEPTH {
        return Err(ScopeError::TooDeep {
            message: message.to_owned(),
        });
    }
    Ok(())
}

fn wire_error(message: &str, source: WireError) -> ScopeError {
    ScopeError::Wire {
        message: message.to_owned(),
        source,
    }
}

fn expect_len(message: &str, field: &Field) -> Result<(), ScopeError> {
    if field.wire_type != WireType::Len {
        return Err(ScopeError::WireType {
            message: message.to_owned(),
            field: field.number,
            found: field.wire_type,
        });
    }
    Ok(())
}
