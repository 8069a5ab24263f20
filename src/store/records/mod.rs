//! What the store keeps, table by table, and how a record is written:
//! postcard (compact, serde-driven) inside redb tables. The records are
//! the store's own types, never the broker's protocol or routing structs:
//! converting a message, a will or a subscription to its record is
//! explicit, so a field added elsewhere cannot change what is on disk.
//! The format version in `meta` changes whenever a record's layout does,
//! and a test holds each record's encoding to fixed bytes.

use std::num::{NonZeroU16, NonZeroU32};
use std::sync::Arc;

use bytes::Bytes;
use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use crate::protocol::{
    LastWill, PublishProperties, QoS, RetainHandling, SubscriptionOptions, TopicName,
    WillProperties,
};
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
    /// The QoS granted.
    pub qos: u8,
    /// No Local.
    pub no_local: bool,
    /// Retain As Published.
    pub retain_as_published: bool,
    /// Retain Handling (0, 1 or 2).
    pub retain_handling: u8,
    /// Its Subscription Identifier.
    pub identifier: Option<u32>,
}

impl SubscriptionRecord {
    /// The record of a subscription made with `options`.
    pub fn of(options: SubscriptionOptions, identifier: Option<NonZeroU32>) -> SubscriptionRecord {
        SubscriptionRecord {
            qos: options.qos as u8,
            no_local: options.no_local,
            retain_as_published: options.retain_as_published,
            retain_handling: options.retain_handling as u8,
            identifier: identifier.map(NonZeroU32::get),
        }
    }

    /// The subscription's options and identifier.
    pub fn options(&self) -> Result<(SubscriptionOptions, Option<NonZeroU32>), String> {
        let retain_handling = match self.retain_handling {
            0 => RetainHandling::SendOnSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            other => return Err(format!("retain handling {other}")),
        };
        let options = SubscriptionOptions {
            qos: qos(self.qos)?,
            no_local: self.no_local,
            retain_as_published: self.retain_as_published,
            retain_handling,
        };
        Ok((options, self.identifier.and_then(NonZeroU32::new)))
    }
}

fn qos(value: u8) -> Result<QoS, String> {
    QoS::from_u8(value).map_err(|_| format!("QoS {value}"))
}

fn topic(name: String) -> Result<TopicName, String> {
    TopicName::new(name).map_err(|error| error.to_string())
}

/// A message's MQTT 5 properties as stored; `S` and `B` are owned
/// (`String`, `Bytes`) when read, borrowed when written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PropertiesRecord<S, B> {
    /// Payload Format Indicator.
    pub payload_format_indicator: Option<bool>,
    /// Message Expiry Interval, as published.
    pub message_expiry_interval: Option<u32>,
    /// The Topic Alias it came with (kept as it was; never sent on).
    pub topic_alias: Option<u16>,
    /// Response Topic.
    pub response_topic: Option<S>,
    /// Correlation Data.
    pub correlation_data: Option<B>,
    /// User Properties, in order.
    pub user_properties: Vec<(S, S)>,
    /// Subscription Identifiers it came with.
    pub subscription_identifiers: Vec<u32>,
    /// Content Type.
    pub content_type: Option<S>,
}

/// A message as stored (its reception time beside it, in the table's
/// tuple); owned when read, borrowed when written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord<S, B> {
    /// The broker's message id.
    pub id: u64,
    /// Its topic.
    pub topic: S,
    /// Its payload.
    pub payload: B,
    /// The QoS it was published with.
    pub qos: u8,
    /// The RETAIN flag it was published with.
    pub retain: bool,
    /// Its properties.
    pub properties: PropertiesRecord<S, B>,
    /// The client that published it.
    pub publisher: Option<S>,
}

/// A message record as read.
pub type StoredMessage = MessageRecord<String, Bytes>;
/// A message record as written, borrowing from the message.
pub type MessageOut<'a> = MessageRecord<&'a str, &'a Bytes>;

impl<'a> MessageOut<'a> {
    /// The record of `message`.
    pub fn of(message: &'a Message) -> MessageOut<'a> {
        let properties = &message.properties;
        MessageRecord {
            id: message.id,
            topic: message.topic.as_str(),
            payload: &message.payload,
            qos: message.qos as u8,
            retain: message.retain,
            properties: PropertiesRecord {
                payload_format_indicator: properties.payload_format_indicator,
                message_expiry_interval: properties.message_expiry_interval,
                topic_alias: properties.topic_alias.map(NonZeroU16::get),
                response_topic: properties.response_topic.as_ref().map(TopicName::as_str),
                correlation_data: properties.correlation_data.as_ref(),
                user_properties: properties
                    .user_properties
                    .iter()
                    .map(|(key, value)| (key.as_str(), value.as_str()))
                    .collect(),
                subscription_identifiers: properties
                    .subscription_identifiers
                    .iter()
                    .map(|id| id.get())
                    .collect(),
                content_type: properties.content_type.as_deref(),
            },
            publisher: message.publisher.as_deref(),
        }
    }
}

impl StoredMessage {
    /// The message this record holds (received now, as far as the
    /// broker's clock goes; its expiry is brought up to date by the
    /// reader).
    pub fn into_message(self) -> Result<Message, String> {
        let properties = self.properties;
        let response_topic = properties.response_topic.map(topic).transpose()?;
        let mut message = Message::new(
            topic(self.topic)?,
            self.payload,
            qos(self.qos)?,
            self.retain,
            PublishProperties {
                payload_format_indicator: properties.payload_format_indicator,
                message_expiry_interval: properties.message_expiry_interval,
                topic_alias: properties.topic_alias.and_then(NonZeroU16::new),
                response_topic,
                correlation_data: properties.correlation_data,
                user_properties: properties.user_properties,
                subscription_identifiers: properties
                    .subscription_identifiers
                    .into_iter()
                    .filter_map(NonZeroU32::new)
                    .collect(),
                content_type: properties.content_type,
            },
            self.publisher.map(Arc::from),
        );
        message.id = self.id;
        Ok(message)
    }
}

/// The rarer parts of a delivery, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtrasRecord<S> {
    /// The identifiers of the subscriptions that matched.
    pub subscription_identifiers: Vec<u32>,
    /// The shared subscription it was given through.
    pub shared: Option<S>,
}

