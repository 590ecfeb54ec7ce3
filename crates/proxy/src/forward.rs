//! Forwarding to a backend: the upstream request (X-Forwarded-* in), retries with backoff,
//! timeouts, request mirroring, and WebSocket upgrades. Hop-by-hop headers never get here:
//! the HTTP/1.1 parsers drop them on both sides, and HTTP/2 refuses them.

use std::{
    pin::Pin,
    sync::atomic::{AtomicU64, Ordering},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header, header::Entry};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full, channel::Sender};
use tokio::time::Instant;
use translate::ir::{HttpFilter, Mirror};

use crate::{
    Body, BoxError, UpstreamBody,
    config::{BindConfig, Rule},
    downstream::{OnUpgrade, RequestBody},
    ext_auth::ReadBody,
    handler::{Conn, apply_request_filters, modify_headers},
    metrics::StreamCounters,
    respond::{Refusal, empty},
    stream,
    upstream::codec::ConnectionOptions,
};

/// Bodies up to this size are kept so that a failed attempt can be retried.
const RETRY_BODY_LIMIT: u64 = 64 * 1024;

/// Forwards `req`, answering 504 if no response has come by `deadline` (the route's request
/// timeout); `read` is the start of its body when something before (ExternalAuth) read it.
pub async fn forward(
    mut req: Request<RequestBody>,
    read: Option<ReadBody>,
    deadline: Option<Instant>,
    bind: &BindConfig,
    conn: &Conn,
    rule: &Rule,
    prefix: Option<&str>,
) -> Result<Response<Body>, Refusal> {
    let per_try = rule.timeouts.as_ref().and_then(|t| t.backend_request_ms).map(Duration::from_millis);
    // Present only when the backend is asked to switch protocols too (`downstream::request`).
    let downstream_upgrade = OnUpgrade::take(&mut req);

    // A retried request needs its body again: keep small, known-length bodies in memory.
    let retries = match &rule.retry {
        Some(r) if downstream_upgrade.is_none() && (read.as_ref().is_some_and(|r| r.complete) || replayable(&req)) => {
            r.attempts
        }
        _ => 0,
    };
    let (mut parts, body) = req.into_parts();
    forwarding_headers(&mut parts.headers, conn);
    // The last attempt takes the headers; earlier ones (retries) work on copies.
    let mut headers = Some(std::mem::take(&mut parts.headers));
    let mut body = match read {
        Some(ReadBody { bytes, complete: true }) => Pending::Buffered(bytes),
        Some(ReadBody { bytes, complete: false }) => Pending::Stream(Some(Streamed { start: Some(bytes), rest: body })),
        None if retries > 0 => Pending::Buffered(body.collect().await.map_err(|_| Refusal::BadRequest)?.to_bytes()),
        None => Pending::Stream(Some(Streamed { start: None, rest: body })),
    };

    let attempts = async {
        let mut attempt = 0;
        loop {
            let choice = rule.pick().ok_or(Refusal::Invalid)?;
            let key = choice.backend.as_deref().ok_or(Refusal::Invalid)?;
            let backend = bind.backends.by_key.get(key).ok_or(Refusal::Invalid)?;
            let pool = backend.pool(bind.backend_client_certificate.as_deref()).await?;
            // Built where it is sent, so that no copy of it stays in this future.
            let upstream = {
                let mut upstream = Request::new(body.take());
                *upstream.method_mut() = parts.method.clone();
                *upstream.headers_mut() = if attempt < retries {
                    headers.clone().unwrap_or_default()
                } else {
                    headers.take().unwrap_or_default()
                };
                *upstream.uri_mut() = parts.uri.clone();
                apply_request_filters(&mut upstream, &choice.filters, prefix)?;
                mirror(&mut upstream, rule.filters.iter().chain(&choice.filters), bind);
                upstream
            };
            let started = Instant::now();
            let sent = match per_try {
                Some(t) => within(started + t, pool.send(upstream)).await,
                None => Ok(pool.send(upstream).await),
            };
            let result = match sent {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(e)) => {
                    tracing::debug!(endpoint = %pool.endpoint(), "upstream request failed: {e}");
                    Err(Refusal::UpstreamFailed)
                }
                Err(timeout) => Err(timeout),
            };
            backend.metrics.record(result.as_ref().ok().map(|r| r.status()), started.elapsed());
            let retryable = match (&result, &rule.retry) {
                (Ok(r), Some(policy)) => policy.codes.contains(&r.status().as_u16()),
                (Err(Refusal::UpstreamFailed | Refusal::Timeout), Some(_)) => true,
                _ => false,
            };
            if !retryable || attempt >= retries || !body.replayable() {
                return result.map(|r| (r, choice));
            }
            attempt += 1;
            let backoff = rule.retry.as_ref().and_then(|r| r.backoff_ms).unwrap_or(25);
            tokio::time::sleep(Duration::from_millis(backoff)).await;
        }
    };
    let (mut response, choice) = match deadline {
        Some(t) => within(t, attempts).await??,
        None => attempts.await?,
    };

    if response.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(downstream) = downstream_upgrade
    {
        let up = response.body_mut().upgraded().ok_or(Refusal::UpstreamFailed)?;
        // The tunnel outlives the HTTP connection: it keeps the connection's place in the
        // socket's drain, and idles out like any byte stream.
        let guard = conn.guard.clone();
        tokio::spawn(async move {
            if let Some(down) = downstream.connection().await {
                stream::pipe(down, up, &guard, StreamCounters::detached()).await;
            }
        });
        let (parts, _) = response.into_parts();
        return Ok(Response::from_parts(parts, empty()));
    }
    for f in rule.filters.iter().chain(&choice.filters) {
        if let HttpFilter::ResponseHeaders(m) = f {
            modify_headers(response.headers_mut(), m);
        }
    }
    Ok(response.map(|b| b.map_err(Into::into).boxed_unsync()))
}

