//! The configuration: one TOML file, every key optional with its default
//! from a named constant, unknown keys refused. `Config::validate` checks
//! what serde cannot and names the key (and its line) that is wrong.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// Default MQTT port.
pub const DEFAULT_PORT: u16 = 1883;
/// Default cap on simultaneous client connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 100_000;
/// Default seconds a new connection has to send CONNECT.
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 10;
/// Default largest packet accepted, in bytes, fixed header included.
pub const DEFAULT_MAX_PACKET_SIZE: usize = 1024 * 1024;
/// Default messages queued per session (online backlog or offline queue).
pub const DEFAULT_MAX_QUEUED_MESSAGES: usize = 1000;
/// Default payload bytes queued per session.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 16 * 1024 * 1024;
/// Default unacknowledged outbound QoS 1/2 messages per client.
pub const DEFAULT_MAX_INFLIGHT: usize = 32;
/// Default most levels in a topic name or filter.
pub const DEFAULT_MAX_TOPIC_LEVELS: usize = 128;
/// Default longest topic name or filter, in bytes.
pub const DEFAULT_MAX_TOPIC_LENGTH: usize = 4096;
/// Default most retained messages kept.
pub const DEFAULT_MAX_RETAINED_MESSAGES: usize = 100_000;
/// Default most payload bytes of all retained messages together.
pub const DEFAULT_MAX_RETAINED_BYTES: usize = 256 * 1024 * 1024;
/// Default seconds between `$SYS` updates.
pub const DEFAULT_SYS_INTERVAL_SECS: u64 = 10;
/// Default seconds a shutdown waits for connections to close.
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECS: u64 = 5;
/// Default log level.
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// One TCP listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Address and port to listen on, e.g. `"0.0.0.0:1883"` or `"[::1]:1883"`.
    pub bind: SocketAddr,
}

/// The broker's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// TCP listeners (`[[listener]]` tables). Empty means the defaults,
    /// 127.0.0.1:1883 and [::1]:1883.
    #[serde(rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    /// Whether clients may connect without credentials. Unset: allowed on
    /// loopback listeners only; a listener on any other address refuses to
    /// start until this is set explicitly (or authentication is configured).
    pub allow_anonymous: Option<bool>,
    /// Most simultaneous client connections; the excess is closed.
    pub max_connections: usize,
    /// Seconds a new connection has to send CONNECT.
    pub connect_timeout: u64,
    /// Largest packet accepted, in bytes, fixed header included.
    pub max_packet_size: usize,
    /// Messages queued per session before new ones are dropped.
    pub max_queued_messages: usize,
    /// Payload bytes queued per session before new messages are dropped.
    pub max_queued_bytes: usize,
    /// Whether QoS 0 messages are queued for offline persistent sessions.
    pub queue_qos0: bool,
    /// Unacknowledged outbound QoS 1/2 messages per client.
    pub max_inflight: usize,
    /// Most levels in a topic name or filter.
    pub max_topic_levels: usize,
    /// Longest topic name or filter, in bytes.
    pub max_topic_length: usize,
    /// Most retained messages kept; new topics beyond it are not retained.
    pub max_retained_messages: usize,
    /// Most payload bytes of all retained messages together.
    pub max_retained_bytes: usize,
    /// Seconds between `$SYS` updates; 0 turns them off.
    pub sys_interval: u64,
    /// Seconds a shutdown waits for connections to close.
    pub shutdown_timeout: u64,
    /// Log level (`error`, `warn`, `info`, `debug`, `trace`); `RUST_LOG`
    /// overrides it.
    pub log_level: String,
    /// Sets TCP_NODELAY on client sockets.
    pub tcp_nodelay: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listeners: Vec::new(),
            allow_anonymous: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT_SECS,
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            max_queued_messages: DEFAULT_MAX_QUEUED_MESSAGES,
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
            queue_qos0: false,
            max_inflight: DEFAULT_MAX_INFLIGHT,
            max_topic_levels: DEFAULT_MAX_TOPIC_LEVELS,
            max_topic_length: DEFAULT_MAX_TOPIC_LENGTH,
            max_retained_messages: DEFAULT_MAX_RETAINED_MESSAGES,
            max_retained_bytes: DEFAULT_MAX_RETAINED_BYTES,
            sys_interval: DEFAULT_SYS_INTERVAL_SECS,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT_SECS,
            log_level: DEFAULT_LOG_LEVEL.to_owned(),
            tcp_nodelay: true,
        }
    }
}

/// A configuration that cannot be used, naming the key and, when it came
/// from a file, the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key at fault (dotted for nested keys), if one is known.
    pub key: Option<String>,
    /// 1-based line in the file, if known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.key, self.line) {
            (Some(key), Some(line)) => write!(f, "line {line}: `{key}`: {}", self.message),
            (Some(key), None) => write!(f, "`{key}`: {}", self.message),
            (None, Some(line)) => write!(f, "line {line}: {}", self.message),
            (None, None) => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn key(key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            key: Some(key.to_owned()),
            line: None,
            message: message.into(),
        }
    }
}

/// The listeners used when none is configured: loopback only.
pub fn default_listeners() -> Vec<ListenerConfig> {
    ["127.0.0.1", "[::1]"]
        .iter()
        .filter_map(|host| format!("{host}:{DEFAULT_PORT}").parse().ok())
        .map(|bind| ListenerConfig { bind })
        .collect()
}

