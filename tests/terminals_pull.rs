//! Terminals the gateway reads (pull clients), black box: `hallgate simulate-terminals` serves
//! Hikvision `AcsEvent` searches and Dahua `eventManager.cgi` streams on loopback with Digest
//! logins and a lock-out after five failed logins; `hallgate run` reads them.
//!
//! - A Hikvision terminal read by `hikvision_pull`: the gateway killed with `kill -9` while the
//!   device's log grows, restarted, re-reads the gap from the log; the figures equal the truth.
//! - A Dahua terminal read by `dahua_stream`: the figures equal the truth.
//! - A wrong password: the gateway stops before the device would lock the account (the
//!   device saw at most two failed logins, never a lock-out) and says so (log, status page).
//!
//! These need the pull clients (branch `pull`): until it is merged the gateway does not read
//! pulled terminals, so the tests are ignored; run them with
//! `cargo test --test terminals_pull -- --ignored` after the merge and drop the `ignore`s.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::Value;

use common::hall::HallPlan;
use common::http_terminals::{HttpTerminal, terminal_sections};
use common::process::Process;
use common::rig::Rig;
use common::terminal_figures::{final_line, final_totals, num, read_truth, wait_for_figures};
use common::{HALLGATE, free_port};

const HIK_PULL: &str = "FC8200H33333333";
const DAHUA: &str = "7G0A1B2PAZ00042";
const DEVICE_SECRET: &str = "device-login-secret-77";

fn pulled(id: &str, profile: &str, room: &str, transport: &str) -> HttpTerminal {
    let mut t = HttpTerminal::push(id, profile, room)
        .address(&format!("127.0.0.1:{}", free_port()))
        .username("hallgate")
        .password(DEVICE_SECRET);
    t.transport = transport.into();
    if transport == "hikvision_pull" {
        t.poll_interval_ms = Some(500);
    }
    t
}

/// A lobby and two rooms, no people counters, the given pulled terminals.
fn pull_rig(name: &str, terminals: &[HttpTerminal]) -> anyhow::Result<Rig> {
    let mut plan = HallPlan::lobby_with_function_rooms(&format!("t-{name}"), 2);
    plan.counters.clear();
    let mut rig = Rig::new(name, plan)?;
    rig.plan.extra_sections = terminal_sections(rig.dir(), terminals)?;
    Ok(rig)
}

async fn start_gateway(rig: &mut Rig) -> anyhow::Result<PathBuf> {
    rig.start_broker().await?;
    let config = rig.write_gateway_config()?;
    rig.start_gateway()?;
    rig.wait_for_gateway_log("hallgate is running", Duration::from_secs(30))
        .await?;
    Ok(config)
}

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

