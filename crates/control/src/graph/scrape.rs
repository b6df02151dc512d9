//! Scrapes the proxies' Prometheus endpoints while someone looks at the
//! graph: every [`INTERVAL`] while the graph was asked for in the last
//! [`IDLE_AFTER`], not at all (and nothing kept) otherwise. Each proxy's
//! last [`KEPT`] scrapes are kept; rates are taken between the oldest and
//! the newest, so a window of about `INTERVAL × (KEPT − 1)`. Each round
//! also reads each proxy's recent notable requests ([`super::recent`]);
//! only the last answer is kept.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::prometheus::Prometheus;
use super::recent::{self, ProxyRecent, ServiceRecent};
use super::{Failures, Graph, Scrape, Window};

pub const INTERVAL: Duration = Duration::from_secs(2);
/// Scrapes kept per proxy: rates over the last ~10 s.
pub const KEPT: usize = 6;
/// Scraping stops when the graph was not asked for this long.
pub const IDLE_AFTER: Duration = Duration::from_secs(60);
/// Series kept per proxy (a proxy with more has its others left out).
const MAX_SERIES: usize = 20_000;
/// A proxy's metrics page larger than this is not read.
const MAX_BODY: usize = 16 << 20;
const TIMEOUT: Duration = Duration::from_secs(2);
/// A proxy's recent requests larger than this are not read (they are
/// bounded lists: a few kilobytes).
const MAX_RECENT_BODY: u64 = 1 << 20;
/// Proxies scraped at once (a large mesh is scraped in turns).
const CONCURRENT: usize = 64;

/// A proxy's Prometheus endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The proxy (`<pod>.<namespace>`).
    pub proxy: String,
    /// `http://<address>:15090/stats/prometheus`.
    pub url: String,
}

impl Target {
    /// Where the same proxy serves its recent notable requests.
    fn recent_url(&self) -> String {
        match self.url.strip_suffix("/stats/prometheus") {
            Some(base) => format!("{base}/stats/recent"),
            None => self.url.clone(),
        }
    }
}

#[derive(Default)]
struct Proxy {
    url: String,
    scrapes: VecDeque<Scrape>,
    /// Its last answer for its recent notable requests.
    recent: Option<ProxyRecent>,
    /// Why the last scrape failed, if it did.
    error: Option<String>,
}

/// The scraped proxies, shared by the scraping task and the API.
pub struct Scraper {
    proxies: Mutex<HashMap<String, Proxy>>,
    viewed: Mutex<Option<Instant>>,
    wake: Arc<Notify>,
    client: reqwest::Client,
    /// Where the metrics come from instead of the proxies, if configured
    /// (the recent requests still come from the proxies: Prometheus has none).
    prometheus: Option<Prometheus>,
}

