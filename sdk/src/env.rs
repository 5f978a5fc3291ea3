//! The app's environment variables.
//!
//! Outpost hands each app its configured variables through
//! `wasi:cli/environment`, which the Rust standard library reads on
//! `wasm32-wasip2`, so [`var`] is `std::env::var` in a worker. On a native
//! build it reads the process environment.
//!
//! Handlers that should be tested with particular values take an [`Env`]
//! instead of calling [`var`] directly: [`ProcessEnv`] in the worker,
//! [`MapEnv`] in tests (tests never call `std::env::set_var`, which races
//! with other tests in the same process).

use std::collections::BTreeMap;

/// The value of environment variable `name`, or `None` when it is unset or
/// not valid Unicode.
pub fn var(name: &str) -> Option<String> {
    ProcessEnv.var(name)
}

/// Somewhere to read environment variables from.
pub trait Env {
    /// The value of `name`, if set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The real environment: the app's variables inside a worker, the process's
/// on a native build.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// A fixed set of variables, for tests.
///
/// ```
/// use outpost_sdk::env::{Env, MapEnv};
///
/// let env = MapEnv::from([("GREETING", "hi")]);
/// assert_eq!(env.var("GREETING").as_deref(), Some("hi"));
/// assert_eq!(env.var("OTHER"), None);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapEnv(BTreeMap<String, String>);

impl MapEnv {
    /// No variables at all.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same set with `name` set to `value`.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.insert(name.into(), value.into());
        self
    }
}

impl Env for MapEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

impl<K: Into<String>, V: Into<String>, const N: usize> From<[(K, V); N]> for MapEnv {
    fn from(pairs: [(K, V); N]) -> Self {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl<E: Env + ?Sized> Env for &E {
    fn var(&self, name: &str) -> Option<String> {
        (**self).var(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_env_answers_only_what_it_holds() {
        let env = MapEnv::new().with("A", "1").with("B", "two");
        assert_eq!(env.var("A").as_deref(), Some("1"));
        assert_eq!(env.var("B").as_deref(), Some("two"));
        assert_eq!(env.var("a"), None, "names are case-sensitive");
        assert_eq!(MapEnv::new().var("A"), None);
    }

    #[test]
    fn process_env_reads_the_process_environment() {
        // PATH is set for any test run; no set_var needed.
        assert_eq!(ProcessEnv.var("PATH"), std::env::var("PATH").ok());
        assert_eq!(var("PATH"), std::env::var("PATH").ok());
        assert_eq!(var("OUTPOST_SDK_SURELY_UNSET_VARIABLE"), None);
    }

    #[test]
    fn env_by_reference_and_as_trait_object() {
        fn read(env: impl Env) -> Option<String> {
            env.var("K")
        }
        let env = MapEnv::from([("K", "v")]);
        assert_eq!(read(&env).as_deref(), Some("v"));
        let dynamic: &dyn Env = &env;
        assert_eq!(read(dynamic).as_deref(), Some("v"));
    }
}
