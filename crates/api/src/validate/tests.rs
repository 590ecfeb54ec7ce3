//! The API server's checks as standalone mode applies them: each case is a resource the
//! API server would reject, with the message it would give.

use super::*;

fn resource(yaml_as_json: serde_json::Value) -> Resource {
    Resource::from_json(yaml_as_json).expect("parses").expect("a kind we read")
}

fn errors(value: serde_json::Value) -> Vec<String> {
    validate(&resource(value))
}

fn route(rules: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "r"},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": rules}
    })
}

fn gateway(listeners: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "gw"},
        "spec": {"gatewayClassName": "c", "listeners": listeners}
    })
}

fn has(errors: &[String], needle: &str) -> bool {
    errors.iter().any(|e| e.contains(needle))
}

#[test]
fn a_valid_route_and_its_defaults() {
    let r = resource(route(serde_json::json!([{"backendRefs": [{"name": "svc", "port": 80}]}])));
    assert!(validate(&r).is_empty());
    let Resource::HttpRoute(r) = r else { unreachable!() };
    let m = &r.spec.rules[0].matches[0];
    assert_eq!(
        (m.path.type_, m.path.value.as_str()),
        (PathMatchType::PathPrefix, "/"),
        "a rule without matches matches /"
    );
    assert_eq!(r.spec.rules[0].backend_refs[0].backend.weight, 1);
    assert_eq!(r.spec.common.parent_refs[0].kind, "Gateway");
}

#[test]
fn path_values_follow_the_cel_rules() {
    for (value, message) in [
        ("no-slash", "must be an absolute path"),
        ("/a//b", "must not contain '//'"),
        ("/a/../b", "must not contain '/../'"),
        ("/a%2fb", "must not contain '%2f'"),
        ("/a/.", "must not end with '/.'"),
        ("/a b", "must only contain valid characters"),
    ] {
        let e = errors(route(serde_json::json!([{"matches": [{"path": {"type": "PathPrefix", "value": value}}]}])));
        assert!(has(&e, message), "{value}: {e:?}");
    }
    let e = errors(route(serde_json::json!([{"matches": [{"path": {"type": "RegularExpression", "value": "(["}}]}])));
    assert!(has(&e, "not a valid regular expression"), "{e:?}");
}

#[test]
fn filter_rules() {
    let redirect = serde_json::json!({"type": "RequestRedirect", "requestRedirect": {"statusCode": 302}});
    let rewrite = serde_json::json!({"type": "URLRewrite", "urlRewrite": {"hostname": "a.example"}});
    let e = errors(route(serde_json::json!([{"filters": [redirect], "backendRefs": [{"name": "s", "port": 80}]}])));
    assert!(has(&e, "RequestRedirect filter must not be used together with backendRefs"), "{e:?}");
    let e = errors(route(serde_json::json!([{"filters": [redirect, rewrite]}])));
    assert!(has(&e, "May specify either httpRouteFilterRequestRedirect or httpRouteFilterRequestRewrite"), "{e:?}");
    let e = errors(route(serde_json::json!([{"filters": [{"type": "RequestHeaderModifier"}]}])));
    assert!(has(&e, "filter.requestHeaderModifier must be specified for RequestHeaderModifier filter.type"), "{e:?}");
    let prefix_rewrite = serde_json::json!({"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/x"}}});
    let e = errors(route(
        serde_json::json!([{"matches": [{"path": {"type": "Exact", "value": "/a"}}], "filters": [prefix_rewrite]}]),
    ));
    assert!(has(&e, "exactly one PathPrefix match must be specified"), "{e:?}");
    let e = errors(route(serde_json::json!([{"backendRefs": [{"name": "s"}]}])));
    assert!(has(&e, "Must have port for Service reference"), "{e:?}");
}

