//! Route parent status: attachment reasons, backend reference resolution, which parents
//! get an entry and how the entry names its parent.

use api::Kind;
use serde_json::json;

use crate::common::{attached_routes, cond, listener, parent, parent_names, run};

const GATEWAY_INFRA: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: gatehouse
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
";

fn route(name: &str, namespace: &str, spec: &str) -> String {
    format!(
        "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {namespace}}}
spec:
{spec}---
"
    )
}

#[test]
fn same_namespace_listener_rejects_routes_from_other_namespaces() {
    let t = run(&format!(
        "{GATEWAY_INFRA}{}{}",
        route("inside", "infra", "  parentRefs: [{name: gw}]\n"),
        route("outside", "apps", "  parentRefs: [{name: gw, namespace: infra}]\n"),
    ));
    let inside = t.route("infra", "inside");
    assert_eq!(cond(parent(&inside, "gw"), "Accepted"), "True/Accepted");
    let outside = t.route("apps", "outside");
    let p = parent(&outside, "gw");
    assert_eq!(cond(p, "Accepted"), "False/NotAllowedByListeners");
    // ResolvedRefs is written on parents that did not accept the route too.
    assert_eq!(cond(p, "ResolvedRefs"), "True/ResolvedRefs");
    assert_eq!(attached_routes(listener(&t.gateway("infra", "gw"), "http")), 1);
}

#[test]
fn selector_admits_routes_from_labelled_namespaces() {
    let t = run(&format!(
        "\
apiVersion: v1
kind: Namespace
metadata: {{name: web, labels: {{team: web}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: other}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: infra}}
spec:
  gatewayClassName: gatehouse
  listeners:
  - name: by-label
    port: 80
    protocol: HTTP
    hostname: label.example.com
    allowedRoutes: {{namespaces: {{from: Selector, selector: {{matchLabels: {{team: web}}}}}}}}
  - name: by-name
    port: 80
    protocol: HTTP
    hostname: name.example.com
    allowedRoutes:
      namespaces:
        from: Selector
        selector:
          matchExpressions: [{{key: kubernetes.io/metadata.name, operator: In, values: [undeclared]}}]
---
{}{}{}",
        route("web", "web", "  parentRefs: [{name: gw, namespace: infra, sectionName: by-label}]\n"),
        route("other", "other", "  parentRefs: [{name: gw, namespace: infra, sectionName: by-label}]\n"),
        // A namespace without a Namespace object still carries its name label.
        route("undeclared", "undeclared", "  parentRefs: [{name: gw, namespace: infra, sectionName: by-name}]\n"),
    ));
    assert_eq!(cond(parent(&t.route("web", "web"), "gw"), "Accepted"), "True/Accepted");
    assert_eq!(cond(parent(&t.route("other", "other"), "gw"), "Accepted"), "False/NotAllowedByListeners");
    assert_eq!(cond(parent(&t.route("undeclared", "undeclared"), "gw"), "Accepted"), "True/Accepted");
    let gw = t.gateway("infra", "gw");
    assert_eq!(attached_routes(listener(&gw, "by-label")), 1);
    assert_eq!(attached_routes(listener(&gw, "by-name")), 1);
}

#[test]
fn route_kind_not_allowed_by_listeners() {
    let t = run("\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: gatehouse
  listeners:
  - name: grpc-only
    port: 80
    protocol: HTTP
    allowedRoutes: {kinds: [{kind: GRPCRoute}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{name: gw}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: tcp}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: svc, port: 80}]}]
");
    let web = t.route("default", "web");
    assert_eq!(cond(parent(&web, "gw"), "Accepted"), "False/NotAllowedByListeners");
    assert_eq!(cond(parent(&web, "gw"), "ResolvedRefs"), "True/ResolvedRefs");
    let tcp = t.status(Kind::TcpRoute, "default", "tcp");
    assert_eq!(cond(parent(&tcp, "gw"), "Accepted"), "False/NotAllowedByListeners");
    assert_eq!(attached_routes(listener(&t.gateway("default", "gw"), "grpc-only")), 0);
}

#[test]
fn no_matching_parent_for_section_name_or_port() {
    let t = run(&format!(
        "\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  gatewayClassName: gatehouse
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
---
{}{}{}{}",
        route("section", "default", "  parentRefs: [{name: gw, sectionName: http1}]\n"),
        route("port", "default", "  parentRefs: [{name: gw, port: 81}]\n"),
        route("section-and-port", "default", "  parentRefs: [{name: gw, sectionName: http, port: 81}]\n"),
        route("matching", "default", "  parentRefs: [{name: gw, sectionName: http, port: 80}]\n"),
    ));
    for name in ["section", "port", "section-and-port"] {
        let r = t.route("default", name);
        assert_eq!(cond(parent(&r, "gw"), "Accepted"), "False/NoMatchingParent", "{name}");
        assert_eq!(cond(parent(&r, "gw"), "ResolvedRefs"), "True/ResolvedRefs", "{name}");
    }
    assert_eq!(cond(parent(&t.route("default", "matching"), "gw"), "Accepted"), "True/Accepted");
    assert_eq!(attached_routes(listener(&t.gateway("default", "gw"), "http")), 1);
}

