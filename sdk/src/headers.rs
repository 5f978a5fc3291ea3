//! `Headers`: an ordered, case-insensitive multi-map of HTTP header fields.

use std::fmt;

/// HTTP header fields: names compare case-insensitively, a name may appear
/// more than once, and insertion order is kept (the order the host handed
/// them over, or the order they were added).
///
/// Names are stored lower-cased, as HTTP/2 and `wasi:http` carry them.
/// Values are text: bytes that are not UTF-8 (rare, and never valid in a
/// well-formed header) are replaced with U+FFFD when a request comes in.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(String, String)>,
}

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// The first value of `name`, if any.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_all(name).next()
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
        self.entries
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Sets `name` to `value`, replacing every earlier value of `name`.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into().to_ascii_lowercase();
        self.remove(&name);
        self.entries.push((name, value.into()));
    }

    /// Adds a value for `name`, keeping the earlier ones (for fields such as
    /// `set-cookie` that may repeat).
    pub fn append(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.entries
            .push((name.into().to_ascii_lowercase(), value.into()));
    }

    /// Removes every value of `name`; returns whether there was any.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.entries.len() != before
    }

    /// Every `(name, value)` pair, in order; names are lower-case.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The number of `(name, value)` pairs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no headers at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut headers = Headers::new();
        for (name, value) in iter {
            headers.append(name, value);
        }
        headers
    }
}

impl<N: Into<String>, V: Into<String>> Extend<(N, V)> for Headers {
    fn extend<I: IntoIterator<Item = (N, V)>>(&mut self, iter: I) {
        for (name, value) in iter {
            self.append(name, value);
        }
    }
}

impl IntoIterator for Headers {
    type Item = (String, String);
    type IntoIter = std::vec::IntoIter<(String, String)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_case_insensitive() {
        let mut h = Headers::new();
        h.append("Content-Type", "text/plain");
        assert_eq!(h.get("content-type"), Some("text/plain"));
        assert_eq!(h.get("CONTENT-TYPE"), Some("text/plain"));
        assert!(h.contains("Content-type"));
        assert_eq!(h.iter().next(), Some(("content-type", "text/plain")));
    }

    #[test]
    fn a_name_may_repeat_and_insert_replaces_all() {
        let mut h: Headers = [("Set-Cookie", "a=1"), ("x-other", "y")]
            .into_iter()
            .collect();
        h.append("set-cookie", "b=2");
        assert_eq!(h.get_all("SET-COOKIE").collect::<Vec<_>>(), ["a=1", "b=2"]);
        assert_eq!(h.get("set-cookie"), Some("a=1"));
        assert_eq!(h.len(), 3);

        h.insert("Set-Cookie", "c=3");
        assert_eq!(h.get_all("set-cookie").collect::<Vec<_>>(), ["c=3"]);
        assert_eq!(h.len(), 2);

        assert!(h.remove("SET-cookie"));
        assert!(!h.remove("set-cookie"));
        assert_eq!(h.get("set-cookie"), None);
        assert_eq!(h.get("X-Other"), Some("y"));
    }
}
