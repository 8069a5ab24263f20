//! The broker as a systemd service, without systemd: the test plays the
//! service manager's notify socket (a unix datagram socket named by
//! `NOTIFY_SOCKET`) and checks what the release-built binary tells it:
//! READY=1 once the port accepts, WATCHDOG=1 pings at half `WATCHDOG_USEC`,
//! RELOADING=1 then READY=1 around a SIGHUP, STOPPING=1 on SIGTERM.

mod common;

use std::io::BufReader;
use std::process::{Command, Stdio};

use common::*;

/// The next datagram on the notify socket, as text.
async fn next_message(socket: &tokio::net::UnixDatagram) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(RECV_TIMEOUT, socket.recv(&mut buf))
        .await
        .expect("a notification in time")
        .expect("recv");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Reads notifications until one has the line `line`; returns it and the
/// ones before it.
async fn until(socket: &tokio::net::UnixDatagram, line: &str) -> (String, Vec<String>) {
    let mut before = Vec::new();
    loop {
        let message = next_message(socket).await;
        if message.lines().any(|l| l == line) {
            return (message, before);
        }
        before.push(message);
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[tokio::test]
async fn the_notify_protocol_from_start_to_stop() {
    timed(async {
        let dir = std::env::temp_dir().join(format!("petrel-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let socket_path = dir.join("notify.sock");
        let socket = tokio::net::UnixDatagram::bind(&socket_path).expect("bind the notify socket");
        let mut child = Command::new(petrel_bin())
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            // systemd's StateDirectory=: the default data_dir goes there.
            .env("STATE_DIRECTORY", dir.join("state"))
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "200000")
            .env_remove("WATCHDOG_PID")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("petrel starts");
        let pid = child.id();
        let stdout = child.stdout.take().expect("stdout");
        let port = tokio::task::spawn_blocking(move || {
            let mut reader = BufReader::new(stdout);
            let port = listening_port(&mut reader);
            // Keep draining the log so the broker never blocks on a pipe.
            std::thread::spawn(move || for _ in std::io::BufRead::lines(reader) {});
            port
        });
        let (ready, before) = until(&socket, "READY=1").await;
        assert!(before.is_empty(), "before READY: {before:?}");
        assert!(ready.contains("STATUS=0 clients connected"), "{ready}");
        // READY comes once the listener is bound: the port accepts now.
        let port = port.await.expect("the log names the port");
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let mut client = RawClient::connect(addr, "watcher").await;
        assert!(client.ping_barrier().await.is_empty());
        // Pings keep coming, at 100 ms, with the client count.
        let mut pings = 0;
        while pings < 3 {
            let message = next_message(&socket).await;
            if message.lines().any(|line| line == "WATCHDOG=1") {
                pings += 1;
                assert!(message.contains("STATUS="), "{message}");
            }
        }
        let (ping, _) = until(&socket, "WATCHDOG=1").await;
        assert!(ping.contains("STATUS=1 clients connected"), "{ping}");
        // SIGHUP: RELOADING=1 (with the monotonic clock), then READY=1.
        signal(pid, "HUP");
        let (reloading, _) = until(&socket, "RELOADING=1").await;
        assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
        until(&socket, "READY=1").await;
        // The client was never disturbed.
        assert!(client.ping_barrier().await.is_empty());
        // SIGTERM: STOPPING=1, then a clean exit.
        signal(pid, "TERM");
        until(&socket, "STOPPING=1").await;
        client.expect_closed().await;
        let exit = exit_of(child).await;
        assert!(exit.expect("petrel exits after SIGTERM").success());
        assert!(
            dir.join("state/petrel.redb").is_file(),
            "the store is in STATE_DIRECTORY"
        );
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

// The shipped unit file (dist/systemd/petrel.service) passes
// `systemd-analyze verify`, pointed at the binary under test, and says
// what the broker's notify protocol needs.
#[test]
fn the_unit_file_verifies() {
    let unit = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/systemd/petrel.service");
    let text = std::fs::read_to_string(&unit).expect("the unit file");
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "StateDirectory=petrel",
        "ConfigurationDirectory=petrel",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "SystemCallFilter=@system-service",
    ] {
        assert!(text.lines().any(|l| l == line), "the unit lacks {line}");
    }
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("skipped: systemd-analyze is not installed (apt-get install systemd)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("petrel-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let copy = dir.join("petrel.service");
    let binary = petrel_bin();
    let binary = binary.canonicalize().unwrap_or(binary);
    std::fs::write(
        &copy,
        text.replace("/usr/bin/petrel", &binary.to_string_lossy()),
    )
    .expect("write the copy");
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "systemd-analyze verify: {stderr}");
    assert!(
        !stderr.contains("petrel.service"),
        "systemd-analyze verify warns: {stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// At start-up the broker raises its open-file soft limit to the hard
// limit, and warns, naming both, when max_connections (100,000 by default)
// is still out of reach: started with soft 256 and hard 512, it runs with
// 512 and says so.
#[tokio::test]
async fn the_open_file_limit_is_raised_and_a_shortfall_named() {
    timed(async {
        let dir = std::env::temp_dir().join(format!("petrel-nofile-{}", std::process::id()));
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"ulimit -Sn 256 && ulimit -Hn 512 && exec "$0" "$@""#)
            .arg(petrel_bin())
            .args(["--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("petrel starts");
        let pid = child.id();
        let stdout = child.stdout.take().expect("stdout");
        let warning = tokio::task::spawn_blocking(move || {
            let mut warning = None;
            for line in std::io::BufRead::lines(BufReader::new(stdout)) {
                let line = line.expect("log line");
                if line.contains("open-file limit") {
                    warning = Some(line);
                } else if line.contains("listening") {
                    break;
                }
            }
            warning
        })
        .await
        .expect("join");
        let warning = warning.expect("a warning about the open-file limit");
        assert!(warning.contains("soft 512, hard 512"), "{warning}");
        assert!(warning.contains("max_connections = 100000"), "{warning}");
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
        let open_files = limits
            .lines()
            .find(|line| line.starts_with("Max open files"))
            .expect("the open files line");
        assert_eq!(
            open_files.split_whitespace().collect::<Vec<_>>()[3..5],
            ["512", "512"],
            "{open_files}"
        );
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}
