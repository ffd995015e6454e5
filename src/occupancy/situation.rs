//! The hall's situation figures (态势): 15-minute and day aggregates, drift and its correction.
//!
//! Part of the pure occupancy engine: the same crossings, passages and `now` that move
//! occupancy feed two open windows kept in [`EngineState`](super::EngineState) — the open
//! 15-minute bin (aligned to 15 minutes in the hall's time zone) and the open business day —
//! and the engine closes them as [`EngineOutput::QuarterClosed`](super::EngineOutput) and
//! [`DayClosed`](super::DayClosed), which `uplink::situation` turns into `situation/15m` and
//! `situation/day`. Like the rest of the engine it never reads the clock and does no I/O.
//!
//! **Time-weighted figures are integrated, never sampled.** Between two moments the engine
//! sees, occupancy is constant, so ∫ occupancy dt is exact in person-milliseconds, and so are
//! the integrals of the cumulative entries E(t) and exits X(t) that the drift correction
//! needs. Only spans of positive length count: a room's peak is the highest occupancy that
//! *held* for some time, recorded when time moves past it. Events stamped with the same
//! instant therefore give the same figures in whatever order they are applied — the
//! momentary "4 in, then 4 out" of one order and "4 out, then 4 in" of another never show.
//!
//! **Day figures and open time.** Counts (entries, visits, fevers, …) and person-minutes are
//! over the whole business day (from one close to the next: someone in the room before
//! opening is still someone), so the person-minutes of a day's 15-minute bins add up to the
//! day's, and dwell by Little's law (person-minutes ÷ entries) holds over a day that starts
//! empty. Means and shares (occupancy_mean, utilisation_mean, occupied_share) are over the
//! day's **open time** (`hall.opening_time`..`hall.closing_time`): the mean occupancy while
//! the hall is open. Peaks are over the whole day.
//!
//! **What the gateway did not see is not invented.** Windows integrate only the time the
//! engine saw, and every mean and share is over that time: a gap (the gateway stopped) ends
//! integration at the end of the minute it stopped in, as for the minute bins, and the bins it
//! did not see at all are not reported.

use std::collections::BTreeSet;

use jiff::civil::Date;
use jiff::{Timestamp, Zoned};
use serde::{Deserialize, Serialize};

use super::{Engine, HallModel, PassageFacts};
use crate::config::{ServiceVisits, Zone};
use crate::format::is_zero;
use crate::terminals::MemberHash;

/// A 15-minute bin, in seconds.
pub const QUARTER_SECS: i64 = 900;
const QUARTER_MS: i64 = QUARTER_SECS * 1000;
const HOUR_MS: i64 = 3_600_000;
const MINUTE_MS: f64 = 60_000.0;

/// How many of the configured people counters are online, as the supervisor last said.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnlineCounts {
    pub online: u32,
    pub configured: u32,
}

/// One room's share of an open window. Zero fields are left out of the saved state (it is
/// rewritten on every commit; flash wear).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowRoom {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub entries: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub exits: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub service_visits: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub member_visits: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stranger_visits: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fevers: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mask_off: u64,
    /// Members seen at the room's terminals, by their hash under today's salt.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub members: BTreeSet<MemberHash>,
    /// ∫ occupancy dt, person-ms; `open_` is the part inside the open time.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub person_ms: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub open_person_ms: u64,
    /// Time with occupancy > 0, ms.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub occupied_ms: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub open_occupied_ms: u64,
    /// Highest occupancy that held for a positive time.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub peak: u64,
    /// ∫ E(t) dt and ∫ X(t) dt of the day's cumulative entries and exits, person-ms.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub entries_ms: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub exits_ms: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub open_entries_ms: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub open_exits_ms: u64,
}

/// An open window: a 15-minute bin or a business day.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// The bin's nominal start (aligned; or the day close that split it), and its end.
    pub start: Timestamp,
    pub end: Timestamp,
    /// Time integrated, and the part of it inside the open time, ms.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub covered_ms: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub open_ms: u64,
    /// Crossings from and to the street.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub street_entries: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub street_exits: u64,
    /// Highest hall occupancy that held, and when it first did.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hall_peak: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hall_peak_at: Option<Timestamp>,
    /// ∫ counters online dt and ∫ counters configured dt, counter-ms, over the time the
    /// supervisor had told the engine.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub device_online_ms: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub device_configured_ms: u64,
    /// Day only: hall service visits by local hour, keyed by the hour's start (Unix ms).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_by_hour: Vec<(i64, u64)>,
    /// Day only: (in, out) per door, in config order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub doors: Vec<(u64, u64)>,
    pub rooms: Vec<WindowRoom>,
}

impl Window {
    fn new(start: Timestamp, end: Timestamp, rooms: usize, doors: usize) -> Self {
        Window {
            start,
            end,
            doors: vec![(0, 0); doors],
            rooms: vec![WindowRoom::default(); rooms],
            ..Window::default()
        }
    }

    /// Whether the gateway saw any of the window: time, or something counted in it. One it
    /// did not see at all (the gateway was stopped) is not reported.
    fn saw_anything(&self) -> bool {
        self.covered_ms > 0
            || self.street_entries > 0
            || self.street_exits > 0
            || self.rooms.iter().any(|r| *r != WindowRoom::default())
    }

    /// Re-orders the rooms for a config that changed (rooms are matched by id).
    fn remap(&mut self, old_ids: &[String], new_ids: &[String], doors: usize) {
        let old = std::mem::take(&mut self.rooms);
        self.rooms = new_ids
            .iter()
            .map(|id| {
                old_ids
                    .iter()
                    .position(|o| o == id)
                    .and_then(|i| old.get(i).cloned())
                    .unwrap_or_default()
            })
            .collect();
        if !self.doors.is_empty() || doors > 0 {
            self.doors.resize(doors, (0, 0));
        }
    }
}

/// Both open windows and the engine's own clock for them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Situation {
    /// Up to when the windows are integrated: the engine's clock.
    pub integrated_to: Timestamp,
    /// When the current day's open time begins (it ends at the day's close).
    pub open_from: Timestamp,
    pub quarter: Window,
    pub day: Window,
    /// `None` until the supervisor first reports the counters (see
    /// [`super::Input::DevicesOnline`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<OnlineCounts>,
}

// ---------------------------------------------------------------------------------------------
// Figures, as closed windows report them (unrounded; the payload rounds).

/// One room's figures over a window.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomFigures {
    pub id: String,
    pub capacity: u32,
    pub entries: u64,
    pub exits: u64,
    pub service_visits: u64,
    pub unique_visitors: u64,
    pub member_visits: u64,
    pub stranger_visits: u64,
    pub fevers: u64,
    pub mask_off: u64,
    pub occupancy_mean: f64,
    pub occupancy_peak: u64,
    pub person_minutes: f64,
    pub utilisation_mean: f64,
    pub utilisation_peak: f64,
    pub occupied_share: f64,
    /// person_minutes ÷ entries; `None` without entries.
    pub dwell_minutes_mean: Option<f64>,
    /// 1 = most person-minutes; ties by service visits, then config order.
    pub hotspot_rank: u32,
}

