//! MQTT 5 connections: what CONNACK says, session expiry and clean start,
//! the will delay, and the DISCONNECT the broker sends before it closes.

mod common;

use std::num::{NonZeroU16, NonZeroU32};

use bytes::Bytes;
use common::*;
use petrel::config::RedirectConfig;
use petrel::protocol::{
    ConnectProperties, Disconnect, DisconnectProperties, Packet, ProtocolVersion, QoS, ReasonCode,
    WillProperties,
};

// [MQTT-3.1.3-6] [MQTT-3.1.3-7] [MQTT-3.2.2-16] [MQTT-3.1.2-28] [MQTT-3.2.2-9]
// [MQTT-3.1.4-5] (v5.0): CONNACK carries the truth about the broker; an
// empty client id gets one assigned and returned; no Response Information
// unless asked for; Maximum QoS left out at 2.
#[tokio::test]
async fn connack_tells_the_truth_about_the_broker() {
    timed(async {
        let broker = TestBroker::start().await;
        let (_client, connack) =
            RawClient::connect_v5_with(broker.addr, "", ConnectProperties::default()).await;
        let properties = &connack.properties;
        let assigned = properties
            .assigned_client_identifier
            .clone()
            .expect("an assigned client id");
        assert!(!assigned.is_empty());
        assert_eq!(properties.receive_maximum, NonZeroU16::new(1024));
        assert_eq!(properties.maximum_qos, None);
        assert_eq!(properties.retain_available, Some(true));
        assert_eq!(properties.maximum_packet_size, NonZeroU32::new(1024 * 1024));
        assert_eq!(properties.topic_alias_maximum, Some(64));
        assert_eq!(properties.wildcard_subscription_available, Some(true));
        assert_eq!(properties.subscription_identifier_available, Some(true));
        assert_eq!(properties.shared_subscription_available, Some(true));
        assert_eq!(properties.server_keep_alive, None);
        assert_eq!(properties.session_expiry_interval, None);
        assert_eq!(properties.response_information, None);
        // A second empty id gets a different one.
        let (_other, again) =
            RawClient::connect_v5_with(broker.addr, "", ConnectProperties::default()).await;
        assert_ne!(again.properties.assigned_client_identifier, Some(assigned));
    })
    .await;
}

// [MQTT-3.1.2-28] (v5.0): Response Information only when asked for.
#[tokio::test]
async fn response_information_when_asked() {
    timed(async {
        let broker = TestBroker::start().await;
        let properties = ConnectProperties {
            request_response_information: Some(true),
            ..ConnectProperties::default()
        };
        let (_client, connack) = RawClient::connect_v5_with(broker.addr, "asker", properties).await;
        assert_eq!(
            connack.properties.response_information.as_deref(),
            Some("response/asker")
        );
    })
    .await;
}

// [MQTT-3.2.2-21] (v5.0): a keep-alive above max_keep_alive is replaced
// and the client told so with Server Keep Alive; a 3.1.1 client cannot be
// told, so it is refused.
#[tokio::test]
async fn server_keep_alive_caps_the_clients() {
    timed(async {
        let broker = TestBroker::with_config(petrel::Config {
            max_keep_alive: 10,
            ..test_config()
        })
        .await;
        let (_client, connack) =
            RawClient::connect_with(broker.addr, connect_v5("long", true, 60)).await;
        assert_eq!(connack.reason_code, ReasonCode::Success);
        assert_eq!(connack.properties.server_keep_alive, Some(10));
        let (_client, connack) =
            RawClient::connect_with(broker.addr, connect_v5("short", true, 5)).await;
        assert_eq!(connack.properties.server_keep_alive, None);
        let (mut v3, connack) =
            RawClient::connect_with(broker.addr, connect_packet("old", true, 60)).await;
        assert_eq!(connack.reason_code, ReasonCode::ClientIdentifierNotValid);
        v3.expect_closed().await;
    })
    .await;
}

