//! Sessions: clean and persistent, offline queueing and its bounds,
//! redelivery after reconnect, and takeover (also under concurrency).

mod common;

use std::sync::Arc;

use common::*;
use petrel::protocol::{Ack, Packet, QoS, ReasonCode};

async fn persistent(addr: std::net::SocketAddr, client_id: &str) -> (RawClient, bool) {
    let (client, connack) =
        RawClient::connect_with(addr, connect_packet(client_id, false, 0)).await;
    assert_eq!(connack.reason_code, ReasonCode::Success);
    (client, connack.session_present)
}

/// A persistent session "device" subscribed to "t" at `qos`, then
/// disconnected: what arrives on "t" from now on is queued for it.
async fn subscribed_then_offline(addr: std::net::SocketAddr, qos: QoS) {
    let (mut subscriber, _) = persistent(addr, "device").await;
    subscriber.subscribe(1, &[("t", qos)]).await;
    subscriber.disconnect().await;
}

// [MQTT-3.1.2-4] [MQTT-3.1.2-5] [MQTT-3.2.2-2] [MQTT-3.2.2-3] [MQTT-3.1.3-2]
// [MQTT-4.1.0-1] [MQTT-4.5.0-1] (v3.1.1): a persistent session keeps its
// subscriptions and queues QoS 1/2 messages while offline; session present
// tells the truth.
#[tokio::test]
async fn persistent_session_queues_while_offline() {
    timed(async {
        let broker = TestBroker::start().await;
        let (mut subscriber, present) = persistent(broker.addr, "device").await;
        assert!(!present);
        subscriber
            .subscribe(1, &[("cmd/#", QoS::ExactlyOnce)])
            .await;
        subscriber.disconnect().await;
        let mut publisher = RawClient::connect(broker.addr, "app").await;
        publisher
            .publish("cmd/1", b"one", QoS::AtLeastOnce, false, 1)
            .await;
        publisher
            .publish("cmd/2", b"two", QoS::ExactlyOnce, false, 2)
            .await;
        publisher
            .publish("cmd/3", b"zero", QoS::AtMostOnce, false, 0)
            .await;
        let (mut subscriber, present) = persistent(broker.addr, "device").await;
        assert!(present);
        let first = subscriber.recv_publish().await;
        assert_eq!(
            (&first.payload[..], first.qos),
            (&b"one"[..], QoS::AtLeastOnce)
        );
        acknowledge(&mut subscriber, &first).await;
        let second = subscriber.recv_publish().await;
        assert_eq!(
            (&second.payload[..], second.qos),
            (&b"two"[..], QoS::ExactlyOnce)
        );
        acknowledge(&mut subscriber, &second).await;
        // QoS 0 is not queued for an offline session by default.
        assert!(subscriber.ping_barrier().await.is_empty());
        // The subscription is still there for live messages.
        publisher
            .publish("cmd/4", b"live", QoS::AtLeastOnce, false, 4)
            .await;
        assert_eq!(&subscriber.recv_publish().await.payload[..], b"live");
    })
    .await;
}

// queue_qos0 = true also queues QoS 0 for offline sessions.
#[tokio::test]
async fn queue_qos0_keeps_qos0_for_offline_sessions() {
    timed(async {
        let config = petrel::Config {
            queue_qos0: true,
            ..test_config()
        };
        let broker = TestBroker::with_config(config).await;
        subscribed_then_offline(broker.addr, QoS::AtMostOnce).await;
        let mut publisher = RawClient::connect(broker.addr, "app").await;
        publisher
            .publish("t", b"kept", QoS::AtMostOnce, false, 0)
            .await;
        assert!(publisher.ping_barrier().await.is_empty());
        let (mut subscriber, present) = persistent(broker.addr, "device").await;
        assert!(present);
        assert_eq!(&subscriber.recv_publish().await.payload[..], b"kept");
    })
    .await;
}

// [MQTT-3.1.2-6] [MQTT-3.2.2-1] [MQTT-3.1.4-3] (v3.1.1): clean session 1
// discards the stored session: no session present, no subscriptions, no
// queued messages.
#[tokio::test]
async fn clean_session_discards_the_previous_session() {
    timed(async {
        let broker = TestBroker::start().await;
        subscribed_then_offline(broker.addr, QoS::AtLeastOnce).await;
        let mut publisher = RawClient::connect(broker.addr, "app").await;
        publisher
            .publish("t", b"queued", QoS::AtLeastOnce, false, 1)
            .await;
        let (mut clean, connack) =
            RawClient::connect_with(broker.addr, connect_packet("device", true, 0)).await;
        assert!(!connack.session_present);
        assert!(
            clean.ping_barrier().await.is_empty(),
            "queued message survived clean session"
        );
        publisher
            .publish("t", b"live", QoS::AtLeastOnce, false, 2)
            .await;
        assert!(
            clean.ping_barrier().await.is_empty(),
            "subscription survived clean session"
        );
        clean.disconnect().await;
        // A clean session is not kept after it ends either.
        let (_again, present) = persistent(broker.addr, "device").await;
        assert!(!present);
    })
    .await;
}

