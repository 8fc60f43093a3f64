//! Our load generator, on the satellite crate's own client: unary GetImage(1, 2) with
//! N connections x M calls in flight for D seconds, or GetImages over the whole map
//! (K concurrent streams, R rounds). Plaintext or mutual TLS, against any server.
//! `--noop-interceptor` installs one client interceptor that does nothing, to measure what an
//! interceptor costs; `--round-robin` balances each channel over an `ipv4:a,b` target. Prints
//! one JSON line.

use std::{path::PathBuf, sync::Arc, time::Duration};

use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use satellite::{
    app::client::{CallOptions, SatelliteClient},
    grpc::{
        tls, BoxFuture, Channel, ClientCallHead, ClientInterceptor, Endpoint, LbPolicy, Status,
    },
};
use satellite_bench_peers::{framed_image_len, percentile};
use tokio::time::Instant;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8000", global = true)]
    addr: String,
    /// ca-cert.pem, client-cert.pem, client-key.pem: mutual TLS (plaintext without it).
    #[arg(long, global = true)]
    certs: Option<PathBuf>,
    /// Install one no-op client interceptor on every channel (measures the interceptor cost).
    #[arg(long, global = true)]
    noop_interceptor: bool,
    /// Balance each channel over the target's addresses with round_robin (`--addr
    /// ipv4:a,b`); pick_first otherwise.
    #[arg(long, global = true)]
    round_robin: bool,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Unary GetImage(1, 2).
    Unary {
        #[arg(short = 'c', long, default_value_t = 16)]
        connections: usize,
        #[arg(short = 'm', long, default_value_t = 32)]
        in_flight: usize,
        #[arg(short = 'd', long, default_value_t = 10.0)]
        duration: f64,
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
    },
    /// Opens `connections` connections, makes one GetImage on each, prints a JSON line, then
    /// holds them idle for `hold` seconds (for memory per idle connection).
    Hold {
        #[arg(short = 'c', long, default_value_t = 10_000)]
        connections: usize,
        #[arg(long, default_value_t = 60.0)]
        hold: f64,
    },
    /// GetImages over the whole map (80*scale x 32*scale), `streams` at once, `rounds` times.
    Stream {
        #[arg(long, default_value_t = 8)]
        scale: i32,
        #[arg(long, default_value_t = 1)]
        streams: usize,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
}

/// A client interceptor that does nothing: with `--noop-interceptor`, what one interceptor
/// costs (the call head it is shown, its boxed future, the summary after the call).
struct NoopInterceptor;

