//! Uplink payloads, contract v1: what the centre receives, and nothing more.
//!
//! Every payload opens with an [`Envelope`] (`status` with four of its keys): `schema_version`
//! and a `msg_id` that is fixed when the message is written to the outbox, so a re-send is
//! byte-for-byte the same message and the centre can drop duplicates by id. The fields here
//! are the allowlist: aggregates and device health, never a face, a name or an identity.
//! `docs/uplink.md` documents each with an example.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::devices::terminals::TerminalStatsSnapshot;
use crate::devices::{DeviceStats, StatsSnapshot};
use crate::health::DeviceHealth;
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
pub const TOPIC_GAPS: &str = "gaps";
pub const KIND_GAP: &str = "gap";

/// `{prefix}/{district}/{hall}`.
pub fn base_topic(config: &Config) -> String {
    format!(
        "{}/{}/{}",
        config.uplink.topic_prefix, config.hall.district, config.hall.id
    )
}

use crate::format::{is_zero, is_zero_i64, rfc3339, round3};

/// The keys every payload of the contract opens with but `status` (which names the process,
/// not figures: no district, no clock). Each payload carries it `#[serde(flatten)]`, so its
/// keys stay at the top level of the message, beside the payload's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub schema_version: u32,
    /// Fixed when the message is written to the outbox: a re-send is the same message.
    pub msg_id: String,
    pub kind: String,
    pub hall_id: String,
    pub district: String,
    /// Whether the gateway's clock was synchronised when the figures were taken.
    pub clock_synced: bool,
}

impl Envelope {
    /// The envelope of a message of `kind` from this hall, under contract [`SCHEMA_VERSION`].
    pub fn new(config: &Config, kind: &str, msg_id: String, clock_synced: bool) -> Self {
        Envelope {
            schema_version: SCHEMA_VERSION,
            msg_id,
            kind: kind.into(),
            hall_id: config.hall.id.clone(),
            district: config.hall.district.clone(),
            clock_synced,
        }
    }
}

#[derive(Debug, Serialize)]
struct StatePayload<'a> {
    #[serde(flatten)]
    envelope: Envelope,
    ts: String,
    day: String,
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
    /// `occupancy` corrected for what the counting lines are known to miss (learned from past
    /// days' closing residuals); `occupancy` stays the raw count.
    occupancy_corrected: u64,
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
    /// Drift-corrected beside the raw figures: occupancy, and today's crossings from and to
    /// the street (`exits_today` is the raw count to the street).
    occupancy_corrected: u64,
    exits_today: u64,
    visitors_today_corrected: u64,
    exits_today_corrected: u64,
}

#[derive(Debug, Serialize)]
struct DeviceState<'a> {
    id: &'a str,
    kind: &'a str,
    online: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<String>,
    /// Why it is offline; while it answers, an open counting doubt's hint.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    stats: StatsSnapshot,
    /// The kind of an open counting doubt (`crate::health::CountingDoubts`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    counting_doubt: Option<&'static str>,
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
/// The id of a `state`: the gateway process (`boot`, random at each start) and the state's
/// number in it. Never the wall clock: a clock stepped back would repeat an id with other
/// figures, and a centre that drops repeated ids would keep the stale ones.
pub fn state_msg_id(hall: &str, boot: u64, seq: u64) -> String {
    format!("{hall}:state:{boot:016x}:{seq}")
}

