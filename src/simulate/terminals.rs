//! `hallgate simulate-terminals`: simulated face-recognition + temperature terminals, with
//! ground truth.
//!
//! Stands in for the hall's `[[terminals]]`: connects to the terminal broker as each configured
//! terminal, with that terminal's own login, and publishes what its vendor's terminal would —
//! passages (members and strangers, body temperatures, masks, snapshots), heartbeats, re-sent
//! records and malformed messages — at QoS 1 on the topic its profile listens to. What was
//! sent is written to a truth file, so a test can hold the gateway's terminal figures against
//! the facts.
//!
//! The pure part decides and encodes, with no I/O and no clock (the start time is passed in):
//! [`Script`] (which message when, from a seeded RNG), [`Encoder`] (a message to the vendor's
//! bytes), [`TerminalTally`] (the totals the gateway must arrive at) and [`check_decoded`] (what
//! [`terminals::decode`](crate::terminals::decode) must make of a message: the unit tests run
//! it over whole scripts, and [`run`] over samples against the config's own profiles before
//! it starts). The async shell — [`run`] — owns the MQTT connections (one driver task per
//! terminal), the pacing and the truth file.
//!
//! ```text
//! Script ─► ScriptStep { offset, messages } ─► Encoder ─► outbox ─► drive (QoS 1) ─► PUBACK
//!                                    └─► TerminalTally + truth line
//! ```
//!
//! A run goes: check the options, the snapshot and the config's profiles → connect as every
//! terminal (or fail naming it) → play the script in real time → wait for every PUBACK →
//! write the final truth line → disconnect. A lost connection is made again and what it had
//! not got acknowledged is sent again; the final line says how many such messages the broker
//! may have seen twice.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use jiff::Timestamp;
use jiff::tz::Offset;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until, timeout, timeout_at};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::config::terminals::{Secret, TerminalSource};
use crate::terminals::{
    DecodeOptions, Decoded, IgnoreReason, MaskState, MemberRef, PassageVerdict, RejectReason,
    TerminalId, TerminalProfile, Who, decode,
};

// ---------------------------------------------------------------------------------------------
// What is played.

/// Share of passages with an implausible reading (a hand, a hot drink, the sun on the sensor).
const SENSOR_ERROR_SHARE: f64 = 0.01;
/// Normal body temperatures, in tenths of °C.
const NORMAL_TENTHS: RangeInclusive<i32> = 360..=370;
/// Fevers, in tenths of °C.
const FEVER_TENTHS: RangeInclusive<i32> = 375..=395;
/// Implausible readings when the hall's plausible range is the default 30–45 °C; moved further
/// out when a config widens the range, so they stay implausible.
const SENSOR_ERROR_LOW_TENTHS: i32 = 250;
const SENSOR_ERROR_HIGH_TENTHS: i32 = 480;
/// Each terminal sends a heartbeat before its first passage and then at about this interval
/// (of simulated time), as the real ones do every half minute or so.
pub(super) const HEARTBEAT_EVERY_MS: i64 = 30_000;
/// Re-sends repeat one of the last this many passages: terminals re-send records whose
/// acknowledgement they missed, not last month's. Far below the gateway's dedup memory
/// (`terminals::dedup`, 4096 per terminal), so every re-send must be recognised.
const RESEND_WINDOW: usize = 64;
/// Member ids are the hall's membership numbers from here on, the same on every terminal
/// (members are enrolled on all of them), so one member seen in two rooms is one visitor.
/// Twelve digits: a test searching the gateway's output for them cannot hit one by chance.
const MEMBER_ID_BASE: u64 = 880_000_001_001;
const MAX_MEMBER_POOL: u32 = 1_000_000;
const MAX_RATE_PER_SEC: f64 = 10_000.0;
/// A longer run is a typo in `--passages` or `--rate-per-sec`.
const MAX_PLAY_SECS: f64 = 366.0 * 86_400.0;
/// Hikvision terminals in the hall run on China Standard Time and say so in `dateTime`.
const CHINA: Offset = Offset::constant(8);

/// The names simulated terminals put in their payloads, as real ones do. The gateway must
/// never read, store or send them; tests look for these strings in everything it puts out.
pub const FAKE_NAMES: &[&str] = &[
    "张伟",
    "王芳",
    "李娜",
    "刘洋",
    "陈静",
    "杨秀英",
    "赵磊",
    "黄敏",
    "周建华",
    "吴婷",
    "Zhang Wei",
    "Li Na",
    "Wang Fang",
    "Chen Jing",
];

/// "王芳" in GBK: some firmwares send names in the local code page instead of UTF-8.
pub(super) const GBK_NAME: &[u8] = &[0xCD, 0xF5, 0xB7, 0xBC];
/// Put where the GBK bytes go, then replaced in the serialised payload.
pub(super) const GBK_MARKER: &str = "@@gbk-name@@";
/// A JPEG header in the URL-safe base64 alphabet (`-`, `_`), which a snapshot field must not
/// use: a firmware with the wrong encoder.
pub(super) const URL_SAFE_SNAPSHOT: &str = "/9j/4AAQSkZJRgABAQ-_-_";
/// Of the `--bad-share`, the part spent on passages with a broken snapshot instead: the
/// gateway loses the picture but counts the passage, so these are passages, not bad payloads.
const BROKEN_SNAPSHOT_PART: f64 = 1.0 / 6.0;
/// Where an oversized payload's bulk goes for vendors without a snapshot field: a firmware
/// stuffing something large into its record.
const PADDING_FIELD: &str = "padding";

/// The vendors the simulator plays: a closed list, one per shipped terminal profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Vendor {
    HikvisionAcs,
    Httpv2Record,
    UniubiUface,
}

impl Vendor {
    pub const ALL: [Vendor; 3] = [
        Vendor::HikvisionAcs,
        Vendor::Httpv2Record,
        Vendor::UniubiUface,
    ];

    /// The vendor whose payloads a profile of this name decodes.
    pub fn for_profile(name: &str) -> Option<Vendor> {
        Vendor::ALL.into_iter().find(|v| v.profile_name() == name)
    }

    pub fn profile_name(self) -> &'static str {
        match self {
            Vendor::HikvisionAcs => "hikvision-acs",
            Vendor::Httpv2Record => "httpv2-record",
            Vendor::UniubiUface => "uniubi-uface",
        }
    }

    /// Hikvision reports an unknown face as minor 76, a failed verification, which is not a
    /// visit: its simulated terminals see members only.
    pub fn reports_strangers(self) -> bool {
        !matches!(self, Vendor::HikvisionAcs)
    }

    /// HTTPv2 records have no mask field.
    pub fn reports_mask(self) -> bool {
        !matches!(self, Vendor::Httpv2Record)
    }

    /// The payload field carrying the snapshot; Hikvision sends pictures as separate
    /// multipart parts, outside the JSON.
    pub fn snapshot_field(self) -> Option<&'static str> {
        match self {
            Vendor::HikvisionAcs => None,
            Vendor::Httpv2Record => Some("Picture"),
            Vendor::UniubiUface => Some("imgBase64"),
        }
    }

    /// The event time: every profile requires it, so taking it out makes a bad payload.
    fn time_field(self) -> &'static [&'static str] {
        match self {
            Vendor::HikvisionAcs => &["dateTime"],
            Vendor::Httpv2Record => &["RecordDate"],
            Vendor::UniubiUface => &["time"],
        }
    }

    fn temperature_field(self) -> &'static [&'static str] {
        match self {
            Vendor::HikvisionAcs => &["AccessControllerEvent", "currTemperature"],
            Vendor::Httpv2Record => &["BodyTemp"],
            Vendor::UniubiUface => &["temperature"],
        }
    }

    /// A free-text field where a firmware's non-UTF-8 text shows up: the name where there is
    /// one, the photo path (with a Chinese directory name) on Uniubi, which sends no name.
    fn text_field(self) -> &'static [&'static str] {
        match self {
            Vendor::HikvisionAcs => &["AccessControllerEvent", "name"],
            Vendor::Httpv2Record => &["Name"],
            Vendor::UniubiUface => &["path"],
        }
    }
}

/// One simulated terminal: a configured terminal and how it speaks.
#[derive(Debug, Clone)]
pub struct SimTerminal {
    pub id: TerminalId,
    pub vendor: Vendor,
    /// Index into `Config::rooms`.
    pub room: usize,
    /// Where it publishes: its profile's topic filter with its id filled in.
    pub topic: String,
    /// An invented LAN address for the payloads' address fields.
    pub ip: String,
}

impl SimTerminal {
    /// `position` (the terminal's place in the config) only varies the invented address.
    pub fn new(
        id: TerminalId,
        vendor: Vendor,
        room: usize,
        topic_filter: &str,
        position: usize,
    ) -> Self {
        let topic = topic_for(topic_filter, &id);
        SimTerminal {
            id,
            vendor,
            room,
            topic,
            ip: format!("192.168.50.{}", 101 + position % 150),
        }
    }
}

/// A profile's topic filter with every wildcard level replaced by the terminal's id:
/// `terminals/hikvision/+/events` → `terminals/hikvision/T1/events`; `terminals/uniubi/#` →
/// `terminals/uniubi/T1` (that profile reads the id from the payload, any topic below will do).
pub fn topic_for(filter: &str, id: &TerminalId) -> String {
    filter
        .split('/')
        .map(|level| match level {
            "+" | "#" => id.as_str(),
            other => other,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// A member's id as every terminal knows it.
pub fn member_id(member: u32) -> String {
    (MEMBER_ID_BASE + u64::from(member)).to_string()
}

/// The name a terminal shows for a member (several members share a name, as people do).
pub fn fake_name(member: u32) -> &'static str {
    FAKE_NAMES[member as usize % FAKE_NAMES.len()]
}

/// One person at one terminal, as the terminal records it.
#[derive(Debug, Clone, PartialEq)]
pub struct Passage {
    /// Index into the script's terminals.
    pub terminal: usize,
    /// The record's serial (`serialNo`, `RecordID`, `recordId`): the gateway's dedup key.
    pub serial: u64,
    /// Event time, Unix milliseconds.
    pub at_ms: i64,
    /// Index into the member pool; `None` for a stranger.
    pub member: Option<u32>,
    pub temperature_tenths: i32,
    /// What the gateway must conclude, by its own rules (`[terminal_broker]` thresholds).
    pub fever: bool,
    pub sensor_error: bool,
    pub mask_off: bool,
    /// The snapshot field holds something that is not base64 (only where the gateway reads
    /// snapshots): the passage still counts, without its picture.
    pub broken_snapshot: bool,
}

impl Passage {
    pub fn celsius(&self) -> f64 {
        f64::from(self.temperature_tenths) / 10.0
    }
}

/// A malformed message, each of a kind the gateway must reject (and count as rejected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BadPayload {
    /// A record cut off halfway.
    InvalidJson,
    /// A name in GBK instead of UTF-8.
    InvalidUtf8,
    /// The event time left out.
    MissingField,
    /// The temperature as an object.
    WrongType,
    /// One byte over `max_payload_bytes`.
    Oversized,
}

impl BadPayload {
    pub const ALL: [BadPayload; 5] = [
        BadPayload::InvalidJson,
        BadPayload::InvalidUtf8,
        BadPayload::MissingField,
        BadPayload::WrongType,
        BadPayload::Oversized,
    ];

    /// The [`RejectReason::as_str`] label the gateway must reject it with.
    pub fn reject_label(self) -> &'static str {
        match self {
            BadPayload::InvalidJson => "invalid_json",
            BadPayload::InvalidUtf8 => "invalid_utf8",
            BadPayload::MissingField => "missing_field",
            BadPayload::WrongType => "wrong_type",
            BadPayload::Oversized => "oversized",
        }
    }
}

