//! Device health: the condition of every counter, RS-485 bus and face terminal, judged by
//! rules from what the drivers reported and the clock of the tick.
//!
//! ```text
//! drivers ──DeviceEvent──► core (DeviceHealth, last counted) ──► judge_devices(now) ──┬─► alerts
//!                                                                                    └─► status views
//! ```
//!
//! The rules (documented for staff in `docs/status.md`):
//!
//! - **people counters**: `waiting` until the first attempt to reach them; `offline` when the
//!   driver says so (no answer, a refused connection, nonsense answers), with its reason;
//!   `stale` when it answers but has counted nobody for [`STALE_AFTER`] while another counter
//!   of the hall counted people within that time — the usual sign of a blocked or misaligned
//!   sensor, and quiet halls (night, one counter) never trip it; otherwise `online`.
//! - **RS-485 buses**: `online` while any counter on them answers, `offline` when none does
//!   but some have tried, `waiting` before that.
//! - **counting doubts** (a counter's figures, not its link): a reading that jumped beyond
//!   what the door can pass, or a fall the evidence calls a reset, is recorded in
//!   [`CountingDoubts`]; while one is open, an answering counter's detail says what it most
//!   likely means and what to check. Each kind (implausible jump, reset) closes at the first
//!   plausible count at least [`DOUBT_CLEARS_AFTER`] after the last doubtful reading: the
//!   counter has counted honestly again for a while (a word-order slip never does).
//! - **terminals**: `online` while heard from (passages or heartbeats) within
//!   [`TERMINAL_SILENT_AFTER`], `stale` when silent longer, `waiting` before the first
//!   message; `offline` when a pulled terminal refused the login (its client stopped).
//!
//! Pure: the figures and `now` come in as arguments, so the core judges once a tick and the
//! alert rules and the status page read the same conditions.

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::config::{Config, CounterTransport, Zone};
use crate::devices::StatsSnapshot;
use crate::devices::counter::{Counted, Doubt};
use crate::devices::terminals::TerminalStatsSnapshot;
use crate::format::{duration_words, local_time, secs_between};

/// A counter that answers but has counted nobody this long, while others counted, is stale.
pub const STALE_AFTER: SignedDuration = SignedDuration::from_hours(3);

/// A counting doubt stays open until the counter counts plausibly this long after the last
/// doubtful reading: long enough for staff to see it, short enough to clear within a visit.
pub const DOUBT_CLEARS_AFTER: SignedDuration = SignedDuration::from_mins(10);

/// Terminals send a heartbeat every minute or so; silent this long, one is stale.
pub const TERMINAL_SILENT_AFTER: SignedDuration = SignedDuration::from_mins(10);

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

/// A device's condition, since when, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    pub condition: Condition,
    pub since: Option<Timestamp>,
    pub detail: String,
}

/// What the gateway knows of one device's health, as its driver last reported it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceHealth {
    pub id: String,
    pub kind: &'static str,
    /// `None` until the first attempt to reach it.
    pub online: Option<bool>,
    pub since: Option<Timestamp>,
    pub reason: Option<String>,
    /// A counter's open counting doubts (see [`CountingDoubts`]).
    pub counting: CountingDoubts,
}

/// One open doubt about a counter's figures: the latest doubtful reading, and since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DoubtEpisode {
    pub since: Timestamp,
    pub last: Timestamp,
    /// The latest doubtful reading.
    pub doubt: Doubt,
    /// Doubtful readings in the episode.
    pub readings: u64,
}

/// A counter's open counting doubts: jumps nothing was counted from, and resets. Kept apart,
/// each opens and closes on its own (see the module header).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CountingDoubts {
    pub implausible: Option<DoubtEpisode>,
    pub reset: Option<DoubtEpisode>,
}

