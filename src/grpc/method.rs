//! Method paths (`/package.Service/Method`) and their bounded metric labels.
//!
//! Label values come from what clients send, so only names the loaded descriptor set defines (plus
//! the standard health and reflection services) are used as labels; everything else is `other`.
//! The set is fixed at startup and nothing a client sends adds to it.

use std::collections::HashMap;
use std::sync::Arc;

/// Re-exported: the labeler's answer is the metrics module's label type.
pub(crate) use crate::metrics::MethodLabels;

/// Standard gRPC services clients and tools call on a Temporal frontend, which a Temporal
/// descriptor set does not define (their methods, from grpc-proto).
const STANDARD_SERVICES: &[(&str, &[&str])] = &[
    ("grpc.health.v1.Health", &["Check", "Watch", "List"]),
    (
        "grpc.reflection.v1.ServerReflection",
        &["ServerReflectionInfo"],
    ),
    (
        "grpc.reflection.v1alpha.ServerReflection",
        &["ServerReflectionInfo"],
    ),
];

/// The label of every service or method not known by name.
pub(crate) const OTHER: &str = "other";

/// Splits `/package.Service/Method`.
pub(crate) fn split_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    if service.is_empty() || method.is_empty() || method.contains('/') {
        return None;
    }
    Some((service, method))
}

/// One known service: its label and its methods' labels.
#[derive(Debug)]
struct KnownService {
    name: Arc<str>,
    methods: HashMap<Box<str>, Arc<str>>,
}

/// Maps a call's path to its labels. Immutable after construction: no lock on the hot path.
#[derive(Debug)]
pub struct MethodLabeler {
    services: HashMap<Box<str>, KnownService>,
    other: Arc<str>,
}

impl Default for MethodLabeler {
    /// Only the standard services (health, reflection) known.
    fn default() -> Self {
        Self::new(std::iter::empty::<(String, Vec<String>)>())
    }
}

impl MethodLabeler {
    /// A labeler knowing `services` (full service name, method names) and the standard services.
    pub fn new<S, M>(services: impl IntoIterator<Item = (S, M)>) -> Self
    where
        S: AsRef<str>,
        M: IntoIterator,
        M::Item: AsRef<str>,
    {
        let mut labeler = Self {
            services: HashMap::new(),
            other: Arc::from(OTHER),
        };
        let standard = STANDARD_SERVICES
            .iter()
            .map(|(service, methods)| (*service, methods.iter().copied()));
        for (service, methods) in standard {
            labeler.add(service, methods);
        }
        for (service, methods) in services {
            labeler.add(service.as_ref(), methods);
        }
        labeler
    }

    fn add<M>(&mut self, service: &str, methods: M)
    where
        M: IntoIterator,
        M::Item: AsRef<str>,
    {
        let entry = self
            .services
            .entry(Box::from(service))
            .or_insert_with(|| KnownService {
                name: Arc::from(service),
                methods: HashMap::new(),
            });
        for method in methods {
            let method = method.as_ref();
            entry
                .methods
                .entry(Box::from(method))
                .or_insert_with(|| Arc::from(method));
        }
    }

    /// Distinct (service, method) labels this labeler can give, `other` ones included.
    #[cfg(test)]
    fn label_count(&self) -> usize {
        // Each service's methods and its `other`, plus (other, other).
        self.services
            .values()
            .map(|s| s.methods.len() + 1)
            .sum::<usize>()
            + 1
    }

    /// Every method known by name: its path (`/package.Service/Method`) and labels.
    pub(crate) fn methods(&self) -> impl Iterator<Item = (String, MethodLabels)> + '_ {
        self.services.values().flat_map(|service| {
            service.methods.values().map(|method| {
                (
                    format!("/{}/{}", service.name, method),
                    MethodLabels {
                        service: Arc::clone(&service.name),
                        method: Arc::clone(method),
                    },
                )
            })
        })
    }

    /// The labels of every path that is no method the descriptor set defines: a known service's
    /// unknown method (service name, `other`) for each service, and (`other`, `other`).
    pub(crate) fn unknown_labels(&self) -> impl Iterator<Item = MethodLabels> + '_ {
        let other = Arc::clone(&self.other);
        self.services
            .values()
            .map(move |service| MethodLabels {
                service: Arc::clone(&service.name),
                method: Arc::clone(&self.other),
            })
            .chain(std::iter::once(MethodLabels {
                service: Arc::clone(&other),
                method: other,
            }))
    }

    pub(crate) fn labels(&self, path: &str) -> MethodLabels {
        let other = || MethodLabels {
            service: Arc::clone(&self.other),
            method: Arc::clone(&self.other),
        };
        let Some((service, method)) = split_path(path) else {
            return other();
        };
        let Some(known) = self.services.get(service) else {
            return other();
        };
        MethodLabels {
            service: Arc::clone(&known.name),
            method: Arc::clone(known.methods.get(method).unwrap_or(&self.other)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(split_path("/a.B/C"), Some(("a.B", "C")));
        assert_eq!(split_path("a.B/C"), None);
        assert_eq!(split_path("/a.B/"), None);
        assert_eq!(split_path("/a.B/C/D"), None);
    }

    #[test]
    fn only_known_services_and_methods_are_labelled_by_name() {
        const WORKFLOW: &str = "temporal.api.workflowservice.v1.WorkflowService";
        let labeler = MethodLabeler::new([(WORKFLOW, ["StartWorkflowExecution"])]);
        let labels = |path: &str| {
            let l = labeler.labels(path);
            (l.service.to_string(), l.method.to_string())
        };
        let pair = |s: &str, m: &str| (s.to_owned(), m.to_owned());
        assert_eq!(
            labels(&format!("/{WORKFLOW}/StartWorkflowExecution")),
            pair(WORKFLOW, "StartWorkflowExecution")
        );
        assert_eq!(labels(&format!("/{WORKFLOW}/Bogus")), pair(WORKFLOW, OTHER));
        assert_eq!(labels("/evil.Service/X"), pair(OTHER, OTHER));
        assert_eq!(labels("not a path"), pair(OTHER, OTHER));
        assert_eq!(
            labels("/grpc.health.v1.Health/Check"),
            pair("grpc.health.v1.Health", "Check")
        );
        assert_eq!(
            labels("/grpc.health.v1.Health/a-b"),
            pair("grpc.health.v1.Health", OTHER)
        );
        // Nothing a client sends is learnt.
        let count = labeler.label_count();
        for i in 0..5000 {
            labeler.labels(&format!("/{WORKFLOW}/M{i}"));
            labeler.labels(&format!("/s{i}.S/M"));
        }
        assert_eq!(labeler.label_count(), count);
        assert_eq!(labels(&format!("/{WORKFLOW}/M7")), pair(WORKFLOW, OTHER));
    }
}
