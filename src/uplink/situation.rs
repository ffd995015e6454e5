//! The situation payloads, contract v1: `situation/15m` and `situation/day`.
//!
//! The engine closes a 15-minute bin or a day ([`QuarterClosed`], [`DayFigures`]); the
//! supervisor turns it here into an [`OutMessage`] for the outbox, which the uplink publishes
//! under the hall's base topic. This is the allowlist of what those messages say: counts,
//! means and ratios (rounded to 3 decimals), and zone and counter ids from the config — never
//! an identity (unique visitors are a count of hashes, the hashes stay on the box). The
//! `msg_id` comes from the hall, the kind, the bin (or day) and revision `r0` only, so a
//! re-send is identical. `docs/uplink.md` and `docs/schema/situation_*.schema.json` document
//! each field.

use jiff::Timestamp;
use serde::Serialize;

use super::payload::Envelope;
use crate::config::Config;
use crate::format::{rfc3339, round3};
use crate::occupancy::{
    CorrectedRoom, DayFigures, HallFigures, QuarterClosed, RoomFigures, Scaled,
};
use crate::outbox::{OutMessage, Priority};

pub const TOPIC_SITUATION_15M: &str = "situation/15m";
pub const TOPIC_SITUATION_DAY: &str = "situation/day";
pub const KIND_SITUATION_15M: &str = "situation_15m";
pub const KIND_SITUATION_DAY: &str = "situation_day";

#[derive(Debug, Serialize)]
struct HallPayload {
    entries: u64,
    exits: u64,
    service_visits: u64,
    unique_visitors: u64,
    member_visits: u64,
    stranger_visits: u64,
    fevers: u64,
    mask_off: u64,
    occupancy_mean: f64,
    occupancy_peak: u64,
    /// Day only: when the peak first held (null when the hall stayed empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    occupancy_peak_at: Option<Option<String>>,
    person_minutes: f64,
    utilisation_mean: f64,
    utilisation_peak: f64,
    device_online_ratio: Option<f64>,
}

impl HallPayload {
    fn new(h: &HallFigures, with_peak_at: bool) -> Self {
        HallPayload {
            entries: h.entries,
            exits: h.exits,
            service_visits: h.service_visits,
            unique_visitors: h.unique_visitors,
            member_visits: h.member_visits,
            stranger_visits: h.stranger_visits,
            fevers: h.fevers,
            mask_off: h.mask_off,
            occupancy_mean: round3(h.occupancy_mean),
            occupancy_peak: h.occupancy_peak,
            occupancy_peak_at: with_peak_at.then(|| h.occupancy_peak_at.map(rfc3339)),
            person_minutes: round3(h.person_minutes),
            utilisation_mean: round3(h.utilisation_mean),
            utilisation_peak: round3(h.utilisation_peak),
            device_online_ratio: h.device_online_ratio.map(round3),
        }
    }
}

#[derive(Debug, Serialize)]
struct RoomPayload<'a> {
    id: &'a str,
    capacity: u32,
    entries: u64,
    exits: u64,
    service_visits: u64,
    unique_visitors: u64,
    member_visits: u64,
    stranger_visits: u64,
    fevers: u64,
    mask_off: u64,
    occupancy_mean: f64,
    occupancy_peak: u64,
    person_minutes: f64,
    utilisation_mean: f64,
    utilisation_peak: f64,
    occupied_share: f64,
    dwell_minutes_mean: Option<f64>,
    hotspot_rank: u32,
}

impl<'a> RoomPayload<'a> {
    fn new(r: &'a RoomFigures) -> Self {
        RoomPayload {
            id: &r.id,
            capacity: r.capacity,
            entries: r.entries,
            exits: r.exits,
            service_visits: r.service_visits,
            unique_visitors: r.unique_visitors,
            member_visits: r.member_visits,
            stranger_visits: r.stranger_visits,
            fevers: r.fevers,
            mask_off: r.mask_off,
            occupancy_mean: round3(r.occupancy_mean),
            occupancy_peak: r.occupancy_peak,
            person_minutes: round3(r.person_minutes),
            utilisation_mean: round3(r.utilisation_mean),
            utilisation_peak: round3(r.utilisation_peak),
            occupied_share: round3(r.occupied_share),
            dwell_minutes_mean: r.dwell_minutes_mean.map(round3),
            hotspot_rank: r.hotspot_rank,
        }
    }
}

