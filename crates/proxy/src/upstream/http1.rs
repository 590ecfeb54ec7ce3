//! An HTTP/1.1 connection to a backend, speaking through `codec`.
//!
//! It carries one exchange at a time and has no task of its own: the request using it
//! writes the head and body and reads the response head, then the response body drives it
//! as the client reads, sending what is left of the request body too (an exchange may be
//! full duplex). That saves a task wake-up and a channel hop each way. The connection goes
//! back to the pool when the response has been read to its end; a body dropped before then
//! closes it.

use std::{
    collections::VecDeque,
    io::{self, IoSlice},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker, ready},
};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncWrite;

use super::{
    codec::{self, Decoded, Decoder, HeadCache, RequestFraming, ResponseHead},
    pool::Pool,
    stream::Stream,
};
use crate::{BoxError, UpstreamBody, rewind::Rewind};

/// Room made in the read buffer before each read.
const READ_SIZE: usize = 8 * 1024;
/// Request body bytes queued for writing before more is taken from the client.
const QUEUE_LIMIT: usize = 64 * 1024;
/// Buffers written with one call.
const MAX_SLICES: usize = 16;

pub struct Http1Conn {
    io: Stream,
    read: BytesMut,
    heads: HeadCache,
    /// Bytes to write, in order, and how many.
    out: VecDeque<Bytes>,
    queued: usize,
    /// The request body still to send.
    sending: Option<Sending>,
    /// What decides if a failed request may be sent again: whether the current exchange has
    /// read any of its response, taken any of its request body, and how much of its head is
    /// still to be written.
    received: bool,
    body_taken: bool,
    head_left: usize,
    /// Why writing failed: the response may still come, but the connection is done after it.
    write_failed: Option<io::Error>,
}

struct Sending {
    body: UpstreamBody,
    /// Bytes still to send for a Content-Length body; None for chunked.
    left: Option<u64>,
}

/// Why a request could not be sent.
pub enum SendError {
    /// The client's body failed, or did not match its length: the exchange is over.
    Body(BoxError),
    /// Writing to the backend failed: it may have answered before it stopped reading.
    Io(io::Error),
}

/// A connection switched to another protocol (101): the bytes already read, then the rest.
pub type Upgraded = Rewind<Stream>;

impl Http1Conn {
    pub fn new(io: Stream) -> Self {
        Self {
            io,
            read: BytesMut::with_capacity(READ_SIZE),
            heads: HeadCache::default(),
            out: VecDeque::with_capacity(4),
            queued: 0,
            sending: None,
            received: false,
            body_taken: false,
            head_left: 0,
            write_failed: None,
        }
    }

    /// Starts an exchange: `head`, then `body` framed as it says.
    pub fn start(&mut self, head: Bytes, body: Option<(UpstreamBody, RequestFraming)>) {
        self.head_left = head.len();
        self.queue(head);
        self.sending = match body {
            Some((body, RequestFraming::Length(n))) if n > 0 => Some(Sending { body, left: Some(n) }),
            Some((body, RequestFraming::Chunked)) => Some(Sending { body, left: None }),
            _ => None,
        };
        self.received = false;
        self.body_taken = false;
    }

    /// Whether an idle connection can take a request: looked at once, so that a close by the
    /// backend shows. With nothing readable, tokio answers from its cached readiness.
    pub fn usable(&mut self) -> bool {
        self.read.is_empty()
            && self.write_failed.is_none()
            && self.io.quiet().unwrap_or_else(|| self.poll_fill(&mut Context::from_waker(Waker::noop())).is_pending())
    }

    /// Whether the request is still being sent.
    pub fn sending(&self) -> bool {
        self.sending.is_some() || !self.out.is_empty()
    }

    /// Whether the whole request head has been written: a connection that answered before
    /// is not used again, since the rest of the head would read as another request.
    pub fn head_written(&self) -> bool {
        self.head_left == 0
    }

