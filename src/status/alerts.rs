//! Alerts: notable changes found by diffing each new [`StateView`] against what was seen
//! before — a device going offline, stale or coming back, a room going over capacity, a
//! fever passage at a terminal, the clock losing synchronisation, the outbox filling up or
//! dropping messages, the link to the centre lost or restored.
//!
//! ```text
//! core loop: Snapshot ──► view::build ──► Memory::step ──┬─► AlertChange ──► outbox (topic `alerts`)
//!                                                        └─► today's list ──► Snapshot ──► status page
//! ```
//!
//! The diffing runs in the core loop ([`AlertWatch`], once a tick), so the centre and the
//! page hear of the same alerts, and every raise and clear is committed to the outbox like
//! any figure: it survives a crash and goes first after a reconnect. [`Memory::step`] is pure
//! (the view in, alerts out, no clock, no I/O) and deterministic: the same views give the
//! same alerts, with the same ids, so every rule is unit-tested.
//!
//! Two outputs: the page's list (in memory only, today's alerts — the hall's calendar day —
//! and at most [`MAX_ALERTS`] of them, so a flapping device cannot grow it without bound),
//! and for the centre [`AlertChange`]s: each alert of an [`EpisodeKind`] is raised once and
//! cleared once, per subject, with hysteresis where a figure hovers at its threshold (rooms,
//! the outbox) or a quiet time (fevers).

use std::collections::{BTreeMap, HashMap, VecDeque};

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use super::Snapshot;
use super::view::{
    self, AlertKind, AlertView, Condition, DeviceKind, OUTBOX_FILLING_PERCENT, StateView,
};
use crate::config::Config;
use crate::outbox::OutMessage;
use crate::uplink::payload::{self, rfc3339};

/// Most alerts kept (the newest).
pub const MAX_ALERTS: usize = 50;

/// An over-capacity room raises its alert again only after falling to this share of it.
const ROOM_REARM_SHARE: f64 = 0.9;

/// The outbox's "filling up" alert re-arms below this share of its bound.
const OUTBOX_REARM_PERCENT: f64 = 70.0;

/// A fever episode at a terminal ends after this long without another fever there.
pub const FEVER_QUIET: SignedDuration = SignedDuration::from_mins(10);

/// What the centre is told about: alerts that are raised once and cleared once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EpisodeKind {
    OverCapacity,
    Fever,
    DeviceOffline,
    DeviceStale,
    ClockUnsynchronised,
    OutboxFilling,
    TerminalIntakeStopped,
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

/// Fever passages counted at one terminal since the gateway started: what the fever rule
/// diffs. No identity, no temperature: only how many.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeverTally {
    pub terminal: String,
    /// The terminal's room id, and its name for the page.
    pub room: String,
    pub room_name: String,
    pub fevers: u64,
}

/// The output of one [`Memory::step`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Step {
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
    /// A fever episode's latest fever (seen in a view).
    last: Timestamp,
}

/// What the diffing remembers between views.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    /// Seen at least one view.
    primed: bool,
    devices: HashMap<(DeviceKind, String), Condition>,
    /// Alerts raised for the centre and not cleared, by kind and subject.
    open: BTreeMap<(EpisodeKind, String), Open>,
    /// Fevers seen per terminal, from the last tallies.
    fevers: HashMap<String, u64>,
    clock_synced: bool,
    link_connected: bool,
    /// The link has been up at least once (so "lost" means something).
    link_ever_up: bool,
    dropped: u64,
    alerts: VecDeque<AlertView>,
    alerts_today: u64,
    today: Option<Date>,
}

/// Opens and closes episodes, collecting the changes; borrowed for one step.
struct Episodes<'a> {
    open: &'a mut BTreeMap<(EpisodeKind, String), Open>,
    changes: Vec<AlertChange>,
    now: Timestamp,
}

impl Episodes<'_> {
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

