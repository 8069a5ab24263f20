//! The CONNECT handshake: the first packet must be a CONNECT and must come
//! within `connect_timeout`; the client id is checked or assigned; the
//! session is claimed (taking it over from another connection if needed);
//! CONNACK tells the truth about the session; unacknowledged messages are
//! re-sent first.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncWrite};

use super::manager::Lease;
use super::state::SessionState;
use super::Shared;
use crate::connection::Connection;
use crate::protocol::{
    ConnAck, Connect, DecodeError, LastWill, Packet, PacketType, ProtocolVersion, ReasonCode,
};
use crate::router::inbox::{Inbox, InboxLimits, InboxReceiver};

/// A connected client's session, handed from the handshake to the driver.
#[derive(Debug)]
pub struct Session<R, W> {
    /// The framed connection.
    pub connection: Connection<R, W>,
    /// The client id (assigned by the broker if the client sent none).
    pub client_id: Arc<str>,
    /// Clean session: the state is dropped when the connection ends.
    pub clean_session: bool,
    /// Keep alive in seconds; 0 turns it off.
    pub keep_alive: u16,
    /// The will, published if the connection ends without DISCONNECT.
    pub will: Option<Box<LastWill>>,
    /// The session state.
    pub state: SessionState,
    /// The session's inbox (as the router sees it).
    pub inbox: Arc<Inbox>,
    /// The inbox's receiving end.
    pub receiver: InboxReceiver,
    /// This connection's claim on the session.
    pub lease: Lease,
    /// A subscriber's inbox this client's last PUBLISH found congested:
    /// reading from this client pauses until it drains (bounded).
    pub congested: Option<Arc<Inbox>>,
}

enum FirstPacket {
    Packet(Packet),
    /// The first byte already says it is not a CONNECT.
    NotConnect(u8),
    Closed,
    Io(io::Error),
    Malformed(DecodeError),
}

/// Runs the handshake. `None` means the connection was refused or ended
/// and has been closed.
pub async fn accept<R, W>(
    shared: &Shared,
    mut connection: Connection<R, W>,
) -> Option<Box<Session<R, W>>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let token = shared.tasks.token().clone();
    let first = tokio::select! {
        _ = token.cancelled() => return None,
        first = tokio::time::timeout(shared.config.connect_timeout(), read_first(&mut connection)) => first,
    };
    let connect = match first {
        Err(_elapsed) => {
            shared.metrics.connect_timeouts.increment();
            tracing::info!(
                timeout_secs = shared.config.connect_timeout,
                "no CONNECT within connect_timeout; closing"
            );
            return None;
        }
        Ok(FirstPacket::Closed) => {
            tracing::debug!("closed before CONNECT");
            return None;
        }
        Ok(FirstPacket::Io(error)) => {
            tracing::debug!(%error, "read error before CONNECT");
            return None;
        }
        Ok(FirstPacket::Malformed(error)) => {
            shared.metrics.protocol_errors.increment();
            tracing::warn!(%error, "malformed CONNECT; closing");
            if matches!(
                error,
                DecodeError::UnsupportedProtocolLevel(_) | DecodeError::UnknownProtocolName
            ) {
                // [MQTT-3.1.2-2] (v3.1.1): CONNACK 0x01, then close.
                refuse(&mut connection, ReasonCode::UnsupportedProtocolVersion).await;
            }
            return None;
        }
        Ok(FirstPacket::Packet(Packet::Connect(connect))) => connect,
        Ok(FirstPacket::Packet(other)) => {
            // Unreachable in practice: the type was checked on the first byte.
            shared.metrics.protocol_errors.increment();
            tracing::warn!(packet = ?other.packet_type(), "[MQTT-3.1.0-1] first packet is not CONNECT; closing");
            return None;
        }
        Ok(FirstPacket::NotConnect(packet_type)) => {
            shared.metrics.protocol_errors.increment();
            tracing::warn!(
                packet_type,
                "[MQTT-3.1.0-1] first packet is not CONNECT; closing"
            );
            return None;
        }
    };
    check_connect(shared, &mut connection, &connect).await?;
    let client_id = client_id(shared, &mut connection, &connect).await?;
    tracing::Span::current().record("client_id", &*client_id);
    let claim = tokio::select! {
        _ = token.cancelled() => return None,
        claim = shared.sessions.acquire(&client_id) => claim,
    };
    let (lease, parked) = claim;
    let limits = InboxLimits {
        max_messages: shared.config.max_queued_messages,
        max_bytes: shared.config.max_queued_bytes,
        queue_qos0: shared.config.queue_qos0,
    };
    let (state, inbox, receiver, session_present) = match parked {
        // [MQTT-3.1.2-4] (v3.1.1): resume the session.
        Some(parked) if !connect.clean_start => (parked.state, parked.inbox, parked.receiver, true),
        other => {
            // [MQTT-3.1.2-6] (v3.1.1): clean session discards what was there.
            if let Some(old) = other {
                shared.metrics.clients_disconnected.decrement();
                for filter in old.state.subscriptions.keys() {
                    shared.router.unsubscribe(filter.as_str(), &client_id);
                }
            }
            let (inbox, receiver) = Inbox::new(Arc::clone(&client_id), limits);
            (SessionState::default(), inbox, receiver, false)
        }
    };
    inbox.set_online(true);
    shared
        .sessions
        .attach(&lease, &inbox, shared.tasks.token().is_cancelled());
    // Boxed: the session lives as long as the connection, and its futures
    // then hold a pointer rather than a copy each.
    let mut session = Box::new(Session {
        connection,
        client_id,
        clean_session: connect.clean_start,
        keep_alive: connect.keep_alive,
        will: connect.will.clone().map(Box::new),
        state,
        inbox,
        receiver,
        lease,
        congested: None,
    });
    // [MQTT-3.2.2-1] [MQTT-3.2.2-2] (v3.1.1): session present tells the truth.
    let connack = ConnAck {
        session_present,
        reason_code: ReasonCode::Success,
        ..ConnAck::default()
    };
    send_or_log(&mut session.connection, &Packet::ConnAck(connack));
    super::driver::resend_inflight(&mut session);
    shared.metrics.clients_connected.increment();
    if session_present {
        shared.metrics.clients_disconnected.decrement();
    }
    tracing::info!(
        protocol = ?connect.protocol,
        clean_session = connect.clean_start,
        keep_alive = connect.keep_alive,
        session_present,
        "client connected"
    );
    Some(session)
}

