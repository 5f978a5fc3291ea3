//! Where cached responses live: one partition per tenant, each in its own
//! least-recently-used order, all within the node's byte budget.
//!
//! A tenant's partition never holds more than the tenant budget: its own
//! oldest objects make room for its new ones. When the node's budget is
//! full, room is taken from the tenant holding the most bytes, oldest
//! object first, so a tenant filling the cache evicts itself before it
//! evicts anyone smaller. No lookup ever crosses partitions: a key is
//! only compared within the tenant that made the request.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http_cache_semantics::{BeforeRequest, CachePolicy};
use lru::LruCache;
use outpost_proto::CachePurge;

/// Responses kept per URL and method at most (one per `Vary` variant):
/// a response varying on a header with many values (a user agent, say)
/// keeps the latest few rather than one per value.
pub(crate) const MAX_VARIANTS: usize = 8;

/// What an object costs the budget beyond its body and headers: the
/// policy's copies of the request and response heads and bookkeeping.
const OBJECT_OVERHEAD: u64 = 512;

/// A stored URL within a tenant's partition: the method (GET and HEAD
/// are stored apart) and the URL, normalized (see [`normalize_url`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub(crate) head: bool,
    pub(crate) url: String,
}

/// An absolute URL as the cache keys it: scheme and host in lower case,
/// the scheme's default port left out, path and query as given (they are
/// case-sensitive, and a query's order is the origin's business).
pub(crate) fn normalize_url(uri: &http::Uri) -> Option<String> {
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let authority = uri.authority()?;
    let host = authority.host().to_ascii_lowercase();
    let default = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let port = match authority.port_u16() {
        Some(p) if p != default => format!(":{p}"),
        _ => String::new(),
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    Some(format!("{scheme}://{host}{port}{path}"))
}

/// One stored response: its policy (which holds the request and response
/// heads it was stored for), its head, body and surrogate keys.
#[derive(Debug)]
pub(crate) struct Object {
    pub(crate) policy: CachePolicy,
    pub(crate) status: http::StatusCode,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) surrogate_keys: Vec<String>,
    /// When it stops being fresh (for `stale-if-error`).
    pub(crate) stale_since: SystemTime,
    pub(crate) bytes: u64,
}

impl Object {
    /// An object for `policy`, stored at `now`.
    pub(crate) fn new(
        policy: CachePolicy,
        status: http::StatusCode,
        headers: http::HeaderMap,
        body: Bytes,
        surrogate_keys: Vec<String>,
        now: SystemTime,
    ) -> Object {
        let head_bytes: usize = headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len())
            .sum();
        // The policy keeps copies of both heads.
        let bytes = body.len() as u64 + 2 * head_bytes as u64 + OBJECT_OVERHEAD;
        Object {
            stale_since: now + policy.time_to_live(now),
            policy,
            status,
            headers,
            body,
            surrogate_keys,
            bytes,
        }
    }
}

/// What a lookup found.
pub(crate) enum Lookup {
    /// A fresh response for this request: serve it.
    Fresh(Arc<Object>, http::response::Parts),
    /// A stored response this request may use once the origin confirms
    /// it: send `request` (it carries the validators) and see.
    Stale(Arc<Object>, http::request::Parts),
    /// Nothing usable.
    Miss,
}

#[derive(Default)]
struct Partition {
    objects: Option<LruCache<Key, Vec<Arc<Object>>>>,
    bytes: u64,
}

impl Partition {
    fn objects(&mut self) -> &mut LruCache<Key, Vec<Arc<Object>>> {
        self.objects.get_or_insert_with(LruCache::unbounded)
    }

    /// Whether `key` is all this partition holds.
    fn holds_only(&self, key: &Key) -> bool {
        self.objects
            .as_ref()
            .is_some_and(|o| o.len() == 1 && o.peek_lru().is_some_and(|(k, _)| k == key))
    }

    /// Drops the least recently used URL (all its variants): the bytes
    /// freed, 0 if the partition is empty.
    fn pop_oldest(&mut self) -> (u64, usize) {
        match self.objects().pop_lru() {
            Some((_, variants)) => {
                let freed: u64 = variants.iter().map(|o| o.bytes).sum();
                self.bytes -= freed;
                (freed, variants.len())
            }
            None => (0, 0),
        }
    }
}

/// Evictions and removals one call caused, by tenant, for the metrics.
pub(crate) type Removed = Vec<(Arc<str>, usize)>;

/// The partitions and the budgets.
pub(crate) struct Store {
    partitions: HashMap<Arc<str>, Partition>,
    bytes: u64,
    budget: u64,
    tenant_budget: u64,
}

