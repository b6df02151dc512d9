//! The access log's formats, batching writer and cached time.

use super::writer::{MAX_PENDING, lock};
use super::*;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[test]
fn flush_writes_out_the_batch_being_gathered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("access.log");
    let writer = Writer::for_path(path.to_str().expect("utf-8")).expect("writer");
    writer.append(|out| out.extend_from_slice(b"first\n"));
    writer.append(|out| out.extend_from_slice(b"second\n"));
    // Well inside the batch window: only the flush can have written them.
    flush(Duration::from_secs(5));
    assert_eq!(
        std::fs::read_to_string(&path).expect("log"),
        "first\nsecond\n"
    );
    // The next batch is written too (the writer is woken again).
    writer.append(|out| out.extend_from_slice(b"third\n"));
    flush(Duration::from_secs(5));
    assert_eq!(
        std::fs::read_to_string(&path).expect("log"),
        "first\nsecond\nthird\n"
    );
}

#[test]
fn a_writer_far_behind_drops_lines_and_counts_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("access.log");
    let writer = Writer::for_path(path.to_str().expect("utf-8")).expect("writer");
    // As if the thread could not write: the batch is at its limit.
    lock(&writer.pending).resize(MAX_PENDING, b'x');
    writer.append(|out| out.extend_from_slice(b"lost\n"));
    assert_eq!(writer.dropped.load(Ordering::Relaxed), 1);
    assert_eq!(lock(&writer.pending).len(), MAX_PENDING);
    lock(&writer.pending).clear();
    writer.append(|out| out.extend_from_slice(b"kept\n"));
    flush(Duration::from_secs(5));
    assert_eq!(std::fs::read_to_string(&path).expect("log"), "kept\n");
}

/// The cached second is right across second, minute, day, month and
/// year boundaries, and when time goes back, whatever came before on
/// the thread.
#[test]
fn cached_start_time_crosses_boundaries() {
    let ms = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
    let mut times = vec![
        UNIX_EPOCH,
        ms(1_709_210_096_789), // leap year, Feb 29
        ms(1_709_251_199_999), // 2024-02-29T23:59:59.999
        ms(1_709_251_200_000), // 2024-03-01T00:00:00.000
        ms(1_704_067_199_999), // 2023-12-31T23:59:59.999
        ms(1_704_067_200_000), // 2024-01-01T00:00:00.000
        ms(1_704_067_200_001),
        ms(1_704_067_259_999), // a minute's last millisecond
        ms(1_704_067_260_000),
        ms(1_704_067_199_999),   // back in time
        ms(253_402_300_799_999), // 9999-12-31T23:59:59.999
        ms(253_402_300_800_000), // year 10000: longer than the cache
        ms(1_704_067_200_000),
        UNIX_EPOCH - Duration::from_secs(1), // before the epoch: as the epoch
    ];
    // Every millisecond around a second's end, one after the other.
    times.extend((1_606_339_578_990..1_606_339_579_011).map(ms));
    for t in times {
        let mut out = Vec::new();
        write_time(t, &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            before::format_time(t),
            "{t:?}"
        );
    }
    let mut out = Vec::new();
    write_time(ms(1_709_210_096_789), &mut out);
    assert_eq!(out, b"2024-02-29T12:34:56.789Z");
}

fn kept(names: &[&str], h: &HeaderMap) -> Kept {
    let names: Vec<HeaderName> = names
        .iter()
        .map(|n| HeaderName::from_bytes(n.as_bytes()).expect("name"))
        .collect();
    Kept::copy(&names, h)
}

fn entry<'a>(headers: &'a Kept) -> Entry<'a> {
    Entry {
        start_time: UNIX_EPOCH + Duration::from_millis(1_606_339_578_409),
        method: "GET",
        path: "/status/418",
        authority: "httpbin:8000",
        protocol: Some("HTTP/1.1"),
        response_code: 418,
        grpc_status: None,
        response_flags: "-",
        response_code_details: None,
        bytes_received: 0,
        bytes_sent: 135,
        duration_ms: 4,
        upstream_service_time: Some(4),
        request_headers: Some(headers),
        response_headers: None,
        upstream_host: Some("10.44.1.27:80"),
        upstream_cluster: Some("outbound|8000||httpbin.foo.svc.cluster.local"),
        downstream_local: Some("10.0.45.184:8000".parse().expect("addr")),
        downstream_remote: "10.44.1.23:37652".parse().expect("addr"),
        requested_server_name: None,
        route_name: Some("default"),
        source_principal: None,
    }
}

