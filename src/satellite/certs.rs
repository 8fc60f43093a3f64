//! The demo PKI: a CA, a server certificate and a client certificate, made with rcgen.
//!
//! [`generate`] writes six PEM files (see [`CertFiles`]) for `satellite certs`; [`ensure`] is
//! the demo's generate-on-first-use; [`generate_in_memory`] returns the same PKI as strings, with
//! the validity window and names under the caller's control, so tests can build expired,
//! foreign-CA and wrong-SAN certificates without touching disk.
//!
//! Keys are ECDSA P-256 (rcgen's default), which rustls and stock gRPC clients all accept.
//! Private keys are created with mode 0600 from the start rather than chmod-ed afterwards, so
//! there is no moment when another user could read them.

use std::{
    error::Error,
    fmt,
    fs::{self, File, OpenOptions},
    io::{self, Write},
    net::IpAddr,
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// Validity of generated certificates unless told otherwise, in days.
pub const DEFAULT_DAYS: u32 = 30;

/// Where the demo keeps its PKI unless told otherwise.
pub const DEFAULT_DIR: &str = "certs";

/// Common name of the demo CA.
pub const CA_NAME: &str = "satellite demo CA";

/// Common name of the demo server certificate (clients check the SANs, not this).
pub const SERVER_NAME: &str = "satellite-server";

/// Common name of the demo client certificate, which the server sees as the caller.
pub const CLIENT_NAME: &str = "satellite-client";

/// Names every server certificate carries, so loopback works over IPv4, IPv6 and by name.
pub const DEFAULT_SANS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// How far back certificates are valid from, so a peer whose clock runs a little behind
/// still accepts a certificate made a moment ago.
const BACKDATE: Duration = Duration::hours(1);

/// What [`generate`] writes and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertOptions {
    /// Directory for the six files; created if missing.
    pub out: PathBuf,
    /// Validity from now, in days (at least 1).
    pub days: u32,
    /// Server names beyond [`DEFAULT_SANS`]: an IP SAN if it parses as an address, else DNS.
    pub extra_sans: Vec<String>,
    /// Overwrite existing files instead of refusing.
    pub force: bool,
}

impl CertOptions {
    /// Defaults, writing into `out`.
    pub fn new(out: impl Into<PathBuf>) -> Self {
        Self {
            out: out.into(),
            ..Self::default()
        }
    }
}

impl Default for CertOptions {
    fn default() -> Self {
        Self {
            out: PathBuf::from(DEFAULT_DIR),
            days: DEFAULT_DAYS,
            extra_sans: Vec::new(),
            force: false,
        }
    }
}

/// The paths of the six PEM files in a PKI directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFiles {
    /// `ca-cert.pem`: the CA both sides trust.
    pub ca_cert: PathBuf,
    /// `ca-key.pem`: the CA's private key (needed only to issue more certificates).
    pub ca_key: PathBuf,
    /// `server-cert.pem`: the server's certificate, signed by the CA.
    pub server_cert: PathBuf,
    /// `server-key.pem`: the server's private key.
    pub server_key: PathBuf,
    /// `client-cert.pem`: the client's certificate, signed by the CA.
    pub client_cert: PathBuf,
    /// `client-key.pem`: the client's private key.
    pub client_key: PathBuf,
}

impl CertFiles {
    /// The standard file names inside `dir` (nothing is read or checked).
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca_cert: dir.join("ca-cert.pem"),
            ca_key: dir.join("ca-key.pem"),
            server_cert: dir.join("server-cert.pem"),
            server_key: dir.join("server-key.pem"),
            client_cert: dir.join("client-cert.pem"),
            client_key: dir.join("client-key.pem"),
        }
    }

    /// All six paths, certificates and keys in pairs (CA, server, client).
    pub fn paths(&self) -> [&Path; 6] {
        [
            &self.ca_cert,
            &self.ca_key,
            &self.server_cert,
            &self.server_key,
            &self.client_cert,
            &self.client_key,
        ]
    }
}

/// What [`generate_in_memory`] makes: validity window and names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PkiOptions {
    /// Start of validity for all three certificates.
    pub not_before: OffsetDateTime,
    /// End of validity for all three certificates.
    pub not_after: OffsetDateTime,
    /// The CA's common name.
    pub ca_name: String,
    /// The server certificate's SANs: an IP SAN if it parses as an address, else DNS.
    pub server_sans: Vec<String>,
    /// The client certificate's common name.
    pub client_name: String,
}

