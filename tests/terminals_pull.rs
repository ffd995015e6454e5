//! Pulled terminals, black box: `hallgate simulate-terminals` serves a Hikvision terminal's
//! event log (`AcsEvent`), a Hikvision alert stream and a Dahua attach stream at loopback
//! addresses, each behind its own Digest login; `hallgate run` reads them. Halfway through,
//! the gateway is killed with SIGKILL (a power cut) and started again on the same data dir.
//!
//! - After the restart the gateway reads the gap from the terminals' own logs: every record
//!   the devices handed out is counted exactly once (the room figures equal the simulator's
//!   ground truth), whether it was committed before the kill or re-read after it.
//! - No failed login, and never two connections to one device at a time (the simulator
//!   counts both).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::Value;

use common::HALLGATE;
use common::hall::HallPlan;
use common::rig::Rig;

/// (id, profile, room, transport): one of each pulled kind, a room each.
const TERMINALS: [(&str, &str, &str, &str); 3] = [
    ("T-LOG", "hikvision-isapi", "lobby", "hikvision_pull"),
    ("T-ALERT", "hikvision-isapi", "room-1", "hikvision_stream"),
    ("T-DAHUA", "dahua-access", "room-2", "dahua_stream"),
];

fn terminal_sections(dir: &Path) -> anyhow::Result<String> {
    let mut text = String::new();
    for (i, (id, profile, room, transport)) in TERMINALS.iter().enumerate() {
        let file = dir.join(format!("t{i}.pass"));
        common::write_secret(&file, &format!("pw-{i}-{id}\n"))?;
        text.push_str(&format!(
            "\n[[terminals]]\nid = \"{id}\"\nprofile = \"{profile}\"\nroom = \"{room}\"\n\
             transport = \"{transport}\"\naddress = \"127.0.0.1:{}\"\nusername = \"admin\"\n\
             password_file = \"{}\"\n",
            common::free_port(),
            file.display()
        ));
        if *transport == "hikvision_pull" {
            text.push_str("poll_interval_ms = 500\n");
        }
    }
    Ok(text)
}

fn num(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// The truth file's lines, once its final line is written.
fn final_truth(path: &Path) -> Option<Vec<Value>> {
    let text = std::fs::read_to_string(path).ok()?;
    let lines: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    lines
        .iter()
        .any(|l| l.get("final") == Some(&Value::Bool(true)))
        .then_some(lines)
}

const FIGURES: [&str; 2] = ["passages", "members"];

fn compare(state: &Value, totals: &Value) -> Result<(), String> {
    let mut table = String::new();
    for room in state["rooms"].as_array().cloned().unwrap_or_default() {
        let id = room["id"].as_str().unwrap_or("?");
        for f in FIGURES {
            let (w, g) = (
                num(&totals["rooms"][id], f),
                num(&room["passages_today"], f),
            );
            if w != g {
                table.push_str(&format!("{id:<8} {f:<10} want {w:>4} got {g:>4}\n"));
            }
        }
    }
    if table.is_empty() { Ok(()) } else { Err(table) }
}

struct Sim(Child);

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_mid_run_reads_the_gap_from_the_pulled_terminals_and_counts_each_once() {
    let mut plan = HallPlan::lobby_with_function_rooms("t-pull", 2);
    let secrets = tempfile::tempdir().expect("tempdir");
    plan.extra_sections = terminal_sections(secrets.path()).expect("terminal sections");
    let rig = Rig::new("terminals-pull", plan).expect("test directory");
    rig.run(Duration::from_secs(240), async |rig| {
        rig.start_broker().await?;
        let config = rig.write_gateway_config()?;
        rig.start_gateway()?;
        rig.wait_for_status("online", Duration::from_secs(20))
            .await?;
        let truth = rig.dir().join("pull-truth.jsonl");
        let sim_log = std::fs::File::create(rig.dir().join("simulate-terminals.log"))?;
        let mut sim = Sim(Command::new(HALLGATE)
            .args(["simulate-terminals", "--config"])
            .arg(&config)
            .arg("--truth")
            .arg(&truth)
            .args([
                "--seed",
                "17",
                "--passages",
                "90",
                "--rate-per-sec",
                "6",
                "--resend-share",
                "0",
                "--bad-share",
                "0",
                "--drain-secs",
                "30",
                "--linger-secs",
                "120",
            ])
            .stdout(Stdio::null())
            .stderr(sim_log)
            .spawn()
            .context("cannot run hallgate simulate-terminals")?);

        // Halfway through the passages: a power cut, three seconds dark, then the same
        // config on the same data dir.
        tokio::time::sleep(Duration::from_secs(7)).await;
        rig.ensure_alive()?;
        rig.gateway()?.kill9()?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        rig.gateway()?.spawn()?;
        rig.wait_for_status("online", Duration::from_secs(20))
            .await?;
        // The event log is read on from the last serial the outbox kept, not from the day's
        // start (which dedup alone would also survive, reading the whole day again).
        rig.wait_for_gateway_log("resume_after_serial=Some(", Duration::from_secs(20))
            .await
            .context("the restarted gateway should resume the log after its kept serial")?;

        let deadline = Instant::now() + Duration::from_secs(90);
        let lines = loop {
            if let Some(lines) = final_truth(&truth) {
                break lines;
            }
            if let Some(status) = sim.0.try_wait()? {
                bail!("simulate-terminals ended early: {status}");
            }
            ensure!(
                Instant::now() < deadline,
                "the simulator wrote no final line"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        let last = lines
            .iter()
            .rev()
            .find(|l| l.get("final") == Some(&Value::Bool(true)))
            .context("final line")?;
        let totals = &last["totals"];
        ensure!(
            num(&totals["hall"], "passages") >= 60,
            "too few passages: {totals}"
        );
        ensure!(
            last["complete"] == Value::Bool(true),
            "the gateway did not take every record: {last}"
        );
        for (id, report) in last["terminals"].as_object().cloned().unwrap_or_default() {
            ensure!(num(&report, "failed_logins") == 0, "{id}: {report}");
            ensure!(num(&report, "max_connections") <= 1, "{id}: {report}");
        }

        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            rig.ensure_alive()?;
            let state = rig.watcher()?.state();
            match state.as_ref().map(|s| compare(s, totals)) {
                Some(Ok(())) => break,
                Some(Err(table)) if Instant::now() >= deadline => {
                    bail!("the figures do not match the devices' logs:\n{table}")
                }
                _ => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
        drop(sim);
        Ok(())
    })
    .await;
}
