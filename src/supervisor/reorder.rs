//! The reorder stage: device events back in time order before the engine sees them.
//!
//! ```text
//! drivers ──DeviceEvent (arrival order)──► Reorder ──(time order)──► Core::apply ──► engine
//! ```
//!
//! Drivers stamp each event when they observe it, but events from different devices reach
//! the core loop in the order their tasks happened to run: a slow RS-485 bus hands over a read
//! a second after a terminal pushed a passage stamped later. Applied in arrival order, the
//! same day gives different minute bins and different peaks depending on scheduling. So the
//! core holds every event for [`REORDER_WINDOW`] and releases, on each tick, those stamped at
//! or before `now − window`, ordered by (timestamp, device, arrival). Any delivery in which no
//! event is late by `window` or more then gives the engine one and the same sequence; a
//! device's own events keep their order (their stamps never decrease, and arrival breaks
//! ties).
//!
//! Pure and synchronous: the caller says what `now` is (the wall clock live, the virtual clock
//! in a replay). Counter baselines and passage keys are taken by `Core::apply` only, so an
//! event still held here at a crash was never committed: the counter's persisted baseline
//! gives its crossings back after the restart. The one exception is a counter's very first
//! read, which counts nothing: its baseline is taken on arrival (see `Core::receive`).
//!
//! A counter's online/offline report is also taken on arrival, into the health the state,
//! the status page and the alerts show: an unplugged bus is on the overview within a tick,
//! not a window later. Only the engine's online ratio, a figure, waits for the release.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::devices::DeviceEvent;

/// How long an event is held for stragglers from other devices: well above a Modbus read's
/// timeout plus a busy bus's turn, short enough that bins still close within seconds.
pub const REORDER_WINDOW: Duration = Duration::from_secs(2);

/// Most events held at once. Far above a window's worth of a large hall (a few hundred); if a
/// flood ever fills it, the earliest event goes to the engine at once rather than growing
/// without bound (it may then be out of order by a little, and the engine copes with that).
pub const REORDER_CAPACITY: usize = 8192;

/// Ties between devices at the same instant are broken by device, so the order never depends
/// on which task ran first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeviceOrder {
    Counter(usize),
    Terminal(usize),
    Camera(usize),
}

/// The device an event came from.
pub fn device_of(event: &DeviceEvent) -> DeviceOrder {
    match event {
        DeviceEvent::CounterRead { counter, .. }
        | DeviceEvent::DeviceOnline { counter, .. }
        | DeviceEvent::DeviceOffline { counter, .. } => DeviceOrder::Counter(*counter),
        DeviceEvent::Passage { terminal, .. } => DeviceOrder::Terminal(*terminal),
        DeviceEvent::HeadCount { camera, .. } => DeviceOrder::Camera(*camera),
    }
}

/// When the driver observed it.
pub fn stamp_of(event: &DeviceEvent) -> Timestamp {
    match event {
        DeviceEvent::CounterRead { at, .. }
        | DeviceEvent::DeviceOnline { at, .. }
        | DeviceEvent::DeviceOffline { at, .. }
        | DeviceEvent::Passage { at, .. }
        | DeviceEvent::HeadCount { at, .. } => *at,
    }
}

type Key = (Timestamp, DeviceOrder, u64);

/// Events waiting for their release, in release order.
#[derive(Debug)]
pub struct Reorder {
    window: SignedDuration,
    held: BTreeMap<Key, DeviceEvent>,
    arrivals: u64,
    /// Events let through early because the buffer was full.
    forced: u64,
}

impl Reorder {
    pub fn new(window: Duration) -> Self {
        Reorder {
            window: SignedDuration::try_from(window).unwrap_or(SignedDuration::MAX),
            held: BTreeMap::new(),
            arrivals: 0,
            forced: 0,
        }
    }

    /// Holds `event`. When the buffer is full, hands back the earliest event held, which the
    /// caller applies at once.
    pub fn push(&mut self, event: DeviceEvent) -> Option<DeviceEvent> {
        self.arrivals += 1;
        let key = (stamp_of(&event), device_of(&event), self.arrivals);
        self.held.insert(key, event);
        if self.held.len() > REORDER_CAPACITY {
            self.forced += 1;
            if self.forced.is_power_of_two() {
                tracing::warn!(
                    held = self.held.len(),
                    forced = self.forced,
                    "the reorder buffer is full; applying the earliest events without waiting for stragglers"
                );
            }
            return self.held.pop_first().map(|(_, event)| event);
        }
        None
    }

