//! Envoy's ext_authz over gRPC (`envoy.service.auth.v3.Authorization/Check`), for the
//! ExternalAuth filter with protocol GRPC. Only the few message fields the exchange needs
//! are written and read, in protobuf's wire format, by hand: a `CheckRequest` carrying the
//! request's HTTP attributes, and the parts of a `CheckResponse` that decide.

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode};

use crate::ext_auth::grantable;

/// The gRPC method of the ext_authz service.
pub const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// A `CheckRequest` for `req` (its headers limited to `allowed`, all when empty) and the
/// start of its body, framed as one gRPC message.
pub fn check_request<B>(req: &Request<B>, tls: bool, allowed: &[String], body: &[u8]) -> Bytes {
    // AttributeContext.HttpRequest
    let mut http = BytesMut::new();
    string(&mut http, 2, req.method().as_str());
    // One map entry per name, repeated values joined with "," as Envoy does: a map keeps only
    // the last entry of a key, so the service would see another request than the backend.
    for name in req.headers().keys() {
        if allowed.is_empty() || allowed.iter().any(|a| a == name.as_str()) {
            let values: Vec<String> = req
                .headers()
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            let mut entry = BytesMut::new();
            string(&mut entry, 1, name.as_str());
            string(&mut entry, 2, &values.join(","));
            bytes(&mut http, 3, &entry);
        }
    }
    string(&mut http, 4, req.uri().path_and_query().map_or("/", |p| p.as_str()));
    if let Some(host) = req.headers().get(http::header::HOST) {
        bytes(&mut http, 5, host.as_bytes());
    }
    string(&mut http, 6, if tls { "https" } else { "http" });
    // The request's size, -1 when unknown (Envoy leaves `query` empty: it is in `path`).
    let size = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<i64>().ok())
        .unwrap_or(-1);
    varint_field(&mut http, 9, size as u64);
    string(&mut http, 10, protocol(req.version()));
    if !body.is_empty() {
        bytes(&mut http, 12, body);
    }
    // AttributeContext.Request { http = 2 }, AttributeContext { request = 4 },
    // CheckRequest { attributes = 1 }
    let mut request = BytesMut::new();
    bytes(&mut request, 2, &http);
    let mut attributes = BytesMut::new();
    bytes(&mut attributes, 4, &request);
    let mut check = BytesMut::new();
    bytes(&mut check, 1, &attributes);

    let mut framed = BytesMut::with_capacity(5 + check.len());
    framed.put_u8(0);
    framed.put_u32(check.len() as u32);
    framed.put_slice(&check);
    framed.freeze()
}

/// What a `CheckResponse` decided.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Headers to set (or append) on the request, and headers to remove from it.
    Allow { headers: Vec<(HeaderName, HeaderValue, bool)>, remove: Vec<String> },
    /// The client's answer.
    Deny { status: StatusCode, headers: Vec<(HeaderName, HeaderValue, bool)>, body: Bytes },
}

/// Reads a gRPC-framed `CheckResponse`; None if it does not parse.
pub fn decide(framed: &[u8]) -> Option<Decision> {
    let message = framed.get(5..)?;
    if framed[0] != 0 || u32::from_be_bytes(framed[1..5].try_into().ok()?) as usize != message.len() {
        return None;
    }
    // A field this reads, with another wire type than its own, makes the message broken:
    // read leniently, it could turn a denial into an OK.
    let mut code = 0;
    let mut denied = None;
    let mut ok = None;
    for field in Fields(message) {
        match field? {
            (1, Value::Bytes(status)) => code = varint_of(status, 1)?.unwrap_or(0),
            (2, Value::Bytes(d)) => denied = Some(d),
            (3, Value::Bytes(o)) => ok = Some(o),
            (1..=3, _) => return None,
            _ => {}
        }
    }
    if code == 0 {
        let mut headers = Vec::new();
        let mut remove = Vec::new();
        for field in Fields(ok.unwrap_or_default()) {
            match field? {
                (2, Value::Bytes(option)) => headers.extend(header_option(option)?),
                (5, Value::Bytes(name)) => remove.push(String::from_utf8_lossy(name).to_ascii_lowercase()),
                (2 | 5, _) => return None,
                _ => {}
            }
        }
        // Routing is done and the body framed: Host, Content-Length and hop-by-hop headers
        // are not the service's to change.
        headers.retain(|(name, _, _)| grantable(name));
        remove.retain(|name| HeaderName::from_bytes(name.as_bytes()).is_ok_and(|n| grantable(&n)));
        return Some(Decision::Allow { headers, remove });
    }
    let mut status = StatusCode::FORBIDDEN;
    let mut headers = Vec::new();
    let mut body = Bytes::new();
    for field in Fields(denied.unwrap_or_default()) {
        match field? {
            (1, Value::Bytes(http_status)) => {
                // A final status only: a 1xx would not end the exchange.
                let code = varint_of(http_status, 1)?.and_then(|c| u16::try_from(c).ok());
                if let Some(s) = code.filter(|c| (200..600).contains(c)).and_then(|c| StatusCode::from_u16(c).ok()) {
                    status = s;
                }
            }
            (2, Value::Bytes(option)) => headers.extend(header_option(option)?),
            (3, Value::Bytes(b)) => body = Bytes::copy_from_slice(b),
            (1..=3, _) => return None,
            _ => {}
        }
    }
    Some(Decision::Deny { status, headers, body })
}

