//! Fuzzes the outbound HTTP/2 frame scanner behind `strait_protocol_violations_total`
//! (`strait::relay::watch::Scanner`) with arbitrary bytes written in arbitrary pieces. Checks: no
//! panic; the violations reported are identical whatever the split (h2 writes frames in pieces of any
//! size, and the count must not depend on it); and no more violations than frames could carry (a
//! frame is at least 9 bytes).
//!
//! Input: byte 0 = highest accepted stream id, byte 1 = number of split sizes N, then N sizes, then the
//! bytes h2 "wrote".
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run frame_watch` (from the repo root; add `-- -max_total_time=N`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use strait::metrics::Violation;
use strait::relay::watch::Scanner;

fn scan(wire: &[u8], sizes: &[u8], accepted: u32) -> Vec<Violation> {
    let mut scanner = Scanner::default();
    let mut seen = Vec::new();
    let mut rest = wire;
    let mut i = 0;
    while !rest.is_empty() {
        let size = if sizes.is_empty() {
            rest.len()
        } else {
            sizes[i % sizes.len()].max(1) as usize
        };
        i += 1;
        let (piece, tail) = rest.split_at(size.min(rest.len()));
        scanner.scan(piece, accepted, &mut |v| seen.push(v));
        rest = tail;
    }
    seen
}

fuzz_target!(|data: &[u8]| {
    let Some((&accepted, data)) = data.split_first() else {
        return;
    };
    let Some((&n, data)) = data.split_first() else {
        return;
    };
    let n = (n as usize).min(data.len());
    let (sizes, wire) = data.split_at(n);
    let accepted = u32::from(accepted);
    let whole = scan(wire, &[], accepted);
    let split = scan(wire, sizes, accepted);
    assert_eq!(whole, split, "violations depend on how the bytes were split");
    assert!(whole.len() <= wire.len() / 9, "more violations than frames");
});
