//! HTTP/1.1 connections from clients: read a head, hand the request to the handler, write
//! its response, and again, until either side closes. The request body is read from the
//! connection by whoever holds it (the upstream exchange, which sends it on as it comes).
//!
//! Our own rather than hyper's server: a proxy's exchange is simple enough to write as one
//! loop, whose framing rules are ours to make strict, and which costs less than hyper's
//! dispatcher with its channels and copies of the request future (a proxied request takes
//! about 5% fewer instructions: `bench/load/README.md`).

use std::{
    fmt::Write as _,
    io,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, ready},
};

use arc_swap::ArcSwap;
use atomic_waker::AtomicWaker;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Response, StatusCode, Version, header};
use http_body::{Body as _, Frame, SizeHint};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::oneshot,
};

use super::{
    OnUpgrade, RequestBody, Upgraded,
    request::{RequestHead, parse_request},
    response::{Connection, Framing, encode_refusal, encode_response},
};
use crate::{
    Body, BoxError, Shared,
    config::BindConfig,
    counted::Counted,
    drain::ConnGuard,
    handler::{self, Conn},
    lock, recycle,
    rewind::Rewind,
    server::BindState,
    upstream::codec::{Decoded, Decoder, HeadCache, last_chunk, parse_length},
};

/// A client connection's transport, whatever it is (TCP, TLS).
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {
    /// Bytes handed to the kernel so far, where writes stop in a buffer above it (TLS):
    /// progress that a pending flush does not show. None where a write is the kernel's.
    fn sent(&self) -> Option<u64> {
        None
    }
}

impl Io for tokio::net::TcpStream {}
impl Io for tokio::io::Empty {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for tokio_rustls::server::TlsStream<Counted<T>> {
    fn sent(&self) -> Option<u64> {
        Some(self.get_ref().0.written())
    }
}

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
/// Bodies are copied behind their head up to this size, and written as they are past it.
const COPY_LIMIT: usize = 16 * 1024;
/// Write what has been gathered once it is this large.
const GATHER_LIMIT: usize = 64 * 1024;
/// Before a connection closes with input unread, it reads and drops this much, for this
/// long, so that the client sees the response rather than a reset (RFC 9112 §9.6).
const LINGER_BYTES: usize = 256 * 1024;
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(2);
/// A client that takes in nothing of a response for this long is cut off (nginx's
/// `send_timeout` is 60 s).
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The connection's transport and what has been read from it, shared by the connection
/// and the current request's body.
struct Wire {
    io: Box<dyn Io>,
    read: BytesMut,
    heads: HeadCache,
    /// Where the current request's body stands.
    body: Decoder,
    /// Bytes of `100 Continue` still to write, once the body is first read, and whether
    /// they still need a flush (TLS holds what it writes until flushed).
    continue_left: usize,
    continue_unflushed: bool,
    /// How much of `read` has been looked at for the end of a head.
    scanned: usize,
    /// Counts requests, so that a body reader kept past its request reads nothing more.
    request: u64,
    /// The current request's body reader is still held by someone.
    reading: bool,
    /// The body could not be read to its end: the connection can carry no more requests.
    broken: bool,
}

impl Wire {
    /// A connection's transport, of which `prefix` was read already.
    fn new(io: Box<dyn Io>, prefix: &[u8]) -> Self {
        let mut read = recycle::buffer();
        read.extend_from_slice(prefix);
        Wire {
            io,
            read,
            heads: HeadCache::default(),
            body: Decoder::Done,
            continue_left: 0,
            continue_unflushed: false,
            scanned: 0,
            request: 0,
            reading: false,
            broken: false,
        }
    }

