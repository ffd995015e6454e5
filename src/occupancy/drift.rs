//! Live drift correction: what each counting line misses, learned from past days, taken off
//! the live occupancy as the day goes.
//!
//! Part of the pure occupancy engine. At every day close the engine hands [`DriftState::learn`]
//! each door's crossings of the day; the learned factors live in the engine state (saved with
//! it, so a restart keeps them) and [`live`] turns the state into corrected live figures for
//! the `state` message and the status page, beside the raw ones, which stay as they are.
//!
//! **What one day tells.** A door that is the only way into what lies behind it (a *bridge*:
//! every room of a tree-shaped hall is reached through one) is crossed as often inward as
//! outward over a day that starts and ends empty, so its counted `in − out` at close is
//! exactly `missed out − missed in`: one number per line and day. Which direction missed is
//! not identifiable from it; the correction assumes the one the sign points to (a positive
//! residual: exits were missed), which is right when a line misses mostly one way, and off by
//! a second-order term (the miss rate times the occupancy) when both ways miss alike. A door
//! that is not a bridge (a room with two doors) has a true net flow of its own and teaches
//! nothing; its factors stay zero.
//!
//! **Robust factors.** Per line, exponentially weighted sums (decay [`DECAY`] a day) of the
//! residual and of the counted crossings each way; the factor is the ratio of the sums with
//! [`PRIOR_CROSSINGS`] added to the denominator, which shrinks it towards zero while a line
//! has few days (or few crossings) behind it, and it is clamped to [`MAX_FACTOR`]. Each day's
//! residual is first clamped to that share of its crossings, so one bad day (a counter reset,
//! a door propped open) moves the factor by a bounded step.
//!
//! **Live.** A line's estimated misses so far are its factor times the crossings counted so far
//! in the missing direction; each room gets the misses of its doors with the side's sign. A
//! room that a camera re-anchored, or whose balance was clamped at zero, holds the truth (or a
//! bound of it) at that moment: the correction already absorbed then is kept and only what
//! comes after is applied. The transit zone (the one room the street doors lead into, which
//! also leads on to the others: the lobby) is counted on both sides, so every line's error
//! lands in it; once the street lines have learned for [`MIN_DAYS`] days, and unless a camera
//! re-anchored it, it gets the balance of the hall (the street lines alone, corrected) less the
//! other rooms instead, which also takes in what the other rooms' clamps and camera counts
//! found. Nothing is ever shown below zero.
//!
//! With no misses every residual is zero, every factor exactly zero, and the corrected figures
//! are the raw ones.

use serde::{Deserialize, Serialize};

use super::{EngineState, HallModel};
use crate::config::Zone;

/// Weight of yesterday's sums today: a miss rate that changes (a beam gets dirty) is followed
/// within a week or so, while one day's noise is averaged over about seven.
pub const DECAY: f64 = 0.85;
/// Counted crossings added to a factor's denominator: shrinks it towards zero with few days.
pub const PRIOR_CROSSINGS: f64 = 100.0;
/// No line is believed to miss more than this share of its crossings.
pub const MAX_FACTOR: f64 = 0.10;
/// Days the street lines must have learned from before the lobby is taken from their balance.
pub const MIN_DAYS: u32 = 3;

/// What one counting line (a door) has taught.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LineDrift {
    /// The door's sides by name (`outside` or a room id): a config that reorders its doors
    /// keeps each line's learning.
    pub from: String,
    pub to: String,
    /// Exponentially weighted sums over closed days: the residual `in − out`, and the counted
    /// crossings each way.
    #[serde(default)]
    pub residual: f64,
    #[serde(default)]
    pub inward: f64,
    #[serde(default)]
    pub outward: f64,
    /// Days learned from.
    #[serde(default)]
    pub days: u32,
}

impl LineDrift {
    /// Estimated misses per counted crossing: (inward, outward); at most one is non-zero.
    pub fn factors(&self) -> (f64, f64) {
        if self.residual > 0.0 {
            let f = self.residual / (self.outward + PRIOR_CROSSINGS);
            (0.0, f.clamp(0.0, MAX_FACTOR))
        } else if self.residual < 0.0 {
            let f = -self.residual / (self.inward + PRIOR_CROSSINGS);
            (f.clamp(0.0, MAX_FACTOR), 0.0)
        } else {
            (0.0, 0.0)
        }
    }

    /// Estimated crossings missed (inward, outward) when `counted` were counted.
    pub fn missed(&self, counted: (u64, u64)) -> (f64, f64) {
        let (fi, fo) = self.factors();
        (fi * counted.0 as f64, fo * counted.1 as f64)
    }
}

