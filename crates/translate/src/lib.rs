//! The store, the IR, and the translation from a snapshot of resources to the IR and the
//! status of every resource. [`translate`] is a pure, deterministic function: no I/O, no
//! clock, no randomness. It is where the Gateway API's semantics live.
#![forbid(unsafe_code)]

pub mod backends;
pub mod certs;
pub mod gateways;
pub mod hostname;
pub mod http;
pub mod ir;
pub mod policies;
pub mod refs;
pub mod routes;
pub mod status;
pub mod store;
pub mod time;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
};

use api::{Kind, Resource};
use ipnet::IpNet;

use crate::{
    backends::Transport,
    gateways::GatewayCtx,
    http::CompiledRoute,
    ir::{Backend, Bind, BindProtocol, ListenerProtocol, ProxyConfig, StreamRoute, WeightedBackend},
    routes::{Attachment, RouteRef},
    status::{ResourceStatus, RouteParentStatus, RouteStatus, Status, StatusMeta, condition, reason},
    store::{Object, Snapshot},
};

/// What translation needs besides the resources: our identity, where to listen, and facts
/// the data plane reported about the last configuration it applied.
#[derive(Clone, Debug)]
pub struct Settings {
    pub controller_name: String,
    /// The address every Gateway listens on, unless a pool or its own addresses say otherwise.
    pub bind: IpAddr,
    pub address_pool: Option<IpNet>,
    /// Sockets the data plane could not bind because they are in use: address and whether
    /// it is the UDP socket (a TCP and a UDP listener may share a port number).
    pub unavailable_ports: BTreeSet<(SocketAddr, bool)>,
    /// Addresses the data plane could not bind at all (not on this machine).
    pub unusable_addresses: BTreeSet<IpAddr>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            controller_name: DEFAULT_CONTROLLER_NAME.into(),
            bind: IpAddr::from([0, 0, 0, 0]),
            address_pool: None,
            unavailable_ports: BTreeSet::new(),
            unusable_addresses: BTreeSet::new(),
        }
    }
}

pub const DEFAULT_CONTROLLER_NAME: &str = "gatehouse.dev/gateway-controller";

/// The result of one translation.
#[derive(Clone, Debug, Default)]
pub struct Output {
    pub config: ProxyConfig,
    /// Every resource we give a status, in kind, namespace, name order. Conditions carry no
    /// `lastTransitionTime` yet: see [`status::stamp`].
    pub statuses: Vec<ResourceStatus>,
}

/// A route's compiled form, whatever its kind.
enum Compiled {
    Http(CompiledRoute),
    Stream { backends: Vec<WeightedBackend>, unresolved: Option<backends::Unresolved> },
}

impl Compiled {
    /// The keys of every backend the route sends to, mirrors included.
    fn backend_keys(&self) -> Vec<&str> {
        match self {
            Compiled::Http(c) => c.rules.iter().flat_map(ir::HttpRule::backend_keys).collect(),
            Compiled::Stream { backends, .. } => backends.iter().filter_map(|b| b.backend.as_deref()).collect(),
        }
    }
}