impl PkiOptions {
    /// Defaults valid from an hour ago for `days` days.
    ///
    /// # Errors
    ///
    /// [`CertError::Validity`] if `days` is 0 or the end date is past what `time` represents.
    pub fn valid_for(days: u32) -> Result<Self, CertError> {
        let now = OffsetDateTime::now_utc();
        let bad = || CertError::Validity(format!("{days} days is not a usable validity"));
        if days == 0 {
            return Err(bad());
        }
        let not_after = now
            .checked_add(Duration::days(i64::from(days)))
            .ok_or_else(bad)?;
        Ok(Self {
            not_before: now - BACKDATE,
            not_after,
            ca_name: CA_NAME.to_owned(),
            server_sans: DEFAULT_SANS.iter().map(|s| (*s).to_owned()).collect(),
            client_name: CLIENT_NAME.to_owned(),
        })
    }
}

impl Default for PkiOptions {
    fn default() -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            not_before: now - BACKDATE,
            not_after: now + Duration::days(i64::from(DEFAULT_DAYS)),
            ca_name: CA_NAME.to_owned(),
            server_sans: DEFAULT_SANS.iter().map(|s| (*s).to_owned()).collect(),
            client_name: CLIENT_NAME.to_owned(),
        }
    }
}

/// A generated PKI as PEM text: certificates and PKCS#8 private keys.
#[derive(Clone)]
pub struct Pki {
    /// The CA certificate.
    pub ca_cert: String,
    /// The CA private key.
    pub ca_key: String,
    /// The server certificate (SANs and serverAuth), signed by the CA.
    pub server_cert: String,
    /// The server private key.
    pub server_key: String,
    /// The client certificate (clientAuth), signed by the CA.
    pub client_cert: String,
    /// The client private key.
    pub client_key: String,
}

impl fmt::Debug for Pki {
    // Keys stay out of logs and test failure output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

/// Makes a CA and a server and a client certificate signed by it, all in memory.
///
/// # Errors
///
/// [`CertError::Validity`] if `not_before` is not before `not_after`, [`CertError::BadSan`]
/// for a server name rcgen cannot encode, [`CertError::Rcgen`] if signing fails.
pub fn generate_in_memory(opts: &PkiOptions) -> Result<Pki, CertError> {
    if opts.not_before >= opts.not_after {
        return Err(CertError::Validity(format!(
            "not_before {} is not before not_after {}",
            opts.not_before, opts.not_after
        )));
    }
    let with_validity = |mut params: CertificateParams| {
        params.not_before = opts.not_before;
        params.not_after = opts.not_after;
        params
    };

    let mut ca = with_validity(CertificateParams::default());
    ca.distinguished_name = common_name(&opts.ca_name);
    // Constrained(0): this CA signs leaf certificates only, never another CA.
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let Leaves { server, client } = server_and_client(opts, &issuer)?;
    Ok(Pki {
        ca_cert: ca_cert.pem(),
        ca_key: issuer.key().serialize_pem(),
        server_cert: server.0,
        server_key: server.1,
        client_cert: client.0,
        client_key: client.1,
    })
}

/// The two leaves of a PKI, each as (cert PEM, key PEM).
struct Leaves {
    server: (String, String),
    client: (String, String),
}

/// The server and client certificates of a PKI, signed by `issuer`.
fn server_and_client(opts: &PkiOptions, issuer: &Issuer<'_, KeyPair>) -> Result<Leaves, CertError> {
    let with_validity = |mut params: CertificateParams| {
        params.not_before = opts.not_before;
        params.not_after = opts.not_after;
        params
    };
    let mut server = with_validity(CertificateParams::default());
    server.distinguished_name = common_name(SERVER_NAME);
    server.subject_alt_names = opts
        .server_sans
        .iter()
        .map(|name| san(name))
        .collect::<Result<_, _>>()?;
    let server = leaf(server, ExtendedKeyUsagePurpose::ServerAuth, issuer)?;

    let mut client = with_validity(CertificateParams::default());
    client.distinguished_name = common_name(&opts.client_name);
    let client = leaf(client, ExtendedKeyUsagePurpose::ClientAuth, issuer)?;
    Ok(Leaves { server, client })
}

/// Re-issues the server and client certificates (new keys, new serials, validity from now)
/// from the CA already in `opts.out`, which is kept; `force` is implied.
///
/// Each file is replaced by a rename, so a server watching them never reads half a file;
/// between the certificate and its key it may see a pair that does not match, which it
/// refuses and then takes once the key follows.
///
/// # Errors
///
/// [`CertError::Ca`] if the CA cannot be read, [`CertError::Io`] naming the path that failed,
/// and the errors of [`PkiOptions::valid_for`].
pub fn renew(opts: &CertOptions) -> Result<CertFiles, CertError> {
    let files = CertFiles::in_dir(&opts.out);
    let (ca_cert, ca_key) = (read_ca(&files.ca_cert)?, read_ca(&files.ca_key)?);
    let ca_error = |path: &Path| {
        let path = path.to_path_buf();
        move |e: rcgen::Error| CertError::Ca {
            path,
            reason: e.to_string(),
        }
    };
    let key = KeyPair::from_pem(&ca_key).map_err(ca_error(&files.ca_key))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_cert, key).map_err(ca_error(&files.ca_cert))?;
    let mut pki_opts = PkiOptions::valid_for(opts.days)?;
    for name in &opts.extra_sans {
        if !pki_opts.server_sans.contains(name) {
            pki_opts.server_sans.push(name.clone());
        }
    }
    let Leaves { server, client } = server_and_client(&pki_opts, &issuer)?;
    replace_pem(&files.server_key, &server.1, true)?;
    replace_pem(&files.server_cert, &server.0, false)?;
    replace_pem(&files.client_key, &client.1, true)?;
    replace_pem(&files.client_cert, &client.0, false)?;
    Ok(files)
}

