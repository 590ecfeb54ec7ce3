//! Route attachment: which listeners each parentRef of each route reaches, and the
//! `Accepted` condition of every parent entry, in the spec's order of reasons.

use std::{collections::BTreeMap, sync::Arc};

use api::{
    GATEWAY_GROUP, Kind,
    route::{CommonRouteSpec, ParentReference},
};

use crate::{
    gateways::{self, GatewayCtx, Owner, namespace_labels},
    hostname,
    status::{condition, reason},
    store::{ObjKey, Object, Snapshot},
};

/// A route of any kind, as attachment sees it.
#[derive(Clone, Copy)]
pub struct RouteRef<'s> {
    pub obj: &'s Arc<Object>,
    pub kind: Kind,
    pub common: &'s CommonRouteSpec,
}

impl RouteRef<'_> {
    fn has_hostnames(&self) -> bool {
        matches!(self.kind, Kind::HttpRoute | Kind::GrpcRoute | Kind::TlsRoute)
    }
}

/// One listener a route is served on, with the hostnames it serves there.
#[derive(Clone, Debug)]
pub struct Attachment {
    pub gateway: usize,
    pub listener: usize,
    /// Empty: every host the listener accepts.
    pub hostnames: Vec<String>,
}

/// The outcome for one parentRef of ours.
pub struct ParentResult {
    pub parent_ref: ParentReference,
    pub gateway: usize,
    /// `Err((reason, message))` when the parent does not accept the route.
    pub accepted: Result<Vec<Attachment>, (&'static str, String)>,
}

/// Attaches `route` to the listeners its parentRefs select. Parents that are not ours get no
/// entry, as the spec requires.
pub fn attach(snapshot: &Snapshot, gateways: &[GatewayCtx<'_>], route: RouteRef<'_>) -> Vec<ParentResult> {
    let namespace = route.obj.meta().namespace();
    let labels = namespace_labels(snapshot, namespace);
    let mut out = Vec::new();
    for parent in &route.common.parent_refs {
        if parent.group != GATEWAY_GROUP {
            continue;
        }
        let parent_ns = parent.namespace.as_deref().unwrap_or(namespace);
        let (gateway, owner) = match parent.kind.as_str() {
            "Gateway" => {
                let Some(i) = gateways
                    .iter()
                    .position(|g| g.obj.meta().namespace() == parent_ns && g.obj.meta().name == parent.name)
                else {
                    continue;
                };
                (i, Owner::Gateway)
            }
            "ListenerSet" => {
                let found = gateways.iter().enumerate().find_map(|(i, g)| {
                    g.listener_sets
                        .iter()
                        .find(|(o, _)| o.meta().namespace() == parent_ns && o.meta().name == parent.name)
                        .map(|(o, _)| (i, Owner::ListenerSet(o)))
                });
                let Some(found) = found else { continue };
                found
            }
            _ => continue,
        };
        let gw = &gateways[gateway];
        let candidates: Vec<usize> = gw
            .listeners
            .iter()
            .enumerate()
            .filter(|(_, l)| l.owner == owner)
            .filter(|(_, l)| parent.section_name.as_ref().is_none_or(|s| *s == l.spec.name))
            .filter(|(_, l)| parent.port.is_none_or(|p| p == l.spec.port))
            .map(|(i, _)| i)
            .collect();
        let accepted = if candidates.is_empty() {
            Err((reason::NO_MATCHING_PARENT, no_matching_parent(parent)))
        } else {
            let allowed: Vec<usize> =
                candidates.into_iter().filter(|i| gw.listeners[*i].allows(route.kind, namespace, &labels)).collect();
            if allowed.is_empty() {
                Err((
                    reason::NOT_ALLOWED_BY_LISTENERS,
                    format!(
                        "no listener of {parent_ns}/{} allows a {} from namespace {namespace}",
                        parent.name, route.kind
                    ),
                ))
            } else {
                let attachments: Vec<Attachment> = allowed
                    .into_iter()
                    .filter_map(|i| {
                        let names = if route.has_hostnames() {
                            hostname::intersect(gw.listeners[i].spec.hostname.as_deref(), &route.common.hostnames)?
                        } else {
                            vec![]
                        };
                        Some(Attachment { gateway, listener: i, hostnames: names })
                    })
                    .collect();
                if attachments.is_empty() {
                    Err((
                        reason::NO_MATCHING_LISTENER_HOSTNAME,
                        "no listener hostname matches any hostname of the route".to_string(),
                    ))
                } else {
                    Ok(attachments)
                }
            }
        };
        out.push(ParentResult { parent_ref: parent.clone(), gateway, accepted });
    }
    out
}

fn no_matching_parent(parent: &ParentReference) -> String {
    match (&parent.section_name, parent.port) {
        (Some(s), Some(p)) => format!("no listener named {s:?} on port {p}"),
        (Some(s), None) => format!("no listener named {s:?}"),
        (None, Some(p)) => format!("no listener on port {p}"),
        (None, None) => "the parent has no listeners".to_string(),
    }
}

/// The `Accepted` condition of a parent entry.
pub fn accepted_condition(
    result: &Result<Vec<Attachment>, (&'static str, String)>,
    invalid: Option<&(&'static str, String)>,
    generation: i64,
) -> api::meta::Condition {
    match (result, invalid) {
        (Err((r, msg)), _) => condition(reason::ACCEPTED, false, r, msg.clone(), generation),
        (Ok(_), Some((r, msg))) => condition(reason::ACCEPTED, false, r, msg.clone(), generation),
        (Ok(_), None) => condition(reason::ACCEPTED, true, reason::ACCEPTED, "accepted", generation),
    }
}

/// An HTTPRoute and a GRPCRoute whose hostnames intersect on one listener cannot both be
/// served there: the older route (creation time, then namespace/name) keeps the listener,
/// and the other's parent entry loses it, rejected once it has no listener left.
pub fn settle_http_grpc_conflicts(snapshot: &Snapshot, attached: &mut BTreeMap<ObjKey, Vec<ParentResult>>) {
    // Per listener, every L7 route on it in precedence order.
    let mut by_listener: BTreeMap<(usize, usize), Vec<L7Route>> = BTreeMap::new();
    for (key, parents) in attached.iter() {
        if !matches!(key.kind, Kind::HttpRoute | Kind::GrpcRoute) {
            continue;
        }
        let Some(obj) = snapshot.get(key) else { continue };
        for a in parents.iter().filter_map(|p| p.accepted.as_ref().ok()).flatten() {
            by_listener.entry((a.gateway, a.listener)).or_default().push((
                gateways::precedence(obj),
                key.clone(),
                a.hostnames.clone(),
            ));
        }
    }
    let mut losers: BTreeMap<(ObjKey, usize, usize), ObjKey> = BTreeMap::new();
    for ((g, l), mut routes) in by_listener {
        routes.sort();
        routes.dedup_by(|a, b| a.1 == b.1);
        let mut kept: Vec<&L7Route> = Vec::new();
        for route in &routes {
            let rival = kept.iter().find(|k| k.1.kind != route.1.kind && hostnames_meet(&k.2, &route.2));
            match rival {
                Some(winner) => {
                    losers.insert((route.1.clone(), g, l), winner.1.clone());
                }
                None => kept.push(route),
            }
        }
    }
    if losers.is_empty() {
        return;
    }
    for (key, parents) in attached.iter_mut() {
        for parent in parents {
            let Ok(attachments) = &mut parent.accepted else { continue };
            let mut rival = None;
            attachments.retain(|a| match losers.get(&(key.clone(), a.gateway, a.listener)) {
                Some(winner) => {
                    rival = Some(winner.clone());
                    false
                }
                None => true,
            });
            if let (true, Some(winner)) = (attachments.is_empty(), rival) {
                parent.accepted = Err((
                    reason::NOT_ALLOWED_BY_LISTENERS,
                    format!("the listeners already serve {winner} for the same hostnames, and it is older"),
                ));
            }
        }
    }
}

/// An HTTPRoute or GRPCRoute on one listener: precedence, route, hostnames there.
type L7Route = ((String, String, String), ObjKey, Vec<String>);

/// Whether two routes' hostnames on a listener share a name (no hostnames: every name).
fn hostnames_meet(a: &[String], b: &[String]) -> bool {
    a.is_empty()
        || b.is_empty()
        || a.iter().any(|x| b.iter().any(|y| hostname::matches(x, y) || hostname::matches(y, x)))
}
