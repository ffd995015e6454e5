//! Bookings from the centre, end to end: a real mosquitto as the central broker, `hallgate
//! simulate` serving the people counters, and `hallgate run` in between.
//!
//! The centre publishes one retained bookings message with two good bookings and one of each
//! kind of bad one. The gateway must name every bad booking and its reason in its log, accept
//! the good ones (log and `/metrics`), and send a `booking_report` on `situation/booking` with
//! the contract's fields (and never the title) when the first, short slot ends. Then the
//! centre clears its retained message and the gateway restarts: the second booking must still
//! be reported, from the stored set alone, since the broker no longer has it to give. Last, a
//! message for another hall and one over 64 KiB are rejected whole and leave the set alone.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use common::hall::HallPlan;
use common::process::Traffic;
use common::rig::Rig;

const HALL: &str = "t-bookings";
/// Never to appear in anything the gateway publishes.
const TITLE: &str = "Calligraphy class with Mrs Wang";

/// The booking fields of the contract, with the common ones.
const REPORT_FIELDS: [&str; 16] = [
    "attendance",
    "attendance_share",
    "booking_id",
    "clock_synced",
    "district",
    "end",
    "expected_attendance",
    "hall_id",
    "held",
    "kind",
    "msg_id",
    "occupancy_mean",
    "room",
    "schema_version",
    "start",
    "start_delay_minutes",
];

fn booking(id: &str, room: &str, start: Timestamp, end: Timestamp, expected: u64) -> Value {
    json!({
        "id": id,
        "room": room,
        "start": start.to_string(),
        "end": end.to_string(),
        "title": TITLE,
        "expected_attendance": expected,
    })
}

/// `mosquitto_pub` against the central broker: `payload` None clears the retained message.
fn publish_retained(port: u16, topic: &str, payload: Option<&str>) -> anyhow::Result<()> {
    let mut command = std::process::Command::new("mosquitto_pub");
    command
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-r"])
        .args(["-t", topic, "-i", "the-centre"]);
    match payload {
        Some(text) => command.args(["-m", text]),
        None => command.arg("-n"),
    };
    let status = command
        .status()
        .context("mosquitto_pub runs (Debian's mosquitto-clients)")?;
    ensure!(status.success(), "mosquitto_pub failed: {status}");
    Ok(())
}

/// The booking reports the watcher has seen, by booking id.
fn booking_reports(rig: &Rig) -> anyhow::Result<Vec<Value>> {
    let suffix = "/situation/booking";
    Ok(rig
        .watcher()?
        .seen()
        .raw
        .iter()
        .filter(|(topic, _)| topic.ends_with(suffix))
        .filter_map(|(_, payload)| serde_json::from_slice(payload).ok())
        .collect())
}

