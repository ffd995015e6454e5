//! The hall config file as written: the serde mirror of its TOML, section by section.
//!
//! These structs say which keys exist, their types and their defaults (`default_*`), and
//! nothing more: `deny_unknown_fields` rejects a misspelt key, and what the values mean is
//! checked afterwards, by the validation in `validate.rs`, `uplink.rs` and `counters.rs`, into
//! the trusted model (`model.rs`). [`ConfigFile`] holds all the sections of one file, each
//! read on its own from the [`Document`] so that one unreadable section does not hide the
//! problems of the next.

use std::path::PathBuf;

use serde::Deserialize;

use super::document::Document;
use super::problems::Problems;
use super::{situation, status, terminal_http, terminals};

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
    /// Most people this counter's door passes per second, each way; unset, the profile's
    /// (see `max_crossings_per_second` in the profile files).
    pub max_crossings_per_second: Option<u32>,
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
pub(super) fn default_baud() -> u32 {
    9600
}
pub(super) fn default_data_bits() -> u8 {
    8
}
pub(super) fn default_stop_bits() -> u8 {
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

impl UplinkConfig {
    /// What an absent `[uplink]` stands for: every default, and no broker (the command line's
    /// `--uplink` names it).
    pub(super) fn absent() -> Self {
        UplinkConfig {
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
        }
    }
}

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

/// One config file as written, every section read on its own. A section that is absent or
/// could not be read is `None` (or its defaults), an unreadable entry of an array `None` in
/// its place; their problems are already reported.
pub(super) struct ConfigFile {
    pub hall: Option<HallSectionConfig>,
    pub uplink: Option<UplinkConfig>,
    pub storage: StorageConfig,
    pub profiles: ProfilesConfig,
    pub rooms: Vec<Option<RoomConfig>>,
    pub doors: Vec<Option<DoorConfig>>,
    pub buses: Vec<Option<BusConfig>>,
    pub counters: Vec<Option<CounterConfig>>,
    pub terminal_broker: Option<terminals::TerminalBrokerConfig>,
    pub terminal_http: Option<terminal_http::TerminalHttpConfig>,
    pub terminals: Vec<Option<terminals::TerminalConfig>>,
    pub vision: Option<terminals::VisionConfig>,
    pub cameras: Vec<Option<terminals::CameraConfig>>,
    pub status: status::StatusConfig,
    pub situation: situation::SituationConfig,
}

impl ConfigFile {
    /// Reads every section of `doc`, reporting unknown sections first, then each section's
    /// problems in the order of [`SECTIONS`]. `[uplink]` may be left out when the command
    /// line names the broker (`uplink_required` false).
    pub(super) fn read(doc: &Document<'_>, uplink_required: bool, problems: &mut Problems) -> Self {
        doc.unknown_sections(SECTIONS, problems);
        ConfigFile {
            hall: doc.section("hall", true, problems),
            uplink: doc.section("uplink", uplink_required, problems),
            storage: doc.section("storage", false, problems).unwrap_or_default(),
            profiles: doc.section("profiles", false, problems).unwrap_or_default(),
            rooms: doc.array("rooms", problems),
            doors: doc.array("doors", problems),
            buses: doc.array("buses", problems),
            counters: doc.array("counters", problems),
            terminal_broker: doc.section("terminal_broker", false, problems),
            terminal_http: doc.section("terminal_http", false, problems),
            terminals: doc.array("terminals", problems),
            vision: doc.section("vision", false, problems),
            cameras: doc.array("cameras", problems),
            status: doc.section("status", false, problems).unwrap_or_default(),
            situation: doc
                .section("situation", false, problems)
                .unwrap_or_default(),
        }
    }
}
