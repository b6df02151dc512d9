//! Responses encoded once for all the streams that send them.
//!
//! The proxies of one scope share their sets (one `Arc<TypeSnapshot>` per
//! scope and version), so when a change reaches 2,000 of them, each stream
//! would compute the same difference from the same set it last sent and
//! encode the same bytes. Here the difference and its encoding are made once
//! per (set sent before, set to send): a stream adds only its nonce, and h2
//! writes the shared bytes without copying them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use bytes::{BufMut, Bytes};
use prost::encoding::{self, WireType};

use crate::snapshot::TypeSnapshot;

/// One response of a push as every stream sends it: all of
/// `DiscoveryResponse`'s fields but the nonce, encoded.
pub(super) type Body = Bytes;

/// The bodies of one push, in order (more than one when split).
pub(super) type Push = Arc<[Body]>;

/// A change small enough to keep while its two sets live: an endpoint or a
/// route change, which every stream of the scope sends in the next moments.
/// A larger one, and every whole set (the first push after a connect, which
/// a scope's set would otherwise keep a copy of for as long as it lives,
/// per type and scope), is kept only while some stream is sending it.
const KEEP_BYTES: usize = 256 * 1024;

#[derive(Default)]
pub(super) struct Responses {
    /// By the addresses of the set sent before (0: none) and the set to
    /// send, and whether the stream takes partial responses. The `Weak`s
    /// keep those addresses from being reused while the entry exists.
    pushes: Mutex<HashMap<Key, Entry>>,
}

type Key = (usize, usize, bool);

fn key(base: Option<&Arc<TypeSnapshot>>, current: &Arc<TypeSnapshot>, partial: bool) -> Key {
    (
        base.map_or(0, |b| Arc::as_ptr(b) as usize),
        Arc::as_ptr(current) as usize,
        partial,
    )
}

struct Entry {
    base: Option<Weak<TypeSnapshot>>,
    current: Weak<TypeSnapshot>,
    push: Kept,
}

enum Kept {
    Strong(Push),
    Weak(Weak<[Body]>),
}

impl Entry {
    fn live(&self) -> Option<Push> {
        let sets_live = self.current.strong_count() > 0
            && self.base.as_ref().is_none_or(|b| b.strong_count() > 0);
        match &self.push {
            Kept::Strong(p) if sets_live => Some(p.clone()),
            Kept::Weak(p) if sets_live => p.upgrade(),
            _ => None,
        }
    }
}

impl Responses {
    /// The push that turns `base` (the set the proxy holds, if known and it
    /// takes partial responses) into `current`, made by `make` unless some
    /// stream made it already.
    pub(super) fn get(
        &self,
        base: Option<&Arc<TypeSnapshot>>,
        current: &Arc<TypeSnapshot>,
        accepts_partial: bool,
        make: impl FnOnce() -> Vec<Body>,
    ) -> Push {
        let key = key(base, current, accepts_partial);
        if let Some(push) = self.lock().get(&key).and_then(Entry::live) {
            return push;
        }
        // Made without the lock: other scopes' streams need not wait. Two
        // streams of one scope may both make it; the later one's is kept.
        let push: Push = make().into();
        let size: usize = push.iter().map(Bytes::len).sum();
        let entry = Entry {
            base: base.map(Arc::downgrade),
            current: Arc::downgrade(current),
            push: if base.is_some() && size <= KEEP_BYTES {
                Kept::Strong(push.clone())
            } else {
                Kept::Weak(Arc::downgrade(&push))
            },
        };
        let mut all = self.lock();
        all.retain(|_, e| e.live().is_some());
        all.insert(key, entry);
        push
    }

    /// The push [`Responses::get`] would return, if some stream made it already.
    pub(super) fn made(
        &self,
        base: Option<&Arc<TypeSnapshot>>,
        current: &Arc<TypeSnapshot>,
        accepts_partial: bool,
    ) -> Option<Push> {
        let key = key(base, current, accepts_partial);
        self.lock().get(&key).and_then(Entry::live)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.pushes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `DiscoveryResponse` as the server writes it: this stream's nonce, then
/// the other fields as every stream sends them (`body`). Fields may come
/// in any order on the wire, so the proxy decodes it as a
/// `DiscoveryResponse`. Only ever encoded: decoding skips every field.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EncodedResponse {
    pub nonce: String,
    pub body: Body,
}

/// The nonce's field number in `DiscoveryResponse`.
const NONCE: u32 = 3;

impl EncodedResponse {
    /// The nonce field, encoded: what goes before the shared body.
    pub(super) fn head(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(encoding::string::encoded_len(NONCE, &self.nonce));
        encoding::string::encode(NONCE, &self.nonce, &mut buf);
        buf
    }
}

impl prost::Message for EncodedResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        encoding::string::encode(NONCE, &self.nonce, buf);
        buf.put_slice(&self.body);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl bytes::Buf,
        ctx: encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        encoding::string::encoded_len(NONCE, &self.nonce) + self.body.len()
    }

    fn clear(&mut self) {
        *self = EncodedResponse::default();
    }
}

