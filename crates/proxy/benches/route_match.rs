//! Route matching at scale: one listener with 10,000 routes. `cargo bench -p proxy`.

use std::sync::Arc;

use proxy::{
    config::{Backends, BindConfig},
    metrics::ProxyMetrics,
};
use translate::ir::{
    Bind, BindProtocol, HttpMatch, HttpRule, Listener, ListenerProtocol, PathMatch, RouteEntry, RuleAction,
    StringMatch, ValueMatch, VirtualHost,
};

const ROUTES: usize = 10_000;

/// Routes as translation orders them: for each service an exact path with a header match,
/// a prefix, and every tenth a regex; then a catch-all.
fn bind() -> BindConfig {
    let mut routes = Vec::new();
    for i in 0..ROUTES {
        routes.push(RouteEntry {
            matcher: HttpMatch {
                path: PathMatch::Exact(format!("/svc-{i}/health")),
                headers: vec![ValueMatch { name: "x-canary".into(), value: StringMatch::Exact("1".into()) }],
                ..HttpMatch::default()
            },
            rule: i,
        });
    }
    for i in 0..ROUTES {
        routes.push(RouteEntry {
            matcher: HttpMatch { path: PathMatch::Prefix(format!("/svc-{i}/api")), ..HttpMatch::default() },
            rule: i,
        });
    }
    for i in (0..ROUTES).step_by(10) {
        routes.push(RouteEntry {
            matcher: HttpMatch { path: PathMatch::Regex(format!("/re-{i}/[0-9]+")), ..HttpMatch::default() },
            rule: i,
        });
    }
    routes.push(RouteEntry { matcher: HttpMatch::default(), rule: 0 });
    let rules = (0..ROUTES)
        .map(|i| HttpRule {
            route: format!("HTTPRoute/default/r{i}/0"),
            grpc: false,
            filters: vec![],
            action: RuleAction::Forward(vec![]),
            timeouts: None,
            retry: None,
        })
        .collect();
    let listener = Listener {
        name: "default/gw/http".into(),
        hostname: None,
        protocol: ListenerProtocol::Http,
        tls: None,
        virtual_hosts: vec![VirtualHost { hostnames: vec!["*".into()], routes }],
        rules,
        stream_routes: vec![],
        backend_client_certificate: None,
    };
    let bind =
        Bind { address: "127.0.0.1:80".parse().unwrap(), protocol: BindProtocol::Http, listeners: vec![listener] };
    BindConfig::compile(&bind, Arc::new(Backends::default()), &ProxyMetrics::default())
}

fn lookup(bind: &BindConfig, path: &str, headers: &http::HeaderMap) -> Option<usize> {
    bind.route(&http::Method::GET, "example.com", path, headers, &[]).map(|(_, e)| e.rule)
}

#[divan::bench]
fn prefix_of_the_last_route(bencher: divan::Bencher) {
    let bind = bind();
    let headers = http::HeaderMap::new();
    assert_eq!(lookup(&bind, "/svc-9999/api/users/42", &headers), Some(9999));
    bencher.bench(|| lookup(&bind, divan::black_box("/svc-9999/api/users/42"), &headers));
}

#[divan::bench]
fn exact_with_header(bencher: divan::Bencher) {
    let bind = bind();
    let mut headers = http::HeaderMap::new();
    headers.insert("x-canary", "1".parse().unwrap());
    assert_eq!(lookup(&bind, "/svc-5000/health", &headers), Some(5000));
    bencher.bench(|| lookup(&bind, divan::black_box("/svc-5000/health"), &headers));
}

#[divan::bench]
fn regex_route(bencher: divan::Bencher) {
    let bind = bind();
    let headers = http::HeaderMap::new();
    assert_eq!(lookup(&bind, "/re-9990/123", &headers), Some(9990));
    bencher.bench(|| lookup(&bind, divan::black_box("/re-9990/123"), &headers));
}

#[divan::bench]
fn catch_all(bencher: divan::Bencher) {
    let bind = bind();
    let headers = http::HeaderMap::new();
    assert_eq!(lookup(&bind, "/unknown/path", &headers), Some(0));
    bencher.bench(|| lookup(&bind, divan::black_box("/unknown/path"), &headers));
}

fn main() {
    divan::main();
}
