//! Moving one direction of a call's body from an HTTP/2 receive stream to a send stream, through the
//! gRPC framing layer, with HTTP/2 flow control as backpressure: bytes are sent only when the
//! receiving peer has granted window (reserve_capacity → poll_capacity → send_data), and the window
//! of the sending peer is released only after the bytes were handed on. A slow reader therefore slows
//! the writer and nothing piles up in between.

use std::future::poll_fn;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::{Reason, RecvStream, SendStream};
use http::HeaderMap;
use metrics::Counter;

use super::gather::{Gather, GatherError, Reservation};
use crate::grpc::frame::{FrameDecoder, FrameError, FrameEvent, MessageHeader, PREFIX_LEN};
use crate::pipeline::{Flow, FlowError};
use crate::wire::{Builder, Chunks};

/// Why a pump stopped early. `Src*` concern the stream read from, `Dst*` the one written to.
#[derive(Debug)]
pub(crate) enum PumpError {
    /// Reading failed (the peer reset the stream, or its connection failed).
    Src(h2::Error),
    /// Writing failed (connection gone).
    Dst(h2::Error),
    /// The receiving peer reset the stream (e.g. cancelled the call).
    DstReset(Reason),
    /// The gRPC framing was invalid or a message exceeded the limit.
    Frame(FrameError),
    /// A stage refused a message, or it could not be read for the stages (it is not forwarded).
    Stage(FlowError),
    /// The receiving peer granted no flow-control window for this long.
    Stalled(Duration),
    /// A message that had to be held whole did not fit its limit or a budget (not forwarded).
    Gather(GatherError),
}

tokio::task_local! {
    /// How long `send_all` waits for flow-control window: the listener's `send_stall_timeout`, set
    /// by the server around each call's task. A task-local keeps it off the per-chunk signatures;
    /// where it is not set, the wait is unbounded.
    pub(crate) static SEND_STALL_TIMEOUT: Duration;
}

/// A direction whose messages some stage reads: each is gathered whole, charged to the gather
/// budgets while held, and passed through the pipeline.
pub(crate) struct Edits {
    pub(crate) flow: Flow,
    /// What the messages are charged to while they are held whole.
    pub(crate) gather: Gather,
}

/// Per-direction byte and message counters.
pub(crate) struct Counters<'a> {
    pub(crate) bytes: &'a Counter,
    pub(crate) messages: &'a Counter,
}

/// How a body ended: with trailers, or with END_STREAM on data.
pub(crate) enum BodyEnd {
    Trailers(HeaderMap),
    EndOfStream,
}

/// Relays `src`'s body to `dst`, message-framed, until `src` ends. Trailers are returned, not sent, so
/// the caller can inspect them; without trailers END_STREAM has already been sent on `dst`.
pub(crate) async fn pump_body(
    src: &mut RecvStream,
    dst: &mut SendStream<Bytes>,
    decoder: &mut FrameDecoder,
    counters: &Counters<'_>,
    edits: Option<&mut Edits>,
) -> Result<BodyEnd, PumpError> {
    let before = decoder.messages();
    let result = match edits {
        // Boxed: message mode carries the edit futures (an ACL lookup may call the local cluster),
        // which would otherwise make every call's task several KiB larger, edits or not.
        Some(edits) => Box::pin(pump_messages(src, dst, decoder, counters, edits)).await,
        None => pump_inner(src, dst, decoder, counters).await,
    };
    counters.messages.increment(decoder.messages() - before);
    result
}

/// Fragments of a message smaller than this are gathered before forwarding: relaying a peer's tiny
/// DATA frames one for one would pass a small-frame flood on (h2 peers answer that with GOAWAY
/// ENHANCE_YOUR_CALM) and cost a frame header per byte. Far below any flow-control window, so holding
/// it never stalls the sender.
const COALESCE_BELOW: usize = 16 * 1024;

