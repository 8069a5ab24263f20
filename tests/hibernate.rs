//! Hibernation: an idle plain TCP connection waits without a task of its
//! own (`hibernate_after_ms`), and whatever would have reached it awake
//! reaches it hibernating: deliveries at every QoS, its own packets, the
//! keep-alive, a takeover, an administrator's kick, the broker's shutdown.
//! Each test waits on the `petrel_connections_hibernating` gauge, never on
//! a fixed time.

mod common;

use std::time::Duration;

use common::*;
use petrel::config::AdminConfig;
use petrel::protocol::{Packet, QoS, ReasonCode};

/// Short enough that a test waits little; long enough that a connection
/// in the middle of its handshake and subscriptions is never idle.
const HIBERNATE_AFTER_MS: u64 = 20;

async fn broker() -> TestBroker {
    TestBroker::with_config(petrel::Config {
        hibernate_after_ms: HIBERNATE_AFTER_MS,
        ..test_config()
    })
    .await
}

/// Waits until `count` connections hibernate.
async fn hibernating(broker: &TestBroker, count: u64) {
    let metrics = broker.broker.metrics();
    eventually(&format!("{count} hibernating connections"), || {
        metrics.connections_hibernating.get() == count
    })
    .await;
}

/// A client watching `status/#`, where the device's will goes.
async fn watcher(broker: &TestBroker) -> RawClient {
    let mut watcher = RawClient::connect(broker.addr, "watcher").await;
    watcher.subscribe(1, &[("status/#", QoS::AtMostOnce)]).await;
    watcher
}

/// The device's CONNECT: a clean session with a will on `status/device`.
fn device_connect(keep_alive: u16) -> petrel::protocol::Connect {
    let mut connect = connect_packet("device", true, keep_alive);
    connect.will = Some(will("status/device", b"offline", QoS::AtMostOnce, false));
    connect
}

// A hibernating subscriber is woken by what it is sent, at QoS 0 and 1
// [MQTT-3.3.4-1] (v3.1.1), acknowledges it, and hibernates again.
#[tokio::test]
async fn a_hibernating_subscriber_receives_at_qos_0_and_1() {
    timed(async {
        let broker = broker().await;
        let mut subscriber = RawClient::connect(broker.addr, "subscriber").await;
        subscriber
            .subscribe(1, &[("sensors/#", QoS::AtLeastOnce)])
            .await;
        hibernating(&broker, 1).await;
        let mut publisher = RawClient::connect(broker.addr, "publisher").await;
        hibernating(&broker, 2).await;
        publisher
            .publish("sensors/a", b"zero", QoS::AtMostOnce, false, 0)
            .await;
        let publish = subscriber.recv_publish().await;
        assert_eq!(&publish.payload[..], b"zero");
        assert_eq!(publish.qos, QoS::AtMostOnce);
        hibernating(&broker, 2).await;
        publisher
            .publish("sensors/b", b"one", QoS::AtLeastOnce, false, 7)
            .await;
        let publish = subscriber.recv_publish().await;
        assert_eq!(&publish.payload[..], b"one");
        assert_eq!(publish.qos, QoS::AtLeastOnce);
        // Not acknowledged yet: in flight, it keeps the subscriber awake.
        acknowledge(&mut subscriber, &publish).await;
        hibernating(&broker, 2).await;
        assert!(broker.broker.metrics().hibernations.get() >= 5);
        // Both still answer.
        assert!(subscriber.ping_barrier().await.is_empty());
        assert!(publisher.ping_barrier().await.is_empty());
    })
    .await;
}

// A real client (rumqttc) neither notices nor minds its connection
// hibernating between messages.
#[tokio::test]
async fn a_real_client_receives_while_hibernating() {
    timed(async {
        let broker = broker().await;
        let mut subscriber = RumqttClient::connect(broker.addr, "rumqttc-sub", true).await;
        subscriber
            .subscribe("home/+/state", rumqttc::QoS::AtLeastOnce)
            .await;
        hibernating(&broker, 1).await;
        let mut publisher = RawClient::connect(broker.addr, "publisher").await;
        for n in 0..3u8 {
            hibernating(&broker, 2).await;
            publisher
                .publish("home/lamp/state", &[n], QoS::AtLeastOnce, false, 1)
                .await;
            let publish = subscriber.next_publish().await;
            assert_eq!(&publish.payload[..], &[n]);
        }
    })
    .await;
}

