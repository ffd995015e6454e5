//! A real mosquitto (Debian's) on a free loopback port, as the hall's central broker.
//!
//! It runs without persistence, so stopping and starting it again on the same port is a broker
//! that lost every session, retained message and queued publish: the outage the gateway has to
//! survive. It logs to stderr, which is unbuffered (its stdout is block-buffered when it is a
//! file, and a killed broker would take its last lines with it).
//!
//! An *observer* is a second mosquitto that the central broker bridges the hall's topics to.
//! The bridge subscribes inside the central broker before the broker accepts its first client,
//! so nothing the gateway publishes after a restart can slip past a watcher that is still
//! reconnecting: a watcher on the observer sees every publish without racing the gateway.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::free_port;
use super::process::Process;

/// How long mosquitto may take to start listening.
const START_LIMIT: Duration = Duration::from_secs(10);

pub struct Mosquitto {
    pub port: u16,
    pub process: Process,
    conf: PathBuf,
}

impl Mosquitto {
    /// Starts a broker on a free port.
    pub async fn start(dir: &Path, name: &str) -> anyhow::Result<Self> {
        Self::start_with(dir, name, None).await
    }

    /// Starts a broker on a free port that forwards everything under `topic_prefix` to the
    /// broker at `observer_port`.
    pub async fn start_bridged(
        dir: &Path,
        name: &str,
        topic_prefix: &str,
        observer_port: u16,
    ) -> anyhow::Result<Self> {
        Self::start_with(dir, name, Some((topic_prefix, observer_port))).await
    }

    async fn start_with(
        dir: &Path,
        name: &str,
        bridge: Option<(&str, u16)>,
    ) -> anyhow::Result<Self> {
        Self::start_with_config(dir, name, |port| config_text(port, bridge)).await
    }

    /// Starts a broker whose whole config is `config(port)`, for tests that need listeners
    /// of their own (TLS, logins); it is up once it accepts connections on `port`.
    pub async fn start_with_config(
        dir: &Path,
        name: &str,
        config: impl Fn(u16) -> String,
    ) -> anyhow::Result<Self> {
        let program = find_mosquitto()?;
        let mut last_error = None;
        // A free port can be taken by someone else before mosquitto binds it; try a few.
        for _ in 0..3 {
            let port = free_port();
            let conf = dir.join(format!("{name}.conf"));
            std::fs::write(&conf, config(port))
                .with_context(|| format!("cannot write {}", conf.display()))?;
            let process =
                Process::start(name, dir, &program, vec!["-c".into(), conf.clone().into()])?;
            let mut broker = Mosquitto {
                port,
                process,
                conf,
            };
            match broker.wait_listening().await {
                Ok(()) => return Ok(broker),
                Err(error) => {
                    last_error = Some(error.context(broker.process.log_report()));
                    broker.process.stop(Duration::from_secs(2));
                }
            }
        }
        Err(last_error.expect("the loop ran at least once and failed"))
    }

    /// Stops the broker (SIGTERM; SIGKILL if it lingers). Every client loses its connection.
    pub fn stop(&mut self) {
        self.process.stop(Duration::from_secs(5));
    }

    /// Starts the broker again on the same port, with nothing remembered.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.process.spawn()?;
        self.wait_listening()
            .await
            .with_context(|| format!("mosquitto did not come back on port {}", self.port))
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Waits until this very process says it runs and the port accepts connections; a port
    /// that answers while our mosquitto failed to bind it would be someone else's.
    async fn wait_listening(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_LIMIT;
        let starts_before = self.process.log_text().matches(" running").count();
        loop {
            if let Some(status) = self.process.exit_status() {
                bail!(
                    "mosquitto ({}) exited at start ({status}) on port {}",
                    self.conf.display(),
                    self.port
                );
            }
            let says_running = self.process.log_text().matches(" running").count() > starts_before;
            if says_running
                && tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                    .await
                    .is_ok()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "mosquitto did not accept connections on port {} within {START_LIMIT:?}",
                    self.port
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

fn config_text(port: u16, bridge: Option<(&str, u16)>) -> String {
    let mut text = format!(
        "# Written by the hallgate test harness.\n\
         listener {port} 127.0.0.1\n\
         allow_anonymous true\n\
         persistence false\n\
         log_dest stderr\n\
         connection_messages true\n"
    );
    if let Some((prefix, observer_port)) = bridge {
        text.push_str(&format!(
            "\n# Forward the hall's topics to the observer broker, QoS 1, retain flags kept.\n\
             connection observer\n\
             address 127.0.0.1:{observer_port}\n\
             remote_clientid bridge-{port}\n\
             topic {prefix}/# out 1\n\
             restart_timeout 1\n"
        ));
    }
    text
}

/// mosquitto lives in /usr/sbin on Debian, which is not on every user's PATH.
fn find_mosquitto() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("mosquitto"))
        .find(|candidate| candidate.is_file())
        .context(
            "mosquitto is not installed (not on PATH, nor in /usr/sbin): the black-box tests need a \
             real broker. Run `bash scripts/test.sh`, which installs it \
             (apt-get install mosquitto mosquitto-clients), or install it yourself",
        )
}
