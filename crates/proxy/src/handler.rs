//! The request path, as straight-line phases: pick the listener and virtual host, match a
//! rule, run its request filters, then redirect, answer, or forward to a backend and run the
//! response filters. Everything read here was compiled before the request arrived.

use std::{
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, header, uri::PathAndQuery};
use tokio::time::Instant;
use translate::ir::{HeaderModifier, HttpFilter, PathRewrite, Redirect};

use crate::{
    Body, Shared,
    config::{Action, BindConfig, PathMatcher, Rule},
    cors::Cors,
    downstream::RequestBody,
    drain::ConnGuard,
    ext_auth::{self, Verdict},
    forward,
    hostmap::normalize_host,
    path,
    respond::{Refusal, empty},
    upstream::codec::itoa,
};

/// What a request knows of its connection.
pub struct Conn {
    /// The client's address, as X-Forwarded-For gives it; formatted once per connection.
    pub peer_ip: HeaderValue,
    pub local: SocketAddr,
    pub tls: bool,
    /// For TLS: the listener the SNI chose; a request whose Host picks another answers 421.
    pub sni_listener: Option<usize>,
    /// The connection's place in its socket's drain.
    pub guard: ConnGuard,
}

impl Conn {
    pub fn new(
        (peer, local): (SocketAddr, SocketAddr),
        tls: bool,
        sni_listener: Option<usize>,
        guard: ConnGuard,
    ) -> Self {
        Self { peer_ip: ip_header(peer.ip()), local, tls, sni_listener, guard }
    }
}

/// An address as X-Forwarded-For gives it (an IPv4-mapped IPv6 one as IPv4). IPv4 is
/// written by hand: through `fmt` it cost some 800 instructions a connection.
fn ip_header(ip: IpAddr) -> HeaderValue {
    let v4 = match ip.to_canonical() {
        IpAddr::V4(v4) => v4,
        v6 => return HeaderValue::try_from(v6.to_string()).expect("an IP address is a header value"),
    };
    let (mut text, mut len, mut digits) = ([0u8; 15], 0, [0u8; 20]);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        let d = itoa(octet.into(), &mut digits);
        text[len..len + d.len()].copy_from_slice(d);
        len += d.len();
    }
    HeaderValue::from_bytes(&text[..len]).expect("an IP address is a header value")
}

