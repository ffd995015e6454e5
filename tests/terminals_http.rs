//! Face-recognition terminals that push over HTTP, black box: `hallgate run` with a
//! `[terminal_http]` listener on loopback, `hallgate simulate-terminals` POSTing as Hikvision
//! (ISAPI multipart with pictures, the `mime_boundary`/`MIME_boundary` quirk), Uniubi (JSON and
//! form callbacks with a `?token=`) and ZKTeco (ADMS, naive times in Asia/Shanghai) terminals
//! do, a real mosquitto as the central broker, and the test itself as a hostile or odd client.
//!
//! - The figures in the retained `state` match the simulator's truth exactly, per room and for
//!   the hall; re-sends count once, bad records are refused and counted, pictures are dropped
//!   when vision is off and counted (faces) when it is on; nothing personal leaves the box.
//! - Nothing is lost or counted twice across a `kill -9` while the terminals push.
//! - Malformed and oversized bodies, 10 000 requests from unknown or unauthenticated senders,
//!   and slow clients holding connections are refused and counted, while the good terminals'
//!   figures stay exact and `/healthz` stays 200.
//! - The same seed through MQTT terminals and through HTTP terminals gives the same figures.
//! - A Hikvision people-counting camera's real-time totals move the room; its time-range
//!   windows and a reset do not make phantom people.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::hall::{HallPlan, loopback};
use common::http_terminals::{
    HttpLimits, HttpTerminal, RawRequest, connect_from, multipart, password_file, send, send_from,
    terminal_http_section, terminal_sections,
};
use common::process::Process;
use common::rig::Rig;
use common::terminal_figures::{
    compare, database_bytes, final_line, final_totals, find_all, jpeg_needles, num, read_truth,
    rejected, rejected_for, rejected_in, secrets, simulate_terminals, terminal, terminal_stat,
    wait_for_figures,
};
use common::{HALLGATE, free_port};

const HIK: &str = "FC8200H12345678";
const UNI: &str = "84E0F4200CA602FA";
const ZK: &str = "CJDE193560012";
const HIK_SECRET: &str = "hik-push-secret-4711";
const UNI_SECRET: &str = "uniubi-token-55190";

/// One scenario at a time in this file. Each push waits for the commit that holds its passage
/// (seconds: see the busy-terminal test), so a terminal delivers well under one record a
/// second; two scenarios side by side on a 2-core runner (two debug gateways, two simulators,
/// a flood) stretch that until the devices time out and the scenarios test the load instead
/// of what they are about.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SNAPSHOT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/images/astronaut_640x480.jpg"
);

/// One push terminal per HTTP vendor, one per room: Hikvision (source address and password),
/// Uniubi (token), ZKTeco (source address only: ADMS sends no credential).
fn push_terminals() -> Vec<HttpTerminal> {
    vec![
        HttpTerminal::push(HIK, "hikvision-isapi", "lobby")
            .address("127.0.0.1")
            .password(HIK_SECRET),
        HttpTerminal::push(UNI, "uniubi-uface-http", "room-1").password(UNI_SECRET),
        HttpTerminal::push(ZK, "zkteco-adms", "room-2").address("127.0.0.1"),
    ]
}

/// A lobby and two rooms, no people counters (the terminals are what is under test), the
/// listener on a free loopback port. Returns the rig and the listener's address.
fn http_rig(
    name: &str,
    limits: &HttpLimits,
    terminals: &[HttpTerminal],
    vision_queue: Option<usize>,
) -> anyhow::Result<(Rig, SocketAddr)> {
    let mut plan = HallPlan::lobby_with_function_rooms(&format!("t-{name}"), 2);
    plan.counters.clear();
    let mut rig = Rig::new(name, plan)?;
    let port = free_port();
    let mut extra = terminal_http_section(port, limits);
    if let Some(queue) = vision_queue {
        extra.push_str(&format!(
            "\n[vision]\nmodel = \"{}/models/centerface.onnx\"\nqueue = {queue}\n",
            env!("CARGO_MANIFEST_DIR")
        ));
    }
    extra.push_str(&terminal_sections(rig.dir(), terminals)?);
    rig.plan.extra_sections = extra;
    Ok((rig, loopback(port)))
}

/// Central broker, gateway, and the listener up.
async fn start(rig: &mut Rig) -> anyhow::Result<std::path::PathBuf> {
    rig.start_broker().await?;
    let config = rig.write_gateway_config()?;
    rig.start_gateway()?;
    rig.wait_for_gateway_log("terminal HTTP listener ready", Duration::from_secs(30))
        .await?;
    Ok(config)
}

/// `hallgate simulate-terminals` as a background process (for tests that act while it plays).
fn start_simulator(
    rig: &Rig,
    config: &Path,
    truth: &Path,
    args: &[&str],
) -> anyhow::Result<Process> {
    let mut all: Vec<std::ffi::OsString> = vec![
        "simulate-terminals".into(),
        "--config".into(),
        config.into(),
        "--truth".into(),
        truth.into(),
    ];
    all.extend(args.iter().map(Into::into));
    Process::start("simulate-terminals", rig.dir(), HALLGATE, all)
}

/// Waits for a background simulator to exit successfully.
async fn wait_for_simulator(sim: &mut Process, limit: Duration) -> anyhow::Result<()> {
    match sim.wait_exit(limit).await {
        Some(status) if status.success() => Ok(()),
        Some(status) => bail!(
            "simulate-terminals failed ({status}):\n{}",
            common::tail(&sim.log_text(), 30)
        ),
        None => bail!(
            "simulate-terminals did not finish within {limit:?}:\n{}",
            common::tail(&sim.log_text(), 30)
        ),
    }
}

