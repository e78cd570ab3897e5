//! The message pipeline: everything Strait does to a call beyond relaying it, as an ordered list of
//! stages chosen once per call.
//!
//! - **Admission.** A listener's [`MethodTable`] is looked up once per call by `:path`. The
//!   [`MethodEntry`] holds all that is known of the method on that listener: its metric handles,
//!   whether the method policy allows it, and its stages, each already specialised for the method
//!   (rewrite plan ids, namespace-scope plan ids, field overrides). Nothing else looks at the path.
//! - **Stages.** A [`Stage`] sees the request headers before the call goes upstream, each message of
//!   the directions it reads (uncompressed), and the status on its way back to the client. It
//!   returns a message unchanged (the same `Bytes`), edited, or rejects it with a typed
//!   [`StageError`]; the relay turns errors into a grpc-status at its edge. Stages know nothing of
//!   HTTP/2 framing and the relay knows nothing of what a stage does.
//! - **Compression** is undone once, before the first stage, and redone once, after the last, and
//!   only when a stage changed the message ([`Flow::process`]).
//! - **Fast path.** A direction no stage reads has no [`Flow`]: the relay streams its bytes without
//!   gathering its messages.
//!
//! Stages, in order: `acl` (a cluster connection's namespace ACL and scope), `translate`
//! (namespace and search-attribute names, UTF-8 repair), `field_override` (a fixed request field).
//!
//! **Adding a stage** takes one module and one line: write a module with a type implementing
//! [`StageFactory`] (what the stage is for one method, or nothing) and one implementing [`Stage`],
//! then add it to the list in [`Pipeline::new`], where its place in the order is decided.

pub(crate) mod acl;
pub(crate) mod field_override;
pub(crate) mod translate;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use http::HeaderMap;

use crate::access::namespaces::{AccessError, NamespaceAcl};
use crate::access::MethodPolicy;
use crate::grpc::compression::{self, CompressionError, Encoding};
use crate::grpc::method::{MethodLabeler, MethodLabels};
use crate::metrics::{ListenerMetrics, MethodMetrics};
use crate::rewrite::walker::{EditError, EditStats};
use crate::rewrite::{Direction, FieldOverride, Rewriter};
use crate::wire::Chunks;

/// What one call's stages share, both directions: set by one stage, read by others.
#[derive(Debug, Default)]
pub struct CallState {
    /// The call's client-side namespace: from the `temporal-namespace` header, else the first
    /// request message that names one.
    pub(crate) namespace: OnceLock<String>,
}

/// Why a stage refused a message (or a call, from its headers). The message is then not forwarded.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// A message (or name) that had to be edited could not be.
    #[error("{0}")]
    Edit(#[from] EditError),
    /// The access policy refused it, or could not judge it.
    #[error("{0}")]
    Access(#[from] AccessError),
}

/// Why a direction's message could not pass the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// It could not be inflated for the stages, or deflated again.
    #[error("{0}")]
    Compression(#[from] CompressionError),
    #[error("{0}")]
    Stage(#[from] StageError),
}

/// A stage's answer for one message: at once, or after waiting (an ACL lookup of a namespace ID).
pub(crate) enum Step<'a> {
    Ready(Result<Chunks, StageError>),
    Wait(Pin<Box<dyn Future<Output = Result<Chunks, StageError>> + Send + 'a>>),
}

/// One concern acting on the calls of one method on one listener.
pub(crate) trait Stage: Send + Sync {
    /// The request headers, before the call goes upstream: edited, or the call refused.
    fn request_headers(
        &self,
        _call: &CallState,
        _headers: &mut HeaderMap,
    ) -> Result<(), StageError> {
        Ok(())
    }

    /// Whether [`Stage::message`] is to see the messages going `direction`.
    fn reads(&self, _direction: Direction) -> bool {
        false
    }

    /// One message going `direction`, uncompressed, in the pieces it arrived in: returned as it is
    /// (the same [`Chunks`]) when it is left alone.
    fn message<'a>(
        &'a self,
        _direction: Direction,
        _call: &'a CallState,
        body: Chunks,
        _stats: &'a mut EditStats,
    ) -> Step<'a> {
        Step::Ready(Ok(body))
    }

    /// A status (trailers, or a trailers-only response's headers) on its way to the client.
    fn response_status(&self, _call: &CallState, _headers: &mut HeaderMap, _stats: &mut EditStats) {
    }
}

