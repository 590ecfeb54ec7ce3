//! ListenerSets: listeners from another namespace served on their parent Gateway's address.

use super::common::*;

#[tokio::test]
async fn a_listener_set_is_served_where_its_gateway_allows_it() {
    let (echo, _) = recording_backend("team-a").await;
    let (gw_port, ls_port) = (free_port(), free_port());
    let config = format!(
        "{CLASS}---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: infra}}
spec:
  gatewayClassName: gatehouse
  allowedListeners: {{namespaces: {{from: Selector, selector: {{matchLabels: {{team: a}}}}}}}}
  listeners: [{{name: http, port: {gw_port}, protocol: HTTP}}]
---
apiVersion: v1
kind: Namespace
metadata: {{name: team-a, labels: {{team: a}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: ListenerSet
metadata: {{name: apps, namespace: team-a}}
spec:
  parentRef: {{name: gw, namespace: infra}}
  listeners: [{{name: app, port: {ls_port}, protocol: HTTP, hostname: app.example}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: ListenerSet
metadata: {{name: intruder, namespace: team-b}}
spec:
  parentRef: {{name: gw, namespace: infra}}
  listeners: [{{name: app, port: {}, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: app, namespace: team-a}}
spec:
  parentRefs: [{{kind: ListenerSet, name: apps}}]
  rules: [{{backendRefs: [{{name: echo, port: 80}}]}}]
{}",
        free_port(),
        service("echo", echo).replace("metadata:\n  name: echo\n", "metadata:\n  name: echo\n  namespace: team-a\n")
    );
    let gw = Gateway::start(&config).await;
    let status = gw.status().await;
    let gateway = resource(&status, "Gateway", "gw");
    assert_eq!(gateway["status"]["attachedListenerSets"], 1);
    let apps = resource(&status, "ListenerSet", "apps");
    assert_eq!(condition(&apps["status"]["conditions"], "Accepted")["status"], "True", "{apps}");
    assert_eq!(apps["status"]["listeners"][0]["attachedRoutes"], 1);
    let intruder = resource(&status, "ListenerSet", "intruder");
    assert_eq!(condition(&intruder["status"]["conditions"], "Accepted")["reason"], "NotAllowed");

    let (code, _, body) = get_host(&format!("http://127.0.0.1:{ls_port}/"), "app.example").await.unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"backend\":\"team-a\""), "{body}");
    let (code, _, _) = get_host(&format!("http://127.0.0.1:{gw_port}/"), "app.example").await.unwrap();
    assert_eq!(code, 404, "the Gateway's own listener does not serve the ListenerSet's routes");
}
