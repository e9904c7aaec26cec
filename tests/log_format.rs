//! What `gpushare serve` writes to stderr when it is not a terminal (a file, a pipe, a container
//! runtime): plain text without ANSI escapes, or JSON lines with `--log-format json`.

mod common;

use std::fs::File;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{client_trusting, gpushare, Certs, Review, DEADLINE};
use serde_json::Value;

const ESC: u8 = 0x1b;

/// A `serve --standalone` whose stderr is a file, stopped with SIGTERM.
struct Serving {
    child: Child,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_lossy(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

/// Polls the log file until `listening on https://ADDR` appears.
fn wait_for_address(log: &Path, serving: &mut Serving) -> std::net::SocketAddr {
    let started = Instant::now();
    loop {
        let text = read_lossy(log);
        if let Some(at) = text.find("listening on https://") {
            let rest = &text[at + "listening on https://".len()..];
            let end = rest
                .find(|c: char| c.is_whitespace() || c == '"')
                .unwrap_or(rest.len());
            if let Ok(addr) = rest[..end].parse() {
                return addr;
            }
        }
        if let Some(status) = serving.child.try_wait().expect("waiting for gpushare") {
            panic!("gpushare serve exited ({status}) before listening; log:\n{text}");
        }
        assert!(
            started.elapsed() < DEADLINE,
            "gpushare serve did not log its address within {DEADLINE:?}; log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `serve` with stderr redirected to a file, makes it log an admission, a malformed body and
/// its shutdown, and returns everything it wrote.
async fn log_of_a_short_run(format_args: &[&str]) -> Vec<u8> {
    let certs = Certs::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("stderr.log");
    let mut command = gpushare();
    // As a user's shell would: no NO_COLOR, so only "stderr is not a terminal" may turn colour off.
    command
        .env_remove("NO_COLOR")
        .env_remove("GPUSHARE_LOG_FORMAT")
        .args(["serve", "--standalone", "--gpus", "2"])
        .args(["--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0"])
        .args(["--drain-delay", "0.1"])
        .arg("--tls-cert")
        .arg(certs.cert())
        .arg("--tls-key")
        .arg(certs.key())
        .args(format_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log).expect("log file"));
    let mut serving = Serving {
        child: command.spawn().expect("gpushare serve starts"),
    };
    let addr = wait_for_address(&log, &mut serving);

    let client = client_trusting(&certs.ca_pem())
        .resolve("localhost", addr)
        .build()
        .expect("client builds");
    let url = format!("https://localhost:{}/mutate", addr.port());
    // One admission, and one denial (two GPUs for one module), whose line says what to change.
    for gpus in ["0", "0,1"] {
        let review = Review::create(common::web(&[(common::GPU, gpus)])).to_json();
        let answer = client
            .post(&url)
            .json(&review)
            .send()
            .await
            .expect("POST /mutate");
        assert_eq!(answer.status(), 200);
    }
    let malformed = client
        .post(&url)
        .body("{not json")
        .send()
        .await
        .expect("POST /mutate");
    assert_eq!(malformed.status(), 400);

    let pid = serving.child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success(), "kill -TERM failed");
    let started = Instant::now();
    loop {
        if let Some(status) = serving.child.try_wait().expect("waiting for gpushare") {
            assert!(status.success(), "gpushare serve exited with {status}");
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "gpushare serve did not stop on SIGTERM within {DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::read(&log).expect("the log file is readable")
}

fn assert_no_escapes(log: &[u8]) {
    let text = String::from_utf8_lossy(log);
    assert!(
        !log.contains(&ESC),
        "the log has ANSI escapes although stderr is a file:\n{}",
        text.escape_debug()
    );
}

#[tokio::test]
async fn text_logs_to_a_file_have_no_ansi_escapes() {
    let log = log_of_a_short_run(&[]).await;
    assert_no_escapes(&log);
    let text = String::from_utf8(log).expect("the log is UTF-8");
    for expected in [
        "listening on https://",
        "decision=\"allowed\"",
        "decision=\"denied\"",
        "rejected a malformed admission request",
        "stopped",
    ] {
        assert!(
            text.contains(expected),
            "the log must contain {expected:?}:\n{text}"
        );
    }
}

#[tokio::test]
async fn json_logs_are_one_json_object_a_line() {
    let log = log_of_a_short_run(&["--log-format", "json"]).await;
    assert_no_escapes(&log);
    let text = String::from_utf8(log).expect("the log is UTF-8");
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"))
        })
        .collect();
    assert!(lines.len() >= 3, "expected several log lines:\n{text}");
    for line in &lines {
        for field in ["timestamp", "level", "message"] {
            assert!(
                line[field].is_string(),
                "every JSON log line has a string {field:?}: {line}"
            );
        }
    }
    let messages: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("listening on https://")),
        "the JSON log must say where it listens: {messages:?}"
    );
    let malformed = lines
        .iter()
        .find(|l| l["message"] == "rejected a malformed admission request")
        .unwrap_or_else(|| panic!("the malformed body must be logged: {messages:?}"));
    assert_eq!(malformed["level"], "WARN");
    let denial = lines
        .iter()
        .find(|l| l["message"] == "admission" && l["decision"] == "denied")
        .unwrap_or_else(|| panic!("the denied admission must be logged: {text}"));
    assert!(
        denial["denial"].as_str().is_some_and(|d| !d.is_empty()),
        "a denial's log line says what to change: {denial}"
    );
    assert!(
        malformed["error"].is_string(),
        "the event's fields sit next to the message: {malformed}"
    );
}

#[test]
fn the_log_format_can_come_from_the_environment() {
    let dir = tempfile::tempdir().expect("temp dir");
    // An invalid value is a usage error naming the variable's accepted values.
    let output = common::run_with_deadline(
        gpushare()
            .env("GPUSHARE_LOG_FORMAT", "xml")
            .args(["serve", "--standalone", "--tls-cert"])
            .arg(dir.path().join("missing.crt")),
        None,
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("text") && stderr.contains("json"),
        "{stderr}"
    );
}
