//! Data-plane metrics: requests and their latency per listener and route, and per backend.
//! Label values are shared strings from the compiled config, so recording a request copies
//! no text.

use std::{fmt::Write as _, sync::Arc, time::Duration};

use http::StatusCode;
use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

/// A label value shared with the configuration it names.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq)]
pub struct Label(pub Arc<str>);

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(&self.0)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub listener: Label,
    pub route: Label,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub listener: Label,
    pub route: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendCodeLabels {
    pub backend: Label,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub backend: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabels {
    pub listener: Label,
    pub route: Label,
    /// `received` from clients, `sent` to them.
    pub direction: &'static str,
}

#[derive(Clone)]
pub struct ProxyMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram>,
    backend_requests: Family<BackendCodeLabels, Counter>,
    backend_duration: Family<BackendLabels, Histogram>,
    streams: Family<RouteLabels, Counter>,
    stream_bytes: Family<BytesLabels, Counter>,
}

/// The byte counters of one TCP connection or UDP flow, resolved once when it starts.
pub struct StreamCounters {
    pub received: Counter,
    pub sent: Counter,
}

impl StreamCounters {
    /// Counters registered nowhere: for tunnels that have no metrics of their own.
    pub fn detached() -> Self {
        Self { received: Counter::default(), sent: Counter::default() }
    }
}

fn latency() -> Histogram {
    Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
}

impl Default for ProxyMetrics {
    /// Metrics registered nowhere (benches and tests).
    fn default() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency),
            backend_requests: Family::default(),
            backend_duration: Family::new_with_constructor(latency),
            streams: Family::default(),
            stream_bytes: Family::default(),
        }
    }
}

/// A route's metrics, resolved when its configuration is compiled, so that recording the
/// usual 200 touches no map.
pub struct RouteMetrics {
    listener: Label,
    route: Label,
    ok: Counter,
    latency: Histogram,
    requests: Family<RequestLabels, Counter>,
}

impl RouteMetrics {
    pub fn record(&self, code: StatusCode, elapsed: Duration) {
        if code == StatusCode::OK {
            self.ok.inc();
        } else {
            let labels =
                RequestLabels { listener: self.listener.clone(), route: self.route.clone(), code: code.as_u16() };
            self.requests.get_or_create(&labels).inc();
        }
        self.latency.observe(elapsed.as_secs_f64());
    }
}

/// A backend's metrics, resolved when its configuration is compiled.
pub struct BackendMetrics {
    backend: Label,
    ok: Counter,
    latency: Histogram,
    requests: Family<BackendCodeLabels, Counter>,
}

impl BackendMetrics {
    /// One attempt; `None` when no response came.
    pub fn record(&self, code: Option<StatusCode>, elapsed: Duration) {
        match code {
            Some(StatusCode::OK) => self.ok.inc(),
            other => {
                let code = other.map_or(0, |c| c.as_u16());
                self.requests.get_or_create(&BackendCodeLabels { backend: self.backend.clone(), code }).inc()
            }
        };
        self.latency.observe(elapsed.as_secs_f64());
    }
}

impl ProxyMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("gatehouse");
        r.register("http_requests", "HTTP requests served, by listener, route and status code", m.requests.clone());
        r.register(
            "http_request_duration_seconds",
            "Time from request to response headers, by route",
            m.duration.clone(),
        );
        r.register(
            "backend_requests",
            "Requests sent to backends, by backend and status code (0: no response)",
            m.backend_requests.clone(),
        );
        r.register(
            "backend_request_duration_seconds",
            "Time from upstream request to response headers, by backend",
            m.backend_duration.clone(),
        );
        r.register(
            "stream_connections",
            "TCP connections and UDP flows proxied by TCP, TLS and UDP listeners, by listener and route",
            m.streams.clone(),
        );
        r.register(
            "stream_bytes",
            "Bytes proxied by TCP, TLS and UDP listeners, by listener, route and direction",
            m.stream_bytes.clone(),
        );
        m
    }

    /// A new TCP connection or UDP flow on `route` of `listener`: counted, and its byte
    /// counters.
    pub fn stream(&self, listener: &Arc<str>, route: &Arc<str>) -> StreamCounters {
        let (listener, route) = (Label(listener.clone()), Label(route.clone()));
        self.streams.get_or_create(&RouteLabels { listener: listener.clone(), route: route.clone() }).inc();
        let bytes = |direction| {
            self.stream_bytes
                .get_or_create(&BytesLabels { listener: listener.clone(), route: route.clone(), direction })
                .clone()
        };
        StreamCounters { received: bytes("received"), sent: bytes("sent") }
    }

    pub fn route(&self, listener: &Arc<str>, route: &Arc<str>) -> RouteMetrics {
        let (listener, route) = (Label(listener.clone()), Label(route.clone()));
        let ok = RequestLabels { listener: listener.clone(), route: route.clone(), code: 200 };
        RouteMetrics {
            ok: self.requests.get_or_create(&ok).clone(),
            latency: self
                .duration
                .get_or_create(&RouteLabels { listener: listener.clone(), route: route.clone() })
                .clone(),
            requests: self.requests.clone(),
            listener,
            route,
        }
    }

    pub fn backend(&self, key: &Arc<str>) -> BackendMetrics {
        let backend = Label(key.clone());
        BackendMetrics {
            ok: self.backend_requests.get_or_create(&BackendCodeLabels { backend: backend.clone(), code: 200 }).clone(),
            latency: self.backend_duration.get_or_create(&BackendLabels { backend: backend.clone() }).clone(),
            requests: self.backend_requests.clone(),
            backend,
        }
    }

    /// A request that matched no route.
    pub fn unrouted(&self, code: StatusCode, elapsed: Duration) {
        let labels = RequestLabels { listener: Label::default(), route: Label::default(), code: code.as_u16() };
        self.requests.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&RouteLabels { listener: Label::default(), route: Label::default() })
            .observe(elapsed.as_secs_f64());
    }
}
