//! Configurable ASCII line counters: text lines on the serial line → IN/OUT totals.
//!
//! Cheap counters print their totals as a line of text, e.g. `IN=12,OUT=9`, `12 9`, or
//! `$CNT,12,9*63`. What differs between them is data, an [`AsciiLineProfile`] (the
//! `[ascii_line]` table of a serial profile); this module is the one parser for all of them.
//!
//! # The line format, precisely
//!
//! 1. **Lines.** A line ends at LF or CR, so LF, CR LF, CR and LF CR all work; empty lines are
//!    ignored. Everything before the first line end is dropped and counted as garbage: the
//!    port may have been opened in the middle of a line, and a cut-off `112 9` would read as
//!    `12 9`. A line longer than `max_line_bytes` (not counting its line end) is dropped up
//!    to its line end and counted in `overlong_lines`. Leading and trailing spaces and tabs
//!    are trimmed.
//! 2. **Checksum** (`checksum = "nmea_xor"`): the line must be `$BODY*HH`, where `HH` is two
//!    hex digits (either case) equal to the XOR of every byte of `BODY`, as in NMEA 0183. A
//!    mismatch counts as a CRC error; a line not of that shape is a bad line. With
//!    `checksum = "none"` (the default) the whole line is the body.
//! 3. **Prefix** (`prefix`, default empty): the body must start with it, and it is removed.
//!    A body without it is another message from the same device: skipped and counted in
//!    `ignored`, not an error.
//! 4. **Fields**: the rest is split at `separator` (default `,`) and each field is trimmed.
//!    A separator made only of whitespace (e.g. `" "`) splits at runs of spaces and tabs.
//!    - `fields = "keyed"`: fields look like `KEY<assignment>VALUE` (`assignment` default
//!      `=`). `in_key` (default `IN`) and `out_key` (default `OUT`) are matched ignoring
//!      ASCII case, in any order; each must appear exactly once. Fields with other keys or
//!      without the assignment are ignored.
//!    - `fields = "positional"`: IN is field number `in_index` (default 0) and OUT field
//!      number `out_index` (default 1), counted from 0; further fields are ignored.
//! 5. **Values** are unsigned decimal integers: ASCII digits only (no sign, no spaces
//!    inside), fitting in 64 bits.
//!
//! A line that fails 4 or 5 is a bad line. Bad lines are counted and skipped; nothing here
//! panics, whatever the bytes or the profile. [`format_line`] writes lines in this format
//! (with CR LF), for the simulator.

use serde::Deserialize;

use super::{StreamReading, StreamStats};

/// How the two totals are found among a line's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldLayout {
    /// `IN=12,OUT=9`: fields named by a key.
    Keyed,
    /// `12 9`: fields found by position.
    Positional,
}

/// Integrity check carried by the line itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineChecksum {
    None,
    /// `$BODY*HH`, `HH` = XOR of the body's bytes in hex (NMEA 0183 style).
    NmeaXor,
}

/// The `[ascii_line]` table of a serial profile: how one counter model prints its totals.
/// See the module documentation for the exact meaning of each key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsciiLineProfile {
    pub fields: FieldLayout,
    #[serde(default = "default_separator")]
    pub separator: String,
    /// Keyed lines: the key of the IN total.
    #[serde(default = "default_in_key")]
    pub in_key: String,
    /// Keyed lines: the key of the OUT total.
    #[serde(default = "default_out_key")]
    pub out_key: String,
    /// Keyed lines: what stands between a key and its value.
    #[serde(default = "default_assignment")]
    pub assignment: String,
    /// Positional lines: the field (from 0) holding the IN total.
    #[serde(default = "default_in_index")]
    pub in_index: u8,
    /// Positional lines: the field (from 0) holding the OUT total.
    #[serde(default = "default_out_index")]
    pub out_index: u8,
    /// Text every counting line starts with (after `$` when checksummed), e.g. `CNT,`.
    #[serde(default)]
    pub prefix: String,
    #[serde(default = "default_checksum")]
    pub checksum: LineChecksum,
    /// The longest line accepted, line end not included.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
}

