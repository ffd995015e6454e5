//! Terminal payload mappings ("profiles"), loaded from `firmware-config/terminals/*.toml`.
//!
//! The terminals' counterpart of the counter register maps (`config::profile`) and the serial
//! formats (`devices::stream::profile`): what differs between vendors — the MQTT topic, JSON
//! field names, event codes, units — is data, so a new vendor is a new file. Files are parsed
//! (unknown keys rejected at every level), then validated with every problem reported at once
//! and the profile's name on each, then trusted by [`decode`](super::decode). The shipped
//! profiles are compiled in; a hall config may add a directory of its own, whose files replace
//! shipped ones of the same name.
//!
//! ```toml
//! name = "example"
//! topic_filter = "terminals/example/+/events"   # `+` is the terminal id…
//! device_id_field = "deviceKey"                 # …unless the payload names it
//!
//! [kind]          # optional: which messages are passages, heartbeats, or other
//! field = "eventType"
//! map = { Passage = "passage", Beat = "heartbeat" }
//! otherwise = "other"                           # code not in the map (default "other")
//! missing = "other"                             # field absent (default "other")
//!
//! [outcome]       # required: what the terminal decided
//! field = "event.code"
//! map = { "75" = "pass", "76" = "fail", "19" = "stranger", "30" = "refused_fever" }
//! otherwise = "ignore"                          # default
//!
//! [time]          # optional: without it, the receipt time is used
//! field = "dateTime"
//! format = "rfc3339"                            # or "unix_seconds", "unix_millis"
//!
//! [dedup]         # optional: alternatives, the first one present is the event's key
//! fields = ["recordId", "id"]
//! personal = false  # true: the key is made from a member id (ZKTeco's PIN and time), so
//!                   # only its daily-salted hash is kept, like the member's
//!
//! [member]        # optional
//! field = "personId"
//! stranger_values = ["STRANGERBABY"]
//!
//! [temperature]   # optional
//! field = "temperature"
//! unit = "celsius"                              # or "tenths_celsius", "fahrenheit"
//! not_measured = [0]                            # raw values that mean "no reading"
//! abnormal_field = "temperatureState"
//! abnormal_values = ["2"]
//!
//! [mask]          # optional
//! field = "mask"
//! map = { "1" = "on", "0" = "off" }
//!
//! [direction]     # optional
//! field = "IsEntry"
//! map = { "1" = "in", "0" = "out" }
//!
//! [snapshot]      # optional: a base64 (or data-URI) JPEG
//! field = "imgBase64"
//! ```
//!
//! Every `field` (and `unit_field`, `abnormal_field`) may also be a list of alternatives, the
//! first one present in the message being read: `field = ["AccessControllerEvent.subEventType",
//! "minor"]` reads a pushed Hikvision event and a record from its searched log alike.
//!
//! Codes in maps are compared as text: a JSON string as it is, a number in its decimal form
//! (`75`), a boolean as `true`/`false`. So `{ "75" = "pass" }` matches `75` and `"75"` alike.
//! Names (`name`, `Name`) are deliberately not mappable: the gateway never reads them.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::TerminalId;
use super::facts::{Direction, MaskState, PassageVerdict};
use super::path::{FieldPath, JsonPath};

/// The profiles shipped in `firmware-config/terminals/`, embedded at build time.
const BUILTIN: &[(&str, &str)] = &[
    (
        "hikvision-acs",
        include_str!("../../firmware-config/terminals/hikvision-acs.toml"),
    ),
    (
        "httpv2-record",
        include_str!("../../firmware-config/terminals/httpv2-record.toml"),
    ),
    (
        "uniubi-uface",
        include_str!("../../firmware-config/terminals/uniubi-uface.toml"),
    ),
    (
        "hikvision-isapi",
        include_str!("../../firmware-config/terminals/hikvision-isapi.toml"),
    ),
    (
        "uniubi-uface-http",
        include_str!("../../firmware-config/terminals/uniubi-uface-http.toml"),
    ),
    (
        "zkteco-adms",
        include_str!("../../firmware-config/terminals/zkteco-adms.toml"),
    ),
    (
        "dahua-access",
        include_str!("../../firmware-config/terminals/dahua-access.toml"),
    ),
];

// ---------------------------------------------------------------------------------------------
// The file as written.

/// A field as a profile names it: one path, or alternatives tried in order.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(
    untagged,
    expecting = "a field path or a list of alternative field paths"
)]
pub enum FieldNames {
    One(String),
    Any(Vec<String>),
}

