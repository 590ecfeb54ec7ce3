//! Routing as a client sees it: path, method, header and query matches, hostnames and
//! listener isolation, weighted backends, and what invalid or empty backends answer.

use std::collections::BTreeMap;

use super::common::*;

/// A rule sending `matches` (YAML list items, indented for `rules[].matches`) to `svc`.
fn rule(matches: &str, svc: &str) -> String {
    format!("    - matches:\n{matches}      backendRefs:\n        - name: {svc}\n          port: 80\n")
}

fn path(kind: &str, value: &str) -> String {
    format!("        - path:\n            type: {kind}\n            value: {value}\n")
}

#[tokio::test]
async fn path_prefix_matches_whole_segments_and_exact_matches_only_itself() {
    let (foo, _) = recording_backend("foo").await;
    let (foobar, _) = recording_backend("foo-bar").await;
    let (exact, _) = recording_backend("exact").await;
    let port = free_port();
    let rules = format!(
        "  rules:\n{}{}{}",
        rule(&path("PathPrefix", "/foo"), "foo"),
        rule(&path("PathPrefix", "/foo/bar"), "foobar"),
        rule(&path("Exact", "/exact"), "exact"),
    );
    let config = format!(
        "{CLASS}{}{}{}{}{}",
        http_gateway(port),
        service("foo", foo),
        service("foobar", foobar),
        service("exact", exact),
        route_spec("r", &rules)
    );
    let _gw = Gateway::start(&config).await;

    let cases: &[(&str, Option<&str>)] = &[
        ("/foo", Some("foo")),
        ("/foo/", Some("foo")),
        ("/foo/baz", Some("foo")),
        ("/foo?x=1", Some("foo")),
        ("/foobar", None),
        ("/fo", None),
        ("/foo/barx", Some("foo")),
        // The longest prefix wins, whatever the order of the rules.
        ("/foo/bar", Some("foo-bar")),
        ("/foo/bar/", Some("foo-bar")),
        ("/foo/bar/baz", Some("foo-bar")),
        ("/exact", Some("exact")),
        ("/exact?q=1", Some("exact")),
        ("/exact/", None),
        ("/exact/x", None),
        ("/exactly", None),
        ("/FOO", None),
        ("/", None),
        ("/other", None),
    ];
    for (p, want) in cases {
        let (code, body) = get_json(port, p, "example.com").await;
        match want {
            Some(b) => {
                assert_eq!(code, 200, "{p}");
                assert_eq!(body["backend"], *b, "{p}: {body}");
            }
            None => assert_eq!(code, 404, "{p} must not match: {body}"),
        }
    }
}

#[tokio::test]
async fn method_header_and_query_matches_with_their_precedence() {
    let mut config = CLASS.to_string();
    let port = free_port();
    config.push_str(&http_gateway(port));
    for name in ["post", "v2", "blue", "regex", "default"] {
        let (addr, _) = recording_backend(Box::leak(name.to_string().into_boxed_str())).await;
        config.push_str(&service(name, addr));
    }
    // Rules listed in the reverse of their precedence, so that order alone cannot pass.
    let rules = format!(
        "  rules:\n{}{}{}{}{}",
        rule(&path("PathPrefix", "/m"), "default"),
        rule(
            "        - path:\n            type: PathPrefix\n            value: /m\n          queryParams:\n            - name: color\n              value: blue\n",
            "blue"
        ),
        rule(
            "        - path:\n            type: PathPrefix\n            value: /m\n          headers:\n            - name: X-Version\n              value: v2\n",
            "v2"
        ),
        rule("        - path:\n            type: PathPrefix\n            value: /m\n          method: POST\n", "post"),
        rule(
            "        - path:\n            type: PathPrefix\n            value: /r\n          headers:\n            - name: x-id\n              type: RegularExpression\n              value: \"[0-9]+\"\n",
            "regex"
        ),
    );
    config.push_str(&route_spec("r", &rules));
    let _gw = Gateway::start(&config).await;
    let url = format!("http://127.0.0.1:{port}");

    let send = |method: &str, p: &str, headers: &[(&str, &str)]| {
        let mut b = hyper::Request::builder().method(method).uri(format!("{url}{p}"));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        request(b.body(http_body_util::Full::new(bytes::Bytes::new())).unwrap())
    };
    let backend = |r: Result<(u16, http::HeaderMap, String), String>| {
        let (code, _, body) = r.unwrap();
        if code != 200 {
            return format!("status {code}");
        }
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["backend"].as_str().unwrap().to_string()
    };

    assert_eq!(backend(send("GET", "/m", &[]).await), "default");
    assert_eq!(backend(send("POST", "/m", &[]).await), "post");
    assert_eq!(backend(send("POST", "/m?color=blue", &[("x-version", "v2")]).await), "post", "method beats headers");
    assert_eq!(backend(send("GET", "/m", &[("x-version", "v2")]).await), "v2");
    assert_eq!(backend(send("GET", "/m", &[("X-VERSION", "v2")]).await), "v2", "header names are case-insensitive");
    assert_eq!(backend(send("GET", "/m", &[("x-version", "V2")]).await), "default", "header values are exact");
    assert_eq!(backend(send("GET", "/m?color=blue", &[("x-version", "v2")]).await), "v2", "headers beat query");
    assert_eq!(backend(send("GET", "/m?color=blue", &[]).await), "blue");
    assert_eq!(backend(send("GET", "/m/sub?a=1&color=blue", &[]).await), "blue");
    assert_eq!(backend(send("GET", "/m?color=Blue", &[]).await), "default");
    assert_eq!(backend(send("GET", "/m?Color=blue", &[]).await), "default", "query names are case-sensitive");
    assert_eq!(backend(send("GET", "/r", &[("x-id", "123")]).await), "regex");
    assert_eq!(backend(send("GET", "/r", &[("x-id", "12a")]).await), "status 404", "regexes are anchored");
    assert_eq!(backend(send("GET", "/r", &[]).await), "status 404");
}

