//! The occupancy engine: crossings in, per-room occupancy, daily totals and minute bins out.
//!
//! Pure and synchronous: it never reads the clock (every call takes `now`) and does no I/O,
//! so the same events in the same order give the same output, and tests drive it with a manual
//! clock. Rooms and the outside are zones joined by doors; a door's IN count moves people from
//! its `from` zone to its `to` zone.
//!
//! **Clamping.** Occupancy is never shown below zero. Counters are polled independently, so
//! "left the lobby for the reading room" can be read a poll before "entered the lobby from the
//! street": for a moment the lobby's balance is -1. Clamping at once would turn that skew into
//! a permanent error, so the signed balance is kept and only clamped (and the clamp counted as
//! drift) when it stays negative longer than `settle` — longer than any poll skew can last.
//!
//! **Day close.** At the hall's closing time (in its time zone) everyone has left: occupancy
//! resets to zero, what was left is reported as the day's residual drift, and daily totals
//! restart.
//!
//! **Figures.** The 15-minute and day aggregates of the hall's situation, drift and its
//! correction live in [`situation`]; they are fed from here and closed by [`Engine::apply`].
//!
//! **Live drift.** What each counting line misses is learned at every day close and taken off
//! the live figures as the day goes ([`drift`], [`Engine::live`]); the raw figures here are
//! never changed by it.
//!
//! The whole state is serialisable; the supervisor persists it in the outbox in the same
//! transaction as the counter baselines, so a crash can neither lose nor repeat a crossing.

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::civil::Date;
use jiff::{Timestamp, ToSpan, Zoned};
use serde::{Deserialize, Serialize};

use crate::config::{Config, ServiceVisits, Zone};
use crate::terminals::MemberHash;

pub mod drift;
pub mod situation;

pub use drift::{DriftState, Live};

pub use situation::{
    Corrected, CorrectedHall, CorrectedRoom, DayFigures, DoorDay, HallFigures, QuarterClosed,
    RoomDrift, RoomFigures, Scaled, Situation,
};

/// The hall as the engine needs it: derived once from the validated config.
#[derive(Debug, Clone)]
pub struct HallModel {
    pub room_ids: Vec<String>,
    pub capacities: Vec<u32>,
    /// Per door: (from, to).
    pub doors: Vec<(Zone, Zone)>,
    pub time_zone: jiff::tz::TimeZone,
    pub closing_time: jiff::civil::Time,
    /// How long a negative balance may last before it is clamped.
    pub settle: Duration,
    /// When the hall opens (the day's means and shares are over the open time).
    pub opening_time: jiff::civil::Time,
    /// Per room, what counts as a service visit; a room missing here counts entries.
    pub service_visits: Vec<ServiceVisits>,
}

impl HallModel {
    pub fn from_config(config: &Config) -> Self {
        // Three poll periods of the slowest counter, at least three seconds.
        let slowest = config
            .counters
            .iter()
            .map(|c| c.poll_interval + c.timeout)
            .max()
            .unwrap_or_default();
        HallModel {
            room_ids: config.rooms.iter().map(|r| r.id.clone()).collect(),
            capacities: config.rooms.iter().map(|r| r.capacity).collect(),
            doors: config.doors.iter().map(|d| (d.from, d.to)).collect(),
            time_zone: config.hall.time_zone.clone(),
            closing_time: config.hall.closing_time,
            settle: (slowest * 3).max(Duration::from_secs(3)),
            opening_time: config.hall.opening_time,
            service_visits: config.rooms.iter().map(|r| r.service_visits).collect(),
        }
    }

    /// The next closing time strictly after `now`.
    pub fn next_close_after(&self, now: Timestamp) -> Timestamp {
        let local = now.to_zoned(self.time_zone.clone());
        let mut date = local.date();
        loop {
            if let Ok(close) = date
                .to_datetime(self.closing_time)
                .to_zoned(self.time_zone.clone())
            {
                let close = close.timestamp();
                if close > now {
                    return close;
                }
            }
            date = date.tomorrow().unwrap_or(date);
        }
    }

    /// The label of the day that ends at `close`: its local date, or the date before for a
    /// closing time in the small hours (a day closing at 02:00 belongs to the evening before).
    pub fn day_of_close(&self, close: Timestamp) -> Date {
        close
            .to_zoned(self.time_zone.clone())
            .checked_sub(12.hours())
            .map(|z: Zoned| z.date())
            .unwrap_or_else(|_| close.to_zoned(self.time_zone.clone()).date())
    }
}

