//! TLS handshake rejections give UNAVAILABLE on the client while a good mTLS client keeps
//! working; nothing hangs.

mod common;

use std::time::Duration;

use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use satellite::grpc::{
    tls::{Identity, Roots},
    Channel, Code, Endpoint, Status,
};
use time::OffsetDateTime;

async fn assert_rejected(channel: &Channel, what: &str) -> Status {
    let status = echo_call(channel, "x").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{what}: {status:?}");
    status
}

async fn assert_good_client_works(server: &TestServer, good: &Channel) {
    assert_eq!(echo_call(good, "good").await.unwrap().text, "good");
    // A fresh good connection works too, not only the one already open.
    let fresh = mtls_channel(server).await;
    assert_eq!(
        echo_call(&fresh, "fresh").await.unwrap().peer,
        "CN=satellite-client"
    );
}

/// A client certificate signed by the server's CA (rebuilt from its PEM key) with the given
/// validity window.
fn client_identity_signed_by(
    server: &TestServer,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
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
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    Identity::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_cert_signed_by_rebuilt_ca_is_accepted() {
    // Control for the expired case below: the same construction, valid, is accepted.
    let server = start_server(Security::Mtls).await;
    let now = OffsetDateTime::now_utc();
    let identity = client_identity_signed_by(
        &server,
        now - time::Duration::hours(1),
        now + time::Duration::days(1),
    );
    let channel = tls_channel(server.addr, &server.roots(), Some(&identity), "localhost");
    assert_eq!(echo_call(&channel, "ok").await.unwrap().text, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_certificate_is_rejected() {
    let server = start_server(Security::Mtls).await;
    let good = server.channel().await;
    let channel = tls_channel(server.addr, &server.roots(), None, "localhost");
    assert_rejected(&channel, "no client certificate").await;
    assert_good_client_works(&server, &good).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_cert_from_another_ca_is_rejected() {
    let server = start_server(Security::Mtls).await;
    let good = server.channel().await;
    let other = pki();
    let identity =
        Identity::from_pem(other.client_cert.as_bytes(), other.client_key.as_bytes()).unwrap();
    let channel = tls_channel(server.addr, &server.roots(), Some(&identity), "localhost");
    assert_rejected(&channel, "client cert from another CA").await;
    assert_good_client_works(&server, &good).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_client_certificate_is_rejected() {
    let server = start_server(Security::Mtls).await;
    let good = server.channel().await;
    let now = OffsetDateTime::now_utc();
    let identity = client_identity_signed_by(
        &server,
        now - time::Duration::days(10),
        now - time::Duration::days(1),
    );
    let channel = tls_channel(server.addr, &server.roots(), Some(&identity), "localhost");
    assert_rejected(&channel, "expired client certificate").await;
    assert_good_client_works(&server, &good).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_server_name_is_rejected() {
    let server = start_server(Security::Mtls).await;
    let good = server.channel().await;
    let channel = tls_channel(
        server.addr,
        &server.roots(),
        Some(&server.client_identity()),
        "not-the-server",
    );
    assert_rejected(&channel, "wrong server name").await;
    assert_good_client_works(&server, &good).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_from_another_ca_is_rejected() {
    let server = start_server(Security::Mtls).await;
    let good = server.channel().await;
    let other = Roots::from_pem(pki().ca_cert.as_bytes()).unwrap();
    let channel = tls_channel(
        server.addr,
        &other,
        Some(&server.client_identity()),
        "localhost",
    );
    assert_rejected(&channel, "untrusted server").await;
    assert_good_client_works(&server, &good).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_san_is_accepted_without_a_server_name() {
    let server = start_server(Security::Mtls).await;
    let config =
        satellite::grpc::tls::client_config(&server.roots(), Some(&server.client_identity()))
            .unwrap();
    let channel = Channel::lazy(Endpoint::new(server.addr.to_string()).tls(config)).unwrap();
    assert_eq!(echo_call(&channel, "ip").await.unwrap().text, "ip");
}

// Regression: the TLS alert the server answers with reached the client as an HTTP/2 frame of
// invalid size, and the h2 error mapping (now in `WireError::into_status`) turned that locally
// detected connection error into INTERNAL instead of UNAVAILABLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_client_to_tls_port_fails_cleanly() {
    let server = start_server(Security::Mtls).await;
    let good = server.channel().await;
    let endpoint = Endpoint::new(server.addr.to_string()).connect_timeout(Duration::from_secs(5));
    let channel = Channel::lazy(endpoint).unwrap();
    let status = echo_call(&channel, "x").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_good_client_works(&server, &good).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_offering_only_http11_alpn_is_rejected() {
    let server = start_server(Security::Mtls).await;
    let good = server.channel().await;
    let config =
        satellite::grpc::tls::client_config(&server.roots(), Some(&server.client_identity()))
            .unwrap();
    let mut config = (*config).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let endpoint = Endpoint::new(server.addr.to_string())
        .tls(std::sync::Arc::new(config))
        .server_name("localhost")
        .connect_timeout(Duration::from_secs(5));
    let channel = Channel::lazy(endpoint).unwrap();
    assert_rejected(&channel, "http/1.1-only ALPN").await;
    assert_good_client_works(&server, &good).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peer_is_closed_after_the_handshake_timeout() {
    use tokio::io::AsyncReadExt as _;
    for security in [Security::Mtls, Security::Plaintext] {
        let server = start_server_with(security, |config| {
            config.handshake_timeout = Duration::from_millis(200);
        })
        .await;
        let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let good = server.channel().await;
        assert_eq!(echo_call(&good, "good").await.unwrap().text, "good");
        // The server gives up on the silent peer: its socket reaches EOF (or a reset).
        let mut buf = [0_u8; 1024];
        let closed = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                match silent.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "{security:?}: a silent peer held its connection"
        );
        assert_eq!(echo_call(&good, "still").await.unwrap().text, "still");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_only_tls_serves_clients_without_certificates() {
    let server = start_server(Security::Tls).await;
    let channel = server.channel().await;
    let reply = echo_call(&channel, "one-way").await.unwrap();
    assert_eq!((reply.text.as_str(), reply.peer.as_str()), ("one-way", ""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_over_ipv6_loopback_uses_the_ip_san() {
    let listener = match tokio::net::TcpListener::bind("[::1]:0").await {
        Ok(listener) => listener,
        Err(e) => panic!("this test needs IPv6 on loopback (::1): {e}"),
    };
    let server = serve_on(listener, Security::Mtls, |_| {});
    let config =
        satellite::grpc::tls::client_config(&server.roots(), Some(&server.client_identity()))
            .unwrap();
    // No server_name: the name checked is the address's host, ::1, an IP SAN of the cert.
    let channel = Channel::lazy(Endpoint::new(server.addr.to_string()).tls(config)).unwrap();
    assert_eq!(server.addr.to_string().chars().next(), Some('['));
    assert_eq!(
        echo_call(&channel, "v6").await.unwrap().peer,
        "CN=satellite-client"
    );
}
