//! The simulated visitors: a pure, seeded model of people walking through the hall.
//!
//! [`Traffic`] turns a validated [`Config`] (rooms with capacities, doors joining zones) and a
//! seed into a deterministic sequence of [`Crossing`]s, each stamped with its offset from the
//! start of the traffic. It does no I/O and never reads a clock: the async shell in
//! `simulate/mod.rs` plays the crossings in real time onto the simulated counters and writes
//! them to the truth file. The same config, seed and options always give the same crossings.
//!
//! The model is an event queue. Visitors arrive from outside as a Poisson process. Each has a
//! few rooms to visit (1–3, geometric); it walks the shortest path (fewest doors, indoors only)
//! to one of them, dwells there for an exponentially distributed time, picks the next, and when
//! done walks the shortest path back outside. Rooms on the way are passed through with a short
//! transit time. Nobody enters a full room: a visitor whose next step is into a full room gives
//! up that goal and picks another (or heads out); one heading out waits and tries again. After
//! the configured duration nothing moves any more: people inside stay inside.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::{Config, Zone};

/// Most rooms one visitor sets out to visit.
const MAX_STOPS: u32 = 3;

/// Passing through a room takes this fraction of the mean dwell, on average: long enough that
/// a lobby is never empty in a busy hall, short enough that it is clearly not a visit.
const TRANSIT_FRACTION: f64 = 0.25;

/// Shortest wait before a visitor blocked by a full room tries again; it keeps the model from
/// spinning at one instant when the mean dwell is tiny.
const MIN_RETRY: Duration = Duration::from_millis(100);

/// Which way a crossing went through its door, relative to the door's (and its counter's) IN
/// direction, `from` → `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Way {
    In,
    Out,
}

impl Way {
    pub fn as_str(self) -> &'static str {
        match self {
            Way::In => "in",
            Way::Out => "out",
        }
    }
}

/// One person walking through one door.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crossing {
    /// Simulated time since the traffic started.
    pub offset: Duration,
    /// Visitors are numbered from 1 in order of arrival; one turned away at a full hall uses
    /// up its number without ever crossing.
    pub person: u64,
    /// Index into [`Config::doors`].
    pub door: usize,
    pub from: Zone,
    pub to: Zone,
    pub direction: Way,
}

/// How the visitors behave.
#[derive(Debug, Clone, PartialEq)]
pub struct TrafficOptions {
    pub seed: u64,
    /// Mean arrivals at the hall per minute; 0 means nobody comes.
    pub arrivals_per_min: f64,
    /// Mean time spent in a room one came to visit (exponentially distributed).
    pub mean_dwell: Duration,
    /// Simulated time after which nobody arrives or moves; `None` runs for ever.
    pub duration: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TrafficError {
    #[error("arrivals per minute must be a finite number of at least 0, not {0}")]
    ArrivalRate(f64),
}

/// Running totals of the crossings applied so far: who is where, and how many went in and
/// out of each room and through each door. The model keeps one for its own decisions; the
/// shell keeps another for the crossings it has actually played.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrossingTally {
    /// People in each room, by room index.
    pub occupancy: Vec<u32>,
    /// Crossings into each room, by room index.
    pub entries: Vec<u64>,
    /// Crossings out of each room, by room index.
    pub exits: Vec<u64>,
    /// IN crossings through each door, by door index.
    pub door_in: Vec<u64>,
    /// OUT crossings through each door, by door index.
    pub door_out: Vec<u64>,
    pub crossings: u64,
}

impl CrossingTally {
    pub fn new(rooms: usize, doors: usize) -> Self {
        CrossingTally {
            occupancy: vec![0; rooms],
            entries: vec![0; rooms],
            exits: vec![0; rooms],
            door_in: vec![0; doors],
            door_out: vec![0; doors],
            crossings: 0,
        }
    }

