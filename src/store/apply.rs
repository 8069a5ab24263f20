//! One batch of operations applied in one write transaction: the plan
//! first (what settled within the batch is not written at all, what more
//! than one session holds is kept once), then each operation on its
//! tables, with the reference counts of shared messages.

use std::collections::{HashMap, HashSet};

use redb::{ReadableTable, Table, WriteTransaction};

use super::records::{self, encode_into, EntryOut, ExtrasRecord, MessageOut};
use super::Op;
use crate::router::message::{Delivery, Message};

/// When `message` was received, in milliseconds since the Unix epoch (its
/// expiry counts from there), given the time now.
fn received_ms(message: &Message, now_ms: u64) -> u64 {
    let age = u64::try_from(message.received_at.elapsed().as_millis()).unwrap_or(u64::MAX);
    now_ms.saturating_sub(age)
}

/// Reference counts of shared messages: those the store had, and what
/// this batch changed (kept apart: they count only if the commit does).
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
pub struct Plan {
    /// Operations not to apply: a delivery queued and completed within
    /// the batch (an online subscriber that acknowledged before the commit)
    /// never reaches the disk, nor do its updates in between. The
    /// publisher's acknowledgement still waits for the commit, but the
    /// message was delivered by then.
    pub skip: Vec<bool>,
    /// How many are skipped.
    pub settled: usize,
    /// Messages queued for more than one session in this batch: kept once,
    /// in the messages table, rather than in each entry.
    pub shared: HashSet<u64>,
}

impl Plan {
    /// The plan of `batch`.
    pub fn of(batch: &[Op]) -> Plan {
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

/// The tables of one transaction, open.
struct Tables<'t, 'c> {
    sessions: Table<'t, &'static str, &'static [u8]>,
    subscriptions: Table<'t, (&'static str, &'static str), &'static [u8]>,
    queue: Table<'t, (&'static str, u64), &'static [u8]>,
    messages: Table<'t, u64, &'static [u8]>,
    pubrel: Table<'t, (&'static str, u16), ()>,
    wills: Table<'t, &'static str, &'static [u8]>,
    retained: Table<'t, &'static str, &'static [u8]>,
    counts: Counts<'c>,
    now_ms: u64,
    /// One encoding buffer for the whole batch.
    buffer: Vec<u8>,
}

/// Applies `batch` as `plan` says, counting message references in
/// `changed` over `base`.
pub fn apply(
    transaction: &WriteTransaction,
    batch: &[Op],
    plan: &Plan,
    base: &HashMap<u64, u32>,
    changed: &mut HashMap<u64, u32>,
) -> Result<(), redb::Error> {
    let mut tables = Tables {
        sessions: transaction.open_table(records::SESSIONS)?,
        subscriptions: transaction.open_table(records::SUBSCRIPTIONS)?,
        queue: transaction.open_table(records::QUEUE)?,
        messages: transaction.open_table(records::MESSAGES)?,
        pubrel: transaction.open_table(records::PUBREL)?,
        wills: transaction.open_table(records::WILLS)?,
        retained: transaction.open_table(records::RETAINED)?,
        counts: Counts { base, changed },
        now_ms: records::now_ms(),
        buffer: Vec::new(),
    };
    for (index, op) in batch.iter().enumerate() {
        if !plan.skip[index] {
            tables.apply(op, plan)?;
        }
    }
    Ok(())
}

