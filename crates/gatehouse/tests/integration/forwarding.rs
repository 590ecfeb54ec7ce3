//! What a backend receives: forwarding headers, no hop-by-hop headers, the Host unchanged;
//! request timeouts; HTTP/2 on either side; WebSocket upgrades.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::common::*;

#[tokio::test]
async fn the_backend_gets_forwarding_headers_and_the_host_unchanged() {
    let port = free_port();
    let (addr, _) = recording_backend("echo").await;
    let config = format!("{CLASS}{}{}{}", http_gateway(port), service("svc", addr), route("r", "/", "svc"));
    let _gw = Gateway::start(&config).await;

    let (code, seen) = get_json(port, "/x", "Some.Host.Example:1234").await;
    assert_eq!(code, 200);
    let h = &seen["headers"];
    assert_eq!(h["host"], "Some.Host.Example:1234", "Host passes unchanged: {h}");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{h}");
    assert_eq!(h["x-forwarded-proto"], "http", "{h}");
    assert_eq!(h["x-forwarded-host"], "Some.Host.Example:1234", "{h}");

    // An X-Forwarded-For from the client is kept and the client's address appended.
    let req = hyper::Request::get(format!("http://127.0.0.1:{port}/x"))
        .header("host", "example.com")
        .header("x-forwarded-for", "203.0.113.7")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (_, _, body) = request(req).await.unwrap();
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["headers"]["x-forwarded-for"], "203.0.113.7, 127.0.0.1");

    // Sent twice, it is one list: every hop is kept, in order.
    let req = hyper::Request::get(format!("http://127.0.0.1:{port}/x"))
        .header("host", "example.com")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-for", "198.51.100.2")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (_, _, body) = request(req).await.unwrap();
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["headers"]["x-forwarded-for"], "203.0.113.7, 198.51.100.2, 127.0.0.1");
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded() {
    let port = free_port();
    let (addr, _) = recording_backend("echo").await;
    let config = format!("{CLASS}{}{}{}", http_gateway(port), service("svc", addr), route("r", "/", "svc"));
    let _gw = Gateway::start(&config).await;

    let req = hyper::Request::get(format!("http://127.0.0.1:{port}/hop"))
        .header("host", "example.com")
        .header("connection", "keep-alive, X-Private")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("te", "trailers")
        // An Upgrade header without `Connection: upgrade` is no upgrade: it is dropped.
        .header("upgrade", "websocket")
        .header("x-private", "secret")
        .header("x-kept", "yes")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (code, _, body) = request(req).await.unwrap();
    assert_eq!(code, 200, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    let h = &seen["headers"];
    for name in ["connection", "keep-alive", "proxy-connection", "te", "upgrade", "x-private"] {
        assert!(h.get(name).is_none(), "{name} reached the backend: {h}");
    }
    assert_eq!(h["x-kept"], "yes");
}

#[tokio::test]
async fn hop_by_hop_headers_of_the_response_are_not_returned() {
    // A backend whose response names a private header in Connection.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nConnection: close, X-Backend-Private\r\nKeep-Alive: timeout=5\r\n\
                          X-Backend-Private: secret\r\nX-Public: yes\r\nContent-Length: 2\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    let port = free_port();
    let config = format!("{CLASS}{}{}{}", http_gateway(port), service("svc", addr), route("r", "/", "svc"));
    let _gw = Gateway::start(&config).await;
    let (code, headers, body) = get_host(&format!("http://127.0.0.1:{port}/"), "example.com").await.unwrap();
    assert_eq!((code, body.as_str()), (200, "ok"));
    assert_eq!(headers.get("x-public").unwrap(), "yes");
    assert!(headers.get("x-backend-private").is_none(), "{headers:?}");
    assert!(headers.get("keep-alive").is_none(), "{headers:?}");
}

#[tokio::test]
async fn a_request_timeout_answers_504_against_a_slow_backend() {
    let port = free_port();
    let slow = slow_backend(Duration::from_secs(8)).await;
    let (fast, _) = recording_backend("fast").await;
    let rules = "  rules:
    - matches:
        - path:
            type: PathPrefix
            value: /slow
      timeouts:
        request: 500ms
      backendRefs:
        - name: slow
          port: 80
    - matches:
        - path:
            type: PathPrefix
            value: /backend-timeout
      timeouts:
        request: 5s
        backendRequest: 300ms
      backendRefs:
        - name: slow
          port: 80
    - matches:
        - path:
            type: PathPrefix
            value: /fast
      timeouts:
        request: 2s
      backendRefs:
        - name: fast
          port: 80
";
    let config = format!(
        "{CLASS}{}{}{}{}",
        http_gateway(port),
        service("slow", slow),
        service("fast", fast),
        route_spec("r", rules)
    );
    let _gw = Gateway::start(&config).await;
    for (path, bound) in [("/slow", Duration::from_millis(3000)), ("/backend-timeout", Duration::from_millis(3000))] {
        let started = Instant::now();
        let (code, _) = get_json(port, path, "example.com").await;
        let took = started.elapsed();
        assert_eq!(code, 504, "{path}");
        assert!(took >= Duration::from_millis(250) && took < bound, "{path} answered after {took:?}");
    }
    assert_eq!(get_json(port, "/fast", "example.com").await.0, 200);
}

fn h2c_client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).http2_only(true).build_http()
}

