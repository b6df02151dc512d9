//! The control plane's HTTP API, as the CLI uses it.

use anyhow::{Context, Result, bail};
use serde_json::Value;

pub struct Client {
    base: String,
    /// The API's bearer token, sent on every request when known.
    token: Option<String>,
    http: reqwest::Client,
    /// On a cluster: the API server, whose service proxy (`base`) reaches
    /// the control plane with the user's credentials.
    kube: Option<kube::Client>,
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Client {
        // The control plane is local; a configured HTTP proxy must not be used for it.
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap_or_default();
        Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
            kube: None,
        }
    }

    /// The control plane on a cluster, through the API server's proxy at `path`.
    pub fn kube(client: kube::Client, path: &str) -> Client {
        Client {
            kube: Some(client),
            ..Client::new(path, None)
        }
    }

    /// The API's base URL (on a cluster: the API server's proxy path).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Whether the control plane is reached through a Kubernetes API server.
    pub fn is_kube(&self) -> bool {
        self.kube.is_some()
    }

    async fn get_kube(&self, client: &kube::Client, path: &str) -> Result<Value> {
        let uri = format!("{}{path}", self.base);
        let req = http::Request::get(&uri)
            .header(http::header::ACCEPT, "application/json")
            .body(Vec::new())?;
        let text = client.request_text(req).await.with_context(|| {
            format!(
                "cannot reach the control plane through the Kubernetes API server's proxy {}",
                self.base
            )
        })?;
        serde_json::from_str(&text).context("reading the control plane's answer")
    }

    fn authorized(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        if let Some(client) = &self.kube {
            return self.get_kube(client, path).await;
        }
        let resp = self
            .authorized(self.http.get(format!("{}{path}", self.base)))
            .send()
            .await
            .with_context(|| self.unreachable())?;
        Self::body(resp).await
    }

    pub async fn post(&self, path: &str, body: String) -> Result<Value> {
        if self.kube.is_some() {
            bail!(
                "on Kubernetes the mesh's config is the cluster's: change it with `kubectl apply`/`kubectl delete`"
            );
        }
        let resp = self
            .authorized(self.http.post(format!("{}{path}", self.base)))
            .header(reqwest::header::CONTENT_TYPE, "application/yaml")
            .body(body)
            .send()
            .await
            .with_context(|| self.unreachable())?;
        Self::body(resp).await
    }

    fn unreachable(&self) -> String {
        format!(
            "cannot reach the control plane at {} (is that `trellis up` still running? see `trellis context`)",
            self.base
        )
    }

    async fn body(resp: reqwest::Response) -> Result<Value> {
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            bail!(
                "the control plane refused the API token (or none was sent): \
                 pass --token or TRELLIS_TOKEN, or use the mesh `trellis up` recorded"
            );
        }
        let value: Value = resp
            .json()
            .await
            .context("reading the control plane's answer")?;
        if !status.is_success() {
            let msg = value
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("unknown error");
            bail!("{msg}");
        }
        Ok(value)
    }
}

/// Percent-encodes a query parameter value.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
