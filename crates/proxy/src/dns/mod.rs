//! The DNS proxy (Istio's `ISTIO_META_DNS_CAPTURE`): capture sends the
//! pod's DNS queries (UDP and TCP port 53) here. Mesh host names are
//! answered from the config ([`table`]); everything else is forwarded to
//! the resolvers of `/etc/resolv.conf`, whose answers are cached for as
//! long as their TTLs say.

mod table;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use hickory_proto::op::{Header, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};
use hickory_resolver::TokioResolver;
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_server::ServerFuture;
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use tokio::net::{TcpListener, UdpSocket};

use crate::config::ConfigStore;
pub use table::{NameTable, allocate};

/// The TTL of answers for mesh hosts (Istio's DNS proxy uses 30 s).
const MESH_TTL: u32 = 30;
/// How long a TCP client may stay idle.
const TCP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("DNS proxy: cannot listen on {addr} ({proto}): {source}")]
    Bind {
        addr: SocketAddr,
        proto: &'static str,
        source: std::io::Error,
    },
    #[error("DNS proxy: cannot read the upstream resolvers from /etc/resolv.conf: {0}")]
    Upstream(String),
}

/// Binds UDP and TCP on `addr` (errors are the caller's: a proxy asked to
/// answer DNS does not start without it) and returns the server to run.
pub async fn bind(
    addr: SocketAddr,
    store: Arc<ConfigStore>,
    namespace: String,
) -> Result<impl std::future::Future<Output = ()>, DnsError> {
    let (config, opts) = hickory_resolver::system_conf::read_system_conf()
        .map_err(|e| DnsError::Upstream(e.to_string()))?;
    let upstream = TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
        .with_options(opts)
        .build();
    let udp = UdpSocket::bind(addr)
        .await
        .map_err(|source| DnsError::Bind {
            addr,
            proto: "udp",
            source,
        })?;
    let tcp = TcpListener::bind(addr)
        .await
        .map_err(|source| DnsError::Bind {
            addr,
            proto: "tcp",
            source,
        })?;
    let handler = Handler {
        store,
        namespace,
        table: ArcSwapOption::empty(),
        upstream,
    };
    let mut server = ServerFuture::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, TCP_TIMEOUT);
    tracing::info!(address = %addr, "DNS proxy listening (udp, tcp)");
    // Capture sends IPv6 queries to the IPv6 loopback: answer there too
    // where the kernel has IPv6 (best effort: IPv4 is what must work).
    if addr.ip() == IpAddr::from([127, 0, 0, 1])
        && std::path::Path::new("/proc/net/if_inet6").exists()
    {
        let v6 = SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), addr.port());
        match (UdpSocket::bind(v6).await, TcpListener::bind(v6).await) {
            (Ok(udp), Ok(tcp)) => {
                server.register_socket(udp);
                server.register_listener(tcp, TCP_TIMEOUT);
                tracing::info!(address = %v6, "DNS proxy listening (udp, tcp)");
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(address = %v6, error = %e, "DNS proxy: no IPv6 listener; IPv6 queries are not answered");
            }
        }
    }
    Ok(async move {
        if let Err(e) = server.block_until_done().await {
            tracing::warn!(error = %e, "DNS proxy stopped");
        }
    })
}

/// A name table and the snapshot's host list it was built from.
type BuiltTable = (
    Arc<std::collections::BTreeMap<String, Vec<IpAddr>>>,
    NameTable,
);

struct Handler {
    store: Arc<ConfigStore>,
    namespace: String,
    /// The table of the hosts it was built from (rebuilt when they change).
    table: ArcSwapOption<BuiltTable>,
    upstream: TokioResolver,
}

impl Handler {
    fn mesh_answer(&self, name: &str) -> Option<Vec<IpAddr>> {
        let snapshot = self.store.current()?;
        // Discovering on demand: every host of the directory, called or not.
        let hosts = match self.store.on_demand() {
            Some(o) => o.directory().hosts.clone(),
            None => snapshot.hosts.clone(),
        };
        let current = self.table.load_full();
        let table = match current {
            Some(t) if Arc::ptr_eq(&t.0, &hosts) => t,
            _ => {
                let built = Arc::new((hosts.clone(), NameTable::build(&hosts, &self.namespace)));
                self.table.store(Some(built.clone()));
                built
            }
        };
        table.1.lookup(name).map(<[IpAddr]>::to_vec)
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let mut header = Header::response_from_request(request.header());
        header.set_recursion_available(true);
        let info = match request.request_info() {
            Ok(info)
                if request.message_type() == MessageType::Query
                    && request.op_code() == OpCode::Query =>
            {
                info
            }
            _ => {
                header.set_response_code(ResponseCode::NotImp);
                return send(&mut response, builder.build_no_records(header), header).await;
            }
        };
        let name = info.query.name().clone();
        let qtype = info.query.query_type();
        let name_text = name.to_string();
        let records: Vec<Record> = if let Some(ips) = self.mesh_answer(&name_text) {
            // A mesh host: answered here, and never forwarded (an AAAA for a
            // host with IPv4 VIPs only is an empty answer, not a leak).
            header.set_authoritative(true);
            ips.into_iter()
                .filter_map(|ip| match (ip, qtype) {
                    (IpAddr::V4(v4), RecordType::A) => Some(RData::A(A(v4))),
                    (IpAddr::V6(v6), RecordType::AAAA) => Some(RData::AAAA(AAAA(v6))),
                    _ => None,
                })
                .map(|rdata| Record::from_rdata(name.clone().into(), MESH_TTL, rdata))
                .collect()
        } else {
            match self.upstream.lookup(name.clone(), qtype).await {
                Ok(lookup) => {
                    // The TTL left in the cache, not the one first received.
                    let left = lookup
                        .valid_until()
                        .saturating_duration_since(std::time::Instant::now())
                        .as_secs();
                    let ttl = u32::try_from(left).unwrap_or(u32::MAX);
                    lookup
                        .records()
                        .iter()
                        .cloned()
                        .map(|mut r| {
                            r.set_ttl(r.ttl().min(ttl));
                            r
                        })
                        .collect()
                }
                Err(e) if e.is_no_records_found() => {
                    let code = match e.proto().map(|p| p.kind()) {
                        Some(hickory_proto::ProtoErrorKind::NoRecordsFound {
                            response_code: ResponseCode::NXDomain,
                            ..
                        }) => ResponseCode::NXDomain,
                        _ => ResponseCode::NoError,
                    };
                    header.set_response_code(code);
                    Vec::new()
                }
                Err(e) => {
                    tracing::info!(name = %name_text, ?qtype, error = %e, "DNS forward to the upstream resolvers failed; SERVFAIL");
                    header.set_response_code(ResponseCode::ServFail);
                    Vec::new()
                }
            }
        };
        let message = builder.build(header, records.iter(), &[], &[], &[]);
        send(&mut response, message, header).await
    }
}

async fn send<'q, 'a, R: ResponseHandler>(
    response: &mut R,
    message: hickory_server::authority::MessageResponse<
        'q,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    header: Header,
) -> ResponseInfo {
    match response.send_response(message).await {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(error = %e, "DNS response not sent");
            let mut h = header;
            h.set_response_code(ResponseCode::ServFail);
            h.into()
        }
    }
}
