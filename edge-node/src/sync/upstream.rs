//! Which control plane a node follows: the configured list (control
//! planes sharing one store serve the same state) and the one followed
//! now, shared by the watch loop, status reports and the log shipper, so
//! everything goes where the stream comes from.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The control planes a node may follow and the one it follows now:
/// shared with the log shipper, so lines go where the stream comes from.
pub(crate) struct Base {
    urls: Vec<String>,
    current: AtomicUsize,
}

impl Base {
    pub(crate) fn new(urls: Vec<String>) -> Base {
        Base {
            urls,
            current: AtomicUsize::new(0),
        }
    }

    /// How many control planes are listed.
    pub(crate) fn len(&self) -> usize {
        self.urls.len()
    }

    /// The base URL followed now.
    pub(crate) fn current(&self) -> String {
        let i = self.current.load(Ordering::Relaxed);
        self.urls[i % self.urls.len()].clone()
    }

    /// Moves to the next control plane; true when that starts the list
    /// over (every one was tried).
    pub(crate) fn advance(&self) -> bool {
        let next = (self.current.load(Ordering::Relaxed) + 1) % self.urls.len();
        self.current.store(next, Ordering::Relaxed);
        next == 0
    }
}