/// What the face-recognition terminals of a room recorded: counts only, never who.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Passages {
    /// Recognition events accepted (a re-sent event counts once).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub passages: u64,
    /// People in them: a group passing in one event counts by the faces in its snapshot.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub people: u64,
    /// Passages by registered members, and by strangers.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub members: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub strangers: u64,
    /// Passages at or above the fever threshold (or flagged abnormal by the terminal).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fevers: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mask_off: u64,
    /// Temperature readings outside the plausible range: a sensor fault, not a person.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sensor_errors: u64,
}

impl Passages {
    pub fn is_empty(&self) -> bool {
        *self == Passages::default()
    }

    /// Adds another bin's figures (roll-ups).
    pub fn merge(&mut self, other: &Passages) {
        self.passages += other.passages;
        self.people += other.people;
        self.members += other.members;
        self.strangers += other.strangers;
        self.fevers += other.fevers;
        self.mask_off += other.mask_off;
        self.sensor_errors += other.sensor_errors;
    }

    fn add(&mut self, p: &PassageFacts) {
        self.passages += 1;
        self.people += u64::from(p.people.max(1));
        if p.member.is_some() {
            self.members += 1;
        } else {
            self.strangers += 1;
        }
        self.fevers += u64::from(p.fever);
        self.mask_off += u64::from(p.mask_off);
        self.sensor_errors += u64::from(p.sensor_error);
    }
}

fn passages_empty(p: &Passages) -> bool {
    p.is_empty()
}

/// One accepted passage, as the engine needs it: no identity beyond a daily-salted hash.
/// Serialisable for the outbox's journal of passages received but not yet counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassageFacts {
    pub room: usize,
    /// The member's hash under today's salt; `None` for a stranger.
    pub member: Option<MemberHash>,
    pub fever: bool,
    pub mask_off: bool,
    pub sensor_error: bool,
    /// Faces in the snapshot, when it was counted (0 or 1 both mean one person).
    pub people: u32,
}

/// One room's figures for the current day. Zero fields are left out of the serialised state:
/// it is rewritten on every commit, and most rooms are empty most of the time (flash wear).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomDay {
    pub id: String,
    /// Signed people balance; the shown occupancy is `max(balance, 0)`.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub balance: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub entries: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub exits: u64,
    /// People removed by clamping a persistent negative balance (missed entries).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub clamped: u64,
    /// When the balance last went negative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_since: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "passages_empty")]
    pub passages: Passages,
    /// People added (or, negative, removed) today by room-camera head counts: what the
    /// counting lines missed.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub camera_correction: i64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

impl RoomDay {
    pub fn occupancy(&self) -> u64 {
        self.balance.max(0) as u64
    }
}

/// One room's share of a minute bin.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BinRoom {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub entries: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub exits: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub peak: u64,
    /// ∫ occupancy dt over the part of the bin seen so far, in person-milliseconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub person_ms: u64,
    #[serde(default, skip_serializing_if = "passages_empty")]
    pub passages: Passages,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinuteBin {
    /// Unix minute (seconds / 60) the bin starts at.
    pub minute: i64,
    pub rooms: Vec<BinRoom>,
    /// Up to when `person_ms` has been integrated.
    pub integrated_to: Timestamp,
}

/// A closed minute, ready for the uplink.
#[derive(Debug, Clone, PartialEq)]
pub struct MinuteAggregate {
    pub start: Timestamp,
    pub end: Timestamp,
    pub rooms: Vec<MinuteRoom>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MinuteRoom {
    pub id: String,
    pub entries: u64,
    pub exits: u64,
    pub occupancy_mean: f64,
    pub occupancy_peak: u64,
    pub passages: Passages,
}

/// The day that just closed.
#[derive(Debug, Clone, PartialEq)]
pub struct DayClosed {
    pub day: Date,
    /// Per room: (id, entries, exits, residual occupancy left at close).
    pub rooms: Vec<(String, u64, u64, u64)>,
    /// The day's situation figures, drift and correction (`situation/day`); `None` for a
    /// day the gateway did not see at all.
    pub figures: Option<Box<DayFigures>>,
}

/// What the engine tells the supervisor.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineOutput {
    MinuteClosed(MinuteAggregate),
    /// A 15-minute bin of the hall's situation closed (`situation/15m`).
    QuarterClosed(Box<QuarterClosed>),
    DayClosed(DayClosed),
    /// Time jumped over whole minutes (`from` to `to`, minute boundaries): no bin exists
    /// for them. Time moved by a clock step, or after the gateway was stopped or stalled.
    Skipped {
        from: Timestamp,
        to: Timestamp,
    },
}

