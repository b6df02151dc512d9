//! Istio's Bookinfo sample (samples/bookinfo), inline: the resources every
//! Istio user has applied at least once must parse and validate unchanged.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use api::{Kind, Resource, networking::StringMatch};

const DESTINATION_RULE_ALL: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: productpage
spec:
  host: productpage
  subsets:
  - name: v1
    labels:
      version: v1
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
  - name: v3
    labels:
      version: v3
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: ratings
spec:
  host: ratings
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
  - name: v2-mysql
    labels:
      version: v2-mysql
  - name: v2-mysql-vm
    labels:
      version: v2-mysql-vm
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: details
spec:
  host: details
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
---
"#;

const VIRTUAL_SERVICE_ALL_V1: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: productpage
spec:
  hosts:
  - productpage
  http:
  - route:
    - destination:
        host: productpage
        subset: v1
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts:
  - ratings
  http:
  - route:
    - destination:
        host: ratings
        subset: v1
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: details
spec:
  hosts:
  - details
  http:
  - route:
    - destination:
        host: details
        subset: v1
---
"#;

const VIRTUAL_SERVICE_REVIEWS_TEST_V2: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
    - reviews
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    route:
    - destination:
        host: reviews
        subset: v2
  - route:
    - destination:
        host: reviews
        subset: v1
"#;

const VIRTUAL_SERVICE_RATINGS_TEST_DELAY: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts:
  - ratings
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    fault:
      delay:
        percentage:
          value: 100.0
        fixedDelay: 7s
    route:
    - destination:
        host: ratings
        subset: v1
  - route:
    - destination:
        host: ratings
        subset: v1
"#;

const BOOKINFO_GATEWAY: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bookinfo-gateway
spec:
  # The selector matches the ingress gateway pod labels.
  # If you installed Istio using Helm following the standard documentation, this would be "istio=ingress"
  selector:
    istio: ingressgateway # use istio default controller
  servers:
  - port:
      number: 8080
      name: http
      protocol: HTTP
    hosts:
    - "*"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bookinfo
spec:
  hosts:
  - "*"
  gateways:
  - bookinfo-gateway
  http:
  - match:
    - uri:
        exact: /productpage
    - uri:
        prefix: /static
    - uri:
        exact: /login
    - uri:
        exact: /logout
    - uri:
        prefix: /api/v1/products
    route:
    - destination:
        host: productpage
        port:
          number: 9080
"#;

const BOOKINFO_KUBE: &str = r#"
# Copyright Istio Authors
#
#   Licensed under the Apache License, Version 2.0 (the "License");
#   you may not use this file except in compliance with the License.

##################################################################################################
# This file defines the services, service accounts, and deployments for the Bookinfo sample.
##################################################################################################

##################################################################################################
# Details service
##################################################################################################
apiVersion: v1
kind: Service
metadata:
  name: details
  labels:
    app: details
    service: details
spec:
  ports:
  - port: 9080
    name: http
  selector:
    app: details
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: bookinfo-details
  labels:
    account: details
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: details-v1
  labels:
    app: details
    version: v1
spec:
  replicas: 1
  selector:
    matchLabels:
      app: details
      version: v1
  template:
    metadata:
      labels:
        app: details
        version: v1
    spec:
      serviceAccountName: bookinfo-details
      containers:
      - name: details
        image: docker.io/istio/examples-bookinfo-details-v1:1.20.3
        imagePullPolicy: IfNotPresent
        ports:
        - containerPort: 9080
---
##################################################################################################
# Ratings service
##################################################################################################
apiVersion: v1
kind: Service
metadata:
  name: ratings
  labels:
    app: ratings
    service: ratings
spec:
  ports:
  - port: 9080
    name: http
  selector:
    app: ratings
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: bookinfo-ratings
  labels:
    account: ratings
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: ratings-v1
  labels:
    app: ratings
    version: v1
spec:
  replicas: 1
  selector:
    matchLabels:
      app: ratings
      version: v1
  template:
    metadata:
      labels:
        app: ratings
        version: v1
    spec:
      serviceAccountName: bookinfo-ratings
      containers:
      - name: ratings
        image: docker.io/istio/examples-bookinfo-ratings-v1:1.20.3
        imagePullPolicy: IfNotPresent
        ports:
        - containerPort: 9080
---
##################################################################################################
# Reviews service
##################################################################################################
apiVersion: v1
kind: Service
metadata:
  name: reviews
  labels:
    app: reviews
    service: reviews
