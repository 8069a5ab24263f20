//! The sessions of every client id, and the handover between connections:
//! at most one connection owns a client id's session at a time. A new
//! CONNECT for an id that is connected kicks the old connection and waits
//! for it to hand its state back [MQTT-3.1.4-2] (v3.1.1); concurrent
//! CONNECTs for one id are served one after the other, so exactly one ends
//! up connected.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use dashmap::DashMap;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::state::SessionState;
use crate::router::inbox::{Inbox, InboxReceiver};

/// A session whose client is not connected.
#[derive(Debug)]
pub struct Parked {
    /// Its state.
    pub state: SessionState,
    /// Its inbox, still subscribed in the router.
    pub inbox: Arc<Inbox>,
    /// The inbox's receiving end, holding what was queued meanwhile.
    pub receiver: InboxReceiver,
}

#[derive(Debug)]
struct Active {
    generation: u64,
    kick: CancellationToken,
}

#[derive(Debug, Default)]
struct SlotInner {
    /// Boxed: most slots belong to a connected client and hold none.
    parked: Option<Box<Parked>>,
    active: Option<Active>,
    /// Set when the slot is being removed from the map: an acquirer that
    /// finds it set starts over with a fresh slot.
    removed: bool,
}

#[derive(Debug, Default)]
struct Slot {
    /// Serialises CONNECT handovers for one client id.
    connect: tokio::sync::Mutex<()>,
    inner: Mutex<SlotInner>,
    /// Woken when the active connection lets go of the session.
    released: Notify,
}

impl Slot {
    fn inner(&self) -> MutexGuard<'_, SlotInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Clears the active connection if it is still `generation`, and wakes
    /// whoever waits to take the session over.
    fn let_go(&self, generation: u64, parked: Option<Box<Parked>>) -> bool {
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
        drop(inner);
        self.released.notify_waiters();
        removed
    }
}

/// A connection's claim on a client id's session.
#[derive(Debug)]
pub struct Lease {
    client_id: Arc<str>,
    generation: u64,
    slot: Arc<Slot>,
    /// Cancelled when another connection takes the session over.
    pub kick: CancellationToken,
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

/// Every client id's session slot.
#[derive(Debug, Default)]
pub struct SessionManager {
    slots: DashMap<Arc<str>, Arc<Slot>>,
    generation: AtomicU64,
}

impl SessionManager {
    /// An empty manager.
    pub fn new() -> Self {
        SessionManager::default()
    }

    /// Claims `client_id`'s session for a new connection: kicks the
    /// connection that holds it, if any, waits for it to hand back, and
    /// returns the parked session, if there is one. The lease's `kick` is a
    /// child of `shutdown`, so one token tells the connection to stop for
    /// either reason.
    pub async fn acquire(
        &self,
        client_id: &Arc<str>,
        shutdown: &CancellationToken,
    ) -> (Lease, Option<Parked>) {
        loop {
            let slot = Arc::clone(self.slots.entry(Arc::clone(client_id)).or_default().value());
            let _handover = slot.connect.lock().await;
            loop {
                // Listen before looking, so a release between the look and
                // the wait is not missed.
                let released = slot.released.notified();
                tokio::pin!(released);
                released.as_mut().enable();
                let kick = slot.inner().active.as_ref().map(|a| a.kick.clone());
                let Some(kick) = kick else {
                    break;
                };
                kick.cancel();
                released.await;
            }
            let mut inner = slot.inner();
            if inner.removed {
                drop(inner);
                self.slots
                    .remove_if(client_id, |_, current| Arc::ptr_eq(current, &slot));
                continue;
            }
            let generation = self.generation.fetch_add(1, Ordering::Relaxed);
            let kick = shutdown.child_token();
            inner.active = Some(Active {
                generation,
                kick: kick.clone(),
            });
            let parked = inner.parked.take().map(|parked| *parked);
            drop(inner);
            let lease = Lease {
                client_id: Arc::clone(client_id),
                generation,
                slot: Arc::clone(&slot),
                kick,
                released: false,
            };
            return (lease, parked);
        }
    }

    /// Ends a connection's claim: parks its session for the next connection
    /// (`Some`), or forgets it (`None`).
    pub fn release(&self, mut lease: Lease, parked: Option<Parked>) {
        lease.released = true;
        if lease.slot.let_go(lease.generation, parked.map(Box::new)) {
            self.slots.remove_if(&lease.client_id, |_, current| {
                Arc::ptr_eq(current, &lease.slot)
            });
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    // A lease dropped without release (its task panicked) does not leave
    // the client id blocked.
    #[tokio::test]
    async fn dropped_lease_frees_the_client_id() {
        let manager = SessionManager::new();
        let id: Arc<str> = Arc::from("device");
        let (lease, parked) = manager.acquire(&id, &CancellationToken::new()).await;
        assert!(parked.is_none());
        drop(lease);
        let again = tokio::time::timeout(
            Duration::from_secs(5),
            manager.acquire(&id, &CancellationToken::new()),
        )
        .await;
        assert!(again.is_ok(), "acquire waited for a lease that was dropped");
    }

    // A second acquire kicks the first lease and waits for its release.
    #[tokio::test]
    async fn acquire_kicks_the_holder_and_takes_its_parked_state() {
        let manager = Arc::new(SessionManager::new());
        let id: Arc<str> = Arc::from("device");
        let (first, _) = manager.acquire(&id, &CancellationToken::new()).await;
        let kicked = first.kick.clone();
        let second = {
            let manager = Arc::clone(&manager);
            let id = Arc::clone(&id);
            tokio::spawn(async move { manager.acquire(&id, &CancellationToken::new()).await })
        };
        tokio::time::timeout(Duration::from_secs(5), kicked.cancelled())
            .await
            .expect("the holder is kicked");
        let limits = crate::router::inbox::InboxLimits {
            max_messages: 1,
            max_bytes: 1,
            queue_qos0: false,
        };
        let (inbox, receiver) = Inbox::new(Arc::clone(&id), limits);
        let mut state = SessionState::default();
        state.next_packet_id = 42;
        let parked = Parked {
            state,
            inbox,
            receiver,
        };
        manager.release(first, Some(parked));
        let (_lease, parked) = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("the second acquire completes")
            .expect("task");
        assert_eq!(parked.map(|p| p.state.next_packet_id), Some(42));
    }
}
