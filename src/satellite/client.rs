//! A typed client for the Satellite service over [`Channel`]: hand-written stubs, a few lines
//! each, instead of generated code.

use std::time::Duration;

use crate::app::{
    pb::{Area, Image, Location},
    service::{GET_IMAGE, GET_IMAGES},
};
use crate::grpc::{Channel, Metadata, Request, Status, Streaming};

/// Per-call options: a deadline and metadata.
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    /// Time allowed for the whole call.
    pub timeout: Option<Duration>,
    /// Metadata sent with the request.
    pub metadata: Metadata,
}

/// The Satellite client.
#[derive(Clone, Debug)]
pub struct SatelliteClient {
    channel: Channel,
}

impl SatelliteClient {
    /// A client over `channel`.
    pub fn new(channel: Channel) -> Self {
        Self { channel }
    }

    /// `GetImage`: one cell.
    ///
    /// # Errors
    /// The call's status (OUT_OF_RANGE off the map, UNAVAILABLE without a server, ...).
    pub async fn get_image(&self, x: i32, y: i32, options: &CallOptions) -> Result<Image, Status> {
        let request = request(Location { x, y }, options);
        Ok(self.channel.unary(&GET_IMAGE, request).await?.into_inner())
    }

    /// `GetImages`: the cells of an inclusive area, streamed in reading order.
    ///
    /// # Errors
    /// The status of a call refused before streaming (INVALID_ARGUMENT, OUT_OF_RANGE, ...);
    /// later failures come from the stream.
    pub async fn get_images(
        &self,
        ll: (i32, i32),
        ur: (i32, i32),
        options: &CallOptions,
    ) -> Result<Streaming<Image>, Status> {
        let area = Area {
            ll: Some(Location { x: ll.0, y: ll.1 }),
            ur: Some(Location { x: ur.0, y: ur.1 }),
        };
        let response = self
            .channel
            .server_streaming(&GET_IMAGES, request(area, options))
            .await?;
        Ok(response.into_inner())
    }
}

fn request<T>(message: T, options: &CallOptions) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(timeout) = options.timeout {
        request.set_timeout(timeout);
    }
    *request.metadata_mut() = options.metadata.clone();
    request
}
