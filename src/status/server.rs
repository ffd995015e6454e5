//! The status HTTP server: hyper's HTTP/1 on a tokio listener bound to `[status] listen`
//! only. GET (and HEAD) on four paths — `/` the page, `/api/v1/state`, `/metrics`,
//! `/healthz` — everything else 404 or 405.
//!
//! The box is small and the page may be reachable from the hall's network, so every
//! resource is bounded: at most [`MAX_CONNECTIONS`] connections (more are closed at once),
//! request heads of at most [`MAX_HEAD_BYTES`] read within [`HEAD_READ_TIMEOUT`], and a
//! connection lives at most [`MAX_CONNECTION_LIFETIME`]. An observer task turns each core
//! snapshot into the view once; requests only render what is already there.
//!
//! With `token_file` set, everything but `/healthz` (for systemd and monitoring) needs the
//! token: `Authorization: Bearer TOKEN`, the cookie set by opening the page once as
//! `/?token=TOKEN` (so a phone's self-refreshing page keeps working), or `?token=TOKEN`
//! itself. Tokens are compared in constant time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::{TokioIo, TokioTimer};
use jiff::Timestamp;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

use super::alerts::Observer;
use super::view::StateView;
use super::{Snapshot, metrics, page};
use crate::config::Config;
use crate::config::terminals::Secret;

/// Connections served at once; more are closed as soon as they are accepted.
pub const MAX_CONNECTIONS: u32 = 16;
/// A request's head (request line and headers) must arrive within this.
pub const HEAD_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head read.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// A keep-alive connection is closed after this, whatever it does.
pub const MAX_CONNECTION_LIFETIME: Duration = Duration::from_secs(120);
/// `/healthz` fails when the core loop has not ticked for longer than this.
pub const HEALTHY_TICK_AGE: Duration = Duration::from_secs(10);
/// What open connections get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// The cookie that carries the token after `/?token=…`.
pub const TOKEN_COOKIE: &str = "hallgate_token";

const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("cannot listen for the status page on {addr} ([status] listen): {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
}

/// The status page's listener, bound before anything else starts so a taken address is a
/// startup error.
#[derive(Debug)]
pub struct StatusServer {
    listener: TcpListener,
    addr: SocketAddr,
}

/// What the handlers read: the latest snapshot and its view.
#[derive(Debug)]
struct Current {
    snapshot: Arc<Snapshot>,
    view: Arc<StateView>,
}

struct Shared {
    config: Config,
    token: Option<Secret>,
    current: watch::Receiver<Arc<Current>>,
}

impl StatusServer {
    pub async fn bind(addr: SocketAddr) -> Result<Self, StatusError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|error| StatusError::Bind { addr, error })?;
        let addr = listener.local_addr().unwrap_or(addr);
        Ok(StatusServer { listener, addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `stop`, from the snapshots on `snapshots`.
    pub async fn serve(
        self,
        config: Config,
        mut snapshots: watch::Receiver<Arc<Snapshot>>,
        stop: CancellationToken,
    ) {
        let mut observer = Observer::new(Timestamp::now());
        let first = snapshots.borrow_and_update().clone();
        let view = Arc::new(observer.observe(&config, &first));
        let (current_tx, current_rx) = watch::channel(Arc::new(Current {
            snapshot: first,
            view,
        }));

        let observe = {
            let (config, stop) = (config.clone(), stop.clone());
            async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        changed = snapshots.changed() => {
                            if changed.is_err() {
                                // The core loop has ended (shutdown): keep showing its last figures.
                                stop.cancelled().await;
                                return;
                            }
                        }
                    }
                    let snapshot = snapshots.borrow_and_update().clone();
                    let view = Arc::new(observer.observe(&config, &snapshot));
                    current_tx.send_replace(Arc::new(Current { snapshot, view }));
                }
            }
        };
        let observe = tokio::spawn(observe);

        tracing::info!(
            addr = %self.addr,
            token = config.status.as_ref().is_some_and(|s| s.token.is_some()),
            "the status page is listening"
        );
        let shared = Arc::new(Shared {
            token: config.status.as_ref().and_then(|s| s.token.clone()),
            config,
            current: current_rx,
        });
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS as usize));
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(HEAD_READ_TIMEOUT)
            .max_buf_size(MAX_HEAD_BYTES)
            .keep_alive(true);
        let http = Arc::new(http);
        loop {
            let (stream, peer) = tokio::select! {
                _ = stop.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: wait, do not spin.
                        tracing::warn!(%error, "the status page cannot accept a connection; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "status page: too many connections; closing this one");
                drop(stream);
                continue;
            };
            let (shared, http, stop) = (shared.clone(), http.clone(), stop.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let response = respond(&shared, &request);
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                let connection = http.serve_connection(TokioIo::new(stream), service);
                tokio::pin!(connection);
                let ended = tokio::select! {
                    result = connection.as_mut() => Some(result),
                    _ = stop.cancelled() => None,
                    _ = tokio::time::sleep(MAX_CONNECTION_LIFETIME) => None,
                };
                let result = match ended {
                    Some(result) => result,
                    None => {
                        connection.as_mut().graceful_shutdown();
                        tokio::time::timeout(SHUTDOWN_GRACE, connection)
                            .await
                            .unwrap_or(Ok(()))
                    }
                };
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "status page connection ended with an error");
                }
                drop(permit);
            });
        }
        // Let open connections finish what they were sending, briefly.
        let _ = tokio::time::timeout(
            SHUTDOWN_GRACE + Duration::from_millis(200),
            permits.acquire_many(MAX_CONNECTIONS),
        )
        .await;
        let _ = observe.await;
    }
}

type Reply = Response<Full<Bytes>>;

