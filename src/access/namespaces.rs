//! The namespace policy of a cluster connection (`acl.allowed_namespaces`) and its enforcement on
//! the messages of a call.
//!
//! - **Requests** are checked message by message (each message of a stream too), and the
//!   `temporal-namespace` header: every namespace a request names, by name or by ID, must be
//!   allowed, else the call fails with PERMISSION_DENIED naming the namespace.
//! - **Responses** are filtered: replication tasks and `ListNamespaces` entries of namespaces that
//!   are not allowed are dropped from their lists ([`super::scope::FILTERED_ELEMENTS`]); the rest of
//!   the message goes on unchanged. A replication stream therefore keeps flowing for the allowed
//!   namespaces; the receiving cluster acknowledges past the dropped tasks (the message's
//!   watermarks are kept), so they are not sent again and never cross the link.
//!
//! Allowed names are **local** names (as the local cluster calls its namespaces). Names on the
//! wire are brought to local names with the link's translation first; IDs are resolved against the
//! local cluster ([`super::resolver`]). A namespace ID the local cluster does not know is denied.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;

use super::resolver::{NamespaceResolver, ResolveError};
use super::scope::{ElementKind, MethodScope, NamespaceRef, ScopeError, ScopePlan};
use crate::metrics::DenialLabel;

/// How the names in a message relate to the local cluster's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameSide {
    /// The message comes from (or was written by) the local cluster.
    Local,
    /// The message comes from the remote cluster: its names are translated to local ones first.
    Remote,
}

/// Why a message did not pass.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("namespace {shown} is not allowed on {listener:?}")]
    Denied { shown: String, listener: String },
    #[error("{0}")]
    Unresolved(#[from] ResolveError),
    #[error("{0}")]
    Malformed(#[from] ScopeError),
}

/// The namespaces a cluster connection lets through, and how to see names as local names.
#[derive(Debug, Clone, Default)]
pub(crate) struct NamespacePolicy {
    allowed: HashSet<String>,
    remote_to_local: HashMap<String, String>,
}

impl NamespacePolicy {
    /// `allowed` in local names; `translate` the link's local → remote namespace mapping.
    pub(crate) fn new(allowed: &[String], translate: &BTreeMap<String, String>) -> Self {
        Self {
            allowed: allowed.iter().cloned().collect(),
            remote_to_local: translate
                .iter()
                .map(|(local, remote)| (remote.clone(), local.clone()))
                .collect(),
        }
    }

    pub(crate) fn local_name<'a>(&'a self, name: &'a str, side: NameSide) -> &'a str {
        match side {
            NameSide::Local => name,
            NameSide::Remote => self
                .remote_to_local
                .get(name)
                .map(String::as_str)
                .unwrap_or(name),
        }
    }

    pub(crate) fn allows(&self, name: &str, side: NameSide) -> bool {
        self.allowed.contains(self.local_name(name, side))
    }
}

/// What was denied: the `kind` label of `strait_acl_denials_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DenialKind {
    Method,
    Namespace,
    Element(ElementKind),
}

impl From<DenialKind> for DenialLabel {
    fn from(kind: DenialKind) -> Self {
        match kind {
            DenialKind::Method => DenialLabel::Method,
            DenialKind::Namespace => DenialLabel::Namespace,
            DenialKind::Element(ElementKind::ReplicationTask) => DenialLabel::ReplicationTask,
            DenialKind::Element(ElementKind::NamespaceEntry) => DenialLabel::NamespaceEntry,
        }
    }
}

/// Namespace enforcement for one listener context of a cluster connection.
pub struct NamespaceAcl {
    pub(crate) listener: Arc<str>,
    policy: NamespacePolicy,
    resolver: Arc<NamespaceResolver>,
    scope: Arc<ScopePlan>,
    request_names: NameSide,
    response_names: NameSide,
}

