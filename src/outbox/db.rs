//! The outbox's database side: the SQLite connection the outbox thread owns, its settings
//! and schema migrations, the reserve file for a full disk, and every statement — commits
//! of batches, fetches, acknowledgements, roll-ups and the bound on disk.
//!
//! Only the outbox thread (`super::Outbox::open`) touches this; the async side talks to it
//! through `super::Command`s.
//!
//! **Storage faults.** Every [`disk::CHECK_EVERY`] (and after a failed write) the thread
//! looks at the disk: a full disk's lowered bound and reserve come back once there is room
//! again, and a database deleted under the running gateway (its data directory removed, say)
//! is made again — with everything the old connection can still read of the unlinked file
//! (`VACUUM INTO`), so undelivered messages, baselines and passage keys carry over — and the
//! core is told (`OutboxStats::recreated`) to commit what it holds in memory.

use super::*;
use disk::DirVerdict;

/// Space kept back for making room on a full disk.
pub(super) const RESERVE_BYTES: usize = 512 * 1024;

/// WAL pages between checkpoints in normal operation (a full disk lowers it).
const WAL_AUTOCHECKPOINT: i64 = 256;

/// Opens the database at `path`: settings, check, schema.
// This is the one place allowed to open SQLite (clippy.toml).
#[allow(clippy::disallowed_methods)]
fn open_connection(path: &Path) -> Result<Connection, OutboxError> {
    let conn = Connection::open(path).map_err(|error| OutboxError::Open {
        path: path.to_path_buf(),
        error,
    })?;
    configure(&conn, path)?;
    migrate(&conn).map_err(|error| OutboxError::Open {
        path: path.to_path_buf(),
        error,
    })?;
    Ok(conn)
}

/// Rows and bytes in the outbox table, as counted against the bound.
fn count_rows(conn: &Connection) -> rusqlite::Result<(u64, u64)> {
    let (rows, bytes): (i64, i64) = conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload) + LENGTH(msg_id) + LENGTH(topic) + LENGTH(kind) + 48), 0) FROM outbox",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok((rows as u64, bytes as u64))
}

