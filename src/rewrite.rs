//! Descriptor-guided wire rewriting: namespace names and search-attribute names translated between
//! the client-side and upstream-side names of a listener, invalid UTF-8 repaired — editing only the
//! bytes of the fields concerned and copying everything else verbatim. Unless upstream names are
//! exposed, a listener's clients see client-side names only: upstream-side names that are mapping
//! targets are refused in requests, and colliding upstream names are dropped from responses' lists.
//!
//! - `plan`: which fields of which message types are targets (compiled once from the descriptor set).
//! - `walker`: one pass over a message's bytes, producing splices with `crate::wire` (the only code
//!   that touches tags, varints and lengths).
//! - `query`: search-attribute names inside visibility queries.
//! - `status_details`: namespaces and search attributes inside `grpc-status-details-bin` and
//!   `grpc-message`.

pub mod plan;
#[cfg(feature = "internals")]
pub mod query;
#[cfg(not(feature = "internals"))]
#[allow(unreachable_pub)] // public with `internals`, for the fuzz targets and benches
pub(crate) mod query;
#[cfg(feature = "internals")]
pub mod reference;
pub mod status_details;
pub mod walker;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use prost_reflect::DescriptorPool;

use self::plan::{MsgId, Plan, Targets, TextKind};
use self::walker::{EditError, EditStats, TextEdit, TextEditor, Unknown};
use crate::config::TranslateConfig;
use crate::metrics::RewriteCounts;
use crate::wire::{self, Chunks};

impl From<&EditStats> for RewriteCounts {
    fn from(stats: &EditStats) -> Self {
        RewriteCounts {
            namespaces: stats.namespaces,
            search_attributes: stats.search_attributes,
            queries: stats.queries,
            utf8_repairs: stats.utf8_repairs,
        }
    }
}

/// A one-to-one name mapping, usable both ways.
#[derive(Debug, Clone, Default)]
pub(crate) struct BiMap {
    to_upstream: HashMap<String, String>,
    to_client: HashMap<String, String>,
    /// Names each way that the mapping does not translate but the other way produces: upstream
    /// names that are mapping targets (refused in requests), and client-side names the upstream
    /// also uses for something else (hidden in responses). Empty when upstream names are exposed.
    shadowed_upstream: HashSet<String>,
    shadowed_client: HashSet<String>,
}

impl BiMap {
    pub(crate) fn new(pairs: &BTreeMap<String, String>) -> Self {
        let to_upstream: HashMap<String, String> =
            pairs.iter().map(|(c, u)| (c.clone(), u.clone())).collect();
        let to_client = pairs.iter().map(|(c, u)| (u.clone(), c.clone())).collect();
        Self {
            to_upstream,
            to_client,
            ..Self::default()
        }
    }

    /// The same mapping, with upstream-side names refused in requests and colliding names
    /// hidden in responses (a listener's default: its clients see one consistent set of names).
    pub(crate) fn consistent(mut self) -> Self {
        let shadows = |this: &HashMap<String, String>, other: &HashMap<String, String>| {
            other
                .keys()
                .filter(|name| !this.contains_key(*name))
                .cloned()
                .collect()
        };
        self.shadowed_upstream = shadows(&self.to_upstream, &self.to_client);
        self.shadowed_client = shadows(&self.to_client, &self.to_upstream);
        self
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.to_upstream.is_empty()
    }

    pub(crate) fn get(&self, direction: Direction) -> &HashMap<String, String> {
        match direction {
            Direction::ToUpstream => &self.to_upstream,
            Direction::ToClient => &self.to_client,
        }
    }

    /// Whether `name`, arriving in a message going `direction`, names something the listener's
    /// clients cannot see: refused in requests, hidden in responses.
    pub(crate) fn shadowed(&self, name: &str, direction: Direction) -> bool {
        match direction {
            Direction::ToUpstream => self.shadowed_upstream.contains(name),
            Direction::ToClient => self.shadowed_client.contains(name),
        }
    }
}

/// Which way a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Requests: client-side names become upstream-side names.
    ToUpstream,
    /// Responses, trailers and error details: upstream-side names become client-side names.
    ToClient,
}

/// A listener's translation, with the plans for both directions.
pub struct Rewriter {
    pub(crate) namespaces: BiMap,
    /// Search-attribute maps by client-side namespace, and by upstream-side namespace.
    search_attributes: HashMap<String, BiMap>,
    upstream_namespaces: HashMap<String, String>,
    pub(crate) repair_utf8: bool,
    request_plan: Arc<Plan>,
    response_plan: Arc<Plan>,
}

/// Plans compiled so far, by targets, so listeners with the same needs share one.
#[derive(Default)]
pub struct PlanCache {
    plans: HashMap<Targets, Arc<Plan>>,
}

impl PlanCache {
    pub(crate) fn get(&mut self, pool: &DescriptorPool, targets: Targets) -> Arc<Plan> {
        Arc::clone(
            self.plans
                .entry(targets)
                .or_insert_with(|| Arc::new(Plan::compile(pool, targets))),
        )
    }
}

