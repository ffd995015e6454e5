//! Clock trust: is the system clock synchronised to a time source?
//!
//! Bins, days and `msg_id`s come from the wall clock, so a box that booted without a
//! real-time clock and has not reached NTP yet stamps its figures in 1970 (or wherever its
//! clock stopped). The gateway cannot fix that, but it can say so: every payload carries
//! `clock_synced`, and the centre can hold back figures from an untrusted clock.
//!
//! The test is systemd's (`timedatectl`'s "System clock synchronized"): the kernel's
//! `adjtimex` reports a maximum error below 16 s. The `STA_UNSYNC` flag is ignored as systemd
//! does, since some setups set it only to keep the kernel from writing the RTC.
//!
//! Durations and intervals never use the wall clock (tokio's and std's `Instant` are
//! monotonic), so a clock step breaks no timer; see the occupancy engine for how bins treat a
//! clock that steps backwards.

use std::time::Instant;

use jiff::{SignedDuration, Timestamp};

/// The gateway's notion of "now" for bins and days: the wall clock, but never backwards.
///
/// When the wall clock is stepped back (NTP correcting a box that booted with a wrong clock),
/// bins hold still at the latest time seen until the clock catches up, so no closed minute is
/// reopened and no bin is emitted twice; crossings meanwhile go into the open bin. A step
/// forward is taken as it is: the engine closes the open bin and starts the next at the new
/// time, without inventing the minutes in between.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    latest: Timestamp,
}

impl WallClock {
    pub fn new(now: Timestamp) -> Self {
        WallClock { latest: now }
    }

    /// Takes a reading of the wall clock; returns the time to use.
    pub fn observe(&mut self, wall: Timestamp) -> Timestamp {
        self.latest = self.latest.max(wall);
        self.latest
    }

    pub fn latest(&self) -> Timestamp {
        self.latest
    }
}

/// The smallest jump of the wall clock against the monotonic clock taken for a step (NTP
/// slews by at most 0.5 ms a second; ticks come late by milliseconds, not seconds).
pub const STEP_AT_LEAST: SignedDuration = SignedDuration::from_secs(2);

/// Tells a step of the wall clock from time passing: between two readings of both clocks the
/// wall clock should move as the monotonic one does. Pure: the readings come in.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepWatch {
    last: Option<(Timestamp, Instant)>,
}

impl StepWatch {
    /// Takes a reading of both clocks; returns how far the wall clock was stepped since the
    /// last one (forward positive), when by [`STEP_AT_LEAST`] or more.
    pub fn observe(&mut self, wall: Timestamp, mono: Instant) -> Option<SignedDuration> {
        let last = self.last.replace((wall, mono));
        let (wall_then, mono_then) = last?;
        let elapsed = SignedDuration::try_from(mono.saturating_duration_since(mono_then)).ok()?;
        let step = wall.duration_since(wall_then) - elapsed;
        (step.abs() >= STEP_AT_LEAST).then_some(step)
    }
}

/// The kernel's "maximum error" at or above which the clock is unsynchronised, µs.
const MAX_ERROR_UNSYNCED_US: i64 = 16_000_000;

/// Whether the kernel says the system clock is synchronised; `false` when it cannot tell.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn synchronised() -> bool {
    // SAFETY: `timex` is plain data that the kernel fills in; all-zero is a valid value and
    // `modes = 0` makes `adjtimex` read only, never adjust, the clock.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: `tx` is a valid, exclusively borrowed `timex` for the duration of the call.
    let state = unsafe { libc::adjtimex(&mut tx) };
    // `maxerror` is a C long: 64 bits here, 32 on armv7, hence the conversion.
    #[allow(clippy::useless_conversion)]
    let max_error = i64::from(tx.maxerror);
    state >= 0 && max_error < MAX_ERROR_UNSYNCED_US
}

/// Elsewhere there is no portable way to ask; report unsynchronised rather than guess.
#[cfg(not(target_os = "linux"))]
pub fn synchronised() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_stepped_back_holds_still_until_it_catches_up() {
        let t = |s: i64| Timestamp::from_second(1_800_000_000 + s).expect("valid");
        let mut clock = WallClock::new(t(0));
        assert_eq!(clock.observe(t(10)), t(10));
        assert_eq!(
            clock.observe(t(-3600)),
            t(10),
            "a step back is not followed"
        );
        assert_eq!(clock.observe(t(5)), t(10));
        assert_eq!(
            clock.observe(t(11)),
            t(11),
            "time moves again once caught up"
        );
        assert_eq!(clock.observe(t(7200)), t(7200), "a step forward is taken");
    }

    #[test]
    fn a_step_of_the_wall_clock_is_told_from_time_passing() {
        let t = |s: i64| Timestamp::from_second(1_800_000_000 + s).expect("valid");
        let m0 = Instant::now();
        let m = |s: u64| m0 + std::time::Duration::from_secs(s);
        let mut watch = StepWatch::default();
        assert_eq!(
            watch.observe(t(0), m(0)),
            None,
            "the first reading is a baseline"
        );
        assert_eq!(watch.observe(t(1), m(1)), None);
        assert_eq!(
            watch.observe(t(61), m(2)),
            Some(SignedDuration::from_secs(59))
        );
        assert_eq!(watch.observe(t(62), m(3)), None);
        assert_eq!(
            watch.observe(t(2), m(4)),
            Some(SignedDuration::from_secs(-61))
        );
        assert_eq!(
            watch.observe(t(3) + SignedDuration::from_millis(1500), m(5)),
            None,
            "a late tick is not a step"
        );
    }
}
