//! Who may connect: user names and passwords from a password file written
//! by `petrel passwd`, wrong credentials refused (and slowed down), and
//! anonymous clients refused where they are not allowed.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use petrel::protocol::{Connect, ReasonCode};

const PETREL: &str = env!("CARGO_BIN_EXE_petrel");

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("petrel-auth-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Runs `petrel passwd ARGS`, the password on standard input.
fn passwd(args: &[&str], password: &str) -> std::process::Output {
    let mut child = Command::new(PETREL)
        .arg("passwd")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("petrel passwd runs");
    // `-D` reads nothing, and may have ended before the write.
    let _ = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes());
    child.wait_with_output().expect("petrel passwd ends")
}

fn add_user(file: &Path, user: &str, password: &str) {
    let output = passwd(&["--stdin", file.to_str().expect("path"), user], password);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn login(client_id: &str, username: Option<&str>, password: Option<&str>, v5: bool) -> Connect {
    let mut connect = if v5 {
        connect_v5(client_id, true, 0)
    } else {
        connect_packet(client_id, true, 0)
    };
    connect.username = username.map(str::to_owned);
    connect.password = password.map(|p| Bytes::copy_from_slice(p.as_bytes()));
    connect
}

async fn connack_code(broker: &TestBroker, connect: Connect) -> ReasonCode {
    RawClient::connect_with(broker.addr, connect)
        .await
        .1
        .reason_code
}

// A user added by `petrel passwd` logs in with the right password; a wrong
// password or an unknown user gets CONNACK 0x04 at 3.1.1 and 0x86 at 5.0;
// without a user name, where anonymous clients are refused, 0x05 / 0x87.
// Failures are counted.
#[tokio::test]
async fn password_file_logins() {
    timed(async {
        let dir = temp_dir("logins");
        let file = dir.join("passwd");
        add_user(&file, "alice", "correct horse");
        add_user(&file, "bob", "battery staple");
        let broker = TestBroker::with_config(petrel::Config {
            password_file: Some(file.clone()),
            allow_anonymous: Some(false),
            auth_failure_delay: 0,
            ..test_config()
        })
        .await;
        let ok = login("a", Some("alice"), Some("correct horse"), false);
        assert_eq!(connack_code(&broker, ok).await, ReasonCode::Success);
        let ok5 = login("b", Some("bob"), Some("battery staple"), true);
        assert_eq!(connack_code(&broker, ok5).await, ReasonCode::Success);
        let wrong = login("c", Some("alice"), Some("wrong"), false);
        assert_eq!(
            connack_code(&broker, wrong).await,
            ReasonCode::BadUserNameOrPassword
        );
        let unknown = login("d", Some("mallory"), Some("x"), true);
        assert_eq!(
            connack_code(&broker, unknown).await,
            ReasonCode::BadUserNameOrPassword
        );
        let anonymous = login("e", None, None, false);
        assert_eq!(
            connack_code(&broker, anonymous).await,
            ReasonCode::NotAuthorized
        );
        let anonymous5 = login("f", None, None, true);
        assert_eq!(
            connack_code(&broker, anonymous5).await,
            ReasonCode::NotAuthorized
        );
        assert_eq!(broker.broker.metrics().auth_failures.get(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

// Repeated failures from one address wait longer each time before the
// refusal (auth_failure_delay per recent failure).
#[tokio::test]
async fn repeated_failures_are_slowed_down() {
    timed(async {
        let dir = temp_dir("slow");
        let file = dir.join("passwd");
        add_user(&file, "alice", "correct horse");
        let broker = TestBroker::with_config(petrel::Config {
            password_file: Some(file),
            auth_failure_delay: 150,
            ..test_config()
        })
        .await;
        for failures in 1..=3u32 {
            let started = tokio::time::Instant::now();
            let wrong = login("x", Some("alice"), Some("guess"), false);
            assert_eq!(
                connack_code(&broker, wrong).await,
                ReasonCode::BadUserNameOrPassword
            );
            let waited = started.elapsed();
            assert!(
                waited >= Duration::from_millis(150) * failures,
                "failure {failures} refused after {waited:?}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

// `petrel passwd` adds, changes and (with -D) deletes users, rewriting the
// file; the broker reads only PHC hashes, never plain passwords.
#[test]
fn passwd_adds_changes_and_deletes() {
    let dir = temp_dir("passwd");
    let file = dir.join("passwd");
    let path = file.to_str().expect("path");
    let added = passwd(&["--stdin", path, "carol"], "one");
    assert_eq!(
        String::from_utf8_lossy(&added.stdout).trim(),
        "carol: added"
    );
    let changed = passwd(&["--stdin", path, "carol"], "two");
    assert_eq!(
        String::from_utf8_lossy(&changed.stdout).trim(),
        "carol: password changed"
    );
    let text = std::fs::read_to_string(&file).expect("file");
    assert!(text.starts_with("carol:$argon2id$"), "{text}");
    assert!(!text.contains("two"));
    let loaded = petrel::auth::password::PasswordFile::load(&file).expect("loads");
    assert!(loaded.verify("carol", b"two"));
    assert!(!loaded.verify("carol", b"one"));
    let deleted = passwd(&["-D", path, "carol"], "");
    assert!(deleted.status.success());
    let missing = passwd(&["-D", path, "carol"], "");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no such user"));
    let _ = std::fs::remove_dir_all(&dir);
}

// Broker::reload (SIGHUP) reads the password file again: a user added
// since can log in; a file that no longer parses leaves the one in force.
#[tokio::test]
async fn password_file_reload() {
    timed(async {
        let dir = temp_dir("reload");
        let file = dir.join("passwd");
        add_user(&file, "alice", "one");
        let broker = TestBroker::with_config(petrel::Config {
            password_file: Some(file.clone()),
            auth_failure_delay: 0,
            ..test_config()
        })
        .await;
        let bob = || login("b", Some("bob"), Some("two"), false);
        assert_eq!(
            connack_code(&broker, bob()).await,
            ReasonCode::BadUserNameOrPassword
        );
        add_user(&file, "bob", "two");
        assert!(broker.broker.reload().is_empty());
        assert_eq!(connack_code(&broker, bob()).await, ReasonCode::Success);
        std::fs::write(&file, "this is not a password file\n").expect("write");
        let errors = broker.broker.reload();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("password_file") && errors[0].contains("line 1"));
        assert_eq!(connack_code(&broker, bob()).await, ReasonCode::Success);
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

// A password file written by Mosquitto's own `mosquitto_passwd` (its
// default PBKDF2-SHA512 `$7$` lines and the older SHA-512 `$6$` ones) is
// read unchanged: each user gets in with their password and is refused
// (0x04 / 0x86) with another, at 3.1.1 and 5.0.
#[tokio::test]
async fn a_mosquitto_passwd_file_works_unchanged() {
    timed(async {
        if Command::new("mosquitto_passwd").arg("-h").output().is_err() {
            println!("skipped: mosquitto_passwd is not installed (apt-get install mosquitto)");
            return;
        }
        let dir = temp_dir("mosquitto-passwd");
        let file = dir.join("passwd");
        let users = [
            ("alice", "wonderland", "sha512-pbkdf2"),
            ("bob", "builder", "sha512"),
            ("carol", "singer", "sha512-pbkdf2"),
        ];
        for (index, (user, password, hash)) in users.iter().enumerate() {
            let mut command = Command::new("mosquitto_passwd");
            command.args(["-H", hash]);
            if index == 0 {
                command.arg("-c");
            }
            let status = command
                .arg("-b")
                .arg(&file)
                .args([user, password])
                .status()
                .expect("mosquitto_passwd runs");
            assert!(status.success());
        }
        let text = std::fs::read_to_string(&file).expect("read");
        assert!(
            text.contains("bob:$6$") && text.contains("alice:$7$"),
            "{text}"
        );
        let broker = TestBroker::with_config(petrel::Config {
            password_file: Some(file.clone()),
            // Refusals answered at once (the delay has its own test).
            auth_failure_delay: 0,
            ..test_config()
        })
        .await;
        for v5 in [false, true] {
            // 0x04 at 3.1.1 and 0x86 at 5.0 decode to the same code.
            let refused = ReasonCode::BadUserNameOrPassword;
            for (user, password, _) in users {
                let code =
                    connack_code(&broker, login("right", Some(user), Some(password), v5)).await;
                assert_eq!(code, ReasonCode::Success, "{user} v5={v5}");
                let code =
                    connack_code(&broker, login("wrong", Some(user), Some("guess"), v5)).await;
                assert_eq!(code, refused, "{user} v5={v5} with a wrong password");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

// password_rehash: a user with a mosquitto_passwd entry who logs in with
// the right password has it rewritten as argon2id with a SCRAM credential;
// a wrong password changes nothing, and others stay as they were.
#[tokio::test]
async fn password_rehash_moves_a_mosquitto_entry_to_argon2id() {
    timed(async {
        let dir = temp_dir("rehash");
        let file = dir.join("passwd");
        // Written by mosquitto_passwd 2.0: alice (secret1) with $7$,
        // bob (secret2) with $6$.
        std::fs::write(
            &file,
            "alice:$7$101$DbipAsw7ZzP/yRWK$icSzUwHxUgjPIDrEKjd7aKz3IKI4ce66V6KF6irs8Qv1FMW9UCqUovJkALZ49efK1QWhUTA4vX7/oRI8TdDiog==\n\
             bob:$6$GlDPl0N/XS55e+xj$l8PuiPfpZjNgVXtF+l8rs15PC8qpQU04z8uddagSH+j5CrgZIYkq1HSS1BpYRHS+IWwVzLIQNYYzjVkNgPS1QQ==\n",
        )
        .expect("write");
        let broker = TestBroker::with_config(petrel::Config {
            password_file: Some(file.clone()),
            password_rehash: true,
            auth_failure_delay: 0,
            ..test_config()
        })
        .await;
        let line_of = |user: &str| {
            std::fs::read_to_string(&file)
                .expect("read")
                .lines()
                .find(|line| line.starts_with(&format!("{user}:")))
                .map(str::to_owned)
                .unwrap_or_default()
        };
        let wrong = connack_code(&broker, login("a", Some("alice"), Some("guess"), false)).await;
        assert_eq!(wrong, ReasonCode::BadUserNameOrPassword);
        assert!(line_of("alice").starts_with("alice:$7$"));
        let right = connack_code(&broker, login("a", Some("alice"), Some("secret1"), true)).await;
        assert_eq!(right, ReasonCode::Success);
        eventually("alice's entry rewritten", || {
            let line = line_of("alice");
            line.starts_with("alice:$argon2id$") && line.contains(' ')
        })
        .await;
        assert!(line_of("bob").starts_with("bob:$6$"), "bob did not log in");
        let again = connack_code(&broker, login("b", Some("alice"), Some("secret1"), false)).await;
        assert_eq!(again, ReasonCode::Success);
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}
