//! SCRAM-SHA-256 over MQTT 5 enhanced authentication, against the password
//! file: the password never crosses the wire, and the client checks the
//! broker too (server-final).

mod common;

use bytes::Bytes;
use common::*;
use petrel::auth::password::PasswordFile;
use petrel::auth::scram;
use petrel::protocol::{
    Auth, AuthProperties, Connect, ConnectProperties, Packet, ProtocolVersion, ReasonCode,
};

struct ScramBroker {
    broker: TestBroker,
    dir: std::path::PathBuf,
}

impl Drop for ScramBroker {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A broker with a password file holding alice; `name` keeps each test's
/// files apart (tests of one binary can share a process).
async fn scram_broker(name: &str) -> ScramBroker {
    let dir = std::env::temp_dir().join(format!("petrel-scram-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("passwd");
    let mut passwords = PasswordFile::default();
    passwords.set("alice", b"correct horse").expect("set");
    passwords.save(&path).expect("save");
    let broker = TestBroker::with_config(petrel::Config {
        password_file: Some(path),
        allow_anonymous: Some(false),
        ..test_config()
    })
    .await;
    ScramBroker { broker, dir }
}

/// Runs SCRAM-SHA-256 as `user` with `password`; the CONNACK, and the
/// server-final message expected had the password been right.
async fn scram_login(
    broker: &TestBroker,
    user: &str,
    password: &str,
) -> (RawClient, petrel::protocol::ConnAck, String) {
    scram_login_as(broker, user, password, None).await
}

/// [`scram_login`] with a user name in CONNECT too.
async fn scram_login_as(
    broker: &TestBroker,
    user: &str,
    password: &str,
    connect_username: Option<&str>,
) -> (RawClient, petrel::protocol::ConnAck, String) {
    let mut client = RawClient::open(broker.addr).await;
    client.version = ProtocolVersion::V5;
    let client_first_bare = format!("n={user},r=fyko+d2lbbFgONRv9qkxdawL");
    let connect = Connect {
        properties: ConnectProperties {
            authentication_method: Some(scram::METHOD.to_owned()),
            authentication_data: Some(Bytes::from(format!("n,,{client_first_bare}"))),
            ..ConnectProperties::default()
        },
        username: connect_username.map(str::to_owned),
        ..connect_v5("scram-client", true, 0)
    };
    client.send(&Packet::Connect(Box::new(connect))).await;
    let server_first = match client.recv().await {
        Packet::Auth(auth) => {
            assert_eq!(auth.reason_code, ReasonCode::ContinueAuthentication);
            String::from_utf8(auth.properties.authentication_data.expect("data").to_vec())
                .expect("text")
        }
        other => panic!("expected AUTH, got {other:?}"),
    };
    assert!(
        server_first.starts_with("r=fyko+d2lbbFgONRv9qkxdawL"),
        "{server_first}"
    );
    let (client_final, server_final) =
        scram::client_final(password.as_bytes(), &client_first_bare, &server_first)
            .expect("a well-formed server-first");
    client
        .send(&Packet::Auth(Auth {
            reason_code: ReasonCode::ContinueAuthentication,
            properties: AuthProperties {
                authentication_method: Some(scram::METHOD.to_owned()),
                authentication_data: Some(Bytes::from(client_final)),
                ..AuthProperties::default()
            },
        }))
        .await;
    match client.recv().await {
        Packet::ConnAck(connack) => (client, connack, server_final),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

// The right password: CONNACK 0x00 carrying server-final, which proves the
// broker knows the user's keys.
#[tokio::test]
async fn scram_sha_256_logs_in() {
    timed(async {
        let scram = scram_broker("login").await;
        let (mut client, connack, expected) =
            scram_login(&scram.broker, "alice", "correct horse").await;
        assert_eq!(connack.reason_code, ReasonCode::Success);
        assert_eq!(
            connack.properties.authentication_method.as_deref(),
            Some(scram::METHOD)
        );
        assert_eq!(
            connack.properties.authentication_data,
            Some(Bytes::from(expected))
        );
        assert!(client.ping_barrier().await.is_empty());
    })
    .await;
}

// A wrong password, or an unknown user (who gets a challenge all the same):
// CONNACK 0x86, connection closed.
#[tokio::test]
async fn scram_sha_256_refuses_a_wrong_password() {
    timed(async {
        let scram = scram_broker("wrong").await;
        for (user, password) in [("alice", "wrong"), ("mallory", "anything")] {
            let (mut client, connack, _) = scram_login(&scram.broker, user, password).await;
            assert_eq!(connack.reason_code, ReasonCode::BadUserNameOrPassword);
            client.expect_closed().await;
        }
    })
    .await;
}

// A CONNECT that also names the user (as many clients send it) logs in
// when the name is the one SCRAM proved, and is refused when it is another.
#[tokio::test]
async fn scram_with_a_user_name_in_connect() {
    timed(async {
        let scram = scram_broker("named").await;
        let (_client, connack, _) =
            scram_login_as(&scram.broker, "alice", "correct horse", Some("alice")).await;
        assert_eq!(connack.reason_code, ReasonCode::Success);
        let (mut client, connack, _) =
            scram_login_as(&scram.broker, "alice", "correct horse", Some("bob")).await;
        assert_eq!(connack.reason_code, ReasonCode::BadUserNameOrPassword);
        client.expect_closed().await;
    })
    .await;
}
