//! How the `outpost` CLI and edge nodes reach a control plane: which URLs
//! are allowed, which certificates are trusted, and the HTTPS connector
//! their hyper clients run on.
//!
//! The rules, in one place so the CLI and the nodes cannot drift apart:
//!
//! - `https://` is verified against the given CA file (only that CA), or
//!   else the operating system's roots; ALPN offers `h2` and `http/1.1`.
//! - `http://` is allowed only to this machine (`localhost` or a loopback
//!   address): what `outpost dev` serves. A plain URL to anywhere else is
//!   refused, since over it would travel bearer tokens, env values and
//!   tenants' private keys.
//! - A connector made for an `https://` URL refuses plain `http://`
//!   requests, so nothing ever falls back to plain HTTP.
//!
//! What this crate deliberately is not: an HTTP client. Each caller keeps
//! its own hyper client (with its own body type) over [`connector`].

use std::error::Error as StdError;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// The connector under every client to a control plane.
pub type Connector = HttpsConnector<HttpConnector>;

/// Longest wait for a TCP connection to the control plane.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a control-plane URL or trust setting is unusable.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Not a URL at all.
    #[error("{url:?} is not a URL: {source}")]
    Url {
        /// What was given.
        url: String,
        /// Why.
        source: http::uri::InvalidUri,
    },
    /// Neither `http://` nor `https://`, or no host.
    #[error("{0:?}: expected an https:// URL (or http:// to this machine)")]
    Scheme(String),
    /// Plain HTTP to another machine.
    #[error(
        "{0:?}: plain http:// is allowed only to a control plane on this machine (outpost dev); use https://"
    )]
    PlainRemote(String),
    /// A CA file given with a plain URL: a sign of a mistyped URL.
    #[error("{0:?}: a CA file is for https:// URLs")]
    CaWithPlain(String),
    /// The CA file could not be read.
    #[error("reading the CA file {path}: {source}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The CA file holds no usable certificate.
    #[error("the CA file {path} {why}")]
    CaFileContent {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// No CA file, and the system has no root certificates.
    #[error(
        "no root certificates found on this system ({0}); give a CA file (--ca-file or OUTPOST_CA_FILE)"
    )]
    NoRoots(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// A control-plane URL that passed the rules: its scheme decides the
/// connector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL without a trailing slash.
    pub base: String,
    /// `https://`.
    pub tls: bool,
}

/// Checks `url` against the rules above (no file is read).
pub fn target(url: &str, ca_file: Option<&Path>) -> Result<Target, LinkError> {
    let base = url.trim_end_matches('/').to_string();
    let uri: http::Uri = base.parse().map_err(|source| LinkError::Url {
        url: url.to_string(),
        source,
    })?;
    let Some(host) = uri.host() else {
        return Err(LinkError::Scheme(url.to_string()));
    };
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(LinkError::Scheme(url.to_string())),
    };
    if !tls {
        if !is_this_machine(host) {
            return Err(LinkError::PlainRemote(url.to_string()));
        }
        if ca_file.is_some() {
            return Err(LinkError::CaWithPlain(url.to_string()));
        }
    }
    Ok(Target { base, tls })
}

/// `localhost` or a loopback address (`[::1]` as a URI writes it).
fn is_this_machine(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The trust roots: the CA file's certificates only, or the system's.
pub fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, LinkError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|source| LinkError::CaFile {
                path: path.to_path_buf(),
                source,
            })?;
            let content = |why: String| LinkError::CaFileContent {
                path: path.to_path_buf(),
                why,
            };
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| content(format!("is not valid PEM: {e}")))?;
            if certs.is_empty() {
                return Err(content("holds no CERTIFICATE block".into()));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| content(format!("holds an unusable certificate: {e}")))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = match found.errors.first() {
                    Some(e) => e.to_string(),
                    None => "none installed".into(),
                };
                return Err(LinkError::NoRoots(why));
            }
        }
    }
    Ok(roots)
}

/// The connector for `target`: TLS verified against [`roots`] for
/// `https://`, refusing any plain request; plain TCP for a loopback
/// `http://`.
pub fn connector(target: &Target, ca_file: Option<&Path>) -> Result<Connector, LinkError> {
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
    tcp.set_nodelay(true);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = HttpsConnectorBuilder::new();
    let connector = if target.tls {
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_root_certificates(roots(ca_file)?)
            .with_no_client_auth();
        builder
            .with_tls_config(config)
            .https_only()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp)
    } else {
        // Never used for TLS (the URL is plain and on this machine), but
        // the type is shared: an empty root store trusts nothing.
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth();
        builder
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp)
    };
    Ok(connector)
}

/// Why rustls refused the control plane's certificate, if that is what
/// `error` (anywhere in its chain) comes down to: a setting to fix, not
/// an outage to wait out.
pub fn rejected_certificate(error: &(dyn StdError + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(tls) = as_rustls(e) {
            return match tls {
                rustls::Error::InvalidCertificate(why) => Some(format!(
                    "the control plane's certificate is not trusted: {why:?}"
                )),
                rustls::Error::NoCertificatesPresented => {
                    Some("the control plane presented no certificate".into())
                }
                _ => None,
            };
        }
        // `io::Error::source` skips the error it wraps: look inside.
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner),
            None => e.source(),
        };
    }
    None
}

fn as_rustls<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    e.downcast_ref::<rustls::Error>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_for_this_machine_only() {
        for ok in [
            "http://127.0.0.1:7070",
            "http://localhost:7070/",
            "http://[::1]:7070",
            "http://127.1.2.3",
        ] {
            assert!(!target(ok, None).unwrap().tls, "{ok}");
        }
        for remote in [
            "http://10.0.0.1:7070",
            "http://cp.example.net",
            "http://localhost.example.net",
        ] {
            assert!(
                matches!(target(remote, None), Err(LinkError::PlainRemote(_))),
                "{remote}"
            );
        }
        let t = target("https://cp.example.net:7443/", None).unwrap();
        assert_eq!(
            t,
            Target {
                base: "https://cp.example.net:7443".into(),
                tls: true
            }
        );
        for bad in ["ftp://cp.example.net", "cp.example.net:7070", "/v1", ""] {
            assert!(target(bad, None).is_err(), "{bad}");
        }
        assert!(matches!(
            target("http://127.0.0.1:7070", Some(Path::new("ca.pem"))),
            Err(LinkError::CaWithPlain(_))
        ));
    }

    #[test]
    fn a_ca_file_must_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        assert!(matches!(roots(Some(&path)), Err(LinkError::CaFile { .. })));
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = roots(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("no CERTIFICATE"), "{err}");
        let ca = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap();
        std::fs::write(&path, ca.pem()).unwrap();
        assert_eq!(roots(Some(&path)).unwrap().len(), 1);
    }

    #[test]
    fn certificate_rejections_are_found_through_io_errors() {
        let rejected = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, rejected);
        let why = rejected_certificate(&io).unwrap();
        assert!(why.contains("UnknownIssuer"), "{why}");
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(rejected_certificate(&refused), None);
    }
}