impl FieldNames {
    fn texts(&self) -> Vec<&str> {
        match self {
            FieldNames::One(text) => vec![text.as_str()],
            FieldNames::Any(list) => list.iter().map(String::as_str).collect(),
        }
    }
}

/// A terminal profile file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminalProfileConfig {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// MQTT topic filter the terminals publish under (`+` one level, `#` the rest).
    pub topic_filter: String,
    /// JSON path of the terminal id in the payload. Without it the id is the topic level the
    /// filter's one `+` matches.
    pub device_id_field: Option<String>,
    pub kind: Option<KindConfig>,
    pub outcome: OutcomeConfig,
    pub time: Option<TimeConfig>,
    pub dedup: Option<DedupConfig>,
    pub member: Option<MemberConfig>,
    pub temperature: Option<TemperatureConfig>,
    pub mask: Option<MapConfig<MaskState>>,
    pub direction: Option<MapConfig<Direction>>,
    pub snapshot: Option<SnapshotConfig>,
}

/// What a whole message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// A recognition/passage record: read on into `[outcome]`.
    Passage,
    /// A keep-alive: the terminal is up; no passage.
    Heartbeat,
    /// Anything else the terminal publishes (door alarms, configuration uploads…).
    Other,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindConfig {
    pub field: FieldNames,
    #[serde(default)]
    pub map: BTreeMap<String, MessageKind>,
    #[serde(default = "default_other")]
    pub otherwise: MessageKind,
    #[serde(default = "default_other")]
    pub missing: MessageKind,
}

fn default_other() -> MessageKind {
    MessageKind::Other
}

/// What the terminal decided about the person in front of it, as a profile names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeCode {
    Pass,
    Fail,
    Stranger,
    RefusedFever,
    /// Not about a person passing (door-contact events, menu operations…).
    Ignore,
}

