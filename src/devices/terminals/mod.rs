//! The terminals' driver: where face-recognition terminals' records come in, whatever the
//! transport, and the thin loop that turns them into passages for the core.
//!
//! ```text
//! mqtt (the gateway's own endpoint, or a broker on the box) ─┐
//! http (push: Hikvision, Uniubi, ZKTeco; counting cameras)  ─┼─► Incoming + ack ─► ingest
//! pull (Hikvision AcsEvent / alertStream, Dahua attach)     ─┘         │
//!        core: journaled on disk ─► Receipt settled ─► PUBACK / HTTP 200 / next page
//! ```
//!
//! Terminals publish over MQTT to the gateway itself ([`mqtt`]: a publish-only MQTT 3.1.1
//! endpoint on the configured address, a login per terminal, each login bound to its own
//! terminal), or — by config — to a broker already running on the box, which hallgate
//! subscribes to (a persistent session, acked by hand). Push terminals POST to [`http`];
//! [`pull`] reads the terminals that cannot push. Every transport tells its device a record
//! was received only once the core has journaled it on disk ([`Receipt`]).
//! Every message reaches one loop that, per message, finds the vendor profile (by topic, or
//! the authenticated terminal's own), decodes it with
//! [`crate::terminals::decode`], turns the member id into a daily-salted hash
//! ([`MemberHasher`]) and hands a [`PassageFacts`] with the event's key to the core, which
//! drops re-sends (it keeps the keys with the counts, so that holds across restarts). Names
//! are never read; member ids and snapshots end here.
//!
//! Bad input — a payload that is not JSON, lacks a field, is too large, comes from an
//! unknown terminal — is counted per terminal (or for the hall when the terminal cannot be
//! told), logged once per terminal and reason as a WARN sentence, and never stops the loop.

pub mod http;

use std::borrow::Cow;
pub mod mqtt;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use jiff::Timestamp;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::config::terminals::{TerminalBroker, TerminalSource, TerminalTransport, Vision};
use crate::format::is_zero;
use crate::occupancy::{HallModel, PassageFacts};
use crate::terminals::{
    DecodeOptions, Decoded, MaskState, MemberHasher, PassageVerdict, TerminalId, TerminalProfile,
    Who, decode,
};

use crate::vision::{
    FaceDetector, SnapshotAnalysed, SnapshotLimits, Submitted, VisionSender, VisionWorker,
};

use super::{DeviceEvent, PollStats};

pub mod pull;

/// Messages from the broker waiting for the decoding loop. When full, the broker's link
/// waits (back-pressure into the broker's own queues), so nothing is dropped here.
const MESSAGE_QUEUE: usize = 256;

/// Distinct (terminal, reason) pairs the ingest logs a WARN for; beyond it, only counts.
const WARNED_KEYS: usize = 256;

/// One terminal's counts since the gateway started.
#[derive(Debug, Default)]
pub struct TerminalStats {
    /// Messages received (all kinds).
    pub messages: AtomicU64,
    /// Passages counted (once each; counted by the core).
    pub passages: AtomicU64,
    /// Re-sent events dropped (by the core).
    pub duplicates: AtomicU64,
    /// Passages of an earlier business day than the gateway's (a log replayed after a long
    /// outage): not counted into today (by the core).
    pub earlier_day: AtomicU64,
    /// Heartbeats and other messages that are not passages.
    pub ignored: AtomicU64,
    /// Messages rejected as malformed, by reason.
    pub rejected: std::sync::Mutex<BTreeMap<&'static str, u64>>,
    /// Passages whose snapshot could not be used (counted as one person).
    pub bad_snapshots: AtomicU64,
    /// Unix ms of the last message.
    pub last_seen_ms: AtomicU64,
    /// A pulled terminal refused the gateway's login twice: its driver stopped so the
    /// device does not lock the account, until the password is fixed and the config
    /// reloaded.
    pub login_refused: AtomicBool,
    /// A pulled terminal's connection troubles (refused, timed out, cut, silent), by reason.
    pub link_errors: std::sync::Mutex<BTreeMap<&'static str, u64>>,
}

/// A copy of [`TerminalStats`], as published.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TerminalStatsSnapshot {
    pub messages: u64,
    pub passages: u64,
    pub duplicates: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub earlier_day: u64,
    pub ignored: u64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub rejected: BTreeMap<&'static str, u64>,
    #[serde(skip_serializing_if = "is_zero")]
    pub bad_snapshots: u64,
    /// Unix ms of the last message of any kind (heartbeats too): is the terminal alive.
    #[serde(skip_serializing_if = "is_zero")]
    pub last_seen_ms: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub login_refused: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub link_errors: BTreeMap<&'static str, u64>,
}

impl TerminalStats {
    pub fn snapshot(&self) -> TerminalStatsSnapshot {
        TerminalStatsSnapshot {
            messages: self.messages.load(Ordering::Relaxed),
            passages: self.passages.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            earlier_day: self.earlier_day.load(Ordering::Relaxed),
            ignored: self.ignored.load(Ordering::Relaxed),
            rejected: self.rejected.lock().map(|r| r.clone()).unwrap_or_default(),
            bad_snapshots: self.bad_snapshots.load(Ordering::Relaxed),
            last_seen_ms: self.last_seen_ms.load(Ordering::Relaxed),
            login_refused: self.login_refused.load(Ordering::Relaxed),
            link_errors: self
                .link_errors
                .lock()
                .map(|r| r.clone())
                .unwrap_or_default(),
        }
    }

    fn reject(&self, reason: &'static str) {
        if let Ok(mut r) = self.rejected.lock() {
            *r.entry(reason).or_default() += 1;
        }
    }

    fn link_error(&self, reason: &'static str) {
        if let Ok(mut r) = self.link_errors.lock() {
            *r.entry(reason).or_default() += 1;
        }
    }
}

/// Counts for every configured terminal, and for messages no terminal can be named for.
#[derive(Debug, Default)]
pub struct TerminalsStats {
    pub terminals: Vec<TerminalStats>,
    /// Messages from terminals not in the config, or on topics no profile matches.
    pub unattributed: TerminalStats,
    /// The MQTT endpoint's connections.
    pub endpoint: EndpointStats,
    /// Whether the terminals can still deliver.
    pub intake: IntakeHealth,
}

