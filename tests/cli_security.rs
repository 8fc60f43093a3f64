//! The `satellite` binary's day-31 features end to end (issue 14): named client certificates,
//! an authorization policy reloaded on change and on SIGHUP, certificate renewal, revocation
//! through a CRL, and the help that documents them.

use std::{
    fs::{self, File},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_satellite");

/// Every wait in these tests is bounded by this.
const WAIT: Duration = Duration::from_secs(20);

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs the binary to completion within [`WAIT`].
fn satellite<S: AsRef<std::ffi::OsStr>>(args: impl IntoIterator<Item = S>) -> Run {
    let child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn satellite");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let Ok(output) = rx.recv_timeout(WAIT) else {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        panic!("satellite did not finish within {WAIT:?}");
    };
    let output = output.expect("wait for satellite");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `satellite serve`, killed when dropped.
struct Serve {
    child: Child,
    addr: SocketAddr,
    certs: PathBuf,
    log: PathBuf,
}

impl Serve {
    fn start(certs: &Path, extra: &[&str]) -> Self {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let log = certs.with_extension(format!("serve-{}.log", addr.port()));
        let child = Command::new(BIN)
            .args(["serve", "--addr", &addr.to_string(), "--certs"])
            .arg(certs)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("spawn satellite serve");
        let mut serve = Self {
            child,
            addr,
            certs: certs.to_path_buf(),
            log,
        };
        let started = Instant::now();
        loop {
            if let Some(status) = serve.child.try_wait().unwrap() {
                panic!("serve exited early ({status}): {}", serve.log());
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return serve;
            }
            assert!(
                started.elapsed() < WAIT,
                "serve never listened: {}",
                serve.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `area 0 0 1 1` as the client named `name` (None: the default client certificate).
    fn area_as(&self, name: Option<&str>) -> Run {
        let mut args = vec![
            "area".to_owned(),
            "0".to_owned(),
            "0".to_owned(),
            "1".to_owned(),
            "1".to_owned(),
            "--render".to_owned(),
            "none".to_owned(),
            "--addr".to_owned(),
            self.addr.to_string(),
            "--certs".to_owned(),
            self.certs.display().to_string(),
            "--server-name".to_owned(),
            "localhost".to_owned(),
        ];
        if let Some(name) = name {
            for (flag, kind) in [("--cert", "cert"), ("--key", "key")] {
                args.push(flag.to_owned());
                args.push(
                    self.certs
                        .join(format!("client-{name}-{kind}.pem"))
                        .display()
                        .to_string(),
                );
            }
        }
        satellite(args)
    }

    fn hangup(&self) {
        let sent = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Waits until `ok` holds for the log; panics with the log otherwise.
    fn wait_log(&self, what: &str, ok: impl Fn(&str) -> bool) {
        let started = Instant::now();
        while !ok(&self.log()) {
            assert!(
                started.elapsed() < WAIT,
                "no {what} in the log: {}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `satellite certs` into `dir/certs`, plus the named clients.
fn pki(dir: &Path, clients: &[&str]) -> PathBuf {
    let certs = dir.join("certs");
    satellite(["certs", "--out", certs.to_str().unwrap()]).expect_code(0);
    for name in clients {
        let run = satellite([
            "certs",
            "--out",
            certs.to_str().unwrap(),
            "--client-name",
            name,
        ]);
        run.expect_code(0);
        assert!(
            run.stdout.contains(&format!("client-{name}-cert.pem")),
            "{}",
            run.stdout
        );
    }
    certs
}

fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

/// The serial of the certificate a new TLS connection to `addr` is shown (a blocking
/// handshake with rustls, presenting the client certificate in `certs`).
fn serial_seen(addr: SocketAddr, certs: &Path) -> Vec<u8> {
    use satellite::grpc::tls::{client_config, Identity, Roots};
    let roots = Roots::from_pem_file(&certs.join("ca-cert.pem")).unwrap();
    let identity = Identity::from_pem_files(
        &certs.join("client-cert.pem"),
        &certs.join("client-key.pem"),
    )
    .unwrap();
    let config = client_config(&roots, Some(&identity)).unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).unwrap();
    }
    let leaf = conn.peer_certificates().unwrap()[0].clone();
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    cert.raw_serial().to_vec()
}

fn serial_of_file(path: &Path) -> Vec<u8> {
    let pem = fs::read(path).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&pem.contents).unwrap();
    cert.raw_serial().to_vec()
}

/// The log line of a successful policy reload.
const POLICY_RELOADED: &str = "reloaded what=\"authorization policy\"";

const READERS: &str = r#"{"name": "readers-only", "allow_rules": [
    {"name": "readers", "source": {"principals": ["spiffe://satellite/reader"]}}]}"#;

const NOBODY: &str = r#"{"name": "closed", "allow_rules": []}"#;

#[test]
fn help_documents_the_new_flags_with_defaults() {
    let serve = satellite(["serve", "--help"]);
    serve.expect_code(0);
    for needle in [
        "--authz-policy",
        "--reload-interval",
        "[default: 10]",
        "--crl",
        "--admin-addr",
        "--request-budget-per-connection",
        "[default: 67108864]",
        "--request-budget-total",
        "[default: 268435456]",
        "--request-stall-timeout",
    ] {
        assert!(serve.stdout.contains(needle), "serve help lacks {needle}");
    }
    // The README's table names every flag `serve --help` lists.
    let readme = include_str!("../README.md");
    for flag in serve
        .stdout
        .split_whitespace()
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()))
    {
        if ["--help", "--version"].contains(&flag) {
            continue;
        }
        assert!(
            readme.contains(&format!("`{flag}`")),
            "README lacks `{flag}`"
        );
    }
    let certs = satellite(["certs", "--help"]);
    for needle in ["--client-name", "--renew", "--revoke", "--unrevoke"] {
        assert!(certs.stdout.contains(needle), "certs help lacks {needle}");
    }
}

#[test]
fn client_name_needs_an_existing_ca_and_a_plain_name() {
    let dir = tempfile::tempdir().unwrap();
    let run = satellite([
        "certs",
        "--out",
        dir.path().to_str().unwrap(),
        "--client-name",
        "x",
    ]);
    run.expect_code(2);
    assert!(run.stderr.contains("ca-cert.pem"), "{}", run.stderr);
    let certs = pki(dir.path(), &[]);
    let run = satellite([
        "certs",
        "--out",
        certs.to_str().unwrap(),
        "--client-name",
        "../x",
    ]);
    run.expect_code(2);
    assert!(run.stderr.contains("invalid client name"), "{}", run.stderr);
}

#[test]
fn a_policy_tells_named_clients_apart_and_reloads_on_change() {
    let dir = tempfile::tempdir().unwrap();
    let certs = pki(dir.path(), &["reader"]);
    let policy = dir.path().join("policy.json");
    fs::write(&policy, READERS).unwrap();
    let server = Serve::start(
        &certs,
        &[
            "--authz-policy",
            policy.to_str().unwrap(),
            "--reload-interval",
            "0.1",
        ],
    );
    server.area_as(Some("reader")).expect_code(0);
    let denied = server.area_as(None);
    denied.expect_code(1);
    assert!(
        denied.stderr.contains("PERMISSION_DENIED") && denied.stderr.contains("readers-only"),
        "{}",
        denied.stderr
    );

    // A broken file is refused with a log line and the old policy stays.
    fs::write(&policy, "{\"name\": ").unwrap();
    server.wait_log("refusal", |log| log.contains("refusing the new files"));
    server.area_as(Some("reader")).expect_code(0);

    // A good one is picked up without a restart.
    fs::write(&policy, NOBODY).unwrap();
    server.wait_log("reload", |log| log.contains(POLICY_RELOADED));
    let denied = server.area_as(Some("reader"));
    denied.expect_code(1);
    assert!(denied.stderr.contains("closed"), "{}", denied.stderr);
}

#[test]
fn sighup_reloads_the_policy_when_file_checks_are_off() {
    let dir = tempfile::tempdir().unwrap();
    let certs = pki(dir.path(), &["reader"]);
    let policy = dir.path().join("policy.json");
    fs::write(&policy, READERS).unwrap();
    let server = Serve::start(
        &certs,
        &[
            "--authz-policy",
            policy.to_str().unwrap(),
            "--reload-interval",
            "0",
        ],
    );
    fs::write(&policy, NOBODY).unwrap();
    // No file checks: the old policy holds until the signal.
    thread::sleep(Duration::from_millis(300));
    server.area_as(Some("reader")).expect_code(0);
    server.hangup();
    server.wait_log("SIGHUP reload", |log| log.contains(POLICY_RELOADED));
    server.area_as(Some("reader")).expect_code(1);
    // SIGHUP does not stop the server.
    server.hangup();
    server.wait_log("second reload", |log| count(log, POLICY_RELOADED) >= 2);
    assert!(TcpStream::connect_timeout(&server.addr, Duration::from_secs(1)).is_ok());
}

#[test]
fn a_broken_policy_at_startup_exits_2_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let certs = pki(dir.path(), &[]);
    let policy = dir.path().join("policy.json");
    fs::write(&policy, r#"{"name": "p", "allow_rules": [{"name": "r", "request": {"headers": [{"key": ":path", "values": ["x"]}]}}]}"#).unwrap();
    let run = satellite([
        "serve",
        "--addr",
        &format!("127.0.0.1:{}", free_port()),
        "--certs",
        certs.to_str().unwrap(),
        "--authz-policy",
        policy.to_str().unwrap(),
    ]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("policy.json") && run.stderr.contains(":path"),
        "{}",
        run.stderr
    );
}

#[test]
fn renew_then_sighup_rotates_the_server_certificate_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let certs = pki(dir.path(), &[]);
    let server = Serve::start(&certs, &["--reload-interval", "0"]);
    let old = serial_of_file(&certs.join("server-cert.pem"));
    assert_eq!(serial_seen(server.addr, &certs), old);

    let ca = fs::read(certs.join("ca-cert.pem")).unwrap();
    let run = satellite(["certs", "--out", certs.to_str().unwrap(), "--renew"]);
    run.expect_code(0);
    assert_eq!(count(&run.stdout, "wrote "), 4, "{}", run.stdout);
    assert_eq!(
        fs::read(certs.join("ca-cert.pem")).unwrap(),
        ca,
        "the CA stays"
    );
    let new = serial_of_file(&certs.join("server-cert.pem"));
    assert_ne!(new, old);
    // Checks are off: the old certificate is in force until the signal.
    assert_eq!(serial_seen(server.addr, &certs), old);

    server.hangup();
    server.wait_log("certificate reload", |log| {
        log.contains("reloaded what=\"certificate and key\"")
    });
    assert_eq!(serial_seen(server.addr, &certs), new);
    let run = satellite([
        "get",
        "0",
        "0",
        "--addr",
        &server.addr.to_string(),
        "--certs",
        certs.to_str().unwrap(),
        "--server-name",
        "localhost",
    ]);
    run.expect_code(0);

    // A broken certificate file is refused on the next check; the server goes on.
    fs::write(certs.join("server-cert.pem"), "garbage").unwrap();
    server.hangup();
    server.wait_log("refusal", |log| log.contains("refusing the new files"));
    assert_eq!(serial_seen(server.addr, &certs), new);
}

#[test]
fn renew_without_a_ca_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let run = satellite(["certs", "--out", dir.path().to_str().unwrap(), "--renew"]);
    run.expect_code(2);
    assert!(run.stderr.contains("ca-cert.pem"), "{}", run.stderr);
}