impl OutcomeCode {
    fn verdict(self) -> Option<PassageVerdict> {
        match self {
            OutcomeCode::Pass => Some(PassageVerdict::Pass),
            OutcomeCode::Fail => Some(PassageVerdict::Fail),
            OutcomeCode::Stranger => Some(PassageVerdict::Stranger),
            OutcomeCode::RefusedFever => Some(PassageVerdict::RefusedFever),
            OutcomeCode::Ignore => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomeConfig {
    pub field: FieldNames,
    pub map: BTreeMap<String, OutcomeCode>,
    #[serde(default = "default_ignore")]
    pub otherwise: OutcomeCode,
}

fn default_ignore() -> OutcomeCode {
    OutcomeCode::Ignore
}

/// How a payload writes the time of the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// `2024-03-05T09:12:33+08:00`; the offset is required (a local time without one is
    /// ambiguous and refused). Offsets as Hikvision firmware writes them are accepted too:
    /// `+08:30`, and `-5:00` with a one-digit hour.
    Rfc3339,
    /// A naive device-local time, `2024-03-05 09:12:33` or `2024-03-05T09:12:33`, read in the
    /// hall's time zone ([`DecodeOptions::time_zone`](super::DecodeOptions)): ZKTeco's ATTLOG.
    /// A time that does carry an offset is read with it.
    Local,
    /// Seconds since 1970-01-01 UTC, as a number or a numeric string.
    UnixSeconds,
    /// Milliseconds since 1970-01-01 UTC, as a number or a numeric string.
    UnixMillis,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeConfig {
    pub field: FieldNames,
    pub format: TimeFormat,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {
    /// Alternatives: the first field present is the event's key.
    pub fields: Vec<String>,
    /// The key carries a member id: the gateway keeps only its daily-salted hash.
    #[serde(default)]
    pub personal: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    pub field: FieldNames,
    /// Values of `field` that mean "no registered member" (Uniubi's `STRANGERBABY`).
    #[serde(default)]
    pub stranger_values: Vec<String>,
}

/// The unit a temperature is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemperatureUnit {
    Celsius,
    /// Integer tenths of a degree Celsius (`365` is 36.5 °C).
    TenthsCelsius,
    Fahrenheit,
}

impl TemperatureUnit {
    pub(crate) fn to_celsius(self, raw: f64) -> f64 {
        match self {
            TemperatureUnit::Celsius => raw,
            TemperatureUnit::TenthsCelsius => raw / 10.0,
            TemperatureUnit::Fahrenheit => (raw - 32.0) * 5.0 / 9.0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemperatureConfig {
    pub field: FieldNames,
    pub unit: TemperatureUnit,
    /// A field saying which unit this message uses (Hikvision's `thermometryUnit`); values
    /// not in `unit_map`, or the field missing, mean `unit`.
    pub unit_field: Option<FieldNames>,
    #[serde(default)]
    pub unit_map: BTreeMap<String, TemperatureUnit>,
    /// Raw values that mean "not measured" (many terminals send 0 with thermometry off).
    #[serde(default)]
    pub not_measured: Vec<f64>,
    /// A field where the terminal flags the temperature itself as abnormal.
    pub abnormal_field: Option<FieldNames>,
    /// Values of `abnormal_field` that mean abnormal.
    #[serde(default)]
    pub abnormal_values: Vec<String>,
}

/// A field and what its values mean.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapConfig<T> {
    pub field: FieldNames,
    pub map: BTreeMap<String, T>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotConfig {
    pub field: FieldNames,
}

// ---------------------------------------------------------------------------------------------
// The validated profile.

/// Where a message's terminal id comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceIdSource {
    /// The topic level at this position (the filter's `+`).
    TopicLevel(usize),
    Field(JsonPath),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FilterLevel {
    Exact(String),
    /// `+`: exactly one level.
    One,
    /// `#`: this level and all below (last only).
    Rest,
}

#[derive(Debug, Clone)]
pub(crate) struct KindRule {
    pub field: FieldPath,
    pub map: BTreeMap<String, MessageKind>,
    pub otherwise: MessageKind,
    pub missing: MessageKind,
}

#[derive(Debug, Clone)]
pub(crate) struct OutcomeRule {
    pub field: FieldPath,
    pub map: BTreeMap<String, Option<PassageVerdict>>,
    pub otherwise: Option<PassageVerdict>,
}

#[derive(Debug, Clone)]
pub(crate) struct TimeRule {
    pub field: FieldPath,
    pub format: TimeFormat,
}

#[derive(Debug, Clone)]
pub(crate) struct MemberRule {
    pub field: FieldPath,
    pub stranger_values: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct TemperatureRule {
    pub field: FieldPath,
    pub unit: TemperatureUnit,
    pub unit_field: Option<FieldPath>,
    pub unit_map: BTreeMap<String, TemperatureUnit>,
    pub not_measured: Vec<f64>,
    pub abnormal_field: Option<FieldPath>,
    pub abnormal_values: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct MapRule<T> {
    pub field: FieldPath,
    pub map: BTreeMap<String, T>,
}

/// A validated terminal profile, ready for [`decode`](super::decode()).
#[derive(Debug, Clone)]
pub struct TerminalProfile {
    pub name: String,
    pub description: String,
    /// The filter as written, to subscribe with.
    pub topic_filter: String,
    pub device_id: DeviceIdSource,
    pub(crate) filter: Vec<FilterLevel>,
    pub(crate) kind: Option<KindRule>,
    pub(crate) outcome: OutcomeRule,
    pub(crate) time: Option<TimeRule>,
    pub(crate) dedup: Vec<JsonPath>,
    /// The event key carries a member id (see [`DedupConfig::personal`]).
    pub dedup_personal: bool,
    pub(crate) member: Option<MemberRule>,
    pub(crate) temperature: Option<TemperatureRule>,
    pub(crate) mask: Option<MapRule<MaskState>>,
    pub(crate) direction: Option<MapRule<Direction>>,
    pub(crate) snapshot: Option<FieldPath>,
}

/// A topic this profile listens to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMatch {
    /// The terminal named by the topic; `None` when the profile reads the id from the payload
    /// (known only after [`decode`](super::decode())).
    pub terminal: Option<TerminalId>,
}

impl TerminalProfile {
    /// Whether `topic` is one of this profile's, and which terminal it names. A topic whose id
    /// level is not a valid [`TerminalId`] does not match.
    pub fn matches(&self, topic: &str) -> Option<TopicMatch> {
        let levels: Vec<&str> = topic.split('/').collect();
        // MQTT: wildcards at the first level never match the broker's `$SYS/…` topics.
        if topic.starts_with('$') && !matches!(self.filter.first(), Some(FilterLevel::Exact(_))) {
            return None;
        }
        let mut i = 0;
        for level in &self.filter {
            match level {
                FilterLevel::Rest => {
                    i = levels.len();
                    break;
                }
                FilterLevel::One => {
                    levels.get(i)?;
                }
                FilterLevel::Exact(text) => {
                    if levels.get(i) != Some(&text.as_str()) {
                        return None;
                    }
                }
            }
            i += 1;
        }
        if i != levels.len() {
            return None;
        }
        match &self.device_id {
            DeviceIdSource::TopicLevel(at) => {
                let id = TerminalId::new(levels.get(*at)?)?;
                Some(TopicMatch { terminal: Some(id) })
            }
            DeviceIdSource::Field(_) => Some(TopicMatch { terminal: None }),
        }
    }
}

impl TerminalProfile {
    /// A topic of this profile's that names `terminal` (its `+` and `#` levels filled with the
    /// id): how a message that did not come over MQTT — an HTTP push, a pulled record, from a
    /// terminal already known — is handed to [`decode`](fn@super::decode). A profile that reads
    /// the id from the payload (`device_id_field`) still does: the caller compares it with
    /// the terminal it expected.
    pub fn topic_for(&self, terminal: &TerminalId) -> String {
        self.filter
            .iter()
            .map(|level| match level {
                FilterLevel::Exact(text) => text.as_str(),
                FilterLevel::One | FilterLevel::Rest => terminal.as_str(),
            })
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// Parses an MQTT topic filter, or says what is wrong with it.
fn parse_filter(text: &str) -> Result<Vec<FilterLevel>, String> {
    if text.is_empty() {
        return Err("topic_filter must not be empty".to_string());
    }
    if text.contains('\0') {
        return Err("topic_filter must not contain NUL".to_string());
    }
    let parts: Vec<&str> = text.split('/').collect();
    let mut levels = Vec::with_capacity(parts.len());
    for (n, part) in parts.iter().enumerate() {
        let level = match *part {
            "+" => FilterLevel::One,
            "#" if n + 1 == parts.len() => FilterLevel::Rest,
            "#" => return Err(format!("topic_filter {text:?}: '#' must be the last level")),
            p if p.contains(['+', '#']) => {
                return Err(format!(
                    "topic_filter {text:?}: a wildcard must fill a whole level, not {p:?}"
                ));
            }
            p => FilterLevel::Exact(p.to_string()),
        };
        levels.push(level);
    }
    Ok(levels)
}

impl TerminalProfileConfig {
    /// Checks the profile and parses its paths, or says every problem with it, section by
    /// section in the file's order.
    pub fn resolve(&self) -> Result<TerminalProfile, Vec<String>> {
        let mut problems = Vec::new();
        if self.name.trim().is_empty() || self.name.contains(char::is_whitespace) {
            problems.push(format!(
                "name must be one word without spaces, not {:?}",
                self.name
            ));
        }
        let filter = match parse_filter(&self.topic_filter) {
            Ok(f) => Some(f),
            Err(why) => {
                problems.push(why);
                None
            }
        };
        let device_id = self.device_id(filter.as_deref(), &mut problems);
        let kind = self.kind.as_ref().and_then(|k| k.rule(&mut problems));
        let outcome = self.outcome.rule(&mut problems);
        let time = self.time.as_ref().and_then(|t| {
            Some(TimeRule {
                field: field_path("time.field", &t.field, &mut problems)?,
                format: t.format,
            })
        });
        let dedup = match &self.dedup {
            None => Vec::new(),
            Some(d) => d.paths(&mut problems),
        };
        let member = self.member.as_ref().and_then(|m| m.rule(&mut problems));
        let temperature = self
            .temperature
            .as_ref()
            .and_then(|t| t.rule(&mut problems));
        let mask = self
            .mask
            .as_ref()
            .and_then(|m| m.rule("mask", &mut problems));
        let direction = self
            .direction
            .as_ref()
            .and_then(|d| d.rule("direction", &mut problems));
        let snapshot = self
            .snapshot
            .as_ref()
            .and_then(|s| field_path("snapshot.field", &s.field, &mut problems));

        match (filter, device_id, outcome) {
            (Some(filter), Some(device_id), Some(outcome)) if problems.is_empty() => {
                Ok(TerminalProfile {
                    name: self.name.clone(),
                    description: self.description.clone(),
                    topic_filter: self.topic_filter.clone(),
                    device_id,
                    filter,
                    kind,
                    outcome,
                    time,
                    dedup,
                    dedup_personal: self.dedup.as_ref().is_some_and(|d| d.personal),
                    member,
                    temperature,
                    mask,
                    direction,
                    snapshot,
                })
            }
            _ => Err(problems),
        }
    }

    /// Where the terminal id comes from: `device_id_field`, or else the filter's one `+`.
    /// `None` (with a problem said, unless the filter itself was the problem) when neither.
    fn device_id(
        &self,
        filter: Option<&[FilterLevel]>,
        problems: &mut Vec<String>,
    ) -> Option<DeviceIdSource> {
        match (&self.device_id_field, filter) {
            (Some(text), _) => {
                json_path("device_id_field", text, problems).map(DeviceIdSource::Field)
            }
            (None, Some(levels)) => {
                let plus: Vec<usize> = levels
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| **l == FilterLevel::One)
                    .map(|(i, _)| i)
                    .collect();
                match plus[..] {
                    [at] => Some(DeviceIdSource::TopicLevel(at)),
                    _ => {
                        problems.push(format!(
                            "topic_filter {:?} must have exactly one '+' (the terminal id) \
                             when device_id_field is not set; it has {}",
                            self.topic_filter,
                            plus.len()
                        ));
                        None
                    }
                }
            }
            (None, None) => None,
        }
    }
}

/// A single path at `key`, or a problem said.
fn json_path(key: &str, text: &str, problems: &mut Vec<String>) -> Option<JsonPath> {
    match JsonPath::parse(text) {
        Ok(p) => Some(p),
        Err(why) => {
            problems.push(format!("{key}: {why}"));
            None
        }
    }
}

/// A field (one path or alternatives) at `key`, or a problem said.
fn field_path(key: &str, names: &FieldNames, problems: &mut Vec<String>) -> Option<FieldPath> {
    match FieldPath::parse(&names.texts()) {
        Ok(p) => Some(p),
        Err(why) => {
            problems.push(format!("{key}: {why}"));
            None
        }
    }
}

impl KindConfig {
    fn rule(&self, problems: &mut Vec<String>) -> Option<KindRule> {
        let field = field_path("kind.field", &self.field, problems);
        if self.map.is_empty() && self.otherwise == self.missing {
            problems.push(
                "kind: with an empty map and otherwise = missing every message is the same \
                 kind; drop [kind] or say how kinds differ"
                    .to_string(),
            );
        }
        if !self
            .map
            .values()
            .chain([&self.otherwise, &self.missing])
            .any(|v| *v == MessageKind::Passage)
        {
            problems
                .push("kind: no value is a \"passage\", so nothing would be decoded".to_string());
        }
        Some(KindRule {
            field: field?,
            map: self.map.clone(),
            otherwise: self.otherwise,
            missing: self.missing,
        })
    }
}

impl OutcomeConfig {
    fn rule(&self, problems: &mut Vec<String>) -> Option<OutcomeRule> {
        let field = field_path("outcome.field", &self.field, problems);
        if self.map.is_empty() {
            problems.push("outcome.map must not be empty".to_string());
        } else if self
            .map
            .values()
            .chain([&self.otherwise])
            .all(|c| *c == OutcomeCode::Ignore)
        {
            problems.push(
                "outcome.map maps every code to \"ignore\", so no passage would be recorded"
                    .to_string(),
            );
        }
        field.map(|field| OutcomeRule {
            field,
            map: self
                .map
                .iter()
                .map(|(k, v)| (k.clone(), v.verdict()))
                .collect(),
            otherwise: self.otherwise.verdict(),
        })
    }
}

impl DedupConfig {
    fn paths(&self, problems: &mut Vec<String>) -> Vec<JsonPath> {
        if self.fields.is_empty() {
            problems.push("dedup.fields must name at least one field".to_string());
        }
        self.fields
            .iter()
            .enumerate()
            .filter_map(|(i, f)| json_path(&format!("dedup.fields[{i}]"), f, problems))
            .collect()
    }
}

impl MemberConfig {
    fn rule(&self, problems: &mut Vec<String>) -> Option<MemberRule> {
        if self.stranger_values.iter().any(|v| v.is_empty()) {
            problems.push("member.stranger_values must not contain an empty value".to_string());
        }
        Some(MemberRule {
            field: field_path("member.field", &self.field, problems)?,
            stranger_values: self.stranger_values.clone(),
        })
    }
}

impl TemperatureConfig {
    fn rule(&self, problems: &mut Vec<String>) -> Option<TemperatureRule> {
        let value_field = field_path("temperature.field", &self.field, problems);
        let unit_field = match &self.unit_field {
            Some(f) => field_path("temperature.unit_field", f, problems),
            None => {
                if !self.unit_map.is_empty() {
                    problems.push(
                        "temperature.unit_map needs temperature.unit_field to read from"
                            .to_string(),
                    );
                }
                None
            }
        };
        if self.unit_field.is_some() && self.unit_map.is_empty() {
            problems.push("temperature.unit_map must not be empty with unit_field".to_string());
        }
        let abnormal_field = match &self.abnormal_field {
            Some(f) => {
                if self.abnormal_values.is_empty() {
                    problems.push(
                        "temperature.abnormal_values must list the values that mean abnormal"
                            .to_string(),
                    );
                }
                field_path("temperature.abnormal_field", f, problems)
            }
            None => {
                if !self.abnormal_values.is_empty() {
                    problems.push(
                        "temperature.abnormal_values needs temperature.abnormal_field".to_string(),
                    );
                }
                None
            }
        };
        if self.not_measured.iter().any(|v| !v.is_finite()) {
            problems.push("temperature.not_measured values must be finite numbers".to_string());
        }
        Some(TemperatureRule {
            field: value_field?,
            unit: self.unit,
            unit_field,
            unit_map: self.unit_map.clone(),
            not_measured: self.not_measured.clone(),
            abnormal_field,
            abnormal_values: self.abnormal_values.clone(),
        })
    }
}

impl<T: Copy> MapConfig<T> {
    /// The rule of the `[key]` section (`mask`, `direction`).
    fn rule(&self, key: &str, problems: &mut Vec<String>) -> Option<MapRule<T>> {
        if self.map.is_empty() {
            problems.push(format!("{key}.map must not be empty"));
        }
        Some(MapRule {
            field: field_path(&format!("{key}.field"), &self.field, problems)?,
            map: self.map.clone(),
        })
    }
}

/// Parses and validates one profile file's text; every problem is prefixed with the profile's
/// name when the file got far enough to have one.
pub fn parse_terminal_profile(text: &str) -> Result<TerminalProfile, Vec<String>> {
    match toml::from_str::<TerminalProfileConfig>(text) {
        Ok(raw) => raw.resolve().map_err(|list| {
            list.into_iter()
                .map(|message| format!("terminal profile {:?}: {message}", raw.name))
                .collect()
        }),
        Err(error) => Err(vec![error.message().to_string()]),
    }
}

/// Every terminal profile known to a config, by name.
#[derive(Debug, Default, Clone)]
pub struct TerminalProfiles {
    profiles: BTreeMap<String, TerminalProfile>,
}

impl TerminalProfiles {
    /// The shipped profiles. They are checked by a unit test, so a problem here cannot reach
    /// a tested build; should one appear anyway, that profile is left out and [`load`]
    /// reports it.
    ///
    /// [`load`]: TerminalProfiles::load
    pub fn builtin() -> Self {
        Self::load(&[]).0
    }

    /// Loads the shipped profiles and those in `dirs` (`*.toml`, in name order). Problems are
    /// returned as `(where, message)` pairs so the caller can report them with the config's
    /// own errors.
    pub fn load(dirs: &[&Path]) -> (Self, Vec<(String, String)>) {
        let mut set = TerminalProfiles::default();
        let mut problems = Vec::new();
        for (file, text) in BUILTIN {
            set.add_text(
                &format!("built-in terminal profile {file}"),
                text,
                &mut problems,
            );
        }
        for (origin, text) in
            crate::config::profile::read_profile_dirs(dirs, "terminal profile", &mut problems)
        {
            set.add_text(&origin, &text, &mut problems);
        }
        (set, problems)
    }

    fn add_text(&mut self, origin: &str, text: &str, problems: &mut Vec<(String, String)>) {
        match parse_terminal_profile(text) {
            Ok(profile) => {
                self.profiles.insert(profile.name.clone(), profile);
            }
            Err(list) => {
                problems.extend(list.into_iter().map(|m| (origin.to_string(), m)));
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&TerminalProfile> {
        self.profiles.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &TerminalProfile> {
        self.profiles.values()
    }

    pub fn len(&self) -> usize {
        self.profiles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        name = "t"
        topic_filter = "t/+/e"
        [outcome]
        field = "code"
        map = { "1" = "pass" }
    "#;

    #[test]
    fn shipped_profiles_all_load_and_are_named_after_their_files() {
        let (set, problems) = TerminalProfiles::load(&[]);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(set.len(), BUILTIN.len());
        for (file, _) in BUILTIN {
            assert!(
                set.get(file).is_some(),
                "{file} is not named after its file"
            );
        }
    }

    #[test]
    fn a_profile_names_a_topic_of_its_own_for_a_known_terminal() {
        let id = TerminalId::new("T-9").expect("valid");
        let plus = parse_terminal_profile(MINIMAL).expect("valid");
        assert_eq!(plus.topic_for(&id), "t/T-9/e");
        assert!(plus.matches(&plus.topic_for(&id)).is_some());
        let hash = parse_terminal_profile(
            &MINIMAL
                .replace("t/+/e", "u/#")
                .replace("[outcome]", "device_id_field = \"d\"\n[outcome]"),
        )
        .expect("valid");
        assert!(hash.matches(&hash.topic_for(&id)).is_some());
    }

    #[test]
    fn a_field_may_be_one_path_or_a_list_of_alternatives() {
        let listed = MINIMAL.replace("field = \"code\"", "field = [\"event.code\", \"code\"]");
        let p = parse_terminal_profile(&listed).expect("alternatives");
        assert_eq!(p.outcome.field.to_string(), "event.code|code");
        let one = parse_terminal_profile(MINIMAL).expect("one path");
        assert_eq!(one.outcome.field.to_string(), "code");
        for (bad, needle) in [
            ("field = []", "outcome.field"),
            ("field = [\"a\", \"b..c\"]", "b..c"),
            ("field = 3", "list of alternative field paths"),
        ] {
            let problems =
                parse_terminal_profile(&MINIMAL.replace("field = \"code\"", bad)).expect_err(bad);
            assert!(problems[0].contains(needle), "{bad}: {problems:?}");
        }
    }

    #[test]
    fn a_minimal_profile_takes_the_terminal_id_from_the_plus_level() {
        let p = parse_terminal_profile(MINIMAL).expect("valid");
        assert_eq!(p.device_id, DeviceIdSource::TopicLevel(1));
        let m = p.matches("t/T1/e").expect("matches");
        assert_eq!(m.terminal.as_ref().map(TerminalId::as_str), Some("T1"));
        assert!(p.matches("t/T1").is_none());
        assert!(p.matches("t/T1/e/x").is_none());
        assert!(p.matches("u/T1/e").is_none());
        assert!(
            p.matches("t/a b/e").is_none(),
            "an invalid id does not match"
        );
    }

    #[test]
    fn hash_filters_match_any_depth_and_leave_the_id_to_the_payload() {
        let text = MINIMAL
            .replace("t/+/e", "u/#")
            .replace("[outcome]", "device_id_field = \"dev\"\n[outcome]");
        let p = parse_terminal_profile(&text).expect("valid");
        assert_eq!(p.matches("u"), Some(TopicMatch { terminal: None }));
        assert_eq!(p.matches("u/a/b/c"), Some(TopicMatch { terminal: None }));
        assert!(p.matches("v/a").is_none());
        let wild = parse_terminal_profile(
            &MINIMAL
                .replace("t/+/e", "+/x")
                .replace("[outcome]", "device_id_field = \"d\"\n[outcome]"),
        )
        .expect("valid");
        assert!(wild.matches("$SYS/x").is_none(), "wildcards skip $ topics");
        assert!(wild.matches("a/x").is_some());
    }

    #[test]
    fn unknown_keys_are_rejected_at_every_level() {
        let top = parse_terminal_profile(&format!("{MINIMAL}\nqos = 1"));
        assert!(top.expect_err("top")[0].contains("qos"));
        let inner = parse_terminal_profile(&MINIMAL.replace("map =", "mapp = {}\nmap ="));
        assert!(inner.expect_err("inner")[0].contains("mapp"));
        let bad_value = parse_terminal_profile(&MINIMAL.replace("\"pass\"", "\"passed\""));
        assert!(bad_value.expect_err("value")[0].contains("passed"));
    }

    #[test]
    fn every_problem_is_reported_at_once_with_the_profile_name() {
        let problems = parse_terminal_profile(
            r#"
            name = "broken"
            topic_filter = "a/+/+/b"
            [outcome]
            field = "x..y"
            map = {}
            [mask]
            field = "m"
            map = {}
            [temperature]
            field = "t[0"
            unit = "celsius"
            abnormal_values = ["1"]
            [dedup]
            fields = []
            "#,
        )
        .expect_err("broken");
        assert_eq!(problems.len(), 7, "{problems:#?}");
        assert!(
            problems.iter().all(|p| p.contains("\"broken\"")),
            "{problems:#?}"
        );
        for needle in [
            "exactly one '+'",
            "outcome.field",
            "outcome.map must not be empty",
            "mask.map",
            "temperature.field",
            "abnormal_values needs",
            "dedup.fields",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(needle)),
                "{needle}: {problems:#?}"
            );
        }
    }

    /// Every check `resolve` makes, tripped by two profiles, with the exact words and order
    /// of the problems (validate prints them as they come).
    #[test]
    fn every_check_says_its_problem_in_a_fixed_order() {
        let first = parse_terminal_profile(
            r#"
            name = "bad name"
            topic_filter = "a/+/+/b"
            [kind]
            field = "k..x"
            [outcome]
            field = "x..y"
            map = {}
            [time]
            field = "t..x"
            format = "rfc3339"
            [dedup]
            fields = []
            [member]
            field = "m..x"
            stranger_values = [""]
            [temperature]
            field = "t[0"
            unit = "celsius"
            unit_map = { F = "fahrenheit" }
            not_measured = [nan]
            abnormal_values = ["1"]
            [mask]
            field = "m"
            map = {}
            [direction]
            field = "d..x"
            map = {}
            [snapshot]
            field = "s..x"
            "#,
        )
        .expect_err("broken");
        let second = parse_terminal_profile(
            r#"
            name = "second"
            topic_filter = ""
            device_id_field = "d..x"
            [outcome]
            field = "c"
            map = { "1" = "ignore" }
            [dedup]
            fields = ["ok", "b..x"]
            [temperature]
            field = "t"
            unit = "celsius"
            unit_field = "u..x"
            abnormal_field = "a"
            "#,
        )
        .expect_err("broken");
        let named = |name: &str, problems: &[&str]| -> Vec<String> {
            problems
                .iter()
                .map(|p| format!("terminal profile {name:?}: {p}"))
                .collect()
        };
        assert_eq!(
            first,
            named(
                "bad name",
                &[
                    "name must be one word without spaces, not \"bad name\"",
                    "topic_filter \"a/+/+/b\" must have exactly one '+' (the terminal id) when device_id_field is not set; it has 2",
                    "kind.field: path \"k..x\" has an empty segment",
                    "kind: with an empty map and otherwise = missing every message is the same kind; drop [kind] or say how kinds differ",
                    "kind: no value is a \"passage\", so nothing would be decoded",
                    "outcome.field: path \"x..y\" has an empty segment",
                    "outcome.map must not be empty",
                    "time.field: path \"t..x\" has an empty segment",
                    "dedup.fields must name at least one field",
                    "member.stranger_values must not contain an empty value",
                    "member.field: path \"m..x\" has an empty segment",
                    "temperature.field: path \"t[0\" has a '[' without its ']'",
                    "temperature.unit_map needs temperature.unit_field to read from",
                    "temperature.abnormal_values needs temperature.abnormal_field",
                    "temperature.not_measured values must be finite numbers",
                    "mask.map must not be empty",
                    "direction.map must not be empty",
                    "direction.field: path \"d..x\" has an empty segment",
                    "snapshot.field: path \"s..x\" has an empty segment",
                ]
            ),
            "{first:#?}"
        );
        assert_eq!(
            second,
            named(
                "second",
                &[
                    "topic_filter must not be empty",
                    "device_id_field: path \"d..x\" has an empty segment",
                    "outcome.map maps every code to \"ignore\", so no passage would be recorded",
                    "dedup.fields[1]: path \"b..x\" has an empty segment",
                    "temperature.unit_field: path \"u..x\" has an empty segment",
                    "temperature.unit_map must not be empty with unit_field",
                    "temperature.abnormal_values must list the values that mean abnormal",
                ]
            ),
            "{second:#?}"
        );
    }

    #[test]
    fn bad_topic_filters_are_refused() {
        for (filter, needle) in [
            ("", "empty"),
            ("a/#/b", "last level"),
            ("a/b+/c", "whole level"),
            ("a/b", "exactly one '+'"),
        ] {
            let problems =
                parse_terminal_profile(&MINIMAL.replace("t/+/e", filter)).expect_err(filter);
            assert!(problems[0].contains(needle), "{filter}: {problems:?}");
        }
    }

    #[test]
    fn a_profile_that_can_never_record_a_passage_is_refused() {
        let all_ignored = parse_terminal_profile(&MINIMAL.replace("\"pass\"", "\"ignore\""));
        assert!(all_ignored.expect_err("ignored")[0].contains("every code"));
        let no_passage_kind = parse_terminal_profile(&format!(
            "{MINIMAL}\n[kind]\nfield = \"k\"\nmap = {{ a = \"heartbeat\" }}"
        ));
        assert!(no_passage_kind.expect_err("kind")[0].contains("no value is a"));
    }

    #[test]
    fn a_directory_profile_replaces_a_shipped_one_of_the_same_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = MINIMAL.replace("name = \"t\"", "name = \"uniubi-uface\"");
        std::fs::write(dir.path().join("uniubi-uface.toml"), text).expect("write");
        std::fs::write(dir.path().join("broken.toml"), "name = 3").expect("write");
        let (set, problems) = TerminalProfiles::load(&[dir.path()]);
        assert_eq!(
            set.get("uniubi-uface").map(|p| p.topic_filter.as_str()),
            Some("t/+/e")
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].0.ends_with("broken.toml"));
    }
}
