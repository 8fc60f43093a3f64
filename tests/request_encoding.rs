//! A server handler sees the encoding the client declared for its request messages.
//!
//! Regression: `Request::compression()` was always `None` on the server, so a handler could not
//! check the interop `expect_compressed` field (CompressedRequest), and the stock grpcio
//! client's `client_compressed_unary` probe got OK instead of INVALID_ARGUMENT.

mod common;

use common::{bounded, plaintext_channel, EchoReply, EchoRequest};
use futures_util::{stream, StreamExt as _};
use satellite::grpc::{
    self, ClientStreaming, Encoding, Method, Request, Response, Router, ServerConfig, Status,
    Streaming, Transport, Unary,
};
use tokio::net::TcpListener;

const UNARY: Method<EchoRequest, EchoReply, Unary> = Method::unary("/t.E/Unary");
const SUM: Method<EchoRequest, EchoReply, ClientStreaming> = Method::client_streaming("/t.E/Sum");

fn label(encoding: Option<Encoding>) -> String {
    encoding.map_or("identity", Encoding::as_str).to_owned()
}

#[tokio::test]
async fn handlers_see_the_request_encoding() {
    let router = Router::new()
        .unary(&UNARY, |req: Request<EchoRequest>| async move {
            Ok::<_, Status>(Response::new(EchoReply {
                text: label(req.compression()),
                ..Default::default()
            }))
        })
        .client_streaming(&SUM, |req: Request<Streaming<EchoRequest>>| async move {
            let text = label(req.compression());
            let mut requests = req.into_inner();
            while requests.message().await?.is_some() {}
            Ok(Response::new(EchoReply {
                text,
                ..Default::default()
            }))
        });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(grpc::run(
        listener,
        ServerConfig::new(Transport::Plaintext),
        router,
        async move {
            let _ = rx.await;
        },
    ));
    let channel = plaintext_channel(addr).await;

    for encoding in [None, Some(Encoding::Gzip), Some(Encoding::Deflate)] {
        let mut request = Request::new(EchoRequest::text("x"));
        request.set_compression(encoding);
        let reply: EchoReply = bounded(channel.unary(&UNARY, request))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.text, label(encoding));

        let messages = stream::iter(vec![EchoRequest::text("a"), EchoRequest::text("b")]).boxed();
        let mut request = Request::new(messages);
        request.set_compression(encoding);
        let reply: EchoReply = bounded(channel.client_streaming(&SUM, request))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.text, label(encoding));
    }

    let _ = tx.send(());
    let _ = bounded(server).await;
}
