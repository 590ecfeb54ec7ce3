//! Sockets and connections: one accept loop per bound address, serving HTTP/1.1 (our own
//! loop, [`downstream::http1`]) and HTTP/2 (hyper's; h2c by prior knowledge, h2 by ALPN over
//! TLS), under limits that keep a hostile client from hurting others, and layer-4 listeners
//! ([`stream`]): TCP sockets, and on TLS sockets the TLS listeners, told from HTTPS
//! listeners by the ClientHello's SNI. A stopped socket stops accepting at once and lets
//! its connections finish, up to a deadline.

use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::{server::conn::http2, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::{oneshot, watch},
};
use translate::ir::{BindProtocol, ListenerProtocol};

use crate::{
    Body, BoxError, Shared,
    config::BindConfig,
    counted::Counted,
    downstream::{self, RequestBody},
    drain::{ConnGuard, Conns, HTTP1_HEAD_WAIT_SWEEPS, HTTP2_IDLE_SWEEPS, SWEEP_INTERVAL},
    handler, recycle,
    rewind::{H2_PREFACE, Rewind, first_bytes},
    stream::{self, StreamConfig},
    ticks,
    tls::TlsConfigs,
};

/// How long a client may take to complete its TLS handshake, and then to send the first
/// bytes of HTTP (after which the socket's sweep bounds waits for heads: `drain.rs`).
pub(crate) const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);

/// What a socket serves now; swapped whole on reconfiguration.
pub struct BindState {
    pub config: Arc<BindConfig>,
    pub tls: Option<Arc<TlsConfigs>>,
    /// TCP and UDP sockets, and TLS sockets with TLS listeners.
    pub stream: Option<Arc<StreamConfig>>,
}

/// Opens a listening socket the way a proxy wants it: address reuse, a deep backlog.
pub fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(address), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// How HTTP is served: HTTP/1.1 by our own loop, HTTP/2 by hyper with these settings.
pub struct HttpServer {
    http2: http2::Builder<TokioExecutor>,
}

impl HttpServer {
    fn new() -> Self {
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(ticks::Timer)
            .max_concurrent_streams(256)
            .max_header_list_size(64 * 1024)
            // Rapid reset (CVE-2023-44487) and its locally-provoked variant.
            .max_pending_accept_reset_streams(50)
            .max_local_error_reset_streams(256)
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20));
        Self { http2 }
    }

    /// Serves HTTP on `io`, of which `prefix` was read already: HTTP/2 if it is the
    /// connection preface, else HTTP/1.1 (with upgrades).
    async fn serve<IO>(
        &self,
        prefix: Bytes,
        io: IO,
        conn: Arc<handler::Conn>,
        state: Arc<ArcSwap<BindState>>,
        shared: Arc<Shared>,
    ) where
        IO: downstream::http1::Io + 'static,
    {
        let guard = conn.guard.clone();
        if prefix.starts_with(H2_PREFACE) {
            let io = TokioIo::new(Rewind::new(prefix, io));
            guard.watch_heads(HTTP2_IDLE_SWEEPS);
            let streams = Arc::new(Streams { open: AtomicUsize::new(0), guard: guard.clone() });
            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let open = streams.open();
                // Each request runs to completion on the configuration current when it arrived,
                // in recycled memory (`recycle`): hyper spawns a task per stream and moves the
                // stream's future several times on the way into it, and the handler's is
                // several kilobytes.
                let job = (req.map(RequestBody::Http2), state.load().config.clone(), conn.clone(), shared.clone());
                let handling = recycle::run(
                    |(req, config, conn, shared): (_, _, Arc<handler::Conn>, Arc<Shared>)| async move {
                        handler::handle(req, config, &conn, &shared).await
                    },
                    job,
                );
                async move {
                    let Ok(response) = handling.await;
                    Ok::<_, Infallible>(response.map(|body| Tracked { body, _open: open }))
                }
            });
            Box::pin(guard.serve(self.http2.serve_connection(io, svc), |c| c.graceful_shutdown())).await;
        } else {
            guard.watch_heads(HTTP1_HEAD_WAIT_SWEEPS);
            // The loop itself stops taking requests when the drain begins.
            guard.serve(downstream::http1::serve(Box::new(io), prefix, conn, state, shared), |_| {}).await;
        }
    }
}

/// An HTTP/2 connection's open streams. While none is, the connection counts as waiting for
/// a request head (see `drain.rs`), whatever else the client sends (pings, a head slowly):
/// hyper's server has no idle or header timeout of its own.
struct Streams {
    open: AtomicUsize,
    guard: ConnGuard,
}

impl Streams {
    fn open(self: &Arc<Self>) -> OpenStream {
        if self.open.fetch_add(1, Ordering::Relaxed) == 0 {
            // Too late if the sweep has just ended the connection: it closes either way.
            let _ = self.guard.head_arrived();
        }
        OpenStream(self.clone())
    }
}

/// A stream from its request head until its response body is done with (or the request
/// dropped before it had one).
struct OpenStream(Arc<Streams>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.guard.awaiting_head();
        }
    }
}

