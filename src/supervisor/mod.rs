//! The supervisor: wires the stages in data-flow order, runs the one loop that feeds the
//! core and carries out what it decides, and owns shutdown.
//!
//! ```text
//! drivers ──DeviceEvent──► select loop ──► core (sans I/O) ──Tick──► select loop ──Batch──► outbox ──rows──► uplink ──► broker
//!                              │  reads the clocks and gauges       ├─ state (watch) ──────────────────────► uplink
//!                              └─ pings the watchdog                └─ Snapshot (watch) ──► status page
//! ```
//!
//! The [`core`] decides everything — order, figures, alerts, what is worth a commit — and
//! does no I/O and reads no clock. This module is its shell: one `select!` loop that hands it
//! device events and the centre's downlink, ticks it once a second with the wall clock, a
//! monotonic instant and the stages' gauges, commits each [`core::Commit`] to the outbox and
//! reports back, settles the receipts of passages once they are on disk, hands the uplink
//! the retained `state` and the status page its snapshot (replacing a watch value never
//! waits), and pings systemd's watchdog after the commit (a tick stuck on the outbox must
//! starve it). Shutdown is staged and named, with a deadline: the status page closes,
//! drivers stop, the last events are applied, the state is committed, the uplink gets a
//! moment to deliver it and say `offline`, the outbox closes.
//!
//! Under systemd the supervisor says `READY=1` once everything is up ([`notify`]); `main`
//! handles the signals (stop, and reload by re-executing the gateway once the new config
//! has validated). `simulate::replay` drives the same core under a virtual clock.

pub mod core;
pub mod notify;
pub mod reorder;
#[cfg(test)]
pub(crate) mod shuffle_tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use self::core::{Commit, CommitKind, Gauges, HallCore, Resume, Start, TICK, settle};
use crate::config::Config;
use crate::devices::counter::{Baseline, Evidence};
use crate::devices::terminals::http::CounterLinks;
use crate::devices::{self, DeviceEvent};
use crate::occupancy::EngineState;
use crate::outbox::{Outbox, OutboxError, OutboxOptions, Restored};
use crate::status::{LinkSnapshot, Snapshot, StatusServer};
use crate::uplink::payload;
use crate::uplink::{UplinkDriver, UplinkStatus};
use notify::Notifier;

/// How long shutdown may take in all (systemd's stop timeout is longer).
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);
/// Of which the uplink may spend this delivering what is left.
const UPLINK_DRAIN: Duration = Duration::from_secs(3);
/// How often a summary line is logged.
const SUMMARY_EVERY: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error(transparent)]
    Terminals(#[from] crate::devices::terminals::TerminalsError),
    #[error(transparent)]
    Status(#[from] crate::status::StatusError),
}

/// Runs the gateway until `shutdown` is cancelled, then shuts it down in stages. `notifier`
/// hears `READY=1` once every stage is up, and watchdog pings from the core loop.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    notifier: Notifier,
) -> Result<(), SupervisorError> {
    // Bound first: a taken address is a startup error, before anything else has started.
    let status_server = match &config.status {
        Some(status) => Some(StatusServer::bind(status.listen).await?),
        None => None,
    };
    let (outbox, restored) = Outbox::open(
        &config.storage.data_dir,
        OutboxOptions::from_config(&config.storage, Some(payload::roll_up)),
    )?;
    let (mut core, restored) = restore_core(config, restored);
    let mut shell = Shell::start(&mut core, outbox, &restored, status_server, notifier)?;
    core.restore_passage_keys(&restored.passage_keys);
    core.journaled(restored.received);
    shell.run(&mut core, &shutdown).await;
    shell.stop(core).await;
    Ok(())
}