#[derive(Debug, Serialize)]
struct QuarterPayload<'a> {
    #[serde(flatten)]
    envelope: Envelope,
    bin_start: String,
    bin_end: String,
    day: String,
    open_minutes: u32,
    hall: HallPayload,
    rooms: Vec<RoomPayload<'a>>,
}

/// `{hall}:{kind}:{bin start, YYYYMMDDTHHMMZ}:r0`.
fn quarter_msg_id(hall: &str, start: Timestamp) -> String {
    format!(
        "{hall}:{KIND_SITUATION_15M}:{}:r0",
        start.strftime("%Y%m%dT%H%MZ")
    )
}

/// One closed 15-minute bin, for `situation/15m`.
pub fn quarter_message(config: &Config, q: &QuarterClosed, clock_synced: bool) -> OutMessage {
    let msg_id = quarter_msg_id(&config.hall.id, q.start);
    let payload = QuarterPayload {
        envelope: Envelope::new(config, KIND_SITUATION_15M, msg_id.clone(), clock_synced),
        bin_start: rfc3339(q.start),
        bin_end: rfc3339(q.end),
        day: q.day.to_string(),
        open_minutes: q.open_minutes,
        hall: HallPayload::new(&q.hall, false),
        rooms: q.rooms.iter().map(RoomPayload::new).collect(),
    };
    OutMessage {
        kind: KIND_SITUATION_15M.into(),
        topic: TOPIC_SITUATION_15M.into(),
        retain: false,
        msg_id,
        payload: to_json(&payload),
        priority: Priority::Normal,
        bin_start: Some(q.start.as_second()),
    }
}

#[derive(Debug, Serialize)]
struct DriftRoom<'a> {
    id: &'a str,
    residual: u64,
    clamped: u64,
}

#[derive(Debug, Serialize)]
struct DriftLine<'a> {
    counter: String,
    from: &'a str,
    to: &'a str,
    #[serde(rename = "in")]
    inward: u64,
    out: u64,
}

#[derive(Debug, Serialize)]
struct Drift<'a> {
    rooms: Vec<DriftRoom<'a>>,
    lines: Vec<DriftLine<'a>>,
}

#[derive(Debug, Serialize)]
struct CorrectedRoomPayload<'a> {
    id: &'a str,
    scaled: &'static str,
    factor: f64,
    entries: u64,
    exits: u64,
    person_minutes: f64,
    occupancy_mean: f64,
    utilisation_mean: f64,
    dwell_minutes_mean: Option<f64>,
}

impl<'a> CorrectedRoomPayload<'a> {
    fn new(r: &'a CorrectedRoom) -> Self {
        CorrectedRoomPayload {
            id: &r.id,
            scaled: match r.scaled {
                Scaled::Exits => "exits",
                Scaled::Entries => "entries",
                Scaled::None => "none",
            },
            factor: round3(r.factor),
            entries: r.entries,
            exits: r.exits,
            person_minutes: round3(r.person_minutes),
            occupancy_mean: round3(r.occupancy_mean),
            utilisation_mean: round3(r.utilisation_mean),
            dwell_minutes_mean: r.dwell_minutes_mean.map(round3),
        }
    }
}

#[derive(Debug, Serialize)]
struct CorrectedHallPayload {
    person_minutes: f64,
    occupancy_mean: f64,
    utilisation_mean: f64,
    /// Street entries and exits with the street lines' learned misses added.
    entries: u64,
    exits: u64,
}

#[derive(Debug, Serialize)]
struct CorrectedPayload<'a> {
    method: &'static str,
    rooms: Vec<CorrectedRoomPayload<'a>>,
    hall: CorrectedHallPayload,
}

#[derive(Debug, Serialize)]
struct DayPayload<'a> {
    #[serde(flatten)]
    envelope: Envelope,
    day: String,
    open_from: String,
    open_to: String,
    peak_hour: Option<&'a str>,
    hall: HallPayload,
    rooms: Vec<RoomPayload<'a>>,
    drift: Drift<'a>,
    corrected: CorrectedPayload<'a>,
}

