//! MQTT 5 messages: properties forwarded unchanged, message expiry, topic
//! aliases both ways, Receive Maximum both ways, the client's Maximum
//! Packet Size, payload format checks, acknowledgement reason codes, and
//! 3.1.1 and 5.0 clients on the same topics.

mod common;

use std::num::{NonZeroU16, NonZeroU32};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use petrel::protocol::{
    Ack, ConnectProperties, Packet, PublishProperties, QoS, ReasonCode, TopicName,
};

fn rich_properties() -> PublishProperties {
    PublishProperties {
        payload_format_indicator: Some(true),
        message_expiry_interval: None,
        content_type: Some("application/json".into()),
        response_topic: Some(topic("replies/1")),
        correlation_data: Some(Bytes::from_static(b"\x00\x01corr")),
        user_properties: vec![
            ("z".into(), "last-first".into()),
            ("a".into(), "1".into()),
            ("a".into(), "2".into()),
        ],
        ..PublishProperties::default()
    }
}

// [MQTT-3.3.2-4] [MQTT-3.3.2-15] [MQTT-3.3.2-16] [MQTT-3.3.2-17]
// [MQTT-3.3.2-18] [MQTT-3.3.2-20] (v5.0): Payload Format Indicator,
// Content Type, Response Topic, Correlation Data and User Properties
// reach the subscriber unchanged, User Properties in order. A 3.1.1
// subscriber on the same topic gets the message without them.
#[tokio::test]
async fn properties_are_forwarded_unchanged_and_left_out_for_3_1_1() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut v5 = RawClient::connect_v5(broker.addr, "v5-sub").await;
        v5.subscribe(1, &[("data/#", QoS::AtLeastOnce)]).await;
        let mut v3 = RawClient::connect(broker.addr, "v3-sub").await;
        v3.subscribe(1, &[("data/#", QoS::AtLeastOnce)]).await;
        let mut publisher = RawClient::connect_v5(broker.addr, "v5-pub").await;
        publisher
            .send(&publish_with(
                "data/1",
                b"{}",
                QoS::AtLeastOnce,
                Some(7),
                rich_properties(),
            ))
            .await;
        match publisher.recv().await {
            Packet::PubAck(ack) => assert_eq!(ack.reason_code, ReasonCode::Success),
            other => panic!("expected PUBACK, got {other:?}"),
        }
        let received = v5.recv_publish().await;
        assert_eq!(received.properties, rich_properties());
        assert_eq!(&received.payload[..], b"{}");
        let plain = v3.recv_publish().await;
        assert_eq!(plain.topic.as_str(), "data/1");
        assert_eq!(plain.properties, PublishProperties::default());
    })
    .await;
}

// Mixed versions: a 3.1.1 message reaches a 5.0 subscriber with no
// properties added.
#[tokio::test]
async fn message_from_3_1_1_reaches_5_0_without_properties() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut v5 = RawClient::connect_v5(broker.addr, "v5-sub").await;
        v5.subscribe(1, &[("mixed", QoS::AtMostOnce)]).await;
        let mut v3 = RawClient::connect(broker.addr, "v3-pub").await;
        v3.publish("mixed", b"plain", QoS::AtMostOnce, false, 0)
            .await;
        let received = v5.recv_publish().await;
        assert_eq!(&received.payload[..], b"plain");
        assert_eq!(received.properties, PublishProperties::default());
    })
    .await;
}

fn expiring_in(seconds: u32) -> PublishProperties {
    PublishProperties {
        message_expiry_interval: Some(seconds),
        ..PublishProperties::default()
    }
}