/// Whether the gateway reads `vendor`'s snapshot field, so that a broken one shows.
fn snapshot_read(vendor: Vendor, options: &DecodeOptions) -> bool {
    vendor.snapshot_field().is_some() && options.decode_snapshot
}

/// One published message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A new passage: counts once.
    Passage(Passage),
    /// An earlier passage sent again, unchanged: must not count again.
    Resend(Passage),
    /// A malformed message built from a passage that never happened: must not count.
    Bad(Passage, BadPayload),
    /// A keep-alive: not a passage.
    Heartbeat { terminal: usize, at_ms: i64 },
}

impl Message {
    /// Index into the script's terminals.
    pub fn terminal(&self) -> usize {
        match self {
            Message::Passage(p) | Message::Resend(p) | Message::Bad(p, _) => p.terminal,
            Message::Heartbeat { terminal, .. } => *terminal,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Message::Passage(_) => "passage",
            Message::Resend(_) => "resend",
            Message::Bad(..) => "bad",
            Message::Heartbeat { .. } => "heartbeat",
        }
    }
}

/// What is published at one moment: due heartbeats, one passage, maybe a re-send and a bad
/// payload.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptStep {
    /// Since the start of the script.
    pub offset: Duration,
    /// The start time plus `offset`, Unix milliseconds.
    pub at_ms: i64,
    pub messages: Vec<Message>,
}

/// The shape of the traffic: the command line's options.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptOptions {
    pub seed: u64,
    pub passages: u64,
    pub rate_per_sec: f64,
    pub resend_share: f64,
    pub bad_share: f64,
    pub member_pool: u32,
    /// Of the passages at terminals that report strangers.
    pub stranger_share: f64,
    pub fever_share: f64,
    /// Of the passages at terminals that check masks.
    pub mask_off_share: f64,
}

