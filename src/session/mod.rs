//! One client's protocol state machine, driven by its connection task: the
//! CONNECT handshake and takeover ([`handshake`]), then the session loop
//! ([`driver`]): keep-alive, what the client sends ([`inbound`]) and what
//! it is sent ([`outbound`]) with the in-flight window and topic aliases
//! ([`alias`]); when the connection ends, the will and the session's fate
//! ([`close`]), and later its expiry ([`expiry`]). The state itself
//! ([`state`]) is plain data, separate from the socket.

pub mod alias;
pub mod close;
pub mod driver;
pub mod durable;
pub mod expiry;
pub mod handshake;
pub mod inbound;
pub mod manager;
pub mod negotiate;
pub mod outbound;
pub mod restore;
pub mod retained;
pub mod state;
pub mod throttle;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::Instrument;

use crate::auth::{AuthExchange, EnhancedAuth};
use crate::config::Config;
use crate::connection::Connection;
use crate::metrics::Metrics;
use crate::protocol::{LastWill, Packet};
use crate::router::inbox::{Inbox, InboxReceiver};
use crate::router::Router;
use crate::shutdown::Tasks;
use alias::TopicAliases;
use manager::{Lease, SessionManager};
use state::SessionState;

/// A connected client's session, handed from the handshake to the driver.
#[derive(Debug)]
pub struct Session<R, W> {
    /// The framed connection (it knows the protocol version).
    pub connection: Connection<R, W>,
    /// The client id (assigned by the broker if the client sent none).
    pub client_id: Arc<str>,
    /// The user name the client authenticated as (from CONNECT, or its
    /// certificate), for the ACL.
    pub username: Option<Arc<str>>,
    /// The client's address.
    pub peer: SocketAddr,
    /// Keep alive in seconds, as granted; 0 turns it off.
    pub keep_alive: u16,
    /// Seconds the session outlives the connection: 0 ends it with the
    /// connection (3.1.1 clean session), `u32::MAX` never.
    pub session_expiry: u32,
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
    /// What the client announced in CONNECT.
    pub limits: ClientLimits,
    /// MQTT 5 topic aliases both ways, made on first use.
    pub aliases: Option<Box<TopicAliases>>,
    /// The enhanced authentication the client connected with, for
    /// re-authentication.
    pub auth: Option<Box<AuthState>>,
    /// The publish rate limit, when one is configured.
    pub throttle: Option<Box<throttle::Throttle>>,
    /// Packets waiting for the store ([`durable`]).
    pub held: Option<Box<durable::Held>>,
}

/// A client's enhanced authentication (section 4.12).
#[derive(Debug)]
pub struct AuthState {
    /// The method it authenticated with.
    pub method: Arc<dyn EnhancedAuth>,
    /// Its user name, if it gave one.
    pub username: Option<String>,
    /// A re-authentication under way.
    pub exchange: Option<Box<dyn AuthExchange>>,
}

/// What an MQTT 5 client announced about itself in CONNECT (3.x clients
/// get the defaults, which announce nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// Most unacknowledged QoS 1/2 PUBLISH to send it: its Receive Maximum,
    /// capped by `max_inflight`.
    pub send_window: u16,
    /// Most topic aliases the broker may give it (0: none).
    pub topic_alias_maximum: u16,
    /// Whether it wants Reason Strings and User Properties on packets
    /// other than PUBLISH, CONNACK and DISCONNECT [MQTT-3.1.2-29] (v5.0).
    pub problem_information: bool,
    /// A bridge marked as one (Mosquitto's `0x84` protocol level): what it
    /// publishes is never sent back to it (its subscriptions are No Local).
    pub bridge: bool,
}

impl<R, W> Session<R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    /// The tracing span of this connection, made when there is something
    /// to log rather than kept for the connection's life: a live span costs
    /// a few hundred bytes per idle connection.
    pub fn span(&self) -> tracing::Span {
        connection_span(self.peer, Some(&self.client_id))
    }

    /// Whether the ACL, if there is one, lets this client do `action` on
    /// `topic`.
    pub fn may(&self, shared: &Shared, topic: &str, action: crate::auth::acl::Action) -> bool {
        // Every delivery asks: without an ACL the answer costs nothing.
        if shared.config.acl_file.is_none() {
            return true;
        }
        match shared.acl() {
            Some(acl) => acl.allows(self.acl_client(), topic, action),
            None => true,
        }
    }

    /// This client as the ACL sees it.
    pub fn acl_client(&self) -> crate::auth::acl::Client<'_> {
        crate::auth::acl::Client {
            username: self.username.as_deref(),
            client_id: &self.client_id,
        }
    }

    /// Sends a packet the broker built; see [`send_or_log`]. While packets
    /// wait for the store, it waits behind them.
    pub fn send(&mut self, packet: Packet) {
        if let Some(ticket) = self.held.as_deref().and_then(durable::Held::last_ticket) {
            durable::hold(self, ticket, durable::HeldPacket::Packet(Box::new(packet)));
            return;
        }
        send_or_log(&mut self.connection, packet);
    }
}

/// Encodes a packet. One too large for the client's Maximum Packet Size
/// goes without its Reason String and User Properties [MQTT-3.4.2-2]
/// (v5.0) and the like, or not at all; a packet Petrel builds otherwise
/// always encodes, so a failure is a bug worth a log line, not a reason to
/// stop.
pub fn send_or_log<R, W>(connection: &mut Connection<R, W>, mut packet: Packet)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut result = connection.send(&packet);
    if matches!(
        result,
        Err(crate::protocol::EncodeError::OverPeerMaximum { .. })
    ) && packet.strip_diagnostics()
    {
        result = connection.send(&packet);
    }
    if let Err(error) = result {
        tracing::error!(%error, packet = ?packet.packet_type(), "could not send packet");
    }
}

