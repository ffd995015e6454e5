//! `[terminal_http]`: the one HTTP listener that push terminals deliver to.
//!
//! ```toml
//! [terminal_http]
//! listen = "192.168.50.2:8090"   # the hall LAN's interface; terminals POST to /terminals/{id}
//! max_body_bytes = 1048576       # a request body: a passage with its picture
//! max_picture_bytes = 524288     # a picture over this is dropped; its passage is kept
//! max_connections = 64           # open connections in all; more wait in the kernel's backlog
//! request_timeout_ms = 10000     # a client that has not sent its request by then is cut off
//! ```
//!
//! Which terminal may push is said per terminal (`transport = "http_push"`, its credential and
//! optional source `address`, in [`super::terminals`]). The rules that turn a record into a
//! passage (fever threshold, plausible range, profile directories) are the hall's terminal
//! rules: set in `[terminal_broker]` when the hall has one, else here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::problems::{Problems, Report};

/// `[terminal_http]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminalHttpConfig {
    pub listen: String,
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    #[serde(default = "default_max_picture_bytes")]
    pub max_picture_bytes: usize,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// The hall's terminal rules, when there is no `[terminal_broker]` to hold them.
    pub fever_threshold_c: Option<f64>,
    pub plausible_min_c: Option<f64>,
    pub plausible_max_c: Option<f64>,
    pub profile_dirs: Option<Vec<PathBuf>>,
}

fn default_max_body_bytes() -> usize {
    1024 * 1024
}
fn default_max_picture_bytes() -> usize {
    512 * 1024
}
fn default_max_connections() -> usize {
    64
}
fn default_request_timeout_ms() -> u64 {
    10_000
}

/// The validated `[terminal_http]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TerminalHttp {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub max_picture_bytes: usize,
    pub max_connections: usize,
    pub request_timeout: Duration,
}

/// Validates `[terminal_http]`'s own keys (the terminal rules are checked with the broker's).
pub fn validate(c: &TerminalHttpConfig, problems: &mut Problems) -> Option<TerminalHttp> {
    let before = problems.len();
    let listen = match c.listen.parse::<SocketAddr>() {
        Ok(listen) => Some(listen),
        Err(_) => {
            problems.report(
                "terminal_http.listen",
                format!(
                    "\"{}\" 不是 IP 地址加端口 (is not an IP address and port such as 192.168.50.2:8090)",
                    c.listen
                ),
            );
            None
        }
    };
    if !(1024..=64 * 1024 * 1024).contains(&c.max_body_bytes) {
        problems.report(
            "terminal_http.max_body_bytes",
            format!(
                "必须在 1024 到 67108864 之间 (must be between 1024 and 67108864), not {}",
                c.max_body_bytes
            ),
        );
    }
    if c.max_picture_bytes > c.max_body_bytes {
        problems.report(
            "terminal_http.max_picture_bytes",
            format!(
                "不能大于 max_body_bytes (cannot exceed max_body_bytes, {})",
                c.max_body_bytes
            ),
        );
    }
    if !(1..=4096).contains(&c.max_connections) {
        problems.report(
            "terminal_http.max_connections",
            format!(
                "必须在 1 到 4096 之间 (must be between 1 and 4096), not {}",
                c.max_connections
            ),
        );
    }
    if !(500..=120_000).contains(&c.request_timeout_ms) {
        problems.report(
            "terminal_http.request_timeout_ms",
            format!(
                "必须在 500 到 120000 毫秒之间 (must be between 500 and 120000 ms), not {}",
                c.request_timeout_ms
            ),
        );
    }
    if problems.len() > before {
        return None;
    }
    Some(TerminalHttp {
        listen: listen?,
        max_body_bytes: c.max_body_bytes,
        max_picture_bytes: c.max_picture_bytes,
        max_connections: c.max_connections,
        request_timeout: Duration::from_millis(c.request_timeout_ms),
    })
}
