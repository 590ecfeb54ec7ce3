//! Forwarding to a backend: the upstream request (hop-by-hop headers out, X-Forwarded-* in),
//! retries with backoff, timeouts, request mirroring, and WebSocket upgrades.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::atomic::{AtomicU64, Ordering},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{
    HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, header,
    uri::{Authority, PathAndQuery},
};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::{BodyExt, Full, channel::Sender};
use hyper::body::Incoming;
use translate::ir::{BackendProtocol, HttpFilter, Mirror};

use crate::{
    Body, BoxError, Shared, UpstreamBody,
    config::{Backend, BindConfig, Rule},
    handler::{Conn, apply_request_filters, modify_headers},
    respond::{Refusal, empty},
};

/// Bodies up to this size are kept so that a failed attempt can be retried.
const RETRY_BODY_LIMIT: u64 = 64 * 1024;

pub async fn forward(
    mut req: Request<Incoming>,
    bind: &BindConfig,
    conn: &Conn,
    shared: &Shared,
    rule: &Rule,
    prefix: Option<&str>,
) -> Result<Response<Body>, Refusal> {
    let overall = rule.timeouts.as_ref().and_then(|t| t.request_ms).map(Duration::from_millis);
    let per_try = rule.timeouts.as_ref().and_then(|t| t.backend_request_ms).map(Duration::from_millis);
    let upgrade = is_upgrade(req.headers()).then(|| req.headers().get(header::UPGRADE).cloned()).flatten();
    let downstream_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));

    // A retried request needs its body again: keep small, known-length bodies in memory.
    let retries = match &rule.retry {
        Some(r) if upgrade.is_none() && replayable(&req) => r.attempts,
        _ => 0,
    };
    let (mut parts, body) = req.into_parts();
    prepare_headers(&mut parts.headers, conn, upgrade.as_ref());
    // The last attempt takes the headers; earlier ones (retries) work on copies.
    let mut headers = Some(std::mem::take(&mut parts.headers));
    let mut body = if retries > 0 {
        let bytes = body.collect().await.map_err(|_| Refusal::BadRequest)?.to_bytes();
        Pending::Buffered(bytes)
    } else {
        Pending::Stream(Some(body))
    };

    let attempts = async {
        let mut attempt = 0;
        loop {
            let choice = rule.pick().ok_or(Refusal::Invalid)?;
            let key = choice.backend.as_deref().ok_or(Refusal::Invalid)?;
            let backend = bind.backends.by_key.get(key).ok_or(Refusal::Invalid)?;
            let endpoint = match &backend.external_name {
                Some((host, port)) => {
                    let resolved =
                        tokio::net::lookup_host((host.as_str(), *port)).await.ok().and_then(|mut a| a.next());
                    resolved.and_then(|a| Some((a, crate::config::authority(a)?))).ok_or(Refusal::NoEndpoints)?
                }
                None => backend.endpoint().cloned().ok_or(Refusal::NoEndpoints)?,
            };
            let mut upstream = Request::new(body.take());
            *upstream.method_mut() = parts.method.clone();
            *upstream.headers_mut() = if attempt < retries {
                headers.clone().unwrap_or_default()
            } else {
                headers.take().unwrap_or_default()
            };
            *upstream.uri_mut() = parts.uri.clone();
            apply_request_filters(&mut upstream, &choice.filters, prefix)?;
            mirror(&mut upstream, rule.filters.iter().chain(&choice.filters), bind, shared);
            let started = tokio::time::Instant::now();
            let sent = send(upstream, endpoint, backend, bind.backend_client_certificate.as_deref(), shared);
            let result = match per_try {
                Some(t) => tokio::time::timeout(t, sent).await.unwrap_or(Err(Refusal::Timeout)),
                None => sent.await,
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
    let (mut response, choice) = match overall {
        Some(t) => tokio::time::timeout(t, attempts).await.map_err(|_| Refusal::Timeout)??,
        None => attempts.await?,
    };

    if response.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(downstream) = downstream_upgrade
    {
        let upstream = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            if let (Ok(down), Ok(up)) = (downstream.await, upstream.await) {
                let mut down = hyper_util::rt::TokioIo::new(down);
                let mut up = hyper_util::rt::TokioIo::new(up);
                let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
            }
        });
        let (parts, _) = response.into_parts();
        return Ok(Response::from_parts(parts, empty()));
    }
    strip_hop_by_hop(response.headers_mut(), None);
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
    Stream(Option<Incoming>),
}

impl Pending {
    fn take(&mut self) -> UpstreamBody {
        match self {
            Pending::Buffered(b) => Full::new(b.clone()).map_err(|never| match never {}).boxed(),
            Pending::Stream(s) => match s.take() {
                Some(body) => body.map_err(Into::into).boxed(),
                None => Full::new(Bytes::new()).map_err(|never| match never {}).boxed(),
            },
        }
    }

    fn replayable(&self) -> bool {
        matches!(self, Pending::Buffered(_))
    }
}

fn replayable(req: &Request<Incoming>) -> bool {
    req.body().is_end_stream() || req.body().size_hint().upper().is_some_and(|n| n <= RETRY_BODY_LIMIT)
}

