//! What the peer sends: its PUBLISH (topic aliases, limits, the QoS 1/2
//! receiving side), the acknowledgements of what it was sent, PING,
//! DISCONNECT and, from a client, re-authentication. SUBSCRIBE and
//! UNSUBSCRIBE are in [`super::subscribe`]. A packet that does not belong
//! to the peer's side ends the connection.

use std::sync::Arc;

use tokio::time::Instant;

use super::held::ticket;
use super::{Endpoint, Role};
use crate::auth::acl::Action;
use crate::auth::AuthStep;
use crate::context::{Context, Core};
use crate::protocol::topic::{check_bounds, is_broker_topic};
use crate::protocol::{
    Ack, Auth, AuthProperties, Disconnect, Packet, PacketId, Publish, PublishProperties, QoS,
    ReasonCode, TopicName,
};
use crate::router::message::Message;
use crate::session::exit::Exit;
use crate::session::state::Phase;

impl Endpoint {
    /// Handles one packet from the peer, read at `now`.
    pub fn handle(&mut self, context: &Context, packet: Packet, now: Instant) -> Result<(), Exit> {
        let core = &context.core;
        let server = !self.is_bridge();
        match packet {
            Packet::Publish(publish) => self.receive(context, publish, now)?,
            Packet::PubAck(ack) => {
                self.complete(core, ack.packet_id, QoS::AtLeastOnce, Phase::Published)
            }
            Packet::PubRec(ack) => self.pubrec(core, ack),
            Packet::PubComp(ack) => {
                self.complete(core, ack.packet_id, QoS::ExactlyOnce, Phase::Released)
            }
            Packet::PubRel(ack) => self.pubrel(core, ack),
            Packet::Disconnect(disconnect) => return Err(self.disconnected(core, disconnect)),
            Packet::PingReq if server => {
                // What was routed to this client before its PINGREQ goes out
                // before the PINGRESP, so a PINGREQ is a barrier for it.
                self.pull_deliveries(context);
                self.send(Packet::PingResp);
            }
            Packet::Subscribe(subscribe) if server => self.subscribe(context, subscribe)?,
            Packet::Unsubscribe(unsubscribe) if server => self.unsubscribe(core, unsubscribe),
            Packet::Auth(auth) if server => self.reauthenticate(auth)?,
            Packet::Connect(_) if server => {
                return Err(Exit::Violation(
                    ReasonCode::ProtocolError,
                    "[MQTT-3.1.0-2] a second CONNECT on one connection",
                ))
            }
            Packet::SubAck(suback) if !server => {
                for code in suback.reason_codes.iter().filter(|code| code.is_error()) {
                    tracing::warn!(client_id = %self.client_id(), ?code, "bridge: the remote refused a subscription");
                }
            }
            Packet::UnsubAck(_) | Packet::PingResp if !server => {}
            _ if server => {
                return Err(Exit::Violation(
                    ReasonCode::ProtocolError,
                    "a packet only a server may send",
                ))
            }
            _ => {
                return Err(Exit::Violation(
                    ReasonCode::ProtocolError,
                    "a packet a server may not send here",
                ))
            }
        }
        Ok(())
    }

    /// Ends the outbound flow of `packet_id` if it is a `qos` delivery in
    /// `phase`; the store forgets it.
    pub(super) fn complete(&mut self, core: &Core, packet_id: PacketId, qos: QoS, phase: Phase) {
        let Some(done) = self.state.complete(packet_id, qos, phase) else {
            return;
        };
        if let Some(store) = self.store(core) {
            store.completed(self.client_id(), done.delivery.message.id);
        }
    }

    /// PUBREC for a message this side sent at QoS 2: answered with PUBREL
    /// [MQTT-4.3.3-1] (v3.1.1); only the first one changes the store.
    fn pubrec(&mut self, core: &Core, ack: Ack) {
        let known = self
            .state
            .inflight_mut(ack.packet_id)
            .filter(|inflight| inflight.delivery.qos == QoS::ExactlyOnce);
        match known {
            Some(inflight) if !ack.reason_code.is_error() => {
                let first = inflight.phase == Phase::Published;
                inflight.phase = Phase::Released;
                let delivery = inflight.delivery.clone();
                let store = self.store(core).filter(|_| first);
                if let Some(store) = store {
                    store.sent(self.client_id(), &delivery, ack.packet_id, true);
                }
                let ticket = ticket(core, store.is_some());
                self.send_after(core, Packet::PubRel(Ack::new(ack.packet_id)), ticket);
            }
            // 4.3.3 (v5.0): a PUBREC with an error code ends the flow.
            Some(_) => self.complete(core, ack.packet_id, QoS::ExactlyOnce, Phase::Published),
            None => {
                let pubrel = self.ack_with(ack.packet_id, ReasonCode::PacketIdentifierNotFound);
                self.send(Packet::PubRel(pubrel));
            }
        }
    }

