//! The venue day: a whole simulated hall day through the real gateway core, every figure held
//! against the simulator's ground truth.
//!
//! `hallgate replay-day` generates the day (`src/simulate/day.rs`: opening hours, bookings
//! held and not held, unbooked use, arrivals with a morning and an afternoon peak, groups,
//! members and strangers, fevers, no masks) and replays it through the gateway's own core loop
//! and outbox under a virtual clock (`src/simulate/replay.rs`), writing every payload and the
//! truth. This test runs the binary and then checks:
//!
//! - every payload against its JSON Schema, with `tests/peers/validate_payloads.py`;
//! - with exact counters: every 15-minute bin and the day (`situation_15m`, `situation_day`),
//!   every minute (`agg_1m`), every booking report and unbooked-use episode, against the
//!   truth — exactly, up to the payloads' 3-decimal rounding;
//! - with a miss rate on exits: what the counters counted exactly, what people did within
//!   the bound derived below, and that the drift correction brings the person-minutes closer
//!   to the truth (printed per room: raw error, corrected error).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A replayed day takes a few seconds in a debug build; this is only a hang guard.
const REPLAY_DEADLINE: Duration = Duration::from_secs(300);
/// The payloads round means, ratios and person-minutes to 3 decimals.
const ROUNDING: f64 = 0.0005 + 1e-9;
const SEED: u64 = 20261201;
/// Exits missed by the counters in the drift run (people leaving in groups occlude the beam).
const MISS_OUT: f64 = 0.03;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/venue_day/hall.toml")
}

struct Replayed {
    dir: tempfile::TempDir,
    payloads: Vec<Value>,
    truth: Value,
}

impl Replayed {
    fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.payloads.iter().filter(|p| p["kind"] == kind).collect()
    }

    fn payloads_file(&self) -> PathBuf {
        self.dir.path().join("payloads.jsonl")
    }
}

/// The day with exact counters, replayed once for all the tests that read it.
fn exact_day() -> &'static Replayed {
    static DAY: OnceLock<Replayed> = OnceLock::new();
    DAY.get_or_init(|| replay(0.0))
}

/// The day with [`MISS_OUT`] of the exits missed, replayed once.
fn drifting_day() -> &'static Replayed {
    static DAY: OnceLock<Replayed> = OnceLock::new();
    DAY.get_or_init(|| replay(MISS_OUT))
}

/// Runs `hallgate replay-day` and reads what it wrote.
fn replay(miss_out: f64) -> Replayed {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut child = Command::new(common::HALLGATE)
        .args(["replay-day", "--config"])
        .arg(fixture())
        .args([
            "--seed",
            &SEED.to_string(),
            "--miss-out",
            &miss_out.to_string(),
        ])
        .arg("--out")
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hallgate starts");
    let started = Instant::now();
    while child
        .try_wait()
        .expect("the child can be waited for")
        .is_none()
    {
        if started.elapsed() > REPLAY_DEADLINE {
            let _ = child.kill();
            panic!("replay-day did not finish within {REPLAY_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "replay-day failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    // The one-line summary says how long the day took.
    println!("{}", stdout.trim());
    assert!(stdout.contains("replayed day 2026-12-01"), "{stdout}");
    let text = std::fs::read_to_string(dir.path().join("payloads.jsonl")).expect("payloads");
    let payloads = text
        .lines()
        .map(|l| {
            let line: Value = serde_json::from_str(l).expect("a JSON line");
            line["payload"].clone()
        })
        .collect();
    let truth = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("truth.json")).expect("truth"),
    )
    .expect("truth is JSON");
    Replayed {
        dir,
        payloads,
        truth,
    }
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("{v} is not a number"))
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("{v} is not a count"))
}

/// Collects every mismatch, so one run shows them all.
#[derive(Default)]
struct Mismatches(Vec<String>);

