//! Real servers on 127.0.0.1, for tests. Every server binds port 0, so tests
//! running in parallel never fight over ports.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::Workload;
use crate::client::Client;
use crate::server::{Handler, Server};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

pub struct TestServer {
    pub addrs: Vec<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
}

impl TestServer {
    pub async fn start<H: Handler>(handler: H) -> TestServer {
        TestServer::start_on(handler, 1).await
    }

    pub async fn start_on<H: Handler>(handler: H, ports: usize) -> TestServer {
        let server = Server::bind(LOCALHOST, &vec![0; ports])
            .await
            .expect("bind 127.0.0.1:0");
        let addrs = server.local_addrs();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(server.serve(Arc::new(handler), async move {
            let _ = stopped.await;
        }));
        TestServer {
            addrs,
            stop: Some(stop),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A server that accepts connections and closes them at once: a dead
/// upstream that, unlike a freed port, nobody else can start listening on.
pub struct DeadServer {
    pub url: String,
    task: JoinHandle<()>,
}

impl DeadServer {
    pub async fn start() -> DeadServer {
        let listener = TcpListener::bind((LOCALHOST, 0)).await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                drop(stream);
            }
        });
        DeadServer { url, task }
    }
}

impl Drop for DeadServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The outgoing client of a role under test: no proxy.
pub fn direct_client() -> Client {
    Client::new(None).expect("client")
}

/// The test's own client: no proxy, no redirects followed.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

pub async fn get_json(url: &str) -> (u16, Value) {
    let resp = http().get(url).send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON body"))
}

pub async fn get_text(url: &str) -> (u16, String) {
    let resp = http().get(url).send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("text body"))
}

pub fn workload(service: &str, version: &str) -> Workload {
    Workload {
        service: service.to_owned(),
        version: version.to_owned(),
        pod: format!("{service}-{version}-pod"),
        namespace: "test-ns".to_owned(),
    }
}
