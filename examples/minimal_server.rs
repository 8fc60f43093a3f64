//! The shortest correct server: one unary method over plaintext HTTP/2 on 127.0.0.1:50051.
//!
//! Run: `cargo run --example minimal_server`, then `cargo run --example minimal_client`.

use satellite::app::pb::{Image, Location};
use satellite::grpc::{
    self, Method, Request, Response, Router, ServerConfig, Status, Transport, Unary,
};

/// The one method: its path and message types, declared once.
const GET_IMAGE: Method<Location, Image, Unary> = Method::unary("/satellite.Satellite/GetImage");

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let router = Router::new().unary(&GET_IMAGE, |req: Request<Location>| async move {
        let Location { x, y } = req.into_inner();
        if x < 0 || y < 0 {
            return Err(Status::out_of_range(format!("({x}, {y}) is off the map")));
        }
        Ok(Response::new(Image {
            x,
            y,
            img: "#".into(),
        }))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:50051").await?;
    println!("listening on {}", listener.local_addr()?);
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    grpc::run(
        listener,
        ServerConfig::new(Transport::Plaintext),
        router,
        shutdown,
    )
    .await?;
    Ok(())
}
