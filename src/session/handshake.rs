//! The CONNECT handshake: the first packet must be a CONNECT and must come
//! within `connect_timeout`; the client id is checked or assigned; what
//! the client announced and what the broker grants are settled
//! ([`super::negotiate`]); the session is claimed (taking it over from
//! another connection if needed); CONNACK tells the truth about the session
//! and the broker; unacknowledged messages are re-sent first.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncWrite};

use super::negotiate::Negotiated;
use super::state::SessionState;
use super::{send_or_log, AuthState, Session, Shared};
use crate::auth::{AuthStep, EnhancedAuth};
use crate::connection::Connection;
use crate::protocol::{
    Auth, AuthProperties, ConnAck, ConnAckProperties, Connect, DecodeError, Packet, PacketType,
    ReasonCode,
};
use crate::router::inbox::Inbox;

enum FirstPacket {
    Packet(Packet),
    /// The first byte already says it is not a CONNECT.
    NotConnect(u8),
    Closed,
    Io(io::Error),
    Malformed(DecodeError),
}

/// Runs the handshake. On a refusal, or a connection that ended, the
/// connection comes back for the caller to close (a refusing CONNACK is
/// already in its write buffer).
pub async fn accept<R, W>(
    shared: &Shared,
    mut connection: Connection<R, W>,
    origin: super::Origin,
) -> Result<Box<Session<R, W>>, Connection<R, W>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    match handshake(shared, &mut connection, origin).await {
        Some(granted) => Ok(granted.into_session(shared, connection)),
        None => Err(connection),
    }
}

/// What the handshake granted: everything the session is made of but its
/// connection.
struct Granted {
    connect: Box<Connect>,
    client_id: Arc<str>,
    username: Option<Arc<str>>,
    peer: std::net::SocketAddr,
    negotiated: Negotiated,
    state: SessionState,
    inbox: Arc<Inbox>,
    receiver: crate::router::inbox::InboxReceiver,
    lease: super::manager::Lease,
    auth: Option<Box<AuthState>>,
    connack: Packet,
    session_present: bool,
}

impl Granted {
    /// The session on `connection`: CONNACK sent, unacknowledged messages
    /// re-sent after it.
    fn into_session<R, W>(
        self,
        shared: &Shared,
        mut connection: Connection<R, W>,
    ) -> Box<Session<R, W>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let Granted {
            connect,
            client_id,
            username,
            peer,
            negotiated,
            state,
            inbox,
            receiver,
            lease,
            auth,
            connack,
            session_present,
        } = self;
        connection.max_outgoing_packet = negotiated.max_outgoing_packet;
        // Boxed: the session lives as long as the connection, and its
        // futures then hold a pointer rather than a copy each.
        let mut session = Box::new(Session {
            connection,
            client_id,
            username,
            peer,
            keep_alive: negotiated.keep_alive,
            session_expiry: negotiated.session_expiry,
            will: connect.will.clone().map(Box::new),
            state,
            inbox,
            receiver,
            lease,
            congested: None,
            limits: negotiated.limits,
            aliases: None,
            auth,
            throttle: super::throttle::Throttle::new(&shared.config),
            held: None,
        });
        session.send(connack);
        super::outbound::resend_inflight(shared, &mut session);
        shared.metrics.clients_connected.increment();
        if session_present {
            shared.metrics.clients_disconnected.decrement();
        }
        tracing::info!(
            protocol = ?connect.protocol,
            clean_start = connect.clean_start,
            keep_alive = session.keep_alive,
            session_expiry = session.session_expiry,
            session_present,
            "client connected"
        );
        session
    }
}

