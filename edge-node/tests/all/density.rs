//! Many apps on one node: compiled code loaded when a request needs it,
//! shared between apps of one module, and dropped past the node's code
//! budget — without a request ever failing for it, and without an app
//! that fails validation ever being served.

use std::path::Path;

use outpost_runtime::{AppSpec, ModuleFile};
use outpost_test_fixtures as fixtures;

use crate::support::{TestNode, app, local_config, metric_in, quick_limits};

/// A node with its compile cache in `cache` and `budget` bytes of code.
async fn node_on(cache: &Path, budget: u64) -> TestNode {
    let node = TestNode::launch(local_config()).await;
    let runtime = node.node.runtime();
    runtime.enable_compile_cache(cache).unwrap();
    runtime.resident().set_budget(budget);
    node
}

/// The bytes of code one of `distinct_apps`' apps keeps resident, from a
/// node (on `cache`) that loads one; budgets in the tests are counted in
/// apps.
async fn one_app_code_bytes(dir: &Path, cache: &Path) -> f64 {
    let probe = node_on(cache, u64::MAX).await;
    let one = distinct_apps(dir, "probe", 1, true);
    install(&probe, &one).await;
    let (bytes, _) = resident(&probe).await;
    assert!(bytes > 0.0);
    bytes
}

/// `wasm` written to `dir/name.wasm`, as the app `tenant/name` that reads
/// it from there; with `in_memory`, the bytes are handed over too (a first
/// deploy), else only the file (what a restarted node has).
fn app_from_file(dir: &Path, tenant: &str, name: &str, wasm: &[u8], in_memory: bool) -> AppSpec {
    let path = dir.join(format!("{tenant}-{name}.wasm"));
    if !path.exists() {
        std::fs::write(&path, wasm).unwrap();
    }
    let mut spec = app(tenant, name, Vec::new(), quick_limits());
    spec.module = Some(ModuleFile::of(&path, wasm));
    if in_memory {
        spec.wasm = wasm.to_vec();
    }
    spec
}

/// `count` apps of tenant `tenant`, each with its own module (its own
/// body text), on hosts `{name}.{tenant}.test`.
fn distinct_apps(
    dir: &Path,
    tenant: &str,
    count: usize,
    in_memory: bool,
) -> Vec<(String, AppSpec)> {
    (0..count)
        .map(|i| {
            let name = format!("app{i}");
            let wasm = fixtures::hello(&format!("{tenant} {name}\n"));
            let spec = app_from_file(dir, tenant, &name, &wasm, in_memory);
            (format!("{name}.{tenant}.test"), spec)
        })
        .collect()
}

async fn install(node: &TestNode, apps: &[(String, AppSpec)]) {
    let apps = apps
        .iter()
        .map(|(host, spec)| (vec![host.parse().unwrap()], spec.clone()))
        .collect();
    node.node.apply(apps).await.expect("apps load");
}

/// Serves every app once and checks each answers with its own text.
async fn serve_each(node: &TestNode, apps: &[(String, AppSpec)]) {
    for (host, spec) in apps {
        let reply = node.get(host, "/").await;
        assert_eq!(reply.status, 200, "{host}: {}", reply.text());
        assert_eq!(reply.text(), format!("{} {}\n", spec.tenant, spec.name));
    }
}

/// `(bytes, modules)` of resident code, as `/metrics` says.
async fn resident(node: &TestNode) -> (f64, f64) {
    let text = node.scrape().await;
    (
        metric_in(&text, "outpost_runtime_code_resident_bytes"),
        metric_in(&text, "outpost_runtime_code_resident_modules"),
    )
}

#[tokio::test]
async fn a_restarted_node_loads_an_apps_code_only_when_it_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("compiled");
    let apps = distinct_apps(dir.path(), "acme", 4, true);

    // First deploy: every app compiled and tried before it serves.
    let first = node_on(&cache, u64::MAX).await;
    install(&first, &apps).await;
    assert_eq!(resident(&first).await.1, 4.0, "validated code stays loaded");
    serve_each(&first, &apps).await;
    drop(first);

    // Restarted on the same cache, with only the module files: nothing is
    // loaded, nothing is even read, until a request comes.
    let restarted = distinct_apps(dir.path(), "acme", 4, false);
    let node = node_on(&cache, u64::MAX).await;
    install(&node, &restarted).await;
    assert_eq!(resident(&node).await, (0.0, 0.0));
    let lookups = "outpost_runtime_compile_cache_lookups_total{result=\"hit\"}";
    assert_eq!(node.metric(lookups).await, 0.0);

    let (host, spec) = &restarted[2];
    assert_eq!(
        node.get(host, "/").await.text(),
        format!("acme {}\n", spec.name)
    );
    let (bytes, modules) = resident(&node).await;
    assert_eq!(modules, 1.0, "only the app asked for");
    assert!(bytes > 0.0);
    assert_eq!(node.metric(lookups).await, 1.0);
    assert_eq!(
        node.metric("outpost_runtime_code_loads_total{result=\"ok\"}")
            .await,
        1.0
    );
    serve_each(&node, &restarted).await;
    assert_eq!(resident(&node).await.1, 4.0);
}