impl CountingDoubts {
    /// What the reading at `at` says: opens or extends a doubt, or closes those it has
    /// outlasted. True when anything changed.
    pub fn note(&mut self, at: Timestamp, step: &Counted) -> bool {
        if let Some(doubt) = step.doubt {
            let slot = if doubt.kind.is_reset() {
                &mut self.reset
            } else {
                &mut self.implausible
            };
            *slot = Some(match *slot {
                Some(open) => DoubtEpisode {
                    last: at.max(open.last),
                    doubt,
                    readings: open.readings + 1,
                    ..open
                },
                None => DoubtEpisode {
                    since: at,
                    last: at,
                    doubt,
                    readings: 1,
                },
            });
            return true;
        }
        if step.inward == 0 && step.outward == 0 {
            return false;
        }
        let mut changed = false;
        for slot in [&mut self.implausible, &mut self.reset] {
            if slot.is_some_and(|open| at.duration_since(open.last) >= DOUBT_CLEARS_AFTER) {
                *slot = None;
                changed = true;
            }
        }
        changed
    }

    /// The doubt staff should read first: a jump nothing was counted from, then a reset.
    pub fn worst(&self) -> Option<&DoubtEpisode> {
        self.implausible.as_ref().or(self.reset.as_ref())
    }
}

/// A counter's health as the core last saw it: its driver's report, its poll statistics and
/// when it last counted someone (since the gateway started).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterHealth {
    pub health: DeviceHealth,
    pub stats: StatsSnapshot,
    pub last_counted: Option<Timestamp>,
}

/// One device's judged condition: counters first (config order), then buses, then terminals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCondition {
    pub id: String,
    pub kind: DeviceKind,
    /// Its index among the config's devices of its kind (`counters`, `buses`, `terminals`).
    pub index: usize,
    /// Where it is: a counter's door, a terminal's room, a bus's serial port.
    pub place: String,
    pub judged: Judged,
    /// A counter's open counting doubts; none for other devices.
    pub counting: CountingDoubts,
}

/// Judges every device of the hall at `now`. `counters` and `terminals` are indexed like the
/// config's; `started` is when the gateway started (a device not heard from yet waits since
/// then).
pub fn judge_devices(
    config: &Config,
    counters: &[CounterHealth],
    terminals: &[TerminalStatsSnapshot],
    started: Timestamp,
    now: Timestamp,
) -> Vec<DeviceCondition> {
    let tz = &config.hall.time_zone;
    let mut devices = Vec::with_capacity(counters.len() + config.buses.len() + terminals.len());
    for (i, (counter, health)) in config.counters.iter().zip(counters).enumerate() {
        let others_last = counters
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .filter_map(|(_, c)| c.last_counted)
            .max();
        let door = &config.doors[counter.door];
        let zone = |z: Zone| match z {
            Zone::Outside => "street".to_string(),
            Zone::Room(r) => config.rooms[r].name.clone(),
        };
        devices.push(DeviceCondition {
            id: counter.id.clone(),
            kind: DeviceKind::PeopleCounter,
            index: i,
            place: format!("door {}: {} → {}", door.id, zone(door.from), zone(door.to)),
            judged: with_counting_doubts(
                counter_condition(
                    health.health.online,
                    health.health.since,
                    health.health.reason.as_deref(),
                    health.last_counted,
                    others_last,
                    started,
                    now,
                    tz,
                ),
                &health.health.counting,
            ),
            counting: health.health.counting,
        });
    }
    for (b, bus) in config.buses.iter().enumerate() {
        let slaves: Vec<&DeviceHealth> = config
            .counters
            .iter()
            .zip(counters)
            .filter(
                |(c, _)| matches!(c.transport, CounterTransport::ModbusRtu { bus, .. } if bus == b),
            )
            .map(|(_, h)| &h.health)
            .collect();
        devices.push(DeviceCondition {
            id: bus.id.clone(),
            kind: DeviceKind::Bus,
            index: b,
            place: bus.serial.port.display().to_string(),
            judged: bus_condition(&slaves, started),
            counting: CountingDoubts::default(),
        });
    }
    for (t, (terminal, s)) in config.terminals.iter().zip(terminals).enumerate() {
        let judged = if s.login_refused {
            login_refused(terminal.id.as_str())
        } else {
            terminal_condition(s.last_seen_ms, started, now, tz)
        };
        devices.push(DeviceCondition {
            id: terminal.id.to_string(),
            kind: DeviceKind::Terminal,
            index: t,
            place: config.rooms[terminal.room].name.clone(),
            judged,
            counting: CountingDoubts::default(),
        });
    }
    devices
}

