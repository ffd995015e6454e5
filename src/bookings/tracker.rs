//! The booking tracker: follows each accepted booking's slot and the bookable rooms' use
//! outside every slot, one closed minute at a time, and says what happened when it is over.
//!
//! ```text
//! EngineOutput::MinuteClosed ──► BookingTracker::minute ──► BookingReport / UnbookedUse
//! EngineOutput::DayClosed    ──► BookingTracker::day_closed ──► UnbookedUse (open episodes)
//! downlink (parsed)          ──► BookingTracker::replace
//! ```
//!
//! Pure and serialisable: the whole tracker (the accepted set with it) is written to the
//! outbox with each commit, so a restart neither forgets the bookings nor reports one twice.
//! Everything is at minute resolution: a minute belongs to a slot when it overlaps it.
//!
//! - **Attendance** is the peak occupancy of the slot's minutes, **held** means attendance ≥
//!   `held_share × expected_attendance`, **start delay** is the whole minutes from the slot's
//!   start to the first minute whose peak reached that threshold (none if it never did), and
//!   **occupancy_mean** is over the slot's minutes the gateway saw.
//! - A booking that arrives after its slot began is followed from then on; its start delay
//!   counts from the booked start, so it is at least the time already gone. A slot the
//!   gateway saw no minute of (it arrived after the end, or the gateway was down throughout)
//!   is not reported: there is nothing to say.
//! - A new message replaces the set. A slot being followed keeps what it has seen if its
//!   booking is still there for the same room (times and expected attendance may change); a
//!   booking that disappeared was cancelled and is not reported.
//! - **Unbooked use**: a run of consecutive minutes with peak occupancy ≥ 1 in a bookable
//!   room, none overlapping a slot of that room, reported once it ends (a minute with nobody,
//!   a slot begins, a gap in the minutes) or at the day's close, if it lasted at least
//!   `unbooked_min_minutes`.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::Booking;
use crate::config::Config;
use crate::occupancy::{MinuteAggregate, MinuteRoom};

/// How long a reported booking's id is remembered, so the same booking in a later message
/// (the centre re-publishes the whole set) is not reported again: past the furthest a slot can
/// reach.
const REPORTED_KEPT: SignedDuration = SignedDuration::from_hours(16 * 24);

/// What the tracker is told from the config.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackerSettings {
    pub held_share: f64,
    pub unbooked_min_minutes: u32,
    /// Ids of the bookable rooms.
    pub bookable: Vec<String>,
}

impl TrackerSettings {
    pub fn from_config(config: &Config) -> Self {
        TrackerSettings {
            held_share: config.situation.held_share,
            unbooked_min_minutes: config.situation.unbooked_min_minutes,
            bookable: config
                .rooms
                .iter()
                .filter(|r| r.bookable)
                .map(|r| r.id.clone())
                .collect(),
        }
    }

    /// Least attendance that counts as held for `expected`.
    pub fn threshold(&self, expected: u32) -> u64 {
        // A hair below, so 0.1 × 30 (3.0000000000000004 in floating point) asks for 3.
        ((self.held_share * f64::from(expected)) - 1e-9)
            .ceil()
            .max(1.0) as u64
    }
}

/// A booking's slot is over.
#[derive(Debug, Clone, PartialEq)]
pub struct BookingReport {
    pub booking_id: String,
    pub room: String,
    pub start: Timestamp,
    pub end: Timestamp,
    pub expected_attendance: u32,
    pub held: bool,
    pub attendance: u64,
    pub attendance_share: f64,
    pub start_delay_minutes: Option<u32>,
    pub occupancy_mean: f64,
}

/// A bookable room was used outside every slot.
#[derive(Debug, Clone, PartialEq)]
pub struct UnbookedUse {
    pub room: String,
    pub start: Timestamp,
    pub end: Timestamp,
    pub occupancy_peak: u64,
    pub person_minutes: f64,
}

/// What the tracker has to say.
#[derive(Debug, Clone, PartialEq)]
pub enum SituationReport {
    Booking(BookingReport),
    Unbooked(UnbookedUse),
}

/// What a slot has seen so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SlotTally {
    room: String,
    minutes: u32,
    /// Σ of the minutes' mean occupancy.
    person_minutes: f64,
    /// Each new peak level and the start of the minute it was first reached, rising; the
    /// first minute at any threshold is found here even if the expected attendance changes.
    rises: Vec<(u64, Timestamp)>,
}

impl SlotTally {
    fn new(room: &str) -> Self {
        SlotTally {
            room: room.to_string(),
            minutes: 0,
            person_minutes: 0.0,
            rises: Vec::new(),
        }
    }

    fn peak(&self) -> u64 {
        self.rises.last().map_or(0, |r| r.0)
    }

    fn add(&mut self, at: Timestamp, room: &MinuteRoom) {
        self.minutes += 1;
        self.person_minutes += room.occupancy_mean;
        if room.occupancy_peak > self.peak() {
            self.rises.push((room.occupancy_peak, at));
        }
    }
}

