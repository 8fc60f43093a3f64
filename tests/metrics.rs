//! Metrics (issue 14): A66 call metrics by method and status on the server and the client,
//! connection counts, TLS handshake failures by reason, authorization decisions and reloads,
//! read back from the admin listener's `/metrics`, which answers `/healthz` too and never
//! serves a gRPC method.

mod common;

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use common::{bounded, echo_call, grpc_head, pki, router, tls_channel, Live, ECHO, WAIT};
use satellite::{
    app::certs::{generate_in_memory, sign_client, PkiOptions},
    grpc::{
        self,
        admin::serve_admin,
        authz::{Authz, AuthzPolicy},
        metrics::Metrics,
        reload::Reloader,
        tls::{client_config, server_config, Identity, Roots},
        Channel, Code, Endpoint, Request, ServerConfig, Transport,
    },
};
use tokio::{net::TcpListener, sync::oneshot};

/// A blocking HTTP/1.1 exchange with the admin listener: (status line, body).
fn http(addr: SocketAddr, request: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

fn get(addr: SocketAddr, path: &str) -> (String, String) {
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n"),
    )
}

/// The value of the sample `series` (name and labels exactly as printed), 0 if absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

struct Fixture {
    addr: SocketAddr,
    admin: SocketAddr,
    metrics: Metrics,
    pki: satellite::app::certs::Pki,
    healthy: Arc<AtomicBool>,
    _stops: (oneshot::Sender<()>, oneshot::Sender<()>),
}

const POLICY: &str = r#"{"name": "echo-policy",
  "deny_rules": [{"name": "no-mallory", "source": {"principals": ["CN=mallory"]}}],
  "allow_rules": [{"name": "anyone", "source": {"principals": ["*"]}}]}"#;

async fn start() -> Fixture {
    let pki = pki();
    let identity =
        Identity::from_pem(pki.server_cert.as_bytes(), pki.server_key.as_bytes()).unwrap();
    let roots = Roots::from_pem(pki.ca_cert.as_bytes()).unwrap();
    let metrics = Metrics::new();
    let mut config = ServerConfig::new(Transport::Tls(
        server_config(&identity, Some(&roots)).unwrap(),
    ));
    config.metrics = Some(metrics.clone());
    let authz =
        Authz::new(AuthzPolicy::from_json(POLICY).unwrap()).on_decision(metrics.authz_observer());
    let router = router(&Live::default(), &Arc::new(AtomicUsize::new(0)))
        .intercept(metrics.server_interceptor())
        .intercept(authz.interceptor());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(grpc::run(listener, config, router, async {
        let _ = stopped.await;
    }));
    let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = admin_listener.local_addr().unwrap();
    let healthy = Arc::new(AtomicBool::new(true));
    let (stop_admin, admin_stopped) = oneshot::channel::<()>();
    let is_healthy = healthy.clone();
    tokio::spawn(serve_admin(
        admin_listener,
        metrics.clone(),
        Arc::new(move || is_healthy.load(Ordering::SeqCst)),
        async {
            let _ = admin_stopped.await;
        },
    ));
    Fixture {
        addr,
        admin,
        metrics,
        pki,
        healthy,
        _stops: (stop, stop_admin),
    }
}

impl Fixture {
    fn channel_as(&self, name: &str) -> Channel {
        let (cert, key) = sign_client(&self.pki.ca_cert, &self.pki.ca_key, name, 1).unwrap();
        let identity = Identity::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        let roots = Roots::from_pem(self.pki.ca_cert.as_bytes()).unwrap();
        let endpoint = Endpoint::new(self.addr.to_string())
            .tls(client_config(&roots, Some(&identity)).unwrap())
            .server_name("localhost");
        Channel::lazy(endpoint)
            .unwrap()
            .intercept(self.metrics.client_interceptor(&self.addr.to_string()))
    }

    async fn scrape(&self) -> String {
        let admin = self.admin;
        let (status, body) = tokio::task::spawn_blocking(move || get(admin, "/metrics"))
            .await
            .unwrap();
        assert_eq!(status, "HTTP/1.1 200 OK");
        body
    }
}

