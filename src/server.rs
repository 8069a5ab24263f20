//! The accept loop, one per listener: enforce `max_connections`, set socket
//! options, spawn one task per connection. Nothing else is awaited here:
//! the TLS handshake and the CONNECT handshake happen inside the
//! connection's own task.

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::Metrics;
use crate::session::{self, Origin, Shared};
use crate::transport::Listener;

/// Longest pause after a failing `accept` (out of file descriptors, say).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Accepts connections on `listener` until shutdown.
pub async fn accept_loop(shared: Arc<Shared>, listener: Listener) {
    let token = shared.tasks.token().clone();
    let address = listener.tcp.local_addr().ok();
    tracing::info!(?address, tls = listener.tls.is_some(), "listening");
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = token.cancelled() => return,
            accepted = listener.tcp.accept() => accepted,
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
        let origin = Origin {
            peer,
            allow_anonymous: listener.allow_anonymous,
            identity: None,
        };
        match &listener.tls {
            None => {
                let (reader, writer) = stream.into_split();
                let connection = session::serve(Arc::clone(&shared), reader, writer, origin, guard);
                shared.tasks.spawn(connection);
            }
            Some(tls) => {
                let tls = tls.clone();
                let shared = Arc::clone(&shared);
                let tasks = shared.tasks.clone();
                tasks.spawn(async move {
                    let span = session::connection_span(peer, None);
                    let timeout = shared.config.connect_timeout();
                    let handshake =
                        tracing::Instrument::instrument(tls.accept(stream, timeout), span);
                    let Some((stream, identity)) = handshake.await else {
                        return;
                    };
                    let origin = Origin {
                        identity: Some(Box::new(identity)),
                        ..origin
                    };
                    let (reader, writer) = tokio::io::split(stream);
                    session::serve(shared, reader, writer, origin, guard).await;
                });
            }
        }
    }
}

/// Counts a socket as open until dropped.
struct OpenConnection(Arc<Metrics>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections_open.decrement();
    }
}
