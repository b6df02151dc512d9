//! Tokens whose signature a key set has verified, so that a client sending
//! the same token again (the usual case: a token lives for minutes or
//! hours) costs a lookup instead of a signature check (about 100 µs for
//! RS256 and 350 µs for ES256 under load). Only the signature is
//! remembered: format, issuer, time and audiences are checked on every
//! request as before.
//!
//! An entry holds only for the key set that verified it (after a JWKS
//! refresh every token is verified again) and never past the token's `exp`
//! ([`NO_EXP_TTL_SECS`] for a token without one). The cache is bounded:
//! when full, stale entries go, and if none is stale, all do.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};

use super::KeySet;

/// Most tokens remembered per rule.
const MAX_ENTRIES: usize = 1024;
/// How long a token without `exp` is remembered.
const NO_EXP_TTL_SECS: u64 = 300;

#[derive(Default)]
pub struct Verified {
    entries: RwLock<HashMap<Box<str>, Entry>>,
}

struct Entry {
    keys: Weak<KeySet>,
    /// Unix seconds after which the entry is not used.
    until: u64,
}

impl Verified {
    /// Whether `keys` verified `token` before, and that still holds at `now`.
    pub fn contains(&self, token: &str, keys: &Arc<KeySet>, now: u64) -> bool {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .get(token)
            .is_some_and(|e| now <= e.until && std::ptr::eq(e.keys.as_ptr(), Arc::as_ptr(keys)))
    }

    /// Remembers that `keys` verified `token`, whose `exp` claim is `exp`.
    pub fn insert(&self, token: &str, keys: &Arc<KeySet>, exp: Option<f64>, now: u64) {
        let until = match exp {
            Some(exp) if exp.is_finite() && exp >= 0.0 => exp as u64,
            _ => now.saturating_add(NO_EXP_TTL_SECS),
        };
        if until < now {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(token) {
            entries.retain(|_, e| e.until >= now && e.keys.strong_count() > 0);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(
            token.into(),
            Entry {
                keys: Arc::downgrade(keys),
                until,
            },
        );
    }
}

impl std::fmt::Debug for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tokens: they are credentials.
        let n = self.entries.read().map_or(0, |e| e.len());
        write!(f, "Verified({n} tokens)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Arc<KeySet> {
        Arc::new(KeySet::empty())
    }

    #[test]
    fn entries_hold_for_their_keys_until_exp() {
        let cache = Verified::default();
        let (a, b) = (keys(), keys());
        cache.insert("t1", &a, Some(1_000.0), 900);
        assert!(cache.contains("t1", &a, 1_000));
        assert!(!cache.contains("t1", &a, 1_001), "past exp");
        assert!(!cache.contains("t1", &b, 950), "other keys");
        assert!(!cache.contains("t2", &a, 950));
        cache.insert("t3", &a, None, 900);
        assert!(cache.contains("t3", &a, 900 + NO_EXP_TTL_SECS));
        assert!(!cache.contains("t3", &a, 901 + NO_EXP_TTL_SECS));
        // Bounded.
        for i in 0..(MAX_ENTRIES * 2) {
            cache.insert(&format!("x{i}"), &a, Some(5_000.0), 900);
        }
        assert!(cache.entries.read().map_or(0, |e| e.len()) <= MAX_ENTRIES);
    }
}
