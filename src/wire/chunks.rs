//! A message held as the pieces it arrived in. A large message reaches Strait as several HTTP/2
//! DATA frames; copying them into one buffer before walking it cost as much as the walk. [`Chunks`]
//! keeps the pieces as they are, [`Source`] lets the wire reader read across them, and
//! [`Chunks::spliced`] builds the edited message from slices of the pieces and the new bytes, so the
//! bytes a walk skips are never copied.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::{Splice, WireError};

/// When a message is collected ([`Builder::gathering`]), a piece of at least about one default-size
/// DATA frame (16 KiB, less room for a message prefix) is kept by reference and smaller ones are
/// copied together. A kept piece may pin the receive buffer it was read into (at most 64 KiB), so a
/// held message pins at most 4× the bytes it was charged, even for a peer that interleaves streams to
/// make it so, and 1× for one sending whole frames; and a peer sending tiny DATA frames costs no
/// `Bytes` (nor, later, a DATA frame) per frame.
pub(crate) const KEEP_RECEIVED: usize = 16 * 1024 - 64;

/// When an edited message is rebuilt ([`Chunks::spliced`]), untouched runs of at least this many
/// bytes are slices of the original pieces (which are held already); shorter ones are copied.
pub(crate) const KEEP_UNTOUCHED: usize = 4096;

/// What the wire reader reads from: one contiguous buffer, or [`Chunks`].
pub(crate) trait Source {
    fn len(&self) -> usize;

    /// The varint at `pos`, which must end before `end`; its value and the position after it.
    fn varint(&self, pos: usize, end: usize) -> Result<(u64, usize), WireError>;

    /// The bytes `start..end` (in range): borrowed where they lie in one piece.
    fn range(&self, start: usize, end: usize) -> Cow<'_, [u8]>;
}

impl Source for [u8] {
    #[inline]
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    #[inline]
    fn varint(&self, pos: usize, end: usize) -> Result<(u64, usize), WireError> {
        super::read_varint(&self[..end.min(self.len())], pos)
    }

    #[inline]
    fn range(&self, start: usize, end: usize) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self[start..end])
    }
}

/// A message as a list of pieces; offsets run over their concatenation. Cloning is cheap (a
/// reference count), so a message can be kept to see whether a stage changed it ([`Chunks::same_as`]).
#[derive(Debug, Clone)]
pub struct Chunks(Repr);

#[derive(Debug, Clone)]
enum Repr {
    One(Bytes),
    Many(Arc<Pieces>),
}

#[derive(Debug, Default)]
struct Pieces {
    pieces: Vec<Bytes>,
    /// Where each piece ends, in message offsets (ascending).
    ends: Vec<usize>,
}

impl Pieces {
    fn push(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        let end = self.ends.last().copied().unwrap_or(0) + bytes.len();
        self.pieces.push(bytes);
        self.ends.push(end);
    }
}

impl Default for Chunks {
    fn default() -> Self {
        Chunks(Repr::One(Bytes::new()))
    }
}

impl From<Bytes> for Chunks {
    fn from(bytes: Bytes) -> Self {
        Chunks(Repr::One(bytes))
    }
}

