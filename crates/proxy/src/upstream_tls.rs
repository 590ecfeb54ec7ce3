//! TLS to backends, as a BackendTLSPolicy asks: the certificate must chain to the policy's
//! CAs (or the system's) and carry the policy's hostname, or one of its subjectAltNames
//! (hostnames, or URIs compared exactly).
//! Each such backend gets its own upstreams, made when the configuration is compiled.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
};

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        verify_server_cert_signed_by_trust_anchor, verify_server_name,
    },
    crypto::{WebPkiSupportedAlgorithms, aws_lc_rs},
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
    server::ParsedCertificate,
};
use translate::ir::{BackendProtocol, BackendTls, CertifiedKey, Trust};

use crate::upstream::{TlsSpec, Upstream, Upstreams};

/// How HTTP requests reach a backend under a BackendTLSPolicy.
pub struct TlsUpstreams {
    /// Without a client certificate of its own.
    pub anonymous: Arc<Upstream>,
    /// Presenting a Gateway's client certificate (`spec.tls.backend.clientCertificateRef`),
    /// by the certificate's Secret.
    pub by_certificate: HashMap<String, Arc<Upstream>>,
}

impl TlsUpstreams {
    /// Upstreams for `tls`, one for each client certificate in `certificates`; None when the
    /// policy gives no usable trust anchor or name, so that requests answer 500 rather than
    /// go out unverified.
    pub fn new(
        tls: &BackendTls,
        protocol: BackendProtocol,
        certificates: &[&CertifiedKey],
        upstreams: &Upstreams,
    ) -> Option<Self> {
        let upstream = |certificate: Option<&CertifiedKey>| {
            let spec = TlsSpec { tls: tls.clone(), protocol, certificate: certificate.cloned() };
            upstreams.tls(spec, || client_config(tls, protocol, certificate))
        };
        let anonymous = upstream(None)?;
        let by_certificate =
            certificates.iter().filter_map(|c| Some((c.source.clone(), upstream(Some(*c))?))).collect();
        Some(Self { anonymous, by_certificate })
    }
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
    let roots = Arc::new(roots);
    let inner = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone()).build().ok()?;
    let server_name = ServerName::try_from(tls.server_name.clone()).ok()?;
    // subjectAltNames replace the hostname check. A hostname never holds a ':' (RFC 1123),
    // a URI always does, after its scheme.
    let (uris, hostnames): (Vec<&String>, Vec<&String>) = tls.subject_alt_names.iter().partition(|n| n.contains(':'));
    let names = if tls.subject_alt_names.is_empty() {
        vec![server_name.clone()]
    } else {
        hostnames.into_iter().filter_map(|n| ServerName::try_from(n.clone()).ok()).collect()
    };
    let uris = uris.into_iter().cloned().collect();
    let verifier =
        Arc::new(NamesVerifier { inner, roots, algorithms: provider.signature_verification_algorithms, names, uris });
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
    /// For handshake signatures.
    inner: Arc<WebPkiServerVerifier>,
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
    /// DNS names (or IP addresses) the certificate may carry.
    names: Vec<ServerName<'static>>,
    /// URIs the certificate may carry, compared exactly.
    uris: Vec<String>,
}

impl ServerCertVerifier for NamesVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(&cert, &self.roots, intermediates, now, self.algorithms.all)?;
        if self.names.iter().any(|name| verify_server_name(&cert, name).is_ok())
            || (!self.uris.is_empty() && uri_names(end_entity).iter().any(|uri| self.uris.contains(uri)))
        {
            return Ok(ServerCertVerified::assertion());
        }
        Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
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

/// The URIs among a certificate's subjectAltNames; none if it does not parse.
fn uri_names(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert) else { return Vec::new() };
    let Ok(Some(san)) = parsed.subject_alternative_name() else { return Vec::new() };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => Some(uri.to_string()),
            _ => None,
        })
        .collect()
}
