//! Shared test helpers: a broker on an ephemeral port, a raw-packet client
//! for exact checks and protocol violations, a PINGREQ barrier, and rumqttc
//! clients for ordinary flows. Every wait is bounded.

#![allow(dead_code)]

pub mod pki;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use petrel::protocol::{
    self, Ack, ConnAck, Connect, ConnectProperties, LastWill, Packet, PacketId, ProtocolVersion,
    Publish, PublishProperties, QoS, Subscribe, SubscribeProperties, SubscriptionOptions,
    TopicFilter, TopicName, Unsubscribe, UnsubscribeProperties,
};
use petrel::{Broker, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound for any single test.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for one expected packet to arrive.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs a test body under [`TEST_TIMEOUT`].
pub async fn timed<F: Future<Output = ()>>(body: F) {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("test timed out");
}

/// A broker on 127.0.0.1, port 0.
pub struct TestBroker {
    pub broker: Broker,
    pub addr: SocketAddr,
}

impl TestBroker {
    pub async fn start() -> TestBroker {
        TestBroker::with_config(test_config()).await
    }

    pub async fn with_config(config: Config) -> TestBroker {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind an ephemeral port");
        let broker = Broker::start(config, vec![listener]).expect("broker starts");
        let addr = broker.local_addrs()[0];
        TestBroker { broker, addr }
    }
}

/// The defaults, with `$SYS` off so it never interleaves with test traffic,
/// and state kept in memory (tests/persistence.rs gives each broker a
/// store of its own).
pub fn test_config() -> Config {
    Config {
        sys_interval: 0,
        persistence: false,
        ..Config::default()
    }
}

pub fn topic(name: &str) -> TopicName {
    TopicName::new(name).expect("valid topic name")
}

pub fn filter(text: &str) -> TopicFilter {
    TopicFilter::new(text).expect("valid topic filter")
}

pub fn id(value: u16) -> PacketId {
    PacketId::new(value).expect("non-zero packet id")
}

/// A 3.1.1 CONNECT.
pub fn connect_packet(client_id: &str, clean_session: bool, keep_alive: u16) -> Connect {
    Connect {
        protocol: ProtocolVersion::V3_1_1,
        clean_start: clean_session,
        keep_alive,
        client_id: client_id.to_owned(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
        bridge: false,
    }
}

pub fn will(topic_name: &str, payload: &'static [u8], qos: QoS, retain: bool) -> LastWill {
    LastWill {
        topic: topic(topic_name),
        payload: Bytes::from_static(payload),
        qos,
        retain,
        properties: Default::default(),
    }
}

pub fn publish_packet(
    topic_name: &str,
    payload: &[u8],
    qos: QoS,
    retain: bool,
    packet_id: Option<u16>,
) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain,
        topic: topic(topic_name),
        packet_id: packet_id.map(id),
        payload: Bytes::copy_from_slice(payload),
        properties: PublishProperties::default(),
    })
}

pub fn subscribe_packet(packet_id: u16, filters: &[(&str, QoS)]) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: id(packet_id),
        filters: filters
            .iter()
            .map(|(text, qos)| {
                (
                    filter(text),
                    SubscriptionOptions {
                        qos: *qos,
                        ..SubscriptionOptions::default()
                    },
                )
            })
            .collect(),
        properties: SubscribeProperties::default(),
    })
}

pub fn unsubscribe_packet(packet_id: u16, filters: &[&str]) -> Packet {
    Packet::Unsubscribe(Unsubscribe {
        packet_id: id(packet_id),
        filters: filters.iter().map(|text| filter(text)).collect(),
        properties: UnsubscribeProperties::default(),
    })
}

