//! Bookings (活动开展): the room bookings the centre publishes on the retained downlink
//! topic `{base}/{situation.bookings_topic}`, validated here, and what became of them.
//!
//! ```text
//! centre ──retained publish──► uplink ──bytes (bounded)──► core loop ──► parse (here)
//!                                                              │            │ accepted set
//!                      outbox ◄── booking_report / unbooked_use ◄── BookingTracker ◄── MinuteClosed
//! ```
//!
//! Pure: no I/O, no clock (`now` is passed in). [`parse`] turns one downlink message into
//! the set of accepted bookings, which replaces the stored set, and the list of rejected
//! ones with their reasons. A message that cannot be trusted as a whole — not JSON, over
//! [`MAX_MESSAGE_BYTES`], for another hall, of an unknown `schema_version`, not an object,
//! over [`MAX_BOOKINGS`] — is rejected whole ([`MessageRejected`]) and the stored set stays.
//! A booking that is wrong on its own is dropped alone ([`Rejection`]); the rest stand. An
//! order rule keeps that local: duplicate ids and overlaps are judged against the bookings
//! accepted before it in the message, so a booking that is wrong on its own never pushes
//! out a good one.
//!
//! The booking's `title` is checked (type and length) and then dropped: it can name a person,
//! the centre has it anyway, and nothing here needs it, so it is neither stored nor sent.
//!
//! [`tracker`] follows each accepted booking's slot minute by minute and reports it.

pub mod tracker;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::Config;

pub use tracker::{BookingReport, BookingTracker, SituationReport, TrackerSettings, UnbookedUse};

/// The `schema_version` of the downlink this gateway understands.
pub const SCHEMA_VERSION: u64 = 1;
/// Largest downlink message accepted; larger ones are dropped before parsing.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Most bookings in one message (a hall's fortnight, generously).
pub const MAX_BOOKINGS: usize = 500;
/// Longest slot.
pub const MAX_SLOT: SignedDuration = SignedDuration::from_hours(24);
/// Furthest ahead a slot may start.
pub const MAX_LEAD: SignedDuration = SignedDuration::from_hours(14 * 24);
/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest booking id, in characters.
pub const MAX_ID_CHARS: usize = 64;
/// An expected attendance above this many times the room's capacity is a typo.
pub const MAX_ATTENDANCE_PER_CAPACITY: u64 = 10;

/// The fields a booking may have.
const BOOKING_FIELDS: &[&str] = &["id", "room", "start", "end", "title", "expected_attendance"];
/// The fields a message may have.
const MESSAGE_FIELDS: &[&str] = &["schema_version", "hall_id", "bookings"];

/// One accepted booking, as stored (no title).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Booking {
    pub id: String,
    /// A bookable room's id.
    pub room: String,
    pub start: Timestamp,
    pub end: Timestamp,
    pub expected_attendance: u32,
}

impl Booking {
    /// Whether the slot overlaps `[from, to)`.
    pub fn overlaps(&self, from: Timestamp, to: Timestamp) -> bool {
        self.start < to && from < self.end
    }
}

/// What a booking is checked against: the hall and its rooms, from the config.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    pub hall_id: String,
    /// (room id, capacity, bookable), in config order.
    pub rooms: Vec<(String, u32, bool)>,
}

impl Rules {
    pub fn from_config(config: &Config) -> Self {
        Rules {
            hall_id: config.hall.id.clone(),
            rooms: config
                .rooms
                .iter()
                .map(|r| (r.id.clone(), r.capacity, r.bookable))
                .collect(),
        }
    }
}