#[test]
fn revoke_and_crl_shut_a_client_out_after_a_reload_and_unrevoke_lets_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let certs = pki(dir.path(), &["reader", "leaked"]);
    let out = certs.to_str().unwrap();
    let leaked = certs.join("client-leaked-cert.pem");
    // An empty CRL to start from: taking a certificate off a CRL that does not exist yet.
    let run = satellite([
        "certs",
        "--out",
        out,
        "--unrevoke",
        leaked.to_str().unwrap(),
    ]);
    run.expect_code(0);
    assert!(run.stdout.contains("(0 revoked)"), "{}", run.stdout);
    let crl = certs.join("crl.pem");
    let server = Serve::start(
        &certs,
        &["--crl", crl.to_str().unwrap(), "--reload-interval", "0.1"],
    );
    server.area_as(Some("leaked")).expect_code(0);

    let run = satellite(["certs", "--out", out, "--revoke", leaked.to_str().unwrap()]);
    run.expect_code(0);
    assert!(run.stdout.contains("(1 revoked)"), "{}", run.stdout);
    server.wait_log("CRL reload", |log| {
        log.contains("reloaded what=\"client CA bundle and CRLs\"")
    });
    let refused = server.area_as(Some("leaked"));
    refused.expect_code(1);
    assert!(refused.stderr.contains("UNAVAILABLE"), "{}", refused.stderr);
    server.area_as(Some("reader")).expect_code(0);
    server.area_as(None).expect_code(0);

    satellite([
        "certs",
        "--out",
        out,
        "--unrevoke",
        leaked.to_str().unwrap(),
    ])
    .expect_code(0);
    let started = Instant::now();
    while server.area_as(Some("leaked")).code != Some(0) {
        assert!(started.elapsed() < WAIT, "never let back: {}", server.log());
        thread::sleep(Duration::from_millis(50));
    }

    // A certificate from another CA cannot be revoked here.
    let other = pki(&dir.path().join("other"), &[]);
    let foreign = other.join("client-cert.pem");
    let run = satellite(["certs", "--out", out, "--revoke", foreign.to_str().unwrap()]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("not issued by the CA"),
        "{}",
        run.stderr
    );
}

