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
}
