//! The standard health service, `grpc.health.v1.Health` (`Check` and `Watch`), as the
//! health-checking protocol describes it: probes (Kubernetes, grpc_health_probe, nginx, Envoy)
//! call `Check` with service "" for the server as a whole.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, PoisonError,
    },
};

use futures_util::stream;
use tokio::sync::watch;

use crate::grpc::{
    method::{Method, ServerStreaming, Unary},
    request::{Request, Response},
    server::Router,
    status::Status,
};

/// The generated `grpc.health.v1` messages.
pub mod pb {
    #![allow(missing_docs, clippy::all, unreachable_pub, unused_qualifications)]
    include!(concat!(env!("OUT_DIR"), "/grpc.health.v1.rs"));
}

use pb::{health_check_response::ServingStatus, HealthCheckRequest, HealthCheckResponse};

/// The unary check.
pub const CHECK: Method<HealthCheckRequest, HealthCheckResponse, Unary> =
    Method::unary("/grpc.health.v1.Health/Check");
/// The server-streaming watch.
pub const WATCH: Method<HealthCheckRequest, HealthCheckResponse, ServerStreaming> =
    Method::server_streaming("/grpc.health.v1.Health/Watch");

/// The serving status of each service, shared by the health service and whoever reports.
#[derive(Clone, Debug)]
pub struct HealthReporter {
    statuses: Arc<Mutex<HashMap<String, watch::Sender<ServingStatus>>>>,
    /// Set by [`HealthReporter::shutdown`]: `Watch` streams end after their last update, so
    /// they do not hold a graceful shutdown open for its whole grace period.
    closing: Arc<AtomicBool>,
}

impl HealthReporter {
    /// A reporter where the server as a whole (service "") is SERVING.
    pub fn new() -> Self {
        let reporter = Self {
            statuses: Arc::default(),
            closing: Arc::default(),
        };
        reporter.set_status("", ServingStatus::Serving);
        reporter
    }

    /// Sets one service's status; `Watch` callers see the change.
    pub fn set_status(&self, service: &str, status: ServingStatus) {
        let mut statuses = self.statuses.lock().unwrap_or_else(PoisonError::into_inner);
        match statuses.get(service) {
            Some(sender) => {
                sender.send_replace(status);
            }
            None => {
                statuses.insert(service.to_owned(), watch::channel(status).0);
            }
        }
    }

    /// Marks every known service, "" included, NOT_SERVING and ends `Watch` streams after they
    /// deliver it: the first step of a graceful shutdown, so load balancers stop sending before
    /// the GOAWAY.
    pub fn shutdown(&self) {
        {
            let statuses = self.statuses.lock().unwrap_or_else(PoisonError::into_inner);
            for sender in statuses.values() {
                if *sender.borrow() != ServingStatus::ServiceUnknown {
                    sender.send_replace(ServingStatus::NotServing);
                }
            }
        }
        // After the updates: a watcher that sees `closing` has its last update pending or
        // already delivered.
        self.closing.store(true, Ordering::SeqCst);
    }

    /// A service's status, `None` when it was never reported.
    pub fn status(&self, service: &str) -> Option<ServingStatus> {
        let statuses = self.statuses.lock().unwrap_or_else(PoisonError::into_inner);
        let status = *statuses.get(service)?.borrow();
        (status != ServingStatus::ServiceUnknown).then_some(status)
    }

    /// A router serving `Check` and `Watch` from this reporter.
    pub fn router(&self) -> Router {
        let check = self.clone();
        let watch = self.clone();
        Router::new()
            .unary(&CHECK, move |req: Request<HealthCheckRequest>| {
                let reporter = check.clone();
                async move { reporter.check(&req.message().service) }
            })
            .server_streaming(&WATCH, move |req: Request<HealthCheckRequest>| {
                let reporter = watch.clone();
                async move { Ok(Response::new(reporter.watch(&req.message().service))) }
            })
    }

    fn check(&self, service: &str) -> Result<Response<HealthCheckResponse>, Status> {
        // health-checking.md: an unknown service is NOT_FOUND.
        match self.status(service) {
            Some(status) => Ok(Response::new(HealthCheckResponse {
                status: status.into(),
            })),
            None => Err(Status::not_found(format!("unknown service {service:?}"))),
        }
    }

    /// The current status now, then every change, until the caller goes away.
    fn watch(
        &self,
        service: &str,
    ) -> impl futures_core::Stream<Item = Result<HealthCheckResponse, Status>> {
        let receiver = {
            let mut statuses = self.statuses.lock().unwrap_or_else(PoisonError::into_inner);
            // health-checking.md: an unknown service is answered SERVICE_UNKNOWN, and the call
            // stays open in case it becomes known.
            statuses
                .entry(service.to_owned())
                .or_insert_with(|| watch::channel(ServingStatus::ServiceUnknown).0)
                .subscribe()
        };
        let closing = self.closing.clone();
        stream::unfold((receiver, true), move |(mut receiver, first)| {
            let closing = closing.clone();
            async move {
                if !first
                    && !receiver.has_changed().unwrap_or(false)
                    && (closing.load(Ordering::SeqCst) || receiver.changed().await.is_err())
                {
                    return None;
                }
                let status = *receiver.borrow_and_update();
                let response = HealthCheckResponse {
                    status: status.into(),
                };
                Some((Ok(response), (receiver, false)))
            }
        })
    }
}

impl Default for HealthReporter {
    fn default() -> Self {
        Self::new()
    }
}
