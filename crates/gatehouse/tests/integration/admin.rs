//! The admin API as the standalone contract fixes it, and traffic through a first route.

use super::common::*;

#[tokio::test]
async fn status_reports_every_resource_with_the_contract_shape() {
    let backend = echo_backend("one").await;
    let port = free_port();
    let config = format!("{CLASS}{}{}{}", http_gateway(port), route("r", "/", "svc"), service("svc", backend));
    let gw = Gateway::start(&config).await;
    let status = gw.status().await;
    assert_eq!(status["generation"], 1);

    let class = resource(&status, "GatewayClass", "gatehouse");
    assert_eq!(condition(&class["status"]["conditions"], "Accepted")["status"], "True");
    assert!(class["metadata"].get("namespace").is_none(), "GatewayClass is cluster-scoped");

    let g = resource(&status, "Gateway", "gw");
    assert_eq!(g["apiVersion"], "gateway.networking.k8s.io/v1");
    assert_eq!(g["metadata"]["namespace"], "default");
    assert_eq!(g["status"]["addresses"], serde_json::json!([{"type": "IPAddress", "value": "127.0.0.1"}]));
    for t in ["Accepted", "Programmed"] {
        let c = condition(&g["status"]["conditions"], t);
        assert_eq!(c["status"], "True", "{t}");
        assert_eq!(c["observedGeneration"], 1);
        assert!(c["lastTransitionTime"].as_str().unwrap().ends_with('Z'));
    }
    let listener = &g["status"]["listeners"][0];
    assert_eq!(listener["name"], "http");
    assert_eq!(listener["attachedRoutes"], 1);
    assert_eq!(
        listener["supportedKinds"],
        serde_json::json!([{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}, {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"}])
    );

    let r = resource(&status, "HTTPRoute", "r");
    let parent = &r["status"]["parents"][0];
    assert_eq!(parent["controllerName"], "gatehouse.dev/gateway-controller");
    assert_eq!(parent["parentRef"]["group"], "gateway.networking.k8s.io", "defaults are shown");
    assert_eq!(parent["parentRef"]["kind"], "Gateway");
    assert_eq!(condition(&parent["conditions"], "Accepted")["status"], "True");
    assert_eq!(condition(&parent["conditions"], "ResolvedRefs")["status"], "True");

    // And the route serves.
    let (code, body) = get(&format!("http://127.0.0.1:{port}/hello")).await.unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("\"backend\":\"one\""), "{body}");
}

#[tokio::test]
async fn metrics_and_config_are_served() {
    let port = free_port();
    let gw = Gateway::start(&format!("{CLASS}{}{}", http_gateway(port), route("r", "/", "missing"))).await;
    // A request so that the data plane has something to count.
    let (code, _) = get(&format!("http://127.0.0.1:{port}/")).await.unwrap();
    assert_eq!(code, 500, "a rule whose only backend is missing answers 500");

    let (code, metrics) = get(&format!("http://{}/metrics", gw.admin)).await.unwrap();
    assert_eq!(code, 200);
    for needle in [
        "gatehouse_config_generation 1",
        "gatehouse_resources{kind=\"HTTPRoute\"} 1",
        "gatehouse_translation_seconds_count",
        "gatehouse_reload_errors_total 0",
        "gatehouse_http_requests_total{listener=\"default/gw/http\",route=\"HTTPRoute/default/r/0\",code=\"500\"} 1",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from\n{metrics}");
    }

    let (code, config) = get(&format!("http://{}/config", gw.admin)).await.unwrap();
    assert_eq!(code, 200);
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["config"]["binds"][0]["address"], format!("127.0.0.1:{port}"));
}

/// A port held by another process: that listener reports PortUnavailable, the rest serves,
/// readiness is not held back, and the next reload binds it once it is free.
#[tokio::test]
async fn a_port_in_use_is_reported_and_retried_on_reload() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let port = free_port();
    let gateway = format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  gatewayClassName: gatehouse
  listeners:
    - {{name: http, protocol: HTTP, port: {port}}}
    - {{name: busy, protocol: HTTP, port: {busy_port}}}
"
    );
    let gw = Gateway::start(&format!("{CLASS}{gateway}")).await;
    let status = gw.status().await;
    let listeners = &resource(&status, "Gateway", "gw")["status"]["listeners"];
    let busy_status = listeners.as_array().unwrap().iter().find(|l| l["name"] == "busy").unwrap();
    assert_eq!(condition(&busy_status["conditions"], "Accepted")["reason"], "PortUnavailable");
    assert_eq!(get(&format!("http://127.0.0.1:{port}/")).await.unwrap().0, 404, "the other listener serves");

    drop(busy);
    let status = gw.reconfigure(&format!("{CLASS}{gateway}# touched\n")).await;
    let listeners = &resource(&status, "Gateway", "gw")["status"]["listeners"];
    let busy_status = listeners.as_array().unwrap().iter().find(|l| l["name"] == "busy").unwrap();
    assert_eq!(condition(&busy_status["conditions"], "Accepted")["status"], "True", "{busy_status}");
    assert_eq!(get(&format!("http://127.0.0.1:{busy_port}/")).await.unwrap().0, 404);
}
