//! Durable state across a restart of an in-process broker on the same
//! `data_dir`: retained messages, persistent sessions (subscriptions,
//! offline queue, in-flight QoS 1/2 messages both ways), wills waiting
//! for their delay; and what has expired does not come back. Start-up
//! refuses a store it cannot read. The crash (kill -9) test is in
//! tests/crash.rs.

mod common;

use std::time::Duration;

use common::*;
use petrel::config::Durability;
use petrel::protocol::{
    Ack, ConnectProperties, Packet, PublishProperties, QoS, ReasonCode, WillProperties,
};
use petrel::{Broker, Config};

async fn restart(broker: TestBroker, dir: &DataDir) -> TestBroker {
    assert!(broker.broker.shutdown().await, "clean shutdown");
    dir.start().await
}

/// A persistent 3.1.1 session (clean session 0).
async fn persistent(addr: std::net::SocketAddr, client_id: &str) -> (RawClient, bool) {
    let (client, connack) =
        RawClient::connect_with(addr, connect_packet(client_id, false, 0)).await;
    assert_eq!(connack.reason_code, ReasonCode::Success);
    (client, connack.session_present)
}

/// Receives `count` PUBLISH packets, acknowledging each as its QoS asks
/// (whatever order the PUBRELs of QoS 2 ones come in).
async fn receive(client: &mut RawClient, count: usize) -> Vec<petrel::protocol::Publish> {
    let mut received = Vec::new();
    let mut awaiting_pubrel = 0;
    while received.len() < count || awaiting_pubrel > 0 {
        match client.recv().await {
            Packet::Publish(publish) => {
                client.answer(&publish).await;
                if publish.qos == QoS::ExactlyOnce {
                    awaiting_pubrel += 1;
                }
                received.push(publish);
            }
            Packet::PubRel(ack) => {
                client.send(&Packet::PubComp(Ack::new(ack.packet_id))).await;
                awaiting_pubrel -= 1;
            }
            other => panic!("expected PUBLISH or PUBREL, got {other:?}"),
        }
    }
    received
}

// [MQTT-3.3.1-5] (v3.1.1): the retained message is stored and delivered
// to later subscribers, after a restart too; one cleared with an empty
// payload [MQTT-3.3.1-10] stays cleared.
#[tokio::test]
async fn retained_messages_survive_a_restart() {
    timed(async {
        let dir = DataDir::new("retained");
        let broker = dir.start().await;
        let mut publisher = RawClient::connect(broker.addr, "publisher").await;
        publisher
            .publish("home/temperature", b"21.5", QoS::AtLeastOnce, true, 1)
            .await;
        publisher
            .publish("home/humidity", b"40", QoS::AtMostOnce, true, 0)
            .await;
        publisher
            .publish("home/door", b"open", QoS::ExactlyOnce, true, 2)
            .await;
        publisher
            .publish("home/door", b"", QoS::AtLeastOnce, true, 3)
            .await;
        publisher.disconnect().await;
        let broker = restart(broker, &dir).await;
        let mut subscriber = RawClient::connect(broker.addr, "subscriber").await;
        subscriber
            .subscribe(1, &[("home/#", QoS::AtLeastOnce)])
            .await;
        let mut got = Vec::new();
        for _ in 0..2 {
            let publish = subscriber.recv_publish().await;
            assert!(
                publish.retain,
                "[MQTT-3.3.1-8] RETAIN set for a new subscription"
            );
            acknowledge(&mut subscriber, &publish).await;
            got.push((publish.topic.as_str().to_owned(), publish.payload.to_vec()));
        }
        got.sort();
        assert_eq!(
            got,
            vec![
                ("home/humidity".to_owned(), b"40".to_vec()),
                ("home/temperature".to_owned(), b"21.5".to_vec()),
            ]
        );
        assert!(
            subscriber.ping_barrier().await.is_empty(),
            "the cleared one stays cleared"
        );
        broker.broker.shutdown().await;
    })
    .await;
}

