//! `hallgate simulate-terminals` for terminals that speak HTTP: simulated Hikvision, Uniubi,
//! ZKTeco and Dahua face/temperature terminals, with ground truth.
//!
//! The terminals are the hall's `[[terminals]]` whose `transport` is not MQTT. Pushing
//! terminals (`http_push`) are HTTP clients of the gateway's `[terminal_http]` listener:
//! Hikvision ISAPI listening (multipart events), Uniubi recognition callbacks (JSON or form),
//! ZKTeco ADMS (`/iclock/…`, tab-separated attendance lines). Pulled terminals
//! (`hikvision_pull`, `hikvision_stream`, `dahua_stream`) are HTTP servers at their configured
//! `address`, with Digest logins, a lock-out after five failed logins, and an event log the
//! gateway searches (`AcsEvent`) or reads from an event stream (`alertStream`, Dahua's
//! `eventManager.cgi`).
//!
//! What happens is decided by the MQTT simulator's seeded [`Script`] (the same passages,
//! members, readings, re-sends and heartbeats for the same seed), and counted with its
//! [`TerminalTally`] and truth lines — but a line is written only when the gateway has the record:
//! for a push, when it answered success (real devices keep a record they could not deliver
//! and send it again later, and so does the simulator); for a pull, when the record first
//! went out in a search answer or on a stream. So a test can hold "every acknowledged
//! passage counted exactly once" against the gateway's figures.
//!
//! ```text
//! Script ─► ScriptStep ─► player ─┬─► PushQueue ─► push::run (POST, retry until success) ─┐
//!                           └─► DeviceLog ─► serve::run (AcsEvent / streams)          ├─► Ledger ─► truth
//!                                                                                     ┘
//! ```
//!
//! The truth file (JSON lines, names never written):
//! - one line per record the gateway took, in the order it took them: the MQTT simulator's
//!   `passage` / `resend` / `bad` / `heartbeat` lines (same fields; `event` is the serial the
//!   device sent, `t_ms` when it happened) plus `transport` and `attempts` (requests it took;
//!   1 for pulls); `{"kind":"fail", terminal, room, t_ms, offset_ms, event, transport,
//!   attempts}` for a failed verification (Hikvision minor 76, Uniubi `face_1`, Dahua status
//!   0: not a visit);
//! - at the end, `{"kind":"unacknowledged", …, "of":"passage"|"resend"|"fail"}` for every
//!   record still held by its terminal (never answered with success, or never read);
//! - the final line: the MQTT simulator's (`final`, `totals` of the records taken,
//!   `redelivered` = records sent again after a failed request) plus `complete`,
//!   `unacknowledged` and `terminals`: per terminal [`TerminalReport`] (requests,
//!   failed_requests, retries, failed_logins, lockouts, refused_while_locked, connections,
//!   max_connections, …).
//!
//! Pure parts: [`encode`] (records to vendor bytes), [`digest`] (Digest logins, lock-out),
//! [`device_log`] (a pulled device's log and its paged search). The shell is [`run`] with
//! [`push`] (one task and one connection per pushing terminal) and [`serve`] (one listener
//! per pulled terminal).

pub mod device_log;
pub mod digest;
pub mod encode;
mod push;
mod serve;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::{Offset, TimeZone};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::config::terminals::TerminalTransport;
use crate::simulate::terminals::{
    FinalLine, Message, MessageLine, Script, ScriptOptions, ScriptStep, SimTerminal, TerminalTally,
    Vendor,
};
use crate::terminals::{DecodeOptions, TerminalId};

use device_log::DeviceLog;
use encode::HttpEncoder;

/// Of the passages at terminals that log failed verifications (Hikvision 76, Dahua status
/// 0), how often one follows: somebody unknown tried, or a member's face was not matched.
/// Drawn from its own generator, so the script stays the MQTT simulator's for the seed.
pub const FAIL_SHARE: f64 = 0.05;
/// A ZKTeco terminal does not log the same person twice within its duplicate-punch period;
/// its records carry no serial, so the gateway tells them apart by PIN and second.
const ZK_DUPLICATE_PUNCH_SECS: i64 = 2;
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// How a simulated HTTP terminal talks, from its `transport` and `profile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpKind {
    /// Hikvision ISAPI listening: multipart `AccessControllerEvent` posts.
    HikvisionPush,
    /// Uniubi Uface recognition callbacks.
    UniubiPush,
    /// ZKTeco ADMS (`/iclock/cdata`).
    ZktecoPush,
    /// A Hikvision terminal the gateway searches (`AcsEvent`).
    HikvisionPull,
    /// A Hikvision terminal the gateway reads the `alertStream` of.
    HikvisionStream,
    /// A Dahua terminal the gateway reads the `eventManager.cgi` stream of.
    DahuaStream,
}

