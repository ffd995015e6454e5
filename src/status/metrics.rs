//! `/metrics`: the Prometheus text exposition format, version 0.0.4, written by hand (it is
//! small): a `# HELP` and a `# TYPE` line per family, its samples together, counters named
//! `…_total`, label values escaped.
//!
//! Label sets are bounded: labels carry only ids from the config (room, device, bus,
//! terminal) and closed enums (device kind, error kind, rejection reason, condition) — never
//! free text, names or anything about a person. A hall's series count is fixed by its config.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::view::{Condition, RoomView, StateView};
use super::{LinkSnapshot, Snapshot};
use crate::bookings::BookingCounts;
use crate::config::Config;
use crate::devices::StatsSnapshot;
use crate::devices::terminals::TerminalStatsSnapshot;
use crate::outbox::OutboxSnapshot;

/// The exposition format's media type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy)]
enum Kind {
    Gauge,
    Counter,
}
use Kind::{Counter, Gauge};

/// Builds one exposition, family by family.
struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape_label(value));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
    }

    /// A family with one unlabelled sample.
    fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// One-sample families in a row: name, kind, help, value.
    fn singles(&mut self, rows: &[(&str, Kind, &str, f64)]) {
        for &(name, kind, help, value) in rows {
            self.single(name, kind, help, value);
        }
    }

    /// A family whose one unlabelled sample is absent while there is no figure; its help and
    /// type are written all the same.
    fn optional(&mut self, name: &str, kind: Kind, help: &str, value: Option<f64>) {
        self.family(name, kind, help);
        if let Some(value) = value {
            self.sample(name, &[], value);
        }
    }
}

/// A label value: backslash, double quote and line feed escaped.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A help text: backslash and line feed escaped.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value as the format spells it (`+Inf`, `-Inf`, `NaN`).
pub fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value == f64::INFINITY {
        "+Inf".into()
    } else if value == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{value}")
    }
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// The whole exposition for `snap`, whose view is `view`: the families in a fixed order,
/// group by group.
pub fn render(config: &Config, snap: &Snapshot, view: &StateView, version: &str) -> String {
    let mut e = Exposition {
        out: String::with_capacity(8 * 1024),
    };
    gateway(&mut e, snap, version);
    outbox(&mut e, &snap.outbox);
    uplink(&mut e, &snap.uplink);
    devices(&mut e, config, snap, view);
    let terminals: Vec<(&str, &TerminalStatsSnapshot)> = config
        .terminals
        .iter()
        .zip(&snap.terminals)
        .map(|(t, s)| (t.id.as_str(), s))
        .collect();
    terminal_counts(&mut e, &terminals);
    terminal_troubles(&mut e, &terminals);
    if !config.terminals.is_empty() || !config.cameras.is_empty() {
        terminal_intake(&mut e, snap);
    }
    unattributed(&mut e, &snap.terminals_unattributed);
    bookings(&mut e, &snap.bookings);
    rooms(&mut e, view);
    e.singles(&[
        (
            "hallgate_visitors_today",
            Gauge,
            "People who came in from the street today (resets at closing time).",
            snap.visitors_today as f64,
        ),
        (
            "hallgate_alerts_today",
            Gauge,
            "Alerts the status page raised today (hall time).",
            view.alerts_today as f64,
        ),
    ]);
    e.out
}

/// The gateway itself: version, clock, when the figures were taken.
fn gateway(e: &mut Exposition, snap: &Snapshot, version: &str) {
    e.family(
        "hallgate_build_info",
        Gauge,
        "The running gateway's version; always 1.",
    );
    e.sample("hallgate_build_info", &[("version", version)], 1.0);
    e.singles(&[
        (
            "hallgate_clock_synced",
            Gauge,
            "1 when the system clock is synchronised (figures are stamped with trusted time).",
            flag(snap.clock_synced),
        ),
        (
            "hallgate_snapshot_timestamp_seconds",
            Gauge,
            "When the core loop took the figures below (Unix time).",
            snap.at.as_millisecond() as f64 / 1000.0,
        ),
    ]);
}