pub fn translate(snapshot: &Snapshot, settings: &Settings) -> Output {
    let mut out = Output::default();
    let (classes, class_statuses) = gateways::classes(snapshot, settings);
    for (obj, s) in class_statuses {
        out.statuses.push(status_of(obj, Status::GatewayClass(s)));
    }
    let mut gateways = gateways::gateways(snapshot, settings, &classes);

    // Every route attached once; HTTPRoutes and GRPCRoutes that claim the same hostnames on
    // one listener are settled first, as the spec requires (the older one wins).
    let mut attached: BTreeMap<store::ObjKey, Vec<routes::ParentResult>> = BTreeMap::new();
    for kind in Kind::ROUTES {
        for obj in snapshot.of_kind(kind) {
            if let Some(route) = route_ref(obj) {
                attached.insert(obj.key(), routes::attach(snapshot, &gateways, route));
            }
        }
    }
    routes::settle_http_grpc_conflicts(snapshot, &mut attached);

    // Every route compiled once.
    let mut placed: Vec<(RouteRef<'_>, Compiled, Vec<Attachment>)> = Vec::new();
    for kind in Kind::ROUTES {
        for obj in snapshot.of_kind(kind) {
            let Some(route) = route_ref(obj) else { continue };
            let parents = attached.remove(&obj.key()).unwrap_or_default();
            if parents.is_empty() {
                continue;
            }
            let compiled = compile(snapshot, obj, &mut out.config.backends);
            let (unresolved, dropped) = match &compiled {
                Compiled::Http(c) => {
                    (c.unresolved.clone(), Some((c.dropped.join("; "), c.dropped.len() == c.rule_count)))
                }
                Compiled::Stream { unresolved, .. } => (unresolved.clone(), None),
            };
            // Every rule dropped: not accepted. Some: accepted, and PartiallyInvalid says which.
            let (invalid, partially) = match dropped {
                Some((why, true)) => (Some((reason::UNSUPPORTED_VALUE, why)), None),
                Some((why, false)) if !why.is_empty() => (None, Some(why)),
                _ => (None, None),
            };
            let generation = obj.meta().generation.unwrap_or(1);
            let mut status = RouteStatus::default();
            let mut attachments = Vec::new();
            for parent in parents {
                let accepted = routes::accepted_condition(&parent.accepted, invalid.as_ref(), generation);
                let resolved = match &unresolved {
                    Some(u) => condition(reason::RESOLVED_REFS, false, u.reason, u.message.clone(), generation),
                    None => condition(
                        reason::RESOLVED_REFS,
                        true,
                        reason::RESOLVED_REFS,
                        "all references resolved",
                        generation,
                    ),
                };
                if let (Ok(a), None) = (&parent.accepted, &invalid) {
                    attachments.extend(a.iter().cloned());
                }
                let mut conditions = vec![accepted, resolved];
                if let (Some(why), Ok(_)) = (&partially, &parent.accepted) {
                    conditions.push(condition(
                        reason::PARTIALLY_INVALID,
                        true,
                        reason::UNSUPPORTED_VALUE,
                        why.clone(),
                        generation,
                    ));
                }
                status.parents.push(RouteParentStatus {
                    parent_ref: parent.parent_ref,
                    controller_name: settings.controller_name.clone(),
                    conditions,
                });
            }
            out.statuses.push(status_of(obj, Status::Route(status)));
            if !attachments.is_empty() {
                placed.push((route, compiled, attachments));
            }
        }
    }

    // attachedRoutes: distinct routes per listener.
    let mut counted: BTreeSet<(usize, usize, store::ObjKey)> = BTreeSet::new();
    for (route, _, attachments) in &placed {
        for a in attachments {
            if counted.insert((a.gateway, a.listener, route.obj.key())) {
                gateways[a.gateway].listeners[a.listener].attached_routes += 1;
            }
        }
    }

    out.config.binds = binds(snapshot, &gateways, &placed);

    // BackendTLSPolicy status, on each Gateway whose served routes reach a targeted Service.
    let mut reached: BTreeMap<(String, String), BTreeSet<(String, String)>> = BTreeMap::new();
    for (_, compiled, attachments) in &placed {
        for key in compiled.backend_keys() {
            let Some((ns, rest)) = key.split_once('/') else { continue };
            let service = rest.split(':').next().unwrap_or(rest);
            let entry = reached.entry((ns.to_string(), service.to_string())).or_default();
            for a in attachments {
                let m = gateways[a.gateway].obj.meta();
                entry.insert((m.namespace().to_string(), m.name.clone()));
            }
        }
    }
    for (obj, s) in policies::statuses(snapshot, &reached, &settings.controller_name) {
        out.statuses.push(status_of(&obj, Status::Policy(s)));
    }
    for gw in &gateways {
        out.statuses.push(status_of(gw.obj, Status::Gateway(gw.status(snapshot))));
        for (obj, s) in gw.listener_set_statuses() {
            out.statuses.push(status_of(obj, Status::ListenerSet(s)));
        }
    }
    // Only backends that a served listener refers to are sent.
    let used: BTreeSet<&str> = out.config.binds.iter().flat_map(ir::Bind::backend_keys).collect();
    out.config.backends.retain(|k, _| used.contains(k.as_str()));
    out.statuses.sort_by_key(ResourceStatus::key);
    out
}

fn route_ref(obj: &std::sync::Arc<Object>) -> Option<RouteRef<'_>> {
    let (kind, common) = match &obj.resource {
        Resource::HttpRoute(r) => (Kind::HttpRoute, &r.spec.common),
        Resource::GrpcRoute(r) => (Kind::GrpcRoute, &r.spec.common),
        Resource::TlsRoute(r) => (Kind::TlsRoute, &r.spec.common),
        Resource::TcpRoute(r) => (Kind::TcpRoute, &r.spec.common),
        Resource::UdpRoute(r) => (Kind::UdpRoute, &r.spec.common),
        _ => return None,
    };
    Some(RouteRef { obj, kind, common })
}

fn compile(snapshot: &Snapshot, obj: &Object, backends: &mut BTreeMap<String, Backend>) -> Compiled {
    match &obj.resource {
        Resource::HttpRoute(r) => Compiled::Http(http::compile_http(snapshot, obj, r, backends)),
        Resource::GrpcRoute(r) => Compiled::Http(http::compile_grpc(snapshot, obj, r, backends)),
        Resource::TlsRoute(r) | Resource::TcpRoute(r) | Resource::UdpRoute(r) => {
            let kind = obj.resource.kind();
            let transport = if kind == Kind::UdpRoute { Transport::Udp } else { Transport::Tcp };
            let mut unresolved = None;
            let mut list = Vec::new();
            for rule in &r.spec.rules {
                for b in &rule.backend_refs {
                    let backend =
                        match backends::resolve(snapshot, kind, obj.meta().namespace(), b, transport, backends) {
                            Ok(key) => Some(key),
                            Err(u) => {
                                unresolved.get_or_insert(u);
                                None
                            }
                        };
                    list.push(WeightedBackend { weight: b.weight.max(0) as u32, backend, filters: vec![] });
                }
            }
            Compiled::Stream { backends: list, unresolved }
        }
        _ => unreachable!("only routes are compiled"),
    }
}

