//! Certificate rotation without a restart (issue 14): a stream in flight survives a server
//! certificate change, a new connection sees the new certificate's serial, a broken
//! replacement is refused while service goes on, a client from a CA added to the bundle is
//! accepted only after the reload, and a client reloads its own certificate.
//!
//! The PKI lives in a temp dir as `satellite certs` writes it; rotation uses
//! `certs::renew`, the code behind `satellite certs --renew`.

mod common;

use std::{
    fs,
    net::SocketAddr,
    path::Path,
    sync::{atomic::AtomicUsize, Arc},
};

use common::{bounded, echo_call, router, EchoRequest, Live, COUNT};
use rustls_pki_types::ServerName;
use satellite::{
    app::certs::{self, generate_in_memory, sign_client, CertFiles, CertOptions, Pki, PkiOptions},
    grpc::{
        self,
        reload::{Reload, Reloader},
        tls::{client_config, Identity, Roots},
        tls_reload::{self, ReloadingIdentity, ReloadingVerifier},
        Channel, Code, Endpoint, Request, ServerConfig, Transport,
    },
};
use tokio::{net::TcpListener, sync::oneshot};

/// Writes `pki` as the six files of a PKI directory.
fn write_pki(dir: &Path, pki: &Pki) -> CertFiles {
    let files = CertFiles::in_dir(dir);
    for (path, pem) in [
        (&files.ca_cert, &pki.ca_cert),
        (&files.ca_key, &pki.ca_key),
        (&files.server_cert, &pki.server_cert),
        (&files.server_key, &pki.server_key),
        (&files.client_cert, &pki.client_cert),
        (&files.client_key, &pki.client_key),
    ] {
        fs::write(path, pem).unwrap();
    }
    files
}

struct Server {
    addr: SocketAddr,
    /// The CA the server certificate comes from, as first written (clients trust it).
    server_ca: String,
    files: CertFiles,
    reloader: Reloader,
    _stop: oneshot::Sender<()>,
}

async fn start(dir: &Path) -> Server {
    let files = write_pki(dir, &generate_in_memory(&PkiOptions::default()).unwrap());
    let identity =
        ReloadingIdentity::from_pem_files(&files.server_cert, &files.server_key).unwrap();
    let verifier = ReloadingVerifier::from_files(&files.ca_cert, &[]).unwrap();
    let tls = tls_reload::server_config(identity.clone(), Some(verifier.clone())).unwrap();
    let reloader = Reloader::new().watch(identity).watch(verifier);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let router = router(&Live::default(), &Arc::new(AtomicUsize::new(0)));
    tokio::spawn(grpc::run(
        listener,
        ServerConfig::new(Transport::Tls(tls)),
        router,
        async {
            let _ = stopped.await;
        },
    ));
    Server {
        addr,
        server_ca: fs::read_to_string(&files.ca_cert).unwrap(),
        files,
        reloader,
        _stop: stop,
    }
}

impl Server {
    fn roots(&self) -> Roots {
        Roots::from_pem(self.server_ca.as_bytes()).unwrap()
    }

    /// A channel presenting the client certificate in the PKI directory (read now).
    fn channel(&self) -> Channel {
        let identity =
            Identity::from_pem_files(&self.files.client_cert, &self.files.client_key).unwrap();
        self.channel_as(&identity)
    }

    fn channel_as(&self, identity: &Identity) -> Channel {
        let endpoint = Endpoint::new(self.addr.to_string())
            .tls(client_config(&self.roots(), Some(identity)).unwrap())
            .server_name("localhost");
        Channel::lazy(endpoint).unwrap()
    }

    /// The serial of the certificate a new TLS connection is shown.
    async fn serial_seen(&self) -> Vec<u8> {
        let identity =
            Identity::from_pem_files(&self.files.client_cert, &self.files.client_key).unwrap();
        let config = client_config(&self.roots(), Some(&identity)).unwrap();
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let tls = bounded(tokio_rustls::TlsConnector::from(config).connect(name, tcp))
            .await
            .unwrap();
        let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        serial_of_der(&leaf)
    }
}

fn serial_of_der(der: &[u8]) -> Vec<u8> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.raw_serial().to_vec()
}

fn serial_of_file(path: &Path) -> Vec<u8> {
    let pem = fs::read(path).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    serial_of_der(&pem.contents)
}

