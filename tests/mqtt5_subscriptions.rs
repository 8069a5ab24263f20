//! MQTT 5 subscriptions: No Local, Retain As Published, Retain Handling,
//! Subscription Identifiers, shared subscriptions, and per-filter SUBACK
//! and UNSUBACK reason codes.

mod common;

use std::num::NonZeroU32;

use common::*;
use petrel::config::SharedStrategy;
use petrel::protocol::{Ack, Packet, QoS, ReasonCode, RetainHandling, SubscriptionOptions};

// [MQTT-3.8.3-3] (v5.0): with No Local a client's own messages do not come
// back to it; without, they do.
#[tokio::test]
async fn no_local_keeps_own_messages_away() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut client = RawClient::connect_v5(broker.addr, "echo").await;
        let no_local = SubscriptionOptions {
            no_local: true,
            ..options(QoS::AtMostOnce)
        };
        client
            .subscribe_with(1, &[("chat/quiet", no_local)], None)
            .await;
        client
            .subscribe_with(2, &[("chat/loud", options(QoS::AtMostOnce))], None)
            .await;
        client
            .publish("chat/quiet", b"q", QoS::AtMostOnce, false, 0)
            .await;
        client
            .publish("chat/loud", b"l", QoS::AtMostOnce, false, 0)
            .await;
        let echoed = client.recv_publish().await;
        assert_eq!(echoed.topic.as_str(), "chat/loud");
        assert!(client.ping_barrier().await.is_empty());
        // Another client publishing to the No Local filter still gets through.
        let mut other = RawClient::connect_v5(broker.addr, "other").await;
        other
            .publish("chat/quiet", b"o", QoS::AtMostOnce, false, 0)
            .await;
        assert_eq!(client.recv_publish().await.topic.as_str(), "chat/quiet");
    })
    .await;
}

// [MQTT-3.3.1-12] [MQTT-3.3.1-13] (v5.0): Retain As Published keeps the
// RETAIN flag of a forwarded message; without it the flag is cleared.
#[tokio::test]
async fn retain_as_published() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut keeps = RawClient::connect_v5(broker.addr, "keeps").await;
        let rap = SubscriptionOptions {
            retain_as_published: true,
            ..options(QoS::AtMostOnce)
        };
        keeps.subscribe_with(1, &[("state", rap)], None).await;
        let mut clears = RawClient::connect_v5(broker.addr, "clears").await;
        clears.subscribe(1, &[("state", QoS::AtMostOnce)]).await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        publisher
            .publish("state", b"on", QoS::AtMostOnce, true, 0)
            .await;
        assert!(keeps.recv_publish().await.retain);
        assert!(!clears.recv_publish().await.retain);
    })
    .await;
}

fn handling(retain_handling: RetainHandling) -> SubscriptionOptions {
    SubscriptionOptions {
        retain_handling,
        ..options(QoS::AtMostOnce)
    }
}

// [MQTT-3.3.1-9] [MQTT-3.3.1-10] [MQTT-3.3.1-11] [MQTT-3.8.4-4] (v5.0):
// Retain Handling 0 sends retained messages on every SUBSCRIBE, 1 only
// for a new subscription, 2 never.
#[tokio::test]
async fn retain_handling_0_1_2() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        publisher
            .publish("kept", b"v", QoS::AtMostOnce, true, 0)
            .await;
        let mut client = RawClient::connect_v5(broker.addr, "sub").await;
        for (packet_id, retain_handling, expected) in [
            (1, RetainHandling::SendOnSubscribe, true),
            (2, RetainHandling::SendOnSubscribe, true),
            (3, RetainHandling::SendIfNew, false),
            (4, RetainHandling::DoNotSend, false),
        ] {
            client
                .subscribe_with(packet_id, &[("kept", handling(retain_handling))], None)
                .await;
            let sent = client.ping_barrier().await;
            assert_eq!(
                sent.len(),
                usize::from(expected),
                "{retain_handling:?}: {sent:?}"
            );
        }
        let mut fresh = RawClient::connect_v5(broker.addr, "fresh").await;
        fresh
            .subscribe_with(1, &[("kept", handling(RetainHandling::SendIfNew))], None)
            .await;
        assert!(fresh.recv_publish().await.retain);
        let mut never = RawClient::connect_v5(broker.addr, "never").await;
        never
            .subscribe_with(1, &[("kept", handling(RetainHandling::DoNotSend))], None)
            .await;
        assert!(never.ping_barrier().await.is_empty());
    })
    .await;
}

