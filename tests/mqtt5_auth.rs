//! MQTT 5 enhanced authentication (section 4.12) through the broker's
//! method framework, with a challenge/response method defined here for
//! the tests: the client says hello, the broker sends a challenge, the
//! client answers it.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use petrel::auth::{AuthExchange, AuthStep, EnhancedAuth};
use petrel::protocol::{Auth, AuthProperties, ConnectProperties, Packet, ReasonCode};

const METHOD: &str = "TEST-CHALLENGE";

#[derive(Debug)]
struct Challenge;

#[derive(Debug)]
struct ChallengeExchange {
    expected: Option<Vec<u8>>,
}

impl EnhancedAuth for Challenge {
    fn method(&self) -> &str {
        METHOD
    }

    fn start(&self, _client_id: &str, _username: Option<&str>) -> Box<dyn AuthExchange> {
        Box::new(ChallengeExchange { expected: None })
    }
}

impl AuthExchange for ChallengeExchange {
    fn step(&mut self, data: Option<&[u8]>) -> AuthStep {
        match (&self.expected, data) {
            (None, Some(b"hello")) => {
                self.expected = Some(b"answer:42".to_vec());
                AuthStep::Continue(Some(Bytes::from_static(b"question:42")))
            }
            (Some(expected), Some(answer)) if expected.as_slice() == answer => {
                AuthStep::Success(Some(Bytes::from_static(b"welcome")))
            }
            _ => AuthStep::Failure(ReasonCode::NotAuthorized),
        }
    }
}

async fn auth_broker(config: petrel::Config) -> TestBroker {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let methods: Vec<Arc<dyn EnhancedAuth>> = vec![Arc::new(Challenge)];
    let broker = petrel::Broker::start_with_auth(config, vec![listener], methods).expect("start");
    let addr = broker.local_addrs()[0];
    TestBroker { broker, addr }
}

fn auth_packet(reason_code: ReasonCode, data: &'static [u8]) -> Packet {
    Packet::Auth(Auth {
        reason_code,
        properties: AuthProperties {
            authentication_method: Some(METHOD.to_owned()),
            authentication_data: Some(Bytes::from_static(data)),
            ..AuthProperties::default()
        },
    })
}

/// Sends CONNECT naming the method with "hello", and reads the challenge.
async fn start_exchange(addr: std::net::SocketAddr, client_id: &str) -> RawClient {
    let mut client = RawClient::open(addr).await;
    client.version = petrel::protocol::ProtocolVersion::V5;
    let connect = petrel::protocol::Connect {
        properties: ConnectProperties {
            authentication_method: Some(METHOD.to_owned()),
            authentication_data: Some(Bytes::from_static(b"hello")),
            ..ConnectProperties::default()
        },
        ..connect_v5(client_id, true, 0)
    };
    client.send(&Packet::Connect(Box::new(connect))).await;
    match client.recv().await {
        Packet::Auth(auth) => {
            assert_eq!(auth.reason_code, ReasonCode::ContinueAuthentication);
            assert_eq!(
                auth.properties.authentication_method.as_deref(),
                Some(METHOD)
            );
            assert_eq!(
                auth.properties.authentication_data.as_deref(),
                Some(&b"question:42"[..])
            );
        }
        other => panic!("expected AUTH, got {other:?}"),
    }
    client
}

