//! The crash test: the `petrel` binary is killed with SIGKILL while a
//! publisher sends QoS 1 and QoS 2 messages as fast as it can to a topic
//! whose only subscriber is an offline persistent session; restarted on
//! the same `data_dir`, it must deliver to that subscriber every message
//! whose PUBACK or PUBREC the publisher received (QoS 1 maybe more than
//! once, QoS 2 exactly once). `CRASH_ROUNDS` sets how many rounds run
//! (default 3); `PETREL_BIN` runs another build of the binary (the release
//! one, say) instead of this test's.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::BufReader;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::*;
use petrel::protocol::{self, Ack, Packet, ProtocolVersion, Publish, QoS, ReasonCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Messages a publisher may have unacknowledged.
const WINDOW: usize = 256;
/// Most messages one round publishes.
const MOST: u32 = 60_000;

fn binary() -> PathBuf {
    std::env::var_os("PETREL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_petrel")))
}

struct Broker {
    child: Child,
    addr: SocketAddr,
    drain: Option<std::thread::JoinHandle<()>>,
}

impl Broker {
    fn start(config: &Path) -> Broker {
        let mut child = Command::new(binary())
            .arg("-c")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start petrel");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        let port = listening_port(&mut reader);
        // Keep reading the log so the broker never blocks on a full pipe.
        let drain = std::thread::spawn(move || for _ in std::io::BufRead::lines(reader) {});
        Broker {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            drain: Some(drain),
        }
    }

    /// SIGKILL: no shutdown code runs.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(drain) = self.drain.take() {
            let _ = drain.join();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Even messages go at QoS 1, odd ones at QoS 2.
fn qos_of(index: u32) -> QoS {
    if index.is_multiple_of(2) {
        QoS::AtLeastOnce
    } else {
        QoS::ExactlyOnce
    }
}

fn publish(index: u32, packet_id: u16) -> Packet {
    let qos = qos_of(index);
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic(if qos == QoS::AtLeastOnce {
            "crash/1"
        } else {
            "crash/2"
        }),
        packet_id: Some(id(packet_id)),
        payload: Bytes::from(index.to_be_bytes().to_vec()),
        properties: Default::default(),
    })
}

