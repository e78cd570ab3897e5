//! gRPC status codes and how they travel: `grpc-status` / `grpc-message` trailers, or a trailers-only
//! response (one HEADERS frame with END_STREAM) when the call fails before any response.

use http::{HeaderMap, HeaderValue, Response, StatusCode};

/// The gRPC status codes (<https://grpc.github.io/grpc/core/md_doc_statuscodes.html>).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl From<Code> for crate::metrics::CodeLabel {
    fn from(code: Code) -> Self {
        crate::metrics::CodeLabel {
            number: code as usize,
            name: code.as_str(),
        }
    }
}

impl Code {
    pub(crate) const ALL: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    pub(crate) fn from_i32(value: i32) -> Code {
        usize::try_from(value)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
            .unwrap_or(Code::Unknown)
    }

    /// Reads `grpc-status` from trailers (or trailers-only headers).
    pub(crate) fn from_headers(headers: &HeaderMap) -> Option<Code> {
        let value = headers.get("grpc-status")?.to_str().ok()?;
        Some(
            value
                .parse::<i32>()
                .map(Code::from_i32)
                .unwrap_or(Code::Unknown),
        )
    }

    /// The canonical upper-case name, used as a metric label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }

    fn header_value(self) -> HeaderValue {
        HeaderValue::from(self as u16)
    }
}

/// A status the proxy itself produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Status {
    pub(crate) code: Code,
    pub(crate) message: String,
}

impl Status {
    pub(crate) fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// `grpc-status` and `grpc-message` as trailers.
    pub(crate) fn to_trailers(&self) -> HeaderMap {
        let mut trailers = HeaderMap::with_capacity(2);
        self.write(&mut trailers);
        trailers
    }

    fn write(&self, headers: &mut HeaderMap) {
        headers.insert("grpc-status", self.code.header_value());
        if let Ok(value) = HeaderValue::from_str(&percent_encode(&self.message)) {
            headers.insert("grpc-message", value);
        }
    }

    /// A trailers-only response: HTTP 200, gRPC content type and the status, to send with END_STREAM.
    pub(crate) fn to_trailers_only_response(&self) -> Response<()> {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::OK;
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        self.write(headers);
        response
    }
}

/// Percent-encodes a `grpc-message` per the gRPC HTTP/2 spec: printable ASCII except `%` stays.
pub(crate) fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Decodes a percent-encoded `grpc-message`; a `%` not followed by two hex digits stays as it is.
pub(crate) fn percent_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = raw
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (raw[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in Code::ALL {
            assert_eq!(Code::from_i32(code as i32), code);
        }
        assert_eq!(Code::from_i32(99), Code::Unknown);
        assert_eq!(Code::from_i32(-1), Code::Unknown);
    }

    #[test]
    fn message_is_percent_encoded() {
        assert_eq!(percent_encode("a b%c\nü"), "a b%25c%0A%C3%BC");
        let trailers = Status::new(Code::Unavailable, "down: 100%").to_trailers();
        assert_eq!(trailers["grpc-status"], "14");
        assert_eq!(trailers["grpc-message"], "down: 100%25");
        assert_eq!(Code::from_headers(&trailers), Some(Code::Unavailable));
    }

    #[test]
    fn message_percent_decoding() {
        assert_eq!(percent_decode(b"a%20b%zz%"), "a b%zz%");
        assert_eq!(percent_decode(b"caf%C3%A9"), "café");
        let encoded = percent_encode("down: 100%\nü");
        assert_eq!(percent_decode(encoded.as_bytes()), "down: 100%\nü");
    }
}
