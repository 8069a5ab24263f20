//! SIGHUP re-reads petrel.toml and puts it in force without dropping
//! clients: a new listener opens, a removed one stops accepting and then
//! closes its connections, a changed limit applies, the log turns to
//! JSON, a new bridge connects, a key only a restart can change is said
//! to need one, and a file that fails the check changes nothing; a client
//! connected through it all keeps exchanging messages.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::*;
use petrel::protocol::{Packet, QoS, ReasonCode};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The broker's log lines, as they come.
struct Log(tokio::sync::mpsc::UnboundedReceiver<String>);

impl Log {
    /// Waits for a line containing every one of `parts`; returns it.
    async fn until(&mut self, parts: &[&str]) -> String {
        loop {
            let line = tokio::time::timeout(RECV_TIMEOUT, self.0.recv())
                .await
                .unwrap_or_else(|_| panic!("no log line with {parts:?} in time"))
                .expect("petrel exited");
            if parts.iter().all(|part| line.contains(part)) {
                return line;
            }
        }
    }
}

/// The binary started with `-c file`, and its log.
fn start(file: &std::path::Path) -> (std::process::Child, Log) {
    let mut child = Command::new(petrel_bin())
        .arg("-c")
        .arg(file)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("petrel starts");
    let (lines, receiver) = tokio::sync::mpsc::unbounded_channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    (child, Log(receiver))
}

