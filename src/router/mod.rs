//! The router: shared by every session, synchronous (nothing here awaits).
//! It holds the subscription trie and the retained messages, and fans a
//! PUBLISH out into the inboxes of the matching sessions, one member of
//! each matching shared group included. It knows sessions only by their
//! inboxes.

pub mod inbox;
pub mod message;
pub mod retain;
pub mod shared;
pub mod topic_tree;

use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};

use crate::config::SharedStrategy;
use crate::metrics::Metrics;
use crate::protocol::{QoS, SubscriptionOptions, TopicName};
use inbox::{Inbox, Offer};
use message::{Delivery, DeliveryExtras, Message};
use retain::{RetainOutcome, RetainStore};
use topic_tree::{Match, TopicTree};

/// Where the router reports what must outlive the process: the store,
/// when persistence is on. Called under the router's and the inbox's
/// locks, in the order the changes happen, so it must only take note and
/// never wait.
pub trait Journal: Send + Sync + std::fmt::Debug {
    /// A QoS 1/2 delivery was queued for the durable session `client_id`.
    fn queued(&self, client_id: &Arc<str>, delivery: &Delivery);
    /// `topic`'s retained message is now `message` (none: cleared).
    fn retained(&self, topic: &str, message: Option<&Arc<Message>>);
}

/// One subscription as the trie holds it.
#[derive(Debug, Clone)]
pub struct Subscriber {
    /// Where matching messages go.
    pub inbox: Arc<Inbox>,
    /// The options the client subscribed with (QoS granted, No Local,
    /// Retain As Published).
    pub options: SubscriptionOptions,
    /// The Subscription Identifier it was made with, if any.
    pub identifier: Option<NonZeroU32>,
    /// For a shared subscription, its full filter (`$share/{group}/...`).
    pub shared: Option<Arc<str>>,
}

impl topic_tree::Member for Subscriber {
    fn client_id(&self) -> &str {
        self.inbox.client_id()
    }
}

// With the trie keeping no client id beside it, 32 bytes a subscription:
// an allocator size class.
const _: () = assert!(std::mem::size_of::<Subscriber>() <= 32);

/// What [`Router::publish`] did with a message.
#[derive(Debug, Default)]
pub struct Routed {
    /// Sessions with a matching subscription (after No Local).
    pub matched: usize,
    /// Sessions it was queued for.
    pub queued: usize,
    /// A session whose queue is over half full while its client keeps up.
    pub congested: Option<Arc<Inbox>>,
    /// Whether the journal was told of it (a retained change, or a queue
    /// entry of a durable session): then its acknowledgement may have to
    /// wait for the store.
    pub journaled: bool,
}

/// One session a message goes to, before subscriptions of the same
/// session are merged.
struct Target {
    inbox: Arc<Inbox>,
    qos: QoS,
    retain_as_published: bool,
    identifier: Option<NonZeroU32>,
    shared: Option<Arc<str>>,
}

impl Target {
    fn new(subscriber: &Subscriber) -> Target {
        Target {
            inbox: Arc::clone(&subscriber.inbox),
            qos: subscriber.options.qos,
            retain_as_published: subscriber.options.retain_as_published,
            identifier: subscriber.identifier,
            shared: subscriber.shared.clone(),
        }
    }

    /// Targets with the same key are one delivery: the same session, not
    /// through a shared group (each group delivers its own copy, so the
    /// group's subscription is part of the key).
    fn key(&self) -> (usize, usize) {
        let group = self
            .shared
            .as_ref()
            .map_or(0, |filter| Arc::as_ptr(filter) as *const u8 as usize);
        (Arc::as_ptr(&self.inbox) as usize, group)
    }
}

/// The shared router.
#[derive(Debug)]
pub struct Router {
    tree: RwLock<TopicTree<Subscriber>>,
    retained: RwLock<RetainStore>,
    strategy: SharedStrategy,
    metrics: Arc<Metrics>,
    journal: Option<Arc<dyn Journal>>,
}