/// One request, answered whatever happens: the error type is hyper's service contract.
pub async fn handle(
    mut req: Request<RequestBody>,
    bind: Arc<BindConfig>,
    conn: &Conn,
    shared: &Shared,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let grpc = is_grpc(req.headers());
    Ok(match route(&mut req, &bind, conn) {
        Err(refusal) => {
            let response = refusal.into_response(grpc);
            shared.metrics.unrouted(response.status(), started.elapsed());
            response
        }
        Ok(Routed { rule, prefix }) => {
            let response = match run_rule(req, started, &bind, conn, &rule, prefix).await {
                Ok(r) => r,
                Err(refusal) => refusal.into_response(rule.grpc || grpc),
            };
            rule.metrics.record(response.status(), started.elapsed());
            response
        }
    })
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Where a request was routed.
struct Routed {
    rule: Arc<Rule>,
    /// The PathPrefix that matched, for ReplacePrefixMatch.
    prefix: Option<Arc<str>>,
}

/// Listener, virtual host and rule for a request; the path is normalized in place.
fn route(req: &mut Request<RequestBody>, bind: &BindConfig, conn: &Conn) -> Result<Routed, Refusal> {
    // The request target's authority (HTTP/2, or absolute-form in HTTP/1.1) is the host:
    // it replaces any Host header (RFC 9112 §3.2.2), so routing and the backend agree.
    if let Some(authority) = req.uri().authority() {
        let value = HeaderValue::from_str(authority.as_str()).map_err(|_| Refusal::BadRequest)?;
        req.headers_mut().insert(header::HOST, value);
    }
    let host = single_host(req.headers())?;
    // Room for X-Forwarded-Host, -For and -Proto at once, rather than growing thrice.
    req.headers_mut().reserve(3);
    match &host {
        Some(h) => {
            req.headers_mut().insert(forward::X_FORWARDED_HOST, h.clone());
        }
        None if req.version() == http::Version::HTTP_11 => return Err(Refusal::BadRequest),
        None => {}
    }
    let host = match &host {
        Some(h) => normalize_host(h.to_str().map_err(|_| Refusal::BadRequest)?),
        None => "".into(),
    };
    let normalized = path::normalize(req.uri().path()).ok_or(Refusal::BadRequest)?;
    if let std::borrow::Cow::Owned(p) = &normalized {
        let pq = match req.uri().query() {
            Some(q) => format!("{p}?{q}"),
            None => p.clone(),
        };
        let mut parts = req.uri().clone().into_parts();
        parts.path_and_query = Some(PathAndQuery::try_from(pq).map_err(|_| Refusal::BadRequest)?);
        *req.uri_mut() = Uri::from_parts(parts).map_err(|_| Refusal::BadRequest)?;
    }
    let query = parse_query(req.uri().query());
    let (listener, entry) =
        bind.route(req.method(), &host, req.uri().path(), req.headers(), &query).ok_or(Refusal::NoRoute)?;
    if conn.sni_listener.is_some_and(|l| l != listener) {
        return Err(Refusal::Misdirected);
    }
    let prefix = match &entry.matcher.path {
        PathMatcher::Prefix(p) => Some(p.clone()),
        _ => None,
    };
    Ok(Routed { rule: bind.listeners[listener].rules[entry.rule].clone(), prefix })
}

/// The Host header, if any. A request naming its host twice is refused rather than guessed
/// at (RFC 9112 §3.2). Ambiguous framing never gets this far: the server refuses it
/// (`downstream/request.rs`).
fn single_host(headers: &HeaderMap) -> Result<Option<HeaderValue>, Refusal> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next().cloned();
    if hosts.next().is_some() {
        return Err(Refusal::BadRequest);
    }
    Ok(host)
}

/// `a=1&b=x%20y` as decoded pairs, parsed once per request.
pub fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    let Some(q) = query else { return Vec::new() };
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => match s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(v) => {
                    out.push(v);
                    i += 3;
                }
                None => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn run_rule(
    mut req: Request<RequestBody>,
    started: Instant,
    bind: &BindConfig,
    conn: &Conn,
    rule: &Rule,
    prefix: Option<Arc<str>>,
) -> Result<Response<Body>, Refusal> {
    let cors_origin = match &rule.cors {
        Some(cors) if Cors::is_preflight(req.method(), req.headers()) => return Ok(cors.preflight(req.headers())),
        Some(cors) => cors.allowed_origin(req.headers()),
        None => None,
    };
    // The route's request timeout runs from the request's arrival, authorization included.
    let deadline = rule.timeouts.as_ref().and_then(|t| t.request_ms).map(|ms| started + Duration::from_millis(ms));
    // The authorization service sees the request as the client sent it. Boxed: most routes
    // have none, and should not carry its future's size.
    let verdict = match &rule.external_auth {
        Some(auth) => {
            let check = Box::pin(ext_auth::check(&mut req, auth, bind, conn.tls));
            match deadline {
                Some(t) => forward::within(t, check).await??,
                None => check.await?,
            }
        }
        None => Verdict::Allow(None),
    };
    let mut response = match verdict {
        Verdict::Deny(response) => response,
        Verdict::Allow(read) => {
            apply_request_filters(&mut req, &rule.filters, prefix.as_deref())?;
            match &rule.action {
                Action::Respond(status) => {
                    return Err(if *status == 500 { Refusal::Invalid } else { Refusal::NoRoute });
                }
                Action::Redirect(r) => redirect(&req, r, conn, prefix.as_deref()),
                Action::Forward { .. } => {
                    forward::forward(req, read, deadline, bind, conn, rule, prefix.as_deref()).await?
                }
            }
        }
    };
    if let (Some(cors), Some(origin)) = (&rule.cors, cors_origin) {
        cors.decorate(response.headers_mut(), origin);
    }
    Ok(response)
}