/// The request body across attempts.
enum Pending {
    Buffered(Bytes),
    Stream(Option<Streamed>),
}

impl Pending {
    fn take(&mut self) -> UpstreamBody {
        match self {
            Pending::Buffered(b) => Full::new(b.clone()).map_err(|never| match never {}).boxed(),
            Pending::Stream(s) => match s.take() {
                Some(body) if !body.is_end_stream() => body.boxed(),
                _ => empty_upstream(),
            },
        }
    }

    fn replayable(&self) -> bool {
        matches!(self, Pending::Buffered(_))
    }
}

fn replayable(req: &Request<RequestBody>) -> bool {
    req.body().is_end_stream() || req.body().size_hint().upper().is_some_and(|n| n <= RETRY_BODY_LIMIT)
}

static MIRROR_SEQ: AtomicU64 = AtomicU64::new(0);

/// Sends a copy of the request to each mirror backend, fire and forget: the copy's body is
/// fed from the original's as it streams, and dropped if the mirror falls behind.
fn mirror<'a>(req: &mut Request<UpstreamBody>, filters: impl Iterator<Item = &'a HttpFilter>, bind: &BindConfig) {
    for f in filters {
        let HttpFilter::Mirror(Mirror { backend: Some(key), per_million }) = f else { continue };
        let seq = MIRROR_SEQ.fetch_add(1, Ordering::Relaxed);
        if seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) % 1_000_000 >= u64::from(*per_million) {
            continue;
        }
        // The copy is framed as the original is: no body, or its length, or chunked.
        let copy = if req.body().is_end_stream() {
            empty_upstream()
        } else {
            let (tx, copy) = http_body_util::channel::Channel::<Bytes, BoxError>::new(16);
            let hint = req.body().size_hint();
            let original = std::mem::replace(req.body_mut(), empty_upstream());
            *req.body_mut() = Tee { inner: original, mirror: Some(tx) }.boxed();
            Hinted { inner: copy, hint }.boxed()
        };
        let mut copy_req = Request::new(copy);
        *copy_req.method_mut() = req.method().clone();
        *copy_req.uri_mut() = req.uri().clone();
        *copy_req.headers_mut() = req.headers().clone();
        let (backends, key) = (bind.backends.clone(), key.clone());
        let certificate = bind.backend_client_certificate.clone();
        tokio::spawn(async move {
            let Some(backend) = backends.by_key.get(&key) else { return };
            let Ok(pool) = backend.pool(certificate.as_deref()).await else { return };
            if let Ok(resp) = pool.send(copy_req).await {
                // Read to the end, so that the connection goes back to the pool.
                let _ = resp.into_body().collect().await;
            }
        });
    }
}

/// No body, boxed without an allocation (`Empty` has no size).
fn empty_upstream() -> UpstreamBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// The client's body as it streams; `start`, when set, was read already (by ExternalAuth)
/// and goes first.
struct Streamed {
    start: Option<Bytes>,
    rest: RequestBody,
}

impl http_body::Body for Streamed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(start) = this.start.take() {
            return Poll::Ready(Some(Ok(Frame::data(start))));
        }
        Pin::new(&mut this.rest).poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.start.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let start = self.start.as_ref().map_or(0, |s| s.len() as u64);
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + start);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + start);
        }
        hint
    }
}

