//! The `satellite` binary end to end: help at every level, exit codes (0 ok, 1 call failed,
//! 2 usage or setup), `certs` on disk, and `serve` with `get` / `area` over mutual TLS on
//! loopback. Expectations come from the map file, never from hard-coded answers.

use std::{
    fs::{self, File},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use x509_parser::{extensions::GeneralName, pem::parse_x509_pem};

const BIN: &str = env!("CARGO_BIN_EXE_satellite");

/// The map file the binary embeds.
const WORLD: &str = include_str!("../src/satellite/world.txt");

/// Every wait in these tests is bounded by this.
const WAIT: Duration = Duration::from_secs(20);

const FILES: [&str; 6] = [
    "ca-cert.pem",
    "ca-key.pem",
    "server-cert.pem",
    "server-key.pem",
    "client-cert.pem",
    "client-key.pem",
];

/// The byte the file says is at Cartesian `(x, y)` (y = 0 is the last line).
fn file_cell(x: i32, y: i32) -> char {
    let lines: Vec<&str> = WORLD.lines().collect();
    lines[lines.len() - 1 - y as usize].as_bytes()[x as usize] as char
}

/// What a command printed and how it ended.
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

/// Runs the binary to completion within [`WAIT`] (killed and failed otherwise).
fn satellite<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let child = Command::new(BIN)
        .args(args)
        .env("SATELLITE_LOG", "warn")
        .env("NO_COLOR", "1")
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
    let output: Output = match rx.recv_timeout(WAIT) {
        Ok(output) => output.expect("wait for satellite"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("satellite did not finish within {WAIT:?}");
        }
    };
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Writes a fresh PKI with `satellite certs` into `dir`.
fn make_certs(dir: &Path) {
    satellite(["certs", "--out", dir.to_str().unwrap()]).expect_code(0);
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `satellite serve`, killed (and reaped) when dropped.
struct Serve {
    child: Child,
    addr: SocketAddr,
    certs: PathBuf,
    log: PathBuf,
}

impl Serve {
    /// Starts `serve` with the certificates in `certs` and waits until its port accepts.
    fn start(certs: &Path, extra: &[&str]) -> Self {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let log = certs.with_extension(format!("serve-{}.log", addr.port()));
        let child = Command::new(BIN)
            .args(["serve", "--addr", &addr.to_string(), "--certs"])
            .arg(certs)
            .args(extra)
            .env("SATELLITE_LOG", "info")
            .env("NO_COLOR", "1")
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

    /// Runs a client command (`get`, `area`) against this server over mTLS.
    fn client(&self, args: &[&str]) -> Run {
        let mut all: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        all.extend([
            "--addr".to_owned(),
            self.addr.to_string(),
            "--certs".to_owned(),
            self.certs.display().to_string(),
            "--server-name".to_owned(),
            "localhost".to_owned(),
        ]);
        satellite(all)
    }

    /// Waits (bounded) for the process to exit on its own.
    fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < within {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ===== help and usage =====

#[test]
fn help_at_every_level() {
    let top = satellite(["--help"]);
    top.expect_code(0);
    for sub in ["serve", "get", "area", "certs", "demo"] {
        assert!(top.stdout.contains(sub), "top-level help lacks {sub}");
    }
    let cases: [(&[&str], &[&str]); 6] = [
        (
            &["serve", "--help"],
            &[
                "--addr",
                "--certs",
                "--ca",
                "--cert",
                "--key",
                "--plaintext",
                "--map",
                "--send-delay",
                "--scale",
                "--img-bytes",
            ],
        ),
        (
            &["get", "--help"],
            &[
                "--addr",
                "--certs",
                "--plaintext",
                "--server-name",
                "--deadline",
                "--metadata",
            ],
        ),
        (
            &["area", "--help"],
            &["--render", "--deadline", "--metadata", "--certs"],
        ),
        (
            &["certs", "--help"],
            &["--out", "--days", "--san", "--force"],
        ),
        (&["demo", "--help"], &["Usage: satellite demo"]),
        (&["help", "serve"], &["Usage: satellite serve"]),
    ];
    for (args, needles) in cases {
        let run = satellite(args);
        run.expect_code(0);
        for needle in needles {
            assert!(run.stdout.contains(needle), "{args:?} help lacks {needle}");
        }
    }
    for sub in ["serve", "get", "area", "certs"] {
        let run = satellite([sub, "--help"]);
        assert!(
            run.stdout.contains(&format!("Usage: satellite {sub}")),
            "{}",
            run.stdout
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["bogus"][..],
        &["get"][..],
        &["get", "1"][..],
        &["area", "1", "2", "3"][..],
        &["get", "x", "0"][..],
        &["serve", "--scale", "0"][..],
        &["area", "0", "0", "1", "1", "--render", "fancy"][..],
        &["certs", "--days", "0"][..],
    ] {
        let run = satellite(args);
        run.expect_code(2);
        assert!(!run.stderr.is_empty(), "{args:?} printed no error");
    }
}

// ===== certs =====

fn pem_cert(path: &Path) -> Vec<u8> {
    let bytes = fs::read(path).unwrap();
    let (_, pem) = parse_x509_pem(&bytes).unwrap();
    assert_eq!(pem.label, "CERTIFICATE", "{}", path.display());
    pem.contents
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn certs_writes_six_files_keys_0600_and_the_sans() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    let run = satellite([
        "certs",
        "--out",
        out.to_str().unwrap(),
        "--days",
        "2",
        "--san",
        "map.example.test",
        "--san",
        "10.1.2.3",
    ]);
    run.expect_code(0);
    for name in FILES {
        let path = out.join(name);
        assert!(path.is_file(), "{name} missing");
        assert!(run.stdout.contains(name), "output does not mention {name}");
        if name.ends_with("-key.pem") {
            assert_eq!(mode(&path), 0o600, "{name}");
            let text = fs::read_to_string(&path).unwrap();
            assert!(text.contains("PRIVATE KEY"), "{name}");
        }
    }

    let ca_der = pem_cert(&out.join("ca-cert.pem"));
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    assert!(ca.is_ca());
    let server_der = pem_cert(&out.join("server-cert.pem"));
    let (_, server) = x509_parser::parse_x509_certificate(&server_der).unwrap();
    let client_der = pem_cert(&out.join("client-cert.pem"));
    let (_, client) = x509_parser::parse_x509_certificate(&client_der).unwrap();
    assert_eq!(server.issuer(), ca.subject());
    assert_eq!(client.issuer(), ca.subject());
    assert!(!server.is_ca() && !client.is_ca());

    let sans = server
        .subject_alternative_name()
        .unwrap()
        .expect("server certificate has SANs");
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    for name in &sans.value.general_names {
        match name {
            GeneralName::DNSName(n) => dns.push((*n).to_owned()),
            GeneralName::IPAddress(b) => ips.push(b.to_vec()),
            other => panic!("unexpected SAN {other:?}"),
        }
    }
    dns.sort();
    assert_eq!(dns, ["localhost", "map.example.test"]);
    for ip in [
        Ipv4Addr::LOCALHOST.octets().to_vec(),
        Ipv6Addr::LOCALHOST.octets().to_vec(),
        Ipv4Addr::new(10, 1, 2, 3).octets().to_vec(),
    ] {
        assert!(ips.contains(&ip), "IP SAN {ip:?} missing from {ips:?}");
    }
    assert_eq!(ips.len(), 3);
    let eku = server.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth);
    let eku = client.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth);

    // --days 2: valid now, and for about two days.
    let now = x509_parser::time::ASN1Time::now().timestamp();
    let validity = server.validity();
    assert!(validity.not_before.timestamp() <= now);
    let days = (validity.not_after.timestamp() - now) as f64 / 86_400.0;
    assert!((1.99..=2.01).contains(&days), "{days} days");
}

#[test]
fn certs_refuses_to_overwrite_naming_the_file_and_force_works() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    let out_s = out.to_str().unwrap();
    satellite(["certs", "--out", out_s]).expect_code(0);
    let before: Vec<Vec<u8>> = FILES
        .iter()
        .map(|n| fs::read(out.join(n)).unwrap())
        .collect();

    let run = satellite(["certs", "--out", out_s]);
    run.expect_code(2);
    assert!(run.stderr.contains("ca-cert.pem"), "{}", run.stderr);
    assert!(run.stderr.contains("--force"), "{}", run.stderr);
    let after: Vec<Vec<u8>> = FILES
        .iter()
        .map(|n| fs::read(out.join(n)).unwrap())
        .collect();
    assert_eq!(before, after, "a refused run changed files");

    // One leftover file is enough to refuse, and it is the one named.
    let lone = dir.path().join("lone");
    fs::create_dir(&lone).unwrap();
    fs::write(lone.join("client-key.pem"), "keep me").unwrap();
    let run = satellite(["certs", "--out", lone.to_str().unwrap()]);
    run.expect_code(2);
    assert!(run.stderr.contains("client-key.pem"), "{}", run.stderr);
    assert!(
        !lone.join("ca-cert.pem").exists(),
        "refused, yet wrote files"
    );
    assert_eq!(
        fs::read_to_string(lone.join("client-key.pem")).unwrap(),
        "keep me"
    );

    let run = satellite(["certs", "--out", out_s, "--force"]);
    run.expect_code(0);
    for (name, old) in FILES.iter().zip(&before) {
        let new = fs::read(out.join(name)).unwrap();
        assert_ne!(&new, old, "{name} was not rewritten");
        if name.ends_with("-key.pem") {
            assert_eq!(mode(&out.join(name)), 0o600, "{name} after --force");
        }
    }
}

// ===== serve: setup errors =====

#[test]
fn serve_refuses_bad_maps_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    make_certs(&certs);
    for (name, text, line) in [
        ("ragged.txt", "abcd\nabcd\nabc\nabcd\n", "line 3"),
        ("empty.txt", "", "line 1"),
        ("utf8.txt", "abc\nab\u{e9}\n", "line 2"),
    ] {
        let map = dir.path().join(name);
        fs::write(&map, text).unwrap();
        let run = satellite([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--certs",
            certs.to_str().unwrap(),
            "--map",
            map.to_str().unwrap(),
        ]);
        run.expect_code(2);
        assert!(run.stderr.contains(line), "{name}: {}", run.stderr);
        assert!(run.stderr.contains(name), "{name}: {}", run.stderr);
    }
}

#[test]
fn serve_without_certificates_exits_2_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    let run = satellite([
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--certs",
        missing.to_str().unwrap(),
    ]);
    run.expect_code(2);
    assert!(run.stderr.contains("server-cert.pem"), "{}", run.stderr);
    assert!(run.stderr.contains("satellite certs"), "{}", run.stderr);

    // A client without certificates is a setup error too, before any connection.
    let run = satellite([
        "get",
        "0",
        "0",
        "--addr",
        &format!("127.0.0.1:{}", free_port()),
        "--certs",
        missing.to_str().unwrap(),
    ]);
    run.expect_code(2);
    assert!(run.stderr.contains("ca-cert.pem"), "{}", run.stderr);
}

// ===== serve + get / area =====

#[test]
fn get_prints_cells_and_fails_with_the_status() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    make_certs(&certs);
    let server = Serve::start(&certs, &[]);

    for (x, y) in [(0, 0), (79, 31), (10, 20), (40, 16), (62, 24), (79, 0)] {
        let run = server.client(&["get", &x.to_string(), &y.to_string()]);
        run.expect_code(0);
        let want = file_cell(x, y);
        assert!(
            run.stdout.contains(&format!("({x}, {y})")),
            "({x}, {y}): {}",
            run.stdout
        );
        assert!(
            run.stdout.contains(&format!("\"{want}\"")),
            "({x}, {y}) should print {want:?}: {}",
            run.stdout
        );
    }

    let run = server.client(&["get", "80", "0"]);
    run.expect_code(1);
    assert!(run.stderr.contains("OUT_OF_RANGE"), "{}", run.stderr);
    assert!(
        run.stderr.contains("(80, 0)") && run.stderr.contains("80 x 32"),
        "{}",
        run.stderr
    );

    let run = server.client(&["get", "-1", "5"]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("OUT_OF_RANGE") && run.stderr.contains("(-1, 5)"),
        "{}",
        run.stderr
    );

    // Metadata is accepted; a malformed pair is a usage error.
    server
        .client(&["get", "1", "1", "--metadata", "token=abc"])
        .expect_code(0);
    let run = server.client(&["get", "1", "1", "--metadata", "no-equals-sign"]);
    run.expect_code(2);
    assert!(run.stderr.contains("KEY=VALUE"), "{}", run.stderr);
}

