//! `/metrics`: the Prometheus text exposition format, version 0.0.4, written by hand (it is
//! small): a `# HELP` and a `# TYPE` line per family, its samples together, counters named
//! `…_total`, label values escaped.
//!
//! Label sets are bounded: labels carry only ids from the config (room, device, bus,
//! terminal) and closed enums (device kind, error kind, rejection reason, condition) — never
//! free text, names or anything about a person. A hall's series count is fixed by its config.

use std::fmt::Write;

use super::Snapshot;
use super::view::{Condition, StateView};
use crate::config::Config;

/// The exposition format's media type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy)]
enum Kind {
    Gauge,
    Counter,
}

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

/// The whole exposition for `snap`, whose view is `view`.
pub fn render(config: &Config, snap: &Snapshot, view: &StateView, version: &str) -> String {
    let mut e = Exposition {
        out: String::with_capacity(8 * 1024),
    };
    use Kind::{Counter, Gauge};

    e.family(
        "hallgate_build_info",
        Gauge,
        "The running gateway's version; always 1.",
    );
    e.sample("hallgate_build_info", &[("version", version)], 1.0);
    e.single(
        "hallgate_clock_synced",
        Gauge,
        "1 when the system clock is synchronised (figures are stamped with trusted time).",
        flag(snap.clock_synced),
    );
    e.single(
        "hallgate_snapshot_timestamp_seconds",
        Gauge,
        "When the core loop took the figures below (Unix time).",
        snap.at.as_millisecond() as f64 / 1000.0,
    );

    // Outbox.
    let o = &snap.outbox;
    e.single(
        "hallgate_outbox_pending_messages",
        Gauge,
        "Messages for the centre not yet acknowledged.",
        o.pending as f64,
    );
    e.single(
        "hallgate_outbox_bytes",
        Gauge,
        "Space the pending messages take, as counted against the bound.",
        o.bytes as f64,
    );
    e.single(
        "hallgate_outbox_max_bytes",
        Gauge,
        "The outbox's bound in force.",
        o.max_bytes as f64,
    );
    e.single(
        "hallgate_outbox_commits_total",
        Counter,
        "Write transactions (one fsync each).",
        o.commits as f64,
    );
    e.single(
        "hallgate_outbox_rolled_up_total",
        Counter,
        "Rows merged into coarser bins to make room.",
        o.rolled_up as f64,
    );
    e.single(
        "hallgate_outbox_dropped_total",
        Counter,
        "Rows dropped unsent because even roll-ups did not make room (data loss).",
        o.dropped as f64,
    );
    e.single(
        "hallgate_outbox_write_errors_total",
        Counter,
        "Write transactions that failed.",
        o.write_errors as f64,
    );
    e.single(
        "hallgate_outbox_disk_full",
        Gauge,
        "1 while the disk is full.",
        flag(o.disk_full),
    );
    e.family(
        "hallgate_outbox_buffer_left_hours",
        Gauge,
        "Hours until the outbox is full at the current rate; absent while nothing piles up.",
    );
    if let Some(hours) = o.buffer_left_hours {
        e.sample("hallgate_outbox_buffer_left_hours", &[], hours);
    }

    // Uplink.
    let u = &snap.uplink;
    e.single(
        "hallgate_uplink_connected",
        Gauge,
        "1 while connected to the central broker.",
        flag(u.connected),
    );
    e.single(
        "hallgate_uplink_delivered_total",
        Counter,
        "Outbox messages acknowledged by the central broker.",
        u.delivered as f64,
    );
    e.single(
        "hallgate_uplink_dropped_total",
        Counter,
        "Messages that could never be sent (over the packet size limit).",
        u.dropped as f64,
    );
    e.single(
        "hallgate_uplink_connect_attempts_total",
        Counter,
        "Connection attempts to the central broker.",
        u.connect_attempts as f64,
    );
    e.single(
        "hallgate_uplink_tls_failures_total",
        Counter,
        "Failed TLS handshakes with the central broker (untrusted certificate, refused client certificate).",
        u.tls_failures as f64,
    );
    e.single(
        "hallgate_uplink_login_refusals_total",
        Counter,
        "Connections the central broker refused for the login (bad username or password, not authorised).",
        u.login_refusals as f64,
    );
    e.family(
        "hallgate_uplink_last_ack_timestamp_seconds",
        Gauge,
        "When the central broker last acknowledged an outbox message (Unix time); absent before the first.",
    );
    if u.last_ack_ms > 0 {
        e.sample(
            "hallgate_uplink_last_ack_timestamp_seconds",
            &[],
            u.last_ack_ms as f64 / 1000.0,
        );
    }

    // Devices: counters and buses share the families, told apart by `kind`.
    let devices: Vec<(&str, &str, &crate::devices::StatsSnapshot)> = config
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

    // Terminals.
    let terminals: Vec<(&str, &crate::devices::terminals::TerminalStatsSnapshot)> = config
        .terminals
        .iter()
        .zip(&snap.terminals)
        .map(|(t, s)| (t.id.as_str(), s))
        .collect();
    type Field = fn(&crate::devices::terminals::TerminalStatsSnapshot) -> u64;
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
        for (id, s) in &terminals {
            e.sample(name, &[("terminal", id)], field(s) as f64);
        }
    }
    e.family(
        "hallgate_terminal_rejected_total",
        Counter,
        "Messages rejected as malformed, by reason.",
    );
    for (id, s) in &terminals {
        for (reason, n) in &s.rejected {
            e.sample(
                "hallgate_terminal_rejected_total",
                &[("terminal", id), ("reason", reason)],
                *n as f64,
            );
        }
    }
    e.family(
        "hallgate_terminal_link_errors_total",
        Counter,
        "A pulled terminal's connection troubles (refused, timed out, cut, silent), by reason.",
    );
    for (id, s) in &terminals {
        for (reason, n) in &s.link_errors {
            e.sample(
                "hallgate_terminal_link_errors_total",
                &[("terminal", id), ("reason", reason)],
                *n as f64,
            );
        }
    }
    e.family(
        "hallgate_terminal_login_refused",
        Gauge,
        "1 when a pulled terminal refused the gateway's login and its client stopped (fix the password, reload).",
    );
    for (id, s) in &terminals {
        if s.login_refused {
            e.sample("hallgate_terminal_login_refused", &[("terminal", id)], 1.0);
        }
    }
    e.family(
        "hallgate_terminal_last_seen_timestamp_seconds",
        Gauge,
        "When the terminal last sent anything, heartbeats included (Unix time).",
    );
    for (id, s) in &terminals {
        if s.last_seen_ms > 0 {
            e.sample(
                "hallgate_terminal_last_seen_timestamp_seconds",
                &[("terminal", id)],
                s.last_seen_ms as f64 / 1000.0,
            );
        }
    }
    if !config.terminals.is_empty() || !config.cameras.is_empty() {
        e.single(
            "hallgate_terminal_intake_up",
            Gauge,
            "1 while the terminals can deliver; 0 once a part of the intake (the MQTT listener, \
             the ingest) has stopped.",
            if snap.terminal_intake_stopped.is_some() {
                0.0
            } else {
                1.0
            },
        );
        e.single(
            "hallgate_terminal_login_failures_total",
            Counter,
            "Terminal logins refused at the MQTT endpoint (wrong user or password, or an \
             address shut out after repeated failures).",
            snap.terminal_endpoint.login_failures as f64,
        );
        e.single(
            "hallgate_terminal_connections_refused_total",
            Counter,
            "Terminal connections refused because the login or the endpoint had too many.",
            snap.terminal_endpoint.refused as f64,
        );
    }
    let un = &snap.terminals_unattributed;
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

    // Bookings from the centre (reasons are a closed list).
    let b = &snap.bookings;
    e.single(
        "hallgate_bookings_stored",
        Gauge,
        "Bookings from the centre in the stored set now.",
        b.stored as f64,
    );
    e.single(
        "hallgate_bookings_accepted_total",
        Counter,
        "Bookings accepted from the centre's downlink messages.",
        b.accepted as f64,
    );
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

    // Rooms.
    type RoomField = fn(&super::view::RoomView) -> f64;
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
    e.single(
        "hallgate_visitors_today",
        Gauge,
        "People who came in from the street today (resets at closing time).",
        snap.visitors_today as f64,
    );
    e.single(
        "hallgate_alerts_today",
        Gauge,
        "Alerts the status page raised today (hall time).",
        view.alerts_today as f64,
    );
    e.out
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
}
