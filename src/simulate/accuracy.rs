//! The multi-day replay: how far the live figures are from the truth, day after day, with and
//! without the drift correction learning (`hallgate replay-day --days N`, `docs/accuracy.md`).
//!
//! ```text
//! DayOptions ×N (seed+i, date+i) ──► day::generate ──► events ──► occupancy::Engine ──► live figures
//!                                                 └──► crossings (truth) ─────────────────┘ compared every minute
//! ```
//!
//! Pure and seeded, like [`super::day`]: the same options give the same table. The events go
//! into the gateway's own [`Engine`] (the core hands it each counter read as one
//! [`Input::Crossings`] at its stamp, as here), one engine for all the days; between two days
//! its state is saved to JSON and restored, as a gateway restarted overnight would, so what it
//! learned survives the way the real one's does. Without learning, the learned part is dropped
//! at each restore: the gateway as it was before the correction existed. Every minute of the
//! open time the live occupancy (raw and corrected) of each room and of the hall is held
//! against the true one; at close, the day's street entries and exits.

use jiff::{Timestamp, ToSpan};
use serde::Serialize;

use crate::config::{Config, Zone};
use crate::devices::DeviceEvent;
use crate::occupancy::{DriftState, Engine, EngineState, HallModel, Input};
use crate::simulate::day::{self, DayError, DayOptions};
use crate::supervisor::reorder::stamp_of;

/// How often the live figures are compared with the truth.
const SAMPLE_MS: i64 = 60_000;

/// Absolute errors of one figure over a day's samples, in people.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Errors {
    pub mean: f64,
    pub p95: f64,
    pub max: f64,
}

impl Errors {
    fn of(mut errors: Vec<f64>) -> Self {
        if errors.is_empty() {
            return Errors::default();
        }
        errors.sort_by(f64::total_cmp);
        let n = errors.len();
        let p95 = errors[((n as f64 * 0.95).ceil() as usize).clamp(1, n) - 1];
        Errors {
            mean: errors.iter().sum::<f64>() / n as f64,
            p95,
            max: errors[n - 1],
        }
    }
}

/// One day's accuracy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DayAccuracy {
    pub day: String,
    /// True street entries (visits) of the day.
    pub visits: u64,
    /// Live occupancy of the whole hall: raw and corrected.
    pub hall_raw: Errors,
    pub hall: Errors,
    /// Live occupancy of every room, all samples of all rooms together.
    pub rooms_raw: Errors,
    pub rooms: Errors,
    /// The transit zone (lobby) alone, if the hall has one.
    pub transit_raw: Option<Errors>,
    pub transit: Option<Errors>,
    /// Street entries and exits at close against the truth, % (signed).
    pub entries_raw_pct: f64,
    pub exits_raw_pct: f64,
    pub entries_pct: f64,
    pub exits_pct: f64,
}

/// The multi-day run.
#[derive(Debug, Clone)]
pub struct MultiDay {
    /// The first day's options; day i takes seed + i and date + i days.
    pub first: DayOptions,
    pub days: u32,
    /// Keep what was learned from one day to the next.
    pub learn: bool,
    /// Instead of learning, give the engine the true miss rates (the floor any learning can
    /// reach: the misses themselves are random).
    pub oracle: bool,
}

