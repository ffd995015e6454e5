//! The status summary as plain text, for `hallgate status` in a terminal: the same view as
//! the page, the same words ([`super::words`], which the page uses too), one screen.

use std::fmt::Write;

use super::view::{Condition, LinkView, StateView};
use super::words::{attention, backlog_words, buffer_left_words};
use crate::format::duration_words;

/// Columns `text` takes in a terminal: East Asian wide characters (Chinese room names,
/// fullwidth brackets) take two.
pub fn display_width(text: &str) -> usize {
    text.chars().map(char_width).sum()
}

/// Columns one character takes in a terminal: 2 for East Asian wide and fullwidth forms.
pub fn char_width(c: char) -> usize {
    match u32::from(c) {
        0x1100..=0x115F
        | 0x2E80..=0x303E
        | 0x3041..=0x33FF
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xA000..=0xA4CF
        | 0xAC00..=0xD7A3
        | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F
        | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6
        | 0x20000..=0x3FFFD => 2,
        _ => 1,
    }
}

/// The summary `hallgate status` prints: a header, then rooms, devices, the central link and
/// today's alerts, a section each.
pub fn render(view: &StateView) -> String {
    let mut t = String::new();
    header(&mut t, view);
    rooms(&mut t, view);
    devices(&mut t, view);
    link(&mut t, &view.link);
    alerts(&mut t, view);
    t
}

/// The hall, its time and clock, and what needs attention.
fn header(t: &mut String, view: &StateView) {
    let _ = writeln!(
        t,
        "{} ({}) — {} hall time ({}), clock {}",
        view.hall.name,
        view.hall.id,
        view.generated_local,
        view.hall.time_zone,
        if view.clock_synced {
            "synchronised"
        } else {
            "NOT synchronised"
        }
    );
    let problems = attention(view);
    if problems.is_empty() {
        let _ = writeln!(t, "All is well.");
    } else {
        let _ = writeln!(t, "Needs attention: {}.", problems.join("; "));
    }
}

fn rooms(t: &mut String, view: &StateView) {
    let _ = writeln!(
        t,
        "\nRooms — visits today {}, in the hall now {} of {}",
        view.visits_today, view.occupancy, view.capacity
    );
    let width = view
        .rooms
        .iter()
        .map(|r| display_width(&r.name))
        .max()
        .unwrap_or(0);
    for r in &view.rooms {
        let pad = width - display_width(&r.name);
        let _ = writeln!(
            t,
            "  {}{}  {:>5} of {:<5} {:>4.0} %{}",
            r.name,
            " ".repeat(pad),
            r.occupancy,
            r.capacity,
            r.utilisation * 100.0,
            if r.over_capacity {
                "  OVER CAPACITY"
            } else {
                ""
            }
        );
    }
}

fn devices(t: &mut String, view: &StateView) {
    let _ = writeln!(t, "\nDevices");
    if view.devices.is_empty() {
        let _ = writeln!(t, "  (none configured)");
    }
    let width = view
        .devices
        .iter()
        .map(|d| display_width(&d.id))
        .max()
        .unwrap_or(0);
    for d in &view.devices {
        let since = match (&d.since_local, d.for_secs) {
            (Some(local), Some(secs)) => format!(" since {local} ({})", duration_words(secs)),
            _ => String::new(),
        };
        let state = match d.condition {
            Condition::Online => "online",
            Condition::Offline => "OFFLINE",
            Condition::Stale => "STALE",
            Condition::Waiting => "waiting",
        };
        let pad = width - display_width(&d.id);
        let _ = writeln!(
            t,
            "  {}{}  {:<14} {state}{since}: {}",
            d.id,
            " ".repeat(pad),
            d.kind.as_str(),
            d.detail
        );
    }
}

