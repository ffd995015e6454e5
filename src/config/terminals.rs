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
//! surprise) and held in a [`Secret`] that never prints.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::terminals::{DecodeOptions, TerminalId, TerminalProfiles};

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
        problems.push((
            "vision.model".into(),
            format!("{} is not a readable file", model.display()),
        ));
        ok = false;
    }
    if !(1..=1024).contains(&v.queue) {
        problems.push(("vision.queue".into(), "must be between 1 and 1024".into()));
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
        problems.push(("vision".into(), problem));
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
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
}

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
    problems: &mut Problems,
) -> Vec<Camera> {
    let mut out = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, c) in cameras.iter().enumerate() {
        let Some(c) = c else { continue };
        let path = format!("cameras[{i}]");
        if !vision {
            problems.push((
                path.clone(),
                "a room camera needs [vision] to count heads".into(),
            ));
        }
        if broker.is_none() {
            problems.push((
                path.clone(),
                "a room camera publishes to the terminal broker: add [terminal_broker]".into(),
            ));
        }
        if TerminalId::new(&c.id).is_none() {
            problems.push((
                format!("{path}.id"),
                format!(
                    "\"{}\" must be 1 to 64 printable characters without spaces, '/', '+' or '#'",
                    c.id
                ),
            ));
        }
        if let Some(first) = seen.insert(c.id.clone(), i) {
            problems.push((
                format!("{path}.id"),
                format!("\"{}\" is already cameras[{first}]", c.id),
            ));
        }
        let room = room_index.get(c.room.as_str()).copied();
        if room.is_none() {
            problems.push((
                format!("{path}.room"),
                format!("unknown room \"{}\"", c.room),
            ));
        }
        let login = match (&c.username, &c.password_file) {
            (Some(user), Some(file)) => {
                read_secret(base_dir, file, &format!("{path}.password_file"), problems)
                    .map(|s| (user.clone(), s))
            }
            (None, None) => {
                if matches!(
                    broker.map(|b| &b.source),
                    Some(TerminalSource::Embedded { .. })
                ) {
                    problems.push((
                        format!("{path}.username"),
                        "a camera on the embedded broker needs `username` and `password_file`"
                            .into(),
                    ));
                }
                None
            }
            _ => {
                problems.push((
                    format!("{path}.password_file"),
                    "`username` and `password_file` go together".into(),
                ));
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

/// A password read from a file: never printed, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
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
    /// Its login on the embedded broker.
    pub login: Option<(String, Secret)>,
}

/// What the validation of these sections reports: (key path, message) pairs.
pub type Problems = Vec<(String, String)>;

pub(super) fn read_secret(
    base_dir: &Path,
    file: &Path,
    key: &str,
    problems: &mut Problems,
) -> Option<Secret> {
    let path = base_dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let secret = text.trim_end_matches(['\r', '\n']).to_string();
            if secret.is_empty() {
                problems.push((key.into(), format!("{} is empty", path.display())));
                None
            } else {
                Some(Secret(secret))
            }
        }
        Err(error) => {
            problems.push((
                key.into(),
                format!("cannot read {}: {error}", path.display()),
            ));
            None
        }
    }
}

