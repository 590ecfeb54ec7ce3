//! The store: every resource by kind, namespace and name, with what the API server would
//! have added (generation, creation time). Each change yields a new immutable [`Snapshot`].

use std::{collections::BTreeMap, sync::Arc};

use api::{Kind, Resource, meta::ObjectMeta};

/// Where a resource was read from, for error messages.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Source {
    pub file: String,
    /// 1-based index of the YAML document in its file.
    pub document: usize,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (document {})", self.file, self.document)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    pub api_version: String,
    pub resource: Resource,
    pub source: Source,
}

impl Object {
    pub fn key(&self) -> ObjKey {
        ObjKey::of(&self.resource)
    }

    pub fn meta(&self) -> &ObjectMeta {
        self.resource.meta()
    }
}

/// Kind, namespace (empty for cluster-scoped kinds) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjKey {
    pub fn new(kind: Kind, namespace: &str, name: &str) -> Self {
        Self { kind, namespace: namespace.into(), name: name.into() }
    }

    pub fn of(r: &Resource) -> Self {
        let m = r.meta();
        Self::new(r.kind(), m.namespace.as_deref().unwrap_or(""), &m.name)
    }
}

impl std::fmt::Display for ObjKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// An immutable view of every resource, as translation sees it.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    objects: BTreeMap<ObjKey, Arc<Object>>,
    /// EndpointSlices by (namespace, `kubernetes.io/service-name`), so that resolving a
    /// backend does not scan every slice.
    slices_by_service: BTreeMap<(String, String), Vec<Arc<Object>>>,
}

macro_rules! typed_access {
    ($($iter:ident, $get:ident, $variant:ident, $ty:ty;)*) => {$(
        pub fn $iter(&self) -> impl Iterator<Item = (&Arc<Object>, &$ty)> {
            self.of_kind(Kind::$variant).filter_map(|o| match &o.resource {
                Resource::$variant(r) => Some((o, r)),
                _ => None,
            })
        }

        pub fn $get(&self, namespace: &str, name: &str) -> Option<(&Arc<Object>, &$ty)> {
            match self.objects.get(&ObjKey::new(Kind::$variant, namespace, name)) {
                Some(o) => match &o.resource {
                    Resource::$variant(r) => Some((o, r)),
                    _ => None,
                },
                None => None,
            }
        }
    )*};
}

impl Snapshot {
    fn new(objects: BTreeMap<ObjKey, Arc<Object>>) -> Self {
        let mut slices_by_service: BTreeMap<(String, String), Vec<Arc<Object>>> = BTreeMap::new();
        let start = ObjKey::new(Kind::EndpointSlice, "", "");
        for (_, o) in objects.range(start..).take_while(|(k, _)| k.kind == Kind::EndpointSlice) {
            if let Some(service) = o.meta().labels.get(api::core::SERVICE_NAME_LABEL) {
                slices_by_service
                    .entry((o.meta().namespace().to_string(), service.clone()))
                    .or_default()
                    .push(o.clone());
            }
        }
        Self { objects, slices_by_service }
    }

    /// The EndpointSlices labelled with a Service's name.
    pub fn endpoint_slices_of(
        &self,
        namespace: &str,
        service: &str,
    ) -> impl Iterator<Item = &api::core::EndpointSlice> {
        self.slices_by_service.get(&(namespace.to_string(), service.to_string())).into_iter().flatten().filter_map(
            |o| match &o.resource {
                Resource::EndpointSlice(s) => Some(s),
                _ => None,
            },
        )
    }

    pub fn get(&self, key: &ObjKey) -> Option<&Arc<Object>> {
        self.objects.get(key)
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Object>> {
        self.objects.values()
    }

    /// Every object of one kind, in namespace/name order.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &Arc<Object>> {
        let start = ObjKey::new(kind, "", "");
        self.objects.range(start..).map(|(_, o)| o).take_while(move |o| o.resource.kind() == kind)
    }

    typed_access! {
        gateway_classes, gateway_class, GatewayClass, api::gateway::GatewayClass;
        gateways, gateway, Gateway, api::gateway::Gateway;
        listener_sets, listener_set, ListenerSet, api::gateway::ListenerSet;
        reference_grants, reference_grant, ReferenceGrant, api::policy::ReferenceGrant;
        backend_tls_policies, backend_tls_policy, BackendTlsPolicy, api::policy::BackendTlsPolicy;
        namespaces, namespace, Namespace, api::core::Namespace;
        services, service, Service, api::core::Service;
        endpoint_slices, endpoint_slice, EndpointSlice, api::core::EndpointSlice;
        secrets, secret, Secret, api::core::Secret;
        config_maps, config_map, ConfigMap, api::core::ConfigMap;
    }
}

/// What the API server remembers between updates of a resource.
#[derive(Clone, Debug)]
struct Tracked {
    /// The object without `metadata`: a change here bumps the generation.
    content: serde_json::Value,
    generation: i64,
    created: String,
}

/// Turns successive reads of the files into snapshots, keeping generation and creation time
/// as the API server would: generation 1 at first and one more per change of the object's
/// content; creation time when first seen; both reset by a delete.
#[derive(Debug, Default)]
pub struct Store {
    tracked: BTreeMap<ObjKey, Tracked>,
    current: Snapshot,
}

impl Store {
    /// Replaces the whole set of resources with `objects`. Objects named in `rejected` were
    /// present but invalid this time: like an update the API server refuses, their last
    /// accepted version stays. `now` is RFC 3339 at one-second precision.
    pub fn replace(&mut self, objects: Vec<Object>, rejected: &[ObjKey], now: &str) -> Snapshot {
        let mut next: BTreeMap<ObjKey, Arc<Object>> = BTreeMap::new();
        let mut tracked = BTreeMap::new();
        for mut object in objects {
            let key = object.key();
            let mut content = object.resource.to_json();
            if let Some(map) = content.as_object_mut() {
                map.remove("metadata");
            }
            let previous = self.tracked.remove(&key);
            let generation = match &previous {
                Some(p) if p.content == content => p.generation,
                Some(p) => p.generation + 1,
                None => 1,
            };
            let created = previous.map_or_else(|| now.to_string(), |p| p.created);
            let meta = object.resource.meta_mut();
            let generation = *meta.generation.get_or_insert(generation);
            let created = meta.creation_timestamp.get_or_insert(created).clone();
            tracked.insert(key.clone(), Tracked { content, generation, created });
            next.insert(key, Arc::new(object));
        }
        for key in rejected {
            if next.contains_key(key) {
                continue;
            }
            if let (Some(old), Some(t)) = (self.current.get(key), self.tracked.remove(key)) {
                next.insert(key.clone(), old.clone());
                tracked.insert(key.clone(), t);
            }
        }
        self.tracked = tracked;
        self.current = Snapshot::new(next);
        self.current.clone()
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.current
    }
}

#[cfg(test)]
mod tests;