fn link(t: &mut String, l: &LinkView) {
    let _ = writeln!(
        t,
        "\nCentral link: {}{}",
        if l.connected {
            "connected"
        } else {
            "NOT CONNECTED"
        },
        l.since_local
            .as_deref()
            .map(|s| format!(" since {s}"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        t,
        "  last upload: {}",
        match (&l.last_upload_local, l.last_upload_ago_secs) {
            (Some(local), Some(ago)) => format!("{local} ({} ago)", duration_words(ago)),
            _ => "nothing yet since the gateway started".into(),
        }
    );
    let _ = writeln!(t, "  backlog: {}", backlog_words(l));
    let _ = writeln!(t, "  offline buffer left: {}", buffer_left_words(l));
    if l.dropped_messages > 0 {
        let _ = writeln!(
            t,
            "  LOST: {} messages could not be kept",
            l.dropped_messages
        );
    }
}

fn alerts(t: &mut String, view: &StateView) {
    let _ = writeln!(t, "\nToday's alerts");
    if view.alerts.is_empty() {
        let _ = writeln!(t, "  none");
    }
    let hidden = view.alerts_today.saturating_sub(view.alerts.len() as u64);
    if hidden > 0 {
        let _ = writeln!(t, "  ({hidden} earlier alerts not shown)");
    }
    for a in &view.alerts {
        let _ = writeln!(t, "  {}  {}", a.at_local, a.message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chinese_characters_take_two_columns() {
        assert_eq!(display_width("Lobby"), 5);
        assert_eq!(display_width("Lobby (大厅)"), 12);
        assert_eq!(display_width("阅览室"), 6);
    }

    /// A hall in trouble: every section has something to say, and every device condition
    /// shows, so a line out of place or a changed word fails the pinned summary.
    const TROUBLED: &str = r#"{
        "api_version": 1,
        "hall": {"id": "h-1", "name": "Tianlin (天林)", "time_zone": "Asia/Shanghai"},
        "generated_at": "2026-12-01T06:17:00Z", "generated_local": "2026-12-01 14:17:00",
        "day": "2026-12-01", "clock_synced": false,
        "visits_today": 120, "occupancy": 56, "capacity": 53,
        "rooms": [
            {"id": "reading", "name": "Reading room (阅览室)", "occupancy": 52, "capacity": 50,
             "utilisation": 1.04, "over_capacity": true, "entries_today": 60, "exits_today": 8},
            {"id": "health", "name": "Health", "occupancy": 4, "capacity": 3,
             "utilisation": 0.333, "over_capacity": false, "entries_today": 9, "exits_today": 5}
        ],
        "devices": [
            {"id": "pc-entrance", "kind": "people_counter", "place": "door entrance",
             "condition": "online", "since": "2026-12-01T00:00:05Z", "since_local": "08:00",
             "for_secs": 22615, "detail": "answering", "counts": {}},
            {"id": "pc-reading", "kind": "people_counter", "place": "door reading",
             "condition": "offline", "since": "2026-12-01T06:05:00Z", "since_local": "14:05",
             "for_secs": 720, "detail": "no answer within 500 ms", "counts": {}},
            {"id": "rs485", "kind": "bus", "place": "/dev/ttyUSB0", "condition": "stale",
             "detail": "quiet", "counts": {}},
            {"id": "T1", "kind": "terminal", "place": "Lobby", "condition": "waiting",
             "detail": "no message yet", "counts": {}}
        ],
        "link": {"connected": false, "since": "2026-12-01T06:00:00Z", "since_local": "14:00",
                 "last_upload": "2026-12-01T05:59:00Z", "last_upload_local": "13:59",
                 "last_upload_ago_secs": 1080, "delivered": 3, "backlog_messages": 17,
                 "backlog_bytes": 20480, "outbox_max_bytes": 67108864,
                 "outbox_used_percent": 85.5, "dropped_messages": 2, "disk_full": false},
        "alerts": [
            {"at": "2026-12-01T06:05:00Z", "at_local": "14:05", "kind": "device_offline",
             "message": "pc-reading is offline"},
            {"at": "2026-12-01T06:10:00Z", "at_local": "14:10", "kind": "link_lost",
             "message": "the link is lost"}
        ],
        "alerts_today": 5,
        "terminal_intake_stopped": "ingest"
    }"#;

    /// A quiet, healthy hall: the "all is well" and "none" lines.
    const QUIET: &str = r#"{
        "api_version": 1,
        "hall": {"id": "h", "name": "h", "time_zone": "UTC"},
        "generated_at": "2026-12-01T06:17:00Z", "generated_local": "2026-12-01 06:17:00",
        "day": "2026-12-01", "clock_synced": true,
        "visits_today": 0, "occupancy": 0, "capacity": 10,
        "rooms": [
            {"id": "lobby", "name": "lobby", "occupancy": 0, "capacity": 10,
             "utilisation": 0.0, "over_capacity": false, "entries_today": 0, "exits_today": 0}
        ],
        "devices": [],
        "link": {"connected": true, "since": "2026-12-01T06:00:00Z", "since_local": "06:00",
                 "delivered": 0, "backlog_messages": 1, "backlog_bytes": 512,
                 "outbox_max_bytes": 67108864, "outbox_used_percent": 0.0,
                 "buffer_left_hours": 412.3, "dropped_messages": 0, "disk_full": false},
        "alerts": [],
        "alerts_today": 0
    }"#;

    fn summary(json: &str) -> String {
        render(&serde_json::from_str(json).expect("a valid view"))
    }

    #[test]
    fn the_summary_of_a_troubled_hall_is_pinned_line_for_line() {
        let text = summary(TROUBLED);
        assert_eq!(text, PINNED_TROUBLED, "--- got ---\n{text}");
    }

    #[test]
    fn the_summary_of_a_quiet_hall_is_pinned_line_for_line() {
        let text = summary(QUIET);
        assert_eq!(text, PINNED_QUIET, "--- got ---\n{text}");
    }

    /// What `render` wrote for [`TROUBLED`] before it was split into sections.
    const PINNED_TROUBLED: &str =
        include_str!("../../tests/fixtures/status/summary-troubled-hall.txt");
    /// What `render` wrote for [`QUIET`] before it was split into sections.
    const PINNED_QUIET: &str = include_str!("../../tests/fixtures/status/summary-quiet-hall.txt");
}
