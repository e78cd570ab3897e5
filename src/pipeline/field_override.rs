//! The field-override stage: one top-level string field of one method's requests set to a fixed
//! value (a cluster connection's advertised address in `AddOrUpdateRemoteCluster`).

use std::sync::Arc;

use super::{CallState, Stage, StageFactory, Step};
use crate::rewrite::walker::EditStats;
use crate::rewrite::{Direction, FieldOverride};
use crate::wire::Chunks;

pub(crate) struct Override(pub(crate) FieldOverride);

impl StageFactory for Override {
    fn for_method(&self, path: Option<&str>) -> Option<Arc<dyn Stage>> {
        (path == Some(self.0.path))
            .then(|| Arc::new(MethodOverride(self.0.clone())) as Arc<dyn Stage>)
    }
}

struct MethodOverride(FieldOverride);

impl Stage for MethodOverride {
    fn reads(&self, direction: Direction) -> bool {
        direction == Direction::ToUpstream
    }

    fn message<'a>(
        &'a self,
        _direction: Direction,
        _call: &'a CallState,
        body: Chunks,
        _stats: &'a mut EditStats,
    ) -> Step<'a> {
        Step::Ready(self.0.apply(&body).map_err(Into::into))
    }
}
