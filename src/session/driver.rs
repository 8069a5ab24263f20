//! The session loop: one `select!` over shutdown, takeover, the keep-alive
//! deadline, the socket and the inbox, until the connection ends; then the
//! will, and the session is parked or dropped.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::handshake::{send_or_log, Session};
use super::manager::Parked;
use super::state::{Inflight, Phase};
use super::Shared;
use crate::config::Config;
use crate::connection::{IoEvent, WRITE_HIGH_WATER};
use crate::protocol::{
    Ack, DecodeError, Packet, PacketId, Publish, PublishProperties, PublishRef, QoS, ReasonCode,
    SubAck, Subscribe, UnsubAck, Unsubscribe,
};
use crate::router::inbox::Interrupt;
use crate::router::message::{Delivery, Message};

/// Why a session loop ended.
#[derive(Debug)]
pub enum Exit {
    /// The client sent DISCONNECT.
    Disconnect,
    /// The client closed the connection without DISCONNECT.
    Closed,
    /// A read or write failed.
    Io(io::Error),
    /// Nothing arrived within 1.5 times the keep-alive.
    KeepAlive,
    /// A packet could not be decoded.
    Malformed(DecodeError),
    /// A packet broke a protocol rule.
    Violation(&'static str),
    /// Another connection took the session over.
    TakenOver,
    /// The broker is shutting down.
    Shutdown,
}

impl Exit {
    /// Whether the will is published: on every end but DISCONNECT
    /// [MQTT-3.1.2-8] [MQTT-3.14.4-3] (v3.1.1).
    fn publishes_will(&self) -> bool {
        !matches!(self, Exit::Disconnect)
    }
}

/// Runs the session until the connection ends, then cleans up.
pub async fn run<R, W>(shared: &Shared, mut session: Box<Session<R, W>>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let exit = session_loop(shared, &mut session).await;
    // Boxed: only needed at the very end, so it does not size the task.
    Box::pin(finish(shared, session, exit)).await;
}

async fn session_loop<R, W>(shared: &Shared, session: &mut Session<R, W>) -> Exit
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // [MQTT-3.1.2-24] (v3.1.1): one and a half times the keep-alive.
    let keep_alive = (session.keep_alive > 0)
        .then(|| Duration::from_millis(u64::from(session.keep_alive) * 1500));
    let mut last_heard = Instant::now();
    // One timer serves the keep-alive deadline and the flow-control checks.
    // It is moved lazily: when it fires, it is set to what is due next.
    let mut timer_at = last_heard + keep_alive.unwrap_or(CONGESTION_CHECK);
    let timer = tokio::time::sleep_until(timer_at);
    tokio::pin!(timer);
    let mut paused_since: Option<Instant> = None;
    if let Err(exit) = process_input(shared, session) {
        return exit;
    }
    loop {
        // Takeover and shutdown arrive through the inbox, like deliveries.
        match session.inbox.interruption() {
            Some(Interrupt::TakenOver) => return Exit::TakenOver,
            Some(Interrupt::ShuttingDown) => return Exit::Shutdown,
            None => {}
        }
        pull_deliveries(shared, session);
        if let Some(inbox) = &session.congested {
            // Flow control: input stays paused while the subscriber is
            // congested, for at most CONGESTION_PAUSE at a time.
            let now = Instant::now();
            let since = *paused_since.get_or_insert(now);
            if !inbox.is_congested() || now - since >= CONGESTION_PAUSE {
                session.congested = None;
                paused_since = None;
                shared.metrics.publish_pauses.increment();
            } else if timer_at > now + CONGESTION_CHECK {
                timer_at = now + CONGESTION_CHECK;
                timer.as_mut().reset(timer_at);
            }
        }
        let paused = session.congested.is_some();
        let backed_up = session.connection.unsent() >= WRITE_HIGH_WATER;
        session.inbox.set_peer_blocked(backed_up);
        let can_read = !backed_up && !paused;
        tokio::select! {
            biased;
            _ = &mut timer, if keep_alive.is_some() || paused => {
                let now = Instant::now();
                if let Some(keep_alive) = keep_alive {
                    let due = last_heard + keep_alive;
                    if now >= due {
                        return Exit::KeepAlive;
                    }
                    timer_at = due;
                } else {
                    timer_at = now + CONGESTION_CHECK;
                }
                timer.as_mut().reset(timer_at);
            }
            event = session.connection.ready(can_read) => match event {
                Err(error) => return Exit::Io(error),
                Ok(IoEvent::Read(0)) => return Exit::Closed,
                Ok(IoEvent::Read(_)) => {
                    last_heard = Instant::now();
                    if let Err(exit) = process_input(shared, session) {
                        return exit;
                    }
                }
                Ok(IoEvent::Wrote(_)) => {
                    // While input is paused (the client is slow to read
                    // what it is sent), its reading is the sign of life:
                    // its PINGREQs wait unread behind the pause.
                    if !can_read {
                        last_heard = Instant::now();
                    }
                }
            },
            // Deliveries (pulled at the top of the loop), takeover, shutdown.
            _ = session.receiver.changed() => {}
        }
    }
}

