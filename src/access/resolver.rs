//! Namespace IDs resolved to names against the local cluster (`DescribeNamespace` by ID, a unary
//! call of `grpc::client` over the link's local upstream pool), cached. Requests and replication
//! tasks that name a namespace only by ID are judged by the name the local cluster gives it. IDs
//! are the same on both sides of a link (a replicated namespace keeps its ID), so the local cluster
//! is always the one asked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, Value};
use tracing::debug;

use crate::grpc::client::{Client, ClientError};
use crate::grpc::status::Code;
use crate::relay::upstream::UpstreamPool;

const DESCRIBE_NAMESPACE: &str =
    "/temporal.api.workflowservice.v1.WorkflowService/DescribeNamespace";
const REQUEST_TYPE: &str = "temporal.api.workflowservice.v1.DescribeNamespaceRequest";
const RESPONSE_TYPE: &str = "temporal.api.workflowservice.v1.DescribeNamespaceResponse";
/// A namespace's ID never changes; its name can (rarely): known IDs are asked again after this.
const KNOWN_TTL: Duration = Duration::from_secs(300);
/// An unknown ID may be a namespace that is being created: asked again after this.
const UNKNOWN_TTL: Duration = Duration::from_secs(5);
/// Bound on cached IDs; the cache starts over when full.
const MAX_CACHED: usize = 10_000;
/// Largest DescribeNamespace response accepted.
const MAX_RESPONSE: u32 = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("the descriptor set lacks {0}")]
    Descriptors(&'static str),
    #[error("cannot ask the local cluster for namespace id {id}: {reason}")]
    Unavailable { id: String, reason: String },
    #[error("local cluster answered DescribeNamespace for id {id} with {code:?}: {message}")]
    Failed {
        id: String,
        code: Code,
        message: String,
    },
    #[error("local cluster's DescribeNamespace response for id {id} is malformed: {reason}")]
    Malformed { id: String, reason: String },
}

struct Cached {
    name: Option<String>,
    at: Instant,
}

pub(crate) struct NamespaceResolver {
    client: Client,
    request_type: MessageDescriptor,
    response_type: MessageDescriptor,
    timeout: Duration,
    cache: Mutex<HashMap<String, Cached>>,
}

impl NamespaceResolver {
    pub(crate) fn new(
        upstream: Arc<UpstreamPool>,
        pool: &DescriptorPool,
        timeout: Duration,
    ) -> Result<Self, ResolveError> {
        Ok(Self {
            client: Client::over_pool(upstream).with_max_response(MAX_RESPONSE),
            request_type: pool
                .get_message_by_name(REQUEST_TYPE)
                .ok_or(ResolveError::Descriptors(REQUEST_TYPE))?,
            response_type: pool
                .get_message_by_name(RESPONSE_TYPE)
                .ok_or(ResolveError::Descriptors(RESPONSE_TYPE))?,
            timeout,
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        match self.cache.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The local cluster's name for namespace `id`; `None` when it knows no such namespace.
    pub(crate) async fn name_of(&self, id: &str) -> Result<Option<String>, ResolveError> {
        if let Some(cached) = self.cache().get(id) {
            let ttl = if cached.name.is_some() {
                KNOWN_TTL
            } else {
                UNKNOWN_TTL
            };
            if cached.at.elapsed() < ttl {
                return Ok(cached.name.clone());
            }
        }
        let name = self.describe(id).await?;
        debug!(id, ?name, "namespace id resolved");
        let mut cache = self.cache();
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(
            id.to_owned(),
            Cached {
                name: name.clone(),
                at: Instant::now(),
            },
        );
        Ok(name)
    }

    async fn describe(&self, id: &str) -> Result<Option<String>, ResolveError> {
        let mut request = DynamicMessage::new(self.request_type.clone());
        request.set_field_by_name("id", Value::String(id.to_owned()));
        let request = prost::Message::encode_to_vec(&request);
        let message = match self
            .client
            .unary(DESCRIBE_NAMESPACE, &request, self.timeout)
            .await
        {
            Ok(message) => message,
            Err(ClientError::Status {
                code: Code::NotFound,
                ..
            }) => return Ok(None),
            Err(err) => return Err(Self::failed(id, err)),
        };
        let malformed = |reason: String| ResolveError::Malformed {
            id: id.to_owned(),
            reason,
        };
        let response = DynamicMessage::decode(self.response_type.clone(), message)
            .map_err(|e| malformed(e.to_string()))?;
        let name = response
            .get_field_by_name("namespace_info")
            .and_then(|info| match info.as_ref() {
                Value::Message(info) => info
                    .get_field_by_name("name")
                    .and_then(|name| name.as_str().map(str::to_owned)),
                _ => None,
            })
            .filter(|name| !name.is_empty());
        match name {
            Some(name) => Ok(Some(name)),
            None => Err(malformed("no namespace_info.name".into())),
        }
    }

    /// What a failed call means here: the cluster's own answer, a malformed answer, or no answer.
    fn failed(id: &str, err: ClientError) -> ResolveError {
        match err {
            ClientError::Status { code, message, .. } => ResolveError::Failed {
                id: id.to_owned(),
                code,
                message,
            },
            ClientError::Frame { .. }
            | ClientError::Compressed { .. }
            | ClientError::NotUnary { .. } => ResolveError::Malformed {
                id: id.to_owned(),
                reason: err.to_string(),
            },
            ClientError::Connect { .. }
            | ClientError::Handshake { .. }
            | ClientError::Unavailable(_)
            | ClientError::Http2 { .. }
            | ClientError::HttpStatus { .. }
            | ClientError::DeadlineExceeded { .. }
            | ClientError::Path { .. } => ResolveError::Unavailable {
                id: id.to_owned(),
                reason: err.to_string(),
            },
        }
    }
}
