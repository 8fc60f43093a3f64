//! TLS-level abuse of the mTLS listener beside a good mTLS client. tests/tls.rs pins each
//! handshake rejection once (no client certificate, another CA, expired, plaintext, HTTP/1.1
//! ALPN, a silent peer); here: the cases it does not cover, and every rejection repeated to
//! show that failed handshakes cost nothing lasting.

mod common;
mod hostile;

use std::time::Duration;

use common::*;
use hostile::*;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use satellite::grpc::{
    tls::{client_config, Identity},
    Channel, Code, Endpoint,
};
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt as _;

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// A certificate signed by the server's CA (rebuilt from its key) with the given validity and
/// extended key usage.
fn identity_signed_by_ca(
    server: &TestServer,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    eku: ExtendedKeyUsagePurpose,
) -> Identity {
    let mut ca = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "satellite demo CA");
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let issuer = Issuer::new(ca, KeyPair::from_pem(&server.pki.ca_key).unwrap());
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "satellite-client");
    params.distinguished_name = dn;
    params.not_before = not_before;
    params.not_after = not_after;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![eku];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    Identity::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap()
}

async fn assert_unavailable(channel: &Channel, what: &str) {
    let status = echo_call(channel, "x").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{what}: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_yet_valid_and_server_eku_client_certs_are_rejected() {
    let server = start_server(Security::Mtls).await;
    let watch = Watch::begin("not-yet-valid / server-EKU client certs", &server).await;
    let now = OffsetDateTime::now_utc();
    let future = identity_signed_by_ca(
        &server,
        now + time::Duration::days(1),
        now + time::Duration::days(30),
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let channel = tls_channel(server.addr, &server.roots(), Some(&future), "localhost");
    assert_unavailable(&channel, "not yet valid").await;
    // The server's own certificate (serverAuth only) offered as a client certificate.
    let server_as_client = Identity::from_pem(
        server.pki.server_cert.as_bytes(),
        server.pki.server_key.as_bytes(),
    )
    .unwrap();
    let channel = tls_channel(
        server.addr,
        &server.roots(),
        Some(&server_as_client),
        "localhost",
    );
    assert_unavailable(&channel, "server certificate as client certificate").await;
    // The same with a fresh serverAuth-only leaf of the right CA.
    let server_eku = identity_signed_by_ca(
        &server,
        now - time::Duration::days(1),
        now + time::Duration::days(30),
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let channel = tls_channel(server.addr, &server.roots(), Some(&server_eku), "localhost");
    assert_unavailable(&channel, "serverAuth-only leaf").await;
    watch.end(&server, 16, SECS(15)).await;
}

/// Every rejection 20 times over: no client certificate, another CA, expired, not yet valid,
/// plaintext to the TLS port, HTTP/1.1-only ALPN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_handshake_rejections_cost_nothing_lasting() {
    let server = start_server(Security::Mtls).await;
    let now = OffsetDateTime::now_utc();
    let other = pki();
    let other_ca =
        Identity::from_pem(other.client_cert.as_bytes(), other.client_key.as_bytes()).unwrap();
    let expired = identity_signed_by_ca(
        &server,
        now - time::Duration::days(30),
        now - time::Duration::days(1),
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let future = identity_signed_by_ca(
        &server,
        now + time::Duration::days(1),
        now + time::Duration::days(30),
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let mut http11 =
        (*client_config(&server.roots(), Some(&server.client_identity())).unwrap()).clone();
    http11.alpn_protocols = vec![b"http/1.1".to_vec()];
    let http11 = std::sync::Arc::new(http11);
    let watch = Watch::begin("handshake rejections x120", &server).await;
    for _ in 0..20 {
        let roots = server.roots();
        let channels = [
            (
                "no client cert",
                tls_channel(server.addr, &roots, None, "localhost"),
            ),
            (
                "another CA",
                tls_channel(server.addr, &roots, Some(&other_ca), "localhost"),
            ),
            (
                "expired",
                tls_channel(server.addr, &roots, Some(&expired), "localhost"),
            ),
            (
                "not yet valid",
                tls_channel(server.addr, &roots, Some(&future), "localhost"),
            ),
            (
                "plaintext",
                Channel::lazy(Endpoint::new(server.addr.to_string()).connect_timeout(SECS(5)))
                    .unwrap(),
            ),
            (
                "http/1.1 ALPN",
                Channel::lazy(
                    Endpoint::new(server.addr.to_string())
                        .tls(http11.clone())
                        .server_name("localhost")
                        .connect_timeout(SECS(5)),
                )
                .unwrap(),
            ),
        ];
        for (what, channel) in &channels {
            assert_unavailable(channel, what).await;
        }
    }
    watch.end(&server, 32, SECS(30)).await;
}

/// A ClientHello record that promises 512 bytes and delivers 40: the handshake never finishes
/// and the server closes the connection at its (short, configured) handshake timeout.
fn half_client_hello() -> Vec<u8> {
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03,
    ];
    hello.extend_from_slice(&[0x5A; 29]);
    hello
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_handshake_is_closed_at_the_handshake_timeout() {
    let server = start_server_with(Security::Mtls, |c| {
        c.handshake_timeout = Duration::from_millis(300);
    })
    .await;
    let watch = Watch::begin("unfinished TLS handshake", &server).await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(&half_client_hello()).await.unwrap();
    let started = std::time::Instant::now();
    let mut peer = RawPeer::new(tcp);
    assert!(peer.read_to_close(SECS(3)).await, "held open");
    let took = started.elapsed();
    println!("hostile: unfinished TLS handshake: closed after {took:?}");
    assert!(took >= Duration::from_millis(250), "{took:?}");
    watch.end(&server, 16, SECS(10)).await;
}

/// 1 000 connections stopped half-way through the handshake: a fresh good client is served
/// while they are open, and every one is closed by the handshake timeout (1 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_half_open_connections_do_not_block_good_clients() {
    let server = start_server_with(Security::Mtls, |c| {
        c.handshake_timeout = Duration::from_secs(1);
    })
    .await;
    let watch = Watch::begin("1000 half-open TLS connections", &server).await;
    let mut open = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(&half_client_hello()).await.unwrap();
        open.push(tcp);
    }
    let rss_open = rss_kib();
    // A fresh good connection and call while all 1 000 are held.
    let started = std::time::Instant::now();
    let fresh = server.channel().await;
    assert_eq!(echo_call(&fresh, "while").await.unwrap().text, "while");
    let fresh_took = started.elapsed();
    // Every half-open connection is closed by the server.
    let mut tasks = tokio::task::JoinSet::new();
    for tcp in open {
        tasks.spawn(async move { RawPeer::new(tcp).read_to_close(SECS(5)).await });
    }
    let mut closed = 0;
    while let Some(done) = tasks.join_next().await {
        closed += usize::from(done.unwrap());
    }
    println!(
        "hostile: 1000 half-open: fresh good call in {fresh_took:?}, {closed} closed by the server, RSS with all open {rss_open} KiB"
    );
    assert_eq!(closed, 1000);
    assert!(fresh_took < SECS(2), "{fresh_took:?}");
    watch.end(&server, 64, SECS(15)).await;
}
