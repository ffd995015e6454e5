//! The words the page and `hallgate status` share: what needs attention, the backlog and the
//! offline buffer left, in the same phrases on both. Pure functions of a [`StateView`]; the
//! page ([`super::page`]) escapes them into HTML, the summary ([`super::text::render`]) prints
//! them as they are. Neither renderer is imported here, so both can import this.

use crate::status::view::{Condition, LinkView, OUTBOX_FILLING_PERCENT, StateView};

/// The one sentence for a terminal intake that has stopped.
pub const TERMINAL_INTAKE_STOPPED: &str = "终端接入已停止 (terminal intake stopped): the face \
    terminals cannot deliver; restart the gateway";

/// What needs looking at, in a few words each; empty when all is well.
pub fn attention(view: &StateView) -> Vec<String> {
    let mut out = Vec::new();
    if view.terminal_intake_stopped.is_some() {
        out.push(TERMINAL_INTAKE_STOPPED.into());
    }
    if let Some(fault) = &view.storage_fault {
        out.push(fault.clone());
    }
    for r in view.rooms.iter().filter(|r| r.over_capacity) {
        out.push(format!("{} is over capacity", r.name));
    }
    for d in &view.devices {
        match d.condition {
            Condition::Offline => out.push(format!("{} is offline", d.id)),
            Condition::Stale => out.push(format!("{} is stale", d.id)),
            Condition::Online | Condition::Waiting => {}
        }
        if d.condition != Condition::Offline && d.counting_doubt.is_some() {
            out.push(format!("{}'s counts are in doubt (计数存疑)", d.id));
        }
    }
    if !view.link.connected {
        out.push("no link to the central platform".into());
    }
    if view.link.outbox_used_percent >= OUTBOX_FILLING_PERCENT {
        out.push("the offline buffer is filling up".into());
    }
    if !view.clock_synced {
        out.push("the clock is not synchronised".into());
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(bytes_words(512), "512 bytes");
        assert_eq!(bytes_words(20_480), "20.0 KiB");
        assert_eq!(bytes_words(64 << 20), "64.0 MiB");
    }
}