// [MQTT-3.3.4-2] [MQTT-3.3.4-3] [MQTT-3.3.4-4] (v5.0): overlapping
// subscriptions of one client give one copy, at the highest granted QoS,
// carrying every matching Subscription Identifier; retained messages sent
// on subscribe carry the subscription's identifier.
#[tokio::test]
async fn overlapping_subscriptions_give_one_copy_with_every_identifier() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        publisher
            .publish("home/kitchen", b"r", QoS::AtMostOnce, true, 0)
            .await;
        let mut client = RawClient::connect_v5(broker.addr, "sub").await;
        client
            .subscribe_with(1, &[("home/+", options(QoS::AtMostOnce))], Some(7))
            .await;
        let retained = client.recv_publish().await;
        assert_eq!(
            retained.properties.subscription_identifiers,
            vec![NonZeroU32::new(7).unwrap()]
        );
        client
            .subscribe_with(2, &[("home/#", options(QoS::AtLeastOnce))], Some(9))
            .await;
        client.recv_publish().await;
        client
            .subscribe_with(3, &[("home/kitchen", options(QoS::AtMostOnce))], None)
            .await;
        client.recv_publish().await;
        publisher
            .publish("home/kitchen", b"live", QoS::AtLeastOnce, false, 1)
            .await;
        let publish = client.recv_publish().await;
        assert_eq!(&publish.payload[..], b"live");
        assert_eq!(publish.qos, QoS::AtLeastOnce);
        let mut identifiers: Vec<u32> = publish
            .properties
            .subscription_identifiers
            .iter()
            .map(|id| id.get())
            .collect();
        identifiers.sort();
        assert_eq!(identifiers, vec![7, 9]);
        acknowledge(&mut client, &publish).await;
        assert!(client.ping_barrier().await.is_empty(), "one copy only");
    })
    .await;
}

async fn shared_broker(strategy: SharedStrategy) -> TestBroker {
    TestBroker::with_config(petrel::Config {
        shared_subscription_strategy: strategy,
        ..test_config()
    })
    .await
}

/// Receives PUBLISH packets until a PINGRESP shows there are no more.
async fn drain(client: &mut RawClient) -> Vec<petrel::protocol::Publish> {
    let mut received = Vec::new();
    for packet in client.ping_barrier().await {
        match packet {
            Packet::Publish(publish) => received.push(publish),
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    received
}

// 4.8.2 (v5.0): each message on a shared subscription goes to one member;
// round robin spreads them evenly, across a 5.0 and a 3.1.1 member; a
// plain subscriber to the same filter still gets every one.
#[tokio::test]
async fn shared_subscription_round_robin_spreads_messages() {
    timed(async {
        let broker = shared_broker(SharedStrategy::RoundRobin).await;
        let mut a = RawClient::connect_v5(broker.addr, "member-a").await;
        a.subscribe(1, &[("$share/workers/jobs/+", QoS::AtMostOnce)])
            .await;
        let mut b = RawClient::connect(broker.addr, "member-b").await;
        b.subscribe(1, &[("$share/workers/jobs/+", QoS::AtMostOnce)])
            .await;
        let mut watcher = RawClient::connect_v5(broker.addr, "watcher").await;
        watcher.subscribe(1, &[("jobs/+", QoS::AtMostOnce)]).await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        for n in 0..10u8 {
            publisher
                .publish("jobs/x", &[n], QoS::AtMostOnce, false, 0)
                .await;
        }
        publisher.ping_barrier().await;
        assert_eq!(drain(&mut watcher).await.len(), 10);
        let (got_a, got_b) = (drain(&mut a).await, drain(&mut b).await);
        assert_eq!((got_a.len(), got_b.len()), (5, 5));
        let mut all: Vec<u8> = got_a.iter().chain(&got_b).map(|p| p.payload[0]).collect();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<u8>>());
    })
    .await;
}

// 4.8.2 (v5.0): the sticky strategy keeps giving messages to one member
// while it is connected, and moves on when it leaves; random gives every
// message to exactly one member.
#[tokio::test]
async fn shared_subscription_sticky_and_random() {
    timed(async {
        let broker = shared_broker(SharedStrategy::Sticky).await;
        let mut a = RawClient::connect_v5(broker.addr, "a").await;
        a.subscribe(1, &[("$share/g/t", QoS::AtMostOnce)]).await;
        let mut b = RawClient::connect_v5(broker.addr, "b").await;
        b.subscribe(1, &[("$share/g/t", QoS::AtMostOnce)]).await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        for n in 0..6u8 {
            publisher
                .publish("t", &[n], QoS::AtMostOnce, false, 0)
                .await;
        }
        publisher.ping_barrier().await;
        let counts = (drain(&mut a).await.len(), drain(&mut b).await.len());
        assert!(counts == (6, 0) || counts == (0, 6), "{counts:?}");

        let broker = shared_broker(SharedStrategy::Random).await;
        let mut members = Vec::new();
        for name in ["r1", "r2", "r3"] {
            let mut member = RawClient::connect_v5(broker.addr, name).await;
            member
                .subscribe(1, &[("$share/g/t", QoS::AtMostOnce)])
                .await;
            members.push(member);
        }
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        for n in 0..30u8 {
            publisher
                .publish("t", &[n], QoS::AtMostOnce, false, 0)
                .await;
        }
        publisher.ping_barrier().await;
        let mut total = 0;
        for member in &mut members {
            total += drain(member).await.len();
        }
        assert_eq!(total, 30);
    })
    .await;
}

// 4.8.2 (v5.0): retained messages are not sent on a shared subscription.
#[tokio::test]
async fn no_retained_messages_on_shared_subscriptions() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        publisher
            .publish("cfg", b"r", QoS::AtMostOnce, true, 0)
            .await;
        let mut member = RawClient::connect_v5(broker.addr, "member").await;
        member
            .subscribe(1, &[("$share/g/cfg", QoS::AtMostOnce)])
            .await;
        assert!(member.ping_barrier().await.is_empty());
    })
    .await;
}

