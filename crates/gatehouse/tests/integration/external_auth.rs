//! The ExternalAuth filter over HTTP: what the authorization service is sent, what its
//! answers do to the request, and that it fails closed.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming};

use super::common::*;

/// An authorization service: lets `authorization: Bearer good` through, answering 200 with
/// `x-user: alice` and `x-extra: 1`; refuses anything else with 401, a `www-authenticate`
/// header and a body of its own. Records what it is sent.
async fn auth_service() -> (SocketAddr, Seen) {
    let seen: Seen = Default::default();
    let log = seen.clone();
    let addr = http_server(move |req: Request<Incoming>| {
        let log = log.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let mut headers = serde_json::Map::new();
            for (k, v) in &parts.headers {
                headers.insert(k.to_string(), String::from_utf8_lossy(v.as_bytes()).into());
            }
            log.lock().unwrap().push(serde_json::json!({
                "method": parts.method.as_str(),
                "path": parts.uri.path_and_query().map(|p| p.as_str()),
                "headers": headers,
                "body": String::from_utf8_lossy(&body),
            }));
            let allowed = parts.headers.get("authorization").is_some_and(|v| v == "Bearer good");
            let response = if allowed {
                Response::builder().header("x-user", "alice").header("x-extra", "1").body(Full::new(Bytes::new()))
            } else {
                Response::builder()
                    .status(401)
                    .header("www-authenticate", "Bearer realm=\"test\"")
                    .body(Full::new(Bytes::from("denied by auth")))
            };
            response.unwrap()
        }
    })
    .await;
    (addr, seen)
}

/// A gateway whose one rule asks the authorization service `auth` (Service `auth`) first,
/// with `settings` in the filter (`http`, `forwardBody`), then forwards to `backend`.
async fn start(auth: SocketAddr, backend: SocketAddr, settings: &str) -> (Gateway, u16) {
    let port = free_port();
    let spec = format!(
        "  rules:
    - filters:
        - type: ExternalAuth
          externalAuth:
            protocol: HTTP
            backendRef: {{name: auth, port: 80}}
{settings}
      backendRefs: [{{name: app, port: 80}}]
"
    );
    let config = format!(
        "{CLASS}{}{}{}{}",
        http_gateway(port),
        service("auth", auth),
        service("app", backend),
        route_spec("r", &spec)
    );
    (Gateway::start(&config).await, port)
}

fn get_with(port: u16, path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut req = Request::get(format!("http://127.0.0.1:{port}{path}")).header("host", "app.example");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Full::new(Bytes::new())).unwrap()
}

#[tokio::test]
async fn an_allowed_request_goes_on_with_the_granted_headers() {
    let (auth, asked) = auth_service().await;
    let (backend, seen) = recording_backend("app").await;
    let settings = "            http: {path: /check, allowedHeaders: [X-Trace], allowedResponseHeaders: [X-User]}";
    let (_gw, port) = start(auth, backend, settings).await;

    let headers = [("authorization", "Bearer good"), ("x-trace", "t1"), ("x-other", "o")];
    let (code, _, _) = request(get_with(port, "/app/x?q=1", &headers)).await.unwrap();
    assert_eq!(code, 200);

    let asked = asked.lock().unwrap()[0].clone();
    assert_eq!(asked["method"], "GET");
    assert_eq!(asked["path"], "/check/app/x?q=1", "the filter's path, then the request's");
    let h = &asked["headers"];
    assert_eq!(h["host"], "app.example");
    assert_eq!(h["authorization"], "Bearer good");
    assert_eq!(h["x-trace"], "t1", "an allowed header: {h}");
    assert_eq!(h["content-length"], "0", "no body forwarded: {h}");
    assert!(h.get("x-other").is_none(), "a header not allowed stays with the request: {h}");

    let seen = seen.lock().unwrap()[0].clone();
    assert_eq!(seen["path"], "/app/x?q=1");
    assert_eq!(seen["headers"]["x-user"], "alice", "granted by the service: {seen}");
    assert!(seen["headers"].get("x-extra").is_none(), "not in allowedResponseHeaders: {seen}");
    assert_eq!(seen["headers"]["x-other"], "o");
}