/// The bus rule (see the module header), from the health of the counters on it.
pub fn bus_condition(slaves: &[&DeviceHealth], started: Timestamp) -> Judged {
    let answering = slaves.iter().filter(|h| h.online == Some(true)).count();
    let tried = slaves.iter().filter(|h| h.online.is_some()).count();
    if answering > 0 {
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

/// An answering counter with an open counting doubt says so, in place of "answers": its
/// figures are what staff need to look at. An offline or waiting counter keeps its reason.
pub fn with_counting_doubts(judged: Judged, doubts: &CountingDoubts) -> Judged {
    match doubts.worst() {
        Some(open) if judged.condition == Condition::Online => Judged {
            detail: format!("answers, but {}", open.doubt.hint()),
            ..judged
        },
        _ => judged,
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

    fn doubtful(kind: crate::devices::counter::DoubtKind) -> Counted {
        Counted {
            reset: kind.is_reset(),
            doubt: Some(Doubt {
                kind,
                which: "IN",
                from: 62_107,
                to: 0,
                limit: 100,
                elapsed_secs: Some(10),
                interrupted: true,
            }),
            ..Counted::default()
        }
    }

    fn counted(n: u64) -> Counted {
        Counted {
            inward: n,
            ..Counted::default()
        }
    }

    #[test]
    fn a_counting_doubt_closes_at_the_first_plausible_count_ten_minutes_after_the_last() {
        use crate::devices::counter::DoubtKind;
        let mut d = CountingDoubts::default();
        assert!(d.note(at("2026-12-01T06:00:00Z"), &doubtful(DoubtKind::WordOrder)));
        assert!(d.note(at("2026-12-01T06:05:00Z"), &doubtful(DoubtKind::Reset)));
        assert!(d.note(at("2026-12-01T06:06:00Z"), &doubtful(DoubtKind::WordOrder)));
        let open = d.implausible.expect("open");
        assert_eq!(
            (open.since, open.last, open.readings),
            (at("2026-12-01T06:00:00Z"), at("2026-12-01T06:06:00Z"), 2)
        );
        assert_eq!(d.worst().map(|o| o.doubt.kind), Some(DoubtKind::WordOrder));
        // Counting within ten minutes of a doubt, or nobody at all, closes nothing.
        assert!(!d.note(at("2026-12-01T06:14:59Z"), &counted(3)));
        assert!(!d.note(at("2026-12-01T06:30:00Z"), &counted(0)));
        // The reset's ten minutes are up first.
        assert!(d.note(at("2026-12-01T06:15:30Z"), &counted(1)));
        assert!(d.reset.is_none() && d.implausible.is_some());
        assert!(d.note(at("2026-12-01T06:16:00Z"), &counted(1)));
        assert_eq!(d, CountingDoubts::default());
    }

    #[test]
    fn an_answering_counter_with_a_doubt_says_what_to_check_and_an_offline_one_keeps_its_reason() {
        use crate::devices::counter::DoubtKind;
        let mut d = CountingDoubts::default();
        d.note(at("2026-12-01T06:00:00Z"), &doubtful(DoubtKind::Reset));
        let online = Judged {
            condition: Condition::Online,
            since: None,
            detail: "answers".into(),
        };
        let judged = with_counting_doubts(online, &d);
        assert_eq!(judged.condition, Condition::Online);
        assert!(
            judged
                .detail
                .starts_with("answers, but 计数器复位 (counter reset): IN 62107 → 0"),
            "{}",
            judged.detail
        );
        let offline = Judged {
            condition: Condition::Offline,
            since: None,
            detail: "no answer within 500 ms".into(),
        };
        assert_eq!(with_counting_doubts(offline.clone(), &d), offline);
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
