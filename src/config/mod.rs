//! The configuration: one TOML file, every key optional with its default
//! from a named constant, unknown keys refused. `Config::validate` checks
//! what serde cannot and names the key (and its line) that is wrong.

use error::{key_at, line_of_key};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod admin;
mod bridge;
mod error;
mod listener;

pub use admin::{read_token, token_or_new, AdminConfig};
pub use bridge::{BridgeConfig, BridgeProtocol, BridgeTlsConfig, Direction, TopicRule};
pub use error::ConfigError;
pub use listener::{default_listeners, ListenerConfig, TlsConfig, WebSocketConfig};

/// Default MQTT port.
pub const DEFAULT_PORT: u16 = 1883;
/// Default wait, per recent failure from one address, before a failed
/// login is refused, in milliseconds.
pub const DEFAULT_AUTH_FAILURE_DELAY_MS: u64 = 1000;
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
/// Default cap on the session expiry interval a client may ask for, in
/// seconds: none (0xFFFFFFFF, a session that never expires).
pub const DEFAULT_MAX_SESSION_EXPIRY_INTERVAL: u32 = u32::MAX;
/// Default most subscriptions one client may hold.
pub const DEFAULT_MAX_SUBSCRIPTIONS_PER_CLIENT: usize = 10_000;
/// Default Receive Maximum announced to MQTT 5 clients: inbound QoS 2
/// messages a client may have unacknowledged (PUBREL not yet received).
pub const DEFAULT_RECEIVE_MAXIMUM: u16 = 1024;
/// Default Topic Alias Maximum announced to MQTT 5 clients.
pub const DEFAULT_TOPIC_ALIAS_MAXIMUM: u16 = 64;
/// Default prefix of the Response Information sent to MQTT 5 clients that
/// ask for it; the client id is appended.
pub const DEFAULT_RESPONSE_INFORMATION: &str = "response/";

/// Default directory of the durable store.
pub const DEFAULT_DATA_DIR: &str = "./data";
/// Default milliseconds between syncs of the store with `durability =
/// "periodic"`.
pub const DEFAULT_FLUSH_INTERVAL_MS: u64 = 1000;
/// Default bytes of memory the store keeps of its file's pages: enough
/// for the interior of its trees and the pages a write batch dirties; the
/// rest is read from the file (the kernel's page cache) when needed.
pub const DEFAULT_STORE_CACHE_BYTES: usize = 32 * 1024 * 1024;
/// Largest `worker_threads` accepted.
pub const MAX_WORKER_THREADS: usize = 1024;
/// Default `hibernate_after_ms`.
pub const DEFAULT_HIBERNATE_AFTER_MS: u64 = 2000;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One human-readable line per event; without the timestamp under
    /// systemd's journal (`JOURNAL_STREAM` set), which adds its own.
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, target, message and the
    /// event's and its connection's fields.
    Json,
}

/// When the store's writes reach the disk (docs/persistence.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Before a QoS 1/2 PUBLISH, SUBSCRIBE or UNSUBSCRIBE is acknowledged
    /// (group commit: the writes of many clients share one sync).
    #[default]
    Sync,
    /// Every `flush_interval_ms`; a crash loses what came since.
    Periodic,
    /// Only at a clean shutdown (and once a minute, to bound the file).
    None,
}

/// How one member of a shared subscription group is chosen for a message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SharedStrategy {
    /// Each member in turn.
    #[default]
    RoundRobin,
    /// A member picked at random.
    Random,
    /// The same member while it stays connected.
    Sticky,
}

/// Sends MQTT 5 clients to another server (CONNACK or DISCONNECT reason
/// codes 0x9C / 0x9D with a Server Reference).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectConfig {
    /// The server to use instead, e.g. `"broker2.example.com:1883"`.
    pub server_reference: String,
    /// 0x9D Server moved (true) or 0x9C Use another server (false).
    #[serde(default)]
    pub permanent: bool,
    /// Refuse new connections with the redirect (true), or only send it to
    /// connected clients when the broker shuts down (false).
    #[serde(default)]
    pub on_connect: bool,
}