/// The core as the outbox left it: the engine state and the bookings restored.
fn restore_core(config: Config, restored: Restored) -> (HallCore, Restored) {
    let engine_state = restored.engine_state.as_deref().and_then(|bytes| {
        serde_json::from_slice::<EngineState>(bytes)
            .map_err(|error| {
                tracing::error!(%error, "stored engine state is unreadable; today's totals restart from zero");
            })
            .ok()
    });
    let resumed = engine_state.is_some();
    let clock_synced = crate::clock::synchronised();
    let start = Start {
        now: Timestamp::now(),
        mono: Instant::now(),
        clock_synced,
        views: true,
        boot: boot_id(),
    };
    let resume = Resume {
        engine_state,
        bookings_state: restored.bookings_state.as_deref(),
        alerts_state: restored.alerts_state.as_deref(),
    };
    let core = HallCore::new(config, resume, start);
    let config = core.config();
    tracing::info!(
        hall = %config.hall.id,
        rooms = config.rooms.len(),
        counters = config.counters.len(),
        uplink = %format!("{}:{}", config.uplink.host, config.uplink.port),
        data_dir = %config.storage.data_dir.display(),
        resumed,
        bookings = core.bookings().tracker().bookings().len(),
        pending_messages = restored.pending_messages,
        clock_synced,
        "hallgate is running"
    );
    (core, restored)
}

/// A random id for this run of the gateway (the kernel's random UUID source; the clock and
/// the PID where that cannot be read), so ids made in it never meet those of another run.
fn boot_id() -> u64 {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .ok()
        .and_then(|uuid| {
            let hex: String = uuid
                .chars()
                .filter(char::is_ascii_hexdigit)
                .take(16)
                .collect();
            u64::from_str_radix(&hex, 16).ok()
        })
        .unwrap_or_else(|| {
            let nanos = Timestamp::now().as_nanosecond();
            // Truncation is fine: only distinctness matters.
            (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32)
        })
}

/// What a counter's first reading after a start is judged with (see `devices::counter`): the
/// time since the run before last committed its figures, with the baselines (at least: a
/// baseline that did not change was good until that run stopped, which only widens what is
/// believable), and whether the box booted since — a power cut, which reset the counters
/// most likely too, so a fall in their totals is a reset, not a wrap. A gateway restarted on
/// a running box (a crash, a reload, an upgrade) says nothing of the devices.
fn restart_evidence(saved_at: Timestamp, now: Timestamp, booted: Option<Timestamp>) -> Evidence {
    let elapsed =
        Duration::try_from(now.duration_since(saved_at)).unwrap_or(Duration::ZERO) + RESTART_SLACK;
    Evidence {
        elapsed: Some(elapsed),
        interrupted: booted.is_some_and(|booted| booted > saved_at),
    }
}

/// Reads before a commit are at most a poll and the reorder window older than it.
const RESTART_SLACK: Duration = Duration::from_secs(10);

/// When the box booted (`btime` of `/proc/stat`), if it can be read.
fn booted_at() -> Option<Timestamp> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let secs = stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse::<i64>()
        .ok()?;
    Timestamp::from_second(secs).ok()
}

/// The stages around the core, and the handles the loop and shutdown need.
struct Shell {
    outbox: Outbox,
    link: Arc<UplinkStatus>,
    state_tx: watch::Sender<Option<crate::outbox::OutMessage>>,
    status_tx: watch::Sender<Arc<Snapshot>>,
    events: mpsc::Receiver<DeviceEvent>,
    downlink: mpsc::Receiver<Vec<u8>>,
    uplink: JoinHandle<()>,
    uplink_stop: CancellationToken,
    drivers: Vec<JoinHandle<()>>,
    drivers_stop: CancellationToken,
    status: Option<JoinHandle<()>>,
    status_stop: CancellationToken,
    notifier: Notifier,
    last_summary: Instant,
}

