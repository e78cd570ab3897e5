//! The Strait pair of the replication demo and bench (`tests/support/s2s.rs`): configs derived
//! from the shipped `config/s2s-{tcp,mux}-{a,b}.toml` move only ports and upstreams, and
//! `strait check` accepts them. No Temporal needed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use strait_test_support::s2s;
use strait_test_support::s2s::{derive_pair, Mode};
use strait_test_support::temporal;

#[test]
fn derived_configs_pass_strait_check() {
    let dir = temporal::TempDir::new("s2s-config");
    for mode in [Mode::Tcp, Mode::Mux] {
        let pair = derive_pair(mode, "127.0.0.1:21001", "127.0.0.1:21002", false).unwrap();
        for (side, config) in [("a", &pair.a), ("b", &pair.b)] {
            let path = dir.path().join(format!("{}-{side}.toml", mode.name()));
            std::fs::write(&path, &config.toml).unwrap();
            // Relative certificate paths resolve from the repository root, as for the demo.
            let out = Command::new(s2s::strait_bin())
                .arg("check")
                .arg("--config")
                .arg(&path)
                .current_dir(temporal::repo_root())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{} {side}: strait check failed:\n{}{}\n--- config\n{}",
                mode.name(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                config.toml
            );
        }
        // Everything but addresses is as shipped.
        let shipped = std::fs::read_to_string(mode.shipped('a')).unwrap();
        let strip = |t: &str| -> String { t.chars().filter(|c| !c.is_ascii_digit()).collect() };
        assert_eq!(strip(&shipped), strip(&pair.a.toml));
    }
}
