//! One terminal message to one normalised event: [`decode`].
//!
//! Pure and synchronous: bytes, the topic they came on, the profile that maps the vendor's
//! fields, `now` and the [`DecodeOptions`] go in; a [`Decoded`] (a [`PassageRecorded`], or a
//! message [`Ignored`] on purpose) or a [`RejectReason`] comes out. The MQTT driver calls it
//! once per message, dedups the passage ([`Dedup`](super::Dedup)), hashes the member
//! ([`MemberHasher`](super::MemberHasher)), hands the snapshot to vision, and forwards the
//! rest to the engine.
//!
//! Whatever the bytes, this never panics (property-tested): the size is checked before
//! parsing, serde_json bounds nesting, and every field read is checked for presence, type and
//! plausibility, each failure a closed [`RejectReason`] with a fixed label for metrics.
//! Error texts name profile paths, never payload values, so they can be logged without
//! leaking a member id.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use serde_json::Value;

use super::TerminalId;
use super::dedup::DedupKey;
use super::facts::{Direction, MaskState, PassageVerdict};
use super::member::MemberRef;
use super::path::{FieldPath, JsonPath};
use super::profile::{
    DeviceIdSource, MapRule, MessageKind, TemperatureRule, TerminalProfile, TimeFormat, TopicMatch,
};

/// Longest member id accepted; vendors allow 20–64 characters.
const MAX_MEMBER_ID_BYTES: usize = 128;
/// Longest event key (serial number, record id) accepted.
const MAX_EVENT_KEY_BYTES: usize = 64;
/// Event times before this are a terminal whose clock was reset (2020-01-01T00:00:00Z).
const EARLIEST_PLAUSIBLE: Timestamp = Timestamp::constant(1_577_836_800, 0);

/// Snapshots come as standard base64; vendors differ on padding and on trailing bits, and
/// neither difference makes the image any less valid.
const SNAPSHOT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

// ---------------------------------------------------------------------------------------------
// Options.

/// How messages are checked. Part of the hall config (`[terminals]`), with these defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecodeOptions {
    /// Payloads larger than this are refused before parsing. 256 KiB holds a JSON record with
    /// a typical 30–100 KB JPEG snapshot in base64.
    pub max_payload_bytes: usize,
    /// A plausible temperature at or above this is a fever (°C).
    pub fever_threshold_c: f64,
    /// Temperatures outside `[plausible_min_c, plausible_max_c]` are a sensor fault (ambient
    /// readings, a hand, a hot drink), not a person: the reading is dropped and
    /// `sensor_error` set, never a fever alert.
    pub plausible_min_c: f64,
    pub plausible_max_c: f64,
    /// Decode the snapshot for the caller. Off when nothing looks at images: the field is then
    /// not read at all (nor checked), which saves a base64 pass over most of the payload.
    pub decode_snapshot: bool,
    /// An event time more than this far ahead of `now` (or before 2020) is a terminal with a
    /// wrong clock: the receipt time is used instead and `device_clock_suspect` set. Past
    /// times are kept: a terminal uploading its backlog after an outage is normal.
    pub max_clock_ahead_s: u64,
    /// The hall's time zone, for profiles whose terminals write naive local times
    /// (`format = "local"`, ZKTeco). Not a key of its own: set from `hall.time_zone`.
    #[serde(skip)]
    pub time_zone: TimeZone,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            max_payload_bytes: 256 * 1024,
            fever_threshold_c: 37.3,
            plausible_min_c: 30.0,
            plausible_max_c: 45.0,
            decode_snapshot: true,
            max_clock_ahead_s: 600,
            time_zone: TimeZone::UTC,
        }
    }
}

impl DecodeOptions {
    /// Checks the options, or says every problem with them.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if !(1024..=16 * 1024 * 1024).contains(&self.max_payload_bytes) {
            problems.push(format!(
                "max_payload_bytes must be between 1024 and 16777216, not {}",
                self.max_payload_bytes
            ));
        }
        let finite = [
            self.fever_threshold_c,
            self.plausible_min_c,
            self.plausible_max_c,
        ]
        .iter()
        .all(|v| v.is_finite());
        if !finite || self.plausible_min_c >= self.plausible_max_c {
            problems.push(format!(
                "plausible_min_c ({}) must be below plausible_max_c ({})",
                self.plausible_min_c, self.plausible_max_c
            ));
        } else if !(self.plausible_min_c..=self.plausible_max_c).contains(&self.fever_threshold_c) {
            problems.push(format!(
                "fever_threshold_c ({}) must lie within the plausible range {}..={}",
                self.fever_threshold_c, self.plausible_min_c, self.plausible_max_c
            ));
        }
        if self.max_clock_ahead_s > 86_400 {
            problems.push(format!(
                "max_clock_ahead_s must be at most 86400 (a day), not {}",
                self.max_clock_ahead_s
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The normalised event.

/// Who passed. The member id is for [`MemberHasher`](super::MemberHasher) only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    Member(MemberRef),
    Stranger,
}

/// The picture decoded from the profile's snapshot field (JPEG bytes as sent). Handed to the
/// caller for counting and dropped; its `Debug` shows only the size, so it never ends up in a
/// log. (Not `Snapshot`: that name is the status figures, `status::Snapshot`.)
#[derive(Clone, PartialEq, Eq)]
pub struct Picture(Vec<u8>);

impl Picture {
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Picture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Picture({} bytes)", self.0.len())
    }
}

/// One person at one terminal, normalised. Deliberately not `Serialize`: it carries a member
/// id and maybe a face, and must be reduced (hash, counts) before anything is stored or sent.
#[derive(Debug, Clone, PartialEq)]
pub struct PassageRecorded {
    pub terminal: TerminalId,
    /// When it happened: the terminal's time, or the receipt time when that is implausible.
    pub at: Timestamp,
    /// The terminal's clock was off (before 2020 or ahead of `now`); `at` is the receipt time.
    pub device_clock_suspect: bool,
    pub who: Who,
    pub verdict: PassageVerdict,
    /// Body temperature in °C, when measured and plausible.
    pub temperature_c: Option<f64>,
    /// At or above the fever threshold, or flagged abnormal/refused by the terminal — but
    /// never on an implausible reading.
    pub fever: bool,
    /// A reading was sent but is outside the plausible range: dropped, count it.
    pub sensor_error: bool,
    pub mask: MaskState,
    pub direction: Direction,
    /// The terminal plus its event serial, for [`Dedup`](super::Dedup).
    pub dedup_key: DedupKey,
    pub snapshot: Option<Picture>,
    /// Why the snapshot field could not be used (not base64, not a string); the passage
    /// stands without it.
    pub snapshot_error: Option<RejectReason>,
}

/// Why a well-formed message is not a passage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IgnoreReason {
    /// A keep-alive: the terminal is up.
    Heartbeat,
    /// A message of another kind (door alarm, parameter upload…).
    OtherMessage,
    /// A passage-kind message whose event code is not about a person passing.
    NotAPassage,
}

