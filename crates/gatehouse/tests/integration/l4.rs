//! Layer-4 listeners: TCP (TCPRoute), TLS passthrough by SNI and TLS terminate (TLSRoute),
//! UDP (UDPRoute), their status, and reconfiguration with a TCP connection open.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader},
    net::{TcpStream, UdpSocket},
};

use super::common::*;

// === backends ===

/// Serves one connection of the echo backends: `name\n`, then every byte back until the
/// client half-closes, then `bye\n` (proving the write side stayed open) and close.
async fn echo_session<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, name: &str) {
    let _ = s.write_all(format!("{name}\n").as_bytes()).await;
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if s.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = s.write_all(b"bye\n").await;
    let _ = s.shutdown().await;
}

/// A plain TCP echo backend (see [`echo_session`]).
async fn tcp_echo(name: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(echo_session(s, name));
        }
    });
    addr
}

/// A TLS echo backend with its own certificate (see [`echo_session`]).
async fn tls_echo(name: &'static str, config: Arc<rustls::ServerConfig>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(s).await {
                    echo_session(tls, name).await;
                }
            });
        }
    });
    addr
}

/// A UDP backend that answers every datagram with `name:` and the datagram.
async fn udp_echo(name: &'static str) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let mut reply = format!("{name}:").into_bytes();
            reply.extend_from_slice(&buf[..n]);
            let _ = socket.send_to(&reply, from).await;
        }
    });
    addr
}

// === config ===

/// A Gateway `gw` with these listeners (YAML list items, indented by 4).
fn gateway(listeners: &str) -> String {
    format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: gw
spec:
  gatewayClassName: gatehouse
  listeners:
{listeners}"
    )
}

/// A TCPRoute, TLSRoute or UDPRoute on `gw` (listener `section` if given) with `hostnames`
/// and one rule over `backends` (Service name, weight), port 80.
fn stream_route(kind: &str, name: &str, section: Option<&str>, hostnames: &[&str], backends: &[(&str, u32)]) -> String {
    let section = section.map(|s| format!(", sectionName: {s}")).unwrap_or_default();
    let hostnames =
        if hostnames.is_empty() { String::new() } else { format!("  hostnames: {}\n", serde_json::json!(hostnames)) };
    let refs: String =
        backends.iter().map(|(svc, w)| format!("\n        - {{name: {svc}, port: 80, weight: {w}}}")).collect();
    format!(
        "---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: {kind}
metadata:
  name: {name}
spec:
  parentRefs:
    - {{name: gw{section}}}
{hostnames}  rules:
    - backendRefs:{refs}
"
    )
}

