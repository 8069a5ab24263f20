//! A test PKI: a CA, a server certificate and a client certificate made
//! with rcgen, written as PEM files, and a TLS client connector.

use std::path::PathBuf;
use std::sync::Arc;

use petrel::config::TlsConfig;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio_rustls::rustls::crypto::ring::default_provider;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// A CA, a server certificate for 127.0.0.1 and localhost, and a client
/// certificate with common name `device-7` (`client.pem`, `client.key`),
/// written as PEM files.
pub struct Pki {
    dir: PathBuf,
    ca_der: CertificateDer<'static>,
    client_der: CertificateDer<'static>,
    client_key_der: Vec<u8>,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("petrel-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Petrel test CA");
        let ca =
            CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("CA");
        let server_key = KeyPair::generate().expect("key");
        let server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("params")
            .signed_by(&server_key, &ca)
            .expect("server certificate");
        let client_key = KeyPair::generate().expect("key");
        let mut client_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        client_params
            .distinguished_name
            .push(DnType::CommonName, "device-7");
        let client = client_params
            .signed_by(&client_key, &ca)
            .expect("client certificate");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
        std::fs::write(dir.join("server.pem"), server.pem()).expect("write");
        std::fs::write(dir.join("server.key"), server_key.serialize_pem()).expect("write");
        std::fs::write(dir.join("other.key"), client_key.serialize_pem()).expect("write");
        std::fs::write(dir.join("client.pem"), client.pem()).expect("write");
        std::fs::write(dir.join("client.key"), client_key.serialize_pem()).expect("write");
        Pki {
            dir,
            ca_der: ca.der().clone(),
            client_der: client.der().clone(),
            client_key_der: client_key.serialize_der(),
        }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    pub fn server_tls(&self, mutual: bool) -> TlsConfig {
        TlsConfig {
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            ca: mutual.then(|| self.path("ca.pem")),
            require_certificate: mutual,
            use_identity_as_username: mutual,
            alpn: Vec::new(),
        }
    }

    /// A TLS client trusting the CA, with the client certificate if asked.
    pub fn connector(&self, with_certificate: bool) -> TlsConnector {
        TlsConnector::from(Arc::new(self.client_config(with_certificate)))
    }

    /// The rustls configuration of [`Pki::connector`].
    pub fn client_config(&self, with_certificate: bool) -> ClientConfig {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("CA");
        let builder = ClientConfig::builder_with_provider(Arc::new(default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        if with_certificate {
            let key = PrivateKeyDer::try_from(self.client_key_der.clone()).expect("key");
            builder
                .with_client_auth_cert(vec![self.client_der.clone()], key)
                .expect("client auth")
        } else {
            builder.with_no_client_auth()
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
