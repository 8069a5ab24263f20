//! Retained messages: the last retained PUBLISH per topic, replaced by a
//! newer one and deleted by one with an empty payload [MQTT-3.3.1-5]..[-11]
//! (v3.1.1), bounded by `max_retained_messages`.

use std::collections::HashMap;
use std::sync::Arc;

use super::message::Message;
use super::topic_tree::filter_matches;

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
}

impl RetainStore {
    /// An empty store holding at most `max` messages.
    pub fn new(max: usize) -> Self {
        RetainStore {
            messages: HashMap::new(),
            max,
        }
    }

    /// Applies a PUBLISH whose RETAIN flag is set.
    pub fn apply(&mut self, message: &Arc<Message>) -> RetainOutcome {
        let topic = message.topic.as_str();
        // [MQTT-3.3.1-10] [MQTT-3.3.1-11] (v3.1.1): an empty payload deletes,
        // and is never stored itself.
        if message.payload.is_empty() {
            self.messages.remove(topic);
            return RetainOutcome::Cleared;
        }
        if let Some(slot) = self.messages.get_mut(topic) {
            *slot = Arc::clone(message);
            return RetainOutcome::Stored;
        }
        if self.messages.len() >= self.max {
            return RetainOutcome::Full;
        }
        self.messages.insert(topic.to_owned(), Arc::clone(message));
        RetainOutcome::Stored
    }

    /// The retained messages whose topic `filter` matches.
    pub fn matching(&self, filter: &str) -> Vec<Arc<Message>> {
        if !filter.contains(['+', '#']) {
            return self.messages.get(filter).cloned().into_iter().collect();
        }
        self.messages
            .iter()
            .filter(|(topic, _)| filter_matches(filter, topic))
            .map(|(_, message)| Arc::clone(message))
            .collect()
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
