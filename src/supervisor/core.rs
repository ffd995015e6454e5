//! The hall's core: device events in, batches for the outbox, the retained `state` and the
//! status snapshot out — without I/O and without reading a clock.
//!
//! ```text
//! receive(DeviceEvent) ──► Reorder ──► Engine::apply(now, input) ──► pending Batch
//! downlink(bytes) ──► Bookings                                         │
//! tick(now, mono, gauges) ──► release held events, close bins, alert rules, pacing
//!                             └─► Tick { commit: Option<Commit>, state, snapshot }
//! ```
//!
//! Every method is synchronous and takes the time it may use: `now` (the wall clock, as the
//! figures are stamped) and `mono` (a monotonic instant, for pacing commits and `state`
//! messages). The live loop in [`super`] reads the clocks and the gauges (outbox, uplink,
//! clock synchronisation), commits each [`Commit`] and reports back with
//! [`HallCore::committed`] or [`HallCore::not_committed`]; a replay drives the same core with a
//! virtual clock, and the tests move time by passing it.
//!
//! What the core decides:
//! - **Order**: events are held for the reorder window ([`super::reorder`]) so figures do not
//!   depend on which device's message arrived first; health is taken on arrival.
//! - **Commits**: new messages for the centre at once; engine state and counter baselines at
//!   most once per `commit_interval` (cumulative counters give a crash's crossings back),
//!   sooner for passages and delta counters (`event_commit_interval`); a counter's first
//!   baseline at the next tick; the journal of passages a device waits on at once, paced by a
//!   quarter of the fsync budget (see [`HallCore::receive`]).
//! - **Alerts**: once a tick, the device conditions ([`crate::health`]) and the rules
//!   ([`crate::alerts`]) over typed facts; raises and clears become `alerts` messages.

use std::mem;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};

use super::reorder::{REORDER_WINDOW, Reorder};
use crate::alerts::{
    AlertKind, AlertMemory, Facts, FeverFact, KeptAlert, RoomFact, outbox_used_percent, read_kept,
};
use crate::bookings::{Bookings, SituationReport};
use crate::clock::{StepWatch, WallClock};
use crate::config::Config;
use crate::config::profile::CountMode;
use crate::devices::PollStats;
use crate::devices::counter::Counted;
use crate::devices::terminals::{Ack, Receipt, TerminalStatsSnapshot, TerminalsStats};
use crate::devices::{DeviceEvent, DeviceStats};
use crate::format::{rfc3339, span_words};
use crate::health::{self, CounterHealth, DeviceHealth};
use crate::occupancy::{Engine, EngineOutput, EngineState, HallModel, Input, PassageFacts};
use crate::outbox::{Batch, OutMessage, OutboxSnapshot, ReceivedPassage};
use crate::status::{LinkSnapshot, RoomFigures, Snapshot};
use crate::terminals::{Dedup, DedupKey, TerminalId};
use crate::uplink::payload::{self, GatewayHealth};
use crate::uplink::situation;

/// How often the live loop ticks; the `state` interval has half of it as slack.
pub const TICK: Duration = Duration::from_secs(1);
/// Longest time between two retained `state` messages.
const STATE_HEARTBEAT: Duration = Duration::from_secs(60);

/// What the shell reads for the core at each tick: the stages' gauges.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    pub clock_synced: bool,
    pub outbox: OutboxSnapshot,
    pub link: LinkSnapshot,
}

/// The counters the drivers and the core share (atomics: read and bumped, never locked).
#[derive(Debug, Clone)]
pub struct SharedStats {
    pub devices: Arc<DeviceStats>,
    pub terminals: Arc<TerminalsStats>,
}

/// When and how the core starts.
#[derive(Debug, Clone, Copy)]
pub struct Start {
    pub now: Timestamp,
    pub mono: Instant,
    pub clock_synced: bool,
    /// Whether ticks build the retained `state` and the status snapshot (the live gateway),
    /// or only what goes to the outbox (a replay).
    pub views: bool,
    /// This process among the gateway's runs (random at each start): with a sequence
    /// number, the `state`'s id, which no clock step can repeat.
    pub boot: u64,
}

