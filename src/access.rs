//! Access policy for calls crossing a cluster connection: which methods may be called, as
//! `Service.Method` patterns on the service's short name (`AdminService.*`,
//! `WorkflowService.DescribeNamespace`, `*`). A denied call gets PERMISSION_DENIED naming the method.
//! Which namespaces may be named, and how replication of the others is kept from crossing, is in
//! [`namespaces`].

pub(crate) mod namespaces;
pub(crate) mod resolver;
pub mod scope;

use crate::grpc::method::split_path;

/// A parsed `allowed_methods` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MethodPattern {
    service: String,
    /// `None` = any method of the service.
    method: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a method pattern: use Service.Method, Service.* or *")]
pub(crate) struct PatternError(pub(crate) String);

/// The methods a cluster connection lets through.
#[derive(Debug, Clone, Default)]
pub struct MethodPolicy {
    any: bool,
    patterns: Vec<MethodPattern>,
}

impl MethodPolicy {
    pub(crate) fn new(patterns: &[String]) -> Result<Self, PatternError> {
        let mut policy = MethodPolicy::default();
        for pattern in patterns {
            if pattern == "*" {
                policy.any = true;
                continue;
            }
            let (service, method) = pattern
                .split_once('.')
                .ok_or_else(|| PatternError(pattern.clone()))?;
            let valid =
                |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid(service) || !(method == "*" || valid(method)) {
                return Err(PatternError(pattern.clone()));
            }
            policy.patterns.push(MethodPattern {
                service: service.to_owned(),
                method: (method != "*").then(|| method.to_owned()),
            });
        }
        Ok(policy)
    }

    /// Whether `path` (`/package.Service/Method`) may be called.
    pub(crate) fn allows(&self, path: &str) -> bool {
        if self.any {
            return true;
        }
        let Some((service, method)) = split_path(path) else {
            return false;
        };
        let short = service.rsplit('.').next().unwrap_or(service);
        self.patterns
            .iter()
            .any(|p| p.service == short && p.method.as_deref().is_none_or(|m| m == method))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn patterns() {
        let policy = MethodPolicy::new(&[
            "AdminService.*".into(),
            "WorkflowService.DescribeNamespace".into(),
        ])
        .unwrap();
        assert!(policy.allows(
            "/temporal.server.api.adminservice.v1.AdminService/StreamWorkflowReplicationMessages"
        ));
        assert!(policy.allows("/temporal.api.workflowservice.v1.WorkflowService/DescribeNamespace"));
        assert!(!policy
            .allows("/temporal.api.workflowservice.v1.WorkflowService/StartWorkflowExecution"));
        assert!(!policy.allows("/temporal.api.operatorservice.v1.OperatorService/ListClusters"));
        assert!(!policy.allows("garbage"));
        assert!(MethodPolicy::new(&["*".into()]).unwrap().allows("/a.B/C"));
        for bad in ["AdminService", "Admin Service.*", ".X", "A.B.C"] {
            assert!(MethodPolicy::new(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
