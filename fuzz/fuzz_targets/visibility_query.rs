//! Fuzzes visibility-query translation (`strait::rewrite::query::translate_query`) with arbitrary
//! UTF-8 and a fixed bijective map, a permutation of names, so that every input can round-trip.
//! Checks: no panic; the map never decides whether a query is refused (the same error as with an
//! empty map); `Ok(Some(t))` differs from the input, and translating `t` with the inverse map gives
//! back the input exactly; `Ok(None)` means no name the translator asked about is mapped; renaming
//! every (undotted) name it asked about round-trips as well, so each name is rewritten in place and
//! reads back as the same token; and on text with no quotes, comments, dots, variables or signs the
//! result equals a naive word-by-word replacement. With a lookup that refuses some names, the query
//! fails naming the first refused name asked about, and is translated as before when it has none.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run visibility_query fuzz/seeds/visibility_query` (from the
//! repo root; add `-- -max_total_time=N`), or `scripts/fuzz.sh`, which starts from a copy of the seeds.
#![no_main]

use std::cell::RefCell;
use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use strait::rewrite::query::{translate_query, translate_query_with, Lookup, QueryError};

/// CustomerId ↔ OrderCustomer, Alpha → Beta → Gamma → Alpha, `Custom Attr` ↔ `Other Attr`.
const PAIRS: &[(&str, &str)] = &[
    ("CustomerId", "OrderCustomer"),
    ("OrderCustomer", "CustomerId"),
    ("Alpha", "Beta"),
    ("Beta", "Gamma"),
    ("Gamma", "Alpha"),
    ("Custom Attr", "Other Attr"),
    ("Other Attr", "Custom Attr"),
];

fn forward(name: &str) -> Option<&'static str> {
    PAIRS
        .iter()
        .find(|(from, _)| *from == name)
        .map(|(_, to)| *to)
}

fn inverse(name: &str) -> Option<&'static str> {
    PAIRS
        .iter()
        .find(|(_, to)| *to == name)
        .map(|(from, _)| *from)
}

/// The expected translation of text where every maximal `[A-Za-z0-9_]` run is a token.
fn naive(text: &str) -> Option<String> {
    let mut out = String::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let starts_with_digit = word.starts_with(|c: char| c.is_ascii_digit());
        match forward(word) {
            Some(to) if !starts_with_digit => out.push_str(to),
            _ => out.push_str(word),
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    (out != text).then_some(out)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    let asked = RefCell::new(Vec::new());
    let record = |name: &str| {
        asked.borrow_mut().push(name.to_owned());
        forward(name)
    };
    let result = translate_query(text, &record);
    let asked = asked.into_inner();

    // Whether a query is refused depends on its text only.
    let unmapped: Result<Option<String>, QueryError> = translate_query(text, &|_| None);
    match &result {
        Err(err) => {
            assert_eq!(unmapped.as_ref(), Err(err), "error depends on the map");
            return;
        }
        Ok(_) => assert_eq!(unmapped, Ok(None), "the empty map changed something"),
    }

    // Refusals: with a lookup that refuses some names, the first refused name asked about fails
    // the query; with none of them in it, the translation is the same as without refusals.
    let refuses = |name: &str| name.starts_with('R') || name.contains(' ');
    let refusing = translate_query_with(text, &|name| {
        if refuses(name) {
            Lookup::Refuse
        } else {
            forward(name).map_or(Lookup::Keep, Lookup::Rename)
        }
    });
    match asked.iter().find(|n| refuses(n)) {
        Some(first) => assert!(
            matches!(&refusing, Err(QueryError::Refused { name, .. }) if name == first),
            "expected {first:?} refused, got {refusing:?}"
        ),
        None => assert_eq!(refusing, result, "a lookup refusing nothing here changed the result"),
    }

    match &result {
        Ok(Some(translated)) => {
            assert_ne!(translated, text, "Some without a change");
            let back = translate_query(translated, &inverse);
            assert_eq!(
                back,
                Ok(Some(text.to_owned())),
                "inverse did not restore {translated:?}"
            );
        }
        Ok(None) => {
            let mapped: Vec<&String> = asked.iter().filter(|n| forward(n).is_some()).collect();
            assert!(
                mapped.is_empty(),
                "mapped names {mapped:?} left untranslated"
            );
        }
        Err(_) => {}
    }

    // Every name asked about (qualified ones aside), renamed and renamed back.
    let suffixed: HashMap<String, String> = asked
        .iter()
        .filter(|n| !n.contains('.'))
        .map(|n| (n.clone(), format!("{n}_z")))
        .collect();
    let unsuffixed: HashMap<String, String> = suffixed
        .iter()
        .map(|(from, to)| (to.clone(), from.clone()))
        .collect();
    let there = translate_query(text, &|n| suffixed.get(n).map(String::as_str));
    match there {
        Ok(Some(there)) => {
            let back = translate_query(&there, &|n| unsuffixed.get(n).map(String::as_str));
            assert_eq!(
                back,
                Ok(Some(text.to_owned())),
                "suffixes did not round-trip via {there:?}"
            );
        }
        Ok(None) => assert!(
            suffixed.is_empty(),
            "names {suffixed:?} asked about but not renamed"
        ),
        Err(err) => panic!("renaming every name failed: {err}"),
    }

    // Without any of these characters, every word is a name or a keyword (none of which is mapped).
    if !text.contains(['\'', '"', '`', '#', '/', '-', '+', '.', ':', '@']) {
        assert_eq!(
            result,
            Ok(naive(text)),
            "differs from a word-by-word replacement"
        );
    }
});