/// The counting lines of the day: one per door that has a counter, named by its counter (by
/// all of them, joined with `+`, on the rare door that two counters watch: the engine counts
/// per door).
fn drift_lines<'a>(config: &'a Config, d: &DayFigures) -> Vec<DriftLine<'a>> {
    d.drift_doors
        .iter()
        .filter_map(|door| {
            let counters: Vec<&str> = config
                .counters
                .iter()
                .filter(|c| c.door == door.door)
                .map(|c| c.id.as_str())
                .collect();
            if counters.is_empty() {
                return None;
            }
            Some(DriftLine {
                counter: counters.join("+"),
                from: config.zone_name(door.from),
                to: config.zone_name(door.to),
                inward: door.inward,
                out: door.outward,
            })
        })
        .collect()
}

/// The closed day, for `situation/day`.
pub fn day_message(config: &Config, d: &DayFigures, clock_synced: bool) -> OutMessage {
    let day = d.day.to_string();
    let msg_id = format!("{}:{KIND_SITUATION_DAY}:{day}:r0", config.hall.id);
    let payload = DayPayload {
        envelope: Envelope::new(config, KIND_SITUATION_DAY, msg_id.clone(), clock_synced),
        day,
        open_from: rfc3339(d.open_from),
        open_to: rfc3339(d.open_to),
        peak_hour: d.peak_hour.as_deref(),
        hall: HallPayload::new(&d.hall, true),
        rooms: d.rooms.iter().map(RoomPayload::new).collect(),
        drift: Drift {
            rooms: d
                .drift_rooms
                .iter()
                .map(|r| DriftRoom {
                    id: &r.id,
                    residual: r.residual,
                    clamped: r.clamped,
                })
                .collect(),
            lines: drift_lines(config, d),
        },
        corrected: CorrectedPayload {
            method: match d.corrected.method {
                Scaled::Entries => "scale_entries",
                Scaled::Exits | Scaled::None => "scale_exits",
            },
            rooms: d
                .corrected
                .rooms
                .iter()
                .map(CorrectedRoomPayload::new)
                .collect(),
            hall: CorrectedHallPayload {
                person_minutes: round3(d.corrected.hall.person_minutes),
                occupancy_mean: round3(d.corrected.hall.occupancy_mean),
                utilisation_mean: round3(d.corrected.hall.utilisation_mean),
                entries: d.corrected.hall.entries,
                exits: d.corrected.hall.exits,
            },
        },
    };
    OutMessage {
        kind: KIND_SITUATION_DAY.into(),
        topic: TOPIC_SITUATION_DAY.into(),
        retain: false,
        msg_id,
        payload: to_json(&payload),
        priority: Priority::Normal,
        bin_start: Some(d.open_from.as_second()),
    }
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising plain structs of strings and numbers cannot fail.
    serde_json::to_vec(value).expect("uplink payloads are plain data and always serialise")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::Value;

    use super::*;
    use crate::occupancy::{Engine, EngineOutput, HallModel, Input};
    use crate::uplink::payload::tests::assert_pinned;

    fn config() -> Config {
        crate::config::parse(
            r#"
            [hall]
            id = "h-1"
            district = "d1"
            opening_time = "08:00"
            [uplink]
            broker = "mqtt://127.0.0.1:1883"
            [[rooms]]
            id = "lobby"
            capacity = 40
            service_visits = "none"
            [[rooms]]
            id = "reading"
            capacity = 10
            [[doors]]
            id = "entrance"
            from = "outside"
            to = "lobby"
            [[doors]]
            id = "reading-door"
            from = "lobby"
            to = "reading"
            [[counters]]
            id = "pc-entrance"
            door = "entrance"
            profile = "generic-u32"
            transport = "modbus_tcp"
            address = "127.0.0.1:1502"
            [[counters]]
            id = "pc-reading"
            door = "reading-door"
            profile = "generic-u32"
            transport = "modbus_tcp"
            address = "127.0.0.1:1503"
            "#,
            Path::new("."),
            &Default::default(),
        )
        .expect("a valid config")
    }

    fn at(text: &str) -> Timestamp {
        text.parse().expect("test timestamp")
    }

    fn crossings(door: usize, inward: u64, outward: u64) -> Input<'static> {
        Input::Crossings {
            door,
            inward,
            outward,
        }
    }

    /// A short day: 3 in at 20:50 local, 2 on to the reading room, 1 leaves; closed at 21:00.
    fn outputs(config: &Config) -> Vec<EngineOutput> {
        let mut e = Engine::new(
            HallModel::from_config(config),
            None,
            at("2026-11-22T12:45:00Z"),
        );
        let mut out = Vec::new();
        let mut t = at("2026-11-22T12:45:00Z");
        let end = at("2026-11-22T13:00:00Z");
        while t <= end {
            out.extend(e.apply(t, Input::Time));
            if t == at("2026-11-22T12:50:00Z") {
                let online = Input::DevicesOnline {
                    online: 2,
                    configured: 2,
                };
                out.extend(e.apply(t, online));
                out.extend(e.apply(t, crossings(0, 3, 0)));
                out.extend(e.apply(t, crossings(1, 2, 0)));
            }
            if t == at("2026-11-22T12:55:00Z") {
                out.extend(e.apply(t, crossings(0, 0, 1)));
            }
            t += jiff::SignedDuration::from_secs(20);
        }
        out
    }

    fn json(m: &OutMessage) -> Value {
        serde_json::from_slice(&m.payload).expect("a payload is JSON")
    }

    /// Checks `value` against the parts of a JSON Schema that make it the allowlist:
    /// every object carries exactly its `required` keys and nothing else.
    fn conforms(schema: &Value, value: &Value, path: &str) {
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            let obj = value
                .as_object()
                .unwrap_or_else(|| panic!("{path} should be an object"));
            assert_eq!(schema["additionalProperties"], Value::Bool(false), "{path}");
            for key in obj.keys() {
                assert!(props.contains_key(key), "{path}.{key} is not in the schema");
            }
            for key in schema["required"].as_array().expect("required") {
                let key = key.as_str().expect("a key");
                assert!(
                    obj.contains_key(key),
                    "{path}.{key} is required but missing"
                );
            }
            for (key, v) in obj {
                conforms(&props[key], v, &format!("{path}.{key}"));
            }
        }
        if let (Some(items), Some(list)) = (schema.get("items"), value.as_array()) {
            for (i, v) in list.iter().enumerate() {
                conforms(items, v, &format!("{path}[{i}]"));
            }
        }
    }

    fn schema(kind: &str) -> Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("docs/schema")
            .join(format!("{kind}.schema.json"));
        serde_json::from_str(&std::fs::read_to_string(path).expect("the schema exists"))
            .expect("the schema is JSON")
    }

    #[test]
    fn a_closed_quarter_becomes_a_situation_15m_message_with_a_deterministic_id() {
        let config = config();
        let out = outputs(&config);
        let q = out
            .iter()
            .find_map(|o| match o {
                EngineOutput::QuarterClosed(q) => Some(q),
                _ => None,
            })
            .expect("a quarter closed");
        let m = quarter_message(&config, q, true);
        assert_eq!(m.msg_id, "h-1:situation_15m:20261122T1245Z:r0");
        assert_eq!(
            (m.topic.as_str(), m.kind.as_str(), m.retain),
            ("situation/15m", "situation_15m", false)
        );
        assert_eq!(m.bin_start, Some(at("2026-11-22T12:45:00Z").as_second()));
        assert_eq!(m.priority, Priority::Normal);
        assert_eq!(
            quarter_message(&config, q, true),
            m,
            "a re-send is identical"
        );
        let doc = json(&m);
        conforms(&schema(KIND_SITUATION_15M), &doc, "situation_15m");
        assert_eq!(doc["bin_end"], "2026-11-22T13:00:00Z");
        assert_eq!(doc["day"], "2026-11-22");
        assert_eq!(doc["open_minutes"], 15);
        // Lobby: 1 for 5 min, then 0 (3 in, 2 on, 1 out); reading: 2 for 10 min.
        let hall = &doc["hall"];
        assert_eq!(
            (hall["entries"].as_u64(), hall["exits"].as_u64()),
            (Some(3), Some(1))
        );
        assert_eq!(hall["service_visits"], 2, "the lobby gives none");
        assert_eq!(hall["person_minutes"], 25.0);
        assert_eq!(hall["occupancy_mean"], 1.667);
        assert_eq!(hall["utilisation_peak"], 0.06);
        // Both counters online from 12:50: 10 of the 15 minutes measured, all online.
        assert_eq!(hall["device_online_ratio"], 1.0);
        let reading = &doc["rooms"][1];
        assert_eq!(reading["hotspot_rank"], 1);
        assert_eq!(reading["dwell_minutes_mean"], 10.0);
        assert_eq!(doc["rooms"][0]["hotspot_rank"], 2);
    }

    #[test]
    fn a_closed_day_becomes_a_situation_day_message_with_drift_per_room_and_counter() {
        let config = config();
        let out = outputs(&config);
        let d = out
            .iter()
            .find_map(|o| match o {
                EngineOutput::DayClosed(d) => d.figures.as_deref(),
                _ => None,
            })
            .expect("the day closed");
        let m = day_message(&config, d, false);
        assert_eq!(m.msg_id, "h-1:situation_day:2026-11-22:r0");
        assert_eq!(m.topic, "situation/day");
        assert_eq!(m.bin_start, Some(at("2026-11-22T00:00:00Z").as_second()));
        let doc = json(&m);
        conforms(&schema(KIND_SITUATION_DAY), &doc, "situation_day");
        assert_eq!(doc["clock_synced"], false);
        assert_eq!(doc["open_from"], "2026-11-22T00:00:00Z");
        assert_eq!(doc["open_to"], "2026-11-22T13:00:00Z");
        assert_eq!(doc["peak_hour"], "20:00");
        assert_eq!(doc["hall"]["occupancy_peak_at"], "2026-11-22T12:50:00Z");
        assert_eq!(
            doc["drift"]["rooms"],
            serde_json::json!([
                {"id": "lobby", "residual": 0, "clamped": 0},
                {"id": "reading", "residual": 2, "clamped": 0}
            ])
        );
        assert_eq!(
            doc["drift"]["lines"],
            serde_json::json!([
                {"counter": "pc-entrance", "from": "outside", "to": "lobby", "in": 3, "out": 1},
                {"counter": "pc-reading", "from": "lobby", "to": "reading", "in": 2, "out": 0}
            ])
        );
        // The reading room never saw an exit: scaling cannot end it at zero, so it is left.
        assert_eq!(doc["corrected"]["rooms"][1]["scaled"], "none");
        assert_eq!(doc["corrected"]["method"], "scale_exits");
    }

    fn closed(config: &Config) -> (Box<QuarterClosed>, Box<DayFigures>) {
        let out = outputs(config);
        let quarter = out.iter().find_map(|o| match o {
            EngineOutput::QuarterClosed(q) => Some(q.clone()),
            _ => None,
        });
        let day = out.iter().find_map(|o| match o {
            EngineOutput::DayClosed(d) => d.figures.clone(),
            _ => None,
        });
        (
            quarter.expect("a quarter closed"),
            day.expect("the day closed"),
        )
    }

    #[test]
    fn the_situation_15m_payload_is_the_pinned_json() {
        let config = config();
        let (q, _) = closed(&config);
        assert_pinned(
            &quarter_message(&config, &q, true).payload,
            r#"{
            "bin_end": "2026-11-22T13:00:00Z",
            "bin_start": "2026-11-22T12:45:00Z",
            "clock_synced": true,
            "day": "2026-11-22",
            "district": "d1",
            "hall": {
                "device_online_ratio": 1.0,
                "entries": 3,
                "exits": 1,
                "fevers": 0,
                "mask_off": 0,
                "member_visits": 0,
                "occupancy_mean": 1.667,
                "occupancy_peak": 3,
                "person_minutes": 25.0,
                "service_visits": 2,
                "stranger_visits": 0,
                "unique_visitors": 0,
                "utilisation_mean": 0.033,
                "utilisation_peak": 0.06
            },
            "hall_id": "h-1",
            "kind": "situation_15m",
            "msg_id": "h-1:situation_15m:20261122T1245Z:r0",
            "open_minutes": 15,
            "rooms": [
                {"capacity": 40, "dwell_minutes_mean": 1.667, "entries": 3, "exits": 3,
                 "fevers": 0, "hotspot_rank": 2, "id": "lobby", "mask_off": 0,
                 "member_visits": 0, "occupancy_mean": 0.333, "occupancy_peak": 1,
                 "occupied_share": 0.333, "person_minutes": 5.0, "service_visits": 0,
                 "stranger_visits": 0, "unique_visitors": 0, "utilisation_mean": 0.008,
                 "utilisation_peak": 0.025},
                {"capacity": 10, "dwell_minutes_mean": 10.0, "entries": 2, "exits": 0,
                 "fevers": 0, "hotspot_rank": 1, "id": "reading", "mask_off": 0,
                 "member_visits": 0, "occupancy_mean": 1.333, "occupancy_peak": 2,
                 "occupied_share": 0.667, "person_minutes": 20.0, "service_visits": 2,
                 "stranger_visits": 0, "unique_visitors": 0, "utilisation_mean": 0.133,
                 "utilisation_peak": 0.2}
            ],
            "schema_version": 1
        }"#,
        );
    }

    #[test]
    fn the_situation_day_payload_is_the_pinned_json() {
        let config = config();
        let (_, d) = closed(&config);
        assert_pinned(
            &day_message(&config, &d, false).payload,
            r#"{
            "clock_synced": false,
            "corrected": {
                "hall": {"occupancy_mean": 1.667, "person_minutes": 25.0,
                         "utilisation_mean": 0.033, "entries": 3, "exits": 1},
                "method": "scale_exits",
                "rooms": [
                    {"dwell_minutes_mean": 1.667, "entries": 3, "exits": 3, "factor": 1.0,
                     "id": "lobby", "occupancy_mean": 0.333, "person_minutes": 5.0,
                     "scaled": "none", "utilisation_mean": 0.008},
                    {"dwell_minutes_mean": 10.0, "entries": 2, "exits": 0, "factor": 1.0,
                     "id": "reading", "occupancy_mean": 1.333, "person_minutes": 20.0,
                     "scaled": "none", "utilisation_mean": 0.133}
                ]
            },
            "day": "2026-11-22",
            "district": "d1",
            "drift": {
                "lines": [
                    {"counter": "pc-entrance", "from": "outside", "in": 3, "out": 1,
                     "to": "lobby"},
                    {"counter": "pc-reading", "from": "lobby", "in": 2, "out": 0,
                     "to": "reading"}
                ],
                "rooms": [
                    {"clamped": 0, "id": "lobby", "residual": 0},
                    {"clamped": 0, "id": "reading", "residual": 2}
                ]
            },
            "hall": {
                "device_online_ratio": 1.0,
                "entries": 3,
                "exits": 1,
                "fevers": 0,
                "mask_off": 0,
                "member_visits": 0,
                "occupancy_mean": 1.667,
                "occupancy_peak": 3,
                "occupancy_peak_at": "2026-11-22T12:50:00Z",
                "person_minutes": 25.0,
                "service_visits": 2,
                "stranger_visits": 0,
                "unique_visitors": 0,
                "utilisation_mean": 0.033,
                "utilisation_peak": 0.06
            },
            "hall_id": "h-1",
            "kind": "situation_day",
            "msg_id": "h-1:situation_day:2026-11-22:r0",
            "open_from": "2026-11-22T00:00:00Z",
            "open_to": "2026-11-22T13:00:00Z",
            "peak_hour": "20:00",
            "rooms": [
                {"capacity": 40, "dwell_minutes_mean": 1.667, "entries": 3, "exits": 3,
                 "fevers": 0, "hotspot_rank": 2, "id": "lobby", "mask_off": 0,
                 "member_visits": 0, "occupancy_mean": 0.333, "occupancy_peak": 1,
                 "occupied_share": 0.333, "person_minutes": 5.0, "service_visits": 0,
                 "stranger_visits": 0, "unique_visitors": 0, "utilisation_mean": 0.008,
                 "utilisation_peak": 0.025},
                {"capacity": 10, "dwell_minutes_mean": 10.0, "entries": 2, "exits": 0,
                 "fevers": 0, "hotspot_rank": 1, "id": "reading", "mask_off": 0,
                 "member_visits": 0, "occupancy_mean": 1.333, "occupancy_peak": 2,
                 "occupied_share": 0.667, "person_minutes": 20.0, "service_visits": 2,
                 "stranger_visits": 0, "unique_visitors": 0, "utilisation_mean": 0.133,
                 "utilisation_peak": 0.2}
            ],
            "schema_version": 1
        }"#,
        );
    }
}