/// Waits for the truth's final line (the simulator may linger after it, serving its logs).
async fn wait_for_final_line(
    sim: &mut Process,
    truth: &Path,
    limit: Duration,
) -> anyhow::Result<Vec<Value>> {
    let deadline = Instant::now() + limit;
    loop {
        if truth.exists() {
            let lines = read_truth(truth).unwrap_or_default();
            if final_line(&lines).is_ok() {
                return Ok(lines);
            }
        }
        if let Some(status) = sim.exit_status() {
            bail!(
                "simulate-terminals ended ({status}) without a final line:\n{}",
                common::tail(&sim.log_text(), 30)
            );
        }
        if Instant::now() >= deadline {
            bail!("no final truth line within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn hall_passages(state: &Value) -> u64 {
    num(&state["hall"]["passages_today"], "passages")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the pull clients (branch pull): run with --ignored after the merge"]
async fn a_pulled_terminal_s_log_is_read_again_after_a_kill_9_and_the_figures_equal_the_truth() {
    let terminals = [pulled(
        HIK_PULL,
        "hikvision-isapi",
        "lobby",
        "hikvision_pull",
    )];
    let rig = pull_rig("pull-kill9", &terminals).expect("rig");
    rig.run(Duration::from_secs(150), async |rig| {
        let config = start_gateway(rig).await?;
        let truth = rig.dir().join("truth.jsonl");
        let mut sim = start_simulator(
            rig,
            &config,
            &truth,
            &[
                "--seed",
                "17",
                "--passages",
                "90",
                "--rate-per-sec",
                "3",
                "--resend-share",
                "0.05",
                "--linger-secs",
                "120",
                "--drain-secs",
                "30",
            ],
        )?;
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            rig.ensure_alive()?;
            sim.ensure_running()?;
            if rig
                .watcher()?
                .state()
                .is_some_and(|s| hall_passages(&s) >= 20)
            {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "the gateway did not count 20 passages read from the terminal within 40 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        rig.gateway()?.kill9()?;
        // The power cut: the device's log grows meanwhile.
        tokio::time::sleep(Duration::from_secs(4)).await;
        rig.gateway()?.spawn()?;
        let lines = wait_for_final_line(&mut sim, &truth, Duration::from_secs(90)).await?;
        let last = final_line(&lines)?.clone();
        ensure!(
            last["complete"] == Value::Bool(true),
            "records never read from the device: {last}"
        );
        let report = &last["terminals"][HIK_PULL];
        ensure!(
            num(report, "failed_logins") == 0 && num(report, "lockouts") == 0,
            "{report}"
        );
        ensure!(
            num(report, "max_connections") <= 1,
            "more than one connection to the device at once: {report}"
        );
        let totals = final_totals(&lines)?.clone();
        ensure!(num(&totals["hall"], "passages") >= 60, "{totals}");
        // The simulator lingers, serving its log: the restarted gateway can read the gap.
        wait_for_figures(rig, &totals, Duration::from_secs(60)).await?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the pull clients (branch pull): run with --ignored after the merge"]
async fn a_dahua_event_stream_gives_the_figures_of_the_truth() {
    let terminals = [pulled(DAHUA, "dahua-access", "room-1", "dahua_stream")];
    let rig = pull_rig("dahua-stream", &terminals).expect("rig");
    rig.run(Duration::from_secs(120), async |rig| {
        let config = start_gateway(rig).await?;
        let truth = rig.dir().join("truth.jsonl");
        let mut sim = start_simulator(
            rig,
            &config,
            &truth,
            &[
                "--seed",
                "29",
                "--passages",
                "60",
                "--rate-per-sec",
                "4",
                "--resend-share",
                "0.1",
                "--fever-share",
                "0.05",
                "--linger-secs",
                "60",
                "--drain-secs",
                "30",
            ],
        )?;
        let lines = wait_for_final_line(&mut sim, &truth, Duration::from_secs(70)).await?;
        let last = final_line(&lines)?.clone();
        ensure!(last["complete"] == Value::Bool(true), "{last}");
        let report = &last["terminals"][DAHUA];
        ensure!(
            num(report, "failed_logins") == 0 && num(report, "max_connections") <= 1,
            "{report}"
        );
        let totals = final_totals(&lines)?.clone();
        ensure!(num(&totals["hall"], "passages") >= 50, "{totals}");
        wait_for_figures(rig, &totals, Duration::from_secs(30)).await?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the pull clients (branch pull): run with --ignored after the merge"]
async fn a_wrong_device_password_stops_the_gateway_before_the_device_locks_the_account_and_says_so()
{
    let terminals = [pulled(
        HIK_PULL,
        "hikvision-isapi",
        "lobby",
        "hikvision_pull",
    )];
    let rig = pull_rig("pull-wrong-password", &terminals).expect("rig");
    rig.run(Duration::from_secs(120), async |rig| {
        let config = start_gateway(rig).await?;
        // The device's own config: the same terminal with the password it really has.
        let text = std::fs::read_to_string(&config)?;
        let gateway_file = rig.dir().join("terminal-0.pass");
        let device_file = common::http_terminals::password_file(
            rig.dir(),
            "device.pass",
            "the-real-device-password-1",
        )?;
        let device_text = text.replace(
            &gateway_file.display().to_string(),
            &device_file.display().to_string(),
        );
        ensure!(
            device_text != text,
            "the password file is not in the config"
        );
        let device_config = rig.dir().join("device.toml");
        std::fs::write(&device_config, device_text)?;
        let truth = rig.dir().join("truth.jsonl");
        let mut sim = start_simulator(
            rig,
            &device_config,
            &truth,
            &[
                "--seed",
                "3",
                "--passages",
                "20",
                "--rate-per-sec",
                "2",
                "--drain-secs",
                "15",
                "--lockout-secs",
                "600",
            ],
        )?;
        // The gateway says so on the status page.
        let status = rig.plan.status_address();
        let deadline = Instant::now() + Duration::from_secs(40);
        let page = loop {
            rig.ensure_alive()?;
            let page = common::http::get(status, "/", &[])?;
            if page.body.contains(HIK_PULL)
                && (page.body.contains("登录失败") || page.body.to_lowercase().contains("login"))
            {
                break page;
            }
            if Instant::now() >= deadline {
                bail!(
                    "the status page did not show terminal {HIK_PULL}'s refused login within \
                     40 s:\n{}",
                    page.body
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        ensure!(page.status == 200, "{}", page.status);
        // Over the whole run (the simulator's end is the condition), at most two failed
        // logins reached the device, so it never locked the account.
        match sim.wait_exit(Duration::from_secs(60)).await {
            Some(_) => {}
            None => bail!("the simulator did not finish"),
        }
        let lines = read_truth(&truth)?;
        let report = final_line(&lines)?["terminals"][HIK_PULL].clone();
        ensure!(
            (1..=2).contains(&num(&report, "failed_logins"))
                && num(&report, "lockouts") == 0
                && num(&report, "refused_while_locked") == 0,
            "the device saw the gateway's failed logins: {report}"
        );
        let log = rig.gateway()?.log_text();
        ensure!(
            log.lines()
                .any(|l| l.contains("ERROR") && l.contains(HIK_PULL)),
            "no ERROR in the gateway's log names terminal {HIK_PULL}"
        );
        let state = rig.watcher()?.state().context("a state")?;
        ensure!(
            hall_passages(&state) == 0,
            "passages counted without a login: {}",
            state["hall"]
        );
        Ok(())
    })
    .await;
}
