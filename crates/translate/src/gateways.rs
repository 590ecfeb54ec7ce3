//! GatewayClasses, Gateways and their listeners: which are ours, their addresses, listener
//! validity and conflicts, and the statuses that follow.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use api::{
    GATEWAY_GROUP, Kind,
    gateway::{
        ADDRESS_TYPE_IP, FromNamespaces, Gateway, GatewayClass, Listener, ListenerSet, RouteGroupKind,
        SecretObjectReference, TlsMode,
    },
    meta::Condition,
};

use crate::{
    Settings, certs,
    ir::{CertifiedKey, ClientValidation, ListenerProtocol},
    refs,
    status::{
        GatewayClassStatus, GatewayStatus, GatewayStatusAddress, ListenerSetStatus, ListenerStatus, condition, reason,
    },
    store::{ObjKey, Object, Snapshot},
};

/// A Gateway of ours, with everything routes and the IR need to know about it.
pub struct GatewayCtx<'s> {
    pub obj: &'s Arc<Object>,
    pub spec: &'s Gateway,
    pub addresses: Vec<IpAddr>,
    /// Gateway-level problems: (Accepted reason, Programmed reason, message).
    address_error: Option<(&'static str, &'static str, String)>,
    pub listeners: Vec<ListenerCtx<'s>>,
    /// ListenerSets that name this Gateway as parent: accepted or not, with why not.
    pub listener_sets: Vec<(&'s Arc<Object>, Result<(), String>)>,
}

/// Where a listener was declared.
#[derive(Clone, Copy, Debug)]
pub enum Owner<'s> {
    Gateway,
    ListenerSet(&'s Arc<Object>),
}

/// The same declaring resource: the same object in the snapshot.
impl PartialEq for Owner<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Owner::Gateway, Owner::Gateway) => true,
            (Owner::ListenerSet(a), Owner::ListenerSet(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

pub struct ListenerCtx<'s> {
    pub spec: &'s Listener,
    pub owner: Owner<'s>,
    /// The namespace that `allowedRoutes.namespaces.from: Same` means.
    pub namespace: &'s str,
    /// `None` for a protocol we do not implement.
    pub protocol: Option<ListenerProtocol>,
    pub supported_kinds: Vec<RouteGroupKind>,
    /// (ResolvedRefs reason, message) when a reference or a kind is invalid.
    pub refs_error: Option<(&'static str, String)>,
    pub certificates: Vec<CertifiedKey>,
    /// Client certificates required (or checked) on this HTTPS listener.
    pub client_validation: Option<ClientValidation>,
    /// Every CA reference for client validation is invalid: the listener is not accepted.
    pub no_valid_ca: Option<String>,
    pub conflict: Option<(&'static str, String)>,
    pub port_unavailable: Option<String>,
    pub attached_routes: u32,
}

impl ListenerCtx<'_> {
    /// Whether routes may be served on this listener at all.
    pub fn accepted(&self) -> bool {
        self.protocol.is_some()
            && self.conflict.is_none()
            && self.port_unavailable.is_none()
            && self.no_valid_ca.is_none()
    }

    /// Whether the data plane serves this listener.
    pub fn programmed(&self) -> bool {
        self.accepted() && !matches!(self.refs_error, Some((r, _)) if r != reason::INVALID_ROUTE_KINDS)
    }

    /// Whether this data plane serves the listener's protocol (a protocol translated before
    /// the data plane serves it is reported `Programmed=False/Pending`).
    fn served(&self) -> bool {
        matches!(
            self.protocol,
            Some(
                ListenerProtocol::Http
                    | ListenerProtocol::Https
                    | ListenerProtocol::TlsPassthrough
                    | ListenerProtocol::TlsTerminate
                    | ListenerProtocol::Tcp
                    | ListenerProtocol::Udp
            )
        )
    }

    pub fn port(&self) -> u16 {
        self.spec.port as u16
    }

    /// Whether a route of `kind` in `namespace` (whose labels are `labels`) may attach.
    pub fn allows(&self, kind: Kind, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        if self.protocol.is_none() || self.conflict.is_some() {
            return false;
        }
        let kind_ok = self.supported_kinds.iter().any(|k| k.group == GATEWAY_GROUP && k.kind == kind.as_str());
        let ns = &self.spec.allowed_routes.namespaces;
        let ns_ok = match ns.from {
            FromNamespaces::All => true,
            FromNamespaces::Same => namespace == self.namespace,
            FromNamespaces::Selector => ns.selector.as_ref().is_some_and(|s| s.matches(labels)),
            FromNamespaces::None => false,
        };
        kind_ok && ns_ok
    }
}

/// Which GatewayClasses are ours, and their status.
pub fn classes<'s>(
    snapshot: &'s Snapshot,
    settings: &Settings,
) -> (BTreeSet<&'s str>, Vec<(&'s Arc<Object>, GatewayClassStatus)>) {
    let mut ours = BTreeSet::new();
    let mut statuses = Vec::new();
    for (obj, class) in snapshot.gateway_classes() {
        if class.spec.controller_name != settings.controller_name {
            continue;
        }
        let generation = obj.meta().generation.unwrap_or(1);
        let accepted = class_parameters(class);
        let mut conditions = vec![match &accepted {
            Ok(()) => condition(reason::ACCEPTED, true, reason::ACCEPTED, "accepted by gatehouse", generation),
            Err(msg) => condition(reason::ACCEPTED, false, reason::INVALID_PARAMETERS, msg.clone(), generation),
        }];
        conditions.push(condition(
            reason::SUPPORTED_VERSION,
            true,
            reason::SUPPORTED_VERSION,
            "the Gateway API version in use is supported",
            generation,
        ));
        if accepted.is_ok() {
            ours.insert(obj.meta().name.as_str());
        }
        statuses.push((obj, GatewayClassStatus { conditions }));
    }
    (ours, statuses)
}

