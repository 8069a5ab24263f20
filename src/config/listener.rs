//! The `[[listener]]` tables: where Petrel listens, and how (plain TCP or
//! TLS, who may connect).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, DEFAULT_PORT};

/// One listener: TCP, or TLS over TCP when `tls` is set.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Address and port to listen on, e.g. `"0.0.0.0:1883"` or `"[::1]:1883"`.
    pub bind: SocketAddr,
    /// Whether clients without credentials may connect here; unset: the
    /// top-level `allow_anonymous`.
    #[serde(default)]
    pub allow_anonymous: Option<bool>,
    /// TLS on this listener (`[listener.tls]`).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// MQTT over WebSocket on this listener (`[listener.websocket]`); with
    /// `tls`, over secure WebSocket.
    #[serde(default)]
    pub websocket: Option<WebSocketConfig>,
    /// Whether every connection starts with a PROXY protocol header (v1 or
    /// v2) naming the client: for a listener behind HAProxy or a cloud
    /// load balancer. A connection without one is closed.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Whether the broker starts without this listener when its address
    /// cannot be bound (logged), as for `[::]:1883` on a host or container
    /// without IPv6; otherwise that stops start-up.
    #[serde(default)]
    pub optional: bool,
}

/// A listener's WebSocket settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketConfig {
    /// The HTTP path clients connect to.
    #[serde(default = "default_websocket_path")]
    pub path: String,
}

fn default_websocket_path() -> String {
    "/mqtt".to_owned()
}

impl ListenerConfig {
    /// A plain TCP listener on `bind`.
    pub fn tcp(bind: SocketAddr) -> ListenerConfig {
        ListenerConfig {
            bind,
            allow_anonymous: None,
            tls: None,
            websocket: None,
            proxy_protocol: false,
            optional: false,
        }
    }
}

/// A listener's TLS: the server's certificate chain and key, and for
/// mutual TLS the CA that signs client certificates.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the server's certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file with the server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM file with the CA certificates client certificates are checked
    /// against.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Whether a client must present a certificate signed by `ca`.
    #[serde(default)]
    pub require_certificate: bool,
    /// Whether the client certificate's identity (its subject's common
    /// name) is the client's user name.
    #[serde(default)]
    pub use_identity_as_username: bool,
    /// ALPN protocols offered (e.g. `["mqtt"]`); empty: no ALPN.
    #[serde(default)]
    pub alpn: Vec<String>,
}

/// The listeners used when none is configured: loopback only.
pub fn default_listeners() -> Vec<ListenerConfig> {
    ["127.0.0.1", "[::1]"]
        .iter()
        .filter_map(|host| format!("{host}:{DEFAULT_PORT}").parse().ok())
        .map(ListenerConfig::tcp)
        .collect()
}

impl ListenerConfig {
    /// Checks what serde cannot; `index` names the listener in errors.
    pub(super) fn validate(&self, index: usize) -> Result<(), ConfigError> {
        if let Some(websocket) = &self.websocket {
            if !websocket.path.starts_with('/') {
                return Err(ConfigError::key(
                    &format!("listener[{index}].websocket.path"),
                    "must start with `/`",
                ));
            }
        }
        let Some(tls) = &self.tls else {
            return Ok(());
        };
        let key = |name: &str| format!("listener[{index}].tls.{name}");
        if tls.require_certificate && tls.ca.is_none() {
            return Err(ConfigError::key(
                &key("ca"),
                "`require_certificate = true` needs the CA that signs client certificates",
            ));
        }
        if tls.use_identity_as_username && !tls.require_certificate {
            return Err(ConfigError::key(
                &key("use_identity_as_username"),
                "needs `require_certificate = true`",
            ));
        }
        Ok(())
    }
}
