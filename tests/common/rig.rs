//! One end-to-end scenario's world: its directory, hall, broker, watcher, simulator, gateway
//! and the pty pairs of its RS-485 buses, and the waits between them.
//!
//! Every wait is for a condition with a deadline, never a bare sleep, and every wait also
//! checks that the processes it depends on are still alive, so a crash is reported as a crash
//! and not as a timeout. [`Rig::run`] puts the whole scenario under an overall time limit and,
//! on failure or timeout, panics with the reason, the watcher's view and the last lines of
//! every process log, keeping the directory with the full logs (set `HALLGATE_TEST_KEEP=1` to keep
//! it after a pass too).
//!
//! The simulator's traffic is held until the gateway has every counter online (its
//! baselines): the start of the traffic is a condition too, not the end of a fixed warm-up
//! that a slow start on a loaded machine could outlast.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use tempfile::TempDir;

use super::broker::Mosquitto;
use super::hall::{HallPlan, TOPIC_PREFIX};
use super::process::{self, Process, Simulator, Traffic};
use super::serial::PtyPair;
use super::truth::{self, Truth, compare_state, state_devices_online};
use super::watcher::Watcher;

/// How long a gateway may take to have every counter online (and so its baselines) after it
/// is started. Generous: the simulator holds its traffic until then, so the only cost of a
/// slow start on a loaded machine is time.
const BASELINES_LIMIT: Duration = Duration::from_secs(60);

/// Fields drop in declaration order: the processes stop before their directory goes.
pub struct Rig {
    pub gateway: Option<Process>,
    pub simulator: Option<Simulator>,
    pub watcher: Option<Watcher>,
    /// The central broker the gateway talks to.
    pub broker: Option<Mosquitto>,
    /// Where the watcher listens when the central broker is going to be restarted.
    pub observer: Option<Mosquitto>,
    /// Each bus's socat pty pair, by bus id; they outlive the gateway and the simulator.
    pub pty_pairs: BTreeMap<String, PtyPair>,
    pub name: String,
    pub plan: HallPlan,
    pub data_dir: PathBuf,
    dir: TempDir,
}