#[test]
fn timeouts_and_durations() {
    let e = errors(route(serde_json::json!([{"timeouts": {"request": "1s", "backendRequest": "2s"}}])));
    assert!(has(&e, "backendRequest timeout cannot be longer than request timeout"), "{e:?}");
    let e = errors(route(serde_json::json!([{"timeouts": {"request": "1 second"}}])));
    assert!(has(&e, "must be a duration"), "{e:?}");
    assert_eq!(parse_duration_ms("1h30m500ms"), Some(5_400_500));
    assert_eq!(parse_duration_ms("0s"), Some(0));
    assert_eq!(parse_duration_ms("10"), None);
}

#[test]
fn listener_rules() {
    let e = errors(gateway(serde_json::json!([
        {"name": "a", "port": 80, "protocol": "HTTP"},
        {"name": "a", "port": 81, "protocol": "HTTP"}
    ])));
    assert!(has(&e, "Listener name must be unique within the Gateway"), "{e:?}");
    let e =
        errors(gateway(serde_json::json!([{"name": "tcp", "port": 80, "protocol": "TCP", "hostname": "a.example"}])));
    assert!(has(&e, "hostname must not be specified for protocols ['TCP', 'UDP']"), "{e:?}");
    let e = errors(gateway(serde_json::json!([{"name": "https", "port": 443, "protocol": "HTTPS", "tls": {}}])));
    assert!(has(&e, "certificateRefs or options must be specified when mode is Terminate"), "{e:?}");
    let e =
        errors(gateway(serde_json::json!([{"name": "h", "port": 80, "protocol": "HTTP", "hostname": "*.Bad_Host"}])));
    assert!(has(&e, "is not a valid hostname"), "{e:?}");
    let e = errors(gateway(serde_json::json!([{"name": "h", "port": 0, "protocol": "HTTP"}])));
    assert!(has(&e, "must be between 1 and 65535"), "{e:?}");
}

#[test]
fn parent_refs_to_one_gateway_need_distinct_sections() {
    let mut r = route(serde_json::json!([{}]));
    r["spec"]["parentRefs"] = serde_json::json!([{"name": "gw"}, {"name": "gw", "sectionName": "http"}]);
    assert!(has(&errors(r.clone()), "sectionName or port must be specified"));
    r["spec"]["parentRefs"] =
        serde_json::json!([{"name": "gw", "sectionName": "a"}, {"name": "gw", "sectionName": "a"}]);
    assert!(has(&errors(r), "sectionName or port must be unique"));
}

#[test]
fn backend_tls_policy_needs_one_source_of_trust() {
    let policy = |validation: serde_json::Value| {
        serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "BackendTLSPolicy",
            "metadata": {"name": "p"},
            "spec": {"targetRefs": [{"group": "", "kind": "Service", "name": "s"}], "validation": validation}
        })
    };
    assert!(has(
        &errors(policy(serde_json::json!({"hostname": "a.example"}))),
        "must specify either CACertificateRefs or WellKnownCACertificates"
    ));
    let both = serde_json::json!({"hostname": "a.example", "wellKnownCACertificates": "System",
        "caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": "ca"}]});
    let e = errors(policy(both));
    assert!(has(&e, "must not contain both"), "{e:?}");
}

#[test]
fn external_auth_needs_the_settings_of_its_protocol() {
    let auth = |settings: serde_json::Value| {
        let mut filter = serde_json::json!({"protocol": "HTTP", "backendRef": {"name": "auth", "port": 80}});
        filter.as_object_mut().unwrap().extend(settings.as_object().unwrap().clone());
        errors(route(serde_json::json!([{"filters": [{"type": "ExternalAuth", "externalAuth": filter}]}])))
    };
    assert!(auth(serde_json::json!({"http": {}})).is_empty());
    assert!(has(&auth(serde_json::json!({})), "http must be specified when protocol is set to 'HTTP'"));
    assert!(has(&auth(serde_json::json!({"http": {}, "grpc": {}})), "protocol must be 'GRPC' when grpc is set"));
    assert!(has(
        &auth(serde_json::json!({"protocol": "GRPC"})),
        "grpc must be specified when protocol is set to 'GRPC'"
    ));
    assert!(has(&auth(serde_json::json!({"protocol": "SOAP", "http": {}})), "supported values are GRPC, HTTP"));
}
