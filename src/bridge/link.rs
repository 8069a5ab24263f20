//! One connection of a bridge to its remote broker: TCP or TLS, CONNECT
//! as a client, SUBSCRIBE to the inward rules, then a loop that sends what
//! waits in the bridge's session (unacknowledged messages first, then the
//! queue, within the in-flight window) and publishes here what the remote
//! sends, until the connection ends or the broker stops.

use std::fmt;
use std::io;
use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls::crypto::ring::default_provider;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use super::Local;
use crate::config::{BridgeConfig, BridgeProtocol};
use crate::connection::{Connection, IoEvent, WRITE_HIGH_WATER};
use crate::protocol::{
    Ack, Connect, ConnectProperties, Disconnect, OutgoingPublishProperties, Packet, PacketId,
    ProtocolVersion, Publish, PublishProperties, PublishRef, QoS, ReasonCode, RetainHandling,
    Subscribe, SubscribeProperties, SubscriptionOptions, TopicFilter, TopicName,
};
use crate::router::message::{Delivery, Message};
use crate::session::durable::{release, ticket, wait_for, wake_when_released, Held, HeldPacket};
use crate::session::state::{Inflight, Phase};
use crate::session::Shared;

type BoxRead = Box<dyn AsyncRead + Unpin + Send>;
type BoxWrite = Box<dyn AsyncWrite + Unpin + Send>;
type Link = Connection<BoxRead, BoxWrite>;

/// Why a link ended.
#[derive(Debug)]
pub enum End {
    /// The broker is shutting down.
    Shutdown,
    /// The remote closed the connection.
    Closed,
    /// A read or write failed.
    Io(io::Error),
    /// Nothing came from the remote within 1.5 times the keep-alive.
    KeepAlive,
    /// The remote sent something a server may not.
    Protocol(String),
    /// The remote sent DISCONNECT.
    Disconnected(ReasonCode),
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Shutdown => f.write_str("shutting down"),
            End::Closed => f.write_str("the remote closed the connection"),
            End::Io(error) => write!(f, "{error}"),
            End::KeepAlive => f.write_str("nothing from the remote within 1.5 x keep-alive"),
            End::Protocol(what) => write!(f, "protocol error: {what}"),
            End::Disconnected(code) => write!(f, "the remote sent DISCONNECT {code:?}"),
        }
    }
}

/// How a bridge reaches its remote: TCP, or TLS with the configured CA
/// and client certificate.
pub struct Connector {
    tls: Option<(TlsConnector, Option<String>)>,
}