/// Runs the days and returns each one's accuracy.
pub fn run(config: &Config, options: &MultiDay) -> Result<Vec<DayAccuracy>, DayError> {
    let model = HallModel::from_config(config);
    let doors: Vec<(Zone, Zone)> = config.doors.iter().map(|d| (d.from, d.to)).collect();
    let transit = crate::occupancy::drift::transit_zone(&doors);
    let mut saved: Option<EngineState> = None;
    let mut out = Vec::new();
    for i in 0..options.days {
        let mut o = options.first.clone();
        o.seed = options.first.seed.wrapping_add(u64::from(i));
        o.date = options
            .first
            .date
            .checked_add(i64::from(i).days())
            .map_err(|_| DayError::Hours {
                date: options.first.date,
                opening: options.first.opening_time,
            })?;
        let day = day::generate(config, &o)?;
        let start = Timestamp::from_millisecond(day.truth.opening_ms - 10 * 60_000)
            .unwrap_or(Timestamp::UNIX_EPOCH);
        // A restart before the day: the state as saved, learned factors and all (or without
        // them, for the run that does not learn).
        let restored = saved.take().map(|mut state| {
            if !options.learn {
                state.drift = DriftState::default();
            }
            if options.oracle {
                state.drift = oracle(&model, &o);
            }
            let json = serde_json::to_vec(&state).expect("engine state always serialises");
            serde_json::from_slice::<EngineState>(&json).expect("a saved state loads again")
        });
        let mut engine = Engine::new(model.clone(), restored, start);
        out.push(one_day(&mut engine, config, &day, transit));
        saved = Some(engine.state().clone());
    }
    Ok(out)
}

/// Learned factors equal to the true miss rates of `o`.
fn oracle(model: &HallModel, o: &DayOptions) -> DriftState {
    let mut drift = DriftState::for_model(model, None);
    // Sums so large that the prior does not count.
    let big = 1e12;
    for (d, line) in drift.lines.iter_mut().enumerate() {
        let (mi, mo) = o
            .miss_by_door
            .get(d)
            .copied()
            .unwrap_or((o.miss_in, o.miss_out));
        // Misses per counted crossing.
        let (fi, fo) = (mi / (1.0 - mi), mo / (1.0 - mo));
        line.inward = big;
        line.outward = big;
        line.residual = (fo - fi) * (big + crate::occupancy::drift::PRIOR_CROSSINGS);
        line.days = 1;
    }
    drift
}

/// Plays one day into `engine`, comparing as it goes.
fn one_day(
    engine: &mut Engine,
    config: &Config,
    day: &day::Day,
    transit: Option<usize>,
) -> DayAccuracy {
    let rooms = config.rooms.len();
    let stamp = |ms: i64| Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH);
    let (open, close) = (day.truth.opening_ms, day.truth.closing_ms);
    let mut truth = vec![0i64; rooms];
    let mut crossings = day.crossings.iter().peekable();
    let mut events = day.events.iter().peekable();
    let (mut hall_raw, mut hall) = (Vec::new(), Vec::new());
    let (mut rooms_raw, mut rooms_fixed) = (Vec::new(), Vec::new());
    let (mut transit_raw, mut transit_fixed) = (Vec::new(), Vec::new());
    // Every minute of the open time, and a second before close (the day's totals).
    let last = close - 1000;
    let samples = (1..)
        .map(|k| open + k * SAMPLE_MS)
        .take_while(|&t| t < last)
        .chain([last]);
    let mut live = engine.live();
    for sample in samples {
        while let Some(e) = events.next_if(|e| stamp_of(e) <= stamp(sample)) {
            feed(engine, config, e);
        }
        engine.apply(stamp(sample), Input::Time);
        while let Some(x) = crossings.next_if(|x| x.at_ms <= sample) {
            let (from, to) = (config.doors[x.door].from, config.doors[x.door].to);
            let (src, dst) = if x.inward { (from, to) } else { (to, from) };
            if let Zone::Room(r) = src {
                truth[r] -= 1;
            }
            if let Zone::Room(r) = dst {
                truth[r] += 1;
            }
        }
        live = engine.live();
        let raw: Vec<u64> = engine.state().rooms.iter().map(|r| r.occupancy()).collect();
        let true_hall: i64 = truth.iter().sum();
        hall_raw.push((raw.iter().sum::<u64>() as f64 - true_hall as f64).abs());
        hall.push((live.hall as f64 - true_hall as f64).abs());
        for r in 0..rooms {
            let e_raw = (raw[r] as f64 - truth[r] as f64).abs();
            let e = (live.rooms[r] as f64 - truth[r] as f64).abs();
            rooms_raw.push(e_raw);
            rooms_fixed.push(e);
            if Some(r) == transit {
                transit_raw.push(e_raw);
                transit_fixed.push(e);
            }
        }
    }
    for e in events {
        feed(engine, config, e);
    }
    // Past the close: the day closes and learns.
    engine.apply(stamp(close + 1000), Input::Time);
    let t = &day.truth.day_figures.hall;
    let pct = |got: u64, want: u64| 100.0 * (got as f64 - want as f64) / (want.max(1) as f64);
    DayAccuracy {
        day: day.truth.day.clone(),
        visits: t.entries,
        hall_raw: Errors::of(hall_raw),
        hall: Errors::of(hall),
        rooms_raw: Errors::of(rooms_raw),
        rooms: Errors::of(rooms_fixed),
        transit_raw: transit.map(|_| Errors::of(transit_raw)),
        transit: transit.map(|_| Errors::of(transit_fixed)),
        entries_raw_pct: pct(live.hall_entries, t.entries),
        exits_raw_pct: pct(live.hall_exits, t.exits),
        entries_pct: pct(live.hall_entries_corrected, t.entries),
        exits_pct: pct(live.hall_exits_corrected, t.exits),
    }
}

