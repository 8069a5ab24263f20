//! Opening the store at start-up: the format check, then everything it
//! holds, read into plain values for the broker to rebuild its state from.
//! What has expired while the broker was down is left out and deleted.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, TableHandle};

use super::records::{
    self, decode, SessionRecord, StoredEntryRecord, StoredMessage, SubscriptionRecord, WillRecord,
};
use super::StoreError;
use crate::protocol::{LastWill, PacketId, SubscriptionOptions, TopicFilter};
use crate::router::message::{reserve_ids_through, Delivery, Message};

/// Everything the store held.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Retained messages that have not expired.
    pub retained: Vec<Arc<Message>>,
    /// Persistent sessions.
    pub sessions: Vec<StoredSession>,
}

/// A persistent session as stored.
#[derive(Debug)]
pub struct StoredSession {
    /// Its client id.
    pub client_id: Arc<str>,
    /// Its Session Expiry Interval in seconds (`u32::MAX`: never).
    pub expiry_interval: u32,
    /// How long ago its client disconnected (zero for one that was
    /// connected when the broker stopped: its expiry counts from now).
    pub disconnected_for: Duration,
    /// Its subscriptions.
    pub subscriptions: Vec<(TopicFilter, SubscriptionOptions, Option<NonZeroU32>)>,
    /// Its queued and in-flight messages, oldest first.
    pub entries: Vec<StoredEntry>,
    /// Inbound QoS 2 packet ids awaiting PUBREL.
    pub awaiting_pubrel: Vec<u16>,
    /// A will waiting for its delay, and the time left until it is due.
    pub will: Option<(LastWill, Duration)>,
}

/// One queued or in-flight outbound message.
#[derive(Debug)]
pub struct StoredEntry {
    /// The delivery.
    pub delivery: Delivery,
    /// The packet id it was sent with; none while queued.
    pub packet_id: Option<PacketId>,
    /// QoS 2: PUBREC received, PUBREL sent.
    pub released: bool,
}

fn corrupt(path: &Path, table: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::new(
        path,
        format!(
            "corrupt record in table `{table}`: {error}; restore a backup or move the file away"
        ),
    )
}

/// Opens the database at `path`, creating it if needed, with at most
/// `cache_bytes` of its pages kept in memory, and reads it. Returns it with
/// its contents and how many queue entries refer to each stored message.
pub fn open(
    path: &Path,
    cache_bytes: usize,
) -> Result<(Database, Loaded, HashMap<u64, u32>), StoreError> {
    let database = Database::builder()
        .set_cache_size(cache_bytes)
        .create(path)
        .map_err(|error| match error {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::new(
            path,
            "in use by another process (is another Petrel running with this data_dir?)",
        ),
        other => StoreError::new(
            path,
            format!("cannot open: {other} (corrupt, or not a Petrel store; restore a backup or move the file away)"),
        ),
    })?;
    check_format(path, &database)?;
    let (loaded, references, cleanup) = read(path, &database).map_err(|error| match error {
        ReadError::Store(error) => error,
        ReadError::Database(error) => StoreError::new(path, format!("cannot read: {error}")),
    })?;
    cleanup
        .apply(&database)
        .map_err(|error| StoreError::new(path, format!("cannot write: {error}")))?;
    Ok((database, loaded, references))
}

fn check_format(path: &Path, database: &Database) -> Result<(), StoreError> {
    let io = |error: redb::Error| StoreError::new(path, format!("cannot read: {error}"));
    let read = database.begin_read().map_err(|e| io(e.into()))?;
    let version = match read.open_table(records::META) {
        Ok(table) => table
            .get(records::FORMAT_KEY)
            .map_err(|e| io(e.into()))?
            .map(|value| value.value()),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(error) => return Err(io(error.into())),
    };
    match version {
        Some(records::FORMAT_VERSION) => Ok(()),
        Some(other) => Err(StoreError::new(
            path,
            format!(
                "written in store format {other}; this Petrel reads format {} only \
                 (a newer Petrel wrote it?)",
                records::FORMAT_VERSION
            ),
        )),
        None => {
            let tables = read.list_tables().map_err(|e| io(e.into()))?.count();
            if tables > 0 {
                return Err(StoreError::new(
                    path,
                    "has no store format version: not a Petrel store",
                ));
            }
            drop(read);
            create_tables(database)
                .map_err(|error| StoreError::new(path, format!("cannot initialise: {error}")))
        }
    }
}