fn default_separator() -> String {
    ",".to_string()
}
fn default_in_key() -> String {
    "IN".to_string()
}
fn default_out_key() -> String {
    "OUT".to_string()
}
fn default_assignment() -> String {
    "=".to_string()
}
fn default_in_index() -> u8 {
    0
}
fn default_out_index() -> u8 {
    1
}
fn default_checksum() -> LineChecksum {
    LineChecksum::None
}
fn default_max_line_bytes() -> usize {
    128
}

/// Bounds on `max_line_bytes`: long enough for any counter's line, short enough that a
/// stream with no line ends costs nothing.
pub const MIN_LINE_BYTES: usize = 8;
pub const MAX_LINE_BYTES: usize = 1024;

impl AsciiLineProfile {
    /// Checks the profile; returns every problem, each naming its key as written in a
    /// serial profile file (`ascii_line.KEY`).
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, message: String| {
            if !ok {
                problems.push(message);
            }
        };
        let has_line_end = |s: &str| s.contains(['\r', '\n']);
        let has_digit = |s: &str| s.bytes().any(|b| b.is_ascii_digit());
        let has_blank = |s: &str| s.contains([' ', '\t']);
        let contains =
            |haystack: &str, needle: &str| !needle.is_empty() && haystack.contains(needle);
        let whitespace_separator = is_whitespace(&self.separator);

        check(
            !self.separator.is_empty(),
            "ascii_line.separator must not be empty".to_string(),
        );
        check(
            !has_line_end(&self.separator) && !has_digit(&self.separator),
            format!(
                "ascii_line.separator {:?} must not contain digits or line ends",
                self.separator
            ),
        );
        check(
            !has_line_end(&self.prefix),
            format!(
                "ascii_line.prefix {:?} must not contain line ends",
                self.prefix
            ),
        );
        check(
            (MIN_LINE_BYTES..=MAX_LINE_BYTES).contains(&self.max_line_bytes),
            format!(
                "ascii_line.max_line_bytes must be between {MIN_LINE_BYTES} and {MAX_LINE_BYTES}, not {}",
                self.max_line_bytes
            ),
        );
        if self.checksum == LineChecksum::NmeaXor {
            for (key, value) in [
                ("prefix", &self.prefix),
                ("separator", &self.separator),
                ("in_key", &self.in_key),
                ("out_key", &self.out_key),
                ("assignment", &self.assignment),
            ] {
                check(
                    !value.contains(['$', '*']),
                    format!(
                        "ascii_line.{key} {value:?} must not contain '$' or '*' with checksum \"nmea_xor\""
                    ),
                );
            }
        }
        match self.fields {
            FieldLayout::Keyed => {
                for (key, value) in [("in_key", &self.in_key), ("out_key", &self.out_key)] {
                    check(
                        !value.trim().is_empty(),
                        format!("ascii_line.{key} must not be empty"),
                    );
                    let clashes = has_line_end(value)
                        || contains(value, &self.separator)
                        || contains(value, &self.assignment)
                        || (whitespace_separator && has_blank(value));
                    check(
                        !clashes,
                        format!(
                            "ascii_line.{key} {value:?} must not contain the separator, the assignment or line ends"
                        ),
                    );
                }
                check(
                    !self.in_key.eq_ignore_ascii_case(&self.out_key),
                    format!(
                        "ascii_line.in_key and ascii_line.out_key are both {:?}",
                        self.in_key
                    ),
                );
                check(
                    !self.assignment.is_empty(),
                    "ascii_line.assignment must not be empty".to_string(),
                );
                let unusable = has_line_end(&self.assignment)
                    || has_digit(&self.assignment)
                    || (whitespace_separator && has_blank(&self.assignment));
                check(
                    !unusable,
                    format!(
                        "ascii_line.assignment {:?} must not contain digits or line ends (nor whitespace with a whitespace separator)",
                        self.assignment
                    ),
                );
                check(
                    !contains(&self.separator, &self.assignment)
                        && !contains(&self.assignment, &self.separator),
                    format!(
                        "ascii_line.separator {:?} and ascii_line.assignment {:?} must differ",
                        self.separator, self.assignment
                    ),
                );
            }
            FieldLayout::Positional => {
                check(
                    self.in_index != self.out_index,
                    format!(
                        "ascii_line.in_index and ascii_line.out_index are both {}",
                        self.in_index
                    ),
                );
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// A separator made only of whitespace splits at runs of whitespace.
fn is_whitespace(separator: &str) -> bool {
    !separator.is_empty() && separator.chars().all(|c| c == ' ' || c == '\t')
}

/// Where the decoder is within the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// Before the first line end: whatever comes may be the tail of a line.
    BeforeFirstLineEnd,
    /// Collecting a line.
    InLine,
    /// Dropping the rest of an overlong line, up to its line end.
    DroppingOverlong,
}

/// What one complete line turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    Reading(u64, u64),
    Blank,
    Ignored,
    Bad,
    ChecksumMismatch,
}

/// Streaming decoder for one ASCII line counter.
#[derive(Debug, Clone)]
pub struct AsciiLineDecoder {
    profile: AsciiLineProfile,
    /// `max_line_bytes`, clamped so that even an unvalidated profile keeps memory bounded.
    cap: usize,
    line: Vec<u8>,
    position: Position,
    stats: StreamStats,
}

impl AsciiLineDecoder {
    /// A decoder for `profile`, which should have passed [`AsciiLineProfile::validate`]; an
    /// invalid profile does not make the decoder panic, its lines just do not parse.
    pub fn new(profile: AsciiLineProfile) -> Self {
        let cap = profile.max_line_bytes.clamp(1, MAX_LINE_BYTES);
        AsciiLineDecoder {
            profile,
            cap,
            line: Vec::with_capacity(cap),
            position: Position::BeforeFirstLineEnd,
            stats: StreamStats::default(),
        }
    }

