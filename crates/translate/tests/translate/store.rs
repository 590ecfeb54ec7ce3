//! The store: generation and creation time as the API server keeps them, and rejected
//! updates keeping the last accepted version.

use api::{Kind, Resource};
use translate::{
    store::{ObjKey, Store},
    translate,
};

use crate::common::{CLASS, cond, objects, settings};

fn gateway(labels: &str, port: u16) -> String {
    format!(
        "{CLASS}---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, labels: {{{labels}}}}}
spec:
  gatewayClassName: gatehouse
  listeners: [{{name: http, port: {port}, protocol: HTTP}}]
"
    )
}

fn key() -> ObjKey {
    ObjKey::new(Kind::Gateway, "default", "gw")
}

fn meta(store: &Store) -> (Option<i64>, Option<String>) {
    let obj = store.snapshot().get(&key()).expect("the Gateway is in the snapshot");
    (obj.meta().generation, obj.meta().creation_timestamp.clone())
}

fn port(store: &Store) -> i32 {
    match &store.snapshot().get(&key()).unwrap().resource {
        Resource::Gateway(g) => g.spec.listeners[0].port,
        _ => unreachable!(),
    }
}

const T0: &str = "2026-01-01T00:00:00Z";
const T1: &str = "2026-01-02T00:00:00Z";
const T2: &str = "2026-01-03T00:00:00Z";

#[test]
fn generation_follows_spec_changes_only() {
    let mut store = Store::default();
    store.replace(objects(&gateway("a: b", 80), "gw.yaml"), &[], T0);
    assert_eq!(meta(&store), (Some(1), Some(T0.into())));

    store.replace(objects(&gateway("a: c", 80), "gw.yaml"), &[], T1);
    assert_eq!(meta(&store), (Some(1), Some(T0.into())), "a label change is not a spec change");

    let snapshot = store.replace(objects(&gateway("a: c", 8080), "gw.yaml"), &[], T2);
    assert_eq!(meta(&store), (Some(2), Some(T0.into())), "creation time is kept across updates");

    // Statuses report the generation they were computed for.
    let out = translate(&snapshot, &settings());
    let gw = out.statuses.iter().find(|s| s.key() == key()).unwrap();
    assert_eq!(gw.metadata.generation, 2);
    assert!(gw.conditions().iter().all(|c| c.observed_generation == 2));
    let json = serde_json::to_value(&gw.status).unwrap();
    assert_eq!(cond(&json, "Programmed"), "True/Programmed");
}

#[test]
fn explicit_creation_timestamp_is_kept() {
    let yaml =
        gateway("a: b", 80).replace("labels: {a: b}", "labels: {a: b}, creationTimestamp: '2020-05-05T00:00:00Z'");
    let mut store = Store::default();
    store.replace(objects(&yaml, "gw.yaml"), &[], T0);
    assert_eq!(meta(&store), (Some(1), Some("2020-05-05T00:00:00Z".into())));
}

#[test]
fn rejected_object_keeps_its_previous_version() {
    let mut store = Store::default();
    store.replace(objects(&gateway("a: b", 80), "gw.yaml"), &[], T0);
    // The new version was invalid: only the class is read, the Gateway is named as rejected.
    let snapshot = store.replace(objects(CLASS, "gw.yaml"), &[key()], T1);
    assert_eq!(port(&store), 80);
    assert_eq!(meta(&store), (Some(1), Some(T0.into())));
    let out = translate(&snapshot, &settings());
    assert_eq!(out.config.binds.len(), 1, "the previous version is still served");

    // A later valid update continues from the kept version.
    store.replace(objects(&gateway("a: b", 8080), "gw.yaml"), &[], T2);
    assert_eq!(port(&store), 8080);
    assert_eq!(meta(&store), (Some(2), Some(T0.into())));
}

#[test]
fn deleted_object_starts_over() {
    let mut store = Store::default();
    store.replace(objects(&gateway("a: b", 80), "gw.yaml"), &[], T0);
    store.replace(objects(&gateway("a: b", 8080), "gw.yaml"), &[], T0);
    assert_eq!(meta(&store).0, Some(2));
    store.replace(objects(CLASS, "gw.yaml"), &[], T1);
    assert!(store.snapshot().get(&key()).is_none());
    store.replace(objects(&gateway("a: b", 8080), "gw.yaml"), &[], T2);
    assert_eq!(meta(&store), (Some(1), Some(T2.into())));
}