#[tokio::test]
async fn code_past_the_budget_is_evicted_and_loaded_again_without_failing_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("compiled");
    let one_app = one_app_code_bytes(dir.path(), &cache).await;

    // Room for two and a half apps' code; eight apps served in turn.
    let budget = (one_app * 2.5) as u64;
    let node = node_on(&cache, budget).await;
    let apps = distinct_apps(dir.path(), "acme", 8, true);
    install(&node, &apps).await;
    for _ in 0..3 {
        serve_each(&node, &apps).await;
        let (bytes, modules) = resident(&node).await;
        assert!(
            bytes <= budget as f64,
            "{bytes} bytes of code resident, budget {budget}"
        );
        assert!(modules <= 2.0, "{modules} modules resident");
    }
    let evictions = node.metric("outpost_runtime_code_evictions_total").await;
    let loads = node
        .metric("outpost_runtime_code_loads_total{result=\"ok\"}")
        .await;
    // Each round trip over 8 apps with room for 2 reloads (nearly) all.
    assert!(evictions >= 16.0, "{evictions} evictions");
    assert!(loads >= 16.0, "{loads} loads");
    assert_eq!(
        node.metric("outpost_runtime_code_loads_total{result=\"error\"}")
            .await,
        0.0
    );
}

#[tokio::test]
async fn apps_of_one_module_share_one_loaded_copy() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("compiled");
    let wasm = fixtures::hello("shared\n");
    let path = dir.path().join("shared.wasm");
    std::fs::write(&path, &wasm).unwrap();
    let apps: Vec<(String, AppSpec)> = ["acme", "globex", "initech"]
        .iter()
        .flat_map(|tenant| {
            let (path, wasm) = (&path, &wasm);
            (0..3).map(move |i| {
                let mut spec = app(tenant, &format!("app{i}"), wasm.clone(), quick_limits());
                spec.module = Some(ModuleFile::of(path, wasm));
                (format!("app{i}.{tenant}.test"), spec)
            })
        })
        .collect();
    let node = node_on(&cache, u64::MAX).await;
    install(&node, &apps).await;
    for (host, _) in &apps {
        assert_eq!(node.get(host, "/").await.text(), "shared\n");
    }
    let (bytes, modules) = resident(&node).await;
    assert_eq!(modules, 1.0, "nine apps, one module, one copy");

    // Removing all but one app keeps the code; removing the last drops it.
    install(&node, &apps[..1]).await;
    assert_eq!(resident(&node).await, (bytes, 1.0));
    node.node.apply(Vec::new()).await.unwrap();
    assert_eq!(resident(&node).await, (0.0, 0.0));
}

#[tokio::test]
async fn a_request_in_flight_keeps_its_code_through_an_eviction() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("compiled");
    let slow = app_from_file(dir.path(), "acme", "slow", &fixtures::slow(1500), true);
    let node = node_on(&cache, u64::MAX).await;
    node.node
        .apply(vec![(vec!["slow.test".parse().unwrap()], slow)])
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let request = node.get("slow.test", "/");
    let evict = async {
        // Evicted while the request runs (it sleeps 1.5 s in the guest).
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        node.node.runtime().resident().set_budget(1);
        assert_eq!(node.node.runtime().resident().resident(), (0, 0));
    };
    let (reply, ()) = tokio::join!(request, evict);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(started.elapsed() >= std::time::Duration::from_millis(1500));
    assert_eq!(
        node.metric("outpost_runtime_code_evictions_total").await,
        1.0
    );
    // The next request loads it again (and, over budget, it is the only
    // module left, so it stays until another one needs the room).
    assert_eq!(node.get("slow.test", "/").await.status, 200);
}

