//! The test harness: a running gatehouse with its config in a temp dir, echo backends, and
//! small clients. Every wait is bounded.

use std::{
    convert::Infallible,
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::{TlsConnector, client::TlsStream};

/// How long any single wait in a test may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A port that was free a moment ago on 127.0.0.1, for a gateway to listen on, and never
/// handed out before in this process (two listeners of one test on the same port would make
/// its Gateway invalid). It lies below the OS's ephemeral range, so that no socket bound to
/// port 0 and no outgoing connection can be given it before the gateway binds it.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    const SPAN: u16 = 10_000;
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let mut given = GIVEN.lock().unwrap();
    if ephemeral > SPAN + 1024 {
        // Start where another test process is unlikely to: from the process id.
        let start = ephemeral - SPAN + (std::process::id() % u32::from(SPAN)) as u16;
        for i in 0..SPAN {
            let port = ephemeral - SPAN + (start - (ephemeral - SPAN) + i) % SPAN;
            if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
                given.insert(port);
                return port;
            }
        }
    }
    // No room below the ephemeral range: take one from it.
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if given.insert(port) {
            return port;
        }
    }
    panic!("no port left that was not handed out before");
}

pub struct Gateway {
    child: Child,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts `gatehouse run` on `config` (written to `config.yaml` in a fresh directory) and
    /// waits until `/ready` answers 200.
    pub async fn start(config: &str) -> Gateway {
        Self::start_with(config, &[]).await
    }

    pub async fn start_with(config: &str, extra: &[&str]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.yaml"), config).unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["run", "--config"])
            .arg(dir.path())
            .args(["--admin", &admin.to_string(), "--bind", "127.0.0.1", "--workers", "2"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(
                std::env::var_os("GATEHOUSE_TEST_LOG")
                    .map_or(Stdio::null(), |p| std::fs::File::create(p).unwrap().into()),
            )
            .spawn()
            .expect("gatehouse starts");
        let gw = Gateway { child, admin, dir };
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok((200, _)) = get(&format!("http://{admin}/ready")).await {
                break;
            }
            assert!(Instant::now() < deadline, "gatehouse did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        gw
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// `/status` as JSON.
    pub async fn status(&self) -> serde_json::Value {
        let (code, body) = get(&format!("http://{}/status", self.admin)).await.unwrap();
        assert_eq!(code, 200);
        serde_json::from_str(&body).unwrap()
    }

    /// Rewrites the config file and waits until `/status` shows a later generation.
    pub async fn reconfigure(&self, config: &str) -> serde_json::Value {
        let before = self.status().await["generation"].as_u64().unwrap();
        // Write then rename, as editors and config management tools do.
        let tmp = self.dir.path().join(".config.yaml.tmp");
        std::fs::write(&tmp, config).unwrap();
        std::fs::rename(&tmp, self.config_path()).unwrap();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let status = self.status().await;
            if status["generation"].as_u64().unwrap() > before {
                return status;
            }
            assert!(Instant::now() < deadline, "the change was not applied");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit on its own; its exit status.
    pub fn wait_exit(&mut self, patience: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The resource with this kind and name in a `/status` document.
pub fn resource<'a>(status: &'a serde_json::Value, kind: &str, name: &str) -> &'a serde_json::Value {
    status["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == kind && r["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind} {name} not in status: {status}"))
}

/// The condition of this type in a list of conditions.
pub fn condition<'a>(conditions: &'a serde_json::Value, type_: &str) -> &'a serde_json::Value {
    conditions
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {conditions}"))
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// GET `url`; status code and body.
pub async fn get(url: &str) -> Result<(u16, String), String> {
    request(Request::get(url).body(Full::new(Bytes::new())).unwrap()).await.map(|(c, _, b)| (c, b))
}

/// GET `url` with a Host header.
pub async fn get_host(url: &str, host: &str) -> Result<(u16, http::HeaderMap, String), String> {
    request(Request::get(url).header("host", host).body(Full::new(Bytes::new())).unwrap()).await
}

pub async fn request(req: Request<Full<Bytes>>) -> Result<(u16, http::HeaderMap, String), String> {
    let fut = client().request(req);
    let resp =
        tokio::time::timeout(PATIENCE, fut).await.map_err(|_| "timed out".to_string())?.map_err(|e| e.to_string())?;
    let code = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = tokio::time::timeout(PATIENCE, resp.into_body().collect())
        .await
        .map_err(|_| "body timed out".to_string())?
        .map_err(|e| e.to_string())?;
    Ok((code, headers, String::from_utf8_lossy(&body.to_bytes()).into_owned()))
}

/// An HTTP/1.1 and h2c server on 127.0.0.1 that answers every request with JSON describing
/// it: `{"backend", "method", "path", "headers": {...}}`.
pub async fn echo_backend(name: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| async move {
                    let headers: serde_json::Map<String, serde_json::Value> = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_str().unwrap_or("").to_string())))
                        .collect();
                    let body = serde_json::json!({
                        "backend": name,
                        "method": req.method().as_str(),
                        "path": req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"),
                        "version": format!("{:?}", req.version()),
                        "headers": headers,
                    });
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body.to_string()))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// The GatewayClass every test config starts with.
pub const CLASS: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: gatehouse
spec:
  controllerName: gatehouse.dev/gateway-controller
";

/// A Service `name` in `default` with one port 80 whose endpoint is `backend`.
pub fn service(name: &str, backend: SocketAddr) -> String {
    service_with(name, None, &[(backend, true)])
}

/// A Gateway `gw` with one HTTP listener `http` on `port`.
pub fn http_gateway(port: u16) -> String {
    format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: gw
spec:
  gatewayClassName: gatehouse
  listeners:
    - name: http
      protocol: HTTP
      port: {port}
      allowedRoutes:
        namespaces:
          from: All
"
    )
}

