//! `[uplink]`: the central broker the gateway publishes to, checked into [`Uplink`].
//!
//! The broker URL (the command line's `--uplink` winning over the file's `broker`), the
//! topic prefix and MQTT limits, the TLS files and the login. The TLS and password files are
//! read at load, so a missing or damaged one is a config problem with its key rather than a
//! failure at the first connection. [`parse_broker_url`] also reads
//! `[terminal_broker] external`.

use std::path::Path;
use std::time::Duration;

use super::Overrides;
use super::claims::check_topic_safe_id;
use super::file::UplinkConfig;
use super::model::{Hall, Uplink};
use super::problems::{Problems, Report};
use super::secrets::{Secret, read_secret};

impl UplinkConfig {
    /// Validates `[uplink]` (an absent one is [`UplinkConfig::absent`]). The client id is
    /// made from the hall's id, so without a valid `[hall]` there is no uplink either.
    pub(super) fn validate(
        self,
        overrides: &Overrides,
        hall: Option<&Hall>,
        base_dir: &Path,
        problems: &mut Problems,
    ) -> Option<Uplink> {
        let (url, key) = match &overrides.uplink {
            Some(url) => (url.as_str(), "--uplink"),
            None => (self.broker.as_str(), "uplink.broker"),
        };
        let broker = checked_broker(url, key, problems);
        let ok = self.check_limits(problems);
        let (tls, tls_ok) = self.tls(broker.as_ref(), base_dir, problems);
        let (login, login_ok) = self.login(base_dir, problems);
        let (broker, hall, true, true, true) = (broker?, hall?, ok, tls_ok, login_ok) else {
            return None;
        };
        Some(Uplink {
            tls_files_unused: !broker.tls
                && (self.ca_file.is_some() || self.client_cert_file.is_some()),
            host: broker.host,
            port: broker.port,
            tls,
            login,
            client_id: self
                .client_id
                .clone()
                .unwrap_or_else(|| format!("hallgate-{}", hall.id)),
            topic_prefix: self.topic_prefix,
            keep_alive: Duration::from_secs(self.keep_alive_secs),
            max_inflight: self.max_inflight,
            state_interval: Duration::from_millis(self.state_interval_ms),
            max_reconnect_backoff: Duration::from_millis(self.max_reconnect_backoff_ms),
            max_packet_bytes: self.max_packet_bytes,
            max_replay_msgs_per_sec: self.max_replay_msgs_per_sec,
        })
    }

    /// The topic prefix and the MQTT limits; whether all are good.
    fn check_limits(&self, problems: &mut Problems) -> bool {
        let mut ok = true;
        if self.topic_prefix.is_empty()
            || self
                .topic_prefix
                .split('/')
                .any(|level| level.is_empty() || check_topic_safe_id(level).is_err())
        {
            problems.report(
                "uplink.topic_prefix",
                "must be one or more topic levels of letters, digits, '-', '_' or '.', joined by '/'",
            );
            ok = false;
        }
        if !(5..=3600).contains(&self.keep_alive_secs) {
            problems.report("uplink.keep_alive_secs", "must be between 5 and 3600");
            ok = false;
        }
        if !(1..=1000).contains(&self.max_inflight) {
            problems.report("uplink.max_inflight", "must be between 1 and 1000");
            ok = false;
        }
        if !(100..=3_600_000).contains(&self.state_interval_ms) {
            problems.report(
                "uplink.state_interval_ms",
                "must be between 100 and 3600000",
            );
            ok = false;
        }
        if !(100..=3_600_000).contains(&self.max_reconnect_backoff_ms) {
            problems.report(
                "uplink.max_reconnect_backoff_ms",
                "must be between 100 and 3600000",
            );
            ok = false;
        }
        if !(4096..=256 * 1024 * 1024).contains(&self.max_packet_bytes) {
            problems.report(
                "uplink.max_packet_bytes",
                "must be between 4096 and 268435456",
            );
            ok = false;
        }
        if !(1..=100_000).contains(&self.max_replay_msgs_per_sec) {
            problems.report(
                "uplink.max_replay_msgs_per_sec",
                "must be between 1 and 100000",
            );
            ok = false;
        }
        ok
    }