impl ScriptOptions {
    /// Checks the options, or says every problem with them (named by their flags).
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        let rate = self.rate_per_sec;
        if !(rate.is_finite() && rate > 0.0 && rate <= MAX_RATE_PER_SEC) {
            problems.push(format!(
                "--rate-per-sec must be above 0 and at most {MAX_RATE_PER_SEC}, not {rate}"
            ));
        } else if self.passages as f64 / rate > MAX_PLAY_SECS {
            problems.push(format!(
                "--passages {} at --rate-per-sec {rate} would take more than a year",
                self.passages
            ));
        }
        for (flag, share) in [
            ("--resend-share", self.resend_share),
            ("--bad-share", self.bad_share),
            ("--stranger-share", self.stranger_share),
            ("--fever-share", self.fever_share),
            ("--mask-off-share", self.mask_off_share),
        ] {
            if !(0.0..=1.0).contains(&share) {
                problems.push(format!("{flag} must be between 0 and 1, not {share}"));
            }
        }
        if !(1..=MAX_MEMBER_POOL).contains(&self.member_pool) {
            problems.push(format!(
                "--member-pool must be between 1 and {MAX_MEMBER_POOL}, not {}",
                self.member_pool
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// What the gateway must make of a reading: `(fever, sensor_error)`, by the same rules as
/// `terminals::decode` (an implausible reading is never a fever).
fn judge(tenths: i32, options: &DecodeOptions) -> (bool, bool) {
    let celsius = f64::from(tenths) / 10.0;
    if (options.plausible_min_c..=options.plausible_max_c).contains(&celsius) {
        (celsius >= options.fever_threshold_c, false)
    } else {
        (false, true)
    }
}

/// Readings below and above the gateway's plausible range.
fn implausible_tenths(options: &DecodeOptions) -> (i32, i32) {
    let low_limit = (options.plausible_min_c * 10.0).floor() as i32;
    let high_limit = (options.plausible_max_c * 10.0).ceil() as i32;
    (
        SENSOR_ERROR_LOW_TENTHS.min(low_limit - 50),
        SENSOR_ERROR_HIGH_TENTHS.max(high_limit + 30),
    )
}

/// The seeded sequence of [`ScriptStep`]s: the same seed, terminals and options give the same
/// steps. Pure: times are the given start plus each step's offset.
#[derive(Debug)]
pub struct Script {
    rng: StdRng,
    vendors: Vec<Vendor>,
    options: ScriptOptions,
    decode: DecodeOptions,
    start_ms: i64,
    next_serial: u64,
    played: u64,
    /// The latest passages, for re-sends.
    recent: VecDeque<Passage>,
    last_heartbeat_ms: Vec<Option<i64>>,
    implausible: (i32, i32),
}

impl Script {
    /// A script for terminals of these vendors (by terminal index), judged by the gateway's
    /// `decode` options, starting at `start_ms` (Unix ms) with record serials from
    /// `serial_base` on.
    pub fn new(
        vendors: Vec<Vendor>,
        options: &ScriptOptions,
        decode: &DecodeOptions,
        start_ms: i64,
        serial_base: u64,
    ) -> Result<Self, Vec<String>> {
        options.validate()?;
        if vendors.is_empty() {
            return Err(vec!["there are no terminals to play".to_string()]);
        }
        Ok(Script {
            rng: StdRng::seed_from_u64(options.seed),
            last_heartbeat_ms: vec![None; vendors.len()],
            vendors,
            options: options.clone(),
            decode: decode.clone(),
            start_ms,
            next_serial: serial_base,
            played: 0,
            recent: VecDeque::with_capacity(RESEND_WINDOW),
            implausible: implausible_tenths(decode),
        })
    }

    fn serial(&mut self) -> u64 {
        let serial = self.next_serial;
        self.next_serial = self.next_serial.wrapping_add(1);
        serial
    }

    fn any_terminal(&mut self) -> usize {
        self.rng.random_range(0..self.vendors.len())
    }

    fn draw_passage(&mut self, terminal: usize, at_ms: i64) -> Passage {
        let vendor = self.vendors[terminal];
        let serial = self.serial();
        // Every draw is made whatever the vendor, so the sequence does not depend on which
        // vendors are configured beyond the terminal choice itself.
        let stranger = self.rng.random::<f64>() < self.options.stranger_share;
        let pool_member = self.rng.random_range(0..self.options.member_pool);
        let member = (!(stranger && vendor.reports_strangers())).then_some(pool_member);
        let category = self.rng.random::<f64>();
        let low_or_high = self.rng.random::<bool>();
        let temperature_tenths = if category < SENSOR_ERROR_SHARE {
            if low_or_high {
                self.implausible.0
            } else {
                self.implausible.1
            }
        } else if category < SENSOR_ERROR_SHARE + self.options.fever_share {
            self.rng.random_range(FEVER_TENTHS)
        } else {
            self.rng.random_range(NORMAL_TENTHS)
        };
        let mask_off =
            self.rng.random::<f64>() < self.options.mask_off_share && vendor.reports_mask();
        let broken_snapshot = self.rng.random::<f64>()
            < self.options.bad_share * BROKEN_SNAPSHOT_PART
            && snapshot_read(vendor, &self.decode);
        let (fever, sensor_error) = judge(temperature_tenths, &self.decode);
        Passage {
            terminal,
            serial,
            at_ms,
            member,
            temperature_tenths,
            fever,
            sensor_error,
            mask_off,
            broken_snapshot,
        }
    }

    fn draw_bad(&mut self, at_ms: i64) -> Message {
        let terminal = self.any_terminal();
        let kind = BadPayload::ALL[self.rng.random_range(0..BadPayload::ALL.len())];
        Message::Bad(self.draw_passage(terminal, at_ms), kind)
    }
}

impl Iterator for Script {
    type Item = ScriptStep;

    fn next(&mut self) -> Option<ScriptStep> {
        if self.played >= self.options.passages {
            return None;
        }
        let n = self.played;
        self.played += 1;
        // Validated: at most a year, so this neither overflows nor saturates.
        let offset = Duration::try_from_secs_f64(n as f64 / self.options.rate_per_sec)
            .unwrap_or(Duration::ZERO);
        let at_ms = self
            .start_ms
            .saturating_add(i64::try_from(offset.as_millis()).unwrap_or(i64::MAX));

        let mut messages = Vec::new();
        for (terminal, last) in self.last_heartbeat_ms.iter_mut().enumerate() {
            if last.is_none_or(|last| at_ms - last >= HEARTBEAT_EVERY_MS) {
                *last = Some(at_ms);
                messages.push(Message::Heartbeat { terminal, at_ms });
            }
        }
        let terminal = self.any_terminal();
        let passage = self.draw_passage(terminal, at_ms);
        if self.recent.len() == RESEND_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(passage.clone());
        messages.push(Message::Passage(passage));
        if self.rng.random::<f64>() < self.options.resend_share {
            let i = self.rng.random_range(0..self.recent.len());
            if let Some(earlier) = self.recent.get(i) {
                messages.push(Message::Resend(earlier.clone()));
            }
        }
        if self.rng.random::<f64>() < self.options.bad_share {
            messages.push(self.draw_bad(at_ms));
        }
        Some(ScriptStep {
            offset,
            at_ms,
            messages,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Vendor payloads.

/// Turns messages into the bytes a terminal of the vendor would publish.
#[derive(Debug, Clone)]
pub struct Encoder {
    max_payload_bytes: usize,
    snapshot: Option<SnapshotText>,
}

#[derive(Debug, Clone)]
struct SnapshotText {
    jpeg: Vec<u8>,
    base64: String,
}

impl Encoder {
    /// `max_payload_bytes` is the gateway's limit (for the oversized payloads); `jpeg` is
    /// attached to the passages of vendors with a snapshot field.
    pub fn new(max_payload_bytes: usize, jpeg: Option<Vec<u8>>) -> Self {
        Encoder {
            max_payload_bytes,
            snapshot: jpeg.map(|jpeg| SnapshotText {
                base64: BASE64.encode(&jpeg),
                jpeg,
            }),
        }
    }

    /// The attached JPEG, as it must come out of the gateway's decoder.
    pub fn snapshot(&self) -> Option<&[u8]> {
        self.snapshot.as_ref().map(|s| s.jpeg.as_slice())
    }

    pub fn encode(&self, terminal: &SimTerminal, message: &Message) -> Vec<u8> {
        match message {
            Message::Passage(p) | Message::Resend(p) => to_bytes(&self.passage(terminal, p)),
            Message::Heartbeat { at_ms, .. } => to_bytes(&heartbeat(terminal, *at_ms)),
            Message::Bad(p, kind) => self.bad(terminal, p, *kind),
        }
    }

    fn passage(&self, t: &SimTerminal, p: &Passage) -> Value {
        let celsius = p.celsius();
        // The terminal's own alarm: it knows no plausible range, only its threshold (the
        // hall's), so it flags a 48 °C sensor fault as abnormal too (never a 25 °C one).
        let flagged = p.fever || (p.sensor_error && p.celsius() > 37.0);
        let id = p.member.map(member_id);
        let name = p.member.map(fake_name);
        let snapshot = self.snapshot.as_ref();
        match t.vendor {
            Vendor::HikvisionAcs => json!({
                "ipAddress": t.ip,
                "portNo": 80,
                "protocol": "HTTP",
                "macAddress": "24:0f:9b:8c:41:aa",
                "channelID": 1,
                "dateTime": hikvision_time(p.at_ms),
                "activePostCount": 1,
                "eventType": "AccessControllerEvent",
                "eventState": "active",
                "eventDescription": "Access Controller Event",
                "AccessControllerEvent": {
                    "deviceName": t.id.as_str(),
                    "majorEventType": 5,
                    "subEventType": 75,
                    "name": name,
                    "cardReaderNo": 1,
                    "employeeNoString": id,
                    "serialNo": p.serial,
                    "userType": "normal",
                    "currentVerifyMode": "cardOrFaceOrPw",
                    "attendanceStatus": "undefined",
                    "mask": if p.mask_off { "no" } else { "yes" },
                    "helmet": "no",
                    "thermometryUnit": "celsius",
                    "currTemperature": celsius,
                    "isAbnomalTemperature": flagged,
                    "picturesNumber": 1,
                },
            }),
            Vendor::Httpv2Record => {
                let mut doc = json!({
                    "DeviceSN": t.id.as_str(),
                    "RecordID": p.serial,
                    // 3: face verified; 19: unregistered face.
                    "RecordType": if p.member.is_some() { 3 } else { 19 },
                    "RecordDate": p.at_ms.div_euclid(1000),
                    "UserID": id.as_deref().unwrap_or("0"),
                    "Code": "",
                    "Name": name.unwrap_or(""),
                    "IdentityCard": "",
                    "Job": "",
                    "Department": "",
                    "CardNum": "0",
                    "QRCode": "",
                    "IsEntry": 1,
                    "BodyTemp": p.temperature_tenths,
                    "PhotoLen": snapshot.map_or(0, |s| s.jpeg.len()),
                });
                if let Some(s) = snapshot {
                    set(&mut doc, &["Picture"], s.base64.as_str().into());
                }
                break_snapshot(&mut doc, t.vendor, p);
                doc
            }
            Vendor::UniubiUface => {
                let known = p.member.is_some();
                let mut doc = json!({
                    "deviceKey": t.id.as_str(),
                    "personId": id.as_deref().unwrap_or("STRANGERBABY"),
                    "recordId": p.serial.to_string(),
                    "time": p.at_ms.to_string(),
                    "type": if known { "face_0" } else { "face_2" },
                    "ip": t.ip,
                    "path": format!("/data/record/IdentifyRecords/{}_rgb.jpg", p.at_ms),
                    "searchScore": if known { "92.5" } else { "41.0" },
                    "livenessScore": "97.1",
                    "aliveType": "1",
                    "identifyType": if known { "1" } else { "2" },
                    "recType": 1,
                    "mask": if p.mask_off { "0" } else { "1" },
                    "temperature": format!("{celsius:.1}"),
                    "temperatureState": if flagged { "2" } else { "1" },
                    "temperatureUnit": "1",
                });
                if let Some(s) = snapshot {
                    set(&mut doc, &["imgBase64"], s.base64.as_str().into());
                }
                break_snapshot(&mut doc, t.vendor, p);
                doc
            }
        }
    }

    fn bad(&self, t: &SimTerminal, p: &Passage, kind: BadPayload) -> Vec<u8> {
        let vendor = t.vendor;
        let mut doc = self.passage(t, p);
        match kind {
            BadPayload::InvalidJson => {
                let text = doc.to_string();
                // Cut on a character boundary: a cut inside a name would be invalid UTF-8,
                // which is another reason.
                let mut cut = text.len() / 2;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.as_bytes()[..cut].to_vec()
            }
            BadPayload::InvalidUtf8 => {
                set(&mut doc, vendor.text_field(), GBK_MARKER.into());
                splice(to_bytes(&doc), GBK_MARKER.as_bytes(), GBK_NAME)
            }
            BadPayload::MissingField => {
                remove(&mut doc, vendor.time_field());
                to_bytes(&doc)
            }
            BadPayload::WrongType => {
                set(
                    &mut doc,
                    vendor.temperature_field(),
                    json!({ "value": p.celsius() }),
                );
                to_bytes(&doc)
            }
            BadPayload::Oversized => {
                let field = vendor.snapshot_field().unwrap_or(PADDING_FIELD);
                set(&mut doc, &[field], "".into());
                let base = to_bytes(&doc).len();
                // Exactly one byte over: the limit itself is allowed.
                let fill = (self.max_payload_bytes + 1).saturating_sub(base);
                set(&mut doc, &[field], "A".repeat(fill).into());
                to_bytes(&doc)
            }
        }
    }
}

/// A broken snapshot replaces the picture (or stands alone without `--snapshot`).
fn break_snapshot(doc: &mut Value, vendor: Vendor, p: &Passage) {
    if let (true, Some(field)) = (p.broken_snapshot, vendor.snapshot_field()) {
        set(doc, &[field], URL_SAFE_SNAPSHOT.into());
    }
}

fn heartbeat(t: &SimTerminal, at_ms: i64) -> Value {
    match t.vendor {
        Vendor::HikvisionAcs => json!({
            "ipAddress": t.ip,
            "portNo": 80,
            "protocol": "HTTP",
            "macAddress": "24:0f:9b:8c:41:aa",
            "channelID": 1,
            "dateTime": hikvision_time(at_ms),
            "activePostCount": 1,
            "eventType": "heartBeat",
            "eventState": "active",
            "eventDescription": "heartBeat",
        }),
        Vendor::Httpv2Record => json!({
            "SN": t.id.as_str(),
            "RelayStatus": 0,
            "KeepOpenStatus": 0,
            "DoorSensorStatus": 0,
            "LockDoorStatus": 0,
            "AlarmStatus": "",
        }),
        Vendor::UniubiUface => json!({
            "deviceKey": t.id.as_str(),
            "time": at_ms.to_string(),
            "ip": t.ip,
            "personCount": "212",
            "faceCount": "230",
            "version": "3.6203",
            "freeDiskSpace": "4546.56",
            "cpuUsageRate": "46.2",
            "cpuTemperature": "61.0",
            "memoryUsageRate": "58.5",
        }),
    }
}

/// `2024-03-05T09:12:33+08:00`: whole seconds, China's offset, as Hikvision writes it.
fn hikvision_time(at_ms: i64) -> String {
    Timestamp::from_second(at_ms.div_euclid(1000))
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .display_with_offset(CHINA)
        .to_string()
}

pub(super) fn to_bytes(doc: &Value) -> Vec<u8> {
    // A `Value` always serialises (its keys are strings).
    serde_json::to_vec(doc).unwrap_or_default()
}

/// Sets the field at `path` (its parents must exist).
pub(super) fn set(doc: &mut Value, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = doc;
    for key in parents {
        node = match node.get_mut(*key) {
            Some(next) => next,
            None => return,
        };
    }
    if let Some(object) = node.as_object_mut() {
        object.insert((*last).to_string(), value);
    }
}

pub(super) fn remove(doc: &mut Value, path: &[&str]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = doc;
    for key in parents {
        node = match node.get_mut(*key) {
            Some(next) => next,
            None => return,
        };
    }
    if let Some(object) = node.as_object_mut() {
        object.remove(*last);
    }
}

/// `bytes` with the first `marker` replaced by `with`.
pub(super) fn splice(bytes: Vec<u8>, marker: &[u8], with: &[u8]) -> Vec<u8> {
    match bytes.windows(marker.len()).position(|w| w == marker) {
        Some(at) => {
            let mut out = Vec::with_capacity(bytes.len() + with.len());
            out.extend_from_slice(&bytes[..at]);
            out.extend_from_slice(with);
            out.extend_from_slice(&bytes[at + marker.len()..]);
            out
        }
        None => bytes,
    }
}

// ---------------------------------------------------------------------------------------------
// What the gateway must make of it.

pub(super) fn timestamp(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn describe(outcome: &Result<Decoded, RejectReason>) -> String {
    match outcome {
        Ok(Decoded::Passage(_)) => "a passage".to_string(),
        Ok(Decoded::Ignored(i)) => format!("ignored ({})", i.reason.as_str()),
        Err(reason) => format!("rejected ({reason})"),
    }
}

/// Decodes `payload` (the encoding of `message` at `terminal`) as the gateway would, with
/// `profile` and `options`, and says what differs from what `message` means; `snapshot` is
/// the JPEG the encoder attached. Error texts name serials and fields, never member ids.
pub fn check_decoded(
    profile: &TerminalProfile,
    terminal: &SimTerminal,
    message: &Message,
    payload: &[u8],
    options: &DecodeOptions,
    snapshot: Option<&[u8]>,
) -> Result<(), String> {
    let at_ms = match message {
        Message::Passage(p) | Message::Resend(p) | Message::Bad(p, _) => p.at_ms,
        Message::Heartbeat { at_ms, .. } => *at_ms,
    };
    // Received a second after it happened.
    let outcome = decode(
        profile,
        &terminal.topic,
        payload,
        timestamp(at_ms.saturating_add(1000)),
        options,
    );
    let p = match message {
        Message::Heartbeat { .. } => {
            return match &outcome {
                Ok(Decoded::Ignored(i))
                    if i.reason == IgnoreReason::Heartbeat
                        && i.terminal.as_ref() == Some(&terminal.id) =>
                {
                    Ok(())
                }
                other => Err(format!(
                    "a heartbeat from {} came out {}",
                    terminal.id,
                    describe(other)
                )),
            };
        }
        Message::Bad(p, kind) => {
            return match &outcome {
                Err(reason) if reason.as_str() == kind.reject_label() => Ok(()),
                other => Err(format!(
                    "a {} payload (serial {}) came out {}",
                    kind.reject_label(),
                    p.serial,
                    describe(other)
                )),
            };
        }
        Message::Passage(p) | Message::Resend(p) => p,
    };
    let d = match outcome {
        Ok(Decoded::Passage(d)) => d,
        other => {
            return Err(format!(
                "passage {} came out {}",
                p.serial,
                describe(&other)
            ));
        }
    };
    let vendor = terminal.vendor;
    let mut wrong = Vec::new();
    if d.terminal != terminal.id {
        wrong.push(format!("terminal ({})", d.terminal));
    }
    if d.device_clock_suspect || (d.at.as_millisecond() - p.at_ms).abs() >= 1000 {
        wrong.push(format!("time ({})", d.at));
    }
    let (who, verdict) = match p.member {
        Some(m) => (
            Who::Member(MemberRef::new(member_id(m))),
            PassageVerdict::Pass,
        ),
        None => (Who::Stranger, PassageVerdict::Stranger),
    };
    if d.who != who {
        wrong.push("member or stranger".to_string());
    }
    if d.verdict != verdict {
        wrong.push(format!("verdict ({})", d.verdict.as_str()));
    }
    let reading_ok = if p.sensor_error {
        d.sensor_error && d.temperature_c.is_none()
    } else {
        !d.sensor_error
            && d.temperature_c
                .is_some_and(|c| (c - p.celsius()).abs() < 0.05)
    };
    if !reading_ok {
        wrong.push(format!(
            "temperature ({:?}, sensor error {})",
            d.temperature_c, d.sensor_error
        ));
    }
    if d.fever != p.fever {
        wrong.push(format!("fever ({})", d.fever));
    }
    let mask = match (vendor.reports_mask(), p.mask_off) {
        (false, _) => MaskState::Unknown,
        (true, true) => MaskState::Off,
        (true, false) => MaskState::On,
    };
    if d.mask != mask {
        wrong.push(format!("mask ({:?})", d.mask));
    }
    if d.dedup_key.event != p.serial.to_string() {
        wrong.push(format!("dedup key ({})", d.dedup_key));
    }
    let read = snapshot_read(vendor, options);
    let expected_snapshot = snapshot.filter(|_| read && !p.broken_snapshot);
    if d.snapshot.as_ref().map(|s| s.bytes()) != expected_snapshot {
        wrong.push(format!("snapshot ({:?})", d.snapshot));
    }
    let snapshot_error = d.snapshot_error.as_ref().map(RejectReason::as_str);
    let expected_error = (read && p.broken_snapshot).then_some("bad_base64");
    if snapshot_error != expected_error {
        wrong.push(format!("snapshot error ({snapshot_error:?})"));
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "passage {} came out with a wrong {}",
            p.serial,
            wrong.join(", ")
        ))
    }
}

/// One message of every sort a terminal of this vendor sends, at `at_ms`.
pub fn sample_messages(vendor: Vendor, options: &DecodeOptions, at_ms: i64) -> Vec<Message> {
    let (low, high) = implausible_tenths(options);
    let mut serial = 0;
    let mut passage = |member: Option<u32>, tenths: i32, mask_off: bool| {
        serial += 1;
        let (fever, sensor_error) = judge(tenths, options);
        Passage {
            terminal: 0,
            serial,
            at_ms,
            member,
            temperature_tenths: tenths,
            fever,
            sensor_error,
            mask_off,
            broken_snapshot: false,
        }
    };
    let mut samples = vec![
        Message::Heartbeat { terminal: 0, at_ms },
        Message::Passage(passage(Some(0), 365, false)),
        Message::Passage(passage(Some(7), 385, false)),
        Message::Passage(passage(Some(3), low, false)),
        Message::Passage(passage(Some(4), high, false)),
    ];
    if vendor.reports_mask() {
        samples.push(Message::Passage(passage(Some(5), 366, true)));
    }
    if vendor.reports_strangers() {
        samples.push(Message::Passage(passage(None, 362, false)));
    }
    if snapshot_read(vendor, options) {
        let broken = Passage {
            broken_snapshot: true,
            ..passage(Some(8), 363, false)
        };
        samples.push(Message::Passage(broken));
    }
    let base = passage(Some(9), 364, false);
    for kind in BadPayload::ALL {
        samples.push(Message::Bad(base.clone(), kind));
    }
    samples
}

/// Checks that `profile` decodes what a simulated terminal of `terminal.vendor` sends.
pub fn self_check(
    profile: &TerminalProfile,
    terminal: &SimTerminal,
    encoder: &Encoder,
    options: &DecodeOptions,
    at_ms: i64,
) -> Result<(), String> {
    for message in sample_messages(terminal.vendor, options, at_ms) {
        let payload = encoder.encode(terminal, &message);
        check_decoded(
            profile,
            terminal,
            &message,
            &payload,
            options,
            encoder.snapshot(),
        )?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The truth.

/// The figures for one room or the hall.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TruthTotals {
    /// Distinct passages the gateway must accept (re-sends and bad payloads excluded).
    pub passages: u64,
    /// Passages by members.
    pub members: u64,
    /// Distinct members among them.
    pub unique_members: u64,
    pub strangers: u64,
    pub fevers: u64,
    pub sensor_errors: u64,
    pub mask_off: u64,
    /// Passages whose snapshot the gateway cannot use (they count all the same).
    pub bad_snapshots: u64,
    /// Messages repeating an earlier passage.
    pub resends: u64,
    /// Malformed messages the gateway must reject.
    pub bad: u64,
    pub heartbeats: u64,
}

#[derive(Debug, Clone, Default)]
struct RoomTally {
    totals: TruthTotals,
    members: BTreeSet<u32>,
}

impl RoomTally {
    fn record(&mut self, message: &Message) {
        let t = &mut self.totals;
        match message {
            Message::Passage(p) => {
                t.passages += 1;
                match p.member {
                    Some(m) => {
                        t.members += 1;
                        self.members.insert(m);
                    }
                    None => t.strangers += 1,
                }
                t.fevers += u64::from(p.fever);
                t.sensor_errors += u64::from(p.sensor_error);
                t.mask_off += u64::from(p.mask_off);
                t.bad_snapshots += u64::from(p.broken_snapshot);
            }
            Message::Resend(_) => t.resends += 1,
            Message::Bad(..) => t.bad += 1,
            Message::Heartbeat { .. } => t.heartbeats += 1,
        }
    }

    fn totals(&self) -> TruthTotals {
        TruthTotals {
            unique_members: self.members.len() as u64,
            ..self.totals
        }
    }
}

/// What was published, per room and for the hall.
#[derive(Debug, Clone)]
pub struct TerminalTally {
    rooms: Vec<RoomTally>,
    hall: RoomTally,
}

impl TerminalTally {
    pub fn new(rooms: usize) -> Self {
        TerminalTally {
            rooms: vec![RoomTally::default(); rooms],
            hall: RoomTally::default(),
        }
    }

    /// Counts a message published by a terminal in `room`.
    pub fn record(&mut self, room: usize, message: &Message) {
        self.hall.record(message);
        if let Some(tally) = self.rooms.get_mut(room) {
            tally.record(message);
        }
    }

    pub fn hall(&self) -> TruthTotals {
        self.hall.totals()
    }

    pub fn room(&self, room: usize) -> TruthTotals {
        self.rooms
            .get(room)
            .map(RoomTally::totals)
            .unwrap_or_default()
    }
}

/// A passage's facts in its truth line.
#[derive(Debug, Serialize)]
pub struct PassageFacts {
    /// The member id; `null` for a stranger. Names are never written.
    pub member: Option<String>,
    pub stranger: bool,
    /// The reading sent, plausible or not.
    pub temperature_c: f64,
    pub fever: bool,
    pub sensor_error: bool,
    pub mask_off: bool,
    pub bad_snapshot: bool,
}

/// One truth line per published message.
#[derive(Debug, Serialize)]
pub struct MessageLine<'a> {
    /// `passage`, `resend`, `bad` or `heartbeat`.
    pub kind: &'static str,
    pub terminal: &'a str,
    pub room: &'a str,
    /// When it was published (simulated: the start plus `offset_ms`), Unix milliseconds.
    pub t_ms: i64,
    /// Since the start; the same for the same seed.
    pub offset_ms: u64,
    /// The record serial (for a re-send, the original's); absent for heartbeats.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(flatten)]
    pub passage: Option<PassageFacts>,
    /// For bad payloads: the gateway's expected reject reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reject: Option<&'static str>,
}

impl<'a> MessageLine<'a> {
    pub fn new(
        terminal: &'a SimTerminal,
        room: &'a str,
        step: &ScriptStep,
        message: &Message,
    ) -> Self {
        let facts = |p: &Passage| PassageFacts {
            member: p.member.map(member_id),
            stranger: p.member.is_none(),
            temperature_c: p.celsius(),
            fever: p.fever,
            sensor_error: p.sensor_error,
            mask_off: p.mask_off,
            bad_snapshot: p.broken_snapshot,
        };
        let (event, passage, reject) = match message {
            Message::Passage(p) => (Some(p.serial), Some(facts(p)), None),
            Message::Resend(p) => (Some(p.serial), None, None),
            Message::Bad(p, kind) => (Some(p.serial), None, Some(kind.reject_label())),
            Message::Heartbeat { .. } => (None, None, None),
        };
        MessageLine {
            kind: message.kind(),
            terminal: terminal.id.as_str(),
            room,
            t_ms: step.at_ms,
            offset_ms: u64::try_from(step.offset.as_millis()).unwrap_or(u64::MAX),
            event: event.map(|e| e.to_string()),
            passage,
            reject,
        }
    }
}

/// `{"final": true, "totals": {"hall": {…}, "rooms": {"lobby": {…}, …}}, "redelivered": 0}`.
#[derive(Debug, Serialize)]
pub struct FinalLine<'a> {
    #[serde(rename = "final")]
    pub is_final: bool,
    pub totals: FinalTotals<'a>,
    /// Publishes sent again after a lost connection (0 on a clean run): the broker may have
    /// had them already, so the gateway may have seen up to this many messages twice — a
    /// passage is deduplicated, a heartbeat or bad payload is then counted twice.
    pub redelivered: u64,
}

/// Every room of the config appears, with zeros where no terminal stands, so a test never has
/// to guess whether a missing key means zero.
#[derive(Debug, Serialize)]
pub struct FinalTotals<'a> {
    pub hall: TruthTotals,
    pub rooms: BTreeMap<&'a str, TruthTotals>,
}

impl<'a> FinalLine<'a> {
    pub fn new(rooms: &[&'a str], tally: &TerminalTally, redelivered: u64) -> Self {
        FinalLine {
            is_final: true,
            redelivered,
            totals: FinalTotals {
                hall: tally.hall(),
                rooms: rooms
                    .iter()
                    .enumerate()
                    .map(|(i, room)| (*room, tally.room(i)))
                    .collect(),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The async shell.

/// Give up connecting (all terminals together) after this long.
const CONNECT_WITHIN: Duration = Duration::from_secs(10);
/// After the last publish, wait this long for the outstanding PUBACKs.
const ACK_WITHIN: Duration = Duration::from_secs(30);
/// A client that takes no publish for this long has a broker that stopped acknowledging.
const STALL_AFTER: Duration = Duration::from_secs(30);
const RECONNECT_DELAY: Duration = Duration::from_secs(1);
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
const DISCONNECT_WITHIN: Duration = Duration::from_secs(2);
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Publishes queued per terminal before the playback waits: when the broker is slow the
/// playback blocks; nothing is dropped.
const OUTBOX_CAPACITY: usize = 64;
/// Unacknowledged publishes per connection.
const INFLIGHT: u16 = 32;
/// Room in a packet for the topic and the MQTT header above the payload limit (an oversized
/// payload is one byte over it and must still reach the gateway to be rejected there).
const PACKET_OVERHEAD: usize = 4096;

/// `hallgate simulate-terminals`'s options.
#[derive(Debug, Clone)]
pub struct SimulateTerminalsOptions {
    /// `HOST:PORT` (or `mqtt://HOST:PORT`) of the terminal broker; the config's when `None`.
    pub broker: Option<String>,
    pub script: ScriptOptions,
    pub truth: Option<PathBuf>,
    /// A JPEG to attach to passages of vendors with a snapshot field.
    pub snapshot: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum SimulateTerminalsError {
    #[error("the config has no [[terminals]] to simulate")]
    NoTerminals,
    #[error("{}", .problems.join("; "))]
    Options { problems: Vec<String> },
    #[error("--broker {value:?} is not HOST:PORT")]
    BadBroker { value: String },
    #[error(
        "terminal {terminal} uses profile \"{profile}\", which the simulator cannot play; it plays {known}"
    )]
    UnknownProfile {
        terminal: String,
        profile: String,
        known: String,
    },
    #[error(
        "terminal {terminal}: profile \"{profile}\" does not decode what a simulated {profile} terminal sends ({problem}); the simulator plays the shipped profiles"
    )]
    ProfileMismatch {
        terminal: String,
        profile: String,
        problem: String,
    },
    #[error("cannot read snapshot {path}: {error}")]
    SnapshotRead { path: PathBuf, error: io::Error },
    #[error("snapshot {path} is not a JPEG (it does not start with FF D8 FF)")]
    SnapshotNotJpeg { path: PathBuf },
    #[error(
        "snapshot {path} makes passages of {bytes} bytes at {profile} terminals, over the terminal broker's max_payload_bytes ({limit}); use a smaller JPEG"
    )]
    SnapshotTooLarge {
        path: PathBuf,
        profile: &'static str,
        bytes: usize,
        limit: usize,
    },
    #[error("cannot connect to the terminal broker at {broker} as terminal {terminal}: {error}")]
    Connect {
        broker: String,
        terminal: String,
        error: String,
    },
    #[error("terminal {terminal} could not hand a publish to its MQTT client for {secs} s: {why}")]
    Stalled {
        terminal: String,
        secs: u64,
        why: String,
    },
    #[error(
        "{missing} of {total} publishes were not acknowledged by the broker within {secs} s; the truth file has no final line"
    )]
    Unacknowledged { missing: u64, total: u64, secs: u64 },
    #[error("cannot write truth file {path}: {error}")]
    Truth { path: PathBuf, error: io::Error },
}

/// Plays the config's terminals against the terminal broker until the script is done (or
/// `shutdown`), waits for every PUBACK, then writes the final truth line. See the module docs.
pub async fn run(
    config: &Config,
    options: SimulateTerminalsOptions,
    shutdown: CancellationToken,
) -> Result<(), SimulateTerminalsError> {
    let Some(broker) = config.terminal_broker.as_ref() else {
        return Err(SimulateTerminalsError::NoTerminals);
    };
    if config.terminals.is_empty() {
        return Err(SimulateTerminalsError::NoTerminals);
    }
    options
        .script
        .validate()
        .map_err(|problems| SimulateTerminalsError::Options { problems })?;
    let decode_options = &broker.decode;
    let (host, port) = broker_address(&broker.source, options.broker.as_deref())?;

    let mut terminals = Vec::with_capacity(config.terminals.len());
    let mut profiles = Vec::with_capacity(config.terminals.len());
    for (position, t) in config.terminals.iter().enumerate() {
        let unknown = || SimulateTerminalsError::UnknownProfile {
            terminal: t.id.to_string(),
            profile: t.profile.clone(),
            known: Vendor::ALL.map(Vendor::profile_name).join(", "),
        };
        let profile = broker.profiles.get(&t.profile).ok_or_else(unknown)?;
        let vendor = Vendor::for_profile(&t.profile).ok_or_else(unknown)?;
        terminals.push(SimTerminal::new(
            t.id.clone(),
            vendor,
            t.room,
            &profile.topic_filter,
            position,
        ));
        profiles.push(profile);
    }

    // Read once before anything runs; a blocking read of one small file is fine here.
    let jpeg = match &options.snapshot {
        Some(path) => Some(read_snapshot(path)?),
        None => None,
    };
    let encoder = Encoder::new(decode_options.max_payload_bytes, jpeg);
    let started = Timestamp::now();
    let start_ms = started.as_millisecond();
    if let Some(path) = &options.snapshot {
        check_snapshot_size(path, &terminals, &encoder, decode_options, start_ms)?;
    }
    // A hall may replace a shipped profile from its own directory; the simulator's payloads
    // are the shipped vendors', so find out now rather than from a wrong truth file.
    for (terminal, profile) in terminals.iter().zip(&profiles) {
        self_check(profile, terminal, &encoder, decode_options, start_ms).map_err(|problem| {
            SimulateTerminalsError::ProfileMismatch {
                terminal: terminal.id.to_string(),
                profile: profile.name.clone(),
                problem,
            }
        })?;
    }

    // Serials continue from the start time in milliseconds, as real terminals number their
    // records on and on: a second run against the same gateway (which remembers recent
    // serials) is then never taken for re-sends of the first.
    let serial_base = u64::try_from(start_ms).unwrap_or(0);
    let vendors = terminals.iter().map(|t| t.vendor).collect();
    let script = Script::new(
        vendors,
        &options.script,
        decode_options,
        start_ms,
        serial_base,
    )
    .map_err(|problems| SimulateTerminalsError::Options { problems })?;
    let mut truth = match &options.truth {
        Some(path) => Some(TruthFile::create(path)?),
        None => None,
    };

    let target = BrokerTarget {
        host,
        port,
        max_packet: decode_options.max_payload_bytes + PACKET_OVERHEAD,
    };
    let logins = config.terminals.iter().map(|t| t.login.clone()).collect();
    let Some(links) = connect_all(&terminals, logins, &target, &shutdown).await? else {
        tracing::info!("stopped before the terminals were connected; nothing was published");
        return Ok(());
    };
    tracing::info!(
        broker = %format!("{}:{}", target.host, target.port),
        terminals = terminals.len(),
        seed = options.script.seed,
        passages = options.script.passages,
        rate_per_sec = options.script.rate_per_sec,
        "connected as every terminal; playing passages"
    );

    let rooms: Vec<&str> = config.rooms.iter().map(|r| r.id.as_str()).collect();
    let mut player = Player {
        terminals: &terminals,
        rooms: &rooms,
        encoder: &encoder,
        links,
        tally: TerminalTally::new(rooms.len()),
        truth: truth.as_mut(),
        start: Instant::now(),
    };
    let completed = player.play(script, &shutdown).await?;
    if !completed {
        tracing::info!("stopping early; waiting for the broker to acknowledge what was sent");
    }
    let redelivered = player.await_acks().await?;
    let Player {
        links,
        tally,
        truth,
        ..
    } = player;
    if let Some(truth) = truth {
        truth.line(&FinalLine::new(&rooms, &tally, redelivered))?;
        truth.flush()?;
    }
    let hall = tally.hall();
    tracing::info!(
        passages = hall.passages,
        members = hall.members,
        unique_members = hall.unique_members,
        strangers = hall.strangers,
        fevers = hall.fevers,
        resends = hall.resends,
        bad = hall.bad,
        heartbeats = hall.heartbeats,
        redelivered,
        "every publish acknowledged; terminals done"
    );
    for link in links {
        link.close().await;
    }
    Ok(())
}

fn read_snapshot(path: &Path) -> Result<Vec<u8>, SimulateTerminalsError> {
    let jpeg = std::fs::read(path).map_err(|error| SimulateTerminalsError::SnapshotRead {
        path: path.to_path_buf(),
        error,
    })?;
    if !jpeg.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Err(SimulateTerminalsError::SnapshotNotJpeg {
            path: path.to_path_buf(),
        });
    }
    Ok(jpeg)
}

/// Passages carrying the snapshot must stay within the gateway's payload limit, or every one
/// of them would be rejected.
fn check_snapshot_size(
    path: &Path,
    terminals: &[SimTerminal],
    encoder: &Encoder,
    options: &DecodeOptions,
    at_ms: i64,
) -> Result<(), SimulateTerminalsError> {
    for terminal in terminals
        .iter()
        .filter(|t| t.vendor.snapshot_field().is_some())
    {
        let sample = sample_messages(terminal.vendor, options, at_ms);
        let largest = sample
            .iter()
            .filter(|m| matches!(m, Message::Passage(_)))
            .map(|m| encoder.encode(terminal, m).len())
            .max()
            .unwrap_or(0);
        if largest > options.max_payload_bytes {
            return Err(SimulateTerminalsError::SnapshotTooLarge {
                path: path.to_path_buf(),
                profile: terminal.vendor.profile_name(),
                bytes: largest,
                limit: options.max_payload_bytes,
            });
        }
    }
    Ok(())
}

/// `--broker`, or the config's terminal broker (the loopback address when it listens on all
/// interfaces).
fn broker_address(
    source: &TerminalSource,
    flag: Option<&str>,
) -> Result<(String, u16), SimulateTerminalsError> {
    let Some(text) = flag else {
        return Ok(match source {
            TerminalSource::Embedded { listen } => {
                let ip = match listen.ip() {
                    IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::from([127, 0, 0, 1]),
                    IpAddr::V6(ip) if ip.is_unspecified() => {
                        IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])
                    }
                    ip => ip,
                };
                (ip.to_string(), listen.port())
            }
            TerminalSource::External { host, port, .. } => (host.clone(), *port),
        });
    };
    let bad = || SimulateTerminalsError::BadBroker {
        value: text.to_string(),
    };
    if text.contains("://") {
        return match crate::config::parse_broker_url(text) {
            Ok(broker) if !broker.tls => Ok((broker.host, broker.port)),
            _ => Err(bad()),
        };
    }
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match port.parse::<u16>() {
        Ok(port) if port != 0 && !host.is_empty() => Ok((host.to_string(), port)),
        _ => Err(bad()),
    }
}

