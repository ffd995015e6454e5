//! What the centre can trust across clock steps and restarts, with the real gateway, a real
//! mosquitto and simulated Modbus counters:
//!
//! - the gateway's wall clock stepped back and then forward (libfaketime steps this one
//!   process's clock, not the machine's; the monotonic clock runs on): no message id comes
//!   twice with other contents, both steps are logged and on the status page, and the minutes
//!   the forward step jumped over are reported on `gaps` as skipped by a clock step;
//! - an alert that ends while the gateway is stopped is cleared at the centre after the
//!   restart (naming its episode), and one that still holds continues without a new raise.
//!
//! Run with `bash scripts/test.sh` (it installs mosquitto and faketime) or
//! `cargo test --test clocks_and_restarts`.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use serde_json::Value;

use common::hall::HallPlan;
use common::process::{Process, Traffic};
use common::rig::Rig;
use common::{HALLGATE, http};

/// libfaketime's multi-threaded build, where Debian's `faketime` package puts it.
fn libfaketime() -> Option<PathBuf> {
    [
        "x86_64-linux-gnu",
        "aarch64-linux-gnu",
        "arm-linux-gnueabihf",
    ]
    .iter()
    .map(|arch| PathBuf::from(format!("/usr/lib/{arch}/faketime/libfaketimeMT.so.1")))
    .find(|p| p.exists())
}

/// libfaketime, or why the test cannot run: a skip on a developer machine, a failure under
/// CI (where `scripts/test.sh` installs it).
fn faketime_or_skip() -> Option<PathBuf> {
    let found = libfaketime();
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "libfaketime is missing under CI; scripts/test.sh installs the faketime package"
        );
        eprintln!("SKIPPED: install the faketime package (scripts/test.sh does) to step a clock");
    }
    found
}

/// Sets the gateway's clock offset from the real one (libfaketime re-reads the file at every
/// clock call).
fn set_offset(file: &Path, offset: &str) -> anyhow::Result<()> {
    std::fs::write(file, format!("{offset}\n")).context("cannot write the faketime file")
}