/// Replaces `path` with a file holding `pem` by writing a sibling and renaming it over.
fn replace_pem(path: &Path, pem: &str, private: bool) -> Result<(), CertError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    write_pem(&tmp, pem, private, true)?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        CertError::io(path, e)
    })
}

/// The CRL file `certs --revoke` keeps in a PKI directory.
pub fn crl_file(dir: &Path) -> PathBuf {
    dir.join("crl.pem")
}

/// Adds (or, with `unrevoke`, removes) the certificate in `cert` to the CRL in `dir`
/// ([`crl_file`]), signed by the CA in `dir`, valid for `days`; makes the CRL if there is
/// none. Returns the CRL's path and how many certificates it now lists. The file is replaced
/// by a rename, so a server watching it never reads half a CRL.
///
/// # Errors
///
/// [`CertError::Ca`] if the CA cannot be read, [`CertError::Revoke`] if `cert` cannot be read,
/// was not issued by this CA, or the existing CRL is not this CA's; [`CertError::Io`] naming
/// the path that failed.
pub fn revoke(
    dir: &Path,
    cert: &Path,
    days: u32,
    unrevoke: bool,
) -> Result<(PathBuf, usize), CertError> {
    use rcgen::{
        CertificateRevocationListParams, KeyIdMethod, RevocationReason, RevokedCertParams,
        SerialNumber,
    };
    use x509_parser::{num_bigint::BigUint, pem::parse_x509_pem};

    let files = CertFiles::in_dir(dir);
    let ca_pem = read_ca(&files.ca_cert)?;
    let ca_key = read_ca(&files.ca_key)?;
    let bad_ca = |reason: String| CertError::Ca {
        path: files.ca_cert.clone(),
        reason,
    };
    let (_, ca_block) = parse_x509_pem(ca_pem.as_bytes()).map_err(|e| bad_ca(e.to_string()))?;
    let ca = ca_block.parse_x509().map_err(|e| bad_ca(e.to_string()))?;
    let revoke_error = |path: &Path, reason: String| CertError::Revoke {
        path: path.to_path_buf(),
        reason,
    };

    let cert_pem = fs::read(cert).map_err(|e| revoke_error(cert, e.to_string()))?;
    let (_, block) = parse_x509_pem(&cert_pem)
        .map_err(|e| revoke_error(cert, format!("not a PEM certificate: {e}")))?;
    let target = block
        .parse_x509()
        .map_err(|e| revoke_error(cert, format!("not a certificate: {e}")))?;
    if target.issuer() != ca.subject() || target.verify_signature(Some(ca.public_key())).is_err() {
        return Err(revoke_error(
            cert,
            format!("was not issued by the CA in {}", files.ca_cert.display()),
        ));
    }
    let serial = target.raw_serial().to_vec();

    // What the CRL already lists, with the dates it gave, and its number.
    let crl_path = crl_file(dir);
    let now = OffsetDateTime::now_utc();
    let mut revoked: Vec<(Vec<u8>, OffsetDateTime)> = Vec::new();
    let mut number = BigUint::from(0_u8);
    match fs::read(&crl_path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(CertError::io(&crl_path, e)),
        Ok(pem) => {
            let (_, block) = parse_x509_pem(&pem)
                .map_err(|e| revoke_error(&crl_path, format!("not a PEM CRL: {e}")))?;
            let (_, crl) = x509_parser::parse_x509_crl(&block.contents)
                .map_err(|e| revoke_error(&crl_path, format!("not a CRL: {e}")))?;
            if crl.verify_signature(ca.public_key()).is_err() {
                return Err(revoke_error(
                    &crl_path,
                    "is not signed by this directory's CA".to_owned(),
                ));
            }
            for entry in crl.iter_revoked_certificates() {
                let when = entry.revocation_date.to_datetime();
                revoked.push((entry.raw_serial().to_vec(), when));
            }
            if let Some(n) = crl.crl_number() {
                number = n.clone();
            }
        }
    }
    revoked.retain(|(s, _)| *s != serial);
    if !unrevoke {
        revoked.push((serial, now));
    }
    // RFC 5280 §5.2.3: the CRL number increases with each CRL; 20 octets at most.
    number += 1_u8;
    let number = number.to_bytes_be();
    if number.len() > 20 {
        return Err(revoke_error(
            &crl_path,
            "its CRL number is exhausted".to_owned(),
        ));
    }

    let window = PkiOptions::valid_for(days)?;
    let params = CertificateRevocationListParams {
        this_update: now - BACKDATE,
        next_update: window.not_after,
        crl_number: SerialNumber::from_slice(&number),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|(serial, when)| RevokedCertParams {
                serial_number: SerialNumber::from_slice(serial),
                revocation_time: *when,
                reason_code: Some(RevocationReason::Unspecified),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, KeyPair::from_pem(&ca_key)?)?;
    let crl = params.signed_by(&issuer)?;
    replace_pem(&crl_path, &crl.pem()?, false)?;
    Ok((crl_path, revoked.len()))
}

/// Writes a fresh CA, server and client certificate with keys into `opts.out`.
///
/// Nothing is written unless every file can be: existing files are checked first.
///
/// # Errors
///
/// [`CertError::Exists`] naming the first existing file when `force` is off, [`CertError::Io`]
/// naming the path that failed, and the errors of [`PkiOptions::valid_for`] and
/// [`generate_in_memory`].
pub fn generate(opts: &CertOptions) -> Result<CertFiles, CertError> {
    let files = CertFiles::in_dir(&opts.out);
    if !opts.force {
        if let Some(path) = files.paths().into_iter().find(|p| p.exists()) {
            return Err(CertError::Exists(path.to_path_buf()));
        }
    }
    let mut pki_opts = PkiOptions::valid_for(opts.days)?;
    for name in &opts.extra_sans {
        if !pki_opts.server_sans.contains(name) {
            pki_opts.server_sans.push(name.clone());
        }
    }
    let pki = generate_in_memory(&pki_opts)?;

    fs::create_dir_all(&opts.out).map_err(|e| CertError::io(&opts.out, e))?;
    write_pem(&files.ca_cert, &pki.ca_cert, false, opts.force)?;
    write_pem(&files.ca_key, &pki.ca_key, true, opts.force)?;
    write_pem(&files.server_cert, &pki.server_cert, false, opts.force)?;
    write_pem(&files.server_key, &pki.server_key, true, opts.force)?;
    write_pem(&files.client_cert, &pki.client_cert, false, opts.force)?;
    write_pem(&files.client_key, &pki.client_key, true, opts.force)?;
    Ok(files)
}

/// The demo's generate-on-first-use: reuses the six files in `dir` if all exist, otherwise
/// generates them with defaults.
///
/// # Errors
///
/// As [`generate`]; in particular a directory holding only some of the files is refused with
/// [`CertError::Exists`] rather than half overwritten.
pub fn ensure(dir: &Path) -> Result<CertFiles, CertError> {
    let files = CertFiles::in_dir(dir);
    if files.paths().iter().all(|p| p.is_file()) {
        return Ok(files);
    }
    generate(&CertOptions::new(dir))
}

/// The certificate and key files of the client named `name` in `dir`.
pub fn client_files(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("client-{name}-cert.pem")),
        dir.join(format!("client-{name}-key.pem")),
    )
}