impl Connector {
    /// Loads the bridge's TLS files, if it has TLS.
    pub fn new(config: &BridgeConfig) -> Result<Connector, String> {
        let Some(tls) = &config.tls else {
            return Ok(Connector { tls: None });
        };
        let mut roots = RootCertStore::empty();
        for cert in crate::transport::tls::read_certs(&tls.ca)? {
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", tls.ca.display()))?;
        }
        let builder = ClientConfig::builder_with_provider(Arc::new(default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let client = match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(
                    crate::transport::tls::read_certs(cert)?,
                    crate::transport::tls::read_key(key)?,
                )
                .map_err(|e| format!("{}: {e}", cert.display()))?,
            _ => builder.with_no_client_auth(),
        };
        Ok(Connector {
            tls: Some((
                TlsConnector::from(Arc::new(client)),
                tls.server_name.clone(),
            )),
        })
    }

    /// Connects to `address`, sends CONNECT, waits for a successful
    /// CONNACK and subscribes to the inward rules. At 3.1.1 the CONNECT
    /// carries Mosquitto's bridge marker (so the remote does not send back
    /// what the bridge published), and goes again without it if the remote
    /// refuses the marked protocol level.
    pub async fn connect(
        &self,
        shared: &Shared,
        config: &BridgeConfig,
        address: &str,
    ) -> Result<Established, String> {
        let marked = config.protocol == BridgeProtocol::V3_1_1;
        match self.attempt(shared, config, address, marked).await {
            Err(Refused::Marker) => {
                tracing::info!(bridge = %config.name, address, "the remote refuses the bridge marker; connecting without it (it may echo)");
                self.attempt(shared, config, address, false)
                    .await
                    .map_err(|refused| refused.to_string())
            }
            other => other.map_err(|refused| refused.to_string()),
        }
    }

    async fn attempt(
        &self,
        shared: &Shared,
        config: &BridgeConfig,
        address: &str,
        marked: bool,
    ) -> Result<Established, Refused> {
        let timeout = shared.config.connect_timeout();
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(address))
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let (reader, writer): (BoxRead, BoxWrite) = match &self.tls {
            None => {
                let (reader, writer) = tcp.into_split();
                (Box::new(reader), Box::new(writer))
            }
            Some((connector, server_name)) => {
                let host = server_name.clone().unwrap_or_else(|| host_of(address));
                let name = ServerName::try_from(host.clone())
                    .map_err(|_| format!("`{host}` is not a valid TLS server name"))?;
                let stream = tokio::time::timeout(timeout, connector.connect(name, tcp))
                    .await
                    .map_err(|_| "TLS handshake timed out".to_owned())?
                    .map_err(|e| format!("TLS: {e}"))?;
                let (reader, writer) = tokio::io::split(stream);
                (Box::new(reader), Box::new(writer))
            }
        };
        let mut connection = Connection::new(
            reader,
            writer,
            shared.config.max_packet_size,
            Arc::clone(&shared.metrics),
        );
        let v5 = config.protocol == BridgeProtocol::V5;
        connection.version = if v5 {
            ProtocolVersion::V5
        } else {
            ProtocolVersion::V3_1_1
        };
        let connect = Connect {
            protocol: connection.version,
            clean_start: config.clean_start,
            keep_alive: config.keep_alive,
            client_id: config.remote_client_id(),
            will: None,
            username: config.username.clone(),
            password: config.password.clone().map(Bytes::from),
            properties: ConnectProperties {
                session_expiry_interval: v5.then_some(config.session_expiry),
                ..ConnectProperties::default()
            },
            bridge: marked,
        };
        send(&mut connection, &Packet::Connect(Box::new(connect)));
        let connack = tokio::time::timeout(timeout, next_packet(&mut connection))
            .await
            .map_err(|_| "no CONNACK in time".to_owned())??;
        let Packet::ConnAck(connack) = connack else {
            return Err("the remote did not answer CONNECT with CONNACK".into());
        };
        if connack.reason_code == ReasonCode::UnsupportedProtocolVersion && marked {
            return Err(Refused::Marker);
        }
        if connack.reason_code.is_error() {
            return Err(format!("CONNACK refused: {:?}", connack.reason_code).into());
        }
        let window = connack
            .properties
            .receive_maximum
            .map_or(config.max_inflight, NonZeroU16::get)
            .min(config.max_inflight);
        if let Some(maximum) = connack.properties.maximum_packet_size {
            connection.max_outgoing_packet = maximum.get();
        }
        let filters: Vec<(TopicFilter, SubscriptionOptions)> =
            super::topics::Rules::new(config.topics.clone())
                .remote_filters()
                .into_iter()
                .filter_map(|(filter, qos)| {
                    let filter = TopicFilter::new(&filter).ok()?;
                    Some((
                        filter,
                        SubscriptionOptions {
                            qos,
                            // [MQTT-3.8.3-3] (v5.0): what the bridge sends
                            // does not come back to it.
                            no_local: true,
                            retain_as_published: true,
                            retain_handling: RetainHandling::SendOnSubscribe,
                        },
                    ))
                })
                .collect();
        // Up means forwarding both ways: the SUBACK is waited for. What
        // the remote sends before it (messages it kept for the bridge's
        // session) is handled first thing once the link serves.
        let mut early = Vec::new();
        if !filters.is_empty() {
            let subscribe = Subscribe {
                packet_id: PacketId::new(1).ok_or("packet id")?,
                filters,
                properties: SubscribeProperties::default(),
            };
            send(&mut connection, &Packet::Subscribe(subscribe));
            loop {
                let packet = tokio::time::timeout(timeout, next_packet(&mut connection))
                    .await
                    .map_err(|_| "no SUBACK in time".to_owned())??;
                match packet {
                    Packet::SubAck(suback) => {
                        for code in suback.reason_codes.iter().filter(|code| code.is_error()) {
                            tracing::warn!(bridge = %config.name, ?code, "bridge: the remote refused a subscription");
                        }
                        break;
                    }
                    other => early.push(other),
                }
            }
        }
        Ok(Established {
            connection,
            window: usize::from(window),
            early,
        })
    }
}

