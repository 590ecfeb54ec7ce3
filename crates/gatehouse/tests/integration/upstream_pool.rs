//! Connections to backends: kept alive and reused across requests whatever the response's
//! framing, replaced when the backend closed them (HTTP/1.1 while idle, HTTP/2 by GOAWAY),
//! never reused after a response broken off, and never left holding a client's request body.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::common::*;

/// What the hand-written backend does besides answering.
#[derive(Clone, Copy)]
enum Mode {
    KeepAlive,
    /// Closes a connection on which no request came for this long.
    CloseWhenIdle(Duration),
}

/// Connections accepted, connections the gateway closed (EOF read), and requests for
/// `/vanish` read.
#[derive(Default)]
struct Counts {
    accepted: AtomicUsize,
    closed_by_peer: AtomicUsize,
    vanished: AtomicUsize,
    /// Request bodies of `/early` read whole after the answer.
    early_bodies: AtomicUsize,
}

/// An HTTP/1.1 backend written by hand, so that the tests see its connections. It answers by
/// path: `/chunked` with a chunked body, `/empty` with 204, `/early` with 413 before reading
/// the request body (it reads it afterwards, slowly), `/hold` with nothing until the gateway
/// closes the connection, `/stall` with one chunk and then
/// nothing for a long time, `/continue` with a 100 before its 200, `/conflicting` with two
/// Content-Lengths, `/both` framed by Content-Length and chunked at once; `/vanish` closes
/// the connection without an answer once it has read the request; anything else with `ok`
/// (or its headers alone, for HEAD).
async fn raw_backend(mode: Mode) -> (SocketAddr, Arc<Counts>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            c.accepted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve_raw(stream, mode, c.clone()));
        }
    });
    (addr, counts)
}

async fn serve_raw(mut stream: TcpStream, mode: Mode, counts: Arc<Counts>) {
    let mut buf = Vec::new();
    loop {
        let wait = match mode {
            Mode::KeepAlive => PATIENCE,
            Mode::CloseWhenIdle(d) => d,
        };
        let head = match read_head(&mut stream, &mut buf, wait).await {
            Ok(Some(head)) => head,
            Ok(None) => {
                counts.closed_by_peer.fetch_add(1, Ordering::SeqCst);
                return;
            }
            Err(()) => return,
        };
        let mut lines = head.lines();
        let request_line = lines.next().unwrap_or_default().to_string();
        let length: usize = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        let mut parts = request_line.split(' ');
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        if path == "/early" {
            let _ = stream.write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n").await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            if !read_body(&mut stream, &mut buf, length).await {
                return;
            }
            counts.early_bodies.fetch_add(1, Ordering::SeqCst);
            continue;
        }
        if !read_body(&mut stream, &mut buf, length).await {
            return;
        }
        if path == "/hold" {
            let mut sink = [0u8; 64];
            if let Ok(Ok(0)) = tokio::time::timeout(PATIENCE, stream.read(&mut sink)).await {
                counts.closed_by_peer.fetch_add(1, Ordering::SeqCst);
            }
            return;
        }
        if path == "/vanish" {
            counts.vanished.fetch_add(1, Ordering::SeqCst);
            return;
        }
        let reply: &[u8] = match (method, path) {
            (_, "/chunked") => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n3\r\n-ch\r\n0\r\n\r\n",
            (_, "/empty") => b"HTTP/1.1 204 No Content\r\n\r\n",
            (_, "/stall") => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n",
            (_, "/continue") => b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            (_, "/conflicting") => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok",
            (_, "/both") => {
                b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
            }
            ("HEAD", _) => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n",
            _ => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        };
        if stream.write_all(reply).await.is_err() {
            return;
        }
        if path == "/stall" {
            // Never finishes this response; ends when the gateway closes the connection.
            let mut sink = [0u8; 64];
            if let Ok(Ok(0)) = tokio::time::timeout(PATIENCE, stream.read(&mut sink)).await {
                counts.closed_by_peer.fetch_add(1, Ordering::SeqCst);
            }
            return;
        }
    }
}

/// The next request head, leaving what follows it in `buf`; None on EOF; Err on timeout.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>, wait: Duration) -> Result<Option<String>, ()> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            return Ok(Some(head));
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(wait, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(None),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return Err(()),
        }
    }
}

