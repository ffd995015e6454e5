//! Bounded storage, the pure part: which rows to roll up, and how long the space left lasts.
//!
//! The outbox holds what the centre has not acknowledged. During a long outage it grows by a
//! minute bin a minute; near `max_outbox_bytes` the oldest minute bins are merged into
//! 15-minute bins, then those into hourly bins — each step keeps the figures (sums, means
//! weighted by time, peaks) at a coarser grain, and frees most of the space — and only when
//! nothing is left to merge is the oldest row dropped. This module plans those steps from
//! row metadata; the database side ([`super::Db`]) executes them, and the merge itself is the
//! payload's business ([`RollUp`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::OutMessage;

/// The coarser grains, in the order they are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coarse {
    /// 15 minutes.
    Quarter,
    Hour,
}

impl Coarse {
    pub const ALL: [Coarse; 2] = [Coarse::Quarter, Coarse::Hour];

    pub fn secs(self) -> i64 {
        match self {
            Coarse::Quarter => 900,
            Coarse::Hour => 3600,
        }
    }

    /// Message kinds finer than this grain, which it absorbs.
    pub fn absorbs(self, kind: &str) -> bool {
        match self {
            Coarse::Quarter => kind == "agg_1m",
            Coarse::Hour => kind == "agg_1m" || kind == "agg_15m",
        }
    }
}

/// Merges finer aggregate messages that fall into one coarse bin starting at `bin_start`
/// (Unix seconds) into one message of that grain; `None` if they cannot be merged (then they
/// are left as they are).
pub type RollUp = fn(&[OutMessage], Coarse, i64) -> Option<OutMessage>;

/// What the planner needs to know of a stored row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowMeta {
    pub id: i64,
    pub kind: String,
    pub bin_start: Option<i64>,
    /// Handed to the uplink and not yet acknowledged, or acknowledged and not yet deleted:
    /// either way it must not be touched, or the centre could count it twice.
    pub busy: bool,
}

/// Groups of row ids to merge into `grain`, oldest group first. `rows` are the oldest rows of
/// the outbox in id order. A group is only formed for a coarse bin that has ended before the
/// newest absorbable row's bin starts: the bin is complete, no later minute can join it.
pub fn plan_roll_up(rows: &[RowMeta], grain: Coarse) -> Vec<(i64, Vec<i64>)> {
    let secs = grain.secs();
    let candidates: Vec<(&RowMeta, i64)> = rows
        .iter()
        .filter(|r| grain.absorbs(&r.kind))
        .filter_map(|r| r.bin_start.map(|b| (r, b)))
        .collect();
    let Some(newest) = candidates.iter().map(|(_, b)| *b).max() else {
        return Vec::new();
    };
    let newest_bin = newest.div_euclid(secs) * secs;
    // A bin with any busy row is left whole: merging the rest would split one bin in two
    // messages with the same id.
    let mut groups: Vec<(i64, Vec<i64>, bool)> = Vec::new();
    for (row, bin_start) in candidates {
        let bin = bin_start.div_euclid(secs) * secs;
        if bin >= newest_bin {
            continue;
        }
        match groups.iter_mut().find(|(b, _, _)| *b == bin) {
            Some((_, ids, busy)) => {
                ids.push(row.id);
                *busy |= row.busy;
            }
            None => groups.push((bin, vec![row.id], row.busy)),
        }
    }
    let mut out: Vec<(i64, Vec<i64>)> = groups
        .into_iter()
        // A lone row of the coarser kind already is the merged bin.
        .filter(|(_, ids, busy)| !busy && !ids.is_empty())
        .map(|(bin, ids, _)| (bin, ids))
        .collect();
    out.sort_by_key(|(bin, _)| *bin);
    out
}

/// The space one row takes, as counted against `max_outbox_bytes`: its fields plus a fixed
/// allowance for SQLite's row and index overhead.
pub fn row_bytes(m: &OutMessage) -> u64 {
    const ROW_OVERHEAD: u64 = 48;
    (m.payload.len() + m.msg_id.len() + m.topic.len() + m.kind.len()) as u64 + ROW_OVERHEAD
}

/// How fast the outbox fills, over the last hour: the basis of "offline buffer left".
#[derive(Debug)]
pub struct FillRate {
    /// (when, bytes inserted so far), one sample a minute at most.
    samples: VecDeque<(Instant, u64)>,
    window: Duration,
}