/// Longest pause of a publisher's input for one congested subscriber.
const CONGESTION_PAUSE: Duration = Duration::from_millis(20);
/// How often a paused publisher looks again at the congested subscriber.
const CONGESTION_CHECK: Duration = Duration::from_millis(2);

/// Deliveries taken from the inbox under one lock.
const PULL_BATCH: usize = 64;

/// Moves deliveries into the write buffer while the in-flight window and
/// the write buffer have room: first those taken earlier (retained
/// messages for a new subscription), then the inbox.
fn pull_deliveries<R, W>(shared: &Shared, session: &mut Session<R, W>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    while session.state.inflight.len() < shared.config.max_inflight
        && session.connection.unsent() < WRITE_HIGH_WATER
    {
        if session.state.pending.is_empty()
            && session
                .receiver
                .drain_into(&mut session.state.pending, PULL_BATCH)
                == 0
        {
            return;
        }
        let Some(next) = session.state.pending.pop_front() else {
            return;
        };
        if !deliver(shared, session, next) {
            return;
        }
    }
}

/// Sends one delivery, giving QoS 1/2 a packet id and an in-flight entry.
/// False if it had to wait because no packet id is free.
fn deliver<R, W>(shared: &Shared, session: &mut Session<R, W>, delivery: Delivery) -> bool
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let packet_id = if delivery.qos == QoS::AtMostOnce {
        None
    } else {
        let Some(packet_id) = session.state.allocate_packet_id() else {
            // All 65,535 ids in flight: keep the message for later.
            session.state.pending.push_front(delivery);
            return false;
        };
        session.state.track(Inflight {
            packet_id,
            delivery: delivery.clone(),
            phase: Phase::Published,
        });
        Some(packet_id)
    };
    send_publish(&mut session.connection, &delivery, packet_id, false);
    shared.metrics.messages_sent.increment();
    true
}

/// Encodes a delivery straight from the shared message: no per-subscriber
/// copy of its topic or properties.
fn send_publish<R, W>(
    connection: &mut crate::connection::Connection<R, W>,
    delivery: &Delivery,
    packet_id: Option<PacketId>,
    dup: bool,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let message = &delivery.message;
    let publish = PublishRef {
        dup,
        qos: delivery.qos,
        retain: delivery.retain,
        topic: &message.topic,
        packet_id,
        payload: &message.payload,
        properties: &message.properties,
    };
    if let Err(error) = connection.send_publish(&publish) {
        tracing::error!(%error, "could not encode PUBLISH");
    }
}

/// Re-sends every unacknowledged message in its original order, PUBLISH
/// with DUP set or PUBREL [MQTT-4.4.0-1] (v3.1.1).
pub fn resend_inflight<R, W>(session: &mut Session<R, W>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    for inflight in &session.state.inflight {
        match inflight.phase {
            Phase::Published => send_publish(
                &mut session.connection,
                &inflight.delivery,
                Some(inflight.packet_id),
                true,
            ),
            Phase::Released => send_or_log(
                &mut session.connection,
                &Packet::PubRel(Ack::new(inflight.packet_id)),
            ),
        }
    }
}

/// Handles every whole packet in the read buffer.
fn process_input<R, W>(shared: &Shared, session: &mut Session<R, W>) -> Result<(), Exit>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        match session.connection.next_packet() {
            Ok(Some(packet)) => handle(shared, session, packet)?,
            Ok(None) => return Ok(()),
            Err(error) => return Err(Exit::Malformed(error)),
        }
    }
}

