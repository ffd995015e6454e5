//! `hallgate status`: asks the running gateway for `/api/v1/state` over the address and
//! token in the config's `[status]`, for [`super::text::render`] to print.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::view::StateView;
use crate::config::status::Status;

/// The whole exchange must finish within this.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest state document read.
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the status page is turned off in this config ([status] enabled = false)")]
    Disabled,
    #[error("nothing answers on {addr}: is the gateway running? ({error})")]
    Unreachable {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("the gateway on {addr} did not answer within {} seconds", TIMEOUT.as_secs())]
    Timeout { addr: SocketAddr },
    #[error("the gateway on {addr} refused the access token (HTTP 401); check status.token_file")]
    Refused { addr: SocketAddr },
    #[error("the gateway on {addr} answered HTTP {status}: {body}")]
    Http {
        addr: SocketAddr,
        status: StatusCode,
        body: String,
    },
    #[error("talking to the gateway on {addr} failed: {error}")]
    Protocol { addr: SocketAddr, error: String },
    #[error("the gateway on {addr} sent a state this hallgate cannot read: {error}")]
    Decode {
        addr: SocketAddr,
        error: serde_json::Error,
    },
}

/// Where to reach a server listening on `listen`: an unspecified address (`0.0.0.0`, `::`)
/// is reached on loopback.
pub fn target(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// Fetches the running gateway's state.
pub async fn fetch(status: Option<&Status>) -> Result<StateView, ClientError> {
    let status = status.ok_or(ClientError::Disabled)?;
    let addr = target(status.listen);
    match tokio::time::timeout(TIMEOUT, exchange(addr, status)).await {
        Ok(result) => result,
        Err(_) => Err(ClientError::Timeout { addr }),
    }
}

async fn exchange(addr: SocketAddr, status: &Status) -> Result<StateView, ClientError> {
    let protocol = |error: hyper::Error| ClientError::Protocol {
        addr,
        error: error.to_string(),
    };
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|error| ClientError::Unreachable { addr, error })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(protocol)?;
    let connection = tokio::spawn(connection);
    let mut request = Request::get("/api/v1/state")
        .header(header::HOST, addr.to_string())
        .header(header::ACCEPT, "application/json");
    if let Some(token) = &status.token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {}", token.expose()));
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|error| ClientError::Protocol {
            addr,
            error: error.to_string(),
        })?;
    let response = sender.send_request(request).await.map_err(protocol)?;
    let code = response.status();
    let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|error| ClientError::Protocol {
            addr,
            error: error.to_string(),
        })?
        .to_bytes();
    connection.abort();
    match code {
        StatusCode::OK => {
            serde_json::from_slice(&body).map_err(|error| ClientError::Decode { addr, error })
        }
        StatusCode::UNAUTHORIZED => Err(ClientError::Refused { addr }),
        status => Err(ClientError::Http {
            addr,
            status,
            body: String::from_utf8_lossy(&body)
                .trim()
                .chars()
                .take(200)
                .collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_on_every_interface_is_asked_on_loopback() {
        let t = |s: &str| target(s.parse().expect("an address")).to_string();
        assert_eq!(t("0.0.0.0:8080"), "127.0.0.1:8080");
        assert_eq!(t("[::]:8080"), "[::1]:8080");
        assert_eq!(t("192.168.50.2:8080"), "192.168.50.2:8080");
    }
}
