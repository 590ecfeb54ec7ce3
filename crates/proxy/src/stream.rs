//! Layer 4 over TCP: TCP listeners (TCPRoute), and TLS listeners that either pass the stream
//! through untouched, chosen by the SNI of the ClientHello (mode Passthrough), or terminate
//! TLS with the listener's certificate and forward the plaintext (mode Terminate), both for
//! TLSRoute. A connection picks its backend once, by weight, then bytes are copied both ways
//! until both sides have closed (half-close is passed on) or the connection idles out.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use prometheus_client::metrics::counter::Counter;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::TcpStream,
    time::Instant,
};
use translate::ir::{self, BindProtocol, ListenerProtocol};

use crate::{
    config::Backends,
    drain::ConnGuard,
    hostmap::HostMap,
    metrics::{ProxyMetrics, StreamCounters},
    rewind::Rewind,
    server::FIRST_BYTES_TIMEOUT,
    ticks,
    tls::TlsConfigs,
};

/// A TCP or TLS stream with no byte in either direction for this long is closed. Long, since
/// L4 protocols (databases, message queues) keep quiet connections open; clients that need
/// more keep their connections alive themselves.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// How long connecting to a backend endpoint may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The most we buffer while waiting for a complete ClientHello (a few KiB in practice, more
/// with post-quantum key shares); a client that sends more is closed.
const MAX_CLIENT_HELLO: usize = 64 * 1024;

/// The layer-4 part of one socket's configuration.
pub struct StreamConfig {
    pub protocol: BindProtocol,
    /// In the IR's order, so indices agree with [`crate::config::BindConfig::listeners`].
    pub listeners: Vec<StreamListener>,
    /// Listener index by the listener's own hostname, for SNI.
    pub by_host: HostMap<usize>,
    pub backends: Arc<Backends>,
    /// For TLS listeners in mode Terminate: each listener's config, which offers no ALPN
    /// (the stream is opaque to us, so no application protocol may be negotiated for it).
    pub terminate: Option<Arc<TlsConfigs>>,
}

pub struct StreamListener {
    pub name: Arc<str>,
    pub protocol: ListenerProtocol,
    /// Oldest route first.
    pub routes: Vec<StreamRoute>,
    /// Route index by SNI (TLS): exact names, then wildcards; the oldest route keeps a name.
    by_sni: HostMap<usize>,
}

pub struct StreamRoute {
    pub name: Arc<str>,
    /// Weight and backend key (`None`: an invalid backendRef), weight 0 left out.
    backends: Vec<(u32, Option<String>)>,
    total: u32,
    next: AtomicUsize,
}

impl StreamRoute {
    fn compile(r: &ir::StreamRoute) -> Self {
        let backends: Vec<(u32, Option<String>)> =
            r.backends.iter().filter(|b| b.weight > 0).map(|b| (b.weight, b.backend.clone())).collect();
        let total = backends.iter().map(|(w, _)| *w).sum();
        Self { name: r.route.as_str().into(), backends, total, next: AtomicUsize::new(0) }
    }

    /// The backend key for the next connection or flow, by weight (the same deterministic
    /// weighted round-robin as HTTP rules). `None` when the share falls on an invalid backend
    /// or every weight is 0: the connection is closed.
    pub fn pick(&self) -> Option<&str> {
        if self.total == 0 {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed) as u64;
        let mut slot = (n.wrapping_mul(2_654_435_761) % u64::from(self.total)) as u32;
        for (w, b) in &self.backends {
            if slot < *w {
                return b.as_deref();
            }
            slot -= w;
        }
        None
    }
}

