//! Serial lines for the black-box tests: socat pty pairs in the test's directory, and a look at
//! which ptys a process holds open.
//!
//! A [`PtyPair`] is Debian's `socat` joining two ptys behind stable links: `<name>` for the
//! gateway (the bus's configured `port`) and `<name>.device` for the simulator
//! (`--serial-peer`). [`PtyPair::unplug`] stops socat, which destroys both ptys and removes
//! the links, as pulling a USB adapter does; [`PtyPair::replug`] makes a new pair at the same
//! paths. [`pts_descriptors`] reads `/proc/<pid>/fd` to tell whether a process still holds a
//! pty open, or leaked one.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::process::Process;

/// Appended to the gateway side's path for the simulator's side.
pub const DEVICE_SIDE_SUFFIX: &str = ".device";

/// How long socat may take to make or remove its links.
const SOCAT_LIMIT: Duration = Duration::from_secs(5);

/// A socat pty pair behind stable links in a test's directory.
pub struct PtyPair {
    pub process: Process,
    /// Where the gateway opens the bus.
    pub gateway_side: PathBuf,
    /// Where the simulator serves the bus's slaves.
    pub device_side: PathBuf,
}

impl PtyPair {
    /// Starts socat (logging to `dir/socat-{name}.log`) and waits until both links exist.
    pub async fn create(dir: &Path, name: &str) -> anyhow::Result<Self> {
        let gateway_side = dir.join(name);
        let device_side = dir.join(format!("{name}{DEVICE_SIDE_SUFFIX}"));
        let end = |path: &Path| format!("pty,raw,echo=0,link={}", path.display()).into();
        let process = Process::start(
            &format!("socat-{name}"),
            dir,
            "socat",
            vec![
                "-d".into(),
                "-d".into(),
                end(&gateway_side),
                end(&device_side),
            ],
        )
        .context(
            "cannot start socat for a pty pair; install it (apt-get install socat; \
             scripts/test.sh does)",
        )?;
        let mut pair = PtyPair {
            process,
            gateway_side,
            device_side,
        };
        pair.wait_for_links(true).await?;
        Ok(pair)
    }

    /// Destroys the pair: SIGTERM makes socat close both ptys and remove its links. Waits
    /// until it has.
    pub async fn unplug(&mut self) -> anyhow::Result<()> {
        self.process.sigterm()?;
        if self.process.wait_exit(SOCAT_LIMIT).await.is_none() {
            self.process.kill9()?;
        }
        // A SIGKILLed socat leaves its links dangling, pointing at /dev/pts numbers that
        // another test's pair may get next; never leave them for anyone to open.
        for link in [&self.gateway_side, &self.device_side] {
            if link.symlink_metadata().is_ok() {
                std::fs::remove_file(link)
                    .with_context(|| format!("cannot remove {}", link.display()))?;
            }
        }
        self.wait_for_links(false).await
    }

    /// Makes a new pair at the same paths (the ptys behind them are new).
    pub async fn replug(&mut self) -> anyhow::Result<()> {
        self.process.spawn()?;
        self.wait_for_links(true).await
    }

    /// The pty the gateway side links to now.
    pub fn gateway_pts(&self) -> anyhow::Result<PathBuf> {
        std::fs::read_link(&self.gateway_side)
            .with_context(|| format!("{} is not a link", self.gateway_side.display()))
    }

    async fn wait_for_links(&mut self, present: bool) -> anyhow::Result<()> {
        let deadline = Instant::now() + SOCAT_LIMIT;
        loop {
            let sides = [&self.gateway_side, &self.device_side];
            if sides
                .iter()
                .all(|p| p.symlink_metadata().is_ok() == present)
            {
                return Ok(());
            }
            if present {
                self.process
                    .ensure_running()
                    .context("socat stopped before linking the pty pair")?;
            }
            if Instant::now() >= deadline {
                bail!(
                    "socat did not {} the links {} and {} within {SOCAT_LIMIT:?}",
                    if present { "make" } else { "remove" },
                    self.gateway_side.display(),
                    self.device_side.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The descriptors of process `pid` that are open on a pty (`/dev/pts/N`): fd number and
/// target, in fd order.
pub fn pts_descriptors(pid: u32) -> anyhow::Result<Vec<(u32, PathBuf)>> {
    let dir = PathBuf::from(format!("/proc/{pid}/fd"));
    let mut found = Vec::new();
    for entry in
        std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
    {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        // A descriptor closed between listing and reading is simply not open any more.
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if target.starts_with("/dev/pts/") {
            let fd = entry
                .file_name()
                .to_string_lossy()
                .parse()
                .unwrap_or(u32::MAX);
            found.push((fd, target));
        }
    }
    found.sort();
    Ok(found)
}

/// `fd -> target` pairs for a message.
pub fn describe_descriptors(fds: &[(u32, PathBuf)]) -> String {
    if fds.is_empty() {
        return "(none)".to_string();
    }
    fds.iter()
        .map(|(fd, target)| format!("{fd} -> {}", target.display()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A device's or a bus's line statistics, as the gateway publishes them in `state`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
pub struct LineStats {
    pub polls: u64,
    pub timeouts: u64,
    pub crc_errors: u64,
    pub exceptions: u64,
    pub bad_answers: u64,
    pub link_errors: u64,
}

impl LineStats {
    /// Polls that failed on the line: timeouts, corrupt frames and nonsense answers.
    pub fn line_errors(&self) -> u64 {
        self.timeouts + self.crc_errors + self.bad_answers
    }
}

/// `state.devices[id].stats`.
pub fn device_stats(state: &serde_json::Value, id: &str) -> anyhow::Result<LineStats> {
    stats_of(state, "devices", id)
}

/// `state.buses[id].stats`.
pub fn bus_stats(state: &serde_json::Value, id: &str) -> anyhow::Result<LineStats> {
    stats_of(state, "buses", id)
}

fn stats_of(state: &serde_json::Value, list: &str, id: &str) -> anyhow::Result<LineStats> {
    let entry = state
        .get(list)
        .and_then(serde_json::Value::as_array)
        .and_then(|entries| {
            entries
                .iter()
                .find(|e| e.get("id").and_then(serde_json::Value::as_str) == Some(id))
        })
        .with_context(|| format!("state.{list} has no entry {id:?}"))?;
    let stats = entry
        .get("stats")
        .with_context(|| format!("state.{list}[{id:?}] has no stats: {entry}"))?;
    serde_json::from_value(stats.clone())
        .with_context(|| format!("state.{list}[{id:?}].stats is malformed: {stats}"))
}
