//! Hostname matching and intersection as the Gateway API defines them: `*.example.com`
//! matches any name with at least one more label in front of `example.com`, never
//! `example.com` itself.

/// The hostnames a route serves on a listener: the route's names intersected with the
/// listener's. `None` means nothing matches; `Some(vec![])` means "every host the listener
/// accepts".
pub fn intersect(listener: Option<&str>, route: &[String]) -> Option<Vec<String>> {
    let Some(listener) = listener.filter(|l| !l.is_empty() && *l != "*") else {
        return Some(route.to_vec());
    };
    if route.is_empty() {
        return Some(vec![listener.to_string()]);
    }
    let mut out: Vec<String> = Vec::new();
    for name in route {
        let hit = if matches(listener, name) {
            Some(name.as_str())
        } else if matches(name, listener) {
            Some(listener)
        } else {
            None
        };
        if let Some(h) = hit
            && !out.iter().any(|o| o == h)
        {
            out.push(h.to_string());
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Whether the pattern (exact or wildcard) covers `name` (exact or wildcard).
pub fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix('*') {
        None => pattern.eq_ignore_ascii_case(name),
        Some(suffix) => {
            // `suffix` starts with '.'. A wildcard name is covered when its suffix is.
            let (rest, wildcard) = match name.strip_prefix('*') {
                Some(rest) => (rest, true),
                None => (name, false),
            };
            let ends = rest.len() >= suffix.len() && rest[rest.len() - suffix.len()..].eq_ignore_ascii_case(suffix);
            ends && (wildcard || rest.len() > suffix.len())
        }
    }
}

/// Precedence of a hostname: exact names before wildcards, longer before shorter.
pub fn specificity(name: &str) -> (bool, usize) {
    (!name.starts_with('*'), name.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn wildcard_needs_a_label_in_front() {
        assert!(matches("*.example.com", "foo.example.com"));
        assert!(matches("*.example.com", "a.b.example.com"));
        assert!(!matches("*.example.com", "example.com"));
        assert!(!matches("*.example.com", "fooexample.com"));
        assert!(matches("*.example.com", "*.foo.example.com"));
        assert!(!matches("*.foo.example.com", "*.example.com"));
        assert!(matches("Foo.Example.com", "foo.example.COM"));
    }

    #[test]
    fn intersection_follows_the_spec_table() {
        // Listener without hostname: the route's names as they are.
        assert_eq!(intersect(None, &v(&["a.com"])), Some(v(&["a.com"])));
        // Route without hostnames: the listener's.
        assert_eq!(intersect(Some("*.a.com"), &[]), Some(v(&["*.a.com"])));
        // Exact route name under a wildcard listener.
        assert_eq!(intersect(Some("*.a.com"), &v(&["x.a.com", "b.com"])), Some(v(&["x.a.com"])));
        // Wildcard route over an exact listener narrows to the listener's name.
        assert_eq!(intersect(Some("x.a.com"), &v(&["*.a.com"])), Some(v(&["x.a.com"])));
        // Two wildcards: the more specific.
        assert_eq!(intersect(Some("*.a.com"), &v(&["*.x.a.com"])), Some(v(&["*.x.a.com"])));
        assert_eq!(intersect(Some("*.x.a.com"), &v(&["*.a.com"])), Some(v(&["*.x.a.com"])));
        // Nothing in common.
        assert_eq!(intersect(Some("a.com"), &v(&["b.com", "*.a.com"])), None);
    }
}