pub fn apply_request_filters<B>(
    req: &mut Request<B>,
    filters: &[HttpFilter],
    prefix: Option<&str>,
) -> Result<(), Refusal> {
    for f in filters {
        match f {
            HttpFilter::RequestHeaders(m) => modify_headers(req.headers_mut(), m),
            HttpFilter::UrlRewrite(rw) => {
                if let Some(host) = &rw.hostname {
                    let value = HeaderValue::from_str(host).map_err(|_| Refusal::Invalid)?;
                    req.headers_mut().insert(header::HOST, value);
                }
                if let Some(p) = &rw.path {
                    let new_path = rewrite_path(req.uri().path(), p, prefix);
                    let pq = match req.uri().query() {
                        Some(q) => format!("{new_path}?{q}"),
                        None => new_path,
                    };
                    let mut parts = req.uri().clone().into_parts();
                    parts.path_and_query = Some(PathAndQuery::try_from(pq).map_err(|_| Refusal::Invalid)?);
                    *req.uri_mut() = Uri::from_parts(parts).map_err(|_| Refusal::Invalid)?;
                }
            }
            // Mirrors are sent by `forward`, response headers after the response; CORS and
            // ExternalAuth are compiled into the rule and run before.
            HttpFilter::Mirror(_)
            | HttpFilter::ResponseHeaders(_)
            | HttpFilter::Cors(_)
            | HttpFilter::ExternalAuth(_) => {}
        }
    }
    Ok(())
}

pub fn modify_headers(headers: &mut HeaderMap, m: &HeaderModifier) {
    for (name, value) in &m.set {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            headers.insert(n, v);
        }
    }
    for (name, value) in &m.add {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            headers.append(n, v);
        }
    }
    for name in &m.remove {
        headers.remove(name.as_str());
    }
}

/// ReplaceFullPath, or ReplacePrefixMatch with the spec's trailing-slash rules: replacing
/// `/foo` by `/bar` maps `/foo/x` to `/bar/x`; by `/` maps it to `/x`.
fn rewrite_path(path: &str, rewrite: &PathRewrite, prefix: Option<&str>) -> String {
    match rewrite {
        PathRewrite::Full(p) => p.clone(),
        PathRewrite::Prefix(replacement) => {
            let prefix = prefix.unwrap_or("/");
            let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
            let rest = path.get(prefix.len()..).unwrap_or("");
            let replacement = replacement.strip_suffix('/').unwrap_or(replacement);
            let joined = format!("{replacement}{rest}");
            if joined.is_empty() {
                "/".into()
            } else if joined.starts_with('/') {
                joined
            } else {
                format!("/{joined}")
            }
        }
    }
}

fn redirect(req: &Request<RequestBody>, r: &Redirect, conn: &Conn, prefix: Option<&str>) -> Response<Body> {
    let request_scheme = if conn.tls { "https" } else { "http" };
    let scheme = r.scheme.as_deref().unwrap_or(request_scheme);
    let raw_host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).or(req.uri().host()).unwrap_or("");
    let host = r.hostname.clone().unwrap_or_else(|| normalize_host(raw_host).into_owned());
    let port = r.port.unwrap_or(match r.scheme.as_deref() {
        Some("http") => 80,
        Some("https") => 443,
        _ => conn.local.port(),
    });
    let default_port = (scheme == "http" && port == 80) || (scheme == "https" && port == 443);
    let path = match &r.path {
        Some(p) => rewrite_path(req.uri().path(), p, prefix),
        None => req.uri().path().to_string(),
    };
    let mut location =
        if default_port { format!("{scheme}://{host}{path}") } else { format!("{scheme}://{host}:{port}{path}") };
    if let Some(q) = req.uri().query() {
        location.push('?');
        location.push_str(q);
    }
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::FOUND);
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_address_reads_as_std_writes_it() {
        for ip in ["0.0.0.0", "127.0.0.1", "10.200.3.45", "255.255.255.255", "::1", "2001:db8::8a2e:370:7334"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_header(ip), ip.to_string().as_str());
        }
        // IPv4 reaching a dual-stack socket is given as IPv4.
        assert_eq!(ip_header("::ffff:192.0.2.128".parse().unwrap()), "192.0.2.128");
    }
}
