//! HTTP/1.1 as clients speak it on the wire (RFC 9112), against our own server loop:
//! pipelining, HTTP/1.0 connections, HEAD, bodies nobody reads, and clients that trickle
//! their heads.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::common::*;

/// A gateway routing `/public` to a recording backend.
async fn setup() -> (Gateway, SocketAddr, Seen) {
    let port = free_port();
    let (public, seen) = recording_backend("public").await;
    let config =
        format!("{CLASS}{}{}{}", http_gateway(port), service("public", public), route("public", "/public", "public"));
    let gw = Gateway::start(&config).await;
    (gw, SocketAddr::from(([127, 0, 0, 1], port)), seen)
}

/// One response read off `stream` (what was read past it stays in `pending`): its head,
/// and its body by Content-Length.
async fn read_response(stream: &mut TcpStream, pending: &mut Vec<u8>) -> (String, String) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut chunk = vec![0u8; 16 * 1024];
    let mut framed = None;
    loop {
        if framed.is_none()
            && let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n")
        {
            let head = String::from_utf8_lossy(&pending[..i + 4]).into_owned();
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length: ").map(|n| n.trim().parse().unwrap())
                })
                .unwrap_or(0usize);
            framed = Some((head, i + 4, length));
        }
        if let Some((head, start, length)) = &framed
            && pending.len() >= start + length
        {
            let body = String::from_utf8_lossy(&pending[*start..start + length]).into_owned();
            let head = head.clone();
            pending.drain(..start + length);
            return (head, body);
        }
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await.expect("a response in time").unwrap();
        assert!(n > 0, "closed mid-response: {}", String::from_utf8_lossy(pending));
        pending.extend_from_slice(&chunk[..n]);
    }
}