/// The whole hall's figures over a window.
#[derive(Debug, Clone, PartialEq)]
pub struct HallFigures {
    /// From the street, and to it.
    pub entries: u64,
    pub exits: u64,
    pub service_visits: u64,
    pub unique_visitors: u64,
    pub member_visits: u64,
    pub stranger_visits: u64,
    pub fevers: u64,
    pub mask_off: u64,
    pub occupancy_mean: f64,
    pub occupancy_peak: u64,
    /// When the peak first held; `None` when the hall stayed empty.
    pub occupancy_peak_at: Option<Timestamp>,
    pub person_minutes: f64,
    pub utilisation_mean: f64,
    pub utilisation_peak: f64,
    /// `None` when no counter is configured or the supervisor never reported them.
    pub device_online_ratio: Option<f64>,
}

/// A closed 15-minute bin.
#[derive(Debug, Clone, PartialEq)]
pub struct QuarterClosed {
    pub start: Timestamp,
    pub end: Timestamp,
    /// The business day the bin belongs to.
    pub day: Date,
    /// Minutes of `start..end` inside the open time.
    pub open_minutes: u32,
    pub hall: HallFigures,
    pub rooms: Vec<RoomFigures>,
}

/// A room's drift at day close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomDrift {
    pub id: String,
    /// Occupancy left at close (should be 0).
    pub residual: u64,
    /// People removed by clamping a balance that stayed negative.
    pub clamped: u64,
}

/// One door's crossings over the day (the payload names its counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DoorDay {
    pub door: usize,
    pub from: Zone,
    pub to: Zone,
    pub inward: u64,
    pub outward: u64,
}

