//! The local status views: a plain-language page for facilities staff, a JSON API,
//! Prometheus `/metrics` and `/healthz`, over HTTP on 127.0.0.1 by default; `hallgate status`
//! reads the API.
//!
//! ```text
//! core tick ──Arc<Snapshot> (watch, once a tick)──► Observer ──► StateView ──► page / API / metrics / text
//! ```
//!
//! Presentation only. The core only ever replaces the latest [`Snapshot`] on a watch
//! channel, which never blocks, so a slow or hostile client cannot slow counting down. The
//! snapshot already holds the judged device conditions (`crate::health`) and today's alerts
//! (`crate::alerts`), so the page, the API and the centre's `alerts` topic are told the same.
//! Everything here is built from that snapshot and the config: [`view`] turns it into the
//! [`view::StateView`] every output shares; [`page`], [`metrics`] and [`text`] render it; all
//! of these are pure. [`server`] is the thin HTTP shell, [`client`] the CLI's side.

pub mod client;
pub mod metrics;
pub mod page;
pub mod server;
pub mod text;
pub mod view;
pub mod words;

use std::sync::atomic::Ordering;
use std::time::Instant;

use jiff::Timestamp;

use crate::devices::StatsSnapshot;
use crate::devices::terminals::TerminalStatsSnapshot;
use crate::outbox::OutboxSnapshot;
use crate::uplink::UplinkStatus;

pub use server::{StatusError, StatusServer};

use crate::alerts::AlertView;
use crate::health::{CounterHealth, DeviceCondition};

/// What the core loop hands the status views once a tick: figures only, copied out, so the
/// views never touch the engine.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When the core loop took it, for `/healthz`.
    pub taken: Instant,
    pub at: Timestamp,
    /// The engine's day (it closes at the hall's closing time).
    pub day: jiff::civil::Date,
    /// Indexed like `Config::rooms`.
    pub rooms: Vec<RoomFigures>,
    pub visitors_today: u64,
    pub clock_synced: bool,
    /// Indexed like `Config::counters`.
    pub counters: Vec<CounterHealth>,
    /// Every device's condition, judged at `at`: counters, buses, terminals.
    pub devices: Vec<DeviceCondition>,
    /// Indexed like `Config::buses`.
    pub buses: Vec<StatsSnapshot>,
    /// Indexed like `Config::terminals`.
    pub terminals: Vec<TerminalStatsSnapshot>,
    pub terminals_unattributed: TerminalStatsSnapshot,
    /// The part of the terminal intake that stopped (`"listener"`, `"ingest"`); `None` while
    /// terminals can deliver.
    pub terminal_intake_stopped: Option<&'static str>,
    /// The terminals' MQTT endpoint's refusals since start.
    pub terminal_endpoint: crate::devices::terminals::EndpointCounts,
    pub outbox: OutboxSnapshot,
    pub uplink: LinkSnapshot,
    /// Bookings from the centre: accepted, rejected by reason, stored.
    pub bookings: crate::bookings::BookingCounts,
    /// Today's alerts, oldest first, from the core's alert rules.
    pub alerts: Vec<AlertView>,
    pub alerts_today: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoomFigures {
    pub occupancy: u64,
    pub entries: u64,
    pub exits: u64,
    /// `occupancy` corrected for the counting lines' learned misses.
    pub occupancy_corrected: u64,
}

/// A copy of [`UplinkStatus`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkSnapshot {
    pub connected: bool,
    pub delivered: u64,
    pub dropped: u64,
    pub connect_attempts: u64,
    /// Failed TLS handshakes (untrusted broker certificate, refused client certificate).
    pub tls_failures: u64,
    /// Connections the broker refused for the login (bad username or password).
    pub login_refusals: u64,
    /// Unix ms of the last PUBACK; 0 before the first.
    pub last_ack_ms: u64,
}

impl LinkSnapshot {
    /// Reads the uplink's counters.
    pub fn of(link: &UplinkStatus) -> Self {
        LinkSnapshot {
            connected: link.connected.load(Ordering::Relaxed),
            delivered: link.delivered.load(Ordering::Relaxed),
            dropped: link.dropped.load(Ordering::Relaxed),
            connect_attempts: link.connect_attempts.load(Ordering::Relaxed),
            tls_failures: link.tls_failures.load(Ordering::Relaxed),
            login_refusals: link.login_refusals.load(Ordering::Relaxed),
            last_ack_ms: link.last_ack_ms.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
impl Snapshot {
    /// A quiet hall of `rooms` empty rooms at `at`: nothing counted, no device, no backlog.
    pub(crate) fn quiet(at: Timestamp, rooms: usize) -> Self {
        Snapshot {
            taken: Instant::now(),
            at,
            day: jiff::civil::date(2026, 12, 1),
            rooms: vec![RoomFigures::default(); rooms],
            visitors_today: 0,
            clock_synced: true,
            counters: Vec::new(),
            devices: Vec::new(),
            buses: Vec::new(),
            terminals: Vec::new(),
            terminals_unattributed: TerminalStatsSnapshot::default(),
            terminal_intake_stopped: None,
            terminal_endpoint: Default::default(),
            outbox: OutboxSnapshot::default(),
            uplink: LinkSnapshot::default(),
            bookings: Default::default(),
            alerts: Vec::new(),
            alerts_today: 0,
        }
    }
}