// The client's own packets wake it: PINGREQ is answered [MQTT-3.12.4-1]
// (v3.1.1) and counts for the keep-alive, and a DISCONNECT ends it
// without its will [MQTT-3.14.4-3] (v3.1.1).
#[tokio::test]
async fn a_hibernating_client_is_answered_and_may_disconnect() {
    timed(async {
        let broker = broker().await;
        let mut watcher = watcher(&broker).await;
        let connect = device_connect(60);
        let (mut device, _) = RawClient::connect_with(broker.addr, connect).await;
        for _ in 0..3 {
            hibernating(&broker, 2).await;
            device.send(&Packet::PingReq).await;
            assert_eq!(device.recv().await, Packet::PingResp);
        }
        hibernating(&broker, 2).await;
        device.disconnect().await;
        hibernating(&broker, 1).await;
        assert!(watcher.ping_barrier().await.is_empty(), "no will");
        assert_eq!(broker.broker.metrics().wills_published.get(), 0);
    })
    .await;
}

// The keep-alive is kept while the connection hibernates: one and a half
// keep-alives of silence end it [MQTT-3.1.2-24] (v3.1.1), and the will is
// published [MQTT-3.1.2-8] (v3.1.1).
#[tokio::test]
async fn keep_alive_expires_while_hibernating() {
    timed(async {
        let broker = broker().await;
        let mut watcher = watcher(&broker).await;
        hibernating(&broker, 1).await;
        let connect = device_connect(1);
        let (mut device, _) = RawClient::connect_with(broker.addr, connect).await;
        hibernating(&broker, 2).await;
        assert_eq!(&watcher.recv_publish().await.payload[..], b"offline");
        device.expect_closed().await;
        assert_eq!(broker.broker.metrics().keep_alive_timeouts.get(), 1);
    })
    .await;
}

// A socket closed under a hibernating connection is a connection lost:
// the will is published [MQTT-3.1.2-8] (v3.1.1).
#[tokio::test]
async fn a_dropped_socket_is_noticed_while_hibernating() {
    timed(async {
        let broker = broker().await;
        let mut watcher = watcher(&broker).await;
        let connect = device_connect(60);
        let (device, _) = RawClient::connect_with(broker.addr, connect).await;
        hibernating(&broker, 2).await;
        drop(device);
        assert_eq!(&watcher.recv_publish().await.payload[..], b"offline");
        hibernating(&broker, 1).await;
    })
    .await;
}

// A new connection with the client id of a hibernating one takes its
// session over: the old one is told [MQTT-3.1.4-3] (v5.0) with 0x8E, and
// the new one finds the session [MQTT-3.2.2-2] (v5.0).
#[tokio::test]
async fn a_hibernating_session_is_taken_over() {
    timed(async {
        let broker = broker().await;
        let mut connect = connect_v5("phone", false, 60);
        connect.properties.session_expiry_interval = Some(300);
        let (mut old, _) = RawClient::connect_with(broker.addr, connect.clone()).await;
        old.subscribe(1, &[("chat/#", QoS::AtLeastOnce)]).await;
        hibernating(&broker, 1).await;
        let (mut new, connack) = RawClient::connect_with(broker.addr, connect).await;
        assert!(connack.session_present);
        old.expect_disconnect(ReasonCode::SessionTakenOver).await;
        hibernating(&broker, 1).await;
        let mut publisher = RawClient::connect(broker.addr, "publisher").await;
        publisher
            .publish("chat/room", b"hello", QoS::AtLeastOnce, false, 1)
            .await;
        assert_eq!(&new.recv_publish().await.payload[..], b"hello");
    })
    .await;
}

// The broker's shutdown reaches hibernating connections: each is told
// 0x8B Server shutting down [MQTT-3.14.0-1] (v5.0) and the broker
// finishes within its shutdown timeout.
#[tokio::test]
async fn shutdown_closes_hibernating_connections() {
    timed(async {
        let broker = broker().await;
        let mut clients = Vec::new();
        for n in 0..3 {
            clients.push(RawClient::connect_v5(broker.addr, &format!("sleeper-{n}")).await);
        }
        hibernating(&broker, 3).await;
        let TestBroker { broker, .. } = broker;
        let shutdown = tokio::spawn(broker.shutdown());
        for client in &mut clients {
            client
                .expect_disconnect(ReasonCode::ServerShuttingDown)
                .await;
        }
        assert!(shutdown.await.expect("shutdown task"), "every task ended");
    })
    .await;
}

