//! A synthetic backlog: the minute bins a busy hall would have queued during a long outage,
//! written straight into an outbox. For benchmarks (how fast a day's backlog drains, how
//! the bound behaves) and for the store-and-forward tests, which need a backlog of a known
//! size without waiting hours for one.
//!
//! The bins are plausible, not simulated crossing by crossing: per room, entries and exits a
//! minute follow the hour of day, and occupancy stays within capacity. What matters here is
//! their number, size and shape, which are those of real `agg_1m` messages (they are built by
//! the same [`payload::minute_message`]).

use jiff::Timestamp;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::Config;
use crate::occupancy::{MinuteAggregate, MinuteRoom};
use crate::outbox::{Batch, Outbox, OutboxError, OutboxOptions};
use crate::uplink::payload;

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeededBacklog {
    pub messages: u64,
    pub bytes: u64,
    pub first_bin: Timestamp,
    pub last_bin: Timestamp,
    /// Entries summed over every bin and room, for checking completeness after a drain.
    pub entries: u64,
}

/// Writes `minutes` minute bins ending with the bin before `end` into the outbox in the
/// config's data directory, one commit per six hours of bins (commits are paced by
/// `max_fsyncs_per_sec`).
pub async fn seed(
    config: &Config,
    minutes: u32,
    end: Timestamp,
    seed: u64,
) -> Result<SeededBacklog, OutboxError> {
    let (outbox, _) = Outbox::open(
        &config.storage.data_dir,
        OutboxOptions::from_config(&config.storage, Some(payload::roll_up)),
    )?;
    let mut rng = StdRng::seed_from_u64(seed);
    let last = end.as_second().div_euclid(60) * 60 - 60;
    let first = last - 60 * (i64::from(minutes) - 1);
    let mut occupancy: Vec<u64> = vec![0; config.rooms.len()];
    let mut report = SeededBacklog {
        messages: 0,
        bytes: 0,
        first_bin: Timestamp::from_second(first).unwrap_or(end),
        last_bin: Timestamp::from_second(last).unwrap_or(end),
        entries: 0,
    };
    let mut batch = Batch::default();
    for i in 0..i64::from(minutes) {
        let start = first + i * 60;
        let (Ok(start_ts), Ok(end_ts)) = (
            Timestamp::from_second(start),
            Timestamp::from_second(start + 60),
        ) else {
            continue;
        };
        // Busier in the day than at night (hall time zone ignored: shape, not truth).
        let hour = start.rem_euclid(86_400) / 3600;
        let busy = if (1..=13).contains(&hour) { 4 } else { 1 };
        let rooms = config
            .rooms
            .iter()
            .zip(occupancy.iter_mut())
            .map(|(room, occ)| {
                let entries = rng.random_range(0..=busy);
                let exits = rng.random_range(0..=busy).min(*occ + entries);
                let peak = (*occ + entries).min(u64::from(room.capacity));
                *occ = (*occ + entries - exits).min(u64::from(room.capacity));
                report.entries += entries;
                MinuteRoom {
                    id: room.id.clone(),
                    entries,
                    exits,
                    occupancy_mean: (*occ + peak) as f64 / 2.0,
                    occupancy_peak: peak,
                    passages: Default::default(),
                }
            })
            .collect();
        let message = payload::minute_message(
            config,
            &MinuteAggregate {
                start: start_ts,
                end: end_ts,
                rooms,
            },
            true,
        );
        report.messages += 1;
        report.bytes += message.payload.len() as u64;
        batch.messages.push(message);
        if batch.messages.len() == 360 {
            outbox
                .commit(std::mem::take(&mut batch))
                .await
                .map_err(|(e, _)| e)?;
        }
    }
    if !batch.messages.is_empty() {
        outbox.commit(batch).await.map_err(|(e, _)| e)?;
    }
    outbox.close().await;
    Ok(report)
}
