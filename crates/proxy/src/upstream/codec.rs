//! HTTP/1.1 toward backends, as bytes (RFC 9112): the request head we write, and the
//! response head and body framing we read. No I/O here; `http1` moves the bytes. The body
//! framing (`Decoder`, chunks, trailers, lengths) serves the server side too
//! (`downstream`), for request bodies.
//!
//! Our own rather than hyper's client: a proxy knows what it forwards, so the head is
//! written straight from the request and the response head is parsed (by httparse) straight
//! into the `HeaderMap` the client's response needs, its values sharing the read buffer.
//! Framing is strict, because a connection goes back to the pool afterwards: a response
//! whose length is ambiguous is refused or ends its connection, never guessed at.

use std::mem::MaybeUninit;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};

use crate::forward::hop_by_hop;

/// Larger response heads are refused, and so are heads with more header fields.
pub const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;
/// Longest chunk-size line (extensions included), and largest trailer section.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Malformed {
    #[error("response head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("invalid response head: {0}")]
    Head(#[from] httparse::Error),
    #[error("invalid header name in the response")]
    HeaderName,
    #[error("invalid or conflicting Content-Length in the response")]
    ContentLength,
    #[error("101 Switching Protocols to a request that asked for no upgrade")]
    UnaskedUpgrade,
    #[error("invalid chunk in the body")]
    Chunk,
    #[error("invalid trailers")]
    Trailers,
    #[error("the body ended early")]
    Incomplete,
}

/// What parsing keeps from one head to the next on a connection: room to note where each
/// field lies, and the names of the last head's fields by position. A peer sends much the
/// same names in the same order on every message, and comparing their bytes costs a
/// fraction of parsing a name again (lower-casing, validating, looking it up, and
/// allocating one that is not a standard name).
#[derive(Default)]
pub struct HeadCache {
    /// Where each field's name and value lie in the head, so that they can share it once
    /// it is split off the read buffer. Kept, so that no array is zeroed per head.
    pub(crate) spans: Vec<FieldSpan>,
    pub(crate) names: Names,
}

/// Offsets of a field's name and value in its head.
pub(crate) type FieldSpan = ((usize, usize), (usize, usize));

#[derive(Default)]
pub(crate) struct Names(Vec<Remembered>);

/// A name as a head last spelled it at one place, in one cache line: looking a head's names
/// up reads a line per name, in a row, rather than following a pointer per name.
#[repr(align(64))]
struct Remembered {
    spelled: [u8; REMEMBERED_NAME_LEN],
    len: u8,
    field: Field,
    name: HeaderName,
}

const _: () = assert!(std::mem::size_of::<Remembered>() == 64);

impl Remembered {
    fn spelled(&self) -> &[u8] {
        &self.spelled[..usize::from(self.len)]
    }
}

/// What a parser does with a field, decided once per name it remembers rather than by
/// comparing every name against the framing and hop-by-hop names on every message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Field {
    // Forwarded, and read for the framing or for `100-continue`.
    ContentLength,
    Expect,
    // Hop-by-hop (RFC 9110 §7.6.1), and read for what they say of the framing or connection.
    TransferEncoding,
    Connection,
    Upgrade,
    Te,
    /// Hop-by-hop, and nothing more to a parser (`keep-alive`, `proxy-connection`, `trailer`).
    HopByHop,
    Other,
}

impl Field {
    fn of(name: &HeaderName) -> Field {
        let known = [
            (header::CONTENT_LENGTH, Field::ContentLength),
            (header::EXPECT, Field::Expect),
            (header::TRANSFER_ENCODING, Field::TransferEncoding),
            (header::CONNECTION, Field::Connection),
            (header::UPGRADE, Field::Upgrade),
            (header::TE, Field::Te),
        ];
        match known.into_iter().find(|(n, _)| n == name) {
            Some((_, field)) => field,
            None if hop_by_hop(name).is_some() => Field::HopByHop,
            None => Field::Other,
        }
    }

