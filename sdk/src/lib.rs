//! Outpost guest SDK for Rust workers (placeholder).
//!
//! Will be an ergonomic layer over `wasi:http` for workers built with
//! `cargo build --target wasm32-wasip2`. Nothing is implemented yet; guests
//! today are written against `wasi:http` directly (see `guests/`).
