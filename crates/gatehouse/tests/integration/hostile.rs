//! Hostile clients: oversized or malformed requests are refused without reaching a backend
//! and without hurting other clients; slow clients are cut off; paths are normalized before
//! routing so that dot segments cannot reach around a route.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use tokio::io::AsyncWriteExt;

use super::common::*;

/// A gateway routing `/public` and `/admin` to two recording backends.
async fn setup() -> (Gateway, SocketAddr, Seen, Seen) {
    let port = free_port();
    let (public, public_seen) = recording_backend("public").await;
    let (admin, admin_seen) = recording_backend("admin").await;
    let config = format!(
        "{CLASS}{}{}{}{}{}",
        http_gateway(port),
        service("public", public),
        service("admin", admin),
        route("public", "/public", "public"),
        route("admin", "/admin", "admin"),
    );
    let gw = Gateway::start(&config).await;
    (gw, SocketAddr::from(([127, 0, 0, 1], port)), public_seen, admin_seen)
}

async fn still_serving(proxy: SocketAddr) {
    let (code, seen) = get_json(proxy.port(), "/public/ok", "example.com").await;
    assert_eq!((code, seen["backend"].as_str()), (200, Some("public")), "another client is still served");
}

/// Asserts that the backend got no request but those of [`still_serving`].
fn nothing_forwarded(seen: &Seen, what: &str) {
    let seen = seen.lock().unwrap();
    let others: Vec<_> = seen.iter().filter(|r| r["path"] != "/public/ok").collect();
    assert!(others.is_empty(), "{what} was forwarded: {others:?}");
}

#[tokio::test]
async fn oversized_headers_get_431_and_others_are_still_served() {
    let (_gw, proxy, public_seen, _) = setup().await;
    let big = "a".repeat(80 * 1024);
    let req = format!("GET /public/x HTTP/1.1\r\nHost: example.com\r\nX-Big: {big}\r\n\r\n");
    let reply = raw_exchange(proxy, req.as_bytes()).await;
    assert_eq!(reply.status(), Some(431), "{:?}", &reply.text.get(..200));
    assert!(reply.closed);

    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let req = format!("GET /public/x HTTP/1.1\r\nHost: example.com\r\n{many}\r\n");
    let reply = raw_exchange(proxy, req.as_bytes()).await;
    assert_eq!(reply.status(), Some(431), "150 headers: {:?}", reply.text.get(..200));

    nothing_forwarded(&public_seen, "an oversized request");
    still_serving(proxy).await;
}

/// Request smuggling: a body framed both by Content-Length and Transfer-Encoding. The body,
/// read by Content-Length, hides a second request; read as chunked it is empty. Such a request
/// is refused (400) and its connection closed (RFC 9112 §6.1): the hidden one is never served,
/// and no backend sees either.
const SMUGGLED: &str = "GET /admin/secret HTTP/1.1\r\nHost: example.com\r\n\r\n";

