//! Translation at scale: N HTTPRoutes spread over 100 Gateways (plus their Services and
//! EndpointSlices), from snapshot to IR and statuses. `cargo bench -p translate`.
//! After the timings, prints the peak memory translation allocates for each size.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicUsize, Ordering},
};

use translate::{
    Settings,
    store::{Object, Snapshot, Source, Store},
};

/// Counts live heap bytes and their high-water mark.
struct Peak;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Peak {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Peak = Peak;

const GATEWAYS: usize = 100;
const SIZES: [usize; 2] = [1_000, 10_000];

fn object(doc: serde_json::Value, i: usize) -> Object {
    let api_version = doc["apiVersion"].as_str().unwrap().to_string();
    let resource = api::Resource::from_json(doc).unwrap().unwrap();
    Object { api_version, resource, source: Source { file: "bench.yaml".into(), document: i } }
}

fn snapshot(routes: usize) -> Snapshot {
    let mut objects = vec![object(
        serde_json::json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
            "metadata": {"name": "gatehouse"}, "spec": {"controllerName": "gatehouse.dev/gateway-controller"}}),
        0,
    )];
    for g in 0..GATEWAYS {
        objects.push(object(
            serde_json::json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                "metadata": {"name": format!("gw-{g}"), "namespace": format!("ns-{}", g % 10)},
                "spec": {"gatewayClassName": "gatehouse", "listeners": [
                    {"name": "http", "protocol": "HTTP", "port": 8000 + g, "allowedRoutes": {"namespaces": {"from": "All"}}},
                    {"name": "wild", "protocol": "HTTP", "port": 8000 + g, "hostname": "*.example.com", "allowedRoutes": {"namespaces": {"from": "All"}}}]}}),
            g,
        ));
    }
    for r in 0..routes {
        let ns = format!("ns-{}", r % 10);
        let svc = format!("svc-{}", r % 500);
        objects.push(object(
            serde_json::json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                "metadata": {"name": format!("route-{r}"), "namespace": ns},
                "spec": {"parentRefs": [{"name": format!("gw-{}", r % GATEWAYS), "namespace": format!("ns-{}", (r % GATEWAYS) % 10)}],
                    "hostnames": [format!("host-{}.example.com", r % 50)],
                    "rules": [
                        {"matches": [{"path": {"type": "PathPrefix", "value": format!("/api/{r}")}},
                                     {"path": {"type": "Exact", "value": format!("/exact/{r}")}, "headers": [{"name": "x-version", "value": "2"}]}],
                         "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x-route", "value": format!("{r}")}]}}],
                         "backendRefs": [{"name": svc, "port": 80, "weight": 9}, {"name": format!("svc-{}", (r + 1) % 500), "port": 80, "weight": 1}]}]}}),
            r,
        ));
    }
    for s in 0..500 {
        for ns in 0..10 {
            objects.push(object(
                serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("svc-{s}"), "namespace": format!("ns-{ns}")},
                    "spec": {"ports": [{"name": "http", "port": 80}]}}),
                s,
            ));
            objects.push(object(
                serde_json::json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": format!("svc-{s}"), "namespace": format!("ns-{ns}"), "labels": {"kubernetes.io/service-name": format!("svc-{s}")}},
                    "addressType": "IPv4", "endpoints": [{"addresses": [format!("10.{ns}.{}.{}", s / 250, s % 250 + 1)]}, {"addresses": ["10.99.0.1"], "conditions": {"ready": false}}],
                    "ports": [{"name": "http", "port": 8080}]}),
                s,
            ));
        }
    }
    Store::default().replace(objects, &[], "2026-01-01T00:00:00Z")
}

fn settings() -> Settings {
    Settings { address_pool: Some("10.200.0.0/24".parse().unwrap()), ..Settings::default() }
}

#[divan::bench(args = SIZES, sample_count = 10)]
fn translate_routes(bencher: divan::Bencher, routes: usize) {
    let snapshot = snapshot(routes);
    let settings = settings();
    bencher.bench(|| translate::translate(&snapshot, &settings));
}

fn main() {
    divan::main();
    for routes in SIZES {
        let snapshot = snapshot(routes);
        let settings = settings();
        let before = LIVE.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let output = translate::translate(&snapshot, &settings);
        let peak = PEAK.load(Ordering::Relaxed) - before;
        println!(
            "translate {routes} routes over {GATEWAYS} Gateways: peak heap during translation {:.1} MiB ({} statuses)",
            peak as f64 / (1 << 20) as f64,
            output.statuses.len()
        );
    }
}
