//! Authentication in the handshake: a user name and password checked
//! against the password file on the blocking pool, a few at a time; an
//! enhanced authentication exchange (AUTH back and forth until the method
//! decides); and a wrong login refused after a wait that grows with the
//! recent failures from its address.

use tokio::io::{AsyncRead, AsyncWrite};

use super::decide::{Login, Refusal};
use crate::auth::AuthStep;
use crate::connection::Incoming;
use crate::connection::{Connection, Outbox};
use crate::context::Context;
use crate::protocol::{Auth, AuthProperties, Connect, Packet, ReasonCode};
use crate::session::Origin;

/// How long failed logins from an address are remembered.
pub const LOGIN_FAILURE_MEMORY: std::time::Duration = std::time::Duration::from_secs(60);
/// The longest wait before a failed login is refused.
const MAX_LOGIN_DELAY: std::time::Duration = std::time::Duration::from_secs(10);

/// Authenticates the client: a user name with a password against the
/// password file (unless an authentication method checks instead), an
/// enhanced authentication exchange, and the user the method proved must
/// be the one CONNECT names.
pub(super) async fn authenticate<R, W>(
    context: &Context,
    connection: &mut Connection<R, W>,
    outbox: &mut Outbox,
    connect: &Connect,
    client_id: &str,
    origin: &Origin,
) -> Result<Login, Refusal>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let password_login = connect.properties.authentication_method.is_none();
    if let (Some(username), Some(passwords), true) =
        (&connect.username, context.auth.passwords(), password_login)
    {
        let user = username.clone();
        let password = connect.password.clone().unwrap_or_default();
        // Hashing is slow on purpose: off the async threads, and a few at
        // a time.
        let permit = context.auth.password_checks.acquire().await;
        let verified = tokio::task::spawn_blocking(move || passwords.verify(&user, &password))
            .await
            .unwrap_or(false);
        drop(permit);
        if !verified {
            return Err(refuse_login(context, origin.peer.ip(), username).await);
        }
        rehash(
            context,
            username,
            connect.password.clone().unwrap_or_default(),
        );
    }
    let Some(name) = &connect.properties.authentication_method else {
        return Ok(Login::default());
    };
    let login = exchange(context, connection, outbox, connect, name, client_id).await?;
    if let (Some(proved), Some(claimed)) = (&login.user, &connect.username) {
        if proved != claimed {
            // The CONNECT names someone other than who authenticated.
            return Err(refuse_login(context, origin.peer.ip(), claimed).await);
        }
    }
    Ok(login)
}

/// Runs an enhanced authentication exchange (section 4.12): AUTH 0x18
/// back and forth until the method decides.
async fn exchange<R, W>(
    context: &Context,
    connection: &mut Connection<R, W>,
    outbox: &mut Outbox,
    connect: &Connect,
    name: &str,
    client_id: &str,
) -> Result<Login, Refusal>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let Some(method) = context.auth.method(name).cloned() else {
        // [MQTT-4.12.0-1] (v5.0): a method this broker does not know.
        tracing::info!(method = %name, "unknown authentication method");
        return Err(Refusal::with(
            ReasonCode::BadAuthenticationMethod,
            "unknown authentication method; refusing",
            false,
        ));
    };
    let mut exchange = method.start(client_id, connect.username.as_deref());
    let mut data = connect.properties.authentication_data.clone();
    loop {
        let out = match exchange.step(data.as_deref()) {
            AuthStep::Success(out) => {
                let user = exchange.username();
                return Ok(Login {
                    method: Some((method, out)),
                    user,
                });
            }
            AuthStep::Failure(reason_code) => {
                tracing::info!(method = %name, ?reason_code, "authentication failed");
                return Err(Refusal::with(
                    reason_code,
                    "authentication failed; refusing",
                    false,
                ));
            }
            AuthStep::Continue(out) => out,
        };
        // [MQTT-4.12.0-2] (v5.0): 0x18, and the method named
        // [MQTT-4.12.0-5] (v5.0).
        outbox.send_or_log(Packet::Auth(Auth {
            reason_code: ReasonCode::ContinueAuthentication,
            properties: AuthProperties {
                authentication_method: Some(name.to_owned()),
                authentication_data: out,
                ..AuthProperties::default()
            },
        }));
        let timeout = context.core.config().connect_timeout();
        let next = tokio::time::timeout(timeout, connection.read_packet(outbox, None)).await;
        data = match next {
            Ok(Incoming::Packet(Packet::Auth(auth)))
                if auth.reason_code == ReasonCode::ContinueAuthentication
                    && auth.properties.authentication_method.as_deref() == Some(name) =>
            {
                auth.properties.authentication_data
            }
            // [MQTT-3.1.2-30] (v5.0): only AUTH (or DISCONNECT) until
            // CONNACK, with the same method.
            Ok(Incoming::Packet(_) | Incoming::Malformed(_)) => {
                return Err(Refusal::with(
                    ReasonCode::ProtocolError,
                    "not an AUTH continuing the exchange; refusing",
                    true,
                ));
            }
            Ok(_) | Err(_) => {
                return Err(Refusal::silent("authentication exchange abandoned", false))
            }
        };
    }
}

