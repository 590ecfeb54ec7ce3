//! Reconfiguration and shutdown under load: no request is lost.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use super::common::*;

/// 100 reloads while clients keep sending requests: every request succeeds, and the
/// changes take effect (the header each reload sets reaches the backend).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_100_times_under_load_fails_no_request() {
    let backend = echo_backend("one").await;
    let port = free_port();
    let config = |n: usize| {
        format!(
            "{CLASS}{}{}{}",
            http_gateway(port),
            service("svc", backend),
            route_spec(
                "r",
                &format!(
                    "  rules:
    - filters:
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set: [{{name: x-generation, value: \"{n}\"}}]
      backendRefs: [{{name: svc, port: 80}}]
"
                )
            )
        )
    };
    let gw = Gateway::start(&config(0)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            // One keep-alive client per task, as real clients reuse connections.
            let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
            let url: http::Uri = format!("http://127.0.0.1:{port}/load").parse().unwrap();
            // Bounded: the reload loop below ends within its own deadline.
            for _ in 0..1_000_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let sent = tokio::time::timeout(PATIENCE, client.get(url.clone())).await;
                let status = match sent {
                    Ok(Ok(resp)) => {
                        let status = resp.status().as_u16();
                        http_body_util::BodyExt::collect(resp.into_body())
                            .await
                            .map(|_| status)
                            .map_err(|e| e.to_string())
                    }
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("timed out".into()),
                };
                match status {
                    Ok(200) => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("failed request: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    for n in 1..=100 {
        gw.reconfigure(&config(n)).await;
    }
    let (_, body) = get(&format!("http://127.0.0.1:{port}/")).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert!(body.contains("\"x-generation\":\"100\""), "the last change is served: {body}");
    assert_eq!(gw.status().await["generation"], 101);
    assert_eq!(failed.load(Ordering::Relaxed), 0, "{} requests succeeded", ok.load(Ordering::Relaxed));
    assert!(ok.load(Ordering::Relaxed) > 100, "the load was steady");
}

/// SIGTERM stops new connections at once and lets requests in flight finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_requests_in_flight() {
    let backend = slow_backend(Duration::from_millis(800)).await;
    let port = free_port();
    let mut gw =
        Gateway::start(&format!("{CLASS}{}{}{}", http_gateway(port), service("svc", backend), route("r", "/", "svc")))
            .await;
    let in_flight: Vec<_> =
        (0..20).map(|_| tokio::spawn(async move { get(&format!("http://127.0.0.1:{port}/slow")).await })).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = std::process::Command::new("kill").args(["-TERM", &gw.pid().to_string()]).status().unwrap();
    assert!(killed.success());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(),
        "no new connection is accepted while draining"
    );
    for r in in_flight {
        assert_eq!(r.await.unwrap().map(|(code, _)| code), Ok(200));
    }
    let exit = gw.wait_exit(PATIENCE).expect("gatehouse exits after draining");
    assert!(exit.success(), "{exit:?}");
}

/// A client that never finishes its request head does not hold a drain to its deadline
/// (30 s by default): waits for heads stay bounded while the socket drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_head_does_not_hold_the_drain() {
    use tokio::io::AsyncWriteExt;
    let backend = echo_backend("one").await;
    let port = free_port();
    let mut gw =
        Gateway::start(&format!("{CLASS}{}{}{}", http_gateway(port), service("svc", backend), route("r", "/", "svc")))
            .await;
    let mut stalled = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stalled.write_all(b"GET / HTTP/1.1\r\nHost: example.com\r\nX-Never: ").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let killed = std::process::Command::new("kill").args(["-TERM", &gw.pid().to_string()]).status().unwrap();
    assert!(killed.success());
    let exit = gw.wait_exit(Duration::from_secs(20)).expect("gatehouse exits well before the drain deadline");
    assert!(exit.success(), "{exit:?}");
    assert!(started.elapsed() < Duration::from_secs(15), "exited after {:?}", started.elapsed());
    drop(stalled);
}