impl HttpKind {
    /// The kind for a terminal's `transport` and profile name; `None` for MQTT or a push
    /// profile of a vendor the simulator does not play.
    pub fn of(transport: &str, profile: &str) -> Option<HttpKind> {
        let profile = profile.to_ascii_lowercase();
        match transport {
            "http_push" if profile.starts_with("hikvision") => Some(HttpKind::HikvisionPush),
            "http_push" if profile.starts_with("uniubi") => Some(HttpKind::UniubiPush),
            "http_push" if profile.starts_with("zkteco") => Some(HttpKind::ZktecoPush),
            "hikvision_pull" => Some(HttpKind::HikvisionPull),
            "hikvision_stream" => Some(HttpKind::HikvisionStream),
            "dahua_stream" => Some(HttpKind::DahuaStream),
            _ => None,
        }
    }

    pub fn transport(self) -> &'static str {
        match self {
            HttpKind::HikvisionPush | HttpKind::UniubiPush | HttpKind::ZktecoPush => "http_push",
            HttpKind::HikvisionPull => "hikvision_pull",
            HttpKind::HikvisionStream => "hikvision_stream",
            HttpKind::DahuaStream => "dahua_stream",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            HttpKind::HikvisionPush => "hikvision_push",
            HttpKind::UniubiPush => "uniubi_push",
            HttpKind::ZktecoPush => "zkteco_push",
            HttpKind::HikvisionPull => "hikvision_pull",
            HttpKind::HikvisionStream => "hikvision_stream",
            HttpKind::DahuaStream => "dahua_stream",
        }
    }

    pub fn is_push(self) -> bool {
        matches!(
            self,
            HttpKind::HikvisionPush | HttpKind::UniubiPush | HttpKind::ZktecoPush
        )
    }

    /// The MQTT vendor whose traits the script draws by: Uniubi reports strangers and
    /// carries a snapshot field; the others see members only (an unknown face is a failed
    /// verification, not a visit), all check masks.
    pub fn script_vendor(self) -> Vendor {
        match self {
            HttpKind::UniubiPush => Vendor::UniubiUface,
            _ => Vendor::HikvisionAcs,
        }
    }

    /// Whether its terminals send failed verifications as records of their own (Hikvision
    /// minor 76, Uniubi `face_1`, Dahua status 0); ZKTeco logs passes only.
    pub fn logs_failures(self) -> bool {
        self != HttpKind::ZktecoPush
    }

    /// Whether malformed records are played (vendors with a JSON body to break).
    fn sends_bad(self) -> bool {
        matches!(self, HttpKind::HikvisionPush | HttpKind::UniubiPush)
    }
}

/// One simulated HTTP terminal.
#[derive(Debug, Clone)]
pub struct HttpTerminal {
    /// Its id, script vendor, room and invented LAN address (`topic` is unused here).
    pub sim: SimTerminal,
    /// Its place in [`HttpPlan::terminals`], which is the script's terminal index.
    pub index: usize,
    pub kind: HttpKind,
    /// Push: the HTTP Basic user; pull: the Digest user. `admin` when the config has none.
    pub username: String,
    /// Push: the Basic password and Uniubi/ZKTeco token; pull: the Digest password.
    pub password: Option<String>,
    /// Pull: where the terminal serves.
    pub address: Option<SocketAddr>,
    /// The offset Hikvision writes in its times (+08:00, +08:30 or +05:45, by position).
    pub offset: Offset,
}

impl HttpTerminal {
    /// `index`: its place in the plan; it also varies the invented address and the offset.
    pub fn new(
        id: TerminalId,
        kind: HttpKind,
        room: usize,
        index: usize,
        username: Option<String>,
        password: Option<String>,
        address: Option<SocketAddr>,
    ) -> Self {
        let offset = match index % 3 {
            0 => Offset::constant(8),
            1 => Offset::from_seconds(8 * 3600 + 30 * 60).unwrap_or(Offset::UTC),
            _ => Offset::from_seconds(5 * 3600 + 45 * 60).unwrap_or(Offset::UTC),
        };
        HttpTerminal {
            sim: SimTerminal::new(id, kind.script_vendor(), room, "", index),
            index,
            kind,
            username: username.unwrap_or_else(|| "admin".into()),
            password,
            address,
            offset,
        }
    }
}

