//! Throwaway P-256 keys for tests: a private half in the PEM form Apple's .p8 files use,
//! and the public half to verify signatures with. Also RSA keys, as in Google
//! service-account files ([`RsaKey`]).

use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::Engine as _;

/// A P-256 key pair.
#[derive(Clone)]
pub struct EcKey {
    /// PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), as in an Apple .p8 file.
    pub private_pem: String,
    /// The public key as an uncompressed SEC1 point.
    pub public_point: Vec<u8>,
}

impl EcKey {
    /// A new random key.
    pub fn generate() -> Self {
        let pair =
            EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("generate P-256 key");
        let pkcs8 = pair.to_pkcs8v1().expect("PKCS#8 of P-256 key");
        let encoded = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in encoded.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        Self {
            private_pem: pem,
            public_point: pair.public_key().as_ref().to_vec(),
        }
    }

    /// Writes the private key to `path` with mode 0600, as an operator would.
    pub fn write_private(&self, path: &std::path::Path) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, &self.private_pem)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
    }
}

/// A throwaway RSA-2048 key pair, as in a Google service-account key file.
#[derive(Clone)]
pub struct RsaKey {
    /// PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), as in a service account's `private_key`.
    pub private_pem: String,
    /// The public key as a DER `RSAPublicKey` (RFC 8017), to verify signatures with.
    pub public_der: Vec<u8>,
}

impl RsaKey {
    /// A new random key. Generating RSA keys takes a while: tests that need "a" key, not a
    /// fresh one, use [`RsaKey::shared`].
    pub fn generate() -> Self {
        use aws_lc_rs::encoding::AsDer;
        use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).expect("generate RSA-2048 key");
        let pkcs8 = pair.as_der().expect("PKCS#8 of RSA key");
        Self {
            private_pem: pem("PRIVATE KEY", pkcs8.as_ref()),
            public_der: pair.public_key().as_ref().to_vec(),
        }
    }

    /// One key per test process, generated on first use.
    pub fn shared() -> Self {
        static KEY: std::sync::OnceLock<RsaKey> = std::sync::OnceLock::new();
        KEY.get_or_init(Self::generate).clone()
    }

    /// A service-account key file's JSON, as Google issues it, with `token_uri` pointing
    /// wherever the test wants (a local token endpoint).
    pub fn service_account_json(
        &self,
        project_id: &str,
        client_email: &str,
        token_uri: &str,
    ) -> String {
        serde_json::to_string_pretty(&serde_json::json!({
            "type": "service_account",
            "project_id": project_id,
            "private_key_id": "0123456789abcdef0123456789abcdef01234567",
            "private_key": self.private_pem,
            "client_email": client_email,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "universe_domain": "googleapis.com",
        }))
        .expect("JSON")
    }

    /// Writes [`RsaKey::service_account_json`] to `path` with mode 0600, as an operator would.
    pub fn write_service_account(
        &self,
        path: &std::path::Path,
        project_id: &str,
        client_email: &str,
        token_uri: &str,
    ) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(
            path,
            self.service_account_json(project_id, client_email, token_uri),
        )?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in encoded.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}