impl Shell {
    /// Starts the uplink, the drivers, the terminals' intake and the status page around
    /// `core`, then tells systemd the gateway is ready.
    fn start(
        core: &mut HallCore,
        outbox: Outbox,
        restored: &Restored,
        status_server: Option<StatusServer>,
        notifier: Notifier,
    ) -> Result<Shell, SupervisorError> {
        let config = core.config().clone();
        let link = Arc::new(UplinkStatus::default());
        let (state_tx, state_rx) = watch::channel(None);
        let uplink_stop = CancellationToken::new();
        let (downlink_tx, downlink) = mpsc::channel(crate::uplink::DOWNLINK_CAPACITY);
        let uplink = tokio::spawn(
            UplinkDriver::new(config.clone(), outbox.clone(), state_rx, link.clone())
                .with_downlink(downlink_tx)
                .run(uplink_stop.clone(), UPLINK_DRAIN),
        );
        let (events_tx, events) = mpsc::channel(devices::EVENT_CHANNEL_CAPACITY);
        let drivers_stop = CancellationToken::new();
        let stats = core.shared_stats();
        let since = restart_evidence(core.saved_at(), Timestamp::now(), booted_at());
        let baselines: BTreeMap<String, Baseline> = restored
            .baselines
            .iter()
            .map(|(id, &totals)| (id.clone(), Baseline { totals, since }))
            .collect();
        let mut drivers = devices::spawn_all(
            &config,
            &baselines,
            &stats.devices,
            &events_tx,
            &drivers_stop,
        );
        drivers.extend(crate::devices::terminals::spawn(
            &config,
            CounterLinks {
                baselines: &baselines,
                stats: &stats.devices,
                events: &events_tx,
            },
            &stats.terminals,
            &events_tx,
            &drivers_stop,
            &restored.passage_keys,
        )?);
        drop(events_tx);

        let gauges = gauges(&outbox, &link, crate::clock::synchronised());
        let first = core.snapshot(Timestamp::now(), Instant::now(), &gauges);
        let (status_tx, status_rx) = watch::channel(Arc::new(first));
        let status_stop = CancellationToken::new();
        let status = status_server.map(|server| {
            tokio::spawn(server.serve(config.clone(), status_rx, status_stop.clone()))
        });
        notifier.ready(&format!(
            "hall {}: {} rooms, {} counters, {} terminals; uplink {}:{}",
            config.hall.id,
            config.rooms.len(),
            config.counters.len(),
            config.terminals.len(),
            config.uplink.host,
            config.uplink.port
        ));
        if let Some(every) = notifier.watchdog_interval() {
            tracing::info!(
                ping_every_ms = every.as_millis() as u64,
                "systemd watchdog is on; the core loop pings it"
            );
        }
        Ok(Shell {
            outbox,
            link,
            state_tx,
            status_tx,
            events,
            downlink,
            uplink,
            uplink_stop,
            drivers,
            drivers_stop,
            status,
            status_stop,
            notifier,
            last_summary: Instant::now(),
        })
    }

    /// The loop: events and the downlink into the core, a tick a second, until `shutdown`.
    async fn run(&mut self, core: &mut HallCore, shutdown: &CancellationToken) {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(event) = self.events.recv() => {
                    core.receive(event);
                    // Whatever else has arrived goes into the same commit: a commit waits for
                    // the outbox's fsync budget, and one event per wait would let a burst
                    // of passages crawl at one a second.
                    self.receive_waiting(core);
                    if let Some(journal) = core.journal_due(Instant::now()) {
                        commit(&self.outbox, core, journal).await;
                    }
                }
                Some(bytes) = self.downlink.recv() => core.downlink(&bytes),
                _ = ticker.tick() => self.tick(core).await,
            }
        }
    }

    async fn tick(&mut self, core: &mut HallCore) {
        self.receive_waiting(core);
        let gauges = gauges(&self.outbox, &self.link, crate::clock::synchronised());
        let tick = core.tick(Timestamp::now(), Instant::now(), &gauges);
        if let Some(state) = tick.state {
            self.state_tx.send_replace(Some(state));
        }
        if let Some(snapshot) = tick.snapshot
            && !self.status_tx.is_closed()
        {
            self.status_tx.send_replace(Arc::new(snapshot));
        }
        if let Some(batch) = tick.commit {
            commit(&self.outbox, core, batch).await;
        }
        // After the commit: a tick stuck on the outbox must starve the watchdog.
        self.notifier
            .watchdog(Instant::now(), || core.status_line(&gauges));
        if self.last_summary.elapsed() >= SUMMARY_EVERY {
            self.last_summary = Instant::now();
            core.log_summary(&gauges);
        }
    }

    /// Takes the events already waiting in the channel (at most a channel's worth).
    fn receive_waiting(&mut self, core: &mut HallCore) {
        for _ in 0..devices::EVENT_CHANNEL_CAPACITY {
            match self.events.try_recv() {
                Ok(event) => core.receive(event),
                Err(_) => break,
            }
        }
    }

    /// Staged shutdown, each stage named in the log, all under one deadline.
    async fn stop(mut self, mut core: HallCore) {
        let staged = async {
            tracing::info!(stage = "status", "closing the status page");
            self.status_stop.cancel();
            if let Some(status) = self.status.take() {
                let _ = status.await;
            }
            tracing::info!(stage = "drivers", "stopping device drivers");
            self.drivers_stop.cancel();
            for d in self.drivers.drain(..) {
                let _ = d.await;
            }
            while let Ok(event) = self.events.try_recv() {
                core.receive(event);
            }
            tracing::info!(stage = "state", "committing the final state");
            let gauges = gauges(&self.outbox, &self.link, crate::clock::synchronised());
            let last = core.finish(Timestamp::now(), Instant::now(), &gauges);
            if let Some(state) = last.state {
                self.state_tx.send_replace(Some(state));
            }
            if let Some(batch) = last.commit {
                commit(&self.outbox, &mut core, batch).await;
            }
            tracing::info!(
                stage = "uplink",
                "delivering what is left to the central broker"
            );
            let wait_until = Instant::now() + UPLINK_DRAIN;
            while LinkSnapshot::of(&self.link).connected
                && self.outbox.pending() > 0
                && Instant::now() < wait_until
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            self.uplink_stop.cancel();
            let _ = (&mut self.uplink).await;
            tracing::info!(stage = "outbox", "closing the outbox");
            self.outbox.close().await;
        };
        if tokio::time::timeout(SHUTDOWN_DEADLINE, staged)
            .await
            .is_err()
        {
            tracing::warn!(
                deadline_secs = SHUTDOWN_DEADLINE.as_secs(),
                "shutdown deadline passed; exiting — committed data is safe in the outbox"
            );
        } else {
            tracing::info!("hallgate stopped cleanly");
        }
    }
}

