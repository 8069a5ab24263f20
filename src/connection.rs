//! One byte stream, framed: a read buffer that `protocol::decode`
//! consumes, and the writing of an [`Outbox`] (the packets an endpoint has
//! to send, already encoded) with as few writes as possible. All partial
//! state lives in the structs, so [`Connection::ready`] is cancel-safe
//! inside a `select!`. The outbox belongs to whoever speaks on the
//! connection (the session endpoint), so that it can be driven, and
//! tested, without any stream.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::io::poll_read_buf;

use crate::metrics::Metrics;
use crate::protocol::{
    self, DecodeError, EncodeError, Packet, PacketType, ProtocolVersion, PublishRef,
};

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
/// The scratch buffer a closing connection discards its input through.
const LINGER_CHUNK: usize = 2048;

/// What [`Connection::read_packet`] got.
pub enum Incoming {
    /// A whole packet.
    Packet(Packet),
    /// The first byte of a packet of another type than the one asked for.
    Other(u8),
    /// The peer closed the connection.
    Closed,
    /// The stream failed.
    Io(io::Error),
    /// The bytes are not a packet.
    Malformed(DecodeError),
}

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
    outbox: &'a mut Outbox,
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
        let outbox = &mut *this.outbox;
        // Alternate which side goes first, so that a client that never stops
        // sending cannot starve what is written to it, nor the reverse.
        connection.write_first = !connection.write_first;
        let write = !outbox.buf.is_empty() || connection.unflushed;
        if connection.write_first && write {
            if let Poll::Ready(event) = connection.poll_write_some(cx, outbox) {
                return Poll::Ready(event);
            }
        }
        if this.read {
            if let Poll::Ready(event) = connection.poll_read_some(cx) {
                return Poll::Ready(event);
            }
        }
        if !connection.write_first && write {
            if let Poll::Ready(event) = connection.poll_write_some(cx, outbox) {
                return Poll::Ready(event);
            }
        }
        Poll::Pending
    }
}

/// What an endpoint has to send its peer: packets encoded at the peer's
/// protocol version, none over the peer's Maximum Packet Size
/// [MQTT-3.1.2-24] (v5.0), waiting to be written.
#[derive(Debug)]
pub struct Outbox {
    buf: BytesMut,
    version: ProtocolVersion,
    /// The largest packet the peer accepts (MQTT 5 Maximum Packet Size).
    max_packet: Option<std::num::NonZeroU32>,
}

impl Outbox {
    /// An empty outbox for a peer at `version` that takes packets of any
    /// size.
    pub fn new(version: ProtocolVersion) -> Outbox {
        Outbox {
            buf: BytesMut::new(),
            version,
            max_packet: None,
        }
    }

    /// Frees the buffer of an empty outbox (a hibernating connection
    /// keeps none).
    pub fn release_buffer(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }

    /// The peer's protocol level.
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// Sets the peer's protocol level (fixed by CONNECT).
    pub fn set_version(&mut self, version: ProtocolVersion) {
        self.version = version;
    }

    /// The largest packet the peer accepts.
    pub fn max_packet(&self) -> u32 {
        self.max_packet.map_or(u32::MAX, std::num::NonZeroU32::get)
    }

    /// Sets the largest packet the peer accepts.
    pub fn set_max_packet(&mut self, maximum: u32) {
        self.max_packet = std::num::NonZeroU32::new(maximum).filter(|m| m.get() != u32::MAX);
    }

    /// Encodes `packet`.
    /// A packet over the peer's Maximum Packet Size is not sent
    /// [MQTT-3.1.2-24] (v5.0).
    pub fn send(&mut self, packet: &Packet) -> Result<(), EncodeError> {
        let before = self.buf.len();
        protocol::encode(packet, self.version, &mut self.buf)?;
        self.check_size(before)
    }

    /// Encodes a PUBLISH from borrowed parts, unless it is over the peer's
    /// Maximum Packet Size [MQTT-3.1.2-24] (v5.0).
    pub fn send_publish(&mut self, publish: &PublishRef<'_>) -> Result<(), EncodeError> {
        let before = self.buf.len();
        publish.encode(self.version, &mut self.buf)?;
        self.check_size(before)
    }

