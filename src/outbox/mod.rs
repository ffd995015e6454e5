//! The outbox: SQLite in WAL mode, owned by one thread, where everything bound for the centre
//! is written first.
//!
//! rusqlite is blocking, so the database lives on its own OS thread and the async side talks
//! to it over a bounded channel ([`Outbox`] is the handle). Each [`Batch`] from the core loop
//! (new messages, the engine state, the counter baselines) is committed in **one transaction**:
//! either a crossing is in the state *and* its counter baseline has moved, or neither has, so a
//! crash can neither lose nor repeat a crossing. The core commits when it has messages for the
//! centre (about once a minute) and otherwise at most once per `commit_interval`, which bounds
//! fsyncs and bytes written (the SD card's wear).
//!
//! `synchronous = FULL` in WAL mode: every commit is durable once it returns, power cut or not.
//! With commits this rare the fsync costs nothing worth saving; `NORMAL` could lose the last
//! commits on power loss.
//!
//! A row leaves the outbox only when the uplink reports its PUBACK ([`Outbox::acked`]); acked
//! ids are deleted with the next commit (or after `ack_flush_interval` when nothing else is
//! committed).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::devices::counter::Totals;

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
}

/// What the database held at start-up.
#[derive(Debug, Default)]
pub struct Restored {
    pub engine_state: Option<Vec<u8>>,
    pub baselines: BTreeMap<String, Totals>,
    pub pending_messages: u64,
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

enum Command {
    Commit(Batch, oneshot::Sender<Result<(), (String, Batch)>>),
    Acked(Vec<i64>),
    Fetch {
        after_id: i64,
        limit: usize,
        reply: oneshot::Sender<Vec<StoredMessage>>,
    },
    Pending(oneshot::Sender<u64>),
    Close(oneshot::Sender<()>),
}

/// Handle to the outbox thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbox {
    commands: mpsc::Sender<Command>,
    /// Signalled after each commit that added messages.
    new_messages: Arc<Notify>,
}

impl Outbox {
    /// Opens (or creates) `data_dir/hallgate.db` and starts the owning thread.
    pub fn open(
        data_dir: &Path,
        ack_flush_interval: Duration,
    ) -> Result<(Outbox, Restored), OutboxError> {
        std::fs::create_dir_all(data_dir).map_err(|error| OutboxError::CreateDir {
            path: data_dir.to_path_buf(),
            error,
        })?;
        let path = data_dir.join("hallgate.db");
        let mut db = Db::open(&path)?;
        let restored = db.restore()?;
        let (tx, rx) = mpsc::channel(256);
        let notify = Arc::new(Notify::new());
        let thread_notify = notify.clone();
        std::thread::Builder::new()
            .name("outbox".into())
            .spawn(move || db.serve(rx, thread_notify, ack_flush_interval))
            .map_err(OutboxError::Thread)?;
        Ok((
            Outbox {
                commands: tx,
                new_messages: notify,
            },
            restored,
        ))
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

    /// The broker acknowledged these rows; they are deleted with the next commit.
    pub async fn acked(&self, ids: Vec<i64>) {
        let _ = self.commands.send(Command::Acked(ids)).await;
    }

    /// Up to `limit` undelivered messages with ids above `after_id`, oldest first.
    pub async fn fetch(&self, after_id: i64, limit: usize) -> Vec<StoredMessage> {
        let (reply, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::Fetch {
                after_id,
                limit,
                reply,
            })
            .await
            .is_err()
        {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Messages not yet acknowledged.
    pub async fn pending(&self) -> u64 {
        let (reply, rx) = oneshot::channel();
        if self.commands.send(Command::Pending(reply)).await.is_err() {
            return 0;
        }
        rx.await.unwrap_or(0)
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
}

struct Db {
    conn: Connection,
    /// Acked ids not yet deleted.
    acked: HashSet<i64>,
}

impl Db {
    // This is the one place allowed to open SQLite (clippy.toml).
    #[allow(clippy::disallowed_methods)]
    fn open(path: &Path) -> Result<Db, OutboxError> {
        let open_err = |error| OutboxError::Open {
            path: path.to_path_buf(),
            error,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(open_err)?;
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
             );",
        )
        .map_err(open_err)?;
        Ok(Db {
            conn,
            acked: HashSet::new(),
        })
    }

    fn restore(&mut self) -> Result<Restored, OutboxError> {
        let engine_state = self
            .conn
            .query_row("SELECT state FROM engine_state WHERE id = 1", [], |r| {
                r.get::<_, Vec<u8>>(0)
            })
            .optional()?;
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
        let pending_messages = self.pending()?;
        Ok(Restored {
            engine_state,
            baselines,
            pending_messages,
        })
    }

    fn pending(&self) -> Result<u64, OutboxError> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))?;
        Ok((n as u64).saturating_sub(self.acked.len() as u64))
    }

