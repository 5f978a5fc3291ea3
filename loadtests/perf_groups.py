#!/usr/bin/env python3
"""Groups a perf profile's samples by request phase.

Usage: perf script -i DATA -F comm,tid,ip,sym --no-inline | \
           python3 loadtests/perf_groups.py - [--freq HZ --requests N]

Each sample goes to the first group (in the order below) that any frame of
its call chain matches, so a malloc inside Store::drop counts as teardown.
Needs full call chains: record with --call-graph dwarf (profile.sh with
BENCH_PERF_CALLGRAPH=dwarf); with plain -g (frame pointers) Rust frames are
mostly missing and most samples land in the HTTP/tokio groups.
With --freq (perf -F) and --requests (served during the recording) it also
prints CPU microseconds per request for each group.
"""
import argparse
import collections
import re
import sys

CATS = [
 ("backtrace capture", [r"_Unwind_Find_FDE", r"Backtrace", r"_Unwind_Backtrace", r"backtrace::capture", r"libunwind"]),
 ("sandbox teardown (Store drop: memory reset/memset, decommit, madvise, TLB)", [r"Store<T> as core::ops::drop::Drop", r"StoreOpaque as core::ops::drop::Drop", r"deallocate_", r"reset_with_pagemap", r"madvise", r"munmap", r"smp_call_function_many_cond", r"flush_tlb", r"merge_or_flush", r"drop_in_place<wasmtime::runtime::store"]),
 ("instantiation (pool alloc, vmctx init, registry)", [r"instantiate_async", r"instantiate_pre", r"allocate_memory", r"allocate_module", r"ModuleRegistry::register", r"vm::instance::Instance::new", r"InstancePre"]),
 ("store + WASI/HTTP ctx construction", [r"App::new_store", r"HostState::new", r"WasiCtxBuilder", r"WasiHttpCtx::new", r"new_incoming_request", r"new_response_outparam", r"Store<T>>::new", r"StoreOpaque>::new", r"wasmtime::runtime::store::Store<T>::new", r"ResourceTable::new"]),
 ("guest execution + wasi:http host calls", [r"call_handle", r"wasmtime_internal_fiber", r"types_impl", r"HostFields", r"HostOutgoing", r"HostResponseOutparam", r"wasi::io", r"traphandlers"]),
 ("response body (guest body -> hyper)", [r"HyperOutgoingBody", r"CappedResponseBody", r"guest_response", r"BodyWriter", r"outgoing_body"]),
 ("metrics + tracing", [r"prometheus::", r"tracing_core", r"tracing_subscriber", r"Span::", r"AppMetrics", r"Metrics::"]),
 ("tokio task spawn/timers/oneshot/semaphore", [r"tokio::task::spawn", r"tokio::time::", r"runtime::time::", r"oneshot", r"Semaphore", r"JoinHandle", r"timer"]),
 ("HTTP parse/write + kernel TCP (loopback)", [r"hyper::", r"hyper_util::", r"tcp_", r"sock_", r"writev", r"__libc_recv", r"__GI___libc_read", r"recvfrom", r"sendto", r"TcpStream", r"TcpListener", r"accept"]),
 ("tokio scheduler / park / wakeups", [r"tokio::runtime::scheduler", r"epoll", r"futex", r"park", r"schedule", r"tokio::runtime::task", r"Harness", r"wake"]),
]
comp = [(n, [re.compile(p) for p in ps]) for n, ps in CATS]
JIT = re.compile(r"^\s*7f[0-9a-f]+ \[unknown\]")


def samples(f):
    block = []
    for line in f:
        if line.strip():
            block.append(line.rstrip("\n"))
        elif block:
            yield block
            block = []
    if block:
        yield block


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file", help="perf script output, or - for stdin")
    ap.add_argument("--freq", type=float, help="sampling frequency (perf -F)")
    ap.add_argument("--requests", type=float, help="requests served while recording")
    a = ap.parse_args()
    f = sys.stdin if a.file == "-" else open(a.file)
    counts = collections.Counter()
    other = collections.Counter()
    total = 0
    for block in samples(f):
        total += 1
        frames = block[1:]
        syms = [s.strip().split(" ", 1)[-1] for s in frames]
        jit = any(JIT.match(s) for s in frames)
        for name, pats in comp:
            if any(p.search(s) for s in syms for p in pats) or (name.startswith("guest") and jit):
                counts[name] += 1
                break
        else:
            counts["other"] += 1
            other[(syms[0] if syms else "?")[:70]] += 1
    if not total:
        sys.exit("no samples")
    us = None
    if a.freq and a.requests:
        us = total / a.freq / a.requests * 1e6
        print(f"{total} samples = {total / a.freq:.2f} CPU-s over {a.requests:.0f} requests = {us:.1f} us CPU/request")
    else:
        print(f"{total} samples")
    print()
    print("| group | share of server CPU |" + (" us/request |" if us else ""))
    print("|---|---:|" + ("---:|" if us else ""))
    for name, c in counts.most_common():
        line = f"| {name} | {100 * c / total:.1f}% |"
        if us:
            line += f" {us * c / total:.1f} |"
        print(line)
    if other:
        print()
        print("top unattributed leaves:", ", ".join(f"{k} ({100 * v / total:.1f}%)" for k, v in other.most_common(5)))


if __name__ == "__main__":
    main()
