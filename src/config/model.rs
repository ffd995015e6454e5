//! The validated hall config the rest of the gateway trusts.
//!
//! Everything here has passed validation: ids are resolved to indices (a door's zones, a
//! counter's door and bus), addresses are parsed, durations are [`Duration`]s, the time zone
//! is loaded and password files are read. Nothing downstream checks a config value again.
//! The file as written is `file.rs`; `parse` turns one into the other.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::file::ParityConfig;
use super::profile::CounterProfile;
use super::secrets::Secret;
use super::{situation, status, terminal_http, terminals};
use crate::devices::stream::SerialProfile;

/// The zone every hall has: the street. Doors from it are the hall's entrances.
pub const OUTSIDE: &str = "outside";

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
    pub login: Option<(String, Secret)>,
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
    pub(super) fn parse(text: &str) -> Option<Self> {
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
        login: Option<(String, Secret)>,
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