impl Rewriter {
    /// `None` when the configuration asks for no edits: the listener then relays pass-through only.
    pub fn new(
        config: &TranslateConfig,
        pool: &DescriptorPool,
        cache: &mut PlanCache,
    ) -> Option<Arc<Rewriter>> {
        // Unless told otherwise, clients see client-side names only (see `BiMap::consistent`).
        let expose = config.expose_upstream_names.unwrap_or(false);
        let bimap = |pairs| {
            let map = BiMap::new(pairs);
            if expose {
                map
            } else {
                map.consistent()
            }
        };
        let namespaces = bimap(&config.namespaces);
        let search_attributes: HashMap<String, BiMap> = config
            .search_attributes
            .iter()
            .map(|(ns, map)| (ns.clone(), bimap(map)))
            .collect();
        let has_attributes = search_attributes.values().any(|m| !m.is_empty());
        let request_targets = Targets {
            namespaces: !namespaces.is_empty(),
            search_attributes: has_attributes,
            utf8: false,
        };
        let response_targets = Targets {
            utf8: config.repair_utf8,
            ..request_targets
        };
        if !response_targets.any() {
            return None;
        }
        let upstream_namespaces = search_attributes
            .keys()
            .map(|client| {
                let upstream = namespaces
                    .get(Direction::ToUpstream)
                    .get(client)
                    .unwrap_or(client);
                (upstream.clone(), client.clone())
            })
            .collect();
        Some(Arc::new(Rewriter {
            namespaces,
            search_attributes,
            upstream_namespaces,
            repair_utf8: config.repair_utf8,
            request_plan: cache.get(pool, request_targets),
            response_plan: cache.get(pool, response_targets),
        }))
    }

    pub fn plan(&self, direction: Direction) -> &Plan {
        match direction {
            Direction::ToUpstream => &self.request_plan,
            Direction::ToClient => &self.response_plan,
        }
    }

    /// The message types to edit for a call, request side and response side.
    pub fn method(&self, path: &str) -> (Option<MsgId>, Option<MsgId>) {
        let request = self.request_plan.method(path).and_then(|m| m.request);
        let response = self.response_plan.method(path).and_then(|m| m.response);
        (request, response)
    }

    pub(crate) fn translate_namespace(&self, name: &str, direction: Direction) -> Option<&str> {
        self.namespaces.get(direction).get(name).map(String::as_str)
    }

    /// The refusal of a request naming `name` (a `temporal-namespace` header, say) when it is an
    /// upstream-side name this listener's clients cannot see.
    pub fn refused_namespace(&self, name: &str) -> Option<Unknown> {
        self.namespaces
            .shadowed(name, Direction::ToUpstream)
            .then(|| Unknown::Namespace(name.to_owned()))
    }

    /// The search-attribute map of a call, given its client-side namespace.
    pub(crate) fn attributes_for(&self, client_namespace: &str) -> Option<&BiMap> {
        self.search_attributes
            .get(client_namespace)
            .filter(|m| !m.is_empty())
    }

    /// The client-side namespace for a namespace name as the request carries it.
    pub fn client_namespace<'a>(&'a self, name: &'a str, direction_of_name: Direction) -> &'a str {
        match direction_of_name {
            Direction::ToUpstream => name,
            Direction::ToClient => self
                .upstream_namespaces
                .get(name)
                .map(String::as_str)
                .unwrap_or_else(|| {
                    self.namespaces
                        .get(Direction::ToClient)
                        .get(name)
                        .map(String::as_str)
                        .unwrap_or(name)
                }),
        }
    }

    /// The text editor for one direction of a call.
    pub fn editor<'a>(
        &'a self,
        direction: Direction,
        client_namespace: Option<&'a str>,
    ) -> NameEditor<'a> {
        let attributes = client_namespace.and_then(|ns| Some((ns, self.attributes_for(ns)?)));
        NameEditor {
            direction,
            namespaces: &self.namespaces,
            attributes,
            repair_utf8: self.repair_utf8 && direction == Direction::ToClient,
        }
    }
}

/// Edits string values: namespace and search-attribute names by map, queries by tokenizer, UTF-8.
/// Shadowed names (see `BiMap::shadowed`) are refused in requests and hidden in responses.
pub struct NameEditor<'a> {
    direction: Direction,
    namespaces: &'a BiMap,
    /// The call's client-side namespace and its search-attribute map.
    attributes: Option<(&'a str, &'a BiMap)>,
    repair_utf8: bool,
}

