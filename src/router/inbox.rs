//! A session's inbox: the bounded queue between the router and the session
//! that drains it. It outlives connections: while a persistent session is
//! offline its inbox keeps filling (QoS 1 and 2 only, unless `queue_qos0`),
//! bounded by message count and payload bytes, and the next connection of
//! that client drains it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use super::message::Delivery;
use super::Journal;
use crate::protocol::QoS;

/// What became of an offered delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Queued for the session.
    Queued,
    /// Queued, and the queue is over half full while its client keeps
    /// reading: the session is short of CPU (see [`Inbox::is_congested`]).
    QueuedCongested,
    /// Dropped: the queue is at its message or byte bound.
    QueueFull,
    /// Dropped: QoS 0 for an offline session, which `queue_qos0` keeps out.
    OfflineQoS0,
    /// Dropped: the session is gone.
    Closed,
}

/// Why a session must stop, delivered through its inbox so that one
/// wake-up source serves deliveries, takeover and shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    /// Another connection takes the session over.
    TakenOver = 1,
    /// The broker is shutting down.
    ShuttingDown = 2,
    /// An administrator closed the connection; the session stays.
    Kicked = 3,
    /// An administrator deleted the session: the connection closes and
    /// the session ends with it.
    Deleted = 4,
}

/// The bit of the interrupt byte that asks the session for a
/// [report](Inbox::request_report), beside any [`Interrupt`].
const REPORT: u8 = 0x80;

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

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Delivery>,
    bytes: usize,
    closed: bool,
    /// A wake-up nobody has waited for yet: the next wait returns at once
    /// (a permit, as [`tokio::sync::Notify`] keeps one).
    woken: bool,
    /// Whom to wake: the session's task waiting in
    /// [`InboxReceiver::changed`], or, while its connection hibernates
    /// (waits without a task: [`crate::session::hibernate`]), the
    /// hibernation thread. One slot for both keeps every inbox 48 bytes
    /// smaller than a `Notify` beside it.
    waker: Option<Waker>,
}

/// The queue, shared by the router (which offers) and the session (which
/// takes). An empty inbox holds no allocation beyond its own fields.
#[derive(Debug)]
pub struct Inbox {
    client_id: Arc<str>,
    queue: Mutex<Queue>,
    /// The bounds ([`InboxLimits`], held field by field: its flag packs
    /// with the ones below, and the inbox fits a smaller allocation).
    max_messages: usize,
    max_bytes: usize,
    queue_qos0: bool,
    online: AtomicBool,
    /// Set while messages are being dropped, so the drop is logged once
    /// per episode rather than once per message.
    dropping: AtomicBool,
    /// An [`Interrupt`] for the session (0: none).
    interrupt: AtomicU8,
    /// Whether the session outlives the broker process: its QoS 1/2
    /// deliveries are journaled as they are queued.
    durable: AtomicBool,
    /// Set while the session waits for the store (see
    /// [`Inbox::await_store`]).
    awaiting_store: AtomicBool,
    /// Set by the session while its client is not reading what it is sent:
    /// then a full queue is the client's doing, and publishers are not held
    /// back for it.
    peer_blocked: AtomicBool,
}

// With its two reference counts, 128 bytes: an allocator size class.
const _: () = assert!(std::mem::size_of::<Inbox>() <= 112);

/// The receiving side, owned by the session. Dropping it closes the inbox.
#[derive(Debug)]
pub struct InboxReceiver {
    inbox: Arc<Inbox>,
}

impl Drop for InboxReceiver {
    fn drop(&mut self) {
        let mut queue = self.inbox.lock();
        queue.closed = true;
        queue.items = VecDeque::new();
        queue.bytes = 0;
        queue.waker = None;
    }
}

fn over_half(queue: &Queue, inbox: &Inbox) -> bool {
    queue.items.len() * 2 > inbox.max_messages || queue.bytes * 2 > inbox.max_bytes
}

/// A drained queue keeps at most this much capacity.
const KEEP_CAPACITY: usize = 64;