/// A room's re-anchoring today.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoomAnchor {
    /// The live correction (people) that was due when the room's balance was last re-anchored
    /// (camera) or clamped: already in the balance, so not applied again.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub absorbed: f64,
    /// A room camera re-anchored the room today.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub camera: bool,
}

fn is_zero_f64(x: &f64) -> bool {
    *x == 0.0
}

/// The learned factors and today's anchors; part of the engine state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DriftState {
    /// Per door, in config order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<LineDrift>,
    /// Per room, in config order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rooms: Vec<RoomAnchor>,
}

fn zone_name(model: &HallModel, zone: Zone) -> String {
    match zone {
        Zone::Outside => crate::config::OUTSIDE.to_string(),
        Zone::Room(r) => model.room_ids.get(r).cloned().unwrap_or_default(),
    }
}

impl DriftState {
    /// Nothing learned and nothing anchored yet (a fresh engine): left out of the saved state.
    /// The lists fill only when there is something to keep, so a state saved and restored
    /// equals the one saved.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.rooms.is_empty()
    }

    /// For `model`, keeping what `old` learned for the doors it still has (matched by their
    /// sides' names, in order) and its anchors for the rooms it still has (`old_ids`: the
    /// rooms `old` was saved with).
    pub fn for_model(model: &HallModel, old: Option<(&DriftState, &[String])>) -> Self {
        let Some((old, old_ids)) = old.filter(|(old, _)| !old.is_empty()) else {
            return DriftState::default();
        };
        let rooms = if old.rooms.is_empty() {
            Vec::new()
        } else {
            model
                .room_ids
                .iter()
                .map(|id| {
                    old_ids
                        .iter()
                        .position(|o| o == id)
                        .and_then(|i| old.rooms.get(i).cloned())
                        .unwrap_or_default()
                })
                .collect()
        };
        DriftState {
            lines: lines_for(model, &old.lines),
            rooms,
        }
    }

    /// Records that `room`'s balance was just re-anchored with `absorbed` people of
    /// correction in it (by a camera when `camera`).
    pub fn anchor(&mut self, room: usize, rooms: usize, absorbed: f64, camera: bool) {
        let unchanged = self.rooms.get(room).is_none_or(|a| a.absorbed == 0.0);
        if absorbed == 0.0 && !camera && unchanged {
            return;
        }
        if self.rooms.len() < rooms {
            self.rooms.resize(rooms, RoomAnchor::default());
        }
        if let Some(a) = self.rooms.get_mut(room) {
            a.absorbed = absorbed;
            a.camera |= camera;
        }
    }

    /// Learns from a closed day's counted crossings per door (`doors[d] = (in, out)`), then
    /// forgets the day's anchors.
    pub fn learn(&mut self, model: &HallModel, doors: &[(u64, u64)]) {
        if self.lines.len() != model.doors.len() {
            self.lines = lines_for(model, &self.lines);
        }
        for (d, line) in self.lines.iter_mut().enumerate() {
            let Some(&(inward, outward)) = doors.get(d) else {
                continue;
            };
            if inward + outward == 0 || !is_bridge(model, d) {
                continue;
            }
            let crossings = (inward + outward) as f64 / 2.0;
            let limit = MAX_FACTOR * crossings;
            let residual = (inward as f64 - outward as f64).clamp(-limit, limit);
            line.residual = DECAY * line.residual + residual;
            line.inward = DECAY * line.inward + inward as f64;
            line.outward = DECAY * line.outward + outward as f64;
            line.days = line.days.saturating_add(1);
        }
        self.rooms.clear();
    }

    /// The live correction of each room (people to add to its balance), from the crossings
    /// counted today per door.
    pub fn room_corrections(
        &self,
        doors: &[(Zone, Zone)],
        counted: &[(u64, u64)],
        rooms: usize,
    ) -> Vec<f64> {
        let mut out = vec![0.0; rooms];
        for ((&(from, to), line), &c) in doors.iter().zip(&self.lines).zip(counted) {
            let (missed_in, missed_out) = line.missed(c);
            if let Zone::Room(r) = to
                && let Some(x) = out.get_mut(r)
            {
                *x += missed_in - missed_out;
            }
            if let Zone::Room(r) = from
                && let Some(x) = out.get_mut(r)
            {
                *x += missed_out - missed_in;
            }
        }
        out
    }
}

