//! The `strait` binary: `check` reports every problem with its key and binds nothing, `run` refuses a
//! bad configuration before binding, `--version`/`--help` work, and SIGTERM drains and exits 0.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn strait() -> Command {
    Command::new(env!("CARGO_BIN_EXE_strait"))
}

fn temp_config(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strait-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("strait.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn version_and_help() {
    let out = strait().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = strait().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("run") && help.contains("check"), "{help}");
}

#[test]
fn every_shipped_config_is_valid() {
    // Run from the repository root: certificate paths in the examples are relative to it.
    let root = env!("CARGO_MANIFEST_DIR");
    let mut checked = 0;
    for entry in std::fs::read_dir(format!("{root}/config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = strait()
                .current_dir(root)
                .args(["check", "--config"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 6, "only {checked} configs found");
}

#[test]
fn check_accepts_the_shipped_config() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/relay.toml");
    let out = strait().args(["check", "--config", path]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("127.0.0.1:7234") && text.contains("127.0.0.1:7233"),
        "{text}"
    );
}

#[test]
fn check_and_run_report_every_problem_and_bind_nothing() {
    let port = free_port();
    let path = temp_config(
        "bad",
        &format!(
            r#"
            [admin]
            listen = "127.0.0.1:{port}"
            [[upstream]]
            name = "temporal"
            address = "127.0.0.1"
            [[listener]]
            name = "clients"
            listen = "127.0.0.1:{port}"
            upstream = "nowhere"
            tls = {{ cert = "/nonexistent.pem", key = "/nonexistent-key.pem" }}
            "#
        ),
    );
    for command in ["check", "run"] {
        let out = strait()
            .args([command, "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{command}");
        let err = String::from_utf8_lossy(&out.stderr);
        for key in [
            "upstream[0].address",
            "listener[0].upstream",
            "listener[0].listen",
            "listener[0].tls.cert",
        ] {
            assert!(err.contains(key), "{command}: {key} missing from {err}");
        }
    }
    // Nothing was bound: the port is still free.
    TcpListener::bind(("127.0.0.1", port)).unwrap();
}

#[test]
fn check_and_run_refuse_an_upstream_url_naming_the_key() {
    // `check` once accepted what the dialer refused: every address is validated fully.
    for address in ["http://127.0.0.1:7233", "::1:7233", "host/x:7233"] {
        let path = temp_config(
            "url",
            &format!(
                "[admin]\nlisten = \"127.0.0.1:0\"\n[[upstream]]\nname = \"t\"\naddress = \"{address}\"\n\
                 [[listener]]\nname = \"c\"\nlisten = \"127.0.0.1:0\"\nupstream = \"t\"\n"
            ),
        );
        for command in ["check", "run"] {
            let out = strait()
                .args([command, "--config"])
                .arg(&path)
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(2), "{command} {address}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("upstream[0].address") && err.contains(address),
                "{command} {address}: {err}"
            );
        }
    }
}

#[test]
fn output_to_a_pipe_closed_early_ends_quietly() {
    // `strait check ... | head -1`: the reader goes away; println! would panic on the broken pipe.
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/config/relay.toml");
    for args in [
        &["check", "--config", config][..],
        &["descriptors", "show", "--fields"][..],
    ] {
        let mut child = strait()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Closing the only read end before the child writes: its every write fails with EPIPE.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?} {err}", out.status);
        assert!(err.is_empty(), "{args:?}: {err}");
    }
}

#[test]
fn unknown_key_is_named_with_its_path() {
    let path = temp_config("unknown", "[admin]\nlisten = \"127.0.0.1:0\"\nlisen = 1\n");
    let out = strait()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("admin.lisen") && err.contains("unknown field"),
        "{err}"
    );
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    Some(text)
}

