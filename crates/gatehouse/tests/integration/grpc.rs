//! GRPCRoute end to end with a real gRPC stack: tonic's client and server (no codegen, a
//! UTF-8 string codec) over h2c, through an HTTP listener. Service, method and header
//! matches; what the proxy answers a gRPC client when it cannot route or reach a backend
//! (a gRPC status, not an HTTP error); and the route's status.

use std::{convert::Infallible, net::SocketAddr, str::FromStr};

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use http_body_util::{BodyExt, Full};
use hyper::{Request, body::Incoming, service::service_fn};
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo},
};
use tonic::{
    Code, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    server::UnaryService,
};

use super::common::*;

// ---------------------------------------------------------------------------------------------
// A codec for UTF-8 string messages: the gRPC framing is tonic's, the payload the string's bytes.

#[derive(Clone, Copy, Default)]
struct Utf8;

impl Codec for Utf8 {
    type Encode = String;
    type Decode = String;
    type Encoder = Utf8;
    type Decoder = Utf8;

    fn encoder(&mut self) -> Utf8 {
        Utf8
    }

    fn decoder(&mut self) -> Utf8 {
        Utf8
    }
}

impl Encoder for Utf8 {
    type Item = String;
    type Error = Status;

    fn encode(&mut self, item: String, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(item.as_bytes());
        Ok(())
    }
}

impl Decoder for Utf8 {
    type Item = String;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<String>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        String::from_utf8(bytes.to_vec()).map(Some).map_err(|_| Status::internal("message is not UTF-8"))
    }
}

// ---------------------------------------------------------------------------------------------
// The backend: an h2c-only gRPC server answering every method.

/// One call as the backend serves it: the reply is JSON describing the call (`backend`,
/// `path`, `te`, `variant` (the `x-variant` metadata), `message`); the message `fail`
/// gets NOT_FOUND instead.
struct Echo {
    name: &'static str,
    path: String,
    te: Option<String>,
}

impl UnaryService<String> for Echo {
    type Response = String;
    type Future = std::future::Ready<Result<tonic::Response<String>, Status>>;

    fn call(&mut self, request: tonic::Request<String>) -> Self::Future {
        let variant = request.metadata().get("x-variant").and_then(|v| v.to_str().ok()).map(str::to_string);
        let message = request.into_inner();
        if message == "fail" {
            return std::future::ready(Err(Status::not_found("the backend has no such thing")));
        }
        let reply = serde_json::json!({
            "backend": self.name,
            "path": self.path,
            "te": self.te,
            "variant": variant,
            "message": message,
        });
        std::future::ready(Ok(tonic::Response::new(reply.to_string())))
    }
}

