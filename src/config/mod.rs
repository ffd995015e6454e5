//! The hall configuration: one TOML file per hall, parsed, then validated, then trusted.
//!
//! Parsing is done section by section (each room, door and counter on its own) so that one
//! typo does not hide the next: `load` reports *every* problem at once, each with its key
//! path (`counters[2].profile`) and the line and column the TOML parser saw it at. Unknown
//! keys are rejected. What comes out, [`Config`], is typed and cross-checked (ids resolved to
//! indices, addresses parsed, the time zone loaded), so the rest of the gateway trusts it.

pub mod profile;
pub mod situation;
pub mod status;
pub mod terminal_http;
pub mod terminals;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue};

pub use profile::{CounterProfile, ProfileSet};

use crate::devices::stream::{SerialProfile, builtin_serial_profiles};

/// Exit status for a bad configuration (sysexits `EX_CONFIG`); the systemd unit's
/// `RestartPreventExitStatus=78` stops a restart loop on it.
pub const EXIT_BAD_CONFIG: i32 = 78;

/// The zone every hall has: the street. Doors from it are the hall's entrances.
pub const OUTSIDE: &str = "outside";

// ---------------------------------------------------------------------------------------------
// The file as written.

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HallSectionConfig {
    /// Stable id of the hall; the uplink topics and message ids are built from it.
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// District (区) the hall belongs to; a level of the uplink topic tree.
    pub district: String,
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// Local time ("HH:MM") at which the day closes: occupancy is reset and daily totals restart.
    #[serde(default = "default_closing_time")]
    pub closing_time: String,
    /// Local time ("HH:MM") the hall opens: the day's figures (means, shares) are over
    /// opening_time..closing_time.
    #[serde(default = "default_opening_time")]
    pub opening_time: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// The central broker: `mqtts://HOST:PORT` (TLS, port 8883 by default) or
    /// `mqtt://HOST:PORT` (plain TCP, port 1883 by default).
    pub broker: String,
    /// PEM bundle of the CAs that may sign the broker's certificate, relative to the config
    /// file. Required with `mqtts://`: only these are trusted (the box has no CA store that
    /// can be relied on).
    pub ca_file: Option<PathBuf>,
    /// The gateway's own certificate chain and private key (PEM), for a broker that asks
    /// for client certificates; both or neither.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// Login on the broker; the password is read from `password_file` (relative to the
    /// config file, never inline). Both or neither.
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// MQTT client id; `hallgate-{hall.id}` when absent.
    pub client_id: Option<String>,
    #[serde(default = "default_keep_alive_secs")]
    pub keep_alive_secs: u64,
    /// Publishes awaiting PUBACK at once.
    #[serde(default = "default_max_inflight")]
    pub max_inflight: u16,
    /// Shortest interval between two retained `state` messages.
    #[serde(default = "default_state_interval_ms")]
    pub state_interval_ms: u64,
    /// Longest wait between reconnect attempts (backoff doubles up to it).
    #[serde(default = "default_max_backoff_ms")]
    pub max_reconnect_backoff_ms: u64,
    /// Largest MQTT packet the gateway sends (the broker's limit may be lower; ask).
    #[serde(default = "default_max_packet_bytes")]
    pub max_packet_bytes: usize,
    /// Most outbox messages published per second. Replaying a backlog after an outage goes
    /// no faster, so a city of gateways reconnecting at once does not flood the centre.
    #[serde(default = "default_max_replay_msgs_per_sec")]
    pub max_replay_msgs_per_sec: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Where the outbox database lives.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Longest time the engine state and counter baselines wait before they are committed
    /// (one fsync each). Messages for the centre are committed as soon as they exist. A crash
    /// loses nothing by a long interval: the counters' cumulative totals give the crossings
    /// back. A short one wears the SD card.
    #[serde(default = "default_commit_interval_ms")]
    pub commit_interval_ms: u64,
    /// Longest time a terminal passage (or a read of a counter in `delta` mode) waits before
    /// it is committed. These exist nowhere but in the gateway once it has acknowledged them,
    /// so this is what a power cut can lose of them; each commit rewrites the engine state,
    /// so a short interval wears the SD card (figures in docs/performance.md). Never longer
    /// than `commit_interval_ms`.
    #[serde(default = "default_event_commit_interval_ms")]
    pub event_commit_interval_ms: u64,
    /// Most space the undelivered messages may take. Near it, old minute bins are rolled up
    /// into 15-minute and then hourly bins; only then is the oldest dropped (counted, ERROR).
    /// The default holds well over 7 days of a busy hall's minute bins.
    #[serde(default = "default_max_outbox_bytes")]
    pub max_outbox_bytes: u64,
    /// Most commits (each one fsync of the write-ahead log) per second, whatever the load:
    /// more are merged into one. Bounds the SD card's wear.
    #[serde(default = "default_max_fsyncs_per_sec")]
    pub max_fsyncs_per_sec: u32,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: default_data_dir(),
            commit_interval_ms: default_commit_interval_ms(),
            event_commit_interval_ms: default_event_commit_interval_ms(),
            max_outbox_bytes: default_max_outbox_bytes(),
            max_fsyncs_per_sec: default_max_fsyncs_per_sec(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfilesConfig {
    /// Extra directories of counter profiles, relative to the config file.
    #[serde(default)]
    pub dirs: Vec<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomConfig {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// Most people the room may hold (fire code or seats).
    pub capacity: u32,
    /// What counts as a service visit (服务人次) in this room: `entries` (crossings into
    /// it), `passages` (accepted passages at its terminals) or `none`.
    #[serde(default = "default_service_visits")]
    pub service_visits: String,
    /// Whether the centre's bookings may name this room; only bookable rooms have
    /// unbooked-use episodes reported.
    #[serde(default)]
    pub bookable: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoorConfig {
    pub id: String,
    /// Zone on the counter's OUT side (`outside` or a room id).
    pub from: String,
    /// Zone on the counter's IN side: an IN count moves a person from `from` to `to`.
    pub to: String,
}

/// The closed list of ways a people counter is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CounterTransportKind {
    ModbusTcp,
    ModbusRtu,
    /// A counter that streams frames or text lines on its own serial port.
    SerialStream,
    /// A people-counting camera that POSTs its running totals to `[terminal_http]` at
    /// `/counters/{id}` (Hikvision `PeopleCounting` real-time events).
    HttpPush,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParityConfig {
    #[default]
    None,
    Even,
    Odd,
}

/// An RS-485 bus: one serial port, several Modbus RTU slaves polled in turn.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    pub id: String,
    /// The serial device; prefer the stable `/dev/serial/by-id/…` name of the USB adapter.
    pub port: PathBuf,
    #[serde(default = "default_baud")]
    pub baud: u32,
    #[serde(default)]
    pub parity: ParityConfig,
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// Silence kept between two transactions; Modbus asks for 3.5 character times (1.75 ms
    /// above 19200 baud), which is the default.
    pub inter_frame_delay_ms: Option<u64>,
    /// Failed polls in a row after which a slave is marked degraded and polled only every
    /// `degraded_retry_ms`, so a dead slave stops costing the others a timeout each cycle.
    #[serde(default = "default_degraded_after")]
    pub degraded_after: u32,
    #[serde(default = "default_degraded_retry_ms")]
    pub degraded_retry_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CounterConfig {
    pub id: String,
    /// The door the counter watches.
    pub door: String,
    /// Register map, by profile name.
    pub profile: String,
    pub transport: CounterTransportKind,
    /// `HOST:PORT` of a Modbus TCP counter.
    pub address: Option<String>,
    /// The `[[buses]]` id a Modbus RTU counter hangs on.
    pub bus: Option<String>,
    /// The serial device of a `serial_stream` counter, and its line settings.
    pub port: Option<PathBuf>,
    pub baud: Option<u32>,
    pub parity: Option<ParityConfig>,
    pub data_bits: Option<u8>,
    pub stop_bits: Option<u8>,
    /// Modbus unit (slave) id.
    #[serde(default = "default_unit_id")]
    pub unit_id: u8,
    /// `http_push`: the credential the camera sends (HTTP Basic or `?token=`).
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Each request's own deadline; a counter that does not answer within it is offline.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_time_zone() -> String {
    "Asia/Shanghai".into()
}
fn default_closing_time() -> String {
    "21:00".into()
}
fn default_opening_time() -> String {
    "08:00".into()
}
fn default_service_visits() -> String {
    "entries".into()
}
fn default_topic_prefix() -> String {
    "hallgate".into()
}
fn default_keep_alive_secs() -> u64 {
    30
}
fn default_max_inflight() -> u16 {
    32
}
fn default_state_interval_ms() -> u64 {
    1000
}
fn default_max_backoff_ms() -> u64 {
    30_000
}
fn default_max_packet_bytes() -> usize {
    256 * 1024
}
fn default_max_replay_msgs_per_sec() -> u32 {
    50
}
fn default_max_outbox_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_max_fsyncs_per_sec() -> u32 {
    1
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/hallgate")
}
fn default_commit_interval_ms() -> u64 {
    60_000
}
fn default_event_commit_interval_ms() -> u64 {
    10_000
}
fn default_baud() -> u32 {
    9600
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}
fn default_degraded_after() -> u32 {
    3
}
fn default_degraded_retry_ms() -> u64 {
    30_000
}
fn default_unit_id() -> u8 {
    1
}
fn default_poll_interval_ms() -> u64 {
    1000
}
fn default_timeout_ms() -> u64 {
    500
}

// ---------------------------------------------------------------------------------------------
// The validated config the gateway trusts.

/// One side of a door.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Zone {
    Outside,
    /// Index into [`Config::rooms`].
    Room(usize),
}

#[derive(Debug, Clone)]
pub struct Hall {
    pub id: String,
    pub name: String,
    pub district: String,
    pub time_zone_name: String,
    pub time_zone: jiff::tz::TimeZone,
    pub closing_time: jiff::civil::Time,
    /// When the hall opens; the open time is the last `opening_time` before each close up to
    /// that close (so a hall closing after midnight opens the evening before).
    pub opening_time: jiff::civil::Time,
}

#[derive(Debug, Clone)]
pub struct Uplink {
    pub host: String,
    pub port: u16,
    /// TLS (`mqtts://`), its files read and checked at load; `None` for plain `mqtt://`.
    pub tls: Option<crate::uplink::tls::UplinkTls>,
    /// TLS files are configured but the broker URL is plain `mqtt://` (a `--uplink`
    /// override, a test): they are checked, not used, and the start-up log says so.
    pub tls_files_unused: bool,
    /// Username and password on the broker.
    pub login: Option<(String, terminals::Secret)>,
    pub topic_prefix: String,
    pub client_id: String,
    pub keep_alive: Duration,
    pub max_inflight: u16,
    pub state_interval: Duration,
    pub max_reconnect_backoff: Duration,
    pub max_packet_bytes: usize,
    pub max_replay_msgs_per_sec: u32,
}

#[derive(Debug, Clone)]
pub struct Storage {
    pub data_dir: PathBuf,
    pub commit_interval: Duration,
    pub event_commit_interval: Duration,
    pub max_outbox_bytes: u64,
    /// Shortest time between two commits (from `max_fsyncs_per_sec`).
    pub min_commit_gap: Duration,
}

#[derive(Debug, Clone)]
pub struct Room {
    pub id: String,
    pub name: String,
    pub capacity: u32,
    pub service_visits: ServiceVisits,
    pub bookable: bool,
}

/// What counts as a service visit (服务人次) in a room; the hall's are the sum over its rooms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ServiceVisits {
    /// Every crossing into the room.
    #[default]
    Entries,
    /// Every accepted passage at the room's terminals.
    Passages,
    /// The room gives no service visits (a corridor, the lobby of a hall counted at rooms).
    None,
}

impl ServiceVisits {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "entries" => Some(ServiceVisits::Entries),
            "passages" => Some(ServiceVisits::Passages),
            "none" => Some(ServiceVisits::None),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Door {
    pub id: String,
    pub from: Zone,
    pub to: Zone,
}

/// Serial line settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialSettings {
    pub port: PathBuf,
    pub baud: u32,
    pub parity: ParityConfig,
    pub data_bits: u8,
    pub stop_bits: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bus {
    pub id: String,
    pub serial: SerialSettings,
    pub inter_frame_delay: Duration,
    pub degraded_after: u32,
    pub degraded_retry: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CounterTransport {
    ModbusTcp {
        address: SocketAddr,
        unit_id: u8,
    },
    /// `bus` indexes [`Config::buses`].
    ModbusRtu {
        bus: usize,
        unit_id: u8,
    },
    /// Frames or lines in the format of `format`, on a port of the counter's own.
    SerialStream {
        serial: SerialSettings,
        format: SerialProfile,
    },
    /// Running totals POSTed to the terminal HTTP listener; only from `address` when given,
    /// only with `login`'s password when given.
    HttpPush {
        address: Option<std::net::IpAddr>,
        login: Option<(String, terminals::Secret)>,
    },
}

#[derive(Debug, Clone)]
pub struct Counter {
    pub id: String,
    /// Index into [`Config::doors`].
    pub door: usize,
    /// The Modbus register map. For a `serial_stream` counter, the equivalent register image
    /// of its totals (their width and wrap), which is all the tracker and simulator need.
    pub profile: CounterProfile,
    pub transport: CounterTransport,
    pub poll_interval: Duration,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub hall: Hall,
    pub uplink: Uplink,
    pub storage: Storage,
    pub rooms: Vec<Room>,
    pub doors: Vec<Door>,
    pub buses: Vec<Bus>,
    pub counters: Vec<Counter>,
    /// Where terminals publish; `None` when the hall has none.
    pub terminal_broker: Option<terminals::TerminalBroker>,
    /// Where push terminals deliver over HTTP; `None` when none do.
    pub terminal_http: Option<terminal_http::TerminalHttp>,
    /// How a terminal's record becomes a passage, whatever its transport.
    pub terminal_rules: terminals::TerminalRules,
    pub terminals: Vec<terminals::Terminal>,
    /// Face counting in terminal snapshots; `None` when off.
    pub vision: Option<terminals::Vision>,
    /// Room cameras whose head counts re-anchor occupancy.
    pub cameras: Vec<terminals::Camera>,
    /// The local status page; `None` when turned off.
    pub status: Option<status::Status>,
    /// Held activities and unbooked use: thresholds and the bookings topic.
    pub situation: situation::Situation,
}

impl Config {
    pub fn zone_name(&self, zone: Zone) -> &str {
        match zone {
            Zone::Outside => OUTSIDE,
            Zone::Room(i) => &self.rooms[i].id,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors.

/// One problem with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path such as `counters[2].profile`; empty for the document as a whole.
    pub path: String,
    /// 1-based line and column, where the parser knows them.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(document)"
        } else {
            &self.path
        };
        match self.position {
            Some((line, col)) => write!(f, "{path} (line {line}, column {col}): {}", self.message),
            None => write!(f, "{path}: {}", self.message),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("config file {path} has {} problem(s):\n{}", problems.len(), ProblemList(problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

struct ProblemList<'a>(&'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  - {p}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Loading.

/// The top-level sections a hall config may have.
const SECTIONS: &[&str] = &[
    "hall",
    "uplink",
    "storage",
    "profiles",
    "rooms",
    "doors",
    "buses",
    "counters",
    "terminal_broker",
    "terminal_http",
    "terminals",
    "vision",
    "cameras",
    "status",
    "situation",
];

/// Command-line overrides applied before validation, so the same file runs on the box, in
/// tests and on a laptop.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub uplink: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// `hallgate demo` (and tests of the shipped example hall) only: accept the shipped
    /// example password files, which the demo replaces with fresh random logins before
    /// anything listens ([`terminals::SecretRules::allow_examples`]).
    pub allow_example_secrets: bool,
}

/// Reads, parses and validates the config at `path`.
pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    parse(&text, base_dir, overrides).map_err(|problems| ConfigError::Invalid {
        path: path.to_path_buf(),
        problems,
    })
}

/// Parses and validates config text; relative profile directories resolve against `base_dir`.
pub fn parse(text: &str, base_dir: &Path, overrides: &Overrides) -> Result<Config, Vec<Problem>> {
    let doc = match DeTable::parse(text) {
        Ok(doc) => doc,
        Err(error) => {
            return Err(vec![Problem {
                path: String::new(),
                position: error.span().map(|s| line_col(text, s.start)),
                message: error.message().trim().to_string(),
            }]);
        }
    };
    let mut v = Validator {
        text,
        problems: Vec::new(),
    };
    let root = doc.get_ref();
    for (key, value) in root.iter() {
        let key: &str = key.get_ref();
        if !SECTIONS.contains(&key) {
            v.at_span(
                key,
                value.span(),
                format!("unknown section; expected one of {}", SECTIONS.join(", ")),
            );
        }
    }

    let hall: Option<HallSectionConfig> = v.section(root, "hall", true);
    let uplink: Option<UplinkConfig> = v.section(root, "uplink", overrides.uplink.is_none());
    let storage: StorageConfig = v.section(root, "storage", false).unwrap_or_default();
    let profiles_cfg: ProfilesConfig = v.section(root, "profiles", false).unwrap_or_default();
    let rooms: Vec<Option<RoomConfig>> = v.array(root, "rooms");
    let doors: Vec<Option<DoorConfig>> = v.array(root, "doors");
    let buses: Vec<Option<BusConfig>> = v.array(root, "buses");
    let counters: Vec<Option<CounterConfig>> = v.array(root, "counters");
    let terminal_broker: Option<terminals::TerminalBrokerConfig> =
        v.section(root, "terminal_broker", false);
    let terminal_http_cfg: Option<terminal_http::TerminalHttpConfig> =
        v.section(root, "terminal_http", false);
    let terminal_cfgs: Vec<Option<terminals::TerminalConfig>> = v.array(root, "terminals");
    let vision_cfg: Option<terminals::VisionConfig> = v.section(root, "vision", false);
    let camera_cfgs: Vec<Option<terminals::CameraConfig>> = v.array(root, "cameras");
    let status_cfg: status::StatusConfig = v.section(root, "status", false).unwrap_or_default();
    let situation_cfg: situation::SituationConfig =
        v.section(root, "situation", false).unwrap_or_default();

    // Hall.
    let hall = hall.and_then(|h| v.hall(root, h));

    // Uplink, with the command line winning over the file.
    let uplink = v.uplink(root, uplink, overrides, hall.as_ref(), base_dir);

    // Storage.
    if storage.commit_interval_ms < 100 || storage.commit_interval_ms > 600_000 {
        v.at(
            root,
            "storage.commit_interval_ms",
            format!(
                "must be between 100 and 600000 ms, not {}",
                storage.commit_interval_ms
            ),
        );
    }
    if storage.event_commit_interval_ms < 100 || storage.event_commit_interval_ms > 600_000 {
        v.at(
            root,
            "storage.event_commit_interval_ms",
            format!(
                "must be between 100 and 600000 ms, not {}",
                storage.event_commit_interval_ms
            ),
        );
    }
    if storage.max_outbox_bytes < 256 * 1024 {
        v.at(
            root,
            "storage.max_outbox_bytes",
            format!(
                "must be at least 262144 (256 KiB), not {}",
                storage.max_outbox_bytes
            ),
        );
    }
    if !(1..=1000).contains(&storage.max_fsyncs_per_sec) {
        v.at(
            root,
            "storage.max_fsyncs_per_sec",
            format!(
                "must be between 1 and 1000, not {}",
                storage.max_fsyncs_per_sec
            ),
        );
    }
    let storage = Storage {
        data_dir: overrides
            .data_dir
            .clone()
            .unwrap_or(storage.data_dir.clone()),
        commit_interval: Duration::from_millis(storage.commit_interval_ms),
        // Never later than everything else is committed anyway.
        event_commit_interval: Duration::from_millis(
            storage
                .event_commit_interval_ms
                .min(storage.commit_interval_ms),
        ),
        max_outbox_bytes: storage.max_outbox_bytes,
        min_commit_gap: Duration::from_secs(1) / storage.max_fsyncs_per_sec.max(1),
    };

    // Profiles.
    let dirs: Vec<PathBuf> = profiles_cfg.dirs.iter().map(|d| base_dir.join(d)).collect();
    let dir_refs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
    let (profile_set, profile_problems) = ProfileSet::load(&dir_refs);
    for (origin, message) in profile_problems {
        v.at(root, "profiles.dirs", format!("{origin}: {message}"));
    }
    let (serial_profiles, serial_problems) = builtin_serial_profiles();
    for (origin, message) in serial_problems {
        v.at(root, "profiles", format!("{origin}: {message}"));
    }

    // Rooms.
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut room_index: HashMap<&str, usize> = HashMap::new();
    let mut out_rooms = Vec::new();
    for (i, room) in rooms.iter().enumerate() {
        let Some(room) = room else { continue };
        let path = format!("rooms[{i}]");
        v.check_id(root, &format!("{path}.id"), &room.id, &mut ids);
        if room.id == OUTSIDE {
            v.at(
                root,
                &format!("{path}.id"),
                "\"outside\" is the street, reserved for doors' `from`/`to`; pick another room id",
            );
        }
        if room.capacity == 0 {
            v.at(
                root,
                &format!("{path}.capacity"),
                "capacity must be at least 1",
            );
        }
        let service_visits = ServiceVisits::parse(&room.service_visits).unwrap_or_else(|| {
            v.at(
                root,
                &format!("{path}.service_visits"),
                format!(
                    "\"{}\" is not one of \"entries\", \"passages\", \"none\"",
                    room.service_visits
                ),
            );
            ServiceVisits::default()
        });
        room_index
            .entry(room.id.as_str())
            .or_insert(out_rooms.len());
        out_rooms.push(Room {
            service_visits,
            id: room.id.clone(),
            name: if room.name.is_empty() {
                room.id.clone()
            } else {
                room.name.clone()
            },
            capacity: room.capacity,
            bookable: room.bookable,
        });
    }
    if rooms.is_empty() {
        v.at(root, "rooms", "a hall needs at least one [[rooms]] entry");
    }

    // Doors.
    let mut door_index: HashMap<&str, usize> = HashMap::new();
    let mut out_doors = Vec::new();
    for (i, door) in doors.iter().enumerate() {
        let Some(door) = door else { continue };
        let path = format!("doors[{i}]");
        v.check_id(root, &format!("{path}.id"), &door.id, &mut ids);
        let zone = |name: &str, key: &str, v: &mut Validator| -> Option<Zone> {
            if name == OUTSIDE {
                Some(Zone::Outside)
            } else if let Some(&r) = room_index.get(name) {
                Some(Zone::Room(r))
            } else {
                v.at(
                    root,
                    &format!("{path}.{key}"),
                    format!("unknown room \"{name}\"; use a room id or \"outside\""),
                );
                None
            }
        };
        let from = zone(&door.from, "from", &mut v);
        let to = zone(&door.to, "to", &mut v);
        if door.from == door.to {
            v.at(
                root,
                &format!("{path}.to"),
                format!(
                    "a door must join two different zones; both sides are \"{}\"",
                    door.to
                ),
            );
        }
        if let (Some(from), Some(to)) = (from, to) {
            door_index
                .entry(door.id.as_str())
                .or_insert(out_doors.len());
            out_doors.push(Door {
                id: door.id.clone(),
                from,
                to,
            });
        }
    }

    // Buses.
    let mut bus_index: HashMap<&str, usize> = HashMap::new();
    let mut ports: HashMap<PathBuf, String> = HashMap::new();
    let mut out_buses = Vec::new();
    for (i, bus) in buses.iter().enumerate() {
        let Some(b) = bus else { continue };
        let path = format!("buses[{i}]");
        v.check_id(root, &format!("{path}.id"), &b.id, &mut ids);
        if let Some(serial) = v.serial(
            root,
            &path,
            &b.port,
            b.baud,
            b.parity,
            b.data_bits,
            b.stop_bits,
        ) {
            if let Some(other) = ports.insert(b.port.clone(), b.id.clone()) {
                v.at(
                    root,
                    &format!("{path}.port"),
                    format!("{} is already bus \"{other}\"", b.port.display()),
                );
            }
            if b.degraded_after == 0 {
                v.at(
                    root,
                    &format!("{path}.degraded_after"),
                    "must be at least 1",
                );
            }
            if !(100..=3_600_000).contains(&b.degraded_retry_ms) {
                v.at(
                    root,
                    &format!("{path}.degraded_retry_ms"),
                    "must be between 100 and 3600000",
                );
            }
            let inter_frame_delay = match b.inter_frame_delay_ms {
                Some(ms) if ms > 1000 => {
                    v.at(
                        root,
                        &format!("{path}.inter_frame_delay_ms"),
                        "must be at most 1000",
                    );
                    Duration::ZERO
                }
                Some(ms) => Duration::from_millis(ms),
                None => modbus_silence(&serial),
            };
            bus_index.entry(b.id.as_str()).or_insert(out_buses.len());
            out_buses.push(Bus {
                id: b.id.clone(),
                serial,
                inter_frame_delay,
                degraded_after: b.degraded_after,
                degraded_retry: Duration::from_millis(b.degraded_retry_ms),
            });
        }
    }

    // Counters.
    let mut counted_doors: HashMap<usize, String> = HashMap::new();
    let mut addresses: HashMap<(SocketAddr, u8), String> = HashMap::new();
    let mut rtu_units: HashMap<(usize, u8), String> = HashMap::new();
    let mut out_counters = Vec::new();
    for (i, counter) in counters.iter().enumerate() {
        let Some(c) = counter else { continue };
        let path = format!("counters[{i}]");
        v.check_id(root, &format!("{path}.id"), &c.id, &mut ids);
        let door = match door_index.get(c.door.as_str()) {
            Some(&d) => {
                if let Some(other) = counted_doors.insert(d, c.id.clone()) {
                    v.at(
                        root,
                        &format!("{path}.door"),
                        format!(
                            "door \"{}\" is already counted by counter \"{other}\"; two counters on one door count every crossing twice",
                            c.door
                        ),
                    );
                }
                Some(d)
            }
            None => {
                if !doors.iter().flatten().any(|d| d.id == c.door) {
                    v.at(
                        root,
                        &format!("{path}.door"),
                        format!("unknown door \"{}\"", c.door),
                    );
                }
                None
            }
        };
        let serial_format = match c.transport {
            CounterTransportKind::SerialStream => match serial_profiles.get(&c.profile) {
                Some(p) => Some(p.clone()),
                None => {
                    let known: Vec<&str> = serial_profiles.keys().map(String::as_str).collect();
                    v.at(
                        root,
                        &format!("{path}.profile"),
                        format!(
                            "unknown serial counter profile \"{}\"; known: {}",
                            c.profile,
                            known.join(", ")
                        ),
                    );
                    None
                }
            },
            _ => None,
        };
        let profile = match (&serial_format, profile_set.get(&c.profile)) {
            (Some(format), _) => Some(register_image(format)),
            (None, Some(p)) if c.transport != CounterTransportKind::SerialStream => Some(p.clone()),
            (None, _) if c.transport == CounterTransportKind::SerialStream => None,
            (None, _) => {
                let known: Vec<&str> = profile_set.profiles.keys().map(String::as_str).collect();
                v.at(
                    root,
                    &format!("{path}.profile"),
                    format!(
                        "unknown counter profile \"{}\"; known: {}",
                        c.profile,
                        known.join(", ")
                    ),
                );
                None
            }
        };
        if !(100..=3_600_000).contains(&c.poll_interval_ms) {
            v.at(
                root,
                &format!("{path}.poll_interval_ms"),
                format!(
                    "must be between 100 and 3600000 ms, not {}",
                    c.poll_interval_ms
                ),
            );
        }
        if c.timeout_ms < 10 || c.timeout_ms > 60_000 {
            v.at(
                root,
                &format!("{path}.timeout_ms"),
                format!("must be between 10 and 60000 ms, not {}", c.timeout_ms),
            );
        }
        let transport = match c.transport {
            CounterTransportKind::ModbusTcp => match c.address.as_deref() {
                None => {
                    v.at(
                        root,
                        &path,
                        "a modbus_tcp counter needs `address = \"HOST:PORT\"`",
                    );
                    None
                }
                Some(a) => match resolve_socket_addr(a) {
                    Ok(address) => {
                        if let Some(other) = addresses.insert((address, c.unit_id), c.id.clone()) {
                            v.at(
                                root,
                                &format!("{path}.address"),
                                format!(
                                    "{address} unit {} is already counter \"{other}\"",
                                    c.unit_id
                                ),
                            );
                        }
                        Some(CounterTransport::ModbusTcp {
                            address,
                            unit_id: c.unit_id,
                        })
                    }
                    Err(message) => {
                        v.at(root, &format!("{path}.address"), message);
                        None
                    }
                },
            },
            CounterTransportKind::SerialStream => match (&c.port, serial_format) {
                (None, _) => {
                    v.at(
                        root,
                        &path,
                        "a serial_stream counter needs `port = \"/dev/serial/by-id/…\"`",
                    );
                    None
                }
                (Some(port), Some(format)) => {
                    let serial = v.serial(
                        root,
                        &path,
                        port,
                        c.baud.unwrap_or_else(default_baud),
                        c.parity.unwrap_or_default(),
                        c.data_bits.unwrap_or_else(default_data_bits),
                        c.stop_bits.unwrap_or_else(default_stop_bits),
                    );
                    if let Some(other) = ports.insert(port.clone(), c.id.clone()) {
                        v.at(
                            root,
                            &format!("{path}.port"),
                            format!("{} is already used by \"{other}\"", port.display()),
                        );
                    }
                    serial.map(|serial| CounterTransport::SerialStream { serial, format })
                }
                (Some(_), None) => None,
            },
            CounterTransportKind::HttpPush => {
                v.http_push_counter(root, &path, c, base_dir, overrides)
            }
            CounterTransportKind::ModbusRtu => match c.bus.as_deref() {
                None => {
                    v.at(
                        root,
                        &path,
                        "a modbus_rtu counter needs `bus = \"BUS_ID\"` naming one of [[buses]]",
                    );
                    None
                }
                Some(name) => match bus_index.get(name) {
                    Some(&bus) => {
                        if !(1..=247).contains(&c.unit_id) {
                            v.at(
                                root,
                                &format!("{path}.unit_id"),
                                format!(
                                    "a Modbus RTU slave address is 1 to 247, not {}",
                                    c.unit_id
                                ),
                            );
                        }
                        if let Some(other) = rtu_units.insert((bus, c.unit_id), c.id.clone()) {
                            v.at(
                                root,
                                &format!("{path}.unit_id"),
                                format!(
                                    "bus \"{name}\" unit {} is already counter \"{other}\"",
                                    c.unit_id
                                ),
                            );
                        }
                        Some(CounterTransport::ModbusRtu {
                            bus,
                            unit_id: c.unit_id,
                        })
                    }
                    None => {
                        if !buses.iter().flatten().any(|b| b.id == name) {
                            v.at(
                                root,
                                &format!("{path}.bus"),
                                format!("unknown bus \"{name}\""),
                            );
                        }
                        None
                    }
                },
            },
        };
        let serial_keys = [
            c.port.as_ref().map(|_| "port"),
            c.baud.map(|_| "baud"),
            c.parity.map(|_| "parity"),
            c.data_bits.map(|_| "data_bits"),
            c.stop_bits.map(|_| "stop_bits"),
        ];
        let stray = match c.transport {
            CounterTransportKind::ModbusTcp => c
                .bus
                .as_ref()
                .map(|_| "bus")
                .or(serial_keys.into_iter().flatten().next()),
            CounterTransportKind::ModbusRtu => c
                .address
                .as_ref()
                .map(|_| "address")
                .or(serial_keys.into_iter().flatten().next()),
            CounterTransportKind::SerialStream => c
                .address
                .as_ref()
                .map(|_| "address")
                .or(c.bus.as_ref().map(|_| "bus")),
            CounterTransportKind::HttpPush => c
                .bus
                .as_ref()
                .map(|_| "bus")
                .or(serial_keys.into_iter().flatten().next()),
        };
        let stray = stray.or(match c.transport {
            CounterTransportKind::HttpPush => None,
            _ => c
                .username
                .as_ref()
                .map(|_| "username")
                .or(c.password_file.as_ref().map(|_| "password_file")),
        });
        if let Some(key) = stray {
            v.at(
                root,
                &format!("{path}.{key}"),
                format!("`{key}` does not apply to a {:?} counter", c.transport),
            );
        }
        if let (Some(door), Some(profile), Some(transport)) = (door, profile, transport) {
            out_counters.push(Counter {
                id: c.id.clone(),
                door,
                profile,
                transport,
                poll_interval: Duration::from_millis(c.poll_interval_ms),
                timeout: Duration::from_millis(c.timeout_ms),
            });
        }
    }

    // Terminals.
    let (mut terminal_sections, terminal_problems) = terminals::validate(
        terminal_broker.as_ref(),
        terminal_http_cfg.as_ref(),
        &terminal_cfgs,
        &room_index,
        base_dir,
        overrides.allow_example_secrets,
    );
    // Terminals that write naive local times (ZKTeco) write the hall's.
    if let Some(hall) = hall.as_ref() {
        terminal_sections.rules.decode.time_zone = hall.time_zone.clone();
        if let Some(broker) = terminal_sections.broker.as_mut() {
            broker.decode.time_zone = hall.time_zone.clone();
        }
    }
    if terminal_sections.http.is_none() {
        for (i, c) in counters.iter().enumerate() {
            if let Some(c) = c
                && c.transport == CounterTransportKind::HttpPush
            {
                v.at(
                    root,
                    &format!("counters[{i}].transport"),
                    "an http_push counter delivers to [terminal_http]: add that section with `listen`",
                );
            }
        }
    }
    let mut vision_problems = Vec::new();
    let vision = vision_cfg
        .as_ref()
        .and_then(|c| terminals::validate_vision(c, base_dir, &mut vision_problems));
    let out_cameras = terminals::validate_cameras(
        &camera_cfgs,
        &room_index,
        base_dir,
        vision.is_some(),
        terminal_sections.broker.as_ref(),
        overrides.allow_example_secrets,
        &mut vision_problems,
    );
    let mut status_problems = Vec::new();
    let status = status::validate_status(&status_cfg, base_dir, &mut status_problems);
    let mut situation_problems = Vec::new();
    let situation = situation::validate_situation(&situation_cfg, &mut situation_problems);
    for (path, message) in terminal_problems
        .into_iter()
        .chain(vision_problems)
        .chain(status_problems)
        .chain(situation_problems)
    {
        v.at(root, &path, message);
    }

    match (hall, uplink, situation) {
        (Some(hall), Some(uplink), Some(situation)) if v.problems.is_empty() => Ok(Config {
            hall,
            uplink,
            storage,
            rooms: out_rooms,
            doors: out_doors,
            buses: out_buses,
            counters: out_counters,
            terminal_broker: terminal_sections.broker,
            terminal_http: terminal_sections.http,
            terminal_rules: terminal_sections.rules,
            terminals: terminal_sections.terminals,
            vision,
            cameras: out_cameras,
            status,
            situation,
        }),
        _ => {
            if v.problems.is_empty() {
                // A section failed without saying why; cannot happen, but never accept it.
                v.problems.push(Problem {
                    path: String::new(),
                    position: None,
                    message: "config is incomplete".into(),
                });
            }
            Err(v.problems)
        }
    }
}

/// The register image equivalent to a streaming counter's totals: cumulative, with the
/// format's width and wrap. Only its counting fields are ever used.
fn register_image(format: &SerialProfile) -> CounterProfile {
    use profile::{CountMode, FunctionCode, ValueType, WordOrder};
    let value_type = if format.wrap_modulus <= 1 << 16 {
        ValueType::U16
    } else {
        ValueType::U32
    };
    let width = value_type.registers();
    CounterProfile {
        name: format.name.clone(),
        function: FunctionCode::HoldingRegisters,
        value_type,
        word_order: WordOrder::HighFirst,
        mode: CountMode::Cumulative,
        wrap_modulus: format.wrap_modulus,
        max_step: 5000,
        on_decrease: profile::OnDecrease::Reset,
        read_start: 0,
        read_count: 2 * width,
        in_offset: 0,
        out_offset: width,
    }
}

/// Modbus RTU's required silence between frames: 3.5 character times of 11 bits, fixed at
/// 1.75 ms above 19200 baud (Modbus over Serial Line, V1.02, section 2.5.1.1).
fn modbus_silence(serial: &SerialSettings) -> Duration {
    if serial.baud > 19_200 {
        Duration::from_micros(1750)
    } else {
        Duration::from_micros(3_500_000 * 11 / u64::from(serial.baud.max(1)) + 1)
    }
}

/// `HOST:PORT` to a socket address; names are resolved once, at load.
fn resolve_socket_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    use std::net::ToSocketAddrs;
    match text.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("\"{text}\" resolves to no address")),
        Err(error) => Err(format!(
            "\"{text}\" is not HOST:PORT or cannot be resolved: {error}"
        )),
    }
}

/// A broker address as written in a config: `mqtt://HOST[:PORT]` or `mqtts://HOST[:PORT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// `mqtts://`: MQTT over TLS.
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

/// Parses `mqtt://HOST:PORT` (port 1883 when left out; `tcp://` is the same) and
/// `mqtts://HOST:PORT` (TLS, port 8883 when left out).
pub fn parse_broker_url(url: &str) -> Result<BrokerUrl, String> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
        (true, rest)
    } else if let Some(rest) = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
    {
        (false, rest)
    } else {
        return Err(format!(
            "\"{url}\" must start with mqtts:// (TLS) or mqtt:// (plain TCP)"
        ));
    };
    let default_port = if tls { 8883 } else { 1883 };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || rest.contains('@') {
        return Err(format!(
            "\"{url}\" must be mqtt://HOST:PORT or mqtts://HOST:PORT"
        ));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, tail) = v6
            .split_once(']')
            .ok_or_else(|| format!("\"{url}\" has an unclosed [ in its host"))?;
        let port = match tail.strip_prefix(':') {
            Some(p) => parse_port(p, url)?,
            None if tail.is_empty() => default_port,
            None => {
                return Err(format!(
                    "\"{url}\" must be mqtt://HOST:PORT or mqtts://HOST:PORT"
                ));
            }
        };
        (host.to_string(), port)
    } else {
        match rest.split_once(':') {
            Some((host, p)) => (host.to_string(), parse_port(p, url)?),
            None => (rest.to_string(), default_port),
        }
    };
    if host.is_empty() {
        return Err(format!("\"{url}\" has no host"));
    }
    Ok(BrokerUrl { tls, host, port })
}

fn parse_port(text: &str, url: &str) -> Result<u16, String> {
    text.parse::<u16>()
        .map_err(|_| format!("\"{text}\" in \"{url}\" is not a port number"))
}

/// 1-based (line, column) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Collects problems while the document is walked.
struct Validator<'t> {
    text: &'t str,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    fn at_span(&mut self, path: &str, span: Range<usize>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.to_string(),
            position: Some(line_col(self.text, span.start)),
            message: message.into(),
        });
    }

    /// Records a problem at key `path`, locating it in the document when the key exists.
    fn at(&mut self, root: &DeTable<'_>, path: &str, message: impl Into<String>) {
        let position = lookup_span(root, path).map(|s| line_col(self.text, s.start));
        self.problems.push(Problem {
            path: path.to_string(),
            position,
            message: message.into(),
        });
    }

    fn deserialize<T: DeserializeOwned>(
        &mut self,
        path: &str,
        value: &toml::Spanned<DeValue<'_>>,
    ) -> Option<T> {
        match T::deserialize(toml::de::ValueDeserializer::from(value.clone())) {
            Ok(t) => Some(t),
            Err(error) => {
                let span = error.span().unwrap_or(value.span());
                let message = error.message().trim().to_string();
                // serde names the offending field inside the message; also point at it.
                let sub = field_in_message(&message)
                    .filter(|f| {
                        value
                            .get_ref()
                            .as_table()
                            .is_some_and(|t| t.iter().any(|(k, _)| k.get_ref() == f))
                    })
                    .map(|f| format!("{path}.{f}"));
                self.at_span(sub.as_deref().unwrap_or(path), span, message);
                None
            }
        }
    }

    fn section<T: DeserializeOwned>(
        &mut self,
        root: &DeTable<'_>,
        key: &str,
        required: bool,
    ) -> Option<T> {
        match root.iter().find(|(k, _)| k.get_ref() == key) {
            Some((_, value)) => {
                if value.get_ref().as_table().is_none() {
                    self.at_span(
                        key,
                        value.span(),
                        format!("`{key}` must be a table, [{key}]"),
                    );
                    return None;
                }
                self.deserialize(key, value)
            }
            None => {
                if required {
                    self.problems.push(Problem {
                        path: key.to_string(),
                        position: None,
                        message: format!("missing section [{key}]"),
                    });
                }
                None
            }
        }
    }

    fn array<T: DeserializeOwned>(&mut self, root: &DeTable<'_>, key: &str) -> Vec<Option<T>> {
        let Some((_, value)) = root.iter().find(|(k, _)| k.get_ref() == key) else {
            return Vec::new();
        };
        let Some(items) = value.get_ref().as_array() else {
            self.at_span(
                key,
                value.span(),
                format!("`{key}` must be an array of tables, [[{key}]]"),
            );
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| self.deserialize(&format!("{key}[{i}]"), item))
            .collect()
    }

    fn check_id(
        &mut self,
        root: &DeTable<'_>,
        path: &str,
        id: &str,
        seen: &mut HashMap<String, String>,
    ) {
        if let Err(message) = check_topic_safe_id(id) {
            self.at(root, path, message);
        }
        if let Some(first) = seen.insert(id.to_string(), path.to_string()) {
            self.at(
                root,
                path,
                format!("duplicate id \"{id}\", already used at {first}"),
            );
            seen.insert(id.to_string(), first);
        }
    }

    /// An `http_push` counter's source address and login (a people-counting camera).
    fn http_push_counter(
        &mut self,
        root: &DeTable<'_>,
        path: &str,
        c: &CounterConfig,
        base_dir: &Path,
        overrides: &Overrides,
    ) -> Option<CounterTransport> {
        let address = match c.address.as_deref().map(str::parse::<std::net::IpAddr>) {
            None => Some(None),
            Some(Ok(ip)) => Some(Some(ip)),
            Some(Err(_)) => {
                self.at(
                    root,
                    &format!("{path}.address"),
                    "an http_push counter's `address` is the camera's IP (only it may \
                     push as this counter), such as 192.168.50.41",
                );
                None
            }
        };
        let login = match (&c.username, &c.password_file) {
            (user, Some(file)) => {
                let mut problems = terminals::Problems::new();
                // A login the gateway checks, like a push terminal's.
                let secret = terminals::read_secret_with(
                    base_dir,
                    file,
                    &format!("{path}.password_file"),
                    terminals::SecretRules::guarding(overrides.allow_example_secrets),
                    &mut problems,
                );
                for (key, message) in problems {
                    self.at(root, &key, message);
                }
                secret.map(|s| Some((user.clone().unwrap_or_default(), s)))
            }
            (None, None) => Some(None),
            (Some(_), None) => {
                self.at(
                    root,
                    &format!("{path}.password_file"),
                    "`username` needs `password_file`",
                );
                None
            }
        };
        if matches!((&address, &login), (Some(None), Some(None))) {
            self.at(
                root,
                path,
                "an http_push counter needs `address` or `password_file`, so no one else \
                 can push counts as it",
            );
        }
        match (address, login) {
            (Some(address), Some(login)) => Some(CounterTransport::HttpPush { address, login }),
            _ => None,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn serial(
        &mut self,
        root: &DeTable<'_>,
        path: &str,
        port: &Path,
        baud: u32,
        parity: ParityConfig,
        data_bits: u8,
        stop_bits: u8,
    ) -> Option<SerialSettings> {
        let mut ok = true;
        if port.as_os_str().is_empty() {
            self.at(root, &format!("{path}.port"), "must name a serial device");
            ok = false;
        }
        if !(300..=4_000_000).contains(&baud) {
            self.at(
                root,
                &format!("{path}.baud"),
                format!("must be between 300 and 4000000, not {baud}"),
            );
            ok = false;
        }
        if !(7..=8).contains(&data_bits) {
            self.at(root, &format!("{path}.data_bits"), "must be 7 or 8");
            ok = false;
        }
        if !(1..=2).contains(&stop_bits) {
            self.at(root, &format!("{path}.stop_bits"), "must be 1 or 2");
            ok = false;
        }
        ok.then(|| SerialSettings {
            port: port.to_path_buf(),
            baud,
            parity,
            data_bits,
            stop_bits,
        })
    }

    fn hall(&mut self, root: &DeTable<'_>, h: HallSectionConfig) -> Option<Hall> {
        let mut ok = true;
        for (key, value) in [("hall.id", &h.id), ("hall.district", &h.district)] {
            if let Err(message) = check_topic_safe_id(value) {
                self.at(root, key, message);
                ok = false;
            }
        }
        let time_zone = match jiff::tz::TimeZone::get(&h.time_zone) {
            Ok(tz) => Some(tz),
            Err(error) => {
                self.at(
                    root,
                    "hall.time_zone",
                    format!("unknown time zone \"{}\": {error}", h.time_zone),
                );
                None
            }
        };
        let closing_time = match parse_hh_mm(&h.closing_time) {
            Some(t) => Some(t),
            None => {
                self.at(
                    root,
                    "hall.closing_time",
                    format!("\"{}\" is not a time of day HH:MM", h.closing_time),
                );
                None
            }
        };
        let opening_time = match parse_hh_mm(&h.opening_time) {
            Some(t) => Some(t),
            None => {
                self.at(
                    root,
                    "hall.opening_time",
                    format!("\"{}\" is not a time of day HH:MM", h.opening_time),
                );
                None
            }
        };
        if let (Some(open), Some(close)) = (opening_time, closing_time)
            && !opening_fits(open, close)
        {
            self.at(
                root,
                "hall.opening_time",
                format!(
                    "\"{}\" must be before closing_time \"{}\" (a closing time before noon is taken as after midnight, and may follow an opening the evening before)",
                    h.opening_time, h.closing_time
                ),
            );
            ok = false;
        }
        let (Some(time_zone), Some(closing_time), Some(opening_time), true) =
            (time_zone, closing_time, opening_time, ok)
        else {
            return None;
        };
        Some(Hall {
            name: if h.name.is_empty() {
                h.id.clone()
            } else {
                h.name.clone()
            },
            id: h.id,
            district: h.district,
            time_zone_name: h.time_zone,
            time_zone,
            closing_time,
            opening_time,
        })
    }

    fn uplink(
        &mut self,
        root: &DeTable<'_>,
        file: Option<UplinkConfig>,
        overrides: &Overrides,
        hall: Option<&Hall>,
        base_dir: &Path,
    ) -> Option<Uplink> {
        let file = file.unwrap_or(UplinkConfig {
            broker: String::new(),
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            username: None,
            password_file: None,
            topic_prefix: default_topic_prefix(),
            client_id: None,
            keep_alive_secs: default_keep_alive_secs(),
            max_inflight: default_max_inflight(),
            state_interval_ms: default_state_interval_ms(),
            max_reconnect_backoff_ms: default_max_backoff_ms(),
            max_packet_bytes: default_max_packet_bytes(),
            max_replay_msgs_per_sec: default_max_replay_msgs_per_sec(),
        });
        let (url, key) = match &overrides.uplink {
            Some(url) => (url.as_str(), "--uplink"),
            None => (file.broker.as_str(), "uplink.broker"),
        };
        let broker = match parse_broker_url(url) {
            // rustls checks the certificate against this name; one it cannot hold is a
            // config error, not a failure at every connection.
            Ok(b) if b.tls && rustls::pki_types::ServerName::try_from(b.host.as_str()).is_err() => {
                self.at(
                    root,
                    key,
                    format!(
                        "\"{}\" is not a DNS name or IP address a TLS certificate can be issued for",
                        b.host
                    ),
                );
                None
            }
            Ok(b) => Some(b),
            Err(message) => {
                self.at(root, key, message);
                None
            }
        };
        let mut ok = true;
        if file.topic_prefix.is_empty()
            || file
                .topic_prefix
                .split('/')
                .any(|level| level.is_empty() || check_topic_safe_id(level).is_err())
        {
            self.at(
                root,
                "uplink.topic_prefix",
                "must be one or more topic levels of letters, digits, '-', '_' or '.', joined by '/'",
            );
            ok = false;
        }
        if !(5..=3600).contains(&file.keep_alive_secs) {
            self.at(root, "uplink.keep_alive_secs", "must be between 5 and 3600");
            ok = false;
        }
        if !(1..=1000).contains(&file.max_inflight) {
            self.at(root, "uplink.max_inflight", "must be between 1 and 1000");
            ok = false;
        }
        if !(100..=3_600_000).contains(&file.state_interval_ms) {
            self.at(
                root,
                "uplink.state_interval_ms",
                "must be between 100 and 3600000",
            );
            ok = false;
        }
        if !(100..=3_600_000).contains(&file.max_reconnect_backoff_ms) {
            self.at(
                root,
                "uplink.max_reconnect_backoff_ms",
                "must be between 100 and 3600000",
            );
            ok = false;
        }
        if !(4096..=256 * 1024 * 1024).contains(&file.max_packet_bytes) {
            self.at(
                root,
                "uplink.max_packet_bytes",
                "must be between 4096 and 268435456",
            );
            ok = false;
        }
        if !(1..=100_000).contains(&file.max_replay_msgs_per_sec) {
            self.at(
                root,
                "uplink.max_replay_msgs_per_sec",
                "must be between 1 and 100000",
            );
            ok = false;
        }
        let (tls, tls_ok) = self.uplink_tls(root, &file, broker.as_ref(), base_dir);
        let (login, login_ok) = self.uplink_login(root, &file, base_dir);
        let (broker, hall, true, true, true) = (broker?, hall?, ok, tls_ok, login_ok) else {
            return None;
        };
        Some(Uplink {
            tls_files_unused: !broker.tls
                && (file.ca_file.is_some() || file.client_cert_file.is_some()),
            host: broker.host,
            port: broker.port,
            tls,
            login,
            client_id: file
                .client_id
                .clone()
                .unwrap_or_else(|| format!("hallgate-{}", hall.id)),
            topic_prefix: file.topic_prefix,
            keep_alive: Duration::from_secs(file.keep_alive_secs),
            max_inflight: file.max_inflight,
            state_interval: Duration::from_millis(file.state_interval_ms),
            max_reconnect_backoff: Duration::from_millis(file.max_reconnect_backoff_ms),
            max_packet_bytes: file.max_packet_bytes,
            max_replay_msgs_per_sec: file.max_replay_msgs_per_sec,
        })
    }

    /// `ca_file` and the client certificate: read and parsed now, so a missing or damaged
    /// file is a config problem with its key, not a failure at the first connection. The
    /// files are checked even when the broker URL is plain (they are used once it is not).
    /// Returns the TLS setup when the broker is `mqtts://`, and whether all was well.
    fn uplink_tls(
        &mut self,
        root: &DeTable<'_>,
        file: &UplinkConfig,
        broker: Option<&BrokerUrl>,
        base_dir: &Path,
    ) -> (Option<crate::uplink::tls::UplinkTls>, bool) {
        let wants_tls = broker.is_some_and(|b| b.tls);
        let client = match (&file.client_cert_file, &file.client_key_file) {
            (Some(cert), Some(key)) => Some((base_dir.join(cert), base_dir.join(key))),
            (None, None) => None,
            (Some(_), None) => {
                self.at(
                    root,
                    "uplink.client_key_file",
                    "`client_cert_file` needs `client_key_file` (the certificate's private key)",
                );
                return (None, false);
            }
            (None, Some(_)) => {
                self.at(
                    root,
                    "uplink.client_cert_file",
                    "`client_key_file` needs `client_cert_file` (the certificate it belongs to)",
                );
                return (None, false);
            }
        };
        let Some(ca) = &file.ca_file else {
            if wants_tls {
                self.at(
                    root,
                    "uplink.ca_file",
                    "mqtts:// needs `ca_file`, a PEM file of the CAs that sign the central \
                     broker's certificate: only those are trusted, since the box has no CA \
                     store to rely on",
                );
                return (None, false);
            }
            if client.is_some() {
                self.at(
                    root,
                    "uplink.ca_file",
                    "a client certificate is only used over TLS, which needs `ca_file`",
                );
                return (None, false);
            }
            return (None, true);
        };
        let ca = base_dir.join(ca);
        let client_paths = client.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
        match crate::uplink::tls::UplinkTls::load(&ca, client_paths) {
            Ok(tls) => (wants_tls.then_some(tls), true),
            Err(errors) => {
                for error in errors {
                    self.at(
                        root,
                        &format!("uplink.{}", error.file().key()),
                        error.to_string(),
                    );
                }
                (None, false)
            }
        }
    }

    /// `username` and `password_file`, both or neither.
    fn uplink_login(
        &mut self,
        root: &DeTable<'_>,
        file: &UplinkConfig,
        base_dir: &Path,
    ) -> (Option<(String, terminals::Secret)>, bool) {
        match (&file.username, &file.password_file) {
            (None, None) => (None, true),
            (Some(user), Some(password_file)) => {
                let mut problems = terminals::Problems::new();
                let secret = terminals::read_secret(
                    base_dir,
                    password_file,
                    "uplink.password_file",
                    &mut problems,
                );
                let mut ok = problems.is_empty();
                for (path, message) in problems {
                    self.at(root, &path, message);
                }
                if user.is_empty() {
                    self.at(root, "uplink.username", "must not be empty");
                    ok = false;
                }
                match (secret, ok) {
                    (Some(secret), true) => (Some((user.clone(), secret)), true),
                    _ => (None, false),
                }
            }
            (Some(_), None) => {
                self.at(
                    root,
                    "uplink.password_file",
                    "`username` needs `password_file`, a file holding the password (never inline)",
                );
                (None, false)
            }
            (None, Some(_)) => {
                self.at(root, "uplink.username", "`password_file` needs `username`");
                (None, false)
            }
        }
    }
}

/// Ids end up in MQTT topics and message ids: keep them to a safe alphabet.
fn check_topic_safe_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("must not be empty".into());
    }
    if id.len() > 64 {
        return Err(format!("\"{id}\" is longer than 64 characters"));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "\"{id}\" contains {bad:?}; ids may use letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

/// Whether a hall opening at `open` and closing at `close` has a sensible open time. Like the
/// day's label (`HallModel::day_of_close`), a closing time before noon is "after midnight":
/// the hall may then open the evening before (22:00..02:00) or the same morning. A closing
/// time from noon on must follow the opening on the same day. The same time for both is a
/// hall open round the clock (its open time is the whole day).
fn opening_fits(open: jiff::civil::Time, close: jiff::civil::Time) -> bool {
    close.hour() < 12 || open <= close
}

fn parse_hh_mm(text: &str) -> Option<jiff::civil::Time> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m) = (h.parse::<i8>().ok()?, m.parse::<i8>().ok()?);
    jiff::civil::Time::new(h, m, 0, 0).ok()
}

