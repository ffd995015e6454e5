//! Store and forward, black box: a real mosquitto, `hallgate simulate` counters, `hallgate
//! run`, and an outbox seeded with a long outage's backlog (`hallgate seed-backlog`).
//!
//! - A backlog, a SIGTERM in the middle of its replay, and a three-minute outage of a broker
//!   that comes back empty: every message is delivered, the live bins add up to the ground
//!   truth, and the replay never runs faster than `max_replay_msgs_per_sec`.
//! - The gateway is `kill -9`ed thirty times during heavy writes (roll-ups, replay deletions,
//!   commits): the database passes SQLite's full integrity check after every kill and nothing
//!   is missing at the end.
//! - The disk holding the outbox fills up: a clear ERROR, the reserve, roll-ups and the
//!   lowered bound keep the gateway storing and serving, and nothing measured is lost.
//!
//! Seeded minutes may reach the centre one by one or rolled up into 15-minute or hourly bins;
//! [`check_seeded_coverage`] checks that every seeded minute arrived exactly once in the
//! union, and that the entries add up to what was seeded.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use rand::Rng;
use serde_json::Value;

use common::backlog::seed_backlog as seed;
use common::bins::{bin_times, check_bins_are_contiguous, compare_bin_sums, describe_bins};
use common::contract::validate_received;
use common::disk::{fill_disk, small_disk};
use common::hall::HallPlan;
use common::process::Traffic;
use common::rig::Rig;
use common::truth::Truth;

const FUNCTION_ROOMS: usize = 3;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn unix_now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// The minutes (Unix seconds of their start) an aggregate holds.
fn minutes_of(bin: &Value) -> anyhow::Result<BTreeSet<i64>> {
    let (start, _) = bin_times(bin)?;
    let start = start.as_second();
    Ok(match bin.get("minute_mask").and_then(Value::as_str) {
        None => BTreeSet::from([start]),
        Some(hex) => {
            let mask = u64::from_str_radix(hex, 16).with_context(|| format!("bad mask {hex}"))?;
            (0..64)
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| start + 60 * i)
                .collect()
        }
    })
}

fn entries_of(bin: &Value) -> u64 {
    bin.get("rooms")
        .and_then(Value::as_array)
        .map(|rooms| {
            rooms
                .iter()
                .filter_map(|r| r.get("entries").and_then(Value::as_u64))
                .sum()
        })
        .unwrap_or(0)
}

/// Every seeded minute in `ranges` arrived, and the messages that are not contained in a
/// larger one received (by minute mask) hold each minute once and add up to the seeded
/// entries. A roll-up that repeats a minute also sent alone contains it, so the centre's rule
/// (subtract what you have) gives the same total, which is what this computes.
fn check_seeded_coverage(
    received: &BTreeMap<String, Value>,
    ranges: &[(i64, i64)],
    seeded_entries: u64,
) -> anyhow::Result<Result<(), String>> {
    let in_seeded = |m: i64| ranges.iter().any(|(a, b)| (*a..=*b).contains(&m));
    let mut pieces: Vec<(BTreeSet<i64>, u64, &String)> = Vec::new();
    for (id, bin) in received {
        let minutes = minutes_of(bin)?;
        if minutes.iter().any(|m| in_seeded(*m)) {
            ensure!(
                minutes.iter().all(|m| in_seeded(*m)),
                "{id} mixes seeded minutes with others: {bin}"
            );
            pieces.push((minutes, entries_of(bin), id));
        }
    }
    // Largest first; keep a piece only if no kept piece contains it.
    pieces.sort_by_key(|(m, _, _)| std::cmp::Reverse(m.len()));
    let mut kept: Vec<&(BTreeSet<i64>, u64, &String)> = Vec::new();
    for piece in &pieces {
        if kept.iter().any(|k| piece.0.is_subset(&k.0)) {
            continue;
        }
        if let Some(k) = kept.iter().find(|k| !piece.0.is_disjoint(&k.0)) {
            bail!(
                "{} and {} overlap without one containing the other: the centre could not tell what to count",
                piece.2,
                k.2
            );
        }
        kept.push(piece);
    }
    let covered: BTreeSet<i64> = kept.iter().flat_map(|k| k.0.iter().copied()).collect();
    let expected: BTreeSet<i64> = ranges
        .iter()
        .flat_map(|(a, b)| (*a..=*b).step_by(60))
        .collect();
    let entries: u64 = kept.iter().map(|k| k.1).sum();
    if covered == expected && entries == seeded_entries {
        return Ok(Ok(()));
    }
    let missing: Vec<&i64> = expected.difference(&covered).take(10).collect();
    Ok(Err(format!(
        "seeded minutes: {} expected, {} covered (first missing: {missing:?}); entries: {seeded_entries} seeded, {entries} received",
        expected.len(),
        covered.len()
    )))
}

