//! The container image as shipped: its configuration (config/container.toml)
//! serves MQTT on every IPv4 and IPv6 address on one port, to anonymous
//! clients, and the Dockerfile is well formed (no container engine here:
//! it is parsed, and what it copies must exist).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

fn repository(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

// The image's configuration, on a free port instead of 1883: the binary
// listens on 0.0.0.0 and [::] at once, and a client without credentials
// connects over IPv4 and (where the host has it) IPv6.
#[tokio::test]
async fn the_container_configuration_serves_ipv4_and_ipv6_on_one_port() {
    timed(async {
        let text = std::fs::read_to_string(repository("config/container.toml")).expect("read");
        let config = petrel::Config::from_toml(&text).expect("valid");
        let binds: Vec<String> = config
            .listeners
            .iter()
            .map(|l| l.bind.to_string())
            .collect();
        assert_eq!(binds, ["0.0.0.0:1883", "[::]:1883"]);
        assert_eq!(config.allow_anonymous, Some(true), "the policy is stated");
        assert_eq!(config.data_dir, Path::new("/var/lib/petrel"));
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("a free port")
                .port()
        };
        let (port, admin_port) = (free(), free());
        assert_eq!(
            config.admin.bind.map(|b| b.to_string()).as_deref(),
            Some("0.0.0.0:9883")
        );
        let dir = std::env::temp_dir().join(format!("petrel-container-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("petrel.toml");
        let text = text
            .replace(":1883\"", &format!(":{port}\""))
            .replace(":9883\"", &format!(":{admin_port}\""))
            .replace("/var/lib/petrel", &dir.join("data").to_string_lossy());
        std::fs::write(&file, text).expect("write");
        let mut child = Command::new(petrel_bin())
            .arg("-c")
            .arg(&file)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("petrel starts");
        let stdout = child.stdout.take().expect("stdout");
        let ready = tokio::task::spawn_blocking(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut listening = 0;
            let mut skipped = false;
            // The admin listener makes its token as it starts, beside the
            // MQTT listeners: wait for that too before reading it.
            let mut token = false;
            while listening + usize::from(skipped) < 2 || !token {
                let Some(Ok(line)) = lines.next() else {
                    panic!("petrel exited before listening");
                };
                listening += usize::from(line.contains("listening"));
                skipped |= line.contains("skipping it");
                token |= line.contains("admin token made");
            }
            std::thread::spawn(move || for _ in lines {});
            skipped
        })
        .await
        .expect("join");
        let mut v4 =
            RawClient::connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)), "v4").await;
        assert!(v4.ping_barrier().await.is_empty());
        let skipped = ready;
        if std::net::TcpListener::bind("[::1]:0").is_ok() {
            // This host has IPv6: [::] must have been bound beside 0.0.0.0
            // on the same port (IPv6 only, or the two collide).
            assert!(!skipped, "the IPv6 listener was skipped");
            let addr = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
            let mut v6 = RawClient::connect(addr, "v6").await;
            assert!(v6.ping_barrier().await.is_empty());
        } else {
            println!("no IPv6 on this host: only the IPv4 listener was checked");
        }
        // The admin listener made its token in the data volume, and the
        // image's HEALTHCHECK command finds the broker ready.
        let token = std::fs::read_to_string(dir.join("data/admin.token")).expect("token made");
        assert_eq!(token.trim().len(), 48, "{token}");
        let url = format!("http://127.0.0.1:{admin_port}/readyz");
        let health = tokio::task::spawn_blocking(move || {
            Command::new(petrel_bin())
                .args(["healthcheck", "--url", &url])
                .output()
                .expect("petrel healthcheck runs")
        })
        .await
        .expect("join");
        assert!(health.status.success(), "{health:?}");
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

// The Dockerfile, parsed: known instructions only, a build stage and a
// run stage, the run stage as a non-root user exposing 1883 with the
// container configuration, exec-form ENTRYPOINT and CMD, and every file
// it copies from the repository present.
#[test]
fn the_dockerfile_is_well_formed() {
    let text = std::fs::read_to_string(repository("Dockerfile")).expect("Dockerfile");
    let mut instructions: Vec<(String, String)> = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let line = line.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        if let Some(start) = line.strip_suffix('\\') {
            pending.push_str(start);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let (instruction, arguments) = pending
            .split_once(' ')
            .expect("an instruction and arguments");
        instructions.push((instruction.to_owned(), arguments.trim().to_owned()));
        pending.clear();
    }
    assert!(pending.is_empty(), "a continued line at the end");
    const KNOWN: [&str; 12] = [
        "FROM",
        "RUN",
        "COPY",
        "WORKDIR",
        "USER",
        "VOLUME",
        "EXPOSE",
        "ENTRYPOINT",
        "CMD",
        "ENV",
        "HEALTHCHECK",
        "LABEL",
    ];
    for (instruction, _) in &instructions {
        assert!(
            KNOWN.contains(&instruction.as_str()),
            "unknown instruction {instruction}"
        );
    }
    assert_eq!(instructions[0].0, "FROM");
    let stages = instructions.iter().filter(|(i, _)| i == "FROM").count();
    assert_eq!(stages, 2, "a build stage and a run stage");
    let last_from = instructions
        .iter()
        .rposition(|(i, _)| i == "FROM")
        .expect("FROM");
    let run_stage = &instructions[last_from..];
    let value = |name: &str| {
        run_stage
            .iter()
            .rev()
            .find(|(i, _)| i == name)
            .map(|(_, a)| a.clone())
    };
    let user = value("USER").expect("USER in the run stage");
    assert!(user != "root" && user != "0", "runs as root");
    assert_eq!(value("EXPOSE").as_deref(), Some("1883 9883"));
    let healthcheck = value("HEALTHCHECK").expect("HEALTHCHECK in the run stage");
    let command = healthcheck
        .split_once("CMD ")
        .map(|(_, command)| command)
        .expect("HEALTHCHECK CMD");
    let command: Vec<String> = serde_json::from_str(command).expect("CMD in exec form");
    assert_eq!(command[1], "healthcheck", "{command:?}");
    assert!(
        command.iter().any(|arg| arg.ends_with(":9883/readyz")),
        "{command:?}"
    );
    for exec in ["ENTRYPOINT", "CMD"] {
        let form = value(exec).unwrap_or_else(|| panic!("{exec}"));
        let parsed: Vec<String> = serde_json::from_str(&form)
            .unwrap_or_else(|error| panic!("{exec} is not in exec form ({error}): {form}"));
        assert!(!parsed.is_empty(), "{exec} in exec form");
    }
    for (instruction, arguments) in &instructions {
        if instruction != "COPY" || arguments.starts_with("--from") {
            continue;
        }
        let parts: Vec<&str> = arguments.split_whitespace().collect();
        for source in &parts[..parts.len() - 1] {
            if *source != "." {
                assert!(repository(source).exists(), "COPY {source}: no such file");
            }
        }
    }
    assert!(
        instructions
            .iter()
            .any(|(i, a)| i == "COPY" && a == "config/container.toml /etc/petrel/petrel.toml"),
        "the image runs with the container configuration"
    );
}