// [MQTT-3.2.2-9] [MQTT-3.2.2-11] [MQTT-3.2.2-12] [MQTT-3.2.2-10] (v5.0): a
// broker limited to QoS 1 says so; a PUBLISH at QoS 2 gets DISCONNECT
// 0x9B; a will at QoS 2 is refused with CONNACK 0x9B; SUBSCRIBE at QoS 2 is
// still accepted, granted QoS 1.
#[tokio::test]
async fn maximum_qos_is_announced_and_enforced() {
    timed(async {
        let broker = TestBroker::with_config(petrel::Config {
            max_qos: 1,
            ..test_config()
        })
        .await;
        let (mut client, connack) =
            RawClient::connect_v5_with(broker.addr, "q", ConnectProperties::default()).await;
        assert_eq!(connack.properties.maximum_qos, Some(QoS::AtLeastOnce));
        assert_eq!(
            client.subscribe(1, &[("a", QoS::ExactlyOnce)]).await,
            vec![ReasonCode::GrantedQoS1]
        );
        client
            .send(&publish_packet("a", b"x", QoS::ExactlyOnce, false, Some(1)))
            .await;
        client.expect_disconnect(ReasonCode::QoSNotSupported).await;
        let mut connect = connect_v5("w", true, 0);
        connect.will = Some(will("w", b"gone", QoS::ExactlyOnce, false));
        let (mut refused, connack) = RawClient::connect_with(broker.addr, connect).await;
        assert_eq!(connack.reason_code, ReasonCode::QoSNotSupported);
        assert!(!connack.session_present);
        refused.expect_closed().await;
    })
    .await;
}

// [MQTT-3.2.2-13] [MQTT-3.2.2-14] (v5.0): with retained messages off, a
// will with RETAIN is refused (0x9A) and a PUBLISH with RETAIN gets
// DISCONNECT 0x9A.
#[tokio::test]
async fn retain_not_available_is_announced_and_enforced() {
    timed(async {
        let broker = TestBroker::with_config(petrel::Config {
            retain_available: false,
            ..test_config()
        })
        .await;
        let mut connect = connect_v5("w", true, 0);
        connect.will = Some(will("w", b"gone", QoS::AtMostOnce, true));
        let (mut refused, connack) = RawClient::connect_with(broker.addr, connect).await;
        assert_eq!(connack.reason_code, ReasonCode::RetainNotSupported);
        refused.expect_closed().await;
        let (mut client, connack) =
            RawClient::connect_v5_with(broker.addr, "r", ConnectProperties::default()).await;
        assert_eq!(connack.properties.retain_available, Some(false));
        client
            .send(&publish_packet("a", b"x", QoS::AtMostOnce, true, None))
            .await;
        client
            .expect_disconnect(ReasonCode::RetainNotSupported)
            .await;
    })
    .await;
}

fn expiring(seconds: u32) -> ConnectProperties {
    ConnectProperties {
        session_expiry_interval: Some(seconds),
        ..ConnectProperties::default()
    }
}

/// Connects `client_id` at 5.0 with clean start `clean_start` and a
/// session expiry; returns the client and the CONNACK's Session Present.
async fn connect_expiring(
    addr: std::net::SocketAddr,
    client_id: &str,
    clean_start: bool,
    seconds: u32,
) -> (RawClient, bool) {
    let connect = petrel::protocol::Connect {
        properties: expiring(seconds),
        ..connect_v5(client_id, clean_start, 0)
    };
    let (client, connack) = RawClient::connect_with(addr, connect).await;
    assert_eq!(connack.reason_code, ReasonCode::Success);
    (client, connack.session_present)
}

