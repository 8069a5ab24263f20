//! The accept loop, one per listener: enforce `max_connections`, set socket
//! options, spawn one task per connection. Nothing else is awaited here:
//! the TLS handshake and the CONNECT handshake happen inside the
//! connection's own task.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::metrics::Metrics;
use crate::session::{self, Origin, Shared};
use crate::transport::tls::Tls;
use crate::transport::websocket::WebSocket;
use crate::transport::Listener;

/// Longest pause after a failing `accept` (out of file descriptors, say).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Accepts connections on `listener` until shutdown.
pub async fn accept_loop(shared: Arc<Shared>, listener: Listener) {
    let token = shared.tasks.token().clone();
    let address = listener.tcp.local_addr().ok();
    tracing::info!(
        ?address,
        tls = listener.tls.is_some(),
        websocket = listener.websocket.as_ref().map(|ws| ws.path.as_str()),
        "listening"
    );
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
        if listener.tls.is_none() && listener.websocket.is_none() {
            let (reader, writer) = stream.into_split();
            let connection = session::serve(Arc::clone(&shared), reader, writer, origin, guard);
            shared.tasks.spawn(connection);
        } else {
            let tls = listener.tls.clone();
            let websocket = listener.websocket.clone();
            let tasks = shared.tasks.clone();
            tasks.spawn(upgrade_and_serve(
                Arc::clone(&shared),
                tls,
                websocket,
                stream,
                origin,
                guard,
            ));
        }
    }
}

/// Runs a connection's TLS handshake and WebSocket upgrade, as its
/// listener has them, then serves MQTT on what they yield.
async fn upgrade_and_serve<G: Send>(
    shared: Arc<Shared>,
    tls: Option<Tls>,
    websocket: Option<WebSocket>,
    stream: TcpStream,
    mut origin: Origin,
    guard: G,
) {
    let timeout = shared.config.connect_timeout();
    let span = session::connection_span(origin.peer, None);
    match tls {
        None => serve_upgraded(shared, websocket, stream, origin, guard).await,
        Some(tls) => {
            let Some((stream, identity)) = tls.accept(stream, timeout).instrument(span).await
            else {
                return;
            };
            origin.identity = Some(Box::new(identity));
            serve_upgraded(shared, websocket, stream, origin, guard).await;
        }
    }
}

async fn serve_upgraded<S, G>(
    shared: Arc<Shared>,
    websocket: Option<WebSocket>,
    stream: S,
    origin: Origin,
    guard: G,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    G: Send,
{
    match websocket {
        None => {
            let (reader, writer) = tokio::io::split(stream);
            session::serve(shared, reader, writer, origin, guard).await;
        }
        Some(websocket) => {
            let span = session::connection_span(origin.peer, None);
            let timeout = shared.config.connect_timeout();
            let Some(stream) = websocket.accept(stream, timeout).instrument(span).await else {
                return;
            };
            let (reader, writer) = tokio::io::split(stream);
            session::serve(shared, reader, writer, origin, guard).await;
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
