//! Pull clients: the gateway connects to terminals that cannot push to it (or whose push
//! slots another platform holds) and reads their events itself.
//!
//! ```text
//! config.terminals[i].transport
//!   HikvisionPull   every interval: POST /ISAPI/AccessControl/AcsEvent?format=json, pages
//!                   of ≤ 30 after the last serial kept ─► one Incoming per record, acked
//!   HikvisionStream GET /ISAPI/Event/notification/alertStream (multipart/mixed, forever)
//!   DahuaStream     GET /cgi-bin/eventManager.cgi?action=attach&codes=[AccessControl]
//!        │  (one DeviceClient each: one connection, Digest login)
//!        ▼
//! wire::{hikvision, dahua, multipart}  bytes ─► one JSON document per record
//!        ▼
//! TerminalIngest::deliver(Incoming { route: Route::Terminal(i), … })
//! ```
//!
//! **Resuming** (AcsEvent): the resume point is the highest serial whose record the ingest
//! answered (committed, not a passage, or refused); a record it could not make safe stops the
//! page there, and the next poll reads it again. After a restart the point is the highest
//! serial among the passage keys the outbox kept ([`resume_points`]) — the terminal's log is
//! the cumulative total a power cut cannot lose. With none, the first search reads today only,
//! so a new install does not replay months of log as today's passages.
//!
//! **Streams** are read until the device closes them or says nothing (not even a heartbeat)
//! for three heartbeat gaps; then they are reopened. A stream replays the device's stored log
//! first (`currentEvent: false`): those records go through the same dedup in the core.
//!
//! **Connections**: one per device at a time, reopened with capped, jittered backoff.
//! **Lock-out**: after two refused logins in a row the driver stops for good (one ERROR line,
//! [`TerminalStats::login_refused`] for the status page and alerts) — the device would lock
//! the account after a few more.

pub mod digest;
pub mod http;

#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Bytes;
use hyper::{Method, StatusCode, header};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};
use rand::Rng;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

use self::http::{CallError, DeviceClient, Timeouts, read_body};
use super::{Ack, Incoming, Route, TerminalIngest, TerminalStats, TerminalsStats};
use crate::config::Config;
use crate::config::terminals::TerminalTransport;
use crate::devices::backoff::Backoff;
use crate::terminals::wire::dahua::{self, AttachEvent};
use crate::terminals::wire::hikvision::{
    AcsEventQuery, AlertStream, MAX_RESULTS_PER_PAGE, acs_event_page, acs_event_request,
};
use crate::terminals::wire::multipart::PartStream;
use crate::terminals::wire::{VendorRecord, WireError};

/// The search of a Hikvision event log.
pub const ACS_EVENT_TARGET: &str = "/ISAPI/AccessControl/AcsEvent?format=json";
/// A Hikvision terminal's event stream.
pub const ALERT_STREAM_TARGET: &str = "/ISAPI/Event/notification/alertStream";
/// Boundaries the vendors use when a stream's `Content-Type` names none.
const ALERT_STREAM_DEFAULT_TYPE: &str = "multipart/mixed; boundary=boundary";
const DAHUA_DEFAULT_BOUNDARY: &str = "myboundary";
/// Pages read in one poll at most (3000 records); the next poll goes on from there.
const MAX_PAGES_PER_POLL: usize = 100;
/// A page's body may be this large even when the per-record bound is set lower: 30 records
/// of a few hundred bytes each, with room to spare.
const MIN_PAGE_BYTES: usize = 256 * 1024;
/// A stream is dead after this many heartbeat gaps without a byte.
const SILENT_GAPS: u32 = 3;

/// How the pull clients behave; from the config, shorter in tests.
#[derive(Debug, Clone)]
pub struct PullSettings {
    /// A record, a stream part (a picture too) and — at least [`MIN_PAGE_BYTES`] — a page.
    pub max_payload_bytes: usize,
    pub timeouts: Timeouts,
    /// How often a Hikvision alertStream says it is alive.
    pub hikvision_heartbeat: Duration,
    /// The `heartbeat=` asked of a Dahua attach stream.
    pub dahua_heartbeat: Duration,
    pub backoff_first: Duration,
    pub backoff_max: Duration,
    /// Where "today" is, for a first search without a serial.
    pub time_zone: TimeZone,
}

