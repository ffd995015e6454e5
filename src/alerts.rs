//! The alert rules: notable changes in the hall's facts from one tick to the next — a device
//! going offline, stale or coming back, a room going over capacity, a fever passage at a
//! terminal, the clock losing synchronisation, the terminal intake stopping, the outbox
//! filling up or dropping messages, the link to the centre lost or restored, the storage
//! failing (a full disk, failing commits, a data directory gone).
//!
//! ```text
//! core tick: Facts (typed: judged devices, rooms, new fevers, clock, link, outbox)
//!              └─► AlertMemory::step(&facts, tz) ──┬─► AlertChange ──► payload ──► outbox (topic `alerts`)
//!                                                  └─► today's list ──► Snapshot ──► status page
//! ```
//!
//! The core runs the rules once a tick, so the centre and the page hear of the same alerts,
//! and every raise and clear is committed to the outbox like any figure: it survives a crash
//! and goes first after a reconnect. [`AlertMemory::step`] is pure (facts in, changes out, no
//! clock, no I/O) and deterministic: the same facts give the same alerts, with the same ids,
//! so every rule is unit-tested.
//!
//! Two outputs: the page's list (in memory only, today's alerts — the hall's calendar day —
//! and at most [`MAX_ALERTS`] of them, so a flapping device cannot grow it without bound),
//! and for the centre [`AlertChange`]s: each alert of an [`EpisodeKind`] is raised once and
//! cleared once, per subject, with hysteresis where a figure hovers at its threshold (rooms,
//! the outbox) or a quiet time (fevers).

use std::collections::{BTreeMap, HashMap, VecDeque};

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, Unit};
use serde::{Deserialize, Serialize};

use crate::format::{local_date, rfc3339, span_words, span_words_zh};
use crate::health::{Condition, DeviceCondition, DeviceKind};
use crate::outbox::{OutboxSnapshot, StorageFault};

/// Share of the outbox's bound above which the backlog is "filling up".
pub const OUTBOX_FILLING_PERCENT: f64 = 80.0;

/// Most alerts kept (the newest).
pub const MAX_ALERTS: usize = 50;

/// An over-capacity room raises its alert again only after falling to this share of it.
const ROOM_REARM_SHARE: f64 = 0.9;

/// The outbox's "filling up" alert re-arms below this share of its bound.
const OUTBOX_REARM_PERCENT: f64 = 70.0;

/// A fever episode at a terminal ends after this long without another fever there.
pub const FEVER_QUIET: SignedDuration = SignedDuration::from_mins(10);

/// What the centre is told about: alerts that are raised once and cleared once. Serialised
/// (kept open alerts) by the same names as [`EpisodeKind::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EpisodeKind {
    OverCapacity,
    Fever,
    DeviceOffline,
    DeviceStale,
    ClockUnsynchronised,
    OutboxFilling,
    TerminalIntakeStopped,
    /// A counter's totals jumped beyond what its door can pass (see `crate::health`).
    CounterImplausible,
    /// A counter's totals fell and were taken as a device reset.
    CounterReset,
    StorageFault,
}

impl EpisodeKind {
    /// The `alert` field of the uplink payload.
    pub fn as_str(self) -> &'static str {
        match self {
            EpisodeKind::OverCapacity => "over_capacity",
            EpisodeKind::Fever => "fever",
            EpisodeKind::DeviceOffline => "device_offline",
            EpisodeKind::DeviceStale => "device_stale",
            EpisodeKind::ClockUnsynchronised => "clock_unsynchronised",
            EpisodeKind::OutboxFilling => "outbox_filling",
            EpisodeKind::TerminalIntakeStopped => "terminal_intake_stopped",
            EpisodeKind::CounterImplausible => "counter_implausible",
            EpisodeKind::CounterReset => "counter_reset",
            EpisodeKind::StorageFault => "storage_fault",
        }
    }
}

/// Whether an [`AlertChange`] raises or clears its alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertState {
    Raised,
    Cleared,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Raised => "raised",
            AlertState::Cleared => "cleared",
        }
    }
}

/// One raise or clear, for the centre (`alerts` topic).
#[derive(Debug, Clone, PartialEq)]
pub struct AlertChange {
    pub kind: EpisodeKind,
    /// The room or device id, or `"hall"`.
    pub subject: String,
    /// For a fever: the room of the terminal.
    pub room: Option<String>,
    pub state: AlertState,
    /// When the alert was raised (a clear repeats it: it names the episode).
    pub raised_at: Timestamp,
    pub cleared_at: Option<Timestamp>,
    /// For a fever: passages with fever in the episode so far.
    pub count: Option<u64>,
    /// A plain sentence, never an identity.
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    DeviceOffline,
    DeviceBackOnline,
    DeviceStale,
    RoomOverCapacity,
    FeverPassage,
    ClockNotSynchronised,
    ClockSynchronised,
    OutboxFilling,
    MessagesDropped,
    LinkLost,
    LinkRestored,
    TerminalIntakeStopped,
    ClockStepped,
    CounterImplausible,
    CounterReset,
    StorageFault,
    StorageRecovered,
    DataDirRecreated,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::DeviceOffline => "device_offline",
            AlertKind::DeviceBackOnline => "device_back_online",
            AlertKind::DeviceStale => "device_stale",
            AlertKind::RoomOverCapacity => "room_over_capacity",
            AlertKind::FeverPassage => "fever_passage",
            AlertKind::ClockNotSynchronised => "clock_not_synchronised",
            AlertKind::ClockSynchronised => "clock_synchronised",
            AlertKind::OutboxFilling => "outbox_filling",
            AlertKind::MessagesDropped => "messages_dropped",
            AlertKind::LinkLost => "link_lost",
            AlertKind::LinkRestored => "link_restored",
            AlertKind::TerminalIntakeStopped => "terminal_intake_stopped",
            AlertKind::ClockStepped => "clock_stepped",
            AlertKind::CounterImplausible => "counter_implausible",
            AlertKind::CounterReset => "counter_reset",
            AlertKind::StorageFault => "storage_fault",
            AlertKind::StorageRecovered => "storage_recovered",
            AlertKind::DataDirRecreated => "data_dir_recreated",
        }
    }

    /// Whether staff should look at it (as opposed to "it is fine again").
    pub fn is_trouble(self) -> bool {
        !matches!(
            self,
            AlertKind::DeviceBackOnline
                | AlertKind::ClockSynchronised
                | AlertKind::LinkRestored
                | AlertKind::StorageRecovered
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertView {
    pub at: String,
    /// `HH:MM:SS` in hall time.
    pub at_local: String,
    pub kind: AlertKind,
    /// The room or device id it is about, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub message: String,
}

/// The share of the outbox's bound in use, in percent to one decimal (0 without a bound).
pub fn outbox_used_percent(o: &OutboxSnapshot) -> f64 {
    if o.max_bytes == 0 {
        0.0
    } else {
        (o.bytes as f64 * 1000.0 / o.max_bytes as f64).round() / 10.0
    }
}

/// A room's figures as the over-capacity rule needs them.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomFact<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub occupancy: u64,
    pub capacity: u32,
}

impl RoomFact<'_> {
    pub fn over_capacity(&self) -> bool {
        self.occupancy > u64::from(self.capacity)
    }
}

