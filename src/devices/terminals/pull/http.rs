//! One HTTP/1.1 connection to one pulled terminal, with its Digest login: the pull drivers'
//! only way to the device.
//!
//! ```text
//! driver ─► DeviceClient::call(method, target, body) ─► hyper http1 over one TcpStream
//!              │  401 + challenge: answer it (nonce re-used while the device takes it)
//!              └─ two fresh challenges refused in a row: LoginRefused, nothing more sent
//! ```
//!
//! At most one connection per device exists at any time: a new one is opened only after the
//! old one's task has been stopped and awaited (its socket closed). The connection is kept
//! between polls; one the device closed while idle is re-opened once without counting as a
//! failure.

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use rand::Rng;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::digest::{DigestSession, parse_challenge};

/// How long the client waits.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP connect and the HTTP handshake.
    pub connect: Duration,
    /// From sending a request to its response's headers; also a whole bounded body.
    pub response: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            response: Duration::from_secs(15),
        }
    }
}

/// Failed logins in a row (each answering a fresh challenge) after which the client stops:
/// devices lock the account after a few (Hikvision and Dahua: 5 by default), and the device
/// may count some the gateway did not see (another client, a restart mid-login).
pub const FAILED_LOGINS_BEFORE_STOP: u32 = 2;
/// Requests for one call (a first try, fresh or stale challenges answered) before it gives up.
const MAX_ATTEMPTS: u32 = 4;
/// A 401's body is read (to keep the connection usable) up to this much.
const MAX_REFUSAL_BODY: usize = 16 * 1024;

/// Why a call failed. [`CallError::label`] is the metric reason.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("no answer within the {0} timeout")]
    Timeout(&'static str),
    #[error("the HTTP exchange failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("the device refused the login {FAILED_LOGINS_BEFORE_STOP} times in a row")]
    LoginRefused,
    #[error("the device answered 401 without a Digest challenge this client can answer")]
    NoChallenge,
    #[error("the device kept challenging the login")]
    AuthLoop,
    #[error("the device answered HTTP {0}")]
    Status(u16),
    #[error("the body is over the {0}-byte bound")]
    TooLarge(usize),
    #[error("the request could not be built: {0}")]
    Request(String),
}

impl CallError {
    pub fn label(&self) -> &'static str {
        match self {
            CallError::Connect(_) => "connect_failed",
            CallError::Timeout(_) => "timeout",
            CallError::Http(_) => "http_error",
            CallError::LoginRefused => "login_refused",
            CallError::NoChallenge => "no_digest_challenge",
            CallError::AuthLoop => "auth_loop",
            CallError::Status(_) => "http_status",
            CallError::TooLarge(_) => "response_too_large",
            CallError::Request(_) => "bad_request",
        }
    }
}

struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    task: JoinHandle<()>,
    /// A request has gone over it (so a failure may be the device closing an idle one).
    used: bool,
}

/// The client of one device.
pub struct DeviceClient {
    address: String,
    username: String,
    password: String,
    timeouts: Timeouts,
    conn: Option<Conn>,
    session: Option<DigestSession>,
    failed_logins: u32,
}

impl std::fmt::Debug for DeviceClient {
    // No password, no nonce.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceClient")
            .field("address", &self.address)
            .field("connected", &self.conn.is_some())
            .field("failed_logins", &self.failed_logins)
            .finish()
    }
}

impl DeviceClient {
    pub fn new(address: &str, username: &str, password: &str, timeouts: Timeouts) -> Self {
        DeviceClient {
            address: address.to_string(),
            username: username.to_string(),
            password: password.to_string(),
            timeouts,
            conn: None,
            session: None,
            failed_logins: 0,
        }
    }

