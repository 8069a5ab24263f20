//! Hostile input over real sockets. For each attack: the offending
//! connection is closed (with the reason, at MQTT 5), the broker stays up,
//! what it holds for the attacker stays bounded, and a bystander that
//! publishes and subscribes meanwhile loses nothing.

mod common;

use std::time::Duration;

use common::*;
use petrel::protocol::{Packet, QoS, ReasonCode};

/// A client that keeps a QoS 1 subscription and checks a round trip.
struct Bystander {
    client: RawClient,
    sent: u16,
}

impl Bystander {
    async fn new(broker: &TestBroker) -> Bystander {
        let mut client = RawClient::connect(broker.addr, "bystander").await;
        client
            .subscribe(1, &[("bystander/echo", QoS::AtLeastOnce)])
            .await;
        Bystander { client, sent: 0 }
    }

    /// Publishes one message to itself and gets it back, acknowledged.
    async fn round_trip(&mut self) {
        self.sent += 1;
        let payload = self.sent.to_be_bytes();
        self.client
            .publish(
                "bystander/echo",
                &payload,
                QoS::AtLeastOnce,
                false,
                self.sent,
            )
            .await;
        let publish = self.client.recv_publish().await;
        assert_eq!(
            &publish.payload[..],
            &payload,
            "the bystander lost a message"
        );
        acknowledge(&mut self.client, &publish).await;
    }
}

/// Deterministic pseudo-random bytes.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

// Random bytes instead of CONNECT, and random bytes after a CONNECT: each
// connection is closed: malformed at once (at 5.0 after DISCONNECT 0x81 or
// 0x82), or, when the noise happens to announce a packet longer than what
// follows, at connect_timeout or the keep-alive. Nobody else notices.
#[tokio::test]
async fn random_bytes() {
    timed(async {
        let broker = TestBroker::with_config(petrel::Config {
            connect_timeout: 1,
            ..test_config()
        })
        .await;
        let mut bystander = Bystander::new(&broker).await;
        let mut attackers = Vec::new();
        for seed in 1..=20u64 {
            let mut before = RawClient::open(broker.addr).await;
            let _ = before.stream_write(&noise(4096, seed)).await;
            let (mut after, _) =
                RawClient::connect_with(broker.addr, connect_v5(&format!("noisy-{seed}"), true, 1))
                    .await;
            let _ = after.stream_write(&noise(4096, seed * 7919)).await;
            attackers.push(before);
            attackers.push(after);
        }
        bystander.round_trip().await;
        for attacker in &mut attackers {
            attacker.expect_closed_or_any().await;
        }
        bystander.round_trip().await;
        let metrics = broker.broker.metrics();
        eventually("only the bystander left", || {
            metrics.connections_open.get() == 1
        })
        .await;
    })
    .await;
}

// Truncated packets: a CONNECT that stops halfway is closed at
// connect_timeout; a PUBLISH that stops halfway waits for the rest without
// holding the rest of the broker up.
#[tokio::test]
async fn truncated_packets() {
    timed(async {
        let broker = TestBroker::with_config(petrel::Config {
            connect_timeout: 1,
            ..test_config()
        })
        .await;
        let mut bystander = Bystander::new(&broker).await;
        let mut half_connect = RawClient::open(broker.addr).await;
        half_connect
            .send_bytes(&[0x10, 0x20, 0x00, 0x04, b'M'])
            .await;
        let mut half_publish = RawClient::connect(broker.addr, "half").await;
        half_publish
            .send_bytes(&[0x30, 0x7F, 0x00, 0x01, b't'])
            .await;
        bystander.round_trip().await;
        half_connect.expect_closed().await;
        assert_eq!(broker.broker.metrics().connect_timeouts.get(), 1);
        bystander.round_trip().await;
    })
    .await;
}

// A remaining length announcing hundreds of megabytes is refused from the
// fixed header: closed at once (DISCONNECT 0x95 at 5.0), nothing buffered.
#[tokio::test]
async fn remaining_length_announcing_gigabytes() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut bystander = Bystander::new(&broker).await;
        let mut attacker = RawClient::connect_v5(broker.addr, "huge").await;
        // PUBLISH with remaining length 268,435,455 (the largest there is).
        attacker.send_bytes(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F]).await;
        attacker.expect_disconnect(ReasonCode::PacketTooLarge).await;
        let mut before_connect = RawClient::open(broker.addr).await;
        before_connect
            .send_bytes(&[0x10, 0xFF, 0xFF, 0xFF, 0x7F])
            .await;
        before_connect.expect_closed().await;
        bystander.round_trip().await;
    })
    .await;
}

