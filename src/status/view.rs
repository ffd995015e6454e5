//! The one view every status output shares: `/api/v1/state` serialises it, the page, the
//! metrics and `hallgate status` render it. Built by a pure function from the config and a
//! core [`Snapshot`], so the page and the API can never disagree.
//!
//! Each device gets a [`Condition`] by these rules (documented for staff in `docs/status.md`):
//!
//! - **people counters**: `waiting` until the first attempt to reach them; `offline` when the
//!   driver says so (no answer, a refused connection, nonsense answers), with its reason;
//!   `stale` when it answers but has counted nobody for [`STALE_AFTER`] while another counter
//!   of the hall counted people within that time — the usual sign of a blocked or misaligned
//!   sensor, and quiet halls (night, one counter) never trip it; otherwise `online`.
//! - **RS-485 buses**: `online` while any counter on them answers, `offline` when none does
//!   but some have tried, `waiting` before that.
//! - **terminals**: `online` while heard from (passages or heartbeats) within
//!   [`TERMINAL_SILENT_AFTER`], `stale` when silent longer, `waiting` before the first message.

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::Snapshot;
use crate::config::{Config, CounterTransport, Zone};
pub use crate::format::rfc3339;
use crate::format::{duration_words, local_time, round3, secs_between};

/// Version of the `/api/v1/state` document; fields are only ever added within it.
pub const API_VERSION: u32 = 1;

/// A counter that answers but has counted nobody this long, while others counted, is stale.
pub const STALE_AFTER: SignedDuration = SignedDuration::from_hours(3);

/// Terminals send a heartbeat every minute or so; silent this long, one is stale.
pub const TERMINAL_SILENT_AFTER: SignedDuration = SignedDuration::from_mins(10);

/// Share of the outbox's bound above which the backlog is "filling up".
pub const OUTBOX_FILLING_PERCENT: f64 = 80.0;

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
    pub devices: Vec<DeviceView>,
    pub link: LinkView,
    /// Today's alerts, oldest first; at most [`super::alerts::MAX_ALERTS`].
    pub alerts: Vec<AlertView>,
    /// All alerts today, including those no longer in `alerts`.
    pub alerts_today: u64,
    /// The part of the terminal intake that has stopped (`listener`, `ingest`): terminals
    /// cannot deliver. Absent while they can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal_intake_stopped: Option<String>,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    PeopleCounter,
    Bus,
    Terminal,
}