/// The URI SAN of a named client, which authorization policies can match
/// (`spiffe://satellite/reader`); the subject carries the name too (`CN=reader`).
pub fn client_uri(name: &str) -> String {
    format!("spiffe://satellite/{name}")
}

/// Issues a client certificate with its own identity, `CN=name` and the URI SAN
/// [`client_uri`], from the CA in `dir`, and writes it as [`client_files`].
///
/// # Errors
///
/// [`CertError::BadName`] for a name that is not 1 to 64 of `[A-Za-z0-9._-]` (it becomes a
/// file name and a URI), [`CertError::Ca`] if the CA in `dir` cannot be read,
/// [`CertError::Exists`] unless `force`, and the errors of [`PkiOptions::valid_for`].
pub fn issue_client(
    dir: &Path,
    name: &str,
    days: u32,
    force: bool,
) -> Result<(PathBuf, PathBuf), CertError> {
    let valid_name = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !name.starts_with('.');
    if !valid_name {
        return Err(CertError::BadName(name.to_owned()));
    }
    let (cert_path, key_path) = client_files(dir, name);
    if !force {
        if let Some(path) = [&cert_path, &key_path].into_iter().find(|p| p.exists()) {
            return Err(CertError::Exists(path.clone()));
        }
    }
    let files = CertFiles::in_dir(dir);
    let (ca_cert, ca_key) = (read_ca(&files.ca_cert)?, read_ca(&files.ca_key)?);
    let (cert, key) = sign_client(&ca_cert, &ca_key, name, days).map_err(|e| match e {
        CertError::Rcgen(e) => CertError::Ca {
            path: files.ca_cert.clone(),
            reason: e.to_string(),
        },
        e => e,
    })?;
    write_pem(&cert_path, &cert, false, force)?;
    write_pem(&key_path, &key, true, force)?;
    Ok((cert_path, key_path))
}

