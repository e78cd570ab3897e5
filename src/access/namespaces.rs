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
use super::scope::{ElementKind, NamespaceRef, ScopePlan};
use crate::rewrite::compression::{self, CompressionError, Encoding};
use crate::rewrite::walker::EditError;

/// How the names in a message relate to the local cluster's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameSide {
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
    Malformed(#[from] EditError),
    #[error("{0}")]
    Compression(#[from] CompressionError),
}

/// The namespaces a cluster connection lets through, and how to see names as local names.
#[derive(Debug, Clone, Default)]
pub struct NamespacePolicy {
    allowed: HashSet<String>,
    remote_to_local: HashMap<String, String>,
}

impl NamespacePolicy {
    /// `allowed` in local names; `translate` the link's local → remote namespace mapping.
    pub fn new(allowed: &[String], translate: &BTreeMap<String, String>) -> Self {
        Self {
            allowed: allowed.iter().cloned().collect(),
            remote_to_local: translate
                .iter()
                .map(|(local, remote)| (remote.clone(), local.clone()))
                .collect(),
        }
    }

    pub fn local_name<'a>(&'a self, name: &'a str, side: NameSide) -> &'a str {
        match side {
            NameSide::Local => name,
            NameSide::Remote => self
                .remote_to_local
                .get(name)
                .map(String::as_str)
                .unwrap_or(name),
        }
    }

    pub fn allows(&self, name: &str, side: NameSide) -> bool {
        self.allowed.contains(self.local_name(name, side))
    }
}

/// What was denied: the `kind` label of `strait_acl_denials_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenialKind {
    Method,
    Namespace,
    Element(ElementKind),
}

impl DenialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DenialKind::Method => "method",
            DenialKind::Namespace => "namespace",
            DenialKind::Element(kind) => kind.as_str(),
        }
    }
}

/// Namespace enforcement for one listener context of a cluster connection.
pub struct NamespaceAcl {
    pub listener: Arc<str>,
    policy: NamespacePolicy,
    resolver: Arc<NamespaceResolver>,
    scope: Arc<ScopePlan>,
    request_names: NameSide,
    response_names: NameSide,
}

/// One direction of one call.
pub struct MessageGuard {
    acl: Arc<NamespaceAcl>,
    mode: GuardMode,
    encoding: Encoding,
    limit: u32,
}

#[derive(Debug, Clone, Copy)]
enum GuardMode {
    /// Requests: every named namespace must be allowed.
    Check(u32),
    /// Responses: denied elements are dropped.
    Filter(u32),
}

impl NamespaceAcl {
    pub fn new(
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
    pub fn check_header(&self, name: &str) -> Result<(), AccessError> {
        if name.is_empty() || self.policy.allows(name, self.request_names) {
            return Ok(());
        }
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

    /// The guards of a call by `:path`: (request, response); `None` where there is nothing to read.
    pub fn guards(
        self: &Arc<Self>,
        path: &str,
        request_encoding: Encoding,
        limit: u32,
    ) -> (Option<MessageGuard>, Option<MessageGuardFactory>) {
        let Some(scope) = self.scope.method(path) else {
            return (None, None);
        };
        let request = scope.request.map(|id| MessageGuard {
            acl: Arc::clone(self),
            mode: GuardMode::Check(id),
            encoding: request_encoding,
            limit,
        });
        let response = scope.response.map(|id| MessageGuardFactory {
            acl: Arc::clone(self),
            id,
            limit,
        });
        (request, response)
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

/// Makes the response guard once the response's `grpc-encoding` is known.
pub struct MessageGuardFactory {
    acl: Arc<NamespaceAcl>,
    id: u32,
    limit: u32,
}

impl MessageGuardFactory {
    pub fn guard(self, encoding: Encoding) -> MessageGuard {
        MessageGuard {
            acl: self.acl,
            mode: GuardMode::Filter(self.id),
            encoding,
            limit: self.limit,
        }
    }
}

impl MessageGuard {
    /// Checks (requests) or filters (responses) one message; returns the message to forward, the
    /// same `Bytes` when nothing was dropped.
    pub async fn apply(&self, compressed: bool, body: Bytes) -> Result<Bytes, AccessError> {
        let plain = if compressed {
            match &self.encoding {
                Encoding::Gzip => Bytes::from(compression::gunzip(&body, self.limit)?),
                Encoding::Identity => return Err(CompressionError::MissingEncoding.into()),
                Encoding::Other(name) => {
                    return Err(CompressionError::Unsupported(name.clone()).into())
                }
            }
        } else {
            body.clone()
        };
        let acl = &self.acl;
        match self.mode {
            GuardMode::Check(id) => {
                let refs = acl.scope.references(id, &plain)?;
                if let Err(err) = acl.judge(&refs, acl.request_names).await {
                    if matches!(err, AccessError::Denied { .. }) {
                        crate::metrics::acl_denied(&acl.listener, DenialKind::Namespace);
                    }
                    return Err(err);
                }
                Ok(body)
            }
            GuardMode::Filter(id) => {
                let elements = acl.scope.elements(id, &plain)?;
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
                    match acl.judge(owner, acl.response_names).await {
                        Ok(()) => {}
                        Err(AccessError::Denied { .. }) => {
                            crate::metrics::acl_denied(
                                &acl.listener,
                                DenialKind::Element(element.kind),
                            );
                            removed.insert(element.start);
                        }
                        Err(err) => return Err(err),
                    }
                }
                if removed.is_empty() {
                    return Ok(body);
                }
                let filtered = acl.scope.remove(id, &plain, &removed)?;
                if compressed {
                    Ok(Bytes::from(compression::gzip(&filtered)?))
                } else {
                    Ok(filtered)
                }
            }
        }
    }
}
