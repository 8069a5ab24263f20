//! Packets held for the store go out as soon as it has synced, with
//! nobody nudging: with `durability = "sync"` a session or a bridge holds
//! back each packet that acknowledges (or hands over) a change until the
//! store has it, and the store's commit must wake it. In every test the
//! waiting side sends nothing after its last packet and then reads: a
//! packet that waited for the peer's next packet (a PINGREQ, say) would
//! never come, and the read times out.
//!
//! Clients: PUBLISH (a QoS 2 message's first sending, its packet id made
//! durable first), PUBREL, PUBACK, PUBREC, PUBCOMP, SUBACK and UNSUBACK, at
//! MQTT 3.1.1 and 5.0. Bridges: PUBLISH and PUBREL to the remote, PUBACK,
//! PUBREC and PUBCOMP for what the remote sends, over 3.1.1 and 5.0.

mod common;

use common::*;
use petrel::protocol::{Ack, Connect, ConnectProperties, Packet, ProtocolVersion, QoS, ReasonCode};
use petrel::Config;

const VERSIONS: [ProtocolVersion; 2] = [ProtocolVersion::V3_1_1, ProtocolVersion::V5];

/// A CONNECT at `version`: persistent (3.1.1 clean session 0, 5.0 with a
/// Session Expiry Interval) or clean.
fn connect_at(version: ProtocolVersion, client_id: &str, persistent: bool) -> Connect {
    match version {
        ProtocolVersion::V5 => Connect {
            properties: ConnectProperties {
                session_expiry_interval: persistent.then_some(300),
                ..ConnectProperties::default()
            },
            ..connect_v5(client_id, !persistent, 0)
        },
        _ => connect_packet(client_id, !persistent, 0),
    }
}

async fn client(
    broker: &TestBroker,
    version: ProtocolVersion,
    client_id: &str,
    persistent: bool,
) -> RawClient {
    let connect = connect_at(version, client_id, persistent);
    let (client, connack) = RawClient::connect_with(broker.addr, connect).await;
    assert_eq!(connack.reason_code, ReasonCode::Success);
    client
}

/// A broker with a store in `dir` (sync), and a persistent subscriber to
/// `t` at `qos`.
async fn with_subscriber(
    dir: &DataDir,
    version: ProtocolVersion,
    qos: QoS,
) -> (TestBroker, RawClient) {
    let broker = dir.start().await;
    let mut subscriber = client(&broker, version, "subscriber", true).await;
    subscriber.subscribe(1, &[("t", qos)]).await;
    (broker, subscriber)
}

/// Stops `broker` once `clients` have closed, so that its graceful close
/// of their connections ends at once.
async fn stop<T>(broker: TestBroker, clients: T) {
    drop(clients);
    broker.broker.shutdown().await;
}

fn expect_ack(packet: Packet, what: &str) -> Ack {
    match (packet, what) {
        (Packet::PubAck(ack), "PUBACK")
        | (Packet::PubRec(ack), "PUBREC")
        | (Packet::PubRel(ack), "PUBREL")
        | (Packet::PubComp(ack), "PUBCOMP") => ack,
        (other, _) => panic!("expected {what}, got {other:?}"),
    }
}

// [MQTT-4.3.3-1] (v3.1.1) [MQTT-4.3.3-1] (v5.0): a QoS 2 message to an
// online persistent subscriber that only waits. Its first sending waits
// for its packet id to be durable, and the commit must release it.
#[tokio::test]
async fn qos2_publish_reaches_an_idle_persistent_subscriber() {
    timed(async {
        for version in VERSIONS {
            let dir = DataDir::new("held-publish");
            let (broker, mut subscriber) = with_subscriber(&dir, version, QoS::ExactlyOnce).await;
            let mut publisher = client(&broker, version, "publisher", false).await;
            publisher
                .publish("t", b"m", QoS::ExactlyOnce, false, 1)
                .await;
            let publish = subscriber.recv_publish().await;
            assert_eq!(
                (publish.payload.as_ref(), publish.qos),
                (&b"m"[..], QoS::ExactlyOnce),
                "{version:?}"
            );
            stop(broker, (subscriber, publisher)).await;
        }
    })
    .await;
}

// [MQTT-4.3.3-1] (v3.1.1): the PUBREL that answers a subscriber's PUBREC
// waits for the store to note the release, then goes without a nudge.
#[tokio::test]
async fn pubrel_reaches_an_idle_persistent_subscriber() {
    timed(async {
        for version in VERSIONS {
            let dir = DataDir::new("held-pubrel");
            let (broker, mut subscriber) = with_subscriber(&dir, version, QoS::ExactlyOnce).await;
            let mut publisher = client(&broker, version, "publisher", false).await;
            publisher
                .publish("t", b"m", QoS::ExactlyOnce, false, 1)
                .await;
            let publish = subscriber.recv_publish().await;
            subscriber.answer(&publish).await;
            let pubrel = expect_ack(subscriber.recv().await, "PUBREL");
            assert_eq!(Some(pubrel.packet_id), publish.packet_id, "{version:?}");
            stop(broker, (subscriber, publisher)).await;
        }
    })
    .await;
}