/// Why a whole message was rejected; the stored set stays.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageRejected {
    #[error("the message is empty (the centre cleared its retained bookings)")]
    Empty,
    #[error("the message is {bytes} bytes, over the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge { bytes: usize },
    #[error("the message is not JSON: {0}")]
    NotJson(String),
    #[error("the message is not a JSON object")]
    NotAnObject,
    #[error("schema_version {0} is not understood (this gateway reads version {SCHEMA_VERSION})")]
    UnknownSchemaVersion(String),
    #[error("the message is for hall {0}, not this one")]
    WrongHall(String),
    #[error("the message has {count} bookings, over the limit of {MAX_BOOKINGS}")]
    TooMany { count: usize },
    #[error("the message is malformed: {0}")]
    Malformed(String),
}

impl MessageRejected {
    /// A closed label, for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            MessageRejected::Empty => "empty",
            MessageRejected::TooLarge { .. } => "too_large",
            MessageRejected::NotJson(_) => "not_json",
            MessageRejected::NotAnObject => "not_an_object",
            MessageRejected::UnknownSchemaVersion(_) => "unknown_schema_version",
            MessageRejected::WrongHall(_) => "wrong_hall",
            MessageRejected::TooMany { .. } => "too_many",
            MessageRejected::Malformed(_) => "malformed",
        }
    }
}

/// Why one booking was rejected; the others stand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the booking is not a JSON object")]
    NotAnObject,
    #[error("unknown field {0}")]
    UnknownField(String),
    #[error("field {0} is missing")]
    MissingField(&'static str),
    #[error("field {0} has the wrong type")]
    WrongType(&'static str),
    #[error("the id must be 1 to {MAX_ID_CHARS} characters of letters, digits, '-', '_' and '.'")]
    BadId,
    #[error("the id is already used by an earlier booking in the message")]
    DuplicateId,
    #[error("room {0} is not a room of this hall")]
    UnknownRoom(String),
    #[error("room {0} is not bookable (rooms[].bookable)")]
    RoomNotBookable(String),
    #[error("{0} is not an RFC 3339 time")]
    BadTime(&'static str),
    #[error("the slot ends before or when it starts")]
    EndNotAfterStart,
    #[error("the slot is longer than 24 hours")]
    SlotTooLong,
    #[error("the slot starts more than 14 days from now")]
    TooFarAhead,
    #[error(
        "expected_attendance {got} is 0 or over {MAX_ATTENDANCE_PER_CAPACITY} × the room's capacity ({capacity})"
    )]
    BadAttendance { got: u64, capacity: u32 },
    #[error("the title is longer than {MAX_TITLE_CHARS} characters")]
    TitleTooLong,
    #[error("the slot overlaps booking {0} of the same room")]
    Overlap(String),
}

impl Rejection {
    /// A closed label, for logs and the `reason` label of the metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Rejection::NotAnObject => "not_an_object",
            Rejection::UnknownField(_) => "unknown_field",
            Rejection::MissingField(_) => "missing_field",
            Rejection::WrongType(_) => "wrong_type",
            Rejection::BadId => "bad_id",
            Rejection::DuplicateId => "duplicate_id",
            Rejection::UnknownRoom(_) => "unknown_room",
            Rejection::RoomNotBookable(_) => "room_not_bookable",
            Rejection::BadTime(_) => "bad_time",
            Rejection::EndNotAfterStart => "end_not_after_start",
            Rejection::SlotTooLong => "slot_too_long",
            Rejection::TooFarAhead => "too_far_ahead",
            Rejection::BadAttendance { .. } => "bad_attendance",
            Rejection::TitleTooLong => "title_too_long",
            Rejection::Overlap(_) => "overlap",
        }
    }

    /// Every label, for metrics that list each reason from the start.
    pub const LABELS: &'static [&'static str] = &[
        "not_an_object",
        "unknown_field",
        "missing_field",
        "wrong_type",
        "bad_id",
        "duplicate_id",
        "unknown_room",
        "room_not_bookable",
        "bad_time",
        "end_not_after_start",
        "slot_too_long",
        "too_far_ahead",
        "bad_attendance",
        "title_too_long",
        "overlap",
    ];
}