/// The handshake up to the claim of the session; `None` once refused
/// (the CONNACK saying why is written) or ended.
async fn handshake<R, W>(
    shared: &Shared,
    connection: &mut Connection<R, W>,
    origin: super::Origin,
) -> Option<Granted>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let token = shared.tasks.token().clone();
    let first = tokio::select! {
        _ = token.cancelled() => return None,
        first = tokio::time::timeout(shared.config.connect_timeout(), read_first(connection)) => first,
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
                refuse(
                    connection,
                    ReasonCode::UnsupportedProtocolVersion,
                    ConnAckProperties::default(),
                )
                .await;
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
    check_connect(shared, connection, &connect, &origin).await?;
    let (client_id, assigned) = client_id(shared, connection, &connect).await?;
    tracing::Span::current().record("client_id", &*client_id);
    // A user name with a password is checked against the password file;
    // with an authentication method, the method checks instead.
    let password_login = connect.properties.authentication_method.is_none();
    if let (Some(username), Some(passwords), true) =
        (&connect.username, shared.passwords(), password_login)
    {
        let user = username.clone();
        let password = connect.password.clone().unwrap_or_default();
        // Hashing is slow on purpose: off the async threads, and a few at
        // a time.
        let permit = shared.password_checks.acquire().await;
        let verified = tokio::task::spawn_blocking(move || passwords.verify(&user, &password))
            .await
            .unwrap_or(false);
        drop(permit);
        if !verified {
            refuse_login(shared, connection, origin.peer.ip(), username).await;
            return None;
        }
    }
    let auth = match &connect.properties.authentication_method {
        Some(name) => Some(authenticate(shared, connection, &connect, name, &client_id).await?),
        None => None,
    };
    let method_user = auth.as_ref().and_then(|(_, _, user)| user.clone());
    if let (Some(proved), Some(claimed)) = (&method_user, &connect.username) {
        if proved != claimed {
            // The CONNECT names someone other than who authenticated.
            refuse_login(shared, connection, origin.peer.ip(), claimed).await;
            return None;
        }
    }
    let mut negotiated = match Negotiated::new(&shared.config, &connect, assigned, &client_id) {
        Ok(negotiated) => negotiated,
        Err((reason_code, rule)) => {
            shared.metrics.protocol_errors.increment();
            tracing::info!(rule, "CONNECT refused");
            refuse(connection, reason_code, ConnAckProperties::default()).await;
            return None;
        }
    };
    // The CONNACK is built here, whole but for Session Present (which does
    // not change its size), and sent once the session is claimed.
    let mut properties = std::mem::take(&mut negotiated.connack);
    if let Some((method, data, _)) = &auth {
        // [MQTT-4.12.0-5] (v5.0): CONNACK names the method.
        properties.authentication_method = Some(method.method().to_owned());
        properties.authentication_data = data.clone();
    }
    let mut connack = Packet::ConnAck(ConnAck {
        session_present: true,
        reason_code: ReasonCode::Success,
        properties,
    });
    // [MQTT-3.1.2-24] (v5.0): a client whose Maximum Packet Size cannot
    // take even the CONNACK cannot be served; closed before its session is
    // touched.
    let connack_size = connack.encoded_len(connect.protocol).unwrap_or(usize::MAX);
    if connack_size > negotiated.max_outgoing_packet as usize {
        shared.metrics.protocol_errors.increment();
        tracing::info!(
            connack_size,
            maximum_packet_size = negotiated.max_outgoing_packet,
            "the client's Maximum Packet Size is smaller than CONNACK; closing"
        );
        return None;
    }
    let claim = tokio::select! {
        _ = token.cancelled() => return None,
        claim = shared.sessions.acquire(&client_id) => claim,
    };
    let (lease, parked) = claim;
    let limits = super::restore::inbox_limits(&shared.config);
    let (state, inbox, receiver, session_present) = match parked {
        // [MQTT-3.1.2-4] (v3.1.1) [MQTT-3.1.2-5] (v5.0): resume the session.
        Some(parked) if !connect.clean_start => {
            if parked.will.is_some() {
                // [MQTT-3.1.3-9] (v5.0): back to this session before the
                // Will Delay Interval passed, so the will is not sent.
                shared.metrics.wills_cancelled.increment();
                tracing::debug!(will_at = ?parked.will_at, "reconnected within the will delay: will cancelled");
            }
            (parked.state, parked.inbox, parked.receiver, true)
        }
        other => {
            // [MQTT-3.1.2-6] (v3.1.1) [MQTT-3.1.2-4] (v5.0): clean start
            // discards what was there.
            if let Some(mut old) = other {
                // The old session ends here, so a will still waiting for
                // its delay goes now [MQTT-3.1.2-8] (v5.0).
                if let Some(will) = old.will.take() {
                    super::close::publish_will(shared, *will, &client_id);
                }
                shared.metrics.clients_disconnected.decrement();
                for filter in old.state.subscriptions.keys() {
                    shared.router.unsubscribe(filter.as_str(), &client_id);
                }
                let durable = old.inbox.is_durable();
                // Its inbox closes before the store forgets it, so nothing
                // is journaled for it afterwards.
                drop(old);
                if let Some(store) = shared.store.as_ref().filter(|_| durable) {
                    store.session_removed(&client_id);
                }
            }
            let (inbox, receiver) = Inbox::new(Arc::clone(&client_id), limits);
            (SessionState::default(), inbox, receiver, false)
        }
    };
    inbox.set_online(true);
    if let Some(store) = &shared.store {
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
    shared.sessions.attach(&lease, &inbox, shared.tasks.token());
    let auth = auth.map(|(method, _, _)| {
        Box::new(AuthState {
            method,
            username: connect.username.clone(),
            exchange: None,
        })
    });
    let username = origin
        .identity
        .as_ref()
        .and_then(|identity| identity.username.as_deref())
        .or(method_user.as_deref())
        .or(connect.username.as_deref())
        .map(Arc::from);
    // [MQTT-3.2.2-1] [MQTT-3.2.2-2] (v3.1.1) [MQTT-3.2.2-2] (v5.0):
    // session present tells the truth.
    if let Packet::ConnAck(connack) = &mut connack {
        connack.session_present = session_present;
    }
    Some(Granted {
        connect,
        client_id,
        username,
        peer: origin.peer,
        negotiated,
        state,
        inbox,
        receiver,
        lease,
        auth,
        connack,
        session_present,
    })
}

async fn read_first<R, W>(connection: &mut Connection<R, W>) -> FirstPacket
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    read_packet(connection, Some(PacketType::Connect)).await
}

