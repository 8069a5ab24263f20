//! One client's session state as plain data (the store keeps it in
//! records of its own): its subscriptions, the outbound QoS 1/2 messages not yet
//! acknowledged, the inbound QoS 2 packet ids awaiting PUBREL, and the next
//! packet id to use. Separate from the socket: it survives disconnects of a
//! persistent session.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::num::NonZeroU32;

use crate::protocol::{PacketId, QoS, SubscriptionOptions, TopicFilter};
use crate::router::message::Delivery;

/// Packet ids in use. The broker chooses them, not the client, so a fixed
/// hasher is safe, and it keeps every session 16 bytes smaller than a
/// randomly keyed one.
type PacketIds =
    HashSet<u16, std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>>;

/// A session's subscriptions with the options granted. A vector grown one
/// entry at a time: most clients hold a handful, and every idle connection
/// pays for the container (a hash map of one entry costs three times more).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscriptions(Vec<(TopicFilter, SubscriptionOptions, Option<NonZeroU32>)>);

impl Subscriptions {
    /// Adds `filter` with its options and Subscription Identifier, or
    /// replaces them if it is already there.
    pub fn insert(
        &mut self,
        filter: TopicFilter,
        options: SubscriptionOptions,
        identifier: Option<NonZeroU32>,
    ) {
        if let Some(entry) = self.0.iter_mut().find(|(f, _, _)| *f == filter) {
            entry.1 = options;
            entry.2 = identifier;
            return;
        }
        self.0.reserve_exact(1);
        self.0.push((filter, options, identifier));
    }

    /// Removes `filter`; true if it was there.
    pub fn remove(&mut self, filter: &TopicFilter) -> bool {
        let Some(index) = self.0.iter().position(|(f, _, _)| f == filter) else {
            return false;
        };
        self.0.swap_remove(index);
        true
    }

    /// The filters.
    pub fn keys(&self) -> impl Iterator<Item = &TopicFilter> {
        self.0.iter().map(|(filter, _, _)| filter)
    }

    /// Every subscription: filter, options, identifier.
    pub fn iter(
        &self,
    ) -> impl Iterator<Item = &(TopicFilter, SubscriptionOptions, Option<NonZeroU32>)> {
        self.0.iter()
    }

    /// The options granted for `filter`.
    pub fn get(&self, filter: &TopicFilter) -> Option<&SubscriptionOptions> {
        self.0
            .iter()
            .find(|(f, _, _)| f == filter)
            .map(|(_, options, _)| options)
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Where an outbound QoS 1/2 message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// PUBLISH sent; waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Published,
    /// QoS 2: PUBREC received and PUBREL sent; waiting for PUBCOMP.
    Released,
}

/// An outbound message the client has not finished acknowledging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inflight {
    /// The identifier it was sent with.
    pub packet_id: PacketId,
    /// The message and the QoS it is delivered at.
    pub delivery: Delivery,
    /// How far the exchange has got.
    pub phase: Phase,
    /// Waiting to be re-sent: a reconnecting client's Receive Maximum can
    /// be smaller than what was in flight, and the rest waits its turn
    /// with its packet id.
    pub unsent: bool,
}

impl Inflight {
    /// A message just sent (or about to be) with `packet_id`.
    pub fn published(packet_id: PacketId, delivery: Delivery) -> Inflight {
        Inflight {
            packet_id,
            delivery,
            phase: Phase::Published,
            unsent: false,
        }
    }
}

/// What a session has in flight: empty in an idle session, so it is
/// boxed and made on first use, and dropped again ([`SessionState::compact`])
/// when a connection hibernates or a session is parked empty. Inline it
/// cost every idle connection 120 bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Flight {
    inflight: VecDeque<Inflight>,
    awaiting_pubrel: BTreeSet<u16>,
    pending: VecDeque<Delivery>,
    ids_in_use: PacketIds,
    unsent: u16,
}

impl Flight {
    fn is_empty(&self) -> bool {
        self.inflight.is_empty() && self.awaiting_pubrel.is_empty() && self.pending.is_empty()
    }
}

/// The flight of a session that has none.
static EMPTY: Flight = Flight {
    inflight: VecDeque::new(),
    awaiting_pubrel: BTreeSet::new(),
    pending: VecDeque::new(),
    ids_in_use: HashSet::with_hasher(std::hash::BuildHasherDefault::new()),
    unsent: 0,
};

/// A session's state.
#[derive(Debug, Clone, Default)]
pub struct SessionState {
    /// Subscriptions with the options granted.
    pub subscriptions: Subscriptions,
    /// Outbound QoS 1/2 messages in the order they were first sent
    /// ([`SessionState::inflight`]); inbound QoS 2 packet ids whose PUBLISH
    /// was delivered and whose PUBREL has not arrived, so that a re-sent
    /// PUBLISH with one of them is not delivered again
    /// ([`SessionState::awaiting_pubrel`]); deliveries taken for this
    /// session but not yet sent ([`SessionState::pending`]).
    flight: Option<Box<Flight>>,
    /// The packet id after the last one used.
    pub next_packet_id: u16,
    /// Retained messages new subscriptions have still to be sent (boxed:
    /// most sessions have none, most of the time).
    pub retained: Option<Box<crate::session::retained::Backlogs>>,
}