impl DeviceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::PeopleCounter => "people_counter",
            DeviceKind::Bus => "bus",
            DeviceKind::Terminal => "terminal",
        }
    }

    /// Plain words, with the term staff know in brackets.
    pub fn words(self) -> &'static str {
        match self {
            DeviceKind::PeopleCounter => "People counter (客流计数器)",
            DeviceKind::Bus => "RS-485 bus (485总线)",
            DeviceKind::Terminal => "Face terminal (人脸识别测温一体机)",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    Online,
    Offline,
    Stale,
    Waiting,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Online => "online",
            Condition::Offline => "offline",
            Condition::Stale => "stale",
            Condition::Waiting => "waiting",
        }
    }

    pub fn words(self) -> &'static str {
        match self {
            Condition::Online => "Online (在线)",
            Condition::Offline => "Offline (离线)",
            Condition::Stale => "Stale (数据停滞)",
            Condition::Waiting => "Waiting (等待连接)",
        }
    }
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
        }
    }

    /// Whether staff should look at it (as opposed to "it is fine again").
    pub fn is_trouble(self) -> bool {
        !matches!(
            self,
            AlertKind::DeviceBackOnline | AlertKind::ClockSynchronised | AlertKind::LinkRestored
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

/// Builds the view of `snap` (alerts left empty: [`super::alerts::Observer`] copies them
/// from the snapshot).
/// `started` is when the gateway started; `link_since` when the link last changed state.
pub fn build(
    config: &Config,
    snap: &Snapshot,
    started: Timestamp,
    link_since: Option<Timestamp>,
) -> StateView {
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
        })
        .collect();

    let mut devices = Vec::new();
    for (i, (counter, health)) in config.counters.iter().zip(&snap.counters).enumerate() {
        let others_last = snap
            .counters
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .filter_map(|(_, c)| c.last_counted)
            .max();
        let judged = counter_condition(
            health.health.online,
            health.health.since,
            health.health.reason.as_deref(),
            health.last_counted,
            others_last,
            started,
            now,
            tz,
        );
        let door = &config.doors[counter.door];
        let zone = |z: Zone| match z {
            Zone::Outside => "street".to_string(),
            Zone::Room(r) => config.rooms[r].name.clone(),
        };
        let s = health.stats;
        devices.push(device(
            counter.id.clone(),
            DeviceKind::PeopleCounter,
            format!("door {}: {} → {}", door.id, zone(door.from), zone(door.to)),
            judged,
            now,
            tz,
            DeviceCounts {
                polls: Some(s.polls),
                errors: Some(
                    s.timeouts + s.crc_errors + s.exceptions + s.bad_answers + s.link_errors,
                ),
                ..DeviceCounts::default()
            },
        ));
    }
    for (b, (bus, s)) in config.buses.iter().zip(&snap.buses).enumerate() {
        let slaves: Vec<_> = config
            .counters
            .iter()
            .zip(&snap.counters)
            .filter(
                |(c, _)| matches!(c.transport, CounterTransport::ModbusRtu { bus, .. } if bus == b),
            )
            .map(|(_, h)| &h.health)
            .collect();
        let answering = slaves.iter().filter(|h| h.online == Some(true)).count();
        let tried = slaves.iter().filter(|h| h.online.is_some()).count();
        let judged = if answering > 0 {
            Judged {
                condition: Condition::Online,
                since: None,
                detail: format!("{answering} of {} counters on it answer", slaves.len()),
            }
        } else if tried > 0 {
            Judged {
                condition: Condition::Offline,
                since: slaves.iter().filter_map(|h| h.since).max(),
                detail: "no counter on it answers: check the USB adapter, the cable and the \
                         counters' power"
                    .into(),
            }
        } else {
            Judged {
                condition: Condition::Waiting,
                since: Some(started),
                detail: "waiting for the first answer".into(),
            }
        };
        devices.push(device(
            bus.id.clone(),
            DeviceKind::Bus,
            bus.serial.port.display().to_string(),
            judged,
            now,
            tz,
            DeviceCounts {
                polls: Some(s.polls),
                errors: Some(
                    s.timeouts + s.crc_errors + s.exceptions + s.bad_answers + s.link_errors,
                ),
                ..DeviceCounts::default()
            },
        ));
    }
    for (terminal, s) in config.terminals.iter().zip(&snap.terminals) {
        let judged = if s.login_refused {
            login_refused(terminal.id.as_str())
        } else {
            terminal_condition(s.last_seen_ms, started, now, tz)
        };
        devices.push(device(
            terminal.id.to_string(),
            DeviceKind::Terminal,
            config.rooms[terminal.room].name.clone(),
            judged,
            now,
            tz,
            DeviceCounts {
                messages: Some(s.messages),
                passages: Some(s.passages),
                rejected: Some(s.rejected.values().sum()),
                ..DeviceCounts::default()
            },
        ));
    }

    let o = &snap.outbox;
    let last_ack = (snap.uplink.last_ack_ms > 0)
        .then(|| Timestamp::from_millisecond(snap.uplink.last_ack_ms as i64).ok())
        .flatten();
    let link = LinkView {
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
        outbox_used_percent: if o.max_bytes == 0 {
            0.0
        } else {
            (o.bytes as f64 * 1000.0 / o.max_bytes as f64).round() / 10.0
        },
        buffer_left_hours: o.buffer_left_hours,
        dropped_messages: o.dropped + snap.uplink.dropped,
        disk_full: o.disk_full,
    };

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
        rooms,
        devices,
        link,
        alerts: Vec::new(),
        alerts_today: 0,
        terminal_intake_stopped: snap.terminal_intake_stopped.map(str::to_string),
    }
}

/// A device's condition, since when, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    pub condition: Condition,
    pub since: Option<Timestamp>,
    pub detail: String,
}

