use super::push::{diff, split};
use super::*;
use crate::pb::resource::Kind;
use crate::snapshot::EncodedResource;

fn resource(name: &str, version: &str, size: usize) -> Arc<EncodedResource> {
    let cluster = crate::pb::Cluster {
        name: name.into(),
        service: "x".repeat(size),
        ..Default::default()
    };
    Arc::new(EncodedResource::new(&crate::pb::Resource {
        name: name.into(),
        version: version.into(),
        kind: Some(Kind::Cluster(cluster)),
    }))
}

#[test]
fn diff_names_changed_added_and_removed() {
    let old = TypeSnapshot {
        version: "1".into(),
        resources: vec![
            resource("a", "1", 1),
            resource("b", "1", 1),
            resource("c", "1", 1),
        ],
    };
    let new = TypeSnapshot {
        version: "2".into(),
        resources: vec![
            resource("a", "1", 1),
            resource("b", "2", 1),
            resource("d", "1", 1),
        ],
    };
    let (changed, removed) = diff(&old, &new);
    let names: Vec<&str> = changed.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec!["b", "d"]);
    assert_eq!(removed, vec!["c".to_string()]);
}

#[test]
fn diff_in_step_sends_what_changed_and_nothing_shared() {
    let (a, b) = (resource("a", "1", 1), resource("b", "1", 1));
    let old = TypeSnapshot {
        version: "1".into(),
        resources: vec![a.clone(), b.clone(), resource("c", "", 1)],
    };
    let new = TypeSnapshot {
        version: "2".into(),
        // `c` has no version: it is never known unchanged unless shared.
        resources: vec![a, resource("b", "2", 1), resource("c", "", 1)],
    };
    let (changed, removed) = diff(&old, &new);
    let names: Vec<&str> = changed.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec!["b", "c"]);
    assert!(removed.is_empty());
    assert!(diff(&new, &new).0.is_empty());
}

#[test]
fn an_encoded_response_is_a_discovery_response_on_the_wire() {
    use prost::Message;
    let resources = [resource("a", "1", 5), resource("b", "2", 7)];
    let bytes: Vec<&Bytes> = resources.iter().map(|r| &r.bytes).collect();
    let body = responses::body(
        crate::types::CLUSTER,
        "v",
        &bytes,
        true,
        &["gone".into()],
        true,
    );
    let sent = EncodedResponse {
        nonce: "3".into(),
        body,
    };
    let expected = crate::pb::DiscoveryResponse {
        type_url: crate::types::CLUSTER.into(),
        version_info: "v".into(),
        nonce: "3".into(),
        resources: resources
            .iter()
            .map(|r| r.decode().expect("resource"))
            .collect(),
        partial: true,
        removed: vec!["gone".into()],
        more: true,
        refused: vec![],
    };
    let got =
        crate::pb::DiscoveryResponse::decode(sent.encode_to_vec().as_slice()).expect("decodes");
    assert_eq!(got, expected);
    // As a gRPC message: the prefix gives the length of the nonce and the
    // body that follow it. A small body is copied into one piece with the
    // head (one HTTP/2 frame); a large one follows it, shared, not copied.
    let large = EncodedResponse {
        nonce: "4".into(),
        body: vec![0; COPIED_BODY_BYTES + 1].into(),
    };
    for (sent, pieces) in [(&sent, 1), (&large, 2)] {
        let (first, rest) = message(sent).expect("message");
        assert_eq!(1 + usize::from(rest.is_some()), pieces);
        if let Some(rest) = &rest {
            assert_eq!(rest.as_ptr(), sent.body.as_ptr());
        }
        let mut message = first[5..].to_vec();
        message.extend_from_slice(rest.as_deref().unwrap_or_default());
        let len = u32::from_be_bytes([first[1], first[2], first[3], first[4]]) as usize;
        assert_eq!((first[0], len), (0, message.len()));
        assert_eq!(message, sent.encode_to_vec());
    }
    let (first, _) = message(&sent).expect("message");
    let got = crate::pb::DiscoveryResponse::decode(&first[5..]).expect("decodes");
    assert_eq!(got, expected);
    // Fields at their defaults are left out, as prost leaves them.
    let empty = responses::body("", "", &[], false, &[], false);
    assert!(empty.is_empty());
}