// 4.8.2 (v5.0): a QoS 1 message sent to a member that leaves without
// acknowledging it goes to another member. [MQTT-4.8.2-3] (v5.0): each
// member gets it at the QoS it was granted.
#[tokio::test]
async fn unacknowledged_shared_message_goes_to_another_member() {
    timed(async {
        let broker = shared_broker(SharedStrategy::Sticky).await;
        let mut first = RawClient::connect_v5(broker.addr, "first").await;
        first
            .subscribe(1, &[("$share/g/orders", QoS::AtLeastOnce)])
            .await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        publisher
            .publish("orders", b"o1", QoS::AtLeastOnce, false, 1)
            .await;
        let taken = first.recv_publish().await;
        assert_eq!(taken.qos, QoS::AtLeastOnce);
        let mut second = RawClient::connect(broker.addr, "second").await;
        second
            .subscribe(1, &[("$share/g/orders", QoS::AtLeastOnce)])
            .await;
        // "first" leaves without PUBACK.
        drop(first);
        let publish = second.recv_publish().await;
        assert_eq!(&publish.payload[..], b"o1");
        assert_eq!(publish.qos, QoS::AtLeastOnce);
        second
            .send(&Packet::PubAck(Ack::new(publish.packet_id.expect("id"))))
            .await;
        assert!(second.ping_barrier().await.is_empty());
    })
    .await;
}

// [MQTT-3.8.3-4] (v5.0): No Local on a shared subscription is a Protocol
// Error.
#[tokio::test]
async fn no_local_on_a_shared_subscription_is_a_protocol_error() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut client = RawClient::connect_v5(broker.addr, "nl").await;
        let no_local = SubscriptionOptions {
            no_local: true,
            ..options(QoS::AtMostOnce)
        };
        client
            .send(&Packet::Subscribe(petrel::protocol::Subscribe {
                packet_id: id(1),
                filters: vec![(filter("$share/g/t"), no_local)],
                properties: Default::default(),
            }))
            .await;
        client.expect_disconnect(ReasonCode::ProtocolError).await;
    })
    .await;
}

// [MQTT-3.8.4-6] [MQTT-3.9.3-1] [MQTT-3.9.3-2] [MQTT-4.8.2-1]
// [MQTT-4.8.2-2] (v5.0): one reason code per filter, in order: a bad
// share name is 0x8F; features turned off are 0x9E, 0xA1, 0xA2.
#[tokio::test]
async fn suback_reason_codes_per_filter() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut client = RawClient::connect_v5(broker.addr, "codes").await;
        let codes = client
            .subscribe_with(
                1,
                &[
                    ("ok/+", options(QoS::AtLeastOnce)),
                    ("$share/g", options(QoS::AtMostOnce)),
                    ("$share/g/ok", options(QoS::ExactlyOnce)),
                ],
                None,
            )
            .await;
        assert_eq!(
            codes,
            vec![
                ReasonCode::GrantedQoS1,
                ReasonCode::TopicFilterInvalid,
                ReasonCode::GrantedQoS2
            ]
        );
        let broker = TestBroker::with_config(petrel::Config {
            shared_subscriptions: false,
            wildcard_subscriptions: false,
            subscription_identifiers: false,
            ..test_config()
        })
        .await;
        let (mut client, connack) =
            RawClient::connect_v5_with(broker.addr, "off", Default::default()).await;
        assert_eq!(
            connack.properties.shared_subscription_available,
            Some(false)
        );
        assert_eq!(
            connack.properties.wildcard_subscription_available,
            Some(false)
        );
        assert_eq!(
            connack.properties.subscription_identifier_available,
            Some(false)
        );
        let codes = client
            .subscribe_with(
                1,
                &[
                    ("plain", options(QoS::AtMostOnce)),
                    ("$share/g/t", options(QoS::AtMostOnce)),
                    ("wild/#", options(QoS::AtMostOnce)),
                ],
                None,
            )
            .await;
        assert_eq!(
            codes,
            vec![
                ReasonCode::GRANTED_QOS_0,
                ReasonCode::SharedSubscriptionsNotSupported,
                ReasonCode::WildcardSubscriptionsNotSupported
            ]
        );
        let codes = client
            .subscribe_with(2, &[("plain", options(QoS::AtMostOnce))], Some(3))
            .await;
        assert_eq!(codes, vec![ReasonCode::SubscriptionIdentifiersNotSupported]);
    })
    .await;
}

