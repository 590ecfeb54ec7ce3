//! Data-plane metrics: requests and their latency per listener and route.

use std::{sync::Arc, time::Duration};

use http::StatusCode;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub listener: String,
    pub route: String,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub listener: String,
    pub route: String,
}

#[derive(Clone)]
pub struct ProxyMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram>,
}

impl ProxyMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
            }),
        };
        let r = registry.sub_registry_with_prefix("gatehouse");
        r.register("http_requests", "HTTP requests served, by listener, route and status code", m.requests.clone());
        r.register("http_request_duration_seconds", "Time from request to response headers", m.duration.clone());
        m
    }

    /// Requests that matched no route are recorded with an empty route.
    pub fn record(&self, labels: Option<(Arc<str>, Arc<str>)>, code: StatusCode, elapsed: Duration) {
        let (listener, route) = labels.map_or((String::new(), String::new()), |(l, r)| (l.to_string(), r.to_string()));
        self.requests
            .get_or_create(&RequestLabels { listener: listener.clone(), route: route.clone(), code: code.as_u16() })
            .inc();
        self.duration.get_or_create(&RouteLabels { listener, route }).observe(elapsed.as_secs_f64());
    }
}
