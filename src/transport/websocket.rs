//! MQTT over WebSocket (tokio-tungstenite): the HTTP upgrade on the
//! configured path, the `mqtt` subprotocol, and the MQTT bytes carried in
//! binary frames. [`WsStream`] turns the frames back into a byte stream, so
//! a packet split across frames, or several packets in one frame, decode
//! like any other stream.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The subprotocol names MQTT clients offer, in order of preference.
const SUBPROTOCOLS: [&str; 3] = ["mqtt", "mqttv3.1", "mqttv3.1.1"];

/// A listener's WebSocket settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSocket {
    /// The HTTP path clients connect to, e.g. `/mqtt`.
    pub path: String,
}

/// The WebSocket reader's buffer. tungstenite zeroes the whole buffer
/// before its first read, so its default (128 KiB) was resident for every
/// connection: 139 KB per idle WebSocket connection. A frame larger than
/// this is still read whole (the buffer grows for it).
const READ_BUFFER_BYTES: usize = 2048;

/// The largest WebSocket message or frame accepted: a little over the
/// largest MQTT packet, so a client cannot make the broker buffer more
/// than `max_packet_size` allows through frames either.
fn frame_limit(max_packet_size: usize) -> usize {
    max_packet_size.saturating_add(16)
}

impl WebSocket {
    /// Runs the HTTP upgrade on `stream`, for at most `timeout`. `None`
    /// when it failed (wrong path, not a WebSocket request) or took too
    /// long (logged).
    // The upgrade callback's type is tungstenite's; its error is an HTTP
    // response, larger than clippy likes.
    #[allow(clippy::result_large_err)]
    pub async fn accept<S>(
        &self,
        stream: S,
        timeout: Duration,
        max_packet_size: usize,
    ) -> Option<WsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let path = self.path.clone();
        let callback =
            move |request: &Request, response: Response| upgrade(&path, request, response);
        let limit = frame_limit(max_packet_size);
        let config = WebSocketConfig::default()
            .max_message_size(Some(limit))
            .max_frame_size(Some(limit))
            .read_buffer_size(READ_BUFFER_BYTES);
        let handshake =
            tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config));
        match tokio::time::timeout(timeout, handshake).await {
            Ok(Ok(inner)) => Some(WsStream {
                inner,
                pending: Bytes::new(),
            }),
            Ok(Err(error)) => {
                tracing::info!(%error, "WebSocket upgrade failed");
                None
            }
            Err(_) => {
                tracing::info!("no WebSocket upgrade within connect_timeout");
                None
            }
        }
    }
}

/// Checks the upgrade request: the path, and the subprotocol if the
/// client offers any (one of MQTT's, echoed back).
#[allow(clippy::result_large_err)]
fn upgrade(
    path: &str,
    request: &Request,
    mut response: Response,
) -> Result<Response, ErrorResponse> {
    if request.uri().path() != path {
        let mut refusal = ErrorResponse::new(Some(format!("MQTT is served on {path}")));
        *refusal.status_mut() = StatusCode::NOT_FOUND;
        return Err(refusal);
    }
    let offered: Vec<&str> = request
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(',').map(str::trim))
        .collect();
    if offered.is_empty() {
        return Ok(response);
    }
    let Some(chosen) = SUBPROTOCOLS.iter().find(|name| offered.contains(name)) else {
        let mut refusal = ErrorResponse::new(Some("the subprotocol must be mqtt".to_owned()));
        *refusal.status_mut() = StatusCode::BAD_REQUEST;
        return Err(refusal);
    };
    response
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(chosen));
    Ok(response)
}

/// A WebSocket connection as a byte stream: binary frames in, one binary
/// frame per write out.
#[derive(Debug)]
pub struct WsStream<S> {
    inner: WebSocketStream<S>,
    /// What is left of the last frame read.
    pending: Bytes,
}

fn to_io(error: tokio_tungstenite::tungstenite::Error) -> io::Error {
    io::Error::other(error)
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => this.pending = data,
                // Control frames are answered by tungstenite itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "MQTT over WebSocket uses binary frames, not text",
                    )))
                }
                // A close frame or the end of the stream: end of input.
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(())),
                Some(Err(error)) => return Poll::Ready(Err(to_io(error))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let inner = &mut self.get_mut().inner;
        ready!(Pin::new(&mut *inner).poll_ready(cx)).map_err(to_io)?;
        Pin::new(inner)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(to_io)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner)
            .poll_flush(cx)
            .map_err(to_io)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner)
            .poll_close(cx)
            .map_err(to_io)
    }
}