fn outbox(e: &mut Exposition, o: &OutboxSnapshot) {
    e.singles(&[
        (
            "hallgate_outbox_pending_messages",
            Gauge,
            "Messages for the centre not yet acknowledged.",
            o.pending as f64,
        ),
        (
            "hallgate_outbox_bytes",
            Gauge,
            "Space the pending messages take, as counted against the bound.",
            o.bytes as f64,
        ),
        (
            "hallgate_outbox_max_bytes",
            Gauge,
            "The outbox's bound in force.",
            o.max_bytes as f64,
        ),
        (
            "hallgate_outbox_commits_total",
            Counter,
            "Write transactions (one fsync each).",
            o.commits as f64,
        ),
        (
            "hallgate_outbox_rolled_up_total",
            Counter,
            "Rows merged into coarser bins to make room.",
            o.rolled_up as f64,
        ),
        (
            "hallgate_outbox_dropped_total",
            Counter,
            "Rows dropped unsent because even roll-ups did not make room (data loss).",
            o.dropped as f64,
        ),
        (
            "hallgate_outbox_write_errors_total",
            Counter,
            "Write transactions that failed.",
            o.write_errors as f64,
        ),
        (
            "hallgate_outbox_disk_full",
            Gauge,
            "1 while the disk is full.",
            flag(o.disk_full),
        ),
        (
            "hallgate_outbox_write_failing",
            Gauge,
            "1 while writes to the database fail: figures are kept in memory only.",
            flag(o.write_failing),
        ),
        (
            "hallgate_outbox_data_dir_unusable",
            Gauge,
            "1 while the data directory is gone and cannot be made again, or cannot be written.",
            flag(o.data_dir_unusable),
        ),
        (
            "hallgate_outbox_recreated_total",
            Counter,
            "Times the database was found deleted under the running gateway and made again.",
            o.recreated as f64,
        ),
    ]);
    e.optional(
        "hallgate_outbox_buffer_left_hours",
        Gauge,
        "Hours until the outbox is full at the current rate; absent while nothing piles up.",
        o.buffer_left_hours,
    );
}

fn uplink(e: &mut Exposition, u: &LinkSnapshot) {
    e.singles(&[
        (
            "hallgate_uplink_connected",
            Gauge,
            "1 while connected to the central broker.",
            flag(u.connected),
        ),
        (
            "hallgate_uplink_delivered_total",
            Counter,
            "Outbox messages acknowledged by the central broker.",
            u.delivered as f64,
        ),
        (
            "hallgate_uplink_dropped_total",
            Counter,
            "Messages that could never be sent (over the packet size limit).",
            u.dropped as f64,
        ),
        (
            "hallgate_uplink_connect_attempts_total",
            Counter,
            "Connection attempts to the central broker.",
            u.connect_attempts as f64,
        ),
        (
            "hallgate_uplink_tls_failures_total",
            Counter,
            "Failed TLS handshakes with the central broker (untrusted certificate, refused client certificate).",
            u.tls_failures as f64,
        ),
        (
            "hallgate_uplink_login_refusals_total",
            Counter,
            "Connections the central broker refused for the login (bad username or password, not authorised).",
            u.login_refusals as f64,
        ),
    ]);
    e.optional(
        "hallgate_uplink_last_ack_timestamp_seconds",
        Gauge,
        "When the central broker last acknowledged an outbox message (Unix time); absent before the first.",
        (u.last_ack_ms > 0).then(|| u.last_ack_ms as f64 / 1000.0),
    );
}