/// One record a terminal keeps: a scripted message, or a failed verification.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Since the start of the script.
    pub offset_ms: u64,
    /// When it happened, Unix ms.
    pub at_ms: i64,
    pub record: Record,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Message(Message),
    /// A face the terminal could not verify: logged and sent, never a visit.
    Fail {
        terminal: usize,
        serial: u64,
    },
}

impl Entry {
    /// The device's serial for the record (0 for a heartbeat).
    pub fn serial(&self) -> u64 {
        match &self.record {
            Record::Message(Message::Passage(p) | Message::Resend(p) | Message::Bad(p, _)) => {
                p.serial
            }
            Record::Message(Message::Heartbeat { .. }) => 0,
            Record::Fail { serial, .. } => *serial,
        }
    }

    /// When the recorded event happened (Unix ms): a re-sent record keeps its first time.
    pub fn event_ms(&self) -> i64 {
        match &self.record {
            Record::Message(Message::Passage(p) | Message::Resend(p) | Message::Bad(p, _)) => {
                p.at_ms
            }
            _ => self.at_ms,
        }
    }

    pub fn terminal(&self) -> usize {
        match &self.record {
            Record::Message(m) => m.terminal(),
            Record::Fail { terminal, .. } => *terminal,
        }
    }

    fn step(&self) -> ScriptStep {
        ScriptStep {
            offset: Duration::from_millis(self.offset_ms),
            at_ms: self.at_ms,
            messages: Vec::new(),
        }
    }
}

/// Everything [`run`] needs, taken from the config (or built by a test).
#[derive(Debug, Clone)]
pub struct HttpPlan {
    pub terminals: Vec<HttpTerminal>,
    /// Room ids, by index.
    pub rooms: Vec<String>,
    /// How the gateway judges readings.
    pub decode: DecodeOptions,
    /// The gateway's `[terminal_http]` listener, for pushing terminals.
    pub push_target: Option<SocketAddr>,
    /// `[terminal_http] max_body_bytes`.
    pub max_body_bytes: usize,
    pub time_zone: TimeZone,
}

/// The command line's options beyond the script.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub script: ScriptOptions,
    pub truth: Option<PathBuf>,
    /// A JPEG for the Hikvision `Picture` part and the Uniubi `base64` field.
    pub snapshot: Option<PathBuf>,
    /// Halfway through, every pushing terminal holds its records this long, then sends the
    /// backlog in a burst (0: never).
    pub backlog_secs: f64,
    /// After the script, how long to wait for the gateway to take every record.
    pub drain_secs: u64,
    /// A push unanswered this long is a failure: the record is kept and sent again.
    pub request_timeout_ms: u64,
    /// Pause before a pushing terminal sends again after a failure.
    pub retry_ms: u64,
    /// How long a pulled terminal refuses logins after five failures.
    pub lockout_secs: u64,
    /// After the final line, pulled terminals go on serving their logs this long (or until
    /// shutdown), so a gateway that lost records after reading them can read them again.
    pub linger_secs: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpSimError {
    #[error("{}", .problems.join("; "))]
    Options { problems: Vec<String> },
    #[error(
        "terminal {terminal} pushes over HTTP but there is no [terminal_http] listener to push to (add one or pass --http HOST:PORT)"
    )]
    NoPushTarget { terminal: String },
    #[error("terminal {terminal} is pulled but has no address HOST:PORT to serve at")]
    NoAddress { terminal: String },
    #[error("terminal {terminal}: cannot serve at {address}: {error}")]
    Bind {
        terminal: String,
        address: SocketAddr,
        error: io::Error,
    },
    #[error("cannot read snapshot {path}: {error}")]
    SnapshotRead { path: PathBuf, error: io::Error },
    #[error("snapshot {path} is not a JPEG (it does not start with FF D8 FF)")]
    SnapshotNotJpeg { path: PathBuf },
    #[error("cannot write truth file {path}: {error}")]
    Truth { path: PathBuf, error: io::Error },
}

// ---------------------------------------------------------------------------------------------
// The truth.

/// What one terminal did, in the final line.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TerminalReport {
    pub kind: &'static str,
    pub transport: &'static str,
    /// Passages the gateway has (push: answered success; pull: went out at least once).
    pub acknowledged: u64,
    /// Passages it never took by the end (kept by the terminal; lines `unacknowledged`).
    pub unacknowledged: u64,
    /// Failed verifications it took (not visits).
    pub fails: u64,
    pub resends: u64,
    pub heartbeats: u64,
    pub bad: u64,
    /// Push: requests sent; pull: requests answered.
    pub requests: u64,
    /// Push: requests without a success answer (error status, timeout, no connection).
    pub failed_requests: u64,
    /// Push: records sent again after a failure (the gateway may have had the first).
    pub retries: u64,
    /// Pull: wrong credentials seen, lock-outs, requests refused while locked.
    pub failed_logins: u64,
    pub lockouts: u64,
    pub refused_while_locked: u64,
    /// Pull: connections accepted, and the most open at once.
    pub connections: u64,
    pub max_connections: u64,
}

