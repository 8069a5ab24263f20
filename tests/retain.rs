//! Retained messages: stored, replaced, cleared, delivered to new
//! subscriptions with RETAIN set, every one however many.

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

// [MQTT-3.3.1-6] (v3.1.1) [MQTT-3.3.1-9] (v5.0): a new wildcard
// subscription gets every retained message it matches, however many (here
// 20,000, twenty times max_queued_messages), at QoS 0, 1 and 2. They
// stream to the client as it takes them, outside the queue bound, which
// keeps applying to live messages; live messages to the same client keep
// flowing meanwhile, and nothing is dropped.
#[tokio::test]
async fn a_new_subscription_gets_every_retained_message_it_matches() {
    timed(async {
        let count = 20_000usize;
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let broker = TestBroker::start().await;
            assert!(broker_config_queue_bound() < count);
            let mut publisher = RawClient::connect(broker.addr, "pub").await;
            publish_retained_burst(&mut publisher, count).await;
            let rss_before = rss_bytes();
            let mut subscriber = RawClient::connect(broker.addr, "sub").await;
            subscriber.subscribe(1, &[("#", qos)]).await;
            let mut retained = std::collections::HashSet::new();
            let mut live_sent = 0usize;
            let mut live_received = 0usize;
            let mut rss_peak = rss_before;
            let mut first_live_at = None;
            while retained.len() < count {
                let publish = match subscriber.recv().await {
                    petrel::protocol::Packet::Publish(publish) => publish,
                    petrel::protocol::Packet::PubRel(ack) => {
                        let pubcomp = petrel::protocol::Packet::PubComp(ack);
                        subscriber.send(&pubcomp).await;
                        continue;
                    }
                    other => panic!("unexpected {other:?}"),
                };
                subscriber.answer(&publish).await;
                if publish.topic.as_str().starts_with("live/") {
                    assert!(!publish.retain);
                    live_received += 1;
                    first_live_at.get_or_insert(retained.len());
                    continue;
                }
                assert!(publish.retain, "{qos:?}");
                assert_eq!(publish.qos, qos, "the lower of published (2) and granted");
                let index: usize = publish.topic.as_str()["probe-ret/".len()..]
                    .parse()
                    .expect("a topic the test published");
                assert_eq!(
                    publish.payload.as_ref(),
                    format!("v{index:<1023}").as_bytes()
                );
                assert!(retained.insert(index), "{qos:?}: retained {index} twice");
                // A live message now and then, while the backlog streams.
                if retained.len() % 2_000 == 1_000 {
                    publisher
                        .publish(
                            &format!("live/{live_sent}"),
                            b"now",
                            QoS::AtMostOnce,
                            false,
                            0,
                        )
                        .await;
                    live_sent += 1;
                    rss_peak = rss_peak.max(rss_bytes());
                }
            }
            // The first live message came while the backlog was still
            // streaming: it did not wait for the backlog to end.
            assert!(
                first_live_at.is_some_and(|at| at < count),
                "{qos:?}: a live message waited for the backlog ({first_live_at:?})"
            );
            // The last ones may come after it; none is lost.
            while live_received < live_sent {
                let publish = subscriber.recv_publish().await;
                assert!(publish.topic.as_str().starts_with("live/"));
                live_received += 1;
            }
            assert!(live_sent >= 10);
            assert_eq!(broker.broker.metrics().messages_dropped.get(), 0);
            // Nothing more, but the PUBRELs of the last QoS 2 ones.
            for packet in subscriber.ping_barrier().await {
                match packet {
                    petrel::protocol::Packet::PubRel(ack) => {
                        subscriber
                            .send(&petrel::protocol::Packet::PubComp(ack))
                            .await;
                    }
                    other => panic!("{qos:?}: unexpected {other:?}"),
                }
            }
            assert!(subscriber.ping_barrier().await.is_empty());
            let grown = rss_peak.saturating_sub(rss_before);
            println!(
                "{qos:?}: {count} retained messages streamed, the first live message after \
                 {first_live_at:?}; the test process grew {grown} bytes"
            );
            assert!(grown < 64 << 20, "grew {grown} bytes");
            drop((subscriber, publisher));
            broker.broker.shutdown().await;
        }
    })
    .await;
}

