//! Counters that cannot put phantom people on the city's screen (issue 17): the real gateway
//! reads a pymodbus counter whose totals do what field counters do when something is wrong,
//! and the retained `state`, the `alerts` topic and the status page must show no phantom
//! people and say what happened.
//!
//! | test                   | what the counter does                                   | old code   |
//! |------------------------|---------------------------------------------------------|------------|
//! | wrong word order       | served low word first, read high word first             | +65 536 each |
//! | u16 reset near the top | 62 107, the device reboots (link lost), back at 0       | +3 429     |
//! | counter replaced       | 181, link lost, a spare with 18 802 684 comes back      | +18.8 M    |
//! | restored from flash    | 181, then 18 802 684 on the same link                   | +18.8 M    |
//!
//! A reboot or a replacement is a pymodbus server stopped (the gateway loses its connection
//! and reports the counter offline) and another started on the same port with other totals.
//! Every plan starts on `go`, once the gateway has the counter online (its baseline taken), as
//! in `tests/interop_pymodbus.rs`; steps are 0.8 s apart and each within what a door passes.
//!
//! Everything the gateway published is then validated against `docs/schema/`.
//!
//! Needs `python3` with pymodbus 3.x and jsonschema (`bash scripts/test.sh` installs both);
//! without them the tests fail saying so. `HALLGATE_TEST_KEEP=1` keeps the logs after a pass.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::Value;

use common::contract;
use common::hall::{RoomPlan, loopback};
use common::http;
use common::process;
use common::pymodbus::{
    Link, Listen, PymodbusPeer, RegisterLayout, Script, ScriptStep, ScriptedCounter, ValueType,
    WordOrder, require_pymodbus, write_file,
};
use common::rig::Rig;

/// The whole test, processes and all.
const LIMIT: Duration = Duration::from_secs(150);
/// From starting the gateway (or a peer) to the counter online in the retained state.
const ONLINE_LIMIT: Duration = Duration::from_secs(30);
/// From a plan's last step to the figures and flags in the retained state.
const SETTLE: Duration = Duration::from_secs(20);
/// From stopping a peer to the counter offline in the retained state.
const OFFLINE_LIMIT: Duration = Duration::from_secs(20);

const COUNTER: &str = "pc-entrance";

/// A lobby of 302 off the street, its entrance counted by one counter at unit 1: the
/// `profile` the gateway is told, the `layout` pymodbus really serves.
fn entrance(
    hall_id: &str,
    profile: &'static str,
    layout: RegisterLayout,
    initial: (u64, u64),
    steps: &[(f64, Option<u64>, Option<u64>)],
) -> Script {
    Script {
        hall_id: hall_id.into(),
        rooms: vec![RoomPlan {
            id: "lobby".into(),
            capacity: 302,
        }],
        counters: vec![ScriptedCounter {
            id: COUNTER.into(),
            door: "entrance".into(),
            from: "outside".into(),
            to: "lobby".into(),
            profile,
            layout,
            unit_id: 1,
            initial,
        }],
        steps: steps
            .iter()
            .map(|&(at_s, inward, outward)| ScriptStep {
                at_s,
                unit_id: 1,
                inward,
                outward,
            })
            .collect(),
    }
}

fn layout(value_type: ValueType, word_order: WordOrder) -> RegisterLayout {
    RegisterLayout {
        function_code: 3,
        in_address: 0,
        out_address: match value_type {
            ValueType::U16 => 1,
            ValueType::U32 => 2,
        },
        value_type,
        word_order,
    }
}

/// The gateway, its broker and the pymodbus peer, and what a test needs of them.
struct Hall {
    /// `None` only while the device is away.
    peer: Option<PymodbusPeer>,
    port: u16,
    status: SocketAddr,
}

