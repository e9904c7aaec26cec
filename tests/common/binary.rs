//! The `gpushare` binary: a command with a predictable environment, run to completion within a
//! deadline, and its log with the colours taken out.

use std::io::{Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::DEADLINE;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_gpushare")
}

/// A `gpushare` command with a predictable environment (no colours, info logs).
pub fn gpushare() -> Command {
    let mut command = Command::new(bin());
    command
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .env_remove("KUBECONFIG");
    command
}

/// Runs a child to completion, failing the test (and killing the child) if it does not finish
/// within the deadline. Output is drained in threads so a chatty child never blocks on a pipe.
pub fn run_with_deadline(command: &mut Command, stdin: Option<&[u8]>) -> Output {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command.spawn().expect("gpushare starts");
    let mut guard = KillOnDrop(Some(child));
    let child = guard.0.as_mut().expect("child present");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let input = input.to_vec();
        std::thread::spawn(move || {
            // A child that exits early closes the pipe; that is its business, not a test failure.
            let _ = pipe.write_all(&input);
        });
    }
    let stdout = drain(child.stdout.take().expect("stdout is piped"));
    let stderr = drain(child.stderr.take().expect("stderr is piped"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for gpushare") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            panic!("gpushare did not finish within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    guard.0 = None;
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buffer = Vec::new();
        let _ = pipe.read_to_end(&mut buffer);
        buffer
    })
}

pub(super) struct KillOnDrop(pub(super) Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Removes ANSI escape sequences (colours), in case the log ignores `NO_COLOR`.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}