/// Where to connect and how: the same for every terminal but the login.
#[derive(Debug, Clone)]
struct BrokerTarget {
    host: String,
    port: u16,
    max_packet: usize,
}

/// What a terminal's connection driver reports; the latest value is all anyone needs.
#[derive(Debug, Clone, Default)]
struct LinkState {
    connected: bool,
    /// Publishes the broker has acknowledged.
    acked: u64,
    /// Publishes written before a connection was lost and sent again on the next one: the
    /// broker may have had them already, so the gateway may see them twice.
    redelivered: u64,
    last_error: Option<String>,
    /// The broker turned the login down: retrying will not help.
    refused: bool,
}

/// The player's end of one terminal's connection.
struct Link {
    /// Payloads to publish; bounded, so the playback waits when the broker is slow. `None`
    /// once closed.
    outbox: Option<mpsc::Sender<Vec<u8>>>,
    state: watch::Receiver<LinkState>,
    driver: JoinHandle<()>,
    /// Payloads handed to the driver.
    published: u64,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Link {
    fn open(
        terminal: &SimTerminal,
        login: Option<(String, Secret)>,
        target: &BrokerTarget,
    ) -> Self {
        let (outbox, rx) = mpsc::channel(OUTBOX_CAPACITY);
        let (report, state) = watch::channel(LinkState::default());
        let driver = tokio::spawn(drive(
            terminal.id.clone(),
            terminal.topic.clone(),
            login,
            target.clone(),
            rx,
            report,
        ));
        Link {
            outbox: Some(outbox),
            state,
            driver,
            published: 0,
        }
    }

    /// Closes the outbox, so the driver disconnects once everything is acknowledged, and
    /// gives it a moment to say goodbye.
    async fn close(mut self) {
        self.outbox = None;
        let _ = timeout(DISCONNECT_WITHIN, &mut self.driver).await;
    }
}

/// One terminal's publishes that are not acknowledged yet, oldest first.
///
/// Every connection is a new client: a lost one takes rumqttc's session state (packet ids,
/// queued requests, buffered events) with it, and what it had not got acknowledged goes
/// again, in order, on the next — as the uplink does, and as terminals re-send records
/// their server did not confirm.
#[derive(Debug, Default)]
struct Unacked {
    /// Waiting for a connection or for room in the window.
    waiting: VecDeque<Vec<u8>>,
    /// Handed to the client, packet id not known yet: rumqttc numbers packets as it writes
    /// them, in the order they were handed over.
    handed: VecDeque<Vec<u8>>,
    /// Written, waiting for the PUBACK, by packet id, with their place in the order.
    written: BTreeMap<u16, (u64, Vec<u8>)>,
    /// The order of writing, to put lost publishes back in sequence.
    next_place: u64,
}

impl Unacked {
    fn in_flight(&self) -> usize {
        self.handed.len() + self.written.len()
    }

