//! `[terminal_broker]` and `[[terminals]]`: where the hall's face-recognition terminals
//! publish, and which terminal stands in which room with which vendor profile.
//!
//! ```toml
//! [terminal_broker]
//! listen = "192.168.50.2:1884"   # the embedded broker, on the interface the terminals reach
//! # external = "mqtt://127.0.0.1:1883"   # …or subscribe to a broker already on the box
//! max_payload_bytes = 262144
//! fever_threshold_c = 37.3
//!
//! [[terminals]]
//! id = "84E0F4200CA602FA"        # the terminal's own id: serial, deviceKey or topic level
//! profile = "hikvision-acs"      # a file in firmware-config/terminals/
//! room = "lobby"
//! username = "t-entrance"        # its login on the embedded broker
//! password_file = "secrets/t-entrance.pass"   # relative to this file; never inline
//! ```
//!
//! Passwords are read from files at load time (so a typo is a config error, not a runtime
//! surprise) and held in a [`Secret`] that never prints (`secrets.rs`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::problems::{Problems, Report};
use super::secrets::read_secret_with;
use super::terminal_http::{TerminalHttp, TerminalHttpConfig};
use crate::terminals::{DecodeOptions, TerminalId, TerminalProfiles};

// The password types keep the paths they had when they lived here (`config::terminals::Secret`
// is used all over the gateway).
pub use super::secrets::{MIN_LOGIN_CHARS, Secret, SecretRules, is_example_secret};

/// `[terminal_broker]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminalBrokerConfig {
    /// The embedded broker's listening address; only this interface is served.
    pub listen: Option<String>,
    /// An existing local broker to subscribe to instead, `mqtt://HOST:PORT`.
    pub external: Option<String>,
    /// Username and password file for the external broker, when it wants a login.
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    #[serde(default = "default_max_payload_bytes")]
    pub max_payload_bytes: usize,
    #[serde(default = "default_fever_threshold_c")]
    pub fever_threshold_c: f64,
    #[serde(default = "default_plausible_min_c")]
    pub plausible_min_c: f64,
    #[serde(default = "default_plausible_max_c")]
    pub plausible_max_c: f64,
    /// Extra directories of terminal profiles, relative to the config file.
    #[serde(default)]
    pub profile_dirs: Vec<PathBuf>,
}

fn default_max_payload_bytes() -> usize {
    256 * 1024
}
fn default_fever_threshold_c() -> f64 {
    37.3
}
fn default_plausible_min_c() -> f64 {
    30.0
}
fn default_plausible_max_c() -> f64 {
    45.0
}

/// `[vision]` as written: counting faces in terminal snapshots. Absent: no counting.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisionConfig {
    /// The face detector, relative to the config file.
    pub model: PathBuf,
    /// Snapshots waiting for the detector; when full the oldest is dropped (counted), and
    /// its passage counts as one person.
    #[serde(default = "default_vision_queue")]
    pub queue: usize,
    /// Detector settings; `models/MODELS.md` explains the defaults.
    pub input_width_px: Option<u32>,
    pub input_height_px: Option<u32>,
    pub score_threshold: Option<f32>,
    pub nms_iou: Option<f32>,
}

fn default_vision_queue() -> usize {
    16
}

/// The validated `[vision]`.
#[derive(Debug, Clone)]
pub struct Vision {
    pub model: PathBuf,
    pub queue: usize,
    pub detector: crate::vision::DetectorConfig,
}

