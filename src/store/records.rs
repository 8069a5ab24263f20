//! What the store keeps, table by table, and how a record is written:
//! postcard (compact, serde-driven) inside redb tables. The format version
//! in `meta` changes whenever a record's layout does.

use std::num::NonZeroU32;

use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use crate::protocol::{LastWill, QoS, SubscriptionOptions};
use crate::router::message::{DeliveryExtras, Message};

/// The layout this build writes and reads.
pub const FORMAT_VERSION: u64 = 1;
/// The key of the format version in [`META`].
pub const FORMAT_KEY: &str = "format";

/// `format` -> the layout version.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// client id -> [`SessionRecord`].
pub const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
/// (client id, filter) -> [`SubscriptionRecord`].
pub const SUBSCRIPTIONS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("subscriptions");
/// (client id, message id) -> [`EntryRecord`]: a session's queued and
/// in-flight outbound messages.
pub const QUEUE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("queue");
/// message id -> (received at, message): the messages queue entries refer
/// to, each kept once however many sessions hold it.
pub const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
/// (client id, packet id): inbound QoS 2 messages awaiting PUBREL.
pub const PUBREL: TableDefinition<(&str, u16), ()> = TableDefinition::new("pubrel");
/// client id -> [`WillRecord`]: wills waiting for their delay.
pub const WILLS: TableDefinition<&str, &[u8]> = TableDefinition::new("wills");
/// topic -> (received at, message): retained messages.
pub const RETAINED: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");

/// A persistent session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Its Session Expiry Interval in seconds (`u32::MAX`: never).
    pub expiry_interval: u32,
    /// When its client disconnected, in milliseconds since the Unix epoch;
    /// none while connected.
    pub disconnected_at_ms: Option<u64>,
}

/// One subscription of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    /// The options granted.
    pub options: SubscriptionOptions,
    /// Its Subscription Identifier.
    pub identifier: Option<NonZeroU32>,
}

/// One outbound message of a session: queued, or in flight with its
/// packet id. A message only this entry refers to is kept in it (one
/// record to write and to delete, the common case); one that several
/// sessions hold is kept once in [`MESSAGES`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct EntryRecord {
    /// The message itself with when it was received, when it is kept
    /// here. First, so that one byte tells (see [`is_inline`]).
    pub message: Option<(u64, Message)>,
    /// The QoS it is delivered at.
    pub qos: QoS,
    /// The RETAIN flag it is delivered with.
    pub retain: bool,
    /// Subscription identifiers and shared group.
    pub extras: Option<DeliveryExtras>,
    /// The packet id it was sent with; none while queued.
    pub packet_id: Option<u16>,
    /// QoS 2: PUBREC received, PUBREL sent.
    pub released: bool,
}

/// An [`EntryRecord`] as written, borrowing what it holds.
#[derive(Debug, Serialize)]
pub struct EntryOut<'a> {
    /// See [`EntryRecord::message`].
    pub message: Option<(u64, &'a Message)>,
    /// See [`EntryRecord::qos`].
    pub qos: QoS,
    /// See [`EntryRecord::retain`].
    pub retain: bool,
    /// See [`EntryRecord::extras`].
    pub extras: Option<&'a DeliveryExtras>,
    /// See [`EntryRecord::packet_id`].
    pub packet_id: Option<u16>,
    /// See [`EntryRecord::released`].
    pub released: bool,
}

/// Whether an encoded [`EntryRecord`] holds its message.
pub fn is_inline(encoded: &[u8]) -> bool {
    encoded.first() == Some(&1)
}

/// A will waiting for its Will Delay Interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WillRecord {
    /// The will.
    pub will: LastWill,
    /// When it is due, in milliseconds since the Unix epoch.
    pub due_at_ms: u64,
}

/// Encodes a record.
pub fn encode<T: Serialize + ?Sized>(record: &T) -> Vec<u8> {
    // Every record type serialises infallibly (no maps with non-string
    // keys, no unsized sequences); an empty value would fail to decode
    // and stop the next start-up loudly rather than pass unnoticed.
    postcard::to_stdvec(record).unwrap_or_default()
}

/// Encodes a record into `buffer`, replacing what it held (one buffer
/// serves a whole batch).
pub fn encode_into<T: Serialize + ?Sized>(record: &T, buffer: &mut Vec<u8>) {
    buffer.clear();
    let reused = std::mem::take(buffer);
    *buffer = postcard::to_extend(record, reused).unwrap_or_default();
}

/// Decodes a record.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}
