//! A whole hall day, simulated: the device inputs the gateway would see, and the ground truth.
//!
//! ```text
//! DayOptions + Config ──► people (parties, bookings, itineraries) ──► crossings and passages
//!        ├──► device inputs: DeviceEvents as the drivers make them (counter reads, passages)
//!        └──► ground truth: what people did (15-min bins, the day, bookings, unbooked use)
//!                           and what the counters counted (misses included)
//! ```
//!
//! Pure and seeded, like [`super::traffic`]: no clock, no I/O; the same config, seed and
//! options always give the same day. `simulate::replay` plays the events through the real
//! core loop under a virtual clock, and `tests/venue_day.rs` holds the gateway's figures
//! against [`DayTruth`].
//!
//! The day: the hall is open from `opening_time` to its closing time (local, hall time zone).
//! Walk-in parties — one person, or a group of 2–4 who move together — arrive along an
//! hourly profile with a morning and an afternoon peak; each stays a while in the entrance
//! room, visits up to two of the rooms that are not bookable, and leaves; everyone is out by
//! closing time. Bookable rooms get bookings: most are held (attendees arrive around the start
//! and leave around the end), some are not (a few people, or nobody, turn up), and now and then
//! a small group uses a bookable room with no booking at all. People are members (drawn from a
//! pool, so some come back during the day) or strangers; a few have a fever, a few wear no mask.
//!
//! Devices: every counter is polled once a second (each at its own phase within the second), so
//! each crossing is stamped with the poll that first saw it; a read is emitted at the start
//! (the baseline) and whenever the totals changed, with the step the driver's own
//! [`CounterTracker`] makes of the totals. A configured share of crossings per direction is
//! missed by the counter (people leaving in groups occlude the beam). A terminal in a room
//! records everyone entering that room from the street side, as the driver would hand it over:
//! [`PassageFacts`] with the member's hash from a [`MemberHasher`].
//!
//! The truth is computed from the same stamps with the engine's rule for one read (its IN and
//! OUT crossings at one instant; peaks are what held for some time), so with no misses every
//! occupancy figure must match the gateway's exactly.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use jiff::civil::{Date, Time};
use jiff::{SignedDuration, Timestamp, ToSpan};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::config::profile::CountMode;
use crate::config::{Config, ServiceVisits, Zone};
use crate::devices::DeviceEvent;
use crate::devices::counter::{CounterTracker, Totals};
use crate::format::rfc3339;
use crate::occupancy::PassageFacts;
use crate::terminals::{DedupKey, MemberHasher, MemberRef};

/// Length of a situation bin.
pub const BIN_MINUTES: i64 = 15;
/// The gateway is up this long before opening (its baseline reads come first).
const LEAD_IN: SignedDuration = SignedDuration::from_mins(5);
/// Everyone has left by this long before closing.
const OUT_BY: SignedDuration = SignedDuration::from_mins(2);
/// Shortest time between two crossings of one person: longer than one poll, so the order of
/// a person's crossings survives the counters' quantisation to polls.
const MIN_STEP_MS: i64 = 2_000;

/// How the day goes.
#[derive(Debug, Clone)]
pub struct DayOptions {
    pub seed: u64,
    /// The hall's business day (local date).
    pub date: Date,
    /// From `hall.opening_time`.
    pub opening_time: Time,
    /// Walk-in parties over the day.
    pub parties: u32,
    /// Share of parties that are groups of 2–4.
    pub group_share: f64,
    /// Members are drawn from this many, the first ones more often.
    pub member_pool: u32,
    pub stranger_share: f64,
    pub fever_share: f64,
    pub mask_off_share: f64,
    /// Share of IN and of OUT crossings the counters miss.
    pub miss_in: f64,
    pub miss_out: f64,
    /// Per door (config order): its own (IN, OUT) miss shares instead of `miss_in`/`miss_out`;
    /// a door past the end of the list takes those.
    pub miss_by_door: Vec<(f64, f64)>,
    /// Rooms (indices) that take bookings (`rooms[].bookable`).
    pub bookable: Vec<usize>,
    /// Per room (`rooms[].service_visits`); a room left out counts its entries.
    pub service_visits: Vec<ServiceVisits>,
    /// A booking is held when its attendance reaches this share of the expected
    /// (`situation.held_share`).
    pub held_share: f64,
    /// Shortest unbooked-use episode reported (`situation.unbooked_min_minutes`).
    pub unbooked_min_minutes: i64,
}

impl DayOptions {
    /// [`DayOptions::new`] with the hall's own opening time, bookable rooms, service-visit
    /// rules and booking thresholds from `config`.
    pub fn for_config(seed: u64, date: Date, config: &Config) -> Self {
        DayOptions {
            opening_time: config.hall.opening_time,
            bookable: (0..config.rooms.len())
                .filter(|&r| config.rooms[r].bookable)
                .collect(),
            service_visits: config.rooms.iter().map(|r| r.service_visits).collect(),
            held_share: config.situation.held_share,
            unbooked_min_minutes: i64::from(config.situation.unbooked_min_minutes),
            ..DayOptions::new(seed, date)
        }
    }