/// Everything the engine knows; serialised into the outbox on every commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineState {
    pub day: Date,
    pub next_close: Timestamp,
    pub rooms: Vec<RoomDay>,
    /// People who came in from the street today.
    pub visitors: u64,
    /// Members seen today, by their hash under today's salt (which never touches the disk,
    /// so these are unlinkable to anyone once the process ends): the unique-visitor count.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub members_today: BTreeSet<MemberHash>,
    pub bin: MinuteBin,
    /// Bumped on every change; gives each `state` message its revision.
    pub revision: u64,
    /// The open 15-minute bin and day of the situation figures; absent from a state saved
    /// before they existed (the engine then opens them when it resumes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub situation: Option<Situation>,
    /// What each counting line misses, learned from past days, and today's re-anchors (see
    /// [`drift`]); absent from a state saved before it existed (then nothing is learned yet).
    #[serde(default, skip_serializing_if = "DriftState::is_empty")]
    pub drift: DriftState,
}

/// One input of the engine; [`Engine::apply`] takes it with its time.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// Only time moves: bins and days close.
    Time,
    /// One counter read's crossings of `door`: `inward` from → to, `outward` to → from.
    Crossings {
        door: usize,
        inward: u64,
        outward: u64,
    },
    /// One accepted terminal passage.
    Passage(&'a PassageFacts),
    /// A room camera counted `heads` people in `room`.
    HeadCount { room: usize, heads: u64 },
    /// How many of the configured counters answer (the situation's device online ratio).
    DevicesOnline { online: u32, configured: u32 },
}

#[derive(Debug, Clone)]
pub struct Engine {
    model: HallModel,
    state: EngineState,
    /// The latest time moved to. Nothing closes between two inputs at the same time (bin,
    /// quarter and day ends move only when time does), so an input at or before it skips
    /// the closing loop: most inputs of a busy second share their second.
    moved_to: Option<Timestamp>,
}

fn minute_of(t: Timestamp) -> i64 {
    t.as_second().div_euclid(60)
}

fn minute_start(minute: i64) -> Timestamp {
    Timestamp::from_second(minute * 60).unwrap_or(Timestamp::UNIX_EPOCH)
}

impl Engine {
    /// A fresh engine, or one resumed from `restored`. Rooms are matched by id, so a config
    /// that adds or removes a room keeps the others' figures.
    pub fn new(model: HallModel, restored: Option<EngineState>, now: Timestamp) -> Self {
        let next_close = model.next_close_after(now);
        let fresh_rooms: Vec<RoomDay> = model
            .room_ids
            .iter()
            .map(|id| RoomDay {
                id: id.clone(),
                ..RoomDay::default()
            })
            .collect();
        let fresh_bin = MinuteBin {
            minute: minute_of(now),
            rooms: vec![BinRoom::default(); model.room_ids.len()],
            integrated_to: now,
        };
        let state = match restored {
            Some(old) => {
                let rooms = fresh_rooms
                    .iter()
                    .map(|fresh| {
                        old.rooms
                            .iter()
                            .find(|r| r.id == fresh.id)
                            .cloned()
                            .unwrap_or_else(|| fresh.clone())
                    })
                    .collect();
                let bin_rooms = model
                    .room_ids
                    .iter()
                    .map(|id| {
                        old.rooms
                            .iter()
                            .position(|r| &r.id == id)
                            .and_then(|i| old.bin.rooms.get(i).cloned())
                            .unwrap_or_default()
                    })
                    .collect();
                let old_ids: Vec<String> = old.rooms.iter().map(|r| r.id.clone()).collect();
                let situation = match old.situation {
                    Some(mut situation) => {
                        situation.remap(&old_ids, &model);
                        situation
                    }
                    None => Situation::open(
                        &model,
                        now,
                        situation::quarter_floor(&model.time_zone, now),
                        old.next_close,
                    ),
                };
                EngineState {
                    day: old.day,
                    next_close: old.next_close,
                    rooms,
                    visitors: old.visitors,
                    members_today: old.members_today,
                    bin: MinuteBin {
                        rooms: bin_rooms,
                        ..old.bin
                    },
                    revision: old.revision,
                    situation: Some(situation),
                    drift: DriftState::for_model(&model, Some((&old.drift, &old_ids))),
                }
            }
            None => EngineState {
                day: model.day_of_close(next_close),
                next_close,
                rooms: fresh_rooms,
                visitors: 0,
                members_today: BTreeSet::new(),
                bin: fresh_bin,
                revision: 0,
                situation: Some(Situation::open(
                    &model,
                    now,
                    situation::quarter_floor(&model.time_zone, now),
                    next_close,
                )),
                drift: DriftState::for_model(&model, None),
            },
        };
        Engine {
            model,
            state,
            moved_to: None,
        }
    }

    pub fn state(&self) -> &EngineState {
        &self.state
    }