    /// Drops what has arrived of a body nobody reads.
    fn skip_buffered_body(&mut self) {
        while !self.broken && !self.body.is_done() {
            match self.body.decode(&mut self.read) {
                Ok(Decoded::Data(_) | Decoded::Trailers(_)) => {}
                Ok(Decoded::End | Decoded::NeedMore) => break,
                Err(_) => self.broken = true,
            }
        }
    }
}

struct Link {
    wire: Mutex<Wire>,
    /// The connection's task, woken when the request body ends or is dropped.
    conn: AtomicWaker,
    /// Its place in the socket's drain, told of every write and body read (see
    /// [`ConnGuard::progressed`]).
    guard: ConnGuard,
}

/// Serves HTTP/1.1 on `io`, of which `prefix` was read already.
pub async fn serve(
    io: Box<dyn Io>,
    prefix: Bytes,
    conn: Arc<Conn>,
    state: Arc<ArcSwap<BindState>>,
    shared: Arc<Shared>,
) {
    let wire = Mutex::new(Wire::new(io, &prefix));
    let link = Arc::new(Link { wire, conn: AtomicWaker::new(), guard: conn.guard.clone() });
    let mut client = Client { link, conn, shared };
    loop {
        let head = match std::future::poll_fn(|cx| client.link.poll_head(cx)).await {
            Ok(Some(head)) if client.link.guard.head_arrived() => Ok(head),
            // Too late: the connection waited too long for this head and is being ended.
            Ok(Some(_)) => Err(StatusCode::REQUEST_TIMEOUT),
            Ok(None) => return client.link.close(false).await,
            Err(refused) => {
                tracing::debug!(peer = ?client.conn.peer_ip, "request refused: {refused}");
                Err(refused.status())
            }
        };
        let head = match head {
            Ok(head) => head,
            Err(status) => {
                let mut out = BytesMut::new();
                encode_refusal(&mut out, status);
                let _ = client.link.write_out(&mut out).await;
                return client.link.close(true).await;
            }
        };
        // Each request runs to completion on the configuration current when it arrived,
        // its state in memory recycled from the requests before it (`recycle`). The
        // connection's own task keeps only what it needs between requests.
        let config = state.load().config.clone();
        let after;
        (client, after) = recycle::run(Client::exchange, (client, head, config)).await;
        match after {
            After::Next => {}
            After::Close { linger } => return client.link.close(linger).await,
            After::End => return,
        }
    }
}

/// What a connection keeps from one request to the next, lent to each exchange.
struct Client {
    link: Arc<Link>,
    conn: Arc<Conn>,
    shared: Arc<Shared>,
}

/// What becomes of the connection after an exchange.
enum After {
    /// It reads the next request.
    Next,
    /// It closes; with input perhaps unread, lingering first.
    Close { linger: bool },
    /// It is done with: the client left, or the connection was handed on.
    End,
}

impl Client {
    /// One request, handled and its response written; the client is handed back with what
    /// follows.
    async fn exchange((client, head, config): (Self, RequestHead, Arc<BindConfig>)) -> (Self, After) {
        // What is to be written to the client, gathered.
        let mut out = recycle::buffer();
        let after = client.answer(&mut out, head, config).await;
        recycle::give_back(out);
        (client, after)
    }