    fn serve(mut self, mut rx: mpsc::Receiver<Command>, notify: Arc<Notify>, flush: Duration) {
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
        let mut acked_since = None::<Instant>;
        loop {
            // Deletions wait for the next commit, or at most `flush`.
            let command = match acked_since {
                None => rx.blocking_recv(),
                Some(since) => {
                    let left = flush.saturating_sub(since.elapsed());
                    match waiter.block_on(async { tokio::time::timeout(left, rx.recv()).await }) {
                        Ok(c) => c,
                        Err(_) => {
                            if let Err(error) = self.delete_acked() {
                                tracing::error!(%error, "cannot delete delivered messages from the outbox; they will be sent again");
                            }
                            acked_since = None;
                            continue;
                        }
                    }
                }
            };
            let Some(command) = command else {
                let _ = self.delete_acked();
                return;
            };
            match command {
                Command::Commit(batch, reply) => {
                    let had_messages = !batch.messages.is_empty();
                    let result = match self.commit(&batch) {
                        Ok(()) => Ok(()),
                        Err(error) => Err((error.to_string(), batch)),
                    };
                    if result.is_ok() {
                        acked_since = None;
                        if had_messages {
                            notify.notify_one();
                        }
                    }
                    let _ = reply.send(result);
                }
                Command::Acked(ids) => {
                    self.acked.extend(ids);
                    acked_since.get_or_insert_with(Instant::now);
                }
                Command::Fetch {
                    after_id,
                    limit,
                    reply,
                } => {
                    let rows = self.fetch(after_id, limit).unwrap_or_else(|error| {
                        tracing::error!(%error, "cannot read the outbox");
                        Vec::new()
                    });
                    let _ = reply.send(rows);
                }
                Command::Pending(reply) => {
                    let _ = reply.send(self.pending().unwrap_or(0));
                }
                Command::Close(reply) => {
                    if let Err(error) = self.delete_acked() {
                        tracing::warn!(%error, "cannot delete delivered messages at shutdown; they will be sent again");
                    }
                    let _ = reply.send(());
                    return;
                }
            }
        }
    }

    fn commit(&mut self, batch: &Batch) -> Result<(), OutboxError> {
        let tx = self.conn.transaction()?;
        for id in &self.acked {
            tx.execute("DELETE FROM outbox WHERE id = ?1", [id])?;
        }
        for m in &batch.messages {
            tx.execute(
                "INSERT INTO outbox (kind, topic, retain, msg_id, payload) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![m.kind, m.topic, m.retain, m.msg_id, m.payload],
            )?;
        }
        if let Some(state) = &batch.engine_state {
            tx.execute(
                "INSERT INTO engine_state (id, state) VALUES (1, ?1)
                 ON CONFLICT(id) DO UPDATE SET state = excluded.state",
                [state],
            )?;
        }
        for (id, t) in &batch.baselines {
            tx.execute(
                "INSERT INTO counter_baseline (counter_id, inward, outward) VALUES (?1, ?2, ?3)
                 ON CONFLICT(counter_id) DO UPDATE SET inward = excluded.inward, outward = excluded.outward",
                params![id, t.inward as i64, t.outward as i64],
            )?;
        }
        tx.commit()?;
        self.acked.clear();
        Ok(())
    }

    fn delete_acked(&mut self) -> Result<(), OutboxError> {
        if self.acked.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        for id in &self.acked {
            tx.execute("DELETE FROM outbox WHERE id = ?1", [id])?;
        }
        tx.commit()?;
        self.acked.clear();
        Ok(())
    }

    fn fetch(&self, after_id: i64, limit: usize) -> Result<Vec<StoredMessage>, OutboxError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, kind, topic, retain, msg_id, payload FROM outbox WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after_id, limit as i64], |r| {
            Ok(StoredMessage {
                id: r.get(0)?,
                message: OutMessage {
                    kind: r.get(1)?,
                    topic: r.get(2)?,
                    retain: r.get(3)?,
                    msg_id: r.get(4)?,
                    payload: r.get(5)?,
                },
            })
        })?;
        let mut out = Vec::new();
        for row in rows {
            let row = row?;
            if !self.acked.contains(&row.id) {
                out.push(row);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: &str, id: &str) -> OutMessage {
        OutMessage {
            kind: kind.into(),
            topic: format!("t/{kind}"),
            retain: kind == "state",
            msg_id: id.into(),
            payload: id.as_bytes().to_vec(),
        }
    }

    #[tokio::test]
    async fn committed_rows_survive_reopen_until_acked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (outbox, restored) = Outbox::open(dir.path(), Duration::from_millis(50)).expect("open");
        assert_eq!(restored.pending_messages, 0);
        let mut batch = Batch {
            messages: vec![msg("agg_1m", "a"), msg("agg_1m", "b")],
            engine_state: Some(b"{}".to_vec()),
            ..Batch::default()
        };
        batch.baselines.insert(
            "c1".into(),
            Totals {
                inward: 5,
                outward: 3,
            },
        );
        outbox.commit(batch).await.map_err(|e| e.0).expect("commit");
        outbox
            .commit(Batch {
                messages: vec![msg("agg_1m", "c")],
                ..Batch::default()
            })
            .await
            .map_err(|e| e.0)
            .expect("commit");
        let rows = outbox.fetch(0, 10).await;
        let ids: Vec<&str> = rows.iter().map(|r| r.message.msg_id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        outbox.acked(vec![rows[0].id]).await;
        outbox.close().await;

        let (outbox, restored) =
            Outbox::open(dir.path(), Duration::from_millis(50)).expect("reopen");
        assert_eq!(restored.pending_messages, 2);
        assert_eq!(restored.engine_state.as_deref(), Some(&b"{}"[..]));
        assert_eq!(restored.baselines["c1"].inward, 5);
        let ids: Vec<String> = outbox
            .fetch(0, 10)
            .await
            .into_iter()
            .map(|r| r.message.msg_id)
            .collect();
        assert_eq!(ids, ["b", "c"]);
        outbox.close().await;
    }
}
