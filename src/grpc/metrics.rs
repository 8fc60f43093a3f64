//! Metrics: the standard gRPC call metrics under their gRFC A66 names, and the server's own
//! (connections, TLS handshake failures, reloads, authorization decisions), in the Prometheus
//! text format.
//!
//! | metric (Prometheus name) | kind | labels |
//! | --- | --- | --- |
//! | `grpc_server_call_started_total` | counter | `grpc_method` |
//! | `grpc_server_call_duration_seconds` | histogram | `grpc_method`, `grpc_status` |
//! | `grpc_server_call_sent_total_compressed_message_size_bytes` | histogram | same |
//! | `grpc_server_call_rcvd_total_compressed_message_size_bytes` | histogram | same |
//! | `grpc_client_attempt_started_total` | counter | `grpc_method`, `grpc_target` |
//! | `grpc_client_attempt_duration_seconds` | histogram | `grpc_method`, `grpc_target`, `grpc_status` |
//! | `grpc_client_attempt_sent_total_compressed_message_size_bytes` | histogram | same |
//! | `grpc_client_attempt_rcvd_total_compressed_message_size_bytes` | histogram | same |
//! | `grpc_client_call_duration_seconds` | histogram | `grpc_method`, `grpc_target`, `grpc_status` |
//! | `grpc_server_connections_open` | gauge | |
//! | `grpc_server_connections_accepted_total` | counter | |
//! | `grpc_server_tls_handshake_failures_total` | counter | `reason` |
//! | `grpc_reloads_total` | counter | `what`, `result` (`ok`, `refused`) |
//! | `grpc_server_authz_decisions_total` | counter | `policy`, `decision`, `rule` |
//! | `grpc_server_budget_rejections_total` | counter | |
//! | `grpc_server_request_buffered_bytes` | gauge | |
//!
//! A66's rules: `grpc_method` is the full method name without the leading slash
//! (`satellite.Satellite/GetImage`), and calls to methods the server does not have are recorded
//! as `other`, so a peer cannot grow the label set; `grpc_status` is the code's name (`OK`,
//! `OUT_OF_RANGE`); message sizes are the payload bytes as framed (compressed, not encrypted,
//! without the 5-byte prefixes); the bucket boundaries are A66's.
//!
//! Server call metrics come from [`Metrics::server_interceptor`], which belongs first in the
//! chain so it also sees the calls later interceptors refuse; client call metrics from
//! [`Metrics::client_interceptor`]. The rest is recorded by the server when
//! [`ServerConfig::metrics`](crate::grpc::ServerConfig::metrics) is set, and through
//! [`Metrics::reload_observer`] and [`Metrics::authz_observer`].

use std::{fmt, sync::Arc};