impl StreamConfig {
    /// `None` for sockets with no layer-4 listener (HTTP, and TLS sockets with only HTTPS
    /// listeners: they keep the plain HTTP path).
    pub fn compile(bind: &ir::Bind, backends: Arc<Backends>, tls: Option<&Arc<TlsConfigs>>) -> Option<Self> {
        let l4 = match bind.protocol {
            BindProtocol::Http => false,
            BindProtocol::Tcp | BindProtocol::Udp => true,
            BindProtocol::Tls => bind
                .listeners
                .iter()
                .any(|l| matches!(l.protocol, ListenerProtocol::TlsPassthrough | ListenerProtocol::TlsTerminate)),
        };
        if !l4 {
            return None;
        }
        let mut by_host = HostMap::default();
        let listeners = bind
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| {
                by_host.insert(l.hostname.as_deref().unwrap_or("*"), i);
                let mut by_sni = HostMap::default();
                for (r, route) in l.stream_routes.iter().enumerate() {
                    if route.hostnames.is_empty() {
                        by_sni.insert("*", r);
                    }
                    for h in &route.hostnames {
                        by_sni.insert(h, r);
                    }
                }
                StreamListener {
                    name: l.name.as_str().into(),
                    protocol: l.protocol,
                    routes: l.stream_routes.iter().map(StreamRoute::compile).collect(),
                    by_sni,
                }
            })
            .collect();
        let terminate = tls.cloned();
        Some(Self { protocol: bind.protocol, listeners, by_host, backends, terminate })
    }

    /// Whether the socket must be bound even without a usable certificate.
    pub fn has_passthrough(&self) -> bool {
        self.listeners.iter().any(|l| l.protocol == ListenerProtocol::TlsPassthrough)
    }

    /// TCP and UDP: the oldest route of the first listener that has one.
    pub fn first_route(&self) -> Option<(&StreamListener, &StreamRoute)> {
        self.listeners.iter().find_map(|l| Some((l, l.routes.first()?)))
    }

    /// Where the next connection or flow of `route` goes: a backend by weight, then one of
    /// its endpoints round-robin (or its external name, resolved).
    pub async fn target(&self, route: &StreamRoute) -> Option<SocketAddr> {
        let Some(key) = route.pick() else {
            tracing::debug!(route = %route.name, "no valid backend for this share");
            return None;
        };
        let backend = self.backends.by_key.get(key)?;
        let target = backend.target().await;
        if target.is_none() {
            tracing::debug!(route = %route.name, backend = key, "backend has no endpoints");
        }
        target
    }

    async fn connect(&self, route: &StreamRoute) -> Option<TcpStream> {
        let addr = self.target(route).await?;
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                Some(s)
            }
            Ok(Err(e)) => {
                tracing::debug!(route = %route.name, %addr, "cannot connect: {e}");
                None
            }
            Err(_) => {
                tracing::debug!(route = %route.name, %addr, "connect timed out");
                None
            }
        }
    }
}

impl StreamListener {
    /// The route for an SNI (lower-case; empty when the client sent none).
    pub fn route_for(&self, sni: &str) -> Option<&StreamRoute> {
        self.by_sni.get(sni).map(|&i| &self.routes[i])
    }
}

// === serving ===

/// A TCP listener's connection: the oldest route's backend, then bytes both ways.
pub async fn serve_tcp(
    client: TcpStream,
    peer: SocketAddr,
    config: Arc<StreamConfig>,
    metrics: &ProxyMetrics,
    guard: ConnGuard,
) {
    let Some((listener, route)) = config.first_route() else { return };
    let Some(upstream) = config.connect(route).await else { return };
    tracing::debug!(%peer, listener = %listener.name, route = %route.name, "TCP connection");
    pipe(client, upstream, &guard, metrics.stream(&listener.name, &route.name)).await;
}

/// Reads a ClientHello without answering it, within `timeout`: every byte read, and the SNI
/// (lower-case, empty without one). `None` if the client closed, was too slow, sent more
/// than [`MAX_CLIENT_HELLO`] bytes or something that is not a ClientHello.
pub async fn client_hello(stream: &mut TcpStream, timeout: Duration) -> Option<(Bytes, String)> {
    let read = async {
        let mut acceptor = rustls::server::Acceptor::default();
        let mut buf = BytesMut::with_capacity(4096);
        loop {
            let fed = buf.len();
            if fed >= MAX_CLIENT_HELLO {
                return None;
            }
            let mut limited = (&mut *stream).take((MAX_CLIENT_HELLO - fed) as u64);
            if limited.read_buf(&mut buf).await.ok()? == 0 {
                return None;
            }
            let mut rd = &buf[fed..];
            while !rd.is_empty() {
                if acceptor.read_tls(&mut rd).ok()? == 0 {
                    return None;
                }
            }
            match acceptor.accept() {
                Ok(None) => continue,
                Ok(Some(accepted)) => {
                    let sni = accepted.client_hello().server_name().map(str::to_ascii_lowercase).unwrap_or_default();
                    return Some((buf.freeze(), sni));
                }
                Err(_) => return None,
            }
        }
    };
    tokio::time::timeout(timeout, read).await.ok().flatten()
}

/// A TLS listener in mode Passthrough: the route the SNI selects gets the connection as it
/// came, the ClientHello replayed first. No route for the SNI: the connection is closed.
pub async fn serve_passthrough(
    client: TcpStream,
    hello: Bytes,
    sni: &str,
    listener: &StreamListener,
    config: &StreamConfig,
    metrics: &ProxyMetrics,
    guard: ConnGuard,
) {
    let Some(route) = listener.route_for(sni) else {
        tracing::debug!(listener = %listener.name, sni, "no TLSRoute for this SNI");
        return;
    };
    let Some(mut upstream) = config.connect(route).await else { return };
    if upstream.write_all(&hello).await.is_err() {
        return;
    }
    let counters = metrics.stream(&listener.name, &route.name);
    counters.received.inc_by(hello.len() as u64);
    pipe(client, upstream, &guard, counters).await;
}