    /// Encodes a packet the broker built. One too large for the peer's
    /// Maximum Packet Size goes without its Reason String and User
    /// Properties [MQTT-3.4.2-2] (v5.0) and the like, or not at all; a
    /// packet Petrel builds otherwise always encodes, so a failure is a
    /// bug worth a log line, not a reason to stop.
    pub fn send_or_log(&mut self, mut packet: Packet) {
        let mut result = self.send(&packet);
        if matches!(result, Err(EncodeError::OverPeerMaximum { .. })) && packet.strip_diagnostics()
        {
            result = self.send(&packet);
        }
        if let Err(error) = result {
            tracing::error!(%error, packet = ?packet.packet_type(), "could not send packet");
        }
    }

    /// Takes back what was encoded after `before` if it is too large.
    fn check_size(&mut self, before: usize) -> Result<(), EncodeError> {
        let size = self.buf.len() - before;
        let maximum = self.max_packet() as usize;
        if size > maximum {
            self.buf.truncate(before);
            return Err(EncodeError::OverPeerMaximum { size, maximum });
        }
        Ok(())
    }

    /// Bytes encoded but not yet written.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when nothing waits to be written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Takes everything encoded so far (what a test reads).
    pub fn take(&mut self) -> BytesMut {
        std::mem::take(&mut self.buf)
    }
}