/// The next packet the broker sends on `stream` (any byte stream: TCP,
/// TLS), or `None` once it has closed; bytes past it stay in `buf`.
pub async fn read_packet<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    version: ProtocolVersion,
) -> Option<Packet> {
    let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
    loop {
        if let Some(packet) =
            protocol::decode(buf, usize::MAX, version).expect("broker sends valid packets")
        {
            return Some(packet);
        }
        let read = tokio::time::timeout_at(deadline, stream.read_buf(buf))
            .await
            .expect("timed out waiting for a packet");
        match read {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// A client speaking raw packets over TCP.
pub struct RawClient {
    pub stream: TcpStream,
    buf: BytesMut,
    pub version: ProtocolVersion,
}

impl RawClient {
    pub async fn open(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).await.expect("connect to broker");
        stream.set_nodelay(true).expect("nodelay");
        RawClient {
            stream,
            buf: BytesMut::new(),
            version: ProtocolVersion::V3_1_1,
        }
    }

    /// Opens a connection, sends CONNECT and returns the CONNACK.
    pub async fn connect_with(addr: SocketAddr, connect: Connect) -> (RawClient, ConnAck) {
        let mut client = RawClient::open(addr).await;
        client.version = connect.protocol;
        client.send(&Packet::Connect(Box::new(connect))).await;
        match client.recv().await {
            Packet::ConnAck(connack) => (client, connack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// A clean 3.1.1 session with `client_id`, accepted.
    pub async fn connect(addr: SocketAddr, client_id: &str) -> RawClient {
        let (client, connack) =
            RawClient::connect_with(addr, connect_packet(client_id, true, 0)).await;
        assert_eq!(connack.reason_code, protocol::ReasonCode::Success);
        client
    }

    pub async fn send(&mut self, packet: &Packet) {
        let mut bytes = BytesMut::new();
        protocol::encode(packet, self.version, &mut bytes).expect("test packet encodes");
        self.send_bytes(&bytes).await;
    }

    /// Sends a packet; false if the connection is already gone.
    pub async fn try_send(&mut self, packet: &Packet) -> bool {
        let mut bytes = BytesMut::new();
        protocol::encode(packet, self.version, &mut bytes).expect("test packet encodes");
        self.stream.write_all(&bytes).await.is_ok()
    }

    /// Writes raw bytes; false if the connection is already gone.
    pub async fn stream_write(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }

    /// Waits until the broker closes the connection, whatever it sends
    /// first (a DISCONNECT, or packets the noise asked for).
    pub async fn expect_closed_or_any(&mut self) {
        let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
        let mut scratch = [0u8; 4096];
        loop {
            let read = tokio::time::timeout_at(deadline, self.stream.read(&mut scratch))
                .await
                .expect("the broker did not close the connection");
            match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write to broker");
    }

    /// The next packet, or `None` if the broker closed the connection.
    pub async fn try_recv(&mut self) -> Option<Packet> {
        read_packet(&mut self.stream, &mut self.buf, self.version).await
    }

    pub async fn recv(&mut self) -> Packet {
        self.try_recv()
            .await
            .expect("connection closed while waiting for a packet")
    }

    pub async fn recv_publish(&mut self) -> Publish {
        match self.recv().await {
            Packet::Publish(publish) => publish,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Sends PINGREQ and returns every packet that arrives before the
    /// PINGRESP: an empty list proves nothing else was sent.
    pub async fn ping_barrier(&mut self) -> Vec<Packet> {
        self.send(&Packet::PingReq).await;
        let mut before = Vec::new();
        loop {
            match self.recv().await {
                Packet::PingResp => return before,
                other => before.push(other),
            }
        }
    }

    /// Asserts the broker closes the connection (reading EOF or a reset)
    /// without sending anything else first.
    pub async fn expect_closed(&mut self) {
        if let Some(packet) = self.try_recv().await {
            panic!("expected the connection to close, got {packet:?}");
        }
    }

    pub async fn subscribe(
        &mut self,
        packet_id: u16,
        filters: &[(&str, QoS)],
    ) -> Vec<protocol::ReasonCode> {
        self.send(&subscribe_packet(packet_id, filters)).await;
        match self.recv().await {
            Packet::SubAck(suback) => {
                assert_eq!(suback.packet_id, id(packet_id));
                suback.reason_codes
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Publishes and completes the QoS flow as a publisher.
    pub async fn publish(
        &mut self,
        topic_name: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
        packet_id: u16,
    ) {
        let packet_id = (qos != QoS::AtMostOnce).then_some(packet_id);
        self.send(&publish_packet(topic_name, payload, qos, retain, packet_id))
            .await;
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => match self.recv().await {
                Packet::PubAck(ack) => assert_eq!(Some(ack.packet_id.get()), packet_id),
                other => panic!("expected PUBACK, got {other:?}"),
            },
            QoS::ExactlyOnce => {
                let Some(packet_id) = packet_id else {
                    unreachable!()
                };
                match self.recv().await {
                    Packet::PubRec(ack) => assert_eq!(ack.packet_id.get(), packet_id),
                    other => panic!("expected PUBREC, got {other:?}"),
                }
                self.send(&Packet::PubRel(Ack::new(id(packet_id)))).await;
                match self.recv().await {
                    Packet::PubComp(ack) => assert_eq!(ack.packet_id.get(), packet_id),
                    other => panic!("expected PUBCOMP, got {other:?}"),
                }
            }
        }
    }

    pub async fn disconnect(mut self) {
        self.send(&Packet::Disconnect(Default::default())).await;
        let _ = self.try_recv().await;
    }
}

/// A rumqttc 3.1.1 client whose incoming PUBLISH packets arrive on a
/// channel; the event loop runs in its own task until the client is dropped.
pub struct RumqttClient {
    pub client: rumqttc::AsyncClient,
    pub publishes: tokio::sync::mpsc::UnboundedReceiver<rumqttc::Publish>,
    pub connacks: tokio::sync::mpsc::UnboundedReceiver<rumqttc::ConnAck>,
    pub subacks: tokio::sync::mpsc::UnboundedReceiver<rumqttc::SubAck>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RumqttClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RumqttClient {
    pub async fn connect(addr: SocketAddr, client_id: &str, clean_session: bool) -> RumqttClient {
        let mut options = rumqttc::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        options.set_clean_session(clean_session);
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut event_loop) = rumqttc::AsyncClient::new(options, 64);
        let (publish_tx, publishes) = tokio::sync::mpsc::unbounded_channel();
        let (connack_tx, connacks) = tokio::sync::mpsc::unbounded_channel();
        let (suback_tx, subacks) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match event_loop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(publish))) => {
                        let _ = publish_tx.send(publish);
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(connack))) => {
                        let _ = connack_tx.send(connack);
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(suback))) => {
                        let _ = suback_tx.send(suback);
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        let mut client = RumqttClient {
            client,
            publishes,
            connacks,
            subacks,
            task,
        };
        client.connack().await;
        client
    }

    pub async fn connack(&mut self) -> rumqttc::ConnAck {
        tokio::time::timeout(RECV_TIMEOUT, self.connacks.recv())
            .await
            .expect("timed out waiting for CONNACK")
            .expect("event loop ended before CONNACK")
    }

    /// Subscribes and waits for the SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: rumqttc::QoS) -> rumqttc::SubAck {
        self.client
            .subscribe(filter, qos)
            .await
            .expect("subscribe request queued");
        tokio::time::timeout(RECV_TIMEOUT, self.subacks.recv())
            .await
            .expect("timed out waiting for SUBACK")
            .expect("event loop ended before SUBACK")
    }

    pub async fn next_publish(&mut self) -> rumqttc::Publish {
        tokio::time::timeout(RECV_TIMEOUT, self.publishes.recv())
            .await
            .expect("timed out waiting for a PUBLISH")
            .expect("event loop ended")
    }
}

/// Waits until `condition` holds, checking every few milliseconds, for at
/// most [`RECV_TIMEOUT`]. For state that has no event to await (a counter
/// reaching a value).
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

impl RawClient {
    /// Answers a received PUBLISH as its receiver: PUBACK at QoS 1, PUBREC
    /// at QoS 2 (the PUBREL is for the caller to answer).
    pub async fn answer(&mut self, publish: &Publish) {
        match (publish.qos, publish.packet_id) {
            (QoS::AtLeastOnce, Some(packet_id)) => {
                self.send(&Packet::PubAck(Ack::new(packet_id))).await;
            }
            (QoS::ExactlyOnce, Some(packet_id)) => {
                self.send(&Packet::PubRec(Ack::new(packet_id))).await;
            }
            _ => {}
        }
    }
}

/// Acknowledges a received PUBLISH as its QoS requires (QoS 2: PUBREC,
/// then PUBCOMP for the PUBREL).
pub async fn acknowledge(client: &mut RawClient, publish: &Publish) {
    let Some(packet_id) = publish.packet_id else {
        return;
    };
    match publish.qos {
        QoS::AtLeastOnce => client.send(&Packet::PubAck(Ack::new(packet_id))).await,
        QoS::ExactlyOnce => {
            client.send(&Packet::PubRec(Ack::new(packet_id))).await;
            match client.recv().await {
                Packet::PubRel(ack) => assert_eq!(ack.packet_id, packet_id),
                other => panic!("expected PUBREL, got {other:?}"),
            }
            client.send(&Packet::PubComp(Ack::new(packet_id))).await;
        }
        QoS::AtMostOnce => {}
    }
}

/// An MQTT 5 CONNECT.
pub fn connect_v5(client_id: &str, clean_start: bool, keep_alive: u16) -> Connect {
    Connect {
        protocol: ProtocolVersion::V5,
        ..connect_packet(client_id, clean_start, keep_alive)
    }
}

impl RawClient {
    /// An MQTT 5 connection for `client_id` with clean start and the
    /// given CONNECT properties; returns the CONNACK, asserted successful.
    pub async fn connect_v5_with(
        addr: SocketAddr,
        client_id: &str,
        properties: ConnectProperties,
    ) -> (RawClient, ConnAck) {
        let connect = Connect {
            properties,
            ..connect_v5(client_id, true, 0)
        };
        let (client, connack) = RawClient::connect_with(addr, connect).await;
        assert_eq!(connack.reason_code, protocol::ReasonCode::Success);
        (client, connack)
    }

    /// A clean MQTT 5 connection for `client_id`, accepted.
    pub async fn connect_v5(addr: SocketAddr, client_id: &str) -> RawClient {
        RawClient::connect_v5_with(addr, client_id, ConnectProperties::default())
            .await
            .0
    }

    /// Asserts the broker sends DISCONNECT with `reason_code`, then closes.
    pub async fn expect_disconnect(
        &mut self,
        reason_code: protocol::ReasonCode,
    ) -> protocol::Disconnect {
        loop {
            match self.recv().await {
                Packet::Disconnect(disconnect) => {
                    assert_eq!(disconnect.reason_code, reason_code, "{disconnect:?}");
                    self.expect_closed().await;
                    return disconnect;
                }
                // Acknowledgements of what was sent before may come first.
                Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_) => {}
                other => panic!("expected DISCONNECT, got {other:?}"),
            }
        }
    }

    /// Subscribes with full options and an optional identifier; returns
    /// the reason codes.
    pub async fn subscribe_with(
        &mut self,
        packet_id: u16,
        filters: &[(&str, SubscriptionOptions)],
        identifier: Option<u32>,
    ) -> Vec<protocol::ReasonCode> {
        let subscribe = Subscribe {
            packet_id: id(packet_id),
            filters: filters
                .iter()
                .map(|(text, options)| (filter(text), *options))
                .collect(),
            properties: SubscribeProperties {
                subscription_identifier: identifier.and_then(std::num::NonZeroU32::new),
                ..SubscribeProperties::default()
            },
        };
        self.send(&Packet::Subscribe(subscribe)).await;
        match self.recv().await {
            Packet::SubAck(suback) => {
                assert_eq!(suback.packet_id, id(packet_id));
                suback.reason_codes
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }
}

/// Subscription options with `qos` and everything else at its default.
pub fn options(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        ..SubscriptionOptions::default()
    }
}

/// A PUBLISH with MQTT 5 properties.
pub fn publish_with(
    topic_name: &str,
    payload: &[u8],
    qos: QoS,
    packet_id: Option<u16>,
    properties: PublishProperties,
) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic(topic_name),
        packet_id: packet_id.map(id),
        payload: Bytes::copy_from_slice(payload),
        properties,
    })
}

/// Hand-built packet bytes, for tests of exact encodings and of what a
/// well-behaved client would never send.
pub mod raw {
    /// A Variable Byte Integer.
    pub fn vbi(mut value: usize) -> Vec<u8> {
        let mut bytes = Vec::new();
        loop {
            let mut byte = (value % 128) as u8;
            value /= 128;
            if value > 0 {
                byte |= 0x80;
            }
            bytes.push(byte);
            if value == 0 {
                return bytes;
            }
        }
    }

    /// A two-byte-length-prefixed field (string or binary).
    pub fn field(bytes: &[u8]) -> Vec<u8> {
        let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(bytes);
        out
    }

    /// A whole packet: the first byte, the Remaining Length, the body.
    pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        out.extend(vbi(body.len()));
        out.extend_from_slice(body);
        out
    }

    /// A property block: its length, then `properties`.
    pub fn properties(properties: &[u8]) -> Vec<u8> {
        let mut out = vbi(properties.len());
        out.extend_from_slice(properties);
        out
    }
}

/// The port of the first listener a `petrel` process logged (its info
/// line names the bound address), read from its standard output.
pub fn listening_port(reader: &mut impl std::io::BufRead) -> u16 {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "broker exited before listening"
        );
        if let Some(rest) = line.split("address=Some(").nth(1) {
            let address = rest.split(')').next().unwrap();
            return address.parse::<std::net::SocketAddr>().unwrap().port();
        }
    }
}

