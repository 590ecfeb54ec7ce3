//! Requests from clients: HTTP/1.1 served by our own connection loop ([`http1`]), HTTP/2 by
//! hyper's server; both hand the handler a [`RequestBody`].

pub mod http1;
pub mod request;
pub mod response;

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use bytes::Bytes;
use http::Request;
use http_body::{Frame, SizeHint};
use tokio::sync::oneshot;

use crate::{BoxError, lock, rewind::Rewind};

/// A client's connection once it switched protocols, with what it sent past the head.
pub type Upgraded = Rewind<Box<dyn http1::Io>>;

/// The connection a request that asks to switch protocols hands over once its 101 is
/// written: in the request's extensions (which must be `Clone`, hence the shared slot).
#[derive(Clone)]
pub struct OnUpgrade(Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>);

impl OnUpgrade {
    pub fn new(connection: oneshot::Receiver<Upgraded>) -> Self {
        Self(Arc::new(Mutex::new(Some(connection))))
    }

    /// Takes it from a request that asked to switch protocols (over HTTP/1.1).
    pub fn take<B>(req: &mut Request<B>) -> Option<Self> {
        req.extensions_mut().remove::<Self>()
    }

    pub async fn connection(self) -> Option<Upgraded> {
        let connection = lock(&self.0).take()?;
        connection.await.ok()
    }
}

/// The body of a request from a client.
pub enum RequestBody {
    Http1(http1::BodyReader),
    Http2(hyper::body::Incoming),
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Http1(body) => Pin::new(body).poll_frame(cx),
            RequestBody::Http2(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Http1(body) => body.is_end_stream(),
            RequestBody::Http2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Http1(body) => body.size_hint(),
            RequestBody::Http2(body) => body.size_hint(),
        }
    }
}
