//! The protobuf wire format, and the only code in Strait that touches tags, varints and lengths.
//!
//! Reading: [`Fields`] iterates the fields of one message in place (no copies), yielding each field's
//! number, wire type and byte ranges. Writing: edits are [`Splice`]s — "replace bytes `start..end` of
//! the original with these" — collected during a walk and applied in one pass by [`apply`], so every
//! untouched byte is copied exactly once and only the lengths of changed ancestors are re-encoded.

mod chunks;

use bytes::Bytes;

pub use chunks::Chunks;
pub(crate) use chunks::{Builder, Source};

/// Nesting depth beyond which a message is refused (protobuf's own default limit is 100).
pub(crate) const MAX_DEPTH: usize = 100;

/// Largest nesting of groups skipped inside unknown fields.
const MAX_GROUP_DEPTH: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireType {
    Varint,
    I64,
    Len,
    StartGroup,
    EndGroup,
    I32,
}

impl WireType {
    fn from_tag(tag: u64) -> Option<WireType> {
        Some(match tag & 7 {
            0 => WireType::Varint,
            1 => WireType::I64,
            2 => WireType::Len,
            3 => WireType::StartGroup,
            4 => WireType::EndGroup,
            5 => WireType::I32,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("truncated varint at byte {0}")]
    TruncatedVarint(usize),
    #[error("varint longer than 10 bytes at byte {0}")]
    LongVarint(usize),
    #[error("invalid wire type {wire_type} at byte {offset}")]
    BadWireType { wire_type: u8, offset: usize },
    #[error("field number 0 at byte {0}")]
    FieldZero(usize),
    #[error("field at byte {offset} runs past the end of its message ({len} bytes needed)")]
    Truncated { offset: usize, len: u64 },
    #[error("unbalanced group at byte {0}")]
    Group(usize),
}

/// One field occurrence. Offsets are absolute within the buffer the iterator was created on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Field {
    pub(crate) number: u32,
    pub(crate) wire_type: WireType,
    /// Start of the tag.
    pub(crate) start: usize,
    /// Start of the length prefix (`Len` fields), else the value.
    pub(crate) len_start: usize,
    /// Start of the value (after tag and length prefix).
    pub(crate) value_start: usize,
    /// End of the value.
    pub(crate) end: usize,
}

/// Reads a varint at `pos`; returns the value and the position after it.
#[inline]
pub(crate) fn read_varint(buf: &[u8], pos: usize) -> Result<(u64, usize), WireError> {
    // Tags and most lengths fit one byte: the common case without a loop.
    if let Some(&byte) = buf.get(pos) {
        if byte < 0x80 {
            return Ok((u64::from(byte), pos + 1));
        }
    }
    read_varint_slow(buf, pos)
}

fn read_varint_slow(buf: &[u8], pos: usize) -> Result<(u64, usize), WireError> {
    let mut value = 0u64;
    for i in 0..10 {
        let Some(&byte) = buf.get(pos + i) else {
            return Err(WireError::TruncatedVarint(pos));
        };
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Ok((value, pos + i + 1));
        }
    }
    Err(WireError::LongVarint(pos))
}

pub(crate) fn varint_len(value: u64) -> usize {
    // 1 byte per 7 bits, at least one.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

pub(crate) fn encode_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Iterator over the fields of the message in `buf[start..end]`, of a contiguous buffer or of
/// [`Chunks`].
pub(crate) struct Fields<'a, S: Source + ?Sized = [u8]> {
    buf: &'a S,
    pos: usize,
    end: usize,
    failed: bool,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(buf: &'a [u8], start: usize, end: usize) -> Self {
        Fields::over(buf, start, end)
    }
}

impl<'a, S: Source + ?Sized> Fields<'a, S> {
    /// The fields of `buf[start..end]`, for any [`Source`].
    pub(crate) fn over(buf: &'a S, start: usize, end: usize) -> Self {
        Self {
            buf,
            pos: start,
            end: end.min(buf.len()),
            failed: false,
        }
    }

