//! Keep-alive: PINGREQ / PINGRESP, disconnection after 1.5 x keep-alive of
//! silence, keep-alive 0 meaning none.

mod common;

use std::time::Duration;

use common::*;
use petrel::protocol::Packet;

// [MQTT-3.12.4-1] (v3.1.1): every PINGREQ gets a PINGRESP.
#[tokio::test]
async fn pingreq_gets_pingresp() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut client = RawClient::connect(broker.addr, "pinger").await;
        for _ in 0..3 {
            client.send(&Packet::PingReq).await;
            assert_eq!(client.recv().await, Packet::PingResp);
        }
    })
    .await;
}

// [MQTT-3.1.2-24] (v3.1.1): silent for 1.5 x keep-alive: disconnected.
#[tokio::test]
async fn silent_client_is_disconnected_after_one_and_a_half_keep_alives() {
    timed(async {
        let broker = TestBroker::start().await;
        let (mut client, _) =
            RawClient::connect_with(broker.addr, connect_packet("quiet", true, 1)).await;
        let started = tokio::time::Instant::now();
        client.expect_closed().await;
        let elapsed = started.elapsed();
        // Not before 1.5 s (the bound the specification sets).
        assert!(
            elapsed >= Duration::from_millis(1400),
            "closed after {elapsed:?}"
        );
        assert_eq!(broker.broker.metrics().keep_alive_timeouts.get(), 1);
    })
    .await;
}

// Traffic keeps the connection alive past the keep-alive period.
#[tokio::test]
async fn activity_keeps_the_connection_alive() {
    timed(async {
        let broker = TestBroker::start().await;
        let (mut client, _) =
            RawClient::connect_with(broker.addr, connect_packet("busy", true, 1)).await;
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            client.send(&Packet::PingReq).await;
            assert_eq!(client.recv().await, Packet::PingResp);
        }
        assert_eq!(broker.broker.metrics().keep_alive_timeouts.get(), 0);
    })
    .await;
}

// Keep-alive 0 turns the mechanism off: a client silent for longer than any
// short keep-alive stays connected.
#[tokio::test]
async fn keep_alive_zero_means_no_timeout() {
    timed(async {
        let broker = TestBroker::start().await;
        let (mut client, _) =
            RawClient::connect_with(broker.addr, connect_packet("forever", true, 0)).await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(client.ping_barrier().await.is_empty());
        assert_eq!(broker.broker.metrics().keep_alive_timeouts.get(), 0);
    })
    .await;
}