impl Router {
    /// An empty router keeping at most `max_retained` retained messages of
    /// at most `max_retained_bytes` payload bytes in all, choosing shared
    /// group members by `strategy`.
    pub fn new(
        max_retained: usize,
        max_retained_bytes: usize,
        strategy: SharedStrategy,
        metrics: Arc<Metrics>,
    ) -> Self {
        Router {
            tree: RwLock::new(TopicTree::new()),
            retained: RwLock::new(RetainStore::new(max_retained, max_retained_bytes)),
            strategy,
            metrics,
            journal: None,
        }
    }

    /// The router, reporting durable changes to `journal`.
    pub fn with_journal(mut self, journal: Arc<dyn Journal>) -> Self {
        self.journal = Some(journal);
        self
    }

    /// Puts a retained message loaded from the store back, without
    /// journaling it again; false if the bounds leave no room for it.
    pub fn restore_retained(&self, message: Arc<Message>) -> bool {
        write(&self.retained).apply(&message) == RetainOutcome::Stored
    }

    /// Routes a message: updates the retained store when RETAIN is set, then
    /// offers the message once to every session with a matching
    /// subscription, at the highest QoS any of its matching subscriptions
    /// granted, with every matching subscription identifier; and to one
    /// member of every matching shared group. Never waits. Returns how many
    /// sessions matched and were queued for, and a session that is falling
    /// behind for lack of CPU (see [`Inbox::is_congested`]), for the
    /// publisher to let it catch up.
    pub fn publish(&self, message: Arc<Message>) -> Routed {
        let mut routed = Routed::default();
        if message.retain {
            routed.journaled = self.retain(&message);
        }
        let publisher = message.publisher.as_deref();
        let mut targets: Vec<Target> = Vec::new();
        read(&self.tree).for_each_match(message.topic.as_str(), |found| match found {
            Match::One(subscriber) => {
                // [MQTT-3.8.3-3] (v5.0): No Local keeps a client's own
                // messages from it.
                if !(subscriber.options.no_local
                    && publisher == Some(&**subscriber.inbox.client_id()))
                {
                    targets.push(Target::new(subscriber));
                }
            }
            Match::Group(group) => {
                if let Some(subscriber) = shared::choose(group, self.strategy, None) {
                    targets.push(Target::new(subscriber));
                }
            }
        });
        targets.sort_unstable_by_key(Target::key);
        for same in targets.chunk_by(|a, b| a.key() == b.key()) {
            routed.matched += 1;
            let delivery = match same {
                // The common case: one subscription of this session.
                [one] => Delivery {
                    message: Arc::clone(&message),
                    qos: message.qos.min(one.qos),
                    retain: message.retain && one.retain_as_published,
                    extras: DeliveryExtras::boxed(
                        one.identifier.into_iter().collect(),
                        one.shared.clone(),
                    ),
                },
                // One copy per session, at the highest granted QoS
                // [MQTT-3.3.5-1] (v3.1.1), with every matching identifier
                // [MQTT-3.3.4-3] (v5.0).
                _ => Delivery {
                    message: Arc::clone(&message),
                    qos: message
                        .qos
                        .min(same.iter().map(|t| t.qos).max().unwrap_or(QoS::AtMostOnce)),
                    // [MQTT-3.3.1-12] [MQTT-3.3.1-13] (v5.0).
                    retain: message.retain && same.iter().any(|t| t.retain_as_published),
                    extras: DeliveryExtras::boxed(
                        same.iter().filter_map(|t| t.identifier).collect(),
                        same[0].shared.clone(),
                    ),
                },
            };
            self.offer(&same[0].inbox, delivery, &mut routed);
        }
        routed
    }

    /// Stores or clears the retained message of `message`'s topic; true
    /// if the journal was told.
    fn retain(&self, message: &Arc<Message>) -> bool {
        let mut retained = write(&self.retained);
        let outcome = retained.apply(message);
        // `$SYS` is made anew by the running broker, never stored.
        let journal = self
            .journal
            .as_ref()
            .filter(|_| !message.topic.as_str().starts_with("$SYS/"));
        let mut journaled = false;
        if let Some(journal) = journal {
            // Under the lock: the store sees the changes of one topic in
            // the order they were made.
            let topic = message.topic.as_str();
            match outcome {
                RetainOutcome::Stored => journal.retained(topic, retained.get(topic)),
                RetainOutcome::Cleared => journal.retained(topic, None),
                RetainOutcome::Full => {}
            }
            journaled = outcome != RetainOutcome::Full;
        }
        drop(retained);
        if outcome == RetainOutcome::Full {
            self.metrics.retained_dropped.increment();
            tracing::warn!(
                topic = %message.topic,
                "retained store full (max_retained_messages or max_retained_bytes): message not retained"
            );
        }
        journaled
    }