#[test]
fn istio_default_text_line() {
    let mut h = HeaderMap::new();
    h.insert("user-agent", "curl/7.73.0-DEV".parse().expect("v"));
    h.insert(
        "x-request-id",
        "84961386-6d84-929d-98bd-c5aee93b5c88".parse().expect("v"),
    );
    h.insert("x-not-logged", "secret".parse().expect("v"));
    let logs = AccessLogs::compile(&[pb::AccessLogPolicy {
        path: "/dev/stdout".into(),
        ..Default::default()
    }])
    .expect("default");
    let kept = logs.keep_request(&h);
    // Only what Istio's format reads is copied.
    assert_eq!(kept.0.len(), 2, "{kept:?}");
    assert!(logs.keep_response(&h).0.is_empty());
    let mut out = Vec::new();
    logs.sinks[0].format.render(&entry(&kept), &mut out);
    // Istio's documented example line for curl → httpbin (but its
    // upstream local address, which this proxy does not report).
    assert_eq!(
        String::from_utf8_lossy(&out),
        "[2020-11-25T21:26:18.409Z] \"GET /status/418 HTTP/1.1\" 418 - via_upstream - \"-\" 0 135 4 4 \"-\" \"curl/7.73.0-DEV\" \"84961386-6d84-929d-98bd-c5aee93b5c88\" \"httpbin:8000\" \"10.44.1.27:80\" outbound|8000||httpbin.foo.svc.cluster.local - 10.0.45.184:8000 10.44.1.23:37652 - default\n"
    );
}

#[test]
fn headers_kept_are_those_formats_and_filters_read() {
    let logs = AccessLogs::compile(&[
        pb::AccessLogPolicy {
            path: "/dev/stdout".into(),
            format: "%REQ(:AUTHORITY)% %REQ(X-A?X-B)% %REQ(HOST)% %RESP(X-C):3% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%".into(),
            filter: "request.headers['x-d'] == 'y' || response.headers['x-e'] == 'z' || request.id == 'r'".into(),
            ..Default::default()
        },
        pb::AccessLogPolicy {
            path: "/dev/stdout".into(),
            format: r#"{"a": "%REQ(X-A)%", "f": "%RESP(X-F)%"}"#.into(),
            encoding: pb::AccessLogEncoding::Json as i32,
            ..Default::default()
        },
    ])
    .expect("logs");
    fn names(v: &[HeaderName]) -> Vec<&str> {
        v.iter().map(HeaderName::as_str).collect()
    }
    assert_eq!(
        names(&logs.request_headers),
        ["x-a", "x-b", "x-d", "x-request-id"]
    );
    assert_eq!(names(&logs.response_headers), ["x-c", "x-e", "x-f"]);
}

#[test]
fn json_and_custom_formats() {
    let h = Kept::default();
    let f = Format::compile("", true).expect("default");
    let mut out = Vec::new();
    f.render(&entry(&h), &mut out);
    let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(v["response_code"], 418);
    assert_eq!(v["path"], "/status/418");
    assert_eq!(v["user_agent"], serde_json::Value::Null);
    let f = Format::compile(
        r#"{"code": "%RESPONSE_CODE%", "line": "%REQ(:METHOD)% %REQ(:PATH):4%"}"#,
        true,
    )
    .expect("custom");
    let mut out = Vec::new();
    f.render(&entry(&h), &mut out);
    let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(v, serde_json::json!({"code": 418, "line": "GET /sta"}));
    let f = Format::compile("%RESPONSE_CODE% 100%%", false).expect("text");
    let mut out = Vec::new();
    f.render(&entry(&h), &mut out);
    assert_eq!(out, b"418 100%\n");
    for bad in ["%NOPE%", "%REQ(:PATH", "%START_TIME", "%REQ(bad header)%"] {
        assert!(Format::compile(bad, false).is_err(), "{bad}");
    }
    assert!(Format::compile("not json", true).is_err());
}

#[test]
fn lengths_cut_on_character_boundaries() {
    let v = "ñandú-路由";
    for max in 0..=v.len() + 1 {
        let mut out = b"prefix ".to_vec();
        out.extend_from_slice(v.as_bytes());
        truncate_written(&mut out, 7, max);
        assert_eq!(&out[7..], truncate(v, Some(max)).as_bytes(), "{max}");
    }
}