pub fn state_message(
    config: &Config,
    engine: &EngineState,
    devices: &[DeviceHealth],
    stats: &DeviceStats,
    gateway: &GatewayHealth,
    now: Timestamp,
    msg_id: String,
) -> OutMessage {
    let doors: Vec<_> = config.doors.iter().map(|d| (d.from, d.to)).collect();
    let live = crate::occupancy::drift::live(engine, &doors);
    let rooms: Vec<RoomState<'_>> = engine
        .rooms
        .iter()
        .zip(&config.rooms)
        .zip(&live.rooms)
        .map(|((r, c), &corrected)| RoomState {
            id: &c.id,
            occupancy: r.occupancy(),
            capacity: c.capacity,
            utilisation: round3(r.occupancy() as f64 / f64::from(c.capacity)),
            entries_today: r.entries,
            exits_today: r.exits,
            drift_today: r.clamped,
            passages_today: r.passages,
            camera_correction_today: r.camera_correction,
            occupancy_corrected: corrected,
        })
        .collect();
    let payload = StatePayload {
        envelope: Envelope::new(config, "state", msg_id, gateway.clock_synced),
        ts: rfc3339(now),
        day: engine.day.to_string(),
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
            occupancy_corrected: live.hall,
            exits_today: live.hall_exits,
            visitors_today_corrected: live.hall_entries_corrected,
            exits_today_corrected: live.hall_exits_corrected,
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
                reason: d
                    .reason
                    .clone()
                    .or_else(|| d.counting.worst().map(|open| open.doubt.hint())),
                stats: s.snapshot(),
                counting_doubt: d.counting.worst().map(|open| open.doubt.kind.as_str()),
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
        msg_id: payload.envelope.msg_id.clone(),
        payload: to_json(&payload),
        priority: Priority::Normal,
        bin_start: None,
    }
}

/// An aggregate bin: a minute (`agg_1m`) or, after a roll-up, 15 minutes (`agg_15m`) or an
/// hour (`agg_1h`). Owned and deserialisable, because roll-ups read stored bins back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggPayload {
    /// `clock_synced`: whether the gateway's clock was synchronised when the bin closed (a
    /// roll-up: when all its parts did).
    #[serde(flatten)]
    pub envelope: Envelope,
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
        envelope: Envelope::new(config, KIND_AGG_1M, msg_id.clone(), clock_synced),
        bin_start: rfc3339(agg.start),
        bin_end: rfc3339(agg.end),
        minutes: 1,
        minute_mask: None,
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
    let msg_id = agg_msg_id(&first.envelope.hall_id, kind, start);
    let payload = AggPayload {
        // The hall as the parts name it: a roll-up runs without the config.
        envelope: Envelope {
            schema_version: SCHEMA_VERSION,
            msg_id: msg_id.clone(),
            kind: kind.into(),
            hall_id: first.envelope.hall_id.clone(),
            district: first.envelope.district.clone(),
            clock_synced: docs.iter().all(|d| d.envelope.clock_synced),
        },
        bin_start: rfc3339(start),
        bin_end: rfc3339(end),
        minutes,
        minute_mask: Some(format!("{mask:x}")),
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
    #[serde(flatten)]
    envelope: Envelope,
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
        envelope: Envelope::new(config, KIND_ALERT, msg_id.clone(), clock_synced),
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

/// Minutes the gateway could not watch: no aggregate exists for them, and this says why, so
/// the centre can tell "nobody came" from "nobody looked".
#[derive(Debug, Serialize)]
struct GapPayload {
    #[serde(flatten)]
    envelope: Envelope,
    /// The first minute missing, and the end of the last.
    from: String,
    to: String,
    minutes: i64,
    /// `clock_step` (the wall clock jumped forward), `gateway_stopped` (it was not running)
    /// or `gateway_stalled` (it ran but did not get to move time).
    cause: &'static str,
}

/// Minutes skipped from `from` to `to` (both minute boundaries), for `cause`.
pub fn gap_message(
    config: &Config,
    from: Timestamp,
    to: Timestamp,
    cause: &'static str,
    clock_synced: bool,
) -> OutMessage {
    let msg_id = format!(
        "{}:{KIND_GAP}:{}",
        config.hall.id,
        from.strftime("%Y%m%dT%H%MZ")
    );
    let payload = GapPayload {
        envelope: Envelope::new(config, KIND_GAP, msg_id.clone(), clock_synced),
        from: rfc3339(from),
        to: rfc3339(to),
        minutes: to.duration_since(from).as_mins(),
        cause,
    };
    OutMessage {
        kind: KIND_GAP.into(),
        topic: TOPIC_GAPS.into(),
        retain: false,
        msg_id,
        payload: to_json(&payload),
        priority: Priority::Alert,
        bin_start: None,
    }
}

/// Not an [`Envelope`]: the status names the process (it is the last will too), and has
/// neither district nor clock.
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

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising plain structs of strings and numbers cannot fail.
    serde_json::to_vec(value).expect("uplink payloads are plain data and always serialise")
}

