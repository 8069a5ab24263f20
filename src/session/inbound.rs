//! What the client sends once connected: PUBLISH (topic aliases, limits,
//! QoS 1/2 receiving side), the acknowledgements of what it was sent,
//! SUBSCRIBE and UNSUBSCRIBE with their options and reason codes, and
//! DISCONNECT.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use super::driver::Exit;
use super::retained::Backlog;
use super::state::Phase;
use super::{Session, Shared};
use crate::auth::acl::Action;
use crate::auth::AuthStep;
use crate::config::Config;
use crate::protocol::topic::{check_bounds, is_broker_topic};
use crate::protocol::{
    Ack, Auth, AuthProperties, Disconnect, Packet, Publish, PublishProperties, QoS, ReasonCode,
    RetainHandling, SubAck, Subscribe, SubscriptionOptions, TopicFilter, UnsubAck, Unsubscribe,
};
use crate::router::message::Message;
use crate::router::{shared as shared_groups, Subscriber};

/// Handles one packet from the client.
pub fn handle<R, W>(
    shared: &Shared,
    session: &mut Session<R, W>,
    packet: Packet,
) -> Result<(), Exit>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    match packet {
        Packet::Publish(publish) => handle_publish(shared, session, publish)?,
        Packet::PubAck(ack) => {
            complete(
                shared,
                session,
                ack.packet_id,
                QoS::AtLeastOnce,
                Phase::Published,
            );
        }
        Packet::PubRec(ack) => {
            let known = session
                .state
                .inflight_mut(ack.packet_id)
                .filter(|inflight| inflight.delivery.qos == QoS::ExactlyOnce);
            match known {
                // [MQTT-4.3.3-1] (v3.1.1): PUBREC is answered with PUBREL.
                Some(inflight) if !ack.reason_code.is_error() => {
                    let first = inflight.phase == Phase::Published;
                    inflight.phase = Phase::Released;
                    let delivery = inflight.delivery.clone();
                    let mut changed = false;
                    if let Some(store) = super::durable::store(shared, session).filter(|_| first) {
                        store.sent(&session.client_id, &delivery, ack.packet_id, true);
                        changed = true;
                    }
                    let ticket = super::durable::ticket(shared, changed);
                    let pubrel = Packet::PubRel(Ack::new(ack.packet_id));
                    super::durable::send_after(shared, session, pubrel, ticket);
                }
                // 4.3.3 (v5.0): a PUBREC with an error code ends the flow.
                Some(_) => {
                    complete(
                        shared,
                        session,
                        ack.packet_id,
                        QoS::ExactlyOnce,
                        Phase::Published,
                    );
                }
                None => {
                    let pubrel =
                        ack_with(session, ack.packet_id, ReasonCode::PacketIdentifierNotFound);
                    session.send(Packet::PubRel(pubrel));
                }
            }
        }
        Packet::PubComp(ack) => {
            complete(
                shared,
                session,
                ack.packet_id,
                QoS::ExactlyOnce,
                Phase::Released,
            );
        }
        Packet::PubRel(ack) => {
            // [MQTT-4.3.3-2] (v3.1.1): release the id, answer PUBCOMP.
            let known = session.state.awaiting_pubrel.remove(&ack.packet_id.get());
            let reason_code = if known {
                ReasonCode::Success
            } else {
                ReasonCode::PacketIdentifierNotFound
            };
            // Once PUBCOMP is sent the client may use the id again: the
            // store must not hold it as awaited after a crash.
            let store = super::durable::store(shared, session).filter(|_| known);
            if let Some(store) = store {
                store.pubrel(&session.client_id, ack.packet_id, false);
            }
            let ticket = super::durable::ticket(shared, store.is_some());
            let pubcomp = ack_with(session, ack.packet_id, reason_code);
            super::durable::send_after(shared, session, Packet::PubComp(pubcomp), ticket);
        }
        Packet::Subscribe(subscribe) => handle_subscribe(shared, session, subscribe)?,
        Packet::Unsubscribe(unsubscribe) => handle_unsubscribe(shared, session, unsubscribe),
        Packet::PingReq => {
            // What was routed to this client before its PINGREQ goes out
            // before the PINGRESP, so a PINGREQ is a barrier for it.
            super::outbound::pull_deliveries(shared, session);
            session.send(Packet::PingResp);
        }
        Packet::Disconnect(disconnect) => {
            return Err(handle_disconnect(shared, session, disconnect))
        }
        Packet::Connect(_) => {
            return Err(Exit::Violation(
                ReasonCode::ProtocolError,
                "[MQTT-3.1.0-2] a second CONNECT on one connection",
            ))
        }
        Packet::Auth(auth) => reauthenticate(session, auth)?,
        Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
            return Err(Exit::Violation(
                ReasonCode::ProtocolError,
                "a packet only a server may send",
            ));
        }
    }
    Ok(())
}