// The admin API reaches a hibernating connection: its report (what
// `GET /api/v1/clients/{id}` shows) and its kick, 0x98 Administrative
// action [MQTT-3.14.0-1] (v5.0); the gauge is scraped as
// `petrel_connections_hibernating`.
#[tokio::test]
async fn the_admin_api_reaches_hibernating_connections() {
    timed(async {
        let broker = TestBroker::with_config(petrel::Config {
            hibernate_after_ms: HIBERNATE_AFTER_MS,
            admin: AdminConfig {
                bind: Some("127.0.0.1:0".parse().expect("address")),
                ..AdminConfig::default()
            },
            ..test_config()
        })
        .await;
        let admin = broker.broker.admin_addr().expect("the admin listener runs");
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let mut client = RawClient::connect_v5(broker.addr, "sleeper").await;
        client.subscribe(1, &[("a/b", QoS::AtMostOnce)]).await;
        hibernating(&broker, 1).await;
        let scrape = http
            .get(format!("http://{admin}/metrics"))
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("body");
        assert!(
            scrape.contains("\npetrel_connections_hibernating 1\n"),
            "{scrape}"
        );
        let report: serde_json::Value = http
            .get(format!("http://{admin}/api/v1/sessions/sleeper"))
            .send()
            .await
            .expect("report")
            .json()
            .await
            .expect("JSON");
        assert_eq!(report["connected"], true, "{report}");
        assert_eq!(report["report"]["subscriptions"][0]["filter"], "a/b");
        hibernating(&broker, 1).await;
        let kicked = http
            .delete(format!("http://{admin}/api/v1/clients/sleeper"))
            .send()
            .await
            .expect("kick");
        assert_eq!(kicked.status(), reqwest::StatusCode::NO_CONTENT);
        client
            .expect_disconnect(ReasonCode::AdministrativeAction)
            .await;
        hibernating(&broker, 0).await;
    })
    .await;
}

// `hibernate_after_ms = 0` turns hibernation off: connections keep their
// tasks however long they idle.
#[tokio::test]
async fn zero_turns_hibernation_off() {
    timed(async {
        let broker = TestBroker::with_config(petrel::Config {
            hibernate_after_ms: 0,
            ..test_config()
        })
        .await;
        let mut client = RawClient::connect(broker.addr, "awake").await;
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(HIBERNATE_AFTER_MS * 2)).await;
            assert!(client.ping_barrier().await.is_empty());
        }
        assert_eq!(broker.broker.metrics().hibernations.get(), 0);
    })
    .await;
}

// A reload that lowers `max_packet_size` applies to new connections only:
// a connection that hibernated keeps the limit it connected with (at MQTT
// 5, the Maximum Packet Size its CONNACK granted [MQTT-3.2.2-15] (v5.0)).
#[tokio::test]
async fn a_hibernated_connection_keeps_its_packet_size_limit_across_a_reload() {
    timed(async {
        let config = |max_packet_size| petrel::Config {
            hibernate_after_ms: HIBERNATE_AFTER_MS,
            max_packet_size,
            ..test_config()
        };
        let broker = TestBroker::with_config(config(4096)).await;
        let mut subscriber = RawClient::connect(broker.addr, "subscriber").await;
        subscriber.subscribe(1, &[("big/#", QoS::AtMostOnce)]).await;
        let mut publisher = RawClient::connect(broker.addr, "publisher").await;
        hibernating(&broker, 2).await;
        let lowered = config(256);
        let checked = petrel::reload::Checked::of(&lowered).expect("a valid configuration");
        broker.broker.apply(lowered, checked).await;
        publisher
            .publish("big/a", &[7; 1024], QoS::AtMostOnce, false, 0)
            .await;
        let publish = subscriber.recv_publish().await;
        assert_eq!(publish.payload.len(), 1024);
        // A new connection has the new limit.
        let mut late = RawClient::connect(broker.addr, "late").await;
        late.publish("big/b", &[7; 1024], QoS::AtMostOnce, false, 0)
            .await;
        late.expect_closed().await;
    })
    .await;
}
