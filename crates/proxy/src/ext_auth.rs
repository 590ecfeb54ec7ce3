//! The ExternalAuth filter (Gateway API, experimental). Over gRPC it is Envoy's ext_authz
//! (`ext_authz.rs`): the service gets the request's attributes and allowed headers (all
//! when none are listed) and the start of its body; an OK adds and removes the headers it
//! says, a denial is the client's answer (403 unless it gives a status). Over HTTP: before a
//! request goes on,
//! the authorization service gets its method, its path after the filter's prefix, its Host,
//! Authorization and allowed headers, and the start of its body up to
//! `forwardBody.maxSize` (with a Content-Length saying how much). A 200 lets the request
//! through, carrying the service's response headers (the allowed ones, or all but Host and
//! those that describe the answer itself); any other answer goes to the client as it came.
//! A service that cannot be reached, or that takes longer than [`AUTH_TIMEOUT`] for the
//! whole exchange, denies: the filter fails closed, with 403.

use std::{sync::Arc, time::Duration};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use translate::ir::ExternalAuth;

use crate::{
    Body,
    config::BindConfig,
    downstream::RequestBody,
    ext_authz,
    forward::{hop_by_hop, strip_hop_by_hop},
    respond::{Refusal, full},
    upstream::Pool,
};

/// How long the whole exchange with the authorization service may take, reading the start
/// of the client's body included.
const AUTH_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of an allowing answer's body read (and dropped) to reuse its connection.
const DRAIN_LIMIT: usize = 64 * 1024;

/// What the service decided.
pub enum Verdict {
    /// Go on, with what was read of the request body to send it along.
    Allow(Option<ReadBody>),
    Deny(Response<Body>),
}

/// The start of a request body, read to send it to the authorization service.
pub struct ReadBody {
    pub bytes: Bytes,
    /// Whether that was all of it; if not, the rest is still in the request.
    pub complete: bool,
}

pub async fn check(
    req: &mut Request<RequestBody>,
    auth: &ExternalAuth,
    bind: &BindConfig,
    tls: bool,
) -> Result<Verdict, Refusal> {
    let backend = auth.backend.as_deref().and_then(|k| bind.backends.by_key.get(k)).ok_or(Refusal::Invalid)?;
    let prefix = auth.path_prefix.trim_end_matches('/');
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    // A prefix that makes no URI is a configuration error, not a reason to ask about `/`.
    let uri = Uri::try_from(format!("{prefix}{path}")).map_err(|_| Refusal::Invalid)?;
    let exchange = async {
        let read = match auth.max_body {
            0 => None,
            limit => Some(read_start(req.body_mut(), limit as usize).await?),
        };
        let sent =
            read.as_ref().map_or_else(Bytes::new, |r| r.bytes.slice(..r.bytes.len().min(auth.max_body as usize)));
        let pool = backend.pool(bind.backend_client_certificate.as_deref()).await?;
        let denial = if auth.grpc {
            check_grpc(req, auth, &pool, tls, &sent).await?
        } else {
            check_http(req, uri, auth, &pool, sent).await?
        };
        Ok(denial.map_or(Verdict::Allow(read), Verdict::Deny))
    };
    match tokio::time::timeout(AUTH_TIMEOUT, exchange).await {
        Ok(Err(Refusal::UpstreamFailed | Refusal::NoEndpoints)) => Ok(Verdict::Deny(status(StatusCode::FORBIDDEN))),
        Ok(verdict) => verdict,
        Err(_) => {
            tracing::debug!(backend = %backend.key, "authorization timed out");
            Ok(Verdict::Deny(status(StatusCode::FORBIDDEN)))
        }
    }
}

/// One HTTP authorization request: None if the service allows the request (its grants
/// applied), else the client's answer.
async fn check_http(
    req: &mut Request<RequestBody>,
    uri: Uri,
    auth: &ExternalAuth,
    pool: &Arc<Pool>,
    body: Bytes,
) -> Result<Option<Response<Body>>, Refusal> {
    let answer = pool.send(authorization_request(req, uri, auth, body)).await.map_err(|e| {
        tracing::debug!(endpoint = %pool.endpoint(), "authorization request failed: {e}");
        Refusal::UpstreamFailed
    })?;
    let (parts, answer_body) = answer.into_parts();
    if parts.status != StatusCode::OK {
        // Its hop-by-hop headers were dropped as it was read, as any backend's answer's.
        return Ok(Some(Response::from_parts(parts, answer_body.map_err(Into::into).boxed_unsync())));
    }
    grant(&parts.headers, req.headers_mut(), &auth.allowed_response_headers);
    // Read to the end (small, as allowing answers are), so that the connection is reused.
    let _ = Limited::new(answer_body, DRAIN_LIMIT).collect().await;
    Ok(None)
}

