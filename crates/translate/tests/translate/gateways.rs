//! Gateway-level status: addresses (own, pooled, unsupported, unusable) and their effect on
//! what is served.

use std::net::{IpAddr, SocketAddr};

use serde_json::json;

use crate::common::{attached_routes, cond, listener, run, run_with, settings, with_cert};

fn gateway(name: &str, namespace: &str, extra: &str) -> String {
    format!(
        "\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  gatewayClassName: gatehouse
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
{extra}---
"
    )
}

#[test]
fn gateway_with_ip_address_is_accepted_programmed_and_bound() {
    let t = run(&gateway("gw", "default", "  addresses: [{type: IPAddress, value: 127.0.0.1}]\n"));
    let gw = t.gateway("default", "gw");
    assert_eq!(cond(&gw, "Accepted"), "True/Accepted");
    assert_eq!(cond(&gw, "Programmed"), "True/Programmed");
    assert_eq!(cond(&gw, "ResolvedRefs"), "True/ResolvedRefs");
    assert_eq!(gw["addresses"], json!([{"type": "IPAddress", "value": "127.0.0.1"}]));
    let l = listener(&gw, "http");
    assert_eq!(cond(l, "Accepted"), "True/Accepted");
    assert_eq!(cond(l, "Programmed"), "True/Programmed");
    assert_eq!(cond(l, "Conflicted"), "False/NoConflicts");
    assert_eq!(attached_routes(l), 0);
    assert_eq!(t.bind_addresses(), ["127.0.0.1:80"]);
    assert_eq!(t.ir_listener("default/gw/http").hostname, None);
}

#[test]
fn gateway_without_addresses_gets_the_bind_address() {
    let t = run(&gateway("gw", "default", ""));
    let gw = t.gateway("default", "gw");
    assert_eq!(gw["addresses"], json!([{"type": "IPAddress", "value": "127.0.0.1"}]));
    assert_eq!(t.bind_addresses(), ["127.0.0.1:80"]);
}

#[test]
fn hostname_address_is_unsupported() {
    let t = run(&gateway("gw", "default", "  addresses: [{type: Hostname, value: gw.example.com}]\n"));
    let gw = t.gateway("default", "gw");
    assert_eq!(cond(&gw, "Accepted"), "False/UnsupportedAddress");
    assert_eq!(cond(&gw, "Programmed"), "False/Invalid");
    assert_eq!(gw["addresses"], json!([]));
    assert!(t.output.config.binds.is_empty());
}

/// gateway-static-addresses, step 1: an address of an unsupported type rejects the Gateway
/// even when an unusable address follows it.
#[test]
fn unsupported_address_outranks_unusable_address() {
    let mut s = settings();
    s.unusable_addresses.insert("192.0.2.10".parse().unwrap());
    let t = run_with(
        &gateway(
            "gw",
            "default",
            "  addresses:\n  - {type: test/fake-invalid-type, value: foo}\n  - {type: IPAddress, value: 192.0.2.10}\n  - {type: IPAddress, value: 127.0.0.1}\n",
        ),
        s,
    );
    let gw = t.gateway("default", "gw");
    assert_eq!(cond(&gw, "Accepted"), "False/UnsupportedAddress");
    assert_eq!(cond(&gw, "Programmed"), "False/Invalid");
}

#[test]
fn unusable_address_is_not_usable() {
    let mut s = settings();
    s.unusable_addresses.insert("192.0.2.10".parse().unwrap());
    let t = run_with(
        &format!(
            "{}{}",
            gateway(
                "bad",
                "default",
                "  addresses: [{type: IPAddress, value: 192.0.2.10}, {type: IPAddress, value: 127.0.0.2}]\n"
            ),
            gateway("good", "default", "  addresses: [{type: IPAddress, value: 127.0.0.1}]\n"),
        ),
        s,
    );
    let bad = t.gateway("default", "bad");
    assert_eq!(cond(&bad, "Accepted"), "True/Accepted");
    assert_eq!(cond(&bad, "Programmed"), "False/AddressNotUsable");
    assert_eq!(bad["addresses"], json!([]), "never report an unusable address");
    let good = t.gateway("default", "good");
    assert_eq!(cond(&good, "Programmed"), "True/Programmed");
    assert_eq!(t.bind_addresses(), ["127.0.0.1:80"], "only the good Gateway is served");
}