/// Counters and buses share the families, told apart by `kind`; the conditions come from the
/// view (terminals included), the request counts from the drivers.
fn devices(e: &mut Exposition, config: &Config, snap: &Snapshot, view: &StateView) {
    e.family(
        "hallgate_device_online",
        Gauge,
        "1 while the device answers (a bus: while any counter on it does).",
    );
    for d in &view.devices {
        e.sample(
            "hallgate_device_online",
            &[("device", &d.id), ("kind", d.kind.as_str())],
            flag(matches!(d.condition, Condition::Online | Condition::Stale)),
        );
    }
    e.family(
        "hallgate_device_condition",
        Gauge,
        "1 for the condition the status page shows for the device (online, offline, stale, waiting).",
    );
    for d in &view.devices {
        for condition in [
            Condition::Online,
            Condition::Offline,
            Condition::Stale,
            Condition::Waiting,
        ] {
            e.sample(
                "hallgate_device_condition",
                &[
                    ("device", &d.id),
                    ("kind", d.kind.as_str()),
                    ("condition", condition.as_str()),
                ],
                flag(d.condition == condition),
            );
        }
    }
    let devices: Vec<(&str, &str, &StatsSnapshot)> = config
        .counters
        .iter()
        .zip(&snap.counters)
        .map(|(c, h)| (c.id.as_str(), "people_counter", &h.stats))
        .chain(
            config
                .buses
                .iter()
                .zip(&snap.buses)
                .map(|(b, s)| (b.id.as_str(), "bus", s)),
        )
        .collect();
    e.family(
        "hallgate_device_polls_total",
        Counter,
        "Requests made to a counter or bus (frames received, for streaming counters).",
    );
    for (id, kind, s) in &devices {
        e.sample(
            "hallgate_device_polls_total",
            &[("device", id), ("kind", kind)],
            s.polls as f64,
        );
    }
    e.family(
        "hallgate_device_errors_total",
        Counter,
        "Failed requests to a counter or bus, by kind of failure.",
    );
    for (id, kind, s) in &devices {
        for (error, n) in [
            ("timeout", s.timeouts),
            ("crc", s.crc_errors),
            ("exception", s.exceptions),
            ("bad_answer", s.bad_answers),
            ("link", s.link_errors),
        ] {
            e.sample(
                "hallgate_device_errors_total",
                &[("device", id), ("kind", kind), ("error", error)],
                n as f64,
            );
        }
    }
}

/// What each terminal sent, one family per count.
fn terminal_counts(e: &mut Exposition, terminals: &[(&str, &TerminalStatsSnapshot)]) {
    type Field = fn(&TerminalStatsSnapshot) -> u64;
    let per_terminal: [(&str, &str, Field); 5] = [
        (
            "hallgate_terminal_messages_total",
            "Messages received from the terminal (all kinds).",
            |s| s.messages,
        ),
        (
            "hallgate_terminal_passages_total",
            "Passages counted (each once).",
            |s| s.passages,
        ),
        (
            "hallgate_terminal_duplicates_total",
            "Re-sent events dropped.",
            |s| s.duplicates,
        ),
        (
            "hallgate_terminal_ignored_total",
            "Heartbeats and other messages that are not passages.",
            |s| s.ignored,
        ),
        (
            "hallgate_terminal_bad_snapshots_total",
            "Passages whose snapshot could not be used (counted as one person).",
            |s| s.bad_snapshots,
        ),
    ];
    for (name, help, field) in per_terminal {
        e.family(name, Counter, help);
        for (id, s) in terminals {
            e.sample(name, &[("terminal", id)], field(s) as f64);
        }
    }
}

/// What went wrong with each terminal, by reason, and when it was last heard from.
fn terminal_troubles(e: &mut Exposition, terminals: &[(&str, &TerminalStatsSnapshot)]) {
    type Reasons = fn(&TerminalStatsSnapshot) -> &BTreeMap<&'static str, u64>;
    let by_reason: [(&str, &str, Reasons); 2] = [
        (
            "hallgate_terminal_rejected_total",
            "Messages rejected as malformed, by reason.",
            |s| &s.rejected,
        ),
        (
            "hallgate_terminal_link_errors_total",
            "A pulled terminal's connection troubles (refused, timed out, cut, silent), by reason.",
            |s| &s.link_errors,
        ),
    ];
    for (name, help, reasons) in by_reason {
        e.family(name, Counter, help);
        for (id, s) in terminals {
            for (reason, n) in reasons(s) {
                e.sample(name, &[("terminal", id), ("reason", reason)], *n as f64);
            }
        }
    }
    type Present = fn(&TerminalStatsSnapshot) -> Option<f64>;
    let when_present: [(&str, &str, Present); 2] = [
        (
            "hallgate_terminal_login_refused",
            "1 when a pulled terminal refused the gateway's login and its client stopped (fix the password, reload).",
            |s| s.login_refused.then_some(1.0),
        ),
        (
            "hallgate_terminal_last_seen_timestamp_seconds",
            "When the terminal last sent anything, heartbeats included (Unix time).",
            |s| (s.last_seen_ms > 0).then(|| s.last_seen_ms as f64 / 1000.0),
        ),
    ];
    for (name, help, value) in when_present {
        e.family(name, Gauge, help);
        for (id, s) in terminals {
            if let Some(value) = value(s) {
                e.sample(name, &[("terminal", id)], value);
            }
        }
    }
}