/// Runs an enhanced authentication exchange (section 4.12): AUTH 0x18
/// back and forth until the method decides. The method, the data for
/// CONNACK and the user it proved on success; `None` once refused and
/// closed.
async fn authenticate<R, W>(
    shared: &Shared,
    connection: &mut Connection<R, W>,
    connect: &Connect,
    name: &str,
    client_id: &str,
) -> Option<(Arc<dyn EnhancedAuth>, Option<bytes::Bytes>, Option<String>)>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let Some(method) = shared.auth_method(name).cloned() else {
        // [MQTT-4.12.0-1] (v5.0): a method this broker does not know.
        tracing::info!(method = %name, "unknown authentication method; refusing");
        refuse(
            connection,
            ReasonCode::BadAuthenticationMethod,
            ConnAckProperties::default(),
        )
        .await;
        return None;
    };
    let mut exchange = method.start(client_id, connect.username.as_deref());
    let mut data = connect.properties.authentication_data.clone();
    loop {
        match exchange.step(data.as_deref()) {
            AuthStep::Success(out) => return Some((method, out, exchange.username())),
            AuthStep::Failure(reason_code) => {
                tracing::info!(method = %name, ?reason_code, "authentication failed");
                refuse(connection, reason_code, ConnAckProperties::default()).await;
                return None;
            }
            AuthStep::Continue(out) => {
                // [MQTT-4.12.0-2] (v5.0): 0x18, and the method named
                // [MQTT-4.12.0-5] (v5.0).
                send_or_log(
                    connection,
                    Packet::Auth(Auth {
                        reason_code: ReasonCode::ContinueAuthentication,
                        properties: AuthProperties {
                            authentication_method: Some(name.to_owned()),
                            authentication_data: out,
                            ..AuthProperties::default()
                        },
                    }),
                );
                let next = tokio::time::timeout(
                    shared.config.connect_timeout(),
                    read_packet(connection, None),
                )
                .await;
                match next {
                    Ok(FirstPacket::Packet(Packet::Auth(auth)))
                        if auth.reason_code == ReasonCode::ContinueAuthentication
                            && auth.properties.authentication_method.as_deref() == Some(name) =>
                    {
                        data = auth.properties.authentication_data;
                    }
                    Ok(FirstPacket::Packet(_)) | Ok(FirstPacket::Malformed(_)) => {
                        // [MQTT-3.1.2-30] (v5.0): only AUTH (or DISCONNECT)
                        // until CONNACK, with the same method.
                        shared.metrics.protocol_errors.increment();
                        tracing::info!("not an AUTH continuing the exchange; refusing");
                        refuse(
                            connection,
                            ReasonCode::ProtocolError,
                            ConnAckProperties::default(),
                        )
                        .await;
                        return None;
                    }
                    Ok(_) | Err(_) => {
                        tracing::info!("authentication exchange abandoned");
                        return None;
                    }
                }
            }
        }
    }
}

