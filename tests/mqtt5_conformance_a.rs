//! MQTT 5.0 conformance of CONNECT, CONNACK, PINGREQ, DISCONNECT and AUTH
//! (sections 3.1, 3.2, 3.12, 3.14, 3.15) and of 4.12 / 4.13, against a
//! real broker over 127.0.0.1. Where the bytes themselves matter (flags,
//! reason codes, properties given once) the packets are read raw from the
//! socket rather than through the test decoder.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::raw::{field, packet, vbi};
use common::*;
use petrel::auth::{AuthExchange, AuthStep, EnhancedAuth};
use petrel::protocol::{
    self, Auth, AuthProperties, Connect, ConnectProperties, Packet, ProtocolVersion, QoS,
    ReasonCode, SubscriptionOptions,
};
use tokio::io::AsyncReadExt;

// ---- Raw packets -------------------------------------------------------

/// Reads a Variable Byte Integer from the front of `bytes`: its value and
/// its length.
fn read_vbi(bytes: &[u8]) -> (usize, usize) {
    let mut value = 0;
    for (index, byte) in bytes.iter().enumerate().take(4) {
        value |= usize::from(byte & 0x7F) << (7 * index);
        if byte & 0x80 == 0 {
            return (value, index + 1);
        }
    }
    panic!("bad variable byte integer {bytes:02X?}");
}

/// An MQTT 5 CONNECT with these flags, CONNECT properties and payload
/// (client id first), keep alive 60.
fn raw_connect(flags: u8, properties: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 5, flags, 0x00, 60];
    body.extend(vbi(properties.len()));
    body.extend_from_slice(properties);
    body.extend_from_slice(payload);
    packet(0x10, &body)
}

/// A DISCONNECT or AUTH (`first`) with a reason code and properties.
fn raw_with_properties(first: u8, reason_code: u8, properties: &[u8]) -> Vec<u8> {
    let mut body = vec![reason_code];
    body.extend(vbi(properties.len()));
    body.extend_from_slice(properties);
    packet(first, &body)
}

/// One whole packet read straight from the socket; `None` once the broker
/// has closed the connection.
async fn read_raw(client: &mut RawClient) -> Option<Vec<u8>> {
    let read = async {
        let mut packet = vec![client.stream.read_u8().await.ok()?];
        loop {
            let byte = client.stream.read_u8().await.ok()?;
            packet.push(byte);
            if byte & 0x80 == 0 {
                break;
            }
        }
        let (length, _) = read_vbi(&packet[1..]);
        let start = packet.len();
        packet.resize(start + length, 0);
        client.stream.read_exact(&mut packet[start..]).await.ok()?;
        Some(packet)
    };
    tokio::time::timeout(RECV_TIMEOUT, read)
        .await
        .expect("timed out waiting for a packet or the close")
}

/// Every packet the broker sends until it closes the connection.
async fn read_until_closed(client: &mut RawClient) -> Vec<Vec<u8>> {
    let mut packets = Vec::new();
    while let Some(packet) = read_raw(client).await {
        packets.push(packet);
    }
    packets
}

/// The body of a raw packet, after its fixed header.
fn body(packet: &[u8]) -> &[u8] {
    let (_, length) = read_vbi(&packet[1..]);
    &packet[1 + length..]
}

/// The properties in a raw property block (length first), in order, as
/// (identifier, value bytes); none where the block is left out, as a
/// DISCONNECT or AUTH may. Panics on an identifier 5.0 does not define.
fn properties(block: &[u8]) -> Vec<(u8, Vec<u8>)> {
    if block.is_empty() {
        return Vec::new();
    }
    let (length, skip) = read_vbi(block);
    let mut rest = &block[skip..skip + length];
    assert_eq!(block.len(), skip + length, "bytes after the properties");
    let mut out = Vec::new();
    while let [id, tail @ ..] = rest {
        let size = match id {
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => 1,
            0x13 | 0x21 | 0x22 | 0x23 => 2,
            0x02 | 0x11 | 0x18 | 0x27 => 4,
            0x0B => read_vbi(tail).1,
            0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1A | 0x1C | 0x1F => {
                2 + usize::from(u16::from_be_bytes([tail[0], tail[1]]))
            }
            0x26 => {
                let key = 2 + usize::from(u16::from_be_bytes([tail[0], tail[1]]));
                key + 2 + usize::from(u16::from_be_bytes([tail[key], tail[key + 1]]))
            }
            other => panic!("unknown property identifier {other:#04X}"),
        };
        out.push((*id, tail[..size].to_vec()));
        rest = &tail[size..];
    }
    out
}

/// Asserts every property but User Property appears at most once, and the
/// values 5.0 restricts are allowed ones: Receive Maximum and Maximum
/// Packet Size not 0; Maximum QoS, Retain Available and the three
/// "available" flags 0 or 1.
fn assert_once_and_valid(properties: &[(u8, Vec<u8>)]) {
    for (index, (id, value)) in properties.iter().enumerate() {
        if *id != 0x26 {
            assert!(
                properties[index + 1..].iter().all(|(other, _)| other != id),
                "property {id:#04X} more than once: {properties:02X?}"
            );
        }
        match id {
            0x21 | 0x27 => assert!(value.iter().any(|byte| *byte != 0), "{id:#04X} is 0"),
            0x24 | 0x25 | 0x28 | 0x29 | 0x2A => assert!(value[0] <= 1, "{id:#04X} not 0 or 1"),
            _ => {}
        }
    }
}

fn ids(properties: &[(u8, Vec<u8>)]) -> Vec<u8> {
    properties.iter().map(|(id, _)| *id).collect()
}

