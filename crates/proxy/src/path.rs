//! The request path, normalised once as Envoy's HTTP connection manager
//! does with Istio's `meshConfig.pathNormalization`, before routing and
//! authorization; the upstream receives the same path.
//!
//! A pure function of the path and the mode, so that it can be tested in a
//! table and fuzzed on its own.

use std::borrow::Cow;

/// Istio's `ProxyPathNormalization.NormalizationType`, as Istio maps it onto
/// Envoy's `normalize_path`, `merge_slashes` and
/// `path_with_escaped_slashes_action`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Normalization {
    /// Forwarded as received (a `%00` is still refused).
    None,
    /// RFC 3986: unreserved characters percent-decoded, `\` as `/`, `.` and
    /// `..` segments resolved. Escaped slashes kept unchanged (Envoy's
    /// KEEP_UNCHANGED). Istio's default.
    #[default]
    Base,
    /// BASE, then runs of `/` merged into one.
    MergeSlashes,
    /// `%2F` and `%5C` (any case) decoded first (Envoy's
    /// UNESCAPE_AND_FORWARD), then MERGE_SLASHES.
    DecodeAndMergeSlashes,
}

/// A path the proxy refuses (Envoy answers 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPath {
    #[error("the path contains an encoded NUL (%00)")]
    EncodedNul,
}

/// Normalises the path of `path_and_query` (origin-form: path, then an
/// optional `?query`); the query is returned untouched and a fragment is
/// dropped. Borrowed when nothing changes, which is the usual case.
pub fn normalize(path_and_query: &str, mode: Normalization) -> Result<Cow<'_, str>, InvalidPath> {
    let without_fragment = match path_and_query.find('#') {
        Some(i) => &path_and_query[..i],
        None => path_and_query,
    };
    let (path, query) = match without_fragment.find('?') {
        Some(i) => (&without_fragment[..i], Some(&without_fragment[i + 1..])),
        None => (without_fragment, None),
    };
    if contains_encoded_nul(path) {
        return Err(InvalidPath::EncodedNul);
    }
    // Only origin-form paths are normalised (not `*` of `OPTIONS *`).
    let normalised = if mode == Normalization::None || !path.starts_with('/') {
        Cow::Borrowed(path)
    } else {
        normalise_path(path, mode)
    };
    Ok(
        match (normalised, without_fragment.len() == path_and_query.len()) {
            (Cow::Borrowed(_), true) => Cow::Borrowed(path_and_query),
            (Cow::Borrowed(p), false) => match query {
                Some(q) => Cow::Owned(format!("{p}?{q}")),
                None => Cow::Borrowed(p),
            },
            (Cow::Owned(mut p), _) => {
                if let Some(q) = query {
                    p.push('?');
                    p.push_str(q);
                }
                Cow::Owned(p)
            }
        },
    )
}

fn normalise_path(path: &str, mode: Normalization) -> Cow<'_, str> {
    let merge = matches!(
        mode,
        Normalization::MergeSlashes | Normalization::DecodeAndMergeSlashes
    );
    if is_canonical(path, merge) {
        return Cow::Borrowed(path);
    }
    let unescaped;
    let path = if mode == Normalization::DecodeAndMergeSlashes {
        unescaped = unescape_slashes(path);
        unescaped.as_str()
    } else {
        path
    };
    let mut out = resolve_dots(&canonical_chars(path));
    if merge {
        out = merge_slashes(&out);
    }
    Cow::Owned(out)
}

/// Nothing for any step to change: the common case, checked without copying.
fn is_canonical(path: &str, merge: bool) -> bool {
    let special = |b: u8| b == b'%' || b == b'\\' || needs_escape(b);
    !(path.bytes().any(special) || path.contains("/.") || merge && path.contains("//"))
}

fn contains_encoded_nul(path: &str) -> bool {
    path.as_bytes().windows(3).any(|w| w == b"%00")
}