/// One device event, as the core hands it to the engine.
fn feed(engine: &mut Engine, config: &Config, event: &DeviceEvent) {
    match event {
        DeviceEvent::CounterRead {
            counter, at, step, ..
        } => {
            let Some(c) = config.counters.get(*counter) else {
                return;
            };
            engine.apply(
                *at,
                Input::Crossings {
                    door: c.door,
                    inward: step.inward,
                    outward: step.outward,
                },
            );
        }
        DeviceEvent::Passage { at, facts, .. } => {
            engine.apply(*at, Input::Passage(facts));
        }
        DeviceEvent::HeadCount {
            at, room, heads, ..
        } => {
            engine.apply(
                *at,
                Input::HeadCount {
                    room: *room,
                    heads: *heads,
                },
            );
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn hall() -> Config {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/venue_day/hall.toml");
        crate::config::load(&path, &crate::config::Overrides::default()).expect("the fixture")
    }

    #[test]
    fn explore() {
        let config = hall();
        let mut first = DayOptions::for_config(11, jiff::civil::date(2026, 12, 1), &config);
        first.parties = std::env::var("PARTIES")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(580);
        first.miss_out = std::env::var("MISS_OUT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0.02);
        first.miss_in = std::env::var("MISS_IN")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0.0);
        for (learn, oracle) in [(true, true), (true, false)] {
            let days = run(
                &config,
                &MultiDay {
                    first: first.clone(),
                    days: 10,
                    learn,
                    oracle,
                },
            )
            .expect("days");
            for d in days {
                println!(
                    "{oracle} {} visits {} hall {:.2}/{:.1}/{:.0} raw {:.2}/{:.1}/{:.0} rooms {:.2}/{:.1}/{:.0} raw {:.2}/{:.1}/{:.0} lobby {:?} raw {:?} tot {:+.2} {:+.2} raw {:+.2} {:+.2}",
                    d.day,
                    d.visits,
                    d.hall.mean,
                    d.hall.p95,
                    d.hall.max,
                    d.hall_raw.mean,
                    d.hall_raw.p95,
                    d.hall_raw.max,
                    d.rooms.mean,
                    d.rooms.p95,
                    d.rooms.max,
                    d.rooms_raw.mean,
                    d.rooms_raw.p95,
                    d.rooms_raw.max,
                    d.transit.map(|e| (e.mean * 100.0).round() / 100.0),
                    d.transit_raw.map(|e| (e.mean * 100.0).round() / 100.0),
                    d.entries_pct,
                    d.exits_pct,
                    d.entries_raw_pct,
                    d.exits_raw_pct
                );
            }
        }
    }
}