impl PullSettings {
    pub fn from_config(config: &Config) -> Self {
        PullSettings {
            max_payload_bytes: config.terminal_rules.decode.max_payload_bytes,
            timeouts: Timeouts::default(),
            hikvision_heartbeat: Duration::from_secs(10),
            dahua_heartbeat: Duration::from_secs(5),
            backoff_first: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            time_zone: config.hall.time_zone.clone(),
        }
    }
}

/// For each terminal (config order), where its event log is read from after a restart: the
/// highest numeric event key (a Hikvision `serialNo`) among the kept passage keys. `None` for
/// terminals that are not `hikvision_pull` or have no key yet.
pub fn resume_points(config: &Config, passage_keys: &[(String, String)]) -> Vec<Option<u64>> {
    config
        .terminals
        .iter()
        .map(|t| {
            if !matches!(t.transport, TerminalTransport::HikvisionPull { .. }) {
                return None;
            }
            passage_keys
                .iter()
                .filter(|(terminal, _)| terminal.as_str() == t.id.as_str())
                .filter_map(|(_, event)| event.parse::<u64>().ok())
                .max()
        })
        .collect()
}

/// Starts one driver per pulled terminal; each runs until `shutdown`, or stops by itself
/// when the device refuses its login.
pub fn spawn(
    config: &Config,
    ingest: &TerminalIngest,
    stats: &Arc<TerminalsStats>,
    resume: &[Option<u64>],
    shutdown: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let settings = PullSettings::from_config(config);
    let mut tasks = Vec::new();
    for (index, t) in config.terminals.iter().enumerate() {
        let (address, kind) = match &t.transport {
            TerminalTransport::HikvisionPull { address, interval } => (
                address,
                Kind::AcsEvent {
                    interval: *interval,
                    cursor: Cursor::new(resume.get(index).copied().flatten()),
                },
            ),
            TerminalTransport::HikvisionStream { address } => (address, Kind::AlertStream),
            TerminalTransport::DahuaStream { address } => (address, Kind::Dahua),
            TerminalTransport::Mqtt | TerminalTransport::HttpPush { .. } => continue,
        };
        let Some((user, secret)) = &t.login else {
            tracing::error!(terminal = %t.id, "a pulled terminal has no login; it is not read");
            continue;
        };
        if let Kind::AcsEvent { cursor, .. } = &kind {
            tracing::info!(terminal = %t.id, %address, resume_after_serial = ?cursor.after, "reading the terminal's event log");
        } else {
            tracing::info!(terminal = %t.id, %address, "holding the terminal's event stream open");
        }
        let driver = Driver::new(
            index,
            t.id.to_string(),
            DeviceClient::new(address, user, secret.expose(), settings.timeouts),
            ingest.clone(),
            stats.clone(),
            settings.clone(),
        );
        tasks.push(tokio::spawn(driver.run(kind, shutdown.clone())));
    }
    tasks
}

/// What a driver reads.
#[derive(Debug, Clone)]
pub enum Kind {
    AcsEvent { interval: Duration, cursor: Cursor },
    AlertStream,
    Dahua,
}

/// Where an event-log search resumes, and how large its pages are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The highest serial answered by the ingest; `None` before the first.
    pub after: Option<u64>,
    /// Records asked per page (halved when a page is over the bound).
    pub page_size: u32,
}

impl Cursor {
    pub fn new(after: Option<u64>) -> Self {
        Cursor {
            after,
            page_size: MAX_RESULTS_PER_PAGE,
        }
    }

    /// A poll's search: after the serial, or — with none yet — today in the hall's zone.
    pub fn search(&self, now: Timestamp, tz: &TimeZone) -> (Option<u64>, Option<(Zoned, Zoned)>) {
        match self.after {
            Some(serial) => (Some(serial), None),
            None => (None, today(now, tz)),
        }
    }

