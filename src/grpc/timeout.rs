//! The `grpc-timeout` request header: up to 8 ASCII digits and a unit (H, M, S, m, u, n).

use std::time::Duration;

use http::HeaderValue;

/// Parses a `grpc-timeout` value; `None` when it is malformed (then the call has no deadline of its own).
pub fn parse(value: &HeaderValue) -> Option<Duration> {
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
}
