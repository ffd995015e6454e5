//! Tests of the bookings downlink: parsing and validation of the centre's message (unit cases
//! per rejection reason, proptests that arbitrary bytes and JSON never panic and that a valid
//! booking survives any invalid neighbour) and the `BookingTracker`'s held / unbooked rules.

use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::occupancy::{MinuteAggregate, MinuteRoom, Passages};

const NOW: &str = "2026-12-01T06:00:00Z";

fn now() -> Timestamp {
    NOW.parse().expect("a valid time")
}

fn at(minutes: i64) -> Timestamp {
    now() + SignedDuration::from_mins(minutes)
}

fn rules() -> Rules {
    Rules {
        hall_id: "h1".into(),
        rooms: vec![
            ("lobby".into(), 80, false),
            ("lecture".into(), 60, true),
            ("elderly".into(), 40, true),
        ],
    }
}

fn booking(id: &str, room: &str, from: i64, to: i64, expected: u64) -> Value {
    json!({
        "id": id,
        "room": room,
        "start": at(from).to_string(),
        "end": at(to).to_string(),
        "title": "Calligraphy class",
        "expected_attendance": expected,
    })
}

fn message(bookings: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({"schema_version": 1, "hall_id": "h1", "bookings": bookings}))
        .expect("json")
}

fn parse_ok(bookings: Vec<Value>) -> Parsed {
    parse(&message(bookings), &rules(), now()).expect("the message is accepted as a whole")
}

fn reason_of(item: Value) -> Rejection {
    let parsed = parse_ok(vec![item]);
    assert!(parsed.accepted.is_empty(), "should be rejected: {parsed:?}");
    parsed.rejected[0].reason.clone()
}

#[test]
fn a_valid_message_is_accepted_and_the_title_is_not_kept() {
    let parsed = parse_ok(vec![booking("b-17", "lecture", 0, 90, 25)]);
    assert!(parsed.rejected.is_empty());
    assert_eq!(
        parsed.accepted,
        vec![Booking {
            id: "b-17".into(),
            room: "lecture".into(),
            start: at(0),
            end: at(90),
            expected_attendance: 25,
        }]
    );
    let stored = serde_json::to_string(&parsed.accepted).expect("json");
    assert!(!stored.contains("Calligraphy"), "{stored}");
}