/// Reads and drops `length` body bytes (some may be in `buf` already). False on EOF or timeout.
async fn read_body(stream: &mut TcpStream, buf: &mut Vec<u8>, mut length: usize) -> bool {
    let buffered = length.min(buf.len());
    buf.drain(..buffered);
    length -= buffered;
    let mut chunk = [0u8; 16384];
    while length > 0 {
        match tokio::time::timeout(PATIENCE, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                let used = n.min(length);
                buf.extend_from_slice(&chunk[used..n]);
                length -= used;
            }
            _ => return false,
        }
    }
    true
}

async fn gateway_for(backend: SocketAddr) -> (Gateway, u16) {
    let port = free_port();
    let config = format!("{CLASS}{}{}{}", http_gateway(port), service("svc", backend), route("r", "/", "svc"));
    (Gateway::start(&config).await, port)
}

fn req(method: &str, port: u16, path: &str, body: Bytes) -> Request<Full<Bytes>> {
    Request::builder().method(method).uri(format!("http://127.0.0.1:{port}{path}")).body(Full::new(body)).unwrap()
}

#[tokio::test]
async fn one_backend_connection_carries_sequential_requests_of_every_framing() {
    let (backend, counts) = raw_backend(Mode::KeepAlive).await;
    let (_gw, port) = gateway_for(backend).await;
    for _ in 0..3 {
        assert_eq!(request(req("GET", port, "/", Bytes::new())).await.unwrap().2, "ok");
        assert_eq!(request(req("GET", port, "/chunked", Bytes::new())).await.unwrap().2, "ok-ch");
        let (code, headers, body) = request(req("HEAD", port, "/", Bytes::new())).await.unwrap();
        assert_eq!((code, body.as_str()), (200, ""));
        assert_eq!(headers["content-length"], "2");
        assert_eq!(request(req("GET", port, "/empty", Bytes::new())).await.unwrap().0, 204);
        let posted = request(req("POST", port, "/", Bytes::from_static(b"a body"))).await.unwrap();
        assert_eq!((posted.0, posted.2.as_str()), (200, "ok"));
    }
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 1, "15 sequential requests, one backend connection");
}