/// A record the gateway took: the MQTT simulator's line plus how it got there.
#[derive(Debug, Serialize)]
struct TakenLine<'a> {
    #[serde(flatten)]
    line: MessageLine<'a>,
    transport: &'static str,
    /// Requests it took (push); 1 for pulls.
    attempts: u32,
}

/// A failed verification the gateway took, or a record it never took.
#[derive(Debug, Serialize)]
struct RecordLine<'a> {
    /// `fail` or `unacknowledged`.
    kind: &'static str,
    terminal: &'a str,
    room: &'a str,
    t_ms: i64,
    offset_ms: u64,
    event: String,
    /// For `unacknowledged`: what it was (`passage`, `resend`, `fail`).
    #[serde(skip_serializing_if = "Option::is_none")]
    of: Option<&'static str>,
    transport: &'static str,
    attempts: u32,
}

#[derive(Debug, Serialize)]
struct HttpFinalLine<'a> {
    #[serde(flatten)]
    base: FinalLine<'a>,
    /// Every record was taken by the gateway.
    complete: bool,
    unacknowledged: u64,
    terminals: BTreeMap<&'a str, TerminalReport>,
}

/// The truth file, the tally and the per-terminal reports, shared by the tasks (each write
/// is a short buffered write under the lock).
#[derive(Debug)]
struct Ledger {
    terminals: Vec<HttpTerminal>,
    rooms: Vec<String>,
    tally: TerminalTally,
    reports: Vec<TerminalReport>,
    /// Passages sent again after a failure.
    redelivered: u64,
    truth: Option<(PathBuf, BufWriter<File>)>,
    error: Option<HttpSimError>,
    /// The final line is written: nothing more is taken into the truth.
    closed: bool,
}

