//! HTTP/1.1 request heads from clients, as bytes (RFC 9112): parsed by httparse straight
//! into the `http::Request` the handler takes, its header values sharing the read buffer.
//! No I/O here. Framing is strict: a request whose body length is ambiguous is refused,
//! because whatever reads it differently behind us is how requests get smuggled.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::{HeaderValue, Method, Request, StatusCode, Uri, Version, header};

use crate::{
    recycle,
    upstream::codec::{Chunk, ConnectionOptions, Decoder, Field, HeadCache, ends_chunked, merge_length},
};

/// Larger request heads are refused (431), and so are heads with more header fields.
pub const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;

/// Why a request head is refused; [`Refused::status`] answers it.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("request head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    #[error("HTTP version not supported")]
    Version,
    #[error("invalid request head: {0}")]
    Head(httparse::Error),
    #[error("invalid request target")]
    Target,
    #[error("CONNECT tunnels are not served")]
    Connect,
    #[error("invalid header field")]
    Header,
    #[error("invalid or conflicting Content-Length")]
    ContentLength,
    #[error("Transfer-Encoding that does not frame the body unambiguously")]
    TransferEncoding,
}

impl Refused {
    pub fn status(&self) -> StatusCode {
        match self {
            Refused::HeadTooLarge | Refused::TooManyHeaders => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Refused::Version => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            Refused::Connect => StatusCode::NOT_IMPLEMENTED,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// A request head, with what it says about its body and the connection.
#[derive(Debug)]
pub struct RequestHead {
    pub request: Request<()>,
    pub body: Decoder,
    /// Whether the client lets the connection carry another request after this one.
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before it sends the body.
    pub expect_continue: bool,
    /// The client asks to switch protocols (`Connection: upgrade` and `Upgrade`).
    pub upgrade: bool,
    /// The client takes trailers (`TE: trailers`).
    pub trailers: bool,
}

/// Parses the request head at the start of `buf` and takes it off; None while incomplete.
pub fn parse_request(buf: &mut BytesMut, cache: &mut HeadCache) -> Result<Option<RequestHead>, Refused> {
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut parsed, buf, &mut fields) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Complete(_)) => return Err(Refused::HeadTooLarge),
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Err(Refused::HeadTooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refused::TooManyHeaders),
        Err(httparse::Error::Version) if names_a_version(buf) => return Err(Refused::Version),
        Err(e) => return Err(Refused::Head(e)),
    };
    let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
        .map_err(|_| Refused::Head(httparse::Error::Token))?;
    if method == Method::CONNECT {
        // A tunnel to anywhere is not a gateway's to open; the body after the head would
        // be read as requests.
        return Err(Refused::Connect);
    }
    let http10 = parsed.version == Some(0);
    // Where the target and each field lie, so that they can share the buffer once split off.
    let path = parsed.path.unwrap_or_default();
    let target = path.as_ptr() as usize - buf.as_ptr() as usize;
    let target = target..target + path.len();
    cache.note_spans(buf.as_ptr(), parsed.headers.iter().map(|f| (f.name.as_bytes(), f.value)));
    let bytes = buf.split_to(len).freeze();
    let mut request = Request::new(());
    *request.uri_mut() = Uri::from_maybe_shared(bytes.slice(target)).map_err(|_| Refused::Target)?;
    // Room for what a proxy adds (X-Forwarded-*), so that the map need not grow.
    *request.headers_mut() = recycle::header_map(cache.spans.len() + 3);
    let headers = request.headers_mut();
    let mut length: Option<u64> = None;
    let (mut transfer_encoded, mut chunked) = (false, false);
    let mut connection = ConnectionOptions::default();
    let mut upgrade = false;
    let (mut expect_continue, mut trailers) = (false, false);
    // Hop-by-hop fields belong to the client's connection (RFC 9110 §7.6.1), and so do those
    // its Connection names: they are not kept, so that nothing read or set later (by
    // routing, authorization, filters) can be named away by the client. Routes therefore
    // match on the request as it will be forwarded, as Envoy's do. What an upgrade asks of
    // the backend is put back below, and `te: trailers`, which gRPC needs.
    let mut protocol = None;
    for (i, &((n0, n1), (v0, v1))) in cache.spans.iter().enumerate() {
        let (name, field) = cache.names.get(i, &bytes[n0..n1]).map_err(|_| Refused::Header)?;
        let raw = &bytes[v0..v1];
        match field {
            Field::ContentLength => merge_length(&mut length, raw).ok_or(Refused::ContentLength)?,
            Field::TransferEncoding => {
                transfer_encoded = true;
                chunked = ends_chunked(raw);
            }
            Field::Connection => connection.read(raw),
            Field::Upgrade => upgrade = true,
            Field::Expect => expect_continue = raw.trim_ascii().eq_ignore_ascii_case(b"100-continue"),
            Field::Te => {
                trailers |= raw.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"))
            }
            Field::HopByHop | Field::Other => {}
        }
        let value = || HeaderValue::from_maybe_shared(bytes.slice(v0..v1)).map_err(|_| Refused::Header);
        if field.hop_by_hop() {
            // httparse has refused control characters already; what is dropped is not
            // made into a value (browsers send `Connection: keep-alive` on every request).
            if field == Field::Upgrade && protocol.is_none() {
                protocol = Some(value()?);
            }
            continue;
        }
        headers.append(name, value()?);
    }
    connection.remove_named(headers);

