//! The core loop's pacing, on a real outbox: when the retained `state` goes out and when a
//! batch is worth a commit (state interval with its half-tick of slack, the event commit
//! interval for passages, the longer commit interval for cumulative counter reads, and a
//! counter's first baseline at once).
//!
//! The core reads no clock: each call takes its monotonic instant, so a test moves time by
//! passing a later one (`at(secs)`) — no waiting, and no dependence on the machine's speed.

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use jiff::Timestamp;

use super::{Gauges, HallCore, Resume, Start};
use crate::config::Config;
use crate::devices::DeviceEvent;
use crate::devices::counter::{CounterTracker, Totals};
use crate::occupancy::PassageFacts;
use crate::outbox::{Outbox, OutboxOptions};
use crate::terminals::DedupKey;
use crate::uplink::payload;

/// The shuffle tests' hall, with the intervals these tests count on set explicitly.
fn hall() -> Config {
    let mut config = crate::supervisor::shuffle_tests::hall();
    config.uplink.state_interval = Duration::from_secs(1);
    config.storage.commit_interval = Duration::from_secs(60);
    config.storage.event_commit_interval = Duration::from_secs(10);
    config.storage.min_commit_gap = Duration::ZERO;
    config
}

fn now() -> Timestamp {
    "2026-12-01T02:00:00Z".parse().expect("valid timestamp")
}

/// The monotonic instant `secs` after the core started.
fn at(secs: f64) -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now) + Duration::from_secs_f64(secs)
}

/// A core as the gateway starts one (at `at(0.0)`), and a fresh outbox in `dir` for its
/// commits.
fn core(dir: &Path) -> (HallCore, Outbox) {
    let mut config = hall();
    config.storage.data_dir = dir.to_path_buf();
    let (outbox, _) = Outbox::open(
        dir,
        OutboxOptions::from_config(&config.storage, Some(payload::roll_up)),
    )
    .expect("a fresh outbox opens");
    let start = Start {
        now: now(),
        mono: at(0.0),
        clock_synced: true,
        views: true,
        boot: 0,
    };
    (HallCore::new(config, Resume::default(), start), outbox)
}

/// Commits what the core decides to commit at `mono` (as the live loop does), if anything.
async fn flush(core: &mut HallCore, outbox: &Outbox, force: bool, mono: Instant) {
    if let Some(commit) = core.flush(force, mono) {
        crate::supervisor::commit(outbox, core, commit).await;
    }
}

fn commits(outbox: &Outbox) -> u64 {
    outbox.stats().snapshot().commits
}

/// Counter 0's reads (a cumulative profile): the first one is its baseline.
fn reads(config: &Config) -> impl FnMut(u64) -> DeviceEvent + use<> {
    let counting = config.counters[0].profile.counting();
    let mut tracker = CounterTracker::new(None);
    move |inward| {
        let totals = Totals { inward, outward: 0 };
        DeviceEvent::CounterRead {
            counter: 0,
            at: now(),
            totals,
            step: tracker.update(counting, totals),
        }
    }
}

fn passage(config: &Config) -> DeviceEvent {
    DeviceEvent::Passage {
        terminal: 0,
        at: now(),
        facts: PassageFacts {
            room: config.terminals[0].room,
            member: None,
            fever: false,
            mask_off: false,
            sensor_error: false,
            people: 1,
        },
        key: DedupKey {
            terminal: config.terminals[0].id.clone(),
            event: "e1".into(),
        },
        receipt: None,
    }
}

#[tokio::test]
async fn the_state_goes_out_at_a_tick_that_comes_a_little_early_but_not_before_its_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut core, outbox) = core(dir.path());
    let gauges = Gauges::default();
    let state = |core: &mut HallCore, mono: Instant| core.state(false, now(), mono, &gauges);
    assert!(
        state(&mut core, at(0.0)).is_some(),
        "the first state goes out"
    );

    // A tick 900 ms after the last state (ticks drift by the work in them): with a 1 s
    // interval it must go out, or the state goes out every other second.
    core.state_dirty = true;
    assert!(
        state(&mut core, at(0.9)).is_some(),
        "a changed state 900 ms after the last goes out at a 1 s interval"
    );

    // The slack is half a tick, not the interval: at 5 s, one second is far too soon.
    core.config.uplink.state_interval = Duration::from_secs(5);
    core.state_dirty = true;
    assert!(
        state(&mut core, at(1.9)).is_none(),
        "a state 1 s after the last waits for a 5 s interval"
    );
    assert!(
        state(&mut core, at(5.9)).is_some(),
        "5 s after the last, it goes out"
    );
    outbox.close().await;
}

