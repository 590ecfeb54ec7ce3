//! HTTPRoute filters as the backend and the client see them: header modifiers, redirects,
//! URL rewrites, and filters on a backendRef.

use bytes::Bytes;
use http_body_util::Full;

use super::common::*;

fn get_with(url: &str, host: &str, headers: &[(&str, &str)]) -> hyper::Request<Full<Bytes>> {
    let mut b = hyper::Request::get(url).header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::new())).unwrap()
}

#[tokio::test]
async fn request_header_modifier_sets_adds_and_removes() {
    let port = free_port();
    let (addr, _) = recording_backend("echo").await;
    let rules = "  rules:
    - filters:
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set:
              - name: X-Header-Set
                value: set-overwrites-values
            add:
              - name: X-Header-Add
                value: header-val-1
              - name: X-Header-Add-Append
                value: header-val-2
            remove:
              - X-Header-Remove
      backendRefs:
        - name: svc
          port: 80
";
    let config = format!("{CLASS}{}{}{}", http_gateway(port), service("svc", addr), route_spec("r", rules));
    let _gw = Gateway::start(&config).await;
    let (code, _, body) = request(get_with(
        &format!("http://127.0.0.1:{port}/"),
        "example.com",
        &[("X-Header-Remove", "remove-val"), ("X-Header-Add-Append", "append-val-1"), ("X-Header-Set", "set-val")],
    ))
    .await
    .unwrap();
    assert_eq!(code, 200);
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    let h = &seen["headers"];
    assert_eq!(h["x-header-set"], "set-overwrites-values", "{h}");
    assert_eq!(h["x-header-add"], "header-val-1", "{h}");
    assert_eq!(h["x-header-add-append"], "append-val-1,header-val-2", "add appends: {h}");
    assert!(h.get("x-header-remove").is_none(), "{h}");
}

