//! TLS material that can be replaced while connections use it: a certificate and key (the
//! server's, or a client's own), and the client CA bundle and certificate revocation lists
//! (CRLs) a server verifies clients with.
//!
//! Each is read from files and implements [`Reload`]: a reload parses everything first and
//! swaps only when all of it is good, so a file that does not parse, or a key that does not
//! match its certificate, leaves the old material in force. New handshakes use what is in
//! force when they start; connections already open keep the session they made.
//!
//! The rustls configurations built here turn session resumption off on the server: a resumed
//! session skips the client certificate check, and after a CA rotation or a revocation every
//! handshake must be verified against what is in force now.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use rustls::{
    client::{danger::HandshakeSignatureValid, ResolvesClientCert},
    server::{
        danger::{ClientCertVerified, ClientCertVerifier},
        ClientHello, NoServerSessionStorage, ResolvesServerCert, WebPkiClientVerifier,
    },
    sign::CertifiedKey,
    version::{TLS12, TLS13},
    ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme,
};
use rustls_pki_types::{
    pem::PemObject as _, CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime,
};

use crate::grpc::{
    error::Error,
    reload::Reload,
    tls::{self, Roots},
};

/// A certificate chain and its private key from two PEM files, replaceable in use; serves as
/// the server's certificate or as a client's own.
pub struct ReloadingIdentity {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadingIdentity {
    /// Reads the certificate chain and key now.
    ///
    /// # Errors
    /// An I/O or TLS error naming the file, or saying that the key does not match.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Arc<Self>, Error> {
        Ok(Arc::new(Self {
            current: RwLock::new(load_certified_key(cert, key)?),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        }))
    }

    fn certified(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl fmt::Debug for ReloadingIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingIdentity")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Reload for ReloadingIdentity {
    fn what(&self) -> &str {
        "certificate and key"
    }

    fn paths(&self) -> Vec<PathBuf> {
        vec![self.cert.clone(), self.key.clone()]
    }

    fn reload(&self) -> Result<(), Error> {
        let fresh = load_certified_key(&self.cert, &self.key)?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        Ok(())
    }
}

impl ResolvesServerCert for ReloadingIdentity {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.certified())
    }
}

impl ResolvesClientCert for ReloadingIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.certified())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The server's check of client certificates: a CA bundle from a PEM file and CRLs (PEM or
/// DER), replaceable in use.
///
/// A client certificate listed in a CRL fails the handshake. Each CRL must be signed by a CA
/// of the bundle (a CRL of some other CA would silently revoke nothing, so it is refused).
/// Only end-entity certificates are checked, as our CA signs clients directly; a CA of the
/// bundle with no CRL revokes nothing, so that a CA added in a rotation works before it has
/// one. A CRL past its next-update date still counts: refusing every client because a CRL
/// was not refreshed in time would be an outage of our own making.
pub struct ReloadingVerifier {
    ca: PathBuf,
    crls: Vec<PathBuf>,
    current: RwLock<Arc<dyn ClientCertVerifier>>,
}

impl ReloadingVerifier {
    /// Reads the CA bundle and the CRLs now.
    ///
    /// # Errors
    /// An I/O or TLS error naming the file.
    pub fn from_files(ca: &Path, crls: &[PathBuf]) -> Result<Arc<Self>, Error> {
        Ok(Arc::new(Self {
            current: RwLock::new(build_verifier(ca, crls)?),
            ca: ca.to_path_buf(),
            crls: crls.to_vec(),
        }))
    }

    fn verifier(&self) -> Arc<dyn ClientCertVerifier> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl fmt::Debug for ReloadingVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingVerifier")
            .field("ca", &self.ca)
            .field("crls", &self.crls)
            .finish_non_exhaustive()
    }
}

impl Reload for ReloadingVerifier {
    fn what(&self) -> &str {
        if self.crls.is_empty() {
            "client CA bundle"
        } else {
            "client CA bundle and CRLs"
        }
    }

    fn paths(&self) -> Vec<PathBuf> {
        let mut paths = vec![self.ca.clone()];
        paths.extend(self.crls.iter().cloned());
        paths
    }

    fn reload(&self) -> Result<(), Error> {
        let fresh = build_verifier(&self.ca, &self.crls)?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        Ok(())
    }
}

impl ClientCertVerifier for ReloadingVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The hints cannot be borrowed across a swap; they are advisory (RFC 8446 §4.2.4), and
        // clients with one certificate, as gRPC clients have, send it whatever the hints say.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verifier()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.verifier().supported_verify_schemes()
    }
}

