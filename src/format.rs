//! Plain formatting shared by the uplink payloads, the status views and the alert texts:
//! RFC 3339 stamps, hall-local times, durations in words, figures to three decimals, and the
//! serde predicates that leave zero counts out of a payload.
//!
//! Pure functions of their arguments (no clock, no I/O): every module may use them, and
//! keeping one copy keeps a stamp or a ratio written the same way in every output.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, Unit};

/// RFC 3339 in UTC, to the millisecond.
pub fn rfc3339(t: Timestamp) -> String {
    t.round(Unit::Millisecond).unwrap_or(t).to_string()
}

/// `HH:MM` in the hall's time zone, with the day in front when it is not the day of `now`.
pub fn local_time(t: Timestamp, now: Timestamp, tz: &TimeZone) -> String {
    let (zt, znow) = (t.to_zoned(tz.clone()), now.to_zoned(tz.clone()));
    if zt.date() == znow.date() {
        zt.strftime("%H:%M").to_string()
    } else {
        zt.strftime("%-d %b %H:%M").to_string()
    }
}

/// The local date of `t` in the hall's time zone.
pub fn local_date(t: Timestamp, tz: &TimeZone) -> Date {
    t.to_zoned(tz.clone()).date()
}

/// Whole seconds from `a` to `b`, 0 if `b` is earlier (the clock was stepped back).
pub fn secs_between(a: Timestamp, b: Timestamp) -> u64 {
    b.duration_since(a).as_secs().max(0) as u64
}

/// "less than a minute", "12 minutes", "3 hours 5 minutes", "2 days 4 hours".
pub fn duration_words(secs: u64) -> String {
    fn unit(n: u64, one: &str) -> String {
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {one}s")
        }
    }
    let (mins, hours, days) = (secs / 60 % 60, secs / 3600 % 24, secs / 86_400);
    match (days, hours, mins) {
        (0, 0, 0) => "less than a minute".into(),
        (0, 0, m) => unit(m, "minute"),
        (0, h, 0) => unit(h, "hour"),
        (0, h, m) => format!("{} {}", unit(h, "hour"), unit(m, "minute")),
        (d, 0, _) => unit(d, "day"),
        (d, h, _) => format!("{} {}", unit(d, "day"), unit(h, "hour")),
    }
}

/// Like [`duration_words`], but to the second below two minutes (a clock step of 5 s is
/// not "less than a minute").
pub fn span_words(secs: u64) -> String {
    match secs {
        1 => "1 second".into(),
        s if s < 120 => format!("{s} seconds"),
        s => duration_words(s),
    }
}

/// [`span_words`] in Chinese, for staff.
pub fn span_words_zh(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} 秒"),
        s if s < 7200 => format!("{} 分钟", s / 60),
        s => format!("{} 小时 {} 分钟", s / 3600, s / 60 % 60),
    }
}

/// A ratio or a mean to three decimals: what a payload or the page shows of it.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `skip_serializing_if` for counts: a zero is left out of the payload.
pub fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `skip_serializing_if` for signed counts.
pub fn is_zero_i64(n: &i64) -> bool {
    *n == 0
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
    fn durations_read_as_words() {
        assert_eq!(duration_words(0), "less than a minute");
        assert_eq!(duration_words(59), "less than a minute");
        assert_eq!(duration_words(60), "1 minute");
        assert_eq!(duration_words(12 * 60 + 5), "12 minutes");
        assert_eq!(duration_words(3600), "1 hour");
        assert_eq!(duration_words(3 * 3600 + 5 * 60), "3 hours 5 minutes");
        assert_eq!(duration_words(86_400 + 59), "1 day");
        assert_eq!(duration_words(2 * 86_400 + 4 * 3600 + 7), "2 days 4 hours");
    }

    #[test]
    fn local_times_show_the_date_only_when_not_today() {
        // 06:05 UTC is 14:05 in Shanghai.
        let now = at("2026-12-01T06:17:00Z");
        assert_eq!(local_time(at("2026-12-01T06:05:00Z"), now, &tz()), "14:05");
        assert_eq!(
            local_time(at("2026-11-30T06:05:00Z"), now, &tz()),
            "30 Nov 14:05"
        );
    }

    #[test]
    fn stamps_are_utc_to_the_millisecond() {
        assert_eq!(
            rfc3339(at("2026-12-01T06:05:00.123456Z")),
            "2026-12-01T06:05:00.123Z"
        );
    }
}
