//! CONNECT and CONNACK: protocol levels, client identifiers, refusals,
//! connect timeout and the connection limit.

mod common;

use bytes::Bytes;
use common::*;
use petrel::protocol::{Packet, ProtocolVersion, QoS, ReasonCode};

// [MQTT-3.1.4-4] [MQTT-3.2.0-1] [MQTT-3.2.2-1] (v3.1.1): a valid clean
// CONNECT gets CONNACK 0 with session present 0, and CONNACK comes first.
// [MQTT-3.1.3-5] (v3.1.1): a 1-23 character alphanumeric id is accepted.
#[tokio::test]
async fn valid_connect_gets_connack_accepted() {
    timed(async {
        let broker = TestBroker::start().await;
        let (mut client, connack) = RawClient::connect_with(
            broker.addr,
            connect_packet("abcdefghijklmnopqrstuvw", true, 30),
        )
        .await;
        assert_eq!(connack.reason_code, ReasonCode::Success);
        assert!(!connack.session_present);
        assert!(client.ping_barrier().await.is_empty());
    })
    .await;
}

// MQTT 3.1 ("MQIsdp", level 3) clients are served too.
#[tokio::test]
async fn mqtt_3_1_client_publishes_and_subscribes() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut connect = connect_packet("old-client", true, 0);
        connect.protocol = ProtocolVersion::V3_1;
        let (mut client, connack) = RawClient::connect_with(broker.addr, connect).await;
        assert_eq!(connack.reason_code, ReasonCode::Success);
        client.subscribe(1, &[("legacy/#", QoS::AtLeastOnce)]).await;
        client
            .publish("legacy/x", b"3.1", QoS::AtLeastOnce, false, 2)
            .await;
        let publish = client.recv_publish().await;
        assert_eq!(&publish.payload[..], b"3.1");
    })
    .await;
}

// [MQTT-3.1.3-6] (v3.1.1): an empty client id with clean session gets a
// unique id assigned; two such clients do not take each other over.
#[tokio::test]
async fn empty_client_id_with_clean_session_is_assigned_one() {
    timed(async {
        let broker = TestBroker::start().await;
        let (mut first, connack) =
            RawClient::connect_with(broker.addr, connect_packet("", true, 0)).await;
        assert_eq!(connack.reason_code, ReasonCode::Success);
        let (mut second, connack) =
            RawClient::connect_with(broker.addr, connect_packet("", true, 0)).await;
        assert_eq!(connack.reason_code, ReasonCode::Success);
        assert!(first.ping_barrier().await.is_empty());
        assert!(second.ping_barrier().await.is_empty());
        assert_eq!(broker.broker.metrics().clients_connected.get(), 2);
    })
    .await;
}

// [MQTT-3.1.3-8] [MQTT-3.1.3-9] [MQTT-3.2.2-4] [MQTT-3.2.2-5] (v3.1.1):
// an empty id without clean session is refused with 0x02, session present
// 0, and the connection is closed.
#[tokio::test]
async fn empty_client_id_without_clean_session_is_refused() {
    timed(async {
        let broker = TestBroker::start().await;
        let (mut client, connack) =
            RawClient::connect_with(broker.addr, connect_packet("", false, 0)).await;
        assert_eq!(connack.reason_code, ReasonCode::ClientIdentifierNotValid);
        assert!(!connack.session_present);
        let mut bytes = bytes::BytesMut::new();
        petrel::protocol::encode(
            &Packet::ConnAck(connack),
            ProtocolVersion::V3_1_1,
            &mut bytes,
        )
        .unwrap();
        assert_eq!(&bytes[..], &[0x20, 0x02, 0x00, 0x02]);
        client.expect_closed().await;
    })
    .await;
}