    /// A busy ordinary day: 260 parties, a third of them groups, counters that miss nothing.
    pub fn new(seed: u64, date: Date) -> Self {
        DayOptions {
            seed,
            date,
            opening_time: Time::constant(8, 0, 0, 0),
            parties: 260,
            group_share: 0.3,
            member_pool: 120,
            stranger_share: 0.25,
            fever_share: 0.01,
            mask_off_share: 0.05,
            miss_in: 0.0,
            miss_out: 0.0,
            miss_by_door: Vec::new(),
            bookable: Vec::new(),
            service_visits: Vec::new(),
            held_share: 0.5,
            unbooked_min_minutes: 15,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DayError {
    #[error("the opening time {opening} is not before closing on {date} in the hall's time zone")]
    Hours { date: Date, opening: Time },
    #[error("the config has no door from the street: nobody can come in")]
    NoEntrance,
    #[error("{name} must be a share between 0 and 1, not {value}")]
    Share { name: &'static str, value: f64 },
}

/// A booking as the centre publishes it (the downlink's fields).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Booking {
    pub id: String,
    pub room: String,
    pub start: String,
    pub end: String,
    pub title: String,
    pub expected_attendance: u32,
}

/// One simulated day.
#[derive(Debug, Clone)]
pub struct Day {
    /// What the drivers would hand the core, in time order.
    pub events: Vec<DeviceEvent>,
    pub bookings: Vec<Booking>,
    pub truth: DayTruth,
    /// Every crossing people made (missed ones included), in the order they were made: the
    /// truth of live occupancy at any moment.
    pub crossings: Vec<Crossing>,
}

/// The figures of one room over a stretch of time.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RoomFigures {
    pub id: String,
    pub capacity: u32,
    pub entries: u64,
    pub exits: u64,
    pub service_visits: u64,
    /// Terminal passages into the room.
    pub passages: u64,
    pub unique_visitors: u64,
    pub member_visits: u64,
    pub stranger_visits: u64,
    pub fevers: u64,
    pub mask_off: u64,
    /// ∫ occupancy dt, person-milliseconds (exact).
    pub person_ms: i64,
    pub person_minutes: f64,
    pub occupancy_mean: f64,
    /// The highest occupancy that held for some time (the convention of every bin kind,
    /// minute bins included).
    pub occupancy_peak: u64,
    /// Share of the stretch with occupancy > 0.
    pub occupied_share: f64,
    /// person_minutes ÷ entries; `None` without entries.
    pub dwell_minutes_mean: Option<f64>,
    /// 1 = most person-minutes; ties by service visits, then config order.
    pub hotspot_rank: usize,
}

/// The whole hall's figures over a stretch of time.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HallFigures {
    /// From the street.
    pub entries: u64,
    /// To the street.
    pub exits: u64,
    pub service_visits: u64,
    pub unique_visitors: u64,
    pub member_visits: u64,
    pub stranger_visits: u64,
    pub fevers: u64,
    pub mask_off: u64,
    pub person_ms: i64,
    pub person_minutes: f64,
    pub occupancy_mean: f64,
    pub occupancy_peak: u64,
    /// When the hall first reached its peak in the stretch.
    pub occupancy_peak_at: Option<String>,
}

/// One stretch (a 15-minute bin, or the day's open time).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stretch {
    pub start: String,
    pub end: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub hall: HallFigures,
    pub rooms: Vec<RoomFigures>,
}

/// What became of a booking.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BookingTruth {
    pub booking_id: String,
    pub room: String,
    pub start: String,
    pub end: String,
    pub expected_attendance: u32,
    /// Whether the simulator sent the attendees (a held booking).
    pub planned_held: bool,
    pub held: bool,
    /// Peak occupancy in the slot.
    pub attendance: u64,
    pub attendance_share: f64,
    /// Minutes from the start until the room first reached the held threshold.
    pub start_delay_minutes: Option<f64>,
    pub occupancy_mean: f64,
}

/// A bookable room in use outside any booking.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Episode {
    pub room: String,
    pub start: String,
    pub end: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub occupancy_peak: u64,
    pub person_minutes: f64,
}

/// What one counter counted and missed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LineCount {
    pub counter: String,
    pub from: String,
    pub to: String,
    /// Crossings the counter counted, IN and OUT.
    #[serde(rename = "in")]
    pub in_count: u64,
    #[serde(rename = "out")]
    pub out_count: u64,
    pub missed_in: u64,
    pub missed_out: u64,
}

/// A room as the counters saw it: what they counted, and when each missed crossing was.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RoomCount {
    pub id: String,
    pub entries: u64,
    pub exits: u64,
    pub missed_entries: u64,
    pub missed_exits: u64,
    /// Stamps (Unix ms) of the crossings into or out of the room that no counter counted.
    pub missed_at_ms: Vec<i64>,
    /// What the counted crossings leave in the room at the end of the day.
    pub residual: i64,
}

/// The ground truth of one day.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DayTruth {
    pub hall_id: String,
    pub day: String,
    pub open_from: String,
    pub open_to: String,
    pub opening_ms: i64,
    pub closing_ms: i64,
    /// 15-minute bins over the open time, aligned in the hall's time zone.
    pub bins: Vec<Stretch>,
    /// The open time as one stretch.
    pub day_figures: Stretch,
    /// Local "HH:00" of the hour with most hall service visits (earliest on a tie).
    pub peak_hour: Option<String>,
    pub bookings: Vec<BookingTruth>,
    pub unbooked: Vec<Episode>,
    pub lines: Vec<LineCount>,
    pub counted: Vec<RoomCount>,
    /// People in the hall's rooms at closing (0: everyone left).
    pub inside_at_close: u64,
}

/// One person through one door, at the poll that saw it (or would have).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crossing {
    pub at_ms: i64,
    pub door: usize,
    /// Along the door's IN direction (`from` → `to`).
    pub inward: bool,
    /// The counter missed it.
    pub missed: bool,
}

/// One terminal record.
#[derive(Debug, Clone)]
struct Passage {
    at_ms: i64,
    terminal: usize,
    room: usize,
    member: Option<u32>,
    fever: bool,
    mask_off: bool,
}

/// A person as the terminals see them.
#[derive(Debug, Clone, Copy)]
struct Person {
    member: Option<u32>,
    fever: bool,
    mask_off: bool,
}

/// The hall's doors as a tree from the street: how to walk from any zone to any other.
struct Paths {
    /// Per room: (door to its parent, its parent zone); the parent is nearer the street.
    parent: Vec<Option<(usize, Zone)>>,
}

impl Paths {
    fn new(config: &Config) -> Result<Self, DayError> {
        let mut parent = vec![None; config.rooms.len()];
        let mut seen = vec![false; config.rooms.len()];
        let mut queue = VecDeque::from([Zone::Outside]);
        let mut any = false;
        while let Some(zone) = queue.pop_front() {
            for (d, door) in config.doors.iter().enumerate() {
                let next = if door.from == zone {
                    door.to
                } else if door.to == zone {
                    door.from
                } else {
                    continue;
                };
                if let Zone::Room(r) = next
                    && !seen[r]
                {
                    seen[r] = true;
                    any |= zone == Zone::Outside;
                    parent[r] = Some((d, zone));
                    queue.push_back(next);
                }
            }
        }
        if !any {
            return Err(DayError::NoEntrance);
        }
        Ok(Paths { parent })
    }

    /// Zones from `zone` up to the street, `zone` first.
    fn up(&self, zone: Zone) -> Vec<Zone> {
        let mut out = vec![zone];
        let mut z = zone;
        while let Zone::Room(r) = z {
            match self.parent[r] {
                Some((_, p)) => {
                    out.push(p);
                    z = p;
                }
                None => break,
            }
        }
        out
    }

