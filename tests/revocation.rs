//! Revocation (issue 14): a client listed in the CRL fails the handshake while a good client
//! beside it goes on; taking it off the CRL lets it back after the reload; CRLs in PEM and
//! DER; CRLs that do not parse or come from another CA are refused and the old list stays.
//!
//! CRLs are made by `certs::revoke`, the code behind `satellite certs --revoke`.

mod common;

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{atomic::AtomicUsize, Arc},
};

use common::{echo_call, router, Live};
use satellite::{
    app::certs::{self, crl_file, issue_client, CertFiles, CertOptions},
    grpc::{
        self,
        reload::Reloader,
        tls::{client_config, Identity, Roots},
        tls_reload::{self, ReloadingIdentity, ReloadingVerifier},
        Channel, Code, Endpoint, ServerConfig, Transport,
    },
};
use tokio::{net::TcpListener, sync::oneshot};

struct Server {
    addr: SocketAddr,
    dir: PathBuf,
    files: CertFiles,
    reloader: Reloader,
    _stop: oneshot::Sender<()>,
}

/// A PKI in `dir` with clients "good" and "bad", and an empty CRL.
fn pki(dir: &Path) -> CertFiles {
    let files = certs::generate(&CertOptions::new(dir)).unwrap();
    for name in ["good", "bad"] {
        issue_client(dir, name, 1, false).unwrap();
    }
    // Taking a certificate off a CRL that does not exist yet makes an empty one.
    let (_, listed) = certs::revoke(dir, &files.client_cert, 1, true).unwrap();
    assert_eq!(listed, 0);
    files
}

async fn start(dir: &Path, crls: &[PathBuf]) -> Server {
    let files = CertFiles::in_dir(dir);
    let identity =
        ReloadingIdentity::from_pem_files(&files.server_cert, &files.server_key).unwrap();
    let verifier = ReloadingVerifier::from_files(&files.ca_cert, crls).unwrap();
    let tls = tls_reload::server_config(identity, Some(verifier.clone())).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(grpc::run(
        listener,
        ServerConfig::new(Transport::Tls(tls)),
        router(&Live::default(), &Arc::new(AtomicUsize::new(0))),
        async {
            let _ = stopped.await;
        },
    ));
    Server {
        addr,
        dir: dir.to_path_buf(),
        files,
        reloader: Reloader::new().watch(verifier),
        _stop: stop,
    }
}

impl Server {
    fn cert_of(&self, name: &str) -> PathBuf {
        self.dir.join(format!("client-{name}-cert.pem"))
    }

    /// A new channel (so a new handshake) as the client named `name`.
    fn channel_as(&self, name: &str) -> Channel {
        let identity = Identity::from_pem_files(
            &self.cert_of(name),
            &self.dir.join(format!("client-{name}-key.pem")),
        )
        .unwrap();
        let roots = Roots::from_pem_file(&self.files.ca_cert).unwrap();
        let endpoint = Endpoint::new(self.addr.to_string())
            .tls(client_config(&roots, Some(&identity)).unwrap())
            .server_name("localhost");
        Channel::lazy(endpoint).unwrap()
    }

    async fn call_as(&self, name: &str) -> Result<String, Code> {
        echo_call(&self.channel_as(name), name)
            .await
            .map(|reply| reply.peer)
            .map_err(|status| status.code())
    }
}

#[tokio::test]
async fn a_revoked_client_is_refused_beside_a_good_one_and_let_back_after_unrevoking() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let mut server = start(dir.path(), &[crl_file(dir.path())]).await;
    assert_eq!(server.call_as("good").await.unwrap(), "CN=good");
    assert_eq!(server.call_as("bad").await.unwrap(), "CN=bad");
    let open = server.channel_as("good");
    echo_call(&open, "before").await.unwrap();

    certs::revoke(dir.path(), &server.cert_of("bad"), 1, false).unwrap();
    // Not in force until the reload.
    assert!(server.call_as("bad").await.is_ok());
    assert_eq!(server.reloader.check(), 0);
    assert_eq!(server.call_as("bad").await, Err(Code::Unavailable));
    assert_eq!(server.call_as("good").await.unwrap(), "CN=good");
    echo_call(&open, "an open connection goes on")
        .await
        .unwrap();

    certs::revoke(dir.path(), &server.cert_of("bad"), 1, true).unwrap();
    assert_eq!(server.call_as("bad").await, Err(Code::Unavailable));
    assert_eq!(server.reloader.check(), 0);
    assert_eq!(server.call_as("bad").await.unwrap(), "CN=bad");
}

#[tokio::test]
async fn a_der_crl_works_too() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let (crl, _) = certs::revoke(
        dir.path(),
        &dir.path().join("client-bad-cert.pem"),
        1,
        false,
    )
    .unwrap();
    let pem = fs::read(&crl).unwrap();
    let (_, block) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let der = dir.path().join("crl.der");
    fs::write(&der, &block.contents).unwrap();
    let server = start(dir.path(), &[der]).await;
    assert_eq!(server.call_as("bad").await, Err(Code::Unavailable));
    assert_eq!(server.call_as("good").await.unwrap(), "CN=good");
}

#[tokio::test]
async fn broken_or_foreign_crls_are_refused_and_the_old_list_stays() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let crl = crl_file(dir.path());
    certs::revoke(
        dir.path(),
        &dir.path().join("client-bad-cert.pem"),
        1,
        false,
    )
    .unwrap();
    let mut server = start(dir.path(), std::slice::from_ref(&crl)).await;
    assert_eq!(server.call_as("bad").await, Err(Code::Unavailable));

    // Another CA's CRL (listing nothing of ours) would revoke nothing: refused.
    let other = tempfile::tempdir().unwrap();
    let other_files = certs::generate(&CertOptions::new(other.path())).unwrap();
    certs::revoke(other.path(), &other_files.client_cert, 1, false).unwrap();
    let good_crl = fs::read(&crl).unwrap();
    for (broken, why) in [
        (fs::read(crl_file(other.path())).unwrap(), "foreign"),
        (
            b"-----BEGIN X509 CRL-----\n!!\n-----END X509 CRL-----\n".to_vec(),
            "bad PEM",
        ),
        (b"\x30\x03\x02\x01\x00".to_vec(), "bad DER"),
        (
            b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".to_vec(),
            "no CRL",
        ),
    ] {
        fs::write(&crl, &broken).unwrap();
        assert_eq!(server.reloader.check(), 1, "{why} is refused");
        assert_eq!(server.call_as("bad").await, Err(Code::Unavailable), "{why}");
        assert!(server.call_as("good").await.is_ok(), "{why}");
    }
    fs::write(&crl, &good_crl).unwrap();
    assert_eq!(server.reloader.check(), 0);

    // At startup the same files are errors that name them.
    fs::write(&crl, fs::read(crl_file(other.path())).unwrap()).unwrap();
    let files = CertFiles::in_dir(dir.path());
    let err = ReloadingVerifier::from_files(&files.ca_cert, std::slice::from_ref(&crl))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("crl.pem") && err.contains("not signed by a CA"),
        "{err}"
    );
}
