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

/// A session's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionState {
    /// Subscriptions with the options granted.
    pub subscriptions: Subscriptions,
    /// Outbound QoS 1/2 messages in the order they were first sent.
    pub inflight: VecDeque<Inflight>,
    /// Inbound QoS 2 packet ids whose PUBLISH was delivered and whose
    /// PUBREL has not arrived: a re-sent PUBLISH with one of these ids is
    /// not delivered again.
    pub awaiting_pubrel: BTreeSet<u16>,
    /// The packet id after the last one used.
    pub next_packet_id: u16,
    /// Deliveries taken for this session but not yet sent.
    pub pending: VecDeque<Delivery>,
    /// Retained messages new subscriptions have still to be sent (boxed:
    /// most sessions have none, most of the time).
    pub retained: Option<Box<crate::session::retained::Backlogs>>,
    /// The packet ids in `inflight`, for O(1) allocation; derived, so not
    /// stored (see [`SessionState::rebuild_index`]).
    ids_in_use: PacketIds,
    /// How many of `inflight` are `unsent` (at most 65,535, like packet
    /// ids); derived.
    unsent: u16,
}

impl SessionState {
    /// A packet id not used by any message in flight [MQTT-2.3.1-2]
    /// (v3.1.1), or none if all 65,535 are in use.
    pub fn allocate_packet_id(&mut self) -> Option<PacketId> {
        // 65,536 steps visit every non-zero id once, the current one last.
        for _ in 0..=u16::MAX {
            self.next_packet_id = self.next_packet_id.wrapping_add(1);
            let Some(candidate) = PacketId::new(self.next_packet_id) else {
                continue;
            };
            if !self.ids_in_use.contains(&candidate.get()) {
                return Some(candidate);
            }
        }
        None
    }

    /// Adds an outbound message to the in-flight list, in sending order.
    pub fn track(&mut self, inflight: Inflight) {
        self.ids_in_use.insert(inflight.packet_id.get());
        self.unsent += u16::from(inflight.unsent);
        self.inflight.push_back(inflight);
    }

    /// In-flight messages waiting to be re-sent.
    pub fn unsent(&self) -> usize {
        usize::from(self.unsent)
    }

    /// The oldest in-flight message waiting to be re-sent, now counted as
    /// sent.
    pub fn next_unsent(&mut self) -> Option<&Inflight> {
        let entry = self.inflight.iter_mut().find(|i| i.unsent)?;
        entry.unsent = false;
        self.unsent -= 1;
        Some(entry)
    }

    /// Recomputes the derived id index, after the state was loaded.
    pub fn rebuild_index(&mut self) {
        self.ids_in_use = self.inflight.iter().map(|i| i.packet_id.get()).collect();
        let unsent = self.inflight.iter().filter(|i| i.unsent).count();
        self.unsent = u16::try_from(unsent).unwrap_or(u16::MAX);
    }

    /// The in-flight entry with `packet_id`.
    pub fn inflight_mut(&mut self, packet_id: PacketId) -> Option<&mut Inflight> {
        self.inflight.iter_mut().find(|i| i.packet_id == packet_id)
    }

    /// Removes and returns the in-flight entry with `packet_id`, if it is
    /// a `qos` delivery in `phase` (a PUBACK completes only QoS 1, a
    /// PUBCOMP only a released QoS 2).
    pub fn complete(&mut self, packet_id: PacketId, qos: QoS, phase: Phase) -> Option<Inflight> {
        let index = self
            .inflight
            .iter()
            .position(|i| i.packet_id == packet_id && i.phase == phase && i.delivery.qos == qos)?;
        self.ids_in_use.remove(&packet_id.get());
        if self.inflight[index].unsent {
            self.unsent -= 1;
        }
        if self.ids_in_use.is_empty() && self.ids_in_use.capacity() > 64 {
            self.ids_in_use = PacketIds::default();
        }
        self.inflight.remove(index)
    }
}