use prometheus_client::{
    encoding::{prometheus_text, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

use crate::grpc::{
    authz::DecisionObserver,
    intercept::{
        BoxFuture, CallHead, CallSummary, ClientCallHead, ClientInterceptor, ServerInterceptor,
    },
    reload::ReloadObserver,
    status::Status,
};

/// The content type of [`Metrics::encode`]'s output: Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One set of metrics; clones share it. Register it once per process (or per test).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Records a call's (or an attempt's) duration, bytes sent and bytes received, in that order.
fn observe<L>(families: [&Histograms<L>; 3], labels: &L, summary: &CallSummary<'_>)
where
    L: Clone + std::hash::Hash + Eq,
{
    let [duration, sent, rcvd] = families;
    duration
        .get_or_create(labels)
        .observe(summary.elapsed.as_secs_f64());
    sent.get_or_create(labels)
        .observe(summary.bytes_sent as f64);
    rcvd.get_or_create(labels)
        .observe(summary.bytes_received as f64);
}

struct Inner {
    registry: Registry,
    started: Family<MethodLabels, Counter>,
    duration: Histograms<CallLabels>,
    sent: Histograms<CallLabels>,
    rcvd: Histograms<CallLabels>,
    client_duration: Histograms<ClientCallLabels>,
    attempt_started: Family<ClientMethodLabels, Counter>,
    attempt_duration: Histograms<ClientCallLabels>,
    attempt_sent: Histograms<ClientCallLabels>,
    attempt_rcvd: Histograms<ClientCallLabels>,
    connections_open: Gauge,
    connections_accepted: Counter,
    handshake_failures: Family<ReasonLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    authz: Family<AuthzLabels, Counter>,
    budget_rejections: Counter,
    buffered: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    grpc_method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    grpc_method: String,
    grpc_status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientMethodLabels {
    grpc_method: String,
    grpc_target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientCallLabels {
    grpc_method: String,
    grpc_target: String,
    grpc_status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    what: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthzLabels {
    policy: String,
    decision: String,
    rule: String,
}

/// A66's latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 41] = [
    0.0, 0.00001, 0.00005, 0.0001, 0.0003, 0.0006, 0.0008, 0.001, 0.002, 0.003, 0.004, 0.005,
    0.006, 0.008, 0.01, 0.013, 0.016, 0.02, 0.025, 0.03, 0.04, 0.05, 0.065, 0.08, 0.1, 0.13, 0.16,
    0.2, 0.25, 0.3, 0.4, 0.5, 0.65, 0.8, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0,
];

/// A66's size buckets, in bytes.
const SIZE_BUCKETS: [f64; 14] = [
    0.0,
    1024.0,
    2048.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
    268_435_456.0,
    1_073_741_824.0,
    4_294_967_296.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

fn size_histogram() -> Histogram {
    Histogram::new(SIZE_BUCKETS)
}

/// The `grpc_method` label of a path: A66's name, or `other` when `registered` is false.
fn method_label(path: &str, registered: bool) -> String {
    if registered {
        path.strip_prefix('/').unwrap_or(path).to_owned()
    } else {
        "other".to_owned()
    }
}

impl Metrics {
    /// A fresh set of metrics, every one registered and at zero.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let started = Family::<MethodLabels, Counter>::default();
        let duration = Histograms::<CallLabels>::new_with_constructor(latency_histogram);
        let sent = Histograms::<CallLabels>::new_with_constructor(size_histogram);
        let rcvd = Histograms::<CallLabels>::new_with_constructor(size_histogram);
        let client_duration =
            Histograms::<ClientCallLabels>::new_with_constructor(latency_histogram);
        let attempt_started = Family::<ClientMethodLabels, Counter>::default();
        let attempt_duration =
            Histograms::<ClientCallLabels>::new_with_constructor(latency_histogram);
        let attempt_sent = Histograms::<ClientCallLabels>::new_with_constructor(size_histogram);
        let attempt_rcvd = Histograms::<ClientCallLabels>::new_with_constructor(size_histogram);
        let connections_open = Gauge::default();
        let connections_accepted = Counter::default();
        let handshake_failures = Family::<ReasonLabels, Counter>::default();
        let reloads = Family::<ReloadLabels, Counter>::default();
        let authz = Family::<AuthzLabels, Counter>::default();
        let budget_rejections = Counter::default();
        let buffered = Gauge::default();
        registry.register(
            "grpc_server_call_started",
            "Calls started, by method",
            started.clone(),
        );
        registry.register_with_unit(
            "grpc_server_call_duration",
            "Server call duration, from the request head to the trailers",
            Unit::Seconds,
            duration.clone(),
        );
        registry.register_with_unit(
            "grpc_server_call_sent_total_compressed_message_size",
            "Response payload bytes sent per call, compressed, without prefixes",
            Unit::Bytes,
            sent.clone(),
        );
        registry.register_with_unit(
            "grpc_server_call_rcvd_total_compressed_message_size",
            "Request payload bytes received per call, compressed, without prefixes",
            Unit::Bytes,
            rcvd.clone(),
        );
        registry.register_with_unit(
            "grpc_client_call_duration",
            "Client call duration, from the call's start to its status",
            Unit::Seconds,
            client_duration.clone(),
        );
        registry.register(
            "grpc_client_attempt_started",
            "Client call attempts started (retries and transparent retries included)",
            attempt_started.clone(),
        );
        registry.register_with_unit(
            "grpc_client_attempt_duration",
            "Client attempt duration, from its start to its status",
            Unit::Seconds,
            attempt_duration.clone(),
        );
        registry.register_with_unit(
            "grpc_client_attempt_sent_total_compressed_message_size",
            "Request payload bytes sent per attempt, compressed, without prefixes",
            Unit::Bytes,
            attempt_sent.clone(),
        );
        registry.register_with_unit(
            "grpc_client_attempt_rcvd_total_compressed_message_size",
            "Response payload bytes received per attempt, compressed, without prefixes",
            Unit::Bytes,
            attempt_rcvd.clone(),
        );
        registry.register(
            "grpc_server_connections_open",
            "Connections open now (after the TLS handshake)",
            connections_open.clone(),
        );
        registry.register(
            "grpc_server_connections_accepted",
            "TCP connections accepted",
            connections_accepted.clone(),
        );
        registry.register(
            "grpc_server_tls_handshake_failures",
            "TLS handshakes that failed, by reason",
            handshake_failures.clone(),
        );
        registry.register(
            "grpc_reloads",
            "Reloads of certificates, CRLs and policies, by what and result",
            reloads.clone(),
        );
        registry.register(
            "grpc_server_authz_decisions",
            "Authorization decisions, by policy, decision and deciding rule",
            authz.clone(),
        );
        registry.register(
            "grpc_server_budget_rejections",
            "Request streams reset with RESOURCE_EXHAUSTED by the request memory budget",
            budget_rejections.clone(),
        );
        registry.register_with_unit(
            "grpc_server_request_buffered",
            "Bytes of unfinished request messages held now, as charged to the request budget",
            Unit::Bytes,
            buffered.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry,
                started,
                duration,
                sent,
                rcvd,
                client_duration,
                attempt_started,
                attempt_duration,
                attempt_sent,
                attempt_rcvd,
                connections_open,
                connections_accepted,
                handshake_failures,
                reloads,
                authz,
                budget_rejections,
                buffered,
            }),
        }
    }

    /// Everything, in the Prometheus text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_text::encode(&mut text, &self.inner.registry);
        text
    }

    /// The server interceptor recording the A66 call metrics; add it first.
    pub fn server_interceptor(&self) -> ServerMetrics {
        ServerMetrics(self.clone())
    }

    /// A client interceptor recording `grpc.client.call.duration` for calls to `target` (the
    /// address the channel dials).
    pub fn client_interceptor(&self, target: &str) -> ClientMetrics {
        ClientMetrics {
            metrics: self.clone(),
            target: target.to_owned(),
        }
    }

    /// Counts reload attempts (give it to [`Reloader::on_reload`](crate::grpc::reload::Reloader::on_reload)).
    pub fn reload_observer(&self) -> ReloadObserver {
        let metrics = self.clone();
        Arc::new(move |what, ok| {
            let labels = ReloadLabels {
                what: what.to_owned(),
                result: if ok { "ok" } else { "refused" }.to_owned(),
            };
            metrics.inner.reloads.get_or_create(&labels).inc();
        })
    }

    /// Counts authorization decisions (give it to
    /// [`Authz::on_decision`](crate::grpc::authz::Authz::on_decision)).
    pub fn authz_observer(&self) -> DecisionObserver {
        let metrics = self.clone();
        Arc::new(move |decision| {
            let labels = AuthzLabels {
                policy: decision.policy.to_owned(),
                decision: if decision.allowed { "allow" } else { "deny" }.to_owned(),
                // No rule matched: the default deny.
                rule: decision.rule.unwrap_or("").to_owned(),
            };
            metrics.inner.authz.get_or_create(&labels).inc();
        })
    }

    pub(crate) fn budget_rejected(&self) {
        self.inner.budget_rejections.inc();
    }

    /// `bytes` more (or, negative, fewer) of unfinished request messages are held.
    pub(crate) fn buffered(&self, bytes: i64) {
        self.inner.buffered.inc_by(bytes);
    }

    pub(crate) fn connection_accepted(&self) {
        self.inner.connections_accepted.inc();
    }

    /// Counts an open connection until the guard drops.
    pub(crate) fn connection_open(&self) -> OpenConnection {
        self.inner.connections_open.inc();
        OpenConnection(self.clone())
    }

    pub(crate) fn handshake_failed(&self, reason: &str) {
        let labels = ReasonLabels {
            reason: reason.to_owned(),
        };
        self.inner.handshake_failures.get_or_create(&labels).inc();
    }

    /// A call to a method the server does not have: started and ended at once as `other`.
    pub(crate) fn unregistered_call(&self, status: &Status) {
        self.record_started("", false);
        let labels = CallLabels {
            grpc_method: method_label("", false),
            grpc_status: status.code().name().to_owned(),
        };
        self.inner.duration.get_or_create(&labels).observe(0.0);
        self.inner.sent.get_or_create(&labels).observe(0.0);
        self.inner.rcvd.get_or_create(&labels).observe(0.0);
    }

    fn record_started(&self, path: &str, registered: bool) {
        let labels = MethodLabels {
            grpc_method: method_label(path, registered),
        };
        self.inner.started.get_or_create(&labels).inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Counts one open connection; made by the server, dropped with the connection.
#[derive(Debug)]
pub(crate) struct OpenConnection(Metrics);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.inner.connections_open.dec();
    }
}

/// The server interceptor of [`Metrics::server_interceptor`].
#[derive(Debug, Clone)]
pub struct ServerMetrics(Metrics);

impl ServerInterceptor for ServerMetrics {
    fn before<'a>(&'a self, head: &'a mut CallHead) -> BoxFuture<'a, Result<(), Status>> {
        // Interceptors run for routed calls only: the method is one the server has.
        self.0.record_started(head.method(), true);
        Box::pin(std::future::ready(Ok(())))
    }

    fn after(&self, summary: &CallSummary<'_>) {
        let labels = CallLabels {
            grpc_method: method_label(summary.method, true),
            grpc_status: summary.status.code().name().to_owned(),
        };
        let inner = &self.0.inner;
        observe(
            [&inner.duration, &inner.sent, &inner.rcvd],
            &labels,
            summary,
        );
    }
}

/// The client interceptor of [`Metrics::client_interceptor`].
#[derive(Debug, Clone)]
pub struct ClientMetrics {
    metrics: Metrics,
    target: String,
}

impl ClientInterceptor for ClientMetrics {
    fn before<'a>(&'a self, _head: &'a mut ClientCallHead) -> BoxFuture<'a, Result<(), Status>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn after(&self, summary: &CallSummary<'_>) {
        let labels = ClientCallLabels {
            grpc_method: method_label(summary.method, true),
            grpc_target: self.target.clone(),
            grpc_status: summary.status.code().name().to_owned(),
        };
        self.metrics
            .inner
            .client_duration
            .get_or_create(&labels)
            .observe(summary.elapsed.as_secs_f64());
    }

    fn attempt_started(&self, method: &str) {
        let labels = ClientMethodLabels {
            grpc_method: method_label(method, true),
            grpc_target: self.target.clone(),
        };
        self.metrics
            .inner
            .attempt_started
            .get_or_create(&labels)
            .inc();
    }

    fn attempt_ended(&self, summary: &CallSummary<'_>) {
        let labels = ClientCallLabels {
            grpc_method: method_label(summary.method, true),
            grpc_target: self.target.clone(),
            grpc_status: summary.status.code().name().to_owned(),
        };
        let inner = &self.metrics.inner;
        let families = [
            &inner.attempt_duration,
            &inner.attempt_sent,
            &inner.attempt_rcvd,
        ];
        observe(families, &labels, summary);
    }
}

/// Why a TLS handshake failed, as one of a few fixed reasons (a label must not take values a
/// peer chooses).
pub(crate) fn handshake_failure_reason(error: &std::io::Error) -> &'static str {
    use rustls::{CertificateError, Error as Tls};
    let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<Tls>()) else {
        return match error.kind() {
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => {
                "peer_closed"
            }
            _ => "io",
        };
    };
    match tls {
        Tls::NoCertificatesPresented => "no_client_certificate",
        Tls::InvalidCertificate(CertificateError::Revoked) => "revoked",
        Tls::InvalidCertificate(
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. },
        ) => "expired",
        Tls::InvalidCertificate(CertificateError::UnknownIssuer) => "unknown_ca",
        Tls::InvalidCertificate(_) => "bad_certificate",
        Tls::NoApplicationProtocol => "no_alpn",
        Tls::AlertReceived(_) => "alert_received",
        Tls::PeerIncompatible(_) => "incompatible",
        Tls::InvalidMessage(_) | Tls::PeerMisbehaved(_) => "protocol",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_a66_in_prometheus_form() {
        let metrics = Metrics::new();
        metrics.record_started("/satellite.Satellite/GetImage", true);
        metrics.unregistered_call(&Status::unimplemented("no"));
        let text = metrics.encode();
        for line in [
            "grpc_server_call_started_total{grpc_method=\"satellite.Satellite/GetImage\"} 1",
            "grpc_server_call_started_total{grpc_method=\"other\"} 1",
            "grpc_server_call_duration_seconds_count{grpc_method=\"other\",grpc_status=\"UNIMPLEMENTED\"} 1",
            "grpc_server_call_duration_seconds_bucket{grpc_method=\"other\",grpc_status=\"UNIMPLEMENTED\",le=\"1e-05\"} 1",
            "# TYPE grpc_server_call_rcvd_total_compressed_message_size_bytes histogram",
            "grpc_server_connections_open 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        // 41 latency boundaries and +Inf.
        let buckets = text
            .lines()
            .filter(|l| l.starts_with("grpc_server_call_duration_seconds_bucket"))
            .count();
        assert_eq!(buckets, 42);
    }

    #[test]
    fn handshake_reasons_are_a_fixed_set() {
        use std::io::{Error, ErrorKind};
        let wrap = |e: rustls::Error| Error::new(ErrorKind::InvalidData, e);
        let revoked = rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked);
        assert_eq!(handshake_failure_reason(&wrap(revoked)), "revoked");
        assert_eq!(
            handshake_failure_reason(&wrap(rustls::Error::NoCertificatesPresented)),
            "no_client_certificate"
        );
        assert_eq!(
            handshake_failure_reason(&Error::from(ErrorKind::UnexpectedEof)),
            "peer_closed"
        );
        assert_eq!(handshake_failure_reason(&Error::other("x")), "io");
    }
}