/// Ends the outbound flow of `packet_id` if it is a `qos` delivery in
/// `phase`; the store forgets it.
fn complete<R, W>(
    shared: &Shared,
    session: &mut Session<R, W>,
    packet_id: crate::protocol::PacketId,
    qos: QoS,
    phase: Phase,
) {
    let Some(done) = session.state.complete(packet_id, qos, phase) else {
        return;
    };
    if let Some(store) = super::durable::store(shared, session) {
        store.completed(&session.client_id, done.delivery.message.id);
    }
}

/// Re-authentication (4.12.1): AUTH 0x19 with the method the client
/// connected with starts a new exchange, AUTH 0x18 continues it; the
/// broker answers AUTH 0x18 while it needs more, AUTH 0x00 on success, and
/// closes the connection on failure [MQTT-4.12.1-2] (v5.0).
fn reauthenticate<R, W>(session: &mut Session<R, W>, auth: Auth) -> Result<(), Exit>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let client_id = Arc::clone(&session.client_id);
    let Some(state) = session.auth.as_mut() else {
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
    let (reason_code, data) = match exchange.step(auth.properties.authentication_data.as_deref()) {
        AuthStep::Continue(data) => (ReasonCode::ContinueAuthentication, data),
        AuthStep::Success(data) => {
            state.exchange = None;
            (ReasonCode::Success, data)
        }
        AuthStep::Failure(reason_code) => {
            return Err(Exit::Violation(reason_code, "re-authentication failed"));
        }
    };
    session.send(Packet::Auth(Auth {
        reason_code,
        properties: AuthProperties {
            authentication_method: Some(method),
            authentication_data: data,
            ..AuthProperties::default()
        },
    }));
    Ok(())
}

