//! How the tool's clients reach the broker: plain TCP (the default), TLS
//! (1.2 or 1.3, with an ECDSA P-256 or RSA 2048 certificate made for the
//! run), or WebSocket (`ws://`, subprotocol `mqtt`, path `/mqtt`).
//!
//! Over WebSocket the tool frames MQTT itself, one binary frame per write
//! (a frame may hold several packets, MQTT-6.0.0-2 in v3.1.1 and 5.0), so
//! that a paced publisher's message is still one `write` on its socket;
//! the frame headers are tungstenite's.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

use crate::client::Error;

/// The TLS versions the tool can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsVersion {
    #[value(name = "1.2")]
    V1_2,
    #[value(name = "1.3")]
    V1_3,
}

/// The key of the certificate made for a TLS run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsKey {
    /// ECDSA on P-256.
    Ecdsa,
    /// RSA, 2048 bits.
    Rsa,
}

/// The run's transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Tls(TlsVersion, TlsKey),
    WebSocket,
}

impl Transport {
    pub fn name(self) -> String {
        match self {
            Transport::Tcp => "tcp".to_owned(),
            Transport::Tls(version, key) => {
                let version = if version == TlsVersion::V1_2 {
                    "1.2"
                } else {
                    "1.3"
                };
                let key = if key == TlsKey::Ecdsa { "ecdsa" } else { "rsa" };
                format!("tls{version}-{key}")
            }
            Transport::WebSocket => "ws".to_owned(),
        }
    }
}

static TRANSPORT: OnceLock<Transport> = OnceLock::new();

/// Sets the run's transport (once, at start-up).
pub fn set(transport: Transport) {
    let _ = TRANSPORT.set(transport);
}

/// The run's transport.
pub fn current() -> Transport {
    TRANSPORT.get().copied().unwrap_or(Transport::Tcp)
}

/// The path WebSocket clients ask for.
pub const WS_PATH: &str = "/mqtt";

/// A certificate and key made for the run (with the openssl command),
/// valid for 127.0.0.1, readable by a broker that drops privileges.
pub struct Certificate {
    pub cert: PathBuf,
    pub key: PathBuf,
    der: rustls::pki_types::CertificateDer<'static>,
}

/// The run's certificate for `key`, made on first use.
pub fn certificate(key: TlsKey) -> Result<&'static Certificate, Error> {
    static ECDSA: OnceLock<Certificate> = OnceLock::new();
    static RSA: OnceLock<Certificate> = OnceLock::new();
    let cell = if key == TlsKey::Ecdsa { &ECDSA } else { &RSA };
    if let Some(made) = cell.get() {
        return Ok(made);
    }
    let made = make_certificate(key)?;
    Ok(cell.get_or_init(|| made))
}

/// The directory of the run's certificates.
fn certificate_dir() -> PathBuf {
    std::env::temp_dir().join(format!("petrel-load-tls-{}", std::process::id()))
}

/// Removes the run's certificates, if any were made (at the end of a run).
pub fn remove_certificates() {
    let _ = std::fs::remove_dir_all(certificate_dir());
}

fn make_certificate(key: TlsKey) -> Result<Certificate, Error> {
    use std::os::unix::fs::PermissionsExt;
    let name = if key == TlsKey::Ecdsa { "ecdsa" } else { "rsa" };
    let dir = certificate_dir();
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let cert = dir.join(format!("{name}.pem"));
    let key_file = dir.join(format!("{name}.key"));
    let new_key: &[&str] = match key {
        TlsKey::Ecdsa => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        TlsKey::Rsa => &["-newkey", "rsa:2048"],
    };
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .args(new_key)
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        // A leaf, trusted as itself: not a CA certificate (openssl's
        // default for -x509), which a verifier refuses as a server's.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key_file)
        .arg("-out")
        .arg(&cert)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("cannot run openssl (apt-get install openssl): {e}"))?;
    if !status.success() {
        return Err(format!("openssl could not make the {name} certificate").into());
    }
    for file in [&cert, &key_file] {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644))?;
    }
    let pem = std::fs::read(&cert)?;
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(&pem)
        .map_err(|e| format!("the {name} certificate does not parse: {e}"))?;
    Ok(Certificate {
        cert,
        key: key_file,
        der,
    })
}

