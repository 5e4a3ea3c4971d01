//! The configuration as a user meets it, on the real binary: `--config` file under the
//! environment under the flags, `config check` and `config print` (secrets masked), a bad
//! file refused naming the key, and `LOG_FORMAT=json` log lines that parse as JSON.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// A file under the system's temp directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "ferrosoup-config-{}-{name}.toml",
            std::process::id()
        ));
        std::fs::write(&path, text).expect("write the test file");
        Self(path)
    }

    fn arg(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The binary with none of the settings' variables of this process (only `envs`).
fn ferrosoup(args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrosoup"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(envs.iter().copied())
        .args(args)
        .output()
        .expect("run the ferrosoup binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The line of `config print` that sets `key` (not a comment).
fn setting<'a>(printed: &'a str, key: &str) -> &'a str {
    printed
        .lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no `{key} = ` line in:\n{printed}"))
}

#[test]
fn flags_beat_environment_beat_file_beat_defaults() {
    let file = TempFile::new(
        "precedence",
        "max_rooms = 11\nmax_peers_per_room = 12\nsession_grace = 13\n",
    );
    let out = ferrosoup(
        &[
            "--session-grace",
            "33",
            "config",
            "print",
            "--config",
            file.arg(),
        ],
        &[("MAX_PEERS_PER_ROOM", "22"), ("SESSION_GRACE", "23")],
    );
    let printed = text(&out.stdout);
    assert!(out.status.success(), "{}{printed}", text(&out.stderr));
    assert_eq!(
        setting(&printed, "max_rooms"),
        "max_rooms = 11   # from file; env MAX_ROOMS"
    );
    assert_eq!(
        setting(&printed, "max_peers_per_room"),
        "max_peers_per_room = 22   # from environment; env MAX_PEERS_PER_ROOM"
    );
    assert_eq!(
        setting(&printed, "session_grace"),
        "session_grace = 33   # from flag; env SESSION_GRACE"
    );
    assert_eq!(
        setting(&printed, "drain_seconds"),
        "drain_seconds = 10   # from default; env DRAIN_SECONDS"
    );
    // The file can also be named by FERROSOUP_CONFIG.
    let out = ferrosoup(&["config", "print"], &[("FERROSOUP_CONFIG", file.arg())]);
    assert!(text(&out.stdout).contains("max_rooms = 11   # from file"));
}

#[test]
fn config_check_accepts_a_valid_file_and_refuses_a_bad_one() {
    let good = TempFile::new(
        "good",
        "port = 3999\nnum_workers = 2\nlog_format = \"json\"\n",
    );
    let out = ferrosoup(&["config", "check", "--config", good.arg()], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("configuration OK (3 settings from"));

    let unknown = TempFile::new("unknown", "port = 3999\nmax_room = 5\n");
    let out = ferrosoup(&["config", "check", "--config", unknown.arg()], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("unknown key `max_room`") && err.contains(unknown.arg()),
        "{err}"
    );
    // The server refuses to start with it too.
    let out = ferrosoup(&["--config", unknown.arg()], &[]);
    assert_eq!(out.status.code(), Some(1));

    // Values each valid alone, invalid together: the server's own validation.
    let ports = TempFile::new("ports", "rtc_min_port = 5000\nrtc_max_port = 4000\n");
    let out = ferrosoup(&["config", "check", "--config", ports.arg()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("RTC_MIN_PORT 5000 > RTC_MAX_PORT 4000"));

    let short_secret = TempFile::new("secret", "auth_secret = \"short\"\n");
    let out = ferrosoup(&["config", "check", "--config", short_secret.arg()], &[]);
    assert_eq!(out.status.code(), Some(1));

    let typo = TempFile::new("typo", "port = \"http\"\n");
    let out = ferrosoup(&["config", "check", "--config", typo.arg()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("port = \"http\""));

    let out = ferrosoup(&["config", "check"], &[("LOG_FORMAT", "xml")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
}

#[test]
fn config_print_masks_every_secret() {
    let secrets = [
        (
            "auth_secret",
            "AUTH_SECRET",
            "auth-secret-value-0123456789abcdef",
        ),
        ("turn_secret", "TURN_SECRET", "turn-secret-value"),
        ("admin_key", "ADMIN_KEY", "admin-key-value"),
    ];
    let file = TempFile::new(
        "secrets",
        &format!(
            "turn_urls = [\"turn:turn.example.com:3478\"]\n{}\n",
            secrets
                .iter()
                .map(|(key, _, value)| format!("{key} = \"{value}\""))
                .collect::<Vec<_>>()
                .join("\n")
        ),
    );
    let out = ferrosoup(&["config", "print", "--config", file.arg()], &[]);
    let printed = text(&out.stdout);
    assert!(out.status.success(), "{}{printed}", text(&out.stderr));
    for (key, env, value) in secrets {
        assert!(!printed.contains(value), "{key} printed:\n{printed}");
        assert!(
            printed.contains(&format!(
                "# {key} = \"********\"   (set, from file; masked; env {env})"
            )),
            "{key} not masked:\n{printed}"
        );
    }
    // Static TURN credentials: the password is masked, the user name is not.
    let out = ferrosoup(
        &["config", "print"],
        &[
            ("TURN_URLS", "turn:turn.example.com:3478"),
            ("TURN_USERNAME", "turn-user"),
            ("TURN_PASSWORD", "turn-password-value"),
        ],
    );
    let printed = text(&out.stdout);
    assert!(out.status.success(), "{}{printed}", text(&out.stderr));
    assert!(!printed.contains("turn-password-value"), "{printed}");
    assert!(printed.contains("# turn_password = \"********\"   (set, from environment"));
    assert!(printed.contains("turn_username = \"turn-user\""));
}

#[test]
fn the_example_file_in_deploy_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/ferrosoup.toml");
    let out = ferrosoup(&["config", "check", "--config", example], &[]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn json_log_lines_are_json_objects() {
    let port = common::free_tcp_port();
    let rtc_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port()
        .to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrosoup"))
        .env_clear()
        .args(["--port", &port.to_string(), "--listen-ip", "127.0.0.1"])
        .args(["--rtc-min-port", &rtc_port, "--rtc-max-port", &rtc_port])
        .args(["--num-workers", "1", "--log-format", "json"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ferrosoup");
    let stderr = child.stderr.take().expect("piped stderr");
    let mut lines = Vec::new();
    // It logs where it listens, then warns that it runs open (no AUTH_SECRET, no ADMIN_KEY).
    for line in BufReader::new(stderr).lines() {
        let line = line.expect("read a log line");
        let done = line.contains("ADMIN_KEY");
        lines.push(line);
        if done || lines.len() > 20 {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(lines.len() >= 3, "{lines:#?}");
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["timestamp"].is_string(), "{line}");
        assert!(v["level"].is_string(), "{line}");
        assert!(v["message"].is_string(), "{line}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("ferrosoup listening on http://127.0.0.1")),
        "{lines:#?}"
    );
}
