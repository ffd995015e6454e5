//! The terminals' MQTT endpoint: hallgate's own publish-only MQTT 3.1.1 server, where the
//! face-recognition terminals (and room cameras) of the hall deliver their records.
//!
//! ```text
//! terminal ──CONNECT (its login)──► endpoint ──Incoming{Route::Bound, ack}──► ingest ──► core
//!          ◄──PUBACK, once the core has committed the passage (or refused it, counted)──┘
//! ```
//!
//! Terminals only publish to the gateway, so there is no routing here and no broker: nothing
//! is stored (retained flags are ignored), nothing is ever sent to a terminal but the answers
//! to its own packets (SUBSCRIBE is answered with a failure for every filter), and there is no
//! internal client whose id could be taken over. Each login publishes as its own terminal only:
//! the ingest refuses (and counts) a topic or a device id that names another one
//! ([`super::Route::Bound`]); a camera login may publish its own snapshot topic only.
//!
//! A PUBACK (QoS 1) or PUBREC (QoS 2) goes out only when the ingest answers the message's ack
//! — after the commit that holds the passage, or at once for a heartbeat or a refused message,
//! so a terminal never re-sends a poison message forever — and in the order the publishes came
//! (MQTT requires it). If the gateway stops first, the connection is closed without it: the
//! terminal keeps the record and re-sends it, and the core drops the copy it may already have.
//!
//! Bounds, each refusing the newcomer and never the endpoint: connections per login and in all
//! ([`Limits`]), the CONNECT deadline, keep-alive (1.5 ×), the packet size (over it: counted as
//! `oversized`, closed) and the in-flight window (a full window stops reading the socket: TCP
//! back-pressure). Failed logins are rate limited per source IP ([`FailureGate`]) and logged
//! once per login (or IP) per minute. Shared state sits behind mutexes whose poisoning is
//! ignored (the state stays consistent at every await-free step), so one panicking connection
//! task cannot stop the others.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Packet, PubAck, PubComp, PubRec, SubAck,
    SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{Error as CodecError, Protocol, QoS};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{Ack, Incoming, Route, TerminalIngest, TerminalsStats};
use crate::config::Config;
use crate::config::terminals::{TerminalTransport, camera_topic};
use crate::devices::PollStats;

/// A CONNECT must arrive this soon after the TCP connection opens.
const CONNECT_WITHIN: Duration = Duration::from_secs(5);
/// The largest CONNECT read (client id, login, will): far above any real one.
const MAX_CONNECT_BYTES: usize = 16 * 1024;
/// Publishes of one connection awaiting their ack; beyond it the socket is not read.
pub const IN_FLIGHT_WINDOW: usize = 32;
/// Connections one login may hold at once (a terminal reconnecting, a second client id).
pub const PER_LOGIN: usize = 4;
/// A keep-alive of 0 (none) or above this is held to this, so an idle socket ends.
const MAX_KEEP_ALIVE: Duration = Duration::from_secs(600);
/// A write to a terminal that does not read is given up after this long.
const WRITE_WITHIN: Duration = Duration::from_secs(10);
/// Sockets over the limit answered with "server unavailable" at once; more are just closed.
const REFUSERS: usize = 16;
/// Failed logins per source IP per window before the IP is refused unheard.
const FAILURES_PER_WINDOW: u32 = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Source IPs (and logins) the failure gate remembers; beyond it the oldest are forgotten.
const GATE_ENTRIES: usize = 4096;

/// Who a login speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A terminal (index into `Config::terminals`).
    Terminal(usize),
    /// A room camera (index into `Config::cameras`) and the one topic it may publish.
    Camera { camera: usize, topic: String },
}

/// One login the endpoint admits.
struct Login {
    user: String,
    /// SHA-256 of the password: compared in constant time, whatever the lengths.
    digest: [u8; 32],
    principal: Principal,
}

/// The logins of the hall's MQTT terminals and cameras, and what each may publish.
pub struct Logins {
    logins: Vec<Login>,
}

