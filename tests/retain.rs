//! Retained messages: stored, replaced, cleared, delivered to new
//! subscriptions with RETAIN set, bounded.

mod common;

use common::*;
use petrel::protocol::QoS;

// [MQTT-3.3.1-5] [MQTT-3.3.1-6] [MQTT-3.3.1-8] (v3.1.1): a retained
// message is stored with its QoS and sent to a new matching subscription
// with RETAIN set.
#[tokio::test]
async fn retained_message_reaches_a_later_subscriber() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut publisher = RawClient::connect(broker.addr, "pub").await;
        publisher
            .publish("home/light", b"on", QoS::AtLeastOnce, true, 1)
            .await;
        let mut subscriber = RawClient::connect(broker.addr, "sub").await;
        subscriber
            .subscribe(1, &[("home/+", QoS::ExactlyOnce)])
            .await;
        let publish = subscriber.recv_publish().await;
        assert!(publish.retain);
        assert_eq!(publish.topic.as_str(), "home/light");
        assert_eq!(&publish.payload[..], b"on");
        assert_eq!(publish.qos, QoS::AtLeastOnce);
    })
    .await;
}

// [MQTT-3.3.1-9] (v3.1.1): a retained PUBLISH forwarded to an existing
// subscription goes out with RETAIN 0.
#[tokio::test]
async fn live_fan_out_clears_the_retain_flag() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut subscriber = RawClient::connect(broker.addr, "sub").await;
        subscriber.subscribe(1, &[("t", QoS::AtMostOnce)]).await;
        let mut publisher = RawClient::connect(broker.addr, "pub").await;
        publisher.publish("t", b"r", QoS::AtMostOnce, true, 0).await;
        let publish = subscriber.recv_publish().await;
        assert!(!publish.retain);
    })
    .await;
}

// [MQTT-3.3.1-7] (v3.1.1): a newer retained message (QoS 0 too) replaces
// the old one.
#[tokio::test]
async fn retained_message_is_replaced() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut publisher = RawClient::connect(broker.addr, "pub").await;
        publisher
            .publish("t", b"old", QoS::AtLeastOnce, true, 1)
            .await;
        publisher
            .publish("t", b"new", QoS::AtMostOnce, true, 0)
            .await;
        assert!(publisher.ping_barrier().await.is_empty());
        let mut subscriber = RawClient::connect(broker.addr, "sub").await;
        subscriber.subscribe(1, &[("t", QoS::AtLeastOnce)]).await;
        let publish = subscriber.recv_publish().await;
        assert_eq!(&publish.payload[..], b"new");
        assert_eq!(publish.qos, QoS::AtMostOnce);
        assert!(subscriber.ping_barrier().await.is_empty());
    })
    .await;
}

// [MQTT-3.3.1-10] [MQTT-3.3.1-11] (v3.1.1): a retained empty payload is
// forwarded but deletes the retained message, and is not stored itself.
#[tokio::test]
async fn empty_retained_payload_clears_and_is_not_stored() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut live = RawClient::connect(broker.addr, "live").await;
        live.subscribe(1, &[("t", QoS::AtMostOnce)]).await;
        let mut publisher = RawClient::connect(broker.addr, "pub").await;
        publisher
            .publish("t", b"value", QoS::AtMostOnce, true, 0)
            .await;
        assert_eq!(&live.recv_publish().await.payload[..], b"value");
        publisher.publish("t", b"", QoS::AtMostOnce, true, 0).await;
        let cleared = live.recv_publish().await;
        assert!(cleared.payload.is_empty(), "the empty message is forwarded");
        let mut later = RawClient::connect(broker.addr, "later").await;
        later.subscribe(1, &[("t", QoS::AtMostOnce)]).await;
        assert!(later.ping_barrier().await.is_empty());
        assert_eq!(broker.broker.metrics().retained_dropped.get(), 0);
    })
    .await;
}

// [MQTT-3.3.1-12] (v3.1.1): RETAIN 0 neither stores nor clears.
// [MQTT-3.1.2-7] (v3.1.1): retained messages outlive the session that
// published them.
#[tokio::test]
async fn non_retained_publish_leaves_the_retained_message_alone() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut publisher = RawClient::connect(broker.addr, "pub").await;
        publisher
            .publish("t", b"kept", QoS::AtMostOnce, true, 0)
            .await;
        publisher.publish("t", b"", QoS::AtMostOnce, false, 0).await;
        publisher
            .publish("t", b"live", QoS::AtMostOnce, false, 0)
            .await;
        publisher.disconnect().await;
        let mut subscriber = RawClient::connect(broker.addr, "sub").await;
        subscriber.subscribe(1, &[("t", QoS::AtMostOnce)]).await;
        assert_eq!(&subscriber.recv_publish().await.payload[..], b"kept");
    })
    .await;
}