/// Another tenant cycling through many apps under a small budget keeps
/// evicting the first tenant's code: the first tenant's requests load it
/// again and are answered, every one.
#[tokio::test]
async fn another_tenant_churning_through_apps_never_fails_a_tenants_request() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("compiled");
    let victim = distinct_apps(dir.path(), "victim", 1, true);
    let churn = distinct_apps(dir.path(), "churn", 12, true);
    let mut apps = victim.clone();
    apps.extend(churn.iter().cloned());
    let node = node_on(&cache, u64::MAX).await;
    install(&node, &apps).await;
    let (bytes, modules) = resident(&node).await;
    let one_app = bytes / modules;
    node.node
        .runtime()
        .resident()
        .set_budget((one_app * 1.5) as u64);

    let (victim_host, _) = &victim[0];
    let attacker = async {
        for _ in 0..3 {
            for (host, _) in &churn {
                assert_eq!(node.get(host, "/").await.status, 200);
            }
        }
    };
    let target = async {
        let mut served = 0;
        for _ in 0..40 {
            let reply = node.get(victim_host, "/").await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            assert_eq!(reply.text(), "victim app0\n");
            served += 1;
        }
        served
    };
    let ((), served) = tokio::join!(attacker, target);
    assert_eq!(served, 40);
    assert!(node.metric("outpost_runtime_code_evictions_total").await > 10.0);
}

/// An app that fails its trial instantiation is never marked validated:
/// restarted, the node tries it again before it serves, and it stays
/// unavailable (503 `app_unavailable` at once), never loaded lazily and
/// failing at its first request.
#[tokio::test]
async fn an_app_that_failed_validation_is_not_served_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("compiled");
    let good = app_from_file(dir.path(), "acme", "good", &fixtures::hello("good\n"), true);
    let bad = app_from_file(dir.path(), "acme", "bad", &fixtures::start_trap(), true);
    let table = |good: AppSpec, bad: AppSpec| {
        vec![
            (vec!["good.test".parse().unwrap()], good),
            (vec!["bad.test".parse().unwrap()], bad),
        ]
    };
    let first = node_on(&cache, u64::MAX).await;
    let failed = first
        .node
        .apply_each(table(good.clone(), bad.clone()))
        .await
        .unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    drop(first);

    let unread = |mut spec: AppSpec| {
        spec.wasm = Vec::new();
        spec
    };
    let node = node_on(&cache, u64::MAX).await;
    let failed = node
        .node
        .apply_each(table(unread(good), unread(bad)))
        .await
        .unwrap();
    assert_eq!(failed.len(), 1, "tried again, failed again: {failed:?}");
    assert!(failed[0].reason.contains("instantiation"), "{failed:?}");
    let reply = node.get("bad.test", "/").await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.outpost_error(), Some("app_unavailable"));
    assert_eq!(node.get("good.test", "/").await.text(), "good\n");
}

/// Every app served keeps a warm slot of its own (up to
/// `max_unused_warm_slots`): a request for an app finds its module's slot
/// instead of taking, and remapping, another module's. With wasmtime's
/// default of 100, 150 apps served in turn would leave at most 100 warm.
#[tokio::test]
async fn apps_served_in_turn_each_keep_a_warm_slot() {
    let dir = tempfile::tempdir().unwrap();
    let apps = distinct_apps(dir.path(), "acme", 150, true);
    let node = TestNode::launch(local_config()).await;
    install(&node, &apps).await;
    serve_each(&node, &apps).await;
    let warm = node.metric("outpost_runtime_pool_warm_memories").await;
    // wasmtime's default would cap it at 100; a few apps share a slot
    // their trial instantiation freed, so not quite 150.
    assert!(warm > 120.0, "{warm} warm memory slots after 150 apps");
    let resident = node.metric("outpost_runtime_pool_warm_memory_bytes").await;
    // Only the pages the guests wrote stay (PAGEMAP_SCAN): far less than
    // `memory_keep_resident` (1 MiB) per slot.
    assert!(
        resident < warm * 128.0 * 1024.0,
        "{resident} bytes resident in {warm} warm slots"
    );
}

/// `outpost_runtime_function_cache_lookups_total{result}` as `(hits, misses)`.
async fn function_lookups(node: &TestNode) -> (f64, f64) {
    let text = node.scrape().await;
    let series = |result: &str| {
        metric_in(
            &text,
            &format!("outpost_runtime_function_cache_lookups_total{{result=\"{result}\"}}"),
        )
    };
    (series("hit"), series("miss"))
}