impl FillRate {
    pub fn new(window: Duration) -> Self {
        FillRate {
            samples: VecDeque::new(),
            window,
        }
    }

    /// Records the running total of bytes inserted.
    pub fn sample(&mut self, now: Instant, inserted_total: u64) {
        if self
            .samples
            .back()
            .is_some_and(|(t, _)| now.duration_since(*t) < Duration::from_secs(60))
        {
            return;
        }
        self.samples.push_back((now, inserted_total));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > self.window)
        {
            self.samples.pop_front();
        }
    }

    /// Bytes per hour at the current rate; `None` until there are five minutes to go on.
    pub fn bytes_per_hour(&self, now: Instant, inserted_total: u64) -> Option<f64> {
        let (t0, b0) = *self.samples.front()?;
        let span = now.duration_since(t0).as_secs_f64();
        if span < 300.0 {
            return None;
        }
        Some((inserted_total.saturating_sub(b0)) as f64 * 3600.0 / span)
    }
}

/// Hours until `left` bytes are used up at `per_hour`, before any roll-up (so the real
/// figure is longer); `None` when nothing is being added.
pub fn hours_left(left: u64, per_hour: Option<f64>) -> Option<f64> {
    match per_hour {
        Some(rate) if rate > 0.0 => Some(left as f64 / rate),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, kind: &str, minute: i64, busy: bool) -> RowMeta {
        RowMeta {
            id,
            kind: kind.into(),
            bin_start: Some(1_700_000_100 + minute * 60),
            busy,
        }
    }

    #[test]
    fn complete_quarters_are_grouped_and_the_newest_one_is_left_open() {
        // 1_700_000_100 is 22:15:00 UTC: minutes 0..40 fill two quarters and start a third.
        let rows: Vec<RowMeta> = (0..40).map(|m| row(m + 1, "agg_1m", m, false)).collect();
        let groups = plan_roll_up(&rows, Coarse::Quarter);
        assert_eq!(
            groups.len(),
            2,
            "the quarter holding the newest minute stays open"
        );
        assert_eq!(groups[0].1, (1..=15).collect::<Vec<_>>());
        assert_eq!(groups[1].1, (16..=30).collect::<Vec<_>>());
        assert_eq!(groups[1].0 - groups[0].0, 900);
    }

    #[test]
    fn a_quarter_with_a_row_in_flight_is_not_touched() {
        let mut rows: Vec<RowMeta> = (0..40).map(|m| row(m + 1, "agg_1m", m, false)).collect();
        rows[3].busy = true;
        let groups = plan_roll_up(&rows, Coarse::Quarter);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].1[0], 16);
    }

    #[test]
    fn hours_absorb_quarters_and_minutes_but_not_other_kinds() {
        let mut rows = vec![
            RowMeta {
                id: 1,
                kind: "agg_15m".into(),
                bin_start: Some(1_699_999_200), // 22:00 UTC
                busy: false,
            },
            RowMeta {
                id: 2,
                kind: "alert".into(),
                bin_start: None,
                busy: false,
            },
        ];
        rows.push(RowMeta {
            id: 3,
            kind: "agg_1m".into(),
            bin_start: Some(1_699_999_200 + 1800),
            busy: false,
        });
        rows.push(RowMeta {
            id: 4,
            kind: "agg_1m".into(),
            bin_start: Some(1_699_999_200 + 7200),
            busy: false,
        });
        let groups = plan_roll_up(&rows, Coarse::Hour);
        assert_eq!(groups, vec![(1_699_999_200, vec![1, 3])]);
    }

    #[test]
    fn buffer_left_is_unknown_until_five_minutes_of_rate_are_known() {
        let t0 = Instant::now();
        let mut rate = FillRate::new(Duration::from_secs(3600));
        rate.sample(t0, 0);
        assert_eq!(
            rate.bytes_per_hour(t0 + Duration::from_secs(120), 1000),
            None
        );
        let per_hour = rate.bytes_per_hour(t0 + Duration::from_secs(600), 10_000);
        assert_eq!(per_hour, Some(60_000.0));
        assert_eq!(hours_left(120_000, per_hour), Some(2.0));
        assert_eq!(hours_left(120_000, Some(0.0)), None);
    }
}