    /// Whether the field belongs to this connection only, and is not forwarded.
    pub(crate) fn hop_by_hop(self) -> bool {
        matches!(self, Field::TransferEncoding | Field::Connection | Field::Upgrade | Field::Te | Field::HopByHop)
    }
}

/// Fields past this many in a head, and names longer than this, are parsed every time: a
/// client cannot make a connection hold much.
const REMEMBERED_NAMES: usize = 32;
const REMEMBERED_NAME_LEN: usize = 30;

impl HeadCache {
    /// Notes where `fields` lie in the head that starts at `base`.
    pub(crate) fn note_spans<'a>(&mut self, base: *const u8, fields: impl Iterator<Item = (&'a [u8], &'a [u8])>) {
        let offset = |s: &[u8]| (s.as_ptr() as usize - base as usize, s.as_ptr() as usize - base as usize + s.len());
        self.spans.clear();
        self.spans.extend(fields.map(|(name, value)| (offset(name), offset(value))));
    }
}

impl Names {
    /// The name of the `i`th field, whose bytes are `raw`, and what it is to a parser.
    pub(crate) fn get(&mut self, i: usize, raw: &[u8]) -> Result<(HeaderName, Field), http::header::InvalidHeaderName> {
        if let Some(seen) = self.0.get(i)
            && seen.spelled() == raw
        {
            return Ok((seen.name.clone(), seen.field));
        }
        let name = HeaderName::from_bytes(raw)?;
        let field = Field::of(&name);
        if raw.len() > REMEMBERED_NAME_LEN || i > self.0.len() || i >= REMEMBERED_NAMES {
            return Ok((name, field));
        }
        let mut spelled = [0; REMEMBERED_NAME_LEN];
        spelled[..raw.len()].copy_from_slice(raw);
        let seen = Remembered { spelled, len: raw.len() as u8, field, name: name.clone() };
        match self.0.get_mut(i) {
            Some(known) => *known = seen,
            None => self.0.push(seen),
        }
        Ok((name, field))
    }
}

/// What a message's Connection fields say: its options, and the other fields they name,
/// which belong to this connection only (RFC 9110 §7.6.1).
#[derive(Default)]
pub(crate) struct ConnectionOptions {
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
    pub named: Vec<HeaderName>,
}

impl ConnectionOptions {
    /// Reads one Connection field's value.
    pub fn read(&mut self, raw: &[u8]) {
        // Most peers send one option alone; a list is split.
        if raw.eq_ignore_ascii_case(b"keep-alive") {
            self.keep_alive = true;
            return;
        }
        for token in raw.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if token.eq_ignore_ascii_case(b"upgrade") {
                self.upgrade = true;
            } else if let Ok(name) = HeaderName::from_bytes(token) {
                self.named.push(name);
            }
        }
    }

    /// Removes the fields they name from `headers`.
    pub fn remove_named(&self, headers: &mut HeaderMap) {
        for name in &self.named {
            headers.remove(name);
        }
    }
}

/// How a request body goes on the wire.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RequestFraming {
    /// No body and no Content-Length.
    None,
    Length(u64),
    Chunked,
}

impl RequestFraming {
    /// For a body that is empty (`end`) or of `exact` length, or neither. An empty body is
    /// announced as `Content-Length: 0` where a body is expected, or where the client
    /// `announced` a length.
    pub fn of(method: &Method, announced: bool, end: bool, exact: Option<u64>) -> Self {
        if end {
            let expected = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
            return if expected || announced { Self::Length(0) } else { Self::None };
        }
        exact.map_or(Self::Chunked, Self::Length)
    }
}

/// A request head as written: how its body goes, and whether it asks to switch protocols.
pub struct EncodedRequest {
    pub framing: RequestFraming,
    pub upgrade: bool,
}