#[cfg(test)]
pub(super) mod tests {
    use std::path::Path;

    use serde_json::Value;

    use super::*;
    use crate::alerts::{AlertChange, AlertState, EpisodeKind};
    use crate::occupancy::{Engine, HallModel, Input, MinuteRoom, PassageFacts};
    use crate::terminals::MemberHash;

    /// Fails unless `payload` is the JSON `pinned` holds: the same keys with the same values
    /// (in any order), `1.0` and `1` told apart. Prints the payload when it differs, so a
    /// deliberate change to the contract can be pinned anew after review.
    pub(crate) fn assert_pinned(payload: &[u8], pinned: &str) {
        let actual: Value = serde_json::from_slice(payload).expect("a payload is JSON");
        let expected: Value = serde_json::from_str(pinned).expect("the pinned text is JSON");
        assert!(
            actual == expected,
            "the payload is not the pinned one; it is:\n{}",
            serde_json::to_string_pretty(&actual).expect("a value serialises")
        );
    }

    /// Two rooms, a Modbus TCP counter, an RTU counter on a bus and a pushing terminal: every
    /// part of the `state` message has something to say.
    fn config() -> Config {
        crate::config::parse(
            r#"
[hall]
id = "h1"
district = "d1"
[uplink]
broker = "mqtt://127.0.0.1:1883"
[[rooms]]
id = "lobby"
capacity = 40
[[rooms]]
id = "reading"
capacity = 7
[[doors]]
id = "entrance"
from = "outside"
to = "lobby"
[[doors]]
id = "reading-door"
from = "lobby"
to = "reading"
[[buses]]
id = "rs485"
port = "/dev/serial/by-id/usb-adapter"
baud = 19200
[[counters]]
id = "pc-entrance"
door = "entrance"
profile = "generic-u32"
transport = "modbus_tcp"
address = "127.0.0.1:1502"
[[counters]]
id = "pc-reading"
door = "reading-door"
profile = "generic-u16"
transport = "modbus_rtu"
bus = "rs485"
unit_id = 3
[terminal_http]
listen = "127.0.0.1:0"
[[terminals]]
id = "ZK1"
profile = "zkteco-adms"
room = "reading"
transport = "http_push"
address = "127.0.0.1"
"#,
            Path::new("."),
            &crate::config::Overrides::default(),
        )
        .expect("a valid config")
    }

    fn at(text: &str) -> Timestamp {
        text.parse().expect("a test timestamp")
    }