    pub fn model(&self) -> &HallModel {
        &self.model
    }

    /// Applies `inward` crossings `from → to` and `outward` crossings `to → from` of `door`,
    /// counted by one read at `now` (time already moved there by [`Engine::apply`]). Peaks
    /// never see the read half-applied: they are taken as time moves on.
    fn crossings(&mut self, door: usize, inward: u64, outward: u64, now: Timestamp) {
        let Some(&(from, to)) = self.model.doors.get(door) else {
            return;
        };
        if inward == 0 && outward == 0 {
            return;
        }
        self.advance_to(now);
        // IN before OUT: a person who came in and left within one poll never makes the room
        // look negative.
        self.move_people(from, to, inward);
        self.move_people(to, from, outward);
        self.count_crossings(door, inward, outward);
        self.state.revision += 1;
    }

    /// Moves `n` people. Whether a balance below zero lasts is judged when time moves on
    /// ([`Engine::advance_to`]), not here: same-instant reads can come in any order.
    fn move_people(&mut self, from: Zone, to: Zone, n: u64) {
        if n == 0 {
            return;
        }
        let signed = i64::try_from(n).unwrap_or(i64::MAX);
        if let Zone::Room(r) = to {
            let room = &mut self.state.rooms[r];
            room.balance = room.balance.saturating_add(signed);
            room.entries += n;
            self.state.bin.rooms[r].entries += n;
        } else {
            // From a room to the street is leaving the hall; the street side has no count.
        }
        if let Zone::Room(r) = from {
            let room = &mut self.state.rooms[r];
            room.balance = room.balance.saturating_sub(signed);
            room.exits += n;
            self.state.bin.rooms[r].exits += n;
        }
        if from == Zone::Outside && matches!(to, Zone::Room(_)) {
            self.state.visitors += n;
        }
    }

    /// Records one accepted terminal passage (time already moved to it by [`Engine::apply`]).
    fn passage(&mut self, p: &PassageFacts) {
        let Some(room) = self.state.rooms.get_mut(p.room) else {
            return;
        };
        room.passages.add(p);
        self.state.bin.rooms[p.room].passages.add(p);
        if let Some(member) = p.member {
            self.state.members_today.insert(member);
        }
        self.count_passage(p);
        self.state.revision += 1;
    }

    /// A room camera counted `heads` people in `room` at `now`: a direct count beats lines
    /// that drift, so the room's occupancy is re-anchored to it, and the difference is kept
    /// as the day's camera correction (time already moved there by [`Engine::apply`]).
    fn head_count(&mut self, room: usize, heads: u64, now: Timestamp) {
        if room >= self.state.rooms.len() {
            return;
        }
        self.advance_to(now);
        let r = &mut self.state.rooms[room];
        let target = i64::try_from(heads).unwrap_or(i64::MAX);
        let correction = target - r.balance.max(0);
        if correction == 0 && r.balance >= 0 {
            return;
        }
        r.camera_correction += correction;
        r.balance = target;
        r.negative_since = None;
        self.reanchor(room, true);
        self.state.revision += 1;
    }

    /// The live figures corrected for what the counting lines are known to miss (see
    /// [`drift`]), beside the raw ones in [`Engine::state`].
    pub fn live(&self) -> Live {
        drift::live(&self.state, &self.model.doors)
    }

    /// `room`'s balance was just re-anchored (by a camera, or clamped at zero): the live
    /// correction due now is in it, and only what comes after is applied.
    fn reanchor(&mut self, room: usize, camera: bool) {
        let counted: Vec<(u64, u64)> = self
            .state
            .situation
            .as_ref()
            .map(|s| s.day.doors.clone())
            .unwrap_or_default();
        let due =
            self.state
                .drift
                .room_corrections(&self.model.doors, &counted, self.state.rooms.len());
        if let Some(&due) = due.get(room) {
            let rooms = self.state.rooms.len();
            self.state.drift.anchor(room, rooms, due, camera);
        }
    }

    /// Distinct members seen today.
    pub fn unique_members_today(&self) -> u64 {
        self.state.members_today.len() as u64
    }

    /// Adds occupancy × elapsed to the open bin, up to `t` (within the bin).
    fn integrate_to(&mut self, t: Timestamp) {
        let bin_end = minute_start(self.state.bin.minute + 1);
        let t = t.min(bin_end);
        let from = self.state.bin.integrated_to;
        if t <= from {
            return;
        }
        let ms = u64::try_from(t.duration_since(from).as_millis()).unwrap_or(0);
        for (room, bin) in self.state.rooms.iter().zip(self.state.bin.rooms.iter_mut()) {
            bin.person_ms += room.occupancy() * ms;
            // The peak is the highest occupancy that held for some time, as in the situation
            // windows: what one read passes through on the way (its IN crossings before its
            // OUT ones) was nobody's state, and same-instant reads give it in any order.
            bin.peak = bin.peak.max(room.occupancy());
        }
        self.state.bin.integrated_to = t;
    }