type SharedLedger = Arc<Mutex<Ledger>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking task cannot leave these half-updated in a way that matters more than
    // losing the run.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Ledger {
    fn line(&mut self, line: &impl Serialize) {
        if let Some((path, out)) = &mut self.truth {
            let written = serde_json::to_writer(&mut *out, line)
                .map_err(io::Error::from)
                .and_then(|()| out.write_all(b"\n"));
            if let Err(error) = written
                && self.error.is_none()
            {
                self.error = Some(HttpSimError::Truth {
                    path: path.clone(),
                    error,
                });
            }
        }
    }

    fn flush(&mut self) {
        if let Some((path, out)) = &mut self.truth
            && let Err(error) = out.flush()
            && self.error.is_none()
        {
            self.error = Some(HttpSimError::Truth {
                path: path.clone(),
                error,
            });
        }
    }

    /// The gateway took `entry` (success answer, or it went out on a pull) after `attempts`.
    fn taken(&mut self, entry: &Entry, attempts: u32) {
        if self.closed {
            return;
        }
        let i = entry.terminal();
        let Some(t) = self.terminals.get(i).cloned() else {
            return;
        };
        let room = self.rooms.get(t.sim.room).cloned().unwrap_or_default();
        let transport = t.kind.transport();
        match &entry.record {
            Record::Message(message) => {
                self.tally.record(t.sim.room, message);
                let r = &mut self.reports[i];
                match message {
                    Message::Passage(_) => r.acknowledged += 1,
                    Message::Resend(_) => r.resends += 1,
                    Message::Bad(..) => r.bad += 1,
                    Message::Heartbeat { .. } => r.heartbeats += 1,
                }
                let line = TakenLine {
                    line: MessageLine::new(&t.sim, &room, &entry.step(), message),
                    transport,
                    attempts,
                };
                self.line(&line);
            }
            Record::Fail { serial, .. } => {
                self.reports[i].fails += 1;
                let line = RecordLine {
                    kind: "fail",
                    terminal: t.sim.id.as_str(),
                    room: &room,
                    t_ms: entry.at_ms,
                    offset_ms: entry.offset_ms,
                    event: serial.to_string(),
                    of: None,
                    transport,
                    attempts,
                };
                self.line(&line);
            }
        }
    }

    /// `entry` was still with its terminal at the end.
    fn not_taken(&mut self, entry: &Entry, attempts: u32) {
        let i = entry.terminal();
        let Some(t) = self.terminals.get(i).cloned() else {
            return;
        };
        let of = match &entry.record {
            Record::Message(Message::Passage(_)) => "passage",
            Record::Message(Message::Resend(_)) => "resend",
            Record::Fail { .. } => "fail",
            // Heartbeats and malformed records are not kept.
            Record::Message(_) => return,
        };
        if of == "passage" {
            self.reports[i].unacknowledged += 1;
        }
        let room = self.rooms.get(t.sim.room).cloned().unwrap_or_default();
        let line = RecordLine {
            kind: "unacknowledged",
            terminal: t.sim.id.as_str(),
            room: &room,
            t_ms: entry.at_ms,
            offset_ms: entry.offset_ms,
            event: entry.serial().to_string(),
            of: Some(of),
            transport: t.kind.transport(),
            attempts,
        };
        self.line(&line);
    }

    fn finish(&mut self) -> Result<(), HttpSimError> {
        self.closed = true;
        let rooms: Vec<&str> = self.rooms.iter().map(String::as_str).collect();
        let unacknowledged: u64 = self.reports.iter().map(|r| r.unacknowledged).sum();
        let line = HttpFinalLine {
            base: FinalLine::new(&rooms, &self.tally, self.redelivered),
            complete: unacknowledged == 0,
            unacknowledged,
            terminals: self
                .terminals
                .iter()
                .zip(&self.reports)
                .map(|(t, r)| (t.sim.id.as_str(), r.clone()))
                .collect(),
        };
        // Serialised first: `line` borrows self.
        let text = serde_json::to_string(&line).unwrap_or_default();
        if let Some((path, out)) = &mut self.truth {
            let written = out
                .write_all(text.as_bytes())
                .and_then(|()| out.write_all(b"\n"))
                .and_then(|()| out.flush());
            if let Err(error) = written {
                return Err(HttpSimError::Truth {
                    path: path.clone(),
                    error,
                });
            }
        }
        match self.error.take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The run.

/// Plays `plan`'s terminals until the script is done and the gateway has taken every record
/// (or `drain_secs` ran out, or `shutdown`), then writes the final truth line.
pub async fn run(
    plan: HttpPlan,
    options: HttpOptions,
    shutdown: CancellationToken,
) -> Result<(), HttpSimError> {
    let options_problems = |problems| HttpSimError::Options { problems };
    options.script.validate().map_err(options_problems)?;
    let mut problems = Vec::new();
    if !(options.backlog_secs.is_finite() && (0.0..=3600.0).contains(&options.backlog_secs)) {
        problems.push(format!(
            "--backlog-secs must be between 0 and 3600, not {}",
            options.backlog_secs
        ));
    }
    if options.request_timeout_ms == 0 {
        problems.push("--request-timeout-ms must be above 0".to_string());
    }
    if !problems.is_empty() {
        return Err(HttpSimError::Options { problems });
    }
    for t in &plan.terminals {
        if t.kind.is_push() && plan.push_target.is_none() {
            return Err(HttpSimError::NoPushTarget {
                terminal: t.sim.id.to_string(),
            });
        }
        if !t.kind.is_push() && t.address.is_none() {
            return Err(HttpSimError::NoAddress {
                terminal: t.sim.id.to_string(),
            });
        }
    }
    let jpeg = match &options.snapshot {
        Some(path) => Some(read_snapshot(path)?),
        None => None,
    };
    let encoder = Arc::new(HttpEncoder::new(
        plan.max_body_bytes,
        jpeg,
        plan.time_zone.clone(),
    ));
    let start_ms = Timestamp::now().as_millisecond();
    // Serials continue from the start time, as real terminals number on and on (a second
    // run is never taken for re-sends of the first); doubled, so a failed verification can
    // take the odd serial right after its passage.
    let serial_base = u64::try_from(start_ms).unwrap_or(0);
    let vendors: Vec<Vendor> = plan.terminals.iter().map(|t| t.sim.vendor).collect();
    let script = Script::new(
        vendors,
        &options.script,
        &plan.decode,
        start_ms,
        serial_base,
    )
    .map_err(options_problems)?;

    let truth = match &options.truth {
        Some(path) => Some((
            path.clone(),
            BufWriter::new(File::create(path).map_err(|error| HttpSimError::Truth {
                path: path.clone(),
                error,
            })?),
        )),
        None => None,
    };
    let ledger: SharedLedger = Arc::new(Mutex::new(Ledger {
        terminals: plan.terminals.clone(),
        rooms: plan.rooms.clone(),
        tally: TerminalTally::new(plan.rooms.len()),
        reports: plan
            .terminals
            .iter()
            .map(|t| TerminalReport {
                kind: t.kind.name(),
                transport: t.kind.transport(),
                ..TerminalReport::default()
            })
            .collect(),
        redelivered: 0,
        truth,
        error: None,
        closed: false,
    }));

    // Devices: pulled ones listen before anything is played, so a test can connect at once.
    let push_stop = shutdown.child_token();
    let pull_stop = shutdown.child_token();
    let mut devices = Vec::with_capacity(plan.terminals.len());
    for (index, t) in plan.terminals.iter().enumerate() {
        let device = if t.kind.is_push() {
            let target = plan.push_target.ok_or_else(|| HttpSimError::NoPushTarget {
                terminal: t.sim.id.to_string(),
            })?;
            Device::Push(push::spawn(
                t.clone(),
                target,
                encoder.clone(),
                ledger.clone(),
                push::PushSettings {
                    request_timeout: Duration::from_millis(options.request_timeout_ms),
                    retry: Duration::from_millis(options.retry_ms),
                },
                push_stop.clone(),
            ))
        } else {
            let address = t.address.ok_or_else(|| HttpSimError::NoAddress {
                terminal: t.sim.id.to_string(),
            })?;
            let seed = options.script.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            Device::Pull(
                serve::spawn(
                    t.clone(),
                    address,
                    encoder.clone(),
                    ledger.clone(),
                    seed,
                    Duration::from_secs(options.lockout_secs),
                    pull_stop.clone(),
                )
                .await
                .map_err(|error| HttpSimError::Bind {
                    terminal: t.sim.id.to_string(),
                    address,
                    error,
                })?,
            )
        };
        let listening = match &device {
            Device::Pull(p) => Some(p.local_addr),
            Device::Push(_) => None,
        };
        tracing::info!(
            terminal = %t.sim.id,
            kind = t.kind.name(),
            listening = ?listening,
            "simulated HTTP terminal ready"
        );
        devices.push(device);
    }

    tracing::info!(
        terminals = plan.terminals.len(),
        seed = options.script.seed,
        passages = options.script.passages,
        rate_per_sec = options.script.rate_per_sec,
        push_target = ?plan.push_target,
        "playing passages at the HTTP terminals"
    );
    let mut player = Player {
        terminals: &plan.terminals,
        devices: &devices,
        ledger: &ledger,
        fails: StdRng::seed_from_u64(options.script.seed ^ 0xFA11_FA11),
        zk_last: HashMap::new(),
        zk_dropped: HashSet::new(),
    };
    let backlog = Duration::try_from_secs_f64(options.backlog_secs).unwrap_or(Duration::ZERO);
    let completed = player
        .play(script, options.script.passages / 2, backlog, &shutdown)
        .await;

    // Give the gateway the time it needs to take everything (pushes retried, logs read).
    let deadline = Instant::now() + Duration::from_secs(options.drain_secs);
    if completed {
        loop {
            if devices.iter().all(|d| d.idle()) {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                tracing::warn!(
                    "the gateway did not take every record in time; the truth says which it did not"
                );
                break;
            }
            lock(&ledger).flush();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = sleep_until((now + Duration::from_millis(100)).min(deadline)) => {}
            }
        }
    }
    // Pushing terminals stop (a record taken after the final line would not be in it);
    // pulled ones are counted now and go on serving their logs for the linger.
    push_stop.cancel();
    let mut reports = Vec::new();
    let mut pulls = Vec::new();
    for device in devices {
        match device {
            Device::Push(p) => reports.push((p.finish().await, None)),
            Device::Pull(p) => {
                let (left, stats) = p.snapshot();
                reports.push((left, Some(stats)));
                pulls.push(p);
            }
        }
    }
    let result = finish_truth(&ledger, reports);
    if options.linger_secs > 0 && !pulls.is_empty() && !shutdown.is_cancelled() {
        tracing::info!(
            secs = options.linger_secs,
            "final truth line written; the pulled terminals serve their logs a while longer"
        );
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = sleep(Duration::from_secs(options.linger_secs)) => {}
        }
    }
    pull_stop.cancel();
    for p in pulls {
        p.finish().await;
    }
    result
}