/// The reason codes Table 3.1 allows in CONNACK.
const CONNACK_CODES: [u8; 22] = [
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
/// The reason codes 3.15.2.1 allows in AUTH.
const AUTH_CODES: [u8; 3] = [0x00, 0x18, 0x19];

/// A connection opened for MQTT 5 with nothing sent yet.
async fn open_v5(addr: std::net::SocketAddr) -> RawClient {
    let mut client = RawClient::open(addr).await;
    client.version = ProtocolVersion::V5;
    client
}

/// Asserts a CONNECT was refused: the connection is closed, after at most
/// a CONNACK with a reason code of 0x80 or above and never a DISCONNECT
/// [MQTT-3.14.0-1] (v5.0).
async fn assert_refused(addr: std::net::SocketAddr, connect: &[u8], case: &str) {
    let mut client = open_v5(addr).await;
    client.send_bytes(connect).await;
    let packets = read_until_closed(&mut client).await;
    assert!(packets.len() <= 1, "{case}: {packets:02X?}");
    if let Some(connack) = packets.first() {
        assert_eq!(connack[0], 0x20, "{case}: only a CONNACK: {connack:02X?}");
        assert!(body(connack)[1] >= 0x80, "{case}: refused: {connack:02X?}");
    }
}

/// Asserts a CONNECT is accepted: CONNACK 0x00.
async fn assert_accepted(addr: std::net::SocketAddr, connect: &[u8], case: &str) {
    let mut client = open_v5(addr).await;
    client.send_bytes(connect).await;
    match client.recv().await {
        Packet::ConnAck(connack) => {
            assert_eq!(connack.reason_code, ReasonCode::Success, "{case}");
        }
        other => panic!("{case}: expected CONNACK, got {other:?}"),
    }
}

fn connect_with_properties(client_id: &str, properties: ConnectProperties) -> Connect {
    Connect {
        properties,
        ..connect_v5(client_id, true, 0)
    }
}

fn expiring(client_id: &str, clean_start: bool, seconds: u32) -> Connect {
    Connect {
        properties: ConnectProperties {
            session_expiry_interval: Some(seconds),
            ..ConnectProperties::default()
        },
        ..connect_v5(client_id, clean_start, 0)
    }
}

// ---- Enhanced authentication --------------------------------------------

const METHOD: &str = "TEST-CHALLENGE";

/// Challenge/response: "hello" gets "question:42", "answer:42" succeeds.
#[derive(Debug)]
struct Challenge;

#[derive(Debug)]
struct ChallengeExchange {
    asked: bool,
}

impl EnhancedAuth for Challenge {
    fn method(&self) -> &str {
        METHOD
    }

    fn start(&self, _client_id: &str, _username: Option<&str>) -> Box<dyn AuthExchange> {
        Box::new(ChallengeExchange { asked: false })
    }
}

impl AuthExchange for ChallengeExchange {
    fn step(&mut self, data: Option<&[u8]>) -> AuthStep {
        match (self.asked, data) {
            (false, Some(b"hello")) => {
                self.asked = true;
                AuthStep::Continue(Some(Bytes::from_static(b"question:42")))
            }
            (true, Some(b"answer:42")) => AuthStep::Success(Some(Bytes::from_static(b"welcome"))),
            _ => AuthStep::Failure(ReasonCode::NotAuthorized),
        }
    }
}

async fn auth_broker() -> TestBroker {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let methods: Vec<Arc<dyn EnhancedAuth>> = vec![Arc::new(Challenge)];
    let broker =
        petrel::Broker::start_with_auth(test_config(), vec![listener], methods).expect("start");
    let addr = broker.local_addrs()[0];
    TestBroker { broker, addr }
}

fn auth(reason_code: ReasonCode, data: &'static [u8]) -> Packet {
    Packet::Auth(Auth {
        reason_code,
        properties: AuthProperties {
            authentication_method: Some(METHOD.to_owned()),
            authentication_data: Some(Bytes::from_static(data)),
            ..AuthProperties::default()
        },
    })
}

/// CONNECT naming the method with "hello" and the given Maximum Packet
/// Size; nothing read yet.
async fn start_exchange(addr: std::net::SocketAddr, maximum_packet_size: u32) -> RawClient {
    let mut client = open_v5(addr).await;
    let properties = ConnectProperties {
        authentication_method: Some(METHOD.to_owned()),
        authentication_data: Some(Bytes::from_static(b"hello")),
        maximum_packet_size: std::num::NonZeroU32::new(maximum_packet_size),
        ..ConnectProperties::default()
    };
    client
        .send(&Packet::Connect(Box::new(connect_with_properties(
            "authenticated",
            properties,
        ))))
        .await;
    client
}

/// A connection that went through the exchange and was accepted.
async fn authenticated(addr: std::net::SocketAddr) -> RawClient {
    let mut client = start_exchange(addr, 0).await;
    match client.recv().await {
        Packet::Auth(challenge) => {
            assert_eq!(challenge.reason_code, ReasonCode::ContinueAuthentication);
        }
        other => panic!("expected AUTH, got {other:?}"),
    }
    client
        .send(&auth(ReasonCode::ContinueAuthentication, b"answer:42"))
        .await;
    match client.recv().await {
        Packet::ConnAck(connack) => assert_eq!(connack.reason_code, ReasonCode::Success),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    client
}

// ---- 3.1 CONNECT ---------------------------------------------------------

// [MQTT-3.1.2-1] [MQTT-3.1.2-2] [MQTT-3.14.0-1] (v5.0): a CONNECT with a
// protocol name other than "MQTT", or a protocol version the broker does
// not speak, gets at most a CONNACK refusing the version (Petrel sends the
// 3.1.1-format return code 0x01, which every version reads; 0x84 would do
// too), never a DISCONNECT, and the connection is closed.
#[tokio::test]
async fn unknown_protocol_name_or_version_is_refused_and_closed() {
    timed(async {
        let broker = TestBroker::start().await;
        for (name, level) in [(&b"MQTX"[..], 5u8), (b"MQTT", 6), (b"MQTT", 7)] {
            let mut body = field(name);
            body.extend_from_slice(&[level, 0x02, 0x00, 60, 0x00]);
            body.extend(field(b"p"));
            let mut client = open_v5(broker.addr).await;
            client.send_bytes(&packet(0x10, &body)).await;
            let packets = read_until_closed(&mut client).await;
            assert!(packets.len() <= 1, "{packets:02X?}");
            for connack in &packets {
                assert_eq!(connack[0], 0x20, "only a CONNACK: {connack:02X?}");
                assert!(
                    [0x01, 0x84].contains(&body_code(connack)),
                    "unsupported protocol version: {connack:02X?}"
                );
            }
        }
    })
    .await;
}

/// The return / reason code of a raw CONNACK.
fn body_code(connack: &[u8]) -> u8 {
    body(connack)[1]
}

// [MQTT-3.1.2-3] [MQTT-3.1.2-12] [MQTT-3.1.4-1] [MQTT-3.14.0-1] (v5.0): a
// CONNECT whose reserved flag is set, or whose will has QoS 3, is
// malformed: the connection is closed without CONNACK 0x00 and without
// DISCONNECT. The same CONNECT with the flag clear, or with will QoS 0, 1
// or 2, is accepted.
#[tokio::test]
async fn malformed_connect_flags_are_refused() {
    timed(async {
        let broker = TestBroker::start().await;
        let plain = field(b"flags");
        assert_accepted(broker.addr, &raw_connect(0x02, &[], &plain), "clean").await;
        assert_refused(broker.addr, &raw_connect(0x03, &[], &plain), "reserved").await;
        let mut with_will = field(b"flags");
        with_will.push(0x00); // will properties
        with_will.extend(field(b"wills/flags"));
        with_will.extend(field(b"x"));
        for qos in 0..=2u8 {
            let flags = 0x06 | (qos << 3);
            let connect = raw_connect(flags, &[], &with_will);
            assert_accepted(broker.addr, &connect, &format!("will QoS {qos}")).await;
        }
        let connect = raw_connect(0x06 | (3 << 3), &[], &with_will);
        assert_refused(broker.addr, &connect, "will QoS 3").await;
    })
    .await;
}

// [MQTT-3.1.3-4] [MQTT-3.1.3-11] [MQTT-3.1.3-12] (v5.0): the client id,
// the will topic and the user name must be UTF-8: a CONNECT with an
// ill-formed sequence in any of them is refused and closed.
#[tokio::test]
async fn connect_strings_must_be_utf8() {
    timed(async {
        let broker = TestBroker::start().await;
        let bad: &[u8] = &[b'a', 0xC3, 0x28];
        assert_refused(
            broker.addr,
            &raw_connect(0x02, &[], &field(bad)),
            "client id",
        )
        .await;
        let mut payload = field(b"utf8");
        payload.push(0x00);
        payload.extend(field(bad));
        payload.extend(field(b"x"));
        assert_refused(broker.addr, &raw_connect(0x06, &[], &payload), "will topic").await;
        let mut payload = field(b"utf8");
        payload.extend(field(bad));
        assert_refused(broker.addr, &raw_connect(0x82, &[], &payload), "user name").await;
        // The same with well-formed strings is accepted.
        let mut payload = field(b"utf8");
        payload.extend(field("ü".as_bytes()));
        assert_accepted(broker.addr, &raw_connect(0x82, &[], &payload), "good").await;
    })
    .await;
}

// [MQTT-3.1.3-5] (v5.0): client ids of 1 to 23 bytes of 0-9, a-z, A-Z are
// accepted as they are (none assigned instead).
#[tokio::test]
async fn short_alphanumeric_client_ids_are_accepted() {
    timed(async {
        let broker = TestBroker::start().await;
        for client_id in [
            "a",
            "Z9",
            "0123456789abcdefghijklm",
            "nopqrstuvwxyzABCDEFGHIJ",
            "KLMNOPQRSTUVWXYZ0123456",
        ] {
            let (_client, connack) =
                RawClient::connect_with(broker.addr, connect_v5(client_id, true, 0)).await;
            assert_eq!(connack.reason_code, ReasonCode::Success, "{client_id}");
            assert_eq!(connack.properties.assigned_client_identifier, None);
        }
    })
    .await;
}

// [MQTT-3.1.3-2] [MQTT-3.2.2-3] (v5.0): the client id names the session:
// another id finds no session (Session Present 0), the same id finds its
// own, with its subscription.
#[tokio::test]
async fn client_id_identifies_the_session() {
    timed(async {
        let broker = TestBroker::start().await;
        let (mut alpha, connack) =
            RawClient::connect_with(broker.addr, expiring("alpha", true, 60)).await;
        assert!(!connack.session_present);
        alpha.subscribe(1, &[("alpha/in", QoS::AtLeastOnce)]).await;
        alpha.disconnect().await;
        let (beta, connack) =
            RawClient::connect_with(broker.addr, expiring("beta", false, 60)).await;
        assert_eq!(connack.reason_code, ReasonCode::Success);
        assert!(!connack.session_present);
        beta.disconnect().await;
        let (mut alpha, connack) =
            RawClient::connect_with(broker.addr, expiring("alpha", false, 60)).await;
        assert_eq!(connack.reason_code, ReasonCode::Success);
        assert!(connack.session_present);
        let mut publisher = RawClient::connect_v5(broker.addr, "alpha-pub").await;
        publisher
            .publish("alpha/in", b"mine", QoS::AtLeastOnce, false, 1)
            .await;
        let publish = alpha.recv_publish().await;
        assert_eq!(&publish.payload[..], b"mine");
        acknowledge(&mut alpha, &publish).await;
    })
    .await;
}

// [MQTT-3.1.4-6] [MQTT-3.1.4-2] (v5.0): a refused CONNECT (here, an
// authentication method the broker lacks) is answered and the connection
// closed; the PUBLISH sent right behind it is not processed: not routed
// to a subscriber, not retained.
#[tokio::test]
async fn refused_connect_processes_nothing_after_it() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut watcher = RawClient::connect_v5(broker.addr, "watcher").await;
        watcher.subscribe(1, &[("after/#", QoS::AtMostOnce)]).await;
        let connect = connect_with_properties(
            "refused",
            ConnectProperties {
                authentication_method: Some("NO-SUCH-METHOD".to_owned()),
                ..ConnectProperties::default()
            },
        );
        let mut bytes = bytes::BytesMut::new();
        protocol::encode(
            &Packet::Connect(Box::new(connect)),
            ProtocolVersion::V5,
            &mut bytes,
        )
        .expect("encodes");
        protocol::encode(
            &publish_packet("after/x", b"sneaked", QoS::AtMostOnce, true, None),
            ProtocolVersion::V5,
            &mut bytes,
        )
        .expect("encodes");
        let mut client = open_v5(broker.addr).await;
        client.send_bytes(&bytes).await;
        let packets = read_until_closed(&mut client).await;
        assert_eq!(packets.len(), 1, "{packets:02X?}");
        assert_eq!(packets[0][0], 0x20);
        assert_eq!(body_code(&packets[0]), 0x8C);
        assert!(watcher.ping_barrier().await.is_empty());
        let mut late = RawClient::connect_v5(broker.addr, "late").await;
        late.subscribe(1, &[("after/#", QoS::AtMostOnce)]).await;
        assert!(late.ping_barrier().await.is_empty());
    })
    .await;
}