#[tokio::test]
async fn compiled_functions_are_shared_between_tenants_modules_yet_each_app_runs_its_own() {
    // Three tenants' modules with the same 40 extra functions. The first
    // two differ only in their data (bodies of one length); the third's
    // handler differs too (its body's length is a constant in the code).
    const FUNCTIONS: usize = 40;
    let module = |tenant: &str, body: &str| {
        let wasm = fixtures::hello_slow_to_compile(body, FUNCTIONS);
        let spec = app(tenant, "web", wasm, quick_limits());
        (format!("web.{tenant}.test"), spec)
    };
    let acme = module("acme", "alpha\n");
    let globex = module("globex", "bravo\n");
    let initech = module("initech", "charlie\n");
    let node = TestNode::launch(local_config()).await;

    let (hits, misses) = function_lookups(&node).await;
    assert_eq!((hits, misses), (0.0, 0.0));
    install(&node, std::slice::from_ref(&acme)).await;
    let (hits0, misses0) = function_lookups(&node).await;
    assert!(misses0 > FUNCTIONS as f64, "{misses0} functions compiled");

    // Cranelift compiles in parallel, so a few functions may miss while
    // another thread is still compiling their twin: nearly all must hit.
    install(&node, &[acme.clone(), globex.clone()]).await;
    let (hits1, misses1) = function_lookups(&node).await;
    let (hit, looked_up) = (hits1 - hits0, hits1 + misses1 - hits0 - misses0);
    assert!(
        hit >= 0.9 * looked_up,
        "{hit} of {looked_up} functions came from the cache"
    );

    install(&node, &[acme.clone(), globex.clone(), initech.clone()]).await;
    let (hits2, _) = function_lookups(&node).await;
    assert!(hits2 - hits1 >= FUNCTIONS as f64, "the fillers are shared");

    for ((host, _), want) in [
        (&acme, "alpha\n"),
        (&globex, "bravo\n"),
        (&initech, "charlie\n"),
    ] {
        let reply = node.get(host, "/").await;
        assert_eq!(reply.status, 200, "{host}");
        assert_eq!(reply.text(), want, "{host} runs its own code and data");
    }
}

/// Files of the compile cache this process has mapped.
fn mapped_cwasm_files() -> std::collections::BTreeSet<String> {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.ends_with(".cwasm"))
        .map(str::to_string)
        .collect()
}

/// Code evicted past the budget is unmapped, memory images included: no
/// freed instance slot keeps a dropped module's image, and with it the
/// module's whole compiled code, mapped. (wasmtime clears a dropped
/// module's slots, but misses one still waiting to be decommitted: with
/// `decommit_batch_size` 64 nearly every eviction here left a copy.)
#[tokio::test]
async fn evicted_code_leaves_no_copy_mapped_in_the_instance_pool() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("compiled");
    let one_app = one_app_code_bytes(dir.path(), &cache).await;

    // Nothing kept resident, so every freed slot has pages to release (a
    // JS guest writes more than the default 1 MiB): each waits in the
    // decommit queue if there is one.
    let mut config = local_config();
    config.pool.memory_keep_resident = 0;
    let node = TestNode::launch(config).await;
    node.node.runtime().enable_compile_cache(&cache).unwrap();
    node.node
        .runtime()
        .resident()
        .set_budget((one_app * 2.5) as u64);
    let apps = distinct_apps(dir.path(), "acme", 8, true);
    install(&node, &apps).await;
    for _ in 0..3 {
        serve_each(&node, &apps).await;
    }
    assert!(node.metric("outpost_runtime_code_evictions_total").await >= 16.0);

    // Each loaded module maps its code once (text, read-only data, ...);
    // only the resident ones may be mapped.
    let text_mappings = std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("r-xp"))
        .filter(|l| {
            l.split_whitespace()
                .nth(5)
                .is_some_and(|p| p.starts_with(&*cache.to_string_lossy()))
        })
        .count();
    let (_, modules) = resident(&node).await;
    assert!(modules >= 1.0);
    assert_eq!(
        text_mappings as f64, modules,
        "compiled code mapped {text_mappings} times for {modules} resident modules"
    );
}

#[tokio::test]
async fn freshly_compiled_code_runs_mapped_from_its_cache_file() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("compiled");
    let node = node_on(&cache, u64::MAX).await;
    let apps = distinct_apps(dir.path(), "acme", 2, true);
    install(&node, &apps).await;
    serve_each(&node, &apps).await;
    // Mapped from the file, the code's pages are the page cache's: only
    // what runs is resident, and the kernel can drop it. The compiler's
    // own copy would be anonymous memory, all of it resident.
    let mine: Vec<String> = mapped_cwasm_files()
        .into_iter()
        .filter(|p| p.starts_with(&*cache.to_string_lossy()))
        .collect();
    assert_eq!(
        mine.len(),
        2,
        "each app's code mapped from its entry: {mine:?}"
    );
}