// [MQTT-3.1.2-2] (v3.1.1): an unsupported protocol level gets CONNACK 0x01
// and the connection is closed.
#[tokio::test]
async fn unsupported_protocol_level_gets_return_code_1() {
    timed(async {
        let broker = TestBroker::start().await;
        // Level 6.
        let mut client = RawClient::open(broker.addr).await;
        client
            .send_bytes(&[
                0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06, 0x02, 0x00, 0x3C, 0x00, 0x00,
            ])
            .await;
        match client.recv().await {
            Packet::ConnAck(connack) => {
                assert_eq!(connack.reason_code, ReasonCode::UnsupportedProtocolVersion)
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
        client.expect_closed().await;
    })
    .await;
}

// [MQTT-3.1.2-1] (v3.1.1): a wrong protocol name is not processed further.
#[tokio::test]
async fn unknown_protocol_name_is_not_processed() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut client = RawClient::open(broker.addr).await;
        client
            .send_bytes(&[
                0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'X', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x00,
            ])
            .await;
        match client.try_recv().await {
            None => {}
            Some(Packet::ConnAck(connack)) => {
                assert_eq!(connack.reason_code, ReasonCode::UnsupportedProtocolVersion);
                client.expect_closed().await;
            }
            Some(other) => panic!("unexpected {other:?}"),
        }
        assert_eq!(broker.broker.metrics().clients_connected.get(), 0);
    })
    .await;
}

// [MQTT-3.1.2-3] [MQTT-3.1.4-1] [MQTT-3.2.2-6] (v3.1.1): a reserved flag
// set: closed without CONNACK.
#[tokio::test]
async fn connect_with_reserved_flag_is_closed_without_connack() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut client = RawClient::open(broker.addr).await;
        client
            .send_bytes(&[
                0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x03, 0x00, 0x3C, 0x00, 0x00,
            ])
            .await;
        client.expect_closed().await;
        assert_eq!(broker.broker.metrics().protocol_errors.get(), 1);
    })
    .await;
}

// [MQTT-3.1.2-14] (v3.1.1): will QoS 3 is malformed: closed, no CONNACK.
#[tokio::test]
async fn connect_with_will_qos_3_is_closed() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut client = RawClient::open(broker.addr).await;
        // Will flag + will QoS 3, will topic "w", empty will payload.
        client
            .send_bytes(&[
                0x10, 0x11, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x1E, 0x00, 0x3C, 0x00, 0x00,
                0x00, 0x01, b'w', 0x00, 0x00,
            ])
            .await;
        client.expect_closed().await;
    })
    .await;
}

// [MQTT-3.1.0-1] (v3.1.1): a first packet other than CONNECT closes the
// connection.
#[tokio::test]
async fn first_packet_must_be_connect() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut client = RawClient::open(broker.addr).await;
        client.send(&Packet::PingReq).await;
        client.expect_closed().await;
    })
    .await;
}

// [MQTT-3.1.0-2] (v3.1.1): a second CONNECT is a protocol violation.
#[tokio::test]
async fn second_connect_is_a_protocol_violation() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut client = RawClient::connect(broker.addr, "twice").await;
        client
            .send(&Packet::Connect(Box::new(connect_packet("twice", true, 0))))
            .await;
        client.expect_closed().await;
        assert_eq!(broker.broker.metrics().protocol_errors.get(), 1);
    })
    .await;
}

// [MQTT-3.1.4-5] (v3.1.1): after a refused CONNECT, what the client sent
// next is not processed (the PUBLISH that follows is never delivered).
#[tokio::test]
async fn data_after_a_refused_connect_is_not_processed() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut watcher = RawClient::connect(broker.addr, "watcher").await;
        watcher
            .subscribe(1, &[("after/refusal", QoS::AtMostOnce)])
            .await;
        let mut client = RawClient::open(broker.addr).await;
        let mut bytes = bytes::BytesMut::new();
        let refused = Packet::Connect(Box::new(connect_packet("", false, 0)));
        petrel::protocol::encode(&refused, ProtocolVersion::V3_1_1, &mut bytes).unwrap();
        let publish = publish_packet("after/refusal", b"x", QoS::AtMostOnce, false, None);
        petrel::protocol::encode(&publish, ProtocolVersion::V3_1_1, &mut bytes).unwrap();
        client.send_bytes(&bytes).await;
        match client.recv().await {
            Packet::ConnAck(connack) => {
                assert_eq!(connack.reason_code, ReasonCode::ClientIdentifierNotValid)
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
        client.expect_closed().await;
        assert!(watcher.ping_barrier().await.is_empty());
    })
    .await;
}

