//! The terminals' MQTT endpoint, black box and hostile: a real `hallgate run` with four
//! terminals (each its own login), a real mosquitto as the central broker, and test clients
//! speaking raw MQTT 3.1.1 (rumqttc's codec over a TCP socket, so every packet id, PUBACK and
//! SUBACK is seen as sent).
//!
//! - Nothing PUBACKed is lost: a 300-record backlog with ~31 KB photos, a 20 000-message burst
//!   of junk with good passages in it, a `kill -9` of the gateway in the middle of a burst.
//! - No login can cut the gateway off (client-id takeover, idle connections filling the slots)
//!   or read anything (`SUBSCRIBE #`), or publish as another terminal.
//!
//! Counts are read from the retained `state` at the central broker: a passage counted there
//! has been through decoding, the core and the commit.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use base64::Engine as _;
use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Packet, PubAck, Publish, SubAck, Subscribe,
    SubscribeReasonCode,
};
use rumqttc::mqttbytes::{Error as CodecError, QoS};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::hall::HallPlan;
use common::rig::Rig;

/// The hall's terminals: (id, profile, room, login).
const TERMINALS: [(&str, &str, &str, &str); 4] = [
    ("FC8200H12345678", "hikvision-acs", "lobby", "t-hik"),
    ("HV2-0A1B2C3D", "httpv2-record", "room-1", "t-hv2"),
    ("84E0F4200CA602FA", "uniubi-uface", "room-2", "t-uni"),
    ("84E0F4200CA602FB", "uniubi-uface", "lobby", "t-uni2"),
];
const HIK: usize = 0;
const UNI: usize = 2;
const UNI2: usize = 3;

/// Publishes a test client keeps awaiting their PUBACK: rumqttc's default, as a terminal
/// uploading its backlog would.
const CLIENT_WINDOW: usize = 100;

fn password(i: usize) -> String {
    format!("test-only-password-{i}-of-this-hall")
}

/// The terminal sections, with a 0600 password file per login.
fn terminal_sections(dir: &Path, port: u16) -> anyhow::Result<String> {
    let mut text = format!("\n[terminal_broker]\nlisten = \"127.0.0.1:{port}\"\n");
    for (i, (id, profile, room, login)) in TERMINALS.iter().enumerate() {
        let file = dir.join(format!("{login}.pass"));
        std::fs::write(&file, format!("{}\n", password(i)))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
        }
        text.push_str(&format!(
            "\n[[terminals]]\nid = \"{id}\"\nprofile = \"{profile}\"\nroom = \"{room}\"\n\
             username = \"{login}\"\npassword_file = \"{}\"\n",
            file.display()
        ));
    }
    Ok(text)
}

/// A hall with the four terminals on the gateway's endpoint at `port`, its central broker and
/// watcher started, the gateway running and listening.
async fn hall(name: &str, secrets: &Path) -> anyhow::Result<(Rig, u16)> {
    let mut plan = HallPlan::lobby_with_function_rooms(name, 2);
    let port = common::free_port();
    plan.extra_sections = terminal_sections(secrets, port)?;
    let rig = Rig::new(name, plan)?;
    Ok((rig, port))
}

async fn start(rig: &mut Rig) -> anyhow::Result<()> {
    rig.start_broker().await?;
    rig.start_gateway()?;
    rig.wait_for_gateway_log(
        "embedded terminal broker listening",
        Duration::from_secs(30),
    )
    .await
}

// -- A raw MQTT 3.1.1 client --------------------------------------------------------------

struct Raw {
    stream: TcpStream,
    buf: BytesMut,
}

/// A packet, the end of the connection, or nothing within the limit.
#[derive(Debug)]
enum Read {
    Packet(Packet),
    Closed,
    Quiet,
}

