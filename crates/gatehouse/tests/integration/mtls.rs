//! Frontend client-certificate validation (the Gateway's `tls.frontend`).

use super::{common::*, tls::send};

/// A Gateway with one HTTPS listener (server certificate for `gw.example`) that validates
/// client certificates against the test CA, in `mode`.
async fn gateway(pki: &Pki, mode: &str) -> (Gateway, u16) {
    let port = free_port();
    let (echo, _) = recording_backend("echo").await;
    let config = format!(
        "{CLASS}---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  gatewayClassName: gatehouse
  tls:
    frontend:
      default:
        validation:
          caCertificateRefs: [{{group: '', kind: ConfigMap, name: client-ca}}]
          mode: {mode}
  listeners:
  - name: https
    protocol: HTTPS
    port: {port}
    tls: {{certificateRefs: [{{name: server}}]}}
{}---
apiVersion: v1
kind: ConfigMap
metadata: {{name: client-ca}}
data: {{ca.crt: {}}}
{}{}",
        pki.secret("server", "gw.example"),
        serde_json::to_string(&pki.ca_pem).unwrap(),
        route("r", "/", "echo"),
        service("echo", echo),
    );
    (Gateway::start(&config).await, port)
}

/// The outcome of one request: the status code, or why there was none.
async fn outcome(pki: &Pki, port: u16, client: Option<(&str, &str)>) -> Result<u16, String> {
    let tls = pki.connect_as(port, "gw.example", &[b"http/1.1"], client).await?;
    // TLS 1.3 reports a refused client certificate after the handshake, on first use.
    let request = tokio::spawn(async move { send(tls, "gw.example", "/").await.1 });
    match tokio::time::timeout(PATIENCE, request).await {
        Ok(Ok(code)) => Ok(code),
        Ok(Err(e)) => Err(format!("connection failed: {e}")),
        Err(_) => Err("timed out".into()),
    }
}

#[tokio::test]
async fn only_clients_with_a_trusted_certificate_are_served() {
    let pki = Pki::new(&["gw.example", "client.example"]);
    let stranger = Pki::new(&["client.example"]);
    let (_gw, port) = gateway(&pki, "AllowValidOnly").await;
    assert_eq!(outcome(&pki, port, Some(pki.leaf("client.example"))).await, Ok(200));
    assert!(outcome(&pki, port, None).await.is_err(), "no client certificate");
    assert!(outcome(&pki, port, Some(stranger.leaf("client.example"))).await.is_err(), "a certificate of another CA");
}

#[tokio::test]
async fn insecure_fallback_serves_everyone_and_says_so() {
    let pki = Pki::new(&["gw.example", "client.example"]);
    let stranger = Pki::new(&["client.example"]);
    let (gw, port) = gateway(&pki, "AllowInsecureFallback").await;
    assert_eq!(outcome(&pki, port, Some(pki.leaf("client.example"))).await, Ok(200));
    assert_eq!(outcome(&pki, port, None).await, Ok(200));
    assert_eq!(outcome(&pki, port, Some(stranger.leaf("client.example"))).await, Ok(200));
    let status = gw.status().await;
    let c = condition(&resource(&status, "Gateway", "gw")["status"]["conditions"], "InsecureFrontendValidationMode");
    assert_eq!((c["status"].as_str(), c["reason"].as_str()), (Some("True"), Some("ConfigurationChanged")));
}