/// The client side of a TLS run: only `version`, trusting the run's
/// certificate, no session resumption.
pub fn connector(version: TlsVersion, key: TlsKey) -> Result<tokio_rustls::TlsConnector, Error> {
    static CONNECTOR: OnceLock<tokio_rustls::TlsConnector> = OnceLock::new();
    if let Some(connector) = CONNECTOR.get() {
        return Ok(connector.clone());
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certificate(key)?.der.clone())?;
    let versions: &[&rustls::SupportedProtocolVersion] = match version {
        TlsVersion::V1_2 => &[&rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)?
    .with_root_certificates(roots)
    .with_no_client_auth();
    // Every connection makes a full handshake, as devices do after a
    // reboot: resumed sessions would measure the brokers' session caches
    // (and this tool's cache outlives the broker of each round).
    let mut config = config;
    config.resumption = rustls::client::Resumption::disabled();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    Ok(CONNECTOR.get_or_init(|| connector).clone())
}

/// Upgrades `stream` to WebSocket (GET `/mqtt`, subprotocol `mqtt`).
pub async fn upgrade(stream: &mut TcpStream, authority: &str) -> Result<(), Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    let mut request = format!("ws://{authority}{WS_PATH}").into_client_request()?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
    // The handshake only: the socket is framed by this tool afterwards
    // (the broker sends nothing until the CONNECT, so nothing is left in
    // the handshake's buffer).
    let (_socket, response) = tokio_tungstenite::client_async(request, stream).await?;
    if response.headers().get("Sec-WebSocket-Protocol") != Some(&HeaderValue::from_static("mqtt")) {
        return Err("the broker did not accept the mqtt subprotocol".into());
    }
    Ok(())
}

/// Appends `payload` to `out` as one masked binary frame (a client's
/// frames must be masked; with a zero mask the payload is unchanged).
pub fn frame(payload: &[u8], out: &mut BytesMut) {
    let header = FrameHeader {
        opcode: OpCode::Data(Data::Binary),
        mask: Some([0; 4]),
        ..FrameHeader::default()
    };
    // Writing into a growing buffer cannot fail.
    let _ = header.format(payload.len() as u64, &mut out.writer());
    out.extend_from_slice(payload);
}

/// Moves the payloads of the whole frames at the front of `raw` to `out`;
/// false once the broker sent a Close frame.
pub fn unframe(raw: &mut BytesMut, out: &mut BytesMut) -> io::Result<bool> {
    loop {
        let mut cursor = io::Cursor::new(&raw[..]);
        let Some((header, length)) = FrameHeader::parse(&mut cursor)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
        else {
            return Ok(true);
        };
        let start = cursor.position() as usize;
        let end = usize::try_from(length)
            .ok()
            .and_then(|length| start.checked_add(length))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "frame too long"))?;
        if raw.len() < end {
            return Ok(true);
        }
        match header.opcode {
            OpCode::Data(_) => out.extend_from_slice(&raw[start..end]),
            OpCode::Control(
                tokio_tungstenite::tungstenite::protocol::frame::coding::Control::Close,
            ) => return Ok(false),
            // Pings and pongs: no broker here sends them to a client. (A
            // server's frames are not masked, so none is unmasked here.)
            OpCode::Control(_) => {}
        }
        raw.advance(end);
    }
}

/// The receiving half of a connection.
pub enum ReadHalf {
    Tcp(OwnedReadHalf),
    Tls(tokio::io::ReadHalf<TlsStream<TcpStream>>),
}

/// The sending half of a connection.
pub enum WriteHalf {
    Tcp(OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<TlsStream<TcpStream>>),
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Tcp(stream) => Pin::new(stream).poll_read(cx, buf),
            ReadHalf::Tls(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(stream) => Pin::new(stream).poll_write(cx, buf),
            WriteHalf::Tls(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(stream) => Pin::new(stream).poll_flush(cx),
            WriteHalf::Tls(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(stream) => Pin::new(stream).poll_shutdown(cx),
            WriteHalf::Tls(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}
