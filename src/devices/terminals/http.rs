//! The HTTP listener push terminals deliver to (`[terminal_http]`): the thin async shell
//! between a vendor's POST and the terminal ingest.
//!
//! ```text
//! device ──POST /terminals/{id}[/…]──► authenticate (address, Basic or ?token=)
//!        ──POST /iclock/cdata?SN=…───►      │
//!                                          ▼
//!                      wire::{hikvision, uniubi, zkteco} ─► VendorRecord(s)
//!                                          ▼
//!                      TerminalIngest::deliver ─► journaled on disk ─► Ack
//!                                          ▼
//!                      the vendor's success answer (only now), or 503: the device keeps
//!                      the record and sends it again
//! ```
//!
//! The answer a device reads as "received" goes out only after every passage in its request
//! is committed, so a gateway killed mid-request loses nothing the device was told it
//! delivered; what it was not told it re-sends, and the core's dedup counts it once.
//!
//! Bounded everywhere, because this listens on the hall LAN beside devices anyone can reach:
//! connections in all ([`TerminalHttp::max_connections`], more are closed at once and
//! counted), the request head and the body within `request_timeout` (a slow client is cut
//! off), bodies over `max_body_bytes` refused with 413 (counted), pictures over
//! `max_picture_bytes` dropped while the passage is kept. Refusals — unknown terminal, wrong
//! address, missing credential, malformed body — are counted per terminal (or for the hall
//! when no terminal can be named) and logged once per terminal and reason.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming as Body};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{Incoming, Route, TerminalIngest, TerminalStats, TerminalsStats};
use crate::config::terminal_http::TerminalHttp;
use crate::config::terminals::{Secret, TerminalTransport};
use crate::config::{Config, CounterTransport};
use crate::devices::PollStats;
use crate::devices::counter::{Baseline, Totals};
use crate::devices::reporter::CounterReporter;
use crate::devices::{DeviceEvent, DeviceStats};
use crate::terminals::wire::{self, VendorRecord};

/// Largest request head read (request line and headers).
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// (terminal, reason) pairs logged before the rest are only counted: a flood from an
/// unknown address must not fill the journal.
const MAX_WARNED: usize = 256;

/// Which vendor's format a push terminal speaks, from its profile's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Vendor {
    Hikvision,
    Uniubi,
    Zkteco,
    /// One JSON document per request (any other profile).
    Json,
}

impl Vendor {
    fn of(profile: &str) -> Vendor {
        if profile.starts_with("hikvision") {
            Vendor::Hikvision
        } else if profile.starts_with("uniubi") {
            Vendor::Uniubi
        } else if profile.starts_with("zkteco") {
            Vendor::Zkteco
        } else {
            Vendor::Json
        }
    }
}

/// One push terminal, as the listener checks it.
struct PushTerminal {
    index: usize,
    id: String,
    vendor: Vendor,
    address: Option<IpAddr>,
    login: Option<(String, Secret)>,
}

/// One people-counting camera (an `http_push` counter): its posts feed the same reporter
/// (tracker, wrap and reset rules, online reports) as a polled counter's reads.
struct PushCounter {
    index: usize,
    id: String,
    address: Option<IpAddr>,
    login: Option<(String, Secret)>,
    reporter: tokio::sync::Mutex<CounterReporter>,
}