/// Validates `[vision]`.
pub fn validate_vision(
    v: &VisionConfig,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<Vision> {
    let model = base_dir.join(&v.model);
    let mut ok = true;
    if !model.is_file() {
        problems.report(
            "vision.model",
            format!("{} is not a readable file", model.display()),
        );
        ok = false;
    }
    if !(1..=1024).contains(&v.queue) {
        problems.report("vision.queue", "must be between 1 and 1024");
        ok = false;
    }
    let defaults = crate::vision::DetectorConfig::default();
    let detector = crate::vision::DetectorConfig {
        input_width_px: v.input_width_px.unwrap_or(defaults.input_width_px),
        input_height_px: v.input_height_px.unwrap_or(defaults.input_height_px),
        score_threshold: v.score_threshold.unwrap_or(defaults.score_threshold),
        nms_iou: v.nms_iou.unwrap_or(defaults.nms_iou),
    };
    for problem in detector.problems() {
        problems.report("vision", problem);
        ok = false;
    }
    ok.then_some(Vision {
        model,
        queue: v.queue,
        detector,
    })
}

/// `[[terminals]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminalConfig {
    pub id: String,
    pub profile: String,
    pub room: String,
    /// How it delivers: `mqtt` (the default), `http_push`, `hikvision_pull`,
    /// `hikvision_stream` or `dahua_stream`.
    #[serde(default)]
    pub transport: TerminalTransportConfig,
    /// `http_push`: the only source IP that may push as this terminal (optional, required
    /// for ZKTeco, which cannot send a credential); pulls: the device's `HOST:PORT`.
    pub address: Option<String>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    /// `hikvision_pull`: how often the device's event log is read.
    pub poll_interval_ms: Option<u64>,
}

/// `transport` as written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TerminalTransportConfig {
    #[default]
    Mqtt,
    HttpPush,
    HikvisionPull,
    HikvisionStream,
    DahuaStream,
}

/// How a validated terminal delivers its records.
#[derive(Debug, Clone, PartialEq)]
pub enum TerminalTransport {
    /// Publishes to the terminals' MQTT broker (`[terminal_broker]`).
    Mqtt,
    /// POSTs to the `[terminal_http]` listener; only from `address` when given.
    HttpPush { address: Option<IpAddr> },
    /// The gateway reads the device's event log (Hikvision `AcsEvent`), every `interval`.
    HikvisionPull { address: String, interval: Duration },
    /// The gateway holds the device's alert stream open (Hikvision `alertStream`).
    HikvisionStream { address: String },
    /// The gateway holds the device's event stream open (Dahua `eventManager attach`).
    DahuaStream { address: String },
}

impl TerminalTransport {
    /// Whether the gateway connects to the device (and so needs its login).
    pub fn is_pull(&self) -> bool {
        matches!(
            self,
            TerminalTransport::HikvisionPull { .. }
                | TerminalTransport::HikvisionStream { .. }
                | TerminalTransport::DahuaStream { .. }
        )
    }
}

/// Default read interval of a Hikvision event log.
const DEFAULT_PULL_INTERVAL_MS: u64 = 2_000;

/// `[[cameras]]` as written: a room camera that publishes a JPEG snapshot now and then to
/// `cameras/{id}/snapshot` on the embedded broker; its head count re-anchors the room's
/// occupancy. Needs `[vision]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    pub id: String,
    pub room: String,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
}

/// One validated room camera.
#[derive(Debug, Clone)]
pub struct Camera {
    pub id: String,
    /// Index into `Config::rooms`.
    pub room: usize,
    pub login: Option<(String, Secret)>,
}

/// The topic a camera publishes its snapshots to.
pub fn camera_topic(id: &str) -> String {
    format!("cameras/{id}/snapshot")
}

/// Validates `[[cameras]]`.
pub fn validate_cameras(
    cameras: &[Option<CameraConfig>],
    room_index: &HashMap<&str, usize>,
    base_dir: &Path,
    vision: bool,
    broker: Option<&TerminalBroker>,
    allow_example_secrets: bool,
    problems: &mut Problems,
) -> Vec<Camera> {
    let mut out = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, c) in cameras.iter().enumerate() {
        let Some(c) = c else { continue };
        let path = format!("cameras[{i}]");
        if !vision {
            problems.report(path.clone(), "a room camera needs [vision] to count heads");
        }
        if broker.is_none() {
            problems.report(
                path.clone(),
                "a room camera publishes to the terminal broker: add [terminal_broker]",
            );
        }
        if TerminalId::new(&c.id).is_none() {
            problems.report(
                format!("{path}.id"),
                format!(
                    "\"{}\" must be 1 to 64 printable characters without spaces, '/', '+' or '#'",
                    c.id
                ),
            );
        }
        if let Some(first) = seen.insert(c.id.clone(), i) {
            problems.report(
                format!("{path}.id"),
                format!("\"{}\" is already cameras[{first}]", c.id),
            );
        }
        let room = room_index.get(c.room.as_str()).copied();
        if room.is_none() {
            problems.report(
                format!("{path}.room"),
                format!("unknown room \"{}\"", c.room),
            );
        }
        let login = match (&c.username, &c.password_file) {
            (Some(user), Some(file)) => read_secret_with(
                base_dir,
                file,
                &format!("{path}.password_file"),
                SecretRules::guarding(allow_example_secrets),
                problems,
            )
            .map(|s| (user.clone(), s)),
            (None, None) => {
                if matches!(
                    broker.map(|b| &b.source),
                    Some(TerminalSource::Embedded { .. })
                ) {
                    problems.report(
                        format!("{path}.username"),
                        "a camera on the embedded broker needs `username` and `password_file`",
                    );
                }
                None
            }
            _ => {
                problems.report(
                    format!("{path}.password_file"),
                    "`username` and `password_file` go together",
                );
                None
            }
        };
        if let Some(room) = room {
            out.push(Camera {
                id: c.id.clone(),
                room,
                login,
            });
        }
    }
    out
}