#[test]
fn whole_message_rejections_name_their_cause() {
    let r = rules();
    let p = |bytes: &[u8]| parse(bytes, &r, now()).expect_err("rejected as a whole");
    assert_eq!(p(b""), MessageRejected::Empty);
    assert!(matches!(p(b"{not json"), MessageRejected::NotJson(_)));
    assert_eq!(p(b"[1,2]"), MessageRejected::NotAnObject);
    assert!(matches!(
        p(&vec![b' '; MAX_MESSAGE_BYTES + 1]),
        MessageRejected::TooLarge { .. }
    ));
    assert_eq!(
        p(br#"{"schema_version":2,"hall_id":"h1","bookings":[]}"#),
        MessageRejected::UnknownSchemaVersion("2".into())
    );
    assert_eq!(
        p(br#"{"schema_version":1,"hall_id":"h2","bookings":[]}"#),
        MessageRejected::WrongHall("h2".into())
    );
    assert!(matches!(
        p(br#"{"schema_version":1,"hall_id":"h1"}"#),
        MessageRejected::Malformed(_)
    ));
    assert!(matches!(
        p(br#"{"schema_version":1,"hall_id":"h1","bookings":[],"extra":1}"#),
        MessageRejected::Malformed(_)
    ));
    // Small items, so the count and not the size is what is over.
    let many: Vec<Value> = (0..=MAX_BOOKINGS).map(|i| json!({ "id": i })).collect();
    assert_eq!(
        p(&message(many)),
        MessageRejected::TooMany {
            count: MAX_BOOKINGS + 1
        }
    );
}

#[test]
fn each_kind_of_bad_booking_is_rejected_with_its_reason() {
    let mut b = booking("b1", "lecture", 0, 60, 10);
    b["colour"] = json!("red");
    assert_eq!(reason_of(b), Rejection::UnknownField("colour".into()));
    assert_eq!(reason_of(json!(5)), Rejection::NotAnObject);
    assert_eq!(
        reason_of(booking("b1", "gym", 0, 60, 10)),
        Rejection::UnknownRoom("gym".into())
    );
    assert_eq!(
        reason_of(booking("b1", "lobby", 0, 60, 10)),
        Rejection::RoomNotBookable("lobby".into())
    );
    assert_eq!(
        reason_of(booking("b1", "lecture", 60, 60, 10)),
        Rejection::EndNotAfterStart
    );
    assert_eq!(
        reason_of(booking("b1", "lecture", 60, 0, 10)),
        Rejection::EndNotAfterStart
    );
    assert_eq!(
        reason_of(booking("b1", "lecture", 0, 24 * 60 + 1, 10)),
        Rejection::SlotTooLong
    );
    assert_eq!(
        reason_of(booking(
            "b1",
            "lecture",
            14 * 24 * 60 + 1,
            14 * 24 * 60 + 60,
            10
        )),
        Rejection::TooFarAhead
    );
    assert!(matches!(
        reason_of(booking("b1", "lecture", 0, 60, 0)),
        Rejection::BadAttendance { got: 0, .. }
    ));
    assert!(matches!(
        reason_of(booking("b1", "lecture", 0, 60, 601)),
        Rejection::BadAttendance { got: 601, .. }
    ));
    assert!(
        parse_ok(vec![booking("b1", "lecture", 0, 60, 600)])
            .rejected
            .is_empty()
    );
    assert_eq!(
        reason_of(booking("b 1", "lecture", 0, 60, 10)),
        Rejection::BadId
    );
    assert_eq!(
        reason_of(booking(&"x".repeat(65), "lecture", 0, 60, 10)),
        Rejection::BadId
    );
    assert_eq!(
        reason_of(booking("", "lecture", 0, 60, 10)),
        Rejection::BadId
    );
    let mut b = booking("b1", "lecture", 0, 60, 10);
    b["title"] = json!("t".repeat(201));
    assert_eq!(reason_of(b), Rejection::TitleTooLong);
    let mut b = booking("b1", "lecture", 0, 60, 10);
    b["title"] = json!(7);
    assert_eq!(reason_of(b), Rejection::WrongType("title"));
    let mut b = booking("b1", "lecture", 0, 60, 10);
    b["expected_attendance"] = json!("25");
    assert_eq!(reason_of(b), Rejection::WrongType("expected_attendance"));
    let mut b = booking("b1", "lecture", 0, 60, 10);
    b["expected_attendance"] = json!(2.5);
    assert_eq!(reason_of(b), Rejection::WrongType("expected_attendance"));
    let mut b = booking("b1", "lecture", 0, 60, 10);
    b["start"] = json!("2026-12-01 06:00");
    assert_eq!(reason_of(b), Rejection::BadTime("start"));
    let mut b = booking("b1", "lecture", 0, 60, 10);
    b["end"] = json!(1764568800);
    assert_eq!(reason_of(b), Rejection::WrongType("end"));
    let mut b = booking("b1", "lecture", 0, 60, 10);
    b.as_object_mut().expect("object").remove("room");
    assert_eq!(reason_of(b), Rejection::MissingField("room"));
}

#[test]
fn a_duplicate_id_and_an_overlap_reject_the_later_booking_only() {
    let parsed = parse_ok(vec![
        booking("b1", "lecture", 0, 60, 10),
        booking("b1", "elderly", 0, 60, 10),
        booking("b2", "lecture", 30, 90, 10),
        booking("b3", "lecture", 60, 120, 10),
        booking("b4", "elderly", 30, 90, 10),
    ]);
    let ids: Vec<&str> = parsed.accepted.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(ids, ["b1", "b3", "b4"]);
    let reasons: Vec<(usize, Rejection)> = parsed
        .rejected
        .iter()
        .map(|r| (r.index, r.reason.clone()))
        .collect();
    assert_eq!(
        reasons,
        [
            (1, Rejection::DuplicateId),
            (2, Rejection::Overlap("b1".into()))
        ]
    );
    assert_eq!(parsed.counts().get("overlap"), Some(&1));
}

#[test]
fn a_rejected_booking_without_an_id_is_named_by_its_position() {
    let mut b = booking("b1", "lecture", 0, 60, 10);
    b.as_object_mut().expect("object").remove("id");
    let parsed = parse_ok(vec![booking("b0", "lecture", 100, 160, 5), b]);
    assert_eq!(parsed.rejected[0].name(), "(no id, #1)");
    assert_eq!(parsed.rejected[0].reason, Rejection::MissingField("id"));
}

#[test]
fn a_hostile_id_is_escaped_and_cut_short_for_the_log() {
    let id = format!("evil\nWARN fake line{}", "x".repeat(100));
    let parsed = parse_ok(vec![booking(&id, "lecture", 0, 60, 10)]);
    let name = parsed.rejected[0].name();
    assert!(!name.contains('\n'), "{name}");
    assert!(name.chars().count() <= MAX_ID_CHARS + 1, "{name}");
}

/// Arbitrary JSON, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        ".{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("id"),
            Just("room"),
            Just("start"),
            Just("end"),
            Just("lecture"),
            Just(NOW)
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("id".to_string()),
                    Just("room".to_string()),
                    Just("start".to_string()),
                    Just("end".to_string()),
                    Just("expected_attendance".to_string()),
                    Just("title".to_string()),
                    "[a-z]{1,6}"
                ],
                inner,
                0..7
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A booking that is wrong on its own, by one of each way of being wrong.
fn invalid_booking() -> impl Strategy<Value = Value> {
    let base = |id: String| booking(&id, "elderly", 300, 360, 10);
    prop_oneof![
        json_value().prop_filter("not an object with all fields", |v| v
            .get("expected_attendance")
            .is_none()),
        "[a-z0-9]{1,8}".prop_map(move |id| {
            let mut b = base(id);
            b["room"] = json!("gym");
            b
        }),
        "[a-z0-9]{1,8}".prop_map(move |id| {
            let mut b = base(id);
            b["expected_attendance"] = json!(0);
            b
        }),
        "[a-z0-9]{1,8}".prop_map(move |id| {
            let mut b = base(id);
            b["end"] = b["start"].clone();
            b
        }),
        "[a-z0-9]{1,8}".prop_map(move |id| {
            let mut b = base(id);
            b["extra"] = json!(1);
            b
        }),
        // Even with the good booking's own id, room and slot: still wrong on its own.
        Just({
            let mut b = booking("good-1", "lecture", 0, 60, 10);
            b["room"] = json!("lobby");
            b
        }),
        Just({
            let mut b = booking("good-1", "lecture", 0, 60, 10);
            b["title"] = json!(["not", "a", "string"]);
            b
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse(&bytes, &rules(), now());
    }

    #[test]
    fn arbitrary_json_never_panics(value in json_value()) {
        let bytes = serde_json::to_vec(&value).expect("json");
        let _ = parse(&bytes, &rules(), now());
        let wrapped = message(vec![value]);
        let parsed = parse(&wrapped, &rules(), now());
        prop_assert!(parsed.is_ok(), "a message with one odd booking stays whole: {parsed:?}");
    }

    #[test]
    fn a_valid_booking_stays_accepted_whatever_invalid_ones_sit_beside_it(
        others in prop::collection::vec(invalid_booking(), 0..12),
        position in any::<prop::sample::Index>(),
    ) {
        let good = booking("good-1", "lecture", 0, 60, 10);
        let mut items = others.clone();
        items.insert(position.index(items.len() + 1), good);
        let parsed = parse_ok(items);
        let ids: Vec<&str> = parsed.accepted.iter().map(|b| b.id.as_str()).collect();
        prop_assert_eq!(ids, vec!["good-1"]);
        prop_assert_eq!(parsed.rejected.len(), others.len());
    }
}

// ---------------------------------------------------------------------------------------------
// The tracker.

fn settings() -> TrackerSettings {
    TrackerSettings {
        held_share: 0.5,
        unbooked_min_minutes: 15,
        bookable: vec!["lecture".into(), "elderly".into()],
    }
}

fn slot(id: &str, room: &str, from: i64, to: i64, expected: u32) -> Booking {
    Booking {
        id: id.into(),
        room: room.into(),
        start: at(from),
        end: at(to),
        expected_attendance: expected,
    }
}

/// Minute `m` (from NOW) with `(room, peak, mean)` for the rooms given, the others empty.
fn minute(m: i64, rooms: &[(&str, u64, f64)]) -> MinuteAggregate {
    MinuteAggregate {
        start: at(m),
        end: at(m + 1),
        rooms: ["lobby", "lecture", "elderly"]
            .iter()
            .map(|id| {
                let (peak, mean) = rooms
                    .iter()
                    .find(|r| r.0 == *id)
                    .map_or((0, 0.0), |r| (r.1, r.2));
                MinuteRoom {
                    id: (*id).into(),
                    entries: 0,
                    exits: 0,
                    occupancy_mean: mean,
                    occupancy_peak: peak,
                    passages: Passages::default(),
                }
            })
            .collect(),
    }
}

/// Feeds minutes `from..to` with the lecture room's peak given by `peak(m)` (mean = peak).
fn run(
    t: &mut BookingTracker,
    from: i64,
    to: i64,
    room: &str,
    peak: impl Fn(i64) -> u64,
) -> Vec<SituationReport> {
    let mut out = Vec::new();
    for m in from..to {
        let p = peak(m);
        out.extend(t.minute(&minute(m, &[(room, p, p as f64)]), &settings()));
    }
    out
}

fn booking_reports(out: &[SituationReport]) -> Vec<&BookingReport> {
    out.iter()
        .filter_map(|r| match r {
            SituationReport::Booking(b) => Some(b),
            SituationReport::Unbooked(_) => None,
        })
        .collect()
}

fn unbooked_reports(out: &[SituationReport]) -> Vec<&UnbookedUse> {
    out.iter()
        .filter_map(|r| match r {
            SituationReport::Unbooked(u) => Some(u),
            SituationReport::Booking(_) => None,
        })
        .collect()
}

#[test]
fn a_booking_whose_attendance_reaches_the_share_is_held_with_its_start_delay() {
    let mut t = BookingTracker::default();
    t.replace(vec![slot("b1", "lecture", 10, 40, 20)]);
    // People trickle in: 3 by minute 10, 10 (the threshold) at minute 17, 14 at the peak.
    let out = run(&mut t, 0, 45, "lecture", |m| match m {
        10..17 => 3,
        17..30 => 10,
        30..40 => 14,
        _ => 0,
    });
    let reports = booking_reports(&out);
    assert_eq!(reports.len(), 1, "{out:?}");
    let r = reports[0];
    assert_eq!(r.booking_id, "b1");
    assert!(r.held);
    assert_eq!(r.attendance, 14);
    assert!((r.attendance_share - 0.7).abs() < 1e-9);
    assert_eq!(r.start_delay_minutes, Some(7));
    let mean = (7.0 * 3.0 + 13.0 * 10.0 + 10.0 * 14.0) / 30.0;
    assert!(
        (r.occupancy_mean - mean).abs() < 1e-9,
        "{}",
        r.occupancy_mean
    );
    assert!(unbooked_reports(&out).is_empty());
}

#[test]
fn a_booking_below_the_share_is_not_held_and_has_no_start_delay() {
    let mut t = BookingTracker::default();
    t.replace(vec![slot("b1", "lecture", 0, 30, 20)]);
    let out = run(&mut t, 0, 30, "lecture", |_| 9);
    let r = booking_reports(&out)[0].clone();
    assert!(!r.held);
    assert_eq!(r.attendance, 9);
    assert_eq!(r.start_delay_minutes, None);
}

#[test]
fn the_report_comes_with_the_minute_in_which_the_slot_ends_and_only_once() {
    let mut t = BookingTracker::default();
    t.replace(vec![slot("b1", "lecture", 0, 3, 2)]);
    assert!(run(&mut t, 0, 2, "lecture", |_| 2).is_empty());
    assert_eq!(
        booking_reports(&run(&mut t, 2, 3, "lecture", |_| 2)).len(),
        1
    );
    // The centre re-publishes the same set: the booking is not reported again.
    t.replace(vec![slot("b1", "lecture", 0, 3, 2)]);
    assert!(booking_reports(&run(&mut t, 3, 10, "lecture", |_| 0)).is_empty());
}

#[test]
fn a_booking_that_arrives_after_its_slot_began_is_followed_from_then_on() {
    let mut t = BookingTracker::default();
    run(&mut t, 0, 20, "lecture", |_| 12);
    t.replace(vec![slot("b1", "lecture", 0, 30, 20)]);
    let out = run(&mut t, 20, 30, "lecture", |_| 12);
    let r = booking_reports(&out)[0].clone();
    assert!(r.held);
    // Already at the threshold when it arrived: the delay counts from the booked start.
    assert_eq!(r.start_delay_minutes, Some(20));
    assert!((r.occupancy_mean - 12.0).abs() < 1e-9);
    // The twenty minutes before it arrived were unbooked use, ended by the slot.
    let u = unbooked_reports(&out);
    assert_eq!(u.len(), 1, "{out:?}");
    assert_eq!((u[0].start, u[0].end), (at(0), at(20)));
}

#[test]
fn a_booking_replaced_mid_slot_keeps_what_its_slot_has_seen() {
    let mut t = BookingTracker::default();
    t.replace(vec![slot("b1", "lecture", 0, 30, 40)]);
    run(&mut t, 0, 15, "lecture", |m| if m < 5 { 2 } else { 12 });
    // The centre lowers the expected attendance and extends the slot mid-way.
    t.replace(vec![slot("b1", "lecture", 0, 45, 20)]);
    let out = run(&mut t, 15, 45, "lecture", |_| 8);
    let r = booking_reports(&out)[0].clone();
    assert_eq!(r.end, at(45));
    assert_eq!(r.expected_attendance, 20);
    assert_eq!(r.attendance, 12);
    assert!(r.held);
    assert_eq!(r.start_delay_minutes, Some(5));
    let mean = (5.0 * 2.0 + 10.0 * 12.0 + 30.0 * 8.0) / 45.0;
    assert!((r.occupancy_mean - mean).abs() < 1e-9);
}

#[test]
fn a_booking_cancelled_mid_slot_is_not_reported() {
    let mut t = BookingTracker::default();
    t.replace(vec![slot("b1", "lecture", 0, 30, 20)]);
    run(&mut t, 0, 10, "lecture", |_| 12);
    assert_eq!(t.replace(Vec::new()), vec!["b1".to_string()]);
    assert!(booking_reports(&run(&mut t, 10, 40, "lecture", |_| 0)).is_empty());
}

#[test]
fn a_slot_the_gateway_never_saw_is_not_reported() {
    let mut t = BookingTracker::default();
    t.replace(vec![slot("b1", "lecture", 0, 30, 20)]);
    assert!(run(&mut t, 40, 50, "lecture", |_| 0).is_empty());
}

#[test]
fn a_slot_reports_after_a_gap_in_the_minutes() {
    let mut t = BookingTracker::default();
    t.replace(vec![slot("b1", "lecture", 0, 30, 20)]);
    run(&mut t, 0, 10, "lecture", |_| 11);
    // The gateway was down from minute 10 to 60.
    let out = run(&mut t, 60, 61, "lecture", |_| 0);
    let r = booking_reports(&out)[0].clone();
    assert!(r.held);
    assert!((r.occupancy_mean - 11.0).abs() < 1e-9);
}

#[test]
fn unbooked_use_is_reported_when_it_ends_if_it_lasted_long_enough() {
    let mut t = BookingTracker::default();
    // 14 minutes: too short. Then 15 minutes: reported when the room empties.
    let out = run(&mut t, 0, 40, "elderly", |m| match m {
        0..14 => 2,
        20..35 => 3,
        _ => 0,
    });
    let u = unbooked_reports(&out);
    assert_eq!(u.len(), 1, "{out:?}");
    assert_eq!(u[0].room, "elderly");
    assert_eq!((u[0].start, u[0].end), (at(20), at(35)));
    assert_eq!(u[0].occupancy_peak, 3);
    assert!((u[0].person_minutes - 45.0).abs() < 1e-9);
}

#[test]
fn occupancy_inside_a_slot_or_in_a_room_that_is_not_bookable_is_not_unbooked_use() {
    let mut t = BookingTracker::default();
    t.replace(vec![slot("b1", "elderly", 0, 60, 5)]);
    let mut out = run(&mut t, 0, 60, "elderly", |_| 4);
    out.extend(run(&mut t, 0, 60, "lobby", |_| 4));
    assert!(unbooked_reports(&out).is_empty(), "{out:?}");
}

#[test]
fn unbooked_use_ends_where_a_slot_begins() {
    let mut t = BookingTracker::default();
    t.replace(vec![slot("b1", "elderly", 20, 60, 5)]);
    let out = run(&mut t, 0, 30, "elderly", |_| 4);
    let u = unbooked_reports(&out);
    assert_eq!(u.len(), 1);
    assert_eq!((u[0].start, u[0].end), (at(0), at(20)));
}

#[test]
fn a_day_that_closes_with_an_open_episode_reports_it_at_the_close() {
    let mut t = BookingTracker::default();
    assert!(run(&mut t, 0, 20, "lecture", |_| 1).is_empty());
    let out = t.day_closed(at(20), &settings());
    let u = unbooked_reports(&out);
    assert_eq!(u.len(), 1);
    assert_eq!((u[0].start, u[0].end), (at(0), at(20)));
    // Nothing is left open for the next day.
    assert!(t.day_closed(at(24 * 60), &settings()).is_empty());
}

#[test]
fn the_tracker_round_trips_through_its_stored_form() {
    let mut t = BookingTracker::default();
    t.replace(vec![
        slot("b1", "lecture", 0, 30, 20),
        slot("b2", "elderly", 40, 50, 3),
    ]);
    run(&mut t, 0, 10, "lecture", |_| 7);
    run(&mut t, 10, 12, "elderly", |_| 1);
    let stored = serde_json::to_vec(&t).expect("serialises");
    let back: BookingTracker = serde_json::from_slice(&stored).expect("deserialises");
    assert_eq!(back, t);
}

#[test]
fn the_held_threshold_is_not_fooled_by_floating_point() {
    let s = TrackerSettings {
        held_share: 0.1,
        ..settings()
    };
    assert_eq!(s.threshold(30), 3);
    assert_eq!(settings().threshold(25), 13);
    assert_eq!(settings().threshold(1), 1);
}
