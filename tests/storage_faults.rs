//! Storage faults, black box: a real mosquitto, `hallgate simulate` counters and `hallgate
//! run`, with the data directory taken away from under the gateway.
//!
//! - The disk holding the data fills up, then space is freed: while full the status page says
//!   so, and once there is room again the outbox's bound and its reserve file are back (not
//!   only after a restart); the centre hears a `storage_fault` alert raised and then cleared.
//!   Needs root for a small tmpfs; prints SKIPPED otherwise.
//! - The disk is full to the last byte, reserve included: commits fail, `/healthz` answers
//!   503 with the page's sentence until space is freed. Root only, like the above.
//! - The data directory is deleted while the gateway runs: the gateway makes it again with
//!   the day's figures, and after a restart the centre's `entries_today` are what they were.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::Value;

use common::contract::validate_received;
use common::disk::{fill_disk, small_disk};
use common::hall::HallPlan;
use common::http;
use common::process::Traffic;
use common::rig::Rig;
use common::truth::state_rooms;

/// The configured outbox bound (the gateway's default).
const CONFIGURED_BOUND: u64 = 64 * 1024 * 1024;
/// The reserve file beside the database, and its size.
const RESERVE_SUFFIX: &str = ".reserve";
const RESERVE_BYTES: u64 = 512 * 1024;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The status API's document, or `None` while it does not answer.
fn api_state(rig: &Rig) -> Option<Value> {
    let answer = http::get(rig.plan.status_address(), "/api/v1/state", &[]).ok()?;
    (answer.status == 200)
        .then(|| serde_json::from_str(&answer.body).ok())
        .flatten()
}