/// Every operator, with and without a length, in text and JSON, for
/// entries with every field set, none set, empty and multi-byte
/// values: the line is byte for byte what the render before borrowing
/// (a String per operator) wrote.
#[test]
fn every_operator_renders_as_before() {
    const OPS: &[&str] = &[
        "START_TIME",
        "REQ(:METHOD)",
        "REQ(X-ENVOY-ORIGINAL-PATH?:PATH)",
        "REQ(:AUTHORITY)",
        "REQ(HOST)",
        "REQ(X-MISSING?USER-AGENT)",
        "REQ(X-REQUEST-ID)",
        "REQ(X-FORWARDED-FOR)",
        "REQ(:SCHEME)",
        "RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)",
        "RESP(CONTENT-TYPE)",
        "PROTOCOL",
        "RESPONSE_CODE",
        "RESPONSE_FLAGS",
        "RESPONSE_CODE_DETAILS",
        "CONNECTION_TERMINATION_DETAILS",
        "UPSTREAM_TRANSPORT_FAILURE_REASON",
        "BYTES_RECEIVED",
        "BYTES_SENT",
        "DURATION",
        "UPSTREAM_HOST",
        "UPSTREAM_CLUSTER",
        "UPSTREAM_CLUSTER_RAW",
        "UPSTREAM_LOCAL_ADDRESS",
        "DOWNSTREAM_LOCAL_ADDRESS",
        "DOWNSTREAM_REMOTE_ADDRESS",
        "DOWNSTREAM_PEER_ADDRESS",
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT",
        "REQUESTED_SERVER_NAME",
        "ROUTE_NAME",
        "GRPC_STATUS_NUMBER",
        "DOWNSTREAM_PEER_URI_SAN",
        "ENVIRONMENT(TRELLIS_SURELY_UNSET_VARIABLE)",
        "HOSTNAME",
    ];
    let mut text = String::from("%% literal ");
    let mut json = serde_json::Map::new();
    for (i, op) in OPS.iter().enumerate() {
        for max in ["", ":0", ":1", ":3", ":9", ":200"] {
            if !max.is_empty() && !op.contains('(') {
                continue; // lengths go with NAME(ARG) only
            }
            text.push_str(&format!("%{op}{max}%|"));
            json.insert(format!("{i}{max}"), format!("%{op}{max}%").into());
            json.insert(format!("{i}{max}-mixed"), format!("<%{op}{max}%>").into());
        }
        if !op.contains('(') {
            text.push_str(&format!("%{op}%|"));
        }
    }
    let formats = [
        Format::compile("", false).expect("istio text"),
        Format::compile(&text, false).expect("all operators"),
        Format::compile("", true).expect("istio json"),
        Format::compile(&serde_json::Value::Object(json).to_string(), true)
            .expect("all operators, json"),
    ];
    let mut request = HeaderMap::new();
    request.insert("user-agent", "curl/8.0 (x86_64)".parse().expect("v"));
    request.insert("x-request-id", "a-b-c".parse().expect("v"));
    request.insert("x-forwarded-for", "".parse().expect("v"));
    let mut response = HeaderMap::new();
    response.insert("content-type", "application/json".parse().expect("v"));
    let names = ["user-agent", "x-request-id", "x-forwarded-for", "x-missing"];
    let request = kept(&names, &request);
    let response = kept(&["content-type"], &response);
    let empty = Kept::default();
    let full = Entry {
        grpc_status: Some(14),
        response_code_details: Some("rbac_access_denied_matched_policy[none]"),
        response_headers: Some(&response),
        requested_server_name: Some("outbound_.9080_._.reviews.default.svc.cluster.local"),
        route_name: Some("ruta-ñandú-路由"),
        source_principal: Some("spiffe://cluster.local/ns/default/sa/productpage"),
        response_flags: "UF,URX",
        bytes_received: u64::MAX,
        duration_ms: 0,
        downstream_remote: "[2001:db8::1]:443".parse().expect("addr"),
        downstream_local: Some("[::1]:15006".parse().expect("addr")),
        ..entry(&request)
    };
    let none = Entry {
        protocol: None,
        upstream_service_time: None,
        request_headers: None,
        upstream_host: None,
        upstream_cluster: None,
        downstream_local: None,
        route_name: None,
        method: "",
        path: "",
        authority: "",
        ..entry(&empty)
    };
    let empties = Entry {
        route_name: Some(""),
        upstream_host: Some(""),
        response_code_details: Some(""),
        response_flags: "",
        ..entry(&request)
    };
    let tcp = Entry::tcp(
        (
            UNIX_EPOCH + Duration::from_millis(999),
            std::time::Instant::now(),
        ),
        "UH",
        (17, 0),
        "127.0.0.1:5000".parse().expect("addr"),
    );
    let v4 = Entry {
        downstream_remote: "255.0.10.199:65535".parse().expect("addr"),
        downstream_local: Some("0.0.0.0:0".parse().expect("addr")),
        response_code: 0,
        bytes_sent: 1_000_000_007,
        ..entry(&request)
    };
    let entries = [entry(&request), full, none, empties, tcp, v4];
    for (fi, f) in formats.iter().enumerate() {
        for (ei, e) in entries.iter().enumerate() {
            let mut now = Vec::new();
            f.render(e, &mut now);
            let old = before::render(f, e);
            assert_eq!(
                String::from_utf8_lossy(&now),
                String::from_utf8_lossy(&old),
                "format {fi}, entry {ei}"
            );
        }
    }
}

