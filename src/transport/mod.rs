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

use crate::config::ListenerConfig;

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
    /// What configured it, if the configuration did (a reload compares
    /// it); none for a socket an embedder bound itself.
    pub config: Option<ListenerConfig>,
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
            config: None,
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

/// Whether `listener` is bound IPv6-only among `all`: an IPv6 address
/// beside an IPv4 one on the same port.
pub fn ipv6_only(listener: &ListenerConfig, all: &[ListenerConfig]) -> bool {
    let address = listener.bind;
    address.is_ipv6()
        && all
            .iter()
            .any(|other| other.bind.is_ipv4() && other.bind.port() == address.port())
}

/// Opens a listening TCP socket on `listener`'s address. An IPv6 one is
/// IPv6 only when another of `all` takes an IPv4 address on the same port
/// (`0.0.0.0:1883` beside `[::]:1883`): otherwise the two would collide,
/// as Linux lets an IPv6 socket take IPv4 connections too.
pub fn bind(listener: &ListenerConfig, all: &[ListenerConfig]) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let address = listener.bind;
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)?;
    // As tokio's own bind: a restarted broker binds its port at once.
    socket.set_reuse_address(true)?;
    if ipv6_only(listener, all) {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}