/// Which side of a room's count was scaled so its day ends at zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scaled {
    Exits,
    Entries,
    None,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CorrectedRoom {
    pub id: String,
    pub scaled: Scaled,
    pub factor: f64,
    pub entries: u64,
    pub exits: u64,
    pub person_minutes: f64,
    pub occupancy_mean: f64,
    pub utilisation_mean: f64,
    pub dwell_minutes_mean: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CorrectedHall {
    pub person_minutes: f64,
    pub occupancy_mean: f64,
    pub utilisation_mean: f64,
    /// The day's crossings from and to the street, plus what the street lines are estimated
    /// to have missed from what they missed on earlier days (see [`super::drift`]).
    pub entries: u64,
    pub exits: u64,
}

/// The day's figures as if each drifting room's count were scaled to end at zero.
#[derive(Debug, Clone, PartialEq)]
pub struct Corrected {
    /// `Scaled::Exits` ("scale_exits") unless every scaled room had its entries scaled
    /// (`Scaled::Entries`): the payload's one-word label of the correction applied.
    pub method: Scaled,
    pub rooms: Vec<CorrectedRoom>,
    pub hall: CorrectedHall,
}

/// Everything `situation/day` reports.
#[derive(Debug, Clone, PartialEq)]
pub struct DayFigures {
    pub day: Date,
    pub open_from: Timestamp,
    pub open_to: Timestamp,
    /// Local "HH:00" of the hour with most hall service visits (ties: the earliest).
    pub peak_hour: Option<String>,
    pub hall: HallFigures,
    pub rooms: Vec<RoomFigures>,
    pub drift_rooms: Vec<RoomDrift>,
    pub drift_doors: Vec<DoorDay>,
    pub corrected: Corrected,
}

// ---------------------------------------------------------------------------------------------
// Calendar.

/// The start of the 15-minute bin holding `t`, aligned in the hall's time zone (by the
/// offset in force at `t`, so a DST change never makes a bin run backwards).
pub fn quarter_floor(tz: &jiff::tz::TimeZone, t: Timestamp) -> Timestamp {
    let offset_ms = i64::from(tz.to_offset(t).seconds()) * 1000;
    let ms = t.as_millisecond();
    let floor = ms - (ms + offset_ms).rem_euclid(QUARTER_MS);
    Timestamp::from_millisecond(floor).unwrap_or(t)
}

/// The start of the local hour holding `t`, Unix ms.
fn hour_floor_ms(tz: &jiff::tz::TimeZone, t: Timestamp) -> i64 {
    let offset_ms = i64::from(tz.to_offset(t).seconds()) * 1000;
    let ms = t.as_millisecond();
    ms - (ms + offset_ms).rem_euclid(HOUR_MS)
}

impl HallModel {
    /// When the open time of the day that closes at `close` begins: the last local
    /// `opening_time` strictly before `close` (a day before it when the two times are the
    /// same: open round the clock).
    pub fn open_from(&self, close: Timestamp) -> Timestamp {
        let local = close.to_zoned(self.time_zone.clone());
        let mut date = local.date();
        for _ in 0..3 {
            if let Ok(open) = date
                .to_datetime(self.opening_time)
                .to_zoned(self.time_zone.clone())
                .map(|z: Zoned| z.timestamp())
                && open < close
            {
                return open;
            }
            date = date.yesterday().unwrap_or(date);
        }
        close
    }

    fn service_mode(&self, room: usize) -> ServiceVisits {
        self.service_visits.get(room).copied().unwrap_or_default()
    }

    fn capacity(&self, room: usize) -> u32 {
        self.capacities.get(room).copied().unwrap_or(1).max(1)
    }
}

fn ms_between(from: Timestamp, to: Timestamp) -> u64 {
    u64::try_from(to.as_millisecond() - from.as_millisecond()).unwrap_or(0)
}

fn overlap_ms(a: (Timestamp, Timestamp), b: (Timestamp, Timestamp)) -> u64 {
    ms_between(a.0.max(b.0), a.1.min(b.1))
}

fn ratio(num: f64, den: f64) -> f64 {
    if den > 0.0 { num / den } else { 0.0 }
}

// ---------------------------------------------------------------------------------------------
// The engine's side.

impl Situation {
    /// Windows opened at `now` for a day that closes at `next_close`; the open bin starts at
    /// its aligned start, but not before `not_before` (a day close that split a bin).
    pub(super) fn open(
        model: &HallModel,
        now: Timestamp,
        not_before: Timestamp,
        next_close: Timestamp,
    ) -> Self {
        let rooms = model.room_ids.len();
        let doors = model.doors.len();
        let floor = quarter_floor(&model.time_zone, now);
        let quarter_end = (floor + jiff::SignedDuration::from_secs(QUARTER_SECS)).min(next_close);
        Situation {
            integrated_to: now,
            open_from: model.open_from(next_close),
            quarter: Window::new(floor.max(not_before), quarter_end, rooms, 0),
            day: Window::new(not_before.min(now), next_close, rooms, doors),
            devices: None,
        }
    }

    /// A restored situation for a config whose rooms may have changed.
    pub(super) fn remap(&mut self, old_ids: &[String], model: &HallModel) {
        self.quarter.remap(old_ids, &model.room_ids, 0);
        self.day.remap(old_ids, &model.room_ids, model.doors.len());
    }
}

impl Engine {
    /// Advances the windows to `t` (up to the open bin's end) and settles negative balances:
    /// a balance that *held* below zero since `since` is clamped once `settle` has passed.
    /// Only a move forward in time does anything, so whatever order same-instant events come
    /// in, they are all applied before the engine looks at the result.
    pub(super) fn advance_situation(&mut self, t: Timestamp) {
        let Some(sit) = self.state.situation.as_mut() else {
            return;
        };
        let from = sit.integrated_to;
        let to = t.min(sit.quarter.end);
        if to <= from {
            return;
        }
        let ms = ms_between(from, to);
        let open_ms = overlap_ms((from, to), (sit.open_from, self.state.next_close));
        let hall_occupancy: u64 = self.state.rooms.iter().map(|r| r.occupancy()).sum();
        for w in [&mut sit.quarter, &mut sit.day] {
            w.covered_ms += ms;
            w.open_ms += open_ms;
            if w.hall_peak_at.is_none() || hall_occupancy > w.hall_peak {
                w.hall_peak = w.hall_peak.max(hall_occupancy);
                w.hall_peak_at = Some(from);
            }
            if let Some(d) = sit.devices {
                w.device_online_ms += u64::from(d.online) * ms;
                w.device_configured_ms += u64::from(d.configured) * ms;
            }
            for (room, wr) in self.state.rooms.iter().zip(w.rooms.iter_mut()) {
                let occ = room.occupancy();
                wr.person_ms += occ * ms;
                wr.open_person_ms += occ * open_ms;
                if occ > 0 {
                    wr.occupied_ms += ms;
                    wr.open_occupied_ms += open_ms;
                }
                wr.peak = wr.peak.max(occ);
                wr.entries_ms += room.entries * ms;
                wr.exits_ms += room.exits * ms;
                wr.open_entries_ms += room.entries * open_ms;
                wr.open_exits_ms += room.exits * open_ms;
            }
        }
        sit.integrated_to = to;

        let settle =
            jiff::SignedDuration::try_from(self.model.settle).unwrap_or(jiff::SignedDuration::MAX);
        let mut clamped = Vec::new();
        for (r, room) in self.state.rooms.iter_mut().enumerate() {
            if room.balance >= 0 {
                room.negative_since = None;
                continue;
            }
            let since = *room.negative_since.get_or_insert(from);
            if to.duration_since(since) >= settle {
                let missing = room.balance.unsigned_abs();
                tracing::info!(
                    room = %room.id,
                    missing,
                    "room balance stayed below zero: an entry was missed; clamping to zero and counting it as drift"
                );
                room.clamped += missing;
                room.balance = 0;
                room.negative_since = None;
                self.state.revision += 1;
                clamped.push(r);
            }
        }
        for r in clamped {
            self.reanchor(r, false);
        }
    }

    /// The gateway was not running from the windows' clock until `now`: integrate nothing
    /// for that time.
    pub(super) fn skip_situation_to(&mut self, now: Timestamp) {
        if let Some(sit) = self.state.situation.as_mut() {
            sit.integrated_to = sit.integrated_to.max(now);
        }
    }

    /// The open bin's end, where the engine must close it.
    pub(super) fn quarter_end(&self) -> Option<Timestamp> {
        self.state.situation.as_ref().map(|s| s.quarter.end)
    }

    /// Counts `inward` crossings `from → to` and `outward` ones back through `door`.
    pub(super) fn count_crossings(&mut self, door: usize, inward: u64, outward: u64) {
        let Some(&(from, to)) = self.model.doors.get(door) else {
            return;
        };
        let Some(sit) = self.state.situation.as_mut() else {
            return;
        };
        let mut service = 0;
        for w in [&mut sit.quarter, &mut sit.day] {
            service = 0;
            for (src, dst, n) in [(from, to, inward), (to, from, outward)] {
                if n == 0 {
                    continue;
                }
                if let Zone::Room(r) = dst {
                    w.rooms[r].entries += n;
                    if self.model.service_mode(r) == ServiceVisits::Entries {
                        w.rooms[r].service_visits += n;
                        service += n;
                    }
                }
                if let Zone::Room(r) = src {
                    w.rooms[r].exits += n;
                }
                match (src, dst) {
                    (Zone::Outside, Zone::Room(_)) => w.street_entries += n,
                    (Zone::Room(_), Zone::Outside) => w.street_exits += n,
                    _ => {}
                }
            }
            if let Some(d) = w.doors.get_mut(door) {
                d.0 += inward;
                d.1 += outward;
            }
        }
        self.count_service_hour(service);
    }

    /// Counts one accepted terminal passage (call after advancing to its time).
    pub(super) fn count_passage(&mut self, p: &PassageFacts) {
        let passages_count = self.model.service_mode(p.room) == ServiceVisits::Passages;
        let Some(sit) = self.state.situation.as_mut() else {
            return;
        };
        if p.room >= sit.day.rooms.len() {
            return;
        }
        for w in [&mut sit.quarter, &mut sit.day] {
            let r = &mut w.rooms[p.room];
            if let Some(member) = p.member {
                r.member_visits += 1;
                r.members.insert(member);
            } else {
                r.stranger_visits += 1;
            }
            r.fevers += u64::from(p.fever);
            r.mask_off += u64::from(p.mask_off);
            if passages_count {
                r.service_visits += 1;
            }
        }
        if passages_count {
            self.count_service_hour(1);
        }
    }

    fn count_service_hour(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        let tz = &self.model.time_zone;
        let Some(sit) = self.state.situation.as_mut() else {
            return;
        };
        let hour = hour_floor_ms(tz, sit.integrated_to);
        match sit.day.service_by_hour.iter_mut().find(|(h, _)| *h == hour) {
            Some((_, count)) => *count += n,
            None => {
                sit.day.service_by_hour.push((hour, n));
                sit.day.service_by_hour.sort_unstable();
            }
        }
    }

    /// The supervisor's word on the people counters: `online` of the `configured` ones answer.
    /// The device online ratio is ∫ online dt ÷ ∫ configured dt over the time since the first
    /// such word: before any counter has been tried there is nothing to measure, and from the
    /// first report on, a counter never heard from (neither online nor offline yet) counts as
    /// offline — the supervisor passes only the ones it knows are online. The counts are part
    /// of the saved state, so a restart carries on with the last word until the first new one.
    pub(super) fn devices_online(&mut self, online: u32, configured: u32, now: Timestamp) {
        self.advance_to(now);
        let counts = OnlineCounts {
            online: online.min(configured),
            configured,
        };
        if let Some(sit) = self.state.situation.as_mut()
            && sit.devices != Some(counts)
        {
            sit.devices = Some(counts);
            self.state.revision += 1;
        }
    }

    /// Closes the open bin at its end and opens the next one: at that end, or, after a gap,
    /// at the bin holding the windows' clock (never past the day's close).
    /// `None` for a bin the gateway did not see at all.
    pub(super) fn close_quarter(&mut self) -> Option<QuarterClosed> {
        let figures = self.quarter_figures();
        let next_close = self.state.next_close;
        let tz = self.model.time_zone.clone();
        let rooms = self.model.room_ids.len();
        let sit = self.state.situation.as_mut()?;
        let at = sit.integrated_to.max(sit.quarter.end).min(next_close);
        let start = if at > sit.quarter.end {
            quarter_floor(&tz, at).max(sit.quarter.end)
        } else {
            at
        };
        let end = (quarter_floor(&tz, at) + jiff::SignedDuration::from_secs(QUARTER_SECS))
            .min(next_close);
        sit.quarter = Window::new(start, end, rooms, 0);
        figures
    }

    /// The open bin's figures, if it spans any time.
    fn quarter_figures(&self) -> Option<QuarterClosed> {
        let sit = self.state.situation.as_ref()?;
        let q = &sit.quarter;
        if !q.saw_anything() {
            return None;
        }
        let open_ms = overlap_ms((q.start, q.end), (sit.open_from, self.state.next_close));
        let (hall, rooms) = self.window_figures(q, q.covered_ms, false);
        Some(QuarterClosed {
            start: q.start,
            end: q.end,
            day: self.state.day,
            open_minutes: u32::try_from(open_ms / 60_000).unwrap_or(u32::MAX),
            hall,
            rooms,
        })
    }

    /// The hall and room figures of window `w`; means and shares over `span_ms` — over the
    /// open time only when `open` (the day), else over all the time seen (a bin).
    fn window_figures(
        &self,
        w: &Window,
        span_ms: u64,
        open: bool,
    ) -> (HallFigures, Vec<RoomFigures>) {
        let span = span_ms as f64;
        let mut rooms: Vec<RoomFigures> = w
            .rooms
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let capacity = self.model.capacity(i);
                let (mean_ms, occupied_ms) = if open {
                    (r.open_person_ms, r.open_occupied_ms)
                } else {
                    (r.person_ms, r.occupied_ms)
                };
                let occupancy_mean = ratio(mean_ms as f64, span);
                let person_minutes = r.person_ms as f64 / MINUTE_MS;
                RoomFigures {
                    id: self.model.room_ids[i].clone(),
                    capacity,
                    entries: r.entries,
                    exits: r.exits,
                    service_visits: r.service_visits,
                    unique_visitors: r.members.len() as u64,
                    member_visits: r.member_visits,
                    stranger_visits: r.stranger_visits,
                    fevers: r.fevers,
                    mask_off: r.mask_off,
                    occupancy_mean,
                    occupancy_peak: r.peak,
                    person_minutes,
                    utilisation_mean: occupancy_mean / f64::from(capacity),
                    utilisation_peak: r.peak as f64 / f64::from(capacity),
                    occupied_share: ratio(occupied_ms as f64, span),
                    dwell_minutes_mean: (r.entries > 0).then(|| person_minutes / r.entries as f64),
                    hotspot_rank: 0,
                }
            })
            .collect();
        let mut order: Vec<usize> = (0..rooms.len()).collect();
        order.sort_by(|&a, &b| {
            let (ra, rb) = (&w.rooms[a], &w.rooms[b]);
            rb.person_ms
                .cmp(&ra.person_ms)
                .then(rb.service_visits.cmp(&ra.service_visits))
                .then(a.cmp(&b))
        });
        for (rank, &i) in order.iter().enumerate() {
            rooms[i].hotspot_rank = u32::try_from(rank + 1).unwrap_or(u32::MAX);
        }
        let capacity: f64 = (0..rooms.len())
            .map(|i| f64::from(self.model.capacity(i)))
            .sum::<f64>()
            .max(1.0);
        let members: BTreeSet<&MemberHash> = w.rooms.iter().flat_map(|r| &r.members).collect();
        let sum = |f: fn(&WindowRoom) -> u64| w.rooms.iter().map(f).sum::<u64>();
        let hall_mean_ms = if open {
            sum(|r| r.open_person_ms)
        } else {
            sum(|r| r.person_ms)
        };
        let occupancy_mean = ratio(hall_mean_ms as f64, span);
        let hall = HallFigures {
            entries: w.street_entries,
            exits: w.street_exits,
            service_visits: sum(|r| r.service_visits),
            unique_visitors: members.len() as u64,
            member_visits: sum(|r| r.member_visits),
            stranger_visits: sum(|r| r.stranger_visits),
            fevers: sum(|r| r.fevers),
            mask_off: sum(|r| r.mask_off),
            occupancy_mean,
            occupancy_peak: w.hall_peak,
            occupancy_peak_at: w.hall_peak_at.filter(|_| w.hall_peak > 0),
            person_minutes: sum(|r| r.person_ms) as f64 / MINUTE_MS,
            utilisation_mean: occupancy_mean / capacity,
            utilisation_peak: w.hall_peak as f64 / capacity,
            device_online_ratio: (w.device_configured_ms > 0)
                .then(|| w.device_online_ms as f64 / w.device_configured_ms as f64),
        };
        (hall, rooms)
    }

    /// The day's figures at `close`, before the rooms are reset.
    pub(super) fn day_figures(&self, close: Timestamp) -> Option<DayFigures> {
        let sit = self.state.situation.as_ref()?;
        let d = &sit.day;
        if !d.saw_anything() {
            return None;
        }
        let (hall, rooms) = self.window_figures(d, d.open_ms, true);
        let peak_hour = d
            .service_by_hour
            .iter()
            .filter(|(_, n)| *n > 0)
            // Earliest of the busiest: max_by_key keeps the last maximum, so reverse.
            .rev()
            .max_by_key(|(_, n)| *n)
            .and_then(|(hour, _)| Timestamp::from_millisecond(*hour).ok())
            .map(|t| format!("{:02}:00", t.to_zoned(self.model.time_zone.clone()).hour()));
        let drift_rooms = self
            .state
            .rooms
            .iter()
            .map(|r| RoomDrift {
                id: r.id.clone(),
                residual: r.occupancy(),
                clamped: r.clamped,
            })
            .collect();
        let drift_doors = self
            .model
            .doors
            .iter()
            .enumerate()
            .map(|(i, &(from, to))| {
                let (inward, outward) = d.doors.get(i).copied().unwrap_or_default();
                DoorDay {
                    door: i,
                    from,
                    to,
                    inward,
                    outward,
                }
            })
            .collect();
        let corrected = self.corrected(d, d.open_ms);
        Some(DayFigures {
            day: self.state.day,
            open_from: sit.open_from,
            open_to: close,
            peak_hour,
            hall,
            rooms,
            drift_rooms,
            drift_doors,
            corrected,
        })
    }

    /// The drift-corrected day. A room left with people at close (residual > 0, more entries
    /// than exits) has its exits scaled by k = entries ÷ exits, so the corrected count ends
    /// the day at zero, and its person-minutes are exact for the scaled counts:
    /// ∫(E − kX) dt = ∫E dt − k∫X dt, from the integrals of the cumulative counts. The
    /// approximation: a missed exit is spread evenly over the day's exits (k is one factor
    /// for the whole day), and the curve E − kX is not clamped, so a room whose misses came
    /// early can dip below zero for a while; its person-minutes are floored at zero.
    ///
    /// A room whose exits outran its entries (people clamped away) has its entries scaled by
    /// k = exits ÷ entries, with person-minutes k∫E − ∫X, but never below the raw, clamped
    /// curve's: when entries are missed, each clamp adds the missing person back at the
    /// latest possible moment, so the clamped curve is a lower bound on the truth, and a
    /// scaled curve under it is the unclamped dip at work, not a better estimate. (In the
    /// venue-day replay the lobby, fed by the rooms' missed exits, scaled to an error of
    /// −823 person-minutes against +143 raw; the floor keeps the raw figure there.)
    ///
    /// A room with no drift, or one whose drift scaling cannot fix (no exits at all, or counts
    /// that a room camera re-anchored), keeps its raw figures and `Scaled::None`.
    fn corrected(&self, d: &Window, open_ms: u64) -> Corrected {
        let span = open_ms as f64;
        let rooms: Vec<CorrectedRoom> = self
            .state
            .rooms
            .iter()
            .zip(&d.rooms)
            .enumerate()
            .map(|(i, (room, w))| {
                let capacity = f64::from(self.model.capacity(i));
                let (e, x) = (room.entries, room.exits);
                let (scaled, factor) = if room.camera_correction != 0 {
                    // A room camera re-anchored it: already corrected by a direct count.
                    (Scaled::None, 1.0)
                } else if room.occupancy() > 0 && e > x && x > 0 {
                    (Scaled::Exits, e as f64 / x as f64)
                } else if room.clamped > 0 && x > e && e > 0 {
                    (Scaled::Entries, x as f64 / e as f64)
                } else {
                    (Scaled::None, 1.0)
                };
                let (entries, exits, person_ms, open_person_ms) = match scaled {
                    Scaled::Exits => (
                        e,
                        e,
                        (w.entries_ms as f64 - factor * w.exits_ms as f64).max(0.0),
                        (w.open_entries_ms as f64 - factor * w.open_exits_ms as f64).max(0.0),
                    ),
                    // Floored at the clamped curve, a lower bound (see above).
                    Scaled::Entries => (
                        x,
                        x,
                        (factor * w.entries_ms as f64 - w.exits_ms as f64).max(w.person_ms as f64),
                        (factor * w.open_entries_ms as f64 - w.open_exits_ms as f64)
                            .max(w.open_person_ms as f64),
                    ),
                    Scaled::None => (e, x, w.person_ms as f64, w.open_person_ms as f64),
                };
                let person_minutes = person_ms / MINUTE_MS;
                let occupancy_mean = ratio(open_person_ms, span);
                CorrectedRoom {
                    id: room.id.clone(),
                    scaled,
                    factor,
                    entries,
                    exits,
                    person_minutes,
                    occupancy_mean,
                    utilisation_mean: occupancy_mean / capacity,
                    dwell_minutes_mean: (entries > 0).then(|| person_minutes / entries as f64),
                }
            })
            .collect();
        let capacity: f64 = (0..rooms.len())
            .map(|i| f64::from(self.model.capacity(i)))
            .sum::<f64>()
            .max(1.0);
        let occupancy_mean: f64 = rooms.iter().map(|r| r.occupancy_mean).sum();
        let method = if rooms.iter().any(|r| r.scaled == Scaled::Entries)
            && !rooms.iter().any(|r| r.scaled == Scaled::Exits)
        {
            Scaled::Entries
        } else {
            Scaled::Exits
        };
        let live = super::drift::live(&self.state, &self.model.doors);
        Corrected {
            method,
            hall: CorrectedHall {
                person_minutes: rooms.iter().map(|r| r.person_minutes).sum(),
                occupancy_mean,
                utilisation_mean: occupancy_mean / capacity,
                entries: live.hall_entries_corrected,
                exits: live.hall_exits_corrected,
            },
            rooms,
        }
    }

    /// Opens the next day's windows at `close` (after `next_close` moved on), or, after a
    /// gap past the close, where the windows' clock is.
    pub(super) fn open_day_windows(&mut self, close: Timestamp) {
        let old = self.state.situation.as_ref();
        let devices = old.and_then(|s| s.devices);
        let at = old.map_or(close, |s| s.integrated_to.max(close));
        let mut sit = Situation::open(&self.model, at, close, self.state.next_close);
        sit.devices = devices;
        self.state.situation = Some(sit);
    }
}

