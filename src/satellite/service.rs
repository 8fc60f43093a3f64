//! The Satellite gRPC service: `GetImage` and `GetImages` over a [`Map`]. It knows nothing of
//! HTTP/2: requests come in typed, errors go out as [`Status`].

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures_core::Stream;
use tokio::time::{Instant, Sleep};

use crate::app::{
    map::{AreaError, Cells, Map},
    pb::{Area, Image, Location},
};
use crate::grpc::{metadata::MetadataError, Metadata, Request, Response, Router, Status};

/// The service's full name, as health checks and reflection list it.
pub const SERVICE_NAME: &str = "satellite.Satellite";
/// Full path of the unary method; stock clients hard-code it.
pub const GET_IMAGE: &str = "/satellite.Satellite/GetImage";
/// Full path of the server-streaming method.
pub const GET_IMAGES: &str = "/satellite.Satellite/GetImages";

/// How the service shapes its answers (for demos and load tests).
#[derive(Clone, Debug, Default)]
pub struct ServiceOptions {
    /// A pause before each streamed message, to show progressive drawing and deadlines.
    pub send_delay: Duration,
    /// Bytes per image: the cell's byte repeated (0 or 1 both mean one byte).
    pub img_bytes: usize,
}

/// Response header naming the replica that answered (see [`ServiceOptions::instance`]).
pub const INSTANCE_HEADER: &str = "x-satellite-instance";

/// The map service.
#[derive(Clone)]
pub struct MapService {
    inner: Arc<Inner>,
}

struct Inner {
    map: Map,
    send_delay: Duration,
    /// Header metadata every response carries (the instance name, when set).
    headers: Metadata,
    /// One shared image per byte value, so no message allocates its image.
    images: Vec<Bytes>,
}

impl MapService {
    /// A service over `map` (already scaled, if scaling is wanted).
    pub fn new(map: Map, options: &ServiceOptions) -> Self {
        let len = options.img_bytes.max(1);
        // Static images: cloning a static `Bytes` is a copy of two words, where a shared one
        // costs an atomic increment and decrement per message (measurable at millions of
        // images a second). The table is leaked once per service, 256 x `img_bytes` bytes.
        let images = (0..=u8::MAX)
            .map(|b| Bytes::from_static(Box::leak(vec![b; len].into_boxed_slice())))
            .collect();
        Self {
            inner: Arc::new(Inner {
                map,
                send_delay: options.send_delay,
                headers: Metadata::new(),
                images,
            }),
        }
    }

    /// Names this replica: every response carries the `x-satellite-instance` header, so
    /// clients behind a load balancer can see who answered.
    ///
    /// # Errors
    /// A name that is not a valid ASCII metadata value.
    pub fn with_instance(self, name: &str) -> Result<Self, MetadataError> {
        let mut headers = Metadata::new();
        headers.insert(INSTANCE_HEADER, name)?;
        Ok(Self {
            inner: Arc::new(Inner {
                map: self.inner.map.clone(),
                send_delay: self.inner.send_delay,
                headers,
                images: self.inner.images.clone(),
            }),
        })
    }

    fn response<T>(&self, message: T) -> Response<T> {
        let mut response = Response::new(message);
        if !self.inner.headers.is_empty() {
            *response.metadata_mut() = self.inner.headers.clone();
        }
        response
    }

    /// The map served.
    pub fn map(&self) -> &Map {
        &self.inner.map
    }

    /// A router with both methods registered.
    pub fn router(&self) -> Router {
        let unary = self.clone();
        let streaming = self.clone();
        Router::new()
            .unary(GET_IMAGE, move |req| {
                let svc = unary.clone();
                async move { svc.get_image(req) }
            })
            .server_streaming(GET_IMAGES, move |req| {
                let svc = streaming.clone();
                async move { svc.get_images(req) }
            })
    }

    /// One cell; OUT_OF_RANGE off the map.
    ///
    /// # Errors
    /// OUT_OF_RANGE naming the location and the map size.
    pub fn get_image(&self, request: Request<Location>) -> Result<Response<Image>, Status> {
        let started = Instant::now();
        let Location { x, y } = *request.message();
        let result = self.inner.map.locate(x, y).map(|cell| Image {
            x,
            y,
            img: self.inner.images[usize::from(cell)].clone(),
        });
        match &result {
            Ok(_) => log_call(
                &request,
                "GetImage",
                format_args!("({x}, {y})"),
                format_args!("OK"),
                started,
                false,
            ),
            Err(e) => log_call(
                &request,
                "GetImage",
                format_args!("({x}, {y})"),
                format_args!("OUT_OF_RANGE: {e}"),
                started,
                true,
            ),
        }
        result
            .map(|image| self.response(image))
            .map_err(|e| Status::out_of_range(e.to_string()))
    }