// [MQTT-3.1.2-7] [MQTT-3.1.2-14] [MQTT-3.1.2-15] (v5.0): a will is stored
// with the session and published when the connection drops; Will Retain 1
// publishes it retained (a later subscriber gets it, flagged retained),
// Will Retain 0 not retained.
#[tokio::test]
async fn will_retain_flag_is_kept() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut watcher = RawClient::connect_v5(broker.addr, "watcher").await;
        let as_published = SubscriptionOptions {
            retain_as_published: true,
            ..options(QoS::AtMostOnce)
        };
        watcher
            .subscribe_with(1, &[("wills/#", as_published)], None)
            .await;
        for (client_id, will_topic, retain) in [
            ("keeps", "wills/kept", true),
            ("drops", "wills/plain", false),
        ] {
            let connect = Connect {
                will: Some(will(will_topic, b"gone", QoS::AtMostOnce, retain)),
                ..connect_v5(client_id, true, 0)
            };
            let (client, connack) = RawClient::connect_with(broker.addr, connect).await;
            assert_eq!(connack.reason_code, ReasonCode::Success);
            drop(client);
            let publish = watcher.recv_publish().await;
            assert_eq!(publish.topic.as_str(), will_topic);
            assert_eq!(publish.retain, retain, "{will_topic}");
        }
        let mut late = RawClient::connect_v5(broker.addr, "late").await;
        late.subscribe(1, &[("wills/#", QoS::AtMostOnce)]).await;
        let retained = late.recv_publish().await;
        assert_eq!(retained.topic.as_str(), "wills/kept");
        assert!(retained.retain);
        assert!(late.ping_barrier().await.is_empty());
    })
    .await;
}