fn class_parameters(class: &GatewayClass) -> Result<(), String> {
    match &class.spec.parameters_ref {
        None => Ok(()),
        Some(p) => Err(format!(
            "parametersRef to {}/{} {:?} is not supported: gatehouse reads no parameters kind yet",
            p.group, p.kind, p.name
        )),
    }
}

/// Builds the context of every Gateway of ours, in precedence order (oldest first).
pub fn gateways<'s>(snapshot: &'s Snapshot, settings: &Settings, classes: &BTreeSet<&str>) -> Vec<GatewayCtx<'s>> {
    let mut ours: Vec<(&Arc<Object>, &Gateway)> =
        snapshot.gateways().filter(|(_, g)| classes.contains(g.spec.gateway_class_name.as_str())).collect();
    let addresses = assign_addresses(&ours, settings);
    ours.sort_by_key(|a| precedence(a.0));

    let mut gateways = Vec::new();
    for (obj, gw) in ours {
        let (addresses, address_error) = addresses.get(&obj.key()).cloned().unwrap_or_default();
        let mut ctx = GatewayCtx { obj, spec: gw, addresses, address_error, listeners: vec![], listener_sets: vec![] };
        let namespace = obj.meta().namespace();
        for l in &gw.spec.listeners {
            ctx.listeners.push(listener(snapshot, l, Owner::Gateway, namespace));
        }
        attach_listener_sets(snapshot, &mut ctx);
        frontend_validation(snapshot, &mut ctx);
        find_conflicts(&mut ctx.listeners);
        gateways.push(ctx);
    }
    mark_unavailable_ports(&mut gateways, settings);
    gateways
}

/// Creation time, then namespace/name: the spec's tie-breaker everywhere.
pub fn precedence(obj: &Object) -> (String, String, String) {
    let m = obj.meta();
    (m.creation_timestamp.clone().unwrap_or_default(), m.namespace().to_string(), m.name.clone())
}

type Assigned = (Vec<IpAddr>, Option<(&'static str, &'static str, String)>);

