//! The sessions of every client id, and the handover between connections:
//! at most one connection owns a client id's session at a time. A new
//! CONNECT for an id that is connected kicks the old connection and waits
//! for it to hand its state back [MQTT-3.1.4-2] (v3.1.1); concurrent
//! CONNECTs for one id are served one after the other, so exactly one ends
//! up connected.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use dashmap::DashMap;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::state::SessionState;
use crate::protocol::LastWill;
use crate::router::inbox::{Inbox, InboxReceiver, Interrupt};

/// A session whose client is not connected.
#[derive(Debug)]
pub struct Parked {
    /// Its state.
    pub state: SessionState,
    /// Its inbox, still subscribed in the router.
    pub inbox: Arc<Inbox>,
    /// The inbox's receiving end, holding what was queued meanwhile.
    pub receiver: InboxReceiver,
    /// When the session expires (never if none).
    pub expires_at: Option<Instant>,
    /// A will waiting for its Will Delay Interval.
    pub will: Option<Box<LastWill>>,
    /// When that will is due.
    pub will_at: Option<Instant>,
}

/// What came due in a parked session (see [`SessionManager::take_due`]).
#[derive(Debug)]
pub struct Due {
    /// The session's client id.
    pub client_id: Arc<str>,
    /// Its will, to publish now.
    pub will: Option<Box<LastWill>>,
    /// The session itself, if it has expired: it is already gone from the
    /// table; its subscriptions are for the caller to remove.
    pub expired: Option<Parked>,
}

#[derive(Debug)]
struct Active {
    generation: Generation,
    /// The connection's inbox, once its handshake chose one: a takeover or
    /// shutdown interrupts the connection through it.
    inbox: Option<Arc<Inbox>>,
    /// Taken over before it attached its inbox.
    kicked: bool,
    /// The listener the connection came in on ([`crate::session::ListenerTag`]).
    listener: Option<u32>,
    /// Who is connected, for the admin API (none for a bridge).
    info: Option<Box<ClientInfo>>,
}

#[derive(Debug, Default)]
struct SlotInner {
    /// Boxed: most slots belong to a connected client and hold none.
    parked: Option<Box<Parked>>,
    active: Option<Active>,
    /// Set when the slot is being removed from the map: an acquirer that
    /// finds it set starts over with a fresh slot.
    removed: bool,
    /// Woken when the active connection lets go of the session: made by
    /// the first CONNECT that has to wait for a takeover, so the slot of
    /// a client id that was never taken over holds none.
    released: Option<Arc<Notify>>,
}

/// One client id's session, in every connection's lease: 80 bytes with
/// its reference counts (an allocator size class; a test checks).
#[derive(Debug, Default)]
struct Slot {
    inner: Mutex<SlotInner>,
}

const _: () = assert!(std::mem::size_of::<Slot>() <= 64);

impl Slot {
    fn inner(&self) -> MutexGuard<'_, SlotInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the parked session out of a slot no connection holds, and
    /// marks the slot removed (an acquirer that finds it starts over).
    fn take_parked(&self) -> Option<Parked> {
        let mut inner = self.inner();
        if inner.active.is_some() {
            return None;
        }
        let parked = inner.parked.take()?;
        inner.removed = true;
        Some(*parked)
    }

    /// Clears the active connection if it is still `generation`, and wakes
    /// whoever waits to take the session over.
    fn let_go(&self, generation: Generation, parked: Option<Box<Parked>>) -> bool {
        let mut inner = self.inner();
        let owner = inner
            .active
            .as_ref()
            .is_some_and(|active| active.generation == generation);
        let mut removed = false;
        if owner {
            inner.active = None;
            inner.parked = parked;
            if inner.parked.is_none() {
                inner.removed = true;
                removed = true;
            }
        }
        let released = inner.released.clone();
        drop(inner);
        if let Some(released) = released {
            released.notify_waiters();
        }
        removed
    }
}

/// Which connection holds a slot: a wrapping count of claims. 32 bits (a
/// lease lives in every connection): a stale lease could only be taken
/// for the holder's after four billion claims of that one client id while
/// it lived.
type Generation = u32;

