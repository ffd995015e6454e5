//! Pure decoding of people-counter registers: registers → IN/OUT totals → crossings.
//!
//! Sits between the Modbus driver (which only moves registers) and the occupancy engine (which
//! only sees crossings). No I/O and no clock, so it is unit- and property-tested on its own.
//! The hard parts live here: 32-bit word order and 0/1-based addresses (resolved by the
//! profile), turning cumulative totals into deltas across a wrap or a device reset, and not
//! believing totals that move more than the door's physics allows in the time between two
//! reads ([`plausible_limit`]): such a step counts nobody, becomes the new baseline and comes
//! back as a [`Doubt`] saying what it most likely means (a wrong word order, a replaced
//! counter, a reset). A fall is a wrap only when the arithmetic and the driver's [`Evidence`]
//! (time since the last read, a lost connection) agree.

use std::time::Duration;

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
    /// A fixed most crossings believable between two readings, when the profile sets one;
    /// otherwise the limit comes from `max_crossings_per_second` and the time between reads.
    pub max_step: Option<u64>,
    /// Most people the door can pass per second, each way: the physics every step is held to.
    pub max_crossings_per_second: u32,
    pub on_decrease: OnDecrease,
}

impl CounterProfile {
    pub fn counting(&self) -> Counting {
        Counting {
            mode: self.mode,
            wrap_modulus: self.wrap_modulus,
            max_step: self.max_step,
            max_crossings_per_second: self.max_crossings_per_second,
            on_decrease: self.on_decrease,
        }
    }
}

/// The shortest time a step is judged over. Counters update their registers in batches and
/// reads are stamped when they return, so over a short poll interval the physics would refuse
/// an honest burst: at least this long's worth of crossings is always believable.
pub const BURST_WINDOW: Duration = Duration::from_secs(10);

/// A jump bigger than the door can pass in this long is no burst: the counter was replaced,
/// its totals restored from flash, or its address swapped with another's. Also the gap
/// assumed when the time since the baseline is unknown (the first read after a restart).
pub const DAY: Duration = Duration::from_secs(24 * 3600);

/// 2^16: the step a 32-bit total read with its words swapped moves by, per crossing.
pub const WORD: u64 = 1 << 16;

/// What the driver knows of the time and the link between the baseline's reading and this
/// one: the evidence a jump or a fall is judged with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Evidence {
    /// Time since the reading the baseline came from; `None` when unknown (a replay with no
    /// link history).
    pub elapsed: Option<Duration>,
    /// The device was unreachable since then (connection lost, no answer, the box lost
    /// power): it may have rebooted, so a fall is a reset, never a wrap.
    pub interrupted: bool,
}

impl Evidence {
    /// A replay's readings: no link history, no clock between them.
    pub const UNKNOWN: Evidence = Evidence {
        elapsed: None,
        interrupted: false,
    };
}

/// A counter's totals persisted by an earlier run of the gateway, and what is known of the
/// time and the device since they were read: the evidence its first reading is judged with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Baseline {
    pub totals: Totals,
    pub since: Evidence,
}

/// Why a reading's totals were not taken at their word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DoubtKind {
    /// A 32-bit total moved by an exact multiple of 65 536: its words are read in the wrong
    /// order (`word_order` in the profile). Nothing counted.
    WordOrder,
    /// A forward jump beyond what the door can pass in the time since the last read.
    /// Nothing counted.
    Jump,
    /// A jump beyond what the door can pass in a whole day: a replaced counter, totals
    /// restored from flash, or two counters' addresses swapped. Nothing counted.
    FarJump,
    /// The total fell and the evidence says reset, not wrap: counted from the new baseline.
    Reset,
}

impl DoubtKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DoubtKind::WordOrder => "word_order",
            DoubtKind::Jump => "jump",
            DoubtKind::FarJump => "far_jump",
            DoubtKind::Reset => "reset",
        }
    }

    /// A reset is counted on from; the others count nothing.
    pub fn is_reset(self) -> bool {
        self == DoubtKind::Reset
    }
}

/// A reading that was not believed as it stood, with what it would have meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Doubt {
    pub kind: DoubtKind,
    /// `"IN"` or `"OUT"`: the total the doubt is about (IN when both are doubtful).
    pub which: &'static str,
    pub from: u64,
    pub to: u64,
    /// The most crossings believable over the time judged.
    pub limit: u64,
    /// The time judged over, in whole seconds; `None` when unknown.
    pub elapsed_secs: Option<u64>,
    /// The link was interrupted before this reading.
    pub interrupted: bool,
}

