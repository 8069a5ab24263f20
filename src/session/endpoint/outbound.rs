//! What the peer is sent: deliveries from the inbox, and the retained
//! messages of new subscriptions, within the in-flight window (the
//! smaller of `max_inflight` and the peer's Receive Maximum), each with
//! what is left of its expiry, a topic alias when the peer takes them (a
//! bridge: under its remote topic), nothing over the peer's Maximum Packet
//! Size; and, after a reconnect, what it had not acknowledged.

use std::time::Instant;

use super::held::HeldPacket;
use super::{Endpoint, Role};
use crate::auth::acl::Action;
use crate::connection::WRITE_HIGH_WATER;
use crate::context::{Context, Core};
use crate::protocol::{
    Ack, EncodeError, OutgoingPublishProperties, Packet, PacketId, PublishRef, QoS, TopicName,
};
use crate::router::message::Delivery;
use crate::session::state::{Inflight, Phase};

/// Deliveries taken from the inbox under one lock.
const PULL_BATCH: usize = 64;

impl Endpoint {
    /// Moves deliveries into the outbox while the in-flight window and the
    /// outbox have room.
    pub(super) fn pull_deliveries(&mut self, context: &Context) {
        // [MQTT-3.3.4-7] (v5.0): never more unacknowledged QoS 1/2 PUBLISH
        // than the peer's Receive Maximum.
        let window = usize::from(self.limits.send_window);
        self.send_unsent(&context.core, window);
        while self.state.inflight().len() < window && self.outbox.len() < WRITE_HIGH_WATER {
            if self.holds_publish() {
                return;
            }
            let Some(next) = self.next_delivery(&context.core) else {
                return;
            };
            if !self.deliver(context, next) {
                return;
            }
        }
    }

    /// As a session the store keeps is parked: the retained messages its
    /// new subscriptions still have to be sent join the front of its
    /// pending deliveries (they are older than any live one there), as
    /// many as `max_queued_messages` leaves room for, so that the store
    /// keeps them with the queue across a restart; the rest stay for the
    /// next connection in memory.
    pub fn queue_backlog(&mut self, core: &Core) {
        let queued = self.state.pending().len() + self.receiver.len();
        let Some(backlogs) = self.state.retained.as_mut() else {
            return;
        };
        let room = core.config().max_queued_messages.saturating_sub(queued);
        let mut taken = Vec::new();
        while taken.len() < room {
            match backlogs.next(&core.router) {
                Some(retained) => taken.push(retained),
                None => {
                    self.state.retained = None;
                    break;
                }
            }
        }
        for retained in taken.into_iter().rev() {
            self.state.pending_mut().push_front(retained);
        }
    }

    /// The next delivery to send: live messages (from the inbox) and the
    /// retained messages of new subscriptions take turns; the retained ones
    /// wait while a packet is held (the SUBACK goes first), except one
    /// that must go just ahead of a live message on its topic (live
    /// messages may go before the SUBACK, as section 3.8.4 allows).
    fn next_delivery(&mut self, core: &Core) -> Option<Delivery> {
        // Room for pending deliveries is made only for some to go there
        // (once made, it stays while the connection is awake: one lock).
        if self.state.pending().is_empty() && (self.state.has_flight() || !self.receiver.is_empty())
        {
            self.receiver
                .drain_into(self.state.pending_mut(), PULL_BATCH);
        }
        let pending_empty = self.state.pending().is_empty();
        let Some(backlogs) = self.state.retained.as_mut() else {
            return self.state.pop_pending();
        };
        let backlog_first = backlogs.take_turn() || pending_empty;
        if backlog_first && self.held.is_none() {
            match backlogs.next(&core.router) {
                Some(retained) => return Some(retained),
                None => {
                    self.state.retained = None;
                    return self.state.pop_pending();
                }
            }
        }
        let live = self.state.pop_pending()?;
        let Some(backlogs) = self.state.retained.as_mut() else {
            return Some(live);
        };
        match backlogs.ahead_of(&core.router, &live.message) {
            Some(retained) => {
                self.state.pending_mut().push_front(live);
                Some(retained)
            }
            None => Some(live),
        }
    }

