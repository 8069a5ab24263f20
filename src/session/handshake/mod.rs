//! The CONNECT handshake: the first packet must be a CONNECT and must come
//! within `connect_timeout`; what it asks is settled in [`decide`] (pure),
//! around the two steps that wait: authentication (a password checked on
//! the blocking pool, or an enhanced authentication exchange), then one
//! claim of the session (taking it over from another connection if
//! needed). CONNACK tells the truth about the session and the broker;
//! unacknowledged messages are re-sent behind it.

pub mod decide;

use std::io;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use super::endpoint::{AuthState, Endpoint, Role, ServerSide};
use super::manager::Lease;
use super::state::SessionState;
use super::{Origin, Session};
use crate::auth::AuthStep;
use crate::connection::{Connection, Outbox};
use crate::context::Context;
use crate::protocol::{
    Auth, AuthProperties, ConnAck, Connect, DecodeError, Packet, PacketType, ReasonCode,
};
use crate::router::inbox::Inbox;
use decide::{Decision, Login, Refusal};

/// How long failed logins from an address are remembered.
pub const LOGIN_FAILURE_MEMORY: std::time::Duration = std::time::Duration::from_secs(60);
/// The longest wait before a failed login is refused.
const MAX_LOGIN_DELAY: std::time::Duration = std::time::Duration::from_secs(10);

/// A connection the handshake gives back: refused (the CONNACK saying why
/// is in its outbox) or ended, for the caller to close.
pub type Refused<R, W> = (Connection<R, W>, Outbox);

