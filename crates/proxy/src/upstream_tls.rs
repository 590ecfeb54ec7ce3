//! TLS to backends, as a BackendTLSPolicy asks: the certificate must chain to the policy's
//! CAs (or the system's) and carry the policy's hostname, or one of its subjectAltNames.
//! Each such backend gets its own pooled client, built when the configuration is compiled.

use std::{
    collections::HashMap,
    io,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::Duration,
};

use hyper_util::{
    client::legacy::{
        Client,
        connect::{Connected, Connection, HttpConnector},
    },
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::aws_lc_rs,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use translate::ir::{BackendProtocol, BackendTls, CertifiedKey, Trust};

use crate::{BoxError, UpstreamBody};

pub type TlsClient = Client<TlsConnector, UpstreamBody>;

/// How requests to a backend under a BackendTLSPolicy go out.
#[allow(clippy::large_enum_variant)] // one per backend, built once per configuration
pub enum UpstreamTls {
    /// A client without a certificate of its own, and one per Gateway client certificate
    /// (`spec.tls.backend.clientCertificateRef`), by the certificate's Secret.
    Clients { anonymous: TlsClient, by_certificate: HashMap<String, TlsClient> },
    /// No usable trust anchor or name: requests answer 500 rather than go out unverified.
    Invalid,
}

impl UpstreamTls {
    /// Clients for `tls`, one for each client certificate in `certificates`.
    pub fn new(tls: &BackendTls, protocol: BackendProtocol, certificates: &[&CertifiedKey]) -> Self {
        let Some(anonymous) = client(tls, protocol, None) else { return UpstreamTls::Invalid };
        let by_certificate =
            certificates.iter().filter_map(|c| Some((c.source.clone(), client(tls, protocol, Some(c))?))).collect();
        UpstreamTls::Clients { anonymous, by_certificate }
    }

    /// The client for a request from a listener whose Gateway presents `certificate`.
    pub fn client(&self, certificate: Option<&str>) -> Option<&TlsClient> {
        match self {
            UpstreamTls::Clients { anonymous, by_certificate } => {
                Some(certificate.and_then(|c| by_certificate.get(c)).unwrap_or(anonymous))
            }
            UpstreamTls::Invalid => None,
        }
    }
}

fn client(tls: &BackendTls, protocol: BackendProtocol, certificate: Option<&CertifiedKey>) -> Option<TlsClient> {
    let (config, server_name) = client_config(tls, protocol, certificate)?;
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    let connector = TlsConnector { http, config, server_name };
    let mut builder = Client::builder(TokioExecutor::new());
    builder.pool_idle_timeout(Duration::from_secs(60)).pool_timer(TokioTimer::new());
    if protocol == BackendProtocol::H2c {
        builder.http2_only(true).timer(TokioTimer::new());
    }
    Some(builder.build(connector))
}

fn client_config(
    tls: &BackendTls,
    protocol: BackendProtocol,
    certificate: Option<&CertifiedKey>,
) -> Option<(Arc<ClientConfig>, ServerName<'static>)> {
    let mut roots = RootCertStore::empty();
    match &tls.trust {
        Trust::Pem(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()).filter_map(Result::ok) {
                roots.add(cert).ok()?;
            }
        }
        Trust::System => roots.extend(system_roots().iter().cloned()),
        Trust::Invalid => return None,
    }
    let provider = Arc::new(aws_lc_rs::default_provider());
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().ok()?;
    let server_name = ServerName::try_from(tls.server_name.clone()).ok()?;
    // subjectAltNames replace the hostname check; URIs cannot be checked by webpki and
    // never match.
    let names = if tls.subject_alt_names.is_empty() {
        vec![server_name.clone()]
    } else {
        tls.subject_alt_names.iter().filter_map(|n| ServerName::try_from(n.clone()).ok()).collect()
    };
    let verifier = Arc::new(NamesVerifier { inner, names });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match certificate {
        None => builder.with_no_client_auth(),
        Some(c) => {
            let chain = CertificateDer::pem_slice_iter(c.cert_pem.as_bytes()).filter_map(Result::ok).collect();
            let key = PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).ok()?;
            builder.with_client_auth_cert(chain, key).ok()?
        }
    };
    config.alpn_protocols = match protocol {
        BackendProtocol::H2c => vec![b"h2".to_vec()],
        BackendProtocol::Http1 | BackendProtocol::WebSocket => vec![b"http/1.1".to_vec()],
    };
    Some((Arc::new(config), server_name))
}

/// The system's trust store, read once.
fn system_roots() -> &'static [rustls::pki_types::TrustAnchor<'static>] {
    static ROOTS: OnceLock<Vec<rustls::pki_types::TrustAnchor<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!("loading the system trust store: {e}");
        }
        let mut store = RootCertStore::empty();
        store.add_parsable_certificates(found.certs);
        store.roots
    })
}

/// Chain validation by webpki; the name check passes if any of the allowed names matches.
#[derive(Debug)]
struct NamesVerifier {
    inner: Arc<WebPkiServerVerifier>,
    names: Vec<ServerName<'static>>,
}

impl ServerCertVerifier for NamesVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut last = rustls::Error::General("no name to verify the certificate against".into());
        for name in &self.names {
            match self.inner.verify_server_cert(end_entity, intermediates, name, ocsp, now) {
                Ok(ok) => return Ok(ok),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// TCP, then a TLS handshake with the policy's hostname as SNI.
#[derive(Clone)]
pub struct TlsConnector {
    http: HttpConnector,
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl tower_service::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<TlsConn>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.http.call(uri);
        let tls = tokio_rustls::TlsConnector::from(self.config.clone());
        let name = self.server_name.clone();
        Box::pin(async move {
            let tcp = connecting.await?.into_inner();
            let stream = tls.connect(name, tcp).await?;
            Ok(TokioIo::new(TlsConn(stream)))
        })
    }
}

pub struct TlsConn(tokio_rustls::client::TlsStream<TcpStream>);

impl Connection for TlsConn {
    fn connected(&self) -> Connected {
        let (tcp, session) = self.0.get_ref();
        let connected = tcp.connected();
        if session.alpn_protocol() == Some(b"h2") { connected.negotiated_h2() } else { connected }
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
