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

pub mod bound;
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
    pub disk_full: AtomicBool,
    /// Hours of space left at the current fill rate, as `f64` bits; NaN when unknown.
    buffer_left_hours: AtomicU64,
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

    /// Stops the thread the way a crash would, without flushing anything.
    #[cfg(test)]
    async fn abandon(&self) {
        let (reply, rx) = oneshot::channel();
        if self.commands.send(Command::Abandon(reply)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Space kept back for making room on a full disk.
const RESERVE_BYTES: usize = 512 * 1024;

/// Writes the reserve file (real blocks, not a sparse file); `None`, with a WARN, if the disk
/// has no room for it.
fn make_reserve(db: &Path) -> Option<PathBuf> {
    let path = PathBuf::from(format!("{}.reserve", db.display()));
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == RESERVE_BYTES as u64) {
        return Some(path);
    }
    match std::fs::write(&path, vec![0u8; RESERVE_BYTES]) {
        Ok(()) => Some(path),
        Err(error) => {
            let _ = std::fs::remove_file(&path);
            tracing::warn!(%error, path = %path.display(), "cannot write the outbox's reserve file; a full disk will be harder to recover from");
            None
        }
    }
}

/// Renames the database and its WAL and shared-memory files to `*.damaged-<unix secs>`, and
/// deletes all but the newest [`DAMAGED_KEPT`] earlier ones so damage cannot fill the disk.
fn move_aside(path: &Path) -> Result<PathBuf, OutboxError> {
    let stamp = jiff::Timestamp::now().as_second();
    let target = path.with_extension(format!("db.damaged-{stamp}"));
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", path.display()));
        let to = PathBuf::from(format!("{}{suffix}", target.display()));
        match std::fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(OutboxError::MoveAside { path: from, error }),
        }
    }
    if let Some(dir) = path.parent()
        && let Ok(entries) = std::fs::read_dir(dir)
    {
        let mut damaged: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.contains(".damaged-") && !n.ends_with("-wal") && !n.ends_with("-shm")
                })
            })
            .collect();
        // Oldest first, by the Unix time in the name.
        let stamp_of = |p: &PathBuf| {
            p.to_str()
                .and_then(|s| s.rsplit_once(".damaged-"))
                .and_then(|(_, stamp)| stamp.parse::<i64>().ok())
                .unwrap_or(0)
        };
        damaged.sort_by_key(stamp_of);
        let excess = damaged.len().saturating_sub(DAMAGED_KEPT);
        for old in &damaged[..excess] {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", old.display()));
            }
        }
    }
    Ok(target)
}

/// The connection's settings, and a check that every page of the file reads.
fn configure(conn: &Connection, path: &Path) -> Result<(), OutboxError> {
    let open_err = |error| OutboxError::Open {
        path: path.to_path_buf(),
        error,
    };
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(open_err)?;
    // Small pages for a new database: a commit rewrites every page it touches (WAL frame,
    // then checkpoint), and most commits touch a few small rows, so 1 KiB pages write a
    // quarter of what 4 KiB pages would. An existing file keeps its page size.
    conn.pragma_update(None, "page_size", 1024)
        .map_err(open_err)?;
    // Any page of a damaged file can fail; this reads them all (cheap at outbox sizes).
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(open_err)?;
    if check != "ok" {
        return Err(OutboxError::Damaged {
            path: path.to_path_buf(),
            detail: check,
        });
    }
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(open_err)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(open_err)?;
    // Checkpoint every 256 pages (1 MiB) and give the WAL file back after: a small
    // data partition must not hold a large idle WAL.
    conn.pragma_update(None, "wal_autocheckpoint", 256)
        .map_err(open_err)?;
    conn.pragma_update(None, "journal_size_limit", 4 * 1024 * 1024)
        .map_err(open_err)?;
    Ok(())
}

