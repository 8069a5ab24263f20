//! What a session tells the store, and the packets it holds back until the
//! store has made durable what they acknowledge. With `durability =
//! "sync"`, a PUBACK, PUBREC, PUBCOMP, SUBACK or UNSUBACK that follows a
//! journaled change waits for the commit that contains it, and so does a
//! first QoS 2 PUBLISH to a persistent session (its packet id must survive
//! a crash, or the client could be sent the message twice) and a PUBREL.
//! Every packet the session sends in answer to its client after a held
//! one waits behind it, so answers keep their order; deliveries do not
//! wait.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use super::state::Phase;
use super::{send_or_log, Session, Shared};
use crate::protocol::{Packet, PacketId};
use crate::store::Store;

/// A packet waiting for the store.
#[derive(Debug)]
pub enum HeldPacket {
    /// A packet ready to send (boxed: most are small acknowledgements, and
    /// a queue of them should not be sized by the largest packet).
    Packet(Box<Packet>),
    /// The first sending of the in-flight QoS 2 message with this packet id.
    Publish(PacketId),
}

/// Packets held back, in the order they are to go out, each with the store
/// sequence number it waits for. Used by client sessions and bridges.
#[derive(Debug, Default)]
pub struct Held {
    packets: VecDeque<(u64, HeldPacket)>,
    /// How many are first QoS 2 sendings.
    publishes: usize,
}

impl Held {
    /// Holds `packet` until the store reaches `ticket`.
    pub fn hold(&mut self, ticket: u64, packet: HeldPacket) {
        self.publishes += usize::from(matches!(packet, HeldPacket::Publish(_)));
        self.packets.push_back((ticket, packet));
    }

    /// Whether a first QoS 2 sending waits: messages after it wait too, so
    /// they go out in the order they came.
    pub fn holds_publish(&self) -> bool {
        self.publishes > 0
    }

    /// How many packets wait.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// True when none waits.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// The ticket of the last packet held.
    pub fn last_ticket(&self) -> Option<u64> {
        self.packets.back().map(|(ticket, _)| *ticket)
    }
}

/// Held packets beyond which the client's input pauses until the store
/// catches up.
pub const HELD_LIMIT: usize = 4096;

/// The store, if this session is one it keeps.
pub fn store<'a, R, W>(shared: &'a Shared, session: &Session<R, W>) -> Option<&'a Arc<Store>> {
    shared.store.as_ref().filter(|_| session.inbox.is_durable())
}

/// What an acknowledgement must wait for: with `durability = "sync"`, the
/// store's last change, when the acknowledged packet changed the store.
pub fn ticket(shared: &Shared, changed_store: bool) -> Option<u64> {
    let store = shared.store.as_ref()?;
    (changed_store && store.is_sync()).then(|| store.submitted())
}

/// What a packet to send now must wait for: its own `ticket` if the store
/// has not reached it, else the last held packet's (answers keep their
/// order); none if it can go at once.
pub fn wait_for(shared: &Shared, held: Option<&Held>, ticket: Option<u64>) -> Option<u64> {
    let durable = shared
        .store
        .as_ref()
        .map_or(u64::MAX, |store| store.durable());
    ticket
        .filter(|ticket| *ticket > durable)
        .or_else(|| held.and_then(Held::last_ticket))
}

/// Takes the held packets the store has reached, in order.
pub fn release(shared: &Shared, held: &mut Held) -> Vec<HeldPacket> {
    let Some(store) = shared.store.as_ref() else {
        return Vec::new();
    };
    let durable = store.durable();
    let mut ready = Vec::new();
    while held
        .packets
        .front()
        .is_some_and(|(ticket, _)| *ticket <= durable)
    {
        if let Some((_, packet)) = held.packets.pop_front() {
            held.publishes -= usize::from(matches!(packet, HeldPacket::Publish(_)));
            ready.push(packet);
        }
    }
    ready
}

/// Asks the store to wake `inbox`'s task when it reaches the first held
/// packet. Called just before the task waits, after everything that may
/// hold a packet (its input, its deliveries) has run: a held packet
/// never waits for the peer's next packet.
pub fn wake_when_released(
    shared: &Shared,
    held: Option<&Held>,
    inbox: &Arc<crate::router::inbox::Inbox>,
) {
    let (Some(store), Some((ticket, _))) = (
        shared.store.as_ref(),
        held.and_then(|held| held.packets.front()),
    ) else {
        return;
    };
    store.wake_when_durable(*ticket, inbox);
}

/// Sends `packet` once the store has reached `ticket` (now if it has, or
/// if there is none), behind whatever is held already.
pub fn send_after<R, W>(
    shared: &Shared,
    session: &mut Session<R, W>,
    packet: Packet,
    ticket: Option<u64>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    match wait_for(shared, session.held.as_deref(), ticket) {
        Some(ticket) => hold(session, ticket, HeldPacket::Packet(Box::new(packet))),
        None => send_or_log(&mut session.connection, packet),
    }
}

/// Queues a held packet.
pub fn hold<R, W>(session: &mut Session<R, W>, ticket: u64, packet: HeldPacket) {
    session
        .held
        .get_or_insert_with(Default::default)
        .hold(ticket, packet);
}

/// Sends the held packets the store has caught up with; asks the store to
/// wake the session for the rest.
pub fn release_held<R, W>(shared: &Shared, session: &mut Session<R, W>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let Some(held) = session.held.as_mut() else {
        return;
    };
    let ready = release(shared, held);
    if held.is_empty() {
        session.held = None;
    }
    for packet in ready {
        match packet {
            HeldPacket::Packet(packet) => send_or_log(&mut session.connection, *packet),
            HeldPacket::Publish(packet_id) => {
                super::outbound::send_held_publish(shared, session, packet_id)
            }
        }
    }
}

/// Whether a first QoS 2 sending waits for the store: deliveries after it
/// wait too, so the client gets messages in the order they came.
pub fn holds_publish<R, W>(session: &Session<R, W>) -> bool {
    session
        .held
        .as_ref()
        .is_some_and(|held| held.holds_publish())
}

/// Whether the client's input waits for the store to catch up.
pub fn is_backed_up<R, W>(session: &Session<R, W>) -> bool {
    session
        .held
        .as_ref()
        .is_some_and(|held| held.len() >= HELD_LIMIT)
}

/// As the session is parked: writes the packet ids of its in-flight QoS 1
/// messages (QoS 2 ones are written as they are sent), and the QoS 1/2
/// deliveries it had taken from its inbox but not sent.
pub fn record_inflight<R, W>(store: &Store, session: &Session<R, W>) {
    for delivery in &session.state.pending {
        if delivery.qos != crate::protocol::QoS::AtMostOnce {
            store.kept(&session.client_id, delivery);
        }
    }
    for inflight in &session.state.inflight {
        if inflight.delivery.qos == crate::protocol::QoS::AtLeastOnce {
            store.sent(
                &session.client_id,
                &inflight.delivery,
                inflight.packet_id,
                inflight.phase == Phase::Released,
            );
        }
    }
}
