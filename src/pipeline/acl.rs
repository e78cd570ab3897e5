//! The namespace ACL stage of a cluster connection: the `temporal-namespace` header and every
//! namespace a request names must be allowed; a response's elements of other namespaces are
//! dropped ([`crate::access::namespaces`] decides).

use std::sync::Arc;

use http::HeaderMap;

use super::{CallState, Stage, StageError, StageFactory, Step};
use crate::access::namespaces::NamespaceAcl;
use crate::access::scope::MethodScope;
use crate::rewrite::walker::EditStats;
use crate::rewrite::Direction;
use crate::wire::Chunks;

pub(crate) struct Acl(pub(crate) Arc<NamespaceAcl>);

impl StageFactory for Acl {
    fn for_method(&self, path: Option<&str>) -> Option<Arc<dyn Stage>> {
        let scope = path.and_then(|path| self.0.method_scope(path));
        Some(Arc::new(MethodAcl {
            acl: Arc::clone(&self.0),
            scope: scope.unwrap_or_default(),
        }))
    }
}

struct MethodAcl {
    acl: Arc<NamespaceAcl>,
    scope: MethodScope,
}

impl Stage for MethodAcl {
    fn request_headers(
        &self,
        _call: &CallState,
        headers: &mut HeaderMap,
    ) -> Result<(), StageError> {
        match headers.get("temporal-namespace") {
            Some(value) => Ok(self
                .acl
                .check_header(&String::from_utf8_lossy(value.as_bytes()))?),
            None => Ok(()),
        }
    }

    fn reads(&self, direction: Direction) -> bool {
        match direction {
            Direction::ToUpstream => self.scope.request.is_some(),
            Direction::ToClient => self.scope.response.is_some(),
        }
    }

    fn message<'a>(
        &'a self,
        direction: Direction,
        _call: &'a CallState,
        body: Chunks,
        _stats: &'a mut EditStats,
    ) -> Step<'a> {
        let (request, response) = (self.scope.request, self.scope.response);
        Step::Wait(Box::pin(async move {
            match (direction, request, response) {
                // The scope walks one buffer: a message in pieces is copied together (cluster
                // links carry few large messages through the ACL).
                (Direction::ToUpstream, Some(id), _) => {
                    self.acl.check_request(id, &body.contiguous()).await?;
                    Ok(body)
                }
                (Direction::ToClient, _, Some(id)) => {
                    let flat = body.contiguous();
                    let filtered = self.acl.filter_response(id, flat.clone()).await?;
                    if filtered.as_ptr() == flat.as_ptr() && filtered.len() == flat.len() {
                        Ok(body)
                    } else {
                        Ok(Chunks::from(filtered))
                    }
                }
                _ => Ok(body),
            }
        }))
    }
}
