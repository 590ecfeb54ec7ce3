//! RequestMirror and HTTPRoute retries.

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
use hyper::{Request, Response, body::Incoming};

use super::common::*;

#[tokio::test]
async fn a_mirror_receives_a_copy_of_each_request_and_its_answer_is_ignored() {
    let (primary, primary_seen) = recording_backend("primary").await;
    let (mirror, mirror_seen) = recording_backend("mirror").await;
    let port = free_port();
    let spec = "  rules:
    - filters:
        - type: RequestMirror
          requestMirror:
            backendRef: {name: mirror, port: 80}
      backendRefs: [{name: primary, port: 80}]
";
    let config = format!(
        "{CLASS}{}{}{}{}",
        http_gateway(port),
        service("primary", primary),
        service("mirror", mirror),
        route_spec("r", spec)
    );
    let _gw = Gateway::start(&config).await;
    let req = Request::post(format!("http://127.0.0.1:{port}/orders"))
        .header("host", "shop.example")
        .body(Full::new(Bytes::from_static(b"{\"id\":7}")))
        .unwrap();
    let (code, _, body) = request(req).await.unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("\"backend\":\"primary\""), "the client gets the primary's answer: {body}");

    let deadline = Instant::now() + PATIENCE;
    while mirror_seen.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the mirror saw nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let copy = mirror_seen.lock().unwrap()[0].clone();
    assert_eq!(copy["method"], "POST");
    assert_eq!(copy["path"], "/orders");
    assert_eq!(copy["body"], "{\"id\":7}", "the body is mirrored as it streams");
    assert_eq!(copy["headers"]["host"], "shop.example");
    assert_eq!(copy["headers"]["content-length"], "8", "the copy is framed as the original");
    assert_eq!(primary_seen.lock().unwrap().len(), 1);

    // A request without a body is copied without one, not as an empty chunked body.
    let (code, _, _) = get_host(&format!("http://127.0.0.1:{port}/orders"), "shop.example").await.unwrap();
    assert_eq!(code, 200);
    let deadline = Instant::now() + PATIENCE;
    while mirror_seen.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "the mirror saw no GET");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let copy = mirror_seen.lock().unwrap()[1].clone();
    assert_eq!(copy["method"], "GET");
    assert!(copy["headers"].get("transfer-encoding").is_none(), "{copy}");
    assert!(copy["headers"].get("content-length").is_none(), "{copy}");
}

#[tokio::test]
async fn a_mirror_with_percent_0_gets_nothing() {
    let (primary, _) = recording_backend("primary").await;
    let (mirror, mirror_seen) = recording_backend("mirror").await;
    let port = free_port();
    let spec = "  rules:
    - filters:
        - type: RequestMirror
          requestMirror:
            backendRef: {name: mirror, port: 80}
            percent: 0
      backendRefs: [{name: primary, port: 80}]
";
    let config = format!(
        "{CLASS}{}{}{}{}",
        http_gateway(port),
        service("primary", primary),
        service("mirror", mirror),
        route_spec("r", spec)
    );
    let _gw = Gateway::start(&config).await;
    for _ in 0..20 {
        assert_eq!(get(&format!("http://127.0.0.1:{port}/")).await.unwrap().0, 200);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(mirror_seen.lock().unwrap().is_empty());
}

/// Answers 503 to the first `failures` requests, then 200; counts every request.
async fn flaky_backend(failures: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let addr = http_server(move |_req: Request<Incoming>| {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut resp = Response::new(Full::new(Bytes::from_static(b"flaky")));
            if n < failures {
                *resp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
            }
            resp
        }
    })
    .await;
    (addr, count)
}

fn retry_route(attempts: u32) -> String {
    route_spec(
        "r",
        &format!(
            "  rules:
    - retry:
        codes: [503]
        attempts: {attempts}
        backoff: 10ms
      backendRefs: [{{name: flaky, port: 80}}]
"
        ),
    )
}

#[tokio::test]
async fn retries_turn_listed_failures_into_success() {
    let (flaky, count) = flaky_backend(2).await;
    let port = free_port();
    let _gw =
        Gateway::start(&format!("{CLASS}{}{}{}", http_gateway(port), service("flaky", flaky), retry_route(2))).await;
    let req = Request::post(format!("http://127.0.0.1:{port}/pay")).body(Full::new(Bytes::from_static(b"x"))).unwrap();
    let (code, _, _) = request(req).await.unwrap();
    assert_eq!(code, 200, "two retries cover two failures");
    assert_eq!(count.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn retries_stop_at_the_limit() {
    let (flaky, count) = flaky_backend(10).await;
    let port = free_port();
    let _gw =
        Gateway::start(&format!("{CLASS}{}{}{}", http_gateway(port), service("flaky", flaky), retry_route(1))).await;
    assert_eq!(get(&format!("http://127.0.0.1:{port}/")).await.unwrap().0, 503);
    assert_eq!(count.load(Ordering::SeqCst), 2, "one attempt and one retry");
}
