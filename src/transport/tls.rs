//! TLS listeners (tokio-rustls): the certificate chain and key loaded once
//! at start-up (a missing, unreadable or mismatched file stops the broker
//! with the key and the file named), TLS 1.2 and 1.3, optional ALPN, and
//! for mutual TLS a CA that client certificates must chain to. A client
//! certificate's subject common name can stand for the user name.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::rustls::crypto::ring::default_provider;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::Identity;
use crate::config::{ConfigError, TlsConfig};

/// A listener's TLS, ready to accept. Clones share one acceptor, which
/// [`Tls::reload`] replaces: handshakes after it use the new certificate,
/// connections already up keep theirs.
#[derive(Clone)]
pub struct Tls {
    acceptor: Arc<RwLock<TlsAcceptor>>,
    use_identity_as_username: bool,
    config: TlsConfig,
    /// The configuration key errors name (`listener[0].tls`).
    key: String,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("use_identity_as_username", &self.use_identity_as_username)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the certificates and key of listener `index`.
    pub fn load(config: &TlsConfig, index: usize) -> Result<Tls, ConfigError> {
        Tls::load_as(config, format!("listener[{index}].tls"))
    }

    /// Loads the certificates and key configured at `key` (errors name
    /// it: `admin.tls`).
    pub fn load_as(config: &TlsConfig, key: String) -> Result<Tls, ConfigError> {
        Ok(Tls {
            acceptor: Arc::new(RwLock::new(Tls::acceptor(config, &key)?)),
            use_identity_as_username: config.use_identity_as_username,
            config: config.clone(),
            key,
        })
    }

    /// Reads the certificate, key and CA files again; on an error the
    /// ones in force stay, and the error says why.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let acceptor = Tls::acceptor(&self.config, &self.key)?;
        *self
            .acceptor
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = acceptor;
        Ok(())
    }

    fn acceptor(config: &TlsConfig, key: &str) -> Result<TlsAcceptor, ConfigError> {
        let key_name = |name: &str| format!("{key}.{name}");
        let provider = Arc::new(default_provider());
        let certs = read_certs(&config.cert).map_err(|e| ConfigError::key(&key_name("cert"), e))?;
        let key = read_key(&config.key).map_err(|e| ConfigError::key(&key_name("key"), e))?;
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::key(&key_name("cert"), e.to_string()))?;
        let builder = match &config.ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs(ca).map_err(|e| ConfigError::key(&key_name("ca"), e))? {
                    roots.add(cert).map_err(|e| {
                        ConfigError::key(&key_name("ca"), format!("{}: {e}", ca.display()))
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = if config.require_certificate {
                    verifier
                } else {
                    verifier.allow_unauthenticated()
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| ConfigError::key(&key_name("ca"), e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut server = builder.with_single_cert(certs, key).map_err(|e| {
            ConfigError::key(
                &key_name("key"),
                format!(
                    "{} does not go with {}: {e}",
                    config.key.display(),
                    config.cert.display()
                ),
            )
        })?;
        server.alpn_protocols = config.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Ok(TlsAcceptor::from(Arc::new(server)))
    }

    /// Runs the TLS handshake on `stream`, for at most `timeout`; the TLS
    /// stream and who the client proved to be. `None` when the handshake
    /// failed or took too long (logged).
    pub async fn accept(
        &self,
        stream: TcpStream,
        timeout: Duration,
    ) -> Option<(TlsStream<TcpStream>, Identity)> {
        let acceptor = self
            .acceptor
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let stream = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::info!(%error, "TLS handshake failed");
                return None;
            }
            Err(_) => {
                tracing::info!("no TLS handshake within connect_timeout");
                return None;
            }
        };
        let leaf = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first());
        let identity = Identity {
            certificate: leaf.is_some(),
            username: leaf
                .filter(|_| self.use_identity_as_username)
                .and_then(|cert| common_name(cert)),
        };
        Some((stream, identity))
    }
}

/// The subject common name of a DER certificate.
fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let name = parsed
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    Some(name)
}

/// What a PEM file could not give, said with its path.
fn pem_error(path: &Path, error: pem::Error, what: &str) -> String {
    match error {
        pem::Error::NoItemsFound => format!("{}: no PEM {what} in it", path.display()),
        pem::Error::Io(error) => format!("cannot read {}: {error}", path.display()),
        error => format!("{}: {error}", path.display()),
    }
}

/// The PEM certificates in `path` (at least one).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|error| pem_error(path, error, "certificate"))?
        .collect::<Result<_, _>>()
        .map_err(|error| pem_error(path, error, "certificate"))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// The PEM private key in `path`.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|error| pem_error(path, error, "private key"))
}