impl Inbox {
    /// A new, online inbox for `client_id`.
    pub fn new(client_id: Arc<str>, limits: InboxLimits) -> (Arc<Inbox>, InboxReceiver) {
        let inbox = Arc::new(Inbox {
            client_id,
            queue: Mutex::new(Queue::default()),
            max_messages: limits.max_messages,
            max_bytes: limits.max_bytes,
            queue_qos0: limits.queue_qos0,
            online: AtomicBool::new(true),
            dropping: AtomicBool::new(false),
            peer_blocked: AtomicBool::new(false),
            durable: AtomicBool::new(false),
            awaiting_store: AtomicBool::new(false),
            interrupt: AtomicU8::new(0),
        });
        let receiver = InboxReceiver {
            inbox: Arc::clone(&inbox),
        };
        (inbox, receiver)
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Deliveries waiting (for the admin API and the metrics).
    pub fn queued(&self) -> usize {
        self.lock().items.len()
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

    /// Marks the session as one that outlives the broker process.
    pub fn set_durable(&self, durable: bool) {
        self.durable.store(durable, Ordering::Release);
    }

    /// Whether the session outlives the broker process.
    pub fn is_durable(&self) -> bool {
        self.durable.load(Ordering::Acquire)
    }

    /// Marks the session as waiting for the store; true if it was not
    /// already (then the store is to be asked to wake it).
    pub fn await_store(&self) -> bool {
        !self.awaiting_store.swap(true, Ordering::AcqRel)
    }

    /// Wakes a session that waits for the store.
    pub fn wake_from_store(&self) {
        self.awaiting_store.store(false, Ordering::Release);
        self.wake();
    }

    /// Wakes the session: its own wait, and its hibernating connection if
    /// it has one.
    fn wake(&self) {
        let mut queue = self.lock();
        queue.woken = true;
        let waker = queue.waker.take();
        drop(queue);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Makes `waker` the one to wake while the session's connection
    /// hibernates, unless something is waiting for the session already (a
    /// delivery, an interrupt, a report, the store): then false, and the
    /// connection is not to hibernate.
    pub fn hibernate(&self, waker: Waker) -> bool {
        let mut queue = self.lock();
        // Under the lock: an interrupt set before it is seen here, one set
        // after it finds the waker (`wake` takes the lock).
        if !queue.items.is_empty()
            || queue.closed
            || self.interrupt.load(Ordering::Acquire) != 0
            || self.awaiting_store.load(Ordering::Acquire)
        {
            return false;
        }
        queue.waker = Some(waker);
        true
    }

    /// Forgets the waker of whoever last waited for the session: a
    /// hibernating connection's (it woke), or an ended task's (the session
    /// parks; a task's waker would keep the task's memory).
    pub fn forget_waker(&self) {
        self.lock().waker = None;
    }

    /// Tells the session to stop, and wakes it. The first reason given
    /// stands.
    pub fn interrupt(&self, reason: Interrupt) {
        let _ = self
            .interrupt
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |byte| {
                (byte & !REPORT == 0).then_some(byte | reason as u8)
            });
        self.wake();
    }

    /// The interrupt pending for the session, if any.
    pub fn interruption(&self) -> Option<Interrupt> {
        match self.interrupt.load(Ordering::Acquire) & !REPORT {
            1 => Some(Interrupt::TakenOver),
            2 => Some(Interrupt::ShuttingDown),
            3 => Some(Interrupt::Kicked),
            4 => Some(Interrupt::Deleted),
            _ => None,
        }
    }

    /// Clears a past interrupt, for the next connection of the session.
    pub fn clear_interrupt(&self) {
        self.interrupt.store(0, Ordering::Release);
    }

    /// Asks the session to report its state (the admin API's view of a
    /// connected client), and wakes it; nothing on the message path
    /// changes.
    pub fn request_report(&self) {
        self.interrupt.fetch_or(REPORT, Ordering::AcqRel);
        self.wake();
    }

    /// Whether a report was asked for since the last call (which clears
    /// the request).
    pub fn take_report_request(&self) -> bool {
        self.interrupt.load(Ordering::Relaxed) & REPORT != 0
            && self.interrupt.fetch_and(!REPORT, Ordering::AcqRel) & REPORT != 0
    }

    /// Records whether the session's client is keeping up with its socket.
    pub fn set_peer_blocked(&self, blocked: bool) {
        if self.peer_blocked.load(Ordering::Relaxed) != blocked {
            self.peer_blocked.store(blocked, Ordering::Relaxed);
        }
    }

    /// True when the queue is over half full while its client is online
    /// and reading: the session is behind for lack of CPU, not because of
    /// its client, and publishers should let it catch up.
    pub fn is_congested(&self) -> bool {
        if !self.is_online() || self.peer_blocked.load(Ordering::Relaxed) {
            return false;
        }
        let queue = self.lock();
        over_half(&queue, self)
    }

    /// Queues `delivery` unless a bound says no, and tells `journal` of a
    /// QoS 1/2 delivery queued for a durable session (under the queue's
    /// lock, so the store hears of it before the session can take it).
    /// Never waits.
    pub fn offer(&self, delivery: Delivery, journal: Option<&dyn Journal>) -> Offer {
        if delivery.qos == QoS::AtMostOnce && !self.queue_qos0 && !self.is_online() {
            return Offer::OfflineQoS0;
        }
        let size = delivery.message.payload.len();
        let mut queue = self.lock();
        if queue.closed {
            return Offer::Closed;
        }
        // A single message larger than the byte bound still passes an empty
        // queue, or it could never be delivered at all.
        let over_bytes = queue.bytes + size > self.max_bytes && !queue.items.is_empty();
        if queue.items.len() >= self.max_messages || over_bytes {
            drop(queue);
            return self.dropped();
        }
        let was_empty = queue.items.is_empty();
        if let Some(journal) = journal {
            if delivery.qos != QoS::AtMostOnce && self.is_durable() {
                journal.queued(&self.client_id, &delivery);
            }
        }
        queue.items.push_back(delivery);
        queue.bytes += size;
        let congested = over_half(&queue, self);
        // The receiver only ever waits on an empty queue, so only the push
        // that ends the emptiness needs to wake it.
        let waker = if was_empty {
            queue.woken = true;
            queue.waker.take()
        } else {
            None
        };
        drop(queue);
        if let Some(waker) = waker {
            waker.wake();
        }
        if self.dropping.load(Ordering::Relaxed) && self.dropping.swap(false, Ordering::Relaxed) {
            tracing::info!(client_id = %self.client_id, "queue has room again");
        }
        if congested && self.is_online() && !self.peer_blocked.load(Ordering::Relaxed) {
            Offer::QueuedCongested
        } else {
            Offer::Queued
        }
    }

    /// Whether a delivery offered now would be queued with room to spare:
    /// the queue is below its bounds and the client is reading.
    pub fn has_room(&self) -> bool {
        if self.peer_blocked.load(Ordering::Relaxed) {
            return false;
        }
        let queue = self.lock();
        !queue.closed && !over_half(&queue, self)
    }

    fn dropped(&self) -> Offer {
        if !self.dropping.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                client_id = %self.client_id,
                "queue full: dropping messages for this client until it has room"
            );
        }
        Offer::QueueFull
    }
}