/// Refuses a login with a wrong user name or password: CONNACK 0x86 (0x04
/// at 3.1.1), after a wait that grows with the recent failures from the
/// same address, so guessing passwords is slow.
async fn refuse_login(context: &Context, address: std::net::IpAddr, username: &str) -> Refusal {
    context.core.metrics.auth_failures.increment();
    let now = tokio::time::Instant::now();
    let failures = {
        let mut entry = context
            .auth
            .login_failures
            .entry(address)
            .or_insert((0, now));
        if now.duration_since(entry.1) > LOGIN_FAILURE_MEMORY {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        entry.0
    };
    tracing::info!(username, failures, "wrong user name or password");
    let delay = std::time::Duration::from_millis(context.core.config().auth_failure_delay)
        .saturating_mul(failures)
        .min(MAX_LOGIN_DELAY);
    tokio::time::sleep(delay).await;
    Refusal::with(
        ReasonCode::BadUserNameOrPassword,
        "wrong user name or password; refusing",
        false,
    )
}

/// With `password_rehash`, rewrites `user`'s `mosquitto_passwd`-format
/// entry as argon2id with a SCRAM credential, now that their password is
/// known to be right: off the login's path, one rewrite at a time, the
/// file read again first (it may have changed), then put in force.
fn rehash(context: &Context, user: &str, password: bytes::Bytes) {
    let config = context.core.config();
    let (true, Some(path)) = (config.password_rehash, config.password_file.clone()) else {
        return;
    };
    if !context
        .auth
        .passwords()
        .is_some_and(|file| file.is_foreign(user))
    {
        return;
    }
    let user = user.to_owned();
    let passwords = std::sync::Arc::clone(&context.auth.passwords);
    let lock = std::sync::Arc::clone(&context.auth.rehashing);
    tokio::task::spawn_blocking(move || {
        let _one = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let rewritten = crate::auth::password::PasswordFile::load(&path).and_then(|mut file| {
            // The file as it is now: its entry may have changed since the
            // login was checked (a new password not yet reloaded).
            if !file.is_foreign(&user) || !file.verify(&user, &password) {
                return Ok(None);
            }
            file.set(&user, &password)?;
            file.save(&path)?;
            Ok(Some(file))
        });
        match rewritten {
            Ok(Some(file)) => {
                *passwords
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some(std::sync::Arc::new(file));
                tracing::info!(
                    user,
                    "password_rehash: the entry is argon2id now, with SCRAM"
                );
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(user, %error, "password_rehash: the entry stays as it was")
            }
        }
    });
}