fn digest(password: &[u8]) -> [u8; 32] {
    Sha256::digest(password).into()
}

/// Equal without an early exit: the time taken says nothing about where they differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

impl Logins {
    /// Every MQTT terminal's and every camera's login from the config.
    pub fn from_config(config: &Config) -> Self {
        let terminals = config
            .terminals
            .iter()
            .enumerate()
            .filter(|(_, t)| t.transport == TerminalTransport::Mqtt)
            .filter_map(|(i, t)| {
                t.login
                    .as_ref()
                    .map(|(u, s)| (u.clone(), s.expose(), Principal::Terminal(i)))
            });
        let cameras = config.cameras.iter().enumerate().filter_map(|(i, c)| {
            c.login.as_ref().map(|(u, s)| {
                (
                    u.clone(),
                    s.expose(),
                    Principal::Camera {
                        camera: i,
                        topic: camera_topic(&c.id),
                    },
                )
            })
        });
        Logins {
            logins: terminals
                .chain(cameras)
                .map(|(user, password, principal)| Login {
                    user,
                    digest: digest(password.as_bytes()),
                    principal,
                })
                .collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.logins.len()
    }

    pub fn is_empty(&self) -> bool {
        self.logins.is_empty()
    }

    /// The index of the login with this user name and password. Every login's digest is
    /// compared, so an unknown user takes as long as a wrong password.
    pub fn authenticate(&self, user: &str, password: &str) -> Option<usize> {
        let offered = digest(password.as_bytes());
        let mut found = None;
        for (i, login) in self.logins.iter().enumerate() {
            let ok = same(&login.digest, &offered);
            if ok && login.user == user && found.is_none() {
                found = Some(i);
            }
        }
        found
    }

    pub fn principal(&self, login: usize) -> Option<&Principal> {
        self.logins.get(login).map(|l| &l.principal)
    }

    pub fn user(&self, login: usize) -> &str {
        self.logins.get(login).map_or("", |l| l.user.as_str())
    }

    /// How a publish of this login on `topic` reaches the ingest, or why it is refused here.
    /// A terminal's topic and payload are checked against its own id by the ingest; a camera
    /// may publish its own snapshot topic and nothing else.
    pub fn route(&self, login: usize, topic: &str) -> Result<Route, &'static str> {
        match self.principal(login) {
            Some(Principal::Terminal(terminal)) => Ok(Route::Bound {
                topic: topic.to_string(),
                terminal: *terminal,
            }),
            Some(Principal::Camera { topic: own, .. }) if own == topic => {
                Ok(Route::Topic(topic.to_string()))
            }
            Some(Principal::Camera { .. }) => Err("wrong_topic"),
            None => Err("unknown_login"),
        }
    }
}

/// How many connections the endpoint holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub per_login: usize,
    /// Authenticated connections in all; as many again may be between accept and CONNECT.
    pub total: usize,
}

impl Limits {
    pub fn for_logins(logins: usize) -> Self {
        Limits {
            per_login: PER_LOGIN,
            total: (logins * 2).max(16),
        }
    }
}

/// What the failure gate says about a login attempt from an IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Check the credentials.
    Check,
    /// Too many failures from this IP lately: refuse without checking.
    Refuse,
}

/// Failed logins per source IP, and when each was last logged: a pure clock-driven counter
/// (the caller passes `now`), so guessing is slowed to a few tries a minute per address and
/// the log gets one line per login (or IP) per minute.
#[derive(Debug, Default)]
pub struct FailureGate {
    /// IP → (start of its window, failures in it).
    failures: HashMap<IpAddr, (Instant, u32)>,
    /// Login name (or IP) → when a failure for it was last logged.
    logged: HashMap<String, Instant>,
}

impl FailureGate {
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Gate {
        match self.failures.get(&ip) {
            Some(&(start, n))
                if now.saturating_duration_since(start) < FAILURE_WINDOW
                    && n >= FAILURES_PER_WINDOW =>
            {
                Gate::Refuse
            }
            _ => Gate::Check,
        }
    }

