//! The ExternalAuth filter over HTTP (Gateway API, experimental). Before a request goes on,
//! the authorization service gets its method, its path after the filter's prefix, its Host,
//! Authorization and allowed headers, and its body up to `forwardBody.maxSize` (with a
//! Content-Length saying how much). A 200 lets the request through, carrying the service's
//! response headers (the allowed ones, or all but Host); any other answer goes to the client
//! as it came. A service that cannot be reached, or answers too late, denies: the filter
//! fails closed, with 403.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use translate::ir::ExternalAuth;

use crate::{
    Body,
    config::BindConfig,
    forward::strip_hop_by_hop,
    respond::{Refusal, full},
};

/// How long the authorization service may take to answer.
const AUTH_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of an allowing answer's body read (and dropped) to reuse its connection.
const DRAIN_LIMIT: usize = 64 * 1024;

/// What the service decided.
pub enum Verdict {
    /// Go on; with the request body when it was read to be sent along.
    Allow(Option<Bytes>),
    Deny(Response<Body>),
}

pub async fn check(req: &mut Request<Incoming>, auth: &ExternalAuth, bind: &BindConfig) -> Result<Verdict, Refusal> {
    let backend = auth.backend.as_deref().and_then(|k| bind.backends.by_key.get(k)).ok_or(Refusal::Invalid)?;
    let body = match auth.max_body {
        0 => None,
        limit => match read_body(req.body_mut(), limit as usize).await? {
            Some(body) => Some(body),
            None => return Ok(Verdict::Deny(status(StatusCode::PAYLOAD_TOO_LARGE))),
        },
    };
    let ask = authorization_request(req, auth, body.clone().unwrap_or_default());
    let pool = backend.pool(bind.backend_client_certificate.as_deref()).await?;
    let answer = match tokio::time::timeout(AUTH_TIMEOUT, pool.send(ask)).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => {
            tracing::debug!(backend = %backend.key, "authorization request failed: {e}");
            return Ok(Verdict::Deny(status(StatusCode::FORBIDDEN)));
        }
        Err(_) => {
            tracing::debug!(backend = %backend.key, "authorization request timed out");
            return Ok(Verdict::Deny(status(StatusCode::FORBIDDEN)));
        }
    };
    if answer.status() != StatusCode::OK {
        let (mut parts, body) = answer.into_parts();
        strip_hop_by_hop(&mut parts.headers, None);
        return Ok(Verdict::Deny(Response::from_parts(parts, body.map_err(Into::into).boxed_unsync())));
    }
    let (parts, answer_body) = answer.into_parts();
    copy_granted(&parts.headers, req.headers_mut(), &auth.allowed_response_headers);
    // Read to the end (small, as allowing answers are), so that the connection is reused.
    let _ = Limited::new(answer_body, DRAIN_LIMIT).collect().await;
    Ok(Verdict::Allow(body))
}

/// The request to the authorization service.
fn authorization_request(req: &Request<Incoming>, auth: &ExternalAuth, body: Bytes) -> Request<crate::UpstreamBody> {
    let prefix = auth.path_prefix.trim_end_matches('/');
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let uri = Uri::try_from(format!("{prefix}{path}")).unwrap_or_else(|_| Uri::from_static("/"));
    let mut headers = HeaderMap::new();
    let always = [header::HOST, header::AUTHORIZATION];
    let allowed = auth.allowed_headers.iter().filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok());
    for name in always.into_iter().chain(allowed) {
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

/// Copies the granted headers of an allowing answer into the request: the allowed ones, or
/// every one but Host and what frames the answer itself.
fn copy_granted(answer: &HeaderMap, request: &mut HeaderMap, allowed: &[String]) {
    let framing = [header::HOST, header::CONTENT_LENGTH, header::TRANSFER_ENCODING, header::CONNECTION];
    let granted = |name: &HeaderName| {
        if allowed.is_empty() { !framing.contains(name) } else { allowed.iter().any(|a| a == name.as_str()) }
    };
    for name in answer.keys().filter(|n| granted(n)) {
        let mut values = answer.get_all(name).iter();
        if let Some(first) = values.next() {
            request.insert(name.clone(), first.clone());
        }
        for value in values {
            request.append(name.clone(), value.clone());
        }
    }
}

/// The whole request body if it is at most `limit` bytes; None if it is larger.
async fn read_body(body: &mut Incoming, limit: usize) -> Result<Option<Bytes>, Refusal> {
    let mut read = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.map_err(|_| Refusal::BadRequest)?.into_data() {
            if read.len() + data.len() > limit {
                return Ok(None);
            }
            read.extend_from_slice(&data);
        }
    }
    Ok(Some(read.freeze()))
}

fn status(code: StatusCode) -> Response<Body> {
    let mut r = Response::new(full(format!("{}\n", code.canonical_reason().unwrap_or(""))));
    *r.status_mut() = code;
    r
}
