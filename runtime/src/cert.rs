//! Certificates: parsing a PEM chain and key, checking that they match,
//! coverage of a hostname (exact or one-label wildcard), validity dates,
//! and a generated self-signed certificate.
//!
//! The edge node serves what this parses, and the control plane vets
//! uploads with the same [`Certificate::parse`] and
//! [`Certificate::check_for`], so a certificate it accepts is one every
//! node can serve.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Result};

/// A certificate chain with its private key, parsed and checked to match.
pub struct Certificate {
    names: Vec<String>,
    not_before: i64,
    not_after: i64,
    key: Arc<CertifiedKey>,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("Certificate")
            .field("names", &self.names)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

fn bad(reason: impl Into<String>) -> Error {
    Error::Certificate(reason.into())
}

/// The crypto rustls uses here (ring: no cmake or C toolchain beyond cc).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Certificate {
    /// Parses a PEM chain (leaf first) and a PEM private key (PKCS#8,
    /// PKCS#1 or SEC1), and checks that the key belongs to the leaf.
    pub fn parse(chain_pem: &[u8], key_pem: &[u8]) -> Result<Certificate> {
        let chain = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("the certificate chain is not valid PEM: {e}")))?;
        let Some(leaf) = chain.first() else {
            return Err(bad("the certificate chain holds no CERTIFICATE block"));
        };
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| bad(format!("the certificate does not parse: {e}")))?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = parsed.subject_alternative_name() {
            for name in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                    names.push(dns.trim_end_matches('.').to_ascii_lowercase());
                }
            }
        }
        if names.is_empty() {
            return Err(bad(
                "the certificate names no DNS subject alternative name (clients ignore the common name)",
            ));
        }
        let not_before = parsed.validity().not_before.timestamp();
        let not_after = parsed.validity().not_after.timestamp();

        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| bad(format!("the private key is not valid PEM: {e}")))?;
        let signer = provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| bad(format!("the private key is not usable: {e}")))?;
        let certified = CertifiedKey::new(chain, signer);
        certified
            .keys_match()
            .map_err(|_| bad("the private key does not match the certificate"))?;
        Ok(Certificate {
            names,
            not_before,
            not_after,
            key: Arc::new(certified),
        })
    }

    /// The DNS names it is valid for (lower case; `*.` for wildcards).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Start of validity, Unix seconds.
    pub fn not_before(&self) -> i64 {
        self.not_before
    }

    /// End of validity, Unix seconds.
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// Whether a client connecting to `hostname` accepts its names: an
    /// exact name, or a wildcard standing for exactly one label.
    pub fn covers(&self, hostname: &str) -> bool {
        let host = hostname.trim_end_matches('.').to_ascii_lowercase();
        self.names.iter().any(|name| {
            if *name == host {
                return true;
            }
            match (name.strip_prefix("*."), host.split_once('.')) {
                (Some(parent), Some((label, rest))) => !label.is_empty() && rest == parent,
                _ => false,
            }
        })
    }

    /// Everything that keeps it from being served for `hostname` at time
    /// `now` (Unix seconds): not covering the name, expired, not yet valid.
    pub fn check_for(&self, hostname: &str, now: i64) -> Result<()> {
        if !self.covers(hostname) {
            return Err(bad(format!(
                "the certificate does not cover {hostname} (it names {})",
                self.names.join(", ")
            )));
        }
        if self.not_after <= now {
            return Err(bad(format!(
                "the certificate expired {} day(s) ago",
                (now - self.not_after) / 86_400
            )));
        }
        if self.not_before > now {
            return Err(bad("the certificate is not valid yet"));
        }
        Ok(())
    }

    /// A self-signed certificate for `names`, valid for a year; the node's
    /// default when it is given none. Returns it with its PEM (chain, key).
    pub fn self_signed(names: &[&str]) -> Result<(Certificate, String, String)> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let generated = rcgen::generate_simple_self_signed(names)
            .map_err(|e| bad(format!("generating a self-signed certificate: {e}")))?;
        let chain = generated.cert.pem();
        let key = generated.signing_key.serialize_pem();
        let cert = Certificate::parse(chain.as_bytes(), key.as_bytes())?;
        Ok((cert, chain, key))
    }

    /// The rustls form.
    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(names: &[&str]) -> Certificate {
        Certificate::self_signed(names).unwrap().0
    }

    #[test]
    fn covers_exact_names_and_one_label_wildcards() {
        let c = cert(&["a.example.com", "*.apps.example.com"]);
        assert!(c.covers("a.example.com"));
        assert!(c.covers("A.Example.com."));
        assert!(c.covers("x.apps.example.com"));
        assert!(!c.covers("apps.example.com"));
        assert!(!c.covers("y.x.apps.example.com"));
        assert!(!c.covers("b.example.com"));
        assert!(!c.covers(".apps.example.com"));
    }

    #[test]
    fn a_key_from_another_certificate_is_refused() {
        let (_, chain, _) = Certificate::self_signed(&["a.example.com"]).unwrap();
        let (_, _, other_key) = Certificate::self_signed(&["a.example.com"]).unwrap();
        let err = Certificate::parse(chain.as_bytes(), other_key.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }

    #[test]
    fn garbage_gets_a_reason() {
        let (_, chain, key) = Certificate::self_signed(&["a.example.com"]).unwrap();
        for (c, k, needle) in [
            ("", key.as_str(), "no CERTIFICATE"),
            ("not pem at all", key.as_str(), "no CERTIFICATE"),
            (chain.as_str(), "", "private key"),
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                key.as_str(),
                "does not parse",
            ),
        ] {
            let err = Certificate::parse(c.as_bytes(), k.as_bytes()).unwrap_err();
            assert!(err.to_string().contains(needle), "{err} lacks {needle:?}");
        }
    }

    #[test]
    fn expiry_and_coverage_are_checked() {
        let c = cert(&["a.example.com"]);
        let now = c.not_before() + 10;
        c.check_for("a.example.com", now).unwrap();
        let err = c.check_for("b.example.com", now).unwrap_err();
        assert!(
            err.to_string().contains("does not cover b.example.com"),
            "{err}"
        );
        let err = c
            .check_for("a.example.com", c.not_after() + 86_400 * 3)
            .unwrap_err();
        assert!(err.to_string().contains("expired 3 day(s) ago"), "{err}");
        let err = c
            .check_for("a.example.com", c.not_before() - 1)
            .unwrap_err();
        assert!(err.to_string().contains("not valid yet"), "{err}");
    }
}
