//! When a client's connection ends: the log line, what the client is still
//! owed (acknowledgements held for the store), a DISCONNECT with the
//! reason for an MQTT 5 client, the will (now, or after its delay), shared
//! subscription messages handed to other members, and the session parked
//! until it expires or discarded. [`Parked::discard`] is the one teardown
//! of a session, whoever ends it: this close, a clean start over a parked
//! session, its expiry, a bridge no longer configured.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::endpoint::Endpoint;
use super::exit::Exit;
use super::manager::{Lease, Parked};
use super::state::Phase;
use super::Session;
use crate::auth::acl::Action;
use crate::connection::{Connection, Outbox, LINGER};
use crate::context::{Context, Core};
use crate::protocol::topic::is_broker_topic;
use crate::protocol::{LastWill, Packet, PublishProperties, QoS};
use crate::router::message::Message;

/// After the driver: log, send the client what it is owed and why it is
/// closed, publish or schedule the will, park or discard the session. The
/// connection and what is left to write come back to be closed.
pub async fn finish<R, W>(
    context: &Context,
    session: Box<Session<R, W>>,
    exit: Exit,
) -> (Connection<R, W>, Outbox)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let core = &context.core;
    let Session {
        connection,
        mut endpoint,
        lease,
        ..
    } = *session;
    exit.record(&core.metrics, endpoint.keep_alive);
    let deleted = endpoint.inbox.interruption() == Some(crate::router::inbox::Interrupt::Deleted);
    if matches!(exit, Exit::Kicked { delete: true }) || deleted {
        // Deleted: it ends with its connection, as a clean session does.
        endpoint.session_expiry = 0;
    }
    if !exit.peer_closed() {
        release_before_close(context, &mut endpoint).await;
        if endpoint.outbox.version().is_v5() {
            if let Some(disconnect) = exit.server_disconnect(&core.config()) {
                endpoint.outbox.send_or_log(Packet::Disconnect(disconnect));
            }
        }
    }
    let now = Instant::now();
    let delayed_will = will(context, &mut endpoint, &exit, now);
    // Offline first, and a session that ends unsubscribed first: nothing
    // routed from here on is stranded in this inbox while the connection
    // closes; then what it holds of shared groups goes to other members.
    endpoint.inbox.set_online(false);
    if endpoint.session_expiry == 0 {
        // [MQTT-3.1.2-6] (v3.1.1): a clean session ends with its connection.
        for filter in endpoint.state.subscriptions.keys() {
            core.router
                .unsubscribe(filter.as_str(), endpoint.client_id());
        }
    }
    hand_over_shared(core, &mut endpoint);
    core.metrics.clients_connected.decrement();
    let version = endpoint.outbox.version();
    let outbox = std::mem::replace(&mut endpoint.outbox, Outbox::new(version));
    park(core, endpoint, lease, delayed_will);
    (connection, outbox)
}

/// Acknowledgements still waiting for the store go out before the
/// connection closes, once the store has them (for at most [`LINGER`]).
async fn release_before_close(context: &Context, endpoint: &mut Endpoint) {
    let deadline = Instant::now() + LINGER;
    loop {
        endpoint.release_held(context);
        if !endpoint.holds_packets() {
            return;
        }
        endpoint.wake_when_released(&context.core);
        let woken = tokio::time::timeout_at(deadline, endpoint.receiver.changed()).await;
        if woken.is_err() {
            return;
        }
    }
}

/// Publishes the will when the end calls for it, or returns it with when
/// it is due if it waits for its delay.
fn will(
    context: &Context,
    endpoint: &mut Endpoint,
    exit: &Exit,
    now: Instant,
) -> Option<(Box<LastWill>, Instant)> {
    let core = &context.core;
    if !exit.publishes_will() {
        return None;
    }
    let will = endpoint.will.take()?;
    if !endpoint.may(context, will.topic.as_str(), Action::Write) {
        core.metrics.acl_denied.increment();
        tracing::info!(topic = %will.topic, "ACL: will not published");
        return None;
    }
    let delay = will.properties.will_delay_interval.unwrap_or(0);
    // The will waits for its delay unless the session ends first
    // [MQTT-3.1.2-8] (v5.0): at once without a session to outlive the
    // connection, or when the broker stops. A session the store keeps
    // outlives the broker, and its will keeps waiting across the restart.
    let ends_here = matches!(exit, Exit::Shutdown) && core.store.is_none();
    if delay == 0 || endpoint.session_expiry == 0 || ends_here {
        publish_will(core, *will, endpoint.client_id());
        return None;
    }
    let wait = delay.min(endpoint.session_expiry);
    Some((will, now + Duration::from_secs(u64::from(wait))))
}

