//! The request memory budget (issue 14): 4 MiB requests work under the default budget; a
//! stream holding a partial message while the budget is full is reset with
//! RESOURCE_EXHAUSTED after the stall timeout; a holder while there is room is left alone; and
//! a good client on another connection is served throughout.

mod common;

use std::{future::poll_fn, net::SocketAddr, time::Duration};

use bytes::Bytes;
use common::{
    bounded, echo_call, grpc_head, plaintext_channel, raw_client, start_server_with, EchoRequest,
    Security, ECHO, WAIT,
};
use satellite::grpc::{Code, Request, RequestBudget};

static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// Opens a stream that declares a `declared`-byte message and sends `send` bytes of it as the
/// windows allow, never finishing; returns the grpc-status the server ends it with, or `None`
/// if it did not within `within`.
async fn hold_partial(
    addr: SocketAddr,
    client: &h2::client::SendRequest<Bytes>,
    declared: u32,
    send: usize,
    within: Duration,
) -> Option<i32> {
    let mut ready = bounded(client.clone().ready()).await.unwrap();
    let (response, mut stream) = ready
        .send_request(grpc_head(addr, ECHO.path()), false)
        .unwrap();
    let mut prefix = vec![0_u8];
    prefix.extend_from_slice(&declared.to_be_bytes());
    stream.send_data(Bytes::from(prefix), false).unwrap();
    let sending = async {
        let mut sent = 0;
        while sent < send {
            stream.reserve_capacity((send - sent).min(ZEROS.len()));
            let Some(Ok(n)) = poll_fn(|cx| stream.poll_capacity(cx)).await else {
                break;
            };
            let n = n.min(send - sent);
            if stream
                .send_data(Bytes::from_static(&ZEROS[..n]), false)
                .is_err()
            {
                break;
            }
            sent += n;
        }
        // Hold the partial message: never END_STREAM.
        std::future::pending::<()>().await;
    };
    let answer = async {
        let response = response.await.ok()?;
        response
            .headers()
            .get("grpc-status")?
            .to_str()
            .ok()?
            .parse()
            .ok()
    };
    tokio::time::timeout(within, async {
        tokio::select! {
            status = answer => status,
            () = sending => None,
        }
    })
    .await
    .ok()
    .flatten()
}

#[tokio::test]
async fn four_mib_requests_work_under_the_default_budget() {
    let server = start_server_with(Security::Plaintext, |config| {
        assert_eq!(config.request_budget, Some(RequestBudget::default()));
    })
    .await;
    let channel = plaintext_channel(server.addr).await;
    // Twelve at once on one connection (48 MiB): within the default per-connection budget.
    let calls = (0..12).map(|i| {
        let channel = channel.clone();
        async move {
            let request = EchoRequest {
                text: format!("big {i}"),
                payload: vec![i as u8; 4 * 1024 * 1024 - 64],
                ..EchoRequest::default()
            };
            bounded(channel.unary(&ECHO, Request::new(request))).await
        }
    });
    for reply in futures_util::future::join_all(calls).await {
        assert_eq!(
            reply.unwrap().into_inner().payload.len(),
            4 * 1024 * 1024 - 64
        );
    }
}

#[tokio::test]
async fn a_stalled_partial_message_is_reset_only_while_the_budget_is_full() {
    let budget = RequestBudget {
        per_connection: 4 * 1024 * 1024,
        total: 4 * 1024 * 1024,
        stall_timeout: Duration::from_millis(300),
    };
    let server = start_server_with(Security::Plaintext, |config| {
        config.request_budget = Some(budget);
    })
    .await;
    let addr = server.addr;

    // Under budget: a 1 MiB partial message held for well past the stall timeout stays.
    let holder = raw_client(addr).await;
    let left_alone = hold_partial(
        addr,
        &holder,
        3_000_000,
        1024 * 1024,
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(left_alone, None, "a holder under budget is not reset");

    // Past the budget: two connections each try to hold 3 MB of a 3.9 MB message; at most
    // 4 MiB fits, so a stream stalls with the budget full, and is reset.
    let (a, b) = (raw_client(addr).await, raw_client(addr).await);
    let first = tokio::select! {
        status = hold_partial(addr, &a, 3_900_000, 3_000_000, WAIT) => status,
        status = hold_partial(addr, &b, 3_900_000, 3_000_000, WAIT) => status,
    };
    assert_eq!(first, Some(Code::ResourceExhausted as i32));

    // A good client on its own connection is served, also while streams are held.
    let channel = plaintext_channel(addr).await;
    for i in 0..20 {
        echo_call(&channel, &format!("good {i}")).await.unwrap();
    }
}

#[test]
fn budgets_that_cannot_hold_a_maximum_size_message_are_refused() {
    use satellite::grpc::{ServerConfig, Transport};
    let mut config = ServerConfig::new(Transport::Plaintext);
    config.validate().unwrap();
    let cases = [
        (1024 * 1024, 256 * 1024 * 1024, 10, "per_connection"),
        (16 * 1024 * 1024, 1024, 10, "total"),
        (16 * 1024 * 1024, 256 * 1024 * 1024, 0, "stall_timeout"),
    ];
    for (per_connection, total, secs, needle) in cases {
        config.request_budget = Some(RequestBudget {
            per_connection,
            total,
            stall_timeout: Duration::from_secs(secs),
        });
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains(needle), "{err}");
    }
    config.request_budget = None;
    config.validate().unwrap();
}
