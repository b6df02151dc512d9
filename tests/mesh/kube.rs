//! trellisd on a real Kubernetes API server (see `e2e::kube`): what users
//! apply with kubectl — Istio resources at any served apiVersion, Services,
//! EndpointSlices, Pods, the `istio` mesh ConfigMap — reaches a connected proxy over the discovery stream, an
//! invalid object is left out without holding back the rest, and an API
//! server that dies and comes back changes nothing the proxies were sent.
//! Proxies prove who they are with service-account tokens (TokenReview);
//! of several replicas only the Lease holder writes (the root certificate
//! ConfigMaps), and a stopped leader hands over at once.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use e2e::eventually;
use e2e::kube::{
    CLUSTERS, ENDPOINTS, Kube, Proxy, ROUTES, Trellisd, lease_holder, reviews, root_cert_in,
    service_account_token, service_account_token_with, sidecar_pod,
};
use wire::certs::{BearerToken, TokenSource};

fn virtual_service(namespace: &str, marker: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews-route, namespace: {namespace}}}
spec:
  hosts: [reviews]
  http:
  - headers:
      request:
        set: {{x-applied-by: {marker}}}
    route:
    - destination: {{host: reviews}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applied_config_and_endpoint_slices_reach_a_proxy() -> Result<()> {
    let Some(kube) = Kube::start("kubectl-config-reaches-proxy")? else {
        return Ok(());
    };
    let ns = kube.namespace.clone();
    kube.apply(&reviews(&ns, "10.1.0.1"))?;
    let trellisd = Trellisd::start(&kube)?;
    let proxy = Proxy::connect(&kube, &trellisd, "client-1", &ns, "10.9.0.1").await?;
    proxy
        .until(ENDPOINTS, "the slice's endpoint", |d| {
            d.contains("10.1.0.1")
        })
        .await
        .with_context(|| trellisd.log())?;

    // Istio resources, at the newest and at an old served apiVersion.
    kube.apply(&virtual_service(&ns, "kubectl"))?;
    kube.apply(&format!(
        r#"
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {{name: reviews-subsets, namespace: {ns}}}
spec:
  host: reviews
  subsets:
  - name: version-one
    labels: {{version: v1}}
"#
    ))?;
    proxy
        .until(ROUTES, "the VirtualService", |d| {
            d.contains(&format!("VirtualService/{ns}/reviews-route")) && d.contains("kubectl")
        })
        .await?;
    proxy
        .until(CLUSTERS, "the v1alpha3 DestinationRule's subset", |d| {
            d.contains("version-one")
        })
        .await?;

    // The endpoint moves: the proxy is sent the new address, not the old.
    kube.apply(&reviews(&ns, "10.1.0.2"))?;
    proxy
        .until(ENDPOINTS, "the moved endpoint", |d| {
            d.contains("10.1.0.2") && !d.contains("10.1.0.1")
        })
        .await?;

    // The endpoint names its pod, which lends it its identity, in the trust
    // domain of the mesh config the `istio` ConfigMap holds.
    eventually(Duration::from_secs(30), || async {
        // The namespace's `default` service account, which pods need, is
        // made by the controller manager soon after the namespace.
        kube.apply(&format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: reviews-v1-0, namespace: {ns}, labels: {{app: reviews}}}}
spec:
  containers: [{{name: app, image: reviews}}]
"#
        ))
    })
    .await?;
    kube.apply(&format!(
        r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: reviews-1
  namespace: {ns}
  labels: {{kubernetes.io/service-name: reviews}}
addressType: IPv4
ports: [{{name: http, port: 9080, protocol: TCP}}]
endpoints:
- addresses: [10.1.0.3]
  targetRef: {{kind: Pod, name: reviews-v1-0, namespace: {ns}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: istio, namespace: istio-system}}
data:
  mesh: |
    trustDomain: kube.example
"#
    ))?;
    proxy
        .until(
            ENDPOINTS,
            "the pod's identity in the ConfigMap's trust domain",
            |d| {
                d.contains("10.1.0.3")
                    && d.contains(&format!("spiffe://kube.example/ns/{ns}/sa/default"))
            },
        )
        .await?;

    // The pod goes (the registry is patched for it alone): the endpoint
    // stays, without the identity the pod lent it.
    kube.kubectl_ok(&["delete", "pod", "reviews-v1-0", "-n", &ns])?;
    proxy
        .until(
            ENDPOINTS,
            "the endpoint without its deleted pod's identity",
            |d| {
                d.contains("10.1.0.3") && !d.contains(&format!("spiffe://kube.example/ns/{ns}/sa/"))
            },
        )
        .await?;

    // An object the API server stored but Trellis finds invalid (here a
    // negative weight, which Istio's CRD schema does not bound) is left out
    // and reported; a valid change applied with it still arrives.
    kube.apply(&format!(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: broken, namespace: {ns}}}