// [MQTT-3.3.2-5] [MQTT-3.3.2-6] (v5.0): a queued message whose expiry has
// passed is never delivered (and is counted); one still alive carries what
// is left of its interval. Applies to 3.1.1 subscribers too (the expired
// one is not delivered).
#[tokio::test]
async fn expired_messages_are_not_delivered_and_the_rest_count_down() {
    timed(async {
        let broker = TestBroker::start().await;
        for (client_id, v5) in [("sleeper-5", true), ("sleeper-3", false)] {
            let connect = if v5 {
                petrel::protocol::Connect {
                    properties: ConnectProperties {
                        session_expiry_interval: Some(600),
                        ..ConnectProperties::default()
                    },
                    ..connect_v5(client_id, true, 0)
                }
            } else {
                connect_packet(client_id, false, 0)
            };
            let (mut client, _) = RawClient::connect_with(broker.addr, connect).await;
            client.subscribe(1, &[("news", QoS::AtLeastOnce)]).await;
            client.disconnect().await;
        }
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        for (packet_id, (payload, seconds)) in [(&b"short"[..], 1), (&b"long"[..], 100)]
            .into_iter()
            .enumerate()
        {
            publisher
                .send(&publish_with(
                    "news",
                    payload,
                    QoS::AtLeastOnce,
                    Some(packet_id as u16 + 1),
                    expiring_in(seconds),
                ))
                .await;
            publisher.recv().await;
        }
        // The behaviour under test is time passing: let the first expire.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        for (client_id, v5) in [("sleeper-5", true), ("sleeper-3", false)] {
            let connect = if v5 {
                petrel::protocol::Connect {
                    properties: ConnectProperties {
                        session_expiry_interval: Some(600),
                        ..ConnectProperties::default()
                    },
                    ..connect_v5(client_id, false, 0)
                }
            } else {
                connect_packet(client_id, false, 0)
            };
            let (mut client, connack) = RawClient::connect_with(broker.addr, connect).await;
            assert!(connack.session_present);
            let publish = client.recv_publish().await;
            assert_eq!(&publish.payload[..], b"long");
            if v5 {
                let left = publish.properties.message_expiry_interval.expect("expiry");
                assert!((95..100).contains(&left), "{left} seconds left");
            }
            acknowledge(&mut client, &publish).await;
            assert!(client.ping_barrier().await.is_empty());
        }
        assert_eq!(broker.broker.metrics().messages_expired.get(), 2);
    })
    .await;
}

fn aliased(alias: u16) -> PublishProperties {
    PublishProperties {
        topic_alias: NonZeroU16::new(alias),
        ..PublishProperties::default()
    }
}

// [MQTT-3.3.2-12] (v5.0): the client sets an alias with a topic and then
// uses it alone; subscribers get the full topic.
#[tokio::test]
async fn client_topic_alias_is_resolved() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut subscriber = RawClient::connect(broker.addr, "sub").await;
        subscriber
            .subscribe(1, &[("sensors/#", QoS::AtMostOnce)])
            .await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        publisher
            .send(&publish_with(
                "sensors/long/name",
                b"1",
                QoS::AtMostOnce,
                None,
                aliased(3),
            ))
            .await;
        let mut by_alias = publish_with("x", b"2", QoS::AtMostOnce, None, aliased(3));
        if let Packet::Publish(publish) = &mut by_alias {
            publish.topic = TopicName::alias_only();
        }
        publisher.send(&by_alias).await;
        for payload in [b"1", b"2"] {
            let publish = subscriber.recv_publish().await;
            assert_eq!(publish.topic.as_str(), "sensors/long/name");
            assert_eq!(&publish.payload[..], payload);
        }
    })
    .await;
}

// [MQTT-3.3.2-9] (v5.0) answered: an alias above the Topic Alias Maximum
// gets DISCONNECT 0x94 [MQTT-PE-3.3.2.3.4-2]; an alias that names no topic
// is a Protocol Error (3.3.2.3.4) [MQTT-PE-3.3.2.3.4-3].
#[tokio::test]
async fn bad_client_aliases_close_the_connection() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut client = RawClient::connect_v5(broker.addr, "over").await;
        client
            .send(&publish_with("t", b"", QoS::AtMostOnce, None, aliased(65)))
            .await;
        client
            .expect_disconnect(ReasonCode::TopicAliasInvalid)
            .await;
        let mut client = RawClient::connect_v5(broker.addr, "unknown").await;
        let mut by_alias = publish_with("x", b"", QoS::AtMostOnce, None, aliased(1));
        if let Packet::Publish(publish) = &mut by_alias {
            publish.topic = TopicName::alias_only();
        }
        client.send(&by_alias).await;
        client.expect_disconnect(ReasonCode::ProtocolError).await;
    })
    .await;
}