/// A gRPC server on 127.0.0.1 speaking HTTP/2 only (prior knowledge), so a proxy that
/// forwarded HTTP/1.1 to it would fail.
async fn grpc_backend(name: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| async move {
                    let path = req.uri().path().to_string();
                    let te = req.headers().get("te").and_then(|v| v.to_str().ok()).map(str::to_string);
                    let response = tonic::server::Grpc::new(Utf8).unary(Echo { name, path, te }, req).await;
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

// ---------------------------------------------------------------------------------------------
// Clients.

/// A unary call of `path` (`/service/method`) with `message` and metadata `meta` through
/// the proxy at `port`, over h2c with prior knowledge: the backend's JSON reply, or the
/// gRPC status the call ended with.
async fn call(
    port: u16,
    path: &str,
    message: &str,
    meta: &[(&'static str, &str)],
) -> Result<serde_json::Value, Status> {
    let client = Client::builder(TokioExecutor::new()).http2_only(true).build_http::<tonic::body::Body>();
    let origin = format!("http://127.0.0.1:{port}").parse().unwrap();
    let mut grpc = tonic::client::Grpc::with_origin(client, origin);
    let mut request = tonic::Request::new(message.to_string());
    for (k, v) in meta {
        request.metadata_mut().insert(*k, v.parse().unwrap());
    }
    let path = PathAndQuery::from_str(path).unwrap();
    let reply = tokio::time::timeout(PATIENCE, async {
        grpc.ready().await.map_err(|e| Status::unknown(format!("client not ready: {e}")))?;
        grpc.unary(request, path, Utf8).await
    })
    .await
    .expect("the gRPC call timed out")?;
    Ok(serde_json::from_str(&reply.into_inner()).expect("the reply is JSON"))
}

/// The backend that served a call; panics if the call failed.
async fn backend_of(port: u16, path: &str, meta: &[(&'static str, &str)]) -> String {
    match call(port, path, "hi", meta).await {
        Ok(reply) => reply["backend"].as_str().unwrap().to_string(),
        Err(status) => panic!("{path} {meta:?}: {status:?}"),
    }
}

/// What a gRPC call looks like on the wire: HTTP status, headers, body and trailers.
struct Raw {
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
    trailers: Option<http::HeaderMap>,
}

/// A unary gRPC request by hand (one length-prefixed message) over h2c, read to the end.
async fn raw_call(port: u16, path: &str, message: &[u8]) -> Raw {
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(message);
    let req = Request::post(format!("http://127.0.0.1:{port}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from(frame)))
        .unwrap();
    let client = Client::builder(TokioExecutor::new()).http2_only(true).build_http::<Full<Bytes>>();
    let resp = tokio::time::timeout(PATIENCE, client.request(req)).await.expect("timed out").expect("HTTP/2 response");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let collected =
        tokio::time::timeout(PATIENCE, resp.into_body().collect()).await.expect("body timed out").expect("body");
    let trailers = collected.trailers().cloned();
    Raw { status, headers, body: collected.to_bytes(), trailers }
}

/// A GRPCRoute `name` on `gw` with `rules` (YAML, indented as a child of `spec:`).
fn grpc_route(name: &str, rules: &str) -> String {
    format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: {name}
spec:
  parentRefs:
    - name: gw
{rules}"
    )
}

/// A rule sending `matches` (list items under `matches:`, or empty for none) to `svc`.
fn grpc_rule(matches: &str, svc: &str) -> String {
    let matches = if matches.is_empty() { String::new() } else { format!("      matches:\n{matches}") };
    format!("    - backendRefs:\n        - name: {svc}\n          port: 80\n{matches}")
}

fn method_match(service: &str, method: &str) -> String {
    format!("        - method:\n            service: {service}\n            method: {method}\n")
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn method_match_routes_a_unary_call_over_h2c_and_the_reply_round_trips() {
    let echo = grpc_backend("echo").await;
    let port = free_port();
    let rules = format!("  rules:\n{}", grpc_rule(&method_match("echo.Echo", "Say"), "echo"));
    let config = format!("{CLASS}{}{}{}", http_gateway(port), service("echo", echo), grpc_route("g", &rules));
    let _gw = Gateway::start(&config).await;

    let reply = call(port, "/echo.Echo/Say", "hello", &[("x-variant", "blue")]).await.unwrap();
    assert_eq!(reply["backend"], "echo");
    assert_eq!(reply["path"], "/echo.Echo/Say");
    assert_eq!(reply["message"], "hello");
    assert_eq!(reply["variant"], "blue", "metadata reaches the backend");

    // A message larger than HTTP/2's initial flow-control windows, both ways.
    let big = "x".repeat(1 << 20);
    let reply = call(port, "/echo.Echo/Say", &big, &[]).await.unwrap();
    assert_eq!(reply["message"].as_str().unwrap().len(), big.len());

    // A status the backend sends arrives as that status.
    let err = call(port, "/echo.Echo/Say", "fail", &[]).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert_eq!(err.message(), "the backend has no such thing");

    // On the wire: 200, application/grpc, the message, and grpc-status 0 in the trailers.
    let raw = raw_call(port, "/echo.Echo/Say", b"wire").await;
    assert_eq!(raw.status, 200);
    assert!(
        raw.headers.get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"application/grpc")),
        "{:?}",
        raw.headers
    );
    assert!(raw.body.len() > 5 && raw.body[0] == 0, "one uncompressed message: {:?}", raw.body);
    let reply: serde_json::Value = serde_json::from_slice(&raw.body[5..]).unwrap();
    assert_eq!(reply["message"], "wire");
    let trailers = raw.trailers.expect("the response has trailers");
    assert_eq!(trailers.get("grpc-status").map(|v| v.as_bytes()), Some(&b"0"[..]), "{trailers:?}");
}

/// gRPC servers may insist on `te: trailers` (grpc-java's Netty server answers without it
/// with an error: "Some intermediate proxy may not support trailers"), so a gRPC proxy
/// passes it on; over HTTP/2 it is the one TE value allowed (RFC 9113 §8.2.2).
#[tokio::test]
async fn te_trailers_reaches_the_backend() {
    let echo = grpc_backend("echo").await;
    let port = free_port();
    let rules = format!("  rules:\n{}", grpc_rule(&method_match("echo.Echo", "Say"), "echo"));
    let config = format!("{CLASS}{}{}{}", http_gateway(port), service("echo", echo), grpc_route("g", &rules));
    let _gw = Gateway::start(&config).await;

    let reply = call(port, "/echo.Echo/Say", "hello", &[]).await.unwrap();
    assert_eq!(reply["te"], "trailers", "{reply}");
}

#[tokio::test]
async fn header_and_service_matches_choose_between_backends() {
    let a = grpc_backend("a").await;
    let b = grpc_backend("b").await;
    let port = free_port();
    let header = "        - headers:\n            - name: x-variant\n              value: canary\n";
    let service_only = "        - method:\n            service: echo.Echo\n";
    let rules = format!("  rules:\n{}{}", grpc_rule(service_only, "a"), grpc_rule(header, "b"));
    let config =
        format!("{CLASS}{}{}{}{}", http_gateway(port), service("a", a), service("b", b), grpc_route("g", &rules));
    let _gw = Gateway::start(&config).await;

    // Service-only: every method of echo.Echo, and nothing else without the header.
    assert_eq!(backend_of(port, "/echo.Echo/Say", &[]).await, "a");
    assert_eq!(backend_of(port, "/echo.Echo/Shout", &[]).await, "a");
    // The header match takes any method of any service ...
    assert_eq!(backend_of(port, "/other.Service/Do", &[("x-variant", "canary")]).await, "b");
    // ... and loses to the service match, which is more specific (a path match beats none).
    assert_eq!(backend_of(port, "/echo.Echo/Say", &[("x-variant", "canary")]).await, "a");
    // Header values match exactly.
    let err = call(port, "/other.Service/Do", "hi", &[("x-variant", "canary2")]).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    // The service name is a whole path segment: echo.EchoX is another service.
    let err = call(port, "/echo.EchoX/Say", "hi", &[]).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
}

#[tokio::test]
async fn a_method_no_rule_matches_gets_unimplemented_as_a_grpc_status() {
    let echo = grpc_backend("echo").await;
    let port = free_port();
    let rules = format!("  rules:\n{}", grpc_rule(&method_match("echo.Echo", "Say"), "echo"));
    let config = format!("{CLASS}{}{}{}", http_gateway(port), service("echo", echo), grpc_route("g", &rules));
    let _gw = Gateway::start(&config).await;

    for path in ["/echo.Echo/Shout", "/other.Service/Say", "/echo.Echo/Say/extra"] {
        let err = call(port, path, "hi", &[]).await.unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented, "{path}: {err:?}");
        assert_eq!(err.message(), "no route for this method", "{path}: the proxy's own status");
    }
    // On the wire: a trailers-only response, HTTP 200 with grpc-status in the headers.
    let raw = raw_call(port, "/echo.Echo/Shout", b"hi").await;
    assert_eq!(raw.status, 200);
    assert_eq!(raw.headers.get("content-type").unwrap(), "application/grpc");
    assert_eq!(raw.headers.get("grpc-status").unwrap(), "12");
    assert!(raw.body.is_empty(), "{:?}", raw.body);
}

#[tokio::test]
async fn a_backend_without_ready_endpoints_or_refusing_connections_gives_unavailable() {
    let echo = grpc_backend("echo").await;
    let closed: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let port = free_port();
    let rules = format!(
        "  rules:\n{}{}{}",
        grpc_rule(&method_match("echo.Echo", "Unready"), "unready"),
        grpc_rule(&method_match("echo.Echo", "Empty"), "empty"),
        grpc_rule(&method_match("echo.Echo", "Refused"), "refused"),
    );
    let config = format!(
        "{CLASS}{}{}{}{}{}",
        http_gateway(port),
        service_with("unready", None, &[(echo, false)]),
        service_with("empty", None, &[]),
        service("refused", closed),
        grpc_route("g", &rules)
    );
    let _gw = Gateway::start(&config).await;

    for (method, message) in [
        ("Unready", "no healthy upstream"),
        ("Empty", "no healthy upstream"),
        ("Refused", "upstream connection failed"),
    ] {
        let path = format!("/echo.Echo/{method}");
        let err = call(port, &path, "hi", &[]).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{path}: {err:?}");
        assert_eq!(err.message(), message, "{path}: the proxy's own status");
        let raw = raw_call(port, &path, b"hi").await;
        assert_eq!((raw.status, raw.headers.get("grpc-status").map(|v| v.as_bytes())), (200, Some(&b"14"[..])));
    }
}

#[tokio::test]
async fn the_route_status_is_accepted_with_resolved_refs_or_says_what_is_missing() {
    let echo = grpc_backend("echo").await;
    let port = free_port();
    let good = format!("  rules:\n{}", grpc_rule(&method_match("echo.Echo", "Say"), "echo"));
    let missing = format!("  rules:\n{}", grpc_rule(&method_match("echo.Echo", "Gone"), "nosuch"));
    let config = format!(
        "{CLASS}{}{}{}{}",
        http_gateway(port),
        service("echo", echo),
        grpc_route("good", &good),
        grpc_route("missing", &missing)
    );
    let gw = Gateway::start(&config).await;
    let status = gw.status().await;

    let parents = &resource(&status, "GRPCRoute", "good")["status"]["parents"];
    assert_eq!(parents.as_array().unwrap().len(), 1, "{parents}");
    assert_eq!(parents[0]["parentRef"]["name"], "gw");
    assert_eq!(parents[0]["controllerName"], "gatehouse.dev/gateway-controller");
    for type_ in ["Accepted", "ResolvedRefs"] {
        let c = condition(&parents[0]["conditions"], type_);
        assert_eq!(c["status"], "True", "{type_}: {c}");
    }
    let gateway = resource(&status, "Gateway", "gw");
    let listener = &gateway["status"]["listeners"][0];
    assert_eq!(listener["attachedRoutes"], 2, "{listener}");
    assert!(listener["supportedKinds"].as_array().unwrap().iter().any(|k| k["kind"] == "GRPCRoute"), "{listener}");

    // A backend that does not exist: still Accepted, ResolvedRefs False, and the call gets a
    // gRPC status, not an HTTP 500.
    let conditions = &resource(&status, "GRPCRoute", "missing")["status"]["parents"][0]["conditions"];
    assert_eq!(condition(conditions, "Accepted")["status"], "True", "{conditions}");
    let resolved = condition(conditions, "ResolvedRefs");
    assert_eq!((&resolved["status"], &resolved["reason"]), (&"False".into(), &"BackendNotFound".into()), "{resolved}");
    let err = call(port, "/echo.Echo/Gone", "hi", &[]).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let raw = raw_call(port, "/echo.Echo/Gone", b"hi").await;
    assert_eq!(raw.status, 200, "{:?}", raw.headers);

    // And the good route serves.
    assert_eq!(backend_of(port, "/echo.Echo/Say", &[]).await, "echo");
}

/// gRPC over TLS: an HTTPS listener, HTTP/2 chosen by ALPN, the call routed by its method.
#[tokio::test]
async fn a_grpc_call_over_tls_is_routed_by_its_method() {
    let pki = Pki::new(&["grpc.example"]);
    let echo = grpc_backend("echo").await;
    let port = free_port();
    let gateway = format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  gatewayClassName: gatehouse
  listeners:
    - {{name: https, protocol: HTTPS, port: {port}, tls: {{certificateRefs: [{{name: cert}}]}}}}
{}",
        pki.secret("cert", "grpc.example")
    );
    let rules = format!("  rules:\n{}", grpc_rule(&method_match("echo.Echo", "Say"), "echo"));
    let config = format!("{CLASS}{gateway}{}{}", service("echo", echo), grpc_route("g", &rules));
    let _gw = Gateway::start(&config).await;

    let tls = pki.connect(port, "grpc.example", &[b"h2"]).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let mut frame = vec![0u8];
    frame.extend_from_slice(&5u32.to_be_bytes());
    frame.extend_from_slice(b"hello");
    let req = Request::post("https://grpc.example/echo.Echo/Say")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from(frame)))
        .unwrap();
    let resp = tokio::time::timeout(PATIENCE, sender.send_request(req)).await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let collected = tokio::time::timeout(PATIENCE, resp.into_body().collect()).await.unwrap().unwrap();
    let trailers = collected.trailers().cloned().expect("gRPC trailers");
    assert_eq!(trailers.get("grpc-status").map(|v| v.as_bytes()), Some(&b"0"[..]), "{trailers:?}");
    let body = collected.to_bytes();
    let reply: serde_json::Value = serde_json::from_slice(&body[5..]).unwrap();
    assert_eq!(reply["backend"], "echo");
    assert_eq!(reply["path"], "/echo.Echo/Say");
}