/// A Service `name` with one UDP port 80 whose endpoint is `backend`.
fn udp_service(name: &str, backend: SocketAddr) -> String {
    format!(
        "---
apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  ports:
    - {{name: dns, port: 80, protocol: UDP}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}
  labels:
    kubernetes.io/service-name: {name}
addressType: IPv4
endpoints:
  - addresses: [\"{}\"]
ports:
  - {{name: dns, port: {}, protocol: UDP}}
",
        backend.ip(),
        backend.port()
    )
}

/// A port free on 127.0.0.1 for both TCP and UDP a moment ago.
fn free_port_tcp_and_udp() -> u16 {
    loop {
        let port = free_port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Asserts that every named listener of `gw` is `Programmed=True`.
fn assert_programmed(status: &serde_json::Value, names: &[&str]) {
    let gw = resource(status, "Gateway", "gw");
    for name in names {
        let l = gw["status"]["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == *name)
            .unwrap_or_else(|| panic!("no listener {name}: {gw}"));
        let c = condition(&l["conditions"], "Programmed");
        assert_eq!(c["status"], "True", "listener {name}: {c}");
    }
}

// === clients ===

/// Reads the backend's first line (its name).
async fn name_line<S: AsyncRead + Unpin>(s: &mut BufReader<S>) -> String {
    let mut line = String::new();
    tokio::time::timeout(PATIENCE, s.read_line(&mut line)).await.expect("a greeting in time").unwrap();
    line.trim_end().to_string()
}

/// Sends `msg` and reads exactly its echo.
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(s: &mut BufReader<S>, msg: &str) {
    s.get_mut().write_all(msg.as_bytes()).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(PATIENCE, s.read_exact(&mut back)).await.expect("the echo in time").unwrap();
    assert_eq!(String::from_utf8_lossy(&back), msg);
}

/// Half-closes, then reads what is left: the backend's `bye` and the end of the stream.
async fn finish<S: AsyncRead + AsyncWrite + Unpin>(mut s: BufReader<S>) {
    s.get_mut().shutdown().await.unwrap();
    let mut rest = String::new();
    tokio::time::timeout(PATIENCE, s.read_to_string(&mut rest)).await.expect("the end in time").unwrap();
    assert_eq!(rest, "bye\n", "the backend could still write after our half-close");
}

/// One connection through a TCP listener: the backend's name, after an echo and a half-close.
async fn tcp_session(port: u16) -> String {
    let tcp = tokio::time::timeout(PATIENCE, TcpStream::connect(("127.0.0.1", port))).await.unwrap().unwrap();
    let mut s = BufReader::new(tcp);
    let name = name_line(&mut s).await;
    echo(&mut s, "ping").await;
    finish(s).await;
    name
}

/// Sends `msg` from `socket` to `to` until a reply arrives (UDP may drop), within PATIENCE.
async fn udp_ask(socket: &UdpSocket, to: SocketAddr, msg: &str) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut buf = [0u8; 2048];
    loop {
        socket.send_to(msg.as_bytes(), to).await.unwrap();
        if let Ok(Ok((n, from))) = tokio::time::timeout(Duration::from_millis(500), socket.recv_from(&mut buf)).await {
            assert_eq!(from, to, "the reply comes from the address the client sent to");
            return String::from_utf8_lossy(&buf[..n]).into_owned();
        }
        assert!(tokio::time::Instant::now() < deadline, "no UDP reply to {msg}");
    }
}

// === tests ===

#[tokio::test]
async fn tcp_listener_balances_by_weight_and_passes_half_close() {
    let (a, b, never) = (tcp_echo("tcp-a").await, tcp_echo("tcp-b").await, tcp_echo("never").await);
    let port = free_port();
    let config = [
        CLASS.to_string(),
        gateway(&format!("    - {{name: tcp, protocol: TCP, port: {port}}}\n")),
        service("svc-a", a),
        service("svc-b", b),
        service("svc-never", never),
        stream_route("TCPRoute", "tcp", None, &[], &[("svc-a", 1), ("svc-b", 1), ("svc-never", 0)]),
    ]
    .concat();
    let gw = Gateway::start(&config).await;
    assert_programmed(&gw.status().await, &["tcp"]);

    let mut seen = BTreeMap::<String, usize>::new();
    for _ in 0..20 {
        *seen.entry(tcp_session(port).await).or_default() += 1;
    }
    assert!(seen.get("tcp-a").is_some_and(|n| *n > 0), "{seen:?}");
    assert!(seen.get("tcp-b").is_some_and(|n| *n > 0), "{seen:?}");
    assert!(!seen.contains_key("never"), "weight 0 is never chosen: {seen:?}");
    assert_eq!(seen.values().sum::<usize>(), 20);

    let (_, metrics) = get(&format!("http://{}/metrics", gw.admin)).await.unwrap();
    let labels = "listener=\"default/gw/tcp\",route=\"TCPRoute/default/tcp\"";
    assert!(metrics.contains(&format!("gatehouse_stream_connections_total{{{labels}}} 20")), "{metrics}");
    assert!(metrics.contains(&format!("gatehouse_stream_bytes_total{{{labels},direction=\"received\"}}")), "{metrics}");
}

#[tokio::test]
async fn tcp_connection_to_an_invalid_backend_is_closed() {
    let port = free_port();
    let config = [
        CLASS.to_string(),
        gateway(&format!("    - {{name: tcp, protocol: TCP, port: {port}}}\n")),
        stream_route("TCPRoute", "tcp", None, &[], &[("missing", 1)]),
    ]
    .concat();
    let gw = Gateway::start(&config).await;
    assert_programmed(&gw.status().await, &["tcp"]);
    let reply = raw_exchange(SocketAddr::from(([127, 0, 0, 1], port)), b"hello").await;
    assert!(reply.closed && reply.text.is_empty(), "{reply:?}");
}

#[tokio::test]
async fn tls_passthrough_routes_by_sni_without_terminating() {
    let pki = Pki::new(&["a.example.com", "b.example.com", "term.example.org", "web.example.org"]);
    let a = tls_echo("tls-a", pki.server_config("a.example.com")).await;
    let b = tls_echo("tls-b", pki.server_config("b.example.com")).await;
    let plain = tcp_echo("plain").await;
    let web = echo_backend("web").await;
    let port = free_port();
    // Three kinds of listener on one socket, told apart by SNI.
    let listeners = format!(
        "    - {{name: pass, protocol: TLS, port: {port}, hostname: \"*.example.com\", tls: {{mode: Passthrough}}}}
    - name: term
      protocol: TLS
      port: {port}
      hostname: term.example.org
      tls: {{mode: Terminate, certificateRefs: [{{name: term-cert}}]}}
    - name: web
      protocol: HTTPS
      port: {port}
      hostname: web.example.org
      tls: {{certificateRefs: [{{name: web-cert}}]}}
"
    );
    let config = [
        CLASS.to_string(),
        gateway(&listeners),
        pki.secret("term-cert", "term.example.org"),
        pki.secret("web-cert", "web.example.org"),
        service("svc-a", a),
        service("svc-b", b),
        service("svc-plain", plain),
        service("svc-web", web),
        stream_route("TLSRoute", "to-a", Some("pass"), &["a.example.com"], &[("svc-a", 1)]),
        stream_route("TLSRoute", "to-b", Some("pass"), &["b.example.com"], &[("svc-b", 1)]),
        stream_route("TLSRoute", "term", Some("term"), &[], &[("svc-plain", 1)]),
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web
spec:
  parentRefs: [{name: gw, sectionName: web}]
  rules: [{backendRefs: [{name: svc-web, port: 80}]}]
"
        .to_string(),
    ]
    .concat();
    let gw = Gateway::start(&config).await;
    assert_programmed(&gw.status().await, &["pass", "term", "web"]);

    // Passthrough: the SNI picks the backend, and the certificate is the backend's own.
    for (sni, name) in [("a.example.com", "tls-a"), ("b.example.com", "tls-b")] {
        let tls = pki.connect(port, sni, &[]).await.unwrap_or_else(|e| panic!("{sni}: {e}"));
        let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        assert_eq!(&presented, pki.der(sni), "{sni}: the backend's certificate");
        let mut s = BufReader::new(tls);
        assert_eq!(name_line(&mut s).await, name);
        echo(&mut s, "hello through").await;
        finish(s).await;
    }

    // An SNI no route claims: closed before any handshake.
    assert!(pki.connect(port, "c.example.com", &[]).await.is_err(), "no route for c.example.com");
    assert!(pki.connect(port, "other.org", &[]).await.is_err(), "no listener for other.org");

    // Terminate: the proxy's certificate, the plaintext to a TCP backend.
    let tls = pki.connect(port, "term.example.org", &[b"h2", b"http/1.1"]).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), None, "no ALPN for an opaque stream");
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_eq!(&presented, pki.der("term.example.org"));
    let mut s = BufReader::new(tls);
    assert_eq!(name_line(&mut s).await, "plain");
    echo(&mut s, "decrypted").await;
    finish(s).await;

    // HTTPS on the same socket still goes through HTTP routing.
    let tls = pki.connect(port, "web.example.org", &[b"http/1.1"]).await.unwrap();
    let mut s = BufReader::new(tls);
    s.get_mut().write_all(b"GET /x HTTP/1.1\r\nHost: web.example.org\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut response = String::new();
    let _ = tokio::time::timeout(PATIENCE, s.read_to_string(&mut response)).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"backend\":\"web\""), "{response}");
}