/// `%2F`/`%2f` to `/` and `%5C`/`%5c` to `\`.
fn unescape_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let escape = rest.get(i..i + 3).map(str::to_ascii_uppercase);
        match escape.as_deref() {
            Some("%2F") => out.push('/'),
            Some("%5C") => out.push('\\'),
            _ => {
                out.push('%');
                rest = &rest[i + 1..];
                continue;
            }
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    out
}

/// Envoy's canonical characters (its URL canonicaliser's path rules): `\`
/// becomes `/`; percent-encoded unreserved characters are decoded; other
/// valid escapes are kept as sent (their hex case too); a `%` that starts no
/// valid escape is passed through (the permissive behaviour Envoy keeps);
/// characters a path may not carry raw are percent-encoded.
fn canonical_chars(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\\' => out.push('/'),
            b'%' => match (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
                (Some(h), Some(l)) => {
                    let c = h << 4 | l;
                    if is_unreserved(c) {
                        out.push(char::from(c));
                    } else {
                        out.push_str(&path[i..i + 3]);
                    }
                    i += 3;
                    continue;
                }
                _ => out.push('%'),
            },
            b if needs_escape(b) => {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
            b => out.push(char::from(b)),
        }
        i += 1;
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex(b: Option<&u8>) -> Option<u8> {
    char::from(*b?)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// Bytes a canonical path carries percent-encoded: controls, space,
/// non-ASCII, and the characters URL canonicalisers escape in paths.
fn needs_escape(b: u8) -> bool {
    b <= b' ' || b >= 0x7f || matches!(b, b'"' | b'<' | b'>' | b'`' | b'{' | b'}')
}

/// RFC 3986 §5.2.4: `.` segments dropped, `..` removes the segment before
/// it (never above the root); a path ending in a dot segment ends in `/`.
fn resolve_dots(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut segments = path.split('/').skip(1).peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        match seg {
            "." => {}
            ".." => {
                out.pop();
            }
            s => {
                out.push(s);
                continue;
            }
        }
        if last {
            out.push("");
        }
    }
    let mut s = String::with_capacity(path.len());
    for seg in out {
        s.push('/');
        s.push_str(seg);
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::Normalization::{Base, DecodeAndMergeSlashes, MergeSlashes, None};
    use super::*;

    /// Istio's own expectations for each mode (its path normalization
    /// integration test), plus the forms that bypassed authorization.
    #[test]
    fn istio_table() {
        #[rustfmt::skip]
        let table: [(&str, [&str; 4]); 16] = [
            // input                   NONE / BASE / MERGE_SLASHES / DECODE_AND_MERGE_SLASHES
            ("/", ["/", "/", "/", "/"]),
            ("/app/", ["/app/", "/app/", "/app/", "/app/"]),
            ("/app/../admin", ["/app/../admin", "/admin", "/admin", "/admin"]),
            ("/app", ["/app", "/app", "/app", "/app"]),
            ("/app//", ["/app//", "/app//", "/app/", "/app/"]),
            ("/app/%2f", ["/app/%2f", "/app/%2f", "/app/%2f", "/app/"]),
            ("/app%2f/", ["/app%2f/", "/app%2f/", "/app%2f/", "/app/"]),
            ("/xyz%30..//abc", ["/xyz%30..//abc", "/xyz0..//abc", "/xyz0../abc", "/xyz0../abc"]),
            ("/app/%2E./admin", ["/app/%2E./admin", "/admin", "/admin", "/admin"]),
            (r"/app\admin", [r"/app\admin", "/app/admin", "/app/admin", "/app/admin"]),
            (r"/app/\/\/\admin", [r"/app/\/\/\admin", "/app//////admin", "/app/admin", "/app/admin"]),
            ("/%2Fapp%5cadmin%5Cabc", ["/%2Fapp%5cadmin%5Cabc", "/%2Fapp%5cadmin%5Cabc", "/%2Fapp%5cadmin%5Cabc", "/app/admin/abc"]),
            (r"/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\abc", [r"/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\abc", "/%5Capp%2f%5c%2F..%2fadmin%5c/abc", "/%5Capp%2f%5c%2F..%2fadmin%5c/abc", "/app/admin/abc"]),
            ("/app//../admin", ["/app//../admin", "/app/admin", "/app/admin", "/app/admin"]),
            ("/app//../../admin", ["/app//../../admin", "/admin", "/admin", "/admin"]),
            ("/app#frag", ["/app", "/app", "/app", "/app"]),
        ];
        for (input, want) in table {
            for (mode, want) in [None, Base, MergeSlashes, DecodeAndMergeSlashes]
                .into_iter()
                .zip(want)
            {
                assert_eq!(
                    normalize(input, mode).as_deref(),
                    Ok(want),
                    "{input} {mode:?}"
                );
            }
        }
    }

    #[test]
    fn tricky_forms_under_base() {
        for (raw, want) in [
            ("/admin/../productpage", "/productpage"),
            ("/static/../foo", "/foo"),
            ("/%2e%2e/admin", "/admin"),
            ("/a/%2E%2e/admin", "/admin"),
            ("/../../admin", "/admin"),
            ("/a/./b", "/a/b"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/%61dmin", "/admin"),
            ("/%7e%2D%5f", "/~-_"),
            // Not a dot segment: Envoy leaves `;` parameters alone.
            ("/admin/..;/x", "/admin/..;/x"),
            ("/a;x/../b", "/b"),
            // Reserved escapes keep their case; malformed ones pass through.
            ("/a%3a%3A", "/a%3a%3A"),
            ("/a%zz%4", "/a%zz%4"),
            ("/caf\u{e9}", "/caf%C3%A9"),
            // The query is never touched.
            ("/a/../b?x=/../%2e&y=%00#f", "/b?x=/../%2e&y=%00"),
            ("/plain?q=1", "/plain?q=1"),
            ("*", "*"),
        ] {
            assert_eq!(normalize(raw, Base).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn encoded_nul_is_refused_in_every_mode() {
        for mode in [None, Base, MergeSlashes, DecodeAndMergeSlashes] {
            assert_eq!(normalize("/a%00b", mode), Err(InvalidPath::EncodedNul));
        }
    }

    /// Random paths of the tricky pieces (a bounded run; a fuzz target can
    /// call `normalize` the same way): no panic, the query kept byte for
    /// byte, no dot segment left, slashes merged where asked, and a second
    /// pass changes nothing when the input has no `%` (decoding happens once,
    /// as in Envoy, so `%%32%65` may leave a `%2e` behind).
    #[test]
    fn random_paths_keep_the_invariants() {
        const PIECES: [&str; 18] = [
            "/", "//", ".", "..", "%2e", "%2E%2e", "%2f", "%5C", "\\", ";", "a", "admin", "%00",
            "%", "%zz", "\u{e9}", "%41", "~",
        ];
        for _ in 0..20_000 {
            let n = rand::random_range(0..10);
            let mut path = String::from("/");
            for _ in 0..n {
                path.push_str(PIECES[rand::random_range(0..PIECES.len())]);
            }
            let query = "?q=/../%2e&x=%00";
            let input = format!("{path}{query}");
            for mode in [Base, MergeSlashes, DecodeAndMergeSlashes] {
                let Ok(out) = normalize(&input, mode) else {
                    assert!(path.contains("%00"), "{input} refused");
                    continue;
                };
                let (p, q) = out.split_once('?').expect("query kept");
                assert_eq!(format!("?{q}"), query, "{input}");
                assert!(p.starts_with('/'), "{input} -> {p}");
                for seg in p.split('/') {
                    assert!(seg != "." && seg != "..", "{input} {mode:?} -> {p}");
                }
                if mode != Base {
                    assert!(!p.contains("//"), "{input} {mode:?} -> {p}");
                }
                if !input.contains('%') {
                    assert_eq!(
                        normalize(&out, mode).as_deref(),
                        Ok(&*out),
                        "{input} {mode:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn canonical_paths_are_borrowed() {
        for p in ["/", "/productpage?u=normal", "/api/v1/products/0", "*"] {
            assert!(
                matches!(normalize(p, MergeSlashes), Ok(Cow::Borrowed(_))),
                "{p}"
            );
        }
    }
}