#[test]
fn serve_refuses_a_foreign_crl_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let certs = pki(dir.path(), &[]);
    let other = pki(&dir.path().join("other"), &[]);
    let foreign = other.join("client-cert.pem");
    let other_out = other.to_str().unwrap();
    satellite([
        "certs",
        "--out",
        other_out,
        "--revoke",
        foreign.to_str().unwrap(),
    ])
    .expect_code(0);
    let run = satellite([
        "serve",
        "--addr",
        &format!("127.0.0.1:{}", free_port()),
        "--certs",
        certs.to_str().unwrap(),
        "--crl",
        other.join("crl.pem").to_str().unwrap(),
    ]);
    run.expect_code(2);
    assert!(run.stderr.contains("not signed by a CA"), "{}", run.stderr);
}

#[test]
fn admin_addr_serves_metrics_and_healthz_over_http1() {
    use std::io::{Read as _, Write as _};
    let dir = tempfile::tempdir().unwrap();
    let certs = pki(dir.path(), &[]);
    let admin = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let server = Serve::start(&certs, &["--admin-addr", &admin.to_string()]);
    server.area_as(None).expect_code(0);
    let fetch = |path: &str| {
        let mut stream = TcpStream::connect(admin).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    };
    let health = fetch("/healthz");
    assert!(
        health.starts_with("HTTP/1.1 200 OK") && health.ends_with("ok\n"),
        "{health}"
    );
    let started = Instant::now();
    loop {
        let metrics = fetch("/metrics");
        assert!(metrics.starts_with("HTTP/1.1 200 OK"), "{metrics}");
        let line = "grpc_server_call_duration_seconds_count{grpc_method=\"satellite.Satellite/GetImages\",grpc_status=\"OK\"} 1";
        if metrics.contains(line) {
            // Readiness probes of the test connect too: at least the call's connection.
            assert!(
                metrics.contains("\ngrpc_server_connections_accepted_total "),
                "{metrics}"
            );
            break;
        }
        assert!(started.elapsed() < WAIT, "{metrics}");
        thread::sleep(Duration::from_millis(20));
    }
    assert!(fetch("/satellite.Satellite/GetImage").starts_with("HTTP/1.1 404"));
}

#[test]
fn a_budget_below_the_message_size_exits_2_naming_it() {
    let run = satellite([
        "serve",
        "--plaintext",
        "--addr",
        &format!("127.0.0.1:{}", free_port()),
        "--request-budget-per-connection",
        "1000",
    ]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("request_budget.per_connection = 1000"),
        "{}",
        run.stderr
    );
}