#[tokio::test]
async fn a_refusal_is_the_clients_answer_and_the_backend_sees_nothing() {
    let (auth, _) = auth_service().await;
    let (backend, seen) = recording_backend("app").await;
    let (_gw, port) = start(auth, backend, "            http: {}").await;

    let (code, headers, body) = request(get_with(port, "/", &[("authorization", "Bearer bad")])).await.unwrap();
    assert_eq!(code, 401);
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"test\"");
    assert_eq!(body, "denied by auth");
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_unreachable_authorization_service_fails_closed() {
    // A port nobody listens on.
    let gone: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (backend, seen) = recording_backend("app").await;
    let (_gw, port) = start(gone, backend, "            http: {}").await;
    let (code, _, _) = request(get_with(port, "/", &[("authorization", "Bearer good")])).await.unwrap();
    assert_eq!(code, 403);
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_start_of_the_body_is_sent_along() {
    let (auth, asked) = auth_service().await;
    let (backend, seen) = recording_backend("app").await;
    let (_gw, port) = start(auth, backend, "            http: {}\n            forwardBody: {maxSize: 16}").await;
    let post = |body: &'static str| {
        Request::post(format!("http://127.0.0.1:{port}/submit"))
            .header("authorization", "Bearer good")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };

    assert_eq!(request(post("hello")).await.unwrap().0, 200);
    let a = asked.lock().unwrap()[0].clone();
    assert_eq!((a["body"].as_str(), a["headers"]["content-length"].as_str()), (Some("hello"), Some("5")));
    assert_eq!(seen.lock().unwrap()[0]["body"], "hello", "the backend gets the body too");

    // A longer body: its first 16 bytes go to the service, all of it to the backend.
    assert_eq!(request(post("a body longer than sixteen bytes")).await.unwrap().0, 200);
    let a = asked.lock().unwrap()[1].clone();
    assert_eq!((a["body"].as_str(), a["headers"]["content-length"].as_str()), (Some("a body longer th"), Some("16")));
    assert_eq!(seen.lock().unwrap()[1]["body"], "a body longer than sixteen bytes");
}

#[tokio::test]
async fn a_granted_header_is_the_services_alone() {
    let (auth, _) = auth_service().await;
    let (backend, seen) = recording_backend("app").await;
    let settings = "            http: {allowedResponseHeaders: [X-User, X-Role]}";
    let (_gw, port) = start(auth, backend, settings).await;
    // The client claims a role the service does not grant, and asks for the granted user
    // header to be dropped as hop-by-hop.
    let headers = [("authorization", "Bearer good"), ("x-role", "admin"), ("connection", "x-user")];
    assert_eq!(request(get_with(port, "/", &headers)).await.unwrap().0, 200);
    let seen = seen.lock().unwrap()[0].clone();
    assert_eq!(seen["headers"]["x-user"], "alice", "{seen}");
    assert!(seen["headers"].get("x-role").is_none(), "the client's own x-role is not passed as granted: {seen}");
}

#[tokio::test]
async fn the_request_timeout_covers_the_authorization_exchange() {
    let slow_auth = slow_backend(std::time::Duration::from_secs(3)).await;
    let (backend, seen) = recording_backend("app").await;
    let port = free_port();
    let spec = "  rules:
    - filters:
        - type: ExternalAuth
          externalAuth: {protocol: HTTP, backendRef: {name: auth, port: 80}, http: {}}
      timeouts: {request: 300ms}
      backendRefs: [{name: app, port: 80}]
";
    let config = format!(
        "{CLASS}{}{}{}{}",
        http_gateway(port),
        service("auth", slow_auth),
        service("app", backend),
        route_spec("r", spec)
    );
    let _gw = Gateway::start(&config).await;
    let started = std::time::Instant::now();
    assert_eq!(request(get_with(port, "/", &[])).await.unwrap().0, 504);
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "answered at the route's deadline");
    assert!(seen.lock().unwrap().is_empty());
}