/// A framed byte stream.
#[derive(Debug)]
pub struct Connection<R, W> {
    reader: R,
    writer: W,
    read_buf: BytesMut,
    /// How much room the next read gets: doubles while reads fill it,
    /// halves while they do not, so a busy connection reads in large
    /// chunks and an idle one waits on a small buffer.
    read_chunk: u32,
    /// Which side [`Ready`] polls first this time.
    write_first: bool,
    /// Everything was written but the writer's flush has not finished.
    unflushed: bool,
    /// The protocol level packets are decoded at, fixed by CONNECT.
    pub version: ProtocolVersion,
    /// The largest packet the peer may send (MQTT caps it at 268,435,455
    /// bytes, well within 32 bits: every byte here is paid per connection).
    max_packet_size: u32,
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
            read_chunk: MIN_READ_CHUNK as u32,
            write_first: false,
            unflushed: false,
            version: ProtocolVersion::V3_1_1,
            max_packet_size: u32::try_from(max_packet_size).unwrap_or(u32::MAX),
            metrics,
        }
    }

    /// The largest packet the peer may send.
    pub fn max_packet_size(&self) -> u32 {
        self.max_packet_size
    }

    /// Whether nothing is half read nor half written: the connection
    /// could be taken apart without losing a byte.
    pub fn is_idle(&self) -> bool {
        self.read_buf.is_empty() && !self.unflushed
    }

    /// The stream's halves, the framing dropped (see [`Connection::is_idle`]).
    pub fn into_halves(self) -> (R, W) {
        (self.reader, self.writer)
    }

    /// The next whole packet already in the read buffer, if any. Once the
    /// buffer is consumed its memory is let go: an idle connection keeps no
    /// read buffer beyond its next (small) read.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, DecodeError> {
        let packet = protocol::decode(
            &mut self.read_buf,
            self.max_packet_size as usize,
            self.version,
        )?;
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

    /// Waits until bytes arrive (when `read` is true) or some buffered bytes
    /// could be written, whichever comes first. Never completes if there is
    /// nothing to do; cancel-safe. A hand-written future rather than an
    /// `async fn` with `select!`: it is part of every connection's task, and
    /// this one is 16 bytes.
    pub fn ready<'a>(&'a mut self, read: bool, outbox: &'a mut Outbox) -> Ready<'a, R, W> {
        if read
            && !self.reads_idle()
            && self.read_buf.capacity() - self.read_buf.len() < self.read_chunk as usize
        {
            self.read_buf.reserve(self.read_chunk as usize);
        }
        Ready {
            connection: self,
            outbox,
            read,
        }
    }

    /// True for a connection with nothing half-read and small reads: it
    /// waits for input with no read buffer at all.
    fn reads_idle(&self) -> bool {
        self.read_buf.is_empty() && self.read_chunk as usize <= MIN_READ_CHUNK
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
        let chunk = self.read_chunk as usize;
        let chunk = if n >= room {
            (chunk * 2).min(MAX_READ_CHUNK)
        } else if n < room / 4 {
            (chunk / 2).max(MIN_READ_CHUNK)
        } else {
            chunk
        };
        // At most MAX_READ_CHUNK: fits.
        self.read_chunk = chunk as u32;
        Poll::Ready(Ok(IoEvent::Read(n)))
    }

    fn poll_write_some(
        &mut self,
        cx: &mut Context<'_>,
        outbox: &mut Outbox,
    ) -> Poll<io::Result<IoEvent>> {
        let buf = &mut outbox.buf;
        if buf.is_empty() {
            // Only a flush left to finish (see below).
            ready!(Pin::new(&mut self.writer).poll_flush(cx))?;
            self.unflushed = false;
            return Poll::Ready(Ok(IoEvent::Wrote(0)));
        }
        let n = ready!(Pin::new(&mut self.writer).poll_write(cx, buf))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        buf.advance(n);
        if buf.is_empty() {
            if buf.capacity() > KEEP_WRITE_CAPACITY {
                *buf = BytesMut::new();
            }
            // A writer that buffers (a WebSocket's frames) sends on flush;
            // a socket's flush does nothing. One that cannot finish now is
            // finished on a later poll.
            self.unflushed = Pin::new(&mut self.writer).poll_flush(cx).is_pending();
        }
        self.metrics.bytes_sent.add(n as u64);
        Poll::Ready(Ok(IoEvent::Wrote(n)))
    }

    /// Reads more bytes into the read buffer, writing `outbox` meanwhile;
    /// 0 means the peer closed.
    pub async fn read_more(&mut self, outbox: &mut Outbox) -> io::Result<usize> {
        loop {
            if let IoEvent::Read(n) = self.ready(true, outbox).await? {
                return Ok(n);
            }
        }
    }

    /// The next whole packet, reading as needed (and writing `outbox`
    /// meanwhile). With `only`, a packet of another type is refused from
    /// its first byte, without waiting for the rest of it [MQTT-3.1.0-1]
    /// (v3.1.1).
    pub async fn read_packet(&mut self, outbox: &mut Outbox, only: Option<PacketType>) -> Incoming {
        loop {
            if let (Some(packet_type), Some(only)) = (self.next_packet_type(), only) {
                if packet_type != only as u8 {
                    return Incoming::Other(packet_type);
                }
            }
            match self.next_packet() {
                Ok(Some(packet)) => return Incoming::Packet(packet),
                Ok(None) => {}
                Err(error) => return Incoming::Malformed(error),
            }
            match self.read_more(outbox).await {
                Ok(0) => return Incoming::Closed,
                Ok(_) => {}
                Err(error) => return Incoming::Io(error),
            }
        }
    }

    /// Writes everything in `outbox`.
    pub async fn flush(&mut self, outbox: &mut Outbox) -> io::Result<()> {
        while !outbox.is_empty() {
            self.ready(false, outbox).await?;
        }
        self.writer.flush().await
    }

    /// Closes gracefully: writes what is in `outbox` (the DISCONNECT that
    /// says why, say), shuts the write side so the peer reads EOF after
    /// it, then reads and discards what the peer still sends until it
    /// closes its side too, for at most [`LINGER`] and [`LINGER_BYTES`]
    /// in all. A socket closed with unread input is reset by the kernel,
    /// and the reset fails the peer's next write and can destroy what it
    /// had not read yet. With `peer_closed` (it closed first, or the
    /// stream failed) there is nothing to wait for.
    pub async fn close(&mut self, outbox: &mut Outbox, peer_closed: bool) {
        let deadline = tokio::time::Instant::now() + LINGER;
        let written = tokio::time::timeout_at(deadline, self.flush(outbox)).await;
        if !matches!(written, Ok(Ok(()))) {
            return;
        }
        let _ = tokio::time::timeout_at(deadline, self.writer.shutdown()).await;
        if peer_closed {
            return;
        }
        // Discarded through a small scratch buffer: thousands of
        // connections may linger at once (a shutdown, a keep-alive sweep).
        self.read_buf = BytesMut::new();
        let mut scratch = [0u8; LINGER_CHUNK];
        let mut discarded = 0;
        while discarded < LINGER_BYTES {
            let read = tokio::time::timeout_at(deadline, self.reader.read(&mut scratch));
            match read.await {
                Ok(Ok(n)) if n > 0 => discarded += n,
                _ => break,
            }
        }
    }
}
