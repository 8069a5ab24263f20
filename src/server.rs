//! The accept loop, one per listener: enforce `max_connections`, set socket
//! options, spawn one task per connection. Nothing else is awaited here:
//! the TLS handshake and the CONNECT handshake happen inside the
//! connection's own task.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::config::Config;
use crate::context::Context;
use crate::metrics::Metrics;
use crate::session::{self, ListenerTag, Origin};
use crate::transport::proxy;
use crate::transport::tls::Tls;
use crate::transport::websocket::{WebSocket, WsStream};
use crate::transport::Listener;

/// Longest pause after a failing `accept` (out of file descriptors, say).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Which sockets may be open: `max_connections` in all, and
/// `max_connections_per_address` from one address; shared by every
/// listener, counting what is open.
#[derive(Debug)]
pub struct Admission {
    metrics: Arc<Metrics>,
    max_connections: AtomicUsize,
    max_per_address: AtomicUsize,
    /// Open connections by client address, while a per-address bound is
    /// set.
    by_address: dashmap::DashMap<IpAddr, usize>,
}

impl Admission {
    /// The bounds `context`'s configuration sets.
    pub fn new(context: &Context) -> Admission {
        let config = context.core.config();
        Admission {
            metrics: Arc::clone(&context.core.metrics),
            max_connections: AtomicUsize::new(config.max_connections),
            max_per_address: AtomicUsize::new(config.max_connections_per_address),
            by_address: Default::default(),
        }
    }

    /// The bounds of a reloaded configuration, for the connections that
    /// come from now on (a per-address bound counts those only).
    pub fn update(&self, config: &Config) {
        self.max_connections
            .store(config.max_connections, Ordering::Relaxed);
        self.max_per_address
            .store(config.max_connections_per_address, Ordering::Relaxed);
    }
}

/// Accepts connections on `listener` until its tag's token is cancelled
/// (the broker stops, or a reload removed the listener); the connections
/// it accepted carry the tag.
pub async fn accept_loop(
    context: Arc<Context>,
    admission: Arc<Admission>,
    listener: Listener,
    tag: ListenerTag,
) {
    let core = &context.core;
    let token = tag.closed.clone();
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
        let metrics = &core.metrics;
        let max_connections = admission.max_connections.load(Ordering::Relaxed);
        if metrics.connections_open.get() >= max_connections as u64 {
            metrics.connection_refused(false);
            tracing::warn!(%peer, max_connections, "connection limit reached; closing new connection");
            drop(stream);
            continue;
        }
        if let Err(error) = stream.set_nodelay(core.config().tcp_nodelay) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let mut guard = OpenConnection::new(&admission);
        // Behind a load balancer the address that counts comes with the
        // PROXY header, read in the connection's task.
        if !listener.proxy_protocol && !guard.claim(peer.ip()) {
            continue;
        }
        let origin = Origin {
            peer,
            // A configured listener answers as the configuration in force
            // says (a reload may have changed the top-level key).
            allow_anonymous: match &listener.config {
                Some(config) => Some(core.config().anonymous_allowed(config)),
                None => listener.allow_anonymous,
            },
            identity: None,
            listener: Some(tag.clone()),
        };
        if listener.tls.is_none() && listener.websocket.is_none() && !listener.proxy_protocol {
            let (reader, writer) = stream.into_split();
            let connection =
                session::serve(Arc::clone(&context), reader, writer, origin, Some(guard));
            core.tasks.spawn(connection);
        } else {
            let transport = Transport {
                proxy_protocol: listener.proxy_protocol,
                tls: listener.tls.clone(),
                websocket: listener.websocket.clone(),
            };
            let tasks = core.tasks.clone();
            tasks.spawn(upgrade_and_serve(
                Arc::clone(&context),
                transport,
                stream,
                origin,
                guard,
            ));
        }
    }
}

/// What a listener does before MQTT: a PROXY header, TLS, WebSocket.
struct Transport {
    proxy_protocol: bool,
    tls: Option<Tls>,
    websocket: Option<WebSocket>,
}

