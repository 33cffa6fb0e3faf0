//! Throwaway P-256 keys for tests: a private half in the PEM form Apple's .p8 files use,
//! and the public half to verify signatures with.

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
