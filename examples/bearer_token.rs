//! A bearer-token check as a server interceptor, and the client interceptor that adds the token.
//!
//! ```text
//! cargo run --example bearer_token
//! ```
//!
//! The server answers `UNAUTHENTICATED` before the handler runs when the `authorization` header
//! is missing or wrong; a second, logging interceptor on each side shows how calls ended.

use std::net::SocketAddr;

use satellite::grpc::{
    BoxFuture, CallHead, CallSummary, Channel, ClientCallHead, ClientInterceptor, Code, Endpoint,
    Method, Request, Response, Router, ServerConfig, ServerInterceptor, Status, Transport, Unary,
};

/// The request and response of the demo method.
#[derive(Clone, PartialEq, prost::Message)]
struct Greeting {
    #[prost(string, tag = "1")]
    text: String,
}

const GREET: Method<Greeting, Greeting, Unary> = Method::unary("/demo.Greeter/Greet");

/// Lets a call through only with `authorization: Bearer <token>`.
struct RequireBearer {
    token: String,
}

impl ServerInterceptor for RequireBearer {
    fn before<'a>(&'a self, head: &'a mut CallHead) -> BoxFuture<'a, Result<(), Status>> {
        Box::pin(async move {
            let presented = head
                .metadata
                .get("authorization")
                .and_then(|v| v.strip_prefix("Bearer "));
            // A real check might ask an identity service here; the interceptor is async.
            if presented != Some(self.token.as_str()) {
                return Err(Status::unauthenticated("a valid bearer token is required"));
            }
            // The handler has no use for the secret.
            head.metadata.remove("authorization");
            Ok(())
        })
    }
}

/// Adds the token to every call of a channel.
struct AddBearer {
    token: String,
}

impl ClientInterceptor for AddBearer {
    fn before<'a>(&'a self, head: &'a mut ClientCallHead) -> BoxFuture<'a, Result<(), Status>> {
        Box::pin(async move {
            head.metadata
                .insert("authorization", &format!("Bearer {}", self.token))
                .map_err(|e| Status::internal(format!("cannot add the token: {e}")))
        })
    }
}

/// Prints how each call ended, on either side.
struct LogEnd(&'static str);

impl ServerInterceptor for LogEnd {
    fn before<'a>(&'a self, _head: &'a mut CallHead) -> BoxFuture<'a, Result<(), Status>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn after(&self, summary: &CallSummary<'_>) {
        print_summary(self.0, summary);
    }
}

impl ClientInterceptor for LogEnd {
    fn before<'a>(&'a self, _head: &'a mut ClientCallHead) -> BoxFuture<'a, Result<(), Status>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn after(&self, summary: &CallSummary<'_>) {
        print_summary(self.0, summary);
    }
}

fn print_summary(side: &str, summary: &CallSummary<'_>) {
    println!(
        "  [{side}] {} -> {} in {:?} ({} in, {} out)",
        summary.method,
        summary.status.code(),
        summary.elapsed,
        summary.messages_received,
        summary.messages_sent
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr: SocketAddr = listener.local_addr()?;
    // The logger goes first so that it also sees the calls the token check refuses.
    let router = Router::new()
        .unary(&GREET, |request: Request<Greeting>| async move {
            let name = request.into_inner().text;
            Ok::<_, Status>(Response::new(Greeting {
                text: format!("hello, {name}"),
            }))
        })
        .intercept(LogEnd("server"))
        .intercept(RequireBearer {
            token: "s3cret".into(),
        });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(satellite::grpc::run(
        listener,
        ServerConfig::new(Transport::Plaintext),
        router,
        async {
            let _ = stopped.await;
        },
    ));

    let channel = Channel::lazy(Endpoint::new(addr.to_string()))?.intercept(LogEnd("client"));
    let request = || Request::new(Greeting { text: "ada".into() });

    println!("without a token:");
    let refused = channel.unary(&GREET, request()).await.unwrap_err();
    println!("  {}: {}", refused.code(), refused.message());
    assert_eq!(refused.code(), Code::Unauthenticated);

    println!("with the token:");
    let authorised = channel.clone().intercept(AddBearer {
        token: "s3cret".into(),
    });
    let reply = authorised.unary(&GREET, request()).await?;
    println!("  OK: {}", reply.into_inner().text);

    let _ = stop.send(());
    server.await??;
    Ok(())
}
