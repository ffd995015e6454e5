//! End to end, with real peers: mosquitto as the central broker, `hallgate simulate` serving
//! Modbus TCP people counters with ground truth, and `hallgate run` in between, all as
//! separate processes on loopback.
//!
//! Each scenario sends a few hundred simulated visitors through a lobby and five function
//! rooms, does something unkind to the gateway or its surroundings (kill -9, a broker outage,
//! dead counters), and then demands that what reached the broker is *exactly* the ground truth:
//! per-room occupancy, entries and exits in the retained `state`, and per-room entries and
//! exits summed over the `agg/1m` bins. Close is not good enough; one lost crossing fails.
//!
//! The gateway takes a counter's first reading as its baseline, so the simulator starts with a
//! warmup of unchanging counters and every scenario waits, through the retained `state`, until
//! the gateway has them all online before the traffic begins.
//!
//! Run with `bash scripts/test.sh` (it installs mosquitto) or `cargo test --test end_to_end`.
//! A failure prints expected against got and the last lines of every process log; the full
//! logs stay in the directory it names (`HALLGATE_TEST_KEEP=1` keeps it after a pass too).

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use common::bins::{bin_times, check_bins_are_contiguous, compare_bin_sums, describe_bins};
use common::dead_peers::{RefusingPort, SilentPeer};
use common::hall::HallPlan;
use common::process::Traffic;
use common::rig::Rig;
use common::truth::{compare_state, state_devices_online};
use common::watcher::Watcher;
use common::{instant_at_unix, next_minute_unix, sleep_until, unix_now, until_next_minute};

/// Function rooms off the lobby; with the lobby, six rooms and six counters.
const FUNCTION_ROOMS: usize = 5;

/// Fewer crossings than this and a scenario proves little; it fails rather than pass vacuously.
const MIN_CROSSINGS: u64 = 300;

/// How long the retained state may take to settle once the traffic has stopped.
const STATE_SETTLE: Duration = Duration::from_secs(30);

fn traffic(seed: u64) -> Traffic {
    Traffic {
        seed,
        warmup: Duration::from_secs(10),
        duration: Duration::from_secs(40),
        arrivals_per_min: 180.0,
        mean_dwell_secs: 6.0,
    }
}