// [MQTT-4.4.0-1] [MQTT-3.3.1-1] [MQTT-4.3.2-1] (v3.1.1): unacknowledged
// messages are re-sent on reconnect, first, with DUP set, their original
// packet ids, in their original order.
#[tokio::test]
async fn unacknowledged_messages_are_resent_with_dup_in_order() {
    timed(async {
        let broker = TestBroker::start().await;
        let (mut subscriber, _) = persistent(broker.addr, "device").await;
        subscriber.subscribe(1, &[("t", QoS::AtLeastOnce)]).await;
        let mut publisher = RawClient::connect(broker.addr, "app").await;
        for index in 0..3u16 {
            publisher
                .publish(
                    "t",
                    &[b'0' + index as u8],
                    QoS::AtLeastOnce,
                    false,
                    index + 1,
                )
                .await;
        }
        let mut first_ids = Vec::new();
        for index in 0..3u8 {
            let publish = subscriber.recv_publish().await;
            assert!(!publish.dup);
            assert_eq!(publish.payload[..], [b'0' + index]);
            first_ids.push(publish.packet_id);
        }
        // Acknowledge nothing; drop the connection without DISCONNECT.
        drop(subscriber);
        eventually("the session to be parked", || {
            broker.broker.metrics().clients_disconnected.get() == 1
        })
        .await;
        // One more arrives while offline: it is sent after the re-sends.
        publisher
            .publish("t", b"3", QoS::AtLeastOnce, false, 4)
            .await;
        let (mut subscriber, present) = persistent(broker.addr, "device").await;
        assert!(present);
        for index in 0..3u8 {
            let publish = subscriber.recv_publish().await;
            assert!(publish.dup, "a re-sent PUBLISH has DUP set");
            assert_eq!(publish.payload[..], [b'0' + index]);
            assert_eq!(publish.packet_id, first_ids[index as usize]);
            acknowledge(&mut subscriber, &publish).await;
        }
        let fresh = subscriber.recv_publish().await;
        assert!(!fresh.dup);
        assert_eq!(&fresh.payload[..], b"3");
        acknowledge(&mut subscriber, &fresh).await;
        assert!(subscriber.ping_barrier().await.is_empty());
    })
    .await;
}

// [MQTT-4.4.0-1] [MQTT-4.3.3-1] (v3.1.1): a QoS 2 delivery whose PUBREC
// was received is resumed with PUBREL after a reconnect.
#[tokio::test]
async fn pubrel_is_resent_after_reconnect() {
    timed(async {
        let broker = TestBroker::start().await;
        let (mut subscriber, _) = persistent(broker.addr, "device").await;
        subscriber.subscribe(1, &[("t", QoS::ExactlyOnce)]).await;
        let mut publisher = RawClient::connect(broker.addr, "app").await;
        publisher
            .publish("t", b"x", QoS::ExactlyOnce, false, 1)
            .await;
        let publish = subscriber.recv_publish().await;
        let packet_id = publish.packet_id.unwrap();
        subscriber.send(&Packet::PubRec(Ack::new(packet_id))).await;
        match subscriber.recv().await {
            Packet::PubRel(ack) => assert_eq!(ack.packet_id, packet_id),
            other => panic!("expected PUBREL, got {other:?}"),
        }
        drop(subscriber);
        eventually("the session to be parked", || {
            broker.broker.metrics().clients_disconnected.get() == 1
        })
        .await;
        let (mut subscriber, present) = persistent(broker.addr, "device").await;
        assert!(present);
        match subscriber.recv().await {
            Packet::PubRel(ack) => assert_eq!(ack.packet_id, packet_id),
            other => panic!("expected the PUBREL again, got {other:?}"),
        }
        subscriber.send(&Packet::PubComp(Ack::new(packet_id))).await;
        assert!(subscriber.ping_barrier().await.is_empty());
    })
    .await;
}