// [MQTT-3.1.2-26] [MQTT-3.3.2-11] (v5.0): the broker gives topics aliases
// up to the client's Topic Alias Maximum: the topic with the alias first,
// the alias alone after; a topic beyond the maximum goes in full.
// [MQTT-3.1.2-27] (v5.0): a client that announced none gets none.
#[tokio::test]
async fn broker_assigns_aliases_up_to_the_clients_maximum() {
    timed(async {
        let broker = TestBroker::start().await;
        let properties = ConnectProperties {
            topic_alias_maximum: Some(1),
            ..ConnectProperties::default()
        };
        let (mut aliased_sub, _) =
            RawClient::connect_v5_with(broker.addr, "aliased", properties).await;
        aliased_sub.subscribe(1, &[("t/#", QoS::AtMostOnce)]).await;
        let mut plain_sub = RawClient::connect_v5(broker.addr, "plain").await;
        plain_sub.subscribe(1, &[("t/#", QoS::AtMostOnce)]).await;
        let mut publisher = RawClient::connect(broker.addr, "pub").await;
        for topic_name in ["t/one", "t/one", "t/two"] {
            publisher
                .publish(topic_name, b"x", QoS::AtMostOnce, false, 0)
                .await;
        }
        let first = aliased_sub.recv_publish().await;
        assert_eq!(first.topic.as_str(), "t/one");
        assert_eq!(first.properties.topic_alias, NonZeroU16::new(1));
        let second = aliased_sub.recv_publish().await;
        assert!(second.topic.is_empty());
        assert_eq!(second.properties.topic_alias, NonZeroU16::new(1));
        let third = aliased_sub.recv_publish().await;
        assert_eq!(third.topic.as_str(), "t/two");
        assert_eq!(third.properties.topic_alias, None);
        for _ in 0..3 {
            let publish = plain_sub.recv_publish().await;
            assert_eq!(publish.properties.topic_alias, None);
            assert!(!publish.topic.is_empty());
        }
    })
    .await;
}

// [MQTT-3.3.4-9] [MQTT-3.3.4-10] (v5.0): never more unacknowledged QoS 1
// PUBLISH than the client's Receive Maximum; an acknowledgement lets the
// next one go; PINGRESP is not held back meanwhile.
// [MQTT-4.9.0-1] [MQTT-4.9.0-2] [MQTT-4.9.0-3] (v5.0): the send quota
// starts non-zero and at most the Receive Maximum, nothing more goes at
// zero, and other packets are still answered.
#[tokio::test]
async fn receive_maximum_bounds_what_is_in_flight_to_the_client() {
    timed(async {
        let broker = TestBroker::start().await;
        let properties = ConnectProperties {
            receive_maximum: NonZeroU16::new(2),
            ..ConnectProperties::default()
        };
        let (mut subscriber, _) = RawClient::connect_v5_with(broker.addr, "slow", properties).await;
        subscriber.subscribe(1, &[("work", QoS::AtLeastOnce)]).await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        for packet_id in 1..=4 {
            publisher
                .publish(
                    "work",
                    &[packet_id as u8],
                    QoS::AtLeastOnce,
                    false,
                    packet_id,
                )
                .await;
        }
        let first = subscriber.recv_publish().await;
        let second = subscriber.recv_publish().await;
        assert!(
            subscriber.ping_barrier().await.is_empty(),
            "a third in flight"
        );
        subscriber
            .send(&Packet::PubAck(Ack::new(first.packet_id.expect("id"))))
            .await;
        let third = subscriber.recv_publish().await;
        assert_eq!(&third.payload[..], &[3]);
        assert!(subscriber.ping_barrier().await.is_empty());
        assert_eq!(&second.payload[..], &[2]);
    })
    .await;
}