/// Proxies sharing one config, as the proxies of one scope do; counts
/// the ACKs it was told of.
struct OneScope(
    watch::Sender<Arc<ProxySnapshot>>,
    std::sync::atomic::AtomicUsize,
);

#[tonic::async_trait]
impl ConfigProvider for OneScope {
    async fn connect(&self, node: &Node, _: Option<&BearerToken>) -> Result<Accepted, Status> {
        Ok(Accepted {
            node: node.clone(),
            config: self.0.subscribe(),
        })
    }
    fn ack(&self, _: &Node, _: &str, _: &str) {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    fn nack(&self, _: &Node, _: &str, _: &str, _: &str) {}
    fn sent(&self, _: &Node, _: &str, _: &str) {}
    fn disconnect(&self, _: &Node) {}
}

fn endpoints(version: &str, resources: Vec<Arc<EncodedResource>>) -> Arc<ProxySnapshot> {
    let set = TypeSnapshot {
        version: version.into(),
        resources,
    };
    Arc::new(ProxySnapshot {
        types: [(crate::types::ENDPOINTS.to_string(), Arc::new(set))].into(),
    })
}

/// A proxy's discovery stream subscribed to endpoints: the sender of its
/// requests and its responses.
async fn subscribe(
    addr: std::net::SocketAddr,
    id: &str,
) -> (
    mpsc::Sender<DiscoveryRequest>,
    Streaming<crate::pb::DiscoveryResponse>,
) {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let (tx, rx) = mpsc::channel(4);
    tx.send(DiscoveryRequest {
        node: Some(Node {
            id: id.into(),
            ..Default::default()
        }),
        ..crate::client::Takes::PROXY.subscribe(crate::types::ENDPOINTS)
    })
    .await
    .expect("subscribe");
    let path = http::uri::PathAndQuery::from_static("/trellis.proxy.v1.AggregatedDiscovery/Stream");
    let codec =
        tonic_prost::ProstCodec::<DiscoveryRequest, crate::pb::DiscoveryResponse>::default();
    let responses = grpc
        .streaming(Request::new(ReceiverStream::new(rx)), path, codec)
        .await
        .expect("stream")
        .into_inner();
    (tx, responses)
}

/// The next response, bounded only so that a failure cannot hang the test.
async fn next(
    responses: &mut Streaming<crate::pb::DiscoveryResponse>,
) -> crate::pb::DiscoveryResponse {
    tokio::time::timeout(std::time::Duration::from_secs(20), responses.message())
        .await
        .expect("a response within 20 s")
        .expect("stream")
        .expect("a response")
}

fn ack(response: &crate::pb::DiscoveryResponse) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: response.type_url.clone(),
        version_info: response.version_info.clone(),
        response_nonce: response.nonce.clone(),
        ..Default::default()
    }
}

/// With one permit, a proxy that has not answered its change holds it;
/// the other proxies of its scope are sent the same small change
/// regardless (made once, shared), not one permit's worth at a time.
#[tokio::test]
async fn a_small_change_made_for_one_stream_reaches_the_others_without_a_permit() {
    let (a, b) = (resource("a", "1", 10), resource("b", "1", 10));
    let config = watch::Sender::new(endpoints("1", vec![a.clone(), b]));
    let provider = Arc::new(OneScope(config.clone(), Default::default()));
    let server = DiscoveryService::with_push_limit(provider.clone(), 1);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(server)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut proxies = Vec::new();
    for id in ["p1", "p2", "p3"] {
        let (tx, mut responses) = subscribe(addr, id).await;
        let first = next(&mut responses).await;
        assert_eq!(
            (first.version_info.as_str(), first.resources.len()),
            ("1", 2)
        );
        tx.send(ack(&first)).await.expect("ack");
        proxies.push((tx, responses));
    }
    // Every first push answered: no session holds the permit. (Bounded
    // only so that a failure cannot hang the test.)
    for _ in 0..2_000 {
        if provider.1.load(std::sync::atomic::Ordering::SeqCst) == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(provider.1.load(std::sync::atomic::Ordering::SeqCst), 3);
    config.send_replace(endpoints("2", vec![a, resource("b", "2", 10)]));
    // Nobody answers until everyone has the change.
    let mut changes = Vec::new();
    for (_, responses) in &mut proxies {
        let change = next(responses).await;
        assert_eq!(change.version_info, "2");
        assert!(change.partial);
        let names: Vec<&str> = change.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["b"]);
        changes.push(change);
    }
    for ((tx, _), change) in proxies.iter().zip(&changes) {
        tx.send(ack(change)).await.expect("ack");
    }
}

