//! The status page: one self-contained HTML document for facilities staff, rendered from a
//! [`StateView`]. Plain English with the Chinese term staff know in brackets; big numbers in
//! one column for a phone; no external assets (the box has no internet): inline CSS, no
//! script, and a `<meta>` refresh every [`REFRESH_SECS`] seconds. Every string that comes
//! from the config or a device is HTML-escaped.
//!
//! Elements carry `data-` attributes (`data-room`, `data-occupancy`, `data-device`,
//! `data-condition`) so tests and scripts can find figures without parsing prose.

use std::fmt::Write;

use super::view::{AlertView, Condition, DeviceView, LinkView, RoomView, StateView};
/// Where `status::alerts` has always found it; the words now live with the summary's.
pub use super::words::attention;
use super::words::{backlog_words, buffer_left_words};
use crate::format::duration_words;

/// Seconds between the page's reloads of itself.
pub const REFRESH_SECS: u32 = 5;

const STYLE: &str = r#"
:root { color-scheme: light; --ok: #1b7f3b; --bad: #b3261e; --warn: #a05a00; --line: #ddd; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 40rem; padding: 0.75rem; font: 17px/1.4 system-ui, sans-serif; color: #111; background: #fafafa; }
h1 { font-size: 1.35rem; margin: 0.2rem 0; }
h2 { font-size: 1.15rem; margin: 1.4rem 0 0.5rem; border-bottom: 2px solid var(--line); padding-bottom: 0.2rem; }
p { margin: 0.25rem 0; }
.updated, footer, .sub { color: #555; font-size: 0.9rem; }
.banner { padding: 0.6rem 0.8rem; border-radius: 0.4rem; font-weight: 600; color: #fff; }
.banner.ok { background: var(--ok); }
.banner.bad { background: var(--bad); }
.banner ul { margin: 0.3rem 0 0; padding-left: 1.2rem; font-weight: 400; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 0.4rem; padding: 0.6rem 0.8rem; margin: 0.5rem 0; }
.card.bad { border-left: 0.4rem solid var(--bad); }
.card.warn { border-left: 0.4rem solid var(--warn); }
.card.ok { border-left: 0.4rem solid var(--ok); }
.row { display: flex; justify-content: space-between; align-items: baseline; gap: 0.5rem; flex-wrap: wrap; }
.name { font-weight: 600; }
.count { font-size: 1.6rem; }
.count b, .big b { font-size: 2rem; }
.bar { height: 0.8rem; background: #e6e6e6; border-radius: 0.4rem; overflow: hidden; margin: 0.3rem 0; }
.bar span { display: block; height: 100%; background: var(--ok); }
.over .bar span { background: var(--bad); }
.flag { color: var(--bad); font-weight: 700; }
.state { font-weight: 700; }
.ok .state { color: var(--ok); }
.bad .state { color: var(--bad); }
.warn .state { color: var(--warn); }
dl { margin: 0; }
dt { font-weight: 600; margin-top: 0.4rem; }
dd { margin: 0; font-size: 1.1rem; }
ol { padding-left: 1.4rem; margin: 0.3rem 0; }
li { margin: 0.3rem 0; }
.time { font-variant-numeric: tabular-nums; color: #555; }
"#;

/// `&`, `<`, `>`, `"` and `'` as entities: safe in text and in quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The whole page.
pub fn render(view: &StateView, version: &str) -> String {
    let mut h = String::with_capacity(16 * 1024);
    let hall = escape(&view.hall.name);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}; url=./\">\n\
         <title>{hall} — status</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
    );
    let _ = write!(
        h,
        "<header>\n<h1>{hall}</h1>\n<p class=\"updated\">Updated <span id=\"updated\">{}</span> \
         (hall time, {}) · this page refreshes itself every {REFRESH_SECS} seconds</p>\n",
        escape(&view.generated_local),
        escape(&view.hall.time_zone)
    );
    let problems = attention(view);
    if problems.is_empty() {
        h.push_str("<div class=\"banner ok\" id=\"banner\">All is well (一切正常)</div>\n");
    } else {
        let _ = write!(
            h,
            "<div class=\"banner bad\" id=\"banner\">{} (需要处理)<ul>",
            match problems.len() {
                1 => "1 thing needs attention".to_string(),
                n => format!("{n} things need attention"),
            }
        );
        for p in &problems {
            let _ = write!(h, "<li>{}</li>", escape(p));
        }
        h.push_str("</ul></div>\n");
    }
    h.push_str("</header>\n");

    rooms(&mut h, view);
    devices(&mut h, view);
    link(&mut h, &view.link);
    alerts(&mut h, view);

    let _ = write!(
        h,
        "<footer>\n<p>Clock (时钟): {} · hallgate {} · hall id {}</p>\n\
         <p>For engineers: <a href=\"api/v1/state\">JSON</a> · <a href=\"metrics\">metrics</a></p>\n\
         </footer>\n</body>\n</html>\n",
        if view.clock_synced {
            "synchronised"
        } else {
            "NOT synchronised"
        },
        escape(version),
        escape(&view.hall.id)
    );
    h
}

fn rooms(h: &mut String, view: &StateView) {
    let _ = write!(
        h,
        "<section id=\"rooms\">\n<h2>Rooms (功能室)</h2>\n\
         <p class=\"big\">Visits today (服务人次): <b id=\"visits\">{}</b></p>\n\
         <p class=\"big\">In the hall now (在场人数): <b id=\"occupancy\">{}</b> of {}</p>\n",
        view.visits_today, view.occupancy, view.capacity
    );
    if view.occupancy_corrected != view.occupancy {
        let _ = writeln!(
            h,
            "<p class=\"sub\">Corrected for counter drift (漂移校正后): \
             <b id=\"occupancy-corrected\">{}</b></p>",
            view.occupancy_corrected
        );
    }
    for r in &view.rooms {
        room(h, r);
    }
    h.push_str("</section>\n");
}

fn room(h: &mut String, r: &RoomView) {
    let percent = (r.utilisation * 100.0).clamp(0.0, 100.0);
    let _ = write!(
        h,
        "<div class=\"card room {cls}\" id=\"room-{id}\" data-room=\"{id}\" \
         data-occupancy=\"{occ}\" data-capacity=\"{cap}\">\n\
         <div class=\"row\"><span class=\"name\">{name}</span>\
         <span class=\"count\"><b>{occ}</b> of {cap}</span></div>\n\
         <div class=\"bar\"><span style=\"width:{percent:.0}%\"></span></div>\n",
        cls = if r.over_capacity { "over bad" } else { "ok" },
        id = escape(&r.id),
        name = escape(&r.name),
        occ = r.occupancy,
        cap = r.capacity,
    );
    if r.over_capacity {
        let _ = writeln!(
            h,
            "<p class=\"flag\">Over capacity (超员): {} more than allowed</p>",
            r.occupancy - u64::from(r.capacity)
        );
    }
    if r.occupancy_corrected != r.occupancy {
        let _ = writeln!(
            h,
            "<p class=\"sub corrected\" data-occupancy-corrected=\"{occ}\">\
             Corrected for counter drift (漂移校正后): {occ}</p>",
            occ = r.occupancy_corrected
        );
    }
    let _ = write!(
        h,
        "<p class=\"sub\">Came in today: {} · went out: {}</p>\n</div>\n",
        r.entries_today, r.exits_today
    );
}

fn devices(h: &mut String, view: &StateView) {
    h.push_str("<section id=\"devices\">\n<h2>Devices (设备)</h2>\n");
    if view.devices.is_empty() {
        h.push_str("<p>No devices are configured.</p>\n");
    }
    for d in &view.devices {
        device(h, d);
    }
    h.push_str("</section>\n");
}

/// "since 14:05, 12 minutes" when known.
fn since_words(since_local: Option<&str>, for_secs: Option<u64>) -> Option<String> {
    Some(format!(
        "since {}, {}",
        since_local?,
        duration_words(for_secs?)
    ))
}

fn device(h: &mut String, d: &DeviceView) {
    let cls = match d.condition {
        Condition::Online => "ok",
        Condition::Offline => "bad",
        Condition::Stale | Condition::Waiting => "warn",
    };
    let _ = write!(
        h,
        "<div class=\"card device {cls}\" data-device=\"{id}\" data-kind=\"{kind}\" \
         data-condition=\"{cond}\">\n\
         <div class=\"row\"><span class=\"name\">{id}</span><span class=\"state\">{words}</span></div>\n\
         <p class=\"sub\">{what} · {place}</p>\n",
        id = escape(&d.id),
        kind = d.kind.as_str(),
        cond = d.condition.as_str(),
        words = d.condition.words(),
        what = d.kind.words(),
        place = escape(&d.place),
    );
    let since = since_words(d.since_local.as_deref(), d.for_secs);
    let line = match (d.condition, since) {
        (Condition::Online, Some(since)) => format!("Answering {since}"),
        (Condition::Online, None) => capitalise(&d.detail),
        (_, Some(since)) => format!("{}: {}", capitalise(&since), d.detail),
        (_, None) => capitalise(&d.detail),
    };
    let _ = write!(h, "<p>{}</p>\n</div>\n", escape(&line));
}

fn link(h: &mut String, l: &LinkView) {
    let since = l
        .since_local
        .as_deref()
        .zip(l.since.as_deref())
        .map(|(local, _)| format!(" since {local}"))
        .unwrap_or_default();
    let _ = write!(
        h,
        "<section id=\"link\">\n<h2>Central link (上级平台连接)</h2>\n\
         <div class=\"card {}\" data-connected=\"{}\">\n<dl>\n",
        if l.connected { "ok" } else { "bad" },
        l.connected
    );
    if l.connected {
        let _ = writeln!(
            h,
            "<dt>Connection</dt><dd><span class=\"state\">Connected (已连接)</span>{}</dd>",
            escape(&since)
        );
    } else {
        let _ = writeln!(
            h,
            "<dt>Connection</dt><dd><span class=\"state\">Not connected (未连接)</span>{}. \
             Figures are kept on the box and sent when the link is back.</dd>",
            escape(&since)
        );
    }
    let upload = match (&l.last_upload_local, l.last_upload_ago_secs) {
        (Some(local), Some(ago)) => format!("{local} ({} ago)", duration_words(ago)),
        _ => "nothing yet since the gateway started".to_string(),
    };
    let _ = write!(
        h,
        "<dt>Last upload (最近上传)</dt><dd>{}</dd>\n\
         <dt>Backlog (待上传)</dt><dd id=\"backlog\" data-messages=\"{}\">{}</dd>\n\
         <dt>Offline buffer left (离线缓存剩余)</dt><dd id=\"buffer-left\">{}</dd>\n",
        escape(&upload),
        l.backlog_messages,
        escape(&backlog_words(l)),
        escape(&buffer_left_words(l)),
    );
    if l.dropped_messages > 0 {
        let _ = writeln!(
            h,
            "<dt class=\"flag\">Lost (丢失)</dt><dd class=\"flag\">{} messages could not be kept</dd>",
            l.dropped_messages
        );
    }
    h.push_str("</dl>\n</div>\n</section>\n");
}

fn alerts(h: &mut String, view: &StateView) {
    h.push_str("<section id=\"alerts\">\n<h2>Today's alerts (今日告警)</h2>\n");
    if view.alerts.is_empty() {
        h.push_str("<p>No alerts today.</p>\n");
    } else {
        let hidden = view.alerts_today.saturating_sub(view.alerts.len() as u64);
        if hidden > 0 {
            let _ = writeln!(
                h,
                "<p class=\"sub\">The newest {} of {} alerts today, newest first.</p>",
                view.alerts.len(),
                view.alerts_today
            );
        }
        h.push_str("<ol reversed>\n");
        for a in view.alerts.iter().rev() {
            alert(h, a);
        }
        h.push_str("</ol>\n");
    }
    h.push_str("</section>\n");
}

fn alert(h: &mut String, a: &AlertView) {
    let _ = writeln!(
        h,
        "<li class=\"{}\" data-kind=\"{}\"><span class=\"time\">{}</span> {}</li>",
        if a.kind.is_trouble() { "bad" } else { "ok" },
        a.kind.as_str(),
        escape(&a.at_local),
        escape(&a.message)
    );
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::view::{DeviceCounts, DeviceKind, HallView};

    fn view() -> StateView {
        StateView {
            api_version: 1,
            hall: HallView {
                id: "h-1".into(),
                name: "Hall <One> & \"Two\"".into(),
                time_zone: "Asia/Shanghai".into(),
            },
            generated_at: "2026-12-01T06:17:00Z".into(),
            generated_local: "2026-12-01 14:17:00".into(),
            day: "2026-12-01".into(),
            clock_synced: true,
            visits_today: 120,
            occupancy: 52,
            capacity: 50,
            occupancy_corrected: 49,
            rooms: vec![RoomView {
                id: "reading".into(),
                name: "Reading room (阅览室) <script>alert(1)</script>".into(),
                occupancy: 52,
                capacity: 50,
                utilisation: 1.04,
                over_capacity: true,
                entries_today: 60,
                exits_today: 8,
                occupancy_corrected: 49,
            }],
            devices: vec![DeviceView {
                id: "pc-'fire'".into(),
                kind: DeviceKind::PeopleCounter,
                place: "door exit: Reading room → street".into(),
                condition: Condition::Offline,
                since: Some("2026-12-01T06:05:00Z".into()),
                since_local: Some("14:05".into()),
                for_secs: Some(12 * 60),
                detail: "no answer within 500 ms".into(),
                counts: DeviceCounts::default(),
                counting_doubt: None,
            }],
            link: LinkView {
                connected: false,
                since: Some("2026-12-01T06:00:00Z".into()),
                since_local: Some("14:00".into()),
                last_upload: None,
                last_upload_local: None,
                last_upload_ago_secs: None,
                delivered: 0,
                backlog_messages: 17,
                backlog_bytes: 20_480,
                outbox_max_bytes: 64 << 20,
                outbox_used_percent: 0.0,
                buffer_left_hours: Some(412.3),
                dropped_messages: 0,
                disk_full: false,
            },
            alerts: Vec::new(),
            alerts_today: 0,
            terminal_intake_stopped: None,
            storage_fault: None,
        }
    }

    #[test]
    fn escaping_covers_the_five_html_specials() {
        assert_eq!(
            escape(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(escape("阅览室"), "阅览室");
    }

    #[test]
    fn config_strings_never_reach_the_page_unescaped() {
        let page = render(&view(), "0.1.0");
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("Hall &lt;One&gt; &amp; &quot;Two&quot;"));
        assert!(page.contains("data-device=\"pc-&#39;fire&#39;\""));
    }

    #[test]
    fn the_page_shows_occupancy_against_capacity_and_flags_an_overfull_room() {
        let page = render(&view(), "0.1.0");
        assert!(page.contains("<b>52</b> of 50"), "{page}");
        assert!(page.contains("Over capacity (超员): 2 more than allowed"));
        assert!(page.contains("width:100%"), "the bar stops at full");
        assert!(
            page.contains("3 things need attention"),
            "room, device and link"
        );
    }

    #[test]
    fn the_page_shows_the_drift_corrected_occupancy_beside_the_raw_one_when_they_differ() {
        let page = render(&view(), "0.1.0");
        assert!(
            page.contains("<b>52</b> of 50"),
            "the raw count stays: {page}"
        );
        assert!(
            page.contains("Corrected for counter drift (漂移校正后): 49"),
            "{page}"
        );
        assert!(
            page.contains("<b id=\"occupancy-corrected\">49</b>"),
            "{page}"
        );
        let mut same = view();
        same.occupancy_corrected = same.occupancy;
        same.rooms[0].occupancy_corrected = same.rooms[0].occupancy;
        let page = render(&same, "0.1.0");
        assert!(!page.contains("漂移校正后"), "nothing to show: {page}");
    }

    #[test]
    fn the_page_says_since_when_a_device_is_offline_and_why() {
        let page = render(&view(), "0.1.0");
        assert!(
            page.contains("Since 14:05, 12 minutes: no answer within 500 ms"),
            "{page}"
        );
        assert!(page.contains("data-condition=\"offline\""));
        assert!(page.contains("Offline buffer left"));
        assert!(page.contains("412 hours"), "{page}");
    }

    #[test]
    fn the_page_is_self_contained_and_refreshes_itself() {
        let page = render(&view(), "0.1.0");
        assert!(page.contains("<meta http-equiv=\"refresh\" content=\"5; url=./\">"));
        assert!(page.contains("name=\"viewport\""));
        for external in ["http://", "https://", "<script", "<link", "@import", "url("] {
            assert!(
                !page.contains(external),
                "the page must not load {external}"
            );
        }
    }
}