impl Raw {
    async fn open(port: u16) -> anyhow::Result<Raw> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .context("cannot connect to the terminal endpoint")?;
        stream.set_nodelay(true)?;
        Ok(Raw {
            stream,
            buf: BytesMut::with_capacity(4096),
        })
    }

    /// Connects with this login and client id; the CONNACK's code (or `None`: no CONNACK,
    /// the connection was closed).
    async fn connect(
        port: u16,
        user: &str,
        password: &str,
        client_id: &str,
        clean: bool,
    ) -> anyhow::Result<(Raw, Option<ConnectReturnCode>)> {
        let mut raw = Raw::open(port).await?;
        let mut connect = Connect::new(client_id);
        connect.keep_alive = 60;
        connect.clean_session = clean;
        connect.set_login(user, password);
        raw.send(Packet::Connect(connect)).await?;
        let code = match raw.read(Duration::from_secs(10)).await? {
            Read::Packet(Packet::ConnAck(ConnAck { code, .. })) => Some(code),
            Read::Packet(other) => bail!("the first answer was {other:?}, not CONNACK"),
            Read::Closed => None,
            Read::Quiet => bail!("no CONNACK within 10 s"),
        };
        Ok((raw, code))
    }

    /// Connects as terminal `i` with its own login; fails unless accepted.
    async fn terminal(port: u16, i: usize, client_id: &str) -> anyhow::Result<Raw> {
        let (raw, code) = Raw::connect(port, TERMINALS[i].3, &password(i), client_id, true).await?;
        ensure!(
            code == Some(ConnectReturnCode::Success),
            "terminal {i} was not admitted: {code:?}"
        );
        Ok(raw)
    }

    async fn send(&mut self, packet: Packet) -> anyhow::Result<()> {
        let mut out = BytesMut::new();
        packet
            .write(&mut out, usize::MAX)
            .map_err(|e| anyhow::anyhow!("cannot encode {e}"))?;
        self.stream.write_all(&out).await?;
        Ok(())
    }

    async fn read(&mut self, limit: Duration) -> anyhow::Result<Read> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match Packet::read(&mut self.buf, 1 << 20) {
                Ok(packet) => return Ok(Read::Packet(packet)),
                Err(CodecError::InsufficientBytes(n)) => self.buf.reserve(n),
                Err(e) => bail!("the endpoint sent something that is not MQTT: {e}"),
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Ok(Read::Quiet),
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(Read::Closed),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Publishes `messages` at QoS 1 with up to `window` awaiting their PUBACK, in order;
    /// returns which were acknowledged (all, unless the connection ended first).
    async fn publish_all(
        &mut self,
        topic: &str,
        messages: &[Vec<u8>],
        window: usize,
        limit: Duration,
    ) -> anyhow::Result<Vec<bool>> {
        let indices: Vec<usize> = (0..messages.len()).collect();
        self.publish_some(topic, messages, &indices, window, limit)
            .await
    }

    /// As [`Raw::publish_all`], for the messages at `indices` (packet id = index + 1).
    async fn publish_some(
        &mut self,
        topic: &str,
        messages: &[Vec<u8>],
        indices: &[usize],
        window: usize,
        limit: Duration,
    ) -> anyhow::Result<Vec<bool>> {
        self.publish_mixed(topic, messages, indices, window, limit, |_| false)
            .await
    }

    /// As [`Raw::publish_some`]; the messages for which `quick` holds go at QoS 0, fire and
    /// forget (counted as acknowledged once sent).
    async fn publish_mixed(
        &mut self,
        topic: &str,
        messages: &[Vec<u8>],
        indices: &[usize],
        window: usize,
        limit: Duration,
        quick: fn(usize) -> bool,
    ) -> anyhow::Result<Vec<bool>> {
        let deadline = Instant::now() + limit;
        let mut acked = vec![false; messages.len()];
        let mut in_flight = std::collections::VecDeque::new();
        let mut next = 0;
        loop {
            while in_flight.len() < window && next < indices.len() {
                let i = indices[next];
                if quick(i) {
                    let publish = Publish::new(topic, QoS::AtMostOnce, messages[i].clone());
                    if self.send(Packet::Publish(publish)).await.is_err() {
                        return Ok(acked);
                    }
                    acked[i] = true;
                    next += 1;
                    continue;
                }
                let pkid = pkid_of(i);
                let mut publish = Publish::new(topic, QoS::AtLeastOnce, messages[i].clone());
                publish.pkid = pkid;
                if self.send(Packet::Publish(publish)).await.is_err() {
                    return Ok(acked);
                }
                in_flight.push_back((pkid, i));
                next += 1;
            }
            if in_flight.is_empty() {
                return Ok(acked);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            ensure!(
                !left.is_zero(),
                "{} publishes still awaiting PUBACK after {limit:?}",
                in_flight.len()
            );
            match self.read(left).await? {
                Read::Packet(Packet::PubAck(PubAck { pkid })) => {
                    let Some(pos) = in_flight.iter().position(|(p, _)| *p == pkid) else {
                        bail!("a PUBACK for packet {pkid}, which is not in flight");
                    };
                    ensure!(
                        pos == 0,
                        "PUBACK {pkid} came before older publishes were acknowledged"
                    );
                    if let Some((_, i)) = in_flight.pop_front() {
                        acked[i] = true;
                    }
                }
                Read::Packet(other) => bail!("unexpected {other:?} while publishing"),
                Read::Closed => return Ok(acked),
                Read::Quiet => {}
            }
        }
    }
}

fn pkid_of(index: usize) -> u16 {
    (index % 65_000) as u16 + 1
}

// -- Payloads -----------------------------------------------------------------------------

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// A Uniubi recognition callback: a member passing, with `photo` as its base64 picture.
fn uniubi_passage(device: &str, record: u64, at_ms: i64, photo: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "deviceKey": device,
        "personId": format!("p-{}", record % 97),
        "recordId": record.to_string(),
        "time": at_ms.to_string(),
        "type": "face_0",
        "ip": "127.0.0.1",
        "recType": 1,
        "mask": "1",
        "temperature": "36.5",
        "temperatureState": "1",
        "temperatureUnit": "1",
        "imgBase64": photo,
    }))
    .expect("json")
}

