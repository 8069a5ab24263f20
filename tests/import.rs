//! `petrel import-mosquitto`: a Mosquitto configuration becomes a
//! petrel.toml that passes check-config, with a line for what was not
//! carried over and the exit status saying whether anything was not; and
//! Petrel on the imported file lets in the clients Mosquitto lets in.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use petrel::protocol::ReasonCode;

fn import(conf: &Path, out: &Path) -> (i32, String) {
    let output = Command::new(petrel_bin())
        .arg("import-mosquitto")
        .arg(conf)
        .arg("-o")
        .arg(out)
        .output()
        .expect("petrel runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn check_config(file: &Path) {
    let output = Command::new(petrel_bin())
        .arg("check-config")
        .arg(file)
        .output()
        .expect("petrel runs");
    assert!(
        output.status.success(),
        "{}: {}",
        file.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `broker` ("mosquitto", or "petrel" on the import of it) run on the
/// Mosquitto configuration `conf`.
fn run_on(broker: &str, conf: &Path, dir: &Path) -> std::process::Child {
    let mut command = if broker == "mosquitto" {
        let mut command = Command::new("mosquitto");
        command.arg("-c").arg(conf);
        command
    } else {
        let out = dir.join("petrel.toml");
        let (status, notes) = import(conf, &out);
        assert_eq!(status, 0, "{notes}");
        let mut command = Command::new(petrel_bin());
        command.arg("-c").arg(out);
        command
    };
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("{broker} does not start: {error}"))
}

/// Waits (at most RECV_TIMEOUT) until `addr` accepts.
async fn listening(addr: std::net::SocketAddr) {
    let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{addr} never listened"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("petrel-import-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

// The mosquitto.conf Debian installs: persistence carried over, pid_file
// and log_dest named as not needed, the result valid.
#[test]
fn debians_mosquitto_conf() {
    let conf = Path::new("/etc/mosquitto/mosquitto.conf");
    if !conf.exists() {
        println!("skipped: no /etc/mosquitto/mosquitto.conf (apt-get install mosquitto)");
        return;
    }
    let dir = temp("debian");
    let out = dir.join("petrel.toml");
    let (status, notes) = import(conf, &out);
    assert_eq!(status, 3, "something was not carried over: {notes}");
    assert!(
        notes.contains("pid_file") && notes.contains("log_dest"),
        "{notes}"
    );
    let config = petrel::Config::load(&out).expect("the import parses");
    assert!(config.persistence);
    assert_eq!(config.data_dir, Path::new("/var/lib/mosquitto/"));
    check_config(&out);
    let _ = std::fs::remove_dir_all(&dir);
}

// Every kind of directive in one file: listeners (both families, one
// address, TLS with a client CA), authentication, limits, logging,
// expiry, and a bridge with its topic lines; the output passes
// check-config and holds what each said. A file with nothing Petrel lacks
// imports with exit status 0.
#[test]
fn directives_carry_over() {
    let pki = pki::Pki::new("import");
    let dir = temp("directives");
    let conf = dir.join("mosquitto.conf");
    let passwd = dir.join("passwd");
    std::fs::write(&passwd, "").expect("write");
    std::fs::write(
        &conf,
        format!(
            "per_listener_settings false\n\
             listener 1883\n\
             socket_domain ipv4\n\
             listener 8883 127.0.0.1\n\
             certfile {}\n\
             keyfile {}\n\
             cafile {}\n\
             require_certificate true\n\
             use_identity_as_username true\n\
             allow_anonymous false\n\
             password_file {}\n\
             max_inflight_messages 0\n\
             max_queued_messages 500\n\
             max_keepalive 120\n\
             max_packet_size 65536\n\
             retain_available false\n\
             sys_interval 30\n\
             set_tcp_nodelay true\n\
             queue_qos0_messages true\n\
             persistence false\n\
             log_type warning\n\
             log_type information\n\
             connection cloud\n\
             address mqtt.example.com:8883\n\
             topic sensors/# out 1 \"\" gw1/\n\
             topic cmd/# in 2\n\
             bridge_protocol_version mqttv311\n\
             cleansession false\n\
             remote_clientid gw1\n\
             remote_username gw\n\
             remote_password secret\n",
            pki.path("server.pem").display(),
            pki.path("server.key").display(),
            pki.path("ca.pem").display(),
            passwd.display(),
        ),
    )
    .expect("write");
    let out = dir.join("petrel.toml");
    let (status, notes) = import(&conf, &out);
    assert_eq!(status, 0, "{notes}");
    check_config(&out);
    let config = petrel::Config::load(&out).expect("parses");
    let binds: Vec<String> = config
        .listeners
        .iter()
        .map(|l| l.bind.to_string())
        .collect();
    assert_eq!(binds, ["0.0.0.0:1883", "127.0.0.1:8883"]);
    let tls = config.listeners[1].tls.as_ref().expect("TLS");
    assert!(tls.require_certificate && tls.use_identity_as_username && tls.ca.is_some());
    assert_eq!(config.allow_anonymous, Some(false));
    assert_eq!(config.password_file.as_deref(), Some(passwd.as_path()));
    assert_eq!(config.max_inflight, 65_535);
    assert_eq!(config.max_queued_messages, 500);
    assert_eq!(config.max_keep_alive, 120);
    assert_eq!(config.max_packet_size, 65_536);
    assert!(!config.retain_available && !config.persistence && config.tcp_nodelay);
    assert!(config.queue_qos0);
    assert_eq!(config.sys_interval, 30);
    assert_eq!(config.log_level, "info");
    let bridge = &config.bridges[0];
    assert_eq!(bridge.name, "cloud");
    assert_eq!(bridge.addresses, ["mqtt.example.com:8883"]);
    assert_eq!(bridge.topics.len(), 2);
    assert!(!bridge.clean_start);
    assert_eq!(bridge.username.as_deref(), Some("gw"));
    let _ = std::fs::remove_dir_all(&dir);
}

// What Petrel lacks is named with its file and line, and the exit status
// says so; an include_dir is followed.
#[test]
fn what_is_not_carried_over_is_named() {
    let dir = temp("notes");
    let included = dir.join("conf.d");
    std::fs::create_dir_all(&included).expect("dir");
    std::fs::write(included.join("auth.conf"), "auth_plugin /usr/lib/auth.so\n").expect("write");
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener 1883 127.0.0.1\ncapath /etc/ssl/certs\ninclude_dir {}\n",
            included.display()
        ),
    )
    .expect("write");
    let out = dir.join("petrel.toml");
    let (status, notes) = import(&conf, &out);
    assert_eq!(status, 3);
    assert!(notes.contains("mosquitto.conf:2: capath"), "{notes}");
    assert!(notes.contains("auth.conf:1: auth_plugin"), "{notes}");
    check_config(&out);
    let _ = std::fs::remove_dir_all(&dir);
}

// The same mosquitto.conf run by Mosquitto and, imported, by Petrel: an
// anonymous client is refused by both when the file says nothing (Mosquitto
// 2 refuses anonymous clients on a configured listener), let in by both
// with `allow_anonymous true`.
#[tokio::test]
async fn petrel_on_the_import_lets_in_whom_mosquitto_lets_in() {
    timed(async {
        if Command::new("mosquitto").arg("-h").output().is_err() {
            println!("skipped: mosquitto is not installed (apt-get install mosquitto)");
            return;
        }
        for (extra, expected) in [
            ("", ReasonCode::NotAuthorized),
            ("allow_anonymous true\n", ReasonCode::Success),
        ] {
            let dir = temp("behaviour");
            let mut codes = Vec::new();
            for broker in ["mosquitto", "petrel"] {
                let port = std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .expect("port")
                    .port();
                let conf = dir.join(format!("{broker}.conf"));
                std::fs::write(
                    &conf,
                    format!("listener {port} 127.0.0.1\npersistence false\n{extra}"),
                )
                .expect("write");
                let mut child = run_on(broker, &conf, &dir);
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                listening(addr).await;
                let (_, connack) =
                    RawClient::connect_with(addr, connect_packet("anonymous", true, 0)).await;
                codes.push(connack.reason_code);
                let _ = child.kill();
                let _ = child.wait();
            }
            assert_eq!(codes, [expected, expected], "{extra:?}");
            let _ = std::fs::remove_dir_all(&dir);
        }
    })
    .await;
}

// Retained messages from a real mosquitto.db: Mosquitto (the apt package)
// runs with persistence in a temp dir, takes retained messages from
// mosquitto_pub -r at each QoS, and stops (writing its file); the file is
// imported into a Petrel store, and a subscriber to Petrel on that store
// gets every one.
#[tokio::test]
async fn retained_messages_come_over_from_mosquitto_db() {
    timed(async {
        let missing = ["mosquitto", "mosquitto_pub"]
            .iter()
            .any(|tool| Command::new(tool).arg("--help").output().is_err());
        if missing {
            println!(
                "skipped: mosquitto is not installed (apt-get install mosquitto mosquitto-clients)"
            );
            return;
        }
        let dir = temp("db");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        // Started as root, Mosquitto runs as its own user, which must be
        // able to write its file here.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        }
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                 persistence_location {}/\n",
                dir.display()
            ),
        )
        .expect("write");
        let mosquitto = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts");
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        listening(addr).await;
        let messages = [
            ("home/door", "open", "0"),
            ("home/light", "on", "1"),
            ("home/temp", "21.5", "2"),
        ];
        for (topic, payload, qos) in messages {
            let status = Command::new("mosquitto_pub")
                .args([
                    "-p",
                    &port.to_string(),
                    "-r",
                    "-q",
                    qos,
                    "-t",
                    topic,
                    "-m",
                    payload,
                ])
                .status()
                .expect("mosquitto_pub runs");
            assert!(status.success());
        }
        // One with MQTT 5 properties, which come over too.
        let status = Command::new("mosquitto_pub")
            .args([
                "-p",
                &port.to_string(),
                "-V",
                "mqttv5",
                "-r",
                "-q",
                "1",
                "-t",
                "props/doc",
            ])
            .args([
                "-m",
                "{}",
                "-D",
                "publish",
                "content-type",
                "application/json",
            ])
            .args(["-D", "publish", "user-property", "origin", "mosquitto"])
            .status()
            .expect("mosquitto_pub runs");
        assert!(status.success());
        // SIGTERM: Mosquitto writes its persistence file as it stops.
        let status = Command::new("kill")
            .args(["-TERM", &mosquitto.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        assert!(exit_of(mosquitto).await.is_some(), "mosquitto did not stop");
        let db = dir.join("mosquitto.db");
        assert!(db.is_file(), "mosquitto wrote no mosquitto.db");

        let store = DataDir::new("from-mosquitto");
        let output = Command::new(petrel_bin())
            .args(["import-mosquitto", "--db"])
            .arg(&db)
            .arg("--data-dir")
            .arg(store.path())
            .output()
            .expect("petrel runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            String::from_utf8_lossy(&output.stdout).starts_with("4 retained messages"),
            "{}",
            String::from_utf8_lossy(&output.stdout)
        );
        let broker = store.start().await;
        let mut subscriber = RawClient::connect(broker.addr, "reader").await;
        subscriber
            .subscribe(1, &[("home/#", petrel::protocol::QoS::ExactlyOnce)])
            .await;
        let mut got = std::collections::BTreeMap::new();
        while got.len() < messages.len() {
            let publish = subscriber.recv_publish().await;
            assert!(publish.retain);
            subscriber.answer(&publish).await;
            got.insert(
                publish.topic.as_str().to_owned(),
                (
                    String::from_utf8_lossy(&publish.payload).into_owned(),
                    publish.qos as u8,
                ),
            );
        }
        for (topic, payload, qos) in messages {
            assert_eq!(
                got[topic],
                (payload.to_owned(), qos.parse::<u8>().unwrap()),
                "{topic}"
            );
        }
        let mut v5 = RawClient::connect_v5(broker.addr, "reader-5").await;
        v5.subscribe(1, &[("props/#", petrel::protocol::QoS::AtLeastOnce)])
            .await;
        let publish = v5.recv_publish().await;
        assert_eq!(
            publish.properties.content_type.as_deref(),
            Some("application/json")
        );
        assert!(
            publish
                .properties
                .user_properties
                .iter()
                .any(|(k, v)| k.as_str() == "origin" && v.as_str() == "mosquitto"),
            "{:?}",
            publish.properties
        );
        drop((subscriber, v5));
        broker.broker.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

// A password file made by mosquitto_passwd, named in the mosquitto.conf:
// Mosquitto and Petrel (on the import, the same file unchanged) both let
// the user in with the right password and refuse a wrong one.
#[tokio::test]
async fn petrel_on_the_import_takes_mosquittos_passwords() {
    timed(async {
        let missing = ["mosquitto", "mosquitto_passwd"]
            .iter()
            .any(|tool| Command::new(tool).arg("--help").output().is_err());
        if missing {
            println!("skipped: mosquitto is not installed (apt-get install mosquitto)");
            return;
        }
        let dir = temp("passwords");
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        }
        let passwd = dir.join("passwd");
        let status = Command::new("mosquitto_passwd")
            .args(["-c", "-b"])
            .arg(&passwd)
            .args(["gateway", "s3cret"])
            .status()
            .expect("mosquitto_passwd runs");
        assert!(status.success());
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o644))
                .expect("chmod");
        }
        let mut answers = Vec::new();
        for broker in ["mosquitto", "petrel"] {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("port")
                .port();
            let conf = dir.join(format!("{broker}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "listener {port} 127.0.0.1\npersistence false\nallow_anonymous false\n\
                     password_file {}\n",
                    passwd.display()
                ),
            )
            .expect("write");
            let child = run_on(broker, &conf, &dir);
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            listening(addr).await;
            for password in ["s3cret", "guess"] {
                let mut connect = connect_packet("gateway-1", true, 0);
                connect.username = Some("gateway".to_owned());
                connect.password = Some(bytes::Bytes::copy_from_slice(password.as_bytes()));
                let (_, connack) = RawClient::connect_with(addr, connect).await;
                answers.push((broker, password, connack.reason_code));
            }
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        // Let in with the right password, refused with a wrong one, by
        // both. (Mosquitto 2.0 refuses with 0x05 "not authorised", Petrel
        // with 0x04 "bad user name or password", the code 3.1.1 has for
        // it: docs/migrating-from-mosquitto.md.)
        for (broker, password, code) in &answers {
            let let_in = *code == ReasonCode::Success;
            assert_eq!(
                let_in,
                *password == "s3cret",
                "{broker} with {password}: {answers:?}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

// Mosquitto 1.x's default listener: `bind_address` and options given
// before any `listener` line belong to the `port` listener, whichever
// comes first; with per_listener_settings, a per-listener password file
// cannot be merged into one for the broker, and the import says so (exit
// 1) rather than let one listener's users into another.
#[test]
fn the_default_listener_and_per_listener_password_files() {
    let pki = pki::Pki::new("import-default");
    let dir = temp("default");
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "certfile {}\nkeyfile {}\nport 8883\nbind_address 127.0.0.1\nallow_anonymous true\n",
            pki.path("server.pem").display(),
            pki.path("server.key").display(),
        ),
    )
    .expect("write");
    let out = dir.join("petrel.toml");
    let (status, notes) = import(&conf, &out);
    assert_eq!(status, 0, "{notes}");
    check_config(&out);
    let config = petrel::Config::load(&out).expect("parses");
    assert_eq!(config.listeners.len(), 1);
    assert_eq!(config.listeners[0].bind.to_string(), "127.0.0.1:8883");
    assert!(
        config.listeners[0].tls.is_some(),
        "TLS on the port listener"
    );

    std::fs::write(
        &conf,
        "per_listener_settings true\nlistener 1883 127.0.0.1\npassword_file /etc/mosquitto/a\n\
         listener 1884 127.0.0.1\nallow_anonymous false\n",
    )
    .expect("write");
    let (status, notes) = import(&conf, &out);
    assert_eq!(status, 1, "{notes}");
    assert!(notes.contains("per-listener password_file"), "{notes}");
    let _ = std::fs::remove_dir_all(&dir);
}
