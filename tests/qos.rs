//! QoS 0, 1 and 2 in both directions: acknowledgements, exactly-once
//! delivery, the delivered QoS, the in-flight window.

mod common;

use common::*;
use petrel::protocol::{Ack, Packet, Publish, QoS};

// [MQTT-3.3.4-1] [MQTT-4.3.2-2] [MQTT-2.3.1-6] (v3.1.1): QoS 1 is answered
// with PUBACK carrying the PUBLISH's packet id; QoS 0 with nothing.
#[tokio::test]
async fn qos1_publish_is_acknowledged_with_its_packet_id() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut client = RawClient::connect(broker.addr, "pub").await;
        client
            .send(&publish_packet(
                "t",
                b"x",
                QoS::AtLeastOnce,
                false,
                Some(0xABCD),
            ))
            .await;
        assert_eq!(client.recv().await, Packet::PubAck(Ack::new(id(0xABCD))));
        client
            .send(&publish_packet("t", b"x", QoS::AtMostOnce, false, None))
            .await;
        assert!(client.ping_barrier().await.is_empty());
    })
    .await;
}

// [MQTT-3.3.4-1] [MQTT-4.3.3-2] (v3.1.1): QoS 2 is answered PUBREC; PUBREL
// is answered PUBCOMP with the same id.
#[tokio::test]
async fn qos2_publish_flow() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut client = RawClient::connect(broker.addr, "pub").await;
        client
            .send(&publish_packet(
                "t",
                b"x",
                QoS::ExactlyOnce,
                false,
                Some(77),
            ))
            .await;
        assert_eq!(client.recv().await, Packet::PubRec(Ack::new(id(77))));
        client.send(&Packet::PubRel(Ack::new(id(77)))).await;
        assert_eq!(client.recv().await, Packet::PubComp(Ack::new(id(77))));
    })
    .await;
}

// [MQTT-4.3.3-2] (v3.1.1): a QoS 2 PUBLISH re-sent before PUBREL is
// acknowledged again but not delivered again; after PUBREL the same id is a
// new message.
#[tokio::test]
async fn qos2_duplicate_is_not_delivered_twice() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut subscriber = RawClient::connect(broker.addr, "sub").await;
        subscriber.subscribe(1, &[("t", QoS::ExactlyOnce)]).await;
        let mut publisher = RawClient::connect(broker.addr, "pub").await;
        publisher
            .send(&publish_packet(
                "t",
                b"once",
                QoS::ExactlyOnce,
                false,
                Some(5),
            ))
            .await;
        assert_eq!(publisher.recv().await, Packet::PubRec(Ack::new(id(5))));
        let Packet::Publish(mut again) =
            publish_packet("t", b"once", QoS::ExactlyOnce, false, Some(5))
        else {
            unreachable!()
        };
        again.dup = true;
        publisher.send(&Packet::Publish(again)).await;
        assert_eq!(publisher.recv().await, Packet::PubRec(Ack::new(id(5))));
        let first = subscriber.recv_publish().await;
        assert_eq!(&first.payload[..], b"once");
        acknowledge(&mut subscriber, &first).await;
        assert!(
            subscriber.ping_barrier().await.is_empty(),
            "delivered twice"
        );
        publisher.send(&Packet::PubRel(Ack::new(id(5)))).await;
        assert_eq!(publisher.recv().await, Packet::PubComp(Ack::new(id(5))));
        // The id is free again: a new PUBLISH with it is a new message.
        publisher
            .publish("t", b"new", QoS::ExactlyOnce, false, 5)
            .await;
        assert_eq!(&subscriber.recv_publish().await.payload[..], b"new");
    })
    .await;
}

// [MQTT-3.8.4-6] (v3.1.1): delivered QoS is min(published, granted).
// [MQTT-3.3.1-3] (v3.1.1): the outgoing DUP is the broker's own.
#[tokio::test]
async fn delivered_qos_is_the_minimum_of_published_and_granted() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut low = RawClient::connect(broker.addr, "low").await;
        low.subscribe(1, &[("t", QoS::AtLeastOnce)]).await;
        let mut high = RawClient::connect(broker.addr, "high").await;
        high.subscribe(1, &[("t", QoS::ExactlyOnce)]).await;
        let mut publisher = RawClient::connect(broker.addr, "pub").await;
        let Packet::Publish(mut publish) =
            publish_packet("t", b"2", QoS::ExactlyOnce, false, Some(1))
        else {
            unreachable!()
        };
        publish.dup = true;
        publisher.send(&Packet::Publish(publish)).await;
        assert_eq!(publisher.recv().await, Packet::PubRec(Ack::new(id(1))));
        publisher.send(&Packet::PubRel(Ack::new(id(1)))).await;
        assert_eq!(publisher.recv().await, Packet::PubComp(Ack::new(id(1))));
        let to_low = low.recv_publish().await;
        assert_eq!(to_low.qos, QoS::AtLeastOnce);
        assert!(!to_low.dup, "DUP is not copied from the incoming PUBLISH");
        let to_high = high.recv_publish().await;
        assert_eq!(to_high.qos, QoS::ExactlyOnce);
        assert!(!to_high.dup);
        publisher
            .publish("t", b"0", QoS::AtMostOnce, false, 0)
            .await;
        let zero = high.recv_publish().await;
        assert_eq!(zero.qos, QoS::AtMostOnce);
        assert_eq!(zero.packet_id, None);
    })
    .await;
}