/// What one tick hands the shell.
#[derive(Debug, Default)]
pub struct Tick {
    /// A batch worth committing now.
    pub commit: Option<Commit>,
    /// A fresh retained `state` for the uplink.
    pub state: Option<OutMessage>,
    /// The status page's new snapshot.
    pub snapshot: Option<Snapshot>,
}

/// A batch for the outbox, and the devices waiting for it.
#[derive(Debug)]
pub struct Commit {
    pub batch: Batch,
    /// Settled with [`Ack::Committed`] once the batch is on disk.
    pub receipts: Vec<Receipt>,
    pub kind: CommitKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitKind {
    /// Messages, the engine state at `revision`, baselines, keys, bookings, journal rows.
    Full { revision: u64 },
    /// Only the journal of received passages (no engine state: a page or two).
    Journal,
}

/// The core's state: the engine and what waits for the next commit.
pub struct HallCore {
    config: Config,
    engine: Engine,
    /// Events held until stragglers from other devices are in (see [`super::reorder`]).
    reorder: Reorder,
    stats: SharedStats,
    /// Terminal events already counted, restored from the outbox at start.
    passage_keys: Dedup,
    /// Each counter's health as its driver last reported it, taken on arrival: the state,
    /// the status page and the alerts show an outage as soon as it is seen, not a reorder
    /// window later (the window orders figures; health needs no ordering across devices).
    devices: Vec<DeviceHealth>,
    /// Each counter's online flag in event-time order, as the engine's online ratio must see
    /// it: set by `apply`, so a replay gives the same ratio whatever the arrival order.
    ordered_online: Vec<Option<bool>>,
    /// When each counter last counted someone, for the stale rule.
    last_counted: Vec<Option<Timestamp>>,
    /// Fever passages per terminal since the last alert step (the fever rule's input).
    new_fevers: Vec<u64>,
    alerts: AlertMemory,
    /// The open alerts as last queued for a commit.
    alerts_kept: Vec<KeptAlert>,
    started: Timestamp,
    pending: Batch,
    /// Engine revision last committed.
    committed_revision: Option<u64>,
    state_dirty: bool,
    last_state: Option<Instant>,
    last_commit: Instant,
    /// A delta-mode counter moved or a passage came: what it counted exists nowhere but
    /// here, so commit soon.
    urgent: bool,
    /// A counter's first baseline is pending: commit it at the next tick (see `receive`).
    first_baseline: bool,
    /// Passages whose transport waits to tell the device they were received, journaled in
    /// `pending.received`: settled once a commit holds their journal rows (see `receive`).
    receipts: Vec<Receipt>,
    /// When the journal of received passages was last committed on its own.
    last_journal_commit: Option<Instant>,
    /// Latest time seen, so the engine's clock never runs backwards between drivers — nor
    /// when the wall clock is stepped back: bins then hold still until it catches up.
    now: WallClock,
    clock_synced: bool,
    views: bool,
    boot: u64,
    /// `state` messages made in this process, for their ids.
    states_made: u64,
    /// Steps of the wall clock, told from the monotonic clock at each tick.
    steps: StepWatch,
    /// A forward step whose skipped minutes the engine has yet to report.
    stepped_forward: bool,
    /// Ticks run in this process (the first one's gap is downtime).
    ticks: u64,
    /// The centre's bookings and their tracker; `bookings_committed` is its stored form as
    /// last queued, so an unchanged tracker costs no write.
    bookings: Bookings,
    bookings_committed: Vec<u8>,
    /// Times the outbox made its database again, as last seen in the gauges.
    storage_recreated: u64,
    /// Commit everything held in memory at the next tick (a database made again has only
    /// what the old one's unlinked file still held).
    force_commit: bool,
}

/// What the outbox kept of an earlier run.
#[derive(Debug, Default)]
pub struct Resume<'a> {
    pub engine_state: Option<EngineState>,
    pub bookings_state: Option<&'a [u8]>,
    /// The open alerts as last committed (see [`AlertMemory::resume`]).
    pub alerts_state: Option<&'a [u8]>,
}

