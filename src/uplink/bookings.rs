//! Payloads of the bookings part of contract v1: `situation/booking` (kind `booking_report`)
//! when a booking's slot ends, and `situation/unbooked` (kind `unbooked_use`) when a bookable
//! room's use outside every slot ends. Built from the [`crate::bookings`] tracker's reports
//! and queued in the outbox like the aggregates (QoS 1, not retained).
//!
//! The fields are the allowlist (`docs/schema/booking_report.schema.json`,
//! `unbooked_use.schema.json`): never the booking's title, which can name a person. The
//! `msg_id` comes from the hall, the kind and the booking (or room and start) only, so a
//! re-send is the same message.

use serde::Serialize;

use super::payload::Envelope;
use crate::bookings::{BookingReport, SituationReport, UnbookedUse};
use crate::config::Config;
use crate::format::{rfc3339, round3};
use crate::outbox::{OutMessage, Priority};

/// Topic levels below the hall's base topic.
pub const TOPIC_BOOKING: &str = "situation/booking";
pub const TOPIC_UNBOOKED: &str = "situation/unbooked";

pub const KIND_BOOKING_REPORT: &str = "booking_report";
pub const KIND_UNBOOKED_USE: &str = "unbooked_use";

#[derive(Debug, Serialize)]
struct BookingPayload<'a> {
    #[serde(flatten)]
    envelope: Envelope,
    booking_id: &'a str,
    room: &'a str,
    start: String,
    end: String,
    expected_attendance: u32,
    held: bool,
    attendance: u64,
    attendance_share: f64,
    start_delay_minutes: Option<u32>,
    occupancy_mean: f64,
}

#[derive(Debug, Serialize)]
struct UnbookedPayload<'a> {
    #[serde(flatten)]
    envelope: Envelope,
    room: &'a str,
    start: String,
    end: String,
    occupancy_peak: u64,
    person_minutes: f64,
}

/// The outbox message for one tracker report.
pub fn report_message(config: &Config, report: &SituationReport, clock_synced: bool) -> OutMessage {
    match report {
        SituationReport::Booking(b) => booking_message(config, b, clock_synced),
        SituationReport::Unbooked(u) => unbooked_message(config, u, clock_synced),
    }
}

pub fn booking_message(config: &Config, r: &BookingReport, clock_synced: bool) -> OutMessage {
    let msg_id = format!(
        "{}:{KIND_BOOKING_REPORT}:{}:r0",
        config.hall.id, r.booking_id
    );
    let payload = BookingPayload {
        envelope: Envelope::new(config, KIND_BOOKING_REPORT, msg_id.clone(), clock_synced),
        booking_id: &r.booking_id,
        room: &r.room,
        start: rfc3339(r.start),
        end: rfc3339(r.end),
        expected_attendance: r.expected_attendance,
        held: r.held,
        attendance: r.attendance,
        attendance_share: round3(r.attendance_share),
        start_delay_minutes: r.start_delay_minutes,
        occupancy_mean: round3(r.occupancy_mean),
    };
    message(KIND_BOOKING_REPORT, TOPIC_BOOKING, msg_id, &payload)
}

pub fn unbooked_message(config: &Config, u: &UnbookedUse, clock_synced: bool) -> OutMessage {
    let msg_id = format!(
        "{}:{KIND_UNBOOKED_USE}:{}:{}:r0",
        config.hall.id,
        u.room,
        u.start.strftime("%Y%m%dT%H%MZ")
    );
    let payload = UnbookedPayload {
        envelope: Envelope::new(config, KIND_UNBOOKED_USE, msg_id.clone(), clock_synced),
        room: &u.room,
        start: rfc3339(u.start),
        end: rfc3339(u.end),
        occupancy_peak: u.occupancy_peak,
        person_minutes: round3(u.person_minutes),
    };
    message(KIND_UNBOOKED_USE, TOPIC_UNBOOKED, msg_id, &payload)
}