/// Creates the tables and runs the migrations, in one transaction.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    // The schema and its migrations in one transaction: one commit, so one WAL sync,
    // where statement by statement a new database took a dozen fsyncs before the gateway
    // could start (seconds on a busy SD card), and a crash in between cannot leave half a
    // migration behind.
    let schema = conn.unchecked_transaction()?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS outbox (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 kind TEXT NOT NULL,
                 topic TEXT NOT NULL,
                 retain INTEGER NOT NULL,
                 msg_id TEXT NOT NULL,
                 payload BLOB NOT NULL
             );
             CREATE TABLE IF NOT EXISTS engine_state (
                 id INTEGER PRIMARY KEY CHECK (id = 1),
                 state BLOB NOT NULL
             );
             CREATE TABLE IF NOT EXISTS counter_baseline (
                 counter_id TEXT PRIMARY KEY,
                 inward INTEGER NOT NULL,
                 outward INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS passage_seen (
                 at INTEGER NOT NULL,
                 terminal TEXT NOT NULL,
                 event TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS bookings_state (
                 id INTEGER PRIMARY KEY CHECK (id = 1),
                 state BLOB NOT NULL
             );
             CREATE TABLE IF NOT EXISTS passage_received (
                 terminal TEXT NOT NULL,
                 event TEXT NOT NULL,
                 at_ms INTEGER NOT NULL,
                 facts BLOB NOT NULL,
                 PRIMARY KEY (terminal, event)
             ) WITHOUT ROWID;",
    )?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version < 1 {
        // Version 0 had no priority or bin columns.
        let has_priority = conn
            .prepare("SELECT 1 FROM pragma_table_info('outbox') WHERE name = 'priority'")
            .and_then(|mut s| s.exists([]))?;
        if !has_priority {
            conn.execute_batch(
                "ALTER TABLE outbox ADD COLUMN priority INTEGER NOT NULL DEFAULT 1;
                     ALTER TABLE outbox ADD COLUMN bin_start INTEGER;",
            )?;
        }
        // Alerts are few: a partial index finds them without a scan, and costs no write
        // for the other rows.
        conn.execute_batch(&format!(
            "CREATE INDEX IF NOT EXISTS outbox_alerts ON outbox(id) WHERE priority = 0;
                 PRAGMA user_version = {SCHEMA_VERSION};"
        ))?;
    }
    // Before the append-only key log, keys were in a table keyed by (terminal, event):
    // carry them over once, oldest first.
    let keyed = conn
        .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'passage_key'")
        .and_then(|mut s| s.exists([]))?;
    if keyed {
        conn.execute_batch(
            "INSERT INTO passage_seen (at, terminal, event)
                     SELECT at, terminal, event FROM passage_key ORDER BY at;
                 DROP TABLE passage_key;",
        )?;
    }
    schema.commit()
}

struct Db {
    conn: Connection,
    stats: Arc<OutboxStats>,
    options: OutboxOptions,
    /// The bound in force: the configured one, lowered when the disk filled up.
    max_bytes: u64,
    /// Rows in the table (acked or not).
    rows: u64,
    bytes: u64,
    inserted_bytes: u64,
    /// Handed to the uplink, not yet acked.
    leased: HashSet<i64>,
    /// Acked, not yet deleted.
    acked: HashSet<i64>,
    acked_since: Option<Instant>,
    /// Highest normal-priority id leased since the last release: everything at or below it
    /// is leased or acked, so the next fetch starts after it.
    cursor: i64,
    last_write: Option<Instant>,
    /// The last write that was not a journal-only commit: those keep `min_commit_gap` from
    /// each other, so the small journal writes between them never hold one back.
    last_full_write: Option<Instant>,
    fill: FillRate,
    /// A file of zeros kept beside the database and deleted when the disk is full, so there
    /// is room to write the roll-ups and deletions that make room.
    reserve: Option<PathBuf>,
}

