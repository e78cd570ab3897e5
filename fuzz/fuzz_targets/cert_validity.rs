//! Fuzzes the certificate validity reader (`strait::transport::validity`): a minimal DER walk to
//! `TBSCertificate.validity` and the UTCTime/GeneralizedTime parser. Checks: no panic on any bytes;
//! a validity it returns holds real calendar times, each of which, printed back as a GeneralizedTime,
//! parses to the same second; and the time parser alone, on the same bytes under either tag, obeys
//! the same round trip.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run cert_validity fuzz/seeds/cert_validity` (from the repo root;
//! add `-- -max_total_time=N`), or `scripts/fuzz.sh`, which starts from a copy of the seeds (DER
//! copies of tests/fixtures/certs: UTCTime and GeneralizedTime validities).
#![no_main]

use libfuzzer_sys::fuzz_target;
use strait::transport::validity::{parse_time, utc, validity};

/// GeneralizedTime tag.
const GENERALIZED_TIME: u8 = 0x18;

/// Prints `seconds` as a GeneralizedTime and parses it back.
fn round_trip(seconds: i64) {
    // "YYYY-MM-DD HH:MM:SS UTC" → "YYYYMMDDHHMMSSZ"
    let mut text: String = utc(seconds).chars().filter(char::is_ascii_digit).collect();
    assert_eq!(text.len(), 14, "{seconds}: {}", utc(seconds));
    text.push('Z');
    assert_eq!(
        parse_time(GENERALIZED_TIME, text.as_bytes()),
        Some(seconds),
        "{text}"
    );
}

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = validity(data) {
        round_trip(v.not_before);
        round_trip(v.not_after);
    }
    for tag in [0x17, GENERALIZED_TIME] {
        if let Some(seconds) = parse_time(tag, data) {
            round_trip(seconds);
        }
    }
});
