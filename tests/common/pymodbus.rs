//! pymodbus as the gateway's peer: an independent Modbus implementation serving scripted
//! people counters (`tests/peers/pymodbus_counters.py`), over Modbus TCP, or over Modbus RTU
//! on a socat pty pair ([`super::serial::PtyPair`]).
//!
//! A [`Script`] is the whole story of an interoperability test: the hall, each counter's
//! register layout as the counter's manual would give it (written out here by hand, not taken
//! from the gateway's profile parser, so the two sides are independent), the totals the
//! counters start from and the steps they take. From it come the JSON plan the Python server
//! plays, the gateway's config, and the exact figures the retained `state` must end with.
//!
//! The plan only starts when the test says `go` on the server's stdin, which the test does
//! once the retained state shows every counter online: the gateway's first reading of each
//! counter is its baseline, and until `go` that reading can only be the initial totals.
//!
//! The Python side needs pymodbus 3.x importable by `python3`; `bash scripts/test.sh` installs
//! it. A missing pymodbus fails the test with that advice, it never skips it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::hall::{
    DISTRICT, HallPlan, RoomPlan, TIME_ZONE, TOPIC_PREFIX, closing_time_about_12_hours_from_now,
};
use super::truth::{Truth, TruthTotals};
use super::{LOG_TAIL_LINES, run_to_completion, strip_ansi, tail};

/// The Python interpreter the peer runs under; the one `scripts/test.sh` installs pymodbus for.
pub const PYTHON: &str = "python3";

/// The peer's script, in this repository.
pub const PEER_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/peers/pymodbus_counters.py"
);

/// How long the peer may take to import pymodbus and start listening.
const READY_LIMIT: Duration = Duration::from_secs(20);

/// How to install pymodbus.
const INSTALL_ADVICE: &str = "run `bash scripts/test.sh`, which installs it \
     (python3 -m pip install 'pymodbus[serial]==3.*')";

// ---------------------------------------------------------------------------------------------
// The script.

/// Width of one total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    U16,
    U32,
}

impl ValueType {
    pub fn modulus(self) -> u64 {
        match self {
            ValueType::U16 => 1 << 16,
            ValueType::U32 => 1 << 32,
        }
    }

    fn name(self) -> &'static str {
        match self {
            ValueType::U16 => "u16",
            ValueType::U32 => "u32",
        }
    }
}

/// Which register of a 32-bit total holds the high word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WordOrder {
    HighFirst,
    LowFirst,
}

/// Where a counter keeps its totals, in protocol (0-based, on the wire) addresses.
#[derive(Debug, Clone, Copy)]
pub struct RegisterLayout {
    /// 3: holding registers, 4: input registers.
    pub function_code: u8,
    pub in_address: u16,
    pub out_address: u16,
    pub value_type: ValueType,
    pub word_order: WordOrder,
}

/// A counter served by pymodbus, and the door it watches.
#[derive(Debug, Clone)]
pub struct ScriptedCounter {
    pub id: String,
    pub door: String,
    /// The counter's OUT side: `outside` or a room id.
    pub from: String,
    /// The counter's IN side.
    pub to: String,
    /// The gateway's profile for this counter model.
    pub profile: &'static str,
    /// The same layout, as the pymodbus side serves it.
    pub layout: RegisterLayout,
    pub unit_id: u8,
    /// Totals (IN, OUT) before the plan starts: what the gateway takes as its baseline.
    pub initial: (u64, u64),
}

/// New totals for one counter, `at_s` seconds after `go`.
#[derive(Debug, Clone, Copy)]
pub struct ScriptStep {
    pub at_s: f64,
    pub unit_id: u8,
    pub inward: Option<u64>,
    pub outward: Option<u64>,
}

/// How the gateway reaches the pymodbus server.
#[derive(Debug, Clone)]
pub enum Link {
    Tcp(SocketAddr),
    /// The gateway's end of the serial line.
    Rtu {
        tty: PathBuf,
        baud: u32,
    },
}

#[derive(Debug, Clone)]
pub struct Script {
    pub hall_id: String,
    pub rooms: Vec<RoomPlan>,
    pub counters: Vec<ScriptedCounter>,
    pub steps: Vec<ScriptStep>,
}

impl Script {
    /// The hall for [`super::rig::Rig`]: its topics and rooms (the gateway's config is
    /// [`Script::gateway_toml`], not the plan's).
    pub fn hall_plan(&self) -> HallPlan {
        let mut plan = HallPlan::lobby_with_function_rooms(&self.hall_id, 0);
        plan.rooms = self.rooms.clone();
        plan.counters.clear();
        plan
    }

