//! The outbox: SQLite in WAL mode, owned by one thread, where everything bound for the centre
//! is written first.
//!
//! rusqlite is blocking, so the database lives on its own OS thread and the async side talks
//! to it over a bounded channel ([`Outbox`] is the handle). Each [`Batch`] from the core loop
//! (new messages, the engine state, the counter baselines) is committed in **one transaction**:
//! either a crossing is in the state *and* its counter baseline has moved, or neither has, so a
//! crash can neither lose nor repeat a crossing.
//!
//! **Durability.** `synchronous = FULL` in WAL mode: every commit is durable once it returns,
//! power cut or not. `NORMAL` would save one fsync per commit but can lose the last commits
//! on power loss — exactly the minutes the counters can no longer give back once their
//! baselines have moved. Commits are rare instead: at most `max_fsyncs_per_sec`, and in
//! practice one a minute plus the deletions of delivered rows, which bounds the SD card's
//! wear.
//!
//! **Delivery.** A row leaves the outbox only when the uplink reports its PUBACK
//! ([`Outbox::acked`]); acked rows are deleted with the next commit, or in a batch of their
//! own after `ack_flush_interval` (or sooner when many pile up during a replay). Rows handed
//! to the uplink are *leased* until acked or until the uplink reconnects
//! ([`Outbox::release`]): a leased row is never handed out twice on one connection, nor
//! merged by a roll-up, so the centre cannot count it twice under two ids. Alerts are handed
//! out before everything else, then the backlog oldest first (see the uplink for why).
//!
//! **Bounds.** Near `max_outbox_bytes` old minute bins are rolled up (see [`bound`]); a full
//! disk lowers the bound to what fits and does the same. On open, a damaged database is moved
//! aside and a fresh one created: the gateway never crash-loops on its own storage.
//!
//! This file is the async side (the handle, the batch and message types, the stats); `db`
//! is the thread's side (the connection, the schema, every statement).

pub mod bound;
mod db;
pub mod disk;
mod pack;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OptionalExtension, Transaction, params};
use serde::Serialize;
use tokio::sync::{Notify, mpsc, oneshot};

pub use bound::{Coarse, RollUp};

use crate::devices::counter::Totals;
use bound::{FillRate, RowMeta};
use db::{Db, move_aside};

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "hallgate.db";
/// Schema version, in SQLite's `user_version`.
const SCHEMA_VERSION: i64 = 1;
/// Acked rows that trigger a deletion batch of their own (a replay acks hundreds a second).
const ACK_FLUSH_ROWS: usize = 512;
/// Damaged databases kept for a post-mortem; older ones are deleted.
const DAMAGED_KEPT: usize = 2;
/// Rows examined per roll-up pass.
const ROLL_UP_SCAN: usize = 4096;

/// Which messages go first when there is a backlog.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Priority {
    /// Sent before anything else after a reconnect.
    Alert,
    #[default]
    Normal,
}

impl Priority {
    fn code(self) -> i64 {
        match self {
            Priority::Alert => 0,
            Priority::Normal => 1,
        }
    }

    fn from_code(code: i64) -> Self {
        if code == 0 {
            Priority::Alert
        } else {
            Priority::Normal
        }
    }
}

/// A message waiting for the central broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutMessage {
    /// What it is (`agg_1m`, …).
    pub kind: String,
    /// Topic below the hall's base topic, e.g. `agg/1m`.
    pub topic: String,
    pub retain: bool,
    pub msg_id: String,
    pub payload: Vec<u8>,
    pub priority: Priority,
    /// Start of the aggregate's bin, Unix seconds; what roll-ups group by.
    pub bin_start: Option<i64>,
}

/// A stored message, with its row id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub id: i64,
    pub message: OutMessage,
}

/// Everything one commit writes.
#[derive(Debug, Default)]
pub struct Batch {
    pub messages: Vec<OutMessage>,
    /// Serialised engine state, when it changed.
    pub engine_state: Option<Vec<u8>>,
    /// Counter id → last totals read.
    pub baselines: BTreeMap<String, Totals>,
    /// Terminal events counted in this batch, (terminal, event key, Unix seconds): kept for
    /// two days so a re-send after a restart is still known, committed with the counts they
    /// went into.
    pub passage_keys: Vec<(String, String, i64)>,
    /// Serialised bookings tracker (the centre's accepted bookings and what their slots have
    /// seen), when it changed; committed with the messages it produced.
    pub bookings_state: Option<Vec<u8>>,
    /// Passages a device waits to hear were received, journaled before the engine has them:
    /// once committed the device may be told, and a restart gives them back to the core.
    pub received: Vec<ReceivedPassage>,
    /// Journaled passages the engine now holds, (terminal, event key): deleted in the same
    /// transaction as the engine state that counted them.
    pub received_done: Vec<(String, String)>,
    /// Serialised open alerts, when they changed: committed with the raises and clears that
    /// changed them, so after a restart each episode continues or is cleared.
    pub alerts_state: Option<Vec<u8>>,
}

