//! The CONNECT handshake: the first packet must be a CONNECT and must come
//! within `connect_timeout`; what it asks is settled in [`decide`] (pure),
//! around the two steps that wait: authentication (a password checked on
//! the blocking pool, or an enhanced authentication exchange), then one
//! claim of the session (taking it over from another connection if
//! needed). CONNACK tells the truth about the session and the broker;
//! unacknowledged messages are re-sent behind it.

pub mod decide;
mod login;

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use super::endpoint::{AuthState, Endpoint, Role, ServerSide};
use super::manager::Lease;
use super::state::SessionState;
use super::{Origin, Session};
use crate::connection::{Connection, Incoming, Outbox};
use crate::context::Context;
use crate::protocol::{ConnAck, Connect, DecodeError, Packet, PacketType, ReasonCode};
use crate::router::inbox::Inbox;
use decide::{Decision, Login, Refusal};

pub use login::LOGIN_FAILURE_MEMORY;

/// A connection the handshake gives back: refused (the CONNACK saying why
/// is in its outbox) or ended, for the caller to close.
pub type Refused<R, W> = (Connection<R, W>, Outbox);

/// Runs the handshake: the session, connected, or the connection back.
pub async fn accept<R, W>(
    context: &Context,
    mut connection: Connection<R, W>,
    origin: Origin,
) -> Result<Box<Session<R, W>>, Refused<R, W>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut outbox = Outbox::new(connection.version);
    let Some(connect) = read_connect(context, &mut connection, &mut outbox).await else {
        return Err((connection, outbox));
    };
    // Even a refusal is at the client's level and fits its Maximum
    // Packet Size.
    connection.version = connect.protocol;
    outbox.set_version(connect.protocol);
    if let Some(maximum) = connect.properties.maximum_packet_size {
        outbox.set_max_packet(maximum.get());
    }
    let decided = decide_and_login(context, &mut connection, &mut outbox, &connect, &origin).await;
    let (client_id, username, decision, login) = match decided {
        Ok(decided) => decided,
        Err(refusal) => {
            refuse(context, &mut outbox, refusal);
            return Err((connection, outbox));
        }
    };
    // A listener that closes (a reload) closes its connections later, by
    // its number; the handshake waits for nothing but the broker's end.
    let token = context.core.tasks.token().clone();
    let listener = origin.listener.as_ref().map(|tag| tag.id);
    let claim = tokio::select! {
        _ = token.cancelled() => return Err((connection, outbox)),
        claim = context.core.sessions.acquire(&client_id) => claim,
    };
    let (lease, parked) = claim;
    let endpoint = claim_session(
        context,
        &lease,
        (&token, listener, origin.peer),
        parked,
        outbox,
        &connect,
        client_id,
        username,
        decision,
        login,
    );
    Ok(Box::new(Session {
        connection,
        endpoint,
        lease,
        peer: origin.peer,
        guard: None,
    }))
}

/// The decisions and the authentication between them: the client id,
/// the user name for the ACL, what is granted, what the login proved.
async fn decide_and_login<R, W>(
    context: &Context,
    connection: &mut Connection<R, W>,
    outbox: &mut Outbox,
    connect: &Connect,
    origin: &Origin,
) -> Result<(Arc<str>, Option<Arc<str>>, Decision, Login), Refusal>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // Kept across the login's awaits: an Arc, not a guard.
    let config = &context.core.config_arc();
    let has_passwords = context.auth.passwords().is_some();
    let (client_id, assigned) = decide::admit(config, connect, origin, has_passwords)?;
    tracing::Span::current().record("client_id", &*client_id);
    let login =
        login::authenticate(context, connection, outbox, connect, &client_id, origin).await?;
    let decision = decide::grant(config, connect, (&client_id, assigned), &login)?;
    let username = origin
        .identity
        .as_ref()
        .and_then(|identity| identity.username.as_deref())
        .or(login.user.as_deref())
        .or(connect.username.as_deref())
        .map(Arc::from);
    Ok((client_id, username, decision, login))
}

