//! The replicated backend: etcd v3, so several stateless control planes
//! share one state.
//!
//! Keys are `<prefix>/<tree>/<key bytes>`. A transaction is optimistic
//! and serializable, as etcd's own STM: its first read fixes a revision
//! `R` and every read is made at `R`, remembering each key's
//! `mod_revision` (none for a missing key); writes are buffered; the
//! commit is one etcd `Txn` that compares every key read against what was
//! read and, if none changed, applies every write. Otherwise the closure
//! runs again from scratch on a fresh snapshot. Every mutation reads and
//! writes `meta/revision`, so mutations serialize on it and the revision
//! stays gap-free and monotonic across control planes.
//!
//! The [`super::Store`] trait is synchronous (it is called from blocking
//! threads), so the backend owns a small tokio runtime for the client and
//! waits on it. Module bytes never go to etcd (its requests stop at
//! 1.5 MiB); they go to a [`ModuleBlobs`].
//!
//! etcd refuses a transaction of more than `--max-txn-ops` operations
//! (128 by default): the writes that can grow past it (deleting an app
//! with many versions, a tenant with many apps) go in steps, each its own
//! transaction (see `kv_store`).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, TlsOptions, Txn,
    TxnOp,
};

use super::blobs::ModuleBlobs;
use super::kv::{Kv, Tree, Tx, TxError, TxResult};
use super::{KvStore, Result, StoreError};

/// The store over etcd, with module bytes in a [`ModuleBlobs`].
pub type EtcdStore = KvStore<EtcdKv>;

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// The root of the store's keys; several stores can share one etcd
    /// under different prefixes. Default `/outpost`.
    pub prefix: String,
    /// etcd user and password, when etcd has auth enabled.
    pub user: Option<(String, String)>,
    /// How long connecting to an endpoint may take. Default 5 s.
    pub connect_timeout: Duration,
    /// How long one request may take, so a write fails rather than hangs
    /// when etcd is unreachable or has no quorum. Default 5 s.
    pub request_timeout: Duration,
    /// TLS to etcd (`https://` endpoints); `None` for plain gRPC.
    pub tls: Option<EtcdTls>,
    /// How many times a transaction runs before giving up on contention.
    /// Default 100.
    pub max_attempts: u32,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            prefix: "/outpost".into(),
            user: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            tls: None,
            max_attempts: 100,
        }
    }
}

/// TLS to etcd, on rustls with ring.
#[derive(Debug, Clone, Default)]
pub struct EtcdTls {
    /// PEM certificates of the CA etcd's certificate is checked against
    /// (`None`: the operating system's roots are not loaded, so give one).
    pub ca_pem: Option<Vec<u8>>,
    /// PEM certificate chain and key of this client, when etcd checks
    /// clients (`--client-cert-auth`).
    pub client_identity_pem: Option<(Vec<u8>, Vec<u8>)>,
}

/// An etcd client with the runtime it runs on.
pub struct EtcdKv {
    /// `Some` until dropped; dropped in the background so the store may
    /// be dropped from async code too.
    runtime: Option<tokio::runtime::Runtime>,
    client: Client,
    /// `<prefix>/`.
    root: Vec<u8>,
    request_timeout: Duration,
    max_attempts: u32,
}

impl Drop for EtcdKv {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl KvStore<EtcdKv> {
    /// Connects to etcd at `endpoints` (`http://host:port`, or `https://`
    /// with [`EtcdOptions::tls`]) and keeps module bytes in `blobs`.
    /// Blocks; call it where blocking is allowed, as every store method.
    pub fn connect(
        endpoints: &[String],
        options: EtcdOptions,
        blobs: Arc<dyn ModuleBlobs>,
    ) -> Result<EtcdStore> {
        KvStore::from_kv(EtcdKv::connect(endpoints, options)?, blobs)
    }