// [MQTT-4.12.0-2] [MQTT-4.12.0-5] (v5.0): the broker asks with AUTH 0x18
// naming the method; a right answer gets CONNACK 0x00 with the method and
// the method's data. Anonymous clients being refused does not refuse an
// authenticated one.
#[tokio::test]
async fn challenge_and_response_connects() {
    timed(async {
        let broker = auth_broker(petrel::Config {
            allow_anonymous: Some(false),
            ..test_config()
        })
        .await;
        let mut client = start_exchange(broker.addr, "authed").await;
        client
            .send(&auth_packet(
                ReasonCode::ContinueAuthentication,
                b"answer:42",
            ))
            .await;
        match client.recv().await {
            Packet::ConnAck(connack) => {
                assert_eq!(connack.reason_code, ReasonCode::Success);
                assert_eq!(
                    connack.properties.authentication_method.as_deref(),
                    Some(METHOD)
                );
                assert_eq!(
                    connack.properties.authentication_data.as_deref(),
                    Some(&b"welcome"[..])
                );
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
        assert!(client.ping_barrier().await.is_empty());
    })
    .await;
}

// [MQTT-4.12.0-4] (v5.0): a wrong answer gets CONNACK 0x87 and the
// connection is closed; anything but AUTH during the exchange is a
// Protocol Error. [MQTT-3.1.4-2] (v5.0): a failed authentication check
// closes the connection.
#[tokio::test]
async fn wrong_answer_or_wrong_packet_is_refused() {
    timed(async {
        let broker = auth_broker(test_config()).await;
        let mut client = start_exchange(broker.addr, "wrong").await;
        client
            .send(&auth_packet(
                ReasonCode::ContinueAuthentication,
                b"answer:41",
            ))
            .await;
        match client.recv().await {
            Packet::ConnAck(connack) => assert_eq!(connack.reason_code, ReasonCode::NotAuthorized),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        client.expect_closed().await;
        let mut client = start_exchange(broker.addr, "rude").await;
        client.send(&Packet::PingReq).await;
        match client.recv().await {
            Packet::ConnAck(connack) => assert_eq!(connack.reason_code, ReasonCode::ProtocolError),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        client.expect_closed().await;
    })
    .await;
}

async fn authenticated(addr: std::net::SocketAddr, client_id: &str) -> RawClient {
    let mut client = start_exchange(addr, client_id).await;
    client
        .send(&auth_packet(
            ReasonCode::ContinueAuthentication,
            b"answer:42",
        ))
        .await;
    match client.recv().await {
        Packet::ConnAck(connack) => assert_eq!(connack.reason_code, ReasonCode::Success),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    client
}

// 4.12.1 (v5.0): re-authentication with AUTH 0x19 runs the exchange again
// while the connection stays up, ending in AUTH 0x00; a failed one closes
// the connection with DISCONNECT [MQTT-4.12.1-2] (v5.0).
#[tokio::test]
async fn reauthentication() {
    timed(async {
        let broker = auth_broker(test_config()).await;
        let mut client = authenticated(broker.addr, "again").await;
        client
            .send(&auth_packet(ReasonCode::ReAuthenticate, b"hello"))
            .await;
        match client.recv().await {
            Packet::Auth(auth) => assert_eq!(auth.reason_code, ReasonCode::ContinueAuthentication),
            other => panic!("expected AUTH, got {other:?}"),
        }
        client
            .send(&auth_packet(
                ReasonCode::ContinueAuthentication,
                b"answer:42",
            ))
            .await;
        match client.recv().await {
            Packet::Auth(auth) => {
                assert_eq!(auth.reason_code, ReasonCode::Success);
                assert_eq!(
                    auth.properties.authentication_method.as_deref(),
                    Some(METHOD)
                );
            }
            other => panic!("expected AUTH, got {other:?}"),
        }
        assert!(client.ping_barrier().await.is_empty());
        client
            .send(&auth_packet(ReasonCode::ReAuthenticate, b"goodbye"))
            .await;
        client.expect_disconnect(ReasonCode::NotAuthorized).await;
    })
    .await;
}

// [MQTT-4.12.0-6] (v5.0): a client that did not use enhanced
// authentication gets no Authentication Method in CONNACK, and an AUTH
// from it is a Protocol Error ([MQTT-4.12.0-7] (v5.0) binds the client).
#[tokio::test]
async fn auth_without_enhanced_authentication_is_a_protocol_error() {
    timed(async {
        let broker = auth_broker(test_config()).await;
        let (mut client, connack) =
            RawClient::connect_v5_with(broker.addr, "plain", ConnectProperties::default()).await;
        assert_eq!(connack.properties.authentication_method, None);
        client
            .send(&auth_packet(ReasonCode::ReAuthenticate, b"hello"))
            .await;
        client.expect_disconnect(ReasonCode::ProtocolError).await;
    })
    .await;
}
