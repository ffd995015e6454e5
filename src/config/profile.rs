//! People-counter register maps ("profiles"), loaded from `firmware-config/counters/*.toml`.
//!
//! A profile says where a counter keeps its IN and OUT totals and how they are encoded; the
//! pure decoder in `devices::counter` turns registers into totals with it. Vendor differences
//! are data, so a new counter model is a new file, not new code. The shipped profiles are
//! compiled into the binary, so a hall config can name them from any working directory; a
//! config may add its own directory of profiles.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// The profiles shipped in `firmware-config/counters/`, embedded at build time.
const BUILTIN: &[(&str, &str)] = &[
    (
        "generic-u16",
        include_str!("../../firmware-config/counters/generic-u16.toml"),
    ),
    (
        "generic-u32",
        include_str!("../../firmware-config/counters/generic-u32.toml"),
    ),
    (
        "generic-u32-input",
        include_str!("../../firmware-config/counters/generic-u32-input.toml"),
    ),
    (
        "plain-u16",
        include_str!("../../firmware-config/counters/plain-u16.toml"),
    ),
    (
        "advantech-adam-6051",
        include_str!("../../firmware-config/counters/advantech-adam-6051.toml"),
    ),
    (
        "moxa-iologik-e1200",
        include_str!("../../firmware-config/counters/moxa-iologik-e1200.toml"),
    ),
    (
        "banner-dx80-counter",
        include_str!("../../firmware-config/counters/banner-dx80-counter.toml"),
    ),
    (
        "hikvision-people-counting",
        include_str!("../../firmware-config/counters/hikvision-people-counting.toml"),
    ),
];

/// Which Modbus table the totals live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunctionCode {
    /// Function code 3, "read holding registers" (4xxxx addresses).
    HoldingRegisters,
    /// Function code 4, "read input registers" (3xxxx addresses).
    InputRegisters,
}

/// Width of one total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    U16,
    U32,
}

impl ValueType {
    /// Registers one value occupies.
    pub fn registers(self) -> u16 {
        match self {
            ValueType::U16 => 1,
            ValueType::U32 => 2,
        }
    }
}

/// Order of the two 16-bit words of a 32-bit total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WordOrder {
    /// Big-endian word order ("ABCD"): the register at the lower address holds the high word.
    HighFirst,
    /// Little-endian word order ("CDAB"): the register at the lower address holds the low word.
    LowFirst,
}

/// What the totals mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CountMode {
    /// Running totals since the device was installed or reset; the gateway takes differences.
    Cumulative,
    /// Crossings since the previous read (the device clears the register when read).
    Delta,
}

/// What a total that goes down (by more than a wrap explains) means.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDecrease {
    /// The device started again from zero: the new total is all new crossings.
    #[default]
    Reset,
    /// The device restored an older saved total (some nodes save hourly): the crossings since
    /// that save were already counted, so count nothing and carry on from the restored total.
    Restore,
}

/// A profile file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CounterProfileConfig {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Modbus function code used to read the totals: 3 or 4.
    pub function_code: u8,
    /// 0 when the manual gives protocol addresses, 1 when it numbers registers from 1.
    #[serde(default)]
    pub address_base: u16,
    /// Register of the IN total, as numbered in the manual (see `address_base`).
    pub in_register: u16,
    /// Register of the OUT total, as numbered in the manual.
    pub out_register: u16,
    pub value_type: ValueType,
    #[serde(default = "default_word_order")]
    pub word_order: WordOrder,
    #[serde(default = "default_mode")]
    pub mode: CountMode,
    /// Modulus at which the device's totals wrap to zero; defaults to 2^16 or 2^32.
    pub wrap_modulus: Option<u64>,
    /// A fixed largest number of crossings believable between two reads, each way. Unset
    /// (the default), the limit follows from `max_crossings_per_second` and the time between
    /// the reads. A step above it counts nothing; a total that goes down by a wrap that would
    /// imply more than it is taken as a device reset instead.
    #[serde(default)]
    pub max_step: Option<u64>,
    #[serde(default)]
    pub on_decrease: OnDecrease,
    /// Most people the counter's door can pass per second, each way: a step above what this
    /// allows in the time since the last read (at least 10 s of it) is not believed. A lane
    /// passes one or two people a second; the default covers a wide entrance in a rush. A
    /// `[[counters]]` entry may set its own for its door.
    #[serde(default = "default_max_crossings_per_second")]
    pub max_crossings_per_second: u32,
}

