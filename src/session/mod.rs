//! Sessions, their protocol written once. The [`endpoint`] is the
//! sans-I/O state machine of one session, for a client connected here and
//! for a bridge's connection to a remote broker alike. Around it, for a
//! client's connection: the CONNECT [`handshake`] (pure decisions, then
//! one claim of the session from the [`manager`]), the [`driver`] (a thin
//! `select!` moving bytes between the connection and the endpoint), and
//! when the connection ends the will and the session's fate ([`close`],
//! with the [`exit`] mapping), later its [`expiry`]. The state itself
//! ([`state`]) is plain data, separate from the socket; [`restore`] puts
//! back what the store kept.

pub mod alias;
pub mod close;
pub mod driver;
pub mod endpoint;
pub mod exit;
pub mod expiry;
pub mod handshake;
pub mod hibernate;
pub mod manager;
pub mod negotiate;
pub mod restore;
pub mod retained;
pub mod state;
pub mod throttle;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::Instrument;

use crate::connection::Connection;
use crate::context::Context;
use endpoint::Endpoint;
use manager::Lease;

/// A connected client's session, handed from the handshake to the driver.
#[derive(Debug)]
pub struct Session<R, W> {
    /// The framed connection.
    pub connection: Connection<R, W>,
    /// The session's protocol state machine.
    pub endpoint: Endpoint,
    /// This connection's claim on the session.
    pub lease: Lease,
    /// The client's address.
    pub peer: SocketAddr,
    /// Counts the connection as open until dropped (none for a bridge's):
    /// kept here, in the session's box, rather than in the connection's
    /// task, whose every byte every connection pays.
    pub guard: Option<crate::server::OpenConnection>,
}

impl<R, W> Session<R, W> {
    /// The tracing span of this connection, made when there is something
    /// to log rather than kept for the connection's life: a live span costs
    /// a few hundred bytes per idle connection.
    pub fn span(&self) -> tracing::Span {
        connection_span(self.peer, Some(self.endpoint.client_id()))
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
    /// The listener it came in on, if the broker's own loop accepted it.
    pub listener: Option<ListenerTag>,
}

/// Which listener a connection came in on: its number (for closing its
/// connections when a reload removes it) and its token, cancelled when it
/// stops accepting (a reload removed it, or the broker stops).
#[derive(Debug, Clone)]
pub struct ListenerTag {
    /// Unique among the listeners the broker runs (32 bits: it is kept
    /// with every connected session; it wraps after four billion reloads).
    pub id: u32,
    /// Cancelled when the listener closes.
    pub closed: tokio_util::sync::CancellationToken,
}

/// The span a connection's log lines are in.
pub fn connection_span(peer: SocketAddr, client_id: Option<&str>) -> tracing::Span {
    match client_id {
        Some(client_id) => tracing::info_span!("connection", %peer, client_id),
        None => tracing::info_span!("connection", %peer, client_id = tracing::field::Empty),
    }
}

/// Serves one client connection from its first byte to its close (or its
/// hibernation: then a later task goes on), then drops `guard`. The caller
/// spawns this future itself rather than wrapping it (a wrapper would hold
/// it twice): every byte of it is paid per connection. Only the handshake
/// and the close run in the connection's span; the session loop in between
/// logs with the client id in each line.
pub async fn serve<R, W>(
    context: Arc<Context>,
    reader: R,
    writer: W,
    origin: Origin,
    guard: Option<crate::server::OpenConnection>,
) where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
    (R, W): hibernate::Halves,
{
    let connection = Connection::new(
        reader,
        writer,
        context.core.config().max_packet_size,
        Arc::clone(&context.core.metrics),
    );
    // The handshake's future is boxed: it is large and only alive until
    // CONNACK, so it should not size the connection's task.
    let span = connection_span(origin.peer, None);
    // A refused connection (its CONNACK in the outbox) or one that ended
    // before CONNACK closes inside the boxed future too, so nothing of the
    // refusal is kept alive beside the session loop.
    let handshake = async {
        match handshake::accept(&context, connection, origin).await {
            Ok(session) => Some(session),
            Err((mut connection, mut outbox)) => {
                connection.close(&mut outbox, false).await;
                None
            }
        }
    };
    if let Some(mut session) = Box::pin(handshake.instrument(span)).await {
        session.guard = guard;
        driver::run(&context, session).await;
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
        let core = crate::context::Core::new(crate::config::Config::default(), metrics, None);
        let context = Arc::new(crate::context::Context {
            core,
            auth: crate::auth::Authenticator::open(),
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
            listener: None,
        };
        let task = super::serve(context, reader, writer, origin, None);
        let task_bytes = std::mem::size_of_val(&task);
        // The accept loop's guard is in it (none here, the same size). The
        // task's cell is this plus 112 bytes (header, scheduler, stage,
        // trailer, the task tracker's token), rounded up to 128: at 512 it
        // is 640, and a few bytes more would cost every awake connection
        // 128. (A hibernating connection has no task at all.)
        assert!(task_bytes <= 512, "connection future is {task_bytes} bytes");
        type TcpSession =
            super::Session<tokio::net::tcp::OwnedReadHalf, tokio::net::tcp::OwnedWriteHalf>;
        let session_bytes = std::mem::size_of::<TcpSession>();
        assert!(session_bytes <= 472, "session is {session_bytes} bytes");
        let endpoint_bytes = std::mem::size_of::<super::endpoint::Endpoint>();
        assert!(endpoint_bytes <= 328, "endpoint is {endpoint_bytes} bytes");
    }
}
