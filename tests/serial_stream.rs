//! Streaming serial counters end to end, over real pty pairs: the test plays two counters that
//! print their totals on a serial line — a Terabee Evo people counter (binary "PC" frames with
//! CRC-8) and a cheap counter that prints `IN=12,OUT=9` lines — with garbage between frames,
//! a frame with a broken CRC, and an unplug of one line in the middle. `hallgate run` reads
//! them through socat ptys and publishes to a real mosquitto; the retained `state` must give
//! exactly the crossings the test sent, and the corrupt input must show up as counted errors.
//!
//! The frames are built here by hand from the documented layouts, not with the gateway's
//! encoders, so the two sides stay independent.

mod common;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::Value;

use common::broker::Mosquitto;
use common::process::{self, Process};
use common::serial::{PtyPair, device_stats, pts_descriptors};
use common::watcher::Watcher;

const HALL: &str = "t-stream";

/// CRC-8, polynomial 0x07, initial value 0, no reflection (Terabee's `crc8`).
fn crc8(bytes: &[u8]) -> u8 {
    let mut crc = 0u8;
    for &b in bytes {
        crc ^= b;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ 0x07
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// "PC" | sensor id (u32) | IN−OUT (i32) | IN (u16) | OUT (u16) | CRC-8, big-endian.
fn terabee_frame(inward: u16, outward: u16) -> Vec<u8> {
    let mut f = b"PC".to_vec();
    f.extend_from_slice(&7u32.to_be_bytes());
    f.extend_from_slice(&(i32::from(inward) - i32::from(outward)).to_be_bytes());
    f.extend_from_slice(&inward.to_be_bytes());
    f.extend_from_slice(&outward.to_be_bytes());
    f.push(crc8(&f));
    f
}

fn config(dir: &Path, terabee: &Path, ascii: &Path) -> String {
    format!(
        r#"
[hall]
id = "{HALL}"
district = "test"
closing_time = "{closing}"

[uplink]
broker = "mqtt://127.0.0.1:1"
state_interval_ms = 200

[storage]
data_dir = "{data}"

[[rooms]]
id = "lobby"
capacity = 500

[[rooms]]
id = "gallery"
capacity = 500

[[doors]]
id = "entrance"
from = "outside"
to = "lobby"

[[doors]]
id = "gallery-door"
from = "lobby"
to = "gallery"

[[counters]]
id = "evo-entrance"
door = "entrance"
profile = "terabee-evo"
transport = "serial_stream"
port = "{terabee}"
baud = 115200

[[counters]]
id = "ascii-gallery"
door = "gallery-door"
profile = "ascii-in-out"
transport = "serial_stream"
port = "{ascii}"
baud = 9600

[status]
# Never the default 8080, which tests running side by side would share.
listen = "127.0.0.1:{status_port}"
"#,
        status_port = common::free_port(),
        closing = common::hall::closing_time_about_12_hours_from_now(),
        data = dir.join("data").display(),
        terabee = terabee.display(),
        ascii = ascii.display(),
    )
}

/// A counter the test plays: writes to the device side of a pty pair.
struct Device {
    pair: PtyPair,
    port: Option<std::fs::File>,
}

impl Device {
    fn open(&mut self) -> anyhow::Result<()> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.pair.device_side)
            .with_context(|| format!("open {}", self.pair.device_side.display()))?;
        self.port = Some(file);
        Ok(())
    }

    fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let port = self.port.as_mut().context("device side not open")?;
        port.write_all(bytes)?;
        port.flush()?;
        Ok(())
    }
}

fn room(state: &Value, id: &str) -> Option<(u64, u64, u64)> {
    let r = state["rooms"].as_array()?.iter().find(|r| r["id"] == id)?;
    Some((
        r["occupancy"].as_u64()?,
        r["entries_today"].as_u64()?,
        r["exits_today"].as_u64()?,
    ))
}

fn online(state: &Value, id: &str) -> bool {
    state["devices"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["id"] == id))
        .is_some_and(|d| d["online"] == true)
}