impl Config {
    /// Parses TOML text and validates it.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|error| {
            let line = error
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            ConfigError {
                key: line.and_then(|line| key_on_line(text, line)),
                line,
                message: error.message().trim_end().to_owned(),
            }
        })?;
        config.validate().map_err(|mut error| {
            if let Some(key) = &error.key {
                error.line = line_of_key(text, key);
            }
            error
        })?;
        Ok(config)
    }

    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError {
            key: None,
            line: None,
            message: format!("cannot read {}: {error}", path.display()),
        })?;
        Config::from_toml(&text)
    }

    /// Checks the values serde accepted but Petrel cannot run with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("max_connections", self.max_connections),
            ("max_queued_messages", self.max_queued_messages),
            ("max_queued_bytes", self.max_queued_bytes),
            ("max_inflight", self.max_inflight),
            ("max_topic_levels", self.max_topic_levels),
            ("max_topic_length", self.max_topic_length),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::key(key, "must be at least 1"));
            }
        }
        if self.max_inflight > usize::from(u16::MAX) {
            return Err(ConfigError::key("max_inflight", "must be at most 65535"));
        }
        // Smallest useful packet: a PUBLISH with a one byte topic.
        if self.max_packet_size < 16
            || self.max_packet_size > crate::protocol::PROTOCOL_MAX_PACKET_SIZE
        {
            return Err(ConfigError::key(
                "max_packet_size",
                format!(
                    "must be between 16 and {} bytes",
                    crate::protocol::PROTOCOL_MAX_PACKET_SIZE
                ),
            ));
        }
        if self.connect_timeout == 0 {
            return Err(ConfigError::key(
                "connect_timeout",
                "must be at least 1 second",
            ));
        }
        if self.log_level.parse::<tracing::Level>().is_err() {
            return Err(ConfigError::key(
                "log_level",
                "must be one of error, warn, info, debug, trace",
            ));
        }
        self.check_anonymous_access(&self.listener_addresses())
    }

    /// The listeners to open: the configured ones, or the defaults.
    pub fn listener_addresses(&self) -> Vec<SocketAddr> {
        if self.listeners.is_empty() {
            default_listeners().iter().map(|l| l.bind).collect()
        } else {
            self.listeners.iter().map(|l| l.bind).collect()
        }
    }

    /// Secure by default: anonymous clients on a non-loopback address need
    /// an explicit `allow_anonymous = true`.
    pub fn check_anonymous_access(&self, addresses: &[SocketAddr]) -> Result<(), ConfigError> {
        if self.allow_anonymous.is_some() {
            return Ok(());
        }
        match addresses.iter().find(|address| !address.ip().is_loopback()) {
            Some(address) => Err(ConfigError::key(
                "allow_anonymous",
                format!(
                    "listener {address} is not on a loopback address and no authentication \
                     is configured; set `allow_anonymous = true` to let anyone who can reach \
                     it connect without credentials"
                ),
            )),
            None => Ok(()),
        }
    }

    /// `connect_timeout` as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout)
    }

    /// `shutdown_timeout` as a duration.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout)
    }
}

/// The key assigned on 1-based `line` of `text`, if the line is `key = ...`.
fn key_on_line(text: &str, line: usize) -> Option<String> {
    let (key, _) = text.lines().nth(line.checked_sub(1)?)?.split_once('=')?;
    let key = key.trim();
    (!key.is_empty() && !key.starts_with('[')).then(|| key.to_owned())
}

/// The 1-based line where `key` (a top-level key) is set in `text`.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            let trimmed = line.trim_start();
            trimmed
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|index| index + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_defaults() {
        let config = Config::from_toml("").unwrap();
        assert_eq!(config, Config::default());
        let addresses = config.listener_addresses();
        assert_eq!(addresses.len(), 2);
        assert!(addresses
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 1883));
    }

    #[test]
    fn unknown_key_is_refused_with_its_line() {
        let error = Config::from_toml("max_inflight = 4\nmax_inflite = 5\n").unwrap_err();
        assert_eq!(error.line, Some(2));
        assert!(error.message.contains("max_inflite"), "{error}");
    }

    #[test]
    fn invalid_value_names_key_and_line() {
        let error = Config::from_toml("sys_interval = 1\n\nmax_inflight = 0\n").unwrap_err();
        assert_eq!(error.key.as_deref(), Some("max_inflight"));
        assert_eq!(error.line, Some(3));
        assert_eq!(
            error.to_string(),
            "line 3: `max_inflight`: must be at least 1"
        );
        let error = Config::from_toml("max_packet_size = \"big\"\n").unwrap_err();
        assert_eq!(error.line, Some(1));
    }

    #[test]
    fn non_loopback_listener_needs_an_explicit_choice() {
        let text = "[[listener]]\nbind = \"0.0.0.0:1883\"\n";
        let error = Config::from_toml(text).unwrap_err();
        assert_eq!(error.key.as_deref(), Some("allow_anonymous"));
        assert!(error.message.contains("allow_anonymous = true"));
        let config = Config::from_toml(&format!("allow_anonymous = true\n{text}")).unwrap();
        assert_eq!(config.listener_addresses()[0].port(), 1883);
        assert!(Config::from_toml(&format!("allow_anonymous = false\n{text}")).is_ok());
    }
}
