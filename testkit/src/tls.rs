//! Throwaway certificate authorities for the local push servers: a server certificate for
//! `127.0.0.1`/`localhost` (trusted by pointing `SSL_CERT_FILE` at its CA), and client
//! certificates like Apple's push certificates (for APNs certificate authentication).

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio_rustls::rustls;

/// A CA that can sign leaf certificates.
pub struct TestCa {
    /// The CA certificate, PEM.
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn e(error: rcgen::Error) -> String {
    error.to_string()
}

impl TestCa {
    /// A new CA named `name`.
    pub fn generate(name: &str) -> Result<Self, String> {
        let key = KeyPair::generate().map_err(e)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).map_err(e)?;
        Ok(Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }
}

/// A client certificate shaped like an Apple push certificate, and its key.
pub struct TestClientCertificate {
    /// The CA that signed it (what the server trusts), PEM.
    pub ca_pem: String,
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// Its private key, PKCS#8 PEM.
    pub key_pem: String,
}

impl TestClientCertificate {
    /// A certificate for `bundle_id`, named the way Apple names VoIP certificates.
    pub fn generate(bundle_id: &str) -> Result<Self, String> {
        Self::generate_inner(bundle_id, false)
    }

    /// The same, but it expired in 2020.
    pub fn generate_expired(bundle_id: &str) -> Result<Self, String> {
        Self::generate_inner(bundle_id, true)
    }

    fn generate_inner(bundle_id: &str, expired: bool) -> Result<Self, String> {
        let ca = TestCa::generate("pushwake test Apple WWDR CA")?;
        let key = KeyPair::generate().map_err(e)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
        if expired {
            params.not_before = rcgen::date_time_ymd(2019, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        params
            .distinguished_name
            .push(DnType::CommonName, format!("VoIP Services: {bundle_id}"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &ca.issuer).map_err(e)?;
        Ok(Self {
            ca_pem: ca.pem,
            certificate_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A server configuration for `127.0.0.1`/`localhost` with a certificate from a new CA,
/// offering `alpn`; with `client_ca`, clients must present a certificate it signed.
/// Returns the server CA's PEM (for the client's trust store) and the configuration.
pub fn server_config(
    alpn: &[&[u8]],
    client_ca: Option<&str>,
) -> Result<(String, rustls::ServerConfig), String> {
    let ca = TestCa::generate("pushwake test CA")?;
    let leaf_key = KeyPair::generate().map_err(e)?;
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .map_err(e)?
        .signed_by(&leaf_key, &ca.issuer)
        .map_err(e)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            let der = pem_to_der(pem).ok_or("the client CA is not a PEM certificate")?;
            roots.add(der.into()).map_err(|e| e.to_string())?;
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| e.to_string())?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok((ca.pem, config))
}

/// The DER of the first PEM block of `pem`.
fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}
