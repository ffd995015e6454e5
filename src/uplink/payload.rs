//! Uplink payloads, contract v1: what the centre receives, and nothing more.
//!
//! Every payload has `schema_version` and a `msg_id` that is fixed when the message is
//! written to the outbox, so a re-send is byte-for-byte the same message and the centre can
//! drop duplicates by id. The fields here are the allowlist: aggregates and device health,
//! never a face, a name or an identity. `docs/uplink.md` documents each with an example.

use jiff::{Timestamp, Unit};
use serde::Serialize;

use crate::config::Config;
use crate::devices::{DeviceStats, StatsSnapshot};
use crate::occupancy::{EngineState, MinuteAggregate};
use crate::outbox::OutMessage;

pub const SCHEMA_VERSION: u32 = 1;

/// Topic levels below the hall's base topic.
pub const TOPIC_STATUS: &str = "status";
pub const TOPIC_STATE: &str = "state";
pub const TOPIC_AGG_1M: &str = "agg/1m";

/// `{prefix}/{district}/{hall}`.
pub fn base_topic(config: &Config) -> String {
    format!(
        "{}/{}/{}",
        config.uplink.topic_prefix, config.hall.district, config.hall.id
    )
}

/// RFC 3339 in UTC, to the millisecond.
pub fn rfc3339(t: Timestamp) -> String {
    t.round(Unit::Millisecond).unwrap_or(t).to_string()
}

/// What the gateway knows of one device's health.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceHealth {
    pub id: String,
    pub kind: &'static str,
    /// `None` until the first attempt to reach it.
    pub online: Option<bool>,
    pub since: Option<Timestamp>,
    pub reason: Option<String>,
}

#[derive(Debug, Serialize)]
struct StatePayload<'a> {
    schema_version: u32,
    msg_id: String,
    kind: &'static str,
    hall_id: &'a str,
    district: &'a str,
    ts: String,
    day: String,
    rooms: Vec<RoomState<'a>>,
    hall: HallState,
    devices: Vec<DeviceState<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    buses: Vec<BusState<'a>>,
}

#[derive(Debug, Serialize)]
struct BusState<'a> {
    id: &'a str,
    stats: StatsSnapshot,
}

#[derive(Debug, Serialize)]
struct RoomState<'a> {
    id: &'a str,
    occupancy: u64,
    capacity: u32,
    utilisation: f64,
    entries_today: u64,
    exits_today: u64,
    /// People clamped away today because exits outran entries (missed entries).
    drift_today: u64,
}

#[derive(Debug, Serialize)]
struct HallState {
    occupancy: u64,
    capacity: u64,
    visitors_today: u64,
}

#[derive(Debug, Serialize)]
struct DeviceState<'a> {
    id: &'a str,
    kind: &'a str,
    online: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    stats: StatsSnapshot,
}

/// The retained `state` message: live occupancy of every room and the health of every device.
pub fn state_message(
    config: &Config,
    engine: &EngineState,
    devices: &[DeviceHealth],
    stats: &DeviceStats,
    now: Timestamp,
) -> OutMessage {
    let rooms: Vec<RoomState<'_>> = engine
        .rooms
        .iter()
        .zip(&config.rooms)
        .map(|(r, c)| RoomState {
            id: &c.id,
            occupancy: r.occupancy(),
            capacity: c.capacity,
            utilisation: round3(r.occupancy() as f64 / f64::from(c.capacity)),
            entries_today: r.entries,
            exits_today: r.exits,
            drift_today: r.clamped,
        })
        .collect();
    let payload = StatePayload {
        schema_version: SCHEMA_VERSION,
        msg_id: format!("{}:state:{}", config.hall.id, now.as_millisecond()),
        kind: "state",
        hall_id: &config.hall.id,
        district: &config.hall.district,
        ts: rfc3339(now),
        day: engine.day.to_string(),
        hall: HallState {
            occupancy: rooms.iter().map(|r| r.occupancy).sum(),
            capacity: config.rooms.iter().map(|r| u64::from(r.capacity)).sum(),
            visitors_today: engine.visitors,
        },
        rooms,
        devices: devices
            .iter()
            .zip(&stats.counters)
            .map(|(d, s)| DeviceState {
                id: &d.id,
                kind: d.kind,
                online: d.online == Some(true),
                since: d.since.map(rfc3339),
                reason: d.reason.as_deref(),
                stats: s.snapshot(),
            })
            .collect(),
        buses: config
            .buses
            .iter()
            .zip(&stats.buses)
            .map(|(b, s)| BusState {
                id: &b.id,
                stats: s.snapshot(),
            })
            .collect(),
    };
    OutMessage {
        kind: "state".into(),
        topic: TOPIC_STATE.into(),
        retain: true,
        msg_id: payload.msg_id.clone(),
        payload: to_json(&payload),
    }
}

#[derive(Debug, Serialize)]
struct AggPayload<'a> {
    schema_version: u32,
    msg_id: String,
    kind: &'static str,
    hall_id: &'a str,
    district: &'a str,
    bin_start: String,
    bin_end: String,
    rooms: Vec<AggRoom<'a>>,
}

#[derive(Debug, Serialize)]
struct AggRoom<'a> {
    id: &'a str,
    entries: u64,
    exits: u64,
    occupancy_mean: f64,
    occupancy_peak: u64,
}

/// One closed minute. The id is built from hall, kind, bin and revision only, so the same bin
/// always has the same id; a later correction would be revision 1.
pub fn minute_message(config: &Config, agg: &MinuteAggregate) -> OutMessage {
    let msg_id = format!(
        "{}:agg_1m:{}:r0",
        config.hall.id,
        agg.start.strftime("%Y%m%dT%H%MZ")
    );
    let payload = AggPayload {
        schema_version: SCHEMA_VERSION,
        msg_id: msg_id.clone(),
        kind: "agg_1m",
        hall_id: &config.hall.id,
        district: &config.hall.district,
        bin_start: rfc3339(agg.start),
        bin_end: rfc3339(agg.end),
        rooms: agg
            .rooms
            .iter()
            .map(|r| AggRoom {
                id: &r.id,
                entries: r.entries,
                exits: r.exits,
                occupancy_mean: round3(r.occupancy_mean),
                occupancy_peak: r.occupancy_peak,
            })
            .collect(),
    };
    OutMessage {
        kind: "agg_1m".into(),
        topic: TOPIC_AGG_1M.into(),
        retain: false,
        msg_id,
        payload: to_json(&payload),
    }
}

#[derive(Debug, Serialize)]
struct StatusPayload<'a> {
    schema_version: u32,
    msg_id: String,
    kind: &'static str,
    hall_id: &'a str,
    status: &'static str,
    ts: String,
    /// When this gateway process started; tells a restart from a reconnect.
    started: String,
    version: &'static str,
}

/// The retained `status` payload: `online` on connect, `offline` as last will and at shutdown.
pub fn status_payload(
    config: &Config,
    online: bool,
    started: Timestamp,
    now: Timestamp,
) -> Vec<u8> {
    let status = if online { "online" } else { "offline" };
    to_json(&StatusPayload {
        schema_version: SCHEMA_VERSION,
        msg_id: format!(
            "{}:status:{}:{}:{status}",
            config.hall.id,
            started.as_millisecond(),
            now.as_millisecond()
        ),
        kind: "status",
        hall_id: &config.hall.id,
        status,
        ts: rfc3339(now),
        started: rfc3339(started),
        version: env!("CARGO_PKG_VERSION"),
    })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising plain structs of strings and numbers cannot fail.
    serde_json::to_vec(value).expect("uplink payloads are plain data and always serialise")
}