    /// Moves the engine's clock to `t`: the minute bin's and the situation windows'
    /// integrals, and the clamping of balances that stayed below zero.
    fn advance_to(&mut self, t: Timestamp) {
        self.integrate_to(t);
        self.advance_situation(t);
    }

    /// Applies one input at `now`: first time moves to `now` (clamping balances that stayed
    /// negative, closing finished minute and 15-minute bins and, at closing time, the day —
    /// in time order; on a tie the minute first, then the 15-minute bin, then the day), then
    /// the input lands in the minute and day it belongs to. What closed is returned.
    ///
    /// The one way in: time cannot be forgotten before an input, nor moved twice.
    pub fn apply(&mut self, now: Timestamp, input: Input<'_>) -> Vec<EngineOutput> {
        let closed = self.tick(now);
        match input {
            Input::Time => {}
            Input::Crossings {
                door,
                inward,
                outward,
            } => self.crossings(door, inward, outward, now),
            Input::Passage(facts) => self.passage(facts),
            Input::HeadCount { room, heads } => self.head_count(room, heads, now),
            Input::DevicesOnline { online, configured } => {
                self.devices_online(online, configured, now)
            }
        }
        closed
    }

    /// Moves time to `now` (see [`Engine::apply`]).
    fn tick(&mut self, now: Timestamp) -> Vec<EngineOutput> {
        if self.moved_to.is_some_and(|t| now <= t) {
            return Vec::new();
        }
        self.moved_to = Some(now);
        let mut out = Vec::new();
        loop {
            let minute_end = minute_start(self.state.bin.minute + 1);
            let close = self.state.next_close;
            let close_due = now >= close;
            let quarter_end = self.quarter_end().filter(|&end| now >= end && end < close);
            let minute_due = minute_of(now) > self.state.bin.minute
                && quarter_end.is_none_or(|end| minute_end <= end)
                && (!close_due || minute_end <= close);
            if minute_due {
                self.advance_to(minute_end);
                out.push(EngineOutput::MinuteClosed(self.close_bin()));
                // A gap (the gateway was stopped) starts the next bin at `now`, not at the old
                // end, and the situation windows see none of the gap either.
                let next = if minute_of(now) > self.state.bin.minute + 1 {
                    self.skip_situation_to(now);
                    out.push(EngineOutput::Skipped {
                        from: minute_end,
                        to: minute_start(minute_of(now)),
                    });
                    now
                } else {
                    minute_end
                };
                self.open_bin(next);
            } else if let Some(end) = quarter_end {
                self.advance_to(end);
                if let Some(quarter) = self.close_quarter() {
                    out.push(EngineOutput::QuarterClosed(Box::new(quarter)));
                }
            } else if close_due {
                self.advance_to(close);
                if let Some(quarter) = self.close_quarter() {
                    out.push(EngineOutput::QuarterClosed(Box::new(quarter)));
                }
                out.push(EngineOutput::DayClosed(self.close_day(close)));
            } else {
                break;
            }
        }
        self.advance_to(now);
        if !out.is_empty() {
            self.state.revision += 1;
        }
        out
    }

    fn open_bin(&mut self, start: Timestamp) {
        self.state.bin = MinuteBin {
            minute: minute_of(start),
            // The peak comes from the time integrated (see `integrate_to`).
            rooms: vec![BinRoom::default(); self.state.rooms.len()],
            integrated_to: start,
        };
    }

    fn close_bin(&mut self) -> MinuteAggregate {
        let bin = &self.state.bin;
        let start = minute_start(bin.minute);
        let end = minute_start(bin.minute + 1);
        let rooms = self
            .state
            .rooms
            .iter()
            .zip(&bin.rooms)
            .map(|(room, b)| MinuteRoom {
                id: room.id.clone(),
                entries: b.entries,
                exits: b.exits,
                occupancy_mean: b.person_ms as f64 / 60_000.0,
                occupancy_peak: b.peak,
                passages: b.passages,
            })
            .collect();
        MinuteAggregate { start, end, rooms }
    }