/// Appends the request head: `target` in origin form, every header but the framing ones
/// (the body's own framing, from `end` and `exact` as [`RequestFraming::of`] takes them,
/// replaces them) and `te` (HTTP/1.1 needs none from us), and `host` when the request
/// carries no Host. What it needs to know of the headers is learnt in the one pass that
/// writes them.
pub fn encode_request(
    buf: &mut BytesMut,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    host: &str,
    end: bool,
    exact: Option<u64>,
) -> EncodedRequest {
    buf.reserve(64 + target.len() + headers.len() * 32);
    buf.put_slice(method.as_str().as_bytes());
    buf.put_u8(b' ');
    buf.put_slice(target.as_bytes());
    buf.put_slice(b" HTTP/1.1\r\n");
    let (mut has_host, mut announced, mut upgrade) = (false, false, false);
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH {
            announced = true;
        } else if name != header::TRANSFER_ENCODING && name != header::TE {
            has_host |= name == header::HOST;
            // Only a client connection that can switch keeps Upgrade (`downstream::request`).
            upgrade |= name == header::UPGRADE;
            put_field(buf, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    if !has_host {
        put_field(buf, b"host", host.as_bytes());
    }
    let framing = RequestFraming::of(method, announced, end, exact);
    match framing {
        RequestFraming::None => {}
        RequestFraming::Length(n) => {
            buf.put_slice(b"content-length: ");
            buf.put_slice(itoa(n, &mut [0; 20]));
            buf.put_slice(b"\r\n");
        }
        RequestFraming::Chunked => buf.put_slice(b"transfer-encoding: chunked\r\n"),
    }
    buf.put_slice(b"\r\n");
    EncodedRequest { framing, upgrade }
}

pub(crate) fn put_field(buf: &mut BytesMut, name: &[u8], value: &[u8]) {
    buf.put_slice(name);
    buf.put_slice(b": ");
    buf.put_slice(value);
    buf.put_slice(b"\r\n");
}

/// The size line that opens a chunk of `len` bytes.
pub fn chunk_size_line(len: usize) -> Bytes {
    Bytes::from(format!("{len:x}\r\n"))
}

/// Fields a trailer section must not carry: they frame, route, authenticate or describe
/// the message, and a recipient acting on them after the body would be misled (RFC 9110
/// §6.5.1), nor hop-by-hop ones.
static NOT_TRAILERS: [HeaderName; 12] = [
    header::AUTHORIZATION,
    header::WWW_AUTHENTICATE,
    header::PROXY_AUTHENTICATE,
    header::CACHE_CONTROL,
    header::CONTENT_ENCODING,
    header::CONTENT_LENGTH,
    header::CONTENT_RANGE,
    header::CONTENT_TYPE,
    header::HOST,
    header::MAX_FORWARDS,
    header::SET_COOKIE,
    header::PROXY_AUTHORIZATION,
];

/// The last chunk, with `trailers` (an empty map for none), ending a chunked body.
pub fn last_chunk(trailers: &HeaderMap) -> Bytes {
    if trailers.is_empty() {
        return Bytes::from_static(b"0\r\n\r\n");
    }
    let mut buf = BytesMut::with_capacity(64);
    buf.put_slice(b"0\r\n");
    for (name, value) in trailers {
        if !NOT_TRAILERS.contains(name) && hop_by_hop(name).is_none() {
            put_field(&mut buf, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    buf.put_slice(b"\r\n");
    buf.freeze()
}

pub(crate) fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// A response head, with what it says about the body and the connection.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Decoder,
    /// Whether the connection may carry another exchange once this one is done.
    pub keep_alive: bool,
}

/// Parses the response head at the start of `buf` and takes it off; None while incomplete.
/// `head` says the request was HEAD, `upgrade` that it asked to switch protocols.
pub fn parse_response(
    buf: &mut BytesMut,
    cache: &mut HeadCache,
    head: bool,
    upgrade: bool,
) -> Result<Option<ResponseHead>, Malformed> {
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let len =
        match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut response, buf, &mut fields) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Err(Malformed::HeadTooLarge),
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
    let code = response.code.unwrap_or_default();
    let status = StatusCode::from_u16(code).map_err(|_| Malformed::Head(httparse::Error::Status))?;
    let http10 = response.version == Some(0);
    cache.note_spans(buf.as_ptr(), response.headers.iter().map(|f| (f.name.as_bytes(), f.value)));
    let bytes = buf.split_to(len).freeze();

    // Hop-by-hop fields stay on this connection, but for those a switch of protocols needs.
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let mut headers = crate::recycle::header_map(cache.spans.len());
    let mut length: Option<u64> = None;
    let (mut chunked, mut transfer_encoded) = (false, false);
    let mut connection = ConnectionOptions::default();
    for (i, &((n0, n1), (v0, v1))) in cache.spans.iter().enumerate() {
        let (name, field) = cache.names.get(i, &bytes[n0..n1]).map_err(|_| Malformed::HeaderName)?;
        let raw = &bytes[v0..v1];
        match field {
            Field::ContentLength => merge_length(&mut length, raw).ok_or(Malformed::ContentLength)?,
            Field::TransferEncoding => {
                transfer_encoded = true;
                chunked = ends_chunked(raw);
            }
            Field::Connection => connection.read(raw),
            _ => {}
        }
        if !switching && field.hop_by_hop() {
            continue;
        }
        let value = HeaderValue::from_maybe_shared(bytes.slice(v0..v1));
        headers.append(name, value.map_err(|_| Malformed::Head(httparse::Error::HeaderValue))?);
    }

    if !switching {
        connection.remove_named(&mut headers);
    }
    let bodiless =
        head || status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    if status == StatusCode::SWITCHING_PROTOCOLS && !upgrade {
        return Err(Malformed::UnaskedUpgrade);
    }
    let body = if bodiless {
        Decoder::Done
    } else if transfer_encoded {
        // Transfer-Encoding overrides Content-Length, which must not travel on with it.
        headers.remove(header::CONTENT_LENGTH);
        if chunked { Decoder::Chunked(Chunk::Size) } else { Decoder::Eof }
    } else {
        match length {
            Some(0) => Decoder::Done,
            Some(n) => Decoder::Length(n),
            None => Decoder::Eof,
        }
    };
    // The connection ends with this response if the backend says so, if HTTP/1.0 does not
    // ask to keep it (or frames by chunks, which 1.0 does not have), if the body runs to the
    // close, if both headers frame it (something is confused: no second exchange), or if the
    // protocol switches.
    let ends = connection.close
        || (http10 && (!connection.keep_alive || transfer_encoded))
        || body == Decoder::Eof
        || (transfer_encoded && length.is_some())
        || status == StatusCode::SWITCHING_PROTOCOLS;
    Ok(Some(ResponseHead { status, headers, body, keep_alive: !ends }))
}

/// Adds a Content-Length field (a value, or a list of them) to the length seen so far;
/// None if it is not a length or differs from one seen.
pub(crate) fn merge_length(length: &mut Option<u64>, raw: &[u8]) -> Option<()> {
    for n in raw.split(|&b| b == b',') {
        let n = parse_length(n.trim_ascii())?;
        if length.is_some_and(|l| l != n) {
            return None;
        }
        *length = Some(n);
    }
    Some(())
}

/// Whether a Transfer-Encoding ends in `chunked`: only then does it frame the body (RFC
/// 9112 §6.3).
pub(crate) fn ends_chunked(raw: &[u8]) -> bool {
    raw.rsplit(|&b| b == b',').next().is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// Decimal digits only: no sign, no spaces inside.
pub(crate) fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0')))
}

/// Where a body stands (a response's, or a request's on the server side).
#[derive(Debug, PartialEq)]
pub enum Decoder {
    /// This many bytes still to come.
    Length(u64),
    Chunked(Chunk),
    /// Until the sender closes the connection (responses only).
    Eof,
    Done,
}

#[derive(Debug, PartialEq)]
pub enum Chunk {
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    Trailers,
}

#[derive(Debug, PartialEq)]
pub enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    /// The body is complete.
    End,
    /// Nothing more can be decoded from what has been read.
    NeedMore,
}

impl Decoder {
    /// Takes what it can of the body off the start of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Malformed> {
        loop {
            match self {
                Decoder::Done => return Ok(Decoded::End),
                Decoder::Eof if buf.is_empty() => return Ok(Decoded::NeedMore),
                Decoder::Eof => return Ok(Decoded::Data(buf.split().freeze())),
                Decoder::Length(left) | Decoder::Chunked(Chunk::Data(left)) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = (*left).min(buf.len() as u64);
                    *left -= n;
                    if *left == 0 {
                        *self = match self {
                            Decoder::Length(_) => Decoder::Done,
                            _ => Decoder::Chunked(Chunk::DataEnd),
                        };
                    }
                    return Ok(Decoded::Data(buf.split_to(n as usize).freeze()));
                }
                Decoder::Chunked(Chunk::Size) => {
                    let Some(line) = buf.iter().take(MAX_CHUNK_LINE).position(|&b| b == b'\n') else {
                        return if buf.len() >= MAX_CHUNK_LINE { Err(Malformed::Chunk) } else { Ok(Decoded::NeedMore) };
                    };
                    let size = parse_chunk_size(&buf[..=line]).ok_or(Malformed::Chunk)?;
                    let _ = buf.split_to(line + 1);
                    *self = Decoder::Chunked(if size == 0 { Chunk::Trailers } else { Chunk::Data(size) });
                }
                Decoder::Chunked(Chunk::DataEnd) => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Malformed::Chunk);
                    }
                    let _ = buf.split_to(2);
                    *self = Decoder::Chunked(Chunk::Size);
                }
                Decoder::Chunked(Chunk::Trailers) => {
                    if buf.starts_with(b"\r\n") {
                        let _ = buf.split_to(2);
                        *self = Decoder::Done;
                        return Ok(Decoded::End);
                    }
                    let mut fields = [httparse::EMPTY_HEADER; 32];
                    let (len, fields) = match httparse::parse_headers(buf, &mut fields) {
                        Ok(httparse::Status::Complete(parsed)) => parsed,
                        Ok(httparse::Status::Partial) if buf.len() < MAX_TRAILERS => return Ok(Decoded::NeedMore),
                        _ => return Err(Malformed::Trailers),
                    };
                    // httparse takes bare LFs; where the body ends must not be read two ways.
                    if buf[..len].iter().enumerate().any(|(i, &b)| b == b'\n' && (i == 0 || buf[i - 1] != b'\r')) {
                        return Err(Malformed::Trailers);
                    }
                    let mut trailers = HeaderMap::with_capacity(fields.len());
                    for f in fields {
                        let name = HeaderName::from_bytes(f.name.as_bytes()).map_err(|_| Malformed::Trailers)?;
                        let value = HeaderValue::from_bytes(f.value).map_err(|_| Malformed::Trailers)?;
                        trailers.append(name, value);
                    }
                    let _ = buf.split_to(len);
                    *self = Decoder::Done;
                    return Ok(Decoded::Trailers(trailers));
                }
            }
        }
    }

    /// The sender closed the connection: the end of a body read to the close, an error for
    /// any other that is not complete.
    pub fn closed(&mut self) -> Result<(), Malformed> {
        match self {
            Decoder::Eof | Decoder::Done => {
                *self = Decoder::Done;
                Ok(())
            }
            _ => Err(Malformed::Incomplete),
        }
    }

    pub fn is_done(&self) -> bool {
        *self == Decoder::Done
    }

    /// The bytes left, when known.
    pub fn exact(&self) -> Option<u64> {
        match self {
            Decoder::Length(n) => Some(*n),
            Decoder::Done => Some(0),
            _ => None,
        }
    }
}

