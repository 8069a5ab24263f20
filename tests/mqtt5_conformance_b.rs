//! MQTT 5 conformance, sections 3.3 to 3.11 and 4.1 to 4.9: PUBLISH and
//! its acknowledgements, SUBSCRIBE and UNSUBSCRIBE, the QoS flows, retries,
//! ordering, topics and shared subscriptions, each checked against a real
//! broker over 127.0.0.1 with raw packets, malformed ones built by hand.

mod common;

use std::num::{NonZeroU16, NonZeroU32};
use std::time::Duration;

use bytes::Bytes;
use common::raw::{field, packet, properties as property_block};
use common::*;
use petrel::protocol::{
    Ack, ConnAck, ConnectProperties, Packet, Publish, PublishProperties, QoS, ReasonCode,
    SubscriptionOptions, TopicName,
};

// ---------------------------------------------------------------------------
// Hand-built packets.

/// A 5.0 PUBLISH: `first` carries type and flags.
fn raw_publish(
    first: u8,
    topic_name: &[u8],
    packet_id: Option<u16>,
    properties: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let mut body = field(topic_name);
    if let Some(packet_id) = packet_id {
        body.extend_from_slice(&packet_id.to_be_bytes());
    }
    body.extend(property_block(properties));
    body.extend_from_slice(payload);
    packet(first, &body)
}

/// A 5.0 SUBSCRIBE: `first` carries type and flags; filters with their
/// options byte.
fn raw_subscribe(first: u8, properties: &[u8], filters: &[(&[u8], u8)]) -> Vec<u8> {
    let mut body = 1u16.to_be_bytes().to_vec();
    body.extend(property_block(properties));
    for (filter_bytes, options_byte) in filters {
        body.extend(field(filter_bytes));
        body.push(*options_byte);
    }
    packet(first, &body)
}

/// A 5.0 UNSUBSCRIBE: `first` carries type and flags.
fn raw_unsubscribe(first: u8, filters: &[&[u8]]) -> Vec<u8> {
    let mut body = 1u16.to_be_bytes().to_vec();
    body.extend(property_block(&[]));
    for filter_bytes in filters {
        body.extend(field(filter_bytes));
    }
    packet(first, &body)
}

/// A 5.0 PUBACK, PUBREC, PUBREL or PUBCOMP with reason code 0x00.
fn raw_ack(first: u8, packet_id: u16, properties: &[u8]) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    body.push(0x00);
    body.extend(property_block(properties));
    packet(first, &body)
}

/// A Reason String property.
fn reason_string(text: &str) -> Vec<u8> {
    let mut out = vec![0x1F];
    out.extend(field(text.as_bytes()));
    out
}

/// A fresh 5.0 connection sends `bytes` and must get DISCONNECT with
/// `reason_code`, then see the connection closed.
async fn refused(addr: std::net::SocketAddr, bytes: &[u8], reason_code: ReasonCode) {
    let mut client = RawClient::connect_v5(addr, "offender").await;
    client.send_bytes(bytes).await;
    client.expect_disconnect(reason_code).await;
}

// ---------------------------------------------------------------------------
// Shorthands.

/// A 5.0 connection with `clean_start` and a Session Expiry Interval.
async fn connect_expiring(
    addr: std::net::SocketAddr,
    client_id: &str,
    clean_start: bool,
    seconds: u32,
) -> (RawClient, ConnAck) {
    let connect = petrel::protocol::Connect {
        properties: ConnectProperties {
            session_expiry_interval: Some(seconds),
            ..ConnectProperties::default()
        },
        ..connect_v5(client_id, clean_start, 0)
    };
    let (client, connack) = RawClient::connect_with(addr, connect).await;
    assert_eq!(connack.reason_code, ReasonCode::Success);
    (client, connack)
}

fn ack_with_code(packet_id: petrel::protocol::PacketId, reason_code: ReasonCode) -> Ack {
    let mut ack = Ack::new(packet_id);
    ack.reason_code = reason_code;
    ack
}

fn packet_id_of(publish: &Publish) -> petrel::protocol::PacketId {
    publish
        .packet_id
        .expect("a QoS 1 or 2 PUBLISH has a packet id")
}

fn expiring_message(seconds: u32) -> PublishProperties {
    PublishProperties {
        message_expiry_interval: Some(seconds),
        ..PublishProperties::default()
    }
}

fn aliased(alias: u16) -> PublishProperties {
    PublishProperties {
        topic_alias: NonZeroU16::new(alias),
        ..PublishProperties::default()
    }
}

/// A PUBLISH that names its topic by `alias` alone.
fn by_alias(alias: u16, payload: &[u8]) -> Packet {
    let mut packet = publish_with("x", payload, QoS::AtMostOnce, None, aliased(alias));
    if let Packet::Publish(publish) = &mut packet {
        publish.topic = TopicName::alias_only();
    }
    packet
}

/// Receives PUBLISH packets until a PINGRESP shows there are no more.
async fn drain(client: &mut RawClient) -> Vec<Publish> {
    client
        .ping_barrier()
        .await
        .into_iter()
        .map(|packet| match packet {
            Packet::Publish(publish) => publish,
            other => panic!("expected PUBLISH, got {other:?}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------
// 3.3 PUBLISH: fixed header.

// [MQTT-3.3.1-2] [MQTT-4.3.1-1] (v5.0): a QoS 0 PUBLISH the broker sends
// has DUP 0, even when the publisher set DUP on its QoS 1 original; a
// QoS 0 PUBLISH with DUP 1 is malformed (DISCONNECT 0x81).
// [MQTT-3.3.1-4] (v5.0): QoS 3 is malformed (DISCONNECT 0x81).
#[tokio::test]
async fn dup_and_qos_bits_of_qos_0_and_qos_3() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut subscriber = RawClient::connect_v5(broker.addr, "sub").await;
        subscriber.subscribe(1, &[("t", QoS::AtMostOnce)]).await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        // QoS 1, DUP 1, downgraded to QoS 0 for the subscriber.
        publisher
            .send_bytes(&raw_publish(0x3A, b"t", Some(1), &[], b"x"))
            .await;
        assert!(matches!(publisher.recv().await, Packet::PubAck(_)));
        let publish = subscriber.recv_publish().await;
        assert_eq!(publish.qos, QoS::AtMostOnce);
        assert!(!publish.dup);
        refused(
            broker.addr,
            &raw_publish(0x38, b"t", None, &[], b"x"),
            ReasonCode::MalformedPacket,
        )
        .await;
        refused(
            broker.addr,
            &raw_publish(0x36, b"t", Some(1), &[], b"x"),
            ReasonCode::MalformedPacket,
        )
        .await;
    })
    .await;
}

// [MQTT-3.3.1-3] [MQTT-4.3.2-2] [MQTT-4.3.3-2] (v5.0): the DUP of a
// forwarded PUBLISH is the broker's own: a first delivery at QoS 1 or 2
// goes out with DUP 0 whatever the publisher's DUP was.
#[tokio::test]
async fn outgoing_dup_is_not_copied_from_the_publisher() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut subscriber = RawClient::connect_v5(broker.addr, "sub").await;
        subscriber.subscribe(1, &[("t", QoS::ExactlyOnce)]).await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        // QoS 1 with DUP 1, then QoS 2 with DUP 1.
        publisher
            .send_bytes(&raw_publish(0x3A, b"t", Some(1), &[], b"1"))
            .await;
        assert!(matches!(publisher.recv().await, Packet::PubAck(_)));
        publisher
            .send_bytes(&raw_publish(0x3C, b"t", Some(2), &[], b"2"))
            .await;
        assert!(matches!(publisher.recv().await, Packet::PubRec(_)));
        let first = subscriber.recv_publish().await;
        assert_eq!((first.qos, first.dup), (QoS::AtLeastOnce, false));
        let second = subscriber.recv_publish().await;
        assert_eq!((second.qos, second.dup), (QoS::ExactlyOnce, false));
    })
    .await;
}

