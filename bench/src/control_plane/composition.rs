//! What a full push is made of (`bench-control-plane --composition`): one
//! more proxy, subscribed as the simulated ones are, decodes its whole
//! config and counts the bytes by resource type and, inside them, by field
//! (all of the endpoints' fields; the names and domains of the others). Each field's share is what the message shrinks by without it,
//! so the shares are exact and add up to the whole but for the framing.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Result, bail};
use prost::Message;
use wire::client::Takes;
use wire::pb::{ClusterEndpoints, DiscoveryRequest, DiscoveryResponse, Node, resource::Kind};

/// Bytes by part.
#[derive(Default)]
struct Tally(BTreeMap<String, usize>);

impl Tally {
    fn add(&mut self, part: impl Into<String>, bytes: usize) {
        *self.0.entry(part.into()).or_default() += bytes;
    }
}

/// `whole`'s encoded size less `without`'s: the bytes one field takes.
fn share<M: Message + Clone>(whole: &M, without: impl FnOnce(&mut M)) -> usize {
    let mut m = whole.clone();
    without(&mut m);
    whole.encoded_len() - m.encoded_len()
}

/// Decodes one proxy's full config from trellisd and prints what it is made of.
pub async fn report(endpoint: String, node: Node, takes: Takes) -> Result<serde_json::Value> {
    let endpoint = tonic::transport::Endpoint::from_shared(endpoint)?;
    let (tx, mut responses) =
        super::open_stream::<DiscoveryResponse>(&endpoint, &node, takes).await?;
    let mut by_type = Tally::default();
    let mut framing = Tally::default();
    // Inside the resources, by field.
    let mut endpoints = Tally::default();
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut done = 0;
    while done < wire::types::ALL.len() {
        let Some(r) = responses.message().await? else {
            bail!("the stream ended before the whole config");
        };
        let short = wire::types::short_name(&r.type_url);
        let resources: usize = r
            .resources
            .iter()
            .map(|x| prost::encoding::message::encoded_len(4, x))
            .sum();
        framing.add(
            format!("{short}: response fields"),
            r.encoded_len() - resources,
        );
        for res in &r.resources {
            *counts.entry(short.to_string()).or_default() += 1;
            by_type.add(short, prost::encoding::message::encoded_len(4, res));
            framing.add(
                format!("{short}: resource name + version + framing"),
                share(res, |m| {
                    m.name.clear();
                    m.version.clear()
                }) + prost::encoding::message::encoded_len(4, res)
                    - res.encoded_len(),
            );
            match &res.kind {
                Some(Kind::Endpoints(ce)) => endpoint_fields(ce, &mut endpoints),
                Some(Kind::Cluster(c)) => {
                    endpoints.add("clusters: name", share(c, |m| m.name.clear()));
                    endpoints.add("clusters: service", share(c, |m| m.service.clear()));
                }
                Some(Kind::RouteConfig(rc)) => {
                    endpoints.add("routes: config name", share(rc, |m| m.name.clear()));
                    endpoints.add(
                        "routes: virtual host names",
                        share(rc, |m| {
                            m.virtual_hosts.iter_mut().for_each(|v| v.name.clear())
                        }),
                    );
                    endpoints.add(
                        "routes: virtual host domains",
                        share(rc, |m| {
                            m.virtual_hosts.iter_mut().for_each(|v| v.domains.clear())
                        }),
                    );
                }
                _ => {}
            }
        }
        if !r.more {
            done += 1;
            tx.send(DiscoveryRequest {
                type_url: r.type_url,
                version_info: r.version_info,
                response_nonce: r.nonce,
                ..Default::default()
            })
            .await?;
        }
    }
    let total: usize = by_type.0.values().sum::<usize>()
        + framing
            .0
            .iter()
            .filter(|(k, _)| k.ends_with("response fields"))
            .map(|(_, v)| v)
            .sum::<usize>();
    println!("| part | bytes | share |\n|---|---|---|");
    let pct = |b: usize| 100.0 * b as f64 / total.max(1) as f64;
    for (t, b) in &by_type.0 {
        println!(
            "| {t} ({} resources) | {b} | {:.1} % |",
            counts.get(t).copied().unwrap_or(0),
            pct(*b)
        );
    }
    for (t, b) in framing.0.iter().chain(&endpoints.0) {
        println!("| {t} | {b} | {:.1} % |", pct(*b));
    }
    println!("| total | {total} | 100 % |");
    Ok(serde_json::json!({
        "total": total, "by_type": by_type.0, "framing": framing.0, "endpoints": endpoints.0,
        "resources": counts,
    }))
}

/// The bytes of one `ClusterEndpoints` by field (of each endpoint, in the full form).
fn endpoint_fields(ce: &ClusterEndpoints, t: &mut Tally) {
    t.add("endpoints: cluster name", share(ce, |m| m.cluster.clear()));
    if let Some(c) = &ce.compact {
        t.add(
            "endpoints compact: shared parts",
            share(c, |m| m.shared.clear()),
        );
        t.add(
            "endpoints compact: addresses",
            share(c, |m| {
                m.ipv4.clear();
                m.addresses.clear()
            }),
        );
        t.add("endpoints compact: pods", share(c, |m| m.pods.clear()));
        t.add(
            "endpoints compact: shared indices",
            share(c, |m| m.shared_index.clear()),
        );
        t.add(
            "endpoints compact: framing",
            share(ce, |m| m.compact = None) - c.encoded_len(),
        );
    }
    for e in &ce.endpoints {
        let whole = prost::encoding::message::encoded_len(2, e);
        t.add("endpoint: framing", whole - e.encoded_len());
        t.add("endpoint: address", share(e, |m| m.address.clear()));
        t.add("endpoint: port", share(e, |m| m.port = 0));
        t.add("endpoint: labels", share(e, |m| m.labels.clear()));
        t.add("endpoint: pod", share(e, |m| m.pod.clear()));
        t.add("endpoint: identity", share(e, |m| m.identity.clear()));
        t.add("endpoint: locality", share(e, |m| m.locality.clear()));
        t.add("endpoint: weight", share(e, |m| m.weight = 0));
        t.add(
            "endpoint: healthy + has_sidecar",
            share(e, |m| {
                m.healthy = false;
                m.has_sidecar = false
            }),
        );
        t.add("endpoint: workload", share(e, |m| m.workload.clear()));
    }
}
