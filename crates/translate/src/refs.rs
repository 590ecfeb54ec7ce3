//! ReferenceGrant: whether an object in one namespace may refer to one in another.

use api::Kind;

use crate::store::Snapshot;

/// The referring side of a cross-namespace reference.
pub struct From<'a> {
    pub group: &'a str,
    pub kind: &'a str,
    pub namespace: &'a str,
}

impl<'a> From<'a> {
    pub fn kind(kind: Kind, namespace: &'a str) -> Self {
        Self { group: kind.group(), kind: kind.as_str(), namespace }
    }
}

/// Whether `from` may refer to the object `to_group`/`to_kind` named `to_name` in
/// `to_namespace`. Same-namespace references are always allowed.
pub fn permitted(
    snapshot: &Snapshot,
    from: &From<'_>,
    to_group: &str,
    to_kind: &str,
    to_namespace: &str,
    to_name: &str,
) -> bool {
    from.namespace == to_namespace
        || snapshot.reference_grants().any(|(o, grant)| {
            o.meta().namespace() == to_namespace
                && grant
                    .spec
                    .from
                    .iter()
                    .any(|f| f.group == from.group && f.kind == from.kind && f.namespace == from.namespace)
                && grant
                    .spec
                    .to
                    .iter()
                    .any(|t| t.group == to_group && t.kind == to_kind && t.name.as_deref().is_none_or(|n| n == to_name))
        })
}