    /// After a failure, whether the request may go again on another connection, and with
    /// what body (None for none): not if any answer came or any of the body was taken, and
    /// once the backend may have read the whole head, only if the request is `idempotent`.
    pub fn retry(&mut self, idempotent: bool) -> Option<Option<UpstreamBody>> {
        if self.received || self.body_taken || (self.head_written() && !idempotent) {
            return None;
        }
        Some(self.sending.take().map(|s| s.body))
    }

    /// Writes what is queued and takes more of the request body, until all is sent or it
    /// has to wait.
    pub fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        let sent = self.poll_send_inner(cx);
        match &sent {
            Poll::Ready(Err(SendError::Io(e))) => {
                // Nothing more goes out; a body none of which was taken is kept for a retry.
                self.write_failed = Some(io::Error::new(e.kind(), e.to_string()));
                self.out.clear();
                self.queued = 0;
                if self.body_taken {
                    self.sending = None;
                }
            }
            Poll::Ready(Err(SendError::Body(_))) => {
                self.out.clear();
                self.queued = 0;
                self.sending = None;
            }
            _ => {}
        }
        sent
    }

    fn poll_send_inner(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        loop {
            // Take what the body has ready, so that small bodies go out with the head.
            while self.queued < QUEUE_LIMIT
                && let Some(s) = &mut self.sending
            {
                let Poll::Ready(frame) = Pin::new(&mut s.body).poll_frame(cx) else { break };
                self.body_taken = true;
                let queued = match frame {
                    None => self.finish_body(),
                    Some(Err(e)) => Err(e),
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => self.queue_data(data),
                        Err(_trailers) => self.finish_body(),
                    },
                };
                queued.map_err(SendError::Body)?;
            }
            if self.out.is_empty() {
                ready!(Pin::new(&mut self.io).poll_flush(cx)).map_err(SendError::Io)?;
                return if self.sending.is_some() { Poll::Pending } else { Poll::Ready(Ok(())) };
            }
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let n = self.out.iter().zip(&mut slices).map(|(b, s)| *s = IoSlice::new(b)).count();
            let written = ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..n]));
            let mut written = written.map_err(SendError::Io)?;
            if written == 0 {
                return Poll::Ready(Err(SendError::Io(io::ErrorKind::WriteZero.into())));
            }
            self.queued -= written;
            self.head_left = self.head_left.saturating_sub(written);
            while written > 0 {
                let front = self.out.front_mut().expect("written bytes were queued");
                if written < front.len() {
                    let _ = front.split_to(written);
                    break;
                }
                written -= front.len();
                self.out.pop_front();
            }
        }
    }

    fn queue(&mut self, bytes: Bytes) {
        self.queued += bytes.len();
        self.out.push_back(bytes);
    }

    fn queue_data(&mut self, data: Bytes) -> Result<(), BoxError> {
        let Some(s) = &mut self.sending else { return Ok(()) };
        if data.is_empty() {
            return Ok(());
        }
        match &mut s.left {
            Some(left) => {
                *left = left.checked_sub(data.len() as u64).ok_or("the request body is longer than its length")?;
                let done = *left == 0;
                self.queue(data);
                if done {
                    self.sending = None;
                }
            }
            None => {
                self.queue(codec::chunk_size_line(data.len()));
                self.queue(data);
                self.queue(Bytes::from_static(b"\r\n"));
            }
        }
        Ok(())
    }

    /// Ends the body. A client's trailers are not passed on: they would reach the backend
    /// past every header policy (X-Forwarded-*, what ExternalAuth grants, header filters),
    /// and nginx does not pass them either.
    fn finish_body(&mut self) -> Result<(), BoxError> {
        let Some(s) = self.sending.take() else { return Ok(()) };
        match s.left {
            Some(0) => Ok(()),
            Some(_) => Err("the request body is shorter than its length".into()),
            None => {
                self.queue(Bytes::from_static(b"0\r\n\r\n"));
                Ok(())
            }
        }
    }

    /// Reads more of the response; `Ok(0)` when the backend has closed the connection.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < READ_SIZE / 2 {
            self.read.reserve(READ_SIZE);
        }
        let n = ready!(tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read))?;
        self.received |= n > 0;
        Poll::Ready(Ok(n))
    }

    /// Sends the request and reads the response head, passing over interim (1xx) ones.
    pub fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        head: bool,
        upgrade: bool,
    ) -> Poll<Result<ResponseHead, BoxError>> {
        if self.write_failed.is_none()
            && self.sending()
            && let Poll::Ready(Err(SendError::Body(e))) = self.poll_send(cx)
        {
            return Poll::Ready(Err(e));
        }
        loop {
            // Mostly nothing has come yet when first polled: read before parsing nothing.
            if !self.read.is_empty()
                && let Some(response) = codec::parse_response(&mut self.read, &mut self.heads, head, upgrade)?
            {
                if response.status.is_informational() && response.status != http::StatusCode::SWITCHING_PROTOCOLS {
                    continue;
                }
                return Poll::Ready(Ok(response));
            }
            match ready!(self.poll_fill(cx)) {
                Ok(0) => return Poll::Ready(Err(self.failure("the backend closed the connection".into()))),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(self.failure(e.into()))),
            }
        }
    }

    /// Why the exchange failed, reading having failed with `read`: a failed write before is
    /// the cause.
    fn failure(&self, read: BoxError) -> BoxError {
        match &self.write_failed {
            Some(w) => io::Error::new(w.kind(), w.to_string()).into(),
            None => read,
        }
    }

    /// The switched connection. An upgrade request has no body; anything still unsent of
    /// one is dropped.
    pub fn into_upgraded(self) -> Upgraded {
        Rewind::new(self.read.freeze(), self.io)
    }
}

