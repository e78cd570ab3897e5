//! The rewrite plan: compiled once at startup from a descriptor set, it says for every method's request
//! and response type which fields to edit and which sub-messages to descend into. Subtrees without a
//! target are pruned: the walker skips them by length without parsing.
//!
//! ## What counts as a target
//! - **Namespace names, search-attribute names, visibility queries**: the string fields
//!   `crate::classify` names (shared with the namespace ACL); search-attribute names inside queries
//!   are translated by [`super::query`].
//! - **History blobs**: `temporal.api.common.v1.DataBlob` fields that carry serialized history events
//!   ([`HISTORY_BLOB_FIELDS`]); when the blob's encoding is proto3 its data is walked as a
//!   `temporal.api.history.v1.History`.
//! - **UTF-8 repair** (when enabled): every other string field.
//! - **Hidden elements**: list elements dropped from a response when they name something the
//!   listener's clients cannot see ([`Action::Element`], [`Action::Item`]): map entries keyed or
//!   valued by a search attribute, elements of repeated search-attribute strings, and entries of
//!   lists of `HIDING_ELEMENTS` (by their namespace name).
//!
//! Fields whose names mention a namespace or search attribute but are deliberately left alone are
//! listed with the reason in [`LEFT_ALONE`]; a test fails on any field that is in neither list.

use std::collections::HashMap;

use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor};

/// Re-exported: a plan's [`Action`]s carry it.
pub(crate) use crate::classify::TextKind;
use crate::classify::{child_message, classify_string, map_field_of};

crate::internal! {
pub const DATA_BLOB: &str = "temporal.api.common.v1.DataBlob";
}
crate::internal! {
pub const HISTORY: &str = "temporal.api.history.v1.History";
}

crate::internal! {
/// DataBlob fields (by field name) that hold a serialized `History` (a batch of history events).
pub const HISTORY_BLOB_FIELDS: &[&str] = &[
    "events",
    "new_run_events",
    "events_batches",
    "event_batches",
    "event_batch",
    "history_batches",
    "raw_history",
    "history_batch",
];
}

/// Element types of repeated fields that are dropped from responses when the namespace they
/// describe is hidden from the listener's clients (`ListNamespaces` entries).
pub(crate) const HIDING_ELEMENTS: &[&str] =
    &["temporal.api.workflowservice.v1.DescribeNamespaceResponse"];

/// Fields that mention a namespace or search attribute and are deliberately not edited.
/// (message full name or `*` for any, field name, reason)
pub(crate) const LEFT_ALONE: &[(&str, &str, &str)] = &[
    (
        "*",
        "*namespace_id",
        "namespace IDs are the same on both sides of a translation",
    ),
    (
        "google.protobuf.FileOptions",
        "*namespace",
        "code-generation options of .proto files, not Temporal data",
    ),
    (
        "temporal.server.api.common.v1.HistoryTask",
        "blob",
        "a serialized internal task record, which names namespaces by ID only",
    ),
    (
        "temporal.server.api.persistence.v1.HistoryTask",
        "blob",
        "a serialized internal task record, which names namespaces by ID only",
    ),
    (
        "temporal.server.api.adminservice.v1.AddTasksRequest.Task",
        "blob",
        "a serialized internal task record, which names namespaces by ID only",
    ),
    (
        "temporal.server.api.persistence.v1.ChasmNode",
        "data",
        "opaque CHASM component state without a schema here",
    ),
    (
        "temporal.server.api.persistence.v1.ChasmComponentAttributes.Task",
        "data",
        "opaque CHASM task state without a schema here",
    ),
    (
        "temporal.server.api.persistence.v1.ChasmTaskInfo",
        "data",
        "opaque CHASM task state without a schema here",
    ),
    (
        "temporal.server.api.replication.v1.ReplicationTask",
        "data",
        "a task encoding whose message type the blob does not name: not decoded (a known gap)",
    ),
    (
        "temporal.api.common.v1.SearchAttributes.IndexedFieldsEntry",
        "value",
        "the attribute's value, not its name",
    ),
    (
        "temporal.server.api.persistence.v1.WorkflowExecutionInfo.SearchAttributesEntry",
        "value",
        "the attribute's value, not its name",
    ),
    (
        "temporal.api.namespace.v1.NamespaceConfig.CustomSearchAttributeAliasesEntry",
        "key",
        "the internal field name (e.g. Keyword01); the alias in the value is the name",
    ),
    (
        "temporal.api.operatorservice.v1.DeleteNamespaceRequest",
        "namespace_delete_delay",
        "a duration",
    ),
    (
        "temporal.api.workflowservice.v1.ListNamespacesRequest",
        "namespace_filter",
        "flags, no name",
    ),
    (
        "temporal.api.workflowservice.v1.PollWorkflowTaskQueueResponse",
        "query",
        "a workflow query (type and arguments), not a visibility query",
    ),
    (
        "temporal.api.workflowservice.v1.QueryWorkflowRequest",
        "query",
        "a workflow query (type and arguments), not a visibility query",
    ),
    (
        "temporal.server.api.adminservice.v1.DescribeHistoryHostResponse",
        "namespace_cache",
        "cache statistics, no names",
    ),
    (
        "temporal.server.api.deployment.v1.WorkerDeploymentWorkflowArgs",
        "namespace_name",
        "arguments of a server-internal workflow, carried inside payloads that are never decoded",
    ),
    (
        "temporal.server.api.deployment.v1.WorkerDeploymentVersionWorkflowArgs",
        "namespace_name",
        "arguments of a server-internal workflow, carried inside payloads that are never decoded",
    ),
];

