//! Replay: the live core loop's own code, driven by a virtual clock.
//!
//! ```text
//! recorded/simulated DeviceEvents ──► HallCore::receive / tick / finish ──► Commit ──► outbox (SQLite) ──► messages
//!                    virtual clock: the events' stamps, a tick every virtual second
//! ```
//!
//! Nothing here computes a figure: the events go through the gateway's own core
//! (`supervisor::core`: reorder window, engine, alert rules, commit pacing) and its commits
//! through the same `supervisor::commit` into a real outbox database, and what the outbox
//! then holds is returned in row order. Only time is different: the core is sans-I/O and
//! takes its time as an argument, so here the wall clock is each event's own stamp, with a
//! tick at every whole virtual second in between (as the live loop ticks once a second), the
//! monotonic clock moves with it, and the clock is taken as synchronised. A day of a busy
//! hall replays in seconds. The uplink, the drivers and the status page are not started, and
//! the core builds no `state` message and no status snapshot.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};

use crate::config::Config;
use crate::devices::DeviceEvent;
use crate::occupancy::HallModel;
use crate::outbox::{OutMessage, Outbox, OutboxError, OutboxOptions};
use crate::simulate::day::{self, DayError, DayOptions};
use crate::supervisor::core::{HallCore, Resume, Start};
use crate::supervisor::reorder::{REORDER_WINDOW, stamp_of};
use crate::supervisor::{commit, gauges};
use crate::uplink::UplinkStatus;
use crate::uplink::payload;

