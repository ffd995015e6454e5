//! The pull clients against a device played on loopback: a hyper server that checks Digest
//! logins with the simulator's [`DigestGuard`] (its own implementation, not the client's),
//! searches a log as `AcsEvent` does (conditions read by the simulator's `parse_cond`), and
//! scripts its streams; between it and the client a TCP relay counts connections, so "never
//! two at a time" is seen from outside the client.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::task::{Context, Poll};

use http_body_util::combinators::BoxBody;
use http_body_util::{Full, Limited};
use hyper::body::{Body, Frame};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::*;
use crate::simulate::http_terminals::device_log::parse_cond;
use crate::simulate::http_terminals::digest::{DigestGuard, Verdict};
use crate::simulate::http_terminals::encode::alert_stream_part;

/// Every async test's bound.
const WAIT: Duration = Duration::from_secs(30);
const PASSWORD: &str = "s3cret";

fn tz() -> TimeZone {
    TimeZone::get("Asia/Shanghai").expect("zone")
}

// ---------------------------------------------------------------------------------------------
// Pure parts.

#[test]
fn the_resume_point_moves_over_answered_records_and_stops_at_the_first_unsafe_one() {
    let mut cursor = Cursor::new(Some(10));
    let stopped = cursor.advance(&[
        (Some(11), Some(Ack::Committed)),
        (Some(12), Some(Ack::NotAPassage)),
        (Some(13), Some(Ack::Refused("malformed"))),
        (Some(14), None),
        (Some(15), Some(Ack::Committed)),
    ]);
    assert!(stopped);
    assert_eq!(cursor.after, Some(13));
    let mut fresh = Cursor::new(None);
    assert!(!fresh.advance(&[
        (Some(7), Some(Ack::Committed)),
        (None, Some(Ack::Committed))
    ]));
    assert_eq!(fresh.after, Some(7));
    assert!(!Cursor::is_new(Some(7), Some(7)));
    assert!(Cursor::is_new(Some(7), Some(8)));
    assert!(Cursor::is_new(Some(7), None));
    assert!(Cursor::is_new(None, Some(1)));
}

#[test]
fn a_first_search_reads_today_only_and_a_later_one_resumes_after_the_serial() {
    let now: Timestamp = "2026-12-07T01:30:00Z".parse().expect("time");
    let (after, window) = Cursor::new(None).search(now, &tz());
    assert_eq!(after, None);
    let (start, end) = window.expect("a window");
    assert_eq!(
        start.to_string(),
        "2026-12-07T00:00:00+08:00[Asia/Shanghai]"
    );
    assert!(end.timestamp() > now);
    let request = String::from_utf8(acs_event_request(&AcsEventQuery {
        search_id: "s".into(),
        position: 0,
        max_results: 30,
        after_serial: None,
        window: Some((start, end)),
    }))
    .expect("utf-8");
    assert!(
        request.contains("\"startTime\":\"2026-12-07T00:00:00+08:00\""),
        "{request}"
    );
    assert_eq!(Cursor::new(Some(41)).search(now, &tz()), (Some(41), None));
}

