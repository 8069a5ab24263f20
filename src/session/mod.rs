//! One client's protocol state machine, driven by its connection task: the
//! CONNECT handshake and takeover ([`handshake`]), then the session loop
//! ([`driver`]): keep-alive, QoS 1/2 flows with the in-flight window, the
//! inbox, the will. The state itself ([`state`]) is plain data, separate
//! from the socket.

pub mod driver;
pub mod handshake;
pub mod manager;
pub mod state;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::Instrument;

use crate::config::Config;
use crate::connection::Connection;
use crate::metrics::Metrics;
use crate::router::Router;
use crate::shutdown::Tasks;
use manager::SessionManager;

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
}

/// Serves one client connection from its first byte to its close, then
/// drops `guard`. The span is made before the future, so the future does
/// not carry the peer address along, and the caller spawns this future
/// itself rather than wrapping it (a wrapper would hold it twice): every
/// byte of it is paid per idle connection.
pub fn serve<R, W, G>(
    shared: Arc<Shared>,
    reader: R,
    writer: W,
    peer: SocketAddr,
    guard: G,
) -> impl Future<Output = ()> + Send
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
    G: Send,
{
    let span = tracing::info_span!("connection", %peer, client_id = tracing::field::Empty);
    async move {
        let _guard = guard;
        let connection = Connection::new(
            reader,
            writer,
            shared.config.max_packet_size,
            Arc::clone(&shared.metrics),
        );
        // The handshake's future is boxed: it is large and only alive
        // until CONNACK, so it should not size the connection's task.
        let accepted = Box::pin(handshake::accept(&shared, connection)).await;
        if let Some(session) = accepted {
            driver::run(&shared, session).await;
        }
    }
    .instrument(span)
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
            router: Arc::new(crate::router::Router::new(1, 1, Arc::clone(&metrics))),
            config: Arc::new(crate::config::Config::default()),
            sessions: super::manager::SessionManager::new(),
            metrics,
            tasks: crate::shutdown::Tasks::new(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (reader, writer) = stream.into_split();
        let peer = "127.0.0.1:1".parse().unwrap();
        let task = super::serve(shared, reader, writer, peer, ());
        let task_bytes = std::mem::size_of_val(&task);
        assert!(
            task_bytes <= 1024,
            "connection future is {task_bytes} bytes"
        );
        type TcpSession = super::handshake::Session<
            tokio::net::tcp::OwnedReadHalf,
            tokio::net::tcp::OwnedWriteHalf,
        >;
        let session_bytes = std::mem::size_of::<TcpSession>();
        assert!(session_bytes <= 448, "session is {session_bytes} bytes");
    }
}