/// The terminals' intake as a whole: only in a hall that has terminals or cameras.
fn terminal_intake(e: &mut Exposition, snap: &Snapshot) {
    e.singles(&[
        (
            "hallgate_terminal_intake_up",
            Gauge,
            "1 while the terminals can deliver; 0 once a part of the intake (the MQTT listener, \
             the ingest) has stopped.",
            if snap.terminal_intake_stopped.is_some() {
                0.0
            } else {
                1.0
            },
        ),
        (
            "hallgate_terminal_login_failures_total",
            Counter,
            "Terminal logins refused at the MQTT endpoint (wrong user or password, or an \
             address shut out after repeated failures).",
            snap.terminal_endpoint.login_failures as f64,
        ),
        (
            "hallgate_terminal_connections_refused_total",
            Counter,
            "Terminal connections refused because the login or the endpoint had too many.",
            snap.terminal_endpoint.refused as f64,
        ),
    ]);
}

fn unattributed(e: &mut Exposition, un: &TerminalStatsSnapshot) {
    e.single(
        "hallgate_terminals_unattributed_messages_total",
        Counter,
        "Messages from terminals not in the config, or on topics no profile matches.",
        un.messages as f64,
    );
    e.family(
        "hallgate_terminals_unattributed_rejected_total",
        Counter,
        "Unattributed messages rejected, by reason.",
    );
    for (reason, n) in &un.rejected {
        e.sample(
            "hallgate_terminals_unattributed_rejected_total",
            &[("reason", reason)],
            *n as f64,
        );
    }
}

/// Bookings from the centre (reasons are a closed list).
fn bookings(e: &mut Exposition, b: &BookingCounts) {
    e.singles(&[
        (
            "hallgate_bookings_stored",
            Gauge,
            "Bookings from the centre in the stored set now.",
            b.stored as f64,
        ),
        (
            "hallgate_bookings_accepted_total",
            Counter,
            "Bookings accepted from the centre's downlink messages.",
            b.accepted as f64,
        ),
    ]);
    e.family(
        "hallgate_bookings_rejected_total",
        Counter,
        "Bookings rejected one by one (the others in their message stand), by reason.",
    );
    for reason in crate::bookings::Rejection::LABELS {
        let n = b.rejected.get(reason).copied().unwrap_or(0);
        e.sample(
            "hallgate_bookings_rejected_total",
            &[("reason", reason)],
            n as f64,
        );
    }
    e.family(
        "hallgate_bookings_messages_rejected_total",
        Counter,
        "Bookings messages rejected as a whole (the stored set stays), by reason.",
    );
    for (reason, n) in &b.messages_rejected {
        e.sample(
            "hallgate_bookings_messages_rejected_total",
            &[("reason", reason)],
            *n as f64,
        );
    }
}