    fn offer(&self, inbox: &Arc<Inbox>, delivery: Delivery, routed: &mut Routed) {
        let journal = self.journal.as_deref();
        let durable = journal.is_some() && delivery.qos != QoS::AtMostOnce && inbox.is_durable();
        match inbox.offer(delivery, journal) {
            Offer::Queued => {
                routed.queued += 1;
                routed.journaled |= durable;
            }
            Offer::QueuedCongested => {
                routed.queued += 1;
                routed.journaled |= durable;
                if routed.congested.is_none() {
                    routed.congested = Some(Arc::clone(inbox));
                }
            }
            Offer::QueueFull => self.metrics.messages_dropped.increment(),
            Offer::OfflineQoS0 => {
                self.metrics.messages_dropped.increment();
                self.metrics.offline_qos0_dropped.increment();
            }
            Offer::Closed => {}
        }
    }

    /// Gives a shared subscription's delivery that `client_id` left without
    /// acknowledging to another member of its group; false if there is
    /// none (or the group is gone).
    pub fn redeliver_shared(&self, delivery: Delivery, client_id: &str) -> bool {
        let Some(full) = delivery.shared().cloned() else {
            return false;
        };
        let Some((group, filter)) = shared::parse(&full).ok().flatten() else {
            return false;
        };
        let tree = read(&self.tree);
        let Some(found) = tree.group(group, filter) else {
            return false;
        };
        let Some(subscriber) = shared::choose(found, self.strategy, Some(client_id)) else {
            return false;
        };
        let inbox = Arc::clone(&subscriber.inbox);
        // The new member gets it as its own subscription says.
        let message = delivery.message;
        let delivery = Delivery {
            qos: message.qos.min(subscriber.options.qos),
            retain: message.retain && subscriber.options.retain_as_published,
            extras: DeliveryExtras::boxed(
                subscriber.identifier.into_iter().collect(),
                subscriber.shared.clone(),
            ),
            message,
        };
        drop(tree);
        let mut routed = Routed::default();
        self.offer(&inbox, delivery, &mut routed);
        routed.queued > 0
    }

    /// Adds or replaces a subscription; true if the client already had one
    /// to this filter. A `$share/{group}/{filter}` filter joins the group.
    pub fn subscribe(&self, filter: &str, mut subscriber: Subscriber) -> bool {
        let (group, inner) = match shared::parse(filter) {
            Ok(Some((group, inner))) => {
                subscriber.shared = Some(Arc::from(filter));
                (Some(group), inner)
            }
            _ => (None, filter),
        };
        write(&self.tree).insert(group, inner, subscriber).is_some()
    }

    /// Removes a subscription (or a membership of a shared group); true if
    /// it existed.
    pub fn unsubscribe(&self, filter: &str, client_id: &str) -> bool {
        let (group, inner) = match shared::parse(filter) {
            Ok(Some((group, inner))) => (Some(group), inner),
            _ => (None, filter),
        };
        write(&self.tree).remove(group, inner, client_id)
    }

    /// [`Router::unsubscribe`], only if the subscription is `inbox`'s (a
    /// session that is gone must not take a newer one's with it).
    pub fn unsubscribe_inbox(&self, filter: &str, inbox: &Arc<Inbox>) -> bool {
        let (group, inner) = match shared::parse(filter) {
            Ok(Some((group, inner))) => (Some(group), inner),
            _ => (None, filter),
        };
        write(&self.tree).remove_if(group, inner, inbox.client_id(), |subscriber| {
            Arc::ptr_eq(&subscriber.inbox, inbox)
        })
    }

    /// Up to `max` retained messages matching `filter` whose topics come
    /// after `after`, in topic order, for a new subscription to take a
    /// batch at a time (see [`retain::RetainStore::matching_after`]).
    pub fn retained_after(
        &self,
        filter: &str,
        after: Option<&str>,
        max: usize,
    ) -> Vec<Arc<Message>> {
        read(&self.retained).matching_after(filter, after, max)
    }