fn create_tables(database: &Database) -> Result<(), redb::Error> {
    let transaction = database.begin_write()?;
    {
        let mut meta = transaction.open_table(records::META)?;
        meta.insert(records::FORMAT_KEY, records::FORMAT_VERSION)?;
        transaction.open_table(records::SESSIONS)?;
        transaction.open_table(records::SUBSCRIPTIONS)?;
        transaction.open_table(records::QUEUE)?;
        transaction.open_table(records::MESSAGES)?;
        transaction.open_table(records::PUBREL)?;
        transaction.open_table(records::WILLS)?;
        transaction.open_table(records::RETAINED)?;
    }
    transaction.commit()?;
    Ok(())
}

enum ReadError {
    Store(StoreError),
    Database(redb::Error),
}

impl<E: Into<redb::Error>> From<E> for ReadError {
    fn from(error: E) -> Self {
        ReadError::Database(error.into())
    }
}

/// What the read found to delete: expired or unreferenced records, and
/// sessions to mark disconnected as of now.
#[derive(Default)]
struct Cleanup {
    retained: Vec<String>,
    messages: Vec<u64>,
    /// Queue entries of sessions that no longer exist.
    entries: Vec<(String, u64)>,
    disconnected: Vec<(String, SessionRecord)>,
}

impl Cleanup {
    fn apply(self, database: &Database) -> Result<(), redb::Error> {
        if self.retained.is_empty()
            && self.messages.is_empty()
            && self.disconnected.is_empty()
            && self.entries.is_empty()
        {
            return Ok(());
        }
        let transaction = database.begin_write()?;
        {
            let mut retained = transaction.open_table(records::RETAINED)?;
            for topic in &self.retained {
                retained.remove(topic.as_str())?;
            }
            let mut messages = transaction.open_table(records::MESSAGES)?;
            for id in &self.messages {
                messages.remove(id)?;
            }
            let mut queue = transaction.open_table(records::QUEUE)?;
            for (client_id, message_id) in &self.entries {
                queue.remove((client_id.as_str(), *message_id))?;
            }
            let mut sessions = transaction.open_table(records::SESSIONS)?;
            for (client_id, record) in &self.disconnected {
                sessions.insert(client_id.as_str(), records::encode(record).as_slice())?;
            }
        }
        transaction.commit()?;
        Ok(())
    }
}

/// A stored message with its expiry brought up to date: the interval is
/// what is left of it now. `None` if it has run out.
fn decode_message(bytes: &[u8], now_ms: u64) -> Result<(Message, bool), String> {
    let (received_ms, record): (u64, StoredMessage) = decode(bytes).map_err(|e| e.to_string())?;
    Ok(bring_up_to_date(
        received_ms,
        record.into_message()?,
        now_ms,
    ))
}

/// A message received at `received_ms`, its expiry interval cut to what
/// is left of it at `now_ms`; true if nothing is left.
fn bring_up_to_date(received_ms: u64, mut message: Message, now_ms: u64) -> (Message, bool) {
    let mut expired = false;
    if let Some(interval) = message.properties.message_expiry_interval {
        let age = now_ms.saturating_sub(received_ms) / 1000;
        let left = u64::from(interval).saturating_sub(age);
        expired = left == 0;
        message.properties.message_expiry_interval = Some(u32::try_from(left).unwrap_or(u32::MAX));
    }
    (message, expired)
}

