//! What an endpoint tells the store, and the packets it holds back until
//! the store has made durable what they acknowledge. With `durability =
//! "sync"`, a PUBACK, PUBREC, PUBCOMP, SUBACK or UNSUBACK that follows a
//! journaled change waits for the commit that contains it, and so do a
//! first QoS 2 PUBLISH to a persistent session (its packet id must
//! survive a crash, or the peer could be sent the message twice) and a
//! PUBREL. Every packet the endpoint sends in answer to its peer after a
//! held one waits behind it, so answers keep their order; deliveries do
//! not wait, but behind a held QoS 2 sending.

use std::collections::VecDeque;

use super::Endpoint;
use crate::context::Core;
use crate::protocol::{Packet, PacketId, QoS};
use crate::store::Store;

/// Held packets beyond which the peer's input pauses until the store
/// catches up.
pub const HELD_LIMIT: usize = 4096;

/// A packet waiting for the store.
#[derive(Debug)]
pub enum HeldPacket {
    /// A packet ready to send (boxed: most are small acknowledgements, and
    /// a queue of them should not be sized by the largest packet).
    Packet(Box<Packet>),
    /// The first sending of the in-flight QoS 2 message with this packet id.
    Publish(PacketId),
    /// A bridge's resend of everything in flight on its new connection,
    /// once what the old connection was waiting for is durable.
    Resend,
}

impl HeldPacket {
    /// Whether deliveries wait behind it (a PUBLISH goes first).
    fn is_publish(&self) -> bool {
        matches!(self, HeldPacket::Publish(_) | HeldPacket::Resend)
    }
}

/// Packets held back, in the order they are to go out, each with the store
/// sequence number it waits for.
#[derive(Debug, Default)]
pub struct Held {
    packets: VecDeque<(u64, HeldPacket)>,
    /// How many are first QoS 2 sendings.
    publishes: usize,
}

impl Held {
    /// The ticket of the last packet held.
    pub fn last_ticket(&self) -> Option<u64> {
        self.packets.back().map(|(ticket, _)| *ticket)
    }

    /// Takes the held packets `durable` has reached, in order.
    fn take_ready(&mut self, durable: u64) -> Vec<HeldPacket> {
        let mut ready = Vec::new();
        while self
            .packets
            .front()
            .is_some_and(|(ticket, _)| *ticket <= durable)
        {
            if let Some((_, packet)) = self.packets.pop_front() {
                self.publishes -= usize::from(packet.is_publish());
                ready.push(packet);
            }
        }
        ready
    }
}

/// What an acknowledgement must wait for: with `durability = "sync"`, the
/// store's last change, when the acknowledged packet changed the store.
pub fn ticket(core: &Core, changed_store: bool) -> Option<u64> {
    let store = core.store.as_ref()?;
    (changed_store && store.is_sync()).then(|| store.submitted())
}

impl Endpoint {
    /// Holds `packet` until the store reaches `ticket`.
    pub(super) fn hold(&mut self, ticket: u64, packet: HeldPacket) {
        let held = self.held.get_or_insert_with(Default::default);
        held.publishes += usize::from(packet.is_publish());
        held.packets.push_back((ticket, packet));
    }

    /// Sends `packet` once the store has reached `ticket` (now if it has,
    /// or if there is none), behind whatever is held already.
    pub(super) fn send_after(&mut self, core: &Core, packet: Packet, ticket: Option<u64>) {
        let durable = core
            .store
            .as_ref()
            .map_or(u64::MAX, |store| store.durable());
        let wait = ticket
            .filter(|ticket| *ticket > durable)
            .or_else(|| self.held.as_deref().and_then(Held::last_ticket));
        match wait {
            Some(ticket) => self.hold(ticket, HeldPacket::Packet(Box::new(packet))),
            None => self.outbox.send_or_log(packet),
        }
    }

    /// Sends the held packets the store has caught up with.
    pub fn release_held(&mut self, context: &crate::context::Context) {
        let (Some(held), Some(store)) = (self.held.as_mut(), context.core.store.as_ref()) else {
            return;
        };
        let ready = held.take_ready(store.durable());
        if held.packets.is_empty() {
            self.held = None;
        }
        for packet in ready {
            match packet {
                HeldPacket::Packet(packet) => self.outbox.send_or_log(*packet),
                HeldPacket::Publish(packet_id) => self.send_held_publish(context, packet_id),
                HeldPacket::Resend => self.resend_inflight(context),
            }
        }
    }

    /// Asks the store to wake the endpoint (through its inbox) when it
    /// reaches the first held packet. Called last, before the caller
    /// waits: a held packet never waits for the peer's next packet.
    pub fn wake_when_released(&self, core: &Core) {
        let front = self.held.as_deref().and_then(|held| held.packets.front());
        if let (Some(store), Some((ticket, _))) = (core.store.as_ref(), front) {
            store.wake_when_durable(*ticket, &self.inbox);
        }
    }

    /// Whether a first QoS 2 sending waits for the store: deliveries after
    /// it wait too, so the peer gets messages in the order they came.
    pub(super) fn holds_publish(&self) -> bool {
        self.held.as_ref().is_some_and(|held| held.publishes > 0)
    }

    /// Whether the peer's input waits for the store to catch up.
    pub(super) fn is_backed_up(&self) -> bool {
        self.held
            .as_ref()
            .is_some_and(|held| held.packets.len() >= HELD_LIMIT)
    }

    /// As the session is parked: writes the packet ids of its in-flight
    /// QoS 1 messages (QoS 2 ones are written as they are sent), and the
    /// QoS 1/2 deliveries it had taken from its inbox but not sent.
    pub fn record_inflight(&self, store: &Store) {
        for delivery in self.state.pending() {
            if delivery.qos != QoS::AtMostOnce {
                store.kept(self.client_id(), delivery);
            }
        }
        for inflight in self.state.inflight() {
            if inflight.delivery.qos == QoS::AtLeastOnce {
                store.sent(
                    self.client_id(),
                    &inflight.delivery,
                    inflight.packet_id,
                    inflight.phase == super::super::state::Phase::Released,
                );
            }
        }
    }
}
