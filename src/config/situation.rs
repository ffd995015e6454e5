//! `[situation]`: how the hall's situation figures (态势) are judged — when a booked activity
//! counts as held, how long an unbooked use of a bookable room must last to be reported, and
//! where the centre publishes the bookings.
//!
//! ```toml
//! [situation]
//! held_share = 0.5            # held when attendance ≥ held_share × expected_attendance
//! unbooked_min_minutes = 15   # shorter unbooked occupancy is not reported
//! bookings_topic = "bookings" # below the hall's base topic, retained by the centre
//! ```
//!
//! Rooms opt in with `rooms[].bookable = true`: only they may be booked, and only they have
//! unbooked-use episodes.

use serde::Deserialize;

use super::problems::{Problems, Report};

/// `[situation]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SituationConfig {
    #[serde(default = "default_held_share")]
    pub held_share: f64,
    #[serde(default = "default_unbooked_min_minutes")]
    pub unbooked_min_minutes: u32,
    #[serde(default = "default_bookings_topic")]
    pub bookings_topic: String,
}

impl Default for SituationConfig {
    fn default() -> Self {
        SituationConfig {
            held_share: default_held_share(),
            unbooked_min_minutes: default_unbooked_min_minutes(),
            bookings_topic: default_bookings_topic(),
        }
    }
}

pub fn default_held_share() -> f64 {
    0.5
}

pub fn default_unbooked_min_minutes() -> u32 {
    15
}

pub fn default_bookings_topic() -> String {
    "bookings".into()
}

/// The validated `[situation]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Situation {
    /// In (0, 1].
    pub held_share: f64,
    /// In 1..=1440.
    pub unbooked_min_minutes: u32,
    /// Topic levels below the hall's base topic; no wildcards, no empty level.
    pub bookings_topic: String,
}

impl Default for Situation {
    fn default() -> Self {
        let c = SituationConfig::default();
        Situation {
            held_share: c.held_share,
            unbooked_min_minutes: c.unbooked_min_minutes,
            bookings_topic: c.bookings_topic,
        }
    }
}

/// Validates `[situation]` (absent means the defaults).
pub fn validate_situation(s: &SituationConfig, problems: &mut Problems) -> Option<Situation> {
    let before = problems.len();
    if !(s.held_share > 0.0 && s.held_share <= 1.0) {
        problems.report(
            "situation.held_share",
            format!(
                "must be above 0 and at most 1 (a share of the expected attendance), not {}",
                s.held_share
            ),
        );
    }
    if !(1..=1440).contains(&s.unbooked_min_minutes) {
        problems.report(
            "situation.unbooked_min_minutes",
            format!(
                "must be between 1 and 1440 minutes, not {}",
                s.unbooked_min_minutes
            ),
        );
    }
    let topic = &s.bookings_topic;
    if topic.is_empty()
        || topic.split('/').any(str::is_empty)
        || topic.contains(['+', '#', '\0'])
        || topic.chars().any(char::is_control)
    {
        problems.report(
            "situation.bookings_topic",
            format!(
                "\"{}\" is not a topic below the hall's base topic: it must be non-empty, \
                 without wildcards (+, #), control characters, or empty levels (a leading, \
                 trailing or doubled /)",
                topic.escape_debug()
            ),
        );
    }
    (problems.len() == before).then(|| Situation {
        held_share: s.held_share,
        unbooked_min_minutes: s.unbooked_min_minutes,
        bookings_topic: s.bookings_topic.clone(),
    })
}