/// Addresses for every Gateway: its own `spec.addresses`, else one from the pool in order of
/// namespace/name (stable across reloads), else the bind address.
fn assign_addresses(gateways: &[(&Arc<Object>, &Gateway)], settings: &Settings) -> BTreeMap<ObjKey, Assigned> {
    let claimed: BTreeSet<IpAddr> = gateways
        .iter()
        .flat_map(|(_, g)| &g.spec.addresses)
        .filter(|a| a.type_ == ADDRESS_TYPE_IP)
        .filter_map(|a| a.value.as_deref()?.parse().ok())
        .collect();
    let mut pool = settings.address_pool.iter().flat_map(|net| net.hosts()).filter(|ip| !claimed.contains(ip));
    let mut out = BTreeMap::new();
    // `gateways` comes in namespace/name order from the snapshot.
    for (obj, gw) in gateways {
        let mut addresses = Vec::new();
        let mut error = None;
        let mut from_pool = |addresses: &mut Vec<IpAddr>, error: &mut Option<_>| match &settings.address_pool {
            Some(_) => match pool.next() {
                Some(ip) => addresses.push(ip),
                None => note_address_error(
                    error,
                    (
                        reason::ACCEPTED,
                        reason::ADDRESS_NOT_ASSIGNED,
                        "the address pool has no free address left".to_string(),
                    ),
                ),
            },
            None => addresses.push(settings.bind),
        };
        if gw.spec.addresses.is_empty() {
            from_pool(&mut addresses, &mut error);
        }
        for a in &gw.spec.addresses {
            match (a.type_.as_str(), a.value.as_deref().map(str::parse::<IpAddr>)) {
                (ADDRESS_TYPE_IP, Some(Ok(ip))) => {
                    if settings.unusable_addresses.contains(&ip) {
                        note_address_error(
                            &mut error,
                            (
                                reason::ACCEPTED,
                                reason::ADDRESS_NOT_USABLE,
                                format!("address {ip} cannot be bound on this machine"),
                            ),
                        );
                    } else {
                        addresses.push(ip);
                    }
                }
                (ADDRESS_TYPE_IP, None) => from_pool(&mut addresses, &mut error),
                (other, _) => note_address_error(
                    &mut error,
                    (
                        reason::UNSUPPORTED_ADDRESS,
                        reason::UNSUPPORTED_ADDRESS,
                        format!("address type {other:?} is not supported: only IPAddress is"),
                    ),
                ),
            }
        }
        addresses.dedup();
        out.insert(obj.key(), (addresses, error));
    }
    out
}

/// Records an address problem. An unsupported address type rejects the Gateway, so it
/// outranks any later problem with assigning or binding another address.
fn note_address_error(
    error: &mut Option<(&'static str, &'static str, String)>,
    new: (&'static str, &'static str, String),
) {
    if error.as_ref().is_none_or(|(r, ..)| *r != reason::UNSUPPORTED_ADDRESS) {
        *error = Some(new);
    }
}

fn listener<'s>(snapshot: &'s Snapshot, spec: &'s Listener, owner: Owner<'s>, namespace: &'s str) -> ListenerCtx<'s> {
    let tls_mode = spec.tls.as_ref().map(|t| t.mode);
    let protocol = match (spec.protocol.as_str(), tls_mode) {
        ("HTTP", _) => Some(ListenerProtocol::Http),
        ("HTTPS", _) => Some(ListenerProtocol::Https),
        ("TLS", Some(TlsMode::Passthrough)) => Some(ListenerProtocol::TlsPassthrough),
        ("TLS", _) => Some(ListenerProtocol::TlsTerminate),
        ("TCP", _) => Some(ListenerProtocol::Tcp),
        ("UDP", _) => Some(ListenerProtocol::Udp),
        _ => None,
    };
    let mut ctx = ListenerCtx {
        spec,
        owner,
        namespace,
        protocol,
        supported_kinds: vec![],
        refs_error: None,
        certificates: vec![],
        client_validation: None,
        no_valid_ca: None,
        conflict: None,
        port_unavailable: None,
        attached_routes: 0,
    };
    let Some(protocol) = protocol else { return ctx };

    let valid_kinds: &[Kind] = match protocol {
        ListenerProtocol::Http | ListenerProtocol::Https => &[Kind::HttpRoute, Kind::GrpcRoute],
        ListenerProtocol::TlsPassthrough | ListenerProtocol::TlsTerminate => &[Kind::TlsRoute],
        ListenerProtocol::Tcp => &[Kind::TcpRoute],
        ListenerProtocol::Udp => &[Kind::UdpRoute],
    };
    let group_kind = |k: &Kind| RouteGroupKind { group: GATEWAY_GROUP.into(), kind: k.as_str().into() };
    match &spec.allowed_routes.kinds {
        Some(kinds) if !kinds.is_empty() => {
            for k in kinds {
                let valid = k.group == GATEWAY_GROUP && valid_kinds.iter().any(|v| v.as_str() == k.kind);
                if valid {
                    if !ctx.supported_kinds.contains(k) {
                        ctx.supported_kinds.push(k.clone());
                    }
                } else if ctx.refs_error.is_none() {
                    ctx.refs_error = Some((
                        reason::INVALID_ROUTE_KINDS,
                        format!("route kind {}/{} is not supported on a {} listener", k.group, k.kind, spec.protocol),
                    ));
                }
            }
        }
        _ => ctx.supported_kinds = valid_kinds.iter().map(group_kind).collect(),
    }

    if matches!(protocol, ListenerProtocol::Https | ListenerProtocol::TlsTerminate)
        && let Some(tls) = &spec.tls
    {
        let from_kind = match owner {
            Owner::Gateway => Kind::Gateway,
            Owner::ListenerSet(_) => Kind::ListenerSet,
        };
        for cert_ref in &tls.certificate_refs {
            match certificate_ref(snapshot, cert_ref, refs::From::kind(from_kind, namespace), namespace) {
                Ok(cert) => ctx.certificates.push(cert),
                // A bad certificate reference outranks an invalid route kind.
                Err(e) => {
                    if ctx.refs_error.as_ref().is_none_or(|(r, _)| *r == reason::INVALID_ROUTE_KINDS) {
                        ctx.refs_error = Some(e);
                    }
                }
            }
        }
    }
    ctx
}

