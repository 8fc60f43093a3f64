//! The `satellite` command line: `serve`, `get`, `area`, `certs` and `demo`.
//!
//! Exit codes: 0 success, 1 a call failed (its status code and message are printed), 2 a usage
//! or setup error (bad flag, missing certificate, unreadable map, port in use).

use std::{
    io::{self, Write as _},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio::{net::TcpListener, time::Instant};

use crate::app::{
    certs::{self, CertOptions},
    client::{CallOptions, SatelliteClient},
    map::Map,
    render::{self, RenderMode, Renderer},
    service::{MapService, ServiceOptions, SERVICE_NAME},
    FILE_DESCRIPTOR_SET,
};
use crate::grpc::{
    self,
    admin::{serve_admin, Healthy},
    authz::Authz,
    error::error_chain,
    health::{pb::health_check_response::ServingStatus, HealthReporter},
    metrics::Metrics,
    reflection::Reflection,
    reload::{Reload, ReloadHandle, Reloader},
    tls::{self, Identity, Roots},
    tls_reload::{self, ReloadingIdentity, ReloadingVerifier},
    BrowserConfig, Channel, Endpoint, LbPolicy, Metadata, RequestBudget, ServerConfig,
    ServiceConfig, Status, Transport,
};

/// The satellite map server and its client, over gRPC with mutual TLS.
#[derive(Debug, Parser)]
#[command(name = "satellite", version, about, propagate_version = true)]
pub struct Cli {
    /// Log filter, as in RUST_LOG ("info", "satellite=debug", ...).
    #[arg(long, global = true, default_value = "info")]
    pub log: String,
    /// Log every call's headers, messages (direction, size, compressed flag) and trailers.
    #[arg(long, global = true)]
    pub trace_wire: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the map over gRPC (mutual TLS unless --plaintext).
    Serve(Box<ServeArgs>),
    /// Fetch one cell (GetImage).
    Get(GetArgs),
    /// Stream a rectangle of cells (GetImages) and draw it as it arrives.
    #[command(allow_negative_numbers = true)]
    Area(AreaArgs),
    /// Make a CA, a server certificate and a client certificate for mutual TLS.
    Certs(CertsArgs),
    /// Run everything once: certificates, a server, single calls, the whole map drawn live.
    Demo(DemoArgs),
}

/// Where the certificates come from.
#[derive(Debug, Args)]
struct TlsArgs {
    /// Directory with the files `satellite certs` writes.
    #[arg(long, default_value = "certs")]
    certs: PathBuf,
    /// CA certificate (PEM); overrides the one in --certs.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Certificate (PEM); overrides the one in --certs.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Private key (PEM); overrides the one in --certs.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Plaintext HTTP/2 instead of TLS (testing and trusted networks only).
    #[arg(long, conflicts_with_all = ["ca", "cert", "key"])]
    plaintext: bool,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on: host:port, or unix:/path for a Unix domain socket.
    #[arg(long, default_value = "127.0.0.1:8000", value_parser = ListenAddr::parse)]
    addr: ListenAddr,
    #[command(flatten)]
    tls: TlsArgs,
    /// Map file: H lines of W printable ASCII bytes (default: the embedded 80 x 32 world).
    #[arg(long)]
    map: Option<PathBuf>,
    /// Pause before each streamed message, in milliseconds.
    #[arg(long, default_value_t = 0)]
    send_delay: u64,
    /// Each cell becomes K x K cells.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    scale: u32,
    /// Bytes per image (the cell's byte repeated).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=4_194_000))]
    img_bytes: u64,
    /// Seconds calls in flight may take to finish after Ctrl-C or SIGTERM.
    #[arg(long, default_value_t = defaults().shutdown_grace.as_secs())]
    grace: u64,
    /// Also serve the health service alone, in plaintext, on this port of the same address
    /// (for probes that cannot present a client certificate, such as Kubernetes').
    #[arg(long)]
    health_port: Option<u16>,
    /// A name for this replica, sent back as the `x-satellite-instance` response header.
    #[arg(long)]
    instance: Option<String>,
    /// A certificate revocation list (PEM or DER) signed by a CA of the bundle: client
    /// certificates it lists fail the handshake; reloaded like the certificates; repeatable
    /// (default: none).
    #[arg(long, value_name = "FILE", conflicts_with = "plaintext")]
    crl: Vec<PathBuf>,
    /// Authorization policy (gRFC A43 JSON): deny and allow rules over methods, headers and
    /// client certificate identities; reloaded when the file changes and on SIGHUP (default:
    /// none, every client the CA vouches for may call every method).
    #[arg(long, value_name = "FILE")]
    authz_policy: Option<PathBuf>,
    /// Seconds between checks of the watched files (certificate, key, client CA bundle, CRLs,
    /// policy) for changes; 0 reloads only on SIGHUP. New handshakes use reloaded certificates;
    /// open connections keep theirs.
    #[arg(long, default_value_t = 10.0, value_name = "SECS", value_parser = parse_interval)]
    reload_interval: f64,
    /// Serve Prometheus metrics (`GET /metrics`, gRFC A66 names) and `GET /healthz` over plain
    /// HTTP/1.1 on this address; never the gRPC methods (default: off). Keep it private.
    #[arg(long, value_name = "ADDR")]
    admin_addr: Option<SocketAddr>,
    /// Also serve browsers on this address: the map page at `/`, and gRPC-Web and Connect
    /// calls over HTTP/1.1, with TLS from the server certificate (client certificates optional,
    /// verified when presented) unless --web-plaintext (default: off).
    #[arg(long, value_name = "ADDR")]
    web: Option<SocketAddr>,
    /// Serve --web without TLS; only on a loopback address.
    #[arg(long, requires = "web")]
    web_plaintext: bool,
    /// An origin allowed to call --web from another page (CORS), such as
    /// https://app.example, or `*`; repeatable (default: none, only the page served there).
    #[arg(long = "web-origin", value_name = "ORIGIN", requires = "web")]
    web_origins: Vec<String>,
    /// Benchmarks only: run every call through one interceptor that does nothing, to measure
    /// what the interceptor path costs.
    #[arg(long, hide = true)]
    bench_noop_interceptor: bool,
    #[command(flatten)]
    limits: LimitArgs,
}

/// Where `serve` listens.
#[derive(Debug, Clone)]
enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl ListenAddr {
    fn parse(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err("unix: needs a socket path, as in unix:/tmp/satellite.sock".into());
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        s.parse()
            .map(Self::Tcp)
            .map_err(|e| format!("expected host:port or unix:/path ({e})"))
    }

    /// Binds, replacing a stale socket file that a previous run left behind (never a
    /// regular file).
    async fn bind(&self) -> Result<grpc::Listener, Failure> {
        match self {
            Self::Tcp(addr) => TcpListener::bind(addr)
                .await
                .map(Into::into)
                .map_err(|e| setup(&format!("cannot listen on {addr}"), e)),
            Self::Unix(path) => {
                use std::os::unix::fs::FileTypeExt as _;
                if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                    let _ = std::fs::remove_file(path);
                }
                tokio::net::UnixListener::bind(path)
                    .map(Into::into)
                    .map_err(|e| setup(&format!("cannot listen on unix:{}", path.display()), e))
            }
        }
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Connection management and limits; defaults are the runtime's (see `ServerConfig`).
#[derive(Debug, Args)]
struct LimitArgs {
    /// Open connections at once; more wait in the kernel's backlog.
    #[arg(long, default_value_t = defaults().max_connections)]
    max_connections: usize,
    /// Concurrent streams (calls) per connection, advertised in SETTINGS.
    #[arg(long, default_value_t = defaults().max_concurrent_streams)]
    max_concurrent_streams: u32,
    /// Largest message accepted or sent, in bytes.
    #[arg(long, default_value_t = defaults().max_recv_message_size)]
    max_message_size: usize,
    /// Seconds allowed for the TLS handshake and the HTTP/2 preface.
    #[arg(long, default_value_t = defaults().handshake_timeout.as_secs())]
    handshake_timeout: u64,
    /// Seconds between keepalive pings on a connection (0 disables).
    #[arg(long, default_value_t = secs_or_zero(defaults().keepalive_interval))]
    keepalive_interval: u64,
    /// Seconds to wait for a keepalive ping's answer before closing.
    #[arg(long, default_value_t = defaults().keepalive_timeout.as_secs())]
    keepalive_timeout: u64,
    /// Close connections with no call for this many seconds (0: never).
    #[arg(long, default_value_t = secs_or_zero(defaults().max_connection_idle))]
    max_connection_idle: u64,
    /// Close connections after this many seconds, +-10 % jitter (0: never).
    #[arg(long, default_value_t = secs_or_zero(defaults().max_connection_age))]
    max_connection_age: u64,
    /// Seconds calls in flight may take after an idle or age GOAWAY.
    #[arg(long, default_value_t = defaults().max_connection_age_grace.as_secs())]
    max_connection_age_grace: u64,
    /// Bytes of unfinished request messages one connection may have buffered; past it (or
    /// the total) the connection gets no more flow-control window. Sixteen 4 MiB requests.
    #[arg(long, value_name = "BYTES", default_value_t = budget_defaults().per_connection)]
    request_budget_per_connection: usize,
    /// Bytes of unfinished request messages all connections together may have buffered.
    #[arg(long, value_name = "BYTES", default_value_t = budget_defaults().total)]
    request_budget_total: usize,
    /// Seconds a stream holding an unfinished request message may receive nothing while a
    /// budget is full before it is reset with RESOURCE_EXHAUSTED.
    #[arg(long, value_name = "SECS", default_value_t = budget_defaults().stall_timeout.as_secs())]
    request_stall_timeout: u64,
}

/// The request memory budget's defaults, which the flags above show.
fn budget_defaults() -> RequestBudget {
    RequestBudget::default()
}

/// An interceptor that lets every call through (`serve --bench-noop-interceptor`).
struct Noop;

impl grpc::ServerInterceptor for Noop {
    fn before<'a>(
        &'a self,
        _head: &'a mut grpc::CallHead,
    ) -> grpc::BoxFuture<'a, Result<(), Status>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// `--reload-interval`: non-negative seconds, decimals allowed, at most a day.
fn parse_interval(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs) if (0.0..=86_400.0).contains(&secs) => Ok(secs),
        _ => Err(format!("{text:?} is not a number of seconds in 0..=86400")),
    }
}