/// Why a connection attempt failed.
enum Refused {
    /// The remote refused the protocol level with the bridge marker.
    Marker,
    /// Anything else.
    Other(String),
}

impl From<String> for Refused {
    fn from(what: String) -> Self {
        Refused::Other(what)
    }
}

impl From<&str> for Refused {
    fn from(what: &str) -> Self {
        Refused::Other(what.to_owned())
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Marker => f.write_str("the remote refused the bridge marker"),
            Refused::Other(what) => f.write_str(what),
        }
    }
}

/// A connection that got its CONNACK.
pub struct Established {
    connection: Link,
    /// Most unacknowledged QoS 1/2 messages to send.
    window: usize,
    /// Packets that came before the SUBACK.
    early: Vec<Packet>,
}

/// The host part of `host:port` (or `[v6]:port`).
fn host_of(address: &str) -> String {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned()
}

fn send(connection: &mut Link, packet: &Packet) {
    if let Err(error) = connection.send(packet) {
        tracing::error!(%error, "bridge: could not encode a packet");
    }
}

async fn next_packet(connection: &mut Link) -> Result<Packet, String> {
    loop {
        if let Some(packet) = connection.next_packet().map_err(|e| e.to_string())? {
            return Ok(packet);
        }
        connection.flush().await.map_err(|e| e.to_string())?;
        if connection.read_more().await.map_err(|e| e.to_string())? == 0 {
            return Err("the remote closed the connection".to_owned());
        }
    }
}

/// Serves a connected link until it ends.
pub async fn serve(
    shared: &Shared,
    config: &BridgeConfig,
    local: &mut Local,
    established: Established,
) -> End {
    let Established {
        mut connection,
        window,
        early,
    } = established;
    let mut held = Held::default();
    resend_inflight(local, &mut connection);
    for packet in early {
        if let Err(end) = handle(shared, local, &mut connection, &mut held, packet) {
            return end;
        }
    }
    // What came in the same read as the SUBACK is already buffered: no
    // read would announce it.
    if let Err(end) = handle_buffered(shared, local, &mut connection, &mut held) {
        return end;
    }
    let keep_alive = Duration::from_secs(u64::from(config.keep_alive));
    let mut last_heard = Instant::now();
    let mut last_ping = last_heard;
    loop {
        if local.inbox.interruption().is_some() {
            let disconnect = Packet::Disconnect(Disconnect::new(ReasonCode::Success));
            send(&mut connection, &disconnect);
            connection.close(false).await;
            return End::Shutdown;
        }
        release_held(shared, local, &mut connection, &mut held);
        forward(shared, local, &mut connection, &mut held, window);
        wake_when_released(shared, Some(&held), &local.inbox);
        let dead_at = last_heard + keep_alive * 3 / 2;
        let ping_at = last_ping + keep_alive;
        let wake = tokio::time::Instant::from_std(dead_at.min(ping_at));
        let can_read = held.len() < crate::session::durable::HELD_LIMIT;
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                if now >= dead_at {
                    return End::KeepAlive;
                }
                if now >= ping_at {
                    send(&mut connection, &Packet::PingReq);
                    last_ping = now;
                }
            }
            event = connection.ready(can_read) => match event {
                Err(error) => return End::Io(error),
                Ok(IoEvent::Read(0)) => return End::Closed,
                Ok(IoEvent::Read(_)) => {
                    last_heard = Instant::now();
                    if let Err(end) = handle_buffered(shared, local, &mut connection, &mut held) {
                        return end;
                    }
                }
                Ok(IoEvent::Wrote(_)) => {}
            },
            _ = local.receiver.changed() => {}
        }
    }
}

