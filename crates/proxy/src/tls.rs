//! TLS termination: a rustls server config per listener, chosen by SNI as the listeners'
//! hostnames match, with the listener's certificate and, where the Gateway's `tls.frontend`
//! asks for it, client-certificate validation.

use std::sync::Arc;

use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    crypto::aws_lc_rs,
    pki_types::{CertificateDer, PrivateKeyDer, UnixTime, pem::PemObject},
    server::{
        WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
    sign::CertifiedKey,
};
use translate::ir::{self, ClientValidation, ListenerProtocol};

use crate::hostmap::HostMap;

/// The server configs of one socket, by listener hostname.
#[derive(Debug)]
pub struct TlsConfigs {
    by_host: HostMap<Arc<ServerConfig>>,
}

impl TlsConfigs {
    /// The config of the listener an SNI selects (no SNI: the listener without hostname).
    pub fn for_sni(&self, sni: &str) -> Option<Arc<ServerConfig>> {
        self.by_host.get(sni).cloned()
    }
}

/// Configs for every terminating listener of a TLS socket; `None` when none has a usable
/// certificate.
pub fn server_configs(bind: &ir::Bind) -> Option<Arc<TlsConfigs>> {
    let provider = Arc::new(aws_lc_rs::default_provider());
    let mut by_host = HostMap::default();
    let mut any = false;
    for l in &bind.listeners {
        let Some(tls) = &l.tls else { continue };
        let Some(cert) = tls.certificates.first() else { continue };
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes()).filter_map(Result::ok).collect();
        let Ok(key) = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()) else { continue };
        let certified = match CertifiedKey::from_der(chain, key, &provider) {
            Ok(ck) => Arc::new(ck),
            Err(e) => {
                tracing::warn!(listener = %l.name, "certificate unusable: {e}");
                continue;
            }
        };
        let builder =
            ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().ok()?;
        let builder = match &tls.client_validation {
            None => builder.with_no_client_auth(),
            Some(v) => match client_verifier(v, &provider) {
                Some(verifier) => builder.with_client_cert_verifier(verifier),
                None => {
                    tracing::warn!(listener = %l.name, "client validation CA unusable; refusing TLS on this listener");
                    continue;
                }
            },
        };
        let mut config = builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
        // A terminated TLSRoute stream is opaque bytes: no ALPN to offer.
        if l.protocol == ListenerProtocol::Https {
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        }
        by_host.insert(l.hostname.as_deref().unwrap_or("*"), Arc::new(config));
        any = true;
    }
    any.then(|| Arc::new(TlsConfigs { by_host }))
}

fn client_verifier(
    v: &ClientValidation,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Option<Arc<dyn ClientCertVerifier>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(v.ca_pem.as_bytes()).filter_map(Result::ok) {
        roots.add(cert).ok()?;
    }
    let strict = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().ok()?;
    Some(if v.insecure_fallback { Arc::new(Fallback(strict)) } else { strict })
}

/// `AllowInsecureFallback`: a client certificate is asked for and checked when offered, but
/// a missing or untrusted one does not end the connection.
#[derive(Debug)]
struct Fallback(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for Fallback {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if let Err(e) = self.0.verify_client_cert(end_entity, intermediates, now) {
            tracing::debug!("client certificate not trusted, let through by AllowInsecureFallback: {e}");
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
