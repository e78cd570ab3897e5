//! The `grpc-timeout` request header: up to 8 ASCII digits and a unit (H, M, S, m, u, n).

use std::time::Duration;

use http::HeaderValue;

/// Parses a `grpc-timeout` value; `None` when it is malformed (then the call has no deadline of its own).
pub(crate) fn parse(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?;
    if text.len() < 2 || text.len() > 9 {
        return None;
    }
    let (digits, unit) = text.split_at(text.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Encodes a `grpc-timeout` value: whole milliseconds (at least 1), or coarser units when the
/// amount would not fit the 8 digits allowed. Never shorter than `timeout` but for sub-ms rounding.
pub(crate) fn encode(timeout: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let millis = timeout.as_millis().max(1);
    let (amount, unit) = if millis <= MAX {
        (millis, 'm')
    } else if timeout.as_secs() <= MAX as u64 {
        (u128::from(timeout.as_secs()), 'S')
    } else {
        ((u128::from(timeout.as_secs()) / 3600).min(MAX), 'H')
    };
    // Only ASCII digits and a unit letter: always a valid header value.
    HeaderValue::from_str(&format!("{amount}{unit}")).unwrap_or(HeaderValue::from_static("1m"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        let p = |s: &'static str| parse(&HeaderValue::from_static(s));
        assert_eq!(p("70S"), Some(Duration::from_secs(70)));
        assert_eq!(p("2M"), Some(Duration::from_secs(120)));
        assert_eq!(p("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(p("250m"), Some(Duration::from_millis(250)));
        assert_eq!(p("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(p("5n"), Some(Duration::from_nanos(5)));
        assert_eq!(p("S"), None);
        assert_eq!(p("123456789S"), None);
        assert_eq!(p("10x"), None);
        assert_eq!(p("-1S"), None);
    }

    #[test]
    fn encoded_values_parse_back() {
        let e = |d: Duration| parse(&encode(d));
        assert_eq!(encode(Duration::from_secs(5)), "5000m");
        assert_eq!(e(Duration::from_micros(10)), Some(Duration::from_millis(1)));
        assert_eq!(
            e(Duration::from_secs(200_000)),
            Some(Duration::from_secs(200_000))
        );
        assert_eq!(encode(Duration::MAX), "99999999H");
    }
}
