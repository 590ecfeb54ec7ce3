//! Connections to backends: pooled HTTP/1.1 and HTTP/2 (h2c) clients. The endpoint is chosen
//! by the caller and named in the request URI, so the pool is per endpoint.

use std::time::Duration;

use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};

#[derive(Clone)]
pub struct Clients {
    pub http1: Client<HttpConnector, crate::UpstreamBody>,
    pub h2c: Client<HttpConnector, crate::UpstreamBody>,
}

impl Clients {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.enforce_http(true);
        let http1 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_timer(TokioTimer::new())
            .build(connector.clone());
        let h2c = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Self { http1, h2c }
    }
}

impl Default for Clients {
    fn default() -> Self {
        Self::new()
    }
}