/// Where terminals' messages come from.
#[derive(Debug, Clone, PartialEq)]
pub enum TerminalSource {
    /// hallgate's own broker, listening on this address only.
    Embedded { listen: SocketAddr },
    /// A broker already running on the box.
    External {
        host: String,
        port: u16,
        login: Option<(String, Secret)>,
    },
}

/// The validated `[terminal_broker]`.
#[derive(Debug, Clone)]
pub struct TerminalBroker {
    pub source: TerminalSource,
    pub decode: DecodeOptions,
    pub profiles: TerminalProfiles,
}

/// One validated terminal.
#[derive(Debug, Clone)]
pub struct Terminal {
    pub id: TerminalId,
    /// Name of its profile in [`TerminalBroker::profiles`].
    pub profile: String,
    /// Index into `Config::rooms`.
    pub room: usize,
    /// How it delivers.
    pub transport: TerminalTransport,
    /// mqtt: its login on the embedded broker; http_push: the credential it sends (HTTP Basic
    /// or `?token=`), the user name checked only when set; pulls: its own login on the device.
    pub login: Option<(String, Secret)>,
}

/// The hall's rules for turning a terminal's record into a passage, whatever its transport.
#[derive(Debug, Clone)]
pub struct TerminalRules {
    pub decode: DecodeOptions,
    pub profiles: TerminalProfiles,
}

/// Everything the terminal sections validate to.
#[derive(Debug, Clone)]
pub struct TerminalSections {
    pub broker: Option<TerminalBroker>,
    pub http: Option<TerminalHttp>,
    pub rules: TerminalRules,
    pub terminals: Vec<Terminal>,
}

/// Validates `[terminal_broker]`, `[terminal_http]` and `[[terminals]]` against the hall's
/// rooms. `problems` must hold this validation's problems only: a terminal that needs the
/// broker says so once, unless `[terminal_broker]` already has a problem of its own here.
pub fn validate(
    broker: Option<&TerminalBrokerConfig>,
    http: Option<&TerminalHttpConfig>,
    terminals: &[Option<TerminalConfig>],
    room_index: &HashMap<&str, usize>,
    base_dir: &Path,
    allow_example_secrets: bool,
    problems: &mut Problems,
) -> TerminalSections {
    let rules = hall_rules(broker, http, base_dir, problems);
    let logins = SecretRules::guarding(allow_example_secrets);
    let broker =
        broker.and_then(|b| validate_broker(b, &rules, base_dir, logins.presented(), problems));
    let http = http.and_then(|h| super::terminal_http::validate(h, problems));
    let mut check = TerminalCheck {
        rules: &rules,
        broker: broker.as_ref(),
        http: http.as_ref(),
        room_index,
        base_dir,
        logins,
        seen: HashMap::new(),
        users: HashMap::new(),
    };
    let mut out = Vec::new();
    for (i, t) in terminals.iter().enumerate() {
        let Some(t) = t else { continue };
        if let Some(terminal) = t.validate(i, &mut check, problems) {
            out.push(terminal);
        }
    }
    TerminalSections {
        broker,
        http,
        rules,
        terminals: out,
    }
}