impl HallCore {
    /// The core of the hall in `config`, resumed from what an earlier run left (nothing, for
    /// a replay or a test), starting at `start`.
    pub fn new(config: Config, resume: Resume<'_>, start: Start) -> Self {
        let bookings = Bookings::new(&config, resume.bookings_state);
        let engine = Engine::new(
            HallModel::from_config(&config),
            resume.engine_state,
            start.now,
        );
        let stats = SharedStats {
            devices: DeviceStats::new(&config),
            terminals: TerminalsStats::new(&config),
        };
        let kept = resume.alerts_state.map(read_kept).unwrap_or_default();
        let mut core = Self::with_parts(config, engine, bookings, stats, start);
        if !kept.is_empty() {
            tracing::info!(
                open = kept.len(),
                "alerts open before the restart are checked again; each continues or is cleared"
            );
            core.alerts = AlertMemory::resume(&kept);
            core.alerts_kept = kept;
        }
        core
    }

    fn with_parts(
        config: Config,
        engine: Engine,
        bookings: Bookings,
        stats: SharedStats,
        start: Start,
    ) -> Self {
        let devices: Vec<DeviceHealth> = config
            .counters
            .iter()
            .map(|c| DeviceHealth {
                id: c.id.clone(),
                kind: "people_counter",
                ..DeviceHealth::default()
            })
            .collect();
        HallCore {
            reorder: Reorder::new(REORDER_WINDOW),
            passage_keys: Dedup::default(),
            ordered_online: vec![None; devices.len()],
            last_counted: vec![None; devices.len()],
            new_fevers: vec![0; config.terminals.len()],
            devices,
            alerts: AlertMemory::default(),
            alerts_kept: Vec::new(),
            started: start.now,
            pending: Batch::default(),
            committed_revision: None,
            state_dirty: true,
            last_state: None,
            last_commit: start.mono,
            urgent: false,
            first_baseline: false,
            receipts: Vec::new(),
            last_journal_commit: None,
            now: WallClock::new(start.now),
            clock_synced: start.clock_synced,
            views: start.views,
            boot: start.boot,
            states_made: 0,
            steps: StepWatch::default(),
            stepped_forward: false,
            ticks: 0,
            bookings_committed: bookings.stored_form(),
            storage_recreated: 0,
            force_commit: false,
            bookings,
            config,
            engine,
            stats,
        }
    }

