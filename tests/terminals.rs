//! Face-recognition terminals, black box: `hallgate simulate-terminals` plays one terminal per
//! vendor profile (Hikvision, HTTPv2, Uniubi) against the gateway's embedded broker, each
//! with its own login, with re-sends, malformed payloads and heartbeats mixed in; `hallgate
//! run` forwards only aggregates to a real mosquitto.
//!
//! - The figures in the retained `state` match the simulator's ground truth exactly: passages,
//!   members, unique members, strangers, fevers, mask-off and sensor errors per room and for
//!   the hall; re-sends count once; every bad payload is refused and counted.
//! - Privacy: no name, no member id and no image byte reaches the central broker, nor the
//!   SQLite file on the box.

mod common;

use std::path::Path;
use std::time::Duration;

use anyhow::ensure;
use serde_json::Value;

use common::hall::HallPlan;
use common::rig::Rig;
use common::terminal_figures::{
    database_bytes, final_totals, find_all, num, rejected, secrets, simulate_terminals,
    terminal_stat, wait_for_figures,
};

/// One terminal per shipped profile, in three rooms.
const TERMINALS: [(&str, &str, &str); 3] = [
    ("FC8200H12345678", "hikvision-acs", "lobby"),
    ("HV2-0A1B2C3D", "httpv2-record", "room-1"),
    ("84E0F4200CA602FA", "uniubi-uface", "room-2"),
];

/// The sections that give the gateway its terminals, with a password file each.
fn terminal_sections(dir: &Path, port: u16, vision: bool) -> anyhow::Result<String> {
    let mut text =
        format!("\n[terminal_broker]\nlisten = \"127.0.0.1:{port}\"\nmax_payload_bytes = 65536\n");
    if vision {
        text.push_str(&format!(
            "\n[vision]\nmodel = \"{}/models/centerface.onnx\"\n",
            env!("CARGO_MANIFEST_DIR")
        ));
    }
    for (i, (id, profile, room)) in TERMINALS.iter().enumerate() {
        let file = dir.join(format!("t{i}.pass"));
        common::write_secret(&file, &format!("pw-{i}-{id}\n"))?;
        text.push_str(&format!(
            "\n[[terminals]]\nid = \"{id}\"\nprofile = \"{profile}\"\nroom = \"{room}\"\n\
             username = \"t{i}\"\npassword_file = \"{}\"\n",
            file.display()
        ));
    }
    Ok(text)
}

fn plan(hall: &str) -> HallPlan {
    HallPlan::lobby_with_function_rooms(hall, 2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_figures_match_the_ground_truth_and_nothing_personal_leaves_the_box() {
    let mut plan = plan("t-terms");
    let rig_dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    plan.extra_sections =
        terminal_sections(rig_dir.path(), port, false).expect("terminal sections");
    let rig = Rig::new("terminals", plan).expect("test directory");
    rig.run(Duration::from_secs(300), async |rig| {
        rig.start_broker().await?;
        let config = rig.write_gateway_config()?;
        rig.start_gateway()?;
        rig.wait_for_gateway_log(
            "embedded terminal broker listening",
            Duration::from_secs(20),
        )
        .await?;
        let snapshot = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/images/astronaut_640x480.jpg"
        );
        let truth_path = rig.dir().join("terminals-truth.jsonl");
        let lines = simulate_terminals(
            &config,
            &truth_path,
            &[
                "--seed",
                "41",
                "--passages",
                "300",
                "--rate-per-sec",
                "40",
                "--resend-share",
                "0.1",
                "--bad-share",
                "0.08",
                "--member-pool",
                "40",
                "--fever-share",
                "0.05",
                "--mask-off-share",
                "0.1",
                "--snapshot",
                snapshot,
            ],
            Duration::from_secs(120),
        )?;
        let totals = final_totals(&lines)?.clone();
        ensure!(
            num(&totals["hall"], "passages") >= 250,
            "too few passages: {totals}"
        );
        ensure!(
            num(&totals["hall"], "resends") > 0 && num(&totals["hall"], "bad") > 0,
            "{totals}"
        );
        ensure!(
            num(&totals["hall"], "fevers") > 0 && num(&totals["hall"], "strangers") > 0,
            "{totals}"
        );

        let state = wait_for_figures(rig, &totals, Duration::from_secs(30)).await?;
        ensure!(
            terminal_stat(&state, "duplicates") == num(&totals["hall"], "resends"),
            "re-sends: the simulator sent {}, the gateway dropped {} as duplicates",
            num(&totals["hall"], "resends"),
            terminal_stat(&state, "duplicates")
        );
        ensure!(
            rejected(&state) == num(&totals["hall"], "bad"),
            "bad payloads: the simulator sent {}, the gateway refused {}: {}",
            num(&totals["hall"], "bad"),
            rejected(&state),
            state["terminals"]
        );

        // Privacy. Everything the centre received, and every byte of the database.
        let members = lines
            .iter()
            .filter_map(|l| l.get("member").and_then(Value::as_str))
            .count();
        ensure!(
            members >= 100,
            "the truth names only {members} member passages"
        );
        let mut needles: Vec<Vec<u8>> = secrets(&lines)
            .into_iter()
            .map(String::into_bytes)
            .collect();
        ensure!(
            needles.len() >= 20,
            "the truth names too few members to search for: {needles:?}"
        );
        // Short ids would be found by chance in any number: the search must mean something.
        let short: Vec<&Vec<u8>> = needles.iter().filter(|n| n.len() < 5).collect();
        ensure!(
            short.is_empty(),
            "member ids and names too short to search for: {short:?}"
        );
        let jpeg = std::fs::read(snapshot)?;
        // A 64-byte run from the middle of the image, raw and as base64 would carry it.
        let run = jpeg[jpeg.len() / 2..jpeg.len() / 2 + 64].to_vec();
        needles.push(run);
        let seen = rig.watcher()?.seen();
        let mut centre = Vec::new();
        for (topic, payload) in &seen.raw {
            centre.extend_from_slice(topic.as_bytes());
            centre.extend_from_slice(payload);
        }
        ensure!(!centre.is_empty(), "the centre received nothing");
        let leaked = find_all(&centre, &needles);
        ensure!(leaked.is_empty(), "reached the central broker: {leaked:?}");
        rig.gateway()?.sigterm()?;
        rig.gateway()?.wait_exit(Duration::from_secs(15)).await;
        let db = database_bytes(&rig.data_dir)?;
        ensure!(db.len() > 10_000, "the database is suspiciously small");
        let leaked = find_all(&db, &needles);
        ensure!(leaked.is_empty(), "stored in the SQLite file: {leaked:?}");
        Ok(())
    })
    .await;
}
