//! A city of gateways losing their broker together: a hundred uplinks in one process, each
//! with its own outbox (a real SQLite file) and its own MQTT connection to one real mosquitto.
//!
//! The broker stops, every uplink loses it in the same instant, messages pile up in every
//! outbox, and the broker comes back empty. Without jitter all hundred would knock in the
//! same instant, and again at every backoff step; with it the attempts spread out. The test
//! reports the peak connection attempts per second, requires it to stay well below the fleet
//! size, and requires every outbox to drain completely — each message delivered, by `msg_id`.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use hallgate::config::{self, Config, Overrides};
use hallgate::outbox::{Batch, Outbox, OutboxOptions};
use hallgate::uplink::{UplinkDriver, UplinkStatus, payload};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use common::broker::Mosquitto;

const FLEET: usize = 100;
const BEFORE: u32 = 20;
const DURING: u32 = 20;

struct Member {
    config: Config,
    outbox: Outbox,
    status: Arc<UplinkStatus>,
    _state: watch::Sender<Option<hallgate::outbox::OutMessage>>,
}

fn hall_config(i: usize, port: u16, data_dir: &std::path::Path) -> anyhow::Result<Config> {
    let text = format!(
        r#"
[hall]
id = "f{i:03}"
name = "Fleet hall {i}"
district = "fleet"

[uplink]
broker = "mqtt://127.0.0.1:{port}"
keep_alive_secs = 5
max_reconnect_backoff_ms = 8000
max_replay_msgs_per_sec = 50

[storage]
data_dir = "{dir}"

[[rooms]]
id = "lobby"
capacity = 50
"#,
        dir = data_dir.display()
    );
    config::parse(&text, data_dir, &Overrides::default())
        .map_err(|problems| anyhow::anyhow!("fleet config is invalid: {problems:?}"))
}

/// `count` minute bins for `config`, starting at minute `from`.
fn minutes(config: &Config, from: u32, count: u32) -> Vec<hallgate::outbox::OutMessage> {
    (from..from + count)
        .map(|m| {
            let start = jiff::Timestamp::from_second(1_700_000_040 + 60 * i64::from(m))
                .expect("a valid time");
            let agg = hallgate::occupancy::MinuteAggregate {
                start,
                end: start + jiff::SignedDuration::from_secs(60),
                rooms: vec![hallgate::occupancy::MinuteRoom {
                    id: "lobby".into(),
                    entries: u64::from(m),
                    exits: 0,
                    occupancy_mean: 1.0,
                    occupancy_peak: 1,
                    passages: Default::default(),
                }],
            };
            payload::minute_message(config, &agg, true)
        })
        .collect()
}

