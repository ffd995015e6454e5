//! The register image of a simulated people counter: totals in, Modbus registers out.
//!
//! This is the inverse of the gateway's decoder in `devices/`: given a [`CounterProfile`] and
//! a counter's IN and OUT totals, [`encode`] lays the totals out in registers exactly as a
//! device with that register map would (reduced modulo the profile's wrap, split into words in
//! its word order). [`SimulatedCounter`] is one device: its totals, its seeded starting point,
//! and its answer to a register read, including the Modbus exceptions a real device gives.
//! Pure and synchronous; `simulate/mod.rs` serves it over Modbus TCP.

use rand::Rng;
use tokio_modbus::ExceptionCode;

use crate::config::profile::{CountMode, CounterProfile, FunctionCode, ValueType, WordOrder};

use super::traffic::Way;

/// Most registers one Modbus read may ask for (the protocol's limit for function codes 3/4).
const MAX_READ_QUANTITY: u16 = 125;

/// How far below the wrap a 16-bit counter starts, at most: close enough that a short test
/// run carries it over the wrap, far enough that it does not wrap on the very first visitor.
pub const MAX_START_BELOW_WRAP: u64 = 50;

/// 32-bit counters start somewhere below this: years of traffic, and above 65535 so that the
/// high word is not zero and a swapped word order shows.
const MAX_START_LARGE: u64 = 1 << 24;

/// The `read_count` registers from `read_start` on, as a device with `profile` holding these
/// totals would serve them. Registers in the span that hold neither total read as zero.
pub fn encode(profile: &CounterProfile, in_total: u64, out_total: u64) -> Vec<u16> {
    let mut registers = vec![0u16; usize::from(profile.read_count)];
    for (offset, total) in [
        (profile.in_offset, in_total),
        (profile.out_offset, out_total),
    ] {
        let value = total % profile.wrap_modulus;
        let at = usize::from(offset);
        match profile.value_type {
            // A validated profile's modulus is at most 2^16 for u16 values, so this fits.
            ValueType::U16 => registers[at] = value as u16,
            ValueType::U32 => {
                let (high, low) = ((value >> 16) as u16, value as u16);
                let (first, second) = match profile.word_order {
                    WordOrder::HighFirst => (high, low),
                    WordOrder::LowFirst => (low, high),
                };
                registers[at] = first;
                registers[at + 1] = second;
            }
        }
    }
    registers
}

/// A seeded starting total for a counter with this profile: counters in the field have years
/// of history. Those that wrap at 16 bits or less start just below the wrap so that every
/// test run sees the wrap happen.
pub fn starting_total(profile: &CounterProfile, rng: &mut impl Rng) -> u64 {
    let modulus = profile.wrap_modulus;
    if modulus <= 1 << 16 {
        // wrap_modulus is at least 2 in a validated profile.
        let below = rng.random_range(1..=MAX_START_BELOW_WRAP.min(modulus - 1));
        modulus - below
    } else {
        rng.random_range(0..modulus.min(MAX_START_LARGE))
    }
}

/// One simulated people counter.
#[derive(Debug, Clone)]
pub struct SimulatedCounter {
    profile: CounterProfile,
    /// Cumulative totals, never reduced: the registers show them modulo the wrap.
    in_total: u64,
    out_total: u64,
    /// For a delta-mode counter, the totals at its last read: it shows what came after.
    in_read: u64,
    out_read: u64,
}

impl SimulatedCounter {
    pub fn new(profile: CounterProfile, in_total: u64, out_total: u64) -> Self {
        SimulatedCounter {
            profile,
            in_total,
            out_total,
            in_read: in_total,
            out_read: out_total,
        }
    }

    pub fn profile(&self) -> &CounterProfile {
        &self.profile
    }

    /// The cumulative totals, not reduced by the wrap.
    pub fn totals(&self) -> (u64, u64) {
        (self.in_total, self.out_total)
    }