/// The runtime's defaults, which the flags above show and start from.
fn defaults() -> ServerConfig {
    ServerConfig::new(Transport::Plaintext)
}

/// A setting that may be off, as the flags take it: seconds, 0 for off.
fn secs_or_zero(d: Option<Duration>) -> u64 {
    d.map_or(0, |d| d.as_secs())
}

/// Whether to log TLS secrets: only when `SSLKEYLOGFILE` is set, and then said on stderr, so
/// that nobody's traffic becomes readable unnoticed.
fn tls_key_log() -> bool {
    static SAID: std::sync::Once = std::sync::Once::new();
    let Some(path) = std::env::var_os("SSLKEYLOGFILE") else {
        return false;
    };
    SAID.call_once(|| {
        eprintln!(
            "satellite: SSLKEYLOGFILE is set: TLS secrets are written to {}",
            path.to_string_lossy()
        );
    });
    true
}

impl LimitArgs {
    fn apply(&self, config: &mut ServerConfig) {
        let secs = Duration::from_secs;
        let optional = |s: u64| (s > 0).then(|| secs(s));
        config.max_connections = self.max_connections;
        config.max_concurrent_streams = self.max_concurrent_streams;
        config.max_recv_message_size = self.max_message_size;
        config.max_send_message_size = self.max_message_size;
        config.handshake_timeout = secs(self.handshake_timeout);
        config.keepalive_interval = optional(self.keepalive_interval);
        config.keepalive_timeout = secs(self.keepalive_timeout);
        config.max_connection_idle = optional(self.max_connection_idle);
        config.max_connection_age = optional(self.max_connection_age);
        config.max_connection_age_grace = secs(self.max_connection_age_grace);
        config.request_budget = Some(RequestBudget {
            per_connection: self.request_budget_per_connection,
            total: self.request_budget_total,
            stall_timeout: secs(self.request_stall_timeout),
        });
    }
}

