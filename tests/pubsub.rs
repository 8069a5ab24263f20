//! Publish / subscribe end to end with rumqttc and raw clients: fan-out,
//! topic matching, overlapping subscriptions, unsubscribe.

mod common;

use common::*;
use petrel::protocol::{Packet, QoS, ReasonCode};

// [MQTT-3.3.2-3] (v3.1.1): a subscriber gets messages whose topic its filter
// matches, with the publisher's topic name.
// [MQTT-7.0.0-2] [MQTT-7.1.1-1] (v3.1.1): an ordinary client, over plain TCP,
// with no extension.
#[tokio::test]
async fn rumqttc_publish_reaches_a_wildcard_subscriber() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut subscriber = RumqttClient::connect(broker.addr, "sub", true).await;
        subscriber
            .subscribe("sensors/+/temperature", rumqttc::QoS::AtMostOnce)
            .await;
        let publisher = RumqttClient::connect(broker.addr, "pub", true).await;
        publisher
            .client
            .publish(
                "sensors/kitchen/temperature",
                rumqttc::QoS::AtMostOnce,
                false,
                "21.5",
            )
            .await
            .unwrap();
        let received = subscriber.next_publish().await;
        assert_eq!(received.topic, "sensors/kitchen/temperature");
        assert_eq!(&received.payload[..], b"21.5");
        assert!(!received.retain);
    })
    .await;
}

// One message to many subscribers, each getting its own copy.
#[tokio::test]
async fn fan_out_to_many_subscribers() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut subscribers = Vec::new();
        for index in 0..20 {
            let mut client = RawClient::connect(broker.addr, &format!("sub{index}")).await;
            client.subscribe(1, &[("fan/out", QoS::AtMostOnce)]).await;
            subscribers.push(client);
        }
        let mut publisher = RawClient::connect(broker.addr, "pub").await;
        publisher
            .publish("fan/out", b"all", QoS::AtMostOnce, false, 0)
            .await;
        for client in &mut subscribers {
            let publish = client.recv_publish().await;
            assert_eq!(publish.topic.as_str(), "fan/out");
            assert_eq!(&publish.payload[..], b"all");
        }
    })
    .await;
}

// [MQTT-3.3.5-1] (v3.1.1): overlapping subscriptions of one client deliver
// the message once, at the highest QoS granted.
// [MQTT-3.8.4-1] [MQTT-3.8.4-2] [MQTT-3.8.4-4] [MQTT-3.8.4-5] (v3.1.1): one
// SUBACK with the request's id and one code per filter,
// [MQTT-3.9.3-1] (v3.1.1) in the order of the filters.
#[tokio::test]
async fn overlapping_subscriptions_deliver_once_at_the_highest_qos() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut subscriber = RawClient::connect(broker.addr, "sub").await;
        let granted = subscriber
            .subscribe(
                1,
                &[
                    ("a/#", QoS::AtMostOnce),
                    ("a/+", QoS::AtLeastOnce),
                    ("a/b", QoS::AtMostOnce),
                ],
            )
            .await;
        assert_eq!(
            granted,
            vec![
                ReasonCode::GRANTED_QOS_0,
                ReasonCode::GrantedQoS1,
                ReasonCode::GRANTED_QOS_0
            ]
        );
        let mut publisher = RawClient::connect(broker.addr, "pub").await;
        publisher
            .publish("a/b", b"once", QoS::AtLeastOnce, false, 7)
            .await;
        let publish = subscriber.recv_publish().await;
        assert_eq!(publish.qos, QoS::AtLeastOnce);
        assert_eq!(&publish.payload[..], b"once");
        let rest = subscriber.ping_barrier().await;
        assert!(
            rest.iter().all(|p| !matches!(p, Packet::Publish(_))),
            "a second copy arrived: {rest:?}"
        );
    })
    .await;
}

// [MQTT-4.7.2-1] (v3.1.1): '#' and '+/...' do not match $SYS topics;
// '$SYS/#' does.
#[tokio::test]
async fn wildcards_do_not_match_dollar_topics() {
    timed(async {
        let config = petrel::Config {
            sys_interval: 1,
            ..test_config()
        };
        let broker = TestBroker::with_config(config).await;
        let mut system = RawClient::connect(broker.addr, "sys").await;
        system.subscribe(1, &[("$SYS/#", QoS::AtMostOnce)]).await;
        // $SYS is published (retained) every second; '$SYS/#' matches it.
        let publish = system.recv_publish().await;
        assert!(publish.topic.as_str().starts_with("$SYS/broker/"));
        // Now that retained $SYS messages exist, '#' and '+/broker/#' must
        // match none of them, retained or live.
        let mut everything = RawClient::connect(broker.addr, "all").await;
        everything
            .subscribe(
                1,
                &[("#", QoS::AtMostOnce), ("+/broker/#", QoS::AtMostOnce)],
            )
            .await;
        let seen = everything.ping_barrier().await;
        assert!(seen.is_empty(), "'#' matched a $SYS topic: {seen:?}");
    })
    .await;
}