    /// Records a failed login from `ip` naming `who`; true when it should be logged.
    pub fn failed(&mut self, ip: IpAddr, who: &str, now: Instant) -> bool {
        if self.failures.len() >= GATE_ENTRIES {
            self.failures
                .retain(|_, (start, _)| now.saturating_duration_since(*start) < FAILURE_WINDOW);
            if self.failures.len() >= GATE_ENTRIES {
                self.failures.clear();
            }
        }
        let entry = self.failures.entry(ip).or_insert((now, 0));
        if now.saturating_duration_since(entry.0) >= FAILURE_WINDOW {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        self.log_due(who, now)
    }

    /// True when `who` was not logged within the last minute (and marks it logged).
    pub fn log_due(&mut self, who: &str, now: Instant) -> bool {
        if self.logged.len() >= GATE_ENTRIES {
            self.logged
                .retain(|_, at| now.saturating_duration_since(*at) < FAILURE_WINDOW);
            if self.logged.len() >= GATE_ENTRIES {
                self.logged.clear();
            }
        }
        match self.logged.get(who) {
            Some(at) if now.saturating_duration_since(*at) < FAILURE_WINDOW => false,
            _ => {
                self.logged.insert(who.to_string(), now);
                true
            }
        }
    }
}

/// Why a login's connection is not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Full {
    Login,
    Total,
}

/// The live authenticated connections. Client ids are per login: a connection with the id of
/// a live one of the same login replaces it (MQTT's session takeover); another login's ids
/// are another namespace, so no login can push a terminal (or the gateway) off.
#[derive(Default)]
struct Registry {
    next: u64,
    total: usize,
    per_login: HashMap<usize, usize>,
    sessions: HashMap<(usize, String), (u64, CancellationToken)>,
}

struct Shared {
    logins: Logins,
    limits: Limits,
    max_packet: usize,
    stats: Arc<TerminalsStats>,
    registry: Mutex<Registry>,
    gate: Mutex<FailureGate>,
    /// Sockets between accept and CONNECT (or being refused).
    handshaking: std::sync::atomic::AtomicUsize,
    refusing: std::sync::atomic::AtomicUsize,
}

/// A poisoned lock means a task panicked while holding it; each critical section here leaves
/// the state consistent at every step, so carry on with it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A live connection's place in the registry; dropping it frees the slot.
struct Session {
    shared: Arc<Shared>,
    login: usize,
    client_id: String,
    generation: u64,
    kicked: CancellationToken,
}

impl Shared {
    fn admit(self: &Arc<Self>, login: usize, client_id: &str) -> Result<Session, Full> {
        let mut r = lock(&self.registry);
        let key = (login, client_id.to_string());
        let replacing = r.sessions.contains_key(&key);
        if !replacing {
            if r.per_login.get(&login).copied().unwrap_or(0) >= self.limits.per_login {
                return Err(Full::Login);
            }
            if r.total >= self.limits.total {
                return Err(Full::Total);
            }
        }
        r.next += 1;
        let generation = r.next;
        let kicked = CancellationToken::new();
        if let Some((_, old)) = r.sessions.insert(key, (generation, kicked.clone())) {
            old.cancel();
        }
        r.total += 1;
        *r.per_login.entry(login).or_default() += 1;
        Ok(Session {
            shared: self.clone(),
            login,
            client_id: client_id.to_string(),
            generation,
            kicked,
        })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let mut r = lock(&self.shared.registry);
        r.total = r.total.saturating_sub(1);
        if let Some(n) = r.per_login.get_mut(&self.login) {
            *n = n.saturating_sub(1);
        }
        let key = (self.login, std::mem::take(&mut self.client_id));
        if r.sessions
            .get(&key)
            .is_some_and(|(g, _)| *g == self.generation)
        {
            r.sessions.remove(&key);
        }
    }
}

/// Decrements a counter of sockets when dropped.
struct Slot<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Takes a slot of `counter` if fewer than `max` are taken.
fn take_slot(counter: &std::sync::atomic::AtomicUsize, max: usize) -> Option<Slot<'_>> {
    counter
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|_| Slot(counter))
}