fn default_word_order() -> WordOrder {
    WordOrder::HighFirst
}
fn default_mode() -> CountMode {
    CountMode::Cumulative
}
/// Five lanes of two people a second: more than any hall door passes, far less than a
/// register slip (65 536 a crossing) or a replaced counter's totals.
pub const DEFAULT_MAX_CROSSINGS_PER_SECOND: u32 = 10;

fn default_max_crossings_per_second() -> u32 {
    DEFAULT_MAX_CROSSINGS_PER_SECOND
}

/// A validated profile: protocol addresses resolved, the read span computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterProfile {
    pub name: String,
    pub function: FunctionCode,
    pub value_type: ValueType,
    pub word_order: WordOrder,
    pub mode: CountMode,
    pub wrap_modulus: u64,
    pub max_step: Option<u64>,
    pub on_decrease: OnDecrease,
    /// Most crossings per second the door passes, each way (a counter may override it).
    pub max_crossings_per_second: u32,
    /// First protocol (0-based) register of the one read that covers both totals.
    pub read_start: u16,
    /// How many registers that read covers.
    pub read_count: u16,
    /// Offset of the IN total within the read.
    pub in_offset: u16,
    /// Offset of the OUT total within the read.
    pub out_offset: u16,
}

/// The longest single read a profile may ask for; keeps one request well inside a Modbus
/// frame (125 registers) and stops a typo from turning into a huge read.
const MAX_READ_SPAN: u16 = 64;

