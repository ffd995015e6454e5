//! The supervisor: wires the stages in data-flow order and owns shutdown.
//!
//! ```text
//! drivers ──DeviceEvent──► core loop (engine) ──Batch──► outbox ──rows──► uplink ──► broker
//!                                   └──────── latest state (watch) ────────────┘
//! ```
//!
//! The core loop is the only owner of the occupancy engine. It puts device events back in time
//! order ([`reorder`]) and applies them, ticks
//! the engine once a second (closing minute bins and days), hands the uplink the latest
//! retained `state` at most once per `state_interval`, diffs a snapshot for alerts once a
//! tick (raises and clears go to the outbox, today's list to the status page), and hands the
//! outbox batches — new messages, the engine state and the counter baselines, committed
//! together. Shutdown is staged and named, with a deadline: drivers stop, the last events are
//! applied, the state is committed, the uplink gets a moment to deliver it and say `offline`,
//! the outbox closes.
//!
//! Under systemd the supervisor says `READY=1` once everything is up and pings the watchdog
//! from the core loop ([`notify`]); `main` handles the signals (stop, and reload by
//! re-executing the gateway once the new config has validated).
//!
//! [`replay`] drives the same core under a virtual clock: a recorded or simulated day in
//! seconds, for the venue-day test and `hallgate replay-day`.

#[cfg(test)]
mod core_tests;
pub mod notify;
pub mod reorder;
pub mod replay;
#[cfg(test)]
mod shuffle_tests;

use std::mem;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::bookings::{Bookings, SituationReport};
use crate::clock::WallClock;
use crate::config::Config;
use crate::config::profile::CountMode;
use crate::devices::{self, DeviceEvent, DeviceStats};
use crate::occupancy::{Engine, EngineOutput, EngineState, HallModel};
use crate::outbox::{Batch, OutMessage, Outbox, OutboxError, OutboxOptions};
use crate::status::alerts::AlertWatch;
use crate::status::{FeverTally, Snapshot, StatusServer};
use crate::terminals::{Dedup, DedupKey, TerminalId};
use crate::uplink::payload::{self, DeviceHealth, GatewayHealth};
use crate::uplink::situation;
use crate::uplink::{UplinkDriver, UplinkStatus};
use notify::Notifier;
use reorder::{REORDER_WINDOW, Reorder};