/// Every payload the centre received, by `msg_id`; fails on an id that came twice with other
/// contents.
fn ids_by_content(raw: &[(String, Vec<u8>)]) -> anyhow::Result<BTreeMap<String, Value>> {
    let mut seen: BTreeMap<String, Value> = BTreeMap::new();
    for (topic, bytes) in raw {
        let Ok(payload) = serde_json::from_slice::<Value>(bytes) else {
            continue;
        };
        let Some(id) = payload["msg_id"].as_str().map(str::to_string) else {
            continue;
        };
        if let Some(before) = seen.get(&id) {
            ensure!(
                before == &payload,
                "msg_id {id} came twice with other contents (topic {topic}):\n{before}\n{payload}"
            );
        }
        seen.insert(id, payload);
    }
    Ok(seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_stepped_back_and_forward_repeats_no_id_and_is_logged_shown_and_reported() {
    let Some(faketime) = faketime_or_skip() else {
        return;
    };
    let plan = HallPlan::lobby_with_function_rooms("t-clock-step", 1);
    Rig::new("clock-step", plan)
        .expect("a test directory")
        .run(Duration::from_secs(240), async |rig| {
            rig.start_broker().await?;
            rig.start_simulator(Traffic {
                seed: 11,
                warmup: Duration::from_secs(5),
                duration: Duration::from_secs(60),
                arrivals_per_min: 240.0,
                mean_dwell_secs: 5.0,
            })?;
            let offset = rig.dir().join("faketime");
            set_offset(&offset, "+0")?;
            let config = rig.write_gateway_config()?;
            let port = rig.broker()?.port;
            let envs: Vec<(OsString, OsString)> = vec![
                ("LD_PRELOAD".into(), faketime.into()),
                ("FAKETIME_TIMESTAMP_FILE".into(), offset.clone().into()),
                ("FAKETIME_NO_CACHE".into(), "1".into()),
                ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
            ];
            rig.gateway = Some(Process::start_with_env(
                "gateway",
                rig.dir(),
                HALLGATE,
                vec![
                    "run".into(),
                    "--config".into(),
                    config.into(),
                    "--uplink".into(),
                    format!("mqtt://127.0.0.1:{port}").into(),
                    "--data-dir".into(),
                    rig.data_dir.clone().into(),
                ],
                envs,
            )?);
            let counters = rig.plan.simulated_counter_ids();
            rig.wait_until_counters_online(&counters).await?;
            tokio::time::sleep(Duration::from_secs(8)).await;

            // Five minutes back: every state from here on is stamped with times already used.
            set_offset(&offset, "-300")?;
            rig.wait_for_gateway_log("the system clock stepped back", Duration::from_secs(20))
                .await?;
            tokio::time::sleep(Duration::from_secs(8)).await;
            // Then ten minutes ahead of the real time: fifteen minutes forward in one step.
            set_offset(&offset, "+600")?;
            rig.wait_for_gateway_log(
                "the system clock stepped forward",
                Duration::from_secs(20),
            )
            .await?;
            let gap = wait_for_gap(rig, Duration::from_secs(30)).await?;
            ensure!(
                gap["cause"] == "clock_step",
                "the skipped minutes are put down to the clock step: {gap}"
            );
            let minutes = gap["minutes"].as_i64().unwrap_or_default();
            ensure!(
                (8..=11).contains(&minutes),
                "a step to 10 minutes past the latest time seen skips about 9 whole minutes; the gap says {gap}"
            );
            let page = http::get(rig.plan.status_address(), "/", &[])?;
            ensure!(
                page.body.contains("系统时钟向后跳了") && page.body.contains("系统时钟向前跳了"),
                "the status page shows both steps; it says:\n{}",
                common::tail(&page.body, 40)
            );
            tokio::time::sleep(Duration::from_secs(5)).await;
            rig.ensure_alive()?;

            let seen = rig.watcher()?.seen();
            let ids = ids_by_content(&seen.raw)?;
            let states = ids.keys().filter(|id| id.contains(":state:")).count();
            ensure!(
                states >= 10,
                "states kept coming through the steps; {states} distinct ones arrived"
            );
            ensure!(
                seen.conflicts.is_empty(),
                "no aggregate was re-sent with other contents: {:?}",
                seen.conflicts
            );
            Ok(())
        })
        .await;
}

/// The first `gap` message the centre received.
async fn wait_for_gap(rig: &mut Rig, limit: Duration) -> anyhow::Result<Value> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let seen = rig.watcher()?.seen();
        let gap = seen
            .raw
            .iter()
            .filter(|(topic, _)| topic.ends_with("/gaps"))
            .find_map(|(_, bytes)| serde_json::from_slice::<Value>(bytes).ok());
        if let Some(gap) = gap {
            return Ok(gap);
        }
        rig.ensure_alive()?;
        if std::time::Instant::now() >= deadline {
            bail!("no message on `gaps` within {limit:?} of the forward step");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every alert message the centre received, in order.
fn alerts(rig: &Rig) -> anyhow::Result<Vec<Value>> {
    Ok(rig
        .watcher()?
        .seen()
        .raw
        .iter()
        .filter(|(topic, _)| topic.ends_with("/alerts"))
        .filter_map(|(_, bytes)| serde_json::from_slice::<Value>(bytes).ok())
        .collect())
}

/// The alerts about `subject` of kind `alert`, as (state, raised_at).
fn episodes(all: &[Value], alert: &str, subject: &str) -> Vec<(String, String)> {
    all.iter()
        .filter(|a| a["alert"] == alert && a["subject"] == subject)
        .map(|a| {
            (
                a["state"].as_str().unwrap_or_default().to_string(),
                a["raised_at"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_that_ended_while_the_gateway_was_stopped_is_cleared_after_the_restart() {
    let mut plan = HallPlan::lobby_with_function_rooms("t-alert-restart", 1);
    // A counter that never answers: its alert still holds after the restart.
    let dead = common::dead_peers::RefusingPort::bind().expect("a port nobody answers on");
    plan.add_unsimulated_exit("pc-dead", "room-1", dead.address);
    Rig::new("alert-restart", plan)
        .expect("a test directory")
        .run(Duration::from_secs(240), async |rig| {
            rig.start_broker().await?;
            // No simulator yet: every counter is offline.
            rig.start_gateway()?;
            let counters = rig.plan.simulated_counter_ids();
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                let all = alerts(rig)?;
                let raised = |id: &str| {
                    episodes(&all, "device_offline", id)
                        .iter()
                        .any(|(state, _)| state == "raised")
                };
                if counters.iter().all(|id| raised(id)) && raised("pc-dead") {
                    break;
                }
                rig.ensure_alive()?;
                ensure!(
                    std::time::Instant::now() < deadline,
                    "the offline counters were not all raised within 60 s: {all:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            rig.gateway()?.sigterm()?;
            rig.gateway()?
                .wait_exit(Duration::from_secs(20))
                .await
                .context("the gateway did not stop within 20 s")?;

            // While it is stopped, the simulated counters come up.
            rig.start_simulator(Traffic {
                seed: 3,
                warmup: Duration::from_secs(2),
                duration: Duration::from_secs(30),
                arrivals_per_min: 60.0,
                mean_dwell_secs: 5.0,
            })?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            rig.gateway()?.spawn()?;
            rig.wait_until_counters_online(&counters).await?;
            // Give the rules a few ticks after every device has been tried.
            tokio::time::sleep(Duration::from_secs(5)).await;
            rig.ensure_alive()?;

            let all = alerts(rig)?;
            for id in &counters {
                let e = episodes(&all, "device_offline", id);
                ensure!(
                    e.len() == 2 && e[0].0 == "raised" && e[1].0 == "cleared" && e[0].1 == e[1].1,
                    "{id} came back while the gateway was stopped: one raise, then its clear naming the same episode after the restart; the centre got {e:?}"
                );
            }
            let e = episodes(&all, "device_offline", "pc-dead");
            ensure!(
                e.len() == 1 && e[0].0 == "raised",
                "pc-dead is still offline: its episode continues, not raised again; the centre got {e:?}"
            );
            let clock = episodes(&all, "clock_unsynchronised", "hall");
            ensure!(
                clock.iter().filter(|(state, _)| state == "raised").count() <= 1,
                "a restart does not open another clock episode; the centre got {clock:?}"
            );
            Ok(())
        })
        .await;
}
