//! The status summary as plain text, for `hallgate status` in a terminal: the same view as
//! the page, the same words, one screen.

use std::fmt::Write;

use super::page::attention;
use super::view::{Condition, LinkView, StateView};
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

/// "20.0 KiB", "64.0 MiB".
pub fn bytes_words(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["bytes", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// "17 messages waiting (20.0 KiB)", or "none waiting".
pub fn backlog_words(l: &LinkView) -> String {
    match l.backlog_messages {
        0 => "none waiting".into(),
        1 => format!("1 message waiting ({})", bytes_words(l.backlog_bytes)),
        n => format!("{n} messages waiting ({})", bytes_words(l.backlog_bytes)),
    }
}

/// "412 hours (about 17 days)", or what is known when no estimate exists.
pub fn buffer_left_words(l: &LinkView) -> String {
    match l.buffer_left_hours {
        Some(h) if h >= 48.0 => format!("{h:.0} hours (about {:.0} days)", h / 24.0),
        Some(h) if h >= 1.0 => format!("{h:.0} hours"),
        Some(h) => format!("{:.0} minutes — almost full", (h * 60.0).max(0.0)),
        None if l.connected => format!(
            "all of it — nothing is piling up ({:.1} % of {} in use)",
            l.outbox_used_percent,
            bytes_words(l.outbox_max_bytes)
        ),
        None => format!(
            "still measuring ({:.1} % of {} in use)",
            l.outbox_used_percent,
            bytes_words(l.outbox_max_bytes)
        ),
    }
}

/// The summary `hallgate status` prints.
pub fn render(view: &StateView) -> String {
    let mut t = String::new();
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

    let l = &view.link;
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
    t
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

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(bytes_words(512), "512 bytes");
        assert_eq!(bytes_words(20_480), "20.0 KiB");
        assert_eq!(bytes_words(64 << 20), "64.0 MiB");
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
    const PINNED_TROUBLED: &str = r#"Tianlin (天林) (h-1) — 2026-12-01 14:17:00 hall time (Asia/Shanghai), clock NOT synchronised
Needs attention: 终端接入已停止 (terminal intake stopped): the face terminals cannot deliver; restart the gateway; Reading room (阅览室) is over capacity; pc-reading is offline; rs485 is stale; no link to the central platform; the offline buffer is filling up; the clock is not synchronised.

Rooms — visits today 120, in the hall now 56 of 53
  Reading room (阅览室)     52 of 50     104 %  OVER CAPACITY
  Health                     4 of 3       33 %

Devices
  pc-entrance  people_counter online since 08:00 (6 hours 16 minutes): answering
  pc-reading   people_counter OFFLINE since 14:05 (12 minutes): no answer within 500 ms
  rs485        bus            STALE: quiet
  T1           terminal       waiting: no message yet

Central link: NOT CONNECTED since 14:00
  last upload: 13:59 (18 minutes ago)
  backlog: 17 messages waiting (20.0 KiB)
  offline buffer left: still measuring (85.5 % of 64.0 MiB in use)
  LOST: 2 messages could not be kept

Today's alerts
  (3 earlier alerts not shown)
  14:05  pc-reading is offline
  14:10  the link is lost
"#;
    /// What `render` wrote for [`QUIET`] before it was split into sections.
    const PINNED_QUIET: &str = r#"h (h) — 2026-12-01 06:17:00 hall time (UTC), clock synchronised
All is well.

Rooms — visits today 0, in the hall now 0 of 10
  lobby      0 of 10       0 %

Devices
  (none configured)

Central link: connected since 06:00
  last upload: nothing yet since the gateway started
  backlog: 1 message waiting (512 bytes)
  offline buffer left: 412 hours (about 17 days)

Today's alerts
  none
"#;
}
