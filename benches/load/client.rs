//! A minimal MQTT 3.1.1 client for load generation, on Petrel's own codec:
//! connect, subscribe, publish at QoS 0 or 1 with a window, count what
//! arrives. It writes in batches and decodes in place, so that one load
//! tool process can drive a broker hard from one core.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::BytesMut;
use petrel::protocol::{
    self, Connect, ConnectProperties, Packet, PacketId, ProtocolVersion, QoS, Subscribe,
    SubscribeProperties, SubscriptionOptions, TopicFilter,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::transport::{self, ReadHalf, Transport, WriteHalf};

const VERSION: ProtocolVersion = ProtocolVersion::V3_1_1;

/// An error the load tool reports and stops on.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

fn protocol_error(what: impl Into<String>) -> Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into()).into()
}

/// A connected client, split into its two halves.
pub struct Client {
    pub reader: Reader,
    pub writer: Writer,
}

/// The receiving half: decodes packets from a read buffer.
pub struct Reader {
    stream: ReadHalf,
    buf: BytesMut,
    /// Over WebSocket, the bytes read and not yet unframed.
    ws: Option<BytesMut>,
}

/// The sending half: encodes packets into a buffer, written in one go.
pub struct Writer {
    stream: WriteHalf,
    buf: BytesMut,
    /// Over WebSocket, the frame being written.
    ws: Option<BytesMut>,
}

impl Client {
    /// Connects (from `local` if given, to spread source addresses) and
    /// completes the CONNECT handshake.
    pub async fn connect(
        broker: SocketAddr,
        local: Option<IpAddr>,
        client_id: &str,
        keep_alive: u16,
    ) -> Result<Client, Error> {
        Client::connect_session(broker, local, client_id, keep_alive, true).await
    }

    /// [`Client::connect`], with a persistent session unless `clean_start`.
    pub async fn connect_session(
        broker: SocketAddr,
        local: Option<IpAddr>,
        client_id: &str,
        keep_alive: u16,
        clean_start: bool,
    ) -> Result<Client, Error> {
        let socket = if broker.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = local {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let mut stream: TcpStream = socket.connect(broker).await?;
        stream.set_nodelay(true)?;
        let transport = transport::current();
        let ((read, write), ws) = match transport {
            Transport::Tcp => (split_tcp(stream), false),
            Transport::WebSocket => {
                transport::upgrade(&mut stream, &broker.to_string()).await?;
                (split_tcp(stream), true)
            }
            Transport::Tls(version, key) => {
                let name = rustls_name(broker);
                let tls = transport::connector(version, key)?
                    .connect(name, stream)
                    .await?;
                let (read, write) = tokio::io::split(tls);
                ((ReadHalf::Tls(read), WriteHalf::Tls(write)), false)
            }
        };
        let mut client = Client {
            reader: Reader {
                stream: read,
                buf: BytesMut::with_capacity(64 * 1024),
                ws: ws.then(|| BytesMut::with_capacity(64 * 1024)),
            },
            writer: Writer {
                stream: write,
                buf: BytesMut::with_capacity(64 * 1024),
                ws: ws.then(BytesMut::new),
            },
        };
        let connect = Connect {
            protocol: VERSION,
            clean_start,
            keep_alive,
            client_id: client_id.to_owned(),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
            bridge: false,
        };
        client.writer.push(&Packet::Connect(Box::new(connect)))?;
        client.writer.flush().await?;
        match client.reader.next().await? {
            Packet::ConnAck(connack) if !connack.reason_code.is_error() => Ok(client),
            other => Err(protocol_error(format!("expected CONNACK, got {other:?}"))),
        }
    }

    /// Subscribes to one filter and waits for the SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Result<(), Error> {
        self.subscribe_many(&[filter.to_owned()], qos).await
    }
}

impl Client {
    /// Subscribes to every filter, one SUBSCRIBE each, all in one write,
    /// and waits for their SUBACKs (messages that come in between, such
    /// as retained ones, are skipped).
    pub async fn subscribe_many(&mut self, filters: &[String], qos: QoS) -> Result<(), Error> {
        for (index, filter) in filters.iter().enumerate() {
            let subscribe = Subscribe {
                packet_id: packet_id(index as u64),
                filters: vec![(
                    TopicFilter::new(filter).map_err(|e| protocol_error(e.to_string()))?,
                    SubscriptionOptions {
                        qos,
                        ..SubscriptionOptions::default()
                    },
                )],
                properties: SubscribeProperties::default(),
            };
            self.writer.push(&Packet::Subscribe(subscribe))?;
        }
        self.writer.flush().await?;
        let mut acked = 0;
        while acked < filters.len() {
            if let Packet::SubAck(suback) = self.reader.next().await? {
                if suback.reason_codes.iter().any(|c| c.is_error()) {
                    return Err(protocol_error(format!("subscription refused: {suback:?}")));
                }
                acked += 1;
            }
        }
        Ok(())
    }