// [MQTT-3.2.2-22] [MQTT-3.1.2-22] (v5.0): without a Server Keep Alive in
// CONNACK the broker enforces the client's own keep alive: silence past
// 1.5 x 1 s closes the connection as a network failure would, so the will
// is published.
#[tokio::test]
async fn clients_keep_alive_is_enforced_without_server_keep_alive() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut watcher = RawClient::connect_v5(broker.addr, "watcher").await;
        watcher.subscribe(1, &[("quiet/#", QoS::AtMostOnce)]).await;
        let connect = Connect {
            will: Some(will("quiet/will", b"silent", QoS::AtMostOnce, false)),
            ..connect_v5("quiet", true, 1)
        };
        let (mut client, connack) = RawClient::connect_with(broker.addr, connect).await;
        assert_eq!(connack.reason_code, ReasonCode::Success);
        assert_eq!(connack.properties.server_keep_alive, None);
        client.expect_disconnect(ReasonCode::KeepAliveTimeout).await;
        let publish = watcher.recv_publish().await;
        assert_eq!(publish.topic.as_str(), "quiet/will");
    })
    .await;
}

// Protocol Errors in CONNECT's properties (3.1.2.11) and in the will's
// (3.1.3.2) close the connection, with at most CONNACK 0x82; the same
// CONNECT with the property given once (and a valid value) is accepted.
#[tokio::test]
async fn connect_property_protocol_errors_close_the_connection() {
    timed(async {
        // [MQTT-PE-3.1.2.11.2-1] Session Expiry Interval twice;
        // [MQTT-PE-3.1.2.11.3-1] Receive Maximum twice; [MQTT-PE-3.1.2.11.3-2] 0;
        // [MQTT-PE-3.1.2.11.4-1] Maximum Packet Size twice; [MQTT-PE-3.1.2.11.4-2] 0;
        // [MQTT-PE-3.1.2.11.5-1] Topic Alias Maximum twice;
        // [MQTT-PE-3.1.2.11.6-1] [MQTT-PE-3.1.2.11.6-2] Request Response
        // Information twice, or not 0 or 1; [MQTT-PE-3.1.2.11.7-1]
        // [MQTT-PE-3.1.2.11.7-2] Request Problem Information the same;
        // [MQTT-PE-3.1.2.11.9-1] Authentication Method twice;
        // [MQTT-PE-3.1.2.11.10-1] Authentication Data without a method;
        // [MQTT-PE-3.1.2.11.10-2] Authentication Data twice; will properties
        // twice: [MQTT-PE-3.1.3.2.2-1] Will Delay Interval, [MQTT-PE-3.1.3.2.3-1]
        // Payload Format Indicator, [MQTT-PE-3.1.3.2.4-1] Message Expiry Interval,
        // [MQTT-PE-3.1.3.2.5-1] Content Type, [MQTT-PE-3.1.3.2.6-1] Response
        // Topic, [MQTT-PE-3.1.3.2.7-1] Correlation Data (v5.0).
        let broker = TestBroker::start().await;
        let string = |id: u8, text: &[u8]| {
            let mut out = vec![id];
            out.extend(field(text));
            out
        };
        let twice = |property: &[u8]| [property, property].concat();
        // (case, valid property, invalid properties)
        let connect_cases: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
            ("session expiry twice", vec![0x11, 0, 0, 0, 9], vec![]),
            ("receive maximum twice", vec![0x21, 0, 9], vec![]),
            ("receive maximum 0", vec![], vec![0x21, 0, 0]),
            ("maximum packet size twice", vec![0x27, 0, 0, 4, 0], vec![]),
            ("maximum packet size 0", vec![], vec![0x27, 0, 0, 0, 0]),
            ("topic alias maximum twice", vec![0x22, 0, 9], vec![]),
            ("request response information twice", vec![0x19, 1], vec![]),
            ("request response information 2", vec![], vec![0x19, 2]),
            ("request problem information twice", vec![0x17, 0], vec![]),
            ("request problem information 2", vec![], vec![0x17, 2]),
            (
                "authentication method twice",
                vec![],
                twice(&string(0x15, b"M")),
            ),
            ("authentication data alone", vec![], string(0x16, b"d")),
            (
                "authentication data twice",
                vec![],
                [string(0x15, b"M"), twice(&string(0x16, b"d"))].concat(),
            ),
        ];
        for (case, valid, invalid) in connect_cases {
            let id = field(b"props");
            if !valid.is_empty() {
                assert_accepted(broker.addr, &raw_connect(0x02, &valid, &id), case).await;
            }
            let invalid = if invalid.is_empty() {
                twice(&valid)
            } else {
                invalid
            };
            assert_refused(broker.addr, &raw_connect(0x02, &invalid, &id), case).await;
        }
        let will_cases: Vec<(&str, Vec<u8>)> = vec![
            ("will delay interval twice", vec![0x18, 0, 0, 0, 0]),
            ("payload format indicator twice", vec![0x01, 1]),
            ("message expiry interval twice", vec![0x02, 0, 0, 0, 9]),
            ("content type twice", string(0x03, b"text/plain")),
            ("response topic twice", string(0x08, b"reply")),
            ("correlation data twice", string(0x09, b"c")),
        ];
        let with_will = |will_properties: &[u8]| {
            let mut payload = field(b"will-props");
            payload.extend(vbi(will_properties.len()));
            payload.extend_from_slice(will_properties);
            payload.extend(field(b"wills/props"));
            payload.extend(field(b"x"));
            raw_connect(0x06, &[], &payload)
        };
        for (case, property) in will_cases {
            assert_accepted(broker.addr, &with_will(&property), case).await;
            assert_refused(broker.addr, &with_will(&twice(&property)), case).await;
        }
    })
    .await;
}