    pub fn counter_ids(&self) -> Vec<String> {
        self.counters.iter().map(|c| c.id.clone()).collect()
    }

    /// Seconds from `go` to the last step.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.steps.iter().map(|s| s.at_s).fold(0.0, f64::max))
    }

    fn counter(&self, unit_id: u8) -> anyhow::Result<&ScriptedCounter> {
        self.counters
            .iter()
            .find(|c| c.unit_id == unit_id)
            .with_context(|| format!("the script has a step for unit {unit_id}, which it lacks"))
    }

    /// The plan file `pymodbus_counters.py` plays.
    pub fn plan_json(&self) -> String {
        let counters: Vec<Value> = self
            .counters
            .iter()
            .map(|c| {
                json!({
                    "unit": c.unit_id,
                    "function_code": c.layout.function_code,
                    "in_address": c.layout.in_address,
                    "out_address": c.layout.out_address,
                    "value_type": c.layout.value_type.name(),
                    "word_order": match c.layout.word_order {
                        WordOrder::HighFirst => "high_first",
                        WordOrder::LowFirst => "low_first",
                    },
                    "in": c.initial.0,
                    "out": c.initial.1,
                })
            })
            .collect();
        let steps: Vec<Value> = self
            .steps
            .iter()
            .map(|s| {
                let mut step = json!({"at_s": s.at_s, "unit": s.unit_id});
                if let Some(inward) = s.inward {
                    step["in"] = json!(inward);
                }
                if let Some(outward) = s.outward {
                    step["out"] = json!(outward);
                }
                step
            })
            .collect();
        serde_json::to_string_pretty(&json!({"counters": counters, "steps": steps}))
            .expect("a JSON value always serialises")
    }

    /// Crossings (IN, OUT) each counter counts over the plan, by unit id: every step's change
    /// of its totals, modulo the width of the registers (a u16 going from 65530 to 12 counted
    /// 18 people).
    pub fn crossings(&self) -> anyhow::Result<BTreeMap<u8, (u64, u64)>> {
        let mut totals: BTreeMap<u8, (u64, u64)> = self
            .counters
            .iter()
            .map(|c| (c.unit_id, c.initial))
            .collect();
        let mut crossings: BTreeMap<u8, (u64, u64)> =
            self.counters.iter().map(|c| (c.unit_id, (0, 0))).collect();
        for step in &self.steps {
            let modulus = self.counter(step.unit_id)?.layout.value_type.modulus();
            let now = totals.entry(step.unit_id).or_default();
            let counted = crossings.entry(step.unit_id).or_default();
            if let Some(inward) = step.inward {
                counted.0 += (inward + modulus - now.0) % modulus;
                now.0 = inward;
            }
            if let Some(outward) = step.outward {
                counted.1 += (outward + modulus - now.1) % modulus;
                now.1 = outward;
            }
        }
        Ok(crossings)
    }

    /// The figures the retained state must end with: an IN count moves a person from the
    /// door's `from` side to its `to` side, an OUT count back.
    pub fn expected(&self) -> anyhow::Result<Truth> {
        let crossings = self.crossings()?;
        let mut entries: BTreeMap<String, i64> = BTreeMap::new();
        let mut exits: BTreeMap<String, i64> = BTreeMap::new();
        let mut total = 0u64;
        for c in &self.counters {
            let (inward, outward) = crossings.get(&c.unit_id).copied().unwrap_or_default();
            total += inward + outward;
            let (inward, outward) = (inward as i64, outward as i64);
            *entries.entry(c.to.clone()).or_default() += inward;
            *exits.entry(c.from.clone()).or_default() += inward;
            *entries.entry(c.from.clone()).or_default() += outward;
            *exits.entry(c.to.clone()).or_default() += outward;
        }
        entries.remove("outside");
        exits.remove("outside");
        let final_occupancy = self
            .rooms
            .iter()
            .map(|r| {
                let room = r.id.as_str();
                let occupancy =
                    entries.get(room).copied().unwrap_or(0) - exits.get(room).copied().unwrap_or(0);
                (r.id.clone(), occupancy)
            })
            .collect();
        Ok(Truth {
            totals: TruthTotals {
                final_occupancy,
                entries,
                exits,
                crossings: total,
            },
            crossing_lines: Vec::new(),
        })
    }

    /// People the entrances let in from the street over the plan.
    pub fn expected_visitors(&self) -> anyhow::Result<i64> {
        let crossings = self.crossings()?;
        Ok(self
            .counters
            .iter()
            .map(|c| {
                let (inward, outward) = crossings.get(&c.unit_id).copied().unwrap_or_default();
                match (c.from.as_str(), c.to.as_str()) {
                    ("outside", _) => inward as i64,
                    (_, "outside") => outward as i64,
                    _ => 0,
                }
            })
            .sum())
    }

    /// The gateway's config: every counter on the pymodbus server, by unit id.
    pub fn gateway_toml(&self, broker_port: u16, data_dir: &Path, link: &Link) -> String {
        let mut text = format!(
            r#"# Written by the hallgate interoperability tests (tests/common/pymodbus.rs).

[hall]
id = {id}
district = "{DISTRICT}"
time_zone = "{TIME_ZONE}"
# About twelve hours from when the test started, so no daily reset falls inside it.
closing_time = "{closing}"

[uplink]
broker = "mqtt://127.0.0.1:{broker_port}"
topic_prefix = "{TOPIC_PREFIX}"
keep_alive_secs = 5
state_interval_ms = 500
max_reconnect_backoff_ms = 1000

[storage]
data_dir = {data_dir}
commit_interval_ms = 200

[status]
# Never the default 8080, which tests running side by side would share.
listen = "127.0.0.1:{status_port}"
"#,
            status_port = super::free_port(),
            id = toml_string(&self.hall_id),
            closing = closing_time_about_12_hours_from_now(),
            data_dir = toml_string(&data_dir.display().to_string()),
        );
        for room in &self.rooms {
            text.push_str(&format!(
                "\n[[rooms]]\nid = {}\ncapacity = {}\n",
                toml_string(&room.id),
                room.capacity
            ));
        }
        for c in &self.counters {
            text.push_str(&format!(
                "\n[[doors]]\nid = {}\nfrom = {}\nto = {}\n",
                toml_string(&c.door),
                toml_string(&c.from),
                toml_string(&c.to)
            ));
        }
        if let Link::Rtu { tty, baud } = link {
            text.push_str(&format!(
                "\n[[buses]]\nid = \"rs485\"\nport = {}\nbaud = {baud}\n\
                 # A slave that fails a few polls in a row is retried soon, not after 30 s.\n\
                 degraded_retry_ms = 1000\n",
                toml_string(&tty.display().to_string())
            ));
        }
        for c in &self.counters {
            let transport = match link {
                Link::Tcp(address) => {
                    format!("transport = \"modbus_tcp\"\naddress = \"{address}\"")
                }
                Link::Rtu { .. } => "transport = \"modbus_rtu\"\nbus = \"rs485\"".to_string(),
            };
            text.push_str(&format!(
                "\n[[counters]]\nid = {}\ndoor = {}\nprofile = {}\n{transport}\nunit_id = {}\n\
                 poll_interval_ms = 250\ntimeout_ms = 1000\n",
                toml_string(&c.id),
                toml_string(&c.door),
                toml_string(c.profile),
                c.unit_id
            ));
        }
        text
    }
}