/// A TLS listener in mode Terminate: TLS ends here with the listener's certificate, and the
/// route the SNI selects gets the plaintext.
pub async fn serve_terminate(
    client: TcpStream,
    hello: Bytes,
    sni: &str,
    listener: &StreamListener,
    config: &StreamConfig,
    metrics: &ProxyMetrics,
    guard: ConnGuard,
) {
    let Some(tls) = config.terminate.as_ref().and_then(|t| t.for_sni(sni)) else { return };
    let Some(route) = listener.route_for(sni) else {
        tracing::debug!(listener = %listener.name, sni, "no TLSRoute for this SNI");
        return;
    };
    let accept = tokio_rustls::TlsAcceptor::from(tls).accept(Rewind::new(hello, client));
    let Ok(Ok(tls)) = tokio::time::timeout(FIRST_BYTES_TIMEOUT, accept).await else { return };
    let Some(upstream) = config.connect(route).await else { return };
    pipe(tls, upstream, &guard, metrics.stream(&listener.name, &route.name)).await;
}

/// Copies both ways until both directions are closed (an EOF on one side shuts down writing
/// on the other, so half-closed connections work), an error, [`IDLE_TIMEOUT`] without a
/// byte either way, or the socket's drain deadline.
pub async fn pipe<A, B>(a: A, b: B, guard: &ConnGuard, counters: StreamCounters)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let clock = Clock { start: Instant::now(), last_ms: AtomicU64::new(0) };
    let mut a = Idle { inner: a, clock: &clock, read: counters.received };
    let mut b = Idle { inner: b, clock: &clock, read: counters.sent };
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    tokio::pin!(copy);
    loop {
        let deadline = clock.last() + IDLE_TIMEOUT;
        tokio::select! {
            _ = &mut copy => return,
            // On the ticker: a timer per connection, set once an hour, would otherwise keep
            // the serving thread's timer wheel from ever being empty.
            _ = ticks::sleep_until(deadline) => {
                if clock.last() + IDLE_TIMEOUT <= Instant::now() {
                    tracing::debug!("idle timeout");
                    return;
                }
            }
            _ = guard.killed() => return,
        }
    }
}

/// When a connection last moved a byte.
struct Clock {
    start: Instant,
    last_ms: AtomicU64,
}

impl Clock {
    fn touch(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A stream that records on `clock` every read that returned bytes.
struct Idle<'a, T> {
    inner: T,
    clock: &'a Clock,
    /// Counts the bytes read from `inner`.
    read: Counter,
}

impl<T: AsyncRead + Unpin> AsyncRead for Idle<'_, T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.touch();
            self.read.inc_by((buf.filled().len() - before) as u64);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Idle<'_, T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(weights: &[(u32, Option<&str>)]) -> StreamRoute {
        StreamRoute::compile(&ir::StreamRoute {
            route: "TCPRoute/default/r".into(),
            hostnames: vec![],
            backends: weights
                .iter()
                .map(|(w, b)| ir::WeightedBackend { weight: *w, backend: b.map(String::from), filters: vec![] })
                .collect(),
        })
    }

    #[test]
    fn picks_by_weight() {
        let r = route(&[(1, Some("a")), (0, Some("never")), (3, Some("b"))]);
        let picks: Vec<_> = (0..400).map(|_| r.pick().unwrap().to_string()).collect();
        assert_eq!(picks.iter().filter(|p| *p == "a").count(), 100);
        assert_eq!(picks.iter().filter(|p| *p == "b").count(), 300);
        let invalid = route(&[(1, None), (1, Some("a"))]);
        assert_eq!((0..10).filter(|_| invalid.pick().is_none()).count(), 5, "an invalid share closes");
        assert!(route(&[(0, Some("a"))]).pick().is_none());
    }

    #[tokio::test]
    async fn reads_a_client_hello_and_its_sni() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("Foo.Example.com").unwrap();
            let _ = connector.connect(name, tcp).await;
        });
        let mut server = listener.accept().await.unwrap().0;
        let (hello, sni) = client_hello(&mut server, Duration::from_secs(5)).await.unwrap();
        assert_eq!(sni, "foo.example.com");
        assert_eq!(hello[0], 22, "a handshake record");

        // Not TLS at all: refused.
        let mut plain = TcpStream::connect(addr).await.unwrap();
        plain.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut server = listener.accept().await.unwrap().0;
        assert!(client_hello(&mut server, Duration::from_secs(5)).await.is_none());
    }
}
