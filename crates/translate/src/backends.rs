//! backendRefs: checked against the spec (kind, ReferenceGrant, existence, protocol) and
//! resolved to the endpoints of their Service.

use std::{collections::BTreeMap, net::SocketAddr};

use api::{Kind, route::BackendRef};

use crate::{
    ir::{Backend, BackendProtocol},
    policies, refs,
    status::reason,
    store::Snapshot,
};

/// Why a backendRef cannot be used: a ResolvedRefs reason and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unresolved {
    pub reason: &'static str,
    pub message: String,
}

/// What a route kind needs of its backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Http,
    Grpc,
    Tcp,
    Udp,
}

/// Resolves one backendRef of a route of `route_kind` in `namespace`, registering the
/// backend in `backends`. Returns its key.
pub fn resolve(
    snapshot: &Snapshot,
    route_kind: Kind,
    namespace: &str,
    backend: &BackendRef,
    transport: Transport,
    backends: &mut BTreeMap<String, Backend>,
) -> Result<String, Unresolved> {
    let ns = backend.namespace.as_deref().unwrap_or(namespace);
    if !(backend.group.is_empty() && backend.kind == "Service") {
        return Err(Unresolved {
            reason: reason::INVALID_KIND,
            message: format!(
                "backendRef {}: kind {:?} of group {:?} is not supported (only core Service)",
                backend.name, backend.kind, backend.group
            ),
        });
    }
    if !refs::permitted(snapshot, &refs::From::kind(route_kind, namespace), "", "Service", ns, &backend.name) {
        return Err(Unresolved {
            reason: reason::REF_NOT_PERMITTED,
            message: format!("backendRef to Service {ns}/{} is not permitted by any ReferenceGrant", backend.name),
        });
    }
    let Some((_, service)) = snapshot.service(ns, &backend.name) else {
        return Err(Unresolved {
            reason: reason::BACKEND_NOT_FOUND,
            message: format!("Service {ns}/{} not found", backend.name),
        });
    };
    let Some(port) = backend.port else {
        return Err(Unresolved {
            reason: reason::BACKEND_NOT_FOUND,
            message: format!("backendRef to Service {ns}/{} has no port", backend.name),
        });
    };
    let wanted_protocol = if transport == Transport::Udp { "UDP" } else { "TCP" };
    let is_external = service.spec.type_.as_deref() == Some("ExternalName");
    let service_port = service.spec.ports.iter().find(|p| p.port == port && p.protocol == wanted_protocol);
    let service_port = match service_port {
        Some(p) => Some(p),
        // An ExternalName Service needs no ports: the backendRef's port is the remote port.
        None if is_external => None,
        None => {
            return Err(Unresolved {
                reason: reason::BACKEND_NOT_FOUND,
                message: format!("Service {ns}/{} has no {wanted_protocol} port {port}", backend.name),
            });
        }
    };
    let app_protocol = service_port.and_then(|p| p.app_protocol.as_deref());
    let protocol = match (transport, app_protocol) {
        (Transport::Tcp | Transport::Udp, _) => BackendProtocol::Http1,
        (Transport::Grpc, None) => BackendProtocol::H2c,
        (_, None | Some("http" | "HTTP" | "kubernetes.io/http")) => BackendProtocol::Http1,
        (_, Some("kubernetes.io/h2c" | "h2c" | "grpc")) => BackendProtocol::H2c,
        (Transport::Http, Some("kubernetes.io/ws")) => BackendProtocol::WebSocket,
        // HTTPS to the backend is what a BackendTLSPolicy provides.
        (Transport::Http | Transport::Grpc, Some("https" | "HTTPS" | "kubernetes.io/https"))
            if policies::backend_tls(snapshot, ns, &backend.name, service_port.map_or("", |p| &p.name)).is_some() =>
        {
            BackendProtocol::Http1
        }
        (_, Some(other)) => {
            return Err(Unresolved {
                reason: reason::UNSUPPORTED_PROTOCOL,
                message: format!("Service {ns}/{} port {port}: appProtocol {other:?} is not supported", backend.name),
            });
        }
    };
    // Keys differ by transport: the same Service port is HTTP/1.1 to an HTTPRoute and
    // HTTP/2 to a GRPCRoute unless its appProtocol says otherwise.
    let suffix = match transport {
        Transport::Udp => "/udp",
        Transport::Grpc => "/grpc",
        Transport::Http | Transport::Tcp => "",
    };
    let key = format!("{ns}/{}:{port}{suffix}", backend.name);
    if !backends.contains_key(&key) {
        let backend = match (is_external, &service.spec.external_name) {
            (true, Some(host)) => Backend {
                endpoints: vec![],
                protocol,
                external_name: Some((host.clone(), port as u16)),
                tls: policies::backend_tls(snapshot, ns, &backend.name, ""),
            },
            _ => Backend {
                endpoints: endpoints(
                    snapshot,
                    ns,
                    &backend.name,
                    service_port.map_or("", |p| &p.name),
                    wanted_protocol,
                ),
                protocol,
                external_name: None,
                tls: policies::backend_tls(snapshot, ns, &backend.name, service_port.map_or("", |p| &p.name)),
            },
        };
        backends.insert(key.clone(), backend);
    }
    Ok(key)
}

/// Ready endpoints of a Service port, from the EndpointSlices labelled with the Service's
/// name, the port mapped by name as kube-proxy maps it.
fn endpoints(snapshot: &Snapshot, namespace: &str, service: &str, port_name: &str, protocol: &str) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for slice in snapshot.endpoint_slices_of(namespace, service) {
        let Some(port) =
            slice.ports.iter().find(|p| p.name == port_name && p.protocol == protocol).and_then(|p| p.port)
        else {
            continue;
        };
        for endpoint in &slice.endpoints {
            if endpoint.conditions.ready == Some(false) {
                continue;
            }
            for address in &endpoint.addresses {
                if let Ok(ip) = address.parse() {
                    out.push(SocketAddr::new(ip, port as u16));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}