/// Which kinds of edit a plan is compiled for: a listener that only renames namespaces walks far
/// fewer messages than one that also repairs every string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Targets {
    pub namespaces: bool,
    pub search_attributes: bool,
    pub utf8: bool,
}

impl Targets {
    fn wants(self, kind: TextKind) -> bool {
        match kind {
            // Search-attribute maps are per namespace: namespace fields are read (to know the call's
            // namespace) even when no namespace is renamed.
            TextKind::Namespace => self.namespaces || self.search_attributes,
            TextKind::SearchAttribute | TextKind::Query => self.search_attributes,
            TextKind::Plain => self.utf8,
        }
    }

    pub(crate) fn any(self) -> bool {
        self.namespaces || self.search_attributes || self.utf8
    }
}

crate::internal! {
pub type MsgId = u32;
}

crate::internal! {
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Text(TextKind),
    /// An element of a repeated string field (removed when hidden from clients).
    Item(TextKind),
    Message(MsgId),
    /// An element of a list or map that is dropped when a value of the given kind inside it is
    /// hidden from clients: map entries keyed or valued by a search attribute, and the namespaces
    /// of `HIDING_ELEMENTS`.
    Element(MsgId, TextKind),
    /// A `DataBlob` whose proto3 data is a `History` (the id is History's plan).
    HistoryBlob(MsgId),
}
}

crate::internal! {
/// The targeted fields of one message type, by field number.
#[derive(Debug, Clone, Default)]
pub struct MessagePlan {
    pub(crate) name: String,
    by_number: Vec<Option<Action>>,
    sparse: Vec<(u32, Action)>,
}
}

impl MessagePlan {
    crate::internal! {
    #[inline]
    pub fn action(&self, number: u32) -> Option<Action> {
        match self.by_number.get(number as usize) {
            Some(action) => *action,
            None => self
                .sparse
                .binary_search_by_key(&number, |(n, _)| *n)
                .ok()
                .map(|i| self.sparse[i].1),
        }
    }
    }

    fn set(&mut self, number: u32, action: Action) {
        // Dense lookup for the usual small field numbers, binary search for the rest.
        if number < 256 {
            let index = number as usize;
            if self.by_number.len() <= index {
                self.by_number.resize(index + 1, None);
            }
            self.by_number[index] = Some(action);
        } else {
            self.sparse.push((number, action));
            self.sparse.sort_by_key(|(n, _)| *n);
        }
    }
}

/// Plans for a method's request and response; `None` when that side has nothing to edit.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MethodPlan {
    pub(crate) request: Option<MsgId>,
    pub(crate) response: Option<MsgId>,
}

#[derive(Debug, Default)]
pub struct Plan {
    pub targets: Targets,
    messages: Vec<MessagePlan>,
    by_name: HashMap<String, MsgId>,
    methods: HashMap<String, MethodPlan>,
}

impl Plan {
    crate::internal! {
    pub fn message(&self, id: MsgId) -> &MessagePlan {
        &self.messages[id as usize]
    }
    }

