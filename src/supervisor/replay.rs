//! Replay: the live core loop's own code, driven by a virtual clock.
//!
//! ```text
//! recorded/simulated DeviceEvents ──► Reorder ──► Core::apply/advance/flush ──► outbox (SQLite) ──► messages
//!                    virtual clock: the events' stamps, a tick every virtual second
//! ```
//!
//! Nothing here computes a figure: the events go through the same reorder stage,
//! `Core::apply`, `Core::advance` and `Core::flush` as in the running gateway, into a real
//! outbox database, and what the outbox then holds is returned in row order. Only time is
//! different: instead of the wall clock, the clock is each event's own stamp, with a tick at
//! every whole virtual second in between (as the live loop ticks once a second), and the clock
//! is taken as synchronised. A day of a busy hall replays in seconds. The uplink, the drivers
//! and the status page are not started.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;

use super::Core;
use crate::config::Config;
use crate::devices::{DeviceEvent, DeviceStats};
use crate::occupancy::{Engine, HallModel};
use crate::outbox::{OutMessage, Outbox, OutboxError, OutboxOptions};
use crate::uplink::UplinkStatus;
use crate::uplink::payload;

use super::reorder::{REORDER_WINDOW, stamp_of};

/// The live loop's tick, in virtual time.
const VIRTUAL_TICK: SignedDuration = SignedDuration::from_secs(1);
/// More rows than any day leaves in the outbox (the fetch stops at the last row anyway).
const FETCH_ALL: usize = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("the outbox already holds {0} messages; replay into an empty data directory")]
    NotEmpty(u64),
    #[error(
        "arrival {index} at {at} comes before the one before it; arrivals must be in time order"
    )]
    ArrivalOrder { index: usize, at: Timestamp },
}

/// Replays `events` (in time order) and returns every message the outbox then holds. The
/// clock runs on until the day of the last event has closed (at the hall's closing time), so
/// the day's closing messages are among them.
pub async fn replay(
    config: Config,
    events: Vec<DeviceEvent>,
    data_dir: &Path,
) -> Result<Vec<OutMessage>, ReplayError> {
    let Some(last) = events.iter().map(stamp_of).max() else {
        return replay_arrivals(config, Vec::new(), data_dir, Timestamp::UNIX_EPOCH).await;
    };
    let close = HallModel::from_config(&config).next_close_after(last);
    let arrivals = events.into_iter().map(|e| (stamp_of(&e), e)).collect();
    // Past the close by the reorder window and a tick, so the tick that closes the day runs.
    let until = close
        .checked_add(window() + VIRTUAL_TICK)
        .unwrap_or(Timestamp::MAX);
    replay_arrivals(config, arrivals, data_dir, until).await
}

/// Replays events as they reached the core: `(arrival, event)` in arrival order, where an
/// event may arrive after events stamped later (a slow bus). Ticks run every virtual second
/// from the first arrival to `until`; an arrival at the instant of a tick comes after it.
pub async fn replay_arrivals(
    mut config: Config,
    arrivals: Vec<(Timestamp, DeviceEvent)>,
    data_dir: &Path,
    until: Timestamp,
) -> Result<Vec<OutMessage>, ReplayError> {
    for (index, pair) in arrivals.windows(2).enumerate() {
        if pair[1].0 < pair[0].0 {
            return Err(ReplayError::ArrivalOrder {
                index: index + 1,
                at: pair[1].0,
            });
        }
    }
    config.storage.data_dir = data_dir.to_path_buf();
    // A day's commits in a few seconds: the flash-wear pacing of fsyncs is for real time.
    config.storage.min_commit_gap = Duration::ZERO;
    let (outbox, restored) = Outbox::open(
        data_dir,
        OutboxOptions::from_config(&config.storage, Some(payload::roll_up)),
    )?;
    if restored.pending_messages > 0 || restored.engine_state.is_some() {
        outbox.close().await;
        return Err(ReplayError::NotEmpty(restored.pending_messages));
    }
    let start = arrivals.first().map_or(until, |(at, _)| *at);
    let engine = Engine::new(HallModel::from_config(&config), None, start);
    let (state_tx, _) = watch::channel(None);
    let stats = DeviceStats::new(&config);
    let terminal_stats = crate::devices::terminals::TerminalsStats::new(&config);
    let mut core = Core::new(
        config,
        engine,
        outbox.clone(),
        state_tx,
        Arc::new(UplinkStatus::default()),
        stats,
        terminal_stats,
        start,
    );
    core.clock_synced = true;

    // The first tick is the first whole second after the start, as an interval timer started
    // then would fire (give or take its phase, which the figures do not depend on).
    let mut next_tick = start.checked_add(VIRTUAL_TICK).unwrap_or(start);
    for (at, event) in arrivals {
        while next_tick <= at {
            tick(&mut core, next_tick).await;
            next_tick = next_tick
                .checked_add(VIRTUAL_TICK)
                .unwrap_or(Timestamp::MAX);
        }
        core.receive(event);
    }
    while next_tick <= until {
        tick(&mut core, next_tick).await;
        next_tick = next_tick
            .checked_add(VIRTUAL_TICK)
            .unwrap_or(Timestamp::MAX);
    }
    // As at shutdown: whatever is still held goes in, then a final commit.
    for event in core.reorder.drain() {
        core.apply(event);
    }
    core.flush(true).await;

    let mut stored = outbox.fetch(FETCH_ALL).await;
    stored.sort_by_key(|m| m.id);
    outbox.close().await;
    Ok(stored.into_iter().map(|m| m.message).collect())
}

/// What the live loop does on a tick that concerns the figures: release, advance, commit.
/// (The retained `state`, the status page and the watchdog are not part of a replay.)
async fn tick(core: &mut Core, now: Timestamp) {
    core.step(now);
    core.flush(false).await;
}

fn window() -> SignedDuration {
    SignedDuration::try_from(REORDER_WINDOW).unwrap_or(SignedDuration::ZERO)
}