impl PartialEq for SessionState {
    /// Equal when they hold the same: an empty flight equals none.
    fn eq(&self, other: &Self) -> bool {
        self.subscriptions == other.subscriptions
            && self.flight() == other.flight()
            && self.next_packet_id == other.next_packet_id
            && self.retained == other.retained
    }
}

impl Eq for SessionState {}

impl SessionState {
    fn flight(&self) -> &Flight {
        self.flight.as_deref().unwrap_or(&EMPTY)
    }

    fn flight_mut(&mut self) -> &mut Flight {
        self.flight.get_or_insert_with(Default::default)
    }

    /// Whether room for what is in flight has been made.
    pub fn has_flight(&self) -> bool {
        self.flight.is_some()
    }

    /// Drops what holds nothing in flight (and the capacity it kept).
    pub fn compact(&mut self) {
        if self.flight.as_ref().is_some_and(|flight| flight.is_empty()) {
            self.flight = None;
        }
    }

    /// Outbound QoS 1/2 messages in the order they were first sent.
    pub fn inflight(&self) -> &VecDeque<Inflight> {
        &self.flight().inflight
    }

    /// Takes every in-flight message out (the id index empties with them).
    pub fn take_inflight(&mut self) -> VecDeque<Inflight> {
        let Some(flight) = self.flight.as_mut() else {
            return VecDeque::new();
        };
        flight.ids_in_use = PacketIds::default();
        flight.unsent = 0;
        std::mem::take(&mut flight.inflight)
    }

    /// Inbound QoS 2 packet ids awaiting PUBREL.
    pub fn awaiting_pubrel(&self) -> &BTreeSet<u16> {
        &self.flight().awaiting_pubrel
    }

    /// The same, to change.
    pub fn awaiting_pubrel_mut(&mut self) -> &mut BTreeSet<u16> {
        &mut self.flight_mut().awaiting_pubrel
    }

    /// Deliveries taken for this session but not yet sent.
    pub fn pending(&self) -> &VecDeque<Delivery> {
        &self.flight().pending
    }

    /// The same, to change.
    pub fn pending_mut(&mut self) -> &mut VecDeque<Delivery> {
        &mut self.flight_mut().pending
    }

    /// The next pending delivery, if any (making no room when there is
    /// none).
    pub fn pop_pending(&mut self) -> Option<Delivery> {
        self.flight.as_mut()?.pending.pop_front()
    }

    /// A packet id not used by any message in flight [MQTT-2.3.1-2]
    /// (v3.1.1), or none if all 65,535 are in use.
    pub fn allocate_packet_id(&mut self) -> Option<PacketId> {
        let ids_in_use = &self.flight().ids_in_use;
        let mut next = self.next_packet_id;
        // 65,536 steps visit every non-zero id once, the current one last.
        for _ in 0..=u16::MAX {
            next = next.wrapping_add(1);
            let Some(candidate) = PacketId::new(next) else {
                continue;
            };
            if !ids_in_use.contains(&candidate.get()) {
                self.next_packet_id = next;
                return Some(candidate);
            }
        }
        self.next_packet_id = next;
        None
    }

    /// Adds an outbound message to the in-flight list, in sending order.
    pub fn track(&mut self, inflight: Inflight) {
        let flight = self.flight_mut();
        flight.ids_in_use.insert(inflight.packet_id.get());
        flight.unsent += u16::from(inflight.unsent);
        flight.inflight.push_back(inflight);
    }

    /// In-flight messages waiting to be re-sent.
    pub fn unsent(&self) -> usize {
        usize::from(self.flight().unsent)
    }

    /// The oldest in-flight message waiting to be re-sent, now counted as
    /// sent.
    pub fn next_unsent(&mut self) -> Option<&Inflight> {
        let flight = self.flight.as_mut()?;
        let entry = flight.inflight.iter_mut().find(|i| i.unsent)?;
        entry.unsent = false;
        flight.unsent -= 1;
        Some(entry)
    }

    /// Recomputes the derived id index, after the state was loaded.
    pub fn rebuild_index(&mut self) {
        let Some(flight) = self.flight.as_mut() else {
            return;
        };
        flight.ids_in_use = flight.inflight.iter().map(|i| i.packet_id.get()).collect();
        let unsent = flight.inflight.iter().filter(|i| i.unsent).count();
        flight.unsent = u16::try_from(unsent).unwrap_or(u16::MAX);
    }

    /// The in-flight entry with `packet_id`.
    pub fn inflight_mut(&mut self, packet_id: PacketId) -> Option<&mut Inflight> {
        let flight = self.flight.as_mut()?;
        flight
            .inflight
            .iter_mut()
            .find(|i| i.packet_id == packet_id)
    }

    /// Removes and returns the in-flight entry with `packet_id`, if it is
    /// a `qos` delivery in `phase` (a PUBACK completes only QoS 1, a
    /// PUBCOMP only a released QoS 2).
    pub fn complete(&mut self, packet_id: PacketId, qos: QoS, phase: Phase) -> Option<Inflight> {
        let flight = self.flight.as_mut()?;
        let index = flight
            .inflight
            .iter()
            .position(|i| i.packet_id == packet_id && i.phase == phase && i.delivery.qos == qos)?;
        flight.ids_in_use.remove(&packet_id.get());
        if flight.inflight[index].unsent {
            flight.unsent -= 1;
        }
        if flight.ids_in_use.is_empty() && flight.ids_in_use.capacity() > 64 {
            flight.ids_in_use = PacketIds::default();
        }
        flight.inflight.remove(index)
    }
}