const ECHO_OK: &str = "{grpc_method=\"test.Echo/Echo\",grpc_status=\"OK\"}";
const ECHO_NOT_FOUND: &str = "{grpc_method=\"test.Echo/Echo\",grpc_status=\"NOT_FOUND\"}";
const ECHO_DENIED: &str = "{grpc_method=\"test.Echo/Echo\",grpc_status=\"PERMISSION_DENIED\"}";

#[tokio::test]
async fn call_connection_handshake_and_authz_metrics_add_up() {
    let f = start().await;
    let alice = f.channel_as("alice");
    for i in 0..5 {
        echo_call(&alice, &format!("ok {i}")).await.unwrap();
    }
    for _ in 0..3 {
        let err = echo_call(&alice, "status:5:no such thing")
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
    }
    let mallory = f.channel_as("mallory");
    for _ in 0..2 {
        let err = echo_call(&mallory, "let me in").await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
    }
    // A method the server does not have, on a raw h2 stream: recorded as "other".
    let nope: grpc::Method<common::EchoRequest, common::EchoReply, grpc::Unary> =
        grpc::Method::unary("/test.Echo/Nope");
    let err = bounded(alice.unary(&nope, Request::new(common::EchoRequest::text("x"))))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    // Handshake failures: a client of another CA, a client without a certificate.
    // (A CA of another name: one of the same name is found and fails the signature check.)
    let other = generate_in_memory(&PkiOptions {
        ca_name: "another CA".into(),
        ..PkiOptions::valid_for(1).unwrap()
    })
    .unwrap();
    let stranger =
        Identity::from_pem(other.client_cert.as_bytes(), other.client_key.as_bytes()).unwrap();
    let roots = Roots::from_pem(f.pki.ca_cert.as_bytes()).unwrap();
    let refused = echo_call(
        &tls_channel(f.addr, &roots, Some(&stranger), "localhost"),
        "x",
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
    let anonymous = echo_call(&tls_channel(f.addr, &roots, None, "localhost"), "x").await;
    assert!(anonymous.is_err());

    // Calls end (and are recorded) a moment after their answer leaves: wait for the count.
    let mut text = f.scrape().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    // So do refused handshakes: the client may hear of its refusal before the server counts it.
    let settled = |text: &str| {
        let failures = ["unknown_ca", "no_client_certificate"]
            .iter()
            .map(|r| {
                sample(
                    text,
                    &format!("grpc_server_tls_handshake_failures_total{{reason=\"{r}\"}}"),
                )
            })
            .sum::<f64>();
        sample(
            text,
            "grpc_server_call_started_total{grpc_method=\"other\"}",
        ) >= 1.0
            && sample(
                text,
                &format!("grpc_server_call_duration_seconds_count{ECHO_OK}"),
            ) >= 5.0
            && failures >= 2.0
    };
    while !settled(&text) {
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        text = f.scrape().await;
    }
    let expect = |series: &str, value: f64| {
        assert_eq!(sample(&text, series), value, "{series} in\n{text}");
    };
    expect(
        "grpc_server_call_started_total{grpc_method=\"test.Echo/Echo\"}",
        10.0,
    );
    expect("grpc_server_call_started_total{grpc_method=\"other\"}", 1.0);
    expect(
        &format!("grpc_server_call_duration_seconds_count{ECHO_OK}"),
        5.0,
    );
    expect(
        &format!("grpc_server_call_duration_seconds_count{ECHO_NOT_FOUND}"),
        3.0,
    );
    expect(
        &format!("grpc_server_call_duration_seconds_count{ECHO_DENIED}"),
        2.0,
    );
    expect(
        "grpc_server_call_duration_seconds_count{grpc_method=\"other\",grpc_status=\"UNIMPLEMENTED\"}",
        1.0,
    );
    // Each OK request carried "ok N" (6 bytes of text, 8 as a message): under 1 KiB.
    expect(
        "grpc_server_call_rcvd_total_compressed_message_size_bytes_bucket{grpc_method=\"test.Echo/Echo\",grpc_status=\"OK\",le=\"1024\"}",
        5.0,
    );
    assert!(
        sample(
            &text,
            &format!("grpc_server_call_rcvd_total_compressed_message_size_bytes_sum{ECHO_OK}")
        ) >= 5.0 * 6.0
    );
    // The client side saw the same outcomes for alice and mallory (the unregistered method too).
    let target = f.addr.to_string();
    let client = |status: &str| {
        format!(
            "grpc_client_call_duration_seconds_count{{grpc_method=\"test.Echo/Echo\",grpc_target=\"{target}\",grpc_status=\"{status}\"}}"
        )
    };
    expect(&client("OK"), 5.0);
    expect(&client("NOT_FOUND"), 3.0);
    expect(&client("PERMISSION_DENIED"), 2.0);
    // Connections: two good clients, two refused handshakes.
    expect("grpc_server_connections_accepted_total", 4.0);
    expect("grpc_server_connections_open", 2.0);
    expect(
        "grpc_server_tls_handshake_failures_total{reason=\"unknown_ca\"}",
        1.0,
    );
    expect(
        "grpc_server_tls_handshake_failures_total{reason=\"no_client_certificate\"}",
        1.0,
    );
    // Every authorization decision, with its rule.
    expect(
        "grpc_server_authz_decisions_total{policy=\"echo-policy\",decision=\"allow\",rule=\"anyone\"}",
        8.0,
    );
    expect(
        "grpc_server_authz_decisions_total{policy=\"echo-policy\",decision=\"deny\",rule=\"no-mallory\"}",
        2.0,
    );

    drop((alice, mallory));
    let deadline = tokio::time::Instant::now() + WAIT;
    while sample(&f.scrape().await, "grpc_server_connections_open") != 0.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "connections never closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn reloads_are_counted_by_result() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.json");
    std::fs::write(&path, POLICY).unwrap();
    let metrics = Metrics::new();
    let authz = Authz::from_file(&path).unwrap();
    let mut reloader = Reloader::new()
        .watch(Arc::new(authz))
        .on_reload(metrics.reload_observer());
    std::fs::write(&path, "{").unwrap();
    reloader.check();
    std::fs::write(&path, r#"{"name": "x", "allow_rules": []}"#).unwrap();
    reloader.check();
    reloader.reload_all();
    let text = metrics.encode();
    let series = |result: &str| {
        format!("grpc_reloads_total{{what=\"authorization policy\",result=\"{result}\"}}")
    };
    assert_eq!(sample(&text, &series("refused")), 1.0, "{text}");
    assert_eq!(sample(&text, &series("ok")), 2.0, "{text}");
}

#[tokio::test]
async fn the_admin_port_answers_healthz_and_never_serves_grpc() {
    let f = start().await;
    let admin = f.admin;
    let healthy = f.healthy.clone();
    tokio::task::spawn_blocking(move || {
        assert_eq!(get(admin, "/healthz"), ("HTTP/1.1 200 OK".into(), "ok\n".into()));
        healthy.store(false, Ordering::SeqCst);
        assert_eq!(get(admin, "/healthz").0, "HTTP/1.1 503 Service Unavailable");
        assert_eq!(get(admin, "/nope").0, "HTTP/1.1 404 Not Found");
        let posted = http(
            admin,
            "POST /metrics HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        );
        assert_eq!(posted.0, "HTTP/1.1 405 Method Not Allowed");
        // A gRPC request as HTTP/1.1 is just an unknown path.
        let grpc_path = http(
            admin,
            "POST /test.Echo/Echo HTTP/1.1\r\nhost: a\r\ncontent-type: application/grpc\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        );
        assert_eq!(grpc_path.0, "HTTP/1.1 404 Not Found");
    })
    .await
    .unwrap();
    // An HTTP/2 client (prior knowledge, as gRPC speaks) gets no gRPC answer at all.
    let tcp = tokio::net::TcpStream::connect(admin).await.unwrap();
    let outcome = tokio::time::timeout(WAIT, async {
        let (mut send, connection) = h2::client::handshake(tcp).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let (response, _) = send.send_request(grpc_head(admin, ECHO.path()), true)?;
        response.await.map(drop)
    })
    .await
    .expect("the admin port hung an HTTP/2 client");
    assert!(outcome.is_err(), "the admin port answered HTTP/2");
    let text = f.scrape().await;
    assert!(
        text.contains("# TYPE grpc_server_connections_open gauge"),
        "{text}"
    );
}