/// All aggregates received, by msg_id (minute bins and roll-ups).
fn received(rig: &Rig) -> anyhow::Result<BTreeMap<String, Value>> {
    let seen = rig.watcher()?.seen();
    let mut all = seen.aggregates;
    all.extend(seen.rollups);
    ensure!(
        seen.conflicts.is_empty(),
        "a re-sent message must repeat its msg_id with the same content: {:#?}",
        seen.conflicts
    );
    Ok(all)
}

/// Minute bins at or after `from` (the live ones, not the seeded backlog).
fn live_bins(rig: &Rig, from: i64) -> anyhow::Result<BTreeMap<String, Value>> {
    let mut bins = rig.watcher()?.aggregates();
    bins.retain(|_, b| bin_times(b).is_ok_and(|(start, _)| start.as_second() >= from));
    Ok(bins)
}

/// Waits until the live minute bins add up to the truth (every crossing in a delivered bin).
async fn wait_for_live_bins(rig: &mut Rig, truth: &Truth, from: i64) -> anyhow::Result<()> {
    let rooms = rig.plan.room_ids();
    // The bin of the last poll closes at the next minute; then a little for the replay.
    let deadline = Instant::now() + secs(60 - (unix_now() % 60) as u64) + secs(40);
    loop {
        rig.ensure_alive()?;
        let bins = live_bins(rig, from)?;
        match compare_bin_sums(&bins, truth, &rooms)? {
            Ok(()) => return check_bins_are_contiguous(&bins),
            Err(table) if Instant::now() >= deadline => bail!(
                "the live minute bins (each msg_id once) do not add up to the ground truth: a bin \
                 was lost\n{table}\nbins:\n{}",
                describe_bins(&bins)
            ),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Waits until the seeded backlog has fully arrived.
async fn wait_for_seeded(
    rig: &mut Rig,
    ranges: &[(i64, i64)],
    entries: u64,
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        rig.ensure_alive()?;
        match check_seeded_coverage(&received(rig)?, ranges, entries)? {
            Ok(()) => return Ok(()),
            Err(why) if Instant::now() >= deadline => {
                bail!("the seeded backlog did not arrive whole within {limit:?}: {why}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

/// The most aggregate messages that arrived within any window of `window`.
fn peak_in(arrivals: &[(Instant, String)], window: Duration) -> usize {
    let mut peak = 0;
    let mut start = 0;
    for end in 0..arrivals.len() {
        while arrivals[end].0.duration_since(arrivals[start].0) >= window {
            start += 1;
        }
        peak = peak.max(end - start + 1);
    }
    peak
}

fn plan(hall: &str) -> HallPlan {
    HallPlan::lobby_with_function_rooms(hall, FUNCTION_ROOMS)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_sigterm_mid_replay_and_a_three_minute_outage_are_replayed_paced_and_complete() {
    const RATE: usize = 20;
    let mut plan = plan("t-replay");
    plan.uplink_extra = format!("max_replay_msgs_per_sec = {RATE}");
    let rig = Rig::new("replay", plan).expect("test directory");
    rig.run(secs(600), async |rig| {
        rig.start_broker_with_observer().await?;
        let config = rig.write_gateway_config()?;
        // Ten hours of backlog, ending an hour ago (well clear of the live bins).
        let seeded = seed(&config, 600, unix_now() - 3600, 1)?;
        ensure!(seeded.messages == 600, "{seeded:?}");
        let ranges = [(seeded.first_bin, seeded.last_bin)];

        let live_from = (unix_now() / 60) * 60;
        rig.start_simulator(Traffic {
            seed: 61,
            warmup: secs(10),
            duration: secs(270),
            arrivals_per_min: 40.0,
            mean_dwell_secs: 8.0,
        })?;
        let replay_started = Instant::now();
        rig.start_gateway()?;
        // SIGTERM in the middle of the replay: the gateway stops within its deadline, what
        // was in flight is acknowledged or stays in the outbox, and the next start goes on.
        tokio::time::sleep(secs(8)).await;
        let before = received(rig)?.len();
        ensure!(
            (10..600).contains(&before),
            "8 s in, the replay should be under way ({before} of 600 arrived)"
        );
        rig.gateway()?.sigterm()?;
        let status = rig
            .gateway()?
            .wait_exit(secs(12))
            .await
            .context("the gateway did not stop within 12 s of SIGTERM during a replay")?;
        ensure!(status.success(), "SIGTERM during a replay: exit {status}");
        rig.gateway()?.spawn()?;
        wait_for_seeded(rig, &ranges, seeded.entries, secs(120)).await?;
        let replay_took = replay_started.elapsed();
        // Paced: 600 messages at 20 a second cannot take much less than 29 s.
        ensure!(
            replay_took >= secs(25),
            "600 messages replayed in {replay_took:?}: faster than {RATE}/s"
        );
        let counters = rig.plan.simulated_counter_ids();
        rig.wait_until_counters_online(&counters).await?;

        // Three minutes without a broker, traffic running; it comes back empty.
        rig.ensure_alive()?;
        rig.broker()?.stop();
        tokio::time::sleep(secs(180)).await;
        rig.ensure_alive()?;
        rig.broker()?.restart().await?;

        let truth = rig.wait_for_truth(200).await?;
        rig.wait_until_state_matches(&truth, secs(60)).await?;
        wait_for_live_bins(rig, &truth, live_from).await?;
        // Nothing seeded went missing or got counted twice through the outage either.
        wait_for_seeded(rig, &ranges, seeded.entries, secs(5)).await?;

        let arrivals = rig.watcher()?.seen().arrivals;
        // A token bucket of one second's worth lets at most RATE × (T + 1) out in any window
        // of T seconds. Measured at the subscriber, after two brokers and a bridge, arrivals
        // can bunch after a stall of the (shared, noisy) machine, so the window is 5 s: an
        // unpaced replay (all 600 within a second) fails by far, a paced one has slack.
        let window = secs(5);
        let peak = peak_in(&arrivals, window);
        eprintln!(
            "replay: {} aggregate messages, initial backlog in {replay_took:?}, peak {peak} in {window:?} (bound {RATE}/s)",
            arrivals.len()
        );
        ensure!(
            peak <= 6 * RATE,
            "{peak} aggregate messages arrived within {window:?}; the bound is {RATE}/s"
        );
        Ok(())
    })
    .await;
}

/// Opens the database the way an operator would after a crash and runs SQLite's full check.
fn integrity(data_dir: &Path) -> anyhow::Result<(String, u64)> {
    // The test inspects the gateway's file from the outside; the rule that only `src/outbox`
    // opens SQLite is about the gateway's own code.
    #[allow(clippy::disallowed_methods)]
    let conn = rusqlite::Connection::open(data_dir.join("hallgate.db"))?;
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    let rows: i64 = conn.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))?;
    Ok((check, rows as u64))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_killed_thirty_times_during_heavy_writes_keeps_a_sound_database_and_loses_nothing()
{
    const KILLS: usize = 30;
    let mut plan = plan("t-crash");
    plan.uplink_extra = "max_replay_msgs_per_sec = 400".into();
    let rig = Rig::new("crash-loop", plan).expect("test directory");
    rig.run(secs(600), async |rig| {
        rig.start_broker().await?;
        // The seeding config keeps the default bound; the gateway's is small, so each start
        // begins with roll-ups.
        let seed_config = rig.write_gateway_config()?;
        let seed_config = {
            let copy = rig.dir().join("seed.toml");
            std::fs::copy(&seed_config, &copy)?;
            copy
        };
        rig.plan.storage_extra = "max_outbox_bytes = 262144".into();
        rig.write_gateway_config()?;

        let live_from = (unix_now() / 60) * 60;
        rig.start_simulator(Traffic {
            seed: 62,
            warmup: secs(10),
            duration: secs(150),
            arrivals_per_min: 60.0,
            mean_dwell_secs: 8.0,
        })?;
        rig.start_gateway()?;
        let counters = rig.plan.simulated_counter_ids();
        rig.wait_until_counters_online(&counters).await?;

        let mut ranges = Vec::new();
        let mut seeded_entries = 0;
        let mut rng = rand::rng();
        for kill in 0..KILLS {
            // Kill, check the file, add eight hours of backlog (far in the past, a range of
            // its own), start again, and kill again at a random moment.
            rig.gateway()?.kill9()?;
            let (check, rows) = integrity(&rig.data_dir)
                .with_context(|| format!("after kill {kill} the database does not open"))?;
            ensure!(
                check == "ok",
                "after kill {kill}: integrity_check says {check}"
            );
            let end = unix_now() - 86_400 * (kill as i64 + 1);
            let seeded = seed(&seed_config, 480, end, kill as u64)?;
            ranges.push((seeded.first_bin, seeded.last_bin));
            seeded_entries += seeded.entries;
            eprintln!(
                "kill {kill}: {rows} rows left, seeded {} more",
                seeded.messages
            );
            rig.gateway()?.spawn()?;
            tokio::time::sleep(Duration::from_millis(rng.random_range(300..2500))).await;
            let log = rig.gateway()?.log_text();
            ensure!(
                !log.contains("is damaged"),
                "the gateway found its database damaged after a kill"
            );
        }
        rig.gateway()?.kill9()?;
        let (check, _) = integrity(&rig.data_dir)?;
        ensure!(
            check == "ok",
            "after the last kill: integrity_check says {check}"
        );
        rig.gateway()?.spawn()?;

        let truth = rig.wait_for_truth(100).await?;
        rig.wait_until_state_matches(&truth, secs(60)).await?;
        wait_for_live_bins(rig, &truth, live_from).await?;
        wait_for_seeded(rig, &ranges, seeded_entries, secs(120)).await?;
        let rollups = rig.watcher()?.seen().rollups.len();
        ensure!(
            rollups > 0,
            "the small bound should have made the gateway roll up"
        );
        // Roll-ups included, everything that reached the centre keeps to the contract.
        let validation = validate_received(rig.dir(), "crash-loop-uplink", rig.watcher()?)?;
        validation.ensure_passed("what the crash loop delivered")?;
        let rolled_up: u64 = ["agg_15m", "agg_1h"]
            .iter()
            .filter_map(|kind| validation.valid.get(*kind))
            .sum();
        ensure!(
            rolled_up > 0,
            "no roll-up was validated:\n{}",
            validation.output
        );
        eprintln!("crash loop: {KILLS} kills, {rollups} roll-ups delivered, nothing missing");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_reported_rolled_up_and_the_gateway_keeps_serving() {
    let plan = plan("t-disk");
    let mut rig = Rig::new("full-disk", plan).expect("test directory");
    let Some((small, _mounted)) = small_disk(rig.dir()) else {
        return;
    };
    rig.data_dir = small.clone();
    rig.run(secs(420), async |rig| {
        rig.start_broker_with_observer().await?;
        let config = rig.write_gateway_config()?;
        let seeded = seed(&config, 900, unix_now() - 3600, 3)?;
        let ranges = [(seeded.first_bin, seeded.last_bin)];

        let live_from = (unix_now() / 60) * 60;
        rig.start_simulator(Traffic {
            seed: 63,
            warmup: secs(10),
            duration: secs(100),
            arrivals_per_min: 60.0,
            mean_dwell_secs: 8.0,
        })?;
        rig.start_gateway()?;
        let counters = rig.plan.simulated_counter_ids();
        rig.wait_until_counters_online(&counters).await?;
        // No broker while the disk fills: the backlog can only grow.
        rig.broker()?.stop();
        let filled = fill_disk(&small)?;
        eprintln!("filled the last {filled} bytes of the 4 MiB disk");
        rig.wait_for_gateway_log("the disk holding the outbox is full", secs(90))
            .await?;
        rig.broker()?.restart().await?;

        let truth = rig.wait_for_truth(50).await?;
        rig.wait_until_state_matches(&truth, secs(60)).await?;
        wait_for_live_bins(rig, &truth, live_from).await?;
        let state = rig.watcher()?.state().context("no state")?;
        let outbox = state.get("outbox").context("state has no outbox section")?;
        eprintln!("outbox after the full disk: {outbox}");
        let lowered = outbox.get("max_bytes").and_then(Value::as_u64).unwrap_or(0);
        let rolled = outbox.get("rolled_up").and_then(Value::as_u64).unwrap_or(0);
        let dropped = outbox.get("dropped").and_then(Value::as_u64).unwrap_or(0);
        // Either the reserve and a checkpoint were enough, or the bound came down and old
        // bins were rolled up (and, only if that was not enough, dropped — then counted).
        if lowered < 64 * 1024 * 1024 {
            ensure!(
                rolled + dropped > 0,
                "the bound was lowered but nothing was made room for"
            );
        }
        if dropped == 0 {
            wait_for_seeded(rig, &ranges, seeded.entries, secs(60)).await?;
        }
        rig.ensure_alive()?;
        Ok(())
    })
    .await;
}
