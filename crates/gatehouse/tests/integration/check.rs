//! `gatehouse check`: offline validation with exit codes a CI pipeline can rely on.

use std::process::Command;

use super::common::*;

fn check(config: &str, extra: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["check", "--config"])
        .arg(dir.path())
        .args(extra)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn a_healthy_config_passes() {
    let (ok, out) = check(
        &format!(
            "{CLASS}{}{}{}",
            http_gateway(8080),
            route("r", "/", "svc"),
            service("svc", "127.0.0.1:9".parse().unwrap())
        ),
        &[],
    );
    assert!(ok, "{out}");
    assert!(out.contains("Gateway") && out.contains("default/gw"), "{out}");
}

#[test]
fn an_unresolved_backend_fails_with_its_reason() {
    let (ok, out) = check(&format!("{CLASS}{}{}", http_gateway(8080), route("r", "/", "nowhere")), &[]);
    assert!(!ok);
    assert!(out.contains("BackendNotFound: Service default/nowhere not found"), "{out}");
}

#[test]
fn a_rejected_document_is_named_by_file_and_document() {
    let bad_route = route("bad", "no-slash", "svc");
    let (ok, out) = check(&format!("{CLASS}{}{bad_route}", http_gateway(8080)), &["-o", "json"]);
    assert!(!ok);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let error = &report["errors"][0];
    assert!(error["file"].as_str().unwrap().ends_with("config.yaml"));
    assert_eq!(error["document"], 3);
    assert_eq!(error["object"], "HTTPRoute default/bad");
    assert!(error["message"].as_str().unwrap().contains("must be an absolute path"), "{error}");
}

#[test]
fn yaml_output_carries_the_statuses() {
    let (ok, out) = check(&format!("{CLASS}{}", http_gateway(8080)), &["-o", "yaml"]);
    assert!(ok, "{out}");
    assert!(out.contains("kind: Gateway") && out.contains("reason: Programmed"), "{out}");
}

/// Every shipped example passes `check`: the README's first command must work.
#[test]
fn the_shipped_examples_are_valid() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let out =
        Command::new(env!("CARGO_BIN_EXE_gatehouse")).args(["check", "--config"]).arg(&examples).output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("default/quickstart"), "{report}");
}