/// What a terminal still held at the end (with the requests each cost), and a pulled
/// terminal's counts.
type DeviceReport = (Vec<(Entry, u32)>, Option<serve::PullStats>);

/// Writes the `unacknowledged` lines and the final line; the ledger takes nothing after.
fn finish_truth(ledger: &SharedLedger, reports: Vec<DeviceReport>) -> Result<(), HttpSimError> {
    let mut ledger = lock(ledger);
    for (i, leftovers) in reports.into_iter().enumerate() {
        let (entries, pull_stats) = leftovers;
        for (entry, attempts) in entries {
            ledger.not_taken(&entry, attempts);
        }
        if let Some(stats) = pull_stats {
            let r = &mut ledger.reports[i];
            r.requests = stats.requests;
            r.failed_logins = stats.failed_logins;
            r.lockouts = stats.lockouts;
            r.refused_while_locked = stats.refused_while_locked;
            r.connections = stats.connections;
            r.max_connections = stats.max_connections;
        }
    }
    let hall = ledger.tally.hall();
    tracing::info!(
        passages = hall.passages,
        resends = hall.resends,
        bad = hall.bad,
        heartbeats = hall.heartbeats,
        unacknowledged = ledger.reports.iter().map(|r| r.unacknowledged).sum::<u64>(),
        "HTTP terminals done"
    );
    ledger.finish()
}

