//! Writes Outpost's WAT test fixtures as component files:
//! `fixture-dump OUT_DIR [SLOW_MS]` writes hello.wasm, infinite_loop.wasm,
//! memory_bomb.wasm, slow.wasm (sleeps SLOW_MS, default 2000), trap.wasm
//! and echo.wasm into OUT_DIR.

use std::path::PathBuf;

fn main() {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().expect("usage: fixture-dump OUT_DIR [SLOW_MS]"));
    let slow_ms: u64 = args
        .next()
        .map(|s| s.parse().expect("SLOW_MS must be a number"))
        .unwrap_or(2000);
    std::fs::create_dir_all(&out).expect("creating OUT_DIR");
    let fixtures: [(&str, Vec<u8>); 6] = [
        ("hello", outpost_test_fixtures::hello("Hello from the WAT fixture\n")),
        ("infinite_loop", outpost_test_fixtures::infinite_loop()),
        ("memory_bomb", outpost_test_fixtures::memory_bomb()),
        ("slow", outpost_test_fixtures::slow(slow_ms)),
        ("trap", outpost_test_fixtures::trap()),
        ("echo", outpost_test_fixtures::echo()),
    ];
    for (name, bytes) in fixtures {
        let path = out.join(format!("{name}.wasm"));
        std::fs::write(&path, &bytes).expect("writing a fixture");
        println!("{} {}", path.display(), bytes.len());
    }
}