async fn wait_for_report(rig: &Rig, id: &str, until: Instant) -> anyhow::Result<Value> {
    loop {
        if let Some(report) = booking_reports(rig)?
            .into_iter()
            .find(|r| r["booking_id"] == id)
        {
            return Ok(report);
        }
        if Instant::now() >= until {
            bail!("no booking_report for {id} arrived on situation/booking in time");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Checks a report against the contract and the booking it is for.
fn check_report(
    report: &Value,
    id: &str,
    start: Timestamp,
    end: Timestamp,
    expected: u64,
) -> anyhow::Result<()> {
    let mut keys: Vec<&str> = report
        .as_object()
        .context("a report is an object")?
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    ensure!(
        keys == REPORT_FIELDS,
        "the report's fields are not the contract's: {keys:?}"
    );
    ensure!(report["kind"] == "booking_report", "kind: {report}");
    ensure!(report["schema_version"] == 1, "schema_version: {report}");
    ensure!(report["hall_id"] == HALL, "hall_id: {report}");
    ensure!(
        report["msg_id"] == format!("{HALL}:booking_report:{id}:r0"),
        "msg_id: {report}"
    );
    ensure!(report["room"] == "room-1", "room: {report}");
    let time = |field: &str| -> anyhow::Result<Timestamp> {
        report[field]
            .as_str()
            .with_context(|| format!("{field} is a string"))?
            .parse()
            .with_context(|| format!("{field} is RFC 3339"))
    };
    ensure!(
        time("start")? == start && time("end")? == end,
        "the slot: {report}"
    );
    ensure!(
        report["expected_attendance"] == expected,
        "expected_attendance: {report}"
    );
    let attendance = report["attendance"]
        .as_u64()
        .context("attendance is a whole number")?;
    let held = report["held"].as_bool().context("held is a bool")?;
    // held_share = 0.5: held at attendance ≥ ceil(0.5 × expected).
    ensure!(
        held == (attendance * 2 >= expected),
        "held does not follow from attendance: {report}"
    );
    let share = report["attendance_share"]
        .as_f64()
        .context("attendance_share is a number")?;
    let want = (attendance as f64 / expected as f64 * 1000.0).round() / 1000.0;
    ensure!((share - want).abs() < 1e-9, "attendance_share: {report}");
    ensure!(
        report["start_delay_minutes"].is_null() != held,
        "a start delay exactly when held: {report}"
    );
    let mean = report["occupancy_mean"]
        .as_f64()
        .context("occupancy_mean is a number")?;
    ensure!(
        mean >= 0.0 && mean <= attendance as f64,
        "occupancy_mean: {report}"
    );
    Ok(())
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn wait_for_metric(
    rig: &Rig,
    series: &str,
    want: f64,
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    let addr = rig.plan.status_address();
    loop {
        let path = "/metrics".to_string();
        let got = tokio::task::spawn_blocking(move || common::http::get(addr, &path, &[]))
            .await?
            .ok()
            .and_then(|a| metric(&a.body, series));
        if got == Some(want) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("/metrics {series} is {got:?}, not {want}, after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts the gateway with room-1 bookable (room-2 is not).
fn start_gateway(rig: &mut Rig) -> anyhow::Result<()> {
    let config = rig.write_gateway_config()?;
    let text = std::fs::read_to_string(&config)?;
    let room = "id = \"room-1\"\ncapacity = 200\n";
    ensure!(
        text.matches(room).count() == 1,
        "the plan's room-1 is there"
    );
    std::fs::write(
        &config,
        text.replacen(room, &format!("{room}bookable = true\n"), 1),
    )?;
    let port = rig.broker()?.port;
    let gateway = common::process::gateway(rig.dir(), &config, port, &rig.data_dir)?;
    rig.gateway = Some(gateway);
    Ok(())
}

/// Turns a Unix time into an `Instant` on the test's clock.
fn instant_at(t: Timestamp) -> Instant {
    common::instant_at_unix(Duration::from_millis(t.as_millisecond().max(0) as u64))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookings_from_the_centre_are_validated_reported_and_kept_across_a_restart() {
    let mut plan = HallPlan::lobby_with_function_rooms(HALL, 2);
    plan.extra_sections =
        "\n[situation]\nheld_share = 0.5\nunbooked_min_minutes = 1\nbookings_topic = \"bookings\"\n"
            .into();
    let rig = Rig::new("bookings", plan).expect("a temporary directory can be created");
    rig.run(Duration::from_secs(480), async |rig| {
        rig.start_broker().await?;
        rig.start_simulator(Traffic {
            seed: 55,
            warmup: Duration::from_secs(5),
            duration: Duration::from_secs(330),
            arrivals_per_min: 120.0,
            mean_dwell_secs: 40.0,
        })?;
        // The situation reports are checked against the bookings and themselves, not against
        // the truth: the traffic need not wait for the gateway's baselines.
        rig.release_traffic()?;

        // The short slot starts now and ends a minute after the next minute boundary; the
        // second starts a minute after that, so the restart falls between them.
        let now = Timestamp::now()
            .round(jiff::Unit::Second)
            .context("now rounds")?;
        let boundary = Timestamp::from_second(now.as_second().div_euclid(60) * 60 + 60)?;
        let a = (now, boundary + SignedDuration::from_secs(60));
        let b = (
            a.1 + SignedDuration::from_secs(60),
            a.1 + SignedDuration::from_secs(120),
        );
        let far = now + SignedDuration::from_hours(20 * 24);
        let later = |hours: i64| b.1 + SignedDuration::from_hours(hours);
        let mut extra = booking("b-extra", "room-1", later(2), later(3), 4);
        extra["colour"] = json!("red");
        let rejected: [(&str, &str, Value); 8] = [
            ("b-gym", "unknown_room", booking("b-gym", "gym", b.0, b.1, 4)),
            (
                "b-room-2",
                "room_not_bookable",
                booking("b-room-2", "room-2", b.0, b.1, 4),
            ),
            (
                "b-backwards",
                "end_not_after_start",
                booking("b-backwards", "room-1", later(5), later(4), 4),
            ),
            (
                "b-crowd",
                "bad_attendance",
                booking("b-crowd", "room-1", later(0), later(1), 5000),
            ),
            (
                "b-overlap",
                "overlap",
                booking("b-overlap", "room-1", a.0, a.1, 4),
            ),
            ("b-extra", "unknown_field", extra),
            (
                "b-far",
                "too_far_ahead",
                booking("b-far", "room-1", far, far + SignedDuration::from_hours(1), 4),
            ),
            (
                "b-short",
                "duplicate_id",
                booking("b-short", "room-1", later(6), later(7), 4),
            ),
        ];
        let mut bookings = vec![
            booking("b-short", "room-1", a.0, a.1, 4),
            booking("b-after-restart", "room-1", b.0, b.1, 4),
        ];
        bookings.extend(rejected.iter().map(|(_, _, v)| v.clone()));
        let message = json!({"schema_version": 1, "hall_id": HALL, "bookings": bookings});
        let topic = format!("{}/bookings", rig.plan.topic_base());
        let port = rig.broker()?.port;
        // Retained and published before the gateway exists: it arrives with the subscription.
        publish_retained(port, &topic, Some(&message.to_string()))?;

        start_gateway(rig)?;
        rig.wait_for_gateway_log("accepted 2 bookings, rejected 8", Duration::from_secs(20))
            .await?;
        let log = rig.gateway()?.log_text();
        for (id, reason, _) in &rejected {
            ensure!(
                log.lines().any(|l| l.contains("rejected a booking from the centre")
                    && l.contains(&format!("booking_id={id} "))
                    && l.contains(&format!("reason={reason} "))),
                "the log should name booking {id} and reason {reason} on one WARN line"
            );
        }
        ensure!(!log.contains(TITLE), "the log must not repeat a booking's title");
        wait_for_metric(rig, "hallgate_bookings_accepted_total", 2.0, Duration::from_secs(10))
            .await?;
        wait_for_metric(rig, "hallgate_bookings_stored", 2.0, Duration::from_secs(10)).await?;
        for reason in ["unknown_room", "overlap", "duplicate_id"] {
            let series = format!("hallgate_bookings_rejected_total{{reason=\"{reason}\"}}");
            wait_for_metric(rig, &series, 1.0, Duration::from_secs(10)).await?;
        }

        // The short slot ends: its report comes with the minute that closes after it.
        let report = wait_for_report(rig, "b-short", instant_at(a.1) + Duration::from_secs(60))
            .await?;
        eprintln!("booking report before the restart: {report}");
        check_report(&report, "b-short", a.0, a.1, 4)?;

        // The centre clears its retained message; the gateway keeps what it stored, and after
        // a restart the broker has nothing to give it.
        publish_retained(port, &topic, None)?;
        rig.wait_for_gateway_log(
            "the centre cleared its retained bookings message",
            Duration::from_secs(10),
        )
        .await?;
        let gateway = rig.gateway()?;
        gateway.sigterm()?;
        ensure!(
            gateway.wait_exit(Duration::from_secs(15)).await.is_some(),
            "the gateway should stop on SIGTERM"
        );
        gateway.spawn()?;
        rig.wait_for_gateway_log("started again (start #2)", Duration::from_secs(5))
            .await?;
        wait_for_metric(rig, "hallgate_bookings_stored", 2.0, Duration::from_secs(20)).await?;
        let report = wait_for_report(
            rig,
            "b-after-restart",
            instant_at(b.1) + Duration::from_secs(60),
        )
        .await?;
        eprintln!("booking report after the restart: {report}");
        check_report(&report, "b-after-restart", b.0, b.1, 4)?;
        let log = rig.gateway()?.log_text();
        let after = log
            .split("started again (start #2)")
            .nth(1)
            .context("the log marks the restart")?;
        ensure!(
            !after.contains("bookings, rejected"),
            "after the restart no bookings message should have arrived; the report came from the stored set"
        );
        ensure!(
            after.contains("bookings=2"),
            "the restarted gateway should say it resumed with 2 bookings"
        );

        // A message for another hall and one over 64 KiB are rejected whole (the second
        // unread); the stored set stays.
        let other_hall = json!({"schema_version": 1, "hall_id": "someone-else", "bookings": []});
        publish_retained(port, &topic, Some(&other_hall.to_string()))?;
        rig.wait_for_gateway_log(
            "rejected a bookings message from the centre as a whole",
            Duration::from_secs(10),
        )
        .await?;
        let huge = json!({"schema_version": 1, "hall_id": HALL, "bookings": [], "pad": "x".repeat(70 * 1024)});
        publish_retained(port, &topic, Some(&huge.to_string()))?;
        rig.wait_for_gateway_log("over the size limit, unread", Duration::from_secs(10))
            .await?;
        wait_for_metric(
            rig,
            "hallgate_bookings_messages_rejected_total{reason=\"wrong_hall\"}",
            1.0,
            Duration::from_secs(10),
        )
        .await?;
        wait_for_metric(rig, "hallgate_bookings_stored", 2.0, Duration::from_secs(10)).await?;
        let log = rig.gateway()?.log_text();
        let after = log
            .split("started again (start #2)")
            .nth(1)
            .context("the log marks the restart")?;
        ensure!(
            !after.contains("lost the central broker"),
            "an oversize bookings message must not cost the gateway its connection"
        );

        // Nothing the gateway published carries the title.
        for (topic, payload) in rig.watcher()?.seen().raw {
            if topic.ends_with("/bookings") {
                continue;
            }
            ensure!(
                !String::from_utf8_lossy(&payload).contains("Calligraphy"),
                "{topic} carries the booking's title"
            );
        }
        let reports = booking_reports(rig)?;
        ensure!(
            reports.iter().all(|r| r["booking_id"] != "b-gym"),
            "a rejected booking was reported"
        );
        Ok(())
    })
    .await;
}