/// Resolves a reference to a `kubernetes.io/tls` Secret: kind, ReferenceGrant, existence,
/// and certificate and key that parse and match.
fn certificate_ref(
    snapshot: &Snapshot,
    cert_ref: &SecretObjectReference,
    from: refs::From<'_>,
    namespace: &str,
) -> Result<CertifiedKey, (&'static str, String)> {
    let ns = cert_ref.namespace.as_deref().unwrap_or(namespace);
    let source = format!("{ns}/{}", cert_ref.name);
    if !(cert_ref.group.is_empty() && cert_ref.kind == "Secret") {
        return Err((
            reason::INVALID_CERTIFICATE_REF,
            format!(
                "certificateRef {}/{} {:?}: only core Secrets are supported",
                cert_ref.group, cert_ref.kind, cert_ref.name
            ),
        ));
    }
    if !refs::permitted(snapshot, &from, "", "Secret", ns, &cert_ref.name) {
        return Err((
            reason::REF_NOT_PERMITTED,
            format!("reference to Secret {source} is not permitted by any ReferenceGrant"),
        ));
    }
    match snapshot.secret(ns, &cert_ref.name) {
        None => Err((reason::INVALID_CERTIFICATE_REF, format!("Secret {source} not found"))),
        Some((_, secret)) => {
            certs::server_certificate(secret, source).map_err(|m| (reason::INVALID_CERTIFICATE_REF, m))
        }
    }
}

/// ListenerSets naming this Gateway: attached where `allowedListeners` admits their namespace.
fn attach_listener_sets<'s>(snapshot: &'s Snapshot, ctx: &mut GatewayCtx<'s>) {
    let gw_ns = ctx.obj.meta().namespace();
    let mut sets: Vec<(&Arc<Object>, &ListenerSet)> = snapshot
        .listener_sets()
        .filter(|(o, ls)| {
            let p = &ls.spec.parent_ref;
            p.group == GATEWAY_GROUP
                && p.kind == "Gateway"
                && p.name == ctx.obj.meta().name
                && p.namespace.as_deref().unwrap_or(o.meta().namespace()) == gw_ns
        })
        .collect();
    sets.sort_by_key(|a| precedence(a.0));
    let allowed = ctx.spec.spec.allowed_listeners.clone().unwrap_or_default().namespaces;
    for (obj, ls) in sets {
        let ns = obj.meta().namespace();
        let labels = namespace_labels(snapshot, ns);
        let ok = match allowed.from {
            FromNamespaces::All => true,
            FromNamespaces::Same => ns == gw_ns,
            FromNamespaces::Selector => allowed.selector.as_ref().is_some_and(|s| s.matches(&labels)),
            FromNamespaces::None => false,
        };
        if ok {
            for l in &ls.spec.listeners {
                ctx.listeners.push(listener(snapshot, l, Owner::ListenerSet(obj), ns));
            }
            ctx.listener_sets.push((obj, Ok(())));
        } else {
            ctx.listener_sets.push((
                obj,
                Err(format!("Gateway {gw_ns}/{} does not allow ListenerSets from namespace {ns}", ctx.obj.meta().name)),
            ));
        }
    }
}