// [MQTT-4.3.2-1] [MQTT-4.3.3-1] (v3.1.1): the broker's own QoS 1 and 2
// deliveries use fresh packet ids and complete their flows; QoS 0 goes out
// with DUP 0 [MQTT-4.3.1-1] (v3.1.1).
#[tokio::test]
async fn outbound_qos_flows_complete() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut subscriber = RawClient::connect(broker.addr, "sub").await;
        subscriber.subscribe(1, &[("t", QoS::ExactlyOnce)]).await;
        let mut publisher = RawClient::connect(broker.addr, "pub").await;
        publisher
            .publish("t", b"0", QoS::AtMostOnce, false, 0)
            .await;
        publisher
            .publish("t", b"1", QoS::AtLeastOnce, false, 1)
            .await;
        publisher
            .publish("t", b"2", QoS::ExactlyOnce, false, 2)
            .await;
        let zero = subscriber.recv_publish().await;
        assert_eq!(
            (zero.qos, zero.dup, zero.packet_id),
            (QoS::AtMostOnce, false, None)
        );
        let one = subscriber.recv_publish().await;
        let two = subscriber.recv_publish().await;
        assert_eq!((one.qos, one.dup), (QoS::AtLeastOnce, false));
        assert_eq!((two.qos, two.dup), (QoS::ExactlyOnce, false));
        assert_ne!(one.packet_id, two.packet_id, "ids in flight are distinct");
        acknowledge(&mut subscriber, &one).await;
        acknowledge(&mut subscriber, &two).await;
        assert!(subscriber.ping_barrier().await.is_empty());
    })
    .await;
}

// max_inflight: at most that many unacknowledged QoS 1/2 messages are
// outstanding; the rest wait in order and follow as acknowledgements come.
#[tokio::test]
async fn inflight_window_limits_unacknowledged_deliveries() {
    timed(async {
        let config = petrel::Config {
            max_inflight: 2,
            ..test_config()
        };
        let broker = TestBroker::with_config(config).await;
        let mut subscriber = RawClient::connect(broker.addr, "sub").await;
        subscriber.subscribe(1, &[("t", QoS::AtLeastOnce)]).await;
        let mut publisher = RawClient::connect(broker.addr, "pub").await;
        for index in 0..5u16 {
            publisher
                .publish(
                    "t",
                    &[b'a' + index as u8],
                    QoS::AtLeastOnce,
                    false,
                    index + 1,
                )
                .await;
        }
        let first = subscriber.recv_publish().await;
        let second = subscriber.recv_publish().await;
        assert_eq!((first.payload[0], second.payload[0]), (b'a', b'b'));
        assert!(
            subscriber.ping_barrier().await.is_empty(),
            "window exceeded"
        );
        let mut received: Vec<Publish> = vec![first, second];
        let mut next = 2;
        while next < 5 {
            let oldest = received.remove(0);
            acknowledge(&mut subscriber, &oldest).await;
            let publish = subscriber.recv_publish().await;
            assert_eq!(publish.payload[0], b'a' + next as u8);
            received.push(publish);
            next += 1;
        }
        for publish in received {
            acknowledge(&mut subscriber, &publish).await;
        }
        assert!(subscriber.ping_barrier().await.is_empty());
    })
    .await;
}

// [MQTT-3.10.4-3] (v3.1.1): a QoS 2 delivery started before UNSUBSCRIBE is
// still completed.
#[tokio::test]
async fn delivery_started_before_unsubscribe_completes() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut subscriber = RawClient::connect(broker.addr, "sub").await;
        subscriber.subscribe(1, &[("t", QoS::ExactlyOnce)]).await;
        let mut publisher = RawClient::connect(broker.addr, "pub").await;
        publisher
            .publish("t", b"x", QoS::ExactlyOnce, false, 1)
            .await;
        let publish = subscriber.recv_publish().await;
        subscriber.send(&unsubscribe_packet(2, &["t"])).await;
        assert!(matches!(subscriber.recv().await, Packet::UnsubAck(_)));
        acknowledge(&mut subscriber, &publish).await;
        assert!(subscriber.ping_barrier().await.is_empty());
    })
    .await;
}