struct Shared {
    terminals: Vec<PushTerminal>,
    counters: Vec<PushCounter>,
    device_stats: Arc<DeviceStats>,
    limits: TerminalHttp,
    ingest: TerminalIngest,
    stats: Arc<TerminalsStats>,
    warned: Mutex<HashSet<(String, &'static str)>>,
}

/// Binds `[terminal_http] listen` now (a taken port is a start-up error) and serves until
/// `stop`.
pub fn start(
    config: &Config,
    limits: &TerminalHttp,
    counters: CounterLinks<'_>,
    stats: &Arc<TerminalsStats>,
    ingest: TerminalIngest,
    stop: &CancellationToken,
) -> Result<(), super::TerminalsError> {
    let listener = std::net::TcpListener::bind(limits.listen)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(TcpListener::from_std)
        .map_err(|error| super::TerminalsError::Listen {
            listen: limits.listen,
            error,
        })?;
    let terminals: Vec<PushTerminal> = config
        .terminals
        .iter()
        .enumerate()
        .filter_map(|(index, t)| match &t.transport {
            TerminalTransport::HttpPush { address } => Some(PushTerminal {
                index,
                id: t.id.as_str().to_string(),
                vendor: Vendor::of(&t.profile),
                address: *address,
                login: t.login.clone(),
            }),
            _ => None,
        })
        .collect();
    let push_counters: Vec<PushCounter> = config
        .counters
        .iter()
        .enumerate()
        .filter_map(|(index, c)| match &c.transport {
            CounterTransport::HttpPush { address, login } => Some(PushCounter {
                index,
                id: c.id.clone(),
                address: *address,
                login: login.clone(),
                reporter: tokio::sync::Mutex::new(CounterReporter::new(
                    index,
                    c,
                    counters.baselines.get(&c.id).copied(),
                    counters.events.clone(),
                )),
            }),
            _ => None,
        })
        .collect();
    tracing::info!(
        listen = %limits.listen,
        terminals = terminals.len(),
        counters = push_counters.len(),
        "terminal HTTP listener ready; push terminals deliver to /terminals/{{id}} and /iclock/cdata"
    );
    let shared = Arc::new(Shared {
        terminals,
        counters: push_counters,
        device_stats: counters.stats.clone(),
        limits: limits.clone(),
        ingest,
        stats: stats.clone(),
        warned: Mutex::new(HashSet::new()),
    });
    // Should this task ever end while the gateway runs, /healthz, an alert and the status
    // page say the intake stopped.
    let watch = super::StopWatch {
        stats: stats.clone(),
        shutdown: stop.clone(),
        part: "listener",
    };
    let stop = stop.clone();
    tokio::spawn(async move {
        let _watch = watch;
        serve(listener, shared, stop).await;
    });
    Ok(())
}

async fn serve(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    let permits = Arc::new(Semaphore::new(shared.limits.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(shared.limits.request_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    let http = Arc::new(http);
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "the terminal HTTP listener cannot accept a connection; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            shared.refuse(
                None,
                "too_many_connections",
                "every connection slot is taken",
            );
            drop(stream);
            continue;
        };
        let (shared, http, stop) = (shared.clone(), http.clone(), stop.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Body>| {
                let shared = shared.clone();
                async move { Ok::<_, std::convert::Infallible>(shared.respond(peer, request).await) }
            });
            let connection = http.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    tokio::time::timeout(Duration::from_secs(1), connection).await.unwrap_or(Ok(()))
                }
            };
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "terminal HTTP connection ended with an error");
            }
            drop(permit);
        });
    }
}

type Reply = Response<Full<Bytes>>;

/// What the listener needs to serve people-counting cameras as counters.
#[derive(Debug, Clone, Copy)]
pub struct CounterLinks<'a> {
    /// Each counter's last committed totals, by id.
    pub baselines: &'a BTreeMap<String, Baseline>,
    pub stats: &'a Arc<DeviceStats>,
    pub events: &'a mpsc::Sender<DeviceEvent>,
}