#[test]
fn no_matching_listener_hostname() {
    let t = run(&format!(
        "\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  gatewayClassName: gatehouse
  listeners:
  - {{name: exact, port: 80, protocol: HTTP, hostname: very.specific.com}}
  - {{name: wildcard, port: 80, protocol: HTTP, hostname: '*.wildcard.io'}}
---
{}{}",
        route(
            "no-intersecting-hosts",
            "default",
            "  parentRefs: [{name: gw}]\n  hostnames: [specific.but.wrong.com, wildcard.io]\n"
        ),
        route("narrower", "default", "  parentRefs: [{name: gw}]\n  hostnames: ['*.specific.com']\n"),
    ));
    let none = t.route("default", "no-intersecting-hosts");
    assert_eq!(cond(parent(&none, "gw"), "Accepted"), "False/NoMatchingListenerHostname");
    assert_eq!(cond(parent(&t.route("default", "narrower"), "gw"), "Accepted"), "True/Accepted");
    let gw = t.gateway("default", "gw");
    assert_eq!(attached_routes(listener(&gw, "exact")), 1);
    assert_eq!(attached_routes(listener(&gw, "wildcard")), 0);
    // `*.specific.com` on `very.specific.com` serves only the listener's name.
    let l = t.ir_listener("default/gw/exact");
    let hosts: Vec<&str> = l.virtual_hosts.iter().flat_map(|v| &v.hostnames).map(String::as_str).collect();
    assert_eq!(hosts, ["very.specific.com"]);
}

const BACKENDS: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web-backend, namespace: backends}
spec: {ports: [{port: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: local, namespace: infra}
spec: {ports: [{port: 8080}]}
---
";

fn backend_route(name: &str, backend: &str) -> String {
    route(name, "infra", &format!("  parentRefs: [{{name: gw}}]\n  rules: [{{backendRefs: [{backend}]}}]\n"))
}

#[test]
fn backend_refs_resolution_reasons() {
    let t = run(&format!(
        "{GATEWAY_INFRA}{BACKENDS}{}{}{}{}{}",
        backend_route("local", "{name: local, port: 8080}"),
        backend_route("not-found", "{name: nonexistent, port: 8080}"),
        backend_route("wrong-port", "{name: local, port: 9090}"),
        backend_route("unknown-kind", "{group: unknownkind.example.com, kind: NonExistent, name: local}"),
        backend_route("cross-namespace", "{name: web-backend, namespace: backends, port: 8080}"),
    ));
    let reason = |name: &str| cond(parent(&t.route("infra", name), "gw"), "ResolvedRefs");
    assert_eq!(reason("local"), "True/ResolvedRefs");
    assert_eq!(reason("not-found"), "False/BackendNotFound");
    assert_eq!(reason("wrong-port"), "False/BackendNotFound");
    assert_eq!(reason("unknown-kind"), "False/InvalidKind");
    assert_eq!(reason("cross-namespace"), "False/RefNotPermitted");
    // Unresolved backends do not stop the route from being accepted.
    for name in ["local", "not-found", "wrong-port", "unknown-kind", "cross-namespace"] {
        assert_eq!(cond(parent(&t.route("infra", name), "gw"), "Accepted"), "True/Accepted", "{name}");
    }
    assert_eq!(attached_routes(listener(&t.gateway("infra", "gw"), "http")), 5);
}

#[test]
fn reference_grant_in_backend_namespace_permits_the_backend() {
    let grants = "\
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: routes, namespace: backends}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: infra}]
  to: [{group: '', kind: Service, name: web-backend}]
---
";
    let wrong_grants = "\
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: in-route-namespace, namespace: infra}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: infra}]
  to: [{group: '', kind: Service}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: from-gateway, namespace: backends}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: infra}]
  to: [{group: '', kind: Service}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: to-secret, namespace: backends}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: infra}]
  to: [{group: '', kind: Secret}]
---
";
    let route = backend_route("cross-namespace", "{name: web-backend, namespace: backends, port: 8080}");
    let denied = run(&format!("{GATEWAY_INFRA}{BACKENDS}{wrong_grants}{route}"));
    let p = parent(&denied.route("infra", "cross-namespace"), "gw").clone();
    assert_eq!(cond(&p, "ResolvedRefs"), "False/RefNotPermitted");

    let granted = run(&format!("{GATEWAY_INFRA}{BACKENDS}{grants}{route}"));
    let p = parent(&granted.route("infra", "cross-namespace"), "gw").clone();
    assert_eq!(cond(&p, "ResolvedRefs"), "True/ResolvedRefs");
    assert!(granted.output.config.backends.contains_key("backends/web-backend:8080"));
}