// [MQTT-3.3.1-5] [MQTT-3.3.1-6] [MQTT-3.3.1-7] [MQTT-3.3.1-8] (v5.0): a
// retained PUBLISH is stored, replacing the previous one; RETAIN 0 neither
// stores nor removes; an empty retained payload is forwarded, removes the
// retained message and is not itself stored.
#[tokio::test]
async fn retained_messages_are_stored_replaced_and_removed() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut live = RawClient::connect_v5(broker.addr, "live").await;
        live.subscribe(1, &[("r", QoS::AtLeastOnce)]).await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        publisher
            .publish("r", b"one", QoS::AtLeastOnce, true, 1)
            .await;
        publisher
            .publish("r", b"two", QoS::AtLeastOnce, true, 2)
            .await;
        publisher
            .publish("r", b"live only", QoS::AtLeastOnce, false, 3)
            .await;
        for payload in [&b"one"[..], b"two", b"live only"] {
            let publish = live.recv_publish().await;
            assert_eq!(&publish.payload[..], payload);
            acknowledge(&mut live, &publish).await;
        }
        let mut later = RawClient::connect_v5(broker.addr, "later").await;
        later.subscribe(1, &[("r", QoS::AtLeastOnce)]).await;
        let retained = drain(&mut later).await;
        assert_eq!(retained.len(), 1, "{retained:?}");
        assert_eq!(&retained[0].payload[..], b"two");
        assert!(retained[0].retain);
        acknowledge(&mut later, &retained[0]).await;
        // An empty retained payload: forwarded to the live subscriber,
        // then nothing is retained any more.
        publisher.publish("r", b"", QoS::AtLeastOnce, true, 4).await;
        let cleared = live.recv_publish().await;
        assert!(cleared.payload.is_empty());
        acknowledge(&mut live, &cleared).await;
        let mut last = RawClient::connect_v5(broker.addr, "last").await;
        last.subscribe(1, &[("r", QoS::AtLeastOnce)]).await;
        assert!(last.ping_barrier().await.is_empty());
        // An empty retained payload on a topic with nothing retained is
        // not stored either.
        publisher.publish("e", b"", QoS::AtMostOnce, true, 0).await;
        last.subscribe(2, &[("e", QoS::AtLeastOnce)]).await;
        assert!(last.ping_barrier().await.is_empty());
    })
    .await;
}

// ---------------------------------------------------------------------------
// 3.3 PUBLISH: topic name and properties.

// [MQTT-3.3.2-1] [MQTT-3.3.2-2] [MQTT-4.7.0-1] (v5.0): a Topic Name that
// is not UTF-8 is malformed (0x81); one holding + or # is refused with
// 0x90 Topic Name invalid.
// [MQTT-4.7.3-2] (v5.0): so is one holding U+0000 (0x81).
#[tokio::test]
async fn topic_name_must_be_utf8_without_wildcards_or_null() {
    timed(async {
        let broker = TestBroker::start().await;
        for (topic_name, reason_code) in [
            (&b"a/\xC3\x28"[..], ReasonCode::MalformedPacket),
            (b"a/\x00", ReasonCode::MalformedPacket),
            (b"a/+", ReasonCode::TopicNameInvalid),
            (b"a/#", ReasonCode::TopicNameInvalid),
        ] {
            refused(
                broker.addr,
                &raw_publish(0x30, topic_name, None, &[], b"x"),
                reason_code,
            )
            .await;
        }
    })
    .await;
}

// [MQTT-3.3.2-3] (v5.0): a subscriber gets exactly the messages whose
// Topic Name its filter matches, under the Topic Name they were published
// with.
#[tokio::test]
async fn delivered_topic_names_match_the_filter() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut subscriber = RawClient::connect_v5(broker.addr, "sub").await;
        subscriber.subscribe(1, &[("a/+/c", QoS::AtMostOnce)]).await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        for topic_name in ["a/b/c", "a/b/d", "a/b/c/d", "a/x/c", "b/b/c"] {
            publisher
                .publish(topic_name, b"x", QoS::AtMostOnce, false, 0)
                .await;
        }
        publisher.ping_barrier().await;
        let topics: Vec<String> = drain(&mut subscriber)
            .await
            .iter()
            .map(|publish| publish.topic.as_str().to_owned())
            .collect();
        assert_eq!(topics, ["a/b/c", "a/x/c"]);
    })
    .await;
}

// [MQTT-3.3.2-7] (v5.0): Topic Alias mappings end with the connection.
// An alias the client set is unknown on its next connection (Protocol
// Error), though the session is the same; the broker's own aliases start
// again: the first message on the new connection names its topic.
#[tokio::test]
async fn topic_aliases_do_not_outlive_the_connection() {
    timed(async {
        let broker = TestBroker::start().await;
        let (mut client, _) = connect_expiring(broker.addr, "aliaser", true, 60).await;
        client
            .send(&publish_with(
                "t/1",
                b"1",
                QoS::AtMostOnce,
                None,
                aliased(1),
            ))
            .await;
        client.send(&by_alias(1, b"2")).await;
        assert!(client.ping_barrier().await.is_empty());
        client.disconnect().await;
        let (mut client, connack) = connect_expiring(broker.addr, "aliaser", false, 60).await;
        assert!(connack.session_present);
        client.send(&by_alias(1, b"3")).await;
        client.expect_disconnect(ReasonCode::ProtocolError).await;

        let connect = petrel::protocol::Connect {
            properties: ConnectProperties {
                session_expiry_interval: Some(60),
                topic_alias_maximum: Some(4),
                ..ConnectProperties::default()
            },
            ..connect_v5("receiver", true, 0)
        };
        let (mut receiver, _) = RawClient::connect_with(broker.addr, connect.clone()).await;
        receiver.subscribe(1, &[("t/#", QoS::AtMostOnce)]).await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        for _ in 0..2 {
            publisher
                .publish("t/2", b"x", QoS::AtMostOnce, false, 0)
                .await;
        }
        let first = receiver.recv_publish().await;
        assert_eq!(first.topic.as_str(), "t/2");
        let alias = first.properties.topic_alias.expect("an alias is assigned");
        let second = receiver.recv_publish().await;
        assert!(second.topic.is_empty());
        assert_eq!(second.properties.topic_alias, Some(alias));
        receiver.disconnect().await;
        let (mut receiver, connack) = RawClient::connect_with(
            broker.addr,
            petrel::protocol::Connect {
                clean_start: false,
                ..connect
            },
        )
        .await;
        assert!(connack.session_present);
        publisher
            .publish("t/2", b"x", QoS::AtMostOnce, false, 0)
            .await;
        let again = receiver.recv_publish().await;
        assert_eq!(again.topic.as_str(), "t/2");
    })
    .await;
}

// [MQTT-3.3.2-8] [MQTT-PE-3.3.2.3.4-1] (v5.0): a Topic Alias of 0 from
// the client is refused with DISCONNECT; the aliases the broker sends are
// never 0 and never above the client's Topic Alias Maximum.
#[tokio::test]
async fn topic_alias_0_is_never_used() {
    timed(async {
        let broker = TestBroker::start().await;
        refused(
            broker.addr,
            &raw_publish(0x30, b"t", None, &[0x23, 0x00, 0x00], b"x"),
            ReasonCode::ProtocolError,
        )
        .await;
        let properties = ConnectProperties {
            topic_alias_maximum: Some(2),
            ..ConnectProperties::default()
        };
        let (mut receiver, _) = RawClient::connect_v5_with(broker.addr, "rx", properties).await;
        receiver.subscribe(1, &[("t/#", QoS::AtMostOnce)]).await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        for topic_name in ["t/1", "t/2", "t/3", "t/1", "t/2"] {
            publisher
                .publish(topic_name, b"x", QoS::AtMostOnce, false, 0)
                .await;
        }
        for _ in 0..5 {
            let publish = receiver.recv_publish().await;
            if let Some(alias) = publish.properties.topic_alias {
                assert!((1..=2).contains(&alias.get()), "{alias}");
            }
        }
    })
    .await;
}

// [MQTT-3.3.2-12] (v5.0): every Topic Alias from 1 up to the Topic Alias
// Maximum in CONNACK is accepted, set with a topic and then used alone.
#[tokio::test]
async fn every_alias_up_to_the_maximum_is_accepted() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut subscriber = RawClient::connect_v5(broker.addr, "sub").await;
        subscriber.subscribe(1, &[("t/#", QoS::AtMostOnce)]).await;
        let (mut publisher, connack) =
            RawClient::connect_v5_with(broker.addr, "pub", ConnectProperties::default()).await;
        let maximum = connack
            .properties
            .topic_alias_maximum
            .expect("the broker announces its Topic Alias Maximum");
        assert!(maximum >= 2);
        for alias in [1, maximum / 2, maximum] {
            let topic_name = format!("t/{alias}");
            publisher
                .send(&publish_with(
                    &topic_name,
                    b"set",
                    QoS::AtMostOnce,
                    None,
                    aliased(alias),
                ))
                .await;
            publisher.send(&by_alias(alias, b"use")).await;
            for payload in [&b"set"[..], b"use"] {
                let publish = subscriber.recv_publish().await;
                assert_eq!(publish.topic.as_str(), topic_name);
                assert_eq!(&publish.payload[..], payload);
            }
        }
    })
    .await;
}

