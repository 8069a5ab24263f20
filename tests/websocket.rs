//! MQTT over WebSocket: the upgrade on the configured path with the `mqtt`
//! subprotocol, binary frames, packets split across frames and several
//! packets in one frame, refusals of a wrong path and of text frames.

mod common;

use bytes::BytesMut;
use common::*;
use futures_util::{SinkExt, StreamExt};
use petrel::protocol::{self, Packet, ProtocolVersion, QoS, ReasonCode};
use petrel::transport::websocket::WebSocket;
use petrel::transport::Listener;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A broker with a WebSocket listener (its `addr`) and a plain TCP one
/// (returned beside it).
async fn ws_broker() -> (TestBroker, std::net::SocketAddr) {
    let ws = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let listeners = vec![
        Listener {
            websocket: Some(WebSocket {
                path: "/mqtt".to_owned(),
            }),
            ..Listener::tcp(ws)
        },
        Listener::tcp(tcp),
    ];
    let broker =
        petrel::Broker::start_listeners(test_config(), listeners, Vec::new()).expect("start");
    let addrs = broker.local_addrs().to_vec();
    let broker = TestBroker {
        broker,
        addr: addrs[0],
    };
    (broker, addrs[1])
}

/// An MQTT client over WebSocket, sending each packet in one binary frame
/// unless told otherwise.
struct WsClient {
    ws: WebSocketStream<TcpStream>,
    buf: BytesMut,
}

impl WsClient {
    async fn open(broker: &TestBroker, path: &str) -> Result<WsClient, String> {
        let tcp = TcpStream::connect(broker.addr).await.expect("connect");
        let mut request = format!("ws://{}{path}", broker.addr)
            .into_client_request()
            .expect("request");
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
        let (ws, response) = tokio_tungstenite::client_async(request, tcp)
            .await
            .map_err(|error| error.to_string())?;
        assert_eq!(
            response.headers().get("Sec-WebSocket-Protocol"),
            Some(&HeaderValue::from_static("mqtt"))
        );
        Ok(WsClient {
            ws,
            buf: BytesMut::new(),
        })
    }

    fn bytes(packet: &Packet) -> Vec<u8> {
        let mut bytes = BytesMut::new();
        protocol::encode(packet, ProtocolVersion::V3_1_1, &mut bytes).expect("encodes");
        bytes.to_vec()
    }

    async fn send_frame(&mut self, bytes: Vec<u8>) {
        self.ws
            .send(Message::Binary(bytes.into()))
            .await
            .expect("send a frame");
    }

    async fn send(&mut self, packet: &Packet) {
        self.send_frame(WsClient::bytes(packet)).await;
    }

    /// The next packet, or `None` once the broker closed.
    async fn recv(&mut self) -> Option<Packet> {
        loop {
            if let Some(packet) =
                protocol::decode(&mut self.buf, usize::MAX, ProtocolVersion::V3_1_1).expect("valid")
            {
                return Some(packet);
            }
            let frame = tokio::time::timeout(RECV_TIMEOUT, self.ws.next())
                .await
                .expect("timed out waiting for a frame");
            match frame {
                Some(Ok(Message::Binary(data))) => self.buf.extend_from_slice(&data),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                _ => return None,
            }
        }
    }
}