    /// Every cell of an inclusive area, in reading order, produced lazily.
    ///
    /// # Errors
    /// INVALID_ARGUMENT for a missing or inverted corner, OUT_OF_RANGE for a corner off the map.
    pub fn get_images(&self, request: Request<Area>) -> Result<Response<CellStream>, Status> {
        let started = Instant::now();
        let area = *request.message();
        let (Some(ll), Some(ur)) = (area.ll, area.ur) else {
            let status = Status::invalid_argument("the area needs both corners, ll and ur");
            log_call(
                &request,
                "GetImages",
                format_args!("{area:?}"),
                format_args!("INVALID_ARGUMENT: missing corner"),
                started,
                true,
            );
            return Err(status);
        };
        let what = format!("({}, {})..=({}, {})", ll.x, ll.y, ur.x, ur.y);
        let cells = match self.inner.map.area((ll.x, ll.y), (ur.x, ur.y)) {
            Ok(cells) => cells,
            Err(e) => {
                let status = status_of(&e);
                log_call(
                    &request,
                    "GetImages",
                    format_args!("{what}"),
                    format_args!("{}: {e}", status.code()),
                    started,
                    true,
                );
                return Err(status);
            }
        };
        Ok(self.response(CellStream {
            total: cells.len(),
            cells,
            service: self.inner.clone(),
            delay: None,
            sent: 0,
            log: CallLog {
                peer: describe_peer(&request),
                token: request.metadata().get("token").map(str::to_owned),
                area: what,
                started,
            },
        }))
    }
}

impl fmt::Debug for MapService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapService")
            .field("width", &self.inner.map.width())
            .field("height", &self.inner.map.height())
            .field("send_delay", &self.inner.send_delay)
            .finish_non_exhaustive()
    }
}

/// The images of an area, one per poll, each after the configured send delay.
pub struct CellStream {
    cells: Cells,
    total: usize,
    service: Arc<Inner>,
    delay: Option<Pin<Box<Sleep>>>,
    sent: usize,
    log: CallLog,
}

struct CallLog {
    peer: String,
    token: Option<String>,
    area: String,
    started: Instant,
}

impl Stream for CellStream {
    type Item = Result<Image, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.sent == this.total {
            return Poll::Ready(None);
        }
        let send_delay = this.service.send_delay;
        if !send_delay.is_zero() {
            let delay = this
                .delay
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(send_delay)));
            if delay.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let next = delay.deadline() + send_delay;
            delay.as_mut().reset(next.max(Instant::now()));
        }
        let Some((x, y, cell)) = this.cells.next() else {
            return Poll::Ready(None);
        };
        this.sent += 1;
        let img = this.service.images[usize::from(cell)].clone();
        Poll::Ready(Some(Ok(Image { x, y, img })))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.total - self.sent;
        (left, Some(left))
    }
}

impl Drop for CellStream {
    // The stream is dropped when the call ends however it ends, so this is where a streaming
    // call is logged: completed, or cut short by a cancel, a deadline or a shutdown.
    fn drop(&mut self) {
        let complete = self.sent == self.total;
        let outcome = if complete {
            "OK"
        } else {
            "ended early (cancelled, deadline or shutdown)"
        };
        let log = &self.log;
        let elapsed_ms = log.started.elapsed().as_millis() as u64;
        let token = log.token.as_deref().unwrap_or("-");
        if complete {
            tracing::debug!(peer = %log.peer, method = "GetImages", area = %log.area, token,
                cells = self.sent, elapsed_ms, outcome, "call");
        } else {
            tracing::info!(peer = %log.peer, method = "GetImages", area = %log.area, token,
                cells = self.sent, of = self.total, elapsed_ms, outcome, "call");
        }
    }
}

impl fmt::Debug for CellStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CellStream")
            .field("sent", &self.sent)
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

fn status_of(e: &AreaError) -> Status {
    if e.is_out_of_range() {
        Status::out_of_range(e.to_string())
    } else {
        Status::invalid_argument(e.to_string())
    }
}

fn describe_peer<T>(request: &Request<T>) -> String {
    let Some(peer) = request.peer() else {
        return "-".to_owned();
    };
    let addr = peer.addr.map_or_else(|| "-".to_owned(), |a| a.to_string());
    match &peer.subject {
        Some(subject) => format!("{addr} ({subject})"),
        None => addr,
    }
}

fn log_call<T>(
    request: &Request<T>,
    method: &str,
    what: fmt::Arguments<'_>,
    outcome: fmt::Arguments<'_>,
    started: Instant,
    bad_request: bool,
) {
    // The hot path: with the level off, nothing below (formatting, allocation) may run.
    let enabled = if bad_request {
        tracing::enabled!(tracing::Level::INFO)
    } else {
        tracing::enabled!(tracing::Level::DEBUG)
    };
    if !enabled {
        return;
    }
    let peer = describe_peer(request);
    let token = request.metadata().get("token").unwrap_or("-");
    let elapsed_us = started.elapsed().as_micros() as u64;
    // Bad requests are the client's fault: info, never error, so a hostile client cannot
    // raise alarms. This service has no server faults of its own to log at error.
    if bad_request {
        tracing::info!(%peer, method, request = %what, token, %outcome, elapsed_us, "call");
    } else {
        tracing::debug!(%peer, method, request = %what, token, %outcome, elapsed_us, "call");
    }
}
