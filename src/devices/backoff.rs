//! Capped exponential backoff with full jitter, for drivers that reconnect to a device.
//!
//! The Modbus, serial and uplink drivers each keep an inline `backoff *= 2` loop; this is the
//! same rule as a type, used by the terminal pull clients (and ready for the others): the
//! n-th wait is a random part of `min(max, first · 2ⁿ)`, so a hall of terminals that lost
//! power together does not come back in step and exceed a device's connection limit.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max: max.max(first),
            current: first,
        }
    }

    /// The next wait (a random part of the current ceiling), doubling the ceiling.
    pub fn next_wait(&mut self) -> Duration {
        let ceiling = self.current;
        self.current = (self.current * 2).min(self.max);
        ceiling.mul_f64(rand::rng().random_range(0.0..=1.0))
    }

    /// The current ceiling (the longest the next wait can be).
    pub fn ceiling(&self) -> Duration {
        self.current
    }

    /// Things work again: the next failure waits little.
    pub fn reset(&mut self) {
        self.current = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_stay_under_a_ceiling_that_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(750));
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
}