/// The server's TLS configuration over replaceable material: `identity` as its certificate,
/// and mutual TLS through `clients` when given. Session resumption is off (see the module
/// docs).
///
/// # Errors
/// A TLS error when the protocol versions cannot be set (never with ring).
pub fn server_config(
    identity: Arc<ReloadingIdentity>,
    clients: Option<Arc<ReloadingVerifier>>,
) -> Result<Arc<ServerConfig>, Error> {
    let builder = ServerConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&TLS13, &TLS12])
        .map_err(|e| Error::tls("unsupported TLS versions").with(e))?;
    let builder = match clients {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(identity);
    config.alpn_protocols = vec![tls::ALPN_H2.to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The client's TLS configuration: trust `roots`, present `identity`, which may be replaced
/// while the client runs (connections made after a reload present the new certificate).
///
/// # Errors
/// A TLS error when the protocol versions cannot be set (never with ring).
pub fn client_config(
    roots: &Roots,
    identity: Arc<ReloadingIdentity>,
) -> Result<Arc<ClientConfig>, Error> {
    let mut config = ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&TLS13, &TLS12])
        .map_err(|e| Error::tls("unsupported TLS versions").with(e))?
        .with_root_certificates(roots.store.clone())
        .with_client_cert_resolver(identity);
    config.alpn_protocols = vec![tls::ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// Parses a chain and key and checks that they belong together.
fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, Error> {
    let (cert_pem, key_pem) = (tls::read(cert)?, tls::read(key)?);
    let chain = tls::certs_from_pem(&cert_pem, &cert.display().to_string())?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        Error::tls(format!("cannot parse a private key in {}", key.display())).with(e)
    })?;
    let certified = CertifiedKey::from_der(chain, key_der, &tls::provider()).map_err(|e| {
        Error::tls(format!(
            "{} and {} do not form a valid identity",
            cert.display(),
            key.display()
        ))
        .with(e)
    })?;
    Ok(Arc::new(certified))
}

/// A verifier of client certificates against the CA bundle in `ca` and the CRLs in `crls`.
fn build_verifier(ca: &Path, crls: &[PathBuf]) -> Result<Arc<dyn ClientCertVerifier>, Error> {
    let ca_pem = tls::read(ca)?;
    let cas = tls::certs_from_pem(&ca_pem, &ca.display().to_string())?;
    let roots = Roots::from_pem(&ca_pem)
        .map_err(|e| Error::tls(format!("cannot use {} as a CA bundle", ca.display())).with(e))?;
    let mut lists = Vec::new();
    for path in crls {
        for crl in read_crls(path)? {
            check_crl_issuer(&crl, &cas, path, ca)?;
            lists.push(crl);
        }
    }
    let mut builder = WebPkiClientVerifier::builder_with_provider(roots.store, tls::provider());
    if !lists.is_empty() {
        builder = builder
            .with_crls(lists)
            .only_check_end_entity_revocation()
            .allow_unknown_revocation_status();
    }
    builder
        .build()
        .map_err(|e| Error::tls(format!("cannot verify clients with {}", ca.display())).with(e))
}

/// The CRLs in a file: PEM (one or more `X509 CRL` blocks) or a single DER CRL.
fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, Error> {
    let bytes = tls::read(path)?;
    if !bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        return Ok(vec![CertificateRevocationListDer::from(bytes)]);
    }
    let crls = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::tls(format!("cannot parse CRL PEM in {}", path.display())).with(e))?;
    if crls.is_empty() {
        return Err(Error::tls(format!(
            "{}: no CRL found in the PEM",
            path.display()
        )));
    }
    Ok(crls)
}

/// Refuses a CRL that does not parse or that no CA of the bundle signed.
fn check_crl_issuer(
    crl: &CertificateRevocationListDer<'_>,
    cas: &[CertificateDer<'static>],
    path: &Path,
    bundle: &Path,
) -> Result<(), Error> {
    let (_, parsed) = x509_parser::parse_x509_crl(crl)
        .map_err(|e| Error::tls(format!("{} is not a valid CRL", path.display())).with(e))?;
    let signed_by_ours = cas.iter().any(|der| {
        x509_parser::parse_x509_certificate(der).is_ok_and(|(_, ca)| {
            ca.subject() == parsed.issuer() && parsed.verify_signature(ca.public_key()).is_ok()
        })
    });
    if !signed_by_ours {
        return Err(Error::tls(format!(
            "{} is not signed by a CA in {}",
            path.display(),
            bundle.display()
        )));
    }
    Ok(())
}