/// How long shutdown may take in all (systemd's stop timeout is longer).
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);
/// Of which the uplink may spend this delivering what is left.
const UPLINK_DRAIN: Duration = Duration::from_secs(3);
/// How often the engine's clock advances (bins close within this plus the reorder window of
/// the minute).
const TICK: Duration = Duration::from_secs(1);
/// Longest time between two retained `state` messages.
const STATE_HEARTBEAT: Duration = Duration::from_secs(60);
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
    let now = Timestamp::now();
    let engine_state = restored.engine_state.as_deref().and_then(|bytes| {
        serde_json::from_slice::<EngineState>(bytes)
            .map_err(|error| {
                tracing::error!(%error, "stored engine state is unreadable; today's totals restart from zero");
            })
            .ok()
    });
    let resumed = engine_state.is_some();
    let bookings = Bookings::new(&config, restored.bookings_state.as_deref());
    let engine = Engine::new(HallModel::from_config(&config), engine_state, now);
    tracing::info!(
        hall = %config.hall.id,
        rooms = config.rooms.len(),
        counters = config.counters.len(),
        uplink = %format!("{}:{}", config.uplink.host, config.uplink.port),
        data_dir = %config.storage.data_dir.display(),
        resumed,
        bookings = bookings.tracker().bookings().len(),
        pending_messages = restored.pending_messages,
        clock_synced = crate::clock::synchronised(),
        "hallgate is running"
    );

    let link = Arc::new(UplinkStatus::default());
    let (state_tx, state_rx) = watch::channel(None);
    let uplink_stop = CancellationToken::new();
    let (downlink_tx, mut downlink) = mpsc::channel(crate::uplink::DOWNLINK_CAPACITY);
    let uplink = tokio::spawn(
        UplinkDriver::new(config.clone(), outbox.clone(), state_rx, link.clone())
            .with_downlink(downlink_tx)
            .run(uplink_stop.clone(), UPLINK_DRAIN),
    );

    let (events_tx, events) = mpsc::channel(devices::EVENT_CHANNEL_CAPACITY);
    let drivers_stop = CancellationToken::new();
    let stats = DeviceStats::new(&config);
    let drivers = devices::spawn_all(
        &config,
        &restored.baselines,
        &stats,
        &events_tx,
        &drivers_stop,
    );
    let terminal_stats = crate::devices::terminals::TerminalsStats::new(&config);
    let terminals = crate::devices::terminals::spawn(
        &config,
        crate::devices::terminals::http::CounterLinks {
            baselines: &restored.baselines,
            stats: &stats,
            events: &events_tx,
        },
        &terminal_stats,
        &events_tx,
        &drivers_stop,
        &restored.passage_keys,
    )?;
    drop(events_tx);

    let mut core = Core::new(
        config,
        engine,
        outbox.clone(),
        state_tx,
        link.clone(),
        stats.clone(),
        terminal_stats.clone(),
        now,
        bookings,
    );
    for (terminal, event) in &restored.passage_keys {
        if let Some(terminal) = TerminalId::new(terminal) {
            core.passage_keys.first_seen(&DedupKey {
                terminal,
                event: event.clone(),
            });
        }
    }
    core.journaled(restored.received);
    let status_stop = CancellationToken::new();
    let status = status_server.map(|server| {
        tokio::spawn(server.serve(
            core.config.clone(),
            core.status_tx.subscribe(),
            status_stop.clone(),
        ))
    });
    notifier.ready(&format!(
        "hall {}: {} rooms, {} counters, {} terminals; uplink {}:{}",
        core.config.hall.id,
        core.config.rooms.len(),
        core.config.counters.len(),
        core.config.terminals.len(),
        core.config.uplink.host,
        core.config.uplink.port
    ));
    if let Some(every) = notifier.watchdog_interval() {
        tracing::info!(
            ping_every_ms = every.as_millis() as u64,
            "systemd watchdog is on; the core loop pings it"
        );
    }
    core.notifier = notifier;
    let mut events = events;
    core.run(&mut events, &mut downlink, &shutdown).await;

    // Staged shutdown, each stage named in the log, all under one deadline.
    let staged = async {
        tracing::info!(stage = "status", "closing the status page");
        status_stop.cancel();
        if let Some(status) = status {
            let _ = status.await;
        }
        tracing::info!(stage = "drivers", "stopping device drivers");
        drivers_stop.cancel();
        for d in drivers.into_iter().chain(terminals) {
            let _ = d.await;
        }
        while let Ok(event) = events.try_recv() {
            core.receive(event);
        }
        for event in core.reorder.drain() {
            core.apply(event);
        }
        tracing::info!(stage = "state", "committing the final state");
        core.publish_state(true);
        core.flush(true).await;
        tracing::info!(
            stage = "uplink",
            "delivering what is left to the central broker"
        );
        let wait_until = Instant::now() + UPLINK_DRAIN;
        while link.connected.load(Ordering::Relaxed)
            && outbox.pending() > 0
            && Instant::now() < wait_until
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        uplink_stop.cancel();
        let _ = uplink.await;
        tracing::info!(stage = "outbox", "closing the outbox");
        outbox.close().await;
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
    Ok(())
}