/// Waits for the CONNECT, within `connect_timeout`; none if the client
/// sent something else, nothing, or nothing valid (a CONNACK 0x01 for a
/// protocol level this broker does not speak [MQTT-3.1.2-2] (v3.1.1)).
async fn read_connect<R, W>(
    context: &Context,
    connection: &mut Connection<R, W>,
    outbox: &mut Outbox,
) -> Option<Box<Connect>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let core = &context.core;
    let token = core.tasks.token().clone();
    let read = connection.read_packet(outbox, Some(PacketType::Connect));
    let first = tokio::select! {
        _ = token.cancelled() => return None,
        first = tokio::time::timeout(core.config().connect_timeout(), read) => first,
    };
    match first {
        Ok(Incoming::Packet(Packet::Connect(connect))) => Some(connect),
        Err(_elapsed) => {
            core.metrics.connect_timeouts.increment();
            tracing::info!(
                timeout_secs = core.config().connect_timeout,
                "no CONNECT within connect_timeout; closing"
            );
            None
        }
        Ok(Incoming::Closed) => {
            tracing::debug!("closed before CONNECT");
            None
        }
        Ok(Incoming::Io(error)) => {
            tracing::debug!(%error, "read error before CONNECT");
            None
        }
        Ok(Incoming::Malformed(error)) => {
            core.metrics.protocol_error(error.reason_code() as u8);
            tracing::warn!(%error, "malformed CONNECT; closing");
            if matches!(
                error,
                DecodeError::UnsupportedProtocolLevel(_) | DecodeError::UnknownProtocolName
            ) {
                send_connack(
                    outbox,
                    ReasonCode::UnsupportedProtocolVersion,
                    Default::default(),
                );
            }
            None
        }
        Ok(Incoming::Other(packet_type)) => {
            core.metrics.protocol_error(ReasonCode::ProtocolError as u8);
            tracing::warn!(
                packet_type,
                "[MQTT-3.1.0-1] first packet is not CONNECT; closing"
            );
            None
        }
        // Unreachable in practice: the type was checked on the first byte.
        Ok(Incoming::Packet(other)) => {
            core.metrics.protocol_error(ReasonCode::ProtocolError as u8);
            tracing::warn!(packet = ?other.packet_type(), "[MQTT-3.1.0-1] first packet is not CONNECT; closing");
            None
        }
    }
}

/// Writes what a refusal says: the CONNACK (at 3.x the nearest return
/// code, without the properties) [MQTT-3.2.2-7] (v5.0), the log line and
/// the counter; the caller closes.
fn refuse(context: &Context, outbox: &mut Outbox, refusal: Refusal) {
    let metrics = &context.core.metrics;
    let code = refusal.reason_code.unwrap_or(ReasonCode::ProtocolError) as u8;
    if refusal.protocol_error {
        metrics.protocol_error(code);
    }
    if refusal.reason_code.is_some() {
        metrics.connects_refused.increment(code);
    }
    match refusal.reason_code {
        Some(reason_code) => {
            tracing::info!(?reason_code, why = refusal.why, "CONNECT refused");
            send_connack(outbox, reason_code, refusal.properties());
        }
        None if refusal.protocol_error => tracing::warn!(why = refusal.why, "CONNECT refused"),
        None => tracing::info!(why = refusal.why, "CONNECT refused"),
    }
}

fn send_connack(
    outbox: &mut Outbox,
    reason_code: ReasonCode,
    properties: crate::protocol::ConnAckProperties,
) {
    outbox.send_or_log(Packet::ConnAck(ConnAck {
        session_present: false,
        reason_code,
        properties,
    }));
}

