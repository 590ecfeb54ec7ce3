//! The IR: everything the data plane needs, decided. Plain serde data, so it can be sent to a
//! proxy in another process and snapshotted in tests. The proxy compiles it (regexes, host
//! maps) once per swap and never consults a resource.

use std::{collections::BTreeMap, net::SocketAddr};

use serde::{Deserialize, Serialize};

/// The whole configuration of one process's data plane.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProxyConfig {
    /// One per socket: address and port.
    pub binds: Vec<Bind>,
    /// Backends by key. Kept apart from routes so that an endpoint change touches only this.
    pub backends: BTreeMap<String, Backend>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bind {
    pub address: SocketAddr,
    pub protocol: BindProtocol,
    /// The Gateway API listeners served on this socket, most specific hostname first.
    pub listeners: Vec<Listener>,
}

impl Bind {
    /// Every backend key the listeners of this socket refer to, mirrors included.
    pub fn backend_keys(&self) -> impl Iterator<Item = &str> {
        self.listeners.iter().flat_map(|l| {
            let rules = l.rules.iter().flat_map(HttpRule::backend_keys);
            let streams = l.stream_routes.iter().flat_map(|s| s.backends.iter().filter_map(|b| b.backend.as_deref()));
            rules.chain(streams)
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum BindProtocol {
    Http,
    /// TLS terminated here (HTTPS) or passed through/terminated per SNI (TLS listeners).
    Tls,
    Tcp,
    Udp,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Listener {
    /// `namespace/gateway/listener`, for logs and metrics.
    pub name: String,
    /// `None` matches every host.
    pub hostname: Option<String>,
    pub protocol: ListenerProtocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsTermination>,
    /// HTTP virtual hosts, most specific first; the proxy builds its host map from them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub virtual_hosts: Vec<VirtualHost>,
    /// The rules that `virtual_hosts` entries point into.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<HttpRule>,
    /// TCP, UDP and TLS routes: the backends to balance over, per SNI for TLS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stream_routes: Vec<StreamRoute>,
    /// The certificate this listener's Gateway presents to backends that use TLS
    /// (`spec.tls.backend.clientCertificateRef`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_client_certificate: Option<CertifiedKey>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ListenerProtocol {
    Http,
    Https,
    TlsPassthrough,
    TlsTerminate,
    Tcp,
    Udp,
}

/// Certificates to serve (the first one whose names cover the SNI wins), PEM encoded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TlsTermination {
    pub certificates: Vec<CertifiedKey>,
    /// Client certificates, when the Gateway's `tls.frontend` asks for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_validation: Option<ClientValidation>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClientValidation {
    /// The CAs a client certificate must chain to, PEM.
    pub ca_pem: String,
    /// `AllowInsecureFallback`: clients without a valid certificate are still served.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_fallback: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CertifiedKey {
    /// `namespace/name` of the Secret.
    pub source: String,
    pub cert_pem: String,
    pub key_pem: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VirtualHost {
    /// Exact names and `*.suffix` wildcards; `*` alone matches any host of the listener.
    pub hostnames: Vec<String>,
    /// In precedence order: the first entry that matches a request wins.
    pub routes: Vec<RouteEntry>,
}

/// One match of one rule, placed in precedence order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteEntry {
    #[serde(rename = "match")]
    pub matcher: HttpMatch,
    /// Index into the listener's `rules`.
    pub rule: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpMatch {
    pub path: PathMatch,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ValueMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<ValueMatch>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value")]
pub enum PathMatch {
    Exact(String),
    /// Segment-wise: `/foo` matches `/foo` and `/foo/bar`, not `/foobar`.
    Prefix(String),
    /// Anchored at both ends.
    Regex(String),
}

impl Default for PathMatch {
    fn default() -> Self {
        PathMatch::Prefix("/".into())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueMatch {
    /// Lower-case for headers, as given for query parameters.
    pub name: String,
    #[serde(flatten)]
    pub value: StringMatch,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value")]
pub enum StringMatch {
    Exact(String),
    /// Anchored at both ends.
    Regex(String),
}

/// What a matched request gets: the route's filters, then one of its backends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HttpRule {
    /// `Kind/namespace/name/rule-index`, for logs and metrics.
    pub route: String,
    /// True for GRPCRoute rules: errors the proxy makes are answered as gRPC statuses.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub grpc: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpFilter>,
    pub action: RuleAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
}

impl HttpRule {
    /// Every backend key this rule sends to, mirrors included.
    pub fn backend_keys(&self) -> Vec<&str> {
        // Mirrors and authorization services are backends too.
        fn mirrors<'a>(filters: &'a [HttpFilter], keys: &mut Vec<&'a str>) {
            for f in filters {
                match f {
                    HttpFilter::Mirror(Mirror { backend: Some(k), .. })
                    | HttpFilter::ExternalAuth(ExternalAuth { backend: Some(k), .. }) => keys.push(k),
                    _ => {}
                }
            }
        }
        let mut keys = Vec::new();
        mirrors(&self.filters, &mut keys);
        if let RuleAction::Forward(list) = &self.action {
            for b in list {
                mirrors(&b.filters, &mut keys);
                keys.extend(b.backend.as_deref());
            }
        }
        keys
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RuleAction {
    /// Weighted backends. An empty list, or a share that falls on an invalid backend, answers 500.
    Forward(Vec<WeightedBackend>),
    Redirect(Redirect),
    /// Answers with a fixed status, e.g. 500 for a rule whose filters could not be resolved.
    Respond {
        status: u16,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WeightedBackend {
    pub weight: u32,
    /// `None` when the backendRef is invalid: its share of requests answers 500.
    pub backend: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpFilter>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HttpFilter {
    RequestHeaders(HeaderModifier),
    ResponseHeaders(HeaderModifier),
    UrlRewrite(UrlRewrite),
    Mirror(Mirror),
    Cors(Cors),
    ExternalAuth(ExternalAuth),
}

/// The ExternalAuth filter: over HTTP the authorization service answers 200 to let a
/// request through, anything else is the client's answer; over gRPC it is Envoy's ext_authz
/// `Check`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExternalAuth {
    /// `None` when the backendRef is invalid: requests are refused (the filter fails closed).
    pub backend: Option<String>,
    /// Envoy's ext_authz over gRPC rather than plain HTTP.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub grpc: bool,
    /// Prefixed to the request's path.
    pub path_prefix: String,
    /// Lower-case client header names sent: over HTTP besides Host, Authorization and
    /// Content-Length; over gRPC all of them when empty.
    pub allowed_headers: Vec<String>,
    /// Lower-case response header names copied into the request to the backend; all but Host
    /// when empty.
    pub allowed_response_headers: Vec<String>,
    /// Bytes of the request body sent along (0: none).
    pub max_body: u32,
}

/// The Gateway API CORS filter: preflights answered here, CORS headers on responses to
/// allowed origins.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cors {
    /// Origins (`https://a.example`, `https://*.example`, or `*`).
    pub allow_origins: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_credentials: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    pub max_age_seconds: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HeaderModifier {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Redirect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathRewrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub status: u16,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UrlRewrite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathRewrite>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PathRewrite {
    Full(String),
    /// Replaces the rule's matched `PathPrefix` (carried here, since one rule can have
    /// several matches, the proxy passes the one that matched).
    Prefix(String),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mirror {
    /// `None` when the mirror's backendRef is invalid: nothing is mirrored.
    pub backend: Option<String>,
    /// Share of requests mirrored, in parts per million.
    pub per_million: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timeouts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Retry {
    pub codes: Vec<u16>,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamRoute {
    /// `Kind/namespace/name`.
    pub route: String,
    /// SNI names for TLS routes (exact or `*.suffix`); empty matches any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    pub backends: Vec<WeightedBackend>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Backend {
    /// Ready endpoints. Empty means 503.
    pub endpoints: Vec<SocketAddr>,
    pub protocol: BackendProtocol,
    /// A DNS name to resolve instead (ExternalName Services), with its port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_name: Option<(String, u16)>,
    /// TLS to the backend, as a BackendTLSPolicy asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<BackendTls>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendTls {
    /// SNI, and the name the certificate must carry unless `subject_alt_names` is set.
    pub server_name: String,
    pub trust: Trust,
    /// DNS names or URIs, any of which the certificate may carry instead of `server_name`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

/// Which CAs a backend's certificate must chain to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Trust {
    /// PEM certificates from the policy's ConfigMaps.
    Pem(String),
    /// The system's trust store.
    System,
    /// The policy has no usable CA: requests answer 5xx rather than go out unverified.
    Invalid,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackendProtocol {
    #[default]
    Http1,
    /// `kubernetes.io/h2c`, and the default for GRPCRoute backends.
    H2c,
    /// `kubernetes.io/ws`: HTTP/1.1, upgrades expected.
    WebSocket,
}
