//! Encryption at rest for secrets (tenants' private keys and env values on
//! the control plane, the cached snapshot on nodes): XChaCha20-Poly1305
//! with a 256-bit key from the configuration or, by default, a key file
//! created once and readable by its owner only.
//!
//! Each sealed value is bound to what it belongs to (a hostname, an app's
//! variable, a file name: the associated data), so a ciphertext copied onto
//! another record does not open.

use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

const NONCE_LEN: usize = 24;

/// Seals and opens secrets with one key.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

/// Why a secret could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The key in the configuration is malformed.
    #[error("a sealing key must be 64 hex digits (32 bytes)")]
    BadKey,
    /// The key file could not be read or created.
    #[error("key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A sealed value was tampered with, or sealed with another key.
    #[error("a sealed secret does not open with this key")]
    Open,
}

impl Sealer {
    /// A sealer over a key given as 64 hex digits.
    pub fn from_hex(key: &str) -> Result<Sealer, SecretError> {
        let bytes = unhex(key.trim()).ok_or(SecretError::BadKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| SecretError::BadKey)?;
        Ok(Sealer {
            cipher: XChaCha20Poly1305::new(&key.into()),
        })
    }

    /// A sealer whose key is derived from `secret` (SHA-256 of `purpose`
    /// and `secret`): whoever holds the secret can open what it seals,
    /// nobody else, and no key file has to be kept anywhere.
    pub fn derived(purpose: &str, secret: &[u8]) -> Sealer {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(purpose.as_bytes());
        h.update([0]);
        h.update(secret);
        let key: [u8; 32] = h.finalize().into();
        Sealer {
            cipher: XChaCha20Poly1305::new(&key.into()),
        }
    }

    /// The key in `path`, created (random, mode 0600) if the file does not
    /// exist yet.
    pub fn load_or_create(path: &Path) -> Result<Sealer, SecretError> {
        let failed = |source| SecretError::KeyFile {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Sealer::from_hex(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(|e| failed(std::io::Error::other(e)))?;
                let text = hex(&key);
                write_private(path, text.as_bytes()).map_err(failed)?;
                tracing::warn!(path = %path.display(), "generated a sealing key; configure one to keep it elsewhere");
                Sealer::from_hex(&text)
            }
            Err(e) => Err(failed(e)),
        }
    }

    /// Encrypts `plaintext` bound to `context`; hex of nonce + ciphertext.
    pub fn seal(&self, context: &str, plaintext: &str) -> String {
        hex(&self.seal_bytes(context, plaintext.as_bytes()))
    }

    /// Decrypts what [`Sealer::seal`] produced for the same `context`.
    pub fn open(&self, context: &str, sealed: &str) -> Result<String, SecretError> {
        let bytes = unhex(sealed).ok_or(SecretError::Open)?;
        let plain = self.open_bytes(context, &bytes)?;
        String::from_utf8(plain).map_err(|_| SecretError::Open)
    }

    /// Encrypts `plaintext` bound to `context`: nonce + ciphertext.
    pub fn seal_bytes(&self, context: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the OS random source works");
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .expect("encryption of an in-memory buffer cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    /// Decrypts what [`Sealer::seal_bytes`] produced for the same `context`.
    pub fn open_bytes(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, SecretError> {
        if sealed.len() < NONCE_LEN {
            return Err(SecretError::Open);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Open)
    }
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_their_key_and_context() {
        let key = "11".repeat(32);
        let sealer = Sealer::from_hex(&key).unwrap();
        let sealed = sealer.seal("a.example.com", "-----BEGIN PRIVATE KEY-----");
        assert!(!sealed.contains("PRIVATE"));
        // A fresh nonce each time.
        assert_ne!(
            sealed,
            sealer.seal("a.example.com", "-----BEGIN PRIVATE KEY-----")
        );
        assert_eq!(
            sealer.open("a.example.com", &sealed).unwrap(),
            "-----BEGIN PRIVATE KEY-----"
        );
        assert!(sealer.open("b.example.com", &sealed).is_err());
        let other = Sealer::from_hex(&"22".repeat(32)).unwrap();
        assert!(other.open("a.example.com", &sealed).is_err());
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'0' { b'1' } else { b'0' };
        assert!(
            sealer
                .open("a.example.com", &String::from_utf8(tampered).unwrap())
                .is_err()
        );
        assert!(sealer.open("a.example.com", "zz").is_err());
    }

    #[test]
    fn a_derived_key_depends_on_its_purpose_and_secret() {
        let sealed = Sealer::derived("cache", b"token-1").seal_bytes("f", b"data");
        let open = |purpose: &str, secret: &[u8]| {
            Sealer::derived(purpose, secret)
                .open_bytes("f", &sealed)
                .ok()
        };
        assert_eq!(open("cache", b"token-1").as_deref(), Some(&b"data"[..]));
        assert_eq!(open("cache", b"token-2"), None);
        assert_eq!(open("other", b"token-1"), None);
    }

    #[test]
    fn malformed_keys_are_refused() {
        for key in [
            "",
            "abc",
            &"1".repeat(63),
            &"g".repeat(64),
            &"11".repeat(31),
        ] {
            assert!(Sealer::from_hex(key).is_err(), "{key:?}");
        }
    }

    #[test]
    fn the_key_file_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cert.key");
        let first = Sealer::load_or_create(&path).unwrap();
        let sealed = first.seal("h", "secret");
        let second = Sealer::load_or_create(&path).unwrap();
        assert_eq!(second.open("h", &sealed).unwrap(), "secret");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