/// The core loop's state: the engine and what waits for the next commit.
struct Core {
    config: Config,
    engine: Engine,
    outbox: Outbox,
    /// Events held until stragglers from other devices are in (see [`reorder`]).
    reorder: Reorder,
    /// The latest retained `state`, for the uplink.
    state_tx: watch::Sender<Option<OutMessage>>,
    link: Arc<UplinkStatus>,
    stats: Arc<DeviceStats>,
    terminal_stats: Arc<crate::devices::terminals::TerminalsStats>,
    /// Terminal events already counted, restored from the outbox at start.
    passage_keys: Dedup,
    /// Each counter's health as its driver last reported it, taken on arrival: the state,
    /// the status page and the alerts show an outage as soon as it is seen, not a reorder
    /// window later (the window orders figures; health needs no ordering across devices).
    devices: Vec<DeviceHealth>,
    /// Each counter's online flag in event-time order, as the engine's online ratio must see
    /// it: set by `apply`, so a replay gives the same ratio whatever the arrival order.
    ordered_online: Vec<Option<bool>>,
    /// When each counter last counted someone, for the status page's stale rule.
    last_counted: Vec<Option<Timestamp>>,
    /// The status page's latest snapshot, replaced once a tick (never blocks).
    status_tx: watch::Sender<Arc<Snapshot>>,
    /// Fever passages per terminal, and the alert diffing they feed (with every snapshot).
    fevers: Vec<FeverTally>,
    alerts: AlertWatch,
    pending: Batch,
    /// Engine revision last committed.
    committed_revision: Option<u64>,
    state_dirty: bool,
    last_state: Option<Instant>,
    last_commit: Instant,
    last_summary: Instant,
    /// A delta-mode counter moved: its crossings exist nowhere but here, so commit soon.
    urgent: bool,
    /// A counter's first baseline is pending: commit it at the next tick (see `receive`).
    first_baseline: bool,
    /// Passages whose transport waits to tell the device they were received, journaled in
    /// `pending.received`: settled once a commit holds their journal rows (see `receive`).
    receipts: Vec<crate::devices::terminals::Receipt>,
    /// When the journal of received passages was last committed on its own.
    last_journal_commit: Option<Instant>,
    /// Latest time seen, so the engine's clock never runs backwards between drivers — nor
    /// when the wall clock is stepped back: bins then hold still until it catches up.
    now: WallClock,
    clock_synced: bool,
    /// systemd's notify socket: the tick pings its watchdog.
    notifier: Notifier,
    /// The centre's bookings and their tracker; `bookings_committed` is its stored form as
    /// last queued, so an unchanged tracker costs no write.
    bookings: Bookings,
    bookings_committed: Vec<u8>,
}

impl Core {
    // Each argument is a stage's handle the core owns, and its start time; a struct to carry
    // them would only rename this list.
    #[allow(clippy::too_many_arguments)]
    fn new(
        config: Config,
        engine: Engine,
        outbox: Outbox,
        state_tx: watch::Sender<Option<OutMessage>>,
        link: Arc<UplinkStatus>,
        stats: Arc<DeviceStats>,
        terminal_stats: Arc<crate::devices::terminals::TerminalsStats>,
        now: Timestamp,
        bookings: Bookings,
    ) -> Self {
        let devices = config
            .counters
            .iter()
            .map(|c| DeviceHealth {
                id: c.id.clone(),
                kind: "people_counter",
                ..DeviceHealth::default()
            })
            .collect::<Vec<_>>();
        let last_counted = vec![None; devices.len()];
        let ordered_online = vec![None; devices.len()];
        let fevers: Vec<FeverTally> = config
            .terminals
            .iter()
            .map(|t| FeverTally {
                terminal: t.id.as_str().to_string(),
                room: config.rooms[t.room].id.clone(),
                room_name: config.rooms[t.room].name.clone(),
                fevers: 0,
            })
            .collect();
        let (status_tx, _) = watch::channel(Arc::new(Snapshot::capture(
            &crate::status::Sources {
                engine: engine.state(),
                devices: &devices,
                last_counted: &last_counted,
                stats: &stats,
                terminals: &terminal_stats,
                outbox: outbox.stats().snapshot(),
                link: &link,
                clock_synced: crate::clock::synchronised(),
                bookings: bookings.counts(),
                fevers: &fevers,
            },
            now,
        )));
        Core {
            config,
            engine,
            outbox,
            reorder: Reorder::new(REORDER_WINDOW),
            state_tx,
            link,
            stats,
            terminal_stats,
            passage_keys: Dedup::default(),
            devices,
            ordered_online,
            last_counted,
            status_tx,
            fevers,
            alerts: AlertWatch::new(now),
            pending: Batch::default(),
            committed_revision: None,
            state_dirty: true,
            last_state: None,
            last_commit: Instant::now(),
            last_summary: Instant::now(),
            urgent: false,
            first_baseline: false,
            receipts: Vec::new(),
            last_journal_commit: None,
            now: WallClock::new(now),
            clock_synced: crate::clock::synchronised(),
            notifier: Notifier::disabled(),
            bookings_committed: bookings.stored_form(),
            bookings,
        }
    }

