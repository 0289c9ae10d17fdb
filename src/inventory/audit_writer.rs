//! Group commit for audit rows. Every operation must have its audit row durably on disk before
//! its result is returned (fail-closed), and one fsync per row caps the whole service at the
//! disk's sync rate. So the rows are written in a pipeline of two threads:
//!
//! - the **writer** owns a connection of its own and commits the rows of all operations waiting
//!   at that moment in one transaction (`synchronous=NORMAL`: the commit writes the WAL but does
//!   not wait for the disk), then hands the batch to the syncer and at once takes the next batch;
//! - the **syncer** makes the WAL durable with one `fdatasync` for every batch committed since
//!   its last one, and only then answers their waiters.
//!
//! So while one fsync runs, the next rows are already being committed, and the next fsync covers
//! all of them: the group is as wide as everything that arrived during the previous fsync
//! (issue 12), and no operation is answered before its row is on disk. A crash before the sync
//! may lose rows whose operations were never answered — the same as before. `synchronous=NORMAL`
//! in WAL mode still syncs the WAL before each checkpoint and the database after it, so the file
//! stays consistent. If a batch fails, its rows are retried one by one so only the rows that
//! really cannot be written fail their operations.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Mutex;

use super::sql::Connection;

use super::audit::insert;
use super::InventoryError;
use crate::model::AuditEntry;

/// Rows committed together at most.
const MAX_BATCH: usize = 256;

/// A row's answer: its sequence number, or why it was not written and whether the database
/// was unreachable.
type Reply = Sender<Result<i64, (String, bool)>>;

/// Committed (not yet durable) rows on their way to the syncer, with their waiters.
type Committed = Vec<(Reply, Result<i64, (String, bool)>)>;

pub(crate) struct AuditWriter {
    jobs: Mutex<Option<SyncSender<(AuditEntry, Reply)>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl AuditWriter {
    /// Start the writer on its own connection. `wal`: the SQLite write-ahead log the syncer
    /// makes durable (the connection must then be `synchronous=NORMAL`); `None` for a database
    /// whose commit is itself durable (PostgreSQL), where the syncer only answers.
    pub(crate) fn start(
        conn: Connection,
        wal: Option<PathBuf>,
    ) -> Result<AuditWriter, super::sql::Error> {
        let (tx, rx) = mpsc::sync_channel::<(AuditEntry, Reply)>(4 * MAX_BATCH);
        let (to_sync, synced) = mpsc::channel::<Committed>();
        let spawn_err =
            |e: std::io::Error| super::sql::Error::Other(format!("cannot start a thread: {e}"));
        let syncer = std::thread::Builder::new()
            .name("kms-audit-sync".into())
            .spawn(move || sync_loop(wal.as_deref(), synced))
            .map_err(spawn_err)?;
        let writer = std::thread::Builder::new()
            .name("kms-audit-writer".into())
            .spawn(move || run(conn, rx, to_sync))
            .map_err(spawn_err)?;
        Ok(AuditWriter {
            jobs: Mutex::new(Some(tx)),
            threads: Mutex::new(vec![writer, syncer]),
        })
    }

    /// The SQLite connection the writer needs for `path`, and its WAL.
    pub(crate) fn sqlite(path: &Path) -> Result<(Connection, PathBuf), super::sql::Error> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // The syncer makes each commit durable before its waiters hear of it (see above).
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Ok((Connection::from_sqlite(conn), wal_path(path)))
    }

    /// Append `entry` and wait until it is durably committed; returns its sequence number.
    pub(crate) fn append(&self, entry: &AuditEntry) -> Result<i64, InventoryError> {
        let (reply, answer) = mpsc::channel();
        let sent = {
            let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            match jobs.as_ref() {
                Some(tx) => tx.send((entry.clone(), reply)).is_ok(),
                None => false,
            }
        };
        if !sent {
            return Err(InventoryError::AuditWriter(
                "the audit writer has stopped".into(),
            ));
        }
        answer
            .recv()
            .map_err(|_| InventoryError::AuditWriter("the audit writer has stopped".into()))?
            .map_err(|(message, unreachable)| {
                if unreachable {
                    InventoryError::Unreachable(message)
                } else {
                    InventoryError::AuditWriter(message)
                }
            })
    }
}

impl Drop for AuditWriter {
    fn drop(&mut self) {
        // Closing the channel ends the writer once it has committed every queued row; its end
        // closes the syncer's channel, which ends the syncer once every row is durable.
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

/// The write-ahead log next to the inventory file.
fn wal_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push("-wal");
    PathBuf::from(p)
}

fn run(mut conn: Connection, rx: Receiver<(AuditEntry, Reply)>, to_sync: Sender<Committed>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let committed: Committed = match commit(&mut conn, batch.iter().map(|(e, _)| e)) {
            Ok(seqs) => batch
                .into_iter()
                .zip(seqs)
                .map(|((_, reply), seq)| (reply, Ok(seq)))
                .collect(),
            // One bad row must not fail its neighbours: retry each on its own.
            Err(_) => batch
                .into_iter()
                .map(|(entry, reply)| {
                    let one = commit(&mut conn, std::iter::once(&entry))
                        .map(|s| s.first().copied().unwrap_or_default())
                        .map_err(|e| (e.to_string(), e.is_unreachable()));
                    (reply, one)
                })
                .collect(),
        };
        if let Err(mpsc::SendError(committed)) = to_sync.send(committed) {
            for (reply, _) in committed {
                let _ = reply.send(Err(("the audit syncer has stopped".into(), false)));
            }
        }
    }
}

/// Make every batch committed so far durable with one sync of the WAL, then answer its waiters.
fn sync_loop(wal: Option<&Path>, synced: Receiver<Committed>) {
    while let Ok(first) = synced.recv() {
        let mut waiting = first;
        while let Ok(more) = synced.try_recv() {
            waiting.extend(more);
        }
        // Opened per sync, so a WAL that SQLite recreated is the one synced. fdatasync on any
        // descriptor of the file flushes its data (and its size) to the disk.
        let durable = match wal {
            Some(wal) => std::fs::File::open(wal)
                .and_then(|f| f.sync_data())
                .map_err(|e| {
                    (
                        format!("syncing the audit log {} failed: {e}", wal.display()),
                        false,
                    )
                }),
            None => Ok(()),
        };
        for (reply, row) in waiting {
            let answer = match (&durable, row) {
                (Ok(()), row) => row,
                (Err(e), Ok(_)) => Err(e.clone()),
                (Err(_), Err(e)) => Err(e),
            };
            let _ = reply.send(answer);
        }
    }
}

fn commit<'a>(
    conn: &mut Connection,
    entries: impl Iterator<Item = &'a AuditEntry>,
) -> super::sql::Result<Vec<i64>> {
    let tx = conn.transaction_with_behavior(super::sql::TransactionBehavior::Immediate)?;
    let mut seqs = Vec::new();
    for e in entries {
        seqs.push(insert(&tx, e)?);
    }
    tx.commit()?;
    Ok(seqs)
}