async fn pump_inner(
    src: &mut RecvStream,
    dst: &mut SendStream<Bytes>,
    decoder: &mut FrameDecoder,
    counters: &Counters<'_>,
) -> Result<BodyEnd, PumpError> {
    let mut pending = BytesMut::new();
    // Bytes received but not yet forwarded, whose window is still to be released.
    let mut held = 0usize;
    loop {
        let Some(chunk) = next_chunk(src, dst).await? else {
            break;
        };
        let len = chunk.len();
        decoder.check_chunk(&chunk).map_err(PumpError::Frame)?;
        counters.bytes.increment(len as u64);
        held += len;
        // END_STREAM rides on the last DATA frame, as the sender sent it: a separate empty frame would
        // leave the peer a moment where it holds a whole request that is not closed yet.
        let end = src.is_end_stream();
        let out = if pending.is_empty() && (end || decoder.at_boundary() || len >= COALESCE_BELOW) {
            // The common case: whole messages, or large parts of one, forwarded without a copy.
            chunk
        } else {
            pending.extend_from_slice(&chunk);
            if !end && !decoder.at_boundary() && pending.len() < COALESCE_BELOW {
                continue;
            }
            pending.split().freeze()
        };
        if end {
            decoder.finish().map_err(PumpError::Frame)?;
        }
        send_all(dst, out, end).await?;
        // Only now, with the bytes accepted by the other side's window, may the sender send more.
        src.flow_control()
            .release_capacity(held)
            .map_err(PumpError::Src)?;
        held = 0;
        if end {
            return Ok(BodyEnd::EndOfStream);
        }
    }
    // At a boundary nothing is pending: fragments are flushed as soon as their message completes.
    decoder.finish().map_err(PumpError::Frame)?;
    finish_body(src, dst).await
}

/// The next DATA chunk of `src`, or `None` at its end; a reset of `dst` ends the wait.
async fn next_chunk(
    src: &mut RecvStream,
    dst: &mut SendStream<Bytes>,
) -> Result<Option<Bytes>, PumpError> {
    let next = poll_fn(|cx| {
        // A reset from the receiving side must end the call even while the sender is quiet.
        if let Poll::Ready(reset) = dst.poll_reset(cx) {
            return Poll::Ready(Err(match reset {
                Ok(reason) => PumpError::DstReset(reason),
                Err(err) => PumpError::Dst(err),
            }));
        }
        src.poll_data(cx).map(Ok)
    })
    .await?;
    match next {
        Some(Ok(chunk)) => Ok(Some(chunk)),
        Some(Err(err)) => Err(PumpError::Src(err)),
        None => Ok(None),
    }
}

/// After the last DATA: trailers are returned to the caller; without them END_STREAM is sent.
async fn finish_body(
    src: &mut RecvStream,
    dst: &mut SendStream<Bytes>,
) -> Result<BodyEnd, PumpError> {
    match poll_fn(|cx| src.poll_trailers(cx)).await {
        Ok(Some(trailers)) => Ok(BodyEnd::Trailers(trailers)),
        Ok(None) => {
            dst.send_data(Bytes::new(), true).map_err(PumpError::Dst)?;
            Ok(BodyEnd::EndOfStream)
        }
        Err(err) => Err(PumpError::Src(err)),
    }
}

/// Message mode, for a direction whose message type has edit targets: each message is held whole
/// (it must be, to be edited), in the pieces it arrived in (not copied together: the stages read
/// across them), edited, re-framed and forwarded. Its declared length is charged to the gather
/// budgets at its prefix, before a byte of it is stored, and what is held grows only as bytes arrive
/// (never past that length, see [`Builder`]), so a client that declares more than it sends costs the
/// budget, not memory. Window is released as bytes are consumed into the message, since a message larger
/// than the window could otherwise never complete; the next chunk is not read until the edited
/// message was sent, so the sender is still held back by the receiver.
async fn pump_messages(
    src: &mut RecvStream,
    dst: &mut SendStream<Bytes>,
    decoder: &mut FrameDecoder,
    counters: &Counters<'_>,
    edits: &mut Edits,
) -> Result<BodyEnd, PumpError> {
    let mut header: Option<MessageHeader> = None;
    let mut whole: Option<Bytes> = None;
    let mut gathered: Option<Builder> = None;
    // The charge of the message being gathered; those of messages edited but not yet sent.
    let mut charge: Option<Reservation> = None;
    let mut unsent: Vec<Reservation> = Vec::new();
    loop {
        let Some(mut chunk) = next_chunk(src, dst).await? else {
            break;
        };
        let len = chunk.len();
        counters.bytes.increment(len as u64);
        let end = src.is_end_stream();
        let mut out: Vec<Bytes> = Vec::new();
        while let Some(event) = decoder.next(&mut chunk).map_err(PumpError::Frame)? {
            match event {
                FrameEvent::Header(h) => {
                    charge = Some(edits.gather.reserve(h.len).map_err(PumpError::Gather)?);
                    header = Some(h);
                }
                FrameEvent::Body(body) => {
                    let declared = header.map_or(0, |h| h.len as usize);
                    // A message that arrives in one piece is edited in place, without a copy.
                    if declared == body.len() && gathered.is_none() {
                        whole = Some(body);
                    } else {
                        gathered
                            .get_or_insert_with(|| Builder::gathering(declared))
                            .push(body);
                    }
                }
                FrameEvent::End => {
                    let compressed = header.take().is_some_and(|h| h.compressed);
                    let body = match (whole.take(), gathered.take()) {
                        (Some(whole), _) => Chunks::from(whole),
                        (None, Some(pieces)) => pieces.finish(),
                        (None, None) => Chunks::default(),
                    };
                    let (compressed, body) = edits
                        .flow
                        .process(compressed, body)
                        .await
                        .map_err(PumpError::Stage)?;
                    frame_into(&mut out, compressed, body)?;
                    unsent.extend(charge.take());
                }
            }
        }
        if end {
            decoder.finish().map_err(PumpError::Frame)?;
        }
        let parts = out.len();
        for (i, part) in out.into_iter().enumerate() {
            send_all(dst, part, end && i + 1 == parts).await?;
        }
        // Sent: h2 holds at most a window of it now, which the budgets do not need to cover.
        unsent.clear();
        src.flow_control()
            .release_capacity(len)
            .map_err(PumpError::Src)?;
        if end {
            if parts == 0 {
                send_all(dst, Bytes::new(), true).await?;
            }
            return Ok(BodyEnd::EndOfStream);
        }
    }
    decoder.finish().map_err(PumpError::Frame)?;
    finish_body(src, dst).await
}

