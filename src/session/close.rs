//! When a connection ends: the log line, a DISCONNECT with the reason for
//! an MQTT 5 client, the will (now, or after its delay), shared
//! subscription messages handed to other members, and the session parked
//! until it expires or dropped.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::driver::Exit;
use super::manager::Parked;
use super::state::Phase;
use super::{Session, Shared};
use crate::auth::acl::Action;
use crate::connection::Connection;
use crate::protocol::topic::is_broker_topic;
use crate::protocol::{
    Disconnect, DisconnectProperties, LastWill, Packet, PublishProperties, QoS, ReasonCode,
};
use crate::router::message::Message;

/// After the loop: log, tell an MQTT 5 client why, publish or schedule
/// the will, park or drop the session; the connection is handed back to
/// be closed.
pub async fn finish<R, W>(
    shared: &Shared,
    mut session: Box<Session<R, W>>,
    exit: Exit,
) -> Connection<R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    log_exit(shared, &session, &exit);
    if session.connection.version.is_v5() {
        if let Some(reason_code) = exit.disconnect_reason() {
            session.send(Packet::Disconnect(server_disconnect(
                shared,
                &exit,
                reason_code,
            )));
        }
    }
    let now = Instant::now();
    let mut delayed_will = None;
    if exit.publishes_will() {
        let will = session.will.take().filter(|will| {
            let allowed = session.may(shared, will.topic.as_str(), Action::Write);
            if !allowed {
                shared.metrics.acl_denied.increment();
                tracing::info!(topic = %will.topic, "ACL: will not published");
            }
            allowed
        });
        if let Some(will) = will {
            let delay = will.properties.will_delay_interval.unwrap_or(0);
            // The will waits for its delay unless the session ends first
            // [MQTT-3.1.2-8] (v5.0): at once without a session to outlive
            // the connection, or when the broker stops.
            // A session the store keeps outlives the broker, and its
            // will keeps waiting across the restart.
            let ends_here = matches!(exit, Exit::Shutdown) && shared.store.is_none();
            if delay == 0 || session.session_expiry == 0 || ends_here {
                publish_will(shared, *will, &session.client_id);
            } else {
                let wait = delay.min(session.session_expiry);
                delayed_will = Some((will, now + Duration::from_secs(u64::from(wait))));
            }
        }
    }
    // Offline first, and a session that ends unsubscribed first: nothing
    // routed from here on is stranded in this inbox while the connection
    // closes; then what it holds of shared groups goes to other members.
    session.inbox.set_online(false);
    if session.session_expiry == 0 {
        // [MQTT-3.1.2-6] (v3.1.1): a clean session ends with its connection.
        for filter in session.state.subscriptions.keys() {
            shared
                .router
                .unsubscribe(filter.as_str(), &session.client_id);
        }
    }
    hand_over_shared(shared, &mut session);
    shared.metrics.clients_connected.decrement();
    let store = super::durable::store(shared, &session).cloned();
    if session.session_expiry == 0 {
        let Session {
            connection,
            client_id,
            lease,
            receiver,
            ..
        } = *session;
        // The inbox closes before the store forgets the session, so
        // nothing is journaled for it afterwards.
        drop(receiver);
        if let Some(store) = store {
            store.session_removed(&client_id);
        }
        shared.sessions.release(&client_id, lease, None);
        return connection;
    }
    shared.metrics.clients_disconnected.increment();
    let expires_at = (session.session_expiry != u32::MAX)
        .then(|| now + Duration::from_secs(u64::from(session.session_expiry)));
    if let Some(store) = store {
        super::durable::record_inflight(&store, &session);
        let will = delayed_will.as_ref().map(|(will, at)| {
            let wait = at.saturating_duration_since(now);
            (&**will, std::time::SystemTime::now() + wait)
        });
        store.session_closed(&session.client_id, session.session_expiry, will);
    }
    let (will, will_at) = delayed_will.unzip();
    let Session {
        connection,
        client_id,
        lease,
        state,
        inbox,
        receiver,
        ..
    } = *session;
    let parked = Parked {
        state,
        inbox,
        receiver,
        expires_at,
        will,
        will_at,
    };
    shared.sessions.release(&client_id, lease, Some(parked));
    connection
}