// [MQTT-3.1.2-4] (v3.1.1): a persistent session resumes with its
// subscriptions and the QoS 1/2 messages queued while it was offline, in
// order, across a restart; its subscriptions match messages published
// after the restart too [MQTT-3.2.2-2] (session present).
#[tokio::test]
async fn subscriptions_and_offline_queue_survive_a_restart() {
    timed(async {
        let dir = DataDir::new("queue");
        let broker = dir.start().await;
        let (mut subscriber, present) = persistent(broker.addr, "sensor-hub").await;
        assert!(!present);
        let codes = subscriber
            .subscribe(1, &[("a/#", QoS::AtLeastOnce), ("b", QoS::ExactlyOnce)])
            .await;
        assert_eq!(
            codes,
            vec![ReasonCode::GrantedQoS1, ReasonCode::GrantedQoS2]
        );
        subscriber.disconnect().await;
        let mut publisher = RawClient::connect(broker.addr, "publisher").await;
        publisher
            .publish("a/1", b"one", QoS::AtLeastOnce, false, 1)
            .await;
        publisher
            .publish("b", b"two", QoS::ExactlyOnce, false, 2)
            .await;
        publisher
            .publish("a/2", b"zero", QoS::AtMostOnce, false, 0)
            .await;
        publisher.disconnect().await;

        let broker = restart(broker, &dir).await;
        let mut publisher = RawClient::connect(broker.addr, "publisher").await;
        publisher
            .publish("a/3", b"three", QoS::AtLeastOnce, false, 3)
            .await;
        publisher.disconnect().await;
        let (mut subscriber, present) = persistent(broker.addr, "sensor-hub").await;
        assert!(present, "the session came back");
        let got: Vec<_> = receive(&mut subscriber, 3)
            .await
            .into_iter()
            .map(|p| (p.topic.as_str().to_owned(), p.qos, p.payload.to_vec()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a/1".to_owned(), QoS::AtLeastOnce, b"one".to_vec()),
                ("b".to_owned(), QoS::ExactlyOnce, b"two".to_vec()),
                ("a/3".to_owned(), QoS::AtLeastOnce, b"three".to_vec()),
            ]
        );
        assert!(
            subscriber.ping_barrier().await.is_empty(),
            "QoS 0 was not queued offline"
        );
        subscriber.disconnect().await;

        // Delivered and acknowledged: gone from the store as well.
        let broker = restart(broker, &dir).await;
        let (mut subscriber, present) = persistent(broker.addr, "sensor-hub").await;
        assert!(present);
        assert!(
            subscriber.ping_barrier().await.is_empty(),
            "nothing is delivered twice"
        );
        broker.broker.shutdown().await;
    })
    .await;
}

// [MQTT-4.4.0-1] (v3.1.1): unacknowledged PUBLISH (QoS 1, and QoS 2 before
// PUBREC) are re-sent with DUP set and their packet ids, and a QoS 2
// message whose PUBREC came gets its PUBREL again, after a restart.
#[tokio::test]
async fn inflight_messages_survive_a_restart() {
    timed(async {
        let dir = DataDir::new("inflight");
        let broker = dir.start().await;
        let (mut subscriber, _) = persistent(broker.addr, "slow-reader").await;
        subscriber
            .subscribe(1, &[("q1", QoS::AtLeastOnce), ("q2/#", QoS::ExactlyOnce)])
            .await;
        let mut publisher = RawClient::connect(broker.addr, "publisher").await;
        publisher
            .publish("q1", b"unacked", QoS::AtLeastOnce, false, 1)
            .await;
        publisher
            .publish("q2/a", b"received", QoS::ExactlyOnce, false, 2)
            .await;
        publisher
            .publish("q2/b", b"released", QoS::ExactlyOnce, false, 3)
            .await;
        publisher.disconnect().await;
        let first = subscriber.recv_publish().await;
        let second = subscriber.recv_publish().await;
        let third = subscriber.recv_publish().await;
        assert_eq!(first.payload.as_ref(), b"unacked");
        assert_eq!(second.payload.as_ref(), b"received");
        assert_eq!(third.payload.as_ref(), b"released");
        // The third gets its PUBREC; its PUBREL is never completed.
        let third_id = third.packet_id.expect("QoS 2 has a packet id");
        subscriber.send(&Packet::PubRec(Ack::new(third_id))).await;
        match subscriber.recv().await {
            Packet::PubRel(ack) => assert_eq!(ack.packet_id, third_id),
            other => panic!("expected PUBREL, got {other:?}"),
        }
        // The broker stops with the subscriber still connected.
        let broker = restart(broker, &dir).await;
        let (mut subscriber, present) = persistent(broker.addr, "slow-reader").await;
        assert!(present);
        let again = subscriber.recv_publish().await;
        assert!(again.dup, "[MQTT-3.3.1-1] DUP on a re-delivery");
        assert_eq!(again.packet_id, first.packet_id);
        assert_eq!(again.payload.as_ref(), b"unacked");
        let again = subscriber.recv_publish().await;
        assert!(again.dup);
        assert_eq!(again.packet_id, second.packet_id);
        assert_eq!(again.qos, QoS::ExactlyOnce);
        match subscriber.recv().await {
            Packet::PubRel(ack) => assert_eq!(ack.packet_id, third_id),
            other => panic!("expected the PUBREL again, got {other:?}"),
        }
        subscriber
            .send(&Packet::PubAck(Ack::new(first.packet_id.unwrap())))
            .await;
        acknowledge(&mut subscriber, &again).await;
        subscriber.send(&Packet::PubComp(Ack::new(third_id))).await;
        assert!(subscriber.ping_barrier().await.is_empty());
        subscriber.disconnect().await;
        let broker = restart(broker, &dir).await;
        let (mut subscriber, _) = persistent(broker.addr, "slow-reader").await;
        assert!(
            subscriber.ping_barrier().await.is_empty(),
            "all three are complete"
        );
        broker.broker.shutdown().await;
    })
    .await;
}