#[test]
fn a_record_serial_is_read_as_a_number_or_a_numeric_string() {
    assert_eq!(record_serial(br#"{"serialNo": 42}"#), Some(42));
    assert_eq!(record_serial(br#"{"serialNo": " 43"}"#), Some(43));
    assert_eq!(record_serial(br#"{"serialNo": -1}"#), None);
    assert_eq!(record_serial(b"not json"), None);
}

#[test]
fn the_dahua_attach_request_is_a_valid_uri() {
    let target = dahua_attach_target(Duration::from_millis(300));
    assert!(target.ends_with("heartbeat=1"), "{target}");
    assert!(target.contains("codes=[AccessControl]"), "{target}");
    assert!(target.parse::<hyper::Uri>().is_ok());
}

#[test]
fn resume_points_are_the_highest_kept_serial_of_each_pulled_terminal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), "127.0.0.1:9");
    let keys = [
        ("T1", "7"),
        ("T1", "41"),
        ("T1", "t1709601153000"),
        ("T1", "9"),
        ("T2", "99"),
        ("OTHER", "500"),
    ]
    .map(|(t, e)| (t.to_string(), e.to_string()));
    assert_eq!(resume_points(&config, &keys), [Some(41), None]);
    assert_eq!(resume_points(&config, &[]), [None, None]);
}

/// A password file only its owner can read, as the config requires.
fn write_secret(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("password file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// T1 pulled from `address`, T2 on its alert stream.
fn config(dir: &std::path::Path, address: &str) -> Config {
    write_secret(&dir.join("t.pass"), &format!("{PASSWORD}\n"));
    let text = format!(
        r#"
[hall]
id = "h"
district = "d"
time_zone = "Asia/Shanghai"
[uplink]
broker = "mqtt://127.0.0.1:1883"
[[rooms]]
id = "lobby"
capacity = 10
[[terminals]]
id = "T1"
profile = "hikvision-acs"
room = "lobby"
transport = "hikvision_pull"
address = "{address}"
username = "admin"
password_file = "t.pass"
poll_interval_ms = 500
[[terminals]]
id = "T2"
profile = "hikvision-acs"
room = "lobby"
transport = "hikvision_stream"
address = "{address}"
username = "admin"
password_file = "t.pass"
"#
    );
    crate::config::parse(&text, dir, &crate::config::Overrides::default()).expect("valid config")
}

// ---------------------------------------------------------------------------------------------
// The played device.

/// What a stream connection sends.
#[derive(Debug, Clone)]
struct Script {
    parts: Vec<Vec<u8>>,
    /// After the parts: close the stream (`true`) or hold it open saying nothing.
    close: bool,
}

struct Device {
    guard: Mutex<DigestGuard>,
    /// (serial, Unix seconds) of each record in the log.
    log: Vec<(u64, i64)>,
    searches: Mutex<Vec<crate::simulate::http_terminals::device_log::AcsEventCond>>,
    scripts: Vec<Script>,
    streams: AtomicUsize,
    requests: AtomicU64,
    /// Close every connection after one answer.
    close_after_answer: bool,
    /// Forget its nonces between searches (a device restart): the next login is stale.
    forget_nonces: bool,
    /// Answer every search from the start of the log (older firmware).
    ignore_begin_serial: bool,
    /// Stream senders held open by silent scripts.
    held: Mutex<Vec<mpsc::Sender<Bytes>>>,
}

impl Device {
    fn new(log: Vec<(u64, i64)>) -> Self {
        Device {
            guard: Mutex::new(guard()),
            log,
            searches: Mutex::new(Vec::new()),
            scripts: Vec::new(),
            streams: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            close_after_answer: false,
            forget_nonces: false,
            ignore_begin_serial: false,
            held: Mutex::new(Vec::new()),
        }
    }

    fn failed_logins(&self) -> u64 {
        self.guard.lock().expect("guard").failed_logins
    }

    fn searched_after(&self, serial: u64) -> bool {
        self.searches
            .lock()
            .expect("searches")
            .iter()
            .any(|c| c.begin_serial == Some(serial + 1))
    }
}

fn guard() -> DigestGuard {
    DigestGuard::new(
        "DS-K1T671TM-3XF",
        "admin",
        PASSWORD,
        7,
        Duration::from_secs(600),
    )
}

/// `n` records from serial `first`, one a second from `at`.
fn log(first: u64, n: u64, at: Timestamp) -> Vec<(u64, i64)> {
    (0..n)
        .map(|i| (first + i, at.as_second() + i as i64))
        .collect()
}

struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

type Answer = Response<BoxBody<Bytes, Infallible>>;

fn answer(status: u16, content_type: &str, body: impl Into<Bytes>) -> Answer {
    let mut response = Response::new(Full::new(body.into()).boxed());
    *response.status_mut() = StatusCode::from_u16(status).expect("status");
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        content_type.parse().expect("content type"),
    );
    response
}

async fn handle(device: Arc<Device>, request: Request<hyper::body::Incoming>) -> Answer {
    device.requests.fetch_add(1, Ordering::Relaxed);
    let target = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let verdict = device.guard.lock().expect("guard").check(
        request.method().as_str(),
        &target,
        authorization.as_deref(),
        std::time::Instant::now(),
    );
    match verdict {
        Verdict::Allowed => {}
        Verdict::Challenge(c) | Verdict::Failed(c) => {
            let mut refused = answer(401, "application/json", r#"{"statusCode":4}"#);
            refused
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, c.parse().expect("header"));
            return refused;
        }
        Verdict::Locked => {
            return answer(401, "application/json", r#"{"subStatusCode":"userLocked"}"#);
        }
    }
    match request.uri().path() {
        "/ISAPI/AccessControl/AcsEvent" => {
            let body = Limited::new(request.into_body(), 64 * 1024)
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            if device.forget_nonces {
                *device.guard.lock().expect("guard") = guard();
            }
            search(&device, &body)
        }
        "/ISAPI/Event/notification/alertStream" | "/cgi-bin/eventManager.cgi" => {
            let n = device.streams.fetch_add(1, Ordering::Relaxed);
            let Some(script) = device
                .scripts
                .get(n.min(device.scripts.len().saturating_sub(1)))
                .cloned()
            else {
                return answer(404, "text/plain", "no stream");
            };
            let (tx, rx) = mpsc::channel(64);
            for part in script.parts {
                let _ = tx.try_send(Bytes::from(part));
            }
            if !script.close {
                device.held.lock().expect("held").push(tx);
            }
            let content_type = if request.uri().path().starts_with("/ISAPI") {
                "multipart/mixed; boundary=boundary"
            } else {
                "multipart/x-mixed-replace; boundary=myboundary"
            };
            let mut response = Response::new(ChannelBody(rx).boxed());
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, content_type.parse().expect("type"));
            response
        }
        _ => answer(404, "text/plain", "Not Found"),
    }
}

fn search(device: &Device, body: &[u8]) -> Answer {
    let Ok(cond) = parse_cond(body) else {
        return answer(400, "application/json", r#"{"statusCode":6}"#);
    };
    let matching: Vec<&(u64, i64)> = device
        .log
        .iter()
        .filter(|(serial, at)| {
            (device.ignore_begin_serial || cond.begin_serial.is_none_or(|b| *serial >= b))
                && cond.end_serial.is_none_or(|e| *serial <= e)
                && cond.start.is_none_or(|s| *at >= s.as_second())
                && cond.end.is_none_or(|e| *at <= e.as_second())
        })
        .collect();
    let page: Vec<Value> = matching
        .iter()
        .skip(cond.position)
        .take(cond.max_results.clamp(1, 30))
        .map(|(serial, at)| {
            let time = Timestamp::from_second(*at)
                .expect("time")
                .to_zoned(tz())
                .strftime("%Y-%m-%dT%H:%M:%S%:z")
                .to_string();
            json!({"major": 5, "minor": 75, "time": time, "serialNo": serial,
                   "employeeNoString": "1001", "currTemperature": 36.5, "mask": "yes"})
        })
        .collect();
    let status = if matching.is_empty() {
        "NO MATCH"
    } else if cond.position + page.len() < matching.len() {
        "MORE"
    } else {
        "OK"
    };
    let doc = json!({"AcsEvent": {"searchID": cond.search_id, "responseStatusStrg": status,
        "numOfMatches": page.len(), "totalMatches": matching.len(), "InfoList": page}});
    device.searches.lock().expect("searches").push(cond);
    answer(200, "application/json", doc.to_string())
}

/// Connections as the device's side of the wire sees them.
#[derive(Default)]
struct Gate {
    accepted: AtomicU64,
    open: AtomicU64,
    /// A connection accepted while another was still open (after a grace for the old one's
    /// close to arrive).
    overlaps: AtomicU64,
}

/// Serves `device` behind a counting relay; returns the address the client dials.
async fn serve(device: Arc<Device>) -> (String, Arc<Gate>) {
    let server = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server_addr = server.local_addr().expect("addr");
    let keep_alive = !device.close_after_answer;
    tokio::spawn(async move {
        while let Ok((stream, _)) = server.accept().await {
            let device = device.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |r| {
                    let device = device.clone();
                    async move { Ok::<_, Infallible>(handle(device, r).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(keep_alive)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let relay = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let relay_addr = relay.local_addr().expect("addr");
    let gate = Arc::new(Gate::default());
    let g = gate.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = relay.accept().await {
            g.accepted.fetch_add(1, Ordering::Relaxed);
            let grace = tokio::time::Instant::now() + Duration::from_secs(2);
            while g.open.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < grace {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if g.open.load(Ordering::Relaxed) > 0 {
                g.overlaps.fetch_add(1, Ordering::Relaxed);
            }
            g.open.fetch_add(1, Ordering::Relaxed);
            let Ok(upstream) = TcpStream::connect(server_addr).await else {
                g.open.fetch_sub(1, Ordering::Relaxed);
                continue;
            };
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = upstream.into_split();
            let g2 = g.clone();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut cr, &mut sw).await;
                g2.open.fetch_sub(1, Ordering::Relaxed);
                let _ = sw.shutdown().await;
            });
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
                let _ = cw.shutdown().await;
            });
        }
    });
    (relay_addr.to_string(), gate)
}

/// What the test ingest got: each document, and whether it was answered.
type Got = Arc<Mutex<Vec<(Value, bool)>>>;

/// An ingest that answers each record by `policy` (`None`: the receipt is dropped, as when
/// the gateway stops before the commit) and keeps what it got.
fn ingest(policy: impl Fn(&Value) -> Option<Ack> + Send + 'static) -> (TerminalIngest, Got) {
    let (tx, mut rx) = mpsc::channel::<Incoming>(16);
    let got = Arc::new(Mutex::new(Vec::new()));
    let kept = got.clone();
    tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let doc: Value = serde_json::from_slice(&m.payload).unwrap_or(Value::Null);
            let ack = policy(&doc);
            kept.lock().expect("got").push((doc, ack.is_some()));
            if let (Some(sender), Some(ack)) = (m.ack, ack) {
                let _ = sender.send(ack);
            }
        }
    });
    (TerminalIngest { tx }, got)
}

fn serial_of(doc: &Value) -> Option<u64> {
    doc.get("serialNo")
        .or_else(|| doc.pointer("/AccessControllerEvent/serialNo"))
        .and_then(Value::as_u64)
        .or_else(|| doc.get("RecNo").and_then(Value::as_u64))
}

fn serials(got: &Mutex<Vec<(Value, bool)>>, committed_only: bool) -> Vec<u64> {
    got.lock()
        .expect("got")
        .iter()
        .filter(|(_, acked)| *acked || !committed_only)
        .filter_map(|(d, _)| serial_of(d))
        .collect()
}

fn stats() -> Arc<TerminalsStats> {
    Arc::new(TerminalsStats {
        terminals: vec![TerminalStats::default()],
        ..TerminalsStats::default()
    })
}

fn settings() -> PullSettings {
    PullSettings {
        max_payload_bytes: 64 * 1024,
        timeouts: Timeouts {
            connect: Duration::from_secs(5),
            response: Duration::from_secs(5),
        },
        hikvision_heartbeat: Duration::from_millis(100),
        dahua_heartbeat: Duration::from_secs(1),
        backoff_first: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        time_zone: tz(),
    }
}

fn start(
    address: &str,
    password: &str,
    ingest: TerminalIngest,
    stats: &Arc<TerminalsStats>,
    kind: Kind,
) -> (JoinHandle<()>, CancellationToken) {
    let shutdown = CancellationToken::new();
    let driver = Driver::new(
        0,
        "T1".into(),
        DeviceClient::new(address, "admin", password, settings().timeouts),
        ingest,
        stats.clone(),
        settings(),
    );
    (tokio::spawn(driver.run(kind, shutdown.clone())), shutdown)
}

async fn until(what: impl Fn() -> bool) {
    while !what() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn pull(after: Option<u64>) -> Kind {
    Kind::AcsEvent {
        interval: Duration::from_millis(50),
        cursor: Cursor::new(after),
    }
}

// ---------------------------------------------------------------------------------------------
// Against the device.

async fn ninety_five_records_in_pages(close_after_answer: bool) {
    let now = Timestamp::now();
    let yesterday = now - jiff::SignedDuration::from_hours(30);
    // Five records of an earlier day, then 95 of today.
    let mut records = log(1, 5, yesterday);
    records.extend(log(6, 95, now - jiff::SignedDuration::from_secs(200)));
    let mut device = Device::new(records);
    device.close_after_answer = close_after_answer;
    let device = Arc::new(device);
    let (address, gate) = serve(device.clone()).await;
    let (ingest, got) = ingest(|_| Some(Ack::Committed));
    let stats = stats();
    let (task, shutdown) = start(&address, PASSWORD, ingest, &stats, pull(None));
    until(|| device.searched_after(100)).await;
    shutdown.cancel();
    task.await.expect("driver");

    assert_eq!(serials(&got, false), (6..=100).collect::<Vec<_>>());
    let searches = device.searches.lock().expect("searches").clone();
    let first: Vec<(usize, usize)> = searches
        .iter()
        .filter(|c| c.begin_serial.is_none())
        .map(|c| (c.position, c.max_results))
        .collect();
    assert_eq!(first, [(0, 30), (30, 30), (60, 30), (90, 30)]);
    assert!(
        searches
            .iter()
            .filter(|c| c.begin_serial.is_none())
            .all(|c| c.start.is_some())
    );
    assert_eq!(gate.overlaps.load(Ordering::Relaxed), 0);
    assert_eq!(device.failed_logins(), 0);
    let snap = stats.terminals[0].snapshot();
    assert!(snap.last_seen_ms > 0);
    assert!(!snap.login_refused);
}

#[tokio::test]
async fn ninety_five_records_are_read_in_pages_of_thirty_and_handed_over_once_each() {
    timeout(WAIT, ninety_five_records_in_pages(false))
        .await
        .expect("in time");
}

#[tokio::test]
async fn a_device_that_closes_each_connection_is_read_with_one_connection_at_a_time() {
    timeout(WAIT, ninety_five_records_in_pages(true))
        .await
        .expect("in time");
}

#[tokio::test]
async fn a_restart_resumes_after_the_last_committed_serial_with_nothing_missed_or_twice() {
    timeout(WAIT, async {
        let device = Arc::new(Device::new(log(1, 95, Timestamp::now())));
        let (address, gate) = serve(device.clone()).await;
        // The first run's gateway commits up to serial 40, then stops committing (a power
        // cut between receiving and committing).
        let (ingest_a, got_a) =
            ingest(|d| (serial_of(d).unwrap_or(0) <= 40).then_some(Ack::Committed));
        let stats = stats();
        let (task, shutdown) = start(&address, PASSWORD, ingest_a, &stats, pull(None));
        let resumed = || -> Vec<Option<u64>> {
            let searches = device.searches.lock().expect("searches");
            searches
                .iter()
                .map(|c| c.begin_serial)
                .filter(Option::is_some)
                .collect()
        };
        // Two polls after the first: each must start again at the first unsafe record.
        until(|| resumed().len() >= 2).await;
        shutdown.cancel();
        task.await.expect("driver");
        assert!(
            resumed().iter().all(|b| *b == Some(41)),
            "the resume point passed an unsafe record: {:?}",
            resumed()
        );

        let committed_a = serials(&got_a, true);
        assert_eq!(committed_a, (1..=40).collect::<Vec<_>>());
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config(dir.path(), &address);
        let kept: Vec<(String, String)> = committed_a
            .iter()
            .map(|s| ("T1".to_string(), s.to_string()))
            .collect();
        let resume = resume_points(&config, &kept);
        assert_eq!(resume[0], Some(40));

        let (ingest_b, got_b) = ingest(|_| Some(Ack::Committed));
        let (task, shutdown) = start(&address, PASSWORD, ingest_b, &stats, pull(resume[0]));
        until(|| device.searched_after(95)).await;
        shutdown.cancel();
        task.await.expect("driver");
        let committed_b = serials(&got_b, true);
        assert_eq!(committed_b, (41..=95).collect::<Vec<_>>());
        let mut all = committed_a;
        all.extend(committed_b);
        assert_eq!(all, (1..=95).collect::<Vec<_>>());
        assert_eq!(gate.overlaps.load(Ordering::Relaxed), 0);
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn two_refused_logins_stop_the_client_before_a_third_attempt() {
    timeout(WAIT, async {
        let device = Arc::new(Device::new(log(1, 3, Timestamp::now())));
        let (address, gate) = serve(device.clone()).await;
        let (ingest, got) = ingest(|_| Some(Ack::Committed));
        let stats = stats();
        let (task, _shutdown) = start(&address, "wrong", ingest, &stats, pull(None));
        // It stops by itself: nothing is left running that could try again.
        task.await.expect("driver");
        assert_eq!(device.failed_logins(), 2);
        // One unauthenticated request to get the challenge, two answers refused.
        assert_eq!(device.requests.load(Ordering::Relaxed), 3);
        assert!(got.lock().expect("got").is_empty());
        let snap = stats.terminals[0].snapshot();
        assert!(snap.login_refused);
        assert_eq!(snap.link_errors.get("login_refused"), Some(&1));
        assert_eq!(gate.overlaps.load(Ordering::Relaxed), 0);
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn a_device_that_forgets_its_nonces_is_answered_again_without_a_failed_login() {
    timeout(WAIT, async {
        let mut device = Device::new(log(1, 3, Timestamp::now()));
        device.forget_nonces = true;
        let device = Arc::new(device);
        let (address, _gate) = serve(device.clone()).await;
        let (ingest, got) = ingest(|_| Some(Ack::Committed));
        let stats = stats();
        let (task, shutdown) = start(&address, PASSWORD, ingest, &stats, pull(None));
        until(|| device.searches.lock().expect("searches").len() >= 5).await;
        shutdown.cancel();
        task.await.expect("driver");
        assert_eq!(device.failed_logins(), 0);
        assert!(!stats.terminals[0].snapshot().login_refused);
        assert_eq!(serials(&got, false), [1, 2, 3]);
    })
    .await
    .expect("in time");
}

fn alert_part(serial: u64) -> Vec<u8> {
    alert_stream_part(&json!({
        "ipAddress": "192.168.50.31",
        "dateTime": Timestamp::now().to_zoned(tz()).strftime("%Y-%m-%dT%H:%M:%S%:z").to_string(),
        "eventType": "AccessControllerEvent",
        "AccessControllerEvent": {"majorEventType": 5, "subEventType": 75, "serialNo": serial,
            "currentEvent": serial > 1}
    }))
}

#[tokio::test]
async fn an_alert_stream_that_goes_silent_is_reconnected() {
    timeout(WAIT, async {
        let mut device = Device::new(Vec::new());
        device.scripts = vec![
            Script {
                parts: vec![alert_part(1)],
                close: false,
            },
            Script {
                parts: vec![alert_part(2)],
                close: false,
            },
        ];
        let device = Arc::new(device);
        let (address, gate) = serve(device.clone()).await;
        let (ingest, got) = ingest(|_| None);
        let stats = stats();
        let (task, shutdown) = start(&address, PASSWORD, ingest, &stats, Kind::AlertStream);
        until(|| serials(&got, false).contains(&2)).await;
        shutdown.cancel();
        task.await.expect("driver");
        assert_eq!(&serials(&got, false)[..2], [1, 2]);
        assert!(device.streams.load(Ordering::Relaxed) >= 2);
        let snap = stats.terminals[0].snapshot();
        assert!(
            snap.link_errors
                .get("stream_silent")
                .is_some_and(|n| *n >= 1),
            "{snap:?}"
        );
        assert_eq!(gate.overlaps.load(Ordering::Relaxed), 0);
    })
    .await
    .expect("in time");
}

fn dahua_part(rec_no: u64) -> Vec<u8> {
    let body = format!(
        "Code=AccessControl;action=Pulse;index=0;data={}\r\n",
        json!({"UserID": "1001", "Status": 1, "Method": 15, "RecNo": rec_no, "UTC": 1_765_000_000})
    );
    format!(
        "--myboundary\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn a_dahua_stream_closed_after_every_event_is_reopened_one_connection_at_a_time() {
    timeout(WAIT, async {
        let mut device = Device::new(Vec::new());
        device.scripts = (1..=6)
            .map(|n| Script { parts: vec![dahua_part(n), b"--myboundary\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nHeartbeat\r\n".to_vec()], close: true })
            .collect();
        let device = Arc::new(device);
        let (address, gate) = serve(device.clone()).await;
        let (ingest, got) = ingest(|_| None);
        let stats = stats();
        let (task, shutdown) = start(&address, PASSWORD, ingest, &stats, Kind::Dahua);
        until(|| serials(&got, false).contains(&6)).await;
        shutdown.cancel();
        task.await.expect("driver");
        assert_eq!(&serials(&got, false)[..6], [1, 2, 3, 4, 5, 6]);
        assert_eq!(gate.overlaps.load(Ordering::Relaxed), 0);
        assert!(gate.accepted.load(Ordering::Relaxed) >= 6);
        assert_eq!(device.failed_logins(), 0);
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn a_searched_record_and_a_streamed_event_decode_to_a_passage_keyed_by_its_serial() {
    // The resume point after a restart is read from the passage keys: they must be the
    // serials, for records searched and streamed alike.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(dir.path(), "127.0.0.1:9");
    config.terminals[0].profile = "hikvision-isapi".into();
    config.terminals[1].profile = "hikvision-isapi".into();
    let now = Timestamp::now();
    let device = Device::new(log(41, 1, now));
    let cond = br#"{"AcsEventCond":{"searchID":"s","searchResultPosition":0,"maxResults":30}}"#;
    let response = search(&device, cond);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let page = acs_event_page(&body).expect("a page");
    let (tx, _rx) = mpsc::channel(4);
    let mut ingest = super::super::Ingest::new(&config, stats_for(2), tx, None);
    let searched = ingest.handle(
        &Route::Terminal(0),
        page.records[0].clone(),
        None,
        None,
        now,
    );
    let Ok(Some(crate::devices::DeviceEvent::Passage { key, .. })) = searched else {
        panic!("a searched record is a passage: {searched:?}");
    };
    assert_eq!(key.event, "41");

    let part = alert_part(42);
    let mut stream =
        AlertStream::new("multipart/mixed; boundary=boundary", 64 * 1024, 64 * 1024).expect("type");
    let mut items = stream.push(&part).expect("parts");
    items.extend(stream.finish());
    let envelope = items.remove(0).expect("an event");
    let streamed = ingest.handle(&Route::Terminal(1), envelope.document, None, None, now);
    let Ok(Some(crate::devices::DeviceEvent::Passage { key, .. })) = streamed else {
        panic!("a streamed event is a passage: {streamed:?}");
    };
    assert_eq!(key.event, "42");
}

fn stats_for(n: usize) -> Arc<TerminalsStats> {
    Arc::new(TerminalsStats {
        terminals: (0..n).map(|_| TerminalStats::default()).collect(),
        ..TerminalsStats::default()
    })
}

#[tokio::test]
async fn a_device_that_ignores_the_begin_serial_does_not_get_its_log_handed_over_again() {
    timeout(WAIT, async {
        let mut device = Device::new(log(1, 10, Timestamp::now()));
        device.ignore_begin_serial = true;
        let device = Arc::new(device);
        let (address, _gate) = serve(device.clone()).await;
        let (ingest, got) = ingest(|_| Some(Ack::Committed));
        let stats = stats();
        let (task, shutdown) = start(&address, PASSWORD, ingest, &stats, pull(None));
        until(|| {
            let searches = device.searches.lock().expect("searches");
            searches
                .iter()
                .filter(|c| c.begin_serial == Some(11))
                .count()
                >= 3
        })
        .await;
        shutdown.cancel();
        task.await.expect("driver");
        assert_eq!(serials(&got, false), (1..=10).collect::<Vec<_>>());
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn a_device_that_never_answers_is_timed_out_counted_and_tried_again() {
    timeout(WAIT, async {
        // Takes the request and says nothing; counts connections (the relay-free server
        // cannot tell overlap from a close still in flight, so the gate's tests judge that).
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr").to_string();
        let open = Arc::new(AtomicU64::new(0));
        let accepted = Arc::new(AtomicU64::new(0));
        let (o, a) = (open.clone(), accepted.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::Relaxed);
                o.fetch_add(1, Ordering::Relaxed);
                let o = o.clone();
                tokio::spawn(async move {
                    let mut sink = tokio::io::sink();
                    let _ = tokio::io::copy(&mut stream, &mut sink).await;
                    o.fetch_sub(1, Ordering::Relaxed);
                });
            }
        });
        let (ingest, _got) = ingest(|_| Some(Ack::Committed));
        let stats = stats();
        let shutdown = CancellationToken::new();
        let mut quick = settings();
        quick.timeouts.response = Duration::from_millis(200);
        let driver = Driver::new(
            0,
            "T1".into(),
            DeviceClient::new(&address, "admin", PASSWORD, quick.timeouts),
            ingest,
            stats.clone(),
            quick,
        );
        let task = tokio::spawn(driver.run(pull(None), shutdown.clone()));
        until(|| {
            stats.terminals[0]
                .snapshot()
                .link_errors
                .get("timeout")
                .is_some_and(|n| *n >= 3)
        })
        .await;
        shutdown.cancel();
        task.await.expect("driver");
        assert!(accepted.load(Ordering::Relaxed) >= 3);
        // Stopped, it leaves no connection behind.
        until(|| open.load(Ordering::Relaxed) == 0).await;
        assert!(!stats.terminals[0].snapshot().login_refused);
    })
    .await
    .expect("in time");
}
