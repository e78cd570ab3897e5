//! Method paths (`/package.Service/Method`) and their bounded metric labels.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// Services Strait knows by name; anything else is labelled `other` in metrics.
const KNOWN_SERVICES: &[&str] = &[
    "temporal.api.workflowservice.v1.WorkflowService",
    "temporal.api.operatorservice.v1.OperatorService",
    "temporal.server.api.adminservice.v1.AdminService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Distinct (service, method) label pairs kept before further ones become `other`: label values
/// come from clients, so their number must be bounded.
const MAX_METHOD_LABELS: usize = 2048;

/// Splits `/package.Service/Method`.
pub fn split_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    if service.is_empty() || method.is_empty() || method.contains('/') {
        return None;
    }
    Some((service, method))
}

/// The (service, method) metric labels of a path, from a bounded set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodLabels {
    pub service: &'static str,
    pub method: Arc<str>,
}

#[derive(Default)]
pub struct MethodLabeler {
    seen: Mutex<HashSet<(usize, Arc<str>)>>,
}

impl MethodLabeler {
    pub fn labels(&self, path: &str) -> MethodLabels {
        let other = || MethodLabels {
            service: "other",
            method: Arc::from("other"),
        };
        let Some((service, method)) = split_path(path) else {
            return other();
        };
        let Some(index) = KNOWN_SERVICES.iter().position(|known| *known == service) else {
            return other();
        };
        let plausible = method.len() <= 64
            && method
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !plausible {
            return other();
        }
        let Ok(mut seen) = self.seen.lock() else {
            return other();
        };
        let key = (index, Arc::<str>::from(method));
        if let Some((_, existing)) = seen.get(&key) {
            return MethodLabels {
                service: KNOWN_SERVICES[index],
                method: Arc::clone(existing),
            };
        }
        if seen.len() >= MAX_METHOD_LABELS {
            return MethodLabels {
                service: KNOWN_SERVICES[index],
                method: Arc::from("other"),
            };
        }
        let method = Arc::clone(&key.1);
        seen.insert(key);
        MethodLabels {
            service: KNOWN_SERVICES[index],
            method,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(split_path("/a.B/C"), Some(("a.B", "C")));
        assert_eq!(split_path("a.B/C"), None);
        assert_eq!(split_path("/a.B/"), None);
        assert_eq!(split_path("/a.B/C/D"), None);
    }

    #[test]
    fn labels_are_bounded() {
        let labeler = MethodLabeler::default();
        let l = labeler
            .labels("/temporal.api.workflowservice.v1.WorkflowService/StartWorkflowExecution");
        assert_eq!(l.service, "temporal.api.workflowservice.v1.WorkflowService");
        assert_eq!(&*l.method, "StartWorkflowExecution");
        assert_eq!(labeler.labels("/evil.Service/X").service, "other");
        assert_eq!(
            &*labeler.labels("/grpc.health.v1.Health/a-b").method,
            "other"
        );
        for i in 0..MAX_METHOD_LABELS + 10 {
            labeler.labels(&format!("/grpc.health.v1.Health/M{i}"));
        }
        assert_eq!(
            &*labeler.labels("/grpc.health.v1.Health/Fresh").method,
            "other"
        );
    }
}