    pub fn message_id(&self, full_name: &str) -> Option<MsgId> {
        self.by_name.get(full_name).copied()
    }

    /// The plan for a `:path` such as `/temporal.api.workflowservice.v1.WorkflowService/StartWorkflowExecution`.
    pub(crate) fn method(&self, path: &str) -> Option<MethodPlan> {
        self.methods.get(path).copied()
    }

    /// Compiles the plan for every service method in `pool`.
    pub fn compile(pool: &DescriptorPool, targets: Targets) -> Plan {
        let mut builder = Builder {
            pool,
            targets,
            direct: HashMap::new(),
        };
        // Which message types have a target somewhere below them: a fixpoint over the type graph
        // (types can be recursive, e.g. Failure.cause).
        let all: Vec<MessageDescriptor> = pool.all_messages().collect();
        let mut live: HashMap<String, bool> = HashMap::new();
        for message in &all {
            live.insert(
                message.full_name().to_owned(),
                builder.has_direct_target(message),
            );
        }
        loop {
            let mut changed = false;
            for message in &all {
                if live[message.full_name()] {
                    continue;
                }
                let reaches = message.fields().any(|field| match child_message(&field) {
                    Some(child) => live.get(child.full_name()).copied().unwrap_or(false),
                    None => false,
                });
                if reaches {
                    live.insert(message.full_name().to_owned(), true);
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }

        let mut plan = Plan {
            targets,
            ..Plan::default()
        };
        let mut ids = HashMap::new();
        for message in all.iter().filter(|m| live[m.full_name()]) {
            ids.insert(message.full_name().to_owned(), plan.messages.len() as MsgId);
            plan.messages.push(MessagePlan {
                name: message.full_name().to_owned(),
                ..Default::default()
            });
        }
        let history = ids.get(HISTORY).copied();
        for message in all.iter().filter(|m| live[m.full_name()]) {
            let id = ids[message.full_name()];
            for field in message.fields() {
                let action = if let Some(kind) = builder.text_kind(message, &field) {
                    Some(if field.is_list() {
                        Action::Item(kind)
                    } else {
                        Action::Text(kind)
                    })
                } else if let Some(child) = child_message(&field) {
                    if child.full_name() == DATA_BLOB && HISTORY_BLOB_FIELDS.contains(&field.name())
                    {
                        history.map(Action::HistoryBlob)
                    } else {
                        let hidden_by = builder.hidden_by(&field, &child);
                        ids.get(child.full_name()).map(|id| match hidden_by {
                            Some(kind) => Action::Element(*id, kind),
                            None => Action::Message(*id),
                        })
                    }
                } else {
                    None
                };
                if let Some(action) = action {
                    plan.messages[id as usize].set(field.number(), action);
                }
            }
        }
        builder.direct.clear();
        plan.by_name = ids;
        for service in pool.services() {
            for method in service.methods() {
                let path = format!("/{}/{}", service.full_name(), method.name());
                let request = plan.by_name.get(method.input().full_name()).copied();
                let response = plan.by_name.get(method.output().full_name()).copied();
                plan.methods.insert(path, MethodPlan { request, response });
            }
        }
        plan
    }
}

struct Builder<'a> {
    #[allow(dead_code)]
    pool: &'a DescriptorPool,
    targets: Targets,
    direct: HashMap<String, bool>,
}

impl Builder<'_> {
    fn has_direct_target(&self, message: &MessageDescriptor) -> bool {
        let blob_history = message.fields().any(|field| {
            self.targets.any()
                && child_message(&field).is_some_and(|c| c.full_name() == DATA_BLOB)
                && HISTORY_BLOB_FIELDS.contains(&field.name())
        });
        blob_history
            || message
                .fields()
                .any(|field| self.text_kind(message, &field).is_some())
    }

    /// What hides an element of the message field `field` (of type `child`) from clients: a search
    /// attribute for a map keyed or valued by one, a namespace for [`HIDING_ELEMENTS`].
    fn hidden_by(&self, field: &FieldDescriptor, child: &MessageDescriptor) -> Option<TextKind> {
        if !field.is_list() && !field.is_map() {
            return None;
        }
        if child.is_map_entry() {
            return child
                .fields()
                .any(|f| self.text_kind(child, &f) == Some(TextKind::SearchAttribute))
                .then_some(TextKind::SearchAttribute);
        }
        (self.targets.namespaces && HIDING_ELEMENTS.contains(&child.full_name()))
            .then_some(TextKind::Namespace)
    }

