//! MQTT 5 with a real client library (rumqttc's v5 client): properties,
//! subscription identifiers, session expiry up to "never", shared
//! subscriptions, and a will with a delay.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use rumqttc::v5::mqttbytes::v5::{
    ConnectProperties, LastWill, LastWillProperties, Packet, PublishProperties, SubscribeProperties,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};

/// A rumqttc v5 client whose incoming packets arrive on a channel; its
/// event loop runs in a task until the client is dropped.
struct V5Client {
    client: AsyncClient,
    packets: tokio::sync::mpsc::UnboundedReceiver<Packet>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for V5Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl V5Client {
    async fn connect(options: MqttOptions) -> (V5Client, rumqttc::v5::mqttbytes::v5::ConnAck) {
        let (client, mut event_loop) = AsyncClient::new(options, 64);
        let (sender, packets) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok(event) = event_loop.poll().await {
                if let Event::Incoming(packet) = event {
                    if sender.send(packet).is_err() {
                        return;
                    }
                }
            }
        });
        let mut client = V5Client {
            client,
            packets,
            task,
        };
        match client.next().await {
            Packet::ConnAck(connack) => (client, connack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    async fn next(&mut self) -> Packet {
        tokio::time::timeout(RECV_TIMEOUT, self.packets.recv())
            .await
            .expect("timed out waiting for a packet")
            .expect("event loop ended")
    }

    async fn next_publish(&mut self) -> rumqttc::v5::mqttbytes::v5::Publish {
        loop {
            match self.next().await {
                Packet::Publish(publish) => return publish,
                Packet::PubAck(_) | Packet::SubAck(_) | Packet::PingResp(_) => {}
                other => panic!("expected PUBLISH, got {other:?}"),
            }
        }
    }

    async fn subscribe(&mut self, filter: &str, qos: QoS, id: Option<usize>) {
        let properties = SubscribeProperties {
            id,
            user_properties: Vec::new(),
        };
        self.client
            .subscribe_with_properties(filter, qos, properties)
            .await
            .expect("subscribe queued");
        loop {
            if let Packet::SubAck(suback) = self.next().await {
                assert!(
                    matches!(
                        suback.return_codes[0],
                        rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(_)
                    ),
                    "{suback:?}"
                );
                return;
            }
        }
    }
}

fn options(broker: &TestBroker, client_id: &str) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, broker.addr.ip().to_string(), broker.addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options
}

// [MQTT-3.3.2-17] [MQTT-3.3.2-18] [MQTT-3.3.4-3] (v5.0), with rumqttc's v5
// client: User Properties, Content Type, Response Topic and Correlation
// Data arrive as sent, with the subscription's identifier.
#[tokio::test]
async fn rumqttc_v5_properties_and_subscription_identifier() {
    timed(async {
        let broker = TestBroker::start().await;
        let (mut subscriber, connack) = V5Client::connect(options(&broker, "rv5-sub")).await;
        let properties = connack.properties.expect("CONNACK properties");
        assert_eq!(properties.shared_subscription_available, Some(1));
        subscriber
            .subscribe("rv5/#", QoS::AtLeastOnce, Some(42))
            .await;
        let (publisher, _) = V5Client::connect(options(&broker, "rv5-pub")).await;
        let sent = PublishProperties {
            content_type: Some("text/plain".into()),
            response_topic: Some("rv5/replies".into()),
            correlation_data: Some(Bytes::from_static(b"req-1")),
            user_properties: vec![("k2".into(), "v2".into()), ("k1".into(), "v1".into())],
            ..PublishProperties::default()
        };
        publisher
            .client
            .publish_with_properties("rv5/data", QoS::AtLeastOnce, false, "hi", sent.clone())
            .await
            .expect("publish queued");
        let publish = subscriber.next_publish().await;
        assert_eq!(&publish.topic[..], b"rv5/data");
        assert_eq!(&publish.payload[..], b"hi");
        let received = publish.properties.expect("properties");
        assert_eq!(received.user_properties, sent.user_properties);
        assert_eq!(received.content_type, sent.content_type);
        assert_eq!(received.response_topic, sent.response_topic);
        assert_eq!(received.correlation_data, sent.correlation_data);
        assert_eq!(received.subscription_identifiers, vec![42]);
    })
    .await;
}

// 3.1.2.11.2 (v5.0): a Session Expiry Interval of 0xFFFFFFFF never
// expires; the session is resumed with what was queued meanwhile.
#[tokio::test]
async fn rumqttc_v5_session_that_never_expires() {
    timed(async {
        let broker = TestBroker::start().await;
        let mut keeper_options = options(&broker, "rv5-keeper");
        keeper_options.set_clean_start(false);
        keeper_options.set_connect_properties(ConnectProperties {
            session_expiry_interval: Some(u32::MAX),
            ..ConnectProperties::new()
        });
        let (mut keeper, connack) = V5Client::connect(keeper_options.clone()).await;
        assert!(!connack.session_present);
        keeper.subscribe("rv5/kept", QoS::AtLeastOnce, None).await;
        keeper.client.disconnect().await.expect("disconnect queued");
        let metrics = broker.broker.metrics();
        eventually("the session parked", || {
            metrics.clients_disconnected.get() == 1
        })
        .await;
        drop(keeper);
        let (publisher, _) = V5Client::connect(options(&broker, "rv5-pub")).await;
        publisher
            .client
            .publish("rv5/kept", QoS::AtLeastOnce, false, "queued")
            .await
            .expect("publish queued");
        eventually("the message queued", || metrics.received.messages() == 1).await;
        let (mut keeper, connack) = V5Client::connect(keeper_options).await;
        assert!(connack.session_present);
        assert_eq!(&keeper.next_publish().await.payload[..], b"queued");
    })
    .await;
}

// 4.8.2 (v5.0), with rumqttc's v5 client: two members of a shared group
// share the messages between them.
#[tokio::test]
async fn rumqttc_v5_shared_subscription() {
    timed(async {
        let broker = TestBroker::start().await;
        let (mut first, _) = V5Client::connect(options(&broker, "rv5-m1")).await;
        first
            .subscribe("$share/grp/rv5/jobs", QoS::AtLeastOnce, None)
            .await;
        let (mut second, _) = V5Client::connect(options(&broker, "rv5-m2")).await;
        second
            .subscribe("$share/grp/rv5/jobs", QoS::AtLeastOnce, None)
            .await;
        let (publisher, _) = V5Client::connect(options(&broker, "rv5-pub")).await;
        for n in 0..4 {
            publisher
                .client
                .publish("rv5/jobs", QoS::AtLeastOnce, false, vec![n])
                .await
                .expect("publish queued");
        }
        let mut payloads = Vec::new();
        for _ in 0..2 {
            payloads.push(first.next_publish().await.payload[0]);
            payloads.push(second.next_publish().await.payload[0]);
        }
        payloads.sort();
        assert_eq!(payloads, vec![0, 1, 2, 3]);
    })
    .await;
}

// [MQTT-3.1.2-8] (v5.0), with rumqttc's v5 client: a will with a delay of
// one second arrives after the client vanishes (its session outlives it).
#[tokio::test]
async fn rumqttc_v5_delayed_will() {
    timed(async {
        let broker = TestBroker::start().await;
        let (mut watcher, _) = V5Client::connect(options(&broker, "rv5-watch")).await;
        watcher.subscribe("rv5/wills", QoS::AtLeastOnce, None).await;
        let mut mortal = options(&broker, "rv5-mortal");
        mortal.set_connect_properties(ConnectProperties {
            session_expiry_interval: Some(60),
            ..ConnectProperties::new()
        });
        let will_properties = LastWillProperties {
            delay_interval: Some(1),
            payload_format_indicator: None,
            message_expiry_interval: None,
            content_type: None,
            response_topic: None,
            correlation_data: None,
            user_properties: Vec::new(),
        };
        mortal.set_last_will(LastWill::new(
            "rv5/wills",
            "gone",
            QoS::AtLeastOnce,
            false,
            Some(will_properties),
        ));
        let (client, _) = V5Client::connect(mortal).await;
        drop(client);
        let publish = watcher.next_publish().await;
        assert_eq!(&publish.payload[..], b"gone");
        assert_eq!(broker.broker.metrics().wills_published.get(), 1);
    })
    .await;
}