    /// PUBREL for a QoS 2 message the peer sent: the id is released and
    /// PUBCOMP answers [MQTT-4.3.3-2] (v3.1.1).
    fn pubrel(&mut self, core: &Core, ack: Ack) {
        let known = self
            .state
            .awaiting_pubrel_mut()
            .remove(&ack.packet_id.get());
        let reason_code = if known {
            ReasonCode::Success
        } else {
            ReasonCode::PacketIdentifierNotFound
        };
        // Once PUBCOMP is sent the peer may use the id again: the store
        // must not hold it as awaited after a crash.
        let store = self.store(core).filter(|_| known);
        if let Some(store) = store {
            store.pubrel(self.client_id(), ack.packet_id, false);
        }
        let ticket = ticket(core, store.is_some());
        let pubcomp = self.ack_with(ack.packet_id, reason_code);
        self.send_after(core, Packet::PubComp(pubcomp), ticket);
    }

    /// An acknowledgement: with `reason_code` at 5.0 (and, for an error, a
    /// Reason String unless the peer asked for none [MQTT-3.1.2-29]
    /// (v5.0)); at 3.x, which has no codes, a plain one.
    pub(super) fn ack_with(&self, packet_id: PacketId, reason_code: ReasonCode) -> Ack {
        let mut ack = Ack::new(packet_id);
        if self.outbox.version().is_v5() {
            ack.reason_code = reason_code;
            if self.limits.problem_information {
                ack.properties.reason_string = match reason_code {
                    ReasonCode::PacketIdentifierNotFound => Some("packet identifier not found"),
                    ReasonCode::PayloadFormatInvalid => {
                        Some("payload marked as UTF-8 (Payload Format Indicator 1) is not UTF-8")
                    }
                    _ => None,
                }
                .map(str::to_owned);
            }
        }
        ack
    }

    /// A PUBLISH from the peer: checked, routed (by a bridge under its
    /// local topic, as if the bridge's session had published it, so its
    /// own outward subscriptions, with No Local, do not send it back),
    /// then acknowledged, once the store has it when durability asks.
    fn receive(&mut self, context: &Context, publish: Publish, now: Instant) -> Result<(), Exit> {
        let core = &context.core;
        let Publish {
            qos,
            retain,
            packet_id,
            payload,
            properties,
            topic,
            ..
        } = publish;
        core.metrics.received.record(qos as u8, payload.len());
        if let Role::Client(client) = &self.role {
            client.stats.received.increment();
        }
        if !self.is_bridge() && !properties.subscription_identifiers.is_empty() {
            // [MQTT-3.3.4-6] (v5.0) binds the client; receiving one anyway is a
            // Protocol Error (3.3.2.3.8).
            return Err(Exit::Violation(
                ReasonCode::ProtocolError,
                "3.3.2.3.8: a PUBLISH from a client carries a Subscription Identifier",
            ));
        }
        let topic = self.resolve_alias(core, topic, &properties)?;
        // A QoS 2 PUBLISH whose id awaits PUBREL is a re-send: acknowledged,
        // not delivered again [MQTT-4.3.3-2] (v3.1.1).
        let duplicate = qos == QoS::ExactlyOnce
            && packet_id.is_some_and(|id| self.state.awaiting_pubrel().contains(&id.get()));
        let (topic, mut reason_code) = match &self.role {
            Role::Server(_) => self.admit(
                context,
                &topic,
                &payload,
                &properties,
                qos,
                retain,
                duplicate,
                now,
            )?,
            // What no inward rule takes is acknowledged and dropped.
            Role::Client(client) => (client.topics.incoming(topic.as_str()), ReasonCode::Success),
        };
        let mut changed_store = false;
        if let (Some(topic), false) = (topic, duplicate) {
            let message = Arc::new(Message::new(
                topic,
                payload,
                qos,
                retain && core.config().retain_available,
                PublishProperties {
                    topic_alias: None,
                    subscription_identifiers: Vec::new(),
                    ..properties
                },
                Some(Arc::clone(self.client_id())),
            ));
            let routed = core.router.publish(message);
            changed_store = routed.journaled;
            if let Some(inbox) = routed.congested {
                self.congestion = Some(Box::new(super::Congestion { inbox, since: None }));
            }
            if routed.matched == 0 && !self.is_bridge() {
                reason_code = ReasonCode::NoMatchingSubscribers;
            }
        }
        self.acknowledge(core, qos, packet_id, reason_code, changed_store);
        Ok(())
    }