    fn is_empty(&self) -> bool {
        self.waiting.is_empty() && self.in_flight() == 0
    }

    /// Hands waiting publishes to the client while the window has room.
    fn fill(&mut self, client: &AsyncClient, topic: &str) {
        while self.in_flight() < usize::from(INFLIGHT) {
            let Some(payload) = self.waiting.pop_front() else {
                return;
            };
            // The client's queue is larger than the window, so this only fails when the
            // connection is already going; the payload then waits for the next one.
            match client.try_publish(topic, QoS::AtLeastOnce, false, payload.clone()) {
                Ok(()) => self.handed.push_back(payload),
                Err(_) => {
                    self.waiting.push_front(payload);
                    return;
                }
            }
        }
    }

    fn written(&mut self, pkid: u16) {
        if let Some(payload) = self.handed.pop_front() {
            self.written.insert(pkid, (self.next_place, payload));
            self.next_place += 1;
        }
    }

    /// Whether `pkid` was one of ours (a duplicate PUBACK is not).
    fn acked(&mut self, pkid: u16) -> bool {
        self.written.remove(&pkid).is_some()
    }

    /// The connection is gone: everything in flight waits again, in the original order.
    /// Returns how many had been written (and may have reached the broker).
    fn requeue(&mut self) -> u64 {
        let mut written: Vec<(u64, Vec<u8>)> =
            std::mem::take(&mut self.written).into_values().collect();
        written.sort_by_key(|(place, _)| *place);
        let redelivered = written.len() as u64;
        let again: Vec<Vec<u8>> = written
            .into_iter()
            .map(|(_, payload)| payload)
            .chain(self.handed.drain(..))
            .collect();
        for payload in again.into_iter().rev() {
            self.waiting.push_front(payload);
        }
        redelivered
    }
}

// The simulator plays the terminals: these are the terminals' own MQTT clients, one per
// terminal with its login, not the gateway's uplink, which the clippy.toml rule keeps in
// `src/uplink`.
#[allow(clippy::disallowed_methods)]
fn terminal_client(
    id: &TerminalId,
    login: Option<&(String, Secret)>,
    target: &BrokerTarget,
) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(id.as_str(), target.host.as_str(), target.port);
    options.set_keep_alive(KEEP_ALIVE);
    // Redelivery is ours (see `Unacked`), so no broker session is needed.
    options.set_clean_session(true);
    options.set_inflight(INFLIGHT);
    options.set_max_packet_size(target.max_packet, target.max_packet);
    if let Some((user, password)) = login {
        options.set_credentials(user.as_str(), password.expose());
    }
    // Room above the window for the DISCONNECT.
    AsyncClient::new(options, usize::from(INFLIGHT) + 4)
}