#[test]
fn area_plain_prints_the_map_text_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    make_certs(&certs);
    let server = Serve::start(&certs, &[]);
    let lines: Vec<&str> = WORLD.lines().collect();

    for (ll, ur) in [
        ((0, 0), (79, 31)),
        ((10, 20), (30, 25)),
        ((40, 16), (40, 16)),
    ] {
        let run = server.client(&[
            "area",
            &ll.0.to_string(),
            &ll.1.to_string(),
            &ur.0.to_string(),
            &ur.1.to_string(),
            "--render",
            "plain",
        ]);
        run.expect_code(0);
        let want: Vec<&str> = (ll.1..=ur.1)
            .rev()
            .map(|y| &lines[31 - y as usize][ll.0 as usize..=ur.0 as usize])
            .collect();
        let got: Vec<&str> = run.stdout.lines().collect();
        let rows = want.len();
        assert_eq!(
            got.len(),
            rows + 1,
            "map rows then one summary line:\n{}",
            run.stdout
        );
        assert_eq!(&got[..rows], &want[..], "{ll:?}..={ur:?}");
        let cells = (ur.0 - ll.0 + 1) * (ur.1 - ll.1 + 1);
        let summary = got[rows];
        assert!(
            summary.starts_with(&format!("cells: {cells}, bytes: {cells}, elapsed: ")),
            "{summary}"
        );
        assert!(summary.contains("cells/s"), "{summary}");
    }

    // --render none: only the summary.
    let run = server.client(&["area", "0", "0", "3", "3", "--render", "none"]);
    run.expect_code(0);
    assert_eq!(run.stdout.lines().count(), 1, "{}", run.stdout);
    assert!(
        run.stdout.starts_with("cells: 16, bytes: 16"),
        "{}",
        run.stdout
    );

    let run = server.client(&["area", "5", "5", "1", "1"]);
    run.expect_code(1);
    assert!(run.stderr.contains("INVALID_ARGUMENT"), "{}", run.stderr);
    assert!(
        run.stderr.contains("(5, 5)") && run.stderr.contains("(1, 1)"),
        "{}",
        run.stderr
    );

    let run = server.client(&["area", "0", "0", "80", "31"]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("OUT_OF_RANGE") && run.stderr.contains("(80, 31)"),
        "{}",
        run.stderr
    );

    // Negative coordinates parse as numbers, not flags.
    let run = server.client(&["area", "-1", "0", "3", "3"]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("OUT_OF_RANGE") && run.stderr.contains("(-1, 0)"),
        "{}",
        run.stderr
    );
}