/// The MQTT endpoint's refusals since the gateway started.
#[derive(Debug, Default)]
pub struct EndpointStats {
    /// Logins refused (wrong user or password, or an address shut out after failures).
    pub login_failures: AtomicU64,
    /// Connections refused because the login or the endpoint had too many.
    pub refused: AtomicU64,
}

/// A copy of [`EndpointStats`], as published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointCounts {
    pub login_failures: u64,
    pub refused: u64,
}

impl EndpointStats {
    pub fn snapshot(&self) -> EndpointCounts {
        EndpointCounts {
            login_failures: self.login_failures.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

/// Set when a part of the terminal intake ends while the gateway runs (it should never):
/// read by `/healthz`, the alerts and the status page.
#[derive(Debug, Default)]
pub struct IntakeHealth {
    /// A listener's task ended: the MQTT endpoint, its subscription to a local broker, or
    /// the HTTP listener.
    pub listener_stopped: AtomicBool,
    /// The ingest (the decoding loop every transport feeds) ended.
    pub ingest_stopped: AtomicBool,
}

impl IntakeHealth {
    /// What stopped, in English for the logs and metrics; `None` while all is well.
    pub fn stopped(&self) -> Option<&'static str> {
        if self.ingest_stopped.load(Ordering::Relaxed) {
            Some("ingest")
        } else if self.listener_stopped.load(Ordering::Relaxed) {
            Some("listener")
        } else {
            None
        }
    }
}

/// Marks a part of the intake stopped when dropped — returned, or unwound by a panic —
/// unless the gateway is stopping anyway.
struct StopWatch {
    stats: Arc<TerminalsStats>,
    shutdown: CancellationToken,
    part: &'static str,
}

impl Drop for StopWatch {
    fn drop(&mut self) {
        if self.shutdown.is_cancelled() {
            return;
        }
        let flag = match self.part {
            "ingest" => &self.stats.intake.ingest_stopped,
            _ => &self.stats.intake.listener_stopped,
        };
        flag.store(true, Ordering::Relaxed);
        tracing::error!(
            part = self.part,
            "终端接入已停止 (terminal intake stopped): terminals cannot deliver until the gateway restarts"
        );
    }
}

impl TerminalsStats {
    pub fn new(config: &Config) -> Arc<Self> {
        Arc::new(TerminalsStats {
            terminals: config
                .terminals
                .iter()
                .map(|_| TerminalStats::default())
                .collect(),
            unattributed: TerminalStats::default(),
            endpoint: EndpointStats::default(),
            intake: IntakeHealth::default(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TerminalsError {
    #[error("cannot listen for terminals on {listen}: {error}")]
    Listen {
        listen: SocketAddr,
        error: std::io::Error,
    },
    #[error("cannot start face counting: {0}")]
    Vision(String),
}

/// A terminal's message, as a transport hands it to the ingest.
#[derive(Debug)]
pub struct Incoming {
    /// How the message is attributed to a terminal.
    pub route: Route,
    /// One JSON document for the terminal's profile.
    pub payload: Vec<u8>,
    /// A JPEG that came beside the document (a multipart picture part): counted by vision
    /// when it is on, else dropped unread. Never stored.
    pub picture: Option<Vec<u8>>,
    /// Answered once the message is safe (see [`Ack`]); `None` when nobody waits.
    pub ack: Option<oneshot::Sender<Ack>>,
}

/// How an [`Incoming`] message names its terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// MQTT without a login to trust: the profile is found by topic, the terminal by topic
    /// or payload.
    Topic(String),
    /// An authenticated terminal (index into `Config::terminals`) whose profile decodes the
    /// document: an HTTP push or a pull.
    Terminal(usize),
    /// MQTT from a terminal's own login: the topic and the payload's device id must both be
    /// that terminal's, or the message is refused as forged.
    Bound { topic: String, terminal: usize },
}

/// What the ingest answers a transport that waits on a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// The passage (or an earlier copy of it) is committed with the figures: the device
    /// may be told it was received.
    Committed,
    /// A heartbeat or another record that is not a passage: nothing to keep.
    NotAPassage,
    /// Refused and counted under this reason (malformed, forged, unknown terminal); a re-send
    /// would be refused again.
    Refused(&'static str),
}

/// A passage's promise to the transport that delivered it: settled by the core once the
/// passage is committed. Dropped unsettled (the gateway stopping, the event lost), the
/// transport hears nothing and must not tell the device it was received.
#[derive(Debug, Clone)]
pub struct Receipt(Arc<std::sync::Mutex<Option<oneshot::Sender<Ack>>>>);

impl Receipt {
    pub fn new(ack: oneshot::Sender<Ack>) -> Self {
        Receipt(Arc::new(std::sync::Mutex::new(Some(ack))))
    }

    /// A receipt nobody waits on: a journaled passage given back to the core at start-up,
    /// whose device was answered before the restart.
    pub fn answered_before() -> Self {
        Receipt(Arc::new(std::sync::Mutex::new(None)))
    }

    /// Answers the waiting transport (the first answer wins; later ones are no-ops).
    pub fn settle(&self, ack: Ack) {
        if let Some(tx) = self.0.lock().ok().and_then(|mut slot| slot.take()) {
            let _ = tx.send(ack);
        }
    }
}

/// Receipts say who waits, not what happened: two events that differ only in them are the
/// same event.
impl PartialEq for Receipt {
    fn eq(&self, _: &Receipt) -> bool {
        true
    }
}

/// The ingest is gone (the gateway is stopping).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the terminal ingest has stopped")]
pub struct IngestClosed;

/// The transports' handle to the terminal ingest: cheap to clone, one per connection.
#[derive(Debug, Clone)]
pub struct TerminalIngest {
    tx: mpsc::Sender<Incoming>,
}

impl TerminalIngest {
    /// Hands a message over; waits while the ingest's queue is full (back-pressure to the
    /// device, never a drop).
    pub async fn deliver(&self, message: Incoming) -> Result<(), IngestClosed> {
        self.tx.send(message).await.map_err(|_| IngestClosed)
    }
}

/// Starts the terminals' transports (the MQTT endpoint or subscription, the HTTP listener,
/// the pull clients) and the decoding loop they all feed; `None` when the hall has no
/// terminals. `passage_keys` are the (terminal, event key) pairs the outbox kept: where the
/// pull clients resume reading the terminals' logs.
pub fn spawn(
    config: &Config,
    counters: http::CounterLinks<'_>,
    stats: &Arc<TerminalsStats>,
    events: &mpsc::Sender<DeviceEvent>,
    shutdown: &CancellationToken,
    passage_keys: &[(String, String)],
) -> Result<Option<tokio::task::JoinHandle<()>>, TerminalsError> {
    if config.terminals.is_empty() && config.cameras.is_empty() && config.terminal_http.is_none() {
        return Ok(None);
    }
    let (tx, rx) = mpsc::channel(MESSAGE_QUEUE);
    let ingest = TerminalIngest { tx };
    if let Some(broker) = &config.terminal_broker {
        start_mqtt(config, broker, &ingest, stats, shutdown)?;
    }
    if let Some(limits) = &config.terminal_http {
        http::start(config, limits, counters, stats, ingest.clone(), shutdown)?;
    }
    let resume = pull::resume_points(config, passage_keys);
    // They stop on `shutdown` (their sockets with them); nothing waits for them.
    drop(pull::spawn(config, &ingest, stats, &resume, shutdown));
    let vision = config.vision.as_ref().map(VisionLink::start).transpose()?;
    let decoding = Ingest::new(config, stats.clone(), events.clone(), vision);
    let watch = StopWatch {
        stats: stats.clone(),
        shutdown: shutdown.clone(),
        part: "ingest",
    };
    let shutdown = shutdown.clone();
    let task = tokio::spawn(async move {
        let _watch = watch;
        decoding.run(rx, shutdown).await;
    });
    drop(ingest);
    Ok(Some(task))
}

/// The MQTT side: the gateway's own endpoint, or a subscription to a broker already on the box.
fn start_mqtt(
    config: &Config,
    broker: &TerminalBroker,
    ingest: &TerminalIngest,
    stats: &Arc<TerminalsStats>,
    shutdown: &CancellationToken,
) -> Result<(), TerminalsError> {
    match &broker.source {
        TerminalSource::Embedded { listen } => {
            start_endpoint(config, broker, *listen, ingest, stats, shutdown)
        }
        TerminalSource::External { host, port, login } => {
            let driver = external::ExternalSubscription {
                host: host.clone(),
                port: *port,
                login: login
                    .as_ref()
                    .map(|(u, p)| (u.clone(), p.expose().to_string())),
                filters: topic_filters(config, broker),
                max_payload_bytes: broker.decode.max_payload_bytes * 2,
                client_id: format!("hallgate-{}-terminals", config.hall.id),
            };
            let watch = StopWatch {
                stats: stats.clone(),
                shutdown: shutdown.clone(),
                part: "listener",
            };
            let (ingest, shutdown) = (ingest.clone(), shutdown.clone());
            tokio::spawn(async move {
                let _watch = watch;
                driver.run(ingest, shutdown).await;
            });
            Ok(())
        }
    }
}

/// The distinct topic filters of the profiles the configured terminals use.
fn topic_filters(config: &Config, broker: &TerminalBroker) -> Vec<String> {
    let mut filters: Vec<String> = config
        .terminals
        .iter()
        .filter(|t| t.transport == TerminalTransport::Mqtt)
        .filter_map(|t| broker.profiles.get(&t.profile))
        .map(|p| p.topic_filter.clone())
        .collect();
    if !config.cameras.is_empty() {
        filters.push(crate::config::terminals::camera_topic("+"));
    }
    filters.sort();
    filters.dedup();
    filters
}

/// The gateway's own MQTT endpoint on `listen` only (see [`mqtt`]).
fn start_endpoint(
    config: &Config,
    broker: &TerminalBroker,
    listen: SocketAddr,
    ingest: &TerminalIngest,
    stats: &Arc<TerminalsStats>,
    shutdown: &CancellationToken,
) -> Result<(), TerminalsError> {
    let listener = mqtt::bind(listen).map_err(|error| TerminalsError::Listen { listen, error })?;
    let logins = mqtt::Logins::from_config(config);
    let endpoint = mqtt::Endpoint {
        limits: mqtt::Limits::for_logins(logins.len()),
        logins,
        // Twice the decoder's limit: an oversized message still arrives, so it can be
        // refused with a reason and counted against its terminal; larger packets are
        // counted as `oversized` and their connection closed.
        max_packet: broker.decode.max_payload_bytes * 2,
    };
    tracing::info!(
        %listen,
        terminals = config.terminals.len(),
        logins = endpoint.logins.len(),
        max_connections = endpoint.limits.total,
        "embedded terminal broker listening"
    );
    let watch = StopWatch {
        stats: stats.clone(),
        shutdown: shutdown.clone(),
        part: "listener",
    };
    let (ingest, stats, shutdown) = (ingest.clone(), stats.clone(), shutdown.clone());
    tokio::spawn(async move {
        let _watch = watch;
        endpoint.serve(listener, ingest, stats, shutdown).await;
    });
    Ok(())
}

/// The decoding loop's state.
struct Ingest {
    profiles: Vec<TerminalProfile>,
    decode: DecodeOptions,
    /// Terminal id → index into `Config::terminals` (and the stats).
    index: BTreeMap<TerminalId, usize>,
    /// Each terminal's id and profile name, by index.
    ids: Vec<TerminalId>,
    profile_names: Vec<String>,
    /// Whether each terminal delivers over MQTT: an unbound MQTT message naming a terminal
    /// that pushes or is pulled over HTTP is not its own.
    mqtt: Vec<bool>,
    rooms: Vec<usize>,
    /// Camera id → (index into `Config::cameras`, room).
    cameras: BTreeMap<String, (usize, usize)>,
    model: HallModel,
    hasher: MemberHasher,
    /// Where the day's salt is kept on the box, so a restart does not count a member seen
    /// before it as a second visitor (see `terminals::member`).
    salt: SaltFile,
    stats: Arc<TerminalsStats>,
    events: mpsc::Sender<DeviceEvent>,
    /// (terminal, reason) pairs already logged: one WARN each, then only counts.
    warned: HashSet<(String, &'static str)>,
    /// The set reached [`WARNED_KEYS`] and that was said once.
    warned_full: bool,
    /// Face counting, when `[vision]` is configured.
    vision: Option<VisionLink>,
}

/// The day's member salt, in the data directory.
const SALT_FILE: &str = "member-salt.json";

/// The day's member salt on the box: read at start, written (mode 0600, then renamed into
/// place) when a new day's salt is drawn. Only the current day's salt is ever on disk: a new
/// one replaces it, so old days' hashes stay unlinkable. Never leaves the box.
struct SaltFile {
    path: PathBuf,
    saved: Option<jiff::civil::Date>,
    warned: bool,
}

impl SaltFile {
    fn new(path: PathBuf) -> Self {
        SaltFile {
            path,
            saved: None,
            warned: false,
        }
    }

    fn restore(&self, hasher: &mut MemberHasher) {
        let Ok(text) = std::fs::read(&self.path) else {
            return;
        };
        match serde_json::from_slice::<crate::terminals::LocalSaltState>(&text) {
            Ok(state) => hasher.restore(state),
            Err(error) => {
                tracing::warn!(%error, path = %self.path.display(), "the kept member salt is unreadable; today's unique visitors restart counting");
            }
        }
    }

    /// Writes the hasher's salt if its day changed since the last write.
    fn keep(&mut self, hasher: &MemberHasher) {
        let Some(state) = hasher.local_state() else {
            return;
        };
        if self.saved == Some(state.day) {
            return;
        }
        match self.write(&state) {
            Ok(()) => self.saved = Some(state.day),
            Err(error) => {
                if !self.warned {
                    self.warned = true;
                    tracing::warn!(%error, path = %self.path.display(), "cannot keep the day's member salt; after a restart today's members may count twice as unique visitors");
                }
            }
        }
    }

    fn write(&self, state: &crate::terminals::LocalSaltState) -> std::io::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let tmp = self.path.with_extension("json.tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&serde_json::to_vec(state).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)
    }
}

/// The ingest's side of the vision worker. Passages whose snapshot is being counted wait in
/// `waiting`, by tag; every one of them reaches the core exactly once: with its face count,
/// or — dropped from a full queue, failed, or still waiting at shutdown — as one person.
struct VisionLink {
    sender: Option<VisionSender<u64>>,
    results: mpsc::Receiver<SnapshotAnalysed<u64>>,
    _worker: VisionWorker<u64>,
    waiting: BTreeMap<u64, DeviceEvent>,
    next_tag: u64,
}

impl VisionLink {
    fn start(vision: &Vision) -> Result<Self, TerminalsError> {
        let detector = FaceDetector::load(&vision.model, vision.detector.clone())
            .map_err(|e| TerminalsError::Vision(e.to_string()))?;
        // Room for every queued snapshot's answer, so the worker never waits on us.
        let (tx, results) = mpsc::channel(vision.queue + 4);
        let (worker, sender) =
            VisionWorker::spawn(detector, SnapshotLimits::default(), vision.queue, tx)
                .map_err(|e| TerminalsError::Vision(e.to_string()))?;
        tracing::info!(model = %vision.model.display(), queue = vision.queue, "counting faces in terminal snapshots");
        Ok(VisionLink {
            sender: Some(sender),
            results,
            _worker: worker,
            waiting: BTreeMap::new(),
            next_tag: 0,
        })
    }

    /// Sends the snapshot to be counted; the event waits here. Returns an event to pass on
    /// now, if the queue gave one back.
    fn submit(&mut self, event: DeviceEvent, snapshot: Vec<u8>) -> Option<DeviceEvent> {
        let Some(sender) = &self.sender else {
            return Some(event);
        };
        let tag = self.next_tag;
        self.next_tag += 1;
        self.waiting.insert(tag, event);
        let handed_back = match sender.submit(tag, snapshot) {
            Submitted::Queued => None,
            Submitted::QueuedDroppingOldest { dropped } => self.waiting.remove(&dropped),
            Submitted::WorkerStopped { tag } => self.waiting.remove(&tag),
        };
        // An uncounted passage still counts as one person; an uncounted camera snapshot
        // says nothing (the next one will).
        handed_back.filter(|e| matches!(e, DeviceEvent::Passage { .. }))
    }

    /// The waiting event of an answer, with its face count.
    fn answered(&mut self, answer: SnapshotAnalysed<u64>) -> Option<DeviceEvent> {
        let mut event = self.waiting.remove(&answer.tag)?;
        match (&answer.faces, &mut event) {
            (Ok(faces), DeviceEvent::Passage { facts, .. }) => {
                facts.people = u32::try_from(faces.len()).unwrap_or(u32::MAX).max(1);
            }
            (Ok(faces), DeviceEvent::HeadCount { heads, .. }) => *heads = faces.len() as u64,
            (Err(error), DeviceEvent::HeadCount { camera, .. }) => {
                tracing::debug!(camera = *camera, %error, "a camera snapshot could not be counted");
                return None;
            }
            _ => {}
        }
        Some(event)
    }
}

impl Ingest {
    fn new(
        config: &Config,
        stats: Arc<TerminalsStats>,
        events: mpsc::Sender<DeviceEvent>,
        vision: Option<VisionLink>,
    ) -> Self {
        let rules = &config.terminal_rules;
        let mut profiles: Vec<TerminalProfile> = Vec::new();
        for t in &config.terminals {
            if let Some(p) = rules.profiles.get(&t.profile)
                && !profiles.iter().any(|q| q.name == p.name)
            {
                profiles.push(p.clone());
            }
        }
        let mut decode = rules.decode.clone();
        // Without vision nothing looks at snapshots: leave the field unread (it is most of
        // the bytes).
        decode.decode_snapshot = vision.is_some();
        let salt = SaltFile::new(config.storage.data_dir.join(SALT_FILE));
        let mut hasher = MemberHasher::new();
        salt.restore(&mut hasher);
        Ingest {
            profiles,
            decode,
            ids: config.terminals.iter().map(|t| t.id.clone()).collect(),
            profile_names: config.terminals.iter().map(|t| t.profile.clone()).collect(),
            mqtt: config
                .terminals
                .iter()
                .map(|t| t.transport == TerminalTransport::Mqtt)
                .collect(),
            index: config
                .terminals
                .iter()
                .enumerate()
                .map(|(i, t)| (t.id.clone(), i))
                .collect(),
            rooms: config.terminals.iter().map(|t| t.room).collect(),
            cameras: config
                .cameras
                .iter()
                .enumerate()
                .map(|(i, c)| (c.id.clone(), (i, c.room)))
                .collect(),
            model: HallModel::from_config(config),
            hasher,
            salt,
            stats,
            events,
            warned: HashSet::new(),
            warned_full: false,
            vision,
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Incoming>, shutdown: CancellationToken) {
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => break,
                m = rx.recv() => match m {
                    Some(m) => {
                        let receipt = m.ack.map(Receipt::new);
                        match self.handle(&m.route, m.payload, m.picture, receipt.clone(), Timestamp::now()) {
                            Ok(event) => event,
                            Err(ack) => {
                                if let Some(receipt) = receipt {
                                    receipt.settle(ack);
                                }
                                None
                            }
                        }
                    }
                    None => break,
                },
                Some(answer) = async {
                    match self.vision.as_mut() {
                        Some(v) => v.results.recv().await,
                        None => std::future::pending().await,
                    }
                } => self.vision.as_mut().and_then(|v| v.answered(answer)),
            };
            if let Some(event) = event
                && self.events.send(event).await.is_err()
            {
                return;
            }
        }
        self.finish().await;
    }

    /// At shutdown: let the detector answer what it has (briefly), then pass every passage
    /// still waiting on, counted as one person — none is lost.
    async fn finish(&mut self) {
        let Some(vision) = self.vision.as_mut() else {
            return;
        };
        vision.sender = None;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        while !vision.waiting.is_empty() {
            match tokio::time::timeout_at(deadline, vision.results.recv()).await {
                Ok(Some(answer)) => {
                    if let Some(event) = vision.answered(answer) {
                        let _ = self.events.send(event).await;
                    }
                }
                _ => break,
            }
        }
        for (_, event) in std::mem::take(&mut vision.waiting) {
            if matches!(event, DeviceEvent::Passage { .. }) {
                let _ = self.events.send(event).await;
            }
        }
    }

    /// A room camera's JPEG: counted by the detector, then a head count for the core.
    fn camera_snapshot(
        &mut self,
        camera: &str,
        jpeg: Vec<u8>,
        now: Timestamp,
    ) -> Option<DeviceEvent> {
        let Some(&(index, room)) = self.cameras.get(camera) else {
            PollStats::count(&self.stats.unattributed.messages);
            self.stats.unattributed.reject("unknown_camera");
            self.warn_once(camera, "unknown_camera", "this camera is not in the config");
            return None;
        };
        let vision = self.vision.as_mut()?;
        let event = DeviceEvent::HeadCount {
            camera: index,
            at: now,
            room,
            heads: 0,
        };
        vision.submit(event, jpeg)
    }

    fn warn_once(&mut self, terminal: &str, reason: &'static str, detail: &str) {
        // The names come from the messages (a topic level, a payload field): bounded, so a
        // sender inventing ids cannot grow the set or the log.
        if self.warned.len() >= WARNED_KEYS {
            if !self.warned_full {
                self.warned_full = true;
                tracing::warn!(
                    distinct = WARNED_KEYS,
                    "many distinct terminals or reasons were refused; further new ones are only counted"
                );
            }
            return;
        }
        if self.warned.insert((terminal.to_string(), reason)) {
            tracing::warn!(
                terminal,
                reason,
                detail,
                "a terminal message was refused and counted; further ones like it are only counted"
            );
        }
    }

    /// One message in: a passage (or a camera's head count) for the core, `Ok(None)` when
    /// it waits on the detector, or the answer for a message that is not a passage.
    /// `receipt` travels with the passage to the core, which settles it once journaled.
    fn handle(
        &mut self,
        route: &Route,
        payload: Vec<u8>,
        picture: Option<Vec<u8>>,
        receipt: Option<Receipt>,
        now: Timestamp,
    ) -> Result<Option<DeviceEvent>, Ack> {
        let (topic, bound) = match route {
            Route::Topic(topic) => (Cow::Borrowed(topic.as_str()), None),
            Route::Bound { topic, terminal } => (Cow::Borrowed(topic.as_str()), Some(*terminal)),
            Route::Terminal(t) => (Cow::Owned(self.topic_of(*t)), Some(*t)),
        };
        if bound.is_none()
            && let Some(camera) = topic
                .strip_prefix("cameras/")
                .and_then(|t| t.strip_suffix("/snapshot"))
        {
            let camera = camera.to_string();
            // A snapshot is not a passage: nothing of it needs a commit before the camera is
            // answered (and its head count, if any, carries no receipt).
            if let Some(receipt) = &receipt {
                receipt.settle(Ack::NotAPassage);
            }
            return match self.camera_snapshot(&camera, payload, now) {
                Some(event) => Ok(Some(event)),
                None => Err(Ack::NotAPassage),
            };
        }
        let (profile, matched) = self.profile_for(&topic, bound)?;
        let profile = &self.profiles[profile];
        let personal_key = profile.dedup_personal;
        let by_topic = matched
            .terminal
            .as_ref()
            .and_then(|id| self.index.get(id).copied());
        let result = decode(profile, &topic, &payload, now, &self.decode);
        drop(payload);
        let decoded_terminal = match &result {
            Ok(Decoded::Passage(p)) => Some(&p.terminal),
            Ok(Decoded::Ignored(i)) => i.terminal.as_ref(),
            Err(_) => None,
        };
        let by_payload = decoded_terminal.and_then(|id| self.index.get(id).copied());
        let terminal = bound.or(by_topic).or(by_payload);
        let all = Arc::clone(&self.stats);
        let stats = match terminal {
            Some(t) => &all.terminals[t],
            None => &all.unattributed,
        };
        PollStats::count(&stats.messages);
        stats
            .last_seen_ms
            .store(now.as_millisecond().max(0) as u64, Ordering::Relaxed);
        let name = matched
            .terminal
            .as_ref()
            .map(|t| t.to_string())
            .or_else(|| decoded_terminal.map(|t| t.to_string()))
            .unwrap_or_else(|| "(unknown)".into());
        if let Some(t) = bound
            && self.forged(t, matched.terminal.as_ref(), decoded_terminal)
        {
            return Err(Ack::Refused("forged"));
        }
        let passage = match result {
            Err(reason) => {
                stats.reject(reason.as_str());
                let detail = reason.to_string();
                self.warn_once(&name, reason.as_str(), &detail);
                return Err(Ack::Refused(reason.as_str()));
            }
            Ok(Decoded::Ignored(_)) => {
                PollStats::count(&stats.ignored);
                return Err(Ack::NotAPassage);
            }
            Ok(Decoded::Passage(p)) => p,
        };
        if let Some(reason) = &passage.snapshot_error {
            PollStats::count(&stats.bad_snapshots);
            let detail = reason.to_string();
            self.warn_once(&name, "bad_snapshot", &detail);
        }
        // A failed recognition is usually retried at once: not a visit by itself.
        if passage.verdict == PassageVerdict::Fail {
            PollStats::count(&stats.ignored);
            return Err(Ack::NotAPassage);
        }
        if bound.is_none()
            && let Some(t) = terminal
            && !self.mqtt[t]
        {
            stats.reject("wrong_transport");
            self.warn_once(
                &name,
                "wrong_transport",
                "this terminal is configured to deliver over HTTP, not MQTT",
            );
            return Err(Ack::Refused("wrong_transport"));
        }
        let Some(t) = terminal else {
            stats.reject("unknown_terminal");
            self.warn_once(
                &name,
                "unknown_terminal",
                "this terminal is not in the config",
            );
            return Err(Ack::Refused("unknown_terminal"));
        };
        let event = self.passage_event(t, &passage, personal_key, receipt);
        // The picture beside the record (HTTP) or inside it (MQTT): decoded in memory,
        // counted and dropped; never stored.
        let snapshot = picture.or_else(|| passage.snapshot.map(|s| s.into_bytes()));
        match (snapshot, self.vision.as_mut()) {
            (Some(snapshot), Some(vision)) => Ok(vision.submit(event, snapshot)),
            _ => Ok(Some(event)),
        }
    }

    /// The profile (index into `profiles`) that reads a message on `topic`, and what the
    /// topic says of its terminal. A bound message is read with its own terminal's profile
    /// only: a login cannot borrow another vendor's mapping to dress up a payload.
    fn profile_for(
        &mut self,
        topic: &str,
        bound: Option<usize>,
    ) -> Result<(usize, crate::terminals::TopicMatch), Ack> {
        let found = match bound {
            Some(t) => self
                .profiles
                .iter()
                .position(|p| p.name == self.profile_names[t])
                .and_then(|i| self.profiles[i].matches(topic).map(|m| (i, m))),
            None => self
                .profiles
                .iter()
                .enumerate()
                .find_map(|(i, p)| p.matches(topic).map(|m| (i, m))),
        };
        found.ok_or_else(|| {
            let stats = match bound {
                Some(t) => &self.stats.terminals[t],
                None => &self.stats.unattributed,
            };
            PollStats::count(&stats.messages);
            let reason = if bound.is_some() {
                "wrong_topic"
            } else {
                "unknown_topic"
            };
            stats.reject(reason);
            self.warn_once(
                topic,
                reason,
                "no terminal profile of this login matches this topic",
            );
            Ack::Refused(reason)
        })
    }

    /// A login speaks for its own terminal only: a topic or a device id naming another one
    /// is a forgery (or a miswired device), refused (and counted) before anything is counted.
    fn forged(
        &mut self,
        terminal: usize,
        by_topic: Option<&TerminalId>,
        by_payload: Option<&TerminalId>,
    ) -> bool {
        let own = &self.ids[terminal];
        if by_topic.is_none_or(|id| id == own) && by_payload.is_none_or(|id| id == own) {
            return false;
        }
        self.stats.terminals[terminal].reject("forged");
        let own = own.as_str().to_string();
        self.warn_once(
            &own,
            "forged",
            "a message names another terminal than the one that sent it",
        );
        true
    }

    /// The passage's event for the core: its member id reduced to today's salted hash.
    /// A key made from a member id (`personal_key`) is kept only as its daily-salted hash.
    fn passage_event(
        &mut self,
        terminal: usize,
        passage: &crate::terminals::PassageRecorded,
        personal_key: bool,
        receipt: Option<Receipt>,
    ) -> DeviceEvent {
        // The business day the passage belongs to, which is also the salt's day.
        let day = self
            .model
            .day_of_close(self.model.next_close_after(passage.at));
        let member = match &passage.who {
            Who::Member(m) => Some(self.hasher.hash(day, m)),
            Who::Stranger => None,
        };
        let mut key = passage.dedup_key.clone();
        if personal_key {
            // Re-sends of the day hash alike (the salt is kept across restarts, below);
            // a record of another day is not counted into today anyway.
            key.event = self
                .hasher
                .hash(day, &crate::terminals::MemberRef::new(&key.event))
                .to_string();
        }
        self.salt.keep(&self.hasher);
        DeviceEvent::Passage {
            terminal,
            key,
            at: passage.at,
            facts: PassageFacts {
                room: self.rooms[terminal],
                member,
                fever: passage.fever,
                mask_off: passage.mask == MaskState::Off,
                sensor_error: passage.sensor_error,
                people: 1,
            },
            receipt,
        }
    }

    /// The topic a terminal's own profile would carry its messages on: what a record that
    /// came over HTTP is decoded as, so the profile's device-id rule still applies.
    fn topic_of(&self, terminal: usize) -> String {
        self.profiles
            .iter()
            .find(|p| p.name == self.profile_names[terminal])
            .map(|p| p.topic_for(&self.ids[terminal]))
            .unwrap_or_default()
    }
}

/// Subscribing to a broker that is already on the box: a persistent session (clean session
/// off) at QoS 1 with manual acks, so the broker keeps every message until the gateway has
/// committed it — across a gateway restart too — and hands un-acked ones over again.
mod external {
    use std::time::Duration;

    use std::collections::VecDeque;

    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
    use tokio::sync::oneshot;
    use tokio_util::sync::CancellationToken;

    use super::{Ack, Incoming, TerminalIngest};

    /// A message's answer from the ingest: still awaited, or in (ack it).
    enum Answer {
        Waiting(oneshot::Receiver<Ack>),
        Ready,
    }

    pub struct ExternalSubscription {
        pub host: String,
        pub port: u16,
        pub login: Option<(String, String)>,
        pub filters: Vec<String>,
        pub max_payload_bytes: usize,
        pub client_id: String,
    }

    impl ExternalSubscription {
        // The terminal side of the box, not the uplink: the one other MQTT client the gateway
        // has, and the rule in clippy.toml is about the uplink's delivery to the centre.
        #[allow(clippy::disallowed_methods)]
        pub async fn run(self, ingest: TerminalIngest, shutdown: CancellationToken) {
            let mut options =
                MqttOptions::new(self.client_id.clone(), self.host.clone(), self.port);
            options.set_keep_alive(Duration::from_secs(30));
            options.set_max_packet_size(self.max_payload_bytes + 1024, 64 * 1024);
            options.set_clean_session(false);
            options.set_manual_acks(true);
            if let Some((user, pass)) = &self.login {
                options.set_credentials(user.clone(), pass.clone());
            }
            let (client, mut eventloop) = AsyncClient::new(options, 64);
            // Messages awaiting their ack, in arrival order (MQTT wants acks in order). Held
            // here, not in a task of their own: the event loop must keep running (pings, and
            // the acks themselves go out through it), and the broker sends no more than its
            // in-flight window of un-acked messages, which bounds this queue. One left
            // unanswered (the gateway stopping) is never acked, nor is anything after it: the
            // broker re-delivers them to the next session.
            let mut pending: VecDeque<(Publish, Answer)> = VecDeque::new();
            loop {
                while let Some((publish, Answer::Ready)) = pending.front() {
                    if client.try_ack(publish).is_err() {
                        // The client's request queue is full: the event loop drains it.
                        break;
                    }
                    pending.pop_front();
                }
                let waiting = matches!(pending.front(), Some((_, Answer::Waiting(_))));
                let event = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    answer = async {
                        match pending.front_mut() {
                            Some((_, Answer::Waiting(rx))) => rx.await,
                            _ => std::future::pending().await,
                        }
                    }, if waiting => {
                        if answer.is_err() {
                            return;
                        }
                        if let Some(front) = pending.front_mut() {
                            front.1 = Answer::Ready;
                        }
                        continue;
                    }
                    e = eventloop.poll() => e,
                };
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        tracing::info!(broker = %format!("{}:{}", self.host, self.port), session_present = ack.session_present, "subscribed to the terminals' local broker");
                        if !ack.session_present {
                            for f in &self.filters {
                                let _ = client.try_subscribe(f.clone(), QoS::AtLeastOnce);
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let (tx, rx) = oneshot::channel();
                        let waits = p.qos != QoS::AtMostOnce;
                        let message = Incoming {
                            route: super::Route::Topic(p.topic.clone()),
                            payload: p.payload.to_vec(),
                            picture: None,
                            ack: waits.then_some(tx),
                        };
                        if ingest.deliver(message).await.is_err() {
                            return;
                        }
                        if waits {
                            // Only the packet id and QoS are needed to ack it.
                            let header = Publish {
                                payload: Default::default(),
                                ..p
                            };
                            pending.push_back((header, Answer::Waiting(rx)));
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, "lost the terminals' local broker; reconnecting");
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::config::{Overrides, parse};

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/terminals");

    fn fixture(profile: &str, name: &str) -> Vec<u8> {
        std::fs::read(format!("{FIXTURES}/{profile}/{name}.json")).expect("fixture exists")
    }

    /// A password file as `validate` wants it: only its owner can read it.
    fn write_secret(path: &Path, text: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, text).expect("password file");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .expect("password file mode");
    }

    /// A hall with one Hikvision terminal, `T1`, in the lobby.
    fn ingest(dir: &Path) -> (Ingest, Arc<TerminalsStats>) {
        write_secret(&dir.join("t1.pass"), "s3cret-of-terminal-1\n");
        let text = r#"
[hall]
id = "h"
district = "d"
[uplink]
broker = "mqtt://127.0.0.1:1883"
[terminal_broker]
listen = "127.0.0.1:0"
[[rooms]]
id = "lobby"
capacity = 10
[[terminals]]
id = "T1"
profile = "hikvision-acs"
room = "lobby"
username = "t1"
password_file = "t1.pass"
"#;
        let config = parse(text, dir, &Overrides::default()).expect("valid config");
        let stats = TerminalsStats::new(&config);
        let (tx, _rx) = mpsc::channel(8);
        (Ingest::new(&config, stats.clone(), tx, None), stats)
    }

    const TOPIC: &str = "terminals/hikvision/T1/events";

    /// An unbound MQTT message, as the external subscription hands it over.
    fn handle(
        ingest: &mut Ingest,
        topic: &str,
        payload: Vec<u8>,
        now: Timestamp,
    ) -> Option<DeviceEvent> {
        ingest
            .handle(&Route::Topic(topic.into()), payload, None, None, now)
            .ok()
            .flatten()
    }

    #[test]
    fn a_member_passage_and_its_re_send_carry_the_same_event_key_and_member_hash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut ingest, stats) = ingest(dir.path());
        let now = Timestamp::now();
        let first = handle(
            &mut ingest,
            TOPIC,
            fixture("hikvision-acs", "member_pass"),
            now,
        );
        let Some(DeviceEvent::Passage {
            terminal,
            facts,
            key,
            ..
        }) = first
        else {
            panic!("a passage, not {first:?}");
        };
        assert_eq!((terminal, facts.room, facts.people), (0, 0, 1));
        assert!(facts.member.is_some() && !facts.fever && !facts.mask_off);
        // A re-send carries the same key (the core counts each key once, across restarts),
        // and the same member hash (the same person, the same day).
        let again = handle(
            &mut ingest,
            TOPIC,
            fixture("hikvision-acs", "member_pass"),
            now,
        );
        let Some(DeviceEvent::Passage {
            key: key_again,
            facts: facts_again,
            ..
        }) = again
        else {
            panic!("a passage, not {again:?}");
        };
        assert_eq!(key, key_again);
        assert_eq!(facts.member, facts_again.member);
        assert_eq!(stats.terminals[0].snapshot().messages, 2);
    }

    #[test]
    fn fevers_and_masks_are_facts_and_a_heartbeat_is_not_a_passage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut ingest, stats) = ingest(dir.path());
        let now = Timestamp::now();
        let fever = handle(&mut ingest, TOPIC, fixture("hikvision-acs", "fever"), now);
        assert!(matches!(fever, Some(DeviceEvent::Passage { facts, .. }) if facts.fever));
        let mask = handle(
            &mut ingest,
            TOPIC,
            fixture("hikvision-acs", "mask_off"),
            now,
        );
        assert!(matches!(mask, Some(DeviceEvent::Passage { facts, .. }) if facts.mask_off));
        assert!(
            handle(
                &mut ingest,
                TOPIC,
                fixture("hikvision-acs", "heartbeat"),
                now
            )
            .is_none()
        );
        // A failed recognition is retried at once by the person: not a visit.
        assert!(
            handle(
                &mut ingest,
                TOPIC,
                fixture("hikvision-acs", "face_failed"),
                now
            )
            .is_none()
        );
        assert_eq!(stats.terminals[0].snapshot().ignored, 2);
    }

    #[test]
    fn bad_messages_and_unknown_terminals_are_counted_not_passed_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut ingest, stats) = ingest(dir.path());
        let now = Timestamp::now();
        assert!(handle(&mut ingest, TOPIC, b"{not json".to_vec(), now).is_none());
        assert!(handle(&mut ingest, TOPIC, vec![0xff, 0xfe, 0x00], now).is_none());
        let rejected = stats.terminals[0].snapshot().rejected;
        assert_eq!(rejected.values().sum::<u64>(), 2, "{rejected:?}");
        // A terminal that is not in the config, and a topic no profile knows.
        let other = "terminals/hikvision/T9/events";
        assert!(
            handle(
                &mut ingest,
                other,
                fixture("hikvision-acs", "member_pass"),
                now
            )
            .is_none()
        );
        assert!(handle(&mut ingest, "somewhere/else", b"{}".to_vec(), now).is_none());
        let u = stats.unattributed.snapshot();
        assert_eq!(u.messages, 2);
        assert_eq!(u.rejected.get("unknown_terminal"), Some(&1));
        assert_eq!(u.rejected.get("unknown_topic"), Some(&1));
    }

    #[tokio::test]
    async fn an_intake_task_that_ends_or_panics_is_marked_stopped_unless_the_gateway_stops() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, stats) = ingest(dir.path());
        let shutdown = CancellationToken::new();
        let watch = |part| StopWatch {
            stats: stats.clone(),
            shutdown: shutdown.clone(),
            part,
        };
        assert_eq!(stats.intake.stopped(), None);
        let w = watch("listener");
        let panicked = tokio::spawn(async move {
            let _w = w;
            panic!("a bug in the listener");
        })
        .await;
        assert!(panicked.is_err());
        assert_eq!(stats.intake.stopped(), Some("listener"));
        drop(watch("ingest"));
        assert_eq!(stats.intake.stopped(), Some("ingest"));

        let (_, stats) = ingest(dir.path());
        shutdown.cancel();
        drop(StopWatch {
            stats: stats.clone(),
            shutdown: shutdown.clone(),
            part: "ingest",
        });
        assert_eq!(
            stats.intake.stopped(),
            None,
            "a stop at shutdown is no failure"
        );
    }

    #[test]
    fn an_embedded_broker_admits_nobody_without_a_login() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = r#"
[hall]
id = "h"
district = "d"
[uplink]
broker = "mqtt://127.0.0.1:1883"
[terminal_broker]
listen = "127.0.0.1:1884"
[[rooms]]
id = "lobby"
capacity = 10
[[terminals]]
id = "T1"
profile = "hikvision-acs"
room = "lobby"
"#;
        let problems = parse(text, dir.path(), &Overrides::default()).expect_err("invalid");
        assert!(
            problems
                .iter()
                .any(|p| p.path == "terminals[0].username" && p.message.contains("login")),
            "{problems:?}"
        );
    }

