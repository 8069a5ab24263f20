//! A session's inbox: the bounded queue between the router and the session
//! that drains it. It outlives connections: while a persistent session is
//! offline its inbox keeps filling (QoS 1 and 2 only, unless `queue_qos0`),
//! bounded by message count and payload bytes, and the next connection of
//! that client drains it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::message::Delivery;
use crate::protocol::QoS;

/// What became of an offered delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Queued for the session.
    Queued,
    /// Dropped: the queue is at its message or byte bound.
    QueueFull,
    /// Dropped: QoS 0 for an offline session, which `queue_qos0` keeps out.
    OfflineQoS0,
    /// Dropped: the session is gone.
    Closed,
}

/// The sending side, held by the router's subscriptions.
#[derive(Debug)]
pub struct Inbox {
    client_id: Arc<str>,
    sender: mpsc::Sender<Delivery>,
    queued_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
    queue_qos0: bool,
    online: AtomicBool,
    /// Set while messages are being dropped, so the drop is logged once
    /// per episode rather than once per message.
    dropping: AtomicBool,
}

/// The receiving side, owned by the session.
#[derive(Debug)]
pub struct InboxReceiver {
    receiver: mpsc::Receiver<Delivery>,
    queued_bytes: Arc<AtomicUsize>,
}

/// Bounds of one inbox.
#[derive(Debug, Clone, Copy)]
pub struct InboxLimits {
    /// Most deliveries queued.
    pub max_messages: usize,
    /// Most payload bytes queued.
    pub max_bytes: usize,
    /// Whether QoS 0 is queued while the session is offline.
    pub queue_qos0: bool,
}

impl Inbox {
    /// A new, online inbox for `client_id`.
    pub fn new(client_id: Arc<str>, limits: InboxLimits) -> (Arc<Inbox>, InboxReceiver) {
        let (sender, receiver) = mpsc::channel(limits.max_messages.max(1));
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let inbox = Arc::new(Inbox {
            client_id,
            sender,
            queued_bytes: Arc::clone(&queued_bytes),
            max_bytes: limits.max_bytes,
            queue_qos0: limits.queue_qos0,
            online: AtomicBool::new(true),
            dropping: AtomicBool::new(false),
        });
        (
            inbox,
            InboxReceiver {
                receiver,
                queued_bytes,
            },
        )
    }

    /// The client the inbox belongs to.
    pub fn client_id(&self) -> &Arc<str> {
        &self.client_id
    }

    /// Marks the session connected or not.
    pub fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::Release);
    }

    /// Whether the session is connected.
    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Acquire)
    }

    /// Queues `delivery` unless a bound says no. Never waits.
    pub fn offer(&self, delivery: Delivery) -> Offer {
        if delivery.qos == QoS::AtMostOnce && !self.queue_qos0 && !self.is_online() {
            return Offer::OfflineQoS0;
        }
        let size = delivery.message.payload.len();
        let queued = self.queued_bytes.fetch_add(size, Ordering::AcqRel);
        if queued + size > self.max_bytes && queued > 0 {
            self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            return self.dropped(Offer::QueueFull);
        }
        match self.sender.try_send(delivery) {
            Ok(()) => {
                if self.dropping.swap(false, Ordering::Relaxed) {
                    tracing::info!(client_id = %self.client_id, "queue has room again");
                }
                Offer::Queued
            }
            Err(error) => {
                self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
                match error {
                    mpsc::error::TrySendError::Full(_) => self.dropped(Offer::QueueFull),
                    mpsc::error::TrySendError::Closed(_) => Offer::Closed,
                }
            }
        }
    }

    fn dropped(&self, offer: Offer) -> Offer {
        if !self.dropping.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                client_id = %self.client_id,
                "queue full: dropping messages for this client until it has room"
            );
        }
        offer
    }
}

impl InboxReceiver {
    /// The next delivery, waiting for one.
    pub async fn recv(&mut self) -> Option<Delivery> {
        let delivery = self.receiver.recv().await?;
        self.taken(&delivery);
        Some(delivery)
    }

    /// The next delivery if one is queued.
    pub fn try_recv(&mut self) -> Option<Delivery> {
        let delivery = self.receiver.try_recv().ok()?;
        self.taken(&delivery);
        Some(delivery)
    }

    /// Deliveries waiting.
    pub fn len(&self) -> usize {
        self.receiver.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.receiver.is_empty()
    }

    fn taken(&self, delivery: &Delivery) {
        self.queued_bytes
            .fetch_sub(delivery.message.payload.len(), Ordering::AcqRel);
    }
}