#[derive(Debug, Args)]
struct ClientArgs {
    /// Target: host:port (every address the name resolves to), dns:///host:port,
    /// ipv4:a:port,b:port, ipv6:[a]:port,..., or unix:/path.
    #[arg(long, default_value = "127.0.0.1:8000")]
    addr: String,
    /// Load balancing over the target's addresses (default: the service config's, else
    /// pick_first).
    #[arg(long, value_enum)]
    lb: Option<LbArg>,
    /// A service config in JSON (gRFC A6): balancer, per-method timeouts, waitForReady,
    /// retry policies, retry throttling, health checking.
    #[arg(long, value_name = "FILE")]
    service_config: Option<PathBuf>,
    #[command(flatten)]
    tls: TlsArgs,
    /// Name the server certificate must carry (default: the host of --addr).
    #[arg(long)]
    server_name: Option<String>,
    /// Deadline for the call, in milliseconds.
    #[arg(long)]
    deadline: Option<u64>,
    /// Metadata to send, as key=value (repeatable; keys ending in -bin take raw text).
    #[arg(long = "metadata", value_name = "KEY=VALUE")]
    metadata: Vec<String>,
}

#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
struct GetArgs {
    /// Column, from 0 at the left.
    x: i32,
    /// Row, from 0 at the bottom.
    y: i32,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
struct AreaArgs {
    /// Lower-left column.
    x0: i32,
    /// Lower-left row.
    y0: i32,
    /// Upper-right column.
    x1: i32,
    /// Upper-right row.
    y1: i32,
    /// How to draw: live in place, plain text at the end, or nothing (default: live on a
    /// terminal, plain otherwise).
    #[arg(long, value_enum)]
    render: Option<RenderArg>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LbArg {
    #[value(name = "pick_first")]
    PickFirst,
    #[value(name = "round_robin")]
    RoundRobin,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RenderArg {
    Live,
    Plain,
    None,
}

#[derive(Debug, Args)]
struct CertsArgs {
    /// Output directory.
    #[arg(long, default_value = "certs")]
    out: PathBuf,
    /// Days the certificates are valid.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3650))]
    days: u32,
    /// Extra server name (DNS name or IP address); repeatable.
    #[arg(long)]
    san: Vec<String>,
    /// Re-issue the server and client certificates (new keys and serials, validity from
    /// now) from the CA already in --out, replacing those four files; the CA stays. A running
    /// `serve` picks them up on its next check or SIGHUP.
    #[arg(long, conflicts_with_all = ["client_name", "force"])]
    renew: bool,
    /// Add the certificate in CERT to the CRL in --out (crl.pem, made if missing), signed by
    /// the CA there and valid for --days; `serve --crl` refuses it from its next reload.
    #[arg(long, value_name = "CERT", conflicts_with_all = ["renew", "client_name", "unrevoke"])]
    revoke: Option<PathBuf>,
    /// Remove the certificate in CERT from the CRL in --out (crl.pem).
    #[arg(long, value_name = "CERT", conflicts_with_all = ["renew", "client_name"])]
    unrevoke: Option<PathBuf>,
    /// Issue only a client certificate named NAME (CN=NAME, URI SAN spiffe://satellite/NAME)
    /// from the CA already in --out, as client-NAME-cert.pem and client-NAME-key.pem;
    /// repeatable.
    #[arg(long, value_name = "NAME")]
    client_name: Vec<String>,
    /// Overwrite existing files.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Where the demo keeps its certificates (made on first use).
    #[arg(long, default_value = "certs")]
    certs: PathBuf,
    /// Pause before each streamed cell, in milliseconds.
    #[arg(long, default_value_t = 2)]
    send_delay: u64,
    /// How to draw the map (default: live on a terminal, plain otherwise).
    #[arg(long, value_enum)]
    render: Option<RenderArg>,
    /// Also serve the map page to browsers on this loopback address (plaintext), print its
    /// URL, and keep serving after the demo until Ctrl-C; `--web` alone takes 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:8080")]
    web: Option<SocketAddr>,
}

impl Cli {
    /// The log filter to use: the demo keeps the server's per-call lines out of its drawing
    /// unless a filter was asked for.
    pub fn log_filter(&self) -> String {
        let base = match self.command {
            Command::Demo(_) if self.log == "info" => "warn",
            _ => &self.log,
        };
        if self.trace_wire {
            format!("{base},{}=debug", grpc::WIRE_TARGET)
        } else {
            base.to_owned()
        }
    }
}

/// Why a command failed, which decides the exit code.
#[derive(Debug)]
enum Failure {
    /// Bad usage or setup: exit 2.
    Setup(String),
    /// A call failed: exit 1.
    Call(Status),
}

impl From<Status> for Failure {
    fn from(status: Status) -> Self {
        Self::Call(status)
    }
}

fn setup(context: &str, e: impl std::fmt::Display) -> Failure {
    Failure::Setup(format!("{context}: {e}"))
}

/// Runs the parsed command and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(*args).await,
            Command::Get(args) => get(args).await,
            Command::Area(args) => area(args).await,
            Command::Certs(args) => make_certs(&args),
            Command::Demo(args) => demo(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Call(status)) => {
            eprintln!("error: {}: {}", status.code(), status.message());
            ExitCode::from(1)
        }
        Err(Failure::Setup(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

// ===== serve =====

async fn serve(args: ServeArgs) -> Result<(), Failure> {
    let map = match &args.map {
        Some(path) => Map::load(path).map_err(|e| Failure::Setup(e.to_string()))?,
        None => Map::world(),
    };
    let map = map.scaled(args.scale).map_err(|e| setup("--scale", e))?;
    let options = ServiceOptions {
        send_delay: Duration::from_millis(args.send_delay),
        img_bytes: usize::try_from(args.img_bytes).map_err(|e| setup("--img-bytes", e))?,
    };
    let mut service = MapService::new(map, &options);
    if let Some(name) = &args.instance {
        service = service
            .with_instance(name)
            .map_err(|e| setup("--instance", e))?;
    }
    let (transport, tls_material) = server_transport(&args.tls, &args.crl)?;
    let mode = if args.tls.plaintext {
        "plaintext"
    } else {
        "mutual TLS"
    };
    let listener = args.addr.bind().await?;
    let mut config = ServerConfig::new(transport);
    config.shutdown_grace = Duration::from_secs(args.grace);
    config.tls_key_log = tls_key_log();
    // The main port also answers gRPC-Web and Connect by content type (HTTP/2 clients of
    // those protocols, browsers behind an HTTP/2 proxy).
    config.web_protocols = Some(FILE_DESCRIPTOR_SET);
    args.limits.apply(&mut config);
    config
        .validate()
        .map_err(|e| Failure::Setup(error_chain(&e)))?;
    let addr = match &listener {
        grpc::Listener::Tcp(l) => l
            .local_addr()
            .map_err(|e| setup("listener", e))?
            .to_string(),
        _ => args.addr.to_string(),
    };

    let health = HealthReporter::new();
    health.set_status(SERVICE_NAME, ServingStatus::Serving);
    let reflection = Reflection::new(
        FILE_DESCRIPTOR_SET,
        &[
            SERVICE_NAME,
            HEALTH_SERVICE,
            REFLECTION_V1,
            REFLECTION_V1ALPHA,
        ],
    )
    .map_err(|e| setup("reflection", e))?;
    let mut router = service
        .router()
        .merge(health.router())
        .merge(reflection.router());
    // Metrics first, so they count the calls authorization refuses too; then authorization,
    // so that nothing else runs for a call it denies.
    let metrics = args.admin_addr.map(|_| Metrics::new());
    let mut reloader = Reloader::new();
    if let Some(metrics) = &metrics {
        config.metrics = Some(metrics.clone());
        router = router.intercept(metrics.server_interceptor());
        reloader = reloader.on_reload(metrics.reload_observer());
    }
    for item in tls_material {
        reloader = reloader.watch(item);
    }
    if let Some(path) = &args.authz_policy {
        let mut authz = Authz::from_file(path).map_err(|e| Failure::Setup(error_chain(&e)))?;
        if let Some(metrics) = &metrics {
            authz = authz.on_decision(metrics.authz_observer());
        }
        tracing::info!(policy = authz.policy().name(), file = %path.display(), "authorization policy in force");
        router = router.intercept(authz.interceptor());
        reloader = reloader.watch(Arc::new(authz));
    }
    if args.bench_noop_interceptor {
        router = router.intercept(Noop);
    }
    let interval =
        (args.reload_interval > 0.0).then(|| Duration::from_secs_f64(args.reload_interval));
    let reloads = reloader.spawn(interval);
    let hangups = reload_on_sighup(reloads);

    // One signal stops both listeners; health turns NOT_SERVING first so that probes and load
    // balancers stop sending before the GOAWAY.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let health_server = match args.health_port {
        None => None,
        Some(port) => {
            let ListenAddr::Tcp(main) = &args.addr else {
                return Err(Failure::Setup(
                    "--health-port needs a TCP --addr (it listens on the same IP)".into(),
                ));
            };
            let health_addr = SocketAddr::new(main.ip(), port);
            let health_listener = TcpListener::bind(health_addr).await.map_err(|e| {
                setup(
                    &format!("cannot listen on {health_addr} (--health-port)"),
                    e,
                )
            })?;
            tracing::info!(addr = %health_addr, "serving health checks in plaintext");
            let mut health_config = ServerConfig::new(Transport::Plaintext);
            health_config.shutdown_grace = config.shutdown_grace;
            Some(tokio::spawn(grpc::run(
                health_listener,
                health_config,
                health.router(),
                stopped(stop_rx.clone()),
            )))
        }
    };
    let admin = match (args.admin_addr, &metrics) {
        (Some(admin_addr), Some(metrics)) => {
            Some(start_admin(admin_addr, metrics.clone(), stop_rx.clone()).await?)
        }
        _ => None,
    };
    let browser = match args.web {
        None => None,
        Some(web_addr) => {
            let config = browser_config(&args, service.map().width(), service.map().height())?;
            let listener = TcpListener::bind(web_addr)
                .await
                .map_err(|e| setup(&format!("cannot listen on {web_addr} (--web)"), e))?;
            let shown = listener.local_addr().map_err(|e| setup("--web", e))?;
            let scheme = if config.tls.is_some() {
                "https"
            } else {
                "http"
            };
            tracing::info!(url = %format!("{scheme}://{shown}/"), "serving the map page");
            Some(tokio::spawn(grpc::run_browser(
                listener,
                config,
                router.clone(),
                stopped(stop_rx.clone()),
            )))
        }
    };
    let signals = {
        let health = health.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            health.shutdown();
            let _ = stop_tx.send(true);
        })
    };
    tracing::info!(%addr, mode, width = service.map().width(), height = service.map().height(), "serving the map");
    let served = grpc::run(listener, config, router, stopped(stop_rx)).await;
    signals.abort();
    hangups.abort();
    if let Some(health_server) = health_server {
        let _ = health_server.await;
    }
    if let Some(browser) = browser {
        let _ = browser.await;
    }
    if let Some((stop_admin, admin)) = admin {
        let _ = stop_admin.send(());
        let _ = admin.await;
    }
    if let ListenAddr::Unix(path) = &args.addr {
        let _ = std::fs::remove_file(path);
    }
    served.map_err(|e| setup("server", e))?;
    tracing::info!("server stopped");
    Ok(())
}

/// The browser listener's settings: the page, the JSON descriptors, CORS and TLS.
fn browser_config(args: &ServeArgs, width: i32, height: i32) -> Result<BrowserConfig, Failure> {
    let web_addr = args.web.expect("--web was given");
    let tls = if args.web_plaintext {
        if !web_addr.ip().is_loopback() {
            return Err(Failure::Setup(format!(
                "--web-plaintext is for loopback only; {web_addr} is not (drop --web-plaintext to use TLS)"
            )));
        }
        None
    } else {
        if args.tls.plaintext {
            return Err(Failure::Setup(
                "--web needs the server certificate (drop --plaintext) or --web-plaintext".into(),
            ));
        }
        let (ca, cert, key) = tls_files(&args.tls, "server");
        let identity = Identity::from_pem_files(&cert, &key).map_err(|e| setup_tls(&e))?;
        let roots = Roots::from_pem_file(&ca).map_err(|e| setup_tls(&e))?;
        Some(tls::browser_server_config(&identity, Some(&roots)).map_err(|e| setup_tls(&e))?)
    };
    Ok(BrowserConfig {
        tls,
        allowed_origins: args.web_origins.clone(),
        files: crate::app::page::files(width, height),
        descriptor_set: Some(FILE_DESCRIPTOR_SET),
        max_message_size: args.limits.max_message_size,
        ..BrowserConfig::default()
    })
}

/// The server's transport, and the TLS material in it that reloads (certificate and key,
/// client CA bundle and CRLs).
fn server_transport(
    tls: &TlsArgs,
    crls: &[PathBuf],
) -> Result<(Transport, Vec<Arc<dyn Reload>>), Failure> {
    if tls.plaintext {
        return Ok((Transport::Plaintext, Vec::new()));
    }
    let (ca, cert, key) = tls_files(tls, "server");
    let identity = ReloadingIdentity::from_pem_files(&cert, &key).map_err(|e| setup_tls(&e))?;
    let verifier = ReloadingVerifier::from_files(&ca, crls).map_err(|e| setup_tls(&e))?;
    let config = tls_reload::server_config(identity.clone(), Some(verifier.clone()))
        .map_err(|e| setup_tls(&e))?;
    Ok((Transport::Tls(config), vec![identity, verifier]))
}

fn tls_files(tls: &TlsArgs, role: &str) -> (PathBuf, PathBuf, PathBuf) {
    let dir = &tls.certs;
    (
        tls.ca.clone().unwrap_or_else(|| dir.join("ca-cert.pem")),
        tls.cert
            .clone()
            .unwrap_or_else(|| dir.join(format!("{role}-cert.pem"))),
        tls.key
            .clone()
            .unwrap_or_else(|| dir.join(format!("{role}-key.pem"))),
    )
}

fn setup_tls(e: &grpc::Error) -> Failure {
    let mut text = error_chain(e);
    if e.is_io() {
        text.push_str(" (run `satellite certs` to make certificates, or pass --plaintext)");
    }
    Failure::Setup(text)
}

/// Binds the admin listener and serves `/metrics` and `/healthz` (503 once `stopping`) until
/// told to stop, which happens after the gRPC server has drained.
async fn start_admin(
    addr: SocketAddr,
    metrics: Metrics,
    stopping: tokio::sync::watch::Receiver<bool>,
) -> Result<
    (
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ),
    Failure,
> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| setup(&format!("cannot listen on {addr} (--admin-addr)"), e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| setup("admin listener", e))?;
    tracing::info!(addr = %bound, "serving /metrics and /healthz over HTTP/1.1");
    let healthy: Healthy = Arc::new(move || !*stopping.borrow());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve_admin(listener, metrics, healthy, async {
        let _ = stopped.await;
    }));
    Ok((stop, task))
}

