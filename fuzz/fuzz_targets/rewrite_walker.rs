//! Fuzzes the descriptor-guided walker (`strait::rewrite`) with arbitrary bytes read as real Temporal
//! message types (the request and response types of every method with edit targets; the first input
//! byte picks the type, the rest is the message), each way: as a request and as a response. Checks:
//! - no panic, whatever the bytes;
//! - an identity mapping never changes a byte;
//! - the message cut into pieces (at points the input picks, as DATA frames would cut it) is edited
//!   to the same bytes, or refused with the same error, as the message in one buffer;
//! - when prost-reflect can decode the input and the walker accepts it (the walker may refuse more:
//!   malformed groups, which proto3 never writes, and untranslatable queries), the walker's output
//!   decodes and — for types without history blobs, whose re-encoding the oracle would reorder —
//!   equals the same edit done on a `DynamicMessage` (`strait::rewrite::reference`), including
//!   the refusal of upstream-side names in requests and the dropping of list elements and map
//!   entries that name hidden names in responses.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run rewrite_walker` (from the repo root).
#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, ReflectMessage};
use strait::config::TranslateConfig;
use strait::rewrite::plan::{MsgId, Targets};
use strait::rewrite::walker::{self, EditStats};
use strait::wire::Chunks;
use strait::rewrite::{reference, Direction, PlanCache, Rewriter};

struct Setup {
    pool: DescriptorPool,
    forward: Arc<Rewriter>,
    identity: Arc<Rewriter>,
    /// (message name, id in the forward plan, id in the identity plan, reaches a DataBlob)
    types: Vec<(String, MsgId, MsgId, bool)>,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let pool = strait::descriptor_set::embedded().expect("embedded descriptors");
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
        };
        let config = |ns: &[(&str, &str)], sa: &[(&str, &str)]| TranslateConfig {
            namespaces: map(ns),
            search_attributes: [("a".to_string(), map(sa))].into_iter().collect(),
            repair_utf8: false,
            // The default: `bb`/`LL` refused in requests, `a`/`K` hidden in responses.
            expose_upstream_names: None,
        };
        let mut cache = PlanCache::default();
        let forward = Rewriter::new(&config(&[("a", "bb")], &[("K", "LL")]), &pool, &mut cache).expect("rewriter");
        let identity = Rewriter::new(&config(&[("a", "a")], &[("K", "K")]), &pool, &mut PlanCache::default())
            .expect("rewriter");
        let plan = forward.plan(Direction::ToUpstream);
        let mut names: Vec<String> = Vec::new();
        for service in pool.services() {
            for method in service.methods() {
                for message in [method.input(), method.output()] {
                    if plan.message_id(message.full_name()).is_some() && !names.iter().any(|n| n == message.full_name()) {
                        names.push(message.full_name().to_owned());
                    }
                }
            }
        }
        names.sort();
        let types = names
            .into_iter()
            .filter_map(|name| {
                let id = plan.message_id(&name)?;
                let identity_id = identity.plan(Direction::ToUpstream).message_id(&name)?;
                let blobs = reaches_blob(&pool, &name);
                Some((name, id, identity_id, blobs))
            })
            .collect();
        Setup { pool, forward, identity, types }
    })
}

fn reaches_blob(pool: &DescriptorPool, name: &str) -> bool {
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![name.to_owned()];
    while let Some(current) = stack.pop() {
        if !seen.insert(current.clone()) {
            continue;
        }
        let Some(message) = pool.get_message_by_name(&current) else { continue };
        for field in message.fields() {
            if let prost_reflect::Kind::Message(child) = field.kind() {
                if child.full_name() == strait::rewrite::plan::DATA_BLOB {
                    return true;
                }
                stack.push(child.full_name().to_owned());
            }
        }
    }
    false
}

fuzz_target!(|data: &[u8]| {
    let setup = setup();
    let Some((&selector, body)) = data.split_first() else { return };
    let (name, _, _, blobs) = &setup.types[selector as usize % setup.types.len()];
    let body = Bytes::copy_from_slice(body);
    for direction in [Direction::ToUpstream, Direction::ToClient] {
        check(setup, name, *blobs, direction, &body);
    }
});

/// `body` in pieces: its bytes pick the cut points (a cut after byte i when bit 0 of byte i is set),
/// so tags, varints and strings are split at every kind of place.
fn cut(body: &Bytes) -> Chunks {
    let mut pieces = Vec::new();
    let mut start = 0;
    for (i, byte) in body.iter().enumerate() {
        if byte & 1 == 1 {
            pieces.push(body.slice(start..i + 1));
            start = i + 1;
        }
    }
    pieces.push(body.slice(start..));
    Chunks::from_pieces(pieces)
}

fn check(setup: &Setup, name: &str, blobs: bool, direction: Direction, body: &Bytes) {
    // Identity: the same bytes, or an error — never a changed message.
    let identity_plan = setup.identity.plan(direction);
    let editor = setup.identity.editor(direction, Some("a"));
    if let Some(identity_id) = identity_plan.message_id(name) {
        if let Ok(out) = walker::edit_message(identity_plan, identity_id, body, &editor, &mut EditStats::default()) {
            assert_eq!(&out, body, "identity mapping changed {name}");
        }
    }

    let plan = setup.forward.plan(direction);
    let Some(id) = plan.message_id(name) else { return };
    let editor = setup.forward.editor(direction, Some("a"));
    let walked = walker::edit_message(plan, id, body, &editor, &mut EditStats::default());
    let pieces = cut(body);
    let chunked = walker::edit_chunks(plan, id, &pieces, &editor, &mut EditStats::default());
    match (&walked, &chunked) {
        (Ok(one), Ok(many)) => assert_eq!(one, &many.contiguous(), "pieces edited differently: {name}"),
        (Err(one), Err(many)) => assert_eq!(one, many, "pieces refused differently: {name}"),
        _ => panic!("pieces and one buffer disagree on {name}: {walked:?} vs {chunked:?}"),
    }
    let Some(descriptor) = setup.pool.get_message_by_name(name) else { return };
    let Ok(_) = DynamicMessage::decode(descriptor.clone(), body.clone()) else { return };
    // The walker may be stricter than prost (stray or malformed groups, which proto3 never writes):
    // refusing is safe, so only its accepted outputs are checked.
    let Ok(out) = walked else { return };
    let decoded = DynamicMessage::decode(descriptor, out).expect("walker output must decode");
    if blobs {
        return;
    }
    let targets = Targets { namespaces: true, search_attributes: true, utf8: false };
    let Ok(expected) = reference::edit_bytes(&setup.pool, name, body, targets, &editor, &mut EditStats::default()) else {
        return;
    };
    // Compare canonical forms: an explicitly encoded default (e.g. an empty bytes field) is kept by the
    // walker but dropped by the oracle's re-encoding, which is no difference in meaning.
    let canonical = |message: &DynamicMessage| {
        DynamicMessage::decode(message.descriptor(), message.encode_to_vec().as_slice()).expect("re-decodes")
    };
    let expected = DynamicMessage::decode(decoded.descriptor(), expected.as_slice()).expect("oracle output decodes");
    let (ours, theirs) = (canonical(&decoded), canonical(&expected));
    // NaN floats never compare equal: then the canonical encodings (same bits) must be.
    let same = ours == theirs || ours.encode_to_vec() == theirs.encode_to_vec();
    assert!(same, "walker and oracle disagree on {name} ({direction:?})");
}