    pub fn apply(&mut self, crossing: &Crossing) {
        if let Zone::Room(r) = crossing.from {
            self.occupancy[r] = self.occupancy[r]
                .checked_sub(1)
                .expect("the model only moves a person out of a room they are in");
            self.exits[r] += 1;
        }
        if let Zone::Room(r) = crossing.to {
            self.occupancy[r] += 1;
            self.entries[r] += 1;
        }
        match crossing.direction {
            Way::In => self.door_in[crossing.door] += 1,
            Way::Out => self.door_out[crossing.door] += 1,
        }
        self.crossings += 1;
    }

    /// People in the hall.
    pub fn inside(&self) -> u64 {
        self.occupancy.iter().map(|&n| u64::from(n)).sum()
    }
}

/// Where a visitor is headed next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Goal {
    /// Just finished a visit (or just arrived): choose the next room, or leave.
    Undecided,
    Room(usize),
    Leave,
}

#[derive(Debug)]
struct Visitor {
    zone: Zone,
    goal: Goal,
    /// Rooms still to visit.
    stops_left: u32,
    /// Rooms visited or given up, by room index; neither is chosen again.
    done: Vec<bool>,
}

/// One way to take the next step towards a zone: through `door` into `zone`.
#[derive(Debug, Clone, Copy)]
struct Hop {
    door: usize,
    zone: Zone,
}

/// The seeded visitor model; iterate it for the crossings, in time order.
#[derive(Debug)]
pub struct Traffic {
    capacities: Vec<u32>,
    doors: Vec<(Zone, Zone)>,
    /// `hops[src][dst]`: every first step of a shortest indoor path from zone `src` to zone
    /// `dst` (zones indexed by [`zone_index`]); empty when `dst` cannot be reached.
    hops: Vec<Vec<Vec<Hop>>>,
    /// Whether any door leads in from outside; without one nobody can arrive.
    has_entrance: bool,
    arrivals_per_sec: f64,
    mean_dwell_secs: f64,
    duration: Option<Duration>,
    rng: StdRng,
    next_arrival: Option<Duration>,
    /// Visitors' next actions, earliest first; the sequence number breaks ties in the order
    /// the actions were scheduled, so the order never depends on anything but the seed.
    agenda: BinaryHeap<Reverse<(Duration, u64, u64)>>,
    sequence: u64,
    visitors: HashMap<u64, Visitor>,
    next_person: u64,
    tally: CrossingTally,
    turned_away: u64,
    finished: bool,
}

/// Zones as dense indices: 0 is outside, room `i` is `i + 1`.
fn zone_index(zone: Zone) -> usize {
    match zone {
        Zone::Outside => 0,
        Zone::Room(r) => r + 1,
    }
}

impl Traffic {
    pub fn new(config: &Config, options: &TrafficOptions) -> Result<Self, TrafficError> {
        let rate = options.arrivals_per_min;
        if !rate.is_finite() || rate < 0.0 {
            return Err(TrafficError::ArrivalRate(rate));
        }
        let capacities: Vec<u32> = config.rooms.iter().map(|r| r.capacity).collect();
        let doors: Vec<(Zone, Zone)> = config.doors.iter().map(|d| (d.from, d.to)).collect();
        let hops = shortest_hops(capacities.len(), &doors);
        let has_entrance = doors
            .iter()
            .any(|&(a, b)| a == Zone::Outside || b == Zone::Outside);
        let mut traffic = Traffic {
            tally: CrossingTally::new(capacities.len(), doors.len()),
            capacities,
            doors,
            hops,
            has_entrance,
            arrivals_per_sec: rate / 60.0,
            mean_dwell_secs: options.mean_dwell.as_secs_f64(),
            duration: options.duration,
            rng: StdRng::seed_from_u64(options.seed),
            next_arrival: None,
            agenda: BinaryHeap::new(),
            sequence: 0,
            visitors: HashMap::new(),
            next_person: 1,
            turned_away: 0,
            finished: false,
        };
        traffic.next_arrival = traffic.arrival_after(Duration::ZERO);
        Ok(traffic)
    }

    /// The crossings returned so far, totalled.
    pub fn tally(&self) -> &CrossingTally {
        &self.tally
    }

