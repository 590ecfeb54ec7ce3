//! The IR: actions and backends of rules, endpoints, match precedence and virtual hosts.

use std::net::SocketAddr;

use translate::ir::{HttpRule, Listener, PathMatch, RuleAction, WeightedBackend};

use crate::common::run;

const GATEWAY: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: gatehouse
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
";

fn service(name: &str) -> String {
    format!(
        "\
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec: {{ports: [{{port: 80}}]}}
---
"
    )
}

/// The action of the rule named `rule` of `route` on `listener`.
fn rule<'a>(l: &'a Listener, route: &str) -> &'a HttpRule {
    l.rules.iter().find(|r| r.route == route).unwrap_or_else(|| panic!("no rule {route} in {:#?}", l.rules))
}

#[test]
fn rule_with_only_invalid_backend_forwards_to_nothing() {
    let t = run(&format!(
        "{GATEWAY}
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web}}
spec:
  parentRefs: [{{name: gw}}]
  rules: [{{name: broken, backendRefs: [{{name: nonexistent, port: 80}}]}}]
"
    ));
    let l = t.ir_listener("default/gw/http");
    assert_eq!(
        rule(l, "HTTPRoute/default/web/broken").action,
        RuleAction::Forward(vec![WeightedBackend { weight: 1, backend: None, filters: vec![] }]),
        "every request of the rule must answer 500"
    );
    assert!(t.output.config.backends.is_empty());
}

#[test]
fn weights_are_carried_and_invalid_shares_kept() {
    let t = run(&format!(
        "{GATEWAY}{}{}{}
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - backendRefs:
    - {{name: a, port: 80, weight: 70}}
    - {{name: b, port: 80, weight: 30}}
    - {{name: c, port: 80, weight: 0}}
    - {{name: missing, port: 80, weight: 10}}
",
        service("a"),
        service("b"),
        service("c"),
    ));
    let l = t.ir_listener("default/gw/http");
    let RuleAction::Forward(backends) = &rule(l, "HTTPRoute/default/web/0").action else { panic!("not a forward") };
    let got: Vec<(u32, Option<&str>)> = backends.iter().map(|b| (b.weight, b.backend.as_deref())).collect();
    assert_eq!(got, [(70, Some("default/a:80")), (30, Some("default/b:80")), (0, Some("default/c:80")), (10, None)]);
}