/// Frontend client-certificate validation (`spec.tls.frontend`): `perPort` for the
/// listener's port, else `default`, on every HTTPS listener of the Gateway. CA references
/// are ConfigMaps (`ca.crt`), cross-namespace only with a ReferenceGrant.
fn frontend_validation(snapshot: &Snapshot, ctx: &mut GatewayCtx<'_>) {
    let Some(frontend) = ctx.spec.spec.tls.as_ref().and_then(|t| t.frontend.as_ref()) else { return };
    let namespace = ctx.obj.meta().namespace();
    for l in &mut ctx.listeners {
        if l.protocol != Some(ListenerProtocol::Https) {
            continue;
        }
        let config =
            frontend.per_port.iter().find(|p| p.port == l.spec.port).map(|p| &p.tls).or(frontend.default.as_ref());
        let Some(validation) = config.and_then(|c| c.validation.as_ref()) else { continue };
        let mut bundles = Vec::new();
        for r in &validation.ca_certificate_refs {
            let ns = r.namespace.as_deref().unwrap_or(namespace);
            let source = format!("{ns}/{}", r.name);
            let result = if !(r.group.is_empty() && r.kind == "ConfigMap") {
                Err((
                    reason::INVALID_CA_CERTIFICATE_KIND,
                    format!("caCertificateRef {}/{} {:?}: only ConfigMaps are supported", r.group, r.kind, r.name),
                ))
            } else if !refs::permitted(
                snapshot,
                &refs::From::kind(Kind::Gateway, namespace),
                "",
                "ConfigMap",
                ns,
                &r.name,
            ) {
                Err((
                    reason::REF_NOT_PERMITTED,
                    format!("reference to ConfigMap {source} is not permitted by any ReferenceGrant"),
                ))
            } else {
                match snapshot.config_map(ns, &r.name) {
                    None => Err((reason::INVALID_CA_CERTIFICATE_REF, format!("ConfigMap {source} not found"))),
                    Some((_, cm)) => certs::ca_bundle(cm, &source).map_err(|m| (reason::INVALID_CA_CERTIFICATE_REF, m)),
                }
            };
            match result {
                Ok(pem) => bundles.push(pem),
                Err(e) => {
                    l.refs_error.get_or_insert(e);
                }
            }
        }
        if bundles.is_empty() {
            l.no_valid_ca = Some("no caCertificateRef for client validation resolves to a CA certificate".into());
        } else {
            l.client_validation = Some(ClientValidation {
                ca_pem: bundles.concat(),
                insecure_fallback: validation.mode == "AllowInsecureFallback",
            });
        }
    }
}

impl GatewayCtx<'_> {
    /// Whether any frontend validation lets clients through without a valid certificate.
    fn insecure_frontend_validation(&self) -> bool {
        let Some(f) = self.spec.spec.tls.as_ref().and_then(|t| t.frontend.as_ref()) else { return false };
        f.default
            .iter()
            .chain(f.per_port.iter().map(|p| &p.tls))
            .filter_map(|c| c.validation.as_ref())
            .any(|v| v.mode == "AllowInsecureFallback")
    }
}

/// The labels of a namespace, declared or not: every namespace carries its name label.
pub fn namespace_labels(snapshot: &Snapshot, namespace: &str) -> BTreeMap<String, String> {
    let mut labels = snapshot.namespace("", namespace).map(|(_, n)| n.metadata.labels.clone()).unwrap_or_default();
    labels.insert("kubernetes.io/metadata.name".into(), namespace.into());
    labels
}

/// Marks listeners that cannot share a port. Within one Gateway no listener wins: every
/// indistinct one is conflicted. Across a Gateway and its ListenerSets the earlier one in
/// precedence order (the Gateway's own, then ListenerSets oldest first) keeps the port.
fn find_conflicts(listeners: &mut [ListenerCtx<'_>]) {
    fn family(p: ListenerProtocol) -> u8 {
        match p {
            ListenerProtocol::Http => 0,
            ListenerProtocol::Https | ListenerProtocol::TlsPassthrough | ListenerProtocol::TlsTerminate => 1,
            ListenerProtocol::Tcp => 2,
            ListenerProtocol::Udp => 3,
        }
    }
    let clash = |a: &ListenerCtx<'_>, b: &ListenerCtx<'_>| -> Option<&'static str> {
        let (p, q) = (a.protocol?, b.protocol?);
        // UDP and the TCP-based protocols use different sockets.
        if a.spec.port != b.spec.port || (family(p) == 3) != (family(q) == 3) {
            None
        } else if family(p) != family(q) {
            Some(reason::PROTOCOL_CONFLICT)
        } else if a.spec.hostname == b.spec.hostname {
            Some(reason::HOSTNAME_CONFLICT)
        } else {
            None
        }
    };
    let mut found: Vec<(usize, &'static str, String)> = Vec::new();
    for i in 0..listeners.len() {
        for j in 0..i {
            let (a, b) = (&listeners[j], &listeners[i]);
            let Some(r) = clash(a, b) else { continue };
            let both_gateway = a.owner == Owner::Gateway && b.owner == Owner::Gateway;
            if !both_gateway && found.iter().any(|(k, ..)| *k == j) && a.owner != Owner::Gateway {
                continue; // a conflicted ListenerSet listener holds nothing to conflict with
            }
            let msg = |other: &ListenerCtx<'_>| {
                format!(
                    "listener {:?} ({} on port {}) conflicts with listener {:?}",
                    other.spec.name,
                    other.spec.protocol,
                    other.spec.port,
                    if std::ptr::eq(other, a) { &b.spec.name } else { &a.spec.name }
                )
            };
            found.push((i, r, msg(b)));
            if both_gateway {
                found.push((j, r, msg(a)));
            }
        }
    }
    for (i, r, msg) in found {
        listeners[i].conflict.get_or_insert((r, msg));
    }
}