    /// Whether a record with this serial is still to be handed over in a search that began
    /// after `searched_after` (a device that ignores `beginSerialNo` must not make the
    /// gateway re-deliver its whole log every poll).
    pub fn is_new(searched_after: Option<u64>, serial: Option<u64>) -> bool {
        match (serial, searched_after) {
            (Some(s), Some(after)) => s > after,
            _ => true,
        }
    }

    /// After the ingest's answers to a page's records (in order): the resume point moves
    /// over each answered record and stops at the first unanswered one. Returns whether it
    /// stopped there.
    pub fn advance(&mut self, answers: &[(Option<u64>, Option<Ack>)]) -> bool {
        for (serial, ack) in answers {
            if ack.is_none() {
                return true;
            }
            if let Some(s) = serial {
                self.after = Some(self.after.map_or(*s, |a| a.max(*s)));
            }
        }
        false
    }

    fn shrink(&mut self) {
        self.page_size = (self.page_size / 2).max(1);
    }
}

/// Today, midnight to the end of tomorrow (a device clock a little ahead is still read), in
/// the hall's zone.
pub fn today(now: Timestamp, tz: &TimeZone) -> Option<(Zoned, Zoned)> {
    let start = now.to_zoned(tz.clone()).start_of_day().ok()?;
    let end = start
        .checked_add(jiff::Span::new().hours(47).minutes(59).seconds(59))
        .ok()?;
    Some((start, end))
}