// [MQTT-3.1.2-23] [MQTT-3.1.2-5] [MQTT-3.1.2-4] [MQTT-3.1.2-6] (v5.0): a
// session with an expiry outlives its connection and is resumed with its
// queued messages; clean start discards it; expiry 0 (the default) ends it
// with the connection. [MQTT-3.1.4-4] [MQTT-3.2.2-2] [MQTT-3.2.2-3]
// [MQTT-3.1.3-2] (v5.0): Clean Start is applied on every accepted CONNECT,
// Session Present says whether the client id's session was there.
#[tokio::test]
async fn session_expiry_keeps_the_session_and_clean_start_drops_it() {
    timed(async {
        let broker = TestBroker::start().await;
        let (mut subscriber, present) = connect_expiring(broker.addr, "keeper", true, 60).await;
        assert!(!present);
        subscriber.subscribe(1, &[("kept", QoS::AtLeastOnce)]).await;
        subscriber.disconnect().await;
        let mut publisher = RawClient::connect_v5(broker.addr, "pub").await;
        publisher
            .publish("kept", b"while away", QoS::AtLeastOnce, false, 1)
            .await;
        let (mut subscriber, present) = connect_expiring(broker.addr, "keeper", false, 60).await;
        assert!(present);
        let publish = subscriber.recv_publish().await;
        assert_eq!(&publish.payload[..], b"while away");
        acknowledge(&mut subscriber, &publish).await;
        subscriber.disconnect().await;
        // Clean start: a new session.
        let (subscriber, present) = connect_expiring(broker.addr, "keeper", true, 0).await;
        assert!(!present);
        subscriber.disconnect().await;
        // Expiry 0: nothing was kept.
        let (_subscriber, present) = connect_expiring(broker.addr, "keeper", false, 0).await;
        assert!(!present);
    })
    .await;
}

// 3.1.2.11.2 (v5.0): when the Session Expiry Interval passes, the session
// is removed (and counted); the next connection finds none.
#[tokio::test]
async fn expired_session_is_removed() {
    timed(async {
        let broker = TestBroker::start().await;
        let (mut client, _) = connect_expiring(broker.addr, "brief", true, 1).await;
        client.subscribe(1, &[("x", QoS::AtLeastOnce)]).await;
        client.disconnect().await;
        let metrics = broker.broker.metrics();
        eventually("the session to expire", || {
            metrics.sessions_expired.get() == 1
        })
        .await;
        let (_client, present) = connect_expiring(broker.addr, "brief", false, 1).await;
        assert!(!present);
    })
    .await;
}

// 3.1.2.11.2 (v5.0): max_session_expiry_interval caps what a client asks
// for, and CONNACK says what was granted.
#[tokio::test]
async fn session_expiry_is_capped_and_told() {
    timed(async {
        let broker = TestBroker::with_config(petrel::Config {
            max_session_expiry_interval: 30,
            ..test_config()
        })
        .await;
        let connect = petrel::protocol::Connect {
            properties: expiring(3600),
            ..connect_v5("capped", true, 0)
        };
        let (_client, connack) = RawClient::connect_with(broker.addr, connect).await;
        assert_eq!(connack.properties.session_expiry_interval, Some(30));
    })
    .await;
}

// 3.14.2.2.2 (v5.0): DISCONNECT may change the session expiry, but setting
// one after CONNECT said 0 is a Protocol Error (DISCONNECT 0x82)
// [MQTT-PE-3.14.2.2.2-2] (v5.0), and the
// broker's own DISCONNECT never carries one [MQTT-3.14.2-2] (v5.0).
#[tokio::test]
async fn disconnect_changes_session_expiry_but_not_from_zero() {
    timed(async {
        let broker = TestBroker::start().await;
        let (mut client, _) = connect_expiring(broker.addr, "changer", true, 0).await;
        client
            .send(&Packet::Disconnect(Disconnect {
                reason_code: ReasonCode::Success,
                properties: DisconnectProperties {
                    session_expiry_interval: Some(60),
                    ..DisconnectProperties::default()
                },
            }))
            .await;
        let disconnect = client.expect_disconnect(ReasonCode::ProtocolError).await;
        assert_eq!(disconnect.properties.session_expiry_interval, None);
        // From 60 to 0: the session ends with this connection.
        let (mut client, _) = connect_expiring(broker.addr, "changer", true, 60).await;
        client.subscribe(1, &[("x", QoS::AtLeastOnce)]).await;
        client
            .send(&Packet::Disconnect(Disconnect {
                reason_code: ReasonCode::Success,
                properties: DisconnectProperties {
                    session_expiry_interval: Some(0),
                    ..DisconnectProperties::default()
                },
            }))
            .await;
        client.expect_closed().await;
        let (_client, present) = connect_expiring(broker.addr, "changer", false, 60).await;
        assert!(!present);
    })
    .await;
}