fn hall_passages(state: &Value) -> u64 {
    num(&state["hall"]["passages_today"], "passages")
}

/// Waits until the state says `check` is true; returns that state.
async fn wait_for_state(
    rig: &mut Rig,
    what: &str,
    limit: Duration,
    check: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + limit;
    loop {
        rig.ensure_alive()?;
        if let Some(state) = rig.watcher()?.state()
            && check(&state)
        {
            return Ok(state);
        }
        if Instant::now() >= deadline {
            bail!(
                "the state did not show {what} within {limit:?}; last state: {}",
                rig.watcher()?
                    .state()
                    .map_or("none".into(), |s| s.to_string())
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// GET `path` from the status page.
async fn status_get(addr: SocketAddr, path: &str) -> anyhow::Result<common::http::Answer> {
    let request = RawRequest {
        method: "GET".into(),
        target: path.into(),
        headers: Vec::new(),
        body: Vec::new(),
    };
    send(addr, &request).await
}

// -------------------------------------------------------------------------------------------
// 1 + 4: figures per vendor push, and privacy.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_figures_match_the_ground_truth_per_vendor_and_nothing_personal_leaves_the_box() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let (rig, _listen) = http_rig(
        "http-figures",
        &HttpLimits::default(),
        &push_terminals(),
        None,
    )
    .expect("rig");
    rig.run(Duration::from_secs(170), async |rig| {
        let config = start(rig).await?;
        let truth_path = rig.dir().join("truth.jsonl");
        let lines = simulate_terminals(
            &config,
            &truth_path,
            &[
                "--seed",
                "41",
                "--passages",
                "80",
                "--rate-per-sec",
                "2",
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
                SNAPSHOT,
                "--drain-secs",
                "60",
                "--request-timeout-ms",
                "10000",
            ],
            Duration::from_secs(120),
        )?;
        let last = final_line(&lines)?.clone();
        let totals = final_totals(&lines)?.clone();
        let hall = &totals["hall"];
        ensure!(num(hall, "passages") >= 60, "too few passages: {totals}");
        ensure!(
            num(hall, "resends") > 0 && num(hall, "bad") > 0 && num(hall, "heartbeats") > 0,
            "the run needs re-sends, bad records and heartbeats: {totals}"
        );
        ensure!(
            num(hall, "fevers") > 0 && num(hall, "strangers") > 0 && num(hall, "mask_off") > 0,
            "{totals}"
        );
        ensure!(
            last["complete"] == Value::Bool(true),
            "the gateway did not take every record the terminals pushed (a success answer was \
             missing): {last}"
        );
        ensure!(
            num(&last, "redelivered") == 0,
            "records were sent again after a failed request on a healthy gateway: {last}"
        );
        for id in [HIK, UNI, ZK] {
            let report = &last["terminals"][id];
            ensure!(
                num(report, "acknowledged") >= 10 && num(report, "retries") == 0,
                "terminal {id} did not deliver its passages cleanly (a record had to be sent \
                 again after a failed request): {report}"
            );
        }
        // ZKTeco's times are naive Asia/Shanghai wall-clock times: read in another zone they
        // would be eight hours off and not today's.
        ensure!(
            num(&totals["rooms"]["room-2"], "passages") >= 10,
            "too few ZKTeco passages to mean anything: {totals}"
        );

        let state = wait_for_figures(rig, &totals, Duration::from_secs(30)).await?;
        ensure!(
            terminal_stat(&state, "duplicates") == num(hall, "resends"),
            "re-sends: the terminals sent {} again, the gateway dropped {} as duplicates: {}",
            num(hall, "resends"),
            terminal_stat(&state, "duplicates"),
            state["terminals"]
        );
        ensure!(
            rejected(&state) == num(hall, "bad"),
            "bad records: the terminals sent {}, the gateway refused {}: {} / {}",
            num(hall, "bad"),
            rejected(&state),
            state["terminals"],
            state["terminals_unattributed"]
        );
        ensure!(
            num(&state["hall"]["passages_today"], "people") == hall_passages(&state),
            "vision is off, so every picture is dropped and each passage is one person: {}",
            state["hall"]
        );

        // Privacy: the planted names, member ids and picture bytes appear nowhere.
        let mut needles: Vec<Vec<u8>> = secrets(&lines)
            .into_iter()
            .map(String::into_bytes)
            .collect();
        ensure!(
            needles.len() >= 20,
            "the truth names too few members to search for: {needles:?}"
        );
        let short: Vec<&Vec<u8>> = needles.iter().filter(|n| n.len() < 5).collect();
        ensure!(
            short.is_empty(),
            "needles too short to mean anything: {short:?}"
        );
        needles.extend(jpeg_needles(&std::fs::read(SNAPSHOT)?));

        let seen = rig.watcher()?.seen();
        let mut centre = Vec::new();
        for (topic, payload) in &seen.raw {
            centre.extend_from_slice(topic.as_bytes());
            centre.extend_from_slice(payload);
        }
        ensure!(!centre.is_empty(), "the centre received nothing");
        let leaked = find_all(&centre, &needles);
        ensure!(leaked.is_empty(), "reached the central broker: {leaked:?}");

        let status = rig.plan.status_address();
        for path in ["/", "/api/v1/state", "/metrics"] {
            let answer = status_get(status, path).await?;
            ensure!(answer.status == 200, "{path}: {}", answer.status);
            let leaked = find_all(answer.body.as_bytes(), &needles);
            ensure!(
                leaked.is_empty(),
                "shown on the status page {path}: {leaked:?}"
            );
        }

        rig.gateway()?.sigterm()?;
        rig.gateway()?.wait_exit(Duration::from_secs(15)).await;
        let log = std::fs::read(rig.gateway()?.log_path())?;
        let leaked = find_all(&log, &needles);
        ensure!(
            leaked.is_empty(),
            "written to the gateway's log: {leaked:?}"
        );
        let db = database_bytes(&rig.data_dir)?;
        ensure!(db.len() > 10_000, "the database is suspiciously small");
        let leaked = find_all(&db, &needles);
        ensure!(leaked.is_empty(), "stored in the SQLite files: {leaked:?}");
        Ok(())
    })
    .await;
}

// -------------------------------------------------------------------------------------------
// Pictures, the multipart quirk and time offsets, posted by the test with vision on.

/// A test post: boundary declared, boundary written, time offset, picture, people expected.
type Post<'a> = (&'a str, &'a str, &'a str, Option<&'a [u8]>, u64);

/// Three copies of the public-domain astronaut portrait side by side: three faces.
fn three_faces_jpeg() -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/images/astronaut.jpg"
    );
    let one = image::open(path).expect("fixture decodes").to_rgb8();
    let mut canvas = image::RgbImage::new(one.width() * 3, one.height());
    for i in 0..3 {
        image::imageops::replace(&mut canvas, &one, i64::from(one.width() * i), 0);
    }
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85)
        .encode_image(&canvas)
        .expect("encodes");
    jpeg
}