    fn next_field(&mut self) -> Result<Field, WireError> {
        let start = self.pos;
        let (buf, limit) = (self.buf, self.end);
        let (tag, after_tag) = buf.varint(start, limit)?;
        let wire_type = WireType::from_tag(tag).ok_or(WireError::BadWireType {
            wire_type: (tag & 7) as u8,
            offset: start,
        })?;
        let number = u32::try_from(tag >> 3).map_err(|_| WireError::FieldZero(start))?;
        if number == 0 {
            return Err(WireError::FieldZero(start));
        }
        let (len_start, value_start, end) = match wire_type {
            WireType::Varint => {
                let (_, end) = buf.varint(after_tag, limit)?;
                (after_tag, after_tag, end)
            }
            WireType::I64 => (after_tag, after_tag, fixed(limit, after_tag, 8)?),
            WireType::I32 => (after_tag, after_tag, fixed(limit, after_tag, 4)?),
            WireType::Len => {
                let (len, value_start) = buf.varint(after_tag, limit)?;
                let end = usize::try_from(len)
                    .ok()
                    .and_then(|len| value_start.checked_add(len))
                    .filter(|end| *end <= limit)
                    .ok_or(WireError::Truncated { offset: start, len })?;
                (after_tag, value_start, end)
            }
            WireType::StartGroup => {
                let end = skip_group(buf, limit, after_tag, number, 1)?;
                (after_tag, after_tag, end)
            }
            WireType::EndGroup => return Err(WireError::Group(start)),
        };
        self.pos = end;
        Ok(Field {
            number,
            wire_type,
            start,
            len_start,
            value_start,
            end,
        })
    }
}

impl<S: Source + ?Sized> Iterator for Fields<'_, S> {
    type Item = Result<Field, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.end {
            return None;
        }
        let field = self.next_field();
        self.failed = field.is_err();
        Some(field)
    }
}

/// The end of a fixed-size value of `len` bytes at `pos`, which must not pass `limit`.
fn fixed(limit: usize, pos: usize, len: usize) -> Result<usize, WireError> {
    let end = pos + len;
    if end > limit {
        return Err(WireError::Truncated {
            offset: pos,
            len: len as u64,
        });
    }
    Ok(end)
}

/// Skips a group's contents up to and including its matching end tag (before `limit`); returns the
/// position after it.
fn skip_group<S: Source + ?Sized>(
    buf: &S,
    limit: usize,
    mut pos: usize,
    number: u32,
    depth: usize,
) -> Result<usize, WireError> {
    if depth > MAX_GROUP_DEPTH {
        return Err(WireError::Group(pos));
    }
    loop {
        let start = pos;
        let (tag, after) = buf.varint(pos, limit)?;
        let wire_type = WireType::from_tag(tag).ok_or(WireError::BadWireType {
            wire_type: (tag & 7) as u8,
            offset: start,
        })?;
        let inner = (tag >> 3) as u32;
        pos = match wire_type {
            WireType::Varint => buf.varint(after, limit)?.1,
            WireType::I64 => fixed(limit, after, 8)?,
            WireType::I32 => fixed(limit, after, 4)?,
            WireType::Len => {
                let (len, value_start) = buf.varint(after, limit)?;
                usize::try_from(len)
                    .ok()
                    .and_then(|len| value_start.checked_add(len))
                    .filter(|end| *end <= limit)
                    .ok_or(WireError::Truncated { offset: start, len })?
            }
            WireType::StartGroup => skip_group(buf, limit, after, inner, depth + 1)?,
            WireType::EndGroup if inner == number => return Ok(after),
            WireType::EndGroup => return Err(WireError::Group(start)),
        };
    }
}

/// Replace `original[start..end]` with `bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Splice {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) bytes: Vec<u8>,
}

impl Splice {
    /// A length-delimited value replaced whole: new length prefix plus new content, covering the
    /// field's old length prefix and value.
    pub(crate) fn len_value(field: &Field, content: &[u8]) -> Splice {
        let mut bytes = Vec::with_capacity(varint_len(content.len() as u64) + content.len());
        encode_varint(content.len() as u64, &mut bytes);
        bytes.extend_from_slice(content);
        Splice {
            start: field.len_start,
            end: field.end,
            bytes,
        }
    }

    /// Only the length prefix of a length-delimited field whose content grew or shrank by `delta`
    /// (the content's own splices are recorded separately).
    pub(crate) fn len_prefix(field: &Field, delta: isize) -> Splice {
        let old_len = (field.end - field.value_start) as isize;
        let mut bytes = Vec::with_capacity(10);
        encode_varint((old_len + delta) as u64, &mut bytes);
        Splice {
            start: field.len_start,
            end: field.value_start,
            bytes,
        }
    }

    /// The whole field (tag, length and value) removed: how a denied element of a repeated field
    /// leaves a message.
    pub(crate) fn remove(field: &Field) -> Splice {
        Splice {
            start: field.start,
            end: field.end,
            bytes: Vec::new(),
        }
    }

    /// Size change this splice makes.
    pub(crate) fn delta(&self) -> isize {
        self.bytes.len() as isize - (self.end - self.start) as isize
    }
}

