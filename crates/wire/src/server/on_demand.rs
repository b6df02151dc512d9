//! The discovery stream's half of on-demand discovery: a proxy whose node is
//! `on_demand` names hosts it needs (`DiscoveryRequest.ask_hosts`) and hosts
//! it no longer uses (`forget_hosts`); the control plane adds those it may
//! have to its node's `asked_hosts`, or takes them out, whose config then
//! follows as any change does, and answers only with the hosts refused.

use bytes::Bytes;
use prost::Message as _;

use super::EncodedResponse;
use crate::pb::{DiscoveryResponse, HostRefusal};

/// Hosts one ask (or one forget) may name: a proxy asks for the host a
/// request is held for, a few at a time, and sends a long forget in parts;
/// more in one message is no proxy's doing.
pub const MAX_ASKED_AT_ONCE: usize = 256;

/// The refusals of `hosts` beyond [`MAX_ASKED_AT_ONCE`] and of names that
/// are no host name at all, and the hosts left to consider.
pub(super) fn screen(hosts: Vec<String>) -> (Vec<String>, Vec<HostRefusal>) {
    let mut refused = Vec::new();
    let mut kept = Vec::new();
    for (i, host) in hosts.into_iter().enumerate() {
        let reason = if i >= MAX_ASKED_AT_ONCE {
            Some(format!(
                "an ask or a forget names at most {MAX_ASKED_AT_ONCE} hosts; send the rest in another"
            ))
        } else if host.is_empty()
            || host.len() > 253
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'*')
        {
            Some("not a host name".to_string())
        } else {
            None
        };
        match reason {
            Some(reason) => refused.push(HostRefusal { host, reason }),
            None => kept.push(host),
        }
    }
    (kept, refused)
}

/// The response telling the proxy which hosts it asked for are refused.
pub(super) fn refusals(nonce: u64, refused: Vec<HostRefusal>) -> EncodedResponse {
    let body = DiscoveryResponse {
        refused,
        ..Default::default()
    };
    EncodedResponse {
        nonce: nonce.to_string(),
        body: Bytes::from(body.encode_to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_no_host_and_too_many_at_once_are_refused() {
        let mut hosts = vec![
            "reviews.default.svc.cluster.local".to_string(),
            String::new(),
            "a b".to_string(),
        ];
        hosts.extend((0..MAX_ASKED_AT_ONCE).map(|i| format!("h{i}.example.com")));
        let (kept, refused) = screen(hosts);
        assert_eq!(kept.len(), MAX_ASKED_AT_ONCE - 2);
        assert_eq!(kept[0], "reviews.default.svc.cluster.local");
        let reasons: Vec<&str> = refused.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(reasons[..2], ["not a host name", "not a host name"]);
        assert_eq!(refused.len(), 5);
        assert!(reasons[2].contains("at most"), "{reasons:?}");
    }

    #[test]
    fn a_refusal_is_a_discovery_response_with_only_its_refusals() {
        let sent = refusals(
            7,
            vec![HostRefusal {
                host: "x".into(),
                reason: "why".into(),
            }],
        );
        let got = DiscoveryResponse::decode(sent.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(got.nonce, "7");
        assert!(got.type_url.is_empty() && got.resources.is_empty());
        assert_eq!(got.refused[0].reason, "why");
    }
}
