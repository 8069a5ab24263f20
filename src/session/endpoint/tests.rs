//! The endpoint driven directly, packet in, bytes out: no socket and no
//! runtime. Two endpoints share one router, so what one is sent is what
//! the other's client published.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use super::{ClientLimits, Endpoint, Role, ServerSide};
use crate::auth::Authenticator;
use crate::config::{Config, Durability};
use crate::connection::Outbox;
use crate::context::{Context, Core};
use crate::metrics::Metrics;
use crate::protocol::{
    self, Ack, Packet, PacketId, ProtocolVersion, Publish, PublishProperties, QoS, Subscribe,
    SubscribeProperties, SubscriptionOptions, TopicFilter, TopicName,
};
use crate::router::inbox::Inbox;
use crate::session::state::SessionState;

fn context_with(config: Config) -> Context {
    let metrics = Arc::new(Metrics::default());
    let store = config.persistence.then(|| {
        let (store, _) = crate::store::Store::open(&config, Arc::clone(&metrics)).expect("store");
        Arc::new(store)
    });
    Context {
        core: Core::new(config, metrics, store),
        auth: Authenticator::open(),
    }
}

fn context() -> Context {
    context_with(Config {
        persistence: false,
        ..Config::default()
    })
}

/// A connected client's endpoint at `version` with `state`.
fn client_with(
    context: &Context,
    client_id: &str,
    version: ProtocolVersion,
    state: SessionState,
) -> Endpoint {
    let limits = crate::session::restore::inbox_limits(&context.core.config());
    let inbox = Inbox::new(Arc::from(client_id), limits);
    let role = Role::Server(ServerSide::default());
    let mut endpoint = Endpoint::new(Outbox::new(version), state, inbox, role);
    endpoint.limits = ClientLimits::plain(u16::MAX);
    endpoint
}

fn client(context: &Context, client_id: &str, version: ProtocolVersion) -> Endpoint {
    client_with(context, client_id, version, SessionState::default())
}

fn id(value: u16) -> PacketId {
    PacketId::new(value).expect("non-zero")
}

fn publish(topic: &str, qos: QoS, packet_id: Option<u16>, properties: PublishProperties) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: if topic.is_empty() {
            TopicName::alias_only()
        } else {
            TopicName::new(topic).expect("topic")
        },
        packet_id: packet_id.map(id),
        payload: Bytes::from_static(b"m"),
        properties,
    })
}

fn subscribe(filter: &str, qos: QoS) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: id(1),
        filters: vec![(
            TopicFilter::new(filter).expect("filter"),
            SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            },
        )],
        properties: SubscribeProperties::default(),
    })
}

/// Everything in the endpoint's outbox, decoded.
fn sent(endpoint: &mut Endpoint) -> Vec<Packet> {
    let version = endpoint.outbox.version();
    let mut bytes: BytesMut = endpoint.outbox.take();
    let mut packets = Vec::new();
    while let Some(packet) = protocol::decode(&mut bytes, usize::MAX, version).expect("valid") {
        packets.push(packet);
    }
    assert!(bytes.is_empty(), "a partial packet in the outbox");
    packets
}

fn handle(context: &Context, endpoint: &mut Endpoint, packet: Packet) {
    endpoint
        .handle(context, packet, Instant::now())
        .expect("handled");
}

fn poll(context: &Context, endpoint: &mut Endpoint) {
    endpoint
        .poll(context, Instant::now())
        .expect("not interrupted");
}

/// A subscriber to `t` at `qos`, its SUBACK taken.
fn subscriber(context: &Context, qos: QoS) -> Endpoint {
    let mut subscriber = client(context, "subscriber", ProtocolVersion::V5);
    handle(context, &mut subscriber, subscribe("t", qos));
    assert!(matches!(
        sent(&mut subscriber).as_slice(),
        [Packet::SubAck(_)]
    ));
    subscriber
}

// [MQTT-4.3.3-1] [MQTT-4.3.3-2] (v3.1.1): QoS 2 both ways. The publisher
// gets PUBREC, a re-sent PUBLISH is acknowledged and not routed again,
// PUBREL is answered with PUBCOMP; the subscriber is sent the message
// once, answers PUBREC with PUBREL, and PUBCOMP ends the flow.
#[test]
fn a_qos2_exchange_both_ways() {
    let context = context();
    let mut subscriber = subscriber(&context, QoS::ExactlyOnce);
    let mut publisher = client(&context, "publisher", ProtocolVersion::V3_1_1);
    handle(
        &context,
        &mut publisher,
        publish("t", QoS::ExactlyOnce, Some(5), Default::default()),
    );
    handle(
        &context,
        &mut publisher,
        publish("t", QoS::ExactlyOnce, Some(5), Default::default()),
    );
    let answers = sent(&mut publisher);
    assert!(
        matches!(answers.as_slice(), [Packet::PubRec(a), Packet::PubRec(b)] if a.packet_id == id(5) && b.packet_id == id(5))
    );
    handle(&context, &mut publisher, Packet::PubRel(Ack::new(id(5))));
    assert!(
        matches!(sent(&mut publisher).as_slice(), [Packet::PubComp(ack)] if ack.packet_id == id(5))
    );

    poll(&context, &mut subscriber);
    let delivered = sent(&mut subscriber);
    let [Packet::Publish(message)] = delivered.as_slice() else {
        panic!("one PUBLISH, not {delivered:?}");
    };
    assert_eq!(message.qos, QoS::ExactlyOnce);
    let packet_id = message.packet_id.expect("QoS 2 has a packet id");
    handle(
        &context,
        &mut subscriber,
        Packet::PubRec(Ack::new(packet_id)),
    );
    assert!(
        matches!(sent(&mut subscriber).as_slice(), [Packet::PubRel(ack)] if ack.packet_id == packet_id)
    );
    handle(
        &context,
        &mut subscriber,
        Packet::PubComp(Ack::new(packet_id)),
    );
    assert!(subscriber.state.inflight().is_empty());
    poll(&context, &mut subscriber);
    assert!(sent(&mut subscriber).is_empty(), "sent once");
}