async fn read_first<R, W>(connection: &mut Connection<R, W>) -> FirstPacket
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        // [MQTT-3.1.0-1] (v3.1.1): refuse anything but CONNECT from its
        // first byte, without waiting for the rest of it.
        if let Some(packet_type) = connection.next_packet_type() {
            if packet_type != PacketType::Connect as u8 {
                return FirstPacket::NotConnect(packet_type);
            }
        }
        match connection.next_packet() {
            Ok(Some(packet)) => return FirstPacket::Packet(packet),
            Ok(None) => {}
            Err(error) => return FirstPacket::Malformed(error),
        }
        match connection.read_more().await {
            Ok(0) => return FirstPacket::Closed,
            Ok(_) => {}
            Err(error) => return FirstPacket::Io(error),
        }
    }
}

/// Checks what the codec cannot: the protocol level this build serves,
/// the will topic's bounds, whether anonymous clients may connect.
async fn check_connect<R, W>(
    shared: &Shared,
    connection: &mut Connection<R, W>,
    connect: &Connect,
) -> Option<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if connect.protocol == ProtocolVersion::V5 {
        // MQTT 5 is not served yet: answered as a 3.1.1 server answers a
        // level it does not support [MQTT-3.1.2-2] (v3.1.1).
        tracing::info!("MQTT 5 CONNECT refused: this build serves MQTT 3.1 and 3.1.1");
        refuse(connection, ReasonCode::UnsupportedProtocolVersion).await;
        return None;
    }
    connection.version = connect.protocol;
    if let Some(will) = &connect.will {
        if let Err(reason) = super::driver::check_topic(&shared.config, will.topic.as_str()) {
            shared.metrics.protocol_errors.increment();
            tracing::warn!(topic = %will.topic, reason, "will topic refused; closing");
            return None;
        }
    }
    if shared.config.allow_anonymous == Some(false) {
        // No authentication is configured, so nobody is authorised.
        tracing::info!("anonymous clients are not allowed; refusing");
        refuse(connection, ReasonCode::NotAuthorized).await;
        return None;
    }
    Some(())
}

/// The client id to use: the client's, or a new unique one for an empty id
/// with clean session [MQTT-3.1.3-6] (v3.1.1); an empty id without clean
/// session is refused with CONNACK 0x02 [MQTT-3.1.3-8] (v3.1.1).
async fn client_id<R, W>(
    shared: &Shared,
    connection: &mut Connection<R, W>,
    connect: &Connect,
) -> Option<Arc<str>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if !connect.client_id.is_empty() {
        return Some(Arc::from(connect.client_id.as_str()));
    }
    if !connect.clean_start {
        shared.metrics.protocol_errors.increment();
        tracing::info!("[MQTT-3.1.3-8] empty client id without clean session; refusing");
        refuse(connection, ReasonCode::ClientIdentifierNotValid).await;
        return None;
    }
    Some(Arc::from(assign_client_id()))
}

/// A client id unique within this broker's lifetime and, through the start
/// time, across restarts.
fn assign_client_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs())
    });
    let sequence = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("petrel-{start:x}-{sequence}")
}

/// Sends a refusing CONNACK and closes.
async fn refuse<R, W>(connection: &mut Connection<R, W>, reason_code: ReasonCode)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let connack = ConnAck {
        session_present: false,
        reason_code,
        ..ConnAck::default()
    };
    if connection.version.is_v5() {
        connection.version = ProtocolVersion::V3_1_1;
    }
    send_or_log(connection, &Packet::ConnAck(connack));
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), connection.close()).await;
}

/// Encodes a packet; a packet Petrel builds itself always encodes, so a
/// failure is a bug worth a log line, not a reason to stop.
pub(super) fn send_or_log<R, W>(connection: &mut Connection<R, W>, packet: &Packet)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if let Err(error) = connection.send(packet) {
        tracing::error!(%error, packet = ?packet.packet_type(), "could not encode packet");
    }
}
