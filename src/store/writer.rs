//! The writer thread: the only code that writes the database. It takes
//! every operation queued since its last commit and applies them in one
//! transaction (group commit), synced as the configured durability says,
//! then tells waiting sessions how far the store has come.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, ReadableTable, WriteTransaction};

use super::records::{self, encode_into};
use super::{Inner, Op};
use crate::config::Durability;
use crate::router::message::Message;

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
            match self.commit(&batch, sync) {
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

/// When `message` was received, in milliseconds since the Unix epoch (its
/// expiry counts from there), given the time now.
fn received_ms(message: &Message, now_ms: u64) -> u64 {
    let age = u64::try_from(message.received_at.elapsed().as_millis()).unwrap_or(u64::MAX);
    now_ms.saturating_sub(age)
}

struct Counts<'a> {
    base: &'a HashMap<u64, u32>,
    changed: &'a mut HashMap<u64, u32>,
}

impl Counts<'_> {
    fn get(&self, message_id: u64) -> u32 {
        self.changed
            .get(&message_id)
            .or_else(|| self.base.get(&message_id))
            .copied()
            .unwrap_or(0)
    }

    fn set(&mut self, message_id: u64, count: u32) {
        self.changed.insert(message_id, count);
    }
}

/// What a batch needs before it is applied.
struct Plan {
    /// Operations not to apply: a delivery queued and completed within
    /// the batch (an online subscriber that acknowledged before the commit)
    /// never reaches the disk, nor do its updates in between. The
    /// publisher's acknowledgement still waits for the commit, but the
    /// message was delivered by then.
    skip: Vec<bool>,
    /// How many are skipped.
    settled: usize,
    /// Messages queued for more than one session in this batch: kept once,
    /// in the messages table, rather than in each entry.
    shared: HashSet<u64>,
}

impl Plan {
    fn of(batch: &[Op]) -> Plan {
        let mut skip = vec![false; batch.len()];
        let mut settled = 0;
        // Entries created in this batch: key -> the operations on it so far.
        let mut created: HashMap<(&str, u64), Vec<usize>> = HashMap::new();
        let mut first_holder: HashMap<u64, &str> = HashMap::new();
        let mut shared = HashSet::new();
        for (index, op) in batch.iter().enumerate() {
            match op {
                Op::Entry {
                    client_id,
                    delivery,
                    fresh,
                    ..
                } => {
                    let id = delivery.message.id;
                    let key = (&**client_id, id);
                    if *fresh {
                        created.entry(key).or_default().push(index);
                        if *first_holder.entry(id).or_insert(client_id) != &**client_id {
                            shared.insert(id);
                        }
                    } else if let Some(operations) = created.get_mut(&key) {
                        operations.push(index);
                    }
                }
                Op::RemoveEntry {
                    client_id,
                    message_id,
                } => {
                    if let Some(operations) = created.remove(&(&**client_id, *message_id)) {
                        for settled_index in operations {
                            skip[settled_index] = true;
                            settled += 1;
                        }
                        skip[index] = true;
                        settled += 1;
                    }
                }
                // Whatever the batch created for the session goes with it.
                Op::RemoveSession(client_id) => {
                    created.retain(|(client, _), _| *client != &**client_id)
                }
                _ => {}
            }
        }
        Plan {
            skip,
            settled,
            shared,
        }
    }
}

