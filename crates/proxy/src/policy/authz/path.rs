//! Request path normalization, as Envoy does it before RBAC.

use std::borrow::Cow;

/// The path rules are matched against, as Envoy normalizes it with Istio's
/// default (BASE): without query and fragment, unreserved characters
/// percent-decoded, `.` and `..` segments resolved. Borrowed when there is
/// nothing to change, which is the usual case.
pub fn normalize_path(path_and_query: &str) -> Cow<'_, str> {
    let path = path_and_query.split(['?', '#']).next().unwrap_or("");
    if !path.contains('%') && !path.contains("/.") {
        return Cow::Borrowed(if path.is_empty() { "/" } else { path });
    }
    let decoded = decode_unreserved(path);
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate().skip(1) {
        match *seg {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    Cow::Owned(format!("/{}", out.join("/")))
}

fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(c) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            && (c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~'))
        {
            out.push(c as char);
            i += 3;
            continue;
        }
        // Safe: `path` is a str and only ASCII is ever skipped above.
        let ch_len = path[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&path[i..i + ch_len]);
        i += ch_len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_normalization() {
        for (raw, want) in [
            ("/a/b?x=/admin", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../admin", "/admin"),
            ("/../../admin", "/admin"),
            ("/%61dmin/%2F", "/admin/%2F"),
            ("/a/b/..", "/a/"),
            ("", "/"),
        ] {
            assert_eq!(normalize_path(raw), want, "{raw}");
        }
        assert!(matches!(normalize_path("/plain/path?q"), Cow::Borrowed(_)));
    }
}