impl InboxReceiver {
    /// Waits until the queue stops being empty or the session is
    /// interrupted. A wake-up that happens while nobody waits is kept, so
    /// checking the queue, then waiting here, misses nothing.
    pub async fn changed(&self) {
        std::future::poll_fn(|cx| self.poll_changed(cx)).await;
    }

    fn poll_changed(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut queue = self.inbox.lock();
        if std::mem::take(&mut queue.woken) {
            return Poll::Ready(());
        }
        match &mut queue.waker {
            Some(waker) => waker.clone_from(cx.waker()),
            None => queue.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The next delivery if one is queued.
    pub fn try_recv(&mut self) -> Option<Delivery> {
        let mut queue = self.inbox.lock();
        let delivery = queue.items.pop_front()?;
        queue.bytes -= delivery.message.payload.len();
        if queue.items.is_empty() && queue.items.capacity() > KEEP_CAPACITY {
            queue.items = VecDeque::new();
        }
        Some(delivery)
    }

    /// Moves up to `max` waiting deliveries to the back of `into`, under
    /// one lock.
    pub fn drain_into(&mut self, into: &mut VecDeque<Delivery>, max: usize) -> usize {
        let mut queue = self.inbox.lock();
        let count = queue.items.len().min(max);
        let mut bytes = 0;
        for delivery in queue.items.drain(..count) {
            bytes += delivery.message.payload.len();
            into.push_back(delivery);
        }
        queue.bytes -= bytes;
        if queue.items.is_empty() && queue.items.capacity() > KEEP_CAPACITY {
            queue.items = VecDeque::new();
        }
        count
    }

    /// Deliveries waiting.
    pub fn len(&self) -> usize {
        self.inbox.lock().items.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
