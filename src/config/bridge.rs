//! The `[[bridge]]` tables: connections to other brokers that messages are
//! forwarded over, with their topic rules (Mosquitto's `topic PATTERN
//! DIRECTION QOS LOCAL_PREFIX REMOTE_PREFIX`, one `[[bridge.topic]]` each).

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

/// Default seconds of keep-alive on a bridge's connection.
pub const DEFAULT_BRIDGE_KEEP_ALIVE: u16 = 60;
/// Default unacknowledged QoS 1/2 messages a bridge sends at once.
pub const DEFAULT_BRIDGE_MAX_INFLIGHT: u16 = 32;
/// Default messages a bridge keeps while its remote is unreachable.
pub const DEFAULT_BRIDGE_MAX_QUEUED_MESSAGES: usize = 100_000;
/// Default payload bytes a bridge keeps while its remote is unreachable.
pub const DEFAULT_BRIDGE_MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;
/// Default first wait before reconnecting, in milliseconds.
pub const DEFAULT_RECONNECT_MIN_MS: u64 = 500;
/// Default longest wait before reconnecting, in milliseconds.
pub const DEFAULT_RECONNECT_MAX_MS: u64 = 30_000;

/// Which way a topic rule forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Local to remote.
    Out,
    /// Remote to local.
    In,
    /// Both ways.
    Both,
}

impl Direction {
    /// Whether local messages go out.
    pub fn outward(self) -> bool {
        matches!(self, Direction::Out | Direction::Both)
    }

    /// Whether remote messages come in.
    pub fn inward(self) -> bool {
        matches!(self, Direction::In | Direction::Both)
    }
}

/// The MQTT version a bridge speaks to its remote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum BridgeProtocol {
    /// MQTT 3.1.1.
    #[serde(rename = "3.1.1")]
    V3_1_1,
    /// MQTT 5.0.
    #[default]
    #[serde(rename = "5.0")]
    V5,
}

/// One topic rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicRule {
    /// The topic filter, without the prefixes (`#` for everything).
    pub filter: String,
    /// Which way it forwards.
    pub direction: Direction,
    /// The QoS it forwards and subscribes with (0, 1 or 2).
    #[serde(default)]
    pub qos: u8,
    /// Prefix of the topic on this broker: stripped going out, added
    /// coming in.
    #[serde(default)]
    pub local_prefix: String,
    /// Prefix of the topic on the remote broker: added going out, stripped
    /// coming in.
    #[serde(default)]
    pub remote_prefix: String,
}

/// TLS to the remote broker (`[bridge.tls]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeTlsConfig {
    /// PEM CA certificates the remote's certificate must chain to.
    pub ca: PathBuf,
    /// PEM client certificate chain, for a remote that asks for one.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// The name the remote's certificate must carry; unset: the host of
    /// the address being tried.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// One bridge.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// Its name: in logs, `$SYS/broker/connection/<name>/state`, and the
    /// default client id.
    pub name: String,
    /// `host:port` of the remote broker, tried in order on failure.
    pub addresses: Vec<String>,
    /// The MQTT version spoken to the remote.
    #[serde(default)]
    pub protocol: BridgeProtocol,
    /// The client id at the remote; unset: `petrel-bridge-<name>`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// User name at the remote.
    #[serde(default)]
    pub username: Option<String>,
    /// Password at the remote.
    #[serde(default)]
    pub password: Option<String>,
    /// Keep-alive in seconds.
    #[serde(default = "default_keep_alive")]
    pub keep_alive: u16,
    /// Whether the bridge's session at the remote starts clean at each
    /// connection.
    #[serde(default)]
    pub clean_start: bool,
    /// Session Expiry Interval asked of an MQTT 5 remote, in seconds.
    #[serde(default = "default_session_expiry")]
    pub session_expiry: u32,
    /// Unacknowledged QoS 1/2 messages sent at once.
    #[serde(default = "default_max_inflight")]
    pub max_inflight: u16,
    /// Messages kept for the remote while it is unreachable (or slow);
    /// newer ones are dropped and counted.
    #[serde(default = "default_max_queued_messages")]
    pub max_queued_messages: usize,
    /// Payload bytes kept for the remote, likewise.
    #[serde(default = "default_max_queued_bytes")]
    pub max_queued_bytes: usize,
    /// Whether QoS 0 messages are kept while the remote is unreachable.
    #[serde(default)]
    pub queue_qos0: bool,
    /// First wait before reconnecting, in milliseconds (doubled after each
    /// failure, with jitter).
    #[serde(default = "default_reconnect_min")]
    pub reconnect_min_ms: u64,
    /// Longest wait before reconnecting, in milliseconds.
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_ms: u64,
    /// TLS to the remote.
    #[serde(default)]
    pub tls: Option<BridgeTlsConfig>,
    /// The topic rules (`[[bridge.topic]]`).
    #[serde(rename = "topic")]
    pub topics: Vec<TopicRule>,
}