/// An HTTPRoute `name` on `gw` sending `prefix` to Service `service` port 80.
pub fn route(name: &str, prefix: &str, service: &str) -> String {
    format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: {name}
spec:
  parentRefs:
    - name: gw
  rules:
    - matches:
        - path:
            type: PathPrefix
            value: {prefix}
      backendRefs:
        - name: {service}
          port: 80
"
    )
}

// ---------------------------------------------------------------------------------------------
// Helpers for the data-plane tests (http, tls, hostile).

/// What a [`recording_backend`] saw, one JSON description per request, in arrival order.
pub type Seen = std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>;

/// The JSON description of a request as the recording backends give it: `backend`, `method`,
/// `path`, `version`, `body`, and `headers` with repeated values joined by `,` (as the
/// conformance echo server reports them).
fn describe(name: &str, parts: &http::request::Parts, body: &[u8]) -> serde_json::Value {
    let mut headers = serde_json::Map::new();
    for key in parts.headers.keys() {
        let joined =
            parts.headers.get_all(key).iter().map(|v| String::from_utf8_lossy(v.as_bytes())).collect::<Vec<_>>();
        headers.insert(key.to_string(), serde_json::Value::String(joined.join(",")));
    }
    serde_json::json!({
        "backend": name,
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        "authority": parts.uri.authority().map(|a| a.as_str()),
        "version": format!("{:?}", parts.version),
        "body": String::from_utf8_lossy(body),
        "headers": headers,
    })
}

/// An HTTP/1.1 and h2c server like [`echo_backend`] that also records every request it gets
/// and reads the body. A request header `x-echo-response-header: name=value` (repeatable)
/// makes the response carry that header.
pub async fn recording_backend(name: &'static str) -> (SocketAddr, Seen) {
    recording_server(name, |parts, description| {
        let mut resp = Response::new(Full::new(Bytes::from(description.to_string())));
        for v in parts.headers.get_all("x-echo-response-header") {
            if let Some((n, v)) = v.to_str().ok().and_then(|s| s.split_once('='))
                && let (Ok(n), Ok(v)) =
                    (http::HeaderName::from_bytes(n.trim().as_bytes()), http::HeaderValue::from_str(v.trim()))
            {
                resp.headers_mut().append(n, v);
            }
        }
        resp
    })
    .await
}

/// A server like [`http_server`] that reads each request whole, records it as
/// [`describe`] does (`backend` is `name`), and answers with `answer`.
pub async fn recording_server<F>(name: &'static str, answer: F) -> (SocketAddr, Seen)
where
    F: Fn(&http::request::Parts, &serde_json::Value) -> Response<Full<Bytes>> + Clone + Send + Sync + 'static,
{
    let seen: Seen = Default::default();
    let log = seen.clone();
    let addr = http_server(move |req: Request<Incoming>| {
        let (log, answer) = (log.clone(), answer.clone());
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let description = describe(name, &parts, &body);
            log.lock().unwrap().push(description.clone());
            answer(&parts, &description)
        }
    })
    .await;
    (addr, seen)
}