/// One line per door of `model`, each with what `old` learned for a door with the same sides
/// (in order, so two doors between the same rooms keep theirs).
fn lines_for(model: &HallModel, old: &[LineDrift]) -> Vec<LineDrift> {
    let mut taken = vec![false; old.len()];
    model
        .doors
        .iter()
        .map(|&(from, to)| {
            let (from, to) = (zone_name(model, from), zone_name(model, to));
            let found = old
                .iter()
                .enumerate()
                .position(|(i, l)| l.from == from && l.to == to && !taken[i]);
            match found {
                Some(i) => {
                    taken[i] = true;
                    old[i].clone()
                }
                None => LineDrift {
                    from,
                    to,
                    ..LineDrift::default()
                },
            }
        })
        .collect()
}

/// Whether door `d` is the only way between its sides (removing it disconnects them).
fn is_bridge(model: &HallModel, d: usize) -> bool {
    let Some(&(from, to)) = model.doors.get(d) else {
        return false;
    };
    let index = |z: Zone| match z {
        Zone::Outside => 0,
        Zone::Room(r) => r + 1,
    };
    let zones = model.room_ids.len() + 1;
    let mut seen = vec![false; zones];
    let mut stack = vec![index(from)];
    while let Some(z) = stack.pop() {
        if z >= zones || seen[z] {
            continue;
        }
        seen[z] = true;
        for (i, &(a, b)) in model.doors.iter().enumerate() {
            if i == d {
                continue;
            }
            if index(a) == z {
                stack.push(index(b));
            } else if index(b) == z {
                stack.push(index(a));
            }
        }
    }
    !seen.get(index(to)).copied().unwrap_or(false)
}

/// The corrected live figures, beside the raw ones.
#[derive(Debug, Clone, PartialEq)]
pub struct Live {
    /// Per room: corrected occupancy (people, never below zero).
    pub rooms: Vec<u64>,
    /// The whole hall: the street lines' balance, corrected (or the rooms' sum, if larger).
    pub hall: u64,
    /// Today's crossings from and to the street, raw and corrected.
    pub hall_entries: u64,
    pub hall_exits: u64,
    pub hall_entries_corrected: u64,
    pub hall_exits_corrected: u64,
    /// The room taken as the transit zone (occupancy from the hall's balance and the other
    /// rooms), if any.
    pub transit: Option<usize>,
}

/// The room the street doors lead into that also leads on to other rooms, if there is exactly
/// one such and every street door goes into it.
pub fn transit_zone(doors: &[(Zone, Zone)]) -> Option<usize> {
    let mut street_rooms = doors.iter().filter_map(|&(a, b)| match (a, b) {
        (Zone::Outside, Zone::Room(r)) | (Zone::Room(r), Zone::Outside) => Some(r),
        _ => None,
    });
    let first = street_rooms.next()?;
    if street_rooms.any(|r| r != first) {
        return None;
    }
    let leads_on = doors.iter().any(|&(a, b)| {
        (a == Zone::Room(first) && matches!(b, Zone::Room(_)))
            || (b == Zone::Room(first) && matches!(a, Zone::Room(_)))
    });
    leads_on.then_some(first)
}