type Read = (Loaded, HashMap<u64, u32>, Cleanup);

fn read(path: &Path, database: &Database) -> Result<Read, ReadError> {
    let transaction = database.begin_read()?;
    let mut reader = Reader {
        path,
        transaction: &transaction,
        now_ms: records::now_ms(),
        cleanup: Cleanup::default(),
        loaded: Loaded::default(),
        largest_id: 0,
        messages: HashMap::new(),
        sessions: HashMap::new(),
        references: HashMap::new(),
    };
    reader.retained()?;
    reader.messages()?;
    reader.sessions()?;
    reader.subscriptions()?;
    reader.queue()?;
    // Ids stay unique across the restart: new messages get larger ones.
    reserve_ids_through(reader.largest_id);
    for id in reader.messages.keys() {
        if !reader.references.contains_key(id) {
            reader.cleanup.messages.push(*id);
        }
    }
    reader.pubrel()?;
    reader.wills()?;
    let Reader {
        mut loaded,
        sessions,
        references,
        cleanup,
        ..
    } = reader;
    loaded.sessions = sessions.into_values().collect();
    Ok((loaded, references, cleanup))
}

/// The read of the whole store, table by table.
struct Reader<'a> {
    path: &'a Path,
    transaction: &'a redb::ReadTransaction,
    now_ms: u64,
    cleanup: Cleanup,
    loaded: Loaded,
    /// The largest message id seen.
    largest_id: u64,
    /// The messages queue entries refer to, by id.
    messages: HashMap<u64, Arc<Message>>,
    sessions: HashMap<String, StoredSession>,
    /// How many entries refer to each message.
    references: HashMap<u64, u32>,
}