// A first packet that is not CONNECT is refused from its first byte;
// protocol violations after CONNECT close that connection only.
#[tokio::test]
async fn protocol_violations() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut bystander = Bystander::new(&broker).await;
        let mut not_connect = RawClient::open(broker.addr).await;
        not_connect.send_bytes(&[0x30]).await;
        not_connect.expect_closed().await;
        let violations: [Packet; 3] = [
            Packet::Connect(Box::new(connect_v5("again", true, 0))),
            Packet::ConnAck(Default::default()),
            Packet::PingResp,
        ];
        for packet in violations {
            let mut client = RawClient::connect_v5(broker.addr, "violator").await;
            client.send(&packet).await;
            client.expect_disconnect(ReasonCode::ProtocolError).await;
            bystander.round_trip().await;
        }
    })
    .await;
}

// Thousands of subscriptions in one SUBSCRIBE: those over
// max_subscriptions_per_client are refused, the rest granted, and the
// broker goes on.
#[tokio::test]
async fn thousands_of_subscriptions() {
    timed(async {
        let broker = TestBroker::with_config(petrel::Config {
            max_subscriptions_per_client: 1000,
            ..test_config()
        })
        .await;
        let mut bystander = Bystander::new(&broker).await;
        let mut greedy = RawClient::connect_v5(broker.addr, "greedy").await;
        let filters: Vec<String> = (0..3000).map(|n| format!("flood/{n}/#")).collect();
        let pairs: Vec<(&str, QoS)> = filters
            .iter()
            .map(|f| (f.as_str(), QoS::AtMostOnce))
            .collect();
        let codes = greedy.subscribe(1, &pairs).await;
        let refused = codes
            .iter()
            .filter(|c| **c == ReasonCode::QuotaExceeded)
            .count();
        assert_eq!((codes.len(), refused), (3000, 2000));
        assert_eq!(broker.broker.metrics().subscriptions_refused.get(), 2000);
        bystander.round_trip().await;
    })
    .await;
}

// A slowloris: a CONNECT sent one byte at a time, slowly, is still closed
// at connect_timeout, counted from the connection's start.
#[tokio::test]
async fn slowloris() {
    timed(async {
        let broker = TestBroker::with_config(petrel::Config {
            connect_timeout: 1,
            ..test_config()
        })
        .await;
        let mut bystander = Bystander::new(&broker).await;
        let mut slow = RawClient::open(broker.addr).await;
        let connect = {
            let mut bytes = bytes::BytesMut::new();
            let packet = Packet::Connect(Box::new(connect_packet("slow", true, 0)));
            petrel::protocol::encode(
                &packet,
                petrel::protocol::ProtocolVersion::V3_1_1,
                &mut bytes,
            )
            .expect("encodes");
            bytes
        };
        let started = tokio::time::Instant::now();
        let mut closed = false;
        for byte in connect.iter() {
            // The behaviour under test is a client that is slow on purpose.
            tokio::time::sleep(Duration::from_millis(150)).await;
            if !slow.stream_write(&[*byte]).await {
                closed = true;
                break;
            }
            bystander.round_trip().await;
        }
        if !closed {
            slow.expect_closed().await;
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(broker.broker.metrics().connect_timeouts.get(), 1);
    })
    .await;
}

// A subscriber that never reads: what it is sent piles up to the write
// high-water mark, then its queue bound, then is dropped and counted; the
// broker's memory for it stays bounded and the publisher and a bystander
// carry on.
#[tokio::test]
async fn a_client_that_never_reads() {
    timed(async {
        let broker = TestBroker::with_config(petrel::Config {
            max_queued_messages: 100,
            ..test_config()
        })
        .await;
        let mut bystander = Bystander::new(&broker).await;
        let mut stuck = RawClient::connect(broker.addr, "stuck").await;
        stuck.subscribe(1, &[("firehose", QoS::AtMostOnce)]).await;
        // From here on `stuck` never reads.
        let mut publisher = RawClient::connect(broker.addr, "firehose").await;
        let payload = vec![0u8; 16 * 1024];
        for _ in 0..2000 {
            publisher
                .publish("firehose", &payload, QoS::AtMostOnce, false, 0)
                .await;
        }
        publisher.ping_barrier().await;
        let metrics = broker.broker.metrics();
        // 32 MB were published; what the broker holds for `stuck` is at
        // most its socket's buffers, 256 KiB unsent and 100 queued.
        eventually("messages dropped for the stuck client", || {
            metrics.messages_dropped.get() > 0
        })
        .await;
        bystander.round_trip().await;
        drop(stuck);
    })
    .await;
}