// [MQTT-4.6.0-6] (v3.1.1): a live message on a topic the backlog has not
// reached yet takes that topic's (older) retained message with it, just
// ahead of it: the client never gets the older one after the newer.
#[tokio::test]
async fn a_live_message_never_overtakes_its_topics_retained_message() {
    timed(async {
        let broker = TestBroker::with_config(petrel::Config {
            max_inflight: 4,
            ..test_config()
        })
        .await;
        let mut publisher = RawClient::connect(broker.addr, "pub").await;
        // More than the backlog takes from the router at a time (64), so
        // one live topic is in its current batch, the other past it.
        for index in 0..100u16 {
            let topic = format!("state/{index:02}");
            publisher
                .publish(&topic, b"old", QoS::AtLeastOnce, true, index + 1)
                .await;
        }
        let mut subscriber = RawClient::connect(broker.addr, "sub").await;
        subscriber
            .subscribe(1, &[("state/#", QoS::AtLeastOnce)])
            .await;
        // The window holds the backlog at its first four messages.
        let first = subscriber.recv_publish().await;
        assert_eq!(first.topic.as_str(), "state/00");
        for (topic, packet_id) in [("state/42", 200), ("state/90", 201)] {
            publisher
                .publish(topic, b"new", QoS::AtLeastOnce, false, packet_id)
                .await;
        }
        subscriber.answer(&first).await;
        let mut got = vec![("state/00".to_owned(), first.payload.to_vec())];
        while got.len() < 102 {
            let publish = subscriber.recv_publish().await;
            subscriber.answer(&publish).await;
            got.push((publish.topic.as_str().to_owned(), publish.payload.to_vec()));
        }
        for live in ["state/42", "state/90"] {
            let of_topic: Vec<&[u8]> = got
                .iter()
                .filter(|(topic, _)| topic == live)
                .map(|(_, payload)| payload.as_slice())
                .collect();
            assert_eq!(
                of_topic,
                [&b"old"[..], &b"new"[..]],
                "{live}: older retained first, once"
            );
        }
        assert!(subscriber.ping_barrier().await.is_empty());
    })
    .await;
}

// A retained message published while a new subscription's backlog is
// streaming goes to the subscriber live; the backlog, which reads the
// retained store as it goes, must not send it again when it gets to its
// topic (at QoS 2 that would be a second delivery of one message). New
// retained messages land just ahead of the cursor, one per message the
// subscriber takes, so some arrive as the backlog takes its next batch.
#[tokio::test]
async fn a_retained_message_published_during_the_backlog_comes_once() {
    timed(async {
        let broker = TestBroker::with_config(petrel::Config {
            max_inflight: 1,
            ..test_config()
        })
        .await;
        let mut publisher = RawClient::connect(broker.addr, "pub").await;
        for index in 0..200u16 {
            let topic = format!("state/{index:03}");
            publisher
                .publish(&topic, b"old", QoS::AtLeastOnce, true, index + 1)
                .await;
        }
        let mut subscriber = RawClient::connect(broker.addr, "sub").await;
        subscriber
            .subscribe(1, &[("state/#", QoS::AtLeastOnce)])
            .await;
        let mut got = std::collections::HashSet::new();
        let mut published = 0u16;
        loop {
            let publish = subscriber.recv_publish().await;
            let payload = publish.payload.to_vec();
            if payload == b"end" {
                break;
            }
            let key = (publish.topic.as_str().to_owned(), payload);
            assert!(got.insert(key.clone()), "{key:?} came twice");
            if published < 150 {
                let topic = format!("state/{:03}", published + 40);
                let payload = format!("new-{published}");
                publisher
                    .publish(
                        &topic,
                        payload.as_bytes(),
                        QoS::AtLeastOnce,
                        true,
                        300 + published,
                    )
                    .await;
                published += 1;
                if published == 150 {
                    publisher
                        .publish("state/zzz", b"end", QoS::AtLeastOnce, false, 500)
                        .await;
                }
            }
            subscriber.answer(&publish).await;
        }
        // Every topic's latest message came.
        for index in 0..200u16 {
            let topic = format!("state/{index:03}");
            let latest = match index {
                40..190 => format!("new-{}", index - 40).into_bytes(),
                _ => b"old".to_vec(),
            };
            assert!(
                got.contains(&(topic.clone(), latest)),
                "{topic}: latest missing"
            );
        }
    })
    .await;
}

/// Publishes `count` retained messages at QoS 2 in bursts (each PUBLISH,
/// then each PUBREL, written without waiting), 1 KiB each: 20 MB for
/// 20,000, more than the sockets between the broker and a client hold, so
/// a backlog of them is still streaming when live messages come.
async fn publish_retained_burst(publisher: &mut RawClient, count: usize) {
    use petrel::protocol::{encode, Ack, Packet};
    let version = publisher.version;
    let ids = || (1..=count).map(|index| id(u16::try_from(index).expect("fits a packet id")));
    let mut burst = bytes::BytesMut::new();
    for (index, packet_id) in ids().enumerate() {
        let payload = format!("v{index:<1023}");
        let topic = format!("probe-ret/{index}");
        let publish = publish_packet(
            &topic,
            payload.as_bytes(),
            QoS::ExactlyOnce,
            true,
            Some(packet_id.get()),
        );
        encode(&publish, version, &mut burst).expect("encodes");
    }
    publisher.send_bytes(&burst).await;
    for _ in 0..count {
        assert!(matches!(publisher.recv().await, Packet::PubRec(_)));
    }
    burst.clear();
    for packet_id in ids() {
        encode(&Packet::PubRel(Ack::new(packet_id)), version, &mut burst).expect("encodes");
    }
    publisher.send_bytes(&burst).await;
    for _ in 0..count {
        assert!(matches!(publisher.recv().await, Packet::PubComp(_)));
    }
}

/// The default bound of a session's queue.
fn broker_config_queue_bound() -> usize {
    petrel::Config::default().max_queued_messages
}

/// This process's resident memory (the broker runs in it), from /proc.
fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<usize>()
                .ok()
        })
        .map_or(0, |kilobytes| kilobytes * 1024)
}
