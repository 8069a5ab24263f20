//! The Last Will: published when a connection ends without DISCONNECT
//! (socket dropped, keep-alive expired, protocol violation, takeover), with
//! its QoS and retain flag; never after a normal DISCONNECT. At MQTT 5 also
//! after a DISCONNECT with an error code, and with a delay.

mod common;

use common::*;
use petrel::protocol::{Connect, Packet, QoS, ReasonCode};

fn with_will(client_id: &str, qos: QoS, retain: bool, keep_alive: u16) -> Connect {
    let mut connect = connect_packet(client_id, true, keep_alive);
    connect.will = Some(will("status/device", b"offline", qos, retain));
    connect
}

async fn watcher(broker: &TestBroker) -> RawClient {
    let mut watcher = RawClient::connect(broker.addr, "watcher").await;
    watcher
        .subscribe(1, &[("status/#", QoS::ExactlyOnce)])
        .await;
    watcher
}

// [MQTT-3.1.2-8] [MQTT-3.1.2-16] [MQTT-3.1.2-10] (v3.1.1): a dropped socket
// publishes the will, non-retained when will retain is 0, once.
#[tokio::test]
async fn will_is_published_when_the_socket_drops() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut watcher = watcher(&broker).await;
        let (device, _) =
            RawClient::connect_with(broker.addr, with_will("device", QoS::AtLeastOnce, false, 0))
                .await;
        drop(device);
        let publish = watcher.recv_publish().await;
        assert_eq!(publish.topic.as_str(), "status/device");
        assert_eq!(&publish.payload[..], b"offline");
        assert_eq!(publish.qos, QoS::AtLeastOnce);
        assert!(!publish.retain);
        acknowledge(&mut watcher, &publish).await;
        assert!(
            watcher.ping_barrier().await.is_empty(),
            "the will is published once"
        );
        assert_eq!(broker.broker.metrics().wills_published.get(), 1);
        // Not retained: a later subscriber gets nothing.
        let mut later = RawClient::connect(broker.addr, "later").await;
        later.subscribe(1, &[("status/#", QoS::AtMostOnce)]).await;
        assert!(later.ping_barrier().await.is_empty());
    })
    .await;
}

// [MQTT-3.1.2-17] (v3.1.1): will retain 1 publishes a retained message.
#[tokio::test]
async fn retained_will_is_stored() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut watcher = watcher(&broker).await;
        let (device, _) =
            RawClient::connect_with(broker.addr, with_will("device", QoS::AtMostOnce, true, 0))
                .await;
        drop(device);
        let live = watcher.recv_publish().await;
        assert_eq!(&live.payload[..], b"offline");
        let mut later = RawClient::connect(broker.addr, "later").await;
        later
            .subscribe(1, &[("status/device", QoS::AtMostOnce)])
            .await;
        let retained = later.recv_publish().await;
        assert!(retained.retain);
        assert_eq!(&retained.payload[..], b"offline");
    })
    .await;
}

// [MQTT-3.14.4-3] [MQTT-3.1.2-10] (v3.1.1): DISCONNECT discards the will.
// [MQTT-3.1.2-12] (v3.1.1): no will flag, no will.
#[tokio::test]
async fn no_will_after_disconnect_or_without_will_flag() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut watcher = watcher(&broker).await;
        let (device, _) =
            RawClient::connect_with(broker.addr, with_will("device", QoS::AtMostOnce, false, 0))
                .await;
        device.disconnect().await;
        let plain = RawClient::connect(broker.addr, "plain").await;
        drop(plain);
        eventually("both sockets closed", || {
            broker.broker.metrics().connections_open.get() == 1
        })
        .await;
        assert!(watcher.ping_barrier().await.is_empty());
        assert_eq!(broker.broker.metrics().wills_published.get(), 0);
    })
    .await;
}

// [MQTT-3.1.2-24] [MQTT-3.1.2-8] (v3.1.1): keep-alive expiry counts as a
// network failure: the will is published.
#[tokio::test]
async fn will_is_published_on_keep_alive_expiry() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut watcher = watcher(&broker).await;
        let (mut device, _) =
            RawClient::connect_with(broker.addr, with_will("device", QoS::AtMostOnce, false, 1))
                .await;
        let publish = watcher.recv_publish().await;
        assert_eq!(&publish.payload[..], b"offline");
        device.expect_closed().await;
        assert_eq!(broker.broker.metrics().keep_alive_timeouts.get(), 1);
    })
    .await;
}

// [MQTT-4.8.0-1] [MQTT-3.1.2-8] (v3.1.1): a protocol violation closes the
// connection, and the will is published.
#[tokio::test]
async fn will_is_published_on_protocol_violation() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut watcher = watcher(&broker).await;
        let (mut device, _) =
            RawClient::connect_with(broker.addr, with_will("device", QoS::AtMostOnce, false, 0))
                .await;
        device.send_bytes(&[0xC1, 0x00]).await; // PINGREQ with a reserved flag
        device.expect_closed().await;
        assert_eq!(&watcher.recv_publish().await.payload[..], b"offline");
    })
    .await;
}

