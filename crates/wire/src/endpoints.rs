//! A cluster's endpoints in their compact form (`CompactEndpoints` in
//! proxy.proto): what endpoints share written once, and each endpoint by
//! column: its packed address, the index of what it shares, and what its
//! pod name does not share. Ten endpoints of one workload then carry its
//! labels, identity and workload name once, not ten times. [`compact`]
//! writes the form (the control plane), [`whole`] reads it back into whole
//! endpoints (the proxy, and the control plane for a proxy that does not
//! read the compact form).

use std::collections::HashMap;
use std::net::Ipv4Addr;

use crate::pb::{ClusterEndpoints, CompactEndpoints, Endpoint, EndpointShared};

/// A compact form that does not describe endpoints.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum EndpointsError {
    #[error("endpoints and compact are both set")]
    BothForms,
    #[error("compact: ipv4 and addresses are both set")]
    BothAddressForms,
    #[error("compact.ipv4: {0} bytes, not 4 per address")]
    Ipv4Length(usize),
    #[error("compact.{column}: {len} entries for {endpoints} endpoints")]
    ColumnLength {
        column: &'static str,
        len: usize,
        endpoints: usize,
    },
    #[error("compact.shared_index[{index}]: {shared} is out of range ({len} shared)")]
    SharedOutOfRange {
        index: usize,
        shared: u32,
        len: usize,
    },
}

/// `endpoints` in the compact form, in the same order.
pub fn compact(endpoints: Vec<Endpoint>) -> CompactEndpoints {
    let mut out = CompactEndpoints::default();
    let mut index: HashMap<EndpointShared, u32> = HashMap::new();
    let mut ipv4 = Vec::with_capacity(endpoints.len() * 4);
    let mut all_ipv4 = true;
    let mut pods = Vec::with_capacity(endpoints.len());
    for e in endpoints {
        let Endpoint {
            address,
            port,
            labels,
            pod,
            identity,
            locality,
            weight,
            healthy,
            has_sidecar,
            workload,
        } = e;
        let shared = EndpointShared {
            port,
            labels,
            identity,
            locality,
            weight,
            healthy,
            has_sidecar,
            workload,
            pod_prefix: String::new(),
            pod_suffix: String::new(),
        };
        let i = match index.get(&shared) {
            Some(&i) => i,
            None => {
                let i = out.shared.len() as u32;
                out.shared.push(shared.clone());
                index.insert(shared, i);
                i
            }
        };
        out.shared_index.push(i);
        // Packed only if it reads back the same (`010.0.0.1` stays text).
        match address.parse::<Ipv4Addr>() {
            Ok(v4) if all_ipv4 && v4.to_string() == address => ipv4.extend(v4.octets()),
            _ => all_ipv4 = false,
        }
        out.addresses.push(address);
        pods.push(pod);
    }
    if all_ipv4 {
        out.ipv4 = ipv4;
        out.addresses.clear();
    }
    // What the pods of each shared part begin and end with.
    let mut by_shared: Vec<Vec<&str>> = vec![Vec::new(); out.shared.len()];
    for (&s, pod) in out.shared_index.iter().zip(&pods) {
        by_shared[s as usize].push(pod);
    }
    for (shared, pods) in out.shared.iter_mut().zip(by_shared) {
        let Some((first, rest)) = pods.split_first() else {
            continue;
        };
        let prefix = rest.iter().fold(*first, |p, pod| common_prefix(p, pod));
        let suffix = rest.iter().fold(&first[prefix.len()..], |s, pod| {
            common_suffix(s, &pod[prefix.len()..])
        });
        shared.pod_prefix = prefix.to_string();
        shared.pod_suffix = suffix.to_string();
    }
    out.pods = pods
        .iter()
        .zip(&out.shared_index)
        .map(|(pod, &s)| {
            let shared = &out.shared[s as usize];
            pod[shared.pod_prefix.len()..pod.len() - shared.pod_suffix.len()].to_string()
        })
        .collect();
    if out.pods.iter().all(String::is_empty) {
        out.pods.clear();
    }
    if out.shared_index.iter().all(|&i| i == 0) {
        out.shared_index.clear();
    }
    out
}

/// The longest start `a` and `b` share, on a character boundary.
fn common_prefix<'a>(a: &'a str, b: &str) -> &'a str {
    let mut n = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    while !a.is_char_boundary(n) {
        n -= 1;
    }
    &a[..n]
}

/// The longest end `a` and `b` share, on a character boundary.
fn common_suffix<'a>(a: &'a str, b: &str) -> &'a str {
    let mut n = a
        .bytes()
        .rev()
        .zip(b.bytes().rev())
        .take_while(|(x, y)| x == y)
        .count();
    while !a.is_char_boundary(a.len() - n) {
        n -= 1;
    }
    &a[a.len() - n..]
}

/// `endpoints` with each endpoint whole: the compact form read back (and
/// cleared), the whole form as it is. (Its cluster's name, if left to the
/// resource, is put back by [`crate::names::put_back`].)
pub fn whole(mut endpoints: ClusterEndpoints) -> Result<ClusterEndpoints, EndpointsError> {
    let Some(c) = endpoints.compact.take() else {
        return Ok(endpoints);
    };
    if !endpoints.endpoints.is_empty() {
        return Err(EndpointsError::BothForms);
    }
    let addresses: Vec<String> = match (c.ipv4.is_empty(), c.addresses.is_empty()) {
        (false, false) => return Err(EndpointsError::BothAddressForms),
        (false, true) if c.ipv4.len() % 4 != 0 => {
            return Err(EndpointsError::Ipv4Length(c.ipv4.len()));
        }
        (false, true) => c
            .ipv4
            .chunks_exact(4)
            .map(|o| Ipv4Addr::new(o[0], o[1], o[2], o[3]).to_string())
            .collect(),
        (true, _) => c.addresses,
    };
    let n = addresses.len();
    for (column, len) in [
        ("shared_index", c.shared_index.len()),
        ("pods", c.pods.len()),
    ] {
        if len != 0 && len != n {
            return Err(EndpointsError::ColumnLength {
                column,
                len,
                endpoints: n,
            });
        }
    }
    let mut pods = c.pods.into_iter();
    endpoints.endpoints = addresses
        .into_iter()
        .enumerate()
        .map(|(i, address)| {
            let s = c.shared_index.get(i).copied().unwrap_or(0);
            let shared = c
                .shared
                .get(s as usize)
                .ok_or(EndpointsError::SharedOutOfRange {
                    index: i,
                    shared: s,
                    len: c.shared.len(),
                })?;
            let middle = pods.next().unwrap_or_default();
            Ok(Endpoint {
                address,
                port: shared.port,
                labels: shared.labels.clone(),
                pod: format!("{}{middle}{}", shared.pod_prefix, shared.pod_suffix),
                identity: shared.identity.clone(),
                locality: shared.locality.clone(),
                weight: shared.weight,
                healthy: shared.healthy,
                has_sidecar: shared.has_sidecar,
                workload: shared.workload.clone(),
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(endpoints)
}

#[cfg(test)]
mod tests;