// max_queued_messages bounds the offline queue: the excess is dropped and
// counted; the first messages are kept, in order.
#[tokio::test]
async fn offline_queue_is_bounded_by_message_count() {
    timed(async {
        let config = petrel::Config {
            max_queued_messages: 5,
            ..test_config()
        };
        let broker = TestBroker::with_config(config).await;
        subscribed_then_offline(broker.addr, QoS::AtLeastOnce).await;
        let mut publisher = RawClient::connect(broker.addr, "app").await;
        for index in 0..10u16 {
            publisher
                .publish(
                    "t",
                    index.to_string().as_bytes(),
                    QoS::AtLeastOnce,
                    false,
                    index + 1,
                )
                .await;
        }
        assert_eq!(broker.broker.metrics().messages_dropped.get(), 5);
        let (mut subscriber, _) = persistent(broker.addr, "device").await;
        for index in 0..5u16 {
            let publish = subscriber.recv_publish().await;
            assert_eq!(publish.payload, index.to_string().as_bytes());
            acknowledge(&mut subscriber, &publish).await;
        }
        assert!(subscriber.ping_barrier().await.is_empty());
    })
    .await;
}

// max_queued_bytes bounds the offline queue by payload bytes.
#[tokio::test]
async fn offline_queue_is_bounded_by_bytes() {
    timed(async {
        let config = petrel::Config {
            max_queued_bytes: 1000,
            ..test_config()
        };
        let broker = TestBroker::with_config(config).await;
        subscribed_then_offline(broker.addr, QoS::AtLeastOnce).await;
        let mut publisher = RawClient::connect(broker.addr, "app").await;
        for index in 0..5u16 {
            publisher
                .publish("t", &[index as u8; 300], QoS::AtLeastOnce, false, index + 1)
                .await;
        }
        // 3 x 300 bytes fit in 1000; the fourth and fifth do not.
        assert_eq!(broker.broker.metrics().messages_dropped.get(), 2);
        let (mut subscriber, _) = persistent(broker.addr, "device").await;
        for index in 0..3u8 {
            let publish = subscriber.recv_publish().await;
            assert_eq!(publish.payload[0], index);
            acknowledge(&mut subscriber, &publish).await;
        }
        assert!(subscriber.ping_barrier().await.is_empty());
    })
    .await;
}

// [MQTT-3.1.4-2] (v3.1.1): a second connection with the same client id
// closes the first; the session carries over; only the new one receives.
#[tokio::test]
async fn takeover_closes_the_old_connection_and_keeps_the_session() {
    timed(async {
        let broker = TestBroker::start().await;
        let (mut old, _) = persistent(broker.addr, "device").await;
        old.subscribe(1, &[("t", QoS::AtLeastOnce)]).await;
        let (mut new, present) = persistent(broker.addr, "device").await;
        assert!(present, "the session survives the takeover");
        old.expect_closed().await;
        let mut publisher = RawClient::connect(broker.addr, "app").await;
        publisher
            .publish("t", b"to the new one", QoS::AtLeastOnce, false, 1)
            .await;
        assert_eq!(&new.recv_publish().await.payload[..], b"to the new one");
        assert_eq!(broker.broker.metrics().takeovers.get(), 1);
    })
    .await;
}

// [MQTT-3.1.4-2] (v3.1.1) under concurrency: many sockets connecting with
// one id at once leave exactly one connected, and no task behind.
#[tokio::test]
async fn concurrent_takeovers_leave_exactly_one_connection() {
    timed(async {
        let broker = Arc::new(TestBroker::start().await);
        let mut attempts = Vec::new();
        for _ in 0..25 {
            let addr = broker.addr;
            attempts.push(tokio::spawn(async move {
                let mut client = RawClient::open(addr).await;
                client
                    .send(&Packet::Connect(Box::new(connect_packet("same", false, 0))))
                    .await;
                client
            }));
        }
        let mut clients = Vec::new();
        for attempt in attempts {
            clients.push(attempt.await.unwrap());
        }
        // Every socket gets its CONNACK; all but one are then closed.
        let mut open = Vec::new();
        for mut client in clients {
            match client.try_recv().await {
                Some(Packet::ConnAck(connack)) => {
                    assert_eq!(connack.reason_code, ReasonCode::Success)
                }
                other => panic!("expected CONNACK, got {other:?}"),
            }
            open.push(client);
        }
        // Every CONNECT was answered, so every takeover has been issued;
        // once the broker counts one client, exactly one socket answers.
        eventually("one connected client", || {
            broker.broker.metrics().clients_connected.get() == 1
        })
        .await;
        eventually("the closed sockets to be gone", || {
            broker.broker.metrics().connections_open.get() == 1
        })
        .await;
        let mut survivors = Vec::new();
        for mut client in open {
            if !client.try_send(&Packet::PingReq).await {
                continue;
            }
            if let Some(packet) = client.try_recv().await {
                assert_eq!(packet, Packet::PingResp);
                survivors.push(client);
            }
        }
        assert_eq!(survivors.len(), 1, "exactly one connection survives");
        let last = survivors.pop().unwrap();
        last.disconnect().await;
        eventually("no connection left", || {
            broker.broker.metrics().connections_open.get() == 0
        })
        .await;
        assert_eq!(broker.broker.metrics().clients_connected.get(), 0);
    })
    .await;
}