#[tokio::test]
async fn udp_listener_keeps_flows_apart() {
    let backend = udp_echo("udp-a").await;
    let tcp_backend = tcp_echo("tcp-same-port").await;
    // A UDP and a TCP listener on one port number, as DNS has them.
    let port = free_port_tcp_and_udp();
    let config = [
        CLASS.to_string(),
        gateway(&format!(
            "    - {{name: udp, protocol: UDP, port: {port}}}\n    - {{name: tcp, protocol: TCP, port: {port}}}\n"
        )),
        udp_service("svc-udp", backend),
        service("svc-tcp", tcp_backend),
        stream_route("UDPRoute", "udp", Some("udp"), &[], &[("svc-udp", 1)]),
        stream_route("TCPRoute", "tcp", Some("tcp"), &[], &[("svc-tcp", 1)]),
    ]
    .concat();
    let gw = Gateway::start(&config).await;
    assert_programmed(&gw.status().await, &["udp", "tcp"]);

    let listener = SocketAddr::from(([127, 0, 0, 1], port));
    let one = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let two = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for round in 0..3 {
        assert_eq!(udp_ask(&one, listener, &format!("one-{round}")).await, format!("udp-a:one-{round}"));
        assert_eq!(udp_ask(&two, listener, &format!("two-{round}")).await, format!("udp-a:two-{round}"));
    }
    assert_eq!(tcp_session(port).await, "tcp-same-port");

    let (_, metrics) = get(&format!("http://{}/metrics", gw.admin)).await.unwrap();
    let flows = "gatehouse_stream_connections_total{listener=\"default/gw/udp\",route=\"UDPRoute/default/udp\"} 2";
    assert!(metrics.contains(flows), "two UDP flows: {metrics}");
}

#[tokio::test]
async fn reconfiguration_keeps_an_open_tcp_connection() {
    let (a, b) = (tcp_echo("tcp-a").await, tcp_echo("tcp-b").await);
    let (port, other) = (free_port(), free_port());
    let config = |to: &str, more: &str| {
        [
            CLASS.to_string(),
            gateway(&format!("    - {{name: tcp, protocol: TCP, port: {port}}}\n{more}")),
            service("svc-a", a),
            service("svc-b", b),
            stream_route("TCPRoute", "tcp", Some("tcp"), &[], &[(to, 1)]),
        ]
        .concat()
    };
    let gw = Gateway::start(&config("svc-a", "")).await;
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut open = BufReader::new(tcp);
    assert_eq!(name_line(&mut open).await, "tcp-a");
    echo(&mut open, "before").await;

    // Another backend for new connections, and another listener: the socket stays bound.
    let status =
        gw.reconfigure(&config("svc-b", &format!("    - {{name: more, protocol: TCP, port: {other}}}\n"))).await;
    assert_programmed(&status, &["tcp", "more"]);
    echo(&mut open, "after").await;
    assert_eq!(tcp_session(port).await, "tcp-b", "new connections see the new route");
    echo(&mut open, "still").await;
    finish(open).await;
}
