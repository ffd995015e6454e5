//! Uplink payloads, contract v1: what the centre receives, and nothing more.
//!
//! Every payload has `schema_version` and a `msg_id` that is fixed when the message is
//! written to the outbox, so a re-send is byte-for-byte the same message and the centre can
//! drop duplicates by id. The fields here are the allowlist: aggregates and device health,
//! never a face, a name or an identity. `docs/uplink.md` documents each with an example.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::devices::terminals::TerminalStatsSnapshot;
use crate::devices::{DeviceStats, StatsSnapshot};
use crate::occupancy::{EngineState, MinuteAggregate, Passages};
use crate::outbox::{Coarse, OutMessage, OutboxSnapshot, Priority};

pub const SCHEMA_VERSION: u32 = 1;

/// Topic levels below the hall's base topic.
pub const TOPIC_STATUS: &str = "status";
pub const TOPIC_STATE: &str = "state";
pub const TOPIC_AGG_1M: &str = "agg/1m";
pub const TOPIC_AGG_15M: &str = "agg/15m";
pub const TOPIC_AGG_1H: &str = "agg/1h";
pub const TOPIC_ALERTS: &str = "alerts";

/// Message kinds of the aggregates.
pub const KIND_AGG_1M: &str = "agg_1m";
pub const KIND_AGG_15M: &str = "agg_15m";
pub const KIND_AGG_1H: &str = "agg_1h";
pub const KIND_ALERT: &str = "alert";

/// `{prefix}/{district}/{hall}`.
pub fn base_topic(config: &Config) -> String {
    format!(
        "{}/{}/{}",
        config.uplink.topic_prefix, config.hall.district, config.hall.id
    )
}

pub use crate::format::rfc3339;

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
    clock_synced: bool,
    rooms: Vec<RoomState<'a>>,
    hall: HallState,
    outbox: &'a OutboxSnapshot,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    terminals: Vec<TerminalState<'a>>,
    #[serde(skip_serializing_if = "is_quiet")]
    terminals_unattributed: &'a TerminalStatsSnapshot,
    devices: Vec<DeviceState<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    buses: Vec<BusState<'a>>,
}

/// A terminal's health: counts only (no identities, no images).
#[derive(Debug, Serialize)]
struct TerminalState<'a> {
    id: &'a str,
    room: &'a str,
    stats: &'a TerminalStatsSnapshot,
}

fn is_quiet(s: &&TerminalStatsSnapshot) -> bool {
    **s == TerminalStatsSnapshot::default()
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
    /// People added (negative: removed) today by room-camera head counts.
    #[serde(skip_serializing_if = "is_zero_i64")]
    camera_correction_today: i64,
    /// The room's terminals today: counts only.
    #[serde(skip_serializing_if = "Passages::is_empty")]
    passages_today: Passages,
}