async fn h2c_get(url: &str) -> (http::Version, u16, serde_json::Value) {
    let resp = tokio::time::timeout(PATIENCE, h2c_client().get(url.parse().unwrap())).await.unwrap().unwrap();
    let (version, code) = (resp.version(), resp.status().as_u16());
    let body = tokio::time::timeout(PATIENCE, resp.into_body().collect()).await.unwrap().unwrap().to_bytes();
    (version, code, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn an_h2c_prior_knowledge_client_is_served() {
    let port = free_port();
    let (addr, _) = recording_backend("echo").await;
    let config = format!("{CLASS}{}{}{}", http_gateway(port), service("svc", addr), route("r", "/", "svc"));
    let _gw = Gateway::start(&config).await;
    let (version, code, seen) = h2c_get(&format!("http://127.0.0.1:{port}/h2c?x=1")).await;
    assert_eq!((version, code), (http::Version::HTTP_2, 200));
    assert_eq!(seen["path"], "/h2c?x=1");
    assert_eq!(seen["version"], "HTTP/1.1", "a plain Service port is spoken to in HTTP/1.1");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "http");
}

/// HTTP/2 carries the host in `:authority`, not in a Host header; the backend must still get
/// the client's host (RFC 9113 §8.3.1), not the endpoint's address.
#[tokio::test]
async fn the_authority_of_an_h2c_request_reaches_the_backend_as_host() {
    let port = free_port();
    let (addr, _) = recording_backend("echo").await;
    let config = format!("{CLASS}{}{}{}", http_gateway(port), service("svc", addr), route("r", "/", "svc"));
    let _gw = Gateway::start(&config).await;
    // A raw h2 request without a Host header: only :authority names the host.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("http://app.example:8080/h2c").body(Full::new(Bytes::new())).unwrap();
    let resp = tokio::time::timeout(PATIENCE, sender.send_request(req)).await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let body = tokio::time::timeout(PATIENCE, resp.into_body().collect()).await.unwrap().unwrap().to_bytes();
    let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["headers"]["host"], "app.example:8080", "{seen}");
    assert_eq!(seen["headers"]["x-forwarded-host"], "app.example:8080", "{seen}");
}