fn device(
    id: String,
    kind: DeviceKind,
    place: String,
    judged: Judged,
    now: Timestamp,
    tz: &TimeZone,
    counts: DeviceCounts,
) -> DeviceView {
    DeviceView {
        id,
        kind,
        place,
        condition: judged.condition,
        since: judged.since.map(rfc3339),
        since_local: judged.since.map(|t| local_time(t, now, tz)),
        for_secs: judged.since.map(|t| secs_between(t, now)),
        detail: judged.detail,
        counts,
    }
}

/// The people-counter rule (see the module header). `online`, `since` and `reason` are what
/// the driver last reported; `last_counted` when this counter last counted someone,
/// `others_last_counted` the latest any other counter did.
#[allow(clippy::too_many_arguments)]
pub fn counter_condition(
    online: Option<bool>,
    since: Option<Timestamp>,
    reason: Option<&str>,
    last_counted: Option<Timestamp>,
    others_last_counted: Option<Timestamp>,
    started: Timestamp,
    now: Timestamp,
    tz: &TimeZone,
) -> Judged {
    match online {
        None => Judged {
            condition: Condition::Waiting,
            since: Some(started),
            detail: "waiting for the first answer".into(),
        },
        Some(false) => Judged {
            condition: Condition::Offline,
            since,
            detail: reason.unwrap_or("does not answer").to_string(),
        },
        Some(true) => {
            // Quiet since its last count, or since it came (back) online, whichever is later.
            let quiet_since = last_counted
                .unwrap_or(started)
                .max(since.unwrap_or(started));
            let quiet_long = now.duration_since(quiet_since) >= STALE_AFTER;
            let others_busy = others_last_counted
                .is_some_and(|t| t > quiet_since && now.duration_since(t) < STALE_AFTER);
            if quiet_long && others_busy {
                Judged {
                    condition: Condition::Stale,
                    since: Some(quiet_since),
                    detail: format!(
                        "answers, but has counted nobody since {} ({}) while other doors \
                         counted people: check that nothing blocks the sensor",
                        local_time(quiet_since, now, tz),
                        duration_words(secs_between(quiet_since, now))
                    ),
                }
            } else {
                Judged {
                    condition: Condition::Online,
                    since,
                    detail: "answers".into(),
                }
            }
        }
    }
}

/// A pulled terminal whose login was refused: its client stopped (see
/// `devices::terminals::pull`), so it stays offline until the password is fixed — staff must
/// hear why, not only that it is silent.
pub fn login_refused(terminal: &str) -> Judged {
    Judged {
        condition: Condition::Offline,
        since: None,
        detail: format!(
            "终端 {terminal} 登录被拒，已停止重试以免锁定账户 (login refused; stopped retrying so \
             the device does not lock the account): 请核对密码文件并重新加载配置 (fix the \
             password file and reload)"
        ),
    }
}

