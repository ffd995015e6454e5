//! Today's alerts: notable changes found by diffing each new [`StateView`] against what was
//! seen before — a device going offline, stale or coming back, a room going over capacity,
//! the clock losing synchronisation, the outbox filling up or dropping messages, the link to
//! the centre lost or restored.
//!
//! [`Memory::step`] is pure (the view in, alerts out, no clock, no I/O), so every rule is
//! unit-tested. The list is in memory only, holds today's alerts (the hall's calendar day)
//! and at most [`MAX_ALERTS`] of them: a flapping device cannot grow it without bound.
//! Room and outbox alerts have hysteresis, so a room hovering at its capacity raises one
//! alert, not one per person.

use std::collections::{HashMap, VecDeque};

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

use super::Snapshot;
use super::view::{
    self, AlertKind, AlertView, Condition, DeviceKind, OUTBOX_FILLING_PERCENT, StateView,
};
use crate::config::Config;
use crate::uplink::payload::rfc3339;

/// Most alerts kept (the newest).
pub const MAX_ALERTS: usize = 50;

/// An over-capacity room raises its alert again only after falling to this share of it.
const ROOM_REARM_SHARE: f64 = 0.9;

/// The outbox's "filling up" alert re-arms below this share of its bound.
const OUTBOX_REARM_PERCENT: f64 = 70.0;

/// What the diffing remembers between views.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    /// Seen at least one view.
    primed: bool,
    devices: HashMap<(DeviceKind, String), Condition>,
    /// Rooms whose over-capacity alert has fired and not re-armed.
    rooms_over: HashMap<String, bool>,
    clock_synced: bool,
    link_connected: bool,
    /// The link has been up at least once (so "lost" means something).
    link_ever_up: bool,
    outbox_filling: bool,
    dropped: u64,
    alerts: VecDeque<AlertView>,
    alerts_today: u64,
    today: Option<Date>,
}

impl Memory {
    /// Diffs `view` against what came before; returns the new alerts and keeps them, with
    /// today's others, for [`Memory::alerts`].
    pub fn step(&mut self, view: &StateView, tz: &TimeZone) -> Vec<AlertView> {
        let Ok(now) = view.generated_at.parse::<Timestamp>() else {
            return Vec::new();
        };
        let today = view::local_date(now, tz);
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
        }