/// Sets every top-level occurrence of length-delimited field `number` of `body` to `value`; the same
/// `Bytes` when there is none or it already holds `value`.
pub(crate) fn replace_top_level(
    body: &Chunks,
    number: u32,
    value: &[u8],
) -> Result<Chunks, WireError> {
    let mut splices = Vec::new();
    for field in Fields::over(body, 0, body.len()) {
        let field = field?;
        if field.number == number
            && field.wire_type == WireType::Len
            && *body.range(field.value_start, field.end) != *value
        {
            splices.push(Splice::len_value(&field, value));
        }
    }
    Ok(body.spliced(splices))
}

/// Applies non-overlapping splices (in any order) to `original` in one copy.
pub(crate) fn apply(original: &[u8], mut splices: Vec<Splice>) -> Vec<u8> {
    splices.sort_by_key(|s| s.start);
    let delta: isize = splices.iter().map(Splice::delta).sum();
    let mut out = Vec::with_capacity((original.len() as isize + delta).max(0) as usize);
    let mut pos = 0;
    for splice in &splices {
        out.extend_from_slice(&original[pos..splice.start]);
        out.extend_from_slice(&splice.bytes);
        pos = splice.end;
    }
    out.extend_from_slice(&original[pos..]);
    out
}

/// Applies splices to a `Bytes`; with none, returns the same `Bytes` (no copy).
pub(crate) fn apply_bytes(original: &Bytes, splices: Vec<Splice>) -> Bytes {
    if splices.is_empty() {
        return original.clone();
    }
    Bytes::from(apply(original, splices))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn varints_round_trip() {
        for value in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            encode_varint(value, &mut out);
            assert_eq!(out.len(), varint_len(value), "{value}");
            assert_eq!(read_varint(&out, 0).unwrap(), (value, out.len()));
        }
        assert_eq!(read_varint(&[0x80], 0), Err(WireError::TruncatedVarint(0)));
        assert_eq!(read_varint(&[0xff; 11], 0), Err(WireError::LongVarint(0)));
    }

    #[test]
    fn fields_of_every_wire_type() {
        // 1: varint 150, 2: "hi", 3: fixed64, 4: group { 1: varint 1 }, 5: fixed32
        let buf = [
            0x08, 0x96, 0x01, 0x12, 0x02, b'h', b'i', 0x19, 1, 2, 3, 4, 5, 6, 7, 8, 0x23, 0x08,
            0x01, 0x24, 0x2d, 1, 2, 3, 4,
        ];
        let fields: Vec<Field> = Fields::new(&buf, 0, buf.len())
            .collect::<Result<_, _>>()
            .unwrap();
        let numbers: Vec<u32> = fields.iter().map(|f| f.number).collect();
        assert_eq!(numbers, vec![1, 2, 3, 4, 5]);
        assert_eq!(&buf[fields[1].value_start..fields[1].end], b"hi");
        assert_eq!(fields[1].len_start, 4);
        assert_eq!(fields[3].end, 20);
        assert_eq!(fields[4].end, buf.len());
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bad in [
            &[0x12, 0x05, b'a'][..],
            &[0x0f],
            &[0x00, 0x01],
            &[0x23, 0x08],
            &[0x24],
            &[0x0a, 0xff],
        ] {
            let result: Result<Vec<Field>, WireError> = Fields::new(bad, 0, bad.len()).collect();
            assert!(result.is_err(), "{bad:?}");
        }
    }

    #[test]
    fn splices_rewrite_values_and_lengths() {
        // message { 1: "ab", 2: { 1: "cd" } }
        let buf = [0x0a, 0x02, b'a', b'b', 0x12, 0x04, 0x0a, 0x02, b'c', b'd'];
        let fields: Vec<Field> = Fields::new(&buf, 0, buf.len())
            .collect::<Result<_, _>>()
            .unwrap();
        let inner: Vec<Field> = Fields::new(&buf, fields[1].value_start, fields[1].end)
            .collect::<Result<_, _>>()
            .unwrap();
        let grow = Splice::len_value(&inner[0], b"cdef");
        let parent = Splice::len_prefix(&fields[1], grow.delta());
        let out = apply(&buf, vec![grow, parent, Splice::len_value(&fields[0], b"")]);
        assert_eq!(
            out,
            vec![0x0a, 0x00, 0x12, 0x06, 0x0a, 0x04, b'c', b'd', b'e', b'f']
        );
        let same = Bytes::from_static(b"xyz");
        assert_eq!(apply_bytes(&same, vec![]).as_ptr(), same.as_ptr());
    }
}