// [MQTT-4.3.3-2] (v3.1.1): a QoS 2 PUBLISH whose id awaits PUBREL is not
// delivered again when it is re-sent, even across a restart.
#[tokio::test]
async fn qos2_awaiting_pubrel_survives_a_restart() {
    timed(async {
        let dir = DataDir::new("pubrel");
        let broker = dir.start().await;
        let (mut subscriber, _) = persistent(broker.addr, "listener").await;
        subscriber.subscribe(1, &[("once", QoS::ExactlyOnce)]).await;
        subscriber.disconnect().await;
        let (mut publisher, _) = persistent(broker.addr, "exactly-once").await;
        publisher
            .send(&publish_packet(
                "once",
                b"only once",
                QoS::ExactlyOnce,
                false,
                Some(7),
            ))
            .await;
        match publisher.recv().await {
            Packet::PubRec(ack) => assert_eq!(ack.packet_id, id(7)),
            other => panic!("expected PUBREC, got {other:?}"),
        }
        let broker = restart(broker, &dir).await;
        let (mut publisher, present) = persistent(broker.addr, "exactly-once").await;
        assert!(present);
        // The client did not see PUBCOMP, so it sends the PUBLISH again.
        let mut resent = publish_packet("once", b"only once", QoS::ExactlyOnce, false, Some(7));
        if let Packet::Publish(publish) = &mut resent {
            publish.dup = true;
        }
        publisher.send(&resent).await;
        match publisher.recv().await {
            Packet::PubRec(ack) => assert_eq!(ack.packet_id, id(7)),
            other => panic!("expected PUBREC, got {other:?}"),
        }
        publisher.send(&Packet::PubRel(Ack::new(id(7)))).await;
        match publisher.recv().await {
            Packet::PubComp(ack) => assert_eq!(
                (ack.packet_id, ack.reason_code),
                (id(7), ReasonCode::Success)
            ),
            other => panic!("expected PUBCOMP, got {other:?}"),
        }
        let (mut subscriber, _) = persistent(broker.addr, "listener").await;
        let publish = subscriber.recv_publish().await;
        assert_eq!(publish.payload.as_ref(), b"only once");
        acknowledge(&mut subscriber, &publish).await;
        assert!(
            subscriber.ping_barrier().await.is_empty(),
            "delivered exactly once"
        );
        broker.broker.shutdown().await;
    })
    .await;
}

