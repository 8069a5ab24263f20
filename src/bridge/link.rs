//! One connection of a bridge to its remote broker: TCP or TLS, CONNECT
//! as a client (with Mosquitto's bridge marker at 3.1.1), CONNACK, then
//! SUBSCRIBE to the inward rules and SUBACK. What follows is the bridge's
//! session endpoint, driven like any other ([`crate::session::driver`]).

use std::fmt;
use std::num::NonZeroU16;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls::crypto::ring::default_provider;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::config::{BridgeConfig, BridgeProtocol};
use crate::connection::{Connection, Incoming, Outbox};
use crate::context::Core;
use crate::protocol::{
    Connect, ConnectProperties, Packet, PacketId, ProtocolVersion, ReasonCode, RetainHandling,
    Subscribe, SubscribeProperties, SubscriptionOptions, TopicFilter,
};
use crate::session::endpoint::ClientLimits;

type BoxRead = Box<dyn AsyncRead + Unpin + Send>;
type BoxWrite = Box<dyn AsyncWrite + Unpin + Send>;
/// A bridge's connection to its remote.
pub type Link = Connection<BoxRead, BoxWrite>;

/// How a bridge reaches its remote: TCP, or TLS with the configured CA
/// and client certificate.
pub struct Connector {
    tls: Option<(TlsConnector, Option<String>)>,
}

impl Connector {
    /// Loads the bridge's TLS files, if it has TLS.
    pub fn new(config: &BridgeConfig) -> Result<Connector, String> {
        let Some(tls) = &config.tls else {
            return Ok(Connector { tls: None });
        };
        let mut roots = RootCertStore::empty();
        for cert in crate::transport::tls::read_certs(&tls.ca)? {
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", tls.ca.display()))?;
        }
        let builder = ClientConfig::builder_with_provider(Arc::new(default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let client = match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(
                    crate::transport::tls::read_certs(cert)?,
                    crate::transport::tls::read_key(key)?,
                )
                .map_err(|e| format!("{}: {e}", cert.display()))?,
            _ => builder.with_no_client_auth(),
        };
        Ok(Connector {
            tls: Some((
                TlsConnector::from(Arc::new(client)),
                tls.server_name.clone(),
            )),
        })
    }

    /// Connects to `address`, sends CONNECT, waits for a successful
    /// CONNACK and subscribes to the inward rules. At 3.1.1 the CONNECT
    /// carries Mosquitto's bridge marker (so the remote does not send back
    /// what the bridge published), and goes again without it if the remote
    /// refuses the marked protocol level.
    pub async fn connect(
        &self,
        core: &Core,
        config: &BridgeConfig,
        address: &str,
    ) -> Result<Established, String> {
        let marked = config.protocol == BridgeProtocol::V3_1_1;
        match self.attempt(core, config, address, marked).await {
            Err(Refused::Marker) => {
                tracing::info!(bridge = %config.name, address, "the remote refuses the bridge marker; connecting without it (it may echo)");
                self.attempt(core, config, address, false)
                    .await
                    .map_err(|refused| refused.to_string())
            }
            other => other.map_err(|refused| refused.to_string()),
        }
    }

    async fn attempt(
        &self,
        core: &Core,
        config: &BridgeConfig,
        address: &str,
        marked: bool,
    ) -> Result<Established, Refused> {
        let timeout = core.config().connect_timeout();
        let (reader, writer) = self.open(address, timeout).await?;
        let mut connection = Connection::new(
            reader,
            writer,
            core.config().max_packet_size,
            Arc::clone(&core.metrics),
        );
        connection.version = if config.protocol == BridgeProtocol::V5 {
            ProtocolVersion::V5
        } else {
            ProtocolVersion::V3_1_1
        };
        let mut outbox = Outbox::new(connection.version);
        let (window, session_present) =
            connect(config, &mut connection, &mut outbox, marked, timeout).await?;
        let early = subscribe(config, &mut connection, &mut outbox, timeout).await?;
        Ok(Established {
            connection,
            outbox,
            limits: ClientLimits::plain(window),
            session_present,
            early,
        })
    }

    /// The byte stream to `address`: TCP, and TLS over it when the bridge
    /// has TLS.
    async fn open(
        &self,
        address: &str,
        timeout: std::time::Duration,
    ) -> Result<(BoxRead, BoxWrite), Refused> {
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(address))
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let Some((connector, server_name)) = &self.tls else {
            let (reader, writer) = tcp.into_split();
            return Ok((Box::new(reader), Box::new(writer)));
        };
        let host = server_name.clone().unwrap_or_else(|| host_of(address));
        let name = ServerName::try_from(host.clone())
            .map_err(|_| format!("`{host}` is not a valid TLS server name"))?;
        let stream = tokio::time::timeout(timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| "TLS handshake timed out".to_owned())?
            .map_err(|e| format!("TLS: {e}"))?;
        let (reader, writer) = tokio::io::split(stream);
        Ok((Box::new(reader), Box::new(writer)))
    }
}

