//! The resource types gatehouse reads: the Kubernetes Gateway API, the core kinds it needs, and
//! (later) `gateway.kgateway.dev`. Plain serde types, no I/O.
//!
//! Defaults from the CRD schemas live on the fields (`#[serde(default = ...)]`), so a
//! resource read from a file carries the same values the API server would have stored;
//! [`validate`] applies the schemas' validations and CEL rules.
#![forbid(unsafe_code)]

pub mod core;
pub mod gateway;
pub mod meta;
pub mod policy;
pub mod route;
pub mod validate;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::meta::ObjectMeta;

pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
pub const GATEWAY_X_GROUP: &str = "gateway.networking.x-k8s.io";

/// Every kind gatehouse reads. The order is the order of `/status` and of `check` output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    GatewayClass,
    Gateway,
    ListenerSet,
    #[serde(rename = "HTTPRoute")]
    HttpRoute,
    #[serde(rename = "GRPCRoute")]
    GrpcRoute,
    #[serde(rename = "TLSRoute")]
    TlsRoute,
    #[serde(rename = "TCPRoute")]
    TcpRoute,
    #[serde(rename = "UDPRoute")]
    UdpRoute,
    ReferenceGrant,
    #[serde(rename = "BackendTLSPolicy")]
    BackendTlsPolicy,
    Namespace,
    Service,
    EndpointSlice,
    Secret,
    ConfigMap,
}

impl Kind {
    pub const ROUTES: [Kind; 5] = [Kind::HttpRoute, Kind::GrpcRoute, Kind::TlsRoute, Kind::TcpRoute, Kind::UdpRoute];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::GatewayClass => "GatewayClass",
            Kind::Gateway => "Gateway",
            Kind::ListenerSet => "ListenerSet",
            Kind::HttpRoute => "HTTPRoute",
            Kind::GrpcRoute => "GRPCRoute",
            Kind::TlsRoute => "TLSRoute",
            Kind::TcpRoute => "TCPRoute",
            Kind::UdpRoute => "UDPRoute",
            Kind::ReferenceGrant => "ReferenceGrant",
            Kind::BackendTlsPolicy => "BackendTLSPolicy",
            Kind::Namespace => "Namespace",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Secret => "Secret",
            Kind::ConfigMap => "ConfigMap",
        }
    }

    /// The API group, as references (`group`/`kind` pairs) name it.
    pub fn group(self) -> &'static str {
        match self {
            Kind::Namespace | Kind::Service | Kind::Secret | Kind::ConfigMap => "",
            Kind::EndpointSlice => "discovery.k8s.io",
            _ => GATEWAY_GROUP,
        }
    }

    pub fn is_namespaced(self) -> bool {
        !matches!(self, Kind::GatewayClass | Kind::Namespace)
    }

    /// The kind a document's `apiVersion` and `kind` name, if gatehouse reads it. Every
    /// served version of a kind shares one schema here.
    pub fn from_type_meta(api_version: &str, kind: &str) -> Option<Kind> {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let k = match (group, kind) {
            (GATEWAY_GROUP, "GatewayClass") => Kind::GatewayClass,
            (GATEWAY_GROUP, "Gateway") => Kind::Gateway,
            (GATEWAY_GROUP, "ListenerSet") | (GATEWAY_X_GROUP, "XListenerSet") => Kind::ListenerSet,
            (GATEWAY_GROUP, "HTTPRoute") => Kind::HttpRoute,
            (GATEWAY_GROUP, "GRPCRoute") => Kind::GrpcRoute,
            (GATEWAY_GROUP, "TLSRoute") => Kind::TlsRoute,
            (GATEWAY_GROUP, "TCPRoute") => Kind::TcpRoute,
            (GATEWAY_GROUP, "UDPRoute") => Kind::UdpRoute,
            (GATEWAY_GROUP, "ReferenceGrant") => Kind::ReferenceGrant,
            (GATEWAY_GROUP, "BackendTLSPolicy") => Kind::BackendTlsPolicy,
            ("", "Namespace") => Kind::Namespace,
            ("", "Service") => Kind::Service,
            ("", "Secret") => Kind::Secret,
            ("", "ConfigMap") => Kind::ConfigMap,
            ("discovery.k8s.io", "EndpointSlice") => Kind::EndpointSlice,
            _ => return None,
        };
        Some(k)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One resource of any kind gatehouse reads. Resources live behind an `Arc` in the store,
/// so the spread of variant sizes costs nothing worth boxing for.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Resource {
    GatewayClass(gateway::GatewayClass),
    Gateway(gateway::Gateway),
    ListenerSet(gateway::ListenerSet),
    HttpRoute(route::HttpRoute),
    GrpcRoute(route::GrpcRoute),
    TlsRoute(route::StreamRoute),
    TcpRoute(route::StreamRoute),
    UdpRoute(route::StreamRoute),
    ReferenceGrant(policy::ReferenceGrant),
    BackendTlsPolicy(policy::BackendTlsPolicy),
    Namespace(core::Namespace),
    Service(core::Service),
    EndpointSlice(core::EndpointSlice),
    Secret(core::Secret),
    ConfigMap(core::ConfigMap),
}

