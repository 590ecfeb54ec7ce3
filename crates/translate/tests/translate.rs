//! Translation tests: YAML configs in, statuses and IR out.

#[path = "translate/common.rs"]
mod common;

#[path = "translate/classes.rs"]
mod classes;
#[path = "translate/gateways.rs"]
mod gateways;
#[path = "translate/ir.rs"]
mod ir;
#[path = "translate/listeners.rs"]
mod listeners;
#[path = "translate/policies.rs"]
mod policies;
#[path = "translate/routes.rs"]
mod routes;
#[path = "translate/store.rs"]
mod store;

use serde_json::Value;

use crate::common::{fixture, run};

/// The IR and statuses as JSON, with certificate material (fresh on every run) redacted.
fn snapshot_value(t: &common::Translated) -> Value {
    fn redact(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    if k == "cert_pem" || k == "key_pem" {
                        *v = Value::String("[redacted]".into());
                    } else {
                        redact(v);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(redact),
            _ => {}
        }
    }
    let mut v = serde_json::json!({
        "config": t.output.config,
        "statuses": t.output.statuses,
    });
    redact(&mut v);
    v
}

#[test]
fn snapshot_multi_namespace_reference_grants() {
    let t = run(&fixture("multi-namespace.yaml"));
    insta::assert_yaml_snapshot!("multi_namespace_reference_grants", snapshot_value(&t));
}

#[test]
fn snapshot_wildcard_hostnames() {
    let t = run(&fixture("wildcard-hostnames.yaml"));
    insta::assert_yaml_snapshot!("wildcard_hostnames", snapshot_value(&t));
}

#[test]
fn snapshot_listener_conflicts() {
    let t = run(&fixture("listener-conflicts.yaml"));
    insta::assert_yaml_snapshot!("listener_conflicts", snapshot_value(&t));
}