impl Mismatches {
    fn eq(&mut self, what: &str, got: &Value, want: &Value) {
        if got != want {
            self.0.push(format!("{what}: got {got}, truth {want}"));
        }
    }

    fn near(&mut self, what: &str, got: &Value, want: f64, tolerance: f64) {
        match got.as_f64() {
            Some(g) if (g - want).abs() <= tolerance => {}
            _ => self
                .0
                .push(format!("{what}: got {got}, truth {want:.4} (±{tolerance})")),
        }
    }

    fn assert_none(&self, context: &str) {
        assert!(
            self.0.is_empty(),
            "{context}: {} mismatches:\n{}",
            self.0.len(),
            self.0.join("\n")
        );
    }
}

const COUNTS: [&str; 8] = [
    "entries",
    "exits",
    "service_visits",
    "unique_visitors",
    "member_visits",
    "stranger_visits",
    "fevers",
    "mask_off",
];

/// A stretch's figures (`hall` and `rooms[]` of a situation payload) against the truth's.
fn check_stretch(m: &mut Mismatches, at: &str, got: &Value, truth: &Value, total_capacity: f64) {
    let th = &truth["hall"];
    let gh = &got["hall"];
    for key in COUNTS {
        m.eq(&format!("{at} hall.{key}"), &gh[key], &th[key]);
    }
    m.eq(
        &format!("{at} hall.occupancy_peak"),
        &gh["occupancy_peak"],
        &th["occupancy_peak"],
    );
    m.near(
        &format!("{at} hall.person_minutes"),
        &gh["person_minutes"],
        f(&th["person_minutes"]),
        ROUNDING,
    );
    m.near(
        &format!("{at} hall.occupancy_mean"),
        &gh["occupancy_mean"],
        f(&th["occupancy_mean"]),
        ROUNDING,
    );
    m.near(
        &format!("{at} hall.utilisation_mean"),
        &gh["utilisation_mean"],
        f(&th["occupancy_mean"]) / total_capacity,
        ROUNDING,
    );
    m.near(
        &format!("{at} hall.utilisation_peak"),
        &gh["utilisation_peak"],
        f(&th["occupancy_peak"]) / total_capacity,
        ROUNDING,
    );
    // Every counter answered all day.
    m.near(
        &format!("{at} hall.device_online_ratio"),
        &gh["device_online_ratio"],
        1.0,
        ROUNDING,
    );
    let rooms = got["rooms"].as_array().expect("rooms[]");
    let truth_rooms = truth["rooms"].as_array().expect("truth rooms");
    assert_eq!(
        rooms.len(),
        truth_rooms.len(),
        "{at}: every room is reported"
    );
    for (g, t) in rooms.iter().zip(truth_rooms) {
        let id = t["id"].as_str().expect("id");
        let at = format!("{at} {id}");
        m.eq(&format!("{at}.id"), &g["id"], &t["id"]);
        m.eq(&format!("{at}.capacity"), &g["capacity"], &t["capacity"]);
        for key in COUNTS {
            m.eq(&format!("{at}.{key}"), &g[key], &t[key]);
        }
        m.eq(
            &format!("{at}.occupancy_peak"),
            &g["occupancy_peak"],
            &t["occupancy_peak"],
        );
        m.eq(
            &format!("{at}.hotspot_rank"),
            &g["hotspot_rank"],
            &t["hotspot_rank"],
        );
        let capacity = f(&t["capacity"]);
        m.near(
            &format!("{at}.person_minutes"),
            &g["person_minutes"],
            f(&t["person_minutes"]),
            ROUNDING,
        );
        m.near(
            &format!("{at}.occupancy_mean"),
            &g["occupancy_mean"],
            f(&t["occupancy_mean"]),
            ROUNDING,
        );
        m.near(
            &format!("{at}.utilisation_mean"),
            &g["utilisation_mean"],
            f(&t["occupancy_mean"]) / capacity,
            ROUNDING,
        );
        m.near(
            &format!("{at}.utilisation_peak"),
            &g["utilisation_peak"],
            f(&t["occupancy_peak"]) / capacity,
            ROUNDING,
        );
        m.near(
            &format!("{at}.occupied_share"),
            &g["occupied_share"],
            f(&t["occupied_share"]),
            ROUNDING,
        );
        match t["dwell_minutes_mean"].as_f64() {
            Some(dwell) => m.near(
                &format!("{at}.dwell_minutes_mean"),
                &g["dwell_minutes_mean"],
                dwell,
                ROUNDING,
            ),
            None => m.eq(
                &format!("{at}.dwell_minutes_mean"),
                &g["dwell_minutes_mean"],
                &Value::Null,
            ),
        }
    }
}

