//! RS-485 end to end, over real serial lines: socat pty pairs between `hallgate run` and
//! `hallgate simulate`, with mosquitto as the central broker, all as separate processes.
//!
//! The hall is the one of `end_to_end.rs` (a lobby and five function rooms), with the lobby's
//! street entrance on Modbus TCP and the five function-room counters as Modbus RTU slaves,
//! units 1 to 5, on one bus at 38400 baud, in the three shipped register layouts. The gateway
//! opens the pair's gateway side as the bus's `port`; the simulator answers on the device side
//! (`--serial-peer`). Each scenario does something a real bus does — a pulled adapter, a dead
//! slave, a noisy line — and then demands the exact ground truth in the retained `state`, as
//! `end_to_end.rs` does, plus what the published line statistics and `/proc/<pid>/fd` say
//! about how the gateway coped.
//!
//! Run with `bash scripts/test.sh` (it installs mosquitto and socat) or
//! `cargo test --test serial`. A failure prints expected against got and the last lines of
//! every process log, socat's included; the full logs stay in the directory it names
//! (`HALLGATE_TEST_KEEP=1` keeps it after a pass too).

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::Value;

use common::hall::{HallPlan, POLL_INTERVAL_MS, TIMEOUT_MS};
use common::process::Traffic;
use common::rig::Rig;
use common::serial::{LineStats, bus_stats, describe_descriptors, device_stats, pts_descriptors};
use common::sleep_until;
use common::truth::state_devices_online;

/// Function rooms off the lobby, each door's counter a slave on the bus.
const FUNCTION_ROOMS: usize = 5;

const BUS: &str = "rs485-rooms";
const BAUD: u32 = 38_400;

/// How often the gateway retries a degraded slave. Short enough that a 20 s window sees the
/// dead slave retried a few times (so "far fewer polls" is measured, not assumed), long
/// enough that the retries are clearly not the normal schedule.
const DEGRADED_RETRY_MS: u64 = 5_000;

/// Fewer crossings than this and a scenario proves little; it fails rather than pass vacuously.
const MIN_CROSSINGS: u64 = 300;

/// How long the retained state may take to settle once the traffic has stopped.
const STATE_SETTLE: Duration = Duration::from_secs(30);

/// Each scenario's overall limit.
const SCENARIO_LIMIT: Duration = Duration::from_secs(180);

fn traffic(seed: u64) -> Traffic {
    Traffic {
        seed,
        warmup: Duration::from_secs(10),
        duration: Duration::from_secs(40),
        arrivals_per_min: 180.0,
        mean_dwell_secs: 6.0,
    }
}

/// The lobby's entrance on Modbus TCP, every function room's counter on the bus.
fn plan(hall_id: &str) -> HallPlan {
    let mut plan = HallPlan::lobby_with_function_rooms(hall_id, FUNCTION_ROOMS);
    plan.add_bus(BUS, BAUD, DEGRADED_RETRY_MS);
    for k in 1..=FUNCTION_ROOMS {
        let unit = u8::try_from(k).expect("a handful of rooms");
        plan.put_on_bus(BUS, &format!("pc-room-{k}"), unit);
    }
    plan
}

/// The counters on the bus that the simulator serves.
fn bus_counters(plan: &HallPlan) -> Vec<String> {
    plan.simulated_counter_ids()
        .into_iter()
        .filter(|id| plan.bus_of(id).is_some())
        .collect()
}

fn rig(name: &str, plan: HallPlan) -> Rig {
    Rig::new(name, plan).expect("a temporary directory can be created")
}

/// Broker, pty pair, simulator (with `simulator_args`) and gateway.
async fn start_processes(
    rig: &mut Rig,
    traffic: Traffic,
    simulator_args: &[&str],
) -> anyhow::Result<()> {
    rig.start_broker().await?;
    rig.make_pty_pairs().await?;
    let args = simulator_args.iter().map(Into::into).collect();
    rig.start_simulator_with_args(traffic, args)?;
    rig.start_gateway()
}

