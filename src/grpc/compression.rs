//! Per-message compression (`grpc-encoding`): gzip messages are inflated for the message pipeline's
//! stages (bounded by the message-size limit) and deflated again when a stage changed them; other
//! encodings cannot be read.

use std::io::{Read, Write};

use bytes::Bytes;

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Other(String),
}

impl Encoding {
    /// From a `grpc-encoding` header value (absent = identity).
    pub(crate) fn from_header(value: Option<&http::HeaderValue>) -> Encoding {
        match value.and_then(|v| v.to_str().ok()) {
            None | Some("identity") => Encoding::Identity,
            Some("gzip") => Encoding::Gzip,
            Some(other) => Encoding::Other(other.to_owned()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompressionError {
    #[error("message compressed with {0:?}: Strait can edit identity and gzip messages only")]
    Unsupported(String),
    #[error("compressed flag set but the call declares no grpc-encoding")]
    MissingEncoding,
    #[error("gzip message is corrupt: {0}")]
    Corrupt(String),
    #[error("gzip message inflates beyond the limit of {limit} bytes")]
    TooLarge { limit: u32 },
}

/// A message's bytes as the stages see them: `body` itself when it is not compressed, else inflated
/// (to at most `limit` bytes).
pub(crate) fn decompress(
    encoding: &Encoding,
    compressed: bool,
    body: &Bytes,
    limit: u32,
) -> Result<Bytes, CompressionError> {
    if !compressed {
        return Ok(body.clone());
    }
    match encoding {
        Encoding::Gzip => Ok(Bytes::from(gunzip(body, limit)?)),
        Encoding::Identity => Err(CompressionError::MissingEncoding),
        Encoding::Other(name) => Err(CompressionError::Unsupported(name.clone())),
    }
}

/// Compresses an edited message again as `encoding` (one that [`decompress`] accepted).
pub(crate) fn compress(encoding: &Encoding, plain: &[u8]) -> Result<Bytes, CompressionError> {
    match encoding {
        Encoding::Gzip => Ok(Bytes::from(gzip(plain)?)),
        Encoding::Identity => Err(CompressionError::MissingEncoding),
        Encoding::Other(name) => Err(CompressionError::Unsupported(name.clone())),
    }
}

pub fn gunzip(data: &[u8], limit: u32) -> Result<Vec<u8>, CompressionError> {
    let mut out = Vec::with_capacity(data.len().saturating_mul(4).min(limit as usize));
    // Read one byte past the limit to tell "exactly at the limit" from "beyond it".
    let read = GzDecoder::new(data)
        .take(u64::from(limit) + 1)
        .read_to_end(&mut out)
        .map_err(|e| CompressionError::Corrupt(e.to_string()))?;
    if read > limit as usize {
        return Err(CompressionError::TooLarge { limit });
    }
    Ok(out)
}

pub fn gzip(data: &[u8]) -> Result<Vec<u8>, CompressionError> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(data.len() / 2 + 64), Compression::fast());
    encoder
        .write_all(data)
        .map_err(|e| CompressionError::Corrupt(e.to_string()))?;
    encoder
        .finish()
        .map_err(|e| CompressionError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip_and_limits() {
        let data = vec![42u8; 10_000];
        let packed = gzip(&data).unwrap();
        assert_eq!(gunzip(&packed, 10_000).unwrap(), data);
        assert_eq!(
            gunzip(&packed, 9_999),
            Err(CompressionError::TooLarge { limit: 9_999 })
        );
        assert!(matches!(
            gunzip(b"not gzip", 100),
            Err(CompressionError::Corrupt(_))
        ));
    }
}
