//! tonic's client as a load generator: N connections x M unary GetImage(1, 2) calls in flight
//! for D seconds (after a warm-up), against any server, plaintext or mutual TLS. A comma-
//! separated `--addr a,b` balances each channel over the list (tonic's `balance_list`).
//! Prints one JSON line: calls/s, p50/p99 latency (µs), errors, and every call made.

use std::{path::PathBuf, sync::Arc, time::Duration};

use clap::Parser;
use satellite_bench_peers::{pb, pb::satellite_client::SatelliteClient, percentile};
use tokio::time::Instant;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8000")]
    addr: String,
    /// ca-cert.pem, client-cert.pem, client-key.pem: mutual TLS (plaintext without it).
    #[arg(long)]
    certs: Option<PathBuf>,
    /// Connections.
    #[arg(short = 'c', long, default_value_t = 16)]
    connections: usize,
    /// Calls in flight per connection.
    #[arg(short = 'm', long, default_value_t = 32)]
    in_flight: usize,
    /// Measured seconds.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    duration: f64,
    /// Warm-up seconds (calls made, not measured).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
}

async fn connect(args: &Args) -> Result<Channel, Box<dyn std::error::Error>> {
    let scheme = if args.certs.is_some() {
        "https"
    } else {
        "http"
    };
    let addrs: Vec<&str> = args.addr.split(',').collect();
    let mut endpoints = Vec::new();
    for addr in &addrs {
        endpoints.push(endpoint(args, scheme, addr)?);
    }
    if endpoints.len() > 1 {
        let channel = Channel::balance_list(endpoints.into_iter());
        return Ok(channel);
    }
    Ok(endpoints.remove(0).connect().await?)
}

fn endpoint(args: &Args, scheme: &str, addr: &str) -> Result<Endpoint, Box<dyn std::error::Error>> {
    let mut ep = Endpoint::from_shared(format!("{scheme}://{addr}"))?.tcp_nodelay(true);
    if let Some(dir) = &args.certs {
        ep = ep.tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(std::fs::read(
                    dir.join("ca-cert.pem"),
                )?))
                .identity(Identity::from_pem(
                    std::fs::read(dir.join("client-cert.pem"))?,
                    std::fs::read(dir.join("client-key.pem"))?,
                ))
                .domain_name("localhost"),
        )?;
    }
    Ok(ep)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Arc::new(Args::parse());
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let end = measure_from + Duration::from_secs_f64(args.duration);
    // The client's own CPU time over the measured window.
    let cpu_at_start = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from).await;
        satellite_bench_peers::self_cpu_us()
    });
    let mut handles = Vec::new();
    for _ in 0..args.connections {
        let channel = connect(&args).await?;
        for _ in 0..args.in_flight {
            let mut client = SatelliteClient::new(channel.clone());
            handles.push(tokio::spawn(async move {
                let (mut lat, mut errors, mut total) = (Vec::new(), 0u64, 0u64);
                loop {
                    let t = Instant::now();
                    if t >= end {
                        break;
                    }
                    let ok = match client.get_image(pb::Location { x: 1, y: 2 }).await {
                        Ok(r) => r.get_ref().x == 1 && r.get_ref().y == 2,
                        Err(_) => false,
                    };
                    total += 1;
                    let done = Instant::now();
                    if t >= measure_from && done <= end {
                        if ok {
                            lat.push((done - t).as_micros() as u32);
                        } else {
                            errors += 1;
                        }
                    }
                }
                (lat, errors, total)
            }));
        }
    }
    let (mut lat, mut errors, mut total) = (Vec::new(), 0, 0);
    for h in handles {
        let (l, e, t) = h.await?;
        lat.extend(l);
        errors += e;
        total += t;
    }
    let client_cpu = satellite_bench_peers::self_cpu_us().saturating_sub(cpu_at_start.await?);
    lat.sort_unstable();
    println!(
        "{{\"client\":\"tonic\",\"calls\":{},\"secs\":{},\"calls_per_s\":{:.0},\"p50_us\":{},\"p99_us\":{},\"errors\":{},\"total_calls\":{},\"client_cpu_us\":{}}}",
        lat.len(),
        args.duration,
        lat.len() as f64 / args.duration,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        errors,
        total,
        client_cpu
    );
    Ok(())
}