/// Reloads everything watched on each SIGHUP, for as long as the returned task runs; holds
/// the reloader (its file checks stop with it). Listening for SIGHUP also keeps it from
/// ending the process, its default.
fn reload_on_sighup(reloads: ReloadHandle) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::hangup()) {
                Ok(mut hup) => {
                    while hup.recv().await.is_some() {
                        tracing::info!("SIGHUP: reloading certificates and policy");
                        reloads.reload_soon();
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP"),
            }
        }
        // Keep the reloader (and its file checks) alive until the server stops.
        std::future::pending::<()>().await;
        drop(reloads);
    })
}

/// Service names listed by reflection besides the map's.
const HEALTH_SERVICE: &str = "grpc.health.v1.Health";
const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: finishing calls in flight");
}

// ===== client commands =====

fn client_of(args: &ClientArgs) -> Result<(SatelliteClient, CallOptions), Failure> {
    let mut endpoint = Endpoint::new(args.addr.clone());
    if !args.tls.plaintext {
        let (ca, cert, key) = tls_files(&args.tls, "client");
        let roots = Roots::from_pem_file(&ca).map_err(|e| setup_tls(&e))?;
        let identity = Identity::from_pem_files(&cert, &key).map_err(|e| setup_tls(&e))?;
        let config = tls::client_config(&roots, Some(&identity)).map_err(|e| setup_tls(&e))?;
        endpoint = endpoint.tls(config);
    }
    if let Some(name) = &args.server_name {
        endpoint = endpoint.server_name(name.clone());
    }
    if let Some(lb) = args.lb {
        endpoint = endpoint.lb_policy(match lb {
            LbArg::PickFirst => LbPolicy::PickFirst,
            LbArg::RoundRobin => LbPolicy::RoundRobin,
        });
    }
    if let Some(path) = &args.service_config {
        let context = format!("--service-config {}", path.display());
        let json = std::fs::read_to_string(path).map_err(|e| setup(&context, e))?;
        let config = ServiceConfig::from_json(&json).map_err(|e| setup(&context, e))?;
        endpoint = endpoint.service_config(config);
    }
    let endpoint = endpoint.tls_key_log(!args.tls.plaintext && tls_key_log());
    let channel = Channel::lazy(endpoint).map_err(|e| setup("--addr", e))?;
    let mut metadata = Metadata::new();
    for pair in &args.metadata {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(Failure::Setup(format!(
                "--metadata {pair:?}: expected KEY=VALUE"
            )));
        };
        let added = if key.ends_with("-bin") {
            metadata.append_bin(key, value.as_bytes())
        } else {
            metadata.append(key, value)
        };
        added.map_err(|e| setup(&format!("--metadata {key:?}"), e))?;
    }
    let options = CallOptions {
        timeout: args.deadline.map(Duration::from_millis),
        metadata,
    };
    Ok((SatelliteClient::new(channel), options))
}

