//! Request path normalization before matching, so that `/public/../admin` or
//! `/public/%2e%2e/admin` cannot reach what `/admin` alone would not.

use std::borrow::Cow;

/// Decodes percent-encoded unreserved characters and removes dot segments (RFC 3986 §6.2.2,
/// §5.2.4). Other escapes (such as `%2F`) stay encoded: they are data, not structure.
/// `None` for a path that is not origin-form.
pub fn normalize(path: &str) -> Option<Cow<'_, str>> {
    if !path.starts_with('/') {
        return None;
    }
    let needs_work = path.contains('%') || path.contains("/.");
    if !needs_work {
        return Some(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path)?;
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => trailing_slash = i == last,
            ".." => {
                out.pop();
                trailing_slash = i == last;
            }
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut result = String::with_capacity(decoded.len());
    for seg in &out {
        result.push('/');
        result.push_str(seg);
    }
    if trailing_slash || result.is_empty() {
        result.push('/');
    }
    Some(Cow::Owned(result))
}

fn decode_unreserved(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = path.get(i + 1..i + 3)?;
            let value = u8::from_str_radix(hex, 16).ok()?;
            if value.is_ascii_alphanumeric() || matches!(value, b'-' | b'.' | b'_' | b'~') {
                out.push(value as char);
            } else {
                out.push('%');
                out.push_str(&hex.to_ascii_uppercase());
            }
            i += 3;
        } else {
            out.push(bytes[i] as char);
            i += 1;
        }
    }
    Some(out)
}

/// Whether `path` is `prefix` or lies under it, element by element: `/foo` covers `/foo`,
/// `/foo/` and `/foo/bar`, not `/foobar`. A trailing `/` on the prefix is ignored.
pub fn has_prefix(path: &str, prefix: &str) -> bool {
    let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
    path.starts_with(prefix) && (path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_and_escapes() {
        assert_eq!(normalize("/public/../admin").unwrap(), "/admin");
        assert_eq!(normalize("/public/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(normalize("/public/%2E%2E/admin").unwrap(), "/admin");
        assert_eq!(normalize("/a/./b/").unwrap(), "/a/b/");
        assert_eq!(normalize("/../../etc").unwrap(), "/etc");
        assert_eq!(normalize("/a/%7Euser").unwrap(), "/a/~user");
        assert_eq!(normalize("/a%2fb").unwrap(), "/a%2Fb");
        assert_eq!(normalize("/a/..").unwrap(), "/");
        assert!(normalize("/bad%zz").is_none());
        assert!(normalize("relative").is_none());
    }

    #[test]
    fn prefix_matches_whole_segments() {
        assert!(has_prefix("/foo", "/foo"));
        assert!(has_prefix("/foo/bar", "/foo"));
        assert!(has_prefix("/foo/", "/foo/"));
        assert!(has_prefix("/foo", "/foo/"));
        assert!(!has_prefix("/foobar", "/foo"));
        assert!(has_prefix("/anything", "/"));
    }
}