/// The endpoint's settings.
pub struct Endpoint {
    pub logins: Logins,
    pub limits: Limits,
    /// The largest packet read; a larger one is counted as `oversized` and its connection
    /// closed.
    pub max_packet: usize,
}

/// Binds `listen` now (so a taken port is a start-up error).
pub fn bind(listen: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let listener = std::net::TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}

impl Endpoint {
    /// Accepts terminals until `shutdown`. Never returns early on a bad client or a full
    /// table; an error from `accept` (out of file descriptors) is waited out.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        ingest: TerminalIngest,
        stats: Arc<TerminalsStats>,
        shutdown: CancellationToken,
    ) {
        let shared = Arc::new(Shared {
            logins: self.logins,
            limits: self.limits,
            max_packet: self.max_packet,
            stats,
            registry: Mutex::new(Registry::default()),
            gate: Mutex::new(FailureGate::default()),
            handshaking: Default::default(),
            refusing: Default::default(),
        });
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                a = listener.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a terminal connection; retrying shortly");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let shared = shared.clone();
            let ingest = ingest.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let outcome = connection(stream, peer, &shared, ingest, shutdown).await;
                match outcome {
                    Closed::Normal(why) => {
                        tracing::debug!(%peer, why, "a terminal connection closed");
                    }
                    Closed::Problem(why) => {
                        tracing::info!(%peer, why, "a terminal connection was closed");
                    }
                }
            });
        }
    }
}

