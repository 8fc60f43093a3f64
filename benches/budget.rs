//! What the request memory budget costs on the 4 MiB request path: unary calls carrying a
//! 4 MiB - 64 B payload over loopback (plaintext, one connection), against a server with the
//! default budget and one with the budget off. Run with `cargo bench --bench budget`.
// criterion_group! generates an undocumented `pub fn`; nothing here is API.
#![allow(missing_docs)]

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use satellite::grpc::{
    self, Channel, Endpoint, Method, Request, RequestBudget, Response, Router, ServerConfig,
    Status, Transport, Unary,
};
use tokio::{net::TcpListener, runtime::Runtime};

#[derive(Clone, PartialEq, prost::Message)]
struct Blob {
    #[prost(bytes = "vec", tag = "1")]
    data: Vec<u8>,
}

/// Answers with an empty message: the benchmark measures the request path.
const UPLOAD: Method<Blob, Blob, Unary> = Method::unary("/bench.Budget/Upload");

const PAYLOAD: usize = 4 * 1024 * 1024 - 64;

fn server(rt: &Runtime, budget: Option<RequestBudget>) -> Channel {
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = ServerConfig::new(Transport::Plaintext);
        config.request_budget = budget;
        let router = Router::new().unary(&UPLOAD, |request: Request<Blob>| async move {
            let _ = request.into_inner();
            Ok::<_, Status>(Response::new(Blob::default()))
        });
        tokio::spawn(grpc::run(listener, config, router, std::future::pending()));
        Channel::connect(Endpoint::new(addr.to_string()))
            .await
            .unwrap()
    })
}

fn bench(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let mut group = c.benchmark_group("unary_4MiB_request");
    group.throughput(Throughput::Bytes(PAYLOAD as u64));
    group.measurement_time(Duration::from_secs(10));
    group.sample_size(30);
    for (name, budget) in [
        ("budget_default", Some(RequestBudget::default())),
        ("budget_off", None),
    ] {
        let channel = server(&rt, budget);
        let blob = Blob {
            data: vec![7; PAYLOAD],
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(channel.unary(&UPLOAD, Request::new(blob.clone())))
                    .unwrap()
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