fn message<T: Serialize>(kind: &str, topic: &str, msg_id: String, payload: &T) -> OutMessage {
    OutMessage {
        kind: kind.into(),
        topic: topic.into(),
        retain: false,
        msg_id,
        // Plain structs of strings and numbers always serialise.
        payload: serde_json::to_vec(payload).expect("bookings payloads are plain data"),
        priority: Priority::Normal,
        // Not an aggregate bin: roll-ups leave it alone.
        bin_start: None,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use jiff::Timestamp;
    use serde_json::Value;

    use super::*;
    use crate::uplink::payload::tests::assert_pinned;

    fn config() -> Config {
        crate::config::parse(
            r#"
[hall]
id = "h1"
district = "d1"
[uplink]
broker = "mqtt://127.0.0.1:1883"
[[rooms]]
id = "lecture"
capacity = 60
bookable = true
"#,
            Path::new("."),
            &crate::config::Overrides::default(),
        )
        .expect("valid config")
    }

    fn t(s: &str) -> Timestamp {
        s.parse().expect("time")
    }

    #[test]
    fn a_booking_report_has_the_contract_fields_and_a_deterministic_id() {
        let report = BookingReport {
            booking_id: "b-17".into(),
            room: "lecture".into(),
            start: t("2026-12-01T06:00:00Z"),
            end: t("2026-12-01T07:30:00Z"),
            expected_attendance: 25,
            held: true,
            attendance: 19,
            attendance_share: 0.76,
            start_delay_minutes: Some(4),
            occupancy_mean: 15.123456,
        };
        let m = booking_message(&config(), &report, true);
        assert_eq!(m.msg_id, "h1:booking_report:b-17:r0");
        assert_eq!(m.topic, "situation/booking");
        let v: Value = serde_json::from_slice(&m.payload).expect("json");
        let mut keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "attendance",
                "attendance_share",
                "booking_id",
                "clock_synced",
                "district",
                "end",
                "expected_attendance",
                "hall_id",
                "held",
                "kind",
                "msg_id",
                "occupancy_mean",
                "room",
                "schema_version",
                "start",
                "start_delay_minutes"
            ]
        );
        assert_eq!(v["start"], "2026-12-01T06:00:00Z");
        assert_eq!(v["occupancy_mean"], 15.123);
        assert_eq!(
            booking_message(&config(), &report, true),
            m,
            "same report, same bytes"
        );
    }

    #[test]
    fn an_unbooked_use_is_named_by_room_and_start_minute() {
        let u = UnbookedUse {
            room: "lecture".into(),
            start: t("2026-12-01T06:05:00Z"),
            end: t("2026-12-01T06:40:00Z"),
            occupancy_peak: 3,
            person_minutes: 70.0004,
        };
        let m = unbooked_message(&config(), &u, false);
        assert_eq!(m.msg_id, "h1:unbooked_use:lecture:20261201T0605Z:r0");
        let v: Value = serde_json::from_slice(&m.payload).expect("json");
        assert_eq!(v["kind"], "unbooked_use");
        assert_eq!(v["person_minutes"], 70.0);
        assert_eq!(v["clock_synced"], false);
    }

    #[test]
    fn the_booking_report_payloads_are_the_pinned_json() {
        let held = BookingReport {
            booking_id: "b-17".into(),
            room: "lecture".into(),
            start: t("2026-12-01T06:00:00Z"),
            end: t("2026-12-01T07:30:00Z"),
            expected_attendance: 25,
            held: true,
            attendance: 19,
            attendance_share: 0.76,
            start_delay_minutes: Some(4),
            occupancy_mean: 15.123456,
        };
        let not_held = BookingReport {
            booking_id: "b-18".into(),
            held: false,
            attendance: 0,
            attendance_share: 0.0,
            start_delay_minutes: None,
            occupancy_mean: 0.0,
            ..held.clone()
        };
        for (report, pinned) in [
            (
                held,
                r#"{
            "attendance": 19,
            "attendance_share": 0.76,
            "booking_id": "b-17",
            "clock_synced": true,
            "district": "d1",
            "end": "2026-12-01T07:30:00Z",
            "expected_attendance": 25,
            "hall_id": "h1",
            "held": true,
            "kind": "booking_report",
            "msg_id": "h1:booking_report:b-17:r0",
            "occupancy_mean": 15.123,
            "room": "lecture",
            "schema_version": 1,
            "start": "2026-12-01T06:00:00Z",
            "start_delay_minutes": 4
        }"#,
            ),
            (
                not_held,
                r#"{
            "attendance": 0,
            "attendance_share": 0.0,
            "booking_id": "b-18",
            "clock_synced": true,
            "district": "d1",
            "end": "2026-12-01T07:30:00Z",
            "expected_attendance": 25,
            "hall_id": "h1",
            "held": false,
            "kind": "booking_report",
            "msg_id": "h1:booking_report:b-18:r0",
            "occupancy_mean": 0.0,
            "room": "lecture",
            "schema_version": 1,
            "start": "2026-12-01T06:00:00Z",
            "start_delay_minutes": null
        }"#,
            ),
        ] {
            let m = report_message(&config(), &SituationReport::Booking(report), true);
            assert_pinned(&m.payload, pinned);
        }
    }

    #[test]
    fn the_unbooked_use_payload_is_the_pinned_json() {
        let u = UnbookedUse {
            room: "lecture".into(),
            start: t("2026-12-01T06:05:00Z"),
            end: t("2026-12-01T06:40:00.5Z"),
            occupancy_peak: 3,
            person_minutes: 70.0004,
        };
        let m = report_message(&config(), &SituationReport::Unbooked(u), false);
        assert_pinned(
            &m.payload,
            r#"{
            "clock_synced": false,
            "district": "d1",
            "end": "2026-12-01T06:40:00.5Z",
            "hall_id": "h1",
            "kind": "unbooked_use",
            "msg_id": "h1:unbooked_use:lecture:20261201T0605Z:r0",
            "occupancy_peak": 3,
            "person_minutes": 70.0,
            "room": "lecture",
            "schema_version": 1,
            "start": "2026-12-01T06:05:00Z"
        }"#,
        );
    }
}