/// How a connection ended.
enum Closed {
    /// The terminal left, or the gateway is stopping.
    Normal(&'static str),
    /// The terminal broke a rule (logged at INFO; counted where it says so).
    Problem(&'static str),
}

/// Reads one packet into `buf`, within `deadline`.
async fn read_packet(
    reader: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Packet, Closed> {
    loop {
        match Packet::read(buf, max) {
            Ok(packet) => return Ok(packet),
            Err(CodecError::InsufficientBytes(n)) => buf.reserve(n),
            Err(CodecError::PayloadSizeLimitExceeded(_)) => {
                return Err(Closed::Problem("packet over the size limit"));
            }
            Err(_) => return Err(Closed::Problem("not an MQTT 3.1.1 packet")),
        }
        match reader.read_buf(buf).await {
            Ok(0) => return Err(Closed::Normal("closed before CONNECT")),
            Ok(_) => {}
            Err(_) => return Err(Closed::Normal("socket error before CONNECT")),
        }
    }
}

async fn send(writer: &mut OwnedWriteHalf, packet: Packet) -> Result<(), Closed> {
    let mut out = BytesMut::with_capacity(16);
    packet
        .write(&mut out, usize::MAX)
        .map_err(|_| Closed::Problem("cannot encode an answer"))?;
    match tokio::time::timeout(WRITE_WITHIN, writer.write_all(&out)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Closed::Normal("socket error")),
        Err(_) => Err(Closed::Problem("the terminal does not read its answers")),
    }
}

async fn refuse(writer: &mut OwnedWriteHalf, code: ConnectReturnCode) {
    let _ = send(writer, Packet::ConnAck(ConnAck::new(code, false))).await;
    let _ = writer.shutdown().await;
}

/// A publish waiting for the ingest's answer; answered in arrival order.
struct Pending {
    pkid: u16,
    qos: QoS,
    answer: oneshot::Receiver<Ack>,
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    ingest: TerminalIngest,
    shutdown: CancellationToken,
) -> Closed {
    let (mut reader, mut writer) = stream.into_split();
    let Some(handshake) = take_slot(&shared.handshaking, shared.limits.total) else {
        // Over the limit: answer "server unavailable" to a few, close the rest unheard.
        let Some(_refusing) = take_slot(&shared.refusing, REFUSERS) else {
            return Closed::Problem("too many connections; closed unheard");
        };
        PollStats::count(&shared.stats.endpoint.refused);
        let mut buf = BytesMut::with_capacity(256);
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            read_packet(&mut reader, &mut buf, MAX_CONNECT_BYTES),
        )
        .await;
        refuse(&mut writer, ConnectReturnCode::ServiceUnavailable).await;
        return Closed::Problem("too many connections waiting for their CONNECT");
    };
    let mut buf = BytesMut::with_capacity(1024);
    let first = tokio::select! {
        _ = shutdown.cancelled() => return Closed::Normal("the gateway is stopping"),
        r = tokio::time::timeout(
            CONNECT_WITHIN,
            read_packet(&mut reader, &mut buf, MAX_CONNECT_BYTES),
        ) => r,
    };
    let connect = match first {
        Err(_) => return Closed::Problem("no CONNECT in time"),
        Ok(Err(closed)) => return closed,
        Ok(Ok(Packet::Connect(c))) => c,
        Ok(Ok(_)) => return Closed::Problem("the first packet was not CONNECT"),
    };
    let login = match authenticate(shared, peer.ip(), &connect) {
        Ok(login) => login,
        Err(code) => {
            refuse(&mut writer, code).await;
            return Closed::Problem("login refused");
        }
    };
    let session = match shared.admit(login, &connect.client_id) {
        Ok(session) => session,
        Err(full) => {
            PollStats::count(&shared.stats.endpoint.refused);
            let user = shared.logins.user(login);
            if lock(&shared.gate).log_due(&format!("full:{user}"), Instant::now()) {
                tracing::warn!(
                    login = user,
                    %peer,
                    limit = match full {
                        Full::Login => shared.limits.per_login,
                        Full::Total => shared.limits.total,
                    },
                    per = match full {
                        Full::Login => "login",
                        Full::Total => "endpoint",
                    },
                    "a terminal connection was refused: too many connections; further refusals this minute are only counted"
                );
            }
            refuse(&mut writer, ConnectReturnCode::ServiceUnavailable).await;
            return Closed::Problem("too many connections");
        }
    };
    drop(handshake);
    // A publish-only session holds nothing on this side that a restart could lose: no
    // subscriptions, nothing queued for the terminal, and a PUBREL is answered whether or not
    // its PUBREC is remembered. So a terminal asking to keep its session is told it has one,
    // and re-sends what it had not had acknowledged — which is what keeps it from being lost.
    let session_present = !connect.clean_session;
    if let Err(closed) = send(
        &mut writer,
        Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, session_present)),
    )
    .await
    {
        return closed;
    }
    tracing::info!(
        login = shared.logins.user(login),
        client_id = %connect.client_id,
        %peer,
        "a terminal connected"
    );
    let keep_alive = match Duration::from_secs(u64::from(connect.keep_alive)) {
        d if d.is_zero() || d > MAX_KEEP_ALIVE => MAX_KEEP_ALIVE,
        d => d,
    };
    let mut link = Link {
        shared,
        login,
        reader,
        writer,
        buf,
        pending: VecDeque::new(),
        ingest,
        silence: keep_alive + keep_alive / 2,
    };
    let closed = link.run(&session.kicked, &shutdown).await;
    drop(session);
    closed
}