    /// Sends one delivery, giving QoS 1/2 a packet id and an in-flight
    /// entry; an expired one is dropped [MQTT-3.3.2-5] (v5.0), and so is
    /// one the ACL denies. False if it had to wait because no packet id is
    /// free.
    fn deliver(&mut self, context: &Context, delivery: Delivery) -> bool {
        let core = &context.core;
        // The clock is read only for the few messages that can expire.
        let expiry = match delivery.message.properties.message_expiry_interval {
            None => Ok(None),
            Some(_) => delivery.message.remaining_expiry(Instant::now()),
        };
        let Ok(expiry) = expiry else {
            core.metrics.messages_expired.increment();
            self.forget(core, &delivery);
            return true;
        };
        if !self.may(context, delivery.message.topic.as_str(), Action::Read) {
            // A subscription the ACL allowed can still match a topic it denies.
            core.metrics.acl_denied.increment();
            self.forget(core, &delivery);
            return true;
        }
        let packet_id = if delivery.qos == QoS::AtMostOnce {
            None
        } else {
            let Some(packet_id) = self.state.allocate_packet_id() else {
                // All 65,535 ids in flight: keep the message for later.
                self.state.pending_mut().push_front(delivery);
                return false;
            };
            Some(packet_id)
        };
        if let (Some(packet_id), QoS::ExactlyOnce) = (packet_id, delivery.qos) {
            if let Some(store) = self.store(core) {
                // A QoS 2 message's packet id must survive a crash before the
                // peer sees it: sent again under another id, it would be a
                // second message to the peer.
                store.sent(self.client_id(), &delivery, packet_id, false);
                let ticket = super::held::ticket(core, true).filter(|t| *t > store.durable());
                if let Some(ticket) = ticket {
                    self.state.track(Inflight::published(packet_id, delivery));
                    self.hold(ticket, HeldPacket::Publish(packet_id));
                    return true;
                }
            }
        }
        if self.send_publish(core, &delivery, packet_id, false, expiry) {
            self.count_sent(core, &delivery);
            if let Some(packet_id) = packet_id {
                self.state.track(Inflight::published(packet_id, delivery));
            }
        } else {
            self.forget(core, &delivery);
        }
        true
    }

    /// Counts a delivery written for the peer: by QoS, for the bridge it
    /// goes out on, and (for a sample of messages, by id, so that no
    /// clock is read for the others) its latency since the broker had it.
    /// A retained message sent on subscribe is not a delivery's latency.
    fn count_sent(&self, core: &Core, delivery: &Delivery) {
        let message = &delivery.message;
        core.metrics
            .sent
            .record(delivery.qos as u8, message.payload.len());
        if message.id.is_multiple_of(crate::metrics::LATENCY_SAMPLE) && !delivery.retain {
            core.metrics
                .delivery_latency
                .observe(message.received_at.elapsed());
        }
        if let Role::Client(client) = &self.role {
            client.stats.forwarded.increment();
        }
    }

    /// A QoS 1/2 delivery that will not be sent: the store forgets it.
    fn forget(&self, core: &Core, delivery: &Delivery) {
        if delivery.qos == QoS::AtMostOnce {
            return;
        }
        if let Some(store) = self.store(core) {
            store.completed(self.client_id(), delivery.message.id);
        }
    }

    /// Sends an in-flight QoS 2 message for the first time, now that its
    /// packet id is durable.
    pub(super) fn send_held_publish(&mut self, context: &Context, packet_id: PacketId) {
        let core = &context.core;
        let Some(entry) = self
            .state
            .inflight()
            .iter()
            .find(|i| i.packet_id == packet_id && i.phase == Phase::Published)
        else {
            return;
        };
        let delivery = entry.delivery.clone();
        let expiry = remaining(&delivery);
        if self.send_publish(core, &delivery, Some(packet_id), false, expiry) {
            self.count_sent(core, &delivery);
        } else {
            self.state
                .complete(packet_id, QoS::ExactlyOnce, Phase::Published);
            self.forget(core, &delivery);
        }
    }