/// `1a;name=value\r\n` → 26: hex digits (at most 16, so that the size fits), optional
/// whitespace, an optional extension of printable bytes, and CRLF. Bare LFs and other
/// control bytes are refused: they are how chunked bodies get smuggled.
fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r\n")?;
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return None;
    }
    let rest = &line[digits..];
    let rest = &rest[rest.iter().take_while(|&&b| b == b' ' || b == b'\t').count()..];
    if !(rest.is_empty() || rest[0] == b';') || rest.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return None;
    }
    let hex = std::str::from_utf8(&line[..digits]).ok()?;
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<Option<ResponseHead>, Malformed> {
        parse_as(raw, false, false)
    }

    /// A response to a HEAD request (`head`), or to one asking to switch (`upgrade`).
    fn parse_as(raw: &str, head: bool, upgrade: bool) -> Result<Option<ResponseHead>, Malformed> {
        parse_response(&mut BytesMut::from(raw), &mut HeadCache::default(), head, upgrade)
    }

    fn decode_all(decoder: &mut Decoder, raw: &[u8]) -> Result<(Vec<u8>, Option<HeaderMap>), Malformed> {
        let (mut body, mut trailers) = (Vec::new(), None);
        // Byte by byte: a body may arrive split anywhere.
        let mut buf = BytesMut::new();
        for &b in raw {
            buf.put_u8(b);
            loop {
                match decoder.decode(&mut buf)? {
                    Decoded::Data(d) => body.extend_from_slice(&d),
                    Decoded::Trailers(t) => trailers = Some(t),
                    Decoded::End | Decoded::NeedMore => break,
                }
            }
        }
        Ok((body, trailers))
    }

    #[test]
    fn request_heads_carry_the_bodys_own_framing() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("example.com"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        let mut buf = BytesMut::new();
        let encoded = encode_request(&mut buf, &Method::POST, "/p?q=1", &headers, "10.0.0.1:80", false, None);
        assert_eq!(
            buf,
            "POST /p?q=1 HTTP/1.1\r\nhost: example.com\r\nx-a: 1\r\nx-a: 2\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        assert!(encoded.framing == RequestFraming::Chunked && !encoded.upgrade);

        let mut buf = BytesMut::new();
        headers.clear();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        let encoded = encode_request(&mut buf, &Method::GET, "/", &headers, "10.0.0.1:80", false, Some(12));
        assert_eq!(buf, "GET / HTTP/1.1\r\nupgrade: websocket\r\nhost: 10.0.0.1:80\r\ncontent-length: 12\r\n\r\n");
        assert!(encoded.framing == RequestFraming::Length(12) && encoded.upgrade);
    }

    #[test]
    fn trailers_never_carry_fields_that_frame_route_or_describe_the_message() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", HeaderValue::from_static("abc"));
        trailers.insert(header::SET_COOKIE, HeaderValue::from_static("a=b"));
        trailers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        trailers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        trailers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        trailers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        trailers.insert(header::HOST, HeaderValue::from_static("elsewhere"));
        assert_eq!(last_chunk(&trailers), "0\r\nx-checksum: abc\r\n\r\n");
        assert_eq!(last_chunk(&HeaderMap::new()), "0\r\n\r\n");
    }

    #[test]
    fn empty_bodies_are_announced_only_where_one_is_expected() {
        assert_eq!(RequestFraming::of(&Method::GET, false, true, Some(0)), RequestFraming::None);
        assert_eq!(RequestFraming::of(&Method::GET, true, true, Some(0)), RequestFraming::Length(0));
        assert_eq!(RequestFraming::of(&Method::POST, false, true, Some(0)), RequestFraming::Length(0));
        assert_eq!(RequestFraming::of(&Method::POST, false, false, Some(5)), RequestFraming::Length(5));
        assert_eq!(RequestFraming::of(&Method::POST, false, false, None), RequestFraming::Chunked);
    }

    #[test]
    fn response_heads_are_parsed_once_complete() {
        let raw = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\nx-a: 2\r\n\r\nok";
        assert!(parse(&raw[..20]).unwrap().is_none());
        let mut buf = BytesMut::from(raw);
        let head = parse_response(&mut buf, &mut HeadCache::default(), false, false).unwrap().unwrap();
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.headers.get_all("x-a").iter().collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(head.body, Decoder::Length(2));
        assert!(head.keep_alive);
        assert_eq!(buf, "ok", "the head is taken off the buffer, the body left");
    }

    #[test]
    fn heads_on_one_connection_are_read_alike_whatever_their_names_did_before() {
        let mut cache = HeadCache::default();
        let mut next = |raw: &str| {
            let head = parse_response(&mut BytesMut::from(raw), &mut cache, false, false).unwrap().unwrap();
            head.headers.iter().map(|(n, v)| format!("{n}={}", v.to_str().unwrap())).collect::<Vec<_>>()
        };
        let first = "HTTP/1.1 200 OK\r\nServer: a\r\nX-Id: 1\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(next(first), ["server=a", "x-id=1", "content-length=0"]);
        assert_eq!(next(first), ["server=a", "x-id=1", "content-length=0"]);
        // Names moved, spelled otherwise, or new, in the places the cache knows.
        let second = "HTTP/1.1 200 OK\r\nX-ID: 2\r\nserver: b\r\nX-Other: 3\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(next(second), ["x-id=2", "server=b", "x-other=3", "content-length=0"]);
        assert_eq!(next("HTTP/1.1 204 No Content\r\nX-Id: 4\r\n\r\n"), ["x-id=4"]);
        // Long names are not remembered, and read the same.
        let long = "X".repeat(REMEMBERED_NAME_LEN + 1);
        let raw = format!("HTTP/1.1 204 No Content\r\n{long}: 5\r\n\r\n");
        assert_eq!(next(&raw), [format!("{}=5", long.to_lowercase())]);
        assert_eq!(next(&raw), [format!("{}=5", long.to_lowercase())]);
        // What a name means to framing and forwarding moves with it, in a cache that knew
        // other names at those places.
        let framed = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\nX-Id: 6\r\n\r\n";
        for _ in 0..2 {
            let head = parse_response(&mut BytesMut::from(framed), &mut cache, false, false).unwrap().unwrap();
            assert_eq!((head.body, head.keep_alive), (Decoder::Chunked(Chunk::Size), false));
            assert_eq!(head.headers.keys().collect::<Vec<_>>(), ["x-id"]);
        }
        // And ordinary names where those stood are forwarded, and frame nothing.
        let plain = "HTTP/1.1 200 OK\r\nX-Te: chunked\r\nX-Conn: close\r\nContent-Length: 2\r\n\r\n";
        let head = parse_response(&mut BytesMut::from(plain), &mut cache, false, false).unwrap().unwrap();
        assert_eq!((head.body, head.keep_alive), (Decoder::Length(2), true));
        assert_eq!(head.headers.keys().collect::<Vec<_>>(), ["x-te", "x-conn", "content-length"]);
        // An invalid name is refused even where a valid one stood before.
        let bad = "HTTP/1.1 200 OK\r\nX-Id\x7f: 5\r\n\r\n";
        assert!(parse_response(&mut BytesMut::from(bad), &mut cache, false, false).is_err());
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let body = |raw: &str| parse(raw).unwrap().unwrap().body;
        assert_eq!(body("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), Decoder::Chunked(Chunk::Size));
        assert_eq!(body("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"), Decoder::Eof);
        assert_eq!(body("HTTP/1.1 200 OK\r\n\r\n"), Decoder::Eof);
        assert_eq!(body("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"), Decoder::Done);
        assert_eq!(body("HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n"), Decoder::Done);
        assert_eq!(body("HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n"), Decoder::Length(7));
        let head = parse_as("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true, false);
        assert_eq!(head.unwrap().unwrap().body, Decoder::Done, "a response to HEAD has no body");

        let both =
            parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap().unwrap();
        assert_eq!(both.body, Decoder::Chunked(Chunk::Size));
        assert!(both.headers.get(header::CONTENT_LENGTH).is_none(), "Content-Length does not travel on");
        assert!(!both.keep_alive, "a connection that sent both is not used again");
    }

    #[test]
    fn ambiguous_or_oversized_heads_are_refused() {
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX\0: a\r\n\r\n",
            "HTTP/2.0 200 OK\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
        ] {
            assert!(parse(raw).is_err(), "{raw:?} is refused");
        }
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(MAX_HEAD));
        assert!(matches!(parse(&huge), Err(Malformed::HeadTooLarge)));
        let many = format!("HTTP/1.1 200 OK\r\n{}\r\n", "X: a\r\n".repeat(MAX_HEADERS + 1));
        assert!(parse(&many).is_err());
        assert!(parse_as("HTTP/1.1 101 Switching Protocols\r\n\r\n", false, true).is_ok());
    }

    #[test]
    fn hop_by_hop_fields_stay_behind_but_for_a_switch_of_protocols() {
        let raw = "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\nUpgrade: h2c\r\nX-End: 1\r\nContent-Length: 0\r\n\r\n";
        let head = parse(raw).unwrap().unwrap();
        let mut names: Vec<_> = head.headers.keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-length", "x-end"]);
        let raw = "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
        let head = parse_as(raw, false, true).unwrap().unwrap();
        assert_eq!(head.headers["connection"], "upgrade");
        assert_eq!(head.headers["upgrade"], "websocket");
    }

    #[test]
    fn connections_are_kept_as_the_response_allows() {
        let keep = |raw: &str| parse(raw).unwrap().unwrap().keep_alive;
        assert!(keep("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(!keep("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: x, Close\r\n\r\n"));
        assert!(!keep("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(keep("HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"));
        assert!(
            !keep("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"),
            "chunked framing in HTTP/1.0 is faulty (RFC 9112 §6.1)"
        );
        assert!(!keep("HTTP/1.1 200 OK\r\n\r\n"), "a body read to the close ends its connection");
    }

    #[test]
    fn chunked_bodies_decode_with_extensions_and_trailers() {
        let mut d = Decoder::Chunked(Chunk::Size);
        let (body, trailers) =
            decode_all(&mut d, b"5;a=b\r\nhello\r\n1\t ; x\r\n!\r\n0\r\nGrpc-Status: 0\r\n\r\n").unwrap();
        assert_eq!(body, b"hello!");
        assert_eq!(trailers.unwrap()["grpc-status"], "0");
        assert!(d.is_done());

        let mut d = Decoder::Chunked(Chunk::Size);
        assert_eq!(decode_all(&mut d, b"A\r\n0123456789\r\n0\r\n\r\n").unwrap(), (b"0123456789".to_vec(), None));
        assert!(d.is_done());
    }

    #[test]
    fn malformed_chunks_are_refused() {
        for raw in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5;a\nb\r\nhello\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"-5\r\n",
            b"\r\n",
            b"11111111111111111\r\n",
            b"5 5\r\n",
            b"5\r;x\r\nhello\r\n",
            b"0\r\n\n",
            b"0\r\nx: 1\n\r\n",
        ] {
            let mut d = Decoder::Chunked(Chunk::Size);
            assert!(decode_all(&mut d, raw).is_err(), "{:?} is refused", String::from_utf8_lossy(raw));
        }
        let mut d = Decoder::Chunked(Chunk::Size);
        assert!(decode_all(&mut d, &vec![b'1'; MAX_CHUNK_LINE + 1]).is_err(), "an endless size line is refused");
    }

    #[test]
    fn a_body_cut_short_is_an_error_but_one_read_to_the_close_is_not() {
        let mut d = Decoder::Length(10);
        assert_eq!(decode_all(&mut d, b"12345").unwrap().0, b"12345");
        assert!(d.closed().is_err());
        let mut d = Decoder::Eof;
        assert_eq!(decode_all(&mut d, b"12345").unwrap().0, b"12345");
        assert!(d.closed().is_ok() && d.is_done());
        let mut d = Decoder::Length(3);
        let mut buf = BytesMut::from("abcHTTP/1.1");
        assert_eq!(d.decode(&mut buf).unwrap(), Decoded::Data(Bytes::from_static(b"abc")));
        assert_eq!(buf, "HTTP/1.1", "no more than the length is taken");
    }
}