/// Fever passages counted at one terminal since the previous step. No identity, no
/// temperature: only how many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeverFact<'a> {
    pub terminal: &'a str,
    /// The terminal's room id, and its name for the texts.
    pub room: &'a str,
    pub room_name: &'a str,
    pub new: u64,
}

/// What the rules look at, once a tick: typed figures, taken by the core at `now`.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts<'a> {
    pub now: Timestamp,
    pub devices: &'a [DeviceCondition],
    pub rooms: Vec<RoomFact<'a>>,
    pub fevers: Vec<FeverFact<'a>>,
    pub clock_synced: bool,
    /// The part of the terminal intake that stopped; `None` while terminals can deliver.
    pub terminal_intake_stopped: Option<&'static str>,
    pub link_connected: bool,
    /// See [`outbox_used_percent`].
    pub outbox_used_percent: f64,
    /// Messages lost for good since start: dropped from a full outbox or too large to send.
    pub dropped_messages: u64,
    /// How far the wall clock was stepped since the last step (forward positive), if it was.
    pub clock_step: Option<SignedDuration>,
    /// What keeps the gateway from storing as it should, if anything.
    pub storage_fault: Option<StorageFault>,
    /// Times since start the outbox found its database deleted and made it again.
    pub storage_recreated: u64,
}

/// The output of one [`AlertMemory::step`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertStep {
    /// New alerts for the page's list.
    pub page: Vec<AlertView>,
    /// Raises and clears for the centre.
    pub changes: Vec<AlertChange>,
}

/// An alert raised and not yet cleared.
#[derive(Debug, Clone, PartialEq)]
struct Open {
    raised_at: Timestamp,
    room: Option<String>,
    count: u64,
    /// A fever episode's latest fever.
    last: Timestamp,
}

/// An open alert as kept on disk with the figures, so that after a restart its episode
/// continues (same `raised_at`, so the same ids) or is cleared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptAlert {
    pub alert: EpisodeKind,
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    pub raised_at: Timestamp,
    #[serde(default)]
    pub count: u64,
    pub last: Timestamp,
}

/// The open alerts kept in `bytes` (see [`AlertMemory::kept`]); one that cannot be read (a
/// kind from a newer version) is dropped, the others kept. Nothing for unreadable bytes.
pub fn read_kept(bytes: &[u8]) -> Vec<KeptAlert> {
    let Ok(values) = serde_json::from_slice::<Vec<serde_json::Value>>(bytes) else {
        return Vec::new();
    };
    values
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect()
}

/// What the rules remember between steps.
#[derive(Debug, Clone, Default)]
pub struct AlertMemory {
    /// Seen at least one step.
    primed: bool,
    devices: HashMap<(DeviceKind, String), Condition>,
    /// Alerts raised for the centre and not cleared, by kind and subject.
    open: BTreeMap<(EpisodeKind, String), Open>,
    clock_synced: bool,
    link_connected: bool,
    /// The link has been up at least once (so "lost" means something).
    link_ever_up: bool,
    dropped: u64,
    alerts: VecDeque<AlertView>,
    alerts_today: u64,
    today: Option<Date>,
    /// `Facts::storage_recreated` at the last step.
    storage_recreated: u64,
}

/// One step's round of the rules: the page's new alerts and the episodes opened and closed, at `now`.
struct Round<'m> {
    now: Timestamp,
    tz: &'m TimeZone,
    page: Vec<AlertView>,
    open: &'m mut BTreeMap<(EpisodeKind, String), Open>,
    changes: Vec<AlertChange>,
}

impl Round<'_> {
    /// A new alert for the page's list.
    fn page(&mut self, kind: AlertKind, subject: Option<&str>, message: String) {
        self.page.push(AlertView {
            at: rfc3339(self.now),
            at_local: self
                .now
                .to_zoned(self.tz.clone())
                .strftime("%H:%M:%S")
                .to_string(),
            kind,
            subject: subject.map(str::to_string),
            message,
        });
    }

    fn is_open(&self, kind: EpisodeKind, subject: &str) -> bool {
        self.open.contains_key(&(kind, subject.to_string()))
    }

    /// Raises the alert unless it is already raised; true if it was raised now.
    fn raise(
        &mut self,
        kind: EpisodeKind,
        subject: &str,
        room: Option<&str>,
        count: Option<u64>,
        detail: String,
    ) -> bool {
        let key = (kind, subject.to_string());
        if self.open.contains_key(&key) {
            return false;
        }
        self.open.insert(
            key,
            Open {
                raised_at: self.now,
                room: room.map(str::to_string),
                count: count.unwrap_or(0),
                last: self.now,
            },
        );
        self.changes.push(AlertChange {
            kind,
            subject: subject.to_string(),
            room: room.map(str::to_string),
            state: AlertState::Raised,
            raised_at: self.now,
            cleared_at: None,
            count,
            detail,
        });
        true
    }

    /// Clears the alert if it is raised.
    fn clear(&mut self, kind: EpisodeKind, subject: &str, detail: impl FnOnce(&Open) -> String) {
        let Some(open) = self.open.remove(&(kind, subject.to_string())) else {
            return;
        };
        self.changes.push(AlertChange {
            kind,
            subject: subject.to_string(),
            room: open.room.clone(),
            state: AlertState::Cleared,
            raised_at: open.raised_at,
            cleared_at: Some(self.now),
            count: (kind == EpisodeKind::Fever).then_some(open.count),
            detail: detail(&open),
        });
    }
}

/// The subject of an alert about the whole hall.
const HALL: &str = "hall";

impl AlertMemory {
    /// Runs every rule on `facts` against what came before; keeps the page's new alerts,
    /// with today's others, for [`AlertMemory::alerts`].
    pub fn step(&mut self, facts: &Facts<'_>, tz: &TimeZone) -> AlertStep {
        // Alerts are stamped to the millisecond (as the centre receives them): the rules
        // measure their quiet times between those same instants.
        let now = facts.now.round(Unit::Millisecond).unwrap_or(facts.now);
        let today = local_date(now, tz);
        if self.today != Some(today) {
            self.alerts.clear();
            self.alerts_today = 0;
            self.today = Some(today);
        }
        let mut step = Round {
            now,
            tz,
            page: Vec::new(),
            open: &mut self.open,
            changes: Vec::new(),
        };
        for d in facts.devices {
            let before = self
                .devices
                .insert((d.kind, d.id.clone()), d.judged.condition)
                .unwrap_or(Condition::Waiting);
            device_rules(&mut step, d, before);
            counting_rules(&mut step, d);
        }
        for room in &facts.rooms {
            room_rules(&mut step, room);
        }
        for fevers in &facts.fevers {
            fever_rules(&mut step, fevers);
        }
        // At the first step, a clock that is not synchronised is news; one that is, is not.
        let clock_before = if self.primed { self.clock_synced } else { true };
        clock_rules(&mut step, clock_before, facts.clock_synced);
        if let Some(by) = facts.clock_step {
            step_rule(&mut step, by);
        }
        self.clock_synced = facts.clock_synced;
        intake_rules(&mut step, facts.terminal_intake_stopped);
        link_rules(
            &mut step,
            (self.link_connected, self.link_ever_up),
            facts.link_connected,
        );
        self.link_connected = facts.link_connected;
        self.link_ever_up |= facts.link_connected;
        outbox_rules(&mut step, facts.outbox_used_percent);
        if facts.dropped_messages > self.dropped {
            step.page(
                AlertKind::MessagesDropped,
                None,
                format!(
                    "{} messages for the central platform were lost (the offline buffer was \
                     full or a message too large); {} in all since the gateway started",
                    facts.dropped_messages - self.dropped,
                    facts.dropped_messages
                ),
            );
        }
        self.dropped = facts.dropped_messages;
        storage_rules(&mut step, facts.storage_fault);
        if facts.storage_recreated > self.storage_recreated {
            step.page(
                AlertKind::DataDirRecreated,
                None,
                "数据目录被删除，已重建 (data directory made again): the gateway's data \
                 directory was deleted while it ran; it was made again and today's figures kept"
                    .into(),
            );
        }
        self.storage_recreated = facts.storage_recreated;
        self.primed = true;

        let Round { page, changes, .. } = step;
        for alert in &page {
            if self.alerts.len() == MAX_ALERTS {
                self.alerts.pop_front();
            }
            self.alerts.push_back(alert.clone());
            self.alerts_today += 1;
        }
        AlertStep { page, changes }
    }