/// A client that hangs up while the backend has not answered yet ends the exchange: the
/// backend's connection is closed rather than left waiting for an answer nobody will read.
#[tokio::test]
async fn a_client_leaving_before_its_answer_ends_the_backend_exchange() {
    let (backend, counts) = raw_backend(Mode::KeepAlive).await;
    let (_gw, port) = gateway_for(backend).await;
    let mut client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    client.write_all(b"GET /hold HTTP/1.1\r\nhost: example.com\r\n\r\n").await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    while counts.accepted.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the request never reached the backend");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(client);
    // The backend waits as long as this test does: only the gateway can end it first.
    while counts.closed_by_peer.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the backend was left waiting");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_connection_the_backend_closed_while_idle_is_replaced() {
    let (backend, counts) = raw_backend(Mode::CloseWhenIdle(Duration::from_millis(100))).await;
    let (_gw, port) = gateway_for(backend).await;
    for round in 0..3 {
        // A POST with a body: once written it cannot be sent again, so the closed connection
        // must be seen before, not after.
        let (code, _, body) = request(req("POST", port, "/", Bytes::from_static(b"once"))).await.unwrap();
        assert_eq!((code, body.as_str()), (200, "ok"), "round {round}");
        // Long enough for the backend to close the connection it kept.
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_response_broken_off_by_the_client_closes_its_backend_connection() {
    let (backend, counts) = raw_backend(Mode::KeepAlive).await;
    let (_gw, port) = gateway_for(backend).await;

    // Read the head and the first chunk of a response that never ends, then hang up.
    let mut client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    client.write_all(b"GET /stall HTTP/1.1\r\nhost: example.com\r\n\r\n").await.unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while !String::from_utf8_lossy(&seen).contains("first") {
        assert!(Instant::now() < deadline, "no first chunk: {}", String::from_utf8_lossy(&seen));
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(PATIENCE, client.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "closed early");
        seen.extend_from_slice(&chunk[..n]);
    }
    drop(client);

    // The half-read connection is closed, not pooled; the next request gets a new one.
    let deadline = Instant::now() + PATIENCE;
    while counts.closed_by_peer.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the gateway kept the broken-off backend connection");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(request(req("GET", port, "/", Bytes::new())).await.unwrap().2, "ok");
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_backend_answering_before_reading_the_body_leaves_both_sides_usable() {
    let (backend, _) = raw_backend(Mode::KeepAlive).await;
    let (_gw, port) = gateway_for(backend).await;
    let client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut rd, mut wr) = client.into_split();
    let body = vec![b'x'; 512 * 1024];
    let head = format!("POST /early HTTP/1.1\r\nhost: example.com\r\ncontent-length: {}\r\n\r\n", body.len());
    wr.write_all(head.as_bytes()).await.unwrap();
    let writer = tokio::spawn(async move {
        wr.write_all(&body).await.unwrap();
        wr
    });
    let mut seen = Vec::new();
    read_until(&mut rd, &mut seen, "\r\n\r\n").await;
    assert!(seen.starts_with(b"HTTP/1.1 413"), "{}", String::from_utf8_lossy(&seen));

    // The gateway goes on taking the body after the answer, so the client can finish
    // sending it, and then use the same connection again.
    let mut wr = tokio::time::timeout(PATIENCE, writer).await.expect("the body was taken in full").unwrap();
    wr.write_all(b"GET / HTTP/1.1\r\nhost: example.com\r\n\r\n").await.unwrap();
    seen.clear();
    read_until(&mut rd, &mut seen, "\r\n\r\nok").await;
    assert!(seen.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&seen));
}

/// The same with `Connection: close`: the client's connection ends only once the body has
/// gone on to the backend whole.
#[tokio::test]
async fn a_last_request_answered_before_its_body_still_sends_the_body_whole() {
    let (backend, counts) = raw_backend(Mode::KeepAlive).await;
    let (_gw, port) = gateway_for(backend).await;
    let client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut rd, mut wr) = client.into_split();
    let body = vec![b'x'; 512 * 1024];
    let head = format!(
        "POST /early HTTP/1.1\r\nhost: example.com\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    wr.write_all(head.as_bytes()).await.unwrap();
    // Paced, so that the body is still coming in when the answer is out.
    let writer = tokio::spawn(async move {
        for piece in body.chunks(32 * 1024) {
            wr.write_all(piece).await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut seen = Vec::new();
    read_until(&mut rd, &mut seen, "\r\n\r\n").await;
    assert!(seen.starts_with(b"HTTP/1.1 413"), "{}", String::from_utf8_lossy(&seen));
    tokio::time::timeout(PATIENCE, writer).await.expect("the body was taken in full").unwrap().unwrap();
    let deadline = Instant::now() + PATIENCE;
    while counts.early_bodies.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the backend never got the whole body");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut rest = [0u8; 64];
    let end = tokio::time::timeout(PATIENCE, rd.read(&mut rest)).await.expect("the connection ends");
    assert!(matches!(end, Ok(0) | Err(_)), "nothing more is answered");
}

#[tokio::test]
async fn interim_answers_are_passed_over_and_ambiguous_ones_refused() {
    let (backend, counts) = raw_backend(Mode::KeepAlive).await;
    let (_gw, port) = gateway_for(backend).await;
    let (code, _, body) = request(req("GET", port, "/continue", Bytes::new())).await.unwrap();
    assert_eq!((code, body.as_str()), (200, "ok"), "the 100 is not the answer");
    assert_eq!(request(req("GET", port, "/", Bytes::new())).await.unwrap().2, "ok");
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 1, "after an interim answer the connection is reused");

    // Two lengths: which one is the body? Neither is guessed at.
    assert_eq!(request(req("GET", port, "/conflicting", Bytes::new())).await.unwrap().0, 502);
    assert_eq!(request(req("GET", port, "/", Bytes::new())).await.unwrap().2, "ok");
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 2, "the confused connection was dropped");

    // Chunked wins over Content-Length, and the connection that sent both is not used again.
    let (code, headers, body) = request(req("GET", port, "/both", Bytes::new())).await.unwrap();
    assert_eq!((code, body.as_str()), (200, "ok"));
    assert_ne!(headers.get("content-length").map(|v| v.as_bytes()), Some(&b"9"[..]));
    assert_eq!(request(req("GET", port, "/", Bytes::new())).await.unwrap().2, "ok");
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_request_lost_on_a_reused_connection_goes_again_only_when_that_is_safe() {
    let (backend, counts) = raw_backend(Mode::KeepAlive).await;
    let (_gw, port) = gateway_for(backend).await;
    // Each case first leaves an idle connection in the pool, then loses a request on it.
    let cases = [
        // Idempotent and without a body: sent again, on a new connection (lost there too).
        ("GET", Bytes::new(), 2),
        // Its body was sent: a second try would have none, so there is none.
        ("PUT", Bytes::from_static(b"some data"), 1),
        // Not idempotent, and its head reached the backend.
        ("POST", Bytes::new(), 1),
    ];
    for (method, body, expected) in cases {
        counts.vanished.store(0, Ordering::SeqCst);
        assert_eq!(request(req("GET", port, "/", Bytes::new())).await.unwrap().2, "ok");
        let started = Instant::now();
        let (code, _, _) = request(req(method, port, "/vanish", body)).await.unwrap();
        assert_eq!(code, 502, "{method}");
        assert!(started.elapsed() < Duration::from_secs(5), "{method} was answered at once");
        assert_eq!(counts.vanished.load(Ordering::SeqCst), expected, "{method}: times the backend read it");
    }
}

/// A backend that answers a chunked request at once and echoes each chunk as it comes:
/// the exchange is full duplex. It checks that the body reaches it chunked.
async fn chunk_echo_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((mut stream, _)) = listener.accept().await else { return };
        let mut buf = Vec::new();
        let Ok(Some(head)) = read_head(&mut stream, &mut buf, PATIENCE).await else { return };
        let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
        let reply = if chunked {
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        } else {
            "HTTP/1.1 400 Bad Request\r\n\r\n"
        };
        if stream.write_all(reply.as_bytes()).await.is_err() || !chunked {
            return;
        }
        loop {
            // One chunk: its size line, its data and CRLF, echoed as they are.
            let Some(line_end) = read_to(&mut stream, &mut buf, |b| b.windows(2).position(|w| w == b"\r\n")).await
            else {
                return;
            };
            let size = usize::from_str_radix(String::from_utf8_lossy(&buf[..line_end]).trim(), 16).unwrap_or(0);
            let total = line_end + 2 + size + 2;
            if read_to(&mut stream, &mut buf, |b| (b.len() >= total).then_some(total)).await.is_none() {
                return;
            }
            let chunk: Vec<u8> = buf.drain(..total).collect();
            if stream.write_all(&chunk).await.is_err() || size == 0 {
                return;
            }
        }
    });
    addr
}