/// An HTTP/1.1 and h2c server on 127.0.0.1 (upgrades too) answering every request with
/// `handle`.
pub async fn http_server<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let handle = handle.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let answer = handle(req);
                    async move { Ok::<_, Infallible>(answer.await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// A backend that waits `delay` before answering 200 `slow`.
pub async fn slow_backend(delay: Duration) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<Incoming>| async move {
                    tokio::time::sleep(delay).await;
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"slow"))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// A backend that accepts any `Upgrade` request with 101 (echoing the `Upgrade` value and a
/// `Sec-WebSocket-Accept` placeholder) and then echoes every byte back on the upgraded
/// connection. Requests without an upgrade get 400.
pub async fn upgrade_echo_backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let svc = service_fn(move |mut req: Request<Incoming>| async move {
                    let Some(proto) = req.headers().get(http::header::UPGRADE).cloned() else {
                        let mut r = Response::new(Full::new(Bytes::from_static(b"no upgrade")));
                        *r.status_mut() = http::StatusCode::BAD_REQUEST;
                        return Ok::<_, Infallible>(r);
                    };
                    let on = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        if let Ok(up) = on.await {
                            let mut io = TokioIo::new(up);
                            let (mut r, mut w) = tokio::io::split(&mut io);
                            let _ = tokio::io::copy(&mut r, &mut w).await;
                        }
                    });
                    let mut r = Response::new(Full::new(Bytes::new()));
                    *r.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
                    r.headers_mut().insert(http::header::UPGRADE, proto);
                    r.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("upgrade"));
                    r.headers_mut()
                        .insert("sec-websocket-accept", http::HeaderValue::from_static("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
                    Ok(r)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// What a raw exchange on a socket produced: the bytes read and how reading ended.
#[derive(Debug)]
pub struct RawReply {
    pub text: String,
    /// The peer closed (EOF) or reset the connection.
    pub closed: bool,
    /// The read gave up after `wait` with the connection still open.
    pub timed_out: bool,
}

impl RawReply {
    /// The status code of the first response, if one arrived.
    pub fn status(&self) -> Option<u16> {
        let line = self.text.lines().next()?;
        line.strip_prefix("HTTP/1.1 ").or_else(|| line.strip_prefix("HTTP/1.0 "))?.get(..3)?.parse().ok()
    }
}

/// Reads from `stream` until the peer closes or `wait` passes with nothing more arriving.
pub async fn read_until_closed(stream: &mut tokio::net::TcpStream, wait: Duration) -> RawReply {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => {
                return RawReply { text: String::from_utf8_lossy(&out).into_owned(), closed: false, timed_out: true };
            }
            Ok(Ok(0)) | Ok(Err(_)) => {
                return RawReply { text: String::from_utf8_lossy(&out).into_owned(), closed: true, timed_out: false };
            }
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends `bytes` on a fresh connection to `addr` and reads until the peer closes (or
/// [`PATIENCE`] passes). Write errors are ignored: a peer may refuse mid-way.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> RawReply {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::time::timeout(PATIENCE, tokio::net::TcpStream::connect(addr)).await.unwrap().unwrap();
    let _ = stream.write_all(bytes).await;
    read_until_closed(&mut stream, PATIENCE).await
}

/// A Service `name` with one port 80 (with `appProtocol` when given) whose endpoints are
/// `backends`; each endpoint's readiness as given.
pub fn service_with(name: &str, app_protocol: Option<&str>, endpoints: &[(SocketAddr, bool)]) -> String {
    let app = app_protocol.map(|p| format!("\n      appProtocol: {p}")).unwrap_or_default();
    let port = endpoints.first().map_or(9, |(a, _)| a.port());
    let eps: String = endpoints
        .iter()
        .map(|(a, ready)| format!("\n  - addresses: [\"{}\"]\n    conditions:\n      ready: {ready}", a.ip()))
        .collect();
    let eps = if eps.is_empty() { " []".to_string() } else { eps };
    format!(
        "---
apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  ports:
    - name: http
      port: 80{app}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}
  labels:
    kubernetes.io/service-name: {name}
addressType: IPv4
endpoints:{eps}
ports:
  - name: http
    port: {port}
"
    )
}

/// An HTTPRoute `name` on `gw` with the given `spec` body after `parentRefs` (indented as a
/// child of `spec:`, e.g. `"  rules:\n    - ..."`).
pub fn route_spec(name: &str, spec: &str) -> String {
    format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: {name}
spec:
  parentRefs:
    - name: gw
{spec}"
    )
}

/// A GET through the proxy at `port` with a Host header; the backend's JSON description (or
/// `Null` when the body is not JSON) and the status.
pub async fn get_json(port: u16, path: &str, host: &str) -> (u16, serde_json::Value) {
    let (code, _, body) = get_host(&format!("http://127.0.0.1:{port}{path}"), host).await.unwrap();
    (code, serde_json::from_str(&body).unwrap_or(serde_json::Value::Null))
}

/// A test CA and leaf certificates it signed, one per name (a DNS name, or a URI).
pub struct Pki {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    roots: Arc<rustls::RootCertStore>,
    /// Per name: (certificate DER, cert PEM, key PEM).
    leaves: Vec<(String, CertificateDer<'static>, String, String)>,
}

impl Pki {
    pub fn new(names: &[&str]) -> Pki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "gatehouse test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        let leaves = names
            .iter()
            .map(|name| {
                let key = KeyPair::generate().unwrap();
                let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
                // A name with a scheme is a URI subjectAltName (a SPIFFE ID, say), else DNS.
                params.subject_alt_names = vec![match name.contains("://") {
                    true => rcgen::SanType::URI((*name).try_into().unwrap()),
                    false => rcgen::SanType::DnsName((*name).try_into().unwrap()),
                }];
                let cert = params.signed_by(&key, &ca).unwrap();
                (name.to_string(), cert.der().clone(), cert.pem(), key.serialize_pem())
            })
            .collect();
        Pki { ca_pem: ca.pem(), roots: Arc::new(roots), leaves }
    }

    pub fn secret(&self, secret: &str, name: &str) -> String {
        let (_, _, cert, key) = self.leaves.iter().find(|l| l.0 == name).unwrap();
        format!(
            "---
apiVersion: v1
kind: Secret
metadata:
  name: {secret}
type: kubernetes.io/tls
stringData:
  tls.crt: {}
  tls.key: {}
",
            serde_json::to_string(cert).unwrap(),
            serde_json::to_string(key).unwrap()
        )
    }

    /// A server config that presents the certificate of `name`.
    pub fn server_config(&self, name: &str) -> Arc<rustls::ServerConfig> {
        use rustls::pki_types::{PrivateKeyDer, pem::PemObject};
        let (_, der, _, key) = self.leaves.iter().find(|l| l.0 == name).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap())
            .unwrap();
        Arc::new(config)
    }

    /// Certificate and key PEM of a leaf.
    pub fn leaf(&self, name: &str) -> (&str, &str) {
        let (_, _, cert, key) = self.leaves.iter().find(|l| l.0 == name).unwrap();
        (cert, key)
    }

    pub fn der(&self, name: &str) -> &CertificateDer<'static> {
        &self.leaves.iter().find(|l| l.0 == name).unwrap().1
    }

    /// Connects to the proxy with `sni`, verifying the certificate against the test CA for
    /// that name, offering `alpn`.
    pub async fn connect(
        &self,
        port: u16,
        sni: &str,
        alpn: &[&[u8]],
    ) -> Result<TlsStream<tokio::net::TcpStream>, String> {
        self.connect_as(port, sni, alpn, None).await
    }

    /// As [`Pki::connect`], presenting `client` (certificate and key PEM) if given.
    pub async fn connect_as(
        &self,
        port: u16,
        sni: &str,
        alpn: &[&[u8]],
        client: Option<(&str, &str)>,
    ) -> Result<TlsStream<tokio::net::TcpStream>, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots.clone());
        let mut config = match client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                use rustls::pki_types::{PrivateKeyDer, pem::PemObject};
                let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
                builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap()).unwrap()
            }
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from(sni.to_string()).unwrap();
        tokio::time::timeout(PATIENCE, TlsConnector::from(Arc::new(config)).connect(name, tcp))
            .await
            .map_err(|_| "handshake timed out".to_string())?
            .map_err(|e| e.to_string())
    }
}