/// Sends CONNECT as the bridge's client and waits for a successful
/// CONNACK; the bridge's window (the remote's Receive Maximum, capped by
/// `max_inflight`) and whether the remote kept a session for it. The
/// remote's Maximum Packet Size goes into `outbox`.
async fn connect(
    config: &BridgeConfig,
    connection: &mut Link,
    outbox: &mut Outbox,
    marked: bool,
    timeout: std::time::Duration,
) -> Result<(u16, bool), Refused> {
    let v5 = connection.version.is_v5();
    let connect = Connect {
        protocol: connection.version,
        clean_start: config.clean_start,
        keep_alive: config.keep_alive,
        client_id: config.remote_client_id(),
        will: None,
        username: config.username.clone(),
        password: config.password.clone().map(Bytes::from),
        properties: ConnectProperties {
            session_expiry_interval: v5.then_some(config.session_expiry),
            ..ConnectProperties::default()
        },
        bridge: marked,
    };
    outbox.send_or_log(Packet::Connect(Box::new(connect)));
    let connack = tokio::time::timeout(timeout, next_packet(connection, outbox))
        .await
        .map_err(|_| "no CONNACK in time".to_owned())??;
    let Packet::ConnAck(connack) = connack else {
        return Err("the remote did not answer CONNECT with CONNACK".into());
    };
    if connack.reason_code == ReasonCode::UnsupportedProtocolVersion && marked {
        return Err(Refused::Marker);
    }
    if connack.reason_code.is_error() {
        return Err(format!("CONNACK refused: {:?}", connack.reason_code).into());
    }
    if let Some(maximum) = connack.properties.maximum_packet_size {
        outbox.set_max_packet(maximum.get());
    }
    let window = connack
        .properties
        .receive_maximum
        .map_or(config.max_inflight, NonZeroU16::get)
        .min(config.max_inflight);
    Ok((window, connack.session_present))
}

/// Why a connection attempt failed.
enum Refused {
    /// The remote refused the protocol level with the bridge marker.
    Marker,
    /// Anything else.
    Other(String),
}

impl From<String> for Refused {
    fn from(what: String) -> Self {
        Refused::Other(what)
    }
}

impl From<&str> for Refused {
    fn from(what: &str) -> Self {
        Refused::Other(what.to_owned())
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Marker => f.write_str("the remote refused the bridge marker"),
            Refused::Other(what) => f.write_str(what),
        }
    }
}

/// A connection that got its CONNACK (and its SUBACK).
pub struct Established {
    /// The connection.
    pub connection: Link,
    /// What is written to it (nothing, once established), at its version
    /// and within the remote's Maximum Packet Size.
    pub outbox: Outbox,
    /// The remote's Receive Maximum (capped by `max_inflight`), as the
    /// bridge's window.
    pub limits: ClientLimits,
    /// The remote kept the bridge's session (CONNACK Session Present).
    pub session_present: bool,
    /// Packets that came before the SUBACK (messages the remote kept for
    /// the bridge's session), for the endpoint to handle first.
    pub early: Vec<Packet>,
}

/// The host part of `host:port` (or `[v6]:port`).
fn host_of(address: &str) -> String {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned()
}

/// Subscribes at the remote to the inward rules and waits for the
/// SUBACK: up means forwarding both ways. What the remote sends before it
/// (messages it kept for the bridge's session) comes back to be handled
/// first thing once the link serves.
async fn subscribe(
    config: &BridgeConfig,
    connection: &mut Link,
    outbox: &mut Outbox,
    timeout: std::time::Duration,
) -> Result<Vec<Packet>, Refused> {
    let filters: Vec<(TopicFilter, SubscriptionOptions)> =
        super::topics::Rules::new(config.topics.clone())
            .remote_filters()
            .into_iter()
            .filter_map(|(filter, qos)| {
                let filter = TopicFilter::new(&filter).ok()?;
                Some((
                    filter,
                    SubscriptionOptions {
                        qos,
                        // [MQTT-3.8.3-3] (v5.0): what the bridge sends
                        // does not come back to it.
                        no_local: true,
                        retain_as_published: true,
                        retain_handling: RetainHandling::SendOnSubscribe,
                    },
                ))
            })
            .collect();
    let mut early = Vec::new();
    if filters.is_empty() {
        return Ok(early);
    }
    let subscribe = Subscribe {
        packet_id: PacketId::new(1).ok_or("packet id")?,
        filters,
        properties: SubscribeProperties::default(),
    };
    outbox.send_or_log(Packet::Subscribe(subscribe));
    loop {
        let packet = tokio::time::timeout(timeout, next_packet(connection, outbox))
            .await
            .map_err(|_| "no SUBACK in time".to_owned())??;
        match packet {
            Packet::SubAck(suback) => {
                for code in suback.reason_codes.iter().filter(|code| code.is_error()) {
                    tracing::warn!(bridge = %config.name, ?code, "bridge: the remote refused a subscription");
                }
                return Ok(early);
            }
            // Bounded like the bridge's queue: a remote that sends more
            // before its SUBACK is not served.
            _ if early.len() >= config.max_queued_messages => {
                return Err(format!(
                    "the remote sent more than max_queued_messages ({}) packets before its SUBACK",
                    config.max_queued_messages
                )
                .into())
            }
            other => early.push(other),
        }
    }
}

/// Reads the next packet, writing `outbox` meanwhile.
async fn next_packet(connection: &mut Link, outbox: &mut Outbox) -> Result<Packet, String> {
    match connection.read_packet(outbox, None).await {
        Incoming::Packet(packet) => Ok(packet),
        Incoming::Other(_) | Incoming::Closed => Err("the remote closed the connection".to_owned()),
        Incoming::Io(error) => Err(error.to_string()),
        Incoming::Malformed(error) => Err(error.to_string()),
    }
}