/// An acknowledgement: with `reason_code` at 5.0 (and, for an error, a
/// Reason String unless the client asked for none [MQTT-3.1.2-29]
/// (v5.0)); at 3.x, which has no codes, a plain one.
fn ack_with<R, W>(
    session: &Session<R, W>,
    packet_id: crate::protocol::PacketId,
    reason_code: ReasonCode,
) -> Ack {
    let mut ack = Ack::new(packet_id);
    if session.connection.version.is_v5() {
        ack.reason_code = reason_code;
        if session.limits.problem_information {
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

fn handle_publish<R, W>(
    shared: &Shared,
    session: &mut Session<R, W>,
    publish: Publish,
) -> Result<(), Exit>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let config = &shared.config;
    shared.metrics.messages_received.increment();
    let v5 = session.connection.version.is_v5();
    let Publish {
        qos,
        retain,
        packet_id,
        payload,
        properties,
        topic,
        ..
    } = publish;
    if !properties.subscription_identifiers.is_empty() {
        // [MQTT-3.3.4-6] (v5.0) binds the client; receiving one anyway is a
        // Protocol Error (3.3.2.3.8).
        return Err(Exit::Violation(
            ReasonCode::ProtocolError,
            "3.3.2.3.8: a PUBLISH from a client carries a Subscription Identifier",
        ));
    }
    // The alias table is made only for a client that uses aliases (a
    // topic-less PUBLISH without one does not decode).
    let topic = if properties.topic_alias.is_some() {
        session
            .aliases
            .get_or_insert_with(Default::default)
            .resolve(topic, properties.topic_alias, config.topic_alias_maximum)
            .map_err(|error| Exit::Violation(error.reason_code, error.rule))?
    } else {
        topic
    };
    check_bounds(
        topic.as_str(),
        config.max_topic_length,
        config.max_topic_levels,
    )
    .map_err(|rule| Exit::Violation(ReasonCode::TopicNameInvalid, rule))?;
    if let Some(throttle) = session.throttle.as_mut() {
        let now = tokio::time::Instant::now();
        if let Some(wait) = throttle.charge(payload.len(), now) {
            shared.metrics.publish_rate_exceeded.increment();
            if v5 {
                return Err(Exit::Violation(
                    ReasonCode::QuotaExceeded,
                    "over max_publish_rate or max_publish_bytes_rate",
                ));
            }
            // This one is taken; the client's input waits until it is
            // back within its rate.
            throttle.resume_at = Some(now + wait);
        }
    }
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
    // A QoS 2 PUBLISH whose id awaits PUBREL is a re-send: acknowledged,
    // not delivered again [MQTT-4.3.3-2] (v3.1.1).
    let duplicate = qos == QoS::ExactlyOnce
        && packet_id.is_some_and(|id| session.state.awaiting_pubrel.contains(&id.get()));
    if v5
        && qos == QoS::ExactlyOnce
        && !duplicate
        && session.state.awaiting_pubrel.len() >= usize::from(config.receive_maximum)
    {
        return Err(Exit::Violation(
            ReasonCode::ReceiveMaximumExceeded,
            "[MQTT-3.3.4-9] more unacknowledged QoS 2 PUBLISH than the Receive Maximum",
        ));
    }
    let mut reason_code = ReasonCode::Success;
    let mut changed_store = false;
    if !session.may(shared, topic.as_str(), Action::Write) {
        // Not this client's to publish: 0x87 at 5.0; a 3.1.1 client,
        // which has no way to hear it, gets its usual acknowledgement and
        // the message is dropped, as Mosquitto does.
        shared.metrics.acl_denied.increment();
        tracing::info!(client_id = %session.client_id, %topic, "ACL: publish denied");
        reason_code = ReasonCode::NotAuthorized;
    } else if v5
        && config.validate_utf8_payload
        && properties.payload_format_indicator == Some(true)
        && std::str::from_utf8(&payload).is_err()
    {
        // 3.3.2.3.2 (v5.0): a payload said to be UTF-8 that is not.
        reason_code = ReasonCode::PayloadFormatInvalid;
        shared.metrics.protocol_errors.increment();
        tracing::info!(client_id = %session.client_id, %topic, "payload marked UTF-8 is not UTF-8: refused");
    } else if !duplicate && !is_broker_topic(topic.as_str()) {
        let message = Arc::new(Message::new(
            topic,
            payload,
            qos,
            retain && config.retain_available,
            PublishProperties {
                topic_alias: None,
                subscription_identifiers: Vec::new(),
                ..properties
            },
            Some(Arc::clone(&session.client_id)),
        ));
        let routed = shared.router.publish(message);
        changed_store = routed.journaled;
        if routed.congested.is_some() {
            session.congested = routed.congested;
        }
        if routed.matched == 0 {
            reason_code = ReasonCode::NoMatchingSubscribers;
        }
    }
    // With durability "sync", the acknowledgement waits until what it
    // acknowledges is on disk.
    match (qos, packet_id) {
        (QoS::AtLeastOnce, Some(id)) => {
            let puback = ack_with(session, id, reason_code);
            let ticket = super::durable::ticket(shared, changed_store);
            super::durable::send_after(shared, session, Packet::PubAck(puback), ticket);
        }
        (QoS::ExactlyOnce, Some(id)) => {
            if !reason_code.is_error() && session.state.awaiting_pubrel.insert(id.get()) {
                if let Some(store) = super::durable::store(shared, session) {
                    store.pubrel(&session.client_id, id, true);
                    changed_store = true;
                }
            }
            let pubrec = ack_with(session, id, reason_code);
            let ticket = super::durable::ticket(shared, changed_store);
            super::durable::send_after(shared, session, Packet::PubRec(pubrec), ticket);
        }
        _ => {}
    }
    Ok(())
}

/// What one filter of a SUBSCRIBE gets: a refusal code, or the options
/// granted.
fn admit(
    config: &Config,
    client_id: &str,
    filter: &TopicFilter,
    options: SubscriptionOptions,
    has_identifier: bool,
) -> Result<SubscriptionOptions, Result<ReasonCode, Exit>> {
    let shared_group = shared_groups::parse(filter.as_str()).map_err(|rule| {
        tracing::info!(client_id, %filter, rule, "subscription refused");
        Ok(ReasonCode::TopicFilterInvalid)
    })?;
    if let Err(rule) = check_bounds(
        filter.as_str(),
        config.max_topic_length,
        config.max_topic_levels,
    ) {
        tracing::info!(client_id, %filter, rule, "subscription refused");
        return Err(Ok(ReasonCode::TopicFilterInvalid));
    }
    if shared_group.is_some() {
        if !config.shared_subscriptions {
            return Err(Ok(ReasonCode::SharedSubscriptionsNotSupported));
        }
        if options.no_local {
            return Err(Err(Exit::Violation(
                ReasonCode::ProtocolError,
                "[MQTT-3.8.3-4] No Local on a shared subscription",
            )));
        }
    }
    if !config.wildcard_subscriptions && filter.has_wildcard() {
        return Err(Ok(ReasonCode::WildcardSubscriptionsNotSupported));
    }
    if has_identifier && !config.subscription_identifiers {
        return Err(Ok(ReasonCode::SubscriptionIdentifiersNotSupported));
    }
    Ok(SubscriptionOptions {
        qos: options.qos.min(config.max_qos()),
        ..options
    })
}

/// A marked bridge's subscriptions are No Local: it is not sent back what
/// it published (the loop protection Mosquitto gives its bridges at 3.1.1,
/// which has no No Local of its own).
fn for_bridge(options: SubscriptionOptions, filter: &TopicFilter) -> SubscriptionOptions {
    let shared = matches!(shared_groups::parse(filter.as_str()), Ok(Some(_)));
    SubscriptionOptions {
        no_local: options.no_local || !shared,
        ..options
    }
}

fn granted_code(qos: QoS) -> ReasonCode {
    match qos {
        QoS::AtMostOnce => ReasonCode::GRANTED_QOS_0,
        QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
        QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
    }
}

fn handle_subscribe<R, W>(
    shared: &Shared,
    session: &mut Session<R, W>,
    subscribe: Subscribe,
) -> Result<(), Exit>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let identifier = subscribe.properties.subscription_identifier;
    let mut changed_store = false;
    let mut reason_codes = Vec::with_capacity(subscribe.filters.len());
    // A filter repeated within one SUBSCRIBE: the last one wins
    // [MQTT-3.8.4-4] (v3.1.1), and its retained messages are sent once.
    let last_index: HashMap<&str, usize> = subscribe
        .filters
        .iter()
        .enumerate()
        .map(|(index, (filter, _))| (filter.as_str(), index))
        .collect();
    let repeated: Vec<bool> = subscribe
        .filters
        .iter()
        .enumerate()
        .map(|(index, (filter, _))| last_index.get(filter.as_str()) != Some(&index))
        .collect();
    drop(last_index);
    for ((filter, options), repeated) in subscribe.filters.into_iter().zip(repeated) {
        let options = match admit(
            &shared.config,
            &session.client_id,
            &filter,
            options,
            identifier.is_some(),
        ) {
            Ok(options) if session.limits.bridge => for_bridge(options, &filter),
            Ok(options) => options,
            Err(Ok(refused)) => {
                reason_codes.push(refused);
                continue;
            }
            Err(Err(exit)) => return Err(exit),
        };
        let inner = match shared_groups::parse(filter.as_str()) {
            Ok(Some((_, inner))) => inner,
            _ => filter.as_str(),
        };
        if let Some(acl) = shared.acl() {
            if !acl.allows_subscription(session.acl_client(), inner) {
                shared.metrics.acl_denied.increment();
                tracing::info!(client_id = %session.client_id, %filter, "ACL: subscription denied");
                reason_codes.push(ReasonCode::NotAuthorized);
                continue;
            }
        }
        if !repeated
            && session.state.subscriptions.get(&filter).is_none()
            && session.state.subscriptions.len() >= shared.config.max_subscriptions_per_client
        {
            shared.metrics.subscriptions_refused.increment();
            tracing::info!(
                client_id = %session.client_id,
                %filter,
                "max_subscriptions_per_client reached: subscription refused"
            );
            reason_codes.push(ReasonCode::QuotaExceeded);
            continue;
        }
        reason_codes.push(granted_code(options.qos));
        if repeated {
            continue;
        }
        let existed = shared.router.subscribe(
            filter.as_str(),
            Subscriber {
                inbox: Arc::clone(&session.inbox),
                options,
                identifier,
                shared: None,
            },
        );
        // Retained messages: never on a shared subscription [MQTT-4.8.2-?]
        // (section 4.8.2, v5.0); otherwise as Retain Handling says
        // [MQTT-3.3.1-9] [MQTT-3.3.1-10] [MQTT-3.3.1-11] (v5.0). A repeated
        // filter replaces the subscription and, with handling 0, its
        // retained messages are sent again [MQTT-3.8.4-3] (v3.1.1).
        let send_retained = match options.retain_handling {
            RetainHandling::SendOnSubscribe => true,
            RetainHandling::SendIfNew => !existed,
            RetainHandling::DoNotSend => false,
        };
        let backlogs = session.state.retained.get_or_insert_with(Default::default);
        if send_retained && shared_groups::parse(filter.as_str()) == Ok(None) {
            // Streamed behind the SUBACK as the client takes them.
            backlogs.add(Backlog::new(filter.clone(), options.qos, identifier));
        } else {
            // A repeated subscription that sends none stops the old one's.
            backlogs.remove(&filter);
        }
        if backlogs.is_empty() {
            session.state.retained = None;
        }
        if let Some(store) = super::durable::store(shared, session) {
            store.subscribed(&session.client_id, &filter, options, identifier);
            changed_store = true;
        }
        session
            .state
            .subscriptions
            .insert(filter, options, identifier);
    }
    // [MQTT-3.8.4-1] [MQTT-3.8.4-2] (v3.1.1): SUBACK with the same id, one
    // return code per filter, before any retained message.
    let suback = SubAck {
        packet_id: subscribe.packet_id,
        reason_codes,
        properties: Default::default(),
    };
    let ticket = super::durable::ticket(shared, changed_store);
    super::durable::send_after(shared, session, Packet::SubAck(suback), ticket);
    Ok(())
}

fn handle_unsubscribe<R, W>(shared: &Shared, session: &mut Session<R, W>, unsubscribe: Unsubscribe)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut reason_codes = Vec::with_capacity(unsubscribe.filters.len());
    let mut changed_store = false;
    for filter in &unsubscribe.filters {
        let existed = shared
            .router
            .unsubscribe(filter.as_str(), &session.client_id);
        if let Some(backlogs) = session.state.retained.as_mut() {
            backlogs.remove(filter);
            if backlogs.is_empty() {
                session.state.retained = None;
            }
        }
        if session.state.subscriptions.remove(filter) {
            if let Some(store) = super::durable::store(shared, session) {
                store.unsubscribed(&session.client_id, filter);
                changed_store = true;
            }
        }
        reason_codes.push(if existed {
            ReasonCode::Success
        } else {
            ReasonCode::NoSubscriptionExisted
        });
    }
    // [MQTT-3.10.4-4] (v3.1.1): UNSUBACK even when nothing was subscribed.
    let unsuback = UnsubAck {
        packet_id: unsubscribe.packet_id,
        reason_codes,
        properties: Default::default(),
    };
    let ticket = super::durable::ticket(shared, changed_store);
    super::durable::send_after(shared, session, Packet::UnsubAck(unsuback), ticket);
}

/// DISCONNECT from the client: any reason but 0x00 sends the will; a Session Expiry
/// Interval replaces the one from CONNECT, but not 0 by another value
/// (3.14.2.2.2, a Protocol Error).
fn handle_disconnect<R, W>(
    shared: &Shared,
    session: &mut Session<R, W>,
    disconnect: Disconnect,
) -> Exit
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if let Some(expiry) = disconnect.properties.session_expiry_interval {
        if session.session_expiry == 0 && expiry != 0 {
            return Exit::Violation(
                ReasonCode::ProtocolError,
                "3.14.2.2.2: DISCONNECT sets a session expiry after CONNECT set 0",
            );
        }
        session.session_expiry = expiry.min(shared.config.max_session_expiry_interval);
    }
    // Only 0x00 deletes the will [MQTT-3.14.4-3] (v5.0); 0x04 asks for it,
    // and an error code ends the connection as abnormally as a lost one.
    if disconnect.reason_code == ReasonCode::Success {
        Exit::Disconnect
    } else {
        Exit::DisconnectWithWill
    }
}