    /// Memory that continues the open alerts an earlier run `kept`. Each is checked again by
    /// its rule once its condition is known: cleared if it ended meanwhile, left open (no new
    /// raise) if it still holds.
    pub fn resume(kept: &[KeptAlert]) -> Self {
        let open = kept
            .iter()
            .map(|k| {
                let open = Open {
                    raised_at: k.raised_at,
                    room: k.room.clone(),
                    count: k.count,
                    last: k.last,
                };
                ((k.alert, k.subject.clone()), open)
            })
            .collect();
        AlertMemory {
            open,
            ..AlertMemory::default()
        }
    }

    /// The open alerts, to keep with the figures.
    pub fn kept(&self) -> Vec<KeptAlert> {
        self.open
            .iter()
            .map(|((kind, subject), open)| KeptAlert {
                alert: *kind,
                subject: subject.clone(),
                room: open.room.clone(),
                raised_at: open.raised_at,
                count: open.count,
                last: open.last,
            })
            .collect()
    }

    /// Today's alerts, oldest first.
    pub fn alerts(&self) -> impl Iterator<Item = &AlertView> {
        self.alerts.iter()
    }

    pub fn alerts_today(&self) -> u64 {
        self.alerts_today
    }
}

/// A device that went offline, stale or came back: the page hears of each change, the
/// centre of each offline and stale episode.
fn device_rules(step: &mut Round<'_>, d: &DeviceCondition, before: Condition) {
    let condition = d.judged.condition;
    let detail = &d.judged.detail;
    let what = match d.kind {
        DeviceKind::PeopleCounter => "People counter",
        DeviceKind::Bus => "RS-485 bus",
        DeviceKind::Terminal => "Face terminal",
    };
    match (before, condition) {
        (a, b) if a == b => {}
        (_, Condition::Offline) => step.page(
            AlertKind::DeviceOffline,
            Some(&d.id),
            format!("{what} {} went offline: {detail}", d.id),
        ),
        (_, Condition::Stale) => step.page(
            AlertKind::DeviceStale,
            Some(&d.id),
            format!("{what} {} is stale: {detail}", d.id),
        ),
        (Condition::Offline | Condition::Stale, Condition::Online) => step.page(
            AlertKind::DeviceBackOnline,
            Some(&d.id),
            format!("{what} {} is back online", d.id),
        ),
        _ => {}
    }
    // Not tried yet (just started): an episode kept from before a restart waits until the
    // device's condition is known.
    if condition == Condition::Waiting {
        return;
    }
    if condition == Condition::Offline {
        step.raise(
            EpisodeKind::DeviceOffline,
            &d.id,
            None,
            None,
            format!("{what} {} ({}) does not answer: {detail}", d.id, d.place),
        );
    } else {
        step.clear(EpisodeKind::DeviceOffline, &d.id, |_| {
            format!("{what} {} answers again", d.id)
        });
    }
    if condition == Condition::Stale {
        step.raise(
            EpisodeKind::DeviceStale,
            &d.id,
            None,
            None,
            if d.kind == DeviceKind::Terminal {
                format!(
                    "{what} {} ({}) has not been heard from for longer than expected: {detail}",
                    d.id, d.place
                )
            } else {
                format!(
                    "{what} {} ({}) answers but has not counted for longer than \
                     expected: {detail}",
                    d.id, d.place
                )
            },
        );
    } else {
        step.clear(EpisodeKind::DeviceStale, &d.id, |_| {
            format!("{what} {} is no longer stale", d.id)
        });
    }
}

/// A counter's counting doubts (`crate::health::CountingDoubts`): each open doubt is an
/// episode, raised for the page and the centre when it opens and cleared for the centre when
/// the counter has counted plausibly again (the health rule closes it).
fn counting_rules(step: &mut Round<'_>, d: &DeviceCondition) {
    // As for `device_rules`: an episode kept over a restart waits for the counter's first
    // answer before it is judged.
    if d.judged.condition == Condition::Waiting {
        return;
    }
    let doubts = [
        (
            EpisodeKind::CounterImplausible,
            AlertKind::CounterImplausible,
            d.counting.implausible.as_ref(),
            "计数值不可信 (counter figures implausible)",
        ),
        (
            EpisodeKind::CounterReset,
            AlertKind::CounterReset,
            d.counting.reset.as_ref(),
            "计数器复位 (counter reset)",
        ),
    ];
    for (episode, kind, open, title) in doubts {
        match open {
            Some(open) => {
                // Without the place (the page's row has it): the hint is long, and a detail
                // is at most 500 characters.
                let message = format!("{title}: people counter {}: {}", d.id, open.doubt.hint());
                if step.raise(episode, &d.id, None, None, message.clone()) {
                    step.page(kind, Some(&d.id), message);
                }
            }
            None => step.clear(episode, &d.id, |_| {
                format!(
                    "计数恢复正常 (counting plausibly again): people counter {} counted \
                     plausibly {} minutes or more after its last doubtful reading",
                    d.id,
                    crate::health::DOUBT_CLEARS_AFTER.as_mins()
                )
            }),
        }
    }
}

/// A room over capacity: raised once, re-armed at [`ROOM_REARM_SHARE`] of it.
fn room_rules(step: &mut Round<'_>, r: &RoomFact<'_>) {
    if r.over_capacity() && !step.is_open(EpisodeKind::OverCapacity, r.id) {
        let message = format!(
            "{} is over capacity (超员): {} people, {} allowed",
            r.name, r.occupancy, r.capacity
        );
        step.raise(EpisodeKind::OverCapacity, r.id, None, None, message.clone());
        step.page(AlertKind::RoomOverCapacity, Some(r.id), message);
    } else if (r.occupancy as f64) <= f64::from(r.capacity) * ROOM_REARM_SHARE {
        step.clear(EpisodeKind::OverCapacity, r.id, |_| {
            format!(
                "{} is below capacity again: {} people, {} allowed",
                r.name, r.occupancy, r.capacity
            )
        });
    }
}