/// Handles every whole packet in the read buffer.
fn handle_buffered(
    shared: &Shared,
    local: &mut Local,
    connection: &mut Link,
    held: &mut Held,
) -> Result<(), End> {
    loop {
        match connection.next_packet() {
            Ok(Some(packet)) => handle(shared, local, connection, held, packet)?,
            Ok(None) => return Ok(()),
            Err(error) => return Err(End::Protocol(error.to_string())),
        }
    }
}

/// What the remote is sent for a delivery: its remote topic, and the
/// PUBLISH, unless no rule (any longer) sends it out.
fn remote_topic(local: &Local, delivery: &Delivery) -> Option<TopicName> {
    let (topic, _) = local.rules.outgoing(delivery.message.topic.as_str())?;
    TopicName::new(&topic).ok()
}

fn publish_to_remote(
    connection: &mut Link,
    topic: &TopicName,
    delivery: &Delivery,
    packet_id: Option<PacketId>,
    dup: bool,
) -> bool {
    let message = &delivery.message;
    let expiry = message
        .remaining_expiry(std::time::Instant::now())
        .unwrap_or(Some(0));
    let publish = PublishRef {
        dup,
        qos: delivery.qos,
        retain: delivery.retain,
        topic,
        packet_id,
        payload: &message.payload,
        properties: OutgoingPublishProperties {
            base: &message.properties,
            message_expiry_interval: expiry,
            topic_alias: None,
            subscription_identifiers: &[],
        },
    };
    match connection.send_publish(&publish) {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(%error, %topic, "bridge: message not forwarded");
            false
        }
    }
}

/// Unacknowledged messages first, in their order, with DUP set (PUBREL for
/// those the remote received).
fn resend_inflight(local: &mut Local, connection: &mut Link) {
    for entry in &local.state.inflight {
        match entry.phase {
            Phase::Published => {
                if let Some(topic) = remote_topic(local, &entry.delivery) {
                    publish_to_remote(
                        connection,
                        &topic,
                        &entry.delivery,
                        Some(entry.packet_id),
                        true,
                    );
                }
            }
            Phase::Released => send(connection, &Packet::PubRel(Ack::new(entry.packet_id))),
        }
    }
}

/// A delivery that will not be sent: the store forgets it.
fn forget(shared: &Shared, local: &Local, delivery: &Delivery) {
    if let Some(store) = shared
        .store
        .as_ref()
        .filter(|_| delivery.qos != QoS::AtMostOnce)
    {
        store.completed(&local.client_id, delivery.message.id);
    }
}