/// The key of the Prometheus's own failure in the errors.
const PROMETHEUS: &str = "prometheus";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Scraper {
    /// Starts scraping the proxies `targets` names (asked before each round)
    /// while the graph is looked at; the task ends when the scraper is dropped.
    pub fn start(
        targets: impl Fn() -> Vec<Target> + Send + 'static,
        prometheus: Option<Prometheus>,
    ) -> Arc<Scraper> {
        let scraper = Arc::new(Scraper {
            proxies: Mutex::default(),
            viewed: Mutex::default(),
            wake: Arc::new(Notify::new()),
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(TIMEOUT)
                .build()
                .unwrap_or_default(),
            prometheus,
        });
        tokio::spawn(run(Arc::downgrade(&scraper), scraper.wake.clone(), targets));
        scraper
    }

    /// Someone looks: scrape (at once, if idle) for the next [`IDLE_AFTER`].
    pub fn viewed(&self) {
        let was_idle = lock(&self.viewed).replace(Instant::now()).is_none();
        if was_idle {
            self.wake.notify_one();
        }
    }

    fn active(&self) -> bool {
        let mut viewed = lock(&self.viewed);
        if viewed.is_some_and(|at| at.elapsed() > IDLE_AFTER) {
            *viewed = None;
        }
        viewed.is_some()
    }

    /// The graph over each proxy's kept scrapes.
    pub fn graph(&self) -> Graph {
        super::build(windows(&lock(&self.proxies)))
    }

    /// The failed requests for `host` over each proxy's kept scrapes.
    pub fn failures(&self, host: &str) -> Vec<Failures> {
        super::failures(windows(&lock(&self.proxies)), host)
    }

    /// The recent errors and slowest requests for `host`, from each
    /// proxy's last answer.
    pub fn recent(&self, host: &str) -> ServiceRecent {
        let proxies = lock(&self.proxies);
        recent::for_service(proxies.values().filter_map(|p| p.recent.as_ref()), host)
    }

    /// Proxies whose last scrape failed, with why.
    pub fn errors(&self) -> Vec<(String, String)> {
        let mut out: Vec<_> = lock(&self.proxies)
            .iter()
            .filter_map(|(id, p)| Some((id.clone(), p.error.clone()?)))
            .collect();
        out.sort();
        out
    }

    async fn scrape(&self, target: &Target) -> Result<Scrape, String> {
        let mut resp = self
            .client
            .get(&target.url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("{}: {e}", target.url))?;
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("{}: {e}", target.url))?
        {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(format!("{}: more than {MAX_BODY} bytes", target.url));
            }
            body.extend_from_slice(&chunk);
        }
        let at = Instant::now();
        let text = String::from_utf8_lossy(&body);
        let (scrape, dropped) = Scrape::read(&text, at, MAX_SERIES);
        if dropped > 0 {
            tracing::warn!(proxy = %target.proxy, dropped, "the proxy has more series than the graph keeps");
        }
        Ok(scrape)
    }

    /// A proxy's recent notable requests; `None` when it cannot say (an
    /// older proxy, or one that did not answer: its metrics tell why).
    async fn fetch_recent(&self, target: &Target) -> Option<ProxyRecent> {
        let resp = self
            .client
            .get(target.recent_url())
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .ok()?;
        if resp.content_length().is_some_and(|n| n > MAX_RECENT_BODY) {
            return None;
        }
        let body = resp.bytes().await.ok()?;
        if body.len() as u64 > MAX_RECENT_BODY {
            return None;
        }
        serde_json::from_slice(&body)
            .inspect_err(|e| tracing::debug!(proxy = %target.proxy, error = %e, "unreadable recent requests"))
            .ok()
    }

    /// Where the metrics come from: the Prometheus's URL, or `None`: the
    /// proxies themselves.
    pub fn prometheus(&self) -> Option<&str> {
        self.prometheus.as_ref().map(Prometheus::url)
    }

    /// One round from the Prometheus: each of its targets' series now and
    /// a window ago; each proxy asked for its recent requests.
    async fn round_from(&self, prometheus: &Prometheus, targets: Vec<Target>) {
        let span = INTERVAL * (KEPT as u32 - 1);
        let permits = tokio::sync::Semaphore::new(CONCURRENT);
        let (metrics, recents) = tokio::join!(
            prometheus.targets(&self.client, span),
            futures::future::join_all(targets.iter().map(|t| async {
                let _permit = permits.acquire().await;
                self.fetch_recent(t).await
            }))
        );
        let mut proxies = lock(&self.proxies);
        proxies.clear();
        match metrics {
            Ok(series) => {
                for t in series {
                    let p = proxies.entry(format!("{PROMETHEUS}:{}", t.id)).or_default();
                    p.scrapes.extend(t.older);
                    p.scrapes.push_back(t.newer);
                }
            }
            Err(e) => proxies.entry(PROMETHEUS.into()).or_default().error = Some(e),
        }
        for (t, recent) in targets.into_iter().zip(recents) {
            proxies.entry(t.proxy).or_default().recent = recent;
        }
    }

    /// One round: every target scraped, [`CONCURRENT`] at a time; proxies
    /// no longer targets forgotten.
    async fn round(&self, targets: Vec<Target>) {
        if let Some(p) = &self.prometheus {
            return self.round_from(p, targets).await;
        }
        let permits = tokio::sync::Semaphore::new(CONCURRENT);
        let results = futures::future::join_all(targets.iter().map(|t| async {
            let _permit = permits.acquire().await;
            let (scrape, recent) = tokio::join!(self.scrape(t), self.fetch_recent(t));
            scrape.map(|s| (s, recent))
        }))
        .await;
        let mut proxies = lock(&self.proxies);
        proxies.retain(|id, _| targets.iter().any(|t| &t.proxy == id));
        for (target, result) in targets.into_iter().zip(results) {
            let p = proxies.entry(target.proxy).or_default();
            if p.url != target.url {
                // Another address: another process, whose counters are not comparable.
                p.scrapes.clear();
                p.url = target.url;
            }
            match result {
                Ok((scrape, recent)) => {
                    if p.scrapes.len() == KEPT {
                        p.scrapes.pop_front();
                    }
                    p.scrapes.push_back(scrape);
                    p.recent = recent;
                    p.error = None;
                }
                Err(e) => {
                    p.recent = None;
                    p.error = Some(e);
                }
            }
        }
    }
}

