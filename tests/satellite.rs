//! The Satellite service end to end over mutual TLS on loopback: every line of the semantics
//! (issue 4), checked against the map file's text rather than hard-coded answers.
//!
//! Helpers are local to this file (tests/common belongs to the runtime tests).

use std::{
    fs,
    future::Future,
    net::SocketAddr,
    time::{Duration, Instant},
};

use satellite::{
    app::{
        certs::{generate_in_memory, Pki, PkiOptions},
        client::{CallOptions, SatelliteClient},
        map::Map,
        pb::{Area, Image, Location},
        service::{MapService, ServiceOptions, GET_IMAGES},
    },
    grpc::{
        self,
        tls::{client_config, server_config, Identity, Roots},
        Channel, Code, Endpoint, Request, ServerConfig, Status, Streaming, Transport,
    },
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

/// The map file the server embeds, read as text so expectations come from the file itself.
const WORLD: &str = include_str!("../src/satellite/world.txt");

/// Every wait in these tests is bounded by this.
const WAIT: Duration = Duration::from_secs(20);

async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(WAIT, f)
        .await
        .expect("a bounded wait ran out")
}

/// The map text as rows of bytes: `rows[0]` is the file's first line (the top, y = H - 1).
fn rows(text: &str) -> Vec<Vec<u8>> {
    text.lines().map(|l| l.as_bytes().to_vec()).collect()
}

/// The byte the file says is at Cartesian `(x, y)`, for a map scaled by `k`.
fn file_cell(rows: &[Vec<u8>], k: i32, x: i32, y: i32) -> u8 {
    let h = rows.len() as i32;
    rows[(h - 1 - y / k) as usize][(x / k) as usize]
}

/// A running map server with its in-memory PKI; stopped (and awaited) on [`Server::stop`],
/// aborted on drop.
struct Server {
    addr: SocketAddr,
    pki: Pki,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), grpc::Error>>>,
}

impl Server {
    async fn start(map: Map, options: ServiceOptions) -> Self {
        Self::start_with_grace(map, options, Duration::from_secs(10)).await
    }

