//! One client byte stream, framed: a read buffer that `protocol::decode`
//! consumes, and a write buffer that every outgoing packet is encoded into
//! and that is flushed with as few writes as possible. All partial state
//! lives in the struct, so [`Connection::ready`] is cancel-safe inside a
//! `select!`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::io::poll_read_buf;

use crate::metrics::Metrics;
use crate::protocol::{self, DecodeError, EncodeError, Packet, ProtocolVersion, PublishRef};

/// Smallest read: what an idle connection's pending read holds.
const MIN_READ_CHUNK: usize = 128;
/// Largest read, reached by doubling while reads keep filling the buffer.
const MAX_READ_CHUNK: usize = 64 * 1024;
/// A write buffer larger than this is freed once it has been sent.
const KEEP_WRITE_CAPACITY: usize = 16 * 1024;
/// Above this many unsent bytes the connection stops reading more input
/// (and taking more deliveries) until the peer has read some: a client
/// that does not read cannot make the broker buffer without bound.
pub const WRITE_HIGH_WATER: usize = 256 * 1024;

/// How long a closing connection keeps reading what its peer still sends
/// (see [`Connection::close`]).
pub const LINGER: std::time::Duration = std::time::Duration::from_secs(1);
/// How much of it a closing connection reads, at most.
pub const LINGER_BYTES: usize = 256 * 1024;

/// What [`Connection::ready`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoEvent {
    /// Read this many bytes (0: the peer closed its side).
    Read(usize),
    /// Wrote this many bytes.
    Wrote(usize),
}

/// The future of [`Connection::ready`].
#[derive(Debug)]
pub struct Ready<'a, R, W> {
    connection: &'a mut Connection<R, W>,
    read: bool,
}

impl<R, W> Future for Ready<'_, R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    type Output = io::Result<IoEvent>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let connection = &mut *this.connection;
        // Alternate which side goes first, so that a client that never stops
        // sending cannot starve what is written to it, nor the reverse.
        connection.write_first = !connection.write_first;
        let write = !connection.write_buf.is_empty() || connection.unflushed;
        if connection.write_first && write {
            if let Poll::Ready(event) = connection.poll_write_some(cx) {
                return Poll::Ready(event);
            }
        }
        if this.read {
            if let Poll::Ready(event) = connection.poll_read_some(cx) {
                return Poll::Ready(event);
            }
        }
        if !connection.write_first && write {
            if let Poll::Ready(event) = connection.poll_write_some(cx) {
                return Poll::Ready(event);
            }
        }
        Poll::Pending
    }
}

/// A framed client connection.
#[derive(Debug)]
pub struct Connection<R, W> {
    reader: R,
    writer: W,
    read_buf: BytesMut,
    write_buf: BytesMut,
    /// How much room the next read gets: doubles while reads fill it,
    /// halves while they do not, so a busy connection reads in large
    /// chunks and an idle one waits on a small buffer.
    read_chunk: usize,
    /// Which side [`Ready`] polls first this time.
    write_first: bool,
    /// Everything was written but the writer's flush has not finished.
    unflushed: bool,
    /// The protocol level, fixed by CONNECT.
    pub version: ProtocolVersion,
    /// The largest packet the peer accepts (MQTT 5 Maximum Packet Size).
    pub max_outgoing_packet: u32,
    max_packet_size: usize,
    metrics: Arc<Metrics>,
}