    #[test]
    fn the_state_payload_is_the_pinned_json() {
        let config = config();
        let now = at("2026-12-01T06:17:30.123456Z");
        let mut engine = Engine::new(HallModel::from_config(&config), None, now);
        let crossings = |door, inward, outward| Input::Crossings {
            door,
            inward,
            outward,
        };
        engine.apply(now, crossings(0, 9, 1));
        engine.apply(now, crossings(1, 3, 0));
        let member: MemberHash =
            serde_json::from_str("\"00112233445566778899aabbccddeeff\"").expect("a hash");
        for (member, fever) in [(Some(member), true), (None, false)] {
            let facts = PassageFacts {
                room: 1,
                member,
                fever,
                mask_off: !fever,
                sensor_error: false,
                people: 2,
            };
            engine.apply(now, Input::Passage(&facts));
        }
        engine.apply(now, Input::HeadCount { room: 0, heads: 3 });
        let devices = [
            DeviceHealth {
                id: "pc-entrance".into(),
                kind: "people_counter",
                online: Some(true),
                since: Some(at("2026-12-01T06:00:00.5Z")),
                reason: None,
                // Answers, but its last reading jumped by 3 × 65 536: an open doubt.
                counting: crate::health::CountingDoubts {
                    implausible: Some(crate::health::DoubtEpisode {
                        since: at("2026-12-01T06:15:00Z"),
                        last: at("2026-12-01T06:15:00Z"),
                        doubt: crate::devices::counter::Doubt {
                            kind: crate::devices::counter::DoubtKind::WordOrder,
                            which: "IN",
                            from: 6_553_600,
                            to: 6_750_208,
                            limit: 10,
                            elapsed_secs: Some(10),
                            interrupted: false,
                        },
                        readings: 1,
                    }),
                    reset: None,
                },
            },
            DeviceHealth {
                id: "pc-reading".into(),
                kind: "people_counter",
                online: Some(false),
                since: Some(at("2026-12-01T06:10:00Z")),
                reason: Some("no answer within 500 ms".into()),
                ..DeviceHealth::default()
            },
        ];
        let stats = DeviceStats::new(&config);
        stats.counters[0]
            .polls
            .store(120, std::sync::atomic::Ordering::Relaxed);
        stats.counters[0]
            .implausible_steps
            .store(1, std::sync::atomic::Ordering::Relaxed);
        stats.counters[1]
            .timeouts
            .store(4, std::sync::atomic::Ordering::Relaxed);
        stats.buses[0]
            .crc_errors
            .store(2, std::sync::atomic::Ordering::Relaxed);
        let gateway = GatewayHealth {
            clock_synced: true,
            outbox: OutboxSnapshot {
                pending: 3,
                bytes: 2048,
                max_bytes: 1 << 20,
                commits: 17,
                buffer_left_hours: Some(12.5),
                ..OutboxSnapshot::default()
            },
            terminals: vec![TerminalStatsSnapshot {
                messages: 5,
                passages: 2,
                last_seen_ms: 1_764_569_850_000,
                ..TerminalStatsSnapshot::default()
            }],
            terminals_unattributed: TerminalStatsSnapshot {
                messages: 1,
                rejected: [("bad_json", 1)].into(),
                ..TerminalStatsSnapshot::default()
            },
        };
        let id = state_msg_id("h1", 0x00c0_ffee_0000_0001, 42);
        let m = state_message(&config, engine.state(), &devices, &stats, &gateway, now, id);
        assert_eq!(
            (m.kind.as_str(), m.topic.as_str(), m.retain, m.bin_start),
            ("state", "state", true, None)
        );
        assert_eq!(m.msg_id, "h1:state:00c0ffee00000001:42");
        assert_pinned(
            &m.payload,
            r#"{
            "schema_version": 1, "msg_id": "h1:state:00c0ffee00000001:42", "kind": "state",
            "hall_id": "h1", "district": "d1", "clock_synced": true,
            "ts": "2026-12-01T06:17:30.123Z", "day": "2026-12-01",
            "rooms": [
                {"id": "lobby", "occupancy": 3, "capacity": 40, "utilisation": 0.075,
                 "entries_today": 9, "exits_today": 4, "drift_today": 0,
                 "camera_correction_today": -2, "occupancy_corrected": 3},
                {"id": "reading", "occupancy": 3, "capacity": 7, "utilisation": 0.429,
                 "entries_today": 3, "exits_today": 0, "drift_today": 0,
                 "passages_today": {"passages": 2, "people": 4, "members": 1,
                                    "strangers": 1, "fevers": 1, "mask_off": 1},
                 "occupancy_corrected": 3}
            ],
            "hall": {"occupancy": 6, "capacity": 47, "visitors_today": 9,
                     "passages_today": {"passages": 2, "people": 4, "members": 1,
                                        "strangers": 1, "fevers": 1, "mask_off": 1},
                     "unique_members_today": 1, "occupancy_corrected": 6,
                     "exits_today": 1, "visitors_today_corrected": 9,
                     "exits_today_corrected": 1},
            "outbox": {"pending": 3, "bytes": 2048, "max_bytes": 1048576, "commits": 17,
                       "rolled_up": 0, "dropped": 0, "write_errors": 0, "disk_full": false,
                       "buffer_left_hours": 12.5},
            "terminals": [
                {"id": "ZK1", "room": "reading",
                 "stats": {"messages": 5, "passages": 2, "duplicates": 0, "ignored": 0,
                           "last_seen_ms": 1764569850000}}
            ],
            "terminals_unattributed": {"messages": 1, "passages": 0, "duplicates": 0,
                                       "ignored": 0, "rejected": {"bad_json": 1}},
            "devices": [
                {"id": "pc-entrance", "kind": "people_counter", "online": true,
                 "since": "2026-12-01T06:00:00.5Z",
                 "reason": "计数值按 65536 的倍数跳变，疑为字序配置错误 (values jump by 3 × 65 536: check `word_order` in the counter's profile): IN 6553600 → 6750208，未计入 (not counted)",
                 "counting_doubt": "word_order",
                 "stats": {"polls": 120, "timeouts": 0, "crc_errors": 0, "exceptions": 0,
                           "bad_answers": 0, "link_errors": 0, "implausible_steps": 1,
                           "resets": 0}},
                {"id": "pc-reading", "kind": "people_counter", "online": false,
                 "since": "2026-12-01T06:10:00Z", "reason": "no answer within 500 ms",
                 "stats": {"polls": 0, "timeouts": 4, "crc_errors": 0, "exceptions": 0,
                           "bad_answers": 0, "link_errors": 0, "implausible_steps": 0,
                           "resets": 0}}
            ],
            "buses": [
                {"id": "rs485",
                 "stats": {"polls": 0, "timeouts": 0, "crc_errors": 2, "exceptions": 0,
                           "bad_answers": 0, "link_errors": 0, "implausible_steps": 0,
                           "resets": 0}}
            ]
        }"#,
        );
    }

    fn minute(start: &str, synced: bool) -> OutMessage {
        let start = at(start);
        let agg = MinuteAggregate {
            start,
            end: start + jiff::SignedDuration::from_secs(60),
            rooms: vec![
                MinuteRoom {
                    id: "lobby".into(),
                    entries: 4,
                    exits: 1,
                    occupancy_mean: 2.345_678,
                    occupancy_peak: 5,
                    passages: Passages::default(),
                },
                MinuteRoom {
                    id: "reading".into(),
                    entries: 1,
                    exits: 0,
                    occupancy_mean: 0.5,
                    occupancy_peak: 1,
                    passages: Passages {
                        passages: 1,
                        people: 1,
                        strangers: 1,
                        mask_off: 1,
                        ..Passages::default()
                    },
                },
            ],
        };
        minute_message(&config(), &agg, synced)
    }

    #[test]
    fn the_agg_1m_payload_is_the_pinned_json() {
        let m = minute("2026-12-01T06:17:00Z", true);
        assert_eq!(m.msg_id, "h1:agg_1m:20261201T0617Z:r0");
        assert_pinned(
            &m.payload,
            r#"{
            "schema_version": 1, "msg_id": "h1:agg_1m:20261201T0617Z:r0", "kind": "agg_1m",
            "hall_id": "h1", "district": "d1", "clock_synced": true,
            "bin_start": "2026-12-01T06:17:00Z", "bin_end": "2026-12-01T06:18:00Z",
            "rooms": [
                {"id": "lobby", "entries": 4, "exits": 1, "occupancy_mean": 2.346,
                 "occupancy_peak": 5},
                {"id": "reading", "entries": 1, "exits": 0, "occupancy_mean": 0.5,
                 "occupancy_peak": 1, "passages": 1, "people": 1, "strangers": 1,
                 "mask_off": 1}
            ]
        }"#,
        );
    }

    #[test]
    fn the_agg_15m_roll_up_payload_is_the_pinned_json() {
        let parts = [
            minute("2026-12-01T06:15:00Z", true),
            minute("2026-12-01T06:17:00Z", false),
        ];
        let bin = at("2026-12-01T06:15:00Z").as_second();
        let m = roll_up(&parts, Coarse::Quarter, bin).expect("merges");
        assert_eq!(m.msg_id, "h1:agg_15m:20261201T0615Z:r0");
        assert_pinned(
            &m.payload,
            r#"{
            "schema_version": 1, "msg_id": "h1:agg_15m:20261201T0615Z:r0", "kind": "agg_15m",
            "hall_id": "h1", "district": "d1", "clock_synced": false,
            "bin_start": "2026-12-01T06:15:00Z", "bin_end": "2026-12-01T06:30:00Z",
            "minutes": 2, "minute_mask": "5",
            "rooms": [
                {"id": "lobby", "entries": 8, "exits": 2, "occupancy_mean": 2.346,
                 "occupancy_peak": 5},
                {"id": "reading", "entries": 2, "exits": 0, "occupancy_mean": 0.5,
                 "occupancy_peak": 1, "passages": 2, "people": 2, "strangers": 2,
                 "mask_off": 2}
            ]
        }"#,
        );
    }

    #[test]
    fn the_agg_1h_roll_up_payload_is_the_pinned_json() {
        let quarter = roll_up(
            &[minute("2026-12-01T06:15:00Z", true)],
            Coarse::Quarter,
            at("2026-12-01T06:15:00Z").as_second(),
        )
        .expect("merges");
        let parts = [minute("2026-12-01T06:01:00Z", true), quarter];
        let bin = at("2026-12-01T06:00:00Z").as_second();
        let m = roll_up(&parts, Coarse::Hour, bin).expect("merges");
        assert_eq!(m.msg_id, "h1:agg_1h:20261201T0600Z:r0");
        assert_pinned(
            &m.payload,
            r#"{
            "schema_version": 1, "msg_id": "h1:agg_1h:20261201T0600Z:r0", "kind": "agg_1h",
            "hall_id": "h1", "district": "d1", "clock_synced": true,
            "bin_start": "2026-12-01T06:00:00Z", "bin_end": "2026-12-01T07:00:00Z",
            "minutes": 2, "minute_mask": "8002",
            "rooms": [
                {"id": "lobby", "entries": 8, "exits": 2, "occupancy_mean": 2.346,
                 "occupancy_peak": 5},
                {"id": "reading", "entries": 2, "exits": 0, "occupancy_mean": 0.5,
                 "occupancy_peak": 1, "passages": 2, "people": 2, "strangers": 2,
                 "mask_off": 2}
            ]
        }"#,
        );
    }

    #[test]
    fn a_roll_up_reads_a_stored_minute_whatever_the_order_of_its_keys() {
        // The outbox keeps the bytes a minute was written with: envelope keys last here.
        let stored = r#"{"bin_start": "2026-12-01T06:17:00Z", "bin_end": "2026-12-01T06:18:00Z",
            "rooms": [{"id": "lobby", "entries": 4, "exits": 1, "occupancy_mean": 2.346,
                       "occupancy_peak": 5}],
            "clock_synced": true, "district": "d1", "hall_id": "h1", "kind": "agg_1m",
            "msg_id": "h1:agg_1m:20261201T0617Z:r0", "schema_version": 1}"#;
        let mut part = minute("2026-12-01T06:17:00Z", true);
        part.payload = stored.as_bytes().to_vec();
        let bin = at("2026-12-01T06:15:00Z").as_second();
        let m = roll_up(&[part], Coarse::Quarter, bin).expect("merges");
        assert_pinned(
            &m.payload,
            r#"{
            "schema_version": 1, "msg_id": "h1:agg_15m:20261201T0615Z:r0", "kind": "agg_15m",
            "hall_id": "h1", "district": "d1", "clock_synced": true,
            "bin_start": "2026-12-01T06:15:00Z", "bin_end": "2026-12-01T06:30:00Z",
            "minute_mask": "4",
            "rooms": [
                {"id": "lobby", "entries": 4, "exits": 1, "occupancy_mean": 2.346,
                 "occupancy_peak": 5}
            ]
        }"#,
        );
    }

    #[test]
    fn a_raised_fever_alert_payload_is_the_pinned_json() {
        let change = AlertChange {
            kind: EpisodeKind::Fever,
            subject: "ZK1".into(),
            room: Some("reading".into()),
            state: AlertState::Raised,
            raised_at: at("2026-12-01T06:05:00.25Z"),
            cleared_at: None,
            count: Some(2),
            detail: "2 passages with fever".into(),
        };
        let m = alert_message(&config(), &change, true);
        assert_eq!(
            (m.kind.as_str(), m.topic.as_str(), m.priority),
            ("alert", "alerts", Priority::Alert)
        );
        assert_pinned(
            &m.payload,
            r#"{
            "schema_version": 1, "msg_id": "h1:alert:fever:ZK1:1796105100250:raised",
            "kind": "alert", "hall_id": "h1", "district": "d1", "clock_synced": true,
            "alert": "fever", "subject": "ZK1", "state": "raised",
            "raised_at": "2026-12-01T06:05:00.25Z", "room": "reading", "count": 2,
            "detail": "2 passages with fever"
        }"#,
        );
    }

    #[test]
    fn a_cleared_device_alert_payload_is_the_pinned_json() {
        let change = AlertChange {
            kind: EpisodeKind::DeviceOffline,
            subject: "pc-reading".into(),
            room: None,
            state: AlertState::Cleared,
            raised_at: at("2026-12-01T06:05:00Z"),
            cleared_at: Some(at("2026-12-01T06:45:10Z")),
            count: None,
            detail: "no answer within 500 ms".into(),
        };
        assert_pinned(
            &alert_message(&config(), &change, false).payload,
            r#"{
            "schema_version": 1,
            "msg_id": "h1:alert:device_offline:pc-reading:1796105100000:cleared",
            "kind": "alert", "hall_id": "h1", "district": "d1", "clock_synced": false,
            "alert": "device_offline", "subject": "pc-reading", "state": "cleared",
            "raised_at": "2026-12-01T06:05:00Z", "cleared_at": "2026-12-01T06:45:10Z",
            "detail": "no answer within 500 ms"
        }"#,
        );
    }

    #[test]
    fn the_status_payloads_are_the_pinned_json() {
        let started = at("2026-12-01T05:00:00Z");
        let now = at("2026-12-01T06:17:30.5Z");
        for (online, pinned) in [
            (
                true,
                r#"{
            "schema_version": 1, "msg_id": "h1:status:1796101200000:1796105850500:online",
            "kind": "status", "hall_id": "h1", "status": "online",
            "ts": "2026-12-01T06:17:30.5Z", "started": "2026-12-01T05:00:00Z",
            "version": "VERSION"
        }"#,
            ),
            (
                false,
                r#"{
            "schema_version": 1, "msg_id": "h1:status:1796101200000:1796105850500:offline",
            "kind": "status", "hall_id": "h1", "status": "offline",
            "ts": "2026-12-01T06:17:30.5Z", "started": "2026-12-01T05:00:00Z",
            "version": "VERSION"
        }"#,
            ),
        ] {
            let pinned = pinned.replace("VERSION", env!("CARGO_PKG_VERSION"));
            assert_pinned(&status_payload(&config(), online, started, now), &pinned);
        }
    }

    fn part(start: i64, minutes: u32, synced: bool, rooms: &[(&str, u64, f64, u64)]) -> OutMessage {
        let doc = AggPayload {
            envelope: Envelope {
                schema_version: SCHEMA_VERSION,
                msg_id: format!("h1:agg_1m:{start}:r0"),
                kind: KIND_AGG_1M.into(),
                hall_id: "h1".into(),
                district: "d1".into(),
                clock_synced: synced,
            },
            bin_start: start.to_string(),
            bin_end: (start + 60).to_string(),
            minutes,
            minute_mask: (minutes > 1).then(|| format!("{:x}", (1u64 << minutes) - 1)),
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
            msg_id: doc.envelope.msg_id.clone(),
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
        assert!(
            !doc.envelope.clock_synced,
            "one part had an untrusted clock"
        );
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