/// One rejected booking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Position in the message's `bookings` array.
    pub index: usize,
    /// The id as sent, made safe to log (escaped, cut short); `None` when it had none.
    pub id: Option<String>,
    pub reason: Rejection,
}

impl Rejected {
    /// The booking as a log names it: its id, or its position when it has none.
    pub fn name(&self) -> String {
        self.id
            .clone()
            .unwrap_or_else(|| format!("(no id, #{})", self.index))
    }
}

/// A message that was accepted as a whole: its bookings, each accepted or rejected.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parsed {
    /// In message order; these replace the stored set.
    pub accepted: Vec<Booking>,
    pub rejected: Vec<Rejected>,
}

impl Parsed {
    /// Rejections by reason label.
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        let mut counts = BTreeMap::new();
        for r in &self.rejected {
            *counts.entry(r.reason.label()).or_insert(0) += 1;
        }
        counts
    }

    /// One WARN per rejected booking, then one INFO for the message.
    pub fn log(&self) {
        for r in &self.rejected {
            tracing::warn!(
                booking_id = %r.name(),
                index = r.index,
                reason = %r.reason.label(),
                detail = %r.reason,
                "rejected a booking from the centre; the other bookings are not affected"
            );
        }
        let (accepted, rejected) = (self.accepted.len(), self.rejected.len());
        tracing::info!(
            accepted,
            rejected,
            "accepted {accepted} bookings, rejected {rejected}; they replace the stored set"
        );
    }
}

/// Parses and validates one downlink message as of `now`.
pub fn parse(bytes: &[u8], rules: &Rules, now: Timestamp) -> Result<Parsed, MessageRejected> {
    if bytes.is_empty() {
        return Err(MessageRejected::Empty);
    }
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(MessageRejected::TooLarge { bytes: bytes.len() });
    }
    // serde_json limits nesting depth, so hostile input cannot exhaust the stack.
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| MessageRejected::NotJson(short(&e.to_string(), 120)))?;
    let Value::Object(message) = value else {
        return Err(MessageRejected::NotAnObject);
    };
    match message.get("schema_version") {
        Some(Value::Number(n)) if n.as_u64() == Some(SCHEMA_VERSION) => {}
        Some(other) => {
            return Err(MessageRejected::UnknownSchemaVersion(short(
                &other.to_string(),
                40,
            )));
        }
        None => {
            return Err(MessageRejected::Malformed(
                "schema_version is missing".into(),
            ));
        }
    }
    match message.get("hall_id") {
        Some(Value::String(h)) if *h == rules.hall_id => {}
        Some(Value::String(h)) => return Err(MessageRejected::WrongHall(safe_text(h, 64))),
        Some(_) => return Err(MessageRejected::Malformed("hall_id is not a string".into())),
        None => return Err(MessageRejected::Malformed("hall_id is missing".into())),
    }
    if let Some(key) = message
        .keys()
        .find(|k| !MESSAGE_FIELDS.contains(&k.as_str()))
    {
        return Err(MessageRejected::Malformed(format!(
            "unknown field {}",
            safe_text(key, 40)
        )));
    }
    let bookings = match message.get("bookings") {
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(MessageRejected::Malformed(
                "bookings is not an array".into(),
            ));
        }
        None => return Err(MessageRejected::Malformed("bookings is missing".into())),
    };
    if bookings.len() > MAX_BOOKINGS {
        return Err(MessageRejected::TooMany {
            count: bookings.len(),
        });
    }
    let mut parsed = Parsed::default();
    for (index, item) in bookings.iter().enumerate() {
        let id = item
            .get("id")
            .and_then(Value::as_str)
            .map(|id| safe_text(id, MAX_ID_CHARS));
        match check(item, rules, now, &parsed.accepted) {
            Ok(booking) => parsed.accepted.push(booking),
            Err(reason) => parsed.rejected.push(Rejected { index, id, reason }),
        }
    }
    Ok(parsed)
}