impl IgnoreReason {
    pub fn as_str(self) -> &'static str {
        match self {
            IgnoreReason::Heartbeat => "heartbeat",
            IgnoreReason::OtherMessage => "other_message",
            IgnoreReason::NotAPassage => "not_a_passage",
        }
    }
}

/// A message skipped on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    /// The terminal, when the message names one (a heartbeat keeps its terminal alive).
    pub terminal: Option<TerminalId>,
    pub reason: IgnoreReason,
}

/// What one message was.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Passage(PassageRecorded),
    Ignored(Ignored),
}

/// Why a message could not be decoded. A closed list; [`as_str`](RejectReason::as_str) is the
/// metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    #[error("payload of {bytes} bytes is over the {limit}-byte limit")]
    Oversized { bytes: usize, limit: usize },
    #[error("topic does not match the profile's topic filter")]
    TopicMismatch,
    #[error("payload is not UTF-8")]
    InvalidUtf8,
    #[error("payload is not JSON (line {line}, column {column})")]
    InvalidJson { line: usize, column: usize },
    #[error("payload is a bare JSON value, not an object")]
    NotAnObject,
    #[error("field {path} is missing")]
    MissingField { path: String },
    #[error("field {path} is not {expected}")]
    WrongType {
        path: String,
        expected: &'static str,
    },
    #[error("field {path} {why}")]
    BadValue { path: String, why: &'static str },
    #[error("the terminal id from {from} is empty, too long or has characters not allowed")]
    BadTerminalId { from: String },
    #[error("field {path} is not valid base64")]
    BadBase64 { path: String },
    #[error("field {path} is not a time in the profile's format")]
    UnparseableTime { path: String },
}

