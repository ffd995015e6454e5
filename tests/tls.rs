//! The secure uplink, black box: `hallgate run --uplink mqtts://localhost:PORT` against a
//! real mosquitto with a TLS listener, with certificates each test makes with openssl.
//!
//! Each broker has two listeners: the TLS one on which the gateway reaches it as its central
//! broker (with a login, or client certificates, as the test needs), and a plain loopback one
//! for the test's watcher, which plays the centre's side. What the watcher receives is what the
//! gateway delivered through the TLS listener; the broker's log says which listener each
//! connection came in on.
//!
//! The scenarios: a gateway that trusts the broker's CA and logs in delivers its status, its
//! state and the exact ground truth of a simulated hall, and its password never reaches its
//! log; a wrong password is refused, said once and retried, and nothing is delivered; a broker
//! whose certificate comes from another CA is refused, said once, and the outbox keeps every
//! message for when the CA is right; a broker that demands client certificates turns away a
//! gateway without one and accepts it with one; a login over plain MQTT works, with a
//! warning that the password goes in clear.
//!
//! Run with `bash scripts/test.sh` or `cargo test --test tls` (needs mosquitto,
//! mosquitto_passwd and openssl). A failure prints the logs and keeps the directory.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use common::bins::bin_times;
use common::broker::Mosquitto;
use common::hall::HallPlan;
use common::pki::{Ca, Issued};
use common::process::{Process, Traffic};
use common::rig::Rig;
use common::watcher::Watcher;
use common::{HALLGATE, free_port, run_to_completion};

/// The gateway's login on the TLS listener.
const USERNAME: &str = "hall-tls";

/// What the gateway logs when it does not trust the broker's certificate.
const UNTRUSTED: &str =
    "action needed: the gateway does not trust the central broker's TLS certificate";
/// What it logs when the broker refuses its login.
const LOGIN_REFUSED: &str = "action needed: the central broker refused the gateway's login";
/// What it logs when the broker breaks off the TLS handshake.
const HANDSHAKE_FAILED: &str = "action needed: the TLS handshake with the central broker failed";

/// How the TLS listener lets clients in.
enum Admission<'a> {
    /// Anyone who completes the TLS handshake.
    Anonymous,
    /// Only logins in this mosquitto password file.
    Login { password_file: &'a Path },
    /// Only clients with a certificate signed by the listener's `cafile`.
    ClientCertificate,
}

/// A broker whose TLS listener presents `server` (and checks client certificates against
/// `client_ca`), plus a plain listener on `plain_port` for the watcher.
async fn start_tls_broker(
    dir: &Path,
    name: &str,
    server: &Issued,
    client_ca: &Path,
    admission: Admission<'_>,
    plain_port: u16,
) -> anyhow::Result<Mosquitto> {
    let admission = match admission {
        Admission::Anonymous => "allow_anonymous true\n".to_string(),
        Admission::Login { password_file } => format!(
            "allow_anonymous false\npassword_file {}\n",
            password_file.display()
        ),
        Admission::ClientCertificate => {
            "require_certificate true\nallow_anonymous true\n".to_string()
        }
    };
    let config = |tls_port: u16| {
        format!(
            "# Written by tests/tls.rs.\n\
             # Run as root, mosquitto would switch to the `mosquitto` user, which cannot read the\n\
             # test's private directory (certificates, password file); `root` keeps it as is.\n\
             user root\n\
             per_listener_settings true\n\
             persistence false\n\
             log_dest stderr\n\
             connection_messages true\n\
             \n\
             # The gateway's way in: TLS, as the central broker.\n\
             listener {tls_port} 127.0.0.1\n\
             cafile {ca}\n\
             certfile {cert}\n\
             keyfile {key}\n\
             {admission}\
             \n\
             # The centre's side, for the test's watcher: plain TCP on loopback.\n\
             listener {plain_port} 127.0.0.1\n\
             allow_anonymous true\n",
            ca = client_ca.display(),
            cert = server.cert.display(),
            key = server.key.display(),
        )
    };
    Mosquitto::start_with_config(dir, name, config).await
}