        for r in &view.rooms {
            let fired = self.rooms_over.entry(r.id.clone()).or_insert(false);
            if r.over_capacity && !*fired {
                *fired = true;
                raise(
                    AlertKind::RoomOverCapacity,
                    Some(&r.id),
                    format!(
                        "{} is over capacity (超员): {} people, {} allowed",
                        r.name, r.occupancy, r.capacity
                    ),
                );
            } else if *fired && (r.occupancy as f64) <= f64::from(r.capacity) * ROOM_REARM_SHARE {
                *fired = false;
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
        self.clock_synced = view.clock_synced;

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

        if !self.outbox_filling && link.outbox_used_percent >= OUTBOX_FILLING_PERCENT {
            self.outbox_filling = true;
            raise(
                AlertKind::OutboxFilling,
                None,
                format!(
                    "The offline buffer (离线缓存) is {:.0} % full: older figures are being \
                     merged; restore the link to the central platform",
                    link.outbox_used_percent
                ),
            );
        } else if self.outbox_filling && link.outbox_used_percent < OUTBOX_REARM_PERCENT {
            self.outbox_filling = false;
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

        for alert in &new {
            if self.alerts.len() == MAX_ALERTS {
                self.alerts.pop_front();
            }
            self.alerts.push_back(alert.clone());
            self.alerts_today += 1;
        }
        new
    }

    /// Today's alerts, oldest first.
    pub fn alerts(&self) -> impl Iterator<Item = &AlertView> {
        self.alerts.iter()
    }

    pub fn alerts_today(&self) -> u64 {
        self.alerts_today
    }
}

/// Turns successive snapshots into views with their alerts; owned by the status server.
#[derive(Debug)]
pub struct Observer {
    started: Timestamp,
    memory: Memory,
    /// The link's state and since when, as seen here.
    link: Option<(bool, Timestamp)>,
}

impl Observer {
    pub fn new(started: Timestamp) -> Self {
        Observer {
            started,
            memory: Memory::default(),
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
        for alert in self.memory.step(&view, &config.hall.time_zone) {
            // The other alerts' causes are logged where they happen (drivers, uplink,
            // outbox, clock); a full room is news only here.
            if alert.kind == AlertKind::RoomOverCapacity {
                tracing::info!(
                    room = alert.subject.as_deref().unwrap_or_default(),
                    message = %alert.message,
                    "a room is over capacity"
                );
            } else {
                tracing::debug!(kind = alert.kind.as_str(), message = %alert.message, "status alert");
            }
        }
        view.alerts = self.memory.alerts().cloned().collect();
        view.alerts_today = self.memory.alerts_today();
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
        }
    }

    fn kinds(alerts: &[AlertView]) -> Vec<AlertKind> {
        alerts.iter().map(|a| a.kind).collect()
    }

    fn set_room(v: &mut StateView, occupancy: u64) {
        v.rooms[0].occupancy = occupancy;
        v.rooms[0].over_capacity = occupancy > u64::from(v.rooms[0].capacity);
    }

    #[test]
    fn a_quiet_first_view_raises_nothing() {
        let mut m = Memory::default();
        assert!(m.step(&view("06:00:00"), &tz()).is_empty());
        assert!(m.step(&view("06:00:01"), &tz()).is_empty());
    }

    #[test]
    fn a_device_going_offline_and_coming_back_raises_two_alerts_with_its_reason() {
        let mut m = Memory::default();
        m.step(&view("06:00:00"), &tz());
        let mut v = view("06:05:00");
        v.devices[0].condition = Condition::Offline;
        v.devices[0].detail = "no answer within 500 ms".into();
        let a = m.step(&v, &tz());
        assert_eq!(kinds(&a), [AlertKind::DeviceOffline]);
        assert_eq!(a[0].subject.as_deref(), Some("pc-1"));
        assert_eq!(a[0].at_local, "14:05:00");
        assert!(
            a[0].message.contains("no answer within 500 ms"),
            "{}",
            a[0].message
        );
        // Still offline: nothing new.
        assert!(m.step(&v, &tz()).is_empty());
        let a = m.step(&view("06:06:00"), &tz());
        assert_eq!(kinds(&a), [AlertKind::DeviceBackOnline]);
        assert_eq!(m.alerts().count(), 2);
    }

    #[test]
    fn a_device_that_never_answers_raises_offline_once_it_has_tried() {
        let mut m = Memory::default();
        let mut v = view("06:00:00");
        v.devices[0].condition = Condition::Waiting;
        assert!(m.step(&v, &tz()).is_empty());
        v.devices[0].condition = Condition::Offline;
        assert_eq!(kinds(&m.step(&v, &tz())), [AlertKind::DeviceOffline]);
    }

    #[test]
    fn a_stale_device_raises_an_alert() {
        let mut m = Memory::default();
        m.step(&view("06:00:00"), &tz());
        let mut v = view("09:00:00");
        v.devices[0].condition = Condition::Stale;
        assert_eq!(kinds(&m.step(&v, &tz())), [AlertKind::DeviceStale]);
    }

    #[test]
    fn a_room_hovering_at_capacity_raises_one_alert_until_it_empties_a_little() {
        let mut m = Memory::default();
        let mut raised = Vec::new();
        for (i, occupancy) in [9, 11, 10, 11, 10, 11, 9, 11, 12].into_iter().enumerate() {
            let mut v = view(&format!("06:00:{i:02}"));
            set_room(&mut v, occupancy);
            raised.extend(m.step(&v, &tz()));
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
        assert_eq!(kinds(&m.step(&v, &tz())), [AlertKind::RoomOverCapacity]);
    }

    #[test]
    fn the_clock_is_reported_when_unsynchronised_from_the_start_and_when_it_recovers() {
        let mut m = Memory::default();
        let mut v = view("06:00:00");
        v.clock_synced = false;
        assert_eq!(kinds(&m.step(&v, &tz())), [AlertKind::ClockNotSynchronised]);
        assert!(m.step(&v, &tz()).is_empty());
        v.clock_synced = true;
        assert_eq!(kinds(&m.step(&v, &tz())), [AlertKind::ClockSynchronised]);
    }

    #[test]
    fn losing_the_link_is_reported_but_not_connecting_for_the_first_time() {
        let mut m = Memory::default();
        let mut v = view("06:00:00");
        v.link.connected = false;
        assert!(m.step(&v, &tz()).is_empty());
        v.link.connected = true;
        assert!(m.step(&v, &tz()).is_empty());
        v.link.connected = false;
        assert_eq!(kinds(&m.step(&v, &tz())), [AlertKind::LinkLost]);
        v.link.connected = true;
        assert_eq!(kinds(&m.step(&v, &tz())), [AlertKind::LinkRestored]);
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
            raised.extend(m.step(&v, &tz()));
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
            m.step(&v, &tz());
        }
        assert_eq!(m.alerts().count(), MAX_ALERTS);
        assert_eq!(m.alerts_today(), MAX_ALERTS as u64 + 20);
        // 16:00 UTC is midnight in Shanghai: a new day, an empty list.
        let mut v = view("16:00:00");
        v.devices[0].condition = Condition::Online;
        m.step(&v, &tz());
        assert_eq!(m.alerts().count(), 0);
        assert_eq!(m.alerts_today(), 0);
    }
}