    /// The hops (door, from, to) of the walk from `a` to `b`.
    fn walk(&self, a: Zone, b: Zone) -> Vec<(usize, Zone, Zone)> {
        let up_a = self.up(a);
        let up_b = self.up(b);
        let meet = up_a
            .iter()
            .position(|z| up_b.contains(z))
            .unwrap_or(up_a.len() - 1);
        let meet_zone = up_a[meet];
        let mut hops = Vec::new();
        for w in up_a[..=meet].windows(2) {
            if let Zone::Room(r) = w[0]
                && let Some((door, _)) = self.parent[r]
            {
                hops.push((door, w[0], w[1]));
            }
        }
        let down_len = up_b.iter().position(|z| *z == meet_zone).unwrap_or(0);
        let down = &up_b[..=down_len];
        for w in down.windows(2).rev() {
            if let Zone::Room(r) = w[0]
                && let Some((door, _)) = self.parent[r]
            {
                hops.push((door, w[1], w[0]));
            }
        }
        hops
    }

    /// The room one comes into first from the street.
    fn entrance(&self) -> Option<usize> {
        self.parent
            .iter()
            .position(|p| matches!(p, Some((_, Zone::Outside))))
    }
}

/// Builds the day.
pub fn generate(config: &Config, options: &DayOptions) -> Result<Day, DayError> {
    for (name, value) in [
        ("group_share", options.group_share),
        ("stranger_share", options.stranger_share),
        ("fever_share", options.fever_share),
        ("mask_off_share", options.mask_off_share),
        ("miss_in", options.miss_in),
        ("miss_out", options.miss_out),
        ("held_share", options.held_share),
    ]
    .into_iter()
    .chain(
        options
            .miss_by_door
            .iter()
            .flat_map(|&(i, o)| [("miss_by_door", i), ("miss_by_door", o)]),
    ) {
        if !(0.0..=1.0).contains(&value) {
            return Err(DayError::Share { name, value });
        }
    }
    let tz = config.hall.time_zone.clone();
    let local = |t: Time| {
        options
            .date
            .to_datetime(t)
            .to_zoned(tz.clone())
            .map(|z| z.timestamp())
    };
    let hours = || DayError::Hours {
        date: options.date,
        opening: options.opening_time,
    };
    let opening = local(options.opening_time).map_err(|_| hours())?;
    let mut closing = local(config.hall.closing_time).map_err(|_| hours())?;
    if closing <= opening {
        // A closing time in the small hours belongs to the night after.
        closing = options
            .date
            .tomorrow()
            .map_err(|_| hours())?
            .to_datetime(config.hall.closing_time)
            .to_zoned(tz.clone())
            .map_err(|_| hours())?
            .timestamp();
    }
    let paths = Paths::new(config)?;
    let entrance = paths.entrance().ok_or(DayError::NoEntrance)?;
    let mut sim = Sim {
        config,
        options,
        paths,
        rng: StdRng::seed_from_u64(options.seed),
        opening_ms: opening.as_millisecond(),
        closing_ms: closing.as_millisecond(),
        crossings: Vec::new(),
        passages: Vec::new(),
        terminal_serial: vec![0; config.terminals.len()],
        bookings: Vec::new(),
        slots: Vec::new(),
    };
    sim.bookings(entrance);
    sim.walk_ins(entrance);
    sim.unbooked_groups(entrance);
    let events = sim.events();
    let truth = sim.truth();
    let mut crossings = sim.crossings;
    crossings.sort_by_key(|x| x.at_ms);
    Ok(Day {
        events,
        bookings: sim.bookings,
        truth,
        crossings,
    })
}

/// A booking's slot and whether the attendees came.
#[derive(Debug, Clone)]
struct Slot {
    room: usize,
    start_ms: i64,
    end_ms: i64,
    planned_held: bool,
}

struct Sim<'a> {
    config: &'a Config,
    options: &'a DayOptions,
    paths: Paths,
    rng: StdRng,
    opening_ms: i64,
    closing_ms: i64,
    crossings: Vec<Crossing>,
    passages: Vec<Passage>,
    terminal_serial: Vec<u64>,
    bookings: Vec<Booking>,
    slots: Vec<Slot>,
}

