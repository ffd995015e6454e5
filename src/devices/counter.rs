//! Pure decoding of people-counter registers: registers → IN/OUT totals → crossings.
//!
//! Sits between the Modbus driver (which only moves registers) and the occupancy engine (which
//! only sees crossings). No I/O and no clock, so it is unit- and property-tested on its own.
//! The two hard parts live here: 32-bit word order and 0/1-based addresses (resolved by the
//! profile), and turning cumulative totals into deltas across a wrap or a device reset.

use serde::{Deserialize, Serialize};

use crate::config::profile::{CountMode, CounterProfile, OnDecrease, ValueType, WordOrder};

/// A counter's IN and OUT values as read: running totals, or (delta profiles) counts since
/// the last read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub inward: u64,
    pub outward: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("counter answered {got} registers, expected {expected}")]
    WrongLength { expected: usize, got: usize },
    #[error("{which} total {value} is not below the profile's wrap modulus {modulus}")]
    OutOfRange {
        which: &'static str,
        value: u64,
        modulus: u64,
    },
}

/// Decodes the registers of one read (`profile.read_count` words from `profile.read_start`).
pub fn decode_totals(profile: &CounterProfile, registers: &[u16]) -> Result<Totals, DecodeError> {
    if registers.len() != profile.read_count as usize {
        return Err(DecodeError::WrongLength {
            expected: profile.read_count as usize,
            got: registers.len(),
        });
    }
    let value = |offset: u16, which: &'static str| -> Result<u64, DecodeError> {
        let at = offset as usize;
        let v = match profile.value_type {
            ValueType::U16 => u64::from(registers[at]),
            ValueType::U32 => {
                let (a, b) = (u64::from(registers[at]), u64::from(registers[at + 1]));
                match profile.word_order {
                    WordOrder::HighFirst => (a << 16) | b,
                    WordOrder::LowFirst => (b << 16) | a,
                }
            }
        };
        if profile.mode == CountMode::Cumulative && v >= profile.wrap_modulus {
            return Err(DecodeError::OutOfRange {
                which,
                value: v,
                modulus: profile.wrap_modulus,
            });
        }
        Ok(v)
    };
    Ok(Totals {
        inward: value(profile.in_offset, "IN")?,
        outward: value(profile.out_offset, "OUT")?,
    })
}

/// How a counter's totals turn into crossings: the part of a profile the tracker needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counting {
    pub mode: CountMode,
    /// Totals wrap to zero at this value.
    pub wrap_modulus: u64,
    /// Most crossings believable between two readings (tells a wrap from a reset).
    pub max_step: u64,
    pub on_decrease: OnDecrease,
}

impl CounterProfile {
    pub fn counting(&self) -> Counting {
        Counting {
            mode: self.mode,
            wrap_modulus: self.wrap_modulus,
            max_step: self.max_step,
            on_decrease: self.on_decrease,
        }
    }
}

/// What one reading added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counted {
    pub inward: u64,
    pub outward: u64,
    /// The device's totals went backwards by more than a wrap explains: it was reset (power
    /// loss, firmware update, someone pressed the button). Counts since the reset are kept.
    pub reset: bool,
    /// First reading with no baseline: taken as the baseline, nothing counted.
    pub baseline: bool,
}

/// Turns successive readings of one counter into crossings. Its baseline is persisted with
/// the engine state so that a gateway restart neither loses nor double-counts crossings.
#[derive(Debug, Clone, Default)]
pub struct CounterTracker {
    last: Option<Totals>,
}

impl CounterTracker {
    pub fn new(baseline: Option<Totals>) -> Self {
        CounterTracker { last: baseline }
    }

    pub fn baseline(&self) -> Option<Totals> {
        self.last
    }

    pub fn update(&mut self, counting: Counting, reading: Totals) -> Counted {
        if counting.mode == CountMode::Delta {
            return Counted {
                inward: reading.inward,
                outward: reading.outward,
                ..Counted::default()
            };
        }
        let Some(last) = self.last.replace(reading) else {
            return Counted {
                baseline: true,
                ..Counted::default()
            };
        };
        let (inward, in_reset) = advance(last.inward, reading.inward, counting);
        let (outward, out_reset) = advance(last.outward, reading.outward, counting);
        Counted {
            inward,
            outward,
            reset: in_reset || out_reset,
            baseline: false,
        }
    }
}