fn handle<R, W>(shared: &Shared, session: &mut Session<R, W>, packet: Packet) -> Result<(), Exit>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    match packet {
        Packet::Publish(publish) => handle_publish(shared, session, publish)?,
        Packet::PubAck(ack) => {
            session
                .state
                .complete(ack.packet_id, QoS::AtLeastOnce, Phase::Published);
        }
        Packet::PubRec(ack) => {
            // [MQTT-4.3.3-1] (v3.1.1): PUBREC is answered with PUBREL.
            if let Some(inflight) = session.state.inflight_mut(ack.packet_id) {
                if inflight.delivery.qos == QoS::ExactlyOnce {
                    inflight.phase = Phase::Released;
                }
            }
            send_or_log(
                &mut session.connection,
                &Packet::PubRel(Ack::new(ack.packet_id)),
            );
        }
        Packet::PubComp(ack) => {
            session
                .state
                .complete(ack.packet_id, QoS::ExactlyOnce, Phase::Released);
        }
        Packet::PubRel(ack) => {
            // [MQTT-4.3.3-2] (v3.1.1): release the id, answer PUBCOMP.
            session.state.awaiting_pubrel.remove(&ack.packet_id.get());
            send_or_log(
                &mut session.connection,
                &Packet::PubComp(Ack::new(ack.packet_id)),
            );
        }
        Packet::Subscribe(subscribe) => handle_subscribe(shared, session, subscribe),
        Packet::Unsubscribe(unsubscribe) => handle_unsubscribe(shared, session, unsubscribe),
        Packet::PingReq => send_or_log(&mut session.connection, &Packet::PingResp),
        Packet::Disconnect(_) => return Err(Exit::Disconnect),
        Packet::Connect(_) => {
            return Err(Exit::Violation(
                "[MQTT-3.1.0-2] a second CONNECT on one connection",
            ))
        }
        Packet::ConnAck(_)
        | Packet::SubAck(_)
        | Packet::UnsubAck(_)
        | Packet::PingResp
        | Packet::Auth(_) => {
            return Err(Exit::Violation("a packet only a server may send"));
        }
    }
    Ok(())
}

/// The broker's own `$SYS` tree, which clients may not publish to (a
/// PUBLISH there is acknowledged and dropped, a will there is not sent).
pub fn is_broker_topic(topic: &str) -> bool {
    topic == "$SYS" || topic.starts_with("$SYS/")
}

/// Checks a topic name or filter against the configured bounds.
pub fn check_topic(config: &Config, topic: &str) -> Result<(), &'static str> {
    if topic.len() > config.max_topic_length {
        return Err("topic longer than max_topic_length");
    }
    if topic.split('/').count() > config.max_topic_levels {
        return Err("topic has more levels than max_topic_levels");
    }
    Ok(())
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
    shared.metrics.messages_received.increment();
    check_topic(&shared.config, publish.topic.as_str()).map_err(Exit::Violation)?;
    let packet_id = publish.packet_id;
    let qos = publish.qos;
    // A QoS 2 PUBLISH whose id awaits PUBREL is a re-send: acknowledged,
    // not delivered again [MQTT-4.3.3-2] (v3.1.1).
    let duplicate = qos == QoS::ExactlyOnce
        && packet_id.is_some_and(|id| session.state.awaiting_pubrel.contains(&id.get()));
    let system = is_broker_topic(publish.topic.as_str());
    if !duplicate && !system {
        let message = Arc::new(Message {
            topic: publish.topic,
            payload: publish.payload,
            qos,
            retain: publish.retain,
            properties: PublishProperties {
                topic_alias: None,
                subscription_identifiers: Vec::new(),
                ..publish.properties
            },
            publisher: Some(Arc::clone(&session.client_id)),
        });
        let routed = shared.router.publish(message);
        if routed.congested.is_some() {
            session.congested = routed.congested;
        }
    }
    match (qos, packet_id) {
        (QoS::AtLeastOnce, Some(id)) => {
            send_or_log(&mut session.connection, &Packet::PubAck(Ack::new(id)));
        }
        (QoS::ExactlyOnce, Some(id)) => {
            session.state.awaiting_pubrel.insert(id.get());
            send_or_log(&mut session.connection, &Packet::PubRec(Ack::new(id)));
        }
        _ => {}
    }
    Ok(())
}