fn uniubi_heartbeat(device: &str, at_ms: i64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "deviceKey": device, "time": at_ms.to_string(), "ip": "127.0.0.1",
        "personCount": 120, "faceCount": 118, "version": "5.1.14"
    }))
    .expect("json")
}

/// ~31 KB of base64, as a terminal's JPEG would be.
fn photo(seed: u64) -> String {
    let mut bytes = vec![0u8; 23_400];
    let mut x = seed | 1;
    for b in &mut bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    bytes[..3].copy_from_slice(&[0xFF, 0xD8, 0xFF]);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Record numbers no earlier run of the gateway has seen.
fn record_base() -> u64 {
    now_ms() as u64 * 1000
}

// -- Reading the state --------------------------------------------------------------------

fn terminal_stats(state: &Value, i: usize) -> Value {
    state["terminals"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["id"] == TERMINALS[i].0))
        .map(|t| t["stats"].clone())
        .unwrap_or(Value::Null)
}

fn room_passages(state: &Value, room: &str) -> u64 {
    state["rooms"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["id"] == room))
        .and_then(|r| r["passages_today"]["passages"].as_u64())
        .unwrap_or(0)
}

fn rejected(stats: &Value, reason: &str) -> u64 {
    stats["rejected"][reason].as_u64().unwrap_or(0)
}