#[tokio::test]
async fn exact_hostnames_win_over_wildcards_and_unknown_hosts_get_404() {
    let port = free_port();
    let mut config = format!("{CLASS}{}", http_gateway(port));
    for name in ["exact", "wild", "deeper"] {
        let (addr, _) = recording_backend(Box::leak(name.to_string().into_boxed_str())).await;
        config.push_str(&service(name, addr));
    }
    let r = |name: &str, host: &str, svc: &str| {
        route_spec(name, &format!("  hostnames: [\"{host}\"]\n  rules:\n{}", rule(&path("PathPrefix", "/"), svc)))
    };
    config.push_str(&r("wild", "*.example.com", "wild"));
    config.push_str(&r("exact", "foo.example.com", "exact"));
    config.push_str(&r("deeper", "*.foo.example.com", "deeper"));
    let _gw = Gateway::start(&config).await;

    for (host, want) in [
        ("foo.example.com", Some("exact")),
        ("FOO.Example.COM", Some("exact")),
        (&format!("foo.example.com:{port}") as &str, Some("exact")),
        ("bar.example.com", Some("wild")),
        ("a.b.example.com", Some("wild")),
        ("x.foo.example.com", Some("deeper")),
        ("example.com", None),
        ("other.org", None),
        ("fooexample.com", None),
    ] {
        let (code, body) = get_json(port, "/", host).await;
        match want {
            Some(b) => assert_eq!((code, body["backend"].as_str()), (200, Some(b)), "{host}: {body}"),
            None => assert_eq!(code, 404, "{host}: {body}"),
        }
    }
}

/// As in the conformance test GatewayHTTPListenerIsolation: a request goes to the listener
/// whose hostname matches it most specifically, and only that listener's routes serve it.
#[tokio::test]
async fn each_request_is_served_only_by_the_most_specific_listener() {
    let port = free_port();
    let (addr, _) = recording_backend("echo").await;
    let listeners = [
        ("empty-hostname", None),
        ("wildcard-example-com", Some("*.example.com")),
        ("wildcard-foo-example-com", Some("*.foo.example.com")),
        ("abc-foo-example-com", Some("abc.foo.example.com")),
    ];
    let mut gateway = "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: gw
spec:
  gatewayClassName: gatehouse
  listeners:
"
    .to_string();
    let mut routes = String::new();
    for (name, host) in listeners {
        gateway.push_str(&format!("    - name: {name}\n      protocol: HTTP\n      port: {port}\n"));
        if let Some(h) = host {
            gateway.push_str(&format!("      hostname: \"{h}\"\n"));
        }
        routes.push_str(&format!(
            "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: {name}
spec:
  parentRefs:
    - name: gw
      sectionName: {name}
  rules:
    - matches:
        - path:
            type: PathPrefix
            value: /{name}
      backendRefs:
        - name: svc
          port: 80
"
        ));
    }
    let config = format!("{CLASS}{gateway}{routes}{}", service("svc", addr));
    let _gw = Gateway::start(&config).await;

    let hosts = [
        ("bar.com", "empty-hostname"),
        ("bar.example.com", "wildcard-example-com"),
        ("bar.foo.example.com", "wildcard-foo-example-com"),
        ("abc.foo.example.com", "abc-foo-example-com"),
    ];
    for (host, owner) in hosts {
        for (listener, _) in listeners {
            let (code, _) = get_json(port, &format!("/{listener}"), host).await;
            let want = if listener == owner { 200 } else { 404 };
            assert_eq!(code, want, "Host {host}, path /{listener}");
        }
    }
}

