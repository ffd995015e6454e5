//! Serial counter profiles: which byte format a streaming counter speaks, loaded from
//! `firmware-config/serial/*.toml`.
//!
//! The serial counters' counterpart of the Modbus register profiles (`config::profile`): a
//! counter model is a file, not code. A file names its `format` (the closed list in
//! [`SerialFormatKind`]); the ASCII line format takes its details from an `[ascii_line]`
//! table ([`AsciiLineProfile`]). Files are parsed (unknown keys rejected), then validated
//! with every problem reported, then trusted. The shipped profiles are compiled in.
//!
//! ```toml
//! name = "ascii-in-out"
//! description = "keyed ASCII lines: IN=12,OUT=9"
//! format = "ascii_line"          # or "terabee_evo"
//! wrap_modulus = 4294967296      # optional; where the device's totals wrap to 0
//!
//! [ascii_line]                   # only with format = "ascii_line"
//! fields = "keyed"
//! in_key = "IN"
//! out_key = "OUT"
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

use super::StreamReading;
use super::ascii::{AsciiLineProfile, format_line};
use super::terabee::encode_terabee_frame;

/// The profiles shipped in `firmware-config/serial/`, embedded at build time.
const BUILTIN: &[(&str, &str)] = &[
    (
        "terabee-evo",
        include_str!("../../../firmware-config/serial/terabee-evo.toml"),
    ),
    (
        "ascii-in-out",
        include_str!("../../../firmware-config/serial/ascii-in-out.toml"),
    ),
    (
        "ascii-positional",
        include_str!("../../../firmware-config/serial/ascii-positional.toml"),
    ),
    (
        "ascii-nmea-cnt",
        include_str!("../../../firmware-config/serial/ascii-nmea-cnt.toml"),
    ),
];

/// The formats a serial profile can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SerialFormatKind {
    /// Terabee TeraRanger Evo People Counter binary frames (`terabee` module).
    TerabeeEvo,
    /// A text line per reading, described by the `[ascii_line]` table (`ascii` module).
    AsciiLine,
}

/// A serial profile file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialProfileConfig {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub format: SerialFormatKind,
    /// Required with `format = "ascii_line"`, not allowed otherwise.
    pub ascii_line: Option<AsciiLineProfile>,
    /// Where the device's totals wrap to zero. Defaults: 2^16 for `terabee_evo` (2-byte
    /// totals), 2^32 for `ascii_line` (set it for counters that wrap elsewhere, e.g. 10000
    /// for a four-digit display).
    pub wrap_modulus: Option<u64>,
}

/// A format with everything its decoder needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerialFormat {
    TerabeeEvo,
    AsciiLine(AsciiLineProfile),
}

impl SerialFormat {
    /// The bytes a device of this format sends for `reading`; the simulator's side.
    /// Terabee totals are 2-byte fields, so they are sent modulo 2^16, as the device would.
    pub fn encode(&self, reading: &StreamReading) -> Vec<u8> {
        match self {
            SerialFormat::TerabeeEvo => encode_terabee_frame(
                reading.sensor_id.unwrap_or(0),
                (reading.inward % TERABEE_MODULUS) as u16,
                (reading.outward % TERABEE_MODULUS) as u16,
            ),
            SerialFormat::AsciiLine(profile) => {
                format_line(profile, reading.inward, reading.outward).into_bytes()
            }
        }
    }
}

/// Terabee IN/OUT are 2-byte fields.
const TERABEE_MODULUS: u64 = 1 << 16;
const DEFAULT_ASCII_MODULUS: u64 = 1 << 32;

/// A validated serial profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialProfile {
    pub name: String,
    pub description: String,
    pub format: SerialFormat,
    /// Totals wrap to zero at this value (what the counter tracker needs besides readings).
    pub wrap_modulus: u64,
}