/// Checks one booking against the rules and against those `accepted` before it.
fn check(
    item: &Value,
    rules: &Rules,
    now: Timestamp,
    accepted: &[Booking],
) -> Result<Booking, Rejection> {
    let Value::Object(b) = item else {
        return Err(Rejection::NotAnObject);
    };
    if let Some(key) = b.keys().find(|k| !BOOKING_FIELDS.contains(&k.as_str())) {
        return Err(Rejection::UnknownField(safe_text(key, 40)));
    }
    let id = string(b, "id")?;
    if id.is_empty()
        || id.chars().count() > MAX_ID_CHARS
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(Rejection::BadId);
    }
    let room = string(b, "room")?;
    let Some(&(_, capacity, bookable)) = rules.rooms.iter().find(|(r, _, _)| r == room) else {
        return Err(Rejection::UnknownRoom(safe_text(room, 40)));
    };
    if !bookable {
        return Err(Rejection::RoomNotBookable(room.to_string()));
    }
    let start = time(b, "start")?;
    let end = time(b, "end")?;
    if end <= start {
        return Err(Rejection::EndNotAfterStart);
    }
    if end.duration_since(start) > MAX_SLOT {
        return Err(Rejection::SlotTooLong);
    }
    if start.duration_since(now) > MAX_LEAD {
        return Err(Rejection::TooFarAhead);
    }
    let expected = match b.get("expected_attendance") {
        None => return Err(Rejection::MissingField("expected_attendance")),
        Some(v) => v
            .as_u64()
            .ok_or(Rejection::WrongType("expected_attendance"))?,
    };
    if expected == 0 || expected > u64::from(capacity) * MAX_ATTENDANCE_PER_CAPACITY {
        return Err(Rejection::BadAttendance {
            got: expected,
            capacity,
        });
    }
    match b.get("title") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if t.chars().count() > MAX_TITLE_CHARS => {
            return Err(Rejection::TitleTooLong);
        }
        Some(Value::String(_)) => {}
        Some(_) => return Err(Rejection::WrongType("title")),
    }
    if accepted.iter().any(|a| a.id == id) {
        return Err(Rejection::DuplicateId);
    }
    if let Some(other) = accepted
        .iter()
        .find(|a| a.room == room && a.overlaps(start, end))
    {
        return Err(Rejection::Overlap(other.id.clone()));
    }
    Ok(Booking {
        id: id.to_string(),
        room: room.to_string(),
        start,
        end,
        // Bounded by 10 × a u32 capacity above; saturate rather than trust that forever.
        expected_attendance: u32::try_from(expected).unwrap_or(u32::MAX),
    })
}

fn string<'a>(b: &'a Map<String, Value>, field: &'static str) -> Result<&'a str, Rejection> {
    match b.get(field) {
        None => Err(Rejection::MissingField(field)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(Rejection::WrongType(field)),
    }
}

fn time(b: &Map<String, Value>, field: &'static str) -> Result<Timestamp, Rejection> {
    let text = string(b, field)?;
    // RFC 3339 proper: a date, 'T', a time and an offset. jiff also reads a few looser forms;
    // the contract does not promise them to the centre, so they are refused.
    let bytes = text.as_bytes();
    let rfc3339 = bytes.len() >= 20
        && matches!(bytes[10], b'T' | b't')
        && (matches!(bytes[bytes.len() - 1], b'Z' | b'z')
            || matches!(bytes[bytes.len() - 6], b'+' | b'-'));
    if !rfc3339 {
        return Err(Rejection::BadTime(field));
    }
    text.parse::<Timestamp>()
        .map_err(|_| Rejection::BadTime(field))
}

/// Text from the centre made safe for a log line: escaped and cut to `max` characters.
fn safe_text(text: &str, max: usize) -> String {
    let escaped: String = text.escape_debug().collect();
    short(&escaped, max)
}

fn short(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(max).collect();
        cut.push('…');
        cut
    }
}

impl fmt::Display for Booking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}, {} – {})",
            self.id, self.room, self.start, self.end
        )
    }
}

