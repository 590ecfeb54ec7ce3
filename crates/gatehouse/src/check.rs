//! `gatehouse check`: validates a configuration offline, prints every resource of ours with
//! its conditions, and fails when anything is rejected, not accepted or unresolved.

use std::fmt::Write as _;

use api::meta::{Condition, ConditionStatus};
use translate::{
    Settings,
    status::{ListenerStatus, ResourceStatus, Status},
    store::Store,
};

use crate::{engine::now_rfc3339, source::FileSource};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Yaml,
    Json,
}

/// Runs the check; returns the report and whether everything is healthy.
pub fn check(mut source: FileSource, settings: &Settings, format: Format) -> (String, bool) {
    let reading = source.read();
    let now = now_rfc3339();
    let snapshot = Store::default().replace(reading.objects, &reading.rejected, &now);
    let mut output = translate::translate(&snapshot, settings);
    translate::status::stamp(&[], &mut output.statuses, &now);
    let healthy = reading.errors.is_empty() && output.statuses.iter().all(healthy);
    let report = match format {
        Format::Json => {
            let doc = serde_json::json!({ "resources": output.statuses, "errors": reading.errors });
            serde_json::to_string_pretty(&doc).expect("status serializes") + "\n"
        }
        Format::Yaml => {
            let doc = serde_json::json!({ "resources": output.statuses, "errors": reading.errors });
            serde_saphyr::to_string(&doc).expect("status serializes")
        }
        Format::Table => table(&output.statuses, &reading.errors),
    };
    (report, healthy)
}

/// Accepted (where the kind has it) and no unresolved references anywhere.
fn healthy(s: &ResourceStatus) -> bool {
    s.conditions().iter().all(|c| match c.type_.as_str() {
        "Accepted" | "ResolvedRefs" => c.status == ConditionStatus::True,
        _ => true,
    })
}

fn table(statuses: &[ResourceStatus], errors: &[crate::source::ConfigError]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:<16} {:<40} {:<9} {:<9} DETAIL", "KIND", "NAME", "ACCEPTED", "RESOLVED");
    for s in statuses {
        let name = match &s.metadata.namespace {
            Some(ns) => format!("{ns}/{}", s.metadata.name),
            None => s.metadata.name.clone(),
        };
        let (own, details): (Vec<&Condition>, Vec<(String, Vec<&Condition>)>) = match &s.status {
            Status::GatewayClass(c) => (c.conditions.iter().collect(), vec![]),
            Status::Gateway(g) => (g.conditions.iter().collect(), listener_rows(&g.listeners)),
            Status::ListenerSet(g) => (g.conditions.iter().collect(), listener_rows(&g.listeners)),
            Status::Route(r) => (
                vec![],
                r.parents
                    .iter()
                    .map(|p| {
                        let ns = p.parent_ref.namespace.as_deref().map(|n| format!("{n}/")).unwrap_or_default();
                        let section =
                            p.parent_ref.section_name.as_deref().map(|s| format!(" section {s}")).unwrap_or_default();
                        (
                            format!("parent {} {ns}{}{section}", p.parent_ref.kind, p.parent_ref.name),
                            p.conditions.iter().collect(),
                        )
                    })
                    .collect(),
            ),
            Status::Policy(p) => (
                vec![],
                p.ancestors
                    .iter()
                    .map(|a| (format!("ancestor {}", a.ancestor_ref.name), a.conditions.iter().collect()))
                    .collect(),
            ),
        };
        let _ = writeln!(
            out,
            "{:<16} {:<40} {:<9} {:<9} {}",
            s.kind.as_str(),
            name,
            cell(&own, "Accepted"),
            cell(&own, "ResolvedRefs"),
            problems(&own)
        );
        for (label, conditions) in details {
            let _ = writeln!(
                out,
                "{:<16} {:<40} {:<9} {:<9} {}",
                "",
                format!("  {label}"),
                cell(&conditions, "Accepted"),
                cell(&conditions, "ResolvedRefs"),
                problems(&conditions)
            );
        }
    }
    if !errors.is_empty() {
        let _ = writeln!(out, "\nREJECTED");
        for e in errors {
            let _ = writeln!(out, "  {e}");
        }
    }
    out
}

fn listener_rows(listeners: &[ListenerStatus]) -> Vec<(String, Vec<&Condition>)> {
    listeners
        .iter()
        .map(|l| (format!("listener {} (routes: {})", l.name, l.attached_routes), l.conditions.iter().collect()))
        .collect()
}

fn cell(conditions: &[&Condition], type_: &str) -> String {
    conditions.iter().find(|c| c.type_ == type_).map_or("-".into(), |c| format!("{:?}", c.status))
}

/// `Reason: message` of every condition that reports a problem.
fn problems(conditions: &[&Condition]) -> String {
    conditions
        .iter()
        .filter(|c| match c.type_.as_str() {
            "Conflicted" => c.status == ConditionStatus::True,
            _ => c.status != ConditionStatus::True,
        })
        .map(|c| format!("{}: {}", c.reason, c.message))
        .collect::<Vec<_>>()
        .join("; ")
}
