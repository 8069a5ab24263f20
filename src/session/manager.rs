//! The sessions of every client id, and the handover between connections:
//! at most one connection owns a client id's session at a time. A new
//! CONNECT for an id that is connected kicks the old connection and waits
//! for it to hand its state back [MQTT-3.1.4-2] (v3.1.1); concurrent
//! CONNECTs for one id are served one after the other, so exactly one ends
//! up connected.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use dashmap::DashMap;
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
    released: CancellationToken,
}

#[derive(Debug, Default)]
struct SlotInner {
    parked: Option<Parked>,
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
}

impl Slot {
    fn inner(&self) -> MutexGuard<'_, SlotInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
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
    released: CancellationToken,
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
    /// returns the parked session, if there is one.
    pub async fn acquire(&self, client_id: &Arc<str>) -> (Lease, Option<Parked>) {
        loop {
            let slot = Arc::clone(self.slots.entry(Arc::clone(client_id)).or_default().value());
            let _handover = slot.connect.lock().await;
            loop {
                let active = slot
                    .inner()
                    .active
                    .as_ref()
                    .map(|a| (a.kick.clone(), a.released.clone()));
                let Some((kick, released)) = active else {
                    break;
                };
                kick.cancel();
                released.cancelled().await;
            }
            let mut inner = slot.inner();
            if inner.removed {
                drop(inner);
                self.slots
                    .remove_if(client_id, |_, current| Arc::ptr_eq(current, &slot));
                continue;
            }
            let generation = self.generation.fetch_add(1, Ordering::Relaxed);
            let kick = CancellationToken::new();
            let released = CancellationToken::new();
            inner.active = Some(Active {
                generation,
                kick: kick.clone(),
                released: released.clone(),
            });
            let parked = inner.parked.take();
            drop(inner);
            let lease = Lease {
                client_id: Arc::clone(client_id),
                generation,
                slot: Arc::clone(&slot),
                kick,
                released,
            };
            return (lease, parked);
        }
    }

    /// Ends a connection's claim: parks its session for the next connection
    /// (`Some`), or forgets it (`None`).
    pub fn release(&self, lease: Lease, parked: Option<Parked>) {
        let mut inner = lease.slot.inner();
        let owner = inner
            .active
            .as_ref()
            .is_some_and(|active| active.generation == lease.generation);
        let mut remove = false;
        if owner {
            inner.active = None;
            inner.parked = parked;
            if inner.parked.is_none() {
                inner.removed = true;
                remove = true;
            }
        }
        drop(inner);
        if remove {
            self.slots.remove_if(&lease.client_id, |_, current| {
                Arc::ptr_eq(current, &lease.slot)
            });
        }
        lease.released.cancel();
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