spec:
  hosts: [ratings]
  http:
  - route:
    - destination: {{host: ratings}}
      weight: -5
"#
    ))?;
    kube.apply(&virtual_service(&ns, "after-the-broken-one"))?;
    proxy
        .until(ROUTES, "the change applied after the invalid object", |d| {
            d.contains("after-the-broken-one")
        })
        .await?;
    ensure!(
        !proxy
            .dump(ROUTES)
            .contains(&format!("VirtualService/{ns}/broken")),
        "the invalid VirtualService was left out"
    );
    trellisd
        .until_logged(
            "the invalid object is reported by name",
            &[&format!("VirtualService/{ns}/broken"), "invalid"],
        )
        .await?;

    // EnvoyFilters are watched too: Istio's local rate limit example,
    // applied with kubectl, reaches the inbound listener of the connected
    // proxy's pod (given a label and a Service that sends to it); one that
    // is not rate limiting is ignored whole, and said so.
    kube.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: client-1
  namespace: {ns}
  labels: {{app: client}}
  annotations: {{sidecar.istio.io/status: '{{"containers":["istio-proxy"]}}'}}
spec:
  containers: [{{name: app, image: client}}]
---
apiVersion: v1
kind: Service
metadata: {{name: client, namespace: {ns}}}
spec:
  selector: {{app: client}}
  ports: [{{name: http, port: 9080, targetPort: 9080}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: client-1
  namespace: {ns}
  labels: {{kubernetes.io/service-name: client}}
addressType: IPv4
ports: [{{name: http, port: 9080, protocol: TCP}}]
endpoints:
- addresses: [10.9.0.1]
  targetRef: {{kind: Pod, name: client-1, namespace: {ns}}}
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {{name: filter-local-ratelimit-svc, namespace: {ns}}}
spec:
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: SIDECAR_INBOUND
      listener:
        filterChain:
          filter: {{name: envoy.filters.network.http_connection_manager}}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.local_ratelimit
        typed_config:
          "@type": type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
          value:
            stat_prefix: http_local_rate_limiter
            token_bucket: {{max_tokens: 4, tokens_per_fill: 4, fill_interval: 60s}}
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {{name: lua, namespace: {ns}}}
spec:
  configPatches:
  - applyTo: HTTP_FILTER
    match: {{context: SIDECAR_INBOUND}}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.lua
        typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua}}
