//! Capped exponential backoff: the one rule every reconnecting driver waits by (Modbus TCP
//! counters, serial ports, the terminal pull clients, the uplink).
//!
//! The n-th wait after the last success is `min(max, first · 2ⁿ)` — the *ceiling* — or, for a
//! [`jittered`](Backoff::jittered) one, a random part of it, so a hall of terminals that lost
//! power together, or a city of gateways that lost the same broker, does not come back in
//! step. Each driver names its `first`, `max` and jitter once, as a `const` [`Backoff`] or
//! where its settings are read.

use std::time::Duration;

use rand::Rng;

/// How a wait is drawn from the ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Jitter {
    /// The whole ceiling: waits a device driver can be timed by.
    None,
    /// A uniformly random part of the ceiling, zero included.
    Full,
}

#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    jitter: Jitter,
    ceiling: Duration,
}

impl Backoff {
    /// Waits of exactly `first`, `2·first`, … up to `max`.
    pub const fn exact(first: Duration, max: Duration) -> Self {
        Self::new(first, max, Jitter::None)
    }

    /// Waits of a random part of `first`, `2·first`, … up to `max`.
    pub const fn jittered(first: Duration, max: Duration) -> Self {
        Self::new(first, max, Jitter::Full)
    }

    /// The first ceiling is `first` even when `max` is below it; the next ones are `max`.
    const fn new(first: Duration, max: Duration, jitter: Jitter) -> Self {
        Backoff {
            first,
            max,
            jitter,
            ceiling: first,
        }
    }

    /// The next wait, drawn from the current ceiling, which then doubles (up to the cap).
    pub fn next_wait(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (self.ceiling * 2).min(self.max);
        match self.jitter {
            Jitter::None => ceiling,
            Jitter::Full => ceiling.mul_f64(rand::rng().random_range(0.0..=1.0)),
        }
    }

    /// The current ceiling (the longest the next wait can be).
    pub fn ceiling(&self) -> Duration {
        self.ceiling
    }

    /// The shortest wait there is: the ceiling after a [`reset`](Self::reset).
    pub const fn first(&self) -> Duration {
        self.first
    }

    /// Things work again: the next failure waits little.
    pub fn reset(&mut self) {
        self.ceiling = self.first;
    }

    /// Lifts the ceiling to at least `floor`, but not above the cap: a retry that must not
    /// come too soon (the uplink after losing an established connection).
    pub fn raise_to(&mut self, floor: Duration) {
        self.ceiling = self.ceiling.max(floor).min(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_stay_under_a_ceiling_that_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::jittered(Duration::from_millis(100), Duration::from_millis(750));
        let mut ceilings = Vec::new();
        for _ in 0..6 {
            let ceiling = b.ceiling();
            ceilings.push(ceiling.as_millis());
            assert!(b.next_wait() <= ceiling);
        }
        assert_eq!(ceilings, [100, 200, 400, 750, 750, 750]);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
    }

    #[test]
    fn exact_waits_are_the_ceilings_themselves() {
        let mut b = Backoff::exact(Duration::from_millis(250), Duration::from_secs(1));
        let waits: Vec<u128> = (0..5).map(|_| b.next_wait().as_millis()).collect();
        assert_eq!(waits, [250, 500, 1000, 1000, 1000]);
        assert_eq!(b.first(), Duration::from_millis(250));
    }

    #[test]
    fn a_raised_ceiling_stays_under_the_cap_and_doubles_from_there() {
        let mut b = Backoff::exact(Duration::from_millis(250), Duration::from_secs(8));
        b.raise_to(Duration::from_secs(5));
        assert_eq!(b.next_wait(), Duration::from_secs(5));
        assert_eq!(b.ceiling(), Duration::from_secs(8));
        b.reset();
        b.raise_to(Duration::from_secs(60));
        assert_eq!(b.ceiling(), Duration::from_secs(8));
    }
}