// [MQTT-3.1.4-3] (v5.0): the connection taken over gets DISCONNECT 0x8E.
#[tokio::test]
async fn takeover_sends_session_taken_over() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut first = RawClient::connect_v5(broker.addr, "twin").await;
        let _second = RawClient::connect_v5(broker.addr, "twin").await;
        first.expect_disconnect(ReasonCode::SessionTakenOver).await;
    })
    .await;
}

// [MQTT-3.1.2-22] (v5.0): silence past 1.5 x keep-alive closes the
// connection, after DISCONNECT 0x8D.
#[tokio::test]
async fn keep_alive_timeout_sends_reason() {
    timed(async {
        let broker = TestBroker::start().await;
        let (mut client, connack) =
            RawClient::connect_with(broker.addr, connect_v5("quiet", true, 1)).await;
        assert_eq!(connack.reason_code, ReasonCode::Success);
        client.expect_disconnect(ReasonCode::KeepAliveTimeout).await;
    })
    .await;
}

// [MQTT-4.13.1-1] (v5.0): a malformed packet gets DISCONNECT 0x81, a
// protocol error 0x82, a packet over max_packet_size 0x95
// [MQTT-3.2.2-15] (v5.0), each then closed [MQTT-3.14.4-2] (v5.0).
// [MQTT-3.1.0-2] [MQTT-3.2.0-2] [MQTT-3.14.2-1] [MQTT-3.14.4-1]
// [MQTT-4.13.2-1] (v5.0): a second CONNECT is a Protocol Error, answered
// by DISCONNECT and not by another CONNACK; each DISCONNECT carries a
// DISCONNECT reason code and nothing follows it before the close.
#[tokio::test]
async fn errors_get_their_reason_codes() {
    timed(async {
        let broker = TestBroker::with_config(petrel::Config {
            max_packet_size: 64,
            ..test_config()
        })
        .await;
        let mut client = RawClient::connect_v5(broker.addr, "bad-bytes").await;
        // PUBLISH QoS 0 whose topic length runs past the packet.
        client.send_bytes(&[0x30, 0x03, 0x00, 0x05, b'a']).await;
        client.expect_disconnect(ReasonCode::MalformedPacket).await;
        let mut client = RawClient::connect_v5(broker.addr, "second-connect").await;
        client
            .send(&Packet::Connect(Box::new(connect_v5("x", true, 0))))
            .await;
        client.expect_disconnect(ReasonCode::ProtocolError).await;
        let mut client = RawClient::connect_v5(broker.addr, "too-big").await;
        client
            .send(&publish_packet(
                "a",
                &[0u8; 100],
                QoS::AtMostOnce,
                false,
                None,
            ))
            .await;
        client.expect_disconnect(ReasonCode::PacketTooLarge).await;
    })
    .await;
}

// 3.14 (v5.0): on shutdown the broker sends DISCONNECT 0x8B; with a
// redirect configured, 0x9C and the Server Reference.
#[tokio::test]
async fn shutdown_sends_server_shutting_down_or_the_redirect() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut client = RawClient::connect_v5(broker.addr, "stayer").await;
        client.ping_barrier().await;
        broker.broker.shutdown().await;
        client
            .expect_disconnect(ReasonCode::ServerShuttingDown)
            .await;

        let broker = TestBroker::with_config(petrel::Config {
            redirect: Some(RedirectConfig {
                server_reference: "other.example:1883".to_owned(),
                permanent: false,
                on_connect: false,
            }),
            ..test_config()
        })
        .await;
        let mut client = RawClient::connect_v5(broker.addr, "mover").await;
        client.ping_barrier().await;
        broker.broker.shutdown().await;
        let disconnect = client.expect_disconnect(ReasonCode::UseAnotherServer).await;
        assert_eq!(
            disconnect.properties.server_reference.as_deref(),
            Some("other.example:1883")
        );
    })
    .await;
}