    let body = if transfer_encoded {
        // Both framings, a coding we cannot end, or HTTP/1.0 (which has no chunked coding):
        // each is read one way by some and another way by others.
        if length.is_some() || !chunked || http10 {
            return Err(Refused::TransferEncoding);
        }
        Decoder::Chunked(Chunk::Size)
    } else {
        match length {
            None | Some(0) => Decoder::Done,
            Some(n) => Decoder::Length(n),
        }
    };
    // An upgrade the connection cannot make (HTTP/1.0, a request with a body) is not asked
    // of the backend either.
    let upgrade = upgrade && connection.upgrade && !http10 && body == Decoder::Done;
    if let Some(protocol) = protocol.filter(|_| upgrade) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    *request.method_mut() = method;
    *request.version_mut() = if http10 { Version::HTTP_10 } else { Version::HTTP_11 };
    Ok(Some(RequestHead {
        request,
        keep_alive: !connection.close && (!http10 || connection.keep_alive),
        expect_continue: expect_continue && !http10 && body != Decoder::Done,
        upgrade,
        trailers,
        body,
    }))
}

/// Whether the request line is well formed but for its version (`HTTP/2.0`, `HTTP/1.2`):
/// such a request is answered 505, a line that is not even that 400.
fn names_a_version(buf: &[u8]) -> bool {
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ');
    let version = (parts.next(), parts.next(), parts.next(), parts.next());
    matches!(version, (Some(_), Some(_), Some(v), None)
        if v.len() == 8 && v.starts_with(b"HTTP/") && v[5].is_ascii_digit() && v[6] == b'.' && v[7].is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<Option<RequestHead>, Refused> {
        parse_request(&mut BytesMut::from(raw), &mut HeadCache::default())
    }

    #[test]
    fn a_head_is_parsed_and_taken_off_the_buffer() {
        let mut buf = BytesMut::from("GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nX-Two: 1\r\nx-two: 2\r\n\r\nNEXT");
        let head = parse_request(&mut buf, &mut HeadCache::default()).unwrap().unwrap();
        assert_eq!(&buf[..], b"NEXT", "what follows the head stays");
        let req = &head.request;
        assert_eq!((req.method(), req.uri().path(), req.uri().query()), (&Method::GET, "/a", Some("b=1")));
        assert_eq!(req.headers()["host"], "example.com");
        assert_eq!(req.headers().get_all("x-two").iter().collect::<Vec<_>>(), ["1", "2"]);
        assert!(head.keep_alive && !head.expect_continue && !head.upgrade);
        assert_eq!(head.body, Decoder::Done);
    }

    #[test]
    fn an_incomplete_head_waits_and_an_endless_one_is_refused() {
        assert!(parse("GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
        let endless = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD));
        assert!(matches!(parse(&endless), Err(Refused::HeadTooLarge)));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let err = parse(&format!("GET / HTTP/1.1\r\n{many}\r\n")).unwrap_err();
        assert_eq!(err.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }

    #[test]
    fn body_framing() {
        let head = parse("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n").unwrap().unwrap();
        assert_eq!(head.body, Decoder::Length(5));
        let head = parse("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n").unwrap().unwrap();
        assert_eq!(head.body, Decoder::Length(5), "repeated equal lengths are one length");
        let head = parse("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").unwrap().unwrap();
        assert_eq!(head.body, Decoder::Chunked(Chunk::Size));
        for refused in [
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            let err = parse(refused).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{refused:?}: {err}");
        }
    }

    #[test]
    fn what_a_head_says_about_the_connection() {
        let head = parse("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap().unwrap();
        assert!(!head.keep_alive);
        let head = parse("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!head.keep_alive, "HTTP/1.0 closes unless asked not to");
        assert_eq!(head.request.version(), Version::HTTP_10);
        let head = parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap().unwrap();
        assert!(head.keep_alive);
        let head =
            parse("GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n").unwrap().unwrap();
        assert!(head.upgrade && head.keep_alive);
        let head = parse("GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n").unwrap().unwrap();
        assert!(!head.upgrade, "Upgrade without Connection: upgrade asks for nothing");
        let head = parse("PUT / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 1\r\nTE: trailers\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(head.expect_continue && head.trailers);
        let head = parse("GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n").unwrap().unwrap();
        assert!(!head.expect_continue, "no body, nothing to wait for");
    }

    #[test]
    fn hop_by_hop_fields_stay_behind_but_for_an_upgrade_the_connection_can_make() {
        // One connection's cache for every head, each parsed twice: names remembered at a
        // place are classified as they were the first time.
        let mut cache = HeadCache::default();
        let mut fields = |raw: &str| {
            let mut seen = Vec::new();
            for _ in 0..2 {
                let head = parse_request(&mut BytesMut::from(raw), &mut cache).unwrap().unwrap();
                let mut fields: Vec<String> =
                    head.request.headers().iter().map(|(n, v)| format!("{n}: {}", v.to_str().unwrap())).collect();
                fields.sort();
                seen.push(fields);
            }
            assert_eq!(seen[0], seen[1]);
            seen.pop().unwrap()
        };
        let raw = "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n\
                   Keep-Alive: timeout=5\r\nProxy-Connection: x\r\nTE: gzip, trailers\r\nTrailer: X-T\r\n\r\n";
        assert_eq!(fields(raw), ["host: a", "te: trailers"]);
        let raw = "GET / HTTP/1.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: websocket\r\n\
                   HTTP2-Settings: x\r\n\r\n";
        assert_eq!(fields(raw), ["connection: upgrade", "upgrade: websocket"]);
        // An upgrade the connection cannot make is not asked of the backend.
        let raw = "POST / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\nContent-Length: 1\r\n\r\n";
        assert_eq!(fields(raw), ["content-length: 1"]);
        assert_eq!(fields("GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"), Vec::<String>::new());
        // Ordinary names where hop-by-hop ones stood are forwarded.
        let raw = "GET / HTTP/1.1\r\nX-Conn: close\r\nX-Up: websocket\r\n\r\n";
        assert_eq!(fields(raw), ["x-conn: close", "x-up: websocket"]);
    }

    #[test]
    fn malformed_heads_are_refused_with_their_status() {
        for (raw, status) in [
            ("GET / HTTP/2.0\r\n\r\n", StatusCode::HTTP_VERSION_NOT_SUPPORTED),
            ("GET / HTTP/1.1\r\nX-Bad: a\0b\r\n\r\n", StatusCode::BAD_REQUEST),
            ("GET / HTTP/1.1\r\nX-Bad: a\rb\r\n\r\n", StatusCode::BAD_REQUEST),
            ("GET / HTTP/1.1\r\nX-Bad : v\r\n\r\n", StatusCode::BAD_REQUEST),
            ("GET / HTTP/1.1\r\nX-Folded: a\r\n b\r\n\r\n", StatusCode::BAD_REQUEST),
            ("GET /a b HTTP/1.1\r\n\r\n", StatusCode::BAD_REQUEST),
            ("G(T / HTTP/1.1\r\n\r\n", StatusCode::BAD_REQUEST),
            ("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", StatusCode::NOT_IMPLEMENTED),
        ] {
            let err = parse(raw).unwrap_err();
            assert_eq!(err.status(), status, "{raw:?}: {err}");
        }
    }
}