/// Whether the config has terminals this simulator plays (any whose transport is not MQTT).
pub fn has_http_terminals(config: &Config) -> bool {
    config
        .terminals
        .iter()
        .any(|t| t.transport != TerminalTransport::Mqtt)
}

/// The plan for the config's non-MQTT terminals; `push_flag` (`HOST:PORT`) overrides
/// `[terminal_http] listen` (an unspecified listen address is reached on loopback).
pub fn plan_from_config(
    config: &Config,
    push_flag: Option<&str>,
) -> Result<HttpPlan, HttpSimError> {
    let push_target = match push_flag {
        Some(text) => Some(
            text.parse::<SocketAddr>()
                .map_err(|_| HttpSimError::Options {
                    problems: vec![format!("--http {text:?} is not IP:PORT")],
                })?,
        ),
        None => config
            .terminal_http
            .as_ref()
            .map(|h| loopback_if_unspecified(h.listen)),
    };
    let mut terminals = Vec::new();
    for t in config
        .terminals
        .iter()
        .filter(|t| t.transport != TerminalTransport::Mqtt)
    {
        let (name, address) = match &t.transport {
            TerminalTransport::Mqtt => continue,
            TerminalTransport::HttpPush { .. } => ("http_push", None),
            TerminalTransport::HikvisionPull { address, .. } => ("hikvision_pull", Some(address)),
            TerminalTransport::HikvisionStream { address } => ("hikvision_stream", Some(address)),
            TerminalTransport::DahuaStream { address } => ("dahua_stream", Some(address)),
        };
        let kind = HttpKind::of(name, &t.profile).ok_or_else(|| HttpSimError::Options {
            problems: vec![format!(
                "terminal {} pushes with profile \"{}\", which the simulator cannot play (it plays hikvision*, uniubi* and zkteco* profiles)",
                t.id, t.profile
            )],
        })?;
        let address = match address {
            Some(text) => Some(
                text.parse::<SocketAddr>()
                    .map_err(|_| HttpSimError::Options {
                        problems: vec![format!(
                            "terminal {}: the simulator serves at IP:PORT, not {text:?}",
                            t.id
                        )],
                    })?,
            ),
            None => None,
        };
        let (username, password) = match &t.login {
            Some((user, secret)) => (Some(user.clone()), Some(secret.expose().to_string())),
            None => (None, None),
        };
        terminals.push(HttpTerminal::new(
            t.id.clone(),
            kind,
            t.room,
            terminals.len(),
            username,
            password,
            address,
        ));
    }
    Ok(HttpPlan {
        terminals,
        rooms: config.rooms.iter().map(|r| r.id.clone()).collect(),
        decode: config.terminal_rules.decode.clone(),
        push_target,
        max_body_bytes: config
            .terminal_http
            .as_ref()
            .map_or(1024 * 1024, |h| h.max_body_bytes),
        time_zone: config.hall.time_zone.clone(),
    })
}

fn loopback_if_unspecified(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::from([127, 0, 0, 1]),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

fn read_snapshot(path: &Path) -> Result<Vec<u8>, HttpSimError> {
    let jpeg = std::fs::read(path).map_err(|error| HttpSimError::SnapshotRead {
        path: path.to_path_buf(),
        error,
    })?;
    if !jpeg.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Err(HttpSimError::SnapshotNotJpeg {
            path: path.to_path_buf(),
        });
    }
    Ok(jpeg)
}

/// A running terminal.
enum Device {
    Push(push::PushHandle),
    Pull(serve::PullHandle),
}

