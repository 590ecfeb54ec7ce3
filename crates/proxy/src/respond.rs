//! Responses the proxy makes itself, in one place: HTTP status codes, or gRPC statuses for
//! gRPC requests, so that gRPC clients see UNAVAILABLE or DEADLINE_EXCEEDED, not bare 5xx.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

use crate::Body;

/// Why the proxy answered a request itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    NoRoute,
    Misdirected,
    BadRequest,
    /// A rule or backend that cannot be used (invalid reference, unresolved filter).
    Invalid,
    NoEndpoints,
    UpstreamFailed,
    Timeout,
}

impl Refusal {
    fn status(self) -> StatusCode {
        match self {
            Refusal::NoRoute => StatusCode::NOT_FOUND,
            Refusal::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            Refusal::BadRequest => StatusCode::BAD_REQUEST,
            Refusal::Invalid => StatusCode::INTERNAL_SERVER_ERROR,
            Refusal::NoEndpoints => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::UpstreamFailed => StatusCode::BAD_GATEWAY,
            Refusal::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// gRPC status code (grpc/doc/statuscodes.md) and message.
    fn grpc(self) -> (u8, &'static str) {
        match self {
            Refusal::NoRoute => (12, "no route for this method"),
            Refusal::Misdirected => (14, "misdirected request"),
            Refusal::BadRequest => (13, "malformed request"),
            Refusal::Invalid => (14, "the route's backend is not valid"),
            Refusal::NoEndpoints => (14, "no healthy upstream"),
            Refusal::UpstreamFailed => (14, "upstream connection failed"),
            Refusal::Timeout => (4, "upstream request timed out"),
        }
    }

    pub fn into_response(self, grpc: bool) -> Response<Body> {
        if grpc {
            // Trailers-only response: the status travels in the headers.
            let (code, message) = self.grpc();
            let mut r = Response::new(empty());
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            r.headers_mut().insert("grpc-status", HeaderValue::from(u16::from(code)));
            r.headers_mut().insert("grpc-message", HeaderValue::from_static(message));
            return r;
        }
        let status = self.status();
        let mut r = Response::new(full(format!("{}\n", status.canonical_reason().unwrap_or(""))));
        *r.status_mut() = status;
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        if self == Refusal::BadRequest {
            // What follows a malformed request on this connection cannot be trusted.
            r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        r
    }
}

pub fn empty() -> Body {
    Full::new(Bytes::new()).map_err(|never| match never {}).boxed_unsync()
}

pub fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into()).map_err(|never| match never {}).boxed_unsync()
}