/// Signs a client certificate named `name` ([`issue_client`]'s identity) with the CA given as
/// PEM, valid for `days`; returns (cert PEM, key PEM). Nothing touches the disk.
///
/// # Errors
///
/// [`CertError::Rcgen`] if the CA does not parse or signing fails, and the errors of
/// [`PkiOptions::valid_for`].
pub fn sign_client(
    ca_cert: &str,
    ca_key: &str,
    name: &str,
    days: u32,
) -> Result<(String, String), CertError> {
    let issuer = Issuer::from_ca_cert_pem(ca_cert, KeyPair::from_pem(ca_key)?)?;
    let window = PkiOptions::valid_for(days)?;
    let mut params = CertificateParams::default();
    params.not_before = window.not_before;
    params.not_after = window.not_after;
    params.distinguished_name = common_name(name);
    let uri = client_uri(name)
        .try_into()
        .map_err(|_| CertError::BadName(name.to_owned()))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    leaf(params, ExtendedKeyUsagePurpose::ClientAuth, &issuer)
}

fn read_ca(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|e| CertError::Ca {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// A distinguished name with just a common name.
fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

/// An IP SAN if `name` parses as an address, else a DNS SAN.
fn san(name: &str) -> Result<SanType, CertError> {
    let bad = |reason: String| CertError::BadSan {
        name: name.to_owned(),
        reason,
    };
    if name.trim().is_empty() || name.trim() != name {
        return Err(bad("empty or padded with spaces".to_owned()));
    }
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let dns = name
        .try_into()
        .map_err(|e: rcgen::Error| bad(e.to_string()))?;
    Ok(SanType::DnsName(dns))
}

/// Signs an end-entity certificate for `eku` with a fresh key; returns (cert PEM, key PEM).
fn leaf(
    mut params: CertificateParams,
    eku: ExtendedKeyUsagePurpose,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<(String, String), CertError> {
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![eku];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes one PEM file; keys are created with mode 0600 so they are never world-readable.
fn write_pem(path: &Path, pem: &str, private: bool, force: bool) -> Result<(), CertError> {
    // Remove first so a forced overwrite gets a fresh file with the right mode: an existing
    // file keeps its old permissions when merely truncated.
    if force {
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(CertError::io(path, e)),
            _ => {}
        }
    }
    let mut file = create_new(path, private).map_err(|e| match e.kind() {
        // Someone created it between our check and now: still refuse.
        io::ErrorKind::AlreadyExists => CertError::Exists(path.to_path_buf()),
        _ => CertError::io(path, e),
    })?;
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| CertError::io(path, e))
}

/// Creates a new file, failing if it exists; `private` files are 0600 on Unix.
fn create_new(path: &Path, private: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    options.open(path)
}

/// Why the PKI could not be made or written.
#[derive(Debug)]
pub enum CertError {
    /// A server name that cannot go into a certificate.
    BadSan {
        /// The name as given.
        name: String,
        /// Why it was refused.
        reason: String,
    },
    /// The CA certificate or key needed to issue more certificates cannot be used.
    Ca {
        /// The CA file.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// A certificate that cannot be revoked, or a CRL that cannot be extended.
    Revoke {
        /// The certificate or CRL file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A client name that cannot name a certificate.
    BadName(String),
    /// A file that would be overwritten without `force`.
    Exists(PathBuf),
    /// Creating the directory or writing a file failed.
    Io {
        /// The path being created or written.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Key generation or signing failed.
    Rcgen(rcgen::Error),
    /// An unusable validity window.
    Validity(String),
}

impl CertError {
    fn io(path: &Path, source: io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadSan { name, reason } => {
                write!(f, "invalid subject alternative name {name:?}: {reason}")
            }
            Self::Ca { path, reason } => write!(
                f,
                "cannot use the CA in {}: {reason} (run `satellite certs` first)",
                path.display()
            ),
            Self::Revoke { path, reason } => write!(f, "{}: {reason}", path.display()),
            Self::BadName(name) => write!(
                f,
                "invalid client name {name:?}: use 1 to 64 of A-Z a-z 0-9 . _ - (not starting with .)"
            ),
            Self::Exists(path) => write!(
                f,
                "{} already exists; refusing to overwrite it (use --force)",
                path.display()
            ),
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Self::Rcgen(e) => write!(f, "certificate generation failed: {e}"),
            Self::Validity(why) => write!(f, "invalid validity: {why}"),
        }
    }
}

impl Error for CertError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            Self::Rcgen(e) => Some(e),
            _ => None,
        }
    }
}

impl From<rcgen::Error> for CertError {
    fn from(e: rcgen::Error) -> Self {
        Self::Rcgen(e)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use x509_parser::{certificate::X509Certificate, extensions::GeneralName, pem::parse_x509_pem};

    use super::*;

    /// Parses the first certificate in `pem` and hands it to `check`.
    fn with_cert<R>(pem: &str, check: impl FnOnce(&X509Certificate<'_>) -> R) -> R {
        let (_, pem) = parse_x509_pem(pem.as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        check(&cert)
    }

    fn sans(pem: &str) -> (Vec<String>, Vec<IpAddr>) {
        with_cert(pem, |cert| {
            let ext = cert.subject_alternative_name().unwrap().unwrap();
            let mut dns = Vec::new();
            let mut ips = Vec::new();
            for name in &ext.value.general_names {
                match name {
                    GeneralName::DNSName(d) => dns.push((*d).to_owned()),
                    GeneralName::IPAddress(b) if b.len() == 4 => {
                        ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap()));
                    }
                    GeneralName::IPAddress(b) => {
                        ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap()));
                    }
                    other => panic!("unexpected SAN {other:?}"),
                }
            }
            (dns, ips)
        })
    }

    fn common_name_of(pem: &str) -> String {
        with_cert(pem, |cert| {
            let cn = cert.subject().iter_common_name().next().unwrap();
            cn.as_str().unwrap().to_owned()
        })
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn generate_writes_six_files_with_private_keys_0600() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("nested/certs");
        let files = generate(&CertOptions::new(&out)).unwrap();
        assert_eq!(files, CertFiles::in_dir(&out));
        let names: Vec<_> = fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(
            names,
            [
                "ca-cert.pem",
                "ca-key.pem",
                "client-cert.pem",
                "client-key.pem",
                "server-cert.pem",
                "server-key.pem"
            ]
        );
        for key in [&files.ca_key, &files.server_key, &files.client_key] {
            assert!(fs::read_to_string(key).unwrap().contains("PRIVATE KEY"));
            #[cfg(unix)]
            assert_eq!(mode(key), 0o600, "{}", key.display());
        }
        for cert in [&files.ca_cert, &files.server_cert, &files.client_cert] {
            assert!(fs::read_to_string(cert)
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE"));
        }
    }

    #[test]
    fn server_cert_has_default_and_extra_sans_and_server_auth() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = CertOptions::new(dir.path());
        opts.extra_sans = vec![
            "satellite.example".into(),
            "10.1.2.3".into(),
            "fe80::1".into(),
            "localhost".into(),
        ];
        let files = generate(&opts).unwrap();
        let pem = fs::read_to_string(&files.server_cert).unwrap();
        let (dns, ips) = sans(&pem);
        assert_eq!(dns, ["localhost", "satellite.example"]);
        assert_eq!(
            ips,
            [
                IpAddr::from(Ipv4Addr::LOCALHOST),
                IpAddr::from(Ipv6Addr::LOCALHOST),
                "10.1.2.3".parse::<IpAddr>().unwrap(),
                "fe80::1".parse::<IpAddr>().unwrap(),
            ]
        );
        with_cert(&pem, |cert| {
            let eku = cert.extended_key_usage().unwrap().unwrap().value;
            assert!(eku.server_auth && !eku.client_auth);
            assert!(!cert.is_ca());
        });
    }

    #[test]
    fn ca_and_client_have_their_roles() {
        let pki = generate_in_memory(&PkiOptions::default()).unwrap();
        with_cert(&pki.ca_cert, |cert| {
            assert!(cert.is_ca());
            assert!(cert.key_usage().unwrap().unwrap().value.key_cert_sign());
        });
        assert_eq!(common_name_of(&pki.ca_cert), CA_NAME);
        assert_eq!(common_name_of(&pki.client_cert), "satellite-client");
        with_cert(&pki.client_cert, |cert| {
            let eku = cert.extended_key_usage().unwrap().unwrap().value;
            assert!(eku.client_auth && !eku.server_auth);
            assert_eq!(cert.issuer().to_string(), "CN=satellite demo CA");
        });
    }

    #[test]
    fn validity_is_an_hour_back_to_days_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = CertOptions::new(dir.path());
        opts.days = 2;
        let files = generate(&opts).unwrap();
        let now = OffsetDateTime::now_utc().unix_timestamp();
        with_cert(&fs::read_to_string(files.client_cert).unwrap(), |cert| {
            let v = cert.validity();
            let back = now - v.not_before.timestamp();
            let ahead = v.not_after.timestamp() - now;
            assert!((3_590..=3_610).contains(&back), "{back}");
            assert!((2 * 86_400 - 10..=2 * 86_400).contains(&ahead), "{ahead}");
        });
    }

    #[test]
    fn refuses_to_overwrite_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let files = CertFiles::in_dir(dir.path());
        fs::write(&files.server_key, "keep me").unwrap();
        let err = generate(&CertOptions::new(dir.path())).unwrap_err();
        assert!(matches!(&err, CertError::Exists(p) if *p == files.server_key));
        assert!(err.to_string().contains("server-key.pem"), "{err}");
        // Nothing else was written.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(fs::read_to_string(&files.server_key).unwrap(), "keep me");
    }

    #[test]
    fn force_overwrites_and_resets_key_mode() {
        let dir = tempfile::tempdir().unwrap();
        let first = generate(&CertOptions::new(dir.path())).unwrap();
        let old_ca = fs::read_to_string(&first.ca_cert).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&first.client_key, fs::Permissions::from_mode(0o644)).unwrap();
        }
        let mut opts = CertOptions::new(dir.path());
        opts.force = true;
        let second = generate(&opts).unwrap();
        assert_ne!(fs::read_to_string(&second.ca_cert).unwrap(), old_ca);
        #[cfg(unix)]
        assert_eq!(mode(&second.client_key), 0o600);
    }

    #[test]
    fn ensure_reuses_or_generates() {
        let dir = tempfile::tempdir().unwrap();
        let files = ensure(dir.path()).unwrap();
        let ca = fs::read_to_string(&files.ca_cert).unwrap();
        assert_eq!(ensure(dir.path()).unwrap(), files);
        assert_eq!(fs::read_to_string(&files.ca_cert).unwrap(), ca);
        // A partial set is refused, not half overwritten.
        fs::remove_file(&files.client_key).unwrap();
        assert!(matches!(ensure(dir.path()), Err(CertError::Exists(_))));
    }

    #[test]
    fn in_memory_options_shape_the_certificates() {
        let not_after = OffsetDateTime::now_utc() - Duration::days(1);
        let opts = PkiOptions {
            not_before: not_after - Duration::days(2),
            not_after,
            ca_name: "other CA".into(),
            server_sans: vec!["wrong.example".into()],
            client_name: "mallory".into(),
        };
        let pki = generate_in_memory(&opts).unwrap();
        assert_eq!(
            sans(&pki.server_cert),
            (vec!["wrong.example".into()], vec![])
        );
        assert_eq!(common_name_of(&pki.ca_cert), "other CA");
        assert_eq!(common_name_of(&pki.client_cert), "mallory");
        with_cert(&pki.server_cert, |cert| {
            assert_eq!(
                cert.validity().not_after.timestamp(),
                not_after.unix_timestamp()
            );
            assert!(!cert.validity().is_valid());
        });
        // Two runs make two unrelated CAs.
        let other = generate_in_memory(&PkiOptions::default()).unwrap();
        assert_ne!(other.ca_cert, pki.ca_cert);
    }

    #[test]
    fn named_clients_get_distinct_identities_from_the_existing_ca() {
        let dir = tempfile::tempdir().unwrap();
        let files = generate(&CertOptions::new(dir.path())).unwrap();
        let ca = fs::read_to_string(&files.ca_cert).unwrap();
        let (cert, key) = issue_client(dir.path(), "reader", 1, false).unwrap();
        assert_eq!(cert, dir.path().join("client-reader-cert.pem"));
        #[cfg(unix)]
        assert_eq!(mode(&key), 0o600);
        let pem = fs::read_to_string(&cert).unwrap();
        assert_eq!(common_name_of(&pem), "reader");
        with_cert(&pem, |c| {
            assert_eq!(c.issuer().to_string(), "CN=satellite demo CA");
            let san = c.subject_alternative_name().unwrap().unwrap();
            let uris: Vec<_> = san
                .value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some((*u).to_owned()),
                    _ => None,
                })
                .collect();
            assert_eq!(uris, ["spiffe://satellite/reader"]);
            let eku = c.extended_key_usage().unwrap().unwrap().value;
            assert!(eku.client_auth && !eku.server_auth);
        });
        // Verifies against the same CA.
        let (_, ca_pem) = parse_x509_pem(ca.as_bytes()).unwrap();
        let ca_cert = ca_pem.parse_x509().unwrap();
        with_cert(&pem, |c| {
            c.verify_signature(Some(ca_cert.public_key())).unwrap()
        });
        assert!(matches!(
            issue_client(dir.path(), "reader", 1, false),
            Err(CertError::Exists(_))
        ));
        issue_client(dir.path(), "reader", 1, true).unwrap();
        for bad in ["", "a/b", "..", "x y", &"n".repeat(65)] {
            assert!(
                matches!(
                    issue_client(dir.path(), bad, 1, false),
                    Err(CertError::BadName(_))
                ),
                "{bad:?}"
            );
        }
        let empty = tempfile::tempdir().unwrap();
        let err = issue_client(empty.path(), "reader", 1, false).unwrap_err();
        assert!(err.to_string().contains("ca-cert.pem"), "{err}");
    }

    #[test]
    fn renew_keeps_the_ca_and_replaces_the_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let first = generate(&CertOptions::new(dir.path())).unwrap();
        let read = |p: &Path| fs::read_to_string(p).unwrap();
        let (ca, server, client) = (
            read(&first.ca_cert),
            read(&first.server_cert),
            read(&first.client_cert),
        );
        let mut opts = CertOptions::new(dir.path());
        opts.extra_sans = vec!["renewed.example".into()];
        let files = renew(&opts).unwrap();
        assert_eq!(files, first);
        assert_eq!(read(&files.ca_cert), ca);
        assert_ne!(read(&files.server_cert), server);
        assert_ne!(read(&files.client_cert), client);
        assert!(sans(&read(&files.server_cert))
            .0
            .contains(&"renewed.example".to_owned()));
        #[cfg(unix)]
        assert_eq!(mode(&files.server_key), 0o600);
        let (_, ca_pem) = parse_x509_pem(ca.as_bytes()).unwrap();
        let ca_cert = ca_pem.parse_x509().unwrap();
        for cert in [&files.server_cert, &files.client_cert] {
            with_cert(&read(cert), |c| {
                c.verify_signature(Some(ca_cert.public_key())).unwrap()
            });
        }
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 6);
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            renew(&CertOptions::new(empty.path())),
            Err(CertError::Ca { .. })
        ));
    }

    /// The serials a CRL file lists.
    fn crl_serials(path: &Path) -> Vec<Vec<u8>> {
        let pem = fs::read(path).unwrap();
        let (_, block) = parse_x509_pem(&pem).unwrap();
        let (_, crl) = x509_parser::parse_x509_crl(&block.contents).unwrap();
        crl.iter_revoked_certificates()
            .map(|r| r.raw_serial().to_vec())
            .collect()
    }

    fn serial(path: &Path) -> Vec<u8> {
        with_cert(&fs::read_to_string(path).unwrap(), |c| {
            c.raw_serial().to_vec()
        })
    }

    #[test]
    fn revoke_adds_and_removes_serials_in_a_crl_signed_by_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let files = generate(&CertOptions::new(dir.path())).unwrap();
        let (reader, _) = issue_client(dir.path(), "reader", 1, false).unwrap();
        let (crl, n) = revoke(dir.path(), &files.client_cert, 7, false).unwrap();
        assert_eq!((crl.clone(), n), (crl_file(dir.path()), 1));
        assert_eq!(crl_serials(&crl), [serial(&files.client_cert)]);
        // Twice is once.
        assert_eq!(
            revoke(dir.path(), &files.client_cert, 7, false).unwrap().1,
            1
        );
        assert_eq!(revoke(dir.path(), &reader, 7, false).unwrap().1, 2);
        assert_eq!(
            revoke(dir.path(), &files.client_cert, 7, true).unwrap().1,
            1
        );
        assert_eq!(crl_serials(&crl), [serial(&reader)]);
        // Signed by the CA, with an increasing number.
        let pem = fs::read(&crl).unwrap();
        let (_, block) = parse_x509_pem(&pem).unwrap();
        let (_, parsed) = x509_parser::parse_x509_crl(&block.contents).unwrap();
        let ca = fs::read_to_string(&files.ca_cert).unwrap();
        with_cert(&ca, |ca| parsed.verify_signature(ca.public_key()).unwrap());
        assert_eq!(parsed.crl_number().unwrap().to_string(), "4");

        // A certificate from another CA is refused, and so is another CA's CRL.
        let other = tempfile::tempdir().unwrap();
        let other_files = generate(&CertOptions::new(other.path())).unwrap();
        let err = revoke(dir.path(), &other_files.client_cert, 7, false).unwrap_err();
        assert!(err.to_string().contains("not issued by the CA"), "{err}");
        revoke(other.path(), &other_files.client_cert, 7, false).unwrap();
        fs::copy(crl_file(other.path()), &crl).unwrap();
        let err = revoke(dir.path(), &reader, 7, false).unwrap_err();
        assert!(err.to_string().contains("not signed by"), "{err}");
        let err = revoke(dir.path(), &dir.path().join("nope.pem"), 7, false).unwrap_err();
        assert!(err.to_string().contains("nope.pem"), "{err}");
    }

    #[test]
    fn bad_inputs_are_refused() {
        let now = OffsetDateTime::now_utc();
        let opts = PkiOptions {
            not_before: now,
            not_after: now,
            ..PkiOptions::default()
        };
        assert!(matches!(
            generate_in_memory(&opts),
            Err(CertError::Validity(_))
        ));
        assert!(matches!(
            PkiOptions::valid_for(0),
            Err(CertError::Validity(_))
        ));
        assert!(matches!(
            PkiOptions::valid_for(u32::MAX),
            Err(CertError::Validity(_))
        ));
        for name in ["", " localhost", "bad\u{e9}.example"] {
            let opts = PkiOptions {
                server_sans: vec![name.into()],
                ..PkiOptions::default()
            };
            let err = generate_in_memory(&opts).unwrap_err();
            assert!(matches!(err, CertError::BadSan { .. }), "{name:?}: {err}");
        }
        assert!(
            format!("{:?}", generate_in_memory(&PkiOptions::default()).unwrap()).starts_with("Pki")
        );
    }
}
