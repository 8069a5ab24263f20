//! Bridges between two in-process brokers: messages out to the remote, in
//! from it and both ways, with Mosquitto's topic prefixes; nothing echoed
//! back; the connection state under `$SYS`; and store-and-forward while
//! the remote is down.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use petrel::protocol::{QoS, ReasonCode};
use petrel::Config;

/// A broker (`local`) with one bridge called `uplink` to `remote`, whose
/// `[[bridge]]` table gets `extra` and whose topic rules are `rules`
/// (TOML `[[bridge.topic]]` tables).
fn bridged_config(remote: SocketAddr, extra: &str, rules: &str) -> Config {
    let text = format!(
        "sys_interval = 0\npersistence = false\n\n[[bridge]]\nname = \"uplink\"\n\
         addresses = [\"{remote}\"]\nreconnect_min_ms = 50\nreconnect_max_ms = 200\n\
         keep_alive = 5\n{extra}\n{rules}"
    );
    Config::from_toml(&text).expect("bridge configuration")
}

fn rule(filter: &str, direction: &str, qos: u8, local_prefix: &str, remote_prefix: &str) -> String {
    format!(
        "[[bridge.topic]]\nfilter = \"{filter}\"\ndirection = \"{direction}\"\nqos = {qos}\n\
         local_prefix = \"{local_prefix}\"\nremote_prefix = \"{remote_prefix}\"\n"
    )
}