    /// `ca_file` and the client certificate: read and parsed now, so a missing or damaged
    /// file is a config problem with its key, not a failure at the first connection. The
    /// files are checked even when the broker URL is plain (they are used once it is not).
    /// Returns the TLS setup when the broker is `mqtts://`, and whether all was well.
    fn tls(
        &self,
        broker: Option<&BrokerUrl>,
        base_dir: &Path,
        problems: &mut Problems,
    ) -> (Option<crate::uplink::tls::UplinkTls>, bool) {
        let wants_tls = broker.is_some_and(|b| b.tls);
        let client = match (&self.client_cert_file, &self.client_key_file) {
            (Some(cert), Some(key)) => Some((base_dir.join(cert), base_dir.join(key))),
            (None, None) => None,
            (Some(_), None) => {
                problems.report(
                    "uplink.client_key_file",
                    "`client_cert_file` needs `client_key_file` (the certificate's private key)",
                );
                return (None, false);
            }
            (None, Some(_)) => {
                problems.report(
                    "uplink.client_cert_file",
                    "`client_key_file` needs `client_cert_file` (the certificate it belongs to)",
                );
                return (None, false);
            }
        };
        let Some(ca) = &self.ca_file else {
            if wants_tls {
                problems.report(
                    "uplink.ca_file",
                    "mqtts:// needs `ca_file`, a PEM file of the CAs that sign the central \
                     broker's certificate: only those are trusted, since the box has no CA \
                     store to rely on",
                );
                return (None, false);
            }
            if client.is_some() {
                problems.report(
                    "uplink.ca_file",
                    "a client certificate is only used over TLS, which needs `ca_file`",
                );
                return (None, false);
            }
            return (None, true);
        };
        let ca = base_dir.join(ca);
        let client_paths = client.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
        match crate::uplink::tls::UplinkTls::load(&ca, client_paths) {
            Ok(tls) => (wants_tls.then_some(tls), true),
            Err(errors) => {
                for error in errors {
                    problems.report(format!("uplink.{}", error.file().key()), error.to_string());
                }
                (None, false)
            }
        }
    }

    /// `username` and `password_file`, both or neither.
    fn login(&self, base_dir: &Path, problems: &mut Problems) -> (Option<(String, Secret)>, bool) {
        match (&self.username, &self.password_file) {
            (None, None) => (None, true),
            (Some(user), Some(password_file)) => {
                let before = problems.len();
                let secret = read_secret(base_dir, password_file, "uplink.password_file", problems);
                let mut ok = problems.len() == before;
                if user.is_empty() {
                    problems.report("uplink.username", "must not be empty");
                    ok = false;
                }
                match (secret, ok) {
                    (Some(secret), true) => (Some((user.clone(), secret)), true),
                    _ => (None, false),
                }
            }
            (Some(_), None) => {
                problems.report(
                    "uplink.password_file",
                    "`username` needs `password_file`, a file holding the password (never inline)",
                );
                (None, false)
            }
            (None, Some(_)) => {
                problems.report("uplink.username", "`password_file` needs `username`");
                (None, false)
            }
        }
    }
}

/// The broker URL at `key` (`uplink.broker` or `--uplink`), with a host a TLS certificate
/// can name when it is `mqtts://`.
fn checked_broker(url: &str, key: &str, problems: &mut Problems) -> Option<BrokerUrl> {
    match parse_broker_url(url) {
        // rustls checks the certificate against this name; one it cannot hold is a
        // config error, not a failure at every connection.
        Ok(b) if b.tls && rustls::pki_types::ServerName::try_from(b.host.as_str()).is_err() => {
            problems.report(
                key,
                format!(
                    "\"{}\" is not a DNS name or IP address a TLS certificate can be issued for",
                    b.host
                ),
            );
            None
        }
        Ok(b) => Some(b),
        Err(message) => {
            problems.report(key, message);
            None
        }
    }
}

/// A broker address as written in a config: `mqtt://HOST[:PORT]` or `mqtts://HOST[:PORT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// `mqtts://`: MQTT over TLS.
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

/// Parses `mqtt://HOST:PORT` (port 1883 when left out; `tcp://` is the same) and
/// `mqtts://HOST:PORT` (TLS, port 8883 when left out).
pub fn parse_broker_url(url: &str) -> Result<BrokerUrl, String> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
        (true, rest)
    } else if let Some(rest) = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
    {
        (false, rest)
    } else {
        return Err(format!(
            "\"{url}\" must start with mqtts:// (TLS) or mqtt:// (plain TCP)"
        ));
    };
    let default_port = if tls { 8883 } else { 1883 };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || rest.contains('@') {
        return Err(format!(
            "\"{url}\" must be mqtt://HOST:PORT or mqtts://HOST:PORT"
        ));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, tail) = v6
            .split_once(']')
            .ok_or_else(|| format!("\"{url}\" has an unclosed [ in its host"))?;
        let port = match tail.strip_prefix(':') {
            Some(p) => parse_port(p, url)?,
            None if tail.is_empty() => default_port,
            None => {
                return Err(format!(
                    "\"{url}\" must be mqtt://HOST:PORT or mqtts://HOST:PORT"
                ));
            }
        };
        (host.to_string(), port)
    } else {
        match rest.split_once(':') {
            Some((host, p)) => (host.to_string(), parse_port(p, url)?),
            None => (rest.to_string(), default_port),
        }
    };
    if host.is_empty() {
        return Err(format!("\"{url}\" has no host"));
    }
    Ok(BrokerUrl { tls, host, port })
}

fn parse_port(text: &str, url: &str) -> Result<u16, String> {
    text.parse::<u16>()
        .map_err(|_| format!("\"{text}\" in \"{url}\" is not a port number"))
}
