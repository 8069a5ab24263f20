//! TLS listeners: MQTT over TLS with a server certificate, mutual TLS with
//! client certificates, and start-up errors for certificate files. The
//! certificates are made in the test (rcgen); the client is tokio-rustls.

mod common;

use std::net::SocketAddr;

use bytes::BytesMut;
use common::pki::Pki;
use common::*;
use petrel::config::TlsConfig;
use petrel::protocol::{self, Packet, ProtocolVersion, QoS, ReasonCode};
use petrel::transport::tls::Tls;
use petrel::transport::Listener;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

async fn tls_broker(
    config: petrel::Config,
    tls: &TlsConfig,
    allow_anonymous: Option<bool>,
) -> TestBroker {
    tls_listener_broker(config, tls, allow_anonymous, None).await
}

async fn tls_listener_broker(
    config: petrel::Config,
    tls: &TlsConfig,
    allow_anonymous: Option<bool>,
    websocket: Option<petrel::transport::websocket::WebSocket>,
) -> TestBroker {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let listener = Listener {
        tcp,
        tls: Some(Tls::load(tls, 0).expect("certificates load")),
        websocket,
        proxy_protocol: false,
        allow_anonymous,
        config: None,
    };
    let broker =
        petrel::Broker::start_listeners(config, vec![listener], Vec::new()).expect("start");
    let addr = broker.local_addrs()[0];
    TestBroker { broker, addr }
}

/// An MQTT client over TLS speaking raw packets.
struct TlsClient {
    stream: tokio_rustls::client::TlsStream<TcpStream>,
    buf: BytesMut,
}

impl TlsClient {
    async fn open(addr: SocketAddr, connector: &TlsConnector) -> std::io::Result<TlsClient> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("127.0.0.1").expect("name");
        let stream = connector.connect(name, tcp).await?;
        Ok(TlsClient {
            stream,
            buf: BytesMut::new(),
        })
    }

    async fn send(&mut self, packet: &Packet) {
        let mut bytes = BytesMut::new();
        protocol::encode(packet, ProtocolVersion::V3_1_1, &mut bytes).expect("encodes");
        self.stream.write_all(&bytes).await.expect("write");
        self.stream.flush().await.expect("flush");
    }

    /// The next packet, or `None` once the broker has closed.
    async fn recv(&mut self) -> Option<Packet> {
        read_packet(&mut self.stream, &mut self.buf, ProtocolVersion::V3_1_1).await
    }

    async fn connect(&mut self, client_id: &str) -> ReasonCode {
        self.send(&Packet::Connect(Box::new(connect_packet(
            client_id, true, 0,
        ))))
        .await;
        match self.recv().await {
            Some(Packet::ConnAck(connack)) => connack.reason_code,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }
}

// MQTT over TLS: a client that trusts the broker's CA connects, subscribes
// and receives what a second TLS client publishes; plain MQTT on the TLS
// port gets no CONNACK.
#[tokio::test]
async fn mqtt_over_tls() {
    timed(async {
        let pki = Pki::new("plain");
        let broker = tls_broker(test_config(), &pki.server_tls(false), None).await;
        let connector = pki.connector(false);
        let mut subscriber = TlsClient::open(broker.addr, &connector).await.expect("TLS");
        assert_eq!(subscriber.connect("tls-sub").await, ReasonCode::Success);
        subscriber
            .send(&subscribe_packet(1, &[("secure/#", QoS::AtLeastOnce)]))
            .await;
        assert!(matches!(subscriber.recv().await, Some(Packet::SubAck(_))));
        let mut publisher = TlsClient::open(broker.addr, &connector).await.expect("TLS");
        assert_eq!(publisher.connect("tls-pub").await, ReasonCode::Success);
        publisher
            .send(&publish_packet(
                "secure/a",
                b"sealed",
                QoS::AtMostOnce,
                false,
                None,
            ))
            .await;
        match subscriber.recv().await {
            Some(Packet::Publish(publish)) => assert_eq!(&publish.payload[..], b"sealed"),
            other => panic!("expected PUBLISH, got {other:?}"),
        }
        // Plain MQTT on the TLS port gets nowhere.
        let mut plain = RawClient::open(broker.addr).await;
        plain
            .send(&Packet::Connect(Box::new(connect_packet("plain", true, 0))))
            .await;
        let mut reply = Vec::new();
        let _ = tokio::time::timeout(RECV_TIMEOUT, plain.stream.read_to_end(&mut reply))
            .await
            .expect("the broker closes the connection");
        assert_ne!(reply.first(), Some(&0x20), "CONNACK over plain TCP");
    })
    .await;
}