// A message queued for several persistent sessions is kept once and stays
// until the last of them has it: one acknowledges it, the broker restarts,
// the other still gets it [MQTT-3.1.2-4] (v3.1.1).
#[tokio::test]
async fn a_message_for_several_sessions_stays_until_each_has_it() {
    timed(async {
        let dir = DataDir::new("fan-out");
        let broker = dir.start().await;
        for client_id in ["first", "second"] {
            let (mut subscriber, _) = persistent(broker.addr, client_id).await;
            subscriber
                .subscribe(1, &[("shared/topic", QoS::AtLeastOnce)])
                .await;
            subscriber.disconnect().await;
        }
        let mut publisher = RawClient::connect(broker.addr, "publisher").await;
        publisher
            .publish("shared/topic", b"for both", QoS::AtLeastOnce, false, 1)
            .await;
        publisher.disconnect().await;
        let broker = restart(broker, &dir).await;
        let (mut first, _) = persistent(broker.addr, "first").await;
        let got = receive(&mut first, 1).await;
        assert_eq!(got[0].payload.as_ref(), b"for both");
        assert!(first.ping_barrier().await.is_empty());
        first.disconnect().await;
        let broker = restart(broker, &dir).await;
        let (mut second, _) = persistent(broker.addr, "second").await;
        let got = receive(&mut second, 1).await;
        assert_eq!(got[0].payload.as_ref(), b"for both");
        second.disconnect().await;
        let (mut first, _) = persistent(broker.addr, "first").await;
        assert!(
            first.ping_barrier().await.is_empty(),
            "delivered to the first once"
        );
        broker.broker.shutdown().await;
    })
    .await;
}

/// An MQTT 5 CONNECT with a Session Expiry Interval.
fn expiring(client_id: &str, seconds: u32) -> petrel::protocol::Connect {
    petrel::protocol::Connect {
        properties: ConnectProperties {
            session_expiry_interval: Some(seconds),
            ..ConnectProperties::default()
        },
        ..connect_v5(client_id, false, 0)
    }
}

// 3.1.2.11.2 (v5.0): a session whose Session Expiry Interval passed while
// the broker was down is gone after the restart, and so are a queued
// message and a retained message whose Message Expiry Interval passed
// [MQTT-3.3.2-5] (v5.0).
#[tokio::test]
async fn expired_state_does_not_come_back() {
    timed(async {
        let dir = DataDir::new("expired");
        let broker = dir.start().await;
        let (mut short, _) = RawClient::connect_with(broker.addr, expiring("short-lived", 1)).await;
        short.subscribe(1, &[("t", QoS::AtLeastOnce)]).await;
        short.disconnect().await;
        let (mut long, _) = RawClient::connect_with(broker.addr, expiring("long-lived", 600)).await;
        long.subscribe(1, &[("t", QoS::AtLeastOnce)]).await;
        long.disconnect().await;
        let mut publisher = RawClient::connect_v5(broker.addr, "publisher").await;
        for (payload, expiry, retain) in [
            (&b"brief"[..], Some(1), false),
            (b"lasting", None, false),
            (b"stale", Some(1), true),
        ] {
            let properties = PublishProperties {
                message_expiry_interval: expiry,
                ..PublishProperties::default()
            };
            let mut packet = publish_with("t", payload, QoS::AtLeastOnce, Some(1), properties);
            if let Packet::Publish(publish) = &mut packet {
                publish.retain = retain;
            }
            publisher.send(&packet).await;
            assert!(matches!(publisher.recv().await, Packet::PubAck(_)));
        }
        publisher.disconnect().await;
        assert!(broker.broker.shutdown().await);
        // The expiry intervals run out while the broker is down.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let broker = dir.start().await;
        let (_, connack) = RawClient::connect_with(broker.addr, expiring("short-lived", 1)).await;
        assert!(!connack.session_present, "the expired session is gone");
        let (mut long, connack) =
            RawClient::connect_with(broker.addr, expiring("long-lived", 600)).await;
        assert!(connack.session_present);
        let publish = long.recv_publish().await;
        assert_eq!(
            publish.payload.as_ref(),
            b"lasting",
            "the expired message is not sent"
        );
        acknowledge(&mut long, &publish).await;
        assert!(long.ping_barrier().await.is_empty());
        let mut fresh = RawClient::connect_v5(broker.addr, "fresh").await;
        fresh
            .subscribe_with(1, &[("t", options(QoS::AtLeastOnce))], None)
            .await;
        assert!(
            fresh.ping_barrier().await.is_empty(),
            "the expired retained message is gone"
        );
        broker.broker.shutdown().await;
    })
    .await;
}