async fn send(
    mut req: Request<UpstreamBody>,
    (endpoint, authority): (SocketAddr, Authority),
    backend: &Backend,
    client_certificate: Option<&str>,
    shared: &Shared,
) -> Result<Response<Incoming>, Refusal> {
    *req.uri_mut() = upstream_uri(req.uri(), authority)?;
    *req.version_mut() = match backend.protocol {
        BackendProtocol::H2c => http::Version::HTTP_2,
        BackendProtocol::Http1 | BackendProtocol::WebSocket => {
            // `te: trailers` matters to HTTP/2 (gRPC); HTTP/1.1 needs no TE from us.
            req.headers_mut().remove(header::TE);
            http::Version::HTTP_11
        }
    };
    let sent = match (&backend.tls, backend.protocol) {
        (Some(tls), _) => match tls.client(client_certificate) {
            Some(client) => client.request(req).await,
            None => return Err(Refusal::Invalid),
        },
        (None, BackendProtocol::H2c) => shared.clients.h2c.request(req).await,
        (None, _) => shared.clients.http1.request(req).await,
    };
    sent.map_err(|e| {
        tracing::debug!(%endpoint, "upstream request failed: {e}");
        Refusal::UpstreamFailed
    })
}

static MIRROR_SEQ: AtomicU64 = AtomicU64::new(0);

/// Sends a copy of the request to each mirror backend, fire and forget: the copy's body is
/// fed from the original's as it streams, and dropped if the mirror falls behind.
fn mirror<'a>(
    req: &mut Request<UpstreamBody>,
    filters: impl Iterator<Item = &'a HttpFilter>,
    bind: &BindConfig,
    shared: &Shared,
) {
    for f in filters {
        let HttpFilter::Mirror(Mirror { backend: Some(key), per_million }) = f else { continue };
        let seq = MIRROR_SEQ.fetch_add(1, Ordering::Relaxed);
        if seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) % 1_000_000 >= u64::from(*per_million) {
            continue;
        }
        let Some(backend) = bind.backends.by_key.get(key) else { continue };
        let Some((_, authority)) = backend.endpoint() else { continue };
        let client = match (&backend.tls, backend.protocol) {
            (Some(tls), _) => match tls.client(bind.backend_client_certificate.as_deref()) {
                Some(c) => MirrorClient::Tls(c.clone()),
                None => continue,
            },
            (None, BackendProtocol::H2c) => MirrorClient::Plain(shared.clients.h2c.clone()),
            (None, _) => MirrorClient::Plain(shared.clients.http1.clone()),
        };
        let Ok(uri) = upstream_uri(req.uri(), authority.clone()) else { continue };
        let (tx, copy) = http_body_util::channel::Channel::<Bytes, BoxError>::new(16);
        let original = std::mem::replace(req.body_mut(), empty_upstream());
        *req.body_mut() = Tee { inner: original, mirror: Some(tx) }.boxed();
        let mut copy_req = Request::new(copy.boxed());
        *copy_req.method_mut() = req.method().clone();
        *copy_req.uri_mut() = uri;
        *copy_req.headers_mut() = req.headers().clone();
        tokio::spawn(async move {
            let sent = match client {
                MirrorClient::Plain(c) => c.request(copy_req).await,
                MirrorClient::Tls(c) => c.request(copy_req).await,
            };
            if let Ok(resp) = sent {
                // Drain so the connection can be reused.
                let _ = resp.into_body().collect().await;
            }
        });
    }
}

/// A mirror's copy goes out on its own task with its backend's client.
enum MirrorClient {
    Plain(hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, UpstreamBody>),
    Tls(crate::upstream_tls::TlsClient),
}

/// `http://<endpoint><path and query of the request>`, built from parts without parsing.
fn upstream_uri(uri: &Uri, authority: Authority) -> Result<Uri, Refusal> {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(http::uri::Scheme::HTTP);
    parts.authority = Some(authority);
    parts.path_and_query = Some(uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")));
    Uri::from_parts(parts).map_err(|_| Refusal::BadRequest)
}

fn empty_upstream() -> UpstreamBody {
    Full::new(Bytes::new()).map_err(|never| match never {}).boxed()
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
                {
                    this.mirror = None;
                }
            }
            Poll::Ready(_) => this.mirror = None,
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

const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, those named in `Connection` too, keeping what an upgrade
/// needs and `te: trailers`, which gRPC requires over HTTP/2 (`send` drops it for HTTP/1.1).
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: Option<&HeaderValue>) {
    let trailers = headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("trailers")));
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    if let Some(u) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, u.clone());
    }
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// The headers every upstream request carries: hop-by-hop ones out, X-Forwarded-For and
/// -Proto in (X-Forwarded-Host was set before filters ran). The Host header passes
/// unchanged unless URLRewrite replaced it.
fn prepare_headers(headers: &mut HeaderMap, conn: &Conn, upgrade: Option<&HeaderValue>) {
    strip_hop_by_hop(headers, upgrade);
    let ip = conn.peer.ip().to_canonical();
    let value = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(existing) => format!("{existing}, {ip}"),
        None => ip.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(if conn.tls { "https" } else { "http" }),
    );
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
}