impl Device {
    /// Nothing left for the gateway to take.
    fn idle(&self) -> bool {
        match self {
            Device::Push(p) => p.idle(),
            Device::Pull(p) => p.idle(),
        }
    }
}

/// Plays the script onto the terminals.
struct Player<'a> {
    terminals: &'a [HttpTerminal],
    devices: &'a [Device],
    ledger: &'a SharedLedger,
    /// Failed verifications, apart from the script's generator.
    fails: StdRng,
    /// ZKTeco: each (terminal, member)'s last logged second.
    zk_last: HashMap<(usize, u32), i64>,
    /// ZKTeco: passages the terminal did not log (duplicate punches), so not re-sent either.
    zk_dropped: HashSet<u64>,
}

impl Player<'_> {
    /// Plays every step when it is due; false when stopped by `shutdown`.
    async fn play(
        &mut self,
        script: Script,
        backlog_at: u64,
        backlog: Duration,
        shutdown: &CancellationToken,
    ) -> bool {
        let start = Instant::now();
        let mut next_progress = start + PROGRESS_EVERY;
        for (n, step) in script.enumerate() {
            let due = start.checked_add(step.offset).unwrap_or_else(Instant::now);
            loop {
                let now = Instant::now();
                if now >= next_progress {
                    let hall = lock(self.ledger).tally.hall();
                    tracing::info!(
                        played = n,
                        taken = hall.passages,
                        "simulated HTTP terminals playing"
                    );
                    next_progress = now + PROGRESS_EVERY;
                }
                if now >= due {
                    break;
                }
                lock(self.ledger).flush();
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return false,
                    _ = sleep(due.min(next_progress) - now) => {}
                }
            }
            if n as u64 == backlog_at && !backlog.is_zero() {
                tracing::info!(
                    secs = backlog.as_secs_f64(),
                    "pushing terminals hold their records, then send the backlog"
                );
                for device in self.devices {
                    if let Device::Push(p) = device {
                        p.hold(Instant::now() + backlog);
                    }
                }
            }
            let offset_ms = u64::try_from(step.offset.as_millis()).unwrap_or(u64::MAX);
            for message in step.messages {
                self.route(offset_ms, step.at_ms, message);
            }
        }
        true
    }

    fn route(&mut self, offset_ms: u64, at_ms: i64, message: Message) {
        let i = message.terminal();
        let (Some(t), Some(device)) = (self.terminals.get(i), self.devices.get(i)) else {
            return;
        };
        let kind = t.kind;
        let mut message = message;
        // The serial doubled: the odd one after it is free for a failed verification.
        let serial = match &mut message {
            Message::Passage(p) | Message::Resend(p) | Message::Bad(p, _) => {
                p.serial = p.serial.wrapping_mul(2);
                Some(p.serial)
            }
            Message::Heartbeat { .. } => None,
        };
        match &message {
            Message::Bad(..) if !kind.sends_bad() => return,
            // Pulled terminals keep alive on their own connections.
            Message::Heartbeat { .. } if !kind.is_push() => return,
            Message::Passage(p) if kind == HttpKind::ZktecoPush => {
                let Some(member) = p.member else { return };
                let second = p.at_ms.div_euclid(1000);
                let last = self.zk_last.insert((i, member), second);
                if last.is_some_and(|l| second - l < ZK_DUPLICATE_PUNCH_SECS) {
                    self.zk_dropped.insert(p.serial);
                    return;
                }
            }
            Message::Resend(p) if self.zk_dropped.contains(&p.serial) => return,
            _ => {}
        }
        let fail = matches!(message, Message::Passage(_))
            && kind.logs_failures()
            && self.fails.random::<f64>() < FAIL_SHARE;
        let entry = Entry {
            offset_ms,
            at_ms,
            record: Record::Message(message),
        };
        device.take(entry);
        if let (true, Some(serial)) = (fail, serial) {
            device.take(Entry {
                offset_ms,
                at_ms,
                record: Record::Fail {
                    terminal: i,
                    serial: serial.wrapping_add(1),
                },
            });
        }
    }
}

impl Device {
    /// Hands a record to the terminal: queued to push, or logged (a re-send goes out again
    /// on the streams).
    fn take(&self, entry: Entry) {
        match self {
            Device::Push(p) => p.push(entry),
            Device::Pull(p) => p.log(entry),
        }
    }
}

/// A pulled terminal's log, shared by the player and its server.
pub(crate) type SharedLog = Arc<Mutex<DeviceLog>>;

#[cfg(test)]
mod tests;