// 4.11 (v5.0): a redirect on connect refuses with 0x9D Server moved and
// the Server Reference; a 3.1.1 client gets 0x03 Server unavailable.
#[tokio::test]
async fn redirect_on_connect() {
    timed(async {
        let broker = TestBroker::with_config(petrel::Config {
            redirect: Some(RedirectConfig {
                server_reference: "new.example:1883".to_owned(),
                permanent: true,
                on_connect: true,
            }),
            ..test_config()
        })
        .await;
        let (mut client, connack) =
            RawClient::connect_with(broker.addr, connect_v5("c", true, 0)).await;
        assert_eq!(connack.reason_code, ReasonCode::ServerMoved);
        assert_eq!(
            connack.properties.server_reference.as_deref(),
            Some("new.example:1883")
        );
        client.expect_closed().await;
        let (mut client, connack) =
            RawClient::connect_with(broker.addr, connect_packet("c", true, 0)).await;
        assert_eq!(connack.reason_code, ReasonCode::ServerUnavailable);
        client.expect_closed().await;
    })
    .await;
}

// [MQTT-4.12.0-1] (v5.0): an authentication method the broker does not
// support is refused with CONNACK 0x8C and the connection closed
// [MQTT-3.1.4-2] [MQTT-3.2.2-7] [MQTT-4.13.2-1] (v5.0).
#[tokio::test]
async fn unknown_authentication_method_is_refused() {
    timed(async {
        let broker = TestBroker::start().await;
        let properties = ConnectProperties {
            authentication_method: Some("NO-SUCH-METHOD".to_owned()),
            ..ConnectProperties::default()
        };
        let connect = petrel::protocol::Connect {
            properties,
            ..connect_v5("auth", true, 0)
        };
        let (mut client, connack) = RawClient::connect_with(broker.addr, connect).await;
        assert_eq!(connack.reason_code, ReasonCode::BadAuthenticationMethod);
        client.expect_closed().await;
    })
    .await;
}

fn delayed_will(
    topic_name: &str,
    payload: &'static [u8],
    delay: u32,
) -> petrel::protocol::LastWill {
    petrel::protocol::LastWill {
        properties: WillProperties {
            will_delay_interval: Some(delay),
            ..WillProperties::default()
        },
        ..will(topic_name, payload, QoS::AtLeastOnce, false)
    }
}

/// Connects `client_id` at 5.0 with a session expiry of a minute and
/// `will`, then drops the connection without DISCONNECT.
async fn vanish_with_will(
    addr: std::net::SocketAddr,
    client_id: &str,
    will: petrel::protocol::LastWill,
) {
    let connect = petrel::protocol::Connect {
        will: Some(will),
        properties: expiring(60),
        ..connect_v5(client_id, true, 0)
    };
    let (client, connack) = RawClient::connect_with(addr, connect).await;
    assert_eq!(connack.reason_code, ReasonCode::Success);
    drop(client);
}

// [MQTT-3.1.2-8] [MQTT-3.1.3-9] (v5.0): a will with a delay is published
// when the delay passes, and not at all if the client comes back first.
// The second client's will, due later, is the barrier: when it arrives, the
// first one's would have.
#[tokio::test]
async fn will_delay_waits_and_reconnecting_cancels_it() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut watcher = RawClient::connect_v5(broker.addr, "watcher").await;
        watcher.subscribe(1, &[("wills/#", QoS::AtLeastOnce)]).await;
        vanish_with_will(
            broker.addr,
            "returns",
            delayed_will("wills/returns", b"r", 1),
        )
        .await;
        vanish_with_will(broker.addr, "gone", delayed_will("wills/gone", b"g", 2)).await;
        // Not published at once.
        let metrics = broker.broker.metrics();
        eventually("both sessions parked", || {
            metrics.clients_disconnected.get() == 2
        })
        .await;
        assert!(watcher.ping_barrier().await.is_empty());
        // "returns" comes back within its delay.
        let (_back, present) = connect_expiring(broker.addr, "returns", false, 60).await;
        assert!(present);
        assert_eq!(metrics.wills_cancelled.get(), 1);
        let publish = watcher.recv_publish().await;
        assert_eq!(publish.topic.as_str(), "wills/gone");
        acknowledge(&mut watcher, &publish).await;
        assert!(watcher.ping_barrier().await.is_empty());
    })
    .await;
}