// [MQTT-4.3.2-1] (v3.1.1): the PUBACK of a message queued for a persistent
// session waits for the store, then goes to the publisher that waits.
#[tokio::test]
async fn puback_reaches_an_idle_publisher() {
    timed(async {
        for version in VERSIONS {
            let dir = DataDir::new("held-puback");
            let (broker, _subscriber) = with_subscriber(&dir, version, QoS::AtLeastOnce).await;
            let mut publisher = client(&broker, version, "publisher", false).await;
            publisher
                .send(&publish_packet("t", b"m", QoS::AtLeastOnce, false, Some(7)))
                .await;
            let puback = expect_ack(publisher.recv().await, "PUBACK");
            assert_eq!(puback.packet_id, id(7), "{version:?}");
            stop(broker, (_subscriber, publisher)).await;
        }
    })
    .await;
}

// [MQTT-4.3.3-2] (v3.1.1): the PUBREC of a QoS 2 message from a
// persistent publisher (its packet id now awaits PUBREL, durably).
#[tokio::test]
async fn pubrec_reaches_an_idle_publisher() {
    timed(async {
        for version in VERSIONS {
            let dir = DataDir::new("held-pubrec");
            let broker = dir.start().await;
            let mut publisher = client(&broker, version, "publisher", true).await;
            publisher
                .send(&publish_packet("t", b"m", QoS::ExactlyOnce, false, Some(7)))
                .await;
            let pubrec = expect_ack(publisher.recv().await, "PUBREC");
            assert_eq!(pubrec.packet_id, id(7), "{version:?}");
            stop(broker, publisher).await;
        }
    })
    .await;
}

// [MQTT-4.3.3-2] (v3.1.1): the PUBCOMP that releases a persistent
// publisher's packet id waits for the store to forget the id.
#[tokio::test]
async fn pubcomp_reaches_an_idle_publisher() {
    timed(async {
        for version in VERSIONS {
            let dir = DataDir::new("held-pubcomp");
            let broker = dir.start().await;
            let mut publisher = client(&broker, version, "publisher", true).await;
            publisher
                .send(&publish_packet("t", b"m", QoS::ExactlyOnce, false, Some(7)))
                .await;
            expect_ack(publisher.recv().await, "PUBREC");
            publisher.send(&Packet::PubRel(Ack::new(id(7)))).await;
            let pubcomp = expect_ack(publisher.recv().await, "PUBCOMP");
            assert_eq!(pubcomp.packet_id, id(7), "{version:?}");
            stop(broker, publisher).await;
        }
    })
    .await;
}

// [MQTT-3.8.4-1] (v3.1.1): a persistent session's SUBACK waits for its
// subscription to be durable, then goes to the client that waits.
#[tokio::test]
async fn suback_reaches_an_idle_persistent_client() {
    timed(async {
        for version in VERSIONS {
            let dir = DataDir::new("held-suback");
            let broker = dir.start().await;
            let mut subscriber = client(&broker, version, "subscriber", true).await;
            let codes = subscriber.subscribe(3, &[("t", QoS::AtLeastOnce)]).await;
            assert_eq!(codes, vec![ReasonCode::GrantedQoS1], "{version:?}");
            stop(broker, subscriber).await;
        }
    })
    .await;
}

// [MQTT-3.10.4-4] (v3.1.1): a persistent session's UNSUBACK waits for the
// store to forget the subscription.
#[tokio::test]
async fn unsuback_reaches_an_idle_persistent_client() {
    timed(async {
        for version in VERSIONS {
            let dir = DataDir::new("held-unsuback");
            let (broker, mut subscriber) = with_subscriber(&dir, version, QoS::AtLeastOnce).await;
            subscriber.send(&unsubscribe_packet(4, &["t"])).await;
            match subscriber.recv().await {
                Packet::UnsubAck(unsuback) => assert_eq!(unsuback.packet_id, id(4)),
                other => panic!("{version:?}: expected UNSUBACK, got {other:?}"),
            }
            stop(broker, subscriber).await;
        }
    })
    .await;
}

/// A broker with a store in `dir` and one bridge `uplink` at `protocol`
/// to `remote`, with the topic rule `rule` (TOML) and a keep-alive long
/// enough that no PINGREQ moves anything during a test.
async fn bridged(dir: &DataDir, remote: &FakeRemote, protocol: &str, rule: &str) -> TestBroker {
    let text = format!(
        "sys_interval = 0\n[[bridge]]\nname = \"uplink\"\naddresses = [\"{}\"]\n\
         protocol = \"{protocol}\"\nkeep_alive = 600\n\
         reconnect_min_ms = 50\nreconnect_max_ms = 200\n[[bridge.topic]]\n{rule}",
        remote.addr
    );
    let config = Config::from_toml(&text).expect("bridge configuration");
    TestBroker::with_config(Config {
        persistence: true,
        data_dir: dir.path().to_owned(),
        bridges: config.bridges,
        ..dir.config()
    })
    .await
}