fn smuggling_request() -> String {
    let body = format!("0\r\n\r\n{SMUGGLED}");
    format!(
        "POST /public/x HTTP/1.1\r\nHost: example.com\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn content_length_with_transfer_encoding_cannot_smuggle_a_request() {
    let (_gw, proxy, public_seen, admin_seen) = setup().await;
    let reply = raw_exchange(proxy, smuggling_request().as_bytes()).await;
    assert_eq!(reply.status(), Some(400), "{reply:?}");
    assert!(reply.closed, "the connection closes after such a request: {reply:?}");
    assert_eq!(reply.text.matches("HTTP/1.1 ").count(), 1, "only one response: {reply:?}");
    assert!(admin_seen.lock().unwrap().is_empty(), "the smuggled request was served");
    nothing_forwarded(&public_seen, "a request framed both ways");
    still_serving(proxy).await;
}

#[tokio::test]
async fn conflicting_content_lengths_are_refused() {
    let (_gw, proxy, public_seen, _) = setup().await;
    for framing in ["Content-Length: 3\r\nContent-Length: 5", "Content-Length: 3, 5"] {
        let req = format!("POST /public/x HTTP/1.1\r\nHost: example.com\r\n{framing}\r\n\r\nabcde");
        let reply = raw_exchange(proxy, req.as_bytes()).await;
        assert_eq!(reply.status(), Some(400), "{framing:?}: {reply:?}");
    }
    nothing_forwarded(&public_seen, "a request with conflicting Content-Lengths");
    still_serving(proxy).await;
}

#[tokio::test]
async fn nul_and_bare_cr_in_headers_are_refused() {
    let (_gw, proxy, public_seen, _) = setup().await;
    for bad in [&b"X-Bad: a\0b\r\n"[..], b"X-Bad: a\rb\r\n", b"X-Bad\0: v\r\n", b"X-Bad: v\rX-Injected: 1\r\n"] {
        let mut req = b"GET /public/x HTTP/1.1\r\nHost: example.com\r\n".to_vec();
        req.extend_from_slice(bad);
        req.extend_from_slice(b"Connection: close\r\n\r\n");
        let reply = raw_exchange(proxy, &req).await;
        assert_eq!(reply.status(), Some(400), "{:?}: {reply:?}", String::from_utf8_lossy(bad));
    }
    nothing_forwarded(&public_seen, "a request with NUL or a bare CR in a header");
    still_serving(proxy).await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let (_gw, proxy, public_seen, _) = setup().await;
    let started = Instant::now();
    let mut slow = tokio::net::TcpStream::connect(proxy).await.unwrap();
    slow.write_all(b"GET /public/slow HTTP/1.1\r\nHost: example.com\r\n").await.unwrap();
    // Keep trickling header bytes, never the blank line.
    let trickle = tokio::spawn(async move {
        for i in 0.. {
            if slow.write_all(format!("X-Slow-{i}: y\r\n").as_bytes()).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            if started.elapsed() > Duration::from_secs(15) {
                return Err(slow);
            }
        }
        Ok(started.elapsed())
    });
    // Meanwhile others are served.
    tokio::time::sleep(Duration::from_millis(300)).await;
    still_serving(proxy).await;
    let cut = tokio::time::timeout(Duration::from_secs(16), trickle).await.expect("bounded").unwrap();
    let Ok(after) = cut else { panic!("the slow client was still connected after 15 s") };
    assert!(after >= Duration::from_secs(5), "cut off too early ({after:?})");
    nothing_forwarded(&public_seen, "an unfinished request");
    still_serving(proxy).await;
}

/// Header read timeouts start only once hyper knows the protocol (hyper-util's auto builder
/// reads the first bytes with no deadline): a connection that sends nothing must not be held
/// forever either.
#[tokio::test]
async fn a_client_that_sends_nothing_is_disconnected() {
    let (_gw, proxy, _, _) = setup().await;
    let mut idle = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let started = Instant::now();
    let reply = read_until_closed(&mut idle, Duration::from_secs(15)).await;
    assert!(!reply.timed_out, "a connection sending nothing was held for {:?}", started.elapsed());
}

#[tokio::test]
async fn a_client_that_stalls_in_the_h2_preface_is_disconnected() {
    let (_gw, proxy, _, _) = setup().await;
    let mut partial = tokio::net::TcpStream::connect(proxy).await.unwrap();
    partial.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let started = Instant::now();
    let reply = read_until_closed(&mut partial, Duration::from_secs(15)).await;
    assert!(!reply.timed_out, "a connection stalled in the h2 preface was held for {:?}", started.elapsed());
}

/// hyper's HTTP/2 server has no idle or header timeout: a connection with no stream open is
/// ended by the socket's sweep after a minute, even from a client that answers every ping,
/// and so is one whose head never ends.
#[tokio::test]
async fn an_http2_connection_with_no_stream_open_is_ended_after_a_minute() {
    let (_gw, proxy, public_seen, _) = setup().await;
    // A real HTTP/2 client (it answers the gateway's pings), idle after one request.
    let tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let idle = tokio::spawn(connection);
    let request = http::Request::get(format!("http://example.com:{}/public/ok", proxy.port()))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = tokio::time::timeout(PATIENCE, sender.send_request(request)).await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    drop(response);
    // A HEADERS frame on stream 1 without END_HEADERS: the rest of the head never comes.
    let mut slow = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let frames: [&[u8]; 3] =
        [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", &[0, 0, 0, 4, 0, 0, 0, 0, 0], &[0, 0, 1, 1, 0, 0, 0, 0, 1, 0x82]];
    slow.write_all(&frames.concat()).await.unwrap();
    let started = Instant::now();
    still_serving(proxy).await;
    let (idle, slow) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(75), idle),
        read_until_closed(&mut slow, Duration::from_secs(75)),
    );
    assert!(idle.is_ok() && slow.closed, "held for {:?}: {slow:?}", started.elapsed());
    // Not cut off early: clients keep HTTP/2 connections for calls to come.
    assert!(started.elapsed() >= Duration::from_secs(50), "ended after {:?}", started.elapsed());
    drop(sender);
    still_serving(proxy).await;
    nothing_forwarded(&public_seen, "a head that never ended");
}