fn rooms(e: &mut Exposition, view: &StateView) {
    type RoomField = fn(&RoomView) -> f64;
    let rooms: [(&str, &str, RoomField); 4] = [
        ("hallgate_room_occupancy", "People in the room now.", |r| {
            r.occupancy as f64
        }),
        (
            "hallgate_room_capacity",
            "Most people the room may hold.",
            |r| f64::from(r.capacity),
        ),
        (
            "hallgate_room_entries_today",
            "People who came into the room today (resets at closing time).",
            |r| r.entries_today as f64,
        ),
        (
            "hallgate_room_exits_today",
            "People who left the room today (resets at closing time).",
            |r| r.exits_today as f64,
        ),
    ];
    for (name, help, field) in rooms {
        e.family(name, Gauge, help);
        for r in &view.rooms {
            e.sample(name, &[("room", &r.id)], field(r));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_escape_backslash_quote_and_newline() {
        assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
        assert_eq!(escape_label("阅览室"), "阅览室");
    }

    #[test]
    fn numbers_are_spelled_as_the_format_wants() {
        assert_eq!(number(1.0), "1");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
        assert_eq!(number(f64::NAN), "NaN");
    }

    #[test]
    fn a_family_has_help_type_and_labelled_samples() {
        let mut e = Exposition { out: String::new() };
        e.family("x_total", Kind::Counter, "Things\\counted\nhere.");
        e.sample(
            "x_total",
            &[("terminal", "T\"1"), ("reason", "oversized")],
            3.0,
        );
        assert_eq!(
            e.out,
            "# HELP x_total Things\\\\counted\\nhere.\n# TYPE x_total counter\n\
             x_total{terminal=\"T\\\"1\",reason=\"oversized\"} 3\n"
        );
    }

    /// A hall with a counter on the LAN, one on a bus and a terminal.
    fn busy_config() -> Config {
        crate::config::parse(
            "[hall]\nid = \"h-1\"\nname = \"Hall\"\ndistrict = \"d\"\n\
             time_zone = \"Asia/Shanghai\"\n\
             [uplink]\nbroker = \"mqtt://127.0.0.1:1\"\n\
             [[rooms]]\nid = \"lobby\"\nname = \"Lobby (大厅)\"\ncapacity = 80\n\
             [[rooms]]\nid = \"reading\"\nname = \"Reading\"\ncapacity = 3\n\
             [[doors]]\nid = \"entrance\"\nfrom = \"outside\"\nto = \"lobby\"\n\
             [[doors]]\nid = \"reading-door\"\nfrom = \"lobby\"\nto = \"reading\"\n\
             [[buses]]\nid = \"rs485\"\nport = \"/dev/null\"\nbaud = 19200\n\
             [[counters]]\nid = \"pc-entrance\"\ndoor = \"entrance\"\nprofile = \"generic-u32\"\n\
             transport = \"modbus_tcp\"\naddress = \"127.0.0.1:1\"\n\
             [[counters]]\nid = \"pc-reading\"\ndoor = \"reading-door\"\nprofile = \"generic-u16\"\n\
             transport = \"modbus_rtu\"\nbus = \"rs485\"\nunit_id = 1\n\
             [terminal_broker]\nexternal = \"mqtt://127.0.0.1:1\"\n\
             [[terminals]]\nid = \"T1\"\nprofile = \"hikvision-acs\"\nroom = \"lobby\"\n",
            std::path::Path::new("."),
            &crate::config::Overrides::default(),
        )
        .expect("a valid config")
    }

    /// [`busy_config`]'s hall, and a snapshot in which every figure differs from its
    /// neighbours, so a family or a sample out of place shows.
    fn busy_hall() -> (Config, Snapshot, StateView) {
        let config = busy_config();
        let at: jiff::Timestamp = "2026-12-01T06:17:00.250Z".parse().expect("a time");
        let started: jiff::Timestamp = "2026-12-01T00:00:00Z".parse().expect("a time");
        let stats = |n: u64| crate::devices::StatsSnapshot {
            polls: n,
            timeouts: n + 1,
            crc_errors: n + 2,
            exceptions: n + 3,
            bad_answers: n + 4,
            link_errors: n + 5,
            ..crate::devices::StatsSnapshot::default()
        };
        let health = |id: &str, online: Option<bool>, since: &str| crate::health::DeviceHealth {
            id: id.into(),
            kind: "people_counter",
            online,
            since: Some(since.parse().expect("a time")),
            reason: online
                .is_some_and(|o| !o)
                .then(|| "no answer within 500 ms".into()),
            ..crate::health::DeviceHealth::default()
        };
        let terminal = crate::devices::terminals::TerminalStatsSnapshot {
            messages: 40,
            passages: 31,
            duplicates: 2,
            earlier_day: 1,
            ignored: 6,
            rejected: [("oversized", 3), ("invalid_json", 4)]
                .into_iter()
                .collect(),
            bad_snapshots: 5,
            last_seen_ms: 1_796_105_700_500,
            login_refused: true,
            link_errors: [("refused", 7)].into_iter().collect(),
        };
        let mut snap = Snapshot {
            taken: std::time::Instant::now(),
            at,
            day: jiff::civil::date(2026, 12, 1),
            rooms: vec![
                super::super::RoomFigures {
                    occupancy: 52,
                    entries: 60,
                    exits: 8,
                    occupancy_corrected: 52,
                },
                super::super::RoomFigures {
                    occupancy: 4,
                    entries: 9,
                    exits: 5,
                    occupancy_corrected: 4,
                },
            ],
            visitors_today: 61,
            clock_synced: false,
            counters: vec![
                crate::health::CounterHealth {
                    health: health("pc-entrance", Some(true), "2026-12-01T00:00:05Z"),
                    stats: stats(100),
                    last_counted: Some("2026-12-01T06:16:00Z".parse().expect("a time")),
                },
                crate::health::CounterHealth {
                    health: health("pc-reading", Some(false), "2026-12-01T06:05:00Z"),
                    stats: stats(200),
                    last_counted: None,
                },
            ],
            devices: Vec::new(),
            buses: vec![stats(300)],
            terminals: vec![terminal],
            terminals_unattributed: crate::devices::terminals::TerminalStatsSnapshot {
                messages: 11,
                rejected: [("topic_mismatch", 12)].into_iter().collect(),
                ..Default::default()
            },
            terminal_intake_stopped: Some("ingest"),
            terminal_endpoint: crate::devices::terminals::EndpointCounts {
                login_failures: 13,
                refused: 14,
            },
            outbox: crate::outbox::OutboxSnapshot {
                pending: 17,
                bytes: 20_480,
                max_bytes: 64 << 20,
                commits: 900,
                rolled_up: 15,
                dropped: 16,
                write_errors: 18,
                disk_full: true,
                buffer_left_hours: Some(412.5),
                ..Default::default()
            },
            uplink: super::super::LinkSnapshot {
                connected: true,
                delivered: 500,
                dropped: 19,
                connect_attempts: 21,
                tls_failures: 22,
                login_refusals: 23,
                last_ack_ms: 1_796_105_810_125,
            },
            bookings: crate::bookings::BookingCounts {
                messages_accepted: 24,
                messages_rejected: [("not_json", 25)].into_iter().collect(),
                accepted: 26,
                rejected: [("bad_time", 27)].into_iter().collect(),
                stored: 28,
            },
            alerts: Vec::new(),
            alerts_today: 0,
        };
        // Judged as the core judges them each tick.
        snap.devices = crate::health::judge_devices(
            &config,
            &snap.counters,
            &snap.terminals,
            started,
            snap.at,
        );
        let mut view = super::super::view::build(&config, &snap, Some(started));
        view.alerts_today = 29;
        (config, snap, view)
    }

    #[test]
    fn the_whole_exposition_of_a_busy_hall_is_pinned_byte_for_byte() {
        let (config, snap, view) = busy_hall();
        let text = render(&config, &snap, &view, "1.2.3");
        assert_eq!(text, PINNED, "--- got ---\n{text}");
    }

    #[test]
    fn the_whole_exposition_of_a_quiet_hall_without_terminals_is_pinned_byte_for_byte() {
        let config = crate::config::parse(
            "[hall]\nid = \"h\"\ndistrict = \"d\"\n[uplink]\nbroker = \"mqtt://127.0.0.1:1\"\n\
             [[rooms]]\nid = \"lobby\"\ncapacity = 10\n",
            std::path::Path::new("."),
            &crate::config::Overrides::default(),
        )
        .expect("a valid config");
        let at: jiff::Timestamp = "2026-12-01T06:17:00Z".parse().expect("a time");
        let snap = Snapshot::quiet(at, 1);
        let view = super::super::view::build(&config, &snap, None);
        let text = render(&config, &snap, &view, "0.1.0");
        assert_eq!(text, PINNED_QUIET, "--- got ---\n{text}");
    }

    /// What `render` wrote for [`busy_hall`] before it was split into family groups.
    const PINNED: &str = include_str!("../../tests/fixtures/status/metrics-busy-hall.txt");
    /// The same for a hall with only a room: the optional families keep their header.
    const PINNED_QUIET: &str = include_str!("../../tests/fixtures/status/metrics-quiet-hall.txt");
}
