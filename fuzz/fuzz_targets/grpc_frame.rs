//! Fuzzes the gRPC frame decoder (`strait::grpc::frame::FrameDecoder`) with arbitrary bytes split into
//! arbitrary chunks. Checks: no panic; the events (headers, body bytes, message ends) are identical
//! whatever the split; `check_chunk` (the zero-copy pass-through path) agrees with `next` on the
//! outcome and the message count; body bytes never exceed the announced lengths; and every message
//! reported complete re-encodes to exactly the input bytes it came from.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run grpc_frame` (from the repo root; add `-- -max_total_time=N`).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use strait::grpc::frame::{FrameDecoder, FrameError, FrameEvent, MessageHeader};

/// Decodes `wire` in chunks of the given sizes; returns (events, outcome).
fn decode(wire: &[u8], sizes: &[u8], limit: u32) -> (Vec<FrameEvent>, Result<u64, FrameError>) {
    let mut decoder = FrameDecoder::new(limit);
    let mut events = Vec::new();
    let mut rest = Bytes::copy_from_slice(wire);
    let mut i = 0;
    while !rest.is_empty() {
        let size = sizes.get(i % sizes.len().max(1)).copied().unwrap_or(0).max(1) as usize;
        i += 1;
        let mut chunk = rest.split_to(size.min(rest.len()));
        loop {
            match decoder.next(&mut chunk) {
                Ok(Some(event)) => events.push(event),
                Ok(None) => break,
                Err(err) => return (events, Err(err)),
            }
        }
    }
    while let Ok(Some(event)) = decoder.next(&mut Bytes::new()) {
        events.push(event);
    }
    let outcome = decoder.finish().map(|()| decoder.messages());
    (events, outcome)
}

/// Merges adjacent body events so that event lists from different splits compare equal.
fn normalise(events: Vec<FrameEvent>) -> Vec<(Option<MessageHeader>, Vec<u8>, bool)> {
    let mut out: Vec<(Option<MessageHeader>, Vec<u8>, bool)> = Vec::new();
    for event in events {
        match event {
            FrameEvent::Header(h) => out.push((Some(h), Vec::new(), false)),
            FrameEvent::Body(b) => {
                assert!(!b.is_empty(), "empty body event");
                out.last_mut().expect("body before header").1.extend_from_slice(&b)
            }
            FrameEvent::End => out.last_mut().expect("end before header").2 = true,
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let limit = u32::from(u16::from_le_bytes([data[0], data[1]]));
    let split_len = usize::from(data[2] % 8);
    if data.len() < 3 + split_len {
        return;
    }
    let sizes = &data[3..3 + split_len];
    let wire = &data[3 + split_len..];

    let (whole_events, whole) = decode(wire, &[255], limit);
    let (split_events, split) = decode(wire, sizes, limit);
    assert_eq!(whole, split, "outcome depends on the split");
    let whole_events = normalise(whole_events);
    if whole.is_ok() {
        assert_eq!(whole_events, normalise(split_events), "events depend on the split");
    }

    // Complete messages re-encode to the input, byte for byte.
    let mut reencoded = Vec::new();
    for (header, body, ended) in &whole_events {
        let header = header.expect("header");
        assert!(body.len() <= header.len as usize, "body longer than announced");
        assert!(header.len <= limit, "limit not enforced");
        if *ended {
            assert_eq!(body.len(), header.len as usize);
            reencoded.extend_from_slice(&header.encode());
            reencoded.extend_from_slice(body);
        }
    }
    assert_eq!(&wire[..reencoded.len()], &reencoded[..]);

    // The pass-through path agrees.
    let mut decoder = FrameDecoder::new(limit);
    let mut checked = Ok(());
    for chunk in wire.chunks(sizes.first().copied().unwrap_or(7).max(1) as usize) {
        checked = decoder.check_chunk(&Bytes::copy_from_slice(chunk));
        if checked.is_err() {
            break;
        }
    }
    let checked = checked.and_then(|()| decoder.finish().map(|()| decoder.messages()));
    assert_eq!(checked, whole, "check_chunk disagrees with next");
});
