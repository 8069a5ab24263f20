//! One client's protocol state machine, driven by its connection task: the
//! CONNECT handshake and takeover ([`handshake`]), then the session loop
//! ([`driver`]): keep-alive, QoS 1/2 flows with the in-flight window, the
//! inbox, the will. The state itself ([`state`]) is plain data, separate
//! from the socket.

pub mod driver;
pub mod handshake;
pub mod manager;
pub mod state;

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

/// Serves one client connection from its first byte to its close.
pub async fn serve<R, W>(shared: Arc<Shared>, reader: R, writer: W, peer: SocketAddr)
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let span = tracing::info_span!("connection", %peer, client_id = tracing::field::Empty);
    async move {
        let connection = Connection::new(
            reader,
            writer,
            shared.config.max_packet_size,
            Arc::clone(&shared.metrics),
        );
        if let Some(session) = handshake::accept(&shared, connection).await {
            driver::run(&shared, session).await;
        }
    }
    .instrument(span)
    .await
}
