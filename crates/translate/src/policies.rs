//! BackendTLSPolicy: which policy is in force for a Service port (the oldest wins a
//! conflict), what it asks of the upstream TLS connection, and its status on every Gateway
//! of ours whose routes reach the Services it targets.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use api::{GATEWAY_GROUP, policy::BackendTlsPolicy, route::ParentReference};

use crate::{
    certs, gateways,
    ir::{BackendTls, Trust},
    status::{PolicyAncestorStatus, PolicyStatus, condition, reason},
    store::{Object, Snapshot},
};

/// The upstream TLS settings for port `port_name` of Service `namespace/service`, if a
/// BackendTLSPolicy targets it: one naming the port as `sectionName` first, else one
/// targeting the whole Service.
pub fn backend_tls(snapshot: &Snapshot, namespace: &str, service: &str, port_name: &str) -> Option<BackendTls> {
    let policy =
        winner(snapshot, namespace, service, Some(port_name)).or_else(|| winner(snapshot, namespace, service, None))?;
    Some(evaluate(snapshot, policy).tls)
}

/// The oldest policy targeting exactly this Service and section.
fn winner<'s>(
    snapshot: &'s Snapshot,
    namespace: &str,
    service: &str,
    section: Option<&str>,
) -> Option<(&'s Arc<Object>, &'s BackendTlsPolicy)> {
    snapshot
        .backend_tls_policies()
        .filter(|(o, p)| o.meta().namespace() == namespace && targets(p, service, section))
        .min_by_key(|(o, _)| gateways::precedence(o))
}

fn targets(p: &BackendTlsPolicy, service: &str, section: Option<&str>) -> bool {
    p.spec
        .target_refs
        .iter()
        .any(|t| t.group.is_empty() && t.kind == "Service" && t.name == service && t.section_name.as_deref() == section)
}

struct Evaluated {
    tls: BackendTls,
    /// ResolvedRefs problem: (reason, message).
    refs: Option<(&'static str, String)>,
    /// Accepted problem: (reason, message).
    accepted: Option<(&'static str, String)>,
}

fn evaluate(snapshot: &Snapshot, (obj, policy): (&Arc<Object>, &BackendTlsPolicy)) -> Evaluated {
    let v = &policy.spec.validation;
    let namespace = obj.meta().namespace();
    let mut refs = None;
    let mut bundles = Vec::new();
    for r in &v.ca_certificate_refs {
        let result = if !(r.group.is_empty() && r.kind == "ConfigMap") {
            Err((
                reason::INVALID_KIND,
                format!("caCertificateRef {}/{} {:?}: only ConfigMaps are supported", r.group, r.kind, r.name),
            ))
        } else {
            match snapshot.config_map(namespace, &r.name) {
                None => {
                    Err((reason::INVALID_CA_CERTIFICATE_REF, format!("ConfigMap {namespace}/{} not found", r.name)))
                }
                Some((_, cm)) => certs::ca_bundle(cm, &format!("{namespace}/{}", r.name))
                    .map_err(|m| (reason::INVALID_CA_CERTIFICATE_REF, m)),
            }
        };
        match result {
            Ok(pem) => bundles.push(pem),
            Err(e) => {
                refs.get_or_insert(e);
            }
        }
    }
    let (trust, accepted) = match v.well_known_ca_certificates.as_deref() {
        Some("System") => (Trust::System, None),
        Some(other) => (
            Trust::Invalid,
            Some((reason::INVALID, format!("wellKnownCACertificates {other:?} is not supported: only System is"))),
        ),
        None if bundles.is_empty() => (
            Trust::Invalid,
            Some((reason::NO_VALID_CA_CERTIFICATE, "no caCertificateRef resolves to a CA certificate".to_string())),
        ),
        None => (Trust::Pem(bundles.concat()), None),
    };
    let subject_alt_names =
        v.subject_alt_names.iter().filter_map(|san| san.hostname.clone().or_else(|| san.uri.clone())).collect();
    Evaluated { tls: BackendTls { server_name: v.hostname.clone(), trust, subject_alt_names }, refs, accepted }
}

/// Statuses of every policy that reaches a Gateway of ours. `reached` maps a Service
/// (namespace, name) to the Gateways whose served routes send traffic to it.
pub fn statuses(
    snapshot: &Snapshot,
    reached: &BTreeMap<(String, String), BTreeSet<(String, String)>>,
    controller_name: &str,
) -> Vec<(Arc<Object>, PolicyStatus)> {
    let mut out = Vec::new();
    for (obj, policy) in snapshot.backend_tls_policies() {
        let namespace = obj.meta().namespace();
        let gateways: BTreeSet<&(String, String)> = policy
            .spec
            .target_refs
            .iter()
            .filter(|t| t.group.is_empty() && t.kind == "Service")
            .flat_map(|t| reached.get(&(namespace.to_string(), t.name.clone())).into_iter().flatten())
            .collect();
        if gateways.is_empty() {
            continue;
        }
        let generation = obj.meta().generation.unwrap_or(1);
        let evaluated = evaluate(snapshot, (obj, policy));
        let conflicted = policy.spec.target_refs.iter().find_map(|t| {
            let (winner, _) = winner(snapshot, namespace, &t.name, t.section_name.as_deref())?;
            (!Arc::ptr_eq(winner, obj)).then(|| {
                format!("policy {namespace}/{} is older and targets the same Service and section", winner.meta().name)
            })
        });
        let accepted = match (&conflicted, &evaluated.accepted) {
            (Some(msg), _) => condition(reason::ACCEPTED, false, reason::CONFLICTED, msg.clone(), generation),
            (None, Some((r, msg))) => condition(reason::ACCEPTED, false, r, msg.clone(), generation),
            (None, None) => condition(reason::ACCEPTED, true, reason::ACCEPTED, "accepted", generation),
        };
        let resolved = match &evaluated.refs {
            Some((r, msg)) => condition(reason::RESOLVED_REFS, false, r, msg.clone(), generation),
            None => {
                condition(reason::RESOLVED_REFS, true, reason::RESOLVED_REFS, "all references resolved", generation)
            }
        };
        let ancestors = gateways
            .into_iter()
            .map(|(ns, name)| PolicyAncestorStatus {
                ancestor_ref: ParentReference {
                    group: GATEWAY_GROUP.into(),
                    kind: "Gateway".into(),
                    namespace: Some(ns.clone()),
                    name: name.clone(),
                    section_name: None,
                    port: None,
                },
                controller_name: controller_name.to_string(),
                conditions: vec![accepted.clone(), resolved.clone()],
            })
            .collect();
        out.push((obj.clone(), PolicyStatus { ancestors }));
    }
    out
}