enum FirstPacket {
    Packet(Packet),
    /// The first byte already says it is not a CONNECT.
    NotConnect(u8),
    Closed,
    Io(io::Error),
    Malformed(DecodeError),
}

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
    let token = context.core.tasks.token().clone();
    let claim = tokio::select! {
        _ = token.cancelled() => return Err((connection, outbox)),
        claim = context.core.sessions.acquire(&client_id) => claim,
    };
    let (lease, parked) = claim;
    let endpoint = claim_session(
        context, &lease, parked, outbox, &connect, client_id, username, decision, login,
    );
    Ok(Box::new(Session {
        connection,
        endpoint,
        lease,
        peer: origin.peer,
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
    let config = &context.core.config;
    let has_passwords = context.auth.passwords().is_some();
    let (client_id, assigned) = decide::admit(config, connect, origin, has_passwords)?;
    tracing::Span::current().record("client_id", &*client_id);
    let login = authenticate(context, connection, outbox, connect, &client_id, origin).await?;
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
    let read = read_packet(connection, outbox, Some(PacketType::Connect));
    let first = tokio::select! {
        _ = token.cancelled() => return None,
        first = tokio::time::timeout(core.config.connect_timeout(), read) => first,
    };
    match first {
        Ok(FirstPacket::Packet(Packet::Connect(connect))) => Some(connect),
        Err(_elapsed) => {
            core.metrics.connect_timeouts.increment();
            tracing::info!(
                timeout_secs = core.config.connect_timeout,
                "no CONNECT within connect_timeout; closing"
            );
            None
        }
        Ok(FirstPacket::Closed) => {
            tracing::debug!("closed before CONNECT");
            None
        }
        Ok(FirstPacket::Io(error)) => {
            tracing::debug!(%error, "read error before CONNECT");
            None
        }
        Ok(FirstPacket::Malformed(error)) => {
            core.metrics.protocol_errors.increment();
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
        Ok(FirstPacket::NotConnect(packet_type)) => {
            core.metrics.protocol_errors.increment();
            tracing::warn!(
                packet_type,
                "[MQTT-3.1.0-1] first packet is not CONNECT; closing"
            );
            None
        }
        // Unreachable in practice: the type was checked on the first byte.
        Ok(FirstPacket::Packet(other)) => {
            core.metrics.protocol_errors.increment();
            tracing::warn!(packet = ?other.packet_type(), "[MQTT-3.1.0-1] first packet is not CONNECT; closing");
            None
        }
    }
}

/// Authenticates the client: a user name with a password against the
/// password file (unless an authentication method checks instead), an
/// enhanced authentication exchange, and the user the method proved must
/// be the one CONNECT names.
async fn authenticate<R, W>(
    context: &Context,
    connection: &mut Connection<R, W>,
    outbox: &mut Outbox,
    connect: &Connect,
    client_id: &str,
    origin: &Origin,
) -> Result<Login, Refusal>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let password_login = connect.properties.authentication_method.is_none();
    if let (Some(username), Some(passwords), true) =
        (&connect.username, context.auth.passwords(), password_login)
    {
        let user = username.clone();
        let password = connect.password.clone().unwrap_or_default();
        // Hashing is slow on purpose: off the async threads, and a few at
        // a time.
        let permit = context.auth.password_checks.acquire().await;
        let verified = tokio::task::spawn_blocking(move || passwords.verify(&user, &password))
            .await
            .unwrap_or(false);
        drop(permit);
        if !verified {
            return Err(refuse_login(context, origin.peer.ip(), username).await);
        }
    }
    let Some(name) = &connect.properties.authentication_method else {
        return Ok(Login::default());
    };
    let login = exchange(context, connection, outbox, connect, name, client_id).await?;
    if let (Some(proved), Some(claimed)) = (&login.user, &connect.username) {
        if proved != claimed {
            // The CONNECT names someone other than who authenticated.
            return Err(refuse_login(context, origin.peer.ip(), claimed).await);
        }
    }
    Ok(login)
}

/// Runs an enhanced authentication exchange (section 4.12): AUTH 0x18
/// back and forth until the method decides.
async fn exchange<R, W>(
    context: &Context,
    connection: &mut Connection<R, W>,
    outbox: &mut Outbox,
    connect: &Connect,
    name: &str,
    client_id: &str,
) -> Result<Login, Refusal>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let Some(method) = context.auth.method(name).cloned() else {
        // [MQTT-4.12.0-1] (v5.0): a method this broker does not know.
        tracing::info!(method = %name, "unknown authentication method");
        return Err(Refusal::with(
            ReasonCode::BadAuthenticationMethod,
            "unknown authentication method; refusing",
            false,
        ));
    };
    let mut exchange = method.start(client_id, connect.username.as_deref());
    let mut data = connect.properties.authentication_data.clone();
    loop {
        let out = match exchange.step(data.as_deref()) {
            AuthStep::Success(out) => {
                let user = exchange.username();
                return Ok(Login {
                    method: Some((method, out)),
                    user,
                });
            }
            AuthStep::Failure(reason_code) => {
                tracing::info!(method = %name, ?reason_code, "authentication failed");
                return Err(Refusal::with(
                    reason_code,
                    "authentication failed; refusing",
                    false,
                ));
            }
            AuthStep::Continue(out) => out,
        };
        // [MQTT-4.12.0-2] (v5.0): 0x18, and the method named
        // [MQTT-4.12.0-5] (v5.0).
        outbox.send_or_log(Packet::Auth(Auth {
            reason_code: ReasonCode::ContinueAuthentication,
            properties: AuthProperties {
                authentication_method: Some(name.to_owned()),
                authentication_data: out,
                ..AuthProperties::default()
            },
        }));
        let timeout = context.core.config.connect_timeout();
        let next = tokio::time::timeout(timeout, read_packet(connection, outbox, None)).await;
        data = match next {
            Ok(FirstPacket::Packet(Packet::Auth(auth)))
                if auth.reason_code == ReasonCode::ContinueAuthentication
                    && auth.properties.authentication_method.as_deref() == Some(name) =>
            {
                auth.properties.authentication_data
            }
            // [MQTT-3.1.2-30] (v5.0): only AUTH (or DISCONNECT) until
            // CONNACK, with the same method.
            Ok(FirstPacket::Packet(_) | FirstPacket::Malformed(_)) => {
                return Err(Refusal::with(
                    ReasonCode::ProtocolError,
                    "not an AUTH continuing the exchange; refusing",
                    true,
                ));
            }
            Ok(_) | Err(_) => {
                return Err(Refusal::silent("authentication exchange abandoned", false))
            }
        };
    }
}

/// The next whole packet, reading as needed (and writing `outbox`). With
/// `only`, a packet of another type is refused from its first byte,
/// without waiting for the rest of it [MQTT-3.1.0-1] (v3.1.1).
async fn read_packet<R, W>(
    connection: &mut Connection<R, W>,
    outbox: &mut Outbox,
    only: Option<PacketType>,
) -> FirstPacket
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        if let (Some(packet_type), Some(only)) = (connection.next_packet_type(), only) {
            if packet_type != only as u8 {
                return FirstPacket::NotConnect(packet_type);
            }
        }
        match connection.next_packet() {
            Ok(Some(packet)) => return FirstPacket::Packet(packet),
            Ok(None) => {}
            Err(error) => return FirstPacket::Malformed(error),
        }
        match connection.read_more(outbox).await {
            Ok(0) => return FirstPacket::Closed,
            Ok(_) => {}
            Err(error) => return FirstPacket::Io(error),
        }
    }
}