impl Doubt {
    /// What staff read (state `reason`, the status page, the alert): Chinese first, what it
    /// most likely means and what to check, in plain words.
    pub fn hint(&self) -> String {
        let (which, from, to) = (self.which, self.from, self.to);
        let step = to.wrapping_sub(from);
        let over = match self.elapsed_secs {
            Some(s) => format!("{} people can pass in {s} s", self.limit),
            None => format!("{} people can pass in a day", self.limit),
        };
        match self.kind {
            DoubtKind::WordOrder => {
                let words = step / WORD;
                let by = if words == 1 {
                    "65 536".to_string()
                } else {
                    format!("{words} × 65 536")
                };
                format!(
                    "计数值按 65536 的倍数跳变，疑为字序配置错误 (values jump by {by}: check \
                     `word_order` in the counter's profile): {which} {from} → {to}，未计入 \
                     (not counted)"
                )
            }
            DoubtKind::Jump => format!(
                "计数值跳变超出通行能力 (totals jumped by {step}, more than the {over}): \
                 {which} {from} → {to}，未计入 (not counted); check the counter's address and \
                 wiring, or raise `max_crossings_per_second` for a wide door"
            ),
            DoubtKind::FarJump => format!(
                "计数值跳变超过一整天的通行量，疑为更换计数器、从闪存恢复总数或地址互换 (totals \
                 jumped by {step}, more than the door passes in a day: counter replaced, totals \
                 restored from flash, or two counters' addresses swapped?): {which} {from} → \
                 {to}，未计入 (not counted)"
            ),
            DoubtKind::Reset => {
                let why = if self.interrupted {
                    "the connection was lost just before, so the device restarted".to_string()
                } else {
                    format!("a wrap would mean more than the {over}")
                };
                format!(
                    "计数器复位 (counter reset): {which} {from} → {to}, not a wrap ({why})；\
                     从新总数继续计数 (counting on from the new totals)"
                )
            }
        }
    }
}

/// What one reading added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counted {
    pub inward: u64,
    pub outward: u64,
    /// The device's totals went backwards and the evidence says reset, not wrap (power loss,
    /// firmware update, someone pressed the button). Counts since the reset are kept.
    pub reset: bool,
    /// First reading with no baseline: taken as the baseline, nothing counted.
    pub baseline: bool,
    /// The reading was not taken at its word (a reset, or a jump nothing was counted from).
    /// Its totals are the new baseline all the same, so the next read counts from there.
    pub doubt: Option<Doubt>,
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

    /// [`CounterTracker::observe`] with no evidence: for replays, whose readings carry no
    /// time between them nor link history.
    pub fn update(&mut self, counting: Counting, reading: Totals) -> Counted {
        self.observe(counting, reading, Evidence::UNKNOWN)
    }

    /// The crossings `reading` adds to the baseline, judged against the door's physics and
    /// the `evidence`. Whatever is believed, `reading` becomes the new baseline.
    pub fn observe(&mut self, counting: Counting, reading: Totals, evidence: Evidence) -> Counted {
        let limit = plausible_limit(counting, evidence.elapsed);
        let judge = |which, from, to, kind| Doubt {
            kind,
            which,
            from,
            to,
            limit,
            elapsed_secs: evidence.elapsed.map(|e| e.max(BURST_WINDOW).as_secs()),
            interrupted: evidence.interrupted,
        };
        if counting.mode == CountMode::Delta {
            let doubt = [("IN", reading.inward), ("OUT", reading.outward)]
                .into_iter()
                .find_map(|(which, n)| {
                    forward_doubt(n, limit, counting).map(|kind| judge(which, 0, n, kind))
                });
            return match doubt {
                Some(doubt) => Counted {
                    doubt: Some(doubt),
                    ..Counted::default()
                },
                None => Counted {
                    inward: reading.inward,
                    outward: reading.outward,
                    ..Counted::default()
                },
            };
        }
        let Some(last) = self.last.replace(reading) else {
            return Counted {
                baseline: true,
                ..Counted::default()
            };
        };
        let moves = [
            ("IN", last.inward, reading.inward),
            ("OUT", last.outward, reading.outward),
        ]
        .map(|(which, from, to)| {
            (
                which,
                from,
                to,
                advance(from, to, counting, limit, evidence),
            )
        });
        // A jump in either total makes the whole reading suspect: a swapped or replaced
        // counter can happen to have one total near the old one.
        if let Some(&(which, from, to, Move::Refused(kind))) =
            moves.iter().find(|m| matches!(m.3, Move::Refused(_)))
        {
            return Counted {
                doubt: Some(judge(which, from, to, kind)),
                ..Counted::default()
            };
        }
        let counted = |m: &Move| match *m {
            Move::Counted(n) | Move::Reset(n) => n,
            Move::Refused(_) => 0,
        };
        let reset = moves
            .iter()
            .find(|m| matches!(m.3, Move::Reset(_)))
            .map(|&(which, from, to, _)| judge(which, from, to, DoubtKind::Reset));
        Counted {
            inward: counted(&moves[0].3),
            outward: counted(&moves[1].3),
            reset: reset.is_some(),
            baseline: false,
            doubt: reset,
        }
    }
}