/// serde's messages quote the field they are about: "unknown field `foo`, expected …",
/// "missing field `bar`". Pull that name out so the key path can point at it.
fn field_in_message(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

/// Finds the span of key path `a.b[2].c` in the parsed document.
fn lookup_span(root: &DeTable<'_>, path: &str) -> Option<Range<usize>> {
    let mut table = root;
    let mut span = None;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let (key, index) = match part.split_once('[') {
            Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let (_, mut value) = table.iter().find(|(k, _)| k.get_ref() == key)?;
        if let Some(i) = index {
            value = value.get_ref().as_array()?.get(i)?;
        }
        span = Some(value.span());
        if parts.peek().is_some() {
            table = value.get_ref().as_table()?;
        }
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[hall]
id = "hall-1"
district = "xuhui"
closing_time = "21:30"

[uplink]
broker = "mqtt://127.0.0.1:1883"

[[rooms]]
id = "lobby"
capacity = 50

[[rooms]]
id = "reading"
capacity = 20

[[doors]]
id = "entrance"
from = "outside"
to = "lobby"

[[doors]]
id = "reading-door"
from = "lobby"
to = "reading"

[[counters]]
id = "c1"
door = "entrance"
profile = "generic-u16"
transport = "modbus_tcp"
address = "127.0.0.1:1502"

[[counters]]
id = "c2"
door = "reading-door"
profile = "generic-u32"
transport = "modbus_tcp"
address = "127.0.0.1:1503"
"#;

    fn problems(text: &str) -> Vec<Problem> {
        parse(text, Path::new("."), &Overrides::default()).expect_err("config should be rejected")
    }

    /// GOOD with `extra` appended, parsed against a directory holding `t.pass` (0600, long
    /// enough).
    fn parse_with_secret(extra: &str) -> Result<Config, Vec<Problem>> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("t.pass");
        std::fs::write(&file, "a-long-enough-secret\n").expect("writes");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        parse(
            &format!("{GOOD}\n{extra}"),
            dir.path(),
            &Overrides::default(),
        )
    }

    fn paths(result: Result<Config, Vec<Problem>>) -> Vec<String> {
        result
            .expect_err("config should be rejected")
            .into_iter()
            .map(|p| p.path)
            .collect()
    }

    #[test]
    fn http_terminals_and_a_counting_camera_validate_with_their_transports() {
        let cfg = parse_with_secret(
            r#"
[terminal_http]
listen = "127.0.0.1:8090"

[[terminals]]
id = "T1"
profile = "hikvision-isapi"
room = "lobby"
transport = "http_push"
password_file = "t.pass"

[[terminals]]
id = "ZK1"
profile = "zkteco-adms"
room = "reading"
transport = "http_push"
address = "127.0.0.1"

[[terminals]]
id = "T3"
profile = "hikvision-isapi"
room = "reading"
transport = "hikvision_pull"
address = "127.0.0.1:8081"
username = "hallgate"
password_file = "t.pass"
poll_interval_ms = 5000
"#,
        )
        .expect("valid");
        assert_eq!(cfg.terminal_http.map(|h| h.listen.port()), Some(8090));
        assert_eq!(
            cfg.terminals[1].transport,
            terminals::TerminalTransport::HttpPush {
                address: Some("127.0.0.1".parse().expect("ip"))
            }
        );
        assert_eq!(
            cfg.terminals[2].transport,
            terminals::TerminalTransport::HikvisionPull {
                address: "127.0.0.1:8081".into(),
                interval: Duration::from_secs(5)
            }
        );
    }

    #[test]
    fn http_transports_name_what_is_missing_by_key_path() {
        // A push terminal without [terminal_http], a ZKTeco one without the address it is
        // known by, a pull without the device's address, a poll interval on a push.
        let found = paths(parse_with_secret(
            r#"
[[terminals]]
id = "T1"
profile = "hikvision-isapi"
room = "lobby"
transport = "http_push"
password_file = "t.pass"
poll_interval_ms = 1000

[[terminals]]
id = "ZK1"
profile = "zkteco-adms"
room = "reading"
transport = "http_push"
password_file = "t.pass"

[[terminals]]
id = "D1"
profile = "dahua-access"
room = "reading"
transport = "dahua_stream"
username = "hallgate"
password_file = "t.pass"
"#,
        ));
        for expected in [
            "terminals[0].transport",
            "terminals[0].poll_interval_ms",
            "terminals[1].address",
            "terminals[2].address",
        ] {
            assert!(found.iter().any(|p| p == expected), "{expected}: {found:?}");
        }
    }

    #[test]
    fn a_counting_camera_needs_the_http_listener_and_a_way_to_know_it() {
        let counter = r#"
[[doors]]
id = "side"
from = "outside"
to = "reading"

[[counters]]
id = "cam"
door = "side"
profile = "hikvision-people-counting"
transport = "http_push"
"#;
        let found = paths(parse_with_secret(counter));
        assert!(
            found.iter().any(|p| p == "counters[2].transport"),
            "{found:?}"
        );
        assert!(found.iter().any(|p| p == "counters[2]"), "{found:?}");
        let cfg = parse_with_secret(&format!(
            "{counter}address = \"127.0.0.1\"\n\n[terminal_http]\nlisten = \"127.0.0.1:0\"\n"
        ))
        .expect("valid with an address and the listener");
        assert!(matches!(
            cfg.counters[2].transport,
            CounterTransport::HttpPush {
                address: Some(_),
                login: None
            }
        ));
    }

    #[test]
    fn a_good_config_validates_into_resolved_indices() {
        let cfg = parse(GOOD, Path::new("."), &Overrides::default()).expect("valid");
        assert_eq!(cfg.rooms.len(), 2);
        assert_eq!(cfg.doors[1].from, Zone::Room(0));
        assert_eq!(cfg.doors[1].to, Zone::Room(1));
        assert_eq!(cfg.counters[1].door, 1);
        assert_eq!(cfg.uplink.client_id, "hallgate-hall-1");
        assert_eq!(cfg.hall.closing_time, jiff::civil::time(21, 30, 0, 0));
    }

    #[test]
    fn overrides_replace_broker_and_data_dir() {
        let o = Overrides {
            uplink: Some("mqtt://10.1.2.3:1884".into()),
            data_dir: Some("/tmp/x".into()),
            ..Overrides::default()
        };
        let cfg = parse(GOOD, Path::new("."), &o).expect("valid");
        assert_eq!(
            (cfg.uplink.host.as_str(), cfg.uplink.port),
            ("10.1.2.3", 1884)
        );
        assert_eq!(cfg.storage.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_path_and_line() {
        let bad = GOOD
            .replace("capacity = 20", "capacity = 0")
            .replace("profile = \"generic-u32\"", "profile = \"nope\"")
            .replace("to = \"reading\"", "to = \"lobby\"")
            .replace("id = \"c2\"", "id = \"c2\"\ncolour = \"red\"");
        let p = problems(&bad);
        let paths: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
        assert!(paths.contains(&"rooms[1].capacity"), "{p:#?}");
        assert!(paths.contains(&"doors[1].to"), "{p:#?}");
        assert!(paths.contains(&"counters[1].colour"), "{p:#?}");
        assert!(p.iter().all(|p| p.position.is_some()), "{p:#?}");
        let cap = p
            .iter()
            .find(|p| p.path == "rooms[1].capacity")
            .expect("capacity");
        assert_eq!(cap.position.map(|(l, _)| l), Some(16));
    }

    #[test]
    fn unknown_rooms_profiles_and_duplicate_ids_are_named() {
        let bad = GOOD
            .replace("id = \"reading\"", "id = \"lobby\"")
            .replace("profile = \"generic-u32\"", "profile = \"acme\"");
        let text = problems(&bad)
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(text.contains("rooms[1].id"), "{text}");
        assert!(text.contains("duplicate id \"lobby\""), "{text}");
        assert!(text.contains("counters[1].profile"), "{text}");
        assert!(text.contains("unknown counter profile \"acme\""), "{text}");
    }

    const BUS: &str = r#"
[[buses]]
id = "rs485"
port = "/dev/serial/by-id/usb-adapter"
baud = 19200

[[counters]]
id = "c3"
door = "reading-door"
profile = "generic-u16"
transport = "modbus_rtu"
bus = "rs485"
unit_id = 3
"#;

    #[test]
    fn rtu_counters_hang_on_a_bus_with_modbus_silence_by_default() {
        // The second door's TCP counter moves to the bus.
        let text = GOOD.replace(
            "id = \"c2\"\ndoor = \"reading-door\"",
            "id = \"c2\"\ndoor = \"entrance-2\"",
        ) + "[[doors]]\nid = \"entrance-2\"\nfrom = \"outside\"\nto = \"reading\"\n"
            + BUS;
        let cfg = parse(&text, Path::new("."), &Overrides::default()).expect("valid");
        assert_eq!(cfg.buses.len(), 1);
        assert_eq!(cfg.buses[0].serial.baud, 19200);
        // 3.5 characters of 11 bits at 19200 baud is about 2 ms.
        assert_eq!(cfg.buses[0].inter_frame_delay.as_micros(), 2006);
        let c3 = cfg.counters.iter().find(|c| c.id == "c3").expect("c3");
        assert_eq!(
            c3.transport,
            CounterTransport::ModbusRtu { bus: 0, unit_id: 3 }
        );
    }

    #[test]
    fn rtu_mistakes_are_named() {
        let text = GOOD.to_string()
            + &BUS
                .replace(
                    "bus = \"rs485\"",
                    "bus = \"rs458\"\naddress = \"1.2.3.4:502\"",
                )
                .replace("door = \"reading-door\"", "door = \"entrance\"")
                .replace("unit_id = 3", "unit_id = 0");
        let text = problems(&text)
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(text.contains("counters[2].bus"), "{text}");
        assert!(text.contains("unknown bus \"rs458\""), "{text}");
        assert!(text.contains("counters[2].address"), "{text}");
        assert!(text.contains("already counted by counter \"c1\""), "{text}");
    }

    #[test]
    fn syntax_errors_give_line_and_column() {
        let p = problems("[hall]\nid = \"x\"\ndistrict = \n");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].position.map(|(l, _)| l), Some(3), "{p:?}");
    }

    fn url(tls: bool, host: &str, port: u16) -> Result<BrokerUrl, String> {
        Ok(BrokerUrl {
            tls,
            host: host.into(),
            port,
        })
    }

    #[test]
    fn broker_urls_parse() {
        assert_eq!(
            parse_broker_url("mqtt://broker.city:8883"),
            url(false, "broker.city", 8883)
        );
        assert_eq!(parse_broker_url("mqtt://h"), url(false, "h", 1883));
        assert_eq!(parse_broker_url("tcp://h:1884/"), url(false, "h", 1884));
        assert!(parse_broker_url("http://h:1").is_err());
        assert!(parse_broker_url("mqtt://h:99999").is_err());
        assert!(parse_broker_url("mqtt://user:pw@h:1883").is_err());
    }

    #[test]
    fn mqtts_urls_select_tls_with_port_8883_by_default() {
        assert_eq!(
            parse_broker_url("mqtts://overview.city.example"),
            url(true, "overview.city.example", 8883)
        );
        assert_eq!(
            parse_broker_url("mqtts://overview.city.example:18883"),
            url(true, "overview.city.example", 18883)
        );
        assert_eq!(parse_broker_url("mqtts://[::1]"), url(true, "::1", 8883));
        assert_eq!(
            parse_broker_url("mqtts://10.0.0.5:8884"),
            url(true, "10.0.0.5", 8884)
        );
        assert!(parse_broker_url("mqtts://").is_err());
        assert!(parse_broker_url("mqtts://:8883").is_err());
        assert!(parse_broker_url("ssl://h:8883").is_err());
    }

    #[test]
    fn an_mqtts_host_no_certificate_can_name_is_a_problem_on_the_broker_key() {
        let o = Overrides {
            uplink: Some("mqtts://bad_host!:8883".into()),
            ..Overrides::default()
        };
        let p = parse(GOOD, Path::new("."), &o).expect_err("refused");
        assert!(
            p.iter()
                .any(|p| p.path == "--uplink" && p.message.contains("TLS certificate")),
            "{p:#?}"
        );
    }

    #[test]
    fn mqtts_without_a_ca_file_is_a_problem_on_ca_file() {
        let text = GOOD.replace("mqtt://127.0.0.1:1883", "mqtts://broker.city");
        let p = problems(&text);
        assert!(
            p.iter()
                .any(|p| p.path == "uplink.ca_file" && p.message.contains("needs `ca_file`")),
            "{p:#?}"
        );
    }

    #[test]
    fn client_certificate_and_key_go_together() {
        let text = GOOD.replace(
            "broker = \"mqtt://127.0.0.1:1883\"",
            "broker = \"mqtts://broker.city\"\nca_file = \"ca.pem\"\nclient_cert_file = \"c.pem\"",
        );
        let p = problems(&text);
        assert!(
            p.iter().any(|p| p.path == "uplink.client_key_file"),
            "{p:#?}"
        );
    }

    #[test]
    fn an_inline_uplink_password_is_an_unknown_key_and_is_not_echoed() {
        let text = GOOD.replace(
            "broker = \"mqtt://127.0.0.1:1883\"",
            "broker = \"mqtt://127.0.0.1:1883\"\nusername = \"hall\"\npassword = \"hunter2-inline\"",
        );
        let p = problems(&text);
        assert!(p.iter().any(|p| p.path == "uplink.password"), "{p:#?}");
        assert!(
            p.iter().all(|p| !p.to_string().contains("hunter2-inline")),
            "{p:#?}"
        );
    }

    #[test]
    fn the_tls_keys_are_used_over_mqtts_and_checked_but_unused_over_plain_mqtt() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("ca.pem"), crate::uplink::tls::TEST_CA_PEM)
            .expect("CA file");
        let text = GOOD.replace(
            "broker = \"mqtt://127.0.0.1:1883\"",
            "broker = \"mqtts://broker.city\"\nca_file = \"ca.pem\"",
        );
        let cfg = parse(&text, dir.path(), &Overrides::default()).expect("valid");
        assert_eq!(cfg.uplink.port, 8883);
        assert_eq!(cfg.uplink.tls.as_ref().map(|t| t.trusted_cas), Some(1));
        assert!(!cfg.uplink.tls_files_unused);

        let plain = Overrides {
            uplink: Some("mqtt://127.0.0.1:1883".into()),
            ..Overrides::default()
        };
        let cfg = parse(&text, dir.path(), &plain).expect("valid");
        assert!(cfg.uplink.tls.is_none());
        assert!(cfg.uplink.tls_files_unused);

        // Checked even when unused: a damaged CA file is a problem either way.
        std::fs::write(dir.path().join("ca.pem"), "garbage").expect("CA file");
        let p = parse(&text, dir.path(), &plain).expect_err("a damaged CA file is refused");
        assert!(p.iter().any(|p| p.path == "uplink.ca_file"), "{p:#?}");
    }

    #[test]
    fn a_username_needs_a_password_file() {
        let text = GOOD.replace(
            "broker = \"mqtt://127.0.0.1:1883\"",
            "broker = \"mqtt://127.0.0.1:1883\"\nusername = \"hall\"",
        );
        let p = problems(&text);
        assert!(p.iter().any(|p| p.path == "uplink.password_file"), "{p:#?}");
    }
}