// ---- 3.2 CONNACK ---------------------------------------------------------

// [MQTT-3.2.0-1] [MQTT-3.2.0-2] (v5.0): a resumed session's queued
// messages wait for the CONNACK: it is the first packet, and no second
// one follows.
#[tokio::test]
async fn connack_comes_first_and_only_once() {
    timed(async {
        let broker = TestBroker::start().await;
        let (mut subscriber, _) =
            RawClient::connect_with(broker.addr, expiring("queued", true, 60)).await;
        subscriber
            .subscribe(1, &[("queue", QoS::AtLeastOnce)])
            .await;
        subscriber.disconnect().await;
        let mut publisher = RawClient::connect_v5(broker.addr, "queue-pub").await;
        for packet_id in 1..=3 {
            publisher
                .publish("queue", b"waiting", QoS::AtLeastOnce, false, packet_id)
                .await;
        }
        let mut subscriber = open_v5(broker.addr).await;
        subscriber
            .send(&Packet::Connect(Box::new(expiring("queued", false, 60))))
            .await;
        match subscriber.recv().await {
            Packet::ConnAck(connack) => {
                assert_eq!(connack.reason_code, ReasonCode::Success);
                assert!(connack.session_present);
            }
            other => panic!("expected CONNACK first, got {other:?}"),
        }
        for _ in 0..3 {
            let publish = subscriber.recv_publish().await;
            acknowledge(&mut subscriber, &publish).await;
        }
        assert!(subscriber.ping_barrier().await.is_empty());
    })
    .await;
}