#[test]
fn parents_only_for_our_gateways() {
    let t = run("\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: other}
spec: {controllerName: example.com/other}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: ours}
spec:
  gatewayClassName: gatehouse
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: theirs}
spec:
  gatewayClassName: other
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mixed}
spec:
  parentRefs:
  - {name: ours}
  - {name: theirs}
  - {name: missing}
  - {group: '', kind: Service, name: ours}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: not-ours}
spec:
  parentRefs: [{name: theirs}]
");
    assert_eq!(parent_names(&t.route("default", "mixed")), ["ours"]);
    assert_eq!(
        t.try_status(Kind::HttpRoute, "default", "not-ours"),
        None,
        "we write no status for routes of other controllers"
    );
}

#[test]
fn parent_entry_echoes_the_ref_with_defaults() {
    let t = run(&format!(
        "{GATEWAY_INFRA}{}{}",
        route("local", "infra", "  parentRefs: [{name: gw, sectionName: http}]\n"),
        route("remote", "apps", "  parentRefs: [{name: gw, namespace: infra, port: 80}]\n"),
    ));
    let local = t.route("infra", "local");
    let p = &local["parents"][0];
    assert_eq!(
        p["parentRef"],
        json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw", "sectionName": "http"})
    );
    assert_eq!(p["controllerName"], "gatehouse.dev/gateway-controller");
    assert_eq!(p["conditions"][0]["observedGeneration"], 1);
    let remote = t.route("apps", "remote");
    assert_eq!(
        remote["parents"][0]["parentRef"],
        json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "infra", "name": "gw", "port": 80})
    );
}

/// GRPCRoute spec: an HTTPRoute and a GRPCRoute with intersecting hostnames on one listener
/// cannot both be served; the older one wins and the other is not accepted there.
#[test]
fn http_and_grpc_routes_on_the_same_hostnames_the_older_wins() {
    let t = run("\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: gatehouse
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: grpc-older, creationTimestamp: '2026-01-01T00:00:00Z'}
spec:
  parentRefs: [{name: gw}]
  hostnames: [api.example.com]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: http-newer, creationTimestamp: '2026-01-02T00:00:00Z'}
spec:
  parentRefs: [{name: gw}]
  hostnames: ['*.example.com']
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: http-elsewhere, creationTimestamp: '2026-01-03T00:00:00Z'}
spec:
  parentRefs: [{name: gw}]
  hostnames: [www.example.org]
");
    let grpc = t.status(Kind::GrpcRoute, "default", "grpc-older");
    assert_eq!(cond(parent(&grpc, "gw"), "Accepted"), "True/Accepted");
    let loser = t.route("default", "http-newer");
    assert_eq!(cond(parent(&loser, "gw"), "Accepted"), "False/NotAllowedByListeners");
    assert_eq!(cond(parent(&loser, "gw"), "ResolvedRefs"), "True/ResolvedRefs");
    let other = t.route("default", "http-elsewhere");
    assert_eq!(cond(parent(&other, "gw"), "Accepted"), "True/Accepted", "other hostnames do not clash");
    let gw = t.gateway("default", "gw");
    assert_eq!(attached_routes(listener(&gw, "http")), 2);
    let hosts: Vec<&str> =
        t.ir_listener("default/gw/http").virtual_hosts.iter().map(|v| v.hostnames[0].as_str()).collect();
    assert_eq!(hosts, ["api.example.com", "www.example.org"], "the loser is not served");
}