    async fn answer(&self, out: &mut BytesMut, head: RequestHead, config: Arc<BindConfig>) -> After {
        let Client { link, conn, shared } = self;
        let RequestHead { request, body, keep_alive, expect_continue, upgrade, trailers } = head;
        let mut exchange = Exchange {
            head: request.method() == Method::HEAD,
            http10: request.version() == Version::HTTP_10,
            trailers,
            keep_alive,
            expect_continue,
            switch: None,
        };
        let has_body = !body.is_done();
        let body = if has_body { link.start_body(body, expect_continue) } else { BodyReader(None) };
        let mut request = request.map(|()| RequestBody::Http1(body));
        if upgrade {
            let (tx, rx) = oneshot::channel();
            request.extensions_mut().insert(OnUpgrade::new(rx));
            exchange.switch = Some(tx);
        }
        let mut handling = std::pin::pin!(handler::handle(request, config, conn, shared));
        // A client that hangs up meanwhile ends the exchange, and with it the backend's.
        let handled = std::future::poll_fn(|cx| {
            let polled = handling.as_mut().poll(cx);
            link.unless_gone(cx, polled)
        })
        .await;
        let Some(Ok(response)) = handled else {
            tracing::debug!(peer = ?conn.peer_ip, "the client left before its response");
            return After::End;
        };
        // Draining, or a body its handler left unread: this is the last exchange, and the
        // response says so.
        let last = conn.guard.is_draining() || (has_body && link.body_abandoned());
        exchange.keep_alive &= !last;
        let next = match link.respond(out, response, &mut exchange).await {
            Ok(next) => next,
            Err(e) => {
                tracing::debug!(peer = ?conn.peer_ip, "writing a response failed: {e}");
                return After::End;
            }
        };
        match next {
            Next::Request if has_body && !link.body_finished().await => After::Close { linger: true },
            Next::Request => After::Next,
            // Whoever still sends the body on (a backend answered early) finishes first.
            Next::Close => After::Close { linger: has_body && !link.body_finished().await },
            Next::Switch => {
                if let Some(switch) = exchange.switch {
                    let _ = switch.send(link.take_connection());
                }
                After::End
            }
        }
    }
}

/// What the request said that its response must respect.
struct Exchange {
    head: bool,
    http10: bool,
    trailers: bool,
    keep_alive: bool,
    expect_continue: bool,
    /// Where the connection goes if the response switches protocols.
    switch: Option<oneshot::Sender<Upgraded>>,
}

/// What follows a response.
enum Next {
    Request,
    Close,
    Switch,
}

impl Link {
    /// The next request head: None once the client closes, or drains while no head has begun.
    fn poll_head(&self, cx: &mut Context<'_>) -> Poll<Result<Option<RequestHead>, super::request::Refused>> {
        let mut wire = lock(&self.wire);
        let wire = &mut *wire;
        loop {
            // A head mostly comes whole in one read: parse at once; past that, only once
            // what came since may have ended it.
            if !wire.read.is_empty() && (wire.scanned == 0 || may_end_head(&wire.read, wire.scanned)) {
                if let Some(head) = parse_request(&mut wire.read, &mut wire.heads)? {
                    wire.scanned = 0;
                    return Poll::Ready(Ok(Some(head)));
                }
            } else if wire.read.is_empty() && self.guard.poll_draining(cx) {
                return Poll::Ready(Ok(None));
            }
            wire.scanned = wire.read.len();
            if wire.read.is_empty() && wire.read.capacity() == 0 {
                wire.read = recycle::buffer();
            } else if wire.read.capacity() - wire.read.len() < 1024 {
                wire.read.reserve(8 * 1024);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut wire.io), cx, &mut wire.read) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(Ok(None)),
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => {
                    // Waiting for a head that has not begun: the buffer goes back until it does.
                    if wire.read.is_empty() {
                        recycle::give_back(std::mem::take(&mut wire.read));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Sets the wire up to read a request body; its reader is handed to the request.
    fn start_body(self: &Arc<Self>, body: Decoder, expect_continue: bool) -> BodyReader {
        let mut wire = lock(&self.wire);
        wire.body = body;
        wire.continue_left = if expect_continue { CONTINUE.len() } else { 0 };
        wire.request += 1;
        wire.reading = true;
        BodyReader(Some((self.clone(), wire.request)))
    }

    /// Writes `response`, and tells what follows it.
    async fn respond(&self, out: &mut BytesMut, response: Response<Body>, exchange: &mut Exchange) -> io::Result<Next> {
        let (parts, mut body) = response.into_parts();
        let mut status = parts.status;
        let switching = status == StatusCode::SWITCHING_PROTOCOLS;
        if switching && exchange.switch.is_none() {
            // A switch the client did not ask for (or could not take): nothing to tunnel.
            status = StatusCode::BAD_GATEWAY;
            exchange.keep_alive = false;
        }
        // A status replaced here goes out alone, without the response's fields or body.
        let replaced = status != parts.status;
        let none = HeaderMap::new();
        let headers = if replaced { &none } else { &parts.headers };
        let exact = if replaced { Some(0) } else { body.size_hint().exact() };
        let framing = Framing::of(status, exchange.head, exchange.http10, exact, || declared_length(headers));
        if framing == Framing::Close {
            exchange.keep_alive = false;
        }
        let connection = if status == StatusCode::SWITCHING_PROTOCOLS {
            Connection::Upgrade
        } else if exchange.keep_alive {
            Connection::KeepAlive { http10: exchange.http10 }
        } else {
            Connection::Close
        };
        if exchange.expect_continue {
            // A 100 Continue begun goes out whole first; one never begun, never.
            let mut wire = lock(&self.wire);
            if (1..CONTINUE.len()).contains(&wire.continue_left) {
                out.extend_from_slice(&CONTINUE[CONTINUE.len() - wire.continue_left..]);
            }
            wire.continue_left = 0;
        }
        let connection = encode_response(out, status, headers, framing, connection);
        recycle::give_back_headers(parts.headers);
        let sent = match framing {
            Framing::NoBody(_) => Ok(()),
            _ if replaced => Ok(()),
            _ => self.send_body(out, &mut body, framing, exchange.trailers).await?,
        };
        // Done with the body: from here the connection counts as waiting for its next head
        // (but for a switch, whose tunnel takes it over), and a client that does not read
        // what is left is cut off like an idle one.
        drop(body);
        if connection != Connection::Upgrade {
            self.guard.awaiting_head();
        }
        self.write_out(out).await?;
        Ok(match (sent, connection) {
            (_, Connection::Upgrade) => Next::Switch,
            (Ok(()), Connection::KeepAlive { .. }) => Next::Request,
            _ => Next::Close,
        })
    }

    /// Writes the body after the head gathered in `out`: Err(()) if it ended short or
    /// failed, which ends the connection (the client sees a body cut off).
    async fn send_body(
        &self,
        out: &mut BytesMut,
        body: &mut Body,
        framing: Framing,
        trailers: bool,
    ) -> io::Result<Result<(), ()>> {
        let mut left = match framing {
            Framing::Length(n) => n,
            _ => u64::MAX,
        };
        // A body that tells it has ended is not polled again to hear so.
        while !body.is_end_stream() {
            // Gather what is ready; write only when the body has to wait.
            let frame = match std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    self.write_out(out).await?;
                    // Meanwhile, a client that hangs up ends the exchange (and so the
                    // backend's), rather than a response that may never end.
                    std::future::poll_fn(|cx| {
                        let polled = Pin::new(&mut *body).poll_frame(cx);
                        self.unless_gone(cx, polled)
                    })
                    .await
                    .ok_or(io::ErrorKind::ConnectionAborted)?
                }
            };
            let frame = match frame {
                None => break,
                Some(Ok(frame)) => frame,
                Some(Err(e)) => {
                    tracing::debug!("response body failed: {e}");
                    return Ok(Err(()));
                }
            };
            let data = match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    if let (Ok(fields), Framing::Chunked, true) = (frame.into_trailers(), framing, trailers) {
                        out.extend_from_slice(&last_chunk(&fields));
                        return Ok(Ok(()));
                    }
                    continue;
                }
            };
            if data.is_empty() {
                continue;
            }
            if framing == Framing::Chunked {
                let _ = write!(out, "{:x}\r\n", data.len());
            } else if data.len() as u64 > left {
                tracing::debug!("response body longer than its Content-Length");
                return Ok(Err(()));
            }
            left = left.saturating_sub(data.len() as u64);
            if data.len() <= COPY_LIMIT {
                out.extend_from_slice(&data);
            } else {
                self.write_out(out).await?;
                self.write_all(&data).await?;
            }
            if framing == Framing::Chunked {
                out.extend_from_slice(b"\r\n");
            }
            if out.len() >= GATHER_LIMIT {
                self.write_out(out).await?;
            }
        }
        match framing {
            Framing::Chunked => out.extend_from_slice(&last_chunk(&HeaderMap::new())),
            Framing::Length(_) if left != 0 => {
                tracing::debug!("response body shorter than its Content-Length");
                return Ok(Err(()));
            }
            _ => {}
        }
        Ok(Ok(()))
    }

