//! The writer thread: the only code that writes the database. It takes
//! every operation queued since its last commit and applies them in one
//! transaction (group commit), synced as the configured durability says,
//! then tells waiting sessions how far the store has come.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::Database;

use super::apply::{apply, Plan};
use super::{Inner, Op};
use crate::config::Durability;

/// With `durability = "none"`, the longest time between syncs: redb only
/// reuses the space of what a synced commit freed.
const NONE_SYNC_INTERVAL: Duration = Duration::from_secs(60);
/// Wait after a failed commit before trying again.
const RETRY_DELAY: Duration = Duration::from_millis(500);

/// The writer's state.
pub struct Writer {
    database: Database,
    /// How many queue entries refer to each stored message: a message is
    /// written with its first entry and deleted with its last.
    references: HashMap<u64, u32>,
    inner: Arc<Inner>,
    flush_interval: Duration,
}

impl Writer {
    /// A writer for `database`, whose messages have `references`.
    pub fn new(
        database: Database,
        references: HashMap<u64, u32>,
        inner: Arc<Inner>,
        flush_interval: Duration,
    ) -> Writer {
        Writer {
            database,
            references,
            inner,
            flush_interval,
        }
    }

    fn sync_interval(&self) -> Option<Duration> {
        match self.inner.durability {
            Durability::Sync => None,
            Durability::Periodic => Some(self.flush_interval),
            Durability::None => Some(NONE_SYNC_INTERVAL),
        }
    }

    /// Runs until the store is closed.
    pub fn run(mut self) {
        let mut last_sync = Instant::now();
        let mut unsynced = false;
        let mut failing = false;
        let mut batch: Vec<Op> = Vec::new();
        loop {
            let (seq, closing) = self.wait_for_work(&mut batch, last_sync, unsynced);
            let now = Instant::now();
            let sync = closing
                || self
                    .sync_interval()
                    .is_none_or(|interval| now >= last_sync + interval);
            let result = self.commit(&batch, sync);
            self.inner
                .metrics
                .store_commit_latency
                .observe(now.elapsed());
            match result {
                Ok(()) => {
                    batch.clear();
                    if sync {
                        last_sync = now;
                    }
                    unsynced = !sync;
                    if failing {
                        failing = false;
                        tracing::info!("store writes succeed again");
                    }
                    self.inner.metrics.store_commits.increment();
                    self.inner
                        .durable
                        .store(seq, std::sync::atomic::Ordering::Release);
                    let waiters = std::mem::take(&mut self.inner.pending().waiters);
                    for inbox in waiters {
                        inbox.wake_from_store();
                    }
                }
                Err(error) => {
                    self.inner.metrics.store_failures.increment();
                    if closing {
                        tracing::error!(%error, lost = batch.len(), "store: the last writes could not be committed");
                        return;
                    }
                    if !failing {
                        failing = true;
                        tracing::error!(%error, "store: commit failed; acknowledgements that wait for it are held back, retrying");
                    }
                    std::thread::sleep(RETRY_DELAY);
                }
            }
            if closing && batch.is_empty() {
                return;
            }
        }
    }

    /// Waits until there is something to do, and moves what is queued to
    /// the end of `batch`. Returns the sequence number of the last
    /// operation taken, and whether the store is closing.
    fn wait_for_work(
        &self,
        batch: &mut Vec<Op>,
        last_sync: Instant,
        unsynced: bool,
    ) -> (u64, bool) {
        let mut pending = self.inner.pending();
        loop {
            if !pending.ops.is_empty() || pending.closing || !batch.is_empty() {
                break;
            }
            let due = self
                .sync_interval()
                .filter(|_| unsynced)
                .map(|interval| last_sync + interval);
            match due {
                None => {
                    pending = self
                        .inner
                        .work
                        .wait(pending)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                Some(due) => {
                    let now = Instant::now();
                    if now >= due {
                        break;
                    }
                    pending = self
                        .inner
                        .work
                        .wait_timeout(pending, due - now)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0;
                }
            }
        }
        batch.append(&mut pending.ops);
        (pending.seq, pending.closing)
    }

    fn commit(&mut self, batch: &[Op], sync: bool) -> Result<(), redb::Error> {
        let plan = Plan::of(batch);
        if !batch.is_empty() && plan.settled == batch.len() {
            // Everything settled in memory: there is nothing to write.
            return Ok(());
        }
        let mut transaction = self.database.begin_write()?;
        transaction.set_durability(if sync {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        })?;
        // Reference counts change only if the commit succeeds.
        let mut changed = HashMap::new();
        apply(&transaction, batch, &plan, &self.references, &mut changed)?;
        transaction.commit()?;
        for (message_id, count) in changed {
            if count == 0 {
                self.references.remove(&message_id);
            } else {
                self.references.insert(message_id, count);
            }
        }
        Ok(())
    }
}