impl Batch {
    /// Only received passages to journal: the small write a waiting device's answer needs.
    pub fn is_journal_only(&self) -> bool {
        !self.received.is_empty()
            && self.messages.is_empty()
            && self.engine_state.is_none()
            && self.baselines.is_empty()
            && self.passage_keys.is_empty()
            && self.bookings_state.is_none()
            && self.received_done.is_empty()
            && self.alerts_state.is_none()
    }
}

/// How many journal-only commits may go in the time of one ordinary commit
/// (`storage.max_fsyncs_per_sec`): a terminal that sends one record at a time and waits for
/// each answer gets up to this many answers a second at the default budget. Each writes the
/// journal's page or two, not the engine state.
pub const JOURNAL_PACE: u32 = 4;

/// A passage a device was (or is about to be) told was received, before the engine counted
/// it. No identity: the facts carry the member's daily-salted hash at most.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedPassage {
    pub terminal: String,
    pub event: String,
    pub at_ms: i64,
    /// The passage's facts, as the core serialises them.
    pub facts: Vec<u8>,
}

/// How long counted terminal event keys are kept.
const PASSAGE_KEYS_KEPT_SECS: i64 = 2 * 86_400;
/// …and at most this many, the newest: more than the in-memory set can use after a restart
/// (`Dedup` keeps 4096 per terminal) for 64 terminals.
const PASSAGE_KEYS_KEPT_ROWS: i64 =
    64 * crate::terminals::dedup::DEFAULT_CAPACITY_PER_TERMINAL as i64;
/// Oldest keys looked at per commit for the age rule: pruning costs the same whatever the
/// table holds, and outruns any insert rate a hall has.
const PASSAGE_KEYS_PRUNE_SCAN: i64 = 4096;

/// What the database held at start-up.
#[derive(Debug, Default)]
pub struct Restored {
    pub engine_state: Option<Vec<u8>>,
    pub baselines: BTreeMap<String, Totals>,
    pub pending_messages: u64,
    /// Terminal event keys counted recently, oldest first.
    pub passage_keys: Vec<(String, String)>,
    /// The bookings tracker as last committed.
    pub bookings_state: Option<Vec<u8>>,
    /// Passages received and answered but not yet in the committed engine state, oldest
    /// first: the core takes them again.
    pub received: Vec<ReceivedPassage>,
    /// Where a damaged database was moved, if one was found.
    pub moved_aside: Option<PathBuf>,
    /// The open alerts as last committed.
    pub alerts_state: Option<Vec<u8>>,
}

/// How the outbox behaves; from `[storage]`.
#[derive(Debug, Clone)]
pub struct OutboxOptions {
    /// Longest time acked rows wait for deletion when nothing else is committed.
    pub ack_flush_interval: Duration,
    /// Most bytes the stored messages may take.
    pub max_bytes: u64,
    /// Shortest time between two write transactions (each one fsync).
    pub min_commit_gap: Duration,
    /// How aggregates are merged near the bound; `None` drops instead.
    pub roll_up: Option<RollUp>,
}

impl OutboxOptions {
    pub fn from_config(storage: &crate::config::Storage, roll_up: Option<RollUp>) -> Self {
        OutboxOptions {
            // Twice the commit interval: in steady state the deletions ride along with the next
            // commit instead of costing a write (and an fsync) of their own.
            ack_flush_interval: storage.commit_interval * 2,
            max_bytes: storage.max_outbox_bytes,
            min_commit_gap: storage.min_commit_gap,
            roll_up,
        }
    }
}

/// The outbox's health, shared with the state payload and the logs.
#[derive(Debug, Default)]
pub struct OutboxStats {
    /// Messages not yet acknowledged.
    pub pending: AtomicU64,
    /// Space they take, as counted against the bound.
    pub bytes: AtomicU64,
    /// The bound in force (lower than configured after the disk filled up).
    pub max_bytes: AtomicU64,
    /// Write transactions, each one fsync of the write-ahead log.
    pub commits: AtomicU64,
    /// Rows merged away into coarser bins.
    pub rolled_up: AtomicU64,
    /// Rows dropped unsent because even roll-ups did not make room.
    pub dropped: AtomicU64,
    /// Write transactions that failed.
    pub write_errors: AtomicU64,
    /// From the first "disk full" until the periodic check finds space again (the bound and
    /// the reserve are then restored).
    pub disk_full: AtomicBool,
    /// Hours of space left at the current fill rate, as `f64` bits; NaN when unknown.
    buffer_left_hours: AtomicU64,
    /// The last write transaction failed (for a reason other than a full disk that making
    /// room fixed): nothing new is stored until one succeeds.
    pub write_failing: AtomicBool,
    /// The data directory is gone and could not be made again, or cannot be written.
    pub data_dir_unusable: AtomicBool,
    /// Times the data directory (or the database in it) was found deleted and made again.
    pub recreated: AtomicU64,
}

