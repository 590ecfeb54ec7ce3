//! BackendTLSPolicy: which policy applies (the oldest wins a conflict), what it puts in the
//! IR, and its status on the Gateways whose routes reach the Services it targets.

use api::Kind;
use translate::ir::Trust;

use crate::common::{cert, cond, parent, run};

fn config(policies: &str) -> String {
    let (ca, _) = cert();
    format!(
        "\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  gatewayClassName: gatehouse
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r}}
spec:
  parentRefs: [{{name: gw}}]
  rules: [{{backendRefs: [{{name: secure, port: 443}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: secure}}
spec: {{ports: [{{name: https, port: 443, appProtocol: kubernetes.io/https}}]}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: ca}}
data:
  ca.crt: {}
{policies}",
        serde_json::to_string(ca).unwrap()
    )
}

fn policy(name: &str, created: &str, section: Option<&str>, validation: &str) -> String {
    let section = section.map(|s| format!(", sectionName: {s}")).unwrap_or_default();
    format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {{name: {name}, creationTimestamp: '{created}'}}
spec:
  targetRefs: [{{group: \"\", kind: Service, name: secure{section}}}]
  validation: {validation}
"
    )
}

const GOOD: &str = "{caCertificateRefs: [{group: \"\", kind: ConfigMap, name: ca}], hostname: secure.example}";

fn ancestor(t: &crate::common::Translated, name: &str) -> serde_json::Value {
    let s = t.status(Kind::BackendTlsPolicy, "default", name);
    let ancestors = s["ancestors"].as_array().unwrap().clone();
    assert_eq!(ancestors.len(), 1, "{s}");
    assert_eq!(ancestors[0]["ancestorRef"]["name"], "gw");
    assert_eq!(ancestors[0]["ancestorRef"]["namespace"], "default");
    ancestors[0].clone()
}

#[test]
fn a_valid_policy_puts_tls_in_the_ir_and_lets_https_app_protocol_resolve() {
    let t = run(&config(&policy("p", "2026-01-01T00:00:00Z", None, GOOD)));
    let a = ancestor(&t, "p");
    assert_eq!(cond(&a, "Accepted"), "True/Accepted");
    assert_eq!(cond(&a, "ResolvedRefs"), "True/ResolvedRefs");
    let route = t.route("default", "r");
    assert_eq!(cond(parent(&route, "gw"), "ResolvedRefs"), "True/ResolvedRefs", "appProtocol https is served by TLS");
    let tls = t.output.config.backends["default/secure:443"].tls.clone().expect("TLS to the backend");
    assert_eq!(tls.server_name, "secure.example");
    assert!(matches!(tls.trust, Trust::Pem(ref pem) if pem.contains("BEGIN CERTIFICATE")));
}

#[test]
fn without_a_policy_https_app_protocol_is_unsupported() {
    let t = run(&config(""));
    let route = t.route("default", "r");
    assert_eq!(cond(parent(&route, "gw"), "ResolvedRefs"), "False/UnsupportedProtocol");
    assert!(t.try_status(Kind::BackendTlsPolicy, "default", "p").is_none());
}

#[test]
fn the_older_of_two_policies_on_the_same_target_wins() {
    let other = GOOD.replace("secure.example", "newer.example");
    let t = run(&config(&format!(
        "{}{}{}",
        policy("older", "2026-01-01T00:00:00Z", None, GOOD),
        policy("newer", "2026-01-02T00:00:00Z", None, &other),
        // A section is another target: no conflict with the whole-Service policies.
        policy("section", "2026-01-03T00:00:00Z", Some("https"), &GOOD.replace("secure.example", "section.example")),
    )));
    assert_eq!(cond(&ancestor(&t, "older"), "Accepted"), "True/Accepted");
    assert_eq!(cond(&ancestor(&t, "newer"), "Accepted"), "False/Conflicted");
    assert_eq!(cond(&ancestor(&t, "section"), "Accepted"), "True/Accepted");
    // The port's own section policy is the one in force.
    assert_eq!(t.output.config.backends["default/secure:443"].tls.as_ref().unwrap().server_name, "section.example");
}

#[test]
fn invalid_ca_references() {
    let missing = "{caCertificateRefs: [{group: \"\", kind: ConfigMap, name: nope}], hostname: secure.example}";
    let t = run(&config(&policy("p", "2026-01-01T00:00:00Z", None, missing)));
    let a = ancestor(&t, "p");
    assert_eq!(cond(&a, "Accepted"), "False/NoValidCACertificate");
    assert_eq!(cond(&a, "ResolvedRefs"), "False/InvalidCACertificateRef");
    assert_eq!(t.output.config.backends["default/secure:443"].tls.as_ref().unwrap().trust, Trust::Invalid);

    let kind = "{caCertificateRefs: [{group: invalid.io, kind: InvalidKind, name: ca}], hostname: secure.example}";
    let t = run(&config(&policy("p", "2026-01-01T00:00:00Z", None, kind)));
    let a = ancestor(&t, "p");
    assert_eq!(cond(&a, "Accepted"), "False/NoValidCACertificate");
    assert_eq!(cond(&a, "ResolvedRefs"), "False/InvalidKind");

    let well_known = "{wellKnownCACertificates: Other, hostname: secure.example}";
    let t = run(&config(&policy("p", "2026-01-01T00:00:00Z", None, well_known)));
    assert_eq!(cond(&ancestor(&t, "p"), "Accepted"), "False/Invalid");
}