/// A response body read from its HTTP/1.1 connection, which goes back to `pool` when the
/// body has been read to its end and the connection may carry another exchange.
pub struct Http1Body {
    /// Boxed, as it is in the pool: the response that carries it moves through many hands.
    conn: Option<Box<Http1Conn>>,
    pool: Arc<Pool>,
    decoder: Decoder,
    keep_alive: bool,
}

impl Http1Body {
    pub fn new(conn: Box<Http1Conn>, pool: Arc<Pool>, decoder: Decoder, keep_alive: bool) -> Self {
        let keep_alive = keep_alive && conn.write_failed.is_none();
        let mut body = Self { conn: Some(conn), pool, decoder, keep_alive };
        if body.decoder.is_done() {
            body.release();
        }
        body
    }

    fn release(&mut self) {
        if let Some(conn) = self.conn.take()
            // Bytes past the end of the response mean the backend and we disagree on framing.
            && self.keep_alive
            && conn.read.is_empty()
            && conn.head_written()
        {
            self.pool.clone().put(conn);
        }
    }
}

impl Body for Http1Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = &mut this.conn else { return Poll::Ready(None) };
            if conn.write_failed.is_none() && conn.sending() {
                match conn.poll_send(cx) {
                    Poll::Ready(Err(SendError::Io(e))) => {
                        tracing::debug!("sending the rest of the request body: {e}");
                        this.keep_alive = false;
                    }
                    // The backend still waits for the rest: this response cannot end well.
                    Poll::Ready(Err(SendError::Body(e))) => {
                        this.conn = None;
                        return Poll::Ready(Some(Err(e)));
                    }
                    _ => {}
                }
            }
            let decoded = match this.decoder.decode(&mut conn.read) {
                Ok(d) => d,
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            };
            match decoded {
                Decoded::Data(data) => {
                    if this.decoder.is_done() {
                        this.release();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Decoded::Trailers(trailers) => {
                    this.release();
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                Decoded::End => {
                    this.release();
                    return Poll::Ready(None);
                }
                Decoded::NeedMore => match ready!(conn.poll_fill(cx)) {
                    Ok(0) => {
                        // Read to the close: the connection is done either way.
                        this.conn = None;
                        return Poll::Ready(this.decoder.closed().err().map(|e| Err(e.into())));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        this.conn = None;
                        return Poll::Ready(Some(Err(e.into())));
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        self.decoder.exact().map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}
