//! Hot reload: changes apply within a second; a broken file keeps the last good
//! configuration serving and says why.

use super::common::*;

#[tokio::test]
async fn a_changed_route_is_served_after_reload() {
    let backend = echo_backend("one").await;
    let port = free_port();
    let base = format!("{CLASS}{}{}", http_gateway(port), service("svc", backend));
    let gw = Gateway::start(&format!("{base}{}", route("r", "/old", "svc"))).await;
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    assert_eq!(get(&url("/old")).await.unwrap().0, 200);
    assert_eq!(get(&url("/new")).await.unwrap().0, 404);

    let status = gw.reconfigure(&format!("{base}{}", route("r", "/new", "svc"))).await;
    assert_eq!(status["generation"], 2);
    assert_eq!(get(&url("/new")).await.unwrap().0, 200);
    assert_eq!(get(&url("/old")).await.unwrap().0, 404);
    let r = resource(&status, "HTTPRoute", "r");
    assert_eq!(r["metadata"]["generation"], 2, "a spec change bumps the generation");
    assert_eq!(condition(&r["status"]["parents"][0]["conditions"], "Accepted")["observedGeneration"], 2);
}

#[tokio::test]
async fn a_broken_file_keeps_the_last_good_config_until_fixed() {
    let backend = echo_backend("one").await;
    let port = free_port();
    let good = format!("{CLASS}{}{}{}", http_gateway(port), service("svc", backend), route("r", "/", "svc"));
    let gw = Gateway::start(&good).await;
    let url = format!("http://127.0.0.1:{port}/");

    let status = gw.reconfigure(&format!("{good}\n  this: [is not yaml\n")).await;
    let errors = status["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{status}");
    assert!(errors[0]["file"].as_str().unwrap().ends_with("config.yaml"));
    assert_eq!(get(&url).await.unwrap().0, 200, "the last good configuration keeps serving");
    assert_eq!(
        condition(&resource(&status, "HTTPRoute", "r")["status"]["parents"][0]["conditions"], "Accepted")["status"],
        "True"
    );

    let status = gw.reconfigure(&good.replace("value: /", "value: /fixed")).await;
    assert!(status["errors"].as_array().unwrap().is_empty(), "{status}");
    assert_eq!(get(&format!("http://127.0.0.1:{port}/fixed")).await.unwrap().0, 200);
}

#[tokio::test]
async fn an_invalid_edit_of_a_resource_keeps_its_previous_version() {
    let backend = echo_backend("one").await;
    let port = free_port();
    let base = format!("{CLASS}{}{}", http_gateway(port), service("svc", backend));
    let gw = Gateway::start(&format!("{base}{}", route("r", "/api", "svc"))).await;

    // As the API server would refuse this update, the route keeps its last accepted spec.
    let status = gw.reconfigure(&format!("{base}{}", route("r", "api-without-slash", "svc"))).await;
    let error = &status["errors"][0];
    assert_eq!(error["object"], "HTTPRoute default/r");
    assert_eq!(error["document"], 5);
    assert!(error["message"].as_str().unwrap().contains("spec.rules[0].matches[0].path"), "{error}");
    assert_eq!(get(&format!("http://127.0.0.1:{port}/api")).await.unwrap().0, 200);
    assert_eq!(resource(&status, "HTTPRoute", "r")["metadata"]["generation"], 1);
}

#[tokio::test]
async fn removing_a_gateway_closes_its_port() {
    let port = free_port();
    let gw = Gateway::start(&format!("{CLASS}{}", http_gateway(port))).await;
    assert_eq!(get(&format!("http://127.0.0.1:{port}/")).await.unwrap().0, 404);
    let status = gw.reconfigure(CLASS).await;
    assert!(status["resources"].as_array().unwrap().iter().all(|r| r["kind"] != "Gateway"));
    assert!(get(&format!("http://127.0.0.1:{port}/")).await.is_err(), "the listener is closed");
}