impl NamespaceAcl {
    pub(crate) fn new(
        listener: Arc<str>,
        policy: NamespacePolicy,
        resolver: Arc<NamespaceResolver>,
        scope: Arc<ScopePlan>,
        request_names: NameSide,
    ) -> Self {
        let response_names = match request_names {
            NameSide::Local => NameSide::Remote,
            NameSide::Remote => NameSide::Local,
        };
        Self {
            listener,
            policy,
            resolver,
            scope,
            request_names,
            response_names,
        }
    }

    /// Checks a request's `temporal-namespace` header.
    pub(crate) fn check_header(&self, name: &str) -> Result<(), AccessError> {
        if name.is_empty() || self.policy.allows(name, self.request_names) {
            return Ok(());
        }
        crate::metrics::acl_denied(&self.listener, DenialKind::Namespace);
        Err(self.denied(name, self.request_names))
    }

    fn denied(&self, name: &str, side: NameSide) -> AccessError {
        let local = self.policy.local_name(name, side);
        let shown = if local == name {
            format!("{name:?}")
        } else {
            format!("{name:?} (locally {local:?})")
        };
        AccessError::Denied {
            shown,
            listener: self.listener.to_string(),
        }
    }

    /// The scope-plan ids of a method's request and response types, where they name namespaces.
    pub(crate) fn method_scope(&self, path: &str) -> Option<MethodScope> {
        self.scope.method(path)
    }

    /// Whether every reference is allowed; the first denied one is the error.
    async fn judge(&self, refs: &[NamespaceRef], side: NameSide) -> Result<(), AccessError> {
        for reference in refs {
            match reference {
                NamespaceRef::Name(name) => {
                    if !self.policy.allows(name, side) {
                        return Err(self.denied(name, side));
                    }
                }
                NamespaceRef::Id(id) => match self.resolver.name_of(id).await? {
                    Some(name) if self.policy.allows(&name, NameSide::Local) => {}
                    Some(name) => {
                        return Err(AccessError::Denied {
                            shown: format!("{name:?} (id {id})"),
                            listener: self.listener.to_string(),
                        })
                    }
                    None => {
                        return Err(AccessError::Denied {
                            shown: format!("id {id} (unknown to the local cluster)"),
                            listener: self.listener.to_string(),
                        })
                    }
                },
            }
        }
        Ok(())
    }
}

impl NamespaceAcl {
    /// Checks a request message (of scope type `id`, uncompressed): every namespace it names must
    /// be allowed.
    pub(crate) async fn check_request(&self, id: u32, body: &[u8]) -> Result<(), AccessError> {
        let refs = self.scope.references(id, body)?;
        if let Err(err) = self.judge(&refs, self.request_names).await {
            if matches!(err, AccessError::Denied { .. }) {
                crate::metrics::acl_denied(&self.listener, DenialKind::Namespace);
            }
            return Err(err);
        }
        Ok(())
    }

    /// Filters a response message (of scope type `id`, uncompressed): the elements of namespaces
    /// not allowed are dropped; the same `Bytes` when none is.
    pub(crate) async fn filter_response(&self, id: u32, body: Bytes) -> Result<Bytes, AccessError> {
        let elements = self.scope.elements(id, &body)?;
        let mut removed = HashSet::new();
        for element in &elements {
            // A name decides; only an element named by ID alone costs a lookup.
            let names: Vec<NamespaceRef> = element
                .owner
                .iter()
                .filter(|r| matches!(r, NamespaceRef::Name(_)))
                .cloned()
                .collect();
            let owner = if names.is_empty() {
                &element.owner
            } else {
                &names
            };
            match self.judge(owner, self.response_names).await {
                Ok(()) => {}
                Err(AccessError::Denied { .. }) => {
                    crate::metrics::acl_denied(&self.listener, DenialKind::Element(element.kind));
                    removed.insert(element.start);
                }
                Err(err) => return Err(err),
            }
        }
        if removed.is_empty() {
            return Ok(body);
        }
        Ok(self.scope.remove(id, &body, &removed)?)
    }
}
