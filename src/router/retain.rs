//! Retained messages: the last retained PUBLISH per topic, replaced by a
//! newer one and deleted by one with an empty payload [MQTT-3.3.1-5]..[-11]
//! (v3.1.1), bounded by `max_retained_messages`. Kept in topic order, so
//! that a new subscription can take the ones it matches a batch at a time
//! (see [`RetainStore::matching_after`]) rather than all at once.

use std::borrow::Borrow;
use std::collections::BTreeSet;
use std::ops::Bound;
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

/// A retained message, ordered by (and found by) its topic: the set's key
/// is the message's own topic, not a second copy of it (a million retained
/// messages would keep a million copies).
#[derive(Debug)]
struct Retained(Arc<Message>);

impl Borrow<str> for Retained {
    fn borrow(&self) -> &str {
        self.0.topic.as_str()
    }
}

impl PartialEq for Retained {
    fn eq(&self, other: &Self) -> bool {
        self.0.topic == other.0.topic
    }
}

impl Eq for Retained {}

impl PartialOrd for Retained {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Retained {
    // As `str` orders, so that lookups and ranges by `&str` agree.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.topic.as_str().cmp(other.0.topic.as_str())
    }
}

/// The retained messages, by topic.
#[derive(Debug)]
pub struct RetainStore {
    messages: BTreeSet<Retained>,
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
            messages: BTreeSet::new(),
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
            if let Some(old) = self.messages.take(topic) {
                self.bytes -= old.0.payload.len();
            }
            return RetainOutcome::Cleared;
        }
        let replaced = self.get(topic).map_or(0, |old| old.payload.len());
        let bytes = self.bytes - replaced + message.payload.len();
        let is_new = replaced == 0 && !self.messages.contains(topic);
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
        self.messages.replace(Retained(stored));
        self.bytes = bytes;
        RetainOutcome::Stored
    }

    /// Up to `max` retained messages whose topic `filter` matches and
    /// comes after `after` in topic order (all of them from the start
    /// with `None`), in topic order, leaving out those whose Message
    /// Expiry Interval has passed [MQTT-3.3.2-5] (v5.0). Fewer than `max`
    /// means there are no more. Only topics under the filter's literal
    /// first levels are visited (`homeassistant/#` looks at
    /// `homeassistant...` alone).
    pub fn matching_after(
        &self,
        filter: &str,
        after: Option<&str>,
        max: usize,
    ) -> Vec<Arc<Message>> {
        let now = std::time::Instant::now();
        if !filter.contains(['+', '#']) {
            return self
                .get(filter)
                .filter(|_| after.is_none_or(|after| filter > after))
                .filter(|message| !message.is_expired(now) && max > 0)
                .cloned()
                .into_iter()
                .collect();
        }
        let prefix = literal_prefix(filter);
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        self.messages
            .range::<str, _>((start, Bound::Unbounded))
            .map(|retained| &retained.0)
            .take_while(|message| message.topic.as_str().starts_with(prefix))
            .filter(|message| {
                filter_matches(filter, message.topic.as_str()) && !message.is_expired(now)
            })
            .map(Arc::clone)
            .take(max)
            .collect()
    }

    /// The retained message of `topic`.
    pub fn get(&self, topic: &str) -> Option<&Arc<Message>> {
        self.messages.get(topic).map(|retained| &retained.0)
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
        self.messages.retain(|Retained(message)| {
            if message.is_expired(now) {
                freed += message.payload.len();
                removed.push(message.topic.as_str().to_owned());
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

/// The text every topic a wildcard `filter` matches starts with: its
/// levels before the first wildcard (`a/b/#` -> `a/b`, `+/x` -> ``).
fn literal_prefix(filter: &str) -> &str {
    let wildcard = filter.find(['+', '#']).unwrap_or(filter.len());
    // Up to the separator before the wildcard's level; `a/b/#` also
    // matches `a/b` itself, which starts with `a/b`.
    match filter[..wildcard].rfind('/') {
        Some(separator) => &filter[..separator],
        None => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{PublishProperties, QoS, TopicName};

    fn store_of(topics: &[&str]) -> RetainStore {
        let mut store = RetainStore::new(1000, 1 << 20);
        for topic in topics {
            let message = Message::new(
                TopicName::new(*topic).unwrap(),
                bytes::Bytes::from_static(b"x"),
                QoS::AtMostOnce,
                true,
                PublishProperties::default(),
                None,
            );
            assert_eq!(store.apply(&Arc::new(message)), RetainOutcome::Stored);
        }
        store
    }

    fn topics(messages: &[Arc<Message>]) -> Vec<&str> {
        messages.iter().map(|m| m.topic.as_str()).collect()
    }

    #[test]
    fn literal_prefixes() {
        assert_eq!(literal_prefix("a/b/#"), "a/b");
        assert_eq!(literal_prefix("a/+/c"), "a");
        assert_eq!(literal_prefix("+/x"), "");
        assert_eq!(literal_prefix("#"), "");
        assert_eq!(literal_prefix("$SYS/#"), "$SYS");
    }

    // Batches in topic order resume after the cursor and together give
    // exactly what the filter matches (section 4.7; `#` leaves out `$`
    // topics [MQTT-4.7.2-1]).
    #[test]
    fn batches_resume_after_the_cursor() {
        let store = store_of(&["a/b", "a/b/c", "a/bc", "a/b/d", "b", "$SYS/x", "a/b/e/f"]);
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let batch = store.matching_after("a/b/#", after.as_deref(), 2);
            seen.extend(topics(&batch).into_iter().map(str::to_owned));
            after = batch.last().map(|m| m.topic.as_str().to_owned());
            if batch.len() < 2 {
                break;
            }
        }
        assert_eq!(seen, ["a/b", "a/b/c", "a/b/d", "a/b/e/f"]);
        let all = store.matching_after("#", None, 100);
        assert_eq!(
            topics(&all),
            ["a/b", "a/b/c", "a/b/d", "a/b/e/f", "a/bc", "b"]
        );
        assert_eq!(topics(&store.matching_after("+/b", None, 100)), ["a/b"]);
        assert_eq!(topics(&store.matching_after("b", None, 100)), ["b"]);
        assert!(store.matching_after("b", Some("b"), 100).is_empty());
        assert_eq!(
            topics(&store.matching_after("$SYS/#", None, 100)),
            ["$SYS/x"]
        );
    }
}