    async fn run(
        &mut self,
        events: &mut mpsc::Receiver<DeviceEvent>,
        downlink: &mut mpsc::Receiver<Vec<u8>>,
        shutdown: &CancellationToken,
    ) {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(event) = events.recv() => {
                    self.receive(event);
                    // Whatever else has arrived goes into the same commit: a commit waits for
                    // the outbox's fsync budget, and one event per wait would let a burst
                    // of passages crawl at one a second.
                    self.receive_waiting(events);
                    if self.journal_now() {
                        self.flush_journal().await;
                    }
                }
                Some(bytes) = downlink.recv() => self.downlink(&bytes),
                _ = ticker.tick() => {
                    self.receive_waiting(events);
                    self.check_clock();
                    let now = Timestamp::now();
                    self.step(now);
                    self.publish_state(false);
                    self.publish_status(now);
                    self.flush(false).await;
                    // After the flush: a tick stuck on the outbox must starve the watchdog.
                    self.ping_watchdog();
                    if self.last_summary.elapsed() >= SUMMARY_EVERY {
                        self.summary().await;
                    }
                }
            }
        }
    }

    /// Takes the events already waiting in the channel (at most a channel's worth).
    fn receive_waiting(&mut self, events: &mut mpsc::Receiver<DeviceEvent>) {
        for _ in 0..devices::EVENT_CHANNEL_CAPACITY {
            match events.try_recv() {
                Ok(event) => self.receive(event),
                Err(_) => break,
            }
        }
    }

    fn check_clock(&mut self) {
        let synced = crate::clock::synchronised();
        if synced != self.clock_synced {
            if synced {
                tracing::info!(
                    "the system clock is synchronised; figures are stamped with trusted time again"
                );
            } else {
                tracing::warn!(
                    "the system clock is not synchronised; figures are marked clock_synced=false until it is"
                );
            }
            self.clock_synced = synced;
            self.state_dirty = true;
        }
    }

    /// A message from the centre (the bookings downlink).
    fn downlink(&mut self, bytes: &[u8]) {
        if self.bookings.receive(bytes, self.now.latest()) {
            self.queue_bookings_state();
        }
    }

    /// An event from a driver: held for reordering (a full buffer hands one back at once).
    ///
    /// A counter's first read ever (no baseline persisted) counts nothing: it only fixes where
    /// its crossings are measured from. That baseline is committed at the next tick, not a
    /// reorder window and a commit interval later: a gateway dying in its first seconds would
    /// otherwise start again from a fresh first read, and every crossing in between would be
    /// lost. Nothing of that counter can be held yet, so the commit skips none of its
    /// crossings.
    ///
    /// A passage whose device waits for its answer is journaled at once (outbox
    /// `passage_received`), not a reorder window and a commit later: the journal row is a
    /// few dozen bytes, and a device sending one record at a time gets its answer as soon as
    /// that row is on disk. A restart gives journaled passages back to the core
    /// ([`Core::journaled`]); the commit that holds the engine state counting one deletes
    /// its row, so it is counted once either way.
    fn receive(&mut self, event: DeviceEvent) {
        self.note_health(&event);
        if let DeviceEvent::Passage {
            at,
            facts,
            key,
            receipt: Some(receipt),
            ..
        } = &event
        {
            self.pending.received.push(crate::outbox::ReceivedPassage {
                terminal: key.terminal.to_string(),
                event: key.event.clone(),
                at_ms: at.as_millisecond(),
                // Plain data: serialising it cannot fail.
                facts: serde_json::to_vec(facts).expect("passage facts always serialise"),
            });
            self.receipts.push(receipt.clone());
        }
        if let DeviceEvent::CounterRead {
            counter,
            totals,
            step,
            ..
        } = &event
            && step.baseline
        {
            let id = self.config.counters[*counter].id.clone();
            self.pending.baselines.insert(id, *totals);
            self.first_baseline = true;
        }
        if let Some(early) = self.reorder.push(event) {
            self.apply(early);
        }
    }

    /// One tick at `now`: applies the events whose reorder window has passed, in time order,
    /// then moves the engine's clock to the same horizon, so no bin closes while an event
    /// stamped inside it may still be on its way.
    fn step(&mut self, now: Timestamp) {
        let horizon = self.reorder.horizon(now);
        for event in self.reorder.release(horizon) {
            self.apply(event);
        }
        for event in self.reorder.ahead_of(now) {
            self.apply(event);
        }
        self.advance(horizon);
    }

    /// Moves the engine's clock to `t` (never backwards) and queues what that closed.
    fn advance(&mut self, t: Timestamp) {
        let now = self.now.observe(t);
        for output in self.engine.tick(now) {
            match output {
                EngineOutput::MinuteClosed(agg) => {
                    self.pending.messages.push(payload::minute_message(
                        &self.config,
                        &agg,
                        self.clock_synced,
                    ));
                    let reports = self.bookings.minute(&agg);
                    self.situation_reports(reports);
                }
                EngineOutput::QuarterClosed(quarter) => {
                    self.pending.messages.push(situation::quarter_message(
                        &self.config,
                        &quarter,
                        self.clock_synced,
                    ));
                }
                EngineOutput::DayClosed(day) => {
                    for (room, entries, exits, residual) in &day.rooms {
                        tracing::info!(
                            day = %day.day, %room, entries, exits, residual,
                            "day closed; occupancy reset (a non-zero residual is counter drift)"
                        );
                    }
                    if let Some(figures) = &day.figures {
                        tracing::info!(
                            day = %day.day,
                            service_visits = figures.hall.service_visits,
                            unique_visitors = figures.hall.unique_visitors,
                            person_minutes = figures.hall.person_minutes.round(),
                            corrected_person_minutes = figures.corrected.hall.person_minutes.round(),
                            peak_hour = figures.peak_hour.as_deref().unwrap_or("none"),
                            "the day's situation figures are queued for the centre"
                        );
                        self.pending.messages.push(situation::day_message(
                            &self.config,
                            figures,
                            self.clock_synced,
                        ));
                    }
                    self.state_dirty = true;
                    let reports = self.bookings.day_closed(now);
                    self.situation_reports(reports);
                }
            }
        }
    }

    /// Queues the bookings tracker's reports for the centre, with the tracker that made them.
    fn situation_reports(&mut self, reports: Vec<SituationReport>) {
        for report in &reports {
            self.pending
                .messages
                .push(crate::uplink::bookings::report_message(
                    &self.config,
                    report,
                    self.clock_synced,
                ));
        }
        self.queue_bookings_state();
    }

    /// Queues the tracker for the next commit, if it changed since last queued.
    fn queue_bookings_state(&mut self) {
        let stored = self.bookings.stored_form();
        if stored != self.bookings_committed {
            self.pending.bookings_state = Some(stored.clone());
            self.bookings_committed = stored;
        }
    }

    fn apply(&mut self, event: DeviceEvent) {
        match event {
            DeviceEvent::CounterRead {
                counter,
                at,
                totals,
                step,
            } => {
                self.advance(at);
                let c = &self.config.counters[counter];
                self.engine
                    .crossings(c.door, step.inward, step.outward, self.now.latest());
                self.pending.baselines.insert(c.id.clone(), totals);
                if c.profile.mode == CountMode::Delta && (step.inward > 0 || step.outward > 0) {
                    self.urgent = true;
                }
                if step.inward > 0 || step.outward > 0 {
                    self.last_counted[counter] = Some(at);
                }
                self.state_dirty = true;
            }
            DeviceEvent::Passage {
                terminal,
                at,
                facts,
                key,
                receipt,
            } => {
                // Journaled on arrival (see `receive`): whatever becomes of it below, the
                // commit that holds this engine state holds its outcome, so its journal row
                // goes in that same commit.
                if receipt.is_some() {
                    self.pending
                        .received_done
                        .push((key.terminal.to_string(), key.event.clone()));
                }
                let stats = &self.terminal_stats.terminals[terminal];
                // A record of an earlier business day (a terminal's log replayed after a long
                // outage): that day's figures are closed and sent; counting it into today
                // would put yesterday's visitors on today's screen.
                let model = self.engine.model();
                if model.next_close_after(at) < model.next_close_after(self.now.latest()) {
                    stats.earlier_day.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                if !self.passage_keys.first_seen(&key) {
                    stats.duplicates.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                stats.passages.fetch_add(1, Ordering::Relaxed);
                if facts.fever {
                    self.fevers[terminal].fevers += 1;
                }
                self.advance(at);
                self.engine.passage(&facts);
                self.pending.passage_keys.push((
                    key.terminal.to_string(),
                    key.event,
                    at.as_second(),
                ));
                // Passages exist nowhere but here: commit them soon.
                self.urgent = true;
                self.state_dirty = true;
            }
            DeviceEvent::HeadCount {
                at, room, heads, ..
            } => {
                self.advance(at);
                self.engine.head_count(room, heads, self.now.latest());
                self.state_dirty = true;
            }
            DeviceEvent::DeviceOnline { counter, at } => {
                self.ordered_online[counter] = Some(true);
                self.report_devices(at);
            }
            DeviceEvent::DeviceOffline { counter, at, .. } => {
                self.ordered_online[counter] = Some(false);
                self.report_devices(at);
            }
        }
    }

    /// A counter's online/offline report, into its live health at once (see `devices`).
    fn note_health(&mut self, event: &DeviceEvent) {
        let (counter, online, at, reason) = match event {
            DeviceEvent::DeviceOnline { counter, at } => (*counter, true, *at, None),
            DeviceEvent::DeviceOffline {
                counter,
                at,
                reason,
            } => (*counter, false, *at, Some(reason.clone())),
            _ => return,
        };
        let d = &mut self.devices[counter];
        d.online = Some(online);
        d.since = Some(at);
        d.reason = reason;
        self.state_dirty = true;
    }

    /// Tells the engine how many counters answer, for the device online ratio (a counter
    /// not heard from yet counts as offline).
    fn report_devices(&mut self, at: Timestamp) {
        self.advance(at);
        let online = self
            .ordered_online
            .iter()
            .filter(|o| **o == Some(true))
            .count();
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        self.engine.devices_online(
            count(online),
            count(self.ordered_online.len()),
            self.now.latest(),
        );
    }

    /// Hands the uplink a fresh retained `state`, at most once per `state_interval` unless
    /// `force`d (at shutdown).
    fn publish_state(&mut self, force: bool) {
        // The state goes out on a tick, and ticks are `TICK` apart give or take the work in
        // them: without the half-tick of slack, an interval of one tick is missed whenever
        // a tick comes a millisecond early, and the state goes out every other second.
        let due = self
            .last_state
            .is_none_or(|t| t.elapsed() + TICK / 2 >= self.config.uplink.state_interval);
        // Even when nothing changed, refresh now and then: device statistics move, and the
        // centre can tell a quiet hall from a stuck gateway.
        let heartbeat = self
            .last_state
            .is_some_and(|t| t.elapsed() >= STATE_HEARTBEAT);
        if (self.state_dirty && (due || force)) || heartbeat {
            self.state_tx.send_replace(Some(payload::state_message(
                &self.config,
                self.engine.state(),
                &self.devices,
                &self.stats,
                &GatewayHealth {
                    clock_synced: self.clock_synced,
                    outbox: self.outbox.stats().snapshot(),
                    terminals: self
                        .terminal_stats
                        .terminals
                        .iter()
                        .map(|t| t.snapshot())
                        .collect(),
                    terminals_unattributed: self.terminal_stats.unattributed.snapshot(),
                },
                Timestamp::now(),
            )));
            self.state_dirty = false;
            self.last_state = Some(Instant::now());
        }
    }

    /// Commits what is pending, when it is worth a write: new messages for the centre go in
    /// at once; engine state and counter baselines at most once per `commit_interval`, since
    /// a crash loses nothing the counters' cumulative totals cannot give back (delta-mode
    /// counters excepted, hence `urgent`). Fewer commits, less wear on the SD card.
    ///
    /// Passages a device waits on are journaled sooner, in a commit of their journal rows
    /// alone (no engine state: a page or two, not the whole state), paced by the outbox's
    /// fsync budget; then their devices are told.
    async fn flush(&mut self, force: bool) {
        let revision = self.engine.state().revision;
        let engine_changed =
            self.committed_revision != Some(revision) || !self.pending.baselines.is_empty();
        let since = self.last_commit.elapsed();
        let due = since >= self.config.storage.commit_interval;
        // Passages (and delta reads) sooner, but not at every one: at a busy hall's rate,
        // a commit each second rewrote the engine state 86 400 times a day (4 GB/day).
        let urgent_due = self.urgent && since >= self.config.storage.event_commit_interval;
        // New bookings are committed at once: the centre sends them rarely.
        let worth = !self.pending.messages.is_empty()
            || self.pending.bookings_state.is_some()
            || self.first_baseline
            || (engine_changed && (due || urgent_due || force));
        if !worth {
            if !self.pending.received.is_empty() {
                self.flush_journal().await;
            }
            return;
        }
        self.last_commit = Instant::now();
        let receipts = mem::take(&mut self.receipts);
        let mut batch = mem::take(&mut self.pending);
        // Serialising the engine's plain-data state cannot fail.
        batch.engine_state =
            Some(serde_json::to_vec(self.engine.state()).expect("engine state always serialises"));
        match self.outbox.commit(batch).await {
            Ok(()) => {
                self.committed_revision = Some(revision);
                self.urgent = false;
                self.first_baseline = false;
                settle(receipts);
            }
            Err((error, returned)) => {
                self.keep_receipts(receipts);
                tracing::error!(%error, "cannot commit to the outbox; keeping the batch in memory and retrying");
                if let Some(mut returned) = returned {
                    // Keep order: what failed goes before what came since.
                    returned.messages.append(&mut self.pending.messages);
                    returned.baselines.append(&mut self.pending.baselines);
                    returned.passage_keys.append(&mut self.pending.passage_keys);
                    returned.received.append(&mut self.pending.received);
                    returned
                        .received_done
                        .append(&mut self.pending.received_done);
                    returned.engine_state = None;
                    returned.bookings_state = self
                        .pending
                        .bookings_state
                        .take()
                        .or(returned.bookings_state);
                    self.pending = returned;
                }
            }
        }
    }

    /// Commits the journal of received passages alone, and tells their devices.
    async fn flush_journal(&mut self) {
        self.last_journal_commit = Some(Instant::now());
        let receipts = mem::take(&mut self.receipts);
        let batch = Batch {
            received: mem::take(&mut self.pending.received),
            ..Batch::default()
        };
        match self.outbox.commit(batch).await {
            Ok(()) => settle(receipts),
            Err((error, returned)) => {
                self.keep_receipts(receipts);
                tracing::error!(%error, "cannot journal received passages; their devices are not answered yet");
                if let Some(mut returned) = returned {
                    returned.received.append(&mut self.pending.received);
                    self.pending.received = returned.received;
                }
            }
        }
    }

    /// A journal commit is worth making now rather than at the next tick: a device waits,
    /// and the outbox's fsync budget since the last one is spent.
    fn journal_now(&self) -> bool {
        !self.pending.received.is_empty()
            && self.last_journal_commit.is_none_or(|t| {
                t.elapsed() >= self.config.storage.min_commit_gap / crate::outbox::JOURNAL_PACE
            })
    }

    /// Receipts whose commit failed wait for the next one, before those that came since.
    fn keep_receipts(&mut self, mut receipts: Vec<crate::devices::terminals::Receipt>) {
        receipts.append(&mut self.receipts);
        self.receipts = receipts;
    }

    /// Pings systemd's watchdog (when it is on) with a one-line status for `systemctl status`.
    fn ping_watchdog(&mut self) {
        let Core {
            notifier,
            engine,
            devices,
            link,
            outbox,
            ..
        } = self;
        notifier.watchdog(Instant::now(), || {
            let occupancy: u64 = engine.state().rooms.iter().map(|r| r.occupancy()).sum();
            let online = devices.iter().filter(|d| d.online == Some(true)).count();
            let uplink = if link.connected.load(Ordering::Relaxed) {
                "connected"
            } else {
                "not connected"
            };
            format!(
                "{occupancy} people in the hall; {online}/{} devices online; uplink {uplink}; {} messages waiting",
                devices.len(),
                outbox.pending()
            )
        });
    }

    async fn summary(&mut self) {
        self.last_summary = Instant::now();
        let occupancy: u64 = self
            .engine
            .state()
            .rooms
            .iter()
            .map(|r| r.occupancy())
            .sum();
        let online = self
            .devices
            .iter()
            .filter(|d| d.online == Some(true))
            .count();
        let outbox = self.outbox.stats().snapshot();
        tracing::info!(
            occupancy,
            visitors_today = self.engine.state().visitors,
            devices_online = %format!("{online}/{}", self.devices.len()),
            uplink_connected = self.link.connected.load(Ordering::Relaxed),
            delivered = self.link.delivered.load(Ordering::Relaxed),
            pending = outbox.pending,
            outbox_bytes = outbox.bytes,
            buffer_left_hours = outbox.buffer_left_hours.unwrap_or(f64::INFINITY),
            clock_synced = self.clock_synced,
            "summary"
        );
    }
}

impl Core {
    /// Passages journaled and answered before a restart but not in the committed engine
    /// state: back into the reorder window, as received (their journal rows go with the
    /// commit that counts them; a re-send that came meanwhile counts once by its key).
    fn journaled(&mut self, received: Vec<crate::outbox::ReceivedPassage>) {
        let count = received.len();
        for r in received {
            let terminal = self
                .config
                .terminals
                .iter()
                .position(|t| t.id.as_str() == r.terminal);
            let facts = serde_json::from_slice::<crate::occupancy::PassageFacts>(&r.facts);
            let (Some(terminal), Ok(facts), Ok(at), Some(id)) = (
                terminal,
                facts,
                Timestamp::from_millisecond(r.at_ms),
                TerminalId::new(&r.terminal),
            ) else {
                tracing::error!(
                    terminal = %r.terminal,
                    "a journaled passage cannot be counted (its terminal left the config, or the row is damaged); dropping it"
                );
                self.pending.received_done.push((r.terminal, r.event));
                continue;
            };
            // The room is the terminal's now: a config reload may have moved it.
            let facts = crate::occupancy::PassageFacts {
                room: self.config.terminals[terminal].room,
                ..facts
            };
            let event = DeviceEvent::Passage {
                terminal,
                at,
                facts,
                key: DedupKey {
                    terminal: id,
                    event: r.event,
                },
                receipt: Some(crate::devices::terminals::Receipt::answered_before()),
            };
            if let Some(early) = self.reorder.push(event) {
                self.apply(early);
            }
        }
        if count > 0 {
            tracing::info!(
                passages = count,
                "passages answered before the restart but not yet counted are counted now"
            );
        }
    }
}

/// Tells the waiting transports their passages are safe.
fn settle(receipts: Vec<crate::devices::terminals::Receipt>) {
    for receipt in receipts {
        receipt.settle(crate::devices::terminals::Ack::Committed);
    }
}

impl Core {
    /// Diffs a fresh snapshot for alerts, queues their raises and clears for the outbox,
    /// and hands the snapshot to the status page; replacing a watch value never waits.
    /// `now` is the tick's time (a replay's virtual clock), which alerts are stamped with.
    fn publish_status(&mut self, now: Timestamp) {
        let mut snapshot = Snapshot::capture(
            &crate::status::Sources {
                engine: self.engine.state(),
                devices: &self.devices,
                last_counted: &self.last_counted,
                stats: &self.stats,
                terminals: &self.terminal_stats,
                outbox: self.outbox.stats().snapshot(),
                link: &self.link,
                clock_synced: self.clock_synced,
                bookings: self.bookings.counts(),
                fevers: &self.fevers,
            },
            now,
        );
        let alerts = self.alerts.observe(&self.config, &mut snapshot);
        self.pending.messages.extend(alerts);
        if !self.status_tx.is_closed() {
            self.status_tx.send_replace(Arc::new(snapshot));
        }
    }
}