    /// The engine's time as resumed, before the first tick: when the figures (and with them
    /// the counters' baselines) were last committed by the run before; the start for a fresh
    /// core.
    pub fn saved_at(&self) -> Timestamp {
        self.engine.state().bin.integrated_to
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The counters the drivers bump, for starting them.
    pub fn shared_stats(&self) -> SharedStats {
        self.stats.clone()
    }

    pub fn bookings(&self) -> &Bookings {
        &self.bookings
    }

    /// Terminal events counted before a restart (from the outbox): a re-send counts once.
    pub fn restore_passage_keys(&mut self, keys: &[(String, String)]) {
        for (terminal, event) in keys {
            if let Some(terminal) = TerminalId::new(terminal) {
                self.passage_keys.first_seen(&DedupKey {
                    terminal,
                    event: event.clone(),
                });
            }
        }
    }

    /// Passages journaled and answered before a restart but not in the committed engine
    /// state: back into the reorder window, as received (their journal rows go with the
    /// commit that counts them; a re-send that came meanwhile counts once by its key).
    pub fn journaled(&mut self, received: Vec<ReceivedPassage>) {
        let count = received.len();
        for r in received {
            let terminal = self
                .config
                .terminals
                .iter()
                .position(|t| t.id.as_str() == r.terminal);
            let facts = serde_json::from_slice::<PassageFacts>(&r.facts);
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
            let facts = PassageFacts {
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
                receipt: Some(Receipt::answered_before()),
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
    /// `passage_received`, see [`HallCore::journal_due`]), not a reorder window and a commit
    /// later: the journal row is a few dozen bytes, and a device sending one record at a time
    /// gets its answer as soon as that row is on disk. A restart gives journaled passages
    /// back to the core ([`HallCore::journaled`]); the commit that holds the engine state
    /// counting one deletes its row, so it is counted once either way.
    pub fn receive(&mut self, event: DeviceEvent) {
        self.note_health(&event);
        if let DeviceEvent::Passage {
            at,
            facts,
            key,
            receipt: Some(receipt),
            ..
        } = &event
        {
            self.pending.received.push(ReceivedPassage {
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

    /// A message from the centre (the bookings downlink).
    pub fn downlink(&mut self, bytes: &[u8]) {
        if self.bookings.receive(bytes, self.now.latest()) {
            self.queue_bookings_state();
        }
    }

    /// The journal of received passages, when a commit of it alone is worth making now
    /// rather than at the next tick: a device waits, and a quarter of the outbox's fsync
    /// budget has passed since the last one.
    pub fn journal_due(&mut self, mono: Instant) -> Option<Commit> {
        let due = !self.pending.received.is_empty()
            && self.last_journal_commit.is_none_or(|t| {
                mono.saturating_duration_since(t)
                    >= self.config.storage.min_commit_gap / crate::outbox::JOURNAL_PACE
            });
        due.then(|| self.journal(mono))
    }

    /// One tick at `now`: the clock's trust, the held events whose window has passed, the
    /// engine's clock, the retained `state`, the alert rules and the status snapshot, and
    /// whatever is worth a commit.
    pub fn tick(&mut self, now: Timestamp, mono: Instant, gauges: &Gauges) -> Tick {
        self.note_clock(gauges.clock_synced);
        let step = self.steps.observe(now, mono);
        if let Some(step) = step {
            self.note_step(step, now);
        }
        self.note_storage(&gauges.outbox);
        self.release(now);
        self.ticks += 1;
        let state = self.views.then(|| self.state(false, now, mono, gauges));
        let snapshot = self.run_alerts(now, mono, gauges, step);
        Tick {
            commit: self.flush(false, mono),
            state: state.flatten(),
            snapshot,
        }
    }

    /// The last tick, at shutdown (or the end of a replay): every held event goes in, the
    /// state goes out whether due or not, and whatever is pending is committed.
    pub fn finish(&mut self, now: Timestamp, mono: Instant, gauges: &Gauges) -> Tick {
        for event in self.reorder.drain() {
            self.apply(event);
        }
        let state = self.views.then(|| self.state(true, now, mono, gauges));
        Tick {
            commit: self.flush(true, mono),
            state: state.flatten(),
            snapshot: None,
        }
    }

    /// A commit the core asked for is on disk.
    pub fn committed(&mut self, kind: CommitKind) {
        if let CommitKind::Full { revision } = kind {
            self.committed_revision = Some(revision);
            self.urgent = false;
            self.first_baseline = false;
            self.force_commit = false;
        }
    }

    /// A commit failed: its receipts wait for the next one, and what the outbox handed back
    /// goes before what came since.
    pub fn not_committed(
        &mut self,
        kind: CommitKind,
        mut receipts: Vec<Receipt>,
        returned: Option<Batch>,
    ) {
        receipts.append(&mut self.receipts);
        self.receipts = receipts;
        let Some(mut returned) = returned else {
            return;
        };
        match kind {
            CommitKind::Journal => {
                returned.received.append(&mut self.pending.received);
                self.pending.received = returned.received;
            }
            CommitKind::Full { .. } => {
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
                returned.alerts_state = self.pending.alerts_state.take().or(returned.alerts_state);
                self.pending = returned;
            }
        }
    }

    /// The status page's snapshot of `now`, without running the alert rules (the first one,
    /// before any tick).
    pub fn snapshot(&self, now: Timestamp, mono: Instant, gauges: &Gauges) -> Snapshot {
        let counters = self.counter_health();
        let terminals = self.terminal_snapshots();
        let devices = health::judge_devices(&self.config, &counters, &terminals, self.started, now);
        self.build_snapshot(now, mono, gauges, counters, terminals, devices)
    }

    /// One line for `systemctl status` (the watchdog ping's status).
    pub fn status_line(&self, gauges: &Gauges) -> String {
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
        let uplink = if gauges.link.connected {
            "connected"
        } else {
            "not connected"
        };
        format!(
            "{occupancy} people in the hall; {online}/{} devices online; uplink {uplink}; {} messages waiting",
            self.devices.len(),
            gauges.outbox.pending
        )
    }

    /// Logs the periodic summary line.
    pub fn log_summary(&self, gauges: &Gauges) {
        let state = self.engine.state();
        let occupancy: u64 = state.rooms.iter().map(|r| r.occupancy()).sum();
        let online = self
            .devices
            .iter()
            .filter(|d| d.online == Some(true))
            .count();
        let outbox = &gauges.outbox;
        tracing::info!(
            occupancy,
            visitors_today = state.visitors,
            devices_online = %format!("{online}/{}", self.devices.len()),
            uplink_connected = gauges.link.connected,
            delivered = gauges.link.delivered,
            pending = outbox.pending,
            outbox_bytes = outbox.bytes,
            buffer_left_hours = outbox.buffer_left_hours.unwrap_or(f64::INFINITY),
            clock_synced = self.clock_synced,
            "summary"
        );
    }

    /// The outbox made its database again (its data directory was deleted): everything the
    /// core holds — the engine state, the bookings tracker — goes into the next commit,
    /// whether it changed or not.
    fn note_storage(&mut self, outbox: &OutboxSnapshot) {
        if outbox.recreated <= self.storage_recreated {
            return;
        }
        self.storage_recreated = outbox.recreated;
        self.force_commit = true;
        self.pending.bookings_state = Some(self.bookings.stored_form());
        // Plain strings and times: serialising them cannot fail.
        self.pending.alerts_state =
            Some(serde_json::to_vec(&self.alerts_kept).expect("kept alerts always serialise"));
        tracing::warn!(
            revision = self.engine.state().revision,
            "the outbox's database was made again; committing today's figures from memory"
        );
    }

    fn note_clock(&mut self, synced: bool) {
        if synced == self.clock_synced {
            return;
        }
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

    /// The wall clock was stepped by `step` (forward positive) just before `now`.
    fn note_step(&mut self, step: SignedDuration, now: Timestamp) {
        let by = span_words(step.unsigned_abs().as_secs());
        if step.is_positive() {
            tracing::warn!(
                step_ms = step.as_millis(),
                now = %rfc3339(now),
                "the system clock stepped forward by {by}; the minutes it jumped over have no \
                 figures and are reported to the centre as skipped"
            );
            self.stepped_forward = true;
        } else {
            tracing::warn!(
                step_ms = step.as_millis(),
                now = %rfc3339(now),
                "the system clock stepped back by {by}; figures stay in the current minute until \
                 the clock passes the latest time already seen"
            );
        }
        self.state_dirty = true;
    }

    /// Applies the events whose reorder window has passed, in time order, then moves the
    /// engine's clock to the same horizon, so no bin closes while an event stamped inside it
    /// may still be on its way.
    fn release(&mut self, now: Timestamp) {
        let horizon = self.reorder.horizon(now);
        for event in self.reorder.release(horizon) {
            self.apply(event);
        }
        for event in self.reorder.ahead_of(now) {
            self.apply(event);
        }
        self.engine_input(horizon, Input::Time);
    }

    /// Hands the engine `input` at `at` (never earlier than the latest time seen) and queues
    /// what that closed.
    fn engine_input(&mut self, at: Timestamp, input: Input<'_>) {
        let now = self.now.observe(at);
        for output in self.engine.apply(now, input) {
            self.closed(output, now);
        }
    }

    fn closed(&mut self, output: EngineOutput, now: Timestamp) {
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
            EngineOutput::Skipped { from, to } => {
                let cause = if std::mem::take(&mut self.stepped_forward) {
                    "clock_step"
                } else if self.ticks == 0 {
                    "gateway_stopped"
                } else {
                    "gateway_stalled"
                };
                tracing::info!(
                    from = %rfc3339(from),
                    to = %rfc3339(to),
                    cause,
                    "minutes without figures; the centre is told they were skipped"
                );
                self.pending.messages.push(payload::gap_message(
                    &self.config,
                    from,
                    to,
                    cause,
                    self.clock_synced,
                ));
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

    /// An event whose reorder window has passed, into the engine.
    fn apply(&mut self, event: DeviceEvent) {
        match event {
            DeviceEvent::CounterRead {
                counter,
                at,
                totals,
                step,
            } => {
                let c = &self.config.counters[counter];
                let (door, moved) = (c.door, step.inward > 0 || step.outward > 0);
                self.pending.baselines.insert(c.id.clone(), totals);
                if c.profile.mode == CountMode::Delta && moved {
                    self.urgent = true;
                }
                self.engine_input(
                    at,
                    Input::Crossings {
                        door,
                        inward: step.inward,
                        outward: step.outward,
                    },
                );
                if moved {
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
            } => self.passage(terminal, at, &facts, key, receipt.is_some()),
            DeviceEvent::HeadCount {
                at, room, heads, ..
            } => {
                self.engine_input(at, Input::HeadCount { room, heads });
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

    /// A terminal passage whose reorder window has passed: counted once, into today.
    fn passage(
        &mut self,
        terminal: usize,
        at: Timestamp,
        facts: &PassageFacts,
        key: DedupKey,
        journaled: bool,
    ) {
        // Journaled on arrival (see `receive`): whatever becomes of it below, the commit that
        // holds this engine state holds its outcome, so its journal row goes in that same
        // commit.
        if journaled {
            self.pending
                .received_done
                .push((key.terminal.to_string(), key.event.clone()));
        }
        let stats = &self.stats.terminals.terminals[terminal];
        // A record of an earlier business day (a terminal's log replayed after a long
        // outage): that day's figures are closed and sent; counting it into today would put
        // yesterday's visitors on today's screen.
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
            self.new_fevers[terminal] += 1;
        }
        self.engine_input(at, Input::Passage(facts));
        self.pending
            .passage_keys
            .push((key.terminal.to_string(), key.event, at.as_second()));
        // Passages exist nowhere but here: commit them soon.
        self.urgent = true;
        self.state_dirty = true;
    }

    /// A counter's online/offline report, into its live health at once (see `devices`).
    fn note_health(&mut self, event: &DeviceEvent) {
        if let DeviceEvent::CounterRead {
            counter, at, step, ..
        } = event
        {
            self.note_counting(*counter, *at, step);
            return;
        }
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

    /// A reading's counting doubt, into the counter's live health and statistics at once, like
    /// its online/offline reports (see `devices`).
    fn note_counting(&mut self, counter: usize, at: Timestamp, step: &Counted) {
        if let Some(doubt) = step.doubt {
            let stats = &self.stats.devices.counters[counter];
            PollStats::count(if doubt.kind.is_reset() {
                &stats.resets
            } else {
                &stats.implausible_steps
            });
        }
        if self.devices[counter].counting.note(at, step) {
            self.state_dirty = true;
        }
    }

    /// Tells the engine how many counters answer, for the device online ratio (a counter
    /// not heard from yet counts as offline).
    fn report_devices(&mut self, at: Timestamp) {
        let online = self
            .ordered_online
            .iter()
            .filter(|o| **o == Some(true))
            .count();
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let configured = count(self.ordered_online.len());
        self.engine_input(
            at,
            Input::DevicesOnline {
                online: count(online),
                configured,
            },
        );
    }

    /// A fresh retained `state`, at most once per `state_interval` unless `force`d (at
    /// shutdown).
    fn state(
        &mut self,
        force: bool,
        now: Timestamp,
        mono: Instant,
        gauges: &Gauges,
    ) -> Option<OutMessage> {
        let since = self.last_state.map(|t| mono.saturating_duration_since(t));
        // The state goes out on a tick, and ticks are `TICK` apart give or take the work in
        // them: without the half-tick of slack, an interval of one tick is missed whenever
        // a tick comes a millisecond early, and the state goes out every other second.
        let due = since.is_none_or(|s| s + TICK / 2 >= self.config.uplink.state_interval);
        // Even when nothing changed, refresh now and then: device statistics move, and the
        // centre can tell a quiet hall from a stuck gateway.
        let heartbeat = since.is_some_and(|s| s >= STATE_HEARTBEAT);
        if !((self.state_dirty && (due || force)) || heartbeat) {
            return None;
        }
        self.state_dirty = false;
        self.last_state = Some(mono);
        self.states_made += 1;
        let msg_id = payload::state_msg_id(&self.config.hall.id, self.boot, self.states_made);
        Some(payload::state_message(
            &self.config,
            self.engine.state(),
            &self.devices,
            &self.stats.devices,
            &GatewayHealth {
                clock_synced: self.clock_synced,
                outbox: gauges.outbox.clone(),
                terminals: self.terminal_snapshots(),
                terminals_unattributed: self.stats.terminals.unattributed.snapshot(),
            },
            now,
            msg_id,
        ))
    }

    /// Judges the devices, runs the alert rules (their raises and clears are queued for the
    /// centre) and, for the live gateway, builds the status page's snapshot with today's
    /// alerts. `now` is the tick's time (a replay's virtual clock): alerts are stamped with it.
    fn run_alerts(
        &mut self,
        now: Timestamp,
        mono: Instant,
        gauges: &Gauges,
        clock_step: Option<SignedDuration>,
    ) -> Option<Snapshot> {
        let counters = self.counter_health();
        let terminals = self.terminal_snapshots();
        let devices = health::judge_devices(&self.config, &counters, &terminals, self.started, now);
        let config = &self.config;
        // Over capacity is judged on the drift-corrected occupancy: a line that misses exits
        // must not keep a room "full" all afternoon (it is the raw count until something has
        // been learned, and whenever the lines miss nothing).
        let live = self.engine.live();
        let rooms = live.rooms.iter().zip(&config.rooms);
        let facts = Facts {
            now,
            devices: &devices,
            rooms: rooms
                .map(|(&occupancy, room)| RoomFact {
                    id: &room.id,
                    name: &room.name,
                    occupancy,
                    capacity: room.capacity,
                })
                .collect(),
            fevers: config
                .terminals
                .iter()
                .zip(&self.new_fevers)
                .map(|(t, &new)| FeverFact {
                    terminal: t.id.as_str(),
                    room: &config.rooms[t.room].id,
                    room_name: &config.rooms[t.room].name,
                    new,
                })
                .collect(),
            clock_synced: self.clock_synced,
            terminal_intake_stopped: self.stats.terminals.intake.stopped(),
            link_connected: gauges.link.connected,
            outbox_used_percent: outbox_used_percent(&gauges.outbox),
            dropped_messages: gauges.outbox.dropped + gauges.link.dropped,
            clock_step,
            storage_fault: gauges.outbox.storage_fault(),
            storage_recreated: gauges.outbox.recreated,
        };
        let step = self.alerts.step(&facts, &config.hall.time_zone);
        for alert in &step.page {
            log_alert(alert.kind, alert.subject.as_deref(), &alert.message);
        }
        for change in &step.changes {
            let message = payload::alert_message(config, change, self.clock_synced);
            self.pending.messages.push(message);
        }
        let kept = self.alerts.kept();
        if kept != self.alerts_kept {
            // Plain strings and times: serialising them cannot fail.
            self.pending.alerts_state =
                Some(serde_json::to_vec(&kept).expect("kept alerts always serialise"));
            self.alerts_kept = kept;
        }
        self.new_fevers.iter_mut().for_each(|n| *n = 0);
        self.views
            .then(|| self.build_snapshot(now, mono, gauges, counters, terminals, devices))
    }

    fn counter_health(&self) -> Vec<CounterHealth> {
        self.devices
            .iter()
            .zip(&self.stats.devices.counters)
            .zip(&self.last_counted)
            .map(|((health, stats), last_counted)| CounterHealth {
                health: health.clone(),
                stats: stats.snapshot(),
                last_counted: *last_counted,
            })
            .collect()
    }

    fn terminal_snapshots(&self) -> Vec<TerminalStatsSnapshot> {
        self.stats
            .terminals
            .terminals
            .iter()
            .map(|t| t.snapshot())
            .collect()
    }

    fn build_snapshot(
        &self,
        now: Timestamp,
        mono: Instant,
        gauges: &Gauges,
        counters: Vec<CounterHealth>,
        terminals: Vec<TerminalStatsSnapshot>,
        devices: Vec<health::DeviceCondition>,
    ) -> Snapshot {
        let engine = self.engine.state();
        let live = self.engine.live();
        let shared = &self.stats.terminals;
        Snapshot {
            taken: mono,
            at: now,
            day: engine.day,
            rooms: engine
                .rooms
                .iter()
                .zip(&live.rooms)
                .map(|(r, &occupancy_corrected)| RoomFigures {
                    occupancy: r.occupancy(),
                    entries: r.entries,
                    exits: r.exits,
                    occupancy_corrected,
                })
                .collect(),
            visitors_today: engine.visitors,
            clock_synced: self.clock_synced,
            counters,
            devices,
            buses: self
                .stats
                .devices
                .buses
                .iter()
                .map(|s| s.snapshot())
                .collect(),
            terminals,
            terminals_unattributed: shared.unattributed.snapshot(),
            terminal_intake_stopped: shared.intake.stopped(),
            terminal_endpoint: shared.endpoint.snapshot(),
            outbox: gauges.outbox.clone(),
            uplink: gauges.link,
            bookings: self.bookings.counts().clone(),
            alerts: self.alerts.alerts().cloned().collect(),
            alerts_today: self.alerts.alerts_today(),
        }
    }

    /// What is pending, when it is worth a write: new messages for the centre go in at once;
    /// engine state and counter baselines at most once per `commit_interval`, since a crash
    /// loses nothing the counters' cumulative totals cannot give back (delta-mode counters
    /// excepted, hence `urgent`). Fewer commits, less wear on the SD card.
    ///
    /// Passages a device waits on are journaled sooner, in a commit of their journal rows
    /// alone (no engine state: a page or two, not the whole state), paced by the outbox's
    /// fsync budget; then their devices are told.
    fn flush(&mut self, force: bool, mono: Instant) -> Option<Commit> {
        let revision = self.engine.state().revision;
        let engine_changed =
            self.committed_revision != Some(revision) || !self.pending.baselines.is_empty();
        let since = mono.saturating_duration_since(self.last_commit);
        let due = since >= self.config.storage.commit_interval;
        // Passages (and delta reads) sooner, but not at every one: at a busy hall's rate,
        // a commit each second rewrote the engine state 86 400 times a day (4 GB/day).
        let urgent_due = self.urgent && since >= self.config.storage.event_commit_interval;
        // New bookings are committed at once: the centre sends them rarely.
        let worth = !self.pending.messages.is_empty()
            || self.pending.bookings_state.is_some()
            || self.first_baseline
            || self.force_commit
            || (engine_changed && (due || urgent_due || force));
        if !worth {
            return (!self.pending.received.is_empty()).then(|| self.journal(mono));
        }
        self.last_commit = mono;
        let mut batch = mem::take(&mut self.pending);
        // Serialising the engine's plain-data state cannot fail.
        batch.engine_state =
            Some(serde_json::to_vec(self.engine.state()).expect("engine state always serialises"));
        Some(Commit {
            batch,
            receipts: mem::take(&mut self.receipts),
            kind: CommitKind::Full { revision },
        })
    }

    /// The journal of received passages alone, for a commit now.
    fn journal(&mut self, mono: Instant) -> Commit {
        self.last_journal_commit = Some(mono);
        Commit {
            batch: Batch {
                received: mem::take(&mut self.pending.received),
                ..Batch::default()
            },
            receipts: mem::take(&mut self.receipts),
            kind: CommitKind::Journal,
        }
    }
}

/// The other alerts' causes are logged where they happen (drivers, uplink, outbox, clock);
/// a full room and a fever are news only here.
fn log_alert(kind: AlertKind, subject: Option<&str>, message: &str) {
    match kind {
        AlertKind::RoomOverCapacity => tracing::info!(
            room = subject.unwrap_or_default(),
            message = %message,
            "a room is over capacity"
        ),
        AlertKind::FeverPassage => tracing::info!(
            terminal = subject.unwrap_or_default(),
            message = %message,
            "a fever passage was recorded"
        ),
        _ => tracing::debug!(kind = kind.as_str(), message = %message, "status alert"),
    }
}

/// Tells the waiting transports their passages are safe.
pub fn settle(receipts: Vec<Receipt>) {
    for receipt in receipts {
        receipt.settle(Ack::Committed);
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