impl NameEditor<'_> {
    /// A name looked up in `map`: translated; for a shadowed name, refused with `unknown` in
    /// requests and hidden in responses; else kept.
    fn name(
        &self,
        map: &BiMap,
        text: &str,
        unknown: impl FnOnce() -> Unknown,
    ) -> Result<TextEdit, EditError> {
        if let Some(to) = map.get(self.direction).get(text) {
            return Ok(TextEdit::Replace(to.as_bytes().to_vec()));
        }
        if !map.shadowed(text, self.direction) {
            return Ok(TextEdit::Keep);
        }
        match self.direction {
            Direction::ToUpstream => Err(EditError::Unknown(unknown())),
            Direction::ToClient => Ok(TextEdit::Hide),
        }
    }

    fn query(&self, map: &BiMap, text: &str) -> Result<TextEdit, EditError> {
        let names = map.get(self.direction);
        // Responses are never refused: a query an upstream wrote is kept as it is where it names
        // something hidden.
        let refuse = self.direction == Direction::ToUpstream;
        let lookup = |name: &str| match names.get(name) {
            Some(to) => query::Lookup::Rename(to.as_str()),
            None if refuse && map.shadowed(name, self.direction) => query::Lookup::Refuse,
            None => query::Lookup::Keep,
        };
        match query::translate_query_with(text, &lookup) {
            Ok(Some(new)) => Ok(TextEdit::Replace(new.into_bytes())),
            Ok(None) => Ok(TextEdit::Keep),
            Err(query::QueryError::Refused { name, .. }) => {
                Err(EditError::Unknown(Unknown::QueryAttribute(name)))
            }
            Err(err) => Err(EditError::Query(err.to_string())),
        }
    }
}

impl TextEditor for NameEditor<'_> {
    fn edit(
        &self,
        kind: TextKind,
        value: &[u8],
        stats: &mut EditStats,
    ) -> Result<TextEdit, EditError> {
        let Ok(text) = std::str::from_utf8(value) else {
            if self.repair_utf8 {
                stats.utf8_repairs += 1;
                return Ok(TextEdit::Replace(
                    String::from_utf8_lossy(value).into_owned().into_bytes(),
                ));
            }
            return Ok(TextEdit::Keep);
        };
        let edit = match (kind, self.attributes) {
            (TextKind::Namespace, _) => self.name(self.namespaces, text, || {
                Unknown::Namespace(text.to_owned())
            })?,
            (TextKind::SearchAttribute, Some((namespace, map))) => {
                self.name(map, text, || Unknown::SearchAttribute {
                    namespace: namespace.to_owned(),
                    name: text.to_owned(),
                })?
            }
            (TextKind::Query, Some((_, map))) => self.query(map, text)?,
            (TextKind::SearchAttribute | TextKind::Query, None) | (TextKind::Plain, _) => {
                TextEdit::Keep
            }
        };
        if matches!(edit, TextEdit::Replace(_)) {
            match kind {
                TextKind::Namespace => stats.namespaces += 1,
                TextKind::SearchAttribute => stats.search_attributes += 1,
                TextKind::Query => stats.queries += 1,
                TextKind::Plain => {}
            }
        }
        Ok(edit)
    }
}

/// The request type and path of `AdminService.AddOrUpdateRemoteCluster`.
const ADD_REMOTE_CLUSTER: (&str, &str) = (
    "/temporal.server.api.adminservice.v1.AdminService/AddOrUpdateRemoteCluster",
    "temporal.server.api.adminservice.v1.AddOrUpdateRemoteClusterRequest",
);

/// A top-level string field of one method's requests set to a fixed value: the frontend address in
/// `AddOrUpdateRemoteCluster` calls crossing a link becomes the address the receiving cluster must
/// dial to reach the caller, the proxy's advertised address (s2s-proxy's `replicationEndpoint`).
#[derive(Debug, Clone)]
pub struct FieldOverride {
    pub(crate) path: &'static str,
    pub(crate) field: u32,
    pub(crate) value: String,
}

impl FieldOverride {
    /// `AddOrUpdateRemoteClusterRequest.frontend_address` set to `address`; `None` when the
    /// descriptor set lacks the field.
    pub(crate) fn frontend_address(pool: &DescriptorPool, address: &str) -> Option<FieldOverride> {
        let (path, request) = ADD_REMOTE_CLUSTER;
        let field = pool
            .get_message_by_name(request)?
            .get_field_by_name("frontend_address")?;
        Some(FieldOverride {
            path,
            field: field.number(),
            value: address.to_owned(),
        })
    }

    pub(crate) fn apply(&self, body: &Chunks) -> Result<Chunks, EditError> {
        wire::replace_top_level(body, self.field, self.value.as_bytes()).map_err(|source| {
            EditError::Wire {
                message: ADD_REMOTE_CLUSTER.1.to_owned(),
                source,
            }
        })
    }
}

impl Rewriter {
    /// Edits one uncompressed message of type `message` going `direction`, in the pieces it arrived
    /// in; the same [`Chunks`] when nothing changes. The first request message naming a namespace
    /// sets `call_namespace` (which search-attribute map applies) if the headers did not.
    pub fn edit(
        &self,
        direction: Direction,
        message: MsgId,
        call_namespace: &OnceLock<String>,
        body: &Chunks,
        stats: &mut EditStats,
    ) -> Result<Chunks, EditError> {
        let plan = self.plan(direction);
        if direction == Direction::ToUpstream && call_namespace.get().is_none() {
            if let Some(ns) = walker::top_level_namespace(plan, message, body) {
                let _ = call_namespace.set(ns);
            }
        }
        let editor = self.editor(direction, call_namespace.get().map(String::as_str));
        walker::edit_chunks(plan, message, body, &editor, stats)
    }
}
