//! Fuzzes configuration parsing and validation (`strait::config::Config::parse`) with arbitrary text.
//! Checks: no panic; a refused configuration always names at least one problem, each with a key and a
//! message; an accepted one has a listener or cluster connection, and every listener's upstream exists.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run config_parse` (from the repo root).
#![no_main]

use libfuzzer_sys::fuzz_target;
use strait::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Config::parse(text) {
        Ok(config) => {
            assert!(!config.listeners.is_empty() || !config.cluster_connections.is_empty());
            for listener in &config.listeners {
                assert!(config.upstream(&listener.upstream).is_some());
            }
        }
        Err(err) => {
            let problems = err.problems();
            assert!(!problems.is_empty(), "refused without a reason");
            for problem in problems {
                assert!(!problem.key.is_empty() && !problem.message.is_empty(), "{problem:?}");
            }
        }
    }
});