#[tokio::test]
async fn a_passage_is_committed_after_the_event_interval_not_the_commit_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut core, outbox) = core(dir.path());
    let config = core.config.clone();
    core.apply(passage(&config));
    let before = commits(&outbox);

    flush(&mut core, &outbox, false, at(5.0)).await;
    assert_eq!(
        commits(&outbox),
        before,
        "5 s is within the 10 s event interval"
    );

    flush(&mut core, &outbox, false, at(11.0)).await;
    assert_eq!(
        commits(&outbox),
        before + 1,
        "11 s after the last commit, the passage is committed (long before the 60 s interval)"
    );
    outbox.close().await;
}

#[tokio::test]
async fn a_cumulative_counters_crossings_wait_for_the_commit_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut core, outbox) = core(dir.path());
    let config = core.config.clone();
    let mut read = reads(&config);
    core.apply(read(100));
    flush(&mut core, &outbox, false, at(61.0)).await;
    core.apply(read(103));
    let before = commits(&outbox);

    // The counter's own total gives these back after a crash: no hurry.
    flush(&mut core, &outbox, false, at(72.0)).await;
    assert_eq!(
        commits(&outbox),
        before,
        "cumulative crossings are not urgent: 11 s is within the 60 s commit interval"
    );

    flush(&mut core, &outbox, false, at(122.0)).await;
    assert_eq!(commits(&outbox), before + 1, "61 s after: committed");
    outbox.close().await;
}

#[tokio::test]
async fn a_counters_first_baseline_is_committed_at_the_next_tick() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut core, outbox) = core(dir.path());
        let config = core.config.clone();
        let mut read = reads(&config);
        // Arrives; still held in the reorder window, and no commit interval has passed.
        core.receive(read(4242));
        let before = commits(&outbox);
        flush(&mut core, &outbox, false, at(0.5)).await;
        assert_eq!(
            commits(&outbox),
            before + 1,
            "the first baseline is committed now"
        );
        outbox.close().await;
    }
    // A gateway killed now starts again from that baseline, not from a fresh first read.
    let config = hall();
    let (outbox, restored) = Outbox::open(
        dir.path(),
        OutboxOptions::from_config(&config.storage, Some(payload::roll_up)),
    )
    .expect("reopens");
    assert_eq!(
        restored.baselines.get(&config.counters[0].id),
        Some(&Totals {
            inward: 4242,
            outward: 0
        })
    );
    outbox.close().await;
}

/// Passage `e1` with a transport waiting on it; the answer comes on the receiver.
fn waiting_passage(
    config: &Config,
) -> (
    DeviceEvent,
    tokio::sync::oneshot::Receiver<crate::devices::terminals::Ack>,
) {
    let (ack_tx, ack_rx) = tokio::sync::oneshot::channel();
    let mut event = passage(config);
    if let DeviceEvent::Passage { receipt, .. } = &mut event {
        *receipt = Some(crate::devices::terminals::Receipt::new(ack_tx));
    }
    (event, ack_rx)
}

fn reopen(dir: &Path) -> (Outbox, crate::outbox::Restored) {
    let config = hall();
    Outbox::open(
        dir,
        OutboxOptions::from_config(&config.storage, Some(payload::roll_up)),
    )
    .expect("reopens")
}