/// Refuses a login with a wrong user name or password: CONNACK 0x86 (0x04
/// at 3.1.1), after a wait that grows with the recent failures from the
/// same address, so guessing passwords is slow.
async fn refuse_login(context: &Context, address: std::net::IpAddr, username: &str) -> Refusal {
    context.core.metrics.auth_failures.increment();
    let now = tokio::time::Instant::now();
    let failures = {
        let mut entry = context
            .auth
            .login_failures
            .entry(address)
            .or_insert((0, now));
        if now.duration_since(entry.1) > LOGIN_FAILURE_MEMORY {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        entry.0
    };
    tracing::info!(username, failures, "wrong user name or password");
    let delay = std::time::Duration::from_millis(context.core.config.auth_failure_delay)
        .saturating_mul(failures)
        .min(MAX_LOGIN_DELAY);
    tokio::time::sleep(delay).await;
    Refusal::with(
        ReasonCode::BadUserNameOrPassword,
        "wrong user name or password; refusing",
        false,
    )
}

/// Writes what a refusal says: the CONNACK (at 3.x the nearest return
/// code, without the properties) [MQTT-3.2.2-7] (v5.0), the log line and
/// the counter; the caller closes.
fn refuse(context: &Context, outbox: &mut Outbox, refusal: Refusal) {
    if refusal.protocol_error {
        context.core.metrics.protocol_errors.increment();
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
    let (state, inbox, session_present) = match parked {
        // [MQTT-3.1.2-4] (v3.1.1) [MQTT-3.1.2-5] (v5.0): resume the session.
        Some(parked) if !connect.clean_start => {
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
            // [MQTT-3.1.2-6] (v3.1.1) [MQTT-3.1.2-4] (v5.0): clean start
            // discards what was there; a will still waiting for its delay
            // goes now, as the session ends [MQTT-3.1.2-8] (v5.0).
            if let Some(old) = other {
                old.discard(core, &client_id);
            }
            let inbox = Inbox::new(
                Arc::clone(&client_id),
                super::restore::inbox_limits(&core.config),
            );
            (SessionState::default(), inbox, false)
        }
    };
    let (inbox, receiver) = inbox;
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
    core.sessions.attach(lease, &inbox, core.tasks.token());
    outbox.set_max_packet(negotiated.max_outgoing_packet);
    let auth = login.method.map(|(method, _)| AuthState {
        method,
        username: connect.username.clone(),
        exchange: None,
    });
    let throttle = super::throttle::Throttle::new(&core.config);
    let role = Role::Server(ServerSide::new(username, auth, throttle));
    let mut endpoint = Endpoint::new(outbox, client_id, state, (inbox, receiver), role);
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