impl RejectReason {
    /// A fixed label per variant, for metrics and log fields.
    pub fn as_str(&self) -> &'static str {
        match self {
            RejectReason::Oversized { .. } => "oversized",
            RejectReason::TopicMismatch => "topic_mismatch",
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::InvalidJson { .. } => "invalid_json",
            RejectReason::NotAnObject => "not_an_object",
            RejectReason::MissingField { .. } => "missing_field",
            RejectReason::WrongType { .. } => "wrong_type",
            RejectReason::BadValue { .. } => "bad_value",
            RejectReason::BadTerminalId { .. } => "bad_terminal_id",
            RejectReason::BadBase64 { .. } => "bad_base64",
            RejectReason::UnparseableTime { .. } => "unparseable_time",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding.

/// Decodes one message that arrived on `topic` with `profile`'s mapping. `now` is the receipt
/// time, used when the message has no time or an implausible one.
///
/// The steps run in this order, and the first that rejects the message decides the reason.
pub fn decode(
    profile: &TerminalProfile,
    topic: &str,
    payload: &[u8],
    now: Timestamp,
    options: &DecodeOptions,
) -> Result<Decoded, RejectReason> {
    let (topic_match, root) = parse(profile, topic, payload, options)?;
    // The id is needed for heartbeats too, but a heartbeat without one is still a heartbeat.
    let terminal = terminal_of(profile, &root, topic_match)?;
    if let Some(reason) = not_a_passage_kind(profile, &root)? {
        return Ok(Decoded::Ignored(Ignored {
            terminal: terminal.ok(),
            reason,
        }));
    }
    let terminal = terminal?;
    let Some(verdict) = verdict_of(profile, &root)? else {
        return Ok(Decoded::Ignored(Ignored {
            terminal: Some(terminal),
            reason: IgnoreReason::NotAPassage,
        }));
    };
    let (who, verdict) = who_of(profile, &root, verdict)?;
    let (at, device_clock_suspect) = event_time(profile, &root, now, options)?;

    let reading = match &profile.temperature {
        None => Reading::default(),
        Some(rule) => read_temperature(&root, rule, options)?,
    };
    let flagged = reading.vendor_abnormal || verdict == PassageVerdict::RefusedFever;
    let fever = match reading.celsius {
        Some(c) => c >= options.fever_threshold_c || flagged,
        None => flagged && !reading.sensor_error,
    };

    let mask = mapped(&root, profile.mask.as_ref(), MaskState::Unknown)?;
    let direction = mapped(&root, profile.direction.as_ref(), Direction::Unknown)?;
    let dedup_key = dedup_key(profile, &root, &terminal, at)?;

    // A broken picture loses the picture, not the passage: the person did pass.
    let (snapshot, snapshot_error) = match (&profile.snapshot, options.decode_snapshot) {
        (Some(path), true) => match read_snapshot(&root, path) {
            Ok(snapshot) => (snapshot, None),
            Err(reason) => (None, Some(reason)),
        },
        _ => (None, None),
    };

    Ok(Decoded::Passage(PassageRecorded {
        terminal,
        at,
        device_clock_suspect,
        who,
        verdict,
        temperature_c: reading.celsius,
        fever,
        sensor_error: reading.sensor_error,
        mask,
        direction,
        dedup_key,
        snapshot,
        snapshot_error,
    }))
}

/// The checks before any field is read: size, topic, UTF-8, JSON, an object (or an array,
/// which some vendors wrap a record in).
fn parse(
    profile: &TerminalProfile,
    topic: &str,
    payload: &[u8],
    options: &DecodeOptions,
) -> Result<(TopicMatch, Value), RejectReason> {
    if payload.len() > options.max_payload_bytes {
        return Err(RejectReason::Oversized {
            bytes: payload.len(),
            limit: options.max_payload_bytes,
        });
    }
    let topic_match = profile.matches(topic).ok_or(RejectReason::TopicMismatch)?;
    let text = std::str::from_utf8(payload).map_err(|_| RejectReason::InvalidUtf8)?;
    let root: Value = serde_json::from_str(text).map_err(|e| RejectReason::InvalidJson {
        line: e.line(),
        column: e.column(),
    })?;
    if !(root.is_object() || root.is_array()) {
        return Err(RejectReason::NotAnObject);
    }
    Ok((topic_match, root))
}

/// The terminal the message is from: named by the topic, or read from the payload. The
/// outer error rejects the message at once (the id field has the wrong type); the inner one
/// (no id, or not a usable one) only matters once the message turns out to be a passage.
fn terminal_of(
    profile: &TerminalProfile,
    root: &Value,
    topic_match: TopicMatch,
) -> Result<Result<TerminalId, RejectReason>, RejectReason> {
    Ok(match (&profile.device_id, topic_match.terminal) {
        (_, Some(id)) => Ok(id),
        (DeviceIdSource::Field(path), None) => match code_at(root, path)? {
            None => Err(missing(path)),
            Some(raw) => TerminalId::new(&raw).ok_or_else(|| RejectReason::BadTerminalId {
                from: path.to_string(),
            }),
        },
        // Not reached: `matches` names the terminal for every topic-level profile.
        (DeviceIdSource::TopicLevel(_), None) => Err(RejectReason::BadTerminalId {
            from: "the topic".to_string(),
        }),
    })
}

/// Why the message is skipped, by the profile's `[kind]`: a heartbeat or another kind of
/// message. `None` for a passage, or when the profile has no `[kind]`.
fn not_a_passage_kind(
    profile: &TerminalProfile,
    root: &Value,
) -> Result<Option<IgnoreReason>, RejectReason> {
    let Some(rule) = &profile.kind else {
        return Ok(None);
    };
    let kind = match code(root, &rule.field)? {
        None => rule.missing,
        Some(c) => rule.map.get(c.as_ref()).copied().unwrap_or(rule.otherwise),
    };
    Ok(match kind {
        MessageKind::Passage => None,
        MessageKind::Heartbeat => Some(IgnoreReason::Heartbeat),
        MessageKind::Other => Some(IgnoreReason::OtherMessage),
    })
}

/// What the terminal decided, by the profile's `[outcome]`; `None` for an event code that is
/// not about a person passing.
fn verdict_of(
    profile: &TerminalProfile,
    root: &Value,
) -> Result<Option<PassageVerdict>, RejectReason> {
    let outcome = &profile.outcome;
    let outcome_code = code(root, &outcome.field)?.ok_or_else(|| missing(&outcome.field))?;
    Ok(match outcome.map.get(outcome_code.as_ref()) {
        Some(v) => *v,
        None => outcome.otherwise,
    })
}

/// Who passed, and the verdict again: a "pass" for nobody registered is a stranger let
/// through. Members: the id is read, bounded and wrapped; names are never looked at.
fn who_of(
    profile: &TerminalProfile,
    root: &Value,
    mut verdict: PassageVerdict,
) -> Result<(Who, PassageVerdict), RejectReason> {
    let mut member = None;
    if let Some(rule) = &profile.member
        && let Some(raw) = code(root, &rule.field)?
    {
        if raw.len() > MAX_MEMBER_ID_BYTES {
            return Err(RejectReason::BadValue {
                path: rule.field.to_string(),
                why: "is too long for a member id",
            });
        }
        if rule.stranger_values.iter().any(|s| s == raw.as_ref()) {
            // A "pass" for nobody registered is a stranger let through (visitor mode).
            if verdict == PassageVerdict::Pass {
                verdict = PassageVerdict::Stranger;
            }
        } else {
            member = Some(MemberRef::new(raw.into_owned()));
        }
    }
    let who = match (verdict, member) {
        (PassageVerdict::Stranger, _) | (_, None) => Who::Stranger,
        (_, Some(m)) => Who::Member(m),
    };
    Ok((who, verdict))
}

/// When it happened, and whether the terminal's clock is suspect: the receipt time stands in
/// for a time before 2020 or too far ahead of `now`, and for a profile without `[time]`.
fn event_time(
    profile: &TerminalProfile,
    root: &Value,
    now: Timestamp,
    options: &DecodeOptions,
) -> Result<(Timestamp, bool), RejectReason> {
    let Some(rule) = &profile.time else {
        return Ok((now, false));
    };
    let (path, value) = field(root, &rule.field).ok_or_else(|| missing(&rule.field))?;
    let at = parse_time(value, path, rule.format, &options.time_zone)?;
    let ahead = SignedDuration::from_secs(options.max_clock_ahead_s.min(86_400) as i64);
    let latest = now.checked_add(ahead).unwrap_or(Timestamp::MAX);
    Ok(if at < EARLIEST_PLAUSIBLE || at > latest {
        (now, true)
    } else {
        (at, false)
    })
}

/// A field read through a profile's map (mask, direction); `unknown` without the rule, the
/// field, or a mapping for its code.
fn mapped<T: Copy>(root: &Value, rule: Option<&MapRule<T>>, unknown: T) -> Result<T, RejectReason> {
    let Some(rule) = rule else {
        return Ok(unknown);
    };
    Ok(match code(root, &rule.field)? {
        None => unknown,
        Some(c) => rule.map.get(c.as_ref()).copied().unwrap_or(unknown),
    })
}

/// The event's identity at its terminal: the first dedup field present, checked, or the event
/// time to the millisecond.
fn dedup_key(
    profile: &TerminalProfile,
    root: &Value,
    terminal: &TerminalId,
    at: Timestamp,
) -> Result<DedupKey, RejectReason> {
    let mut event = None;
    for path in &profile.dedup {
        if let Some(raw) = code_at(root, path)? {
            if raw.len() > MAX_EVENT_KEY_BYTES || !raw.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(RejectReason::BadValue {
                    path: path.to_string(),
                    why: "is not a usable event key (printable ASCII, at most 64 bytes)",
                });
            }
            event = Some(raw.into_owned());
            break;
        }
    }
    // Without a serial, the event time to the millisecond stands in: one terminal sees one
    // face at a time, and a re-sent record carries the same time (unless the terminal's clock
    // is off and `at` is the receipt time: such repeats cannot be recognised).
    let event = event.unwrap_or_else(|| format!("t{}", at.as_millisecond()));
    Ok(DedupKey {
        terminal: terminal.clone(),
        event,
    })
}

fn missing(path: &impl fmt::Display) -> RejectReason {
    RejectReason::MissingField {
        path: path.to_string(),
    }
}

fn wrong_type(path: &JsonPath, expected: &'static str) -> RejectReason {
    RejectReason::WrongType {
        path: path.to_string(),
        expected,
    }
}

/// `null` and blank strings count as missing (vendors use both).
fn present(value: &Value) -> bool {
    !value.is_null() && !value.as_str().is_some_and(|s| s.trim().is_empty())
}

/// The first alternative of `path` that is present, and where it was found.
fn field<'v, 'p>(root: &'v Value, path: &'p FieldPath) -> Option<(&'p JsonPath, &'v Value)> {
    path.alternatives()
        .iter()
        .find_map(|p| p.lookup(root).filter(|v| present(v)).map(|v| (p, v)))
}

/// A scalar field as text, for comparing with the profile's codes: strings as they are,
/// numbers in decimal, booleans as `true`/`false`. Objects and arrays are the wrong type.
fn code<'v>(root: &'v Value, path: &FieldPath) -> Result<Option<Cow<'v, str>>, RejectReason> {
    field(root, path).map(|(p, v)| scalar(p, v)).transpose()
}