fn handle_subscribe<R, W>(shared: &Shared, session: &mut Session<R, W>, subscribe: Subscribe)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut reason_codes = Vec::with_capacity(subscribe.filters.len());
    let mut retained = VecDeque::new();
    // A filter repeated within one SUBSCRIBE: the last one wins
    // [MQTT-3.8.4-4] (v3.1.1), and its retained messages are sent once.
    let last_index: std::collections::HashMap<&str, usize> = subscribe
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
        if let Err(reason) = check_topic(&shared.config, filter.as_str()) {
            tracing::info!(%filter, reason, "subscription refused");
            reason_codes.push(ReasonCode::UnspecifiedError);
            continue;
        }
        let granted = match options.qos {
            QoS::AtMostOnce => ReasonCode::GRANTED_QOS_0,
            QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
            QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
        };
        if repeated {
            reason_codes.push(granted);
            continue;
        }
        shared
            .router
            .subscribe(filter.as_str(), &session.inbox, options);
        // [MQTT-3.8.4-3] (v3.1.1): a repeated filter replaces the
        // subscription, and its retained messages are sent again.
        for message in shared.router.retained_matching(filter.as_str()) {
            retained.push_back(Delivery {
                qos: message.qos.min(options.qos),
                message,
                // [MQTT-3.3.1-8] (v3.1.1): RETAIN set for a new subscription.
                retain: true,
            });
        }
        reason_codes.push(granted);
        session.state.subscriptions.insert(filter, options);
    }
    // [MQTT-3.8.4-1] [MQTT-3.8.4-2] (v3.1.1): SUBACK with the same id, one
    // return code per filter, before any retained message.
    let suback = SubAck {
        packet_id: subscribe.packet_id,
        reason_codes,
        properties: Default::default(),
    };
    send_or_log(&mut session.connection, &Packet::SubAck(suback));
    // Retained messages wait behind the SUBACK, bounded like the inbox.
    let room = shared
        .config
        .max_queued_messages
        .saturating_sub(session.state.pending.len());
    if retained.len() > room {
        let dropped = retained.len() - room;
        retained.truncate(room);
        shared.metrics.messages_dropped.add(dropped as u64);
        tracing::warn!(
            dropped,
            "more retained messages match than max_queued_messages; the rest are dropped"
        );
    }
    session.state.pending.extend(retained);
}

fn handle_unsubscribe<R, W>(shared: &Shared, session: &mut Session<R, W>, unsubscribe: Unsubscribe)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut reason_codes = Vec::with_capacity(unsubscribe.filters.len());
    for filter in &unsubscribe.filters {
        let existed = shared
            .router
            .unsubscribe(filter.as_str(), &session.client_id);
        session.state.subscriptions.remove(filter);
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
    send_or_log(&mut session.connection, &Packet::UnsubAck(unsuback));
}

/// After the loop: log, publish the will, close, park or drop the session.
async fn finish<R, W>(shared: &Shared, mut session: Box<Session<R, W>>, exit: Exit)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let metrics = &shared.metrics;
    match &exit {
        Exit::Disconnect => tracing::info!("client disconnected"),
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
        Exit::Violation(rule) => {
            metrics.protocol_errors.increment();
            tracing::warn!(rule, "protocol violation; closing");
        }
        Exit::TakenOver => {
            metrics.takeovers.increment();
            tracing::info!("[MQTT-3.1.4-2] session taken over by a new connection");
        }
        Exit::Shutdown => tracing::info!("closing: server shutting down"),
    }
    if exit.publishes_will() {
        if let Some(will) = session
            .will
            .take()
            .filter(|will| !is_broker_topic(will.topic.as_str()))
        {
            metrics.wills_published.increment();
            shared.router.publish(Arc::new(Message {
                topic: will.topic,
                payload: will.payload,
                qos: will.qos,
                retain: will.retain,
                properties: PublishProperties::default(),
                publisher: Some(Arc::clone(&session.client_id)),
            }));
        }
    }
    let _ = tokio::time::timeout(Duration::from_millis(500), session.connection.close()).await;
    metrics.clients_connected.decrement();
    session.inbox.set_online(false);
    let parked = if session.clean_session {
        // [MQTT-3.1.2-6] (v3.1.1): a clean session ends with its connection.
        for filter in session.state.subscriptions.keys() {
            shared
                .router
                .unsubscribe(filter.as_str(), &session.client_id);
        }
        None
    } else {
        metrics.clients_disconnected.increment();
        Some(Parked {
            state: session.state,
            inbox: session.inbox,
            receiver: session.receiver,
        })
    };
    shared.sessions.release(session.lease, parked);
}