/// Waits until the status API's document passes `check`; returns it.
async fn wait_for_api(
    rig: &mut Rig,
    what: &str,
    limit: Duration,
    check: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + limit;
    loop {
        rig.ensure_alive()?;
        let state = api_state(rig);
        if let Some(state) = state.as_ref().filter(|s| check(s)) {
            return Ok(state.clone());
        }
        if Instant::now() >= deadline {
            bail!("the status API did not show {what} within {limit:?}; last seen: {state:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The `storage_fault` alerts the centre received, as (state, detail), in arrival order.
fn storage_alerts(rig: &Rig) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (topic, payload) in rig.watcher()?.seen().raw {
        if !topic.ends_with("/alerts") {
            continue;
        }
        let alert: Value = serde_json::from_slice(&payload)?;
        if alert.get("alert").and_then(Value::as_str) == Some("storage_fault") {
            let field = |k: &str| {
                alert
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            out.push((field("state"), field("detail")));
        }
    }
    Ok(out)
}

fn bound(api: &Value) -> u64 {
    api.pointer("/link/outbox_max_bytes")
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_alerted_and_shown_and_when_space_is_freed_the_bound_and_reserve_come_back()
{
    let plan = HallPlan::lobby_with_function_rooms("t-full", 2);
    let mut rig = Rig::new("full-then-freed", plan).expect("test directory");
    let Some((small, _mounted)) = small_disk(rig.dir()) else {
        return;
    };
    rig.data_dir = small.join("data");
    std::fs::create_dir(&rig.data_dir).expect("the data directory");
    let reserve = rig.data_dir.join(format!("hallgate.db{RESERVE_SUFFIX}"));
    rig.run(secs(420), async |rig| {
        rig.start_broker_with_observer().await?;
        rig.start_simulator(Traffic {
            seed: 71,
            warmup: secs(10),
            duration: secs(300),
            arrivals_per_min: 90.0,
            mean_dwell_secs: 8.0,
        })?;
        rig.start_gateway()?;
        let counters = rig.plan.simulated_counter_ids();
        rig.wait_until_counters_online(&counters).await?;
        wait_for_api(rig, "the configured bound", secs(30), |s| {
            bound(s) == CONFIGURED_BOUND
        })
        .await?;
        ensure!(
            std::fs::metadata(&reserve).is_ok_and(|m| m.len() == RESERVE_BYTES),
            "the reserve file is there at start"
        );

        // No broker while the disk fills: the backlog can only grow, so the outbox must
        // write and meets the full disk.
        rig.broker()?.stop();
        let filled = fill_disk(&small)?;
        eprintln!("filled the last {filled} bytes of the 4 MiB disk");
        rig.wait_for_gateway_log("the disk holding the outbox is full", secs(150))
            .await?;

        // While full: the page says so, in its one sentence.
        let full = wait_for_api(rig, "the storage fault", secs(30), |s| {
            s.get("storage_fault").is_some()
        })
        .await?;
        eprintln!("while full: storage_fault = {}", full["storage_fault"]);
        ensure!(bound(&full) < CONFIGURED_BOUND, "the bound is lowered");
        let page = http::get(rig.plan.status_address(), "/", &[])?;
        ensure!(
            page.body.contains("存储空间已满 (disk full)"),
            "the status page does not say the disk is full:\n{}",
            page.body
        );

        // Space freed: the bound and the reserve come back, without a restart.
        std::fs::remove_file(small.join("filler"))?;
        let freed = wait_for_api(rig, "the bound restored", secs(60), |s| {
            bound(s) == CONFIGURED_BOUND && s.get("storage_fault").is_none()
        })
        .await?;
        ensure!(
            !freed["link"]["disk_full"].as_bool().unwrap_or(true),
            "disk_full is over: {}",
            freed["link"]
        );
        ensure!(
            std::fs::metadata(&reserve).is_ok_and(|m| m.len() == RESERVE_BYTES),
            "the reserve file is written again"
        );
        let page = http::get(rig.plan.status_address(), "/", &[])?;
        ensure!(
            !page.body.contains("存储空间已满 (disk full)") || page.body.contains("存储已恢复"),
            "the page no longer says the disk is full"
        );

        // The centre hears of it once the link is back: raised, then cleared.
        rig.broker()?.restart().await?;
        let deadline = Instant::now() + secs(60);
        loop {
            rig.ensure_alive()?;
            let alerts = storage_alerts(rig)?;
            let states: Vec<&str> = alerts.iter().map(|(s, _)| s.as_str()).collect();
            if states == ["raised", "cleared"] {
                ensure!(
                    alerts[0].1.starts_with("存储空间已满"),
                    "the raise names the full disk, Chinese first: {}",
                    alerts[0].1
                );
                break;
            }
            if Instant::now() >= deadline {
                bail!("the centre did not get one storage_fault raised and cleared: {alerts:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The new alert keeps to the contract (docs/schema/alert.schema.json), as does the
        // rest of what the centre received.
        let validation = validate_received(rig.dir(), "full-then-freed-uplink", rig.watcher()?)?;
        validation.ensure_passed("what the centre received around the full disk")?;
        rig.ensure_alive()?;
        Ok(())
    })
    .await;
}

/// Waits until `/healthz` answers `status`; returns the body.
async fn wait_for_healthz(rig: &mut Rig, status: u16, limit: Duration) -> anyhow::Result<String> {
    let deadline = Instant::now() + limit;
    loop {
        rig.ensure_alive()?;
        let answer = http::get(rig.plan.status_address(), "/healthz", &[]).ok();
        if let Some(answer) = answer.as_ref().filter(|a| a.status == status) {
            return Ok(answer.body.clone());
        }
        if Instant::now() >= deadline {
            bail!(
                "/healthz did not answer {status} within {limit:?}; last: {:?}",
                answer.map(|a| (a.status, a.body))
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_failing_on_a_disk_without_a_byte_left_fail_healthz_until_space_is_freed() {
    let plan = HallPlan::lobby_with_function_rooms("t-nobyte", 2);
    let mut rig = Rig::new("no-byte-left", plan).expect("test directory");
    let Some((small, _mounted)) = small_disk(rig.dir()) else {
        return;
    };
    rig.data_dir = small.join("data");
    std::fs::create_dir(&rig.data_dir).expect("the data directory");
    rig.run(secs(420), async |rig| {
        rig.start_broker().await?;
        rig.start_simulator(Traffic {
            seed: 73,
            warmup: secs(10),
            duration: secs(300),
            arrivals_per_min: 90.0,
            mean_dwell_secs: 8.0,
        })?;
        rig.start_gateway()?;
        let counters = rig.plan.simulated_counter_ids();
        rig.wait_until_counters_online(&counters).await?;
        wait_for_healthz(rig, 200, secs(30)).await?;

        // A backlog that grows, a full disk, and then the reserve's room taken too: nothing
        // can be written any more.
        rig.broker()?.stop();
        fill_disk(&small)?;
        rig.wait_for_gateway_log("the disk holding the outbox is full", secs(150))
            .await?;
        let mut more = std::fs::File::create(small.join("filler-2"))?;
        {
            use std::io::Write;
            let chunk = vec![0xffu8; 4096];
            while more.write(&chunk).is_ok_and(|n| n > 0) {}
        }
        let body = wait_for_healthz(rig, 503, secs(180)).await?;
        ensure!(
            body.starts_with("数据无法保存 (storage failing)"),
            "/healthz names the fault, Chinese first: {body}"
        );
        let page = http::get(rig.plan.status_address(), "/", &[])?;
        ensure!(
            page.body.contains("数据无法保存 (storage failing)"),
            "the status page does not say nothing can be stored:\n{}",
            page.body
        );

        // Room again: storing resumes, /healthz recovers, the bound comes back.
        drop(more);
        std::fs::remove_file(small.join("filler-2"))?;
        std::fs::remove_file(small.join("filler"))?;
        wait_for_healthz(rig, 200, secs(60)).await?;
        wait_for_api(rig, "storage back to normal", secs(60), |s| {
            bound(s) == CONFIGURED_BOUND && s.get("storage_fault").is_none()
        })
        .await?;
        rig.ensure_alive()?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_deleted_while_running_is_made_again_and_no_day_totals_are_lost() {
    let plan = HallPlan::lobby_with_function_rooms("t-deleted", 2);
    let rig = Rig::new("data-dir-deleted", plan).expect("test directory");
    rig.run(secs(300), async |rig| {
        rig.start_broker().await?;
        rig.start_simulator(Traffic {
            seed: 72,
            warmup: secs(10),
            duration: secs(40),
            arrivals_per_min: 90.0,
            mean_dwell_secs: 8.0,
        })?;
        rig.start_gateway()?;
        let counters = rig.plan.simulated_counter_ids();
        rig.wait_until_counters_online(&counters).await?;

        // Some of the day is counted and committed; then the directory goes, with traffic
        // still coming.
        let deadline = Instant::now() + secs(60);
        loop {
            rig.ensure_alive()?;
            let lobby = rig
                .watcher()?
                .state()
                .and_then(|s| state_rooms(&s).ok())
                .and_then(|r| r.get("lobby").map(|f| f.entries_today))
                .unwrap_or(0);
            if lobby >= 10 {
                break;
            }
            if Instant::now() >= deadline {
                bail!("the lobby did not count 10 entries within a minute (saw {lobby})");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let data_dir = rig.data_dir.clone();
        std::fs::remove_dir_all(&data_dir).context("deleting the data directory")?;
        eprintln!("deleted {}", data_dir.display());

        // Made again while the gateway runs. Not a failure yet if not: what the restart
        // loses is what this test is about, so it goes on to measure that first.
        let db = data_dir.join("hallgate.db");
        let deadline = Instant::now() + secs(30);
        let made_again = loop {
            rig.ensure_alive()?;
            if db.exists() {
                break true;
            }
            if Instant::now() >= deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };

        let truth = rig.wait_for_truth(20).await?;
        let before = rig.wait_until_state_matches(&truth, secs(60)).await?;
        let before = state_rooms(&before)?;
        eprintln!("before the restart: {before:?}");

        // The page's list says what happened (it lives in memory: read it before the restart).
        let announced = api_state(rig).is_some_and(|s| {
            s["alerts"].as_array().is_some_and(|alerts| {
                alerts
                    .iter()
                    .any(|a| a["kind"].as_str() == Some("data_dir_recreated"))
            })
        });

        let gateway = rig.gateway()?;
        gateway.sigterm()?;
        gateway
            .wait_exit(secs(20))
            .await
            .context("the gateway did not stop")?;
        let restarted_at = jiff::Timestamp::now();
        rig.gateway()?.spawn()?;

        // The first state of the new run (stamped after it started).
        let deadline = Instant::now() + secs(60);
        let after = loop {
            rig.ensure_alive()?;
            let state = rig.watcher()?.state();
            let stamped = |s: &Value| {
                s.get("ts")
                    .and_then(Value::as_str)
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            };
            if let Some(state) = state
                && stamped(&state).is_some_and(|t| t >= restarted_at)
            {
                break state_rooms(&state)?;
            }
            if Instant::now() >= deadline {
                bail!("the restarted gateway published no state within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        eprintln!("after the restart: {after:?}");
        for (room, figures) in &before {
            let got = after.get(room).map(|f| f.entries_today);
            ensure!(
                got == Some(figures.entries_today),
                "{room}: entries_today was {} before the restart and is {got:?} after",
                figures.entries_today
            );
        }
        ensure!(
            made_again,
            "the gateway did not make its deleted data directory again while it ran"
        );
        ensure!(
            announced,
            "the status page's alerts did not say the data directory was made again"
        );
        rig.ensure_alive()?;
        Ok(())
    })
    .await;
}
