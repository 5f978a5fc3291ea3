//! Outpost control plane (placeholder).
//!
//! Will hold the tenant REST API, the sled-backed store and the push stream
//! to edge nodes (see `DESIGN.md`). Nothing is implemented yet: edge nodes
//! currently run in standalone mode with apps from their own configuration.