fn path_of(body: &str) -> String {
    let seen: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    seen["path"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (_gw, proxy, seen) = setup().await;
    let mut client = TcpStream::connect(proxy).await.unwrap();
    client
        .write_all(
            b"GET /public/a HTTP/1.1\r\nHost: example.com\r\n\r\n\
              POST /public/b HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\n\r\nxyz\
              POST /public/c HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n\
              GET /public/d HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let mut pending = Vec::new();
    let mut paths = Vec::new();
    for _ in 0..4 {
        let (head, body) = read_response(&mut client, &mut pending).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        paths.push(path_of(&body));
    }
    assert_eq!(paths, ["/public/a", "/public/b", "/public/c", "/public/d"]);
    let rest = read_until_closed(&mut client, PATIENCE).await;
    assert!(rest.closed && rest.text.is_empty() && pending.is_empty(), "closed after the last: {rest:?}");
    let bodies: Vec<String> = seen.lock().unwrap().iter().map(|r| r["body"].as_str().unwrap().to_string()).collect();
    assert_eq!(bodies, ["", "xyz", "hi", ""], "each body went with its own request");
}

#[tokio::test]
async fn http10_clients_close_unless_they_ask_to_keep_alive() {
    let (_gw, proxy, _) = setup().await;
    let reply = raw_exchange(proxy, b"GET /public/x HTTP/1.0\r\nHost: example.com\r\n\r\n").await;
    assert_eq!(reply.status(), Some(200), "{reply:?}");
    assert!(reply.text.to_ascii_lowercase().contains("\r\nconnection: close\r\n"), "{reply:?}");
    assert!(reply.closed, "an HTTP/1.0 connection ends with its response: {reply:?}");

    let mut client = TcpStream::connect(proxy).await.unwrap();
    let mut pending = Vec::new();
    for path in ["/public/1", "/public/2"] {
        let req = format!("GET {path} HTTP/1.0\r\nHost: example.com\r\nConnection: keep-alive\r\n\r\n");
        client.write_all(req.as_bytes()).await.unwrap();
        let (head, body) = read_response(&mut client, &mut pending).await;
        assert!(head.to_ascii_lowercase().contains("\r\nconnection: keep-alive\r\n"), "{head}");
        assert_eq!(path_of(&body), path);
    }
}

#[tokio::test]
async fn head_answers_carry_the_length_but_no_body() {
    let (_gw, proxy, seen) = setup().await;
    let reply = raw_exchange(
        proxy,
        b"HEAD /public/h HTTP/1.1\r\nHost: example.com\r\n\r\nGET /public/g HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.closed, "{reply:?}");
    let (head, rest) = reply.text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200") && head.to_ascii_lowercase().contains("content-length: "), "{head}");
    assert!(rest.starts_with("HTTP/1.1 200"), "the next response follows the head at once: {rest:?}");
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_body_nobody_reads_ends_the_connection_after_its_answer() {
    let (_gw, proxy, _) = setup().await;
    let mut client = TcpStream::connect(proxy).await.unwrap();
    // No route: answered 404 before a byte of the body is read.
    client
        .write_all(b"POST /nowhere HTTP/1.1\r\nHost: example.com\r\nContent-Length: 100000\r\n\r\nstart")
        .await
        .unwrap();
    let reply = read_until_closed(&mut client, PATIENCE).await;
    assert_eq!(reply.status(), Some(404), "{reply:?}");
    assert!(reply.text.to_ascii_lowercase().contains("\r\nconnection: close\r\n"), "the answer says so: {reply:?}");
    assert!(reply.closed, "what follows is not a request: the connection ends: {reply:?}");
}

#[tokio::test]
async fn malformed_request_lines_get_their_status_and_nothing_is_forwarded() {
    let (_gw, proxy, seen) = setup().await;
    for (raw, status) in [
        (&b"GET /public/x HTTP/2.0\r\nHost: example.com\r\n\r\n"[..], 505),
        (b"GET /public/x y HTTP/1.1\r\nHost: example.com\r\n\r\n", 400),
        (b"GET /public/x HTTP/1.1\r\nHost: example.com\r\nX-Folded: a\r\n b\r\n\r\n", 400),
        (b"GET /public/x HTTP/1.1\r\nHost : example.com\r\n\r\n", 400),
    ] {
        let reply = raw_exchange(proxy, raw).await;
        assert_eq!(reply.status(), Some(status), "{:?}: {reply:?}", String::from_utf8_lossy(raw));
        assert!(reply.closed);
    }
    assert!(seen.lock().unwrap().is_empty(), "forwarded: {:?}", seen.lock().unwrap());
}

#[tokio::test]
async fn a_head_sent_a_byte_at_a_time_is_served() {
    let (_gw, proxy, _) = setup().await;
    let mut client = TcpStream::connect(proxy).await.unwrap();
    for b in b"GET /public/slow HTTP/1.1\r\nHost: example.com\r\n\r\n" {
        client.write_all(&[*b]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (head, body) = read_response(&mut client, &mut Vec::new()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(path_of(&body), "/public/slow");
}

/// An upgrade over HTTP/1.0, or with a request body, cannot be made on the client's
/// connection, so the backend is not asked for one: it sees a plain request.
#[tokio::test]
async fn an_upgrade_the_connection_cannot_make_is_not_asked_of_the_backend() {
    let port = free_port();
    let backend = upgrade_echo_backend().await;
    let config = format!("{CLASS}{}{}{}", http_gateway(port), service("ws", backend), route("ws", "/", "ws"));
    let _gw = Gateway::start(&config).await;
    let proxy = SocketAddr::from(([127, 0, 0, 1], port));
    for raw in [
        &b"GET / HTTP/1.0\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\nContent-Length: 2\r\n\r\nhi",
    ] {
        let reply = raw_exchange(proxy, raw).await;
        assert_eq!(reply.status(), Some(400), "{:?}: {reply:?}", String::from_utf8_lossy(raw));
        assert!(reply.text.ends_with("no upgrade"), "the backend saw no Upgrade: {reply:?}");
    }
}

/// A client that pipelines its requests and then shuts its side has what it sent answered:
/// only a client that leaves with nothing outstanding is taken for gone.
#[tokio::test]
async fn requests_sent_ahead_of_a_half_close_are_answered() {
    let (_gw, proxy, _) = setup().await;
    let mut client = TcpStream::connect(proxy).await.unwrap();
    client
        .write_all(
            b"GET /public/1 HTTP/1.1\r\nHost: example.com\r\n\r\nGET /public/2 HTTP/1.1\r\nHost: example.com\r\n\r\n",
        )
        .await
        .unwrap();
    client.shutdown().await.unwrap();
    let reply = read_until_closed(&mut client, PATIENCE).await;
    assert!(reply.closed, "{reply:?}");
    assert!(
        reply.text.starts_with("HTTP/1.1 200") && reply.text.contains("/public/1"),
        "the first is answered: {reply:?}"
    );
}