    /// Feeds bytes as read from the port; returns the readings of the lines they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<StreamReading> {
        let mut readings = Vec::new();
        for &byte in bytes {
            let line_end = byte == b'\n' || byte == b'\r';
            match self.position {
                Position::BeforeFirstLineEnd if line_end => self.position = Position::InLine,
                Position::BeforeFirstLineEnd => self.stats.garbage_bytes += 1,
                Position::DroppingOverlong if line_end => self.position = Position::InLine,
                Position::DroppingOverlong => {}
                Position::InLine if line_end => {
                    if !self.line.is_empty() {
                        self.finish_line(&mut readings);
                        self.line.clear();
                    }
                }
                Position::InLine if self.line.len() >= self.cap => {
                    self.stats.overlong_lines += 1;
                    self.line.clear();
                    self.position = Position::DroppingOverlong;
                }
                Position::InLine => self.line.push(byte),
            }
        }
        readings
    }

    fn finish_line(&mut self, readings: &mut Vec<StreamReading>) {
        match parse_line(&self.profile, &self.line) {
            Line::Reading(inward, outward) => {
                self.stats.readings += 1;
                readings.push(StreamReading {
                    sensor_id: None,
                    inward,
                    outward,
                });
            }
            Line::Blank => {}
            Line::Ignored => self.stats.ignored += 1,
            Line::Bad => self.stats.bad_lines += 1,
            Line::ChecksumMismatch => self.stats.crc_errors += 1,
        }
    }

    pub fn stats(&self) -> StreamStats {
        self.stats
    }

    /// Bytes of the current, unfinished line: never more than `max_line_bytes`.
    pub fn buffered(&self) -> usize {
        self.line.len()
    }
}

