//! FrameDecoder throughput against a plain copy of the same bytes.
//!
//! One encoded stream per message size (~16 MiB), pre-split into 16 KiB `Bytes` chunks as h2
//! would hand them over. The decoder gets every chunk and is drained after each push; the
//! "copy" baseline copies each chunk into a preallocated buffer of the stream's size, the
//! physical limit for touching every byte once. Targets (WIRE-API.md): >= 80 % of the copy at
//! 64 KiB messages, >= 20 M 16-byte messages/s.
//!
//! The decoder is crate-private: run with `cargo bench --bench decode --features
//! wire-internals`, which exposes it through `grpc::fuzz_bridge` (not API).
// criterion_group! generates an undocumented `pub fn`; nothing here is API.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use bytes::BufMut as _;
use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use satellite::grpc::fuzz_bridge::{FrameDecoder, PREFIX_LEN};

/// DATA chunk size: h2's default max frame size, 16 KiB.
const CHUNK: usize = 16 * 1024;
/// Bytes per stream, per message size.
const STREAM_BYTES: usize = 16 * 1024 * 1024;
/// Message sizes: tiny, small, medium (spans 4 chunks), large.
const SIZES: [(usize, &str); 4] = [
    (16, "16B"),
    (1024, "1KiB"),
    (64 * 1024, "64KiB"),
    (1024 * 1024, "1MiB"),
];

/// One encoded stream of `count` messages of `size` bytes, split into CHUNK-sized pieces.
fn chunks(size: usize) -> (Vec<Bytes>, usize, usize) {
    let count = STREAM_BYTES / (size + PREFIX_LEN);
    let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let mut buf = BytesMut::with_capacity(count * (size + PREFIX_LEN));
    for _ in 0..count {
        buf.put_u8(0);
        buf.put_u32(size as u32);
        buf.put_slice(&payload);
    }
    let stream = buf.freeze();
    let total = stream.len();
    let chunks = (0..total)
        .step_by(CHUNK)
        .map(|start| stream.slice(start..(start + CHUNK).min(total)))
        .collect();
    (chunks, count, total)
}

/// Decodes the whole stream; returns the message count so nothing is optimised away.
fn decode(chunks: &[Bytes], limit: usize) -> usize {
    let mut dec = FrameDecoder::new(limit, false);
    let mut n = 0;
    for c in chunks {
        dec.push(c.clone());
        while let Ok(Some(frame)) = dec.next_frame() {
            let payload = frame.payload;
            black_box(&payload);
            n += 1;
        }
    }
    assert_eq!(dec.finish(), Ok(()));
    n
}

/// Copies every chunk into `out` (preallocated to the stream size).
fn copy(chunks: &[Bytes], out: &mut Vec<u8>) -> usize {
    out.clear();
    for c in chunks {
        out.extend_from_slice(c);
    }
    black_box(out.as_ptr());
    out.len()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for (size, name) in SIZES {
        let (chunks, count, total) = chunks(size);
        let limit = size.max(1024);
        group.throughput(Throughput::Bytes(total as u64));
        group.bench_with_input(BenchmarkId::new("frame_decoder", name), &chunks, |b, ch| {
            b.iter(|| assert_eq!(decode(ch, limit), count));
        });
        let mut out = Vec::with_capacity(total);
        group.bench_with_input(BenchmarkId::new("copy", name), &chunks, |b, ch| {
            b.iter(|| copy(ch, &mut out));
        });
    }
    group.finish();

    // Messages per second for the tiny size, where per-message overhead dominates.
    let mut group = c.benchmark_group("decode_msgs");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let (chunks, count, _) = chunks(16);
    group.throughput(Throughput::Elements(count as u64));
    group.bench_with_input(
        BenchmarkId::new("frame_decoder", "16B"),
        &chunks,
        |b, ch| {
            b.iter(|| assert_eq!(decode(ch, 1024), count));
        },
    );
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