    /// The latest stamp that may be released at `now`: events stamped up to it can no
    /// longer be overtaken by a straggler delayed less than the window.
    pub fn horizon(&self, now: Timestamp) -> Timestamp {
        now.checked_sub(self.window).unwrap_or(now)
    }

    /// Takes out, in order, every event stamped at or before `horizon`.
    pub fn release(&mut self, horizon: Timestamp) -> Vec<DeviceEvent> {
        let mut out = Vec::new();
        while let Some(entry) = self.held.first_entry() {
            if entry.key().0 > horizon {
                break;
            }
            out.push(entry.remove());
        }
        out
    }

    /// Takes out, in order, every event stamped more than a window after `now`. Live, that
    /// means the wall clock was stepped back past them: waiting until it catches up could take
    /// hours, so they go now, as they would have without this stage (the engine's clock never
    /// runs backwards, so they land at the latest time it has seen).
    pub fn ahead_of(&mut self, now: Timestamp) -> Vec<DeviceEvent> {
        let limit = now.checked_add(self.window).unwrap_or(now);
        let mut out = Vec::new();
        while let Some(entry) = self.held.last_entry() {
            if entry.key().0 <= limit {
                break;
            }
            out.push(entry.remove());
        }
        out.reverse();
        out
    }

    /// Takes out everything, in order (at shutdown).
    pub fn drain(&mut self) -> Vec<DeviceEvent> {
        std::mem::take(&mut self.held).into_values().collect()
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn online(counter: usize, second: i64) -> DeviceEvent {
        DeviceEvent::DeviceOnline {
            counter,
            at: Timestamp::from_second(1_800_000_000 + second).expect("valid"),
        }
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).expect("valid")
    }

    #[test]
    fn events_come_out_in_stamp_order_once_the_window_has_passed() {
        let mut r = Reorder::new(Duration::from_secs(2));
        assert!(r.push(online(1, 5)).is_none());
        assert!(r.push(online(0, 4)).is_none());
        assert!(r.push(online(2, 4)).is_none());
        assert!(r.release(r.horizon(at(5))).is_empty());
        assert_eq!(
            r.release(r.horizon(at(6))),
            vec![online(0, 4), online(2, 4)]
        );
        assert_eq!(r.len(), 1);
        assert_eq!(r.drain(), vec![online(1, 5)]);
        assert!(r.is_empty());
    }

    #[test]
    fn equal_stamps_go_by_device_then_by_arrival() {
        let mut r = Reorder::new(Duration::ZERO);
        r.push(online(3, 1));
        r.push(online(1, 1));
        r.push(online(3, 1));
        let out = r.release(at(1));
        let devices: Vec<DeviceOrder> = out.iter().map(device_of).collect();
        assert_eq!(
            devices,
            vec![
                DeviceOrder::Counter(1),
                DeviceOrder::Counter(3),
                DeviceOrder::Counter(3)
            ]
        );
    }

    #[test]
    fn events_stamped_ahead_of_a_clock_stepped_back_are_not_held_until_it_catches_up() {
        let mut r = Reorder::new(Duration::from_secs(2));
        r.push(online(0, 3_600));
        r.push(online(1, 3_601));
        r.push(online(2, 10));
        // The clock is stepped back to second 11: an hour before the first two stamps.
        assert!(
            r.ahead_of(at(3_599)).is_empty(),
            "within a window: still held"
        );
        assert_eq!(r.ahead_of(at(11)), vec![online(0, 3_600), online(1, 3_601)]);
        assert_eq!(r.release(r.horizon(at(12))), vec![online(2, 10)]);
        assert!(r.is_empty());
    }

    #[test]
    fn a_full_buffer_lets_the_earliest_event_through() {
        let mut r = Reorder::new(Duration::from_secs(2));
        for i in 0..REORDER_CAPACITY {
            assert!(r.push(online(0, 10 + i as i64)).is_none());
        }
        assert_eq!(r.push(online(1, 5)), Some(online(1, 5)));
        assert_eq!(r.len(), REORDER_CAPACITY);
    }
}
