//! Namespace IDs resolved to names against the local cluster (`DescribeNamespace` by ID through the
//! link's local upstream), cached. Requests and replication tasks that name a namespace only by ID
//! are judged by the name the local cluster gives it. IDs are the same on both sides of a link (a
//! replicated namespace keeps its ID), so the local cluster is always the one asked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Request, Uri};
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, Value};
use tracing::debug;

use crate::grpc::frame::{encode_message, FrameDecoder, FrameEvent};
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

pub struct NamespaceResolver {
    upstream: Arc<UpstreamPool>,
    request_type: MessageDescriptor,
    response_type: MessageDescriptor,
    timeout: Duration,
    cache: Mutex<HashMap<String, Cached>>,
}

impl NamespaceResolver {
    pub fn new(
        upstream: Arc<UpstreamPool>,
        pool: &DescriptorPool,
        timeout: Duration,
    ) -> Result<Self, ResolveError> {
        Ok(Self {
            upstream,
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
    pub async fn name_of(&self, id: &str) -> Result<Option<String>, ResolveError> {
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
        let unavailable = |reason: String| ResolveError::Unavailable {
            id: id.to_owned(),
            reason,
        };
        let deadline = Instant::now() + self.timeout;
        let send = self
            .upstream
            .acquire(deadline)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let mut request_message = DynamicMessage::new(self.request_type.clone());
        request_message.set_field_by_name("id", Value::String(id.to_owned()));
        let body = encode_message(false, &prost::Message::encode_to_vec(&request_message))
            .map_err(|e| unavailable(e.to_string()))?;
        let uri = Uri::builder()
            .scheme(self.upstream.scheme().clone())
            .authority(self.upstream.authority().clone())
            .path_and_query(DESCRIBE_NAMESPACE)
            .build()
            .map_err(|e| unavailable(e.to_string()))?;
        let mut request = Request::new(());
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
        let millis = self.timeout.as_millis().clamp(1, 99_999_999);
        if let Ok(value) = HeaderValue::from_str(&format!("{millis}m")) {
            headers.insert("grpc-timeout", value);
        }

        let exchange = async {
            let mut send = send;
            let (response, mut request_body) = send
                .send_request(request, false)
                .map_err(|e| unavailable(e.to_string()))?;
            request_body
                .send_data(body, true)
                .map_err(|e| unavailable(e.to_string()))?;
            let response = response.await.map_err(|e| unavailable(e.to_string()))?;
            let (parts, mut recv) = response.into_parts();
            if recv.is_end_stream() {
                return Ok((parts.headers, BytesMut::new()));
            }
            let mut data = BytesMut::new();
            while let Some(chunk) = recv.data().await {
                let chunk = chunk.map_err(|e| unavailable(e.to_string()))?;
                let _ = recv.flow_control().release_capacity(chunk.len());
                if data.len() + chunk.len() > MAX_RESPONSE as usize + 5 {
                    return Err(ResolveError::Malformed {
                        id: id.to_owned(),
                        reason: "response too large".into(),
                    });
                }
                data.extend_from_slice(&chunk);
            }
            let trailers = recv
                .trailers()
                .await
                .map_err(|e| unavailable(e.to_string()))?
                .unwrap_or_default();
            Ok((trailers, data))
        };
        let (status, data) = tokio::time::timeout_at(deadline.into(), exchange)
            .await
            .map_err(|_| unavailable(format!("no answer within {:?}", self.timeout)))??;
        match Code::from_headers(&status) {
            Some(Code::Ok) => {}
            Some(Code::NotFound) => return Ok(None),
            code => {
                let message = status
                    .get("grpc-message")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                return Err(ResolveError::Failed {
                    id: id.to_owned(),
                    code: code.unwrap_or(Code::Unknown),
                    message,
                });
            }
        }
        let malformed = |reason: String| ResolveError::Malformed {
            id: id.to_owned(),
            reason,
        };
        let mut input = data.freeze();
        let mut decoder = FrameDecoder::new(MAX_RESPONSE);
        let mut message = BytesMut::new();
        let mut compressed = false;
        while let Some(event) = decoder
            .next(&mut input)
            .map_err(|e| malformed(e.to_string()))?
        {
            match event {
                FrameEvent::Header(header) => compressed = header.compressed,
                FrameEvent::Body(part) => message.extend_from_slice(&part),
                FrameEvent::End => break,
            }
        }
        if compressed {
            return Err(malformed("compressed although none was accepted".into()));
        }
        let response = DynamicMessage::decode(self.response_type.clone(), Bytes::from(message))
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
}
