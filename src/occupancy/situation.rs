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
use crate::terminals::MemberHash;

/// A 15-minute bin, in seconds.
pub const QUARTER_SECS: i64 = 900;
const QUARTER_MS: i64 = QUARTER_SECS * 1000;
const HOUR_MS: i64 = 3_600_000;
const MINUTE_MS: f64 = 60_000.0;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// How many of the configured people counters are online, as the supervisor last said.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCounts {
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
    /// [`Engine::devices_online`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<DeviceCounts>,
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
    /// `opening_time` before `close`.
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
        for room in self.state.rooms.iter_mut() {
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
            }
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
    pub fn devices_online(&mut self, online: u32, configured: u32, now: Timestamp) {
        self.advance_to(now);
        let counts = DeviceCounts {
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
    pub(super) fn close_quarter(&mut self) -> Option<QuarterClosed> {
        let figures = self.quarter_figures()?;
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
        Some(figures)
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
    /// than exits) has its exits scaled by k = entries ÷ exits; a room whose exits outran its
    /// entries (people clamped away, more exits than entries) has its entries scaled by
    /// k = exits ÷ entries. Either way the corrected count ends the day at zero, and its
    /// person-minutes are exact for the scaled counts: ∫(E − kX) dt = ∫E dt − k∫X dt (or
    /// k∫E − ∫X), from the integrals of the cumulative counts.
    ///
    /// The approximation: a missed crossing is spread evenly over the day's crossings on
    /// that side (k is one factor for the whole day), and the corrected curve E − kX is not
    /// clamped at zero, so a room whose misses came early can dip below zero for a while and
    /// its corrected person-minutes can come out a little under the truth. A room with no
    /// drift, or one whose drift scaling cannot fix (no exits at all, or counts that a room
    /// camera re-anchored), keeps its raw figures and `Scaled::None`.
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
                let (scaled, factor) = if room.occupancy() > 0 && e > x && x > 0 {
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
                        w.entries_ms as f64 - factor * w.exits_ms as f64,
                        w.open_entries_ms as f64 - factor * w.open_exits_ms as f64,
                    ),
                    Scaled::Entries => (
                        x,
                        x,
                        factor * w.entries_ms as f64 - w.exits_ms as f64,
                        factor * w.open_entries_ms as f64 - w.open_exits_ms as f64,
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
        Corrected {
            method,
            hall: CorrectedHall {
                person_minutes: rooms.iter().map(|r| r.person_minutes).sum(),
                occupancy_mean,
                utilisation_mean: occupancy_mean / capacity,
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