    /// Closes the connection (if any) and waits until its socket is gone.
    pub async fn close(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(conn.sender);
            conn.task.abort();
            let _ = conn.task.await;
        }
    }

    async fn connect(&mut self) -> Result<(), CallError> {
        self.close().await;
        let stream = timeout(self.timeouts.connect, TcpStream::connect(&self.address))
            .await
            .map_err(|_| CallError::Timeout("connect"))?
            .map_err(CallError::Connect)?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = timeout(
            self.timeouts.connect,
            http1::handshake(TokioIo::new(stream)),
        )
        .await
        .map_err(|_| CallError::Timeout("connect"))??;
        let task = tokio::spawn(async move {
            // Its end (the device closing, an error) shows on the sender.
            let _ = connection.await;
        });
        self.conn = Some(Conn {
            sender,
            task,
            used: false,
        });
        Ok(())
    }

    /// Sends one request (answering the device's Digest challenge as needed) and returns the
    /// response once its headers are in; its body is the caller's to read. A status other
    /// than 401 is returned as it is.
    pub async fn call(
        &mut self,
        method: Method,
        target: &str,
        body: Option<(&'static str, Bytes)>,
    ) -> Result<Response<Incoming>, CallError> {
        let mut attempts = 0;
        let mut reopened = false;
        loop {
            attempts += 1;
            if attempts > MAX_ATTEMPTS {
                return Err(CallError::AuthLoop);
            }
            if self.conn.as_ref().is_none_or(|c| c.sender.is_closed()) {
                self.connect().await?;
            }
            let authorization = self.session.as_mut().map(|s| {
                s.authorization(
                    &self.username,
                    &self.password,
                    method.as_str(),
                    target,
                    &cnonce(),
                )
            });
            // A 401 to the first use of a challenge is a failed login; to a re-used nonce
            // it may only mean the nonce expired.
            let answering_fresh = self.session.as_ref().is_some_and(|s| s.uses() == 1);
            let request = self.request(&method, target, body.clone(), authorization.as_deref())?;
            let Some(conn) = self.conn.as_mut() else {
                return Err(CallError::Request("no connection".into()));
            };
            let reused = std::mem::replace(&mut conn.used, true);
            let sent = timeout(self.timeouts.response, async {
                conn.sender.ready().await?;
                conn.sender.send_request(request).await
            })
            .await;
            let response = match sent {
                Err(_) => {
                    self.close().await;
                    return Err(CallError::Timeout("response"));
                }
                Ok(Err(_)) if reused && !reopened => {
                    // The device closed the idle keep-alive connection: once more on a new one.
                    reopened = true;
                    attempts -= 1;
                    self.close().await;
                    continue;
                }
                Ok(Err(error)) => {
                    self.close().await;
                    return Err(CallError::Http(error));
                }
                Ok(Ok(response)) => response,
            };
            if response.status() != StatusCode::UNAUTHORIZED {
                self.failed_logins = 0;
                return Ok(response);
            }
            let challenge = parse_challenge(
                response
                    .headers()
                    .get_all(header::WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok()),
            );
            if read_body(response, MAX_REFUSAL_BODY, self.timeouts.response)
                .await
                .is_err()
            {
                self.close().await;
            }
            let Some(challenge) = challenge else {
                return Err(CallError::NoChallenge);
            };
            if authorization.is_some() && answering_fresh && !challenge.stale {
                self.failed_logins += 1;
                if self.failed_logins >= FAILED_LOGINS_BEFORE_STOP {
                    self.session = None;
                    self.close().await;
                    return Err(CallError::LoginRefused);
                }
            }
            self.session = Some(DigestSession::new(challenge));
        }
    }

    fn request(
        &self,
        method: &Method,
        target: &str,
        body: Option<(&'static str, Bytes)>,
        authorization: Option<&str>,
    ) -> Result<Request<Full<Bytes>>, CallError> {
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(target)
            .header(header::HOST, self.address.as_str())
            .header(header::ACCEPT, "*/*")
            .header(header::USER_AGENT, "hallgate");
        if let Some(value) = authorization {
            builder = builder.header(header::AUTHORIZATION, value);
        }
        let body = match body {
            Some((content_type, bytes)) => {
                builder = builder.header(header::CONTENT_TYPE, content_type);
                bytes
            }
            None => Bytes::new(),
        };
        builder
            .body(Full::new(body))
            .map_err(|e| CallError::Request(e.to_string()))
    }
}

/// A whole response body, up to `max` bytes and within `within`.
pub async fn read_body(
    response: Response<Incoming>,
    max: usize,
    within: Duration,
) -> Result<Bytes, CallError> {
    match timeout(within, Limited::new(response.into_body(), max).collect()).await {
        Err(_) => Err(CallError::Timeout("body")),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) => match error.downcast::<hyper::Error>() {
            Ok(error) => Err(CallError::Http(*error)),
            Err(_) => Err(CallError::TooLarge(max)),
        },
    }
}

/// A fresh client nonce.
fn cnonce() -> String {
    let bytes: [u8; 12] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