// [MQTT-3.3.4-7] (v5.0) answered: more unacknowledged QoS 2 PUBLISH than
// the broker's Receive Maximum gets DISCONNECT 0x93.
#[tokio::test]
async fn exceeding_the_brokers_receive_maximum_disconnects() {
    timed(async {
        let broker = TestBroker::with_config(petrel::Config {
            receive_maximum: 2,
            ..test_config()
        })
        .await;
        let (mut client, connack) =
            RawClient::connect_v5_with(broker.addr, "eager", ConnectProperties::default()).await;
        assert_eq!(connack.properties.receive_maximum, NonZeroU16::new(2));
        for packet_id in 1..=2 {
            client
                .send(&publish_packet(
                    "q2",
                    b"x",
                    QoS::ExactlyOnce,
                    false,
                    Some(packet_id),
                ))
                .await;
            assert!(matches!(client.recv().await, Packet::PubRec(_)));
        }
        client
            .send(&publish_packet(
                "q2",
                b"x",
                QoS::ExactlyOnce,
                false,
                Some(3),
            ))
            .await;
        client
            .expect_disconnect(ReasonCode::ReceiveMaximumExceeded)
            .await;
    })
    .await;
}

// [MQTT-3.1.2-24] [MQTT-3.1.2-25] (v5.0): a message larger than the
// client's Maximum Packet Size is dropped for that client alone (counted),
// and a QoS 1 one is not left in flight.
#[tokio::test]
async fn messages_over_the_clients_maximum_packet_size_are_dropped_for_it() {
    timed(async {
        let broker = TestBroker::start().await;
        let properties = ConnectProperties {
            maximum_packet_size: NonZeroU32::new(64),
            receive_maximum: NonZeroU16::new(1),
            ..ConnectProperties::default()
        };
        let (mut small, _) = RawClient::connect_v5_with(broker.addr, "small", properties).await;
        small.subscribe(1, &[("blob", QoS::AtLeastOnce)]).await;
        let mut large = RawClient::connect_v5(broker.addr, "large").await;
        large.subscribe(1, &[("blob", QoS::AtLeastOnce)]).await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        publisher
            .publish("blob", &[7u8; 200], QoS::AtLeastOnce, false, 1)
            .await;
        publisher
            .publish("blob", b"tiny", QoS::AtLeastOnce, false, 2)
            .await;
        assert_eq!(large.recv_publish().await.payload.len(), 200);
        // The window of one is free again: the small message follows.
        let publish = small.recv_publish().await;
        assert_eq!(&publish.payload[..], b"tiny");
        assert_eq!(broker.broker.metrics().messages_too_large.get(), 1);
    })
    .await;
}

// 3.3.2.3.2 (v5.0): a payload marked UTF-8 that is not is refused with
// PUBACK 0x99 and not delivered.
#[tokio::test]
async fn invalid_utf8_payload_is_refused() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut subscriber = RawClient::connect_v5(broker.addr, "sub").await;
        subscriber.subscribe(1, &[("text", QoS::AtLeastOnce)]).await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        let marked = PublishProperties {
            payload_format_indicator: Some(true),
            ..PublishProperties::default()
        };
        publisher
            .send(&publish_with(
                "text",
                &[0xC3, 0x28],
                QoS::AtLeastOnce,
                Some(1),
                marked,
            ))
            .await;
        match publisher.recv().await {
            Packet::PubAck(ack) => assert_eq!(ack.reason_code, ReasonCode::PayloadFormatInvalid),
            other => panic!("expected PUBACK, got {other:?}"),
        }
        assert!(subscriber.ping_barrier().await.is_empty());
    })
    .await;
}