// [MQTT-3.3.2-13] [MQTT-3.3.2-14] [MQTT-3.3.2-19] (v5.0): a Response Topic
// or Content Type that is not UTF-8 is malformed (0x81); a Response Topic
// with a wildcard is a Protocol Error (0x82).
#[tokio::test]
async fn response_topic_and_content_type_are_checked() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut bad_response = vec![0x08];
        bad_response.extend(field(b"r/\xFF"));
        let mut wild_response = vec![0x08];
        wild_response.extend(field(b"r/#"));
        let mut bad_content_type = vec![0x03];
        bad_content_type.extend(field(b"text/\xC3\x28"));
        for (properties, reason_code) in [
            (bad_response, ReasonCode::MalformedPacket),
            (wild_response, ReasonCode::ProtocolError),
            (bad_content_type, ReasonCode::MalformedPacket),
        ] {
            refused(
                broker.addr,
                &raw_publish(0x30, b"t", None, &properties, b"x"),
                reason_code,
            )
            .await;
        }
    })
    .await;
}

/// One property, given twice.
fn twice(property: &[u8]) -> Vec<u8> {
    [property, property].concat()
}

// Protocol Errors of 3.3.2.3 (v5.0): a PUBLISH property that may appear
// once, given twice, gets DISCONNECT 0x82: Payload Format Indicator
// [MQTT-PE-3.3.2.3.2-1], Message Expiry Interval [MQTT-PE-3.3.2.3.3-1],
// Topic Alias [MQTT-PE-3.3.2.3.4-4], Response Topic [MQTT-PE-3.3.2.3.5-1],
// Correlation Data [MQTT-PE-3.3.2.3.6-1], Content Type
// [MQTT-PE-3.3.2.3.9-1]. A Subscription Identifier of 0 is one too
// [MQTT-PE-3.3.2.3.8-1].
#[tokio::test]
async fn publish_properties_given_twice_are_protocol_errors() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut response_topic = vec![0x08];
        response_topic.extend(field(b"r"));
        let mut correlation = vec![0x09];
        correlation.extend(field(b"c"));
        let mut content_type = vec![0x03];
        content_type.extend(field(b"text/plain"));
        for properties in [
            twice(&[0x01, 0x00]),
            twice(&[0x02, 0, 0, 0, 9]),
            twice(&[0x23, 0x00, 0x01]),
            twice(&response_topic),
            twice(&correlation),
            twice(&content_type),
            vec![0x0B, 0x00],
        ] {
            refused(
                broker.addr,
                &raw_publish(0x30, b"t", None, &properties, b"x"),
                ReasonCode::ProtocolError,
            )
            .await;
        }
    })
    .await;
}

// [MQTT-PE-3.3.2.1-1] [MQTT-4.7.3-1] (v5.0): a zero-length Topic Name
// without a Topic Alias is a Protocol Error (DISCONNECT 0x82).
#[tokio::test]
async fn empty_topic_without_an_alias_is_a_protocol_error() {
    timed(async {
        let broker = TestBroker::start().await;
        refused(
            broker.addr,
            &raw_publish(0x30, b"", None, &[], b"x"),
            ReasonCode::ProtocolError,
        )
        .await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// 3.3.4 PUBLISH actions.

// [MQTT-3.3.4-1] [MQTT-4.3.2-4] [MQTT-4.3.3-8] [MQTT-4.3.3-11] (v5.0): QoS
// 0 is answered with nothing, QoS 1 with PUBACK, QoS 2 with PUBREC, and
// PUBREL with PUBCOMP, each with the packet identifier it answers.
#[tokio::test]
async fn publish_is_answered_as_its_qos_requires() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut client = RawClient::connect_v5(broker.addr, "pub").await;
        client
            .send(&publish_packet("t", b"0", QoS::AtMostOnce, false, None))
            .await;
        assert!(client.ping_barrier().await.is_empty());
        client
            .send(&publish_packet("t", b"1", QoS::AtLeastOnce, false, Some(5)))
            .await;
        match client.recv().await {
            Packet::PubAck(ack) => assert_eq!(ack.packet_id, id(5)),
            other => panic!("expected PUBACK, got {other:?}"),
        }
        client
            .send(&publish_packet("t", b"2", QoS::ExactlyOnce, false, Some(6)))
            .await;
        match client.recv().await {
            Packet::PubRec(ack) => assert_eq!(ack.packet_id, id(6)),
            other => panic!("expected PUBREC, got {other:?}"),
        }
        client.send(&Packet::PubRel(Ack::new(id(6)))).await;
        match client.recv().await {
            Packet::PubComp(ack) => assert_eq!(ack.packet_id, id(6)),
            other => panic!("expected PUBCOMP, got {other:?}"),
        }
        assert!(client.ping_barrier().await.is_empty());
    })
    .await;
}

// [MQTT-3.3.4-5] (v5.0): when one client's subscriptions give it more
// than one copy (an ordinary and a shared subscription to one topic), each
// copy carries the Subscription Identifier of its own subscription.
#[tokio::test]
async fn each_copy_carries_its_own_subscription_identifier() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut client = RawClient::connect_v5(broker.addr, "both").await;
        client
            .subscribe_with(1, &[("t", options(QoS::AtMostOnce))], Some(1))
            .await;
        client
            .subscribe_with(2, &[("$share/g/t", options(QoS::AtMostOnce))], Some(2))
            .await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        publisher
            .publish("t", b"x", QoS::AtMostOnce, false, 0)
            .await;
        publisher.ping_barrier().await;
        let mut identifiers: Vec<Vec<u32>> = drain(&mut client)
            .await
            .iter()
            .map(|publish| {
                publish
                    .properties
                    .subscription_identifiers
                    .iter()
                    .map(|identifier| identifier.get())
                    .collect()
            })
            .collect();
        identifiers.sort();
        assert_eq!(identifiers, vec![vec![1], vec![2]]);
    })
    .await;
}

// ---------------------------------------------------------------------------
// 3.4 to 3.7 acknowledgements.

// [MQTT-3.4.2-1] [MQTT-3.5.2-1] [MQTT-3.6.2-1] [MQTT-3.7.2-1] (v5.0): the
// broker's PUBACK, PUBREC, PUBREL and PUBCOMP use defined reason codes
// (0x99, 0x92 here; the strict decoder refuses any other).
// [MQTT-3.4.2-2] [MQTT-3.4.2-3] [MQTT-3.5.2-2] [MQTT-3.5.2-3]
// [MQTT-3.6.2-2] [MQTT-3.6.2-3] [MQTT-3.7.2-2] [MQTT-3.7.2-3] (v5.0): a
// client whose Maximum Packet Size the Reason String would exceed gets
// the acknowledgement without Reason String or User Properties; a client
// without that limit gets the Reason String.
#[tokio::test]
async fn acknowledgements_drop_diagnostics_over_the_maximum_packet_size() {
    timed(async {
        let broker = TestBroker::start().await;
        let bad_utf8 = PublishProperties {
            payload_format_indicator: Some(true),
            ..PublishProperties::default()
        };
        for limit in [None, NonZeroU32::new(30)] {
            let properties = ConnectProperties {
                maximum_packet_size: limit,
                ..ConnectProperties::default()
            };
            let (mut client, _) =
                RawClient::connect_v5_with(broker.addr, "limited", properties).await;
            let check = |ack: &Ack, reason_code: ReasonCode| {
                assert_eq!(ack.reason_code, reason_code);
                assert!(ack.properties.user_properties.is_empty());
                assert_eq!(
                    ack.properties.reason_string.is_some(),
                    limit.is_none(),
                    "{ack:?}"
                );
            };
            for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
                client
                    .send(&publish_with(
                        "t",
                        b"\xFF\xFE",
                        qos,
                        Some(1),
                        bad_utf8.clone(),
                    ))
                    .await;
                match client.recv().await {
                    Packet::PubAck(ack) | Packet::PubRec(ack) => {
                        check(&ack, ReasonCode::PayloadFormatInvalid)
                    }
                    other => panic!("expected PUBACK or PUBREC, got {other:?}"),
                }
            }
            client.send(&Packet::PubRec(Ack::new(id(9)))).await;
            match client.recv().await {
                Packet::PubRel(ack) => check(&ack, ReasonCode::PacketIdentifierNotFound),
                other => panic!("expected PUBREL, got {other:?}"),
            }
            client.send(&Packet::PubRel(Ack::new(id(9)))).await;
            match client.recv().await {
                Packet::PubComp(ack) => check(&ack, ReasonCode::PacketIdentifierNotFound),
                other => panic!("expected PUBCOMP, got {other:?}"),
            }
        }
    })
    .await;
}