/// A TOML basic string: JSON's string escapes are all valid TOML escapes.
fn toml_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string always serialises")
}

// ---------------------------------------------------------------------------------------------
// What must be installed.

/// Fails, saying how to install it, unless `python3` can import pymodbus 3.x and pyserial.
pub fn require_pymodbus(dir: &Path) -> anyhow::Result<String> {
    let mut command = Command::new(PYTHON);
    command.args([
        "-c",
        "import sys, pymodbus, serial; print(pymodbus.__version__, sys.version.split()[0])",
    ]);
    let finished = run_to_completion(command, dir, "pymodbus-check", Duration::from_secs(30))
        .with_context(|| {
            format!(
                "cannot run {PYTHON} to look for pymodbus, which the interoperability tests \
                 need: {INSTALL_ADVICE}"
            )
        })?;
    let versions = finished.stdout.trim().to_string();
    if !finished.status.success() {
        bail!(
            "{PYTHON} cannot import pymodbus and pyserial ({}); the interoperability tests run the \
             gateway against pymodbus 3.x: {INSTALL_ADVICE}",
            tail(finished.stderr.trim(), 1)
        );
    }
    if !versions.starts_with("3.") {
        bail!("{PYTHON} has pymodbus {versions}, the tests need 3.x: {INSTALL_ADVICE}");
    }
    Ok(versions)
}

// ---------------------------------------------------------------------------------------------
// The processes.