fn total_capacity(truth: &Value) -> f64 {
    truth["day_figures"]["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .map(|r| f(&r["capacity"]))
        .sum()
}

fn by_start<'a>(payloads: &[&'a Value], key: &str) -> BTreeMap<String, &'a Value> {
    payloads
        .iter()
        .map(|p| (p[key].as_str().expect("a start").to_string(), *p))
        .collect()
}

#[test]
fn every_payload_of_the_venue_day_validates_against_its_schema() {
    let days = [exact_day(), drifting_day()];
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/validate_payloads.py");
    // Not a skip: without the validator nothing here is checked, so that is a failure.
    assert!(
        script.exists(),
        "{} is missing: the payloads cannot be validated against docs/schema/",
        script.display()
    );
    let output = Command::new("python3")
        .arg(&script)
        .args(days.map(Replayed::payloads_file))
        .output()
        .expect("python3 runs (scripts/test.sh installs python3-jsonschema)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{report}");
    assert!(
        output.status.success(),
        "schema validation failed:\n{report}"
    );
    // A day has each kind the gateway sends for figures; all were validated.
    for kind in [
        "agg_1m",
        "situation_15m",
        "situation_day",
        "booking_report",
        "unbooked_use",
    ] {
        assert!(
            days.iter().all(|d| !d.of_kind(kind).is_empty()),
            "a day sent no {kind}"
        );
    }
}