/// Owns one terminal's connection: publishes what arrives on `outbox`, counts PUBACKs,
/// reconnects after errors and sends again what was not acknowledged. Ends once `outbox` is
/// closed and everything is acknowledged (or aborted by its [`Link`]).
async fn drive(
    id: TerminalId,
    topic: String,
    login: Option<(String, Secret)>,
    target: BrokerTarget,
    mut outbox: mpsc::Receiver<Vec<u8>>,
    report: watch::Sender<LinkState>,
) {
    let mut unacked = Unacked::default();
    let mut open = true;
    let mut ever_connected = false;
    loop {
        let (client, mut eventloop) = terminal_client(&id, login.as_ref(), &target);
        let mut connected = false;
        let error = loop {
            // Take more only while little waits, so memory stays bounded by the outbox.
            let room = unacked.waiting.len() < OUTBOX_CAPACITY;
            tokio::select! {
                event = eventloop.poll() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        connected = true;
                        if ever_connected {
                            tracing::info!(terminal = %id, "connected to the terminal broker again");
                        }
                        ever_connected = true;
                        report.send_modify(|s| {
                            s.connected = true;
                            s.last_error = None;
                        });
                        unacked.fill(&client, &topic);
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => unacked.written(pkid),
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        if unacked.acked(ack.pkid) {
                            report.send_modify(|s| s.acked += 1);
                        }
                        unacked.fill(&client, &topic);
                        if !open && unacked.is_empty() {
                            let _ = client.try_disconnect();
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    Err(error) => break error,
                },
                payload = outbox.recv(), if open && room => match payload {
                    Some(payload) => {
                        unacked.waiting.push_back(payload);
                        if connected {
                            unacked.fill(&client, &topic);
                        }
                    }
                    None => {
                        open = false;
                        if unacked.is_empty() {
                            if !connected {
                                return;
                            }
                            let _ = client.try_disconnect();
                        }
                    }
                },
            }
        };
        let redelivered = unacked.requeue();
        if connected {
            tracing::warn!(
                terminal = %id,
                error = %error,
                redelivered,
                "lost the terminal broker; reconnecting, unacknowledged publishes go again (the gateway may see the written ones twice)"
            );
        }
        let refused = matches!(error, ConnectionError::ConnectionRefused(_));
        report.send_modify(|s| {
            s.connected = false;
            s.refused |= refused;
            s.redelivered += redelivered;
            s.last_error = Some(error.to_string());
        });
        if !open && unacked.is_empty() {
            return;
        }
        sleep(RECONNECT_DELAY).await;
    }
}

/// Connects as every terminal and waits until each is accepted; `None` on shutdown.
async fn connect_all(
    terminals: &[SimTerminal],
    logins: Vec<Option<(String, Secret)>>,
    target: &BrokerTarget,
    shutdown: &CancellationToken,
) -> Result<Option<Vec<Link>>, SimulateTerminalsError> {
    let mut links: Vec<Link> = terminals
        .iter()
        .zip(logins)
        .map(|(t, login)| Link::open(t, login, target))
        .collect();
    let deadline = Instant::now() + CONNECT_WITHIN;
    for (link, terminal) in links.iter_mut().zip(terminals) {
        let connected = tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            answer = timeout_at(deadline, link.state.wait_for(|s| s.connected || s.refused)) => {
                matches!(answer, Ok(Ok(state)) if state.connected)
            }
        };
        if !connected {
            let error = link.state.borrow().last_error.clone();
            return Err(SimulateTerminalsError::Connect {
                broker: format!("{}:{}", target.host, target.port),
                terminal: terminal.id.to_string(),
                error: error
                    .unwrap_or_else(|| format!("no answer within {} s", CONNECT_WITHIN.as_secs())),
            });
        }
        tracing::info!(
            terminal = %terminal.id,
            profile = terminal.vendor.profile_name(),
            topic = %terminal.topic,
            "connected as the terminal"
        );
    }
    Ok(Some(links))
}

/// Plays a script onto the connections, the tally and the truth file.
struct Player<'a> {
    terminals: &'a [SimTerminal],
    rooms: &'a [&'a str],
    encoder: &'a Encoder,
    /// By terminal index.
    links: Vec<Link>,
    tally: TerminalTally,
    truth: Option<&'a mut TruthFile>,
    start: Instant,
}

impl Player<'_> {
    /// Publishes every step when it is due. `Ok(false)` when stopped by `shutdown`.
    async fn play(
        &mut self,
        script: Script,
        shutdown: &CancellationToken,
    ) -> Result<bool, SimulateTerminalsError> {
        let mut next_progress = self.start + PROGRESS_EVERY;
        for step in script {
            let due = self
                .start
                .checked_add(step.offset)
                .unwrap_or_else(Instant::now);
            loop {
                let now = Instant::now();
                // Checked here too, not only while waiting, so a playback that has fallen
                // behind still reports.
                if now >= next_progress {
                    self.progress();
                    next_progress = now + PROGRESS_EVERY;
                }
                if now >= due {
                    break;
                }
                if let Some(truth) = self.truth.as_deref_mut() {
                    truth.flush()?;
                }
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return Ok(false),
                    _ = sleep_until(due.min(next_progress)) => {}
                }
            }
            for message in &step.messages {
                let i = message.terminal();
                let terminal = &self.terminals[i];
                let payload = self.encoder.encode(terminal, message);
                if !publish(&mut self.links[i], terminal, payload, shutdown).await? {
                    return Ok(false);
                }
                self.tally.record(terminal.room, message);
                if let Some(truth) = self.truth.as_deref_mut() {
                    let room = self.rooms.get(terminal.room).copied().unwrap_or("");
                    truth.line(&MessageLine::new(terminal, room, &step, message))?;
                }
            }
        }
        Ok(true)
    }

    fn progress(&self) {
        let hall = self.tally.hall();
        let published: u64 = self.links.iter().map(|l| l.published).sum();
        let acked: u64 = self.links.iter().map(|l| l.state.borrow().acked).sum();
        tracing::info!(
            passages = hall.passages,
            resends = hall.resends,
            bad = hall.bad,
            heartbeats = hall.heartbeats,
            published,
            acked,
            "simulated terminals publishing"
        );
    }

    /// Waits until the broker has acknowledged every publish, or fails saying how many it
    /// did not. Returns how many were sent again after a lost connection.
    async fn await_acks(&mut self) -> Result<u64, SimulateTerminalsError> {
        let deadline = Instant::now() + ACK_WITHIN;
        for link in &mut self.links {
            let target = link.published;
            // Timing out (or a driver that ended) is counted below.
            let _ = timeout_at(deadline, link.state.wait_for(|s| s.acked >= target)).await;
        }
        let total: u64 = self.links.iter().map(|l| l.published).sum();
        let missing: u64 = self
            .links
            .iter()
            .map(|l| l.published.saturating_sub(l.state.borrow().acked))
            .sum();
        if missing > 0 {
            return Err(SimulateTerminalsError::Unacknowledged {
                missing,
                total,
                secs: ACK_WITHIN.as_secs(),
            });
        }
        Ok(self
            .links
            .iter()
            .map(|l| l.state.borrow().redelivered)
            .sum())
    }
}