    /// The store over a connected client, migrated.
    pub fn from_kv(kv: EtcdKv, blobs: Arc<dyn ModuleBlobs>) -> Result<EtcdStore> {
        KvStore::new(kv, Some(blobs))
    }
}

impl EtcdKv {
    /// A client of etcd at `endpoints`, not yet a store: `migrate` fills
    /// an empty prefix through it before any store logic runs there.
    pub fn connect(endpoints: &[String], options: EtcdOptions) -> Result<EtcdKv> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("etcd-client")
            .enable_all()
            .build()
            .map_err(|e| StoreError::io(&e))?;
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(options.connect_timeout)
            .with_timeout(options.request_timeout);
        if let Some((user, password)) = &options.user {
            connect = connect.with_user(user, password);
        }
        if let Some(tls) = &options.tls {
            let mut config = TlsOptions::new();
            if let Some(ca) = &tls.ca_pem {
                config = config.ca_certificate(Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &tls.client_identity_pem {
                config = config.identity(Identity::from_pem(cert, key));
            }
            connect = connect.with_tls(config);
        }
        let endpoints = endpoints.to_vec();
        let timeout = options.connect_timeout + options.request_timeout;
        let client = runtime
            .block_on(async move {
                tokio::time::timeout(timeout, Client::connect(endpoints, Some(connect))).await
            })
            .map_err(|_| StoreError::Backend("connecting to etcd: timed out".into()))?
            .map_err(|e| etcd_error("connecting to etcd", e))?;
        let mut root = options.prefix.trim_end_matches('/').as_bytes().to_vec();
        root.push(b'/');
        Ok(EtcdKv {
            runtime: Some(runtime),
            client,
            root,
            request_timeout: options.request_timeout,
            max_attempts: options.max_attempts.max(1),
        })
    }
}

fn etcd_error(doing: &str, e: etcd_client::Error) -> StoreError {
    StoreError::Backend(format!("{doing}: {e}"))
}

/// A request that failed to connect to the member it was sent to, so
/// etcd never saw it.
fn not_connected(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s)
        if s.code() == tonic::Code::Unavailable && s.message().contains("connect"))
}

/// A read at a revision etcd has compacted away: the snapshot is gone,
/// so the transaction starts over on a fresh one.
fn compacted(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.message().contains("compacted"))
}

impl EtcdKv {
    fn key(&self, tree: Tree, key: &[u8]) -> Vec<u8> {
        let mut full = self.root.clone();
        full.extend_from_slice(tree.name().as_bytes());
        full.push(b'/');
        full.extend_from_slice(key);
        full
    }

    /// Runs `f` with a client on the backend's runtime and waits for it,
    /// bounded by the request timeout. It is spawned rather than
    /// `block_on`'d so that a caller inside some other runtime does not
    /// trip tokio's nested-runtime check.
    fn call<T, F>(&self, doing: &str, f: impl Fn(Client) -> F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = std::result::Result<T, etcd_client::Error>> + Send + 'static,
    {
        self.try_call(f)?.map_err(|e| etcd_error(doing, e))
    }

    /// As [`EtcdKv::call`], handing back etcd's own error.
    ///
    /// A request that could not even connect to the member the client
    /// picked (a crashed member: the client keeps it in its balance) is
    /// sent again, to whichever member the client picks next, within the
    /// request timeout. Only those: they never reached etcd, so sending a
    /// transaction again cannot apply it twice.
    fn try_call<T, F>(
        &self,
        f: impl Fn(Client) -> F,
    ) -> Result<std::result::Result<T, etcd_client::Error>>
    where
        T: Send + 'static,
        F: Future<Output = std::result::Result<T, etcd_client::Error>> + Send + 'static,
    {
        let deadline = std::time::Instant::now() + self.request_timeout;
        let mut pause = Duration::from_millis(5);
        loop {
            match self.call_once(&f)? {
                Err(e) if not_connected(&e) && std::time::Instant::now() + pause < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                out => return Ok(out),
            }
        }
    }

    /// One try of [`EtcdKv::try_call`].
    fn call_once<T, F>(
        &self,
        f: &impl Fn(Client) -> F,
    ) -> Result<std::result::Result<T, etcd_client::Error>>
    where
        T: Send + 'static,
        F: Future<Output = std::result::Result<T, etcd_client::Error>> + Send + 'static,
    {
        let runtime = self.runtime.as_ref().expect("runtime until dropped");
        let fut = f(self.client.clone());
        // The client has its own per-request timeout; this one also
        // covers waiting for a connection.
        let timeout = self.request_timeout + Duration::from_secs(1);
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        runtime.spawn(async move {
            let _ = tx.send(tokio::time::timeout(timeout, fut).await);
        });
        match rx.recv() {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(_)) => Err(StoreError::Backend("etcd: request timed out".into())),
            Err(_) => Err(StoreError::Backend("etcd: client stopped".into())),
        }
    }