impl Reader<'_> {
    /// The error for a record of `table` that cannot be read.
    fn corrupt(&self, table: &impl TableHandle, error: impl std::fmt::Display) -> ReadError {
        ReadError::Store(corrupt(self.path, table.name(), error))
    }

    fn retained(&mut self) -> Result<(), ReadError> {
        let table = self.transaction.open_table(records::RETAINED)?;
        for item in table.iter()? {
            let (topic, value) = item?;
            let (message, expired) = decode_message(value.value(), self.now_ms)
                .map_err(|e| self.corrupt(&records::RETAINED, e))?;
            self.largest_id = self.largest_id.max(message.id);
            if expired {
                self.cleanup.retained.push(topic.value().to_owned());
            } else {
                self.loaded.retained.push(Arc::new(message));
            }
        }
        Ok(())
    }

    fn messages(&mut self) -> Result<(), ReadError> {
        let table = self.transaction.open_table(records::MESSAGES)?;
        for item in table.iter()? {
            let (id, value) = item?;
            let (message, _) = decode_message(value.value(), self.now_ms)
                .map_err(|e| self.corrupt(&records::MESSAGES, e))?;
            self.largest_id = self.largest_id.max(id.value());
            self.messages.insert(id.value(), Arc::new(message));
        }
        Ok(())
    }

    /// The sessions; one that was connected when the broker stopped is
    /// disconnected as of now (its expiry counts from here).
    fn sessions(&mut self) -> Result<(), ReadError> {
        let now_ms = self.now_ms;
        let table = self.transaction.open_table(records::SESSIONS)?;
        for item in table.iter()? {
            let (client_id, value) = item?;
            let client_id = client_id.value();
            let record: SessionRecord =
                decode(value.value()).map_err(|e| self.corrupt(&records::SESSIONS, e))?;
            let disconnected_for = match record.disconnected_at_ms {
                Some(at) => Duration::from_millis(now_ms.saturating_sub(at)),
                None => {
                    let now = SessionRecord {
                        disconnected_at_ms: Some(now_ms),
                        ..record.clone()
                    };
                    self.cleanup.disconnected.push((client_id.to_owned(), now));
                    Duration::ZERO
                }
            };
            let session = StoredSession {
                client_id: Arc::from(client_id),
                expiry_interval: record.expiry_interval,
                disconnected_for,
                subscriptions: Vec::new(),
                entries: Vec::new(),
                awaiting_pubrel: Vec::new(),
                will: None,
            };
            self.sessions.insert(client_id.to_owned(), session);
        }
        Ok(())
    }

    fn subscriptions(&mut self) -> Result<(), ReadError> {
        let table = self.transaction.open_table(records::SUBSCRIPTIONS)?;
        for item in table.iter()? {
            let (key, value) = item?;
            let (client_id, filter) = key.value();
            let corrupt = |e: String| self.corrupt(&records::SUBSCRIPTIONS, e);
            let record: SubscriptionRecord =
                decode(value.value()).map_err(|e| corrupt(e.to_string()))?;
            let (options, identifier) = record.options().map_err(corrupt)?;
            let filter = TopicFilter::new(filter).map_err(|e| corrupt(e.to_string()))?;
            if let Some(session) = self.sessions.get_mut(client_id) {
                session.subscriptions.push((filter, options, identifier));
            }
        }
        Ok(())
    }

    /// The queue entries, each with its message (its own, or a shared one
    /// from the messages table); entries of sessions that are gone are
    /// deleted.
    fn queue(&mut self) -> Result<(), ReadError> {
        let table = self.transaction.open_table(records::QUEUE)?;
        for item in table.iter()? {
            let (key, value) = item?;
            let (client_id, message_id) = key.value();
            let corrupt = |e: String| self.corrupt(&records::QUEUE, e);
            let record: StoredEntryRecord =
                decode(value.value()).map_err(|e| corrupt(e.to_string()))?;
            let qos = record.qos().map_err(corrupt)?;
            if !self.sessions.contains_key(client_id) {
                self.cleanup
                    .entries
                    .push((client_id.to_owned(), message_id));
                continue;
            }
            let message = match record.message {
                Some((received_ms, stored)) => {
                    let message = stored.into_message().map_err(corrupt)?;
                    self.largest_id = self.largest_id.max(message.id);
                    Arc::new(bring_up_to_date(received_ms, message, self.now_ms).0)
                }
                None => {
                    let Some(message) = self.messages.get(&message_id) else {
                        return Err(corrupt(format!(
                            "entry of {client_id:?} refers to message {message_id}, which is missing"
                        )));
                    };
                    *self.references.entry(message_id).or_default() += 1;
                    Arc::clone(message)
                }
            };
            let entry = StoredEntry {
                delivery: Delivery {
                    message,
                    qos,
                    retain: record.retain,
                    extras: record.extras.map(|extras| Box::new(extras.into_extras())),
                },
                packet_id: record.packet_id.and_then(PacketId::new),
                released: record.released,
            };
            if let Some(session) = self.sessions.get_mut(client_id) {
                session.entries.push(entry);
            }
        }
        Ok(())
    }

    fn pubrel(&mut self) -> Result<(), ReadError> {
        let table = self.transaction.open_table(records::PUBREL)?;
        for item in table.iter()? {
            let (key, _) = item?;
            let (client_id, packet_id) = key.value();
            if let Some(session) = self.sessions.get_mut(client_id) {
                session.awaiting_pubrel.push(packet_id);
            }
        }
        Ok(())
    }

    fn wills(&mut self) -> Result<(), ReadError> {
        let table = self.transaction.open_table(records::WILLS)?;
        for item in table.iter()? {
            let (client_id, value) = item?;
            let corrupt = |e: String| self.corrupt(&records::WILLS, e);
            let record: WillRecord = decode(value.value()).map_err(|e| corrupt(e.to_string()))?;
            let left = Duration::from_millis(record.due_at_ms.saturating_sub(self.now_ms));
            let will = record.will().map_err(corrupt)?;
            if let Some(session) = self.sessions.get_mut(client_id.value()) {
                session.will = Some((will, left));
            }
        }
        Ok(())
    }
}
