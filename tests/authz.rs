//! Authorization by an A43 policy (issue 14): two client identities from one CA, a policy that
//! lets one call GetImages and not the other, deny over allow, a broken policy file that keeps
//! the old policy, and every decision observed.

use std::{
    future::Future,
    net::SocketAddr,
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use satellite::{
    app::{
        certs::{generate_in_memory, sign_client, Pki, PkiOptions},
        client::{CallOptions, SatelliteClient},
        map::Map,
        service::{MapService, ServiceOptions},
    },
    grpc::{
        self,
        authz::{Authz, DecisionObserver},
        reload::Reloader,
        tls::{client_config, server_config, Identity, Roots},
        BoxFuture, CallHead, Channel, Code, Endpoint, ServerConfig, ServerInterceptor, Status,
        Transport,
    },
};
use tokio::{net::TcpListener, sync::oneshot};

const WAIT: Duration = Duration::from_secs(20);

async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(WAIT, f)
        .await
        .expect("a bounded wait ran out")
}

/// Counts the calls that got past authorization (it is added after it).
#[derive(Clone, Default)]
struct Passed(Arc<AtomicU64>);

impl ServerInterceptor for Passed {
    fn before<'a>(&'a self, _head: &'a mut CallHead) -> BoxFuture<'a, Result<(), Status>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Decisions seen by the observer: (allowed, rule).
type Seen = Arc<Mutex<Vec<(bool, Option<String>)>>>;

struct Server {
    addr: SocketAddr,
    pki: Pki,
    authz: Authz,
    passed: Passed,
    seen: Seen,
    _stop: oneshot::Sender<()>,
}

async fn start(policy: &Path) -> Server {
    let pki = generate_in_memory(&PkiOptions::default()).unwrap();
    let identity =
        Identity::from_pem(pki.server_cert.as_bytes(), pki.server_key.as_bytes()).unwrap();
    let roots = Roots::from_pem(pki.ca_cert.as_bytes()).unwrap();
    let config = ServerConfig::new(Transport::Tls(
        server_config(&identity, Some(&roots)).unwrap(),
    ));
    let seen: Seen = Arc::default();
    let observer: DecisionObserver = {
        let seen = seen.clone();
        Arc::new(move |d| {
            seen.lock()
                .unwrap()
                .push((d.allowed, d.rule.map(str::to_owned)));
        })
    };
    let authz = Authz::from_file(policy).unwrap().on_decision(observer);
    let passed = Passed::default();
    let service = MapService::new(
        Map::world(),
        &ServiceOptions {
            send_delay: Duration::ZERO,
            img_bytes: 1,
        },
    );
    let router = service
        .router()
        .intercept(authz.interceptor())
        .intercept(passed.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(grpc::run(listener, config, router, async {
        let _ = stopped.await;
    }));
    Server {
        addr,
        pki,
        authz,
        passed,
        seen,
        _stop: stop,
    }
}

impl Server {
    /// A client presenting a certificate named `name` (CN=name, spiffe://satellite/name).
    fn client(&self, name: &str) -> SatelliteClient {
        let (cert, key) = sign_client(&self.pki.ca_cert, &self.pki.ca_key, name, 1).unwrap();
        let identity = Identity::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        let roots = Roots::from_pem(self.pki.ca_cert.as_bytes()).unwrap();
        let endpoint = Endpoint::new(self.addr.to_string())
            .tls(client_config(&roots, Some(&identity)).unwrap())
            .server_name("localhost");
        SatelliteClient::new(Channel::lazy(endpoint).unwrap())
    }
}

/// Streams a 2 x 2 area to its end.
async fn get_images(client: &SatelliteClient) -> Result<usize, Status> {
    let mut images = bounded(client.get_images((0, 0), (1, 1), &CallOptions::default())).await?;
    let mut n = 0;
    while bounded(images.message()).await?.is_some() {
        n += 1;
    }
    Ok(n)
}

async fn get_image(client: &SatelliteClient) -> Result<(), Status> {
    bounded(client.get_image(0, 0, &CallOptions::default()))
        .await
        .map(drop)
}

const READERS_ONLY: &str = r#"{
  "name": "map-readers",
  "allow_rules": [
    {"name": "reader-streams", "source": {"principals": ["spiffe://satellite/reader"]},
     "request": {"paths": ["/satellite.Satellite/GetImages"]}},
    {"name": "anyone-single-cells", "source": {"principals": ["*"]},
     "request": {"paths": ["/satellite.Satellite/GetImage"]}}
  ]
}"#;

#[tokio::test]
async fn one_identity_may_stream_the_other_may_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.json");
    std::fs::write(&path, READERS_ONLY).unwrap();
    let server = start(&path).await;
    let reader = server.client("reader");
    let writer = server.client("writer");