/// Applies an allowing decision's header changes to the request's headers.
pub fn apply(request: &mut HeaderMap, headers: Vec<(HeaderName, HeaderValue, bool)>, remove: &[String]) {
    for name in remove {
        request.remove(name.as_str());
    }
    for (name, value, append) in headers {
        if append {
            request.append(name, value);
        } else {
            request.insert(name, value);
        }
    }
}

/// A `HeaderValueOption`: `header` (1: key 1, value 2, raw_value 3) and `append` (2, a
/// BoolValue). None if it does not parse; a header that is not a valid one is left out.
#[allow(clippy::type_complexity)]
fn header_option(option: &[u8]) -> Option<Option<(HeaderName, HeaderValue, bool)>> {
    let (mut key, mut value, mut append) = (&[][..], &[][..], false);
    for field in Fields(option) {
        match field? {
            (1, Value::Bytes(header)) => {
                for f in Fields(header) {
                    match f? {
                        (1, Value::Bytes(k)) => key = k,
                        (2 | 3, Value::Bytes(v)) => value = v,
                        (1..=3, _) => return None,
                        _ => {}
                    }
                }
            }
            (2, Value::Bytes(bool_value)) => append = varint_of(bool_value, 1)?.is_some_and(|b| b != 0),
            (1 | 2, _) => return None,
            _ => {}
        }
    }
    let parsed = HeaderName::from_bytes(key).ok().zip(HeaderValue::from_bytes(value).ok());
    Some(parsed.map(|(k, v)| (k, v, append)))
}

/// The varint field `number` of `message`: None if the message is broken or the field has
/// another wire type, `Some(None)` if it is absent (protobuf's default, 0).
fn varint_of(message: &[u8], number: u64) -> Option<Option<u64>> {
    let mut found = None;
    for field in Fields(message) {
        match field? {
            (n, Value::Varint(v)) if n == number => found = Some(v),
            (n, _) if n == number => return None,
            _ => {}
        }
    }
    Some(found)
}

fn protocol(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2",
        _ => "HTTP/1.1",
    }
}

fn varint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn varint_field(buf: &mut BytesMut, field: u32, v: u64) {
    varint(buf, u64::from(field) << 3);
    varint(buf, v);
}

fn bytes(buf: &mut BytesMut, field: u32, b: &[u8]) {
    varint(buf, (u64::from(field) << 3) | 2);
    varint(buf, b.len() as u64);
    buf.put_slice(b);
}

fn string(buf: &mut BytesMut, field: u32, s: &str) {
    bytes(buf, field, s.as_bytes());
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Other,
}

/// The fields of a message: (number, value); an item is None where the message is broken.
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = Option<(u64, Value<'a>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let field = (|| {
            let key = read_varint(&mut self.0)?;
            let value = match key & 7 {
                0 => Value::Varint(read_varint(&mut self.0)?),
                1 => Value::Other.skip(&mut self.0, 8)?,
                2 => {
                    let len = usize::try_from(read_varint(&mut self.0)?).ok()?;
                    let (b, rest) = (self.0.get(..len)?, self.0.get(len..)?);
                    self.0 = rest;
                    Value::Bytes(b)
                }
                5 => Value::Other.skip(&mut self.0, 4)?,
                _ => return None,
            };
            Some((key >> 3, value))
        })();
        if field.is_none() {
            // Broken: report it once, then stop.
            self.0 = &[];
        }
        Some(field)
    }
}

impl Value<'_> {
    fn skip(self, buf: &mut &[u8], n: usize) -> Option<Self> {
        *buf = buf.get(n..)?;
        Some(self)
    }
}