    /// Three copies of the public-domain astronaut portrait side by side, as a JPEG.
    fn three_people_jpeg() -> Vec<u8> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/images/astronaut.jpg"
        );
        let one = image::open(path).expect("fixture decodes").to_rgb8();
        let mut canvas = image::RgbImage::new(one.width() * 3, one.height());
        for i in 0..3 {
            image::imageops::replace(&mut canvas, &one, i64::from(one.width() * i), 0);
        }
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85)
            .encode_image(&canvas)
            .expect("encodes");
        jpeg
    }

    #[tokio::test]
    async fn a_room_camera_snapshot_becomes_a_head_count_of_the_faces_in_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_secret(&dir.path().join("cam.pass"), "camera-password-1");
        let text = format!(
            r#"
[hall]
id = "h"
district = "d"
[uplink]
broker = "mqtt://127.0.0.1:1883"
[terminal_broker]
listen = "127.0.0.1:0"
[vision]
model = "{}/models/centerface.onnx"
input_width_px = 640
input_height_px = 384
[[rooms]]
id = "lobby"
capacity = 10
[[rooms]]
id = "reading"
capacity = 10
[[cameras]]
id = "cam-reading"
room = "reading"
username = "cam"
password_file = "cam.pass"
"#,
            env!("CARGO_MANIFEST_DIR")
        );
        let config = parse(&text, dir.path(), &Overrides::default()).expect("valid config");
        let vision = VisionLink::start(config.vision.as_ref().expect("vision")).expect("loads");
        let (tx, _rx) = mpsc::channel(8);
        let stats = TerminalsStats::new(&config);
        let mut ingest = Ingest::new(&config, stats, tx, Some(vision));
        let now = Timestamp::now();
        assert!(
            handle(
                &mut ingest,
                "cameras/cam-reading/snapshot",
                three_people_jpeg(),
                now
            )
            .is_none(),
            "the count comes when the detector answers"
        );
        let vision = ingest.vision.as_mut().expect("vision");
        let answer = tokio::time::timeout(Duration::from_secs(120), vision.results.recv())
            .await
            .expect("the detector answers")
            .expect("an answer");
        let event = vision.answered(answer);
        assert!(
            matches!(
                event,
                Some(DeviceEvent::HeadCount {
                    room: 1,
                    heads: 3,
                    ..
                })
            ),
            "{event:?}"
        );
        // A camera that is not configured is counted, not trusted.
        assert!(
            handle(
                &mut ingest,
                "cameras/cam-x/snapshot",
                three_people_jpeg(),
                now
            )
            .is_none()
        );
    }
}