/// Every `msg_id` the centre received.
async fn centre(port: u16) -> anyhow::Result<(Arc<Mutex<BTreeSet<String>>>, AsyncClient)> {
    let mut options = MqttOptions::new("fleet-centre", "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    options.set_clean_session(true);
    // The centre's side of the test, not the gateway's own code.
    #[allow(clippy::disallowed_methods)]
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let subscribed = Arc::new(Mutex::new(false));
    {
        let (seen, subscribed, client) = (seen.clone(), subscribed.clone(), client.clone());
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client.try_subscribe("hallgate/fleet/+/agg/#", QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        *subscribed.lock().expect("not poisoned") = true;
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p.payload)
                            && let Some(id) = v.get("msg_id").and_then(|i| i.as_str())
                        {
                            seen.lock().expect("not poisoned").insert(id.to_string());
                        }
                    }
                    Ok(_) => {}
                    Err(_) => {
                        *subscribed.lock().expect("not poisoned") = false;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !*subscribed.lock().expect("not poisoned") {
        ensure!(Instant::now() < deadline, "the centre could not subscribe");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((seen, client))
}

async fn wait_drained(
    fleet: &[Member],
    seen: &Mutex<BTreeSet<String>>,
    want: usize,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let pending: u64 = fleet.iter().map(|m| m.outbox.pending()).sum();
        let got = seen.lock().expect("not poisoned").len();
        if pending == 0 && got >= want {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            bail!("after {limit:?}: {pending} messages still pending, centre has {got}/{want}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_gateways_lose_their_broker_together_reconnect_spread_out_and_drain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outcome = tokio::time::timeout(Duration::from_secs(240), async {
        // The centre listens on an observer that the broker bridges to: its own reconnect
        // after the broker's restart cannot race the gateways' first publishes (broker.rs).
        let observer = Mosquitto::start(dir.path(), "observer").await?;
        let mut broker =
            Mosquitto::start_bridged(dir.path(), "mosquitto", "hallgate", observer.port).await?;
        let (seen, _centre) = centre(observer.port).await?;
        let stop = CancellationToken::new();
        let mut fleet = Vec::new();
        let mut tasks = Vec::new();
        for i in 0..FLEET {
            let data = dir.path().join(format!("hall-{i:03}"));
            let config = hall_config(i, broker.port, &data)?;
            let (outbox, _) = Outbox::open(
                &data,
                OutboxOptions::from_config(&config.storage, Some(payload::roll_up)),
            )
            .context("outbox")?;
            outbox
                .commit(Batch {
                    messages: minutes(&config, 0, BEFORE),
                    ..Batch::default()
                })
                .await
                .map_err(|e| e.0)?;
            let status = Arc::new(UplinkStatus::default());
            let (state_tx, state_rx) = watch::channel(None);
            tasks.push(tokio::spawn(
                UplinkDriver::new(config.clone(), outbox.clone(), state_rx, status.clone())
                    .run(stop.clone(), Duration::from_secs(1)),
            ));
            fleet.push(Member {
                config,
                outbox,
                status,
                _state: state_tx,
            });
        }
        let first = wait_drained(&fleet, &seen, FLEET * BEFORE as usize, Duration::from_secs(60))
            .await
            .context("first drain")?;
        eprintln!("fleet: {FLEET} gateways connected and drained {BEFORE} messages each in {first:?}");

        // The broker goes; every gateway loses it at once, and keeps producing.
        broker.stop();
        let attempts = || -> u64 {
            fleet
                .iter()
                .map(|m| m.status.connect_attempts.load(Ordering::Relaxed))
                .sum()
        };
        let mut samples = vec![(Instant::now(), attempts())];
        for m in &fleet {
            m.outbox
                .commit(Batch {
                    messages: minutes(&m.config, BEFORE, DURING),
                    ..Batch::default()
                })
                .await
                .map_err(|e| e.0)?;
        }
        let outage_ends = Instant::now() + Duration::from_secs(15);
        while Instant::now() < outage_ends {
            tokio::time::sleep(Duration::from_millis(50)).await;
            samples.push((Instant::now(), attempts()));
        }
        broker.restart().await?;
        let want = FLEET * (BEFORE + DURING) as usize;
        let drain_started = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            samples.push((Instant::now(), attempts()));
            let pending: u64 = fleet.iter().map(|m| m.outbox.pending()).sum();
            let got = seen.lock().expect("not poisoned").len();
            if pending == 0 && got >= want {
                break;
            }
            ensure!(
                drain_started.elapsed() < Duration::from_secs(90),
                "the fleet did not drain within 90 s of the broker's return: {pending} pending, centre has {got}/{want}"
            );
        }
        let drained = drain_started.elapsed();
        // Peak attempts in any one-second window, from the 50 ms samples.
        let mut peak = 0;
        for (i, (t0, a0)) in samples.iter().enumerate() {
            if let Some((_, a1)) = samples[i..]
                .iter()
                .take_while(|(t, _)| t.duration_since(*t0) <= Duration::from_secs(1))
                .last()
            {
                peak = peak.max(a1 - a0);
            }
        }
        let total = attempts() - samples[0].1;
        eprintln!(
            "fleet: broker out 15 s; {total} connection attempts in all, peak {peak} in one second \
             ({FLEET} gateways); all {want} messages delivered {drained:?} after the broker returned"
        );
        // In step, the whole fleet would knock within the same millisecond, again and again
        // (a peak of 100); spread by the jitter the peak is ~40. The bound leaves room for a
        // stall of this shared machine bunching the timers that fire after it.
        ensure!(
            peak < (FLEET as u64) * 8 / 10,
            "{peak} of {FLEET} gateways tried to connect within one second: not spread out"
        );
        let connected = fleet
            .iter()
            .filter(|m| m.status.connected.load(Ordering::Relaxed))
            .count();
        ensure!(connected == FLEET, "only {connected}/{FLEET} reconnected");
        stop.cancel();
        for t in tasks {
            let _ = t.await;
        }
        for m in &fleet {
            m.outbox.close().await;
        }
        Ok::<_, anyhow::Error>(())
    })
    .await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(error)) => panic!("fleet test failed: {error:#}"),
        Err(_) => panic!("fleet test hung for 240 s"),
    }
}