/// The most crossings believable in one direction over `elapsed`: the profile's fixed
/// `max_step` if it has one, else what the door passes at `max_crossings_per_second` over
/// `elapsed` (at least [`BURST_WINDOW`]; a [`DAY`] when unknown).
pub fn plausible_limit(counting: Counting, elapsed: Option<Duration>) -> u64 {
    if let Some(fixed) = counting.max_step {
        return fixed;
    }
    let over = elapsed.unwrap_or(DAY).max(BURST_WINDOW);
    let per_second = u64::from(counting.max_crossings_per_second.max(1));
    // Whole seconds, rounded up: a limit is never below what the burst window allows.
    let secs = over.as_secs() + u64::from(over.subsec_nanos() > 0);
    per_second.saturating_mul(secs)
}

/// How one total moved between two readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Move {
    /// Crossings, across a wrap or not.
    Counted(u64),
    /// The device was reset: these crossings since.
    Reset(u64),
    /// Not believable: nothing counted.
    Refused(DoubtKind),
}

/// Why `step` forward crossings are not believable, if they are not.
fn forward_doubt(step: u64, limit: u64, counting: Counting) -> Option<DoubtKind> {
    // A 32-bit total read with its words swapped moves by 65 536 per crossing. An honest
    // step that is an exact multiple of it is too unlikely to weigh against that, whatever
    // the time since the last read.
    if counting.wrap_modulus > WORD && step >= WORD && step.is_multiple_of(WORD) {
        return Some(DoubtKind::WordOrder);
    }
    if step <= limit {
        return None;
    }
    let day = plausible_limit(
        Counting {
            max_step: None,
            ..counting
        },
        Some(DAY),
    );
    Some(if step > day {
        DoubtKind::FarJump
    } else {
        DoubtKind::Jump
    })
}

