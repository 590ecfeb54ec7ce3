//! Loading YAML into a snapshot, translating it, and reading statuses back as JSON.

use std::{net::IpAddr, sync::OnceLock};

use api::{Kind, Resource};
use serde_json::Value;
use translate::{
    Output, Settings,
    ir::{Bind, Listener},
    store::{ObjKey, Object, Source, Store},
    translate,
};

pub const NOW: &str = "2026-01-01T00:00:00Z";

/// Our GatewayClass, prepended to every config given to [`run`].
pub const CLASS: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: gatehouse}
spec: {controllerName: gatehouse.dev/gateway-controller}
";

/// Every document of `yaml` as an object, each checked as the API server would.
pub fn objects(yaml: &str, file: &str) -> Vec<Object> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).unwrap_or_else(|e| panic!("{file}: {e}"));
    docs.into_iter()
        .enumerate()
        .map(|(i, doc)| {
            let api_version = doc["apiVersion"].as_str().unwrap_or_default().to_string();
            let resource = Resource::from_json(doc)
                .unwrap_or_else(|e| panic!("{file} document {}: {e}", i + 1))
                .unwrap_or_else(|| panic!("{file} document {}: not a kind gatehouse reads", i + 1));
            let errors = api::validate::validate(&resource);
            assert!(errors.is_empty(), "{file} document {} is invalid: {errors:#?}", i + 1);
            Object { api_version, resource, source: Source { file: file.into(), document: i + 1 } }
        })
        .collect()
}

pub fn settings() -> Settings {
    Settings { bind: IpAddr::from([127, 0, 0, 1]), ..Default::default() }
}

pub struct Translated {
    pub output: Output,
}

/// Translates our GatewayClass plus `yaml` with the default test settings.
pub fn run(yaml: &str) -> Translated {
    run_with(yaml, settings())
}

pub fn run_with(yaml: &str, settings: Settings) -> Translated {
    run_raw(&format!("{CLASS}---\n{yaml}"), settings)
}

/// Translates exactly the documents of `yaml`.
pub fn run_raw(yaml: &str, settings: Settings) -> Translated {
    let snapshot = Store::default().replace(objects(yaml, "test.yaml"), &[], NOW);
    let output = translate(&snapshot, &settings);
    Translated { output }
}

/// A fixture from `tests/testdata`, with `{{CERT}}`/`{{KEY}}` replaced by a fresh
/// certificate for `example.com` and `*.example.com`.
pub fn fixture(name: &str) -> String {
    let path = format!("{}/tests/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    with_cert(&text)
}

/// A self-signed certificate and its key, PEM encoded, made once per test binary.
pub fn cert() -> &'static (String, String) {
    static CERT: OnceLock<(String, String)> = OnceLock::new();
    CERT.get_or_init(|| {
        let c = rcgen::generate_simple_self_signed(vec!["example.com".into(), "*.example.com".into()]).unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    })
}

/// Replaces `{{CERT}}` and `{{KEY}}` by the PEM texts as YAML (JSON) quoted strings.
pub fn with_cert(yaml: &str) -> String {
    let (cert, key) = cert();
    yaml.replace("{{CERT}}", &serde_json::to_string(cert).unwrap())
        .replace("{{KEY}}", &serde_json::to_string(key).unwrap())
}

impl Translated {
    /// The `status` of one resource as JSON. Panics if it has none.
    pub fn status(&self, kind: Kind, namespace: &str, name: &str) -> Value {
        self.try_status(kind, namespace, name)
            .unwrap_or_else(|| panic!("no status for {kind} {namespace}/{name}; have {:?}", self.keys()))
    }

    pub fn try_status(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        let key = ObjKey::new(kind, namespace, name);
        let s = self.output.statuses.iter().find(|s| s.key() == key)?;
        Some(serde_json::to_value(&s.status).unwrap())
    }

    pub fn keys(&self) -> Vec<String> {
        self.output.statuses.iter().map(|s| s.key().to_string()).collect()
    }

    pub fn gateway(&self, namespace: &str, name: &str) -> Value {
        self.status(Kind::Gateway, namespace, name)
    }

    pub fn route(&self, namespace: &str, name: &str) -> Value {
        self.status(Kind::HttpRoute, namespace, name)
    }

    /// The IR listener named `namespace/gateway/listener`, wherever it is bound.
    pub fn ir_listener(&self, name: &str) -> &Listener {
        self.output
            .config
            .binds
            .iter()
            .flat_map(|b| &b.listeners)
            .find(|l| l.name == name)
            .unwrap_or_else(|| panic!("no IR listener {name}; have {:?}", self.ir_listener_names()))
    }

    pub fn ir_listener_names(&self) -> Vec<String> {
        self.output.config.binds.iter().flat_map(|b| b.listeners.iter().map(|l| l.name.clone())).collect()
    }

    pub fn bind(&self, address: &str) -> Option<&Bind> {
        self.output.config.binds.iter().find(|b| b.address.to_string() == address)
    }

    pub fn bind_addresses(&self) -> Vec<String> {
        self.output.config.binds.iter().map(|b| b.address.to_string()).collect()
    }
}

/// `"Status/Reason"` of the condition `type_` in `conditions` of `status`.
pub fn cond(status: &Value, type_: &str) -> String {
    try_cond(status, type_).unwrap_or_else(|| panic!("no {type_} condition in {status:#}"))
}

pub fn try_cond(status: &Value, type_: &str) -> Option<String> {
    let c = status["conditions"].as_array()?.iter().find(|c| c["type"] == type_)?;
    Some(format!("{}/{}", c["status"].as_str().unwrap(), c["reason"].as_str().unwrap()))
}

/// The status of the listener `name` in a Gateway or ListenerSet status.
pub fn listener<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["listeners"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["name"] == name))
        .unwrap_or_else(|| panic!("no listener {name} in {status:#}"))
}

/// `group/kind` of each supportedKinds entry of a listener status.
pub fn supported_kinds(listener: &Value) -> Vec<String> {
    listener["supportedKinds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| format!("{}/{}", k["group"].as_str().unwrap(), k["kind"].as_str().unwrap()))
        .collect()
}

pub fn attached_routes(listener: &Value) -> u64 {
    listener["attachedRoutes"].as_u64().unwrap()
}

/// The single parent entry of a route status whose parentRef names `name`.
pub fn parent<'a>(route: &'a Value, name: &str) -> &'a Value {
    let found: Vec<&Value> =
        route["parents"].as_array().unwrap().iter().filter(|p| p["parentRef"]["name"] == name).collect();
    assert_eq!(found.len(), 1, "expected one parent entry for {name} in {route:#}");
    found[0]
}

pub fn parent_names(route: &Value) -> Vec<String> {
    route["parents"].as_array().unwrap().iter().map(|p| p["parentRef"]["name"].as_str().unwrap().to_string()).collect()
}