// Protocol Errors of 3.4 to 3.7 (v5.0): a Reason String given twice in
// PUBACK [MQTT-PE-3.4.2.2.2-1], PUBREC [MQTT-PE-3.5.2.2.2-1], PUBREL
// [MQTT-PE-3.6.2.2.2-1] or PUBCOMP [MQTT-PE-3.7.2.2.2-1] from the client
// gets DISCONNECT 0x82.
#[tokio::test]
async fn reason_string_given_twice_in_an_acknowledgement_is_a_protocol_error() {
    timed(async {
        let broker = TestBroker::start().await;
        let doubled = twice(&reason_string("why"));
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        // PUBACK and PUBREC: as a subscriber answering a delivery.
        for (qos, first) in [(QoS::AtLeastOnce, 0x40), (QoS::ExactlyOnce, 0x50)] {
            let mut subscriber = RawClient::connect_v5(broker.addr, "sub").await;
            subscriber.subscribe(1, &[("t", qos)]).await;
            publisher.publish("t", b"x", qos, false, 1).await;
            let publish = subscriber.recv_publish().await;
            subscriber
                .send_bytes(&raw_ack(first, packet_id_of(&publish).get(), &doubled))
                .await;
            subscriber
                .expect_disconnect(ReasonCode::ProtocolError)
                .await;
        }
        // PUBREL: as a QoS 2 publisher.
        let mut client = RawClient::connect_v5(broker.addr, "rel").await;
        client
            .send(&publish_packet("t", b"x", QoS::ExactlyOnce, false, Some(3)))
            .await;
        assert!(matches!(client.recv().await, Packet::PubRec(_)));
        client.send_bytes(&raw_ack(0x62, 3, &doubled)).await;
        client.expect_disconnect(ReasonCode::ProtocolError).await;
        // PUBCOMP: as a QoS 2 subscriber answering PUBREL.
        let mut subscriber = RawClient::connect_v5(broker.addr, "comp").await;
        subscriber.subscribe(1, &[("t", QoS::ExactlyOnce)]).await;
        publisher
            .publish("t", b"x", QoS::ExactlyOnce, false, 2)
            .await;
        let publish = subscriber.recv_publish().await;
        subscriber
            .send(&Packet::PubRec(Ack::new(packet_id_of(&publish))))
            .await;
        assert!(matches!(subscriber.recv().await, Packet::PubRel(_)));
        subscriber
            .send_bytes(&raw_ack(0x70, packet_id_of(&publish).get(), &doubled))
            .await;
        subscriber
            .expect_disconnect(ReasonCode::ProtocolError)
            .await;
    })
    .await;
}

// [MQTT-3.6.1-1] [MQTT-3.8.1-1] [MQTT-3.10.1-1] (v5.0): PUBREL, SUBSCRIBE
// and UNSUBSCRIBE with fixed-header flags other than 0010 are malformed:
// DISCONNECT 0x81 and the connection closed.
#[tokio::test]
async fn reserved_flags_of_pubrel_subscribe_unsubscribe_are_checked() {
    timed(async {
        let broker = TestBroker::start().await;
        for bytes in [
            raw_ack(0x60, 1, &[]),
            raw_ack(0x63, 1, &[]),
            raw_subscribe(0x80, &[], &[(b"t", 0)]),
            raw_subscribe(0x83, &[], &[(b"t", 0)]),
            raw_unsubscribe(0xA0, &[b"t"]),
            raw_unsubscribe(0xA6, &[b"t"]),
        ] {
            refused(broker.addr, &bytes, ReasonCode::MalformedPacket).await;
        }
    })
    .await;
}

// ---------------------------------------------------------------------------
// 3.8 and 3.9 SUBSCRIBE and SUBACK.

// [MQTT-3.8.3-1] [MQTT-3.8.3-2] [MQTT-3.8.3-5] [MQTT-4.7.3-2] (v5.0): a
// Topic Filter that is not UTF-8 or holds U+0000 is malformed (0x81), a
// SUBSCRIBE with no filter is a Protocol Error (0x82), reserved option
// bits 6-7 are malformed (0x81).
// [MQTT-PE-3.8.3.1-1] (v5.0): Retain Handling 3 is a Protocol Error (0x82).
// [MQTT-PE-3.8.2.1.2-1] [MQTT-PE-3.8.2.1.2-2] (v5.0): so are a
// Subscription Identifier of 0 and one given twice.
#[tokio::test]
async fn subscribe_packets_are_checked() {
    timed(async {
        let broker = TestBroker::start().await;
        for (bytes, reason_code) in [
            (
                raw_subscribe(0x82, &[], &[(b"a/\xC3\x28", 0)]),
                ReasonCode::MalformedPacket,
            ),
            (
                raw_subscribe(0x82, &[], &[(b"a/\x00", 0)]),
                ReasonCode::MalformedPacket,
            ),
            (raw_subscribe(0x82, &[], &[]), ReasonCode::ProtocolError),
            (
                raw_subscribe(0x82, &[], &[(b"t", 0x40)]),
                ReasonCode::MalformedPacket,
            ),
            (
                raw_subscribe(0x82, &[], &[(b"t", 0x81)]),
                ReasonCode::MalformedPacket,
            ),
            (
                raw_subscribe(0x82, &[], &[(b"t", 0x30)]),
                ReasonCode::ProtocolError,
            ),
            (
                raw_subscribe(0x82, &[0x0B, 0x00], &[(b"t", 0)]),
                ReasonCode::ProtocolError,
            ),
            (
                raw_subscribe(0x82, &[0x0B, 0x01, 0x0B, 0x02], &[(b"t", 0)]),
                ReasonCode::ProtocolError,
            ),
        ] {
            refused(broker.addr, &bytes, reason_code).await;
        }
    })
    .await;
}

// [MQTT-4.7.1-1] [MQTT-4.7.1-2] [MQTT-4.7.3-1] (v5.0): a filter with '#'
// not alone or not last, '+' not a whole level, or no character at all
// is refused: SUBACK 0x8F Topic Filter invalid, the other filters of the
// SUBSCRIBE still granted.
#[tokio::test]
async fn invalid_wildcards_and_empty_filters_are_refused() {
    timed(async {
        let broker = TestBroker::start().await;
        for bad in [&b"a/#/b"[..], b"a#", b"a/b#", b"a+", b"a/+b/c", b""] {
            let mut client = RawClient::connect_v5(broker.addr, "filters").await;
            client
                .send_bytes(&raw_subscribe(0x82, &[], &[(b"ok", 1), (bad, 1)]))
                .await;
            match client.recv().await {
                Packet::SubAck(suback) => assert_eq!(
                    suback.reason_codes,
                    vec![ReasonCode::GrantedQoS1, ReasonCode::TopicFilterInvalid]
                ),
                Packet::Disconnect(disconnect) => {
                    assert_eq!(disconnect.reason_code, ReasonCode::TopicFilterInvalid)
                }
                other => panic!("expected SUBACK, got {other:?}"),
            }
        }
    })
    .await;
}

// [MQTT-3.8.4-1] [MQTT-3.8.4-2] [MQTT-3.8.4-5] [MQTT-3.8.4-7] (v5.0):
// every SUBSCRIBE gets one SUBACK with its packet identifier; several
// filters are handled one by one and answered together; each code is the
// QoS granted (at most the broker's maximum) or a failure.
#[tokio::test]
async fn every_subscribe_gets_a_suback_with_its_packet_id() {
    timed(async {
        let broker = TestBroker::with_config(petrel::Config {
            max_qos: 1,
            ..test_config()
        })
        .await;
        let mut client = RawClient::connect_v5(broker.addr, "sub").await;
        for packet_id in [1, 42, 65535] {
            client
                .send(&subscribe_packet(
                    packet_id,
                    &[
                        ("a", QoS::AtMostOnce),
                        ("b", QoS::ExactlyOnce),
                        ("c", QoS::AtLeastOnce),
                        ("$share/g", QoS::AtLeastOnce),
                    ],
                ))
                .await;
            match client.recv().await {
                Packet::SubAck(suback) => {
                    assert_eq!(suback.packet_id, id(packet_id));
                    assert_eq!(
                        suback.reason_codes,
                        vec![
                            ReasonCode::Success,
                            ReasonCode::GrantedQoS1,
                            ReasonCode::GrantedQoS1,
                            ReasonCode::TopicFilterInvalid,
                        ]
                    );
                }
                other => panic!("expected SUBACK, got {other:?}"),
            }
            assert!(client.ping_barrier().await.is_empty(), "one SUBACK only");
        }
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        for topic_name in ["a", "b", "c"] {
            publisher
                .publish(topic_name, b"x", QoS::AtLeastOnce, false, 1)
                .await;
        }
        let mut got = Vec::new();
        for _ in 0..3 {
            let publish = client.recv_publish().await;
            acknowledge(&mut client, &publish).await;
            got.push((publish.topic.as_str().to_owned(), publish.qos));
        }
        assert_eq!(
            got,
            vec![
                ("a".to_owned(), QoS::AtMostOnce),
                ("b".to_owned(), QoS::AtLeastOnce),
                ("c".to_owned(), QoS::AtLeastOnce),
            ]
        );
    })
    .await;
}