/// What every connection task shares.
#[derive(Debug)]
pub struct Shared {
    /// The configuration in force.
    pub config: Arc<Config>,
    /// The router.
    pub router: Arc<Router>,
    /// Sessions by client id.
    pub sessions: SessionManager,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The broker's tasks; its token signals shutdown.
    pub tasks: Tasks,
    /// Enhanced authentication methods, by name.
    pub auth_methods: Vec<Arc<dyn EnhancedAuth>>,
    /// The ACL in force, if one is configured.
    pub acl: std::sync::RwLock<Option<Arc<crate::auth::acl::Acl>>>,
    /// The password file in force, if one is configured.
    pub passwords: Arc<std::sync::RwLock<Option<Arc<crate::auth::password::PasswordFile>>>>,
    /// Open connections by client address, while
    /// `max_connections_per_address` is set.
    pub connections_by_address: dashmap::DashMap<std::net::IpAddr, usize>,
    /// Password checks running at once are bounded by this (argon2 takes
    /// memory and CPU by design), so a flood of logins queues instead.
    pub password_checks: tokio::sync::Semaphore,
    /// Recent failed logins by address: how many, and when the last was.
    pub login_failures: dashmap::DashMap<std::net::IpAddr, (u32, tokio::time::Instant)>,
    /// The durable store, when `persistence` is on.
    pub store: Option<Arc<crate::store::Store>>,
}

impl Shared {
    /// The ACL in force.
    pub fn acl(&self) -> Option<Arc<crate::auth::acl::Acl>> {
        self.acl
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The password file in force.
    pub fn passwords(&self) -> Option<Arc<crate::auth::password::PasswordFile>> {
        self.passwords
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The enhanced authentication method called `name`, if the broker has it.
    pub fn auth_method(&self, name: &str) -> Option<&Arc<dyn EnhancedAuth>> {
        self.auth_methods
            .iter()
            .find(|method| method.method() == name)
    }
}

/// Where a connection comes from: the client's address, its listener's
/// policy, and what its transport proved about it.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The client's address.
    pub peer: SocketAddr,
    /// The listener's `allow_anonymous`, if it sets one.
    pub allow_anonymous: Option<bool>,
    /// What TLS proved (a client certificate), if the listener has TLS.
    pub identity: Option<Box<crate::transport::Identity>>,
}

/// The span a connection's log lines are in.
pub fn connection_span(peer: SocketAddr, client_id: Option<&str>) -> tracing::Span {
    match client_id {
        Some(client_id) => tracing::info_span!("connection", %peer, client_id),
        None => tracing::info_span!("connection", %peer, client_id = tracing::field::Empty),
    }
}

/// Serves one client connection from its first byte to its close, then
/// drops `guard`. The caller spawns this future itself rather than wrapping
/// it (a wrapper would hold it twice): every byte of it is paid per idle
/// connection. Only the handshake and the close run in the connection's
/// span; the session loop in between logs with the client id in each line.
pub async fn serve<R, W, G>(shared: Arc<Shared>, reader: R, writer: W, origin: Origin, guard: G)
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
    G: Send,
{
    let _guard = guard;
    let connection = Connection::new(
        reader,
        writer,
        shared.config.max_packet_size,
        Arc::clone(&shared.metrics),
    );
    // The handshake's future is boxed: it is large and only alive until
    // CONNACK, so it should not size the connection's task.
    let span = connection_span(origin.peer, None);
    let handshake = handshake::accept(&shared, connection, origin);
    match Box::pin(handshake.instrument(span)).await {
        Ok(session) => driver::run(&shared, session).await,
        // Refused (the CONNACK is written) or ended before CONNACK.
        Err(mut connection) => Box::pin(connection.close(false)).await,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    // Memory per connection is a product goal (docs/performance.md): the
    // connection task's future and the session it keeps are bounded here so
    // that a change that makes every idle connection bigger fails a test.
    #[tokio::test]
    async fn connection_task_stays_small() {
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let shared = Arc::new(super::Shared {
            router: Arc::new(crate::router::Router::new(
                1,
                1,
                Default::default(),
                Arc::clone(&metrics),
            )),
            config: Arc::new(crate::config::Config::default()),
            sessions: super::manager::SessionManager::new(),
            metrics,
            tasks: crate::shutdown::Tasks::new(),
            auth_methods: Vec::new(),
            passwords: Default::default(),
            acl: Default::default(),
            connections_by_address: Default::default(),
            password_checks: tokio::sync::Semaphore::new(1),
            login_failures: Default::default(),
            store: None,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (reader, writer) = stream.into_split();
        let origin = super::Origin {
            peer: "127.0.0.1:1".parse().unwrap(),
            allow_anonymous: None,
            identity: None,
        };
        let task = super::serve(shared, reader, writer, origin, ());
        let task_bytes = std::mem::size_of_val(&task);
        assert!(
            task_bytes <= 1024,
            "connection future is {task_bytes} bytes"
        );
        type TcpSession =
            super::Session<tokio::net::tcp::OwnedReadHalf, tokio::net::tcp::OwnedWriteHalf>;
        let session_bytes = std::mem::size_of::<TcpSession>();
        assert!(session_bytes <= 448, "session is {session_bytes} bytes");
    }
}