/// The request to the authorization service.
fn authorization_request(
    req: &Request<RequestBody>,
    uri: Uri,
    auth: &ExternalAuth,
    body: Bytes,
) -> Request<crate::UpstreamBody> {
    let mut headers = HeaderMap::new();
    let always = [header::HOST, header::AUTHORIZATION];
    // The allowed headers, but none of those sent anyway nor any that frame a message.
    let allowed = auth
        .allowed_headers
        .iter()
        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .filter(|n| !always.contains(n) && *n != header::CONTENT_LENGTH && hop_by_hop(n).is_none());
    for name in always.clone().into_iter().chain(allowed) {
        for value in req.headers().get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    let mut ask = Request::new(Full::new(body).map_err(|never| match never {}).boxed());
    *ask.method_mut() = req.method().clone();
    *ask.uri_mut() = uri;
    *ask.headers_mut() = headers;
    ask
}

/// Copies what an allowing answer grants into the request: the allowed headers (the
/// client's own values of those are dropped first, so that only the service's arrive), or
/// every header but those describing the answer itself. Never Host, Content-Length or a
/// hop-by-hop header: routing is done and the body framed.
fn grant(answer: &HeaderMap, request: &mut HeaderMap, allowed: &[String]) {
    let describe_answer = [header::CONTENT_TYPE, header::CONTENT_ENCODING];
    let granted: Vec<&HeaderName> = if allowed.is_empty() {
        answer.keys().filter(|n| grantable(n) && !describe_answer.contains(n)).collect()
    } else {
        for name in allowed {
            request.remove(name.as_str());
        }
        answer.keys().filter(|n| grantable(n) && allowed.iter().any(|a| a == n.as_str())).collect()
    };
    for name in granted {
        request.remove(name);
        for value in answer.get_all(name) {
            request.append(name.clone(), value.clone());
        }
    }
}

/// Whether an authorization service may set or remove this request header.
pub fn grantable(name: &HeaderName) -> bool {
    *name != header::HOST && *name != header::CONTENT_LENGTH && hop_by_hop(name).is_none()
}

/// One ext_authz `Check` call: None if the service allows the request (its header changes
/// applied), else the client's answer.
async fn check_grpc(
    req: &mut Request<RequestBody>,
    auth: &ExternalAuth,
    pool: &Arc<Pool>,
    tls: bool,
    body: &[u8],
) -> Result<Option<Response<Body>>, Refusal> {
    let message = ext_authz::check_request(req, tls, &auth.allowed_headers, body);
    let mut ask = Request::new(Full::new(message).map_err(|never| match never {}).boxed());
    *ask.method_mut() = http::Method::POST;
    *ask.uri_mut() = Uri::from_static(ext_authz::CHECK_PATH);
    let headers = ask.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    let answer = pool.send(ask).await.map_err(|e| {
        tracing::debug!("ext_authz call failed: {e}");
        Refusal::UpstreamFailed
    })?;
    let (parts, answer_body) = answer.into_parts();
    let collected = Limited::new(answer_body, DRAIN_LIMIT).collect().await.map_err(|_| Refusal::UpstreamFailed)?;
    let grpc_status = collected.trailers().and_then(|t| t.get("grpc-status")).or(parts.headers.get("grpc-status"));
    if grpc_status.is_none_or(|s| s != "0") {
        tracing::debug!(status = ?grpc_status, "ext_authz call did not succeed");
        return Err(Refusal::UpstreamFailed);
    }
    match ext_authz::decide(&collected.to_bytes()) {
        Some(ext_authz::Decision::Allow { headers, remove }) => {
            ext_authz::apply(req.headers_mut(), headers, &remove);
            Ok(None)
        }
        Some(ext_authz::Decision::Deny { status, headers, body }) => {
            let mut denial = Response::new(full(body));
            *denial.status_mut() = status;
            ext_authz::apply(denial.headers_mut(), headers, &[]);
            // The body is framed here, whatever the service said.
            strip_hop_by_hop(denial.headers_mut());
            denial.headers_mut().remove(header::CONTENT_LENGTH);
            Ok(Some(denial))
        }
        None => {
            tracing::debug!("ext_authz answer does not parse");
            Err(Refusal::UpstreamFailed)
        }
    }
}

/// The body's frames until `limit` bytes are read or it ends (trailers are not kept).
async fn read_start(body: &mut RequestBody, limit: usize) -> Result<ReadBody, Refusal> {
    let mut read = BytesMut::new();
    while read.len() < limit {
        let Some(frame) = body.frame().await else { return Ok(ReadBody { bytes: read.freeze(), complete: true }) };
        if let Ok(data) = frame.map_err(|_| Refusal::BadRequest)?.into_data() {
            read.extend_from_slice(&data);
        }
    }
    let complete = http_body::Body::is_end_stream(body);
    Ok(ReadBody { bytes: read.freeze(), complete })
}

fn status(code: StatusCode) -> Response<Body> {
    let mut r = Response::new(full(format!("{}\n", code.canonical_reason().unwrap_or(""))));
    *r.status_mut() = code;
    r
}