#[tokio::test]
async fn a_stream_in_flight_survives_and_new_connections_see_the_new_serial() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path()).await;
    let old = serial_of_file(&server.files.server_cert);
    assert_eq!(server.serial_seen().await, old);

    let channel = server.channel();
    let mut replies =
        bounded(channel.server_streaming(&COUNT, Request::new(EchoRequest::stream(20, 20))))
            .await
            .unwrap()
            .into_inner();
    assert_eq!(bounded(replies.message()).await.unwrap().unwrap().index, 0);

    certs::renew(&CertOptions::new(dir.path())).unwrap();
    let new = serial_of_file(&server.files.server_cert);
    assert_ne!(new, old);
    assert_eq!(server.reloader.check(), 0, "the renewed files load");

    // The stream opened before the change runs to its end on its old session.
    let mut n = 1;
    while let Some(reply) = bounded(replies.message()).await.unwrap() {
        assert_eq!(reply.index, n);
        n += 1;
    }
    assert_eq!(n, 20);
    assert_eq!(server.serial_seen().await, new);
    // The old channel's connection is still up, and new channels (renewed client) work.
    echo_call(&channel, "old connection").await.unwrap();
    echo_call(&server.channel(), "new connection")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_broken_replacement_is_refused_and_service_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path()).await;
    let old = serial_of_file(&server.files.server_cert);
    let good_cert = fs::read(&server.files.server_cert).unwrap();

    fs::write(
        &server.files.server_cert,
        "-----BEGIN CERTIFICATE-----\nnot base64\n",
    )
    .unwrap();
    assert_eq!(server.reloader.check(), 1);
    assert_eq!(server.serial_seen().await, old);
    echo_call(&server.channel(), "still serving").await.unwrap();

    // A valid certificate whose key is not the one next to it.
    let other = generate_in_memory(&PkiOptions::default()).unwrap();
    fs::write(&server.files.server_cert, &other.server_cert).unwrap();
    assert_eq!(server.reloader.check(), 1, "a mismatched key is refused");
    assert_eq!(server.serial_seen().await, old);

    // The good pair again loads; then an empty CA bundle is refused, and clients are still
    // verified by the old one.
    fs::write(&server.files.server_cert, &good_cert).unwrap();
    assert_eq!(server.reloader.check(), 0);
    fs::write(&server.files.ca_cert, "").unwrap();
    assert_eq!(server.reloader.check(), 1);
    echo_call(&server.channel(), "old CA still verifies")
        .await
        .unwrap();
    assert_eq!(server.serial_seen().await, old);
}

#[tokio::test]
async fn a_client_of_a_new_ca_is_accepted_only_after_the_bundle_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path()).await;
    let old_ca = fs::read_to_string(&server.files.ca_cert).unwrap();
    let next = generate_in_memory(&PkiOptions::default()).unwrap();
    let newcomer =
        Identity::from_pem(next.client_cert.as_bytes(), next.client_key.as_bytes()).unwrap();

    let refused = echo_call(&server.channel_as(&newcomer), "too early")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");

    fs::write(&server.files.ca_cert, format!("{old_ca}{}", next.ca_cert)).unwrap();
    // Written but not yet reloaded: still refused.
    let refused = echo_call(&server.channel_as(&newcomer), "not reloaded")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);

    assert_eq!(server.reloader.check(), 0);
    let reply = echo_call(&server.channel_as(&newcomer), "after reload")
        .await
        .unwrap();
    assert_eq!(reply.peer, "CN=satellite-client");
    echo_call(&server.channel(), "old CA too").await.unwrap();

    // Dropping the old CA from the bundle shuts its clients out of new connections.
    fs::write(&server.files.ca_cert, &next.ca_cert).unwrap();
    assert_eq!(server.reloader.check(), 0);
    let refused = echo_call(&server.channel(), "old CA gone")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
}

#[tokio::test]
async fn a_client_reloads_its_own_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let files = &server.files;
    let identity =
        ReloadingIdentity::from_pem_files(&files.client_cert, &files.client_key).unwrap();
    let config = tls_reload::client_config(&server.roots(), identity.clone()).unwrap();
    let channel_with = |config| {
        Channel::lazy(
            Endpoint::new(server.addr.to_string())
                .tls(config)
                .server_name("localhost"),
        )
        .unwrap()
    };
    let first = channel_with(config.clone());
    assert_eq!(
        echo_call(&first, "a").await.unwrap().peer,
        "CN=satellite-client"
    );

    let ca_cert = fs::read_to_string(&files.ca_cert).unwrap();
    let ca_key = fs::read_to_string(&files.ca_key).unwrap();
    let (cert, key) = sign_client(&ca_cert, &ca_key, "rotated", 1).unwrap();
    // Certificate first, key second, as a careless rotation might: the half-way pair is
    // refused, the whole one taken.
    fs::write(&files.client_cert, &cert).unwrap();
    assert!(identity.reload().is_err());
    fs::write(&files.client_key, &key).unwrap();
    identity.reload().unwrap();

    assert_eq!(
        echo_call(&channel_with(config), "b").await.unwrap().peer,
        "CN=rotated"
    );
    // The connection made before keeps the identity it presented.
    assert_eq!(
        echo_call(&first, "c").await.unwrap().peer,
        "CN=satellite-client"
    );
}

#[tokio::test]
async fn handshakes_during_repeated_rotations_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path()).await;
    // One client identity read up front: renew also rewrites the client files.
    let identity =
        Identity::from_pem_files(&server.files.client_cert, &server.files.client_key).unwrap();
    let config = client_config(&server.roots(), Some(&identity)).unwrap();
    let addr = server.addr;
    let load: Vec<_> = (0..3)
        .map(|_| {
            let config = config.clone();
            tokio::spawn(async move {
                for i in 0..15 {
                    let endpoint = Endpoint::new(addr.to_string())
                        .tls(config.clone())
                        .server_name("localhost");
                    let channel = Channel::lazy(endpoint).unwrap();
                    echo_call(&channel, &format!("call {i}")).await.unwrap();
                }
            })
        })
        .collect();
    let mut serials = vec![serial_of_file(&server.files.server_cert)];
    for _ in 0..5 {
        certs::renew(&CertOptions::new(dir.path())).unwrap();
        assert_eq!(server.reloader.check(), 0);
        serials.push(serial_of_file(&server.files.server_cert));
        tokio::task::yield_now().await;
    }
    for task in load {
        bounded(task).await.unwrap();
    }
    serials.dedup();
    assert_eq!(serials.len(), 6, "every renewal has a new serial");
    assert_eq!(server.serial_seen().await, serials[5]);
}