#[test]
fn split_bounds_each_piece_and_keeps_everything_in_order() {
    let rs: Vec<Arc<EncodedResource>> = (0..10)
        .map(|i| resource(&format!("r{i}"), "1", 300))
        .collect();
    let refs: Vec<&Arc<EncodedResource>> = rs.iter().collect();
    let pieces = split(&refs, 1000);
    assert!(pieces.len() > 1);
    for p in &pieces {
        let size: usize = p.iter().map(|r| r.bytes.len()).sum();
        assert!(size <= 1000 && !p.is_empty(), "{size}");
    }
    let flat: Vec<&str> = pieces
        .iter()
        .flat_map(|p| p.iter().map(|r| r.name.as_str()))
        .collect();
    assert_eq!(flat, rs.iter().map(|r| r.name.as_str()).collect::<Vec<_>>());
    // One resource larger than the bound is a piece of its own; nothing is a piece of none.
    assert_eq!(split(&refs[..1], 10).len(), 1);
    assert_eq!(split(&[], 10), vec![&[] as &[&Arc<EncodedResource>]]);
}

/// A change of one type leaves the other types' sets in the config as they
/// were: a session knows those sent by the set's address, and compares no
/// version (here the version recorded differs, so comparing one would
/// push the set again).
#[test]
fn a_set_already_seen_is_known_sent_without_comparing_versions() {
    let seen = Arc::new(TypeSnapshot {
        version: "2".into(),
        resources: vec![resource("a", "1", 1)],
    });
    let mut sent = Sent {
        from: Some(seen.clone()),
        version: Some("1".into()),
        ..Default::default()
    };
    assert!(sent.has(&seen));
    // Another set is compared by version, and remembered as seen.
    let next = Arc::new(TypeSnapshot {
        version: "1".into(),
        ..(*seen).clone()
    });
    assert!(sent.has(&next));
    assert!(sent.from.as_ref().is_some_and(|f| Arc::ptr_eq(f, &next)));
    let changed = Arc::new(TypeSnapshot {
        version: "3".into(),
        ..(*seen).clone()
    });
    assert!(!sent.has(&changed));
}

/// A stream's response queue holds pointers: tokio allocates a channel's
/// slots 32 at a time, so the slot's size is paid 32 times per stream.
#[test]
fn a_queued_response_is_a_pointer() {
    assert_eq!(size_of::<super::Queued>(), size_of::<usize>());
}

/// A session's task holds what it needs between requests, not the futures
/// a request or a change sets off: those are as large as the largest of
/// them (a push, an ask), and a session waits nearly all its life.
#[tokio::test]
async fn a_waiting_sessions_task_holds_no_push() {
    let (config, _) = watch::channel(endpoints("1", vec![]));
    let provider = Arc::new(OneScope(config, Default::default()));
    let (tx, _rx) = mpsc::channel::<Queued>(2);
    let session = Box::new(Session {
        node: Node::default(),
        config: provider.0.subscribe(),
        provider,
        tx,
        subscribed: Default::default(),
        accepts_partial: true,
        whole_forms: None,
        whole_routes: None,
        responses: Arc::default(),
        nonce: 0,
        pushes: Arc::new(Semaphore::new(1)),
        concurrent_pushes: 1,
        permit: None,
        awaiting: HashSet::new(),
    });
    let decoder = tonic_prost::ProstDecoder::<DiscoveryRequest>::default();
    let inbound =
        Streaming::new_request(decoder, http_body_util::Empty::<Bytes>::new(), None, None);
    let task = session.serve(Box::default(), Box::new(inbound));
    // The task, and what it holds boxed.
    let held = size_of_val(&task)
        + size_of::<Session<OneScope>>()
        + size_of::<DiscoveryRequest>()
        + size_of::<Inbound>();
    // A debug build: 4,760 bytes with the push inline and the arguments
    // held as they were, 2,128 now (release: 4.6 KiB before, heaptrack).
    assert!(held <= 2560, "a session's task holds {held} bytes");
}