/// The broker's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// TCP listeners (`[[listener]]` tables). Empty means the defaults,
    /// `127.0.0.1:1883` and `[::1]:1883`.
    #[serde(rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    /// Whether clients may connect without credentials. Unset: allowed on
    /// loopback listeners only; a listener on any other address refuses to
    /// start until this is set explicitly (or authentication is configured).
    pub allow_anonymous: Option<bool>,
    /// A password file (`petrel passwd` writes it): clients that give a
    /// user name must give its password.
    pub password_file: Option<std::path::PathBuf>,
    /// An ACL file in Mosquitto's syntax: what each client may publish and
    /// receive (everything is denied that it does not allow).
    pub acl_file: Option<std::path::PathBuf>,
    /// Milliseconds a failed login's refusal waits per recent failure from
    /// the same address (at most 10 s); 0: no wait.
    pub auth_failure_delay: u64,
    /// Whether a user whose password file entry is in one of
    /// `mosquitto_passwd`'s forms has it rewritten as argon2id (with a
    /// SCRAM-SHA-256 credential) at their next successful login; the
    /// broker must be able to write the file.
    pub password_rehash: bool,
    /// Most simultaneous client connections; the excess is closed.
    pub max_connections: usize,
    /// Most simultaneous connections from one client address (behind a
    /// load balancer with the PROXY protocol, the address it names); 0:
    /// only `max_connections` applies.
    pub max_connections_per_address: usize,
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
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// Sets TCP_NODELAY on client sockets.
    pub tcp_nodelay: bool,
    /// Milliseconds a plain TCP connection may sit idle (nothing read,
    /// written or delivered, nothing waiting to be sent) before it
    /// hibernates: it waits without a task of its own until its socket,
    /// its inbox or its keep-alive deadline wakes it; 0: never.
    pub hibernate_after_ms: u64,
    /// Threads of the runtime that serves connections; 0: one per core.
    pub worker_threads: usize,
    /// Longest session expiry interval granted, in seconds; 4294967295
    /// means sessions that never expire may be kept.
    pub max_session_expiry_interval: u32,
    /// Longest keep-alive accepted, in seconds; a longer one (or 0) is
    /// replaced by this, told to MQTT 5 clients as Server Keep Alive.
    /// 65535 leaves every client's choice alone.
    pub max_keep_alive: u16,
    /// Receive Maximum announced to MQTT 5 clients.
    pub receive_maximum: u16,
    /// PUBLISH packets per second one client may send (0: no limit).
    pub max_publish_rate: u32,
    /// Payload bytes per second one client may publish (0: no limit).
    pub max_publish_bytes_rate: u64,
    /// Most subscriptions one client may hold; more are refused (SUBACK
    /// 0x97 Quota exceeded, 0x80 at 3.1.1).
    pub max_subscriptions_per_client: usize,
    /// Topic Alias Maximum announced to MQTT 5 clients (0: none).
    pub topic_alias_maximum: u16,
    /// Whether the broker gives topics aliases when sending to MQTT 5
    /// clients that announced a Topic Alias Maximum.
    pub server_topic_alias: bool,
    /// Highest QoS served (0, 1 or 2).
    pub max_qos: u8,
    /// Whether retained messages are served.
    pub retain_available: bool,
    /// Whether wildcard subscriptions are allowed.
    pub wildcard_subscriptions: bool,
    /// Whether MQTT 5 subscription identifiers are allowed.
    pub subscription_identifiers: bool,
    /// Whether `$share/{group}/{filter}` subscriptions are allowed.
    pub shared_subscriptions: bool,
    /// How a shared subscription group's member is chosen.
    pub shared_subscription_strategy: SharedStrategy,
    /// Whether a payload marked as UTF-8 (Payload Format Indicator 1) is
    /// checked, and refused when it is not.
    pub validate_utf8_payload: bool,
    /// Prefix of the Response Information given to MQTT 5 clients that
    /// ask for it (the client id is appended); empty: none is given.
    pub response_information: String,
    /// Send MQTT 5 clients to another server.
    pub redirect: Option<RedirectConfig>,
    /// Whether retained messages and persistent sessions (subscriptions,
    /// queued and in-flight messages, will delays) are kept on disk, in
    /// `data_dir`, and survive a restart or a crash.
    pub persistence: bool,
    /// Directory of the durable store (`--data-dir` overrides it).
    pub data_dir: std::path::PathBuf,
    /// When the store's writes reach the disk: `sync`, `periodic` or `none`.
    pub durability: Durability,
    /// Milliseconds between syncs with `durability = "periodic"`.
    pub flush_interval_ms: u64,
    /// Bytes of the store's pages kept in memory.
    pub store_cache_bytes: usize,
    /// Bridges to other brokers (`[[bridge]]` tables).
    #[serde(rename = "bridge")]
    pub bridges: Vec<BridgeConfig>,
    /// The admin listener (`[admin]`): metrics, health, API, dashboard.
    pub admin: AdminConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listeners: Vec::new(),
            allow_anonymous: None,
            password_file: None,
            acl_file: None,
            auth_failure_delay: DEFAULT_AUTH_FAILURE_DELAY_MS,
            password_rehash: false,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: 0,
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
            log_format: LogFormat::Text,
            tcp_nodelay: true,
            hibernate_after_ms: DEFAULT_HIBERNATE_AFTER_MS,
            worker_threads: 0,
            max_session_expiry_interval: DEFAULT_MAX_SESSION_EXPIRY_INTERVAL,
            max_keep_alive: u16::MAX,
            receive_maximum: DEFAULT_RECEIVE_MAXIMUM,
            max_publish_rate: 0,
            max_publish_bytes_rate: 0,
            max_subscriptions_per_client: DEFAULT_MAX_SUBSCRIPTIONS_PER_CLIENT,
            topic_alias_maximum: DEFAULT_TOPIC_ALIAS_MAXIMUM,
            server_topic_alias: true,
            max_qos: 2,
            retain_available: true,
            wildcard_subscriptions: true,
            subscription_identifiers: true,
            shared_subscriptions: true,
            shared_subscription_strategy: SharedStrategy::RoundRobin,
            validate_utf8_payload: true,
            response_information: DEFAULT_RESPONSE_INFORMATION.to_owned(),
            redirect: None,
            persistence: true,
            data_dir: std::path::PathBuf::from(DEFAULT_DATA_DIR),
            durability: Durability::Sync,
            flush_interval_ms: DEFAULT_FLUSH_INTERVAL_MS,
            store_cache_bytes: DEFAULT_STORE_CACHE_BYTES,
            bridges: Vec::new(),
            admin: AdminConfig::default(),
        }
    }
}