#[tokio::test]
async fn a_waiting_passage_is_journaled_at_once_and_its_device_told_only_after_that_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut core, outbox) = core(dir.path());
        let config = core.config.clone();
        let (waiting, mut ack) = waiting_passage(&config);
        core.receive(waiting);
        assert!(
            ack.try_recv().is_err(),
            "no answer while the passage is on no disk"
        );
        // Still in the reorder window, long before the 10 s event interval: a commit of its
        // journal row alone, then the answer.
        let before = commits(&outbox);
        flush(&mut core, &outbox, false, at(0.5)).await;
        assert_eq!(commits(&outbox), before + 1, "journaled at once");
        assert_eq!(
            ack.try_recv(),
            Ok(crate::devices::terminals::Ack::Committed)
        );
        // Killed here: the engine never counted it.
        outbox.close().await;
    }
    let received = reopen_restored(dir.path()).await.received;
    assert_eq!(received.len(), 1, "the answered passage is on disk");
    {
        // The next life counts it, and the commit that holds the count deletes the row.
        let (mut core, outbox) = core(dir.path());
        core.journaled(received);
        for event in core.reorder.drain() {
            core.apply(event);
        }
        assert_eq!(core.stats.terminals.terminals[0].snapshot().passages, 1);
        flush(&mut core, &outbox, true, at(1.0)).await;
        outbox.close().await;
    }
    let (outbox, restored) = reopen(dir.path());
    assert!(
        restored.received.is_empty(),
        "counted, so no longer journaled"
    );
    assert!(
        restored.passage_keys.iter().any(|(_, event)| event == "e1"),
        "its key is kept with the count"
    );
    outbox.close().await;
}

/// What a reopened outbox restores (the database closed again at once).
async fn reopen_restored(dir: &Path) -> crate::outbox::Restored {
    let (outbox, restored) = reopen(dir);
    outbox.close().await;
    restored
}

#[tokio::test]
async fn a_passage_of_a_closed_day_is_not_counted_into_today_but_its_device_is_answered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut core, outbox) = core(dir.path());
    let config = core.config.clone();
    let (mut old, mut ack) = waiting_passage(&config);
    if let DeviceEvent::Passage { at, .. } = &mut old {
        *at = now() - jiff::SignedDuration::from_hours(30);
    }
    let revision = core.engine.state().revision;
    core.receive(old);
    flush(&mut core, &outbox, false, at(0.5)).await;
    assert_eq!(
        ack.try_recv(),
        Ok(crate::devices::terminals::Ack::Committed)
    );
    for event in core.reorder.drain() {
        core.apply(event);
    }
    assert_eq!(
        core.engine.state().revision,
        revision,
        "the engine never sees it: not today's visit"
    );
    assert_eq!(core.stats.terminals.terminals[0].snapshot().earlier_day, 1);
    assert_eq!(core.stats.terminals.terminals[0].snapshot().passages, 0);
    flush(&mut core, &outbox, true, at(1.0)).await;
    outbox.close().await;
    let restored = reopen_restored(dir.path()).await;
    assert!(
        restored.received.is_empty(),
        "its journal row goes: nothing to count later either"
    );
}

/// The messages a tick committed, by kind.
fn of_kind(commit: &Option<super::Commit>, kind: &str) -> Vec<serde_json::Value> {
    commit
        .iter()
        .flat_map(|c| &c.batch.messages)
        .filter(|m| m.kind == kind)
        .map(|m| serde_json::from_slice(&m.payload).expect("payloads are JSON"))
        .collect()
}

#[tokio::test]
async fn a_clock_stepped_forward_reports_the_minutes_it_skipped_and_state_ids_never_repeat() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut core, outbox) = core(dir.path());
    let gauges = Gauges::default();
    let secs = |s: i64| now() + jiff::SignedDuration::from_secs(s);
    let mut ids = std::collections::BTreeSet::new();
    let mut gaps = Vec::new();
    // A minute of ticks, then the clock jumps 10 minutes ahead, runs, and is stepped back to
    // where it was: wall times repeat, ids must not.
    let mut walls: Vec<i64> = (0..70).collect();
    walls.extend(670..700);
    walls.extend(40..70);
    for (n, wall) in walls.into_iter().enumerate() {
        let tick = core.tick(secs(wall), at(n as f64), &gauges);
        if let Some(state) = &tick.state {
            assert!(
                ids.insert(state.msg_id.clone()),
                "repeated id {}",
                state.msg_id
            );
        }
        gaps.extend(of_kind(&tick.commit, payload::KIND_GAP));
        if let Some(commit) = tick.commit {
            crate::supervisor::commit(&outbox, &mut core, commit).await;
        }
    }
    assert_eq!(gaps.len(), 1, "one gap: {gaps:?}");
    assert_eq!(gaps[0]["cause"], "clock_step");
    assert_eq!(gaps[0]["from"], "2026-12-01T02:02:00Z");
    assert_eq!(gaps[0]["to"], "2026-12-01T02:11:00Z");
    assert_eq!(gaps[0]["minutes"], 9);
    assert!(
        ids.len() >= 3,
        "states went out at the start and at each step: {ids:?}"
    );
    outbox.close().await;
}

