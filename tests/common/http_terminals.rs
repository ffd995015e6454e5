//! Terminals that speak HTTP, for the black-box tests: their config sections (with password
//! files as `validate` wants them: 12+ characters, mode 0600), and a small async HTTP/1.1
//! client over a plain tokio socket that can choose its source address (`127.0.0.2` is "another
//! device on the LAN" to a gateway listening on `127.0.0.1`), send any bytes, or stall midway.
//!
//! Written here rather than borrowed from the gateway's or the simulator's HTTP stack, so the
//! tests talk to the listener as an independent (and sometimes hostile) peer would.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::http::Answer;

/// `[terminal_http]`'s bounds, small where a test needs to reach them.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub max_body_bytes: usize,
    pub max_picture_bytes: usize,
    pub max_connections: usize,
    pub request_timeout_ms: u64,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_body_bytes: 1024 * 1024,
            max_picture_bytes: 512 * 1024,
            max_connections: 64,
            request_timeout_ms: 10_000,
        }
    }
}

/// `[terminal_http]` on `127.0.0.1:{port}`.
pub fn terminal_http_section(port: u16, limits: &HttpLimits) -> String {
    format!(
        "\n[terminal_http]\nlisten = \"127.0.0.1:{port}\"\nmax_body_bytes = {}\n\
         max_picture_bytes = {}\nmax_connections = {}\nrequest_timeout_ms = {}\n",
        limits.max_body_bytes,
        limits.max_picture_bytes,
        limits.max_connections,
        limits.request_timeout_ms
    )
}

/// One `[[terminals]]` entry of a terminal that is not on MQTT.
#[derive(Debug, Clone)]
pub struct HttpTerminal {
    pub id: String,
    pub profile: String,
    pub room: String,
    /// `http_push`, `hikvision_pull`, `dahua_stream`, …
    pub transport: String,
    /// Push: the only source IP allowed; pull: the device's `HOST:PORT`.
    pub address: Option<String>,
    pub username: Option<String>,
    /// Written to a password file (mode 0600).
    pub password: Option<String>,
    pub poll_interval_ms: Option<u64>,
}

impl HttpTerminal {
    pub fn push(id: &str, profile: &str, room: &str) -> Self {
        HttpTerminal {
            id: id.into(),
            profile: profile.into(),
            room: room.into(),
            transport: "http_push".into(),
            address: None,
            username: None,
            password: None,
            poll_interval_ms: None,
        }
    }

    pub fn address(mut self, address: &str) -> Self {
        self.address = Some(address.into());
        self
    }

    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.into());
        self
    }

    pub fn username(mut self, username: &str) -> Self {
        self.username = Some(username.into());
        self
    }

    /// The `Authorization: Basic` value the gateway accepts for it (user `admin` when none is
    /// configured: the gateway then checks only the password).
    pub fn basic(&self) -> Option<String> {
        let password = self.password.as_deref()?;
        let user = self.username.as_deref().unwrap_or("admin");
        Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        ))
    }
}

/// Writes `secret` to `dir/name` with mode 0600.
pub fn password_file(dir: &Path, name: &str, secret: &str) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    assert!(
        secret.len() >= 12,
        "validate refuses passwords under 12 characters"
    );
    let path = dir.join(name);
    std::fs::write(&path, format!("{secret}\n"))
        .with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(path)
}

/// The `[[terminals]]` sections, password files written into `dir`.
pub fn terminal_sections(dir: &Path, terminals: &[HttpTerminal]) -> anyhow::Result<String> {
    let mut text = String::new();
    for (i, t) in terminals.iter().enumerate() {
        text.push_str(&format!(
            "\n[[terminals]]\nid = \"{}\"\nprofile = \"{}\"\nroom = \"{}\"\ntransport = \"{}\"\n",
            t.id, t.profile, t.room, t.transport
        ));
        if let Some(address) = &t.address {
            text.push_str(&format!("address = \"{address}\"\n"));
        }
        if let Some(user) = &t.username {
            text.push_str(&format!("username = \"{user}\"\n"));
        }
        if let Some(password) = &t.password {
            let file = password_file(dir, &format!("terminal-{i}.pass"), password)?;
            text.push_str(&format!("password_file = \"{}\"\n", file.display()));
        }
        if let Some(ms) = t.poll_interval_ms {
            text.push_str(&format!("poll_interval_ms = {ms}\n"));
        }
    }
    Ok(text)
}

/// One request: raw head and body.
#[derive(Debug, Clone)]
pub struct RawRequest {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawRequest {
    pub fn post(target: &str, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        RawRequest {
            method: "POST".into(),
            target: target.into(),
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.into(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The bytes on the wire (`Connection: close`, `Content-Length` set).
    pub fn bytes(&self, host: SocketAddr) -> Vec<u8> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.method,
            self.target,
            self.body.len()
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// A connection to `to` from `from` (any port).
pub async fn connect_from(from: IpAddr, to: SocketAddr) -> anyhow::Result<TcpStream> {
    let socket = match from {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket
        .bind(SocketAddr::new(from, 0))
        .with_context(|| format!("cannot bind {from}"))?;
    tokio::time::timeout(Duration::from_secs(5), socket.connect(to))
        .await
        .with_context(|| format!("connecting to {to} took over 5 s"))?
        .with_context(|| format!("cannot connect to {to} from {from}"))
}

/// Sends `request` from `from` on a connection of its own and reads the whole answer (10 s at
/// most).
pub async fn send_from(
    from: IpAddr,
    to: SocketAddr,
    request: &RawRequest,
) -> anyhow::Result<Answer> {
    let mut stream = connect_from(from, to).await?;
    exchange(&mut stream, to, &request.bytes(to)).await
}

/// Sends `request` from 127.0.0.1.
pub async fn send(to: SocketAddr, request: &RawRequest) -> anyhow::Result<Answer> {
    send_from(IpAddr::from([127, 0, 0, 1]), to, request).await
}

/// Writes `raw` and reads the answer to the end of the connection.
pub async fn exchange(
    stream: &mut TcpStream,
    to: SocketAddr,
    raw: &[u8],
) -> anyhow::Result<Answer> {
    let io = async {
        // The server may answer (413) and close before taking the whole body: what matters
        // then is the answer, not the rest of the write.
        let written = stream.write_all(raw).await;
        let mut answer = Vec::new();
        let read = stream.read_to_end(&mut answer).await;
        match (written, read) {
            (_, Ok(_)) if !answer.is_empty() => Ok(answer),
            (Err(error), _) => Err(anyhow::Error::from(error).context("writing the request")),
            (_, Err(error)) => Err(anyhow::Error::from(error).context("reading the answer")),
            (Ok(()), Ok(_)) => bail!("the connection closed without an answer"),
        }
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), io)
        .await
        .with_context(|| format!("no answer from {to} within 10 s"))??;
    parse_answer(&raw)
}

/// Status line, headers and body of an HTTP/1.1 answer (the body as lossy text).
pub fn parse_answer(raw: &[u8]) -> anyhow::Result<Answer> {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!(
            "the answer has no end of headers: {:?}",
            String::from_utf8_lossy(raw)
        );
    };
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = String::from_utf8_lossy(&raw[split + 4..]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// A `multipart/form-data` body of `(name, content type, bytes)` parts with `boundary`.
pub fn multipart(boundary: &str, parts: &[(&str, &str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, content_type, body) in parts {
        let filename = if content_type.starts_with("image/") {
            format!("; filename=\"{name}.jpg\"")
        } else {
            String::new()
        };
        out.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"{filename}\r\n\
                 Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(body);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}
