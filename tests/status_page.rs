//! The status page, its API, `/metrics` and `hallgate status`, against the real gateway with
//! simulated counters, read by real clients: Debian's chromium (headless) renders the page,
//! the Python `prometheus_client` parser reads `/metrics`, and a plain socket client
//! (`common::http`) checks the access token.
//!
//! The browser must show each room's live occupancy — the same figures `/api/v1/state` gives
//! at about the same moment — and the dead fire-exit counter offline; it also saves a phone-
//! sized screenshot to `target/status-page.png` (the one in `docs/` is a copy of one).
//!
//! Chromium and prometheus_client are installed by `scripts/test.sh`. Without them a test
//! skips with a loud message on a developer machine, and fails under `CI=true`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::Value;

use common::dead_peers::RefusingPort;
use common::hall::HallPlan;
use common::http::{self, Answer};
use common::process::Traffic;
use common::rig::Rig;
use common::{Finished, run_to_completion};

/// The fire exit whose counter refuses every connection.
const DEAD: &str = "pc-fire";

/// A token for the tests; never printed by the gateway.
const TOKEN: &str = "status-test-token-0123456789";

fn traffic(seed: u64) -> Traffic {
    Traffic {
        seed,
        warmup: Duration::from_secs(8),
        duration: Duration::from_secs(25),
        arrivals_per_min: 90.0,
        // People linger, so rooms are occupied when the traffic stops.
        mean_dwell_secs: 120.0,
    }
}

/// Whether the tests run under CI, where a missing tool is a failure, not a skip.
fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Whether the test can go on: false (after a loud message) when `what` is missing on a
/// developer machine; under CI a missing tool fails the test.
fn tool_present(present: bool, what: &str, install: &str) -> bool {
    if present {
        return true;
    }
    assert!(
        !under_ci(),
        "{what} is missing and CI is set: install it ({install}); scripts/test.sh does"
    );
    eprintln!(
        "\n!!!!! SKIPPED: {what} is not installed, so this test proves nothing here. \
         Install it ({install}) or run `bash scripts/test.sh`, which does. !!!!!\n"
    );
    false
}

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        })
    })
}

fn prometheus_client_present() -> bool {
    Command::new("python3")
        .args(["-c", "import prometheus_client.parser"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A headless chromium run with a fresh profile, as the tests use it.
fn chromium_command(chromium: &Path, profile: &Path) -> Command {
    let mut command = Command::new(chromium);
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ]);
    command.arg(format!("--user-data-dir={}", profile.display()));
    command
}

/// The page as chromium rendered it.
fn dump_dom(chromium: &Path, dir: &Path, url: &str, n: u32) -> anyhow::Result<String> {
    let profile = tempfile::tempdir_in(dir).context("a chromium profile directory")?;
    let mut command = chromium_command(chromium, profile.path());
    command.arg("--dump-dom").arg(url);
    let out = run_to_completion(
        command,
        dir,
        &format!("chromium-dom-{n}"),
        Duration::from_secs(60),
    )?;
    ensure!(
        out.status.success() && out.stdout.contains("</html>"),
        "chromium --dump-dom {url} failed ({}):\n{}",
        out.status,
        common::tail(&out.stderr, 20)
    );
    Ok(out.stdout)
}

/// Where cargo puts build output: `target/` (or `CARGO_TARGET_DIR`).
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// The element opening with the tag that has `attr="value"`, up to the next card or section.
fn card<'a>(dom: &'a str, attr: &str, value: &str) -> Option<&'a str> {
    let needle = format!("{attr}=\"{value}\"");
    let at = dom.find(&needle)?;
    let start = dom[..at].rfind('<')?;
    let rest = &dom[start..];
    let end = rest[1..]
        .find("<div class=\"card")
        .map(|i| i + 1)
        .into_iter()
        .chain(rest.find("</section>"))
        .min()
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// The value of `attr` in the first tag of `element`.
fn attribute<'a>(element: &'a str, attr: &str) -> Option<&'a str> {
    let tag = &element[..element.find('>')?];
    let at = tag.find(&format!(" {attr}=\""))? + attr.len() + 3;
    let len = tag[at..].find('"')?;
    Some(&tag[at..at + len])
}

