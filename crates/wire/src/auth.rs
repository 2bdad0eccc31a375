//! The shared migration secret and the HMAC-SHA256 challenge-response.
//!
//! Both sides pick a fresh 32-byte nonce. Each proves it holds the secret
//! with HMAC-SHA256(secret, role label || source nonce || destination nonce ||
//! version || capabilities): the role label differs per side, so one side's
//! proof can never be replayed as the other's, and the fresh nonces keep an
//! old transcript from being replayed at all. Proofs are compared in constant time.

use std::fmt;
use std::path::Path;

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::error::WireError;
use crate::message::{Capabilities, NONCE_LEN};

/// Fewest bytes a secret may have.
pub const MIN_SECRET_LEN: usize = 16;

const SOURCE_LABEL: &[u8] = b"ferry-migration source proof\0";
const DEST_LABEL: &[u8] = b"ferry-migration destination proof\0";

/// The shared migration secret. Debug never prints it.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

impl Secret {
    /// Reads the secret from `path`: the file's bytes, with trailing
    /// whitespace (a final newline) removed; at least [`MIN_SECRET_LEN`] bytes.
    pub fn from_file(path: &Path) -> Result<Secret, WireError> {
        let bytes = std::fs::read(path).map_err(|source| WireError::SecretFile {
            path: path.to_path_buf(),
            source,
        })?;
        let end = bytes
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        let secret = bytes[..end].to_vec();
        if secret.len() < MIN_SECRET_LEN {
            return Err(WireError::SecretTooShort {
                path: path.to_path_buf(),
                len: secret.len(),
                min: MIN_SECRET_LEN,
            });
        }
        Ok(Secret(secret))
    }

    /// A secret from bytes (tests, or key material from elsewhere).
    /// Returns `None` if shorter than [`MIN_SECRET_LEN`].
    pub fn from_bytes(bytes: &[u8]) -> Option<Secret> {
        (bytes.len() >= MIN_SECRET_LEN).then(|| Secret(bytes.to_vec()))
    }

    /// A fresh random 32-byte secret, hex encoded (for writing a key file).
    pub fn generate_hex() -> String {
        let mut b = [0u8; 32];
        rand::rng().fill_bytes(&mut b);
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn mac(&self, label: &[u8], t: &Transcript) -> Hmac<Sha256> {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        m.update(label);
        m.update(&t.source_nonce);
        m.update(&t.dest_nonce);
        m.update(&t.version.to_le_bytes());
        m.update(&t.capabilities.0.to_le_bytes());
        m
    }

    /// The source's proof over the handshake transcript.
    pub fn source_proof(&self, t: &Transcript) -> [u8; NONCE_LEN] {
        self.mac(SOURCE_LABEL, t).finalize().into_bytes().into()
    }

    /// The destination's proof over the handshake transcript.
    pub fn dest_proof(&self, t: &Transcript) -> [u8; NONCE_LEN] {
        self.mac(DEST_LABEL, t).finalize().into_bytes().into()
    }

    /// Checks the source's proof in constant time.
    pub fn verify_source(&self, t: &Transcript, proof: &[u8; NONCE_LEN]) -> bool {
        self.mac(SOURCE_LABEL, t).verify_slice(proof).is_ok()
    }

    /// Checks the destination's proof in constant time.
    pub fn verify_dest(&self, t: &Transcript, proof: &[u8; NONCE_LEN]) -> bool {
        self.mac(DEST_LABEL, t).verify_slice(proof).is_ok()
    }
}

/// What both proofs cover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transcript {
    pub source_nonce: [u8; NONCE_LEN],
    pub dest_nonce: [u8; NONCE_LEN],
    pub version: u16,
    pub capabilities: Capabilities,
}

/// A fresh random nonce (from the thread-local CSPRNG, seeded by the OS).
pub fn nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut n);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript() -> Transcript {
        Transcript {
            source_nonce: nonce(),
            dest_nonce: nonce(),
            version: 1,
            capabilities: Capabilities::NONE,
        }
    }

    #[test]
    fn proofs_verify_only_with_the_same_secret_and_role() {
        let a = Secret::from_bytes(b"0123456789abcdef-a").unwrap();
        let b = Secret::from_bytes(b"0123456789abcdef-b").unwrap();
        let t = transcript();
        let p = a.source_proof(&t);
        assert!(a.verify_source(&t, &p));
        assert!(!b.verify_source(&t, &p));
        // A source proof is not a destination proof.
        assert!(!a.verify_dest(&t, &p));
        let d = a.dest_proof(&t);
        assert!(a.verify_dest(&t, &d));
        // A different transcript does not verify.
        let mut t2 = t.clone();
        t2.version = 2;
        assert!(!a.verify_source(&t2, &p));
    }

    #[test]
    fn secret_files() {
        let dir = std::env::temp_dir().join(format!("ferry-wire-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good");
        std::fs::write(&good, "correct horse battery staple\n").unwrap();
        let s = Secret::from_file(&good).unwrap();
        assert_eq!(s.0, b"correct horse battery staple");
        assert!(!format!("{s:?}").contains("horse"));
        let short = dir.join("short");
        std::fs::write(&short, "abc\n\n").unwrap();
        let e = Secret::from_file(&short).unwrap_err().to_string();
        assert!(e.contains("3 bytes") && e.contains("at least 16"), "{e}");
        let e = Secret::from_file(&dir.join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read the migration secret"), "{e}");
        assert_eq!(Secret::generate_hex().len(), 64);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