/// A mosquitto password file holding `username` with `password`.
fn password_file(dir: &Path, username: &str, password: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join("mosquitto.passwd");
    let mut command = Command::new("mosquitto_passwd");
    command
        .arg("-c")
        .arg("-b")
        .arg(&path)
        .arg(username)
        .arg(password);
    let out = run_to_completion(command, dir, "mosquitto_passwd", Duration::from_secs(20))
        .context("cannot run mosquitto_passwd (Debian's mosquitto package has it)")?;
    ensure!(
        out.status.success(),
        "mosquitto_passwd failed: {}\n{}",
        out.stdout,
        out.stderr
    );
    Ok(path)
}

/// A password that cannot turn up in a log by chance.
fn fresh_password() -> String {
    format!("pw-{:016x}", rand::random::<u64>())
}

/// A TOML basic string of a path.
fn toml_path(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// `[uplink]` lines: trust `ca`, log in with the password in `password` (a file), present
/// `client` when given.
fn uplink_keys(ca: &Path, login: Option<&Path>, client: Option<&Issued>) -> String {
    let mut text = format!("ca_file = {}\n", toml_path(ca));
    if let Some(password_file) = login {
        text.push_str(&format!(
            "username = \"{USERNAME}\"\npassword_file = {}\n",
            toml_path(password_file)
        ));
    }
    if let Some(client) = client {
        text.push_str(&format!(
            "client_cert_file = {}\nclient_key_file = {}\n",
            toml_path(&client.cert),
            toml_path(&client.key)
        ));
    }
    text
}

/// Writes the gateway's config and starts `hallgate run` against the broker's TLS listener,
/// by the host name its certificate is for.
async fn start_tls_gateway(rig: &mut Rig) -> anyhow::Result<()> {
    let port = rig.broker()?.port;
    let config = rig.write_gateway_config()?;
    let args: Vec<OsString> = vec![
        "run".into(),
        "--config".into(),
        config.into(),
        "--uplink".into(),
        format!("mqtts://localhost:{port}").into(),
        "--data-dir".into(),
        rig.data_dir.clone().into(),
    ];
    rig.gateway = Some(Process::start("gateway", rig.dir(), HALLGATE, args)?);
    Ok(())
}

async fn start_watcher(rig: &mut Rig, plain_port: u16) -> anyhow::Result<()> {
    let id = format!("watcher-{}-{}", rig.name, std::process::id());
    rig.watcher = Some(Watcher::connect(plain_port, &rig.plan.topic_base(), &id).await?);
    Ok(())
}

/// Waits until the broker's log says `line` at least `n` times: the gateway has tried (and
/// retried) by then. (Counting the broker's "New connection" lines would count the harness's
/// own probe of the port too.)
async fn wait_for_broker_log(
    rig: &mut Rig,
    line: &str,
    n: usize,
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        rig.ensure_alive()?;
        let seen = rig.broker()?.process.log_text().matches(line).count();
        if seen >= n {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("the broker's log said {line:?} {seen} times within {limit:?}, not {n}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `sentence` is in the gateway's log exactly once.
fn logged_once(rig: &mut Rig, sentence: &str) -> anyhow::Result<()> {
    let count = rig.gateway()?.log_text().matches(sentence).count();
    ensure!(
        count == 1,
        "the gateway should say {sentence:?} once per outage, not {count} times"
    );
    Ok(())
}

/// The watcher has received nothing at all from the gateway's topics.
fn nothing_delivered(rig: &Rig) -> anyhow::Result<()> {
    let seen = rig.watcher()?.seen();
    ensure!(
        seen.raw.is_empty(),
        "nothing should have been delivered, yet the watcher received: {:?}",
        seen.raw
            .iter()
            .map(|(topic, payload)| format!("{topic}: {}", String::from_utf8_lossy(payload)))
            .collect::<Vec<_>>()
    );
    Ok(())
}

fn password_not_logged(rig: &mut Rig, password: &str) -> anyhow::Result<()> {
    ensure!(
        !rig.gateway()?.log_text().contains(password),
        "the uplink password appears in the gateway's log"
    );
    Ok(())
}

fn rig(name: &str, plan: HallPlan) -> Rig {
    Rig::new(name, plan).expect("a temporary directory can be created")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_delivers_exact_figures_over_tls_with_a_login_and_never_logs_the_password() {
    let plan = HallPlan::lobby_with_function_rooms("t-tls", 2);
    rig("tls-login", plan)
        .run(Duration::from_secs(150), async |rig| {
            let ca = Ca::create(rig.dir(), "city-ca")?;
            let server = ca.issue_server("broker")?;
            let password = fresh_password();
            let passwd = password_file(rig.dir(), USERNAME, &password)?;
            let gateway_password = rig.dir().join("uplink.pass");
            common::write_secret(&gateway_password, &format!("{password}\n"))?;

            let plain_port = free_port();
            let broker = start_tls_broker(
                rig.dir(),
                "mosquitto",
                &server,
                &ca.cert,
                Admission::Login {
                    password_file: &passwd,
                },
                plain_port,
            )
            .await?;
            rig.broker = Some(broker);
            start_watcher(rig, plain_port).await?;

            rig.plan.uplink_extra = uplink_keys(&ca.cert, Some(&gateway_password), None);
            rig.start_simulator(Traffic {
                seed: 71,
                warmup: Duration::from_secs(10),
                duration: Duration::from_secs(15),
                arrivals_per_min: 120.0,
                mean_dwell_secs: 4.0,
            })?;
            start_tls_gateway(rig).await?;

            rig.wait_for_status("online", Duration::from_secs(15))
                .await
                .context("the gateway should announce itself online over TLS")?;
            let counters = rig.plan.simulated_counter_ids();
            rig.wait_until_counters_online(&counters).await?;
            let truth = rig.wait_for_truth(10).await?;
            rig.wait_until_state_matches(&truth, Duration::from_secs(30))
                .await?;

            // It came in on the TLS listener, logged in: mosquitto logs each connection's
            // source address with the listener's port, then the client id and username.
            let tls_port = rig.broker()?.port;
            let broker_log = rig.broker()?.process.log_text();
            let login = broker_log
                .lines()
                .find(|l| l.contains("New client connected from") && l.contains(" as hallgate-t-tls "))
                .context("the broker's log should show the gateway connecting")?;
            ensure!(
                login.contains(&format!("u'{USERNAME}'")),
                "the gateway should log in as {USERNAME}: {login}"
            );
            let source = login
                .split_whitespace()
                .skip_while(|w| *w != "from")
                .nth(1)
                .context("a connect line names its source address")?;
            ensure!(
                broker_log.contains(&format!("New connection from {source} on port {tls_port}.")),
                "the gateway's connection ({source}) should have come in on the TLS listener {tls_port}"
            );
            let log = rig.gateway()?.log_text();
            ensure!(
                log.contains("the uplink uses TLS"),
                "the gateway should say at start that its uplink uses TLS"
            );
            password_not_logged(rig, &password)?;
            Ok(())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_refused_said_once_and_retried_and_nothing_is_delivered() {
    let plan = HallPlan::lobby_with_function_rooms("t-tls-badpw", 1);
    rig("tls-bad-password", plan)
        .run(Duration::from_secs(90), async |rig| {
            let ca = Ca::create(rig.dir(), "city-ca")?;
            let server = ca.issue_server("broker")?;
            let passwd = password_file(rig.dir(), USERNAME, &fresh_password())?;
            let wrong = fresh_password();
            let gateway_password = rig.dir().join("uplink.pass");
            common::write_secret(&gateway_password, &format!("{wrong}\n"))?;

            let plain_port = free_port();
            let broker = start_tls_broker(
                rig.dir(),
                "mosquitto",
                &server,
                &ca.cert,
                Admission::Login {
                    password_file: &passwd,
                },
                plain_port,
            )
            .await?;
            rig.broker = Some(broker);
            start_watcher(rig, plain_port).await?;
            rig.plan.uplink_extra = uplink_keys(&ca.cert, Some(&gateway_password), None);
            start_tls_gateway(rig).await?;

            rig.wait_for_gateway_log(LOGIN_REFUSED, Duration::from_secs(20))
                .await?;
            // It keeps trying (the test's backoff is capped at one second), but says so once.
            wait_for_broker_log(
                rig,
                "disconnected, not authorised.",
                4,
                Duration::from_secs(30),
            )
            .await?;
            logged_once(rig, LOGIN_REFUSED)?;
            nothing_delivered(rig)?;
            password_not_logged(rig, &wrong)?;
            Ok(())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_certificate_from_another_ca_is_refused_and_the_outbox_keeps_every_message() {
    let plan = HallPlan::lobby_with_function_rooms("t-tls-otherca", 1);
    rig("tls-other-ca", plan)
        .run(Duration::from_secs(120), async |rig| {
            let trusted = Ca::create(rig.dir(), "city-ca")?;
            let other = Ca::create(rig.dir(), "other-ca")?;
            let impostor = other.issue_server("impostor")?;

            let plain_port = free_port();
            let broker = start_tls_broker(
                rig.dir(),
                "mosquitto",
                &impostor,
                &other.cert,
                Admission::Anonymous,
                plain_port,
            )
            .await?;
            rig.broker = Some(broker);
            start_watcher(rig, plain_port).await?;
            rig.plan.uplink_extra = uplink_keys(&trusted.cert, None, None);

            // A backlog is waiting in the outbox, as after an outage.
            let config = rig.write_gateway_config()?;
            let seeded = seed_backlog(&config, 20)?;
            start_tls_gateway(rig).await?;

            rig.wait_for_gateway_log(UNTRUSTED, Duration::from_secs(20))
                .await?;
            // The gateway breaks off the handshake with an alert, and mosquitto logs it.
            wait_for_broker_log(rig, "alert", 4, Duration::from_secs(30)).await?;
            let log = rig.gateway()?.log_text();
            ensure!(
                log.contains("it is signed by a CA that uplink.ca_file does not hold"),
                "the log should say why the certificate is not trusted"
            );
            logged_once(rig, UNTRUSTED)?;
            nothing_delivered(rig)?;

            // Trusting the right CA, the same gateway and outbox deliver every seeded minute:
            // nothing was sent to the untrusted broker or lost meanwhile.
            rig.gateway()?.sigterm()?;
            rig.gateway()?
                .wait_exit(Duration::from_secs(15))
                .await
                .context("the gateway should stop on SIGTERM")?;
            rig.plan.uplink_extra = uplink_keys(&other.cert, None, None);
            start_tls_gateway(rig).await?;
            rig.wait_for_status("online", Duration::from_secs(15))
                .await
                .context("trusting the broker's CA, the gateway should connect")?;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                rig.ensure_alive()?;
                let minutes: BTreeSet<i64> = rig
                    .watcher()?
                    .aggregates()
                    .values()
                    .filter_map(|bin| bin_times(bin).ok())
                    .map(|(start, _)| start.as_second())
                    .collect();
                let missing: Vec<i64> = (seeded.0..=seeded.1)
                    .step_by(60)
                    .filter(|m| !minutes.contains(m))
                    .collect();
                if missing.is_empty() {
                    break;
                }
                ensure!(
                    Instant::now() < deadline,
                    "seeded minutes never delivered: {missing:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_requires_client_certificates_accepts_the_gateway_only_with_one() {
    let plan = HallPlan::lobby_with_function_rooms("t-tls-client", 1);
    rig("tls-client-cert", plan)
        .run(Duration::from_secs(90), async |rig| {
            let ca = Ca::create(rig.dir(), "city-ca")?;
            let server = ca.issue_server("broker")?;
            let client = ca.issue_client("hall-client", "t-tls-client")?;

            let plain_port = free_port();
            let broker = start_tls_broker(
                rig.dir(),
                "mosquitto",
                &server,
                &ca.cert,
                Admission::ClientCertificate,
                plain_port,
            )
            .await?;
            rig.broker = Some(broker);
            start_watcher(rig, plain_port).await?;

            // Without a certificate of its own the broker turns it away.
            rig.plan.uplink_extra = uplink_keys(&ca.cert, None, None);
            start_tls_gateway(rig).await?;
            rig.wait_for_gateway_log(HANDSHAKE_FAILED, Duration::from_secs(20))
                .await?;
            wait_for_broker_log(
                rig,
                "peer did not return a certificate",
                3,
                Duration::from_secs(30),
            )
            .await?;
            logged_once(rig, HANDSHAKE_FAILED)?;
            nothing_delivered(rig)?;
            rig.gateway()?.sigterm()?;
            rig.gateway()?
                .wait_exit(Duration::from_secs(15))
                .await
                .context("the gateway should stop on SIGTERM")?;

            // With its certificate it is let in.
            rig.plan.uplink_extra = uplink_keys(&ca.cert, None, Some(&client));
            start_tls_gateway(rig).await?;
            rig.wait_for_status("online", Duration::from_secs(15))
                .await
                .context("with its client certificate the gateway should connect")?;
            ensure!(
                rig.watcher()?.state().is_some(),
                "the retained state should follow the status"
            );
            Ok(())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_over_plain_mqtt_works_with_a_warning_that_the_password_goes_in_clear() {
    let plan = HallPlan::lobby_with_function_rooms("t-plain-login", 1);
    rig("plain-login", plan)
        .run(Duration::from_secs(60), async |rig| {
            let password = fresh_password();
            let passwd = password_file(rig.dir(), USERNAME, &password)?;
            let gateway_password = rig.dir().join("uplink.pass");
            common::write_secret(&gateway_password, &format!("{password}\n"))?;
            let plain_port = free_port();
            let config = |login_port: u16| {
                format!(
                    "# Written by tests/tls.rs.\n\
                     user root\n\
                     per_listener_settings true\n\
                     persistence false\n\
                     log_dest stderr\n\
                     connection_messages true\n\
                     listener {login_port} 127.0.0.1\n\
                     allow_anonymous false\n\
                     password_file {}\n\
                     listener {plain_port} 127.0.0.1\n\
                     allow_anonymous true\n",
                    passwd.display()
                )
            };
            rig.broker = Some(Mosquitto::start_with_config(rig.dir(), "mosquitto", config).await?);
            start_watcher(rig, plain_port).await?;
            rig.plan.uplink_extra = format!(
                "username = \"{USERNAME}\"\npassword_file = {}\n",
                toml_path(&gateway_password)
            );
            // The harness's usual gateway: `--uplink mqtt://127.0.0.1:PORT`.
            rig.start_gateway()?;
            rig.wait_for_status("online", Duration::from_secs(15))
                .await
                .context("the gateway should log in over plain MQTT")?;
            rig.wait_for_gateway_log(
                "the uplink password goes over plain TCP",
                Duration::from_secs(5),
            )
            .await?;
            password_not_logged(rig, &password)?;
            Ok(())
        })
        .await;
}

/// Seeds `minutes` minute bins ending a minute ago into the outbox of `config` (the gateway
/// must not be running); returns the first and last bin start (Unix seconds).
fn seed_backlog(config: &Path, minutes: u32) -> anyhow::Result<(i64, i64)> {
    let end = jiff::Timestamp::now().as_second() / 60 * 60 - 60;
    let seeded = common::backlog::seed_backlog(config, minutes, end, 7)?;
    Ok((seeded.first_bin, seeded.last_bin))
}
