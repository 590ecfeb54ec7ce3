//! Host lookup: exact names, then `*.suffix` wildcards (longest suffix first), then a
//! catch-all. Built once per configuration; a lookup allocates nothing for exact hits.

use crate::FastMap;

#[derive(Debug)]
pub struct HostMap<T> {
    exact: FastMap<String, T>,
    /// (".example.com", value), longest suffix first.
    wildcards: Vec<(String, T)>,
    any: Option<T>,
}

impl<T> Default for HostMap<T> {
    fn default() -> Self {
        Self { exact: FastMap::default(), wildcards: Vec::new(), any: None }
    }
}

impl<T> HostMap<T> {
    /// Adds `name` (exact, `*.suffix`, or `*`/empty for any host). The first value given for a
    /// name is kept.
    pub fn insert(&mut self, name: &str, value: T) {
        let name = name.to_ascii_lowercase();
        if name.is_empty() || name == "*" {
            self.any.get_or_insert(value);
        } else if let Some(suffix) = name.strip_prefix('*') {
            if !self.wildcards.iter().any(|(s, _)| s == suffix) {
                self.wildcards.push((suffix.to_string(), value));
                self.wildcards.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
            }
        } else {
            self.exact.entry(name).or_insert(value);
        }
    }

    /// The most specific entry for `host` (lower-case, without port).
    pub fn get(&self, host: &str) -> Option<&T> {
        if let Some(v) = self.exact.get(host) {
            return Some(v);
        }
        self.wildcards
            .iter()
            .find(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
            .map(|(_, v)| v)
            .or(self.any.as_ref())
    }
}

/// The host of a request without its port, lower-cased only when it needs to be.
pub fn normalize_host(raw: &str) -> std::borrow::Cow<'_, str> {
    // Byte by byte: the generic string searches cost more than the rest of routing.
    let host = match raw.strip_prefix('[') {
        // IPv6 literal: keep the brackets' content.
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => match raw.bytes().rposition(|b| b == b':') {
            Some(colon) if raw.as_bytes()[colon + 1..].iter().all(u8::is_ascii_digit) => &raw[..colon],
            _ => raw,
        },
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_specific_wins() {
        let mut m = HostMap::default();
        m.insert("*", 0);
        m.insert("*.example.com", 1);
        m.insert("*.foo.example.com", 2);
        m.insert("abc.foo.example.com", 3);
        assert_eq!(m.get("abc.foo.example.com"), Some(&3));
        assert_eq!(m.get("bar.foo.example.com"), Some(&2));
        assert_eq!(m.get("bar.example.com"), Some(&1));
        assert_eq!(m.get("example.com"), Some(&0));
        assert_eq!(m.get("other.org"), Some(&0));
    }

    #[test]
    fn host_header_forms() {
        assert_eq!(normalize_host("Example.COM:8080"), "example.com");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host("[::1]:80"), "::1");
    }
}