impl Store {
    pub(crate) fn new(budget: u64, tenant_budget: u64) -> Store {
        Store {
            partitions: HashMap::new(),
            bytes: 0,
            budget,
            tenant_budget: tenant_budget.min(budget),
        }
    }

    /// Bytes held in all, and by `tenant`.
    pub(crate) fn bytes(&self, tenant: &str) -> (u64, u64) {
        (
            self.bytes,
            self.partitions.get(tenant).map_or(0, |p| p.bytes),
        )
    }

    /// Looks `key` up for `request` in `tenant`'s partition: the first
    /// variant fresh for it, else one it may revalidate.
    pub(crate) fn lookup(
        &mut self,
        tenant: &str,
        key: &Key,
        request: &http::request::Parts,
        now: SystemTime,
    ) -> Lookup {
        let Some(variants) = self
            .partitions
            .get_mut(tenant)
            .and_then(|p| p.objects().get(key))
        else {
            return Lookup::Miss;
        };
        let mut stale = None;
        for object in variants {
            match object.policy.before_request(request, now) {
                BeforeRequest::Fresh(head) => return Lookup::Fresh(object.clone(), head),
                BeforeRequest::Stale {
                    request: revalidate,
                    matches: true,
                } if stale.is_none() => stale = Some((object.clone(), revalidate)),
                BeforeRequest::Stale { .. } => {}
            }
        }
        match stale {
            Some((object, revalidate)) => Lookup::Stale(object, revalidate),
            None => Lookup::Miss,
        }
    }

    /// Stores `object` under `key` in `tenant`'s partition, replacing the
    /// variant `request` selects (if any); evicts what the budgets need.
    /// What was evicted, by tenant. An object larger than a tenant's
    /// budget is not stored.
    pub(crate) fn insert(
        &mut self,
        tenant: &str,
        key: Key,
        request: &http::request::Parts,
        object: Arc<Object>,
        now: SystemTime,
    ) -> Removed {
        let mut removed = Removed::new();
        if object.bytes > self.tenant_budget {
            return removed;
        }
        let tenant: Arc<str> = match self.partitions.get_key_value(tenant) {
            Some((name, _)) => name.clone(),
            None => Arc::from(tenant),
        };
        let partition = self.partitions.entry(tenant.clone()).or_default();
        // The variant this request selects is replaced, not kept beside.
        let mut variants = partition.objects().pop(&key).unwrap_or_default();
        let before: u64 = variants.iter().map(|o| o.bytes).sum();
        variants.retain(|old| {
            !matches!(
                old.policy.before_request(request, now),
                BeforeRequest::Fresh(_) | BeforeRequest::Stale { matches: true, .. }
            )
        });
        variants.insert(0, object);
        variants.truncate(MAX_VARIANTS);
        let after: u64 = variants.iter().map(|o| o.bytes).sum();
        partition.bytes = partition.bytes - before + after;
        self.bytes = self.bytes - before + after;
        partition.objects().push(key.clone(), variants);

        // The tenant's own budget first: its oldest objects go, never
        // the one just stored.
        let mut own = 0;
        while partition.bytes > self.tenant_budget {
            if partition
                .objects()
                .peek_lru()
                .is_some_and(|(k, _)| *k == key)
            {
                break;
            }
            let (freed, n) = partition.pop_oldest();
            self.bytes -= freed;
            own += n;
        }
        if own > 0 {
            removed.push((tenant.clone(), own));
        }
        // Then the node's: the biggest partition gives (but never the
        // object just stored).
        while self.bytes > self.budget {
            let Some(victim) = self
                .partitions
                .iter()
                .filter(|(name, p)| !(**name == tenant && p.holds_only(&key)))
                .max_by_key(|(_, p)| p.bytes)
                .map(|(name, _)| name.clone())
            else {
                break;
            };
            let partition = self.partitions.get_mut(&victim).expect("found above");
            let (freed, n) = partition.pop_oldest();
            if freed == 0 {
                break;
            }
            self.bytes -= freed;
            removed.push((victim.clone(), n));
            if partition.bytes == 0 {
                self.partitions.remove(&victim);
            }
        }
        removed
    }