    /// One read at `revision` (the current one if `None`).
    fn read(
        &self,
        key: Vec<u8>,
        revision: Option<i64>,
    ) -> Result<std::result::Result<Read, etcd_client::Error>> {
        self.try_call(move |mut c| {
            let key = key.clone();
            async move {
                let options = revision.map(|r| GetOptions::new().with_revision(r));
                let resp = c.get(key, options).await?;
                let at = resp.header().map_or(0, |h| h.revision());
                let kv = resp.kvs().first();
                Ok(Read {
                    value: kv.map(|kv| kv.value().to_vec()),
                    mod_revision: kv.map_or(0, |kv| kv.mod_revision()),
                    at,
                })
            }
        })
    }

    /// Commits a transaction's writes if none of its reads changed.
    fn commit(&self, state: TxState) -> Result<bool> {
        let compares: Vec<Compare> = state
            .reads
            .iter()
            .map(|(key, (mod_revision, _))| {
                if *mod_revision == 0 {
                    Compare::version(key.clone(), CompareOp::Equal, 0)
                } else {
                    Compare::mod_revision(key.clone(), CompareOp::Equal, *mod_revision)
                }
            })
            .collect();
        let ops: Vec<TxnOp> = state
            .writes
            .into_iter()
            .map(|(key, value)| match value {
                Some(v) => TxnOp::put(key, v, None),
                None => TxnOp::delete(key, None),
            })
            .collect();
        let txn = Txn::new().when(compares).and_then(ops);
        self.call("committing to etcd", move |mut c| {
            let txn = txn.clone();
            async move { Ok(c.txn(txn).await?.succeeded()) }
        })
    }
}

/// One key as read.
struct Read {
    value: Option<Vec<u8>>,
    /// The revision that last changed the key; 0 if it is missing.
    mod_revision: i64,
    /// The revision the read was made at.
    at: i64,
}

/// What a transaction has read and wants to write.
#[derive(Default)]
struct TxState {
    /// The snapshot every read is made at, fixed by the first.
    revision: Option<i64>,
    /// Full key -> (`mod_revision`, 0 if missing; value).
    reads: HashMap<Vec<u8>, (i64, Option<Vec<u8>>)>,
    /// Full key -> new value, or `None` to delete.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

struct EtcdTx<'a> {
    kv: &'a EtcdKv,
    state: RefCell<TxState>,
}