impl Sim<'_> {
    fn out_by(&self) -> i64 {
        self.closing_ms - OUT_BY.as_millis() as i64
    }

    fn uniform_ms(&mut self, lo_s: f64, hi_s: f64) -> i64 {
        (self.rng.random_range(lo_s..hi_s) * 1000.0) as i64
    }

    fn exponential_ms(&mut self, mean_s: f64) -> i64 {
        let u: f64 = self.rng.random();
        (-mean_s * (1.0 - u).ln() * 1000.0) as i64
    }

    fn person(&mut self) -> Person {
        let member = if self.rng.random_bool(self.options.stranger_share) {
            None
        } else {
            // Squaring a uniform draw favours the first members: regulars come back.
            let u: f64 = self.rng.random();
            Some(((u * u) * f64::from(self.options.member_pool.max(1))) as u32)
        };
        Person {
            member,
            fever: self.rng.random_bool(self.options.fever_share),
            mask_off: self.rng.random_bool(self.options.mask_off_share),
        }
    }

    /// The poll of `door`'s counter that first sees a crossing at `t_ms`.
    fn poll_at(&self, door: usize, t_ms: i64) -> i64 {
        let phase = self
            .config
            .counters
            .iter()
            .position(|c| c.door == door)
            .map_or(0, phase_ms);
        let k = (t_ms - phase).div_euclid(1000);
        let p = k * 1000 + phase;
        if p >= t_ms { p } else { p + 1000 }
    }

    /// Walks a party from `from` to `to`, starting at `t_ms`; returns when the last of them
    /// arrived. Each hop takes at least [`MIN_STEP_MS`]; rooms on the way are passed through.
    fn walk(&mut self, party: &[Person], from: Zone, to: Zone, mut t_ms: i64) -> i64 {
        let hops = self.paths.walk(from, to);
        let n = hops.len();
        for (i, (door, a, b)) in hops.into_iter().enumerate() {
            let inward = self.config.doors[door].from == a;
            let mut last = t_ms;
            for person in party {
                // One by one through the beam, a second or so apart.
                let raw = last + self.uniform_ms(0.2, 1.5);
                let at_ms = self.poll_at(door, raw);
                let (miss_in, miss_out) = self
                    .options
                    .miss_by_door
                    .get(door)
                    .copied()
                    .unwrap_or((self.options.miss_in, self.options.miss_out));
                let miss = if inward { miss_in } else { miss_out };
                let missed = self.rng.random_bool(miss);
                self.crossings.push(Crossing {
                    at_ms,
                    door,
                    inward,
                    missed,
                });
                if let Zone::Room(r) = b
                    && self.paths.parent[r].is_some_and(|(d, _)| d == door)
                {
                    self.passage(raw, r, person);
                }
                last = raw;
            }
            let transit = if i + 1 < n {
                self.uniform_ms(20.0, 90.0)
            } else {
                0
            };
            t_ms = last + MIN_STEP_MS + transit;
        }
        t_ms
    }

    fn passage(&mut self, raw_ms: i64, room: usize, person: &Person) {
        let terminals: Vec<usize> = self
            .config
            .terminals
            .iter()
            .enumerate()
            .filter(|(_, t)| t.room == room)
            .map(|(i, _)| i)
            .collect();
        if terminals.is_empty() {
            return;
        }
        let terminal = terminals[self.rng.random_range(0..terminals.len())];
        self.terminal_serial[terminal] += 1;
        self.passages.push(Passage {
            // The face is read as the person steps up, not on a counter's poll.
            at_ms: raw_ms + 300,
            terminal,
            room,
            member: person.member,
            fever: person.fever,
            mask_off: person.mask_off,
        });
    }

    /// A party that arrives at `arrive_ms`, goes to each room of `stops` for its dwell and
    /// leaves; cut short so that everyone is out by closing time.
    fn visit(&mut self, party: &[Person], entrance: usize, arrive_ms: i64, stops: &[(usize, i64)]) {
        let out_by = self.out_by();
        let lobby = Zone::Room(entrance);
        let mut here = Zone::Outside;
        let mut t = arrive_ms;
        let budget = |t: i64| t + 4 * 60_000 < out_by;
        if !budget(t) {
            return;
        }
        t = self.walk(party, here, lobby, t);
        here = lobby;
        for &(room, dwell) in stops {
            if !budget(t) {
                break;
            }
            let target = Zone::Room(room);
            if target != here {
                t = self.walk(party, here, target, t);
                here = target;
            }
            t = (t + dwell.max(MIN_STEP_MS)).min(out_by - 3 * 60_000);
        }
        let t_out = t.max(arrive_ms);
        self.walk(party, here, Zone::Outside, t_out);
    }

    fn party(&mut self, size: usize) -> Vec<Person> {
        (0..size).map(|_| self.person()).collect()
    }

    /// The hourly profile: a morning peak around 09:30, an afternoon peak around 15:00 and a
    /// quiet floor, as a weight per minute of the open time.
    fn arrival_minute(&mut self, weights: &[f64], total: f64) -> i64 {
        let mut x = self.rng.random_range(0.0..total);
        for (m, w) in weights.iter().enumerate() {
            if x < *w {
                return m as i64;
            }
            x -= w;
        }
        weights.len().saturating_sub(1) as i64
    }

    fn walk_ins(&mut self, entrance: usize) {
        let tz = self.config.hall.time_zone.clone();
        let minutes = (self.out_by() - self.opening_ms) / 60_000 - 20;
        let weights: Vec<f64> = (0..minutes.max(1))
            .map(|m| {
                let t = Timestamp::from_millisecond(self.opening_ms + m * 60_000)
                    .unwrap_or(Timestamp::UNIX_EPOCH)
                    .to_zoned(tz.clone());
                let h = f64::from(t.hour()) + f64::from(t.minute()) / 60.0;
                let bump = |centre: f64, width: f64| (-((h - centre) / width).powi(2)).exp();
                0.25 + 1.0 * bump(9.5, 1.0) + 0.8 * bump(15.0, 1.2)
            })
            .collect();
        let total: f64 = weights.iter().sum();
        let casual: Vec<usize> = (0..self.config.rooms.len())
            .filter(|r| *r != entrance && !self.options.bookable.contains(r))
            .collect();
        for _ in 0..self.options.parties {
            let minute = self.arrival_minute(&weights, total);
            let arrive = self.opening_ms + minute * 60_000 + self.uniform_ms(0.0, 60.0);
            let size = if self.rng.random_bool(self.options.group_share) {
                self.rng.random_range(2..=4)
            } else {
                1
            };
            let party = self.party(size);
            // A while in the entrance room (the service desk), then up to two other rooms.
            let mut stops = vec![(entrance, self.exponential_ms(6.0 * 60.0))];
            let mut left = casual.clone();
            for _ in 0..2 {
                if left.is_empty() || !self.rng.random_bool(0.7) {
                    break;
                }
                // Bigger rooms draw more visitors: a 12-place health corner is not as busy as
                // a 30-seat reading room (it still fills up now and then).
                let weights: Vec<u32> = left
                    .iter()
                    .map(|&r| self.config.rooms[r].capacity.max(1))
                    .collect();
                let mut x = self.rng.random_range(0..weights.iter().sum::<u32>());
                let mut pick = 0;
                while x >= weights[pick] {
                    x -= weights[pick];
                    pick += 1;
                }
                let room = left.remove(pick);
                // Small rooms serve quickly (a blood-pressure check), big ones hold people
                // longer (reading): 25 minutes on average in a 30-place room.
                let capacity = f64::from(self.config.rooms[room].capacity);
                let mean_min = (25.0 * capacity / 30.0).clamp(5.0, 40.0);
                let dwell = 2 * 60_000 + self.exponential_ms(mean_min * 60.0);
                stops.push((room, dwell));
                stops.push((entrance, self.uniform_ms(10.0, 120.0)));
            }
            self.visit(&party, entrance, arrive, &stops);
        }
    }

    fn bookings(&mut self, entrance: usize) {
        let tz = self.config.hall.time_zone.clone();
        let starts = [(9, 0), (10, 30), (14, 0), (15, 30), (19, 0)];
        let mut number = 0;
        for room in self.options.bookable.clone() {
            let capacity = self.config.rooms[room].capacity;
            for &(h, m) in &starts {
                if !self.rng.random_bool(0.45) {
                    continue;
                }
                let Ok(start) = self
                    .options
                    .date
                    .to_datetime(Time::constant(h, m, 0, 0))
                    .to_zoned(tz.clone())
                else {
                    continue;
                };
                let start_ms = start.timestamp().as_millisecond();
                let length = if self.rng.random_bool(0.5) { 60 } else { 75 };
                let end_ms = start_ms + length * 60_000;
                if start_ms < self.opening_ms + 30 * 60_000 || end_ms > self.out_by() - 30 * 60_000
                {
                    continue;
                }
                number += 1;
                let expected =
                    ((f64::from(capacity) * self.rng.random_range(0.3..0.7)) as u32).max(4);
                // Every fourth booking is not held, so every day has both kinds.
                let planned_held = number % 4 != 2;
                self.bookings.push(Booking {
                    id: format!("b-{number}"),
                    room: self.config.rooms[room].id.clone(),
                    start: rfc3339(start.timestamp()),
                    end: rfc3339(
                        start
                            .timestamp()
                            .checked_add((length * 60).seconds())
                            .unwrap_or(start.timestamp()),
                    ),
                    title: format!("Class {number}"),
                    expected_attendance: expected,
                });
                self.slots.push(Slot {
                    room,
                    start_ms,
                    end_ms,
                    planned_held,
                });
                let share = if planned_held {
                    self.rng.random_range(0.65..1.05)
                } else {
                    self.rng.random_range(0.0..0.25)
                };
                let attendees = (f64::from(expected) * share).round() as usize;
                let mut i = 0;
                while i < attendees {
                    let size = if self.rng.random_bool(0.3) { 2 } else { 1 };
                    let size = size.min(attendees - i);
                    i += size;
                    let party = self.party(size);
                    let arrive = start_ms + self.uniform_ms(-12.0 * 60.0, 10.0 * 60.0);
                    // Inside the room from arrival to about the end (leaving a few minutes
                    // early, or lingering a minute or two).
                    let leave = end_ms + self.uniform_ms(-8.0 * 60.0, 2.0 * 60.0);
                    let entered = self.walk(&party, Zone::Outside, Zone::Room(room), arrive);
                    let stay = (leave - entered).max(MIN_STEP_MS);
                    self.walk(
                        &party,
                        Zone::Room(room),
                        Zone::Outside,
                        (entered + stay).max(entered + MIN_STEP_MS),
                    );
                }
            }
        }
        let _ = entrance;
    }

    /// Now and then a few people use a bookable room with no booking: a long episode (to be
    /// reported) or a short one (below the minimum, not reported).
    fn unbooked_groups(&mut self, entrance: usize) {
        let _ = entrance;
        for (i, room) in self.options.bookable.clone().into_iter().enumerate() {
            for long in [true, false] {
                // The first bookable room always has a long one, so every day has one.
                let wanted = (long && i == 0) || self.rng.random_bool(0.6);
                if !wanted {
                    continue;
                }
                let minutes = if long {
                    self.rng.random_range(25.0..50.0)
                } else {
                    self.rng.random_range(4.0..9.0)
                };
                let length = (minutes * 60_000.0) as i64;
                // A start well clear of every slot of the room (20 min either side).
                let mut placed = None;
                for _ in 0..200 {
                    let start = self.opening_ms
                        + 40 * 60_000
                        + self.uniform_ms(
                            0.0,
                            ((self.out_by() - self.opening_ms) / 1000) as f64 * 0.8,
                        );
                    let end = start + length;
                    let clear =
                        self.slots.iter().filter(|s| s.room == room).all(|s| {
                            end + 20 * 60_000 < s.start_ms || start > s.end_ms + 20 * 60_000
                        }) && end + 20 * 60_000 < self.out_by();
                    if clear {
                        placed = Some(start);
                        break;
                    }
                }
                let Some(start) = placed else { continue };
                let size = self.rng.random_range(2..=4);
                let party = self.party(size);
                let entered = self.walk(&party, Zone::Outside, Zone::Room(room), start);
                self.walk(&party, Zone::Room(room), Zone::Outside, entered + length);
            }
        }
    }

    /// The drivers' view: counter reads (a baseline at the start, then every changed poll)
    /// and passages, merged in time order.
    fn events(&mut self) -> Vec<DeviceEvent> {
        let start_ms = self.opening_ms - LEAD_IN.as_millis() as i64;
        let stamp = |ms: i64| Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH);
        // (stamp, device rank, sequence) keeps the merge deterministic.
        let mut out: Vec<((i64, usize, usize), DeviceEvent)> = Vec::new();
        let mut starting = StdRng::seed_from_u64(self.options.seed ^ 0x5EED_DA7E_0000_0001);
        for (c, counter) in self.config.counters.iter().enumerate() {
            let profile = &counter.profile;
            let phase = phase_ms(c);
            let first_poll = start_ms + phase;
            out.push((
                (first_poll, c, 0),
                DeviceEvent::DeviceOnline {
                    counter: c,
                    at: stamp(first_poll),
                },
            ));
            let modulus = profile.wrap_modulus.max(1);
            let mut totals = match profile.mode {
                CountMode::Cumulative => Totals {
                    inward: starting.random_range(0..modulus),
                    outward: starting.random_range(0..modulus),
                },
                CountMode::Delta => Totals {
                    inward: 0,
                    outward: 0,
                },
            };
            let mut tracker = CounterTracker::new(None);
            let step = tracker.update(profile.counting(), totals);
            out.push((
                (first_poll, c, 1),
                DeviceEvent::CounterRead {
                    counter: c,
                    at: stamp(first_poll),
                    totals,
                    step,
                },
            ));
            // Counted crossings of this door, per poll.
            let mut per_poll: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
            for x in self.crossings.iter().filter(|x| x.door == counter.door) {
                if x.missed {
                    continue;
                }
                let e = per_poll.entry(x.at_ms).or_default();
                if x.inward {
                    e.0 += 1;
                } else {
                    e.1 += 1;
                }
            }
            for (seq, (at_ms, (i, o))) in per_poll.into_iter().enumerate() {
                totals = match profile.mode {
                    CountMode::Cumulative => Totals {
                        inward: (totals.inward + i) % modulus,
                        outward: (totals.outward + o) % modulus,
                    },
                    CountMode::Delta => Totals {
                        inward: i,
                        outward: o,
                    },
                };
                let step = tracker.update(profile.counting(), totals);
                out.push((
                    (at_ms, c, seq + 2),
                    DeviceEvent::CounterRead {
                        counter: c,
                        at: stamp(at_ms),
                        totals,
                        step,
                    },
                ));
            }
        }
        let mut hasher = MemberHasher::with_salt_source({
            let mut salts = StdRng::seed_from_u64(self.options.seed ^ 0x5EED_DA7E_0000_0002);
            move || {
                let mut salt = [0u8; 32];
                salts.fill(&mut salt);
                salt
            }
        });
        let counters = self.config.counters.len();
        let mut passages = self.passages.clone();
        passages.sort_by_key(|p| (p.at_ms, p.terminal));
        let mut serial = vec![0u64; self.config.terminals.len()];
        for (seq, p) in passages.into_iter().enumerate() {
            serial[p.terminal] += 1;
            let member = p
                .member
                .map(|m| hasher.hash(self.options.date, &MemberRef::new(member_id(m))));
            out.push((
                (p.at_ms, counters + p.terminal, seq),
                DeviceEvent::Passage {
                    terminal: p.terminal,
                    at: stamp(p.at_ms),
                    facts: PassageFacts {
                        room: p.room,
                        member,
                        fever: p.fever,
                        mask_off: p.mask_off,
                        sensor_error: false,
                        people: 1,
                    },
                    key: DedupKey {
                        terminal: self.config.terminals[p.terminal].id.clone(),
                        event: format!("{}", serial[p.terminal]),
                    },
                    receipt: None,
                },
            ));
        }
        out.sort_by_key(|(k, _)| *k);
        out.into_iter().map(|(_, e)| e).collect()
    }

    fn service_rule(&self, room: usize) -> ServiceVisits {
        self.options
            .service_visits
            .get(room)
            .copied()
            .unwrap_or(ServiceVisits::Entries)
    }

    fn truth(&self) -> DayTruth {
        let config = self.config;
        let rooms = config.rooms.len();
        let tz = config.hall.time_zone.clone();
        let stamp = |ms: i64| Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH);
        let timeline = Timeline::new(config, &self.crossings);
        let mut passages = self.passages.clone();
        passages.sort_by_key(|p| (p.at_ms, p.terminal));

        let stretch = |start_ms: i64, end_ms: i64| -> Stretch {
            let mut out = Stretch {
                start: rfc3339(stamp(start_ms)),
                end: rfc3339(stamp(end_ms)),
                start_ms,
                end_ms,
                ..Stretch::default()
            };
            let len_ms = (end_ms - start_ms).max(1);
            let mut hall_members = BTreeSet::new();
            for r in 0..rooms {
                let occ = timeline.room(r, start_ms, end_ms);
                let mut f = RoomFigures {
                    id: config.rooms[r].id.clone(),
                    capacity: config.rooms[r].capacity,
                    entries: occ.entries,
                    exits: occ.exits,
                    person_ms: occ.person_ms,
                    person_minutes: occ.person_ms as f64 / 60_000.0,
                    occupancy_mean: occ.person_ms as f64 / len_ms as f64,
                    occupancy_peak: occ.peak,
                    occupied_share: occ.occupied_ms as f64 / len_ms as f64,
                    ..RoomFigures::default()
                };
                let mut members = BTreeSet::new();
                for p in passages
                    .iter()
                    .filter(|p| p.room == r && p.at_ms >= start_ms && p.at_ms < end_ms)
                {
                    f.passages += 1;
                    match p.member {
                        Some(m) => {
                            f.member_visits += 1;
                            members.insert(m);
                            hall_members.insert(m);
                        }
                        None => f.stranger_visits += 1,
                    }
                    f.fevers += u64::from(p.fever);
                    f.mask_off += u64::from(p.mask_off);
                }
                f.unique_visitors = members.len() as u64;
                f.service_visits = match self.service_rule(r) {
                    ServiceVisits::Entries => f.entries,
                    ServiceVisits::Passages => f.passages,
                    ServiceVisits::None => 0,
                };
                f.dwell_minutes_mean = (f.entries > 0).then(|| f.person_minutes / f.entries as f64);
                let h = &mut out.hall;
                h.service_visits += f.service_visits;
                h.member_visits += f.member_visits;
                h.stranger_visits += f.stranger_visits;
                h.fevers += f.fevers;
                h.mask_off += f.mask_off;
                h.person_ms += f.person_ms;
                out.rooms.push(f);
            }
            let hall = timeline.hall(start_ms, end_ms);
            let h = &mut out.hall;
            h.entries = hall.entries;
            h.exits = hall.exits;
            h.unique_visitors = hall_members.len() as u64;
            h.person_minutes = h.person_ms as f64 / 60_000.0;
            h.occupancy_mean = h.person_ms as f64 / len_ms as f64;
            h.occupancy_peak = hall.peak;
            h.occupancy_peak_at = hall.peak_at.map(|ms| rfc3339(stamp(ms)));
            let mut order: Vec<usize> = (0..rooms).collect();
            order.sort_by_key(|&r| {
                (
                    std::cmp::Reverse(out.rooms[r].person_ms),
                    std::cmp::Reverse(out.rooms[r].service_visits),
                    r,
                )
            });
            for (rank, r) in order.into_iter().enumerate() {
                out.rooms[r].hotspot_rank = rank + 1;
            }
            out
        };

        let bin_ms = BIN_MINUTES * 60_000;
        let first_bin = {
            // Bins are aligned to the quarter hour of the local clock.
            let local = stamp(self.opening_ms).to_zoned(tz.clone());
            let back = i64::from(local.minute()) % BIN_MINUTES * 60_000
                + i64::from(local.second()) * 1000
                + i64::from(local.millisecond());
            self.opening_ms - back
        };
        let mut bins = Vec::new();
        let mut b = first_bin;
        while b < self.closing_ms {
            bins.push(stretch(b, b + bin_ms));
            b += bin_ms;
        }
        let day_figures = stretch(self.opening_ms, self.closing_ms);

        // Peak hour: the local hour with most hall service visits.
        let mut by_hour: BTreeMap<(Date, i8), u64> = BTreeMap::new();
        for bin in &bins {
            let z = stamp(bin.start_ms).to_zoned(tz.clone());
            *by_hour.entry((z.date(), z.hour())).or_default() += bin.hall.service_visits;
        }
        let best = by_hour.values().copied().max().unwrap_or(0);
        let peak_hour = (best > 0)
            .then(|| {
                by_hour
                    .iter()
                    .find(|(_, v)| **v == best)
                    .map(|((_, h), _)| format!("{h:02}:00"))
            })
            .flatten();

        let bookings = self
            .bookings
            .iter()
            .zip(&self.slots)
            .map(|(b, s)| {
                let occ = timeline.room(s.room, s.start_ms, s.end_ms);
                let threshold = self.options.held_share * f64::from(b.expected_attendance);
                let delay = timeline
                    .first_reaching(s.room, s.start_ms, s.end_ms, threshold)
                    .map(|ms| (ms - s.start_ms) as f64 / 60_000.0);
                BookingTruth {
                    booking_id: b.id.clone(),
                    room: b.room.clone(),
                    start: b.start.clone(),
                    end: b.end.clone(),
                    expected_attendance: b.expected_attendance,
                    planned_held: s.planned_held,
                    held: occ.peak as f64 >= threshold,
                    attendance: occ.peak,
                    attendance_share: occ.peak as f64 / f64::from(b.expected_attendance.max(1)),
                    start_delay_minutes: delay,
                    occupancy_mean: occ.person_ms as f64 / (s.end_ms - s.start_ms) as f64,
                }
            })
            .collect();

        let mut unbooked = Vec::new();
        for &room in &self.options.bookable {
            let slots: Vec<(i64, i64)> = self
                .slots
                .iter()
                .filter(|s| s.room == room)
                .map(|s| (s.start_ms, s.end_ms))
                .collect();
            for (start_ms, end_ms) in timeline.runs(room, &slots) {
                if end_ms - start_ms < self.options.unbooked_min_minutes * 60_000 {
                    continue;
                }
                let occ = timeline.room(room, start_ms, end_ms);
                unbooked.push(Episode {
                    room: config.rooms[room].id.clone(),
                    start: rfc3339(stamp(start_ms)),
                    end: rfc3339(stamp(end_ms)),
                    start_ms,
                    end_ms,
                    occupancy_peak: occ.peak,
                    person_minutes: occ.person_ms as f64 / 60_000.0,
                });
            }
        }

        let mut lines = Vec::new();
        for counter in &config.counters {
            let door = &config.doors[counter.door];
            let mut l = LineCount {
                counter: counter.id.clone(),
                from: config.zone_name(door.from).to_string(),
                to: config.zone_name(door.to).to_string(),
                ..LineCount::default()
            };
            for x in self.crossings.iter().filter(|x| x.door == counter.door) {
                match (x.inward, x.missed) {
                    (true, false) => l.in_count += 1,
                    (true, true) => l.missed_in += 1,
                    (false, false) => l.out_count += 1,
                    (false, true) => l.missed_out += 1,
                }
            }
            lines.push(l);
        }
        let counted_door = |d: usize| config.counters.iter().any(|c| c.door == d);
        let mut counted: Vec<RoomCount> = config
            .rooms
            .iter()
            .map(|r| RoomCount {
                id: r.id.clone(),
                ..RoomCount::default()
            })
            .collect();
        for x in &self.crossings {
            let door = &config.doors[x.door];
            let (from, to) = if x.inward {
                (door.from, door.to)
            } else {
                (door.to, door.from)
            };
            let seen = counted_door(x.door) && !x.missed;
            if let Zone::Room(r) = to {
                if seen {
                    counted[r].entries += 1;
                    counted[r].residual += 1;
                } else {
                    counted[r].missed_entries += 1;
                    counted[r].missed_at_ms.push(x.at_ms);
                }
            }
            if let Zone::Room(r) = from {
                if seen {
                    counted[r].exits += 1;
                    counted[r].residual -= 1;
                } else {
                    counted[r].missed_exits += 1;
                    counted[r].missed_at_ms.push(x.at_ms);
                }
            }
        }
        for c in &mut counted {
            c.missed_at_ms.sort_unstable();
        }
        let inside_at_close = timeline.hall_level_at(self.closing_ms);
        let day = stamp(self.opening_ms).to_zoned(tz).date();
        DayTruth {
            hall_id: config.hall.id.clone(),
            day: day.to_string(),
            open_from: rfc3339(stamp(self.opening_ms)),
            open_to: rfc3339(stamp(self.closing_ms)),
            opening_ms: self.opening_ms,
            closing_ms: self.closing_ms,
            bins,
            day_figures,
            peak_hour,
            bookings,
            unbooked,
            lines,
            counted,
            inside_at_close,
        }
    }
}

