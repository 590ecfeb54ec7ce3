//! Checks of certificate material referred to by Gateways and policies. Parsing and key
//! matching are pure computation; nothing here reads files or the network.

use api::core::{ConfigMap, Secret};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use crate::ir::CertifiedKey;

pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// A `kubernetes.io/tls` Secret whose certificate chain and key parse and belong together.
pub fn server_certificate(secret: &Secret, source: String) -> Result<CertifiedKey, String> {
    if secret.type_ != TLS_SECRET_TYPE {
        return Err(format!("Secret {source} is of type {:?}, not {TLS_SECRET_TYPE:?}", secret.type_));
    }
    let cert = secret.get("tls.crt").ok_or_else(|| format!("Secret {source} has no tls.crt"))?;
    let key = secret.get("tls.key").ok_or_else(|| format!("Secret {source} has no tls.key"))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("Secret {source}: tls.crt is not PEM: {e}"))?;
    if chain.is_empty() {
        return Err(format!("Secret {source}: tls.crt holds no certificate"));
    }
    let der = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| format!("Secret {source}: tls.key is not a PEM private key: {e}"))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    rustls::sign::CertifiedKey::from_der(chain, der, &provider)
        .map_err(|e| format!("Secret {source}: certificate and key do not match: {e}"))?;
    Ok(CertifiedKey {
        source,
        cert_pem: String::from_utf8_lossy(cert).into_owned(),
        key_pem: String::from_utf8_lossy(key).into_owned(),
    })
}

/// The PEM bundle under `ca.crt` of a ConfigMap, if it holds at least one certificate.
pub fn ca_bundle(config_map: &ConfigMap, source: &str) -> Result<String, String> {
    let pem = config_map
        .data
        .get("ca.crt")
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| format!("ConfigMap {source} has no ca.crt"))?;
    let count = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("ConfigMap {source}: ca.crt is not PEM: {e}"))?
        .len();
    if count == 0 {
        return Err(format!("ConfigMap {source}: ca.crt holds no PEM certificate"));
    }
    Ok(pem.clone())
}