// [MQTT-4.4.0-1] (v3.1.1): after a reconnect, what was not acknowledged is
// sent again first, with its packet id and DUP set.
#[test]
fn unacknowledged_messages_are_resent_after_a_reconnect() {
    let context = context();
    let mut subscriber = subscriber(&context, QoS::AtLeastOnce);
    let mut publisher = client(&context, "publisher", ProtocolVersion::V5);
    handle(
        &context,
        &mut publisher,
        publish("t", QoS::AtLeastOnce, Some(1), Default::default()),
    );
    poll(&context, &mut subscriber);
    let first = match sent(&mut subscriber).as_slice() {
        [Packet::Publish(first)] => first.clone(),
        other => panic!("{other:?}"),
    };
    assert!(!first.dup);
    // The connection goes; the session comes back on a new one.
    let state = std::mem::take(&mut subscriber.state);
    let mut resumed = client_with(&context, "subscriber", ProtocolVersion::V5, state);
    resumed.resend_inflight(&context);
    let again = sent(&mut resumed);
    let [Packet::Publish(again)] = again.as_slice() else {
        panic!("{again:?}");
    };
    assert!(again.dup);
    assert_eq!(again.packet_id, first.packet_id);
}

// [MQTT-3.3.4-7] (v5.0): never more unacknowledged QoS 1/2 PUBLISH than
// the client's Receive Maximum; an acknowledgement makes room for the next.
#[test]
fn the_window_is_the_clients_receive_maximum() {
    let context = context();
    let mut subscriber = subscriber(&context, QoS::AtLeastOnce);
    subscriber.limits.send_window = 2;
    let mut publisher = client(&context, "publisher", ProtocolVersion::V5);
    for packet_id in 1..=3 {
        handle(
            &context,
            &mut publisher,
            publish("t", QoS::AtLeastOnce, Some(packet_id), Default::default()),
        );
    }
    poll(&context, &mut subscriber);
    let window: Vec<PacketId> = sent(&mut subscriber)
        .into_iter()
        .map(|packet| match packet {
            Packet::Publish(publish) => publish.packet_id.expect("QoS 1"),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(window.len(), 2);
    poll(&context, &mut subscriber);
    assert!(sent(&mut subscriber).is_empty(), "the window is full");
    handle(
        &context,
        &mut subscriber,
        Packet::PubAck(Ack::new(window[0])),
    );
    poll(&context, &mut subscriber);
    assert!(matches!(
        sent(&mut subscriber).as_slice(),
        [Packet::Publish(_)]
    ));
}

// [MQTT-3.3.2-12] (v5.0) and 3.3.2.3.4: a topic alias set with a topic
// stands for it in the next PUBLISH; the broker gives aliases to a client
// that takes them, the topic only the first time.
#[test]
fn topic_aliases_both_ways() {
    let context = context();
    let mut subscriber = subscriber(&context, QoS::AtMostOnce);
    subscriber.limits.topic_alias_maximum = 4;
    let mut publisher = client(&context, "publisher", ProtocolVersion::V5);
    let aliased = || PublishProperties {
        topic_alias: std::num::NonZeroU16::new(1),
        ..PublishProperties::default()
    };
    handle(
        &context,
        &mut publisher,
        publish("t", QoS::AtMostOnce, None, aliased()),
    );
    handle(
        &context,
        &mut publisher,
        publish("", QoS::AtMostOnce, None, aliased()),
    );
    poll(&context, &mut subscriber);
    let delivered = sent(&mut subscriber);
    let topics: Vec<(&str, Option<u16>)> = delivered
        .iter()
        .map(|packet| match packet {
            Packet::Publish(publish) => (
                publish.topic.as_str(),
                publish
                    .properties
                    .topic_alias
                    .map(std::num::NonZeroU16::get),
            ),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(topics, [("t", Some(1)), ("", Some(1))]);
}

// With durability "sync", a PUBACK whose message the store must keep (for
// a persistent subscriber) is held until the store has synced it, and the
// store's progress (the next poll after the commit) releases it.
#[test]
fn a_held_acknowledgement_is_released_by_store_progress() {
    let dir = std::env::temp_dir().join(format!("petrel-endpoint-held-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let context = context_with(Config {
        persistence: true,
        data_dir: dir.clone(),
        durability: Durability::Sync,
        ..Config::default()
    });
    let mut subscriber = client(&context, "subscriber", ProtocolVersion::V5);
    subscriber.inbox.set_durable(true);
    subscriber.session_expiry = 300;
    handle(&context, &mut subscriber, subscribe("t", QoS::AtLeastOnce));
    let mut publisher = client(&context, "publisher", ProtocolVersion::V5);
    handle(
        &context,
        &mut publisher,
        publish("t", QoS::AtLeastOnce, Some(9), Default::default()),
    );
    assert!(sent(&mut publisher).is_empty(), "held for the store");
    let store = context.core.store.as_ref().expect("store");
    let ticket = store.submitted();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.durable() < ticket {
        assert!(
            std::time::Instant::now() < deadline,
            "the store never synced"
        );
        std::thread::yield_now();
    }
    poll(&context, &mut publisher);
    assert!(
        matches!(sent(&mut publisher).as_slice(), [Packet::PubAck(ack)] if ack.packet_id == id(9))
    );
    store.close();
    let _ = std::fs::remove_dir_all(&dir);
}

// A bridge is the client of its remote: a SUBSCRIBE from the remote
// breaks the protocol, as a SUBACK from a client does for the server.
#[test]
fn packets_of_the_other_side_end_the_connection() {
    let context = context();
    let mut server = client(&context, "client", ProtocolVersion::V5);
    let suback = Packet::SubAck(crate::protocol::SubAck {
        packet_id: id(1),
        reason_codes: vec![crate::protocol::ReasonCode::Success],
        properties: Default::default(),
    });
    assert!(server.handle(&context, suback, Instant::now()).is_err());
    let mut bridge = bridge(&context);
    assert!(bridge
        .handle(&context, subscribe("t", QoS::AtMostOnce), Instant::now())
        .is_err());
    assert!(bridge
        .handle(&context, Packet::PingResp, Instant::now())
        .is_ok());
}

/// A bridge's endpoint, forwarding every topic unchanged.
fn bridge(context: &Context) -> Endpoint {
    let rules: Arc<dyn super::TopicMap> = Arc::new(SameTopics);
    let inbox = Inbox::new(
        Arc::from("$bridge/b"),
        crate::session::restore::inbox_limits(&context.core.config()),
    );
    let role = Role::Client(Box::new(super::ClientSide::new(
        rules,
        Arc::new(crate::metrics::BridgeStats::new("test")),
    )));
    let mut bridge = Endpoint::new(
        Outbox::new(ProtocolVersion::V5),
        SessionState::default(),
        inbox,
        role,
    );
    bridge.limits = ClientLimits::plain(10);
    bridge
}

// A bridge's new connection resends what its remote had not acknowledged,
// but not before the store has what the old connection's held packets
// waited for: a QoS 2 PUBLISH whose packet id (or a PUBREL whose release)
// is not durable could otherwise reach the remote twice after a crash.
#[test]
fn a_bridge_resends_once_the_store_has_what_was_held() {
    let dir = std::env::temp_dir().join(format!("petrel-endpoint-resend-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let context = context_with(Config {
        persistence: true,
        data_dir: dir.clone(),
        durability: Durability::Sync,
        ..Config::default()
    });
    let mut bridge = bridge(&context);
    context.core.router.subscribe(
        "t",
        crate::router::Subscriber {
            inbox: Arc::clone(&bridge.inbox),
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            },
            identifier: None,
            shared: None,
        },
    );
    let mut publisher = client(&context, "publisher", ProtocolVersion::V5);
    handle(
        &context,
        &mut publisher,
        publish("t", QoS::AtLeastOnce, Some(1), Default::default()),
    );
    poll(&context, &mut bridge);
    assert!(matches!(sent(&mut bridge).as_slice(), [Packet::Publish(p)] if !p.dup));
    for (ticket, resent_at_once) in [(u64::MAX, false), (0, true)] {
        // Something held for a store change not durable yet (never, here),
        // or for one that is.
        bridge.hold(
            ticket,
            super::held::HeldPacket::Packet(Box::new(Packet::PingReq)),
        );
        bridge.reconnected(
            Outbox::new(ProtocolVersion::V5),
            ClientLimits::plain(10),
            &context,
        );
        let resent = sent(&mut bridge);
        if resent_at_once {
            assert!(
                matches!(resent.as_slice(), [Packet::Publish(p)] if p.dup),
                "{resent:?}"
            );
        } else {
            assert!(resent.is_empty(), "resent before the store: {resent:?}");
            assert!(bridge.holds_packets());
        }
    }
    if let Some(store) = context.core.store.as_ref() {
        store.close();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Topic rules that forward every topic unchanged.
#[derive(Debug)]
struct SameTopics;

impl super::TopicMap for SameTopics {
    fn outgoing(&self, local: &str) -> Option<TopicName> {
        TopicName::new(local).ok()
    }

    fn incoming(&self, remote: &str) -> Option<TopicName> {
        TopicName::new(remote).ok()
    }
}