/// The hall's terminal rules: from `[terminal_broker]` when there is one (and then only
/// there), else from `[terminal_http]`, else the defaults.
fn hall_rules(
    broker: Option<&TerminalBrokerConfig>,
    http: Option<&TerminalHttpConfig>,
    base_dir: &Path,
    problems: &mut Problems,
) -> TerminalRules {
    match (broker, http) {
        (Some(b), h) => {
            if let Some(h) = h
                && (h.fever_threshold_c.is_some()
                    || h.plausible_min_c.is_some()
                    || h.plausible_max_c.is_some()
                    || h.profile_dirs.is_some())
            {
                problems.report(
                    "terminal_http",
                    "终端规则只设一处 (the terminal rules are set once): with [terminal_broker] \
                     present, set fever_threshold_c, plausible_*_c and profile_dirs there",
                );
            }
            rules(
                "terminal_broker",
                b.max_payload_bytes,
                b.fever_threshold_c,
                (b.plausible_min_c, b.plausible_max_c),
                &b.profile_dirs,
                base_dir,
                problems,
            )
        }
        (None, Some(h)) => rules(
            "terminal_http",
            h.max_body_bytes,
            h.fever_threshold_c
                .unwrap_or_else(default_fever_threshold_c),
            (
                h.plausible_min_c.unwrap_or_else(default_plausible_min_c),
                h.plausible_max_c.unwrap_or_else(default_plausible_max_c),
            ),
            h.profile_dirs.as_deref().unwrap_or_default(),
            base_dir,
            problems,
        ),
        (None, None) => rules(
            "terminal_broker",
            default_max_payload_bytes(),
            default_fever_threshold_c(),
            (default_plausible_min_c(), default_plausible_max_c()),
            &[],
            base_dir,
            problems,
        ),
    }
}

/// What each terminal is checked against, and what the terminals before it took.
struct TerminalCheck<'a> {
    rules: &'a TerminalRules,
    broker: Option<&'a TerminalBroker>,
    http: Option<&'a TerminalHttp>,
    room_index: &'a HashMap<&'a str, usize>,
    base_dir: &'a Path,
    /// What a login the gateway checks must be.
    logins: SecretRules,
    /// Terminal ids, and logins on the embedded broker, to the index of the first user.
    seen: HashMap<String, usize>,
    users: HashMap<String, usize>,
}

impl TerminalConfig {
    /// Checks `terminals[i]`.
    fn validate(
        &self,
        i: usize,
        check: &mut TerminalCheck<'_>,
        problems: &mut Problems,
    ) -> Option<Terminal> {
        let path = format!("terminals[{i}]");
        let id = TerminalId::new(&self.id);
        if id.is_none() {
            problems.report(
                format!("{path}.id"),
                format!(
                    "\"{}\" is not a terminal id: 1 to 64 printable characters, no spaces, '/', '+' or '#'",
                    self.id
                ),
            );
        }
        if let Some(first) = check.seen.insert(self.id.clone(), i) {
            problems.report(
                format!("{path}.id"),
                format!("\"{}\" is already terminals[{first}]", self.id),
            );
        }
        let room = check.room_index.get(self.room.as_str()).copied();
        if room.is_none() {
            problems.report(
                format!("{path}.room"),
                format!("unknown room \"{}\"", self.room),
            );
        }
        if check.rules.profiles.get(&self.profile).is_none() {
            let known: Vec<&str> = check
                .rules
                .profiles
                .iter()
                .map(|p| p.name.as_str())
                .collect();
            problems.report(
                format!("{path}.profile"),
                format!(
                    "unknown terminal profile \"{}\"; known: {}",
                    self.profile,
                    known.join(", ")
                ),
            );
        }
        let transport = validate_transport(self, &path, check.broker, check.http, problems);
        let login = self.login(i, &path, transport.as_ref(), check, problems);
        Some(Terminal {
            id: id?,
            profile: self.profile.clone(),
            room: room?,
            transport: transport?,
            login,
        })
    }