/// How a cumulative total moved from `last` to `now`, with `limit` crossings believable.
fn advance(last: u64, now: u64, counting: Counting, limit: u64, evidence: Evidence) -> Move {
    if now >= last {
        return match forward_doubt(now - last, limit, counting) {
            Some(kind) => Move::Refused(kind),
            None => Move::Counted(now - last),
        };
    }
    // Went down: either the total wrapped past the modulus, or the device started again.
    // A wrap only when the arithmetic and the evidence agree: no interruption before it (a
    // rebooting device drops the link) and no more crossings than the door can pass.
    let wrapped = counting
        .wrap_modulus
        .saturating_sub(last)
        .saturating_add(now);
    if !evidence.interrupted && wrapped <= limit {
        return Move::Counted(wrapped);
    }
    match counting.on_decrease {
        // Started again from zero: its total is what it counted since, if that is
        // believable; a higher one is an older total restored, counted from.
        OnDecrease::Reset if now <= limit => Move::Reset(now),
        OnDecrease::Reset | OnDecrease::Restore => Move::Reset(0),
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

    /// A door's counter as shipped: u32 high word first, no fixed `max_step`, 10 people a
    /// second each way.
    fn shipped_u32() -> Counting {
        u32_profile("high_first", 0).counting()
    }

    fn shipped_u16() -> Counting {
        profile("name='s'\nfunction_code=3\nin_register=0\nout_register=1\nvalue_type='u16'")
            .counting()
    }

    fn totals(inward: u64, outward: u64) -> Totals {
        Totals { inward, outward }
    }

    /// Read `secs` after the previous reading, the link unbroken.
    fn after(secs: u64) -> Evidence {
        Evidence {
            elapsed: Some(Duration::from_secs(secs)),
            interrupted: false,
        }
    }

    #[test]
    fn the_plausible_limit_follows_the_time_between_reads_with_a_burst_window_floor() {
        let c = shipped_u16();
        assert_eq!(plausible_limit(c, Some(Duration::from_millis(250))), 100);
        assert_eq!(plausible_limit(c, Some(Duration::from_secs(60))), 600);
        assert_eq!(plausible_limit(c, None), 864_000);
        let fixed = Counting {
            max_step: Some(7),
            ..c
        };
        assert_eq!(plausible_limit(fixed, Some(Duration::from_secs(60))), 7);
    }

    #[test]
    fn a_wrong_word_order_counts_nobody_and_says_check_word_order() {
        // The device holds IN 100, OUT 20 low word first; read high word first, every
        // crossing moves the total by 65 536.
        let c = shipped_u32();
        let mut t = CounterTracker::new(None);
        assert!(t.observe(c, totals(100 << 16, 20 << 16), after(1)).baseline);
        let s = t.observe(c, totals(105 << 16, 20 << 16), after(1));
        assert_eq!((s.inward, s.outward, s.reset), (0, 0, false));
        let doubt = s.doubt.expect("a doubt");
        assert_eq!(doubt.kind, DoubtKind::WordOrder);
        assert!(
            doubt
                .hint()
                .contains("values jump by 5 × 65 536: check `word_order`")
        );
        // Even over a long outage, whose limit would allow the step.
        let s = t.observe(c, totals(106 << 16, 21 << 16), after(3 * 3600));
        assert_eq!((s.inward, s.outward), (0, 0));
        assert_eq!(s.doubt.map(|d| d.kind), Some(DoubtKind::WordOrder));
        assert_eq!(t.baseline(), Some(totals(106 << 16, 21 << 16)));
    }

    #[test]
    fn a_u16_reset_near_the_top_is_a_reset_not_three_thousand_crossings() {
        let c = shipped_u16();
        let mut t = CounterTracker::new(Some(totals(62_107, 61_990)));
        let s = t.observe(c, totals(0, 0), after(1));
        assert_eq!((s.inward, s.outward, s.reset), (0, 0, true));
        let doubt = s.doubt.expect("a doubt");
        assert_eq!((doubt.kind, doubt.which), (DoubtKind::Reset, "IN"));
        assert!(doubt.hint().contains("counter reset"), "{}", doubt.hint());
        // Counting carries on from the new baseline.
        let s = t.observe(c, totals(2, 1), after(1));
        assert_eq!((s.inward, s.outward, s.doubt), (2, 1, None));
    }

    #[test]
    fn a_fall_after_a_lost_connection_is_a_reset_even_when_a_wrap_would_fit() {
        let c = shipped_u16();
        let mut t = CounterTracker::new(Some(totals(65_530, 10)));
        let rebooted = Evidence {
            elapsed: Some(Duration::from_secs(20)),
            interrupted: true,
        };
        let s = t.observe(c, totals(3, 12), rebooted);
        assert_eq!((s.inward, s.outward, s.reset), (3, 2, true));
        assert!(s.doubt.is_some_and(|d| d.interrupted));
        // The same fall with the link unbroken is a wrap of 9.
        let mut t = CounterTracker::new(Some(totals(65_530, 10)));
        let s = t.observe(c, totals(3, 12), after(20));
        assert_eq!((s.inward, s.outward, s.reset, s.doubt), (9, 2, false, None));
    }

    #[test]
    fn a_replaced_counter_counts_nothing_and_is_counted_on_from() {
        let c = shipped_u32();
        let mut t = CounterTracker::new(Some(totals(181, 170)));
        let s = t.observe(c, totals(18_802_684, 18_802_511), after(30));
        assert_eq!((s.inward, s.outward), (0, 0));
        let doubt = s.doubt.expect("a doubt");
        assert_eq!(doubt.kind, DoubtKind::FarJump);
        assert!(
            doubt.hint().contains("counter replaced"),
            "{}",
            doubt.hint()
        );
        let s = t.observe(c, totals(18_802_687, 18_802_511), after(1));
        assert_eq!((s.inward, s.outward, s.doubt), (3, 0, None));
    }

    #[test]
    fn a_jump_beyond_the_door_but_within_a_day_is_refused_as_a_jump() {
        let c = shipped_u32();
        let mut t = CounterTracker::new(Some(totals(1_000, 1_000)));
        let s = t.observe(c, totals(4_429, 1_000), after(1));
        assert_eq!((s.inward, s.outward), (0, 0));
        assert_eq!(s.doubt.map(|d| d.kind), Some(DoubtKind::Jump));
        // A gateway restart: the time is unknown, a day's worth is believable.
        let mut t = CounterTracker::new(Some(totals(1_000, 1_000)));
        let restarted = Evidence {
            elapsed: None,
            interrupted: true,
        };
        let s = t.observe(c, totals(4_429, 1_003), restarted);
        assert_eq!((s.inward, s.outward, s.doubt), (3_429, 3, None));
    }

    #[test]
    fn an_older_total_restored_into_a_reset_profile_counts_nothing() {
        // `on_decrease = "reset"` would count the new total as crossings since a reset; a
        // total the door could not pass since is an older one restored, not a reset.
        let c = shipped_u32();
        let mut t = CounterTracker::new(Some(totals(90_000, 80_000)));
        let s = t.observe(c, totals(85_000, 76_000), after(5));
        assert_eq!((s.inward, s.outward, s.reset), (0, 0, true));
        let s = t.observe(c, totals(85_004, 76_001), after(1));
        assert_eq!((s.inward, s.outward), (4, 1));
    }

    #[test]
    fn a_delta_reading_beyond_the_door_counts_nothing() {
        let c = profile(
            "name='d'\nfunction_code=3\nin_register=0\nout_register=2\nvalue_type='u32'\nmode='delta'",
        )
        .counting();
        let mut t = CounterTracker::new(None);
        let s = t.observe(c, totals(3 << 16, 0), after(1));
        assert_eq!((s.inward, s.outward), (0, 0));
        assert_eq!(s.doubt.map(|d| d.kind), Some(DoubtKind::WordOrder));
        let s = t.observe(c, totals(3, 1), after(1));
        assert_eq!((s.inward, s.outward, s.doubt), (3, 1, None));
    }

    proptest! {
        /// Any run of steps within what the door passes in the time since the last read is
        /// recovered exactly across any number of wraps, with no doubt raised.
        #[test]
        fn plausible_steps_across_wraps_are_recovered_exactly(
            start in 0u64..65536,
            steps in proptest::collection::vec((1u64..120, 0.0f64..=1.0, 0.0f64..=1.0), 1..60),
        ) {
            let c = shipped_u16();
            let m = c.wrap_modulus;
            let mut t = CounterTracker::new(Some(totals(start, m - 1 - start)));
            let (mut tin, mut tout) = (start, m - 1 - start);
            let (mut sum_in, mut sum_out) = (0, 0);
            for (secs, a, b) in steps {
                let limit = plausible_limit(c, Some(Duration::from_secs(secs)));
                let (a, b) = ((a * limit as f64) as u64, (b * limit as f64) as u64);
                tin += a;
                tout += b;
                let s = t.observe(c, totals(tin % m, tout % m), after(secs));
                prop_assert_eq!(s.doubt, None);
                sum_in += s.inward;
                sum_out += s.outward;
            }
            prop_assert_eq!(sum_in, tin - start);
            prop_assert_eq!(sum_out, tout - (m - 1 - start));
        }

        /// Any forward jump beyond the door's limit counts nothing in either direction, and
        /// counting carries on exactly from the totals it jumped to.
        #[test]
        fn an_implausible_jump_counts_nothing_and_counting_carries_on(
            start in 0u64..(1 << 31),
            secs in 1u64..3600,
            over in 1u64..(1 << 30),
            other in 0u64..50,
            next in 0u64..50,
        ) {
            let c = shipped_u32();
            let limit = plausible_limit(c, Some(Duration::from_secs(secs)));
            let mut t = CounterTracker::new(Some(totals(start, start / 3)));
            let jumped = totals(start + limit + over, start / 3 + other);
            let s = t.observe(c, jumped, after(secs));
            prop_assert_eq!((s.inward, s.outward, s.reset), (0, 0, false));
            prop_assert!(s.doubt.is_some_and(|d| !d.kind.is_reset()));
            let s = t.observe(c, totals(jumped.inward + next, jumped.outward), after(1));
            prop_assert_eq!((s.inward, s.outward), (next, 0));
        }

        /// Whatever two readings and evidence come, judging never panics and never counts
        /// more than the limit allows in a direction.
        #[test]
        fn judging_never_counts_beyond_the_limit(
            last in (0u64..(1 << 32), 0u64..(1 << 32)),
            now in (0u64..(1 << 32), 0u64..(1 << 32)),
            secs in proptest::option::of(0u64..100_000),
            interrupted in any::<bool>(),
        ) {
            let c = shipped_u32();
            let evidence = Evidence { elapsed: secs.map(Duration::from_secs), interrupted };
            let mut t = CounterTracker::new(Some(totals(last.0, last.1)));
            let s = t.observe(c, totals(now.0, now.1), evidence);
            let limit = plausible_limit(c, evidence.elapsed);
            prop_assert!(s.inward <= limit && s.outward <= limit);
            prop_assert_eq!(t.baseline(), Some(totals(now.0, now.1)));
        }
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