    /// Visitors who found every way in full and went home without entering.
    pub fn turned_away(&self) -> u64 {
        self.turned_away
    }

    fn before_end(&self, at: Duration) -> bool {
        self.duration.is_none_or(|end| at < end)
    }

    fn arrival_after(&mut self, now: Duration) -> Option<Duration> {
        if !self.has_entrance || self.arrivals_per_sec <= 0.0 {
            return None;
        }
        let gap = exponential(&mut self.rng, 1.0 / self.arrivals_per_sec);
        Some(now.saturating_add(gap))
    }

    fn schedule(&mut self, at: Duration, person: u64) {
        self.sequence += 1;
        self.agenda.push(Reverse((at, self.sequence, person)));
    }

    fn is_full(&self, zone: Zone) -> bool {
        match zone {
            Zone::Outside => false,
            Zone::Room(r) => self.tally.occupancy[r] >= self.capacities[r],
        }
    }

    /// Runs the model up to its next crossing.
    fn advance(&mut self) -> Option<Crossing> {
        while !self.finished {
            let next_action = self.agenda.peek().map(|Reverse((at, _, _))| *at);
            // Arrivals go first on a tie: any order would do, but it must be a fixed one.
            let (at, person) = match (self.next_arrival, next_action) {
                (Some(arrival), Some(action)) if arrival <= action => (arrival, None),
                (Some(arrival), None) => (arrival, None),
                (_, Some(_)) => match self.agenda.pop() {
                    Some(Reverse((at, _, person))) => (at, Some(person)),
                    None => continue,
                },
                (None, None) => {
                    self.finished = true;
                    break;
                }
            };
            if !self.before_end(at) {
                // Time is up: whatever was due next stays undone, and so does all after it.
                self.finished = true;
                break;
            }
            let person = match person {
                Some(person) => person,
                None => {
                    self.next_arrival = self.arrival_after(at);
                    self.arrive()
                }
            };
            if let Some(crossing) = self.act(at, person) {
                return Some(crossing);
            }
        }
        None
    }

    fn arrive(&mut self) -> u64 {
        let person = self.next_person;
        self.next_person += 1;
        let mut stops = 1;
        while stops < MAX_STOPS && self.rng.random_bool(0.5) {
            stops += 1;
        }
        self.visitors.insert(
            person,
            Visitor {
                zone: Zone::Outside,
                goal: Goal::Undecided,
                stops_left: stops,
                done: vec![false; self.capacities.len()],
            },
        );
        person
    }

