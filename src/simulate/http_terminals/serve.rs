//! One pulled terminal: an HTTP/1.1 server at the terminal's configured address that
//! answers as the device would — Digest logins with a lock-out, Hikvision's `AcsEvent`
//! search and `alertStream`, Dahua's `eventManager.cgi` stream — over its [`DeviceLog`].
//!
//! ```text
//! accept ─► count connections ─► Digest check ─┬─► AcsEvent search ─► page ─► Ledger::taken (first time)
//!                                               └─► stream: replay the log (currentEvent false),
//!                                                   then live records and heartbeats
//! ```
//!
//! A record's truth line is written when it first goes out (in a page or on a stream): the
//! gateway may lose it after that (killed), but it can always read it again — the log keeps
//! everything and both streams replay it on every new connection (Dahua's firmware with
//! offline upload does the same), so the log is the truth.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Bytes, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use jiff::Timestamp;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{MissedTickBehavior, interval_at, timeout};
use tokio_util::sync::CancellationToken;

use super::device_log::{DeviceLog, LiveItem, parse_cond};
use super::digest::{DigestGuard, Verdict};
use super::encode::{
    ALERT_STREAM_BOUNDARY, DAHUA_BOUNDARY, HttpEncoder, alert_stream_part, dahua_heartbeat_part,
};
use super::{Entry, HttpKind, HttpTerminal, Record, SharedLedger, SharedLog, lock};
use crate::simulate::terminals::Message;

/// How often the alertStream says it is alive.
const ALERT_HEARTBEAT: Duration = Duration::from_secs(10);
/// Dahua's `heartbeat=` when the request names none, and the range it is held to.
const DAHUA_DEFAULT_HEARTBEAT_SECS: u64 = 5;
/// A stream whose reader takes nothing for this long is dropped.
const STREAM_STALL: Duration = Duration::from_secs(30);
/// Parts buffered per stream before the writer waits for the reader.
const STREAM_BUFFER: usize = 8;
const MAX_REQUEST_BYTES: usize = 64 * 1024;
const FINISH_WITHIN: Duration = Duration::from_secs(2);

/// A pulled terminal's counts, for the final line.
#[derive(Debug, Clone, Default)]
pub(super) struct PullStats {
    pub requests: u64,
    pub failed_logins: u64,
    pub lockouts: u64,
    pub refused_while_locked: u64,
    pub connections: u64,
    pub max_connections: u64,
}

struct Shared {
    t: HttpTerminal,
    log: SharedLog,
    version: watch::Receiver<u64>,
    guard: Mutex<DigestGuard>,
    encoder: Arc<HttpEncoder>,
    ledger: SharedLedger,
    stop: CancellationToken,
    requests: AtomicU64,
    open: AtomicU64,
    max_open: AtomicU64,
    connections: AtomicU64,
}