// [MQTT-3.8.4-3] (v5.0): subscribing again to the same filter replaces the
// subscription with the new options: one copy at the new QoS, and No
// Local now applies.
#[tokio::test]
async fn resubscribing_replaces_the_subscription() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut client = RawClient::connect_v5(broker.addr, "sub").await;
        client.subscribe(1, &[("t", QoS::AtMostOnce)]).await;
        client.subscribe(2, &[("t", QoS::ExactlyOnce)]).await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        publisher
            .publish("t", b"x", QoS::ExactlyOnce, false, 1)
            .await;
        let publish = client.recv_publish().await;
        assert_eq!(publish.qos, QoS::ExactlyOnce);
        acknowledge(&mut client, &publish).await;
        assert!(client.ping_barrier().await.is_empty(), "one copy only");
        let no_local = SubscriptionOptions {
            no_local: true,
            ..options(QoS::AtMostOnce)
        };
        client.subscribe_with(3, &[("t", no_local)], None).await;
        client.publish("t", b"own", QoS::AtMostOnce, false, 0).await;
        assert!(client.ping_barrier().await.is_empty(), "No Local applies");
    })
    .await;
}

// [MQTT-3.8.4-4] (v5.0): replacing a subscription loses no message:
// deliveries queued behind a full Receive Maximum window still arrive, in
// order, after the SUBSCRIBE that replaces it.
#[tokio::test]
async fn replacing_a_subscription_loses_no_messages() {
    timed(async {
        let broker = TestBroker::start().await;
        let properties = ConnectProperties {
            receive_maximum: NonZeroU16::new(1),
            ..ConnectProperties::default()
        };
        let (mut client, _) = RawClient::connect_v5_with(broker.addr, "sub", properties).await;
        client.subscribe(1, &[("q", QoS::AtLeastOnce)]).await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        for index in 1..=3u8 {
            publisher
                .publish("q", &[index], QoS::AtLeastOnce, false, u16::from(index))
                .await;
        }
        let first = client.recv_publish().await;
        client.subscribe(2, &[("q", QoS::AtLeastOnce)]).await;
        let mut payloads = vec![first.payload.clone()];
        acknowledge(&mut client, &first).await;
        for _ in 0..2 {
            let publish = client.recv_publish().await;
            acknowledge(&mut client, &publish).await;
            payloads.push(publish.payload);
        }
        assert_eq!(payloads, [&[1u8][..], &[2], &[3]]);
        assert!(client.ping_barrier().await.is_empty());
    })
    .await;
}

// [MQTT-3.8.4-8] (v5.0): a message is delivered at the lower of its
// published QoS and the QoS granted to the subscription.
#[tokio::test]
async fn delivered_qos_is_the_lower_of_published_and_granted() {
    timed(async {
        let broker = TestBroker::start().await;
        let levels = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];
        let mut subscribers = Vec::new();
        for granted in levels {
            let mut client = RawClient::connect_v5(broker.addr, &format!("sub{granted:?}")).await;
            client.subscribe(1, &[("t", granted)]).await;
            subscribers.push((granted, client));
        }
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        for (index, published) in levels.into_iter().enumerate() {
            publisher
                .publish("t", b"x", published, false, index as u16 + 1)
                .await;
            for (granted, client) in &mut subscribers {
                let publish = client.recv_publish().await;
                assert_eq!(publish.qos, published.min(*granted));
                acknowledge(client, &publish).await;
            }
        }
    })
    .await;
}

// [MQTT-3.9.2-1] [MQTT-3.9.2-2] [MQTT-3.11.2-1] [MQTT-3.11.2-2] (v5.0):
// under a small Maximum Packet Size, SUBACK and UNSUBACK, failure codes
// included, come without Reason String or User Properties.
// [MQTT-PE-3.9.2.1.2-1] [MQTT-PE-3.11.2.1.2-1] (v5.0): so they never carry
// a Reason String twice (the strict decoder would refuse it).
#[tokio::test]
async fn suback_and_unsuback_fit_the_clients_maximum_packet_size() {
    timed(async {
        let broker = TestBroker::start().await;
        let properties = ConnectProperties {
            maximum_packet_size: NonZeroU32::new(64),
            ..ConnectProperties::default()
        };
        let (mut client, _) = RawClient::connect_v5_with(broker.addr, "small", properties).await;
        client
            .send(&subscribe_packet(
                1,
                &[("ok", QoS::AtMostOnce), ("$share/g", QoS::AtMostOnce)],
            ))
            .await;
        match client.recv().await {
            Packet::SubAck(suback) => {
                assert_eq!(
                    suback.reason_codes,
                    vec![ReasonCode::Success, ReasonCode::TopicFilterInvalid]
                );
                assert_eq!(suback.properties, Default::default());
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
        client.send(&unsubscribe_packet(2, &["ok", "never"])).await;
        match client.recv().await {
            Packet::UnsubAck(unsuback) => {
                assert_eq!(
                    unsuback.reason_codes,
                    vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted]
                );
                assert_eq!(unsuback.properties, Default::default());
            }
            other => panic!("expected UNSUBACK, got {other:?}"),
        }
    })
    .await;
}

// ---------------------------------------------------------------------------
// 3.10 and 3.11 UNSUBSCRIBE and UNSUBACK.

// [MQTT-3.10.3-1] [MQTT-3.10.3-2] (v5.0): an UNSUBSCRIBE filter that is not
// UTF-8 is malformed (0x81); an UNSUBSCRIBE with no filter is a Protocol
// Error (0x82).
#[tokio::test]
async fn unsubscribe_packets_are_checked() {
    timed(async {
        let broker = TestBroker::start().await;
        refused(
            broker.addr,
            &raw_unsubscribe(0xA2, &[b"ok", b"a/\xC3\x28"]),
            ReasonCode::MalformedPacket,
        )
        .await;
        refused(
            broker.addr,
            &raw_unsubscribe(0xA2, &[]),
            ReasonCode::ProtocolError,
        )
        .await;
    })
    .await;
}

// [MQTT-3.10.4-1] [MQTT-3.10.4-2] [MQTT-3.10.4-4] [MQTT-3.10.4-5]
// [MQTT-3.10.4-6] (v5.0): UNSUBSCRIBE removes only filters equal character
// for character (no wildcard matching), stops their delivery, and is
// answered by one UNSUBACK with its packet identifier and one code per
// filter, also when nothing was removed.
#[tokio::test]
async fn unsubscribe_removes_exact_filters_and_is_always_answered() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut client = RawClient::connect_v5(broker.addr, "sub").await;
        client
            .subscribe(1, &[("a/+", QoS::AtMostOnce), ("b", QoS::AtMostOnce)])
            .await;
        client
            .send(&unsubscribe_packet(77, &["a/x", "b", "never"]))
            .await;
        match client.recv().await {
            Packet::UnsubAck(unsuback) => {
                assert_eq!(unsuback.packet_id, id(77));
                assert_eq!(
                    unsuback.reason_codes,
                    vec![
                        ReasonCode::NoSubscriptionExisted,
                        ReasonCode::Success,
                        ReasonCode::NoSubscriptionExisted
                    ]
                );
            }
            other => panic!("expected UNSUBACK, got {other:?}"),
        }
        assert!(client.ping_barrier().await.is_empty(), "one UNSUBACK only");
        client.send(&unsubscribe_packet(78, &["nothing"])).await;
        match client.recv().await {
            Packet::UnsubAck(unsuback) => {
                assert_eq!(unsuback.packet_id, id(78));
                assert_eq!(
                    unsuback.reason_codes,
                    vec![ReasonCode::NoSubscriptionExisted]
                );
            }
            other => panic!("expected UNSUBACK, got {other:?}"),
        }
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        publisher
            .publish("b", b"gone", QoS::AtMostOnce, false, 0)
            .await;
        publisher
            .publish("a/x", b"kept", QoS::AtMostOnce, false, 0)
            .await;
        let publish = client.recv_publish().await;
        assert_eq!(&publish.payload[..], b"kept");
        assert!(client.ping_barrier().await.is_empty());
    })
    .await;
}