/// Each counter polls at its own phase within the second, as independent drivers do.
fn phase_ms(counter: usize) -> i64 {
    (counter as i64 * 137 + 41) % 1000
}

/// The member id a terminal would send for pool member `m`.
pub fn member_id(m: u32) -> String {
    format!("M{m:05}")
}

/// Occupancy figures of one room (or the hall) over a stretch.
#[derive(Debug, Clone, Copy, Default)]
struct Occupancy {
    entries: u64,
    exits: u64,
    person_ms: i64,
    /// Highest occupancy that held for some time.
    peak: u64,
    peak_at: Option<i64>,
    occupied_ms: i64,
}

/// Every room's occupancy as a step function, changed one counter read at a time with the
/// engine's rule: a read's IN crossings, then its OUT crossings (at one instant: only the
/// level after the read holds for any time, so the order never shows in a figure).
struct Timeline {
    /// Per room: (stamp, level after, whether the step was inward), in time order.
    rooms: Vec<Vec<(i64, i64, bool)>>,
    /// The hall: (stamp, level after, inward); street entries and exits.
    hall: Vec<(i64, i64, bool)>,
    hall_moves: Vec<(i64, bool)>,
    room_moves: Vec<Vec<(i64, bool)>>,
}

impl Timeline {
    fn new(config: &Config, crossings: &[Crossing]) -> Self {
        let rooms = config.rooms.len();
        // Group by (stamp, door): one counter read.
        let mut reads: BTreeMap<(i64, usize), (u64, u64)> = BTreeMap::new();
        for x in crossings {
            let e = reads.entry((x.at_ms, x.door)).or_default();
            if x.inward {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
        }
        let mut level = vec![0i64; rooms];
        let mut hall_level = 0i64;
        let mut out = Timeline {
            rooms: vec![Vec::new(); rooms],
            hall: Vec::new(),
            hall_moves: Vec::new(),
            room_moves: vec![Vec::new(); rooms],
        };
        for ((at, door), (n_in, n_out)) in reads {
            let (a, b) = (config.doors[door].from, config.doors[door].to);
            for (from, to, n) in [(a, b, n_in), (b, a, n_out)] {
                if n == 0 {
                    continue;
                }
                let n = n as i64;
                if let Zone::Room(r) = to {
                    level[r] += n;
                    out.rooms[r].push((at, level[r], true));
                    for _ in 0..n {
                        out.room_moves[r].push((at, true));
                    }
                }
                if let Zone::Room(r) = from {
                    level[r] -= n;
                    out.rooms[r].push((at, level[r], false));
                    for _ in 0..n {
                        out.room_moves[r].push((at, false));
                    }
                }
                let street = |z: Zone| z == Zone::Outside;
                if street(from) != street(to) {
                    let inward = street(from);
                    hall_level += if inward { n } else { -n };
                    out.hall.push((at, hall_level, inward));
                    for _ in 0..n {
                        out.hall_moves.push((at, inward));
                    }
                }
            }
        }
        out
    }

    fn figures(
        steps: &[(i64, i64, bool)],
        moves: &[(i64, bool)],
        start: i64,
        end: i64,
    ) -> Occupancy {
        let mut o = Occupancy::default();
        let mut level = steps
            .iter()
            .take_while(|s| s.0 < start)
            .last()
            .map_or(0, |s| s.1);
        let mut t = start;
        // A level counts for the peak only if it held for some time: what the steps of one
        // instant pass through on the way (4 in, then 4 out in one read) was nobody's state.
        let segment = |o: &mut Occupancy, from: i64, to: i64, level: i64| {
            if to <= from {
                return;
            }
            let occ = level.max(0);
            o.person_ms += occ * (to - from);
            if occ > 0 {
                o.occupied_ms += to - from;
                if occ as u64 > o.peak {
                    o.peak = occ as u64;
                    o.peak_at = Some(from);
                }
            }
        };
        for &(at, after, _) in steps.iter().filter(|s| s.0 >= start && s.0 < end) {
            segment(&mut o, t, at, level);
            t = at;
            level = after;
        }
        segment(&mut o, t, end, level);
        for &(_, inward) in moves.iter().filter(|m| m.0 >= start && m.0 < end) {
            if inward {
                o.entries += 1;
            } else {
                o.exits += 1;
            }
        }
        o
    }

    fn room(&self, r: usize, start: i64, end: i64) -> Occupancy {
        Self::figures(&self.rooms[r], &self.room_moves[r], start, end)
    }

    fn hall(&self, start: i64, end: i64) -> Occupancy {
        Self::figures(&self.hall, &self.hall_moves, start, end)
    }

    fn hall_level_at(&self, t: i64) -> u64 {
        self.hall
            .iter()
            .take_while(|s| s.0 <= t)
            .last()
            .map_or(0, |s| s.1.max(0) as u64)
    }

    /// First time in [start, end) the room's occupancy reached `threshold` (or was at it
    /// already at the start).
    fn first_reaching(&self, r: usize, start: i64, end: i64, threshold: f64) -> Option<i64> {
        let before = self.rooms[r]
            .iter()
            .take_while(|s| s.0 < start)
            .last()
            .map_or(0, |s| s.1);
        if before as f64 >= threshold && threshold > 0.0 {
            return Some(start);
        }
        self.rooms[r]
            .iter()
            .filter(|s| s.0 >= start && s.0 < end)
            .find(|s| s.1 as f64 >= threshold)
            .map(|s| s.0)
    }

    /// Maximal stretches with the room occupied, outside every slot in `slots`.
    fn runs(&self, r: usize, slots: &[(i64, i64)]) -> Vec<(i64, i64)> {
        let mut runs = Vec::new();
        let mut open: Option<i64> = None;
        for &(at, after, _) in &self.rooms[r] {
            match (open, after > 0) {
                (None, true) => open = Some(at),
                (Some(s), false) => {
                    runs.push((s, at));
                    open = None;
                }
                _ => {}
            }
        }
        runs.into_iter()
            .filter(|&(s, e)| slots.iter().all(|&(a, b)| e <= a || s >= b))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn hall() -> Config {
        crate::config::parse(
            include_str!("../../firmware-config/examples/hall-terminals.toml"),
            Path::new("firmware-config/examples"),
            // Its password files are the shipped, public examples.
            &crate::config::Overrides {
                allow_example_secrets: true,
                ..Default::default()
            },
        )
        .expect("the shipped example is valid")
    }

    fn options(seed: u64) -> DayOptions {
        let mut o = DayOptions::new(seed, jiff::civil::date(2026, 12, 1));
        o.bookable = vec![2, 3];
        o
    }

    #[test]
    fn the_same_seed_gives_the_same_day() {
        let config = hall();
        let a = generate(&config, &options(3)).expect("a day");
        let b = generate(&config, &options(3)).expect("a day");
        assert_eq!(a.events, b.events);
        assert_eq!(a.truth, b.truth);
        let c = generate(&config, &options(4)).expect("a day");
        assert_ne!(a.events, c.events);
    }

    #[test]
    fn everyone_leaves_by_closing_and_the_events_are_in_time_order() {
        let config = hall();
        let day = generate(&config, &options(5)).expect("a day");
        assert_eq!(day.truth.inside_at_close, 0);
        let stamps: Vec<Timestamp> = day
            .events
            .iter()
            .map(crate::supervisor::reorder::stamp_of)
            .collect();
        assert!(stamps.windows(2).all(|w| w[0] <= w[1]));
        assert!(
            day.truth.day_figures.hall.entries > 300,
            "{:?}",
            day.truth.day_figures.hall
        );
        assert_eq!(
            day.truth.day_figures.hall.entries,
            day.truth.day_figures.hall.exits
        );
        assert!(day.truth.day_figures.hall.fevers + day.truth.day_figures.hall.mask_off > 0);
        assert!(!day.bookings.is_empty());
        assert!(day.truth.bookings.iter().any(|b| b.held));
        assert!(day.truth.bookings.iter().any(|b| !b.held));
    }

    #[test]
    fn missed_crossings_leave_a_residual_and_are_recorded() {
        let config = hall();
        let mut o = options(6);
        o.miss_out = 0.03;
        let day = generate(&config, &o).expect("a day");
        let missed: u64 = day.truth.lines.iter().map(|l| l.missed_out).sum();
        let counted: u64 = day.truth.lines.iter().map(|l| l.out_count).sum();
        assert!(missed > 0 && missed < counted / 10, "{missed} of {counted}");
        assert!(day.truth.counted.iter().any(|r| r.residual > 0));
        assert!(day.truth.lines.iter().all(|l| l.missed_in == 0));
    }

    #[test]
    fn the_peak_morning_hour_is_busier_than_the_quiet_midday() {
        let config = hall();
        let day = generate(&config, &options(7)).expect("a day");
        let at = |hh: &str| -> u64 {
            day.truth
                .bins
                .iter()
                .filter(|b| {
                    Timestamp::from_millisecond(b.start_ms)
                        .expect("valid")
                        .to_zoned(config.hall.time_zone.clone())
                        .strftime("%H")
                        .to_string()
                        == hh
                })
                .map(|b| b.hall.entries)
                .sum()
        };
        assert!(at("09") > at("12"), "09h {} vs 12h {}", at("09"), at("12"));
    }
}