/// Sends what waits in the bridge's session, within the window. A QoS 2
/// message's first sending waits, like a client session's, until its
/// packet id is durable (with `durability = "sync"`), and so does what
/// follows it.
fn forward(
    shared: &Shared,
    local: &mut Local,
    connection: &mut Link,
    held: &mut Held,
    window: usize,
) {
    while local.state.inflight.len() < window && connection.unsent() < WRITE_HIGH_WATER {
        if held.holds_publish() {
            // Messages keep their order behind a held one.
            return;
        }
        if local.state.pending.is_empty()
            && local.receiver.drain_into(&mut local.state.pending, 64) == 0
        {
            return;
        }
        let Some(delivery) = local.state.pending.pop_front() else {
            return;
        };
        if delivery.message.is_expired(std::time::Instant::now()) {
            shared.metrics.messages_expired.increment();
            forget(shared, local, &delivery);
            continue;
        }
        let Some(topic) = remote_topic(local, &delivery) else {
            forget(shared, local, &delivery);
            continue;
        };
        let packet_id = if delivery.qos == QoS::AtMostOnce {
            None
        } else {
            let Some(packet_id) = local.state.allocate_packet_id() else {
                local.state.pending.push_front(delivery);
                return;
            };
            Some(packet_id)
        };
        if let (Some(packet_id), QoS::ExactlyOnce, Some(store)) =
            (packet_id, delivery.qos, &shared.store)
        {
            store.sent(&local.client_id, &delivery, packet_id, false);
            if let Some(ticket) = ticket(shared, true).filter(|t| *t > store.durable()) {
                held.hold(ticket, HeldPacket::Publish(packet_id));
                shared.metrics.messages_sent.increment();
                local.state.track(Inflight::published(packet_id, delivery));
                continue;
            }
        }
        if !publish_to_remote(connection, &topic, &delivery, packet_id, false) {
            forget(shared, local, &delivery);
            continue;
        }
        shared.metrics.messages_sent.increment();
        if let Some(packet_id) = packet_id {
            local.state.track(Inflight::published(packet_id, delivery));
        }
    }
}

/// Sends `packet` now, or once the store has reached `ticket`; behind
/// whatever is held already.
fn send_after(
    shared: &Shared,
    connection: &mut Link,
    held: &mut Held,
    packet: Packet,
    ticket: Option<u64>,
) {
    match wait_for(shared, Some(held), ticket) {
        Some(ticket) => held.hold(ticket, HeldPacket::Packet(Box::new(packet))),
        None => send(connection, &packet),
    }
}

/// Sends what the store has caught up with: acknowledgements, and first
/// sendings of QoS 2 messages.
fn release_held(shared: &Shared, local: &Local, connection: &mut Link, held: &mut Held) {
    for packet in release(shared, held) {
        match packet {
            HeldPacket::Packet(packet) => send(connection, &packet),
            HeldPacket::Publish(packet_id) => {
                let entry =
                    local.state.inflight.iter().find(|entry| {
                        entry.packet_id == packet_id && entry.phase == Phase::Published
                    });
                if let Some(entry) = entry {
                    if let Some(topic) = remote_topic(local, &entry.delivery) {
                        publish_to_remote(
                            connection,
                            &topic,
                            &entry.delivery,
                            Some(packet_id),
                            false,
                        );
                    }
                }
            }
        }
    }
}

fn complete(shared: &Shared, local: &mut Local, packet_id: PacketId, qos: QoS, phase: Phase) {
    if let Some(done) = local.state.complete(packet_id, qos, phase) {
        if let Some(store) = &shared.store {
            store.completed(&local.client_id, done.delivery.message.id);
        }
    }
}