    /// Encodes a delivery straight from the shared message: no per-peer
    /// copy of its topic or properties (a bridge's remote topic is the one
    /// exception). False if it was not sent: too large for the peer, which
    /// then never sees it, as if it had been delivered [MQTT-3.1.2-25]
    /// (v5.0), or (a bridge) no rule sends it out.
    fn send_publish(
        &mut self,
        core: &Core,
        delivery: &Delivery,
        packet_id: Option<PacketId>,
        dup: bool,
        expiry: Option<u32>,
    ) -> bool {
        let message = &delivery.message;
        let remote_topic: Option<TopicName>;
        let topic = match &self.role {
            Role::Server(_) => &message.topic,
            Role::Client(client) => {
                remote_topic = client.topics.outgoing(message.topic.as_str());
                match &remote_topic {
                    Some(topic) => topic,
                    None => return false,
                }
            }
        };
        // Topic aliases are MQTT 5's alone.
        let alias_maximum = if self.outbox.version().is_v5() {
            self.limits.topic_alias_maximum
        } else {
            0
        };
        let alias = (alias_maximum > 0).then(|| {
            self.aliases
                .get_or_insert_with(Default::default)
                .outgoing(topic, alias_maximum)
        });
        let alias = alias.flatten();
        let alias_only = TopicName::alias_only();
        let publish = PublishRef {
            dup,
            qos: delivery.qos,
            retain: delivery.retain,
            topic: match alias {
                Some(alias) if !alias.with_topic => &alias_only,
                _ => topic,
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
        let Err(error) = self.outbox.send_publish(&publish) else {
            return true;
        };
        if let (Some(aliases), Some(alias)) = (self.aliases.as_mut(), alias) {
            if alias.with_topic {
                // The peer never learnt this alias.
                aliases.forget(topic);
            }
        }
        if let EncodeError::OverPeerMaximum { size, maximum } = error {
            core.metrics.messages_too_large.increment();
            tracing::debug!(
                client_id = %self.client_id(),
                size,
                maximum,
                topic = %message.topic,
                "[MQTT-3.1.2-25] message over the peer's Maximum Packet Size: not sent"
            );
        } else {
            tracing::error!(client_id = %self.client_id(), %error, "could not encode PUBLISH");
        }
        false
    }

    /// Sends in-flight messages that waited for room in the peer's window
    /// (after a reconnect), as acknowledgements free it.
    fn send_unsent(&mut self, core: &Core, window: usize) {
        while self.state.unsent() > 0 && self.state.inflight().len() - self.state.unsent() < window
        {
            let Some(entry) = self.state.next_unsent().cloned() else {
                return;
            };
            let expiry = remaining(&entry.delivery);
            if !self.send_publish(core, &entry.delivery, Some(entry.packet_id), true, expiry) {
                // Too large for the peer now (or no rule sends it out): it
                // leaves the window rather than hold a place in it forever.
                let qos = entry.delivery.qos;
                self.state.complete(entry.packet_id, qos, Phase::Published);
                self.forget(core, &entry.delivery);
            }
        }
    }

    /// Re-sends every unacknowledged message in its original order, PUBLISH
    /// with DUP set or PUBREL [MQTT-4.4.0-1] (v3.1.1) [MQTT-4.4.0-1] (v5.0),
    /// within the peer's Receive Maximum, which may be smaller than last
    /// time [MQTT-3.3.4-9] (v5.0); the rest is sent as acknowledgements
    /// free the window.
    pub fn resend_inflight(&mut self, context: &Context) {
        let core = &context.core;
        let inflight = self.state.take_inflight();
        self.state.rebuild_index();
        let window = usize::from(self.limits.send_window);
        let mut sent = 0;
        for mut entry in inflight {
            if entry.phase == Phase::Published && sent >= window {
                entry.unsent = true;
                self.state.track(entry);
                continue;
            }
            match entry.phase {
                Phase::Published => {
                    let expiry = remaining(&entry.delivery);
                    let packet_id = Some(entry.packet_id);
                    if self.send_publish(core, &entry.delivery, packet_id, true, expiry) {
                        sent += 1;
                        self.state.track(entry);
                    } else {
                        // It takes no place in the window.
                        self.forget(core, &entry.delivery);
                    }
                }
                Phase::Released => {
                    sent += 1;
                    self.send(Packet::PubRel(Ack::new(entry.packet_id)));
                    self.state.track(entry);
                }
            }
        }
    }
}

/// What is left of a delivery's expiry now. Expiry does not apply to a
/// message whose delivery has started [MQTT-3.3.2-5] [MQTT-4.3.3-7]
/// (v5.0): one whose interval has run out meanwhile goes with 0 left.
fn remaining(delivery: &Delivery) -> Option<u32> {
    delivery
        .message
        .remaining_expiry(Instant::now())
        .unwrap_or(Some(0))
}