// [MQTT-3.2.2-1] [MQTT-3.2.2-6] [MQTT-3.2.2-7] [MQTT-3.2.2-8]
// [MQTT-4.13.2-1] (v5.0): read raw, the CONNACK flags byte has bits 7-1
// clear, with Session Present 0 and 1 alike; a refusal (0x8C, an unknown
// authentication method) is a code of Table 3.1, has Session Present 0
// although a session exists, and the connection is then closed.
#[tokio::test]
async fn connack_flags_and_refusals() {
    timed(async {
        let broker = TestBroker::start().await;
        for (clean_start, flags) in [(true, 0x00), (false, 0x01)] {
            let mut client = open_v5(broker.addr).await;
            client
                .send(&Packet::Connect(Box::new(expiring(
                    "flags",
                    clean_start,
                    60,
                ))))
                .await;
            let connack = read_raw(&mut client).await.expect("a CONNACK");
            assert_eq!(connack[0], 0x20);
            assert_eq!(body(&connack)[0], flags, "{connack:02X?}");
            assert_eq!(body_code(&connack), 0x00);
            client.send_bytes(&[0xE0, 0x00]).await;
            assert!(read_until_closed(&mut client).await.is_empty());
        }
        let mut connect = expiring("flags", false, 60);
        connect.properties.authentication_method = Some("NO-SUCH-METHOD".to_owned());
        let mut client = open_v5(broker.addr).await;
        client.send(&Packet::Connect(Box::new(connect))).await;
        let packets = read_until_closed(&mut client).await;
        assert_eq!(packets.len(), 1, "{packets:02X?}");
        let connack = &packets[0];
        assert_eq!(connack[0], 0x20);
        assert_eq!(body(connack)[0], 0x00, "Session Present 0: {connack:02X?}");
        assert_eq!(body_code(connack), 0x8C);
        assert!(CONNACK_CODES.contains(&body_code(connack)));
    })
    .await;
}

// [MQTT-3.2.2-19] [MQTT-3.2.2-20] (v5.0): under a small client Maximum
// Packet Size, CONNACK (accepting or refusing) still arrives, without a
// Reason String or User Properties.
#[tokio::test]
async fn connack_diagnostics_fit_the_clients_maximum() {
    timed(async {
        let broker = TestBroker::start().await;
        let small = ConnectProperties {
            maximum_packet_size: std::num::NonZeroU32::new(48),
            ..ConnectProperties::default()
        };
        let (_client, connack) =
            RawClient::connect_with(broker.addr, connect_with_properties("small", small.clone()))
                .await;
        assert_eq!(connack.reason_code, ReasonCode::Success);
        assert_eq!(connack.properties.reason_string, None);
        assert!(connack.properties.user_properties.is_empty());
        let refused = ConnectProperties {
            authentication_method: Some("NO-SUCH-METHOD".to_owned()),
            ..small
        };
        let (mut client, connack) =
            RawClient::connect_with(broker.addr, connect_with_properties("small2", refused)).await;
        assert_eq!(connack.reason_code, ReasonCode::BadAuthenticationMethod);
        assert_eq!(connack.properties.reason_string, None);
        assert!(connack.properties.user_properties.is_empty());
        client.expect_closed().await;
    })
    .await;
}

// Read raw, every CONNACK property appears at most once and with an
// allowed value, across CONNACKs that carry each of them: a capped
// session expiry and keep alive, an assigned client id, Response
// Information, Maximum QoS 1 and Retain Available 0; a redirect's Server
// Reference; enhanced authentication's method and data.
#[tokio::test]
async fn connack_properties_appear_once_with_valid_values() {
    timed(async {
        // [MQTT-PE-3.2.2.3.2-1] Session Expiry Interval; [MQTT-PE-3.2.2.3.3-1]
        // [MQTT-PE-3.2.2.3.3-2] Receive Maximum, not 0; [MQTT-PE-3.2.2.3.4-1]
        // [MQTT-PE-3.2.2.3.4-2] Maximum QoS, 0 or 1; [MQTT-PE-3.2.2.3.5-1]
        // [MQTT-PE-3.2.2.3.5-2] Retain Available, 0 or 1; [MQTT-PE-3.2.2.3.6-1]
        // [MQTT-PE-3.2.2.3.6-2] Maximum Packet Size, not 0; [MQTT-PE-3.2.2.3.7-1]
        // Assigned Client Identifier; [MQTT-PE-3.2.2.3.8-1] Topic Alias Maximum;
        // [MQTT-PE-3.2.2.3.9-1] Reason String; [MQTT-PE-3.2.2.3.11-1]
        // [MQTT-PE-3.2.2.3.11-2] Wildcard Subscription Available, 0 or 1;
        // [MQTT-PE-3.2.2.3.12-1] [MQTT-PE-3.2.2.3.12-2] Subscription Identifiers
        // Available; [MQTT-PE-3.2.2.3.13-1] [MQTT-PE-3.2.2.3.13-2] Shared
        // Subscription Available; [MQTT-PE-3.2.2.3.14-1] Server Keep Alive;
        // [MQTT-PE-3.2.2.3.15-1] Response Information; [MQTT-PE-3.2.2.3.16-1]
        // Server Reference; [MQTT-PE-3.2.2.3.17-1] Authentication Method;
        // [MQTT-PE-3.2.2.3.18-1] Authentication Data (v5.0).
        let mut seen = Vec::new();
        // Capped, assigned, asked for, limited.
        let broker = TestBroker::with_config(petrel::Config {
            max_qos: 1,
            retain_available: false,
            max_keep_alive: 10,
            max_session_expiry_interval: 60,
            ..test_config()
        })
        .await;
        let mut client = open_v5(broker.addr).await;
        let connect = Connect {
            properties: ConnectProperties {
                session_expiry_interval: Some(3600),
                request_response_information: Some(true),
                ..ConnectProperties::default()
            },
            ..connect_v5("", true, 100)
        };
        client.send(&Packet::Connect(Box::new(connect))).await;
        let connack = read_raw(&mut client).await.expect("a CONNACK");
        assert_eq!(body_code(&connack), 0x00);
        let found = properties(&body(&connack)[2..]);
        assert_once_and_valid(&found);
        for id in [
            0x11, 0x12, 0x13, 0x1A, 0x21, 0x22, 0x24, 0x25, 0x27, 0x28, 0x29, 0x2A,
        ] {
            assert!(ids(&found).contains(&id), "{id:#04X} in {found:02X?}");
        }
        seen.extend(ids(&found));
        // A redirect.
        let broker = TestBroker::with_config(petrel::Config {
            redirect: Some(petrel::config::RedirectConfig {
                server_reference: "elsewhere:1883".to_owned(),
                permanent: false,
                on_connect: true,
            }),
            ..test_config()
        })
        .await;
        let mut client = open_v5(broker.addr).await;
        client
            .send(&Packet::Connect(Box::new(connect_v5("moved", true, 0))))
            .await;
        let packets = read_until_closed(&mut client).await;
        assert_eq!(packets.len(), 1);
        let found = properties(&body(&packets[0])[2..]);
        assert_once_and_valid(&found);
        assert!(ids(&found).contains(&0x1C), "{found:02X?}");
        seen.extend(ids(&found));
        // Enhanced authentication.
        let broker = auth_broker().await;
        let mut client = start_exchange(broker.addr, 0).await;
        let challenge = read_raw(&mut client).await.expect("an AUTH");
        assert_eq!(challenge[0], 0xF0);
        client
            .send(&auth(ReasonCode::ContinueAuthentication, b"answer:42"))
            .await;
        let connack = read_raw(&mut client).await.expect("a CONNACK");
        assert_eq!(body_code(&connack), 0x00);
        let found = properties(&body(&connack)[2..]);
        assert_once_and_valid(&found);
        assert!(ids(&found).contains(&0x15) && ids(&found).contains(&0x16));
        seen.extend(ids(&found));
        seen.sort_unstable();
        seen.dedup();
        assert!(
            !seen.contains(&0x1F),
            "Petrel sends no CONNACK Reason String"
        );
    })
    .await;
}