impl Tx for EtcdTx<'_> {
    fn get(&self, tree: Tree, key: &[u8]) -> TxResult<Option<Vec<u8>>> {
        let key = self.kv.key(tree, key);
        {
            let state = self.state.borrow();
            if let Some(written) = state.writes.get(&key) {
                return Ok(written.clone());
            }
            if let Some((_, value)) = state.reads.get(&key) {
                return Ok(value.clone());
            }
        }
        let revision = self.state.borrow().revision;
        let Read {
            value,
            mod_revision,
            at,
        } = match self.kv.read(key.clone(), revision) {
            Ok(Ok(read)) => read,
            Ok(Err(e)) if compacted(&e) => return Err(TxError::Conflict),
            Ok(Err(e)) => return Err(TxError::Backend(etcd_error("reading from etcd", e))),
            Err(e) => return Err(TxError::Backend(e)),
        };
        let mut state = self.state.borrow_mut();
        state.revision.get_or_insert(at);
        state.reads.insert(key, (mod_revision, value.clone()));
        Ok(value)
    }

    fn insert(&self, tree: Tree, key: &[u8], value: &[u8]) -> TxResult<()> {
        let key = self.kv.key(tree, key);
        self.state
            .borrow_mut()
            .writes
            .insert(key, Some(value.to_vec()));
        Ok(())
    }

    fn remove(&self, tree: Tree, key: &[u8]) -> TxResult<Option<Vec<u8>>> {
        let old = self.get(tree, key)?;
        let key = self.kv.key(tree, key);
        self.state.borrow_mut().writes.insert(key, None);
        Ok(old)
    }
}

/// Wakes `notify` on every change of `key`, until nobody holds it (or the
/// backend's runtime stops). A broken watch (a member gone, etcd
/// restarting) is opened again after a pause; meanwhile the caller's own
/// polling still sees changes.
async fn watch(mut client: Client, key: Vec<u8>, notify: std::sync::Weak<tokio::sync::Notify>) {
    loop {
        match client.watch(key.clone(), None).await {
            Ok(mut stream) => {
                // A change may have happened while the watch was down.
                match notify.upgrade() {
                    Some(n) => n.notify_one(),
                    None => return,
                }
                while let Ok(Some(response)) = stream.message().await {
                    if response.canceled() {
                        break;
                    }
                    if response.events().is_empty() {
                        continue;
                    }
                    match notify.upgrade() {
                        Some(n) => n.notify_one(),
                        None => return,
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "watching etcd failed; retrying"),
        }
        if notify.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A short random pause before running a conflicting transaction again,
/// so that writers that collided do not collide again in lockstep.
fn backoff(attempt: u32) {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let ceiling = u64::from(attempt.min(10)) * 2 + 1;
    std::thread::sleep(Duration::from_millis(random % ceiling));
}

impl Kv for EtcdKv {
    fn shared(&self) -> bool {
        true
    }

    fn changes(&self, tree: Tree, key: &[u8]) -> Option<Arc<tokio::sync::Notify>> {
        let notify = Arc::new(tokio::sync::Notify::new());
        let runtime = self.runtime.as_ref()?;
        runtime.spawn(watch(
            self.client.clone(),
            self.key(tree, key),
            Arc::downgrade(&notify),
        ));
        Some(notify)
    }

    fn transact<T>(&self, f: impl Fn(&dyn Tx) -> TxResult<T>) -> Result<T> {
        for attempt in 0..self.max_attempts {
            if attempt > 0 {
                backoff(attempt);
            }
            let tx = EtcdTx {
                kv: self,
                state: RefCell::new(TxState::default()),
            };
            let out = match f(&tx) {
                Ok(out) => out,
                Err(TxError::Conflict) => continue,
                Err(TxError::Abort(e) | TxError::Backend(e)) => return Err(e),
            };
            let state = tx.state.into_inner();
            // A snapshot read needs no commit: it saw one consistent state.
            if state.writes.is_empty() || self.commit(state)? {
                return Ok(out);
            }
        }
        Err(StoreError::Backend("too many conflicting writers".into()))
    }

    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let key = self.key(tree, key);
        Ok(self
            .read(key, None)?
            .map_err(|e| etcd_error("reading from etcd", e))?
            .value)
    }

    fn scan(&self, tree: Tree, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let key = self.key(tree, prefix);
        let strip = self.key(tree, b"").len();
        self.call("reading from etcd", move |mut c| {
            let key = key.clone();
            async move {
                let resp = c.get(key, Some(GetOptions::new().with_prefix())).await?;
                Ok(resp
                    .kvs()
                    .iter()
                    .map(|kv| (kv.key()[strip..].to_vec(), kv.value().to_vec()))
                    .collect())
            }
        })
    }
}
