//! The shortest correct client: one unary call to the minimal server, with a deadline.
//!
//! Run: `cargo run --example minimal_client [ADDR]` (default 127.0.0.1:50051).

use std::time::Duration;

use satellite::app::pb::{Image, Location};
use satellite::grpc::{Channel, Endpoint, Method, Request, Unary};

/// The method called: its path and message types, declared once.
const GET_IMAGE: Method<Location, Image, Unary> = Method::unary("/satellite.Satellite/GetImage");

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:50051".into());
    let channel = Channel::connect(Endpoint::new(addr)).await?;
    let request = Request::new(Location { x: 1, y: 2 }).with_timeout(Duration::from_secs(5));
    let image: Image = channel.unary(&GET_IMAGE, request).await?.into_inner();
    println!(
        "({}, {}) = {:?}",
        image.x,
        image.y,
        String::from_utf8_lossy(&image.img)
    );
    Ok(())
}