/// A body that tells the size another one told (a mirror's copy, fed through a channel).
struct Hinted<B> {
    inner: B,
    hint: SizeHint,
}

impl<B: http_body::Body<Data = Bytes, Error = BoxError> + Unpin> http_body::Body for Hinted<B> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

/// A body that passes its frames on and copies data frames to a mirror.
struct Tee {
    inner: UpstreamBody,
    mirror: Option<Sender<Bytes, BoxError>>,
}

impl http_body::Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(tx), Some(data)) = (this.mirror.as_mut(), frame.data_ref())
                    && tx.try_send(Frame::data(data.clone())).is_err()
                    && let Some(tx) = this.mirror.take()
                {
                    // Fallen behind: the copy fails rather than reach the mirror cut short.
                    tx.abort("the mirror fell behind the request body".into());
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(tx) = this.mirror.take() {
                    tx.abort("the request body failed".into());
                }
            }
            Poll::Ready(None) => this.mirror = None,
            Poll::Pending => {}
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

const HOP_BY_HOP_LEN: usize = 7;
/// A static, not a const: a const would build (and drop) the seven names at every use.
pub(crate) static HOP_BY_HOP: [HeaderName; HOP_BY_HOP_LEN] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Where `name` stands in [`HOP_BY_HOP`], if it is there: most names are told apart by their
/// length alone, which matters on a path that asks for every header of every message.
pub(crate) fn hop_by_hop(name: &HeaderName) -> Option<usize> {
    let name = name.as_str();
    if !matches!(name.len(), 2 | 7 | 10 | 16 | 17) {
        return None;
    }
    HOP_BY_HOP.iter().position(|h| h.as_str() == name)
}

/// Removes hop-by-hop headers, and those named in `Connection`, from an answer whose headers
/// an authorization service chose (`ext_authz` denials); the parsers drop them from
/// everything read off the wire.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Which hop-by-hop names are present, in one pass over the names: most messages carry
    // none, or only `connection`.
    let mut present = [false; HOP_BY_HOP_LEN];
    for name in headers.keys() {
        if let Some(i) = hop_by_hop(name) {
            present[i] = true;
        }
    }
    if !present.contains(&true) {
        return;
    }
    let mut connection = ConnectionOptions::default();
    for value in headers.get_all(header::CONNECTION) {
        connection.read(value.as_bytes());
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, here)| *here) {
        headers.remove(name);
    }
    connection.remove_named(headers);
}

// Const items, so that the names are checked when compiling, not on every request.
pub(crate) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const HTTP: HeaderValue = HeaderValue::from_static("http");
const HTTPS: HeaderValue = HeaderValue::from_static("https");

/// X-Forwarded-For and -Proto, which every upstream request carries (X-Forwarded-Host was
/// set before filters ran, hop-by-hop headers removed). The Host header passes unchanged
/// unless URLRewrite replaced it.
fn forwarding_headers(headers: &mut HeaderMap, conn: &Conn) {
    // One lookup, whether the client sent the header or not.
    match headers.entry(X_FORWARDED_FOR) {
        Entry::Occupied(mut existing) => {
            // Fields sent more than once are one list (RFC 9110 §5.3); ours goes last.
            let mut joined = Vec::with_capacity(existing.get().len() + 2 + conn.peer_ip.len());
            for value in existing.iter() {
                joined.extend_from_slice(value.as_bytes());
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(conn.peer_ip.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&joined) {
                existing.insert(v);
            }
        }
        Entry::Vacant(absent) => {
            absent.insert(conn.peer_ip.clone());
        }
    }
    headers.insert(X_FORWARDED_PROTO, if conn.tls { HTTPS } else { HTTP });
}

/// `fut`'s output, or [`Refusal::Timeout`] (504) if it has not finished by `deadline`.
/// Awaited only where there is a deadline: a wrapper on every request would be one more
/// layer for its future and output to be moved through.
pub async fn within<F: Future>(deadline: Instant, fut: F) -> Result<F::Output, Refusal> {
    tokio::time::timeout_at(deadline, fut).await.map_err(|_| Refusal::Timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hop_by_hop_name_is_found_and_others_are_not() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop(name), Some(i), "{name}");
        }
        for name in ["host", "user-agent", "content-length", "trailers", "x-forwarded-for", "tes"] {
            assert_eq!(hop_by_hop(&HeaderName::from_static(name)), None, "{name}");
        }
    }
}