// [MQTT-3.1.3-9] (v5.0): a will waits for its Will Delay Interval; the
// broker stopping does not end a session it keeps, so the will is
// published after the restart, when the delay has passed.
#[tokio::test]
async fn a_delayed_will_survives_a_restart() {
    timed(async {
        let dir = DataDir::new("will");
        let broker = dir.start().await;
        let mut connect = expiring("device", 600);
        connect.will = Some(petrel::protocol::LastWill {
            properties: WillProperties {
                will_delay_interval: Some(1),
                ..WillProperties::default()
            },
            ..will("device/status", b"offline", QoS::AtLeastOnce, true)
        });
        let (device, _) = RawClient::connect_with(broker.addr, connect).await;
        // The connection drops without DISCONNECT; the will waits.
        drop(device);
        let broker = restart(broker, &dir).await;
        let mut watcher = RawClient::connect(broker.addr, "watcher").await;
        watcher
            .subscribe(1, &[("device/status", QoS::AtLeastOnce)])
            .await;
        let publish = watcher.recv_publish().await;
        assert_eq!(publish.payload.as_ref(), b"offline");
        acknowledge(&mut watcher, &publish).await;
        broker.broker.shutdown().await;
        // Published: it does not come back with the next restart.
        let broker = dir.start().await;
        let mut watcher = RawClient::connect(broker.addr, "watcher").await;
        watcher
            .subscribe(1, &[("device/status", QoS::AtLeastOnce)])
            .await;
        let retained = watcher.recv_publish().await;
        assert!(retained.retain, "the will was retained");
        acknowledge(&mut watcher, &retained).await;
        assert!(
            watcher.ping_barrier().await.is_empty(),
            "the will is published once"
        );
        broker.broker.shutdown().await;
    })
    .await;
}

// The state survives with every durability mode (a clean shutdown syncs).
#[tokio::test]
async fn every_durability_mode_keeps_state_across_a_clean_restart() {
    timed(async {
        for durability in [Durability::Sync, Durability::Periodic, Durability::None] {
            let dir = DataDir::new("modes");
            let config = Config {
                durability,
                flush_interval_ms: 50,
                ..dir.config()
            };
            let broker = TestBroker::with_config(config.clone()).await;
            let (mut subscriber, _) = persistent(broker.addr, "keeper").await;
            subscriber.subscribe(1, &[("m", QoS::AtLeastOnce)]).await;
            subscriber.disconnect().await;
            let mut publisher = RawClient::connect(broker.addr, "publisher").await;
            publisher
                .publish("m", b"kept", QoS::AtLeastOnce, false, 1)
                .await;
            publisher.disconnect().await;
            assert!(broker.broker.shutdown().await);
            let broker = TestBroker::with_config(config).await;
            let (mut subscriber, present) = persistent(broker.addr, "keeper").await;
            assert!(present, "{durability:?}");
            let publish = subscriber.recv_publish().await;
            assert_eq!(publish.payload.as_ref(), b"kept", "{durability:?}");
            broker.broker.shutdown().await;
        }
    })
    .await;
}

// With persistence off nothing is written.
#[tokio::test]
async fn persistence_off_writes_nothing() {
    timed(async {
        let dir = DataDir::new("off");
        let config = Config {
            persistence: false,
            ..dir.config()
        };
        let broker = TestBroker::with_config(config).await;
        let (mut subscriber, _) = persistent(broker.addr, "memory-only").await;
        subscriber.subscribe(1, &[("x", QoS::AtLeastOnce)]).await;
        subscriber.disconnect().await;
        broker.broker.shutdown().await;
        assert!(!dir.path().exists());
    })
    .await;
}

fn start_error(config: Config) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    match Broker::start(config, vec![listener]) {
        Ok(_) => panic!("the broker started over a store it cannot read"),
        Err(error) => error.to_string(),
    }
}

// A corrupt store, one of a newer format, and one in use stop start-up
// with a message naming the file; nothing starts empty over them.
#[tokio::test]
async fn an_unreadable_store_stops_start_up() {
    timed(async {
        let dir = DataDir::new("unreadable");
        let file = dir.path().join(petrel::store::FILE_NAME);
        let broker = dir.start().await;
        let in_use = start_error(dir.config());
        assert!(in_use.contains("in use by another process"), "{in_use}");
        assert!(in_use.contains(&file.display().to_string()), "{in_use}");
        broker.broker.shutdown().await;

        // A newer format version.
        {
            let database = redb::Database::create(&file).expect("open");
            let transaction = database.begin_write().expect("write");
            {
                let mut meta = transaction
                    .open_table(petrel::store::records::META)
                    .expect("meta");
                meta.insert(petrel::store::records::FORMAT_KEY, 99)
                    .expect("insert");
            }
            transaction.commit().expect("commit");
        }
        let newer = start_error(dir.config());
        assert!(newer.contains("format 99"), "{newer}");
        assert!(newer.contains(&file.display().to_string()), "{newer}");

        // Garbage where the store should be.
        std::fs::write(&file, vec![0x5a; 8192]).expect("overwrite");
        let corrupt = start_error(dir.config());
        assert!(corrupt.contains(&file.display().to_string()), "{corrupt}");
        assert!(corrupt.contains("cannot open"), "{corrupt}");
        assert_eq!(
            std::fs::read(&file).expect("still there"),
            vec![0x5a; 8192],
            "left untouched"
        );
    })
    .await;
}

