//! The broker closes gracefully: what it wrote before closing (the
//! DISCONNECT that says why, the acknowledgements before it) reaches a
//! client that keeps sending meanwhile. A socket closed with unread input
//! is reset by the kernel, and the reset destroys what the client had not
//! read yet; so the broker shuts its write side, then reads and discards
//! what still comes for a moment before it lets go.
//!
//! The clients here read one packet at a time, exactly (never a byte past
//! it), the way a client that answers as it reads does: whatever the
//! broker sent stays in the client's kernel buffer until it is read, where
//! a reset would destroy it.

mod common;

use bytes::BytesMut;
use common::*;
use petrel::protocol::{self, Ack, Packet, ProtocolVersion, QoS, ReasonCode};
use petrel::Config;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Reads exactly one packet: its fixed header byte by byte, then its
/// body; `None` on EOF. A reset (ECONNRESET) fails the test.
async fn recv_exact(stream: &mut TcpStream, version: ProtocolVersion) -> Option<Packet> {
    let read = async {
        let mut packet = BytesMut::new();
        let mut first = [0u8; 1];
        match stream.read(&mut first).await {
            Ok(0) => return None,
            Ok(_) => packet.extend_from_slice(&first),
            Err(error) => panic!("read failed before the close was read: {error}"),
        }
        let mut length = 0usize;
        for shift in (0..28).step_by(7) {
            let byte = stream
                .read_u8()
                .await
                .expect("read the remaining length without a reset");
            packet.extend_from_slice(&[byte]);
            length |= usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0u8; length];
        stream
            .read_exact(&mut body)
            .await
            .expect("read the packet body without a reset");
        packet.extend_from_slice(&body);
        Some(protocol::decode(&mut packet, usize::MAX, version).expect("valid packet"))
    };
    tokio::time::timeout(RECV_TIMEOUT, read)
        .await
        .expect("timed out waiting for a packet")
        .flatten()
}

/// Reads packets until DISCONNECT, answering each PUBREC with PUBREL
/// (which the broker no longer handles once it closes); returns how many PUBRECs came,
/// and the DISCONNECT's reason code. EOF must follow it.
async fn read_until_disconnect(client: &mut RawClient) -> (usize, ReasonCode) {
    let mut pubrecs = 0;
    loop {
        match recv_exact(&mut client.stream, ProtocolVersion::V5).await {
            Some(Packet::PubRec(ack)) => {
                pubrecs += 1;
                // The broker no longer handles it, but still reads it:
                // the write must not fail (EPIPE after a reset).
                let pubrel = Packet::PubRel(Ack::new(ack.packet_id));
                assert!(
                    client.try_send(&pubrel).await,
                    "PUBREL after PUBREC {pubrecs}: the broker reset the connection"
                );
            }
            Some(Packet::Disconnect(disconnect)) => {
                assert_eq!(
                    recv_exact(&mut client.stream, ProtocolVersion::V5).await,
                    None,
                    "EOF after the DISCONNECT"
                );
                return (pubrecs, disconnect.reason_code);
            }
            Some(other) => panic!("unexpected {other:?}"),
            None => panic!("closed without a DISCONNECT"),
        }
    }
}

// [MQTT-3.3.4-9] (v5.0) [MQTT-4.13.1-1] (v5.0): Receive Maximum + 1 QoS 2
// PUBLISH sent without waiting, each PUBREC answered as it is read: every
// PUBREC and then the DISCONNECT 0x93 are read, never a reset.
#[tokio::test]
async fn receive_maximum_exceeded_is_read_by_a_client_that_keeps_sending() {
    timed(async {
        let receive_maximum = 10u16;
        let broker = TestBroker::with_config(Config {
            receive_maximum,
            ..test_config()
        })
        .await;
        for round in 0..5 {
            let mut client = RawClient::connect_v5(broker.addr, &format!("eager-{round}")).await;
            let mut burst = BytesMut::new();
            for packet_id in 1..=receive_maximum + 1 {
                let publish =
                    publish_packet("t", b"payload", QoS::ExactlyOnce, false, Some(packet_id));
                protocol::encode(&publish, ProtocolVersion::V5, &mut burst).expect("encodes");
            }
            client.send_bytes(&burst).await;
            let (pubrecs, reason_code) = read_until_disconnect(&mut client).await;
            assert_eq!(pubrecs, usize::from(receive_maximum), "round {round}");
            assert_eq!(reason_code, ReasonCode::ReceiveMaximumExceeded);
        }
    })
    .await;
}

// [MQTT-4.13.1-1] (v5.0): a protocol violation (a second CONNECT
// [MQTT-3.1.0-2]) followed by more packets, sent one by one while the
// broker closes: the client reads the DISCONNECT 0x82, never a reset.
#[tokio::test]
async fn a_violation_followed_by_more_packets_is_read_as_disconnect() {
    timed(async {
        let broker = TestBroker::start().await;
        for round in 0..5 {
            let client_id = format!("violator-{round}");
            let mut client = RawClient::connect_v5(broker.addr, &client_id).await;
            client
                .send(&Packet::Connect(Box::new(connect_v5(&client_id, true, 0))))
                .await;
            for packet_id in 1..=50 {
                let publish =
                    publish_packet("t", b"more", QoS::AtLeastOnce, false, Some(packet_id));
                assert!(
                    client.try_send(&publish).await,
                    "packet {packet_id} after the violation: the broker reset the connection"
                );
                // Each in a write of its own, so that most arrive after the
                // broker stopped reading for MQTT.
                tokio::task::yield_now().await;
            }
            let (pubrecs, reason_code) = read_until_disconnect(&mut client).await;
            assert_eq!(pubrecs, 0);
            assert_eq!(reason_code, ReasonCode::ProtocolError, "round {round}");
        }
    })
    .await;
}