/// A copy of [`OutboxStats`] for payloads and logs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OutboxSnapshot {
    pub pending: u64,
    pub bytes: u64,
    pub max_bytes: u64,
    pub commits: u64,
    pub rolled_up: u64,
    pub dropped: u64,
    pub write_errors: u64,
    pub disk_full: bool,
    /// Hours until the bound is reached at the current rate, before roll-ups; absent while
    /// nothing accumulates (the link is up) or the rate is not yet known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buffer_left_hours: Option<f64>,
    /// See [`OutboxStats::write_failing`]. Not in the `state` payload: the centre hears of
    /// it as a `storage_fault` alert.
    #[serde(skip)]
    pub write_failing: bool,
    #[serde(skip)]
    pub data_dir_unusable: bool,
    /// See [`OutboxStats::recreated`]; the core forces a full commit when it grows.
    #[serde(skip)]
    pub recreated: u64,
}

/// What keeps the gateway from storing as it should, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StorageFault {
    /// The data directory is gone and could not be made again, or cannot be written.
    DataDirUnusable,
    /// Commits fail: figures are kept in memory only.
    WritesFailing,
    /// The disk filled up: storing goes on under a lowered bound, without the reserve.
    DiskFull,
}

impl StorageFault {
    /// Whether nothing new can be stored while it lasts (as opposed to a full disk, where
    /// the lowered bound keeps storing).
    pub fn cannot_store(self) -> bool {
        !matches!(self, StorageFault::DiskFull)
    }
}

impl OutboxSnapshot {
    /// The worst storage fault now, if any.
    pub fn storage_fault(&self) -> Option<StorageFault> {
        if self.data_dir_unusable {
            Some(StorageFault::DataDirUnusable)
        } else if self.write_failing {
            Some(StorageFault::WritesFailing)
        } else if self.disk_full {
            Some(StorageFault::DiskFull)
        } else {
            None
        }
    }
}

impl OutboxStats {
    pub fn snapshot(&self) -> OutboxSnapshot {
        let hours = f64::from_bits(self.buffer_left_hours.load(Ordering::Relaxed));
        OutboxSnapshot {
            pending: self.pending.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            max_bytes: self.max_bytes.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
            rolled_up: self.rolled_up.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
            disk_full: self.disk_full.load(Ordering::Relaxed),
            buffer_left_hours: (!hours.is_nan()).then_some((hours * 10.0).round() / 10.0),
            write_failing: self.write_failing.load(Ordering::Relaxed),
            data_dir_unusable: self.data_dir_unusable.load(Ordering::Relaxed),
            recreated: self.recreated.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("cannot create data directory {path}: {error}")]
    CreateDir {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot open outbox database {path}: {error}")]
    Open {
        path: PathBuf,
        error: rusqlite::Error,
    },
    #[error("outbox database {path} is damaged: {detail}")]
    Damaged { path: PathBuf, detail: String },
    #[error("cannot move the damaged database {path} aside: {error}")]
    MoveAside {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("outbox database error: {0}")]
    Sqlite(rusqlite::Error),
    #[error("cannot commit to the outbox: {0}")]
    Commit(String),
    #[error("cannot start the outbox thread: {0}")]
    Thread(std::io::Error),
    #[error("the outbox thread has stopped")]
    Stopped,
}

impl From<rusqlite::Error> for OutboxError {
    fn from(error: rusqlite::Error) -> Self {
        OutboxError::Sqlite(error)
    }
}

impl OutboxError {
    /// The database file itself is unusable (as opposed to, say, a permission problem).
    fn is_damage(&self) -> bool {
        let code = |e: &rusqlite::Error| {
            matches!(
                e.sqlite_error_code(),
                Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
            )
        };
        match self {
            OutboxError::Damaged { .. } => true,
            OutboxError::Open { error, .. } | OutboxError::Sqlite(error) => code(error),
            _ => false,
        }
    }

    fn is_disk_full(&self) -> bool {
        matches!(self, OutboxError::Sqlite(e) | OutboxError::Open { error: e, .. }
            if e.sqlite_error_code() == Some(ErrorCode::DiskFull))
    }
}

enum Command {
    Commit(Batch, oneshot::Sender<Result<(), (String, Batch)>>),
    Acked(Vec<i64>),
    Fetch {
        limit: usize,
        reply: oneshot::Sender<Vec<StoredMessage>>,
    },
    Release,
    Close(oneshot::Sender<()>),
    /// Look at the disk and the data directory now. Tests only (the thread does it every
    /// `disk::CHECK_EVERY`).
    /// `copy_fails`: as if the old file could not be read, should the database have to be
    /// made again.
    #[cfg(test)]
    CheckStorage {
        copy_fails: bool,
        reply: oneshot::Sender<()>,
    },
    /// Stop at once, as a crash would: nothing flushed. Tests only.
    #[cfg(test)]
    Abandon(oneshot::Sender<()>),
}

/// Handle to the outbox thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbox {
    commands: mpsc::Sender<Command>,
    /// Signalled after each commit that added messages.
    new_messages: Arc<Notify>,
    stats: Arc<OutboxStats>,
}

impl Outbox {
    /// Opens (or creates) `data_dir/hallgate.db`, checks it, and starts the owning thread. A
    /// damaged database is moved aside (ERROR) and a fresh one created.
    pub fn open(
        data_dir: &Path,
        options: OutboxOptions,
    ) -> Result<(Outbox, Restored), OutboxError> {
        std::fs::create_dir_all(data_dir).map_err(|error| OutboxError::CreateDir {
            path: data_dir.to_path_buf(),
            error,
        })?;
        let path = data_dir.join(DB_FILE);
        let stats = Arc::new(OutboxStats::default());
        let (mut db, moved_aside) = match Db::open(&path, &options, stats.clone()) {
            Ok(db) => (db, None),
            Err(error) if error.is_damage() => {
                let moved = move_aside(&path)?;
                tracing::error!(
                    %error,
                    moved_to = %moved.display(),
                    "the outbox database is damaged; it was moved aside and a fresh one created — \
                     undelivered messages and today's totals in it are lost"
                );
                (Db::open(&path, &options, stats.clone())?, Some(moved))
            }
            Err(error) => return Err(error),
        };
        let mut restored = db.restore()?;
        restored.moved_aside = moved_aside;
        let (tx, rx) = mpsc::channel(256);
        let notify = Arc::new(Notify::new());
        let thread_notify = notify.clone();
        std::thread::Builder::new()
            .name("outbox".into())
            .spawn(move || db.serve(rx, thread_notify))
            .map_err(OutboxError::Thread)?;
        Ok((
            Outbox {
                commands: tx,
                new_messages: notify,
                stats,
            },
            restored,
        ))
    }