/// Calls `$body` with `$r` bound to the inner value of any variant.
macro_rules! each_variant {
    ($value:expr, $r:ident => $body:expr) => {
        match $value {
            Resource::GatewayClass($r) => $body,
            Resource::Gateway($r) => $body,
            Resource::ListenerSet($r) => $body,
            Resource::HttpRoute($r) => $body,
            Resource::GrpcRoute($r) => $body,
            Resource::TlsRoute($r) => $body,
            Resource::TcpRoute($r) => $body,
            Resource::UdpRoute($r) => $body,
            Resource::ReferenceGrant($r) => $body,
            Resource::BackendTlsPolicy($r) => $body,
            Resource::Namespace($r) => $body,
            Resource::Service($r) => $body,
            Resource::EndpointSlice($r) => $body,
            Resource::Secret($r) => $body,
            Resource::ConfigMap($r) => $body,
        }
    };
}

impl Resource {
    pub fn kind(&self) -> Kind {
        match self {
            Resource::GatewayClass(_) => Kind::GatewayClass,
            Resource::Gateway(_) => Kind::Gateway,
            Resource::ListenerSet(_) => Kind::ListenerSet,
            Resource::HttpRoute(_) => Kind::HttpRoute,
            Resource::GrpcRoute(_) => Kind::GrpcRoute,
            Resource::TlsRoute(_) => Kind::TlsRoute,
            Resource::TcpRoute(_) => Kind::TcpRoute,
            Resource::UdpRoute(_) => Kind::UdpRoute,
            Resource::ReferenceGrant(_) => Kind::ReferenceGrant,
            Resource::BackendTlsPolicy(_) => Kind::BackendTlsPolicy,
            Resource::Namespace(_) => Kind::Namespace,
            Resource::Service(_) => Kind::Service,
            Resource::EndpointSlice(_) => Kind::EndpointSlice,
            Resource::Secret(_) => Kind::Secret,
            Resource::ConfigMap(_) => Kind::ConfigMap,
        }
    }

    pub fn meta(&self) -> &ObjectMeta {
        each_variant!(self, r => &r.metadata)
    }

    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        each_variant!(self, r => &mut r.metadata)
    }

    /// The whole object as JSON, for content comparison and `/config`.
    pub fn to_json(&self) -> serde_json::Value {
        each_variant!(self, r => serde_json::to_value(r).expect("resource types serialize"))
    }

    /// Reads one document. `Ok(None)` for a kind gatehouse does not read.
    pub fn from_json(value: serde_json::Value) -> Result<Option<Resource>, ParseError> {
        let api_version = value.get("apiVersion").and_then(|v| v.as_str()).unwrap_or_default();
        let kind = value.get("kind").and_then(|v| v.as_str()).unwrap_or_default();
        if api_version.is_empty() || kind.is_empty() {
            return Err(ParseError("a document needs `apiVersion` and `kind`".into()));
        }
        let Some(k) = Kind::from_type_meta(api_version, kind) else { return Ok(None) };
        let mut resource = match k {
            Kind::GatewayClass => Resource::GatewayClass(typed(value)?),
            Kind::Gateway => Resource::Gateway(typed(value)?),
            Kind::ListenerSet => Resource::ListenerSet(typed(value)?),
            Kind::HttpRoute => Resource::HttpRoute(typed(value)?),
            Kind::GrpcRoute => Resource::GrpcRoute(typed(value)?),
            Kind::TlsRoute => Resource::TlsRoute(typed(value)?),
            Kind::TcpRoute => Resource::TcpRoute(typed(value)?),
            Kind::UdpRoute => Resource::UdpRoute(typed(value)?),
            Kind::ReferenceGrant => Resource::ReferenceGrant(typed(value)?),
            Kind::BackendTlsPolicy => Resource::BackendTlsPolicy(typed(value)?),
            Kind::Namespace => Resource::Namespace(typed(value)?),
            Kind::Service => Resource::Service(typed(value)?),
            Kind::EndpointSlice => Resource::EndpointSlice(typed(value)?),
            Kind::Secret => Resource::Secret(typed(value)?),
            Kind::ConfigMap => Resource::ConfigMap(typed(value)?),
        };
        let meta = resource.meta_mut();
        if meta.name.is_empty() {
            return Err(ParseError("metadata.name is required".into()));
        }
        if k.is_namespaced() {
            meta.namespace.get_or_insert_with(|| "default".into());
        } else {
            meta.namespace = None;
        }
        Ok(Some(resource))
    }
}

fn typed<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ParseError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." { ParseError(inner.to_string()) } else { ParseError(format!("{path}: {inner}")) }
    })
}

/// A document that is not a well-formed object of its kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError(pub String);

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}