// Mutual TLS: with require_certificate a client without a certificate
// cannot complete the handshake; one with a certificate from the CA
// connects, even where anonymous clients are refused (the certificate
// authenticates it).
#[tokio::test]
async fn mutual_tls_requires_a_client_certificate() {
    timed(async {
        let pki = Pki::new("mutual");
        let broker = tls_broker(test_config(), &pki.server_tls(true), Some(false)).await;
        let anonymous = pki.connector(false);
        // TLS 1.3 reports the refusal after the client's handshake ends: the
        // connection then closes without any MQTT.
        if let Ok(mut client) = TlsClient::open(broker.addr, &anonymous).await {
            client
                .send(&Packet::Connect(Box::new(connect_packet(
                    "nocert", true, 0,
                ))))
                .await;
            assert!(
                client.recv().await.is_none(),
                "served without a certificate"
            );
        }
        let mut client = TlsClient::open(broker.addr, &pki.connector(true))
            .await
            .expect("TLS with a client certificate");
        assert_eq!(client.connect("device-7").await, ReasonCode::Success);
    })
    .await;
}

// A listener that refuses anonymous clients refuses a TLS client without a
// client certificate or credentials: CONNACK 0x05 (3.1.1).
#[tokio::test]
async fn anonymous_refused_per_listener() {
    timed(async {
        let pki = Pki::new("anonymous");
        let broker = tls_broker(test_config(), &pki.server_tls(false), Some(false)).await;
        let mut client = TlsClient::open(broker.addr, &pki.connector(false))
            .await
            .expect("TLS");
        assert_eq!(client.connect("nobody").await, ReasonCode::NotAuthorized);
    })
    .await;
}

// Start-up errors name the key and the file: a missing certificate, a key
// that does not go with the certificate, a CA file without certificates.
#[tokio::test]
async fn certificate_errors_name_the_key_and_the_file() {
    let pki = Pki::new("errors");
    let missing = TlsConfig {
        cert: pki.path("nope.pem"),
        ..pki.server_tls(false)
    };
    let error = Tls::load(&missing, 2).expect_err("missing file");
    assert_eq!(error.key.as_deref(), Some("listener[2].tls.cert"));
    assert!(error.message.contains("nope.pem"), "{error}");
    let mismatched = TlsConfig {
        key: pki.path("other.key"),
        ..pki.server_tls(false)
    };
    let error = Tls::load(&mismatched, 0).expect_err("mismatched key");
    assert_eq!(error.key.as_deref(), Some("listener[0].tls.key"));
    assert!(error.message.contains("does not go with"), "{error}");
    let not_a_ca = TlsConfig {
        ca: Some(pki.path("server.key")),
        ..pki.server_tls(true)
    };
    let error = Tls::load(&not_a_ca, 0).expect_err("no certificate in the CA file");
    assert_eq!(error.key.as_deref(), Some("listener[0].tls.ca"));
}