/// Parks the session for its next connection, with its delayed will, and
/// tells the store; a session with no expiry is discarded instead. Used
/// by client sessions and by bridges as the broker stops.
pub fn park(
    core: &Core,
    mut endpoint: Endpoint,
    lease: Lease,
    will: Option<(Box<LastWill>, Instant)>,
) {
    let now = Instant::now();
    let expires_at = (endpoint.session_expiry != u32::MAX)
        .then(|| now + Duration::from_secs(u64::from(endpoint.session_expiry)));
    let store = endpoint.store(core).cloned();
    if let Some(store) = store.as_ref().filter(|_| endpoint.session_expiry > 0) {
        endpoint.queue_backlog(core);
        endpoint.record_inflight(store);
        let stored_will = will.as_ref().map(|(will, at)| {
            let wait = at.saturating_duration_since(now);
            (&**will, std::time::SystemTime::now() + wait)
        });
        store.session_closed(endpoint.client_id(), endpoint.session_expiry, stored_will);
    }
    let (will, will_at) = will.unzip();
    let client_id = Arc::clone(endpoint.client_id());
    let Endpoint {
        mut state,
        inbox,
        receiver,
        session_expiry,
        ..
    } = endpoint;
    state.compact();
    inbox.forget_waker();
    let parked = Parked {
        state,
        inbox,
        receiver,
        expires_at,
        will,
        will_at,
    };
    core.metrics.clients_disconnected.increment();
    if session_expiry == 0 {
        parked.discard(core, &client_id);
        core.sessions.release(&client_id, lease, None);
    } else {
        core.sessions.release(&client_id, lease, Some(parked));
    }
}

impl Parked {
    /// Ends the session: its subscriptions go (only its own: a newer
    /// session of the client id may have subscribed since), a will still
    /// waiting for its delay is published (the session ends first
    /// [MQTT-3.1.2-8] (v5.0)), its inbox closes, then the store forgets it,
    /// so nothing is journaled for it afterwards; it is counted no more.
    pub fn discard(mut self, core: &Core, client_id: &Arc<str>) {
        for filter in self.state.subscriptions.keys() {
            core.router.unsubscribe_inbox(filter.as_str(), &self.inbox);
        }
        if let Some(will) = self.will.take() {
            publish_will(core, *will, client_id);
        }
        let durable = self.inbox.is_durable();
        drop(self);
        if let Some(store) = core.store.as_ref().filter(|_| durable) {
            store.session_removed(client_id);
        }
        core.metrics.clients_disconnected.decrement();
    }
}

/// Publishes a will, with its properties as the message's [MQTT-3.1.3-10]
/// (v5.0); never to the broker's own `$SYS` tree.
pub fn publish_will(core: &Core, will: LastWill, client_id: &Arc<str>) {
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
    core.metrics.wills_published.increment();
    core.router.publish(Arc::new(Message::new(
        topic,
        payload,
        qos,
        retain && core.config().retain_available,
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
fn hand_over_shared(core: &Core, endpoint: &mut Endpoint) {
    let has_shared = endpoint
        .state
        .subscriptions
        .keys()
        .any(|filter| filter.as_str().starts_with("$share/"));
    if !has_shared
        && endpoint
            .state
            .inflight()
            .iter()
            .all(|i| i.delivery.shared().is_none())
    {
        return;
    }
    let store = endpoint.store(core).cloned();
    let client_id = Arc::clone(endpoint.client_id());
    endpoint
        .receiver
        .drain_into(endpoint.state.pending_mut(), usize::MAX);
    let pending = std::mem::take(endpoint.state.pending_mut());
    for delivery in pending {
        let message_id = delivery.message.id;
        let qos = delivery.qos;
        if delivery.shared().is_none()
            || !core.router.redeliver_shared(delivery.clone(), &client_id)
        {
            endpoint.state.pending_mut().push_back(delivery);
        } else if let Some(store) = store.as_ref().filter(|_| qos != QoS::AtMostOnce) {
            store.completed(&client_id, message_id);
        }
    }
    let handed: Vec<_> = endpoint
        .state
        .inflight()
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
        if core.router.redeliver_shared(delivery, &client_id) {
            endpoint
                .state
                .complete(packet_id, QoS::AtLeastOnce, Phase::Published);
            if let Some(store) = &store {
                store.completed(&client_id, message_id);
            }
        }
    }
}