#[test]
fn endpoints_come_from_ready_endpoints_of_the_named_port() {
    let t = run(&format!(
        "{GATEWAY}
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  ports:
  - {{name: http, port: 80, targetPort: 8080}}
  - {{name: admin, port: 9000, targetPort: 9090}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc
  labels: {{kubernetes.io/service-name: web}}
addressType: IPv4
ports:
- {{name: admin, port: 9090}}
- {{name: http, port: 8080}}
endpoints:
- {{addresses: [10.1.0.1], conditions: {{ready: true}}}}
- {{addresses: [10.1.0.2], conditions: {{ready: false}}}}
- {{addresses: [10.1.0.3]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-def
  labels: {{kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{{name: http, port: 8080}}]
endpoints: [{{addresses: [10.1.0.4], conditions: {{}}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: other-abc
  labels: {{kubernetes.io/service-name: other}}
addressType: IPv4
ports: [{{name: http, port: 8080}}]
endpoints: [{{addresses: [10.9.9.9]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - backendRefs: [{{name: web, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /admin}}}}]
    backendRefs: [{{name: web, port: 9000}}]
"
    ));
    let addrs = |key: &str| -> Vec<String> {
        t.output.config.backends[key].endpoints.iter().map(SocketAddr::to_string).collect()
    };
    assert_eq!(addrs("default/web:80"), ["10.1.0.1:8080", "10.1.0.3:8080", "10.1.0.4:8080"]);
    assert_eq!(addrs("default/web:9000"), ["10.1.0.1:9090", "10.1.0.3:9090"]);
}

/// Entries of the catch-all virtual host, as `route/rule path`.
fn order(l: &Listener) -> Vec<String> {
    let vhost = l.virtual_hosts.iter().find(|v| v.hostnames == ["*"]).expect("a catch-all virtual host");
    vhost
        .routes
        .iter()
        .map(|e| {
            let path = match &e.matcher.path {
                PathMatch::Exact(p) => format!("Exact {p}"),
                PathMatch::Prefix(p) => format!("Prefix {p}"),
                PathMatch::Regex(p) => format!("Regex {p}"),
            };
            format!("{} {path}", l.rules[e.rule].route)
        })
        .collect()
}

#[test]
fn match_precedence() {
    let t = run(&format!(
        "{GATEWAY}{}
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: a-newer, creationTimestamp: '2025-06-01T00:00:00Z'}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - name: regex
    matches: [{{path: {{type: RegularExpression, value: /foo.*}}}}]
  - name: root
    matches: [{{path: {{type: PathPrefix, value: /}}}}]
  - name: prefix
    matches: [{{path: {{type: PathPrefix, value: /foo}}}}]
  - name: one-header
    matches: [{{path: {{type: PathPrefix, value: /foo}}, headers: [{{name: a, value: '1'}}]}}]
  - name: two-headers
    matches: [{{path: {{type: PathPrefix, value: /foo}}, headers: [{{name: a, value: '1'}}, {{name: b, value: '2'}}]}}]
  - name: method
    matches: [{{path: {{type: PathPrefix, value: /foo}}, method: GET}}]
  - name: longer
    matches: [{{path: {{type: PathPrefix, value: /foo/bar}}}}]
  - name: exact
    matches: [{{path: {{type: Exact, value: /foo}}}}]
  - name: shared
    matches: [{{path: {{type: Exact, value: /shared}}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: z-older, creationTimestamp: '2025-01-01T00:00:00Z'}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - name: shared
    matches: [{{path: {{type: Exact, value: /shared}}}}]
",
        service("svc")
    ));
    assert_eq!(
        order(t.ir_listener("default/gw/http")),
        [
            // Exact, longest first; the older route wins a tie.
            "HTTPRoute/default/z-older/shared Exact /shared",
            "HTTPRoute/default/a-newer/shared Exact /shared",
            "HTTPRoute/default/a-newer/exact Exact /foo",
            "HTTPRoute/default/a-newer/longer Prefix /foo/bar",
            // Same prefix: a method, then more headers, first.
            "HTTPRoute/default/a-newer/method Prefix /foo",
            "HTTPRoute/default/a-newer/two-headers Prefix /foo",
            "HTTPRoute/default/a-newer/one-header Prefix /foo",
            "HTTPRoute/default/a-newer/prefix Prefix /foo",
            "HTTPRoute/default/a-newer/root Prefix /",
            "HTTPRoute/default/a-newer/regex Regex /foo.*",
        ]
    );
}

#[test]
fn virtual_hosts_are_the_hostname_intersections() {
    let t = run("\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: gatehouse
  listeners: [{name: wild, port: 80, protocol: HTTP, hostname: '*.example.com'}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: foo}
spec:
  parentRefs: [{name: gw}]
  hostnames: [foo.example.com, foo.example.org]
  rules: [{name: r, matches: [{path: {type: PathPrefix, value: /foo}}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: any}
spec:
  parentRefs: [{name: gw}]
  rules: [{name: r}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: broad}
spec:
  parentRefs: [{name: gw}]
  hostnames: ['*.com']
  rules: [{name: r, matches: [{path: {type: Exact, value: /broad}}]}]
");
    let l = t.ir_listener("default/gw/wild");
    assert_eq!(l.hostname.as_deref(), Some("*.example.com"));
    let vhosts: Vec<(String, Vec<String>)> = l
        .virtual_hosts
        .iter()
        .map(|v| (v.hostnames.join(","), v.routes.iter().map(|e| l.rules[e.rule].route.clone()).collect()))
        .collect();
    assert_eq!(
        vhosts,
        [
            // The exact name first, falling back to the listener-wide routes.
            (
                "foo.example.com".to_string(),
                vec![
                    "HTTPRoute/default/foo/r".to_string(),
                    "HTTPRoute/default/broad/r".to_string(),
                    "HTTPRoute/default/any/r".to_string(),
                ]
            ),
            // `*.com` narrows to the listener's `*.example.com`, as a route without hostnames.
            (
                "*.example.com".to_string(),
                vec!["HTTPRoute/default/broad/r".to_string(), "HTTPRoute/default/any/r".to_string()]
            ),
        ]
    );
}
