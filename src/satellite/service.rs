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
use crate::grpc::{
    Metadata, MetadataError, Method, Request, Response, Router, ServerStreaming, Status, Unary,
};

/// The service's full name, as health checks and reflection list it.
pub const SERVICE_NAME: &str = "satellite.Satellite";
/// `GetImage`, the unary method; stock clients hard-code its path.
pub const GET_IMAGE: Method<Location, Image, Unary> =
    Method::unary("/satellite.Satellite/GetImage");
/// `GetImages`, the server-streaming method.
pub const GET_IMAGES: Method<Area, Image, ServerStreaming> =
    Method::server_streaming("/satellite.Satellite/GetImages");

/// How the service shapes its answers (for demos and load tests).
#[derive(Clone, Debug, Default)]
pub struct ServiceOptions {
    /// A pause before each streamed message, to show progressive drawing and deadlines.
    pub send_delay: Duration,
    /// Bytes per image: the cell's byte repeated (0 or 1 both mean one byte).
    pub img_bytes: usize,
}

/// Response header naming the replica that answered (see [`MapService::with_instance`]).
pub const INSTANCE_HEADER: &str = "x-satellite-instance";

/// Every byte value once, in order: the one-byte images.
static ONE_BYTE_IMAGES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = i as u8;
        i += 1;
    }
    table
};

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
        // One-byte images are slices of a static table: cloning a static `Bytes` is a copy of
        // two words, where a shared one costs an atomic increment and decrement per message
        // (measurable at millions of images a second). Larger images are shared buffers, whose
        // copy into the response dwarfs that.
        let images = (0..=u8::MAX)
            .map(|b| match len {
                1 => Bytes::from_static(&ONE_BYTE_IMAGES[usize::from(b)..=usize::from(b)]),
                _ => Bytes::from(vec![b; len]),
            })
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
            .unary(&GET_IMAGE, move |req| {
                let svc = unary.clone();
                async move { svc.get_image(req) }
            })
            .server_streaming(&GET_IMAGES, move |req| {
                let svc = streaming.clone();
                async move { svc.get_images(req) }
            })
    }

    /// One cell; OUT_OF_RANGE off the map.
    ///
    /// # Errors
    /// OUT_OF_RANGE naming the location and the map size.
    pub fn get_image(&self, request: Request<Location>) -> Result<Response<Image>, Status> {
        let Location { x, y } = *request.message();
        let cell = self
            .inner
            .map
            .locate(x, y)
            .map_err(|e| Status::out_of_range(e.to_string()))?;
        Ok(self.response(Image {
            x,
            y,
            img: self.inner.images[usize::from(cell)].clone(),
        }))
    }

    /// Every cell of an inclusive area, in reading order, produced lazily.
    ///
    /// # Errors
    /// INVALID_ARGUMENT for a missing or inverted corner, OUT_OF_RANGE for a corner off the map.
    pub fn get_images(&self, request: Request<Area>) -> Result<Response<CellStream>, Status> {
        let area = *request.message();
        let (Some(ll), Some(ur)) = (area.ll, area.ur) else {
            return Err(Status::invalid_argument(
                "the area needs both corners, ll and ur",
            ));
        };
        let cells = self
            .inner
            .map
            .area((ll.x, ll.y), (ur.x, ur.y))
            .map_err(|e| status_of(&e))?;
        Ok(self.response(CellStream {
            total: cells.len(),
            cells,
            service: self.inner.clone(),
            delay: None,
            sent: 0,
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

impl fmt::Debug for CellStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CellStream")
            .field("total", &self.total)
            .field("sent", &self.sent)
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