async fn get(args: GetArgs) -> Result<(), Failure> {
    let (client, options) = client_of(&args.client)?;
    let image = client.get_image(args.x, args.y, &options).await?;
    println!(
        "({}, {}): {:?}",
        image.x,
        image.y,
        String::from_utf8_lossy(&image.img)
    );
    Ok(())
}

async fn area(args: AreaArgs) -> Result<(), Failure> {
    let (client, options) = client_of(&args.client)?;
    let mode = render_mode(args.render);
    draw_area(
        &client,
        (args.x0, args.y0),
        (args.x1, args.y1),
        &options,
        mode,
    )
    .await
}

fn render_mode(arg: Option<RenderArg>) -> RenderMode {
    match arg {
        Some(RenderArg::Live) => RenderMode::Live,
        Some(RenderArg::Plain) => RenderMode::Plain,
        Some(RenderArg::None) => RenderMode::None,
        None => RenderMode::auto(),
    }
}

/// Streams an area and draws each cell as it arrives, then prints the summary line.
async fn draw_area(
    client: &SatelliteClient,
    ll: (i32, i32),
    ur: (i32, i32),
    options: &CallOptions,
    mode: RenderMode,
) -> Result<(), Failure> {
    let started = Instant::now();
    let mut images = client.get_images(ll, ur, options).await?;
    let width = u32::try_from(i64::from(ur.0) - i64::from(ll.0) + 1).unwrap_or(0);
    let height = u32::try_from(i64::from(ur.1) - i64::from(ll.1) + 1).unwrap_or(0);
    let mut renderer = Renderer::new(mode, width, height, io::stdout().lock()).with_colour(true);
    let (mut cells, mut bytes) = (0u64, 0u64);
    let result = loop {
        match images.message().await {
            Ok(Some(image)) => {
                cells += 1;
                bytes += image.img.len() as u64;
                // The renderer takes the area's own Cartesian coordinates.
                let x = image.x.saturating_sub(ll.0);
                let y = image.y.saturating_sub(ll.1);
                if let Err(e) = renderer.cell(x, y, &image.img) {
                    break Err(Failure::Setup(format!("cannot draw: {e}")));
                }
            }
            Ok(None) => break Ok(()),
            Err(status) => break Err(Failure::Call(status)),
        }
    };
    if let Err(e) = renderer.finish() {
        return Err(Failure::Setup(format!("cannot draw: {e}")));
    }
    println!("{}", render::summary(cells, bytes, started.elapsed()));
    result
}