fn rig(name: &str, plan: HallPlan) -> Rig {
    Rig::new(name, plan).expect("a temporary directory can be created")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_state_matches_ground_truth_exactly() {
    let plan = HallPlan::lobby_with_function_rooms("t-exact", FUNCTION_ROOMS);
    rig("exact", plan)
        .run(Duration::from_secs(180), async |rig| {
            rig.start_broker().await?;
            rig.start_simulator(traffic(11))?;
            rig.start_gateway()?;
            let counters = rig.plan.simulated_counter_ids();
            rig.wait_until_counters_online(&counters).await?;

            let truth = rig.wait_for_truth(MIN_CROSSINGS).await?;
            rig.wait_until_state_matches(&truth, STATE_SETTLE).await?;

            // The state is retained: a client that subscribes only now gets the same figures
            // at once, as a dashboard opened in the morning would.
            let port = rig.broker()?.port;
            let newcomer = Watcher::connect(port, &rig.plan.topic_base(), "newcomer-exact").await?;
            let deadline = Instant::now() + Duration::from_secs(5);
            let retained = loop {
                if let Some(state) = newcomer.state() {
                    break state;
                }
                ensure!(
                    Instant::now() < deadline,
                    "a client subscribing after the traffic got no retained state within 5 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            compare_state(&retained, &truth, &rig.plan.room_ids()).map_err(|table| {
                anyhow::anyhow!("the retained state a newcomer receives is not exact:\n{table}")
            })?;
            Ok(())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_killed_with_sigkill_mid_traffic_restarts_exact() {
    let plan = HallPlan::lobby_with_function_rooms("t-sigkill", FUNCTION_ROOMS);
    rig("sigkill", plan)
        .run(Duration::from_secs(180), async |rig| {
            rig.start_broker().await?;
            let traffic = traffic(22);
            rig.start_simulator(traffic)?;
            rig.start_gateway()?;
            let counters = rig.plan.simulated_counter_ids();
            rig.wait_until_counters_online(&counters).await?;
            rig.wait_for_status("online", Duration::from_secs(5))
                .await?;

            // Halfway through the traffic the gateway dies without any chance to clean up,
            // and stays down for a few seconds while people keep walking through the doors.
            let halfway = rig.simulator()?.traffic_starts() + traffic.duration / 2;
            sleep_until(halfway).await;
            rig.ensure_alive()?;
            rig.gateway()?.kill9()?;
            let killed = Instant::now();
            rig.wait_for_status("offline", Duration::from_secs(10))
                .await
                .context("after kill -9 the broker should publish the gateway's last will")?;
            sleep_until(killed + Duration::from_secs(3)).await;

            // Same config, same data dir: it must pick up where its last commit left off and
            // count the crossings that happened while it was down.
            rig.gateway()?.spawn()?;
            rig.wait_for_status("online", Duration::from_secs(15))
                .await
                .context("the restarted gateway should announce itself online")?;

            let truth = rig.wait_for_truth(MIN_CROSSINGS).await?;
            rig.wait_until_state_matches(&truth, STATE_SETTLE).await?;
            Ok(())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_loses_no_minute_aggregate() {
    let plan = HallPlan::lobby_with_function_rooms("t-outage", FUNCTION_ROOMS);
    rig("outage", plan)
        .run(Duration::from_secs(300), async |rig| {
            // The watcher listens on an observer broker that the central one bridges to, so it
            // sees every publish the gateway makes right after the restart (see broker.rs).
            rig.start_broker_with_observer().await?;

            // Line the run up with the wall clock so that a minute boundary falls in the
            // middle of the outage: the bin that closes while the broker is down is the one
            // most at risk.
            let traffic = traffic(33);
            let (earliest, latest) = (
                traffic.warmup + secs(10),
                traffic.warmup + traffic.duration - secs(11),
            );
            while !(earliest..=latest).contains(&until_next_minute()) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let boundary_unix = next_minute_unix();
            rig.start_simulator(traffic)?;
            rig.start_gateway()?;
            let counters = rig.plan.simulated_counter_ids();
            rig.wait_until_counters_online(&counters).await?;

            // ~15 s without a broker, around the boundary, in the middle of the traffic. The
            // broker comes back empty: no sessions, no retained messages, no queued publishes.
            let outage_starts = instant_at_unix(boundary_unix) - secs(7);
            sleep_until(outage_starts).await;
            rig.ensure_alive()?;
            rig.broker()?.stop();
            sleep_until(outage_starts + secs(15)).await;
            rig.broker()?.restart().await?;

            let truth = rig.wait_for_truth(MIN_CROSSINGS).await?;
            let traffic_stopped_unix = unix_now();
            rig.wait_until_state_matches(&truth, STATE_SETTLE).await?;

            // Every crossing sits in a closed bin once the minute of the last poll has ended;
            // then the bins, each counted once by msg_id, must add up to the truth.
            let last_poll = traffic_stopped_unix + secs(2);
            let last_bin_closes = last_poll + secs(60 - last_poll.as_secs() % 60);
            let deadline = instant_at_unix(last_bin_closes) + secs(30);
            let rooms = rig.plan.room_ids();
            let bins = loop {
                rig.ensure_alive()?;
                let bins = rig.watcher()?.aggregates();
                let verdict = compare_bin_sums(&bins, &truth, &rooms)?;
                match verdict {
                    Ok(()) => break bins,
                    Err(table) if Instant::now() >= deadline => bail!(
                        "30 s after the last bin should have closed, the minute aggregates \
                         (each msg_id counted once) still do not add up to the ground truth: a bin \
                         was lost or counted wrong\n{table}\nbins received:\n{}",
                        describe_bins(&bins)
                    ),
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            };

            let conflicts = rig.watcher()?.seen().conflicts;
            ensure!(
                conflicts.is_empty(),
                "a re-sent bin must repeat its msg_id with the same content: {conflicts:#?}"
            );
            check_bins_are_contiguous(&bins)?;
            let boundary = jiff::Timestamp::from_second(boundary_unix.as_secs() as i64)?;
            ensure!(
                bins.values()
                    .filter_map(|b| bin_times(b).ok())
                    .any(|(_, end)| end == boundary),
                "no bin ends at {boundary}, the minute that closed during the outage:\n{}",
                describe_bins(&bins)
            );
            Ok(())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_counter_is_marked_offline_and_others_keep_publishing() {
    // Two fire exits the simulator knows nothing about: one counter refuses connections, the
    // other accepts them and never answers, so every request to it times out.
    let refusing = RefusingPort::bind().expect("a loopback port can be bound");
    let silent = SilentPeer::listen()
        .await
        .expect("a loopback port can be listened on");
    let mut plan = HallPlan::lobby_with_function_rooms("t-dead", FUNCTION_ROOMS);
    plan.add_unsimulated_exit("pc-fire-refused", "room-1", refusing.address);
    plan.add_unsimulated_exit("pc-fire-silent", "room-2", silent.address);
    rig("dead-counter", plan)
        .run(Duration::from_secs(180), async |rig| {
            rig.start_broker().await?;
            rig.start_simulator(traffic(44))?;
            rig.start_gateway()?;
            let live = rig.plan.simulated_counter_ids();
            let dead = rig.plan.dead_counter_ids();
            rig.wait_until_counters_online(&live).await?;

            let truth = rig.wait_for_truth(MIN_CROSSINGS).await?;
            let state = rig.wait_until_state_matches(&truth, STATE_SETTLE).await?;

            let online = state_devices_online(&state);
            let wrong: Vec<String> = live
                .iter()
                .map(|id| (id, Some(true)))
                .chain(dead.iter().map(|id| (id, Some(false))))
                .filter(|(id, want)| online.get(*id).copied().flatten() != *want)
                .map(|(id, want)| {
                    format!(
                        "{id}: want online = {want:?}, got {}",
                        online
                            .get(id)
                            .map_or("(not in state.devices)".to_string(), |g| format!("{g:?}"))
                    )
                })
                .collect();
            ensure!(
                wrong.is_empty(),
                "devices in the retained state are wrong:\n  {}",
                wrong.join("\n  ")
            );

            for id in &dead {
                rig.wait_for_gateway_log(id, Duration::from_secs(10))
                    .await
                    .with_context(|| {
                        format!("a dead counter's trouble should be logged by its id ({id})")
                    })?;
            }
            Ok(())
        })
        .await;
    drop((refusing, silent));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_stops_cleanly_on_sigterm_and_says_it_is_offline() {
    // No simulator: the counters are unreachable, which must not hold up a shutdown.
    let plan = HallPlan::lobby_with_function_rooms("t-sigterm", 1);
    rig("sigterm", plan)
        .run(Duration::from_secs(60), async |rig| {
            rig.start_broker().await?;
            rig.start_gateway()?;
            rig.wait_for_status("online", Duration::from_secs(20))
                .await?;

            rig.gateway()?.sigterm()?;
            let limit = Duration::from_secs(5);
            let status =
                rig.gateway()?.wait_exit(limit).await.with_context(|| {
                    format!("the gateway did not exit within {limit:?} of SIGTERM")
                })?;
            ensure!(
                status.code() == Some(0),
                "after SIGTERM the gateway exited with {status}, want 0"
            );

            // A clean disconnect does not fire the last will, so the gateway has to say
            // "offline" itself, or the centre would show a stopped hall as online for good.
            rig.wait_for_status("offline", Duration::from_secs(5))
                .await
                .context("after a clean shutdown the retained status should say offline")?;
            Ok(())
        })
        .await;
}

// -- Minute aggregates ----------------------------------------------------------------------

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