    /// The terminal's login: on the embedded broker, the credential it pushes with, or its
    /// own that the gateway pulls with; `None` when it needs none (or it has a problem).
    fn login(
        &self,
        i: usize,
        path: &str,
        transport: Option<&TerminalTransport>,
        check: &mut TerminalCheck<'_>,
        problems: &mut Problems,
    ) -> Option<(String, Secret)> {
        let embedded = matches!(
            check.broker.map(|b| &b.source),
            Some(TerminalSource::Embedded { .. })
        ) && transport == Some(&TerminalTransport::Mqtt);
        let is_pull = transport.is_some_and(TerminalTransport::is_pull);
        let needs_login = embedded
            || is_pull
            || (matches!(
                transport,
                Some(TerminalTransport::HttpPush { address: None })
            ));
        match (&self.username, &self.password_file) {
            (user, Some(file)) if user.is_some() || !embedded => {
                if let Some(user) = user
                    && embedded
                    && let Some(first) = check.users.insert(user.clone(), i)
                {
                    problems.report(
                        format!("{path}.username"),
                        format!("\"{user}\" is already the login of terminals[{first}]"),
                    );
                }
                // A pull terminal's password is the device's own: the gateway presents it, so
                // only the file is checked. Every other is a login the gateway checks.
                let rules = if is_pull {
                    check.logins.presented()
                } else {
                    check.logins
                };
                read_secret_with(
                    check.base_dir,
                    file,
                    &format!("{path}.password_file"),
                    rules,
                    problems,
                )
                .map(|s| (user.clone().unwrap_or_default(), s))
            }
            (None, None) if needs_login => {
                let why = if embedded {
                    "a terminal on the embedded broker needs `username` and `password_file`: \
                     the broker admits no one without a login"
                } else if is_pull {
                    "the gateway logs in to this terminal: set `username` and `password_file` \
                     (the device's own login)"
                } else {
                    "a push terminal needs `password_file` (sent as HTTP Basic or ?token=), or \
                     `address` when the device cannot send a credential"
                };
                problems.report(format!("{path}.username"), why);
                None
            }
            (None, None) => None,
            _ => {
                problems.report(
                    format!("{path}.password_file"),
                    "`username` and `password_file` go together",
                );
                None
            }
        }
    }
}

/// A terminal's `transport`, `address` and `poll_interval_ms`, checked together.
fn validate_transport(
    t: &TerminalConfig,
    path: &str,
    broker: Option<&TerminalBroker>,
    http: Option<&TerminalHttp>,
    problems: &mut Problems,
) -> Option<TerminalTransport> {
    if t.poll_interval_ms.is_some() && t.transport != TerminalTransportConfig::HikvisionPull {
        problems.report(
            format!("{path}.poll_interval_ms"),
            "only a `hikvision_pull` terminal is polled",
        );
    }
    let device = |problems: &mut Problems| -> Option<String> {
        match t.address.as_deref() {
            Some(a) if valid_host_port(a) => Some(a.to_string()),
            Some(a) => {
                problems.report(
                    format!("{path}.address"),
                    format!("\"{a}\" 不是 主机:端口 (is not HOST:PORT such as 192.168.50.31:80)"),
                );
                None
            }
            None => {
                problems.report(
                    format!("{path}.address"),
                    "the gateway connects to this terminal: set its `address`, HOST:PORT",
                );
                None
            }
        }
    };
    match t.transport {
        TerminalTransportConfig::Mqtt => {
            if broker.is_none() {
                if problems.iter().any(|p| p.path == "terminal_broker") {
                    return None;
                }
                problems.report(
                    "terminal_broker",
                    "terminals are configured but [terminal_broker] is missing: set `listen` to \
                     the interface and port the terminals reach (or `external`)",
                );
                return None;
            }
            if t.address.is_some() {
                problems.report(
                    format!("{path}.address"),
                    "an MQTT terminal is known by its login, not its address",
                );
            }
            Some(TerminalTransport::Mqtt)
        }
        TerminalTransportConfig::HttpPush => {
            if http.is_none() {
                problems.report(
                    format!("{path}.transport"),
                    "a push terminal delivers to [terminal_http]: add that section with `listen`",
                );
            }
            let address = match t.address.as_deref().map(str::parse::<IpAddr>) {
                None => None,
                Some(Ok(ip)) => Some(ip),
                Some(Err(_)) => {
                    problems.report(
                        format!("{path}.address"),
                        format!(
                            "\"{}\" 不是 IP 地址 (is not an IP address such as 192.168.50.31)",
                            t.address.as_deref().unwrap_or_default()
                        ),
                    );
                    return None;
                }
            };
            if t.profile.starts_with("zkteco") && address.is_none() {
                problems.report(
                    format!("{path}.address"),
                    "a ZKTeco terminal cannot send a credential: set its `address` so no one \
                     else can push as it",
                );
            }
            http.map(|_| TerminalTransport::HttpPush { address })
        }
        TerminalTransportConfig::HikvisionPull => {
            let interval = t.poll_interval_ms.unwrap_or(DEFAULT_PULL_INTERVAL_MS);
            if !(500..=600_000).contains(&interval) {
                problems.report(
                    format!("{path}.poll_interval_ms"),
                    format!("must be between 500 and 600000 ms, not {interval}"),
                );
            }
            device(problems).map(|address| TerminalTransport::HikvisionPull {
                address,
                interval: Duration::from_millis(interval),
            })
        }
        TerminalTransportConfig::HikvisionStream => {
            device(problems).map(|address| TerminalTransport::HikvisionStream { address })
        }
        TerminalTransportConfig::DahuaStream => {
            device(problems).map(|address| TerminalTransport::DahuaStream { address })
        }
    }
}