/// Hands one publish to the terminal's connection; `Ok(false)` on shutdown.
async fn publish(
    link: &mut Link,
    terminal: &SimTerminal,
    payload: Vec<u8>,
    shutdown: &CancellationToken,
) -> Result<bool, SimulateTerminalsError> {
    let stalled = |why: String| SimulateTerminalsError::Stalled {
        terminal: terminal.id.to_string(),
        secs: STALL_AFTER.as_secs(),
        why,
    };
    let Some(outbox) = &link.outbox else {
        return Err(stalled("its connection is closed".to_string()));
    };
    let sent = tokio::select! {
        biased;
        _ = shutdown.cancelled() => return Ok(false),
        sent = timeout(STALL_AFTER, outbox.send(payload)) => sent,
    };
    match sent {
        Ok(Ok(())) => {
            link.published += 1;
            Ok(true)
        }
        Ok(Err(_)) => Err(stalled("its connection has ended".to_string())),
        Err(_) => {
            let why = link.state.borrow().last_error.clone();
            Err(stalled(why.unwrap_or_else(|| {
                "the broker stopped acknowledging".to_string()
            })))
        }
    }
}

/// The truth file, written through a buffer.
///
/// Plain blocking writes on the async thread, as in `simulate::truth`: each line goes into
/// the buffer, and a flush (whenever the playback waits) is one small write into the page
/// cache.
#[derive(Debug)]
struct TruthFile {
    path: PathBuf,
    out: BufWriter<File>,
    dirty: bool,
}

impl TruthFile {
    fn create(path: &Path) -> Result<Self, SimulateTerminalsError> {
        let file = File::create(path).map_err(|error| SimulateTerminalsError::Truth {
            path: path.to_path_buf(),
            error,
        })?;
        Ok(TruthFile {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            dirty: false,
        })
    }

    fn failed(&self, error: io::Error) -> SimulateTerminalsError {
        SimulateTerminalsError::Truth {
            path: self.path.clone(),
            error,
        }
    }