/// Waits until `check` holds for the retained state; the last state otherwise.
async fn wait_for_state(
    rig: &mut Rig,
    limit: Duration,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + limit;
    loop {
        rig.ensure_alive()?;
        let state = rig.watcher()?.state();
        if let Some(state) = &state
            && check(state)
        {
            return Ok(state.clone());
        }
        if Instant::now() >= deadline {
            bail!(
                "{what}: not seen within {limit:?}; last state's terminals: {}, rooms: {}",
                state
                    .as_ref()
                    .map_or(Value::Null, |s| s["terminals"].clone()),
                state.as_ref().map_or(Value::Null, |s| s["rooms"].clone())
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

fn ensure_no_panic(rig: &mut Rig) -> anyhow::Result<()> {
    let log = rig.gateway()?.log_text();
    ensure!(
        !log.contains("panicked") && !log.contains("PoisonError"),
        "the gateway panicked"
    );
    Ok(())
}

// -- Scenarios ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_300_records_with_31_kb_photos_is_all_counted() {
    let secrets = tempfile::tempdir().expect("tempdir");
    let (rig, port) = hall("tb-backlog", secrets.path()).await.expect("hall");
    rig.run(Duration::from_secs(120), async |rig| {
        start(rig).await?;
        let base = record_base();
        let at = now_ms() - 600_000;
        let messages: Vec<Vec<u8>> = (0..300u64)
            .map(|i| uniubi_passage(TERMINALS[UNI].0, base + i, at + i as i64 * 1000, &photo(i)))
            .collect();
        ensure!(
            messages.iter().all(|m| m.len() > 31_000),
            "photos too small"
        );
        let mut t = Raw::terminal(port, UNI, "uface-backlog").await?;
        let acked = t
            .publish_all(
                "terminals/uniubi/84E0F4200CA602FA",
                &messages,
                CLIENT_WINDOW,
                Duration::from_secs(60),
            )
            .await?;
        let n = acked.iter().filter(|a| **a).count();
        ensure!(n == 300, "only {n} of 300 PUBACKed");
        wait_for_state(rig, Duration::from_secs(20), "300 passages counted", |s| {
            room_passages(s, "room-2") == 300
        })
        .await?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_20000_messages_loses_no_good_passage_and_intake_lives_on() {
    let secrets = tempfile::tempdir().expect("tempdir");
    let (rig, port) = hall("tb-burst", secrets.path()).await.expect("hall");
    rig.run(Duration::from_secs(180), async |rig| {
        start(rig).await?;
        let base = record_base();
        let at = now_ms() - 600_000;
        let device = TERMINALS[UNI].0;
        // Every 1000th a passage at QoS 1; the rest at QoS 0, as fast as the socket takes
        // them: heartbeats and 4 KB of junk (not JSON, wrong shapes).
        let pad = "x".repeat(4000);
        let messages: Vec<Vec<u8>> = (0..20_000u64)
            .map(|i| match i % 1000 {
                500 => uniubi_passage(device, base + i, at + i as i64, "/9j/4AAQ"),
                k if k % 3 == 0 => uniubi_heartbeat(device, at),
                k if k % 3 == 1 => format!("{{not json {i} {pad}").into_bytes(),
                _ => format!("{{\"deviceKey\":\"{device}\",\"personId\":7,\"x\":\"{pad}\"}}")
                    .into_bytes(),
            })
            .collect();
        let good = 20;
        let mut t = Raw::terminal(port, UNI, "uface-burst").await?;
        let all: Vec<usize> = (0..messages.len()).collect();
        let acked = t
            .publish_mixed(
                "terminals/uniubi/84E0F4200CA602FA",
                &messages,
                &all,
                CLIENT_WINDOW,
                Duration::from_secs(120),
                |i| i % 1000 != 500,
            )
            .await?;
        let n = acked.iter().filter(|a| **a).count();
        ensure!(
            n == messages.len(),
            "only {n} of {} PUBACKed",
            messages.len()
        );
        wait_for_state(
            rig,
            Duration::from_secs(20),
            "every good passage counted",
            |s| room_passages(s, "room-2") == good,
        )
        .await?;
        // Still alive: a later passage, on a new connection, is counted too.
        drop(t);
        let mut t = Raw::terminal(port, UNI, "uface-after").await?;
        let later = vec![uniubi_passage(
            device,
            base + 99_999,
            now_ms() - 60_000,
            "/9j/4AAQ",
        )];
        let acked = t
            .publish_all(
                "terminals/uniubi/84E0F4200CA602FA",
                &later,
                1,
                Duration::from_secs(20),
            )
            .await?;
        ensure!(
            acked == vec![true],
            "the later passage was not acknowledged"
        );
        wait_for_state(
            rig,
            Duration::from_secs(20),
            "the later passage counted",
            |s| room_passages(s, "room-2") == good + 1,
        )
        .await?;
        let pid = rig.gateway()?.pid().context("gateway pid")?;
        eprintln!(
            "peak RSS of the gateway after the 20 000-message burst: {} KiB",
            peak_rss_kib(pid).unwrap_or(0)
        );
        ensure_no_panic(rig)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_login_can_take_over_the_gateways_client_id_or_another_terminals() {
    let secrets = tempfile::tempdir().expect("tempdir");
    let (rig, port) = hall("tb-takeover", secrets.path()).await.expect("hall");
    rig.run(Duration::from_secs(60), async |rig| {
        start(rig).await?;
        let base = record_base();
        let at = now_ms() - 60_000;
        let device = TERMINALS[UNI].0;
        let topic = "terminals/uniubi/84E0F4200CA602FA";
        let mut victim = Raw::terminal(port, UNI, "uface-lobby").await?;
        // The Hikvision terminal's login, under the gateway's old internal id and the
        // victim's own client id.
        let mut intruders = Vec::new();
        for id in ["hallgate-terminal-ingest", "uface-lobby"] {
            let (raw, code) =
                Raw::connect(port, TERMINALS[HIK].3, &password(HIK), id, true).await?;
            intruders.push((id, raw, code));
        }
        let passages: Vec<Vec<u8>> = (0..5u64)
            .map(|i| uniubi_passage(device, base + i, at + i as i64, "/9j/4AAQ"))
            .collect();
        // The victim's own connection still works...
        let acked = victim
            .publish_all(topic, &passages[..3], 4, Duration::from_secs(20))
            .await?;
        ensure!(
            acked[..3].iter().all(|a| *a),
            "the terminal's connection was cut by another login's CONNECT: {acked:?}"
        );
        // ...and so does a fresh one.
        let mut again = Raw::terminal(port, UNI, "uface-lobby-2").await?;
        let acked = again
            .publish_some(topic, &passages, &[3, 4], 4, Duration::from_secs(20))
            .await?;
        ensure!(
            acked[3] && acked[4],
            "the second connection's passages were not acknowledged"
        );
        wait_for_state(
            rig,
            Duration::from_secs(20),
            "all five passages counted",
            |s| room_passages(s, "room-2") == 5,
        )
        .await?;
        // The same login with the same client id does take over (MQTT's rule): the old
        // connection is closed, the new one works.
        let _new = Raw::terminal(port, UNI, "uface-lobby").await?;
        loop {
            match victim.read(Duration::from_secs(10)).await? {
                Read::Closed => break,
                Read::Quiet => bail!("the replaced connection was left open"),
                Read::Packet(_) => {}
            }
        }
        for (id, _, code) in &intruders {
            ensure!(code.is_some(), "no CONNACK for {id}");
        }
        ensure_no_panic(rig)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_filling_the_slots_refuse_newcomers_and_panic_nothing() {
    let secrets = tempfile::tempdir().expect("tempdir");
    let (rig, port) = hall("tb-slots", secrets.path()).await.expect("hall");
    rig.run(Duration::from_secs(90), async |rig| {
        start(rig).await?;
        // Fifteen idle connections under one login (kept open), then that terminal retrying
        // with its own id again and again.
        let mut idle = Vec::new();
        let mut refused = 0;
        for i in 0..15 {
            let (raw, code) = Raw::connect(
                port,
                TERMINALS[HIK].3,
                &password(HIK),
                &format!("idle-{i}"),
                true,
            )
            .await?;
            if code != Some(ConnectReturnCode::Success) {
                refused += 1;
            }
            idle.push(raw);
        }
        for _ in 0..20 {
            let (_raw, code) = Raw::connect(
                port,
                TERMINALS[HIK].3,
                &password(HIK),
                "FC8200H12345678",
                true,
            )
            .await?;
            ensure!(code.is_some(), "a retry got no CONNACK at all");
        }
        // Other terminals are admitted and counted.
        let base = record_base();
        let at = now_ms() - 60_000;
        for (k, (i, client)) in [(UNI, "uface-a"), (UNI2, "uface-b")]
            .into_iter()
            .enumerate()
        {
            let mut t = Raw::terminal(port, i, client).await?;
            let msgs = vec![uniubi_passage(
                TERMINALS[i].0,
                base + k as u64,
                at,
                "/9j/4AAQ",
            )];
            let acked = t
                .publish_all(
                    &format!("terminals/uniubi/{}", TERMINALS[i].0),
                    &msgs,
                    1,
                    Duration::from_secs(20),
                )
                .await?;
            ensure!(acked == vec![true], "terminal {i} was not acknowledged");
        }
        wait_for_state(rig, Duration::from_secs(20), "both passages counted", |s| {
            room_passages(s, "room-2") == 1 && room_passages(s, "lobby") == 1
        })
        .await?;
        ensure_no_panic(rig)?;
        drop(idle);
        ensure!(
            refused > 0,
            "fifteen connections of one login were all admitted"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_login_subscribing_to_everything_receives_nothing() {
    let secrets = tempfile::tempdir().expect("tempdir");
    let (rig, port) = hall("tb-subscribe", secrets.path()).await.expect("hall");
    rig.run(Duration::from_secs(60), async |rig| {
        start(rig).await?;
        let mut spy = Raw::terminal(port, HIK, "spy").await?;
        spy.send(Packet::Subscribe(Subscribe::new("#", QoS::AtLeastOnce)))
            .await?;
        let suback = match spy.read(Duration::from_secs(10)).await? {
            Read::Packet(Packet::SubAck(SubAck { return_codes, .. })) => return_codes,
            other => bail!("no SUBACK: {other:?}"),
        };
        ensure!(
            suback == vec![SubscribeReasonCode::Failure],
            "SUBSCRIBE # was granted: {suback:?}"
        );
        // Another terminal's passage (a retained one too) with a name-like id and a photo.
        let base = record_base();
        let at = now_ms() - 60_000;
        let mut t = Raw::terminal(port, UNI, "uface").await?;
        let topic = "terminals/uniubi/84E0F4200CA602FA";
        let msgs = vec![uniubi_passage(TERMINALS[UNI].0, base, at, &photo(3))];
        ensure!(
            t.publish_all(topic, &msgs, 1, Duration::from_secs(20))
                .await?
                == vec![true]
        );
        let mut retained = Publish::new(
            topic,
            QoS::AtLeastOnce,
            uniubi_passage(TERMINALS[UNI].0, base + 1, at, &photo(4)),
        );
        retained.retain = true;
        retained.pkid = 9;
        t.send(Packet::Publish(retained)).await?;
        wait_for_state(rig, Duration::from_secs(20), "both passages counted", |s| {
            room_passages(s, "room-2") == 2
        })
        .await?;
        // A later subscriber gets no retained message either.
        let mut late = Raw::terminal(port, UNI2, "late").await?;
        late.send(Packet::Subscribe(Subscribe::new(
            "terminals/#",
            QoS::AtMostOnce,
        )))
        .await?;
        for reader in [&mut spy, &mut late] {
            loop {
                match reader.read(Duration::from_secs(2)).await? {
                    Read::Packet(Packet::Publish(p)) => {
                        bail!("a terminal login received a publish on {}", p.topic)
                    }
                    Read::Packet(Packet::SubAck(_)) => {}
                    Read::Packet(other) => bail!("unexpected {other:?}"),
                    Read::Closed | Read::Quiet => break,
                }
            }
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_cannot_publish_as_another_terminal() {
    let secrets = tempfile::tempdir().expect("tempdir");
    let (rig, port) = hall("tb-forgery", secrets.path()).await.expect("hall");
    rig.run(Duration::from_secs(60), async |rig| {
        start(rig).await?;
        let base = record_base();
        let at = now_ms() - 60_000;
        // The Hikvision login on the Uniubi terminals' topic, with one of their ids; the
        // first Uniubi login with the second one's device id in the payload, on its own
        // topic and on the other's.
        let forged = uniubi_passage(TERMINALS[UNI2].0, base, at, "/9j/4AAQ");
        let mut hik = Raw::terminal(port, HIK, "hik").await?;
        let acked = hik
            .publish_all(
                "terminals/uniubi/84E0F4200CA602FB",
                std::slice::from_ref(&forged),
                1,
                Duration::from_secs(20),
            )
            .await?;
        ensure!(
            acked == vec![true],
            "a refused message is still acknowledged"
        );
        let mut uni = Raw::terminal(port, UNI, "uni").await?;
        let both = vec![
            forged.clone(),
            uniubi_passage(TERMINALS[UNI2].0, base + 1, at, "x"),
        ];
        let acked = uni
            .publish_all(
                "terminals/uniubi/84E0F4200CA602FA",
                &both[..1],
                1,
                Duration::from_secs(20),
            )
            .await?;
        ensure!(acked == vec![true]);
        let acked = uni
            .publish_some(
                "terminals/uniubi/84E0F4200CA602FB",
                &both,
                &[1],
                1,
                Duration::from_secs(20),
            )
            .await?;
        ensure!(acked[1]);
        // A real one from the first Uniubi terminal, to know the others have been handled.
        let own = vec![uniubi_passage(TERMINALS[UNI].0, base + 2, at, "/9j/4AAQ")];
        ensure!(
            uni.publish_all(
                "terminals/uniubi/84E0F4200CA602FA",
                &own,
                1,
                Duration::from_secs(20)
            )
            .await?
                == vec![true]
        );
        let state = wait_for_state(
            rig,
            Duration::from_secs(20),
            "the real passage counted",
            |s| room_passages(s, "room-2") == 1,
        )
        .await?;
        ensure!(
            room_passages(&state, "lobby") == 0,
            "a forged passage was counted in the lobby"
        );
        let refused = rejected(&terminal_stats(&state, HIK), "wrong_topic")
            + rejected(&terminal_stats(&state, HIK), "forged")
            + rejected(&terminal_stats(&state, UNI), "forged");
        ensure!(
            refused == 3,
            "three forgeries, {refused} refused: {}",
            state["terminals"]
        );
        ensure!(
            terminal_stats(&state, UNI2)["passages"]
                .as_u64()
                .unwrap_or(0)
                == 0,
            "the forged terminal was credited"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pubacked_passage_survives_a_kill_9_and_is_counted_once() {
    let secrets = tempfile::tempdir().expect("tempdir");
    let (rig, port) = hall("tb-kill9", secrets.path()).await.expect("hall");
    rig.run(Duration::from_secs(150), async |rig| {
        start(rig).await?;
        let base = record_base();
        let at = now_ms() - 600_000;
        let total = 400usize;
        let messages: Vec<Vec<u8>> = (0..total as u64)
            .map(|i| uniubi_passage(TERMINALS[UNI].0, base + i, at + i as i64 * 100, &photo(i)))
            .collect();
        let topic = "terminals/uniubi/84E0F4200CA602FA";
        let mut t = Raw::terminal(port, UNI, "uface-kill").await?;
        // Publish on a task; kill the gateway once some are acknowledged.
        let publisher = tokio::spawn({
            let messages = messages.clone();
            async move {
                let acked = t
                    .publish_all(topic, &messages, CLIENT_WINDOW, Duration::from_secs(60))
                    .await;
                (t, acked)
            }
        });
        wait_for_state(rig, Duration::from_secs(30), "some passages counted", |s| {
            room_passages(s, "room-2") >= 40
        })
        .await?;
        rig.gateway()?.kill9()?;
        let (_t, acked) = publisher.await?;
        let mut acked = acked?;
        let before = acked.iter().filter(|a| **a).count();
        ensure!(
            before > 0,
            "the kill came too early to mean anything (nothing acknowledged)"
        );
        rig.gateway()?.spawn()?;
        // Re-send what was not acknowledged, reconnecting until all are.
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked.iter().any(|a| !*a) {
            ensure!(
                Instant::now() < deadline,
                "the re-sends were never all acknowledged"
            );
            rig.ensure_alive()?;
            let Ok((mut t, Some(ConnectReturnCode::Success))) =
                Raw::connect(port, TERMINALS[UNI].3, &password(UNI), "uface-kill", true).await
            else {
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            };
            let missing: Vec<usize> = (0..total).filter(|i| !acked[*i]).collect();
            let got = t
                .publish_some(topic, &messages, &missing, 32, Duration::from_secs(30))
                .await?;
            for i in missing {
                acked[i] |= got[i];
            }
        }
        let state = wait_for_state(rig, Duration::from_secs(20), "every passage counted", |s| {
            room_passages(s, "room-2") >= total as u64
        })
        .await?;
        ensure!(
            room_passages(&state, "room-2") == total as u64,
            "{} passages counted for {total} sent",
            room_passages(&state, "room-2")
        );
        let keys: BTreeSet<u64> = (0..total as u64).collect();
        ensure!(keys.len() == total);
        ensure_no_panic(rig)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_are_refused_slowed_and_logged_once_a_minute() {
    let secrets = tempfile::tempdir().expect("tempdir");
    let (rig, port) = hall("tb-guess", secrets.path()).await.expect("hall");
    rig.run(Duration::from_secs(60), async |rig| {
        start(rig).await?;
        let mut codes = Vec::new();
        for i in 0..8 {
            let (_raw, code) = Raw::connect(
                port,
                TERMINALS[UNI].3,
                &format!("guess-{i}-guess-guess"),
                "guesser",
                true,
            )
            .await?;
            codes.push(code);
        }
        // Five checked and refused, then the address is refused unheard (its password is
        // not even looked at: the right one is refused too).
        ensure!(
            codes[..5]
                .iter()
                .all(|c| *c == Some(ConnectReturnCode::BadUserNamePassword)),
            "{codes:?}"
        );
        ensure!(
            codes[5..]
                .iter()
                .all(|c| *c == Some(ConnectReturnCode::NotAuthorized)),
            "{codes:?}"
        );
        let (_raw, code) =
            Raw::connect(port, TERMINALS[UNI].3, &password(UNI), "uface", true).await?;
        ensure!(
            code == Some(ConnectReturnCode::NotAuthorized),
            "a shut-out address was heard: {code:?}"
        );
        let log = rig.gateway()?.log_text();
        let failed = log.matches("terminal login failed").count();
        ensure!(
            failed == 1,
            "{failed} log lines for 5 failed logins of one login"
        );
        ensure!(
            !log.lines().any(|l| l.contains("ERROR")),
            "failed logins logged as errors"
        );
        ensure_no_panic(rig)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packet_over_the_size_limit_is_counted_and_its_connection_closed() {
    let secrets = tempfile::tempdir().expect("tempdir");
    let (rig, port) = hall("tb-oversized", secrets.path()).await.expect("hall");
    rig.run(Duration::from_secs(60), async |rig| {
        start(rig).await?;
        // The default max_payload_bytes is 256 KiB; the endpoint reads packets up to twice that.
        let huge = vec![b'x'; 600 * 1024];
        let mut t = Raw::terminal(port, UNI, "uface-huge").await?;
        let acked = t
            .publish_all(
                "terminals/uniubi/84E0F4200CA602FA",
                &[huge],
                1,
                Duration::from_secs(20),
            )
            .await?;
        ensure!(acked == vec![false], "an oversized packet was acknowledged");
        // The terminal reconnects and carries on.
        let mut t = Raw::terminal(port, UNI, "uface-huge").await?;
        let ok = vec![uniubi_passage(
            TERMINALS[UNI].0,
            record_base(),
            now_ms() - 60_000,
            "x",
        )];
        ensure!(
            t.publish_all(
                "terminals/uniubi/84E0F4200CA602FA",
                &ok,
                1,
                Duration::from_secs(20)
            )
            .await?
                == vec![true]
        );
        let state = wait_for_state(rig, Duration::from_secs(20), "the passage counted", |s| {
            room_passages(s, "room-2") == 1
        })
        .await?;
        ensure!(
            rejected(&terminal_stats(&state, UNI), "oversized") == 1,
            "{}",
            state["terminals"]
        );
        ensure_no_panic(rig)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos_2_passage_is_received_once_and_completed() {
    let secrets = tempfile::tempdir().expect("tempdir");
    let (rig, port) = hall("tb-qos2", secrets.path()).await.expect("hall");
    rig.run(Duration::from_secs(60), async |rig| {
        start(rig).await?;
        let mut t = Raw::terminal(port, UNI, "uface-qos2").await?;
        let mut publish = Publish::new(
            "terminals/uniubi/84E0F4200CA602FA",
            QoS::ExactlyOnce,
            uniubi_passage(TERMINALS[UNI].0, record_base(), now_ms() - 60_000, "x"),
        );
        publish.pkid = 7;
        t.send(Packet::Publish(publish)).await?;
        match t.read(Duration::from_secs(20)).await? {
            Read::Packet(Packet::PubRec(rec)) if rec.pkid == 7 => {}
            other => bail!("no PUBREC: {other:?}"),
        }
        // PUBREC comes after the commit: the passage is already in the figures.
        wait_for_state(rig, Duration::from_secs(20), "the passage counted", |s| {
            room_passages(s, "room-2") == 1
        })
        .await?;
        t.send(Packet::PubRel(rumqttc::mqttbytes::v4::PubRel::new(7)))
            .await?;
        match t.read(Duration::from_secs(20)).await? {
            Read::Packet(Packet::PubComp(comp)) if comp.pkid == 7 => {}
            other => bail!("no PUBCOMP: {other:?}"),
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_broker_already_on_the_box_every_passage_survives_a_kill_9_once() {
    // The terminals' broker is a mosquitto of its own; the gateway subscribes to it.
    let local_dir = tempfile::tempdir().expect("tempdir");
    let mut local = common::broker::Mosquitto::start(local_dir.path(), "local")
        .await
        .expect("the terminals' mosquitto starts");
    let mut plan = HallPlan::lobby_with_function_rooms("tb-external", 2);
    plan.extra_sections = format!(
        "\n[terminal_broker]\nexternal = \"mqtt://127.0.0.1:{}\"\n\
         \n[[terminals]]\nid = \"{}\"\nprofile = \"uniubi-uface\"\nroom = \"room-2\"\n",
        local.port, TERMINALS[UNI].0
    );
    let rig = Rig::new("tb-external", plan).expect("test directory");
    let port = local.port;
    rig.run(Duration::from_secs(150), async |rig| {
        rig.start_broker().await?;
        rig.start_gateway()?;
        rig.wait_for_gateway_log(
            "subscribed to the terminals' local broker",
            Duration::from_secs(30),
        )
        .await?;
        let base = record_base();
        let at = now_ms() - 600_000;
        let total = 400usize;
        let messages: Vec<Vec<u8>> = (0..total as u64)
            .map(|i| uniubi_passage(TERMINALS[UNI].0, base + i, at + i as i64 * 100, &photo(i)))
            .collect();
        let topic = "terminals/uniubi/84E0F4200CA602FA";
        let (mut t, code) = Raw::connect(port, "terminal", "anything", "uface-ext", true).await?;
        ensure!(code == Some(ConnectReturnCode::Success), "{code:?}");
        // Half while the gateway runs, killed in the middle of it; the other half while it
        // is down: the broker keeps them for the gateway's session.
        let half = total / 2;
        let first: Vec<Vec<u8>> = messages[..half].to_vec();
        let publisher = tokio::spawn(async move {
            let acked = t
                .publish_all(topic, &first, CLIENT_WINDOW, Duration::from_secs(90))
                .await;
            (t, acked)
        });
        wait_for_state(rig, Duration::from_secs(30), "some passages counted", |s| {
            room_passages(s, "room-2") >= 40
        })
        .await?;
        rig.gateway()?.kill9()?;
        let (mut t, acked) = publisher.await?;
        ensure!(
            acked?.iter().all(|a| *a),
            "the terminals' broker did not take every publish"
        );
        let rest: Vec<usize> = (half..total).collect();
        let acked = t
            .publish_some(
                topic,
                &messages,
                &rest,
                CLIENT_WINDOW,
                Duration::from_secs(60),
            )
            .await?;
        ensure!(
            acked[half..].iter().all(|a| *a),
            "the terminals' broker did not take every publish"
        );
        rig.gateway()?.spawn()?;
        let state = wait_for_state(rig, Duration::from_secs(60), "every passage counted", |s| {
            room_passages(s, "room-2") >= total as u64
        })
        .await?;
        ensure!(
            room_passages(&state, "room-2") == total as u64,
            "{} passages counted for {total} sent",
            room_passages(&state, "room-2")
        );
        ensure_no_panic(rig)
    })
    .await;
    local.stop();
}