/// Starts the broker, the peer serving `script` and the gateway; returns once the counter is
/// online (its baseline taken) and the plan started.
async fn start(rig: &mut Rig, script: &Script) -> anyhow::Result<Hall> {
    require_pymodbus(rig.dir())?;
    rig.start_broker().await?;
    let plan = write_file(rig.dir(), "plan.json", &script.plan_json())?;
    let mut peer = PymodbusPeer::start(rig.dir(), &plan, Listen::Tcp).await?;
    let port = peer.port.context("a TCP server reports its port")?;
    let broker_port = rig.broker()?.port;
    let text = script.gateway_toml(broker_port, &rig.data_dir, &Link::Tcp(loopback(port)));
    let status = status_address(&text)?;
    let config = write_file(rig.dir(), "gateway.toml", &text)?;
    rig.gateway = Some(process::gateway(
        rig.dir(),
        &config,
        broker_port,
        &rig.data_dir,
    )?);
    rig.wait_for_devices(&[COUNTER.to_string()], true, ONLINE_LIMIT)
        .await
        .context("the gateway did not report the counter online")?;
    peer.go()?;
    Ok(Hall {
        peer: Some(peer),
        port,
        status,
    })
}

/// The status page's address, from the `[status]` section the script wrote.
fn status_address(config: &str) -> anyhow::Result<SocketAddr> {
    let line = config
        .lines()
        .find(|l| l.starts_with("listen = "))
        .context("the gateway config has a status listener")?;
    line.trim_start_matches("listen = ")
        .trim_matches('"')
        .parse()
        .context("the status listener is an address")
}

impl Hall {
    fn peer(&mut self) -> anyhow::Result<&mut PymodbusPeer> {
        self.peer.as_mut().context("the counter is away")
    }

