//! What the client is sent: deliveries taken from the inbox within the
//! in-flight window (the smaller of `max_inflight` and the client's Receive
//! Maximum), each with what is left of its expiry, a topic alias when the
//! client takes them, and nothing over the client's Maximum Packet Size.

use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite};

use super::state::{Inflight, Phase};
use super::{durable, Session, Shared};
use crate::auth::acl::Action;
use crate::connection::WRITE_HIGH_WATER;
use crate::protocol::{
    Ack, EncodeError, OutgoingPublishProperties, Packet, PacketId, PublishRef, QoS, TopicName,
};
use crate::router::message::Delivery;

/// Deliveries taken from the inbox under one lock.
const PULL_BATCH: usize = 64;

/// Moves deliveries into the write buffer while the in-flight window and
/// the write buffer have room: first those taken earlier (retained
/// messages for a new subscription), then the inbox.
pub fn pull_deliveries<R, W>(shared: &Shared, session: &mut Session<R, W>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // [MQTT-3.3.4-7] (v5.0): never more unacknowledged QoS 1/2 PUBLISH
    // than the client's Receive Maximum.
    let window = usize::from(session.limits.send_window);
    send_unsent(shared, session, window);
    while session.state.inflight.len() < window && session.connection.unsent() < WRITE_HIGH_WATER {
        if durable::holds_publish(session) {
            return;
        }
        let Some(next) = next_delivery(shared, session) else {
            return;
        };
        if !deliver(shared, session, next) {
            return;
        }
    }
}

/// The next delivery to send: live messages (from the inbox) and the
/// retained messages of new subscriptions take turns; the retained ones
/// wait while a packet is held (the SUBACK goes first).
fn next_delivery<R, W>(shared: &Shared, session: &mut Session<R, W>) -> Option<Delivery> {
    let state = &mut session.state;
    if state.pending.is_empty() {
        session.receiver.drain_into(&mut state.pending, PULL_BATCH);
    }
    let Some(backlogs) = state.retained.as_mut() else {
        return state.pending.pop_front();
    };
    let backlog_first = backlogs.take_turn() || state.pending.is_empty();
    if backlog_first && session.held.is_none() {
        match backlogs.next(&shared.router) {
            Some(retained) => return Some(retained),
            None => {
                state.retained = None;
                return state.pending.pop_front();
            }
        }
    }
    let live = state.pending.pop_front()?;
    match backlogs.ahead_of(&shared.router, &live.message) {
        Some(retained) => {
            state.pending.push_front(live);
            Some(retained)
        }
        None => Some(live),
    }
}

/// Sends one delivery, giving QoS 1/2 a packet id and an in-flight entry;
/// an expired one is dropped [MQTT-3.3.2-5] (v5.0). False if it had to
/// wait because no packet id is free.
fn deliver<R, W>(shared: &Shared, session: &mut Session<R, W>, delivery: Delivery) -> bool
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // The clock is read only for the few messages that can expire.
    let expiry = match delivery.message.properties.message_expiry_interval {
        None => Ok(None),
        Some(_) => delivery.message.remaining_expiry(Instant::now()),
    };
    let Ok(expiry) = expiry else {
        shared.metrics.messages_expired.increment();
        forget(shared, session, &delivery);
        return true;
    };
    if !session.may(shared, delivery.message.topic.as_str(), Action::Read) {
        // A subscription the ACL allowed can still match a topic it denies.
        shared.metrics.acl_denied.increment();
        forget(shared, session, &delivery);
        return true;
    }
    let packet_id = if delivery.qos == QoS::AtMostOnce {
        None
    } else {
        let Some(packet_id) = session.state.allocate_packet_id() else {
            // All 65,535 ids in flight: keep the message for later.
            session.state.pending.push_front(delivery);
            return false;
        };
        Some(packet_id)
    };
    if let (Some(packet_id), QoS::ExactlyOnce) = (packet_id, delivery.qos) {
        if let Some(store) = durable::store(shared, session) {
            // A QoS 2 message's packet id must survive a crash before the
            // client sees it: sent again under another id, it would be a
            // second message to the client.
            store.sent(&session.client_id, &delivery, packet_id, false);
            let ticket = durable::ticket(shared, true).filter(|ticket| *ticket > store.durable());
            if let Some(ticket) = ticket {
                session
                    .state
                    .track(Inflight::published(packet_id, delivery));
                durable::hold(session, ticket, durable::HeldPacket::Publish(packet_id));
                return true;
            }
        }
    }
    if send_publish(shared, session, &delivery, packet_id, false, expiry) {
        if let Some(packet_id) = packet_id {
            session
                .state
                .track(Inflight::published(packet_id, delivery));
        }
        shared.metrics.messages_sent.increment();
    } else {
        forget(shared, session, &delivery);
    }
    true
}

/// A QoS 1/2 delivery that will not be sent: the store forgets it.
fn forget<R, W>(shared: &Shared, session: &Session<R, W>, delivery: &Delivery) {
    if delivery.qos == QoS::AtMostOnce {
        return;
    }
    if let Some(store) = durable::store(shared, session) {
        store.completed(&session.client_id, delivery.message.id);
    }
}

