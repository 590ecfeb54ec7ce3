//! Control-plane metrics, registered beside the data plane's in one registry.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone)]
pub struct Metrics {
    pub generation: Gauge,
    pub resources: Family<KindLabel, Gauge>,
    pub translation_seconds: Histogram,
    pub reloads: Counter,
    pub reload_errors: Counter,
    pub config_errors: Gauge,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            generation: Gauge::default(),
            resources: Family::default(),
            translation_seconds: Histogram::new([0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
            reloads: Counter::default(),
            reload_errors: Counter::default(),
            config_errors: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("gatehouse");
        r.register("config_generation", "Generation of the file set last processed", m.generation.clone());
        r.register("resources", "Resources in the current configuration, by kind", m.resources.clone());
        r.register(
            "translation_seconds",
            "Time to translate resources into the IR and statuses",
            m.translation_seconds.clone(),
        );
        r.register("reloads", "Changes of the file set processed", m.reloads.clone());
        r.register("reload_errors", "Reloads in which some file or resource was rejected", m.reload_errors.clone());
        r.register(
            "config_errors",
            "Files, documents and resources rejected in the last reload",
            m.config_errors.clone(),
        );
        m
    }
}