/// Where the pymodbus server listens.
#[derive(Debug, Clone)]
pub enum Listen {
    /// Modbus TCP on 127.0.0.1, a port the server binds itself (port 0): no other process can
    /// be the one answering there.
    Tcp,
    /// Modbus TCP on 127.0.0.1 at this port: a device coming back where an earlier peer was
    /// (a rebooted or replaced counter), logging to its own file.
    TcpAt(u16),
    /// Modbus RTU on this end of a serial line.
    Serial { tty: PathBuf, baud: u32 },
}

/// `pymodbus_counters.py`, its stdin held open to send `go` (closing it stops the server).
pub struct PymodbusPeer {
    child: Child,
    stdin: Option<ChildStdin>,
    log: PathBuf,
    /// The TCP port the server bound, in TCP mode.
    pub port: Option<u16>,
}

impl PymodbusPeer {
    /// Starts the server with the plan at `plan` and waits until it listens.
    pub async fn start(dir: &Path, plan: &Path, listen: Listen) -> anyhow::Result<Self> {
        let log = match &listen {
            Listen::TcpAt(port) => dir.join(format!("pymodbus-at-{port}.log")),
            _ => dir.join("pymodbus.log"),
        };
        let out = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone().context("cannot share the log file")?;
        let mut command = Command::new(PYTHON);
        command.arg(PEER_SCRIPT).arg("--plan").arg(plan);
        match &listen {
            Listen::Tcp => command.args(["--tcp", "127.0.0.1:0"]),
            Listen::TcpAt(port) => command.args(["--tcp", &format!("127.0.0.1:{port}")]),
            Listen::Serial { tty, baud } => command
                .arg("--serial")
                .arg(tty)
                .args(["--baud", &baud.to_string()]),
        };
        if std::env::var_os("HALLGATE_TEST_PYMODBUS_DEBUG").is_some() {
            command.arg("--debug");
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            // Lines reach the log as they are printed, not when a buffer fills.
            .env("PYTHONUNBUFFERED", "1")
            .spawn()
            .with_context(|| format!("cannot start {PYTHON} {PEER_SCRIPT}"))?;
        let stdin = child.stdin.take();
        let mut peer = PymodbusPeer {
            child,
            stdin,
            log,
            port: None,
        };
        let ready = match peer
            .wait_for_line(|line| line.starts_with("ready"), READY_LIMIT)
            .await
        {
            Ok(ready) => ready,
            Err(error) => bail!(
                "the pymodbus server did not start ({listen:?}): {error:#}\n{}",
                peer.log_report()
            ),
        };
        if let Listen::Tcp | Listen::TcpAt(_) = listen {
            let port = ready
                .strip_prefix("ready port=")
                .and_then(|p| p.trim().parse::<u16>().ok())
                .with_context(|| {
                    format!("the pymodbus server said {ready:?}, not `ready port=N`")
                })?;
            peer.port = Some(port);
        }
        Ok(peer)
    }

    /// Starts the plan: its steps are timed from now.
    pub fn go(&mut self) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("the peer's stdin is closed")?;
        stdin
            .write_all(b"go\n")
            .and_then(|()| stdin.flush())
            .context("cannot tell the pymodbus server to start its plan")
    }

    /// Waits until the server has applied the plan's last step.
    pub async fn wait_until_done(&mut self, limit: Duration) -> anyhow::Result<()> {
        self.wait_for_line(|line| line == "done", limit)
            .await
            .context("the pymodbus server did not finish its plan")?;
        Ok(())
    }

    /// Fails if the server has exited.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!("the pymodbus server exited unexpectedly ({status})"),
            Err(error) => bail!("cannot check on the pymodbus server: {error}"),
        }
    }

    /// The first line of the log that `want` accepts.
    async fn wait_for_line(
        &mut self,
        want: impl Fn(&str) -> bool,
        limit: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(line) = self.log_text().lines().find(|l| want(l.trim_end())) {
                return Ok(line.trim_end().to_string());
            }
            self.ensure_running()?;
            if Instant::now() >= deadline {
                bail!("nothing expected in its log within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn log_text(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// The last lines of the log, for failure reports.
    pub fn log_report(&mut self) -> String {
        let state = match self.child.try_wait() {
            Ok(Some(status)) => format!("exited, {status}"),
            _ => "running".to_string(),
        };
        format!(
            "----- last {LOG_TAIL_LINES} lines of pymodbus ({state}; {}) -----\n{}\n",
            self.log.display(),
            tail(&self.log_text(), LOG_TAIL_LINES)
        )
    }
}

impl Drop for PymodbusPeer {
    fn drop(&mut self) {
        // Closing stdin is the server's signal to stop; kill it if it does not.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `text` to `dir/name`, where configs and plans stay with the test's logs.
pub fn write_file(dir: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}