/// Fevers at a terminal: one episode while they keep coming, cleared after [`FEVER_QUIET`].
fn fever_rules(step: &mut Round<'_>, t: &FeverFact<'_>) {
    let now = step.now;
    let more = t.new;
    let key = (EpisodeKind::Fever, t.terminal.to_string());
    if more > 0 {
        if let Some(open) = step.open.get_mut(&key) {
            open.count += more;
            open.last = now;
        } else {
            let message = format!(
                "Fever passage (发热) at face terminal {} in {}: {more} passage{} at or \
                 above the fever threshold; follow the hall's health procedure",
                t.terminal,
                t.room_name,
                if more == 1 { "" } else { "s" }
            );
            step.raise(
                EpisodeKind::Fever,
                t.terminal,
                Some(t.room),
                Some(more),
                message.clone(),
            );
            step.page(AlertKind::FeverPassage, Some(t.terminal), message);
        }
    } else if step
        .open
        .get(&key)
        .is_some_and(|open| now.duration_since(open.last) >= FEVER_QUIET)
    {
        step.clear(EpisodeKind::Fever, t.terminal, |open| {
            format!(
                "No fever passage at face terminal {} in {} for {} minutes; {} in the \
                 episode",
                t.terminal,
                t.room_name,
                FEVER_QUIET.as_mins(),
                open.count
            )
        });
    }
}

fn clock_rules(step: &mut Round<'_>, before: bool, synced: bool) {
    match (before, synced) {
        (true, false) => step.page(
            AlertKind::ClockNotSynchronised,
            None,
            "The clock is not synchronised (时钟未同步): figures are marked as untrusted \
             until it is; check the network time (NTP) settings"
                .into(),
        ),
        (false, true) => step.page(
            AlertKind::ClockSynchronised,
            None,
            "The clock is synchronised again".into(),
        ),
        _ => {}
    }
    if synced {
        step.clear(EpisodeKind::ClockUnsynchronised, HALL, |_| {
            "The gateway's clock is synchronised again".into()
        });
    } else {
        step.raise(
            EpisodeKind::ClockUnsynchronised,
            HALL,
            None,
            None,
            "The gateway's clock is not synchronised: its figures may carry the wrong \
             time until it is"
                .into(),
        );
    }
}

/// A step of the wall clock: news for the page (the centre hears of the minutes it skipped).
fn step_rule(step: &mut Round<'_>, by: SignedDuration) {
    let secs = by.unsigned_abs().as_secs();
    let (zh, en) = (span_words_zh(secs), span_words(secs));
    let message = if by.is_positive() {
        format!(
            "系统时钟向前跳了 {zh}，跳过的分钟没有数据，已向上级平台报告 (the clock stepped \
             forward by {en}: the minutes it jumped over have no figures and are reported to the \
             central platform as skipped)"
        )
    } else {
        format!(
            "系统时钟向后跳了 {zh}，数据暂留在当前分钟 (the clock stepped back by {en}: figures \
             stay in the current minute until the clock passes the time it had reached)"
        )
    };
    step.page(AlertKind::ClockStepped, None, message);
}

fn intake_rules(step: &mut Round<'_>, stopped: Option<&str>) {
    if let Some(part) = stopped {
        let message = format!(
            "终端接入已停止 (terminal intake stopped): the terminals' {part} has ended, so \
             no face terminal can deliver; restart the gateway"
        );
        if step.raise(
            EpisodeKind::TerminalIntakeStopped,
            HALL,
            None,
            None,
            message.clone(),
        ) {
            step.page(AlertKind::TerminalIntakeStopped, None, message);
        }
    } else {
        // Only a restart starts a fresh intake: an episode kept from before it ends here.
        step.clear(EpisodeKind::TerminalIntakeStopped, HALL, |_| {
            "终端接入已恢复 (terminal intake running again after the restart)".into()
        });
    }
}

/// `before`: connected at the last step, and ever connected.
fn link_rules(step: &mut Round<'_>, before: (bool, bool), connected: bool) {
    let (was_connected, ever_up) = before;
    if was_connected && !connected {
        step.page(
            AlertKind::LinkLost,
            None,
            "The link to the central platform (上级平台) was lost: figures are kept on \
             the box and sent when it is back"
                .into(),
        );
    } else if !was_connected && connected && ever_up {
        step.page(
            AlertKind::LinkRestored,
            None,
            "The link to the central platform is back; the backlog is being sent".into(),
        );
    }
}

fn outbox_rules(step: &mut Round<'_>, used: f64) {
    if used >= OUTBOX_FILLING_PERCENT {
        let message = format!(
            "The offline buffer (离线缓存) is {used:.0} % full: older figures are being \
             merged; restore the link to the central platform"
        );
        if step.raise(
            EpisodeKind::OutboxFilling,
            HALL,
            None,
            None,
            message.clone(),
        ) {
            step.page(AlertKind::OutboxFilling, None, message);
        }
    } else if used < OUTBOX_REARM_PERCENT {
        step.clear(EpisodeKind::OutboxFilling, HALL, |_| {
            format!("The offline buffer is down to {used:.0} % full")
        });
    }
}

/// The one sentence for a storage fault, Chinese first: the page, `hallgate status` and the
/// centre's alert all say it.
pub fn storage_fault_words(fault: StorageFault) -> &'static str {
    match fault {
        StorageFault::DiskFull => {
            "存储空间已满 (disk full): the disk holding the gateway's data is full, so it keeps \
             counting with a much smaller offline buffer; free space on the data disk"
        }
        StorageFault::WritesFailing => {
            "数据无法保存 (storage failing): the gateway cannot write its data, so today's \
             figures are kept in memory only until it can; check the data disk"
        }
        StorageFault::DataDirUnusable => {
            "数据目录不可用 (data directory unusable): the gateway's data directory is gone or \
             cannot be written, so today's figures are kept in memory only; check the data disk"
        }
    }
}

