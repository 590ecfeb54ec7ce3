//! The connections to one endpoint.
//!
//! HTTP/1.1 connections (see `http1`) are kept idle here between exchanges. One the backend
//! closed while it sat idle is noticed when taken, before a request is written to it; one
//! that fails before any answer came gives the request to another when that is safe.
//!
//! HTTP/2 shares one connection, driven by a task, among every request to the endpoint.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{
    Method, Request, Response, StatusCode, Uri, header,
    uri::{Authority, PathAndQuery},
};
use http_body::{Body, Frame, SizeHint};
use hyper::{body::Incoming, client::conn::http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio_util::either::Either;

use super::{
    Protocol, Transport,
    codec::{self, RequestFraming},
    http1::{Http1Body, Http1Conn, Upgraded},
    stream::Stream,
};
use crate::{BoxError, UpstreamBody, lock, recycle, ticks};

/// How long connecting, TLS handshake included, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle HTTP/1.1 connections kept per endpoint; more are closed.
const MAX_IDLE: usize = 1024;
/// How long the rest of a request body may take once its response has been read; the
/// connection is closed after that.
const FINISH_TIMEOUT: Duration = Duration::from_secs(60);
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
    conn: Box<Http1Conn>,
    /// Sweeps that found it idle.
    sweeps: u32,
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
    /// Not an `async fn`: the request is made ready before the future is, so that the
    /// future does not carry it.
    pub fn send(
        self: &Arc<Self>,
        mut req: Request<UpstreamBody>,
    ) -> impl Future<Output = Result<Response<PooledBody>, BoxError>> + Send + '_ {
        match &self.conns {
            Conns::Http1(idle) => Either::Left(self.send_http1(idle, Http1Request::new(req, &self.authority))),
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
                parts.path_and_query =
                    Some(req.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")));
                let uri = Uri::from_parts(parts);
                *req.version_mut() = http::Version::HTTP_2;
                // Boxed: hyper's exchange is large, and HTTP/1.1 requests should not carry its size.
                Either::Right(Box::pin(self.send_http2(shared, uri, req)))
            }
        }
    }

    async fn send_http1(
        self: &Arc<Self>,
        idle: &Mutex<Vec<Idle>>,
        req: Http1Request,
    ) -> Result<Response<PooledBody>, BoxError> {
        let Http1Request { head, body, framing, is_head, upgrade, idempotent } = req;
        let mut body = Some(body);
        // Each turn takes an idle connection off the pool or opens one, so this ends.
        loop {
            let (mut conn, reused) = match take_idle(idle) {
                Some(c) => (c, true),
                // Boxed: connecting (TLS above all) would make every request's future larger.
                None => (Box::new(Http1Conn::new(Box::pin(self.connect()).await?)), false),
            };
            conn.start(head.clone(), body.take().map(|b| (b, framing)));
            match std::future::poll_fn(|cx| conn.poll_head(cx, is_head, upgrade)).await {
                Ok(response) => {
                    let body = if response.status == StatusCode::SWITCHING_PROTOCOLS {
                        PooledBody(Kind::Switched(Some(conn)))
                    } else {
                        PooledBody(Kind::Http1(Http1Body::new(conn, self.clone(), response.body, response.keep_alive)))
                    };
                    let mut answer = Response::new(body);
                    *answer.status_mut() = response.status;
                    *answer.headers_mut() = response.headers;
                    return Ok(answer);
                }
                // Most likely closed by the backend as it was taken: once more, on another.
                Err(e) => match conn.retry(idempotent) {
                    Some(unsent) if reused => body = unsent,
                    _ => return Err(e),
                },
            }
        }
    }

    async fn send_http2(
        &self,
        shared: &Http2Shared,
        uri: Result<Uri, http::uri::InvalidUriParts>,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, BoxError> {
        *req.uri_mut() = uri?;
        let mut retried = false;
        loop {
            let open = lock(&shared.current).clone().filter(|(_, s)| !s.is_closed());
            let (fresh, (number, mut sender)) = match open {
                Some(c) => (false, c),
                None => (true, Box::pin(self.connect_http2(shared)).await?),
            };
            match sender.try_send_request(req).await {
                Ok(response) => return Ok(response.map(|body| PooledBody(Kind::Http2(body)))),
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
    /// that sends the rest: left in the pool undriven, it would stall the client connection
    /// that body comes from.
    pub(super) fn put(self: Arc<Self>, mut conn: Box<Http1Conn>) {
        let Conns::Http1(idle) = &self.conns else { return };
        if !conn.sending() {
            let mut idle = lock(idle);
            if idle.len() < MAX_IDLE {
                idle.push(Idle { conn, sweeps: 0 });
            }
            return;
        }
        tokio::spawn(async move {
            let sent = tokio::time::timeout(FINISH_TIMEOUT, std::future::poll_fn(|cx| conn.poll_send(cx))).await;
            if matches!(sent, Ok(Ok(()))) {
                self.put(conn);
            }
        });
    }

    /// Drops connections closed, or found idle by `limit` sweeps with this one. True if
    /// none is left.
    pub(super) fn expire(&self, limit: u32) -> bool {
        match &self.conns {
            Conns::Http1(idle) => {
                let mut idle = lock(idle);
                idle.retain_mut(|i| {
                    i.sweeps += 1;
                    i.sweeps < limit && i.conn.usable()
                });
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
                .timer(ticks::Timer)
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

/// A request for an HTTP/1.1 connection, in origin form, its head written once: a retry
/// writes the same bytes.
struct Http1Request {
    head: Bytes,
    body: UpstreamBody,
    framing: RequestFraming,
    is_head: bool,
    upgrade: bool,
    idempotent: bool,
}

impl Http1Request {
    /// `authority` is the Host for a request that has none.
    fn new(req: Request<UpstreamBody>, authority: &Authority) -> Self {
        let (parts, body) = req.into_parts();
        let target = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
        // Written into a lent buffer, whose memory comes back for the next one once this
        // head, written, is dropped.
        let mut buf = recycle::buffer();
        let (end, exact) = (body.is_end_stream(), body.size_hint().exact());
        let encoded =
            codec::encode_request(&mut buf, &parts.method, target, &parts.headers, authority.as_str(), end, exact);
        recycle::give_back_headers(parts.headers);
        let head = buf.split().freeze();
        recycle::give_back(buf);
        Self {
            head,
            body,
            framing: encoded.framing,
            is_head: parts.method == Method::HEAD,
            upgrade: encoded.upgrade,
            idempotent: parts.method.is_idempotent(),
        }
    }
}

/// The most recently used idle connection that can take a request.
fn take_idle(idle: &Mutex<Vec<Idle>>) -> Option<Box<Http1Conn>> {
    let mut idle = lock(idle);
    while let Some(mut i) = idle.pop() {
        if i.conn.usable() {
            return Some(i.conn);
        }
    }
    None
}

/// A response body: from an HTTP/1.1 connection, which it drives and gives back to the pool
/// when read to its end, or from the shared HTTP/2 one; none for a switch of protocols,
/// whose connection [`PooledBody::upgraded`] hands over.
pub struct PooledBody(Kind);

enum Kind {
    Http1(Http1Body),
    Http2(Incoming),
    Switched(Option<Box<Http1Conn>>),
}

impl PooledBody {
    /// The connection of a 101 (Switching Protocols) answer, once.
    pub fn upgraded(&mut self) -> Option<Upgraded> {
        match &mut self.0 {
            Kind::Switched(conn) => conn.take().map(|c| c.into_upgraded()),
            _ => None,
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().0 {
            Kind::Http1(body) => Pin::new(body).poll_frame(cx),
            Kind::Http2(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Kind::Switched(_) => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Http1(body) => body.is_end_stream(),
            Kind::Http2(body) => body.is_end_stream(),
            Kind::Switched(_) => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Http1(body) => body.size_hint(),
            Kind::Http2(body) => body.size_hint(),
            Kind::Switched(_) => SizeHint::with_exact(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    /// A connection to `listener`, whose end is kept in `held`, or dropped with `close`.
    async fn conn(listener: &TcpListener, held: &mut Vec<TcpStream>, close: bool) -> Box<Http1Conn> {
        let stream = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        if close {
            drop(accepted);
            // Until the FIN has arrived, the connection still looks usable.
            stream.readable().await.unwrap();
        } else {
            held.push(accepted);
        }
        Box::new(Http1Conn::new(Stream::Plain(stream)))
    }

    #[tokio::test]
    async fn idle_connections_go_at_their_fourth_sweep_and_closed_ones_at_the_next() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = Pool::new(listener.local_addr().unwrap(), Transport::Plain, Protocol::Http1);
        let Conns::Http1(idle) = &pool.conns else { unreachable!() };
        let mut held = Vec::new();
        pool.clone().put(conn(&listener, &mut held, false).await);
        for sweep in 1..4 {
            assert!(!pool.expire(4), "still kept at sweep {sweep}");
        }
        assert!(pool.expire(4), "closed at the fourth sweep");

        pool.clone().put(conn(&listener, &mut held, false).await);
        pool.clone().put(conn(&listener, &mut held, true).await);
        assert!(!pool.expire(4));
        assert_eq!(lock(idle).len(), 1, "the connection the backend closed is gone at once");
    }
}