/// The stages' gauges, read for a tick.
pub fn gauges(outbox: &Outbox, link: &UplinkStatus, clock_synced: bool) -> Gauges {
    Gauges {
        clock_synced,
        outbox: outbox.stats().snapshot(),
        link: LinkSnapshot::of(link),
    }
}

/// Commits what the core asked for and tells it how that went; on success the waiting
/// devices are told their passages are safe.
pub async fn commit(outbox: &Outbox, core: &mut HallCore, commit: Commit) {
    let Commit {
        batch,
        receipts,
        kind,
    } = commit;
    match outbox.commit(batch).await {
        Ok(()) => {
            core.committed(kind);
            settle(receipts);
        }
        Err((error, returned)) => {
            match kind {
                CommitKind::Full { .. } => tracing::error!(
                    %error,
                    "cannot commit to the outbox; keeping the batch in memory and retrying"
                ),
                CommitKind::Journal => tracing::error!(
                    %error,
                    "cannot journal received passages; their devices are not answered yet"
                ),
            }
            core.not_committed(kind, receipts, returned);
        }
    }
}

#[cfg(test)]
mod restart_tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().expect("a time")
    }

    #[test]
    fn a_gateway_restart_on_a_running_box_is_judged_by_the_time_since_the_last_commit() {
        let e = restart_evidence(
            t("2026-12-01T06:00:00Z"),
            t("2026-12-01T06:00:05Z"),
            Some(t("2026-11-30T08:00:00Z")),
        );
        assert_eq!(e.elapsed, Some(Duration::from_secs(15)));
        assert!(
            !e.interrupted,
            "a crash or a reload says nothing of the counters"
        );
    }

    #[test]
    fn a_box_that_booted_since_the_last_commit_lost_power_and_so_did_its_counters() {
        let e = restart_evidence(
            t("2026-12-01T06:00:00Z"),
            t("2026-12-01T06:03:00Z"),
            Some(t("2026-12-01T06:02:30Z")),
        );
        assert!(e.interrupted);
        let behind = restart_evidence(t("2026-12-01T06:00:00Z"), t("2026-12-01T05:00:00Z"), None);
        assert_eq!(
            behind.elapsed,
            Some(RESTART_SLACK),
            "a clock behind gives no time"
        );
    }

    #[test]
    fn the_boot_time_of_this_machine_is_readable_and_in_the_past() {
        let booted = booted_at().expect("/proc/stat has btime on Linux");
        assert!(booted < Timestamp::now());
    }
}
