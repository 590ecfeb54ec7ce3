//! BackendTLSPolicy: TLS to backends, verified against the policy's CA and hostname.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use super::common::*;

/// An HTTPS backend presenting the `pki` certificate for `name`; answers `tls-backend`.
async fn tls_backend(pki: &Pki, name: &str) -> SocketAddr {
    serve_tls(pki, name, false).await.0
}

/// As [`tls_backend`], optionally insisting on a client certificate from the `pki` CA; also
/// counts the handshakes it completed.
async fn serve_tls(pki: &Pki, name: &str, require_client_certificate: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let (cert, key) = pki.leaf(name);
    let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder =
        rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().unwrap();
    let builder = if require_client_certificate {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap()).unwrap();
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder.with_single_cert(chain, key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let count = handshakes.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let (acceptor, count) = (acceptor.clone(), count.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let svc = service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"tls-backend"))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, handshakes)
}

fn ca_config_map(pki: &Pki) -> String {
    format!(
        "---
apiVersion: v1
kind: ConfigMap
metadata: {{name: backend-ca}}
data:
  ca.crt: {}
",
        serde_json::to_string(&pki.ca_pem).unwrap()
    )
}

fn policy(validation: &str) -> String {
    format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {{name: tls}}
spec:
  targetRefs: [{{group: \"\", kind: Service, name: secure}}]
  validation:
{validation}"
    )
}

/// A Gateway whose route sends everything to Service `secure` (port 80 → `backend`).
async fn start(backend: SocketAddr, extra: &str) -> (Gateway, u16) {
    let port = free_port();
    let config =
        format!("{CLASS}{}{}{}{extra}", http_gateway(port), route("r", "/", "secure"), service("secure", backend));
    (Gateway::start(&config).await, port)
}

#[tokio::test]
async fn requests_reach_a_tls_backend_verified_by_the_policy() {
    let pki = Pki::new(&["backend.example"]);
    let backend = tls_backend(&pki, "backend.example").await;
    let validation =
        "    caCertificateRefs: [{group: \"\", kind: ConfigMap, name: backend-ca}]\n    hostname: backend.example\n";
    let (gw, port) = start(backend, &format!("{}{}", ca_config_map(&pki), policy(validation))).await;
    assert_eq!(get(&format!("http://127.0.0.1:{port}/")).await.unwrap(), (200, "tls-backend".to_string()));

    let status = gw.status().await;
    let ancestors = &resource(&status, "BackendTLSPolicy", "tls")["status"]["ancestors"];
    assert_eq!(ancestors.as_array().unwrap().len(), 1, "{ancestors}");
    assert_eq!(ancestors[0]["ancestorRef"]["name"], "gw");
    assert_eq!(ancestors[0]["ancestorRef"]["kind"], "Gateway");
    assert_eq!(ancestors[0]["controllerName"], "gatehouse.dev/gateway-controller");
    assert_eq!(condition(&ancestors[0]["conditions"], "Accepted")["status"], "True");
    assert_eq!(condition(&ancestors[0]["conditions"], "ResolvedRefs")["status"], "True");
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused_unless_a_subject_alt_name_allows_it() {
    let pki = Pki::new(&["backend.example"]);
    let backend = tls_backend(&pki, "backend.example").await;
    let wrong =
        "    caCertificateRefs: [{group: \"\", kind: ConfigMap, name: backend-ca}]\n    hostname: other.example\n";
    let (gw, port) = start(backend, &format!("{}{}", ca_config_map(&pki), policy(wrong))).await;
    assert_eq!(get(&format!("http://127.0.0.1:{port}/")).await.unwrap().0, 502, "the name does not match");

    let san = format!(
        "{CLASS}{}{}{}{}{}",
        http_gateway(port),
        route("r", "/", "secure"),
        service("secure", backend),
        ca_config_map(&pki),
        policy(&format!("{wrong}    subjectAltNames: [{{type: Hostname, hostname: backend.example}}]\n"))
    );
    gw.reconfigure(&san).await;
    assert_eq!(get(&format!("http://127.0.0.1:{port}/")).await.unwrap(), (200, "tls-backend".to_string()));
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_whatever_names_it_carries() {
    let (ours, theirs) = (Pki::new(&["backend.example"]), Pki::new(&["backend.example"]));
    let backend = tls_backend(&theirs, "backend.example").await;
    let validation = "    caCertificateRefs: [{group: \"\", kind: ConfigMap, name: backend-ca}]\n    hostname: backend.example\n    subjectAltNames: [{type: Hostname, hostname: backend.example}]\n";
    let (_gw, port) = start(backend, &format!("{}{}", ca_config_map(&ours), policy(validation))).await;
    assert_eq!(get(&format!("http://127.0.0.1:{port}/")).await.unwrap().0, 502);
}

#[tokio::test]
async fn a_uri_subject_alt_name_is_matched_exactly() {
    let spiffe = "spiffe://cluster.local/ns/default/sa/backend";
    let pki = Pki::new(&[spiffe]);
    let backend = tls_backend(&pki, spiffe).await;
    let validation = |uri: &str| {
        format!(
            "    caCertificateRefs: [{{group: \"\", kind: ConfigMap, name: backend-ca}}]\n    hostname: backend.example\n    subjectAltNames: [{{type: URI, uri: \"{uri}\"}}]\n"
        )
    };
    let (gw, port) = start(backend, &format!("{}{}", ca_config_map(&pki), policy(&validation(spiffe)))).await;
    let url = format!("http://127.0.0.1:{port}/");
    assert_eq!(get(&url).await.unwrap(), (200, "tls-backend".to_string()));

    let other = format!(
        "{CLASS}{}{}{}{}{}",
        http_gateway(port),
        route("r", "/", "secure"),
        service("secure", backend),
        ca_config_map(&pki),
        policy(&validation("spiffe://cluster.local/ns/default/sa/other"))
    );
    gw.reconfigure(&other).await;
    assert_eq!(get(&url).await.unwrap().0, 502, "another URI does not match");
}

#[tokio::test]
async fn a_policy_without_a_valid_ca_fails_requests_and_says_why() {
    let pki = Pki::new(&["backend.example"]);
    let backend = tls_backend(&pki, "backend.example").await;
    let validation =
        "    caCertificateRefs: [{group: \"\", kind: ConfigMap, name: missing}]\n    hostname: backend.example\n";
    let (gw, port) = start(backend, &policy(validation)).await;
    assert_eq!(get(&format!("http://127.0.0.1:{port}/")).await.unwrap().0, 500, "never sent unverified");
    let status = gw.status().await;
    let conditions = &resource(&status, "BackendTLSPolicy", "tls")["status"]["ancestors"][0]["conditions"];
    assert_eq!(condition(conditions, "Accepted")["reason"], "NoValidCACertificate");
    assert_eq!(condition(conditions, "ResolvedRefs")["reason"], "InvalidCACertificateRef");
}

#[tokio::test]
async fn the_gateway_presents_its_client_certificate_to_tls_backends() {
    let pki = Pki::new(&["backend.example", "gateway.client"]);
    let (backend, _) = serve_tls(&pki, "backend.example", true).await;
    let validation =
        "    caCertificateRefs: [{group: \"\", kind: ConfigMap, name: backend-ca}]\n    hostname: backend.example\n";
    let extra = format!("{}{}", ca_config_map(&pki), policy(validation));
    let (gw, port) = start(backend, &extra).await;
    assert_eq!(get(&format!("http://127.0.0.1:{port}/")).await.unwrap().0, 502, "no client certificate yet");

    let with_certificate = format!(
        "{CLASS}{}{}{}{extra}{}",
        http_gateway(port).replace(
            "  gatewayClassName: gatehouse\n",
            "  gatewayClassName: gatehouse\n  tls:\n    backend:\n      clientCertificateRef: {name: gateway-client}\n"
        ),
        route("r", "/", "secure"),
        service("secure", backend),
        pki.secret("gateway-client", "gateway.client"),
    );
    let status = gw.reconfigure(&with_certificate).await;
    let gateway = resource(&status, "Gateway", "gw");
    assert_eq!(condition(&gateway["status"]["conditions"], "ResolvedRefs")["status"], "True", "{gateway}");
    assert_eq!(get(&format!("http://127.0.0.1:{port}/")).await.unwrap(), (200, "tls-backend".to_string()));
}

#[tokio::test]
async fn connections_to_a_tls_backend_outlive_a_reload() {
    let pki = Pki::new(&["backend.example"]);
    let (backend, handshakes) = serve_tls(&pki, "backend.example", false).await;
    let validation =
        "    caCertificateRefs: [{group: \"\", kind: ConfigMap, name: backend-ca}]\n    hostname: backend.example\n";
    let tls = format!("{}{}", ca_config_map(&pki), policy(validation));
    let (gw, port) = start(backend, &tls).await;
    let url = format!("http://127.0.0.1:{port}");
    assert_eq!(get(&format!("{url}/")).await.unwrap(), (200, "tls-backend".to_string()));

    // Another route, the same backend and policy: the pooled TLS connection is kept.
    let config = format!(
        "{CLASS}{}{}{}{}{tls}",
        http_gateway(port),
        route("r", "/", "secure"),
        route("other", "/other", "secure"),
        service("secure", backend)
    );
    let status = gw.reconfigure(&config).await;
    assert_eq!(
        condition(&resource(&status, "HTTPRoute", "other")["status"]["parents"][0]["conditions"], "Accepted")["status"],
        "True"
    );
    for path in ["/", "/other"] {
        assert_eq!(get(&format!("{url}{path}")).await.unwrap(), (200, "tls-backend".to_string()));
    }
    assert_eq!(handshakes.load(Ordering::SeqCst), 1, "one TLS connection, before and after the reload");
}