/// A storage fault: one episode for the hall while any lasts, on the page when it starts
/// and when it ends. The centre hears of it through the outbox like every alert: while
/// nothing can be stored the raise waits in memory with the figures, and goes out once
/// storage is back (raised then cleared) — it is raised once, so it cannot feed itself.
fn storage_rules(step: &mut Round<'_>, fault: Option<StorageFault>) {
    match fault {
        Some(fault) => {
            let message = storage_fault_words(fault).to_string();
            if step.raise(EpisodeKind::StorageFault, HALL, None, None, message.clone()) {
                step.page(AlertKind::StorageFault, None, message);
            }
        }
        None if step.is_open(EpisodeKind::StorageFault, HALL) => {
            let message = "存储已恢复 (storage back): the gateway stores its data normally again";
            step.clear(EpisodeKind::StorageFault, HALL, |_| message.into());
            step.page(AlertKind::StorageRecovered, None, message.into());
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tz() -> TimeZone {
        TimeZone::get("Asia/Shanghai").expect("bundled")
    }

    /// A hall at `time` (UTC) with one room, one counter and a connected link: the facts
    /// the rules see, owned so a test can change them.
    #[derive(Clone)]
    struct Hall {
        now: Timestamp,
        devices: Vec<DeviceCondition>,
        occupancy: u64,
        clock_synced: bool,
        terminal_intake_stopped: Option<&'static str>,
        link_connected: bool,
        outbox_used_percent: f64,
        dropped_messages: u64,
        /// Fevers at terminal ft-1 since the previous step.
        fevers: u64,
        storage_fault: Option<StorageFault>,
        storage_recreated: u64,
    }

    impl Hall {
        fn facts(&self) -> Facts<'_> {
            Facts {
                now: self.now,
                devices: &self.devices,
                rooms: vec![RoomFact {
                    id: "reading",
                    name: "Reading room",
                    occupancy: self.occupancy,
                    capacity: 10,
                }],
                fevers: vec![FeverFact {
                    terminal: "ft-1",
                    room: "reading",
                    room_name: "Reading room",
                    new: self.fevers,
                }],
                clock_synced: self.clock_synced,
                terminal_intake_stopped: self.terminal_intake_stopped,
                link_connected: self.link_connected,
                outbox_used_percent: self.outbox_used_percent,
                dropped_messages: self.dropped_messages,
                clock_step: None,
                storage_fault: self.storage_fault,
                storage_recreated: self.storage_recreated,
            }
        }

        fn condition(&mut self, condition: Condition) {
            self.devices[0].judged.condition = condition;
        }
    }

    fn view(time: &str) -> Hall {
        Hall {
            now: format!("2026-12-01T{time}Z").parse().expect("a time"),
            devices: vec![DeviceCondition {
                id: "pc-1".into(),
                kind: DeviceKind::PeopleCounter,
                index: 0,
                place: "door d".into(),
                judged: crate::health::Judged {
                    condition: Condition::Online,
                    since: None,
                    detail: "answers".into(),
                },
                counting: crate::health::CountingDoubts::default(),
            }],
            occupancy: 0,
            clock_synced: true,
            terminal_intake_stopped: None,
            link_connected: true,
            outbox_used_percent: 0.0,
            dropped_messages: 0,
            fevers: 0,
            storage_fault: None,
            storage_recreated: 0,
        }
    }

    fn step(m: &mut AlertMemory, v: &Hall) -> Vec<AlertView> {
        m.step(&v.facts(), &tz()).page
    }

    fn kinds(alerts: &[AlertView]) -> Vec<AlertKind> {
        alerts.iter().map(|a| a.kind).collect()
    }

    fn set_room(v: &mut Hall, occupancy: u64) {
        v.occupancy = occupancy;
    }

    #[test]
    fn a_stopped_terminal_intake_raises_one_alert_for_the_page_and_the_centre() {
        let mut m = AlertMemory::default();
        step(&mut m, &view("06:00:00"));
        let mut v = view("06:01:00");
        v.terminal_intake_stopped = Some("ingest");
        let s = m.step(&v.facts(), &tz());
        assert_eq!(kinds(&s.page), [AlertKind::TerminalIntakeStopped]);
        assert!(s.page[0].message.starts_with("终端接入已停止"));
        assert_eq!(s.changes.len(), 1);
        assert_eq!(s.changes[0].kind, EpisodeKind::TerminalIntakeStopped);
        // Still stopped: said once.
        let s = m.step(&v.facts(), &tz());
        assert!(s.page.is_empty() && s.changes.is_empty());
    }

    /// A memory with the device offline, the clock unsynchronised and a fever episode open,
    /// as kept at 06:00 and resumed after a restart.
    fn kept_before_a_restart() -> Vec<KeptAlert> {
        let mut m = AlertMemory::default();
        let mut v = view("06:00:00");
        v.condition(Condition::Offline);
        v.clock_synced = false;
        v.fevers = 2;
        let s = m.step(&v.facts(), &tz());
        assert_eq!(s.changes.len(), 3, "three episodes open: {:?}", s.changes);
        let kept = m.kept();
        let text = serde_json::to_vec(&kept).expect("serialises");
        serde_json::from_slice(&text).expect("reads back")
    }

    #[test]
    fn alerts_kept_over_a_restart_continue_while_they_hold_and_clear_once_they_ended() {
        let kept = kept_before_a_restart();
        let raised: Timestamp = "2026-12-01T06:00:00Z".parse().expect("a time");
        let mut m = AlertMemory::resume(&kept);
        // Back 20 minutes later: the counter not tried yet, the clock still unsynchronised,
        // no fever since.
        let mut v = view("06:20:00");
        v.condition(Condition::Waiting);
        v.clock_synced = false;
        let s = m.step(&v.facts(), &tz());
        assert_eq!(
            s.changes
                .iter()
                .map(|c| (c.kind, c.state))
                .collect::<Vec<_>>(),
            [(EpisodeKind::Fever, AlertState::Cleared)],
            "the fever episode ended in the downtime; the others hold or are not known yet"
        );
        assert_eq!(
            s.changes[0].raised_at, raised,
            "the clear names the old episode"
        );
        assert_eq!(s.changes[0].count, Some(2));
        // The counter is still offline: its episode continues, nothing is raised again.
        v.now = "2026-12-01T06:20:01Z".parse().expect("a time");
        v.condition(Condition::Offline);
        let s = m.step(&v.facts(), &tz());
        assert!(s.changes.is_empty(), "no new episode: {:?}", s.changes);
        // It answers and the clock syncs: both old episodes are cleared.
        v.now = "2026-12-01T06:20:02Z".parse().expect("a time");
        v.condition(Condition::Online);
        v.clock_synced = true;
        let s = m.step(&v.facts(), &tz());
        let mut cleared: Vec<_> = s
            .changes
            .iter()
            .map(|c| (c.kind, c.state, c.raised_at))
            .collect();
        cleared.sort_by_key(|c| c.0);
        assert_eq!(
            cleared,
            [
                (EpisodeKind::DeviceOffline, AlertState::Cleared, raised),
                (
                    EpisodeKind::ClockUnsynchronised,
                    AlertState::Cleared,
                    raised
                ),
            ]
        );
        assert!(m.kept().is_empty());
    }

    #[test]
    fn kept_alerts_are_stored_by_their_uplink_names_and_an_unknown_one_is_dropped() {
        let kept = kept_before_a_restart();
        let mut stored: Vec<serde_json::Value> =
            serde_json::from_slice(&serde_json::to_vec(&kept).expect("serialises"))
                .expect("a list");
        for (value, alert) in stored.iter().zip(&kept) {
            assert_eq!(value["alert"], alert.alert.as_str());
        }
        stored[0]["alert"] = "from_a_newer_version".into();
        let bytes = serde_json::to_vec(&stored).expect("serialises");
        assert_eq!(read_kept(&bytes).len(), kept.len() - 1);
    }

    #[test]
    fn a_clock_step_is_news_for_the_page_in_both_directions() {
        let mut m = AlertMemory::default();
        step(&mut m, &view("06:00:00"));
        let v = view("06:10:00");
        let mut f = v.facts();
        f.clock_step = Some(SignedDuration::from_secs(600));
        let s = m.step(&f, &tz());
        assert_eq!(kinds(&s.page), [AlertKind::ClockStepped]);
        assert!(s.page[0].message.starts_with("系统时钟向前跳了 10 分钟"));
        assert!(s.page[0].message.contains("stepped forward by 10 minutes"));
        f.clock_step = Some(SignedDuration::from_secs(-90));
        let s = m.step(&f, &tz());
        assert!(s.page[0].message.starts_with("系统时钟向后跳了 90 秒"));
        assert!(s.page[0].message.contains("stepped back by 90 seconds"));
        assert!(
            s.changes.is_empty(),
            "a step is not an episode for the centre"
        );
    }

    #[test]
    fn a_storage_fault_raises_one_alert_while_it_lasts_whatever_its_kind_and_clears_once() {
        let mut m = AlertMemory::default();
        step(&mut m, &view("06:00:00"));
        let mut v = view("06:01:00");
        v.storage_fault = Some(StorageFault::DiskFull);
        let s = m.step(&v.facts(), &tz());
        assert_eq!(kinds(&s.page), [AlertKind::StorageFault]);
        assert!(s.page[0].message.starts_with("存储空间已满"));
        assert_eq!(s.changes.len(), 1);
        assert_eq!(
            (
                s.changes[0].kind,
                s.changes[0].state,
                s.changes[0].subject.as_str()
            ),
            (EpisodeKind::StorageFault, AlertState::Raised, "hall")
        );
        // Worse now, and then still so: the one episode goes on, nothing is raised again
        // (an alert that cannot be stored must not raise another).
        v.storage_fault = Some(StorageFault::WritesFailing);
        for _ in 0..3 {
            let s = m.step(&v.facts(), &tz());
            assert!(s.page.is_empty() && s.changes.is_empty());
        }
        v.storage_fault = None;
        let s = m.step(&v.facts(), &tz());
        assert_eq!(kinds(&s.page), [AlertKind::StorageRecovered]);
        assert!(!AlertKind::StorageRecovered.is_trouble());
        assert_eq!(s.changes.len(), 1);
        assert_eq!(s.changes[0].state, AlertState::Cleared);
        assert!(s.changes[0].detail.starts_with("存储已恢复"));
        let s = m.step(&v.facts(), &tz());
        assert!(s.page.is_empty() && s.changes.is_empty());
    }

    #[test]
    fn a_data_directory_made_again_is_on_the_page_once() {
        let mut m = AlertMemory::default();
        step(&mut m, &view("06:00:00"));
        let mut v = view("06:01:00");
        v.storage_recreated = 1;
        let s = m.step(&v.facts(), &tz());
        assert_eq!(kinds(&s.page), [AlertKind::DataDirRecreated]);
        assert!(s.page[0].message.starts_with("数据目录被删除"));
        assert!(s.changes.is_empty(), "nothing is open: storage works again");
        assert!(step(&mut m, &v).is_empty(), "said once");
    }

    #[test]
    fn every_storage_fault_has_one_sentence_chinese_first() {
        for fault in [
            StorageFault::DiskFull,
            StorageFault::WritesFailing,
            StorageFault::DataDirUnusable,
        ] {
            let words = storage_fault_words(fault);
            assert!(!words.starts_with(|c: char| c.is_ascii()), "{words}");
            assert_eq!(words.matches(". ").count(), 0, "one sentence: {words}");
        }
    }

    #[test]
    fn a_quiet_first_view_raises_nothing() {
        let mut m = AlertMemory::default();
        assert!(step(&mut m, &view("06:00:00")).is_empty());
        assert!(step(&mut m, &view("06:00:01")).is_empty());
    }

    #[test]
    fn a_device_going_offline_and_coming_back_raises_two_alerts_with_its_reason() {
        let mut m = AlertMemory::default();
        step(&mut m, &view("06:00:00"));
        let mut v = view("06:05:00");
        v.condition(Condition::Offline);
        v.devices[0].judged.detail = "no answer within 500 ms".into();
        let a = step(&mut m, &v);
        assert_eq!(kinds(&a), [AlertKind::DeviceOffline]);
        assert_eq!(a[0].subject.as_deref(), Some("pc-1"));
        assert_eq!(a[0].at_local, "14:05:00");
        assert!(
            a[0].message.contains("no answer within 500 ms"),
            "{}",
            a[0].message
        );
        // Still offline: nothing new.
        assert!(step(&mut m, &v).is_empty());
        let a = step(&mut m, &view("06:06:00"));
        assert_eq!(kinds(&a), [AlertKind::DeviceBackOnline]);
        assert_eq!(m.alerts().count(), 2);
    }

    #[test]
    fn a_device_that_never_answers_raises_offline_once_it_has_tried() {
        let mut m = AlertMemory::default();
        let mut v = view("06:00:00");
        v.condition(Condition::Waiting);
        assert!(step(&mut m, &v).is_empty());
        v.condition(Condition::Offline);
        assert_eq!(kinds(&step(&mut m, &v)), [AlertKind::DeviceOffline]);
    }

    #[test]
    fn a_stale_device_raises_an_alert() {
        let mut m = AlertMemory::default();
        step(&mut m, &view("06:00:00"));
        let mut v = view("09:00:00");
        v.condition(Condition::Stale);
        assert_eq!(kinds(&step(&mut m, &v)), [AlertKind::DeviceStale]);
    }

    #[test]
    fn a_counting_doubt_raises_one_alert_for_the_page_and_the_centre_until_it_closes() {
        use crate::devices::counter::{Counted, Doubt, DoubtKind};
        let mut m = AlertMemory::default();
        step(&mut m, &view("06:00:00"));
        let word_order = Counted {
            doubt: Some(Doubt {
                kind: DoubtKind::WordOrder,
                which: "IN",
                from: 100 << 16,
                to: 101 << 16,
                limit: 100,
                elapsed_secs: Some(10),
                interrupted: false,
            }),
            ..Counted::default()
        };
        let mut v = view("06:01:00");
        v.devices[0].counting.note(v.now, &word_order);
        let s = m.step(&v.facts(), &tz());
        assert_eq!(kinds(&s.page), [AlertKind::CounterImplausible]);
        assert!(
            s.page[0]
                .message
                .starts_with("计数值不可信 (counter figures implausible)")
                && s.page[0].message.contains("check `word_order`"),
            "{}",
            s.page[0].message
        );
        assert_eq!(
            s.changes
                .iter()
                .map(|c| (c.kind, c.state))
                .collect::<Vec<_>>(),
            [(EpisodeKind::CounterImplausible, AlertState::Raised)]
        );
        // Still open, more doubtful readings: said once.
        v.now = "2026-12-01T06:02:00Z".parse().expect("a time");
        v.devices[0].counting.note(v.now, &word_order);
        let s = m.step(&v.facts(), &tz());
        assert!(s.page.is_empty() && s.changes.is_empty());
        // Fixed: a plausible count ten minutes on closes it, for the centre.
        v.now = "2026-12-01T06:12:00Z".parse().expect("a time");
        let plausible = Counted {
            inward: 1,
            ..Counted::default()
        };
        assert!(v.devices[0].counting.note(v.now, &plausible));
        let s = m.step(&v.facts(), &tz());
        assert!(s.page.is_empty());
        assert_eq!(s.changes.len(), 1);
        assert_eq!(
            (s.changes[0].kind, s.changes[0].state),
            (EpisodeKind::CounterImplausible, AlertState::Cleared)
        );
    }

    #[test]
    fn a_counting_alert_fits_the_500_characters_of_a_detail_whatever_the_figures() {
        use crate::devices::counter::{Counted, Doubt, DoubtKind};
        for kind in [
            DoubtKind::WordOrder,
            DoubtKind::Jump,
            DoubtKind::FarJump,
            DoubtKind::Reset,
        ] {
            for interrupted in [false, true] {
                let mut m = AlertMemory::default();
                let mut v = view("06:00:00");
                v.devices[0].id = "c".repeat(64);
                let worst = Counted {
                    doubt: Some(Doubt {
                        kind,
                        which: "OUT",
                        from: u64::MAX,
                        to: u64::MAX - 1,
                        limit: u64::MAX,
                        elapsed_secs: Some(u64::MAX),
                        interrupted,
                    }),
                    ..Counted::default()
                };
                v.devices[0].counting.note(v.now, &worst);
                let s = m.step(&v.facts(), &tz());
                assert_eq!(s.changes.len(), 1, "{kind:?}");
                let chars = s.changes[0].detail.chars().count();
                assert!(chars <= 500, "{kind:?}: {chars} characters");
            }
        }
    }

    #[test]
    fn a_room_hovering_at_capacity_raises_one_alert_until_it_empties_a_little() {
        let mut m = AlertMemory::default();
        let mut raised = Vec::new();
        for (i, occupancy) in [9, 11, 10, 11, 10, 11, 9, 11, 12].into_iter().enumerate() {
            let mut v = view(&format!("06:00:{i:02}"));
            set_room(&mut v, occupancy);
            raised.extend(step(&mut m, &v));
        }
        // 11 fires; 10 / 11 hover; 9 is 90 % and re-arms; the next 11 fires again.
        assert_eq!(
            kinds(&raised),
            [AlertKind::RoomOverCapacity, AlertKind::RoomOverCapacity]
        );
        assert!(
            raised[0].message.contains("11 people, 10 allowed"),
            "{}",
            raised[0].message
        );
    }

    #[test]
    fn a_room_already_over_capacity_at_start_is_reported() {
        let mut m = AlertMemory::default();
        let mut v = view("06:00:00");
        set_room(&mut v, 30);
        assert_eq!(kinds(&step(&mut m, &v)), [AlertKind::RoomOverCapacity]);
    }

    #[test]
    fn the_clock_is_reported_when_unsynchronised_from_the_start_and_when_it_recovers() {
        let mut m = AlertMemory::default();
        let mut v = view("06:00:00");
        v.clock_synced = false;
        assert_eq!(kinds(&step(&mut m, &v)), [AlertKind::ClockNotSynchronised]);
        assert!(step(&mut m, &v).is_empty());
        v.clock_synced = true;
        assert_eq!(kinds(&step(&mut m, &v)), [AlertKind::ClockSynchronised]);
    }

    #[test]
    fn losing_the_link_is_reported_but_not_connecting_for_the_first_time() {
        let mut m = AlertMemory::default();
        let mut v = view("06:00:00");
        v.link_connected = false;
        assert!(step(&mut m, &v).is_empty());
        v.link_connected = true;
        assert!(step(&mut m, &v).is_empty());
        v.link_connected = false;
        assert_eq!(kinds(&step(&mut m, &v)), [AlertKind::LinkLost]);
        v.link_connected = true;
        assert_eq!(kinds(&step(&mut m, &v)), [AlertKind::LinkRestored]);
    }

    #[test]
    fn a_filling_outbox_is_reported_once_and_every_drop_is_reported() {
        let mut m = AlertMemory::default();
        let mut raised = Vec::new();
        for (i, (used, dropped)) in [
            (50.0, 0),
            (80.0, 0),
            (95.0, 0),
            (75.0, 0),
            (85.0, 3),
            (99.0, 5),
        ]
        .into_iter()
        .enumerate()
        {
            let mut v = view(&format!("06:00:{i:02}"));
            v.outbox_used_percent = used;
            v.dropped_messages = dropped;
            raised.extend(step(&mut m, &v));
        }
        assert_eq!(
            kinds(&raised),
            [
                AlertKind::OutboxFilling,
                AlertKind::MessagesDropped,
                AlertKind::MessagesDropped
            ]
        );
        assert!(
            raised[2].message.starts_with("2 messages"),
            "{}",
            raised[2].message
        );
    }

    #[test]
    fn the_list_is_bounded_and_starts_afresh_each_day() {
        let mut m = AlertMemory::default();
        for i in 0..(MAX_ALERTS as u32 + 20) {
            let mut v = view(&format!("06:{:02}:{:02}", i / 60, i % 60));
            v.condition(if i % 2 == 0 {
                Condition::Offline
            } else {
                Condition::Online
            });
            step(&mut m, &v);
        }
        assert_eq!(m.alerts().count(), MAX_ALERTS);
        assert_eq!(m.alerts_today(), MAX_ALERTS as u64 + 20);
        // 16:00 UTC is midnight in Shanghai: a new day, an empty list.
        let mut v = view("16:00:00");
        v.condition(Condition::Online);
        step(&mut m, &v);
        assert_eq!(m.alerts().count(), 0);
        assert_eq!(m.alerts_today(), 0);
    }

    fn changes(m: &mut AlertMemory, v: &Hall, fevers: u64) -> Vec<(EpisodeKind, AlertState)> {
        m.step(
            &Hall {
                fevers,
                ..v.clone()
            }
            .facts(),
            &tz(),
        )
        .changes
        .iter()
        .map(|c| (c.kind, c.state))
        .collect()
    }

    /// The hall at `time` with `fevers` new fevers at ft-1.
    fn fevers(time: &str, fevers: u64) -> Hall {
        Hall {
            fevers,
            ..view(time)
        }
    }

    use AlertState::{Cleared, Raised};

    #[test]
    fn an_over_capacity_room_is_raised_once_and_cleared_at_ninety_percent_for_the_centre() {
        let mut m = AlertMemory::default();
        let mut seen = Vec::new();
        for (i, occupancy) in [9, 11, 10, 11, 10, 9, 11].into_iter().enumerate() {
            let mut v = view(&format!("06:00:{i:02}"));
            set_room(&mut v, occupancy);
            seen.extend(m.step(&v.facts(), &tz()).changes);
        }
        let states: Vec<_> = seen.iter().map(|c| (c.kind, c.state)).collect();
        assert_eq!(
            states,
            [
                (EpisodeKind::OverCapacity, Raised),
                (EpisodeKind::OverCapacity, Cleared),
                (EpisodeKind::OverCapacity, Raised)
            ]
        );
        assert_eq!(seen[0].subject, "reading");
        // The clear names its episode: the raise's time.
        assert_eq!(seen[1].raised_at, seen[0].raised_at);
        assert_eq!(
            seen[1].cleared_at,
            Some("2026-12-01T06:00:05Z".parse().expect("a time"))
        );
        assert_ne!(seen[2].raised_at, seen[0].raised_at);
    }

    #[test]
    fn many_fevers_at_a_terminal_raise_one_alert_cleared_after_ten_quiet_minutes_with_the_count() {
        let mut m = AlertMemory::default();
        assert!(changes(&mut m, &view("06:00:00"), 0).is_empty());
        let first = m.step(&fevers("06:00:01", 1).facts(), &tz());
        assert_eq!(first.changes.len(), 1);
        let raised = &first.changes[0];
        assert_eq!((raised.kind, raised.state), (EpisodeKind::Fever, Raised));
        assert_eq!(raised.subject, "ft-1");
        assert_eq!(raised.room.as_deref(), Some("reading"));
        assert_eq!(raised.count, Some(1));
        assert!(
            raised.detail.contains("ft-1") && raised.detail.contains("Reading room"),
            "{}",
            raised.detail
        );
        assert_eq!(kinds(&first.page), [AlertKind::FeverPassage]);
        // Two more fevers within the episode, then quiet: nothing new until ten minutes
        // after the last one.
        assert!(changes(&mut m, &view("06:04:00"), 2).is_empty());
        assert!(changes(&mut m, &view("06:13:59"), 0).is_empty());
        let quiet = m.step(&fevers("06:14:00", 0).facts(), &tz());
        assert_eq!(quiet.changes.len(), 1);
        let cleared = &quiet.changes[0];
        assert_eq!((cleared.kind, cleared.state), (EpisodeKind::Fever, Cleared));
        assert_eq!(cleared.count, Some(3));
        assert_eq!(cleared.raised_at, raised.raised_at);
        assert!(quiet.page.is_empty());
        assert!(changes(&mut m, &view("06:30:00"), 0).is_empty());
        // A later fever is a new episode.
        assert_eq!(
            changes(&mut m, &view("06:31:00"), 1),
            [(EpisodeKind::Fever, Raised)]
        );
    }

    #[test]
    fn a_device_offline_and_a_device_stale_are_distinct_alerts_each_cleared_when_it_ends() {
        let mut m = AlertMemory::default();
        assert!(changes(&mut m, &view("06:00:00"), 0).is_empty());
        let mut v = view("06:01:00");
        v.condition(Condition::Offline);
        assert_eq!(
            changes(&mut m, &v, 0),
            [(EpisodeKind::DeviceOffline, Raised)]
        );
        assert!(changes(&mut m, &v, 0).is_empty(), "no repeat while offline");
        let mut v = view("06:02:00");
        v.condition(Condition::Stale);
        assert_eq!(
            changes(&mut m, &v, 0),
            [
                (EpisodeKind::DeviceOffline, Cleared),
                (EpisodeKind::DeviceStale, Raised)
            ]
        );
        assert!(changes(&mut m, &v, 0).is_empty(), "no repeat while stale");
        assert_eq!(
            changes(&mut m, &view("06:03:00"), 0),
            [(EpisodeKind::DeviceStale, Cleared)]
        );
    }

    #[test]
    fn an_unsynchronised_clock_is_raised_from_the_first_view_and_cleared_when_synchronised() {
        let mut m = AlertMemory::default();
        let mut v = view("06:00:00");
        v.clock_synced = false;
        let raised = m.step(&v.facts(), &tz()).changes;
        assert_eq!(raised.len(), 1);
        assert_eq!(
            (raised[0].kind, raised[0].subject.as_str()),
            (EpisodeKind::ClockUnsynchronised, "hall")
        );
        assert!(changes(&mut m, &v, 0).is_empty());
        v.clock_synced = true;
        assert_eq!(
            changes(&mut m, &v, 0),
            [(EpisodeKind::ClockUnsynchronised, Cleared)]
        );
        assert!(changes(&mut m, &v, 0).is_empty());
    }

    #[test]
    fn a_filling_outbox_is_raised_at_eighty_percent_and_cleared_below_seventy() {
        let mut m = AlertMemory::default();
        let mut seen = Vec::new();
        for (i, used) in [50.0, 80.0, 95.0, 75.0, 85.0, 69.0, 60.0, 81.0]
            .into_iter()
            .enumerate()
        {
            let mut v = view(&format!("06:00:{i:02}"));
            v.outbox_used_percent = used;
            seen.extend(changes(&mut m, &v, 0));
        }
        assert_eq!(
            seen,
            [
                (EpisodeKind::OutboxFilling, Raised),
                (EpisodeKind::OutboxFilling, Cleared),
                (EpisodeKind::OutboxFilling, Raised)
            ]
        );
    }

    /// A run through every kind of alert, as messages for the centre.
    fn messages_of_a_run() -> Vec<crate::outbox::OutMessage> {
        let config = crate::config::parse(
            "[hall]\nid = \"h\"\ndistrict = \"d\"\n[uplink]\nbroker = \"mqtt://127.0.0.1:1\"\n\
             [[rooms]]\nid = \"reading\"\ncapacity = 10\n",
            std::path::Path::new("."),
            &crate::config::Overrides::default(),
        )
        .expect("a valid config");
        let mut m = AlertMemory::default();
        let mut out = Vec::new();
        // Fevers: new ones at each step (one, then one more).
        for (i, (occupancy, fevers, condition, synced)) in [
            (3, 0, Condition::Online, false),
            (12, 1, Condition::Offline, true),
            (12, 1, Condition::Stale, true),
            (5, 0, Condition::Online, true),
        ]
        .into_iter()
        .enumerate()
        {
            let mut v = view(&format!("06:{:02}:00", i * 11));
            set_room(&mut v, occupancy);
            v.condition(condition);
            v.clock_synced = synced;
            v.fevers = fevers;
            for change in m.step(&v.facts(), &tz()).changes {
                out.push(crate::uplink::payload::alert_message(
                    &config,
                    &change,
                    v.clock_synced,
                ));
            }
        }
        out
    }

    #[test]
    fn the_same_facts_give_the_same_alert_messages_with_ids_from_the_episode() {
        let first = messages_of_a_run();
        assert_eq!(first, messages_of_a_run());
        let ids: Vec<&str> = first.iter().map(|m| m.msg_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "h:alert:clock_unsynchronised:hall:1796104800000:raised",
                "h:alert:device_offline:pc-1:1796105460000:raised",
                "h:alert:over_capacity:reading:1796105460000:raised",
                "h:alert:fever:ft-1:1796105460000:raised",
                "h:alert:clock_unsynchronised:hall:1796104800000:cleared",
                "h:alert:device_offline:pc-1:1796105460000:cleared",
                "h:alert:device_stale:pc-1:1796106120000:raised",
                "h:alert:device_stale:pc-1:1796106120000:cleared",
                "h:alert:over_capacity:reading:1796105460000:cleared",
                "h:alert:fever:ft-1:1796105460000:cleared",
            ]
        );
        for m in &first {
            assert_eq!(
                (m.topic.as_str(), m.kind.as_str(), m.priority, m.retain),
                ("alerts", "alert", crate::outbox::Priority::Alert, false)
            );
        }
        let cleared: serde_json::Value = serde_json::from_slice(&first[9].payload).expect("JSON");
        assert_eq!(cleared["state"], "cleared");
        assert_eq!(cleared["count"], 2);
        assert_eq!(cleared["room"], "reading");
        assert_eq!(cleared["cleared_at"], "2026-12-01T06:33:00Z");
    }
}