#[test]
fn serve_options_scale_and_img_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    make_certs(&certs);
    let server = Serve::start(&certs, &["--scale", "2", "--img-bytes", "3"]);
    for (x, y) in [(0, 0), (159, 63), (21, 41), (125, 33)] {
        let run = server.client(&["get", &x.to_string(), &y.to_string()]);
        run.expect_code(0);
        let want = file_cell(x / 2, y / 2).to_string().repeat(3);
        assert!(
            run.stdout.contains(&format!("\"{want}\"")),
            "({x}, {y}): {}",
            run.stdout
        );
    }
    let run = server.client(&["get", "160", "0"]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("OUT_OF_RANGE") && run.stderr.contains("160 x 64"),
        "{}",
        run.stderr
    );
    let run = server.client(&["area", "0", "0", "159", "63", "--render", "none"]);
    run.expect_code(0);
    let cells = 160 * 64;
    assert!(
        run.stdout
            .starts_with(&format!("cells: {cells}, bytes: {}", cells * 3)),
        "{}",
        run.stdout
    );
}

#[test]
fn custom_map_file_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    make_certs(&certs);
    let map = dir.path().join("small.txt");
    let text = "abcde\nfghij\nklmno\n";
    fs::write(&map, text).unwrap();
    let server = Serve::start(&certs, &["--map", map.to_str().unwrap()]);
    let run = server.client(&["get", "0", "0"]);
    run.expect_code(0);
    assert!(run.stdout.contains("\"k\""), "{}", run.stdout);
    let run = server.client(&["area", "0", "0", "4", "2", "--render", "plain"]);
    run.expect_code(0);
    let got: Vec<&str> = run.stdout.lines().take(3).collect();
    assert_eq!(got, text.lines().collect::<Vec<_>>());
    let run = server.client(&["get", "5", "0"]);
    run.expect_code(1);
    assert!(run.stderr.contains("5 x 3"), "{}", run.stderr);
}