/// Reads into `buf` until `found` finds something in it, within [`PATIENCE`].
async fn read_to(stream: &mut TcpStream, buf: &mut Vec<u8>, found: impl Fn(&[u8]) -> Option<usize>) -> Option<usize> {
    loop {
        if let Some(at) = found(buf) {
            return Some(at);
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(PATIENCE, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}

#[tokio::test]
async fn a_request_body_streams_on_after_the_answer_began() {
    let (_gw, port) = gateway_for(chunk_echo_backend().await).await;
    let client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut rd, mut wr) = client.into_split();
    wr.write_all(b"POST /echo HTTP/1.1\r\nhost: example.com\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    read_until(&mut rd, &mut seen, "hello").await;
    assert!(seen.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&seen));
    // The second chunk is sent only once the first came back: it can only arrive if the
    // gateway goes on sending the request body while it reads the response.
    wr.write_all(b"5\r\nworld\r\n0\r\n\r\n").await.unwrap();
    read_until(&mut rd, &mut seen, "world").await;
    read_until(&mut rd, &mut seen, "0\r\n\r\n").await;
}

/// Reads from `rd` into `seen` until it contains `marker`, within [`PATIENCE`].
async fn read_until(rd: &mut tokio::net::tcp::OwnedReadHalf, seen: &mut Vec<u8>, marker: &str) {
    let deadline = Instant::now() + PATIENCE;
    while !String::from_utf8_lossy(seen).contains(marker) {
        assert!(Instant::now() < deadline, "no {marker:?} in {}", String::from_utf8_lossy(seen));
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(PATIENCE, rd.read(&mut chunk)).await.expect("read in time").unwrap();
        assert!(n > 0, "closed; got {}", String::from_utf8_lossy(seen));
        seen.extend_from_slice(&chunk[..n]);
    }
}

/// An h2c backend that answers one request per connection, then closes it gracefully
/// (GOAWAY), as servers rotating their connections do. Counts the connections.
async fn h2c_one_request_per_connection() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                // The request, then GOAWAY, then the response: the gateway hears of the close
                // before it can send another request.
                let (asked, closing) = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Notify::new()));
                let (ask, closed) = (asked.clone(), closing.clone());
                let svc = hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                    let (ask, closed) = (ask.clone(), closed.clone());
                    async move {
                        ask.notify_one();
                        closed.notified().await;
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from("ok"))))
                    }
                });
                let conn = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
                let mut conn = std::pin::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => return,
                    _ = asked.notified() => {
                        conn.as_mut().graceful_shutdown();
                        closing.notify_one();
                    }
                }
                let _ = tokio::time::timeout(PATIENCE, conn).await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn an_http2_backend_rotating_its_connections_loses_no_request() {
    let (backend, accepted) = h2c_one_request_per_connection().await;
    let port = free_port();
    let config = format!(
        "{CLASS}{}{}{}",
        http_gateway(port),
        service_with("svc", Some("kubernetes.io/h2c"), &[(backend, true)]),
        route("r", "/", "svc")
    );
    let _gw = Gateway::start(&config).await;
    for round in 0..5 {
        let (code, _, body) = request(req("GET", port, "/", Bytes::new())).await.unwrap();
        assert_eq!((code, body.as_str()), (200, "ok"), "request {round}");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 5, "one connection per request, as the backend wants");
}