/// A stage as configured on a listener, specialised per method when the method table is built.
pub(crate) trait StageFactory: Send + Sync {
    /// The stage for calls of `path`, a method the descriptor set defines; `None` for methods it
    /// defines not (it then sees their headers and statuses only). `None` when it has nothing to do
    /// for them.
    fn for_method(&self, path: Option<&str>) -> Option<Arc<dyn Stage>>;
}

/// A listener's stages, in order.
pub struct Pipeline {
    stages: Vec<Box<dyn StageFactory>>,
}

impl Pipeline {
    /// The stages a listener's configuration asks for, in the order they act (requests and
    /// responses alike).
    pub fn new(
        acl: Option<Arc<NamespaceAcl>>,
        rewriter: Option<Arc<Rewriter>>,
        field_override: Option<FieldOverride>,
    ) -> Pipeline {
        let stages: [Option<Box<dyn StageFactory>>; 3] = [
            acl.map(|acl| Box::new(acl::Acl(acl)) as Box<dyn StageFactory>),
            rewriter.map(|r| Box::new(translate::Translate(r)) as Box<dyn StageFactory>),
            field_override.map(|o| Box::new(field_override::Override(o)) as Box<dyn StageFactory>),
        ];
        Pipeline {
            stages: stages.into_iter().flatten().collect(),
        }
    }

    fn stages_for(&self, path: Option<&str>) -> Vec<Arc<dyn Stage>> {
        self.stages
            .iter()
            .filter_map(|stage| stage.for_method(path))
            .collect()
    }
}

/// All that is known of one method on one listener.
pub struct MethodEntry {
    labels: MethodLabels,
    metrics: OnceLock<Arc<MethodMetrics>>,
    /// False when the listener's method policy refuses it.
    pub(crate) allowed: bool,
    /// Every stage acting on the method's calls, in order (headers and statuses).
    stages: Box<[Arc<dyn Stage>]>,
    /// Those reading requests, and those reading responses: empty for the fast path.
    request: Box<[Arc<dyn Stage>]>,
    response: Box<[Arc<dyn Stage>]>,
}

impl MethodEntry {
    fn new(labels: MethodLabels, allowed: bool, stages: Vec<Arc<dyn Stage>>) -> MethodEntry {
        let reading = |direction| -> Box<[Arc<dyn Stage>]> {
            stages
                .iter()
                .filter(|s| s.reads(direction))
                .cloned()
                .collect()
        };
        MethodEntry {
            labels,
            metrics: OnceLock::new(),
            allowed,
            request: reading(Direction::ToUpstream),
            response: reading(Direction::ToClient),
            stages: stages.into(),
        }
    }

    /// The method's metric handles, registered on its first call (so that `/metrics` lists only
    /// methods that were called).
    pub(crate) fn metrics(&self, listener: &ListenerMetrics) -> Arc<MethodMetrics> {
        Arc::clone(self.metrics.get_or_init(|| listener.method(&self.labels)))
    }

    /// Runs the stages over the request headers; the first refusal ends the call.
    pub(crate) fn request_headers(
        &self,
        call: &CallState,
        headers: &mut HeaderMap,
    ) -> Result<(), StageError> {
        self.stages
            .iter()
            .try_for_each(|stage| stage.request_headers(call, headers))
    }

    /// Lets the stages see a status going to the client (the last stage first, as for messages).
    pub(crate) fn response_status(
        &self,
        call: &CallState,
        headers: &mut HeaderMap,
        stats: &mut EditStats,
    ) {
        for stage in self.stages.iter().rev() {
            stage.response_status(call, headers, stats);
        }
    }

    /// Whether no stage reads the messages going `direction`: they are streamed, never gathered.
    pub(crate) fn is_fast(&self, direction: Direction) -> bool {
        self.stages_reading(direction).is_empty()
    }

    fn stages_reading(&self, direction: Direction) -> &[Arc<dyn Stage>] {
        match direction {
            Direction::ToUpstream => &self.request,
            Direction::ToClient => &self.response,
        }
    }
}