impl Db {
    // This is the one place allowed to open SQLite (clippy.toml).
    #[allow(clippy::disallowed_methods)]
    fn open(
        path: &Path,
        options: &OutboxOptions,
        stats: Arc<OutboxStats>,
    ) -> Result<Db, OutboxError> {
        let open_err = |error| OutboxError::Open {
            path: path.to_path_buf(),
            error,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        configure(&conn, path)?;
        migrate(&conn).map_err(open_err)?;
        let (rows, bytes): (i64, i64) = conn
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload) + LENGTH(msg_id) + LENGTH(topic) + LENGTH(kind) + 48), 0) FROM outbox",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(open_err)?;
        stats
            .buffer_left_hours
            .store(f64::NAN.to_bits(), Ordering::Relaxed);
        let mut db = Db {
            conn,
            stats,
            options: options.clone(),
            max_bytes: options.max_bytes,
            rows: rows as u64,
            bytes: bytes as u64,
            inserted_bytes: 0,
            leased: HashSet::new(),
            acked: HashSet::new(),
            acked_since: None,
            cursor: 0,
            last_write: None,
            last_full_write: None,
            fill: FillRate::new(Duration::from_secs(3600)),
            reserve: make_reserve(path),
        };
        // A restart with a lower bound, or a database that grew before a crash: make room
        // now, before the uplink starts handing rows out.
        if db.bytes > db.high_water()
            && let Err(error) = db.make_room_now()
        {
            tracing::error!(%error, "cannot make room in the outbox at start-up; it stays over its bound for now");
        }
        db.publish_stats();
        Ok(db)
    }

    fn restore(&mut self) -> Result<Restored, OutboxError> {
        let engine_state = self
            .conn
            .query_row("SELECT state FROM engine_state WHERE id = 1", [], |r| {
                r.get::<_, Vec<u8>>(0)
            })
            .optional()?
            .map(pack::unpack);
        let bookings_state = self
            .conn
            .query_row("SELECT state FROM bookings_state WHERE id = 1", [], |r| {
                r.get::<_, Vec<u8>>(0)
            })
            .optional()?
            .map(pack::unpack);
        let mut baselines = BTreeMap::new();
        let mut stmt = self
            .conn
            .prepare("SELECT counter_id, inward, outward FROM counter_baseline")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        for row in rows {
            let (id, inward, outward) = row?;
            baselines.insert(
                id,
                Totals {
                    inward: inward as u64,
                    outward: outward as u64,
                },
            );
        }
        drop(stmt);
        let mut stmt = self
            .conn
            .prepare("SELECT terminal, event FROM passage_seen ORDER BY at, rowid")?;
        let passage_keys = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        drop(stmt);
        let mut stmt = self
            .conn
            .prepare("SELECT terminal, event, at_ms, facts FROM passage_received ORDER BY at_ms")?;
        let received = stmt
            .query_map([], |r| {
                Ok(ReceivedPassage {
                    terminal: r.get(0)?,
                    event: r.get(1)?,
                    at_ms: r.get(2)?,
                    facts: r.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        drop(stmt);
        Ok(Restored {
            engine_state,
            baselines,
            pending_messages: self.rows,
            passage_keys,
            bookings_state,
            received,
            moved_aside: None,
        })
    }

    fn publish_stats(&self) {
        let s = &self.stats;
        s.pending.store(
            self.rows.saturating_sub(self.acked.len() as u64),
            Ordering::Relaxed,
        );
        s.bytes.store(self.bytes, Ordering::Relaxed);
        s.max_bytes.store(self.max_bytes, Ordering::Relaxed);
    }

    /// Re-estimates the hours of space left; called after each write.
    fn update_buffer_left(&mut self) {
        let now = Instant::now();
        self.fill.sample(now, self.inserted_bytes);
        // What the centre takes away does not fill the buffer: only a growing backlog does.
        let growing = self.rows > self.acked.len() as u64 + 1;
        let hours = if growing {
            bound::hours_left(
                self.max_bytes.saturating_sub(self.bytes),
                self.fill.bytes_per_hour(now, self.inserted_bytes),
            )
        } else {
            None
        };
        self.stats
            .buffer_left_hours
            .store(hours.unwrap_or(f64::NAN).to_bits(), Ordering::Relaxed);
    }

    /// When acked rows should be deleted in a write of their own, if any wait.
    fn flush_deadline(&self) -> Option<Instant> {
        let since = self.acked_since?;
        let earliest = self
            .last_write
            .map_or_else(Instant::now, |t| t + self.options.min_commit_gap);
        let due = if self.acked.len() >= ACK_FLUSH_ROWS {
            Instant::now()
        } else {
            since + self.options.ack_flush_interval
        };
        Some(due.max(earliest))
    }

    /// Waits, if needed, so writes stay `min_commit_gap` apart (fsyncs per second).
    fn pace(&self) {
        self.pace_by(self.options.min_commit_gap);
    }

    /// Waits, if needed, so this write comes `gap` after the last one.
    fn pace_by(&self, gap: Duration) {
        Self::pace_after(self.last_write, gap);
    }

    /// Waits, if needed, until `gap` after `last`.
    fn pace_after(last: Option<Instant>, gap: Duration) {
        if let Some(last) = last {
            let next = last + gap;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
        }
    }

    fn serve(mut self, mut rx: mpsc::Receiver<Command>, notify: Arc<Notify>) {
        // A tiny runtime of this thread's own, only to wait on the channel with a deadline.
        let waiter = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(rt) => rt,
            Err(error) => {
                tracing::error!(%error, "cannot start the outbox thread's timer; nothing can be stored");
                return;
            }
        };
        loop {
            let command = match self.flush_deadline() {
                None => rx.blocking_recv(),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match waiter.block_on(async { tokio::time::timeout(left, rx.recv()).await }) {
                        Ok(c) => c,
                        Err(_) => {
                            self.flush_acked();
                            continue;
                        }
                    }
                }
            };
            let Some(command) = command else {
                self.flush_acked();
                return;
            };
            match command {
                Command::Commit(batch, reply) => {
                    let had_messages = !batch.messages.is_empty();
                    let result = match self.commit(&batch) {
                        Ok(()) => Ok(()),
                        Err(error) => Err((error.to_string(), batch)),
                    };
                    if result.is_ok() && had_messages {
                        notify.notify_one();
                    }
                    let _ = reply.send(result);
                }
                Command::Acked(ids) => {
                    for id in ids {
                        if self.leased.remove(&id) {
                            self.acked.insert(id);
                        }
                    }
                    if !self.acked.is_empty() {
                        self.acked_since.get_or_insert_with(Instant::now);
                    }
                    self.publish_stats();
                }
                Command::Fetch { limit, reply } => {
                    let rows = self.fetch(limit).unwrap_or_else(|error| {
                        tracing::error!(%error, "cannot read the outbox");
                        Vec::new()
                    });
                    let _ = reply.send(rows);
                }
                Command::Release => {
                    self.leased.clear();
                    self.cursor = 0;
                    // Deleted now, so the next fetches need not step over them.
                    self.flush_acked();
                }
                Command::Close(reply) => {
                    self.flush_acked();
                    // Closing the connection checkpoints and removes the WAL: do it before
                    // answering, so a process that exits right after leaves one tidy file.
                    drop(self);
                    let _ = reply.send(());
                    return;
                }
                #[cfg(test)]
                Command::Abandon(reply) => {
                    let _ = reply.send(());
                    return;
                }
            }
        }
    }

    fn flush_acked(&mut self) {
        if self.acked.is_empty() {
            return;
        }
        self.pace();
        let result = (|| {
            let tx = self.conn.transaction()?;
            let (rows, bytes) = delete_rows(&tx, self.acked.iter().copied())?;
            tx.commit()?;
            Ok::<_, OutboxError>((rows, bytes))
        })();
        self.last_write = Some(Instant::now());
        match result {
            Ok((rows, bytes)) => {
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
                self.rows -= rows;
                self.bytes -= bytes;
                self.acked.clear();
                self.acked_since = None;
            }
            Err(error) => {
                self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "cannot delete delivered messages from the outbox; retrying with the next write");
                // Retry later, not in a tight loop.
                self.acked_since = Some(Instant::now());
                if error.is_disk_full() {
                    self.disk_full();
                }
            }
        }
        self.update_buffer_left();
        self.publish_stats();
    }

    fn commit(&mut self, batch: &Batch) -> Result<(), OutboxError> {
        let journal_only = batch.is_journal_only();
        if journal_only {
            // A device is waiting for its answer, and the write is a page or two: these may
            // go JOURNAL_PACE times as often as the fsync budget.
            self.pace_by(self.options.min_commit_gap / JOURNAL_PACE);
        } else {
            // The budget between full commits, and a journal write's gap after any write:
            // waiting out a whole gap behind a journal write would hold the core (and every
            // device waiting on it) for a second.
            Self::pace_after(self.last_full_write, self.options.min_commit_gap);
            self.pace_by(self.options.min_commit_gap / JOURNAL_PACE);
        }
        let mut result = self.try_commit(batch);
        if let Err(error) = &result
            && error.is_disk_full()
        {
            // Make room, then try once more; if even that fails the batch goes back to the
            // core, which keeps it in memory and tries again.
            self.disk_full();
            result = self.try_commit(batch);
        }
        self.last_write = Some(Instant::now());
        if !journal_only {
            self.last_full_write = self.last_write;
        }
        match &result {
            Ok(()) => {
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
                if self.stats.disk_full.swap(false, Ordering::Relaxed) {
                    tracing::warn!(
                        max_bytes = self.max_bytes,
                        "the outbox can write again after the disk was full; the lowered bound stays until restart"
                    );
                }
            }
            Err(_) => {
                self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.update_buffer_left();
        self.publish_stats();
        result
    }

    fn try_commit(&mut self, batch: &Batch) -> Result<(), OutboxError> {
        let mut rows = self.rows;
        let mut bytes = self.bytes;
        let mut inserted = 0u64;
        let (high, low) = (self.high_water(), self.low_water());
        let room = RoomRules {
            leased: &self.leased,
            acked: &self.acked,
            roll_up: self.options.roll_up,
            low,
        };
        let tx = self.conn.transaction()?;
        let (deleted_rows, deleted_bytes) = delete_rows(&tx, self.acked.iter().copied())?;
        rows -= deleted_rows;
        bytes -= deleted_bytes;
        for m in &batch.messages {
            insert(&tx, None, m)?;
            rows += 1;
            bytes += bound::row_bytes(m);
            inserted += bound::row_bytes(m);
        }
        if let Some(state) = &batch.engine_state {
            tx.execute(
                "INSERT INTO engine_state (id, state) VALUES (1, ?1)
                 ON CONFLICT(id) DO UPDATE SET state = excluded.state",
                [pack::pack(state)],
            )?;
        }
        if let Some(state) = &batch.bookings_state {
            tx.execute(
                "INSERT INTO bookings_state (id, state) VALUES (1, ?1)
                 ON CONFLICT(id) DO UPDATE SET state = excluded.state",
                [pack::pack(state)],
            )?;
        }
        for (id, t) in &batch.baselines {
            tx.execute(
                "INSERT INTO counter_baseline (counter_id, inward, outward) VALUES (?1, ?2, ?3)
                 ON CONFLICT(counter_id) DO UPDATE SET inward = excluded.inward, outward = excluded.outward",
                params![id, t.inward as i64, t.outward as i64],
            )?;
        }
        if let Some(newest) = batch.passage_keys.iter().map(|k| k.2).max() {
            // Appended, never looked up (the core dedups in memory; this is read once, at
            // start): new rows go on the table's last page, so a commit of a few hundred keys
            // writes a page or two. A keyed table spread them over a page per terminal.
            for (terminal, event, at) in &batch.passage_keys {
                tx.prepare_cached(
                    "INSERT INTO passage_seen (at, terminal, event) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![at, terminal, event])?;
            }
            let last = tx.last_insert_rowid();
            tx.prepare_cached("DELETE FROM passage_seen WHERE rowid <= ?1")?
                .execute([last - PASSAGE_KEYS_KEPT_ROWS])?;
            tx.prepare_cached(
                "DELETE FROM passage_seen WHERE at < ?1 AND rowid IN
                     (SELECT rowid FROM passage_seen ORDER BY rowid LIMIT ?2)",
            )?
            .execute([newest - PASSAGE_KEYS_KEPT_SECS, PASSAGE_KEYS_PRUNE_SCAN])?;
        }
        // Journaled first, settled after: a passage received and counted since the last
        // commit is inserted and deleted in this one transaction.
        for r in &batch.received {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO passage_received (terminal, event, at_ms, facts)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![r.terminal, r.event, r.at_ms, r.facts])?;
        }
        for (terminal, event) in &batch.received_done {
            tx.prepare_cached("DELETE FROM passage_received WHERE terminal = ?1 AND event = ?2")?
                .execute(params![terminal, event])?;
        }
        // Over the bound: make room in the same transaction, so it costs no extra fsync.
        let mut space = Space {
            rows,
            bytes,
            rolled_up: 0,
            dropped: 0,
        };
        if space.bytes > high {
            room.make_room(&tx, &mut space)?;
        }
        tx.commit()?;
        self.acked.clear();
        self.acked_since = None;
        self.rows = space.rows;
        self.bytes = space.bytes;
        self.inserted_bytes += inserted;
        self.account(&space);
        Ok(())
    }

    /// Makes room under the bound in a transaction of its own.
    fn make_room_now(&mut self) -> Result<(), OutboxError> {
        let room = RoomRules {
            leased: &self.leased,
            acked: &self.acked,
            roll_up: self.options.roll_up,
            low: self.max_bytes / 4 * 3,
        };
        let mut space = Space {
            rows: self.rows,
            bytes: self.bytes,
            rolled_up: 0,
            dropped: 0,
        };
        let tx = self.conn.transaction()?;
        room.make_room(&tx, &mut space)?;
        tx.commit()?;
        self.rows = space.rows;
        self.bytes = space.bytes;
        self.account(&space);
        Ok(())
    }

    fn high_water(&self) -> u64 {
        self.max_bytes / 10 * 9
    }

    fn low_water(&self) -> u64 {
        self.max_bytes / 4 * 3
    }

    fn account(&self, space: &Space) {
        if space.rolled_up > 0 {
            self.stats
                .rolled_up
                .fetch_add(space.rolled_up, Ordering::Relaxed);
            tracing::warn!(
                merged_rows = space.rolled_up,
                bytes = space.bytes,
                max_bytes = self.max_bytes,
                "the outbox is near its bound; old minute bins were rolled up into coarser bins"
            );
        }
        if space.dropped > 0 {
            self.stats
                .dropped
                .fetch_add(space.dropped, Ordering::Relaxed);
            tracing::error!(
                dropped_rows = space.dropped,
                bytes = space.bytes,
                max_bytes = self.max_bytes,
                "the outbox is full even after roll-ups; the oldest undelivered messages were dropped"
            );
        }
    }

    /// The disk is full: give back the reserve file and the WAL's space, checkpoint more often
    /// from now on, lower the bound to below what is stored now and make room by the usual
    /// rules (roll up, then drop). Rolled-up rows leave free pages inside the file that new
    /// rows reuse, so the file stops growing for a good while; making room writes too, which
    /// is what the reserve is for. The lowered bound stays until restart.
    fn disk_full(&mut self) {
        if !self.stats.disk_full.swap(true, Ordering::Relaxed) {
            tracing::error!(
                bytes = self.bytes,
                max_bytes = self.max_bytes,
                "the disk holding the outbox is full; using the reserve, lowering the outbox bound \
                 and rolling up (or, if that is not enough, dropping) the oldest bins"
            );
        }
        if let Some(reserve) = self.reserve.take() {
            let _ = std::fs::remove_file(&reserve);
        }
        let _ = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        // A small WAL that is reused, rather than one that grows to 1 MiB first.
        let _ = self.conn.pragma_update(None, "wal_autocheckpoint", 16);
        let lowered = (self.bytes / 10 * 8).max(64 * 1024).min(self.max_bytes);
        tracing::warn!(
            bytes = self.bytes,
            from = self.max_bytes,
            to = lowered,
            "outbox bound lowered to fit the disk until restart"
        );
        self.max_bytes = lowered;
        match self.make_room_now() {
            Ok(()) => {
                let _ = self
                    .conn
                    .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
            }
            Err(error) => {
                tracing::error!(%error, "cannot make room in the outbox on a full disk; new data waits in memory and is retried");
            }
        }
        self.publish_stats();
    }

    fn fetch(&mut self, limit: usize) -> Result<Vec<StoredMessage>, OutboxError> {
        let mut out = Vec::new();
        {
            let mut alerts = self.conn.prepare_cached(
                "SELECT id, kind, topic, retain, msg_id, payload, priority, bin_start FROM outbox WHERE priority = 0 ORDER BY id",
            )?;
            for row in alerts.query_map([], read_row)? {
                let row = row?;
                if out.len() < limit
                    && !self.leased.contains(&row.id)
                    && !self.acked.contains(&row.id)
                {
                    out.push(row);
                }
            }
        }
        while out.len() < limit {
            let want = limit - out.len();
            let mut stmt = self.conn.prepare_cached(
                "SELECT id, kind, topic, retain, msg_id, payload, priority, bin_start FROM outbox WHERE priority = 1 AND id > ?1 ORDER BY id LIMIT ?2",
            )?;
            let batch: Vec<StoredMessage> = stmt
                .query_map(params![self.cursor, want as i64], read_row)?
                .collect::<Result<_, _>>()?;
            if batch.is_empty() {
                break;
            }
            for row in batch {
                self.cursor = self.cursor.max(row.id);
                if !self.leased.contains(&row.id) && !self.acked.contains(&row.id) {
                    out.push(row);
                }
            }
        }
        for row in &out {
            self.leased.insert(row.id);
        }
        Ok(out)
    }
}

/// What making room may touch: never a leased or acked row.
struct RoomRules<'a> {
    leased: &'a HashSet<i64>,
    acked: &'a HashSet<i64>,
    roll_up: Option<RollUp>,
    /// Stop once the stored bytes are at or below this.
    low: u64,
}

impl RoomRules<'_> {
    /// Rolls up, then drops, until the stored bytes are under the low-water mark.
    fn make_room(&self, tx: &Transaction<'_>, space: &mut Space) -> Result<(), OutboxError> {
        let low = self.low;
        if let Some(roll_up) = self.roll_up {
            for grain in Coarse::ALL {
                while space.bytes > low {
                    let metas = self.oldest_rows(tx)?;
                    let groups = bound::plan_roll_up(&metas, grain);
                    let mut progress = false;
                    for (bin, ids) in groups {
                        if space.bytes <= low {
                            break;
                        }
                        let messages = load(tx, &ids)?;
                        let Some(merged) = roll_up(&messages, grain, bin) else {
                            continue;
                        };
                        let (rows, bytes) = delete_rows(tx, ids.iter().copied())?;
                        // The merged row takes the place of the oldest it replaces, so the
                        // backlog stays in time order.
                        insert(tx, ids.iter().min().copied(), &merged)?;
                        space.rows = space.rows - rows + 1;
                        space.bytes = space.bytes - bytes + bound::row_bytes(&merged);
                        space.rolled_up += rows.saturating_sub(1);
                        progress = true;
                    }
                    if !progress {
                        break;
                    }
                }
            }
        }
        while space.bytes > low {
            let victims: Vec<i64> = self
                .oldest_rows(tx)?
                .into_iter()
                .filter(|m| !m.busy)
                .take(64)
                .map(|m| m.id)
                .collect();
            if victims.is_empty() {
                break;
            }
            let (rows, bytes) = delete_rows(tx, victims.into_iter())?;
            space.rows -= rows;
            space.bytes -= bytes;
            space.dropped += rows;
        }
        Ok(())
    }

    fn oldest_rows(&self, tx: &Transaction<'_>) -> Result<Vec<RowMeta>, OutboxError> {
        let mut stmt = tx.prepare_cached(
            "SELECT id, kind, bin_start FROM outbox WHERE priority = 1 ORDER BY id LIMIT ?1",
        )?;
        let rows = stmt.query_map([ROLL_UP_SCAN as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<i64>>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, kind, bin_start) = row?;
            out.push(RowMeta {
                id,
                kind,
                bin_start,
                busy: self.leased.contains(&id) || self.acked.contains(&id),
            });
        }
        Ok(out)
    }
}

