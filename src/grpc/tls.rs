//! rustls configurations from PEM: mutual TLS for the server, roots and an optional client
//! certificate for the client; ALPN `h2`; ring as the one crypto provider.
//!
//! Material that can be replaced while the server or client runs (rotation) is in
//! [`tls_reload`](crate::grpc::tls_reload).
//!
//! ring is chosen explicitly because it builds with nothing but a C compiler (aws-lc-rs needs
//! cmake and more), and rustls 0.23 requires a provider to be named when several are compiled.

use std::{fs, path::Path, sync::Arc};

use rustls::{
    crypto::CryptoProvider,
    server::WebPkiClientVerifier,
    version::{TLS12, TLS13},
    ClientConfig, RootCertStore, ServerConfig,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

use crate::grpc::error::Error;

/// ALPN identifier for HTTP/2; stock gRPC clients refuse a TLS session without it.
pub(crate) const ALPN_H2: &[u8] = b"h2";

/// PEM material for one side of a TLS connection.
#[derive(Clone)]
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
}

impl Identity {
    /// Parses a certificate chain and private key from PEM bytes.
    ///
    /// # Errors
    /// A TLS error naming which part could not be parsed.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, Error> {
        Self::parse(cert_pem, key_pem, "certificate", "the key PEM")
    }

    /// Reads a certificate chain and private key from PEM files.
    ///
    /// # Errors
    /// An I/O or TLS error naming the file.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, Error> {
        let (cert_pem, key_pem) = (read(cert)?, read(key)?);
        Self::parse(
            &cert_pem,
            &key_pem,
            &cert.display().to_string(),
            &key.display().to_string(),
        )
    }

    fn parse(cert_pem: &[u8], key_pem: &[u8], cert: &str, key: &str) -> Result<Self, Error> {
        let chain = certs_from_pem(cert_pem, cert)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| Error::tls(format!("cannot parse a private key in {key}")).with(e))?;
        Ok(Self {
            chain,
            key: Arc::new(key),
        })
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// Trusted CA certificates.
#[derive(Clone, Debug)]
pub struct Roots {
    pub(crate) store: Arc<RootCertStore>,
}

impl Roots {
    /// Parses one or more CA certificates from PEM bytes.
    ///
    /// # Errors
    /// A TLS error when no certificate parses or one is rejected as a trust anchor.
    pub fn from_pem(pem: &[u8]) -> Result<Self, Error> {
        Self::from_certs(certs_from_pem(pem, "CA certificate")?, "CA certificate")
    }

    /// Reads CA certificates from a PEM file.
    ///
    /// # Errors
    /// An I/O or TLS error naming the file.
    pub fn from_pem_file(path: &Path) -> Result<Self, Error> {
        let name = path.display().to_string();
        Self::from_certs(certs_from_pem(&read(path)?, &name)?, &name)
    }

    fn from_certs(certs: Vec<CertificateDer<'static>>, what: &str) -> Result<Self, Error> {
        let mut store = RootCertStore::empty();
        for cert in certs {
            store
                .add(cert)
                .map_err(|e| Error::tls(format!("{what} is not a usable CA")).with(e))?;
        }
        Ok(Self {
            store: Arc::new(store),
        })
    }
}

/// The server's TLS configuration: mutual TLS unless explicitly relaxed.
///
/// # Errors
/// A TLS error when the key does not match the certificate or the CA cannot verify clients.
pub fn server_config(
    identity: &Identity,
    client_ca: Option<&Roots>,
) -> Result<Arc<ServerConfig>, Error> {
    server_config_with(identity, client_ca, false, &[ALPN_H2])
}

/// TLS for the browser listener: `identity` as the server certificate; a client certificate
/// is optional (browsers rarely have one) but verified against `client_ca` when presented,
/// and its identity passed on; ALPN offers HTTP/2 and HTTP/1.1.
///
/// # Errors
/// A TLS error when the key does not match its certificate.
pub fn browser_server_config(
    identity: &Identity,
    client_ca: Option<&Roots>,
) -> Result<Arc<ServerConfig>, Error> {
    server_config_with(identity, client_ca, true, &[ALPN_H2, b"http/1.1"])
}

/// A server configuration; `optional` lets clients without a certificate in.
fn server_config_with(
    identity: &Identity,
    client_ca: Option<&Roots>,
    optional: bool,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, Error> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&TLS13, &TLS12])
        .map_err(|e| Error::tls("unsupported TLS versions").with(e))?;
    let builder = match client_ca {
        Some(roots) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(roots.store.clone(), provider);
            let verifier = if optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| Error::tls("cannot build the client verifier").with(e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|e| {
            Error::tls("the server certificate and key do not form a valid identity").with(e)
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // No key log here: that is the program's choice (ServerConfig::tls_key_log).
    Ok(Arc::new(config))
}

/// The client's TLS configuration: trust `roots`, present `identity` when given.
///
/// # Errors
/// A TLS error when the client key does not match its certificate.
pub fn client_config(
    roots: &Roots,
    identity: Option<&Identity>,
) -> Result<Arc<ClientConfig>, Error> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&TLS13, &TLS12])
        .map_err(|e| Error::tls("unsupported TLS versions").with(e))?
        .with_root_certificates(roots.store.clone());
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
            .map_err(|e| {
                Error::tls("the client certificate and key do not form a valid identity").with(e)
            })?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// The identity a verified client certificate carries: its subject as an RFC 4514-style
/// string ("CN=satellite-client"), then its URI and DNS SANs.
pub(crate) fn identity_of(der: &[u8]) -> Option<(String, Vec<String>, Vec<String>)> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let (mut uris, mut dns) = (Vec::new(), Vec::new());
    // A malformed SAN extension leaves the lists empty: the subject still identifies the peer.
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(uri) => uris.push((*uri).to_owned()),
                GeneralName::DNSName(name) => dns.push((*name).to_owned()),
                _ => {}
            }
        }
    }
    Some((cert.subject().to_string(), uris, dns))
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, Error> {
    fs::read(path).map_err(|e| Error::io(format!("cannot read {}", path.display()), e))
}

pub(crate) fn certs_from_pem(
    pem: &[u8],
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::tls(format!("cannot parse {what} PEM")).with(e))?;
    if certs.is_empty() {
        return Err(Error::tls(format!(
            "{what}: no certificate found in the PEM"
        )));
    }
    Ok(certs)
}
