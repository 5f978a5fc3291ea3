//! Module bytes in an OCI registry ([`outpost_oci`]), for the etcd store:
//! etcd keeps the versions and reference counts, the registry the bytes.
//! The store's calls are synchronous (they run on blocking threads); the
//! registry client is async, so its calls run on a small runtime of this
//! type's own and are waited for here.

use outpost_oci::{Registry, RegistryConfig};

use super::blobs::ModuleBlobs;
use super::{Result, StoreError};

/// The registry as the store's module-bytes backend.
pub struct RegistryBlobs {
    registry: std::sync::Arc<Registry>,
    /// Always `Some` until dropped.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for RegistryBlobs {
    fn drop(&mut self) {
        // The store may be dropped on an async thread (the last user of a
        // control plane's state), where a blocking runtime drop panics.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl RegistryBlobs {
    /// Blobs in the repository `config` names.
    pub fn new(config: &RegistryConfig) -> Result<RegistryBlobs> {
        let registry = Registry::new(config).map_err(|e| StoreError::Backend(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("outpost-registry")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("starting the registry client: {e}")))?;
        Ok(RegistryBlobs {
            registry: std::sync::Arc::new(registry),
            runtime: Some(runtime),
        })
    }

    /// Runs `call` on this type's runtime and waits for it, from any
    /// thread (a blocking-pool thread of another runtime included).
    fn wait<T: Send + 'static>(
        &self,
        call: impl std::future::Future<Output = std::result::Result<T, outpost_oci::OciError>>
        + Send
        + 'static,
    ) -> Result<T> {
        let runtime = self.runtime.as_ref().expect("set until dropped");
        let task = runtime.spawn(call);
        futures::executor::block_on(task)
            .map_err(|e| StoreError::Backend(format!("registry task failed: {e}")))?
            .map_err(|e| StoreError::Backend(e.to_string()))
    }
}

impl ModuleBlobs for RegistryBlobs {
    fn put(&self, digest: &str, bytes: &[u8]) -> Result<()> {
        let (registry, digest, bytes) = (self.registry.clone(), digest.to_string(), bytes.to_vec());
        self.wait(async move { registry.push(&digest, &bytes).await })
    }

    fn get(&self, digest: &str) -> Result<Option<Vec<u8>>> {
        let (registry, digest) = (self.registry.clone(), digest.to_string());
        self.wait(async move { registry.pull(&digest).await })
    }

    fn delete(&self, _digest: &str) -> Result<()> {
        // Left to the registry's garbage collector: another control plane,
        // or a migration in progress, may still push the same digest, and
        // distribution deletes by manifest only with deletes enabled.
        Ok(())
    }
}
