//! The local status views: a plain-language page for facilities staff, a JSON API,
//! Prometheus `/metrics` and `/healthz`, over HTTP on 127.0.0.1 by default; `hallgate status`
//! reads the API.
//!
//! ```text
//! core loop ──Arc<Snapshot> (watch, once a tick)──► observer ──► StateView ──► page / API / metrics
//!  (alerts: diffs of successive views, also sent to the centre)
//! ```
//!
//! The core loop only ever replaces the latest [`Snapshot`] on a watch channel, which never
//! blocks, so a slow or hostile client cannot slow counting down. Everything here is built
//! from that snapshot and the config: [`view`] turns it into the [`view::StateView`] every
//! output shares (with the device conditions and the stale rule); [`alerts`] diffs successive
//! views into today's alerts — in the core loop, which puts them into the snapshot, so the
//! page and the centre's `alerts` topic are told the same; [`page`], [`metrics`] and [`text`] render it; all of these are
//! pure. [`server`] is the thin HTTP shell, [`client`] the CLI's side.

pub mod alerts;
pub mod client;
pub mod metrics;
pub mod page;
pub mod server;
pub mod text;
pub mod view;

use std::sync::atomic::Ordering;
use std::time::Instant;

use jiff::Timestamp;

use crate::devices::terminals::{TerminalStatsSnapshot, TerminalsStats};
use crate::devices::{DeviceStats, StatsSnapshot};
use crate::occupancy::EngineState;
use crate::outbox::OutboxSnapshot;
use crate::uplink::UplinkStatus;
use crate::uplink::payload::DeviceHealth;

pub use alerts::FeverTally;
pub use server::{StatusError, StatusServer};

use view::AlertView;

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
    /// Fever passages per terminal since start (config order): the fever alert's input.
    pub fevers: Vec<FeverTally>,
    /// Today's alerts, oldest first, filled in by the core loop's [`alerts::AlertWatch`].
    pub alerts: Vec<AlertView>,
    pub alerts_today: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoomFigures {
    pub occupancy: u64,
    pub entries: u64,
    pub exits: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterHealth {
    pub health: DeviceHealth,
    pub stats: StatsSnapshot,
    /// When it last counted someone crossing (since the gateway started).
    pub last_counted: Option<Timestamp>,
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

/// Where the core loop's figures are, for [`Snapshot::capture`].
#[derive(Debug)]
pub struct Sources<'a> {
    pub engine: &'a EngineState,
    pub devices: &'a [DeviceHealth],
    /// Indexed like `devices`.
    pub last_counted: &'a [Option<Timestamp>],
    pub stats: &'a DeviceStats,
    pub terminals: &'a TerminalsStats,
    pub outbox: OutboxSnapshot,
    pub link: &'a UplinkStatus,
    pub clock_synced: bool,
    pub bookings: &'a crate::bookings::BookingCounts,
    /// Indexed like `Config::terminals`.
    pub fevers: &'a [FeverTally],
}

impl Snapshot {
    /// Copies the figures out of `sources`, as of `at`.
    pub fn capture(sources: &Sources<'_>, at: Timestamp) -> Self {
        let link = sources.link;
        Snapshot {
            taken: Instant::now(),
            at,
            day: sources.engine.day,
            rooms: sources
                .engine
                .rooms
                .iter()
                .map(|r| RoomFigures {
                    occupancy: r.occupancy(),
                    entries: r.entries,
                    exits: r.exits,
                })
                .collect(),
            visitors_today: sources.engine.visitors,
            clock_synced: sources.clock_synced,
            counters: sources
                .devices
                .iter()
                .zip(&sources.stats.counters)
                .enumerate()
                .map(|(i, (health, stats))| CounterHealth {
                    health: health.clone(),
                    stats: stats.snapshot(),
                    last_counted: sources.last_counted.get(i).copied().flatten(),
                })
                .collect(),
            buses: sources.stats.buses.iter().map(|s| s.snapshot()).collect(),
            terminals: sources
                .terminals
                .terminals
                .iter()
                .map(|t| t.snapshot())
                .collect(),
            terminals_unattributed: sources.terminals.unattributed.snapshot(),
            terminal_intake_stopped: sources.terminals.intake.stopped(),
            terminal_endpoint: sources.terminals.endpoint.snapshot(),
            outbox: sources.outbox.clone(),
            uplink: LinkSnapshot {
                connected: link.connected.load(Ordering::Relaxed),
                delivered: link.delivered.load(Ordering::Relaxed),
                dropped: link.dropped.load(Ordering::Relaxed),
                connect_attempts: link.connect_attempts.load(Ordering::Relaxed),
                tls_failures: link.tls_failures.load(Ordering::Relaxed),
                login_refusals: link.login_refusals.load(Ordering::Relaxed),
                last_ack_ms: link.last_ack_ms.load(Ordering::Relaxed),
            },
            bookings: sources.bookings.clone(),
            fevers: sources.fevers.to_vec(),
            alerts: Vec::new(),
            alerts_today: 0,
        }
    }
}
