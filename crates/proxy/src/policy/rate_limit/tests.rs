use super::*;
use std::time::Duration;

/// A connection of its own (only per-connection limits look at it).
fn conn() -> ConnectionBuckets {
    ConnectionBuckets::default()
}
use wire::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;

fn limit(max: u32, per_fill: u32, interval_ms: u64) -> LocalRateLimit {
    LocalRateLimit::new(&pb::LocalRateLimit {
        max_tokens: max,
        tokens_per_fill: per_fill,
        fill_interval_ms: interval_ms,
        enabled_percent: 100.0,
        enforced_percent: 100.0,
        x_ratelimit_headers: true,
        stat_prefix: "test".into(),
        ..Default::default()
    })
    .expect("valid")
}

fn path(p: &str) -> Vec<RateLimitDescriptor> {
    vec![RateLimitDescriptor {
        entries: vec![Entry {
            key: "path".into(),
            value: p.into(),
        }],
    }]
}

/// A default bucket of `default` tokens and a descriptor for
/// path=/limited of 2, both per minute.
fn with_descriptor(default: u32, always_consume_default: bool) -> LocalRateLimit {
    let mut c = pb::LocalRateLimit {
        fill_interval_ms: 60_000,
        max_tokens: default,
        tokens_per_fill: default,
        descriptors: vec![pb::LocalRateLimitDescriptor {
            entries: vec![pb::LocalRateLimitEntry {
                key: "path".into(),
                value: "/limited".into(),
            }],
            max_tokens: 2,
            tokens_per_fill: 2,
            fill_interval_ms: 60_000,
        }],
        always_consume_default_token_bucket: always_consume_default,
        x_ratelimit_headers: true,
        stat_prefix: "descriptors".into(),
        ..limit(1, 1, 1000).source
    };
    c.rate_limits = Vec::new();
    LocalRateLimit::new(&c).expect("valid")
}

#[tokio::test(start_paused = true)]
async fn the_bucket_empties_and_refills_per_interval() {
    let l = limit(3, 2, 1000);
    let check = || l.check(&conn(), &[]).decision;
    for _ in 0..3 {
        assert_eq!(check(), Decision::Pass);
    }
    assert_eq!(check(), Decision::Limited);
    tokio::time::advance(Duration::from_millis(1000)).await;
    assert_eq!(check(), Decision::Pass);
    assert_eq!(check(), Decision::Pass);
    assert_eq!(check(), Decision::Limited);
    // A long pause fills it to max_tokens, no more.
    tokio::time::advance(Duration::from_secs(60)).await;
    for _ in 0..3 {
        assert_eq!(check(), Decision::Pass);
    }
    let limited = l.check(&conn(), &[]);
    assert_eq!(limited.decision, Decision::Limited);
    let mut h = HeaderMap::new();
    l.limited_response_headers(&limited, &mut h);
    assert_eq!(h["x-envoy-ratelimited"], "true");
    assert_eq!(h["x-ratelimit-limit"], "3");
    assert_eq!(h["x-ratelimit-remaining"], "0");
    assert_eq!(h["x-ratelimit-reset"], "1");
}

#[tokio::test(start_paused = true)]
async fn not_enabled_or_not_enforced_lets_requests_through() {
    let mut c = pb::LocalRateLimit {
        max_tokens: 1,
        fill_interval_ms: 1000,
        x_ratelimit_headers: true,
        ..Default::default()
    };
    // filter_enabled unset: 0 %, as Envoy's default; no headers then.
    let off = LocalRateLimit::new(&c).expect("valid");
    assert!((0..5).all(|_| off.check(&conn(), &[]).decision == Decision::NotEnabled));
    let mut h = HeaderMap::new();
    off.x_ratelimit_headers(&off.check(&conn(), &[]), &mut h);
    assert!(h.is_empty(), "{h:?}");
    c.enabled_percent = 100.0;
    let counting = LocalRateLimit::new(&c).expect("valid");
    assert_eq!(counting.check(&conn(), &[]).decision, Decision::Pass);
    assert_eq!(counting.check(&conn(), &[]).decision, Decision::WouldLimit);
    assert!(LocalRateLimit::new(&pb::LocalRateLimit::default()).is_err());
}

