//! The control plane's own HTTPS: its certificate and key from two PEM
//! files (`--tls-cert`, `--tls-key`), TLS 1.3 and 1.2 on ring, ALPN `h2`
//! then `http/1.1`.
//!
//! The files are read at start (a bad pair stops the start before the
//! port is bound) and looked at again at most every [`RECHECK`]: when an
//! operator or cert-manager replaces them, new handshakes get the new
//! certificate without a restart. A replacement that does not parse is
//! logged and the certificate in use stays.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use outpost_runtime::cert::{Certificate, provider};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// How often the files are looked at for a replacement, at most.
pub const RECHECK: Duration = Duration::from_secs(10);

/// Where the control plane's certificate chain and private key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why the certificate files are unusable.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The pair does not make a certificate.
    #[error("the TLS certificate {cert} with key {key}: {why}")]
    Pair {
        /// The chain's file.
        cert: PathBuf,
        /// The key's file.
        key: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// What identifies one version of the files: a replacement changes it.
type Stamp = [Option<(SystemTime, u64)>; 2];

impl TlsFiles {
    /// Reads and parses the pair.
    pub fn load(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.clone(),
                source,
            })
        };
        let (chain, key) = (read(&self.cert)?, read(&self.key)?);
        let certificate = Certificate::parse(&chain, &key).map_err(|e| TlsError::Pair {
            cert: self.cert.clone(),
            key: self.key.clone(),
            why: e.to_string(),
        })?;
        Ok(certificate.certified_key().clone())
    }

    fn stamp(&self) -> Stamp {
        [&self.cert, &self.key].map(|path| {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        })
    }
}

/// Hands every handshake the current certificate, reloading the files
/// when they change.
#[derive(Debug)]
struct Reloading {
    files: TlsFiles,
    recheck: Duration,
    state: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    stamp: Stamp,
    checked: Instant,
}

impl Reloading {
    fn new(files: TlsFiles, recheck: Duration) -> Result<Reloading, TlsError> {
        // Stamped before reading: a replacement landing in between is
        // picked up at the next check rather than missed.
        let stamp = files.stamp();
        let key = files.load()?;
        Ok(Reloading {
            files,
            recheck,
            state: Mutex::new(Loaded {
                key,
                stamp,
                checked: Instant::now(),
            }),
        })
    }

    fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock().expect("not poisoned");
        if state.checked.elapsed() >= self.recheck {
            state.checked = Instant::now();
            let stamp = self.files.stamp();
            if stamp != state.stamp {
                state.stamp = stamp;
                match self.files.load() {
                    Ok(key) => {
                        tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                        state.key = key;
                    }
                    Err(e) => tracing::warn!(
                        error = %e,
                        "the replaced TLS certificate is unusable; still serving the previous one"
                    ),
                }
            }
        }
        state.key.clone()
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The acceptor of the API listener over `files`.
pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    acceptor_rechecking(files, RECHECK)
}

fn acceptor_rechecking(files: &TlsFiles, recheck: Duration) -> Result<TlsAcceptor, TlsError> {
    let resolver = Reloading::new(files.clone(), recheck)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &std::path::Path, name: &str) -> TlsFiles {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let files = TlsFiles {
            cert: dir.join("cp.crt"),
            key: dir.join("cp.key"),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    fn leaf(key: &CertifiedKey) -> Vec<u8> {
        key.cert[0].to_vec()
    }

    #[test]
    fn a_replaced_pair_is_served_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_pair(dir.path(), "cp-one.example.net");
        let first = files.load().unwrap();
        let resolver = Reloading::new(files.clone(), Duration::ZERO).unwrap();
        assert_eq!(leaf(&resolver.current()), leaf(&first));

        write_pair(dir.path(), "cp-two.example.net-with-a-longer-name");
        let second = files.load().unwrap();
        assert_ne!(leaf(&second), leaf(&first));
        assert_eq!(leaf(&resolver.current()), leaf(&second));

        // Half-written: the key no longer matches. The good one stays.
        std::fs::write(&files.key, "-----BEGIN PRIVATE KEY-----\n").unwrap();
        assert_eq!(leaf(&resolver.current()), leaf(&second));
    }

    #[test]
    fn a_bad_pair_is_refused_at_start_with_the_files_named() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_pair(dir.path(), "cp.example.net");
        let elsewhere = tempfile::tempdir().unwrap();
        let other = write_pair(elsewhere.path(), "other.example.net");
        let mismatched = TlsFiles {
            cert: files.cert.clone(),
            key: other.key.clone(),
        };
        let err = acceptor(&mismatched).err().unwrap().to_string();
        assert!(err.contains("cp.crt"), "{err}");
        let missing = TlsFiles {
            cert: dir.path().join("absent.crt"),
            key: files.key.clone(),
        };
        let err = acceptor(&missing).err().unwrap().to_string();
        assert!(err.contains("absent.crt"), "{err}");
    }
}