#[tokio::test]
async fn an_external_name_backend_is_resolved_and_its_connections_pooled() {
    let (backend, counts) = raw_backend(Mode::KeepAlive).await;
    let port = free_port();
    // An address literal resolves without a DNS server, through the same lookup path.
    let config = format!(
        "{CLASS}{}---
apiVersion: v1
kind: Service
metadata:
  name: svc
spec:
  type: ExternalName
  externalName: \"{}\"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: r
spec:
  parentRefs:
    - name: gw
  rules:
    - backendRefs:
        - name: svc
          port: {}
",
        http_gateway(port),
        backend.ip(),
        backend.port()
    );
    let _gw = Gateway::start(&config).await;
    for _ in 0..5 {
        assert_eq!(request(req("GET", port, "/", Bytes::new())).await.unwrap().2, "ok");
    }
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 1, "one pooled connection to the resolved address");
}

/// A backend that streams every request body back as its response body, as it comes.
async fn streaming_echo_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(req.into_body()))
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn large_bodies_stream_through_intact_both_ways() {
    let (_gw, port) = gateway_for(streaming_echo_backend().await).await;
    // Printable (the client reads text), and with a period no piece size divides, so a lost,
    // doubled or reordered piece shows.
    let body: Bytes = (0..8 * 1024 * 1024u32).map(|i| b'!' + (i % 89) as u8).collect::<Vec<_>>().into();

    // With a length: Content-Length both ways.
    let (code, headers, echoed) = request(req("PUT", port, "/", body.clone())).await.unwrap();
    assert_eq!(code, 200);
    assert_eq!(headers["content-length"], body.len().to_string());
    assert!(echoed.as_bytes() == body, "the Content-Length body came back changed");

    // Without one: chunked both ways, sent in uneven pieces, then a second exchange on
    // the same client connection.
    let client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut rd, mut wr) = client.into_split();
    let sent = body.clone();
    let writer = tokio::spawn(async move {
        wr.write_all(b"POST / HTTP/1.1\r\nhost: example.com\r\ntransfer-encoding: chunked\r\n\r\n").await.unwrap();
        for piece in sent.chunks(100_003) {
            wr.write_all(format!("{:x}\r\n", piece.len()).as_bytes()).await.unwrap();
            wr.write_all(piece).await.unwrap();
            wr.write_all(b"\r\n").await.unwrap();
        }
        wr.write_all(b"0\r\n\r\n").await.unwrap();
        wr
    });
    let mut raw = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    let decoded = loop {
        assert!(Instant::now() < deadline, "the chunked echo did not end");
        let mut chunk = vec![0u8; 65536];
        let n = tokio::time::timeout(PATIENCE, rd.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "closed early");
        raw.extend_from_slice(&chunk[..n]);
        if let Some(decoded) = dechunk(&raw) {
            break decoded;
        }
    };
    assert!(decoded == body, "the chunked body came back changed ({} bytes of {})", decoded.len(), body.len());
    let mut wr = tokio::time::timeout(PATIENCE, writer).await.unwrap().unwrap();
    wr.write_all(b"GET / HTTP/1.1\r\nhost: example.com\r\ncontent-length: 2\r\n\r\nhi").await.unwrap();
    let mut seen = Vec::new();
    read_until(&mut rd, &mut seen, "\r\n\r\nhi").await;
}

