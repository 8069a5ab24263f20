//! What clients may do: an ACL file in Mosquitto's syntax applied to
//! PUBLISH, SUBSCRIBE, deliveries (retained ones included) and wills.

mod common;

use std::path::PathBuf;

use common::*;
use petrel::protocol::{Connect, Packet, QoS, ReasonCode};

const ACL: &str = "\
# anonymous clients may only read status
topic read status/#

user alice
topic readwrite home/#
topic deny home/secret

user admin
topic readwrite #

pattern readwrite devices/%c/#
";

struct AclBroker {
    broker: TestBroker,
    dir: PathBuf,
}

impl Drop for AclBroker {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn acl_broker(name: &str) -> AclBroker {
    let dir = std::env::temp_dir().join(format!("petrel-acl-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("acl");
    std::fs::write(&path, ACL).expect("write the ACL");
    let broker = TestBroker::with_config(petrel::Config {
        acl_file: Some(path),
        ..test_config()
    })
    .await;
    AclBroker { broker, dir }
}

fn as_user(connect: Connect, username: &str) -> Connect {
    Connect {
        username: Some(username.to_owned()),
        ..connect
    }
}

async fn user_v5(addr: std::net::SocketAddr, client_id: &str, username: &str) -> RawClient {
    let (client, connack) =
        RawClient::connect_with(addr, as_user(connect_v5(client_id, true, 0), username)).await;
    assert_eq!(connack.reason_code, ReasonCode::Success);
    client
}

async fn user_v3(addr: std::net::SocketAddr, client_id: &str, username: &str) -> RawClient {
    let (client, connack) =
        RawClient::connect_with(addr, as_user(connect_packet(client_id, true, 0), username)).await;
    assert_eq!(connack.reason_code, ReasonCode::Success);
    client
}

// A publish the ACL does not allow: PUBACK 0x87 at 5.0; at 3.1.1 the usual
// PUBACK; either way nobody receives it, and it is counted.
#[tokio::test]
async fn publish_denied() {
    timed(async {
        let acl = acl_broker("publish").await;
        let addr = acl.broker.addr;
        let mut watcher = user_v5(addr, "watcher", "admin").await;
        watcher.subscribe(1, &[("#", QoS::AtLeastOnce)]).await;
        let mut alice = user_v5(addr, "alice-5", "alice").await;
        alice
            .send(&publish_packet(
                "garage/door",
                b"x",
                QoS::AtLeastOnce,
                false,
                Some(1),
            ))
            .await;
        match alice.recv().await {
            Packet::PubAck(ack) => assert_eq!(ack.reason_code, ReasonCode::NotAuthorized),
            other => panic!("expected PUBACK, got {other:?}"),
        }
        let mut alice3 = user_v3(addr, "alice-3", "alice").await;
        alice3
            .publish("home/secret", b"y", QoS::AtLeastOnce, false, 1)
            .await;
        alice3
            .publish("home/kitchen", b"ok", QoS::AtLeastOnce, false, 2)
            .await;
        let publish = watcher.recv_publish().await;
        assert_eq!(publish.topic.as_str(), "home/kitchen");
        acknowledge(&mut watcher, &publish).await;
        assert!(watcher.ping_barrier().await.is_empty());
        assert_eq!(acl.broker.broker.metrics().acl_denied.get(), 2);
    })
    .await;
}

// A subscription the ACL does not cover: SUBACK 0x87 at 5.0, 0x80 at
// 3.1.1. Within an allowed subscription, topics a deny rule names are not
// delivered, retained or live.
#[tokio::test]
async fn subscriptions_and_deliveries_follow_the_acl() {
    timed(async {
        let acl = acl_broker("subscribe").await;
        let addr = acl.broker.addr;
        let mut admin = user_v5(addr, "admin", "admin").await;
        admin
            .publish("home/secret", b"s", QoS::AtMostOnce, true, 0)
            .await;
        admin
            .publish("home/hall", b"h", QoS::AtMostOnce, true, 0)
            .await;
        let mut alice = user_v5(addr, "alice", "alice").await;
        assert_eq!(
            alice
                .subscribe(1, &[("#", QoS::AtMostOnce), ("home/#", QoS::AtMostOnce)])
                .await,
            vec![ReasonCode::NotAuthorized, ReasonCode::GRANTED_QOS_0]
        );
        let retained = alice.recv_publish().await;
        assert_eq!(retained.topic.as_str(), "home/hall");
        assert!(
            alice.ping_barrier().await.is_empty(),
            "home/secret withheld"
        );
        admin
            .publish("home/secret", b"live", QoS::AtMostOnce, false, 0)
            .await;
        admin
            .publish("home/kitchen", b"live", QoS::AtMostOnce, false, 0)
            .await;
        assert_eq!(alice.recv_publish().await.topic.as_str(), "home/kitchen");
        assert!(alice.ping_barrier().await.is_empty());
        let mut alice3 = user_v3(addr, "alice-3", "alice").await;
        assert_eq!(
            alice3.subscribe(1, &[("#", QoS::AtMostOnce)]).await,
            vec![ReasonCode::UnspecifiedError]
        );
        // Anonymous clients get the rules before the first `user`.
        let mut anonymous = RawClient::connect(addr, "anon").await;
        assert_eq!(
            anonymous
                .subscribe(
                    1,
                    &[("status/#", QoS::AtMostOnce), ("home/#", QoS::AtMostOnce)]
                )
                .await,
            vec![ReasonCode::GRANTED_QOS_0, ReasonCode::UnspecifiedError]
        );
    })
    .await;
}

// `pattern` rules apply to every client, %c standing for its client id.
#[tokio::test]
async fn patterns_use_the_client_id() {
    timed(async {
        let acl = acl_broker("pattern").await;
        let addr = acl.broker.addr;
        let mut watcher = user_v5(addr, "watcher", "admin").await;
        watcher
            .subscribe(1, &[("devices/#", QoS::AtMostOnce)])
            .await;
        let mut device = RawClient::connect_v5(addr, "dev1").await;
        device
            .publish("devices/dev2/state", b"no", QoS::AtMostOnce, false, 0)
            .await;
        device
            .publish("devices/dev1/state", b"yes", QoS::AtMostOnce, false, 0)
            .await;
        let publish = watcher.recv_publish().await;
        assert_eq!(publish.topic.as_str(), "devices/dev1/state");
        assert!(watcher.ping_barrier().await.is_empty());
    })
    .await;
}

// A will to a topic its client may not write is not published.
#[tokio::test]
async fn wills_follow_the_acl() {
    timed(async {
        let acl = acl_broker("will").await;
        let addr = acl.broker.addr;
        let mut watcher = user_v5(addr, "watcher", "admin").await;
        watcher.subscribe(1, &[("#", QoS::AtMostOnce)]).await;
        for (client_id, topic_name) in [("w1", "garage/will"), ("w2", "home/will")] {
            let mut connect = as_user(connect_packet(client_id, true, 0), "alice");
            connect.will = Some(will(topic_name, b"gone", QoS::AtMostOnce, false));
            let (client, connack) = RawClient::connect_with(addr, connect).await;
            assert_eq!(connack.reason_code, ReasonCode::Success);
            drop(client);
        }
        let metrics = acl.broker.broker.metrics();
        eventually("both will owners gone", || {
            metrics.clients_connected.get() == 1
        })
        .await;
        let sent = watcher.ping_barrier().await;
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert!(matches!(&sent[0], Packet::Publish(p) if p.topic.as_str() == "home/will"));
    })
    .await;
}

// Broker::reload (SIGHUP) reads the ACL again; a file that does not parse
// leaves the rules in force.
#[tokio::test]
async fn acl_reload() {
    timed(async {
        let acl = acl_broker("reload").await;
        let addr = acl.broker.addr;
        let mut alice = user_v5(addr, "alice", "alice").await;
        assert_eq!(
            alice.subscribe(1, &[("garden/#", QoS::AtMostOnce)]).await,
            vec![ReasonCode::NotAuthorized]
        );
        let path = acl.dir.join("acl");
        std::fs::write(&path, format!("{ACL}\nuser alice\ntopic read garden/#\n")).expect("write");
        assert!(acl.broker.broker.reload().is_empty());
        assert_eq!(
            alice.subscribe(2, &[("garden/#", QoS::AtMostOnce)]).await,
            vec![ReasonCode::GRANTED_QOS_0]
        );
        std::fs::write(&path, "nonsense here\n").expect("write");
        let errors = acl.broker.broker.reload();
        assert!(
            errors.len() == 1 && errors[0].contains("acl_file"),
            "{errors:?}"
        );
        assert_eq!(
            alice.subscribe(3, &[("garden/#", QoS::AtMostOnce)]).await,
            vec![ReasonCode::GRANTED_QOS_0]
        );
    })
    .await;
}