/// Checks a CONNECT's login; the CONNACK code to refuse it with otherwise.
fn authenticate(
    shared: &Shared,
    ip: IpAddr,
    connect: &Connect,
) -> Result<usize, ConnectReturnCode> {
    if connect.protocol != Protocol::V4 {
        return Err(ConnectReturnCode::RefusedProtocolVersion);
    }
    let now = Instant::now();
    if lock(&shared.gate).check(ip, now) == Gate::Refuse {
        PollStats::count(&shared.stats.endpoint.login_failures);
        if lock(&shared.gate).log_due(&format!("blocked:{ip}"), now) {
            tracing::warn!(
                %ip,
                "终端登录被拒 (terminal logins refused): too many failed logins from this address; refusing it unheard for up to a minute"
            );
        }
        return Err(ConnectReturnCode::NotAuthorized);
    }
    let (user, password) = connect
        .login
        .as_ref()
        .map_or(("", ""), |l| (l.username.as_str(), l.password.as_str()));
    if let Some(login) = shared.logins.authenticate(user, password) {
        return Ok(login);
    }
    PollStats::count(&shared.stats.endpoint.login_failures);
    // Logged under the login name only when it is one of ours: an attacker's made-up names
    // must not grow the log; they are logged under the address.
    let known = shared.logins.logins.iter().any(|l| l.user == user);
    let who = if known {
        user.to_string()
    } else {
        ip.to_string()
    };
    if lock(&shared.gate).failed(ip, &who, now) {
        tracing::warn!(
            login = if known { user } else { "(unknown)" },
            %ip,
            "终端登录失败 (terminal login failed): wrong user name or password; further failures for it this minute are only counted"
        );
    }
    Err(ConnectReturnCode::BadUserNamePassword)
}

/// What woke a connection's loop.
enum Woke {
    Stop(&'static str),
    Silent,
    Read,
    /// The oldest pending publish was answered (`false`: its ack was dropped unanswered).
    Answer(bool),
}

/// One authenticated connection.
struct Link<'a> {
    shared: &'a Shared,
    login: usize,
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    buf: BytesMut,
    pending: VecDeque<Pending>,
    ingest: TerminalIngest,
    /// How long the terminal may be silent (1.5 × its keep-alive).
    silence: Duration,
}

