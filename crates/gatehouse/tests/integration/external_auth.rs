//! The ExternalAuth filter over HTTP: what the authorization service is sent, what its
//! answers do to the request, and that it fails closed.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming};

use super::common::*;

/// An authorization service: lets `authorization: Bearer good` through, answering 200 with
/// `x-user: alice` and `x-extra: 1`; refuses anything else with 401, a `www-authenticate`
/// header and a body of its own. Records what it is sent.
async fn auth_service() -> (SocketAddr, Seen) {
    recording_server("auth", |parts, _| {
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
    })
    .await
}

/// A gateway whose one rule asks the authorization service `auth` (Service `auth`) first,
/// with `settings` in the filter (`protocol`, `http`, `forwardBody`, ...) and `rule` in the
/// rule (`timeouts`, ...), then forwards to `backend`.
async fn start(auth: SocketAddr, backend: SocketAddr, settings: &str, rule: &str) -> (Gateway, u16) {
    let port = free_port();
    let spec = format!(
        "  rules:
    - filters:
        - type: ExternalAuth
          externalAuth: {{backendRef: {{name: auth, port: 80}}, {settings}}}
      backendRefs: [{{name: app, port: 80}}]{rule}
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
    let settings = "protocol: HTTP, http: {path: /check, allowedHeaders: [X-Trace], allowedResponseHeaders: [X-User]}";
    let (_gw, port) = start(auth, backend, settings, "").await;

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
    let (_gw, port) = start(auth, backend, "protocol: HTTP, http: {}", "").await;

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
    let (_gw, port) = start(gone, backend, "protocol: HTTP, http: {}", "").await;
    let (code, _, _) = request(get_with(port, "/", &[("authorization", "Bearer good")])).await.unwrap();
    assert_eq!(code, 403);
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_start_of_the_body_is_sent_along() {
    let (auth, asked) = auth_service().await;
    let (backend, seen) = recording_backend("app").await;
    let (_gw, port) = start(auth, backend, "protocol: HTTP, http: {}, forwardBody: {maxSize: 16}", "").await;
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
    let settings = "protocol: HTTP, http: {allowedResponseHeaders: [X-User, X-Role]}";
    let (_gw, port) = start(auth, backend, settings, "").await;
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
    let timeout = "\n      timeouts: {request: 300ms}";
    let (_gw, port) = start(slow_auth, backend, "protocol: HTTP, http: {}", timeout).await;
    // Without the deadline the slow service would allow the request after 3 s: a 200.
    assert_eq!(request(get_with(port, "/", &[])).await.unwrap().0, 504);
    assert!(seen.lock().unwrap().is_empty());
}

// === over gRPC: Envoy's ext_authz ===

/// Messages as raw bytes: the test writes and reads protobuf by hand.
#[derive(Clone, Copy, Default)]
struct Raw;

impl tonic::codec::Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl tonic::codec::Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, n).to_vec()))
    }
}

fn pb_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field.
fn pb(field: u64, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    pb_varint(&mut out, (field << 3) | 2);
    pb_varint(&mut out, content.len() as u64);
    out.extend_from_slice(content);
    out
}

/// A varint field.
fn pb_int(field: u64, v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    pb_varint(&mut out, field << 3);
    pb_varint(&mut out, v);
    out
}

/// An ext_authz `Check` service: OK with `x-user: alice` for `Bearer good` anywhere in the
/// request, else PERMISSION_DENIED with HTTP 401 and a body. Records each CheckRequest.
struct Check(Seen);

impl tonic::server::UnaryService<Vec<u8>> for Check {
    type Response = Vec<u8>;
    type Future = std::future::Ready<Result<tonic::Response<Vec<u8>>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<Vec<u8>>) -> Self::Future {
        let message = request.into_inner();
        let text = String::from_utf8_lossy(&message).into_owned();
        self.0.lock().unwrap().push(serde_json::Value::String(text.clone()));
        let response = if text.contains("Bearer good") {
            let header = [pb(1, b"x-user"), pb(2, b"alice")].concat();
            [pb(1, &[]), pb(3, &pb(2, &pb(1, &header)))].concat()
        } else {
            let denied = [pb(1, &pb_int(1, 401)), pb(3, b"denied by ext_authz")].concat();
            [pb(1, &pb_int(1, 7)), pb(2, &denied)].concat()
        };
        std::future::ready(Ok(tonic::Response::new(response)))
    }
}

async fn ext_authz_service() -> (SocketAddr, Seen) {
    let seen: Seen = Default::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let log = log.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let log = log.clone();
                    async move {
                        assert_eq!(req.uri().path(), "/envoy.service.auth.v3.Authorization/Check");
                        let response = tonic::server::Grpc::new(Raw).unary(Check(log), req).await;
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn ext_authz_over_grpc_allows_and_denies() {
    let (auth, asked) = ext_authz_service().await;
    let (backend, seen) = recording_backend("app").await;
    let settings = "protocol: GRPC, grpc: {allowedHeaders: [authorization, x-trace]}";
    let (_gw, port) = start(auth, backend, settings, "").await;

    let headers = [("authorization", "Bearer good"), ("x-trace", "t1"), ("x-other", "secret-o")];
    assert_eq!(request(get_with(port, "/app/x?q=1", &headers)).await.unwrap().0, 200);
    let check = asked.lock().unwrap()[0].as_str().unwrap().to_string();
    for part in ["GET", "/app/x?q=1", "app.example", "x-trace", "t1"] {
        assert!(check.contains(part), "{part:?} in the CheckRequest: {check:?}");
    }
    assert!(!check.contains("secret-o"), "a header not allowed is not sent: {check:?}");
    assert_eq!(seen.lock().unwrap()[0]["headers"]["x-user"], "alice");

    let (code, _, body) = request(get_with(port, "/", &[("authorization", "Bearer bad")])).await.unwrap();
    assert_eq!((code, body.as_str()), (401, "denied by ext_authz"));
    assert_eq!(seen.lock().unwrap().len(), 1, "the denied request went no further");
}