#[test]
fn sigterm_drains_and_exits_cleanly() {
    let (admin, listen, upstream) = (free_port(), free_port(), free_port());
    let path = temp_config(
        "sigterm",
        &format!(
            r#"
            [log]
            format = "json"
            [admin]
            listen = "127.0.0.1:{admin}"
            [[upstream]]
            name = "up"
            address = "127.0.0.1:{upstream}"
            [[listener]]
            name = "clients"
            listen = "127.0.0.1:{listen}"
            upstream = "up"
            "#
        ),
    );
    let mut child = strait()
        .args(["run", "--config"])
        .arg(&path)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    // Live, and ready although nothing listens on the upstream port: the upstream does not gate
    // readiness, it shows as a warning.
    loop {
        if let Some(text) = http_get(admin, "/livez") {
            assert!(text.starts_with("HTTP/1.1 200"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "admin never came up");
        std::thread::sleep(Duration::from_millis(20));
    }
    let ready = http_get(admin, "/readyz").unwrap();
    assert!(
        ready.starts_with("HTTP/1.1 200") && ready.contains("\nwarn upstream up: not connected"),
        "{ready}"
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "strait did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(exit.code(), Some(0));
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    // JSON logs, one object per line, including the drain.
    assert!(logs.lines().all(|line| line.starts_with('{')), "{logs}");
    assert!(logs.contains("SIGTERM received"), "{logs}");
}

fn cert(name: &str) -> String {
    format!("{}/tests/fixtures/certs/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn check_warns_about_certificates_out_of_their_dates() {
    let tls = |name: &str| {
        format!(
            "{{ cert = \"{}\", key = \"{}\" }}",
            cert(&format!("{name}.pem")),
            cert(&format!("{name}-key.pem"))
        )
    };
    let path = temp_config(
        "dates",
        &format!(
            r#"
            [admin]
            listen = "127.0.0.1:0"
            [[upstream]]
            name = "up"
            address = "127.0.0.1:7233"
            [[listener]]
            name = "expired"
            listen = "127.0.0.1:0"
            upstream = "up"
            tls = {}
            [[listener]]
            name = "future"
            listen = "127.0.0.1:0"
            upstream = "up"
            tls = {}
            [[listener]]
            name = "good"
            listen = "127.0.0.1:0"
            upstream = "up"
            tls = {}
            "#,
            tls("expired"),
            tls("not-yet-valid"),
            tls("server")
        ),
    );
    let out = strait()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    // A valid configuration still: the warnings go to stderr, the dates to the listing.
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("warning:")).collect();
    assert_eq!(warnings.len(), 2, "{err}");
    assert!(
        warnings[0].contains("listener[0].tls.cert")
            && warnings[0].contains("expired.pem")
            && warnings[0].contains("expired 2001-01-01 00:00:00 UTC (notAfter)"),
        "{err}"
    );
    assert!(
        warnings[1].contains("listener[1].tls.cert")
            && warnings[1].contains("not valid before 2090-01-01 00:00:00 UTC")
            && warnings[1].contains("2100-01-01 00:00:00 UTC (notAfter)"),
        "{err}"
    );
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("certificate valid until 2001-01-01 00:00:00 UTC")
            && listing.contains("certificate valid until 2100-01-01 00:00:00 UTC"),
        "{listing}"
    );
}

#[test]
fn pretty_logs_to_a_pipe_have_no_colour_codes_and_startup_warns_of_an_expired_certificate() {
    // The listener's certificate expired: startup warns (and still serves).
    let (admin, listen, upstream) = (free_port(), free_port(), free_port());
    let path = temp_config(
        "plain",
        &format!(
            r#"
            [admin]
            listen = "127.0.0.1:{admin}"
            [[upstream]]
            name = "up"
            address = "127.0.0.1:{upstream}"
            [[listener]]
            name = "clients"
            listen = "127.0.0.1:{listen}"
            upstream = "up"
            tls = {{ cert = "{}", key = "{}" }}
            "#,
            cert("expired.pem"),
            cert("expired-key.pem")
        ),
    );
    let mut child = strait()
        .args(["run", "--config"])
        .arg(&path)
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(admin, "/livez").is_none() {
        assert!(Instant::now() < deadline, "admin never came up");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "strait did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut logs = Vec::new();
    child.stderr.take().unwrap().read_to_end(&mut logs).unwrap();
    let text = String::from_utf8_lossy(&logs);
    // Levels and an upstream WARN (nothing listens there) were written, in plain text.
    assert!(
        text.contains(" INFO ") && text.contains("SIGTERM received"),
        "{text}"
    );
    assert!(
        !logs.contains(&0x1b),
        "ESC in logs written to a pipe: {text:?}"
    );
}