/// Rows and bytes in the table, as a transaction changes them.
struct Space {
    rows: u64,
    bytes: u64,
    rolled_up: u64,
    dropped: u64,
}

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredMessage> {
    Ok(StoredMessage {
        id: r.get(0)?,
        message: OutMessage {
            kind: r.get(1)?,
            topic: r.get(2)?,
            retain: r.get(3)?,
            msg_id: r.get(4)?,
            payload: r.get(5)?,
            priority: Priority::from_code(r.get(6)?),
            bin_start: r.get(7)?,
        },
    })
}

fn insert(tx: &Transaction<'_>, id: Option<i64>, m: &OutMessage) -> Result<(), OutboxError> {
    tx.prepare_cached(
        "INSERT INTO outbox (id, kind, topic, retain, msg_id, payload, priority, bin_start)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        id,
        m.kind,
        m.topic,
        m.retain,
        m.msg_id,
        m.payload,
        m.priority.code(),
        m.bin_start
    ])?;
    Ok(())
}

/// Deletes rows by id; returns how many rows and bytes went.
fn delete_rows(
    tx: &Transaction<'_>,
    ids: impl Iterator<Item = i64>,
) -> Result<(u64, u64), OutboxError> {
    let mut stmt = tx.prepare_cached(
        "DELETE FROM outbox WHERE id = ?1
         RETURNING LENGTH(payload) + LENGTH(msg_id) + LENGTH(topic) + LENGTH(kind) + 48",
    )?;
    let (mut rows, mut bytes) = (0u64, 0u64);
    for id in ids {
        if let Some(b) = stmt.query_row([id], |r| r.get::<_, i64>(0)).optional()? {
            rows += 1;
            bytes += b as u64;
        }
    }
    Ok((rows, bytes))
}

fn load(tx: &Transaction<'_>, ids: &[i64]) -> Result<Vec<OutMessage>, OutboxError> {
    let mut stmt = tx.prepare_cached(
        "SELECT id, kind, topic, retain, msg_id, payload, priority, bin_start FROM outbox WHERE id = ?1",
    )?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(row) = stmt.query_row([id], read_row).optional()? {
            out.push(row.message);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
