//! Interoperability with an independent implementation: the gateway reads people counters
//! served by pymodbus, over Modbus TCP and over Modbus RTU on a socat pty pair, and the
//! retained `state` ends with *exactly* the crossings the counters' scripted totals imply.
//!
//! Three doors, three counter models, each layout chosen to catch a different mistake:
//!
//! | door         | profile             | FC | IN, OUT at | width, words   | catches           |
//! |--------------|---------------------|----|------------|----------------|-------------------|
//! | entrance     | `generic-u32`       | 3  | 0-1, 2-3   | u32 high first | word order, carry |
//! | reading-door | `generic-u16`       | 3  | 0, 1       | u16            | the 65535→0 wrap  |
//! | lecture-door | `generic-u32-input` | 4  | 0-1, 2-3   | u32 low first  | FC 4, 1-based map |
//!
//! (Register addresses as on the wire, 0-based.)
//!
//! The u32 totals have non-zero high words and the plan carries their low words across
//! 65535, so a reader with the words swapped sees the totals jump backwards and fails. The u16
//! totals wrap (65530 → 65535 → 12). The FC 4 profile numbers its registers from 1, as its
//! manual would; the pymodbus side serves them at the protocol addresses, written out by hand.
//!
//! The gateway takes a counter's first reading as its baseline. The pymodbus server holds its
//! initial totals until the test says `go` on its stdin, and the test says it only once the
//! retained state shows every counter online, that is once every baseline has been read: the
//! baselines can only be the initial totals, whatever the timing. Steps are 0.8 s apart, one
//! counter at a time, and no room's balance goes below zero at any point of the plan.
//!
//! Needs `python3` with pymodbus 3.x and, for RTU, socat: `bash scripts/test.sh` installs both.
//! Without them the tests fail saying so; they do not skip. `HALLGATE_TEST_PYMODBUS_DEBUG=1`
//! makes the server log every frame; `HALLGATE_TEST_KEEP=1` keeps the logs after a pass.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use common::hall::{RoomPlan, loopback};
use common::process;
use common::pymodbus::{
    Link, Listen, PymodbusPeer, RegisterLayout, Script, ScriptStep, ScriptedCounter, ValueType,
    WordOrder, require_pymodbus, write_file,
};
use common::rig::Rig;
use common::serial::PtyPair;
use common::truth::{Truth, compare_state};

/// The whole test, processes and all.
const LIMIT: Duration = Duration::from_secs(150);
/// The scenario inside it, shorter so that a hang is reported with the peers' logs too.
const SCENARIO_LIMIT: Duration = Duration::from_secs(130);
/// From starting the gateway to every counter online in the retained state.
const ONLINE_LIMIT: Duration = Duration::from_secs(30);
/// From the plan's last step to the exact figures in the retained state.
const STATE_SETTLE: Duration = Duration::from_secs(20);
/// How long the figures must then stay exact: several polls of every counter.
const HOLD: Duration = Duration::from_secs(2);
/// The serial line's speed (a pty ignores it, but both ends are told the same).
const BAUD: u32 = 19_200;

/// A lobby off the street with a reading room and a lecture room off it, one counter per
/// door, and a plan that sends 50 people in and 40 out through the entrance.
fn three_doors(hall_id: &str) -> Script {
    let room = |id: &str, capacity| RoomPlan {
        id: id.into(),
        capacity,
    };
    let counter =
        |unit_id, id: &str, door: &str, from: &str, to: &str, profile, layout, initial| {
            ScriptedCounter {
                id: id.into(),
                door: door.into(),
                from: from.into(),
                to: to.into(),
                profile,
                layout,
                unit_id,
                initial,
            }
        };
    let step = |at_s, unit_id, inward, outward| ScriptStep {
        at_s,
        unit_id,
        inward,
        outward,
    };
    Script {
        hall_id: hall_id.into(),
        rooms: vec![
            room("lobby", 300),
            room("reading", 40),
            room("lecture", 120),
        ],
        counters: vec![
            // generic-u32: holding registers 0-3, high word first.
            counter(
                1,
                "pc-entrance",
                "entrance",
                "outside",
                "lobby",
                "generic-u32",
                RegisterLayout {
                    function_code: 3,
                    in_address: 0,
                    out_address: 2,
                    value_type: ValueType::U32,
                    word_order: WordOrder::HighFirst,
                },
                (0x0012_FFF0, 0x0012_FFE0),
            ),
            // generic-u16: holding registers 0 and 1.
            counter(
                2,
                "pc-reading",
                "reading-door",
                "lobby",
                "reading",
                "generic-u16",
                RegisterLayout {
                    function_code: 3,
                    in_address: 0,
                    out_address: 1,
                    value_type: ValueType::U16,
                    word_order: WordOrder::HighFirst,
                },
                (65_530, 65_525),
            ),
            // generic-u32-input: input registers 1-4 as its manual numbers them (from 1), so
            // protocol addresses 0-3; low word first.
            counter(
                3,
                "pc-lecture",
                "lecture-door",
                "lobby",
                "lecture",
                "generic-u32-input",
                RegisterLayout {
                    function_code: 4,
                    in_address: 0,
                    out_address: 2,
                    value_type: ValueType::U32,
                    word_order: WordOrder::LowFirst,
                },
                (0x0001_FFFA, 0x0004_FFFE),
            ),
        ],
        // Occupancy after each step, lobby/reading/lecture: 30/0/0, 25/5/0, 17/5/8, 4/18/8,
        // 24/18/8, 39/3/8, 44/3/3, 4/3/3, 2/5/3.
        steps: vec![
            // 30 in from the street; the low word carries into the high word.
            step(0.5, 1, Some(0x0012_FFF0 + 30), None),
            // 5 into the reading room, up to the top of the u16 range...
            step(1.3, 2, Some(65_535), None),
            // 8 into the lecture room, low word carrying.
            step(2.1, 3, Some(0x0001_FFFA + 8), None),
            // ...and 13 more across the wrap: 65535 → 12.
            step(2.9, 2, Some(12), None),
            step(3.7, 1, Some(0x0012_FFF0 + 50), None),
            // 15 out of the reading room, OUT wrapping too: 65525 + 15 = 65540 → 4.
            step(4.5, 2, None, Some(4)),
            // 5 out of the lecture room; low word carrying.
            step(5.3, 3, None, Some(0x0004_FFFE + 5)),
            // 40 out to the street.
            step(6.1, 1, None, Some(0x0012_FFE0 + 40)),
            step(6.9, 2, Some(14), None),
        ],
    }
}

