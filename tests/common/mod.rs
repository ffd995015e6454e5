//! The harness of the black-box tests: real processes on loopback, watched from the outside.
//!
//! A test builds a hall ([`hall::HallPlan`]), starts a real mosquitto ([`broker::Mosquitto`]),
//! subscribes to the hall's topics ([`watcher::Watcher`]), starts `hallgate simulate` and
//! `hallgate run` as child processes ([`process`]) and compares what reaches the broker with the
//! simulator's ground truth ([`truth`]); RS-485 buses run over socat pty pairs ([`serial`]);
//! [`http`] is a plain client for the status page; [`contract`] records everything a broker
//! carries and validates it against the uplink's JSON Schemas; [`backlog`] seeds an outbox.
//! [`rig::Rig`] strings these together and, when a test fails or hangs, prints expected against
//! got and the last lines of every process log.
//!
//! Every test crate compiles this module on its own and uses only part of it, hence the
//! `dead_code` allowance.

#![allow(dead_code)]

pub mod backlog;
pub mod bins;
pub mod broker;
pub mod contract;
pub mod dead_peers;
pub mod disk;
pub mod hall;
pub mod http;
pub mod http_terminals;
pub mod pki;
pub mod process;
pub mod pymodbus;
pub mod rig;
pub mod serial;
pub mod sockets;
pub mod terminal_figures;
pub mod truth;
pub mod watcher;

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The binary under test, built by cargo for the integration tests.
pub const HALLGATE: &str = env!("CARGO_BIN_EXE_hallgate");

/// Writes a password or token file as `validate` wants it: readable by its owner only
/// (`chmod 600`).
pub fn write_secret(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// Lines of each process log printed when a test fails.
pub const LOG_TAIL_LINES: usize = 40;

/// Ports already handed out in this test binary; the OS may offer a just-released port again,
/// and two parts of one test sharing a port would talk to the wrong peer without an error.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A loopback TCP port that was free a moment ago and has not been handed out before in this
/// test binary.
pub fn free_port() -> u16 {
    loop {
        let listener =
            TcpListener::bind(("127.0.0.1", 0)).expect("loopback can bind an ephemeral port");
        let port = listener
            .local_addr()
            .expect("a bound listener has an address")
            .port();
        drop(listener);
        let mut handed_out = HANDED_OUT
            .lock()
            .expect("the port registry is never poisoned: nothing panics while holding it");
        if handed_out.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

/// Runs a short command to completion, its output captured to files (no pipe can fill up),
/// killing it if it outlives `limit`.
pub fn run_to_completion(
    mut command: Command,
    dir: &Path,
    name: &str,
    limit: Duration,
) -> anyhow::Result<Finished> {
    use anyhow::Context;
    let stdout_path = dir.join(format!("{name}.stdout"));
    let stderr_path = dir.join(format!("{name}.stderr"));
    let stdout = std::fs::File::create(&stdout_path).context("cannot create stdout file")?;
    let stderr = std::fs::File::create(&stderr_path).context("cannot create stderr file")?;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .env("NO_COLOR", "1")
        .spawn()
        .with_context(|| format!("cannot start {command:?}"))?;
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().context("cannot wait for child")? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("{command:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Finished {
        status,
        stdout: std::fs::read_to_string(&stdout_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(),
    })
}

/// What a finished command left behind.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Removes terminal colour sequences, so logs read cleanly and can be searched.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Seconds since the Unix epoch, as the wall clock says now.
pub fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
}

/// How long until the wall clock next shows a whole minute.
pub fn until_next_minute() -> Duration {
    let now = unix_now();
    Duration::from_secs(60) - Duration::from_nanos((now.as_nanos() % 60_000_000_000) as u64)
}

/// The next whole minute of the wall clock, as time since the Unix epoch.
pub fn next_minute_unix() -> Duration {
    Duration::from_secs((unix_now().as_secs() / 60 + 1) * 60)
}

/// The `Instant` at which the wall clock will show `unix` (seconds since the epoch).
pub fn instant_at_unix(unix: Duration) -> Instant {
    let now_unix = unix_now();
    let now = Instant::now();
    if unix >= now_unix {
        now + (unix - now_unix)
    } else {
        now.checked_sub(now_unix - unix).unwrap_or(now)
    }
}

/// Sleeps until `when` (no-op if it has passed).
pub async fn sleep_until(when: Instant) {
    tokio::time::sleep_until(tokio::time::Instant::from_std(when)).await;
}