#[cfg(test)]
mod tests {
    use jiff::civil::{date, time};
    use proptest::prelude::*;

    use super::super::tests::model;
    use super::super::{EngineOutput, EngineState};
    use super::*;
    use crate::terminals::{MemberHasher, MemberRef};

    fn at(text: &str) -> Timestamp {
        text.parse().expect("test timestamp")
    }

    fn quarters(out: &[EngineOutput]) -> Vec<QuarterClosed> {
        out.iter()
            .filter_map(|o| match o {
                EngineOutput::QuarterClosed(q) => Some((**q).clone()),
                _ => None,
            })
            .collect()
    }

    fn day_of(out: &[EngineOutput]) -> DayFigures {
        out.iter()
            .find_map(|o| match o {
                EngineOutput::DayClosed(d) => d.figures.as_deref().cloned(),
                _ => None,
            })
            .expect("the day closed with figures")
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    /// Ticks every 30 s up to `t`, as the supervisor's once-a-second tick would: a jump of
    /// more than a minute is the gateway having been stopped.
    fn tick_to(e: &mut Engine, out: &mut Vec<EngineOutput>, t: Timestamp) {
        let step = jiff::SignedDuration::from_secs(30);
        let mut now = e.state().situation.as_ref().expect("open").integrated_to;
        while now + step < t {
            now += step;
            out.extend(e.tick(now));
        }
        out.extend(e.tick(t));
    }

    fn ticks(e: &mut Engine, t: &str) -> Vec<EngineOutput> {
        let mut out = Vec::new();
        tick_to(e, &mut out, at(t));
        out
    }

    /// Ticks to `t` first, as the supervisor does, then applies the crossings.
    fn cross(e: &mut Engine, out: &mut Vec<EngineOutput>, t: &str, door: usize, i: u64, o: u64) {
        let t = at(t);
        tick_to(e, out, t);
        e.crossings(door, i, o, t);
    }

    #[test]
    fn a_quarter_reports_crossings_visits_and_exact_person_minutes() {
        let mut e = Engine::new(model(), None, at("2026-11-22T02:00:00Z"));
        let mut out = Vec::new();
        cross(&mut e, &mut out, "2026-11-22T02:01:00Z", 0, 3, 0); // 3 in from the street
        cross(&mut e, &mut out, "2026-11-22T02:05:00Z", 1, 2, 0); // 2 on to the reading room
        cross(&mut e, &mut out, "2026-11-22T02:10:00Z", 1, 0, 1); // 1 back to the lobby
        tick_to(&mut e, &mut out, at("2026-11-22T02:15:00Z"));
        let [q] = quarters(&out).try_into().expect("one quarter closed");
        assert_eq!(
            (q.start, q.end, q.day, q.open_minutes),
            (
                at("2026-11-22T02:00:00Z"),
                at("2026-11-22T02:15:00Z"),
                date(2026, 11, 22),
                15
            )
        );
        let (lobby, reading, lecture) = (&q.rooms[0], &q.rooms[1], &q.rooms[2]);
        // Lobby: 0 for 1 min, 3 for 4, 1 for 5, 2 for 5 = 27 person-minutes.
        assert_eq!(
            (lobby.entries, lobby.exits, lobby.service_visits),
            (4, 2, 4)
        );
        assert!(close(lobby.person_minutes, 27.0), "{lobby:?}");
        assert!(close(lobby.occupancy_mean, 1.8));
        assert_eq!(lobby.occupancy_peak, 3);
        assert!(close(lobby.occupied_share, 14.0 / 15.0));
        assert!(close(lobby.utilisation_mean, 1.8 / 50.0));
        assert!(close(lobby.utilisation_peak, 3.0 / 50.0));
        assert_eq!(lobby.dwell_minutes_mean, Some(27.0 / 4.0));
        // Reading: 2 for 5 min, 1 for 5 = 15.
        assert!(close(reading.person_minutes, 15.0));
        assert_eq!(
            (reading.occupancy_peak, reading.entries, reading.exits),
            (2, 2, 1)
        );
        assert!(close(reading.occupied_share, 10.0 / 15.0));
        assert_eq!(lecture.dwell_minutes_mean, None);
        assert_eq!(
            (
                lobby.hotspot_rank,
                reading.hotspot_rank,
                lecture.hotspot_rank
            ),
            (1, 2, 3)
        );
        let h = &q.hall;
        assert_eq!((h.entries, h.exits, h.service_visits), (3, 0, 6));
        assert!(close(h.person_minutes, 42.0));
        assert!(close(h.occupancy_mean, 2.8));
        assert_eq!(h.occupancy_peak, 3);
        assert_eq!(h.occupancy_peak_at, Some(at("2026-11-22T02:01:00Z")));
        assert!(close(h.utilisation_mean, 2.8 / 100.0));
        assert_eq!(h.device_online_ratio, None, "no counter was ever reported");
    }

    #[test]
    fn people_who_come_and_go_in_the_same_instant_make_no_peak_in_either_order() {
        for in_first in [true, false] {
            let mut e = Engine::new(model(), None, at("2026-11-22T02:00:00Z"));
            let t = at("2026-11-22T02:03:00Z");
            e.tick(t);
            if in_first {
                e.crossings(0, 5, 0, t);
                e.crossings(0, 0, 5, t);
            } else {
                e.crossings(0, 0, 5, t);
                e.crossings(0, 5, 0, t);
            }
            let [q] = quarters(&ticks(&mut e, "2026-11-22T02:15:00Z"))
                .try_into()
                .expect("one quarter");
            assert_eq!(q.rooms[0].occupancy_peak, 0, "in first: {in_first}");
            assert_eq!(q.hall.occupancy_peak, 0);
            assert_eq!(q.hall.occupancy_peak_at, None);
            assert_eq!(q.rooms[0].person_minutes, 0.0);
            assert_eq!(e.state().rooms[0].clamped, 0, "never negative for a moment");
        }
    }

    #[test]
    fn a_stay_across_a_bin_boundary_is_split_between_the_bins_and_whole_in_the_day() {
        // Open at 08:00 local (00:00Z); one visitor 10:10–10:20 local, a second one from 10:12
        // to 11:00 in the reading room.
        let mut e = Engine::new(model(), None, at("2026-11-22T00:00:00Z"));
        let mut out = Vec::new();
        cross(&mut e, &mut out, "2026-11-22T02:10:00Z", 0, 1, 0);
        cross(&mut e, &mut out, "2026-11-22T02:12:00Z", 0, 1, 0);
        cross(&mut e, &mut out, "2026-11-22T02:12:00Z", 1, 1, 0);
        cross(&mut e, &mut out, "2026-11-22T02:20:00Z", 0, 0, 1);
        cross(&mut e, &mut out, "2026-11-22T03:00:00Z", 1, 0, 1);
        cross(&mut e, &mut out, "2026-11-22T03:00:00Z", 0, 0, 1);
        tick_to(&mut e, &mut out, at("2026-11-22T13:00:00Z"));
        let qs = quarters(&out);
        // 08:00..21:00 is 52 bins, all of them seen.
        assert_eq!(qs.len(), 52);
        let q10 = qs
            .iter()
            .find(|q| q.start == at("2026-11-22T02:00:00Z"))
            .expect("the 10:00 bin");
        let q1015 = qs
            .iter()
            .find(|q| q.start == at("2026-11-22T02:15:00Z"))
            .expect("the 10:15 bin");
        // Lobby: 1 person 10:10–10:20, split 5 + 5 minutes.
        assert!(
            close(q10.rooms[0].person_minutes, 5.0),
            "{:?}",
            q10.rooms[0]
        );
        assert!(close(q1015.rooms[0].person_minutes, 5.0));
        assert_eq!((q10.rooms[0].entries, q1015.rooms[0].exits), (2, 1));
        assert_eq!(
            q1015.rooms[0].occupancy_peak, 1,
            "the stay held into the bin"
        );
        // Reading: 10:12–11:00 = 3 + 15 + 15 + 15 minutes.
        assert!(close(q10.rooms[1].person_minutes, 3.0));
        let day = day_of(&out);
        let sum: f64 = qs.iter().map(|q| q.hall.person_minutes).sum();
        assert!(close(day.hall.person_minutes, sum));
        assert!(close(day.hall.person_minutes, 10.0 + 48.0));
        assert!(close(
            day.rooms[1].dwell_minutes_mean.expect("entries"),
            48.0
        ));
        // Means over the 13 open hours.
        assert!(close(day.rooms[1].occupancy_mean, 48.0 / 780.0));
        assert!(close(day.rooms[1].occupied_share, 48.0 / 780.0));
        assert_eq!(
            (day.open_from, day.open_to),
            (at("2026-11-22T00:00:00Z"), at("2026-11-22T13:00:00Z"))
        );
        assert_eq!(day.hall.occupancy_peak, 2);
        assert_eq!(day.hall.occupancy_peak_at, Some(at("2026-11-22T02:12:00Z")));
        // Service visits (entries): 10:00 has lobby 2 + reading 1; 11:00 the lobby 1 (back
        // from the reading room).
        assert_eq!(day.peak_hour.as_deref(), Some("10:00"));
        assert_eq!(day.hall.service_visits, 4);
        assert_eq!(day.drift_rooms.iter().map(|d| d.residual).sum::<u64>(), 0);
        assert_eq!(day.corrected.rooms[1].scaled, Scaled::None);
        assert!(close(
            day.corrected.hall.person_minutes,
            day.hall.person_minutes
        ));
    }

    #[test]
    fn a_day_closing_with_people_left_reports_the_residual_per_room_and_line_and_scales_exits() {
        // Truth: 4 came in at 09:00 local and all left at 11:00; the entrance counter missed
        // one of the exits.
        let mut e = Engine::new(model(), None, at("2026-11-22T00:00:00Z"));
        let mut out = Vec::new();
        cross(&mut e, &mut out, "2026-11-22T01:00:00Z", 0, 4, 0);
        cross(&mut e, &mut out, "2026-11-22T03:00:00Z", 0, 0, 3);
        tick_to(&mut e, &mut out, at("2026-11-22T13:00:01Z"));
        let day = day_of(&out);
        assert_eq!(day.day, date(2026, 11, 22));
        assert_eq!(
            day.drift_rooms[0],
            RoomDrift {
                id: "lobby".into(),
                residual: 1,
                clamped: 0
            }
        );
        assert_eq!(
            day.drift_doors[0],
            DoorDay {
                door: 0,
                from: Zone::Outside,
                to: Zone::Room(0),
                inward: 4,
                outward: 3
            }
        );
        // Raw: 4 for 2 h, then 1 until 21:00 (10 h) = 480 + 600 person-minutes.
        assert!(close(day.rooms[0].person_minutes, 1080.0));
        let c = &day.corrected.rooms[0];
        assert_eq!((c.scaled, c.entries, c.exits), (Scaled::Exits, 4, 4));
        assert!(close(c.factor, 4.0 / 3.0));
        // ∫E = 4 × 12 h, ∫X = 3 × 10 h: 48 h − 4/3 × 30 h = 8 h, the truth (4 people × 2 h).
        assert!(close(c.person_minutes, 480.0), "{c:?}");
        assert!(close(c.occupancy_mean, 480.0 / 780.0));
        assert!(close(c.dwell_minutes_mean.expect("entries"), 120.0));
        assert_eq!(day.corrected.method, Scaled::Exits);
        assert!(close(day.corrected.hall.person_minutes, 480.0));
        // The day after starts from nothing.
        assert_eq!(e.state().rooms[0].occupancy(), 0);
    }

    #[test]
    fn a_missed_entry_that_was_clamped_is_corrected_by_scaling_entries() {
        // Truth: 4 came in at 09:00 and left at 11:00; the counter saw only 3 come in.
        let mut e = Engine::new(model(), None, at("2026-11-22T00:00:00Z"));
        let mut out = Vec::new();
        cross(&mut e, &mut out, "2026-11-22T01:00:00Z", 0, 3, 0);
        cross(&mut e, &mut out, "2026-11-22T03:00:00Z", 0, 0, 4);
        tick_to(&mut e, &mut out, at("2026-11-22T13:00:00Z"));
        let day = day_of(&out);
        assert_eq!(
            (day.drift_rooms[0].residual, day.drift_rooms[0].clamped),
            (0, 1)
        );
        let c = &day.corrected.rooms[0];
        assert_eq!((c.scaled, c.entries, c.exits), (Scaled::Entries, 4, 4));
        // 4/3 × (3 × 12 h) − 4 × 10 h = 8 h.
        assert!(close(c.person_minutes, 480.0), "{c:?}");
        assert_eq!(day.corrected.method, Scaled::Entries);
        assert!(close(day.rooms[0].person_minutes, 360.0), "raw: 3 × 2 h");
    }

    #[test]
    fn scaled_entries_never_fall_below_the_clamped_curve_which_is_a_lower_bound() {
        // Truth: A came in unseen at 09:00 and left at 09:30 (seen: clamped back at once);
        // ten came in at 10:00 and left at 20:00. Truth 30 + 6000 person-minutes; the clamped
        // curve holds 6000. Scaling entries by 11/10 spreads A over the ten and dips early:
        // 1.1 × 10 × 660 − (690 + 10 × 60) = 5970, under the lower bound, so 6000 it is.
        let mut e = Engine::new(model(), None, at("2026-11-22T00:00:00Z"));
        let mut out = Vec::new();
        cross(&mut e, &mut out, "2026-11-22T01:30:00Z", 0, 0, 1);
        cross(&mut e, &mut out, "2026-11-22T02:00:00Z", 0, 10, 0);
        cross(&mut e, &mut out, "2026-11-22T12:00:00Z", 0, 0, 10);
        tick_to(&mut e, &mut out, at("2026-11-22T13:00:00Z"));
        let day = day_of(&out);
        assert_eq!(day.drift_rooms[0].clamped, 1);
        let c = &day.corrected.rooms[0];
        assert_eq!((c.scaled, c.entries, c.exits), (Scaled::Entries, 11, 11));
        assert!(
            close(day.rooms[0].person_minutes, 6000.0),
            "raw: {:?}",
            day.rooms[0]
        );
        assert!(close(c.person_minutes, 6000.0), "{c:?}");
    }

    #[test]
    fn terminal_passages_give_members_strangers_fevers_and_unique_visitors() {
        let mut m = model();
        m.service_visits = vec![
            ServiceVisits::None,
            ServiceVisits::Passages,
            ServiceVisits::Entries,
        ];
        let t = at("2026-11-22T02:00:00Z");
        let mut e = Engine::new(m, None, t);
        let mut hasher = MemberHasher::with_salt_source(|| [7; 32]);
        let day = e.state().day;
        let mut member = |id: &str| Some(hasher.hash(day, &MemberRef::new(id)));
        let facts = |room, member, fever, mask_off| PassageFacts {
            room,
            member,
            fever,
            mask_off,
            sensor_error: false,
            people: 1,
        };
        let (a, b) = (member("a"), member("b"));
        ticks(&mut e, "2026-11-22T02:01:00Z");
        e.crossings(0, 2, 0, at("2026-11-22T02:01:00Z"));
        e.passage(&facts(0, a, false, false));
        e.passage(&facts(1, a, true, false));
        e.passage(&facts(1, a, false, true));
        e.passage(&facts(1, b, false, false));
        e.passage(&facts(1, None, false, false));
        let out = ticks(&mut e, "2026-11-22T02:15:00Z");
        let [q] = quarters(&out).try_into().expect("one quarter");
        let (lobby, reading) = (&q.rooms[0], &q.rooms[1]);
        assert_eq!(
            (lobby.service_visits, lobby.entries, lobby.unique_visitors),
            (0, 2, 1),
            "the lobby gives no service visits"
        );
        assert_eq!(
            (
                reading.service_visits,
                reading.unique_visitors,
                reading.member_visits,
                reading.stranger_visits,
                reading.fevers,
                reading.mask_off
            ),
            (4, 2, 3, 1, 1, 1)
        );
        assert_eq!((q.hall.unique_visitors, q.hall.member_visits), (2, 4));
        assert_eq!((q.hall.service_visits, q.hall.stranger_visits), (4, 1));
    }

    #[test]
    fn the_device_online_ratio_weighs_time_from_the_first_report() {
        let mut e = Engine::new(model(), None, at("2026-11-22T02:00:00Z"));
        ticks(&mut e, "2026-11-22T02:03:00Z");
        e.devices_online(1, 2, at("2026-11-22T02:03:00Z"));
        ticks(&mut e, "2026-11-22T02:05:00Z");
        e.devices_online(2, 2, at("2026-11-22T02:05:00Z"));
        let [q] = quarters(&ticks(&mut e, "2026-11-22T02:15:00Z"))
            .try_into()
            .expect("one quarter");
        // 2 min with 1 of 2, then 10 min with 2 of 2; the first 3 minutes are not measured.
        let ratio = q.hall.device_online_ratio.expect("measured");
        assert!(close(ratio, (2.0 + 20.0) / 24.0), "{ratio}");
    }

    /// Runs the same morning with or without a save and restore in the middle of a bin.
    fn morning(restore_at: Option<usize>) -> Vec<EngineOutput> {
        let steps: [(&str, usize, u64, u64); 5] = [
            ("2026-11-22T02:01:00Z", 0, 3, 0),
            ("2026-11-22T02:07:30Z", 1, 2, 0),
            ("2026-11-22T02:16:00Z", 1, 0, 1),
            ("2026-11-22T02:16:00Z", 0, 0, 2),
            ("2026-11-22T02:40:00Z", 1, 0, 1),
        ];
        let mut e = Engine::new(model(), None, at("2026-11-22T02:00:00Z"));
        let mut out = Vec::new();
        for (i, (t, door, i_n, o_n)) in steps.into_iter().enumerate() {
            if restore_at == Some(i) {
                let saved = serde_json::to_string(e.state()).expect("serialises");
                let restored: EngineState = serde_json::from_str(&saved).expect("deserialises");
                e = Engine::new(model(), Some(restored), at(t));
            }
            cross(&mut e, &mut out, t, door, i_n, o_n);
        }
        tick_to(&mut e, &mut out, at("2026-11-22T13:00:00Z"));
        out
    }

    #[test]
    fn a_state_restored_in_the_middle_of_a_bin_gives_the_same_figures_as_an_unbroken_run() {
        let unbroken = morning(None);
        assert!(!quarters(&unbroken).is_empty());
        for i in 1..5 {
            assert_eq!(morning(Some(i)), unbroken, "restored before step {i}");
        }
    }

    #[test]
    fn a_state_saved_before_the_figures_existed_still_loads_and_opens_its_windows() {
        let mut e = Engine::new(model(), None, at("2026-11-22T02:00:00Z"));
        e.crossings(0, 2, 0, at("2026-11-22T02:00:00Z"));
        let mut saved: serde_json::Value = serde_json::to_value(e.state()).expect("serialises");
        saved
            .as_object_mut()
            .expect("an object")
            .remove("situation");
        let old: EngineState = serde_json::from_value(saved).expect("an old state loads");
        assert_eq!(old.situation, None);
        let mut e = Engine::new(model(), Some(old), at("2026-11-22T02:05:00Z"));
        // The first tick after a restart finds the minute bin of 02:00 long gone.
        e.tick(at("2026-11-22T02:05:00Z"));
        let [q] = quarters(&ticks(&mut e, "2026-11-22T02:15:00Z"))
            .try_into()
            .expect("one quarter");
        // Seen from 02:05 only: 2 people for 10 minutes.
        assert!(close(q.rooms[0].person_minutes, 20.0));
        assert!(close(q.rooms[0].occupancy_mean, 2.0));
        assert_eq!(q.start, at("2026-11-22T02:00:00Z"));
    }

    #[test]
    fn a_closing_time_inside_a_bin_splits_it_between_the_two_days() {
        let mut m = model();
        m.closing_time = time(21, 10, 0, 0);
        let mut e = Engine::new(m, None, at("2026-11-22T13:00:00Z"));
        e.crossings(0, 1, 0, at("2026-11-22T13:00:00Z"));
        let out = ticks(&mut e, "2026-11-22T13:15:00Z");
        let qs = quarters(&out);
        let spans: Vec<_> = qs.iter().map(|q| (q.start, q.end, q.day)).collect();
        assert_eq!(
            spans,
            vec![
                (
                    at("2026-11-22T13:00:00Z"),
                    at("2026-11-22T13:10:00Z"),
                    date(2026, 11, 22)
                ),
                (
                    at("2026-11-22T13:10:00Z"),
                    at("2026-11-22T13:15:00Z"),
                    date(2026, 11, 23)
                ),
            ]
        );
        assert!(close(qs[0].rooms[0].person_minutes, 10.0));
        assert_eq!(qs[0].open_minutes, 10);
        assert_eq!(qs[1].open_minutes, 0);
        assert_eq!(qs[1].rooms[0].person_minutes, 0.0, "reset at close");
    }

    #[test]
    fn a_hall_opening_when_it_closes_is_open_the_whole_day() {
        let mut m = model();
        m.opening_time = m.closing_time;
        assert_eq!(
            m.open_from(at("2026-11-22T13:00:00Z")),
            at("2026-11-21T13:00:00Z")
        );
    }

    #[test]
    fn a_hall_closing_after_midnight_opens_the_evening_before() {
        let mut m = model();
        m.closing_time = time(2, 0, 0, 0);
        m.opening_time = time(18, 0, 0, 0);
        // Close at 02:00 local on the 23rd = 18:00Z on the 22nd; open 18:00 local = 10:00Z.
        assert_eq!(
            m.open_from(at("2026-11-22T18:00:00Z")),
            at("2026-11-22T10:00:00Z")
        );
    }

    /// One event of a generated day.
    #[derive(Debug, Clone)]
    enum Ev {
        Cross(usize, u64, u64),
        Pass(usize, Option<u8>, bool),
    }

    fn play(groups: &[(u32, Vec<Ev>)], shuffle: Option<u64>) -> Vec<EngineOutput> {
        let mut hasher = MemberHasher::with_salt_source(|| [9; 32]);
        let mut t = at("2026-11-22T12:20:00Z");
        let mut e = Engine::new(model(), None, t);
        let mut out = Vec::new();
        let mut seed = shuffle.unwrap_or(0);
        for (step, events) in groups {
            t += jiff::SignedDuration::from_secs(i64::from(*step));
            tick_to(&mut e, &mut out, t);
            let mut events = events.clone();
            if shuffle.is_some() {
                for i in (1..events.len()).rev() {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    events.swap(i, (seed >> 33) as usize % (i + 1));
                }
            }
            for ev in events {
                // As the supervisor does: every event advances the clock first.
                out.extend(e.tick(t));
                match ev {
                    Ev::Cross(door, i, o) => e.crossings(door, i, o, t),
                    Ev::Pass(room, member, fever) => {
                        let day = e.state().day;
                        let member =
                            member.map(|m| hasher.hash(day, &MemberRef::new(m.to_string())));
                        e.passage(&PassageFacts {
                            room,
                            member,
                            fever,
                            mask_off: false,
                            sensor_error: false,
                            people: 1,
                        });
                    }
                }
            }
        }
        out.extend(e.tick(t + jiff::SignedDuration::from_hours(25)));
        // Minute bins included: their peaks, too, are what held for some time.
        out
    }

    fn events() -> impl Strategy<Value = Vec<(u32, Vec<Ev>)>> {
        let ev = prop_oneof![
            4 => (0usize..3, 0u64..4, 0u64..4).prop_map(|(d, i, o)| Ev::Cross(d, i, o)),
            1 => (0usize..3, proptest::option::of(0u8..5), any::<bool>())
                .prop_map(|(r, m, f)| Ev::Pass(r, m, f)),
        ];
        proptest::collection::vec(
            (
                prop_oneof![Just(0u32), 1u32..5, 60u32..900],
                proptest::collection::vec(ev, 1..5),
            ),
            1..40,
        )
    }

    proptest! {
        /// Reads stamped with the same instant can reach the engine in any order (two
        /// counters polled in the same tick, a passage and a crossing): the figures are the
        /// same whichever came first — including peaks, clamping and drift.
        #[test]
        fn events_at_the_same_instant_give_the_same_figures_in_any_order(
            groups in events(),
            seed in any::<u64>(),
        ) {
            prop_assert_eq!(play(&groups, Some(seed)), play(&groups, None));
        }

        /// The day is the sum of its bins, and the hall the sum of its rooms, wherever a
        /// figure adds up.
        #[test]
        fn bins_add_up_to_the_day_and_rooms_to_the_hall(groups in events()) {
            let out = play(&groups, None);
            let mut bins: Vec<&QuarterClosed> = Vec::new();
            for o in &out {
                match o {
                    EngineOutput::QuarterClosed(q) => bins.push(q),
                    EngineOutput::DayClosed(d) => {
                        if let Some(day) = &d.figures {
                            let sum: f64 = bins.iter().map(|q| q.hall.person_minutes).sum();
                            prop_assert!((sum - day.hall.person_minutes).abs() < 1e-6,
                                "bins {} vs day {}", sum, day.hall.person_minutes);
                            let visits: u64 = bins.iter().map(|q| q.hall.service_visits).sum();
                            prop_assert_eq!(visits, day.hall.service_visits);
                            let entries: u64 = bins.iter().map(|q| q.hall.entries).sum();
                            prop_assert_eq!(entries, day.hall.entries);
                            let peak = bins.iter().map(|q| q.hall.occupancy_peak).max();
                            prop_assert_eq!(peak.unwrap_or(0), day.hall.occupancy_peak);
                            check_rooms_add_up(&day.hall, &day.rooms)?;
                            let c = &day.corrected;
                            let sum: f64 = c.rooms.iter().map(|r| r.person_minutes).sum();
                            prop_assert!((sum - c.hall.person_minutes).abs() < 1e-6);
                            for r in &c.rooms {
                                if r.scaled != Scaled::None {
                                    prop_assert_eq!(r.entries, r.exits, "a scaled room ends at zero");
                                }
                            }
                        }
                        bins.clear();
                    }
                    EngineOutput::MinuteClosed(_) | EngineOutput::Skipped { .. } => {}
                }
            }
            for q in bins {
                check_rooms_add_up(&q.hall, &q.rooms)?;
            }
        }
    }

    fn check_rooms_add_up(hall: &HallFigures, rooms: &[RoomFigures]) -> Result<(), TestCaseError> {
        let sum = |f: fn(&RoomFigures) -> u64| rooms.iter().map(f).sum::<u64>();
        prop_assert_eq!(hall.service_visits, sum(|r| r.service_visits));
        prop_assert_eq!(hall.member_visits, sum(|r| r.member_visits));
        prop_assert_eq!(hall.stranger_visits, sum(|r| r.stranger_visits));
        prop_assert_eq!(hall.fevers, sum(|r| r.fevers));
        prop_assert_eq!(hall.mask_off, sum(|r| r.mask_off));
        let pm: f64 = rooms.iter().map(|r| r.person_minutes).sum();
        prop_assert!((pm - hall.person_minutes).abs() < 1e-6);
        let mean: f64 = rooms.iter().map(|r| r.occupancy_mean).sum();
        prop_assert!((mean - hall.occupancy_mean).abs() < 1e-9);
        prop_assert!(hall.occupancy_peak <= rooms.iter().map(|r| r.occupancy_peak).sum());
        prop_assert!(hall.unique_visitors <= sum(|r| r.unique_visitors));
        Ok(())
    }
}
