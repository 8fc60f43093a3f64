//! The Satellite service on tonic 0.14, written as a tonic user would: generated server trait,
//! a lazy stream for GetImages, tonic's own TLS (rustls, ring) with client certificates required.

use std::{net::SocketAddr, path::PathBuf, pin::Pin, sync::Arc};

use bytes::Bytes;
use clap::Parser;
use futures_util::Stream;
use satellite_bench_peers::{
    images, pb,
    pb::satellite_server::{Satellite, SatelliteServer},
    Map,
};
use tonic::{
    transport::{Certificate, Identity, Server, ServerTlsConfig},
    Request, Response, Status,
};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8000")]
    addr: SocketAddr,
    /// Plaintext HTTP/2 (the default when --certs is not given).
    #[arg(long)]
    plaintext: bool,
    /// Directory with ca-cert.pem, server-cert.pem, server-key.pem: mutual TLS.
    #[arg(long)]
    certs: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    scale: u32,
    #[arg(long, default_value_t = 1)]
    img_bytes: usize,
    /// Also answer gRPC-Web, over HTTP/1.1 and HTTP/2 (tonic-web's layer, as a tonic user
    /// would add it).
    #[arg(long)]
    web: bool,
}

struct Svc {
    map: Map,
    images: Arc<Vec<Bytes>>,
}

type ImageStream = Pin<Box<dyn Stream<Item = Result<pb::Image, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Satellite for Svc {
    async fn get_image(
        &self,
        request: Request<pb::Location>,
    ) -> Result<Response<pb::Image>, Status> {
        let pb::Location { x, y } = *request.get_ref();
        match self.map.cell(x, y) {
            Some(cell) => Ok(Response::new(pb::Image {
                x,
                y,
                img: self.images[cell as usize].clone(),
            })),
            None => Err(Status::out_of_range(format!(
                "({x}, {y}) is off the {} x {} map",
                self.map.width(),
                self.map.height()
            ))),
        }
    }

    type GetImagesStream = ImageStream;

    async fn get_images(
        &self,
        request: Request<pb::Area>,
    ) -> Result<Response<ImageStream>, Status> {
        let area = request.into_inner();
        let (Some(ll), Some(ur)) = (area.ll, area.ur) else {
            return Err(Status::invalid_argument(
                "the area needs both corners, ll and ur",
            ));
        };
        let cells = self
            .map
            .area((ll.x, ll.y), (ur.x, ur.y))
            .map_err(|(code, msg)| Status::new(tonic::Code::from_i32(code), msg))?;
        let images = self.images.clone();
        let stream = futures_util::stream::iter(cells.map(move |(x, y, c)| {
            Ok(pb::Image {
                x,
                y,
                img: images[c as usize].clone(),
            })
        }));
        Ok(Response::new(Box::pin(stream)))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let svc = Svc {
        map: Map::world(args.scale),
        images: images(args.img_bytes),
    };
    let mut server = Server::builder();
    if let (Some(dir), false) = (&args.certs, args.plaintext) {
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(
                std::fs::read(dir.join("server-cert.pem"))?,
                std::fs::read(dir.join("server-key.pem"))?,
            ))
            .client_ca_root(Certificate::from_pem(std::fs::read(
                dir.join("ca-cert.pem"),
            )?));
        server = server.tls_config(tls)?;
    }
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    eprintln!("tonic_server listening on {}", listener.local_addr()?);
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    if args.web {
        server
            .accept_http1(true)
            .layer(tonic_web::GrpcWebLayer::new())
            .add_service(SatelliteServer::new(svc))
            .serve_with_incoming_shutdown(incoming, stop)
            .await?;
    } else {
        server
            .add_service(SatelliteServer::new(svc))
            .serve_with_incoming_shutdown(incoming, stop)
            .await?;
    }
    Ok(())
}