/// [`start_processes`] on a clean line, and every simulated counter online before the traffic
/// starts.
async fn start(rig: &mut Rig, traffic: Traffic) -> anyhow::Result<()> {
    start_processes(rig, traffic, &[]).await?;
    let counters = rig.plan.simulated_counter_ids();
    rig.wait_until_counters_online(&counters).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_slaves_on_one_bus_give_exact_occupancy() {
    rig("rtu-exact", plan("t-rtu-exact"))
        .run(SCENARIO_LIMIT, async |rig| {
            start(rig, traffic(51)).await?;
            let truth = rig.wait_for_truth(MIN_CROSSINGS).await?;
            let state = rig.wait_until_state_matches(&truth, STATE_SETTLE).await?;

            // A clean line: every slave was polled, and none ever answered with an exception
            // or nonsense, which would mean the simulator and the gateway disagree on a
            // register map or on RTU framing.
            let bus = bus_stats(&state, BUS)?;
            ensure!(bus.polls > 0, "the bus shows no polls: {bus:?}");
            for id in bus_counters(&rig.plan) {
                let stats = device_stats(&state, &id)?;
                ensure!(
                    stats.polls > 0 && stats.exceptions == 0 && stats.bad_answers == 0,
                    "on a clean line {id} should be polled and never answer with an exception or \
                     nonsense: {stats:?}"
                );
            }
            Ok(())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unplugged_bus_is_reopened_and_counts_stay_exact() {
    let plan = plan("t-rtu-unplug");
    let on_bus = bus_counters(&plan);
    rig("rtu-unplug", plan)
        .run(SCENARIO_LIMIT, async |rig| {
            let traffic = traffic(52);
            start(rig, traffic).await?;
            let pid = rig.gateway()?.pid().context("the gateway runs")?;

            // The gateway holds the bus open: one descriptor, on the pair's gateway side.
            let plugged_pts = rig.pty_pair(BUS)?.gateway_pts()?;
            let before = pts_descriptors(pid)?;
            ensure!(
                before.len() == 1 && before[0].1 == plugged_pts,
                "before the unplug the gateway should hold exactly the bus's pty ({}) open; it \
                 holds: {}",
                plugged_pts.display(),
                describe_descriptors(&before)
            );

            // A third of the way into the traffic the adapter is pulled: both ptys go, and
            // stay gone for five seconds while people keep walking through the doors.
            sleep_until(rig.simulator()?.traffic_starts() + traffic.duration / 3).await;
            rig.ensure_alive()?;
            rig.pty_pair(BUS)?.unplug().await?;
            let unplugged = Instant::now();
            let back_at = unplugged + Duration::from_secs(5);
            // The driver meets the lost port at its next poll (250 ms) and the health goes
            // into the next state (ticks 1 s apart) without waiting out the reorder window:
            // about 1.3 s at worst, so 4 s leaves room for a loaded machine.
            rig.wait_for_devices(&on_bus, false, Duration::from_secs(4))
                .await
                .context("with its bus unplugged, every slave on it should be offline")?;

            // While it is gone the gateway must not hold the dead pty, nor anything its
            // attempts to re-open the missing path might leave behind.
            let mut released = None;
            while Instant::now() < back_at {
                rig.ensure_alive()?;
                let held = pts_descriptors(pid)?;
                match (held.is_empty(), released) {
                    (true, None) => released = Some(unplugged.elapsed()),
                    (false, Some(after)) => bail!(
                        "the gateway released the bus's pty {after:?} after the unplug but holds \
                         one again while the bus is still gone: {}",
                        describe_descriptors(&held)
                    ),
                    (false, None) if unplugged.elapsed() > Duration::from_secs(3) => bail!(
                        "3 s after the unplug the gateway still holds a pty open (a leaked \
                         descriptor): {}",
                        describe_descriptors(&held)
                    ),
                    _ => {}
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }

            // Plugged in again at the same path (behind it, new ptys): the gateway must find
            // it by itself.
            rig.pty_pair(BUS)?.replug().await?;
            let replugged = Instant::now();
            rig.wait_for_devices(&on_bus, true, Duration::from_secs(30))
                .await
                .context("after the bus came back, the gateway should re-open it by itself")?;
            let resumed_after = replugged.elapsed();

            let replugged_pts = rig.pty_pair(BUS)?.gateway_pts()?;
            let after = pts_descriptors(pid)?;
            ensure!(
                after.len() == before.len() && after.iter().all(|(_, t)| *t == replugged_pts),
                "after recovery the gateway should hold as many ptys as before ({}), all the \
                 new gateway side {}; it holds: {}",
                before.len(),
                replugged_pts.display(),
                describe_descriptors(&after)
            );

            let truth = rig.wait_for_truth(MIN_CROSSINGS).await?;
            let state = rig.wait_until_state_matches(&truth, STATE_SETTLE).await?;
            let bus = bus_stats(&state, BUS)?;
            ensure!(
                bus.link_errors > 0,
                "the lost port should be counted in the bus's link_errors: {bus:?}"
            );
            eprintln!(
                "unplug: the gateway had released the pty {:?} after the unplug and resumed {:?} \
                 after the replug; bus stats {bus:?}",
                released.unwrap_or_default(),
                resumed_after
            );
            Ok(())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_slave_does_not_hold_up_the_others() {
    // A fire exit from room 1 to the street whose counter is configured at unit 9 of the bus,
    // which the simulator does not serve: every request to it goes unanswered.
    let mut plan = plan("t-rtu-dead");
    let dead = "pc-fire-exit";
    // The TCP address is never used: the counter is put on the bus.
    plan.add_unsimulated_exit(dead, "room-1", common::hall::loopback(0));
    plan.put_on_bus(BUS, dead, 9);
    let live = bus_counters(&plan);
    rig("rtu-dead-slave", plan)
        .run(SCENARIO_LIMIT, async |rig| {
            let traffic = traffic(53);
            start(rig, traffic).await?;

            // Measure the poll counts the gateway publishes over 22 s of traffic, by the
            // timestamps of the two states they come from.
            sleep_until(rig.simulator()?.traffic_starts() + Duration::from_secs(3)).await;
            let first = rig
                .watcher()?
                .state()
                .context("a state has been published")?;
            tokio::time::sleep(Duration::from_secs(22)).await;
            rig.ensure_alive()?;
            let last = rig
                .watcher()?
                .state()
                .context("a state has been published")?;
            let window = state_time(&last)?.duration_since(state_time(&first)?);
            let window = Duration::try_from(window).context("states arrive in order")?;
            ensure!(
                window >= Duration::from_secs(20),
                "the measured window is only {window:?}: were states published?"
            );
            let polls = |id: &str| -> anyhow::Result<(u64, LineStats)> {
                let (a, b) = (device_stats(&first, id)?, device_stats(&last, id)?);
                Ok((b.polls - a.polls, b))
            };

            // A generous floor, not a speed benchmark: even if the dead slave cost its full
            // timeout on every one of a live slave's polls, each live slave would be polled
            // once per (poll interval + timeout). 0.7 of that leaves room for a loaded
            // machine. A stalled bus, or one that waits on the dead slave for longer than its
            // timeout, falls far below it.
            let per_cycle = Duration::from_millis(POLL_INTERVAL_MS + TIMEOUT_MS);
            let floor = (window.as_secs_f64() / per_cycle.as_secs_f64() * 0.7).floor() as u64;
            let mut report = Vec::new();
            let mut slowest = u64::MAX;
            for id in &live {
                let (n, _) = polls(id)?;
                slowest = slowest.min(n);
                report.push(format!("{id}: {n} polls"));
            }
            let (dead_polls, dead_stats) = polls(dead)?;
            report.push(format!("{dead}: {dead_polls} polls"));
            let report = report.join(", ");
            ensure!(
                slowest >= floor,
                "over {window:?} every live slave should have been polled at least {floor} times \
                 ({window:?} / ({POLL_INTERVAL_MS} ms interval + {TIMEOUT_MS} ms dead-slave \
                 timeout) x 0.7); got {report}"
            );
            // Degraded: retried once per degraded_retry, not on the normal schedule.
            let retries = window.as_millis() as u64 / DEGRADED_RETRY_MS + 2;
            ensure!(
                dead_polls <= retries && dead_polls * 4 <= slowest,
                "the dead slave should be degraded, polled about once per {DEGRADED_RETRY_MS} ms \
                 (at most {retries} times in {window:?}) and far less than the live ones; got \
                 {report}"
            );
            // It never answers at all: every poll a timeout, never an exception.
            ensure!(
                dead_stats.exceptions == 0 && dead_stats.timeouts == dead_stats.polls,
                "every poll of the dead slave should time out (no answer at all): {dead_stats:?}"
            );

            let truth = rig.wait_for_truth(MIN_CROSSINGS).await?;
            let state = rig.wait_until_state_matches(&truth, STATE_SETTLE).await?;
            let online = state_devices_online(&state);
            ensure!(
                online.get(dead).copied().flatten() == Some(false),
                "the dead slave should be offline in the retained state, got {:?}",
                online.get(dead)
            );
            eprintln!("dead slave: over {window:?}: {report}");
            Ok(())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_noise_is_counted_and_never_corrupts_counts() {
    rig("rtu-noise", plan("t-rtu-noise"))
        .run(SCENARIO_LIMIT, async |rig| {
            let rate = NOISE_BYTES_PER_SEC.to_string();
            start_processes(rig, traffic(54), &["--serial-noise-bytes-per-sec", &rate]).await?;
            // On a noisy line a poll fails now and then, so a counter may be offline at any
            // one moment; what matters is that each was read before the traffic starts.
            let counters = rig.plan.simulated_counter_ids();
            rig.wait_until_counters_have_been_online(&counters).await?;

            let truth = rig.wait_for_truth(MIN_CROSSINGS).await?;
            let state = rig.wait_until_state_matches(&truth, STATE_SETTLE).await?;
            rig.ensure_alive()?;
            ensure!(
                !rig.gateway()?.log_text().contains("panicked"),
                "the gateway panicked on a noisy line"
            );

            let bus = bus_stats(&state, BUS)?;
            let mut slaves = Vec::new();
            for id in bus_counters(&rig.plan) {
                slaves.push(format!("{id}: {:?}", device_stats(&state, &id)?));
            }
            let slaves = slaves.join("\n  ");
            eprintln!("noise: bus {bus:?}\n  {slaves}");
            ensure!(
                bus.line_errors() > 0,
                "{NOISE_BYTES_PER_SEC} bytes/s of noise on the line should show in the bus's \
                 error counts: {bus:?}"
            );
            // The driver's contract (devices/modbus_rtu.rs): noise fails the poll, "the port
            // stays open". A noisy line is not an unplugged one.
            ensure!(
                bus.link_errors == 0,
                "noise on the line was taken for a lost port: the bus shows {} link error(s), \
                 so the gateway closed and re-opened a port that never went away (and marked \
                 every slave on it offline each time); bus {bus:?}\n  {slaves}",
                bus.link_errors
            );
            Ok(())
        })
        .await;
}

/// Junk on the line, bytes per second on average, in bursts of up to 48 bytes. Only junk that
/// lands between a request and its answer (the simulated slaves take a few milliseconds to
/// answer) can spoil a transaction — a master may discard what arrived while it was idle — so
/// the rate is high enough that a run sees dozens of spoiled answers, and low enough that
/// every counter is read most of the time.
const NOISE_BYTES_PER_SEC: u32 = 1000;

/// The `ts` of a state message.
fn state_time(state: &Value) -> anyhow::Result<jiff::Timestamp> {
    let ts = state
        .get("ts")
        .and_then(Value::as_str)
        .with_context(|| format!("state has no ts: {state}"))?;
    ts.parse()
        .with_context(|| format!("state ts is not a timestamp: {ts:?}"))
}