#[tokio::test]
async fn open_alerts_are_committed_and_a_restarted_core_continues_their_episodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gauges = Gauges::default();
    let raised = {
        let (mut core, outbox) = core(dir.path());
        core.clock_synced = false;
        let tick = core.tick(now(), at(0.0), &gauges);
        let raised = of_kind(&tick.commit, payload::KIND_ALERT);
        assert_eq!(raised.len(), 1, "the unsynchronised clock: {raised:?}");
        let commit = tick.commit.expect("an alert is committed at once");
        assert!(commit.batch.alerts_state.is_some(), "with the open alerts");
        crate::supervisor::commit(&outbox, &mut core, commit).await;
        outbox.close().await;
        raised[0]["raised_at"].clone()
    };
    let restored = reopen_restored(dir.path()).await;
    let kept = restored.alerts_state.expect("the open alerts were kept");
    let resumed = |synced: bool| {
        let start = Start {
            now: now() + jiff::SignedDuration::from_mins(5),
            mono: at(0.0),
            clock_synced: synced,
            views: true,
            boot: 1,
        };
        let resume = Resume {
            alerts_state: Some(&kept),
            ..Resume::default()
        };
        HallCore::new(hall(), resume, start)
    };
    // Still unsynchronised after the restart: the same episode, nothing raised again.
    let mut core = resumed(false);
    let tick = core.tick(start_plus(300), at(0.0), &Gauges::default());
    assert!(of_kind(&tick.commit, payload::KIND_ALERT).is_empty());
    // Synchronised meanwhile: the old episode is cleared, naming its raise.
    let mut core = resumed(true);
    let gauges = Gauges {
        clock_synced: true,
        ..Gauges::default()
    };
    let tick = core.tick(start_plus(300), at(0.0), &gauges);
    let cleared = of_kind(&tick.commit, payload::KIND_ALERT);
    assert_eq!(cleared.len(), 1, "{cleared:?}");
    assert_eq!(cleared[0]["state"], "cleared");
    assert_eq!(cleared[0]["raised_at"], raised);
}

fn start_plus(secs: i64) -> Timestamp {
    now() + jiff::SignedDuration::from_secs(secs)
}
#[tokio::test]
async fn a_database_made_again_gets_everything_the_core_holds_at_the_next_tick() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut core, outbox) = core(dir.path());
    let config = core.config.clone();
    core.apply(passage(&config));
    flush(&mut core, &outbox, true, at(1.0)).await;
    let mut gauges = Gauges::default();
    // The first ticks have news of their own (the first alerts); then a tick within the
    // intervals commits nothing.
    let mut quiet = false;
    for second in 2..10 {
        match core
            .tick(now(), at(f64::from(second) / 4.0 + 1.0), &gauges)
            .commit
        {
            Some(commit) => crate::supervisor::commit(&outbox, &mut core, commit).await,
            None => {
                quiet = true;
                break;
            }
        }
    }
    assert!(quiet, "the core settles to nothing worth a commit");

    gauges.outbox.recreated = 1;
    let tick = core.tick(now(), at(3.0), &gauges);
    let commit = tick
        .commit
        .expect("the outbox made its database again: commit all");
    assert!(matches!(commit.kind, super::CommitKind::Full { .. }));
    assert!(commit.batch.engine_state.is_some(), "today's figures");
    assert!(
        commit.batch.bookings_state.is_some(),
        "the bookings tracker"
    );
    crate::supervisor::commit(&outbox, &mut core, commit).await;

    // Once: the same count at the next tick is nothing new.
    let again = core.tick(now(), at(4.0), &gauges);
    assert!(again.commit.is_none(), "forced once per remake");
    outbox.close().await;
}