impl Tables<'_, '_> {
    fn apply(&mut self, op: &Op, plan: &Plan) -> Result<(), redb::Error> {
        match op {
            Op::Session { client_id, record } => {
                encode_into(record, &mut self.buffer);
                self.sessions.insert(&**client_id, self.buffer.as_slice())?;
            }
            Op::RemoveSession(client_id) => self.remove_session(client_id)?,
            Op::Subscribe {
                client_id,
                filter,
                record,
            } => {
                encode_into(record, &mut self.buffer);
                let key = (&**client_id, filter.as_str());
                self.subscriptions.insert(key, self.buffer.as_slice())?;
            }
            Op::Unsubscribe { client_id, filter } => {
                self.subscriptions.remove((&**client_id, filter.as_str()))?;
            }
            Op::Entry {
                client_id,
                delivery,
                packet_id,
                released,
                fresh,
            } => self.write_entry(client_id, delivery, (*packet_id, *released), *fresh, plan)?,
            Op::RemoveEntry {
                client_id,
                message_id,
            } => {
                let referenced = self
                    .queue
                    .remove((&**client_id, *message_id))?
                    .map(|old| !records::is_inline(old.value()));
                if referenced == Some(true) {
                    self.release(*message_id)?;
                }
            }
            Op::Pubrel {
                client_id,
                packet_id,
                awaited: true,
            } => {
                self.pubrel.insert((&**client_id, *packet_id), ())?;
            }
            Op::Pubrel {
                client_id,
                packet_id,
                awaited: false,
            } => {
                self.pubrel.remove((&**client_id, *packet_id))?;
            }
            Op::Will { client_id, record } => match record {
                Some(record) => {
                    encode_into(record.as_ref(), &mut self.buffer);
                    self.wills.insert(&**client_id, self.buffer.as_slice())?;
                }
                None => {
                    self.wills.remove(&**client_id)?;
                }
            },
            Op::Retained { topic, message } => match message {
                Some(message) => {
                    let record = (received_ms(message, self.now_ms), MessageOut::of(message));
                    encode_into(&record, &mut self.buffer);
                    self.retained
                        .insert(topic.as_str(), self.buffer.as_slice())?;
                }
                None => {
                    self.retained.remove(topic.as_str())?;
                }
            },
        }
        Ok(())
    }

    /// Everything a session had: its record, will, subscriptions, QoS 2
    /// ids and queue entries (and the shared messages only it still held).
    fn remove_session(&mut self, client_id: &str) -> Result<(), redb::Error> {
        self.sessions.remove(client_id)?;
        self.wills.remove(client_id)?;
        let mut filters = Vec::new();
        for item in self.subscriptions.range((client_id, "")..)? {
            let (key, _) = item?;
            let (owner, filter) = key.value();
            if owner != client_id {
                break;
            }
            filters.push(filter.to_owned());
        }
        for filter in filters {
            self.subscriptions.remove((client_id, filter.as_str()))?;
        }
        let ids: Vec<u16> = self
            .pubrel
            .range((client_id, 0u16)..=(client_id, u16::MAX))?
            .map(|item| item.map(|(key, _)| key.value().1))
            .collect::<Result<_, _>>()?;
        for packet_id in ids {
            self.pubrel.remove((client_id, packet_id))?;
        }
        let entries: Vec<(u64, bool)> = self
            .queue
            .range((client_id, 0u64)..=(client_id, u64::MAX))?
            .map(|item| item.map(|(key, value)| (key.value().1, records::is_inline(value.value()))))
            .collect::<Result<_, _>>()?;
        for (message_id, inline) in entries {
            self.queue.remove((client_id, message_id))?;
            if !inline {
                self.release(message_id)?;
            }
        }
        Ok(())
    }

    /// A queue entry, written or rewritten (`fresh`: it did not exist).
    /// An entry keeps how it was first written; a new one holds its
    /// message unless another session does too.
    fn write_entry(
        &mut self,
        client_id: &str,
        delivery: &Delivery,
        (packet_id, released): (Option<u16>, bool),
        fresh: bool,
        plan: &Plan,
    ) -> Result<(), redb::Error> {
        let message = &delivery.message;
        let key = (client_id, message.id);
        let old = if fresh {
            None
        } else {
            self.queue
                .get(key)?
                .map(|value| records::is_inline(value.value()))
        };
        let inline = old.unwrap_or_else(|| {
            self.counts.get(message.id) == 0 && !plan.shared.contains(&message.id)
        });
        let received = received_ms(message, self.now_ms);
        let record = EntryOut {
            message: inline.then(|| (received, MessageOut::of(message))),
            qos: delivery.qos as u8,
            retain: delivery.retain,
            extras: delivery.extras.as_deref().map(ExtrasRecord::of),
            packet_id,
            released,
        };
        encode_into(&record, &mut self.buffer);
        let existed = self.queue.insert(key, self.buffer.as_slice())?.is_some();
        if !existed && !inline {
            let count = self.counts.get(message.id);
            if count == 0 {
                encode_into(&(received, MessageOut::of(message)), &mut self.buffer);
                self.messages.insert(message.id, self.buffer.as_slice())?;
            }
            self.counts.set(message.id, count + 1);
        }
        Ok(())
    }

    /// One queue entry less refers to `message_id`; the message goes with
    /// the last.
    fn release(&mut self, message_id: u64) -> Result<(), redb::Error> {
        let count = self.counts.get(message_id).saturating_sub(1);
        self.counts.set(message_id, count);
        if count == 0 {
            self.messages.remove(message_id)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::protocol::{PublishProperties, QoS, TopicName};

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
