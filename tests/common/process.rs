//! Child processes of a test: `hallgate run`, `hallgate simulate` and mosquitto.
//!
//! Each writes stdout and stderr, interleaved, to one log file in the test's directory, so a
//! failure can show what every process said. Restarts append to the same log under a marker
//! line. A process still running when its wrapper is dropped is killed, so a failed test
//! leaves nothing behind.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{HALLGATE, LOG_TAIL_LINES, strip_ansi, tail, unix_now};

/// One long-running child process and its log.
pub struct Process {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    log: PathBuf,
    /// Extra environment for the child (e.g. systemd's `NOTIFY_SOCKET`).
    envs: Vec<(OsString, OsString)>,
    child: Option<Child>,
    starts: u32,
}

impl Process {
    /// Starts `program args…`, logging to `dir/{name}.log`.
    pub fn start(
        name: &str,
        dir: &Path,
        program: impl Into<PathBuf>,
        args: Vec<OsString>,
    ) -> anyhow::Result<Self> {
        Process::start_with_env(name, dir, program, args, Vec::new())
    }

    /// As [`Process::start`], with extra environment variables.
    pub fn start_with_env(
        name: &str,
        dir: &Path,
        program: impl Into<PathBuf>,
        args: Vec<OsString>,
        envs: Vec<(OsString, OsString)>,
    ) -> anyhow::Result<Self> {
        let mut process = Process {
            name: name.to_string(),
            program: program.into(),
            args,
            log: dir.join(format!("{name}.log")),
            envs,
            child: None,
            starts: 0,
        };
        process.spawn()?;
        Ok(process)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Starts the process again with the same arguments (it must not be running).
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            bail!("{} is already running", self.name);
        }
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot open {}", self.log.display()))?;
        if self.starts > 0 {
            writeln!(
                log,
                "===== test harness: {} started again (start #{}) at unix {:.3} =====",
                self.name,
                self.starts + 1,
                unix_now().as_secs_f64()
            )?;
        }
        let stderr = log.try_clone().context("cannot share the log file")?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            // Plain logs: they are read by people and searched by tests.
            .env("NO_COLOR", "1")
            .env_remove("JOURNAL_STREAM")
            .env(
                "RUST_LOG",
                std::env::var("HALLGATE_TEST_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .spawn()
            .with_context(|| format!("cannot start {} ({})", self.name, self.program.display()))?;
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        self.exit_status().is_none() && self.child.is_some()
    }

    /// `Some(status)` once the process has exited (reaping it).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Fails if the process has exited, saying how.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        match self.exit_status() {
            Some(status) => bail!(
                "{} exited unexpectedly ({status}); see its log below",
                self.name
            ),
            None if self.child.is_none() => bail!("{} was never started", self.name),
            None => Ok(()),
        }
    }

    /// SIGKILL: no chance to clean up, like a power cut or the OOM killer.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        let child = self
            .child
            .as_mut()
            .with_context(|| format!("{} is not running", self.name))?;
        child
            .kill()
            .with_context(|| format!("cannot kill {}", self.name))?;
        child.wait().context("cannot reap the killed process")?;
        Ok(())
    }

    /// Sends SIGTERM, as systemd does on `systemctl stop`.
    pub fn sigterm(&mut self) -> anyhow::Result<()> {
        self.signal("TERM")
    }

    /// Sends signal `name` (`TERM`, `HUP`, …) with kill(1).
    pub fn signal(&mut self, name: &str) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .with_context(|| format!("{} is not running", self.name))?;
        let status = Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .context("cannot run kill")?;
        if !status.success() {
            bail!("kill -{name} {pid} ({}) failed: {status}", self.name);
        }
        Ok(())
    }

    /// Waits up to `limit` for the process to exit by itself.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then SIGKILL if it lingers.
    pub fn stop(&mut self, grace: Duration) {
        if !self.is_running() {
            return;
        }
        let _ = self.sigterm();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exit_status().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.kill9();
    }

    /// The whole log, colour codes removed.
    pub fn log_text(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// The last lines of the log, headed by the process name, for failure reports.
    pub fn log_report(&mut self) -> String {
        let state = match self.exit_status() {
            Some(status) => format!("exited, {status}"),
            None if self.child.is_some() => "running".to_string(),
            None => "not started".to_string(),
        };
        format!(
            "----- last {LOG_TAIL_LINES} lines of {} ({state}; {}) -----\n{}\n",
            self.name,
            self.log.display(),
            tail(&self.log_text(), LOG_TAIL_LINES)
        )
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut()
            && child.try_wait().ok().flatten().is_none()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `hallgate run`, the gateway under test.
pub fn gateway(
    dir: &Path,
    config: &Path,
    broker_port: u16,
    data_dir: &Path,
) -> anyhow::Result<Process> {
    Process::start(
        "gateway",
        dir,
        HALLGATE,
        vec![
            "run".into(),
            "--config".into(),
            config.into(),
            "--uplink".into(),
            format!("mqtt://127.0.0.1:{broker_port}").into(),
            "--data-dir".into(),
            data_dir.into(),
        ],
    )
}

/// How the simulated visitors behave.
#[derive(Debug, Clone, Copy)]
pub struct Traffic {
    pub seed: u64,
    /// Unchanging counters first, so the gateway can take its baselines.
    pub warmup: Duration,
    pub duration: Duration,
    pub arrivals_per_min: f64,
    pub mean_dwell_secs: f64,
}

/// `hallgate simulate`: Modbus TCP counters at the configured addresses and RTU slaves on the
/// buses' pty pairs, with ground truth.
///
/// The traffic is held after the warm-up until [`Simulator::release`] (its `--start-file`):
/// the rig releases it once the gateway has every counter online, so a gateway slow to start
/// on a loaded machine makes the test slower, never wrong.
pub struct Simulator {
    pub process: Process,
    pub traffic: Traffic,
    pub truth: PathBuf,
    started: Instant,
    start_file: PathBuf,
    released: Option<Instant>,
}

impl Simulator {
    pub fn start(
        dir: &Path,
        config: &Path,
        truth: &Path,
        traffic: Traffic,
    ) -> anyhow::Result<Self> {
        Self::start_with_args(dir, config, truth, traffic, Vec::new())
    }

    /// As [`Simulator::start`], with more arguments after the usual ones (`--serial-peer`,
    /// `--serial-noise-bytes-per-sec`).
    pub fn start_with_args(
        dir: &Path,
        config: &Path,
        truth: &Path,
        traffic: Traffic,
        extra_args: Vec<OsString>,
    ) -> anyhow::Result<Self> {
        let started = Instant::now();
        let start_file = dir.join("simulator.start");
        let mut args: Vec<OsString> = vec![
            "simulate".into(),
            "--config".into(),
            config.into(),
            "--seed".into(),
            traffic.seed.to_string().into(),
            "--truth".into(),
            truth.into(),
            "--duration-secs".into(),
            traffic.duration.as_secs_f64().to_string().into(),
            "--warmup-secs".into(),
            traffic.warmup.as_secs_f64().to_string().into(),
            "--arrivals-per-min".into(),
            traffic.arrivals_per_min.to_string().into(),
            "--mean-dwell-secs".into(),
            traffic.mean_dwell_secs.to_string().into(),
            "--start-file".into(),
            start_file.clone().into(),
        ];
        args.extend(extra_args);
        let process = Process::start("simulator", dir, HALLGATE, args)?;
        Ok(Simulator {
            process,
            traffic,
            truth: truth.to_path_buf(),
            started,
            start_file,
            released: None,
        })
    }

    /// Lets the traffic start once the warm-up is over (at once if it is). Idempotent.
    pub fn release(&mut self) -> anyhow::Result<()> {
        if self.released.is_none() {
            std::fs::write(&self.start_file, b"").with_context(|| {
                format!("cannot create the start file {}", self.start_file.display())
            })?;
            self.released = Some(Instant::now());
        }
        Ok(())
    }

    /// When the traffic starts, at the earliest: the end of the warm-up (the process was
    /// started just before this), or the release if that came later.
    pub fn traffic_starts(&self) -> Instant {
        let warm = self.started + self.traffic.warmup;
        self.released.map_or(warm, |released| released.max(warm))
    }

    /// When the traffic stops, at the earliest.
    pub fn traffic_ends(&self) -> Instant {
        self.traffic_starts() + self.traffic.duration
    }
}