/// Routes one request; pure but for reading the latest view.
fn respond<B>(shared: &Shared, request: &Request<B>) -> Reply {
    let (method, uri, headers) = (request.method(), request.uri(), request.headers());
    if method != Method::GET && method != Method::HEAD {
        let mut reply = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "This address only answers GET requests.\n",
        );
        reply
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return reply;
    }
    let current = shared.current.borrow().clone();
    if uri.path() == "/healthz" {
        let age = current.snapshot.taken.elapsed();
        return if age <= HEALTHY_TICK_AGE {
            plain(StatusCode::OK, "ok\n")
        } else {
            plain(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "The gateway's core loop has not ticked for {} seconds.\n",
                    age.as_secs()
                ),
            )
        };
    }
    let route = match uri.path() {
        "/" => Route::Page,
        "/api/v1/state" => Route::State,
        "/metrics" => Route::Metrics,
        _ => {
            return plain(
                StatusCode::NOT_FOUND,
                "There is no such page here. The status page is at /.\n",
            );
        }
    };
    let via = match &shared.token {
        None => Some(Via::Open),
        Some(token) => authorised(headers, uri, token),
    };
    let Some(via) = via else {
        let mut reply = plain(
            StatusCode::UNAUTHORIZED,
            "This status page needs its access token: open it with the link that ends in \
             ?token=… (ask whoever set up the gateway), or send Authorization: Bearer TOKEN.\n",
        );
        reply.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"hallgate\""),
        );
        return reply;
    };
    let mut reply = match route {
        Route::Page => {
            let mut reply = reply(
                StatusCode::OK,
                "text/html; charset=utf-8",
                page::render(&current.view, VERSION),
            );
            reply.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; \
                     form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
                ),
            );
            reply
        }
        Route::State => match serde_json::to_string_pretty(&*current.view) {
            Ok(json) => reply(StatusCode::OK, "application/json", json + "\n"),
            Err(error) => plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot serialise the state: {error}\n"),
            ),
        },
        Route::Metrics => reply(
            StatusCode::OK,
            metrics::CONTENT_TYPE,
            metrics::render(&shared.config, &current.snapshot, &current.view, VERSION),
        ),
    };
    if let (Route::Page, Via::Query, Some(token)) = (route, via, &shared.token) {
        // The page reloads itself without the query; the cookie keeps it signed in.
        let cookie = format!(
            "{TOKEN_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age=2592000",
            token.expose()
        );
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            reply.headers_mut().insert(header::SET_COOKIE, value);
        }
    }
    reply
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Page,
    State,
    Metrics,
}

/// How a request proved it may look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Open,
    Bearer,
    Cookie,
    Query,
}

/// Which credential of the request matches `token`, if any.
fn authorised(headers: &HeaderMap, uri: &Uri, token: &Secret) -> Option<Via> {
    let bearer = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.strip_prefix("Bearer "))
        .any(|given| same_secret(given.trim(), token.expose()));
    if bearer {
        return Some(Via::Bearer);
    }
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix(TOKEN_COOKIE)?.strip_prefix('='))
        .any(|given| same_secret(given, token.expose()));
    if cookie {
        return Some(Via::Cookie);
    }
    let query = uri
        .query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(|pair| pair.strip_prefix("token="))
        .any(|given| same_secret(given, token.expose()));
    query.then_some(Via::Query)
}

/// Compares two secrets in time that depends on neither: their digests are compared byte
/// for byte without an early exit, so neither the content nor the length leaks.
fn same_secret(given: &str, expected: &str) -> bool {
    let (a, b) = (
        Sha256::digest(given.as_bytes()),
        Sha256::digest(expected.as_bytes()),
    );
    let difference = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(body)));
    *reply.status_mut() = status;
    let headers = reply.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    reply
}

fn plain(status: StatusCode, text: &str) -> Reply {
    reply(status, "text/plain; charset=utf-8", text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> Secret {
        // Secrets come from files; this is the test's way to make one.
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("token");
        std::fs::write(&path, text).expect("writable");
        let mut problems = Vec::new();
        crate::config::status::validate_status(
            &crate::config::status::StatusConfig {
                enabled: true,
                listen: "127.0.0.1:1".into(),
                token_file: Some(path),
            },
            dir.path(),
            &mut problems,
        )
        .and_then(|s| s.token)
        .expect("a valid token")
    }

    fn request(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().uri(uri);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(()).expect("a valid request")
    }

    const TOKEN: &str = "correct-horse-battery";

    #[test]
    fn the_token_is_accepted_as_bearer_cookie_or_query_and_nothing_else() {
        let token = secret(TOKEN);
        let check = |uri: &str, headers: &[(&str, &str)]| {
            let r = request(uri, headers);
            authorised(r.headers(), r.uri(), &token)
        };
        assert_eq!(
            check("/", &[("authorization", "Bearer correct-horse-battery")]),
            Some(Via::Bearer)
        );
        assert_eq!(
            check(
                "/",
                &[("cookie", "a=b; hallgate_token=correct-horse-battery")]
            ),
            Some(Via::Cookie)
        );
        assert_eq!(
            check("/?x=1&token=correct-horse-battery", &[]),
            Some(Via::Query)
        );
        assert_eq!(check("/", &[]), None);
        assert_eq!(check("/?token=correct-horse-batter", &[]), None);
        assert_eq!(
            check("/", &[("authorization", "Basic correct-horse-battery")]),
            None
        );
        assert_eq!(
            check("/", &[("cookie", "xhallgate_token=correct-horse-battery")]),
            None
        );
    }

    #[test]
    fn secrets_compare_equal_only_when_identical() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("", "abc"));
    }
}