fn parse_line(profile: &AsciiLineProfile, raw: &[u8]) -> Line {
    let Ok(text) = std::str::from_utf8(raw) else {
        return Line::Bad;
    };
    let text = text.trim_matches([' ', '\t']);
    if text.is_empty() {
        return Line::Blank;
    }
    let body = match profile.checksum {
        LineChecksum::None => text,
        LineChecksum::NmeaXor => match nmea_body(text) {
            Ok(body) => body,
            Err(line) => return line,
        },
    };
    let Some(body) = body.strip_prefix(profile.prefix.as_str()) else {
        return Line::Ignored;
    };
    let fields: Vec<&str> = if is_whitespace(&profile.separator) {
        body.split([' ', '\t']).filter(|f| !f.is_empty()).collect()
    } else if profile.separator.is_empty() {
        vec![body.trim_matches([' ', '\t'])]
    } else {
        body.split(profile.separator.as_str())
            .map(|f| f.trim_matches([' ', '\t']))
            .collect()
    };
    let totals = match profile.fields {
        FieldLayout::Keyed => keyed_totals(profile, &fields),
        FieldLayout::Positional => positional_totals(profile, &fields),
    };
    match totals {
        Some((inward, outward)) => Line::Reading(inward, outward),
        None => Line::Bad,
    }
}

/// The body of `$BODY*HH` when `HH` is its XOR checksum.
fn nmea_body(text: &str) -> Result<&str, Line> {
    let inner = text.strip_prefix('$').ok_or(Line::Bad)?;
    let (body, hex) = inner.rsplit_once('*').ok_or(Line::Bad)?;
    if hex.len() != 2 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Line::Bad);
    }
    let sent = u8::from_str_radix(hex, 16).map_err(|_| Line::Bad)?;
    if nmea_xor(body) == sent {
        Ok(body)
    } else {
        Err(Line::ChecksumMismatch)
    }
}

fn nmea_xor(body: &str) -> u8 {
    body.bytes().fold(0, |x, b| x ^ b)
}

fn keyed_totals(profile: &AsciiLineProfile, fields: &[&str]) -> Option<(u64, u64)> {
    if profile.assignment.is_empty() {
        return None;
    }
    let (mut inward, mut outward) = (None, None);
    for field in fields {
        let Some((key, value)) = field.split_once(profile.assignment.as_str()) else {
            continue;
        };
        let key = key.trim_matches([' ', '\t']);
        let slot = if key.eq_ignore_ascii_case(&profile.in_key) {
            &mut inward
        } else if key.eq_ignore_ascii_case(&profile.out_key) {
            &mut outward
        } else {
            continue;
        };
        if slot.is_some() {
            // The same total twice on one line: no way to know which is right.
            return None;
        }
        *slot = Some(parse_count(value.trim_matches([' ', '\t']))?);
    }
    Some((inward?, outward?))
}

fn positional_totals(profile: &AsciiLineProfile, fields: &[&str]) -> Option<(u64, u64)> {
    let inward = parse_count(fields.get(usize::from(profile.in_index))?)?;
    let outward = parse_count(fields.get(usize::from(profile.out_index))?)?;
    Some((inward, outward))
}