/// A connection's claim on a client id's session.
#[derive(Debug)]
pub struct Lease {
    generation: Generation,
    slot: Arc<Slot>,
    released: bool,
}

impl Drop for Lease {
    /// A lease dropped without [`SessionManager::release`] (its task
    /// panicked, or was cancelled) still frees the client id, so the next
    /// CONNECT for it does not wait forever. The session state is lost.
    fn drop(&mut self) {
        if !self.released {
            self.slot.let_go(self.generation, None);
        }
    }
}

/// Parked sessions' deadlines, earliest first.
type Deadlines = BinaryHeap<Reverse<(Instant, Arc<str>)>>;

/// Every client id's session slot.
#[derive(Debug, Default)]
pub struct SessionManager {
    slots: DashMap<Arc<str>, Arc<Slot>>,
    generation: AtomicU32,
    /// When parked sessions have something due (a delayed will, their
    /// expiry), earliest first. Entries are hints: the slot is checked
    /// when one comes due, so a session resumed meanwhile is left alone.
    deadlines: Mutex<Deadlines>,
    /// Woken when a deadline is added.
    deadline_added: Notify,
    /// Reports asked of connected sessions, by client id (see
    /// [`SessionManager::report`]): empty but while the admin API waits.
    reports: Mutex<view::Waiting>,
}

impl SessionManager {
    /// An empty manager.
    pub fn new() -> Self {
        SessionManager::default()
    }