    /// Removes what `purge` names from `tenant`'s partition: how many
    /// objects went.
    pub(crate) fn purge(&mut self, tenant: &str, purge: &CachePurge) -> usize {
        let Some(partition) = self.partitions.get_mut(tenant) else {
            return 0;
        };
        let mut gone = 0;
        let mut freed = 0;
        match purge {
            CachePurge::All {} => {
                let objects = partition.objects();
                gone = objects.iter().map(|(_, v)| v.len()).sum();
                objects.clear();
                freed = partition.bytes;
            }
            CachePurge::Url { url } => {
                let Some(url) = url
                    .parse::<http::Uri>()
                    .ok()
                    .and_then(|u| normalize_url(&u))
                else {
                    return 0;
                };
                for head in [false, true] {
                    let key = Key {
                        head,
                        url: url.clone(),
                    };
                    if let Some(variants) = partition.objects().pop(&key) {
                        gone += variants.len();
                        freed += variants.iter().map(|o| o.bytes).sum::<u64>();
                    }
                }
            }
            CachePurge::SurrogateKey { key } => {
                let objects = partition.objects();
                let tagged: Vec<Key> = objects
                    .iter()
                    .filter(|(_, v)| v.iter().any(|o| o.surrogate_keys.contains(key)))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in tagged {
                    let mut variants = objects.pop(&k).expect("listed above");
                    let (drop, keep): (Vec<_>, Vec<_>) = variants
                        .drain(..)
                        .partition(|o| o.surrogate_keys.contains(key));
                    gone += drop.len();
                    freed += drop.iter().map(|o| o.bytes).sum::<u64>();
                    if !keep.is_empty() {
                        objects.push(k, keep);
                    }
                }
            }
        }
        partition.bytes -= freed;
        self.bytes -= freed;
        if partition.bytes == 0 {
            self.partitions.remove(tenant);
        }
        gone
    }

    /// Drops everything (a node that may have missed purges).
    pub(crate) fn clear(&mut self) -> Vec<Arc<str>> {
        self.bytes = 0;
        self.partitions.drain().map(|(name, _)| name).collect()
    }