    /// Makes closing this connection a reset (SO_LINGER 0), for clients
    /// that are dropped, not disconnected, at the end of a scenario.
    pub fn reset_on_close(&self) {
        // A TLS connection's socket is out of reach once split: it closes
        // as usual. (Setting this at connect time instead made the kernel
        // drop what a publisher had written but not yet sent when it
        // closed: a reset discards the send queue.)
        if let ReadHalf::Tcp(stream) = &self.reader.stream {
            let _ = stream.as_ref().set_zero_linger();
        }
    }
}

impl Client {
    /// Sends DISCONNECT and waits (at most 5 s) for the broker to close
    /// the connection first, so that the closed connection's TIME_WAIT is
    /// the broker's and not this source address's: thousands of them here
    /// leave too few local ports, and later connects stall on them.
    pub async fn disconnect_first(mut self) {
        if self
            .writer
            .push(&Packet::Disconnect(Default::default()))
            .is_err()
            || self.writer.flush().await.is_err()
        {
            return;
        }
        let closed = async { while self.reader.next().await.is_ok() {} };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), closed).await;
    }

    /// Closes with a reset (SO_LINGER 0), leaving no TIME_WAIT here: for
    /// the end of a scenario, once nothing more is measured.
    pub fn abort(self) {
        self.reset_on_close();
    }

    /// The connection as a [`PacedWriter`], for a pacing thread outside
    /// the runtime.
    pub fn into_paced(self) -> Result<PacedWriter, Error> {
        let Plain { stream, read, ws } = self.into_std()?;
        Ok(PacedWriter {
            stream,
            buf: BytesMut::with_capacity(256),
            read,
            acks: 0,
            stalls: 0,
            ws: ws.map(|raw| (raw, BytesMut::with_capacity(256))),
        })
    }

    /// The connection as a standard (non-blocking) socket, taken out of
    /// the runtime, with the bytes read and not yet taken apart. Not for
    /// TLS: its session stays in the runtime's stream.
    pub fn into_std(self) -> Result<Plain, Error> {
        let Client { reader, writer } = self;
        let (ReadHalf::Tcp(read), WriteHalf::Tcp(write)) = (reader.stream, writer.stream) else {
            return Err("over TLS this scenario needs its clients in the runtime: \
                 run it unpaced, or over tcp or ws"
                .into());
        };
        let stream = read
            .reunite(write)
            .map_err(|e| protocol_error(e.to_string()))?
            .into_std()?;
        Ok(Plain {
            stream,
            read: reader.buf,
            ws: reader.ws,
        })
    }
}

/// A connection out of the runtime (see [`Client::into_std`]).
pub struct Plain {
    pub stream: std::net::TcpStream,
    /// MQTT bytes read and not yet taken apart.
    pub read: BytesMut,
    /// Over WebSocket, bytes read and not yet unframed.
    pub ws: Option<BytesMut>,
}

impl Plain {
    /// Takes `chunk`, just read from the socket, into `read`; false once
    /// the broker closed the WebSocket.
    pub fn take(&mut self, chunk: &[u8]) -> io::Result<bool> {
        take_chunk(chunk, &mut self.read, self.ws.as_mut())
    }
}

/// `chunk` into `read`, unframed first over WebSocket (`ws` holding what
/// is not yet a whole frame); false once the broker closed the WebSocket.
fn take_chunk(chunk: &[u8], read: &mut BytesMut, ws: Option<&mut BytesMut>) -> io::Result<bool> {
    match ws {
        None => {
            read.extend_from_slice(chunk);
            Ok(true)
        }
        Some(raw) => {
            raw.extend_from_slice(chunk);
            transport::unframe(raw, read)
        }
    }
}

/// `payload` as it goes on the wire: as is, or over WebSocket as one frame
/// in `frame`.
fn on_wire<'a>(payload: &'a [u8], frame: Option<&'a mut BytesMut>) -> &'a [u8] {
    match frame {
        None => payload,
        Some(frame) => {
            frame.clear();
            transport::frame(payload, frame);
            frame
        }
    }
}

impl Plain {
    /// Writes `bytes` (blocking), framed over WebSocket.
    pub fn write_all(&mut self, bytes: &[u8], frame: &mut BytesMut) -> io::Result<()> {
        use std::io::Write;
        let wire = on_wire(bytes, self.ws.is_some().then_some(frame));
        self.stream.write_all(wire)
    }
}