/// A data directory of its own, removed when the test ends.
pub struct DataDir(std::path::PathBuf);

impl DataDir {
    pub fn new(name: &str) -> DataDir {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "petrel-test-{}-{name}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        DataDir(dir)
    }

    /// The test configuration with persistence in this directory (and
    /// the default `durability = "sync"`).
    pub fn config(&self) -> Config {
        Config {
            persistence: true,
            data_dir: self.0.clone(),
            ..test_config()
        }
    }

    pub async fn start(&self) -> TestBroker {
        TestBroker::with_config(self.config()).await
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl RawClient {
    /// A client over a stream accepted elsewhere (the far end of a
    /// bridge, see [`FakeRemote`]).
    pub fn from_stream(stream: TcpStream, version: ProtocolVersion) -> RawClient {
        RawClient {
            stream,
            buf: BytesMut::new(),
            version,
        }
    }
}

/// A remote broker played by the test, packet by packet, for a bridge to
/// connect to: the test sees exactly what the bridge sends, and sends
/// exactly what it wants (nothing at all, to prove a packet is not
/// waiting for one).
pub struct FakeRemote {
    listener: tokio::net::TcpListener,
    pub addr: SocketAddr,
}

impl FakeRemote {
    pub async fn bind() -> FakeRemote {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind an ephemeral port");
        let addr = listener.local_addr().expect("local address");
        FakeRemote { listener, addr }
    }

    /// Accepts the bridge's connection, answers its CONNECT with a
    /// successful CONNACK and, when it subscribes, its SUBSCRIBE with a
    /// SUBACK granting every filter. Returns the connection and the
    /// CONNECT.
    pub async fn accept(&self) -> (RawClient, Connect) {
        let (stream, _) = tokio::time::timeout(RECV_TIMEOUT, self.listener.accept())
            .await
            .expect("the bridge connects in time")
            .expect("accept");
        stream.set_nodelay(true).expect("nodelay");
        let mut remote = RawClient::from_stream(stream, ProtocolVersion::V3_1_1);
        let connect = match remote.recv().await {
            Packet::Connect(connect) => *connect,
            other => panic!("expected CONNECT from the bridge, got {other:?}"),
        };
        remote.version = connect.protocol;
        remote
            .send(&Packet::ConnAck(ConnAck {
                session_present: false,
                reason_code: protocol::ReasonCode::Success,
                properties: Default::default(),
            }))
            .await;
        (remote, connect)
    }

    /// [`FakeRemote::accept`], then the bridge's SUBSCRIBE answered.
    pub async fn accept_subscribing(&self) -> (RawClient, Connect) {
        let (mut remote, connect) = self.accept().await;
        let subscribe = match remote.recv().await {
            Packet::Subscribe(subscribe) => subscribe,
            other => panic!("expected SUBSCRIBE from the bridge, got {other:?}"),
        };
        let reason_codes = subscribe
            .filters
            .iter()
            .map(|(_, options)| match options.qos {
                QoS::AtMostOnce => protocol::ReasonCode::GRANTED_QOS_0,
                QoS::AtLeastOnce => protocol::ReasonCode::GrantedQoS1,
                QoS::ExactlyOnce => protocol::ReasonCode::GrantedQoS2,
            })
            .collect();
        remote
            .send(&Packet::SubAck(protocol::SubAck {
                packet_id: subscribe.packet_id,
                reason_codes,
                properties: Default::default(),
            }))
            .await;
        (remote, connect)
    }
}

/// The broker binary under test: `PETREL_BIN` (CI gives the release
/// build), or the one cargo built for the tests.
pub fn petrel_bin() -> std::path::PathBuf {
    std::env::var_os("PETREL_BIN").map_or_else(|| env!("CARGO_BIN_EXE_petrel").into(), Into::into)
}

/// Waits (at most 10 s) for `child` to exit; kills it and gives `None`
/// if it does not.
pub async fn exit_of(mut child: std::process::Child) -> Option<std::process::ExitStatus> {
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .ok()
    .flatten()
}
