//! Fuzzes the namespace scope reader and element remover (`strait::access::scope`), which the
//! namespace ACL runs on every request and replication response of a cluster connection, with
//! arbitrary bytes read as real Temporal message types. The first input byte picks the type (a
//! response type whose lists are filtered, or a request type that names namespaces), the second
//! which found elements to remove, the rest is the message. Checks:
//! - no panic, whatever the bytes;
//! - removing nothing returns the same buffer;
//! - after removing a subset, the output is still readable and holds exactly the kept elements,
//!   in order, with the same owners; when prost-reflect decodes the input, it decodes the output.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run namespace_scope` (from the repo root).
#![no_main]

use std::collections::HashSet;
use std::sync::OnceLock;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prost_reflect::{DescriptorPool, DynamicMessage};
use strait::access::scope::ScopePlan;

/// Response types with filtered lists; seeds use these indexes.
const RESPONSES: &[&str] = &[
    "temporal.server.api.adminservice.v1.StreamWorkflowReplicationMessagesResponse",
    "temporal.server.api.adminservice.v1.GetNamespaceReplicationMessagesResponse",
    "temporal.api.workflowservice.v1.ListNamespacesResponse",
    "temporal.server.api.adminservice.v1.GetReplicationMessagesResponse",
    "temporal.server.api.adminservice.v1.GetDLQReplicationMessagesResponse",
];

struct Setup {
    pool: DescriptorPool,
    plan: ScopePlan,
    responses: Vec<(String, u32)>,
    requests: Vec<(String, u32)>,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let pool = strait::descriptor_set::embedded().expect("embedded descriptors");
        let plan = ScopePlan::compile(&pool);
        let responses = RESPONSES
            .iter()
            .map(|name| (name.to_string(), plan.response_type(name).expect("filtered response")))
            .collect();
        let mut requests: Vec<(String, u32)> = pool
            .services()
            .flat_map(|s| s.methods().collect::<Vec<_>>())
            .filter_map(|m| {
                let name = m.input().full_name().to_owned();
                plan.request_type(&name).map(|id| (name, id))
            })
            .collect();
        requests.sort();
        requests.dedup();
        Setup { pool, plan, responses, requests }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let Some((&mask, rest)) = rest.split_first() else { return };
    let setup = setup();
    let body = Bytes::copy_from_slice(rest);
    let pick = pick as usize;
    if pick >= setup.responses.len() {
        let (_, id) = &setup.requests[(pick - setup.responses.len()) % setup.requests.len()];
        let _ = setup.plan.references(*id, &body);
        return;
    }
    let (name, id) = &setup.responses[pick];
    let Ok(elements) = setup.plan.elements(*id, &body) else { return };
    let same = setup.plan.remove(*id, &body, &HashSet::new()).expect("nothing to remove");
    assert_eq!(same.as_ptr(), body.as_ptr(), "removing nothing copied the message");
    let removed: HashSet<usize> = elements
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << (i % 8)) != 0)
        .map(|(_, e)| e.start)
        .collect();
    let out = setup.plan.remove(*id, &body, &removed).expect("elements were readable");
    let kept: Vec<_> = elements
        .iter()
        .filter(|e| !removed.contains(&e.start))
        .map(|e| (e.kind, e.owner.clone()))
        .collect();
    let again: Vec<_> = setup
        .plan
        .elements(*id, &out)
        .expect("output readable")
        .into_iter()
        .map(|e| (e.kind, e.owner))
        .collect();
    assert_eq!(kept, again, "output does not hold exactly the kept elements");
    let descriptor = setup.pool.get_message_by_name(name).expect("type");
    if DynamicMessage::decode(descriptor.clone(), body.clone()).is_ok() {
        assert!(DynamicMessage::decode(descriptor, out).is_ok(), "output no longer decodes");
    }
});