    /// `polled`, unless it is still pending and the client has left meanwhile (None).
    fn unless_gone<T>(&self, cx: &mut Context<'_>, polled: Poll<T>) -> Poll<Option<T>> {
        match polled {
            Poll::Ready(done) => Poll::Ready(Some(done)),
            Poll::Pending if self.poll_client_gone(cx) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Whether the client closed its side of the connection, or it failed; a half-close
    /// counts as gone, as in hyper's and nginx's defaults. Looked at only once the request
    /// body has all arrived (before, its reader reads; the connection is woken when it
    /// has), and only while nothing the client sent ahead is buffered: a client that
    /// pipelines and then half-closes has its buffered requests answered. When nothing
    /// came it costs no syscall on TCP: a read short of the buffer leaves tokio knowing the
    /// socket is drained.
    fn poll_client_gone(&self, cx: &mut Context<'_>) -> bool {
        let mut wire = lock(&self.wire);
        let wire = &mut *wire;
        if !wire.body.is_done() {
            self.conn.register(cx.waker());
            return false;
        }
        if !wire.read.is_empty() {
            return false;
        }
        if wire.read.capacity() < 1024 {
            wire.read.reserve(8 * 1024);
        }
        matches!(tokio_util::io::poll_read_buf(Pin::new(&mut wire.io), cx, &mut wire.read), Poll::Ready(Ok(0) | Err(_)))
    }

    /// Writes and empties `out`, and flushes (TLS holds what it is given until then).
    async fn write_out(&self, out: &mut BytesMut) -> io::Result<()> {
        if !out.is_empty() {
            self.write_all(out).await?;
            out.clear();
        }
        Ok(())
    }

    /// Writes `bytes` and flushes. A client that takes nothing for [`SEND_TIMEOUT`] is cut
    /// off; the timer exists only while a write waits, and starts again whenever bytes are
    /// taken, by the transport or, under TLS, by the kernel as a flush goes on.
    async fn write_all(&self, mut bytes: &[u8]) -> io::Result<()> {
        let mut stalled: Option<Pin<Box<tokio::time::Sleep>>> = None;
        let mut sent = lock(&self.wire).io.sent();
        std::future::poll_fn(|cx| {
            let mut wire = lock(&self.wire);
            let mut taken = false;
            let written = loop {
                if bytes.is_empty() {
                    break Pin::new(&mut wire.io).poll_flush(cx);
                }
                match Pin::new(&mut wire.io).poll_write(cx, bytes) {
                    Poll::Ready(Ok(0)) => break Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        bytes = &bytes[n..];
                        taken = true;
                    }
                    other => break other.map_ok(|_| ()),
                }
            };
            // Under TLS a flush moves bytes too, which only the transport's count shows.
            let now = wire.io.sent();
            if taken || now != sent {
                sent = now;
                stalled = None;
                self.guard.progressed();
            }
            if written.is_pending() {
                let timer = stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(SEND_TIMEOUT)));
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
                }
            }
            written
        })
        .await
    }

    /// Waits for whoever reads the request body (a backend may answer before it has it
    /// all) to finish or drop it; true if it was read to its end, so that the next request
    /// can follow. A body nobody wanted is read on only as far as it is already here.
    async fn body_finished(&self) -> bool {
        std::future::poll_fn(|cx| {
            self.conn.register(cx.waker());
            let wire = lock(&self.wire);
            if wire.body.is_done() || !wire.reading { Poll::Ready(()) } else { Poll::Pending }
        })
        .await;
        let mut wire = lock(&self.wire);
        wire.skip_buffered_body();
        !wire.broken && wire.body.is_done()
    }

    /// Whether nobody reads the request body any more and it has not all come.
    fn body_abandoned(&self) -> bool {
        let mut wire = lock(&self.wire);
        if wire.reading {
            return false;
        }
        wire.skip_buffered_body();
        wire.broken || !wire.body.is_done()
    }

    /// The connection and what was read past the 101's request, for the tunnel. A stale
    /// body reader is left a transport that has ended.
    fn take_connection(&self) -> Upgraded {
        let mut wire = lock(&self.wire);
        let io = std::mem::replace(&mut wire.io, Box::new(tokio::io::empty()));
        Rewind::new(std::mem::take(&mut wire.read).freeze(), io)
    }

    /// Ends the connection. With input perhaps unread (`linger`), reads and drops some
    /// first, so that closing with it unread does not reset the response away.
    async fn close(&self, linger: bool) {
        // Requests sent ahead, unread, would reset the connection as much as a body would.
        let linger = linger || !lock(&self.wire).read.is_empty();
        let shutdown = std::future::poll_fn(|cx| Pin::new(&mut lock(&self.wire).io).poll_shutdown(cx));
        let _ = tokio::time::timeout(LINGER_TIME, shutdown).await;
        if linger {
            let mut seen = 0;
            let drain = std::future::poll_fn(|cx| {
                let mut wire = lock(&self.wire);
                let wire = &mut *wire;
                loop {
                    wire.read.clear();
                    if wire.read.capacity() < 16 * 1024 {
                        wire.read.reserve(16 * 1024);
                    }
                    match ready!(tokio_util::io::poll_read_buf(Pin::new(&mut wire.io), cx, &mut wire.read)) {
                        Ok(0) | Err(_) => return Poll::Ready(()),
                        Ok(n) => seen += n,
                    }
                    if seen >= LINGER_BYTES {
                        return Poll::Ready(());
                    }
                }
            });
            let _ = tokio::time::timeout(LINGER_TIME, drain).await;
        }
    }
}