spec:
  ports:
  - port: 9080
    name: http
  selector:
    app: reviews
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: bookinfo-reviews
  labels:
    account: reviews
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: reviews-v1
  labels:
    app: reviews
    version: v1
spec:
  replicas: 1
  selector:
    matchLabels:
      app: reviews
      version: v1
  template:
    metadata:
      labels:
        app: reviews
        version: v1
    spec:
      serviceAccountName: bookinfo-reviews
      containers:
      - name: reviews
        image: docker.io/istio/examples-bookinfo-reviews-v1:1.20.3
        imagePullPolicy: IfNotPresent
        env:
        - name: LOG_DIR
          value: "/tmp/logs"
        ports:
        - containerPort: 9080
        volumeMounts:
        - name: tmp
          mountPath: /tmp
      volumes:
      - name: tmp
        emptyDir: {}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: reviews-v2
  labels:
    app: reviews
    version: v2
spec:
  replicas: 1
  selector:
    matchLabels:
      app: reviews
      version: v2
  template:
    metadata:
      labels:
        app: reviews
        version: v2
    spec:
      serviceAccountName: bookinfo-reviews
      containers:
      - name: reviews
        image: docker.io/istio/examples-bookinfo-reviews-v2:1.20.3
        imagePullPolicy: IfNotPresent
        env:
        - name: LOG_DIR
          value: "/tmp/logs"
        ports:
        - containerPort: 9080
        volumeMounts:
        - name: tmp
          mountPath: /tmp
      volumes:
      - name: tmp
        emptyDir: {}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: reviews-v3
  labels:
    app: reviews
    version: v3
spec:
  replicas: 1
  selector:
    matchLabels:
      app: reviews
      version: v3
  template:
    metadata:
      labels:
        app: reviews
        version: v3
    spec:
      serviceAccountName: bookinfo-reviews
      containers:
      - name: reviews
        image: docker.io/istio/examples-bookinfo-reviews-v3:1.20.3
        imagePullPolicy: IfNotPresent
        env:
        - name: LOG_DIR
          value: "/tmp/logs"
        ports:
        - containerPort: 9080
        volumeMounts:
        - name: tmp
          mountPath: /tmp
      volumes:
      - name: tmp
        emptyDir: {}
---
##################################################################################################
# Productpage services
##################################################################################################
apiVersion: v1
kind: Service
metadata:
  name: productpage
  labels:
    app: productpage
    service: productpage
spec:
  ports:
  - port: 9080
    name: http
  selector:
    app: productpage
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: bookinfo-productpage
  labels:
    account: productpage
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: productpage-v1
  labels:
    app: productpage
    version: v1
spec:
  replicas: 1
  selector:
    matchLabels:
      app: productpage
      version: v1
  template:
    metadata:
      annotations:
        prometheus.io/scrape: "true"
        prometheus.io/port: "9080"
        prometheus.io/path: "/metrics"
      labels:
        app: productpage
        version: v1
    spec:
      serviceAccountName: bookinfo-productpage
      containers:
      - name: productpage
        image: docker.io/istio/examples-bookinfo-productpage-v1:1.20.3
        imagePullPolicy: IfNotPresent
        ports:
        - containerPort: 9080
        volumeMounts:
        - name: tmp
          mountPath: /tmp
      volumes:
      - name: tmp
        emptyDir: {}
---
"#;

fn parse_valid(name: &str, text: &str) -> Vec<Resource> {
    let resources = api::parse(name, text).unwrap_or_else(|e| panic!("{e}"));
    for r in &resources {
        let errors = api::validate(r);
        assert!(
            errors.is_empty(),
            "{name}: {}: {errors:?}",
            r.display_name()
        );
        let back = api::parse("rt", &r.to_yaml()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            back,
            vec![r.clone()],
            "{name}: round trip of {}",
            r.display_name()
        );
    }
    resources
}

fn kinds_and_names(rs: &[Resource]) -> Vec<(Kind, &str)> {
    rs.iter().map(|r| (r.kind(), r.name())).collect()
}

