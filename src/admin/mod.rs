//! The admin listener: Prometheus metrics, health probes, a JSON API and a
//! live dashboard, on its own socket and its own tasks, reading the
//! broker's counters and registries. Nothing on the message path waits
//! for it: a scrape reads atomics, and a question for one connected
//! session goes through that session's inbox like a takeover does.
//!
//! Bounded: at most `max_connections` open (more are closed as they come,
//! and counted), requests of at most `max_request_bytes`, each to arrive
//! within `request_timeout_ms`. Authenticated off loopback
//! ([`auth`]): a bearer token, or a client certificate.

pub mod api;
pub mod auth;
pub mod prometheus;
pub mod routes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::config::AdminConfig;
use crate::context::Context;
use crate::transport::tls::Tls;

/// A reload asked for through the API, for whoever runs the broker (the
/// `petrel` command does what SIGHUP does) to carry out and answer.
#[derive(Debug)]
pub struct ReloadRequest {
    /// Where the outcome goes.
    pub done: oneshot::Sender<ReloadOutcome>,
}

/// What a reload did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadOutcome {
    /// Whether the new configuration is in force.
    pub reloaded: bool,
    /// A line for each thing changed, kept or refused, or the error.
    pub messages: Vec<String>,
}

/// What the handlers work with.
#[derive(Debug)]
pub struct AdminState {
    /// The broker's parts.
    pub context: Arc<Context>,
    /// When the broker started.
    pub started: Instant,
    /// The same, on the wall clock.
    pub started_at: SystemTime,
    /// Who may do what.
    pub auth: auth::Policy,
    /// Where reloads are asked for.
    pub reloads: mpsc::Sender<ReloadRequest>,
    /// Set once someone took the other end to carry them out.
    pub reloads_served: Arc<std::sync::atomic::AtomicBool>,
    /// Stops the admin listener: not the broker's token, so that
    /// `/readyz` answers 503 while the broker shuts down, until its end.
    pub stop: tokio_util::sync::CancellationToken,
}

/// The admin listener, bound.
#[derive(Debug)]
pub struct Bound {
    listener: TcpListener,
    tls: Option<Tls>,
}

impl Bound {
    /// Binds `config.bind` (which must be set).
    pub fn bind(config: &AdminConfig, tls: Option<Tls>) -> std::io::Result<Bound> {
        let Some(address) = config.bind else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "admin.bind is not set",
            ));
        };
        let listener = std::net::TcpListener::bind(address)?;
        listener.set_nonblocking(true)?;
        Ok(Bound {
            listener: TcpListener::from_std(listener)?,
            tls,
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// Who is at the other end of an admin connection, for [`auth`].
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// Its address.
    pub peer: SocketAddr,
    /// Whether it presented a client certificate the CA signed.
    pub certificate: bool,
}

/// Serves the admin listener until the broker shuts down.
pub async fn serve(state: Arc<AdminState>, bound: Bound) {
    let core = &state.context.core;
    let config = core.config().admin.clone();
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let timeout = Duration::from_millis(config.request_timeout_ms);
    let app = routes::router(Arc::clone(&state), config.max_request_bytes);
    let token = state.stop.clone();
    let Bound { listener, tls } = bound;
    loop {
        let (stream, peer) = tokio::select! {
            _ = token.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "admin: accept failed; pausing");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            core.metrics.admin_connections_refused.increment();
            tracing::warn!(%peer, max_connections = config.max_connections, "admin: connection limit reached; closing new connection");
            continue;
        };
        let app = app.clone();
        let tls = tls.clone();
        let token = token.clone();
        let max_buf = config.max_request_bytes;
        // Not the broker's tasks: they outlive its shutdown, to the end.
        tokio::spawn(async move {
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            match tls {
                None => {
                    let caller = Caller {
                        peer,
                        certificate: false,
                    };
                    connection(stream, caller, app, (timeout, max_buf), token).await;
                }
                Some(tls) => {
                    let Some((stream, identity)) = tls.accept(stream, timeout).await else {
                        return;
                    };
                    let caller = Caller {
                        peer,
                        certificate: identity.certificate,
                    };
                    connection(stream, caller, app, (timeout, max_buf), token).await;
                }
            }
        });
    }
}

/// A stream that records when it last moved a byte either way.
struct Progress<S> {
    stream: S,
    last: Arc<std::sync::atomic::AtomicU64>,
    epoch: Instant,
}

impl<S> Progress<S> {
    fn moved(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, std::sync::atomic::Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Progress<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = std::pin::Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.moved();
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Progress<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let poll = std::pin::Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(poll, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        poll
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Serves HTTP/1.1 on one connection until it closes, idles past
/// `timeout`, moves no byte either way for `timeout` (a client that
/// sends requests and never reads the answers), or the broker shuts
/// down (then it finishes the request in hand and closes).
async fn connection<S>(
    stream: S,
    caller: Caller,
    app: axum::Router,
    (timeout, max_buf): (Duration, usize),
    token: tokio_util::sync::CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let last = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stream = Progress {
        stream,
        last: Arc::clone(&last),
        epoch: Instant::now(),
    };
    let epoch = stream.epoch;
    let stalled = async move {
        loop {
            tokio::time::sleep(timeout / 4).await;
            let idle = epoch.elapsed().saturating_sub(Duration::from_millis(
                last.load(std::sync::atomic::Ordering::Relaxed),
            ));
            if idle >= timeout {
                return;
            }
        }
    };
    use tower::ServiceExt;
    let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
        request.extensions_mut().insert(caller);
        app.clone().oneshot(request.map(axum::body::Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_buf_size(max_buf)
        .keep_alive(true);
    let serving = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(serving);
    tokio::select! {
        result = serving.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(peer = %caller.peer, %error, "admin connection ended");
            }
        }
        _ = stalled => {
            tracing::info!(peer = %caller.peer, "admin connection moved nothing for request_timeout_ms; closed");
        }
        _ = token.cancelled() => {
            serving.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(timeout, serving).await;
        }
    }
}
