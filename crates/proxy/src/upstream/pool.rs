//! The connections to one endpoint.
//!
//! An HTTP/1.1 connection carries one exchange at a time and has no task of its own: the
//! request using it drives its I/O, first while waiting for the response head, then from
//! the response body as the client reads it. That saves a task wake-up and a channel hop
//! each way. The connection goes back to the pool when the body has been read to its end;
//! a body dropped before then closes it. A connection the backend closed while it sat idle
//! notices when next driven, before writing, and gives the request back for another one.
//!
//! HTTP/2 shares one connection, driven by a task, among every request to the endpoint.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Uri, header, uri::Authority};
use http_body::{Body, Frame, SizeHint};
use hyper::{
    body::Incoming,
    client::conn::{http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

use super::{Protocol, Transport};
use crate::{BoxError, UpstreamBody, lock};

/// How long connecting, TLS handshake included, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle HTTP/1.1 connections kept per endpoint; more are closed.
const MAX_IDLE: usize = 1024;
/// HTTP/2 pings: how often, and how long an answer may take before the connection is given up.
const H2_KEEP_ALIVE: Duration = Duration::from_secs(30);
const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Pool {
    endpoint: SocketAddr,
    authority: Authority,
    transport: Transport,
    conns: Conns,
}

enum Conns {
    /// Idle connections, the most recently used last: they are the likeliest to be open.
    Http1(Mutex<Vec<Idle>>),
    Http2(Http2Shared),
}

/// The HTTP/2 connection every request to the endpoint shares.
struct Http2Shared {
    /// The connection, numbered so that a request replaces only the one it failed on.
    current: Mutex<Option<(u64, http2::SendRequest<UpstreamBody>)>>,
    /// One handshake at a time.
    connecting: tokio::sync::Mutex<Connecting>,
}

#[derive(Default)]
struct Connecting {
    made: u64,
    /// When the last handshake failed, and why: requests that waited for it fail at once
    /// rather than each trying in turn.
    failed: Option<(Instant, String)>,
}

struct Idle {
    conn: Http1Conn,
    since: Instant,
}

/// An HTTP/1.1 connection: where requests go in, and the I/O that whoever uses it drives.
pub struct Http1Conn {
    sender: http1::SendRequest<UpstreamBody>,
    /// hyper's connection future (with upgrades), boxed because its type cannot be named;
    /// None once it has ended.
    io: Option<Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>>,
}

impl Http1Conn {
    /// Drives the connection's I/O. False once it has ended.
    fn poll_io(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(io) = &mut self.io else { return false };
        match io.as_mut().poll(cx) {
            Poll::Pending => true,
            Poll::Ready(ended) => {
                if let Err(e) = ended {
                    tracing::debug!("upstream connection: {e}");
                }
                // Dropped at once: requests still queued in it fail, giving their message
                // back, only when it is gone.
                self.io = None;
                false
            }
        }
    }

    /// Whether an idle connection can take a request: driven once, so that it sees a close
    /// by the backend and settles the exchange before.
    fn usable(&mut self) -> bool {
        self.poll_io(&mut Context::from_waker(Waker::noop())) && self.sender.is_ready()
    }
}

impl Pool {
    pub(super) fn new(endpoint: SocketAddr, transport: Transport, protocol: Protocol) -> Arc<Self> {
        let authority = Authority::try_from(endpoint.to_string()).expect("a socket address is a URI authority");
        let conns = match protocol {
            Protocol::Http1 => Conns::Http1(Mutex::new(Vec::new())),
            Protocol::Http2 => Conns::Http2(Http2Shared {
                current: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(Connecting::default()),
            }),
        };
        Arc::new(Self { endpoint, authority, transport, conns })
    }

    pub fn endpoint(&self) -> SocketAddr {
        self.endpoint
    }

    /// Sends `req` (its URI's path and query are used) on a pooled connection, or a new one.
    pub async fn send(self: &Arc<Self>, mut req: Request<UpstreamBody>) -> Result<Response<PooledBody>, BoxError> {
        let path = req.uri().path_and_query().cloned().unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        match &self.conns {
            Conns::Http1(idle) => {
                // Origin-form, and a Host for HTTP/1.0 clients that sent none.
                *req.uri_mut() = Uri::from(path);
                *req.version_mut() = http::Version::HTTP_11;
                // `te: trailers` is for HTTP/2 (gRPC); HTTP/1.1 needs no TE from us.
                req.headers_mut().remove(header::TE);
                if !req.headers().contains_key(header::HOST)
                    && let Ok(host) = HeaderValue::from_str(self.authority.as_str())
                {
                    req.headers_mut().insert(header::HOST, host);
                }
                self.send_http1(idle, req).await
            }
            Conns::Http2(shared) => {
                let scheme = match self.transport {
                    Transport::Plain => http::uri::Scheme::HTTP,
                    Transport::Tls { .. } => http::uri::Scheme::HTTPS,
                };
                // The client's host travels as :authority (RFC 9113 §8.3.1), not as Host.
                let host = req.headers_mut().remove(header::HOST);
                let authority = host.and_then(|h| Authority::try_from(h.as_bytes()).ok());
                let mut parts = http::uri::Parts::default();
                parts.scheme = Some(scheme);
                parts.authority = Some(authority.unwrap_or_else(|| self.authority.clone()));
                parts.path_and_query = Some(path);
                *req.uri_mut() = Uri::from_parts(parts)?;
                *req.version_mut() = http::Version::HTTP_2;
                self.send_http2(shared, req).await
            }
        }
    }

    async fn send_http1(
        self: &Arc<Self>,
        idle: &Mutex<Vec<Idle>>,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, BoxError> {
        // Each turn takes an idle connection off the pool or opens one, so this ends.
        loop {
            let taken = take_idle(idle);
            let reused = taken.is_some();
            let mut conn = match taken {
                Some(c) => c,
                // Boxed: connecting (TLS above all) would make every request's future larger.
                None => Box::pin(self.connect_http1()).await?,
            };
            let mut response = std::pin::pin!(conn.sender.try_send_request(req));
            // The connection writes the request and reads the response when driven; once it
            // ends, the response future holds its error.
            let result = std::future::poll_fn(|cx| {
                conn.poll_io(cx);
                response.as_mut().poll(cx)
            })
            .await;
            match result {
                Ok(response) => {
                    let held = if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                        // The upgraded stream is handed over when the connection future ends.
                        conn.io.take().map(tokio::spawn);
                        None
                    } else {
                        conn.io.is_some().then(|| (self.clone(), conn))
                    };
                    return Ok(response.map(|body| PooledBody::new(body, held)));
                }
                Err(mut e) => match e.take_message() {
                    // Never written: the idle connection had closed. Another one will do.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }

    async fn send_http2(
        &self,
        shared: &Http2Shared,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, BoxError> {
        let mut retried = false;
        loop {
            let open = lock(&shared.current).clone().filter(|(_, s)| !s.is_closed());
            let (fresh, (number, mut sender)) = match open {
                Some(c) => (false, c),
                None => (true, Box::pin(self.connect_http2(shared)).await?),
            };
            match sender.try_send_request(req).await {
                Ok(response) => return Ok(response.map(|body| PooledBody::new(body, None))),
                Err(mut e) => match e.take_message() {
                    // The shared connection went away before taking the request: once more,
                    // on the one that replaces it.
                    Some(unsent) if !fresh && !retried => {
                        let mut current = lock(&shared.current);
                        if current.as_ref().is_some_and(|(n, _)| *n == number) {
                            *current = None;
                        }
                        retried = true;
                        req = unsent;
                    }
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }

    /// Keeps a connection whose response has been read for the next request. One still
    /// sending its request body (a backend may answer before reading it all) gets a task
    /// that drives it until it is done: left in the pool undriven, it would stall the client
    /// connection that body comes from.
    fn put(self: Arc<Self>, mut conn: Http1Conn) {
        let Conns::Http1(idle) = &self.conns else { return };
        // Usually the exchange settled while the response was read; otherwise one turn of
        // the connection may settle it.
        if !conn.sender.is_ready() && !conn.poll_io(&mut Context::from_waker(Waker::noop())) {
            return;
        }
        if conn.sender.is_ready() {
            let mut idle = lock(idle);
            if idle.len() < MAX_IDLE {
                idle.push(Idle { conn, since: Instant::now() });
            }
            return;
        }
        tokio::spawn(async move {
            let ready = std::future::poll_fn(|cx| {
                if !conn.poll_io(cx) {
                    Poll::Ready(false)
                } else if conn.sender.is_ready() {
                    Poll::Ready(true)
                } else {
                    Poll::Pending
                }
            });
            if ready.await {
                self.put(conn);
            }
        });
    }

    /// Drops connections idle for longer than `timeout`, or closed. True if none is left.
    pub(super) fn expire(&self, timeout: Duration) -> bool {
        match &self.conns {
            Conns::Http1(idle) => {
                let mut idle = lock(idle);
                idle.retain_mut(|i| i.since.elapsed() < timeout && i.conn.usable());
                idle.is_empty()
            }
            Conns::Http2(shared) => {
                let mut current = lock(&shared.current);
                if current.as_ref().is_some_and(|(_, s)| s.is_closed()) {
                    *current = None;
                }
                current.is_none()
            }
        }
    }

    async fn connect_http1(&self) -> Result<Http1Conn, BoxError> {
        let stream = self.connect().await?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        Ok(Http1Conn { sender, io: Some(Box::pin(conn.with_upgrades())) })
    }

    async fn connect_http2(&self, shared: &Http2Shared) -> Result<(u64, http2::SendRequest<UpstreamBody>), BoxError> {
        let asked = Instant::now();
        let mut connecting = shared.connecting.lock().await;
        // Another request may have connected, or failed to, while this one waited.
        if let Some(c) = lock(&shared.current).as_ref().filter(|(_, s)| !s.is_closed()) {
            return Ok(c.clone());
        }
        if let Some((at, why)) = &connecting.failed
            && *at >= asked
        {
            return Err(why.clone().into());
        }
        let handshake = async {
            let stream = self.connect().await?;
            let made = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                // A backend gone without a reset would otherwise hold every request sent to it.
                .keep_alive_interval(H2_KEEP_ALIVE)
                .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT)
                .keep_alive_while_idle(true)
                .handshake(TokioIo::new(stream))
                .await?;
            Ok::<_, BoxError>(made)
        };
        let (sender, conn) = match handshake.await {
            Ok(made) => made,
            Err(e) => {
                connecting.failed = Some((Instant::now(), e.to_string()));
                return Err(e);
            }
        };
        let endpoint = self.endpoint;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%endpoint, "upstream connection: {e}");
            }
        });
        connecting.made += 1;
        connecting.failed = None;
        let made = (connecting.made, sender);
        *lock(&shared.current) = Some(made.clone());
        Ok(made)
    }

    /// TCP, then TLS if the transport asks for it, within [`CONNECT_TIMEOUT`].
    async fn connect(&self) -> Result<Stream, BoxError> {
        let connecting = async {
            let tcp = TcpStream::connect(self.endpoint).await?;
            tcp.set_nodelay(true)?;
            Ok::<_, io::Error>(match &self.transport {
                Transport::Plain => Stream::Plain(tcp),
                Transport::Tls { config, server_name } => {
                    let tls = tokio_rustls::TlsConnector::from(config.clone());
                    Stream::Tls(Box::new(tls.connect(server_name.clone(), tcp).await?))
                }
            })
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(connected) => Ok(connected?),
            Err(_) => Err(format!("connecting to {} timed out", self.endpoint).into()),
        }
    }
}

/// The most recently used idle connection that can take a request. One the backend closed
/// since it was last driven gives its request back unsent (`send_http1` tries another).
fn take_idle(idle: &Mutex<Vec<Idle>>) -> Option<Http1Conn> {
    let mut idle = lock(idle);
    while let Some(i) = idle.pop() {
        if i.conn.sender.is_ready() {
            return Some(i.conn);
        }
    }
    None
}

/// A response body that drives its HTTP/1.1 connection, and gives it back to the pool when
/// read to its end.
pub struct PooledBody {
    inner: Incoming,
    held: Option<(Arc<Pool>, Http1Conn)>,
}

impl PooledBody {
    fn new(inner: Incoming, held: Option<(Arc<Pool>, Http1Conn)>) -> Self {
        let mut body = Self { inner, held };
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    fn release(&mut self) {
        if let Some((pool, conn)) = self.held.take() {
            pool.put(conn);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let mut polled = Pin::new(&mut this.inner).poll_frame(cx);
        // Nothing read yet: drive the connection, then look again.
        if polled.is_pending()
            && let Some((_, conn)) = &mut this.held
        {
            if !conn.poll_io(cx) {
                this.held = None;
            }
            polled = Pin::new(&mut this.inner).poll_frame(cx);
        }
        match &polled {
            Poll::Ready(None) => this.release(),
            // Trailers end a body too; servers stop reading after them.
            Poll::Ready(Some(Ok(frame))) if frame.is_trailers() || this.inner.is_end_stream() => this.release(),
            // A connection whose response broke off is not used again.
            Poll::Ready(Some(Err(_))) => this.held = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection's bytes: plain TCP, or TLS over it.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