// 3.4.2.1 and 3.5.2.1 (v5.0): PUBACK and PUBREC say 0x10 when nobody is
// subscribed; PUBCOMP says 0x92 for a PUBREL with an unknown id.
#[tokio::test]
async fn acknowledgement_reason_codes() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut client = RawClient::connect_v5(broker.addr, "lonely").await;
        client
            .send(&publish_packet(
                "nobody",
                b"x",
                QoS::AtLeastOnce,
                false,
                Some(1),
            ))
            .await;
        match client.recv().await {
            Packet::PubAck(ack) => assert_eq!(ack.reason_code, ReasonCode::NoMatchingSubscribers),
            other => panic!("expected PUBACK, got {other:?}"),
        }
        client
            .send(&publish_packet(
                "nobody",
                b"x",
                QoS::ExactlyOnce,
                false,
                Some(2),
            ))
            .await;
        match client.recv().await {
            Packet::PubRec(ack) => assert_eq!(ack.reason_code, ReasonCode::NoMatchingSubscribers),
            other => panic!("expected PUBREC, got {other:?}"),
        }
        client.send(&Packet::PubRel(Ack::new(id(2)))).await;
        match client.recv().await {
            Packet::PubComp(ack) => assert_eq!(ack.reason_code, ReasonCode::Success),
            other => panic!("expected PUBCOMP, got {other:?}"),
        }
        client.send(&Packet::PubRel(Ack::new(id(9)))).await;
        match client.recv().await {
            Packet::PubComp(ack) => {
                assert_eq!(ack.reason_code, ReasonCode::PacketIdentifierNotFound)
            }
            other => panic!("expected PUBCOMP, got {other:?}"),
        }
    })
    .await;
}

// 4.3.3 (v5.0): a PUBREC with an error code ends the QoS 2 flow: no
// PUBREL, and the window is free again.
#[tokio::test]
async fn pubrec_with_an_error_ends_the_flow() {
    timed(async {
        let broker = TestBroker::start().await;
        let properties = ConnectProperties {
            receive_maximum: NonZeroU16::new(1),
            ..ConnectProperties::default()
        };
        let (mut subscriber, _) =
            RawClient::connect_v5_with(broker.addr, "picky", properties).await;
        subscriber.subscribe(1, &[("q2", QoS::ExactlyOnce)]).await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        publisher
            .publish("q2", b"1", QoS::ExactlyOnce, false, 1)
            .await;
        publisher
            .publish("q2", b"2", QoS::ExactlyOnce, false, 2)
            .await;
        let first = subscriber.recv_publish().await;
        let mut refusal = Ack::new(first.packet_id.expect("id"));
        refusal.reason_code = ReasonCode::UnspecifiedError;
        subscriber.send(&Packet::PubRec(refusal)).await;
        let second = subscriber.recv_publish().await;
        assert_eq!(&second.payload[..], b"2");
    })
    .await;
}

// [MQTT-3.1.2-29] (v5.0): an error acknowledgement carries a Reason String,
// unless the client set Request Problem Information to 0.
#[tokio::test]
async fn reason_strings_follow_request_problem_information() {
    timed(async {
        let broker = TestBroker::start().await;
        for (client_id, wants) in [("curious", None), ("terse", Some(false))] {
            let properties = ConnectProperties {
                request_problem_information: wants,
                ..ConnectProperties::default()
            };
            let (mut client, _) =
                RawClient::connect_v5_with(broker.addr, client_id, properties).await;
            client.send(&Packet::PubRel(Ack::new(id(5)))).await;
            match client.recv().await {
                Packet::PubComp(ack) => {
                    assert_eq!(ack.reason_code, ReasonCode::PacketIdentifierNotFound);
                    assert_eq!(ack.properties.reason_string.is_some(), wants.is_none());
                }
                other => panic!("expected PUBCOMP, got {other:?}"),
            }
        }
    })
    .await;
}

