//! The gRPC length-prefixed message framing: a 1-byte compressed flag, a 4-byte big-endian length, then
//! the message. A state machine over arbitrary chunks (HTTP/2 DATA frames split and join messages at
//! will): it never needs more than the bytes at hand, slices bodies out of the input without copying,
//! and enforces the message-size limit as soon as a prefix is complete.

use bytes::{Buf, Bytes};

pub(crate) const PREFIX_LEN: usize = 5;

/// The 5-byte prefix of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageHeader {
    /// Flag 1: the message is compressed with the call's `grpc-encoding`.
    pub(crate) compressed: bool,
    pub len: u32,
}

impl MessageHeader {
    pub fn encode(self) -> [u8; PREFIX_LEN] {
        let len = self.len.to_be_bytes();
        [u8::from(self.compressed), len[0], len[1], len[2], len[3]]
    }
}

/// What the decoder found next in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameEvent {
    /// A complete prefix: a message of `len` bytes follows.
    Header(MessageHeader),
    /// The next bytes of the current message body (never empty).
    Body(Bytes),
    /// The current message is complete.
    End,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("gRPC message of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: u32, limit: u32 },
    #[error("malformed gRPC frame: compressed flag is {0}, expected 0 or 1")]
    BadFlag(u8),
    #[error("stream ended inside a gRPC message ({missing} bytes missing)")]
    Truncated { missing: u64 },
}

#[derive(Debug, Clone, Copy)]
enum State {
    Prefix {
        buf: [u8; PREFIX_LEN],
        filled: usize,
    },
    Body {
        remaining: u32,
    },
    /// The body was fully consumed; `End` is still to be reported.
    Ending,
}

/// Incremental decoder of one direction of one call.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    limit: u32,
    state: State,
    messages: u64,
}

impl FrameDecoder {
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            state: State::Prefix {
                buf: [0; PREFIX_LEN],
                filled: 0,
            },
            messages: 0,
        }
    }

    /// Messages completed so far.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Takes the next event from `input`, consuming what it used. `Ok(None)` means `input` is exhausted
    /// (more bytes are needed); a partial prefix is kept inside the decoder.
    pub fn next(&mut self, input: &mut Bytes) -> Result<Option<FrameEvent>, FrameError> {
        match &mut self.state {
            State::Ending => {
                self.state = State::Prefix {
                    buf: [0; PREFIX_LEN],
                    filled: 0,
                };
                self.messages += 1;
                Ok(Some(FrameEvent::End))
            }
            State::Prefix { buf, filled } => {
                if input.is_empty() {
                    return Ok(None);
                }
                let take = (PREFIX_LEN - *filled).min(input.len());
                buf[*filled..*filled + take].copy_from_slice(&input[..take]);
                input.advance(take);
                *filled += take;
                if *filled < PREFIX_LEN {
                    return Ok(None);
                }
                let flag = buf[0];
                let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
                if flag > 1 {
                    return Err(FrameError::BadFlag(flag));
                }
                if len > self.limit {
                    return Err(FrameError::TooLarge {
                        len,
                        limit: self.limit,
                    });
                }
                self.state = if len == 0 {
                    State::Ending
                } else {
                    State::Body { remaining: len }
                };
                Ok(Some(FrameEvent::Header(MessageHeader {
                    compressed: flag == 1,
                    len,
                })))
            }
            State::Body { remaining } => {
                if input.is_empty() {
                    return Ok(None);
                }
                let take = (*remaining as usize).min(input.len());
                let body = input.split_to(take);
                // `take` is at most `remaining`, a u32.
                *remaining -= take as u32;
                if *remaining == 0 {
                    self.state = State::Ending;
                }
                Ok(Some(FrameEvent::Body(body)))
            }
        }
    }

    /// True between messages (nothing of a next message seen yet).
    pub(crate) fn at_boundary(&self) -> bool {
        matches!(self.state, State::Prefix { filled: 0, .. })
    }

    /// Checks that the stream may end here: at a message boundary.
    pub fn finish(&mut self) -> Result<(), FrameError> {
        match self.state {
            State::Prefix { filled: 0, .. } => Ok(()),
            State::Prefix { filled, .. } => Err(FrameError::Truncated {
                missing: (PREFIX_LEN - filled) as u64,
            }),
            State::Body { remaining } => Err(FrameError::Truncated {
                missing: u64::from(remaining),
            }),
            State::Ending => {
                self.state = State::Prefix {
                    buf: [0; PREFIX_LEN],
                    filled: 0,
                };
                self.messages += 1;
                Ok(())
            }
        }
    }

    /// Runs the decoder over a whole chunk that is forwarded unchanged: validates framing and limits,
    /// counts messages, and keeps partial state for the next chunk. No bytes are copied.
    pub fn check_chunk(&mut self, chunk: &Bytes) -> Result<(), FrameError> {
        // Skip bodies arithmetically: passing through needs no slices.
        let mut input = chunk.clone();
        loop {
            if let State::Body { remaining } = &mut self.state {
                let take = (*remaining as usize).min(input.len());
                input.advance(take);
                *remaining -= take as u32;
                if *remaining == 0 {
                    self.state = State::Ending;
                }
            }
            match self.next(&mut input)? {
                Some(_) => continue,
                None => return Ok(()),
            }
        }
    }
}

