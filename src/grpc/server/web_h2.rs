//! A gRPC-Web or Connect call on an HTTP/2 stream: the body read whole (within the bound),
//! the call answered by `web.rs`, the response head and chunks sent within the stream's flow
//! control, and the handler dropped when the peer resets the stream.

use std::{sync::Arc, task::Poll};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use h2::{server::SendResponse, RecvStream};
use http::request::Parts;

use crate::grpc::{
    budget::{ConnBudget, StreamCharge},
    request::Peer,
    server::{
        cors,
        web::{self, Protocol, Web},
    },
    status::Status,
};

/// Serves one web call on an h2 stream to its end.
pub(crate) async fn serve(
    web: Arc<Web>,
    protocol: Protocol,
    head: Parts,
    (mut body, mut respond): (RecvStream, SendResponse<Bytes>),
    peer: Arc<Peer>,
    budget: Option<Arc<ConnBudget>>,
    origin: Option<http::HeaderValue>,
) {
    let bound = web::body_bound(web.limits.max_recv);
    let mut all = BytesMut::new();
    let mut refused = None;
    // What the body holds until it ends is charged to the request budget, as a partial
    // gRPC message is: past the budget its window waits, and a stalled body is reset.
    let mut charge = budget.map(|b| StreamCharge::new(b, body.flow_control().clone()));
    loop {
        let next = std::future::poll_fn(|cx| {
            if let Some(charge) = charge.as_mut() {
                if charge.poll_stalled(cx).is_ready() {
                    return Poll::Ready(Err(()));
                }
            }
            body.poll_data(cx).map(Ok)
        })
        .await;
        let chunk = match next {
            Err(()) => {
                refused = Some(Status::resource_exhausted(
                    "the request body made no progress while the server's request memory \
                     budget was full",
                ));
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(_))) => return,
            Ok(Some(Ok(chunk))) => chunk,
        };
        if all.len() + chunk.len() > bound {
            refused = Some(Status::resource_exhausted(format!(
                "request body larger than {bound} bytes"
            )));
            break;
        }
        all.extend_from_slice(&chunk);
        match charge.as_mut() {
            Some(charge) => {
                charge.received(chunk.len());
                charge.settle(all.len());
            }
            None => {
                let _ = body.flow_control().release_capacity(chunk.len());
            }
        }
    }
    // The body is whole (or refused): nothing is partial any more.
    if let Some(charge) = charge.as_mut() {
        charge.settle(0);
    }
    drop(charge);
    let reply = match refused {
        Some(status) => web::refuse(protocol, head.uri.path(), status),
        None => web::serve(&web, protocol, head, all.freeze(), peer).await,
    };
    let (mut parts, ()) = reply.head.into_parts();
    if let Some(origin) = &origin {
        cors::cors(&mut parts.headers, origin);
    }
    let Ok(mut send) = respond.send_response(http::Response::from_parts(parts, ()), false) else {
        return;
    };
    let mut chunks = reply.body;
    loop {
        // The peer's reset drops the body, and with it the handler.
        let next = tokio::select! {
            next = chunks.next() => next,
            _ = std::future::poll_fn(|cx| send.poll_reset(cx)) => return,
        };
        let Some(mut chunk) = next else { break };
        while !chunk.is_empty() {
            send.reserve_capacity(chunk.len());
            // Window for the chunk, unless the peer resets first.
            let granted = std::future::poll_fn(|cx| {
                if send.poll_reset(cx).is_ready() {
                    return Poll::Ready(None);
                }
                send.poll_capacity(cx)
            })
            .await;
            let n = match granted {
                Some(Ok(n)) if n > 0 => n.min(chunk.len()),
                Some(Ok(_)) => continue,
                _ => return,
            };
            if send.send_data(chunk.split_to(n), false).is_err() {
                return;
            }
        }
    }
    let _ = send.send_data(Bytes::new(), true);
}