impl Shared {
    async fn respond(&self, peer: SocketAddr, request: Request<Body>) -> Reply {
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or_default().to_string();
        if let Some(rest) = path.strip_prefix("/counters/") {
            let id = rest.split('/').next().unwrap_or_default();
            return self.counter_post(peer, id, &query, request).await;
        }
        let terminal = match self.terminal_of(&path, &query) {
            Ok(terminal) => terminal,
            Err(refusal) => return refusal.reply(),
        };
        if let Err(refusal) = self.admit(terminal, peer, request.headers(), &query) {
            return refusal.reply();
        }
        let stats = &self.stats.terminals[terminal.index];
        if path.starts_with("/iclock/") && request.method() == Method::GET {
            // The handshake and the command polls carry no records: answered at once.
            PollStats::count(&stats.messages);
            stats.last_seen_ms.store(
                jiff::Timestamp::now().as_millisecond().max(0) as u64,
                Ordering::Relaxed,
            );
            return if path == "/iclock/getrequest" {
                plain(StatusCode::OK, wire::zkteco::GETREQUEST_ANSWER)
            } else {
                plain(StatusCode::OK, &wire::zkteco::options_answer(&terminal.id))
            };
        }
        if request.method() != Method::POST {
            let mut reply = plain(StatusCode::METHOD_NOT_ALLOWED, "POST only\n");
            reply
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return reply;
        }
        let content_type = content_type(request.headers());
        let body = match self.read_body(request).await {
            Ok(body) => body,
            Err(reason) => {
                self.refuse(Some(terminal), reason, "a request body was refused");
                return if reason == "body_too_large" {
                    plain(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n")
                } else {
                    plain(StatusCode::REQUEST_TIMEOUT, "body not received in time\n")
                };
            }
        };
        match self.envelopes(terminal, &content_type, &query, &body) {
            Ok(envelopes) => self.take(terminal, envelopes).await,
            Err(Unpacked::NotRecords) => {
                // Another ZKTeco table (operation log, photos): nothing to count, and the
                // device must not keep re-sending it.
                PollStats::count(&stats.messages);
                PollStats::count(&stats.ignored);
                plain(StatusCode::OK, &wire::zkteco::records_taken_answer(0))
            }
            Err(Unpacked::Refused(reason)) => {
                self.refuse(Some(terminal), reason, "a request body could not be read");
                plain(StatusCode::BAD_REQUEST, "malformed request\n")
            }
        }
    }

    /// The push terminal a request is for: by the path's id, or ZKTeco's `SN`.
    fn terminal_of(&self, path: &str, query: &str) -> Result<&PushTerminal, Refusal> {
        let found = if let Some(rest) = path.strip_prefix("/terminals/") {
            let id = rest.split('/').next().unwrap_or_default();
            self.terminals.iter().find(|t| t.id == id)
        } else if path == "/iclock/cdata" || path == "/iclock/getrequest" {
            let sn = query_value(query, "SN").unwrap_or_default();
            self.terminals
                .iter()
                .find(|t| t.id == sn && t.vendor == Vendor::Zkteco)
        } else {
            self.refuse(None, "unknown_path", "no terminal is served at this path");
            return Err(Refusal(StatusCode::NOT_FOUND, "no terminal here\n"));
        };
        found.ok_or_else(|| {
            self.refuse(
                None,
                "unknown_terminal",
                "a request names a terminal that is not a push terminal in the config",
            );
            Refusal(StatusCode::NOT_FOUND, "unknown terminal\n")
        })
    }

    /// Whether the request comes from the terminal's address, with its credential.
    fn admit(
        &self,
        terminal: &PushTerminal,
        peer: SocketAddr,
        headers: &HeaderMap,
        query: &str,
    ) -> Result<(), Refusal> {
        if let Some(address) = terminal.address
            && address != peer.ip()
        {
            self.refuse(
                Some(terminal),
                "wrong_address",
                "a request for this terminal came from another address than its configured one",
            );
            return Err(Refusal(
                StatusCode::FORBIDDEN,
                "not from this terminal's address\n",
            ));
        }
        if let Some((user, secret)) = &terminal.login
            && !credential_matches(headers, query, user, secret)
        {
            self.refuse(
                Some(terminal),
                "unauthorized",
                "a request for this terminal came without its credential",
            );
            return Err(Refusal(StatusCode::UNAUTHORIZED, "credential required\n"));
        }
        Ok(())
    }

    /// Hands a request's records to the ingest and answers once every one is safe.
    ///
    /// Every record goes to the ingest first, then the answers are awaited together: one
    /// commit holds them all, so a post of many records waits no longer than one.
    async fn take(&self, terminal: &PushTerminal, envelopes: Vec<VendorRecord>) -> Reply {
        let stats = &self.stats.terminals[terminal.index];
        let taken = envelopes.len();
        let mut answers = Vec::with_capacity(envelopes.len());
        for envelope in envelopes {
            if let Some(reason) = envelope.picture_dropped {
                PollStats::count(&stats.bad_snapshots);
                self.warn_once(
                    &terminal.id,
                    reason,
                    "a picture was dropped; its passage is kept",
                );
            }
            let (tx, rx) = oneshot::channel();
            let delivered = self
                .ingest
                .deliver(Incoming {
                    route: Route::Terminal(terminal.index),
                    payload: envelope.document,
                    picture: envelope.picture,
                    ack: Some(tx),
                })
                .await;
            if delivered.is_err() {
                return plain(StatusCode::SERVICE_UNAVAILABLE, "try again\n");
            }
            answers.push(rx);
        }
        for answer in answers {
            if answer.await.is_err() {
                // Not safe (the gateway is stopping): the device keeps the records and sends
                // them again; the ones that were safe count once.
                return plain(StatusCode::SERVICE_UNAVAILABLE, "try again\n");
            }
        }
        match terminal.vendor {
            Vendor::Uniubi => json(wire::uniubi::SUCCESS_ANSWER),
            Vendor::Zkteco => plain(StatusCode::OK, &wire::zkteco::records_taken_answer(taken)),
            Vendor::Hikvision | Vendor::Json => plain(StatusCode::OK, "OK\n"),
        }
    }

    /// A people-counting camera's notification: its running totals to the counter's
    /// reporter. Answered once the reading is queued: the camera keeps its totals, so a
    /// reading lost in a crash is given back by the next one.
    async fn counter_post(
        &self,
        peer: SocketAddr,
        id: &str,
        query: &str,
        request: Request<Body>,
    ) -> Reply {
        let Some(counter) = self.counters.iter().find(|c| c.id == id) else {
            self.refuse(
                None,
                "unknown_counter",
                "a request names a counter that is not an http_push counter in the config",
            );
            return plain(StatusCode::NOT_FOUND, "unknown counter\n");
        };
        let stats = &self.device_stats.counters[counter.index];
        let wrong_address = counter.address.is_some_and(|a| a != peer.ip());
        let no_credential = counter.login.as_ref().is_some_and(|(user, secret)| {
            !credential_matches(request.headers(), query, user, secret)
        });
        if wrong_address || no_credential {
            PollStats::count(&stats.link_errors);
            let reason = if wrong_address {
                "wrong_address"
            } else {
                "unauthorized"
            };
            self.warn_once(&counter.id, reason, "a counting camera's post was refused");
            return plain(StatusCode::FORBIDDEN, "refused\n");
        }
        if request.method() != Method::POST && request.method() != Method::PUT {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "POST only\n");
        }
        let content_type = content_type(request.headers());
        let Ok(body) = self.read_body(request).await else {
            PollStats::count(&stats.bad_answers);
            return plain(StatusCode::PAYLOAD_TOO_LARGE, "body refused\n");
        };
        PollStats::count(&stats.polls);
        let now = jiff::Timestamp::now();
        match wire::hikvision::people_counting(&content_type, &body) {
            Ok(wire::hikvision::PeopleCount::RealTime { enter, exit, .. }) => {
                // Stamped on arrival, not with the camera's clock: the engine orders all
                // devices by one time, and a camera's clock is not trusted for that.
                let totals = Totals {
                    inward: enter,
                    outward: exit,
                };
                counter.reporter.lock().await.reading(totals, now).await;
            }
            Ok(wire::hikvision::PeopleCount::Window { .. }) => {
                // A window's counts are not a running total: counting them into the same
                // series would count its people twice (see the profile's header).
                self.warn_once(
                    &counter.id,
                    "time_range",
                    "the camera sends time-range windows, which are not counted; set it to \
                     upload real-time statistics",
                );
            }
            Ok(_) => counter.reporter.lock().await.went_online(now).await,
            Err(error) => {
                PollStats::count(&stats.bad_answers);
                self.warn_once(
                    &counter.id,
                    error.as_str(),
                    "a counting camera's post was unreadable",
                );
                return plain(StatusCode::BAD_REQUEST, "malformed\n");
            }
        }
        plain(StatusCode::OK, "OK\n")
    }