    /// Removes one stored object (a variant found stale and replaced).
    pub(crate) fn remove(&mut self, tenant: &str, key: &Key, object: &Arc<Object>) {
        let Some(partition) = self.partitions.get_mut(tenant) else {
            return;
        };
        let objects = partition.objects();
        let Some(variants) = objects.peek_mut(key) else {
            return;
        };
        let before = variants.len();
        variants.retain(|o| !Arc::ptr_eq(o, object));
        if variants.len() < before {
            if variants.is_empty() {
                objects.pop(key);
            }
            partition.bytes -= object.bytes;
            self.bytes -= object.bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(url: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::get(url);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn object(req: &http::request::Parts, body: usize, headers: &[(&str, &str)]) -> Arc<Object> {
        let mut b = http::Response::builder().status(200);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        let res = b.body(()).unwrap().into_parts().0;
        let policy = CachePolicy::new(req, &res);
        let keys = res
            .headers
            .get("surrogate-key")
            .map(|v| {
                v.to_str()
                    .unwrap()
                    .split_whitespace()
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        Arc::new(Object::new(
            policy,
            res.status,
            http::HeaderMap::new(),
            Bytes::from(vec![b'x'; body]),
            keys,
            SystemTime::now(),
        ))
    }

    fn key(url: &str) -> Key {
        Key {
            head: false,
            url: normalize_url(&url.parse().unwrap()).unwrap(),
        }
    }

    const FRESH: &[(&str, &str)] = &[("cache-control", "max-age=60")];

    fn put(store: &mut Store, tenant: &str, url: &str, body: usize) -> Removed {
        let req = request(url, &[]);
        let obj = object(&req, body, FRESH);
        store.insert(tenant, key(url), &req, obj, SystemTime::now())
    }

    fn has(store: &mut Store, tenant: &str, url: &str) -> bool {
        matches!(
            store.lookup(tenant, &key(url), &request(url, &[]), SystemTime::now()),
            Lookup::Fresh(..)
        )
    }

    #[test]
    fn urls_are_keyed_with_scheme_and_host_in_lower_case_and_no_default_port() {
        let n = |u: &str| normalize_url(&u.parse().unwrap());
        assert_eq!(
            n("HTTP://Origin.Example:80/A?b=1").as_deref(),
            Some("http://origin.example/A?b=1")
        );
        assert_eq!(
            n("https://origin.example:8443/").as_deref(),
            Some("https://origin.example:8443/")
        );
        assert_ne!(n("https://o.example/a"), n("http://o.example/a"));
        assert_eq!(n("/relative"), None);
    }

    #[test]
    fn a_tenant_never_finds_another_tenants_object() {
        let mut store = Store::new(1 << 20, 1 << 20);
        put(&mut store, "acme", "http://o.example/x", 10);
        assert!(has(&mut store, "acme", "http://o.example/x"));
        assert!(!has(&mut store, "rival", "http://o.example/x"));
    }

    #[test]
    fn a_tenant_over_its_budget_evicts_its_own_oldest_objects_only() {
        let object_bytes = 1000 + OBJECT_OVERHEAD;
        let mut store = Store::new(100 * object_bytes, 3 * object_bytes);
        put(&mut store, "small", "http://o.example/s", 1000);
        for i in 0..5 {
            put(&mut store, "big", &format!("http://o.example/{i}"), 1000);
        }
        assert!(has(&mut store, "small", "http://o.example/s"));
        assert_eq!(store.bytes("big").1, 3 * object_bytes);
        assert!(!has(&mut store, "big", "http://o.example/0"));
        assert!(!has(&mut store, "big", "http://o.example/1"));
        assert!(has(&mut store, "big", "http://o.example/4"));
    }

    #[test]
    fn a_full_node_takes_room_from_the_biggest_tenant_first() {
        let object_bytes = 1000 + OBJECT_OVERHEAD;
        let mut store = Store::new(4 * object_bytes, 3 * object_bytes);
        put(&mut store, "small", "http://o.example/s", 1000);
        for i in 0..3 {
            put(&mut store, "big", &format!("http://o.example/{i}"), 1000);
        }
        // The node is full; another small object evicts big's oldest.
        let removed = put(&mut store, "small", "http://o.example/t", 1000);
        assert_eq!(removed, vec![(Arc::from("big"), 1)]);
        assert!(has(&mut store, "small", "http://o.example/s"));
        assert!(has(&mut store, "small", "http://o.example/t"));
        assert!(!has(&mut store, "big", "http://o.example/0"));
        assert_eq!(store.bytes("x").0, 4 * object_bytes);
    }

    #[test]
    fn an_object_larger_than_a_tenants_budget_is_not_stored() {
        let mut store = Store::new(1 << 20, 4096);
        assert!(put(&mut store, "acme", "http://o.example/huge", 8192).is_empty());
        assert!(!has(&mut store, "acme", "http://o.example/huge"));
        assert_eq!(store.bytes("acme"), (0, 0));
    }

    #[test]
    fn vary_keeps_one_object_per_variant_and_replaces_a_variants_own() {
        let mut store = Store::new(1 << 20, 1 << 20);
        let url = "http://o.example/v";
        let vary = &[("cache-control", "max-age=60"), ("vary", "x-lang")];
        for (lang, body) in [("en", 1), ("fr", 2), ("en", 3)] {
            let req = request(url, &[("x-lang", lang)]);
            let obj = object(&req, body, vary);
            store.insert("acme", key(url), &req, obj, SystemTime::now());
        }
        let found = |lang: &str, store: &mut Store| match store.lookup(
            "acme",
            &key(url),
            &request(url, &[("x-lang", lang)]),
            SystemTime::now(),
        ) {
            Lookup::Fresh(o, _) => Some(o.body.len()),
            _ => None,
        };
        assert_eq!(found("en", &mut store), Some(3));
        assert_eq!(found("fr", &mut store), Some(2));
        assert_eq!(found("de", &mut store), None);
        assert_eq!(
            store.bytes("acme").1,
            2 * OBJECT_OVERHEAD + 5,
            "the replaced variant is not counted"
        );
    }

    #[test]
    fn purges_remove_by_url_by_surrogate_key_or_all_and_only_the_tenants() {
        let mut store = Store::new(1 << 20, 1 << 20);
        for (tenant, url, keys) in [
            ("acme", "http://o.example/a", "news front"),
            ("acme", "http://o.example/b", "news"),
            ("acme", "http://o.example/c", "other"),
            ("rival", "http://o.example/a", "news"),
        ] {
            let req = request(url, &[]);
            let obj = object(
                &req,
                1,
                &[("cache-control", "max-age=60"), ("surrogate-key", keys)],
            );
            store.insert(tenant, key(url), &req, obj, SystemTime::now());
        }
        let by_key = CachePurge::SurrogateKey { key: "news".into() };
        assert_eq!(store.purge("acme", &by_key), 2);
        assert!(!has(&mut store, "acme", "http://o.example/a"));
        assert!(!has(&mut store, "acme", "http://o.example/b"));
        assert!(has(&mut store, "acme", "http://o.example/c"));
        assert!(has(&mut store, "rival", "http://o.example/a"));
        let by_url = CachePurge::Url {
            url: "HTTP://O.EXAMPLE:80/c".into(),
        };
        assert_eq!(store.purge("acme", &by_url), 1);
        assert_eq!(store.bytes("acme").1, 0);
        assert_eq!(store.purge("rival", &CachePurge::All {}), 1);
        assert_eq!(store.bytes("x").0, 0);
    }
}