    /// Counts one person through the door.
    pub fn record(&mut self, direction: Way) {
        match direction {
            Way::In => self.in_total += 1,
            Way::Out => self.out_total += 1,
        }
    }

    /// The registers the counter shows now, over its whole span.
    pub fn registers(&self) -> Vec<u16> {
        match self.profile.mode {
            CountMode::Cumulative => encode(&self.profile, self.in_total, self.out_total),
            CountMode::Delta => encode(
                &self.profile,
                self.in_total - self.in_read,
                self.out_total - self.out_read,
            ),
        }
    }

    /// Answers a read of `count` registers from `address` in the `function` table, as the
    /// device would: only its own table, only within its registers. A delta-mode counter
    /// clears each total whose registers the read covered completely.
    pub fn read(
        &mut self,
        function: FunctionCode,
        address: u16,
        count: u16,
    ) -> Result<Vec<u16>, ExceptionCode> {
        if function != self.profile.function {
            return Err(ExceptionCode::IllegalFunction);
        }
        if count == 0 || count > MAX_READ_QUANTITY {
            return Err(ExceptionCode::IllegalDataValue);
        }
        let start = u32::from(self.profile.read_start);
        let end = start + u32::from(self.profile.read_count);
        let (first, last) = (u32::from(address), u32::from(address) + u32::from(count));
        if first < start || last > end {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        let registers = self.registers();
        let from = (first - start) as usize;
        let values = registers[from..from + usize::from(count)].to_vec();
        if self.profile.mode == CountMode::Delta {
            let width = u32::from(self.profile.value_type.registers());
            let covers = |offset: u16| {
                let at = start + u32::from(offset);
                first <= at && at + width <= last
            };
            if covers(self.profile.in_offset) {
                self.in_read = self.in_total;
            }
            if covers(self.profile.out_offset) {
                self.out_read = self.out_total;
            }
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::config::profile::CounterProfileConfig;

    fn profile(text: &str) -> CounterProfile {
        toml::from_str::<CounterProfileConfig>(text)
            .expect("profile parses")
            .resolve()
            .expect("profile is valid")
    }

    fn u32_high_first() -> CounterProfile {
        profile(
            r#"
            name = "t"
            function_code = 3
            in_register = 0
            out_register = 2
            value_type = "u32"
            word_order = "high_first"
            "#,
        )
    }

    #[test]
    fn u32_high_first_puts_the_high_word_at_the_lower_address() {
        let p = u32_high_first();
        assert_eq!(
            encode(&p, 0x0001_0002, 0xABCD_1234),
            vec![0x0001, 0x0002, 0xABCD, 0x1234]
        );
    }

    #[test]
    fn u32_low_first_with_one_based_registers_puts_the_low_word_first() {
        // The shipped generic-u32-input layout: input registers 1 and 3 in the manual are
        // protocol registers 0 and 2.
        let p = profile(
            r#"
            name = "t"
            function_code = 4
            address_base = 1
            in_register = 1
            out_register = 3
            value_type = "u32"
            word_order = "low_first"
            "#,
        );
        assert_eq!((p.read_start, p.read_count), (0, 4));
        assert_eq!(
            encode(&p, 0x0001_0002, 0xABCD_1234),
            vec![0x0002, 0x0001, 0x1234, 0xABCD]
        );
    }

    #[test]
    fn one_based_registers_with_a_gap_read_as_zero_between_the_totals() {
        let p = profile(
            r#"
            name = "t"
            function_code = 3
            address_base = 1
            in_register = 11
            out_register = 14
            value_type = "u16"
            "#,
        );
        assert_eq!((p.read_start, p.read_count), (10, 4));
        assert_eq!(encode(&p, 7, 9), vec![7, 0, 0, 9]);
    }

    #[test]
    fn out_before_in_is_laid_out_by_offset() {
        let p = profile(
            r#"
            name = "t"
            function_code = 3
            in_register = 102
            out_register = 100
            value_type = "u32"
            word_order = "low_first"
            "#,
        );
        assert_eq!((p.read_start, p.in_offset, p.out_offset), (100, 2, 0));
        assert_eq!(encode(&p, 0x0003_0004, 5), vec![5, 0, 0x0004, 0x0003]);
    }

    #[test]
    fn totals_wrap_at_the_profile_modulus() {
        let u16p = profile(
            r#"
            name = "t"
            function_code = 3
            in_register = 0
            out_register = 1
            value_type = "u16"
            "#,
        );
        assert_eq!(encode(&u16p, 65_535, 65_536 + 3), vec![65_535, 3]);
        let decimal = profile(
            r#"
            name = "t"
            function_code = 3
            in_register = 0
            out_register = 2
            value_type = "u32"
            wrap_modulus = 100000
            "#,
        );
        assert_eq!(encode(&decimal, 100_001, 99_999), vec![0, 1, 1, 34_463]);
    }

    #[test]
    fn sixteen_bit_counters_start_just_below_the_wrap() {
        let p = profile(
            r#"
            name = "t"
            function_code = 3
            in_register = 0
            out_register = 1
            value_type = "u16"
            "#,
        );
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..1000 {
            let start = starting_total(&p, &mut rng);
            assert!(
                (65_536 - MAX_START_BELOW_WRAP..65_536).contains(&start),
                "{start}"
            );
        }
        let big = u32_high_first();
        for _ in 0..1000 {
            assert!(starting_total(&big, &mut rng) < MAX_START_LARGE);
        }
    }

    #[test]
    fn reads_outside_the_counter_or_in_the_wrong_table_are_refused() {
        let mut c = SimulatedCounter::new(u32_high_first(), 1, 2);
        assert_eq!(
            c.read(FunctionCode::HoldingRegisters, 0, 4),
            Ok(vec![0, 1, 0, 2])
        );
        assert_eq!(c.read(FunctionCode::HoldingRegisters, 2, 2), Ok(vec![0, 2]));
        assert_eq!(
            c.read(FunctionCode::HoldingRegisters, 1, 4),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            c.read(FunctionCode::HoldingRegisters, u16::MAX, 125),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            c.read(FunctionCode::HoldingRegisters, 0, 0),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            c.read(FunctionCode::InputRegisters, 0, 4),
            Err(ExceptionCode::IllegalFunction)
        );
    }

    #[test]
    fn a_cumulative_counter_keeps_counting_across_reads() {
        let mut c = SimulatedCounter::new(u32_high_first(), 65_535, 10);
        c.record(Way::In);
        c.record(Way::Out);
        assert_eq!(
            c.read(FunctionCode::HoldingRegisters, 0, 4),
            Ok(vec![1, 0, 0, 11])
        );
        assert_eq!(
            c.read(FunctionCode::HoldingRegisters, 0, 4),
            Ok(vec![1, 0, 0, 11])
        );
        assert_eq!(c.totals(), (65_536, 11));
    }

    #[test]
    fn a_delta_counter_clears_what_a_read_covered() {
        let p = profile(
            r#"
            name = "t"
            function_code = 3
            in_register = 0
            out_register = 1
            value_type = "u16"
            mode = "delta"
            "#,
        );
        let mut c = SimulatedCounter::new(p, 500, 400);
        assert_eq!(c.read(FunctionCode::HoldingRegisters, 0, 2), Ok(vec![0, 0]));
        c.record(Way::In);
        c.record(Way::In);
        c.record(Way::Out);
        // Reading only IN clears only IN.
        assert_eq!(c.read(FunctionCode::HoldingRegisters, 0, 1), Ok(vec![2]));
        c.record(Way::In);
        assert_eq!(c.read(FunctionCode::HoldingRegisters, 0, 2), Ok(vec![1, 1]));
        assert_eq!(c.read(FunctionCode::HoldingRegisters, 0, 2), Ok(vec![0, 0]));
    }
}