impl Rig {
    pub fn new(name: &str, plan: HallPlan) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("hallgate-test-{name}-"))
            .tempdir()
            .context("cannot create the test's directory")?;
        let data_dir = dir.path().join("data");
        std::fs::create_dir(&data_dir).context("cannot create the data dir")?;
        Ok(Rig {
            gateway: None,
            simulator: None,
            watcher: None,
            broker: None,
            observer: None,
            pty_pairs: BTreeMap::new(),
            name: name.to_string(),
            plan,
            data_dir,
            dir,
        })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs the scenario under `limit`; on error or timeout, panics with the reason and the
    /// logs.
    pub async fn run(
        mut self,
        limit: Duration,
        body: impl AsyncFnOnce(&mut Rig) -> anyhow::Result<()>,
    ) {
        let outcome = tokio::time::timeout(limit, body(&mut self)).await;
        let reason = match outcome {
            Ok(Ok(())) => {
                if std::env::var_os("HALLGATE_TEST_KEEP").is_some() {
                    self.dir.disable_cleanup(true);
                    eprintln!(
                        "scenario `{}` passed; logs kept in {} (HALLGATE_TEST_KEEP is set)",
                        self.name,
                        self.dir.path().display()
                    );
                }
                return;
            }
            Ok(Err(error)) => format!("{error:#}"),
            Err(_) => format!(
                "the scenario did not finish within its overall limit of {limit:?} (a hang)"
            ),
        };
        let report = self.report();
        self.dir.disable_cleanup(true);
        panic!(
            "test scenario `{}` failed:\n{reason}\n\n{report}\nfull logs and configs are kept in {}",
            self.name,
            self.dir.path().display()
        );
    }

    /// The watcher's view and the tail of every process log.
    pub fn report(&mut self) -> String {
        let mut report = String::new();
        if let Some(watcher) = &self.watcher {
            report.push_str(&watcher.report());
        }
        for process in [
            self.observer.as_mut().map(|b| &mut b.process),
            self.broker.as_mut().map(|b| &mut b.process),
            self.simulator.as_mut().map(|s| &mut s.process),
            self.gateway.as_mut(),
        ]
        .into_iter()
        .flatten()
        .chain(self.pty_pairs.values_mut().map(|p| &mut p.process))
        {
            report.push_str(&process.log_report());
        }
        report
    }

    // -- Starting things ------------------------------------------------------------------

    /// A central broker, and a watcher on it.
    pub async fn start_broker(&mut self) -> anyhow::Result<()> {
        let broker = Mosquitto::start(self.dir.path(), "mosquitto").await?;
        let watcher = self.watch(broker.port).await?;
        self.broker = Some(broker);
        self.watcher = Some(watcher);
        Ok(())
    }

    /// A central broker bridged to an observer broker, and a watcher on the observer, so the
    /// watcher misses nothing while the central broker restarts (see `broker.rs`).
    pub async fn start_broker_with_observer(&mut self) -> anyhow::Result<()> {
        let observer = Mosquitto::start(self.dir.path(), "observer").await?;
        let watcher = self.watch(observer.port).await?;
        self.observer = Some(observer);
        self.watcher = Some(watcher);
        let broker = Mosquitto::start_bridged(
            self.dir.path(),
            "mosquitto",
            TOPIC_PREFIX,
            self.observer_port()?,
        )
        .await?;
        self.broker = Some(broker);
        Ok(())
    }

    async fn watch(&self, port: u16) -> anyhow::Result<Watcher> {
        Watcher::connect(
            port,
            &self.plan.topic_base(),
            &format!("watcher-{}-{}", self.name, std::process::id()),
        )
        .await
    }

    fn observer_port(&self) -> anyhow::Result<u16> {
        Ok(self.observer.as_ref().context("no observer broker")?.port)
    }

    pub fn broker(&mut self) -> anyhow::Result<&mut Mosquitto> {
        self.broker.as_mut().context("the broker was not started")
    }

    pub fn watcher(&self) -> anyhow::Result<&Watcher> {
        self.watcher.as_ref().context("the watcher was not started")
    }

    pub fn gateway(&mut self) -> anyhow::Result<&mut Process> {
        self.gateway.as_mut().context("the gateway was not started")
    }

    pub fn simulator(&mut self) -> anyhow::Result<&mut Simulator> {
        self.simulator
            .as_mut()
            .context("the simulator was not started")
    }

    /// Makes a socat pty pair in the test's directory for every bus of the plan and points
    /// the bus's `port` at its gateway side.
    pub async fn make_pty_pairs(&mut self) -> anyhow::Result<()> {
        for bus in &mut self.plan.buses {
            let pair = PtyPair::create(self.dir.path(), &bus.id).await?;
            bus.port = pair.gateway_side.clone();
            self.pty_pairs.insert(bus.id.clone(), pair);
        }
        Ok(())
    }

    pub fn pty_pair(&mut self, bus: &str) -> anyhow::Result<&mut PtyPair> {
        self.pty_pairs
            .get_mut(bus)
            .with_context(|| format!("no pty pair was made for bus {bus}"))
    }

    /// Writes the simulator's config (the simulated counters only) and starts it.
    pub fn start_simulator(&mut self, traffic: Traffic) -> anyhow::Result<()> {
        self.start_simulator_with_args(traffic, Vec::new())
    }

    /// As [`Rig::start_simulator`], with more arguments. Every pty pair made is passed as
    /// the `--serial-peer` of its bus.
    pub fn start_simulator_with_args(
        &mut self,
        traffic: Traffic,
        extra_args: Vec<OsString>,
    ) -> anyhow::Result<()> {
        let port = self.broker()?.port;
        let config = self.dir.path().join("simulator.toml");
        std::fs::write(&config, self.plan.simulator_toml(port, &self.data_dir))?;
        let truth = self.dir.path().join("truth.jsonl");
        let mut args = Vec::new();
        for (bus, pair) in &self.pty_pairs {
            args.push("--serial-peer".into());
            let mut peer = OsString::from(format!("{bus}="));
            peer.push(&pair.device_side);
            args.push(peer);
        }
        args.extend(extra_args);
        self.simulator = Some(Simulator::start_with_args(
            self.dir.path(),
            &config,
            &truth,
            traffic,
            args,
        )?);
        Ok(())
    }

    /// Writes the gateway's config (every counter) and returns its path.
    pub fn write_gateway_config(&mut self) -> anyhow::Result<PathBuf> {
        let port = self.broker()?.port;
        let config = self.dir.path().join("gateway.toml");
        std::fs::write(&config, self.plan.gateway_toml(port, &self.data_dir))?;
        Ok(config)
    }

    /// Writes the gateway's config (every counter) and starts `hallgate run`.
    pub fn start_gateway(&mut self) -> anyhow::Result<()> {
        let port = self.broker()?.port;
        let config = self.write_gateway_config()?;
        self.gateway = Some(process::gateway(
            self.dir.path(),
            &config,
            port,
            &self.data_dir,
        )?);
        Ok(())
    }

    // -- Waiting for things ---------------------------------------------------------------

    /// Fails if the gateway or the simulator (when started) has exited.
    pub fn ensure_alive(&mut self) -> anyhow::Result<()> {
        if let Some(sim) = self.simulator.as_mut() {
            sim.process.ensure_running()?;
        }
        if let Some(gateway) = self.gateway.as_mut() {
            gateway.ensure_running()?;
        }
        Ok(())
    }

    /// Waits until the retained state shows every counter in `ids` online, then releases the
    /// simulator's traffic. The gateway takes a counter's first reading as its baseline, so
    /// the traffic is held until then: a crossing before it would be missed, and the exact
    /// checks would fail confusingly. A Modbus counter goes online with its first read, so
    /// online means read; a serial-stream counter goes online on any bytes, before its first
    /// frame, so a scenario holding traffic for one needs a count in its stats instead.
    pub async fn wait_until_counters_online(&mut self, ids: &[String]) -> anyhow::Result<()> {
        let deadline = Instant::now() + BASELINES_LIMIT;
        loop {
            self.ensure_alive()?;
            let online = self
                .watcher()?
                .state()
                .map(|s| state_devices_online(&s))
                .unwrap_or_default();
            let not_yet: Vec<String> = ids
                .iter()
                .filter(|id| online.get(*id).copied().flatten() != Some(true))
                .map(|id| match online.get(id) {
                    None => format!("{id} (not in state.devices)"),
                    Some(flag) => format!("{id} (online: {flag:?})"),
                })
                .collect();
            if not_yet.is_empty() {
                return self.release_traffic();
            }
            if Instant::now() >= deadline {
                bail!(
                    "not every counter was online in the retained state within \
                     {BASELINES_LIMIT:?}, so the gateway has not taken their baselines (the \
                     simulator's traffic is still held); still not online: {}",
                    not_yet.join(", ")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// As [`Rig::wait_until_counters_online`], but each counter need only have been online in
    /// some state, not all in the same one: on a noisy line a counter may be offline for a
    /// poll or two, yet the gateway has its baseline once it has read it once.
    pub async fn wait_until_counters_have_been_online(
        &mut self,
        ids: &[String],
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + BASELINES_LIMIT;
        let mut not_yet: Vec<String> = ids.to_vec();
        loop {
            self.ensure_alive()?;
            let online = self
                .watcher()?
                .state()
                .map(|s| state_devices_online(&s))
                .unwrap_or_default();
            not_yet.retain(|id| online.get(id).copied().flatten() != Some(true));
            if not_yet.is_empty() {
                return self.release_traffic();
            }
            if Instant::now() >= deadline {
                bail!(
                    "some counters were never online in the retained state within \
                     {BASELINES_LIMIT:?}, so the gateway has not taken their baselines (the \
                     simulator's traffic is still held): {}",
                    not_yet.join(", ")
                );
            }
            // States come at most every `state_interval_ms` (500 ms in the tests' configs);
            // looking ten times as often sees each of them.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Lets the simulator's traffic start (after its warm-up) without waiting for the
    /// gateway's baselines, for a scenario that checks no exact totals.
    pub fn release_traffic(&mut self) -> anyhow::Result<()> {
        self.simulator()?.release()
    }

    /// Waits until the retained state shows every counter in `ids` with `online` as given.
    pub async fn wait_for_devices(
        &mut self,
        ids: &[String],
        online: bool,
        limit: Duration,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + limit;
        loop {
            self.ensure_alive()?;
            let state = self.watcher()?.state();
            let flags = state.as_ref().map(state_devices_online).unwrap_or_default();
            let wrong: Vec<String> = ids
                .iter()
                .filter(|id| flags.get(*id).copied().flatten() != Some(online))
                .map(|id| format!("{id} (online: {:?})", flags.get(id).copied().flatten()))
                .collect();
            match state {
                Some(state) if wrong.is_empty() => return Ok(state),
                _ if Instant::now() >= deadline => bail!(
                    "the retained state did not show {} online = {online} within {limit:?}; \
                     still: {}",
                    ids.join(", "),
                    wrong.join(", ")
                ),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Waits for the simulator's final truth line and checks there was enough traffic for
    /// the test to mean something.
    pub async fn wait_for_truth(&mut self, min_crossings: u64) -> anyhow::Result<Truth> {
        let sim = self.simulator()?;
        let deadline = sim.traffic_ends() + Duration::from_secs(20);
        let truth = truth::wait_for_truth(sim, deadline).await?;
        if truth.totals.crossings < min_crossings {
            bail!(
                "the simulator produced only {} crossings; the test needs at least {min_crossings} \
                 to mean anything (totals: {:?})",
                truth.totals.crossings,
                truth.totals
            );
        }
        Ok(truth)
    }

    /// Waits until the retained state has exactly the truth's occupancy, entries and exits in
    /// every room; returns that state.
    pub async fn wait_until_state_matches(
        &mut self,
        truth: &Truth,
        limit: Duration,
    ) -> anyhow::Result<Value> {
        let rooms = self.plan.room_ids();
        let deadline = Instant::now() + limit;
        loop {
            self.ensure_alive()?;
            let state = self.watcher()?.state();
            let verdict = match &state {
                Some(state) => compare_state(state, truth, &rooms),
                None => Err("no state has been published".to_string()),
            };
            match (verdict, state) {
                (Ok(()), Some(state)) => return Ok(state),
                (Err(table), _) if Instant::now() >= deadline => bail!(
                    "the retained state did not reach the ground truth within {limit:?} after the \
                     traffic stopped ({} crossings):\n{table}",
                    truth.totals.crossings
                ),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Waits until the latest status message says `want` ("online" or "offline").
    pub async fn wait_for_status(&mut self, want: &str, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let watcher = self.watcher()?;
            if watcher.status().as_deref() == Some(want) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the retained status did not become {want:?} within {limit:?}; history: {:?}",
                    watcher.seen().status_history
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the gateway's log mentions `text`.
    pub async fn wait_for_gateway_log(
        &mut self,
        text: &str,
        limit: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if self.gateway()?.log_text().contains(text) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("the gateway's log did not mention {text:?} within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