async fn wait_for(
    watcher: &Watcher,
    what: &str,
    limit: Duration,
    ok: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(state) = watcher.state()
            && ok(&state)
        {
            return Ok(state);
        }
        if Instant::now() >= deadline {
            bail!(
                "{what} not seen within {limit:?}; last state: {}",
                watcher
                    .state()
                    .map_or("none".to_string(), |s| s.to_string())
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn scenario(
    dir: &Path,
    gateway: &mut Option<Process>,
    broker: &mut Option<Mosquitto>,
) -> anyhow::Result<()> {
    *broker = Some(Mosquitto::start(dir, "mosquitto").await?);
    let port = broker.as_ref().context("broker")?.port;
    let mut evo = Device {
        pair: PtyPair::create(dir, "evo").await?,
        port: None,
    };
    let mut ascii = Device {
        pair: PtyPair::create(dir, "ascii").await?,
        port: None,
    };
    let cfg = dir.join("hall.toml");
    std::fs::write(
        &cfg,
        config(dir, &evo.pair.gateway_side, &ascii.pair.gateway_side),
    )?;
    let watcher =
        Watcher::connect(port, &format!("hallgate/test/{HALL}"), "stream-watcher").await?;
    *gateway = Some(process::gateway(dir, &cfg, port, &dir.join("data"))?);
    evo.open()?;
    ascii.open()?;

    // Baselines: the Terabee starts from totals it had before (IN 65000, near its 16-bit
    // wrap), the text counter from 500/480. The text counter's first line may be cut, so it
    // leads with a line end, as the decoder expects of a line joined mid-way.
    let (mut evo_in, mut evo_out) = (65_000u16, 64_990u16);
    let (mut txt_in, mut txt_out) = (500u64, 480u64);
    evo.send(&terabee_frame(evo_in, evo_out))?;
    ascii.send(format!("\r\nIN={txt_in},OUT={txt_out}\r\n").as_bytes())?;
    wait_for(
        &watcher,
        "both counters online",
        Duration::from_secs(20),
        |s| online(s, "evo-entrance") && online(s, "ascii-gallery"),
    )
    .await?;
    // The baseline is taken from the first reading; give the gateway a moment to have read it.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut expected_entries_lobby = 0u64;
    let mut expected_exits_lobby = 0u64;
    let mut expected_gallery_in = 0u64;
    let mut expected_gallery_out = 0u64;
    for step in 0..60u32 {
        // Ten people in through the entrance per round, some on to the gallery and back.
        evo_in = evo_in.wrapping_add(10);
        expected_entries_lobby += 10;
        evo.send(b"\x00\xffgarbage PC\x01")?;
        evo.send(&terabee_frame(evo_in, evo_out))?;
        txt_in += 4;
        expected_gallery_in += 4;
        expected_exits_lobby += 4;
        ascii.send(format!("noise!!\r\nIN={txt_in},OUT={txt_out}\r\n").as_bytes())?;
        if step % 3 == 2 {
            txt_out += 6;
            expected_gallery_out += 6;
            expected_entries_lobby += 6;
            ascii.send(format!("IN={txt_in},OUT={txt_out}\r\n").as_bytes())?;
            evo_out = evo_out.wrapping_add(8);
            expected_exits_lobby += 8;
            // A frame whose CRC is wrong must be dropped, not counted.
            let mut bad = terabee_frame(evo_in.wrapping_add(1000), evo_out);
            let last = bad.len() - 1;
            bad[last] ^= 0x5a;
            evo.send(&bad)?;
            evo.send(&terabee_frame(evo_in, evo_out))?;
        }
        if step == 30 {
            // Unplug the text counter's line for a while; it keeps counting meanwhile.
            let before = pts_descriptors(gateway.as_ref().and_then(Process::pid).context("pid")?)?;
            ascii.port = None;
            ascii.pair.unplug().await?;
            txt_in += 7;
            expected_gallery_in += 7;
            expected_exits_lobby += 7;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let gateway_pid = gateway.as_ref().and_then(Process::pid).context("pid")?;
            let during = pts_descriptors(gateway_pid)?;
            ensure!(
                during.len() + 1 == before.len(),
                "while the text counter's line is unplugged the gateway should hold one pts \
                 descriptor fewer: before {before:?}, during {during:?}"
            );
            // The state must have shown the counter offline first: otherwise "back online"
            // below could be the state from before the unplug (device events reach the
            // engine after the reorder window, and `state` is published on its interval).
            wait_for(
                &watcher,
                "text counter offline while unplugged",
                Duration::from_secs(20),
                |s| !online(s, "ascii-gallery"),
            )
            .await?;
            ascii.pair.replug().await?;
            ascii.open()?;
            ascii.send(format!("\r\nIN={txt_in},OUT={txt_out}\r\n").as_bytes())?;
            wait_for(
                &watcher,
                "text counter back online",
                Duration::from_secs(20),
                |s| online(s, "ascii-gallery"),
            )
            .await?;
            let after = pts_descriptors(gateway_pid)?;
            ensure!(
                after.len() == before.len(),
                "after the replug the gateway should hold as many pts descriptors as before: \
                 before {before:?}, after {after:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let lobby_occ = expected_entries_lobby - expected_exits_lobby;
    let gallery_occ = expected_gallery_in - expected_gallery_out;
    let state = wait_for(&watcher, "exact figures", Duration::from_secs(20), |s| {
        room(s, "lobby") == Some((lobby_occ, expected_entries_lobby, expected_exits_lobby))
            && room(s, "gallery") == Some((gallery_occ, expected_gallery_in, expected_gallery_out))
    })
    .await
    .with_context(|| {
        format!(
            "expected lobby (occupancy, entries, exits) = ({lobby_occ}, {expected_entries_lobby}, \
             {expected_exits_lobby}), gallery = ({gallery_occ}, {expected_gallery_in}, \
             {expected_gallery_out})"
        )
    })?;
    let evo_stats = device_stats(&state, "evo-entrance")?;
    let txt_stats = device_stats(&state, "ascii-gallery")?;
    ensure!(
        evo_stats.crc_errors > 0,
        "the Terabee frames with a broken CRC should be counted: {evo_stats:?}"
    );
    ensure!(
        txt_stats.crc_errors > 0,
        "the garbage lines should be counted: {txt_stats:?}"
    );
    ensure!(
        txt_stats.link_errors > 0,
        "the unplug should be counted as a link error: {txt_stats:?}"
    );
    gateway
        .as_mut()
        .context("gateway")?
        .ensure_running()
        .context("the gateway must survive garbage and an unplug")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_counters_are_exact_through_garbage_bad_crcs_and_an_unplug() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut gateway = None;
    let mut broker = None;
    let outcome = tokio::time::timeout(
        Duration::from_secs(120),
        scenario(dir.path(), &mut gateway, &mut broker),
    )
    .await;
    let failure = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(format!("{error:#}")),
        Err(_) => Some("the scenario did not finish within 120 s".to_string()),
    };
    if let Some(failure) = failure {
        let log = gateway.as_mut().map_or(String::new(), |g| g.log_report());
        panic!("{failure}\n\n{log}");
    }
}