fn hup(pid: u32) {
    let status = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// A publish on `topic` from a new client, and `subscriber` receives it.
async fn exchange(addr: SocketAddr, subscriber: &mut RawClient, topic: &str, payload: &[u8]) {
    let mut publisher = RawClient::connect(addr, "publisher").await;
    publisher
        .publish(topic, payload, QoS::AtLeastOnce, false, 1)
        .await;
    let publish = subscriber.recv_publish().await;
    assert_eq!(publish.payload.as_ref(), payload);
    subscriber.answer(&publish).await;
    publisher.disconnect().await;
}

#[tokio::test]
async fn sighup_puts_the_file_in_force_without_dropping_clients() {
    timed(async {
        let (stays, removed, added) = (free_port(), free_port(), free_port());
        let remote = FakeRemote::bind().await;
        let dir = std::env::temp_dir().join(format!("petrel-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("petrel.toml");
        let base = "sys_interval = 0\npersistence = false\nshutdown_timeout = 1\n";
        std::fs::write(
            &file,
            format!(
                "{base}max_subscriptions_per_client = 10\n\
                 [[listener]]\nbind = \"127.0.0.1:{stays}\"\n\
                 [[listener]]\nbind = \"127.0.0.1:{removed}\"\n"
            ),
        )
        .expect("write");
        let (mut child, mut log) = start(&file);
        let pid = child.id();
        log.until(&["listening", &stays.to_string()]).await;
        log.until(&["listening", &removed.to_string()]).await;

        let mut steady = RawClient::connect(local(stays), "steady").await;
        steady.subscribe(1, &[("t", QoS::AtLeastOnce)]).await;
        exchange(local(stays), &mut steady, "t", b"before").await;
        let mut leaving = RawClient::connect(local(removed), "leaving").await;
        assert!(leaving.ping_barrier().await.is_empty());

        // The new file: one listener gone, one new, a lower limit, a
        // bridge, and the store's directory (which needs a restart).
        std::fs::write(
            &file,
            format!(
                "{base}max_subscriptions_per_client = 1\ndata_dir = \"elsewhere\"\n\
                 log_format = \"json\"\n\
                 [[listener]]\nbind = \"127.0.0.1:{stays}\"\n\
                 [[listener]]\nbind = \"127.0.0.1:{added}\"\n\
                 [[bridge]]\nname = \"uplink\"\naddresses = [\"{}\"]\nkeep_alive = 600\n\
                 [[bridge.topic]]\nfilter = \"t\"\ndirection = \"out\"\nqos = 1\n",
                remote.addr
            ),
        )
        .expect("write");
        hup(pid);
        log.until(&["data_dir", "needs a restart"]).await;
        // The log is JSON from the reload on.
        log.until(&["{\"timestamp\"", "SIGHUP: configuration reloaded"])
            .await;

        // The new listener accepts; the removed one does not.
        let mut newcomer = RawClient::connect(local(added), "newcomer").await;
        assert!(newcomer.ping_barrier().await.is_empty());
        assert!(
            tokio::net::TcpStream::connect(local(removed))
                .await
                .is_err(),
            "the removed listener still accepts"
        );
        // The new bridge connects to its remote.
        let (mut far, _) = remote.accept().await;
        // The lower limit applies to the connected client: a second
        // subscription is refused.
        let codes = steady.subscribe(2, &[("u", QoS::AtLeastOnce)]).await;
        assert_eq!(codes, [ReasonCode::UnspecifiedError]);
        // The connected client still exchanges messages, and the bridge
        // forwards them.
        exchange(local(stays), &mut steady, "t", b"after").await;
        loop {
            if let Packet::Publish(publish) = far.recv().await {
                assert_eq!(publish.payload.as_ref(), b"after");
                far.answer(&publish).await;
                break;
            }
        }
        // The removed listener's connection closes after the grace period.
        leaving.expect_closed_or_any().await;

        // The bridge removed: it disconnects, and what is published while
        // it is gone is not queued for it (back again, the first message
        // it forwards is one published after its return).
        let without_bridge = std::fs::read_to_string(&file).expect("read");
        let with_bridge = without_bridge.clone();
        let cut = without_bridge.find("[[bridge]]").expect("the bridge table");
        std::fs::write(&file, &without_bridge[..cut]).expect("write");
        hup(pid);
        log.until(&["bridge uplink removed"]).await;
        log.until(&["bridge stopped: nothing more is queued for it"])
            .await;
        far.expect_closed_or_any().await;
        exchange(local(stays), &mut steady, "t", b"while gone").await;
        std::fs::write(&file, &with_bridge).expect("write");
        hup(pid);
        log.until(&["bridge uplink added"]).await;
        let (mut far, _) = remote.accept().await;
        exchange(local(stays), &mut steady, "t", b"back").await;
        loop {
            if let Packet::Publish(publish) = far.recv().await {
                assert_eq!(publish.payload.as_ref(), b"back", "queued while gone");
                break;
            }
        }

        // A file that fails the check changes nothing, and says where.
        std::fs::write(&file, format!("{base}max_inflight = 0\n")).expect("write");
        hup(pid);
        let line = log.until(&["nothing changed"]).await;
        assert!(
            line.contains("line 4") && line.contains("max_inflight"),
            "{line}"
        );
        exchange(local(stays), &mut steady, "t", b"still").await;
        let mut again = RawClient::connect(local(added), "again").await;
        assert!(again.ping_barrier().await.is_empty());

        drop((steady, newcomer, again, far));
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

/// A broker on one listener of its own, from a file it is handed; a
/// client connected to it; and how to rewrite the file with `extra`
/// before or after the listener's table.
struct OneListener {
    child: std::process::Child,
    log: Log,
    port: u16,
    dir: std::path::PathBuf,
    file: std::path::PathBuf,
    listener: String,
}

const BASE: &str = "sys_interval = 0\npersistence = false\n";

impl OneListener {
    async fn start(name: &str) -> (OneListener, RawClient) {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("petrel-reload-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("petrel.toml");
        let listener = format!("[[listener]]\nbind = \"127.0.0.1:{port}\"\n");
        std::fs::write(&file, format!("{BASE}{listener}")).expect("write");
        let (child, mut log) = start(&file);
        log.until(&["listening", &port.to_string()]).await;
        let inside = RawClient::connect(local(port), "inside").await;
        let broker = OneListener {
            child,
            log,
            port,
            dir,
            file,
            listener,
        };
        (broker, inside)
    }

    /// Rewrites the file (`top` before the listener, `own` in its table)
    /// and sends SIGHUP.
    fn reload(&self, top: &str, own: &str) {
        let text = format!("{BASE}{top}{}{own}", self.listener);
        std::fs::write(&self.file, text).expect("write");
        hup(self.child.id());
    }

    /// An anonymous CONNECT's answer.
    async fn anonymous(&self) -> ReasonCode {
        let (_, connack) =
            RawClient::connect_with(local(self.port), connect_packet("outside", true, 0)).await;
        connack.reason_code
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// The top-level allow_anonymous changed by a reload applies to the
// listeners that run: a new anonymous CONNECT is refused (0x05), the
// client already connected stays.
#[tokio::test]
async fn a_reload_can_close_the_door_to_anonymous_clients() {
    timed(async {
        let (mut broker, mut inside) = OneListener::start("anonymous").await;
        broker.reload("allow_anonymous = false\n", "");
        broker.log.until(&["SIGHUP: configuration reloaded"]).await;
        assert_eq!(broker.anonymous().await, ReasonCode::NotAuthorized);
        assert!(inside.ping_barrier().await.is_empty());
        drop(inside);
        broker.stop();
    })
    .await;
}

// A listener whose own settings change listens again with them, and keeps
// the connections it had: a reload decides so (its report says "changed",
// never "closed"), the client stays, and a new anonymous one is refused by
// the listener's new allow_anonymous = false.
#[tokio::test]
async fn a_changed_listener_keeps_its_connections() {
    timed(async {
        let (mut broker, mut inside) = OneListener::start("changed").await;
        broker.reload("", "allow_anonymous = false\n");
        let changed = broker.log.until(&["listener", "changed"]).await;
        assert!(changed.contains("its connections stay"), "{changed}");
        loop {
            let line = broker.log.until(&["SIGHUP"]).await;
            assert!(!line.contains("closed"), "{line}");
            if line.contains("configuration reloaded") {
                break;
            }
        }
        assert_eq!(broker.anonymous().await, ReasonCode::NotAuthorized);
        assert!(inside.ping_barrier().await.is_empty());
        drop(inside);
        broker.stop();
    })
    .await;
}
