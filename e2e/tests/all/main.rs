//! The whole platform end to end: a real control plane and real edge nodes
//! in sync mode, in-process on `127.0.0.1:0`, talking HTTP. One test
//! binary, a module per topic, the shared harness in [`support`].

mod cache_safety;
mod chaos;
mod dashboards;
mod edge_cache;
mod fleet;
mod ha;
mod hosts;
mod isolation;
mod layout;
mod logs;
mod migrate;
mod propagation;
mod registry;
mod secrets;
mod support;
mod sync;
mod tenancy;