/// Admission: a listener's methods by `:path`, each with its [`MethodEntry`].
pub struct MethodTable {
    methods: HashMap<Box<str>, Arc<MethodEntry>>,
    /// For paths the descriptor set does not define, one entry per label set and policy verdict
    /// (`[denied, allowed]`), shared by all such paths: a known service's unknown methods by
    /// service name, everything else in `other`. Bounded by the descriptor set, whatever clients
    /// send, and their metrics are registered once.
    unknown: HashMap<Box<str>, [Arc<MethodEntry>; 2]>,
    other: [Arc<MethodEntry>; 2],
    policy: Option<Arc<MethodPolicy>>,
}

impl MethodTable {
    /// Every method `labeler` knows, with its stages from `pipeline` and its verdict from `policy`
    /// (`None` allows every method).
    pub fn new(
        labeler: Arc<MethodLabeler>,
        pipeline: &Pipeline,
        policy: Option<Arc<MethodPolicy>>,
    ) -> MethodTable {
        let methods = labeler
            .methods()
            .map(|(path, labels)| {
                let allowed = policy.as_ref().is_none_or(|p| p.allows(&path));
                let stages = pipeline.stages_for(Some(&path));
                let entry = Arc::new(MethodEntry::new(labels, allowed, stages));
                (Box::from(path.as_str()), entry)
            })
            .collect();
        // Stages that act on headers and statuses only: no message type to read.
        let header_stages = pipeline.stages_for(None);
        let pair = |labels: &MethodLabels| {
            [false, true].map(|allowed| {
                Arc::new(MethodEntry::new(
                    labels.clone(),
                    allowed,
                    header_stages.clone(),
                ))
            })
        };
        let mut unknown = HashMap::new();
        let mut other = None;
        for labels in labeler.unknown_labels() {
            if &*labels.service == crate::grpc::method::OTHER {
                other = Some(pair(&labels));
            } else {
                unknown.insert(Box::from(&*labels.service), pair(&labels));
            }
        }
        let other = other.unwrap_or_else(|| pair(&labeler.labels("")));
        MethodTable {
            methods,
            unknown,
            other,
            policy,
        }
    }

    /// The entry for a call's `:path`: the one lookup of a call (two for a path the descriptor set
    /// does not define: its service's).
    pub fn get(&self, path: &str) -> Arc<MethodEntry> {
        if let Some(entry) = self.methods.get(path) {
            return Arc::clone(entry);
        }
        let allowed = self.policy.as_ref().is_none_or(|p| p.allows(path));
        let pair = crate::grpc::method::split_path(path)
            .and_then(|(service, _)| self.unknown.get(service))
            .unwrap_or(&self.other);
        Arc::clone(&pair[usize::from(allowed)])
    }
}

/// One direction of one call whose messages some stage reads: each message is inflated once,
/// passed through the stages in order, and deflated once if one changed it.
pub struct Flow {
    method: Arc<MethodEntry>,
    direction: Direction,
    call: Arc<CallState>,
    encoding: Encoding,
    limit: u32,
    pub stats: EditStats,
}

impl Flow {
    /// `None` when no stage reads this direction (the fast path).
    pub fn new(
        method: &Arc<MethodEntry>,
        direction: Direction,
        call: &Arc<CallState>,
        encoding: Encoding,
        limit: u32,
    ) -> Option<Flow> {
        (!method.is_fast(direction)).then(|| Flow {
            method: Arc::clone(method),
            direction,
            call: Arc::clone(call),
            encoding,
            limit,
            stats: EditStats::default(),
        })
    }

    /// Passes one message through the stages; returns (compressed flag, body) to forward, the input
    /// itself when no stage changed it.
    pub async fn process(
        &mut self,
        compressed: bool,
        body: Chunks,
    ) -> Result<(bool, Chunks), FlowError> {
        let plain = if compressed {
            let inflated =
                compression::decompress(&self.encoding, true, &body.contiguous(), self.limit)?;
            Chunks::from(inflated)
        } else {
            body.clone()
        };
        let mut message = plain.clone();
        for stage in self.method.stages_reading(self.direction) {
            message = match stage.message(self.direction, &self.call, message, &mut self.stats) {
                Step::Ready(result) => result?,
                Step::Wait(future) => future.await?,
            };
        }
        if message.same_as(&plain) {
            return Ok((compressed, body));
        }
        if compressed {
            let deflated = compression::compress(&self.encoding, &message.contiguous())?;
            return Ok((true, Chunks::from(deflated)));
        }
        Ok((false, message))
    }
}