// [MQTT-3.10.4-2] [MQTT-3.10.4-4] [MQTT-3.10.4-5] [MQTT-3.10.4-6] (v3.1.1):
// after UNSUBSCRIBE nothing more arrives; one UNSUBACK with the request's
// packet identifier answers several filters, one of them never subscribed.
// [MQTT-4.1.0-2] (v3.1.1): the clean session served the subscription while
// connected.
#[tokio::test]
async fn unsubscribe_stops_delivery() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut subscriber = RawClient::connect(broker.addr, "sub").await;
        subscriber.subscribe(1, &[("t", QoS::AtMostOnce)]).await;
        subscriber
            .send(&unsubscribe_packet(9, &["t", "never/subscribed"]))
            .await;
        match subscriber.recv().await {
            Packet::UnsubAck(unsuback) => assert_eq!(unsuback.packet_id, id(9)),
            other => panic!("expected UNSUBACK, got {other:?}"),
        }
        let mut publisher = RawClient::connect(broker.addr, "pub").await;
        publisher
            .publish("t", b"x", QoS::AtMostOnce, false, 0)
            .await;
        // The publisher's own barrier orders the publish before ours.
        assert!(publisher.ping_barrier().await.is_empty());
        assert!(subscriber.ping_barrier().await.is_empty());
    })
    .await;
}

// Ordering: messages from one publisher on one topic arrive in order
// [MQTT-4.6.0-5] [MQTT-4.6.0-6] (v3.1.1), at every QoS.
#[tokio::test]
async fn messages_from_one_publisher_arrive_in_order() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut subscriber = RawClient::connect(broker.addr, "sub").await;
        subscriber
            .subscribe(1, &[("order", QoS::ExactlyOnce)])
            .await;
        let mut publisher = RawClient::connect(broker.addr, "pub").await;
        for index in 0..100u16 {
            let qos = match index % 3 {
                0 => QoS::AtMostOnce,
                1 => QoS::AtLeastOnce,
                _ => QoS::ExactlyOnce,
            };
            publisher
                .publish("order", index.to_string().as_bytes(), qos, false, index + 1)
                .await;
        }
        let mut next = 0u16;
        while next < 100 {
            match subscriber.recv().await {
                Packet::Publish(publish) => {
                    assert_eq!(publish.payload, next.to_string().as_bytes());
                    next += 1;
                    let ack = publish.packet_id.map(petrel::protocol::Ack::new);
                    match (publish.qos, ack) {
                        (QoS::AtLeastOnce, Some(ack)) => {
                            subscriber.send(&Packet::PubAck(ack)).await
                        }
                        (QoS::ExactlyOnce, Some(ack)) => {
                            subscriber.send(&Packet::PubRec(ack)).await
                        }
                        _ => {}
                    }
                }
                Packet::PubRel(ack) => subscriber.send(&Packet::PubComp(ack)).await,
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
}

// [MQTT-3.10.4-1] (v3.1.1): UNSUBSCRIBE removes only the filter that is
// equal character for character; it does not match wildcards.
#[tokio::test]
async fn unsubscribe_removes_only_the_exact_filter() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut subscriber = RawClient::connect(broker.addr, "sub").await;
        subscriber
            .subscribe(1, &[("a/+", QoS::AtMostOnce), ("a/b", QoS::AtMostOnce)])
            .await;
        subscriber
            .send(&unsubscribe_packet(2, &["a/b", "a/#"]))
            .await;
        assert!(matches!(subscriber.recv().await, Packet::UnsubAck(_)));
        let mut publisher = RawClient::connect(broker.addr, "pub").await;
        publisher
            .publish("a/b", b"via a/+", QoS::AtMostOnce, false, 0)
            .await;
        assert_eq!(&subscriber.recv_publish().await.payload[..], b"via a/+");
        // Only an UNSUBACK arrives for a filter that was never subscribed.
        subscriber.send(&unsubscribe_packet(3, &["never"])).await;
        assert!(matches!(subscriber.recv().await, Packet::UnsubAck(ack) if ack.packet_id == id(3)));
    })
    .await;
}

// [MQTT-4.7.3-4] (v3.1.1): topics are compared as they are, never
// normalised: case, Unicode composition and a trailing '/' all matter.
#[tokio::test]
async fn topics_are_not_normalised() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut subscriber = RawClient::connect(broker.addr, "sub").await;
        subscriber
            .subscribe(
                1,
                &[("caf\u{e9}", QoS::AtMostOnce), ("a/b", QoS::AtMostOnce)],
            )
            .await;
        let mut publisher = RawClient::connect(broker.addr, "pub").await;
        for topic_name in ["cafe\u{301}", "CAF\u{c9}", "A/b", "a/b/", "a//b"] {
            publisher
                .publish(topic_name, b"no", QoS::AtMostOnce, false, 0)
                .await;
        }
        assert!(publisher.ping_barrier().await.is_empty());
        assert!(subscriber.ping_barrier().await.is_empty());
        publisher
            .publish("caf\u{e9}", b"yes", QoS::AtMostOnce, false, 0)
            .await;
        assert_eq!(&subscriber.recv_publish().await.payload[..], b"yes");
    })
    .await;
}

// [MQTT-3.3.5-2] (v3.1.1): a PUBLISH the broker refuses (clients may not
// write the broker's $SYS tree) is acknowledged normally and not delivered.
#[tokio::test]
async fn refused_publish_is_acknowledged_and_dropped() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut subscriber = RawClient::connect(broker.addr, "sub").await;
        subscriber
            .subscribe(1, &[("$SYS/#", QoS::AtLeastOnce)])
            .await;
        let mut publisher = RawClient::connect(broker.addr, "pub").await;
        publisher
            .publish("$SYS/broker/uptime", b"forged", QoS::AtLeastOnce, true, 1)
            .await;
        assert!(subscriber.ping_barrier().await.is_empty());
        let mut later = RawClient::connect(broker.addr, "later").await;
        later
            .subscribe(1, &[("$SYS/broker/uptime", QoS::AtMostOnce)])
            .await;
        assert!(
            later.ping_barrier().await.is_empty(),
            "the forged message was retained"
        );
    })
    .await;
}