#[tokio::test]
async fn response_header_modifier_sets_adds_and_removes() {
    let port = free_port();
    let (addr, _) = recording_backend("echo").await;
    let rules = "  rules:
    - filters:
        - type: ResponseHeaderModifier
          responseHeaderModifier:
            set:
              - name: X-Header-Set
                value: set-overwrites-values
            add:
              - name: X-Header-Add
                value: header-val-1
              - name: X-Header-Add-Append
                value: header-val-2
            remove:
              - X-Header-Remove
      backendRefs:
        - name: svc
          port: 80
";
    let config = format!("{CLASS}{}{}{}", http_gateway(port), service("svc", addr), route_spec("r", rules));
    let _gw = Gateway::start(&config).await;
    let (code, headers, _) = request(get_with(
        &format!("http://127.0.0.1:{port}/"),
        "example.com",
        &[
            ("x-echo-response-header", "X-Header-Remove=remove-val"),
            ("x-echo-response-header", "X-Header-Add-Append=append-val-1"),
            ("x-echo-response-header", "X-Header-Set=set-val"),
            ("x-echo-response-header", "X-Untouched=same"),
        ],
    ))
    .await
    .unwrap();
    assert_eq!(code, 200);
    let all = |n: &str| headers.get_all(n).iter().map(|v| v.to_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(all("x-header-set"), ["set-overwrites-values"], "{headers:?}");
    assert_eq!(all("x-header-add"), ["header-val-1"], "{headers:?}");
    assert_eq!(all("x-header-add-append"), ["append-val-1", "header-val-2"], "{headers:?}");
    assert!(all("x-header-remove").is_empty(), "{headers:?}");
    assert_eq!(all("x-untouched"), ["same"]);
}

/// One rule per case: `(path, redirect YAML, status, expected Location)`, where `{port}` in
/// the Location stands for the listener's port.
#[tokio::test]
async fn request_redirect_defaults_scheme_host_and_port_as_the_spec_says() {
    let port = free_port();
    let cases: &[(&str, &str, u16, &str)] = &[
        // Nothing but a status: same scheme, the request's host, the listener's port.
        ("/plain", "statusCode: 301", 301, "http://redirect.example:{port}/plain"),
        ("/default-status", "hostname: other.example", 302, "http://other.example:{port}/default-status"),
        // A scheme without a port: the scheme's well-known port, left out of the Location.
        ("/scheme", "scheme: https", 302, "https://redirect.example/scheme"),
        ("/scheme-http", "scheme: http", 302, "http://redirect.example/scheme-http"),
        ("/scheme-port", "scheme: https\n            port: 8443", 302, "https://redirect.example:8443/scheme-port"),
        ("/port", "port: 8083", 302, "http://redirect.example:8083/port"),
        ("/port-80", "port: 80", 302, "http://redirect.example/port-80"),
        (
            "/all",
            "scheme: https\n            hostname: example.org\n            port: 443\n            statusCode: 301",
            301,
            "https://example.org/all",
        ),
        ("/s303", "statusCode: 303", 303, "http://redirect.example:{port}/s303"),
        ("/s307", "statusCode: 307", 307, "http://redirect.example:{port}/s307"),
        ("/s308", "statusCode: 308", 308, "http://redirect.example:{port}/s308"),
        (
            "/full",
            "path:\n              type: ReplaceFullPath\n              replaceFullPath: /replaced",
            302,
            "http://redirect.example:{port}/replaced",
        ),
        (
            "/prefix",
            "path:\n              type: ReplacePrefixMatch\n              replacePrefixMatch: /new-prefix",
            302,
            "http://redirect.example:{port}/new-prefix/one?q=1",
        ),
        (
            "/strip",
            "path:\n              type: ReplacePrefixMatch\n              replacePrefixMatch: /",
            302,
            "http://redirect.example:{port}/one?q=1",
        ),
    ];
    let mut rules = "  rules:\n".to_string();
    for (path, redirect, _, _) in cases {
        rules.push_str(&format!(
            "    - matches:
        - path:
            type: PathPrefix
            value: {path}
      filters:
        - type: RequestRedirect
          requestRedirect:
            {redirect}
"
        ));
    }
    let config = format!("{CLASS}{}{}", http_gateway(port), route_spec("r", &rules));
    let _gw = Gateway::start(&config).await;
    for (path, _, status, location) in cases {
        let request_path = match *path {
            "/prefix" | "/strip" => format!("{path}/one?q=1"),
            p => p.to_string(),
        };
        let (code, headers, _) =
            get_host(&format!("http://127.0.0.1:{port}{request_path}"), "redirect.example").await.unwrap();
        let want = location.replace("{port}", &port.to_string());
        assert_eq!(code, *status, "{path}");
        assert_eq!(headers.get("location").and_then(|l| l.to_str().ok()), Some(want.as_str()), "{path}");
    }
}

/// The cases of the conformance test HTTPRouteRewritePath, plus the trailing-slash rows of the
/// ReplacePrefixMatch table in the HTTPPathModifier documentation.
#[tokio::test]
async fn url_rewrite_replaces_full_paths_and_prefixes() {
    let port = free_port();
    let (addr, _) = recording_backend("echo").await;
    let rewrite = |prefix: &str, kind: &str, value: &str, extra: &str| {
        let field = if kind == "ReplaceFullPath" { "replaceFullPath" } else { "replacePrefixMatch" };
        format!(
            "    - matches:
        - path:
            type: PathPrefix
            value: {prefix}
      filters:
        - type: URLRewrite
          urlRewrite:
            path:
              type: {kind}
              {field}: {value}
{extra}      backendRefs:
        - name: svc
          port: 80
"
        )
    };
    let headers = "        - type: RequestHeaderModifier
          requestHeaderModifier:
            set:
              - name: X-Header-Set
                value: set-overwrites-values
            add:
              - name: X-Header-Add
                value: header-val-1
              - name: X-Header-Add-Append
                value: header-val-2
            remove:
              - X-Header-Remove
";
    let rules = [
        rewrite("/prefix/one", "ReplacePrefixMatch", "/one", ""),
        rewrite("/strip-prefix", "ReplacePrefixMatch", "/", ""),
        rewrite("/full/one", "ReplaceFullPath", "/one", ""),
        rewrite("/full/rewrite-path-and-modify-headers", "ReplaceFullPath", "/test", headers),
        rewrite("/prefix/rewrite-path-and-modify-headers", "ReplacePrefixMatch", "/prefix", headers),
        rewrite("/foo", "ReplacePrefixMatch", "/xyz", ""),
        rewrite("/bar/", "ReplacePrefixMatch", "/xyz/", ""),
        rewrite("/baz", "ReplacePrefixMatch", "/xyz/", ""),
    ]
    .concat();
    let config = format!(
        "{CLASS}{}{}{}",
        http_gateway(port),
        service("svc", addr),
        route_spec("r", &format!("  rules:\n{rules}"))
    );
    let _gw = Gateway::start(&config).await;

    for (from, to) in [
        ("/prefix/one/two", "/one/two"),
        ("/prefix/one", "/one"),
        ("/prefix/one/", "/one/"),
        ("/prefix/one/two?a=b&c=d", "/one/two?a=b&c=d"),
        ("/strip-prefix/three", "/three"),
        ("/strip-prefix", "/"),
        ("/strip-prefix/", "/"),
        ("/full/one/two", "/one"),
        ("/full/one/two?keep=1", "/one?keep=1"),
        ("/foo/bar", "/xyz/bar"),
        ("/foo", "/xyz"),
        ("/foo/", "/xyz/"),
        ("/bar/x", "/xyz/x"),
        ("/bar", "/xyz"),
        ("/baz/x", "/xyz/x"),
    ] {
        let (code, seen) = get_json(port, from, "example.com").await;
        assert_eq!(code, 200, "{from}");
        assert_eq!(seen["path"], to, "{from}");
    }

    for (from, to) in [
        ("/full/rewrite-path-and-modify-headers/test", "/test"),
        ("/prefix/rewrite-path-and-modify-headers/one", "/prefix/one"),
    ] {
        let (code, _, body) = request(get_with(
            &format!("http://127.0.0.1:{port}{from}"),
            "example.com",
            &[("X-Header-Remove", "remove-val"), ("X-Header-Add-Append", "append-val-1"), ("X-Header-Set", "set-val")],
        ))
        .await
        .unwrap();
        assert_eq!(code, 200);
        let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(seen["path"], to, "{from}");
        let h = &seen["headers"];
        assert_eq!(h["x-header-add"], "header-val-1");
        assert_eq!(h["x-header-add-append"], "append-val-1,header-val-2");
        assert_eq!(h["x-header-set"], "set-overwrites-values");
        assert!(h.get("x-header-remove").is_none());
    }
}

#[tokio::test]
async fn url_rewrite_hostname_changes_the_host_the_backend_sees() {
    let port = free_port();
    let (addr, _) = recording_backend("echo").await;
    let rules = "  rules:
    - matches:
        - path:
            type: PathPrefix
            value: /rewrite
      filters:
        - type: URLRewrite
          urlRewrite:
            hostname: rewritten.example
      backendRefs:
        - name: svc
          port: 80
    - backendRefs:
        - name: svc
          port: 80
";
    let config = format!("{CLASS}{}{}{}", http_gateway(port), service("svc", addr), route_spec("r", rules));
    let _gw = Gateway::start(&config).await;
    let (code, seen) = get_json(port, "/rewrite/x", "original.example").await;
    assert_eq!(code, 200);
    assert_eq!(seen["headers"]["host"], "rewritten.example", "{seen}");
    assert_eq!(seen["path"], "/rewrite/x", "only the host changes");
    let (_, seen) = get_json(port, "/other", "original.example").await;
    assert_eq!(seen["headers"]["host"], "original.example");
}

#[tokio::test]
async fn filters_on_a_backend_ref_apply_to_that_backend_only() {
    let port = free_port();
    let (a, _) = recording_backend("a").await;
    let (b, _) = recording_backend("b").await;
    let rules = "  rules:
    - filters:
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set:
              - name: x-rule
                value: rule
      backendRefs:
        - name: a
          port: 80
          filters:
            - type: RequestHeaderModifier
              requestHeaderModifier:
                set:
                  - name: x-backend
                    value: for-a
            - type: ResponseHeaderModifier
              responseHeaderModifier:
                set:
                  - name: x-served-by
                    value: a
        - name: b
          port: 80
          filters:
            - type: RequestHeaderModifier
              requestHeaderModifier:
                set:
                  - name: x-backend
                    value: for-b
";
    let config =
        format!("{CLASS}{}{}{}{}", http_gateway(port), service("a", a), service("b", b), route_spec("r", rules));
    let _gw = Gateway::start(&config).await;
    let mut seen_backends = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let (code, headers, body) = get_host(&format!("http://127.0.0.1:{port}/"), "example.com").await.unwrap();
        assert_eq!(code, 200);
        let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
        let backend = seen["backend"].as_str().unwrap().to_string();
        assert_eq!(seen["headers"]["x-rule"], "rule");
        assert_eq!(seen["headers"]["x-backend"], format!("for-{backend}"), "{seen}");
        let served_by = headers.get("x-served-by").map(|v| v.to_str().unwrap().to_string());
        assert_eq!(served_by, (backend == "a").then(|| "a".to_string()), "response filter of backend {backend}");
        seen_backends.insert(backend);
    }
    assert_eq!(seen_backends.len(), 2, "both backends served");
}