impl std::fmt::Debug for BridgeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeConfig")
            .field("name", &self.name)
            .field("addresses", &self.addresses)
            .field("protocol", &self.protocol)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

fn default_keep_alive() -> u16 {
    DEFAULT_BRIDGE_KEEP_ALIVE
}
fn default_session_expiry() -> u32 {
    u32::MAX
}
fn default_max_inflight() -> u16 {
    DEFAULT_BRIDGE_MAX_INFLIGHT
}
fn default_max_queued_messages() -> usize {
    DEFAULT_BRIDGE_MAX_QUEUED_MESSAGES
}
fn default_max_queued_bytes() -> usize {
    DEFAULT_BRIDGE_MAX_QUEUED_BYTES
}
fn default_reconnect_min() -> u64 {
    DEFAULT_RECONNECT_MIN_MS
}
fn default_reconnect_max() -> u64 {
    DEFAULT_RECONNECT_MAX_MS
}

impl BridgeConfig {
    /// The client id used at the remote.
    pub fn remote_client_id(&self) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("petrel-bridge-{}", self.name))
    }

    /// Checks bridge `index` (`bridge[index]` in errors).
    pub fn validate(&self, index: usize) -> Result<(), ConfigError> {
        let key = |name: &str| format!("bridge[{index}].{name}");
        let valid_name = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid_name {
            return Err(ConfigError::key(
                &key("name"),
                "must be letters, digits, '-' or '_'",
            ));
        }
        self.validate_addresses(&key("addresses"))?;
        if self.topics.is_empty() {
            return Err(ConfigError::key(
                &key("topic"),
                "a bridge needs at least one [[bridge.topic]]",
            ));
        }
        for (rule_index, rule) in self.topics.iter().enumerate() {
            rule.validate(&format!("bridge[{index}].topic[{rule_index}]"))?;
        }
        self.validate_bounds(&key)?;
        if let Some(tls) = &self.tls {
            if tls.cert.is_some() != tls.key.is_some() {
                return Err(ConfigError::key(
                    &key("tls.key"),
                    "cert and key go together",
                ));
            }
        }
        Ok(())
    }

    /// At least one address, each `host:port`.
    fn validate_addresses(&self, key: &str) -> Result<(), ConfigError> {
        if self.addresses.is_empty() {
            return Err(ConfigError::key(key, "must name at least one host:port"));
        }
        for address in &self.addresses {
            if address
                .rsplit_once(':')
                .and_then(|(_, port)| port.parse::<u16>().ok())
                .is_none()
            {
                return Err(ConfigError::key(
                    key,
                    format!("`{address}` is not host:port"),
                ));
            }
        }
        Ok(())
    }

    /// The numbers that must be positive, and the back-off's order.
    fn validate_bounds(&self, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        let positive = [
            ("keep_alive", usize::from(self.keep_alive)),
            ("max_inflight", usize::from(self.max_inflight)),
            ("max_queued_messages", self.max_queued_messages),
            ("max_queued_bytes", self.max_queued_bytes),
            (
                "reconnect_min_ms",
                usize::try_from(self.reconnect_min_ms).unwrap_or(usize::MAX),
            ),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ConfigError::key(&key(name), "must be at least 1"));
            }
        }
        if self.reconnect_max_ms < self.reconnect_min_ms {
            return Err(ConfigError::key(
                &key("reconnect_max_ms"),
                "must be at least reconnect_min_ms",
            ));
        }
        Ok(())
    }
}

impl TopicRule {
    /// Checks one topic rule (`key` names it in errors): its QoS, and its
    /// filter as each side subscribes to it.
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let rule_key = |name: &str| format!("{key}.{name}");
        if self.qos > 2 {
            return Err(ConfigError::key(&rule_key("qos"), "must be 0, 1 or 2"));
        }
        for (name, filter) in [
            ("filter", self.filter.clone()),
            (
                "local_prefix",
                format!("{}{}", self.local_prefix, self.filter),
            ),
            (
                "remote_prefix",
                format!("{}{}", self.remote_prefix, self.filter),
            ),
        ] {
            if let Err(error) = crate::protocol::TopicFilter::new(&filter) {
                return Err(ConfigError::key(
                    &rule_key(name),
                    format!("`{filter}`: {error}"),
                ));
            }
        }
        Ok(())
    }
}