// [MQTT-3.10.4-3] (v5.0): QoS 1 and QoS 2 deliveries started before an
// UNSUBSCRIBE are completed after it.
#[tokio::test]
async fn deliveries_started_before_unsubscribe_complete() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut client = RawClient::connect_v5(broker.addr, "sub").await;
        client.subscribe(1, &[("t", QoS::ExactlyOnce)]).await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        publisher
            .publish("t", b"1", QoS::AtLeastOnce, false, 1)
            .await;
        publisher
            .publish("t", b"2", QoS::ExactlyOnce, false, 2)
            .await;
        let first = client.recv_publish().await;
        let second = client.recv_publish().await;
        client.send(&unsubscribe_packet(3, &["t"])).await;
        assert!(matches!(client.recv().await, Packet::UnsubAck(_)));
        client
            .send(&Packet::PubAck(Ack::new(packet_id_of(&first))))
            .await;
        client
            .send(&Packet::PubRec(Ack::new(packet_id_of(&second))))
            .await;
        match client.recv().await {
            Packet::PubRel(ack) => {
                assert_eq!(ack.packet_id, packet_id_of(&second));
                assert_eq!(ack.reason_code, ReasonCode::Success);
            }
            other => panic!("expected PUBREL, got {other:?}"),
        }
        client
            .send(&Packet::PubComp(Ack::new(packet_id_of(&second))))
            .await;
        publisher
            .publish("t", b"3", QoS::AtLeastOnce, false, 3)
            .await;
        assert!(client.ping_barrier().await.is_empty());
    })
    .await;
}

// ---------------------------------------------------------------------------
// 4.1 session state, 4.2 transport.

// [MQTT-4.1.0-1] (v5.0): while the connection is open the session is kept,
// even past its Session Expiry Interval: the subscription still delivers.
#[tokio::test]
async fn session_state_is_kept_while_connected() {
    timed(async {
        let broker = TestBroker::start().await;
        let (mut client, _) = connect_expiring(broker.addr, "kept", true, 1).await;
        client.subscribe(1, &[("t", QoS::AtLeastOnce)]).await;
        // The behaviour under test is time passing: outlast the interval.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        publisher
            .publish("t", b"x", QoS::AtLeastOnce, false, 1)
            .await;
        let publish = client.recv_publish().await;
        assert_eq!(&publish.payload[..], b"x");
    })
    .await;
}

// [MQTT-4.1.0-2] (v5.0): once the connection is closed and the Session
// Expiry Interval has passed, the session is gone: no session present, no
// subscription, nothing queued.
#[tokio::test]
async fn session_state_is_discarded_after_the_expiry_interval() {
    timed(async {
        let broker = TestBroker::start().await;
        let (mut client, _) = connect_expiring(broker.addr, "brief", true, 1).await;
        client.subscribe(1, &[("t", QoS::AtLeastOnce)]).await;
        client.disconnect().await;
        let metrics = broker.broker.metrics();
        eventually("the session to expire", || {
            metrics.sessions_expired.get() == 1
        })
        .await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        publisher
            .publish("t", b"x", QoS::AtLeastOnce, false, 1)
            .await;
        let (mut client, connack) = connect_expiring(broker.addr, "brief", false, 1).await;
        assert!(!connack.session_present);
        publisher
            .publish("t", b"y", QoS::AtLeastOnce, false, 2)
            .await;
        assert!(client.ping_barrier().await.is_empty());
    })
    .await;
}

// [MQTT-4.2.0-1] (v5.0): the broker serves MQTT over TCP, an ordered,
// lossless stream: [MQTT-4.6.0-5] [MQTT-4.6.0-6] (v5.0) messages from one
// publisher on one topic reach each subscriber in order, at every QoS.
#[tokio::test]
async fn messages_from_one_publisher_arrive_in_order() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut exact = RawClient::connect_v5(broker.addr, "exact").await;
        exact.subscribe(1, &[("o/t", QoS::ExactlyOnce)]).await;
        let mut wild = RawClient::connect_v5(broker.addr, "wild").await;
        wild.subscribe(1, &[("o/#", QoS::ExactlyOnce)]).await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            for index in 0..20u8 {
                publisher
                    .publish("o/t", &[index], qos, false, u16::from(index) + 1)
                    .await;
            }
            for client in [&mut exact, &mut wild] {
                let mut received = Vec::new();
                for index in 0..20u8 {
                    let publish = client.recv_publish().await;
                    assert_eq!((&publish.payload[..], publish.qos), (&[index][..], qos));
                    received.push(publish);
                }
                for publish in &received {
                    acknowledge(client, publish).await;
                }
            }
        }
    })
    .await;
}

// ---------------------------------------------------------------------------
// 4.3 QoS flows, 4.4 retries.

// [MQTT-4.3.2-1] [MQTT-4.3.2-2] [MQTT-4.3.3-1] [MQTT-4.3.3-2]
// [MQTT-4.3.3-4] (v5.0): the broker's QoS 1 and 2 deliveries in flight
// together each take an unused packet identifier, go out with their QoS
// and DUP 0, and a PUBREC below 0x80 is followed by PUBREL with the same
// identifier.
#[tokio::test]
async fn broker_deliveries_take_fresh_identifiers() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut client = RawClient::connect_v5(broker.addr, "sub").await;
        client.subscribe(1, &[("t", QoS::ExactlyOnce)]).await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        let levels = [
            QoS::AtLeastOnce,
            QoS::ExactlyOnce,
            QoS::AtLeastOnce,
            QoS::ExactlyOnce,
        ];
        for (index, qos) in levels.into_iter().enumerate() {
            publisher
                .publish("t", b"x", qos, false, index as u16 + 1)
                .await;
        }
        let mut received = Vec::new();
        for qos in levels {
            let publish = client.recv_publish().await;
            assert_eq!((publish.qos, publish.dup), (qos, false));
            received.push(publish);
        }
        let mut ids: Vec<u16> = received.iter().map(|p| packet_id_of(p).get()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 4, "identifiers in use at once are distinct");
        for publish in &received {
            acknowledge(&mut client, publish).await;
        }
        // All free again: more deliveries still take distinct identifiers.
        for index in 0..2 {
            publisher
                .publish("t", b"y", QoS::ExactlyOnce, false, 10 + index)
                .await;
        }
        let first = client.recv_publish().await;
        let second = client.recv_publish().await;
        assert_ne!(first.packet_id, second.packet_id);
    })
    .await;
}