/// An unbooked run of occupied minutes in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Episode {
    start: Timestamp,
    /// End of its last minute.
    end: Timestamp,
    peak: u64,
    person_minutes: f64,
}

/// The accepted bookings and what is being followed; see the module header.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BookingTracker {
    bookings: Vec<Booking>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    slots: BTreeMap<String, SlotTally>,
    /// Booking id → its end, for bookings already reported.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    reported: BTreeMap<String, Timestamp>,
    /// Room id → its open episode.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    episodes: BTreeMap<String, Episode>,
}

impl BookingTracker {
    /// The accepted set in force.
    pub fn bookings(&self) -> &[Booking] {
        &self.bookings
    }

    /// A new accepted set replaces the old; slots in progress carry on if their booking is
    /// still there for the same room. Returns the ids of slots in progress that were dropped
    /// (cancelled or moved to another room).
    pub fn replace(&mut self, bookings: Vec<Booking>) -> Vec<String> {
        let mut dropped = Vec::new();
        self.slots.retain(|id, tally| {
            let keep = bookings.iter().any(|b| b.id == *id && b.room == tally.room);
            if !keep {
                dropped.push(id.clone());
            }
            keep
        });
        self.bookings = bookings;
        dropped
    }

    /// Takes in one closed minute; returns what it ended.
    pub fn minute(
        &mut self,
        agg: &MinuteAggregate,
        settings: &TrackerSettings,
    ) -> Vec<SituationReport> {
        let mut out = Vec::new();
        for b in &self.bookings {
            if self.reported.contains_key(&b.id) {
                continue;
            }
            if b.overlaps(agg.start, agg.end)
                && let Some(room) = agg.rooms.iter().find(|r| r.id == b.room)
            {
                self.slots
                    .entry(b.id.clone())
                    .or_insert_with(|| SlotTally::new(&b.room))
                    .add(agg.start, room);
            }
            if b.end <= agg.end
                && let Some(tally) = self.slots.remove(&b.id)
            {
                out.push(SituationReport::Booking(report(b, &tally, settings)));
                self.reported.insert(b.id.clone(), b.end);
            }
        }
        for room in &agg.rooms {
            if !settings.bookable.contains(&room.id) {
                continue;
            }
            let in_slot = self
                .bookings
                .iter()
                .any(|b| b.room == room.id && b.overlaps(agg.start, agg.end));
            let occupied = room.occupancy_peak >= 1;
            let continues = self
                .episodes
                .get(&room.id)
                .is_some_and(|e| e.end == agg.start && occupied && !in_slot);
            if !continues
                && let Some(ended) = self.episodes.remove(&room.id)
                && let Some(report) = unbooked(&room.id, ended, settings)
            {
                out.push(report);
            }
            if occupied && !in_slot {
                let e = self.episodes.entry(room.id.clone()).or_insert(Episode {
                    start: agg.start,
                    end: agg.start,
                    peak: 0,
                    person_minutes: 0.0,
                });
                e.end = agg.end;
                e.peak = e.peak.max(room.occupancy_peak);
                e.person_minutes += room.occupancy_mean;
            }
        }
        out
    }

    /// The day closed at `at`: open episodes end with it (the occupancy was just reset), and
    /// long-past reported ids are forgotten.
    pub fn day_closed(
        &mut self,
        at: Timestamp,
        settings: &TrackerSettings,
    ) -> Vec<SituationReport> {
        let episodes = std::mem::take(&mut self.episodes);
        let out = episodes
            .into_iter()
            .filter_map(|(room, e)| unbooked(&room, e, settings))
            .collect();
        self.reported
            .retain(|_, end| at.duration_since(*end) <= REPORTED_KEPT);
        out
    }
}

fn report(b: &Booking, tally: &SlotTally, settings: &TrackerSettings) -> BookingReport {
    let threshold = settings.threshold(b.expected_attendance);
    let attendance = tally.peak();
    let start_delay_minutes = tally
        .rises
        .iter()
        .find(|(level, _)| *level >= threshold)
        .map(|(_, at)| (at.duration_since(b.start).as_secs().max(0) / 60) as u32);
    BookingReport {
        booking_id: b.id.clone(),
        room: b.room.clone(),
        start: b.start,
        end: b.end,
        expected_attendance: b.expected_attendance,
        held: attendance >= threshold,
        attendance,
        attendance_share: attendance as f64 / f64::from(b.expected_attendance.max(1)),
        start_delay_minutes,
        occupancy_mean: if tally.minutes == 0 {
            0.0
        } else {
            tally.person_minutes / f64::from(tally.minutes)
        },
    }
}

fn unbooked(room: &str, e: Episode, settings: &TrackerSettings) -> Option<SituationReport> {
    let minutes = e.end.duration_since(e.start).as_secs() / 60;
    (minutes >= i64::from(settings.unbooked_min_minutes)).then(|| {
        SituationReport::Unbooked(UnbookedUse {
            room: room.to_string(),
            start: e.start,
            end: e.end,
            occupancy_peak: e.peak,
            person_minutes: e.person_minutes,
        })
    })
}
