//! Retained messages for a new subscription, streamed rather than queued:
//! a cursor over the retained messages the subscription's filter matches,
//! taken a batch at a time as the client's window and socket make room
//! [MQTT-3.3.1-6] (v3.1.1) [MQTT-3.3.1-9] (v5.0). A `#` subscription to a
//! broker holding 100,000 retained messages gets every one of them
//! (Home Assistant's `homeassistant/#` discovery, Zigbee2MQTT's device
//! state), the queue bound keeps applying to live messages, and the broker
//! never copies the whole matching set at once.
//!
//! Live messages flow meanwhile, taking turns with the backlog. One on a
//! topic the cursor has not reached yet takes that topic's retained
//! message with it, just ahead of it, so a client never gets the older
//! retained message after a newer live one [MQTT-4.6.0-6] (v3.1.1).
//!
//! The backlog sends only what was retained before the subscription was
//! made: a message made later (its id is at least the backlog's `until`)
//! reaches the subscription live, and the cursor, which reads the
//! retained store as it goes, skips it rather than send it twice.

use std::collections::{HashSet, VecDeque};
use std::num::NonZeroU32;
use std::sync::Arc;

use crate::protocol::{filter_matches, QoS, TopicFilter};
use crate::router::message::{Delivery, DeliveryExtras, Message};
use crate::router::Router;

/// Retained messages taken from the router at a time.
const BATCH: usize = 64;

/// The retained messages one subscription has still to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backlog {
    filter: TopicFilter,
    /// The QoS granted: each message goes at the lower of it and its own.
    qos: QoS,
    identifier: Option<NonZeroU32>,
    /// Messages from this id on came after the subscription was in the
    /// router: they are delivered live, never by the backlog.
    until: u64,
    /// The last topic taken from the router: the cursor.
    after: Option<Box<str>>,
    /// Taken, not sent yet, in topic order.
    ready: VecDeque<Arc<Message>>,
    /// Topics past the cursor whose retained message went out ahead of a
    /// live one (or was that live one): skipped when the cursor gets there.
    sent_ahead: HashSet<Box<str>>,
    /// The router had no more past the cursor.
    exhausted: bool,
}

impl Backlog {
    /// The retained messages `filter` matches, from the start, as they
    /// were when the subscription was put in the router; call it after.
    pub fn new(filter: TopicFilter, qos: QoS, identifier: Option<NonZeroU32>) -> Backlog {
        Backlog {
            filter,
            qos,
            identifier,
            // Ordered by the router's lock: a message routed before the
            // subscription went in was made before, and has a smaller id.
            until: crate::router::message::next_id(),
            after: None,
            ready: VecDeque::new(),
            sent_ahead: HashSet::new(),
            exhausted: false,
        }
    }

    fn delivery(&self, message: Arc<Message>) -> Delivery {
        Delivery {
            qos: message.qos.min(self.qos),
            message,
            // [MQTT-3.3.1-8] (v3.1.1): RETAIN set for a new subscription.
            retain: true,
            extras: DeliveryExtras::boxed(self.identifier.into_iter().collect(), None),
        }
    }

    /// The next retained message to send; none once all were.
    fn next(&mut self, router: &Router) -> Option<Delivery> {
        loop {
            if let Some(message) = self.ready.pop_front() {
                if self.sent_ahead.remove(message.topic.as_str()) {
                    continue;
                }
                return Some(self.delivery(message));
            }
            if self.exhausted {
                return None;
            }
            let batch = router.retained_after(self.filter.as_str(), self.after.as_deref(), BATCH);
            self.exhausted = batch.len() < BATCH;
            if let Some(last) = batch.last() {
                self.after = Some(last.topic.as_str().into());
            }
            let until = self.until;
            self.ready
                .extend(batch.into_iter().filter(|message| message.id < until));
        }
    }

    /// Before the live message `live` goes out: the retained message of
    /// its topic, to send first, if this backlog has yet to send it and it
    /// is older than `live`. Either way the cursor will not send it later.
    fn ahead_of(&mut self, router: &Router, live: &Message) -> Option<Delivery> {
        let topic = live.topic.as_str();
        if !filter_matches(self.filter.as_str(), topic) {
            return None;
        }
        let retained = match self.ready.iter().position(|m| m.topic.as_str() == topic) {
            Some(position) => self.ready.remove(position)?,
            None => {
                let behind = self.after.as_deref().is_some_and(|after| topic <= after);
                if behind || self.exhausted || self.sent_ahead.contains(topic) {
                    return None;
                }
                let retained = router.retained_of(topic)?;
                self.sent_ahead.insert(topic.into());
                retained
            }
        };
        (retained.id < live.id && retained.id < self.until).then(|| self.delivery(retained))
    }
}

/// The backlogs of a session's new subscriptions, sent one after the
/// other in the order the subscriptions were made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backlogs {
    list: VecDeque<Backlog>,
    /// Whether the backlog goes next (it alternates with live messages).
    turn: bool,
}

impl Backlogs {
    /// Adds a subscription's backlog, in place of one for the same filter
    /// (a repeated subscription starts over).
    pub fn add(&mut self, backlog: Backlog) {
        self.remove(&backlog.filter);
        self.list.push_back(backlog);
    }

    /// Drops the backlog of `filter` (unsubscribed).
    pub fn remove(&mut self, filter: &TopicFilter) {
        self.list.retain(|backlog| backlog.filter != *filter);
    }

    /// True once every backlog was sent.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Whether a retained message goes before the next live one, when
    /// there is one of each: they take turns.
    pub fn take_turn(&mut self) -> bool {
        self.turn = !self.turn;
        self.turn
    }

    /// The next retained message to send; finished backlogs are dropped.
    pub fn next(&mut self, router: &Router) -> Option<Delivery> {
        while let Some(backlog) = self.list.front_mut() {
            if let Some(delivery) = backlog.next(router) {
                return Some(delivery);
            }
            self.list.pop_front();
        }
        None
    }

    /// The retained message to send just before the live `live`, if a
    /// backlog holds an older one for its topic (see [`Backlog`]).
    pub fn ahead_of(&mut self, router: &Router, live: &Message) -> Option<Delivery> {
        // Every backlog takes note (none sends it later); one copy goes.
        let mut first = None;
        for backlog in &mut self.list {
            if let Some(delivery) = backlog.ahead_of(router, live) {
                first.get_or_insert(delivery);
            }
        }
        first
    }
}