// ---- 3.12 PINGREQ --------------------------------------------------------

// [MQTT-3.12.4-1] (v5.0): each PINGREQ gets its PINGRESP, three sent in one
// write included.
#[tokio::test]
async fn every_pingreq_gets_a_pingresp() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut client = RawClient::connect_v5(broker.addr, "pinger").await;
        client
            .send_bytes(&[0xC0, 0x00, 0xC0, 0x00, 0xC0, 0x00])
            .await;
        for _ in 0..3 {
            assert_eq!(client.recv().await, Packet::PingResp);
        }
        assert!(client.ping_barrier().await.is_empty());
    })
    .await;
}

// ---- 3.14 DISCONNECT -----------------------------------------------------

// [MQTT-3.14.1-1] (v5.0): a DISCONNECT with a reserved flag bit set is
// malformed: the broker answers DISCONNECT 0x81 and closes.
#[tokio::test]
async fn disconnect_with_reserved_flags_is_malformed() {
    timed(async {
        let broker = TestBroker::start().await;
        for first in [0xE1, 0xE2, 0xE8] {
            let mut client = RawClient::connect_v5(broker.addr, "flagged").await;
            client.send_bytes(&[first, 0x00]).await;
            client.expect_disconnect(ReasonCode::MalformedPacket).await;
        }
    })
    .await;
}

// [MQTT-3.14.2-3] [MQTT-3.14.2-4] [MQTT-3.14.2-1] (v5.0): the broker's
// DISCONNECT for a protocol error names the rule in a Reason String, given
// once [MQTT-PE-3.14.2.2.3-1] (v5.0); to a client whose Maximum Packet
// Size (40 bytes, room for the CONNACK) that would exceed, the DISCONNECT
// goes without Reason String and User Properties, with the same reason
// code.
#[tokio::test]
async fn server_disconnect_diagnostics_fit_the_clients_maximum() {
    timed(async {
        let broker = TestBroker::start().await;
        let tight = 40;
        let mut roomy_size = 0;
        for (client_id, maximum) in [("roomy", None), ("tight", std::num::NonZeroU32::new(tight))] {
            let wanted = ConnectProperties {
                maximum_packet_size: maximum,
                ..ConnectProperties::default()
            };
            let (mut client, _) = RawClient::connect_v5_with(broker.addr, client_id, wanted).await;
            client
                .send(&Packet::Connect(Box::new(connect_v5("again", true, 0))))
                .await;
            let packets = read_until_closed(&mut client).await;
            assert_eq!(packets.len(), 1, "{packets:02X?}");
            let disconnect = &packets[0];
            assert_eq!(disconnect[0], 0xE0);
            assert_eq!(body(disconnect)[0], 0x82, "Protocol Error");
            let found = properties(&body(disconnect)[1..]);
            assert_once_and_valid(&found);
            match maximum {
                None => {
                    assert_eq!(ids(&found), [0x1F], "a Reason String: {found:02X?}");
                    roomy_size = disconnect.len();
                }
                Some(maximum) => {
                    assert!(roomy_size > maximum.get() as usize, "the test needs it");
                    assert!(disconnect.len() <= maximum.get() as usize);
                    assert!(found.is_empty(), "{found:02X?}");
                }
            }
        }
    })
    .await;
}

// A client DISCONNECT with a property given twice is a Protocol Error:
// the broker answers DISCONNECT 0x82 and closes.
// [MQTT-PE-3.14.2.2.2-1] Session Expiry Interval twice;
// [MQTT-PE-3.14.2.2.3-1] Reason String twice; [MQTT-PE-3.14.2.2.5-1]
// Server Reference twice (v5.0).
#[tokio::test]
async fn disconnect_property_given_twice_is_a_protocol_error() {
    timed(async {
        let broker = TestBroker::start().await;
        let string = |id: u8, text: &[u8]| {
            let mut out = vec![id];
            out.extend(field(text));
            out
        };
        for property in [
            vec![0x11, 0, 0, 0, 5],
            string(0x1F, b"bye"),
            string(0x1C, b"other:1883"),
        ] {
            let connect = expiring("leaving", true, 60);
            let (mut client, connack) = RawClient::connect_with(broker.addr, connect).await;
            assert_eq!(connack.reason_code, ReasonCode::Success);
            let twice = [property.clone(), property].concat();
            client
                .send_bytes(&raw_with_properties(0xE0, 0x00, &twice))
                .await;
            client.expect_disconnect(ReasonCode::ProtocolError).await;
        }
    })
    .await;
}

