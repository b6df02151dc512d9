//! The graph's metrics from a Prometheus instead of the proxies
//! (`trellisd --prometheus URL`), for meshes whose proxies trellisd cannot
//! reach or where a Prometheus already scrapes them. The same series the
//! proxies serve (Istio's `istio_requests_total`, the duration histogram's
//! buckets, `istio_tcp_connections_opened_total`) are read at two instants
//! through the HTTP API (`/api/v1/query`), one target (Prometheus's `job`
//! and `instance`) standing for one proxy, and the graph is drawn from the
//! increase between them exactly as from two scrapes of its own.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;

use super::Scrape;

/// The series the graph reads, in one selector.
const SELECTOR: &str = "{__name__=~\"istio_requests_total|istio_request_duration_milliseconds_bucket|istio_tcp_connections_opened_total\"}";
/// Series kept per target, as for a proxy scraped directly.
const MAX_SERIES: usize = 20_000;
/// An answer larger than this is not read.
const MAX_BODY: usize = 64 << 20;

/// A Prometheus's HTTP API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prometheus(String);

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Option<Data>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(default)]
    result: Vec<Series>,
}

#[derive(Deserialize)]
struct Series {
    metric: BTreeMap<String, String>,
    /// `[unix seconds, "value"]`.
    value: (f64, String),
}

/// One target's series at two instants.
pub struct Target {
    /// `job/instance`.
    pub id: String,
    pub older: Option<Scrape>,
    pub newer: Scrape,
}

impl Prometheus {
    /// Only http(s) base URLs (`http://prometheus:9090`).
    pub fn parse(url: &str) -> Result<Prometheus, String> {
        let parsed =
            reqwest::Url::parse(url).map_err(|e| format!("Prometheus URL {url:?}: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!(
                "Prometheus URL {url:?}: only http and https are supported"
            ));
        }
        Ok(Prometheus(url.trim_end_matches('/').to_string()))
    }

    pub fn url(&self) -> &str {
        &self.0
    }

    /// Each target's series now and `span` ago.
    pub async fn targets(
        &self,
        client: &reqwest::Client,
        span: Duration,
    ) -> Result<Vec<Target>, String> {
        let now = SystemTime::now();
        let at = Instant::now();
        let then = now.checked_sub(span).unwrap_or(now);
        let older = self.at(client, then).await?;
        let mut newer = self.at(client, now).await?;
        let mut out = Vec::with_capacity(newer.len());
        let mut older = older;
        for (id, text) in std::mem::take(&mut newer) {
            let older = older
                .remove(&id)
                .map(|text| Scrape::read(&text, at.checked_sub(span).unwrap_or(at), MAX_SERIES).0);
            out.push(Target {
                older,
                newer: Scrape::read(&text, at, MAX_SERIES).0,
                id,
            });
        }
        Ok(out)
    }

    /// The series at `time`, as Prometheus text per target.
    async fn at(
        &self,
        client: &reqwest::Client,
        time: SystemTime,
    ) -> Result<BTreeMap<String, String>, String> {
        let url = format!("{}/api/v1/query", self.0);
        let seconds = time
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut resp = client
            .get(&url)
            .query(&[("query", SELECTOR), ("time", &format!("{seconds:.3}"))])
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| format!("{url}: {e}"))? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(format!("{url}: more than {MAX_BODY} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|e| format!("{url}: {status}, not Prometheus's answer: {e}"))?;
        if answer.status != "success" {
            return Err(format!(
                "{url}: {}",
                answer.error.unwrap_or_else(|| status.to_string())
            ));
        }
        Ok(as_text(answer.data.map(|d| d.result).unwrap_or_default()))
    }
}

/// The series as Prometheus text, per target (`job/instance`).
fn as_text(series: Vec<Series>) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for s in series {
        let label = |n: &str| s.metric.get(n).map_or("", String::as_str);
        let id = format!("{}/{}", label("job"), label("instance"));
        let Some(name) = s.metric.get("__name__") else {
            continue;
        };
        let text = out.entry(id).or_default();
        let _ = write!(text, "{name}{{");
        for (k, v) in s.metric.iter().filter(|(k, _)| *k != "__name__") {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = write!(text, "{k}=\"{v}\",");
        }
        let _ = writeln!(text, "}} {}", s.value.1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_results_become_one_scrape_per_target() {
        let answer: Answer = serde_json::from_str(
            r#"{"status":"success","data":{"resultType":"vector","result":[
              {"metric":{"__name__":"istio_requests_total","job":"kubernetes-pods","instance":"10.0.0.1:15020","reporter":"destination","source_workload":"a","destination_workload":"b","destination_service":"b.default.svc.cluster.local","response_code":"200","request_protocol":"http","pod":"say \"hi\""},"value":[1700000000.0,"42"]},
              {"metric":{"__name__":"istio_requests_total","job":"kubernetes-pods","instance":"10.0.0.2:15020","reporter":"source","source_workload":"a","destination_workload":"b","destination_service":"b.default.svc.cluster.local","response_code":"503","request_protocol":"http"},"value":[1700000000.0,"3"]}
            ]}}"#,
        )
        .expect("answer");
        let texts = as_text(answer.data.expect("data").result);
        assert_eq!(texts.len(), 2);
        let scrape = Scrape::read(
            &texts["kubernetes-pods/10.0.0.1:15020"],
            Instant::now(),
            MAX_SERIES,
        )
        .0;
        let (key, value) = scrape.series.iter().next().expect("a series");
        assert_eq!(value.count, 42.0);
        assert_eq!(key.response_code, 200);
        assert_eq!(key.source.workload, "a");
        assert!(Prometheus::parse("ftp://x").is_err());
        assert_eq!(
            Prometheus::parse("http://127.0.0.1:9090/")
                .expect("url")
                .url(),
            "http://127.0.0.1:9090"
        );
    }
}
