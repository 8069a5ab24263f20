//! The accept loop, one per listener: enforce `max_connections`, set socket
//! options, spawn one task per connection. Nothing else is awaited here: the
//! CONNECT handshake happens inside the connection's own task.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::session::{self, Shared};

/// Longest pause after a failing `accept` (out of file descriptors, say).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Accepts connections on `listener` until shutdown.
pub async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let token = shared.tasks.token().clone();
    let address = listener.local_addr().ok();
    tracing::info!(?address, "listening");
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = token.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed; pausing");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_millis(5);
        let metrics = &shared.metrics;
        if metrics.connections_open.get() >= shared.config.max_connections as u64 {
            metrics.connections_refused.increment();
            tracing::warn!(%peer, max_connections = shared.config.max_connections, "connection limit reached; closing new connection");
            drop(stream);
            continue;
        }
        if let Err(error) = stream.set_nodelay(shared.config.tcp_nodelay) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        metrics.connections_open.increment();
        let guard = OpenConnection(Arc::clone(metrics));
        let (reader, writer) = stream.into_split();
        let connection = session::serve(Arc::clone(&shared), reader, writer, peer, guard);
        shared.tasks.spawn(connection);
    }
}

/// Counts a socket as open until dropped.
struct OpenConnection(Arc<Metrics>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections_open.decrement();
    }
}