/// Publishes as fast as the window allows until `kill_after` messages are
/// acknowledged, kills the broker, and returns every message index whose
/// PUBACK or PUBREC arrived (including those read after the kill).
async fn publish_until_killed(broker: &mut Broker, kill_after: usize) -> HashSet<u32> {
    let (mut publisher, connack) =
        RawClient::connect_with(broker.addr, connect_packet("crash-publisher", true, 0)).await;
    assert_eq!(connack.reason_code, ReasonCode::Success);
    let stream: &mut TcpStream = &mut publisher.stream;
    let mut acked = HashSet::new();
    let mut outstanding: HashMap<u16, u32> = HashMap::new();
    let mut next = 0u32;
    let mut out = BytesMut::new();
    let mut input = BytesMut::new();
    let mut killed = false;
    loop {
        while !killed && outstanding.len() < WINDOW && next < MOST {
            let packet_id = u16::try_from(next % 65_535 + 1).expect("fits");
            protocol::encode(&publish(next, packet_id), ProtocolVersion::V3_1_1, &mut out)
                .expect("encodes");
            outstanding.insert(packet_id, next);
            next += 1;
        }
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                // The broker is gone; what it acknowledged is still to be read.
                killed = true;
            }
            out.clear();
        }
        if !killed && acked.len() >= kill_after {
            broker.kill();
            killed = true;
        }
        let read = tokio::time::timeout(RECV_TIMEOUT, stream.read_buf(&mut input))
            .await
            .expect("the broker went quiet while alive");
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        while let Ok(Some(packet)) =
            protocol::decode(&mut input, usize::MAX, ProtocolVersion::V3_1_1)
        {
            match packet {
                Packet::PubAck(ack) => {
                    if let Some(index) = outstanding.remove(&ack.packet_id.get()) {
                        acked.insert(index);
                    }
                }
                Packet::PubRec(ack) => {
                    if let Some(index) = outstanding.get(&ack.packet_id.get()) {
                        acked.insert(*index);
                    }
                    protocol::encode(
                        &Packet::PubRel(Ack::new(ack.packet_id)),
                        ProtocolVersion::V3_1_1,
                        &mut out,
                    )
                    .expect("encodes");
                }
                Packet::PubComp(ack) => {
                    outstanding.remove(&ack.packet_id.get());
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(
            !(next >= MOST && outstanding.is_empty()),
            "published everything before the kill"
        );
    }
    acked
}

/// Receives what the subscriber's session holds until `sentinel` arrives,
/// acknowledging everything; returns how often each index arrived, by QoS.
async fn receive_until(subscriber: &mut RawClient, sentinel: &[u8]) -> HashMap<(QoS, u32), u32> {
    let mut seen = HashMap::new();
    loop {
        match subscriber.recv().await {
            Packet::Publish(publish) => {
                subscriber.answer(&publish).await;
                if publish.payload.as_ref() == sentinel {
                    return seen;
                }
                let bytes: [u8; 4] = publish.payload.as_ref().try_into().expect("an index");
                *seen
                    .entry((publish.qos, u32::from_be_bytes(bytes)))
                    .or_default() += 1;
            }
            Packet::PubRel(ack) => {
                subscriber
                    .send(&Packet::PubComp(Ack::new(ack.packet_id)))
                    .await
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

async fn round(dir: &Path, number: u32) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("data dir");
    let config = dir.join("petrel.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\nsys_interval = 0\nmax_queued_messages = 100000\n\
             log_level = \"warn\"\n\n[[listener]]\nbind = \"127.0.0.1:0\"\n",
            dir.join("data").display()
        ),
    )
    .expect("config");
    let mut broker = Broker::start(&config);
    let (mut subscriber, _) =
        RawClient::connect_with(broker.addr, connect_packet("crash-subscriber", false, 0)).await;
    subscriber
        .subscribe(1, &[("crash/#", QoS::ExactlyOnce)])
        .await;
    subscriber.disconnect().await;
    // Somewhere between a few hundred and a few thousand messages in.
    let kill_after = 300 + (number as usize * 677) % 3000;
    let acked = publish_until_killed(&mut broker, kill_after).await;
    assert!(acked.len() >= kill_after);

    let broker = Broker::start(&config);
    let (mut subscriber, connack) =
        RawClient::connect_with(broker.addr, connect_packet("crash-subscriber", false, 0)).await;
    assert!(
        connack.session_present,
        "the persistent session survived the crash"
    );
    // Queued behind everything the session holds.
    let mut publisher = RawClient::connect(broker.addr, "sentinel").await;
    publisher
        .publish("crash/2", b"end", QoS::AtLeastOnce, false, 1)
        .await;
    let seen = receive_until(&mut subscriber, b"end").await;
    let missing: Vec<u32> = acked
        .iter()
        .copied()
        .filter(|index| !seen.contains_key(&(qos_of(*index), *index)))
        .collect();
    assert!(
        missing.is_empty(),
        "round {number}: {} of {} acknowledged messages lost, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(10)]
    );
    let twice: Vec<u32> = seen
        .iter()
        .filter(|((qos, _), count)| *qos == QoS::ExactlyOnce && **count > 1)
        .map(|((_, index), _)| *index)
        .collect();
    assert!(
        twice.is_empty(),
        "round {number}: QoS 2 delivered twice: {twice:?}"
    );
    eprintln!(
        "crash round {number}: {} acknowledged before the kill, {} delivered after the restart",
        acked.len(),
        seen.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_a_kill_9() {
    let rounds: u32 = std::env::var("CRASH_ROUNDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(3);
    let dir = std::env::temp_dir().join(format!("petrel-crash-{}", std::process::id()));
    for number in 0..rounds {
        tokio::time::timeout(Duration::from_secs(60), round(&dir, number))
            .await
            .expect("a crash round took over 60 s");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
