//! Malformed packets and protocol violations after CONNECT: the offending
//! connection is closed (and counted), the broker and its other clients
//! carry on.

mod common;

use common::*;
use petrel::protocol::{Packet, QoS};

/// A subscriber that must keep receiving while another client misbehaves.
async fn bystander(broker: &TestBroker) -> (RawClient, RawClient) {
    let mut subscriber = RawClient::connect(broker.addr, "bystander-sub").await;
    subscriber.subscribe(1, &[("ok/#", QoS::AtLeastOnce)]).await;
    let publisher = RawClient::connect(broker.addr, "bystander-pub").await;
    (subscriber, publisher)
}

async fn bystander_still_works(subscriber: &mut RawClient, publisher: &mut RawClient) {
    publisher
        .publish("ok/still", b"fine", QoS::AtLeastOnce, false, 9)
        .await;
    let publish = subscriber.recv_publish().await;
    assert_eq!(&publish.payload[..], b"fine");
    acknowledge(subscriber, &publish).await;
}

/// Sends `bytes` after a valid CONNECT and expects the connection closed.
async fn violation_closes(broker: &TestBroker, client_id: &str, bytes: &[u8]) {
    let mut client = RawClient::connect(broker.addr, client_id).await;
    client.send_bytes(bytes).await;
    client.expect_closed().await;
}

// [MQTT-4.8.0-1] (v3.1.1): each violation closes its connection; the
// bystander never notices; each is counted. Invalid fixed-header flags
// close the connection [MQTT-2.2.2-2] (v3.1.1).
#[tokio::test]
async fn malformed_packets_close_only_their_connection() {
    timed(async {
        let broker = TestBroker::start().await;
        let (mut subscriber, mut publisher) = bystander(&broker).await;
        let cases: &[(&str, &[u8])] = &[
            // [MQTT-3.3.1-4] (v3.1.1) QoS 3.
            ("qos3", &[0x36, 0x05, 0x00, 0x01, b't', 0x00, 0x01]),
            // [MQTT-3.3.2-2] [MQTT-4.7.1-1] (v3.1.1) wildcard in a topic name.
            ("wildcard", &[0x30, 0x05, 0x00, 0x03, b'a', b'/', b'#']),
            // [MQTT-4.7.3-1] (v3.1.1) empty topic name.
            ("empty-topic", &[0x30, 0x03, 0x00, 0x00, b'x']),
            // [MQTT-4.7.3-2] (v3.1.1) U+0000 in a topic.
            ("null", &[0x30, 0x05, 0x00, 0x03, b'a', 0x00, b'b']),
            // [MQTT-3.3.2-1] (v3.1.1) topic that is not UTF-8.
            ("utf8", &[0x30, 0x04, 0x00, 0x02, 0xC3, 0x28]),
            // [MQTT-3.6.1-1] (v3.1.1) PUBREL with flags 0000.
            ("pubrel-flags", &[0x60, 0x02, 0x00, 0x01]),
            // [MQTT-3.8.1-1] (v3.1.1) SUBSCRIBE with flags 0000.
            (
                "subscribe-flags",
                &[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00],
            ),
            // [MQTT-3.10.1-1] (v3.1.1) UNSUBSCRIBE with flags 0000.
            (
                "unsubscribe-flags",
                &[0xA0, 0x05, 0x00, 0x01, 0x00, 0x01, b'a'],
            ),
            // [MQTT-3.14.1-1] (v3.1.1) DISCONNECT with a reserved flag.
            ("disconnect-flags", &[0xE1, 0x00]),
            // [MQTT-3.8.3-3] (v3.1.1) SUBSCRIBE without a topic filter.
            ("subscribe-empty", &[0x82, 0x02, 0x00, 0x01]),
            // [MQTT-3.8.3-4] (v3.1.1) requested QoS 3 / reserved bits.
            (
                "subscribe-qos3",
                &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x03],
            ),
            (
                "subscribe-reserved",
                &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x04],
            ),
            // [MQTT-3.8.3-1] (v3.1.1) a filter that is not UTF-8.
            (
                "subscribe-utf8",
                &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 0xFF, 0x00],
            ),
            // [MQTT-4.7.1-2] (v3.1.1) '#' not last.
            (
                "filter-hash",
                &[0x82, 0x08, 0x00, 0x01, 0x00, 0x03, b'#', b'/', b'a', 0x00],
            ),
            // [MQTT-4.7.1-3] (v3.1.1) '+' not a whole level.
            (
                "filter-plus",
                &[0x82, 0x07, 0x00, 0x01, 0x00, 0x02, b'a', b'+', 0x00],
            ),
            // [MQTT-3.10.3-2] (v3.1.1) UNSUBSCRIBE without a topic filter.
            ("unsubscribe-empty", &[0xA2, 0x02, 0x00, 0x01]),
            // [MQTT-3.10.3-1] (v3.1.1) an UNSUBSCRIBE filter that is not UTF-8.
            (
                "unsubscribe-utf8",
                &[0xA2, 0x05, 0x00, 0x01, 0x00, 0x01, 0xFF],
            ),
            // Packet id 0 [MQTT-2.3.1-1] (v3.1.1).
            (
                "packet-id-zero",
                &[0x32, 0x05, 0x00, 0x01, b't', 0x00, 0x00],
            ),
            // Reserved packet type 0 and a server-only packet (CONNACK).
            ("type-0", &[0x00, 0x00]),
            ("connack", &[0x20, 0x02, 0x00, 0x00]),
            // AUTH does not exist before MQTT 5.
            ("auth", &[0xF0, 0x00]),
            // A remaining length over four bytes.
            ("length", &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
            // Bytes left over after a PINGREQ's content.
            ("trailing", &[0xC0, 0x01, 0x00]),
        ];
        assert!(!cases.is_empty());
        for (index, (name, bytes)) in cases.iter().enumerate() {
            violation_closes(&broker, name, bytes).await;
            assert_eq!(
                broker.broker.metrics().protocol_errors.get(),
                index as u64 + 1,
                "{name} was not counted"
            );
        }
        bystander_still_works(&mut subscriber, &mut publisher).await;
    })
    .await;
}