// A store written by an earlier build in format 1 (a persistent MQTT 5
// session "keeper" that never expires, subscribed to `kept/#` at QoS 2 with `kept/a` (QoS 1,
// a user property) and `kept/b` (QoS 2) queued for it, and a retained
// `ret/x` with a content type) still loads: the store's records are its
// own types, held to their bytes.
#[tokio::test]
async fn a_store_written_in_format_1_still_loads() {
    timed(async {
        let dir = DataDir::new("format-1");
        std::fs::create_dir_all(dir.path()).expect("data dir");
        std::fs::copy(
            "tests/fixtures/store-format-1.redb",
            dir.path().join(petrel::store::FILE_NAME),
        )
        .expect("copy the fixture");
        let broker = dir.start().await;
        let connect = petrel::protocol::Connect {
            properties: ConnectProperties {
                session_expiry_interval: Some(u32::MAX),
                ..ConnectProperties::default()
            },
            ..connect_v5("keeper", false, 0)
        };
        let (mut keeper, connack) = RawClient::connect_with(broker.addr, connect).await;
        assert!(connack.session_present, "the session came back");
        let received = receive(&mut keeper, 2).await;
        let got: Vec<(&str, &[u8], QoS)> = received
            .iter()
            .map(|p| (p.topic.as_str(), p.payload.as_ref(), p.qos))
            .collect();
        assert_eq!(
            got,
            [
                ("kept/a", &b"one"[..], QoS::AtLeastOnce),
                ("kept/b", &b"two"[..], QoS::ExactlyOnce)
            ]
        );
        assert_eq!(
            received[0].properties.user_properties,
            [("k".to_owned(), "v".to_owned())]
        );
        let mut late = RawClient::connect_v5(broker.addr, "late").await;
        late.subscribe(1, &[("ret/#", QoS::AtLeastOnce)]).await;
        let retained = late.recv_publish().await;
        assert!(retained.retain);
        assert_eq!(retained.payload.as_ref(), b"retained");
        assert_eq!(
            retained.properties.content_type.as_deref(),
            Some("text/plain")
        );
        drop((keeper, late));
        broker.broker.shutdown().await;
    })
    .await;
}

// A persistent session that goes away while its new subscription's
// retained messages are still being sent (its window holds them to one at
// a time) gets the rest after a restart: they were queued, and the store
// kept them with the queue.
#[tokio::test]
async fn retained_messages_not_yet_sent_survive_a_restart() {
    timed(async {
        let dir = DataDir::new("backlog");
        let broker = TestBroker::with_config(petrel::Config {
            max_inflight: 1,
            ..dir.config()
        })
        .await;
        let mut publisher = RawClient::connect(broker.addr, "publisher").await;
        for index in 0..100u16 {
            let topic = format!("state/{index:03}");
            publisher
                .publish(&topic, b"on", QoS::AtLeastOnce, true, index + 1)
                .await;
        }
        publisher.disconnect().await;
        let (mut subscriber, _) = persistent(broker.addr, "dashboard").await;
        subscriber
            .subscribe(1, &[("state/#", QoS::AtLeastOnce)])
            .await;
        let first = subscriber.recv_publish().await;
        assert_eq!(first.topic.as_str(), "state/000");
        subscriber.disconnect().await;
        let broker = restart(broker, &dir).await;
        let (mut subscriber, present) = persistent(broker.addr, "dashboard").await;
        assert!(present);
        let mut topics = std::collections::BTreeSet::new();
        while topics.len() < 100 {
            let publish = subscriber.recv_publish().await;
            subscriber.answer(&publish).await;
            topics.insert(publish.topic.as_str().to_owned());
        }
        drop(subscriber);
        broker.broker.shutdown().await;
    })
    .await;
}