/// Envoy's descriptors: a request whose descriptor matches takes from
/// that descriptor's bucket (and the default one, unless
/// always_consume_default_token_bucket is off); others from the default.
#[tokio::test(start_paused = true)]
async fn a_matching_descriptor_has_its_own_bucket() {
    let l = with_descriptor(5, false);
    let stats = l.stats.clone();
    let before = stats.rate_limited.load(Ordering::Relaxed);
    let limited = path("/limited");
    assert_eq!(l.check(&conn(), &limited).decision, Decision::Pass);
    let second = l.check(&conn(), &limited);
    assert_eq!(second.decision, Decision::Pass);
    let mut h = HeaderMap::new();
    l.x_ratelimit_headers(&second, &mut h);
    assert_eq!(
        (&h["x-ratelimit-limit"], &h["x-ratelimit-remaining"]),
        (&"2".parse().expect("v"), &"0".parse().expect("v"))
    );
    assert_eq!(l.check(&conn(), &limited).decision, Decision::Limited);
    // The default bucket was not touched: five others pass, the sixth not.
    for _ in 0..5 {
        assert_eq!(l.check(&conn(), &path("/other")).decision, Decision::Pass);
    }
    assert_eq!(
        l.check(&conn(), &path("/other")).decision,
        Decision::Limited
    );
    assert_eq!(l.check(&conn(), &[]).decision, Decision::Limited);
    assert_eq!(stats.rate_limited.load(Ordering::Relaxed) - before, 3);
    // A minute later both are full again.
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(l.check(&conn(), &limited).decision, Decision::Pass);

    // Consuming the default bucket too (Envoy's default): the
    // descriptor's requests empty it for the others.
    let l = with_descriptor(2, true);
    assert_eq!(l.check(&conn(), &limited).decision, Decision::Pass);
    assert_eq!(l.check(&conn(), &limited).decision, Decision::Pass);
    assert_eq!(
        l.check(&conn(), &path("/other")).decision,
        Decision::Limited
    );

    // No default bucket: only the descriptor limits.
    let l = with_descriptor(0, true);
    assert!((0..20).all(|_| l.check(&conn(), &path("/other")).decision == Decision::Pass));
    assert_eq!(l.check(&conn(), &limited).decision, Decision::Pass);
    assert_eq!(l.check(&conn(), &limited).decision, Decision::Pass);
    assert_eq!(l.check(&conn(), &limited).decision, Decision::Limited);
}

/// A descriptor of these (key, value) entries.
fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(k, v)| Entry {
                key: (*k).into(),
                value: (*v).into(),
            })
            .collect(),
    }
}

/// A limit without a default bucket whose descriptors are `(entries, max
/// tokens)`, per minute.
fn with_descriptors(descriptors: &[(&[(&str, &str)], u32)], max_dynamic: u32) -> LocalRateLimit {
    LocalRateLimit::new(&pb::LocalRateLimit {
        descriptors: descriptors
            .iter()
            .map(|(entries, max)| pb::LocalRateLimitDescriptor {
                entries: entries
                    .iter()
                    .map(|(k, v)| pb::LocalRateLimitEntry {
                        key: (*k).into(),
                        value: (*v).into(),
                    })
                    .collect(),
                max_tokens: *max,
                tokens_per_fill: *max,
                fill_interval_ms: 60_000,
            })
            .collect(),
        max_dynamic_descriptors: max_dynamic,
        enabled_percent: 100.0,
        enforced_percent: 100.0,
        x_ratelimit_headers: true,
        stat_prefix: "wildcard".into(),
        ..Default::default()
    })
    .expect("valid")
}

/// local_rate_limit_per_downstream_connection: every connection has the
/// whole bucket; its requests share it, other connections' do not count.
#[tokio::test(start_paused = true)]
async fn per_connection_buckets_are_the_connections_own() {
    let shared = limit(2, 2, 60_000);
    let l = LocalRateLimit::new(&pb::LocalRateLimit {
        per_downstream_connection: true,
        ..shared.source.clone()
    })
    .expect("valid");
    let (a, b) = (conn(), conn());
    for c in [&a, &b] {
        assert_eq!(l.check(c, &[]).decision, Decision::Pass);
        assert_eq!(l.check(c, &[]).decision, Decision::Pass);
        let limited = l.check(c, &[]);
        assert_eq!(limited.decision, Decision::Limited);
        let mut h = HeaderMap::new();
        l.x_ratelimit_headers(&limited, &mut h);
        assert_eq!(h["x-ratelimit-remaining"], "0");
    }
    // A new connection starts full; the shared limit's connections do not.
    assert_eq!(l.check(&conn(), &[]).decision, Decision::Pass);
    assert_eq!(shared.check(&a, &[]).decision, Decision::Pass);
    assert_eq!(shared.check(&b, &[]).decision, Decision::Pass);
    assert_eq!(shared.check(&conn(), &[]).decision, Decision::Limited);
    // A changed limit on the listener: the connection's buckets are the new one's.
    let bigger = LocalRateLimit::new(&pb::LocalRateLimit {
        max_tokens: 3,
        tokens_per_fill: 3,
        ..l.source.clone()
    })
    .expect("valid");
    for _ in 0..3 {
        assert_eq!(bigger.check(&a, &[]).decision, Decision::Pass);
    }
    assert_eq!(bigger.check(&a, &[]).decision, Decision::Limited);
    // A minute on, the connection's bucket is full again.
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(bigger.check(&a, &[]).decision, Decision::Pass);
}