/// Crossings between two cumulative readings, and whether the device was reset.
fn advance(last: u64, now: u64, counting: Counting) -> (u64, bool) {
    if now >= last {
        return (now - last, false);
    }
    // Went down: either the total wrapped past the modulus, or the device started again
    // from zero. A wrap that implies more crossings than `max_step` is not believable.
    let wrapped = counting.wrap_modulus - last + now;
    if wrapped <= counting.max_step {
        (wrapped, false)
    } else {
        match counting.on_decrease {
            OnDecrease::Reset => (now, true),
            OnDecrease::Restore => (0, true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::profile::CounterProfileConfig;
    use proptest::prelude::*;

    fn profile(text: &str) -> CounterProfile {
        toml::from_str::<CounterProfileConfig>(text)
            .expect("test profile parses")
            .resolve()
            .expect("test profile is valid")
    }

    fn u16_profile() -> CounterProfile {
        profile(
            "name='a'\nfunction_code=3\nin_register=0\nout_register=1\nvalue_type='u16'\nmax_step=1000",
        )
    }

    fn u32_profile(order: &str, base: u16) -> CounterProfile {
        profile(&format!(
            "name='b'\nfunction_code=4\naddress_base={base}\nin_register={}\nout_register={}\nvalue_type='u32'\nword_order='{order}'",
            base + 4,
            base
        ))
    }

    #[test]
    fn u16_totals_decode_in_register_order() {
        let p = u16_profile();
        assert_eq!(
            decode_totals(&p, &[7, 65535]),
            Ok(Totals {
                inward: 7,
                outward: 65535
            })
        );
    }

    #[test]
    fn u32_word_order_is_honoured() {
        // OUT at protocol 0..2, IN at 4..6 (two unused registers between, as some maps have).
        let high = u32_profile("high_first", 0);
        let low = u32_profile("low_first", 0);
        let regs = [0x0001, 0x0002, 0xffff, 0xffff, 0x0003, 0x0004];
        let h = decode_totals(&high, &regs).expect("decodes");
        assert_eq!(h.outward, 0x0001_0002);
        assert_eq!(h.inward, 0x0003_0004);
        let l = decode_totals(&low, &regs).expect("decodes");
        assert_eq!(l.outward, 0x0002_0001);
        assert_eq!(l.inward, 0x0004_0003);
    }

    #[test]
    fn one_based_manual_addresses_read_the_same_registers() {
        let zero = u32_profile("high_first", 0);
        let one = u32_profile("high_first", 1);
        assert_eq!(zero.read_start, one.read_start);
        assert_eq!(zero.in_offset, one.in_offset);
        assert_eq!(zero.out_offset, one.out_offset);
    }

    #[test]
    fn short_answers_are_errors_not_panics() {
        let p = u32_profile("high_first", 0);
        assert_eq!(
            decode_totals(&p, &[1, 2]),
            Err(DecodeError::WrongLength {
                expected: 6,
                got: 2
            })
        );
    }

    #[test]
    fn first_reading_is_only_a_baseline() {
        let p = u16_profile();
        let mut t = CounterTracker::new(None);
        let s = t.update(
            p.counting(),
            Totals {
                inward: 500,
                outward: 400,
            },
        );
        assert!(s.baseline);
        assert_eq!((s.inward, s.outward), (0, 0));
        let s = t.update(
            p.counting(),
            Totals {
                inward: 503,
                outward: 401,
            },
        );
        assert_eq!((s.inward, s.outward, s.reset), (3, 1, false));
    }

    #[test]
    fn u16_wrap_gives_the_crossings_across_it() {
        let p = u16_profile();
        let mut t = CounterTracker::new(Some(Totals {
            inward: 65530,
            outward: 65535,
        }));
        let s = t.update(
            p.counting(),
            Totals {
                inward: 4,
                outward: 0,
            },
        );
        assert_eq!((s.inward, s.outward, s.reset), (10, 1, false));
    }

    #[test]
    fn u32_wrap_gives_the_crossings_across_it() {
        let p = u32_profile("low_first", 1);
        let mut t = CounterTracker::new(Some(Totals {
            inward: u32::MAX as u64 - 2,
            outward: 10,
        }));
        let s = t.update(
            p.counting(),
            Totals {
                inward: 5,
                outward: 12,
            },
        );
        assert_eq!((s.inward, s.outward, s.reset), (8, 2, false));
    }

    #[test]
    fn device_reset_counts_what_came_after_it() {
        let p = u16_profile();
        let mut t = CounterTracker::new(Some(Totals {
            inward: 40_000,
            outward: 39_000,
        }));
        let s = t.update(
            p.counting(),
            Totals {
                inward: 3,
                outward: 1,
            },
        );
        assert_eq!((s.inward, s.outward, s.reset), (3, 1, true));
        // And counting carries on from the new baseline.
        let s = t.update(
            p.counting(),
            Totals {
                inward: 5,
                outward: 1,
            },
        );
        assert_eq!((s.inward, s.outward, s.reset), (2, 0, false));
    }

    #[test]
    fn a_restored_older_total_counts_nothing_and_carries_on() {
        let p = profile(
            "name='r'\nfunction_code=3\nin_register=0\nout_register=2\nvalue_type='u32'\non_decrease='restore'",
        );
        let mut t = CounterTracker::new(Some(Totals {
            inward: 90_000,
            outward: 80_000,
        }));
        // Power cut; the node comes back with the totals it saved an hour ago.
        let s = t.update(
            p.counting(),
            Totals {
                inward: 85_000,
                outward: 76_000,
            },
        );
        assert_eq!((s.inward, s.outward, s.reset), (0, 0, true));
        let s = t.update(
            p.counting(),
            Totals {
                inward: 85_004,
                outward: 76_001,
            },
        );
        assert_eq!((s.inward, s.outward), (4, 1));
    }

    #[test]
    fn delta_profiles_take_readings_as_counts() {
        let p = profile(
            "name='d'\nfunction_code=3\nin_register=0\nout_register=1\nvalue_type='u16'\nmode='delta'",
        );
        let mut t = CounterTracker::new(None);
        let s = t.update(
            p.counting(),
            Totals {
                inward: 2,
                outward: 3,
            },
        );
        assert_eq!((s.inward, s.outward, s.baseline), (2, 3, false));
    }

    #[test]
    fn totals_at_or_above_the_modulus_are_rejected() {
        let p = profile(
            "name='m'\nfunction_code=3\nin_register=0\nout_register=1\nvalue_type='u16'\nwrap_modulus=10000",
        );
        assert!(matches!(
            decode_totals(&p, &[10000, 1]),
            Err(DecodeError::OutOfRange { which: "IN", .. })
        ));
    }

    proptest! {
        #[test]
        fn decoding_never_panics(regs in proptest::collection::vec(any::<u16>(), 0..10),
                                 order in prop_oneof![Just("high_first"), Just("low_first")]) {
            let p = u32_profile(order, 0);
            let _ = decode_totals(&p, &regs);
            let _ = decode_totals(&u16_profile(), &regs);
        }

        /// Any run of crossings of at most `max_step` per read is recovered exactly across
        /// any number of wraps.
        #[test]
        fn cumulative_deltas_sum_to_the_true_crossings(
            start in 0u64..65536,
            steps in proptest::collection::vec((0u64..1000, 0u64..1000), 1..50),
        ) {
            let p = u16_profile();
            let m = p.wrap_modulus;
            let mut t = CounterTracker::new(None);
            let (mut tin, mut tout) = (start, start / 2);
            t.update(p.counting(), Totals { inward: tin % m, outward: tout % m });
            let (mut sum_in, mut sum_out) = (0, 0);
            for (a, b) in &steps {
                tin += a;
                tout += b;
                let s = t.update(p.counting(), Totals { inward: tin % m, outward: tout % m });
                prop_assert!(!s.reset);
                sum_in += s.inward;
                sum_out += s.outward;
            }
            prop_assert_eq!(sum_in, tin - start);
            prop_assert_eq!(sum_out, tout - start / 2);
        }
    }
}
