//! Retained messages: the last retained PUBLISH per topic, replaced by a
//! newer one and deleted by one with an empty payload [MQTT-3.3.1-5]..[-11]
//! (v3.1.1), bounded by `max_retained_messages`.

use std::collections::HashMap;
use std::sync::Arc;

use super::message::Message;
use crate::protocol::filter_matches;

/// What `RetainStore::apply` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetainOutcome {
    /// Stored (new topic or replacement).
    Stored,
    /// An empty payload removed the topic's retained message (if any).
    Cleared,
    /// Not stored: the store is at `max_retained_messages`.
    Full,
}

/// The retained messages, by topic.
#[derive(Debug)]
pub struct RetainStore {
    messages: HashMap<String, Arc<Message>>,
    max: usize,
    max_bytes: usize,
    bytes: usize,
    /// Messages held that carry a Message Expiry Interval (an upper
    /// bound: replacements are not subtracted until the next sweep).
    expiring: usize,
}

impl RetainStore {
    /// An empty store holding at most `max` messages and `max_bytes` bytes
    /// of payload.
    pub fn new(max: usize, max_bytes: usize) -> Self {
        RetainStore {
            messages: HashMap::new(),
            max,
            max_bytes,
            bytes: 0,
            expiring: 0,
        }
    }

    /// Payload bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Applies a PUBLISH whose RETAIN flag is set.
    pub fn apply(&mut self, message: &Arc<Message>) -> RetainOutcome {
        let topic = message.topic.as_str();
        // [MQTT-3.3.1-10] [MQTT-3.3.1-11] (v3.1.1): an empty payload deletes,
        // and is never stored itself.
        if message.payload.is_empty() {
            if let Some(old) = self.messages.remove(topic) {
                self.bytes -= old.payload.len();
            }
            return RetainOutcome::Cleared;
        }
        let replaced = self.messages.get(topic).map_or(0, |old| old.payload.len());
        let bytes = self.bytes - replaced + message.payload.len();
        let is_new = replaced == 0 && !self.messages.contains_key(topic);
        if bytes > self.max_bytes || (is_new && self.messages.len() >= self.max) {
            return RetainOutcome::Full;
        }
        // The stored copy owns its payload: a slice of a connection's read
        // buffer would keep that whole buffer alive for as long as the
        // message stays retained.
        let stored = Arc::new(Message {
            payload: bytes::Bytes::copy_from_slice(&message.payload),
            ..Message::clone(message)
        });
        self.expiring += usize::from(stored.properties.message_expiry_interval.is_some());
        self.messages.insert(topic.to_owned(), stored);
        self.bytes = bytes;
        RetainOutcome::Stored
    }

    /// The retained messages whose topic `filter` matches, leaving out
    /// those whose Message Expiry Interval has passed [MQTT-3.3.2-5] (v5.0).
    pub fn matching(&self, filter: &str) -> Vec<Arc<Message>> {
        let now = std::time::Instant::now();
        if !filter.contains(['+', '#']) {
            return self
                .messages
                .get(filter)
                .filter(|message| !message.is_expired(now))
                .cloned()
                .into_iter()
                .collect();
        }
        self.messages
            .iter()
            .filter(|(topic, message)| filter_matches(filter, topic) && !message.is_expired(now))
            .map(|(_, message)| Arc::clone(message))
            .collect()
    }

    /// The retained message of `topic`.
    pub fn get(&self, topic: &str) -> Option<&Arc<Message>> {
        self.messages.get(topic)
    }

    /// Removes the messages whose Message Expiry Interval has passed;
    /// returns their topics.
    pub fn remove_expired(&mut self, now: std::time::Instant) -> Vec<String> {
        if self.expiring == 0 {
            return Vec::new();
        }
        let mut removed = Vec::new();
        let mut freed = 0;
        let mut expiring = 0;
        self.messages.retain(|topic, message| {
            if message.is_expired(now) {
                freed += message.payload.len();
                removed.push(topic.clone());
                return false;
            }
            expiring += usize::from(message.properties.message_expiry_interval.is_some());
            true
        });
        self.bytes -= freed;
        self.expiring = expiring;
        removed
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// True when nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}