/// A Hikvision `AccessControllerEvent` (a verified face) as the push carries it.
fn hikvision_event(serial: u64, member: &str, date_time: &str) -> Vec<u8> {
    serde_json::json!({
        "ipAddress": "127.0.0.1",
        "portNo": 80,
        "protocol": "HTTP",
        "macAddress": "24:0f:9b:8c:41:aa",
        "channelID": 1,
        "dateTime": date_time,
        "activePostCount": 1,
        "eventType": "AccessControllerEvent",
        "eventState": "active",
        "eventDescription": "Access Controller Event",
        "AccessControllerEvent": {
            "deviceName": HIK,
            "majorEventType": 5,
            "subEventType": 75,
            "serialNo": serial,
            "employeeNoString": member,
            "currentEvent": true,
            "mask": "yes",
            "thermometryUnit": "celsius",
            "currTemperature": 36.6,
            "isAbnomalTemperature": false,
            "picturesNumber": 1
        }
    })
    .to_string()
    .into_bytes()
}

/// Now, written with `offset` (`+08:00`, `+08:30`, `-5:00`, …) as Hikvision firmware does.
fn now_with_offset(offset: &str) -> String {
    let (sign, rest) = offset.split_at(1);
    let (h, m) = rest.split_once(':').expect("offset is ±H:MM");
    let seconds = (h.parse::<i32>().expect("hours") * 3600 + m.parse::<i32>().expect("mm") * 60)
        * if sign == "-" { -1 } else { 1 };
    let tz_offset = jiff::tz::Offset::from_seconds(seconds).expect("offset in range");
    let local = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::fixed(tz_offset));
    format!("{}{offset}", local.datetime().strftime("%Y-%m-%dT%H:%M:%S"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pictures_are_counted_by_vision_the_boundary_quirk_and_odd_offsets_are_read_and_a_picture_over_the_bound_is_dropped()
 {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let limits = HttpLimits {
        max_picture_bytes: 400 * 1024,
        ..HttpLimits::default()
    };
    let terminals = vec![
        HttpTerminal::push(HIK, "hikvision-isapi", "lobby")
            .address("127.0.0.1")
            .password(HIK_SECRET),
    ];
    let (rig, listen) = http_rig("http-pictures", &limits, &terminals, Some(64)).expect("rig");
    let basic = terminals[0].basic().expect("a password");
    rig.run(Duration::from_secs(120), async |rig| {
        start(rig).await?;
        let faces = three_faces_jpeg();
        ensure!(faces.len() < limits.max_picture_bytes, "{}", faces.len());
        let mut oversized = faces.clone();
        oversized.resize(limits.max_picture_bytes + 1024, 0);
        let serial0 = u64::try_from(jiff::Timestamp::now().as_millisecond())?;
        // (boundary declared, boundary written, offset, picture, people expected)
        let posts: [Post<'_>; 5] = [
            ("7e13971310878", "7e13971310878", "+08:00", Some(&faces), 3),
            ("mime_boundary", "MIME_boundary", "+08:30", Some(&faces), 3),
            ("7e13971310878", "7e13971310878", "-5:00", None, 1),
            (
                "7e13971310878",
                "7e13971310878",
                "+05:45",
                Some(&oversized),
                1,
            ),
            ("mime_boundary", "MIME_boundary", "-05:00", Some(&faces), 3),
        ];
        let mut people = 0;
        for (i, (declared, written, offset, picture, expect)) in posts.iter().enumerate() {
            let event = hikvision_event(
                serial0 + i as u64,
                &format!("9{:06}", 300 + i),
                &now_with_offset(offset),
            );
            let mut parts: Vec<(&str, &str, &[u8])> =
                vec![("AccessControllerEvent", "application/json", &event)];
            if let Some(jpeg) = picture {
                parts.push(("Picture", "image/jpeg", jpeg));
            }
            let request = RawRequest::post(
                &format!("/terminals/{HIK}/ISAPI/Event/notification"),
                &format!("multipart/form-data; boundary={declared}"),
                multipart(written, &parts),
            )
            .header("Authorization", &basic);
            let answer = send(listen, &request).await?;
            ensure!(
                answer.status == 200,
                "post {i} ({declared}/{written}, {offset}) was answered {} {}",
                answer.status,
                answer.body
            );
            people += expect;
        }
        let want_passages = posts.len() as u64;
        let state = wait_for_state(
            rig,
            &format!("{want_passages} passages and {people} people in the lobby"),
            Duration::from_secs(60),
            |s| {
                let p = &s["rooms"][0]["passages_today"];
                num(p, "passages") == want_passages && num(p, "people") == people
            },
        )
        .await?;
        let stats = &terminal(&state, HIK).context("the terminal is in the state")?["stats"];
        ensure!(
            num(stats, "bad_snapshots") == 1 && rejected_in(stats) == 0,
            "the picture over the bound is dropped (one bad snapshot), nothing refused: {stats}"
        );
        Ok(())
    })
    .await;
}

// -------------------------------------------------------------------------------------------
// 2: kill -9 while the terminals push.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_while_terminals_push_loses_no_acknowledged_passage_and_counts_none_twice()
{
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let (rig, _listen) = http_rig(
        "http-kill9",
        &HttpLimits::default(),
        &push_terminals(),
        None,
    )
    .expect("rig");
    rig.run(Duration::from_secs(150), async |rig| {
        let config = start(rig).await?;
        let truth_path = rig.dir().join("truth.jsonl");
        let mut sim = start_simulator(
            rig,
            &config,
            &truth_path,
            &[
                "--seed",
                "7",
                "--passages",
                "60",
                "--rate-per-sec",
                "2",
                "--resend-share",
                "0.05",
                "--bad-share",
                "0",
                "--snapshot",
                SNAPSHOT,
                "--drain-secs",
                "60",
                "--retry-ms",
                "300",
                "--request-timeout-ms",
                "10000",
            ],
        )?;
        let before = wait_for_state(rig, "25 passages counted", Duration::from_secs(40), |s| {
            hall_passages(s) >= 25
        })
        .await?;
        rig.gateway()?.kill9()?;
        // The outage: the terminals' posts fail meanwhile and they keep their records.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        sim.ensure_running()
            .context("the simulator ended while the gateway was down")?;
        rig.gateway()?.spawn()?;
        wait_for_simulator(&mut sim, Duration::from_secs(90)).await?;
        let lines = read_truth(&truth_path)?;
        let last = final_line(&lines)?.clone();
        let totals = final_totals(&lines)?.clone();
        ensure!(
            last["complete"] == Value::Bool(true),
            "the terminals still held records at the end (the restarted gateway did not take \
             them): {last}"
        );
        let failed: u64 = [HIK, UNI, ZK]
            .iter()
            .map(|id| num(&last["terminals"][id], "failed_requests"))
            .sum();
        ensure!(
            failed > 0,
            "no push failed: the kill did not happen while the terminals pushed: {last}"
        );
        ensure!(
            num(&totals["hall"], "passages") > hall_passages(&before),
            "nothing was pushed after the restart: {totals}"
        );
        wait_for_figures(rig, &totals, Duration::from_secs(30)).await?;
        Ok(())
    })
    .await;
}

// -------------------------------------------------------------------------------------------
// 3: bad input.

/// Polls `/healthz` until stopped; returns how many polls and every one that was not 200.
fn watch_healthz(
    status: SocketAddr,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, Vec<String>)> {
    tokio::spawn(async move {
        let (mut polls, mut bad) = (0, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            polls += 1;
            match status_get(status, "/healthz").await {
                Ok(a) if a.status == 200 => {}
                Ok(a) => bad.push(format!("{} {}", a.status, a.body.trim())),
                Err(error) => bad.push(format!("{error:#}")),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (polls, bad)
    })
}

/// A client that opens a connection and never finishes its request: `partial_body` sends a
/// whole authenticated head promising 1000 bytes and then 10; otherwise half a request line.
/// Returns once the server has closed the connection (or after `limit`: then false).
async fn slow_client(
    listen: SocketAddr,
    partial_body: bool,
    basic: String,
    limit: Duration,
) -> anyhow::Result<bool> {
    let mut stream = connect_from(IpAddr::from([127, 0, 0, 1]), listen).await?;
    let bytes = if partial_body {
        format!(
            "POST /terminals/{HIK} HTTP/1.1\r\nHost: {listen}\r\nAuthorization: {basic}\r\n\
             Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 1000\r\n\r\n--x\r\nabcd"
        )
    } else {
        format!("POST /terminals/{HIK} HTT")
    };
    // A refused connection may already be closed: then the write fails, and that is the end.
    let _ = stream.write_all(bytes.as_bytes()).await;
    let mut sink = Vec::new();
    Ok(tokio::time::timeout(limit, stream.read_to_end(&mut sink))
        .await
        .is_ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_are_counted_while_good_terminals_keep_counting_and_healthz_stays_up() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    const MAX_CONNECTIONS: usize = 16;
    const PARTIAL_BODIES: usize = 4;
    const FLOOD: usize = 10_000;
    let limits = HttpLimits {
        max_body_bytes: 256 * 1024,
        max_picture_bytes: 128 * 1024,
        max_connections: MAX_CONNECTIONS,
        request_timeout_ms: 5000,
    };
    let terminals = push_terminals();
    let basic = terminals[0].basic().expect("a password");
    let (rig, listen) = http_rig("http-bad-input", &limits, &terminals, None).expect("rig");
    rig.run(Duration::from_secs(170), async |rig| {
        let config = start(rig).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let healthz = watch_healthz(rig.plan.status_address(), stop.clone());
        let truth_path = rig.dir().join("truth.jsonl");
        let mut sim = start_simulator(
            rig,
            &config,
            &truth_path,
            &[
                "--seed",
                "5",
                "--passages",
                "75",
                "--rate-per-sec",
                "2.5",
                "--resend-share",
                "0.05",
                "--bad-share",
                "0",
                "--snapshot",
                SNAPSHOT,
                "--drain-secs",
                "60",
                "--retry-ms",
                "300",
                // As patient as the listener itself (`request_timeout_ms`): each answer waits
                // for the commit that holds the passage (seconds, see the busy-terminal test),
                // and under the flood a 5 s device gives up and re-sends forever.
                "--request-timeout-ms",
                "10000",
            ],
        )?;
        wait_for_state(rig, "10 passages", Duration::from_secs(30), |s| {
            hall_passages(s) >= 10
        })
        .await?;

        // Slow clients, more than there are connection slots: the excess is refused at once,
        // the rest are cut off after the request timeout, and meanwhile the terminals (on their
        // own connections) go on counting.
        let p0 = hall_passages(&rig.watcher()?.state().context("a state")?);
        let mut slow = Vec::new();
        for i in 0..MAX_CONNECTIONS + 3 {
            slow.push(tokio::spawn(slow_client(
                listen,
                i < PARTIAL_BODIES,
                basic.clone(),
                Duration::from_secs(20),
            )));
            // In order, so the partial bodies get slots.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut progressed = false;
        let deadline = Instant::now() + Duration::from_secs(25);
        while !slow.iter().all(|h| h.is_finished()) {
            rig.ensure_alive()?;
            if let Some(s) = rig.watcher()?.state()
                && hall_passages(&s) > p0
            {
                progressed = true;
            }
            ensure!(
                Instant::now() < deadline,
                "slow clients still open after 25 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for (i, h) in slow.into_iter().enumerate() {
            ensure!(
                h.await??,
                "slow client {i} was never cut off by the gateway"
            );
        }
        ensure!(
            progressed,
            "no passage was counted while the slow clients held the connections"
        );

        // A malformed multipart body and a body one byte over the bound.
        let garbage = RawRequest::post(
            &format!("/terminals/{HIK}"),
            "multipart/form-data; boundary=abc",
            b"--abc\r\nContent-Disposition: form-data; name=\"Access".to_vec(),
        )
        .header("Authorization", &basic);
        let answer = send(listen, &garbage).await?;
        ensure!(
            answer.status == 400,
            "malformed multipart: {} {}",
            answer.status,
            answer.body
        );
        let big = RawRequest::post(
            &format!("/terminals/{HIK}"),
            "multipart/form-data; boundary=abc",
            vec![b'A'; limits.max_body_bytes + 1],
        )
        .header("Authorization", &basic);
        let answer = send(listen, &big).await?;
        ensure!(answer.status == 413, "oversized body: {}", answer.status);

        // The flood: unknown terminals, no credential, the right credential from the wrong
        // address; two at a time.
        let event = hikvision_event(1, "9000001", &now_with_offset("+08:00"));
        let body = multipart(
            "abc",
            &[("AccessControllerEvent", "application/json", &event)],
        );
        let flood = |worker: usize| {
            let (basic, body) = (basic.clone(), body.clone());
            tokio::spawn(async move {
                let mut wrong = Vec::new();
                for i in (worker..FLOOD).step_by(2) {
                    let (from, request, want) = match i % 3 {
                        0 => (
                            [127, 0, 0, 1],
                            RawRequest::post(
                                &format!("/terminals/NOT-A-TERMINAL-{i}"),
                                "multipart/form-data; boundary=abc",
                                body.clone(),
                            ),
                            404,
                        ),
                        1 => (
                            [127, 0, 0, 1],
                            RawRequest::post(
                                &format!("/terminals/{HIK}"),
                                "multipart/form-data; boundary=abc",
                                body.clone(),
                            ),
                            401,
                        ),
                        _ => (
                            [127, 0, 0, 2],
                            RawRequest::post(
                                &format!("/terminals/{HIK}"),
                                "multipart/form-data; boundary=abc",
                                body.clone(),
                            )
                            .header("Authorization", &basic),
                            403,
                        ),
                    };
                    match send_from(IpAddr::from(from), listen, &request).await {
                        Ok(a) if a.status == want => {}
                        Ok(a) => wrong.push(format!("#{i}: want {want}, got {}", a.status)),
                        Err(e) => wrong.push(format!("#{i}: {e:#}")),
                    }
                }
                wrong
            })
        };
        let (a, b) = (flood(0), flood(1));
        let mut wrong = a.await?;
        wrong.extend(b.await?);
        ensure!(
            wrong.is_empty(),
            "{} of the flood's requests were not answered as expected: {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(10)]
        );

        wait_for_simulator(&mut sim, Duration::from_secs(90)).await?;
        let lines = read_truth(&truth_path)?;
        let last = final_line(&lines)?.clone();
        ensure!(last["complete"] == Value::Bool(true), "{last}");
        let totals = final_totals(&lines)?.clone();
        let state = wait_for_figures(rig, &totals, Duration::from_secs(30)).await?;

        let per_kind = |k: usize| (0..FLOOD).filter(|i| i % 3 == k).count() as u64;
        let want_unknown = per_kind(0);
        let hik = &terminal(&state, HIK).context("Hikvision in the state")?["stats"];
        let unattributed = &state["terminals_unattributed"];
        let mut problems = Vec::new();
        let mut check = |what: &str, got: u64, want: u64| {
            if got != want {
                problems.push(format!("{what}: want {want}, got {got}"));
            }
        };
        check(
            "unknown terminal (unattributed)",
            rejected_for(unattributed, "unknown_terminal"),
            want_unknown,
        );
        check(
            "without credential",
            rejected_for(hik, "unauthorized"),
            per_kind(1),
        );
        check(
            "from the wrong address",
            rejected_for(hik, "wrong_address"),
            per_kind(2),
        );
        check(
            "body over the bound",
            rejected_for(hik, "body_too_large"),
            1,
        );
        check(
            "bodies never finished",
            rejected_for(hik, "body_timeout"),
            PARTIAL_BODIES as u64,
        );
        check(
            "the malformed multipart (any other reason)",
            rejected_in(hik)
                - rejected_for(hik, "unauthorized")
                - rejected_for(hik, "wrong_address")
                - rejected_for(hik, "body_too_large")
                - rejected_for(hik, "body_timeout"),
            1,
        );
        for id in [UNI, ZK] {
            let stats = &terminal(&state, id).context("in the state")?["stats"];
            check(&format!("refusals of {id}"), rejected_in(stats), 0);
        }
        ensure!(
            problems.is_empty(),
            "refusals not counted as expected:\n{}\nHikvision: {hik}\nunattributed: {unattributed}",
            problems.join("\n")
        );
        ensure!(
            rejected_for(unattributed, "too_many_connections") >= 3,
            "the slow clients beyond the connection slots were not refused and counted: \
             {unattributed}"
        );

        stop.store(true, Ordering::Relaxed);
        let (polls, bad) = healthz.await?;
        ensure!(polls >= 20, "/healthz was polled only {polls} times");
        ensure!(bad.is_empty(), "/healthz was not 200: {bad:?}");
        Ok(())
    })
    .await;
}

// -------------------------------------------------------------------------------------------
// 5: the same figures whichever transport.

/// The MQTT terminals of the same rooms, with logins on the embedded broker.
fn mqtt_sections(dir: &Path, port: u16) -> anyhow::Result<String> {
    let mut text =
        format!("\n[terminal_broker]\nlisten = \"127.0.0.1:{port}\"\nmax_payload_bytes = 65536\n");
    for (i, (id, profile, room)) in [
        ("FC8200H11111111", "hikvision-acs", "lobby"),
        ("FC8200H22222222", "hikvision-acs", "room-1"),
        ("84E0F4200CA60301", "uniubi-uface", "room-2"),
    ]
    .iter()
    .enumerate()
    {
        let file = password_file(
            dir,
            &format!("mqtt-{i}.pass"),
            &format!("mqtt-login-{i}-{id}"),
        )?;
        text.push_str(&format!(
            "\n[[terminals]]\nid = \"{id}\"\nprofile = \"{profile}\"\nroom = \"{room}\"\n\
             username = \"t{i}\"\npassword_file = \"{}\"\n",
            file.display()
        ));
    }
    Ok(text)
}

/// Plays `args` against a fresh rig; returns the truth's totals and the state that matched.
async fn play_once(
    rig: &mut Rig,
    ready_log: &str,
    args: &[&str],
) -> anyhow::Result<(Value, Value)> {
    rig.start_broker().await?;
    let config = rig.write_gateway_config()?;
    rig.start_gateway()?;
    rig.wait_for_gateway_log(ready_log, Duration::from_secs(30))
        .await?;
    let truth = rig.dir().join("truth.jsonl");
    let lines = simulate_terminals(&config, &truth, args, Duration::from_secs(100))?;
    let totals = final_totals(&lines)?.clone();
    let state = wait_for_figures(rig, &totals, Duration::from_secs(30)).await?;
    rig.gateway()?.stop(Duration::from_secs(10));
    Ok((totals, state))
}

/// The figures of the state a venue's staff read: per room and for the hall.
fn figures(state: &Value) -> Value {
    let rooms: Vec<Value> = state["rooms"]
        .as_array()
        .map(|rooms| {
            rooms
                .iter()
                .map(|r| serde_json::json!({"id": r["id"], "passages_today": r["passages_today"]}))
                .collect()
        })
        .unwrap_or_default();
    serde_json::json!({
        "rooms": rooms,
        "hall_passages_today": state["hall"]["passages_today"],
        "unique_members_today": state["hall"]["unique_members_today"],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_venue_gives_the_same_figures_over_mqtt_and_over_http() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let args = [
        "--seed",
        "23",
        "--passages",
        "60",
        "--rate-per-sec",
        "3",
        "--resend-share",
        "0.1",
        "--bad-share",
        "0.05",
        "--fever-share",
        "0.05",
        "--mask-off-share",
        "0.1",
    ];
    // Over MQTT: the embedded terminal broker.
    let mut plan = HallPlan::lobby_with_function_rooms("t-via-mqtt", 2);
    plan.counters.clear();
    let mut mqtt = Rig::new("via-mqtt", plan).expect("rig");
    mqtt.plan.extra_sections = mqtt_sections(mqtt.dir(), free_port()).expect("sections");
    let (tx, rx) = std::sync::mpsc::channel();
    mqtt.run(Duration::from_secs(90), async |rig| {
        let got = play_once(rig, "embedded terminal broker listening", &args).await?;
        tx.send(got).ok();
        Ok(())
    })
    .await;
    let (mqtt_totals, mqtt_state) = rx.recv().expect("the MQTT run's figures");

    // Over HTTP: the same rooms, Hikvision and Uniubi pushing (ZKTeco drops a member's
    // second punch within its duplicate period, so its script is not the MQTT one).
    let terminals = vec![
        HttpTerminal::push("FC8200H11111111", "hikvision-isapi", "lobby")
            .address("127.0.0.1")
            .password(HIK_SECRET),
        HttpTerminal::push("FC8200H22222222", "hikvision-isapi", "room-1").password(HIK_SECRET),
        HttpTerminal::push("84E0F4200CA60301", "uniubi-uface-http", "room-2").password(UNI_SECRET),
    ];
    let (http, _) = http_rig("via-http", &HttpLimits::default(), &terminals, None).expect("rig");
    http.run(Duration::from_secs(130), async |rig| {
        // Each answer waits for the commit (see the busy-terminal test): time to drain.
        let mut http_args = args.to_vec();
        http_args.extend(["--drain-secs", "60", "--request-timeout-ms", "10000"]);
        let (http_totals, http_state) =
            play_once(rig, "terminal HTTP listener ready", &http_args).await?;
        ensure!(
            num(&http_totals["hall"], "passages") >= 50,
            "too few passages: {http_totals}"
        );
        ensure!(
            http_totals["rooms"] == mqtt_totals["rooms"],
            "the simulator played different venues over the two transports, so the figures \
             cannot be compared: MQTT {} / HTTP {}",
            mqtt_totals["rooms"],
            http_totals["rooms"]
        );
        let (a, b) = (figures(&mqtt_state), figures(&http_state));
        ensure!(
            a == b,
            "the same venue gave different figures:\nover MQTT: {a}\nover HTTP: {b}"
        );
        ensure!(compare(&http_state, &mqtt_totals).is_ok());
        Ok(())
    })
    .await;
}

// -------------------------------------------------------------------------------------------
// 6: a people-counting camera.

const CAMERA: &str = "cam-entrance";
const CAMERA_SECRET: &str = "camera-upload-secret-9";

/// A camera post: method, enter, exit, and the lobby's (entries, exits, occupancy) after it.
type Step = (&'static str, u64, u64, (u64, u64, u64));

fn people_counting_xml(method: &str, enter: u64, exit: u64) -> String {
    let now = now_with_offset("+08:00");
    let timing = if method == "realTime" {
        format!("<RealTime><time>{now}</time></RealTime>")
    } else {
        format!("<TimeRange><startTime>{now}</startTime><endTime>{now}</endTime></TimeRange>")
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <EventNotificationAlert version=\"2.0\" xmlns=\"urn:psialliance-org\">\n\
         <ipAddress>127.0.0.1</ipAddress>\n<portNo>80</portNo>\n<protocol>HTTP</protocol>\n\
         <macAddress>44:19:b6:6d:24:85</macAddress>\n<channelID>1</channelID>\n\
         <dateTime>{now}</dateTime>\n<activePostCount>1</activePostCount>\n\
         <eventType>PeopleCounting</eventType>\n<eventState>active</eventState>\n\
         <eventDescription>peopleCounting</eventDescription>\n<channelName>Camera 01</channelName>\n\
         <peopleCounting>\n<statisticalMethods>{method}</statisticalMethods>\n{timing}\n\
         <enter>{enter}</enter>\n<exit>{exit}</exit>\n<pass>0</pass>\n</peopleCounting>\n\
         </EventNotificationAlert>\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counting_camera_moves_the_room_by_its_real_time_totals_and_not_by_windows_or_resets() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let mut plan = HallPlan::lobby_with_function_rooms("t-camera", 0);
    plan.counters.clear();
    let mut rig = Rig::new("http-camera", plan).expect("rig");
    let port = free_port();
    let file = password_file(rig.dir(), "camera.pass", CAMERA_SECRET).expect("password");
    rig.plan.extra_sections = format!(
        "{}\n[[doors]]\nid = \"entrance\"\nfrom = \"outside\"\nto = \"lobby\"\n\
         \n[[counters]]\nid = \"{CAMERA}\"\ndoor = \"entrance\"\nprofile = \"hikvision-people-counting\"\n\
         transport = \"http_push\"\naddress = \"127.0.0.1\"\npassword_file = \"{}\"\n",
        terminal_http_section(port, &HttpLimits::default()),
        file.display()
    );
    let listen = loopback(port);
    let camera = HttpTerminal::push(CAMERA, "", "").password(CAMERA_SECRET);
    let basic = camera.basic().expect("a password");
    rig.run(Duration::from_secs(90), async |rig| {
        start(rig).await?;
        let post = |xml: String, auth: bool| {
            let mut request =
                RawRequest::post(&format!("/counters/{CAMERA}"), "application/xml", xml);
            if auth {
                request = request.header("Authorization", &basic);
            }
            async move { send(listen, &request).await }
        };
        let lobby = |s: &Value| -> (u64, u64, u64) {
            let r = &s["rooms"][0];
            (
                num(r, "entries_today"),
                num(r, "exits_today"),
                num(r, "occupancy"),
            )
        };
        // (kind, enter, exit, (entries, exits, occupancy) expected after it)
        let steps: [Step; 6] = [
            // The first reading is the baseline: what the camera counted before is not today's.
            ("realTime", 3, 1, (0, 0, 0)),
            ("realTime", 10, 2, (7, 1, 6)),
            // A window's counts are not a running total: nothing moves.
            ("timeRange", 50, 7, (7, 1, 6)),
            ("realTime", 12, 4, (9, 3, 6)),
            // The camera was reset: its totals start again; only what it counted since is new.
            ("realTime", 1, 0, (10, 3, 7)),
            ("realTime", 4, 2, (13, 5, 8)),
        ];
        for (i, (kind, enter, exit, want)) in steps.iter().enumerate() {
            let answer = post(people_counting_xml(kind, *enter, *exit), true).await?;
            ensure!(
                answer.status == 200,
                "step {i} ({kind} {enter}/{exit}) answered {} {}",
                answer.status,
                answer.body
            );
            if i == 0 {
                wait_for_state(rig, "the camera online", Duration::from_secs(20), |s| {
                    s["devices"]
                        .as_array()
                        .and_then(|d| d.iter().find(|d| d["id"] == CAMERA))
                        .is_some_and(|d| d["online"] == Value::Bool(true))
                })
                .await?;
            }
            // Wait for this step's figures, and when they equal the previous ones (the window),
            // confirm with the next step that they were not moved in between.
            wait_for_state(
                rig,
                &format!("step {i}: lobby entries/exits/occupancy {want:?}"),
                Duration::from_secs(20),
                |s| lobby(s) == *want,
            )
            .await?;
        }
        // Without the credential: refused, nothing moves.
        let answer = post(people_counting_xml("realTime", 40, 2), false).await?;
        ensure!(
            answer.status == 401 || answer.status == 403,
            "a post without the credential was answered {}",
            answer.status
        );
        let answer = post(people_counting_xml("realTime", 5, 2), true).await?;
        ensure!(answer.status == 200, "{}", answer.status);
        let state = wait_for_state(rig, "lobby (14, 5, 9)", Duration::from_secs(20), |s| {
            lobby(s) == (14, 5, 9)
        })
        .await?;
        let cam = state["devices"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["id"] == CAMERA))
            .context("the camera in the state")?;
        ensure!(
            num(&cam["stats"], "link_errors") >= 1,
            "the refused post was not counted: {cam}"
        );
        Ok(())
    })
    .await;
}

// -------------------------------------------------------------------------------------------
// Throughput: a terminal sends one record per request and waits for each answer.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_entrance_terminal_pushing_two_passages_a_second_is_answered_without_a_growing_backlog()
 {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let terminals = vec![
        HttpTerminal::push(HIK, "hikvision-isapi", "lobby")
            .address("127.0.0.1")
            .password(HIK_SECRET),
    ];
    let (rig, _listen) =
        http_rig("http-busy", &HttpLimits::default(), &terminals, None).expect("rig");
    rig.run(Duration::from_secs(90), async |rig| {
        let config = start(rig).await?;
        let truth = rig.dir().join("truth.jsonl");
        // A queue at opening time: one person every half second for 20 s. The device waits for
        // each answer before it sends the next record (10 s, the listener's own bound).
        let lines = simulate_terminals(
            &config,
            &truth,
            &[
                "--seed",
                "11",
                "--passages",
                "40",
                "--rate-per-sec",
                "2",
                "--resend-share",
                "0",
                "--bad-share",
                "0",
                "--request-timeout-ms",
                "10000",
                "--drain-secs",
                "10",
            ],
            Duration::from_secs(60),
        )?;
        let last = final_line(&lines)?.clone();
        let report = &last["terminals"][HIK];
        ensure!(
            last["complete"] == Value::Bool(true) && num(report, "retries") == 0,
            "the terminal could not deliver two passages a second: {} of {} still unanswered 10 s \
             after the last one ({} requests, {} failed); each answer waits for the commit that \
             holds the passage: {report}",
            num(report, "unacknowledged"),
            num(report, "acknowledged") + num(report, "unacknowledged"),
            num(report, "requests"),
            num(report, "failed_requests"),
        );
        wait_for_figures(rig, final_totals(&lines)?, Duration::from_secs(30)).await?;
        Ok(())
    })
    .await;
}

// -------------------------------------------------------------------------------------------
// ZKTeco's naive times.

/// Wall-clock time in Asia/Shanghai `hours_ago` hours ago, as ZKTeco writes it (no zone).
fn shanghai_naive(hours_ago: i64) -> String {
    let tz = jiff::tz::TimeZone::get(common::hall::TIME_ZONE).expect("zone");
    jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::from_hours(hours_ago))
        .expect("in range")
        .to_zoned(tz)
        .datetime()
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zkteco_naive_times_are_read_in_the_hall_s_time_zone() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let terminals = vec![HttpTerminal::push(ZK, "zkteco-adms", "room-2").address("127.0.0.1")];
    let (rig, listen) =
        http_rig("http-zkteco", &HttpLimits::default(), &terminals, None).expect("rig");
    rig.run(Duration::from_secs(60), async |rig| {
        start(rig).await?;
        let handshake = RawRequest {
            method: "GET".into(),
            target: format!("/iclock/cdata?SN={ZK}&options=all&pushver=2.4.1"),
            headers: Vec::new(),
            body: Vec::new(),
        };
        let answer = send(listen, &handshake).await?;
        ensure!(
            answer.status == 200 && answer.body.contains("GET OPTION FROM"),
            "handshake: {} {}",
            answer.status,
            answer.body
        );
        // Now, and 14 hours ago: the hall closed about 12 hours ago (the harness puts the
        // closing time 12 hours from now), so the second belongs to the day before. Read as
        // UTC it would be 6 hours ago, today; the first would be 8 hours ahead.
        let body = format!(
            "9100001\t{}\t0\t15\t0\t0\t0\t1\t36.5\n9100002\t{}\t0\t15\t0\t0\t0\t1\t36.4\n\
             9100003\tyesterday\t0\t15\t0\t0\t0\t1\t36.4\n",
            shanghai_naive(0),
            shanghai_naive(14)
        );
        let post = RawRequest::post(
            &format!("/iclock/cdata?SN={ZK}&table=ATTLOG&Stamp=9999"),
            "text/plain",
            body,
        );
        let answer = send(listen, &post).await?;
        ensure!(
            answer.status == 200 && answer.body.trim() == "OK: 2",
            "ATTLOG: {} {:?}",
            answer.status,
            answer.body
        );
        let state = wait_for_state(
            rig,
            "one of the two ZKTeco records today and one of the day before",
            Duration::from_secs(20),
            |s| {
                terminal(s, ZK).is_some_and(|t| {
                    num(&t["stats"], "earlier_day") + num(&t["stats"], "passages") >= 2
                })
            },
        )
        .await?;
        let stats = &terminal(&state, ZK).context("in the state")?["stats"];
        ensure!(
            num(stats, "earlier_day") == 1
                && num(&state["rooms"][2]["passages_today"], "passages") == 1,
            "the naive times were not read in Asia/Shanghai: {stats} / {}",
            state["rooms"][2]
        );
        ensure!(
            rejected_for(stats, "bad_time") == 1,
            "the line without a time was not refused and counted: {stats}"
        );
        Ok(())
    })
    .await;
}