    fn line(&mut self, line: &impl Serialize) -> Result<(), SimulateTerminalsError> {
        let written = serde_json::to_writer(&mut self.out, line)
            .map_err(io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"));
        written.map_err(|e| self.failed(e))?;
        self.dirty = true;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SimulateTerminalsError> {
        if self.dirty {
            self.out.flush().map_err(|e| self.failed(e))?;
            self.dirty = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::terminals::profile::parse_terminal_profile;
    use crate::terminals::{Dedup, TerminalProfiles};

    const START_MS: i64 = 1_709_601_153_000; // 2024-03-05T01:12:33Z

    fn terminals() -> Vec<SimTerminal> {
        let profiles = TerminalProfiles::builtin();
        Vendor::ALL
            .iter()
            .enumerate()
            .map(|(i, vendor)| {
                let profile = profiles.get(vendor.profile_name()).expect("shipped");
                let id = TerminalId::new(&format!("T{i}-84E0F420")).expect("valid id");
                SimTerminal::new(id, *vendor, i, &profile.topic_filter, i)
            })
            .collect()
    }

    fn options(seed: u64, passages: u64) -> ScriptOptions {
        ScriptOptions {
            seed,
            passages,
            rate_per_sec: 5.0,
            resend_share: 0.1,
            bad_share: 0.05,
            member_pool: 40,
            stranger_share: 0.2,
            fever_share: 0.03,
            mask_off_share: 0.1,
        }
    }

    fn script(terminals: &[SimTerminal], options: &ScriptOptions) -> Script {
        Script::new(
            terminals.iter().map(|t| t.vendor).collect(),
            options,
            &DecodeOptions::default(),
            START_MS,
            85_000,
        )
        .expect("valid options")
    }

    fn profile(vendor: Vendor) -> TerminalProfile {
        TerminalProfiles::builtin()
            .get(vendor.profile_name())
            .expect("shipped")
            .clone()
    }

    const JPEG: &[u8] = &[
        0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00,
    ];

    #[test]
    fn every_vendor_passes_the_self_check_against_its_shipped_profile() {
        for jpeg in [None, Some(JPEG.to_vec())] {
            let encoder = Encoder::new(256 * 1024, jpeg);
            for t in terminals() {
                let result = self_check(
                    &profile(t.vendor),
                    &t,
                    &encoder,
                    &DecodeOptions::default(),
                    START_MS,
                );
                assert_eq!(result, Ok(()), "{}", t.vendor.profile_name());
            }
        }
    }

    #[test]
    fn every_message_of_a_long_script_decodes_to_what_the_truth_says() {
        let terminals = terminals();
        let encoder = Encoder::new(256 * 1024, Some(JPEG.to_vec()));
        let profiles: Vec<TerminalProfile> = terminals.iter().map(|t| profile(t.vendor)).collect();
        let heavy = ScriptOptions {
            resend_share: 0.3,
            bad_share: 0.3,
            fever_share: 0.2,
            mask_off_share: 0.3,
            ..options(11, 3000)
        };
        let options = DecodeOptions::default();
        let mut dedup = Dedup::default();
        let mut tally = TerminalTally::new(terminals.len());
        let mut counted = 0;
        let mut bad_kinds = HashSet::new();
        for step in script(&terminals, &heavy) {
            for message in &step.messages {
                let t = &terminals[message.terminal()];
                let payload = encoder.encode(t, message);
                let profile = &profiles[message.terminal()];
                let checked =
                    check_decoded(profile, t, message, &payload, &options, encoder.snapshot());
                assert_eq!(checked, Ok(()), "{message:?}");
                // Count as the gateway does: decode, then dedup.
                let now = timestamp(step.at_ms + 1000);
                if let Ok(Decoded::Passage(p)) = decode(profile, &t.topic, &payload, now, &options)
                    && dedup.first_seen(&p.dedup_key)
                {
                    counted += 1;
                }
                if let Message::Bad(_, kind) = message {
                    bad_kinds.insert(*kind);
                }
                tally.record(t.room, message);
            }
        }
        let hall = tally.hall();
        assert_eq!(hall.passages, 3000);
        assert_eq!(counted, hall.passages, "re-sends must count once");
        assert!(hall.resends > 700 && hall.bad > 700, "{hall:?}");
        assert_eq!(bad_kinds.len(), BadPayload::ALL.len(), "{bad_kinds:?}");
        assert!(hall.fevers > 400 && hall.sensor_errors > 5, "{hall:?}");
        assert!(hall.mask_off > 300 && hall.strangers > 200, "{hall:?}");
        assert!(hall.bad_snapshots > 50, "{hall:?}");
    }

    #[test]
    fn the_same_seed_gives_the_same_script_and_another_seed_another() {
        let terminals = terminals();
        let a: Vec<ScriptStep> = script(&terminals, &options(7, 200)).collect();
        let b: Vec<ScriptStep> = script(&terminals, &options(7, 200)).collect();
        let c: Vec<ScriptStep> = script(&terminals, &options(8, 200)).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn passages_are_paced_at_the_rate_with_heartbeats_first_and_every_half_minute() {
        let terminals = terminals();
        let steps: Vec<ScriptStep> = script(&terminals, &options(3, 400)).collect();
        assert_eq!(steps.len(), 400);
        assert_eq!(steps[5].offset, Duration::from_millis(1000));
        assert_eq!(steps[5].at_ms, START_MS + 1000);
        let heartbeats = |step: &ScriptStep| {
            step.messages
                .iter()
                .filter(|m| matches!(m, Message::Heartbeat { .. }))
                .count()
        };
        assert_eq!(heartbeats(&steps[0]), 3, "every terminal says it is up");
        assert_eq!(heartbeats(&steps[1]), 0);
        assert_eq!(heartbeats(&steps[150]), 3, "30 s later at 5 a second");
        assert_eq!(steps.iter().map(heartbeats).sum::<usize>(), 3 * 3);
        for step in &steps {
            let passages = step
                .messages
                .iter()
                .filter(|m| matches!(m, Message::Passage(_)));
            assert_eq!(passages.count(), 1);
        }
    }

    #[test]
    fn a_resend_repeats_an_earlier_passage_byte_for_byte() {
        let terminals = terminals();
        let encoder = Encoder::new(256 * 1024, None);
        let mut sent: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut resends = 0;
        for step in script(&terminals, &options(5, 500)) {
            for message in step.messages {
                let t = &terminals[message.terminal()];
                match &message {
                    Message::Passage(p) => {
                        sent.insert(p.serial, encoder.encode(t, &message));
                    }
                    Message::Resend(p) => {
                        resends += 1;
                        assert_eq!(sent.get(&p.serial), Some(&encoder.encode(t, &message)));
                    }
                    _ => {}
                }
            }
        }
        assert!(resends > 20, "{resends}");
    }

    #[test]
    fn members_repeat_so_unique_members_stay_below_the_pool_and_the_passages() {
        let terminals = terminals();
        let mut tally = TerminalTally::new(terminals.len());
        for step in script(&terminals, &options(9, 1000)) {
            for message in &step.messages {
                tally.record(terminals[message.terminal()].room, message);
            }
        }
        let hall = tally.hall();
        assert_eq!(hall.members + hall.strangers, hall.passages);
        assert_eq!(hall.unique_members, 40, "1000 passages visit every member");
        let rooms: Vec<TruthTotals> = (0..3).map(|i| tally.room(i)).collect();
        assert_eq!(rooms.iter().map(|r| r.passages).sum::<u64>(), hall.passages);
        assert_eq!(
            rooms[0].strangers, 0,
            "hikvision terminals see members only"
        );
        assert_eq!(rooms[1].mask_off, 0, "httpv2 terminals do not check masks");
        assert!(rooms.iter().all(|r| r.heartbeats > 0));
    }

    #[test]
    fn payloads_use_each_vendors_fields_units_and_times() {
        let terminals = terminals();
        let encoder = Encoder::new(256 * 1024, Some(JPEG.to_vec()));
        let p = Passage {
            terminal: 0,
            serial: 4242,
            at_ms: START_MS + 823,
            member: Some(2),
            temperature_tenths: 365,
            fever: false,
            sensor_error: false,
            mask_off: true,
            broken_snapshot: false,
        };
        let json = |t: &SimTerminal| -> Value {
            serde_json::from_slice(&encoder.encode(t, &Message::Passage(p.clone()))).expect("json")
        };
        let hik = json(&terminals[0]);
        assert_eq!(hik["dateTime"], "2024-03-05T09:12:33+08:00");
        assert_eq!(hik["AccessControllerEvent"]["currTemperature"], 36.5);
        assert_eq!(
            hik["AccessControllerEvent"]["employeeNoString"],
            member_id(2)
        );
        assert_eq!(hik["AccessControllerEvent"]["name"], "李娜");
        assert_eq!(hik["AccessControllerEvent"]["mask"], "no");
        let httpv2 = json(&terminals[1]);
        assert_eq!(httpv2["BodyTemp"], 365);
        assert_eq!(httpv2["RecordDate"], START_MS / 1000);
        assert_eq!(httpv2["RecordID"], 4242);
        assert_eq!(httpv2["Name"], "李娜");
        assert_eq!(httpv2["Picture"], BASE64.encode(JPEG));
        assert_eq!(httpv2["PhotoLen"], JPEG.len());
        let uniubi = json(&terminals[2]);
        assert_eq!(uniubi["time"], (START_MS + 823).to_string());
        assert_eq!(uniubi["temperature"], "36.5");
        assert_eq!(uniubi["recordId"], "4242");
        assert_eq!(uniubi["deviceKey"], terminals[2].id.as_str());
        assert_eq!(
            terminals[2].topic,
            format!("terminals/uniubi/{}", terminals[2].id)
        );
        assert_eq!(
            terminals[0].topic,
            format!("terminals/hikvision/{}/events", terminals[0].id)
        );
    }

    #[test]
    fn bad_payloads_are_rejected_for_their_own_reason() {
        let terminals = terminals();
        let encoder = Encoder::new(2048, Some(JPEG.to_vec()));
        let options = DecodeOptions {
            max_payload_bytes: 2048,
            ..DecodeOptions::default()
        };
        for t in &terminals {
            for message in sample_messages(t.vendor, &options, START_MS) {
                let Message::Bad(_, kind) = &message else {
                    continue;
                };
                let payload = encoder.encode(t, &message);
                if *kind == BadPayload::Oversized {
                    assert_eq!(payload.len(), 2049, "one byte over the limit");
                }
                if *kind == BadPayload::InvalidUtf8 {
                    assert!(payload.windows(GBK_NAME.len()).any(|w| w == GBK_NAME));
                }
                let result = decode(
                    &profile(t.vendor),
                    &t.topic,
                    &payload,
                    timestamp(START_MS),
                    &options,
                );
                assert_eq!(
                    result.err().map(|r| r.as_str()),
                    Some(kind.reject_label()),
                    "{} {kind:?}",
                    t.vendor.profile_name()
                );
            }
        }
    }

    #[test]
    fn a_broken_snapshot_costs_the_picture_but_the_passage_counts() {
        let terminals = terminals();
        let encoder = Encoder::new(256 * 1024, Some(JPEG.to_vec()));
        let defaults = DecodeOptions::default();
        for t in &terminals[1..] {
            let broken = Passage {
                terminal: 0,
                serial: 9,
                at_ms: START_MS,
                member: Some(1),
                temperature_tenths: 364,
                fever: false,
                sensor_error: false,
                mask_off: false,
                broken_snapshot: true,
            };
            let payload = encoder.encode(t, &Message::Passage(broken));
            let now = timestamp(START_MS + 1000);
            let Ok(Decoded::Passage(p)) =
                decode(&profile(t.vendor), &t.topic, &payload, now, &defaults)
            else {
                panic!(
                    "{}: a broken snapshot must not cost the passage",
                    t.vendor.profile_name()
                );
            };
            assert!(p.snapshot.is_none());
            assert_eq!(p.snapshot_error.map(|e| e.as_str()), Some("bad_base64"));
        }
        // Where the gateway does not read snapshots, nothing can be broken.
        let off = DecodeOptions {
            decode_snapshot: false,
            ..DecodeOptions::default()
        };
        let vendors = terminals.iter().map(|t| t.vendor).collect();
        let heavy = ScriptOptions {
            bad_share: 1.0,
            ..options(4, 300)
        };
        let script = Script::new(vendors, &heavy, &off, START_MS, 1).expect("valid");
        let broken = script
            .flat_map(|step| step.messages)
            .filter(|m| matches!(m, Message::Passage(p) if p.broken_snapshot))
            .count();
        assert_eq!(broken, 0);
    }

    #[test]
    fn names_go_into_payloads_but_never_into_the_truth() {
        let terminals = terminals();
        let encoder = Encoder::new(256 * 1024, None);
        let rooms = ["lobby", "reading", "health"];
        let mut tally = TerminalTally::new(rooms.len());
        let mut truth = String::new();
        let mut names_sent = 0;
        for step in script(&terminals, &options(2, 300)) {
            for message in &step.messages {
                let t = &terminals[message.terminal()];
                let payload = String::from_utf8_lossy(&encoder.encode(t, message)).into_owned();
                names_sent += usize::from(FAKE_NAMES.iter().any(|n| payload.contains(n)));
                tally.record(t.room, message);
                let line = MessageLine::new(t, rooms[t.room], &step, message);
                truth.push_str(&serde_json::to_string(&line).expect("serialises"));
            }
        }
        truth.push_str(&serde_json::to_string(&FinalLine::new(&rooms, &tally, 0)).expect("final"));
        assert!(names_sent > 150, "{names_sent}");
        for name in FAKE_NAMES {
            assert!(!truth.contains(name), "{name} in the truth");
        }
    }

    #[test]
    fn truth_lines_have_a_fixed_shape() {
        let t = &terminals()[2];
        let p = Passage {
            terminal: 2,
            serial: 77,
            at_ms: START_MS,
            member: None,
            temperature_tenths: 381,
            fever: true,
            sensor_error: false,
            mask_off: false,
            broken_snapshot: false,
        };
        let step = ScriptStep {
            offset: Duration::from_millis(1500),
            at_ms: START_MS + 1500,
            messages: Vec::new(),
        };
        let line = |m: &Message| {
            serde_json::to_string(&MessageLine::new(t, "health", &step, m)).expect("serialises")
        };
        assert_eq!(
            line(&Message::Passage(p.clone())),
            r#"{"kind":"passage","terminal":"T2-84E0F420","room":"health","t_ms":1709601154500,"offset_ms":1500,"event":"77","member":null,"stranger":true,"temperature_c":38.1,"fever":true,"sensor_error":false,"mask_off":false,"bad_snapshot":false}"#
        );
        assert_eq!(
            line(&Message::Resend(p.clone())),
            r#"{"kind":"resend","terminal":"T2-84E0F420","room":"health","t_ms":1709601154500,"offset_ms":1500,"event":"77"}"#
        );
        assert_eq!(
            line(&Message::Bad(p, BadPayload::Oversized)),
            r#"{"kind":"bad","terminal":"T2-84E0F420","room":"health","t_ms":1709601154500,"offset_ms":1500,"event":"77","reject":"oversized"}"#
        );
        assert_eq!(
            line(&Message::Heartbeat {
                terminal: 2,
                at_ms: START_MS
            }),
            r#"{"kind":"heartbeat","terminal":"T2-84E0F420","room":"health","t_ms":1709601154500,"offset_ms":1500}"#
        );
        let mut tally = TerminalTally::new(2);
        tally.record(
            1,
            &Message::Heartbeat {
                terminal: 2,
                at_ms: START_MS,
            },
        );
        let value =
            serde_json::to_value(FinalLine::new(&["lobby", "health"], &tally, 0)).expect("final");
        assert_eq!(value["final"], true);
        assert_eq!(value["redelivered"], 0);
        assert_eq!(value["totals"]["hall"]["heartbeats"], 1);
        assert_eq!(value["totals"]["rooms"]["health"]["heartbeats"], 1);
        assert_eq!(value["totals"]["rooms"]["lobby"]["passages"], 0);
        let keys: Vec<&String> = value["totals"]["hall"]
            .as_object()
            .expect("object")
            .keys()
            .collect();
        assert_eq!(
            keys,
            [
                "bad",
                "bad_snapshots",
                "fevers",
                "heartbeats",
                "mask_off",
                "members",
                "passages",
                "resends",
                "sensor_errors",
                "strangers",
                "unique_members"
            ]
        );
    }

    #[test]
    fn readings_are_judged_by_the_halls_thresholds() {
        let strict = DecodeOptions {
            fever_threshold_c: 36.5,
            plausible_min_c: 20.0,
            plausible_max_c: 50.0,
            ..DecodeOptions::default()
        };
        assert_eq!(judge(365, &strict), (true, false));
        assert_eq!(judge(364, &strict), (false, false));
        let (low, high) = implausible_tenths(&strict);
        assert!(low < 200 && high > 500, "{low} {high}");
        assert_eq!(judge(low, &strict), (false, true));
        assert_eq!(implausible_tenths(&DecodeOptions::default()), (250, 480));
        assert_eq!(judge(373, &DecodeOptions::default()), (true, false));
        for t in terminals() {
            let encoder = Encoder::new(256 * 1024, None);
            let result = self_check(&profile(t.vendor), &t, &encoder, &strict, START_MS);
            assert_eq!(result, Ok(()), "{}", t.vendor.profile_name());
        }
    }

    #[test]
    fn a_profile_that_reads_other_fields_fails_the_self_check() {
        let text = include_str!("../../firmware-config/terminals/hikvision-acs.toml").replace(
            "AccessControllerEvent.currTemperature",
            "AccessControllerEvent.temp",
        );
        let changed = parse_terminal_profile(&text).expect("still a valid profile");
        let t = &terminals()[0];
        let encoder = Encoder::new(256 * 1024, None);
        let problem = self_check(&changed, t, &encoder, &DecodeOptions::default(), START_MS)
            .expect_err("temperature no longer read");
        assert!(problem.contains("temperature"), "{problem}");
    }

    #[test]
    fn options_are_checked_and_every_problem_named_by_its_flag() {
        let bad = ScriptOptions {
            rate_per_sec: 0.0,
            resend_share: 1.5,
            bad_share: f64::NAN,
            member_pool: 0,
            ..options(1, 10)
        };
        let problems = bad.validate().expect_err("bad");
        assert_eq!(problems.len(), 4, "{problems:?}");
        for flag in [
            "--rate-per-sec",
            "--resend-share",
            "--bad-share",
            "--member-pool",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(flag)),
                "{flag}: {problems:?}"
            );
        }
        let long = ScriptOptions {
            passages: u64::MAX,
            rate_per_sec: 0.001,
            ..options(1, 10)
        };
        assert!(long.validate().expect_err("a year")[0].contains("more than a year"));
        assert!(Script::new(Vec::new(), &options(1, 10), &DecodeOptions::default(), 0, 0).is_err());
    }

    #[test]
    fn the_broker_comes_from_the_flag_or_the_config() {
        let embedded = TerminalSource::Embedded {
            listen: "0.0.0.0:1884".parse().expect("address"),
        };
        assert_eq!(
            broker_address(&embedded, None).expect("ok"),
            ("127.0.0.1".to_string(), 1884)
        );
        assert_eq!(
            broker_address(&embedded, Some("10.0.0.2:1999")).expect("ok"),
            ("10.0.0.2".to_string(), 1999)
        );
        assert_eq!(
            broker_address(&embedded, Some("[::1]:1999")).expect("ok"),
            ("::1".to_string(), 1999)
        );
        assert_eq!(
            broker_address(&embedded, Some("mqtt://localhost:1885")).expect("ok"),
            ("localhost".to_string(), 1885)
        );
        for bad in ["localhost", ":1884", "host:0", "host:port"] {
            let error = broker_address(&embedded, Some(bad)).expect_err(bad);
            assert!(error.to_string().contains("is not HOST:PORT"), "{error}");
        }
    }
}
