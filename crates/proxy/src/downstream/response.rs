//! HTTP/1.1 response heads to clients, as bytes (RFC 9112): the status line, the fields,
//! and the framing we choose for the body. No I/O here.

use std::{cell::RefCell, time::SystemTime};

use bytes::{BufMut, BytesMut};
use http::{HeaderMap, StatusCode, header};

use crate::upstream::codec::{itoa, put_field};

/// How a response body goes on the wire.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Framing {
    /// No body, whatever the response carries: the answer to HEAD, 1xx, 204 and 304. The
    /// length, if any, is the one a GET would have had (it is sent as is).
    NoBody(Option<u64>),
    Length(u64),
    Chunked,
    /// Until the connection closes: an HTTP/1.0 client and a body of unknown length.
    Close,
}

impl Framing {
    /// For a response with `status` to a request (`head`: HEAD, `http10`: HTTP/1.0), whose
    /// body's length is `exact`, or else `declared` by its Content-Length.
    pub fn of(
        status: StatusCode,
        head: bool,
        http10: bool,
        exact: Option<u64>,
        declared: impl FnOnce() -> Option<u64>,
    ) -> Self {
        if status.is_informational() || status == StatusCode::NO_CONTENT {
            Self::NoBody(None)
        } else if head || status == StatusCode::NOT_MODIFIED {
            Self::NoBody(exact.filter(|&n| n > 0).or_else(declared))
        } else if let Some(n) = exact.or_else(declared) {
            Self::Length(n)
        } else if http10 {
            Self::Close
        } else {
            Self::Chunked
        }
    }
}

/// What the head says about the connection.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Connection {
    /// Kept for another request: HTTP/1.0 clients are told so.
    KeepAlive {
        http10: bool,
    },
    Close,
    /// Switching protocols: the response's own Connection and Upgrade go out.
    Upgrade,
}

/// Appends the head of a response. Framing and connection fields are ours to set (the
/// response's own are replaced), and a Date is added when the response has none. A
/// response of ours may ask for the connection to close (`Connection: close`, after a
/// malformed request): the connection it was written with is returned.
pub fn encode_response(
    buf: &mut BytesMut,
    status: StatusCode,
    headers: &HeaderMap,
    framing: Framing,
    mut connection: Connection,
) -> Connection {
    buf.reserve(128 + headers.len() * 48);
    buf.put_slice(b"HTTP/1.1 ");
    buf.put_slice(status.as_str().as_bytes());
    buf.put_u8(b' ');
    buf.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    buf.put_slice(b"\r\n");
    let mut dated = false;
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        if name == header::CONNECTION && connection != Connection::Upgrade {
            if value.as_bytes().split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close")) {
                connection = Connection::Close;
            }
            continue;
        }
        dated |= name == header::DATE;
        put_field(buf, name.as_str().as_bytes(), value.as_bytes());
    }
    if !dated {
        put_date(buf);
    }
    match framing {
        Framing::Length(n) | Framing::NoBody(Some(n)) => {
            buf.put_slice(b"content-length: ");
            buf.put_slice(itoa(n, &mut [0; 20]));
            buf.put_slice(b"\r\n");
        }
        Framing::Chunked => buf.put_slice(b"transfer-encoding: chunked\r\n"),
        Framing::NoBody(None) | Framing::Close => {}
    }
    match connection {
        Connection::KeepAlive { http10: true } => buf.put_slice(b"connection: keep-alive\r\n"),
        Connection::Close => buf.put_slice(b"connection: close\r\n"),
        Connection::KeepAlive { http10: false } | Connection::Upgrade => {}
    }
    buf.put_slice(b"\r\n");
    connection
}

/// The head of a response that refuses a request and ends the connection.
pub fn encode_refusal(buf: &mut BytesMut, status: StatusCode) {
    encode_response(buf, status, &HeaderMap::new(), Framing::Length(0), Connection::Close);
}

/// `date: ...`, formatted once a second per thread.
fn put_date(buf: &mut BytesMut) {
    thread_local! {
        static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, date)| {
        if *at != secs {
            date.copy_from_slice(httpdate::fmt_http_date(now).as_bytes());
            *at = secs;
        }
        put_field(buf, b"date", date);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn encode(status: u16, headers: &[(&str, &str)], framing: Framing, connection: Connection) -> String {
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(http::HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        let mut buf = BytesMut::new();
        encode_response(&mut buf, StatusCode::from_u16(status).unwrap(), &map, framing, connection);
        String::from_utf8(buf.to_vec()).unwrap()
    }

    #[test]
    fn a_head_has_our_framing_and_a_date() {
        let head = encode(
            200,
            &[("content-type", "text/plain"), ("content-length", "99"), ("transfer-encoding", "chunked")],
            Framing::Length(3),
            Connection::KeepAlive { http10: false },
        );
        assert!(head.starts_with("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ndate: "), "{head}");
        assert!(head.ends_with(" GMT\r\ncontent-length: 3\r\n\r\n"), "{head}");
        let head = encode(404, &[("date", "then")], Framing::Chunked, Connection::Close);
        assert_eq!(
            head,
            "HTTP/1.1 404 Not Found\r\ndate: then\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        );
        let head = encode(
            200,
            &[("connection", "keep-alive"), ("date", "d")],
            Framing::Close,
            Connection::KeepAlive { http10: true },
        );
        assert_eq!(head, "HTTP/1.1 200 OK\r\ndate: d\r\nconnection: keep-alive\r\n\r\n", "one Connection, ours");
        let head = encode(
            400,
            &[("connection", "close"), ("date", "d")],
            Framing::Length(0),
            Connection::KeepAlive { http10: false },
        );
        assert_eq!(
            head, "HTTP/1.1 400 Bad Request\r\ndate: d\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            "ours may close"
        );
        let head = encode(
            101,
            &[("connection", "upgrade"), ("upgrade", "websocket"), ("date", "d")],
            Framing::NoBody(None),
            Connection::Upgrade,
        );
        assert_eq!(
            head,
            "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\ndate: d\r\n\r\n"
        );
        let head = encode(599, &[("date", "d")], Framing::NoBody(None), Connection::Close);
        assert!(head.starts_with("HTTP/1.1 599 \r\n"), "a status without a reason phrase: {head:?}");
    }

    #[test]
    fn framing_by_status_method_and_body() {
        let none = || None;
        let ok = StatusCode::OK;
        assert_eq!(Framing::of(ok, false, false, Some(5), none), Framing::Length(5));
        assert_eq!(Framing::of(ok, false, false, None, || Some(7)), Framing::Length(7));
        assert_eq!(Framing::of(ok, false, false, None, none), Framing::Chunked);
        assert_eq!(Framing::of(ok, false, true, None, none), Framing::Close, "HTTP/1.0 has no chunks");
        assert_eq!(
            Framing::of(ok, true, false, Some(0), || Some(1234)),
            Framing::NoBody(Some(1234)),
            "HEAD tells GET's length"
        );
        assert_eq!(Framing::of(StatusCode::NO_CONTENT, false, false, Some(0), || Some(3)), Framing::NoBody(None));
        assert_eq!(Framing::of(StatusCode::NOT_MODIFIED, false, false, None, none), Framing::NoBody(None));
        assert_eq!(Framing::of(StatusCode::SWITCHING_PROTOCOLS, false, false, None, none), Framing::NoBody(None));
    }
}