/// The terminal rule (see the module header); `last_seen_ms` is 0 before the first message.
pub fn terminal_condition(
    last_seen_ms: u64,
    started: Timestamp,
    now: Timestamp,
    tz: &TimeZone,
) -> Judged {
    let last = (last_seen_ms > 0)
        .then(|| Timestamp::from_millisecond(last_seen_ms as i64).ok())
        .flatten();
    match last {
        None => Judged {
            condition: Condition::Waiting,
            since: Some(started),
            detail: "no message since the gateway started".into(),
        },
        Some(t) if now.duration_since(t) >= TERMINAL_SILENT_AFTER => Judged {
            condition: Condition::Stale,
            since: Some(t),
            detail: format!(
                "no message since {} ({}); terminals send a heartbeat every minute or so: \
                 check its power and network cable",
                local_time(t, now, tz),
                duration_words(secs_between(t, now))
            ),
        },
        Some(t) => Judged {
            condition: Condition::Online,
            since: None,
            detail: format!("last message at {}", local_time(t, now, tz)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tz() -> TimeZone {
        TimeZone::get("Asia/Shanghai").expect("bundled")
    }

    fn at(text: &str) -> Timestamp {
        text.parse().expect("a valid timestamp")
    }

    #[test]
    fn a_counter_that_answers_but_counts_nobody_while_others_count_is_stale() {
        let started = at("2026-12-01T00:00:00Z");
        let online_since = Some(at("2026-12-01T00:00:05Z"));
        let last = Some(at("2026-12-01T01:00:00Z"));
        let others = Some(at("2026-12-01T04:30:00Z"));
        let judged = counter_condition(
            Some(true),
            online_since,
            None,
            last,
            others,
            started,
            at("2026-12-01T04:31:00Z"),
            &tz(),
        );
        assert_eq!(judged.condition, Condition::Stale);
        assert_eq!(judged.since, last);
        assert!(
            judged.detail.contains("since 09:00 (3 hours 31 minutes)"),
            "{}",
            judged.detail
        );
    }

    #[test]
    fn a_quiet_hall_is_not_stale_and_neither_is_a_short_lull() {
        let started = at("2026-12-01T00:00:00Z");
        let last = Some(at("2026-12-01T01:00:00Z"));
        let judge = |others: Option<&str>, now: &str| {
            counter_condition(
                Some(true),
                Some(started),
                None,
                last,
                others.map(at),
                started,
                at(now),
                &tz(),
            )
            .condition
        };
        // Nobody else counted for three hours either: the hall is closed, not the sensor.
        assert_eq!(
            judge(Some("2026-12-01T00:59:00Z"), "2026-12-01T05:00:00Z"),
            Condition::Online
        );
        // Nobody else at all (a hall with one counter).
        assert_eq!(judge(None, "2026-12-01T05:00:00Z"), Condition::Online);
        // Others count, but this one has been quiet for only two hours.
        assert_eq!(
            judge(Some("2026-12-01T02:59:00Z"), "2026-12-01T03:00:00Z"),
            Condition::Online
        );
        // A counter that came back online recently is judged from then on.
        let judged = counter_condition(
            Some(true),
            Some(at("2026-12-01T04:00:00Z")),
            None,
            last,
            Some(at("2026-12-01T04:30:00Z")),
            started,
            at("2026-12-01T04:31:00Z"),
            &tz(),
        );
        assert_eq!(judged.condition, Condition::Online);
    }

    #[test]
    fn offline_and_waiting_counters_say_why_and_since_when() {
        let started = at("2026-12-01T00:00:00Z");
        let off = counter_condition(
            Some(false),
            Some(at("2026-12-01T00:10:00Z")),
            Some("no answer within 500 ms"),
            None,
            None,
            started,
            at("2026-12-01T00:20:00Z"),
            &tz(),
        );
        assert_eq!(off.condition, Condition::Offline);
        assert_eq!(off.detail, "no answer within 500 ms");
        assert_eq!(off.since, Some(at("2026-12-01T00:10:00Z")));
        let waiting = counter_condition(None, None, None, None, None, started, started, &tz());
        assert_eq!(waiting.condition, Condition::Waiting);
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
            taken: std::time::Instant::now(),
            at: now,
            day: jiff::civil::date(2026, 12, 1),
            rooms: vec![crate::status::RoomFigures::default()],
            visitors_today: 0,
            clock_synced: true,
            counters: Vec::new(),
            buses: Vec::new(),
            terminals: vec![terminal.clone()],
            terminals_unattributed: Default::default(),
            terminal_intake_stopped: None,
            terminal_endpoint: Default::default(),
            outbox: Default::default(),
            uplink: Default::default(),
            bookings: Default::default(),
            fevers: Vec::new(),
            alerts: Vec::new(),
            alerts_today: 0,
        };
        let device = |snapshot: &Snapshot| {
            build(&config, snapshot, now, None)
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

    #[test]
    fn a_silent_terminal_turns_stale_after_ten_minutes() {
        let started = at("2026-12-01T00:00:00Z");
        let seen = at("2026-12-01T00:30:00Z").as_millisecond() as u64;
        let judge = |now: &str| terminal_condition(seen, started, at(now), &tz()).condition;
        assert_eq!(judge("2026-12-01T00:39:59Z"), Condition::Online);
        assert_eq!(judge("2026-12-01T00:40:00Z"), Condition::Stale);
        assert_eq!(
            terminal_condition(0, started, started, &tz()).condition,
            Condition::Waiting
        );
    }
}