/// Frames one message: prefix then body.
pub(crate) fn encode_message(compressed: bool, body: &[u8]) -> Result<Bytes, FrameError> {
    let len = u32::try_from(body.len()).map_err(|_| FrameError::TooLarge {
        len: u32::MAX,
        limit: u32::MAX,
    })?;
    let mut out = Vec::with_capacity(PREFIX_LEN + body.len());
    out.extend_from_slice(&MessageHeader { compressed, len }.encode());
    out.extend_from_slice(body);
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// Decodes `wire` fed as the given chunk sizes; returns the messages and whether it ended cleanly.
    fn decode_split(
        wire: &[u8],
        sizes: &[usize],
        limit: u32,
    ) -> Result<Vec<(bool, Vec<u8>)>, FrameError> {
        let mut decoder = FrameDecoder::new(limit);
        let mut messages = Vec::new();
        let mut current: Option<(bool, Vec<u8>)> = None;
        let mut rest = Bytes::copy_from_slice(wire);
        let mut sizes = sizes.iter().cycle();
        while !rest.is_empty() {
            let n = (*sizes.next().unwrap()).clamp(1, rest.len());
            let mut chunk = rest.split_to(n);
            while let Some(event) = decoder.next(&mut chunk)? {
                match event {
                    FrameEvent::Header(h) => current = Some((h.compressed, Vec::new())),
                    FrameEvent::Body(b) => current.as_mut().unwrap().1.extend_from_slice(&b),
                    FrameEvent::End => messages.push(current.take().unwrap()),
                }
            }
        }
        // A zero-length message at the very end reports End on the next call.
        while let Some(event) = decoder.next(&mut Bytes::new())? {
            if event == FrameEvent::End {
                messages.push(current.take().unwrap());
            }
        }
        decoder.finish()?;
        Ok(messages)
    }

    fn wire_of(messages: &[(bool, &[u8])]) -> Vec<u8> {
        messages
            .iter()
            .flat_map(|(c, m)| encode_message(*c, m).unwrap().to_vec())
            .collect()
    }

    #[test]
    fn every_split_gives_the_same_messages() {
        let big = vec![7u8; 70_000];
        let messages: Vec<(bool, &[u8])> =
            vec![(false, b"hello"), (false, b""), (true, &big), (false, b"x")];
        let wire = wire_of(&messages);
        for sizes in [
            &[1][..],
            &[2],
            &[3, 7],
            &[4],
            &[5],
            &[6],
            &[16_384],
            &[100_000],
            &[1, 4, 9, 16_000],
        ] {
            let decoded = decode_split(&wire, sizes, u32::MAX).unwrap();
            assert_eq!(decoded.len(), 4, "sizes {sizes:?}");
            for ((c, m), (dc, dm)) in messages.iter().zip(&decoded) {
                assert_eq!((c, *m), (dc, dm.as_slice()));
            }
        }
    }

    #[test]
    fn check_chunk_agrees_with_next_on_every_split() {
        let wire = wire_of(&[(false, b"abc"), (false, &[1; 300]), (false, b"")]);
        for n in 1..=wire.len() {
            let mut decoder = FrameDecoder::new(1000);
            for chunk in wire.chunks(n) {
                decoder.check_chunk(&Bytes::copy_from_slice(chunk)).unwrap();
            }
            decoder.finish().unwrap();
            assert_eq!(decoder.messages(), 3, "chunk size {n}");
        }
    }

    #[test]
    fn oversized_message_is_refused_at_its_prefix() {
        let wire = wire_of(&[(false, &[0; 11])]);
        let err = decode_split(&wire[..PREFIX_LEN], &[2], 10).unwrap_err();
        assert_eq!(err, FrameError::TooLarge { len: 11, limit: 10 });
    }

    #[test]
    fn bad_flag_is_refused() {
        let err = decode_split(&[2, 0, 0, 0, 1, 9], &[6], 10).unwrap_err();
        assert_eq!(err, FrameError::BadFlag(2));
    }

    #[test]
    fn truncation_is_reported() {
        let wire = wire_of(&[(false, b"hello")]);
        assert_eq!(
            decode_split(&wire[..7], &[3], 100).unwrap_err(),
            FrameError::Truncated { missing: 3 }
        );
        assert_eq!(
            decode_split(&wire[..2], &[1], 100).unwrap_err(),
            FrameError::Truncated { missing: 3 }
        );
    }
}