/// The session, claimed: resumed from the parked one, or new (a clean
/// start discards what was there); CONNACK sent with Session Present
/// telling the truth, unacknowledged messages re-sent behind it.
#[allow(clippy::too_many_arguments)]
fn claim_session(
    context: &Context,
    lease: &Lease,
    (shutdown, listener, peer): (
        &tokio_util::sync::CancellationToken,
        Option<u32>,
        std::net::SocketAddr,
    ),
    parked: Option<super::manager::Parked>,
    mut outbox: Outbox,
    connect: &Connect,
    client_id: Arc<str>,
    username: Option<Arc<str>>,
    decision: Decision,
    login: Login,
) -> Endpoint {
    let core = &context.core;
    let Decision {
        negotiated,
        mut connack,
    } = decision;
    let (state, (inbox, receiver), session_present) =
        resume_or_start(core, parked, connect.clean_start, &client_id);
    inbox.set_online(true);
    if let Some(store) = &core.store {
        // A session with an expiry outlives the connection, and the broker
        // process too.
        let durable = negotiated.session_expiry > 0;
        if durable {
            store.session_opened(&client_id, negotiated.session_expiry);
        } else if inbox.is_durable() {
            store.session_removed(&client_id);
        }
        inbox.set_durable(durable);
    }
    core.sessions.attach(lease, &inbox, shutdown, listener);
    core.sessions.describe(
        lease,
        super::manager::ClientInfo {
            peer,
            protocol: connect.protocol,
            username: username.clone(),
            keep_alive: negotiated.keep_alive,
            clean_start: connect.clean_start,
            connected_at: crate::session::manager::unix_now(),
        },
    );
    outbox.set_max_packet(negotiated.max_outgoing_packet);
    let auth = login.method.map(|(method, _)| AuthState {
        method,
        username: connect.username.clone(),
        exchange: None,
    });
    let throttle = super::throttle::Throttle::new(&core.config());
    let role = Role::Server(ServerSide::new(username, auth, throttle));
    let mut endpoint = Endpoint::new(outbox, state, (inbox, receiver), role);
    endpoint.keep_alive = negotiated.keep_alive;
    endpoint.session_expiry = negotiated.session_expiry;
    endpoint.will = connect.will.clone().map(Box::new);
    endpoint.limits = negotiated.limits;
    // [MQTT-3.2.2-1] [MQTT-3.2.2-2] (v3.1.1) [MQTT-3.2.2-2] (v5.0):
    // session present tells the truth.
    connack.session_present = session_present;
    endpoint.send(Packet::ConnAck(connack));
    endpoint.resend_inflight(context);
    core.metrics.clients_connected.increment();
    tracing::info!(
        protocol = ?connect.protocol,
        clean_start = connect.clean_start,
        keep_alive = endpoint.keep_alive,
        session_expiry = endpoint.session_expiry,
        session_present,
        "client connected"
    );
    endpoint
}

/// The session's state and inbox, and whether it was resumed: the parked
/// session, unless the client asks for a clean start, which discards it
/// (a will still waiting for its delay goes now, as the session ends
/// [MQTT-3.1.2-8] (v5.0)) [MQTT-3.1.2-4] [MQTT-3.1.2-6] (v3.1.1)
/// [MQTT-3.1.2-4] [MQTT-3.1.2-5] (v5.0).
fn resume_or_start(
    core: &crate::context::Core,
    parked: Option<super::manager::Parked>,
    clean_start: bool,
    client_id: &Arc<str>,
) -> (
    SessionState,
    (Arc<Inbox>, crate::router::inbox::InboxReceiver),
    bool,
) {
    match parked {
        Some(parked) if !clean_start => {
            if parked.will.is_some() {
                // [MQTT-3.1.3-9] (v5.0): back to this session before the
                // Will Delay Interval passed, so the will is not sent.
                core.metrics.wills_cancelled.increment();
                tracing::debug!(will_at = ?parked.will_at, "reconnected within the will delay: will cancelled");
            }
            core.metrics.clients_disconnected.decrement();
            (parked.state, (parked.inbox, parked.receiver), true)
        }
        other => {
            if let Some(old) = other {
                old.discard(core, client_id);
            }
            let limits = super::restore::inbox_limits(&core.config());
            let inbox = Inbox::new(Arc::clone(client_id), limits);
            (SessionState::default(), inbox, false)
        }
    }
}