    /// The visitor's next step at time `at`: a crossing, or a decision to wait or to go home.
    fn act(&mut self, at: Duration, person: u64) -> Option<Crossing> {
        let mut visitor = self.visitors.remove(&person)?;
        // Each pass either crosses, waits, or gives up one room for good, so this ends.
        loop {
            if visitor.goal == Goal::Undecided {
                visitor.goal = self.choose_goal(&visitor);
            }
            let target = match visitor.goal {
                Goal::Room(r) => Zone::Room(r),
                Goal::Leave | Goal::Undecided => Zone::Outside,
            };
            if visitor.zone == target {
                if let Zone::Room(r) = target {
                    // Goals are never the room one is in; should one be, count it as visited.
                    visitor.done[r] = true;
                    visitor.goal = Goal::Undecided;
                    continue;
                }
                // Only a visitor who never got in can stand outside with nowhere to go:
                // every room it might visit is full, so it goes home.
                self.turned_away += 1;
                return None;
            }
            // Of the equally short ways on, take one with space, at random.
            let open: Vec<Hop> = self.hops[zone_index(visitor.zone)][zone_index(target)]
                .iter()
                .copied()
                .filter(|hop| !self.is_full(hop.zone))
                .collect();
            let hop = match open.len() {
                0 => None,
                1 => Some(open[0]),
                n => Some(open[self.rng.random_range(0..n)]),
            };
            let Some(hop) = hop else {
                match visitor.goal {
                    Goal::Room(r) => {
                        // The way to this room is full (or, which cannot happen for goals
                        // chosen among reachable rooms, missing): give it up, choose again.
                        visitor.done[r] = true;
                        visitor.goal = Goal::Undecided;
                        continue;
                    }
                    Goal::Leave | Goal::Undecided => {
                        // On the way out every room ahead is full. Those rooms are nearer the
                        // street, so their people can always leave: wait for one of them to.
                        let wait = self.transit_time().max(MIN_RETRY);
                        self.schedule(at.saturating_add(wait), person);
                        self.visitors.insert(person, visitor);
                        return None;
                    }
                }
            };
            let direction = if self.doors[hop.door].0 == visitor.zone {
                Way::In
            } else {
                Way::Out
            };
            let crossing = Crossing {
                offset: at,
                person,
                door: hop.door,
                from: visitor.zone,
                to: hop.zone,
                direction,
            };
            self.tally.apply(&crossing);
            visitor.zone = hop.zone;
            match (visitor.zone, visitor.goal) {
                (Zone::Outside, _) => {
                    // Left the hall (a goal never lies outside, so this is the way home).
                    return Some(crossing);
                }
                (Zone::Room(r), Goal::Room(goal)) if r == goal => {
                    visitor.done[r] = true;
                    visitor.stops_left = visitor.stops_left.saturating_sub(1);
                    visitor.goal = Goal::Undecided;
                    let dwell = exponential(&mut self.rng, self.mean_dwell_secs);
                    self.schedule(at.saturating_add(dwell), person);
                }
                _ => {
                    let transit = self.transit_time();
                    self.schedule(at.saturating_add(transit), person);
                }
            }
            self.visitors.insert(person, visitor);
            return Some(crossing);
        }
    }

    /// The next room to visit, uniformly among those not yet visited, reachable and with
    /// space; or leaving when none is left.
    fn choose_goal(&mut self, visitor: &Visitor) -> Goal {
        if visitor.stops_left == 0 {
            return Goal::Leave;
        }
        let here = zone_index(visitor.zone);
        let candidates: Vec<usize> = (0..self.capacities.len())
            .filter(|&r| {
                !visitor.done[r]
                    && visitor.zone != Zone::Room(r)
                    && !self.hops[here][zone_index(Zone::Room(r))].is_empty()
                    && !self.is_full(Zone::Room(r))
            })
            .collect();
        match candidates.len() {
            0 => Goal::Leave,
            n => Goal::Room(candidates[self.rng.random_range(0..n)]),
        }
    }

    fn transit_time(&mut self) -> Duration {
        exponential(&mut self.rng, self.mean_dwell_secs * TRANSIT_FRACTION)
    }
}

impl Iterator for Traffic {
    type Item = Crossing;

    fn next(&mut self) -> Option<Crossing> {
        self.advance()
    }
}

/// An exponentially distributed duration with the given mean, in seconds.
fn exponential(rng: &mut StdRng, mean_secs: f64) -> Duration {
    // 1 - u lies in (0, 1], so the logarithm is finite and never positive.
    let secs = -mean_secs * (1.0 - rng.random::<f64>()).ln();
    if secs > 0.0 {
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
    } else {
        Duration::ZERO
    }
}