    /// The body, whole, within the size bound and the request timeout.
    async fn read_body(&self, request: Request<Body>) -> Result<Vec<u8>, &'static str> {
        let limited = Limited::new(request.into_body(), self.limits.max_body_bytes);
        match tokio::time::timeout(self.limits.request_timeout, limited.collect()).await {
            Err(_) => Err("body_timeout"),
            Ok(Err(error)) => {
                if error.is::<http_body_util::LengthLimitError>() {
                    Err("body_too_large")
                } else {
                    Err("body_broken")
                }
            }
            Ok(Ok(collected)) => Ok(collected.to_bytes().to_vec()),
        }
    }

    /// A request's records, in the vendor's format.
    fn envelopes(
        &self,
        terminal: &PushTerminal,
        content_type: &str,
        query: &str,
        body: &[u8],
    ) -> Result<Vec<VendorRecord>, Unpacked> {
        let max_picture = self.limits.max_picture_bytes;
        match terminal.vendor {
            Vendor::Hikvision => wire::hikvision::push(content_type, body, max_picture)
                .map(|e| vec![e])
                .map_err(|e| Unpacked::Refused(e.as_str())),
            Vendor::Uniubi => wire::uniubi::callback(content_type, body, max_picture)
                .map(|e| vec![e])
                .map_err(|e| Unpacked::Refused(e.as_str())),
            Vendor::Zkteco => {
                let table = query_value(query, "table").unwrap_or_default();
                if wire::zkteco::table(&table) != wire::zkteco::Table::AttLog {
                    return Err(Unpacked::NotRecords);
                }
                let attlog = wire::zkteco::attlog(&terminal.id, body);
                for bad in &attlog.bad_lines {
                    self.refuse(Some(terminal), bad.why, "an ATTLOG line is not a record");
                }
                Ok(attlog
                    .records
                    .into_iter()
                    .map(|document| VendorRecord {
                        document,
                        picture: None,
                        picture_dropped: None,
                        replayed: false,
                    })
                    .collect())
            }
            Vendor::Json => Ok(vec![VendorRecord {
                document: body.to_vec(),
                picture: None,
                picture_dropped: None,
                replayed: false,
            }]),
        }
    }

    /// Counts a refusal against the terminal (or the hall) and logs it once.
    fn refuse(&self, terminal: Option<&PushTerminal>, reason: &'static str, detail: &str) {
        let stats: &TerminalStats = match terminal {
            Some(t) => &self.stats.terminals[t.index],
            None => &self.stats.unattributed,
        };
        PollStats::count(&stats.messages);
        stats.reject(reason);
        let name = terminal.map_or("(unknown)", |t| t.id.as_str());
        self.warn_once(name, reason, detail);
    }

    fn warn_once(&self, terminal: &str, reason: &'static str, detail: &str) {
        let first = self.warned.lock().is_ok_and(|mut warned| {
            warned.len() < MAX_WARNED && warned.insert((terminal.to_string(), reason))
        });
        if first {
            tracing::warn!(
                terminal,
                reason,
                detail,
                "a terminal HTTP request was refused and counted; further ones like it are only counted"
            );
        }
    }
}