/// A rule using a filter gatehouse does not implement is dropped and said so
/// (PartiallyInvalid, message "Dropped Rule"); only a route with nothing left is rejected.
#[test]
fn rules_with_unsupported_filters_are_dropped() {
    let gateway = "\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: gatehouse
  listeners: [{name: http, port: 80, protocol: HTTP}]
";
    // One authorization service per rule: a second one is not something to guess at.
    let one = "{type: ExternalAuth, externalAuth: {protocol: GRPC, backendRef: {name: auth, port: 80}, grpc: {}}}";
    let auth = format!("{one}, {one}");
    let t = run(&format!(
        "{gateway}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: partly}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /auth}}}}]
    filters: [{auth}]
  - matches: [{{path: {{type: PathPrefix, value: /plain}}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: wholly}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [other.example]
  rules: [{{filters: [{auth}]}}]
"
    ));
    let partly = t.route("default", "partly");
    let p = parent(&partly, "gw");
    assert_eq!(cond(p, "Accepted"), "True/Accepted");
    assert_eq!(cond(p, "PartiallyInvalid"), "True/UnsupportedValue");
    let message =
        p["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "PartiallyInvalid").unwrap()["message"]
            .clone();
    assert!(message.as_str().unwrap().starts_with("Dropped Rule 0: more than one ExternalAuth filter"), "{message}");
    let wholly = t.route("default", "wholly");
    assert_eq!(cond(parent(&wholly, "gw"), "Accepted"), "False/UnsupportedValue");
    let gw = t.gateway("default", "gw");
    assert_eq!(attached_routes(listener(&gw, "http")), 1);
    let paths: Vec<String> = t.ir_listener("default/gw/http").virtual_hosts[0]
        .routes
        .iter()
        .map(|e| format!("{:?}", e.matcher.path))
        .collect();
    assert_eq!(paths, ["Prefix(\"/plain\")"], "only the kept rule is served");
}

/// ExternalAuth over HTTP compiles to the IR with its backend resolved; an authorization
/// service that does not exist is a ResolvedRefs failure, and the rule stays (it refuses).
#[test]
fn external_auth_over_http_resolves_its_backend() {
    let auth = |name: &str, service: &str| {
        route(
            name,
            "infra",
            &format!(
                "  parentRefs: [{{name: gw}}]\n  hostnames: [{name}.example]\n  rules: [{{filters: [{{type: ExternalAuth, externalAuth: {{protocol: HTTP, backendRef: {{name: {service}, port: 8080}}, http: {{path: /check, allowedHeaders: [X-Trace], allowedResponseHeaders: [X-User]}}, forwardBody: {{maxSize: 16}}}}}}], backendRefs: [{{name: local, port: 8080}}]}}]\n"
            ),
        )
    };
    let t = run(&format!("{GATEWAY_INFRA}{BACKENDS}{}{}", auth("good", "local"), auth("missing", "nonexistent")));
    let resolved = |name: &str| cond(parent(&t.route("infra", name), "gw"), "ResolvedRefs");
    assert_eq!(resolved("good"), "True/ResolvedRefs");
    assert_eq!(resolved("missing"), "False/BackendNotFound");
    assert_eq!(cond(parent(&t.route("infra", "missing"), "gw"), "Accepted"), "True/Accepted");

    let rules = &t.ir_listener("infra/gw/http").rules;
    let filters: Vec<_> = rules.iter().flat_map(|r| &r.filters).collect();
    let auths: Vec<_> = filters
        .iter()
        .filter_map(|f| match f {
            translate::ir::HttpFilter::ExternalAuth(a) => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(auths.len(), 2, "{filters:?}");
    let good = auths.iter().find(|a| a.backend.is_some()).expect("the resolved one");
    assert_eq!(good.path_prefix, "/check");
    assert_eq!(good.allowed_headers, ["x-trace"]);
    assert_eq!(good.allowed_response_headers, ["x-user"]);
    assert_eq!(good.max_body, 16);
    let backend = good.backend.as_deref().unwrap();
    assert!(t.output.config.backends.contains_key(backend), "the service is in the IR's backends: {backend}");
}

/// ExternalAuth decides whether a request goes on at all: on a backendRef, or twice in a
/// rule, the rule is dropped as unsupported rather than half-applied.
#[test]
fn external_auth_on_a_backend_ref_or_twice_is_not_applied_halfway() {
    let auth = "{type: ExternalAuth, externalAuth: {protocol: HTTP, backendRef: {name: local, port: 8080}, http: {}}}";
    let t = run(&format!(
        "{GATEWAY_INFRA}{BACKENDS}{}{}",
        route(
            "on-backend",
            "infra",
            &format!(
                "  parentRefs: [{{name: gw}}]\n  rules: [{{backendRefs: [{{name: local, port: 8080, filters: [{auth}]}}]}}]\n"
            )
        ),
        route(
            "twice",
            "infra",
            &format!(
                "  parentRefs: [{{name: gw}}]\n  hostnames: [twice.example]\n  rules: [{{filters: [{auth}, {auth}], backendRefs: [{{name: local, port: 8080}}]}}]\n"
            )
        ),
    ));
    let twice = t.route("infra", "twice");
    assert_eq!(cond(parent(&twice, "gw"), "Accepted"), "False/UnsupportedValue");
    let on_backend = cond(parent(&t.route("infra", "on-backend"), "gw"), "Accepted");
    assert_eq!(on_backend, "True/Accepted");
    // Its only backend's share answers 500 instead of going through unchecked.
    let rule = &t.ir_listener("infra/gw/http").rules[0];
    let translate::ir::RuleAction::Forward(backends) = &rule.action else { panic!("{:?}", rule.action) };
    assert!(backends.iter().all(|b| b.backend.is_none()), "{backends:?}");
}