    /// The text kind of a string field, if this plan edits it.
    fn text_kind(&self, message: &MessageDescriptor, field: &FieldDescriptor) -> Option<TextKind> {
        if !matches!(field.kind(), Kind::String) {
            return None;
        }
        let kind = classify_string(message, field);
        let kind = if self.targets.wants(kind) {
            kind
        } else {
            TextKind::Plain
        };
        self.targets.wants(kind).then_some(kind)
    }
}

/// Every field the rules classify, and every field mentioning a namespace or search attribute that
/// they leave alone with the reason; fields in neither list are returned as unclassified.
pub struct Classification {
    pub edited: Vec<(String, String, Classified)>,
    pub left_alone: Vec<(String, String, &'static str)>,
    pub unclassified: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classified {
    Text(TextKind),
    HistoryBlob,
    /// A message-typed field whose type holds targets: the walker descends into it.
    Descend,
}

/// Field names that suggest a namespace, a search attribute or a visibility query.
fn mentions_target(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.contains("namespace")
        || name.contains("search_attribute")
        || name == "indexed_fields"
        || name.ends_with("query")
}

fn left_alone(message: &str, field: &str) -> Option<&'static str> {
    LEFT_ALONE.iter().find_map(|(m, f, reason)| {
        let message_matches = *m == "*" || *m == message;
        let field_matches = match f.strip_prefix('*') {
            Some(suffix) => field.contains(suffix),
            None => *f == field,
        };
        (message_matches && field_matches).then_some(*reason)
    })
}

/// Classifies every field of every message in `pool` (strings, messages and maps; scalars hold no
/// names). Used by the completeness test and `strait descriptors show --fields`.
pub fn classify(pool: &DescriptorPool) -> Classification {
    let all = Targets {
        namespaces: true,
        search_attributes: true,
        utf8: false,
    };
    let plan = Plan::compile(pool, all);
    let mut out = Classification {
        edited: Vec::new(),
        left_alone: Vec::new(),
        unclassified: Vec::new(),
    };
    for message in pool.all_messages() {
        for field in message.fields() {
            let (m, f) = (message.full_name().to_owned(), field.name().to_owned());
            let classified = match field.kind() {
                Kind::String => Some(classify_string(&message, &field))
                    .filter(|k| *k != TextKind::Plain)
                    .map(Classified::Text),
                Kind::Message(child)
                    if child.full_name() == DATA_BLOB
                        && HISTORY_BLOB_FIELDS.contains(&field.name()) =>
                {
                    Some(Classified::HistoryBlob)
                }
                Kind::Message(child) => plan
                    .message_id(child.full_name())
                    .map(|_| Classified::Descend),
                _ => continue,
            };
            let map_parent = message
                .is_map_entry()
                .then(|| map_field_of(&message))
                .flatten();
            // A DataBlob may hide serialized history: every one must be walked or explained.
            let blob = matches!(field.kind(), Kind::Message(ref c) if c.full_name() == DATA_BLOB);
            let mention = blob
                || mentions_target(&f)
                || map_parent
                    .as_ref()
                    .is_some_and(|p| mentions_target(p.name()));
            match classified {
                // Plain descents are listed only where the name suggests a target, to keep the list short.
                Some(Classified::Descend) if !mention => {}
                Some(kind) => out.edited.push((m, f, kind)),
                None if !mention => {}
                None => match left_alone(&m, &f) {
                    Some(reason) => out.left_alone.push((m, f, reason)),
                    None => out.unclassified.push((m, f)),
                },
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::classify::GET_SEARCH_ATTRIBUTES_RESPONSE;

    fn all_targets() -> (DescriptorPool, Plan) {
        let pool = crate::descriptor_set::embedded().unwrap();
        let targets = Targets {
            namespaces: true,
            search_attributes: true,
            utf8: false,
        };
        let plan = Plan::compile(&pool, targets);
        (pool, plan)
    }

    /// Every (message, field) with a text action reachable from `root` through message actions.
    fn reachable_texts(plan: &Plan, root: MsgId) -> Vec<(String, u32, Action)> {
        let mut seen = std::collections::HashSet::new();
        let mut stack = vec![root];
        let mut texts = Vec::new();
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            let message = plan.message(id);
            let actions = message
                .by_number
                .iter()
                .enumerate()
                .filter_map(|(n, a)| a.map(|a| (n as u32, a)))
                .chain(message.sparse.iter().copied());
            for (number, action) in actions {
                match action {
                    Action::Text(_) | Action::Item(_) => {
                        texts.push((message.name.clone(), number, action))
                    }
                    Action::Message(child)
                    | Action::Element(child, _)
                    | Action::HistoryBlob(child) => stack.push(child),
                }
            }
        }
        texts
    }

    #[test]
    fn a_namespace_entry_is_hidden_by_its_own_name_only() {
        // A ListNamespaces entry is dropped when a namespace inside it is hidden: that must be the
        // entry's own name, never some other namespace it mentions.
        let (_, plan) = all_targets();
        let list = plan
            .message_id("temporal.api.workflowservice.v1.ListNamespacesResponse")
            .unwrap();
        let entry = plan.message_id(HIDING_ELEMENTS[0]).unwrap();
        assert_eq!(
            plan.message(list).action(1),
            Some(Action::Element(entry, TextKind::Namespace))
        );
        let namespaces: Vec<_> = reachable_texts(&plan, entry)
            .into_iter()
            .filter(|(_, _, a)| {
                matches!(
                    a,
                    Action::Text(TextKind::Namespace) | Action::Item(TextKind::Namespace)
                )
            })
            .collect();
        assert_eq!(
            namespaces,
            [(
                "temporal.api.namespace.v1.NamespaceInfo".to_owned(),
                1,
                Action::Text(TextKind::Namespace)
            )]
        );
    }

    #[test]
    fn every_search_attribute_name_can_be_dropped() {
        // A hidden search-attribute name is dropped with its list element or map entry, so each one
        // must be an `Item` or a key/value directly inside an `Element` entry.
        let (pool, plan) = all_targets();
        let mut entries = std::collections::HashSet::new();
        for message in pool.all_messages() {
            let Some(id) = plan.message_id(message.full_name()) else {
                continue;
            };
            for field in message.fields() {
                if let Some(Action::Element(child, TextKind::SearchAttribute)) =
                    plan.message(id).action(field.number())
                {
                    entries.insert(child);
                }
            }
        }
        let mut checked = 0;
        for message in pool.all_messages() {
            let Some(id) = plan.message_id(message.full_name()) else {
                continue;
            };
            for field in message.fields() {
                match plan.message(id).action(field.number()) {
                    Some(Action::Text(TextKind::SearchAttribute)) => {
                        assert!(
                            entries.contains(&id),
                            "{}.{} cannot be dropped",
                            message.full_name(),
                            field.name()
                        );
                        checked += 1;
                    }
                    Some(Action::Item(TextKind::SearchAttribute)) => checked += 1,
                    _ => {}
                }
            }
        }
        assert!(checked > 10, "{checked}");
    }

    #[test]
    fn get_search_attributes_keys_are_search_attribute_names() {
        let (pool, plan) = all_targets();
        let response = pool
            .get_message_by_name(GET_SEARCH_ATTRIBUTES_RESPONSE)
            .unwrap();
        let keys = response.get_field_by_name("keys").unwrap();
        let Kind::Message(entry) = keys.kind() else {
            panic!("keys is a map");
        };
        let key = entry.get_field_by_name("key").unwrap();
        assert_eq!(classify_string(&entry, &key), TextKind::SearchAttribute);
        let id = plan.message_id(response.full_name()).unwrap();
        assert!(matches!(
            plan.message(id).action(keys.number()),
            Some(Action::Element(_, TextKind::SearchAttribute))
        ));
    }

    #[test]
    fn every_field_naming_a_namespace_or_search_attribute_is_classified() {
        let pool = crate::descriptor_set::embedded().unwrap();
        let c = classify(&pool);
        for (m, f, k) in &c.edited {
            println!("EDIT {m}.{f} {k:?}");
        }
        for (m, f, r) in &c.left_alone {
            println!("LEAVE {m}.{f}: {r}");
        }
        for (m, f) in &c.unclassified {
            println!("UNCLASSIFIED {m}.{f}");
        }
        assert!(
            c.unclassified.is_empty(),
            "{} unclassified",
            c.unclassified.len()
        );
    }
}