// A connection that sends no CONNECT within connect_timeout is closed and
// counted.
#[tokio::test]
async fn silent_connection_is_closed_after_connect_timeout() {
    timed(async {
        let config = petrel::Config {
            connect_timeout: 1,
            ..test_config()
        };
        let broker = TestBroker::with_config(config).await;
        let mut client = RawClient::open(broker.addr).await;
        client.expect_closed().await;
        assert_eq!(broker.broker.metrics().connect_timeouts.get(), 1);
    })
    .await;
}

// max_connections: the connection over the limit is closed and counted;
// the others keep working.
#[tokio::test]
async fn connections_over_the_limit_are_closed_and_counted() {
    timed(async {
        let config = petrel::Config {
            max_connections: 2,
            ..test_config()
        };
        let broker = TestBroker::with_config(config).await;
        let mut first = RawClient::connect(broker.addr, "one").await;
        let mut second = RawClient::connect(broker.addr, "two").await;
        let mut third = RawClient::open(broker.addr).await;
        third
            .send(&Packet::Connect(Box::new(connect_packet("three", true, 0))))
            .await;
        third.expect_closed().await;
        assert_eq!(broker.broker.metrics().connections_refused.get(), 1);
        assert!(first.ping_barrier().await.is_empty());
        assert!(second.ping_barrier().await.is_empty());
    })
    .await;
}

// allow_anonymous = false and no authentication configured: refused with
// return code 5 (not authorised).
#[tokio::test]
async fn anonymous_clients_refused_when_not_allowed() {
    timed(async {
        let config = petrel::Config {
            allow_anonymous: Some(false),
            ..test_config()
        };
        let broker = TestBroker::with_config(config).await;
        let mut connect = connect_packet("anon", true, 0);
        connect.username = Some("user".into());
        connect.password = Some(Bytes::from_static(b"secret"));
        let (mut client, connack) = RawClient::connect_with(broker.addr, connect).await;
        assert_eq!(connack.reason_code, ReasonCode::NotAuthorized);
        client.expect_closed().await;
    })
    .await;
}

// [MQTT-3.1.3-4] [MQTT-3.1.3-10] [MQTT-3.1.3-11] (v3.1.1): the client id,
// will topic and user name must be UTF-8; otherwise the connection is
// closed without CONNACK.
#[tokio::test]
async fn connect_strings_must_be_utf8() {
    timed(async {
        let broker = TestBroker::start().await;
        let header = [0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04];
        let cases: Vec<(&str, Vec<u8>)> = vec![
            // Client id FF.
            (
                "client id",
                [&header[..], &[0x02, 0x00, 0x00, 0x00, 0x01, 0xFF]].concat(),
            ),
            // Will flag; client id "c"; will topic FF; will payload empty.
            (
                "will topic",
                [
                    &header[..],
                    &[
                        0x06, 0x00, 0x00, 0x00, 0x01, b'c', 0x00, 0x01, 0xFF, 0x00, 0x00,
                    ],
                ]
                .concat(),
            ),
            // User name flag; client id "c"; user name FF.
            (
                "user name",
                [
                    &header[..],
                    &[0x82, 0x00, 0x00, 0x00, 0x01, b'c', 0x00, 0x01, 0xFF],
                ]
                .concat(),
            ),
        ];
        for (what, body) in cases {
            let mut client = RawClient::open(broker.addr).await;
            let mut bytes = vec![0x10, body.len() as u8];
            bytes.extend_from_slice(&body);
            client.send_bytes(&bytes).await;
            assert!(
                client.try_recv().await.is_none(),
                "{what}: not closed without CONNACK"
            );
        }
        assert_eq!(broker.broker.metrics().clients_connected.get(), 0);
    })
    .await;
}