"#
    ))?;
    proxy
        .until(
            wire::types::LISTENER,
            "the EnvoyFilter's local rate limit on the inbound listener",
            |d| {
                d.contains(&format!("EnvoyFilter/{ns}/filter-local-ratelimit-svc"))
                    && d.contains("max_tokens: 4")
            },
        )
        .await?;
    trellisd
        .until_logged(
            "the EnvoyFilter that is not rate limiting is reported by name",
            &[&format!("EnvoyFilter/{ns}/lua"), "EnvoyFilter ignored"],
        )
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_api_server_changes_nothing_proxies_were_sent() -> Result<()> {
    let Some(mut kube) = Kube::start("api-server-restart")? else {
        return Ok(());
    };
    let ns = kube.namespace.clone();
    kube.apply(&reviews(&ns, "10.2.0.1"))?;
    kube.apply(&virtual_service(&ns, "before-the-restart"))?;
    // The pod of a proxy that connects during the outage, made before it.
    let late_token = sidecar_pod(&kube, "client-2", &ns, "10.9.0.2").await?;
    let trellisd = Trellisd::start(&kube)?;
    let proxy = Proxy::connect(&kube, &trellisd, "client-1", &ns, "10.9.0.1").await?;
    let xds = trellisd.xds(&kube).await?;
    proxy
        .until(ROUTES, "the VirtualService", |d| {
            d.contains("before-the-restart")
        })
        .await
        .with_context(|| trellisd.log())?;
    proxy
        .until(ENDPOINTS, "the endpoint", |d| d.contains("10.2.0.1"))
        .await?;
    let before = (proxy.versions(), proxy.dump(ROUTES), proxy.dump(ENDPOINTS));

    kube.kill_apiserver()?;
    // trellisd notices: its watches fail and are retried.
    trellisd
        .until_logged("a watch failure", &["watch failed"])
        .await?;
    // A proxy connecting now cannot be authenticated (its token's
    // TokenReview needs the API server, as for istiod): it is refused, and
    // keeps trying.
    let late = Proxy::connect_with(
        xds,
        "client-2",
        &ns,
        "default",
        TokenSource::Value(late_token),
    );
    trellisd
        .until_logged(
            "the new proxy is refused",
            &["discovery stream refused", "TokenReview failed"],
        )
        .await?;
    ensure!(
        late.versions().is_empty(),
        "nothing was sent to an unauthenticated proxy"
    );
    let during = (proxy.versions(), proxy.dump(ROUTES), proxy.dump(ENDPOINTS));
    ensure!(
        before == during,
        "the proxy's config changed while the API server was down"
    );

    kube.start_apiserver()?;
    // The restarted API server's watch cache begins after trellisd's last
    // seen resourceVersion (starting wrote to etcd), so resumed watches are
    // answered 410 Gone and relist: what was listed replaces what was known,
    // kind by kind, and nothing the proxy has changes.
    trellisd
        .until_logged("a relist after 410 Gone", &["too old resource version"])
        .await?;
    let after_restart = (proxy.versions(), proxy.dump(ROUTES), proxy.dump(ENDPOINTS));
    ensure!(
        before == after_restart,
        "the restart changed the proxy's config"
    );
    // The proxy refused during the outage is served now.
    late.until(
        ROUTES,
        "the routes for the proxy refused during the outage",
        |d| d.contains("before-the-restart"),
    )
    .await
    .with_context(|| trellisd.log())?;
    // The watches resumed: a change made now arrives.
    kube.apply(&virtual_service(&ns, "after-the-restart"))?;
    proxy
        .until(ROUTES, "a change after the restart", |d| {
            d.contains("after-the-restart")
        })
        .await
        .with_context(|| trellisd.log())?;
    proxy
        .until(ENDPOINTS, "the endpoint, still", |d| d.contains("10.2.0.1"))
        .await?;
    Ok(())
}

/// Two replicas: the one holding the Lease writes the root certificate
/// ConfigMap into every namespace, a new one included; stopped, it releases
/// the Lease and the other takes over at once (well before the Lease would
/// expire), and writes from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_holder_publishes_the_root_cert_and_hands_over_when_stopped() -> Result<()> {
    let Some(kube) = Kube::start("leader-election")? else {
        return Ok(());
    };
    let ca = tempfile::tempdir()?;
    let ca_dir = ca.path().join("ca").display().to_string();
    // A Lease far longer than the test waits: only a release hands it over in time.
    let flags = [
        "--ca-dir",
        &ca_dir,
        "--leader-lease-duration",
        "120s",
        "--leader-renew-deadline",
        "3s",
        "--leader-retry-period",
        "200ms",
    ];
    let mut first = Trellisd::replica(&kube, 0, &flags)?;
    let first_id = format!("_{}", first.child.id());
    first.until_leads(&kube).await?;
    // The second shares the CA (as replicas share istio-system's secret).
    let second = Trellisd::replica(&kube, 1, &flags)?;
    let root = std::fs::read_to_string(ca.path().join("ca/ca-cert.pem"))?;
    ensure!(root.contains("BEGIN CERTIFICATE"), "the CA's root: {root}");

    kube.kubectl_ok(&["create", "namespace", "before-handover"])?;
    for ns in [kube.namespace.as_str(), "before-handover", "default"] {
        eventually(Duration::from_secs(30), || async {
            let published = root_cert_in(&kube, ns)?;
            ensure!(published == root, "{ns}: {published:?} is the root");
            Ok(())
        })
        .await
        .with_context(|| first.log())?;
    }
    // Ignored as by istiod.
    ensure!(
        root_cert_in(&kube, "kube-system").is_err(),
        "no root certificate ConfigMap in kube-system"
    );
    second
        .until_logged("the second replica is up", &["Kubernetes source synced"])
        .await?;
    let holder = lease_holder(&kube)?;
    ensure!(
        holder.ends_with(&first_id),
        "the first still leads: {holder:?}"
    );
    ensure!(
        !second.log().contains("became the leader"),
        "the second replica did not lead while the first did: {}",
        second.log()
    );

    first.terminate()?;
    ensure!(
        first.log().contains("released the Lease"),
        "the stopped leader released its Lease: {}",
        first.log()
    );
    second.until_leads(&kube).await?;
    // The new leader writes: into a namespace made after the hand-over, and
    // back where one was deleted.
    kube.kubectl_ok(&["create", "namespace", "after-handover"])?;
    kube.kubectl_ok(&[
        "delete",
        "configmap",
        "istio-ca-root-cert",
        "-n",
        "before-handover",
    ])?;
    for ns in ["after-handover", "before-handover"] {
        eventually(Duration::from_secs(30), || async {
            let published = root_cert_in(&kube, ns)?;
            ensure!(published == root, "{ns}: {published:?} is the root");
            Ok(())
        })
        .await
        .with_context(|| second.log())?;
    }
    Ok(())
}