// [MQTT-3.1.2-8] (v5.0): the will goes when the session ends, if that is
// before the delay: here the session expires after 1 s, the delay is 60 s.
#[tokio::test]
async fn will_goes_when_the_session_ends_before_the_delay() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut watcher = RawClient::connect_v5(broker.addr, "watcher").await;
        watcher.subscribe(1, &[("wills/#", QoS::AtLeastOnce)]).await;
        let connect = petrel::protocol::Connect {
            will: Some(delayed_will("wills/short", b"s", 60)),
            properties: expiring(1),
            ..connect_v5("short-lived", true, 0)
        };
        let (client, _) = RawClient::connect_with(broker.addr, connect).await;
        drop(client);
        let publish = watcher.recv_publish().await;
        assert_eq!(publish.topic.as_str(), "wills/short");
        assert_eq!(broker.broker.metrics().sessions_expired.get(), 1);
    })
    .await;
}

// [MQTT-3.14.4-3] (v5.0): DISCONNECT 0x00 discards the will; 0x04 sends
// it. The will's properties go with it, User Properties in order
// [MQTT-3.1.3-10] (v5.0). [MQTT-3.1.2-7] [MQTT-3.1.2-10] (v5.0): the will
// is stored with the session and published (once: the barrier shows no
// second copy), or removed unpublished on DISCONNECT 0x00.
#[tokio::test]
async fn disconnect_with_will_message_sends_the_will() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut watcher = RawClient::connect_v5(broker.addr, "watcher").await;
        watcher.subscribe(1, &[("wills/#", QoS::AtMostOnce)]).await;
        let mut quiet_will = will("wills/quiet", b"q", QoS::AtMostOnce, false);
        quiet_will.properties.will_delay_interval = Some(0);
        let mut connect = connect_v5("polite", true, 0);
        connect.will = Some(quiet_will);
        let (client, _) = RawClient::connect_with(broker.addr, connect).await;
        client.disconnect().await;
        let mut loud_will = will("wills/loud", b"l", QoS::AtMostOnce, false);
        loud_will.properties.user_properties =
            vec![("b".into(), "2".into()), ("a".into(), "1".into())];
        loud_will.properties.content_type = Some("text/plain".into());
        let mut connect = connect_v5("loud", true, 0);
        connect.will = Some(loud_will);
        let (mut client, _) = RawClient::connect_with(broker.addr, connect).await;
        client
            .send(&Packet::Disconnect(Disconnect {
                reason_code: ReasonCode::DisconnectWithWillMessage,
                properties: DisconnectProperties::default(),
            }))
            .await;
        client.expect_closed().await;
        let publish = watcher.recv_publish().await;
        assert_eq!(publish.topic.as_str(), "wills/loud");
        assert_eq!(publish.payload, Bytes::from_static(b"l"));
        assert_eq!(
            publish.properties.user_properties,
            vec![
                ("b".to_owned(), "2".to_owned()),
                ("a".to_owned(), "1".to_owned())
            ]
        );
        assert_eq!(
            publish.properties.content_type.as_deref(),
            Some("text/plain")
        );
        assert!(watcher.ping_barrier().await.is_empty());
        assert_eq!(client.version, ProtocolVersion::V5);
    })
    .await;
}

// [MQTT-3.1.2-24] (v5.0): a client whose Maximum Packet Size is smaller
// than the CONNACK it would get cannot be sent anything: the connection is
// closed without one.
#[tokio::test]
async fn client_maximum_packet_size_smaller_than_connack_is_closed() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut client = RawClient::open(broker.addr).await;
        client.version = ProtocolVersion::V5;
        let connect = petrel::protocol::Connect {
            properties: ConnectProperties {
                maximum_packet_size: NonZeroU32::new(8),
                ..ConnectProperties::default()
            },
            ..connect_v5("tiny", true, 0)
        };
        client.send(&Packet::Connect(Box::new(connect))).await;
        client.expect_closed().await;
        assert_eq!(broker.broker.metrics().clients_connected.get(), 0);
    })
    .await;
}