    /// The topic of a PUBLISH that names it by Topic Alias. The alias
    /// table is made only for a peer that uses aliases (a topic-less
    /// PUBLISH without one does not decode); a bridge announced none.
    fn resolve_alias(
        &mut self,
        core: &Core,
        topic: TopicName,
        properties: &PublishProperties,
    ) -> Result<TopicName, Exit> {
        if properties.topic_alias.is_none() {
            return Ok(topic);
        }
        let maximum = if self.is_bridge() {
            0
        } else {
            core.config().topic_alias_maximum
        };
        self.aliases
            .get_or_insert_with(Default::default)
            .resolve(topic, properties.topic_alias, maximum)
            .map_err(|error| Exit::Violation(error.reason_code, error.rule))
    }

    /// A client's PUBLISH against the protocol's rules, the broker's
    /// limits and the client's permissions: the topic to route it to (none:
    /// acknowledged and dropped) and the reason code to acknowledge with,
    /// or the violation that ends the connection.
    #[allow(clippy::too_many_arguments)]
    fn admit(
        &mut self,
        context: &Context,
        topic: &TopicName,
        payload: &[u8],
        properties: &PublishProperties,
        qos: QoS,
        retain: bool,
        duplicate: bool,
        now: Instant,
    ) -> Result<(Option<TopicName>, ReasonCode), Exit> {
        let core = &context.core;
        let config = &core.config();
        let v5 = self.outbox.version().is_v5();
        check_bounds(
            topic.as_str(),
            config.max_topic_length,
            config.max_topic_levels,
        )
        .map_err(|rule| Exit::Violation(ReasonCode::TopicNameInvalid, rule))?;
        self.charge_rate(core, payload.len(), now)?;
        if v5 && qos > config.max_qos() {
            return Err(Exit::Violation(
                ReasonCode::QoSNotSupported,
                "[MQTT-3.2.2-11] PUBLISH above the Maximum QoS in CONNACK",
            ));
        }
        if v5 && retain && !config.retain_available {
            return Err(Exit::Violation(
                ReasonCode::RetainNotSupported,
                "[MQTT-3.2.2-14] RETAIN set when CONNACK said Retain Available 0",
            ));
        }
        if v5
            && qos == QoS::ExactlyOnce
            && !duplicate
            && self.state.awaiting_pubrel().len() >= usize::from(config.receive_maximum)
        {
            return Err(Exit::Violation(
                ReasonCode::ReceiveMaximumExceeded,
                "[MQTT-3.3.4-9] more unacknowledged QoS 2 PUBLISH than the Receive Maximum",
            ));
        }
        if !self.may(context, topic.as_str(), Action::Write) {
            // Not this client's to publish: 0x87 at 5.0; a 3.1.1 client,
            // which has no way to hear it, gets its usual acknowledgement and
            // the message is dropped, as Mosquitto does.
            core.metrics.acl_denied.increment();
            tracing::info!(client_id = %self.client_id(), %topic, "ACL: publish denied");
            return Ok((None, ReasonCode::NotAuthorized));
        }
        if v5
            && config.validate_utf8_payload
            && properties.payload_format_indicator == Some(true)
            && std::str::from_utf8(payload).is_err()
        {
            // 3.3.2.3.2 (v5.0): a payload said to be UTF-8 that is not.
            core.metrics
                .protocol_error(ReasonCode::PayloadFormatInvalid as u8);
            tracing::info!(client_id = %self.client_id(), %topic, "payload marked UTF-8 is not UTF-8: refused");
            return Ok((None, ReasonCode::PayloadFormatInvalid));
        }
        // The broker's own tree: acknowledged, not delivered.
        let routed = (!is_broker_topic(topic.as_str())).then(|| topic.clone());
        Ok((routed, ReasonCode::Success))
    }

    /// Charges a client's PUBLISH to its rate limit: over it, an MQTT 5
    /// client is closed (0x97); a 3.x one has this PUBLISH taken and its
    /// input waits until it is back within its rate.
    fn charge_rate(&mut self, core: &Core, payload: usize, now: Instant) -> Result<(), Exit> {
        let v5 = self.outbox.version().is_v5();
        let Role::Server(server) = &mut self.role else {
            return Ok(());
        };
        let Some(throttle) = server.throttle_mut() else {
            return Ok(());
        };
        if let Some(wait) = throttle.charge(payload, now) {
            core.metrics.publish_rate_exceeded.increment();
            if v5 {
                return Err(Exit::Violation(
                    ReasonCode::QuotaExceeded,
                    "over max_publish_rate or max_publish_bytes_rate",
                ));
            }
            throttle.resume_at = Some(now + wait);
        }
        Ok(())
    }