/// Frames one edited message: the prefix and the pieces shorter than 16 KiB are copied together (a
/// DATA frame each would be wasteful), longer pieces are sent as they are.
fn frame_into(out: &mut Vec<Bytes>, compressed: bool, body: Chunks) -> Result<(), PumpError> {
    const COPY_BELOW: usize = 16 * 1024;
    let len = u32::try_from(body.len()).map_err(|_| {
        PumpError::Frame(FrameError::TooLarge {
            len: u32::MAX,
            limit: u32::MAX,
        })
    })?;
    let prefix = MessageHeader { compressed, len }.encode();
    let mut small = BytesMut::with_capacity(PREFIX_LEN + body.len().min(COPY_BELOW));
    small.extend_from_slice(&prefix);
    for piece in body.pieces() {
        if piece.len() < COPY_BELOW {
            small.extend_from_slice(piece);
        } else {
            if !small.is_empty() {
                out.push(small.split().freeze());
            }
            out.push(piece.clone());
        }
    }
    if !small.is_empty() {
        out.push(small.freeze());
    }
    Ok(())
}

/// Sends `chunk` as the peer's flow-control window allows, never buffering beyond it; with `end`, the
/// last part carries END_STREAM.
pub(crate) async fn send_all(
    dst: &mut SendStream<Bytes>,
    mut chunk: Bytes,
    end: bool,
) -> Result<(), PumpError> {
    if chunk.is_empty() {
        if end {
            dst.send_data(chunk, true).map_err(PumpError::Dst)?;
        }
        return Ok(());
    }
    while !chunk.is_empty() {
        dst.reserve_capacity(chunk.len());
        let mut available = dst.capacity();
        if available == 0 {
            let wait = poll_fn(|cx| {
                loop {
                    match dst.poll_capacity(cx) {
                        Poll::Ready(Some(Ok(0))) => continue,
                        Poll::Ready(Some(Ok(n))) => return Poll::Ready(Ok(n)),
                        Poll::Ready(Some(Err(err))) => {
                            return Poll::Ready(Err(PumpError::Dst(err)))
                        }
                        // The stream can take no more data: the reason (a reset, or the whole
                        // connection failing) is what `poll_reset` reports.
                        Poll::Ready(None) => {
                            return Poll::Ready(Err(match dst.poll_reset(cx) {
                                Poll::Ready(Ok(reason)) => PumpError::DstReset(reason),
                                Poll::Ready(Err(err)) => PumpError::Dst(err),
                                Poll::Pending => PumpError::DstReset(Reason::STREAM_CLOSED),
                            }))
                        }
                        Poll::Pending => break,
                    }
                }
                match dst.poll_reset(cx) {
                    Poll::Ready(Ok(reason)) => Poll::Ready(Err(PumpError::DstReset(reason))),
                    Poll::Ready(Err(err)) => Poll::Ready(Err(PumpError::Dst(err))),
                    Poll::Pending => Poll::Pending,
                }
            });
            // A peer that never grants window (e.g. a client advertising a zero window) would
            // otherwise hold the call, and what the other side already sent, forever.
            available = match SEND_STALL_TIMEOUT.try_with(|limit| *limit) {
                Ok(limit) => tokio::time::timeout(limit, wait)
                    .await
                    .map_err(|_| PumpError::Stalled(limit))??,
                Err(_) => wait.await?,
            };
        }
        let part = chunk.split_to(available.min(chunk.len()));
        dst.send_data(part, end && chunk.is_empty())
            .map_err(PumpError::Dst)?;
    }
    Ok(())
}