/// Digits only: `str::parse` alone would also take a leading `+`.
fn parse_count(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// One line as a counter with this profile prints it, CR LF included; the simulator's side
/// of [`AsciiLineDecoder`]. Positional fields other than IN and OUT are written as `0`.
pub fn format_line(profile: &AsciiLineProfile, inward: u64, outward: u64) -> String {
    let fields = match profile.fields {
        FieldLayout::Keyed => format!(
            "{}{a}{inward}{sep}{}{a}{outward}",
            profile.in_key,
            profile.out_key,
            a = profile.assignment,
            sep = profile.separator
        ),
        FieldLayout::Positional => {
            let count = usize::from(profile.in_index.max(profile.out_index)) + 1;
            let mut fields = vec!["0".to_string(); count];
            if let Some(f) = fields.get_mut(usize::from(profile.in_index)) {
                *f = inward.to_string();
            }
            if let Some(f) = fields.get_mut(usize::from(profile.out_index)) {
                *f = outward.to_string();
            }
            fields.join(&profile.separator)
        }
    };
    let body = format!("{}{fields}", profile.prefix);
    match profile.checksum {
        LineChecksum::None => format!("{body}\r\n"),
        LineChecksum::NmeaXor => format!("${body}*{:02X}\r\n", nmea_xor(&body)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn profile(text: &str) -> AsciiLineProfile {
        let p: AsciiLineProfile = toml::from_str(text).expect("test profile parses");
        p.validate().expect("test profile is valid");
        p
    }

    fn keyed() -> AsciiLineProfile {
        profile("fields = 'keyed'")
    }

    fn positional() -> AsciiLineProfile {
        profile("fields = 'positional'\nseparator = ' '")
    }

    fn nmea() -> AsciiLineProfile {
        profile("fields = 'positional'\nprefix = 'CNT,'\nchecksum = 'nmea_xor'")
    }

    /// Decodes `bytes` after a leading line end (so the first line is not dropped).
    fn decode(p: &AsciiLineProfile, bytes: &[u8]) -> (Vec<(u64, u64)>, StreamStats) {
        let mut d = AsciiLineDecoder::new(p.clone());
        d.push(b"\n");
        let got = d
            .push(bytes)
            .into_iter()
            .map(|r| (r.inward, r.outward))
            .collect();
        (got, d.stats())
    }

    #[test]
    fn keyed_lines_decode_with_any_line_end() {
        let (got, stats) = decode(
            &keyed(),
            b"IN=12,OUT=9\r\nIN=13,OUT=9\nIN=14,OUT=9\rIN=15,OUT=10\n\r",
        );
        assert_eq!(got, vec![(12, 9), (13, 9), (14, 9), (15, 10)]);
        assert_eq!(stats.bad_lines, 0);
    }

    #[test]
    fn keyed_lines_ignore_case_order_spacing_and_other_keys() {
        let (got, stats) = decode(
            &keyed(),
            b"out=9,in=12\n  IN = 3 , OCC=1, OUT = 2  \nSTATUS,IN=4,OUT=5\n",
        );
        assert_eq!(got, vec![(12, 9), (3, 2), (4, 5)]);
        assert_eq!(stats.bad_lines, 0);
    }

    #[test]
    fn keyed_lines_missing_repeating_or_garbling_a_total_are_bad() {
        let (got, stats) = decode(
            &keyed(),
            b"IN=12\nIN=1,IN=2,OUT=3\nIN=x,OUT=1\nIN=+5,OUT=1\nIN=-5,OUT=1\nIN=1 2,OUT=1\nIN=99999999999999999999,OUT=1\nIN=1,OUT=2\n",
        );
        assert_eq!(got, vec![(1, 2)]);
        assert_eq!(stats.bad_lines, 7);
    }

    #[test]
    fn positional_lines_decode_with_runs_of_whitespace() {
        let (got, stats) = decode(&positional(), b"12 9\n13\t 9\r\n  14   10  \n1 2 3\n");
        assert_eq!(got, vec![(12, 9), (13, 9), (14, 10), (1, 2)]);
        assert_eq!(stats.bad_lines, 0);
    }

    #[test]
    fn positional_lines_with_too_few_or_non_numeric_fields_are_bad() {
        let (got, stats) = decode(&positional(), b"12\nBoot v1.2\n12 nine\n7 8\n");
        assert_eq!(got, vec![(7, 8)]);
        assert_eq!(stats.bad_lines, 3);
    }

    #[test]
    fn positional_indices_can_pick_any_fields() {
        let p = profile("fields = 'positional'\nseparator = ';'\nin_index = 2\nout_index = 0");
        let (got, _) = decode(&p, b"9;x;12\n");
        assert_eq!(got, vec![(12, 9)]);
    }

    #[test]
    fn nmea_sentences_are_checked_and_other_sentences_ignored() {
        // XOR of "CNT,12,9" is 0x63.
        let (got, stats) = decode(
            &nmea(),
            b"$CNT,12,9*63\r\n$CNT,12,9*64\r\n$cnt,1,1*00\r\n$STA,OK*6E\r\nCNT,12,9\r\n$CNT,12,9*6\r\n$CNT,13,9*62\r\n",
        );
        assert_eq!(got, vec![(12, 9), (13, 9)]);
        assert_eq!(stats.crc_errors, 2, "wrong checksum, and $cnt with *00");
        assert_eq!(stats.ignored, 1, "$STA");
        assert_eq!(stats.bad_lines, 2, "no $, one hex digit");
    }

    #[test]
    fn lowercase_hex_checksums_are_accepted() {
        let (got, _) = decode(&nmea(), b"$CNT,2,1*5a\n");
        assert_eq!(format_line(&nmea(), 2, 1), "$CNT,2,1*5A\r\n");
        assert_eq!(got, vec![(2, 1)]);
    }

    #[test]
    fn lines_without_the_prefix_are_ignored_not_bad() {
        let p = profile("fields = 'keyed'\nprefix = 'CNT '\nseparator = ' '");
        let (got, stats) = decode(&p, b"CNT IN=1 OUT=2\nHELLO\n");
        assert_eq!(got, vec![(1, 2)]);
        assert_eq!((stats.ignored, stats.bad_lines), (1, 0));
    }

    #[test]
    fn everything_before_the_first_line_end_is_dropped() {
        // The port opened in the middle of "112 9": "2 9" must not be read as a total.
        let mut d = AsciiLineDecoder::new(positional());
        assert!(d.push(b"2 9\n13 9\n").iter().map(|r| r.inward).eq([13u64]));
        assert_eq!(d.stats().garbage_bytes, 3);
    }

    #[test]
    fn an_overlong_line_is_dropped_and_the_next_line_recovered() {
        let p = profile("fields = 'keyed'\nmax_line_bytes = 16");
        let mut bytes = vec![b'A'; 1000];
        bytes.extend(b"\nIN=1,OUT=2\n");
        bytes.extend(b"IN=1234567,OUT=12\n"); // 17 bytes: one too many
        bytes.extend(b"IN=123456,OUT=12\n"); // 16 bytes: fits
        let mut d = AsciiLineDecoder::new(p);
        d.push(b"\n");
        let got: Vec<_> = bytes
            .chunks(7)
            .flat_map(|c| d.push(c))
            .map(|r| (r.inward, r.outward))
            .collect();
        assert_eq!(got, vec![(1, 2), (123_456, 12)]);
        assert_eq!(d.stats().overlong_lines, 2);
        assert!(d.buffered() <= 16);
    }

    #[test]
    fn invalid_utf8_and_control_bytes_make_a_bad_line_not_a_panic() {
        let (got, stats) = decode(&keyed(), b"IN=\xff\xfe,OUT=1\n\x00\x01\x02\nIN=1,OUT=1\n");
        assert_eq!(got, vec![(1, 1)]);
        assert_eq!(stats.bad_lines, 2);
    }

    #[test]
    fn blank_lines_are_neither_readings_nor_errors() {
        let (got, stats) = decode(&keyed(), b"\n\r\n   \n\t\n");
        assert!(got.is_empty());
        assert_eq!(stats, StreamStats::default());
    }

    #[test]
    fn a_line_split_across_pushes_decodes_once_complete() {
        let mut d = AsciiLineDecoder::new(keyed());
        d.push(b"\n");
        assert!(d.push(b"IN=1").is_empty());
        assert!(d.push(b"2,OU").is_empty());
        assert!(d.push(b"T=9\r").iter().map(|r| r.inward).eq([12u64]));
        assert!(d.push(b"\n").is_empty());
    }

    #[test]
    fn format_line_writes_each_layout() {
        assert_eq!(format_line(&keyed(), 12, 9), "IN=12,OUT=9\r\n");
        assert_eq!(format_line(&positional(), 12, 9), "12 9\r\n");
        assert_eq!(format_line(&nmea(), 12, 9), "$CNT,12,9*63\r\n");
        let p = profile("fields = 'positional'\nseparator = ';'\nin_index = 2\nout_index = 0");
        assert_eq!(format_line(&p, 12, 9), "9;0;12\r\n");
    }

    #[test]
    fn validation_names_every_problem_with_its_key() {
        let p: AsciiLineProfile = toml::from_str(
            "fields = 'keyed'\nin_key = 'A,B'\nout_key = 'a,b'\nseparator = ''\nassignment = '1'\nmax_line_bytes = 2",
        )
        .expect("parses");
        let problems = p.validate().expect_err("invalid");
        let all = problems.join("\n");
        for key in [
            "ascii_line.separator",
            "ascii_line.in_key",
            "ascii_line.assignment",
            "ascii_line.max_line_bytes",
        ] {
            assert!(all.contains(key), "{key} not in {all}");
        }
        let p: AsciiLineProfile =
            toml::from_str("fields = 'positional'\nin_index = 3\nout_index = 3").expect("parses");
        assert!(p.validate().is_err());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<AsciiLineProfile>("fields = 'keyed'\nin_keys = 'IN'")
            .expect_err("unknown key");
        assert!(err.to_string().contains("in_keys"), "{err}");
    }

    #[test]
    fn an_invalid_profile_never_panics_the_decoder_or_encoder() {
        let p: AsciiLineProfile = toml::from_str(
            "fields = 'keyed'\nseparator = ''\nassignment = ''\nmax_line_bytes = 0\nin_key = ''",
        )
        .expect("parses");
        let mut d = AsciiLineDecoder::new(p.clone());
        d.push(b"\nIN=1,OUT=2\n=1,OUT=2\n\n");
        let _ = format_line(&p, 1, 2);
        assert!(d.buffered() <= 1);
    }

    /// Cuts `bytes` into chunks whose sizes cycle through `cuts`.
    fn chunked<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        let mut rest = bytes;
        let mut i = 0;
        while !rest.is_empty() {
            let n = cuts.get(i % cuts.len().max(1)).copied().unwrap_or(1).max(1);
            let (a, b) = rest.split_at(n.min(rest.len()));
            out.push(a);
            rest = b;
            i += 1;
        }
        out
    }

    fn any_profile() -> impl Strategy<Value = AsciiLineProfile> {
        prop_oneof![Just(keyed()), Just(positional()), Just(nmea())]
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_keep_the_line_buffer_bounded(
            p in any_profile(),
            bytes in proptest::collection::vec(any::<u8>(), 0..3000),
            cuts in proptest::collection::vec(1usize..300, 1..10),
        ) {
            let mut d = AsciiLineDecoder::new(p.clone());
            for chunk in chunked(&bytes, &cuts) {
                d.push(chunk);
                prop_assert!(d.buffered() <= p.max_line_bytes);
            }
        }

        /// Valid lines with garbage lines between them (digit-free, so they cannot hold
        /// totals; any length, so some are overlong; any bytes, CR/LF included), cut
        /// anywhere, give exactly the valid lines' totals in order.
        #[test]
        fn valid_lines_are_recovered_exactly_from_any_garbage_and_chunking(
            p in any_profile(),
            items in proptest::collection::vec(
                (any::<u64>(), any::<u64>(),
                 proptest::collection::vec(
                     any::<u8>().prop_filter("no digits", |b| !b.is_ascii_digit()), 0..300)),
                0..20),
            cuts in proptest::collection::vec(1usize..64, 1..10),
        ) {
            let mut stream = Vec::new();
            let mut expected = Vec::new();
            for (inward, outward, garbage) in &items {
                stream.extend(garbage);
                stream.push(b'\n');
                stream.extend(format_line(&p, *inward, *outward).into_bytes());
                expected.push((*inward, *outward));
            }
            let mut d = AsciiLineDecoder::new(p);
            let got: Vec<_> = chunked(&stream, &cuts)
                .into_iter()
                .flat_map(|c| d.push(c))
                .map(|r| (r.inward, r.outward))
                .collect();
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn format_line_round_trips_any_totals(p in any_profile(), inward in any::<u64>(), outward in any::<u64>()) {
            let line = format_line(&p, inward, outward);
            let (got, stats) = decode(&p, line.as_bytes());
            prop_assert_eq!(got, vec![(inward, outward)]);
            prop_assert_eq!(stats.readings, 1);
        }
    }
}