#[test]
fn destination_rule_all() {
    let rs = parse_valid("destination-rule-all.yaml", DESTINATION_RULE_ALL);
    assert_eq!(
        kinds_and_names(&rs),
        [
            (Kind::DestinationRule, "productpage"),
            (Kind::DestinationRule, "reviews"),
            (Kind::DestinationRule, "ratings"),
            (Kind::DestinationRule, "details"),
        ]
    );
    let Resource::DestinationRule(reviews) = &rs[1] else {
        panic!("not a DR")
    };
    let names: Vec<&str> = reviews
        .spec
        .subsets
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["v1", "v2", "v3"]);
    assert_eq!(
        reviews.spec.subsets[2]
            .labels
            .get("version")
            .map(String::as_str),
        Some("v3")
    );
}

#[test]
fn virtual_service_all_v1() {
    let rs = parse_valid("virtual-service-all-v1.yaml", VIRTUAL_SERVICE_ALL_V1);
    assert_eq!(rs.len(), 4);
    for r in &rs {
        let Resource::VirtualService(vs) = r else {
            panic!("not a VS")
        };
        assert_eq!(vs.spec.hosts, std::slice::from_ref(&vs.metadata.name));
        assert_eq!(
            vs.spec.http[0].route[0].destination.subset.as_deref(),
            Some("v1")
        );
    }
}

#[test]
fn virtual_service_reviews_test_v2() {
    let rs = parse_valid(
        "virtual-service-reviews-test-v2.yaml",
        VIRTUAL_SERVICE_REVIEWS_TEST_V2,
    );
    let Resource::VirtualService(vs) = &rs[0] else {
        panic!("not a VS")
    };
    let m = &vs.spec.http[0].r#match[0];
    assert_eq!(
        m.headers.get("end-user"),
        Some(&StringMatch::Exact("jason".into()))
    );
    assert_eq!(
        vs.spec.http[0].route[0].destination.subset.as_deref(),
        Some("v2")
    );
    assert!(vs.spec.http[1].r#match.is_empty());
}

#[test]
fn virtual_service_ratings_test_delay() {
    let rs = parse_valid(
        "virtual-service-ratings-test-delay.yaml",
        VIRTUAL_SERVICE_RATINGS_TEST_DELAY,
    );
    let Resource::VirtualService(vs) = &rs[0] else {
        panic!("not a VS")
    };
    let delay = vs.spec.http[0]
        .fault
        .as_ref()
        .and_then(|f| f.delay.as_ref())
        .expect("delay");
    assert_eq!(
        delay.fixed_delay.map(|d| d.as_std()),
        Some(std::time::Duration::from_secs(7))
    );
    assert_eq!(delay.percentage.map(|p| p.value), Some(100.0));
}

#[test]
fn bookinfo_gateway() {
    let rs = parse_valid("bookinfo-gateway.yaml", BOOKINFO_GATEWAY);
    assert_eq!(
        kinds_and_names(&rs),
        [
            (Kind::Gateway, "bookinfo-gateway"),
            (Kind::VirtualService, "bookinfo")
        ]
    );
    let Resource::Gateway(gw) = &rs[0] else {
        panic!("not a Gateway")
    };
    assert_eq!(gw.spec.servers[0].port.number, 8080);
    assert_eq!(
        gw.spec.selector.get("istio").map(String::as_str),
        Some("ingressgateway")
    );
    let Resource::VirtualService(vs) = &rs[1] else {
        panic!("not a VS")
    };
    assert_eq!(vs.spec.http[0].r#match.len(), 5);
    assert_eq!(
        vs.spec.http[0].r#match[1].uri,
        Some(StringMatch::Prefix("/static".into()))
    );
    assert_eq!(
        vs.spec.http[0].route[0]
            .destination
            .port
            .as_ref()
            .map(|p| p.number),
        Some(9080)
    );
}

#[test]
fn bookinfo_kube() {
    let rs = parse_valid("bookinfo.yaml", BOOKINFO_KUBE);
    let count = |k: Kind| rs.iter().filter(|r| r.kind() == k).count();
    assert_eq!(count(Kind::Service), 4);
    assert_eq!(count(Kind::ServiceAccount), 4);
    assert_eq!(count(Kind::Deployment), 6);
    let reviews_v3 = rs
        .iter()
        .find(|r| r.name() == "reviews-v3")
        .expect("reviews-v3");
    assert_eq!(
        reviews_v3.labels().get("version").map(String::as_str),
        Some("v3")
    );
    let Resource::Deployment(d) = reviews_v3 else {
        panic!("not a Deployment")
    };
    let containers = &d
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec")
        .containers;
    assert_eq!(
        containers[0].image.as_deref(),
        Some("docker.io/istio/examples-bookinfo-reviews-v3:1.20.3")
    );
}
