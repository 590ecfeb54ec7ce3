//! The test harness: a running gatehouse with its config in a temp dir, echo backends, and
//! small clients. Every wait is bounded.

use std::{
    convert::Infallible,
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};

/// How long any single wait in a test may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
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
            .stderr(Stdio::null())
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
    format!(
        "---
apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  ports:
    - name: http
      port: 80
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}
  labels:
    kubernetes.io/service-name: {name}
addressType: IPv4
endpoints:
  - addresses: [\"{ip}\"]
ports:
  - name: http
    port: {port}
",
        ip = backend.ip(),
        port = backend.port()
    )
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