impl Config {
    /// Parses TOML text and validates it.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|error| {
            let start = error.span().map(|span| span.start);
            let line = start.map(|start| text[..start.min(text.len())].matches('\n').count() + 1);
            ConfigError {
                key: start.and_then(|start| key_at(text, start)),
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

    /// Where the store goes, once it is known where the configuration came
    /// from: an absolute `data_dir` as given; the default one, under a
    /// service manager that made the service a state directory
    /// (`state_directory`: systemd's `$STATE_DIRECTORY`), that directory;
    /// any other relative one against the configuration file's directory
    /// (`file`), or the working directory when there is no file.
    pub fn locate_data_dir(&mut self, file: Option<&Path>, state_directory: Option<PathBuf>) {
        if self.data_dir.is_absolute() {
            return;
        }
        let state_directory = state_directory.filter(|dir| !dir.as_os_str().is_empty());
        if let (true, Some(state)) = (
            self.data_dir == Path::new(DEFAULT_DATA_DIR),
            state_directory,
        ) {
            self.data_dir = state;
            return;
        }
        let base = file
            .and_then(Path::parent)
            .filter(|dir| !dir.as_os_str().is_empty());
        if let Some(base) = base {
            self.data_dir = base.join(&self.data_dir);
        }
    }

    /// Checks the values serde accepted but Petrel cannot run with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.admin.validate()?;
        let positive = [
            ("max_connections", self.max_connections),
            ("max_queued_messages", self.max_queued_messages),
            ("max_queued_bytes", self.max_queued_bytes),
            ("max_inflight", self.max_inflight),
            ("max_topic_levels", self.max_topic_levels),
            ("max_topic_length", self.max_topic_length),
            ("receive_maximum", usize::from(self.receive_maximum)),
            (
                "max_subscriptions_per_client",
                self.max_subscriptions_per_client,
            ),
            ("max_keep_alive", usize::from(self.max_keep_alive)),
            (
                "flush_interval_ms",
                usize::try_from(self.flush_interval_ms).unwrap_or(usize::MAX),
            ),
            ("store_cache_bytes", self.store_cache_bytes),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::key(key, "must be at least 1"));
            }
        }
        if self.worker_threads > MAX_WORKER_THREADS {
            return Err(ConfigError::key(
                "worker_threads",
                format!("must be at most {MAX_WORKER_THREADS} (0: one per core)"),
            ));
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
        if self.persistence && self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::key("data_dir", "must name a directory"));
        }
        if self.max_qos > 2 {
            return Err(ConfigError::key("max_qos", "must be 0, 1 or 2"));
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
        for (index, listener) in self.listeners.iter().enumerate() {
            listener.validate(index)?;
        }
        for (index, bridge) in self.bridges.iter().enumerate() {
            bridge.validate(index)?;
            if self.bridges[..index]
                .iter()
                .any(|other| other.name == bridge.name)
            {
                return Err(ConfigError::key(
                    &format!("bridge[{index}].name"),
                    format!("`{}` names two bridges", bridge.name),
                ));
            }
        }
        self.check_anonymous_access(&self.listeners())
    }

    /// The listeners to open: the configured ones, or the defaults.
    pub fn listeners(&self) -> Vec<ListenerConfig> {
        if self.listeners.is_empty() {
            default_listeners()
        } else {
            self.listeners.clone()
        }
    }

    /// The addresses of [`Config::listeners`].
    pub fn listener_addresses(&self) -> Vec<SocketAddr> {
        self.listeners().iter().map(|l| l.bind).collect()
    }

    /// Secure by default: anonymous clients on a listener that is not on a
    /// loopback address need an explicit choice (`allow_anonymous`, on the
    /// listener or at the top), or authentication on that listener (client
    /// certificates).
    pub fn check_anonymous_access(&self, listeners: &[ListenerConfig]) -> Result<(), ConfigError> {
        // With a password file, anonymous clients are refused wherever no
        // one said otherwise: the secure default needs no choice.
        if self.allow_anonymous.is_some() || self.password_file.is_some() {
            return Ok(());
        }
        let exposed = listeners.iter().enumerate().find(|(_, listener)| {
            !listener.bind.ip().is_loopback()
                && listener.allow_anonymous.is_none()
                && !listener
                    .tls
                    .as_ref()
                    .is_some_and(|tls| tls.require_certificate)
        });
        match exposed {
            Some((_, listener)) => Err(ConfigError::key(
                "allow_anonymous",
                format!(
                    "listener {} is not on a loopback address and no authentication \
                     is configured; set `allow_anonymous = true` to let anyone who can reach \
                     it connect without credentials",
                    listener.bind
                ),
            )),
            None => Ok(()),
        }
    }

    /// Whether clients without credentials may connect on `listener`:
    /// its own setting, the top-level one, or, unset, only on loopback.
    pub fn anonymous_allowed(&self, listener: &ListenerConfig) -> bool {
        listener
            .allow_anonymous
            .or(self.allow_anonymous)
            .unwrap_or_else(|| listener.bind.ip().is_loopback())
    }

    /// `max_qos` as a QoS.
    pub fn max_qos(&self) -> crate::protocol::QoS {
        crate::protocol::QoS::from_u8(self.max_qos.min(2))
            .unwrap_or(crate::protocol::QoS::ExactlyOnce)
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

#[cfg(test)]
mod tests;
