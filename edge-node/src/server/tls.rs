//! The HTTPS listener's rustls configuration: TLS 1.2 and 1.3, ALPN, and
//! certificates picked per handshake from the node's current table.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::error::{Error, Result};
use crate::node::Node;
use crate::tls::provider;

/// Picks the certificate for each handshake by SNI from whatever table
/// the node holds at that moment, so rotations need no restart.
#[derive(Debug)]
pub struct SniResolver {
    node: Arc<Node>,
}

impl SniResolver {
    /// A resolver over `node`'s certificates.
    pub fn new(node: Arc<Node>) -> SniResolver {
        SniResolver { node }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello.server_name()
            && let Some(installed) = self.node.certificate(name)
        {
            return Some(installed.cert.certified_key().clone());
        }
        self.node
            .default_certificate()
            .map(|c| c.certified_key().clone())
    }
}

/// The rustls server config of the HTTPS listener: TLS 1.2 and 1.3, ALPN
/// `h2` then `http/1.1`, certificates from `node` by SNI.
pub fn server_config(node: Arc<Node>) -> Result<Arc<rustls::ServerConfig>> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| {
            Error::from(outpost_runtime::Error::Certificate(format!(
                "TLS versions: {e}"
            )))
        })?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver::new(node)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
