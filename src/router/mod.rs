//! The router: shared by every session, synchronous (nothing here awaits).
//! It holds the subscription trie and the retained messages, and fans a
//! PUBLISH out into the inboxes of the matching sessions. It knows sessions
//! only by their inboxes.

pub mod inbox;
pub mod message;
pub mod retain;
pub mod topic_tree;

use std::sync::{Arc, RwLock};

use crate::metrics::Metrics;
use crate::protocol::{QoS, SubscriptionOptions};
use inbox::{Inbox, Offer};
use message::{Delivery, Message};
use retain::{RetainOutcome, RetainStore};
use topic_tree::TopicTree;

/// One subscription as the trie holds it.
#[derive(Debug, Clone)]
pub struct Subscriber {
    /// Where matching messages go.
    pub inbox: Arc<Inbox>,
    /// The options the client subscribed with (QoS granted).
    pub options: SubscriptionOptions,
}

/// What [`Router::publish`] did with a message.
#[derive(Debug, Default)]
pub struct Routed {
    /// Sessions it was queued for.
    pub queued: usize,
    /// A session whose queue is over half full while its client keeps up.
    pub congested: Option<Arc<Inbox>>,
}

/// The shared router.
#[derive(Debug)]
pub struct Router {
    tree: RwLock<TopicTree<Subscriber>>,
    retained: RwLock<RetainStore>,
    metrics: Arc<Metrics>,
}

impl Router {
    /// An empty router keeping at most `max_retained` retained messages of
    /// at most `max_retained_bytes` payload bytes in all.
    pub fn new(max_retained: usize, max_retained_bytes: usize, metrics: Arc<Metrics>) -> Self {
        Router {
            tree: RwLock::new(TopicTree::new()),
            retained: RwLock::new(RetainStore::new(max_retained, max_retained_bytes)),
            metrics,
        }
    }

    /// Routes a message: updates the retained store when RETAIN is set, then
    /// offers the message once to every session with a matching
    /// subscription, at the highest QoS any of its matching subscriptions
    /// granted. Never waits. Returns how many sessions it was queued for,
    /// and a session that is falling behind for lack of CPU (see
    /// [`Inbox::is_congested`]), for the publisher to let it catch up.
    pub fn publish(&self, message: Arc<Message>) -> Routed {
        if message.retain {
            let outcome = write(&self.retained).apply(&message);
            if outcome == RetainOutcome::Full {
                self.metrics.retained_dropped.increment();
                tracing::warn!(
                    topic = %message.topic,
                    "retained store full (max_retained_messages or max_retained_bytes): message not retained"
                );
            }
        }
        let mut targets: Vec<(Arc<Inbox>, QoS)> = Vec::new();
        read(&self.tree).for_each_match(message.topic.as_str(), |_, subscriber| {
            targets.push((Arc::clone(&subscriber.inbox), subscriber.options.qos));
        });
        // One copy per session, at the highest granted QoS
        // [MQTT-3.3.5-1] (v3.1.1).
        targets.sort_unstable_by_key(|(inbox, qos)| (Arc::as_ptr(inbox) as usize, *qos));
        targets.dedup_by(|later, earlier| {
            // Sorted by QoS within one inbox: keep the last (highest).
            if Arc::ptr_eq(&later.0, &earlier.0) {
                earlier.1 = earlier.1.max(later.1);
                true
            } else {
                false
            }
        });
        let mut routed = Routed::default();
        for (inbox, granted) in targets {
            let delivery = Delivery {
                message: Arc::clone(&message),
                qos: message.qos.min(granted),
                retain: false,
            };
            match inbox.offer(delivery) {
                Offer::Queued => routed.queued += 1,
                Offer::QueuedCongested => {
                    routed.queued += 1;
                    if routed.congested.is_none() {
                        routed.congested = Some(inbox);
                    }
                }
                Offer::QueueFull | Offer::OfflineQoS0 => self.metrics.messages_dropped.increment(),
                Offer::Closed => {}
            }
        }
        routed
    }

    /// Adds or replaces a subscription; true if the client already had one
    /// to this filter.
    pub fn subscribe(
        &self,
        filter: &str,
        inbox: &Arc<Inbox>,
        options: SubscriptionOptions,
    ) -> bool {
        let subscriber = Subscriber {
            inbox: Arc::clone(inbox),
            options,
        };
        write(&self.tree)
            .insert(filter, Arc::clone(inbox.client_id()), subscriber)
            .is_some()
    }

    /// Removes a subscription; true if it existed.
    pub fn unsubscribe(&self, filter: &str, client_id: &str) -> bool {
        write(&self.tree).remove(filter, client_id)
    }

    /// Retained messages matching `filter`, for a new subscription.
    pub fn retained_matching(&self, filter: &str) -> Vec<Arc<Message>> {
        read(&self.retained).matching(filter)
    }

    /// Retained messages held.
    pub fn retained_count(&self) -> usize {
        read(&self.retained).len()
    }

    /// Subscriptions held.
    pub fn subscription_count(&self) -> usize {
        read(&self.tree).len()
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