/// A searched record's `serialNo` (a number or a numeric string).
pub fn record_serial(document: &[u8]) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_slice(document).ok()?;
    match value.get("serialNo")? {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Why a poll or a stream ended early.
#[derive(Debug)]
enum Stop {
    /// Two refused logins: stop for good.
    LoginRefused,
    /// The gateway is stopping.
    IngestClosed,
    /// The connection (or what came over it) failed: count, log once, back off, retry.
    Trouble {
        reason: &'static str,
        detail: String,
        /// A connection trouble (`link_errors`), or bad data from the device (`rejected`).
        link: bool,
    },
}

impl From<CallError> for Stop {
    fn from(error: CallError) -> Self {
        match error {
            CallError::LoginRefused => Stop::LoginRefused,
            other => Stop::Trouble {
                reason: other.label(),
                detail: other.to_string(),
                link: true,
            },
        }
    }
}

impl Stop {
    fn link(reason: &'static str, detail: impl Into<String>) -> Self {
        Stop::Trouble {
            reason,
            detail: detail.into(),
            link: true,
        }
    }
}

/// One pulled terminal's driver.
pub struct Driver {
    index: usize,
    id: String,
    client: DeviceClient,
    ingest: TerminalIngest,
    stats: Arc<TerminalsStats>,
    settings: PullSettings,
    backoff: Backoff,
    /// Reasons already logged for this terminal: one WARN each, then only counts.
    warned: HashSet<&'static str>,
    /// The last attempt failed (so a success is worth a line).
    failing: bool,
}

impl Driver {
    pub fn new(
        index: usize,
        id: String,
        client: DeviceClient,
        ingest: TerminalIngest,
        stats: Arc<TerminalsStats>,
        settings: PullSettings,
    ) -> Self {
        Driver {
            index,
            id,
            client,
            ingest,
            stats,
            backoff: Backoff::jittered(settings.backoff_first, settings.backoff_max),
            settings,
            warned: HashSet::new(),
            failing: false,
        }
    }

    /// Reads the terminal until `shutdown`, or until it refuses the login.
    pub async fn run(mut self, kind: Kind, shutdown: CancellationToken) {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            () = self.work(kind) => {}
        }
        self.client.close().await;
    }

    fn stats(&self) -> &TerminalStats {
        &self.stats.terminals[self.index]
    }

    async fn work(&mut self, mut kind: Kind) {
        loop {
            let result = match &mut kind {
                Kind::AcsEvent { interval, cursor } => {
                    let interval = *interval;
                    self.poll(cursor).await.map(|()| Some(interval))
                }
                Kind::AlertStream => self.stream(Vendor::Hikvision).await.map(|()| None),
                Kind::Dahua => self.stream(Vendor::Dahua).await.map(|()| None),
            };
            let wait = match result {
                Ok(Some(interval)) => {
                    self.answered();
                    self.backoff.reset();
                    interval
                }
                Ok(None) => self.backoff.next_wait(),
                Err(Stop::LoginRefused) => {
                    self.login_refused();
                    return;
                }
                Err(Stop::IngestClosed) => return,
                Err(Stop::Trouble {
                    reason,
                    detail,
                    link,
                }) => {
                    self.trouble(reason, &detail, link);
                    self.failing = true;
                    self.client.close().await;
                    self.backoff.next_wait()
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    fn answered(&mut self) {
        if std::mem::take(&mut self.failing) {
            tracing::info!(terminal = %self.id, "the terminal answers again");
        }
    }

    fn seen(&self) {
        let now = Timestamp::now().as_millisecond().max(0) as u64;
        self.stats().last_seen_ms.store(now, Ordering::Relaxed);
    }

    fn trouble(&mut self, reason: &'static str, detail: &str, link: bool) {
        if link {
            self.stats().link_error(reason);
        } else {
            self.stats().reject(reason);
        }
        if self.warned.insert(reason) {
            tracing::warn!(
                terminal = %self.id,
                reason,
                detail,
                "reading a pulled terminal failed; retrying with backoff, and further failures like it are only counted"
            );
        }
    }

    fn login_refused(&self) {
        let stats = self.stats();
        stats.login_refused.store(true, Ordering::Relaxed);
        stats.link_error("login_refused");
        tracing::error!(
            terminal = %self.id,
            refused = http::FAILED_LOGINS_BEFORE_STOP,
            "the terminal refused the gateway's login; its pull client stopped so the device does not lock the account; fix the password and reload"
        );
    }

    async fn hand_over(&self, message: Incoming) -> Result<(), Stop> {
        self.ingest
            .deliver(message)
            .await
            .map_err(|_| Stop::IngestClosed)
    }

    // -----------------------------------------------------------------------------------------
    // Hikvision AcsEvent.

    /// One poll: pages of the search until the device says there are no more, a record is
    /// not made safe, or [`MAX_PAGES_PER_POLL`].
    async fn poll(&mut self, cursor: &mut Cursor) -> Result<(), Stop> {
        let search_id = search_id();
        let (after_serial, window) = cursor.search(Timestamp::now(), &self.settings.time_zone);
        let page_bound = self.settings.max_payload_bytes.max(MIN_PAGE_BYTES);
        let mut position: u32 = 0;
        for _ in 0..MAX_PAGES_PER_POLL {
            let query = AcsEventQuery {
                search_id: search_id.clone(),
                position,
                max_results: cursor.page_size,
                after_serial,
                window: window.clone(),
            };
            let body = Bytes::from(acs_event_request(&query));
            let response = self
                .client
                .call(
                    Method::POST,
                    ACS_EVENT_TARGET,
                    Some(("application/json", body)),
                )
                .await?;
            let status = response.status();
            if status != StatusCode::OK {
                let _ = read_body(response, MIN_PAGE_BYTES, self.settings.timeouts.response).await;
                return Err(CallError::Status(status.as_u16()).into());
            }
            let bytes = match read_body(response, page_bound, self.settings.timeouts.response).await
            {
                Ok(bytes) => bytes,
                Err(CallError::TooLarge(max)) => {
                    cursor.shrink();
                    return Err(Stop::Trouble {
                        reason: "page_too_large",
                        detail: format!(
                            "a page was over {max} bytes; asking for {} records a page",
                            cursor.page_size
                        ),
                        link: false,
                    });
                }
                Err(other) => return Err(other.into()),
            };
            self.seen();
            let page = acs_event_page(&bytes).map_err(|e| Stop::Trouble {
                reason: e.as_str(),
                detail: format!("an AcsEvent page is unreadable: {e}"),
                link: false,
            })?;
            for _ in 0..page.skipped {
                self.trouble(
                    "record_not_an_object",
                    "an AcsEvent record is not a JSON object",
                    false,
                );
            }
            let count = page.records.len();
            let answers = self.deliver_records(after_serial, page.records).await?;
            if cursor.advance(&answers) {
                tracing::debug!(terminal = %self.id, after = ?cursor.after, "a record was not committed; the next poll reads it again");
                return Ok(());
            }
            if !page.more || count == 0 {
                return Ok(());
            }
            position = position.saturating_add(u32::try_from(count).unwrap_or(u32::MAX));
        }
        Ok(())
    }

    /// Hands a page's new records to the ingest all at once (one commit can take them all),
    /// oldest serial first (the resume point moves in that order), then collects the
    /// answers in that order.
    async fn deliver_records(
        &self,
        searched_after: Option<u64>,
        records: Vec<Vec<u8>>,
    ) -> Result<Vec<(Option<u64>, Option<Ack>)>, Stop> {
        let mut records: Vec<(Option<u64>, Vec<u8>)> = records
            .into_iter()
            .map(|d| (record_serial(&d), d))
            .filter(|(serial, _)| Cursor::is_new(searched_after, *serial))
            .collect();
        // Devices answer oldest first; should one not, the order here still is.
        records.sort_by_key(|(serial, _)| *serial);
        let mut waiting = Vec::with_capacity(records.len());
        for (serial, document) in records {
            let (tx, rx) = oneshot::channel();
            self.hand_over(Incoming {
                route: Route::Terminal(self.index),
                payload: document,
                picture: None,
                ack: Some(tx),
            })
            .await?;
            waiting.push((serial, rx));
        }
        let mut answers = Vec::with_capacity(waiting.len());
        for (serial, rx) in waiting {
            answers.push((serial, rx.await.ok()));
        }
        Ok(answers)
    }

    // -----------------------------------------------------------------------------------------
    // Streams.

    /// One stream connection, read until it ends or goes silent. `Ok` never: a stream that
    /// ended is a trouble to count and back off from (the backoff was reset if it had lived
    /// through a few heartbeats).
    async fn stream(&mut self, vendor: Vendor) -> Result<(), Stop> {
        let heartbeat = match vendor {
            Vendor::Hikvision => self.settings.hikvision_heartbeat,
            Vendor::Dahua => self.settings.dahua_heartbeat,
        };
        let target = match vendor {
            Vendor::Hikvision => ALERT_STREAM_TARGET.to_string(),
            Vendor::Dahua => dahua_attach_target(heartbeat),
        };
        let silence = heartbeat * SILENT_GAPS;
        let response = self.client.call(Method::GET, &target, None).await?;
        let status = response.status();
        if status != StatusCode::OK {
            let _ = read_body(response, MIN_PAGE_BYTES, self.settings.timeouts.response).await;
            return Err(CallError::Status(status.as_u16()).into());
        }
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let max = self.settings.max_payload_bytes;
        let mut reader = StreamReader::new(vendor, &content_type, max);
        self.seen();
        self.answered();
        let opened = Instant::now();
        let mut body = response.into_body();
        loop {
            if opened.elapsed() > silence {
                // Alive through several heartbeat gaps: a later failure starts over.
                self.backoff.reset();
            }
            let frame = match timeout(silence, body.frame()).await {
                Err(_) => {
                    return Err(Stop::link(
                        "stream_silent",
                        format!("no byte for {} ms; reconnecting", silence.as_millis()),
                    ));
                }
                Ok(None) => {
                    for item in reader.finish() {
                        self.take(item).await?;
                    }
                    return Err(Stop::link("stream_closed", "the device closed the stream"));
                }
                Ok(Some(Err(error))) => return Err(CallError::Http(error).into()),
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            self.seen();
            for item in reader.push(&data) {
                self.take(item).await?;
            }
        }
    }

    async fn take(&mut self, item: Result<StreamItem, WireError>) -> Result<(), Stop> {
        match item {
            Ok(StreamItem::Document(envelope)) => {
                if envelope.picture_dropped.is_some() {
                    self.stats().bad_snapshots.fetch_add(1, Ordering::Relaxed);
                }
                self.hand_over(Incoming {
                    route: Route::Terminal(self.index),
                    payload: envelope.document,
                    picture: envelope.picture,
                    ack: None,
                })
                .await
            }
            Ok(StreamItem::Nothing) => Ok(()),
            Err(error) => {
                self.trouble(
                    error.as_str(),
                    &format!("a stream part is unreadable: {error}"),
                    false,
                );
                Ok(())
            }
        }
    }
}

/// The Dahua attach request, asking for a heartbeat every `heartbeat` (whole seconds, ≥ 1).
/// The brackets go literally, as Dahua's HTTP API writes them: the device's CGI matches the
/// text, and the Digest `uri` must be the very same string.
pub fn dahua_attach_target(heartbeat: Duration) -> String {
    format!(
        "/cgi-bin/eventManager.cgi?action=attach&codes=[AccessControl]&heartbeat={}",
        heartbeat.as_secs().max(1)
    )
}

/// A search id for one poll's pages.
fn search_id() -> String {
    let bytes: [u8; 8] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Vendor {
    Hikvision,
    Dahua,
}

/// What a stream part gave.
enum StreamItem {
    /// A document for the ingest (a heartbeat document too: it says the terminal is alive).
    Document(VendorRecord),
    /// A keep-alive or an event that is not for the ingest.
    Nothing,
}

/// A stream's parser, per vendor.
enum StreamReader {
    Hikvision(AlertStream),
    Dahua(PartStream),
}

impl StreamReader {
    fn new(vendor: Vendor, content_type: &str, max: usize) -> Self {
        match vendor {
            Vendor::Hikvision => StreamReader::Hikvision(
                AlertStream::new(content_type, max, max)
                    .or_else(|_| AlertStream::new(ALERT_STREAM_DEFAULT_TYPE, max, max))
                    .unwrap_or_else(|_| {
                        AlertStream::new(ALERT_STREAM_DEFAULT_TYPE, max, max)
                            .expect("the default content type has a boundary")
                    }),
            ),
            Vendor::Dahua => StreamReader::Dahua(
                PartStream::from_content_type(content_type, max)
                    .unwrap_or_else(|_| PartStream::new(DAHUA_DEFAULT_BOUNDARY, max)),
            ),
        }
    }

    fn push(&mut self, bytes: &[u8]) -> Vec<Result<StreamItem, WireError>> {
        match self {
            StreamReader::Hikvision(s) => match s.push(bytes) {
                Ok(items) => items
                    .into_iter()
                    .map(|r| r.map(StreamItem::Document))
                    .collect(),
                Err(e) => vec![Err(e)],
            },
            StreamReader::Dahua(s) => match s.push(bytes) {
                Ok(parts) => parts.into_iter().map(|p| dahua_item(&p.body)).collect(),
                Err(e) => vec![Err(e)],
            },
        }
    }

    fn finish(&mut self) -> Vec<Result<StreamItem, WireError>> {
        match self {
            StreamReader::Hikvision(s) => s
                .finish()
                .into_iter()
                .map(|r| r.map(StreamItem::Document))
                .collect(),
            StreamReader::Dahua(s) => match s.finish() {
                Ok(Some(part)) => vec![dahua_item(&part.body)],
                Ok(None) => Vec::new(),
                Err(e) => vec![Err(e)],
            },
        }
    }
}

fn dahua_item(body: &[u8]) -> Result<StreamItem, WireError> {
    Ok(match dahua::attach_part(body)? {
        AttachEvent::AccessControl(document) => StreamItem::Document(VendorRecord {
            document,
            picture: None,
            picture_dropped: None,
            replayed: false,
        }),
        AttachEvent::Heartbeat | AttachEvent::NotAPassage => StreamItem::Nothing,
    })
}
