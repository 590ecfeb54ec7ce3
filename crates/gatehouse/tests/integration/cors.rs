//! The CORS filter: preflights answered by the gateway, CORS headers for allowed origins.

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;

use super::common::*;

async fn gateway() -> (Gateway, u16, Seen) {
    let (echo, seen) = recording_backend("echo").await;
    let port = free_port();
    let spec = "  rules:
    - filters:
        - type: CORS
          cors:
            allowOrigins: ['https://app.example', 'https://*.tools.example']
            allowMethods: [GET, PUT]
            allowHeaders: [x-token]
            exposeHeaders: [x-total]
            allowCredentials: true
            maxAge: 600
      backendRefs: [{name: echo, port: 80}]
";
    let config = format!("{CLASS}{}{}{}", http_gateway(port), service("echo", echo), route_spec("r", spec));
    (Gateway::start(&config).await, port, seen)
}

fn with_origin(port: u16, method: &str, origin: &str) -> hyper::http::request::Builder {
    Request::builder().method(method).uri(format!("http://127.0.0.1:{port}/items")).header("origin", origin)
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_is_answered_by_the_gateway() {
    let (_gw, port, seen) = gateway().await;
    let req = with_origin(port, "OPTIONS", "https://app.example")
        .header("access-control-request-method", "PUT")
        .header("access-control-request-headers", "x-token")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (code, h, _) = request(req).await.unwrap();
    assert_eq!(code, 200);
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert_eq!(h["access-control-allow-methods"], "GET, PUT");
    assert_eq!(h["access-control-allow-headers"], "x-token");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-max-age"], "600");
    assert!(seen.lock().unwrap().is_empty(), "a preflight never reaches the backend");

    let req = with_origin(port, "OPTIONS", "https://evil.example")
        .header("access-control-request-method", "PUT")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (_, h, _) = request(req).await.unwrap();
    assert!(h.get("access-control-allow-origin").is_none(), "no grant for another origin");
}

#[tokio::test]
async fn responses_to_allowed_origins_carry_cors_headers() {
    let (_gw, port, seen) = gateway().await;
    let req = with_origin(port, "GET", "https://build.tools.example").body(Full::new(Bytes::new())).unwrap();
    let (code, h, _) = request(req).await.unwrap();
    assert_eq!(code, 200);
    assert_eq!(h["access-control-allow-origin"], "https://build.tools.example");
    assert_eq!(h["access-control-expose-headers"], "x-total");
    assert_eq!(seen.lock().unwrap().len(), 1);

    let req = with_origin(port, "GET", "https://evil.example").body(Full::new(Bytes::new())).unwrap();
    let (code, h, _) = request(req).await.unwrap();
    assert_eq!(code, 200, "the request is served; the browser refuses it without the headers");
    assert!(h.get("access-control-allow-origin").is_none());
}