    pub fn stats(&self) -> &Arc<OutboxStats> {
        &self.stats
    }

    /// Commits `batch` in one transaction; returns when it is durable. On failure the batch
    /// comes back, so the caller can keep it and try again.
    pub async fn commit(&self, batch: Batch) -> Result<(), (OutboxError, Option<Batch>)> {
        let (reply, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError(Command::Commit(batch, _))) =
            self.commands.send(Command::Commit(batch, reply)).await
        {
            return Err((OutboxError::Stopped, Some(batch)));
        }
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err((message, batch))) => Err((OutboxError::Commit(message), Some(batch))),
            Err(_) => Err((OutboxError::Stopped, None)),
        }
    }

    /// The broker acknowledged these rows; they are deleted with the next write.
    pub async fn acked(&self, ids: Vec<i64>) {
        let _ = self.commands.send(Command::Acked(ids)).await;
    }

    /// Leases up to `limit` undelivered messages not leased yet: alerts first, then the
    /// oldest.
    pub async fn fetch(&self, limit: usize) -> Vec<StoredMessage> {
        let (reply, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::Fetch { limit, reply })
            .await
            .is_err()
        {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// The uplink has a new connection: whatever was leased and not acked is undelivered
    /// and will be handed out again.
    pub async fn release(&self) {
        let _ = self.commands.send(Command::Release).await;
    }

    /// Messages not yet acknowledged.
    pub fn pending(&self) -> u64 {
        self.stats.pending.load(Ordering::Relaxed)
    }

    /// Resolves when a commit has added messages since the last call.
    pub async fn new_messages(&self) {
        self.new_messages.notified().await;
    }

    /// Flushes pending deletions and stops the thread.
    pub async fn close(&self) {
        let (reply, rx) = oneshot::channel();
        if self.commands.send(Command::Close(reply)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Looks at the disk and the data directory now, as the thread does periodically.
    #[cfg(test)]
    async fn check_storage(&self) {
        self.check_storage_with(false).await;
    }

    /// As [`Outbox::check_storage`]; `copy_fails` makes a deleted database's old file
    /// unreadable, so it is made afresh.
    #[cfg(test)]
    async fn check_storage_with(&self, copy_fails: bool) {
        let (reply, rx) = oneshot::channel();
        let command = Command::CheckStorage { copy_fails, reply };
        if self.commands.send(command).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Stops the thread the way a crash would, without flushing anything.
    #[cfg(test)]
    async fn abandon(&self) {
        let (reply, rx) = oneshot::channel();
        if self.commands.send(Command::Abandon(reply)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

#[cfg(test)]
mod tests;
