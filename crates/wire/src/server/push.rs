//! What one push of a type is: the resources that changed since the set the
//! proxy holds (or the whole set), encoded as responses of bounded size.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;

use super::responses;
use crate::snapshot::{EncodedResource, TypeSnapshot};

/// The responses that turn `base` (what the proxy holds, if known) into
/// `current`: the resources that changed and the names removed, or the
/// whole set.
pub(super) fn encode_push(
    type_url: &str,
    base: Option<&TypeSnapshot>,
    current: &TypeSnapshot,
    accepts_partial: bool,
) -> Vec<Bytes> {
    let (selected, removed, partial) = match base {
        Some(base) => {
            let (changed, removed) = diff(base, current);
            (changed, removed, true)
        }
        None => (current.resources.iter().collect(), Vec::new(), false),
    };
    // Proxies that take partial responses get a large set in pieces: a
    // proxy decodes a response whole, and h2 holds what it has not written.
    let chunks = if accepts_partial {
        split(&selected, MAX_MESSAGE_BYTES)
    } else {
        vec![&selected[..]]
    };
    let mut removed = Some(removed);
    chunks
        .iter()
        .enumerate()
        .map(|(i, part)| {
            let resources: Vec<&Bytes> = part.iter().map(|r| &r.bytes).collect();
            responses::body(
                type_url,
                &current.version,
                &resources,
                partial || i > 0,
                &removed.take().unwrap_or_default(),
                i + 1 < chunks.len(),
            )
        })
        .collect()
}

/// The largest response (by its resources' encoded size) sent to a proxy that
/// takes partial responses, unless one resource alone is larger.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// `resources` in consecutive runs of at most `max` encoded bytes (at least one run).
pub(super) fn split<'a>(
    resources: &'a [&'a Arc<EncodedResource>],
    max: usize,
) -> Vec<&'a [&'a Arc<EncodedResource>]> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, r) in resources.iter().enumerate() {
        let len = r.bytes.len();
        if i > start && size + len > max {
            out.push(&resources[start..i]);
            (start, size) = (i, 0);
        }
        size += len;
    }
    out.push(&resources[start..]);
    out
}

/// What turns `old` into `new`: the resources of `new` whose version differs
/// from (or is missing in) `old`, and the names in `old` that `new` lacks.
/// Resource versions must name their content, as [`TypeSnapshot`]'s do.
pub(super) fn diff<'a>(
    old: &TypeSnapshot,
    new: &'a TypeSnapshot,
) -> (Vec<&'a Arc<EncodedResource>>, Vec<String>) {
    // Most changes keep every name in its place (endpoints of some services
    // changed) and share the unchanged resources themselves: a walk in step
    // with pointer comparisons, no map, for a thousand streams at once.
    if old.resources.len() == new.resources.len() {
        let in_step = old
            .resources
            .iter()
            .zip(&new.resources)
            .all(|(a, b)| Arc::ptr_eq(a, b) || a.name == b.name);
        if in_step {
            let changed = old
                .resources
                .iter()
                .zip(&new.resources)
                .filter(|(a, b)| !a.same(b))
                .map(|(_, b)| b)
                .collect();
            return (changed, Vec::new());
        }
    }
    let before: HashMap<&str, &EncodedResource> = old
        .resources
        .iter()
        .map(|r| (r.name.as_str(), r.as_ref()))
        .collect();
    let changed = new
        .resources
        .iter()
        .filter(|r| !before.get(r.name.as_str()).is_some_and(|b| b.same(r)))
        .collect();
    let now: HashSet<&str> = new.resources.iter().map(|r| r.name.as_str()).collect();
    let removed = old
        .resources
        .iter()
        .filter(|r| !now.contains(r.name.as_str()))
        .map(|r| r.name.clone())
        .collect();
    (changed, removed)
}