// [MQTT-3.8.4-3] (v3.1.1): subscribing again to the same filter replaces
// the subscription and sends the retained messages again.
#[tokio::test]
async fn resubscribing_resends_retained_messages() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut publisher = RawClient::connect(broker.addr, "pub").await;
        publisher
            .publish("t", b"r", QoS::AtLeastOnce, true, 1)
            .await;
        let mut subscriber = RawClient::connect(broker.addr, "sub").await;
        subscriber.subscribe(1, &[("t", QoS::AtMostOnce)]).await;
        assert_eq!(subscriber.recv_publish().await.qos, QoS::AtMostOnce);
        subscriber.subscribe(2, &[("t", QoS::AtLeastOnce)]).await;
        let again = subscriber.recv_publish().await;
        assert!(again.retain);
        assert_eq!(
            again.qos,
            QoS::AtLeastOnce,
            "the new subscription's QoS applies"
        );
        acknowledge(&mut subscriber, &again).await;
        // Still one subscription: a live message arrives once.
        publisher
            .publish("t", b"live", QoS::AtMostOnce, false, 0)
            .await;
        assert_eq!(&subscriber.recv_publish().await.payload[..], b"live");
        assert!(subscriber.ping_barrier().await.is_empty());
    })
    .await;
}

// max_retained_messages: new topics beyond the bound are not retained (but
// still delivered live) and are counted; replacing an existing one works.
#[tokio::test]
async fn retained_store_is_bounded() {
    timed(async {
        let config = petrel::Config {
            max_retained_messages: 2,
            ..test_config()
        };
        let broker = TestBroker::with_config(config).await;
        let mut publisher = RawClient::connect(broker.addr, "pub").await;
        for topic_name in ["a", "b", "c"] {
            publisher
                .publish(topic_name, b"1", QoS::AtLeastOnce, true, 1)
                .await;
        }
        publisher
            .publish("a", b"2", QoS::AtLeastOnce, true, 1)
            .await;
        assert_eq!(broker.broker.metrics().retained_dropped.get(), 1);
        let mut subscriber = RawClient::connect(broker.addr, "sub").await;
        subscriber.subscribe(1, &[("#", QoS::AtMostOnce)]).await;
        let mut received = [
            subscriber.recv_publish().await,
            subscriber.recv_publish().await,
        ];
        received.sort_by(|x, y| x.topic.cmp(&y.topic));
        assert_eq!(received[0].topic.as_str(), "a");
        assert_eq!(&received[0].payload[..], b"2");
        assert_eq!(received[1].topic.as_str(), "b");
        assert!(subscriber.ping_barrier().await.is_empty());
    })
    .await;
}

// max_retained_bytes bounds the payload bytes of all retained messages.
#[tokio::test]
async fn retained_store_is_bounded_by_bytes() {
    timed(async {
        let config = petrel::Config {
            max_retained_bytes: 10,
            ..test_config()
        };
        let broker = TestBroker::with_config(config).await;
        let mut publisher = RawClient::connect(broker.addr, "pub").await;
        publisher
            .publish("a", b"12345678", QoS::AtLeastOnce, true, 1)
            .await;
        publisher
            .publish("b", b"12345678", QoS::AtLeastOnce, true, 2)
            .await;
        assert_eq!(broker.broker.metrics().retained_dropped.get(), 1);
        publisher
            .publish("a", b"123456789", QoS::AtLeastOnce, true, 3)
            .await;
        assert_eq!(broker.broker.metrics().retained_dropped.get(), 1);
        let mut subscriber = RawClient::connect(broker.addr, "sub").await;
        subscriber.subscribe(1, &[("#", QoS::AtMostOnce)]).await;
        let publish = subscriber.recv_publish().await;
        assert_eq!(
            (publish.topic.as_str(), &publish.payload[..]),
            ("a", &b"123456789"[..])
        );
        assert!(subscriber.ping_barrier().await.is_empty());
    })
    .await;
}

// [MQTT-3.8.4-4] (v3.1.1): a filter repeated within one SUBSCRIBE is one
// subscription (the last options win): every filter gets a return code,
// and retained messages are sent once.
#[tokio::test]
async fn repeated_filter_in_one_subscribe_is_one_subscription() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut publisher = RawClient::connect(broker.addr, "pub").await;
        publisher
            .publish("t", b"r", QoS::AtLeastOnce, true, 1)
            .await;
        let mut subscriber = RawClient::connect(broker.addr, "sub").await;
        let codes = subscriber
            .subscribe(
                1,
                &[
                    ("t", QoS::AtMostOnce),
                    ("t", QoS::AtLeastOnce),
                    ("t", QoS::AtLeastOnce),
                ],
            )
            .await;
        assert_eq!(codes.len(), 3);
        let publish = subscriber.recv_publish().await;
        assert_eq!(publish.qos, QoS::AtLeastOnce);
        acknowledge(&mut subscriber, &publish).await;
        assert!(subscriber.ping_barrier().await.is_empty());
    })
    .await;
}

// Retained messages sent on subscribe are bounded by max_queued_messages;
// the excess is dropped and counted.
#[tokio::test]
async fn retained_messages_on_subscribe_are_bounded() {
    timed(async {
        let config = petrel::Config {
            max_queued_messages: 3,
            ..test_config()
        };
        let broker = TestBroker::with_config(config).await;
        let mut publisher = RawClient::connect(broker.addr, "pub").await;
        for index in 0..5u16 {
            publisher
                .publish(&format!("r/{index}"), b"x", QoS::AtMostOnce, true, 0)
                .await;
        }
        assert!(publisher.ping_barrier().await.is_empty());
        let mut subscriber = RawClient::connect(broker.addr, "sub").await;
        subscriber.subscribe(1, &[("r/#", QoS::AtMostOnce)]).await;
        for _ in 0..3 {
            assert!(subscriber.recv_publish().await.retain);
        }
        assert!(subscriber.ping_barrier().await.is_empty());
        assert_eq!(broker.broker.metrics().messages_dropped.get(), 2);
    })
    .await;
}