/// Whether the head may be complete: a blank line has arrived since `scanned` bytes were
/// looked at, or the buffer is full. Parsing on every read would make a client sending
/// its head one byte at a time cost quadratic time.
fn may_end_head(read: &[u8], scanned: usize) -> bool {
    if read.len() >= super::request::MAX_HEAD {
        return true;
    }
    let from = scanned.saturating_sub(3);
    read[from..].windows(2).any(|w| w == b"\n\n") || read[from..].windows(3).any(|w| w == b"\n\r\n")
}

/// The Content-Length a response declares, for a body that does not know its own.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    parse_length(headers.get(header::CONTENT_LENGTH)?.as_bytes())
}

/// A request body, read from the client's connection as it is polled: the connection, and
/// which of its requests this is. `None` when the request has none, or once it has been read.
pub struct BodyReader(Option<(Arc<Link>, u64)>);

impl BodyReader {
    /// Lets go of the connection, telling it (under the lock, so that its wait cannot
    /// miss it) that nobody reads this body any more.
    fn finish(&mut self) {
        if let Some((link, request)) = self.0.take() {
            let mut wire = lock(&link.wire);
            if wire.request == request {
                wire.reading = false;
            }
            drop(wire);
            link.conn.wake();
        }
    }
}

impl Link {
    /// Hands over a frame; the connection, perhaps waiting for the body's end, hears of it.
    fn deliver(&self, wire: &Wire, frame: Frame<Bytes>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if wire.body.is_done() {
            self.conn.wake();
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn poll_body(&self, request: u64, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut wire = lock(&self.wire);
        let wire = &mut *wire;
        if wire.request != request {
            return Poll::Ready(None);
        }
        // The client waits for leave to send its body, given when the body is first wanted.
        while wire.continue_left > 0 {
            let sent = &CONTINUE[CONTINUE.len() - wire.continue_left..];
            match ready!(Pin::new(&mut wire.io).poll_write(cx, sent)) {
                Ok(n) if n > 0 => wire.continue_left -= n,
                _ => {
                    wire.broken = true;
                    return Poll::Ready(Some(Err("the client connection failed".into())));
                }
            }
            wire.continue_unflushed = wire.continue_left == 0;
        }
        if wire.continue_unflushed {
            if let Err(e) = ready!(Pin::new(&mut wire.io).poll_flush(cx)) {
                wire.broken = true;
                return Poll::Ready(Some(Err(e.into())));
            }
            wire.continue_unflushed = false;
        }
        loop {
            match wire.body.decode(&mut wire.read) {
                Ok(Decoded::Data(data)) => return self.deliver(wire, Frame::data(data)),
                Ok(Decoded::Trailers(fields)) => return self.deliver(wire, Frame::trailers(fields)),
                Ok(Decoded::End) => return Poll::Ready(None),
                Ok(Decoded::NeedMore) => {}
                Err(e) => {
                    wire.broken = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
            if wire.read.capacity() - wire.read.len() < 4096 {
                wire.read.reserve(16 * 1024);
            }
            match ready!(tokio_util::io::poll_read_buf(Pin::new(&mut wire.io), cx, &mut wire.read)) {
                Ok(0) => {
                    wire.broken = true;
                    return Poll::Ready(Some(Err("the client closed the connection before the body ended".into())));
                }
                // A body still coming in after its response is activity, not an idle wait.
                Ok(_) => self.guard.progressed(),
                Err(e) => {
                    wire.broken = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }
}

impl http_body::Body for BodyReader {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some((link, request)) = &self.0 else { return Poll::Ready(None) };
        let polled = ready!(link.poll_body(*request, cx));
        if !matches!(polled, Some(Ok(_))) {
            self.finish();
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.size_hint().exact() == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        let Some((link, request)) = &self.0 else { return SizeHint::with_exact(0) };
        let wire = lock(&link.wire);
        if wire.request != *request {
            return SizeHint::with_exact(0);
        }
        wire.body.exact().map_or_else(SizeHint::new, SizeHint::with_exact)
    }
}

impl Drop for BodyReader {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::ReadBuf;

    use super::*;
    use crate::drain::Conns;

    /// A transport like TLS's: it takes whatever is written into its buffer at once, and a
    /// flush hands `rate` bytes a second to the kernel, saying how many it has (or not).
    struct Buffering {
        held: usize,
        sent: u64,
        rate: usize,
        tells: bool,
        tick: Pin<Box<tokio::time::Sleep>>,
    }

    impl AsyncRead for Buffering {
        fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, _: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Buffering {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.held += buf.len();
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            while self.held > 0 && self.rate > 0 && self.tick.as_mut().poll(cx).is_ready() {
                let n = self.held.min(self.rate);
                self.held -= n;
                self.sent += n as u64;
                let next = tokio::time::Instant::now() + Duration::from_secs(1);
                self.tick.as_mut().reset(next);
            }
            if self.held == 0 { Poll::Ready(Ok(())) } else { Poll::Pending }
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl Io for Buffering {
        fn sent(&self) -> Option<u64> {
            self.tells.then_some(self.sent)
        }
    }

    /// How long writing 64 KiB takes, or that it timed out.
    async fn write_64k(rate: usize, tells: bool) -> io::Result<Duration> {
        let tick = Box::pin(tokio::time::sleep(Duration::from_secs(1)));
        let io = Buffering { held: 0, sent: 0, rate, tells, tick };
        let guard = Conns::new().guard();
        let link = Link { wire: Mutex::new(Wire::new(Box::new(io), b"")), conn: AtomicWaker::new(), guard };
        let started = tokio::time::Instant::now();
        link.write_all(&[0; 64 * 1024]).await?;
        Ok(started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_flush_that_goes_on_is_not_cut_off_and_one_that_stalls_is() {
        // 1 KiB a second: over a minute for the whole buffer, well past the send timeout.
        let took = write_64k(1024, true).await.expect("a client still taking bytes is served");
        assert!(took >= Duration::from_secs(60), "{took:?}");
        let stalled = write_64k(0, true).await.expect_err("a client that takes nothing is cut off");
        assert_eq!(stalled.kind(), io::ErrorKind::TimedOut);
        // Without the count, the same slow flush would have been cut off.
        let untold = write_64k(1024, false).await.expect_err("progress a transport does not tell is not seen");
        assert_eq!(untold.kind(), io::ErrorKind::TimedOut);
    }
}
