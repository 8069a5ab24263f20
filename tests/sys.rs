//! `$SYS`: the broker's counters, published retained every `sys_interval`
//! under Mosquitto's topic names.

mod common;

use std::collections::BTreeMap;

use common::*;
use petrel::protocol::QoS;

const TOPICS: &[&str] = &[
    "$SYS/broker/version",
    "$SYS/broker/uptime",
    "$SYS/broker/clients/connected",
    "$SYS/broker/clients/disconnected",
    "$SYS/broker/clients/total",
    "$SYS/broker/messages/received",
    "$SYS/broker/messages/sent",
    "$SYS/broker/publish/messages/dropped",
    "$SYS/broker/subscriptions/count",
    "$SYS/broker/retained messages/count",
    "$SYS/broker/store/commits",
    "$SYS/broker/store/failures",
    "$SYS/broker/bridges/connections",
    "$SYS/broker/bridges/failures",
    "$SYS/broker/load/bytes/received",
    "$SYS/broker/load/bytes/sent",
    "$SYS/broker/connections/open",
    "$SYS/broker/connections/refused",
    "$SYS/broker/connections/connect timeouts",
    "$SYS/broker/clients/protocol errors",
    "$SYS/broker/clients/keepalive timeouts",
    "$SYS/broker/clients/taken over",
    "$SYS/broker/clients/auth failures",
    "$SYS/broker/clients/acl denied",
    "$SYS/broker/clients/expired",
    "$SYS/broker/publish/pauses",
    "$SYS/broker/publish/rate exceeded",
    "$SYS/broker/publish/messages/too large",
    "$SYS/broker/retained messages/dropped",
    "$SYS/broker/wills/published",
    "$SYS/broker/wills/cancelled",
    "$SYS/broker/subscriptions/refused",
    "$SYS/broker/messages/expired",
];

// Every documented topic is published, retained, with a sensible value.
#[tokio::test]
async fn sys_topics_are_published_retained() {
    timed(async {
        let config = petrel::Config {
            sys_interval: 1,
            ..test_config()
        };
        let broker = TestBroker::with_config(config).await;
        let mut publisher = RawClient::connect(broker.addr, "pub").await;
        publisher
            .publish("x", b"1", QoS::AtLeastOnce, false, 1)
            .await;
        let mut subscriber = RawClient::connect(broker.addr, "sys").await;
        subscriber
            .subscribe(1, &[("$SYS/broker/#", QoS::AtMostOnce)])
            .await;
        let mut values = BTreeMap::new();
        while !TOPICS.iter().all(|topic| values.contains_key(*topic)) {
            let publish = subscriber.recv_publish().await;
            let value = String::from_utf8(publish.payload.to_vec()).unwrap();
            values.insert(publish.topic.as_str().to_owned(), value);
        }
        for topic in TOPICS {
            assert!(values.contains_key(*topic), "{topic} missing");
        }
        assert!(values["$SYS/broker/version"].starts_with("petrel "));
        assert!(values["$SYS/broker/uptime"].ends_with(" seconds"));
        for topic in &TOPICS[2..] {
            assert!(
                values[*topic].parse::<u64>().is_ok(),
                "{topic}: {}",
                values[*topic]
            );
        }
        // Once the subscriber is counted, a later round says so.
        loop {
            let publish = subscriber.recv_publish().await;
            if publish.topic.as_str() == "$SYS/broker/clients/connected"
                && &publish.payload[..] == b"2"
            {
                break;
            }
        }
    })
    .await;
}

// sys_interval = 0 turns $SYS off.
#[tokio::test]
async fn sys_interval_zero_publishes_nothing() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut subscriber = RawClient::connect(broker.addr, "sys").await;
        subscriber
            .subscribe(1, &[("$SYS/#", QoS::AtMostOnce)])
            .await;
        assert!(subscriber.ping_barrier().await.is_empty());
    })
    .await;
}

// What explains a refused device shows under `$SYS`: a client that breaks
// the protocol (a second CONNECT [MQTT-3.1.0-2] (v3.1.1)) is counted in
// `clients/protocol errors`.
#[tokio::test]
async fn a_protocol_error_is_counted_under_sys() {
    timed(async {
        let broker = TestBroker::with_config(petrel::Config {
            sys_interval: 1,
            ..test_config()
        })
        .await;
        let mut offender = RawClient::connect(broker.addr, "offender").await;
        offender
            .send(&petrel::protocol::Packet::Connect(Box::new(
                connect_packet("offender", true, 0),
            )))
            .await;
        offender.expect_closed().await;
        let mut subscriber = RawClient::connect(broker.addr, "sys").await;
        subscriber
            .subscribe(
                1,
                &[("$SYS/broker/clients/protocol errors", QoS::AtMostOnce)],
            )
            .await;
        loop {
            let publish = subscriber.recv_publish().await;
            if &publish.payload[..] == b"1" {
                break;
            }
        }
    })
    .await;
}