#[test]
fn deadline_with_send_delay_exits_1_deadline_exceeded() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    make_certs(&certs);
    let server = Serve::start(&certs, &["--send-delay", "100"]);
    let started = Instant::now();
    let run = server.client(&[
        "area",
        "0",
        "0",
        "79",
        "31",
        "--deadline",
        "400",
        "--render",
        "none",
    ]);
    run.expect_code(1);
    assert!(run.stderr.contains("DEADLINE_EXCEEDED"), "{}", run.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // The summary still reports the cells that did arrive: fewer than the map.
    assert!(!run.stdout.contains("cells: 2560"), "{}", run.stdout);
    // Unary calls are not delayed, so the same deadline is plenty for them.
    server
        .client(&["get", "0", "0", "--deadline", "400"])
        .expect_code(0);
}

#[test]
fn a_closed_port_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    make_certs(&certs);
    let addr = format!("127.0.0.1:{}", free_port());
    for args in [&["get", "0", "0"][..], &["area", "0", "0", "1", "1"][..]] {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--addr", &addr, "--certs", certs.to_str().unwrap()]);
        let run = satellite(all);
        run.expect_code(1);
        assert!(run.stderr.contains("UNAVAILABLE"), "{}", run.stderr);
    }
}

#[test]
fn a_client_from_another_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let other = dir.path().join("other");
    make_certs(&certs);
    make_certs(&other);
    let server = Serve::start(&certs, &[]);
    let run = satellite([
        "get",
        "0",
        "0",
        "--addr",
        &server.addr.to_string(),
        "--certs",
        other.to_str().unwrap(),
    ]);
    run.expect_code(1);
    assert!(run.stderr.contains("UNAVAILABLE"), "{}", run.stderr);
    // The server is still serving its own clients.
    server.client(&["get", "0", "0"]).expect_code(0);
}