#[test]
fn with_exact_counters_every_situation_figure_matches_the_truth() {
    let day = exact_day();
    let truth = &day.truth;
    let capacity = total_capacity(truth);
    let mut m = Mismatches::default();

    // Every 15-minute bin of the open time.
    let bins = by_start(&day.of_kind("situation_15m"), "bin_start");
    let truth_bins = truth["bins"].as_array().expect("bins");
    assert!(truth_bins.len() >= 52, "13 open hours of bins");
    for t in truth_bins {
        let start = t["start"].as_str().expect("start");
        let Some(got) = bins.get(start) else {
            m.0.push(format!("no situation_15m for the bin at {start}"));
            continue;
        };
        m.eq(&format!("bin {start} bin_end"), &got["bin_end"], &t["end"]);
        m.eq(&format!("bin {start} day"), &got["day"], &truth["day"]);
        m.eq(
            &format!("bin {start} open_minutes"),
            &got["open_minutes"],
            &Value::from(15),
        );
        m.eq(
            &format!("bin {start} msg_id"),
            &got["msg_id"],
            &Value::from(format!(
                "{}:situation_15m:{}:r0",
                truth["hall_id"].as_str().expect("hall"),
                start
                    .parse::<jiff::Timestamp>()
                    .expect("an RFC 3339 start")
                    .strftime("%Y%m%dT%H%MZ")
            )),
        );
        check_stretch(&mut m, &format!("bin {start}"), got, t, capacity);
    }

    // The day.
    let days = day.of_kind("situation_day");
    assert_eq!(days.len(), 1, "one situation_day at closing time");
    let d = days[0];
    let td = &truth["day_figures"];
    m.eq("day.day", &d["day"], &truth["day"]);
    m.eq("day.open_from", &d["open_from"], &truth["open_from"]);
    m.eq("day.open_to", &d["open_to"], &truth["open_to"]);
    m.eq("day.peak_hour", &d["peak_hour"], &truth["peak_hour"]);
    m.eq(
        "day.hall.occupancy_peak_at",
        &d["hall"]["occupancy_peak_at"],
        &td["hall"]["occupancy_peak_at"],
    );
    m.eq(
        "day.msg_id",
        &d["msg_id"],
        &Value::from(format!(
            "{}:situation_day:2026-12-01:r0",
            truth["hall_id"].as_str().expect("hall")
        )),
    );
    check_stretch(&mut m, "day", d, td, capacity);
    // Exact counters leave nothing behind: no drift, nothing to correct.
    for (r, line) in d["drift"]["rooms"]
        .as_array()
        .expect("drift rooms")
        .iter()
        .enumerate()
    {
        m.eq(
            &format!("drift {r} residual"),
            &line["residual"],
            &Value::from(0),
        );
        m.eq(
            &format!("drift {r} clamped"),
            &line["clamped"],
            &Value::from(0),
        );
    }
    let lines = d["drift"]["lines"].as_array().expect("drift lines");
    for (got, want) in lines
        .iter()
        .zip(truth["lines"].as_array().expect("truth lines"))
    {
        let c = want["counter"].as_str().expect("counter");
        for key in ["counter", "from", "to", "in", "out"] {
            m.eq(&format!("drift line {c}.{key}"), &got[key], &want[key]);
        }
    }
    for (got, want) in d["corrected"]["rooms"]
        .as_array()
        .expect("corrected rooms")
        .iter()
        .zip(td["rooms"].as_array().expect("rooms"))
    {
        let id = want["id"].as_str().expect("id");
        m.eq(
            &format!("corrected {id}.scaled"),
            &got["scaled"],
            &Value::from("none"),
        );
        m.near(
            &format!("corrected {id}.factor"),
            &got["factor"],
            1.0,
            ROUNDING,
        );
        m.near(
            &format!("corrected {id}.person_minutes"),
            &got["person_minutes"],
            f(&want["person_minutes"]),
            ROUNDING,
        );
    }
    m.assert_none("situation figures with exact counters");
}

#[test]
fn with_exact_counters_every_minute_adds_up_to_its_bin() {
    let day = exact_day();
    let mut m = Mismatches::default();
    // agg_1m: the same day minute by minute; summed over each bin it is the bin's truth.
    let minutes = day.of_kind("agg_1m");
    for t in day.truth["bins"].as_array().expect("bins") {
        let (start, end) = (
            t["start_ms"].as_i64().expect("ms"),
            t["end_ms"].as_i64().expect("ms"),
        );
        let inside: Vec<&&Value> = minutes
            .iter()
            .filter(|p| {
                let s = jiff::Timestamp::from_str_ms(&p["bin_start"]);
                s >= start && s < end
            })
            .collect();
        assert_eq!(inside.len(), 15, "15 minutes in the bin at {}", t["start"]);
        for (r, tr) in t["rooms"].as_array().expect("rooms").iter().enumerate() {
            let id = tr["id"].as_str().expect("id");
            let sum = |key: &str| -> u64 {
                inside
                    .iter()
                    .map(|p| p["rooms"][r][key].as_u64().unwrap_or(0))
                    .sum()
            };
            let at = format!("{} {id}", t["start"]);
            m.eq(
                &format!("{at} entries"),
                &Value::from(sum("entries")),
                &tr["entries"],
            );
            m.eq(
                &format!("{at} exits"),
                &Value::from(sum("exits")),
                &tr["exits"],
            );
            m.eq(
                &format!("{at} passages"),
                &Value::from(sum("passages")),
                &tr["passages"],
            );
            m.eq(
                &format!("{at} members"),
                &Value::from(sum("members")),
                &tr["member_visits"],
            );
            m.eq(
                &format!("{at} strangers"),
                &Value::from(sum("strangers")),
                &tr["stranger_visits"],
            );
            m.eq(
                &format!("{at} fevers"),
                &Value::from(sum("fevers")),
                &tr["fevers"],
            );
            m.eq(
                &format!("{at} mask_off"),
                &Value::from(sum("mask_off")),
                &tr["mask_off"],
            );
            let peak = inside
                .iter()
                .map(|p| u(&p["rooms"][r]["occupancy_peak"]))
                .max()
                .unwrap_or(0);
            // Minute peaks, like every other, are what held for some time: never a read's IN
            // crossings before its OUT crossings.
            m.eq(
                &format!("{at} peak"),
                &Value::from(peak),
                &tr["occupancy_peak"],
            );
            // Each minute's mean is rounded to 3 decimals: 15 roundings in a bin.
            let person_minutes: f64 = inside
                .iter()
                .map(|p| f(&p["rooms"][r]["occupancy_mean"]))
                .sum();
            m.near(
                &format!("{at} person-minutes"),
                &Value::from(person_minutes),
                f(&tr["person_minutes"]),
                15.0 * ROUNDING,
            );
        }
    }
    m.assert_none("minute bins with exact counters");
}