/// Validates `[terminal_broker]` and `[[terminals]]` against the hall's rooms.
pub fn validate(
    broker: Option<&TerminalBrokerConfig>,
    terminals: &[Option<TerminalConfig>],
    room_index: &HashMap<&str, usize>,
    base_dir: &Path,
) -> (Option<TerminalBroker>, Vec<Terminal>, Problems) {
    let mut problems = Problems::new();
    let mut out = Vec::new();
    let broker = match broker {
        None => {
            if !terminals.is_empty() {
                problems.push((
                    "terminal_broker".into(),
                    "terminals are configured but [terminal_broker] is missing: set `listen` to \
                     the interface and port the terminals reach (or `external`)"
                        .into(),
                ));
            }
            None
        }
        Some(b) => validate_broker(b, base_dir, &mut problems),
    };
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut users: HashMap<String, usize> = HashMap::new();
    for (i, t) in terminals.iter().enumerate() {
        let Some(t) = t else { continue };
        let path = format!("terminals[{i}]");
        let id = TerminalId::new(&t.id);
        if id.is_none() {
            problems.push((
                format!("{path}.id"),
                format!(
                    "\"{}\" is not a terminal id: 1 to 64 printable characters, no spaces, '/', '+' or '#'",
                    t.id
                ),
            ));
        }
        if let Some(first) = seen.insert(t.id.clone(), i) {
            problems.push((
                format!("{path}.id"),
                format!("\"{}\" is already terminals[{first}]", t.id),
            ));
        }
        let room = room_index.get(t.room.as_str()).copied();
        if room.is_none() {
            problems.push((
                format!("{path}.room"),
                format!("unknown room \"{}\"", t.room),
            ));
        }
        if let Some(b) = &broker
            && b.profiles.get(&t.profile).is_none()
        {
            let known: Vec<&str> = b.profiles.iter().map(|p| p.name.as_str()).collect();
            problems.push((
                format!("{path}.profile"),
                format!(
                    "unknown terminal profile \"{}\"; known: {}",
                    t.profile,
                    known.join(", ")
                ),
            ));
        }
        let embedded = matches!(
            broker.as_ref().map(|b| &b.source),
            Some(TerminalSource::Embedded { .. })
        );
        let login = match (&t.username, &t.password_file) {
            (Some(user), Some(file)) => {
                if let Some(first) = users.insert(user.clone(), i) {
                    problems.push((
                        format!("{path}.username"),
                        format!("\"{user}\" is already the login of terminals[{first}]"),
                    ));
                }
                read_secret(
                    base_dir,
                    file,
                    &format!("{path}.password_file"),
                    &mut problems,
                )
                .map(|s| (user.clone(), s))
            }
            (None, None) if embedded => {
                problems.push((
                    format!("{path}.username"),
                    "a terminal on the embedded broker needs `username` and `password_file`: \
                     the broker admits no one without a login"
                        .into(),
                ));
                None
            }
            (None, None) => None,
            _ => {
                problems.push((
                    format!("{path}.password_file"),
                    "`username` and `password_file` go together".into(),
                ));
                None
            }
        };
        if let (Some(id), Some(room)) = (id, room) {
            out.push(Terminal {
                id,
                profile: t.profile.clone(),
                room,
                login,
            });
        }
    }
    (broker, out, problems)
}

fn validate_broker(
    b: &TerminalBrokerConfig,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<TerminalBroker> {
    let source = match (&b.listen, &b.external) {
        (Some(listen), None) => match listen.parse::<SocketAddr>() {
            Ok(listen) => Some(TerminalSource::Embedded { listen }),
            Err(_) => {
                problems.push((
                    "terminal_broker.listen".into(),
                    format!("\"{listen}\" is not an IP address and port such as 192.168.50.2:1884"),
                ));
                None
            }
        },
        (None, Some(url)) => match super::parse_broker_url(url) {
            Ok(broker) if broker.tls => {
                problems.push((
                    "terminal_broker.external".into(),
                    format!(
                        "\"{url}\": a broker on the box is reached over plain mqtt://; \
                         mqtts:// is for the central broker"
                    ),
                ));
                None
            }
            Ok(super::BrokerUrl { host, port, .. }) => {
                let login = match (&b.username, &b.password_file) {
                    (Some(user), Some(file)) => {
                        read_secret(base_dir, file, "terminal_broker.password_file", problems)
                            .map(|s| (user.clone(), s))
                    }
                    (None, None) => None,
                    _ => {
                        problems.push((
                            "terminal_broker.password_file".into(),
                            "`username` and `password_file` go together".into(),
                        ));
                        None
                    }
                };
                Some(TerminalSource::External { host, port, login })
            }
            Err(message) => {
                problems.push(("terminal_broker.external".into(), message));
                None
            }
        },
        _ => {
            problems.push((
                "terminal_broker".into(),
                "set exactly one of `listen` (the embedded broker) and `external` (a broker \
                 already on the box)"
                    .into(),
            ));
            None
        }
    };
    let decode = DecodeOptions {
        max_payload_bytes: b.max_payload_bytes,
        fever_threshold_c: b.fever_threshold_c,
        plausible_min_c: b.plausible_min_c,
        plausible_max_c: b.plausible_max_c,
        ..DecodeOptions::default()
    };
    if let Err(messages) = decode.validate() {
        for message in messages {
            problems.push(("terminal_broker".into(), message));
        }
    }
    let dirs: Vec<PathBuf> = b.profile_dirs.iter().map(|d| base_dir.join(d)).collect();
    let dir_refs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
    let (profiles, profile_problems) = TerminalProfiles::load(&dir_refs);
    for (origin, message) in profile_problems {
        problems.push((
            "terminal_broker.profile_dirs".into(),
            format!("{origin}: {message}"),
        ));
    }
    Some(TerminalBroker {
        source: source?,
        decode,
        profiles,
    })
}