/// A port that the data plane could not bind, or that an older Gateway already holds on the
/// same address, is unavailable.
fn mark_unavailable_ports(gateways: &mut [GatewayCtx<'_>], settings: &Settings) {
    let mut taken: BTreeMap<(IpAddr, u16, bool), String> = BTreeMap::new();
    for gw in gateways.iter_mut() {
        let name = format!("{}/{}", gw.obj.meta().namespace(), gw.obj.meta().name);
        let addresses = gw.addresses.clone();
        for l in &mut gw.listeners {
            if !l.accepted() {
                continue;
            }
            let udp = l.protocol == Some(ListenerProtocol::Udp);
            for ip in &addresses {
                let socket = SocketAddr::new(*ip, l.port());
                if settings.unavailable_ports.contains(&(socket, udp)) {
                    l.port_unavailable = Some(format!("{socket} could not be bound: it is in use by another process"));
                } else if let Some(owner) = taken.get(&(*ip, l.port(), udp)).filter(|o| **o != name) {
                    l.port_unavailable = Some(format!("{socket} is already used by Gateway {owner}"));
                }
            }
        }
        for l in &gw.listeners {
            if l.accepted() {
                for ip in &addresses {
                    let udp = l.protocol == Some(ListenerProtocol::Udp);
                    taken.entry((*ip, l.port(), udp)).or_insert_with(|| name.clone());
                }
            }
        }
    }
}

// === status ===

impl GatewayCtx<'_> {
    pub fn generation(&self) -> i64 {
        self.obj.meta().generation.unwrap_or(1)
    }

    pub fn status(&self, snapshot: &Snapshot) -> GatewayStatus {
        let generation = self.generation();
        let own: Vec<&ListenerCtx<'_>> = self.listeners.iter().filter(|l| l.owner == Owner::Gateway).collect();
        let not_accepted = own.iter().filter(|l| !l.accepted()).count();
        let accepted = match (&self.address_error, self.parameters_error()) {
            (_, Some(msg)) => condition(reason::ACCEPTED, false, reason::INVALID_PARAMETERS, msg, generation),
            (Some((r, _, msg)), _) if *r == reason::UNSUPPORTED_ADDRESS => {
                condition(reason::ACCEPTED, false, reason::UNSUPPORTED_ADDRESS, msg.clone(), generation)
            }
            _ if not_accepted > 0 => condition(
                reason::ACCEPTED,
                not_accepted < own.len(),
                reason::LISTENERS_NOT_VALID,
                format!("{not_accepted} of {} listeners are not accepted", own.len()),
                generation,
            ),
            _ => condition(reason::ACCEPTED, true, reason::ACCEPTED, "accepted by gatehouse", generation),
        };
        let programmed = match &self.address_error {
            _ if accepted.status != api::meta::ConditionStatus::True => {
                condition(reason::PROGRAMMED, false, reason::INVALID, "the Gateway is not accepted", generation)
            }
            Some((_, r, msg)) => condition(reason::PROGRAMMED, false, r, msg.clone(), generation),
            None => condition(
                reason::PROGRAMMED,
                true,
                reason::PROGRAMMED,
                "the data plane serves this Gateway",
                generation,
            ),
        };
        let resolved = match self.client_certificate_error(snapshot) {
            Some((r, msg)) => condition(reason::RESOLVED_REFS, false, r, msg, generation),
            None if own.iter().any(|l| l.refs_error.is_some()) => condition(
                reason::RESOLVED_REFS,
                false,
                reason::LISTENERS_NOT_RESOLVED,
                "some listeners have unresolved references",
                generation,
            ),
            None => {
                condition(reason::RESOLVED_REFS, true, reason::RESOLVED_REFS, "all references resolved", generation)
            }
        };
        let serving = programmed.status == api::meta::ConditionStatus::True;
        GatewayStatus {
            addresses: if serving {
                self.addresses
                    .iter()
                    .map(|ip| GatewayStatusAddress { type_: ADDRESS_TYPE_IP.into(), value: ip.to_string() })
                    .collect()
            } else {
                vec![]
            },
            conditions: {
                let mut c = vec![accepted, programmed, resolved];
                if self.insecure_frontend_validation() {
                    c.push(condition(
                        reason::INSECURE_FRONTEND_VALIDATION_MODE,
                        true,
                        reason::CONFIGURATION_CHANGED,
                        "a frontend TLS validation mode is AllowInsecureFallback: clients without a valid certificate are let through",
                        generation,
                    ));
                }
                c
            },
            listeners: own.iter().map(|l| l.status(generation, serving)).collect(),
            // Only accepted ListenerSets count: allowed, and with a valid listener left.
            attached_listener_sets: self.spec.spec.allowed_listeners.as_ref().map(|_| {
                self.listener_sets
                    .iter()
                    .filter(|(obj, r)| {
                        r.is_ok() && self.listeners.iter().any(|l| l.owner == Owner::ListenerSet(obj) && l.programmed())
                    })
                    .count() as u32
            }),
        }
    }

    /// Whether the data plane should serve this Gateway at all.
    pub fn serving(&self) -> bool {
        self.address_error.is_none()
            && self.parameters_error().is_none()
            && self.listeners.iter().any(|l| l.owner == Owner::Gateway && l.accepted())
    }

    fn parameters_error(&self) -> Option<String> {
        let p = self.spec.spec.infrastructure.as_ref()?.parameters_ref.as_ref()?;
        Some(format!("infrastructure.parametersRef to {}/{} {:?} is not supported", p.group, p.kind, p.name))
    }

    /// `spec.tls.backend.clientCertificateRef`, checked as listener certificates are.
    fn client_certificate_error(&self, snapshot: &Snapshot) -> Option<(&'static str, String)> {
        let r = self.spec.spec.tls.as_ref()?.backend.as_ref()?.client_certificate_ref.as_ref()?;
        let namespace = self.obj.meta().namespace();
        match certificate_ref(snapshot, r, refs::From::kind(Kind::Gateway, namespace), namespace) {
            Ok(_) => None,
            Err((reason::REF_NOT_PERMITTED, msg)) => Some((reason::REF_NOT_PERMITTED, msg)),
            Err((_, msg)) => Some((reason::INVALID_CLIENT_CERTIFICATE_REF, msg)),
        }
    }

    /// The client certificate to present to backends, when one is configured and valid.
    pub fn client_certificate(&self, snapshot: &Snapshot) -> Option<CertifiedKey> {
        let r = self.spec.spec.tls.as_ref()?.backend.as_ref()?.client_certificate_ref.as_ref()?;
        let namespace = self.obj.meta().namespace();
        certificate_ref(snapshot, r, refs::From::kind(Kind::Gateway, namespace), namespace).ok()
    }

    /// Status of each ListenerSet that names this Gateway.
    pub fn listener_set_statuses(&self) -> Vec<(&Arc<Object>, ListenerSetStatus)> {
        self.listener_sets
            .iter()
            .map(|(obj, allowed)| {
                let generation = obj.meta().generation.unwrap_or(1);
                let listeners: Vec<ListenerStatus> = self
                    .listeners
                    .iter()
                    .filter(|l| l.owner == Owner::ListenerSet(obj))
                    .map(|l| l.status(generation, self.address_error.is_none()))
                    .collect();
                let conditions = match allowed {
                    Err(msg) => vec![
                        condition(reason::ACCEPTED, false, reason::NOT_ALLOWED, msg.clone(), generation),
                        condition(reason::PROGRAMMED, false, reason::NOT_ALLOWED, msg.clone(), generation),
                    ],
                    Ok(()) if !self.serving() => {
                        let msg = format!(
                            "the parent Gateway {}/{} is not accepted or has no address",
                            self.obj.meta().namespace(),
                            self.obj.meta().name
                        );
                        vec![
                            condition(reason::ACCEPTED, false, reason::PARENT_NOT_ACCEPTED, msg.clone(), generation),
                            condition(reason::PROGRAMMED, false, reason::PARENT_NOT_ACCEPTED, msg, generation),
                        ]
                    }
                    Ok(()) => {
                        let invalid = self
                            .listeners
                            .iter()
                            .filter(|l| l.owner == Owner::ListenerSet(obj) && !l.programmed())
                            .count();
                        let total = listeners.len();
                        if invalid == 0 {
                            vec![
                                condition(
                                    reason::ACCEPTED,
                                    true,
                                    reason::ACCEPTED,
                                    "attached to its Gateway",
                                    generation,
                                ),
                                condition(
                                    reason::PROGRAMMED,
                                    true,
                                    reason::PROGRAMMED,
                                    "the data plane serves these listeners",
                                    generation,
                                ),
                            ]
                        } else {
                            let msg = format!("{invalid} of {total} listeners are not valid");
                            // The valid listeners are served: Programmed keeps its positive reason.
                            let programmed = if invalid < total {
                                condition(
                                    reason::PROGRAMMED,
                                    true,
                                    reason::PROGRAMMED,
                                    "the data plane serves the valid listeners",
                                    generation,
                                )
                            } else {
                                condition(
                                    reason::PROGRAMMED,
                                    false,
                                    reason::LISTENERS_NOT_VALID,
                                    msg.clone(),
                                    generation,
                                )
                            };
                            vec![
                                condition(
                                    reason::ACCEPTED,
                                    invalid < total,
                                    reason::LISTENERS_NOT_VALID,
                                    msg,
                                    generation,
                                ),
                                programmed,
                            ]
                        }
                    }
                };
                (*obj, ListenerSetStatus { conditions, listeners })
            })
            .collect()
    }
}