// [MQTT-3.11.3-1] [MQTT-3.11.3-2] (v5.0): UNSUBACK has one code per filter
// in order: 0x00, or 0x11 No subscription existed; a shared membership is
// removed like any subscription.
#[tokio::test]
async fn unsuback_reason_codes_per_filter() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut client = RawClient::connect_v5(broker.addr, "unsub").await;
        client
            .subscribe(
                1,
                &[("a", QoS::AtMostOnce), ("$share/g/b", QoS::AtMostOnce)],
            )
            .await;
        client
            .send(&unsubscribe_packet(2, &["a", "never", "$share/g/b"]))
            .await;
        match client.recv().await {
            Packet::UnsubAck(unsuback) => assert_eq!(
                unsuback.reason_codes,
                vec![
                    ReasonCode::Success,
                    ReasonCode::NoSubscriptionExisted,
                    ReasonCode::Success
                ]
            ),
            other => panic!("expected UNSUBACK, got {other:?}"),
        }
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        publisher
            .publish("b", b"x", QoS::AtMostOnce, false, 0)
            .await;
        assert!(client.ping_barrier().await.is_empty());
    })
    .await;
}

// 3.9.3 (v5.0): a subscription beyond max_subscriptions_per_client is
// refused with 0x97 Quota exceeded (0x80 at 3.1.1) and counted; replacing
// an existing one is still allowed.
#[tokio::test]
async fn subscription_quota() {
    timed(async {
        let broker = TestBroker::with_config(petrel::Config {
            max_subscriptions_per_client: 2,
            ..test_config()
        })
        .await;
        let mut client = RawClient::connect_v5(broker.addr, "greedy").await;
        let codes = client
            .subscribe(
                1,
                &[
                    ("a", QoS::AtMostOnce),
                    ("b", QoS::AtMostOnce),
                    ("c", QoS::AtMostOnce),
                ],
            )
            .await;
        assert_eq!(
            codes,
            vec![
                ReasonCode::GRANTED_QOS_0,
                ReasonCode::GRANTED_QOS_0,
                ReasonCode::QuotaExceeded
            ]
        );
        assert_eq!(
            client.subscribe(2, &[("a", QoS::AtLeastOnce)]).await,
            vec![ReasonCode::GrantedQoS1]
        );
        let mut old = RawClient::connect(broker.addr, "greedy-3").await;
        let codes = old
            .subscribe(
                1,
                &[
                    ("a", QoS::AtMostOnce),
                    ("b", QoS::AtMostOnce),
                    ("c", QoS::AtMostOnce),
                ],
            )
            .await;
        assert_eq!(codes[2], ReasonCode::UnspecifiedError);
        assert_eq!(broker.broker.metrics().subscriptions_refused.get(), 2);
    })
    .await;
}

// 4.8.2 (v5.0): each shared group delivers its own copy: a client that is
// a member of two groups matching the topic gets one copy from each.
#[tokio::test]
async fn two_groups_two_copies() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut member = RawClient::connect_v5(broker.addr, "in-two-groups").await;
        member
            .subscribe(
                1,
                &[
                    ("$share/g/jobs/+", QoS::AtMostOnce),
                    ("$share/h/jobs/#", QoS::AtMostOnce),
                ],
            )
            .await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        publisher
            .publish("jobs/a", b"x", QoS::AtMostOnce, false, 0)
            .await;
        publisher.ping_barrier().await;
        assert_eq!(drain(&mut member).await.len(), 2);
    })
    .await;
}