/// The corrected live figures of `state` for a hall with `doors` (config order).
pub fn live(state: &EngineState, doors: &[(Zone, Zone)]) -> Live {
    let rooms = state.rooms.len();
    let counted: Vec<(u64, u64)> = state
        .situation
        .as_ref()
        .map(|s| s.day.doors.clone())
        .unwrap_or_default();
    let counted_of = |d: usize| counted.get(d).copied().unwrap_or_default();
    let drift = &state.drift;
    let corrections = drift.room_corrections(doors, &counted, rooms);
    let mut corrected: Vec<f64> = state
        .rooms
        .iter()
        .enumerate()
        .map(|(r, room)| {
            let absorbed = drift.rooms.get(r).map_or(0.0, |a| a.absorbed);
            room.balance as f64 + corrections[r] - absorbed
        })
        .collect();

    // The street lines: raw crossings, estimated misses, and the hall's balance by them alone
    // (the rooms' balances less what clamps and cameras added).
    let (mut entries, mut exits, mut missed_entries, mut missed_exits) = (0u64, 0u64, 0.0, 0.0);
    for (d, &(from, to)) in doors.iter().enumerate() {
        let c = counted_of(d);
        let (mi, mo) = drift.lines.get(d).map_or((0.0, 0.0), |l| l.missed(c));
        match (from, to) {
            (Zone::Outside, Zone::Room(_)) => {
                entries += c.0;
                exits += c.1;
                missed_entries += mi;
                missed_exits += mo;
            }
            (Zone::Room(_), Zone::Outside) => {
                entries += c.1;
                exits += c.0;
                missed_entries += mo;
                missed_exits += mi;
            }
            _ => {}
        }
    }
    let added: i64 = state
        .rooms
        .iter()
        .map(|r| {
            i64::try_from(r.clamped)
                .unwrap_or(i64::MAX)
                .saturating_add(r.camera_correction)
        })
        .sum();
    let balance: i64 = state.rooms.iter().map(|r| r.balance).sum();
    let hall_lines = (balance - added) as f64 + missed_entries - missed_exits;

    // The street lines' balance is the better one for the lobby once they have learned (until
    // then, a lobby whose entries are missed is better off with its own clamped balance), and
    // while no camera re-anchored the lobby itself.
    let street_learned = doors
        .iter()
        .enumerate()
        .filter(|(_, (a, b))| (*a == Zone::Outside) != (*b == Zone::Outside))
        .all(|(d, _)| drift.lines.get(d).is_some_and(|l| l.days >= MIN_DAYS));
    let transit = transit_zone(doors)
        .filter(|&t| t < rooms && street_learned && !drift.rooms.get(t).is_some_and(|a| a.camera));
    if let Some(t) = transit {
        // The other rooms as shown (never below zero), except for a balance below zero that
        // has not settled yet (poll skew): taken as it is, so the raw lobby comes out.
        let others: f64 = corrected
            .iter()
            .zip(&state.rooms)
            .enumerate()
            .filter(|&(r, _)| r != t)
            .map(|(_, (x, room))| x.max(room.balance.min(0) as f64).round())
            .sum();
        corrected[t] = hall_lines.max(0.0).round() - others;
    }
    let rooms_out: Vec<u64> = corrected
        .iter()
        .map(|x| x.max(0.0).round() as u64)
        .collect();
    let hall = rooms_out.iter().sum();
    Live {
        rooms: rooms_out,
        hall,
        hall_entries: entries,
        hall_exits: exits,
        hall_entries_corrected: (entries as f64 + missed_entries).round() as u64,
        hall_exits_corrected: (exits as f64 + missed_exits).round() as u64,
        transit,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::model;
    use super::super::{Engine, EngineState, Input};
    use super::*;
    use jiff::Timestamp;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("test timestamp")
    }

    /// A day of the test hall (outside → lobby → reading, lecture) in which the reading-room
    /// door misses `missed` of its 100 exits; everyone leaves. Returns the engine after close.
    fn day_with_missed_exits(e: &mut Engine, date: &str, missed: u64) {
        let t = |hms: &str| at(&format!("{date}T{hms}Z"));
        e.apply(
            t("01:00:00"),
            Input::Crossings {
                door: 0,
                inward: 100,
                outward: 0,
            },
        );
        e.apply(
            t("01:01:00"),
            Input::Crossings {
                door: 1,
                inward: 100,
                outward: 0,
            },
        );
        e.apply(
            t("03:00:00"),
            Input::Crossings {
                door: 1,
                inward: 0,
                outward: 100 - missed,
            },
        );
        e.apply(
            t("03:01:00"),
            Input::Crossings {
                door: 0,
                inward: 0,
                outward: 100,
            },
        );
        e.apply(t("13:00:01"), Input::Time);
    }

    #[test]
    fn an_engine_state_saved_before_the_drift_field_still_loads() {
        let t = at("2026-11-22T02:00:10Z");
        let mut e = Engine::new(model(), None, t);
        day_with_missed_exits(&mut e, "2026-11-22", 4);
        let mut saved: serde_json::Value = serde_json::to_value(e.state()).expect("serialises");
        assert!(
            saved.get("drift").is_some(),
            "something was learned: {saved}"
        );
        saved.as_object_mut().expect("an object").remove("drift");
        let old: EngineState = serde_json::from_value(saved).expect("an old state loads");
        assert_eq!(old.drift, DriftState::default());
        let resumed = Engine::new(model(), Some(old), at("2026-11-23T00:00:00Z"));
        assert!(resumed.state().drift.is_empty());
        assert_eq!(resumed.live().rooms, vec![0, 0, 0]);
    }

    #[test]
    fn with_nothing_missed_nothing_is_learned_and_nothing_corrected() {
        let mut e = Engine::new(model(), None, at("2026-11-22T00:00:00Z"));
        for day in ["2026-11-22", "2026-11-23", "2026-11-24", "2026-11-25"] {
            day_with_missed_exits(&mut e, day, 0);
        }
        assert!(
            e.state()
                .drift
                .lines
                .iter()
                .all(|l| l.factors() == (0.0, 0.0))
        );
        assert_eq!(e.state().drift.lines[0].days, 4);
        let t = at("2026-11-26T01:00:00Z");
        e.apply(
            t,
            Input::Crossings {
                door: 0,
                inward: 30,
                outward: 2,
            },
        );
        e.apply(
            t,
            Input::Crossings {
                door: 1,
                inward: 10,
                outward: 1,
            },
        );
        let live = e.live();
        let raw: Vec<u64> = e.state().rooms.iter().map(|r| r.occupancy()).collect();
        assert_eq!(live.rooms, raw);
        assert_eq!(
            (live.hall_entries_corrected, live.hall_exits_corrected),
            (30, 2)
        );
    }

    #[test]
    fn a_line_that_missed_exits_yesterday_is_corrected_live_today() {
        let mut e = Engine::new(model(), None, at("2026-11-22T00:00:00Z"));
        for day in [
            "2026-11-22",
            "2026-11-23",
            "2026-11-24",
            "2026-11-25",
            "2026-11-26",
        ] {
            day_with_missed_exits(&mut e, day, 5);
        }
        let (fi, fo) = e.state().drift.lines[1].factors();
        assert_eq!(fi, 0.0);
        // 5 of 100 exits missed: 5 per 95 counted (0.053), shrunk towards zero while the
        // line has seen only a few hundred crossings.
        assert!((0.035..0.0527).contains(&fo), "{fo}");
        assert_eq!(e.state().drift.lines[0].factors(), (0.0, 0.0));
        // Today 60 went into the reading room and 40 came out counted: about 2 more did.
        let t = at("2026-11-27T02:00:00Z");
        e.apply(
            t,
            Input::Crossings {
                door: 0,
                inward: 60,
                outward: 0,
            },
        );
        e.apply(
            t,
            Input::Crossings {
                door: 1,
                inward: 60,
                outward: 40,
            },
        );
        let live = e.live();
        assert_eq!(e.state().rooms[1].occupancy(), 20, "the raw count stays");
        assert_eq!(live.rooms[1], 18);
        // The lobby gets them back, from the street lines' balance less the other rooms.
        assert_eq!(live.transit, Some(0));
        assert_eq!((e.state().rooms[0].occupancy(), live.rooms[0]), (40, 42));
        assert_eq!(live.hall, 60);
        // A camera sees 19: the room is re-anchored, and only later crossings are corrected.
        e.apply(t, Input::HeadCount { room: 1, heads: 19 });
        assert_eq!(e.live().rooms[1], 19);
        e.apply(
            at("2026-11-27T02:10:00Z"),
            Input::Crossings {
                door: 1,
                inward: 0,
                outward: 19,
            },
        );
        // 19 more counted out: about one more missed; never below zero.
        assert_eq!(e.state().rooms[1].occupancy(), 0);
        assert_eq!(e.live().rooms[1], 0);
    }

    #[test]
    fn one_bad_day_moves_a_factor_by_a_bounded_step_and_no_factor_passes_the_limit() {
        let mut e = Engine::new(model(), None, at("2026-11-22T00:00:00Z"));
        // A door propped open: 90 of 100 exits missed.
        day_with_missed_exits(&mut e, "2026-11-22", 90);
        let (_, fo) = e.state().drift.lines[1].factors();
        assert!(fo <= MAX_FACTOR, "{fo}");
        for day in [
            "2026-11-23",
            "2026-11-24",
            "2026-11-25",
            "2026-11-26",
            "2026-11-27",
        ] {
            day_with_missed_exits(&mut e, day, 0);
        }
        let (_, fo) = e.state().drift.lines[1].factors();
        assert!(fo < 0.02, "the bad day fades: {fo}");
    }

    #[test]
    fn a_door_that_is_not_the_only_way_in_teaches_nothing() {
        let mut m = model();
        // A second door between the lobby and the reading room.
        m.doors.push((Zone::Room(0), Zone::Room(1)));
        assert!(!is_bridge(&m, 1) && !is_bridge(&m, 3));
        assert!(is_bridge(&m, 0) && is_bridge(&m, 2));
        let mut e = Engine::new(m, None, at("2026-11-22T00:00:00Z"));
        day_with_missed_exits(&mut e, "2026-11-22", 5);
        assert_eq!(e.state().drift.lines[1].days, 0);
    }
}