#[tokio::test]
async fn weighted_backends_share_requests_by_weight_and_weight_zero_gets_none() {
    let port = free_port();
    let (a, _) = recording_backend("a").await;
    let (b, _) = recording_backend("b").await;
    let (c, c_seen) = recording_backend("c").await;
    let rules = "  rules:
    - backendRefs:
        - name: a
          port: 80
          weight: 3
        - name: b
          port: 80
          weight: 1
        - name: c
          port: 80
          weight: 0
";
    let config = format!(
        "{CLASS}{}{}{}{}{}",
        http_gateway(port),
        service("a", a),
        service("b", b),
        service("c", c),
        route_spec("r", rules)
    );
    let _gw = Gateway::start(&config).await;
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..400 {
        let (code, body) = get_json(port, "/", "example.com").await;
        assert_eq!(code, 200);
        *counts.entry(body["backend"].as_str().unwrap().to_string()).or_default() += 1;
    }
    let a = counts.get("a").copied().unwrap_or(0);
    let b = counts.get("b").copied().unwrap_or(0);
    assert!((280..=320).contains(&a), "weights 3:1 over 400 requests: {counts:?}");
    assert!((80..=120).contains(&b), "weights 3:1 over 400 requests: {counts:?}");
    assert!(!counts.contains_key("c") && c_seen.lock().unwrap().is_empty(), "weight 0 gets nothing: {counts:?}");
}

#[tokio::test]
async fn the_share_of_an_invalid_backend_answers_500() {
    let port = free_port();
    let (a, _) = recording_backend("a").await;
    let rules = "  rules:
    - matches:
        - path:
            type: PathPrefix
            value: /half
      backendRefs:
        - name: a
          port: 80
          weight: 1
        - name: does-not-exist
          port: 80
          weight: 1
    - matches:
        - path:
            type: PathPrefix
            value: /none
      backendRefs:
        - name: does-not-exist
          port: 80
";
    let config = format!("{CLASS}{}{}{}", http_gateway(port), service("a", a), route_spec("r", rules));
    let _gw = Gateway::start(&config).await;
    let (mut ok, mut errors) = (0, 0);
    for _ in 0..100 {
        match get_json(port, "/half", "example.com").await.0 {
            200 => ok += 1,
            500 => errors += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert!((40..=60).contains(&ok) && (40..=60).contains(&errors), "200s {ok}, 500s {errors}");
    for _ in 0..5 {
        assert_eq!(get_json(port, "/none", "example.com").await.0, 500);
    }
}

#[tokio::test]
async fn a_service_without_ready_endpoints_answers_503() {
    let port = free_port();
    let (a, a_seen) = recording_backend("a").await;
    let rules = format!(
        "  rules:\n{}{}",
        rule(&path("PathPrefix", "/unready"), "unready"),
        rule(&path("PathPrefix", "/empty"), "empty")
    );
    let config = format!(
        "{CLASS}{}{}{}{}",
        http_gateway(port),
        service_with("unready", None, &[(a, false)]),
        service_with("empty", None, &[]),
        route_spec("r", &rules)
    );
    let _gw = Gateway::start(&config).await;
    assert_eq!(get_json(port, "/unready", "example.com").await.0, 503);
    assert_eq!(get_json(port, "/empty", "example.com").await.0, 503);
    assert!(a_seen.lock().unwrap().is_empty(), "an endpoint that is not ready gets no traffic");
}