// Secure WebSocket: the TLS handshake, then the WebSocket upgrade, then
// MQTT in binary frames.
#[tokio::test]
async fn mqtt_over_secure_websocket() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    timed(async {
        let pki = Pki::new("wss");
        let websocket = petrel::transport::websocket::WebSocket {
            path: "/mqtt".to_owned(),
        };
        let broker =
            tls_listener_broker(test_config(), &pki.server_tls(false), None, Some(websocket)).await;
        let tcp = TcpStream::connect(broker.addr).await.expect("connect");
        let name = ServerName::try_from("127.0.0.1").expect("name");
        let tls = pki.connector(false).connect(name, tcp).await.expect("TLS");
        let request = format!("wss://{}/mqtt", broker.addr)
            .into_client_request()
            .expect("request");
        let (mut ws, _) = tokio_tungstenite::client_async(request, tls)
            .await
            .expect("upgrade");
        let mut bytes = BytesMut::new();
        let connect = Packet::Connect(Box::new(connect_packet("wss", true, 0)));
        protocol::encode(&connect, ProtocolVersion::V3_1_1, &mut bytes).expect("encodes");
        ws.send(Message::Binary(bytes.to_vec().into()))
            .await
            .expect("send");
        let frame = tokio::time::timeout(RECV_TIMEOUT, ws.next())
            .await
            .expect("a frame in time");
        let Some(Ok(Message::Binary(data))) = frame else {
            panic!("expected a binary frame, got {frame:?}");
        };
        let mut buf = BytesMut::from(&data[..]);
        let connack = protocol::decode(&mut buf, usize::MAX, ProtocolVersion::V3_1_1)
            .expect("valid")
            .expect("whole");
        assert!(matches!(connack, Packet::ConnAck(c) if c.reason_code == ReasonCode::Success));
    })
    .await;
}

// Broker::reload (SIGHUP) reads the certificate and key again: new
// handshakes use the new certificate; a connection made before stays up.
#[tokio::test]
async fn certificates_reload_without_dropping_connections() {
    timed(async {
        let old = Pki::new("reload-old");
        let broker = tls_broker(test_config(), &old.server_tls(false), None).await;
        let mut before = TlsClient::open(broker.addr, &old.connector(false))
            .await
            .expect("TLS");
        assert_eq!(before.connect("before").await, ReasonCode::Success);
        let new = Pki::new("reload-new");
        for file in ["server.pem", "server.key"] {
            std::fs::copy(new.path(file), old.path(file)).expect("copy");
        }
        assert!(broker.broker.reload().is_empty());
        let mut after = TlsClient::open(broker.addr, &new.connector(false))
            .await
            .expect("TLS with the new certificate");
        assert_eq!(after.connect("after").await, ReasonCode::Success);
        let stale = TlsClient::open(broker.addr, &old.connector(false)).await;
        assert!(stale.is_err(), "the old CA no longer verifies the broker");
        before.send(&Packet::PingReq).await;
        assert!(matches!(before.recv().await, Some(Packet::PingResp)));
    })
    .await;
}

// With use_identity_as_username, a client certificate's common name is the
// user name the ACL knows the client by (here `device-7`).
#[tokio::test]
async fn certificate_identity_is_the_acl_user() {
    timed(async {
        let pki = Pki::new("identity");
        let acl = pki.path("acl");
        std::fs::write(&acl, "user device-7\ntopic readwrite devices/device-7/#\n").expect("write");
        let config = petrel::Config {
            acl_file: Some(acl),
            ..test_config()
        };
        let broker = tls_broker(config, &pki.server_tls(true), Some(false)).await;
        let mut client = TlsClient::open(broker.addr, &pki.connector(true))
            .await
            .expect("TLS");
        assert_eq!(client.connect("any-client-id").await, ReasonCode::Success);
        client
            .send(&subscribe_packet(
                1,
                &[
                    ("devices/device-7/#", QoS::AtMostOnce),
                    ("other/#", QoS::AtMostOnce),
                ],
            ))
            .await;
        match client.recv().await {
            Some(Packet::SubAck(suback)) => assert_eq!(
                suback.reason_codes,
                vec![ReasonCode::GRANTED_QOS_0, ReasonCode::UnspecifiedError]
            ),
            other => panic!("expected SUBACK, got {other:?}"),
        }
        client
            .send(&publish_packet(
                "devices/device-7/state",
                b"on",
                QoS::AtMostOnce,
                false,
                None,
            ))
            .await;
        match client.recv().await {
            Some(Packet::Publish(publish)) => assert_eq!(&publish.payload[..], b"on"),
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    })
    .await;
}