impl<'a> ExtrasRecord<&'a str> {
    /// The record of `extras`.
    pub fn of(extras: &'a DeliveryExtras) -> ExtrasRecord<&'a str> {
        ExtrasRecord {
            subscription_identifiers: extras
                .subscription_identifiers
                .iter()
                .map(|id| id.get())
                .collect(),
            shared: extras.shared.as_deref(),
        }
    }
}

impl ExtrasRecord<String> {
    /// The extras this record holds.
    pub fn into_extras(self) -> DeliveryExtras {
        DeliveryExtras {
            subscription_identifiers: self
                .subscription_identifiers
                .into_iter()
                .filter_map(NonZeroU32::new)
                .collect(),
            shared: self.shared.map(Arc::from),
        }
    }
}

/// One outbound message of a session: queued, or in flight with its
/// packet id. A message only this entry refers to is kept in it (one
/// record to write and to delete, the common case); one that several
/// sessions hold is kept once in [`MESSAGES`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryRecord<S, B> {
    /// The message itself with when it was received (milliseconds since
    /// the Unix epoch), when it is kept here. First, so that one byte
    /// tells (see [`is_inline`]).
    pub message: Option<(u64, MessageRecord<S, B>)>,
    /// The QoS it is delivered at.
    pub qos: u8,
    /// The RETAIN flag it is delivered with.
    pub retain: bool,
    /// Subscription identifiers and shared group.
    pub extras: Option<ExtrasRecord<S>>,
    /// The packet id it was sent with; none while queued.
    pub packet_id: Option<u16>,
    /// QoS 2: PUBREC received, PUBREL sent.
    pub released: bool,
}

/// An entry as read.
pub type StoredEntryRecord = EntryRecord<String, Bytes>;
/// An entry as written, borrowing what it holds.
pub type EntryOut<'a> = EntryRecord<&'a str, &'a Bytes>;

impl StoredEntryRecord {
    /// The QoS the entry is delivered at.
    pub fn qos(&self) -> Result<QoS, String> {
        qos(self.qos)
    }
}

/// Whether an encoded [`EntryRecord`] holds its message.
pub fn is_inline(encoded: &[u8]) -> bool {
    encoded.first() == Some(&1)
}

/// A will waiting for its Will Delay Interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WillRecord {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: Bytes,
    /// Its QoS.
    pub qos: u8,
    /// Its RETAIN flag.
    pub retain: bool,
    /// Will Delay Interval.
    pub will_delay_interval: Option<u32>,
    /// Payload Format Indicator.
    pub payload_format_indicator: Option<bool>,
    /// Message Expiry Interval.
    pub message_expiry_interval: Option<u32>,
    /// Content Type.
    pub content_type: Option<String>,
    /// Response Topic.
    pub response_topic: Option<String>,
    /// Correlation Data.
    pub correlation_data: Option<Bytes>,
    /// User Properties, in order.
    pub user_properties: Vec<(String, String)>,
    /// When it is due, in milliseconds since the Unix epoch.
    pub due_at_ms: u64,
}

impl WillRecord {
    /// The record of `will`, due at `due_at_ms`.
    pub fn of(will: &LastWill, due_at_ms: u64) -> WillRecord {
        let properties = &will.properties;
        WillRecord {
            topic: will.topic.as_str().to_owned(),
            payload: will.payload.clone(),
            qos: will.qos as u8,
            retain: will.retain,
            will_delay_interval: properties.will_delay_interval,
            payload_format_indicator: properties.payload_format_indicator,
            message_expiry_interval: properties.message_expiry_interval,
            content_type: properties.content_type.clone(),
            response_topic: properties
                .response_topic
                .as_ref()
                .map(|t| t.as_str().to_owned()),
            correlation_data: properties.correlation_data.clone(),
            user_properties: properties.user_properties.clone(),
            due_at_ms,
        }
    }

    /// The will this record holds.
    pub fn will(self) -> Result<LastWill, String> {
        Ok(LastWill {
            topic: topic(self.topic)?,
            payload: self.payload,
            qos: qos(self.qos)?,
            retain: self.retain,
            properties: WillProperties {
                will_delay_interval: self.will_delay_interval,
                payload_format_indicator: self.payload_format_indicator,
                message_expiry_interval: self.message_expiry_interval,
                content_type: self.content_type,
                response_topic: self.response_topic.map(topic).transpose()?,
                correlation_data: self.correlation_data,
                user_properties: self.user_properties,
            },
        })
    }
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

#[cfg(test)]
mod tests;