/// The player's end of a pulled terminal.
pub(super) struct PullHandle {
    /// Where it listens (the configured address, or the port the system chose for `:0`).
    pub local_addr: SocketAddr,
    shared: Arc<Shared>,
    version: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl PullHandle {
    /// Logs a passage or failed verification; a re-send goes out again on the streams.
    pub fn log(&self, entry: Entry) {
        {
            let mut log = lock(&self.shared.log);
            match &entry.record {
                Record::Message(Message::Resend(p)) => {
                    log.resend(p.serial);
                }
                Record::Message(Message::Passage(_)) | Record::Fail { .. } => {
                    log.push(entry);
                }
                Record::Message(_) => return,
            }
        }
        self.version.send_modify(|v| *v += 1);
    }

    pub fn idle(&self) -> bool {
        lock(&self.shared.log).undelivered().next().is_none()
    }

    /// What it still holds (never read) and its counts so far.
    pub fn snapshot(&self) -> (Vec<(Entry, u32)>, PullStats) {
        let left = lock(&self.shared.log)
            .undelivered()
            .map(|e| (e.clone(), 0))
            .collect();
        let s = &self.shared;
        let guard = lock(&s.guard);
        let stats = PullStats {
            requests: s.requests.load(Ordering::Relaxed),
            failed_logins: guard.failed_logins,
            lockouts: guard.lockouts,
            refused_while_locked: guard.refused_while_locked,
            connections: s.connections.load(Ordering::Relaxed),
            max_connections: s.max_open.load(Ordering::Relaxed),
        };
        (left, stats)
    }

    /// Waits for the server to stop (its token is cancelled by then).
    pub async fn finish(mut self) {
        if timeout(FINISH_WITHIN, &mut self.task).await.is_err() {
            self.task.abort();
        }
    }
}

/// Binds the terminal's address and serves it until `stop`.
pub(super) async fn spawn(
    t: HttpTerminal,
    address: SocketAddr,
    encoder: Arc<HttpEncoder>,
    ledger: SharedLedger,
    seed: u64,
    lockout: Duration,
    stop: CancellationToken,
) -> io::Result<PullHandle> {
    let listener = TcpListener::bind(address).await?;
    let local_addr = listener.local_addr()?;
    let (version_tx, version) = watch::channel(0);
    let realm = match t.kind {
        HttpKind::DahuaStream => format!("Login to {}", t.sim.id),
        _ => "DS-K1T671TM-3XF".to_string(),
    };
    let password = t.password.clone().unwrap_or_default();
    let shared = Arc::new(Shared {
        guard: Mutex::new(DigestGuard::new(
            &realm,
            &t.username,
            &password,
            seed,
            lockout,
        )),
        t,
        log: Arc::new(Mutex::new(DeviceLog::default())),
        version,
        encoder,
        ledger,
        stop,
        requests: AtomicU64::new(0),
        open: AtomicU64::new(0),
        max_open: AtomicU64::new(0),
        connections: AtomicU64::new(0),
    });
    let task = tokio::spawn(accept(listener, shared.clone()));
    Ok(PullHandle {
        local_addr,
        shared,
        version: version_tx,
        task,
    })
}

/// Counts an open connection for as long as it lives.
struct Open(Arc<Shared>);

impl Open {
    fn new(shared: Arc<Shared>) -> Self {
        shared.connections.fetch_add(1, Ordering::Relaxed);
        let now = shared.open.fetch_add(1, Ordering::Relaxed) + 1;
        shared.max_open.fetch_max(now, Ordering::Relaxed);
        Open(shared)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shared.stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(error) => {
                tracing::warn!(terminal = %shared.t.sim.id, %error, "accept failed");
                continue;
            }
        };
        // Reap finished connections so the set stays small.
        while connections.try_join_next().is_some() {}
        let open = Open::new(shared.clone());
        let shared = shared.clone();
        connections.spawn(async move {
            let _open = open;
            let service_shared = shared.clone();
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let shared = service_shared.clone();
                async move { Ok::<_, Infallible>(handle(shared, request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = shared.stop.cancelled() => {}
                result = connection => {
                    if let Err(error) = result {
                        tracing::debug!(terminal = %shared.t.sim.id, %peer, %error, "connection ended");
                    }
                }
            }
        });
    }
    connections.shutdown().await;
}

type ResponseBody = BoxBody<Bytes, Infallible>;

fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<ResponseBody> {
    let mut response = Response::new(Full::new(body.into()).boxed());
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

fn unauthorized(challenge: String, locked: bool) -> Response<ResponseBody> {
    let body = if locked {
        json!({"statusCode": 4, "statusString": "Invalid Operation", "subStatusCode": "userLocked"})
    } else {
        json!({"statusCode": 4, "statusString": "Invalid Operation", "subStatusCode": "unauthorized"})
    };
    let mut response = respond(
        StatusCode::UNAUTHORIZED,
        "application/json",
        body.to_string(),
    );
    if let Ok(value) = challenge.parse() {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

async fn handle(shared: Arc<Shared>, request: Request<Incoming>) -> Response<ResponseBody> {
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let method = request.method().clone();
    let target = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let verdict = lock(&shared.guard).check(
        method.as_str(),
        &target,
        authorization.as_deref(),
        std::time::Instant::now(),
    );
    match verdict {
        Verdict::Allowed => {}
        Verdict::Challenge(c) => return unauthorized(c, false),
        Verdict::Failed(c) => {
            tracing::info!(terminal = %shared.t.sim.id, "failed login");
            return unauthorized(c, false);
        }
        Verdict::Locked => {
            let c = lock(&shared.guard).challenge(false);
            return unauthorized(c, true);
        }
    }
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let hikvision = matches!(
        shared.t.kind,
        HttpKind::HikvisionPull | HttpKind::HikvisionStream
    );
    match (&method, path.as_str()) {
        (&Method::POST, "/ISAPI/AccessControl/AcsEvent") if hikvision => {
            let body = match Limited::new(request.into_body(), MAX_REQUEST_BYTES)
                .collect()
                .await
            {
                Ok(collected) => collected.to_bytes(),
                Err(_) => return respond(StatusCode::BAD_REQUEST, "text/plain", "body"),
            };
            search(&shared, &body)
        }
        (&Method::GET, "/ISAPI/Event/notification/alertStream") if hikvision => {
            stream(shared, StreamKind::Alert, ALERT_HEARTBEAT)
        }
        (&Method::GET, "/ISAPI/System/deviceInfo") if hikvision => respond(
            StatusCode::OK,
            "application/xml",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DeviceInfo version=\"2.0\"><deviceName>{0}</deviceName><serialNumber>{0}</serialNumber><model>DS-K1T671TM-3XF</model></DeviceInfo>",
                shared.t.sim.id
            ),
        ),
        (&Method::GET, "/cgi-bin/eventManager.cgi")
            if shared.t.kind == HttpKind::DahuaStream
                && query_value(&query, "action") == Some("attach") =>
        {
            let secs = query_value(&query, "heartbeat")
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(DAHUA_DEFAULT_HEARTBEAT_SECS)
                .clamp(1, 60);
            stream(shared, StreamKind::Dahua, Duration::from_secs(secs))
        }
        (&Method::GET, "/cgi-bin/magicBox.cgi") if shared.t.kind == HttpKind::DahuaStream => {
            respond(
                StatusCode::OK,
                "text/plain",
                format!(
                    "deviceType=ASI7213X-T1\r\nserialNumber={}\r\n",
                    shared.t.sim.id
                ),
            )
        }
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "Not Found"),
    }
}

fn query_value<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// An `AcsEvent` search: one page of the log; records out for the first time are taken.
fn search(shared: &Shared, body: &[u8]) -> Response<ResponseBody> {
    let cond = match parse_cond(body) {
        Ok(c) => c,
        Err(why) => {
            let answer = json!({"statusCode": 6, "statusString": "Invalid Content", "subStatusCode": "badJsonContent", "errorMsg": why});
            return respond(
                StatusCode::BAD_REQUEST,
                "application/json",
                answer.to_string(),
            );
        }
    };
    let mut first_time = Vec::new();
    let answer = {
        let mut log = lock(&shared.log);
        let page = log.search(&cond);
        let mut info = Vec::with_capacity(page.indices.len());
        for &i in &page.indices {
            let Some(entry) = log.get(i).cloned() else {
                continue;
            };
            if let Some(record) = shared.encoder.hikvision_acs_record(&shared.t, &entry) {
                info.push(record);
            }
            if log.mark_delivered(i) {
                first_time.push(entry);
            }
        }
        page.to_json(&cond.search_id, info)
    };
    let mut ledger = lock(&shared.ledger);
    for entry in &first_time {
        ledger.taken(entry, 1);
    }
    drop(ledger);
    respond(StatusCode::OK, "application/json", answer.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamKind {
    Alert,
    Dahua,
}

/// A streaming body fed from a channel.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|part| part.map(|b| Ok(Frame::data(b))))
    }
}

fn stream(shared: Arc<Shared>, kind: StreamKind, heartbeat: Duration) -> Response<ResponseBody> {
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(feed(shared, kind, heartbeat, tx));
    let content_type = match kind {
        StreamKind::Alert => format!("multipart/mixed; boundary={ALERT_STREAM_BOUNDARY}"),
        StreamKind::Dahua => format!("multipart/x-mixed-replace; boundary={DAHUA_BOUNDARY}"),
    };
    let mut response = Response::new(ChannelBody(rx).boxed());
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

/// The part for a record on this stream; `None` when the vendor does not stream it.
fn part(shared: &Shared, kind: StreamKind, entry: &Entry, current: bool) -> Option<Vec<u8>> {
    match kind {
        StreamKind::Alert => Some(alert_stream_part(
            &shared.encoder.hikvision_event(&shared.t, entry, current),
        )),
        StreamKind::Dahua => shared.encoder.dahua_part(entry),
    }
}

fn heartbeat_part(shared: &Shared, kind: StreamKind) -> Vec<u8> {
    match kind {
        StreamKind::Alert => {
            let at_ms = Timestamp::now().as_millisecond();
            let entry = Entry {
                offset_ms: 0,
                at_ms,
                record: Record::Message(Message::Heartbeat {
                    terminal: shared.t.index,
                    at_ms,
                }),
            };
            alert_stream_part(&shared.encoder.hikvision_event(&shared.t, &entry, true))
        }
        StreamKind::Dahua => dahua_heartbeat_part(),
    }
}

/// Writes one part; false when the reader is gone or stalled.
async fn send(tx: &mpsc::Sender<Bytes>, part: Vec<u8>) -> bool {
    matches!(
        timeout(STREAM_STALL, tx.send(Bytes::from(part))).await,
        Ok(Ok(()))
    )
}

/// Feeds one stream: the log replayed, then live records and heartbeats, until the reader
/// goes, stalls, or the simulator stops.
async fn feed(shared: Arc<Shared>, kind: StreamKind, heartbeat: Duration, tx: mpsc::Sender<Bytes>) {
    let mut version = shared.version.clone();
    let (replay, mut cursor) = {
        let log = lock(&shared.log);
        (log.records().len(), log.live().len())
    };
    version.borrow_and_update();
    for i in 0..replay {
        let Some(entry) = lock(&shared.log).get(i).cloned() else {
            break;
        };
        if let Some(bytes) = part(&shared, kind, &entry, false) {
            if !send(&tx, bytes).await {
                return;
            }
            went_out(&shared, i, &entry);
        }
    }
    let start = tokio::time::Instant::now() + heartbeat;
    let mut tick = interval_at(start, heartbeat);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let items: Vec<(LiveItem, Entry)> = {
            let log = lock(&shared.log);
            let live = log.live();
            let items = live[cursor.min(live.len())..]
                .iter()
                .filter_map(|item| {
                    let (LiveItem::New(i) | LiveItem::Resend(i)) = *item;
                    log.get(i).cloned().map(|e| (*item, e))
                })
                .collect();
            cursor = live.len();
            items
        };
        for (item, entry) in items {
            let current = matches!(item, LiveItem::New(_));
            let Some(bytes) = part(&shared, kind, &entry, current) else {
                continue;
            };
            if !send(&tx, bytes).await {
                return;
            }
            match item {
                LiveItem::New(i) => went_out(&shared, i, &entry),
                LiveItem::Resend(_) => {
                    if let Record::Message(Message::Passage(p)) = &entry.record {
                        let resend = Entry {
                            record: Record::Message(Message::Resend(p.clone())),
                            ..entry.clone()
                        };
                        lock(&shared.ledger).taken(&resend, 1);
                    }
                }
            }
        }
        tokio::select! {
            _ = shared.stop.cancelled() => return,
            _ = tx.closed() => return,
            changed = version.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tick.tick() => {
                if !send(&tx, heartbeat_part(&shared, kind)).await {
                    return;
                }
            }
        }
    }
}

/// Record `index` went out on a stream: taken, the first time.
fn went_out(shared: &Shared, index: usize, entry: &Entry) {
    let first = lock(&shared.log).mark_delivered(index);
    if first {
        lock(&shared.ledger).taken(entry, 1);
    }
}