// A client on the WebSocket listener connects, subscribes, and receives
// what a TCP client publishes, and the reverse. The upgrade's subprotocol
// is "mqtt" [MQTT-6.0.0-4] (v3.1.1, v5.0) (checked in `WsClient::open`).
#[tokio::test]
async fn mqtt_over_websocket() {
    timed(async {
        let (broker, tcp_addr) = ws_broker().await;
        let mut client = WsClient::open(&broker, "/mqtt").await.expect("upgrade");
        client
            .send(&Packet::Connect(Box::new(connect_packet(
                "ws-client",
                true,
                0,
            ))))
            .await;
        match client.recv().await {
            Some(Packet::ConnAck(connack)) => assert_eq!(connack.reason_code, ReasonCode::Success),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        client
            .send(&subscribe_packet(1, &[("ws/in", QoS::AtLeastOnce)]))
            .await;
        assert!(matches!(client.recv().await, Some(Packet::SubAck(_))));
        let mut tcp = RawClient::connect(tcp_addr, "tcp-client").await;
        tcp.subscribe(1, &[("ws/out", QoS::AtMostOnce)]).await;
        tcp.publish("ws/in", b"to ws", QoS::AtLeastOnce, false, 1)
            .await;
        match client.recv().await {
            Some(Packet::Publish(publish)) => assert_eq!(&publish.payload[..], b"to ws"),
            other => panic!("expected PUBLISH, got {other:?}"),
        }
        client
            .send(&publish_packet(
                "ws/out",
                b"from ws",
                QoS::AtMostOnce,
                false,
                None,
            ))
            .await;
        assert_eq!(&tcp.recv_publish().await.payload[..], b"from ws");
    })
    .await;
}

// [MQTT-6.0.0-2] (v3.1.1, v5.0): a packet split across frames is put
// together; several packets in one frame are each handled.
#[tokio::test]
async fn packets_split_across_frames_and_packed_in_one() {
    timed(async {
        let (broker, _) = ws_broker().await;
        let mut client = WsClient::open(&broker, "/mqtt").await.expect("upgrade");
        let connect = WsClient::bytes(&Packet::Connect(Box::new(connect_packet("split", true, 0))));
        let (first, rest) = connect.split_at(3);
        let (second, third) = rest.split_at(5);
        for part in [first, second, third] {
            client.send_frame(part.to_vec()).await;
        }
        assert!(matches!(client.recv().await, Some(Packet::ConnAck(_))));
        let mut packed = WsClient::bytes(&subscribe_packet(7, &[("a", QoS::AtMostOnce)]));
        packed.extend(WsClient::bytes(&Packet::PingReq));
        client.send_frame(packed).await;
        assert!(matches!(client.recv().await, Some(Packet::SubAck(ack)) if ack.packet_id == id(7)));
        assert!(matches!(client.recv().await, Some(Packet::PingResp)));
    })
    .await;
}

// A frame much larger than the broker's WebSocket read buffer (2 KiB)
// arrives whole: a 100 KB PUBLISH from a WebSocket client reaches a TCP
// subscriber unchanged, and one back to the WebSocket client too.
#[tokio::test]
async fn a_frame_larger_than_the_read_buffer_arrives_whole() {
    timed(async {
        let (broker, tcp_addr) = ws_broker().await;
        let mut client = WsClient::open(&broker, "/mqtt").await.expect("upgrade");
        let connect = Packet::Connect(Box::new(connect_packet("big-frames", true, 0)));
        client.send(&connect).await;
        assert!(matches!(client.recv().await, Some(Packet::ConnAck(_))));
        client
            .send(&subscribe_packet(1, &[("big/in", QoS::AtMostOnce)]))
            .await;
        assert!(matches!(client.recv().await, Some(Packet::SubAck(_))));
        let mut tcp = RawClient::connect(tcp_addr, "big-tcp").await;
        tcp.subscribe(1, &[("big/out", QoS::AtMostOnce)]).await;
        let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let publish = publish_packet("big/out", &payload, QoS::AtMostOnce, false, None);
        client.send(&publish).await;
        assert_eq!(&tcp.recv_publish().await.payload[..], &payload[..]);
        tcp.publish("big/in", &payload, QoS::AtLeastOnce, false, 1)
            .await;
        match client.recv().await {
            Some(Packet::Publish(publish)) => assert_eq!(&publish.payload[..], &payload[..]),
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    })
    .await;
}

// An upgrade on another path is refused; a text frame closes the
// connection: MQTT travels in binary frames [MQTT-6.0.0-1] (v3.1.1, v5.0).
#[tokio::test]
async fn wrong_path_and_text_frames_are_refused() {
    timed(async {
        let (broker, _) = ws_broker().await;
        let refused = WsClient::open(&broker, "/other").await;
        assert!(refused.is_err_and(|error| error.contains("404")));
        let mut client = WsClient::open(&broker, "/mqtt").await.expect("upgrade");
        client
            .ws
            .send(Message::Text("CONNECT".into()))
            .await
            .expect("send");
        assert!(client.recv().await.is_none());
    })
    .await;
}
