use std::collections::BTreeMap;

use prost::Message;

use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn endpoint(address: &str, pod: &str) -> Endpoint {
    Endpoint {
        address: address.into(),
        port: 8080,
        labels: labels(&[("app", "reviews"), ("version", "v1")]),
        pod: pod.into(),
        identity: "spiffe://cluster.local/ns/default/sa/reviews".into(),
        locality: "us-east/a/1".into(),
        weight: 1,
        healthy: true,
        has_sidecar: true,
        workload: "reviews-v1".into(),
    }
}

const CLUSTER: &str = "outbound|8080||reviews.default.svc.cluster.local";

fn whole_of(endpoints: Vec<Endpoint>) -> ClusterEndpoints {
    ClusterEndpoints {
        cluster: CLUSTER.into(),
        endpoints,
        compact: None,
    }
}

/// The compact form, encoded and decoded as the wire carries it.
fn compact_of(endpoints: Vec<Endpoint>) -> ClusterEndpoints {
    let sent = ClusterEndpoints {
        cluster: CLUSTER.into(),
        endpoints: Vec::new(),
        compact: Some(compact(endpoints)),
    };
    ClusterEndpoints::decode(sent.encode_to_vec().as_slice()).expect("decodes")
}

#[test]
fn the_compact_form_reads_back_as_exactly_the_whole_endpoints() {
    let v4 = endpoint("10.0.0.1", "reviews-v1-a.default");
    let cases: Vec<(&str, Vec<Endpoint>)> = vec![
        ("none", vec![]),
        ("one IPv4", vec![v4.clone()]),
        (
            "IPv6 and IPv4 mixed, order kept",
            vec![
                endpoint("fd00::1", "a.default"),
                v4.clone(),
                endpoint("2001:db8::ff:1", "b.default"),
            ],
        ),
        (
            "labels differing",
            vec![
                v4.clone(),
                Endpoint {
                    labels: labels(&[("app", "reviews"), ("version", "v2")]),
                    ..endpoint("10.0.0.2", "reviews-v2-a.default")
                },
                Endpoint {
                    labels: BTreeMap::new(),
                    ..endpoint("10.0.0.3", "c.default")
                },
            ],
        ),
        (
            "pods sharing a start and an end, or not",
            vec![
                endpoint("10.0.0.1", "reviews-v1-7d9c-x2k9p.default"),
                endpoint("10.0.0.2", "reviews-v1-7d9c-abcde.default"),
                endpoint("10.0.0.3", "reviews-v1-7d9c-x2k9p.default"),
                endpoint("10.0.0.4", "reviews-v1-7d9c-a.default"),
                endpoint("10.0.0.5", "reviews-v1-7d9c-ab.default"),
                Endpoint {
                    workload: "other".into(),
                    ..endpoint("10.0.0.6", "ré-1.défault")
                },
                Endpoint {
                    workload: "other".into(),
                    ..endpoint("10.0.0.7", "ré-2.défault")
                },
                Endpoint {
                    workload: "other".into(),
                    ..endpoint("10.0.0.8", "rè-2.défault")
                },
            ],
        ),
        (
            "pods and workloads missing",
            vec![
                Endpoint {
                    pod: String::new(),
                    workload: String::new(),
                    ..v4.clone()
                },
                endpoint("10.0.0.2", ""),
            ],
        ),
        (
            "weights, ports, localities and identities",
            vec![
                Endpoint {
                    weight: 7,
                    ..v4.clone()
                },
                Endpoint {
                    port: 9090,
                    locality: String::new(),
                    ..endpoint("10.0.0.2", "b.default")
                },
                Endpoint {
                    locality: "eu-west/b".into(),
                    identity: "spiffe://cluster.local/ns/default/sa/other".into(),
                    ..endpoint("10.0.0.3", "c.default")
                },
            ],
        ),
        (
            "unhealthy, no sidecar",
            vec![
                Endpoint {
                    healthy: false,
                    ..v4.clone()
                },
                Endpoint {
                    has_sidecar: false,
                    ..endpoint("10.0.0.2", "b.default")
                },
            ],
        ),
        (
            "addresses that are no IP, or an IP spelled otherwise",
            vec![
                endpoint("reviews.example.com", ""),
                endpoint("::ffff:10.0.0.9", ""),
                endpoint("FD00::1", ""),
                endpoint("", ""),
            ],
        ),
    ];
    for (case, endpoints) in cases {
        let expected = whole_of(endpoints.clone());
        assert_eq!(whole(compact_of(endpoints)), Ok(expected.clone()), "{case}");
        // The whole form passes through as it is.
        assert_eq!(whole(expected.clone()), Ok(expected), "{case}");
    }
}

#[test]
fn what_endpoints_share_is_written_once() {
    let endpoints: Vec<Endpoint> = (1..=10)
        .map(|i| endpoint(&format!("10.0.0.{i}"), &format!("reviews-v1-{i}.default")))
        .collect();
    let c = compact(endpoints.clone());
    assert_eq!(c.shared.len(), 1);
    assert_eq!(c.shared[0].pod_prefix, "reviews-v1-");
    assert_eq!(c.shared[0].pod_suffix, ".default");
    assert_eq!(c.ipv4.len(), 40);
    assert!(c.addresses.is_empty() && c.shared_index.is_empty());
    assert_eq!(c.pods[9], "10");
    let compact_len = compact_of(endpoints.clone()).encoded_len();
    let whole_len = whole_of(endpoints).encoded_len();
    assert!(compact_len * 5 < whole_len, "{compact_len} vs {whole_len}");
}

#[test]
fn a_compact_form_that_describes_no_endpoints_is_refused() {
    let endpoints = |c: CompactEndpoints| ClusterEndpoints {
        compact: Some(c),
        ..Default::default()
    };
    let one = || CompactEndpoints {
        shared: vec![EndpointShared::default()],
        ipv4: vec![10, 0, 0, 1],
        ..Default::default()
    };
    assert!(whole(endpoints(one())).is_ok());
    let cases = [
        (
            CompactEndpoints {
                shared_index: vec![1],
                ..one()
            },
            EndpointsError::SharedOutOfRange {
                index: 0,
                shared: 1,
                len: 1,
            },
        ),
        (
            CompactEndpoints {
                ipv4: vec![10, 0, 0],
                ..one()
            },
            EndpointsError::Ipv4Length(3),
        ),
        (
            CompactEndpoints {
                addresses: vec!["10.0.0.1".into()],
                ..one()
            },
            EndpointsError::BothAddressForms,
        ),
        (
            CompactEndpoints {
                pods: vec!["a".into(), "b".into()],
                ..one()
            },
            EndpointsError::ColumnLength {
                column: "pods",
                len: 2,
                endpoints: 1,
            },
        ),
        (
            CompactEndpoints {
                shared: Vec::new(),
                ..one()
            },
            EndpointsError::SharedOutOfRange {
                index: 0,
                shared: 0,
                len: 0,
            },
        ),
    ];
    for (c, error) in cases {
        assert_eq!(whole(endpoints(c)), Err(error.clone()), "{error}");
    }
    let mut both = endpoints(one());
    both.endpoints.push(endpoint("10.0.0.1", ""));
    assert_eq!(whole(both), Err(EndpointsError::BothForms));
}