/// For every pair of zones, the first steps of the shortest paths between them. Paths run
/// through rooms only: the street is an end, never a corridor between two rooms.
fn shortest_hops(rooms: usize, doors: &[(Zone, Zone)]) -> Vec<Vec<Vec<Hop>>> {
    let zones = rooms + 1;
    let mut neighbours: Vec<Vec<Hop>> = vec![Vec::new(); zones];
    for (door, &(a, b)) in doors.iter().enumerate() {
        neighbours[zone_index(a)].push(Hop { door, zone: b });
        neighbours[zone_index(b)].push(Hop { door, zone: a });
    }
    let mut hops = vec![vec![Vec::new(); zones]; zones];
    for dst in 0..zones {
        // Breadth-first from the destination; doors work both ways, so distances to it are
        // distances from it.
        let mut distance: Vec<Option<usize>> = vec![None; zones];
        distance[dst] = Some(0);
        let mut queue = VecDeque::from([(dst, 0)]);
        while let Some((z, d)) = queue.pop_front() {
            if z == 0 && dst != 0 {
                // Reached the street: a way in, but not a way through.
                continue;
            }
            for hop in &neighbours[z] {
                let n = zone_index(hop.zone);
                if distance[n].is_none() {
                    distance[n] = Some(d + 1);
                    queue.push_back((n, d + 1));
                }
            }
        }
        for src in 0..zones {
            let Some(d) = distance[src] else { continue };
            if src == dst {
                continue;
            }
            hops[src][dst] = neighbours[src]
                .iter()
                .copied()
                .filter(|hop| {
                    let n = zone_index(hop.zone);
                    // Through the street only when the street is where one is going.
                    (n != 0 || dst == 0) && distance[n] == Some(d - 1)
                })
                .collect();
        }
    }
    hops
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use proptest::prelude::*;

    use super::*;

    fn config(rooms_and_doors: &str) -> Config {
        let text = format!(
            r#"
            [hall]
            id = "test-hall"
            district = "test"
            [uplink]
            broker = "mqtt://127.0.0.1:1883"
            {rooms_and_doors}
            "#
        );
        crate::config::parse(&text, Path::new("."), &Default::default()).expect("valid config")
    }

    fn example_hall() -> Config {
        crate::config::parse(
            include_str!("../../firmware-config/examples/hall.toml"),
            Path::new("."),
            &Default::default(),
        )
        .expect("the shipped example is valid")
    }

    /// Small rooms, a cycle, two doors between the same rooms, a back exit whose IN
    /// direction leads out, and a room reached only through another room.
    fn awkward_hall() -> Config {
        config(
            r#"
            [[rooms]]
            id = "hall"
            capacity = 4
            [[rooms]]
            id = "a"
            capacity = 2
            [[rooms]]
            id = "b"
            capacity = 3
            [[rooms]]
            id = "inner"
            capacity = 1
            [[doors]]
            id = "front"
            from = "outside"
            to = "hall"
            [[doors]]
            id = "back-exit"
            from = "b"
            to = "outside"
            [[doors]]
            id = "hall-a-1"
            from = "hall"
            to = "a"
            [[doors]]
            id = "hall-a-2"
            from = "a"
            to = "hall"
            [[doors]]
            id = "a-b"
            from = "a"
            to = "b"
            [[doors]]
            id = "b-hall"
            from = "b"
            to = "hall"
            [[doors]]
            id = "b-inner"
            from = "b"
            to = "inner"
            "#,
        )
    }

    fn options(
        seed: u64,
        arrivals_per_min: f64,
        dwell_secs: u64,
        duration_secs: u64,
    ) -> TrafficOptions {
        TrafficOptions {
            seed,
            arrivals_per_min,
            mean_dwell: Duration::from_secs(dwell_secs),
            duration: Some(Duration::from_secs(duration_secs)),
        }
    }

    /// Replays crossings and checks every invariant the simulator promises; returns the tally.
    fn check_invariants(
        config: &Config,
        options: &TrafficOptions,
    ) -> (CrossingTally, Vec<Crossing>) {
        let traffic = Traffic::new(config, options).expect("valid options");
        let mut tally = CrossingTally::new(config.rooms.len(), config.doors.len());
        let mut whereabouts: HashMap<u64, Zone> = HashMap::new();
        let mut last = Duration::ZERO;
        let mut crossings = Vec::new();
        for c in traffic {
            assert!(c.offset >= last, "crossings come in time order");
            last = c.offset;
            if let Some(end) = options.duration {
                assert!(c.offset < end, "nothing moves after the duration");
            }
            let door = &config.doors[c.door];
            match c.direction {
                Way::In => assert_eq!((c.from, c.to), (door.from, door.to)),
                Way::Out => assert_eq!((c.from, c.to), (door.to, door.from)),
            }
            let at = whereabouts.get(&c.person).copied().unwrap_or(Zone::Outside);
            assert_eq!(
                at, c.from,
                "person {} crosses from where they are",
                c.person
            );
            whereabouts.insert(c.person, c.to);
            if let Zone::Room(r) = c.from {
                assert!(tally.occupancy[r] > 0, "occupancy never goes negative");
            }
            tally.apply(&c);
            for (r, room) in config.rooms.iter().enumerate() {
                assert!(
                    tally.occupancy[r] <= room.capacity,
                    "room {} over capacity: {} > {}",
                    room.id,
                    tally.occupancy[r],
                    room.capacity
                );
            }
            crossings.push(c);
        }
        for r in 0..config.rooms.len() {
            assert_eq!(
                tally.entries[r] - tally.exits[r],
                u64::from(tally.occupancy[r]),
                "entries minus exits is occupancy"
            );
            let inside = whereabouts
                .values()
                .filter(|&&z| z == Zone::Room(r))
                .count();
            assert_eq!(inside as u32, tally.occupancy[r]);
        }
        (tally, crossings)
    }

    #[test]
    fn the_same_seed_gives_the_same_crossings() {
        let hall = example_hall();
        let a: Vec<Crossing> = Traffic::new(&hall, &options(42, 30.0, 20, 3600))
            .expect("valid")
            .collect();
        let b: Vec<Crossing> = Traffic::new(&hall, &options(42, 30.0, 20, 3600))
            .expect("valid")
            .collect();
        let c: Vec<Crossing> = Traffic::new(&hall, &options(43, 30.0, 20, 3600))
            .expect("valid")
            .collect();
        assert!(
            a.len() > 1000,
            "an hour at 30 a minute is busy: {}",
            a.len()
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn a_long_day_never_drives_occupancy_negative_or_over_capacity() {
        let (tally, _) = check_invariants(&example_hall(), &options(7, 30.0, 20, 8 * 3600));
        // Every room was used, so the invariants were tested everywhere.
        assert!(tally.entries.iter().all(|&n| n > 0), "{tally:?}");
    }

    #[test]
    fn a_crowd_fills_rooms_to_capacity_and_no_further() {
        let hall = awkward_hall();
        let (tally, crossings) = check_invariants(&hall, &options(3, 120.0, 120, 3600));
        // Replay to find the peaks: a crowd this size fills every room.
        let mut replay = CrossingTally::new(hall.rooms.len(), hall.doors.len());
        let mut peak = vec![0u32; hall.rooms.len()];
        for c in &crossings {
            replay.apply(c);
            for (p, &n) in peak.iter_mut().zip(&replay.occupancy) {
                *p = (*p).max(n);
            }
        }
        let capacities: Vec<u32> = hall.rooms.iter().map(|r| r.capacity).collect();
        assert_eq!(peak, capacities);
        assert_eq!(replay, tally);
        // Both doors between the hall and room a, and the back exit, are used.
        for door in ["hall-a-1", "hall-a-2", "back-exit", "b-inner"] {
            let d = hall.doors.iter().position(|x| x.id == door).expect("door");
            assert!(tally.door_in[d] + tally.door_out[d] > 0, "{door} unused");
        }
    }

    #[test]
    fn every_visitor_leaves_the_hall_in_the_end() {
        let hall = example_hall();
        let traffic = Traffic::new(
            &hall,
            &TrafficOptions {
                seed: 5,
                arrivals_per_min: 30.0,
                mean_dwell: Duration::from_secs(20),
                duration: None,
            },
        )
        .expect("valid");
        let horizon = Duration::from_secs(4 * 3600);
        let mut first_seen: HashMap<u64, Duration> = HashMap::new();
        let mut last_zone: HashMap<u64, Zone> = HashMap::new();
        let mut peak = 0;
        let mut replay = CrossingTally::new(hall.rooms.len(), hall.doors.len());
        for c in traffic.take_while(|c| c.offset < horizon) {
            first_seen.entry(c.person).or_insert(c.offset);
            last_zone.insert(c.person, c.to);
            replay.apply(&c);
            peak = peak.max(replay.inside());
        }
        assert!(peak > 10, "the hall fills up: peak {peak}");
        // Three visits of 20 s on average plus the walking: an hour is ample.
        let early: Vec<u64> = first_seen
            .iter()
            .filter(|&(_, &t)| t + Duration::from_secs(3600) < horizon)
            .map(|(&p, _)| p)
            .collect();
        assert!(early.len() > 1000);
        for person in early {
            assert_eq!(
                last_zone[&person],
                Zone::Outside,
                "person {person} never left"
            );
        }
    }

    #[test]
    fn nothing_moves_after_the_duration_and_people_inside_stay_inside() {
        let hall = example_hall();
        let mut traffic = Traffic::new(&hall, &options(11, 60.0, 60, 600)).expect("valid");
        let crossings: Vec<Crossing> = traffic.by_ref().collect();
        assert!(!crossings.is_empty());
        assert!(
            crossings
                .iter()
                .all(|c| c.offset < Duration::from_secs(600))
        );
        assert!(
            traffic.tally().inside() > 0,
            "a busy hall is not empty at the end"
        );
        assert_eq!(traffic.next(), None, "a finished model stays finished");
    }

    #[test]
    fn no_arrivals_means_no_crossings() {
        let mut traffic = Traffic::new(&example_hall(), &options(1, 0.0, 20, 600)).expect("valid");
        assert_eq!(traffic.next(), None);
    }

    #[test]
    fn a_hall_without_a_street_door_has_no_visitors() {
        let hall = config(
            r#"
            [[rooms]]
            id = "a"
            capacity = 5
            [[rooms]]
            id = "b"
            capacity = 5
            [[doors]]
            id = "a-b"
            from = "a"
            to = "b"
            "#,
        );
        let mut traffic = Traffic::new(&hall, &options(1, 60.0, 20, 600)).expect("valid");
        assert_eq!(traffic.next(), None);
    }

    #[test]
    fn a_bad_arrival_rate_is_refused() {
        for rate in [-1.0, f64::NAN, f64::INFINITY] {
            let error =
                Traffic::new(&example_hall(), &options(1, rate, 20, 600)).expect_err("refused");
            assert!(error.to_string().contains("arrivals per minute"), "{error}");
        }
    }

    #[test]
    fn the_street_is_never_a_corridor_between_rooms() {
        // Two rooms each with its own street door and no door between them: nobody walks
        // out of one and into the other as part of a visit; each visit ends on the street.
        let hall = config(
            r#"
            [[rooms]]
            id = "east"
            capacity = 5
            [[rooms]]
            id = "west"
            capacity = 5
            [[doors]]
            id = "east-door"
            from = "outside"
            to = "east"
            [[doors]]
            id = "west-door"
            from = "outside"
            to = "west"
            "#,
        );
        let (_, crossings) = check_invariants(&hall, &options(9, 30.0, 20, 3600));
        let mut rooms_per_person: HashMap<u64, Vec<Zone>> = HashMap::new();
        for c in crossings {
            if c.to != Zone::Outside {
                rooms_per_person.entry(c.person).or_default().push(c.to);
            }
        }
        assert!(rooms_per_person.values().all(|rooms| rooms.len() == 1));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn any_seed_and_rate_keeps_the_invariants(
            seed in any::<u64>(),
            arrivals_per_min in 0.0f64..400.0,
            dwell_secs in 0u64..300,
            duration_secs in 0u64..1800,
            awkward in any::<bool>(),
        ) {
            let hall = if awkward { awkward_hall() } else { example_hall() };
            let options = options(seed, arrivals_per_min, dwell_secs, duration_secs);
            let (tally, crossings) = check_invariants(&hall, &options);
            // Determinism holds for every seed, not just the ones tested above.
            let again: Vec<Crossing> = Traffic::new(&hall, &options).expect("valid").collect();
            prop_assert_eq!(crossings, again);
            prop_assert_eq!(
                tally.door_in.iter().sum::<u64>() + tally.door_out.iter().sum::<u64>(),
                tally.crossings
            );
        }
    }
}