fn rig(name: &str, script: &Script) -> Rig {
    Rig::new(name, script.hall_plan()).expect("a temporary directory can be created")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_reads_pymodbus_tcp_counters_exactly() {
    let script = three_doors("t-pymodbus-tcp");
    rig("pymodbus-tcp", &script)
        .run(LIMIT, async |rig| {
            require_pymodbus(rig.dir())?;
            rig.start_broker().await?;
            let plan = write_file(rig.dir(), "plan.json", &script.plan_json())?;
            let mut peer = PymodbusPeer::start(rig.dir(), &plan, Listen::Tcp).await?;
            let port = peer.port.context("a TCP server reports its port")?;
            let link = Link::Tcp(loopback(port));
            let outcome = tokio::time::timeout(
                SCENARIO_LIMIT,
                count_through_the_plan(rig, &mut peer, &script, &link),
            )
            .await;
            with_logs(outcome, &[peer.log_report()])
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_reads_pymodbus_rtu_counters_exactly() {
    let script = three_doors("t-pymodbus-rtu");
    rig("pymodbus-rtu", &script)
        .run(LIMIT, async |rig| {
            require_pymodbus(rig.dir())?;
            let mut line = PtyPair::create(rig.dir(), "ttyRS485").await?;
            rig.start_broker().await?;
            let plan = write_file(rig.dir(), "plan.json", &script.plan_json())?;
            let listen = Listen::Serial {
                tty: line.device_side.clone(),
                baud: BAUD,
            };
            let mut peer = PymodbusPeer::start(rig.dir(), &plan, listen).await?;
            let link = Link::Rtu {
                tty: line.gateway_side.clone(),
                baud: BAUD,
            };
            let outcome = tokio::time::timeout(
                SCENARIO_LIMIT,
                count_through_the_plan(rig, &mut peer, &script, &link),
            )
            .await;
            with_logs(outcome, &[peer.log_report(), line.process.log_report()])
        })
        .await;
}

/// Starts the gateway against the pymodbus server, plays the plan once every baseline is
/// taken, and demands the exact figures.
async fn count_through_the_plan(
    rig: &mut Rig,
    peer: &mut PymodbusPeer,
    script: &Script,
    link: &Link,
) -> anyhow::Result<()> {
    let broker_port = rig.broker()?.port;
    let config = write_file(
        rig.dir(),
        "gateway.toml",
        &script.gateway_toml(broker_port, &rig.data_dir, link),
    )?;
    rig.gateway = Some(process::gateway(
        rig.dir(),
        &config,
        broker_port,
        &rig.data_dir,
    )?);
    wait_until_online(rig, peer, &script.counter_ids()).await?;

    // Every baseline has been read, and no total has moved yet: start the plan.
    peer.go()?;
    peer.wait_until_done(script.duration() + Duration::from_secs(30))
        .await?;

    let expected = script.expected()?;
    let visitors = script.expected_visitors()?;
    let deadline = Instant::now() + STATE_SETTLE;
    loop {
        rig.ensure_alive()?;
        peer.ensure_running()?;
        let verdict = match rig.watcher()?.state() {
            Some(state) => check_exact(&state, &rig.plan.room_ids(), &expected, visitors),
            None => Err("no state has been published".to_string()),
        };
        match verdict {
            Ok(()) => break,
            Err(table) if Instant::now() >= deadline => bail!(
                "the retained state did not reach the plan's figures within {STATE_SETTLE:?} \
                 after its last step:\n{table}"
            ),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }

    // Exact, and staying exact: nothing more is counted while the totals stand still.
    tokio::time::sleep(HOLD).await;
    rig.ensure_alive()?;
    let state = rig.watcher()?.state().context("the state vanished")?;
    check_exact(&state, &rig.plan.room_ids(), &expected, visitors).map_err(|table| {
        anyhow::anyhow!(
            "the retained state was exact, then moved on while the totals stood still:\n{table}"
        )
    })?;
    check_clean_line(&state, &script.counter_ids())
}

/// Waits until the retained state shows every counter in `ids` online, the peer still up.
async fn wait_until_online(
    rig: &mut Rig,
    peer: &mut PymodbusPeer,
    ids: &[String],
) -> anyhow::Result<()> {
    peer.ensure_running()?;
    let waited = rig.wait_for_devices(ids, true, ONLINE_LIMIT).await;
    peer.ensure_running()?;
    waited
        .map(|_| ())
        .context("the gateway did not report every pymodbus counter online")
}

/// Every room's occupancy, entries and exits, the hall's occupancy and visitors, and no drift:
/// `Ok(())` when all are exact, otherwise a table of expected against got.
fn check_exact(
    state: &Value,
    rooms: &[String],
    expected: &Truth,
    visitors: i64,
) -> Result<(), String> {
    let mut problems = Vec::new();
    let table = compare_state(state, expected, rooms).err();
    let got_visitors = state
        .get("hall")
        .and_then(|h| h.get("visitors_today"))
        .and_then(Value::as_i64);
    if got_visitors != Some(visitors) {
        problems.push(format!(
            "hall.visitors_today want {visitors}, got {got_visitors:?}"
        ));
    }
    for room in state
        .get("rooms")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let drift = room.get("drift_today").and_then(Value::as_i64);
        if drift != Some(0) {
            problems.push(format!(
                "room {} has drift_today {drift:?}; the plan never lets a balance go negative",
                room.get("id").unwrap_or(&Value::Null)
            ));
        }
    }
    if table.is_none() && problems.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{}{}",
        table.unwrap_or_default(),
        problems.join("\n")
    ))
}

/// Two Modbus implementations on a clean line should never disagree: every counter is online
/// and polled, with no CRC or framing errors, exceptions or undecodable answers, on the
/// counter or on any bus. (Timeouts are left out: a loaded machine can cause them.)
fn check_clean_line(state: &Value, ids: &[String]) -> anyhow::Result<()> {
    let devices = state
        .get("devices")
        .and_then(Value::as_array)
        .context("the state has no devices")?;
    let buses = state.get("buses").and_then(Value::as_array);
    let mut problems = Vec::new();
    let entries = devices
        .iter()
        .map(|d| (d.get("id").and_then(Value::as_str).unwrap_or("?"), d))
        .chain(
            buses
                .into_iter()
                .flatten()
                .map(|b| (b.get("id").and_then(Value::as_str).unwrap_or("?"), b)),
        );
    for (id, entry) in entries {
        let stats = entry.get("stats");
        let count = |key: &str| stats.and_then(|s| s.get(key)).and_then(Value::as_u64);
        for key in ["crc_errors", "exceptions", "bad_answers"] {
            if count(key) != Some(0) {
                problems.push(format!("{id}: {key} = {:?}", count(key)));
            }
        }
        if ids.iter().any(|i| i == id) {
            if entry.get("online").and_then(Value::as_bool) != Some(true) {
                problems.push(format!("{id} is not online: {entry}"));
            }
            if count("polls").unwrap_or(0) == 0 {
                problems.push(format!("{id} was never polled: {entry}"));
            }
        }
    }
    if !problems.is_empty() {
        bail!(
            "the gateway and pymodbus disagreed on the line: {}\ndevices: {}\nbuses: {}",
            problems.join("; "),
            Value::Array(devices.clone()),
            buses.map_or("(none)".to_string(), |b| Value::Array(b.clone())
                .to_string())
        );
    }
    Ok(())
}

/// The scenario's outcome, with the peers' log tails added to a failure or a hang (the rig
/// reports the gateway's, the broker's and the watcher's).
fn with_logs(
    outcome: Result<anyhow::Result<()>, tokio::time::error::Elapsed>,
    logs: &[String],
) -> anyhow::Result<()> {
    let error = match outcome {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(error)) => error,
        Err(_) => anyhow::anyhow!("the scenario did not finish within {SCENARIO_LIMIT:?} (a hang)"),
    };
    bail!("{error:#}\n\n{}", logs.concat())
}