    fn close_day(&mut self, close: Timestamp) -> DayClosed {
        // The day's figures use what was learned before it; then it is learned from.
        let figures = self.day_figures(close).map(Box::new);
        if let Some(sit) = self.state.situation.as_ref() {
            let doors = sit.day.doors.clone();
            self.state.drift.learn(&self.model, &doors);
        }
        let report = DayClosed {
            figures,
            day: self.state.day,
            rooms: self
                .state
                .rooms
                .iter()
                .map(|r| (r.id.clone(), r.entries, r.exits, r.occupancy()))
                .collect(),
        };
        for room in &mut self.state.rooms {
            *room = RoomDay {
                id: std::mem::take(&mut room.id),
                ..RoomDay::default()
            };
        }
        self.state.visitors = 0;
        self.state.members_today.clear();
        self.state.next_close = self.model.next_close_after(close);
        self.state.day = self.model.day_of_close(self.state.next_close);
        self.open_day_windows(close);
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::time;
    use proptest::prelude::*;

    /// outside → lobby (door 0), lobby → reading (door 1), lobby → lecture (door 2); open
    /// 08:00–21:00 Shanghai, which is 00:00–13:00 UTC. Shared with the situation tests.
    pub(super) fn model() -> HallModel {
        HallModel {
            room_ids: vec!["lobby".into(), "reading".into(), "lecture".into()],
            capacities: vec![50, 20, 30],
            doors: vec![
                (Zone::Outside, Zone::Room(0)),
                (Zone::Room(0), Zone::Room(1)),
                (Zone::Room(0), Zone::Room(2)),
            ],
            time_zone: jiff::tz::TimeZone::get("Asia/Shanghai").expect("tzdb has Shanghai"),
            closing_time: time(21, 0, 0, 0),
            settle: Duration::from_secs(3),
            opening_time: time(8, 0, 0, 0),
            service_visits: Vec::new(),
        }
    }

    fn at(text: &str) -> Timestamp {
        text.parse().expect("test timestamp")
    }

    fn occ(e: &Engine) -> Vec<u64> {
        e.state().rooms.iter().map(RoomDay::occupancy).collect()
    }

    #[test]
    fn passages_count_members_once_a_day_and_land_in_their_minute() {
        use crate::terminals::{MemberHasher, MemberRef};
        let t = at("2026-11-22T02:00:10Z");
        let mut e = Engine::new(model(), None, t);
        let mut hasher = MemberHasher::with_salt_source(|| [7; 32]);
        let day = e.state().day;
        let member = |id: &str, h: &mut MemberHasher| Some(h.hash(day, &MemberRef::new(id)));
        let facts = |room, member, fever, mask_off, people| PassageFacts {
            room,
            member,
            fever,
            mask_off,
            sensor_error: false,
            people,
        };
        e.passage(&facts(0, member("4366", &mut hasher), false, false, 1));
        e.passage(&facts(0, member("4366", &mut hasher), true, false, 0));
        e.passage(&facts(1, member("77", &mut hasher), false, true, 3));
        e.passage(&facts(1, None, false, false, 1));
        assert_eq!(e.unique_members_today(), 2);
        let lobby = e.state().rooms[0].passages;
        assert_eq!(
            (lobby.passages, lobby.people, lobby.members, lobby.fevers),
            (2, 2, 2, 1)
        );
        let reading = e.state().rooms[1].passages;
        assert_eq!(
            (
                reading.passages,
                reading.people,
                reading.strangers,
                reading.mask_off
            ),
            (2, 4, 1, 1)
        );
        let closed = e.tick(at("2026-11-22T02:01:00Z"));
        let Some(EngineOutput::MinuteClosed(bin)) = closed.first() else {
            panic!("the minute closes: {closed:?}");
        };
        assert_eq!(bin.rooms[1].passages, reading);
        // The day closes at 21:00 Shanghai (13:00 UTC): the members are forgotten.
        e.tick(at("2026-11-22T13:00:01Z"));
        assert_eq!(e.unique_members_today(), 0);
        assert!(e.state().rooms[0].passages.is_empty());
    }

    #[test]
    fn a_camera_head_count_re_anchors_a_drifting_room_and_records_the_correction() {
        let t = at("2026-11-22T02:00:10Z");
        let mut e = Engine::new(model(), None, t);
        e.crossings(0, 5, 0, t);
        e.crossings(1, 4, 0, t);
        // The lines say 4 in the reading room; the camera sees 6 (two came in unseen).
        e.head_count(1, 6, t);
        assert_eq!(occ(&e), vec![1, 6, 0]);
        assert_eq!(e.state().rooms[1].camera_correction, 2);
        // Then 7 leave by the lines: the balance goes below zero only by what the lines
        // miss from now on, and a later count of 0 brings it back.
        e.crossings(1, 0, 7, t);
        e.head_count(1, 0, t);
        assert_eq!(occ(&e), vec![8, 0, 0]);
        assert_eq!(e.state().rooms[1].camera_correction, 2);
        assert_eq!(e.state().rooms[1].balance, 0);
    }

    #[test]
    fn a_crossing_moves_people_between_zones() {
        let t = at("2026-11-22T02:00:10Z");
        let mut e = Engine::new(model(), None, t);
        e.crossings(0, 5, 0, t);
        e.crossings(1, 2, 0, t);
        e.crossings(2, 1, 1, t);
        assert_eq!(occ(&e), vec![3, 2, 0]);
        assert_eq!(e.state().rooms[0].entries, 6);
        assert_eq!(e.state().rooms[0].exits, 3);
        assert_eq!(e.state().visitors, 5);
    }

    #[test]
    fn poll_skew_between_counters_does_not_lose_people() {
        let t = at("2026-11-22T02:00:10Z");
        let mut e = Engine::new(model(), None, t);
        // The reading-room door is read before the entrance: lobby is -1 for a moment.
        e.crossings(1, 1, 0, t);
        assert_eq!(occ(&e), vec![0, 1, 0]);
        e.tick(at("2026-11-22T02:00:11Z"));
        e.crossings(0, 1, 0, at("2026-11-22T02:00:11Z"));
        assert_eq!(occ(&e), vec![0, 1, 0]);
        assert_eq!(e.state().rooms[0].clamped, 0);
    }

    #[test]
    fn a_balance_negative_past_the_settle_time_is_clamped_and_counted_as_drift() {
        let t = at("2026-11-22T02:00:10Z");
        let mut e = Engine::new(model(), None, t);
        e.crossings(1, 0, 2, t); // two left the reading room nobody saw enter
        e.tick(at("2026-11-22T02:00:12Z"));
        assert_eq!(e.state().rooms[1].clamped, 0);
        e.tick(at("2026-11-22T02:00:14Z"));
        assert_eq!(e.state().rooms[1].clamped, 2);
        assert_eq!(e.state().rooms[1].balance, 0);
        // Later entries count from zero again.
        e.crossings(1, 1, 0, at("2026-11-22T02:00:15Z"));
        assert_eq!(occ(&e)[1], 1);
    }

    #[test]
    fn minute_bins_close_on_the_minute_with_mean_and_peak() {
        let t0 = at("2026-11-22T02:00:00Z");
        let mut e = Engine::new(model(), None, t0);
        e.crossings(0, 4, 0, at("2026-11-22T02:00:30Z")); // 4 people for the second half
        e.crossings(0, 0, 2, at("2026-11-22T02:00:45Z")); // then 2 for the last quarter
        assert!(e.tick(at("2026-11-22T02:00:59Z")).is_empty());
        let out = e.tick(at("2026-11-22T02:01:00.5Z"));
        let [EngineOutput::MinuteClosed(m)] = out.as_slice() else {
            panic!("expected one closed minute, got {out:?}");
        };
        assert_eq!(m.start, t0);
        let lobby = &m.rooms[0];
        assert_eq!(
            (lobby.entries, lobby.exits, lobby.occupancy_peak),
            (4, 2, 4)
        );
        assert!((lobby.occupancy_mean - 1.5).abs() < 1e-9, "{lobby:?}");
        // The next bin starts with the occupancy carried over as its peak.
        let out = e.tick(at("2026-11-22T02:02:00Z"));
        let [EngineOutput::MinuteClosed(m)] = out.as_slice() else {
            panic!("expected one closed minute, got {out:?}");
        };
        assert_eq!(m.rooms[0].occupancy_peak, 2);
        assert!((m.rooms[0].occupancy_mean - 2.0).abs() < 1e-9);
    }

    #[test]
    fn a_minute_peak_never_counts_a_reads_entries_before_its_exits() {
        // The issue's room of 60: 57 inside, then reads that each let 6 in and 6 out.
        let t0 = at("2026-11-22T02:00:00Z");
        let mut e = Engine::new(model(), None, t0);
        e.apply(
            t0,
            Input::Crossings {
                door: 0,
                inward: 57,
                outward: 0,
            },
        );
        for s in 1..50 {
            let t = t0 + jiff::SignedDuration::from_secs(s);
            e.apply(
                t,
                Input::Crossings {
                    door: 0,
                    inward: 6,
                    outward: 6,
                },
            );
        }
        // A camera sees the same 57: no peak of its own either.
        e.apply(
            at("2026-11-22T02:00:55Z"),
            Input::HeadCount { room: 0, heads: 57 },
        );
        let out = e.apply(at("2026-11-22T02:01:00Z"), Input::Time);
        let [EngineOutput::MinuteClosed(m)] = out.as_slice() else {
            panic!("expected one closed minute, got {out:?}");
        };
        assert_eq!(m.rooms[0].occupancy_peak, 57);
        // The next minute, whatever order same-instant reads of two doors come in.
        let t = at("2026-11-22T02:01:30Z");
        e.apply(
            t,
            Input::Crossings {
                door: 1,
                inward: 0,
                outward: 0,
            },
        );
        e.apply(
            t,
            Input::Crossings {
                door: 0,
                inward: 3,
                outward: 0,
            },
        );
        e.apply(
            t,
            Input::Crossings {
                door: 1,
                inward: 3,
                outward: 0,
            },
        );
        let out = e.apply(at("2026-11-22T02:02:00Z"), Input::Time);
        let [EngineOutput::MinuteClosed(m)] = out.as_slice() else {
            panic!("expected one closed minute, got {out:?}");
        };
        assert_eq!(
            (m.rooms[0].occupancy_peak, m.rooms[1].occupancy_peak),
            (57, 3)
        );
    }

    #[test]
    fn the_day_closes_at_closing_time_in_the_halls_time_zone() {
        // 21:00 in Shanghai is 13:00 UTC.
        let t = at("2026-11-22T12:59:30Z");
        let mut e = Engine::new(model(), None, t);
        assert_eq!(e.state().day, jiff::civil::date(2026, 11, 22));
        e.crossings(0, 3, 1, t);
        let out = e.tick(at("2026-11-22T13:00:20Z"));
        let closed = out
            .iter()
            .find_map(|o| match o {
                EngineOutput::DayClosed(d) => Some(d.clone()),
                _ => None,
            })
            .expect("day closed");
        assert_eq!(closed.day, jiff::civil::date(2026, 11, 22));
        assert_eq!(closed.rooms[0], ("lobby".into(), 3, 1, 2));
        assert_eq!(occ(&e), vec![0, 0, 0]);
        assert_eq!(e.state().rooms[0].entries, 0);
        assert_eq!(e.state().day, jiff::civil::date(2026, 11, 23));
        // Bins before and after the close both came out, in order.
        assert!(matches!(out[0], EngineOutput::MinuteClosed(_)));
    }

    #[test]
    fn empty_rooms_take_no_space_in_the_saved_state() {
        let t = at("2026-11-22T02:00:10Z");
        let mut e = Engine::new(model(), None, t);
        e.crossings(1, 2, 0, t);
        let saved = serde_json::to_string(e.state()).expect("serialises");
        assert!(saved.contains(r#"{"id":"lecture"}"#), "{saved}");
        let restored: EngineState = serde_json::from_str(&saved).expect("deserialises");
        assert_eq!(&restored, e.state());
    }

    #[test]
    fn a_restored_engine_carries_on_where_it_stopped() {
        let t = at("2026-11-22T02:00:10Z");
        let mut e = Engine::new(model(), None, t);
        e.crossings(0, 7, 2, t);
        let saved = serde_json::to_string(e.state()).expect("serialises");
        let restored: EngineState = serde_json::from_str(&saved).expect("deserialises");
        let e2 = Engine::new(model(), Some(restored), at("2026-11-22T02:00:20Z"));
        assert_eq!(e2.state(), e.state());
    }

    proptest! {
        /// Whatever the order the doors are read in, once every counter has been read and the
        /// truth has nobody negative, the engine agrees with the truth exactly.
        #[test]
        fn any_read_order_gives_the_true_occupancy(
            moves in proptest::collection::vec((0usize..3, any::<bool>()), 1..200),
            seed in any::<u64>(),
        ) {
            let m = model();
            // Play a truthful sequence: only move people who are there.
            let mut truth = [0i64; 3];
            let mut per_door = [(0u64, 0u64); 3];
            for (door, inward) in moves {
                let (from, to) = m.doors[door];
                let (src, dst) = if inward { (from, to) } else { (to, from) };
                if let Zone::Room(r) = src {
                    if truth[r] == 0 { continue; }
                    truth[r] -= 1;
                }
                if let Zone::Room(r) = dst { truth[r] += 1; }
                if inward { per_door[door].0 += 1 } else { per_door[door].1 += 1 }
            }
            let mut order: Vec<usize> = (0..3).collect();
            let mut s = seed;
            for i in (1..order.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                order.swap(i, (s >> 33) as usize % (i + 1));
            }
            let t = at("2026-11-22T02:00:10Z");
            let mut e = Engine::new(m, None, t);
            for d in order {
                e.crossings(d, per_door[d].0, per_door[d].1, t);
            }
            e.tick(at("2026-11-22T02:00:11Z"));
            let got: Vec<i64> = e.state().rooms.iter().map(|r| r.balance).collect();
            prop_assert_eq!(got, truth.to_vec());
        }
    }
}
