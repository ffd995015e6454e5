//! `[status]`: where the local status page, its JSON API and `/metrics` listen, and the
//! access token that guards them.
//!
//! ```toml
//! [status]
//! listen = "127.0.0.1:8080"          # the default; loopback is reachable from the box only
//! # token_file = "secrets/status.token"   # required when `listen` is not a loopback address
//! # enabled = false                   # no status page at all
//! ```
//!
//! The token is read at load time into a [`Secret`] (never printed or logged), so a missing
//! file is a config error, not a surprise at the first page view.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::problems::{Problems, Report};
use super::secrets::{Secret, read_secret};

/// `[status]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusConfig {
    /// `false` turns the status page, the API and `/metrics` off.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// `IP:PORT` to listen on; only this address is served.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The access token, in a file relative to the config.
    pub token_file: Option<PathBuf>,
}

impl Default for StatusConfig {
    fn default() -> Self {
        StatusConfig {
            enabled: default_enabled(),
            listen: default_listen(),
            token_file: None,
        }
    }
}

fn default_enabled() -> bool {
    true
}

pub fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

/// Shortest token accepted: shorter ones can be guessed by trying.
pub const MIN_TOKEN_CHARS: usize = 16;

/// The validated `[status]`; `None` in [`super::Config::status`] when it is turned off.
#[derive(Debug, Clone)]
pub struct Status {
    pub listen: SocketAddr,
    /// Needed for everything but `/healthz` when set.
    pub token: Option<Secret>,
}

/// Validates `[status]` (absent means the defaults).
pub fn validate_status(
    s: &StatusConfig,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<Status> {
    if !s.enabled {
        return None;
    }
    let listen = match s.listen.parse::<SocketAddr>() {
        Ok(addr) if addr.port() == 0 => {
            problems.report(
                "status.listen",
                format!("\"{}\" has port 0; name the port staff will open", s.listen),
            );
            None
        }
        Ok(addr) => Some(addr),
        Err(_) => {
            problems.report(
                "status.listen",
                format!(
                    "\"{}\" is not IP:PORT (e.g. \"127.0.0.1:8080\"); a name is not accepted, \
                     so the page never listens somewhere a resolver decides",
                    s.listen
                ),
            );
            None
        }
    };
    let token = s.token_file.as_ref().and_then(|file| {
        let token = read_secret(base_dir, file, "status.token_file", problems)?;
        let text = token.expose();
        if text.chars().count() < MIN_TOKEN_CHARS {
            problems.report(
                "status.token_file",
                format!("the token must be at least {MIN_TOKEN_CHARS} characters long"),
            );
            return None;
        }
        // It travels in a header, a URL and a cookie: keep it to characters none of them
        // needs to escape.
        if !text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'))
        {
            problems.report(
                "status.token_file",
                "the token may use only letters, digits, '-', '_', '.' and '~'",
            );
            return None;
        }
        Some(token)
    });
    let listen = listen?;
    if !listen.ip().is_loopback() && s.token_file.is_none() {
        problems.report(
            "status.listen",
            format!(
                "{listen} is not a loopback address: the status page would be open to the \
                 hall's network; set status.token_file"
            ),
        );
        return None;
    }
    if s.token_file.is_some() && token.is_none() {
        return None;
    }
    Some(Status { listen, token })
}