fn windows(proxies: &HashMap<String, Proxy>) -> impl Iterator<Item = Window<'_>> {
    proxies.values().filter_map(|p| {
        let newer = p.scrapes.back()?;
        let older = p.scrapes.front().filter(|o| o.at < newer.at);
        Some(Window { older, newer })
    })
}

async fn run(
    scraper: Weak<Scraper>,
    wake: Arc<Notify>,
    targets: impl Fn() -> Vec<Target> + Send + 'static,
) {
    loop {
        let Some(s) = scraper.upgrade() else { return };
        if !s.active() {
            // Nobody looks: nothing is scraped, and nothing kept.
            lock(&s.proxies).clear();
            drop(s);
            // Woken by a view; the timeout only lets a dropped scraper end the task.
            let _ = tokio::time::timeout(IDLE_AFTER, wake.notified()).await;
            continue;
        }
        let started = tokio::time::Instant::now();
        s.round(targets()).await;
        drop(s);
        tokio::time::sleep_until(started + INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A proxy's stats endpoint whose counter grows by 10 at every scrape.
    async fn proxy() -> (String, Arc<AtomicU64>) {
        let scrapes = Arc::new(AtomicU64::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counted = scrapes.clone();
        let app = axum::Router::new().route(
            "/stats/prometheus",
            axum::routing::get(move || {
                let n = counted.fetch_add(1, Ordering::SeqCst) * 10;
                async move {
                    format!(
                        "# TYPE istio_requests_total counter\nistio_requests_total{{reporter=\"destination\",source_workload=\"a\",source_workload_namespace=\"default\",destination_workload=\"b\",destination_workload_namespace=\"default\",destination_service=\"b.default.svc.cluster.local\",destination_service_name=\"b\",destination_service_namespace=\"default\",request_protocol=\"http\",response_code=\"200\",response_flags=\"-\",connection_security_policy=\"mutual_tls\"}} {n}\n"
                    )
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}/stats/prometheus"), scrapes)
    }

    #[tokio::test]
    async fn proxies_are_scraped_only_while_someone_looks() {
        let (url, scrapes) = proxy().await;
        // Nothing listens there (the port of a listener just closed).
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead = format!("http://{}/stats/prometheus", closed.local_addr().unwrap());
        drop(closed);
        let targets = vec![
            Target {
                proxy: "b-1.default".into(),
                url,
            },
            Target {
                proxy: "gone.default".into(),
                url: dead,
            },
        ];
        let scraper = Scraper::start(move || targets.clone(), None);
        tokio::time::sleep(INTERVAL * 2).await;
        assert_eq!(
            scrapes.load(Ordering::SeqCst),
            0,
            "scraped with nobody looking"
        );
        scraper.viewed();
        // Two scrapes make a rate: 10 requests per interval.
        let edge = loop {
            let g = scraper.graph();
            if let Some(e) = g
                .edges
                .iter()
                .find(|e| e.source == "workload:default/a" && e.rps > 0.0)
            {
                break e.clone();
            }
            assert!(
                scrapes.load(Ordering::SeqCst) < 10,
                "no rate after 10 scrapes: {g:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(edge.mtls, crate::graph::Mtls::MutualTls);
        let errors = scraper.errors();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, "gone.default");
    }
}
