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