impl CounterProfileConfig {
    /// Checks the profile and resolves its addresses, or says every problem with it.
    pub fn resolve(&self) -> Result<CounterProfile, Vec<String>> {
        let mut problems = Vec::new();
        let function = match self.function_code {
            3 => Some(FunctionCode::HoldingRegisters),
            4 => Some(FunctionCode::InputRegisters),
            other => {
                problems.push(format!(
                    "function_code must be 3 (holding registers) or 4 (input registers), not {other}"
                ));
                None
            }
        };
        if self.address_base > 1 {
            problems.push(format!(
                "address_base must be 0 or 1, not {}",
                self.address_base
            ));
        }
        let width = self.value_type.registers();
        let proto = |reg: u16, key: &str, problems: &mut Vec<String>| -> Option<u16> {
            match reg.checked_sub(self.address_base.min(1)) {
                Some(p) => Some(p),
                None => {
                    problems.push(format!(
                        "{key} is {reg}, below address_base {}",
                        self.address_base
                    ));
                    None
                }
            }
        };
        let in_p = proto(self.in_register, "in_register", &mut problems);
        let out_p = proto(self.out_register, "out_register", &mut problems);
        let full = match self.value_type {
            ValueType::U16 => 1u64 << 16,
            ValueType::U32 => 1u64 << 32,
        };
        let wrap_modulus = self.wrap_modulus.unwrap_or(full);
        if wrap_modulus < 2 || wrap_modulus > full {
            problems.push(format!(
                "wrap_modulus must be between 2 and {full} for {:?}, not {wrap_modulus}",
                self.value_type
            ));
        }
        if self.max_step == Some(0) {
            problems.push("max_step must be at least 1".to_string());
        }
        if let Some(problem) = check_max_crossings_per_second(self.max_crossings_per_second) {
            problems.push(problem);
        }
        let (Some(function), Some(in_p), Some(out_p)) = (function, in_p, out_p) else {
            return Err(problems);
        };
        let (in_end, out_end) = (in_p as u32 + width as u32, out_p as u32 + width as u32);
        if in_p < out_p + width && out_p < in_p + width {
            problems.push(format!(
                "in_register {} and out_register {} overlap",
                self.in_register, self.out_register
            ));
        }
        let start = in_p.min(out_p);
        let end = in_end.max(out_end);
        if end > u16::MAX as u32 + 1 {
            problems.push("registers run past address 65535".to_string());
        }
        let span = end.saturating_sub(start as u32);
        if span > MAX_READ_SPAN as u32 {
            problems.push(format!(
                "in_register and out_register are {span} registers apart; at most {MAX_READ_SPAN} can be read at once"
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(CounterProfile {
            name: self.name.clone(),
            function,
            value_type: self.value_type,
            word_order: self.word_order,
            mode: self.mode,
            wrap_modulus,
            max_step: self.max_step,
            on_decrease: self.on_decrease,
            max_crossings_per_second: self.max_crossings_per_second,
            read_start: start,
            read_count: span as u16,
            in_offset: in_p - start,
            out_offset: out_p - start,
        })
    }
}

/// What is wrong with a `max_crossings_per_second`, if anything: at least one person a
/// second, and no more than a thousand (beyond that the limit no longer stops anything).
pub fn check_max_crossings_per_second(n: u32) -> Option<String> {
    (!(1..=1000).contains(&n)).then(|| {
        format!("max_crossings_per_second must be between 1 and 1000 people a second, not {n}")
    })
}

/// Every profile known to a config: the shipped ones, then any from the config's directories
/// (a file there with a shipped profile's name replaces it).
#[derive(Debug, Default)]
pub struct ProfileSet {
    pub profiles: BTreeMap<String, CounterProfile>,
}

impl ProfileSet {
    /// Loads the shipped profiles and those in `dirs`. Problems are returned as
    /// `(where, message)` pairs so the caller can report them with the config's own errors.
    pub fn load(dirs: &[&Path]) -> (Self, Vec<(String, String)>) {
        let mut set = ProfileSet::default();
        let mut problems = Vec::new();
        for (file, text) in BUILTIN {
            set.add_text(&format!("built-in profile {file}"), text, &mut problems);
        }
        for (origin, text) in read_profile_dirs(dirs, "profile", &mut problems) {
            set.add_text(&origin, &text, &mut problems);
        }
        (set, problems)
    }

    fn add_text(&mut self, origin: &str, text: &str, problems: &mut Vec<(String, String)>) {
        match toml::from_str::<CounterProfileConfig>(text) {
            Ok(raw) => match raw.resolve() {
                Ok(profile) => {
                    self.profiles.insert(profile.name.clone(), profile);
                }
                Err(list) => {
                    for message in list {
                        problems.push((origin.to_string(), message));
                    }
                }
            },
            Err(error) => problems.push((origin.to_string(), error.message().to_string())),
        }
    }

    pub fn get(&self, name: &str) -> Option<&CounterProfile> {
        self.profiles.get(name)
    }
}

/// The `*.toml` files of `dirs`, in name order, as (path, text); what cannot be read is a
/// `(where, message)` problem naming the `kind` of profile. Shared by every kind of profile
/// that a hall can extend from a directory.
pub fn read_profile_dirs(
    dirs: &[&Path],
    kind: &str,
    problems: &mut Vec<(String, String)>,
) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for dir in dirs {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(error) => {
                problems.push((
                    dir.display().to_string(),
                    format!("cannot read {kind} directory: {error}"),
                ));
                continue;
            }
        };
        let mut paths: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        paths.sort();
        for path in paths {
            match std::fs::read_to_string(&path) {
                Ok(text) => files.push((path.display().to_string(), text)),
                Err(error) => problems.push((
                    path.display().to_string(),
                    format!("cannot read {kind}: {error}"),
                )),
            }
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_profiles_all_load() {
        let (set, problems) = ProfileSet::load(&[]);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(set.profiles.len(), BUILTIN.len());
    }

    #[test]
    fn one_based_addresses_resolve_to_protocol_addresses() {
        let raw: CounterProfileConfig = toml::from_str(
            r#"
            name = "t"
            function_code = 3
            address_base = 1
            in_register = 1
            out_register = 3
            value_type = "u32"
            word_order = "low_first"
            "#,
        )
        .expect("valid profile");
        let p = raw.resolve().expect("resolves");
        assert_eq!((p.read_start, p.read_count), (0, 4));
        assert_eq!((p.in_offset, p.out_offset), (0, 2));
    }

    #[test]
    fn overlapping_registers_are_rejected() {
        let raw: CounterProfileConfig = toml::from_str(
            r#"
            name = "t"
            function_code = 4
            in_register = 10
            out_register = 11
            value_type = "u32"
            "#,
        )
        .expect("parses");
        let problems = raw.resolve().expect_err("overlap");
        assert!(problems[0].contains("overlap"), "{problems:?}");
    }
}