// [MQTT-3.3.4-9] (v5.0) across a reconnect: what was in flight is re-sent
// within the new connection's Receive Maximum, the rest as
// acknowledgements free the window, each with its packet id.
#[tokio::test]
async fn resend_after_reconnect_respects_the_new_receive_maximum() {
    timed(async {
        let broker = TestBroker::start().await;
        let session = |receive_maximum: u16, clean_start: bool| petrel::protocol::Connect {
            properties: ConnectProperties {
                session_expiry_interval: Some(60),
                receive_maximum: NonZeroU16::new(receive_maximum),
                ..ConnectProperties::default()
            },
            ..connect_v5("windowed", clean_start, 0)
        };
        let (mut subscriber, _) = RawClient::connect_with(broker.addr, session(4, true)).await;
        subscriber.subscribe(1, &[("work", QoS::AtLeastOnce)]).await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        for n in 1..=4u8 {
            publisher
                .publish("work", &[n], QoS::AtLeastOnce, false, u16::from(n))
                .await;
        }
        let mut first_ids = Vec::new();
        for _ in 0..4 {
            first_ids.push(subscriber.recv_publish().await.packet_id);
        }
        drop(subscriber);
        let metrics = broker.broker.metrics();
        eventually("the session parked", || {
            metrics.clients_disconnected.get() == 1
        })
        .await;
        let (mut subscriber, connack) =
            RawClient::connect_with(broker.addr, session(2, false)).await;
        assert!(connack.session_present);
        let a = subscriber.recv_publish().await;
        let b = subscriber.recv_publish().await;
        assert!(a.dup && b.dup);
        assert_eq!(vec![a.packet_id, b.packet_id], first_ids[..2].to_vec());
        assert!(
            subscriber.ping_barrier().await.is_empty(),
            "over the new window"
        );
        acknowledge(&mut subscriber, &a).await;
        let c = subscriber.recv_publish().await;
        assert!(c.dup);
        assert_eq!(c.packet_id, first_ids[2]);
        assert!(subscriber.ping_barrier().await.is_empty());
    })
    .await;
}

// [MQTT-3.1.2-25] [MQTT-3.3.4-9] (v5.0): a persistent session comes back
// with a smaller Receive Maximum and a Maximum Packet Size its unacknowledged
// messages no longer fit: those are dropped as too large (they never take
// a place in the window) and the message behind them is delivered.
#[tokio::test]
async fn messages_too_large_after_a_reconnect_leave_the_window() {
    timed(async {
        let broker = TestBroker::start().await;
        let persistent = |receive_maximum, maximum_packet_size| petrel::protocol::Connect {
            properties: ConnectProperties {
                session_expiry_interval: Some(300),
                receive_maximum: NonZeroU16::new(receive_maximum),
                maximum_packet_size: NonZeroU32::new(maximum_packet_size),
                ..ConnectProperties::default()
            },
            ..connect_v5("shrinking", false, 0)
        };
        let (mut subscriber, _) =
            RawClient::connect_with(broker.addr, persistent(10, 100_000)).await;
        subscriber.subscribe(1, &[("t", QoS::AtLeastOnce)]).await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        let large = vec![b'x'; 2000];
        for packet_id in 1..=3 {
            publisher
                .publish("t", &large, QoS::AtLeastOnce, false, packet_id)
                .await;
        }
        for _ in 0..3 {
            assert_eq!(subscriber.recv_publish().await.payload.len(), 2000);
        }
        drop(subscriber);
        publisher
            .publish("t", b"small", QoS::AtLeastOnce, false, 4)
            .await;
        let (mut subscriber, connack) =
            RawClient::connect_with(broker.addr, persistent(1, 1000)).await;
        assert!(connack.session_present);
        let publish = subscriber.recv_publish().await;
        assert_eq!(publish.payload.as_ref(), b"small");
        subscriber.answer(&publish).await;
        assert!(subscriber.ping_barrier().await.is_empty());
        assert_eq!(broker.broker.metrics().messages_too_large.get(), 3);
    })
    .await;
}