/// A response body that keeps its stream counted as open.
struct Tracked {
    body: Body,
    _open: OpenStream,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Accepts until `stop` carries a drain deadline; then closes the socket (signalled on
/// `closed`) and waits for its connections to finish, up to the deadline.
pub async fn accept_loop(
    listener: TcpListener,
    state: Arc<ArcSwap<BindState>>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<Option<Duration>>,
    closed: oneshot::Sender<()>,
) {
    let local = listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut conns = Conns::new();
    let server = Arc::new(HttpServer::new());
    let mut sweep = ticks::interval(SWEEP_INTERVAL);
    // Made once, not once per accept: a new wait on the watch cost some 150 instructions.
    let mut stopped = Box::pin(stop.changed());
    loop {
        // NOTE: accept() is cancel-safe, so losing the race to `stop` drops no connection.
        tokio::select! {
            biased;
            _ = &mut stopped => break,
            _ = sweep.tick() => conns.sweep(),
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let guard = conns.guard();
                    let (state, shared, server) = (state.clone(), shared.clone(), server.clone());
                    tokio::spawn(async move {
                        serve(stream, peer, local, state, shared, &server, guard).await;
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(%local, "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop((listener, stopped));
    let _ = closed.send(());
    let deadline = tokio::time::sleep(stop.borrow().unwrap_or(Duration::ZERO));
    conns.drain();
    let ended = conns.ended();
    tokio::pin!(deadline, ended);
    // Still sweeping: a connection that never finishes its request head holds no drain.
    loop {
        tokio::select! {
            _ = &mut ended => break,
            _ = &mut deadline => {
                tracing::info!(%local, "drain deadline reached; closing the remaining connections");
                break;
            }
            _ = sweep.tick() => conns.sweep(),
        }
    }
    conns.kill();
}

/// Serves one accepted connection. What only TLS and HTTP/2 connections need (kilobytes of
/// handshake and stream state) is boxed, so that the task of every connection stays small:
/// about 2 KB for HTTP/1.1, of which a request's own state is not part (`recycle`).
#[allow(clippy::too_many_arguments)]
async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    state: Arc<ArcSwap<BindState>>,
    shared: Arc<Shared>,
    server: &HttpServer,
    guard: ConnGuard,
) {
    let (tls, l4) = {
        let current = state.load();
        (current.tls.clone(), current.stream.clone())
    };
    match (tls, l4) {
        (_, Some(l4)) if l4.protocol == BindProtocol::Tcp => {
            stream::serve_tcp(stream, peer, l4, &shared.metrics, guard).await
        }
        (tls, Some(l4)) => {
            // TLS and HTTPS listeners share this socket: the SNI tells which one a connection is for.
            let mut stream = stream;
            let Some((hello, sni)) = stream::client_hello(&mut stream, FIRST_BYTES_TIMEOUT).await else { return };
            let Some(&index) = l4.by_host.get(&sni) else {
                tracing::debug!(%local, %peer, sni, "no listener for this SNI");
                return;
            };
            let listener = &l4.listeners[index];
            match listener.protocol {
                ListenerProtocol::TlsPassthrough => {
                    stream::serve_passthrough(stream, hello, &sni, listener, &l4, &shared.metrics, guard).await;
                }
                ListenerProtocol::TlsTerminate => {
                    Box::pin(stream::serve_terminate(stream, hello, &sni, listener, &l4, &shared.metrics, guard)).await;
                }
                _ => {
                    let Some(config) = tls.and_then(|t| t.for_sni(&sni)) else { return };
                    let accept =
                        tokio_rustls::TlsAcceptor::from(config).accept(Counted::new(Rewind::new(hello, stream)));
                    Box::pin(serve_https(accept, peer, local, state, shared, server, guard)).await;
                }
            }
        }
        (None, None) => {
            let mut stream = stream;
            let Some(prefix) = first_bytes(&mut stream, FIRST_BYTES_TIMEOUT).await else { return };
            let conn = Arc::new(handler::Conn::new((peer, local), false, None, guard));
            server.serve(prefix, stream, conn, state, shared).await;
        }
        (Some(configs), None) => {
            // Each listener has its own config (client validation differs): read the
            // ClientHello, then pick by SNI.
            let lazy = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), Counted::new(stream));
            let Ok(Ok(start)) = tokio::time::timeout(FIRST_BYTES_TIMEOUT, lazy).await else { return };
            let sni = start.client_hello().server_name().map(str::to_ascii_lowercase).unwrap_or_default();
            let Some(config) = configs.for_sni(&sni) else { return };
            Box::pin(serve_https(start.into_stream(config), peer, local, state, shared, server, guard)).await;
        }
    }
}

/// HTTP over TLS, once the handshake is under way.
async fn serve_https<IO>(
    accept: tokio_rustls::Accept<Counted<IO>>,
    peer: SocketAddr,
    local: SocketAddr,
    state: Arc<ArcSwap<BindState>>,
    shared: Arc<Shared>,
    server: &HttpServer,
    guard: ConnGuard,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // A client that never finishes its handshake must not hold a connection forever.
    let Ok(Ok(mut tls)) = tokio::time::timeout(FIRST_BYTES_TIMEOUT, accept).await else { return };
    let sni = tls.get_ref().1.server_name().map(str::to_ascii_lowercase).unwrap_or_default();
    let sni_listener = state.load().config.by_host.get(&sni).copied();
    let Some(prefix) = first_bytes(&mut tls, FIRST_BYTES_TIMEOUT).await else { return };
    let conn = Arc::new(handler::Conn::new((peer, local), true, sni_listener, guard));
    server.serve(prefix, tls, conn, state, shared).await;
}