impl ClientInterceptor for NoopInterceptor {
    fn before<'a>(&'a self, _head: &'a mut ClientCallHead) -> BoxFuture<'a, Result<(), Status>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

async fn connect(args: &Args) -> Result<SatelliteClient, Box<dyn std::error::Error>> {
    let mut ep = Endpoint::new(args.addr.clone());
    if let Some(dir) = &args.certs {
        let roots = tls::Roots::from_pem_file(&dir.join("ca-cert.pem"))?;
        let id = tls::Identity::from_pem_files(
            &dir.join("client-cert.pem"),
            &dir.join("client-key.pem"),
        )?;
        ep = ep
            .tls(tls::client_config(&roots, Some(&id))?)
            .server_name("localhost");
    }
    if args.round_robin {
        ep = ep.lb_policy(LbPolicy::RoundRobin);
    }
    let mut channel = Channel::connect(ep).await?;
    if args.noop_interceptor {
        channel = channel.intercept(NoopInterceptor);
    }
    Ok(SatelliteClient::new(channel))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Arc::new(Args::parse());
    match args.mode {
        Mode::Unary {
            connections,
            in_flight,
            duration,
            warmup,
        } => {
            let start = Instant::now();
            let measure_from = start + Duration::from_secs_f64(warmup);
            let end = measure_from + Duration::from_secs_f64(duration);
            // The client's own CPU time over the measured window.
            let cpu_at_start = tokio::spawn(async move {
                tokio::time::sleep_until(measure_from).await;
                satellite_bench_peers::self_cpu_us()
            });
            let mut handles = Vec::new();
            for _ in 0..connections {
                let client = connect(&args).await?;
                for _ in 0..in_flight {
                    let client = client.clone();
                    handles.push(tokio::spawn(async move {
                        let opts = CallOptions::default();
                        let (mut lat, mut errors, mut total) = (Vec::new(), 0u64, 0u64);
                        let mut first_error = None;
                        loop {
                            let t = Instant::now();
                            if t >= end {
                                break;
                            }
                            let ok = match client.get_image(1, 2, &opts).await {
                                Ok(img) => img.x == 1 && img.y == 2,
                                Err(e) => {
                                    first_error.get_or_insert_with(|| e.to_string());
                                    false
                                }
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
                        (lat, errors, total, first_error)
                    }));
                }
            }
            let (mut lat, mut errors, mut total, mut first_error) = (Vec::new(), 0, 0, None);
            for h in handles {
                let (l, e, t, f) = h.await?;
                lat.extend(l);
                errors += e;
                total += t;
                if first_error.is_none() {
                    first_error = f;
                }
            }
            if let Some(e) = &first_error {
                eprintln!("loadgen: first error: {e}");
            }
            let client_cpu =
                satellite_bench_peers::self_cpu_us().saturating_sub(cpu_at_start.await?);
            lat.sort_unstable();
            println!(
                "{{\"client\":\"satellite\",\"calls\":{},\"secs\":{},\"calls_per_s\":{:.0},\"p50_us\":{},\"p99_us\":{},\"errors\":{},\"total_calls\":{},\"client_cpu_us\":{}}}",
                lat.len(),
                duration,
                lat.len() as f64 / duration,
                percentile(&lat, 0.5),
                percentile(&lat, 0.99),
                errors,
                total,
        client_cpu
            );
        }
        Mode::Hold { connections, hold } => {
            let started = Instant::now();
            let (mut clients, mut errors) = (Vec::with_capacity(connections), 0u64);
            let mut first_error = None;
            let mut left = connections;
            while left > 0 {
                let batch = left.min(32);
                left -= batch;
                let mut handles = Vec::new();
                for _ in 0..batch {
                    let args = args.clone();
                    handles.push(tokio::spawn(async move {
                        let client = connect(&args).await.map_err(|e| e.to_string())?;
                        client
                            .get_image(1, 2, &CallOptions::default())
                            .await
                            .map_err(|e| e.to_string())?;
                        Ok::<_, String>(client)
                    }));
                }
                for h in handles {
                    match h.await? {
                        Ok(c) => clients.push(c),
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                }
            }
            if let Some(e) = first_error {
                eprintln!("loadgen: first error: {e}");
            }
            println!(
                "{{\"client\":\"satellite\",\"held\":{},\"errors\":{},\"secs\":{:.2}}}",
                clients.len(),
                errors,
                started.elapsed().as_secs_f64()
            );
            use std::io::Write as _;
            std::io::stdout().flush()?;
            tokio::time::sleep(Duration::from_secs_f64(hold)).await;
            drop(clients);
        }
        Mode::Stream {
            scale,
            streams,
            rounds,
        } => {
            let (w, h) = (80 * scale, 32 * scale);
            let client = connect(&args).await?;
            let started = Instant::now();
            let (mut images, mut bytes, mut errors) = (0u64, 0u64, 0u64);
            let mut durations = Vec::new();
            for _ in 0..rounds {
                let mut handles = Vec::new();
                for _ in 0..streams {
                    let client = client.clone();
                    handles.push(tokio::spawn(async move {
                        let t = Instant::now();
                        let (mut n, mut b, mut err) = (0u64, 0u64, 0u64);
                        match client
                            .get_images((0, 0), (w - 1, h - 1), &CallOptions::default())
                            .await
                        {
                            Ok(mut s) => {
                                while let Some(item) = s.next().await {
                                    match item {
                                        Ok(img) => {
                                            n += 1;
                                            b += framed_image_len(img.x, img.y, img.img.len())
                                                as u64;
                                        }
                                        Err(e) => {
                                            eprintln!("loadgen: stream error: {e}");
                                            err += 1;
                                            break;
                                        }
                                    }
                                }
                            }
                            Err(e) => {
                                eprintln!("loadgen: call error: {e}");
                                err += 1;
                            }
                        }
                        if n != (w as u64) * (h as u64) {
                            err += 1;
                        }
                        (n, b, err, (Instant::now() - t).as_micros() as u32)
                    }));
                }
                for hd in handles {
                    let (n, b, e, d) = hd.await?;
                    images += n;
                    bytes += b;
                    errors += e;
                    durations.push(d);
                }
            }
            let secs = started.elapsed().as_secs_f64();
            durations.sort_unstable();
            println!(
                "{{\"client\":\"satellite\",\"images\":{},\"bytes\":{},\"secs\":{:.4},\"images_per_s\":{:.0},\"mb_per_s\":{:.1},\"stream_p50_us\":{},\"stream_p99_us\":{},\"errors\":{},\"total_calls\":{}}}",
                images,
                bytes,
                secs,
                images as f64 / secs,
                bytes as f64 / secs / 1e6,
                percentile(&durations, 0.5),
                percentile(&durations, 0.99),
                errors,
                streams * rounds
            );
        }
    }
    Ok(())
}