#[test]
fn bookings_are_reported_held_or_not_and_unbooked_use_is_found() {
    let day = exact_day();
    let mut m = Mismatches::default();
    let reports = by_start(&day.of_kind("booking_report"), "booking_id");
    let truth = day.truth["bookings"].as_array().expect("bookings");
    assert!(truth.iter().any(|b| b["held"] == true) && truth.iter().any(|b| b["held"] == false));
    assert_eq!(reports.len(), truth.len(), "one report per booking");
    for t in truth {
        let id = t["booking_id"].as_str().expect("id");
        let Some(got) = reports.get(id) else {
            m.0.push(format!("no booking_report for {id}"));
            continue;
        };
        for key in [
            "room",
            "start",
            "end",
            "expected_attendance",
            "held",
            "attendance",
        ] {
            m.eq(&format!("{id}.{key}"), &got[key], &t[key]);
        }
        assert!(
            got.get("title").is_none(),
            "a booking report never carries the title"
        );
        m.near(
            &format!("{id}.attendance_share"),
            &got["attendance_share"],
            f(&t["attendance_share"]),
            ROUNDING,
        );
        m.near(
            &format!("{id}.occupancy_mean"),
            &got["occupancy_mean"],
            f(&t["occupancy_mean"]),
            ROUNDING,
        );
        // Minute resolution: the minute of the slot in which the threshold was first reached.
        let want = t["start_delay_minutes"]
            .as_f64()
            .map(|d| Value::from(d.floor() as u64));
        m.eq(
            &format!("{id}.start_delay_minutes"),
            &got["start_delay_minutes"],
            &want.unwrap_or(Value::Null),
        );
    }
    // Unbooked use: each episode the truth has, at minute resolution (its start's minute to
    // the end of its last minute), and no other.
    let episodes = day.of_kind("unbooked_use");
    let truth = day.truth["unbooked"].as_array().expect("unbooked");
    assert!(!truth.is_empty(), "the day has an unbooked episode to find");
    assert_eq!(
        episodes.len(),
        truth.len(),
        "{episodes:?}\nvs truth {truth:?}"
    );
    for t in truth {
        let start = t["start_ms"].as_i64().expect("ms");
        let end = t["end_ms"].as_i64().expect("ms");
        let start_minute = start - start.rem_euclid(60_000);
        let end_minute = end + (60_000 - end.rem_euclid(60_000)) % 60_000;
        let Some(got) = episodes.iter().find(|e| {
            e["room"] == t["room"] && jiff::Timestamp::from_str_ms(&e["start"]) == start_minute
        }) else {
            m.0.push(format!("no unbooked_use for {t}"));
            continue;
        };
        m.eq(
            "unbooked end",
            &Value::from(jiff::Timestamp::from_str_ms(&got["end"])),
            &Value::from(end_minute),
        );
        m.eq(
            "unbooked peak",
            &got["occupancy_peak"],
            &t["occupancy_peak"],
        );
        m.near(
            "unbooked person_minutes",
            &got["person_minutes"],
            f(&t["person_minutes"]),
            ROUNDING,
        );
    }
    m.assert_none("bookings");
}