// ---- 3.15 AUTH -----------------------------------------------------------

// [MQTT-3.15.2-1] [MQTT-3.15.2-2] [MQTT-3.15.2-3] (v5.0): read raw, the
// broker's AUTH packets use AUTH reason codes (0x18 to continue, 0x00 when
// re-authentication succeeds), give each property once
// [MQTT-PE-3.15.2.2.2-2] [MQTT-PE-3.15.2.2.3-1] [MQTT-PE-3.15.2.2.4-1]
// (v5.0), always name the method [MQTT-PE-3.15.2.2.2-1] (v5.0), and keep
// within a small client Maximum Packet Size (64 bytes, which the CONNACK
// also needs): no Reason String, no User Properties.
#[tokio::test]
async fn broker_auth_packets_are_well_formed_and_fit() {
    timed(async {
        let broker = auth_broker().await;
        let small = 64;
        let mut client = start_exchange(broker.addr, small).await;
        let check = |auth: &[u8], code: u8| {
            assert_eq!(auth[0], 0xF0, "{auth:02X?}");
            assert!(auth.len() <= small as usize);
            assert_eq!(body(auth)[0], code);
            assert!(AUTH_CODES.contains(&code));
            let found = properties(&body(auth)[1..]);
            assert_once_and_valid(&found);
            assert!(ids(&found).contains(&0x15), "{found:02X?}");
            assert!(!ids(&found).contains(&0x1F) && !ids(&found).contains(&0x26));
        };
        let challenge = read_raw(&mut client).await.expect("an AUTH");
        check(&challenge, 0x18);
        client
            .send(&auth(ReasonCode::ContinueAuthentication, b"answer:42"))
            .await;
        let connack = read_raw(&mut client).await.expect("a CONNACK");
        assert_eq!((connack[0], body_code(&connack)), (0x20, 0x00));
        client
            .send(&auth(ReasonCode::ReAuthenticate, b"hello"))
            .await;
        check(&read_raw(&mut client).await.expect("an AUTH"), 0x18);
        client
            .send(&auth(ReasonCode::ContinueAuthentication, b"answer:42"))
            .await;
        check(&read_raw(&mut client).await.expect("an AUTH"), 0x00);
    })
    .await;
}

// [MQTT-3.15.1-1] (v5.0): an AUTH with a reserved flag bit set is
// malformed: DISCONNECT 0x81 and the connection closed, even on a
// connection where AUTH is otherwise welcome.
#[tokio::test]
async fn auth_with_reserved_flags_is_malformed() {
    timed(async {
        let broker = auth_broker().await;
        for first in [0xF1, 0xF2, 0xF8] {
            let mut client = authenticated(broker.addr).await;
            let mut bytes = bytes::BytesMut::new();
            protocol::encode(
                &auth(ReasonCode::ReAuthenticate, b"hello"),
                ProtocolVersion::V5,
                &mut bytes,
            )
            .expect("encodes");
            bytes[0] = first;
            client.send_bytes(&bytes).await;
            client.expect_disconnect(ReasonCode::MalformedPacket).await;
        }
    })
    .await;
}

// AUTH property Protocol Errors: [MQTT-PE-3.15.2.2.2-1] no Authentication
// Method (during the CONNECT exchange: CONNACK 0x82; when
// re-authenticating: DISCONNECT 0x82); [MQTT-PE-3.15.2.2.2-2] the method
// twice; [MQTT-PE-3.15.2.2.3-1] Authentication Data twice;
// [MQTT-PE-3.15.2.2.4-1] Reason String twice: DISCONNECT 0x82 (v5.0).
#[tokio::test]
async fn auth_property_protocol_errors() {
    timed(async {
        let broker = auth_broker().await;
        let string = |id: u8, text: &[u8]| {
            let mut out = vec![id];
            out.extend(field(text));
            out
        };
        let no_method = string(0x16, b"answer:42");
        // During the exchange that CONNECT started.
        let mut client = start_exchange(broker.addr, 0).await;
        assert!(matches!(client.recv().await, Packet::Auth(_)));
        client
            .send_bytes(&raw_with_properties(0xF0, 0x18, &no_method))
            .await;
        match client.recv().await {
            Packet::ConnAck(connack) => assert_eq!(connack.reason_code, ReasonCode::ProtocolError),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        client.expect_closed().await;
        // On an authenticated connection.
        let method = string(0x15, METHOD.as_bytes());
        let hello = string(0x16, b"hello");
        for (code, properties) in [
            (0x19, string(0x16, b"hello")),
            (
                0x19,
                [method.clone(), method.clone(), hello.clone()].concat(),
            ),
            (
                0x19,
                [method.clone(), hello.clone(), hello.clone()].concat(),
            ),
            (
                0x19,
                [
                    method.clone(),
                    hello.clone(),
                    string(0x1F, b"why"),
                    string(0x1F, b"why"),
                ]
                .concat(),
            ),
        ] {
            let mut client = authenticated(broker.addr).await;
            client
                .send_bytes(&raw_with_properties(0xF0, code, &properties))
                .await;
            client.expect_disconnect(ReasonCode::ProtocolError).await;
        }
    })
    .await;
}
