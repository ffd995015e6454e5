//! The terminals' driver: where face-recognition terminals' MQTT messages come in, and the
//! thin loop that turns them into passages for the core.
//!
//! Terminals publish to an MQTT broker on the box: hallgate's own (rumqttd, listening only on
//! the configured address, a login per terminal, a payload size limit), or — by config — a
//! broker already running there, which hallgate subscribes to. Either way the messages reach
//! one loop that, per message, finds the vendor profile by topic, decodes it with
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
use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use jiff::Timestamp;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::config::terminals::{TerminalBroker, TerminalSource, TerminalTransport, Vision};
use crate::occupancy::{HallModel, PassageFacts};
use crate::terminals::{
    DecodeOptions, Decoded, MaskState, MemberHasher, PassageVerdict, TerminalId, TerminalProfile,
    Who, decode,
};

use crate::vision::{
    FaceDetector, SnapshotAnalysed, SnapshotLimits, Submitted, VisionSender, VisionWorker,
};

use super::{DeviceEvent, Stats};

pub mod pull;

/// Messages from the broker waiting for the decoding loop. When full, the broker's link
/// waits (back-pressure into the broker's own queues), so nothing is dropped here.
const MESSAGE_QUEUE: usize = 256;

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

fn is_zero(n: &u64) -> bool {
    *n == 0
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
    #[error("the embedded terminal broker failed to start: {0}")]
    Broker(String),
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

    /// Hands a message over and waits for its answer; `None` when the message is not safe
    /// (the gateway stopped before committing it): tell the device nothing.
    pub async fn deliver_and_wait(
        &self,
        route: Route,
        payload: Vec<u8>,
        picture: Option<Vec<u8>>,
    ) -> Option<Ack> {
        let (tx, rx) = oneshot::channel();
        self.deliver(Incoming {
            route,
            payload,
            picture,
            ack: Some(tx),
        })
        .await
        .ok()?;
        rx.await.ok()
    }
}

/// Starts the terminals' transports (the MQTT broker or subscription, the HTTP listener,
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
        start_mqtt(config, broker, &ingest, shutdown)?;
    }
    if let Some(limits) = &config.terminal_http {
        http::start(config, limits, counters, stats, ingest.clone(), shutdown)?;
    }
    let resume = pull::resume_points(config, passage_keys);
    // They stop on `shutdown` (their sockets with them); nothing waits for them.
    drop(pull::spawn(config, &ingest, stats, &resume, shutdown));
    let vision = config.vision.as_ref().map(VisionLink::start).transpose()?;
    let decoding = Ingest::new(config, stats.clone(), events.clone(), vision);
    let task = tokio::spawn(decoding.run(rx, shutdown.clone()));
    drop(ingest);
    Ok(Some(task))
}

