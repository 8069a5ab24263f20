//! The admin listener over real sockets with a real HTTP client
//! (reqwest): health, metrics, every API endpoint, the token rule, the
//! bounds, and bad input answered with a JSON 4xx.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use petrel::config::AdminConfig;
use petrel::protocol::{
    ConnectProperties, Packet, ProtocolVersion, PublishProperties, QoS, ReasonCode,
};
use petrel::Config;
use reqwest::StatusCode;
use serde_json::Value;

/// A broker with the admin listener on an ephemeral loopback port.
async fn broker_with(admin: AdminConfig, config: Config) -> (TestBroker, Api) {
    let config = Config {
        admin: AdminConfig {
            bind: Some("127.0.0.1:0".parse().expect("address")),
            ..admin
        },
        ..config
    };
    let broker = TestBroker::with_config(config).await;
    let api = Api::new(broker.broker.admin_addr().expect("the admin listener runs"));
    (broker, api)
}

async fn broker() -> (TestBroker, Api) {
    broker_with(AdminConfig::default(), test_config()).await
}

/// A real HTTP client for one admin listener.
struct Api {
    base: String,
    client: reqwest::Client,
    token: Option<String>,
}

impl Api {
    fn new(addr: SocketAddr) -> Api {
        install_crypto();
        Api {
            base: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
            token: None,
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.client.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str) -> (StatusCode, Value) {
        let response = self
            .request(method, path)
            .send()
            .await
            .expect("admin answers");
        let status = response.status();
        let text = response.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON: {text}"))
        };
        (status, body)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, path).await
    }

    async fn ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        body
    }

    async fn delete(&self, path: &str) -> StatusCode {
        self.send(reqwest::Method::DELETE, path).await.0
    }

    async fn post(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path).await
    }

    async fn metrics(&self) -> String {
        let response = self
            .request(reqwest::Method::GET, "/metrics")
            .send()
            .await
            .expect("scrape");
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .expect("content type")
            .to_owned();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        response.text().await.expect("body")
    }
}

/// reqwest is built without a TLS provider of its own: it uses ring, as
/// the broker does.
fn install_crypto() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
}

/// The value of the sample `name{labels}` (exactly as written) in a scrape.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

fn ids(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|item| item["client_id"].as_str().expect("client_id").to_owned())
        .collect()
}

#[tokio::test]
async fn health_readiness_and_version_answer_in_json() {
    timed(async {
        let (broker, api) = broker().await;
        let health = api.ok("/healthz").await;
        assert_eq!(health["status"], "ok");
        let ready = api.ok("/readyz").await;
        assert_eq!(ready["ready"], true, "{ready}");
        assert_eq!(ready["checks"]["shutting_down"], false);
        assert_eq!(ready["checks"]["store"], "off");
        let version = api.ok("/api/v1/version").await;
        assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));
        assert!(version["uptime_seconds"].is_u64());
        let _client = RawClient::connect(broker.addr, "counted").await;
        let stats = api.ok("/api/v1/stats").await;
        assert_eq!(stats["connections"], 1, "{stats}");
        assert_eq!(stats["clients_connected"], 1);
        assert!(stats["messages_received"].is_u64() && stats["bridges"].is_array());
        let openapi = api.ok("/api/v1/openapi.json").await;
        assert!(openapi["paths"]["/api/v1/clients/{id}"]["delete"].is_object());
    })
    .await;
}

