//! HTTPS listeners: certificates from kubernetes.io/tls Secrets chosen by SNI, ALPN h2, and
//! 421 for a request whose Host belongs to another listener than the one its SNI chose.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_rustls::client::TlsStream;

use super::common::*;

/// One request on an established TLS connection, in HTTP/2 if ALPN chose it.
pub(super) async fn send(
    tls: TlsStream<tokio::net::TcpStream>,
    host: &str,
    path: &str,
) -> (http::Version, u16, http::HeaderMap, String) {
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(tls);
    let resp = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::get(format!("https://{host}{path}")).body(Full::new(Bytes::new())).unwrap();
        tokio::time::timeout(PATIENCE, sender.send_request(req)).await.unwrap().unwrap()
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::get(path).header("host", host).body(Full::new(Bytes::new())).unwrap();
        tokio::time::timeout(PATIENCE, sender.send_request(req)).await.unwrap().unwrap()
    };
    let (version, code, headers) = (resp.version(), resp.status().as_u16(), resp.headers().clone());
    let body = tokio::time::timeout(PATIENCE, resp.into_body().collect()).await.unwrap().unwrap().to_bytes();
    (version, code, headers, String::from_utf8_lossy(&body).into_owned())
}

/// A Gateway with HTTPS listeners `a` (a.example.com, Secret cert-a) and `b` (b.example.com,
/// Secret cert-b) on one port, a route for both to an echo backend, and a redirect rule.
async fn two_listeners(pki: &Pki) -> (Gateway, u16) {
    let port = free_port();
    let (addr, _) = recording_backend("echo").await;
    let gateway = format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: gw
spec:
  gatewayClassName: gatehouse
  listeners:
    - name: a
      protocol: HTTPS
      port: {port}
      hostname: a.example.com
      tls:
        mode: Terminate
        certificateRefs:
          - name: cert-a
    - name: b
      protocol: HTTPS
      port: {port}
      hostname: b.example.com
      tls:
        certificateRefs:
          - kind: Secret
            group: \"\"
            name: cert-b
"
    );
    let rules = "  rules:
    - matches:
        - path:
            type: PathPrefix
            value: /redirect
      filters:
        - type: RequestRedirect
          requestRedirect:
            hostname: elsewhere.example
    - backendRefs:
        - name: svc
          port: 80
";
    let config = format!(
        "{CLASS}{gateway}{}{}{}{}",
        pki.secret("cert-a", "a.example.com"),
        pki.secret("cert-b", "b.example.com"),
        service("svc", addr),
        route_spec("r", rules)
    );
    (Gateway::start(&config).await, port)
}

#[tokio::test]
async fn sni_picks_the_certificate_of_the_matching_listener() {
    let pki = Pki::new(&["a.example.com", "b.example.com"]);
    let (gw, port) = two_listeners(&pki).await;
    let status = gw.status().await;
    let g = resource(&status, "Gateway", "gw");
    assert_eq!(condition(&g["status"]["conditions"], "Programmed")["status"], "True", "{g}");

    for name in ["a.example.com", "b.example.com"] {
        // The handshake verifies the chain and that the certificate covers `name`.
        let tls = pki.connect(port, name, &[b"http/1.1"]).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        assert_eq!(&presented, pki.der(name), "the certificate for {name} is presented");
        let (version, code, _, body) = send(tls, name, "/hello").await;
        assert_eq!((version, code), (http::Version::HTTP_11, 200), "{body}");
        let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
        assert_eq!(seen["headers"]["host"], name);
    }
    // A name no listener has gets no certificate.
    assert!(pki.connect(port, "c.example.com", &[]).await.is_err());
}

#[tokio::test]
async fn alpn_h2_is_negotiated_and_served() {
    let pki = Pki::new(&["a.example.com", "b.example.com"]);
    let (_gw, port) = two_listeners(&pki).await;
    let tls = pki.connect(port, "a.example.com", &[b"h2", b"http/1.1"]).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (version, code, _, body) = send(tls, "a.example.com", "/over-h2").await;
    assert_eq!((version, code), (http::Version::HTTP_2, 200), "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["path"], "/over-h2");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
}

#[tokio::test]
async fn the_authority_of_an_h2_request_reaches_the_backend_as_host() {
    let pki = Pki::new(&["a.example.com", "b.example.com"]);
    let (_gw, port) = two_listeners(&pki).await;
    let tls = pki.connect(port, "a.example.com", &[b"h2"]).await.unwrap();
    let (version, code, _, body) = send(tls, "a.example.com", "/over-h2").await;
    assert_eq!((version, code), (http::Version::HTTP_2, 200), "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["headers"]["host"], "a.example.com", "{seen}");
    assert_eq!(seen["headers"]["x-forwarded-host"], "a.example.com", "{seen}");
}

#[tokio::test]
async fn a_host_of_another_listener_than_the_sni_one_gets_421() {
    let pki = Pki::new(&["a.example.com", "b.example.com"]);
    let (_gw, port) = two_listeners(&pki).await;
    for alpn in [&b"http/1.1"[..], b"h2"] {
        let tls = pki.connect(port, "a.example.com", &[alpn]).await.unwrap();
        let (_, code, _, _) = send(tls, "b.example.com", "/").await;
        assert_eq!(code, 421, "{}", String::from_utf8_lossy(alpn));
        let tls = pki.connect(port, "a.example.com", &[alpn]).await.unwrap();
        let (_, code, _, _) = send(tls, "a.example.com", "/").await;
        assert_eq!(code, 200);
    }
}

#[tokio::test]
async fn a_redirect_on_an_https_listener_keeps_https_and_the_listener_port() {
    let pki = Pki::new(&["a.example.com", "b.example.com"]);
    let (_gw, port) = two_listeners(&pki).await;
    let tls = pki.connect(port, "a.example.com", &[b"http/1.1"]).await.unwrap();
    let (_, code, headers, _) = send(tls, "a.example.com", "/redirect/x").await;
    assert_eq!(code, 302);
    assert_eq!(headers.get("location").unwrap(), &format!("https://elsewhere.example:{port}/redirect/x"));
}