impl<R, W> Connection<R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    /// Frames a stream split into its halves.
    pub fn new(reader: R, writer: W, max_packet_size: usize, metrics: Arc<Metrics>) -> Self {
        Connection {
            reader,
            writer,
            read_buf: BytesMut::new(),
            write_buf: BytesMut::new(),
            read_chunk: MIN_READ_CHUNK,
            write_first: false,
            unflushed: false,
            version: ProtocolVersion::V3_1_1,
            max_outgoing_packet: u32::MAX,
            max_packet_size,
            metrics,
        }
    }

    /// The next whole packet already in the read buffer, if any. Once the
    /// buffer is consumed its memory is let go: an idle connection keeps no
    /// read buffer beyond its next (small) read.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, DecodeError> {
        let packet = protocol::decode(&mut self.read_buf, self.max_packet_size, self.version)?;
        if packet.is_none() && self.read_buf.is_empty() {
            self.read_buf = BytesMut::new();
        }
        Ok(packet)
    }

    /// The packet type of the next packet in the read buffer, as soon as
    /// its first byte has arrived.
    pub fn next_packet_type(&self) -> Option<u8> {
        self.read_buf.first().map(|byte| byte >> 4)
    }

    /// Encodes `packet` into the write buffer; it is sent by a later
    /// [`Connection::ready`] or [`Connection::flush`].
    /// A packet over the peer's Maximum Packet Size is not sent
    /// [MQTT-3.1.2-24] (v5.0).
    pub fn send(&mut self, packet: &Packet) -> Result<(), EncodeError> {
        let before = self.write_buf.len();
        protocol::encode(packet, self.version, &mut self.write_buf)?;
        self.check_size(before)
    }

    /// Encodes a PUBLISH from borrowed parts into the write buffer, unless
    /// it is over the peer's Maximum Packet Size [MQTT-3.1.2-24] (v5.0).
    pub fn send_publish(&mut self, publish: &PublishRef<'_>) -> Result<(), EncodeError> {
        let before = self.write_buf.len();
        publish.encode(self.version, &mut self.write_buf)?;
        self.check_size(before)
    }

    /// Takes back what was encoded after `before` if it is too large.
    fn check_size(&mut self, before: usize) -> Result<(), EncodeError> {
        let size = self.write_buf.len() - before;
        let maximum = self.max_outgoing_packet as usize;
        if size > maximum {
            self.write_buf.truncate(before);
            return Err(EncodeError::OverPeerMaximum { size, maximum });
        }
        Ok(())
    }

    /// Bytes encoded but not yet written.
    pub fn unsent(&self) -> usize {
        self.write_buf.len()
    }

    /// Waits until bytes arrive (when `read` is true) or some buffered bytes
    /// could be written, whichever comes first. Never completes if there is
    /// nothing to do; cancel-safe. A hand-written future rather than an
    /// `async fn` with `select!`: it is part of every connection's task, and
    /// this one is 16 bytes.
    pub fn ready(&mut self, read: bool) -> Ready<'_, R, W> {
        if read
            && !self.reads_idle()
            && self.read_buf.capacity() - self.read_buf.len() < self.read_chunk
        {
            self.read_buf.reserve(self.read_chunk);
        }
        Ready {
            connection: self,
            read,
        }
    }

    /// True for a connection with nothing half-read and small reads: it
    /// waits for input with no read buffer at all.
    fn reads_idle(&self) -> bool {
        self.read_buf.is_empty() && self.read_chunk <= MIN_READ_CHUNK
    }

    fn poll_read_some(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<IoEvent>> {
        let (n, room) = if self.reads_idle() {
            // Read into the stack and copy what came: an idle connection
            // holds no buffer while it waits, and pays for one only when
            // bytes arrive.
            let mut chunk = [0u8; MIN_READ_CHUNK];
            let mut into = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut self.reader).poll_read(cx, &mut into))?;
            self.read_buf.extend_from_slice(into.filled());
            (into.filled().len(), MIN_READ_CHUNK)
        } else {
            let room = self.read_buf.capacity() - self.read_buf.len();
            let n = ready!(poll_read_buf(
                Pin::new(&mut self.reader),
                cx,
                &mut self.read_buf
            ))?;
            (n, room)
        };
        self.metrics.bytes_received.add(n as u64);
        self.read_chunk = if n >= room {
            (self.read_chunk * 2).min(MAX_READ_CHUNK)
        } else if n < room / 4 {
            (self.read_chunk / 2).max(MIN_READ_CHUNK)
        } else {
            self.read_chunk
        };
        Poll::Ready(Ok(IoEvent::Read(n)))
    }

    fn poll_write_some(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<IoEvent>> {
        if self.write_buf.is_empty() {
            // Only a flush left to finish (see below).
            ready!(Pin::new(&mut self.writer).poll_flush(cx))?;
            self.unflushed = false;
            return Poll::Ready(Ok(IoEvent::Wrote(0)));
        }
        let n = ready!(Pin::new(&mut self.writer).poll_write(cx, &self.write_buf))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        self.write_buf.advance(n);
        if self.write_buf.is_empty() {
            if self.write_buf.capacity() > KEEP_WRITE_CAPACITY {
                self.write_buf = BytesMut::new();
            }
            // A writer that buffers (a WebSocket's frames) sends on flush;
            // a socket's flush does nothing. One that cannot finish now is
            // finished on a later poll.
            self.unflushed = Pin::new(&mut self.writer).poll_flush(cx).is_pending();
        }
        self.metrics.bytes_sent.add(n as u64);
        Poll::Ready(Ok(IoEvent::Wrote(n)))
    }

    /// Reads more bytes into the read buffer; 0 means the peer closed.
    pub async fn read_more(&mut self) -> io::Result<usize> {
        loop {
            if let IoEvent::Read(n) = self.ready(true).await? {
                return Ok(n);
            }
        }
    }

    /// Writes everything buffered.
    pub async fn flush(&mut self) -> io::Result<()> {
        while !self.write_buf.is_empty() {
            self.ready(false).await?;
        }
        self.writer.flush().await
    }

    /// Closes gracefully: writes what is buffered (the DISCONNECT that
    /// says why, say), shuts the write side so the peer reads EOF after
    /// it, then reads and discards what the peer still sends until it
    /// closes its side too, for at most [`LINGER`] and [`LINGER_BYTES`]
    /// in all. A socket closed with unread input is reset by the kernel,
    /// and the reset fails the peer's next write and can destroy what it
    /// had not read yet. With `peer_closed` (it closed first, or the
    /// stream failed) there is nothing to wait for.
    pub async fn close(&mut self, peer_closed: bool) {
        let deadline = tokio::time::Instant::now() + LINGER;
        let written = tokio::time::timeout_at(deadline, self.flush()).await;
        if !matches!(written, Ok(Ok(()))) {
            return;
        }
        let _ = tokio::time::timeout_at(deadline, self.writer.shutdown()).await;
        if peer_closed {
            return;
        }
        let mut discarded = 0;
        while discarded < LINGER_BYTES {
            self.read_buf.clear();
            self.read_buf
                .reserve(MAX_READ_CHUNK.min(LINGER_BYTES - discarded));
            let read = tokio::time::timeout_at(deadline, self.reader.read_buf(&mut self.read_buf));
            match read.await {
                Ok(Ok(n)) if n > 0 => discarded += n,
                _ => break,
            }
        }
        self.read_buf = BytesMut::new();
    }
}