    /// The retained message of `topic`, unless it has expired.
    pub fn retained_of(&self, topic: &str) -> Option<Arc<Message>> {
        let retained = read(&self.retained);
        let message = retained.get(topic)?;
        (!message.is_expired(std::time::Instant::now())).then(|| Arc::clone(message))
    }

    /// Drops retained messages whose expiry has passed.
    pub fn remove_expired_retained(&self, now: std::time::Instant) -> usize {
        let mut retained = write(&self.retained);
        let removed = retained.remove_expired(now);
        if let Some(journal) = &self.journal {
            for topic in &removed {
                journal.retained(topic, None);
            }
        }
        removed.len()
    }

    /// Retained messages held.
    pub fn retained_count(&self) -> usize {
        read(&self.retained).len()
    }

    /// Subscriptions held.
    pub fn subscription_count(&self) -> usize {
        read(&self.tree).len()
    }

    /// Shared groups held.
    pub fn shared_group_count(&self) -> usize {
        read(&self.tree).group_count()
    }

    /// Payload bytes of the retained messages held.
    pub fn retained_bytes(&self) -> usize {
        read(&self.retained).bytes()
    }

    /// The subscriptions from the `skip`-th on, at most `take` of them,
    /// in filter order (the admin API's pages: the walk holds the tree's
    /// read lock, which routing shares, so it stops at the page's end).
    pub fn subscriptions(&self, skip: usize, take: usize) -> Vec<SubscriptionEntry> {
        let mut entries = Vec::new();
        let mut seen = 0usize;
        let end = skip.saturating_add(take);
        read(&self.tree).for_each(|filter, found| {
            for entry in SubscriptionEntry::of(filter, found) {
                if seen >= skip && seen < end {
                    entries.push(entry);
                }
                seen += 1;
            }
            seen < end
        });
        entries
    }

    /// The subscriptions a message on `topic` would reach (for a shared
    /// group, every member: one of them gets it).
    pub fn matching(&self, topic: &str) -> Vec<SubscriptionEntry> {
        let mut entries = Vec::new();
        read(&self.tree).for_each_match(topic, |found| {
            entries.extend(SubscriptionEntry::of("", found))
        });
        entries
    }

    /// Removes the retained message of `topic` without delivering
    /// anything (an administrator's delete); false if there was none.
    pub fn remove_retained(&self, topic: &TopicName) -> bool {
        let mut retained = write(&self.retained);
        if retained.get(topic.as_str()).is_none() {
            return false;
        }
        let empty = Arc::new(Message::new(
            topic.clone(),
            bytes::Bytes::new(),
            crate::protocol::QoS::AtMostOnce,
            true,
            Default::default(),
            None,
        ));
        retained.apply(&empty);
        if let Some(journal) = &self.journal {
            journal.retained(topic.as_str(), None);
        }
        true
    }
}

/// One subscription, as the admin API lists it.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct SubscriptionEntry {
    /// The subscriber.
    pub client_id: Arc<str>,
    /// The filter (without a shared group's prefix); empty where the
    /// caller knows it.
    pub filter: String,
    /// The shared group, for a shared subscription.
    pub group: Option<String>,
    /// The maximum QoS granted.
    pub qos: u8,
}

impl SubscriptionEntry {
    fn of(filter: &str, found: topic_tree::Match<'_, Subscriber>) -> Vec<SubscriptionEntry> {
        let entry = |subscriber: &Subscriber, group: Option<&str>| SubscriptionEntry {
            client_id: Arc::clone(subscriber.inbox.client_id()),
            filter: filter.to_owned(),
            group: group.map(str::to_owned),
            qos: subscriber.options.qos as u8,
        };
        match found {
            topic_tree::Match::One(subscriber) => vec![entry(subscriber, None)],
            topic_tree::Match::Group(group) => group
                .members
                .iter()
                .map(|subscriber| entry(subscriber, Some(&group.name)))
                .collect(),
        }
    }
}

/// A poisoned lock means a panic while routing; the data is still
/// consistent for our purposes (every mutation is a single insert/remove),
/// so keep serving rather than take every connection down with it.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