#[derive(Debug, Serialize)]
struct HallState {
    occupancy: u64,
    capacity: u64,
    visitors_today: u64,
    /// All terminals today, and the distinct members among them.
    #[serde(skip_serializing_if = "Passages::is_empty")]
    passages_today: Passages,
    #[serde(skip_serializing_if = "is_zero")]
    unique_members_today: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
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

/// The gateway's own health, as the state reports it.
#[derive(Debug, Clone, Default)]
pub struct GatewayHealth {
    pub clock_synced: bool,
    pub outbox: OutboxSnapshot,
    /// Per configured terminal, in config order.
    pub terminals: Vec<TerminalStatsSnapshot>,
    /// Messages no configured terminal can be named for.
    pub terminals_unattributed: TerminalStatsSnapshot,
}

/// The retained `state` message: live occupancy of every room and the health of every device.
pub fn state_message(
    config: &Config,
    engine: &EngineState,
    devices: &[DeviceHealth],
    stats: &DeviceStats,
    gateway: &GatewayHealth,
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
            passages_today: r.passages,
            camera_correction_today: r.camera_correction,
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
        clock_synced: gateway.clock_synced,
        outbox: &gateway.outbox,
        terminals: config
            .terminals
            .iter()
            .zip(&gateway.terminals)
            .map(|(t, stats)| TerminalState {
                id: t.id.as_str(),
                room: &config.rooms[t.room].id,
                stats,
            })
            .collect(),
        terminals_unattributed: &gateway.terminals_unattributed,
        hall: HallState {
            occupancy: rooms.iter().map(|r| r.occupancy).sum(),
            capacity: config.rooms.iter().map(|r| u64::from(r.capacity)).sum(),
            visitors_today: engine.visitors,
            passages_today: engine.rooms.iter().fold(Passages::default(), |mut all, r| {
                all.merge(&r.passages);
                all
            }),
            unique_members_today: engine.members_today.len() as u64,
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
        priority: Priority::Normal,
        bin_start: None,
    }
}

/// An aggregate bin: a minute (`agg_1m`) or, after a roll-up, 15 minutes (`agg_15m`) or an
/// hour (`agg_1h`). Owned and deserialisable, because roll-ups read stored bins back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggPayload {
    pub schema_version: u32,
    pub msg_id: String,
    pub kind: String,
    pub hall_id: String,
    pub district: String,
    pub bin_start: String,
    pub bin_end: String,
    /// Minutes of data in the bin: absent (1) for a minute bin; for a roll-up, the minutes
    /// that were not delivered on their own (a roll-up never repeats a delivered minute).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub minutes: u32,
    /// For a roll-up: which minutes of the bin it holds, bit *i* for minute *i* from
    /// `bin_start`, as hex. A minute delivered on its own before (an at-least-once re-send
    /// can be merged later) is in the mask too, so the centre can subtract what it already
    /// has and count nothing twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minute_mask: Option<String>,
    /// Whether the gateway's clock was synchronised when the bin closed.
    pub clock_synced: bool,
    pub rooms: Vec<AggRoom>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggRoom {
    pub id: String,
    pub entries: u64,
    pub exits: u64,
    pub occupancy_mean: f64,
    pub occupancy_peak: u64,
    /// Terminal figures (counts only); absent when the room's terminals saw no one.
    #[serde(default, flatten, skip_serializing_if = "Passages::is_empty")]
    pub passages: Passages,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

/// The id of an aggregate: hall, kind, bin and revision only, so the same bin always has the
/// same id; a later correction would be revision 1.
fn agg_msg_id(hall: &str, kind: &str, start: Timestamp) -> String {
    format!("{hall}:{kind}:{}:r0", start.strftime("%Y%m%dT%H%MZ"))
}

/// One closed minute.
pub fn minute_message(config: &Config, agg: &MinuteAggregate, clock_synced: bool) -> OutMessage {
    let msg_id = agg_msg_id(&config.hall.id, KIND_AGG_1M, agg.start);
    let payload = AggPayload {
        schema_version: SCHEMA_VERSION,
        msg_id: msg_id.clone(),
        kind: KIND_AGG_1M.into(),
        hall_id: config.hall.id.clone(),
        district: config.hall.district.clone(),
        bin_start: rfc3339(agg.start),
        bin_end: rfc3339(agg.end),
        minutes: 1,
        minute_mask: None,
        clock_synced,
        rooms: agg
            .rooms
            .iter()
            .map(|r| AggRoom {
                id: r.id.clone(),
                entries: r.entries,
                exits: r.exits,
                occupancy_mean: round3(r.occupancy_mean),
                occupancy_peak: r.occupancy_peak,
                passages: r.passages,
            })
            .collect(),
    };
    OutMessage {
        kind: KIND_AGG_1M.into(),
        topic: TOPIC_AGG_1M.into(),
        retain: false,
        msg_id,
        payload: to_json(&payload),
        priority: Priority::Normal,
        bin_start: Some(agg.start.as_second()),
    }
}

/// Merges stored aggregate bins that fall in one coarse bin into one message of that grain
/// (the outbox's [`crate::outbox::RollUp`]): entries and exits add up, means are weighted by
/// the minutes behind them, peaks take the maximum, and the bin is clock-synced only if all
/// its parts were. `None` if a part is not an aggregate of this contract.
pub fn roll_up(parts: &[OutMessage], grain: Coarse, bin_start: i64) -> Option<OutMessage> {
    let docs: Vec<AggPayload> = parts
        .iter()
        .map(|m| serde_json::from_slice::<AggPayload>(&m.payload))
        .collect::<Result<_, _>>()
        .ok()?;
    let first = docs.first()?;
    let (kind, topic) = match grain {
        Coarse::Quarter => (KIND_AGG_15M, TOPIC_AGG_15M),
        Coarse::Hour => (KIND_AGG_1H, TOPIC_AGG_1H),
    };
    let start = Timestamp::from_second(bin_start).ok()?;
    let end = Timestamp::from_second(bin_start + grain.secs()).ok()?;
    let minutes: u32 = docs.iter().map(|d| d.minutes.max(1)).sum();
    let mut mask = 0u64;
    for (doc, part) in docs.iter().zip(parts) {
        let offset = (part.bin_start? - bin_start).div_euclid(60);
        if !(0..grain.secs() / 60).contains(&offset) {
            return None;
        }
        mask |= match &doc.minute_mask {
            Some(hex) => u64::from_str_radix(hex, 16).ok()? << offset,
            None => 1 << offset,
        };
    }
    // Rooms in first-seen order; a room missing from a part (config changed) had nothing then.
    let mut rooms: Vec<(AggRoom, f64)> = Vec::new();
    for doc in &docs {
        let weight = f64::from(doc.minutes.max(1));
        for r in &doc.rooms {
            match rooms.iter_mut().find(|(x, _)| x.id == r.id) {
                Some((x, sum)) => {
                    x.entries += r.entries;
                    x.exits += r.exits;
                    x.occupancy_peak = x.occupancy_peak.max(r.occupancy_peak);
                    x.passages.merge(&r.passages);
                    *sum += r.occupancy_mean * weight;
                }
                None => rooms.push((r.clone(), r.occupancy_mean * weight)),
            }
        }
    }
    let msg_id = agg_msg_id(&first.hall_id, kind, start);
    let payload = AggPayload {
        schema_version: SCHEMA_VERSION,
        msg_id: msg_id.clone(),
        kind: kind.into(),
        hall_id: first.hall_id.clone(),
        district: first.district.clone(),
        bin_start: rfc3339(start),
        bin_end: rfc3339(end),
        minutes,
        minute_mask: Some(format!("{mask:x}")),
        clock_synced: docs.iter().all(|d| d.clock_synced),
        rooms: rooms
            .into_iter()
            .map(|(mut r, sum)| {
                r.occupancy_mean = round3(sum / f64::from(minutes));
                r
            })
            .collect(),
    };
    Some(OutMessage {
        kind: kind.into(),
        topic: topic.into(),
        retain: false,
        msg_id,
        payload: to_json(&payload),
        priority: Priority::Normal,
        bin_start: Some(bin_start),
    })
}

#[derive(Debug, Serialize)]
struct AlertPayload<'a> {
    schema_version: u32,
    msg_id: String,
    kind: &'static str,
    hall_id: &'a str,
    district: &'a str,
    clock_synced: bool,
    alert: &'static str,
    subject: &'a str,
    state: &'static str,
    raised_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    cleared_at: Option<String>,
    /// A fever's room (its subject is the terminal).
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
    /// A fever episode's passages with fever so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u64>,
    detail: &'a str,
}

/// One raise or clear on the `alerts` topic. Its id names the episode (kind, subject, when it
/// was raised) and the change, so a re-send is identical and a raise and its clear differ.
pub fn alert_message(
    config: &Config,
    change: &crate::alerts::AlertChange,
    clock_synced: bool,
) -> OutMessage {
    let msg_id = format!(
        "{}:{KIND_ALERT}:{}:{}:{}:{}",
        config.hall.id,
        change.kind.as_str(),
        change.subject,
        change.raised_at.as_millisecond(),
        change.state.as_str()
    );
    let payload = AlertPayload {
        schema_version: SCHEMA_VERSION,
        msg_id: msg_id.clone(),
        kind: KIND_ALERT,
        hall_id: &config.hall.id,
        district: &config.hall.district,
        clock_synced,
        alert: change.kind.as_str(),
        subject: &change.subject,
        state: change.state.as_str(),
        raised_at: rfc3339(change.raised_at),
        cleared_at: change.cleared_at.map(rfc3339),
        room: change.room.as_deref(),
        count: change.count,
        detail: &change.detail,
    };
    OutMessage {
        kind: KIND_ALERT.into(),
        topic: TOPIC_ALERTS.into(),
        retain: false,
        msg_id,
        payload: to_json(&payload),
        priority: Priority::Alert,
        bin_start: None,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn part(start: i64, minutes: u32, synced: bool, rooms: &[(&str, u64, f64, u64)]) -> OutMessage {
        let doc = AggPayload {
            schema_version: SCHEMA_VERSION,
            msg_id: format!("h1:agg_1m:{start}:r0"),
            kind: KIND_AGG_1M.into(),
            hall_id: "h1".into(),
            district: "d1".into(),
            bin_start: start.to_string(),
            bin_end: (start + 60).to_string(),
            minutes,
            minute_mask: (minutes > 1).then(|| format!("{:x}", (1u64 << minutes) - 1)),
            clock_synced: synced,
            rooms: rooms
                .iter()
                .map(|(id, entries, mean, peak)| AggRoom {
                    id: (*id).into(),
                    entries: *entries,
                    exits: entries / 2,
                    occupancy_mean: *mean,
                    occupancy_peak: *peak,
                    passages: Passages::default(),
                })
                .collect(),
        };
        OutMessage {
            kind: KIND_AGG_1M.into(),
            topic: TOPIC_AGG_1M.into(),
            retain: false,
            msg_id: doc.msg_id.clone(),
            payload: to_json(&doc),
            priority: Priority::Normal,
            bin_start: Some(start),
        }
    }

    #[test]
    fn a_roll_up_adds_counts_weights_means_by_minutes_and_keeps_peaks() {
        // 2023-11-14T22:00:00Z.
        let bin = 1_699_999_200;
        let parts = [
            part(bin, 1, true, &[("a", 4, 2.0, 3)]),
            part(bin + 60, 1, true, &[("a", 2, 4.0, 5), ("b", 1, 1.0, 1)]),
            // An earlier roll-up of 13 minutes, merged again into the hour.
            part(bin + 900, 13, false, &[("a", 10, 1.0, 2)]),
        ];
        let merged = roll_up(&parts, Coarse::Hour, bin).expect("merges");
        assert_eq!(merged.kind, "agg_1h");
        assert_eq!(merged.topic, "agg/1h");
        assert_eq!(merged.msg_id, "h1:agg_1h:20231114T2200Z:r0");
        assert_eq!(merged.bin_start, Some(bin));
        let doc: AggPayload = serde_json::from_slice(&merged.payload).expect("json");
        assert_eq!(doc.minutes, 15);
        // Minutes 0 and 1, then 13 minutes from minute 15 on.
        assert_eq!(
            doc.minute_mask.as_deref(),
            Some(format!("{:x}", 0b11 | (0x1fff << 15)).as_str())
        );
        assert_eq!(doc.bin_start, "2023-11-14T22:00:00Z");
        assert_eq!(doc.bin_end, "2023-11-14T23:00:00Z");
        assert!(!doc.clock_synced, "one part had an untrusted clock");
        let a = &doc.rooms[0];
        assert_eq!(
            (a.id.as_str(), a.entries, a.exits, a.occupancy_peak),
            ("a", 16, 8, 5)
        );
        // (2·1 + 4·1 + 1·13) / 15
        assert!(
            (a.occupancy_mean - 19.0 / 15.0).abs() < 1e-3,
            "{}",
            a.occupancy_mean
        );
        let b = &doc.rooms[1];
        assert_eq!((b.entries, b.occupancy_peak), (1, 1));
        assert!((b.occupancy_mean - 1.0 / 15.0).abs() < 1e-3);
    }

    #[test]
    fn a_payload_that_is_not_an_aggregate_is_not_merged() {
        let mut bad = part(0, 1, true, &[]);
        bad.payload = b"{\"kind\":\"alert\"}".to_vec();
        assert!(roll_up(&[part(0, 1, true, &[]), bad], Coarse::Quarter, 0).is_none());
        assert!(roll_up(&[], Coarse::Quarter, 0).is_none());
    }
}
