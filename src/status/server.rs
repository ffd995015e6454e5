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
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

use super::view::Observer;
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

/// The server's bounds; [`Limits::default`] is what the gateway uses (the constants above).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: u32,
    pub head_read_timeout: Duration,
    pub max_connection_lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: MAX_CONNECTIONS,
            head_read_timeout: HEAD_READ_TIMEOUT,
            max_connection_lifetime: MAX_CONNECTION_LIFETIME,
        }
    }
}

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
        snapshots: watch::Receiver<Arc<Snapshot>>,
        stop: CancellationToken,
    ) {
        self.serve_within(Limits::default(), config, snapshots, stop)
            .await;
    }

    /// As [`StatusServer::serve`], within `limits`.
    pub async fn serve_within(
        self,
        limits: Limits,
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
        let permits = Arc::new(Semaphore::new(limits.max_connections as usize));
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.head_read_timeout)
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
                    _ = tokio::time::sleep(limits.max_connection_lifetime) => None,
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
            permits.acquire_many(limits.max_connections),
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
        if let Some(part) = current.snapshot.terminal_intake_stopped {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "终端接入已停止 (terminal intake stopped): the terminals' {part} has ended; \
                     terminals cannot deliver until the gateway restarts.\n"
                ),
            );
        }
        if let Some(fault) = current.snapshot.outbox.storage_fault()
            && fault.cannot_store()
        {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("{}.\n", crate::alerts::storage_fault_words(fault)),
            );
        }
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
        .any(|given| token.matches(given.trim()));
    if bearer {
        return Some(Via::Bearer);
    }
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix(TOKEN_COOKIE)?.strip_prefix('='))
        .any(|given| token.matches(given));
    if cookie {
        return Some(Via::Cookie);
    }
    let query = uri
        .query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(|pair| pair.strip_prefix("token="))
        .any(|given| token.matches(given));
    query.then_some(Via::Query)
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
        // Only its owner may read a token file.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
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

    /// A one-room hall's config and a snapshot of it, for a server in this process.
    fn hall() -> (Config, Snapshot) {
        let config = crate::config::parse(
            "[hall]\nid = \"h\"\ndistrict = \"d\"\n[uplink]\nbroker = \"mqtt://127.0.0.1:1\"\n\
             [[rooms]]\nid = \"lobby\"\ncapacity = 10\n",
            std::path::Path::new("."),
            &crate::config::Overrides::default(),
        )
        .expect("a valid config");
        let snapshot = Snapshot::quiet(Timestamp::now(), 1);
        (config, snapshot)
    }

    /// Sends `GET /healthz` on a fresh connection; the answer's first line, or "" when the
    /// server closed the connection without one.
    async fn healthz(addr: SocketAddr) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        let _ = stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_are_closed_unanswered_until_one_is_free() {
        let outcome = tokio::time::timeout(Duration::from_secs(30), async {
            let (config, snapshot) = hall();
            let server = StatusServer::bind("127.0.0.1:0".parse().expect("an address"))
                .await
                .expect("binds");
            let addr = server.local_addr();
            let (_tx, rx) = watch::channel(Arc::new(snapshot));
            let stop = CancellationToken::new();
            // Head reads never time out here, so silent connections hold their places.
            let limits = Limits {
                max_connections: 2,
                head_read_timeout: Duration::from_secs(3600),
                max_connection_lifetime: Duration::from_secs(3600),
            };
            let task = tokio::spawn(server.serve_within(limits, config, rx, stop.clone()));

            let first = tokio::net::TcpStream::connect(addr)
                .await
                .expect("connects");
            let _second = tokio::net::TcpStream::connect(addr)
                .await
                .expect("connects");
            // Accepted in order: the two silent ones hold both places, the third is closed.
            assert_eq!(
                healthz(addr).await,
                "",
                "a third connection must get no answer"
            );

            // One silent client goes away; its place is free again soon after.
            drop(first);
            loop {
                match healthz(addr).await.as_str() {
                    "HTTP/1.1 200 OK" => break,
                    "" => tokio::task::yield_now().await,
                    other => panic!("unexpected answer {other:?}"),
                }
            }
            stop.cancel();
            task.await.expect("the server stops");
        })
        .await;
        outcome.expect("the test finishes within 30 s");
    }

    #[tokio::test]
    async fn healthz_fails_while_the_gateway_cannot_store_but_not_on_a_full_disk_that_stores() {
        let outcome = tokio::time::timeout(Duration::from_secs(30), async {
            let (config, mut snapshot) = hall();
            snapshot.outbox.disk_full = true;
            let server = StatusServer::bind("127.0.0.1:0".parse().expect("an address"))
                .await
                .expect("binds");
            let addr = server.local_addr();
            let (tx, rx) = watch::channel(Arc::new(snapshot.clone()));
            let stop = CancellationToken::new();
            let task = tokio::spawn(server.serve(config, rx, stop.clone()));
            // Full, but storing under the lowered bound: healthy.
            assert_eq!(healthz(addr).await, "HTTP/1.1 200 OK");
            for unusable in [true, false] {
                let mut failing = snapshot.clone();
                failing.outbox.write_failing = !unusable;
                failing.outbox.data_dir_unusable = unusable;
                failing.taken = std::time::Instant::now();
                tx.send_replace(Arc::new(failing));
                // The observer takes the new snapshot on its own time.
                let mut answer = String::new();
                for _ in 0..100 {
                    answer = healthz(addr).await;
                    if answer != "HTTP/1.1 200 OK" {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                assert_eq!(answer, "HTTP/1.1 503 Service Unavailable");
            }
            stop.cancel();
            task.await.expect("the server stops");
        })
        .await;
        outcome.expect("the test finishes within 30 s");
    }

    #[tokio::test]
    async fn healthz_fails_when_the_terminal_intake_has_stopped() {
        let outcome = tokio::time::timeout(Duration::from_secs(30), async {
            let (config, mut snapshot) = hall();
            snapshot.terminal_intake_stopped = Some("listener");
            let server = StatusServer::bind("127.0.0.1:0".parse().expect("an address"))
                .await
                .expect("binds");
            let addr = server.local_addr();
            let (_tx, rx) = watch::channel(Arc::new(snapshot));
            let stop = CancellationToken::new();
            let task = tokio::spawn(server.serve(config, rx, stop.clone()));
            assert_eq!(healthz(addr).await, "HTTP/1.1 503 Service Unavailable");
            stop.cancel();
            task.await.expect("the server stops");
        })
        .await;
        outcome.expect("the test finishes within 30 s");
    }
}