/// [`code`] for a single path.
fn code_at<'v>(root: &'v Value, path: &JsonPath) -> Result<Option<Cow<'v, str>>, RejectReason> {
    path.lookup(root)
        .filter(|v| present(v))
        .map(|v| scalar(path, v))
        .transpose()
}

fn scalar<'v>(path: &JsonPath, value: &'v Value) -> Result<Cow<'v, str>, RejectReason> {
    match value {
        Value::String(s) => Ok(Cow::Borrowed(s.trim())),
        Value::Number(n) => Ok(Cow::Owned(n.to_string())),
        Value::Bool(b) => Ok(Cow::Borrowed(if *b { "true" } else { "false" })),
        _ => Err(wrong_type(path, "a string, number or boolean")),
    }
}

/// A number, given as a JSON number or a numeric string (Uniubi sends every field as text).
fn number(value: &Value, path: &JsonPath) -> Result<f64, RejectReason> {
    let n = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .ok_or_else(|| wrong_type(path, "a number"))?;
    if n.is_finite() {
        Ok(n)
    } else {
        Err(RejectReason::BadValue {
            path: path.to_string(),
            why: "is not a finite number",
        })
    }
}

/// A whole number, given as a JSON integer or a string of digits.
fn integer(value: &Value, path: &JsonPath) -> Result<i64, RejectReason> {
    let n = match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    n.ok_or_else(|| wrong_type(path, "a whole number"))
}

fn parse_time(
    value: &Value,
    path: &JsonPath,
    format: TimeFormat,
    time_zone: &TimeZone,
) -> Result<Timestamp, RejectReason> {
    let unparseable = || RejectReason::UnparseableTime {
        path: path.to_string(),
    };
    match format {
        TimeFormat::Rfc3339 => {
            let text = value.as_str().ok_or_else(|| wrong_type(path, "a string"))?;
            parse_offset_time(text).ok_or_else(unparseable)
        }
        TimeFormat::Local => {
            let text = value.as_str().ok_or_else(|| wrong_type(path, "a string"))?;
            parse_local_time(text, time_zone).ok_or_else(unparseable)
        }
        TimeFormat::UnixSeconds => {
            Timestamp::from_second(integer(value, path)?).map_err(|_| unparseable())
        }
        TimeFormat::UnixMillis => {
            Timestamp::from_millisecond(integer(value, path)?).map_err(|_| unparseable())
        }
    }
}