/// The fields of a `DiscoveryResponse` but its nonce, encoded: `resources`
/// are encoded resources, written as they are.
pub(super) fn body(
    type_url: &str,
    version_info: &str,
    resources: &[&Bytes],
    partial: bool,
    removed: &[String],
    more: bool,
) -> Body {
    let (type_url, version_info) = (type_url.to_string(), version_info.to_string());
    let string_len = |tag, s: &String| {
        if s.is_empty() {
            0
        } else {
            encoding::string::encoded_len(tag, s)
        }
    };
    let len = string_len(1, &type_url)
        + string_len(2, &version_info)
        + resources
            .iter()
            .map(|r| encoding::bytes::encoded_len(4, *r))
            .sum::<usize>()
        + if partial { 2 } else { 0 }
        + encoding::string::encoded_len_repeated(6, removed)
        + if more { 2 } else { 0 };
    let mut buf = Vec::with_capacity(len);
    // As prost writes a message: fields at their defaults left out.
    if !type_url.is_empty() {
        encoding::string::encode(1, &type_url, &mut buf);
    }
    if !version_info.is_empty() {
        encoding::string::encode(2, &version_info, &mut buf);
    }
    for r in resources {
        encoding::bytes::encode(4, *r, &mut buf);
    }
    if partial {
        encoding::bool::encode(5, &partial, &mut buf);
    }
    encoding::string::encode_repeated(6, removed, &mut buf);
    if more {
        encoding::bool::encode(7, &more, &mut buf);
    }
    buf.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(version: &str) -> Arc<TypeSnapshot> {
        Arc::new(TypeSnapshot {
            version: version.into(),
            resources: Vec::new(),
        })
    }

    #[test]
    fn streams_sending_the_same_change_share_one_encoding() {
        let responses = Responses::default();
        let (before, after) = (set("1"), set("2"));
        let made = std::cell::Cell::new(0);
        let make = || {
            made.set(made.get() + 1);
            vec![body("t", "2", &[], true, &[], false)]
        };
        let one = responses.get(Some(&before), &after, true, make);
        let two = responses.get(Some(&before), &after, true, make);
        assert!(Arc::ptr_eq(&one, &two));
        assert_eq!(made.get(), 1);
        // Another starting point, or a stream that takes only whole sets,
        // is another push.
        let whole = responses.get(None, &after, true, make);
        let not_partial = responses.get(Some(&before), &after, false, make);
        assert!(!Arc::ptr_eq(&whole, &one) && !Arc::ptr_eq(&not_partial, &one));
        assert_eq!(made.get(), 3);
        // Once a set is gone, so are the pushes from or to it.
        drop(before);
        let _ = responses.get(Some(&after), &set("3"), true, make);
        assert_eq!(responses.lock().len(), 2);
    }

    #[test]
    fn a_whole_set_or_a_large_change_is_kept_only_while_a_stream_sends_it() {
        let responses = Responses::default();
        let (before, current) = (set("1"), set("2"));
        let large = Bytes::from(vec![0; KEEP_BYTES + 1]);
        let small = Bytes::from_static(b"small");
        let made = std::cell::Cell::new(0);
        let make = |body: &Bytes| {
            made.set(made.get() + 1);
            vec![body.clone()]
        };
        for (base, body) in [(None, &small), (Some(&before), &large)] {
            made.set(0);
            let sending = responses.get(base, &current, true, || make(body));
            let again = responses.get(base, &current, true, || make(body));
            assert!(Arc::ptr_eq(&sending, &again));
            drop((sending, again));
            let _ = responses.get(base, &current, true, || make(body));
            assert_eq!(made.get(), 2);
        }
    }
}
