//! Connections to backends. An [`Upstream`] is one way of reaching them: plain TCP or TLS
//! with one client configuration, speaking HTTP/1.1 or HTTP/2. It keeps a [`Pool`] per
//! endpoint. A compiled configuration holds the pools of its endpoints, so the usual request
//! takes a connection without a map lookup; plain pools outlive reconfiguration.

pub(crate) mod codec;
mod http1;
mod pool;
mod stream;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

pub use pool::Pool;
use rustls::{ClientConfig, pki_types::ServerName};
use translate::ir::{BackendProtocol, BackendTls, CertifiedKey};

use crate::{lock, ticks};

/// How often idle connections and unused pools are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_secs(15);
/// An idle connection is closed at the fourth sweep that finds it idle: after 45 to 60 s.
/// Counted in sweeps rather than timed, so that returning a connection reads no clock.
const IDLE_SWEEPS: u32 = 4;

/// What a connection runs over.
#[derive(Clone)]
pub enum Transport {
    Plain,
    Tls { config: Arc<ClientConfig>, server_name: ServerName<'static> },
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

impl From<BackendProtocol> for Protocol {
    fn from(p: BackendProtocol) -> Self {
        match p {
            BackendProtocol::H2c => Protocol::Http2,
            BackendProtocol::Http1 | BackendProtocol::WebSocket => Protocol::Http1,
        }
    }
}

/// One transport and protocol, with a pool per endpoint.
pub struct Upstream {
    transport: Transport,
    protocol: Protocol,
    pools: Mutex<HashMap<SocketAddr, Arc<Pool>>>,
}

impl Upstream {
    /// The pool for `endpoint`, made on first use.
    pub fn pool(&self, endpoint: SocketAddr) -> Arc<Pool> {
        lock(&self.pools)
            .entry(endpoint)
            .or_insert_with(|| Pool::new(endpoint, self.transport.clone(), self.protocol))
            .clone()
    }

    /// Closes idle connections past their time, and forgets pools nobody else holds that
    /// have nothing left in them.
    fn sweep(&self) {
        lock(&self.pools).retain(|_, pool| !pool.expire(IDLE_SWEEPS) || Arc::strong_count(pool) > 1);
    }
}

/// Every [`Upstream`]: the plain ones, shared by all configurations, and those made for
/// TLS backends, which live as long as a configuration uses them and are handed to the next
/// configuration that asks for the same TLS, so that a reload keeps their connections.
pub struct Upstreams {
    plain_http1: Arc<Upstream>,
    plain_http2: Arc<Upstream>,
    tls: Mutex<Vec<(TlsSpec, Weak<Upstream>)>>,
}

/// What a TLS upstream was made from.
#[derive(PartialEq)]
pub struct TlsSpec {
    pub tls: BackendTls,
    pub protocol: BackendProtocol,
    pub certificate: Option<CertifiedKey>,
}

impl Upstreams {
    pub fn new() -> Self {
        let plain_http1 = Arc::new(upstream(Transport::Plain, Protocol::Http1));
        let plain_http2 = Arc::new(upstream(Transport::Plain, Protocol::Http2));
        Self { plain_http1, plain_http2, tls: Mutex::new(Vec::new()) }
    }

    pub fn plain(&self, protocol: Protocol) -> Arc<Upstream> {
        match protocol {
            Protocol::Http1 => self.plain_http1.clone(),
            Protocol::Http2 => self.plain_http2.clone(),
        }
    }

    /// The upstream for `spec`: the one a live configuration already uses, or one made
    /// with `client` (None when the spec cannot be used).
    pub fn tls(
        &self,
        spec: TlsSpec,
        client: impl FnOnce() -> Option<(Arc<ClientConfig>, ServerName<'static>)>,
    ) -> Option<Arc<Upstream>> {
        let mut made = lock(&self.tls);
        made.retain(|(_, u)| u.strong_count() > 0);
        if let Some(live) = made.iter().find(|(s, _)| *s == spec).and_then(|(_, u)| u.upgrade()) {
            return Some(live);
        }
        let (config, server_name) = client()?;
        let upstream = Arc::new(upstream(Transport::Tls { config, server_name }, spec.protocol.into()));
        made.push((spec, Arc::downgrade(&upstream)));
        Some(upstream)
    }

    /// Sweeps every upstream now and then, for as long as `upstreams` lives.
    pub async fn sweep_forever(upstreams: Weak<Self>) {
        let mut tick = ticks::interval(SWEEP_INTERVAL);
        loop {
            tick.tick().await;
            let Some(upstreams) = upstreams.upgrade() else { return };
            let tls: Vec<Arc<Upstream>> = lock(&upstreams.tls).iter().filter_map(|(_, u)| u.upgrade()).collect();
            for upstream in [&upstreams.plain_http1, &upstreams.plain_http2].into_iter().chain(&tls) {
                upstream.sweep();
            }
        }
    }
}

impl Default for Upstreams {
    fn default() -> Self {
        Self::new()
    }
}

fn upstream(transport: Transport, protocol: Protocol) -> Upstream {
    Upstream { transport, protocol, pools: Mutex::new(HashMap::new()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_forgets_empty_pools_no_configuration_holds() {
        let upstream = upstream(Transport::Plain, Protocol::Http1);
        let held = upstream.pool("127.0.0.1:1".parse().unwrap());
        let forgotten = Arc::downgrade(&upstream.pool("127.0.0.1:2".parse().unwrap()));
        upstream.sweep();
        assert!(forgotten.upgrade().is_none(), "an empty pool nobody holds is dropped");
        assert!(Arc::ptr_eq(&held, &upstream.pool("127.0.0.1:1".parse().unwrap())), "a held pool is kept");
    }
}