/// Sends an in-flight QoS 2 message for the first time, now that its
/// packet id is durable.
pub fn send_held_publish<R, W>(shared: &Shared, session: &mut Session<R, W>, packet_id: PacketId)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let Some(entry) = session
        .state
        .inflight
        .iter()
        .find(|i| i.packet_id == packet_id && i.phase == Phase::Published)
    else {
        return;
    };
    let delivery = entry.delivery.clone();
    let expiry = delivery
        .message
        .remaining_expiry(Instant::now())
        .unwrap_or(Some(0));
    if send_publish(shared, session, &delivery, Some(packet_id), false, expiry) {
        shared.metrics.messages_sent.increment();
    } else {
        session
            .state
            .complete(packet_id, QoS::ExactlyOnce, Phase::Published);
        forget(shared, session, &delivery);
    }
}

/// Encodes a delivery straight from the shared message: no per-subscriber
/// copy of its topic or properties. False if it was not sent: too large
/// for the client, which then never sees it, as if it had been delivered
/// [MQTT-3.1.2-25] (v5.0).
fn send_publish<R, W>(
    shared: &Shared,
    session: &mut Session<R, W>,
    delivery: &Delivery,
    packet_id: Option<PacketId>,
    dup: bool,
    expiry: Option<u32>,
) -> bool
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let message = &delivery.message;
    let alias_maximum = session.limits.topic_alias_maximum;
    let alias = (alias_maximum > 0).then(|| {
        session
            .aliases
            .get_or_insert_with(Default::default)
            .outgoing(&message.topic, alias_maximum)
    });
    let alias = alias.flatten();
    let alias_only = TopicName::alias_only();
    let publish = PublishRef {
        dup,
        qos: delivery.qos,
        retain: delivery.retain,
        topic: match alias {
            Some(alias) if !alias.with_topic => &alias_only,
            _ => &message.topic,
        },
        packet_id,
        payload: &message.payload,
        properties: OutgoingPublishProperties {
            base: &message.properties,
            message_expiry_interval: expiry,
            topic_alias: alias.map(|alias| alias.alias),
            subscription_identifiers: delivery.subscription_identifiers(),
        },
    };
    match session.connection.send_publish(&publish) {
        Ok(()) => true,
        Err(error) => {
            if let (Some(aliases), Some(alias)) = (session.aliases.as_mut(), alias) {
                if alias.with_topic {
                    // The client never learnt this alias.
                    aliases.forget(&message.topic);
                }
            }
            if let EncodeError::OverPeerMaximum { size, maximum } = error {
                shared.metrics.messages_too_large.increment();
                tracing::debug!(
                    client_id = %session.client_id,
                    size,
                    maximum,
                    topic = %message.topic,
                    "[MQTT-3.1.2-25] message over the client's Maximum Packet Size: not sent"
                );
            } else {
                tracing::error!(client_id = %session.client_id, %error, "could not encode PUBLISH");
            }
            false
        }
    }
}

/// Sends in-flight messages that waited for room in the client's window
/// (after a reconnect), as acknowledgements free it.
fn send_unsent<R, W>(shared: &Shared, session: &mut Session<R, W>, window: usize)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    while session.state.unsent() > 0
        && session.state.inflight.len() - session.state.unsent() < window
    {
        let Some(entry) = session.state.next_unsent().cloned() else {
            return;
        };
        let expiry = entry
            .delivery
            .message
            .remaining_expiry(Instant::now())
            .unwrap_or(Some(0));
        send_publish(
            shared,
            session,
            &entry.delivery,
            Some(entry.packet_id),
            true,
            expiry,
        );
    }
}

/// Re-sends every unacknowledged message in its original order, PUBLISH
/// with DUP set or PUBREL [MQTT-4.4.0-1] (v3.1.1) [MQTT-4.4.0-1] (v5.0).
/// Expiry does not apply to a message whose delivery has started
/// [MQTT-3.3.2-5] [MQTT-4.3.3-7] (v5.0): one whose interval has run out
/// meanwhile is re-sent with 0 left.
pub fn resend_inflight<R, W>(shared: &Shared, session: &mut Session<R, W>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let now = Instant::now();
    let inflight = std::mem::take(&mut session.state.inflight);
    session.state.rebuild_index();
    // Within the client's Receive Maximum, which may be smaller than last
    // time [MQTT-3.3.4-9] (v5.0); the rest is sent as acknowledgements
    // free the window.
    let window = usize::from(session.limits.send_window);
    let mut sent = 0;
    for mut entry in inflight {
        if entry.phase == Phase::Published && sent >= window {
            entry.unsent = true;
            session.state.track(entry);
            continue;
        }
        sent += 1;
        match entry.phase {
            Phase::Published => {
                let expiry = entry
                    .delivery
                    .message
                    .remaining_expiry(now)
                    .unwrap_or(Some(0));
                let packet_id = Some(entry.packet_id);
                if send_publish(shared, session, &entry.delivery, packet_id, true, expiry) {
                    session.state.track(entry);
                } else {
                    forget(shared, session, &entry.delivery);
                }
            }
            Phase::Released => {
                session.send(Packet::PubRel(Ack::new(entry.packet_id)));
                session.state.track(entry);
            }
        }
    }
}