/// A proxy with its pod's projected token (TokenRequest API, audience
/// istio-ca) gets a certificate for exactly its service account, reviewed by
/// the API server; a CSR for another identity, a token for another audience,
/// or a token claiming another's identity on the discovery stream is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_token_gets_exactly_its_identity() -> Result<()> {
    use identity::{CertChain, KeyAndCsr, SpiffeId};
    use wire::certs::{CertRequestError, create_certificate};
    let Some(kube) = Kube::start("token-review")? else {
        return Ok(());
    };
    let ns = kube.namespace.clone();
    kube.kubectl_ok(&["create", "serviceaccount", "sleep", "-n", &ns])?;
    kube.kubectl_ok(&["create", "serviceaccount", "httpbin", "-n", &ns])?;
    let ca = tempfile::tempdir()?;
    let ca_dir = ca.path().display().to_string();
    let trellisd = Trellisd::replica(&kube, 0, &["--ca-dir", &ca_dir])?;
    let id = |sa: &str| SpiffeId::new("cluster.local", &ns, sa).expect("a valid identity");
    let sleep = service_account_token(&kube, &ns, "sleep", "istio-ca")?;
    // Over TLS (15012), verified with the root the leader published.
    let xds = trellisd.xds(&kube).await?;

    let key = KeyAndCsr::generate(&id("sleep"))?;
    let issued = eventually(Duration::from_secs(60), || async {
        create_certificate(&xds, &sleep, key.csr_pem().to_string(), None)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    })
    .await
    .with_context(|| trellisd.log())?;
    let chain = CertChain::from_pem(&issued.chain_pem)?;
    ensure!(
        chain.spiffe_id()? == id("sleep"),
        "the certificate is sleep's"
    );

    // sleep's token, a CSR for httpbin: refused.
    let other = KeyAndCsr::generate(&id("httpbin"))?;
    match create_certificate(&xds, &sleep, other.csr_pem().to_string(), None).await {
        Err(CertRequestError::Refused { code, message }) => ensure!(
            code == tonic::Code::PermissionDenied && message.contains("sa/httpbin"),
            "{code:?}: {message}"
        ),
        other => anyhow::bail!("a CSR for another identity: {other:?}"),
    }
    // httpbin's own token for httpbin's CSR: issued (it is not sleep-only).
    let httpbin = service_account_token(&kube, &ns, "httpbin", "istio-ca")?;
    let issued = create_certificate(&xds, &httpbin, other.csr_pem().to_string(), None)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    ensure!(CertChain::from_pem(&issued.chain_pem)?.spiffe_id()? == id("httpbin"));
    // A real token of sleep's, but for another audience: refused. (Not the
    // API server's default audiences: the fixture's include istio-ca.)
    let api_audience = service_account_token(&kube, &ns, "sleep", "another-service")?;
    let no_token = BearerToken::new("not-a-token");
    for (what, token) in [("another audience", &api_audience), ("garbage", &no_token)] {
        match create_certificate(&xds, token, key.csr_pem().to_string(), None).await {
            Err(CertRequestError::Refused { code, message }) => ensure!(
                code == tonic::Code::Unauthenticated,
                "{what}: {code:?}: {message}"
            ),
            other => anyhow::bail!("a token for {what}: {other:?}"),
        }
    }
    // sleep's own token and CSR over plaintext: refused before the token is
    // looked at, with a status that says where tokens go.
    match create_certificate(&trellisd.plaintext, &sleep, key.csr_pem().to_string(), None).await {
        Err(CertRequestError::Refused { code, message }) => ensure!(
            code == tonic::Code::Unauthenticated
                && message.contains("tokens are accepted only over TLS on 15012"),
            "{code:?}: {message}"
        ),
        other => anyhow::bail!("a CSR over plaintext: {other:?}"),
    }

    // The discovery stream: sleep's token on a node claiming httpbin.
    let proxy = Proxy::connect_with(
        xds.clone(),
        "sleep-0",
        &ns,
        "httpbin",
        TokenSource::Value(sleep.clone()),
    );
    trellisd
        .until_logged(
            "the stream claiming another identity is refused",
            &["discovery stream refused", "sa/sleep"],
        )
        .await?;
    ensure!(proxy.versions().is_empty(), "nothing was sent to it");
    Ok(())
}