/// An RFC 3339 time as terminals write it: `2024-03-05T09:12:33+08:00`, `…+08:30`, and the
/// one-digit offset hour some Hikvision firmware writes, `…-5:00`. `None` without an offset.
pub(crate) fn parse_offset_time(text: &str) -> Option<Timestamp> {
    let text = text.trim();
    if let Ok(at) = text.parse::<Timestamp>() {
        return Some(at);
    }
    // `±H:MM` at the end, after the seconds: pad the hour. Every byte looked at is ASCII, so
    // the slices below fall on character boundaries.
    let b = text.as_bytes();
    let n = b.len();
    if n < 7 {
        return None;
    }
    let tail = &b[n - 5..];
    let one_digit_hour = matches!(tail[0], b'+' | b'-')
        && tail[1].is_ascii_digit()
        && tail[2] == b':'
        && tail[3].is_ascii_digit()
        && tail[4].is_ascii_digit()
        && b[n - 6].is_ascii_digit();
    if !one_digit_hour {
        return None;
    }
    let padded = format!("{}{}0{}", &text[..n - 5], tail[0] as char, &text[n - 4..]);
    padded.parse::<Timestamp>().ok()
}

/// A naive local time (`2024-03-05 09:12:33`, or with `T`) in `time_zone`; a time in a
/// daylight-saving gap or fold is read the way clocks are set ("compatible"). A time with an
/// offset is read with its offset.
pub(crate) fn parse_local_time(text: &str, time_zone: &TimeZone) -> Option<Timestamp> {
    let text = text.trim();
    if let Some(at) = parse_offset_time(text) {
        return Some(at);
    }
    let civil: jiff::civil::DateTime = text.parse().ok()?;
    time_zone.to_ambiguous_timestamp(civil).compatible().ok()
}

#[derive(Debug, Default)]
struct Reading {
    celsius: Option<f64>,
    sensor_error: bool,
    vendor_abnormal: bool,
}

fn read_temperature(
    root: &Value,
    rule: &TemperatureRule,
    options: &DecodeOptions,
) -> Result<Reading, RejectReason> {
    let vendor_abnormal = match &rule.abnormal_field {
        None => false,
        Some(path) => {
            code(root, path)?.is_some_and(|c| rule.abnormal_values.iter().any(|v| v == c.as_ref()))
        }
    };
    let mut reading = Reading {
        vendor_abnormal,
        ..Reading::default()
    };
    let Some((path, value)) = field(root, &rule.field) else {
        return Ok(reading);
    };
    let raw = number(value, path)?;
    if rule.not_measured.contains(&raw) {
        return Ok(reading);
    }
    let unit = match &rule.unit_field {
        None => rule.unit,
        Some(path) => match code(root, path)? {
            None => rule.unit,
            Some(c) => rule.unit_map.get(c.as_ref()).copied().unwrap_or(rule.unit),
        },
    };
    // Two decimals: enough for any thermometer, and 37.29999 from a unit conversion must not
    // miss a 37.3 threshold.
    let celsius = (unit.to_celsius(raw) * 100.0).round() / 100.0;
    if (options.plausible_min_c..=options.plausible_max_c).contains(&celsius) {
        reading.celsius = Some(celsius);
    } else {
        reading.sensor_error = true;
    }
    Ok(reading)
}

fn read_snapshot(root: &Value, path: &FieldPath) -> Result<Option<Picture>, RejectReason> {
    let Some((path, value)) = field(root, path) else {
        return Ok(None);
    };
    let text = value.as_str().ok_or_else(|| wrong_type(path, "a string"))?;
    let text = text.trim();
    // A URL is a picture kept on the terminal; the gateway never fetches it.
    if text.starts_with("http://") || text.starts_with("https://") {
        return Ok(None);
    }
    let bad = || RejectReason::BadBase64 {
        path: path.to_string(),
    };
    // `data:image/jpeg;base64,/9j/…`: the data-URI prefix some firmwares add.
    let body = match text.strip_prefix("data:") {
        Some(rest) => rest.split_once(',').map(|(_, b)| b).ok_or_else(bad)?,
        None => text,
    };
    // MIME-style line breaks inside the base64.
    let body: Cow<str> = if body.bytes().any(|b| b.is_ascii_whitespace()) {
        Cow::Owned(body.chars().filter(|c| !c.is_ascii_whitespace()).collect())
    } else {
        Cow::Borrowed(body)
    };
    let bytes = SNAPSHOT_BASE64.decode(body.as_bytes()).map_err(|_| bad())?;
    Ok((!bytes.is_empty()).then_some(Picture(bytes)))
}

// ---------------------------------------------------------------------------------------------
// Counting outcomes.

/// Counters over decode outcomes, for the status page and `/metrics`. Monotonic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodeStats {
    pub passages: u64,
    /// By [`IgnoreReason::as_str`].
    pub ignored: BTreeMap<&'static str, u64>,
    /// By [`RejectReason::as_str`].
    pub rejected: BTreeMap<&'static str, u64>,
    /// Passages whose temperature was implausible and dropped.
    pub sensor_errors: u64,
    /// Passages whose terminal clock was off.
    pub clock_suspect: u64,
}

