//! The data plane. It reads only the IR ([`translate::ir`]): [`Proxy::apply`] compiles a new
//! configuration and swaps it in. Sockets whose address and protocol did not change stay
//! bound, requests and TCP connections in flight finish on the configuration they started
//! with, and sockets no longer wanted stop accepting and drain. HTTP and HTTPS listeners are
//! served by [`server`] and [`handler`], TCP and TLS listeners by [`stream`], UDP listeners
//! by [`udp`].
#![forbid(unsafe_code)]

pub mod config;
mod cors;
mod counted;
mod dns;
mod downstream;
mod drain;
mod ext_auth;
mod ext_authz;
mod forward;
mod handler;
pub mod hostmap;
pub mod metrics;
pub mod path;
mod recycle;
mod respond;
mod rewind;
mod server;
mod stream;
pub mod ticks;
mod tls;
mod udp;
mod upstream;
mod upstream_tls;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use prometheus_client::registry::Registry;
use tokio::{
    sync::{Mutex, oneshot, watch},
    task::JoinHandle,
};
use translate::ir::{BindProtocol, ProxyConfig};

use crate::{
    config::{Backends, BindConfig},
    server::BindState,
    stream::StreamConfig,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every response the proxy sends.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;
/// The body of every request the proxy sends upstream.
type UpstreamBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// The maps the request path reads, keyed by configuration (hosts, paths, backends): foldhash,
/// seeded per process, costs a fraction of SipHash on these short keys.
type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A mutex's contents, also after a panic elsewhere held it (none of ours is left half
/// updated by one).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What every connection shares: upstream connections and metrics.
pub struct Shared {
    upstreams: Arc<upstream::Upstreams>,
    resolvers: dns::Resolvers,
    metrics: metrics::ProxyMetrics,
}

/// How long a socket removed by reconfiguration lets its connections finish.
const RECONFIGURE_DRAIN: Duration = Duration::from_secs(30);

/// Sockets that could not be bound, for status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BindReport {
    /// Address, and whether it is the UDP socket.
    pub unavailable_ports: BTreeSet<(SocketAddr, bool)>,
    pub unusable_addresses: BTreeSet<IpAddr>,
}

struct Running {
    protocol: BindProtocol,
    state: Arc<ArcSwap<BindState>>,
    stop: watch::Sender<Option<Duration>>,
    closed: oneshot::Receiver<()>,
    task: JoinHandle<()>,
}

/// A socket: its address, and whether it is UDP (a UDP and a TCP socket may share a port).
type SocketKey = (SocketAddr, bool);

pub struct Proxy {
    binds: Mutex<BTreeMap<SocketKey, Running>>,
    shared: Arc<Shared>,
    /// Closes idle upstream connections; started by the first [`Proxy::apply`].
    sweeper: std::sync::OnceLock<JoinHandle<()>>,
}

impl Proxy {
    pub fn new(registry: &mut Registry) -> Self {
        let upstreams = Arc::new(upstream::Upstreams::new());
        let shared = Arc::new(Shared {
            upstreams,
            resolvers: dns::Resolvers::default(),
            metrics: metrics::ProxyMetrics::register(registry),
        });
        Self { binds: Mutex::new(BTreeMap::new()), shared, sweeper: std::sync::OnceLock::new() }
    }

    /// Serves `config` from now on. Returns what could not be bound.
    pub async fn apply(&self, config: Arc<ProxyConfig>) -> BindReport {
        self.sweeper
            .get_or_init(|| tokio::spawn(upstream::Upstreams::sweep_forever(Arc::downgrade(&self.shared.upstreams))));
        let backends = Arc::new(Backends::compile(&config, &self.shared));
        let wanted: BTreeMap<SocketKey, &translate::ir::Bind> =
            config.binds.iter().map(|b| ((b.address, b.protocol == BindProtocol::Udp), b)).collect();
        let mut binds = self.binds.lock().await;

        // Sockets no longer wanted, or wanted for another protocol, stop first so that their
        // address is free again.
        let gone: Vec<SocketKey> = binds
            .iter()
            .filter(|(a, r)| wanted.get(*a).is_none_or(|b| b.protocol != r.protocol))
            .map(|(a, _)| *a)
            .collect();
        for key in gone {
            if let Some(running) = binds.remove(&key) {
                let address = key.0;
                let _ = running.stop.send(Some(RECONFIGURE_DRAIN));
                let _ = running.closed.await;
                tracing::info!(%address, "listener removed; draining its connections");
            }
        }

        let mut report = BindReport::default();
        for ((address, udp), bind) in wanted {
            let compiled = Arc::new(BindConfig::compile(bind, backends.clone(), &self.shared.metrics));
            let tls = match bind.protocol {
                BindProtocol::Tls => tls::server_configs(bind),
                _ => None,
            };
            let stream = StreamConfig::compile(bind, backends.clone(), tls.as_ref()).map(Arc::new);
            // A TLS socket needs a certificate, unless it passes some connections through.
            if bind.protocol == BindProtocol::Tls
                && tls.is_none()
                && !stream.as_ref().is_some_and(|s| s.has_passthrough())
            {
                continue;
            }
            let state = BindState { config: compiled, tls, stream };
            if let Some(running) = binds.get(&(address, udp)) {
                running.state.store(Arc::new(state));
                continue;
            }
            let state = Arc::new(ArcSwap::from_pointee(state));
            let (stop, stop_rx) = watch::channel(None);
            let (closed_tx, closed) = oneshot::channel();
            let task = if udp {
                udp::bind(address).map(|socket| {
                    tokio::spawn(udp::serve(socket, state.clone(), self.shared.metrics.clone(), stop_rx, closed_tx))
                })
            } else {
                server::bind(address).map(|listener| {
                    tokio::spawn(server::accept_loop(listener, state.clone(), self.shared.clone(), stop_rx, closed_tx))
                })
            };
            match task {
                Ok(task) => {
                    tracing::info!(%address, protocol = ?bind.protocol, "listening");
                    binds.insert((address, udp), Running { protocol: bind.protocol, state, stop, closed, task });
                }
                Err(e) => {
                    tracing::warn!(%address, protocol = ?bind.protocol, "cannot listen: {e}");
                    if e.kind() == std::io::ErrorKind::AddrNotAvailable {
                        report.unusable_addresses.insert(address.ip());
                    } else {
                        report.unavailable_ports.insert((address, udp));
                    }
                }
            }
        }
        report
    }

    /// Stops accepting on every socket and waits for connections to finish, up to `deadline`.
    pub async fn shutdown(&self, deadline: Duration) {
        let binds = std::mem::take(&mut *self.binds.lock().await);
        let mut tasks = Vec::new();
        for (_, running) in binds {
            let _ = running.stop.send(Some(deadline));
            tasks.push(running.task);
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}
