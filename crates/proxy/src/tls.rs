//! TLS termination: a rustls server config per socket whose certificate is chosen by SNI
//! among the listeners' certificates, as each listener's hostname matches.

use std::sync::Arc;

use rustls::{
    ServerConfig,
    crypto::aws_lc_rs,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

use crate::{config::BindConfig, hostmap::HostMap};

#[derive(Debug)]
struct SniResolver {
    by_host: HostMap<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name().map(str::to_ascii_lowercase).unwrap_or_default();
        self.by_host.get(&sni).cloned()
    }
}

/// The server config for a TLS socket, or `None` when no listener has a usable certificate.
pub fn server_config(bind: &BindConfig) -> Option<Arc<ServerConfig>> {
    let provider = Arc::new(aws_lc_rs::default_provider());
    let mut by_host = HostMap::default();
    let mut any = false;
    for l in &bind.listeners {
        let Some(tls) = &l.tls else { continue };
        let Some(cert) = tls.certificates.first() else { continue };
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes()).filter_map(Result::ok).collect();
        let Ok(key) = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()) else { continue };
        match CertifiedKey::from_der(chain, key, &provider) {
            Ok(ck) => {
                by_host.insert(l.hostname.as_deref().unwrap_or("*"), Arc::new(ck));
                any = true;
            }
            Err(e) => tracing::warn!(listener = %l.name, "certificate unusable: {e}"),
        }
    }
    if !any {
        return None;
    }
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { by_host }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Some(Arc::new(config))
}