/// `HOST:PORT` with a plain host name or IP and a port.
fn valid_host_port(a: &str) -> bool {
    let Some((host, port)) = a.rsplit_once(':') else {
        return false;
    };
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'))
        && port.parse::<u16>().is_ok_and(|p| p > 0)
}

/// The terminal rules from the section that holds them.
fn rules(
    section: &str,
    max_payload_bytes: usize,
    fever_threshold_c: f64,
    (plausible_min_c, plausible_max_c): (f64, f64),
    profile_dirs: &[PathBuf],
    base_dir: &Path,
    problems: &mut Problems,
) -> TerminalRules {
    let decode = DecodeOptions {
        max_payload_bytes,
        fever_threshold_c,
        plausible_min_c,
        plausible_max_c,
        ..DecodeOptions::default()
    };
    if let Err(messages) = decode.validate() {
        for message in messages {
            problems.report(section, message);
        }
    }
    let dirs: Vec<PathBuf> = profile_dirs.iter().map(|d| base_dir.join(d)).collect();
    let dir_refs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
    let (profiles, profile_problems) = TerminalProfiles::load(&dir_refs);
    for (origin, message) in profile_problems {
        problems.report(
            format!("{section}.profile_dirs"),
            format!("{origin}: {message}"),
        );
    }
    TerminalRules { decode, profiles }
}

fn validate_broker(
    b: &TerminalBrokerConfig,
    rules: &TerminalRules,
    base_dir: &Path,
    secrets: SecretRules,
    problems: &mut Problems,
) -> Option<TerminalBroker> {
    let source = match (&b.listen, &b.external) {
        (Some(listen), None) => match listen.parse::<SocketAddr>() {
            Ok(listen) => Some(TerminalSource::Embedded { listen }),
            Err(_) => {
                problems.report(
                    "terminal_broker.listen",
                    format!("\"{listen}\" is not an IP address and port such as 192.168.50.2:1884"),
                );
                None
            }
        },
        (None, Some(url)) => match super::parse_broker_url(url) {
            Ok(broker) if broker.tls => {
                problems.report(
                    "terminal_broker.external",
                    format!(
                        "\"{url}\": a broker on the box is reached over plain mqtt://; \
                         mqtts:// is for the central broker"
                    ),
                );
                None
            }
            Ok(super::BrokerUrl { host, port, .. }) => {
                let login = match (&b.username, &b.password_file) {
                    (Some(user), Some(file)) => read_secret_with(
                        base_dir,
                        file,
                        "terminal_broker.password_file",
                        secrets,
                        problems,
                    )
                    .map(|s| (user.clone(), s)),
                    (None, None) => None,
                    _ => {
                        problems.report(
                            "terminal_broker.password_file",
                            "`username` and `password_file` go together",
                        );
                        None
                    }
                };
                Some(TerminalSource::External { host, port, login })
            }
            Err(message) => {
                problems.report("terminal_broker.external", message);
                None
            }
        },
        _ => {
            problems.report(
                "terminal_broker",
                "set exactly one of `listen` (the embedded broker) and `external` (a broker \
                 already on the box)",
            );
            None
        }
    };
    Some(TerminalBroker {
        source: source?,
        decode: rules.decode.clone(),
        profiles: rules.profiles.clone(),
    })
}