    /// Claims `client_id`'s session for a new connection: interrupts the
    /// connection that holds it, if any, waits for it to hand back, and
    /// returns the parked session, if there is one.
    pub async fn acquire(&self, client_id: &Arc<str>) -> (Lease, Option<Parked>) {
        'fresh: loop {
            let slot = Arc::clone(self.slots.entry(Arc::clone(client_id)).or_default().value());
            loop {
                let (holder, released) = {
                    let mut inner = slot.inner();
                    if inner.removed {
                        drop(inner);
                        self.slots
                            .remove_if(client_id, |_, current| Arc::ptr_eq(current, &slot));
                        continue 'fresh;
                    }
                    let Some(active) = inner.active.as_mut() else {
                        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
                        inner.active = Some(Active {
                            generation,
                            inbox: None,
                            kicked: false,
                            listener: None,
                            info: None,
                        });
                        let parked = inner.parked.take().map(|parked| *parked);
                        drop(inner);
                        let lease = Lease {
                            generation,
                            slot: Arc::clone(&slot),
                            released: false,
                        };
                        return (lease, parked);
                    };
                    match &active.inbox {
                        Some(inbox) => inbox.interrupt(Interrupt::TakenOver),
                        None => active.kicked = true,
                    }
                    let holder = active.generation;
                    (
                        holder,
                        Arc::clone(inner.released.get_or_insert_with(Default::default)),
                    )
                };
                // Listen, then look again, so a release between the look
                // and the wait is not missed. Concurrent CONNECTs for one id
                // are served one after the other: each that finds another
                // holding the session interrupts it and waits its turn.
                let wait = released.notified();
                tokio::pin!(wait);
                wait.as_mut().enable();
                let held = slot
                    .inner()
                    .active
                    .as_ref()
                    .is_some_and(|active| active.generation == holder);
                if held {
                    wait.await;
                }
            }
        }
    }

    /// Puts a session read from the store back, parked, with its deadlines.
    pub fn restore(&self, client_id: Arc<str>, parked: Parked) {
        let due = [parked.will_at, parked.expires_at];
        {
            let mut deadlines = self.deadlines();
            for at in due.into_iter().flatten() {
                deadlines.push(Reverse((at, Arc::clone(&client_id))));
            }
        }
        let slot = Arc::new(Slot::default());
        slot.inner().parked = Some(Box::new(parked));
        self.slots.insert(client_id, slot);
        self.deadline_added.notify_one();
    }

    /// Records the inbox of the connection holding `lease`, through which it
    /// is interrupted, and the listener it came in on; applies a takeover
    /// that came before, and the shutdown if it has begun.
    pub fn attach(
        &self,
        lease: &Lease,
        inbox: &Arc<Inbox>,
        shutdown: &tokio_util::sync::CancellationToken,
        listener: Option<u32>,
    ) {
        inbox.clear_interrupt();
        let mut inner = lease.slot.inner();
        if let Some(active) = inner
            .active
            .as_mut()
            .filter(|active| active.generation == lease.generation)
        {
            active.inbox = Some(Arc::clone(inbox));
            active.listener = listener;
            if active.kicked {
                inbox.interrupt(Interrupt::TakenOver);
            }
        }
        drop(inner);
        // Looked at after the inbox is in place: a shutdown that began in
        // between either finds the inbox or is seen here.
        if shutdown.is_cancelled() {
            inbox.interrupt(Interrupt::ShuttingDown);
        }
    }

    /// Interrupts the connected session of `client_id`, if there is one,
    /// as at shutdown (a reload stops a bridge so).
    pub fn interrupt(&self, client_id: &str) {
        let Some(slot) = self.slots.get(client_id).map(|slot| Arc::clone(&slot)) else {
            return;
        };
        let inner = slot.inner();
        if let Some(inbox) = inner.active.as_ref().and_then(|a| a.inbox.as_ref()) {
            inbox.interrupt(Interrupt::ShuttingDown);
        }
    }

    /// Interrupts the sessions that came in on the listeners `ids` (a
    /// reload removed them, and their grace period is over).
    pub fn interrupt_listeners(&self, ids: &[u32]) {
        for slot in self.slots.iter() {
            let inner = slot.inner();
            let Some(active) = inner.active.as_ref() else {
                continue;
            };
            let closed = active.listener.is_some_and(|id| ids.contains(&id));
            if let (true, Some(inbox)) = (closed, active.inbox.as_ref()) {
                inbox.interrupt(Interrupt::ShuttingDown);
            }
        }
    }

    /// Interrupts every connected session: the broker is shutting down.
    pub fn interrupt_all(&self) {
        for slot in self.slots.iter() {
            if let Some(inbox) = slot.inner().active.as_ref().and_then(|a| a.inbox.as_ref()) {
                inbox.interrupt(Interrupt::ShuttingDown);
            }
        }
    }

    /// Ends a connection's claim on `client_id`'s session: parks the session
    /// for the next connection (`Some`), or forgets it (`None`).
    pub fn release(&self, client_id: &Arc<str>, mut lease: Lease, parked: Option<Parked>) {
        let mut crowded = false;
        if let Some(parked) = &parked {
            let due = [parked.will_at, parked.expires_at];
            let mut deadlines = self.deadlines();
            for at in due.into_iter().flatten() {
                deadlines.push(Reverse((at, Arc::clone(client_id))));
            }
            crowded = deadlines.len() > 2 * self.slots.len() + 1024;
            drop(deadlines);
            if parked.will_at.is_some() || parked.expires_at.is_some() {
                self.deadline_added.notify_one();
            }
        }
        lease.released = true;
        if lease.slot.let_go(lease.generation, parked.map(Box::new)) {
            self.slots
                .remove_if(client_id, |_, current| Arc::ptr_eq(current, &lease.slot));
        }
        // After the session is parked, so its own new deadline is kept.
        if crowded {
            self.compact_deadlines();
        }
    }

    fn deadlines(&self) -> MutexGuard<'_, Deadlines> {
        self.deadlines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops deadlines no parked session has any more (a client that comes
    /// and goes leaves one behind each time), so the heap stays near the
    /// number of sessions.
    fn compact_deadlines(&self) {
        let entries = std::mem::take(&mut *self.deadlines()).into_vec();
        let kept: Vec<_> = entries
            .into_iter()
            .filter(|Reverse((at, client_id))| {
                self.slots.get(client_id).is_some_and(|slot| {
                    slot.inner().parked.as_ref().is_some_and(|parked| {
                        parked.expires_at == Some(*at) || parked.will_at == Some(*at)
                    })
                })
            })
            .collect();
        self.deadlines().extend(kept);
    }

    /// The earliest deadline of a parked session, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines().peek().map(|Reverse((at, _))| *at)
    }

    /// Waits until a deadline is added.
    pub async fn deadline_added(&self) {
        self.deadline_added.notified().await;
    }

    /// Takes what has come due by `now` in parked sessions: wills whose
    /// delay has passed, and sessions that have expired (removed from the
    /// table here). A session that is connected again is skipped.
    pub fn take_due(&self, now: Instant) -> Vec<Due> {
        let mut due_ids = Vec::new();
        {
            let mut deadlines = self.deadlines();
            while deadlines.peek().is_some_and(|Reverse((at, _))| *at <= now) {
                if let Some(Reverse((_, client_id))) = deadlines.pop() {
                    due_ids.push(client_id);
                }
            }
        }
        let mut found = Vec::new();
        for client_id in due_ids {
            let Some(slot) = self
                .slots
                .get(&client_id)
                .map(|slot| Arc::clone(slot.value()))
            else {
                continue;
            };
            let mut inner = slot.inner();
            if inner.active.is_some() {
                continue;
            }
            let Some(parked) = inner.parked.as_mut() else {
                continue;
            };
            let expired = parked.expires_at.is_some_and(|at| at <= now);
            let will_due = expired || parked.will_at.is_some_and(|at| at <= now);
            let will = if will_due {
                parked.will_at = None;
                parked.will.take()
            } else {
                None
            };
            let expired = if expired {
                inner.removed = true;
                inner.parked.take().map(|parked| *parked)
            } else {
                None
            };
            drop(inner);
            if expired.is_some() {
                self.slots
                    .remove_if(&client_id, |_, current| Arc::ptr_eq(current, &slot));
            }
            if will.is_some() || expired.is_some() {
                found.push(Due {
                    client_id,
                    will,
                    expired,
                });
            }
        }
        found
    }

    /// Takes every will still waiting for its delay in a parked session
    /// (the broker is stopping: those sessions end now).
    pub fn take_delayed_wills(&self) -> Vec<(Arc<str>, Box<LastWill>)> {
        let mut wills = Vec::new();
        for slot in self.slots.iter() {
            let mut inner = slot.inner();
            if let Some(will) = inner.parked.as_mut().and_then(|parked| parked.will.take()) {
                wills.push((Arc::clone(slot.key()), will));
            }
        }
        wills
    }

    /// Runs `f` on the parked session of `client_id`, if it is parked.
    pub fn with_parked(&self, client_id: &str, f: impl FnOnce(&Parked)) {
        let Some(slot) = self.slots.get(client_id).map(|slot| Arc::clone(&slot)) else {
            return;
        };
        let inner = slot.inner();
        if let (None, Some(parked)) = (&inner.active, inner.parked.as_deref()) {
            f(parked);
        }
    }

    /// Takes out every parked session whose client id `pick` chooses
    /// (a sweep at start-up, before anything connects).
    pub fn take_parked(&self, pick: impl Fn(&str) -> bool) -> Vec<(Arc<str>, Parked)> {
        let mut taken = Vec::new();
        let mut slots = Vec::new();
        for slot in self.slots.iter().filter(|slot| pick(slot.key())) {
            if let Some(parked) = Slot::take_parked(slot.value()) {
                taken.push((Arc::clone(slot.key()), parked));
                slots.push(Arc::clone(slot.value()));
            }
        }
        for ((client_id, _), slot) in taken.iter().zip(&slots) {
            self.forget_slot(client_id, slot);
        }
        taken
    }

    /// Removes `slot` from the table, if it is still the one of
    /// `client_id` (a connection may have made a new one meanwhile).
    fn forget_slot(&self, client_id: &str, slot: &Arc<Slot>) {
        self.slots
            .remove_if(client_id, |_, current| Arc::ptr_eq(current, slot));
    }

    /// Client ids with a session (connected or parked).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when no session exists.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

mod view;
pub use view::{unix_now, ClientInfo, Counts, Report, SessionSummary, SubscriptionView};

#[cfg(test)]
mod tests;