impl Chunks {
    /// A message of exactly these pieces (empty ones left out), none copied.
    pub fn from_pieces(pieces: impl IntoIterator<Item = Bytes>) -> Chunks {
        let mut all = Pieces::default();
        for piece in pieces {
            all.push(piece);
        }
        match all.pieces.len() {
            0 => Chunks::default(),
            1 => Chunks(Repr::One(all.pieces.remove(0))),
            _ => Chunks(Repr::Many(Arc::new(all))),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match &self.0 {
            Repr::One(bytes) => bytes.len(),
            Repr::Many(many) => many.ends.last().copied().unwrap_or(0),
        }
    }

    /// The pieces, in order.
    pub(crate) fn pieces(&self) -> &[Bytes] {
        match &self.0 {
            Repr::One(bytes) => std::slice::from_ref(bytes),
            Repr::Many(many) => &many.pieces,
        }
    }

    /// Whether `other` is this very message (a clone of it, not an equal copy).
    pub(crate) fn same_as(&self, other: &Chunks) -> bool {
        match (&self.0, &other.0) {
            (Repr::One(a), Repr::One(b)) => a.as_ptr() == b.as_ptr() && a.len() == b.len(),
            (Repr::Many(a), Repr::Many(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// The message in one buffer: the piece itself when there is one, else a copy.
    pub fn contiguous(&self) -> Bytes {
        match self.pieces() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => {
                let mut out = BytesMut::with_capacity(self.len());
                for piece in many {
                    out.extend_from_slice(piece);
                }
                out.freeze()
            }
        }
    }

    /// The piece holding offset `pos` (< len), and where it starts.
    #[inline]
    fn locate(&self, pos: usize) -> (&Bytes, usize) {
        match &self.0 {
            Repr::One(bytes) => (bytes, 0),
            Repr::Many(many) => {
                let i = many.ends.partition_point(|&end| end <= pos);
                let start = if i == 0 { 0 } else { many.ends[i - 1] };
                (&many.pieces[i.min(many.pieces.len() - 1)], start)
            }
        }
    }

    /// The message with `splices` (non-overlapping, any order) applied: untouched runs of at least
    /// [`KEEP_UNTOUCHED`] bytes are slices of the pieces, everything else is copied into new pieces.
    /// With no splice, this same message.
    pub(crate) fn spliced(&self, mut splices: Vec<Splice>) -> Chunks {
        if splices.is_empty() {
            return self.clone();
        }
        splices.sort_by_key(|s| s.start);
        let mut out = Builder::new(KEEP_UNTOUCHED, usize::MAX);
        let mut pos = 0;
        for splice in &splices {
            self.copy_run(pos, splice.start, &mut out);
            out.extend(&splice.bytes);
            pos = splice.end;
        }
        self.copy_run(pos, self.len(), &mut out);
        out.finish()
    }

    /// Appends `start..end` of the message to `out`, by reference where a piece's run is large.
    fn copy_run(&self, mut start: usize, end: usize, out: &mut Builder) {
        while start < end {
            let (piece, piece_start) = self.locate(start);
            let to = (end - piece_start).min(piece.len());
            out.push(piece.slice(start - piece_start..to));
            start = piece_start + to;
        }
    }
}

impl Source for Chunks {
    fn len(&self) -> usize {
        Chunks::len(self)
    }

    #[inline]
    fn varint(&self, pos: usize, end: usize) -> Result<(u64, usize), WireError> {
        let end = end.min(self.len());
        if pos >= end {
            return Err(WireError::TruncatedVarint(pos));
        }
        let (piece, start) = self.locate(pos);
        let local_end = (end - start).min(piece.len());
        // Within one piece (the common case): the contiguous reader, at the piece's offsets.
        match super::read_varint(&piece[..local_end], pos - start) {
            Ok((value, next)) => Ok((value, next + start)),
            Err(WireError::TruncatedVarint(_))
                if local_end == piece.len() && end > start + local_end =>
            {
                // Runs into the next piece: at most 10 bytes, copied.
                let bytes = self.range(pos, end.min(pos + 10));
                super::read_varint(&bytes, 0)
                    .map(|(value, next)| (value, pos + next))
                    .map_err(|err| match err {
                        WireError::TruncatedVarint(_) => WireError::TruncatedVarint(pos),
                        _ => WireError::LongVarint(pos),
                    })
            }
            Err(WireError::TruncatedVarint(_)) => Err(WireError::TruncatedVarint(pos)),
            Err(_) => Err(WireError::LongVarint(pos)),
        }
    }

    fn range(&self, start: usize, end: usize) -> Cow<'_, [u8]> {
        if start >= end {
            return Cow::Borrowed(&[]);
        }
        let (piece, piece_start) = self.locate(start);
        if end - piece_start <= piece.len() {
            return Cow::Borrowed(&piece[start - piece_start..end - piece_start]);
        }
        let mut out = Vec::with_capacity(end - start);
        let mut pos = start;
        while pos < end {
            let (piece, piece_start) = self.locate(pos);
            let to = (end - piece_start).min(piece.len());
            out.extend_from_slice(&piece[pos - piece_start..to]);
            pos = piece_start + to;
        }
        Cow::Owned(out)
    }
}

/// Collects a message's pieces: large ones kept as they are, small ones copied together, so a
/// message costs at most about two pieces per `keep` bytes.
#[derive(Debug)]
pub(crate) struct Builder {
    pieces: Pieces,
    small: BytesMut,
    keep: usize,
    /// The message's declared length: copies are never given room past it.
    declared: usize,
}

impl Builder {
    /// Pieces of at least `keep` bytes are kept by reference.
    fn new(keep: usize, declared: usize) -> Builder {
        Builder {
            pieces: Pieces::default(),
            small: BytesMut::new(),
            keep,
            declared,
        }
    }

    /// For a message of `declared` bytes as it is received (see [`KEEP_RECEIVED`]).
    pub(crate) fn gathering(declared: usize) -> Builder {
        Builder::new(KEEP_RECEIVED, declared)
    }

    /// Adds the next piece of the message.
    pub(crate) fn push(&mut self, bytes: Bytes) {
        if bytes.len() >= self.keep {
            self.flush();
            self.pieces.push(bytes);
        } else {
            self.extend(&bytes);
        }
    }

    /// Adds bytes that must be copied anyway.
    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        if self.small.capacity() - self.small.len() < bytes.len() {
            // Room for one piece's worth at a time (no doubling), within the declared length.
            let room = self.keep.min(self.declared.saturating_sub(self.len()));
            self.small.reserve(room.max(bytes.len()));
        }
        self.small.extend_from_slice(bytes);
        if self.small.len() >= self.keep {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if !self.small.is_empty() {
            self.pieces.push(self.small.split().freeze());
        }
    }

    /// Bytes collected so far.
    pub(crate) fn len(&self) -> usize {
        self.pieces.ends.last().copied().unwrap_or(0) + self.small.len()
    }

    /// The message: one piece without the list when it is one.
    pub(crate) fn finish(mut self) -> Chunks {
        self.flush();
        if self.pieces.pieces.len() <= 1 {
            return Chunks(Repr::One(self.pieces.pieces.pop().unwrap_or_default()));
        }
        Chunks(Repr::Many(Arc::new(self.pieces)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::super::{apply, encode_varint, Fields};
    use super::*;

    /// `bytes` cut at each of `cuts`.
    fn cut(bytes: &[u8], cuts: &[usize]) -> Chunks {
        let bytes = Bytes::copy_from_slice(bytes);
        let mut pieces = Vec::new();
        let mut start = 0;
        for &at in cuts {
            pieces.push(bytes.slice(start..at));
            start = at;
        }
        pieces.push(bytes.slice(start..));
        Chunks::from_pieces(pieces)
    }

    #[test]
    fn varints_read_the_same_wherever_the_pieces_are_cut() {
        for value in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u32::MAX.into(),
            u64::MAX,
        ] {
            let mut buf = vec![0xaa];
            encode_varint(value, &mut buf);
            buf.push(0xbb);
            for at in 1..buf.len() {
                let chunks = cut(&buf, &[at]);
                assert_eq!(chunks.varint(1, buf.len()), buf[..].varint(1, buf.len()));
                assert_eq!(chunks.varint(1, buf.len()).unwrap().0, value);
            }
        }
        // Cut short by the end given (a field's end), in one piece or across two.
        let mut buf = Vec::new();
        encode_varint(300, &mut buf);
        assert_eq!(
            cut(&buf, &[1]).varint(0, 1),
            Err(WireError::TruncatedVarint(0))
        );
        assert_eq!(buf[..].varint(0, 1), Err(WireError::TruncatedVarint(0)));
        let long = [0xffu8; 12];
        assert_eq!(
            cut(&long, &[3, 7]).varint(0, 12),
            Err(WireError::LongVarint(0))
        );
    }

    #[test]
    fn ranges_borrow_inside_a_piece_and_copy_across_pieces() {
        let data: Vec<u8> = (0..=255).collect();
        let chunks = cut(&data, &[10, 100, 101, 200]);
        assert_eq!(chunks.len(), 256);
        assert_eq!(chunks.pieces().len(), 5);
        assert!(matches!(chunks.range(20, 90), Cow::Borrowed(_)));
        for (start, end) in [
            (0, 256),
            (5, 15),
            (99, 102),
            (100, 101),
            (150, 150),
            (0, 10),
        ] {
            assert_eq!(
                &*chunks.range(start, end),
                &data[start..end],
                "{start}..{end}"
            );
        }
    }

    #[test]
    fn fields_are_the_same_over_pieces_as_over_one_buffer() {
        // field 1 "abc", field 2 varint 300, field 3 a 200-byte string, field 4 fixed64.
        let mut buf = vec![0x0a, 3, b'a', b'b', b'c', 0x10];
        encode_varint(300, &mut buf);
        buf.push(0x1a);
        encode_varint(200, &mut buf);
        buf.extend(std::iter::repeat_n(b'x', 200));
        buf.push(0x21);
        buf.extend([1, 2, 3, 4, 5, 6, 7, 8]);
        let whole: Vec<_> = Fields::new(&buf, 0, buf.len()).collect();
        for at in 1..buf.len() {
            let chunks = cut(&buf, &[at]);
            let pieces: Vec<_> = Fields::over(&chunks, 0, chunks.len()).collect();
            assert_eq!(pieces, whole, "cut at {at}");
        }
        // Truncated: the same error either way.
        let short = &buf[..buf.len() - 3];
        let whole: Vec<_> = Fields::new(short, 0, short.len()).collect();
        let pieces: Vec<_> = Fields::over(&cut(short, &[7]), 0, short.len()).collect();
        assert_eq!(pieces, whole);
    }

    #[test]
    fn splicing_pieces_gives_the_bytes_of_splicing_one_buffer_and_shares_large_runs() {
        let data: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        let chunks = cut(&data, &[16_379, 32_763]);
        let splices = vec![
            Splice {
                start: 30_000,
                end: 30_010,
                bytes: b"new".to_vec(),
            },
            Splice {
                start: 2,
                end: 7,
                bytes: b"0123456789".to_vec(),
            },
        ];
        let edited = chunks.spliced(splices.clone());
        assert_eq!(&edited.contiguous()[..], &apply(&data, splices)[..]);
        // The untouched middle of the first piece is not copied: a slice of it.
        let first = &chunks.pieces()[0];
        assert!(edited
            .pieces()
            .iter()
            .any(|p| { p.as_ptr() == first[7..].as_ptr() && p.len() == first.len() - 7 }));
        assert!(!edited.same_as(&chunks));
        assert!(chunks.spliced(Vec::new()).same_as(&chunks));
        assert!(chunks.clone().same_as(&chunks));
        // Equal bytes are not the same message.
        assert!(!Chunks::from_pieces(chunks.pieces().to_vec()).same_as(&chunks));
    }

    #[test]
    fn gathering_keeps_frame_sized_pieces_and_copies_small_ones_within_the_declared_length() {
        let frame = Bytes::from(vec![7u8; 16_384]);
        let mut builder = Builder::gathering(3 * 16_384 + 10);
        builder.push(frame.clone());
        for _ in 0..10 {
            builder.push(Bytes::from_static(b"s"));
        }
        builder.push(frame.clone());
        builder.push(frame.clone());
        let chunks = builder.finish();
        assert_eq!(chunks.len(), 3 * 16_384 + 10);
        let pieces = chunks.pieces();
        assert_eq!(pieces.len(), 4);
        assert_eq!(pieces[0].as_ptr(), frame.as_ptr());
        assert_eq!(&pieces[1][..], b"ssssssssss");
        assert_eq!(pieces[2].as_ptr(), frame.as_ptr());

        // A small message arriving byte by byte: one piece, no room past its length.
        let mut builder = Builder::gathering(100);
        for _ in 0..100 {
            builder.push(Bytes::from_static(b"b"));
        }
        assert!(
            builder.small.capacity() <= 200,
            "{}",
            builder.small.capacity()
        );
        assert_eq!(builder.finish().pieces().len(), 1);

        // A large one in tiny frames: pieces of about KEEP_RECEIVED, never one per frame.
        let mut builder = Builder::gathering(1 << 20);
        for _ in 0..(1 << 20) / 64 {
            builder.push(Bytes::from(vec![1u8; 64]));
        }
        let chunks = builder.finish();
        assert_eq!(chunks.len(), 1 << 20);
        assert!(chunks.pieces().len() <= (1 << 20) / KEEP_RECEIVED + 1);
    }
}