impl Memory {
    /// Diffs `view` (and the terminals' fever tallies, config order) against what came
    /// before; keeps the page's new alerts, with today's others, for [`Memory::alerts`].
    pub fn step(&mut self, view: &StateView, fevers: &[FeverTally], tz: &TimeZone) -> Step {
        let Ok(now) = view.generated_at.parse::<Timestamp>() else {
            return Step::default();
        };
        let today = crate::format::local_date(now, tz);
        if self.today != Some(today) {
            self.alerts.clear();
            self.alerts_today = 0;
            self.today = Some(today);
        }
        let mut new = Vec::new();
        let mut raise = |kind: AlertKind, subject: Option<&str>, message: String| {
            new.push(AlertView {
                at: rfc3339(now),
                at_local: now.to_zoned(tz.clone()).strftime("%H:%M:%S").to_string(),
                kind,
                subject: subject.map(str::to_string),
                message,
            });
        };
        let mut episodes = Episodes {
            open: &mut self.open,
            changes: Vec::new(),
            now,
        };

        for d in &view.devices {
            let key = (d.kind, d.id.clone());
            let before = self
                .devices
                .insert(key, d.condition)
                .unwrap_or(Condition::Waiting);
            let what = match d.kind {
                DeviceKind::PeopleCounter => "People counter",
                DeviceKind::Bus => "RS-485 bus",
                DeviceKind::Terminal => "Face terminal",
            };
            match (before, d.condition) {
                (a, b) if a == b => {}
                (_, Condition::Offline) => raise(
                    AlertKind::DeviceOffline,
                    Some(&d.id),
                    format!("{what} {} went offline: {}", d.id, d.detail),
                ),
                (_, Condition::Stale) => raise(
                    AlertKind::DeviceStale,
                    Some(&d.id),
                    format!("{what} {} is stale: {}", d.id, d.detail),
                ),
                (Condition::Offline | Condition::Stale, Condition::Online) => raise(
                    AlertKind::DeviceBackOnline,
                    Some(&d.id),
                    format!("{what} {} is back online", d.id),
                ),
                _ => {}
            }
            if d.condition == Condition::Offline {
                episodes.raise(
                    EpisodeKind::DeviceOffline,
                    &d.id,
                    None,
                    None,
                    format!(
                        "{what} {} ({}) does not answer: {}",
                        d.id, d.place, d.detail
                    ),
                );
            } else {
                episodes.clear(EpisodeKind::DeviceOffline, &d.id, |_| {
                    format!("{what} {} answers again", d.id)
                });
            }
            if d.condition == Condition::Stale {
                episodes.raise(
                    EpisodeKind::DeviceStale,
                    &d.id,
                    None,
                    None,
                    if d.kind == DeviceKind::Terminal {
                        format!(
                            "{what} {} ({}) has not been heard from for longer than expected: {}",
                            d.id, d.place, d.detail
                        )
                    } else {
                        format!(
                            "{what} {} ({}) answers but has not counted for longer than \
                             expected: {}",
                            d.id, d.place, d.detail
                        )
                    },
                );
            } else {
                episodes.clear(EpisodeKind::DeviceStale, &d.id, |_| {
                    format!("{what} {} is no longer stale", d.id)
                });
            }
        }

        for r in &view.rooms {
            if r.over_capacity && !episodes.is_open(EpisodeKind::OverCapacity, &r.id) {
                let message = format!(
                    "{} is over capacity (超员): {} people, {} allowed",
                    r.name, r.occupancy, r.capacity
                );
                episodes.raise(
                    EpisodeKind::OverCapacity,
                    &r.id,
                    None,
                    None,
                    message.clone(),
                );
                raise(AlertKind::RoomOverCapacity, Some(&r.id), message);
            } else if (r.occupancy as f64) <= f64::from(r.capacity) * ROOM_REARM_SHARE {
                episodes.clear(EpisodeKind::OverCapacity, &r.id, |_| {
                    format!(
                        "{} is below capacity again: {} people, {} allowed",
                        r.name, r.occupancy, r.capacity
                    )
                });
            }
        }

        for t in fevers {
            let seen = self
                .fevers
                .insert(t.terminal.clone(), t.fevers)
                .unwrap_or(0);
            let more = t.fevers.saturating_sub(seen);
            let key = (EpisodeKind::Fever, t.terminal.clone());
            if more > 0 {
                if let Some(open) = episodes.open.get_mut(&key) {
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
                    episodes.raise(
                        EpisodeKind::Fever,
                        &t.terminal,
                        Some(&t.room),
                        Some(more),
                        message.clone(),
                    );
                    raise(AlertKind::FeverPassage, Some(&t.terminal), message);
                }
            } else if episodes
                .open
                .get(&key)
                .is_some_and(|open| now.duration_since(open.last) >= FEVER_QUIET)
            {
                episodes.clear(EpisodeKind::Fever, &t.terminal, |open| {
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

        // At the first view, a clock that is not synchronised is news; one that is, is not.
        let clock_before = if self.primed { self.clock_synced } else { true };
        match (clock_before, view.clock_synced) {
            (true, false) => raise(
                AlertKind::ClockNotSynchronised,
                None,
                "The clock is not synchronised (时钟未同步): figures are marked as untrusted \
                 until it is; check the network time (NTP) settings"
                    .into(),
            ),
            (false, true) => raise(
                AlertKind::ClockSynchronised,
                None,
                "The clock is synchronised again".into(),
            ),
            _ => {}
        }
        if view.clock_synced {
            episodes.clear(EpisodeKind::ClockUnsynchronised, HALL, |_| {
                "The gateway's clock is synchronised again".into()
            });
        } else {
            episodes.raise(
                EpisodeKind::ClockUnsynchronised,
                HALL,
                None,
                None,
                "The gateway's clock is not synchronised: its figures may carry the wrong \
                 time until it is"
                    .into(),
            );
        }
        self.clock_synced = view.clock_synced;

        if let Some(part) = &view.terminal_intake_stopped {
            let message = format!(
                "终端接入已停止 (terminal intake stopped): the terminals' {part} has ended, so \
                 no face terminal can deliver; restart the gateway"
            );
            if episodes.raise(
                EpisodeKind::TerminalIntakeStopped,
                HALL,
                None,
                None,
                message.clone(),
            ) {
                raise(AlertKind::TerminalIntakeStopped, None, message);
            }
        }

        let link = &view.link;
        if self.link_connected && !link.connected {
            raise(
                AlertKind::LinkLost,
                None,
                "The link to the central platform (上级平台) was lost: figures are kept on \
                 the box and sent when it is back"
                    .into(),
            );
        } else if !self.link_connected && link.connected && self.link_ever_up {
            raise(
                AlertKind::LinkRestored,
                None,
                "The link to the central platform is back; the backlog is being sent".into(),
            );
        }
        self.link_connected = link.connected;
        self.link_ever_up |= link.connected;

        let used = link.outbox_used_percent;
        if used >= OUTBOX_FILLING_PERCENT {
            let message = format!(
                "The offline buffer (离线缓存) is {used:.0} % full: older figures are being \
                 merged; restore the link to the central platform"
            );
            if episodes.raise(
                EpisodeKind::OutboxFilling,
                HALL,
                None,
                None,
                message.clone(),
            ) {
                raise(AlertKind::OutboxFilling, None, message);
            }
        } else if used < OUTBOX_REARM_PERCENT {
            episodes.clear(EpisodeKind::OutboxFilling, HALL, |_| {
                format!("The offline buffer is down to {used:.0} % full")
            });
        }

        if link.dropped_messages > self.dropped {
            raise(
                AlertKind::MessagesDropped,
                None,
                format!(
                    "{} messages for the central platform were lost (the offline buffer was \
                     full or a message too large); {} in all since the gateway started",
                    link.dropped_messages - self.dropped,
                    link.dropped_messages
                ),
            );
        }
        self.dropped = link.dropped_messages;
        self.primed = true;

        let changes = episodes.changes;
        for alert in &new {
            if self.alerts.len() == MAX_ALERTS {
                self.alerts.pop_front();
            }
            self.alerts.push_back(alert.clone());
            self.alerts_today += 1;
        }
        Step { page: new, changes }
    }

    /// Today's alerts, oldest first.
    pub fn alerts(&self) -> impl Iterator<Item = &AlertView> {
        self.alerts.iter()
    }

    pub fn alerts_today(&self) -> u64 {
        self.alerts_today
    }
}

/// The core loop's side: diffs each tick's snapshot, puts today's alerts into it for the
/// page, and turns raises and clears into `alerts` messages for the outbox.
#[derive(Debug)]
pub struct AlertWatch {
    started: Timestamp,
    memory: Memory,
}

impl AlertWatch {
    pub fn new(started: Timestamp) -> Self {
        AlertWatch {
            started,
            memory: Memory::default(),
        }
    }

    /// Diffs `snap`, fills in its alerts for the page, and returns the messages for the
    /// centre.
    pub fn observe(&mut self, config: &Config, snap: &mut Snapshot) -> Vec<OutMessage> {
        let view = view::build(config, snap, self.started, None);
        let step = self
            .memory
            .step(&view, &snap.fevers, &config.hall.time_zone);
        for alert in &step.page {
            // The other alerts' causes are logged where they happen (drivers, uplink,
            // outbox, clock); a full room and a fever are news only here.
            match alert.kind {
                AlertKind::RoomOverCapacity => tracing::info!(
                    room = alert.subject.as_deref().unwrap_or_default(),
                    message = %alert.message,
                    "a room is over capacity"
                ),
                AlertKind::FeverPassage => tracing::info!(
                    terminal = alert.subject.as_deref().unwrap_or_default(),
                    message = %alert.message,
                    "a fever passage was recorded"
                ),
                _ => {
                    tracing::debug!(kind = alert.kind.as_str(), message = %alert.message, "status alert")
                }
            }
        }
        snap.alerts = self.memory.alerts().cloned().collect();
        snap.alerts_today = self.memory.alerts_today();
        step.changes
            .iter()
            .map(|change| payload::alert_message(config, change, view.clock_synced))
            .collect()
    }
}

/// Turns successive snapshots into views for the page; the alerts come with the snapshot,
/// from the core loop's [`AlertWatch`]. Owned by the status server.
#[derive(Debug)]
pub struct Observer {
    started: Timestamp,
    /// The link's state and since when, as seen here.
    link: Option<(bool, Timestamp)>,
}

impl Observer {
    pub fn new(started: Timestamp) -> Self {
        Observer {
            started,
            link: None,
        }
    }

    /// The view of `snap`, with today's alerts.
    pub fn observe(&mut self, config: &Config, snap: &Snapshot) -> StateView {
        let connected = snap.uplink.connected;
        let since = match self.link {
            Some((was, since)) if was == connected => since,
            Some(_) => snap.at,
            // Not connected yet: since the gateway started, as far as anyone can tell.
            None if !connected => self.started,
            None => snap.at,
        };
        self.link = Some((connected, since));
        let mut view = view::build(config, snap, self.started, Some(since));
        view.alerts = snap.alerts.clone();
        view.alerts_today = snap.alerts_today;
        view
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::view::{DeviceCounts, DeviceView, HallView, LinkView, RoomView};

    fn tz() -> TimeZone {
        TimeZone::get("Asia/Shanghai").expect("bundled")
    }

    /// A hall at `time` (UTC) with one room, one counter and a connected link.
    fn view(time: &str) -> StateView {
        StateView {
            api_version: 1,
            hall: HallView {
                id: "h".into(),
                name: "H".into(),
                time_zone: "Asia/Shanghai".into(),
            },
            generated_at: format!("2026-12-01T{time}Z"),
            generated_local: String::new(),
            day: "2026-12-01".into(),
            clock_synced: true,
            visits_today: 0,
            occupancy: 0,
            capacity: 10,
            rooms: vec![RoomView {
                id: "reading".into(),
                name: "Reading room".into(),
                occupancy: 0,
                capacity: 10,
                utilisation: 0.0,
                over_capacity: false,
                entries_today: 0,
                exits_today: 0,
            }],
            devices: vec![DeviceView {
                id: "pc-1".into(),
                kind: DeviceKind::PeopleCounter,
                place: "door d".into(),
                condition: Condition::Online,
                since: None,
                since_local: None,
                for_secs: None,
                detail: "answers".into(),
                counts: DeviceCounts::default(),
            }],
            link: LinkView {
                connected: true,
                since: None,
                since_local: None,
                last_upload: None,
                last_upload_local: None,
                last_upload_ago_secs: None,
                delivered: 0,
                backlog_messages: 0,
                backlog_bytes: 0,
                outbox_max_bytes: 100,
                outbox_used_percent: 0.0,
                buffer_left_hours: None,
                dropped_messages: 0,
                disk_full: false,
            },
            alerts: Vec::new(),
            alerts_today: 0,
            terminal_intake_stopped: None,
        }
    }

    fn step(m: &mut Memory, v: &StateView) -> Vec<AlertView> {
        m.step(v, &[], &tz()).page
    }

    fn kinds(alerts: &[AlertView]) -> Vec<AlertKind> {
        alerts.iter().map(|a| a.kind).collect()
    }

    fn set_room(v: &mut StateView, occupancy: u64) {
        v.rooms[0].occupancy = occupancy;
        v.rooms[0].over_capacity = occupancy > u64::from(v.rooms[0].capacity);
    }

    #[test]
    fn a_stopped_terminal_intake_raises_one_alert_for_the_page_and_the_centre() {
        let mut m = Memory::default();
        step(&mut m, &view("06:00:00"));
        let mut v = view("06:01:00");
        v.terminal_intake_stopped = Some("ingest".into());
        let s = m.step(&v, &[], &tz());
        assert_eq!(kinds(&s.page), [AlertKind::TerminalIntakeStopped]);
        assert!(s.page[0].message.starts_with("终端接入已停止"));
        assert_eq!(s.changes.len(), 1);
        assert_eq!(s.changes[0].kind, EpisodeKind::TerminalIntakeStopped);
        // Still stopped: said once.
        let s = m.step(&v, &[], &tz());
        assert!(s.page.is_empty() && s.changes.is_empty());
        assert!(
            crate::status::page::attention(&v)
                .iter()
                .any(|p| p.starts_with("终端接入已停止"))
        );
    }

    #[test]
    fn a_quiet_first_view_raises_nothing() {
        let mut m = Memory::default();
        assert!(step(&mut m, &view("06:00:00")).is_empty());
        assert!(step(&mut m, &view("06:00:01")).is_empty());
    }

    #[test]
    fn a_device_going_offline_and_coming_back_raises_two_alerts_with_its_reason() {
        let mut m = Memory::default();
        step(&mut m, &view("06:00:00"));
        let mut v = view("06:05:00");
        v.devices[0].condition = Condition::Offline;
        v.devices[0].detail = "no answer within 500 ms".into();
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
        let mut m = Memory::default();
        let mut v = view("06:00:00");
        v.devices[0].condition = Condition::Waiting;
        assert!(step(&mut m, &v).is_empty());
        v.devices[0].condition = Condition::Offline;
        assert_eq!(kinds(&step(&mut m, &v)), [AlertKind::DeviceOffline]);
    }

    #[test]
    fn a_stale_device_raises_an_alert() {
        let mut m = Memory::default();
        step(&mut m, &view("06:00:00"));
        let mut v = view("09:00:00");
        v.devices[0].condition = Condition::Stale;
        assert_eq!(kinds(&step(&mut m, &v)), [AlertKind::DeviceStale]);
    }

    #[test]
    fn a_room_hovering_at_capacity_raises_one_alert_until_it_empties_a_little() {
        let mut m = Memory::default();
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
        let mut m = Memory::default();
        let mut v = view("06:00:00");
        set_room(&mut v, 30);
        assert_eq!(kinds(&step(&mut m, &v)), [AlertKind::RoomOverCapacity]);
    }

    #[test]
    fn the_clock_is_reported_when_unsynchronised_from_the_start_and_when_it_recovers() {
        let mut m = Memory::default();
        let mut v = view("06:00:00");
        v.clock_synced = false;
        assert_eq!(kinds(&step(&mut m, &v)), [AlertKind::ClockNotSynchronised]);
        assert!(step(&mut m, &v).is_empty());
        v.clock_synced = true;
        assert_eq!(kinds(&step(&mut m, &v)), [AlertKind::ClockSynchronised]);
    }

    #[test]
    fn losing_the_link_is_reported_but_not_connecting_for_the_first_time() {
        let mut m = Memory::default();
        let mut v = view("06:00:00");
        v.link.connected = false;
        assert!(step(&mut m, &v).is_empty());
        v.link.connected = true;
        assert!(step(&mut m, &v).is_empty());
        v.link.connected = false;
        assert_eq!(kinds(&step(&mut m, &v)), [AlertKind::LinkLost]);
        v.link.connected = true;
        assert_eq!(kinds(&step(&mut m, &v)), [AlertKind::LinkRestored]);
    }

    #[test]
    fn a_filling_outbox_is_reported_once_and_every_drop_is_reported() {
        let mut m = Memory::default();
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
            v.link.outbox_used_percent = used;
            v.link.dropped_messages = dropped;
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
        let mut m = Memory::default();
        for i in 0..(MAX_ALERTS as u32 + 20) {
            let mut v = view(&format!("06:{:02}:{:02}", i / 60, i % 60));
            v.devices[0].condition = if i % 2 == 0 {
                Condition::Offline
            } else {
                Condition::Online
            };
            step(&mut m, &v);
        }
        assert_eq!(m.alerts().count(), MAX_ALERTS);
        assert_eq!(m.alerts_today(), MAX_ALERTS as u64 + 20);
        // 16:00 UTC is midnight in Shanghai: a new day, an empty list.
        let mut v = view("16:00:00");
        v.devices[0].condition = Condition::Online;
        step(&mut m, &v);
        assert_eq!(m.alerts().count(), 0);
        assert_eq!(m.alerts_today(), 0);
    }

    fn changes(
        m: &mut Memory,
        v: &StateView,
        fevers: &[FeverTally],
    ) -> Vec<(EpisodeKind, AlertState)> {
        m.step(v, fevers, &tz())
            .changes
            .iter()
            .map(|c| (c.kind, c.state))
            .collect()
    }

    fn tally(fevers: u64) -> Vec<FeverTally> {
        vec![FeverTally {
            terminal: "ft-1".into(),
            room: "reading".into(),
            room_name: "Reading room".into(),
            fevers,
        }]
    }

    use AlertState::{Cleared, Raised};

    #[test]
    fn an_over_capacity_room_is_raised_once_and_cleared_at_ninety_percent_for_the_centre() {
        let mut m = Memory::default();
        let mut seen = Vec::new();
        for (i, occupancy) in [9, 11, 10, 11, 10, 9, 11].into_iter().enumerate() {
            let mut v = view(&format!("06:00:{i:02}"));
            set_room(&mut v, occupancy);
            seen.extend(m.step(&v, &[], &tz()).changes);
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
        let mut m = Memory::default();
        assert!(changes(&mut m, &view("06:00:00"), &tally(0)).is_empty());
        let first = m.step(&view("06:00:01"), &tally(1), &tz());
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
        assert!(changes(&mut m, &view("06:04:00"), &tally(3)).is_empty());
        assert!(changes(&mut m, &view("06:13:59"), &tally(3)).is_empty());
        let quiet = m.step(&view("06:14:00"), &tally(3), &tz());
        assert_eq!(quiet.changes.len(), 1);
        let cleared = &quiet.changes[0];
        assert_eq!((cleared.kind, cleared.state), (EpisodeKind::Fever, Cleared));
        assert_eq!(cleared.count, Some(3));
        assert_eq!(cleared.raised_at, raised.raised_at);
        assert!(quiet.page.is_empty());
        assert!(changes(&mut m, &view("06:30:00"), &tally(3)).is_empty());
        // A later fever is a new episode.
        assert_eq!(
            changes(&mut m, &view("06:31:00"), &tally(4)),
            [(EpisodeKind::Fever, Raised)]
        );
    }

    #[test]
    fn a_device_offline_and_a_device_stale_are_distinct_alerts_each_cleared_when_it_ends() {
        let mut m = Memory::default();
        assert!(changes(&mut m, &view("06:00:00"), &[]).is_empty());
        let mut v = view("06:01:00");
        v.devices[0].condition = Condition::Offline;
        assert_eq!(
            changes(&mut m, &v, &[]),
            [(EpisodeKind::DeviceOffline, Raised)]
        );
        assert!(
            changes(&mut m, &v, &[]).is_empty(),
            "no repeat while offline"
        );
        let mut v = view("06:02:00");
        v.devices[0].condition = Condition::Stale;
        assert_eq!(
            changes(&mut m, &v, &[]),
            [
                (EpisodeKind::DeviceOffline, Cleared),
                (EpisodeKind::DeviceStale, Raised)
            ]
        );
        assert!(changes(&mut m, &v, &[]).is_empty(), "no repeat while stale");
        assert_eq!(
            changes(&mut m, &view("06:03:00"), &[]),
            [(EpisodeKind::DeviceStale, Cleared)]
        );
    }

    #[test]
    fn an_unsynchronised_clock_is_raised_from_the_first_view_and_cleared_when_synchronised() {
        let mut m = Memory::default();
        let mut v = view("06:00:00");
        v.clock_synced = false;
        let raised = m.step(&v, &[], &tz()).changes;
        assert_eq!(raised.len(), 1);
        assert_eq!(
            (raised[0].kind, raised[0].subject.as_str()),
            (EpisodeKind::ClockUnsynchronised, "hall")
        );
        assert!(changes(&mut m, &v, &[]).is_empty());
        v.clock_synced = true;
        assert_eq!(
            changes(&mut m, &v, &[]),
            [(EpisodeKind::ClockUnsynchronised, Cleared)]
        );
        assert!(changes(&mut m, &v, &[]).is_empty());
    }

    #[test]
    fn a_filling_outbox_is_raised_at_eighty_percent_and_cleared_below_seventy() {
        let mut m = Memory::default();
        let mut seen = Vec::new();
        for (i, used) in [50.0, 80.0, 95.0, 75.0, 85.0, 69.0, 60.0, 81.0]
            .into_iter()
            .enumerate()
        {
            let mut v = view(&format!("06:00:{i:02}"));
            v.link.outbox_used_percent = used;
            seen.extend(changes(&mut m, &v, &[]));
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
    fn messages_of_a_run() -> Vec<OutMessage> {
        let config = crate::config::parse(
            "[hall]\nid = \"h\"\ndistrict = \"d\"\n[uplink]\nbroker = \"mqtt://127.0.0.1:1\"\n\
             [[rooms]]\nid = \"reading\"\ncapacity = 10\n",
            std::path::Path::new("."),
            &crate::config::Overrides::default(),
        )
        .expect("a valid config");
        let mut m = Memory::default();
        let mut out = Vec::new();
        for (i, (occupancy, fevers, condition, synced)) in [
            (3, 0, Condition::Online, false),
            (12, 1, Condition::Offline, true),
            (12, 2, Condition::Stale, true),
            (5, 2, Condition::Online, true),
        ]
        .into_iter()
        .enumerate()
        {
            let mut v = view(&format!("06:{:02}:00", i * 11));
            set_room(&mut v, occupancy);
            v.devices[0].condition = condition;
            v.clock_synced = synced;
            for change in m.step(&v, &tally(fevers), &tz()).changes {
                out.push(payload::alert_message(&config, &change, v.clock_synced));
            }
        }
        out
    }

    #[test]
    fn the_same_views_give_the_same_alert_messages_with_ids_from_the_episode() {
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