/// The live loop's tick, in virtual time.
const VIRTUAL_TICK: SignedDuration = SignedDuration::from_secs(1);
/// An interval no replay reaches (about 136 years; `Duration::MAX` would overflow where the
/// outbox doubles it).
const NEVER: Duration = Duration::from_secs(u32::MAX as u64);
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
    #[error(transparent)]
    Day(#[from] DayError),
    #[error("cannot write {path}: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// Replays `events` (in time order) and returns every message the outbox then holds. The
/// clock runs on until the day of the last event has closed (at the hall's closing time), so
/// the day's closing messages are among them.
pub async fn replay(
    config: Config,
    events: Vec<DeviceEvent>,
    data_dir: &Path,
) -> Result<Vec<OutMessage>, ReplayError> {
    replay_with_downlink(config, Vec::new(), events, data_dir).await
}

/// [`replay`], with messages from the centre (the bookings downlink's payloads), each handed
/// to the core at its time as the uplink would hand it over.
pub async fn replay_with_downlink(
    config: Config,
    downlink: Vec<(Timestamp, Vec<u8>)>,
    events: Vec<DeviceEvent>,
    data_dir: &Path,
) -> Result<Vec<OutMessage>, ReplayError> {
    let Some(last) = events.iter().map(stamp_of).max() else {
        return replay_arrivals(
            config,
            downlink,
            Vec::new(),
            data_dir,
            Timestamp::UNIX_EPOCH,
        )
        .await;
    };
    let close = HallModel::from_config(&config).next_close_after(last);
    let arrivals = events.into_iter().map(|e| (stamp_of(&e), e)).collect();
    // Past the close by the reorder window and a tick, so the tick that closes the day runs.
    let until = close
        .checked_add(window() + VIRTUAL_TICK)
        .unwrap_or(Timestamp::MAX);
    replay_arrivals(config, downlink, arrivals, data_dir, until).await
}

/// Replays events as they reached the core: `(arrival, event)` in arrival order, where an
/// event may arrive after events stamped later (a slow bus). Ticks run every virtual second
/// from the first arrival to `until`; an arrival at the instant of a tick comes after it, and
/// a downlink message before the device events of its instant.
pub async fn replay_arrivals(
    mut config: Config,
    downlink: Vec<(Timestamp, Vec<u8>)>,
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
    // A day's commits in a few seconds: the flash-wear pacing of fsyncs is for real time,
    // and so are the intervals between engine-state commits — the replay's outbox is read
    // for its messages, each committed when made, never restored from.
    config.storage.min_commit_gap = Duration::ZERO;
    config.storage.commit_interval = NEVER;
    config.storage.event_commit_interval = NEVER;
    let (outbox, restored) = Outbox::open(
        data_dir,
        OutboxOptions::from_config(&config.storage, Some(payload::roll_up)),
    )?;
    if restored.pending_messages > 0 || restored.engine_state.is_some() {
        outbox.close().await;
        return Err(ReplayError::NotEmpty(restored.pending_messages));
    }
    // The gateway was up from the earliest moment anything was observed: the earliest stamp
    // (an event may arrive late, but it was stamped while the gateway ran).
    let start = arrivals
        .iter()
        .flat_map(|(at, e)| [*at, stamp_of(e)])
        .chain(downlink.first().map(|(at, _)| *at))
        .min()
        .unwrap_or(until);
    let mut clock = VirtualClock::new(start);
    let start = Start {
        now: start,
        mono: clock.mono(start),
        clock_synced: true,
        views: false,
        boot: 0,
    };
    let mut core = HallCore::new(config, Resume::default(), start);
    let link = UplinkStatus::default();

    let mut downlink = downlink.into_iter().peekable();
    for (at, event) in arrivals {
        while let Some(tick) = clock.next_tick(at) {
            let gauges = gauges(&outbox, &link, true);
            let due = core.tick(tick, clock.mono(tick), &gauges);
            if let Some(batch) = due.commit {
                commit(&outbox, &mut core, batch).await;
            }
        }
        while let Some((_, bytes)) = downlink.next_if(|(t, _)| *t <= at) {
            core.downlink(&bytes);
        }
        core.receive(event);
    }
    for (_, bytes) in downlink {
        core.downlink(&bytes);
    }
    while let Some(tick) = clock.next_tick(until) {
        let gauges = gauges(&outbox, &link, true);
        let due = core.tick(tick, clock.mono(tick), &gauges);
        if let Some(batch) = due.commit {
            commit(&outbox, &mut core, batch).await;
        }
    }
    // As at shutdown: whatever is still held goes in, then a final commit.
    let end = clock.latest();
    let last = core.finish(end, clock.mono(end), &gauges(&outbox, &link, true));
    if let Some(batch) = last.commit {
        commit(&outbox, &mut core, batch).await;
    }

    let mut stored = outbox.fetch(FETCH_ALL).await;
    stored.sort_by_key(|m| m.id);
    outbox.close().await;
    Ok(stored.into_iter().map(|m| m.message).collect())
}

/// The replay's clocks: ticks every virtual second from the start, and a monotonic instant
/// that moves with the virtual wall clock.
struct VirtualClock {
    start: Timestamp,
    base: Instant,
    next_tick: Timestamp,
    latest: Timestamp,
}

impl VirtualClock {
    fn new(start: Timestamp) -> Self {
        VirtualClock {
            start,
            base: Instant::now(),
            // The first tick is the first whole second after the start, as an interval timer
            // started then would fire (give or take its phase, which the figures do not
            // depend on).
            next_tick: start.checked_add(VIRTUAL_TICK).unwrap_or(start),
            latest: start,
        }
    }

    /// The next tick at or before `until`, if one is due.
    fn next_tick(&mut self, until: Timestamp) -> Option<Timestamp> {
        if self.next_tick > until {
            return None;
        }
        let tick = self.next_tick;
        self.next_tick = tick.checked_add(VIRTUAL_TICK).unwrap_or(Timestamp::MAX);
        self.latest = tick;
        Some(tick)
    }

    fn latest(&self) -> Timestamp {
        self.latest
    }

    /// The monotonic instant of virtual time `t`.
    fn mono(&self, t: Timestamp) -> Instant {
        let since = t.duration_since(self.start).unsigned_abs();
        self.base.checked_add(since).unwrap_or(self.base)
    }
}

fn window() -> SignedDuration {
    SignedDuration::try_from(REORDER_WINDOW).unwrap_or(SignedDuration::ZERO)
}

/// What [`replay_day`] wrote.
#[derive(Debug, Clone)]
pub struct DayReport {
    pub day: String,
    pub events: usize,
    pub messages: usize,
    /// One JSON line per message: `{"topic": full topic, "payload": the payload}`.
    pub payloads: PathBuf,
    /// The simulator's ground truth ([`day::DayTruth`]).
    pub truth: PathBuf,
    /// The day's bookings as the centre's downlink would carry them.
    pub bookings: PathBuf,
}

/// Simulates a day of the hall in `config` ([`day::generate`]), replays it, and writes the
/// payloads, the truth and the bookings into `out` (the replay's outbox goes in
/// `out/outbox`, made afresh).
pub async fn replay_day(
    config: Config,
    options: &DayOptions,
    out: &Path,
) -> Result<DayReport, ReplayError> {
    let write_error = |path: &Path| {
        let path = path.to_path_buf();
        move |error| ReplayError::Write { path, error }
    };
    let day = day::generate(&config, options)?;
    let data_dir = out.join("outbox");
    if data_dir.exists() {
        // Our own scratch database from an earlier run: a replay starts from nothing.
        std::fs::remove_dir_all(&data_dir).map_err(write_error(&data_dir))?;
    }
    let base = payload::base_topic(&config);
    let hall_id = config.hall.id.clone();
    let events = day.events.len();
    // The centre publishes the day's bookings (retained) before the hall opens.
    let published = day
        .events
        .first()
        .map(stamp_of)
        .unwrap_or(Timestamp::UNIX_EPOCH);
    let downlink_bytes = bookings_downlink(&hall_id, &day.bookings)
        .to_string()
        .into_bytes();
    let messages = replay_with_downlink(
        config,
        vec![(published, downlink_bytes)],
        day.events,
        &data_dir,
    )
    .await?;

    let payloads = out.join("payloads.jsonl");
    let mut text = String::new();
    for m in &messages {
        // Payloads are JSON the gateway wrote itself; one that is not would be a bug worth
        // seeing in the file, so it goes in as a string rather than being dropped.
        let value = serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&m.payload).into())
        });
        let line = serde_json::json!({ "topic": format!("{base}/{}", m.topic), "payload": value });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    write_file(&payloads, text.as_bytes()).map_err(write_error(&payloads))?;

    let truth = out.join("truth.json");
    let json = serde_json::to_vec_pretty(&day.truth).expect("the truth is plain data");
    write_file(&truth, &json).map_err(write_error(&truth))?;

    let bookings = out.join("bookings.json");
    let downlink = bookings_downlink(&hall_id, &day.bookings);
    write_file(&bookings, downlink.to_string().as_bytes()).map_err(write_error(&bookings))?;

    Ok(DayReport {
        day: day.truth.day.clone(),
        events,
        messages: messages.len(),
        payloads,
        truth,
        bookings,
    })
}

fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// The centre's bookings message for the hall (the downlink's format).
fn bookings_downlink(hall_id: &str, bookings: &[day::Booking]) -> serde_json::Value {
    serde_json::json!({
        "schema_version": 1,
        "hall_id": hall_id,
        "bookings": bookings,
    })
}
