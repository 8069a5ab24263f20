//! Per-client limits that protect the broker from one busy client: the
//! publish rate (messages and bytes per second).

mod common;

use common::*;
use petrel::protocol::{QoS, ReasonCode};

// 3.14.2.1 (v5.0): an MQTT 5 client over max_publish_rate is told "Quota
// exceeded" (DISCONNECT 0x97) and closed; counted.
#[tokio::test]
async fn mqtt5_client_over_its_publish_rate_is_disconnected() {
    timed(async {
        let broker = TestBroker::with_config(petrel::Config {
            max_publish_rate: 5,
            ..test_config()
        })
        .await;
        let mut client = RawClient::connect_v5(broker.addr, "chatty").await;
        for _ in 0..20 {
            if !client
                .try_send(&publish_packet("t", b"x", QoS::AtMostOnce, false, None))
                .await
            {
                break;
            }
        }
        client.expect_disconnect(ReasonCode::QuotaExceeded).await;
        assert_eq!(broker.broker.metrics().publish_rate_exceeded.get(), 1);
    })
    .await;
}

// A 3.1.1 client over max_publish_rate cannot be told: it is slowed down
// (its input is not read until it is back within its rate) and nothing it
// sent is lost.
#[tokio::test]
async fn mqtt3_client_over_its_publish_rate_is_slowed_without_loss() {
    timed(async {
        let broker = TestBroker::with_config(petrel::Config {
            max_publish_rate: 50,
            max_publish_bytes_rate: 100_000,
            ..test_config()
        })
        .await;
        let mut subscriber = RawClient::connect(broker.addr, "sink").await;
        subscriber.subscribe(1, &[("burst", QoS::AtMostOnce)]).await;
        let mut publisher = RawClient::connect(broker.addr, "burst").await;
        for n in 0..80u8 {
            publisher
                .publish("burst", &[n], QoS::AtMostOnce, false, 0)
                .await;
        }
        for n in 0..80u8 {
            assert_eq!(subscriber.recv_publish().await.payload[..], [n]);
        }
        assert!(broker.broker.metrics().publish_rate_exceeded.get() >= 1);
        assert!(publisher.ping_barrier().await.is_empty());
    })
    .await;
}

async fn proxied_broker(per_address: usize) -> TestBroker {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let listener = petrel::transport::Listener {
        proxy_protocol: true,
        ..petrel::transport::Listener::tcp(tcp)
    };
    let config = petrel::Config {
        max_connections_per_address: per_address,
        ..test_config()
    };
    let broker =
        petrel::Broker::start_listeners(config, vec![listener], Vec::new()).expect("start");
    let addr = broker.local_addrs()[0];
    TestBroker { broker, addr }
}

/// Opens a connection through a (pretend) load balancer for `client`, and
/// sends CONNECT; the CONNACK's code, or `None` if the broker closed.
async fn connect_proxied(
    broker: &TestBroker,
    header: &[u8],
    client_id: &str,
) -> (RawClient, Option<ReasonCode>) {
    let mut client = RawClient::open(broker.addr).await;
    client.send_bytes(header).await;
    let connect = petrel::protocol::Packet::Connect(Box::new(connect_packet(client_id, true, 0)));
    let sent = client.try_send(&connect).await;
    let code = match sent {
        true => match client.try_recv().await {
            Some(petrel::protocol::Packet::ConnAck(connack)) => Some(connack.reason_code),
            _ => None,
        },
        false => None,
    };
    (client, code)
}

// A listener behind a load balancer takes the client's address from the
// PROXY protocol header (v1 or v2); a connection without one is closed.
// The per-address limit counts the address the header names.
#[tokio::test]
async fn proxy_protocol_names_the_client_for_the_per_address_limit() {
    timed(async {
        let broker = proxied_broker(1).await;
        let v1 = b"PROXY TCP4 192.0.2.9 198.51.100.1 40000 1883\r\n";
        let (_first, code) = connect_proxied(&broker, v1, "first").await;
        assert_eq!(code, Some(ReasonCode::Success));
        // Same client address, through the balancer again: over the limit.
        let (_second, code) = connect_proxied(&broker, v1, "second").await;
        assert_eq!(code, None);
        let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
        v2.extend([192, 0, 2, 10, 198, 51, 100, 1]);
        v2.extend(40001u16.to_be_bytes());
        v2.extend(1883u16.to_be_bytes());
        let (_third, code) = connect_proxied(&broker, &v2, "third").await;
        assert_eq!(code, Some(ReasonCode::Success));
        let (_fourth, code) = connect_proxied(&broker, b"", "no-header").await;
        assert_eq!(code, None);
        assert_eq!(broker.broker.metrics().connections_refused.get(), 1);
    })
    .await;
}

// max_connections_per_address on a plain listener: the connection over
// the limit is closed at once (counted); when one closes, a new one is
// accepted.
#[tokio::test]
async fn per_address_connection_limit() {
    timed(async {
        let broker = TestBroker::with_config(petrel::Config {
            max_connections_per_address: 2,
            ..test_config()
        })
        .await;
        let first = RawClient::connect(broker.addr, "one").await;
        let _second = RawClient::connect(broker.addr, "two").await;
        let mut third = RawClient::open(broker.addr).await;
        third.expect_closed().await;
        let metrics = broker.broker.metrics();
        assert_eq!(metrics.connections_refused.get(), 1);
        first.disconnect().await;
        eventually("the first connection closed", || {
            metrics.connections_open.get() == 1
        })
        .await;
        let _fourth = RawClient::connect(broker.addr, "four").await;
    })
    .await;
}