    /// PUBACK or PUBREC for a received PUBLISH; with durability "sync",
    /// once what it acknowledges is on disk.
    fn acknowledge(
        &mut self,
        core: &Core,
        qos: QoS,
        packet_id: Option<PacketId>,
        reason_code: ReasonCode,
        mut changed_store: bool,
    ) {
        match (qos, packet_id) {
            (QoS::AtLeastOnce, Some(id)) => {
                let puback = self.ack_with(id, reason_code);
                self.send_after(core, Packet::PubAck(puback), ticket(core, changed_store));
            }
            (QoS::ExactlyOnce, Some(id)) => {
                if !reason_code.is_error() && self.state.awaiting_pubrel_mut().insert(id.get()) {
                    if let Some(store) = self.store(core) {
                        store.pubrel(self.client_id(), id, true);
                        changed_store = true;
                    }
                }
                let pubrec = self.ack_with(id, reason_code);
                self.send_after(core, Packet::PubRec(pubrec), ticket(core, changed_store));
            }
            _ => {}
        }
    }

    /// DISCONNECT from the peer. From a client: any reason but 0x00 sends
    /// the will; a Session Expiry Interval replaces the one from CONNECT,
    /// but not 0 by another value (3.14.2.2.2, a Protocol Error).
    fn disconnected(&mut self, core: &Core, disconnect: Disconnect) -> Exit {
        if let (Some(expiry), false) = (
            disconnect.properties.session_expiry_interval,
            self.is_bridge(),
        ) {
            if self.session_expiry == 0 && expiry != 0 {
                return Exit::Violation(
                    ReasonCode::ProtocolError,
                    "3.14.2.2.2: DISCONNECT sets a session expiry after CONNECT set 0",
                );
            }
            self.session_expiry = expiry.min(core.config().max_session_expiry_interval);
        }
        Exit::Disconnect(disconnect.reason_code)
    }

    /// Re-authentication (4.12.1): AUTH 0x19 with the method the client
    /// connected with starts a new exchange, AUTH 0x18 continues it; the
    /// broker answers AUTH 0x18 while it needs more, AUTH 0x00 on success,
    /// and closes the connection on failure [MQTT-4.12.1-2] (v5.0).
    fn reauthenticate(&mut self, auth: Auth) -> Result<(), Exit> {
        let client_id = Arc::clone(self.client_id());
        let state = match &mut self.role {
            Role::Server(server) => server
                .extras
                .as_mut()
                .and_then(|extras| extras.auth.as_mut()),
            Role::Client(_) => None,
        };
        let Some(state) = state else {
            return Err(Exit::Violation(
                ReasonCode::ProtocolError,
                "[MQTT-4.12.0-7] AUTH from a client that did not use enhanced authentication",
            ));
        };
        let method = state.method.method().to_owned();
        if auth.properties.authentication_method.as_deref() != Some(method.as_str()) {
            return Err(Exit::Violation(
                ReasonCode::ProtocolError,
                "[MQTT-4.12.1-1] re-authentication with another method",
            ));
        }
        let exchange = match (auth.reason_code, state.exchange.as_mut()) {
            (ReasonCode::ReAuthenticate, _) => state
                .exchange
                .insert(state.method.start(&client_id, state.username.as_deref())),
            (ReasonCode::ContinueAuthentication, Some(exchange)) => exchange,
            _ => {
                return Err(Exit::Violation(
                    ReasonCode::ProtocolError,
                    "4.12.1: AUTH that neither starts nor continues a re-authentication",
                ))
            }
        };
        let (reason_code, data) =
            match exchange.step(auth.properties.authentication_data.as_deref()) {
                AuthStep::Continue(data) => (ReasonCode::ContinueAuthentication, data),
                AuthStep::Success(data) => {
                    state.exchange = None;
                    (ReasonCode::Success, data)
                }
                AuthStep::Failure(reason_code) => {
                    return Err(Exit::Violation(reason_code, "re-authentication failed"));
                }
            };
        self.send(Packet::Auth(Auth {
            reason_code,
            properties: AuthProperties {
                authentication_method: Some(method),
                authentication_data: data,
                ..AuthProperties::default()
            },
        }));
        Ok(())
    }
}