// Random bytes instead of CONNECT: closed, nothing else happens.
#[tokio::test]
async fn garbage_instead_of_connect_is_closed() {
    timed(async {
        let broker = TestBroker::start().await;
        let (mut subscriber, mut publisher) = bystander(&broker).await;
        let mut seed: u32 = 0x1234_5678;
        for _ in 0..20 {
            let mut client = RawClient::open(broker.addr).await;
            let bytes: Vec<u8> = (0..64)
                .map(|_| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (seed >> 24) as u8 | 0x01 // never a CONNECT header (0x10)
                })
                .collect();
            let _ = tokio::io::AsyncWriteExt::write_all(&mut client.stream, &bytes).await;
            assert!(
                !matches!(client.try_recv().await, Some(Packet::ConnAck(_))),
                "garbage was accepted"
            );
        }
        bystander_still_works(&mut subscriber, &mut publisher).await;
    })
    .await;
}

// A header announcing 200 MB is refused from its first bytes
// (max_packet_size), without waiting for or buffering the body.
#[tokio::test]
async fn oversized_packet_is_refused_at_its_header() {
    timed(async {
        let broker = TestBroker::start().await;
        let (mut subscriber, mut publisher) = bystander(&broker).await;
        violation_closes(&broker, "huge", &[0x30, 0x80, 0x80, 0x80, 0x64]).await;
        // Just over the configured maximum (1 MiB by default) is refused too.
        let mut client = RawClient::connect(broker.addr, "big").await;
        let payload = vec![0u8; 1024 * 1024];
        let publish = publish_packet("t", &payload, QoS::AtMostOnce, false, None);
        let _ = client.try_send(&publish).await;
        client.expect_closed().await;
        bystander_still_works(&mut subscriber, &mut publisher).await;
    })
    .await;
}

// Topic bounds: a topic name over max_topic_levels or max_topic_length
// closes the connection; a filter over them is refused in its SUBACK
// (return code 0x80) [MQTT-3.9.3-2] (v3.1.1).
#[tokio::test]
async fn topic_bounds_are_enforced() {
    timed(async {
        let config = petrel::Config {
            max_topic_levels: 3,
            max_topic_length: 16,
            ..test_config()
        };
        let broker = TestBroker::with_config(config).await;
        let mut client = RawClient::connect(broker.addr, "deep").await;
        let codes = client
            .subscribe(
                1,
                &[
                    ("a/b/c/d", QoS::AtMostOnce),
                    ("a/b/c", QoS::AtLeastOnce),
                    ("x".repeat(17).as_str(), QoS::AtMostOnce),
                ],
            )
            .await;
        assert_eq!(
            codes,
            vec![
                petrel::protocol::ReasonCode::UnspecifiedError,
                petrel::protocol::ReasonCode::GrantedQoS1,
                petrel::protocol::ReasonCode::UnspecifiedError
            ]
        );
        let mut bytes = bytes::BytesMut::new();
        petrel::protocol::encode(
            &publish_packet("a/b/c/d", b"x", QoS::AtMostOnce, false, None),
            petrel::protocol::ProtocolVersion::V3_1_1,
            &mut bytes,
        )
        .unwrap();
        client.send_bytes(&bytes).await;
        client.expect_closed().await;
        let mut client = RawClient::connect(broker.addr, "long").await;
        client
            .send(&publish_packet(
                &"y".repeat(17),
                b"x",
                QoS::AtMostOnce,
                false,
                None,
            ))
            .await;
        client.expect_closed().await;
        assert_eq!(broker.broker.metrics().protocol_errors.get(), 2);
    })
    .await;
}

// A subscriber that never reads: its queue fills and messages to it are
// dropped and counted (the broker's memory for it stays bounded), while a
// bystander loses nothing.
#[tokio::test]
async fn subscriber_that_never_reads_is_bounded() {
    timed(async {
        let config = petrel::Config {
            max_queued_messages: 50,
            ..test_config()
        };
        let broker = TestBroker::with_config(config).await;
        let mut stuck = RawClient::connect(broker.addr, "stuck").await;
        stuck.subscribe(1, &[("flood", QoS::AtMostOnce)]).await;
        let (mut subscriber, mut publisher) = bystander(&broker).await;
        let mut flooder = RawClient::connect(broker.addr, "flooder").await;
        let payload = vec![0x55u8; 16 * 1024];
        // 4,000 x 16 KiB = 64 MiB, far more than socket buffers, the write
        // high-water mark and 50 queued messages can hold.
        for _ in 0..4000 {
            flooder
                .send(&publish_packet(
                    "flood",
                    &payload,
                    QoS::AtMostOnce,
                    false,
                    None,
                ))
                .await;
        }
        assert!(flooder.ping_barrier().await.is_empty());
        assert!(broker.broker.metrics().messages_dropped.get() > 3000);
        bystander_still_works(&mut subscriber, &mut publisher).await;
        // The stuck client is still connected; nothing was lost for anyone else.
        assert!(stuck.try_send(&Packet::PingReq).await);
    })
    .await;
}