// [MQTT-3.1.4-2] (v3.1.1): a takeover ends the old connection without
// DISCONNECT, so its will is published.
#[tokio::test]
async fn will_is_published_on_takeover() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut watcher = watcher(&broker).await;
        let (mut old, _) =
            RawClient::connect_with(broker.addr, with_will("device", QoS::AtMostOnce, false, 0))
                .await;
        let _new = RawClient::connect(broker.addr, "device").await;
        old.expect_closed().await;
        assert_eq!(&watcher.recv_publish().await.payload[..], b"offline");
    })
    .await;
}

// A will may not write into the broker's $SYS tree: it is not published.
#[tokio::test]
async fn will_to_sys_is_not_published() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut watcher = RawClient::connect(broker.addr, "watcher").await;
        watcher.subscribe(1, &[("$SYS/#", QoS::AtMostOnce)]).await;
        let mut connect = connect_packet("forger", true, 0);
        connect.will = Some(will("$SYS/broker/uptime", b"forged", QoS::AtMostOnce, true));
        let (forger, _) = RawClient::connect_with(broker.addr, connect).await;
        drop(forger);
        eventually("the forger's socket to close", || {
            broker.broker.metrics().connections_open.get() == 1
        })
        .await;
        assert!(watcher.ping_barrier().await.is_empty());
    })
    .await;
}

// [MQTT-3.14.4-3] (v5.0): only DISCONNECT 0x00 deletes the will; a client
// that ends with an error code (here 0x80) has its will published, as the
// end of the connection is then not a normal one (3.1.2.5, v5.0).
#[tokio::test]
async fn disconnect_with_an_error_code_sends_the_will() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut watcher = RawClient::connect_v5(broker.addr, "watcher").await;
        watcher.subscribe(1, &[("wills/#", QoS::AtMostOnce)]).await;
        let mut connect = connect_v5("failing", true, 0);
        connect.will = Some(will("wills/failing", b"f", QoS::AtMostOnce, false));
        let (mut client, _) = RawClient::connect_with(broker.addr, connect).await;
        client
            .send(&Packet::Disconnect(petrel::protocol::Disconnect {
                reason_code: ReasonCode::UnspecifiedError,
                properties: Default::default(),
            }))
            .await;
        client.expect_closed().await;
        let publish = watcher.recv_publish().await;
        assert_eq!(publish.topic.as_str(), "wills/failing");
    })
    .await;
}

// [MQTT-3.1.2-8] (v5.0): a will waiting for its delay goes when the session
// ends; on shutdown every session ends (they do not outlive the process),
// so the waiting will is published then, here as a retained message.
#[tokio::test]
async fn delayed_wills_are_published_on_shutdown() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut delayed = will("status/sensor", b"offline", QoS::AtLeastOnce, true);
        delayed.properties.will_delay_interval = Some(3600);
        let connect = petrel::protocol::Connect {
            will: Some(delayed),
            properties: petrel::protocol::ConnectProperties {
                session_expiry_interval: Some(7200),
                ..Default::default()
            },
            ..connect_v5("sensor", true, 0)
        };
        let (client, _) = RawClient::connect_with(broker.addr, connect).await;
        drop(client);
        let metrics = std::sync::Arc::clone(broker.broker.metrics());
        eventually("the session parked", || {
            metrics.clients_disconnected.get() == 1
        })
        .await;
        assert_eq!(metrics.wills_published.get(), 0);
        broker.broker.shutdown().await;
        assert_eq!(metrics.wills_published.get(), 1);
    })
    .await;
}

// [MQTT-3.1.2-8] (v5.0): a new connection with Clean Start ends the old
// session, so its will, still waiting for its delay, goes at once.
#[tokio::test]
async fn clean_start_ends_the_session_and_sends_its_waiting_will() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut watcher = RawClient::connect_v5(broker.addr, "watcher").await;
        watcher.subscribe(1, &[("wills/#", QoS::AtMostOnce)]).await;
        let mut delayed = will("wills/restarted", b"gone", QoS::AtMostOnce, false);
        delayed.properties.will_delay_interval = Some(3600);
        let connect = Connect {
            will: Some(delayed),
            properties: petrel::protocol::ConnectProperties {
                session_expiry_interval: Some(7200),
                ..Default::default()
            },
            ..connect_v5("restarter", true, 0)
        };
        let (client, _) = RawClient::connect_with(broker.addr, connect).await;
        drop(client);
        let metrics = std::sync::Arc::clone(broker.broker.metrics());
        eventually("the session parked", || {
            metrics.clients_disconnected.get() == 1
        })
        .await;
        let (_again, connack) =
            RawClient::connect_with(broker.addr, connect_v5("restarter", true, 0)).await;
        assert!(!connack.session_present);
        assert_eq!(
            watcher.recv_publish().await.topic.as_str(),
            "wills/restarted"
        );
    })
    .await;
}