fn log_exit<R, W>(shared: &Shared, session: &Session<R, W>, exit: &Exit) {
    let metrics = &shared.metrics;
    match exit {
        Exit::Disconnect => tracing::info!("client disconnected"),
        Exit::DisconnectWithWill => {
            tracing::info!("client disconnected with a reason code that keeps its will");
        }
        Exit::Closed => tracing::info!("client closed the connection without DISCONNECT"),
        Exit::Io(error) => tracing::info!(%error, "connection lost"),
        Exit::KeepAlive => {
            metrics.keep_alive_timeouts.increment();
            tracing::info!(
                keep_alive = session.keep_alive,
                "[MQTT-3.1.2-24] nothing received within 1.5 x keep alive; closing"
            );
        }
        Exit::Malformed(error) => {
            metrics.protocol_errors.increment();
            tracing::warn!(%error, "malformed packet; closing");
        }
        Exit::Violation(reason_code, rule) => {
            metrics.protocol_errors.increment();
            tracing::warn!(?reason_code, rule, "protocol violation; closing");
        }
        Exit::TakenOver => {
            metrics.takeovers.increment();
            tracing::info!("[MQTT-3.1.4-2] session taken over by a new connection");
        }
        Exit::Shutdown => tracing::info!("closing: server shutting down"),
    }
}

/// The DISCONNECT the broker sends: the reason code, a Reason String
/// naming the rule broken, and on shutdown the redirect if one is
/// configured (0x9C / 0x9D with a Server Reference).
fn server_disconnect(shared: &Shared, exit: &Exit, mut reason_code: ReasonCode) -> Disconnect {
    let mut properties = DisconnectProperties::default();
    match exit {
        Exit::Violation(_, rule) => properties.reason_string = Some((*rule).to_owned()),
        Exit::Malformed(error) => properties.reason_string = Some(error.to_string()),
        Exit::Shutdown => {
            if let Some(redirect) = &shared.config.redirect {
                reason_code = if redirect.permanent {
                    ReasonCode::ServerMoved
                } else {
                    ReasonCode::UseAnotherServer
                };
                properties.server_reference = Some(redirect.server_reference.clone());
            }
        }
        _ => {}
    }
    Disconnect {
        reason_code,
        properties,
    }
}

/// Publishes a will, with its properties as the message's [MQTT-3.1.3-10]
/// (v5.0); never to the broker's own `$SYS` tree.
pub fn publish_will(shared: &Shared, will: LastWill, client_id: &Arc<str>) {
    if is_broker_topic(will.topic.as_str()) {
        return;
    }
    let LastWill {
        topic,
        payload,
        qos,
        retain,
        properties,
    } = will;
    shared.metrics.wills_published.increment();
    shared.router.publish(Arc::new(Message::new(
        topic,
        payload,
        qos,
        retain && shared.config.retain_available,
        PublishProperties {
            payload_format_indicator: properties.payload_format_indicator,
            message_expiry_interval: properties.message_expiry_interval,
            content_type: properties.content_type,
            response_topic: properties.response_topic,
            correlation_data: properties.correlation_data,
            user_properties: properties.user_properties,
            ..PublishProperties::default()
        },
        Some(Arc::clone(client_id)),
    )));
}

/// Messages this client got through a shared subscription and will not
/// receive now go to another member of the group: those not yet sent, and
/// QoS 1 ones sent but not acknowledged. A QoS 2 one already sent stays
/// with this session [MQTT-4.8.2-4] [MQTT-4.8.2-5] (v5.0).
fn hand_over_shared<R, W>(shared: &Shared, session: &mut Session<R, W>) {
    let has_shared = session
        .state
        .subscriptions
        .keys()
        .any(|filter| filter.as_str().starts_with("$share/"));
    if !has_shared
        && session
            .state
            .inflight
            .iter()
            .all(|i| i.delivery.shared().is_none())
    {
        return;
    }
    let client_id = &session.client_id;
    session
        .receiver
        .drain_into(&mut session.state.pending, usize::MAX);
    let store = super::durable::store(shared, session).cloned();
    let pending = std::mem::take(&mut session.state.pending);
    for delivery in pending {
        let message_id = delivery.message.id;
        let qos = delivery.qos;
        if delivery.shared().is_none()
            || !shared.router.redeliver_shared(delivery.clone(), client_id)
        {
            session.state.pending.push_back(delivery);
        } else if let Some(store) = store.as_ref().filter(|_| qos != QoS::AtMostOnce) {
            store.completed(client_id, message_id);
        }
    }
    let handed: Vec<_> = session
        .state
        .inflight
        .iter()
        .filter(|inflight| {
            inflight.delivery.shared().is_some()
                && inflight.delivery.qos == QoS::AtLeastOnce
                && inflight.phase == Phase::Published
        })
        .map(|inflight| (inflight.packet_id, inflight.delivery.clone()))
        .collect();
    for (packet_id, delivery) in handed {
        let message_id = delivery.message.id;
        if shared.router.redeliver_shared(delivery, client_id) {
            session
                .state
                .complete(packet_id, QoS::AtLeastOnce, Phase::Published);
            if let Some(store) = &store {
                store.completed(client_id, message_id);
            }
        }
    }
}