impl SerialProfileConfig {
    /// Checks the profile, or says every problem with it.
    pub fn resolve(&self) -> Result<SerialProfile, Vec<String>> {
        let mut problems = Vec::new();
        if self.name.trim().is_empty() {
            problems.push("name must not be empty".to_string());
        }
        let (format, default_modulus, max_modulus) = match (self.format, &self.ascii_line) {
            (SerialFormatKind::TerabeeEvo, None) => (
                Some(SerialFormat::TerabeeEvo),
                TERABEE_MODULUS,
                TERABEE_MODULUS,
            ),
            (SerialFormatKind::TerabeeEvo, Some(_)) => {
                problems.push(
                    "an [ascii_line] table is only allowed with format = \"ascii_line\""
                        .to_string(),
                );
                (None, TERABEE_MODULUS, TERABEE_MODULUS)
            }
            (SerialFormatKind::AsciiLine, Some(line)) => {
                if let Err(list) = line.validate() {
                    problems.extend(list);
                }
                (
                    Some(SerialFormat::AsciiLine(line.clone())),
                    DEFAULT_ASCII_MODULUS,
                    u64::MAX,
                )
            }
            (SerialFormatKind::AsciiLine, None) => {
                problems.push(
                    "format = \"ascii_line\" needs an [ascii_line] table saying how lines look"
                        .to_string(),
                );
                (None, DEFAULT_ASCII_MODULUS, u64::MAX)
            }
        };
        let wrap_modulus = self.wrap_modulus.unwrap_or(default_modulus);
        if !(2..=max_modulus).contains(&wrap_modulus) {
            problems.push(format!(
                "wrap_modulus must be between 2 and {max_modulus} for this format, not {wrap_modulus}"
            ));
        }
        match format {
            Some(format) if problems.is_empty() => Ok(SerialProfile {
                name: self.name.clone(),
                description: self.description.clone(),
                format,
                wrap_modulus,
            }),
            _ => Err(problems),
        }
    }
}

/// Parses and validates one serial profile file's text.
pub fn parse_serial_profile(text: &str) -> Result<SerialProfile, Vec<String>> {
    match toml::from_str::<SerialProfileConfig>(text) {
        Ok(raw) => raw.resolve(),
        Err(error) => Err(vec![error.message().to_string()]),
    }
}

/// The shipped serial profiles by name, and `(where, message)` for any that failed to load
/// (none do: a unit test loads them all), to report with the config's own errors.
pub fn builtin_serial_profiles() -> (BTreeMap<String, SerialProfile>, Vec<(String, String)>) {
    let mut profiles = BTreeMap::new();
    let mut problems = Vec::new();
    for (file, text) in BUILTIN {
        match parse_serial_profile(text) {
            Ok(profile) => {
                profiles.insert(profile.name.clone(), profile);
            }
            Err(list) => problems.extend(
                list.into_iter()
                    .map(|message| (format!("built-in serial profile {file}"), message)),
            ),
        }
    }
    (profiles, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::stream::ascii::FieldLayout;

    #[test]
    fn shipped_serial_profiles_all_load() {
        let (profiles, problems) = builtin_serial_profiles();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(profiles.len(), BUILTIN.len());
        for (file, _) in BUILTIN {
            assert!(
                profiles.contains_key(*file),
                "{file} is not named after its file"
            );
        }
        assert_eq!(profiles["terabee-evo"].format, SerialFormat::TerabeeEvo);
        assert_eq!(profiles["terabee-evo"].wrap_modulus, 65536);
        let SerialFormat::AsciiLine(line) = &profiles["ascii-positional"].format else {
            panic!("ascii-positional is an ASCII line profile");
        };
        assert_eq!(line.fields, FieldLayout::Positional);
        assert_eq!(profiles["ascii-in-out"].wrap_modulus, 1 << 32);
    }

    #[test]
    fn unknown_keys_are_rejected_at_both_levels() {
        let top = parse_serial_profile("name='x'\nformat='terabee_evo'\nbaud=9600")
            .expect_err("unknown top-level key");
        assert!(top[0].contains("baud"), "{top:?}");
        let inner = parse_serial_profile(
            "name='x'\nformat='ascii_line'\n[ascii_line]\nfields='keyed'\nin_keyy='IN'",
        )
        .expect_err("unknown ascii_line key");
        assert!(inner[0].contains("in_keyy"), "{inner:?}");
    }

    #[test]
    fn the_ascii_line_table_goes_with_the_ascii_line_format_only() {
        let missing = parse_serial_profile("name='x'\nformat='ascii_line'").expect_err("no table");
        assert!(missing[0].contains("[ascii_line]"), "{missing:?}");
        let extra =
            parse_serial_profile("name='x'\nformat='terabee_evo'\n[ascii_line]\nfields='keyed'")
                .expect_err("table with terabee");
        assert!(extra[0].contains("[ascii_line]"), "{extra:?}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let problems = parse_serial_profile(
            "name=''\nformat='ascii_line'\nwrap_modulus=1\n[ascii_line]\nfields='positional'\nin_index=1\nout_index=1",
        )
        .expect_err("invalid");
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn terabee_wrap_modulus_cannot_exceed_its_two_byte_fields() {
        let problems = parse_serial_profile("name='x'\nformat='terabee_evo'\nwrap_modulus=70000")
            .expect_err("too large");
        assert!(problems[0].contains("wrap_modulus"), "{problems:?}");
    }
}