/// The body of the chunked response in `raw`, once it is complete.
fn dechunk(raw: &[u8]) -> Option<Vec<u8>> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    assert!(raw.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&raw[..head_end]));
    let (mut at, mut body) = (head_end, Vec::new());
    loop {
        let line_end = at + raw[at..].windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&raw[at..line_end]).unwrap(), 16).unwrap();
        if size == 0 {
            return Some(body);
        }
        let data = line_end + 2;
        if raw.len() < data + size + 2 {
            return None;
        }
        body.extend_from_slice(&raw[data..data + size]);
        at = data + size + 2;
    }
}

#[tokio::test]
async fn a_client_expecting_100_continue_gets_it_and_its_body_through() {
    // A backend that reads the whole body before it answers (hyper's, which itself answers
    // the forwarded expectation with a 100 that the gateway passes over).
    let backend = http_server(|req: Request<hyper::body::Incoming>| async move {
        let body = http_body_util::BodyExt::collect(req.into_body()).await.map(|b| b.to_bytes()).unwrap_or_default();
        hyper::Response::new(Full::new(body))
    })
    .await;
    let (_gw, port) = gateway_for(backend).await;
    let client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut rd, mut wr) = client.into_split();
    wr.write_all(b"PUT / HTTP/1.1\r\nhost: example.com\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n")
        .await
        .unwrap();
    // The body goes only once the gateway has said to go on.
    let mut seen = Vec::new();
    read_until(&mut rd, &mut seen, "100 Continue\r\n\r\n").await;
    wr.write_all(b"hello").await.unwrap();
    read_until(&mut rd, &mut seen, "hello").await;
    let text = String::from_utf8_lossy(&seen);
    assert!(text.contains("HTTP/1.1 200"), "{text}");
}

/// A body of unknown length goes to an HTTP/1.1 client in chunks of our own, and to an
/// HTTP/1.0 client (which has no chunks) up to the close of the connection.
#[tokio::test]
async fn an_answer_of_unknown_length_is_chunked_or_ends_with_the_connection() {
    let (backend, _) = raw_backend(Mode::KeepAlive).await;
    let (_gw, port) = gateway_for(backend).await;
    let proxy = SocketAddr::from(([127, 0, 0, 1], port));

    let reply = raw_exchange(proxy, b"GET /chunked HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n").await;
    let (head, body) = reply.text.split_once("\r\n\r\n").unwrap();
    assert!(head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("content-length"), "{head}");
    assert_eq!(body, "2\r\nok\r\n3\r\n-ch\r\n0\r\n\r\n");

    let reply = raw_exchange(proxy, b"GET /chunked HTTP/1.0\r\nHost: example.com\r\n\r\n").await;
    assert!(reply.closed, "{reply:?}");
    let (head, body) = reply.text.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    assert!(!head.contains("transfer-encoding") && !head.contains("content-length"), "{head}");
    assert_eq!(body, "ok-ch");
}

/// A client's request trailers do not reach the backend: they would get past every header
/// policy (X-Forwarded-*, what ExternalAuth grants, header filters).
#[tokio::test]
async fn request_trailers_are_not_passed_on() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let Ok((mut stream, _)) = listener.accept().await else { return };
        let mut seen = Vec::new();
        let mut chunk = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).ends_with("0\r\n\r\n") {
            match tokio::time::timeout(PATIENCE, stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&chunk[..n]),
                _ => break,
            }
        }
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
        let _ = seen_tx.send(String::from_utf8_lossy(&seen).into_owned());
    });
    let (_gw, port) = gateway_for(backend).await;
    let reply = raw_exchange(
        SocketAddr::from(([127, 0, 0, 1], port)),
        b"POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          2\r\nhi\r\n0\r\nX-User: admin\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status(), Some(200), "{reply:?}");
    let seen = tokio::time::timeout(PATIENCE, seen_rx).await.unwrap().unwrap();
    assert!(seen.ends_with("2\r\nhi\r\n0\r\n\r\n"), "the body went on, without its trailers: {seen:?}");
    assert!(!seen.to_ascii_lowercase().contains("x-user"), "{seen:?}");
}
