//! Certificate validity: the notBefore/notAfter dates of an X.509 certificate, read by a minimal DER
//! walk (rustls-webpki checks validity but does not expose it), and the warnings `strait check` and
//! startup give for a certificate Strait presents that is expired, not yet valid or expiring soon.
//!
//! Only the path to `TBSCertificate.validity` is read: `Certificate` SEQUENCE → `tbsCertificate`
//! SEQUENCE → optional `[0]` version, serialNumber, signature, issuer (each skipped by its length) →
//! `validity` SEQUENCE of two times (RFC 5280 §4.1.2.5: UTCTime `YYMMDDHHMMSSZ` or GeneralizedTime
//! `YYYYMMDDHHMMSSZ`). Every length is checked against the bytes left; nothing else is decoded.
//! Fuzzed by `fuzz/fuzz_targets/cert_validity.rs`.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// A certificate expiring within this many days is warned about.
pub(crate) const EXPIRY_WARNING_DAYS: i64 = 30;

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const SECONDS_PER_DAY: i64 = 86_400;

crate::internal! {
/// A certificate's validity period, in seconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}
}

crate::internal! {
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidityError {
    #[error("truncated or malformed DER at {0}")]
    Malformed(&'static str),
    #[error("expected {expected} in {at}")]
    UnexpectedTag {
        expected: &'static str,
        at: &'static str,
    },
    #[error("invalid time in {0}")]
    Time(&'static str),
}
}

/// Reads DER TLVs off a byte slice.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn peek_tag(&self) -> Option<u8> {
        self.data.first().copied()
    }

    /// The next TLV's tag and content.
    fn next(&mut self, at: &'static str) -> Result<(u8, &'a [u8]), ValidityError> {
        let malformed = ValidityError::Malformed(at);
        let (&tag, rest) = self.data.split_first().ok_or(malformed.clone())?;
        if tag & 0x1f == 0x1f {
            // High tag numbers never occur on the path read here.
            return Err(malformed);
        }
        let (&first, rest) = rest.split_first().ok_or(malformed.clone())?;
        let (len, rest) = match first {
            0..=0x7f => (usize::from(first), rest),
            // Long form, at most 4 length bytes (no certificate is 4 GiB); 0x80 is the
            // indefinite form, which DER forbids.
            0x81..=0x84 => {
                let n = usize::from(first & 0x7f);
                if rest.len() < n {
                    return Err(malformed);
                }
                let (bytes, rest) = rest.split_at(n);
                let len = bytes
                    .iter()
                    .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
                (len, rest)
            }
            _ => return Err(malformed),
        };
        if rest.len() < len {
            return Err(malformed);
        }
        let (content, rest) = rest.split_at(len);
        self.data = rest;
        Ok((tag, content))
    }

    fn expect(
        &mut self,
        tag: u8,
        expected: &'static str,
        at: &'static str,
    ) -> Result<&'a [u8], ValidityError> {
        match self.next(at)? {
            (found, content) if found == tag => Ok(content),
            _ => Err(ValidityError::UnexpectedTag { expected, at }),
        }
    }
}

crate::internal! {
/// The validity of a DER-encoded certificate.
pub fn validity(der: &[u8]) -> Result<Validity, ValidityError> {
    let certificate = Reader { data: der }.expect(SEQUENCE, "SEQUENCE", "Certificate")?;
    let tbs = Reader { data: certificate }.expect(SEQUENCE, "SEQUENCE", "tbsCertificate")?;
    let mut tbs = Reader { data: tbs };
    if tbs.peek_tag() == Some(VERSION) {
        tbs.next("version")?;
    }
    tbs.expect(INTEGER, "INTEGER", "serialNumber")?;
    tbs.expect(SEQUENCE, "SEQUENCE", "signature")?;
    tbs.expect(SEQUENCE, "SEQUENCE", "issuer")?;
    let mut validity = Reader {
        data: tbs.expect(SEQUENCE, "SEQUENCE", "validity")?,
    };
    let (tag, not_before) = validity.next("notBefore")?;
    let not_before = parse_time(tag, not_before).ok_or(ValidityError::Time("notBefore"))?;
    let (tag, not_after) = validity.next("notAfter")?;
    let not_after = parse_time(tag, not_after).ok_or(ValidityError::Time("notAfter"))?;
    Ok(Validity {
        not_before,
        not_after,
    })
}
}