#[tokio::test]
async fn the_scrape_counts_connections_messages_by_qos_and_drops() {
    timed(async {
        let (broker, api) = broker().await;
        let mut subscriber = RawClient::connect(broker.addr, "scraped-sub").await;
        subscriber.subscribe(1, &[("m/#", QoS::AtLeastOnce)]).await;
        let mut publisher = RawClient::connect(broker.addr, "scraped-pub").await;
        publisher
            .publish("m/0", b"12345", QoS::AtMostOnce, false, 0)
            .await;
        publisher
            .publish("m/1", b"123", QoS::AtLeastOnce, false, 1)
            .await;
        publisher
            .publish("m/2", b"1", QoS::ExactlyOnce, false, 2)
            .await;
        for _ in 0..3 {
            let publish = subscriber.recv_publish().await;
            subscriber.answer(&publish).await;
        }
        publisher.ping_barrier().await;
        let scrape = api.metrics().await;
        assert_eq!(sample(&scrape, "petrel_connections"), Some(2.0), "{scrape}");
        assert_eq!(
            sample(&scrape, "petrel_sessions{state=\"online\"}"),
            Some(2.0)
        );
        assert_eq!(sample(&scrape, "petrel_subscriptions"), Some(1.0));
        for (qos, bytes) in [(0, 5.0), (1, 3.0), (2, 1.0)] {
            assert_eq!(
                sample(
                    &scrape,
                    &format!("petrel_messages_received_total{{qos=\"{qos}\"}}")
                ),
                Some(1.0),
                "{scrape}"
            );
            assert_eq!(
                sample(
                    &scrape,
                    &format!("petrel_payload_received_bytes_total{{qos=\"{qos}\"}}")
                ),
                Some(bytes)
            );
        }
        // The subscription grants QoS 1: the QoS 2 message goes out at 1.
        assert_eq!(
            sample(&scrape, "petrel_messages_sent_total{qos=\"0\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&scrape, "petrel_messages_sent_total{qos=\"1\"}"),
            Some(2.0)
        );
        assert!(scrape.contains("# TYPE petrel_delivery_latency_seconds histogram"));
        assert!(scrape.contains("petrel_delivery_latency_seconds_bucket{le=\"+Inf\"}"));
        assert!(scrape.contains("# TYPE petrel_store_commit_duration_seconds histogram"));
        // A malformed packet is a protocol error of its kind.
        let mut bad = RawClient::connect(broker.addr, "malformed").await;
        bad.send_bytes(&[0x30, 0x02, 0x00, 0x05]).await;
        bad.expect_closed().await;
        let scrape = loop {
            let scrape = api.metrics().await;
            if sample(
                &scrape,
                "petrel_protocol_errors_total{kind=\"malformed_packet\"}",
            )
            .is_some()
            {
                break scrape;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(
            sample(
                &scrape,
                "petrel_protocol_errors_total{kind=\"malformed_packet\"}"
            ),
            Some(1.0)
        );
    })
    .await;
}

// A real scrape passes Prometheus's own linter (`promtool check metrics`,
// Debian's prometheus package); CI installs it.
#[tokio::test]
async fn a_real_scrape_passes_promtool() {
    let Ok(promtool) = which("promtool") else {
        eprintln!("skipped: promtool is not installed (apt-get install prometheus)");
        return;
    };
    timed(async {
        let bridge_remote = TestBroker::start().await;
        let config = Config::from_toml(&format!(
            "sys_interval = 0\npersistence = false\n[[bridge]]\nname = \"up-link\"\n\
             addresses = [\"{}\"]\n[[bridge.topic]]\nfilter = \"b/#\"\ndirection = \"out\"\n",
            bridge_remote.addr
        ))
        .expect("config");
        let (broker, api) = broker_with(AdminConfig::default(), config).await;
        let mut client = RawClient::connect(broker.addr, "lint").await;
        client.publish("b/1", b"x", QoS::AtLeastOnce, true, 1).await;
        let scrape = api.metrics().await;
        assert!(
            scrape.contains("petrel_bridge_up{bridge=\"up-link\"}"),
            "{scrape}"
        );
        let mut child = std::process::Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool runs");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(scrape.as_bytes())
            .expect("write");
        let output = child.wait_with_output().expect("promtool ends");
        assert!(
            output.status.success(),
            "promtool: {}{}\n{scrape}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    })
    .await;
}

fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .ok_or(())
}

#[tokio::test]
async fn clients_are_listed_filtered_paged_and_inspected() {
    timed(async {
        let (broker, api) = broker().await;
        let mut first = RawClient::connect_v5(broker.addr, "kitchen-1").await;
        first
            .subscribe(1, &[("home/kitchen/#", QoS::AtLeastOnce)])
            .await;
        let mut with_user = connect_packet("kitchen-2", true, 30);
        with_user.username = Some("alice".to_owned());
        let (_second, _) = RawClient::connect_with(broker.addr, with_user).await;
        let _third = RawClient::connect(broker.addr, "garage").await;
        let all = api.ok("/api/v1/clients").await;
        assert_eq!(ids(&all), ["garage", "kitchen-1", "kitchen-2"]);
        assert_eq!(all["meta"]["count"], 3);
        let kitchen = api.ok("/api/v1/clients?id_prefix=kitchen").await;
        assert_eq!(ids(&kitchen), ["kitchen-1", "kitchen-2"]);
        let alice = api.ok("/api/v1/clients?user=alice").await;
        assert_eq!(ids(&alice), ["kitchen-2"]);
        assert_eq!(alice["data"][0]["protocol"], "3.1.1");
        assert_eq!(alice["data"][0]["keep_alive"], 30);
        let local = api.ok("/api/v1/clients?address=127.0.0.1").await;
        assert_eq!(local["meta"]["count"], 3);
        let nowhere = api.ok("/api/v1/clients?address=10.").await;
        assert_eq!(nowhere["meta"]["count"], 0);
        let page = api.ok("/api/v1/clients?limit=1&page=2").await;
        assert_eq!(ids(&page), ["kitchen-1"]);
        assert_eq!(page["meta"]["count"], 3);
        let one = api.ok("/api/v1/clients/kitchen-1").await;
        assert_eq!(one["connected"], true);
        assert_eq!(one["client"]["protocol"], "5.0");
        assert!(one["client"]["peer"]
            .as_str()
            .expect("peer")
            .starts_with("127.0.0.1:"));
        assert!(one["client"]["connected_at"].as_u64().expect("since") > 1_700_000_000);
        let report = &one["report"];
        assert_eq!(report["subscriptions"][0]["filter"], "home/kitchen/#");
        assert_eq!(report["subscriptions"][0]["qos"], 1);
        assert_eq!(report["inflight"], 0);
        assert_eq!(report["queued"], 0);
        // A message the client does not acknowledge is in flight.
        let mut publisher = RawClient::connect(broker.addr, "feeder").await;
        publisher
            .publish("home/kitchen/t", b"21", QoS::AtLeastOnce, false, 1)
            .await;
        let _unanswered = first.recv_publish().await;
        let one = api.ok("/api/v1/clients/kitchen-1").await;
        assert_eq!(one["report"]["inflight"], 1, "{one}");
        // Bad input: a 4xx in JSON, never a panic.
        for path in [
            "/api/v1/clients?limit=0",
            "/api/v1/clients?limit=1001",
            "/api/v1/clients?page=zero",
            "/api/v1/clients?pgae=1",
        ] {
            let (status, body) = api.get(path).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
            assert!(body["error"].is_string(), "{path}: {body}");
        }
        let (status, body) = api.get("/api/v1/clients/nobody").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body["error"].is_string());
        let (status, _) = api.get("/api/v1/nothing-here").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    })
    .await;
}

// [MQTT-3.14.0-1] (v5.0) DISCONNECT from the server: an administrator's
// kick sends 0x98 Administrative action, and the will goes out (the
// client did not end the connection with 0x00) [MQTT-3.1.2-10] (v5.0).
#[tokio::test]
async fn kicking_a_client_sends_0x98_and_keeps_its_session() {
    timed(async {
        let (broker, api) = broker().await;
        let mut watcher = RawClient::connect(broker.addr, "watcher").await;
        watcher.subscribe(1, &[("wills/#", QoS::AtMostOnce)]).await;
        let mut connect = connect_v5("kicked", false, 0);
        connect.properties.session_expiry_interval = Some(300);
        connect.will = Some(will("wills/kicked", b"gone", QoS::AtMostOnce, false));
        let (mut kicked, _) = RawClient::connect_with(broker.addr, connect).await;
        kicked.subscribe(1, &[("keep/#", QoS::AtLeastOnce)]).await;
        assert_eq!(
            api.delete("/api/v1/clients/kicked").await,
            StatusCode::NO_CONTENT
        );
        let disconnect = kicked
            .expect_disconnect(ReasonCode::AdministrativeAction)
            .await;
        assert_eq!(disconnect.reason_code as u8, 0x98);
        let will = watcher.recv_publish().await;
        assert_eq!(&will.payload[..], b"gone");
        // The session stays, offline, with its subscription.
        let session = loop {
            let (_, session) = api.get("/api/v1/sessions/kicked").await;
            if session["connected"] == false {
                break session;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(session["report"]["subscriptions"][0]["filter"], "keep/#");
        // A 3.1.1 client has no DISCONNECT to read: its socket closes.
        let mut old = RawClient::connect(broker.addr, "old").await;
        assert_eq!(
            api.delete("/api/v1/clients/old").await,
            StatusCode::NO_CONTENT
        );
        old.expect_closed().await;
        assert_eq!(
            api.delete("/api/v1/clients/old").await,
            StatusCode::NOT_FOUND
        );
    })
    .await;
}

#[tokio::test]
async fn offline_sessions_are_listed_with_their_queue_and_deleted() {
    timed(async {
        let (broker, api) = broker().await;
        let mut connect = connect_v5("sleeper", true, 0);
        connect.properties = ConnectProperties {
            session_expiry_interval: Some(3600),
            ..ConnectProperties::default()
        };
        let (mut sleeper, _) = RawClient::connect_with(broker.addr, connect.clone()).await;
        sleeper.subscribe(1, &[("mail/#", QoS::AtLeastOnce)]).await;
        sleeper.disconnect().await;
        let mut publisher = RawClient::connect(broker.addr, "postman").await;
        let offline = loop {
            let list = api.ok("/api/v1/sessions?connected=false").await;
            if list["meta"]["count"] == 1 {
                break list;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(ids(&offline), ["sleeper"]);
        for n in 1..=3 {
            publisher
                .publish("mail/box", b"letter", QoS::AtLeastOnce, false, n)
                .await;
        }
        let session = api.ok("/api/v1/sessions/sleeper").await;
        assert_eq!(session["connected"], false);
        assert_eq!(session["report"]["queued"], 3, "{session}");
        assert!(session["expires_in"].as_u64().expect("expires_in") > 3500);
        let online = api.ok("/api/v1/sessions?connected=true").await;
        assert_eq!(ids(&online), ["postman"]);
        let (status, _) = api.get("/api/v1/sessions?connected=maybe").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        // Deleted: the next connection finds no session.
        assert_eq!(
            api.delete("/api/v1/sessions/sleeper").await,
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            api.delete("/api/v1/sessions/sleeper").await,
            StatusCode::NOT_FOUND
        );
        connect.clean_start = false;
        let (_back, connack) = RawClient::connect_with(broker.addr, connect.clone()).await;
        assert!(!connack.session_present);
        // A connected session is disconnected and ends with it.
        let mut held = RawClient::connect_with(broker.addr, connect.clone())
            .await
            .0;
        assert_eq!(
            api.delete("/api/v1/sessions/sleeper").await,
            StatusCode::ACCEPTED
        );
        held.expect_disconnect(ReasonCode::AdministrativeAction)
            .await;
        let (_again, connack) = RawClient::connect_with(broker.addr, connect).await;
        assert!(
            !connack.session_present,
            "the session ended with its connection"
        );
    })
    .await;
}

#[tokio::test]
async fn subscriptions_by_client_by_topic_and_all() {
    timed(async {
        let (broker, api) = broker().await;
        let mut a = RawClient::connect(broker.addr, "a").await;
        a.subscribe(
            1,
            &[("s/+/t", QoS::AtLeastOnce), ("other", QoS::AtMostOnce)],
        )
        .await;
        let mut b = RawClient::connect(broker.addr, "b").await;
        b.subscribe(1, &[("$share/workers/s/#", QoS::ExactlyOnce)])
            .await;
        let of_a = api.ok("/api/v1/subscriptions?client=a").await;
        let filters: Vec<&str> = of_a["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|s| s["filter"].as_str().expect("filter"))
            .collect();
        assert_eq!(filters, ["s/+/t", "other"]);
        let reach = api.ok("/api/v1/subscriptions?topic=s/x/t").await;
        let mut reached: Vec<(String, Value)> = reach["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|s| {
                (
                    s["client_id"].as_str().expect("id").to_owned(),
                    s["group"].clone(),
                )
            })
            .collect();
        reached.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(
            reached,
            [
                ("a".to_owned(), Value::Null),
                ("b".to_owned(), Value::from("workers"))
            ]
        );
        let all = api.ok("/api/v1/subscriptions").await;
        assert_eq!(all["meta"]["count"], 3, "{all}");
        let filters: Vec<&str> = all["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|s| s["filter"].as_str().expect("filter"))
            .collect();
        assert!(
            filters.contains(&"s/#") && filters.contains(&"s/+/t"),
            "{all}"
        );
        for path in [
            "/api/v1/subscriptions?topic=s/%2B",
            "/api/v1/subscriptions?topic=x&client=a",
        ] {
            assert_eq!(api.get(path).await.0, StatusCode::BAD_REQUEST, "{path}");
        }
        assert_eq!(
            api.get("/api/v1/subscriptions?client=nobody").await.0,
            StatusCode::NOT_FOUND
        );
    })
    .await;
}

#[tokio::test]
async fn retained_messages_are_listed_read_and_deleted() {
    timed(async {
        let (broker, api) = broker().await;
        let mut publisher = RawClient::connect_v5(broker.addr, "sensor").await;
        for (topic, payload) in [("r/a", &b"one"[..]), ("r/b/c", b"two"), ("q", b"\xff\xfe")] {
            let properties = PublishProperties {
                content_type: Some("text/plain".to_owned()),
                ..PublishProperties::default()
            };
            let Packet::Publish(mut publish) =
                publish_with(topic, payload, QoS::AtLeastOnce, Some(1), properties)
            else {
                unreachable!()
            };
            publish.retain = true;
            publisher.send(&Packet::Publish(publish)).await;
            assert!(matches!(publisher.recv().await, Packet::PubAck(_)));
        }
        let list = api.ok("/api/v1/retained?filter=r/%23").await;
        let topics: Vec<&str> = list["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|m| m["topic"].as_str().expect("topic"))
            .collect();
        assert_eq!(topics, ["r/a", "r/b/c"]);
        assert_eq!(list["data"][1]["payload_bytes"], 3);
        assert_eq!(api.ok("/api/v1/retained").await["meta"]["count"], 3);
        let one = api.ok("/api/v1/retained/r/b/c").await;
        assert_eq!(one["payload"], "two");
        assert_eq!(one["payload_base64"], "dHdv");
        assert_eq!(one["content_type"], "text/plain");
        let binary = api.ok("/api/v1/retained/q").await;
        assert_eq!(binary["payload"], Value::Null);
        assert_eq!(binary["payload_base64"], "//4=");
        assert_eq!(
            api.delete("/api/v1/retained/r/b/c").await,
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            api.delete("/api/v1/retained/r/b/c").await,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            api.get("/api/v1/retained/r/b/c").await.0,
            StatusCode::NOT_FOUND
        );
        // Gone for a new subscriber too; the other one stays.
        let mut late = RawClient::connect(broker.addr, "late").await;
        late.subscribe(1, &[("r/#", QoS::AtMostOnce)]).await;
        let publish = late.recv_publish().await;
        assert_eq!(publish.topic.as_str(), "r/a");
        assert!(late.ping_barrier().await.is_empty());
        assert_eq!(
            api.get("/api/v1/retained?filter=r/%23/x").await.0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            api.get("/api/v1/retained/a/%2B").await.0,
            StatusCode::BAD_REQUEST
        );
    })
    .await;
}

#[tokio::test]
async fn bridges_show_their_state_and_reconnect_when_asked() {
    timed(async {
        let remote = TestBroker::start().await;
        let config = Config::from_toml(&format!(
            "sys_interval = 0\npersistence = false\n[[bridge]]\nname = \"uplink\"\n\
             addresses = [\"{}\"]\nreconnect_min_ms = 50\nreconnect_max_ms = 200\n\
             [[bridge.topic]]\nfilter = \"out/#\"\ndirection = \"out\"\nqos = 1\n",
            remote.addr
        ))
        .expect("config");
        let (broker, api) = broker_with(AdminConfig::default(), config).await;
        let bridge = loop {
            let bridge = api.ok("/api/v1/bridges/uplink").await;
            if bridge["state"] == "up" {
                break bridge;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(bridge["address"], remote.addr.to_string());
        assert_eq!(bridge["connects"], 1);
        let mut far = RawClient::connect(remote.addr, "far").await;
        far.subscribe(1, &[("out/#", QoS::AtLeastOnce)]).await;
        let mut near = RawClient::connect(broker.addr, "near").await;
        near.publish("out/1", b"x", QoS::AtLeastOnce, false, 1)
            .await;
        let publish = far.recv_publish().await;
        far.answer(&publish).await;
        let list = api.ok("/api/v1/bridges").await;
        assert_eq!(list["data"][0]["name"], "uplink");
        assert_eq!(list["data"][0]["forwarded"], 1);
        let (status, _) = api.post("/api/v1/bridges/uplink/reconnect").await;
        assert_eq!(status, StatusCode::ACCEPTED);
        loop {
            let bridge = api.ok("/api/v1/bridges/uplink").await;
            if bridge["connects"] == 2 && bridge["state"] == "up" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let scrape = api.metrics().await;
        assert_eq!(
            sample(&scrape, "petrel_bridge_up{bridge=\"uplink\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &scrape,
                "petrel_bridge_forwarded_messages_total{bridge=\"uplink\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&scrape, "petrel_bridge_reconnects_total{bridge=\"uplink\"}"),
            Some(1.0)
        );
        assert_eq!(
            api.get("/api/v1/bridges/nope").await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            api.post("/api/v1/bridges/nope/reconnect").await.0,
            StatusCode::NOT_FOUND
        );
        // Bridges are not clients of the clients API.
        assert_eq!(
            api.delete("/api/v1/clients/%24bridge%2Fuplink").await,
            StatusCode::NOT_FOUND
        );
    })
    .await;
}

const TOKEN: &str = "s3cret-admin-token-0123456789";

fn token_file(dir: &DataDir) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.path()).expect("dir");
    let path = dir.path().join("admin.token");
    std::fs::write(&path, format!("{TOKEN}\n")).expect("write token");
    path
}

#[tokio::test]
async fn a_token_guards_everything_but_the_probes_and_the_page() {
    timed(async {
        let dir = DataDir::new("admin-token");
        let admin = AdminConfig {
            token_file: Some(token_file(&dir)),
            ..AdminConfig::default()
        };
        let (broker, mut api) = broker_with(admin, test_config()).await;
        let _client = RawClient::connect(broker.addr, "guarded").await;
        for path in ["/metrics", "/api/v1/clients", "/api/v1/version"] {
            let response = api
                .request(reqwest::Method::GET, path)
                .send()
                .await
                .expect("answer");
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            let body: Value = response.json().await.expect("JSON");
            assert!(body["error"].is_string());
        }
        assert_eq!(
            api.delete("/api/v1/clients/guarded").await,
            StatusCode::UNAUTHORIZED
        );
        for open in [
            "/healthz",
            "/readyz",
            "/",
            "/dashboard.js",
            "/dashboard.css",
        ] {
            let response = api
                .request(reqwest::Method::GET, open)
                .send()
                .await
                .expect("answer");
            assert_eq!(response.status(), StatusCode::OK, "{open}");
        }
        api.token = Some("s3cret-admin-token-wrong-guess".to_owned());
        assert_eq!(api.get("/api/v1/clients").await.0, StatusCode::UNAUTHORIZED);
        api.token = Some(TOKEN.to_owned());
        assert_eq!(ids(&api.ok("/api/v1/clients").await), ["guarded"]);
        assert!(api.metrics().await.contains("petrel_connections 1"));
        assert_eq!(
            api.delete("/api/v1/clients/guarded").await,
            StatusCode::NO_CONTENT
        );
    })
    .await;
}

#[tokio::test]
async fn public_read_opens_reads_but_never_actions() {
    timed(async {
        let dir = DataDir::new("admin-public");
        let admin = AdminConfig {
            token_file: Some(token_file(&dir)),
            public_read: true,
            ..AdminConfig::default()
        };
        let (broker, mut api) = broker_with(admin, test_config()).await;
        let _client = RawClient::connect(broker.addr, "reader").await;
        assert_eq!(ids(&api.ok("/api/v1/clients").await), ["reader"]);
        api.metrics().await;
        assert_eq!(
            api.delete("/api/v1/clients/reader").await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(api.post("/api/v1/reload").await.0, StatusCode::UNAUTHORIZED);
        api.token = Some(TOKEN.to_owned());
        assert_eq!(
            api.delete("/api/v1/clients/reader").await,
            StatusCode::NO_CONTENT
        );
    })
    .await;
}

#[test]
fn off_loopback_the_admin_listener_needs_a_token_or_client_certificates() {
    let error = Config::from_toml("[admin]\nbind = \"0.0.0.0:9883\"\n").expect_err("refused");
    assert_eq!(error.key.as_deref(), Some("admin.bind"), "{error}");
    assert!(error.to_string().contains("token_file"), "{error}");
    Config::from_toml("[admin]\nbind = \"0.0.0.0:9883\"\ntoken_file = \"/t\"\n")
        .expect("with a token");
    Config::from_toml(
        "[admin]\nbind = \"[::]:9883\"\n[admin.tls]\ncert = \"c\"\nkey = \"k\"\nca = \"ca\"\n\
         require_certificate = true\n",
    )
    .expect("with client certificates");
    Config::from_toml("[admin]\nbind = \"127.0.0.1:9883\"\n").expect("loopback");
    let error = Config::from_toml("[admin]\nmax_connections = 0\n").expect_err("refused");
    assert_eq!(error.key.as_deref(), Some("admin.max_connections"));
}

#[tokio::test]
async fn a_client_certificate_authenticates_over_https() {
    timed(async {
        let pki = pki::Pki::new("admin-mtls");
        let admin = AdminConfig {
            tls: Some(petrel::config::TlsConfig {
                use_identity_as_username: false,
                ..pki.server_tls(true)
            }),
            ..AdminConfig::default()
        };
        let (broker, _) = broker_with(admin, test_config()).await;
        let addr = broker.broker.admin_addr().expect("admin");
        install_crypto();
        let https = |with_certificate: bool| {
            reqwest::Client::builder()
                .use_preconfigured_tls(pki.client_config(with_certificate))
                .resolve("localhost", addr)
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client")
        };
        let url = format!("https://localhost:{}/api/v1/clients", addr.port());
        let response = https(true).get(&url).send().await.expect("answer");
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["meta"]["count"], 0);
        // Without a certificate the TLS handshake itself is refused.
        let refused = https(false).get(&url).send().await;
        assert!(refused.is_err(), "{refused:?}");
    })
    .await;
}

#[tokio::test]
async fn the_admin_listener_is_bounded() {
    timed(async {
        let admin = AdminConfig {
            max_connections: 2,
            max_request_bytes: 8192,
            ..AdminConfig::default()
        };
        let (broker, api) = broker_with(admin, test_config()).await;
        let addr = broker.broker.admin_addr().expect("admin");
        let _one = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let _two = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut three = tokio::net::TcpStream::connect(addr).await.expect("connect");
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(RECV_TIMEOUT, three.read(&mut buf))
            .await
            .expect("closed in time");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert_eq!(broker.broker.metrics().admin_connections_refused.get(), 1);
        drop((_one, _two));
        // A request larger than max_request_bytes is refused with a 4xx.
        let huge = "x".repeat(64 * 1024);
        let response = loop {
            // The two idle connections go as the broker sees them close.
            match api
                .request(reqwest::Method::GET, "/healthz")
                .header("x-padding", &huge)
                .send()
                .await
            {
                Ok(response) => break response,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        assert!(response.status().is_client_error(), "{}", response.status());
        assert_eq!(api.ok("/healthz").await["status"], "ok");
    })
    .await;
}

#[tokio::test]
async fn a_reload_needs_someone_to_carry_it_out() {
    timed(async {
        let (_broker, api) = broker().await;
        let (status, body) = api.post("/api/v1/reload").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body["error"].is_string());
    })
    .await;
}

#[tokio::test]
async fn the_petrel_command_reloads_when_the_api_asks() {
    timed(async {
        let dir = DataDir::new("admin-reload");
        std::fs::create_dir_all(dir.path()).expect("dir");
        let file = dir.path().join("petrel.toml");
        let write = |max_connections: usize| {
            std::fs::write(
                &file,
                format!(
                    "persistence = false\nmax_connections = {max_connections}\n\
                     [[listener]]\nbind = \"127.0.0.1:0\"\n[admin]\nbind = \"127.0.0.1:0\"\n"
                ),
            )
            .expect("write config");
        };
        write(100);
        let mut child = std::process::Command::new(petrel_bin())
            .arg("--config")
            .arg(&file)
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("petrel starts");
        let stdout = child.stdout.take().expect("stdout");
        // Killed if the test fails before it stops the broker itself.
        let mut child = KillOnDrop(Some(child));
        let admin_port = tokio::task::spawn_blocking(move || {
            use std::io::BufRead;
            let mut reader = std::io::BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).expect("read") == 0 {
                    panic!("petrel exited before its admin listener started");
                }
                if line.contains("admin listener started") {
                    let address = line.split("address=").nth(1).expect("address");
                    let address = address.split_whitespace().next().expect("address");
                    let address: SocketAddr = address.parse().expect("address");
                    // Keep draining so the broker never blocks on its log.
                    std::thread::spawn(move || for _ in reader.lines() {});
                    return address.port();
                }
            }
        })
        .await
        .expect("log read");
        let api = Api::new(SocketAddr::from(([127, 0, 0, 1], admin_port)));
        write(200);
        let (status, body) = api.post("/api/v1/reload").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["reloaded"], true);
        std::fs::write(&file, "max_connections = \"many\"\n").expect("write");
        let (status, body) = api.post("/api/v1/reload").await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["reloaded"], false);
        assert!(body["messages"][0]
            .as_str()
            .expect("message")
            .contains("max_connections"));
        let child = child.0.take().expect("the broker");
        terminate(&child);
        let status = exit_of(child).await.expect("petrel exits");
        assert!(status.success(), "{status:?}");
    })
    .await;
}

/// A child process killed when dropped, unless taken out.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Asks `child` to stop (SIGTERM), as an operator would.
fn terminate(child: &std::process::Child) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

// The MQTT 5 protocol version of what the API says matches the client's.
#[tokio::test]
async fn the_protocol_is_reported_as_connected() {
    timed(async {
        let (broker, api) = broker().await;
        let mut connect = connect_packet("old-timer", true, 0);
        connect.protocol = ProtocolVersion::V3_1;
        let (_client, _) = RawClient::connect_with(broker.addr, connect).await;
        let one = api.ok("/api/v1/clients/old-timer").await;
        assert_eq!(one["client"]["protocol"], "3.1");
    })
    .await;
}

// `petrel healthcheck` (the container's HEALTHCHECK) asks /readyz.
#[tokio::test]
async fn the_healthcheck_command_asks_readyz() {
    timed(async {
        let (broker, _api) = broker().await;
        let admin = broker.broker.admin_addr().expect("admin");
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("address")
        };
        let run = |url: String| {
            tokio::task::spawn_blocking(move || {
                std::process::Command::new(petrel_bin())
                    .args(["healthcheck", "--url", &url])
                    .output()
                    .expect("petrel runs")
            })
        };
        let ready = run(format!("http://{admin}/readyz")).await.expect("ran");
        assert!(ready.status.success(), "{ready:?}");
        assert!(String::from_utf8_lossy(&ready.stdout).contains("\"ready\":true"));
        let missing = run(format!("http://{admin}/nothing")).await.expect("ran");
        assert!(!missing.status.success());
        let down = run(format!("http://{closed}/readyz")).await.expect("ran");
        assert!(!down.status.success());
        assert!(String::from_utf8_lossy(&down.stderr).contains("petrel healthcheck"));
    })
    .await;
}

// Open on loopback is open to local programs, not to web pages: a Host
// that is not loopback (DNS rebinding) and an action from another site's
// page get 403.
#[tokio::test]
async fn the_open_listener_refuses_cross_site_requests() {
    timed(async {
        let (_broker, api) = broker().await;
        let response = api
            .request(reqwest::Method::GET, "/api/v1/clients")
            .header("host", "evil.example:9883")
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let response = api
            .request(reqwest::Method::POST, "/api/v1/reload")
            .header("origin", "http://evil.example")
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let response = api
            .request(reqwest::Method::DELETE, "/api/v1/clients/x")
            .header("sec-fetch-site", "cross-site")
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        // The dashboard's own requests are same-origin.
        let own = format!("http://{}", api.base.trim_start_matches("http://"));
        let response = api
            .request(reqwest::Method::DELETE, "/api/v1/clients/x")
            .header("origin", own)
            .header("sec-fetch-site", "same-origin")
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    })
    .await;
}

// A client that sends requests and never reads the answers is closed
// once nothing moves for request_timeout_ms: it cannot hold a slot.
#[tokio::test]
async fn a_connection_that_reads_nothing_is_closed() {
    timed(async {
        let admin = AdminConfig {
            request_timeout_ms: 300,
            max_connections: 1,
            ..AdminConfig::default()
        };
        let (broker, api) = broker_with(admin, test_config()).await;
        let addr = broker.broker.admin_addr().expect("admin");
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET /dashboard.js HTTP/1.1\r\nHost: {addr}\r\n\r\n").repeat(64);
        use tokio::io::AsyncWriteExt;
        let writing = async {
            // Ends when the broker closes the connection.
            while stream.write_all(request.as_bytes()).await.is_ok() {}
        };
        tokio::time::timeout(Duration::from_secs(15), writing)
            .await
            .expect("the stalled connection is closed");
        // Its slot is free again.
        let health = loop {
            match api.client.get(format!("{}/healthz", api.base)).send().await {
                Ok(response) => break response,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        assert_eq!(health.status(), StatusCode::OK);
    })
    .await;
}