#[test]
fn address_pool_assigns_in_namespace_name_order() {
    let mut s = settings();
    s.address_pool = Some("10.0.0.0/29".parse().unwrap());
    // Creation times run against name order: the pool must not care.
    let t = run_with(
        &format!(
            "{}{}{}{}",
            gateway("a", "b", "").replace("namespace: b}", "namespace: b, creationTimestamp: '2025-01-01T00:00:00Z'}"),
            gateway("z", "a", "").replace("namespace: a}", "namespace: a, creationTimestamp: '2025-02-01T00:00:00Z'}"),
            gateway("b", "a", "").replace("namespace: a}", "namespace: a, creationTimestamp: '2025-03-01T00:00:00Z'}"),
            // Its own address is taken out of the pool.
            gateway("own", "c", "  addresses: [{type: IPAddress, value: 10.0.0.1}]\n"),
        ),
        s,
    );
    let addr = |ns: &str, name: &str| t.gateway(ns, name)["addresses"][0]["value"].as_str().unwrap().to_string();
    assert_eq!(addr("a", "b"), "10.0.0.2");
    assert_eq!(addr("a", "z"), "10.0.0.3");
    assert_eq!(addr("b", "a"), "10.0.0.4");
    assert_eq!(addr("c", "own"), "10.0.0.1");
    assert_eq!(t.bind_addresses(), ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"]);
    assert_eq!(t.bind("10.0.0.2:80").unwrap().listeners[0].name, "a/b/http");
}

#[test]
fn exhausted_pool_leaves_address_not_assigned() {
    let mut s = settings();
    s.address_pool = Some("10.0.0.0/30".parse().unwrap()); // two hosts
    let t = run_with(
        &format!("{}{}{}", gateway("a", "default", ""), gateway("b", "default", ""), gateway("c", "default", "")),
        s,
    );
    for name in ["a", "b"] {
        assert_eq!(cond(&t.gateway("default", name), "Programmed"), "True/Programmed", "{name}");
    }
    let c = t.gateway("default", "c");
    assert_eq!(cond(&c, "Accepted"), "True/Accepted");
    assert_eq!(cond(&c, "Programmed"), "False/AddressNotAssigned");
    assert_eq!(c["addresses"], json!([]));
    assert_eq!(t.bind_addresses(), ["10.0.0.1:80", "10.0.0.2:80"]);
}

#[test]
fn empty_address_value_is_assigned_from_the_pool() {
    let mut s = settings();
    s.address_pool = Some("10.0.0.0/29".parse().unwrap());
    let t = run_with(&gateway("gw", "default", "  addresses: [{type: IPAddress}]\n"), s);
    let gw = t.gateway("default", "gw");
    assert_eq!(cond(&gw, "Programmed"), "True/Programmed");
    assert_eq!(gw["addresses"], json!([{"type": "IPAddress", "value": "10.0.0.1"}]));
}

#[test]
fn port_unavailable_on_the_data_plane() {
    let mut s = settings();
    s.unavailable_ports.insert((SocketAddr::new(IpAddr::from([127, 0, 0, 1]), 8080), false));
    let t = run_with(
        "\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: gatehouse
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: alt, port: 8080, protocol: HTTP}
",
        s,
    );
    let gw = t.gateway("default", "gw");
    assert_eq!(cond(&gw, "Accepted"), "True/ListenersNotValid");
    assert_eq!(cond(&gw, "Programmed"), "True/Programmed");
    let alt = listener(&gw, "alt");
    assert_eq!(cond(alt, "Accepted"), "False/PortUnavailable");
    assert_eq!(cond(alt, "Programmed"), "False/Invalid");
    assert_eq!(cond(listener(&gw, "http"), "Accepted"), "True/Accepted");
    assert_eq!(t.bind_addresses(), ["127.0.0.1:80"]);
}

#[test]
fn older_gateway_keeps_a_shared_port() {
    let t = run(&format!(
        "{}{}",
        gateway("new", "default", "")
            .replace("namespace: default}", "namespace: default, creationTimestamp: '2025-02-01T00:00:00Z'}"),
        gateway("old", "default", "")
            .replace("namespace: default}", "namespace: default, creationTimestamp: '2025-01-01T00:00:00Z'}"),
    ));
    assert_eq!(cond(listener(&t.gateway("default", "old"), "http"), "Accepted"), "True/Accepted");
    let new = t.gateway("default", "new");
    assert_eq!(cond(listener(&new, "http"), "Accepted"), "False/PortUnavailable");
    assert_eq!(cond(&new, "Accepted"), "False/ListenersNotValid");
    assert_eq!(t.bind("127.0.0.1:80").unwrap().listeners.len(), 1);
    assert_eq!(t.bind("127.0.0.1:80").unwrap().listeners[0].name, "default/old/http");
}