#[tokio::test]
async fn dot_segments_are_resolved_before_routing() {
    let (_gw, proxy, public_seen, admin_seen) = setup().await;
    for path in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
        "/public/./../admin",
        "/public/.%2e/admin",
        "/public/x/../../admin",
    ] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n");
        let reply = raw_exchange(proxy, req.as_bytes()).await;
        assert_eq!(reply.status(), Some(200), "{path}: {reply:?}");
        let body = reply.text.split("\r\n\r\n").nth(1).unwrap_or("");
        let seen: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        assert_eq!(seen["backend"], "admin", "{path} is /admin: {body}");
        assert_eq!(seen["path"], "/admin", "{path}");
    }
    nothing_forwarded(&public_seen, "a path that resolves to /admin");
    assert_eq!(admin_seen.lock().unwrap().len(), 6);

    // The other way round: a path under /admin that resolves into /public goes to /public.
    let reply =
        raw_exchange(proxy, b"GET /admin/%2e%2e/public/y HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
            .await;
    assert!(reply.text.contains("\"backend\":\"public\""), "{reply:?}");
    // An encoded slash is data, not structure: no route matches it.
    let reply =
        raw_exchange(proxy, b"GET /public%2f..%2fadmin HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
            .await;
    assert_eq!(reply.status(), Some(404), "{reply:?}");
}

/// A gateway with two routes told apart by hostname only.
async fn by_host() -> (Gateway, SocketAddr, Seen, Seen) {
    let port = free_port();
    let (public, public_seen) = recording_backend("public").await;
    let (internal, internal_seen) = recording_backend("internal").await;
    let r = |name: &str, host: &str| {
        route_spec(
            name,
            &format!(
                "  hostnames: [\"{host}\"]\n  rules:\n    - backendRefs:\n        - name: {name}\n          port: 80\n"
            ),
        )
    };
    let config = format!(
        "{CLASS}{}{}{}{}{}",
        http_gateway(port),
        service("public", public),
        service("internal", internal),
        r("public", "public.example"),
        r("internal", "internal.example"),
    );
    let gw = Gateway::start(&config).await;
    (gw, SocketAddr::from(([127, 0, 0, 1], port)), public_seen, internal_seen)
}

/// RFC 9112 §3.2: a request with more than one Host is answered 400; otherwise the proxy
/// routes on one Host and the backend may read another.
#[tokio::test]
async fn a_request_with_two_host_headers_is_refused() {
    let (_gw, proxy, public_seen, internal_seen) = by_host().await;
    let reply = raw_exchange(
        proxy,
        b"GET /x HTTP/1.1\r\nHost: public.example\r\nHost: internal.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status(), Some(400), "two Host headers: {reply:?}");
    nothing_forwarded(&public_seen, "a request with two Host headers");
    nothing_forwarded(&internal_seen, "a request with two Host headers");
}

/// What follows a malformed request on its connection is not read as a request: the 400
/// closes the connection, and a request pipelined behind it goes nowhere.
#[tokio::test]
async fn a_request_refused_as_malformed_ends_its_connection() {
    let (_gw, proxy, public_seen, internal_seen) = by_host().await;
    let reply = raw_exchange(
        proxy,
        b"GET /x HTTP/1.1\r\nHost: public.example\r\nHost: internal.example\r\n\r\n\
          GET /x HTTP/1.1\r\nHost: public.example\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status(), Some(400), "{reply:?}");
    assert!(reply.closed, "{reply:?}");
    assert_eq!(reply.text.matches("HTTP/1.1 ").count(), 1, "one answer only: {reply:?}");
    nothing_forwarded(&public_seen, "a request behind a malformed one");
    nothing_forwarded(&internal_seen, "a request behind a malformed one");
}

/// RFC 9112 §3.2: an HTTP/1.1 request without Host is answered 400.
#[tokio::test]
async fn an_http11_request_without_host_is_refused() {
    let (_gw, proxy, public_seen, _) = setup().await;
    let reply = raw_exchange(proxy, b"GET /public/x HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(reply.status(), Some(400), "no Host header: {reply:?}");
    nothing_forwarded(&public_seen, "an HTTP/1.1 request without Host");
}

/// RFC 9112 §3.2.2: for an absolute-form request target the Host header is ignored and
/// replaced by the target's authority, so the backend sees the host the request was routed by.
#[tokio::test]
async fn an_absolute_form_target_routes_and_forwards_by_its_authority() {
    let (_gw, proxy, _, internal_seen) = by_host().await;
    let reply = raw_exchange(
        proxy,
        b"GET http://public.example/x HTTP/1.1\r\nHost: internal.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status(), Some(200), "{reply:?}");
    let body = reply.text.split("\r\n\r\n").nth(1).unwrap_or("");
    let seen: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    assert_eq!(seen["backend"], "public", "{body}");
    assert!(internal_seen.lock().unwrap().is_empty());
    assert_eq!(seen["path"], "/x", "{body}");
    assert!(
        seen["headers"]["host"] == "public.example",
        "the backend must see the host it was routed by, not the ignored Host header: {body}"
    );
}

/// Waiting for a request head is bounded between requests too, but a request in progress is
/// not a wait: a slow answer and a WebSocket tunnel outlive the bound.
#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_but_slow_answers_and_tunnels_are_not() {
    use tokio::io::AsyncReadExt;
    let port = free_port();
    let (fast, _) = recording_backend("fast").await;
    let slow = slow_backend(Duration::from_secs(12)).await;
    let ws = upgrade_echo_backend().await;
    let config = format!(
        "{CLASS}{}{}{}{}{}{}{}",
        http_gateway(port),
        service("fast", fast),
        service("slow", slow),
        service("ws", ws),
        route("fast", "/fast", "fast"),
        route("slow", "/slow", "slow"),
        route("ws", "/ws", "ws"),
    );
    let _gw = Gateway::start(&config).await;
    let started = Instant::now();

    // One request, then silence on the same connection.
    let mut idle = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    idle.write_all(b"GET /fast/x HTTP/1.1\r\nHost: example.com\r\n\r\n").await.unwrap();
    let idle_closed = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(20), idle.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return (started.elapsed(), seen),
                Ok(Ok(n)) => seen.extend_from_slice(&chunk[..n]),
                Err(_) => panic!("an idle connection was held for 20 s"),
            }
        }
    });

    // A tunnel, quiet for longer than the bound, then used.
    let mut tunnel = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tunnel
        .write_all(b"GET /ws HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(PATIENCE, tunnel.read(&mut byte)).await.expect("101 in time").unwrap();
        assert_eq!(n, 1, "closed before the 101: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));

    // An answer that takes longer than the bound (and than the test clients' patience).
    let mut waiting = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    waiting.write_all(b"GET /slow HTTP/1.1\r\nHost: example.com\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    while !answer.ends_with(b"slow") {
        let mut chunk = [0u8; 1024];
        let n =
            tokio::time::timeout(Duration::from_secs(20), waiting.read(&mut chunk)).await.expect("answered").unwrap();
        assert!(n > 0, "a request in progress was cut off: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&chunk[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));

    tunnel.write_all(b"still here").await.unwrap();
    let mut echoed = [0u8; 10];
    tokio::time::timeout(PATIENCE, tunnel.read_exact(&mut echoed)).await.expect("echo in time").unwrap();
    assert_eq!(&echoed, b"still here", "the tunnel outlived the head wait");

    let (after, seen) = idle_closed.await.unwrap();
    assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"), "the request was answered first");
    assert!(after >= Duration::from_secs(5) && after < Duration::from_secs(15), "closed after {after:?}");
}

/// A client that asks for a large response and takes none of it is cut off once it has
/// taken nothing for 30 s, so that it holds neither its connection nor the backend's.
#[tokio::test]
async fn a_client_that_never_reads_is_cut_off() {
    const SIZE: usize = 64 << 20;
    let big = http_server(|_req: hyper::Request<hyper::body::Incoming>| async {
        hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(vec![b'x'; SIZE])))
    })
    .await;
    let port = free_port();
    let config = format!("{CLASS}{}{}{}", http_gateway(port), service("big", big), route("big", "/", "big"));
    let _gw = Gateway::start(&config).await;
    let mut client = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    client.write_all(b"GET /big HTTP/1.1\r\nHost: example.com\r\n\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_secs(36)).await;
    // Whatever the socket buffers held comes, then the end: the rest was never sent.
    let reply = read_until_closed(&mut client, PATIENCE).await;
    assert!(reply.text.starts_with("HTTP/1.1 200"), "{:?}", reply.text.get(..100));
    assert!(reply.closed, "a client that took nothing for 36 s is still served");
    assert!(reply.text.len() < SIZE, "the whole response was sent");
}