#[tokio::test]
async fn app_protocol_h2c_makes_the_upstream_request_http2() {
    let port = free_port();
    let (addr, _) = recording_backend("echo").await;
    let config = format!(
        "{CLASS}{}{}{}",
        http_gateway(port),
        service_with("svc", Some("kubernetes.io/h2c"), &[(addr, true)]),
        route("r", "/", "svc")
    );
    let _gw = Gateway::start(&config).await;
    let (code, seen) = get_json(port, "/up", "example.com").await;
    assert_eq!(code, 200);
    assert_eq!(seen["version"], "HTTP/2.0", "{seen}");
    assert_eq!(seen["path"], "/up");
    // The client's host is the upstream request's :authority, not the endpoint's address.
    assert_eq!(seen["authority"], "example.com", "{seen}");
    let (version, code, seen) = h2c_get(&format!("http://127.0.0.1:{port}/both")).await;
    assert_eq!((version, code), (http::Version::HTTP_2, 200));
    assert_eq!(seen["version"], "HTTP/2.0");
}

/// Sends a WebSocket handshake on a raw connection; the response head and the stream.
async fn upgrade(port: u16, path: &str) -> (String, tokio::net::TcpStream) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: ws.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(PATIENCE, s.read(&mut byte)).await.expect("response head in time").unwrap();
        assert!(n == 1, "closed before the end of the response head: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    (String::from_utf8(head).unwrap(), s)
}

#[tokio::test]
async fn a_websocket_upgrade_is_proxied_and_bytes_flow_both_ways() {
    let port = free_port();
    let backend = upgrade_echo_backend().await;
    let rules = "  rules:
    - matches:
        - path:
            type: PathPrefix
            value: /plain
      backendRefs:
        - name: plain
          port: 80
    - matches:
        - path:
            type: PathPrefix
            value: /ws
      backendRefs:
        - name: ws
          port: 80
";
    let config = format!(
        "{CLASS}{}{}{}{}",
        http_gateway(port),
        service("plain", backend),
        service_with("ws", Some("kubernetes.io/ws"), &[(backend, true)]),
        route_spec("r", rules)
    );
    let _gw = Gateway::start(&config).await;
    for path in ["/plain", "/ws"] {
        let (head, mut s) = upgrade(port, path).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{path}: {head}");
        assert!(head.to_ascii_lowercase().contains("upgrade: websocket"), "{path}: {head}");
        for msg in [&b"hello"[..], b"\x81\x05world", &[0u8, 255, 10, 13]] {
            s.write_all(msg).await.unwrap();
            let mut back = vec![0u8; msg.len()];
            tokio::time::timeout(PATIENCE, s.read_exact(&mut back)).await.expect("echo in time").unwrap();
            assert_eq!(back, msg, "{path}");
        }
    }
}

#[tokio::test]
async fn request_bodies_pass_intact_in_both_protocols() {
    let port = free_port();
    let (addr, _) = recording_backend("echo").await;
    let rules = "  rules:
    - matches:
        - path:
            type: PathPrefix
            value: /h1
      backendRefs:
        - name: h1
          port: 80
    - matches:
        - path:
            type: PathPrefix
            value: /h2
      backendRefs:
        - name: h2
          port: 80
";
    let config = format!(
        "{CLASS}{}{}{}{}",
        http_gateway(port),
        service("h1", addr),
        service_with("h2", Some("kubernetes.io/h2c"), &[(addr, true)]),
        route_spec("r", rules)
    );
    let _gw = Gateway::start(&config).await;
    let payload: String = (0..200_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    for path in ["/h1", "/h2"] {
        for h2_client in [false, true] {
            let req = hyper::Request::post(format!("http://127.0.0.1:{port}{path}"))
                .body(Full::new(Bytes::from(payload.clone())))
                .unwrap();
            let resp = if h2_client {
                tokio::time::timeout(PATIENCE, h2c_client().request(req)).await.unwrap().unwrap()
            } else {
                let client = Client::builder(TokioExecutor::new()).build_http();
                tokio::time::timeout(PATIENCE, client.request(req)).await.unwrap().unwrap()
            };
            assert_eq!(resp.status(), 200);
            let body = tokio::time::timeout(PATIENCE, resp.into_body().collect()).await.unwrap().unwrap().to_bytes();
            let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(seen["method"], "POST");
            assert!(seen["body"] == payload.as_str(), "{path}, h2 client {h2_client}: body altered");
        }
    }
}