/// The render as it was before it wrote in place: a String per operator.
mod before {
    use super::super::*;

    pub fn format_time(t: SystemTime) -> String {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs();
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (y, m, day) = civil_from_days(days as i64);
        format!(
            "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60,
            d.subsec_millis()
        )
    }

    pub fn render(f: &Format, e: &Entry<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        match f {
            Format::Text(pieces) => {
                let mut s = String::with_capacity(256);
                for p in pieces {
                    match p {
                        Piece::Lit(l) => s.push_str(l),
                        Piece::Op(op, max) => {
                            let v = value(op, e).unwrap_or_else(|| "-".into());
                            s.push_str(truncate(&v, *max));
                        }
                    }
                }
                out.extend_from_slice(s.as_bytes());
            }
            Format::Json(fields) => {
                let mut map = serde_json::Map::with_capacity(fields.len());
                for (k, pieces) in fields {
                    let v = match pieces.as_slice() {
                        [Piece::Op(op, max)] => match value(op, e) {
                            None => serde_json::Value::Null,
                            Some(v) if numeric(op) => v
                                .parse::<u64>()
                                .map_or_else(|_| v.clone().into(), serde_json::Value::from),
                            Some(v) => truncate(&v, *max).into(),
                        },
                        _ => {
                            let mut s = String::new();
                            for p in pieces {
                                match p {
                                    Piece::Lit(l) => s.push_str(l),
                                    Piece::Op(op, max) => s.push_str(truncate(
                                        &value(op, e).unwrap_or_else(|| "-".into()),
                                        *max,
                                    )),
                                }
                            }
                            s.into()
                        }
                    };
                    map.insert(k.clone(), v);
                }
                if serde_json::to_writer(&mut out, &map).is_ok() {
                    out.push(b'\n');
                }
            }
        }
        out
    }

    fn value(op: &Operator, e: &Entry<'_>) -> Option<String> {
        let addr = |a: Option<SocketAddr>| a.map(|a| a.to_string());
        let v = match op {
            Operator::StartTime => Some(format_time(e.start_time)),
            Operator::Req(names) => names.iter().find_map(|n| e.header(n)).map(str::to_string),
            Operator::Resp(name) if name == "x-envoy-upstream-service-time" => {
                e.upstream_service_time.map(|t| t.to_string())
            }
            Operator::Resp(name) => e
                .response_headers
                .and_then(|h| h.get(name.as_str()))
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            Operator::Protocol => e.protocol.map(str::to_string),
            Operator::ResponseCode => Some(e.response_code.to_string()),
            Operator::ResponseFlags => Some(e.response_flags.to_string()),
            Operator::ResponseCodeDetails => {
                e.response_code_details.map(str::to_string).or_else(|| {
                    (e.upstream_host.is_some() && e.protocol.is_some())
                        .then(|| "via_upstream".into())
                })
            }
            Operator::ConnectionTerminationDetails | Operator::UpstreamTransportFailureReason => {
                None
            }
            Operator::BytesReceived => Some(e.bytes_received.to_string()),
            Operator::BytesSent => Some(e.bytes_sent.to_string()),
            Operator::Duration => Some(e.duration_ms.to_string()),
            Operator::UpstreamHost => e.upstream_host.map(str::to_string),
            Operator::UpstreamCluster => e.upstream_cluster.map(str::to_string),
            Operator::UpstreamLocalAddress => None,
            Operator::DownstreamLocalAddress => addr(e.downstream_local),
            Operator::DownstreamRemoteAddress => Some(e.downstream_remote.to_string()),
            Operator::DownstreamRemoteAddressWithoutPort => {
                Some(e.downstream_remote.ip().to_string())
            }
            Operator::RequestedServerName => e.requested_server_name.map(str::to_string),
            Operator::RouteName => e.route_name.map(str::to_string),
            Operator::GrpcStatus => e.grpc_status.map(|g| g.to_string()),
            Operator::DownstreamPeerUriSan => e.source_principal.map(str::to_string),
            Operator::Fixed(v) => Some(v.clone()),
        };
        v.filter(|v| !v.is_empty())
    }
}
