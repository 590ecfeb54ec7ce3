//! Listener status: protocols, route kinds, certificates, conflicts and attachedRoutes.

use api::Kind;

use crate::common::{
    attached_routes, cert, cond, fixture, listener, parent, run, supported_kinds, try_cond, with_cert,
};

const HTTP_KINDS: [&str; 2] = ["gateway.networking.k8s.io/HTTPRoute", "gateway.networking.k8s.io/GRPCRoute"];

#[test]
fn unsupported_protocol_alone_rejects_the_gateway() {
    let t = run("\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: gatehouse
  listeners: [{name: invalid, port: 1111, protocol: INVALID}]
");
    let gw = t.gateway("default", "gw");
    assert_eq!(cond(&gw, "Accepted"), "False/ListenersNotValid");
    assert_eq!(cond(&gw, "Programmed"), "False/Invalid");
    let l = listener(&gw, "invalid");
    assert_eq!(supported_kinds(l), Vec::<String>::new());
    assert_eq!(cond(l, "Accepted"), "False/UnsupportedProtocol");
    assert_eq!(attached_routes(l), 0);
    assert!(t.output.config.binds.is_empty());
}

#[test]
fn unsupported_protocol_beside_a_valid_listener() {
    let t = run("\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: gatehouse
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: invalid, port: 1111, protocol: INVALID}
");
    let gw = t.gateway("default", "gw");
    assert_eq!(cond(&gw, "Accepted"), "True/ListenersNotValid");
    assert_eq!(cond(&gw, "Programmed"), "True/Programmed");
    let http = listener(&gw, "http");
    assert_eq!(supported_kinds(http), HTTP_KINDS);
    assert_eq!(cond(http, "Accepted"), "True/Accepted");
    let invalid = listener(&gw, "invalid");
    assert_eq!(supported_kinds(invalid), Vec::<String>::new());
    assert_eq!(cond(invalid, "Accepted"), "False/UnsupportedProtocol");
    assert_eq!(t.bind_addresses(), ["127.0.0.1:80"]);
}

#[test]
fn invalid_route_kinds() {
    let t = run("\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: only-invalid}
spec:
  gatewayClassName: gatehouse
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes: {kinds: [{kind: InvalidRoute}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: mixed}
spec:
  gatewayClassName: gatehouse
  addresses: [{type: IPAddress, value: 127.0.0.2}]
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes: {kinds: [{kind: InvalidRoute}, {kind: HTTPRoute}]}
  - name: tls
    port: 443
    protocol: TLS
    tls: {mode: Passthrough}
    allowedRoutes: {kinds: [{kind: TCPRoute}, {kind: TLSRoute}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{name: only-invalid}, {name: mixed, sectionName: http}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: grpc}
spec:
  parentRefs: [{name: mixed, sectionName: http}]
");
    let only = t.gateway("default", "only-invalid");
    let l = listener(&only, "http");
    assert_eq!(supported_kinds(l), Vec::<String>::new());
    assert_eq!(cond(l, "ResolvedRefs"), "False/InvalidRouteKinds");
    assert_eq!(attached_routes(l), 0);
    assert_eq!(cond(&only, "ResolvedRefs"), "False/ListenersNotResolved");

    let mixed = t.gateway("default", "mixed");
    let http = listener(&mixed, "http");
    assert_eq!(supported_kinds(http), ["gateway.networking.k8s.io/HTTPRoute"]);
    assert_eq!(cond(http, "ResolvedRefs"), "False/InvalidRouteKinds");
    assert_eq!(attached_routes(http), 1, "the valid kind still attaches");
    let tls = listener(&mixed, "tls");
    assert_eq!(supported_kinds(tls), ["gateway.networking.k8s.io/TLSRoute"]);
    assert_eq!(cond(tls, "ResolvedRefs"), "False/InvalidRouteKinds");

    let web = t.route("default", "web");
    assert_eq!(cond(parent(&web, "only-invalid"), "Accepted"), "False/NotAllowedByListeners");
    assert_eq!(cond(parent(&web, "mixed"), "Accepted"), "True/Accepted");
    let grpc = t.status(Kind::GrpcRoute, "default", "grpc");
    assert_eq!(cond(parent(&grpc, "mixed"), "Accepted"), "False/NotAllowedByListeners");
}

#[test]
fn invalid_certificate_refs() {
    let t = run(&with_cert(
        "\
apiVersion: v1
kind: Secret
metadata: {name: malformed}
type: kubernetes.io/tls
stringData: {tls.crt: Hello world, tls.key: Hello world}
---
apiVersion: v1
kind: Secret
metadata: {name: opaque}
stringData: {tls.crt: {{CERT}}, tls.key: {{KEY}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: gatehouse
  listeners:
  - name: missing
    port: 443
    protocol: HTTPS
    hostname: a.example.com
    tls: {certificateRefs: [{name: nonexistent-certificate}]}
  - name: wrong-kind
    port: 443
    protocol: HTTPS
    hostname: b.example.com
    tls: {certificateRefs: [{kind: WrongKind, name: malformed}]}
  - name: wrong-group
    port: 443
    protocol: HTTPS
    hostname: c.example.com
    tls: {certificateRefs: [{group: wrong.group.company.io, name: malformed}]}
  - name: malformed
    port: 443
    protocol: HTTPS
    hostname: d.example.com
    tls: {certificateRefs: [{name: malformed}]}
  - name: not-tls-type
    port: 443
    protocol: HTTPS
    hostname: e.example.com
    tls: {certificateRefs: [{name: opaque}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: unresolved}
spec:
  parentRefs: [{name: gw, sectionName: missing}]
  rules: [{backendRefs: [{name: does-not-exist, port: 80}]}]
",
    ));
    let gw = t.gateway("default", "gw");
    // Certificate problems do not reject the Gateway.
    assert_eq!(cond(&gw, "Accepted"), "True/Accepted");
    assert_eq!(cond(&gw, "Programmed"), "True/Programmed");
    assert_eq!(cond(&gw, "ResolvedRefs"), "False/ListenersNotResolved");
    for name in ["missing", "wrong-kind", "wrong-group", "malformed", "not-tls-type"] {
        let l = listener(&gw, name);
        assert_eq!(cond(l, "Accepted"), "True/Accepted", "{name}");
        assert_eq!(cond(l, "ResolvedRefs"), "False/InvalidCertificateRef", "{name}");
        assert_eq!(cond(l, "Programmed"), "False/Invalid", "{name}");
        assert_eq!(supported_kinds(l), HTTP_KINDS, "{name}");
    }
    // gateway-with-attached-routes: a route with a bad backend on a listener with a bad
    // certificate is still attached and counted.
    assert_eq!(attached_routes(listener(&gw, "missing")), 1);
    let route = t.route("default", "unresolved");
    assert_eq!(cond(parent(&route, "gw"), "Accepted"), "True/Accepted");
    assert_eq!(cond(parent(&route, "gw"), "ResolvedRefs"), "False/BackendNotFound");
    assert!(t.output.config.binds.is_empty(), "no listener can be served: {:?}", t.ir_listener_names());
}

const CROSS_NAMESPACE_CERT: &str = "\
apiVersion: v1
kind: Secret
metadata: {name: tls, namespace: certs}
type: kubernetes.io/tls
stringData: {tls.crt: {{CERT}}, tls.key: {{KEY}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: gatehouse
  listeners:
  - name: https
    port: 443
    protocol: HTTPS
    tls: {certificateRefs: [{name: tls, namespace: certs}]}
";

#[test]
fn cross_namespace_certificate_without_grant_is_not_permitted() {
    // Grants that each miss one field are no grant at all.
    let wrong_grants = "\
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: in-gateway-namespace, namespace: infra}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: infra}]
  to: [{group: '', kind: Secret}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: from-route, namespace: certs}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: infra}]
  to: [{group: '', kind: Secret}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: other-name, namespace: certs}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: infra}]
  to: [{group: '', kind: Secret, name: not-tls}]
";
    let t = run(&with_cert(&format!("{CROSS_NAMESPACE_CERT}{wrong_grants}")));
    let gw = t.gateway("infra", "gw");
    let l = listener(&gw, "https");
    assert_eq!(cond(l, "ResolvedRefs"), "False/RefNotPermitted");
    assert_eq!(cond(l, "Programmed"), "False/Invalid");
    assert_eq!(cond(l, "Accepted"), "True/Accepted");
    assert_eq!(supported_kinds(l), HTTP_KINDS);
    assert!(t.output.config.binds.is_empty());
}

#[test]
fn cross_namespace_certificate_with_grant_is_served() {
    let grant = "\
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: gateways, namespace: certs}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: infra}]
  to: [{group: '', kind: Secret, name: tls}]
";
    let t = run(&with_cert(&format!("{CROSS_NAMESPACE_CERT}{grant}")));
    let gw = t.gateway("infra", "gw");
    let l = listener(&gw, "https");
    assert_eq!(cond(l, "ResolvedRefs"), "True/ResolvedRefs");
    assert_eq!(cond(l, "Programmed"), "True/Programmed");
    assert_eq!(cond(&gw, "ResolvedRefs"), "True/ResolvedRefs");
    let tls = t.ir_listener("infra/gw/https").tls.as_ref().expect("an HTTPS listener terminates TLS");
    assert_eq!(tls.certificates.len(), 1);
    assert_eq!(tls.certificates[0].source, "certs/tls");
    assert_eq!(tls.certificates[0].cert_pem, cert().0);
    assert_eq!(tls.certificates[0].key_pem, cert().1);
}

#[test]
fn protocol_conflict_inside_one_gateway_rejects_both_listeners() {
    let t = run("\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: partly}
spec:
  gatewayClassName: gatehouse
  addresses: [{type: IPAddress, value: 127.0.0.1}]
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: tcp, port: 80, protocol: TCP}
  - {name: other, port: 8080, protocol: HTTP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: wholly}
spec:
  gatewayClassName: gatehouse
  addresses: [{type: IPAddress, value: 127.0.0.2}]
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: tcp, port: 80, protocol: TCP}
");
    let partly = t.gateway("default", "partly");
    for name in ["http", "tcp"] {
        let l = listener(&partly, name);
        assert_eq!(cond(l, "Accepted"), "False/ProtocolConflict", "{name}");
        assert_eq!(cond(l, "Conflicted"), "True/ProtocolConflict", "{name}");
        assert_eq!(cond(l, "Programmed"), "False/ProtocolConflict", "{name}");
        assert_eq!(supported_kinds(l), Vec::<String>::new(), "{name}");
    }
    assert_eq!(cond(listener(&partly, "other"), "Conflicted"), "False/NoConflicts");
    assert_eq!(cond(&partly, "Accepted"), "True/ListenersNotValid");
    assert_eq!(cond(&partly, "Programmed"), "True/Programmed");

    let wholly = t.gateway("default", "wholly");
    assert_eq!(cond(&wholly, "Accepted"), "False/ListenersNotValid");
    assert_eq!(cond(&wholly, "Programmed"), "False/Invalid");
    assert_eq!(t.bind_addresses(), ["127.0.0.1:8080"]);
}

/// listenerset-hostname-conflict: the Gateway's listeners always win, then ListenerSets
/// oldest first; a ListenerSet with no valid listener left is rejected.
#[test]
fn hostname_conflicts_with_listener_sets() {
    let t = run(&fixture("listenerset-conflicts.yaml").replace("{{PROTOCOL}}", "HTTP"));
    check_listener_set_conflicts(&t, "HostnameConflict");
}

/// listenerset-protocol-conflict: the same layout with TCP listeners on the HTTP port.
#[test]
fn protocol_conflicts_with_listener_sets() {
    let yaml = fixture("listenerset-conflicts.yaml")
        .replace("{{PROTOCOL}}", "TCP")
        // TCP listeners have no hostname.
        .lines()
        .filter(|l| !l.contains("# conflicting"))
        .collect::<Vec<_>>()
        .join("\n");
    let t = run(&yaml);
    check_listener_set_conflicts(&t, "ProtocolConflict");
}

fn check_listener_set_conflicts(t: &crate::common::Translated, reason: &str) {
    let gw = t.gateway("infra", "gw");
    assert_eq!(cond(&gw, "Accepted"), "True/Accepted");
    assert_eq!(cond(&gw, "Programmed"), "True/Programmed");
    for name in ["gateway-listener", "conflict-with-gateway"] {
        let l = listener(&gw, name);
        for c in ["Accepted", "Programmed", "ResolvedRefs"] {
            assert!(cond(l, c).starts_with("True/"), "Gateway listener {name} {c}: {}", cond(l, c));
        }
        assert_eq!(cond(l, "Conflicted"), "False/NoConflicts");
    }
    assert_eq!(gw["listeners"].as_array().unwrap().len(), 2, "a Gateway lists only its own listeners");
    assert_eq!(gw["attachedListenerSets"], 2, "only the accepted ListenerSets count");

    let conflicted = |l: &serde_json::Value| {
        assert_eq!(cond(l, "Accepted"), format!("False/{reason}"));
        assert_eq!(cond(l, "Programmed"), format!("False/{reason}"));
        assert_eq!(cond(l, "Conflicted"), format!("True/{reason}"));
        assert_eq!(supported_kinds(l), Vec::<String>::new());
        assert_eq!(attached_routes(l), 0);
    };
    let fine = |l: &serde_json::Value| {
        assert_eq!(cond(l, "Accepted"), "True/Accepted");
        assert_eq!(cond(l, "Programmed"), "True/Programmed");
        assert_eq!(cond(l, "ResolvedRefs"), "True/ResolvedRefs");
        assert_eq!(try_cond(l, "Conflicted").as_deref().unwrap_or("False/NoConflicts"), "False/NoConflicts");
    };

    let ls1 = t.status(Kind::ListenerSet, "infra", "with-gateway-1");
    assert_eq!(cond(&ls1, "Accepted").split('/').next(), Some("True"));
    assert_eq!(cond(&ls1, "Programmed"), "True/Programmed");
    fine(listener(&ls1, "ls1-unique"));
    conflicted(listener(&ls1, "conflict-with-gateway"));
    fine(listener(&ls1, "conflict-with-listener-set"));

    let ls2 = t.status(Kind::ListenerSet, "infra", "with-gateway-2");
    assert_eq!(cond(&ls2, "Accepted"), "False/ListenersNotValid");
    assert_eq!(cond(&ls2, "Programmed"), "False/ListenersNotValid");
    conflicted(listener(&ls2, "conflict-with-gateway"));

    let ls3 = t.status(Kind::ListenerSet, "infra", "with-listener-set-1");
    assert_eq!(cond(&ls3, "Accepted").split('/').next(), Some("True"));
    assert_eq!(cond(&ls3, "Programmed"), "True/Programmed");
    fine(listener(&ls3, "ls3-unique"));
    conflicted(listener(&ls3, "conflict-with-listener-set"));

    let ls4 = t.status(Kind::ListenerSet, "infra", "with-listener-set-2");
    assert_eq!(cond(&ls4, "Accepted"), "False/ListenersNotValid");
    assert_eq!(cond(&ls4, "Programmed"), "False/ListenersNotValid");
    conflicted(listener(&ls4, "conflict-with-listener-set"));

    // Exactly the winners are served.
    let mut served = t.ir_listener_names();
    served.sort();
    assert_eq!(
        served,
        [
            "infra/gw/conflict-with-gateway",
            "infra/gw/gateway-listener",
            "infra/with-gateway-1/conflict-with-listener-set",
            "infra/with-gateway-1/ls1-unique",
            "infra/with-listener-set-1/ls3-unique",
        ]
    );
}

/// attachedRoutes counts distinct accepted routes per listener.
#[test]
fn attached_routes_counting() {
    let t = run(&fixture("attached-routes.yaml"));
    let gw = t.gateway("default", "gw");
    assert_eq!(attached_routes(listener(&gw, "foo")), 3, "unresolved, foo-only, both");
    assert_eq!(attached_routes(listener(&gw, "bar")), 2, "unresolved, both");
    assert_eq!(attached_routes(listener(&gw, "unattached")), 0);
    assert_eq!(cond(parent(&t.route("default", "unresolved"), "gw"), "ResolvedRefs"), "False/BackendNotFound");
    assert_eq!(cond(parent(&t.route("default", "nowhere"), "gw"), "Accepted"), "False/NoMatchingListenerHostname");
    let both = t.route("default", "both");
    assert_eq!(both["parents"].as_array().unwrap().len(), 2, "one entry per parentRef");
    for p in both["parents"].as_array().unwrap() {
        assert_eq!(cond(p, "Accepted"), "True/Accepted");
    }
}

/// Every listener protocol is served by the data plane, so a valid listener of any protocol
/// is Programmed; a TCP and a UDP listener on the same port get a socket each.
#[test]
fn listeners_of_every_protocol_are_programmed() {
    let t = run("\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: gatehouse
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: tcp, port: 53, protocol: TCP}
  - {name: udp, port: 53, protocol: UDP}
  - {name: passthrough, port: 443, protocol: TLS, hostname: a.example.com, tls: {mode: Passthrough}}
");
    let gw = t.gateway("default", "gw");
    assert_eq!(cond(&gw, "Programmed"), "True/Programmed");
    for name in ["http", "tcp", "udp", "passthrough"] {
        let l = listener(&gw, name);
        assert_eq!(cond(l, "Accepted"), "True/Accepted", "{name}");
        assert_eq!(cond(l, "Programmed"), "True/Programmed", "{name}");
    }
    let binds: Vec<(String, translate::ir::BindProtocol)> =
        t.output.config.binds.iter().map(|b| (b.address.to_string(), b.protocol)).collect();
    use translate::ir::BindProtocol::*;
    let expected = [("127.0.0.1:53", Tcp), ("127.0.0.1:53", Udp), ("127.0.0.1:80", Http), ("127.0.0.1:443", Tls)];
    assert_eq!(binds, expected.map(|(a, p)| (a.to_string(), p)));
}

#[test]
fn a_listener_set_of_a_gateway_that_is_not_accepted() {
    let t = run("\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: gatehouse
  allowedListeners: {namespaces: {from: Same}}
  listeners: [{name: bad, port: 1111, protocol: INVALID}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: ListenerSet
metadata: {name: ls}
spec:
  parentRef: {name: gw}
  listeners: [{name: http, port: 80, protocol: HTTP}]
");
    let ls = t.status(Kind::ListenerSet, "default", "ls");
    assert_eq!(cond(&ls, "Accepted"), "False/ParentNotAccepted");
    assert_eq!(cond(&ls, "Programmed"), "False/ParentNotAccepted");
    assert!(t.output.config.binds.is_empty(), "nothing is served for a Gateway that is not accepted");
}