/// The token file is read again for every connection (the kubelet rotates
/// projected tokens): a proxy whose first token was revoked, and whose file
/// now holds a fresh one from the TokenRequest API, is served again once its
/// stream restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_token_file_is_used_on_the_next_connection() -> Result<()> {
    use wire::certs::{CertRequestError, create_certificate};
    let Some(kube) = Kube::start("token-rotation")? else {
        return Ok(());
    };
    let ns = kube.namespace.clone();
    kube.apply(&reviews(&ns, "10.4.0.1"))?;
    kube.apply(&virtual_service(&ns, "before-the-rotation"))?;
    let ca = tempfile::tempdir()?;
    let ca_dir = ca.path().join("ca").display().to_string();
    let mut trellisd = Trellisd::replica(&kube, 0, &["--ca-dir", &ca_dir])?;
    sidecar_pod(&kube, "client-1", &ns, "10.9.0.1").await?;
    // A token bound to a Secret: deleting the Secret revokes it.
    kube.kubectl_ok(&["create", "secret", "generic", "token-binding", "-n", &ns])?;
    let first = service_account_token_with(
        &kube,
        &ns,
        "default",
        "istio-ca",
        &[
            "--bound-object-kind",
            "Secret",
            "--bound-object-name",
            "token-binding",
        ],
    )?;
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("istio-token");
    std::fs::write(&token_file, first.expose())?;
    let xds = trellisd.xds(&kube).await?;
    let proxy = Proxy::connect_with(
        xds.clone(),
        "client-1",
        &ns,
        "default",
        TokenSource::File(token_file.clone()),
    );
    proxy
        .until(ROUTES, "the route, with the first token", |d| {
            d.contains("before-the-rotation")
        })
        .await
        .with_context(|| trellisd.log())?;

    // The first token is revoked: once the API server says so (it caches a
    // token's review for a few seconds), the CA refuses it.
    kube.kubectl_ok(&["delete", "secret", "token-binding", "-n", &ns])?;
    let key =
        identity::KeyAndCsr::generate(&identity::SpiffeId::new("cluster.local", &ns, "default")?)?;
    eventually(Duration::from_secs(60), || async {
        match create_certificate(&xds, &first, key.csr_pem().to_string(), None).await {
            Err(CertRequestError::Refused {
                code: tonic::Code::Unauthenticated,
                ..
            }) => Ok(()),
            other => anyhow::bail!("the revoked token: {other:?}"),
        }
    })
    .await?;
    // The file holds a fresh one, as the kubelet writes it, and the stream
    // restarts with trellisd (the same CA: the proxy's root file, kept in
    // the stopped one's directory, still verifies the new one).
    let fresh = service_account_token(&kube, &ns, "default", "istio-ca")?;
    std::fs::write(&token_file, fresh.expose())?;
    trellisd.terminate()?;
    let restarted = Trellisd::replica(&kube, 0, &["--ca-dir", &ca_dir])?;
    kube.apply(&virtual_service(&ns, "after-the-rotation"))?;
    // Served: with the file's new token, since the first one is refused.
    proxy
        .until(ROUTES, "the route, with the rewritten token", |d| {
            d.contains("after-the-rotation")
        })
        .await
        .with_context(|| restarted.log())?;
    Ok(())
}