    assert_eq!(get_images(&reader).await.unwrap(), 4);
    let denied = get_images(&writer).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(
        denied.message().contains("\"map-readers\""),
        "the message names the rule set: {}",
        denied.message()
    );
    // Both may fetch a single cell.
    get_image(&reader).await.unwrap();
    get_image(&writer).await.unwrap();

    // The denied call never got past authorization; the three others did.
    assert_eq!(server.passed.0.load(Ordering::SeqCst), 3);
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            (true, Some("reader-streams".to_owned())),
            (false, None),
            (true, Some("anyone-single-cells".to_owned())),
            (true, Some("anyone-single-cells".to_owned())),
        ],
        "every decision is observed, with its rule"
    );
}

#[tokio::test]
async fn deny_rules_win_over_allow_rules() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.json");
    std::fs::write(
        &path,
        r#"{"name": "no-streams-for-intruders",
            "deny_rules": [{"name": "intruder", "source": {"principals": ["CN=intruder"]},
                            "request": {"paths": ["*/GetImages"]}}],
            "allow_rules": [{"name": "everyone"}]}"#,
    )
    .unwrap();
    let server = start(&path).await;
    let intruder = server.client("intruder");
    let denied = get_images(&intruder).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(
        denied.message().contains("\"intruder\"") && denied.message().contains("no-streams"),
        "{}",
        denied.message()
    );
    // The allow-all rule still lets it fetch a cell, and lets anyone else stream.
    get_image(&intruder).await.unwrap();
    assert_eq!(get_images(&server.client("reader")).await.unwrap(), 4);
}

#[tokio::test]
async fn a_broken_policy_file_keeps_the_old_policy_and_a_good_one_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.json");
    std::fs::write(&path, READERS_ONLY).unwrap();
    let server = start(&path).await;
    let mut reloader = Reloader::new().watch(Arc::new(server.authz.clone()));
    let writer = server.client("writer");
    assert_eq!(
        get_images(&writer).await.unwrap_err().code(),
        Code::PermissionDenied
    );

    for broken in [
        "{\"name\": \"half-writ",
        r#"{"name": "typo", "allow_rule": []}"#,
        r#"{"name": "bad-header", "allow_rules": [{"name": "h", "request": {"headers": [{"key": "grpc-x", "values": ["1"]}]}}]}"#,
    ] {
        std::fs::write(&path, broken).unwrap();
        assert_eq!(reloader.check(), 1, "refused: {broken}");
        assert_eq!(server.authz.policy().name(), "map-readers");
        assert_eq!(
            get_images(&writer).await.unwrap_err().code(),
            Code::PermissionDenied,
            "the old policy still holds after {broken}"
        );
    }

    std::fs::write(
        &path,
        r#"{"name": "open", "allow_rules": [{"name": "all", "source": {"principals": ["*"]}}]}"#,
    )
    .unwrap();
    assert_eq!(reloader.check(), 0);
    assert_eq!(server.authz.policy().name(), "open");
    assert_eq!(get_images(&writer).await.unwrap(), 4);
}