impl Link<'_> {
    async fn run(&mut self, kicked: &CancellationToken, shutdown: &CancellationToken) -> Closed {
        let mut heard = tokio::time::Instant::now();
        loop {
            // Packets already read, as far as the window allows.
            while self.pending.len() < IN_FLIGHT_WINDOW {
                match Packet::read(&mut self.buf, self.shared.max_packet) {
                    Ok(packet) => {
                        heard = tokio::time::Instant::now();
                        if let Err(closed) = self.packet(packet, kicked, shutdown).await {
                            return closed;
                        }
                    }
                    Err(CodecError::InsufficientBytes(n)) => {
                        self.buf.reserve(n);
                        break;
                    }
                    Err(CodecError::PayloadSizeLimitExceeded(size)) => {
                        self.count_oversized(size);
                        return Closed::Problem("packet over the size limit");
                    }
                    Err(_) => return Closed::Problem("not an MQTT 3.1.1 packet"),
                }
            }
            let reading = self.pending.len() < IN_FLIGHT_WINDOW;
            if !reading {
                // A full window is the gateway's wait, not the terminal's silence.
                heard = tokio::time::Instant::now();
            }
            let woke = {
                let pending = &mut self.pending;
                let reader = &mut self.reader;
                let buf = &mut self.buf;
                tokio::select! {
                    _ = shutdown.cancelled() => Woke::Stop("the gateway is stopping"),
                    _ = kicked.cancelled() => {
                        Woke::Stop("replaced by a new connection with the same client id")
                    }
                    answer = async {
                        match pending.front_mut() {
                            Some(p) => (&mut p.answer).await,
                            None => std::future::pending().await,
                        }
                    } => Woke::Answer(answer.is_ok()),
                    read = reader.read_buf(buf), if reading => match read {
                        Ok(0) => Woke::Stop("the terminal closed the connection"),
                        Ok(_) => Woke::Read,
                        Err(_) => Woke::Stop("socket error"),
                    },
                    _ = tokio::time::sleep_until(heard + self.silence), if reading => {
                        Woke::Silent
                    }
                }
            };
            match woke {
                Woke::Stop(why) => return Closed::Normal(why),
                Woke::Silent => return Closed::Problem("keep-alive expired"),
                Woke::Read => {}
                // Not safe: the gateway stopped before committing it. The terminal hears
                // nothing and re-sends it on its next connection.
                Woke::Answer(false) => {
                    return Closed::Normal("the ingest stopped before the message was safe");
                }
                Woke::Answer(true) => {
                    let Some(p) = self.pending.pop_front() else {
                        continue;
                    };
                    let reply = match p.qos {
                        QoS::ExactlyOnce => Packet::PubRec(PubRec::new(p.pkid)),
                        _ => Packet::PubAck(PubAck::new(p.pkid)),
                    };
                    if let Err(closed) = send(&mut self.writer, reply).await {
                        return closed;
                    }
                }
            }
        }
    }

    fn count_oversized(&self, size: usize) {
        let stats = match self.shared.logins.principal(self.login) {
            Some(Principal::Terminal(t)) => self.shared.stats.terminals.get(*t),
            _ => None,
        }
        .unwrap_or(&self.shared.stats.unattributed);
        PollStats::count(&stats.messages);
        stats.reject("oversized");
        let user = self.shared.logins.user(self.login);
        if lock(&self.shared.gate).log_due(&format!("oversized:{user}"), Instant::now()) {
            tracing::warn!(
                login = user,
                bytes = size,
                limit = self.shared.max_packet,
                "a terminal sent a packet over the size limit; refused, counted, connection closed"
            );
        }
    }

    async fn packet(
        &mut self,
        packet: Packet,
        kicked: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> Result<(), Closed> {
        match packet {
            Packet::Publish(publish) => {
                // Retained or not, nothing is stored: the flag is ignored.
                let (tx, rx) = oneshot::channel();
                let message = match self.shared.logins.route(self.login, &publish.topic) {
                    Ok(route) => Some(Incoming {
                        route,
                        payload: publish.payload.to_vec(),
                        picture: None,
                        ack: (publish.qos != QoS::AtMostOnce).then_some(tx),
                    }),
                    Err(reason) => {
                        // A camera off its topic: refused here, counted, acknowledged.
                        let stats = &self.shared.stats.unattributed;
                        PollStats::count(&stats.messages);
                        stats.reject(reason);
                        let _ = tx.send(Ack::Refused(reason));
                        None
                    }
                };
                if let Some(message) = message {
                    let delivered = tokio::select! {
                        _ = shutdown.cancelled() => return Err(Closed::Normal("the gateway is stopping")),
                        _ = kicked.cancelled() => return Err(Closed::Normal("replaced by a new connection with the same client id")),
                        d = self.ingest.deliver(message) => d,
                    };
                    if delivered.is_err() {
                        return Err(Closed::Normal("the ingest has stopped"));
                    }
                }
                if publish.qos != QoS::AtMostOnce {
                    self.pending.push_back(Pending {
                        pkid: publish.pkid,
                        qos: publish.qos,
                        answer: rx,
                    });
                }
                Ok(())
            }
            // QoS 2's second half: the message was delivered when PUBREC went out.
            Packet::PubRel(rel) => {
                send(&mut self.writer, Packet::PubComp(PubComp::new(rel.pkid))).await
            }
            Packet::PingReq => send(&mut self.writer, Packet::PingResp).await,
            Packet::Subscribe(sub) => {
                // Terminals publish; they read nothing here.
                let codes = vec![SubscribeReasonCode::Failure; sub.filters.len()];
                send(
                    &mut self.writer,
                    Packet::SubAck(SubAck::new(sub.pkid, codes)),
                )
                .await
            }
            Packet::Unsubscribe(unsub) => {
                send(
                    &mut self.writer,
                    Packet::UnsubAck(UnsubAck::new(unsub.pkid)),
                )
                .await
            }
            Packet::Disconnect => Err(Closed::Normal("the terminal disconnected")),
            Packet::Connect(_) => Err(Closed::Problem("a second CONNECT")),
            // Acks of publishes the endpoint never sends.
            Packet::PubAck(_)
            | Packet::PubRec(_)
            | Packet::PubComp(_)
            | Packet::PingResp
            | Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_) => Err(Closed::Problem("a packet only a server sends")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logins() -> Logins {
        let make = |user: &str, password: &str, principal| Login {
            user: user.into(),
            digest: digest(password.as_bytes()),
            principal,
        };
        Logins {
            logins: vec![
                make("t0", "password-zero", Principal::Terminal(0)),
                make("t1", "password-one!", Principal::Terminal(1)),
                make(
                    "cam",
                    "camera-password",
                    Principal::Camera {
                        camera: 0,
                        topic: "cameras/cam-1/snapshot".into(),
                    },
                ),
            ],
        }
    }

    #[test]
    fn a_login_is_its_own_user_with_its_own_password_only() {
        let l = logins();
        assert_eq!(l.authenticate("t0", "password-zero"), Some(0));
        assert_eq!(l.authenticate("t1", "password-one!"), Some(1));
        // Another login's password, an unknown user, an empty login.
        assert_eq!(l.authenticate("t0", "password-one!"), None);
        assert_eq!(l.authenticate("nobody", "password-zero"), None);
        assert_eq!(l.authenticate("", ""), None);
    }

    #[test]
    fn a_terminal_publishes_bound_to_itself_and_a_camera_only_on_its_own_topic() {
        let l = logins();
        assert_eq!(
            l.route(1, "terminals/hikvision/T9/events"),
            Ok(Route::Bound {
                topic: "terminals/hikvision/T9/events".into(),
                terminal: 1
            })
        );
        assert_eq!(
            l.route(2, "cameras/cam-1/snapshot"),
            Ok(Route::Topic("cameras/cam-1/snapshot".into()))
        );
        assert_eq!(l.route(2, "cameras/cam-2/snapshot"), Err("wrong_topic"));
        assert_eq!(l.route(2, "terminals/uniubi/x"), Err("wrong_topic"));
        assert_eq!(l.route(7, "cameras/cam-1/snapshot"), Err("unknown_login"));
    }

    #[test]
    fn five_failures_in_a_minute_shut_an_address_out_for_the_rest_of_it() {
        let mut gate = FailureGate::default();
        let ip: IpAddr = "192.168.50.40".parse().expect("ip");
        let other: IpAddr = "192.168.50.41".parse().expect("ip");
        let t0 = Instant::now();
        for i in 0..5 {
            assert_eq!(gate.check(ip, t0), Gate::Check, "attempt {i}");
            gate.failed(ip, "t0", t0 + Duration::from_secs(i));
        }
        assert_eq!(gate.check(ip, t0 + Duration::from_secs(30)), Gate::Refuse);
        assert_eq!(gate.check(other, t0 + Duration::from_secs(30)), Gate::Check);
        // The window started at the first failure; a minute on, the address may try again.
        assert_eq!(gate.check(ip, t0 + Duration::from_secs(61)), Gate::Check);
    }

    #[test]
    fn a_failed_login_is_logged_once_a_minute() {
        let mut gate = FailureGate::default();
        let ip: IpAddr = "10.0.0.9".parse().expect("ip");
        let t0 = Instant::now();
        assert!(gate.failed(ip, "t0", t0));
        assert!(!gate.failed(ip, "t0", t0 + Duration::from_secs(1)));
        assert!(gate.failed(ip, "t1", t0 + Duration::from_secs(2)));
        assert!(!gate.failed(ip, "t0", t0 + Duration::from_secs(59)));
        assert!(gate.failed(ip, "t0", t0 + Duration::from_secs(61)));
    }

    #[test]
    fn the_gate_forgets_addresses_rather_than_grow_without_bound() {
        let mut gate = FailureGate::default();
        let t0 = Instant::now();
        for i in 0..(GATE_ENTRIES as u32 * 2) {
            let ip = IpAddr::from(i.to_be_bytes());
            gate.failed(ip, &ip.to_string(), t0);
        }
        assert!(gate.failures.len() <= GATE_ENTRIES);
        assert!(gate.logged.len() <= GATE_ENTRIES);
    }

    #[test]
    fn the_limits_grow_with_the_hall_and_never_go_below_sixteen() {
        assert_eq!(Limits::for_logins(3).total, 16);
        assert_eq!(Limits::for_logins(40).total, 80);
        assert_eq!(Limits::for_logins(3).per_login, PER_LOGIN);
    }
}