/// Writes the reserve file (real blocks, not a sparse file); `None`, with a WARN, if the disk
/// has no room for it.
pub(super) fn make_reserve(db: &Path) -> Option<PathBuf> {
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
pub(super) fn move_aside(path: &Path) -> Result<PathBuf, OutboxError> {
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
pub(super) fn configure(conn: &Connection, path: &Path) -> Result<(), OutboxError> {
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
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT)
        .map_err(open_err)?;
    conn.pragma_update(None, "journal_size_limit", 4 * 1024 * 1024)
        .map_err(open_err)?;
    Ok(())
}

/// Creates the tables and runs the migrations, in one transaction.
pub(super) fn migrate(conn: &Connection) -> rusqlite::Result<()> {
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
             CREATE TABLE IF NOT EXISTS alerts_state (
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

pub(super) struct Db {
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
    /// The database file and its directory, and which files they were at open: a
    /// directory deleted under the gateway is found by comparing.
    path: PathBuf,
    dir: PathBuf,
    opened_as: Option<(disk::Identity, disk::Identity)>,
    /// When the disk and the directory are looked at next.
    next_check: Instant,
    /// Every counter's baseline as last committed: written again into a database that had
    /// to be made afresh.
    baselines: BTreeMap<String, Totals>,
    /// Tests only: the old file cannot be read when the database is made again.
    #[cfg(test)]
    pub(super) copy_fails: bool,
}

impl Db {
    pub(super) fn open(
        path: &Path,
        options: &OutboxOptions,
        stats: Arc<OutboxStats>,
    ) -> Result<Db, OutboxError> {
        let open_err = |error| OutboxError::Open {
            path: path.to_path_buf(),
            error,
        };
        let conn = open_connection(path)?;
        let (rows, bytes) = count_rows(&conn).map_err(open_err)?;
        let dir = path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        stats
            .buffer_left_hours
            .store(f64::NAN.to_bits(), Ordering::Relaxed);
        let mut db = Db {
            conn,
            stats,
            options: options.clone(),
            max_bytes: options.max_bytes,
            rows,
            bytes,
            inserted_bytes: 0,
            leased: HashSet::new(),
            acked: HashSet::new(),
            acked_since: None,
            cursor: 0,
            last_write: None,
            last_full_write: None,
            fill: FillRate::new(Duration::from_secs(3600)),
            reserve: make_reserve(path),
            opened_as: disk::identity(&dir).ok().zip(disk::identity(path).ok()),
            path: path.to_path_buf(),
            dir,
            next_check: Instant::now() + disk::CHECK_EVERY,
            baselines: BTreeMap::new(),
            #[cfg(test)]
            copy_fails: false,
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

    /// The one row of a `{table}(id = 1, state)` table (engine, bookings, alerts), unpacked.
    fn state_row(&self, table: &'static str) -> Result<Option<Vec<u8>>, OutboxError> {
        let row = self
            .conn
            .query_row(
                &format!("SELECT state FROM {table} WHERE id = 1"),
                [],
                |r| r.get::<_, Vec<u8>>(0),
            )
            .optional()?;
        Ok(row.map(pack::unpack))
    }

    pub(super) fn restore(&mut self) -> Result<Restored, OutboxError> {
        let engine_state = self.state_row("engine_state")?;
        let bookings_state = self.state_row("bookings_state")?;
        let alerts_state = self.state_row("alerts_state")?;
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
        self.baselines = baselines.clone();
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
            alerts_state,
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

    pub(super) fn serve(mut self, mut rx: mpsc::Receiver<Command>, notify: Arc<Notify>) {
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
            // Checked here, not only on a timeout: a busy uplink's fetches could keep the
            // channel from ever going quiet.
            if Instant::now() >= self.next_check {
                self.check_storage();
            }
            let flush = self.flush_deadline();
            let deadline = flush.map_or(self.next_check, |d| d.min(self.next_check));
            let left = deadline.saturating_duration_since(Instant::now());
            let command =
                match waiter.block_on(async { tokio::time::timeout(left, rx.recv()).await }) {
                    Ok(c) => c,
                    Err(_) => {
                        if flush.is_some_and(|d| d <= Instant::now()) {
                            self.flush_acked();
                        }
                        continue;
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
                #[cfg(test)]
                Command::CheckStorage { copy_fails, reply } => {
                    self.copy_fails = copy_fails;
                    self.check_storage();
                    let _ = reply.send(());
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
                self.wrote(true);
                self.rows -= rows;
                self.bytes -= bytes;
                self.acked.clear();
                self.acked_since = None;
            }
            Err(error) => {
                self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                self.wrote(false);
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
        if let Err(error) = &result
            && !error.is_disk_full()
            && self.check_dir()
        {
            // The database had been deleted and is made again: once more, into it.
            result = self.try_commit(batch);
        }
        self.last_write = Some(Instant::now());
        if !journal_only {
            self.last_full_write = self.last_write;
        }
        match &result {
            Ok(()) => {
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
                self.wrote(true);
            }
            Err(_) => {
                self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                self.wrote(false);
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
        let states = [
            ("engine_state", &batch.engine_state),
            ("bookings_state", &batch.bookings_state),
            ("alerts_state", &batch.alerts_state),
        ];
        for (table, state) in states {
            if let Some(state) = state {
                tx.execute(
                    &format!(
                        "INSERT INTO {table} (id, state) VALUES (1, ?1)
                         ON CONFLICT(id) DO UPDATE SET state = excluded.state"
                    ),
                    [pack::pack(state)],
                )?;
            }
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
        for (id, t) in &batch.baselines {
            self.baselines.insert(id.clone(), *t);
        }
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
    /// is what the reserve is for. The lowered bound stays until the periodic check finds
    /// room again ([`Db::check_space`]).
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
        // Every failed write on a disk still full comes here: say it when it changes.
        if lowered < self.max_bytes {
            tracing::warn!(
                bytes = self.bytes,
                from = self.max_bytes,
                to = lowered,
                "outbox bound lowered to fit the disk until there is room again"
            );
        }
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

    /// Notes how a write transaction went: the first failure and the first success after
    /// failures are logged, the flag is what the alerts and `/healthz` read.
    fn wrote(&self, ok: bool) {
        let was_failing = self.stats.write_failing.swap(!ok, Ordering::Relaxed);
        if ok && was_failing {
            tracing::warn!(
                max_bytes = self.max_bytes,
                "the outbox can write again; what waited in memory is stored now"
            );
        } else if !ok && !was_failing {
            tracing::error!(
                data_dir = %self.dir.display(),
                "the outbox cannot store: a write failed; figures are kept in memory and retried"
            );
        }
    }

    /// The periodic look at the data directory and the disk.
    fn check_storage(&mut self) {
        self.next_check = Instant::now() + disk::CHECK_EVERY;
        self.check_dir();
        self.check_space();
    }

    /// After a full disk (or a start without room for the reserve): once there is room
    /// again, the reserve is written and the configured bound and checkpoint pace return.
    fn check_space(&mut self) {
        let lowered = self.max_bytes < self.options.max_bytes;
        let full = self.stats.disk_full.load(Ordering::Relaxed);
        if self.reserve.is_some() && !lowered && !full {
            return;
        }
        let Ok(room) = disk::room(&self.dir) else {
            return;
        };
        if room.read_only || !disk::space_back(room.free_bytes, RESERVE_BYTES as u64) {
            return;
        }
        if self.reserve.is_none() {
            self.reserve = make_reserve(&self.path);
            if self.reserve.is_none() {
                return;
            }
        }
        let _ = self
            .conn
            .pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT);
        let from = self.max_bytes;
        self.max_bytes = self.options.max_bytes;
        self.stats.disk_full.store(false, Ordering::Relaxed);
        if full || lowered {
            tracing::warn!(
                free_bytes = room.free_bytes,
                from,
                to = self.max_bytes,
                "there is room on the disk holding the outbox again; the reserve file is back \
                 and the outbox bound is restored"
            );
        }
        self.update_buffer_left();
        self.publish_stats();
    }

    /// Compares the data directory and the database file with what was opened; a deleted
    /// or replaced one is made again ([`Db::recreate`]). True if it was made again now.
    fn check_dir(&mut self) -> bool {
        let Some((dir_at_open, db_at_open)) = self.opened_as else {
            return false;
        };
        let now = disk::identity_if_present(&self.dir)
            .and_then(|dir| Ok((dir, disk::identity_if_present(&self.path)?)));
        let (dir_now, db_now) = match now {
            Ok(ids) => ids,
            Err(error) => {
                self.dir_unusable(&format!("cannot look at it: {error}"));
                return false;
            }
        };
        let verdict = disk::judge_dir(
            dir_at_open,
            db_at_open,
            dir_now,
            db_now,
            disk::writable(&self.dir),
        );
        match verdict {
            DirVerdict::Same => {
                if self.stats.data_dir_unusable.swap(false, Ordering::Relaxed) {
                    tracing::warn!(data_dir = %self.dir.display(), "the data directory can be written again");
                }
                false
            }
            DirVerdict::NotWritable => {
                self.dir_unusable("this process cannot write to it");
                false
            }
            DirVerdict::Gone | DirVerdict::Replaced => self.recreate(verdict),
        }
    }

    /// Marks the data directory unusable (logged once per episode).
    fn dir_unusable(&self, why: &str) {
        if !self.stats.data_dir_unusable.swap(true, Ordering::Relaxed) {
            tracing::error!(
                data_dir = %self.dir.display(),
                reason = why,
                "the data directory cannot be used; nothing can be stored until it can"
            );
        }
    }

    /// Makes the database again where it was opened, after it (or its directory) was
    /// deleted or replaced under the running gateway. The old connection still reads the
    /// unlinked file, so `VACUUM INTO` copies all of it — undelivered messages with their row
    /// ids (leases and acks stay valid), baselines, passage keys, the journal, the last
    /// committed engine and bookings state. If that fails, the new database starts empty but
    /// for the baselines this thread remembers, and what is lost is logged. Either way the
    /// core is told (`recreated`) and commits everything it holds.
    fn recreate(&mut self, verdict: DirVerdict) -> bool {
        let undelivered = self.rows.saturating_sub(self.acked.len() as u64);
        // Said once: a directory that cannot be made again is retried at every check.
        if !self.stats.data_dir_unusable.load(Ordering::Relaxed) {
            tracing::error!(
                data_dir = %self.dir.display(),
                db = %self.path.display(),
                what = if verdict == DirVerdict::Gone { "deleted" } else { "replaced" },
                undelivered,
                "the outbox's database was deleted or replaced under the running gateway; making it again"
            );
        }
        if let Err(error) = std::fs::create_dir_all(&self.dir) {
            self.dir_unusable(&format!("cannot create it again: {error}"));
            return false;
        }
        if verdict == DirVerdict::Replaced && self.path.exists() {
            match move_aside(&self.path) {
                Ok(moved) => tracing::warn!(
                    moved_to = %moved.display(),
                    "a file that is not this gateway's database was found in its place; moved aside"
                ),
                Err(error) => {
                    self.dir_unusable(&error.to_string());
                    return false;
                }
            }
        }
        // A stray WAL beside a new file would be read as the new database's.
        for suffix in ["-wal", "-shm", "-journal"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.path.display()));
        }
        let copied = self
            .conn
            .execute("VACUUM INTO ?1", [self.path.to_string_lossy()])
            .map_err(OutboxError::from)
            .and_then(|_| open_connection(&self.path));
        #[cfg(test)]
        let copied = match copied {
            Ok(conn) if self.copy_fails => {
                drop(conn);
                Err(OutboxError::Stopped)
            }
            other => other,
        };
        // What a failed attempt left must not be taken for a database of someone else's at
        // the next check.
        let remove_attempt = |path: &Path| {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
        };
        let (conn, carried) = match copied {
            Ok(conn) => (conn, true),
            Err(error) => {
                remove_attempt(&self.path);
                match self.fresh_database() {
                    Ok(conn) => {
                        tracing::error!(
                            %error,
                            lost_undelivered_messages = undelivered,
                            baselines_written_again = self.baselines.len(),
                            "the deleted database could not be read to carry it over: its {undelivered} \
                             undelivered messages are lost, and so are the terminal event keys of \
                             the last two days (a terminal re-sending an old record may be counted \
                             again); counter baselines are written again from memory and today's \
                             figures are committed from memory"
                        );
                        (conn, false)
                    }
                    Err(error) => {
                        remove_attempt(&self.path);
                        self.dir_unusable(&format!("cannot create the database again: {error}"));
                        return false;
                    }
                }
            }
        };
        // The old connection closes here, and with it the unlinked files.
        self.conn = conn;
        if carried {
            match count_rows(&self.conn) {
                Ok((rows, bytes)) => (self.rows, self.bytes) = (rows, bytes),
                Err(error) => tracing::warn!(%error, "cannot count the carried-over rows"),
            }
        } else {
            // Nothing of the old rows exists any more: acks for them must find nothing.
            self.leased.clear();
            self.acked.clear();
            self.acked_since = None;
            self.cursor = 0;
            self.rows = 0;
            self.bytes = 0;
        }
        self.opened_as = disk::identity(&self.dir)
            .ok()
            .zip(disk::identity(&self.path).ok());
        self.reserve = make_reserve(&self.path);
        self.stats.data_dir_unusable.store(false, Ordering::Relaxed);
        self.stats.recreated.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            db = %self.path.display(),
            carried_over = carried,
            undelivered = self.rows.saturating_sub(self.acked.len() as u64),
            "the outbox's database is made again; today's figures are committed from memory next"
        );
        self.publish_stats();
        true
    }

    /// A new, empty database at the path, with the baselines this thread remembers, and row
    /// ids that continue after every id handed out before (a late ack for an old row must
    /// never delete a new one).
    fn fresh_database(&self) -> Result<Connection, OutboxError> {
        let conn = open_connection(&self.path)?;
        let tx = conn.unchecked_transaction()?;
        for (id, t) in &self.baselines {
            tx.execute(
                "INSERT INTO counter_baseline (counter_id, inward, outward) VALUES (?1, ?2, ?3)",
                params![id, t.inward as i64, t.outward as i64],
            )?;
        }
        let last_id = self
            .leased
            .iter()
            .chain(&self.acked)
            .copied()
            .max()
            .unwrap_or(0)
            .max(self.cursor);
        tx.execute(
            "INSERT INTO sqlite_sequence (name, seq) VALUES ('outbox', ?1)",
            [last_id],
        )?;
        tx.commit()?;
        Ok(conn)
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
pub(super) struct RoomRules<'a> {
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
pub(super) struct Space {
    rows: u64,
    bytes: u64,
    rolled_up: u64,
    dropped: u64,
}

pub(super) fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredMessage> {
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

pub(super) fn insert(
    tx: &Transaction<'_>,
    id: Option<i64>,
    m: &OutMessage,
) -> Result<(), OutboxError> {
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
pub(super) fn delete_rows(
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

pub(super) fn load(tx: &Transaction<'_>, ids: &[i64]) -> Result<Vec<OutMessage>, OutboxError> {
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
