//! The control loop of standalone mode: read the files, store, translate, apply to the data
//! plane, stamp and publish statuses. It runs again on every change of the file set.

use std::{
    sync::Arc,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use tokio::sync::watch;
use translate::{
    Settings,
    ir::ProxyConfig,
    status::{self, ResourceStatus},
    store::Store,
};

use crate::{
    metrics::{KindLabel, Metrics},
    source::{ConfigError, FileSource},
};

/// What the admin API serves: the last processed state.
#[derive(Debug, Default)]
pub struct Published {
    pub generation: u64,
    pub ready: bool,
    pub statuses: Vec<ResourceStatus>,
    pub errors: Vec<ConfigError>,
    pub config: Arc<ProxyConfig>,
}

pub struct Engine {
    source: FileSource,
    store: Store,
    settings: Settings,
    proxy: proxy::Proxy,
    metrics: Metrics,
    fingerprint: Option<u64>,
    published: watch::Sender<Arc<Published>>,
}

impl Engine {
    pub fn new(
        source: FileSource,
        settings: Settings,
        proxy: proxy::Proxy,
        metrics: Metrics,
    ) -> (Self, watch::Receiver<Arc<Published>>) {
        let (tx, rx) = watch::channel(Arc::new(Published::default()));
        (Self { source, store: Store::default(), settings, proxy, metrics, fingerprint: None, published: tx }, rx)
    }

    pub fn proxy(&self) -> &proxy::Proxy {
        &self.proxy
    }

    /// Reads the files and, if anything changed, applies the result.
    pub async fn reload(&mut self) {
        let reading = self.source.read();
        if self.fingerprint == Some(reading.fingerprint) {
            return;
        }
        self.fingerprint = Some(reading.fingerprint);
        let generation = self.published.borrow().generation + 1;
        for e in &reading.errors {
            tracing::warn!(file = %e.file, document = e.document, object = e.object.as_deref().unwrap_or(""), "rejected: {}", e.message);
        }
        let now = now_rfc3339();
        let snapshot = self.store.replace(reading.objects, &reading.rejected, &now);

        // Translate, apply, and translate again if the data plane could not bind something,
        // so that status reports it. Facts start afresh on each reload: a port may have been
        // freed since.
        let mut settings = Settings {
            unavailable_ports: Default::default(),
            unusable_addresses: Default::default(),
            ..self.settings.clone()
        };
        // What could not be bound accumulates over the rounds of one reload: a socket left
        // out of the next round is not tried again, so its absence from that round's report
        // says nothing. A round that finds nothing new is final.
        let mut output;
        let mut rounds = 0;
        loop {
            let started = Instant::now();
            output = translate::translate(&snapshot, &settings);
            self.metrics.translation_seconds.observe(started.elapsed().as_secs_f64());
            let report = self.proxy.apply(Arc::new(output.config.clone())).await;
            rounds += 1;
            let new = report.unavailable_ports.difference(&settings.unavailable_ports).count()
                + report.unusable_addresses.difference(&settings.unusable_addresses).count();
            if new == 0 || rounds == 3 {
                break;
            }
            settings.unavailable_ports.extend(report.unavailable_ports);
            settings.unusable_addresses.extend(report.unusable_addresses);
        }
        let previous = self.published.borrow().clone();
        status::stamp(&previous.statuses, &mut output.statuses, &now);

        self.metrics.generation.set(generation as i64);
        self.metrics.reloads.inc();
        self.metrics.config_errors.set(reading.errors.len() as i64);
        if !reading.errors.is_empty() {
            self.metrics.reload_errors.inc();
        }
        self.metrics.resources.clear();
        for obj in snapshot.iter() {
            self.metrics.resources.get_or_create(&KindLabel { kind: obj.resource.kind().to_string() }).inc();
        }
        let summary = summarize(&output.statuses);
        tracing::info!(generation, resources = snapshot.len(), errors = reading.errors.len(), not_accepted = %summary, "configuration applied");
        self.published.send_replace(Arc::new(Published {
            generation,
            ready: true,
            statuses: output.statuses,
            errors: reading.errors,
            config: Arc::new(output.config),
        }));
    }
}

/// A short list of our resources that are not accepted, for the log line of a reload.
fn summarize(statuses: &[ResourceStatus]) -> String {
    let bad: Vec<String> = statuses
        .iter()
        .filter(|s| {
            s.conditions().iter().any(|c| c.type_ == "Accepted" && c.status != api::meta::ConditionStatus::True)
        })
        .map(|s| s.key().to_string())
        .collect();
    if bad.is_empty() { "none".into() } else { bad.join(", ") }
}

pub fn now_rfc3339() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    translate::time::rfc3339(secs)
}