/// The MQTT side: the embedded broker, or a subscription to a broker already on the box.
fn start_mqtt(
    config: &Config,
    broker: &TerminalBroker,
    ingest: &TerminalIngest,
    shutdown: &CancellationToken,
) -> Result<(), TerminalsError> {
    let filters = topic_filters(config, broker);
    let tx = ingest.tx.clone();
    match &broker.source {
        TerminalSource::Embedded { listen } => start_embedded(config, broker, *listen, filters, tx),
        TerminalSource::External { host, port, login } => {
            let driver = external::ExternalSubscription {
                host: host.clone(),
                port: *port,
                login: login
                    .as_ref()
                    .map(|(u, p)| (u.clone(), p.expose().to_string())),
                filters,
                max_payload_bytes: broker.decode.max_payload_bytes * 2,
                client_id: format!("hallgate-{}-terminals", config.hall.id),
            };
            tokio::spawn(driver.run(tx, shutdown.clone()));
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

/// rumqttd on `listen` only, one login per terminal, and a local link subscribed to the
/// terminals' topics. The broker and the link block, so each has a thread of its own; they
/// live as long as the process.
fn start_embedded(
    config: &Config,
    broker: &TerminalBroker,
    listen: SocketAddr,
    filters: Vec<String>,
    tx: mpsc::Sender<Incoming>,
) -> Result<(), TerminalsError> {
    // rumqttd binds on its own thread and only logs a failure there: try the address here
    // first, so a taken port or a wrong interface is a clear error at start-up.
    TcpListener::bind(listen)
        .map(drop)
        .map_err(|error| TerminalsError::Listen { listen, error })?;
    let auth: std::collections::HashMap<String, String> = config
        .terminals
        .iter()
        .filter_map(|t| t.login.as_ref())
        .chain(config.cameras.iter().filter_map(|c| c.login.as_ref()))
        .map(|(user, secret)| (user.clone(), secret.expose().to_string()))
        .collect();
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 10_000,
        // Twice the decoder's limit: an oversized message still arrives, so it can be
        // refused with a reason and counted against its terminal; far larger ones are cut
        // off by the broker.
        max_payload_size: broker.decode.max_payload_bytes * 2,
        max_inflight_count: 100,
        auth: Some(auth),
        external_auth: None,
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "terminals".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let broker_config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: (config.terminals.len() + 8).max(16),
            max_outgoing_packet_count: 200,
            // Room for a few of the largest messages; more only costs the box memory.
            max_segment_size: (broker.decode.max_payload_bytes * 4).max(256 * 1024),
            max_segment_count: 2,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(std::collections::HashMap::from([("1".to_string(), server)])),
        ..rumqttd::Config::default()
    };
    let mut embedded = rumqttd::Broker::new(broker_config);
    let (mut link_tx, mut link_rx) = embedded
        .link("hallgate-terminal-ingest")
        .map_err(|e| TerminalsError::Broker(e.to_string()))?;
    for filter in &filters {
        link_tx
            .subscribe(filter.clone())
            .map_err(|e| TerminalsError::Broker(e.to_string()))?;
    }
    std::thread::Builder::new()
        .name("terminal-broker".into())
        .spawn(move || {
            if let Err(error) = embedded.start() {
                tracing::error!(%error, "the embedded terminal broker stopped; terminals cannot deliver until restart");
            }
        })
        .map_err(|e| TerminalsError::Broker(e.to_string()))?;
    std::thread::Builder::new()
        .name("terminal-link".into())
        .spawn(move || {
            // Keeps the subscriptions alive for the life of the link.
            let _link_tx = link_tx;
            while let Ok(notification) = link_rx.recv() {
                if let Some(rumqttd::Notification::Forward(forward)) = notification {
                    let message = Incoming {
                        route: Route::Topic(
                            String::from_utf8_lossy(&forward.publish.topic).into_owned(),
                        ),
                        payload: forward.publish.payload.to_vec(),
                        picture: None,
                        ack: None,
                    };
                    if tx.blocking_send(message).is_err() {
                        return;
                    }
                }
            }
        })
        .map_err(|e| TerminalsError::Broker(e.to_string()))?;
    tracing::info!(
        %listen,
        terminals = config.terminals.len(),
        topics = %filters.join(" "),
        "embedded terminal broker listening"
    );
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
    stats: Arc<TerminalsStats>,
    events: mpsc::Sender<DeviceEvent>,
    /// (terminal, reason) pairs already logged: one WARN each, then only counts.
    warned: HashSet<(String, &'static str)>,
    /// Face counting, when `[vision]` is configured.
    vision: Option<VisionLink>,
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
            hasher: MemberHasher::new(),
            stats,
            events,
            warned: HashSet::new(),
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
            Stats::count(&self.stats.unattributed.messages);
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
    /// `receipt` travels with the passage to the core, which settles it once committed.
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
            return match self.camera_snapshot(&camera, payload, now) {
                Some(event) => Ok(Some(event)),
                None => Err(Ack::NotAPassage),
            };
        }
        // A bound message is read with its own terminal's profile only: a login cannot
        // borrow another vendor's mapping to dress up a payload.
        let found = match bound {
            Some(t) => self
                .profiles
                .iter()
                .find(|p| p.name == self.profile_names[t])
                .and_then(|p| p.matches(&topic).map(|m| (p, m))),
            None => self
                .profiles
                .iter()
                .find_map(|p| p.matches(&topic).map(|m| (p, m))),
        };
        let Some((profile, matched)) = found else {
            let stats = match bound {
                Some(t) => &self.stats.terminals[t],
                None => &self.stats.unattributed,
            };
            Stats::count(&stats.messages);
            let reason = if bound.is_some() {
                "wrong_topic"
            } else {
                "unknown_topic"
            };
            stats.reject(reason);
            self.warn_once(
                &topic,
                reason,
                "no terminal profile of this login matches this topic",
            );
            return Err(Ack::Refused(reason));
        };
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
        Stats::count(&stats.messages);
        stats
            .last_seen_ms
            .store(now.as_millisecond().max(0) as u64, Ordering::Relaxed);
        let name = matched
            .terminal
            .as_ref()
            .map(|t| t.to_string())
            .or_else(|| decoded_terminal.map(|t| t.to_string()))
            .unwrap_or_else(|| "(unknown)".into());
        // A login speaks for its own terminal only: a topic or a device id naming another
        // one is a forgery (or a miswired device), refused before anything is counted.
        if let Some(t) = bound {
            let own = self.ids[t].clone();
            let topic_other = matched.terminal.as_ref().is_some_and(|id| *id != own);
            let payload_other = decoded_terminal.is_some_and(|id| *id != own);
            if topic_other || payload_other {
                stats.reject("forged");
                self.warn_once(
                    own.as_str(),
                    "forged",
                    "a message names another terminal than the one that sent it",
                );
                return Err(Ack::Refused("forged"));
            }
        }
        let passage = match result {
            Err(reason) => {
                stats.reject(reason.as_str());
                let detail = reason.to_string();
                self.warn_once(&name, reason.as_str(), &detail);
                return Err(Ack::Refused(reason.as_str()));
            }
            Ok(Decoded::Ignored(_)) => {
                Stats::count(&stats.ignored);
                return Err(Ack::NotAPassage);
            }
            Ok(Decoded::Passage(p)) => p,
        };
        if let Some(reason) = &passage.snapshot_error {
            Stats::count(&stats.bad_snapshots);
            let detail = reason.to_string();
            self.warn_once(&name, "bad_snapshot", &detail);
        }
        // A failed recognition is usually retried at once: not a visit by itself.
        if passage.verdict == PassageVerdict::Fail {
            Stats::count(&stats.ignored);
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
        // The business day the passage belongs to, which is also the salt's day.
        let day = self
            .model
            .day_of_close(self.model.next_close_after(passage.at));
        let member = match &passage.who {
            Who::Member(m) => Some(self.hasher.hash(day, m)),
            Who::Stranger => None,
        };
        let event = DeviceEvent::Passage {
            terminal: t,
            key: passage.dedup_key,
            at: passage.at,
            facts: PassageFacts {
                room: self.rooms[t],
                member,
                fever: passage.fever,
                mask_off: passage.mask == MaskState::Off,
                sensor_error: passage.sensor_error,
                people: 1,
            },
            receipt,
        };
        // The picture beside the record (HTTP) or inside it (MQTT): decoded in memory,
        // counted and dropped; never stored.
        let snapshot = picture.or_else(|| passage.snapshot.map(|s| s.into_bytes()));
        match (snapshot, self.vision.as_mut()) {
            (Some(snapshot), Some(vision)) => Ok(vision.submit(event, snapshot)),
            _ => Ok(Some(event)),
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

/// Subscribing to a broker that is already on the box.
mod external {
    use std::time::Duration;

    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    use super::Incoming;

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
        pub async fn run(self, tx: mpsc::Sender<Incoming>, shutdown: CancellationToken) {
            let mut options =
                MqttOptions::new(self.client_id.clone(), self.host.clone(), self.port);
            options.set_keep_alive(Duration::from_secs(30));
            options.set_max_packet_size(self.max_payload_bytes + 1024, 64 * 1024);
            if let Some((user, pass)) = &self.login {
                options.set_credentials(user.clone(), pass.clone());
            }
            let (client, mut eventloop) = AsyncClient::new(options, 64);
            loop {
                let event = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    e = eventloop.poll() => e,
                };
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        tracing::info!(broker = %format!("{}:{}", self.host, self.port), "subscribed to the terminals' local broker");
                        for f in &self.filters {
                            let _ = client.try_subscribe(f.clone(), QoS::AtLeastOnce);
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let message = Incoming {
                            route: super::Route::Topic(p.topic),
                            payload: p.payload.to_vec(),
                            picture: None,
                            ack: None,
                        };
                        if tx.send(message).await.is_err() {
                            return;
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

    /// A hall with one Hikvision terminal, `T1`, in the lobby.
    fn ingest(dir: &Path) -> (Ingest, Arc<TerminalsStats>) {
        std::fs::write(dir.join("t1.pass"), "s3cret\n").expect("password file");
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
        std::fs::write(dir.path().join("cam.pass"), "pw").expect("password file");
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