// [MQTT-3.3.1-1] [MQTT-4.4.0-1] [MQTT-4.3.2-3] [MQTT-4.3.3-3]
// [MQTT-4.3.3-5] [MQTT-4.3.3-6] (v5.0): unacknowledged deliveries are not
// re-sent while the connection lasts; on reconnect with Clean Start 0 a
// PUBLISH without PUBACK or PUBREC is re-sent with DUP 1 and its original
// identifier, and a PUBREL without PUBCOMP is re-sent, not its PUBLISH.
#[tokio::test]
async fn unacknowledged_packets_are_resent_on_reconnect_only() {
    timed(async {
        let broker = TestBroker::start().await;
        let (mut client, _) = connect_expiring(broker.addr, "device", true, 60).await;
        client.subscribe(1, &[("t", QoS::ExactlyOnce)]).await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        publisher
            .publish("t", b"q1", QoS::AtLeastOnce, false, 1)
            .await;
        publisher
            .publish("t", b"q2", QoS::ExactlyOnce, false, 2)
            .await;
        publisher
            .publish("t", b"rel", QoS::ExactlyOnce, false, 3)
            .await;
        let q1 = client.recv_publish().await;
        let q2 = client.recv_publish().await;
        let rel = client.recv_publish().await;
        client
            .send(&Packet::PubRec(Ack::new(packet_id_of(&rel))))
            .await;
        match client.recv().await {
            Packet::PubRel(ack) => assert_eq!(ack.packet_id, packet_id_of(&rel)),
            other => panic!("expected PUBREL, got {other:?}"),
        }
        assert!(client.ping_barrier().await.is_empty(), "no re-send online");
        drop(client);
        let (mut client, connack) = connect_expiring(broker.addr, "device", false, 60).await;
        assert!(connack.session_present);
        let resent = client.ping_barrier().await;
        assert_eq!(resent.len(), 3, "{resent:?}");
        let mut publishes = Vec::new();
        let mut pubrels = Vec::new();
        for packet in resent {
            match packet {
                Packet::Publish(publish) => publishes.push(publish),
                Packet::PubRel(ack) => pubrels.push(ack.packet_id),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(pubrels, vec![packet_id_of(&rel)]);
        assert_eq!(publishes.len(), 2);
        for (again, original) in publishes.iter().zip([&q1, &q2]) {
            assert!(again.dup);
            assert_eq!(again.packet_id, original.packet_id);
            assert_eq!(again.qos, original.qos);
            assert_eq!(again.payload, original.payload);
        }
        client
            .send(&Packet::PubAck(Ack::new(packet_id_of(&q1))))
            .await;
        acknowledge(&mut client, &publishes[1]).await;
        client
            .send(&Packet::PubComp(Ack::new(packet_id_of(&rel))))
            .await;
        assert!(client.ping_barrier().await.is_empty());
        drop(client);
        let (mut client, _) = connect_expiring(broker.addr, "device", false, 60).await;
        assert!(client.ping_barrier().await.is_empty(), "all acknowledged");
    })
    .await;
}

// [MQTT-4.4.0-2] (v5.0): a delivery answered by PUBACK or PUBREC with a
// code of 0x80 or above is acknowledged: no PUBREL follows and nothing is
// re-sent on reconnect.
#[tokio::test]
async fn error_acknowledgements_are_final() {
    timed(async {
        let broker = TestBroker::start().await;
        let (mut client, _) = connect_expiring(broker.addr, "picky", true, 60).await;
        client.subscribe(1, &[("t", QoS::ExactlyOnce)]).await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        publisher
            .publish("t", b"1", QoS::AtLeastOnce, false, 1)
            .await;
        publisher
            .publish("t", b"2", QoS::ExactlyOnce, false, 2)
            .await;
        let first = client.recv_publish().await;
        let second = client.recv_publish().await;
        client
            .send(&Packet::PubAck(ack_with_code(
                packet_id_of(&first),
                ReasonCode::UnspecifiedError,
            )))
            .await;
        client
            .send(&Packet::PubRec(ack_with_code(
                packet_id_of(&second),
                ReasonCode::ImplementationSpecificError,
            )))
            .await;
        assert!(client.ping_barrier().await.is_empty(), "no PUBREL");
        drop(client);
        let (mut client, connack) = connect_expiring(broker.addr, "picky", false, 60).await;
        assert!(connack.session_present);
        assert!(client.ping_barrier().await.is_empty(), "nothing re-sent");
    })
    .await;
}

// [MQTT-4.3.2-5] (v5.0): once the broker has sent PUBACK, a PUBLISH with
// the same packet identifier is a new message, DUP 1 or not.
#[tokio::test]
async fn same_identifier_after_puback_is_a_new_message() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut subscriber = RawClient::connect_v5(broker.addr, "sub").await;
        subscriber.subscribe(1, &[("t", QoS::AtMostOnce)]).await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        for first in [0x32, 0x3A, 0x32] {
            publisher
                .send_bytes(&raw_publish(first, b"t", Some(1), &[], b"same"))
                .await;
            match publisher.recv().await {
                Packet::PubAck(ack) => assert_eq!(ack.packet_id, id(1)),
                other => panic!("expected PUBACK, got {other:?}"),
            }
        }
        for _ in 0..3 {
            assert_eq!(&subscriber.recv_publish().await.payload[..], b"same");
        }
        assert!(subscriber.ping_barrier().await.is_empty());
    })
    .await;
}

// [MQTT-4.3.3-9] [MQTT-4.3.3-10] [MQTT-4.3.3-12] (v5.0): as QoS 2
// receiver the broker treats a PUBLISH re-using an identifier it refused
// (PUBREC 0x99) as new; answers a repeat before PUBREL with PUBREC again
// and delivers it once; after PUBCOMP, the identifier starts a new message.
#[tokio::test]
async fn qos_2_receiver_tracks_identifiers() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut subscriber = RawClient::connect_v5(broker.addr, "sub").await;
        subscriber.subscribe(1, &[("t", QoS::AtMostOnce)]).await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        let utf8 = PublishProperties {
            payload_format_indicator: Some(true),
            ..PublishProperties::default()
        };
        publisher
            .send(&publish_with(
                "t",
                b"\xFF",
                QoS::ExactlyOnce,
                Some(4),
                utf8.clone(),
            ))
            .await;
        match publisher.recv().await {
            Packet::PubRec(ack) => assert_eq!(ack.reason_code, ReasonCode::PayloadFormatInvalid),
            other => panic!("expected PUBREC, got {other:?}"),
        }
        for first in [0x34, 0x3C] {
            publisher
                .send_bytes(&raw_publish(first, b"t", Some(4), &[], b"once"))
                .await;
            match publisher.recv().await {
                Packet::PubRec(ack) => {
                    assert_eq!(
                        (ack.packet_id, ack.reason_code),
                        (id(4), ReasonCode::Success)
                    )
                }
                other => panic!("expected PUBREC, got {other:?}"),
            }
        }
        assert_eq!(&subscriber.recv_publish().await.payload[..], b"once");
        assert!(subscriber.ping_barrier().await.is_empty(), "delivered once");
        publisher.send(&Packet::PubRel(Ack::new(id(4)))).await;
        assert!(matches!(publisher.recv().await, Packet::PubComp(_)));
        publisher
            .publish("t", b"new", QoS::ExactlyOnce, false, 4)
            .await;
        assert_eq!(&subscriber.recv_publish().await.payload[..], b"new");
    })
    .await;
}

// [MQTT-4.3.3-13] (v5.0): as QoS 2 receiver the broker completes the flow
// for a message whose expiry has passed: PUBREL still gets PUBCOMP.
#[tokio::test]
async fn qos_2_flow_completes_after_the_message_expired() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        publisher
            .send(&publish_with(
                "t",
                b"x",
                QoS::ExactlyOnce,
                Some(1),
                expiring_message(1),
            ))
            .await;
        assert!(matches!(publisher.recv().await, Packet::PubRec(_)));
        // The behaviour under test is time passing: outlast the expiry.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        publisher.send(&Packet::PubRel(Ack::new(id(1)))).await;
        match publisher.recv().await {
            Packet::PubComp(ack) => {
                assert_eq!(
                    (ack.packet_id, ack.reason_code),
                    (id(1), ReasonCode::Success)
                )
            }
            other => panic!("expected PUBCOMP, got {other:?}"),
        }
    })
    .await;
}

// ---------------------------------------------------------------------------
// 4.5 message receipt, 4.7 topics.

// [MQTT-4.5.0-1] (v5.0): a message the broker accepts goes to the session
// of every client with a matching subscription, connected or not.
#[tokio::test]
async fn accepted_message_reaches_every_matching_session() {
    timed(async {
        let broker = TestBroker::start().await;
        let (mut offline, _) = connect_expiring(broker.addr, "offline", true, 60).await;
        offline.subscribe(1, &[("m/+", QoS::AtLeastOnce)]).await;
        offline.disconnect().await;
        let mut exact = RawClient::connect_v5(broker.addr, "exact").await;
        exact.subscribe(1, &[("m/1", QoS::AtLeastOnce)]).await;
        let mut wild = RawClient::connect_v5(broker.addr, "wild").await;
        wild.subscribe(1, &[("#", QoS::AtLeastOnce)]).await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        publisher
            .publish("m/1", b"x", QoS::AtLeastOnce, false, 1)
            .await;
        for client in [&mut exact, &mut wild] {
            assert_eq!(&client.recv_publish().await.payload[..], b"x");
        }
        let (mut offline, _) = connect_expiring(broker.addr, "offline", false, 60).await;
        assert_eq!(&offline.recv_publish().await.payload[..], b"x");
    })
    .await;
}

