//! Which string fields of Temporal's messages hold names: the classification rules shared by the
//! rewrite plan (what to translate) and the namespace ACL (what to judge), read from descriptors.
//!
//! - **Namespace names**: string fields named `namespace` or ending in `_namespace`, and
//!   `temporal.api.namespace.v1.NamespaceInfo.name`. Namespace IDs (`namespace_id`, …) are not names.
//! - **Search-attribute names**: keys of maps named `indexed_fields` (`SearchAttributes`) or whose name
//!   contains `search_attributes`, keys of the search-attribute type maps `custom_attributes` /
//!   `system_attributes` and of WorkflowService's `GetSearchAttributesResponse.keys`, the values of
//!   `custom_search_attribute_aliases`, and repeated string fields named `search_attributes`.
//! - **Visibility queries**: string fields named `query` or ending in `_query`.

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};

/// WorkflowService's (deprecated) list of search attributes, keyed by name in a map named `keys`.
pub(crate) const GET_SEARCH_ATTRIBUTES_RESPONSE: &str =
    "temporal.api.workflowservice.v1.GetSearchAttributesResponse";

/// What a string value is, and so what to do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TextKind {
    Namespace,
    SearchAttribute,
    Query,
    /// No translation; only checked for (and repaired to) valid UTF-8.
    Plain,
}

/// The classification of a string field (see the module docs); `Plain` when it is no name at all.
pub(crate) fn classify_string(message: &MessageDescriptor, field: &FieldDescriptor) -> TextKind {
    let name = field.name();
    // Descriptor options (`csharp_namespace`, …) are not Temporal data.
    if message.full_name().starts_with("google.protobuf.") {
        return TextKind::Plain;
    }
    // Map entries: the rule depends on the map field in the parent.
    if message.is_map_entry() {
        if let Some(map_field) = map_field_of(message) {
            let map_name = map_field.name();
            let key_is_attribute = map_name == "indexed_fields"
                || map_name.contains("search_attributes")
                || map_name == "custom_attributes"
                || map_name == "system_attributes"
                || (map_name == "keys"
                    && map_field.parent_message().full_name() == GET_SEARCH_ATTRIBUTES_RESPONSE);
            if name == "key" && key_is_attribute {
                return TextKind::SearchAttribute;
            }
            if name == "value" && map_name == "custom_search_attribute_aliases" {
                return TextKind::SearchAttribute;
            }
        }
        return TextKind::Plain;
    }
    if name == "namespace" || name.ends_with("_namespace") {
        return TextKind::Namespace;
    }
    if message.full_name() == "temporal.api.namespace.v1.NamespaceInfo" && name == "name" {
        return TextKind::Namespace;
    }
    if name == "query" || name.ends_with("_query") {
        return TextKind::Query;
    }
    if field.is_list() && name == "search_attributes" {
        return TextKind::SearchAttribute;
    }
    TextKind::Plain
}

/// The map field whose entry type `entry` is (map entries are nested in the message that has the map).
pub(crate) fn map_field_of(entry: &MessageDescriptor) -> Option<FieldDescriptor> {
    let parent = entry.parent_message()?;
    let found = parent
        .fields()
        .find(|f| child_message(f).is_some_and(|c| c.full_name() == entry.full_name()));
    found
}

/// The message type of a singular or repeated message field.
pub(crate) fn child_message(field: &FieldDescriptor) -> Option<MessageDescriptor> {
    match field.kind() {
        Kind::Message(message) => Some(message),
        _ => None,
    }
}