/// Each room's occupancy as the rendered page shows it: the `data-occupancy` of its card,
/// which must agree with the big "N of CAPACITY" figure staff read.
fn page_rooms(dom: &str, rooms: &[(String, u64)]) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for (id, capacity) in rooms {
        let element = card(dom, "data-room", id)
            .with_context(|| format!("the page shows no card for room {id}:\n{dom}"))?;
        let occupancy: u64 = attribute(element, "data-occupancy")
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("room {id}'s card has no data-occupancy: {element}"))?;
        let words = format!("<b>{occupancy}</b> of {capacity}");
        ensure!(
            element.contains(&words),
            "room {id}'s card should read {words:?}: {element}"
        );
        out.insert(id.clone(), occupancy);
    }
    Ok(out)
}

/// The occupancy of every room in an `/api/v1/state` document.
fn api_rooms(state: &Value) -> anyhow::Result<BTreeMap<String, u64>> {
    state["rooms"]
        .as_array()
        .context("the state has no rooms")?
        .iter()
        .map(|r| {
            Ok((
                r["id"].as_str().context("a room without id")?.to_string(),
                r["occupancy"]
                    .as_u64()
                    .context("a room without occupancy")?,
            ))
        })
        .collect()
}

async fn get(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Answer> {
    let (path, headers): (String, Vec<(String, String)>) = (
        path.to_string(),
        headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    tokio::task::spawn_blocking(move || {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        http::get(addr, &path, &headers)
    })
    .await
    .context("the HTTP client task panicked")?
}

async fn api_state(addr: std::net::SocketAddr, headers: &[(&str, &str)]) -> anyhow::Result<Value> {
    let answer = get(addr, "/api/v1/state", headers).await?;
    ensure!(
        answer.status == 200,
        "/api/v1/state answered {}: {}",
        answer.status,
        answer.body
    );
    serde_json::from_str(&answer.body).context("/api/v1/state is not JSON")
}

/// Waits until the status page answers `/healthz`.
async fn wait_for_status_page(rig: &mut Rig) -> anyhow::Result<()> {
    let addr = rig.plan.status_address();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        rig.ensure_alive()?;
        if let Ok(answer) = get(addr, "/healthz", &[]).await
            && answer.status == 200
        {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the status page on {addr} did not answer /healthz within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn hallgate_status(dir: &Path, config: &Path, name: &str) -> anyhow::Result<Finished> {
    let mut command = Command::new(common::HALLGATE);
    command.arg("status").arg("--config").arg(config);
    run_to_completion(command, dir, name, Duration::from_secs(30))
}

fn plan_with_dead_exit(hall: &str, refusing: &RefusingPort) -> HallPlan {
    let mut plan = HallPlan::lobby_with_function_rooms(hall, 2);
    plan.add_unsimulated_exit(DEAD, "room-1", refusing.address);
    plan
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_shows_live_room_occupancy_and_the_dead_counter_offline() {
    let Some(chromium) = chromium() else {
        tool_present(false, "chromium", "apt-get install chromium");
        return;
    };
    let refusing = RefusingPort::bind().expect("a loopback port can be bound");
    let plan = plan_with_dead_exit("t-page", &refusing);
    let rig = Rig::new("status-page", plan).expect("a test directory");
    rig.run(Duration::from_secs(240), async |rig| {
        rig.start_broker().await?;
        rig.start_simulator(traffic(71))?;
        rig.start_gateway()?;
        let live = rig.plan.simulated_counter_ids();
        rig.wait_until_counters_online(&live).await?;
        wait_for_status_page(rig).await?;
        let addr = rig.plan.status_address();
        let url = format!("http://{addr}/");
        let rooms: Vec<(String, u64)> = rig
            .plan
            .rooms
            .iter()
            .map(|r| (r.id.clone(), u64::from(r.capacity)))
            .collect();

        // Live: the page and the API, read one after the other, show the same figures.
        // People keep moving, so a pair may straddle a change; try again until a pair agrees
        // with people in the hall. Once the traffic stops nothing moves, so a page that
        // shows the right figures always gets there; a wrong one never does.
        let give_up = rig.simulator()?.traffic_ends() + Duration::from_secs(60);
        let mut attempts = 0;
        let (dom, shown) = loop {
            rig.ensure_alive()?;
            attempts += 1;
            let dom = dump_dom(&chromium, rig.dir(), &url, attempts)?;
            let shown = page_rooms(&dom, &rooms)?;
            let api = api_rooms(&api_state(addr, &[]).await?)?;
            if shown == api && shown.values().any(|&n| n > 0) {
                break (dom, shown);
            }
            ensure!(
                Instant::now() < give_up,
                "after {attempts} tries the page never showed what /api/v1/state said at \
                 the same moment with people in the hall; last page {shown:?}, API {api:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        eprintln!("the page matched the API after {attempts} tries: {shown:?}");

        let dead = card(&dom, "data-device", DEAD)
            .with_context(|| format!("the page shows no card for the dead counter {DEAD}"))?;
        ensure!(
            attribute(dead, "data-condition") == Some("offline") && dead.contains("Offline"),
            "the dead counter {DEAD} should be shown offline: {dead}"
        );
        ensure!(
            dead.contains("Since ") && dead.contains("refused"),
            "the dead counter's card should say since when and why (connection refused): {dead}"
        );
        for id in &live {
            let element = card(&dom, "data-device", id)
                .with_context(|| format!("the page shows no card for counter {id}"))?;
            ensure!(
                attribute(element, "data-condition") == Some("online"),
                "counter {id} should be shown online: {element}"
            );
        }
        ensure!(
            dom.contains("went offline"),
            "today's alerts should list the dead counter going offline"
        );

        // Once the traffic is over the page settles on the ground truth exactly.
        let truth = rig.wait_for_truth(20).await?;
        let want: BTreeMap<String, u64> = rooms
            .iter()
            .map(|(id, _)| (id.clone(), truth.occupancy(id).max(0) as u64))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            attempts += 1;
            let dom = dump_dom(&chromium, rig.dir(), &url, attempts)?;
            let shown = page_rooms(&dom, &rooms)?;
            if shown == want {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "30 s after the traffic stopped the page shows {shown:?}, the ground truth is \
                 {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }

        // A phone-sized screenshot, for the docs.
        let shot = target_dir().join("status-page.png");
        let profile = tempfile::tempdir_in(rig.dir())?;
        let mut command = chromium_command(&chromium, profile.path());
        command
            .arg(format!("--screenshot={}", shot.display()))
            .arg("--window-size=412,915")
            .arg(&url);
        let _ = std::fs::remove_file(&shot);
        let out = run_to_completion(command, rig.dir(), "chromium-shot", Duration::from_secs(60))?;
        let png = std::fs::read(&shot).with_context(|| {
            format!(
                "chromium wrote no screenshot to {} ({}):\n{}",
                shot.display(),
                out.status,
                common::tail(&out.stderr, 20)
            )
        })?;
        ensure!(
            png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
            "{} is not a plausible screenshot ({} bytes)",
            shot.display(),
            png.len()
        );
        eprintln!("screenshot of the status page saved to {}", shot.display());
        Ok(())
    })
    .await;
    drop(refusing);
}

/// What the Python parser makes of an exposition: family name → (type, samples as
/// (name, labels, value)).
const PARSE_METRICS: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    out[family.name] = {
        "type": family.type,
        "samples": [[s.name, s.labels, s.value] for s in family.samples],
    }
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_hold_the_outbox_device_and_uplink_series() {
    if !tool_present(
        prometheus_client_present(),
        "the Python prometheus_client parser",
        "pip install prometheus-client",
    ) {
        return;
    }
    let refusing = RefusingPort::bind().expect("a loopback port can be bound");
    let plan = plan_with_dead_exit("t-metrics", &refusing);
    let rig = Rig::new("status-metrics", plan).expect("a test directory");
    rig.run(Duration::from_secs(180), async |rig| {
        rig.start_broker().await?;
        rig.start_simulator(traffic(72))?;
        rig.start_gateway()?;
        let live = rig.plan.simulated_counter_ids();
        rig.wait_until_counters_online(&live).await?;
        rig.wait_for_status("online", Duration::from_secs(20))
            .await?;
        wait_for_status_page(rig).await?;
        let addr = rig.plan.status_address();

        // Wait for the dead counter to be marked offline and the link to be up, so the
        // values checked below are settled facts. (Deliveries come with the first minute
        // bin, up to a minute away: not waited for.)
        let deadline = Instant::now() + Duration::from_secs(30);
        let families = loop {
            let answer = get(addr, "/metrics", &[]).await?;
            ensure!(answer.status == 200, "/metrics answered {}", answer.status);
            ensure!(
                answer
                    .header("content-type")
                    .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
                "/metrics should be the 0.0.4 text format: {:?}",
                answer.header("content-type")
            );
            let text = answer.body;
            let parsed = parse_metrics(rig.dir(), &text)?;
            let value = |family: &str, labels: &[(&str, &str)]| -> Option<f64> {
                sample(&parsed, family, labels)
            };
            let settled = value(
                "hallgate_device_online",
                &[("device", DEAD), ("kind", "people_counter")],
            ) == Some(0.0)
                && value("hallgate_uplink_connected", &[]) == Some(1.0)
                && value("hallgate_outbox_commits_total", &[]).is_some_and(|n| n > 0.0);
            if settled {
                break parsed;
            }
            ensure!(
                Instant::now() < deadline,
                "within 30 s /metrics never showed the dead counter offline, the link up and \
                 a commit of the counters' baselines:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };

        // The families a monitoring system relies on, with the right types. The parser
        // names counters without their `_total` suffix.
        for (family, kind) in [
            ("hallgate_build_info", "gauge"),
            ("hallgate_outbox_pending_messages", "gauge"),
            ("hallgate_outbox_bytes", "gauge"),
            ("hallgate_outbox_max_bytes", "gauge"),
            ("hallgate_outbox_commits", "counter"),
            ("hallgate_outbox_rolled_up", "counter"),
            ("hallgate_outbox_dropped", "counter"),
            ("hallgate_outbox_write_errors", "counter"),
            ("hallgate_outbox_buffer_left_hours", "gauge"),
            ("hallgate_device_online", "gauge"),
            ("hallgate_device_polls", "counter"),
            ("hallgate_device_errors", "counter"),
            ("hallgate_uplink_connected", "gauge"),
            ("hallgate_uplink_delivered", "counter"),
            ("hallgate_uplink_dropped", "counter"),
            ("hallgate_uplink_connect_attempts", "counter"),
            ("hallgate_uplink_tls_failures", "counter"),
            ("hallgate_uplink_login_refusals", "counter"),
            ("hallgate_uplink_last_ack_timestamp_seconds", "gauge"),
            ("hallgate_terminal_messages", "counter"),
            ("hallgate_terminal_rejected", "counter"),
            ("hallgate_room_occupancy", "gauge"),
            ("hallgate_room_capacity", "gauge"),
        ] {
            let got = families
                .get(family)
                .and_then(|f| f["type"].as_str())
                .with_context(|| format!("/metrics has no family {family}"))?;
            ensure!(got == kind, "{family} should be a {kind}, is a {got}");
        }
        for id in &live {
            let polls = sample(
                &families,
                "hallgate_device_polls_total",
                &[("device", id), ("kind", "people_counter")],
            );
            ensure!(
                polls.is_some_and(|n| n > 0.0),
                "counter {id} has been polled: {polls:?}"
            );
        }
        let refused = sample(
            &families,
            "hallgate_device_errors_total",
            &[
                ("device", DEAD),
                ("kind", "people_counter"),
                ("error", "link"),
            ],
        );
        ensure!(
            refused.is_some_and(|n| n > 0.0),
            "the dead counter's refused connections are counted as link errors: {refused:?}"
        );
        for (room, capacity) in rig.plan.rooms.iter().map(|r| (&r.id, r.capacity)) {
            let got = sample(&families, "hallgate_room_capacity", &[("room", room)]);
            ensure!(
                got == Some(f64::from(capacity)),
                "room {room} capacity {got:?}"
            );
        }

        // Bounded label sets: only config ids and closed enums.
        let ids: BTreeSet<String> = rig
            .plan
            .rooms
            .iter()
            .map(|r| r.id.clone())
            .chain(rig.plan.counters.iter().map(|c| c.id.clone()))
            .collect();
        for (family, body) in &families {
            for s in body["samples"].as_array().into_iter().flatten() {
                for (key, value) in s[1].as_object().into_iter().flatten() {
                    let value = value.as_str().unwrap_or_default();
                    let allowed = match key.as_str() {
                        "room" | "device" => ids.contains(value),
                        "kind" => ["people_counter", "bus", "terminal"].contains(&value),
                        "condition" => ["online", "offline", "stale", "waiting"].contains(&value),
                        "error" => {
                            ["timeout", "crc", "exception", "bad_answer", "link"].contains(&value)
                        }
                        "version" => value == env!("CARGO_PKG_VERSION"),
                        // Why a booking or a bookings message from the centre was rejected
                        // (docs/uplink.md, "Bookings (downlink)").
                        "reason" => {
                            family.starts_with("hallgate_bookings_")
                                && [
                                    "not_an_object",
                                    "unknown_field",
                                    "missing_field",
                                    "wrong_type",
                                    "bad_id",
                                    "duplicate_id",
                                    "unknown_room",
                                    "room_not_bookable",
                                    "bad_time",
                                    "end_not_after_start",
                                    "slot_too_long",
                                    "too_far_ahead",
                                    "bad_attendance",
                                    "title_too_long",
                                    "overlap",
                                    "too_large",
                                    "not_json",
                                    "unknown_schema_version",
                                    "wrong_hall",
                                    "too_many",
                                    "malformed",
                                ]
                                .contains(&value)
                        }
                        _ => false,
                    };
                    ensure!(
                        allowed,
                        "{family} has a label {key}={value:?} outside the bounded set"
                    );
                }
            }
        }
        Ok(())
    })
    .await;
    drop(refusing);
}

fn parse_metrics(dir: &Path, text: &str) -> anyhow::Result<BTreeMap<String, Value>> {
    let input = dir.join("metrics.txt");
    std::fs::write(&input, text)?;
    let mut command = Command::new("python3");
    command.args(["-c", PARSE_METRICS]);
    command.stdin(std::fs::File::open(&input)?);
    let out = command.output().context("cannot run python3")?;
    ensure!(
        out.status.success(),
        "prometheus_client could not parse /metrics ({}):\n{}\n--- the exposition ---\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).context("the parser's output is not JSON")
}

/// The value of the sample `name` with exactly `labels`, wherever its family is.
fn sample(families: &BTreeMap<String, Value>, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<&str, &str> = labels.iter().copied().collect();
    families.values().find_map(|f| {
        f["samples"].as_array()?.iter().find_map(|s| {
            let got: BTreeMap<&str, &str> = s[1]
                .as_object()?
                .iter()
                .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
                .collect();
            (s[0].as_str()? == name && got == want)
                .then(|| s[2].as_f64())
                .flatten()
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_only_healthz_is_open_and_hallgate_status_signs_in() {
    let mut plan = HallPlan::lobby_with_function_rooms("t-token", 1);
    let rig_dir = tempfile::tempdir().expect("a temporary directory");
    let token_file = rig_dir.path().join("status.token");
    common::write_secret(&token_file, &format!("{TOKEN}\n"))
        .expect("the token file can be written");
    plan.status_extra = format!("token_file = {:?}", token_file.display().to_string());
    let rig = Rig::new("status-token", plan).expect("a test directory");
    rig.run(Duration::from_secs(120), async |rig| {
        // No simulator: the counters are unreachable, which the page must still show.
        rig.start_broker().await?;
        let config = rig.write_gateway_config()?;
        rig.start_gateway()?;
        wait_for_status_page(rig).await?;
        let addr = rig.plan.status_address();
        let bearer = format!("Bearer {TOKEN}");

        for path in ["/", "/api/v1/state", "/metrics"] {
            let answer = get(addr, path, &[]).await?;
            ensure!(
                answer.status == 401,
                "{path} without the token should be 401, is {}",
                answer.status
            );
            ensure!(
                answer.body.contains("access token"),
                "a 401 should say in a sentence what is needed: {:?}",
                answer.body
            );
            let wrong = get(addr, path, &[("Authorization", "Bearer not-the-token-at-all")]).await?;
            ensure!(wrong.status == 401, "{path} with a wrong token: {}", wrong.status);
            let right = get(addr, path, &[("Authorization", &bearer)]).await?;
            ensure!(
                right.status == 200,
                "{path} with the bearer token should be 200, is {}",
                right.status
            );
        }
        let healthz = get(addr, "/healthz", &[]).await?;
        ensure!(
            healthz.status == 200 && healthz.body.trim() == "ok",
            "/healthz needs no token: {} {:?}",
            healthz.status,
            healthz.body
        );

        // A phone opens the link with ?token= once; the cookie it gets keeps the
        // self-refreshing page (which reloads without the query) signed in.
        let page = get(addr, &format!("/?token={TOKEN}"), &[]).await?;
        ensure!(page.status == 200, "/?token= should be 200, is {}", page.status);
        ensure!(page.body.contains("Rooms (功能室)"), "the page itself: {}", page.body);
        let cookie = page
            .header("set-cookie")
            .context("/?token= should set a cookie")?;
        ensure!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "the cookie must be HttpOnly and SameSite=Strict: {cookie}"
        );
        let pair = cookie.split(';').next().unwrap_or_default().to_string();
        let again = get(addr, "/", &[("Cookie", &pair)]).await?;
        ensure!(
            again.status == 200,
            "the page with the cookie should be 200, is {}",
            again.status
        );

        // Plain HTTP rules.
        let post = http::request(addr, "POST", "/", &[("Content-Length", "0")])?;
        ensure!(post.status == 405, "POST should be 405, is {}", post.status);
        let missing = get(addr, "/nope", &[("Authorization", &bearer)]).await?;
        ensure!(missing.status == 404, "an unknown path should be 404, is {}", missing.status);

        // The CLI reads the token from the same config.
        let out = hallgate_status(rig.dir(), &config, "hallgate-status")?;
        ensure!(
            out.status.code() == Some(0),
            "hallgate status should exit 0 against the running gateway; {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            out.stdout,
            out.stderr
        );
        for room in rig.plan.room_ids() {
            ensure!(
                out.stdout.contains(&room),
                "hallgate status should list room {room}:\n{}",
                out.stdout
            );
        }
        for line in ["Rooms", "Devices", "Central link", "offline buffer left", "Today's alerts"] {
            ensure!(
                out.stdout.contains(line),
                "hallgate status should print {line:?}:\n{}",
                out.stdout
            );
        }
        for output in [&out.stdout, &out.stderr, &rig.gateway()?.log_text()] {
            ensure!(!output.contains(TOKEN), "the token must never be printed or logged");
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hallgate_status_prints_the_rooms_of_the_running_gateway() {
    let plan = HallPlan::lobby_with_function_rooms("t-cli", 2);
    let rig = Rig::new("status-cli", plan).expect("a test directory");
    rig.run(Duration::from_secs(120), async |rig| {
        rig.start_broker().await?;
        rig.start_simulator(traffic(73))?;
        let config = rig.write_gateway_config()?;
        rig.start_gateway()?;
        let live = rig.plan.simulated_counter_ids();
        rig.wait_until_counters_online(&live).await?;
        wait_for_status_page(rig).await?;
        let out = hallgate_status(rig.dir(), &config, "hallgate-status")?;
        ensure!(
            out.status.code() == Some(0),
            "hallgate status should exit 0; {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            out.stdout,
            out.stderr
        );
        let state = api_state(rig.plan.status_address(), &[]).await?;
        for room in state["rooms"].as_array().into_iter().flatten() {
            let (id, capacity) = (
                room["id"].as_str().unwrap_or_default(),
                room["capacity"].as_u64().unwrap_or_default(),
            );
            let line = out
                .stdout
                .lines()
                .find(|l| l.trim_start().starts_with(id))
                .with_context(|| format!("no line for room {id}:\n{}", out.stdout))?;
            ensure!(
                line.contains(&format!(" of {capacity}")),
                "room {id}'s line should give occupancy of capacity: {line:?}"
            );
        }
        for id in &live {
            ensure!(
                out.stdout
                    .lines()
                    .any(|l| l.trim_start().starts_with(id.as_str()) && l.contains("online")),
                "counter {id} should be listed online:\n{}",
                out.stdout
            );
        }
        eprintln!("hallgate status printed:\n{}", out.stdout);
        Ok(())
    })
    .await;
}

#[test]
fn hallgate_status_says_so_in_a_sentence_and_exits_1_when_nothing_listens() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let plan = HallPlan::lobby_with_function_rooms("t-nobody", 1);
    // Nothing was started: the plan's status port is free.
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, plan.gateway_toml(1883, &dir.path().join("data")))
        .expect("the config can be written");
    let out = hallgate_status(dir.path(), &config, "hallgate-status").expect("it runs");
    assert_eq!(
        out.status.code(),
        Some(1),
        "hallgate status with no gateway should exit 1; stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    let address = plan.status_address().to_string();
    assert!(
        out.stderr.contains("is the gateway running?") && out.stderr.contains(&address),
        "it should say in a sentence that nothing answers on {address}: {}",
        out.stderr
    );
    assert_eq!(
        out.stderr.trim().lines().count(),
        1,
        "one sentence: {}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_and_the_page_stays_available() {
    use tokio::io::AsyncReadExt;
    let plan = HallPlan::lobby_with_function_rooms("t-bounds", 1);
    let rig = Rig::new("status-bounds", plan).expect("a test directory");
    rig.run(Duration::from_secs(120), async |rig| {
        rig.start_broker().await?;
        rig.start_gateway()?;
        wait_for_status_page(rig).await?;
        let addr = rig.plan.status_address();

        // Twice as many connections as the server serves at once, none of which ever sends
        // a request (a broken or hostile client): the server must close every one by itself
        // (beyond its limit at once, the others when their request head does not come), and
        // then answer again.
        let mut silent = Vec::new();
        for _ in 0..(2 * 16) {
            silent.push(tokio::net::TcpStream::connect(addr).await?);
        }
        for (i, stream) in silent.iter_mut().enumerate() {
            let mut buf = [0u8; 256];
            let read = tokio::time::timeout(Duration::from_secs(60), stream.read(&mut buf))
                .await
                .with_context(|| format!("silent connection {i} was never closed by the server"))?;
            // A closed connection reads as the end (or a reset); a 408 answer is fine too.
            if let Ok(n) = read {
                ensure!(
                    n == 0 || String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"),
                    "silent connection {i} got {:?}",
                    String::from_utf8_lossy(&buf[..n])
                );
            }
        }
        let healthz = get(addr, "/healthz", &[]).await?;
        ensure!(
            healthz.status == 200,
            "after the silent connections the page should answer again: {}",
            healthz.status
        );

        // A request head beyond the bound is refused, not buffered.
        let big = "a".repeat(32 * 1024);
        let answer = get(addr, "/healthz", &[("X-Padding", &big)]).await;
        ensure!(
            answer.as_ref().map_or(true, |a| a.status == 431),
            "a 32 KiB request head should be refused with 431: {:?}",
            answer.map(|a| a.status)
        );
        let head = http::request(addr, "HEAD", "/healthz", &[])?;
        ensure!(
            head.status == 200,
            "HEAD /healthz should be 200, is {}",
            head.status
        );
        Ok(())
    })
    .await;
}

#[test]
fn a_gateway_whose_status_address_is_taken_stops_at_once_naming_the_address() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let plan = HallPlan::lobby_with_function_rooms("t-taken", 1);
    // Something else already listens where the status page should.
    let _squatter =
        std::net::TcpListener::bind(plan.status_address()).expect("the plan's status port is free");
    let config = dir.path().join("gateway.toml");
    let data_dir = dir.path().join("data");
    std::fs::write(&config, plan.gateway_toml(1, &data_dir)).expect("the config can be written");
    let mut command = Command::new(common::HALLGATE);
    command.arg("run").arg("--config").arg(&config);
    let out = run_to_completion(command, dir.path(), "gateway", Duration::from_secs(30))
        .expect("the gateway should stop by itself, not run on without its status page");
    assert_eq!(
        out.status.code(),
        Some(1),
        "a taken status address is a startup failure; stderr:\n{}",
        out.stderr
    );
    let address = plan.status_address().to_string();
    assert!(
        out.stderr
            .contains(&format!("cannot listen for the status page on {address}")),
        "the error should name the address {address}:\n{}",
        out.stderr
    );
    assert!(
        !data_dir.exists(),
        "nothing else should have started (no outbox created) before the status page bound"
    );
}
