//! The one view every status output shares: `/api/v1/state` serialises it, the page, the
//! metrics and `hallgate status` render it. Built by a pure function from the config and a
//! core [`Snapshot`], so the page and the API can never disagree.
//!
//! Each device's [`Condition`] comes judged in the snapshot (the rules are `crate::health`'s),
//! and today's alerts too (the rules are `crate::alerts`'): the view only words and stamps
//! them.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use super::Snapshot;
use crate::alerts::outbox_used_percent;
pub use crate::alerts::{AlertKind, AlertView, OUTBOX_FILLING_PERCENT};
use crate::config::Config;
use crate::devices::StatsSnapshot;
use crate::format::{local_time, rfc3339, round3, secs_between};
use crate::health::DeviceCondition;
pub use crate::health::{Condition, DeviceKind};

/// Version of the `/api/v1/state` document; fields are only ever added within it.
pub const API_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateView {
    pub api_version: u32,
    pub hall: HallView,
    /// When the figures were taken, RFC 3339 UTC.
    pub generated_at: String,
    /// The same in the hall's time zone, `YYYY-MM-DD HH:MM:SS`.
    pub generated_local: String,
    /// The engine's day (it closes at the hall's closing time).
    pub day: String,
    pub clock_synced: bool,
    /// People who came in from the street today (服务人次).
    pub visits_today: u64,
    pub occupancy: u64,
    pub capacity: u64,
    pub rooms: Vec<RoomView>,
    /// `occupancy` corrected for the counting lines' learned misses (see `docs/accuracy.md`).
    #[serde(default)]
    pub occupancy_corrected: u64,
    pub devices: Vec<DeviceView>,
    pub link: LinkView,
    /// Today's alerts, oldest first; at most [`crate::alerts::MAX_ALERTS`].
    pub alerts: Vec<AlertView>,
    /// All alerts today, including those no longer in `alerts`.
    pub alerts_today: u64,
    /// The part of the terminal intake that has stopped (`listener`, `ingest`): terminals
    /// cannot deliver. Absent while they can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal_intake_stopped: Option<String>,
    /// What keeps the gateway from storing as it should (a full disk, failing writes, a data
    /// directory gone), in one sentence, Chinese first. Absent while storage is fine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_fault: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HallView {
    pub id: String,
    pub name: String,
    pub time_zone: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomView {
    pub id: String,
    pub name: String,
    pub occupancy: u64,
    pub capacity: u32,
    /// `occupancy / capacity`, 1.0 = full.
    pub utilisation: f64,
    pub over_capacity: bool,
    pub entries_today: u64,
    pub exits_today: u64,
    /// `occupancy` corrected for the counting lines' learned misses.
    #[serde(default)]
    pub occupancy_corrected: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceView {
    pub id: String,
    pub kind: DeviceKind,
    /// Where it is: a counter's door, a terminal's room, a bus's serial port.
    pub place: String,
    pub condition: Condition,
    /// Since when the condition holds (RFC 3339), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// The same in hall time: `HH:MM`, with the date when not today.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_local: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_secs: Option<u64>,
    /// The reason or the evidence, in words.
    pub detail: String,
    pub counts: DeviceCounts,
    /// A counter whose figures are in doubt: the kind (`word_order`, `jump`, `far_jump`,
    /// `reset`; see `crate::health::CountingDoubts`). `detail` says what to check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counting_doubt: Option<String>,
}

/// Counts since the gateway started; which ones are present depends on the kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCounts {
    /// Counters and buses: requests made (frames received, for streaming counters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polls: Option<u64>,
    /// Counters and buses: failed requests of every kind (timeouts, CRC, exceptions, bad
    /// answers, link errors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<u64>,
    /// Terminals: messages received, passages counted, messages rejected as malformed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passages: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkView {
    /// Connected to the central broker (上级平台).
    pub connected: bool,
    /// Since when connected or not, as far as the status page has seen (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_local: Option<String>,
    /// When the centre last acknowledged a queued message (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_upload: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_upload_local: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_upload_ago_secs: Option<u64>,
    /// Messages acknowledged by the centre since start.
    pub delivered: u64,
    /// Messages waiting in the outbox (待上传).
    pub backlog_messages: u64,
    pub backlog_bytes: u64,
    pub outbox_max_bytes: u64,
    /// `backlog_bytes / outbox_max_bytes`, in percent.
    pub outbox_used_percent: f64,
    /// Hours until the outbox is full at the current rate; absent while nothing piles up
    /// (the link is up) or the rate is not known yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer_left_hours: Option<f64>,
    /// Messages lost for good: dropped from a full outbox or too large to send.
    pub dropped_messages: u64,
    pub disk_full: bool,
}

/// Builds the view of `snap` (alerts left empty: [`Observer`] copies them from the
/// snapshot). `link_since` is when the link last changed state, as the page has seen it.
pub fn build(config: &Config, snap: &Snapshot, link_since: Option<Timestamp>) -> StateView {
    let tz = &config.hall.time_zone;
    let now = snap.at;
    let rooms: Vec<RoomView> = config
        .rooms
        .iter()
        .zip(&snap.rooms)
        .map(|(room, figures)| RoomView {
            id: room.id.clone(),
            name: room.name.clone(),
            occupancy: figures.occupancy,
            capacity: room.capacity,
            utilisation: round3(figures.occupancy as f64 / f64::from(room.capacity.max(1))),
            over_capacity: figures.occupancy > u64::from(room.capacity),
            entries_today: figures.entries,
            exits_today: figures.exits,
            occupancy_corrected: figures.occupancy_corrected,
        })
        .collect();
    let devices = snap
        .devices
        .iter()
        .map(|d| device(d, device_counts(snap, d), now, tz))
        .collect();
    StateView {
        api_version: API_VERSION,
        hall: HallView {
            id: config.hall.id.clone(),
            name: config.hall.name.clone(),
            time_zone: config.hall.time_zone_name.clone(),
        },
        generated_at: rfc3339(now),
        generated_local: now
            .to_zoned(tz.clone())
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string(),
        day: snap.day.to_string(),
        clock_synced: snap.clock_synced,
        visits_today: snap.visitors_today,
        occupancy: rooms.iter().map(|r| r.occupancy).sum(),
        capacity: rooms.iter().map(|r| u64::from(r.capacity)).sum(),
        occupancy_corrected: rooms.iter().map(|r| r.occupancy_corrected).sum(),
        rooms,
        devices,
        link: link_view(snap, link_since, tz),
        alerts: Vec::new(),
        alerts_today: 0,
        terminal_intake_stopped: snap.terminal_intake_stopped.map(str::to_string),
        storage_fault: snap
            .outbox
            .storage_fault()
            .map(|f| crate::alerts::storage_fault_words(f).to_string()),
    }
}

/// The counts a device of its kind shows: polls and errors, or a terminal's messages.
fn device_counts(snap: &Snapshot, d: &DeviceCondition) -> DeviceCounts {
    let polled = |s: &StatsSnapshot| DeviceCounts {
        polls: Some(s.polls),
        errors: Some(s.timeouts + s.crc_errors + s.exceptions + s.bad_answers + s.link_errors),
        ..DeviceCounts::default()
    };
    match d.kind {
        DeviceKind::PeopleCounter => snap
            .counters
            .get(d.index)
            .map(|c| polled(&c.stats))
            .unwrap_or_default(),
        DeviceKind::Bus => snap.buses.get(d.index).map(polled).unwrap_or_default(),
        DeviceKind::Terminal => snap
            .terminals
            .get(d.index)
            .map(|s| DeviceCounts {
                messages: Some(s.messages),
                passages: Some(s.passages),
                rejected: Some(s.rejected.values().sum()),
                ..DeviceCounts::default()
            })
            .unwrap_or_default(),
    }
}

fn link_view(snap: &Snapshot, link_since: Option<Timestamp>, tz: &TimeZone) -> LinkView {
    let now = snap.at;
    let o = &snap.outbox;
    let last_ack = (snap.uplink.last_ack_ms > 0)
        .then(|| Timestamp::from_millisecond(snap.uplink.last_ack_ms as i64).ok())
        .flatten();
    LinkView {
        connected: snap.uplink.connected,
        since: link_since.map(rfc3339),
        since_local: link_since.map(|t| local_time(t, now, tz)),
        last_upload: last_ack.map(rfc3339),
        last_upload_local: last_ack.map(|t| local_time(t, now, tz)),
        last_upload_ago_secs: last_ack.map(|t| secs_between(t, now)),
        delivered: snap.uplink.delivered,
        backlog_messages: o.pending,
        backlog_bytes: o.bytes,
        outbox_max_bytes: o.max_bytes,
        outbox_used_percent: outbox_used_percent(o),
        buffer_left_hours: o.buffer_left_hours,
        dropped_messages: o.dropped + snap.uplink.dropped,
        disk_full: o.disk_full,
    }
}

fn device(d: &DeviceCondition, counts: DeviceCounts, now: Timestamp, tz: &TimeZone) -> DeviceView {
    let judged = &d.judged;
    DeviceView {
        id: d.id.clone(),
        kind: d.kind,
        place: d.place.clone(),
        condition: judged.condition,
        since: judged.since.map(rfc3339),
        since_local: judged.since.map(|t| local_time(t, now, tz)),
        for_secs: judged.since.map(|t| secs_between(t, now)),
        detail: judged.detail.clone(),
        counts,
        counting_doubt: d
            .counting
            .worst()
            .map(|open| open.doubt.kind.as_str().to_string()),
    }
}

/// Turns successive snapshots into views for the page; the alerts come with the snapshot,
/// from the core's alert rules. Owned by the status server.
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
        let mut view = build(config, snap, Some(since));
        view.alerts = snap.alerts.clone();
        view.alerts_today = snap.alerts_today;
        view
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("a valid timestamp")
    }

    #[test]
    fn a_pulled_terminal_whose_login_was_refused_is_offline_and_says_why_chinese_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("t.pass");
        std::fs::write(&file, "x\n").expect("password file");
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        let config = crate::config::parse(
            "[hall]\nid = \"h\"\ndistrict = \"d\"\n[uplink]\nbroker = \"mqtt://127.0.0.1:1\"\n\
             [[rooms]]\nid = \"lobby\"\ncapacity = 10\n\
             [[terminals]]\nid = \"T1\"\nprofile = \"hikvision-isapi\"\nroom = \"lobby\"\n\
             transport = \"hikvision_pull\"\naddress = \"127.0.0.1:9\"\nusername = \"admin\"\n\
             password_file = \"t.pass\"\n",
            dir.path(),
            &crate::config::Overrides::default(),
        )
        .expect("a valid config");
        let now = at("2026-12-01T06:00:00Z");
        let mut terminal = crate::devices::terminals::TerminalStatsSnapshot {
            last_seen_ms: now.as_millisecond() as u64,
            ..Default::default()
        };
        let mut snapshot = Snapshot {
            terminals: vec![terminal.clone()],
            ..Snapshot::quiet(now, 1)
        };
        // Judged as the core judges them each tick, then worded by the view.
        let device = |snapshot: &Snapshot| {
            let mut snapshot = snapshot.clone();
            snapshot.devices = crate::health::judge_devices(
                &config,
                &snapshot.counters,
                &snapshot.terminals,
                now,
                now,
            );
            build(&config, &snapshot, None)
                .devices
                .into_iter()
                .find(|d| d.id == "T1")
                .expect("the terminal is listed")
        };
        assert_eq!(device(&snapshot).condition, Condition::Online);
        terminal.login_refused = true;
        snapshot.terminals = vec![terminal];
        let refused = device(&snapshot);
        assert_eq!(refused.condition, Condition::Offline);
        assert!(
            refused.detail.starts_with(
                "终端 T1 登录被拒，已停止重试以免锁定账户 (login refused; stopped retrying so the \
                 device does not lock the account)"
            ),
            "{}",
            refused.detail
        );
    }

    /// A hall of one room, the lobby, for a capacity of 10.
    fn one_room_hall() -> crate::config::Config {
        crate::config::parse(
            "[hall]\nid = \"h\"\ndistrict = \"d\"\n[uplink]\nbroker = \"mqtt://127.0.0.1:1\"\n\
             [[rooms]]\nid = \"lobby\"\ncapacity = 10\n",
            std::path::Path::new("."),
            &crate::config::Overrides::default(),
        )
        .expect("a valid config")
    }

    #[test]
    fn a_stopped_terminal_intake_is_on_the_page_in_chinese_first() {
        let config = one_room_hall();
        let snapshot = Snapshot {
            terminal_intake_stopped: Some("ingest"),
            ..Snapshot::quiet(at("2026-12-01T06:00:00Z"), 1)
        };
        let view = build(&config, &snapshot, None);
        assert_eq!(view.terminal_intake_stopped.as_deref(), Some("ingest"));
        assert!(
            crate::status::page::attention(&view)
                .iter()
                .any(|p| p.starts_with("终端接入已停止")),
            "{:?}",
            crate::status::page::attention(&view)
        );
    }

    #[test]
    fn a_full_disk_is_on_the_page_in_one_sentence_chinese_first_until_it_is_over() {
        let config = one_room_hall();
        let mut snapshot = Snapshot::quiet(at("2026-12-01T06:00:00Z"), 1);
        snapshot.uplink.connected = true;
        snapshot.outbox.disk_full = true;
        let view = build(&config, &snapshot, None);
        assert!(
            view.storage_fault
                .as_deref()
                .is_some_and(|s| s.starts_with("存储空间已满")),
            "{view:?}"
        );
        let attention = crate::status::page::attention(&view);
        assert_eq!(attention.len(), 1, "{attention:?}");
        assert!(attention[0].starts_with("存储空间已满"));
        snapshot.outbox.write_failing = true;
        let view = build(&config, &snapshot, None);
        assert!(
            crate::status::page::attention(&view)[0].starts_with("数据无法保存"),
            "the worst fault is named"
        );
        snapshot.outbox = Default::default();
        let view = build(&config, &snapshot, None);
        assert_eq!(view.storage_fault, None);
        assert!(crate::status::page::attention(&view).is_empty());
    }
}
