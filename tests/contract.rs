//! The uplink contract v1, black box: every payload the gateway publishes validates against
//! its JSON Schema in `docs/schema/`.
//!
//! A real mosquitto is the central broker, with a recorder subscribed to `#` on it from before
//! the first gateway connects. `hallgate run` counts simulated visitors (`hallgate simulate`),
//! has a counter whose port refuses every connection (`device_offline`), and receives fever
//! passages from `hallgate simulate-terminals` at a room's terminal (`fever`); it runs for
//! several closed minutes (`agg/1m`), publishes `state` and `status` online, and stops cleanly
//! (`status` offline). A second gateway is killed with SIGKILL, so the broker publishes its
//! last will. Everything recorded goes through `tests/peers/validate_payloads.py`, which must
//! pass and must have seen each expected kind; and the validator is shown to fail on a
//! payload with one field too many.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, ensure};
use serde_json::Value;

use common::HALLGATE;
use common::contract::{Record, Recorder, validate, validate_records};
use common::dead_peers::RefusingPort;
use common::hall::HallPlan;
use common::process::{self, Traffic};
use common::rig::Rig;

/// Closed minutes the first gateway must report before it is stopped.
const MINUTES: usize = 3;

/// The payload kinds the run must produce, each at least once.
const EXPECTED_KINDS: [&str; 4] = ["status", "state", "agg_1m", "alert"];

/// A face terminal in room-1, on the gateway's embedded terminal broker.
const TERMINAL: &str = "FC8200H12345678";

fn traffic() -> Traffic {
    Traffic {
        seed: 5,
        warmup: Duration::from_secs(8),
        duration: Duration::from_secs(60),
        arrivals_per_min: 120.0,
        mean_dwell_secs: 8.0,
    }
}

fn terminal_section(dir: &Path, port: u16) -> anyhow::Result<String> {
    let file = dir.join("terminal.pass");
    common::write_secret(&file, "pw-contract-terminal\n")?;
    Ok(format!(
        "\n[terminal_broker]\nlisten = \"127.0.0.1:{port}\"\n\
         \n[[terminals]]\nid = \"{TERMINAL}\"\nprofile = \"hikvision-acs\"\nroom = \"room-1\"\n\
         username = \"t0\"\npassword_file = \"{}\"\n",
        file.display()
    ))
}

