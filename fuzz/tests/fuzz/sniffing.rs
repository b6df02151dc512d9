//! Protocol sniffing on PERMISSIVE and captured ports: the proxy peeks at a
//! client's first bytes, as many as have arrived, and decides. What must
//! hold whatever the bytes and however they are split into arrivals:
//! - never a panic;
//! - a decision, once made, stands as more bytes arrive (a client whose
//!   bytes come one at a time is served as one sending them at once);
//! - HTTP/1 and HTTP/2 are only ever claimed for what starts like them, so
//!   a TLS ClientHello is never parsed as HTTP.

use proxy::sniff::{Detected, classify};

use crate::corpus;

/// First bytes of real clients, for the generated input to pick and edit.
const STARTS: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: reviews\r\n\r\n",
    b"POST /x HTTP/1.0\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    b"\x16\x03\x03\x00\x10\x02\x00",
    b"\x00\x00\x00\x0cmysql",
    b"hello\n",
    b"",
];

fn check(data: &[u8]) {
    let mut decided: Option<(usize, Detected)> = None;
    for n in 1..=data.len() {
        let d = classify(&data[..n]);
        match (decided, d) {
            (Some((at, first)), Some(now)) => assert_eq!(
                first, now,
                "decided {first:?} after {at} bytes, then {now:?} after {n}: {data:?}"
            ),
            (Some((at, first)), None) => {
                panic!("decided {first:?} after {at} bytes, undecided after {n}: {data:?}")
            }
            (None, Some(now)) => decided = Some((n, now)),
            (None, None) => {}
        }
    }
    if let Some((_, d)) = decided {
        if d == Detected::Http2 {
            assert!(data.starts_with(b"PRI * HTTP/2.0"), "{data:?}");
        }
        if d == Detected::Http1 {
            assert!(data[0].is_ascii_uppercase(), "{data:?}");
        }
        if d == Detected::Tls {
            assert_eq!(data[0], 0x16, "{data:?}");
        }
    }
}

#[test]
fn sniffing() {
    bolero::check!()
        .with_type::<(u8, Vec<corpus::Edit>)>()
        .with_iterations(corpus::TEST_ITERATIONS * 5)
        .for_each(|(which, edits)| {
            let mut data = STARTS[*which as usize % STARTS.len()].to_vec();
            corpus::apply(edits, &mut data);
            check(&data);
        });
}

#[test]
fn sniffing_raw_bytes() {
    bolero::check!()
        .with_iterations(corpus::TEST_ITERATIONS)
        .for_each(|bytes: &[u8]| check(bytes));
}
