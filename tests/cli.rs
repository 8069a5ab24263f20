//! The `petrel` binary: `check-config`, start-up refusals, and a clean
//! exit on SIGTERM with connected clients, a reload on SIGHUP.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use petrel::Config;

const PETREL: &str = env!("CARGO_BIN_EXE_petrel");

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&directory)
        .expect("fixture directory")
        .map(|entry| entry.expect("entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", directory.display());
    files
}

// The example configuration documents exactly the defaults.
#[test]
fn example_config_is_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/petrel.toml");
    assert_eq!(Config::load(&path).unwrap(), Config::default());
}

#[test]
fn check_config_accepts_valid_files() {
    for file in fixtures("valid") {
        let output = Command::new(PETREL)
            .arg("check-config")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

// A bad file exits non-zero with a message naming the key and the line.
#[test]
fn check_config_rejects_invalid_files_naming_key_and_line() {
    let expected: &[(&str, &str, &str)] = &[
        (
            "admin-open-to-all.toml",
            "line 3: `admin.bind`",
            "admin.token_file",
        ),
        ("bad-address.toml", "line 2", "socket address"),
        (
            "bridge-qos.toml",
            "line 10: `bridge[0].topic[0].qos`",
            "must be 0, 1 or 2",
        ),
        ("log-level.toml", "line 1", "log_level"),
        (
            "public-without-choice.toml",
            "allow_anonymous",
            "0.0.0.0:1883",
        ),
        ("tiny-packets.toml", "line 1", "max_packet_size"),
        (
            "tls-missing-cert.toml",
            "line 5: `listener[0].tls.cert`",
            "/nonexistent/server.pem",
        ),
        (
            "tls-not-pem.toml",
            "line 7: `listener[0].tls.cert`",
            "Cargo.toml: no PEM certificate in it",
        ),
        ("unknown-key.toml", "line 2", "max_inflite"),
        ("wrong-type.toml", "line 1", "connect_timeout"),
        ("zero-inflight.toml", "line 3", "max_inflight"),
    ];
    let files = fixtures("invalid");
    assert_eq!(files.len(), expected.len());
    for (file, (name, first, second)) in files.iter().zip(expected) {
        assert!(file.ends_with(name), "{} vs {name}", file.display());
        let output = Command::new(PETREL)
            .arg("check-config")
            .arg(file)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{name} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(first) && stderr.contains(second),
            "{name}: {stderr}"
        );
    }
    let output = Command::new(PETREL)
        .args(["-c", "/nonexistent/petrel.toml"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/petrel.toml"));
}

// A non-loopback --listen without allow_anonymous refuses to start, saying
// why.
#[test]
fn public_listen_without_allow_anonymous_refuses_to_start() {
    let output = Command::new(PETREL)
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("allow_anonymous"), "{stderr}");
}

/// Reads the broker's log until it reports its listening address.
// SIGTERM: clients are disconnected and the process exits 0 within
// shutdown_timeout.
#[tokio::test]
async fn sigterm_shuts_down_cleanly() {
    timed(async {
        let data = std::env::temp_dir().join(format!("petrel-sigterm-{}", std::process::id()));
        let mut child = Command::new(PETREL)
            .args(["--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&data)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (port, rest) = tokio::task::spawn_blocking(move || {
            let mut reader = BufReader::new(stdout);
            (listening_port(&mut reader), reader)
        })
        .await
        .unwrap();
        // Keep draining the log so the broker never blocks on a full pipe.
        let drain = std::thread::spawn(move || for _ in rest.lines() {});
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let mut client = RawClient::connect(addr, "watching-the-end").await;
        assert!(client.ping_barrier().await.is_empty());
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        client.expect_closed().await;
        let exit = exit_of(child).await;
        let exit = exit.expect("petrel did not exit after SIGTERM");
        assert!(exit.success(), "exit status {exit}");
        drain.join().unwrap();
        // The default persistence made a store there.
        assert!(data.join("petrel.redb").is_file());
        let _ = std::fs::remove_dir_all(&data);
    })
    .await;
}

// In-process shutdown closes every client connection, publishes the wills
// of the clients it disconnects (docs/operations.md), and reports that every
// task ended in time.
#[tokio::test]
async fn broker_shutdown_closes_connections() {
    timed(async {
        let broker = TestBroker::start().await;
        let metrics = std::sync::Arc::clone(broker.broker.metrics());
        let mut first = RawClient::connect(broker.addr, "one").await;
        let mut connect = connect_packet("two", true, 0);
        connect.will = Some(will(
            "status/two",
            b"offline",
            petrel::protocol::QoS::AtLeastOnce,
            true,
        ));
        let (mut second, _) = RawClient::connect_with(broker.addr, connect).await;
        assert!(broker.broker.shutdown().await);
        assert_eq!(metrics.wills_published.get(), 1);
        first.expect_closed().await;
        second.expect_closed().await;
        assert!(tokio::net::TcpStream::connect(broker.addr).await.is_err());
    })
    .await;
}

fn passwd_stdin(file: &Path, user: &str, password: &str) {
    use std::io::Write;
    let mut child = Command::new(PETREL)
        .args(["passwd", "--stdin"])
        .arg(file)
        .arg(user)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

// SIGHUP reloads the password file (and certificates and ACL): a user
// added meanwhile can log in, without a restart.
#[tokio::test]
async fn sighup_reloads_the_password_file() {
    timed(async {
        let dir = std::env::temp_dir().join(format!("petrel-sighup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let passwords = dir.join("passwd");
        passwd_stdin(&passwords, "alice", "one");
        let config = dir.join("petrel.toml");
        std::fs::write(
            &config,
            format!(
                "password_file = \"{}\"\nauth_failure_delay = 0\nsys_interval = 0\n",
                passwords.display()
            ),
        )
        .unwrap();
        let mut child = Command::new(PETREL)
            .arg("-c")
            .arg(&config)
            .args(["--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (port, rest) = tokio::task::spawn_blocking(move || {
            let mut reader = BufReader::new(stdout);
            (listening_port(&mut reader), reader)
        })
        .await
        .unwrap();
        // The rest of the log goes to a channel, line by line.
        let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
        let drain = std::thread::spawn(move || {
            for line in rest.lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let bob = || {
            let mut connect = connect_packet("bob", true, 0);
            connect.username = Some("bob".to_owned());
            connect.password = Some(bytes::Bytes::from_static(b"two"));
            connect
        };
        let (_, refused) = RawClient::connect_with(addr, bob()).await;
        assert_eq!(
            refused.reason_code,
            petrel::protocol::ReasonCode::BadUserNameOrPassword
        );
        passwd_stdin(&passwords, "bob", "two");
        let status = Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        loop {
            let line = tokio::time::timeout(RECV_TIMEOUT, lines.recv())
                .await
                .expect("a log line in time")
                .expect("the broker is still logging");
            assert!(!line.contains("not reloaded"), "{line}");
            if line.contains("SIGHUP") && line.contains("reloaded") {
                break;
            }
        }
        let (_, accepted) = RawClient::connect_with(addr, bob()).await;
        assert_eq!(accepted.reason_code, petrel::protocol::ReasonCode::Success);
        let _ = child.kill();
        let _ = child.wait();
        drain.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

// The configurations that ship (the package's /etc/petrel/petrel.toml and
// the container image's) pass check-config.
#[test]
fn shipped_configurations_pass_check_config() {
    for file in ["dist/debian/petrel.toml", "config/container.toml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let output = Command::new(PETREL)
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Starts the binary with `config` (TOML text) and extra environment,
/// listening on an ephemeral port; its standard output, line by line.
fn start_with_log(
    config: &str,
    env: &[(&str, &str)],
) -> (
    std::process::Child,
    std::io::Lines<BufReader<std::process::ChildStdout>>,
) {
    static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("petrel-log-{}-{run}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("petrel.toml");
    std::fs::write(&file, config).unwrap();
    let mut command = Command::new(PETREL);
    command
        .arg("-c")
        .arg(&file)
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    (child, BufReader::new(stdout).lines())
}

// log_format = "json": every line is one JSON object with the timestamp,
// level, target and message; a client's connect line carries its client
// id and, from the connection's span, its address.
#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    timed(async {
        let (mut child, mut lines) =
            start_with_log("persistence = false\nlog_format = \"json\"\n", &[]);
        let (port, lines) = tokio::task::spawn_blocking(move || {
            for line in lines.by_ref() {
                let event: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
                for key in ["timestamp", "level", "target", "message"] {
                    assert!(event.get(key).is_some(), "no {key} in {event}");
                }
                if event["message"] == "listening" {
                    let address = event["address"].as_str().unwrap().to_owned();
                    let address = address.trim_start_matches("Some(").trim_end_matches(')');
                    let port = address.parse::<std::net::SocketAddr>().unwrap().port();
                    return (port, lines);
                }
            }
            panic!("no listening line");
        })
        .await
        .unwrap();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let client = RawClient::connect(addr, "json-logger").await;
        let connected = tokio::task::spawn_blocking(move || {
            let mut lines = lines;
            for line in lines.by_ref() {
                let event: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
                if event["message"] == "client connected" {
                    return event;
                }
            }
            panic!("no connect line");
        })
        .await
        .unwrap();
        assert_eq!(connected["level"], "INFO");
        assert_eq!(connected["span"]["client_id"], "json-logger", "{connected}");
        assert!(
            connected["span"]["peer"]
                .as_str()
                .is_some_and(|peer| peer.starts_with("127.0.0.1:")),
            "{connected}"
        );
        drop(client);
        let _ = child.kill();
        let _ = child.wait();
    })
    .await;
}

// worker_threads sets the runtime's worker count (the runtime reports it
// at start-up), and a broker on it serves clients.
#[tokio::test]
async fn worker_threads_sets_the_runtime_size() {
    timed(async {
        let config = "persistence = false\nlog_format = \"json\"\nworker_threads = 3\n";
        let (mut child, lines) = start_with_log(config, &[("TOKIO_WORKER_THREADS", "1")]);
        let (port, workers) = tokio::task::spawn_blocking(move || {
            let (mut port, mut workers) = (None, None);
            for line in lines {
                let event: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
                if event["message"] == "listening" {
                    let address = event["address"].as_str().unwrap().to_owned();
                    let address = address.trim_start_matches("Some(").trim_end_matches(')');
                    port = Some(address.parse::<std::net::SocketAddr>().unwrap().port());
                }
                if event["message"] == "petrel started" {
                    workers = Some(event["worker_threads"].clone());
                }
                if let (Some(port), Some(workers)) = (port, workers.clone()) {
                    return (port, workers);
                }
            }
            panic!("no listening or start line");
        })
        .await
        .unwrap();
        // The key wins over the environment's TOKIO_WORKER_THREADS.
        assert_eq!(workers, serde_json::json!(3));
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let mut client = RawClient::connect(addr, "on-three-workers").await;
        assert!(client.ping_barrier().await.is_empty());
        let _ = child.kill();
        let _ = child.wait();
    })
    .await;
}

// Under systemd's journal (JOURNAL_STREAM set) text lines carry no
// timestamp: the journal adds its own.
#[test]
fn text_logs_under_the_journal_have_no_timestamp() {
    for (env, stamped) in [
        (&[][..], true),
        (&[("JOURNAL_STREAM", "8:12345")][..], false),
    ] {
        let (mut child, mut lines) = start_with_log("persistence = false\n", env);
        let first = lines.next().unwrap().unwrap();
        let _ = child.kill();
        let _ = child.wait();
        let starts_with_date = first.chars().next().is_some_and(|c| c.is_ascii_digit());
        assert_eq!(starts_with_date, stamped, "{env:?}: {first}");
        assert!(
            ["INFO", "WARN"].iter().any(|level| first.contains(level)),
            "{first}"
        );
    }
}