fn apply(
    transaction: &WriteTransaction,
    batch: &[Op],
    plan: &Plan,
    base: &HashMap<u64, u32>,
    changed: &mut HashMap<u64, u32>,
) -> Result<(), redb::Error> {
    let mut sessions = transaction.open_table(records::SESSIONS)?;
    let mut subscriptions = transaction.open_table(records::SUBSCRIPTIONS)?;
    let mut queue = transaction.open_table(records::QUEUE)?;
    let mut messages = transaction.open_table(records::MESSAGES)?;
    let mut pubrel = transaction.open_table(records::PUBREL)?;
    let mut wills = transaction.open_table(records::WILLS)?;
    let mut retained = transaction.open_table(records::RETAINED)?;
    let mut counts = Counts { base, changed };
    let now_ms = records::now_ms();
    let mut buffer = Vec::new();
    for (index, op) in batch.iter().enumerate() {
        if plan.skip[index] {
            continue;
        }
        match op {
            Op::Session { client_id, record } => {
                encode_into(record, &mut buffer);
                sessions.insert(&**client_id, buffer.as_slice())?;
            }
            Op::RemoveSession(client_id) => {
                let client = &**client_id;
                sessions.remove(client)?;
                wills.remove(client)?;
                let mut filters = Vec::new();
                for item in subscriptions.range((client, "")..)? {
                    let (key, _) = item?;
                    let (owner, filter) = key.value();
                    if owner != client {
                        break;
                    }
                    filters.push(filter.to_owned());
                }
                for filter in filters {
                    subscriptions.remove((client, filter.as_str()))?;
                }
                let ids: Vec<u16> = pubrel
                    .range((client, 0u16)..=(client, u16::MAX))?
                    .map(|item| item.map(|(key, _)| key.value().1))
                    .collect::<Result<_, _>>()?;
                for packet_id in ids {
                    pubrel.remove((client, packet_id))?;
                }
                let entries: Vec<(u64, bool)> = queue
                    .range((client, 0u64)..=(client, u64::MAX))?
                    .map(|item| {
                        item.map(|(key, value)| (key.value().1, records::is_inline(value.value())))
                    })
                    .collect::<Result<_, _>>()?;
                for (message_id, inline) in entries {
                    queue.remove((client, message_id))?;
                    if !inline {
                        release(&mut messages, &mut counts, message_id)?;
                    }
                }
            }
            Op::Subscribe {
                client_id,
                filter,
                record,
            } => {
                encode_into(record, &mut buffer);
                subscriptions.insert((&**client_id, filter.as_str()), buffer.as_slice())?;
            }
            Op::Unsubscribe { client_id, filter } => {
                subscriptions.remove((&**client_id, filter.as_str()))?;
            }
            Op::Entry {
                client_id,
                delivery,
                packet_id,
                released,
                fresh,
            } => {
                let message = &delivery.message;
                let key = (&**client_id, message.id);
                // An entry keeps how it was first written; a new one holds
                // its message unless another session does too.
                let old = if *fresh {
                    None
                } else {
                    queue
                        .get(key)?
                        .map(|value| records::is_inline(value.value()))
                };
                let inline = old.unwrap_or_else(|| {
                    counts.get(message.id) == 0 && !plan.shared.contains(&message.id)
                });
                let record = records::EntryOut {
                    message: inline.then(|| {
                        (
                            received_ms(message, now_ms),
                            records::MessageOut::of(message),
                        )
                    }),
                    qos: delivery.qos as u8,
                    retain: delivery.retain,
                    extras: delivery.extras.as_deref().map(records::ExtrasRecord::of),
                    packet_id: *packet_id,
                    released: *released,
                };
                encode_into(&record, &mut buffer);
                let existed = queue.insert(key, buffer.as_slice())?.is_some();
                if !existed && !inline {
                    let count = counts.get(message.id);
                    if count == 0 {
                        let record = (
                            received_ms(message, now_ms),
                            records::MessageOut::of(message),
                        );
                        encode_into(&record, &mut buffer);
                        messages.insert(message.id, buffer.as_slice())?;
                    }
                    counts.set(message.id, count + 1);
                }
            }
            Op::RemoveEntry {
                client_id,
                message_id,
            } => {
                let referenced = queue
                    .remove((&**client_id, *message_id))?
                    .map(|old| !records::is_inline(old.value()));
                if referenced == Some(true) {
                    release(&mut messages, &mut counts, *message_id)?;
                }
            }
            Op::Pubrel {
                client_id,
                packet_id,
                awaited,
            } => {
                if *awaited {
                    pubrel.insert((&**client_id, *packet_id), ())?;
                } else {
                    pubrel.remove((&**client_id, *packet_id))?;
                }
            }
            Op::Will { client_id, record } => match record {
                Some(record) => {
                    encode_into(record.as_ref(), &mut buffer);
                    wills.insert(&**client_id, buffer.as_slice())?;
                }
                None => {
                    wills.remove(&**client_id)?;
                }
            },
            Op::Retained { topic, message } => match message {
                Some(message) => {
                    let record = (
                        received_ms(message, now_ms),
                        records::MessageOut::of(message),
                    );
                    encode_into(&record, &mut buffer);
                    retained.insert(topic.as_str(), buffer.as_slice())?;
                }
                None => {
                    retained.remove(topic.as_str())?;
                }
            },
        }
    }
    Ok(())
}

/// One queue entry less refers to `message_id`; the message goes with
/// the last.
fn release(
    messages: &mut redb::Table<u64, &[u8]>,
    counts: &mut Counts<'_>,
    message_id: u64,
) -> Result<(), redb::Error> {
    let count = counts.get(message_id).saturating_sub(1);
    counts.set(message_id, count);
    if count == 0 {
        messages.remove(message_id)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{PublishProperties, QoS, TopicName};
    use crate::router::message::Delivery;

    fn delivery(topic: &str) -> Delivery {
        let message = Message::new(
            TopicName::new(topic).expect("topic"),
            bytes::Bytes::from_static(b"x"),
            QoS::AtLeastOnce,
            false,
            PublishProperties::default(),
            None,
        );
        Delivery::new(Arc::new(message), QoS::AtLeastOnce, false)
    }

    fn entry(client_id: &Arc<str>, delivery: &Delivery, fresh: bool) -> Op {
        Op::Entry {
            client_id: Arc::clone(client_id),
            delivery: delivery.clone(),
            packet_id: (!fresh).then_some(1),
            released: false,
            fresh,
        }
    }

    // A delivery queued and completed within one batch is skipped with the
    // updates in between; one queued in an earlier batch is not, nor is a
    // message queued for two sessions in one batch kept in their entries.
    #[test]
    fn what_settles_within_a_batch_is_skipped() {
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        let settled = delivery("t/1");
        let earlier = delivery("t/2");
        let fanned = delivery("t/3");
        let batch = vec![
            entry(&a, &settled, true),
            entry(&a, &settled, false),
            Op::RemoveEntry {
                client_id: Arc::clone(&a),
                message_id: settled.message.id,
            },
            entry(&a, &earlier, false),
            Op::RemoveEntry {
                client_id: Arc::clone(&a),
                message_id: earlier.message.id,
            },
            entry(&a, &fanned, true),
            entry(&b, &fanned, true),
        ];
        let plan = Plan::of(&batch);
        assert_eq!(
            plan.skip,
            vec![true, true, true, false, false, false, false]
        );
        assert_eq!(plan.settled, 3);
        assert!(plan.shared.contains(&fanned.message.id));
        assert!(!plan.shared.contains(&settled.message.id));
    }
}