/// With exits missed at [`MISS_OUT`], the bound on the error of a room's person-minutes over
/// a stretch [s, e) is derived so:
///
/// Let `b(t)` be the engine's signed balance of the room and `x(t) ≥ 0` the true occupancy,
/// and `err(t) = b(t) − x(t)`. With no miss, `err ≡ 0` (the exact run shows it). A missed
/// crossing of one of the room's doors changes `err` by exactly ±1 (a missed exit +1, a missed
/// entry −1); clamping sets a negative `b` to 0, which moves `err` from `b − x` to `−x`, and
/// since `b < 0 ≤ x` that never increases `|err|`; the shown occupancy `max(b, 0)` is never
/// further from `x ≥ 0` than `b` is. So at any time the shown occupancy is within `M(t)` of the
/// truth, `M(t)` being the number of the room's missed crossings up to `t`, and
///
/// ```text
/// |PM_gateway − PM_true| ≤ ∫ₛᵉ M(t) dt = Σ over missed crossings m at tₘ < e of (e − max(tₘ, s))
/// ```
///
/// plus the payload's rounding. The simulator records every missed crossing (`missed_at_ms`),
/// so the bound is computed per room and per stretch; its expected size is about
/// `MISS_OUT × exits × (mean time from an exit to the close)`. The counts themselves are exact
/// against what the counters counted (they are the crossings the counters saw), and miss the
/// truth by exactly the missed crossings.
fn person_minutes_bound(missed_at_ms: &[i64], start: i64, end: i64) -> f64 {
    missed_at_ms
        .iter()
        .filter(|&&t| t < end)
        .map(|&t| (end - t.max(start)) as f64 / 60_000.0)
        .sum::<f64>()
        + ROUNDING
}