impl ListenerCtx<'_> {
    fn status(&self, generation: i64, gateway_programmed: bool) -> ListenerStatus {
        let mut conditions: Vec<Condition> = Vec::with_capacity(4);
        let accepted = match (&self.protocol, &self.port_unavailable) {
            (None, _) => condition(
                reason::ACCEPTED,
                false,
                reason::UNSUPPORTED_PROTOCOL,
                format!("protocol {:?} is not supported", self.spec.protocol),
                generation,
            ),
            (_, Some(msg)) => condition(reason::ACCEPTED, false, reason::PORT_UNAVAILABLE, msg.clone(), generation),
            _ if self.no_valid_ca.is_some() => condition(
                reason::ACCEPTED,
                false,
                reason::NO_VALID_CA_CERTIFICATE,
                self.no_valid_ca.clone().unwrap_or_default(),
                generation,
            ),
            _ if self.conflict.is_some() => {
                let (r, msg) = self.conflict.clone().unwrap_or_default();
                condition(reason::ACCEPTED, false, r, msg, generation)
            }
            _ => condition(reason::ACCEPTED, true, reason::ACCEPTED, "accepted", generation),
        };
        conditions.push(accepted);
        conditions.push(match &self.conflict {
            Some((r, msg)) => condition(reason::CONFLICTED, true, r, msg.clone(), generation),
            None => condition(reason::CONFLICTED, false, reason::NO_CONFLICTS, "no conflicts", generation),
        });
        conditions.push(match &self.refs_error {
            Some((r, msg)) => condition(reason::RESOLVED_REFS, false, r, msg.clone(), generation),
            None => {
                condition(reason::RESOLVED_REFS, true, reason::RESOLVED_REFS, "all references resolved", generation)
            }
        });
        conditions.push(match &self.conflict {
            Some((r, msg)) => condition(reason::PROGRAMMED, false, r, msg.clone(), generation),
            None if self.programmed() && gateway_programmed && !self.served() => condition(
                reason::PROGRAMMED,
                false,
                reason::PENDING,
                format!("the data plane does not serve {} listeners yet", self.spec.protocol),
                generation,
            ),
            None if self.programmed() && gateway_programmed => condition(
                reason::PROGRAMMED,
                true,
                reason::PROGRAMMED,
                "the data plane serves this listener",
                generation,
            ),
            None => condition(reason::PROGRAMMED, false, reason::INVALID, "the listener is not valid", generation),
        });
        ListenerStatus {
            name: self.spec.name.clone(),
            supported_kinds: if self.protocol.is_some() && self.conflict.is_none() {
                self.supported_kinds.clone()
            } else {
                vec![]
            },
            attached_routes: self.attached_routes,
            conditions,
        }
    }
}