fn read_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for (i, byte) in buf.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(message: &[u8]) -> Vec<u8> {
        let mut f = vec![0];
        f.extend_from_slice(&(message.len() as u32).to_be_bytes());
        f.extend_from_slice(message);
        f
    }

    fn header_option(key: &str, value: &str, append: bool) -> BytesMut {
        let mut header = BytesMut::new();
        string(&mut header, 1, key);
        string(&mut header, 2, value);
        let mut option = BytesMut::new();
        bytes(&mut option, 1, &header);
        let mut flag = BytesMut::new();
        varint_field(&mut flag, 1, u64::from(append));
        bytes(&mut option, 2, &flag);
        option
    }

    #[test]
    fn an_ok_response_sets_appends_and_removes_headers() {
        let mut ok = BytesMut::new();
        bytes(&mut ok, 2, &header_option("x-user", "alice", false));
        bytes(&mut ok, 2, &header_option("x-group", "ops", true));
        string(&mut ok, 5, "X-Secret");
        let mut response = BytesMut::new();
        bytes(&mut response, 1, &[]); // status: code 0
        bytes(&mut response, 3, &ok);
        let Some(Decision::Allow { headers, remove }) = decide(&frame(&response)) else { panic!() };
        let mut request = HeaderMap::new();
        request.insert("x-user", HeaderValue::from_static("mallory"));
        request.insert("x-group", HeaderValue::from_static("dev"));
        request.insert("x-secret", HeaderValue::from_static("s"));
        apply(&mut request, headers, &remove);
        assert_eq!(request.get_all("x-user").iter().collect::<Vec<_>>(), ["alice"]);
        assert_eq!(request.get_all("x-group").iter().collect::<Vec<_>>(), ["dev", "ops"]);
        assert!(request.get("x-secret").is_none());
    }

    #[test]
    fn a_denied_response_gives_status_headers_and_body() {
        let mut status = BytesMut::new();
        varint_field(&mut status, 1, 7); // PERMISSION_DENIED
        let mut http_status = BytesMut::new();
        varint_field(&mut http_status, 1, 401);
        let mut denied = BytesMut::new();
        bytes(&mut denied, 1, &http_status);
        bytes(&mut denied, 2, &header_option("www-authenticate", "Bearer", false));
        string(&mut denied, 3, "no");
        let mut response = BytesMut::new();
        bytes(&mut response, 1, &status);
        bytes(&mut response, 2, &denied);
        let Some(Decision::Deny { status, headers, body }) = decide(&frame(&response)) else { panic!() };
        assert_eq!((status, body.as_ref()), (StatusCode::UNAUTHORIZED, &b"no"[..]));
        assert_eq!(headers[0].0, "www-authenticate");
        // A denial without an HTTP status is a 403.
        let mut bare = BytesMut::new();
        bytes(&mut bare, 1, &status_bytes(16));
        assert!(matches!(decide(&frame(&bare)), Some(Decision::Deny { status: StatusCode::FORBIDDEN, .. })));
    }

    fn status_bytes(code: u64) -> BytesMut {
        let mut s = BytesMut::new();
        varint_field(&mut s, 1, code);
        s
    }

    #[test]
    fn a_field_of_the_wrong_type_fails_closed() {
        // `status` as a varint instead of a message: read leniently, it would be an OK.
        let mut response = BytesMut::new();
        varint_field(&mut response, 1, 7);
        assert_eq!(decide(&frame(&response)), None);
        // Status.code as bytes.
        let mut response = BytesMut::new();
        bytes(&mut response, 1, &pb_bytes(1, b"7"));
        assert_eq!(decide(&frame(&response)), None);
    }

    fn pb_bytes(field: u32, b: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        bytes(&mut out, field, b);
        out
    }

    #[test]
    fn an_ok_response_cannot_change_host_or_content_length() {
        let mut ok = BytesMut::new();
        bytes(&mut ok, 2, &header_option("host", "evil.example", false));
        bytes(&mut ok, 2, &header_option("content-length", "1", false));
        string(&mut ok, 5, "host");
        let mut response = BytesMut::new();
        bytes(&mut response, 3, &ok);
        assert_eq!(decide(&frame(&response)), Some(Decision::Allow { headers: vec![], remove: vec![] }));
    }

    #[test]
    fn repeated_request_headers_are_one_entry() {
        let req = Request::get("/p?q=1")
            .header("x-tenant", "a")
            .header("x-tenant", "b")
            .header("host", "h")
            .body(())
            .unwrap();
        let framed = check_request(&req, false, &[], &[]);
        let text = String::from_utf8_lossy(&framed);
        assert!(text.contains("a,b"), "{text:?}");
        assert_eq!(text.matches("x-tenant").count(), 1, "{text:?}");
    }

    #[test]
    fn broken_messages_do_not_parse() {
        assert_eq!(decide(&[0, 0, 0, 0, 3, 0x0a, 0x05, 1]), None, "a length past the end");
        assert_eq!(decide(&[1, 0, 0, 0, 0]), None, "compressed");
        assert_eq!(decide(&[0, 0]), None, "no frame");
    }
}