#[test]
fn with_missed_exits_the_figures_stay_within_the_derived_bound_and_drift_correction_helps() {
    let day = drifting_day();
    let truth = &day.truth;
    let mut m = Mismatches::default();
    let counted = truth["counted"].as_array().expect("counted");
    let missed: BTreeMap<&str, Vec<i64>> = counted
        .iter()
        .map(|c| {
            (
                c["id"].as_str().expect("id"),
                c["missed_at_ms"]
                    .as_array()
                    .expect("missed")
                    .iter()
                    .map(|v| v.as_i64().expect("ms"))
                    .collect(),
            )
        })
        .collect();
    let missed_out: u64 = truth["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| u(&l["missed_out"]))
        .sum();
    let counted_out: u64 = truth["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| u(&l["out"]))
        .sum();
    assert!(missed_out > 0, "the drift run misses exits");
    // The misses themselves: Binomial(n, p); more than p·n + 4σ would mean the simulator does
    // not miss what it was told to.
    let n = (missed_out + counted_out) as f64;
    let sigma = (n * MISS_OUT * (1.0 - MISS_OUT)).sqrt();
    assert!(
        (missed_out as f64 - n * MISS_OUT).abs() <= 4.0 * sigma,
        "{missed_out} of {n} exits missed, expected {:.0} ± {:.0}",
        n * MISS_OUT,
        4.0 * sigma
    );

    let days = day.of_kind("situation_day");
    assert_eq!(days.len(), 1, "one situation_day");
    let d = days[0];
    let td = &truth["day_figures"];
    let (open, close) = (
        truth["opening_ms"].as_i64().expect("ms"),
        truth["closing_ms"].as_i64().expect("ms"),
    );

    // What the counters counted is exact; what people did is off by exactly the misses.
    for (got, want) in d["drift"]["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .zip(truth["lines"].as_array().expect("lines"))
    {
        let c = want["counter"].as_str().expect("counter");
        m.eq(&format!("line {c} in"), &got["in"], &want["in"]);
        m.eq(&format!("line {c} out"), &got["out"], &want["out"]);
    }
    println!("room      true PM   raw PM (err)      corrected PM (err)   bound   residual");
    let mut improved = Vec::new();
    for ((g, t), (c, corrected)) in d["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .zip(td["rooms"].as_array().expect("rooms"))
        .zip(
            counted
                .iter()
                .zip(d["corrected"]["rooms"].as_array().expect("corrected")),
        )
    {
        let id = t["id"].as_str().expect("id");
        m.eq(
            &format!("{id} entries counted"),
            &g["entries"],
            &c["entries"],
        );
        m.eq(&format!("{id} exits counted"), &g["exits"], &c["exits"]);
        m.eq(
            &format!("{id} exits vs truth"),
            &Value::from(u(&g["exits"]) + u(&c["missed_exits"])),
            &t["exits"],
        );
        let bound = person_minutes_bound(&missed[id], open, close);
        let truth_pm = f(&t["person_minutes"]);
        let raw = f(&g["person_minutes"]);
        m.near(
            &format!("{id} day person-minutes"),
            &g["person_minutes"],
            truth_pm,
            bound,
        );
        let fixed = f(&corrected["person_minutes"]);
        println!(
            "{id:<8} {truth_pm:>9.1} {raw:>9.1} ({:>+8.1}) {fixed:>11.1} ({:>+8.1}) {bound:>9.1} {:>5}",
            raw - truth_pm,
            fixed - truth_pm,
            c["residual"]
        );
        if corrected["scaled"] == "exits" {
            improved.push((id, (raw - truth_pm).abs(), (fixed - truth_pm).abs()));
        }
        // A room scaled by entries (its exits outran its entries, like the lobby fed by the
        // rooms' missed exits) never goes below its clamped curve, a lower bound.
        if corrected["scaled"] == "entries" && fixed + 1e-6 < raw {
            m.0.push(format!(
                "{id}: scaled entries gave {fixed:.1} person-minutes, under the clamped {raw:.1}"
            ));
        }
    }
    // Every 15-minute bin within its own bound.
    let bins = by_start(&day.of_kind("situation_15m"), "bin_start");
    for t in truth["bins"].as_array().expect("bins") {
        let start = t["start"].as_str().expect("start");
        let (s, e) = (
            t["start_ms"].as_i64().expect("ms"),
            t["end_ms"].as_i64().expect("ms"),
        );
        let Some(got) = bins.get(start) else {
            m.0.push(format!("no situation_15m at {start}"));
            continue;
        };
        for (g, tr) in got["rooms"]
            .as_array()
            .expect("rooms")
            .iter()
            .zip(t["rooms"].as_array().expect("rooms"))
        {
            let id = tr["id"].as_str().expect("id");
            let bound = person_minutes_bound(&missed[id], s, e);
            m.near(
                &format!("bin {start} {id} person-minutes"),
                &g["person_minutes"],
                f(&tr["person_minutes"]),
                bound,
            );
            // Peaks: off by at most the misses so far.
            let so_far = missed[id].iter().filter(|&&t| t < e).count() as f64;
            m.near(
                &format!("bin {start} {id} peak"),
                &g["occupancy_peak"],
                f(&tr["occupancy_peak"]),
                so_far,
            );
        }
    }
    m.assert_none("figures with missed exits");

    // Drift correction: where the gateway scaled a room's exits (it ended the day with people
    // left in it), the corrected person-minutes are closer to the truth than the raw ones.
    assert!(!improved.is_empty(), "a room needed its exits scaled");
    for (id, raw, fixed) in &improved {
        println!(
            "drift correction {id}: error {raw:.1} → {fixed:.1} person-minutes ({:.0} % less)",
            100.0 * (1.0 - fixed / raw)
        );
        assert!(
            fixed < raw,
            "{id}: the correction made the error worse ({raw:.1} → {fixed:.1})"
        );
    }
    let hall_truth = f(&td["hall"]["person_minutes"]);
    let hall_raw = (f(&d["hall"]["person_minutes"]) - hall_truth).abs();
    let hall_fixed = (f(&d["corrected"]["hall"]["person_minutes"]) - hall_truth).abs();
    println!("drift correction, whole hall: error {hall_raw:.1} → {hall_fixed:.1} person-minutes");
    assert!(
        hall_fixed < hall_raw,
        "the hall's corrected person-minutes are no closer to the truth"
    );
}

/// RFC 3339 text to Unix milliseconds.
trait FromStrMs {
    fn from_str_ms(v: &Value) -> i64;
}

impl FromStrMs for jiff::Timestamp {
    fn from_str_ms(v: &Value) -> i64 {
        v.as_str()
            .and_then(|s| s.parse::<jiff::Timestamp>().ok())
            .unwrap_or_else(|| panic!("{v} is not an RFC 3339 time"))
            .as_millisecond()
    }
}

#[test]
fn alerts_follow_the_day_fevers_at_their_terminals_and_rooms_over_capacity() {
    let day = exact_day();
    let alerts = day.of_kind("alert");
    let count = |alert: &str, subject: &str, state: &str| {
        alerts
            .iter()
            .filter(|a| a["alert"] == alert && a["subject"] == subject && a["state"] == state)
            .count()
    };
    // A room over capacity: raised only where people really were over it, raised wherever
    // they were clearly over it (the rule looks once a second, so a moment's +1 may pass
    // unseen), and cleared by the close, when everyone has left.
    for r in day.truth["day_figures"]["rooms"].as_array().expect("rooms") {
        let id = r["id"].as_str().expect("id");
        let (peak, capacity) = (u(&r["occupancy_peak"]), u(&r["capacity"]));
        let raised = count("over_capacity", id, "raised");
        if raised > 0 {
            assert!(
                peak > capacity,
                "{id}: over_capacity raised at a true peak of {peak}/{capacity}"
            );
        }
        if peak >= capacity + 2 {
            assert!(
                raised > 0,
                "{id}: {peak} people in a room for {capacity}, and no alert"
            );
        }
        assert_eq!(
            raised,
            count("over_capacity", id, "cleared"),
            "{id}: every raise is cleared"
        );
    }
    // Fevers: each terminal that recorded one raised an alert (episodes may merge fevers, so
    // at most one per fever passage), none elsewhere, and no alert names anyone.
    let fixture: toml::Value =
        toml::from_str(&std::fs::read_to_string(fixture()).expect("fixture")).expect("TOML");
    for t in fixture["terminals"].as_array().expect("terminals") {
        let (terminal, room) = (
            t["id"].as_str().expect("id"),
            t["room"].as_str().expect("room"),
        );
        let fevers = day.truth["day_figures"]["rooms"]
            .as_array()
            .expect("rooms")
            .iter()
            .find(|r| r["id"] == room)
            .map(|r| u(&r["fevers"]))
            .expect("the terminal's room");
        let raised = count("fever", terminal, "raised") as u64;
        assert!(
            (fevers == 0 && raised == 0) || (1..=fevers).contains(&raised),
            "terminal {terminal} in {room}: {fevers} fevers, {raised} fever alerts"
        );
    }
    for a in &alerts {
        let detail = a["detail"].as_str().unwrap_or_default();
        assert!(!detail.contains("M0"), "an alert names a member: {detail}");
        assert!(
            ["over_capacity", "fever", "device_stale"]
                .contains(&a["alert"].as_str().unwrap_or_default()),
            "no device went offline, the clock was synchronised and the outbox never filled: {a}"
        );
    }
}