/// Reads a connection's PROXY header, runs its TLS handshake and WebSocket
/// upgrade, as its listener has them, then serves MQTT on what they yield.
async fn upgrade_and_serve(
    context: Arc<Context>,
    transport: Transport,
    mut stream: TcpStream,
    mut origin: Origin,
    mut guard: OpenConnection,
) {
    let Transport {
        proxy_protocol,
        tls,
        websocket,
    } = transport;
    let timeout = context.core.config().connect_timeout();
    let span = session::connection_span(origin.peer, None);
    if proxy_protocol {
        let header = tokio::time::timeout(timeout, proxy::read_header(&mut stream)).await;
        match header {
            Ok(Ok(client)) => {
                // A header for the balancer's own connection keeps its address.
                origin.peer = client.unwrap_or(origin.peer);
            }
            Ok(Err(error)) => {
                let _entered = span.enter();
                tracing::info!(%error, "bad PROXY protocol header; closing");
                return;
            }
            Err(_) => {
                let _entered = span.enter();
                tracing::info!("no PROXY protocol header within connect_timeout; closing");
                return;
            }
        }
        if !guard.claim(origin.peer.ip()) {
            return;
        }
    }
    let span = session::connection_span(origin.peer, None);
    // The handshakes are boxed, and the stream is split before the session
    // is served: the task's future is sized for its largest state, and an
    // inline TLS handshake or WebSocket upgrade (with their buffers and
    // parsed headers) made it 12 KiB for every connection of a TLS or
    // WebSocket listener, for the connection's whole life.
    match tls {
        None => match websocket {
            None => serve_stream(context, stream, origin, guard).await,
            Some(websocket) => {
                let Some(stream) = upgrade(&websocket, stream, &context, span).await else {
                    return;
                };
                serve_stream(context, stream, origin, guard).await;
            }
        },
        Some(tls) => {
            let accept = Box::pin(tls.accept(stream, timeout).instrument(span.clone()));
            let Some((stream, identity)) = accept.await else {
                return;
            };
            origin.identity = Some(Box::new(identity));
            match websocket {
                None => serve_stream(context, stream, origin, guard).await,
                Some(websocket) => {
                    let Some(stream) = upgrade(&websocket, stream, &context, span).await else {
                        return;
                    };
                    serve_stream(context, stream, origin, guard).await;
                }
            }
        }
    }
}

/// The WebSocket upgrade of `stream`, boxed (see `upgrade_and_serve`).
fn upgrade<'a, S>(
    websocket: &'a WebSocket,
    stream: S,
    context: &Context,
    span: tracing::Span,
) -> std::pin::Pin<Box<impl std::future::Future<Output = Option<WsStream<S>>> + 'a>>
where
    S: AsyncRead + AsyncWrite + Unpin + 'a,
{
    let config = context.core.config();
    let accept = websocket.accept(stream, config.connect_timeout(), config.max_packet_size);
    Box::pin(accept.instrument(span))
}

/// Serves MQTT on `stream`, split at once (its halves share it on the
/// heap), so that the future holds no copy of the stream itself.
fn serve_stream<S>(
    context: Arc<Context>,
    stream: S,
    origin: Origin,
    guard: OpenConnection,
) -> impl std::future::Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (reader, writer) = tokio::io::split(stream);
    session::serve(context, reader, writer, origin, Some(guard))
}

/// Counts a connection as open until dropped, and against its client's
/// address while `max_connections_per_address` is set.
#[derive(Debug)]
pub struct OpenConnection {
    admission: Arc<Admission>,
    /// The address counted against, if any (boxed: most connections have
    /// none, and every byte here is paid by every connection).
    address: Option<Box<IpAddr>>,
}

impl OpenConnection {
    fn new(admission: &Arc<Admission>) -> OpenConnection {
        admission.metrics.connections_open.increment();
        OpenConnection {
            admission: Arc::clone(admission),
            address: None,
        }
    }

    /// Counts the connection against `ip`; false (logged, counted) when
    /// `ip` already has `max_connections_per_address`.
    fn claim(&mut self, ip: IpAddr) -> bool {
        let limit = self.admission.max_per_address.load(Ordering::Relaxed);
        if limit == 0 {
            self.admission.metrics.connections_accepted.increment();
            return true;
        }
        let mut count = self.admission.by_address.entry(ip).or_insert(0);
        if *count >= limit {
            drop(count);
            self.admission.metrics.connection_refused(true);
            tracing::warn!(%ip, limit, "max_connections_per_address reached; closing new connection");
            return false;
        }
        *count += 1;
        self.address = Some(Box::new(ip));
        self.admission.metrics.connections_accepted.increment();
        true
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.admission.metrics.connections_open.decrement();
        if let Some(ip) = self.address.take() {
            let counts = &self.admission.by_address;
            if let Some(mut count) = counts.get_mut(&*ip) {
                *count = count.saturating_sub(1);
            }
            counts.remove_if(&*ip, |_, count| *count == 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection of a TLS, WebSocket or PROXY-protocol listener keeps
    /// its task for its whole life (it does not hibernate): the task's
    /// future must stay near a plain connection's, whatever handshakes
    /// came before.
    #[tokio::test]
    async fn an_upgraded_connection_task_stays_small() {
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let core = crate::context::Core::new(crate::config::Config::default(), metrics, None);
        let context = Arc::new(Context {
            core,
            auth: crate::auth::Authenticator::open(),
        });
        let admission = Arc::new(Admission::new(&context));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let origin = Origin {
            peer: "127.0.0.1:1".parse().unwrap(),
            allow_anonymous: None,
            identity: None,
            listener: None,
        };
        let transport = Transport {
            proxy_protocol: false,
            tls: None,
            websocket: None,
        };
        let guard = OpenConnection::new(&admission);
        let task = upgrade_and_serve(context, transport, stream, origin, guard);
        let task_bytes = std::mem::size_of_val(&task);
        // With its task's 112 bytes of header and trailer, 1,408 bytes make
        // a 1,536-byte cell. It was 12 KiB with the handshakes inline.
        assert!(
            task_bytes <= 1408,
            "upgraded connection future is {task_bytes} bytes"
        );
    }
}
