//! The translation stage: namespace and search-attribute names between a listener's client-side
//! and upstream-side names, in headers, messages and statuses, and invalid UTF-8 repaired in
//! responses ([`crate::rewrite`] does the editing).

use std::sync::Arc;

use http::{HeaderMap, HeaderValue};

use super::{CallState, Stage, StageError, StageFactory, Step};
use crate::rewrite::plan::MsgId;
use crate::rewrite::walker::{EditError, EditStats};
use crate::rewrite::{status_details, Direction, Rewriter};
use crate::wire::Chunks;

pub(crate) struct Translate(pub(crate) Arc<Rewriter>);

impl StageFactory for Translate {
    fn for_method(&self, path: Option<&str>) -> Option<Arc<dyn Stage>> {
        let (request, response) = path.map_or((None, None), |path| self.0.method(path));
        Some(Arc::new(MethodTranslate {
            rewriter: Arc::clone(&self.0),
            request,
            response,
        }))
    }
}

struct MethodTranslate {
    rewriter: Arc<Rewriter>,
    /// The message types edited each way, where they have targets.
    request: Option<MsgId>,
    response: Option<MsgId>,
}

impl Stage for MethodTranslate {
    /// SDKs repeat the namespace in `temporal-namespace`: it travels with the body's translation
    /// (Temporal Cloud rejects a mismatch) and tells which search-attribute map applies. An
    /// upstream-side name the listener's clients cannot see is answered as unknown, before any
    /// upstream is involved.
    fn request_headers(&self, call: &CallState, headers: &mut HeaderMap) -> Result<(), StageError> {
        let Some(name) = headers
            .get("temporal-namespace")
            .and_then(|v| v.to_str().ok())
        else {
            return Ok(());
        };
        if let Some(unknown) = self.rewriter.refused_namespace(name) {
            return Err(EditError::Unknown(unknown).into());
        }
        let name = name.to_owned();
        if let Some(value) = self
            .rewriter
            .translate_namespace(&name, Direction::ToUpstream)
            .and_then(|upstream| HeaderValue::from_str(upstream).ok())
        {
            headers.insert("temporal-namespace", value);
        }
        let _ = call.namespace.set(name);
        Ok(())
    }

    fn reads(&self, direction: Direction) -> bool {
        match direction {
            Direction::ToUpstream => self.request.is_some(),
            Direction::ToClient => self.response.is_some(),
        }
    }

    fn message<'a>(
        &'a self,
        direction: Direction,
        call: &'a CallState,
        body: Chunks,
        stats: &'a mut EditStats,
    ) -> Step<'a> {
        let message = match direction {
            Direction::ToUpstream => self.request,
            Direction::ToClient => self.response,
        };
        Step::Ready(match message {
            Some(message) => self
                .rewriter
                .edit(direction, message, &call.namespace, &body, stats)
                .map_err(Into::into),
            None => Ok(body),
        })
    }

    fn response_status(&self, call: &CallState, headers: &mut HeaderMap, stats: &mut EditStats) {
        if headers.contains_key("grpc-message") || headers.contains_key("grpc-status-details-bin") {
            let namespace = call.namespace.get().map(String::as_str);
            status_details::translate_status(headers, &self.rewriter, namespace, stats);
        }
    }
}