// ===== certs =====

fn make_certs(args: &CertsArgs) -> Result<(), Failure> {
    let change = match (&args.revoke, &args.unrevoke) {
        (Some(cert), _) => Some((cert, false)),
        (None, Some(cert)) => Some((cert, true)),
        (None, None) => None,
    };
    if let Some((cert, unrevoke)) = change {
        let (crl, listed) = certs::revoke(&args.out, cert, args.days, unrevoke)
            .map_err(|e| Failure::Setup(e.to_string()))?;
        println!("wrote {} ({listed} revoked)", crl.display());
        return Ok(());
    }
    if args.renew {
        let mut options = CertOptions::new(&args.out);
        options.days = args.days;
        options.extra_sans = args.san.clone();
        let files = certs::renew(&options).map_err(|e| Failure::Setup(e.to_string()))?;
        for path in [
            &files.server_cert,
            &files.server_key,
            &files.client_cert,
            &files.client_key,
        ] {
            println!("wrote {}", path.display());
        }
        return Ok(());
    }
    if !args.client_name.is_empty() {
        for name in &args.client_name {
            let (cert, key) = certs::issue_client(&args.out, name, args.days, args.force)
                .map_err(|e| Failure::Setup(e.to_string()))?;
            println!("wrote {}", cert.display());
            println!("wrote {}", key.display());
        }
        return Ok(());
    }
    let mut options = CertOptions::new(&args.out);
    options.days = args.days;
    options.extra_sans = args.san.clone();
    options.force = args.force;
    let files = certs::generate(&options).map_err(|e| Failure::Setup(e.to_string()))?;
    for path in files.paths() {
        println!("wrote {}", path.display());
    }
    Ok(())
}

