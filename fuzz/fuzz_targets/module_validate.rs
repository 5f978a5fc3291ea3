//! The upload validation path: `Runtime::check`, which the control plane
//! runs on every uploaded component (compile with cranelift, link against
//! the node's WASI + wasi:http imports, require the proxy export).
//!
//! Two modes, picked by the first input byte:
//! - even: the rest of the input is the upload, as is;
//! - odd: a valid component (the committed C `hello.wasm`, or the WAT
//!   fixtures `hello` / `echo`) is mutated by edits the fuzzer chooses, so
//!   inputs get past the binary header into sections, types and code.
//!
//! Property: it returns `Ok` or `Err`, never panics, aborts or hangs.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use outpost_runtime::Metrics;
use outpost_runtime::{PoolConfig, Runtime};

/// Configured as the control plane's validator: compiled, never
/// instantiated, so no instance pool.
static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| {
    let pool = PoolConfig {
        enabled: false,
        ..PoolConfig::default()
    };
    Runtime::new(&pool, Metrics::new()).expect("a runtime")
});

static BASES: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    let bases = vec![
        include_bytes!("../../guests/c/hello/hello.wasm").to_vec(),
        outpost_test_fixtures::hello("x"),
        outpost_test_fixtures::echo(),
    ];
    for base in &bases {
        RUNTIME
            .check("base", base)
            .expect("the unmutated bases are valid");
    }
    bases
});

/// Applies 4-byte edits `[op, pos_hi, pos_lo, byte]` to `base`: flip bits,
/// insert, delete or overwrite one byte at a position scaled to its length.
fn mutate(base: &[u8], edits: &[u8]) -> Vec<u8> {
    let mut wasm = base.to_vec();
    for edit in edits.chunks_exact(4) {
        let pos = usize::from(u16::from_be_bytes([edit[1], edit[2]]));
        let at = pos * (wasm.len() + 1) / 65_536;
        match edit[0] % 4 {
            0 if at < wasm.len() => wasm[at] ^= edit[3] | 1,
            1 => wasm.insert(at, edit[3]),
            2 if at < wasm.len() => {
                wasm.remove(at);
            }
            3 if at < wasm.len() => wasm[at] = edit[3],
            _ => {}
        }
    }
    wasm
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let _ = RUNTIME.check("fuzz", rest);
    } else {
        let base = &BASES[usize::from(mode / 2) % BASES.len()];
        let _ = RUNTIME.check("fuzz", &mutate(base, rest));
    }
});