/// One packet from the remote.
fn handle(
    shared: &Shared,
    local: &mut Local,
    connection: &mut Link,
    held: &mut Held,
    packet: Packet,
) -> Result<(), End> {
    match packet {
        Packet::Publish(publish) => receive(shared, local, connection, held, publish),
        Packet::PubAck(ack) => complete(
            shared,
            local,
            ack.packet_id,
            QoS::AtLeastOnce,
            Phase::Published,
        ),
        Packet::PubRec(ack) => {
            let known = local
                .state
                .inflight_mut(ack.packet_id)
                .filter(|inflight| inflight.delivery.qos == QoS::ExactlyOnce);
            match known {
                Some(inflight) if !ack.reason_code.is_error() => {
                    // Only the first PUBREC changes the store: one that
                    // comes again is answered again, nothing more.
                    let first = inflight.phase == Phase::Published;
                    inflight.phase = Phase::Released;
                    let delivery = inflight.delivery.clone();
                    let store = shared.store.as_ref().filter(|_| first);
                    if let Some(store) = store {
                        store.sent(&local.client_id, &delivery, ack.packet_id, true);
                    }
                    let pubrel = Packet::PubRel(Ack::new(ack.packet_id));
                    let ticket = ticket(shared, store.is_some());
                    send_after(shared, connection, held, pubrel, ticket);
                }
                Some(_) => complete(
                    shared,
                    local,
                    ack.packet_id,
                    QoS::ExactlyOnce,
                    Phase::Published,
                ),
                None => {
                    // 4.3.3 (v5.0): an id this side has not in flight.
                    let mut pubrel = Ack::new(ack.packet_id);
                    if connection.version.is_v5() {
                        pubrel.reason_code = ReasonCode::PacketIdentifierNotFound;
                    }
                    send_after(shared, connection, held, Packet::PubRel(pubrel), None);
                }
            }
        }
        Packet::PubComp(ack) => complete(
            shared,
            local,
            ack.packet_id,
            QoS::ExactlyOnce,
            Phase::Released,
        ),
        Packet::PubRel(ack) => {
            let known = local.state.awaiting_pubrel.remove(&ack.packet_id.get());
            let store = shared.store.as_ref().filter(|_| known);
            if let Some(store) = store {
                store.pubrel(&local.client_id, ack.packet_id, false);
            }
            let pubcomp = Packet::PubComp(Ack::new(ack.packet_id));
            send_after(
                shared,
                connection,
                held,
                pubcomp,
                ticket(shared, store.is_some()),
            );
        }
        Packet::SubAck(suback) => {
            for code in suback.reason_codes.iter().filter(|code| code.is_error()) {
                tracing::warn!(client_id = %local.client_id, ?code, "bridge: the remote refused a subscription");
            }
        }
        Packet::UnsubAck(_) | Packet::PingResp => {}
        Packet::Disconnect(disconnect) => return Err(End::Disconnected(disconnect.reason_code)),
        other => {
            return Err(End::Protocol(format!(
                "a server may not send {:?}",
                other.packet_type()
            )))
        }
    }
    Ok(())
}

/// A PUBLISH from the remote: published here under its local topic, as if
/// the bridge's session had sent it (so the bridge's own outward
/// subscriptions, with No Local, do not send it back), then acknowledged.
fn receive(
    shared: &Shared,
    local: &mut Local,
    connection: &mut Link,
    held: &mut Held,
    publish: Publish,
) {
    let Publish {
        qos,
        retain,
        topic,
        packet_id,
        payload,
        properties,
        ..
    } = publish;
    let duplicate = qos == QoS::ExactlyOnce
        && packet_id.is_some_and(|id| local.state.awaiting_pubrel.contains(&id.get()));
    let mut changed_store = false;
    let local_topic = local
        .rules
        .incoming(topic.as_str())
        .and_then(|topic| TopicName::new(&topic).ok());
    if let (Some(local_topic), false) = (local_topic, duplicate) {
        shared.metrics.messages_received.increment();
        let message = Arc::new(Message::new(
            local_topic,
            payload,
            qos,
            retain && shared.config.retain_available,
            PublishProperties {
                topic_alias: None,
                subscription_identifiers: Vec::new(),
                ..properties
            },
            Some(Arc::clone(&local.client_id)),
        ));
        changed_store = shared.router.publish(message).journaled;
    }
    match (qos, packet_id) {
        (QoS::AtLeastOnce, Some(id)) => {
            let puback = Packet::PubAck(Ack::new(id));
            send_after(
                shared,
                connection,
                held,
                puback,
                ticket(shared, changed_store),
            );
        }
        (QoS::ExactlyOnce, Some(id)) => {
            if local.state.awaiting_pubrel.insert(id.get()) {
                if let Some(store) = &shared.store {
                    store.pubrel(&local.client_id, id, true);
                    changed_store = true;
                }
            }
            let pubrec = Packet::PubRec(Ack::new(id));
            send_after(
                shared,
                connection,
                held,
                pubrec,
                ticket(shared, changed_store),
            );
        }
        _ => {}
    }
}
