//! `[admin]`: the admin listener (metrics, health, the JSON API and the
//! dashboard), off unless `bind` is set.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, TlsConfig};

/// Most admin connections open at once, by default.
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: usize = 64;
/// Largest admin request (headers and body), by default.
pub const DEFAULT_ADMIN_MAX_REQUEST_BYTES: usize = 64 * 1024;
/// How long an admin request may take to arrive, and a kept-alive
/// connection may stay idle, by default.
pub const DEFAULT_ADMIN_REQUEST_TIMEOUT_MS: u64 = 10_000;
/// The most admin connections one may allow.
pub const MAX_ADMIN_CONNECTIONS: usize = 100_000;
/// The smallest `max_request_bytes`.
pub const MIN_REQUEST_BYTES: usize = 8192;
/// The shortest bearer token accepted.
pub const MIN_TOKEN_LENGTH: usize = 16;

/// The admin listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Where it listens (`127.0.0.1:9883` in the packaged configuration);
    /// off when unset.
    pub bind: Option<SocketAddr>,
    /// A file holding the bearer token requests must carry
    /// (`Authorization: Bearer <token>`). Needed off loopback unless
    /// client certificates authenticate.
    pub token_file: Option<PathBuf>,
    /// Whether the read-only endpoints (GET) answer without the token.
    /// Actions (POST, DELETE) never do.
    pub public_read: bool,
    /// Most connections open at once; more are closed as they come, and
    /// counted.
    pub max_connections: usize,
    /// Largest request, headers and body, in bytes.
    pub max_request_bytes: usize,
    /// How long a request may take to arrive (and a kept-alive
    /// connection may wait for the next), in milliseconds.
    pub request_timeout_ms: u64,
    /// HTTPS, like a listener's `[listener.tls]`; with `ca` and
    /// `require_certificate = true`, a client certificate signed by `ca`
    /// authenticates on its own.
    pub tls: Option<TlsConfig>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            bind: None,
            token_file: None,
            public_read: false,
            max_connections: DEFAULT_ADMIN_MAX_CONNECTIONS,
            max_request_bytes: DEFAULT_ADMIN_MAX_REQUEST_BYTES,
            request_timeout_ms: DEFAULT_ADMIN_REQUEST_TIMEOUT_MS,
            tls: None,
        }
    }
}

impl AdminConfig {
    /// Whether client certificates authenticate (every connection has
    /// presented one signed by the CA).
    pub fn certificates_authenticate(&self) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|tls| tls.ca.is_some() && tls.require_certificate)
    }

    /// Checks what serde cannot: the bounds, and that an admin listener
    /// off loopback authenticates.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("admin.max_connections", self.max_connections),
            ("admin.max_request_bytes", self.max_request_bytes),
            (
                "admin.request_timeout_ms",
                usize::try_from(self.request_timeout_ms).unwrap_or(usize::MAX),
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::key(key, "must be at least 1"));
            }
        }
        if self.max_connections > MAX_ADMIN_CONNECTIONS {
            return Err(ConfigError::key(
                "admin.max_connections",
                format!("must be at most {MAX_ADMIN_CONNECTIONS}"),
            ));
        }
        if self.max_request_bytes < MIN_REQUEST_BYTES {
            return Err(ConfigError::key(
                "admin.max_request_bytes",
                format!("must be at least {MIN_REQUEST_BYTES} (the HTTP parser's smallest buffer)"),
            ));
        }
        if let Some(tls) = &self.tls {
            if tls.require_certificate && tls.ca.is_none() {
                return Err(ConfigError::key(
                    "admin.tls.ca",
                    "`require_certificate = true` needs the CA that signs client certificates",
                ));
            }
            if tls.use_identity_as_username {
                return Err(ConfigError::key(
                    "admin.tls.use_identity_as_username",
                    "has no meaning for the admin listener",
                ));
            }
        }
        let Some(bind) = self.bind else {
            return Ok(());
        };
        if !bind.ip().is_loopback()
            && self.token_file.is_none()
            && !self.certificates_authenticate()
        {
            return Err(ConfigError::key(
                "admin.bind",
                format!(
                    "{bind} is not a loopback address: the admin listener there needs \
                     `admin.token_file`, or `[admin.tls]` with `ca` and \
                     `require_certificate = true`"
                ),
            ));
        }
        Ok(())
    }
}

/// The admin token: read from `path`, or, if there is no such file yet,
/// made (24 random bytes from the operating system, hex) and written
/// there, readable by its owner only.
pub fn token_or_new(path: &std::path::Path) -> Result<String, String> {
    if path.exists() {
        return read_token(path);
    }
    use password_hash::rand_core::{OsRng, RngCore};
    use std::io::Write;
    let mut bytes = [0u8; 24];
    OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|error| format!("no random bytes for a token: {error}"))?;
    let token: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    // Written whole beside it, then linked into place: a crash leaves no
    // short token file, and of two brokers starting at once one makes
    // the file and the other reads it.
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{}.new", std::process::id()));
    let temporary = std::path::PathBuf::from(name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options
        .open(&temporary)
        .and_then(|mut file| {
            file.write_all(format!("{token}\n").as_bytes())?;
            file.sync_all()
        })
        .and_then(|()| std::fs::hard_link(&temporary, path));
    let _ = std::fs::remove_file(&temporary);
    match written {
        Ok(()) => {
            tracing::info!(path = %path.display(), "admin token made and written");
            Ok(token)
        }
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => read_token(path),
        Err(error) => Err(format!("cannot write {}: {error}", path.display())),
    }
}

/// Reads the bearer token from `path`: the file's first line, which must
/// be at least [`MIN_TOKEN_LENGTH`] characters.
pub fn read_token(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "the admin token file is readable by others than its owner (chmod 600 it)");
        }
    }
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.chars().count() < MIN_TOKEN_LENGTH {
        return Err(format!(
            "{}: the token must be at least {MIN_TOKEN_LENGTH} characters on the first line",
            path.display()
        ));
    }
    Ok(token)
}