    async fn start_with_grace(map: Map, options: ServiceOptions, grace: Duration) -> Self {
        let pki = generate_in_memory(&PkiOptions::default()).unwrap();
        let identity =
            Identity::from_pem(pki.server_cert.as_bytes(), pki.server_key.as_bytes()).unwrap();
        let roots = Roots::from_pem(pki.ca_cert.as_bytes()).unwrap();
        let tls = server_config(&identity, Some(&roots)).unwrap();
        let mut config = ServerConfig::new(Transport::Tls(tls));
        config.shutdown_grace = grace;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = MapService::new(map, &options);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(grpc::run(listener, config, service.router(), async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            pki,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A channel presenting this PKI's client certificate.
    fn channel(&self) -> Channel {
        let roots = Roots::from_pem(self.pki.ca_cert.as_bytes()).unwrap();
        let identity = Identity::from_pem(
            self.pki.client_cert.as_bytes(),
            self.pki.client_key.as_bytes(),
        )
        .unwrap();
        self.channel_with(client_config(&roots, Some(&identity)).unwrap())
    }

    fn channel_with(&self, tls: std::sync::Arc<rustls::ClientConfig>) -> Channel {
        let endpoint = Endpoint::new(self.addr.to_string())
            .tls(tls)
            .server_name("localhost")
            .connect_timeout(Duration::from_secs(5));
        Channel::lazy(endpoint).unwrap()
    }

    fn client(&self) -> SatelliteClient {
        SatelliteClient::new(self.channel())
    }

    /// Asks the server to stop and returns how long `run` took to return.
    async fn stop(mut self) -> Duration {
        let started = Instant::now();
        let _ = self.stop.take().unwrap().send(());
        bounded(self.task.take().unwrap()).await.unwrap().unwrap();
        started.elapsed()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

fn opts() -> CallOptions {
    CallOptions {
        timeout: Some(WAIT),
        ..CallOptions::default()
    }
}

/// Reads a stream to its end, or to its error.
async fn drain(mut stream: Streaming<Image>) -> Result<Vec<Image>, Status> {
    let mut images = Vec::new();
    while let Some(image) = bounded(stream.message()).await? {
        images.push(image);
    }
    Ok(images)
}

/// An area call's result, whether it failed before or during the stream.
async fn area(
    client: &SatelliteClient,
    ll: (i32, i32),
    ur: (i32, i32),
    options: &CallOptions,
) -> Result<Vec<Image>, Status> {
    let stream = bounded(client.get_images(ll, ur, options)).await?;
    drain(stream).await
}

/// A GetImages call with a raw `Area`, to send missing corners the typed client cannot.
async fn raw_area(channel: &Channel, area: Area) -> Result<Vec<Image>, Status> {
    let mut request = Request::new(area);
    request.set_timeout(WAIT);
    let response = bounded(channel.server_streaming(&GET_IMAGES, request)).await?;
    drain(response.into_inner()).await
}

/// What the file says the area `ll..=ur` streams: rows from ur.y down, x ascending.
fn expected_area(rows: &[Vec<u8>], k: i32, ll: (i32, i32), ur: (i32, i32)) -> Vec<(i32, i32, u8)> {
    let mut cells = Vec::new();
    for y in (ll.1..=ur.1).rev() {
        for x in ll.0..=ur.0 {
            cells.push((x, y, file_cell(rows, k, x, y)));
        }
    }
    cells
}

fn triples(images: &[Image]) -> Vec<(i32, i32, u8)> {
    images
        .iter()
        .map(|i| {
            assert_eq!(i.img.len(), 1, "one byte per image at ({}, {})", i.x, i.y);
            (i.x, i.y, i.img[0])
        })
        .collect()
}

fn assert_status(result: Result<impl std::fmt::Debug, Status>, code: Code, needles: &[&str]) {
    let status = result.expect_err("the call should fail");
    assert_eq!(status.code(), code, "{status:?}");
    for needle in needles {
        assert!(
            status.message().contains(needle),
            "message {:?} lacks {needle:?}",
            status.message()
        );
    }
}

#[test]
fn world_file_is_80_by_32_and_the_default_map() {
    let rows = rows(WORLD);
    assert_eq!(rows.len(), 32);
    assert!(rows.iter().all(|r| r.len() == 80));
    let map = Map::world();
    assert_eq!((map.width(), map.height()), (80, 32));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_image_returns_every_cell_of_the_file_cartesian() {
    let rows = rows(WORLD);
    let server = Server::start(Map::world(), ServiceOptions::default()).await;
    let client = server.client();

    // The corners, spelled out: (0, 0) is the first byte of the file's last line.
    let corners = [
        (0, 0, rows[31][0]),
        (79, 0, rows[31][79]),
        (0, 31, rows[0][0]),
        (79, 31, rows[0][79]),
    ];
    for (x, y, want) in corners {
        let image = bounded(client.get_image(x, y, &opts())).await.unwrap();
        assert_eq!((image.x, image.y, image.img.as_ref()), (x, y, &[want][..]));
    }
    // The world has land and sea in its bottom rows, so a flipped y would be caught below.
    assert_ne!(rows[31], rows[0]);

    for y in 0..32 {
        for x in 0..80 {
            let image = bounded(client.get_image(x, y, &opts())).await.unwrap();
            assert_eq!((image.x, image.y), (x, y));
            assert_eq!(
                image.img.as_ref(),
                &[file_cell(&rows, 1, x, y)],
                "cell ({x}, {y})"
            );
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_image_off_the_map_is_out_of_range_naming_coordinate_and_size() {
    let server = Server::start(Map::world(), ServiceOptions::default()).await;
    let client = server.client();
    for (x, y) in [
        (80, 0),
        (0, 32),
        (-1, 0),
        (0, -1),
        (80, 32),
        (i32::MAX, i32::MIN),
    ] {
        let result = bounded(client.get_image(x, y, &opts())).await;
        assert_status(
            result,
            Code::OutOfRange,
            &[&format!("({x}, {y})"), "80 x 32"],
        );
    }
    // The connection is still good after errors.
    assert!(bounded(client.get_image(79, 31, &opts())).await.is_ok());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_map_streams_in_reading_order_like_the_file() {
    let rows = rows(WORLD);
    let server = Server::start(Map::world(), ServiceOptions::default()).await;
    let client = server.client();
    let images = area(&client, (0, 0), (79, 31), &opts()).await.unwrap();
    assert_eq!(images.len(), 80 * 32);
    assert_eq!(triples(&images), expected_area(&rows, 1, (0, 0), (79, 31)));
    // Reading order means the bytes read like the file with its newlines removed.
    let bytes: Vec<u8> = images.iter().map(|i| i.img[0]).collect();
    assert_eq!(bytes, WORLD.replace('\n', "").into_bytes());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn areas_are_inclusive_rectangles() {
    let rows = rows(WORLD);
    let server = Server::start(Map::world(), ServiceOptions::default()).await;
    let client = server.client();
    for (ll, ur) in [
        ((5, 3), (12, 9)),
        ((40, 16), (40, 16)),
        ((0, 0), (79, 0)),
        ((0, 31), (79, 31)),
        ((79, 0), (79, 31)),
        ((10, 20), (30, 25)),
    ] {
        let images = area(&client, ll, ur, &opts()).await.unwrap();
        let want = expected_area(&rows, 1, ll, ur);
        let count = ((ur.0 - ll.0 + 1) * (ur.1 - ll.1 + 1)) as usize;
        assert_eq!(images.len(), count, "{ll:?}..={ur:?}");
        assert_eq!(triples(&images), want, "{ll:?}..={ur:?}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_areas_are_invalid_argument_or_out_of_range() {
    let server = Server::start(Map::world(), ServiceOptions::default()).await;
    let client = server.client();
    let channel = server.channel();

    // Inverted: ll right of ur, ll above ur, both.
    for (ll, ur) in [((5, 1), (4, 1)), ((1, 5), (1, 4)), ((5, 5), (1, 1))] {
        let result = area(&client, ll, ur, &opts()).await;
        assert_status(
            result,
            Code::InvalidArgument,
            &[
                &format!("({}, {})", ll.0, ll.1),
                &format!("({}, {})", ur.0, ur.1),
            ],
        );
    }

    // Missing corners.
    let corner = Some(Location { x: 1, y: 1 });
    for (ll, ur) in [(None, corner), (corner, None), (None, None)] {
        let result = raw_area(&channel, Area { ll, ur }).await;
        assert_status(result, Code::InvalidArgument, &[]);
    }

    // A corner off the map, naming that corner and the size.
    for (ll, ur, off) in [
        ((-1, 0), (3, 3), (-1, 0)),
        ((0, -1), (3, 3), (0, -1)),
        ((0, 0), (80, 3), (80, 3)),
        ((0, 0), (3, 32), (3, 32)),
        ((79, 31), (80, 32), (80, 32)),
    ] {
        let result = area(&client, ll, ur, &opts()).await;
        assert_status(
            result,
            Code::OutOfRange,
            &[&format!("({}, {})", off.0, off.1), "80 x 32"],
        );
    }

    // Still serving after all of that.
    assert_eq!(
        area(&client, (0, 0), (1, 1), &opts()).await.unwrap().len(),
        4
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_small_map_from_a_file() {
    let text = "abcde\nfghij\nklmno\n";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.txt");
    fs::write(&path, text).unwrap();
    let rows = rows(text);
    let server = Server::start(Map::load(&path).unwrap(), ServiceOptions::default()).await;
    let client = server.client();

    // (0, 0) is the first byte of the last line: 'k'.
    let image = bounded(client.get_image(0, 0, &opts())).await.unwrap();
    assert_eq!(image.img.as_ref(), b"k");
    for y in 0..3 {
        for x in 0..5 {
            let image = bounded(client.get_image(x, y, &opts())).await.unwrap();
            assert_eq!(image.img.as_ref(), &[file_cell(&rows, 1, x, y)]);
        }
    }
    let result = bounded(client.get_image(5, 0, &opts())).await;
    assert_status(result, Code::OutOfRange, &["(5, 0)", "5 x 3"]);

    let images = area(&client, (0, 0), (4, 2), &opts()).await.unwrap();
    let bytes: Vec<u8> = images.iter().map(|i| i.img[0]).collect();
    assert_eq!(bytes, b"abcdefghijklmno");
    let images = area(&client, (1, 0), (3, 1), &opts()).await.unwrap();
    assert_eq!(triples(&images), expected_area(&rows, 1, (1, 0), (3, 1)));
    server.stop().await;
}

#[test]
fn ragged_empty_and_non_ascii_maps_are_refused_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text, line) in [
        ("ragged.txt", "abc\nabc\nab\nabc\n", "line 3"),
        ("empty.txt", "", "line 1"),
        ("blank-line.txt", "abc\n\nabc\n", "line 2"),
        ("non-ascii.txt", "abc\nabc\na\u{e9}\n", "line 3"),
        ("control.txt", "a\tc\nabc\n", "line 1"),
    ] {
        let path = dir.path().join(name);
        fs::write(&path, text).unwrap();
        let err = Map::load(&path).unwrap_err().to_string();
        assert!(err.contains(name), "{err}");
        assert!(err.contains(line), "{name}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_blows_each_cell_up_to_k_by_k() {
    let rows = rows(WORLD);
    let k = 3;
    let server = Server::start(
        Map::world().scaled(k as u32).unwrap(),
        ServiceOptions::default(),
    )
    .await;
    let client = server.client();
    for (x, y) in [
        (0, 0),
        (2, 2),
        (3, 0),
        (0, 3),
        (239, 95),
        (120, 48),
        (47, 61),
    ] {
        let image = bounded(client.get_image(x, y, &opts())).await.unwrap();
        assert_eq!(
            (image.x, image.y, image.img.as_ref()),
            (x, y, &[file_cell(&rows, k, x, y)][..])
        );
    }
    let result = bounded(client.get_image(240, 0, &opts())).await;
    assert_status(result, Code::OutOfRange, &["(240, 0)", "240 x 96"]);
    let result = bounded(client.get_image(0, 96, &opts())).await;
    assert_status(result, Code::OutOfRange, &["(0, 96)", "240 x 96"]);

    // The whole scaled map: each file line appears as 3 rows, each byte 3 times.
    let images = area(&client, (0, 0), (239, 95), &opts()).await.unwrap();
    assert_eq!(images.len(), 240 * 96);
    let mut want = Vec::new();
    for line in WORLD.lines() {
        let wide: Vec<u8> = line.bytes().flat_map(|b| [b; 3]).collect();
        for _ in 0..3 {
            want.extend_from_slice(&wide);
        }
    }
    let got: Vec<u8> = images.iter().map(|i| i.img[0]).collect();
    assert_eq!(got, want);
    assert_eq!(
        triples(&images[..240]),
        expected_area(&rows, k, (0, 95), (239, 95))
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cells_are_produced_lazily_on_a_huge_map() {
    // 1.6e9 x 6.4e8 cells: building the area first would never finish.
    let rows = rows(WORLD);
    let k = 20_000_000;
    let map = Map::world().scaled(k as u32).unwrap();
    let (w, h) = (map.width(), map.height());
    let server = Server::start(map, ServiceOptions::default()).await;
    let client = server.client();
    let started = Instant::now();
    let mut stream = bounded(client.get_images((0, 0), (w - 1, h - 1), &opts()))
        .await
        .unwrap();
    for i in 0..100 {
        let image = bounded(stream.message()).await.unwrap().unwrap();
        assert_eq!((image.x, image.y), (i, h - 1));
        assert_eq!(image.img.as_ref(), &[file_cell(&rows, k, i, h - 1)]);
    }
    drop(stream);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let image = bounded(client.get_image(w - 1, 0, &opts())).await.unwrap();
    assert_eq!(image.img.as_ref(), &[rows[31][79]]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn img_bytes_repeats_the_cell_byte() {
    let rows = rows(WORLD);
    let n = 1000;
    let server = Server::start(
        Map::world(),
        ServiceOptions {
            img_bytes: n,
            ..ServiceOptions::default()
        },
    )
    .await;
    let client = server.client();
    for (x, y) in [(0, 0), (40, 16), (79, 31), (62, 24)] {
        let image = bounded(client.get_image(x, y, &opts())).await.unwrap();
        assert_eq!(image.img.to_vec(), vec![file_cell(&rows, 1, x, y); n]);
    }
    let images = area(&client, (0, 0), (79, 31), &opts()).await.unwrap();
    assert_eq!(images.len(), 2560);
    for image in &images {
        let want = file_cell(&rows, 1, image.x, image.y);
        assert_eq!(image.img.len(), n);
        assert!(
            image.img.iter().all(|b| *b == want),
            "({}, {})",
            image.x,
            image.y
        );
    }
    server.stop().await;

    // 0 means one byte, like the default.
    let server = Server::start(
        Map::world(),
        ServiceOptions {
            img_bytes: 0,
            ..ServiceOptions::default()
        },
    )
    .await;
    let image = bounded(server.client().get_image(0, 0, &opts()))
        .await
        .unwrap();
    assert_eq!(image.img.as_ref(), &[rows[31][0]]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_delay_paces_the_stream() {
    let delay = Duration::from_millis(60);
    let server = Server::start(
        Map::world(),
        ServiceOptions {
            send_delay: delay,
            ..ServiceOptions::default()
        },
    )
    .await;
    let client = server.client();
    let started = Instant::now();
    let images = area(&client, (0, 0), (4, 0), &opts()).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(images.len(), 5);
    // A pause before each of the 5 messages (allowing a little timer slack).
    assert!(elapsed >= delay * 4, "5 cells in {elapsed:?}");
    // Unary calls are not delayed.
    let started = Instant::now();
    bounded(client.get_image(0, 0, &opts())).await.unwrap();
    assert!(started.elapsed() < delay * 3, "{:?}", started.elapsed());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_delay_and_a_client_deadline_give_deadline_exceeded() {
    let server = Server::start(
        Map::world(),
        ServiceOptions {
            send_delay: Duration::from_millis(100),
            ..ServiceOptions::default()
        },
    )
    .await;
    let client = server.client();
    let deadline = CallOptions {
        timeout: Some(Duration::from_millis(500)),
        ..CallOptions::default()
    };
    let started = Instant::now();
    let mut received = 0;
    let status = match bounded(client.get_images((0, 0), (79, 31), &deadline)).await {
        Err(status) => status,
        Ok(mut stream) => loop {
            match bounded(stream.message()).await {
                Ok(Some(_)) => received += 1,
                Ok(None) => panic!("the whole map arrived within the deadline"),
                Err(status) => break status,
            }
        },
    };
    let elapsed = started.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        received < 10,
        "{received} cells within 500 ms at 100 ms each"
    );
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(3),
        "deadline reported after {elapsed:?}"
    );
    // The server is fine and the same client makes the next call.
    let image = bounded(client.get_image(1, 1, &opts())).await.unwrap();
    assert_eq!((image.x, image.y), (1, 1));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_mid_stream_then_a_new_call_succeeds() {
    let rows = rows(WORLD);
    // 2560 cells at 5 ms each would take 12.8 s; a long grace makes a stream the server did
    // not notice was cancelled hold up the shutdown below.
    let server = Server::start_with_grace(
        Map::world(),
        ServiceOptions {
            send_delay: Duration::from_millis(5),
            ..ServiceOptions::default()
        },
        Duration::from_secs(30),
    )
    .await;
    let client = server.client();
    let mut stream = bounded(client.get_images((0, 0), (79, 31), &opts()))
        .await
        .unwrap();
    for _ in 0..10 {
        bounded(stream.message()).await.unwrap().unwrap();
    }
    drop(stream);

    let image = bounded(client.get_image(0, 0, &opts())).await.unwrap();
    assert_eq!(image.img.as_ref(), &[rows[31][0]]);
    let images = area(&client, (0, 0), (3, 1), &opts()).await.unwrap();
    assert_eq!(triples(&images), expected_area(&rows, 1, (0, 0), (3, 1)));

    // A fresh client (new connection) works too.
    let other = server.client();
    assert!(bounded(other.get_image(79, 31, &opts())).await.is_ok());

    drop((client, other));
    let took = server.stop().await;
    assert!(
        took < Duration::from_secs(5),
        "shutdown took {took:?}: the cancelled stream kept running"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_a_trusted_certificate_are_refused() {
    let server = Server::start(Map::world(), ServiceOptions::default()).await;
    let roots = Roots::from_pem(server.pki.ca_cert.as_bytes()).unwrap();

    // No client certificate.
    let anonymous = SatelliteClient::new(server.channel_with(client_config(&roots, None).unwrap()));
    let result = bounded(anonymous.get_image(0, 0, &opts())).await;
    assert_status(result, Code::Unavailable, &[]);

    // A client certificate from another CA.
    let other = generate_in_memory(&PkiOptions::default()).unwrap();
    let stranger =
        Identity::from_pem(other.client_cert.as_bytes(), other.client_key.as_bytes()).unwrap();
    let stranger =
        SatelliteClient::new(server.channel_with(client_config(&roots, Some(&stranger)).unwrap()));
    let result = bounded(stranger.get_image(0, 0, &opts())).await;
    assert_status(result, Code::Unavailable, &[]);

    assert!(bounded(server.client().get_image(0, 0, &opts()))
        .await
        .is_ok());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_is_accepted_on_both_methods() {
    let server = Server::start(Map::world(), ServiceOptions::default()).await;
    let client = server.client();
    let mut options = opts();
    options.metadata.insert("token", "secret").unwrap();
    assert!(bounded(client.get_image(3, 3, &options)).await.is_ok());
    assert_eq!(
        area(&client, (0, 0), (2, 2), &options).await.unwrap().len(),
        9
    );
    server.stop().await;
}