// [MQTT-4.7.2-1] (v5.0): filters starting with '#' or '+' do not match
// topics starting with '$'; a filter naming the '$' level does.
#[tokio::test]
async fn leading_wildcards_do_not_match_dollar_topics() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut all = RawClient::connect_v5(broker.addr, "all").await;
        all.subscribe(1, &[("#", QoS::AtMostOnce), ("+/x", QoS::AtMostOnce)])
            .await;
        let mut dollar = RawClient::connect_v5(broker.addr, "dollar").await;
        dollar.subscribe(1, &[("$app/#", QoS::AtMostOnce)]).await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        publisher
            .publish("$app/x", b"d", QoS::AtMostOnce, false, 0)
            .await;
        publisher
            .publish("app/x", b"p", QoS::AtMostOnce, false, 0)
            .await;
        assert_eq!(&dollar.recv_publish().await.payload[..], b"d");
        let got: Vec<Bytes> = drain(&mut all)
            .await
            .into_iter()
            .map(|publish| publish.payload)
            .collect();
        assert_eq!(got, vec![Bytes::from_static(b"p")]);
    })
    .await;
}

// [MQTT-4.7.3-4] (v5.0): topics are matched as they are, never normalised:
// case, Unicode composition and a trailing '/' all matter.
#[tokio::test]
async fn topics_are_matched_without_normalisation() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut client = RawClient::connect_v5(broker.addr, "sub").await;
        client
            .subscribe(1, &[("caf\u{e9}/A", QoS::AtMostOnce)])
            .await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        for topic_name in [
            "cafe\u{301}/A",
            "caf\u{e9}/a",
            "caf\u{e9}/A/",
            "caf\u{e9}/A",
        ] {
            publisher
                .publish(topic_name, topic_name.as_bytes(), QoS::AtMostOnce, false, 0)
                .await;
        }
        let publish = client.recv_publish().await;
        assert_eq!(publish.topic.as_str(), "caf\u{e9}/A");
        assert!(client.ping_barrier().await.is_empty());
    })
    .await;
}

// ---------------------------------------------------------------------------
// 4.8 shared subscriptions.

async fn round_robin_broker() -> TestBroker {
    TestBroker::with_config(petrel::Config {
        shared_subscription_strategy: petrel::config::SharedStrategy::RoundRobin,
        ..test_config()
    })
    .await
}

// [MQTT-4.8.2-6] (v5.0): a shared message refused by its member with
// PUBACK or PUBREC 0x80 or above is discarded, not offered to another
// member.
#[tokio::test]
async fn refused_shared_message_is_not_offered_again() {
    timed(async {
        let broker = round_robin_broker().await;
        let mut first = RawClient::connect_v5(broker.addr, "first").await;
        first
            .subscribe(1, &[("$share/g/t", QoS::ExactlyOnce)])
            .await;
        let mut second = RawClient::connect_v5(broker.addr, "second").await;
        second
            .subscribe(1, &[("$share/g/t", QoS::ExactlyOnce)])
            .await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        for (index, qos) in [
            QoS::AtLeastOnce,
            QoS::AtLeastOnce,
            QoS::ExactlyOnce,
            QoS::ExactlyOnce,
        ]
        .into_iter()
        .enumerate()
        {
            publisher
                .publish("t", b"x", qos, false, index as u16 + 1)
                .await;
        }
        for client in [&mut first, &mut second] {
            for _ in 0..2 {
                let publish = client.recv_publish().await;
                let refusal = ack_with_code(packet_id_of(&publish), ReasonCode::UnspecifiedError);
                match publish.qos {
                    QoS::AtLeastOnce => client.send(&Packet::PubAck(refusal)).await,
                    _ => client.send(&Packet::PubRec(refusal)).await,
                }
            }
        }
        for client in [&mut first, &mut second] {
            assert!(client.ping_barrier().await.is_empty(), "not offered again");
        }
    })
    .await;
}

// [MQTT-4.8.2-4] (v5.0): a QoS 2 shared delivery cut off by a broken
// connection is completed to the same member when it reconnects; the
// other member does not get it.
#[tokio::test]
async fn interrupted_qos_2_shared_delivery_completes_to_the_same_member() {
    timed(async {
        let broker = round_robin_broker().await;
        let (mut first, _) = connect_expiring(broker.addr, "first", true, 60).await;
        first
            .subscribe(1, &[("$share/g/t", QoS::ExactlyOnce)])
            .await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        publisher
            .publish("t", b"x", QoS::ExactlyOnce, false, 1)
            .await;
        let sent = first.recv_publish().await;
        let mut second = RawClient::connect_v5(broker.addr, "second").await;
        second
            .subscribe(1, &[("$share/g/t", QoS::ExactlyOnce)])
            .await;
        drop(first);
        assert!(second.ping_barrier().await.is_empty(), "not moved");
        let (mut first, _) = connect_expiring(broker.addr, "first", false, 60).await;
        let again = first.recv_publish().await;
        assert!(again.dup);
        assert_eq!(
            (again.packet_id, &again.payload),
            (sent.packet_id, &sent.payload)
        );
        acknowledge(&mut first, &again).await;
        assert!(second.ping_barrier().await.is_empty());
    })
    .await;
}

// [MQTT-4.8.2-5] (v5.0): if that member's session ends before it
// reconnects, the interrupted QoS 2 message is not sent to another member.
#[tokio::test]
async fn interrupted_qos_2_shared_message_dies_with_the_session() {
    timed(async {
        let broker = round_robin_broker().await;
        let (mut first, _) = connect_expiring(broker.addr, "first", true, 1).await;
        first
            .subscribe(1, &[("$share/g/t", QoS::ExactlyOnce)])
            .await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        publisher
            .publish("t", b"x", QoS::ExactlyOnce, false, 1)
            .await;
        first.recv_publish().await;
        let mut second = RawClient::connect_v5(broker.addr, "second").await;
        second
            .subscribe(1, &[("$share/g/t", QoS::ExactlyOnce)])
            .await;
        drop(first);
        let metrics = broker.broker.metrics();
        eventually("the session to expire", || {
            metrics.sessions_expired.get() == 1
        })
        .await;
        assert!(second.ping_barrier().await.is_empty());
    })
    .await;
}

// [MQTT-4.3.3-7] [MQTT-3.3.2-5] (v5.0): expiry does not apply to a QoS 2
// PUBLISH whose delivery has started: sent, not yet acknowledged, its
// interval running out while the subscriber is away, it is re-sent (DUP)
// when the subscriber comes back.
#[tokio::test]
async fn qos2_message_already_sent_is_not_expired() {
    timed(async {
        let broker = TestBroker::start().await;
        let (mut subscriber, _) = connect_expiring(broker.addr, "q2-expiry", true, 60).await;
        subscriber
            .subscribe(1, &[("q2/expiry", QoS::ExactlyOnce)])
            .await;
        let mut publisher = RawClient::connect_v5(broker.addr, "q2-expiry-pub").await;
        publisher
            .send(&publish_with(
                "q2/expiry",
                b"once",
                QoS::ExactlyOnce,
                Some(1),
                expiring_message(1),
            ))
            .await;
        let first = subscriber.recv_publish().await;
        assert!(!first.dup);
        drop(subscriber);
        // The behaviour under test is time passing: the interval runs out.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (mut subscriber, connack) = connect_expiring(broker.addr, "q2-expiry", false, 60).await;
        assert!(connack.session_present);
        let again = subscriber.recv_publish().await;
        assert!(again.dup);
        assert_eq!(again.packet_id, first.packet_id);
        assert_eq!(&again.payload[..], b"once");
    })
    .await;
}

// [MQTT-PE-3.3.4-1] (v5.0): a PUBLISH from a client carrying a Subscription
// Identifier ([MQTT-3.3.4-6] (v5.0) binds the client) is a Protocol Error:
// DISCONNECT 0x82.
#[tokio::test]
async fn client_publish_with_subscription_identifier_is_a_protocol_error() {
    timed(async {
        let broker = TestBroker::start().await;
        // PUBLISH QoS 0 to "t" with Subscription Identifier 5.
        let bytes = raw_publish(0x30, b"t", None, &[0x0B, 0x05], b"x");
        refused(broker.addr, &bytes, ReasonCode::ProtocolError).await;
    })
    .await;
}

// [MQTT-PE-3.8.3.1-2] (v5.0): Maximum QoS 3 in Subscription Options is a
// Protocol Error: DISCONNECT 0x82.
#[tokio::test]
async fn subscription_qos_3_is_a_protocol_error() {
    timed(async {
        let broker = TestBroker::start().await;
        let bytes = raw_subscribe(0x82, &[], &[(b"t", 0x03)]);
        refused(broker.addr, &bytes, ReasonCode::ProtocolError).await;
    })
    .await;
}