/// The sockets of every Gateway we serve, and on each the listeners with their routes.
fn binds(
    snapshot: &Snapshot,
    gateways: &[GatewayCtx<'_>],
    placed: &[(RouteRef<'_>, Compiled, Vec<Attachment>)],
) -> Vec<Bind> {
    // By address and transport: a UDP and a TCP-based listener may share a port number.
    let mut binds: BTreeMap<(SocketAddr, bool), Bind> = BTreeMap::new();
    for (g, gw) in gateways.iter().enumerate() {
        if !gw.serving() {
            continue;
        }
        let gw_name = format!("{}/{}", gw.obj.meta().namespace(), gw.obj.meta().name);
        let client_certificate = gw.client_certificate(snapshot);
        for (l, listener) in gw.listeners.iter().enumerate() {
            if !listener.programmed() {
                continue;
            }
            let Some(protocol) = listener.protocol else { continue };
            let mut http_routes: Vec<(&CompiledRoute, &[String])> = Vec::new();
            let mut stream_routes = Vec::new();
            for (route, compiled, attachments) in placed {
                for a in attachments.iter().filter(|a| a.gateway == g && a.listener == l) {
                    match compiled {
                        Compiled::Http(c) => http_routes.push((c, &a.hostnames)),
                        Compiled::Stream { backends, .. } => stream_routes.push((
                            gateways::precedence(route.obj),
                            StreamRoute {
                                route: format!(
                                    "{}/{}/{}",
                                    route.kind,
                                    route.obj.meta().namespace(),
                                    route.obj.meta().name
                                ),
                                hostnames: a.hostnames.clone(),
                                backends: backends.clone(),
                            },
                        )),
                    }
                }
            }
            // The oldest route wins where several compete for the same traffic.
            stream_routes.sort_by(|a, b| a.0.cmp(&b.0));
            let (rules, virtual_hosts) = http::virtual_hosts(&http_routes);
            // ListenerSet listeners are named after their ListenerSet: names are unique only
            // within the resource that declares them.
            let owner = match listener.owner {
                gateways::Owner::Gateway => gw_name.clone(),
                gateways::Owner::ListenerSet(ls) => format!("{}/{}", ls.meta().namespace(), ls.meta().name),
            };
            let ir_listener = ir::Listener {
                name: format!("{owner}/{}", listener.spec.name),
                hostname: listener.spec.hostname.clone(),
                protocol,
                tls: matches!(protocol, ListenerProtocol::Https | ListenerProtocol::TlsTerminate).then(|| {
                    ir::TlsTermination {
                        certificates: listener.certificates.clone(),
                        client_validation: listener.client_validation.clone(),
                    }
                }),
                virtual_hosts,
                rules,
                stream_routes: stream_routes.into_iter().map(|(_, r)| r).collect(),
                backend_client_certificate: client_certificate.clone(),
            };
            let bind_protocol = match protocol {
                ListenerProtocol::Http => BindProtocol::Http,
                ListenerProtocol::Https | ListenerProtocol::TlsPassthrough | ListenerProtocol::TlsTerminate => {
                    BindProtocol::Tls
                }
                ListenerProtocol::Tcp => BindProtocol::Tcp,
                ListenerProtocol::Udp => BindProtocol::Udp,
            };
            for ip in &gw.addresses {
                let address = SocketAddr::new(*ip, listener.port());
                binds
                    .entry((address, bind_protocol == BindProtocol::Udp))
                    .or_insert_with(|| Bind { address, protocol: bind_protocol, listeners: vec![] })
                    .listeners
                    .push(ir_listener.clone());
            }
        }
    }
    let mut binds: Vec<Bind> = binds.into_values().collect();
    for b in &mut binds {
        b.listeners.sort_by_key(|l| {
            let h = l.hostname.as_deref().unwrap_or("");
            (std::cmp::Reverse(!h.is_empty()), std::cmp::Reverse(hostname::specificity(h)))
        });
    }
    binds
}

fn status_of(obj: &Object, status: Status) -> ResourceStatus {
    let m = obj.meta();
    ResourceStatus {
        api_version: obj.api_version.clone(),
        kind: obj.resource.kind(),
        metadata: StatusMeta {
            name: m.name.clone(),
            namespace: m.namespace.clone(),
            generation: m.generation.unwrap_or(1),
        },
        status,
    }
}