/// Envoy's wildcard: an entry without a value matches any value of its
/// key, and each distinct descriptor it matches gets a bucket of its own.
#[tokio::test(start_paused = true)]
async fn a_wildcard_entry_makes_a_bucket_per_value() {
    let l = with_descriptors(&[(&[("user", "")], 2), (&[("user", "admin")], 5)], 20);
    let user = |u: &str| vec![descriptor(&[("user", u)])];
    for u in ["alice", "bob"] {
        assert_eq!(l.check(&conn(), &user(u)).decision, Decision::Pass);
        assert_eq!(l.check(&conn(), &user(u)).decision, Decision::Pass);
        let limited = l.check(&conn(), &user(u));
        assert_eq!(limited.decision, Decision::Limited);
        let mut h = HeaderMap::new();
        l.x_ratelimit_headers(&limited, &mut h);
        assert_eq!(
            (&h["x-ratelimit-limit"], &h["x-ratelimit-remaining"]),
            (&"2".parse().expect("v"), &"0".parse().expect("v"))
        );
    }
    // The exact descriptor wins over the wildcard one.
    for _ in 0..5 {
        assert_eq!(l.check(&conn(), &user("admin")).decision, Decision::Pass);
    }
    assert_eq!(l.check(&conn(), &user("admin")).decision, Decision::Limited);
    // Other keys, or more entries, are not matched: no default bucket, no limit.
    let other = vec![descriptor(&[("path", "/")])];
    let longer = vec![descriptor(&[("user", "carol"), ("path", "/")])];
    assert!((0..5).all(|_| l.check(&conn(), &other).decision == Decision::Pass));
    assert!((0..5).all(|_| l.check(&conn(), &longer).decision == Decision::Pass));
    let DescriptorTokens::Wildcard(dynamic) = &l.shared.descriptors[0] else {
        panic!("the first descriptor is a wildcard");
    };
    assert_eq!(dynamic.len(), 2);
}

/// Among several entries only the empty ones are wildcards; the buckets
/// kept are bounded by max_dynamic_descriptors, the least recently used
/// dropped first (and full again when its value comes back, as Envoy's).
#[tokio::test(start_paused = true)]
async fn wildcard_buckets_are_bounded_least_recently_used_first() {
    let l = with_descriptors(&[(&[("path", "/api"), ("user", "")], 1)], 2);
    let req = |u: &str| vec![descriptor(&[("path", "/api"), ("user", u)])];
    assert_eq!(l.check(&conn(), &req("a")).decision, Decision::Pass);
    assert_eq!(l.check(&conn(), &req("a")).decision, Decision::Limited);
    let other_path = vec![descriptor(&[("path", "/web"), ("user", "a")])];
    assert_eq!(l.check(&conn(), &other_path).decision, Decision::Pass);
    assert_eq!(l.check(&conn(), &other_path).decision, Decision::Pass);
    assert_eq!(l.check(&conn(), &req("b")).decision, Decision::Pass);
    assert_eq!(l.check(&conn(), &req("b")).decision, Decision::Limited);
    // A third value: "a", the least recently used, is dropped, "b" kept.
    assert_eq!(l.check(&conn(), &req("c")).decision, Decision::Pass);
    assert_eq!(l.check(&conn(), &req("b")).decision, Decision::Limited);
    assert_eq!(l.check(&conn(), &req("a")).decision, Decision::Pass);
    let DescriptorTokens::Wildcard(dynamic) = &l.shared.descriptors[0] else {
        panic!("a wildcard");
    };
    assert_eq!(dynamic.len(), 2);
}

#[test]
fn duplicate_descriptors_are_refused() {
    let c = pb::LocalRateLimit {
        descriptors: vec![
            pb::LocalRateLimitDescriptor {
                entries: vec![pb::LocalRateLimitEntry {
                    key: "k".into(),
                    value: String::new(),
                }],
                max_tokens: 1,
                tokens_per_fill: 1,
                fill_interval_ms: 1000,
            };
            2
        ],
        stat_prefix: "dup".into(),
        ..Default::default()
    };
    let e = LocalRateLimit::new(&c).expect_err("refused");
    assert!(
        e.contains("descriptors[1]") && e.contains("duplicate"),
        "{e}"
    );
}