/// A request refused before its body is read: its status and a line of text.
struct Refusal(StatusCode, &'static str);

impl Refusal {
    fn reply(self) -> Reply {
        let mut reply = plain(self.0, self.1);
        if self.0 == StatusCode::UNAUTHORIZED {
            reply.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"hallgate\""),
            );
        }
        reply
    }
}

/// Why a request's body gave no records.
enum Unpacked {
    NotRecords,
    Refused(&'static str),
}

/// The request's `Content-Type`, empty when missing or not text.
fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// HTTP Basic with the terminal's password (and user, when one is configured), or the
/// password as `?token=`.
fn credential_matches(headers: &HeaderMap, query: &str, user: &str, secret: &Secret) -> bool {
    let basic = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.strip_prefix("Basic "))
        .filter_map(|b64| BASE64.decode(b64.trim()).ok())
        .filter_map(|raw| String::from_utf8(raw).ok())
        .any(|pair| match pair.split_once(':') {
            Some((u, p)) => (user.is_empty() || u == user) & secret.matches(p),
            None => false,
        });
    basic
        || query
            .split('&')
            .filter_map(|pair| pair.strip_prefix("token="))
            .any(|given| secret.matches(&percent_decode(given)))
}

/// A query parameter's value (first occurrence), percent-decoded.
fn query_value(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| percent_decode(v))
}

/// `%XX` and `+` in a query value; anything malformed is kept as it is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn plain(status: StatusCode, body: &str) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(body.to_string())));
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    reply
}

fn json(body: &str) -> Reply {
    let mut reply = plain(StatusCode::OK, body);
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_decoded_and_malformed_escapes_kept() {
        assert_eq!(
            query_value("SN=ABC123&table=ATTLOG", "table").as_deref(),
            Some("ATTLOG")
        );
        assert_eq!(percent_decode("a%2Bb+c"), "a+b c");
        assert_eq!(percent_decode("50%"), "50%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(query_value("x=1", "SN"), None);
    }
}
