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
pub enum Held {
    /// A packet ready to send (boxed: most are small acknowledgements, and
    /// a queue of them should not be sized by the largest packet).
    Packet(Box<Packet>),
    /// The first sending of the in-flight QoS 2 message with this packet id.
    Publish(PacketId),
}

/// Held packets, each with the store sequence number it waits for.
pub type HeldPackets = VecDeque<(u64, Held)>;

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

/// Sends `packet` once the store has reached `ticket` (now if it has, or
/// if there is none).
pub fn send_after<R, W>(
    shared: &Shared,
    session: &mut Session<R, W>,
    packet: Packet,
    ticket: Option<u64>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let durable = shared
        .store
        .as_ref()
        .map_or(u64::MAX, |store| store.durable());
    match ticket {
        Some(ticket) if ticket > durable => hold(session, ticket, Held::Packet(Box::new(packet))),
        _ => session.send(packet),
    }
}

/// Queues a held packet.
pub fn hold<R, W>(session: &mut Session<R, W>, ticket: u64, held: Held) {
    session
        .held
        .get_or_insert_with(Default::default)
        .push_back((ticket, held));
}

/// Sends the held packets the store has caught up with; asks the store to
/// wake the session for the rest.
pub fn release_held<R, W>(shared: &Shared, session: &mut Session<R, W>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (Some(store), Some(held)) = (shared.store.as_ref(), session.held.as_mut()) else {
        return;
    };
    let durable = store.durable();
    let mut ready = Vec::new();
    while held.front().is_some_and(|(ticket, _)| *ticket <= durable) {
        if let Some((_, packet)) = held.pop_front() {
            ready.push(packet);
        }
    }
    match held.front() {
        Some((ticket, _)) => store.wake_when_durable(*ticket, &session.inbox),
        None => session.held = None,
    }
    for packet in ready {
        match packet {
            Held::Packet(packet) => send_or_log(&mut session.connection, *packet),
            Held::Publish(packet_id) => {
                super::outbound::send_held_publish(shared, session, packet_id)
            }
        }
    }
}

/// Whether a first QoS 2 sending waits for the store: deliveries after it
/// wait too, so the client gets messages in the order they came.
pub fn holds_publish<R, W>(session: &Session<R, W>) -> bool {
    session.held.as_ref().is_some_and(|held| {
        held.iter()
            .any(|(_, packet)| matches!(packet, Held::Publish(_)))
    })
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