    /// Plays the rest of the plan and waits until the gateway has counted to `figures` (IN,
    /// OUT crossings since the test began).
    async fn play(
        &mut self,
        rig: &mut Rig,
        script: &Script,
        figures: (u64, u64),
    ) -> anyhow::Result<()> {
        self.peer()?
            .wait_until_done(script.duration() + Duration::from_secs(30))
            .await?;
        let deadline = Instant::now() + SETTLE;
        loop {
            rig.ensure_alive()?;
            let got = rig.watcher()?.state().map(|s| lobby_figures(&s));
            match got {
                Some(got) if got == figures => return Ok(()),
                got if Instant::now() >= deadline => bail!(
                    "the lobby did not reach entries/exits {figures:?} within {SETTLE:?} of the \
                     plan's end: {got:?}"
                ),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// The device reboots or is swapped: the peer stops (the gateway must see the counter
    /// offline), and another serving `script` comes back on the same port.
    async fn swap_peer(&mut self, rig: &mut Rig, script: &Script) -> anyhow::Result<()> {
        let plan = write_file(rig.dir(), "plan-after.json", &script.plan_json())?;
        // Dropping the peer closes its stdin, which stops it (or kills it).
        drop(self.peer.take());
        rig.wait_for_devices(&[COUNTER.to_string()], false, OFFLINE_LIMIT)
            .await
            .context("the gateway did not see the counter go away")?;
        self.peer = Some(PymodbusPeer::start(rig.dir(), &plan, Listen::TcpAt(self.port)).await?);
        rig.wait_for_devices(&[COUNTER.to_string()], true, ONLINE_LIMIT)
            .await
            .context("the gateway did not read the counter again")?;
        self.peer()?.go()
    }

    /// The status page's view of the counter.
    async fn status_device(&self) -> anyhow::Result<Value> {
        let addr = self.status;
        let answer = tokio::task::spawn_blocking(move || http::get(addr, "/api/v1/state", &[]))
            .await
            .context("the HTTP client task panicked")??;
        ensure!(
            answer.status == 200,
            "/api/v1/state answered {}",
            answer.status
        );
        let view: Value = serde_json::from_str(&answer.body).context("the view is JSON")?;
        device(&view).cloned()
    }
}

/// The counter's entry in a state or a status view.
fn device(doc: &Value) -> anyhow::Result<&Value> {
    doc.get("devices")
        .and_then(Value::as_array)
        .and_then(|all| all.iter().find(|d| d["id"] == COUNTER))
        .context("the document lists the counter")
}

/// What the retained state must say at the end.
struct Want {
    entries: u64,
    exits: u64,
    /// `devices[].counting_doubt`.
    doubt: &'static str,
    /// Words the device's `reason` must hold.
    reason: &'static str,
    /// `devices[].stats` counts that must be exactly so.
    stats: &'static [(&'static str, u64)],
}

/// The lobby's entries and exits today in a state (0 when absent).
fn lobby_figures(state: &Value) -> (u64, u64) {
    let lobby = state
        .get("rooms")
        .and_then(Value::as_array)
        .and_then(|rooms| rooms.iter().find(|r| r["id"] == "lobby"));
    let figure = |key: &str| {
        lobby
            .and_then(|r| r.get(key))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    (figure("entries_today"), figure("exits_today"))
}

/// The lobby's figures and the counter's flags, or what differs.
fn check(state: &Value, want: &Want) -> Result<(), String> {
    let lobby = state
        .get("rooms")
        .and_then(Value::as_array)
        .and_then(|rooms| rooms.iter().find(|r| r["id"] == "lobby"));
    let figure = |key: &str| lobby.and_then(|r| r.get(key)).and_then(Value::as_u64);
    let mut wrong = Vec::new();
    for (key, want) in [
        ("entries_today", want.entries),
        ("exits_today", want.exits),
        ("occupancy", want.entries - want.exits),
    ] {
        if figure(key) != Some(want) {
            wrong.push(format!("lobby {key}: want {want}, got {:?}", figure(key)));
        }
    }
    let Ok(d) = device(state) else {
        return Err("the state lists no counter".into());
    };
    if d["counting_doubt"] != want.doubt {
        wrong.push(format!(
            "counting_doubt: want {:?}, got {}",
            want.doubt, d["counting_doubt"]
        ));
    }
    let reason = d["reason"].as_str().unwrap_or_default();
    if !reason.contains(want.reason) {
        wrong.push(format!(
            "reason: want {:?} in it, got {reason:?}",
            want.reason
        ));
    }
    for (key, n) in want.stats {
        if d["stats"][key].as_u64() != Some(*n) {
            wrong.push(format!("stats.{key}: want {n}, got {}", d["stats"][key]));
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join("\n"))
    }
}

/// Waits until the retained state is as `want` says, then checks it stays so and that the
/// alert and the status page say it too.
async fn settle(rig: &mut Rig, hall: &Hall, want: &Want, alert: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETTLE;
    loop {
        rig.ensure_alive()?;
        let verdict = match rig.watcher()?.state() {
            Some(state) => check(&state, want),
            None => Err("no state has been published".into()),
        };
        match verdict {
            Ok(()) => break,
            Err(wrong) if Instant::now() >= deadline => bail!(
                "the retained state did not settle within {SETTLE:?} of the plan's end:\n{wrong}"
            ),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    // Nothing more is counted while the totals stand still (several polls).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let state = rig.watcher()?.state().context("the state vanished")?;
    check(&state, want).map_err(|wrong| anyhow::anyhow!("the state moved on:\n{wrong}"))?;

    let raised: Vec<Value> = rig
        .watcher()?
        .seen()
        .raw
        .iter()
        .filter(|(topic, _)| topic.ends_with("/alerts"))
        .filter_map(|(_, payload)| serde_json::from_slice::<Value>(payload).ok())
        .filter(|a| a["alert"] == alert && a["subject"] == COUNTER && a["state"] == "raised")
        .collect();
    ensure!(
        raised.len() == 1,
        "want one `{alert}` alert raised for {COUNTER}, got {raised:?}"
    );
    let detail = raised[0]["detail"].as_str().unwrap_or_default();
    ensure!(
        detail.contains(want.reason),
        "the alert should say {:?}: {detail}",
        want.reason
    );

    // Everything published, the new fields and alerts included, is what the schemas say.
    contract::validate_received(rig.dir(), "published", rig.watcher()?)?
        .ensure_passed("what the gateway published")?;

    let shown = hall.status_device().await?;
    let words = shown["detail"].as_str().unwrap_or_default();
    ensure!(
        words.contains(want.reason),
        "the status page should say {:?} for the counter: {shown}",
        want.reason
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_read_with_the_wrong_word_order_puts_nobody_in_the_hall_and_says_check_word_order()
 {
    // The device keeps its totals low word first; the gateway is told `generic-u32` (high word
    // first). 5 people in and 1 out really cross; each would read as 65 536.
    let script = entrance(
        "t-plaus-words",
        "generic-u32",
        layout(ValueType::U32, WordOrder::LowFirst),
        (100, 20),
        &[
            (0.5, Some(103), None),
            (1.3, None, Some(21)),
            (2.1, Some(105), None),
        ],
    );
    let rig = Rig::new("plausibility-words", script.hall_plan()).expect("a test directory");
    rig.run(LIMIT, async |rig| {
        let mut hall = start(rig, &script).await?;
        hall.play(rig, &script, (0, 0)).await?;
        let want = Want {
            entries: 0,
            exits: 0,
            doubt: "word_order",
            reason: "check `word_order`",
            stats: &[("implausible_steps", 3), ("resets", 0)],
        };
        settle(rig, &hall, &want, "counter_implausible").await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_u16_counter_rebooting_near_the_top_of_its_range_is_a_reset_not_thousands_of_crossings() {
    // 50 in and 5 out up to 62 107; the device reboots and comes back at 0, then counts 2 in
    // and 1 out. A wrap would have been 3 429 people.
    let u16 = layout(ValueType::U16, WordOrder::HighFirst);
    let before = entrance(
        "t-plaus-reset",
        "generic-u16",
        u16,
        (62_057, 61_990),
        &[(0.5, Some(62_107), None), (1.3, None, Some(61_995))],
    );
    let after = entrance(
        "t-plaus-reset",
        "generic-u16",
        u16,
        (0, 0),
        &[(0.5, Some(2), None), (1.3, None, Some(1))],
    );
    let rig = Rig::new("plausibility-reset", before.hall_plan()).expect("a test directory");
    rig.run(LIMIT, async |rig| {
        let mut hall = start(rig, &before).await?;
        hall.play(rig, &before, (50, 5)).await?;
        hall.swap_peer(rig, &after).await?;
        hall.play(rig, &after, (52, 6)).await?;
        let want = Want {
            entries: 52,
            exits: 6,
            doubt: "reset",
            reason: "counter reset",
            stats: &[("implausible_steps", 0), ("resets", 1)],
        };
        settle(rig, &hall, &want, "counter_reset").await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_replaced_by_a_spare_with_other_totals_counts_on_from_the_spares_totals() {
    // 5 in and 2 out on the old counter; it goes away and a spare that counted 18 million
    // people elsewhere answers at its address, then counts 3 in and 1 out.
    let u32 = layout(ValueType::U32, WordOrder::HighFirst);
    let before = entrance(
        "t-plaus-spare",
        "generic-u32",
        u32,
        (181, 170),
        &[(0.5, Some(186), None), (1.3, None, Some(172))],
    );
    let after = entrance(
        "t-plaus-spare",
        "generic-u32",
        u32,
        (18_802_684, 18_802_511),
        &[(0.5, Some(18_802_687), None), (1.3, None, Some(18_802_512))],
    );
    let rig = Rig::new("plausibility-spare", before.hall_plan()).expect("a test directory");
    rig.run(LIMIT, async |rig| {
        let mut hall = start(rig, &before).await?;
        hall.play(rig, &before, (5, 2)).await?;
        hall.swap_peer(rig, &after).await?;
        hall.play(rig, &after, (8, 3)).await?;
        let want = Want {
            entries: 8,
            exits: 3,
            doubt: "far_jump",
            reason: "counter replaced",
            stats: &[("implausible_steps", 1), ("resets", 0)],
        };
        settle(rig, &hall, &want, "counter_implausible").await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totals_restored_from_flash_on_a_live_link_count_nobody_and_counting_carries_on() {
    // 2 in; the node reloads totals from its flash (of another install) without dropping the
    // link; then 4 in and 2 out from there.
    let script = entrance(
        "t-plaus-flash",
        "generic-u32",
        layout(ValueType::U32, WordOrder::HighFirst),
        (181, 170),
        &[
            (0.5, Some(183), None),
            (1.3, Some(18_802_684), Some(18_802_511)),
            (2.1, Some(18_802_688), None),
            (2.9, None, Some(18_802_513)),
        ],
    );
    let rig = Rig::new("plausibility-flash", script.hall_plan()).expect("a test directory");
    rig.run(LIMIT, async |rig| {
        let mut hall = start(rig, &script).await?;
        hall.play(rig, &script, (6, 2)).await?;
        let want = Want {
            entries: 6,
            exits: 2,
            doubt: "far_jump",
            reason: "restored from flash",
            stats: &[("implausible_steps", 1), ("resets", 0)],
        };
        settle(rig, &hall, &want, "counter_implausible").await
    })
    .await;
}