/// Bookings received since start, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BookingCounts {
    /// Messages accepted as a whole.
    pub messages_accepted: u64,
    /// Messages rejected as a whole, by [`MessageRejected::label`].
    pub messages_rejected: BTreeMap<&'static str, u64>,
    /// Bookings accepted (summed over messages).
    pub accepted: u64,
    /// Bookings rejected, by [`Rejection::label`].
    pub rejected: BTreeMap<&'static str, u64>,
    /// Bookings in the stored set now.
    pub stored: u64,
}

/// The core loop's bookings: the rules from the config, the tracker (with the accepted set)
/// and the counts. It logs, as the engine does; it does no I/O.
#[derive(Debug, Clone)]
pub struct Bookings {
    rules: Rules,
    settings: TrackerSettings,
    tracker: BookingTracker,
    counts: BookingCounts,
}

impl Bookings {
    /// Resumes from the stored tracker, when there is one and it reads.
    pub fn new(config: &Config, stored: Option<&[u8]>) -> Self {
        let tracker = stored
            .and_then(|bytes| {
                serde_json::from_slice::<BookingTracker>(bytes)
                    .map_err(|error| {
                        tracing::error!(
                            %error,
                            "the stored bookings are unreadable; they are gone until the centre's retained bookings arrive again"
                        );
                    })
                    .ok()
            })
            .unwrap_or_default();
        let counts = BookingCounts {
            stored: tracker.bookings().len() as u64,
            ..BookingCounts::default()
        };
        Bookings {
            rules: Rules::from_config(config),
            settings: TrackerSettings::from_config(config),
            tracker,
            counts,
        }
    }

    pub fn tracker(&self) -> &BookingTracker {
        &self.tracker
    }

    pub fn counts(&self) -> &BookingCounts {
        &self.counts
    }

    /// The tracker as stored in the outbox.
    pub fn stored_form(&self) -> Vec<u8> {
        serde_json::to_vec(&self.tracker).expect("the bookings tracker is plain data")
    }

    /// One downlink message: validated, logged, counted; an accepted message replaces the
    /// set. True when the set changed.
    pub fn receive(&mut self, bytes: &[u8], now: Timestamp) -> bool {
        match parse(bytes, &self.rules, now) {
            Ok(parsed) => {
                parsed.log();
                self.counts.messages_accepted += 1;
                self.counts.accepted += parsed.accepted.len() as u64;
                for (reason, n) in parsed.counts() {
                    *self.counts.rejected.entry(reason).or_insert(0) += n;
                }
                for id in self.tracker.replace(parsed.accepted) {
                    tracing::info!(
                        booking_id = %id,
                        "a booking whose slot was in progress is no longer in the centre's set (cancelled or moved); it will not be reported"
                    );
                }
                self.counts.stored = self.tracker.bookings().len() as u64;
                true
            }
            Err(MessageRejected::Empty) => {
                tracing::info!(
                    stored = self.tracker.bookings().len(),
                    "the centre cleared its retained bookings message; the stored bookings stay until a new set arrives"
                );
                false
            }
            Err(error) => {
                *self
                    .counts
                    .messages_rejected
                    .entry(error.label())
                    .or_insert(0) += 1;
                tracing::warn!(
                    %error,
                    reason = %error.label(),
                    stored = self.tracker.bookings().len(),
                    "rejected a bookings message from the centre as a whole; the stored bookings stay"
                );
                false
            }
        }
    }

    /// A closed minute; what it ended.
    pub fn minute(&mut self, agg: &crate::occupancy::MinuteAggregate) -> Vec<SituationReport> {
        self.tracker.minute(agg, &self.settings)
    }

    /// The day closed at `at`; the unbooked episodes it ended.
    pub fn day_closed(&mut self, at: Timestamp) -> Vec<SituationReport> {
        self.tracker.day_closed(at, &self.settings)
    }
}
