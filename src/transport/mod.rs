//! Transports: what a listener does to a freshly accepted TCP socket
//! before MQTT starts on it. Plain TCP hands the socket on; TLS runs the
//! handshake ([`tls`]); WebSocket runs the HTTP upgrade and unwraps binary
//! frames ([`websocket`]), over TCP or TLS; behind a load balancer, a
//! PROXY protocol header names the client ([`proxy`]). Handshakes run inside the
//! connection's own task, under `connect_timeout`. A transport carries
//! bytes and never parses MQTT.

pub mod proxy;
pub mod tls;
pub mod websocket;

use tokio::net::TcpListener;

/// A bound listener and what runs on its connections.
#[derive(Debug)]
pub struct Listener {
    /// The bound socket.
    pub tcp: TcpListener,
    /// TLS, when the listener has it.
    pub tls: Option<tls::Tls>,
    /// WebSocket, when the listener serves MQTT over WebSocket.
    pub websocket: Option<websocket::WebSocket>,
    /// Whether connections start with a PROXY protocol header.
    pub proxy_protocol: bool,
    /// Whether clients without credentials may connect here; `None`: the
    /// broker-wide `allow_anonymous`.
    pub allow_anonymous: Option<bool>,
}

impl Listener {
    /// A plain TCP listener.
    pub fn tcp(tcp: TcpListener) -> Listener {
        Listener {
            tcp,
            tls: None,
            websocket: None,
            proxy_protocol: false,
            allow_anonymous: None,
        }
    }
}

/// Who the client is, as far as the transport knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The user name the transport vouches for: the common name of a
    /// verified client certificate, when the listener uses it as such.
    pub username: Option<String>,
    /// Whether the client proved who it is with a certificate.
    pub certificate: bool,
}