/// Plays a few passages, all with fever, at the terminal.
fn fever_passages(config: &Path, dir: &Path) -> anyhow::Result<()> {
    let out = Command::new(HALLGATE)
        .args(["simulate-terminals", "--config"])
        .arg(config)
        .arg("--truth")
        .arg(dir.join("terminals-truth.jsonl"))
        .args(["--seed", "3", "--passages", "4", "--rate-per-sec", "20"])
        .args([
            "--fever-share",
            "1",
            "--resend-share",
            "0",
            "--bad-share",
            "0",
        ])
        .output()
        .context("cannot run hallgate simulate-terminals")?;
    ensure!(
        out.status.success(),
        "simulate-terminals failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn of_hall<'a>(records: &'a [Record], hall: &'a str) -> impl Iterator<Item = &'a Record> + 'a {
    records
        .iter()
        .filter(move |r| r.field("hall_id") == Some(hall))
}

fn has_status(records: &[Record], hall: &str, status: &str) -> bool {
    of_hall(records, hall).any(|r| r.kind() == Some("status") && r.field("status") == Some(status))
}

fn has_alert(records: &[Record], hall: &str, alert: &str) -> bool {
    of_hall(records, hall).any(|r| {
        r.kind() == Some("alert")
            && r.field("alert") == Some(alert)
            && r.field("state") == Some("raised")
    })
}

fn count_kind(records: &[Record], hall: &str, kind: &str) -> usize {
    of_hall(records, hall)
        .filter(|r| r.kind() == Some(kind))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_payload_the_gateway_publishes_validates_against_its_schema() {
    let refusing = RefusingPort::bind().expect("a loopback port can be bound");
    let terminal_dir = tempfile::tempdir().expect("tempdir");
    let mut plan = HallPlan::lobby_with_function_rooms("c-contract", 1);
    plan.add_unsimulated_exit("pc-refusing", "room-1", refusing.address);
    plan.extra_sections =
        terminal_section(terminal_dir.path(), common::free_port()).expect("terminal section");
    let rig = Rig::new("contract", plan).expect("a temporary directory can be created");
    rig.run(Duration::from_secs(420), async |rig| {
        rig.start_broker().await?;
        let port = rig.broker()?.port;
        let recorder = Recorder::start(port, "contract-recorder").await?;
        let hall = rig.plan.hall_id.clone();

        rig.start_simulator(traffic())?;
        // Payloads are checked against their schema, not against the truth: the traffic need
        // not wait for the gateway's baselines.
        rig.release_traffic()?;
        let config = rig.write_gateway_config()?;
        rig.start_gateway()?;
        rig.wait_for_gateway_log(
            "embedded terminal broker listening",
            Duration::from_secs(20),
        )
        .await?;
        fever_passages(&config, rig.dir())?;
        recorder
            .wait_for(
                "status online, a state, device_offline and fever alerts",
                Duration::from_secs(60),
                |r| {
                    has_status(r, &hall, "online")
                        && count_kind(r, &hall, "state") > 0
                        && has_alert(r, &hall, "device_offline")
                        && has_alert(r, &hall, "fever")
                },
            )
            .await?;
        recorder
            .wait_for(
                &format!("{MINUTES} agg/1m minutes"),
                Duration::from_secs(60 * (MINUTES as u64 + 1)),
                |r| count_kind(r, &hall, "agg_1m") >= MINUTES,
            )
            .await?;
        rig.ensure_alive()?;
        rig.gateway()?.sigterm()?;
        ensure!(
            rig.gateway()?
                .wait_exit(Duration::from_secs(20))
                .await
                .is_some(),
            "the gateway did not stop within 20 s of SIGTERM"
        );
        recorder
            .wait_for(
                "status offline at the clean stop",
                Duration::from_secs(10),
                |r| has_status(r, &hall, "offline"),
            )
            .await?;

        // A second gateway, killed: the broker publishes its last will.
        let will_plan = HallPlan::lobby_with_function_rooms("c-will", 0);
        let will_dir = rig.dir().join("will");
        let will_data = will_dir.join("data");
        std::fs::create_dir_all(&will_data)?;
        let will_config = will_dir.join("gateway.toml");
        std::fs::write(&will_config, will_plan.gateway_toml(port, &will_data))?;
        let mut will = process::gateway(&will_dir, &will_config, port, &will_data)?;
        let will_hall = will_plan.hall_id.clone();
        let online = recorder
            .wait_for(
                "the second gateway's status online",
                Duration::from_secs(30),
                |r| has_status(r, &will_hall, "online"),
            )
            .await;
        if let Err(error) = online {
            return Err(error.context(will.log_report()));
        }
        will.kill9()?;
        recorder
            .wait_for(
                "the last will (status offline) of the killed gateway",
                Duration::from_secs(20),
                |r| has_status(r, &will_hall, "offline"),
            )
            .await?;

        let records = recorder.records();
        let lines = rig.dir().join("recorded.jsonl");
        recorder.write_lines(&lines)?;
        let validation = validate(&lines, rig.dir())?;
        validation.ensure_passed(&format!("the recording {}", lines.display()))?;
        for kind in EXPECTED_KINDS {
            ensure!(
                validation.valid.get(kind).copied().unwrap_or(0) > 0,
                "the validator saw no valid {kind} payload:\n{}",
                validation.output
            );
        }
        let alerts: Vec<String> = of_hall(&records, &hall)
            .filter(|r| r.kind() == Some("alert"))
            .map(|r| {
                format!(
                    "{} {} {}",
                    r.field("alert").unwrap_or("?"),
                    r.field("subject").unwrap_or("?"),
                    r.field("state").unwrap_or("?")
                )
            })
            .collect();
        eprintln!(
            "contract: {} messages validated; per kind {:?}; alerts {alerts:?}",
            records.len(),
            validation.valid
        );

        // The validator can fail: the same status payload with one field more is refused.
        let mut tampered = records
            .iter()
            .find(|r| r.kind() == Some("status"))
            .cloned()
            .context("a status was recorded")?;
        tampered
            .payload
            .as_object_mut()
            .context("a status payload is an object")?
            .insert("operator_name".into(), Value::String("Li Wei".into()));
        let refused = validate_records(rig.dir(), "tampered", &[tampered])?;
        ensure!(
            !refused.passed && refused.code == Some(1),
            "the validator passed a status with an extra field (exit {:?}):\n{}",
            refused.code,
            refused.output
        );
        ensure!(
            refused.output.contains("operator_name"),
            "the validator's failure does not name the extra field:\n{}",
            refused.output
        );
        Ok(())
    })
    .await;
}