#[test]
fn sigterm_stops_serve_with_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    make_certs(&certs);
    let mut server = Serve::start(&certs, &[]);
    server.client(&["get", "0", "0"]).expect_code(0);
    let started = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = server
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("serve ignored SIGTERM for 5 s: {}", server.log()));
    assert_eq!(status.code(), Some(0), "{}", server.log());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        TcpStream::connect_timeout(&server.addr, Duration::from_millis(500)).is_err(),
        "still listening after exit"
    );
}

#[test]
fn serve_on_a_port_in_use_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    make_certs(&certs);
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let run = satellite(["serve", "--addr", &addr, "--certs", certs.to_str().unwrap()]);
    run.expect_code(2);
    assert!(run.stderr.contains(&addr), "{}", run.stderr);
}

// ===== targets, balancing and service configs =====

/// A client command against `target` with the certificates in `certs`.
fn client_to(certs: &Path, target: &str, args: &[&str]) -> Run {
    let mut all: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    all.extend(["--addr".to_owned(), target.to_owned(), "--certs".to_owned()]);
    all.push(certs.display().to_string());
    all.extend(["--server-name".to_owned(), "localhost".to_owned()]);
    satellite(all)
}

#[test]
fn serve_and_get_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    make_certs(&certs);
    let socket = dir.path().join("satellite.sock");
    let target = format!("unix:{}", socket.display());
    let log = dir.path().join("serve.log");
    let mut child = Command::new(BIN)
        .args(["serve", "--addr", &target, "--certs"])
        .arg(&certs)
        .env("SATELLITE_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(
            started.elapsed() < WAIT,
            "{}",
            fs::read_to_string(&log).unwrap()
        );
        thread::sleep(Duration::from_millis(20));
    }
    let run = client_to(&certs, &target, &["get", "10", "20"]);
    run.expect_code(0);
    assert!(
        run.stdout
            .contains(&format!("{:?}", file_cell(10, 20).to_string())),
        "{}",
        run.stdout
    );
    // SIGTERM: a graceful stop removes the socket file.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    assert!(!socket.exists(), "the socket file was left behind");
}