/// Waits until `broker` says its bridge `uplink` is up (or down), reading
/// the retained `$SYS/broker/connection/uplink/state`.
async fn wait_for_state(broker: &TestBroker, up: bool) {
    let want: &[u8] = if up { b"1" } else { b"0" };
    let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
    loop {
        let mut watcher = RawClient::connect(broker.addr, "state-watcher").await;
        watcher
            .subscribe(
                1,
                &[("$SYS/broker/connection/uplink/state", QoS::AtMostOnce)],
            )
            .await;
        let state = watcher.recv_publish().await;
        if state.payload.as_ref() == want {
            return;
        }
        watcher.disconnect().await;
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bridge never got there"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn subscriber(broker: &TestBroker, client_id: &str, filter: &str) -> RawClient {
    let mut client = RawClient::connect(broker.addr, client_id).await;
    client.subscribe(1, &[(filter, QoS::AtLeastOnce)]).await;
    client
}

/// Even messages go at QoS 1, odd ones at QoS 2.
fn qos_of(index: u16) -> QoS {
    if index.is_multiple_of(2) {
        QoS::AtLeastOnce
    } else {
        QoS::ExactlyOnce
    }
}

/// Publishes messages `0..count` on `topic`, at [`qos_of`] each.
async fn publish_numbered(client: &mut RawClient, topic: &str, count: u16) {
    for index in 0..count {
        let payload = index.to_string();
        client
            .publish(topic, payload.as_bytes(), qos_of(index), false, index + 1)
            .await;
    }
}

/// Receives messages `0..count` on `topic`, in order: each at least once
/// (a QoS 1 one again only after an earlier one), QoS 2 ones exactly once.
async fn receive_numbered(client: &mut RawClient, topic: &str, count: u16) {
    let mut next = 0u16;
    while next < count {
        let publish = match client.recv().await {
            petrel::protocol::Packet::Publish(publish) => publish,
            petrel::protocol::Packet::PubRel(ack) => {
                client.send(&petrel::protocol::Packet::PubComp(ack)).await;
                continue;
            }
            other => panic!("unexpected {other:?}"),
        };
        client.answer(&publish).await;
        assert_eq!(publish.topic.as_str(), topic);
        let index: u16 = std::str::from_utf8(&publish.payload)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(publish.qos, qos_of(index));
        assert!(
            index == next || (index < next && publish.qos == QoS::AtLeastOnce),
            "message {next} missing or a QoS 2 one twice: {index} came"
        );
        if index == next {
            next += 1;
        }
    }
}

async fn receive_one(client: &mut RawClient) -> petrel::protocol::Publish {
    let publish = client.recv_publish().await;
    client.answer(&publish).await;
    publish
}

// Out: a local message goes to the remote with its local prefix stripped
// and the remote prefix added (Mosquitto's `topic sensors/# out 1 site/
// gw1/`), at the rule's QoS.
#[tokio::test]
async fn out_rule_forwards_with_prefixes() {
    timed(async {
        for protocol in ["5.0", "3.1.1"] {
            let remote = TestBroker::start().await;
            let mut far = subscriber(&remote, "far", "gw1/#").await;
            let local = TestBroker::with_config(bridged_config(
                remote.addr,
                &format!("protocol = \"{protocol}\""),
                &rule("sensors/#", "out", 1, "site/", "gw1/"),
            ))
            .await;
            wait_for_state(&local, true).await;
            let mut publisher = RawClient::connect(local.addr, "sensor").await;
            publisher
                .publish("site/sensors/kitchen", b"21.5", QoS::AtLeastOnce, false, 1)
                .await;
            publisher
                .publish("site/other", b"not forwarded", QoS::AtLeastOnce, false, 2)
                .await;
            let got = receive_one(&mut far).await;
            assert_eq!(got.topic.as_str(), "gw1/sensors/kitchen", "{protocol}");
            assert_eq!(got.payload.as_ref(), b"21.5");
            assert_eq!(got.qos, QoS::AtLeastOnce);
            assert!(
                far.ping_barrier().await.is_empty(),
                "only what a rule covers"
            );
            local.broker.shutdown().await;
            remote.broker.shutdown().await;
        }
    })
    .await;
}

// In: a remote message comes here with the remote prefix stripped and the
// local prefix added.
#[tokio::test]
async fn in_rule_forwards_with_prefixes() {
    timed(async {
        let remote = TestBroker::start().await;
        let local = TestBroker::with_config(bridged_config(
            remote.addr,
            "",
            &rule("cmd/#", "in", 1, "from-cloud/", "gw1/"),
        ))
        .await;
        wait_for_state(&local, true).await;
        let mut near = subscriber(&local, "near", "from-cloud/#").await;
        let mut publisher = RawClient::connect(remote.addr, "cloud").await;
        publisher
            .publish("gw1/cmd/reboot", b"now", QoS::AtLeastOnce, false, 1)
            .await;
        let got = receive_one(&mut near).await;
        assert_eq!(got.topic.as_str(), "from-cloud/cmd/reboot");
        assert_eq!(got.payload.as_ref(), b"now");
        local.broker.shutdown().await;
        remote.broker.shutdown().await;
    })
    .await;
}

// Both ways on `#`: each side's message reaches the other once and is not
// echoed back to where it came from ([MQTT-3.8.3-3] (v5.0) No Local on
// the bridge's subscriptions, at both ends). A sentinel published on the
// other side after the message arrived there comes through the same
// bridge connection behind any echo, so nothing may arrive before it.
#[tokio::test]
async fn both_ways_without_echo() {
    timed(async {
        for protocol in ["5.0", "3.1.1"] {
            both_ways_over(protocol).await;
        }
    })
    .await;
}

/// Over 3.1.1, which has no No Local, the bridge marks itself the way
/// Mosquitto's bridges do (protocol level 0x84) and the remote Petrel
/// keeps its own messages from it.
async fn both_ways_over(protocol: &str) {
    {
        let remote = TestBroker::start().await;
        let local = TestBroker::with_config(bridged_config(
            remote.addr,
            &format!("protocol = \"{protocol}\""),
            &rule("#", "both", 1, "", ""),
        ))
        .await;
        wait_for_state(&local, true).await;
        let mut near = subscriber(&local, "near", "room/#").await;
        let mut far = subscriber(&remote, "far", "room/#").await;
        let sides = [(&local, &remote), (&remote, &local)];
        for (index, (from, to)) in sides.into_iter().enumerate() {
            let (source, sink) = if index == 0 {
                (&mut near, &mut far)
            } else {
                (&mut far, &mut near)
            };
            let mut publisher = RawClient::connect(from.addr, "publisher").await;
            publisher
                .publish("room/message", b"once", QoS::AtLeastOnce, false, 1)
                .await;
            assert_eq!(receive_one(source).await.payload.as_ref(), b"once");
            assert_eq!(receive_one(sink).await.payload.as_ref(), b"once");
            let mut sentinel = RawClient::connect(to.addr, "sentinel").await;
            sentinel
                .publish("room/sentinel", b"end", QoS::AtLeastOnce, false, 1)
                .await;
            let next = receive_one(source).await;
            assert_eq!(
                next.payload.as_ref(),
                b"end",
                "{protocol}: an echo came back first"
            );
            assert_eq!(receive_one(sink).await.payload.as_ref(), b"end");
        }
        local.broker.shutdown().await;
        remote.broker.shutdown().await;
    }
}

// The remote goes away while messages flow: they wait in the bridge's
// session and go out in order when it is back (every one at least once,
// duplicates only after the reconnect); the state goes 1, 0, 1.
#[tokio::test]
async fn messages_wait_for_the_remote_and_go_out_in_order() {
    timed(async {
        let remote_dir =
            std::env::temp_dir().join(format!("petrel-bridge-remote-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&remote_dir);
        let remote_config = Config {
            persistence: true,
            data_dir: remote_dir.clone(),
            ..test_config()
        };
        let remote = TestBroker::with_config(remote_config.clone()).await;
        let remote_addr = remote.addr;
        // A persistent subscriber at the remote, away while it restarts.
        let (mut far, _) =
            RawClient::connect_with(remote_addr, connect_packet("far", false, 0)).await;
        far.subscribe(1, &[("gw1/#", QoS::ExactlyOnce)]).await;
        far.disconnect().await;
        let local = TestBroker::with_config(bridged_config(
            remote_addr,
            "",
            &rule("data/#", "out", 2, "", "gw1/"),
        ))
        .await;
        wait_for_state(&local, true).await;
        assert!(remote.broker.shutdown().await);
        wait_for_state(&local, false).await;
        let mut publisher = RawClient::connect(local.addr, "producer").await;
        publish_numbered(&mut publisher, "data/x", 20).await;
        // The remote comes back on the same address.
        let listener = tokio::net::TcpListener::bind(remote_addr)
            .await
            .expect("rebind");
        let remote = petrel::Broker::start(remote_config, vec![listener]).expect("restart");
        wait_for_state(&local, true).await;
        let (mut far, connack) =
            RawClient::connect_with(remote_addr, connect_packet("far", false, 0)).await;
        assert!(connack.session_present);
        receive_numbered(&mut far, "gw1/data/x", 20).await;
        local.broker.shutdown().await;
        remote.shutdown().await;
        let _ = std::fs::remove_dir_all(&remote_dir);
    })
    .await;
}

// The bridges' own client ids are reserved.
#[tokio::test]
async fn bridge_client_ids_are_reserved() {
    timed(async {
        let broker = TestBroker::start().await;
        let (_, connack) =
            RawClient::connect_with(broker.addr, connect_packet("$bridge/uplink", true, 0)).await;
        assert_eq!(connack.reason_code, ReasonCode::ClientIdentifierNotValid);
    })
    .await;
}

// Over TLS with a client certificate (the gateway-to-cloud case): the
// remote's listener requires one, and the bridge presents it.
#[tokio::test]
async fn over_mutual_tls() {
    timed(async {
        let pki = common::pki::Pki::new("bridge");
        let tls_listener = petrel::transport::Listener {
            tcp: tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind"),
            tls: Some(petrel::transport::tls::Tls::load(&pki.server_tls(true), 0).expect("TLS")),
            websocket: None,
            proxy_protocol: false,
            allow_anonymous: Some(false),
            config: None,
        };
        let plain = petrel::transport::Listener::tcp(
            tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind"),
        );
        let remote =
            petrel::Broker::start_listeners(test_config(), vec![tls_listener, plain], Vec::new())
                .expect("remote starts");
        let (tls_addr, plain_addr) = (remote.local_addrs()[0], remote.local_addrs()[1]);
        let remote = TestBroker {
            broker: remote,
            addr: plain_addr,
        };
        let mut far = subscriber(&remote, "far", "gw1/#").await;
        let tls = format!(
            "[bridge.tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            pki.path("ca.pem").display(),
            pki.path("client.pem").display(),
            pki.path("client.key").display()
        );
        let local = TestBroker::with_config(bridged_config(
            tls_addr,
            &tls,
            &rule("sensors/#", "out", 1, "", "gw1/"),
        ))
        .await;
        wait_for_state(&local, true).await;
        let mut publisher = RawClient::connect(local.addr, "sensor").await;
        publisher
            .publish("sensors/door", b"open", QoS::AtLeastOnce, false, 1)
            .await;
        let got = receive_one(&mut far).await;
        assert_eq!(got.topic.as_str(), "gw1/sensors/door");
        local.broker.shutdown().await;
        remote.broker.shutdown().await;
    })
    .await;
}

// With persistence, what waits for the remote while it is down survives a
// restart of this broker, and goes out once both are up.
#[tokio::test]
async fn the_queue_survives_a_restart_while_the_remote_is_down() {
    timed(async {
        let local_dir =
            std::env::temp_dir().join(format!("petrel-bridge-local-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&local_dir);
        // A port nobody listens on yet: the remote comes later.
        let remote_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let remote_addr = remote_listener.local_addr().expect("address");
        drop(remote_listener);
        let local_config = Config {
            persistence: true,
            data_dir: local_dir.clone(),
            ..bridged_config(remote_addr, "", &rule("data/#", "out", 2, "", ""))
        };
        let local = TestBroker::with_config(local_config.clone()).await;
        let mut publisher = RawClient::connect(local.addr, "producer").await;
        publish_numbered(&mut publisher, "data/y", 5).await;
        publisher.disconnect().await;
        assert!(local.broker.shutdown().await);
        // The remote is back, with a subscriber, before this broker is.
        let listener = tokio::net::TcpListener::bind(remote_addr)
            .await
            .expect("bind");
        let remote = petrel::Broker::start(test_config(), vec![listener]).expect("remote starts");
        let remote = TestBroker {
            broker: remote,
            addr: remote_addr,
        };
        let mut far = RawClient::connect(remote.addr, "far").await;
        far.subscribe(1, &[("data/#", QoS::ExactlyOnce)]).await;
        let local = TestBroker::with_config(local_config).await;
        receive_numbered(&mut far, "data/y", 5).await;
        local.broker.shutdown().await;
        remote.broker.shutdown().await;
        let _ = std::fs::remove_dir_all(&local_dir);
    })
    .await;
}

/// A broker with a store (sync) and one bridge to `remote` at `protocol`
/// with an out rule for `t` at QoS 2; the bridge's connection, played by
/// the test, is returned with the broker.
async fn bridged_to_fake(
    dir: &DataDir,
    remote: &FakeRemote,
    protocol: &str,
) -> (TestBroker, RawClient) {
    let text = format!(
        "[[bridge]]\nname = \"uplink\"\naddresses = [\"{}\"]\nprotocol = \"{protocol}\"\n\
         keep_alive = 600\n[[bridge.topic]]\nfilter = \"t\"\ndirection = \"out\"\nqos = 2\n",
        remote.addr
    );
    let bridges = Config::from_toml(&text)
        .expect("bridge configuration")
        .bridges;
    let local = TestBroker::with_config(Config {
        bridges,
        ..dir.config()
    })
    .await;
    let (far, _) = remote.accept().await;
    (local, far)
}

// [MQTT-4.3.3-1] (v3.1.1): a PUBREC the remote sends again (its PUBREL
// was lost, say) is answered with PUBREL again, and the store, which has
// the message as released since the first, is not written a second time:
// the store's commit count does not move.
#[tokio::test]
async fn a_repeated_pubrec_from_the_remote_writes_the_store_once() {
    timed(async {
        for protocol in ["5.0", "3.1.1"] {
            let dir = DataDir::new("bridge-pubrec-twice");
            let remote = FakeRemote::bind().await;
            let (local, mut far) = bridged_to_fake(&dir, &remote, protocol).await;
            let mut publisher = RawClient::connect(local.addr, "publisher").await;
            publisher.publish("t", b"m", QoS::ExactlyOnce, false, 1).await;
            let publish = far.recv_publish().await;
            let packet_id = publish.packet_id.expect("QoS 2 has a packet id");
            let pubrec = petrel::protocol::Packet::PubRec(petrel::protocol::Ack::new(packet_id));
            far.send(&pubrec).await;
            assert!(matches!(far.recv().await, petrel::protocol::Packet::PubRel(ack) if ack.packet_id == packet_id));
            let commits = local.broker.metrics().store_commits.get();
            far.send(&pubrec).await;
            assert!(matches!(far.recv().await, petrel::protocol::Packet::PubRel(ack) if ack.packet_id == packet_id));
            assert_eq!(
                local.broker.metrics().store_commits.get(),
                commits,
                "{protocol}: the repeated PUBREC was written to the store"
            );
            drop((far, publisher));
            local.broker.shutdown().await;
        }
    })
    .await;
}

// 4.3.3 (v5.0): a PUBREC for a packet id the bridge has not in flight is
// answered with PUBREL 0x92 (Packet Identifier not found) at MQTT 5, as a
// client session answers one; a plain PUBREL at 3.1.1, which has no codes.
#[tokio::test]
async fn a_pubrec_for_an_unknown_packet_id_gets_pubrel_0x92() {
    timed(async {
        for (protocol, expected) in [
            ("5.0", ReasonCode::PacketIdentifierNotFound),
            ("3.1.1", ReasonCode::Success),
        ] {
            let dir = DataDir::new("bridge-pubrec-unknown");
            let remote = FakeRemote::bind().await;
            let (local, mut far) = bridged_to_fake(&dir, &remote, protocol).await;
            far.send(&petrel::protocol::Packet::PubRec(
                petrel::protocol::Ack::new(id(777)),
            ))
            .await;
            match far.recv().await {
                petrel::protocol::Packet::PubRel(ack) => {
                    assert_eq!(ack.packet_id, id(777));
                    assert_eq!(ack.reason_code, expected, "{protocol}");
                }
                other => panic!("{protocol}: expected PUBREL, got {other:?}"),
            }
            drop(far);
            local.broker.shutdown().await;
        }
    })
    .await;
}

// A remote that is slow to read what the bridge sends, while it sends a
// lot itself: the bridge's writes back up, and it must keep reading the
// remote all the same. The remote (a broker) may equally stop reading
// while its writes to the bridge back up, and two such waits deadlock
// until the keep-alive ends the link. Here the remote reads nothing at
// all until it has written 32 MB.
#[tokio::test]
async fn a_bridge_keeps_reading_while_its_writes_back_up() {
    timed(async {
        let remote = FakeRemote::bind().await;
        let text = format!(
            "sys_interval = 0\npersistence = false\nmax_queued_messages = 1000\n\
             [[bridge]]\nname = \"uplink\"\naddresses = [\"{}\"]\nkeep_alive = 600\n{}{}",
            remote.addr,
            rule("up/#", "out", 0, "", ""),
            rule("down/#", "in", 0, "", "")
        );
        let local =
            TestBroker::with_config(Config::from_toml(&text).expect("bridge configuration")).await;
        let (mut far, _) = remote.accept_subscribing().await;
        // 16 MB for the bridge to send: more than the sockets hold.
        let mut publisher = RawClient::connect(local.addr, "publisher").await;
        let payload = vec![b'u'; 64 * 1024];
        for _ in 0..256 {
            publisher
                .publish("up/load", &payload, QoS::AtMostOnce, false, 0)
                .await;
        }
        publisher.ping_barrier().await;
        // 32 MB from the remote, none of the bridge's bytes read meanwhile.
        let down = publish_packet("down/load", &payload, QoS::AtMostOnce, false, None);
        let mut bytes = bytes::BytesMut::new();
        petrel::protocol::encode(&down, far.version, &mut bytes).expect("encode");
        for _ in 0..512 {
            assert!(
                tokio::time::timeout(RECV_TIMEOUT, far.stream_write(&bytes))
                    .await
                    .unwrap_or(false),
                "the bridge stopped reading its remote"
            );
        }
        drop((far, publisher));
        local.broker.shutdown().await;
    })
    .await;
}

// [MQTT-3.2.2-5] (v5.0): the remote answers a reconnect with Session
// Present 0, so the QoS 2 message it had sent and not released is gone
// with its session, and it may use the packet id again: a new message
// under that id is a new message, delivered here, not taken for a resend.
#[tokio::test]
async fn a_remote_without_the_session_may_reuse_a_qos2_packet_id() {
    timed(async {
        for protocol in ["5.0", "3.1.1"] {
            let remote = FakeRemote::bind().await;
            let text = format!(
                "sys_interval = 0\npersistence = false\n[[bridge]]\nname = \"uplink\"\n\
                 addresses = [\"{}\"]\nprotocol = \"{protocol}\"\nkeep_alive = 600\n\
                 reconnect_min_ms = 50\nreconnect_max_ms = 100\n{}",
                remote.addr,
                rule("d", "in", 2, "", "")
            );
            let local =
                TestBroker::with_config(Config::from_toml(&text).expect("bridge configuration"))
                    .await;
            let (mut far, _) = remote.accept_subscribing().await;
            let mut near = subscriber(&local, "near", "d").await;
            let packet_id = 7;
            for (round, payload) in [b"first", b"again"].into_iter().enumerate() {
                far.send(&publish_packet(
                    "d",
                    payload,
                    QoS::ExactlyOnce,
                    false,
                    Some(packet_id),
                ))
                .await;
                match far.recv().await {
                    petrel::protocol::Packet::PubRec(ack) => {
                        assert_eq!(ack.packet_id, id(packet_id))
                    }
                    other => panic!("{protocol}: expected PUBREC, got {other:?}"),
                }
                assert_eq!(
                    receive_one(&mut near).await.payload.as_ref(),
                    payload,
                    "{protocol}: round {round}"
                );
                // The link drops before the PUBREL; the remote comes back
                // without the session.
                drop(far);
                far = remote.accept_subscribing().await.0;
            }
            drop((far, near));
            local.broker.shutdown().await;
        }
    })
    .await;
}
