//! Status as it would be written to the Kubernetes API, and the condition vocabulary of the
//! Gateway API. Translation fills conditions without times; [`stamp`] adds
//! `lastTransitionTime`, keeping the previous one where a condition did not change.

use std::collections::BTreeMap;

use api::{
    Kind,
    meta::{Condition, ConditionStatus},
    route::ParentReference,
};
use serde::{Deserialize, Serialize};

use crate::store::ObjKey;

/// One resource's status, tagged with what `/status` lists beside it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    pub api_version: String,
    pub kind: Kind,
    pub metadata: StatusMeta,
    pub status: Status,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusMeta {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub generation: i64,
}

impl ResourceStatus {
    pub fn key(&self) -> ObjKey {
        ObjKey::new(self.kind, self.metadata.namespace.as_deref().unwrap_or(""), &self.metadata.name)
    }

    /// Every condition in this status, wherever it sits.
    pub fn conditions(&self) -> Vec<&Condition> {
        match &self.status {
            Status::GatewayClass(s) => s.conditions.iter().collect(),
            Status::Gateway(s) => s.conditions.iter().chain(s.listeners.iter().flat_map(|l| &l.conditions)).collect(),
            Status::ListenerSet(s) => {
                s.conditions.iter().chain(s.listeners.iter().flat_map(|l| &l.conditions)).collect()
            }
            Status::Route(s) => s.parents.iter().flat_map(|p| &p.conditions).collect(),
            Status::Policy(s) => s.ancestors.iter().flat_map(|a| &a.conditions).collect(),
        }
    }