#[test]
fn area_over_round_robin_draws_the_whole_map_from_several_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    make_certs(&certs);
    let a = Serve::start(&certs, &["--instance", "a"]);
    let b = Serve::start(&certs, &["--instance", "b"]);
    let target = format!("ipv4:{},{}", a.addr, b.addr);
    let lines: Vec<&str> = WORLD.lines().collect();
    for _ in 0..2 {
        let run = client_to(
            &certs,
            &target,
            &[
                "area",
                "0",
                "0",
                "79",
                "31",
                "--render",
                "plain",
                "--lb",
                "round_robin",
            ],
        );
        run.expect_code(0);
        let got: Vec<&str> = run.stdout.lines().collect();
        assert_eq!(&got[..32], &lines[..], "{}", run.stdout);
    }
    let run = client_to(&certs, &target, &["get", "1", "1", "--lb", "round_robin"]);
    run.expect_code(0);
    // A target whose every address is dead names them.
    let dead = format!("ipv4:127.0.0.1:{},127.0.0.1:{}", free_port(), free_port());
    let run = client_to(&certs, &dead, &["get", "1", "1", "--lb", "round_robin"]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("UNAVAILABLE") && run.stderr.contains(&dead),
        "{}",
        run.stderr
    );
}

#[test]
fn a_service_config_is_read_and_a_bad_one_exits_2_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    make_certs(&certs);
    let server = Serve::start(&certs, &[]);
    let good = dir.path().join("good.json");
    fs::write(
        &good,
        r#"{"loadBalancingConfig": [{"round_robin": {}}],
            "methodConfig": [{"name": [{"service": "satellite.Satellite"}], "timeout": "5s",
              "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.1s", "maxBackoff": "1s",
                              "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]}"#,
    )
    .unwrap();
    let run = client_to(
        &certs,
        &server.addr.to_string(),
        &["get", "3", "3", "--service-config", good.to_str().unwrap()],
    );
    run.expect_code(0);
    let bad = dir.path().join("bad.json");
    fs::write(
        &bad,
        r#"{"methodConfig": [{"name": [{"service": "satellite.Satellite"}],
            "retryPolicy": {"maxAttempts": 3, "initialBackoff": "1 second"}}]}"#,
    )
    .unwrap();
    let run = client_to(
        &certs,
        &server.addr.to_string(),
        &["get", "3", "3", "--service-config", bad.to_str().unwrap()],
    );
    run.expect_code(2);
    assert!(
        run.stderr.contains("bad.json")
            && run
                .stderr
                .contains("methodConfig[0].retryPolicy.initialBackoff"),
        "{}",
        run.stderr
    );
    let run = client_to(&certs, "ipv6:1.2.3.4", &["get", "3", "3"]);
    run.expect_code(2);
    assert!(run.stderr.contains("ipv6:1.2.3.4"), "{}", run.stderr);
}

#[test]
fn demo_web_prints_the_url_serves_the_page_and_stops_on_sigint() {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(BIN)
        .args([
            "demo",
            "--render",
            "none",
            "--web",
            &format!("127.0.0.1:{port}"),
            "--certs",
        ])
        .arg(dir.path().join("certs"))
        .env("SATELLITE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = format!("http://127.0.0.1:{port}/");
    let started = Instant::now();
    let mut saw = Vec::new();
    loop {
        let line = lines.next().expect("demo output").unwrap();
        saw.push(line.clone());
        if line.contains("still serving") {
            break;
        }
        assert!(started.elapsed() < WAIT, "{saw:?}");
    }
    assert!(saw.iter().any(|l| l.contains(&url)), "{saw:?}");
    assert!(saw.iter().any(|l| l.starts_with("cells: 2560")), "{saw:?}");
    let mut page = TcpStream::connect(("127.0.0.1", port)).unwrap();
    page.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut html = String::new();
    page.read_to_string(&mut html).unwrap();
    assert!(
        html.starts_with("HTTP/1.1 200") && html.contains("<canvas"),
        "{html}"
    );
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}
