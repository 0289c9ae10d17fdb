//! Group commit for audit rows. Every operation must have its audit row durably on disk before
//! its result is returned (fail-closed, `synchronous=FULL`), and one fsync per row caps the whole
//! service at the disk's sync rate. So one writer thread owns a connection of its own and commits
//! the rows of all operations waiting at that moment in one transaction — one fsync for the
//! batch — then answers each waiter. If a batch fails, its rows are retried one by one so only
//! the rows that really cannot be written fail their operations.

use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Mutex;

use rusqlite::Connection;

use super::audit::insert;
use super::records::AuditEntry;
use super::InventoryError;

/// Rows committed together at most.
const MAX_BATCH: usize = 256;

type Reply = Sender<Result<i64, String>>;

pub(crate) struct AuditWriter {
    jobs: Mutex<Option<SyncSender<(AuditEntry, Reply)>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl AuditWriter {
    /// Start the writer on its own connection to `path`.
    pub(crate) fn start(path: &Path) -> Result<AuditWriter, rusqlite::Error> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let (tx, rx) = mpsc::sync_channel::<(AuditEntry, Reply)>(4 * MAX_BATCH);
        let thread = std::thread::Builder::new()
            .name("kms-audit-writer".into())
            .spawn(move || run(conn, rx))
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(AuditWriter {
            jobs: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
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
            .map_err(InventoryError::AuditWriter)
    }
}

impl Drop for AuditWriter {
    fn drop(&mut self) {
        // Closing the channel ends the thread once it has answered every queued row.
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

fn run(mut conn: Connection, rx: Receiver<(AuditEntry, Reply)>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        match commit(&mut conn, batch.iter().map(|(e, _)| e)) {
            Ok(seqs) => {
                for ((_, reply), seq) in batch.into_iter().zip(seqs) {
                    let _ = reply.send(Ok(seq));
                }
            }
            Err(_) => {
                // One bad row must not fail its neighbours: retry each on its own.
                for (entry, reply) in batch {
                    let one = commit(&mut conn, std::iter::once(&entry))
                        .map(|s| s.first().copied().unwrap_or_default())
                        .map_err(|e| e.to_string());
                    let _ = reply.send(one);
                }
            }
        }
    }
}

fn commit<'a>(
    conn: &mut Connection,
    entries: impl Iterator<Item = &'a AuditEntry>,
) -> rusqlite::Result<Vec<i64>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut seqs = Vec::new();
    for e in entries {
        seqs.push(insert(&tx, e)?);
    }
    tx.commit()?;
    Ok(seqs)
}