    fn conditions_mut(&mut self) -> Vec<(String, &mut Condition)> {
        // Each condition is identified by where it sits, so that `stamp` pairs old and new.
        let tag = |prefix: &str, c: &Condition| format!("{prefix}/{}", c.type_);
        let mut out = Vec::new();
        match &mut self.status {
            Status::GatewayClass(s) => out.extend(s.conditions.iter_mut().map(|c| (tag("", c), c))),
            Status::Gateway(GatewayStatus { conditions, listeners, .. })
            | Status::ListenerSet(ListenerSetStatus { conditions, listeners }) => {
                out.extend(conditions.iter_mut().map(|c| (tag("", c), c)));
                for l in listeners {
                    let p = format!("listener/{}", l.name);
                    out.extend(l.conditions.iter_mut().map(|c| (tag(&p, c), c)));
                }
            }
            Status::Route(s) => {
                for p in &mut s.parents {
                    let prefix = serde_json::to_string(&p.parent_ref).unwrap_or_default();
                    out.extend(p.conditions.iter_mut().map(|c| (tag(&prefix, c), c)));
                }
            }
            Status::Policy(s) => {
                for a in &mut s.ancestors {
                    let prefix = serde_json::to_string(&a.ancestor_ref).unwrap_or_default();
                    out.extend(a.conditions.iter_mut().map(|c| (tag(&prefix, c), c)));
                }
            }
        }
        out
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Status {
    GatewayClass(GatewayClassStatus),
    Gateway(GatewayStatus),
    ListenerSet(ListenerSetStatus),
    Route(RouteStatus),
    Policy(PolicyStatus),
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GatewayClassStatus {
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatus {
    pub addresses: Vec<GatewayStatusAddress>,
    pub conditions: Vec<Condition>,
    pub listeners: Vec<ListenerStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached_listener_sets: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayStatusAddress {
    #[serde(rename = "type")]
    pub type_: String,
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerStatus {
    pub name: String,
    pub supported_kinds: Vec<api::gateway::RouteGroupKind>,
    pub attached_routes: u32,
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ListenerSetStatus {
    pub conditions: Vec<Condition>,
    pub listeners: Vec<ListenerStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteStatus {
    pub parents: Vec<RouteParentStatus>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteParentStatus {
    pub parent_ref: ParentReference,
    pub controller_name: String,
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyStatus {
    pub ancestors: Vec<PolicyAncestorStatus>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyAncestorStatus {
    pub ancestor_ref: ParentReference,
    pub controller_name: String,
    pub conditions: Vec<Condition>,
}

/// A condition as translation decides it; the time is added by [`stamp`].
pub fn condition(type_: &str, ok: bool, reason: &str, message: impl Into<String>, generation: i64) -> Condition {
    Condition {
        type_: type_.into(),
        status: ConditionStatus::from(ok),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: String::new(),
        observed_generation: generation,
    }
}

/// Sets `lastTransitionTime` on every condition of `next`: the previous time where the same
/// condition (same place, same type) had the same status, `now` otherwise.
pub fn stamp(previous: &[ResourceStatus], next: &mut [ResourceStatus], now: &str) {
    let mut times: BTreeMap<(ObjKey, String), (ConditionStatus, String)> = BTreeMap::new();
    for status in previous {
        let key = status.key();
        let mut status = status.clone();
        for (place, c) in status.conditions_mut() {
            times.insert((key.clone(), place), (c.status, c.last_transition_time.clone()));
        }
    }
    for status in next {
        let key = status.key();
        for (place, c) in status.conditions_mut() {
            c.last_transition_time = match times.remove(&(key.clone(), place)) {
                Some((s, t)) if s == c.status => t,
                _ => now.to_string(),
            };
        }
    }
}

/// Condition types and reasons, spelled exactly as the Gateway API defines them.
pub mod reason {
    pub const ACCEPTED: &str = "Accepted";
    pub const PROGRAMMED: &str = "Programmed";
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    pub const CONFLICTED: &str = "Conflicted";
    pub const PARTIALLY_INVALID: &str = "PartiallyInvalid";
    pub const SUPPORTED_VERSION: &str = "SupportedVersion";

    pub const INVALID_PARAMETERS: &str = "InvalidParameters";
    pub const INVALID: &str = "Invalid";
    pub const PENDING: &str = "Pending";
    pub const LISTENERS_NOT_VALID: &str = "ListenersNotValid";
    pub const UNSUPPORTED_ADDRESS: &str = "UnsupportedAddress";
    pub const ADDRESS_NOT_ASSIGNED: &str = "AddressNotAssigned";
    pub const ADDRESS_NOT_USABLE: &str = "AddressNotUsable";

    pub const NO_CONFLICTS: &str = "NoConflicts";
    pub const HOSTNAME_CONFLICT: &str = "HostnameConflict";
    pub const PROTOCOL_CONFLICT: &str = "ProtocolConflict";
    pub const UNSUPPORTED_PROTOCOL: &str = "UnsupportedProtocol";
    pub const PORT_UNAVAILABLE: &str = "PortUnavailable";
    pub const INVALID_CERTIFICATE_REF: &str = "InvalidCertificateRef";
    pub const INVALID_ROUTE_KINDS: &str = "InvalidRouteKinds";
    pub const REF_NOT_PERMITTED: &str = "RefNotPermitted";

    pub const NOT_ALLOWED_BY_LISTENERS: &str = "NotAllowedByListeners";
    pub const NO_MATCHING_LISTENER_HOSTNAME: &str = "NoMatchingListenerHostname";
    pub const NO_MATCHING_PARENT: &str = "NoMatchingParent";
    pub const UNSUPPORTED_VALUE: &str = "UnsupportedValue";
    pub const BACKEND_NOT_FOUND: &str = "BackendNotFound";
    pub const INVALID_KIND: &str = "InvalidKind";
    pub const NOT_ALLOWED: &str = "NotAllowed";
    pub const PARENT_NOT_ACCEPTED: &str = "ParentNotAccepted";
    pub const LISTENERS_NOT_RESOLVED: &str = "ListenersNotResolved";
    pub const INVALID_CLIENT_CERTIFICATE_REF: &str = "InvalidClientCertificateRef";
    pub const NO_VALID_CA_CERTIFICATE: &str = "NoValidCACertificate";
    pub const INVALID_CA_CERTIFICATE_KIND: &str = "InvalidCACertificateKind";
    pub const INSECURE_FRONTEND_VALIDATION_MODE: &str = "InsecureFrontendValidationMode";
    pub const CONFIGURATION_CHANGED: &str = "ConfigurationChanged";
    pub const INVALID_CA_CERTIFICATE_REF: &str = "InvalidCACertificateRef";
    pub const TARGET_NOT_FOUND: &str = "TargetNotFound";
}