/// Frontend client-certificate validation: the conformance layout of
/// gateway-with-invalid-clientcertificate-validation, plus the insecure fallback condition.
#[test]
fn frontend_client_certificate_validation() {
    let ca = serde_json::to_string(&crate::common::cert().0).unwrap();
    let t = run(&with_cert(&format!(
        "\
apiVersion: v1
kind: Secret
metadata: {{name: server}}
type: kubernetes.io/tls
stringData: {{tls.crt: {{{{CERT}}}}, tls.key: {{{{KEY}}}}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: ca}}
data: {{ca.crt: {ca}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: ca, namespace: elsewhere}}
data: {{ca.crt: {ca}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  gatewayClassName: gatehouse
  tls:
    frontend:
      default:
        validation: {{caCertificateRefs: [{{group: '', kind: ConfigMap, name: ca}}]}}
      perPort:
      - port: 7443
        tls: {{validation: {{caCertificateRefs: [{{group: '', kind: ConfigMap, name: missing}}]}}}}
      - port: 8443
        tls: {{validation: {{caCertificateRefs: [{{group: '', kind: Service, name: ca}}]}}}}
      - port: 6443
        tls: {{validation: {{caCertificateRefs: [{{group: '', kind: ConfigMap, name: ca, namespace: elsewhere}}]}}}}
      - port: 9443
        tls: {{validation: {{caCertificateRefs: [{{group: '', kind: ConfigMap, name: ca}}], mode: AllowInsecureFallback}}}}
  listeners:
  - {{name: http, port: 80, protocol: HTTP}}
  - {{name: https, port: 443, protocol: HTTPS, tls: {{certificateRefs: [{{name: server}}]}}}}
  - {{name: https-unresolved, port: 7443, protocol: HTTPS, tls: {{certificateRefs: [{{name: server}}]}}}}
  - {{name: https-invalid-kind, port: 8443, protocol: HTTPS, tls: {{certificateRefs: [{{name: server}}]}}}}
  - {{name: https-grant-missing, port: 6443, protocol: HTTPS, tls: {{certificateRefs: [{{name: server}}]}}}}
  - {{name: https-fallback, port: 9443, protocol: HTTPS, tls: {{certificateRefs: [{{name: server}}]}}}}
"
    )));
    let gw = t.gateway("default", "gw");
    assert_eq!(cond(&gw, "Accepted"), "True/ListenersNotValid");
    assert_eq!(cond(&gw, "InsecureFrontendValidationMode"), "True/ConfigurationChanged");
    for name in ["http", "https", "https-fallback"] {
        let l = listener(&gw, name);
        assert_eq!(cond(l, "Accepted"), "True/Accepted", "{name}");
        assert_eq!(cond(l, "ResolvedRefs"), "True/ResolvedRefs", "{name}");
        assert_eq!(cond(l, "Programmed"), "True/Programmed", "{name}");
    }
    for (name, reason) in [
        ("https-unresolved", "InvalidCACertificateRef"),
        ("https-invalid-kind", "InvalidCACertificateKind"),
        ("https-grant-missing", "RefNotPermitted"),
    ] {
        let l = listener(&gw, name);
        assert_eq!(cond(l, "ResolvedRefs"), format!("False/{reason}"), "{name}");
        assert_eq!(cond(l, "Accepted"), "False/NoValidCACertificate", "{name}");
        assert_eq!(cond(l, "Programmed").split('/').next(), Some("False"), "{name}");
    }
    let https = t.ir_listener("default/gw/https");
    let v = https.tls.as_ref().unwrap().client_validation.as_ref().expect("client validation on HTTPS");
    assert!(v.ca_pem.contains("BEGIN CERTIFICATE") && !v.insecure_fallback);
    assert!(
        t.ir_listener("default/gw/https-fallback")
            .tls
            .as_ref()
            .unwrap()
            .client_validation
            .as_ref()
            .unwrap()
            .insecure_fallback
    );
    assert!(t.ir_listener("default/gw/http").tls.is_none(), "HTTP listeners are never affected");
}
