//! GatewayClass status: ours, not ours, unsupported parameters.

use api::Kind;

use crate::common::{CLASS, cond, run_raw, settings};

#[test]
fn our_class_is_accepted() {
    let t = run_raw(CLASS, settings());
    let class = t.status(Kind::GatewayClass, "", "gatehouse");
    assert_eq!(cond(&class, "Accepted"), "True/Accepted");
    assert_eq!(cond(&class, "SupportedVersion"), "True/SupportedVersion");
    assert_eq!(class["conditions"][0]["observedGeneration"], 1);
}

#[test]
fn class_of_another_controller_gets_no_status_and_its_gateways_are_ignored() {
    let t = run_raw(
        "\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: other}
spec: {controllerName: example.com/other-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: other
  listeners: [{name: http, port: 80, protocol: HTTP}]
",
        settings(),
    );
    assert_eq!(t.keys(), Vec::<String>::new(), "nothing of another controller gets a status");
    assert!(t.output.config.binds.is_empty());
}

#[test]
fn parameters_ref_is_invalid_parameters() {
    let t = run_raw(
        "\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: gatehouse}
spec:
  controllerName: gatehouse.dev/gateway-controller
  parametersRef: {group: example.com, kind: Params, name: p}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: gatehouse
  listeners: [{name: http, port: 80, protocol: HTTP}]
",
        settings(),
    );
    let class = t.status(Kind::GatewayClass, "", "gatehouse");
    assert_eq!(cond(&class, "Accepted"), "False/InvalidParameters");
    assert!(t.output.config.binds.is_empty(), "a Gateway of a rejected class is not served");
}