const OUT_RULE: &str = "filter = \"t\"\ndirection = \"out\"\nqos = 2\n";
const IN_RULE: &str = "filter = \"in/#\"\ndirection = \"in\"\nqos = 2\n";

/// The bridge's version as the test speaks it.
fn version_of(protocol: &str) -> ProtocolVersion {
    if protocol == "5.0" {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V3_1_1
    }
}

// A QoS 2 message going out over a bridge: its first sending to the
// remote waits for its packet id to be durable, and the commit releases
// it while the remote only waits.
#[tokio::test]
async fn bridge_qos2_publish_reaches_an_idle_remote() {
    timed(async {
        for protocol in ["5.0", "3.1.1"] {
            let dir = DataDir::new("held-bridge-publish");
            let remote = FakeRemote::bind().await;
            let local = bridged(&dir, &remote, protocol, OUT_RULE).await;
            let (mut far, _) = remote.accept().await;
            let mut publisher = RawClient::connect(local.addr, "publisher").await;
            publisher
                .publish("t", b"m", QoS::ExactlyOnce, false, 1)
                .await;
            let publish = far.recv_publish().await;
            assert_eq!(
                (publish.topic.as_str(), publish.qos),
                ("t", QoS::ExactlyOnce),
                "{protocol}"
            );
            stop(local, (far, publisher)).await;
        }
    })
    .await;
}

// The PUBREL answering the remote's PUBREC waits for the store, then goes.
#[tokio::test]
async fn bridge_pubrel_reaches_an_idle_remote() {
    timed(async {
        for protocol in ["5.0", "3.1.1"] {
            let dir = DataDir::new("held-bridge-pubrel");
            let remote = FakeRemote::bind().await;
            let local = bridged(&dir, &remote, protocol, OUT_RULE).await;
            let (mut far, _) = remote.accept().await;
            let mut publisher = RawClient::connect(local.addr, "publisher").await;
            publisher
                .publish("t", b"m", QoS::ExactlyOnce, false, 1)
                .await;
            let publish = far.recv_publish().await;
            far.answer(&publish).await;
            let pubrel = expect_ack(far.recv().await, "PUBREL");
            assert_eq!(Some(pubrel.packet_id), publish.packet_id, "{protocol}");
            stop(local, (far, publisher)).await;
        }
    })
    .await;
}

/// What the remote sends the bridge at `qos`, the bridge's answer read by
/// a remote that waits; a persistent local subscriber makes the message
/// one the store must have before it is acknowledged.
async fn remote_publishes(protocol: &str, qos: QoS, then_pubrel: bool) -> Packet {
    let dir = DataDir::new("held-bridge-in");
    let remote = FakeRemote::bind().await;
    let local = bridged(&dir, &remote, protocol, IN_RULE).await;
    let mut near = client(&local, ProtocolVersion::V3_1_1, "near", true).await;
    near.subscribe(1, &[("in/#", QoS::AtLeastOnce)]).await;
    let (mut far, _) = remote.accept_subscribing().await;
    assert_eq!(far.version, version_of(protocol));
    far.send(&publish_packet("in/x", b"m", qos, false, Some(9)))
        .await;
    let mut answer = far.recv().await;
    if then_pubrel {
        expect_ack(answer, "PUBREC");
        far.send(&Packet::PubRel(Ack::new(id(9)))).await;
        answer = far.recv().await;
    }
    stop(local, (near, far)).await;
    answer
}

#[tokio::test]
async fn bridge_puback_reaches_an_idle_remote() {
    timed(async {
        for protocol in ["5.0", "3.1.1"] {
            let answer = remote_publishes(protocol, QoS::AtLeastOnce, false).await;
            assert_eq!(expect_ack(answer, "PUBACK").packet_id, id(9), "{protocol}");
        }
    })
    .await;
}

#[tokio::test]
async fn bridge_pubrec_reaches_an_idle_remote() {
    timed(async {
        for protocol in ["5.0", "3.1.1"] {
            let answer = remote_publishes(protocol, QoS::ExactlyOnce, false).await;
            assert_eq!(expect_ack(answer, "PUBREC").packet_id, id(9), "{protocol}");
        }
    })
    .await;
}

#[tokio::test]
async fn bridge_pubcomp_reaches_an_idle_remote() {
    timed(async {
        for protocol in ["5.0", "3.1.1"] {
            let answer = remote_publishes(protocol, QoS::ExactlyOnce, true).await;
            assert_eq!(expect_ack(answer, "PUBCOMP").packet_id, id(9), "{protocol}");
        }
    })
    .await;
}