/// The next whole packet, reading as needed. With `only`, a packet of
/// another type is refused from its first byte, without waiting for the
/// rest of it [MQTT-3.1.0-1] (v3.1.1).
async fn read_packet<R, W>(
    connection: &mut Connection<R, W>,
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
        match connection.read_more().await {
            Ok(0) => return FirstPacket::Closed,
            Ok(_) => {}
            Err(error) => return FirstPacket::Io(error),
        }
    }
}

/// Checks what the codec cannot: the will topic's bounds, whether the
/// broker sends clients elsewhere, whether anonymous clients may connect.
async fn check_connect<R, W>(
    shared: &Shared,
    connection: &mut Connection<R, W>,
    connect: &Connect,
    origin: &super::Origin,
) -> Option<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    connection.version = connect.protocol;
    // Even a refusal must fit the client's Maximum Packet Size.
    if let Some(maximum) = connect.properties.maximum_packet_size {
        connection.max_outgoing_packet = maximum.get();
    }
    let v5 = connect.protocol.is_v5();
    if let Some(will) = &connect.will {
        if let Err(reason) = crate::protocol::topic::check_bounds(
            will.topic.as_str(),
            shared.config.max_topic_length,
            shared.config.max_topic_levels,
        ) {
            shared.metrics.protocol_errors.increment();
            tracing::warn!(topic = %will.topic, reason, "will topic refused");
            refuse(
                connection,
                ReasonCode::TopicNameInvalid,
                ConnAckProperties::default(),
            )
            .await;
            return None;
        }
    }
    if let Some(redirect) = shared.config.redirect.as_ref().filter(|r| r.on_connect) {
        tracing::info!(server_reference = %redirect.server_reference, "redirecting the client");
        let mut properties = ConnAckProperties::default();
        let reason_code = if !v5 {
            ReasonCode::ServerUnavailable
        } else if redirect.permanent {
            ReasonCode::ServerMoved
        } else {
            ReasonCode::UseAnotherServer
        };
        properties.server_reference = Some(redirect.server_reference.clone());
        refuse(connection, reason_code, properties).await;
        return None;
    }
    // A client is anonymous unless it authenticates: an enhanced
    // authentication method, a client certificate, or a user name checked
    // against the password file (next).
    let authenticated = connect.properties.authentication_method.is_some()
        || origin
            .identity
            .as_ref()
            .is_some_and(|identity| identity.certificate)
        || (connect.username.is_some() && shared.passwords().is_some());
    // Unset everywhere: allowed, unless a password file says logins are
    // expected.
    let allow_anonymous = origin
        .allow_anonymous
        .or(shared.config.allow_anonymous)
        .unwrap_or(shared.config.password_file.is_none());
    if !allow_anonymous && !authenticated {
        // No authentication is configured, so nobody is authorised.
        tracing::info!("anonymous clients are not allowed; refusing");
        refuse(
            connection,
            ReasonCode::NotAuthorized,
            ConnAckProperties::default(),
        )
        .await;
        return None;
    }
    Some(())
}