/// A publisher's connection driven by a pacing thread with plain system
/// calls on its non-blocking socket: every [`PacedWriter::send`] is one
/// `write`, and [`PacedWriter::drain`] reads what the broker sent back
/// (QoS 1 acknowledgements) without waiting, so that no second thread
/// wakes for them.
pub struct PacedWriter {
    stream: std::net::TcpStream,
    /// The next write.
    pub buf: BytesMut,
    /// Bytes read and not yet taken apart.
    pub read: BytesMut,
    /// PUBACKs read.
    pub acks: u64,
    /// Writes that found the socket's send buffer full and waited.
    pub stalls: u64,
    /// Over WebSocket: bytes read and not yet unframed, and the frame
    /// being written.
    ws: Option<(BytesMut, BytesMut)>,
}

impl PacedWriter {
    /// Writes the buffer, in one system call unless the socket's send
    /// buffer is full (then it waits and retries, counting a stall).
    pub fn send(&mut self) -> io::Result<()> {
        use std::io::Write;
        let wire = on_wire(&self.buf, self.ws.as_mut().map(|(_, frame)| frame));
        let mut at = 0;
        while at < wire.len() {
            match self.stream.write(&wire[at..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => at += written,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    self.stalls += 1;
                    std::thread::sleep(Duration::from_micros(50));
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        self.buf.clear();
        Ok(())
    }

    /// Reads whatever has arrived, without waiting, into `read`; false
    /// when the broker closed the connection.
    pub fn drain(&mut self) -> io::Result<bool> {
        use std::io::Read;
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(read) => {
                    let raw = self.ws.as_mut().map(|(raw, _)| raw);
                    if !take_chunk(&chunk[..read], &mut self.read, raw)? {
                        return Ok(false);
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
    }

    /// Sends DISCONNECT (best effort) and closes.
    pub fn disconnect(mut self) {
        if protocol::encode(
            &Packet::Disconnect(Default::default()),
            VERSION,
            &mut self.buf,
        )
        .is_ok()
        {
            let _ = self.send();
        }
    }
}

fn split_tcp(stream: TcpStream) -> (ReadHalf, WriteHalf) {
    let (read, write) = stream.into_split();
    (ReadHalf::Tcp(read), WriteHalf::Tcp(write))
}

fn rustls_name(broker: SocketAddr) -> tokio_rustls::rustls::pki_types::ServerName<'static> {
    tokio_rustls::rustls::pki_types::ServerName::IpAddress(broker.ip().into())
}

/// A non-zero packet id for `index` (1..=65535, wrapping).
pub fn packet_id(index: u64) -> PacketId {
    PacketId::new((index % 65_535) as u16 + 1).unwrap_or_else(|| unreachable!())
}

impl Writer {
    /// The batch, for encoders that write into it directly.
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Encodes a packet into the batch.
    pub fn push(&mut self, packet: &Packet) -> Result<(), Error> {
        protocol::encode(packet, VERSION, &mut self.buf).map_err(|e| protocol_error(e.to_string()))
    }

    /// Writes the batch.
    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let wire = on_wire(&self.buf, self.ws.as_mut());
            self.stream.write_all(wire).await?;
            // Over TLS a write may leave records inside the session when
            // the socket is full: only a flush sends them.
            self.stream.flush().await?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Sends DISCONNECT and closes.
    pub async fn disconnect(mut self) {
        if self.push(&Packet::Disconnect(Default::default())).is_ok() {
            let _ = self.flush().await;
        }
        let _ = self.stream.shutdown().await;
    }
}

impl Reader {
    /// The bytes read and not yet consumed.
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// The next packet, reading as needed.
    pub async fn next(&mut self) -> Result<Packet, Error> {
        loop {
            if let Some(packet) = self.try_next()? {
                return Ok(packet);
            }
            if !self.fill().await? {
                return Err(protocol_error("connection closed by the broker"));
            }
        }
    }

    /// The next packet already buffered, if any.
    pub fn try_next(&mut self) -> Result<Option<Packet>, Error> {
        protocol::decode(&mut self.buf, usize::MAX, VERSION)
            .map_err(|e| protocol_error(e.to_string()))
    }

    /// Reads more bytes; false when the broker closed the connection.
    pub async fn fill(&mut self) -> io::Result<bool> {
        let Some(raw) = &mut self.ws else {
            if self.buf.capacity() - self.buf.len() < 16 * 1024 {
                self.buf.reserve(64 * 1024);
            }
            return Ok(self.stream.read_buf(&mut self.buf).await? > 0);
        };
        if raw.capacity() - raw.len() < 16 * 1024 {
            raw.reserve(64 * 1024);
        }
        if self.stream.read_buf(raw).await? == 0 {
            return Ok(false);
        }
        transport::unframe(raw, &mut self.buf)
    }
}