crate::internal! {
/// Seconds since the Unix epoch of a DER UTCTime (`tag` 0x17) or GeneralizedTime (0x18) in the
/// forms RFC 5280 allows; `None` for anything else.
pub fn parse_time(tag: u8, bytes: &[u8]) -> Option<i64> {
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = bytes.get(range)?;
        part.iter().try_fold(0i64, |acc, b| {
            b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
        })
    };
    let (year, rest) = match (tag, bytes.len()) {
        (UTC_TIME, 13) => {
            let yy = digits(0..2)?;
            // RFC 5280: YY >= 50 is 19YY, else 20YY.
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
        }
        (GENERALIZED_TIME, 15) => (digits(0..4)?, 4),
        _ => return None,
    };
    if bytes.last() != Some(&b'Z') {
        return None;
    }
    let month = digits(rest..rest + 2)?;
    let day = digits(rest + 2..rest + 4)?;
    let hour = digits(rest + 4..rest + 6)?;
    let minute = digits(rest + 6..rest + 8)?;
    let second = digits(rest + 8..rest + 10)?;
    if !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * SECONDS_PER_DAY + hour * 3600 + minute * 60 + second)
}
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day) of a day count since 1970-01-01 (the inverse of [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

crate::internal! {
/// `2001-01-01 00:00:00 UTC`.
pub fn utc(seconds: i64) -> String {
    let (year, month, day) = civil_from_days(seconds.div_euclid(SECONDS_PER_DAY));
    let s = seconds.rem_euclid(SECONDS_PER_DAY);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}
}

/// Seconds since the Unix epoch now.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The problem with a validity at `now`, if any: expired, not yet valid, or expiring within
/// [`EXPIRY_WARNING_DAYS`].
pub(crate) fn problem(validity: Validity, now: i64) -> Option<String> {
    if now < validity.not_before {
        Some(format!(
            "not valid before {} (notBefore); peers will refuse it until then; it expires {} (notAfter)",
            utc(validity.not_before),
            utc(validity.not_after)
        ))
    } else if now > validity.not_after {
        Some(format!(
            "expired {} (notAfter); peers will refuse it",
            utc(validity.not_after)
        ))
    } else if validity.not_after - now <= EXPIRY_WARNING_DAYS * SECONDS_PER_DAY {
        Some(format!(
            "expires in {} day(s), {} (notAfter)",
            (validity.not_after - now) / SECONDS_PER_DAY,
            utc(validity.not_after)
        ))
    } else {
        None
    }
}

/// A certificate file's validity, as the date its first certificate expires, or why not known.
pub fn expiry(path: &Path) -> Result<String, String> {
    let certs = super::tls::load_certs("cert", path).map_err(|e| e.to_string())?;
    let first = certs.first().ok_or("no certificate")?;
    validity(first)
        .map(|v| utc(v.not_after))
        .map_err(|e| format!("validity unknown: {e}"))
}

/// Warnings for certificate files, each with the key it was given under (the config key that names
/// the file), for every certificate that is not valid at `now` or expires within
/// [`EXPIRY_WARNING_DAYS`]. Every certificate of a file (the chain) is checked.
pub(crate) fn warnings(files: &[(String, &Path)], now: i64) -> Vec<(String, String)> {
    let mut warnings = Vec::new();
    for (key, path) in files {
        // An unreadable file is a config error that validate() reports; nothing to add here.
        let Ok(certs) = super::tls::load_certs("cert", path) else {
            continue;
        };
        for (n, cert) in certs.iter().enumerate() {
            let which = if n == 0 {
                format!("{}: certificate", path.display())
            } else {
                format!("{}: certificate {} of the chain", path.display(), n + 1)
            };
            match validity(cert) {
                Ok(v) => {
                    if let Some(problem) = problem(v, now) {
                        warnings.push((key.clone(), format!("{which} {problem}")));
                    }
                }
                Err(err) => {
                    warnings.push((key.clone(), format!("{which}: validity unknown: {err}")))
                }
            }
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/certs")
            .join(name);
        super::super::tls::load_certs("cert", &path).unwrap()[0].to_vec()
    }

    #[test]
    fn fixture_certificates_have_the_dates_openssl_gave_them() {
        let expired = validity(&fixture("expired.pem")).unwrap();
        assert_eq!(utc(expired.not_before), "2000-01-01 00:00:00 UTC");
        assert_eq!(utc(expired.not_after), "2001-01-01 00:00:00 UTC");
        // GeneralizedTime (years from 2050).
        let future = validity(&fixture("not-yet-valid.pem")).unwrap();
        assert_eq!(utc(future.not_before), "2090-01-01 00:00:00 UTC");
        assert_eq!(utc(future.not_after), "2100-01-01 00:00:00 UTC");
        let server = validity(&fixture("server.pem")).unwrap();
        assert!(server.not_after - server.not_before > 99 * 365 * SECONDS_PER_DAY);
        assert_eq!(expired.not_after, 978_307_200);
    }

    #[test]
    fn problems_at_a_given_time() {
        let v = Validity {
            not_before: 1_000_000_000,
            not_after: 1_000_000_000 + 365 * SECONDS_PER_DAY,
        };
        let day = SECONDS_PER_DAY;
        let before = problem(v, v.not_before - 1).unwrap();
        assert!(
            before.starts_with("not valid before 2001-09-09 01:46:40 UTC"),
            "{before}"
        );
        assert_eq!(problem(v, v.not_before), None);
        assert_eq!(problem(v, v.not_after - 31 * day), None);
        let soon = problem(v, v.not_after - 30 * day).unwrap();
        assert_eq!(
            soon,
            "expires in 30 day(s), 2002-09-09 01:46:40 UTC (notAfter)"
        );
        let today = problem(v, v.not_after - 5).unwrap();
        assert!(today.starts_with("expires in 0 day(s)"), "{today}");
        assert_eq!(problem(v, v.not_after), problem(v, v.not_after - 5));
        let expired = problem(v, v.not_after + 1).unwrap();
        assert_eq!(
            expired,
            "expired 2002-09-09 01:46:40 UTC (notAfter); peers will refuse it"
        );
    }

    #[test]
    fn times_in_both_forms_and_calendar_edges() {
        let t = |tag, s: &str| parse_time(tag, s.as_bytes());
        assert_eq!(t(UTC_TIME, "700101000000Z"), Some(0));
        assert_eq!(
            t(UTC_TIME, "491231235959Z"),
            t(GENERALIZED_TIME, "20491231235959Z")
        );
        assert_eq!(
            t(UTC_TIME, "500101000000Z"),
            t(GENERALIZED_TIME, "19500101000000Z")
        );
        assert_eq!(
            t(GENERALIZED_TIME, "20000229120000Z").map(utc).as_deref(),
            Some("2000-02-29 12:00:00 UTC")
        );
        assert_eq!(t(GENERALIZED_TIME, "19000229000000Z"), None);
        assert_eq!(
            t(GENERALIZED_TIME, "00010101000000Z").map(utc).as_deref(),
            Some("0001-01-01 00:00:00 UTC")
        );
        assert_eq!(
            t(GENERALIZED_TIME, "99991231235959Z").map(utc).as_deref(),
            Some("9999-12-31 23:59:59 UTC")
        );
        for bad in [
            "20001301000000Z",
            "20000100000000Z",
            "20000431000000Z",
            "20000101240000Z",
            "20000101006000Z",
            "20000101000060Z",
            "20000101000000",
            "2000010100000Z",
            "20000101000000+",
            "2000-101000000Z",
            "20000101000000.5Z",
        ] {
            assert_eq!(t(GENERALIZED_TIME, bad), None, "{bad}");
        }
        assert_eq!(t(UTC_TIME, "20000101000000Z"), None);
        assert_eq!(t(0x04, "000101000000Z"), None);
        // Day counts round-trip over a wide range.
        for days in (-800_000..3_000_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn malformed_der_is_an_error_never_a_panic() {
        let good = fixture("server.pem");
        assert!(validity(&good).is_ok());
        // Every truncation fails cleanly: the outer length claims more than is there.
        for len in 0..good.len() {
            assert!(validity(&good[..len]).is_err(), "{len}");
        }
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x80, 0, 0],
            &[0x30, 0x85, 1, 0, 0, 0, 0],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            &[0x1f, 0x01, 0x00],
            &[0x30, 0x02, 0x30, 0x00],
            &[0x31, 0x00],
        ] {
            assert!(validity(bad).is_err(), "{bad:?}");
        }
        // A wrong tag where the serial number should be (right after the v3 version field).
        let mut wrong = good.clone();
        let version = [VERSION, 3, INTEGER, 1, 2];
        let serial = wrong.windows(5).position(|w| w == version).unwrap() + 5;
        assert_eq!(wrong[serial], INTEGER);
        wrong[serial] = 0x04;
        assert!(validity(&wrong).is_err());
    }

    #[test]
    fn warnings_name_the_key_the_file_and_the_date() {
        let certs = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/certs");
        let (good, future, expired) = (
            certs.join("server.pem"),
            certs.join("not-yet-valid.pem"),
            certs.join("expired.pem"),
        );
        let files = [
            ("good".to_owned(), good.as_path()),
            ("future".to_owned(), future.as_path()),
            ("expired".to_owned(), expired.as_path()),
            ("missing".to_owned(), Path::new("/nonexistent/cert.pem")),
        ];
        let warnings = warnings(&files, now());
        let keys: Vec<&str> = warnings.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["future", "expired"], "{warnings:?}");
        assert!(
            warnings[0]
                .1
                .contains("not valid before 2090-01-01 00:00:00 UTC"),
            "{warnings:?}"
        );
        assert!(warnings[0].1.contains("not-yet-valid.pem"), "{warnings:?}");
        assert!(
            warnings[1].1.contains("expired 2001-01-01 00:00:00 UTC"),
            "{warnings:?}"
        );
        // The good certificate: warned about only when its end is near.
        let server = validity(&fixture("server.pem")).unwrap();
        let near = super::warnings(&files, server.not_after - 3 * SECONDS_PER_DAY);
        assert!(
            near.iter()
                .any(|(k, m)| k == "good" && m.contains("expires in 3 day(s)")),
            "{near:?}"
        );
        assert_eq!(expiry(&good).unwrap(), utc(server.not_after));
    }

    /// Prints `seconds` as a GeneralizedTime and parses it back (the fuzz target's invariant).
    fn round_trips(seconds: i64) -> bool {
        let mut text: String = utc(seconds).chars().filter(char::is_ascii_digit).collect();
        text.push('Z');
        text.len() == 15 && parse_time(GENERALIZED_TIME, text.as_bytes()) == Some(seconds)
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Certificates with bytes overwritten: an error or real times, never a panic.
        #[test]
        fn mutated_certificates_never_panic(
            seed in 0usize..3,
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            let name = ["server.pem", "expired.pem", "not-yet-valid.pem"][seed];
            let mut der = fixture(name);
            for (at, byte) in edits {
                let at = at % der.len();
                der[at] = byte;
            }
            der.truncate(cut % (der.len() + 1));
            if let Ok(v) = validity(&der) {
                prop_assert!(round_trips(v.not_before) && round_trips(v.not_after));
            }
        }

        #[test]
        fn any_valid_time_round_trips(digits in "[0-9]{14}", utc_form in any::<bool>()) {
            let (tag, text) = if utc_form {
                (UTC_TIME, format!("{}Z", &digits[2..]))
            } else {
                (GENERALIZED_TIME, format!("{digits}Z"))
            };
            if let Some(seconds) = parse_time(tag, text.as_bytes()) {
                prop_assert!(round_trips(seconds), "{}", text);
            }
        }
    }
}