/// The client id to use, and whether the broker assigned it: the
/// client's, or a new unique one for an empty id [MQTT-3.1.3-6] (v3.1.1)
/// [MQTT-3.1.3-6] (v5.0). At 3.1.1 an empty id needs clean session, or it
/// is refused with CONNACK 0x02 [MQTT-3.1.3-8] (v3.1.1).
async fn client_id<R, W>(
    shared: &Shared,
    connection: &mut Connection<R, W>,
    connect: &Connect,
) -> Option<(Arc<str>, bool)>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let refusal = if connect
        .client_id
        .starts_with(crate::bridge::LOCAL_ID_PREFIX)
    {
        // The broker's own bridges hold these sessions.
        Some("client id reserved for bridges; refusing")
    } else if connect.client_id.is_empty() && !connect.clean_start && !connect.protocol.is_v5() {
        Some("[MQTT-3.1.3-8] empty client id without clean session; refusing")
    } else {
        None
    };
    if let Some(why) = refusal {
        shared.metrics.protocol_errors.increment();
        tracing::info!(client_id = %connect.client_id, "{why}");
        refuse(
            connection,
            ReasonCode::ClientIdentifierNotValid,
            ConnAckProperties::default(),
        )
        .await;
        return None;
    }
    if !connect.client_id.is_empty() {
        return Some((Arc::from(connect.client_id.as_str()), false));
    }
    Some((Arc::from(assign_client_id()), true))
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

/// Refuses a login with a wrong user name or password: CONNACK 0x86 (0x04
/// at 3.1.1), after a wait that grows with the recent failures from the
/// same address, so guessing passwords is slow.
async fn refuse_login<R, W>(
    shared: &Shared,
    connection: &mut Connection<R, W>,
    address: std::net::IpAddr,
    username: &str,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    shared.metrics.auth_failures.increment();
    let now = tokio::time::Instant::now();
    let failures = {
        let mut entry = shared.login_failures.entry(address).or_insert((0, now));
        if now.duration_since(entry.1) > LOGIN_FAILURE_MEMORY {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        entry.0
    };
    tracing::info!(username, failures, "wrong user name or password; refusing");
    let delay = std::time::Duration::from_millis(shared.config.auth_failure_delay)
        .saturating_mul(failures)
        .min(MAX_LOGIN_DELAY);
    tokio::time::sleep(delay).await;
    refuse(
        connection,
        ReasonCode::BadUserNameOrPassword,
        ConnAckProperties::default(),
    )
    .await;
}

/// How long failed logins from an address are remembered.
pub const LOGIN_FAILURE_MEMORY: std::time::Duration = std::time::Duration::from_secs(60);
/// The longest wait before a failed login is refused.
const MAX_LOGIN_DELAY: std::time::Duration = std::time::Duration::from_secs(10);

/// Sends a refusing CONNACK (at 3.x the nearest return code, without the
/// properties); the caller closes [MQTT-3.2.2-7] (v5.0).
async fn refuse<R, W>(
    connection: &mut Connection<R, W>,
    reason_code: ReasonCode,
    properties: ConnAckProperties,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let connack = ConnAck {
        session_present: false,
        reason_code,
        properties,
    };
    send_or_log(connection, Packet::ConnAck(connack));
}