impl DecodeStats {
    pub fn record(&mut self, outcome: &Result<Decoded, RejectReason>) {
        match outcome {
            Ok(Decoded::Passage(p)) => {
                self.passages += 1;
                self.sensor_errors += u64::from(p.sensor_error);
                self.clock_suspect += u64::from(p.device_clock_suspect);
            }
            Ok(Decoded::Ignored(i)) => *self.ignored.entry(i.reason.as_str()).or_default() += 1,
            Err(reason) => *self.rejected.entry(reason.as_str()).or_default() += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::terminals::profile::parse_terminal_profile;

    fn profile() -> TerminalProfile {
        parse_terminal_profile(
            r#"
            name = "unit"
            topic_filter = "t/+/e"
            [kind]
            field = "k"
            map = { p = "passage", hb = "heartbeat" }
            [outcome]
            field = "code"
            map = { "1" = "pass", "2" = "fail", "3" = "refused_fever", "9" = "ignore" }
            [time]
            field = "ms"
            format = "unix_millis"
            [dedup]
            fields = ["serial", "id"]
            [member]
            field = "who"
            stranger_values = ["NOBODY"]
            [temperature]
            field = "temp"
            unit = "tenths_celsius"
            not_measured = [0]
            unit_field = "unit"
            unit_map = { F = "fahrenheit" }
            abnormal_field = "hot"
            abnormal_values = ["true"]
            [mask]
            field = "mask"
            map = { y = "on", n = "off" }
            [snapshot]
            field = "pic"
            "#,
        )
        .expect("valid profile")
    }

    const NOW_MS: i64 = 1_709_601_153_000; // 2024-03-05T01:12:33Z

    fn now() -> Timestamp {
        Timestamp::from_millisecond(NOW_MS).expect("in range")
    }

    fn run(json: serde_json::Value) -> Result<Decoded, RejectReason> {
        decode(
            &profile(),
            "t/T1/e",
            json.to_string().as_bytes(),
            now(),
            &DecodeOptions::default(),
        )
    }

    fn passage(json: serde_json::Value) -> PassageRecorded {
        match run(json) {
            Ok(Decoded::Passage(p)) => p,
            other => panic!("expected a passage, got {other:?}"),
        }
    }

    fn base() -> serde_json::Value {
        serde_json::json!({"k": "p", "code": 1, "ms": NOW_MS - 5_000, "serial": 42, "who": "m-7",
                           "temp": 365, "mask": "y", "pic": "/9j/4AAQ"})
    }

    fn with(key: &str, value: serde_json::Value) -> serde_json::Value {
        let mut doc = base();
        doc[key] = value;
        doc
    }

    fn without(mut doc: serde_json::Value, key: &str) -> serde_json::Value {
        if let Some(object) = doc.as_object_mut() {
            object.remove(key);
        }
        doc
    }

    #[test]
    fn a_full_record_decodes_into_every_field() {
        let p = passage(base());
        assert_eq!(p.terminal.as_str(), "T1");
        assert_eq!(p.at.as_millisecond(), NOW_MS - 5_000);
        assert!(!p.device_clock_suspect);
        assert_eq!(p.who, Who::Member(MemberRef::new("m-7")));
        assert_eq!(p.verdict, PassageVerdict::Pass);
        assert_eq!(p.temperature_c, Some(36.5));
        assert!(!p.fever && !p.sensor_error);
        assert_eq!(p.mask, MaskState::On);
        assert_eq!(p.direction, Direction::Unknown);
        assert_eq!(p.dedup_key.event, "42");
        assert_eq!(
            p.snapshot.map(Picture::into_bytes),
            Some(vec![0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10])
        );
    }

    #[test]
    fn fever_comes_from_the_threshold_or_the_terminal_but_never_from_a_faulty_sensor() {
        assert!(passage(with("temp", 373.into())).fever, "at the threshold");
        assert!(!passage(with("temp", 372.into())).fever);
        assert!(
            passage(with("hot", true.into())).fever,
            "flagged by the terminal"
        );
        assert!(passage(with("code", 3.into())).fever, "refused for fever");
        let faulty = passage(with("temp", 520.into()));
        assert!(faulty.sensor_error && !faulty.fever && faulty.temperature_c.is_none());
        let mut flagged_faulty = with("temp", 290.into());
        flagged_faulty["hot"] = true.into();
        assert!(
            !passage(flagged_faulty).fever,
            "an implausible reading is never a fever"
        );
        let unmeasured = passage(with("temp", 0.into()));
        assert!(unmeasured.temperature_c.is_none() && !unmeasured.sensor_error);
        let mut fahrenheit = with("temp", "99.5".into());
        fahrenheit["unit"] = "F".into();
        let f = passage(fahrenheit);
        assert_eq!(f.temperature_c, Some(37.5));
        assert!(f.fever);
    }

    #[test]
    fn the_options_move_the_fever_threshold_and_the_plausible_range() {
        let options = DecodeOptions {
            fever_threshold_c: 38.0,
            plausible_max_c: 60.0,
            ..DecodeOptions::default()
        };
        let bytes = with("temp", 375.into()).to_string();
        let Ok(Decoded::Passage(p)) =
            decode(&profile(), "t/T1/e", bytes.as_bytes(), now(), &options)
        else {
            panic!("passage");
        };
        assert!(!p.fever);
        let bytes = with("temp", 520.into()).to_string();
        let Ok(Decoded::Passage(p)) =
            decode(&profile(), "t/T1/e", bytes.as_bytes(), now(), &options)
        else {
            panic!("passage");
        };
        assert_eq!(p.temperature_c, Some(52.0));
    }

    #[test]
    fn a_null_field_reads_as_an_absent_one() {
        // Terminals send `"personId": null` for a stranger and `"mask": null` when they did
        // not look; either used to reject the whole passage as the wrong type.
        let p = passage(with("who", serde_json::Value::Null));
        assert_eq!(p.who, Who::Stranger);
        assert_eq!(
            passage(with("mask", serde_json::Value::Null)).mask,
            MaskState::Unknown
        );
        assert!(
            matches!(
                run(with("code", serde_json::Value::Null)),
                Err(RejectReason::MissingField { .. })
            ),
            "a null outcome is a missing one, and named so"
        );
    }

    #[test]
    fn strangers_come_from_the_verdict_or_the_stranger_marker() {
        let marked = passage(with("who", "NOBODY".into()));
        assert_eq!(
            (marked.who, marked.verdict),
            (Who::Stranger, PassageVerdict::Stranger)
        );
        let failed = passage(with("code", 2.into()));
        assert_eq!(failed.verdict, PassageVerdict::Fail);
        assert_eq!(failed.who, Who::Member(MemberRef::new("m-7")));
        assert_eq!(passage(without(base(), "who")).who, Who::Stranger);
    }

    #[test]
    fn heartbeats_and_uninteresting_events_are_ignored_with_their_terminal() {
        let hb = run(serde_json::json!({"k": "hb"}));
        assert_eq!(
            hb,
            Ok(Decoded::Ignored(Ignored {
                terminal: TerminalId::new("T1"),
                reason: IgnoreReason::Heartbeat
            }))
        );
        let other = run(serde_json::json!({"k": "door"}));
        assert!(matches!(
            other,
            Ok(Decoded::Ignored(Ignored {
                reason: IgnoreReason::OtherMessage,
                ..
            }))
        ));
        let code9 = run(with("code", 9.into()));
        assert!(matches!(
            code9,
            Ok(Decoded::Ignored(Ignored {
                reason: IgnoreReason::NotAPassage,
                ..
            }))
        ));
        let unlisted = run(with("code", 77.into()));
        assert!(matches!(
            unlisted,
            Ok(Decoded::Ignored(Ignored {
                reason: IgnoreReason::NotAPassage,
                ..
            }))
        ));
    }

    #[test]
    fn implausible_device_times_fall_back_to_the_receipt_time() {
        let ahead = passage(with("ms", (NOW_MS + 3_600_000).into()));
        assert!(ahead.device_clock_suspect);
        assert_eq!(ahead.at, now());
        let reset = passage(with("ms", 86_400_000.into()));
        assert!(reset.device_clock_suspect);
        let backlog = passage(with("ms", (NOW_MS - 2 * 86_400_000).into()));
        assert!(
            !backlog.device_clock_suspect,
            "old records from a backlog keep their time"
        );
        assert_eq!(
            run(with("ms", i64::MAX.into())).err().map(|r| r.as_str()),
            Some("unparseable_time")
        );
    }

    #[test]
    fn the_dedup_key_takes_the_first_present_field_or_the_time() {
        let mut by_id = without(base(), "serial");
        by_id["id"] = "r-9".into();
        assert_eq!(passage(by_id.clone()).dedup_key.event, "r-9");
        let by_time = without(by_id, "id");
        assert_eq!(
            passage(by_time).dedup_key.event,
            format!("t{}", NOW_MS - 5_000)
        );
    }

    #[test]
    fn snapshots_accept_data_uris_line_breaks_and_missing_padding() {
        for pic in [
            "data:image/jpeg;base64,/9j/4AAQ",
            "/9j/\n4AAQ",
            "/9j/4AA",
            " /9j/4A== ",
        ] {
            let p = passage(with("pic", pic.into()));
            assert!(
                p.snapshot
                    .is_some_and(|s| s.bytes().starts_with(&[0xff, 0xd8, 0xff])),
                "{pic:?}"
            );
        }
        assert!(
            passage(with("pic", "http://10.0.0.5/pic/1.jpg".into()))
                .snapshot
                .is_none()
        );
        assert!(passage(with("pic", "".into())).snapshot.is_none());
        let off = DecodeOptions {
            decode_snapshot: false,
            ..DecodeOptions::default()
        };
        let bytes = with("pic", "!!not base64!!".into()).to_string();
        let skipped = decode(&profile(), "t/T1/e", bytes.as_bytes(), now(), &off);
        assert!(matches!(skipped, Ok(Decoded::Passage(p)) if p.snapshot.is_none()));
    }

    #[test]
    fn each_kind_of_bad_input_has_its_own_reason() {
        let p = profile();
        let opts = DecodeOptions::default();
        let reason = |topic: &str, bytes: &[u8]| {
            decode(&p, topic, bytes, now(), &opts)
                .err()
                .map(|r| r.as_str())
        };
        assert_eq!(
            reason("t/T1/e", &vec![b' '; 256 * 1024 + 1]),
            Some("oversized")
        );
        assert_eq!(reason("x/T1/e", b"{}"), Some("topic_mismatch"));
        assert_eq!(reason("t/T1/e", b"{\"k\":\"\xff\"}"), Some("invalid_utf8"));
        assert_eq!(reason("t/T1/e", b"{\"k\":"), Some("invalid_json"));
        assert_eq!(reason("t/T1/e", b"42"), Some("not_an_object"));
        let r = |doc: serde_json::Value| run(doc).err();
        assert_eq!(
            r(without(base(), "code")),
            Some(RejectReason::MissingField {
                path: "code".into()
            })
        );
        assert_eq!(
            r(with("code", serde_json::json!([1]))).map(|e| e.as_str()),
            Some("wrong_type")
        );
        assert_eq!(
            r(with("temp", "warm".into())).map(|e| e.as_str()),
            Some("wrong_type")
        );
        assert_eq!(
            r(with("ms", "soon".into())).map(|e| e.as_str()),
            Some("wrong_type")
        );
        // A broken picture is reported beside the passage, which stands.
        let snapshot_error = |doc: serde_json::Value| match run(doc) {
            Ok(Decoded::Passage(p)) => p.snapshot_error.map(|e| e.as_str()),
            other => panic!("a passage without its picture, not {other:?}"),
        };
        assert_eq!(
            snapshot_error(with("pic", "@@@@".into())),
            Some("bad_base64")
        );
        assert_eq!(snapshot_error(with("pic", 5.into())), Some("wrong_type"));
        assert_eq!(
            r(with("serial", "x".repeat(65).into())).map(|e| e.as_str()),
            Some("bad_value")
        );
        assert_eq!(
            r(with("who", "x".repeat(129).into())).map(|e| e.as_str()),
            Some("bad_value")
        );
    }

    #[test]
    fn reject_messages_name_paths_but_never_payload_values() {
        let err = run(with("who", "secret-member-0042".repeat(8).into())).expect_err("too long");
        let text = err.to_string();
        assert!(text.contains("who") && !text.contains("secret"), "{text}");
    }

    #[test]
    fn options_are_validated() {
        assert!(DecodeOptions::default().validate().is_ok());
        let bad = DecodeOptions {
            max_payload_bytes: 10,
            plausible_min_c: 40.0,
            plausible_max_c: 35.0,
            max_clock_ahead_s: 1_000_000,
            ..DecodeOptions::default()
        };
        assert_eq!(bad.validate().expect_err("bad").len(), 3);
        let outside = DecodeOptions {
            fever_threshold_c: 50.0,
            ..DecodeOptions::default()
        };
        assert!(outside.validate().is_err());
        let parsed: DecodeOptions =
            toml::from_str("fever_threshold_c = 37.5").expect("partial options parse");
        assert_eq!(parsed.fever_threshold_c, 37.5);
        assert_eq!(parsed.max_payload_bytes, 256 * 1024);
        assert!(toml::from_str::<DecodeOptions>("fever = 1").is_err());
    }

    #[test]
    fn offsets_as_hikvision_writes_them_are_read() {
        let at = |text: &str| parse_offset_time(text).map(|t| t.to_string());
        // The plain RFC 3339 parser refuses the one-digit hour: that is why this exists.
        assert!("2024-03-04T20:12:40-5:00".parse::<Timestamp>().is_err());
        assert_eq!(
            at("2024-03-04T20:12:40-5:00").as_deref(),
            Some("2024-03-05T01:12:40Z")
        );
        assert_eq!(
            at(" 2024-03-05T09:42:50+08:30 ").as_deref(),
            Some("2024-03-05T01:12:50Z")
        );
        assert_eq!(
            at("2024-03-05T09:12:33+8:00").as_deref(),
            Some("2024-03-05T01:12:33Z")
        );
        assert_eq!(
            at("2024-03-05T01:12:33Z").as_deref(),
            Some("2024-03-05T01:12:33Z")
        );
        for bad in [
            "2024-03-05T09:12:33",
            "2024-03-05T09:12:33-5:0",
            "2024-03-05T09:12:33-5",
            "2024-03-05-5:00",
            "-5:00",
            "",
            "中文中文-5:00",
        ] {
            assert_eq!(at(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn naive_local_times_are_read_in_the_halls_zone() {
        let shanghai = TimeZone::get("Asia/Shanghai").expect("tzdb");
        let at = |text: &str, tz: &TimeZone| parse_local_time(text, tz).map(|t| t.to_string());
        for text in ["2024-03-05 09:12:33", "2024-03-05T09:12:33"] {
            assert_eq!(at(text, &shanghai).as_deref(), Some("2024-03-05T01:12:33Z"));
        }
        assert_eq!(
            at("2024-03-05 09:12:33", &TimeZone::UTC).as_deref(),
            Some("2024-03-05T09:12:33Z")
        );
        assert_eq!(
            at("2024-03-05T09:12:33+08:00", &TimeZone::UTC).as_deref(),
            Some("2024-03-05T01:12:33Z"),
            "an offset, when there is one, wins"
        );
        // In a spring-forward gap the clock reading is taken as if before the change.
        let new_york = TimeZone::get("America/New_York").expect("tzdb");
        assert_eq!(
            at("2024-03-10 02:30:00", &new_york).as_deref(),
            Some("2024-03-10T07:30:00Z")
        );
        assert_eq!(at("2024-03-05 9:12", &shanghai), None);
    }

    #[test]
    fn a_local_time_profile_uses_the_options_zone() {
        let profile = parse_terminal_profile(
            r#"
            name = "local"
            topic_filter = "t/+/e"
            [outcome]
            field = "code"
            map = { "1" = "pass" }
            [time]
            field = ["when", "time"]
            format = "local"
            "#,
        )
        .expect("valid profile");
        let options = DecodeOptions {
            time_zone: TimeZone::get("Asia/Shanghai").expect("tzdb"),
            ..DecodeOptions::default()
        };
        let bytes = br#"{"code": 1, "time": "2024-03-05 09:12:33"}"#;
        let Ok(Decoded::Passage(p)) = decode(&profile, "t/T1/e", bytes, now(), &options) else {
            panic!("passage");
        };
        assert_eq!(p.at.to_string(), "2024-03-05T01:12:33Z");
        assert_eq!(p.dedup_key.event, format!("t{}", p.at.as_millisecond()));
        let bad = br#"{"code": 1, "when": "yesterday"}"#;
        assert_eq!(
            decode(&profile, "t/T1/e", bad, now(), &options),
            Err(RejectReason::UnparseableTime {
                path: "when".into()
            })
        );
    }

    #[test]
    fn stats_count_every_outcome_by_label() {
        let mut stats = DecodeStats::default();
        stats.record(&run(base()));
        stats.record(&run(with("temp", 520.into())));
        stats.record(&run(serde_json::json!({"k": "hb"})));
        stats.record(&Err(RejectReason::InvalidUtf8));
        assert_eq!(stats.passages, 2);
        assert_eq!(stats.sensor_errors, 1);
        assert_eq!(stats.ignored.get("heartbeat"), Some(&1));
        assert_eq!(stats.rejected.get("invalid_utf8"), Some(&1));
    }
}