// ===== demo =====

/// The classic client's single requests; the last is off the map on purpose.
const DEMO_CELLS: [(i32, i32); 6] = [(0, 0), (10, 20), (40, 16), (62, 24), (79, 31), (80, 40)];

async fn demo(args: DemoArgs) -> Result<(), Failure> {
    let files = certs::ensure(&args.certs).map_err(|e| Failure::Setup(e.to_string()))?;
    let tls_args = TlsArgs {
        certs: args.certs.clone(),
        ca: None,
        cert: None,
        key: None,
        plaintext: false,
    };
    let (transport, _) = server_transport(&tls_args, &[])?;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| setup("cannot listen on 127.0.0.1", e))?;
    let addr = listener.local_addr().map_err(|e| setup("listener", e))?;
    let map = Map::world();
    let service = MapService::new(
        map.clone(),
        &ServiceOptions {
            send_delay: Duration::from_millis(args.send_delay),
            img_bytes: 1,
        },
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut config = ServerConfig::new(transport);
    config.tls_key_log = tls_key_log();
    config.web_protocols = Some(FILE_DESCRIPTOR_SET);
    let (stop_web, web_stopped) = tokio::sync::oneshot::channel::<()>();
    let browser = match args.web {
        None => None,
        Some(web_addr) => {
            if !web_addr.ip().is_loopback() {
                return Err(Failure::Setup(format!(
                    "demo --web serves plaintext, so loopback only; {web_addr} is not"
                )));
            }
            let listener = TcpListener::bind(web_addr)
                .await
                .map_err(|e| setup(&format!("cannot listen on {web_addr} (--web)"), e))?;
            let shown = listener.local_addr().map_err(|e| setup("--web", e))?;
            let web_config = BrowserConfig {
                files: crate::app::page::files(map.width(), map.height()),
                descriptor_set: Some(FILE_DESCRIPTOR_SET),
                ..BrowserConfig::default()
            };
            let task = tokio::spawn(grpc::run_browser(
                listener,
                web_config,
                service.router(),
                async {
                    let _ = web_stopped.await;
                },
            ));
            println!("satellite demo: the map in a browser at http://{shown}/");
            Some((shown, task))
        }
    };
    let server = tokio::spawn(grpc::run(listener, config, service.router(), async {
        let _ = stopped.await;
    }));
    println!(
        "satellite demo: server on {addr} with mutual TLS (certificates in {})",
        display(&files.ca_cert)
    );

    let client_args = ClientArgs {
        addr: addr.to_string(),
        lb: None,
        service_config: None,
        tls: tls_args,
        server_name: Some("localhost".to_owned()),
        deadline: Some(10_000),
        metadata: vec!["token=demo".to_owned()],
    };
    let (client, options) = client_of(&client_args)?;
    println!();
    for (x, y) in DEMO_CELLS {
        match client.get_image(x, y, &options).await {
            Ok(image) => println!(
                "  GetImage({x}, {y}) -> {:?}",
                String::from_utf8_lossy(&image.img)
            ),
            Err(status) if status.code() == grpc::Code::OutOfRange => {
                println!(
                    "  GetImage({x}, {y}) -> {}: {}",
                    status.code(),
                    status.message()
                );
            }
            Err(status) => return Err(Failure::Call(status)),
        }
    }
    println!(
        "\n  GetImages((0, 0), ({}, {})):\n",
        map.width() - 1,
        map.height() - 1
    );
    let streamed = draw_area(
        &client,
        (0, 0),
        (map.width() - 1, map.height() - 1),
        &CallOptions {
            timeout: Some(Duration::from_secs(60)),
            metadata: options.metadata.clone(),
        },
        render_mode(args.render),
    )
    .await;
    if let Some((shown, task)) = browser {
        println!("\nsatellite demo: still serving http://{shown}/ (Ctrl-C to stop)");
        let _ = io::stdout().flush();
        shutdown_signal().await;
        let _ = stop_web.send(());
        let _ = task.await;
    }
    let _ = stop.send(());
    match tokio::time::timeout(Duration::from_secs(15), server).await {
        Ok(Ok(Ok(()))) => println!("server stopped cleanly"),
        Ok(Ok(Err(e))) => return Err(setup("server", e)),
        Ok(Err(e)) => return Err(setup("server task", e)),
        Err(_) => {
            return Err(Failure::Setup(
                "the server did not stop within 15 s".to_owned(),
            ))
        }
    }
    let _ = io::stdout().flush();
    streamed
}

fn display(path: &Path) -> String {
    path.parent()
        .map_or_else(|| ".".to_owned(), |p| p.display().to_string())
}
