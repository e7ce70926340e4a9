//! A small authoritative DNS server on loopback (hickory-server, UDP and TCP on one port) whose
//! answers can be changed while it runs: the demo uses it as its "Kubernetes DNS", publishing
//! the nodes like a headless service, and the tests use it to scale, fail and break DNS at will.
//!
//! Per name and type it answers records (with a TTL), SERVFAIL, REFUSED, NXDOMAIN, or nothing
//! at all (to make resolvers time out). Names it was never told about are NXDOMAIN; a known name
//! asked for another type gets an empty NOERROR answer (NODATA), as real servers do.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_server::proto::op::{Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, SRV};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;

/// What the server says for one name and record type.
#[derive(Debug, Clone)]
pub enum Answer {
    Records {
        ttl: u32,
        data: Vec<RData>,
    },
    ServFail,
    Refused,
    NxDomain,
    /// No answer at all: the resolver times out.
    Silent,
}

/// One SRV record: where a service instance is (RFC 2782).
#[derive(Debug, Clone)]
pub struct SrvTarget {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

#[derive(Default)]
struct Zone {
    answers: Mutex<HashMap<(LowerName, RecordType), Answer>>,
    queries: AtomicU64,
    tcp_queries: AtomicU64,
}

impl Zone {
    fn answer(&self, name: &LowerName, rtype: RecordType) -> Answer {
        let answers = self.answers.lock().expect("zone lock");
        if let Some(answer) = answers.get(&(name.clone(), rtype)) {
            return answer.clone();
        }
        if answers.keys().any(|(n, _)| n == name) {
            Answer::Records {
                ttl: 30,
                data: Vec::new(),
            }
        } else {
            Answer::NxDomain
        }
    }
}

/// A running server; answers change through [`DnsServer::set`] and friends.
#[derive(Clone)]
pub struct DnsServer {
    pub addr: SocketAddr,
    zone: Arc<Zone>,
}

struct Handler(Arc<Zone>);

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: hickory_server::net::runtime::Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        self.0.queries.fetch_add(1, Ordering::Relaxed);
        if request.protocol() == hickory_server::net::xfer::Protocol::Tcp {
            self.0.tcp_queries.fetch_add(1, Ordering::Relaxed);
        }
        let builder = MessageResponseBuilder::from_message_request(request);
        let Ok(info) = request.request_info() else {
            let msg = builder.error_msg(&request.metadata, ResponseCode::FormErr);
            return response_handle
                .send_response(msg)
                .await
                .unwrap_or_else(|_| failed(request));
        };
        let name = info.query.name().clone();
        let answer = self.0.answer(&name, info.query.query_type());
        let code = match answer {
            Answer::Silent => return failed(request),
            Answer::ServFail => ResponseCode::ServFail,
            Answer::Refused => ResponseCode::Refused,
            Answer::NxDomain => ResponseCode::NXDomain,
            Answer::Records { ttl, data } => {
                let owner = Name::from(name);
                let records: Vec<Record> = data
                    .into_iter()
                    .map(|rdata| Record::from_rdata(owner.clone(), ttl, rdata))
                    .collect();
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.authoritative = true;
                let msg = builder.build(metadata, records.iter(), [], [], []);
                return response_handle
                    .send_response(msg)
                    .await
                    .unwrap_or_else(|_| failed(request));
            }
        };
        let msg = builder.error_msg(&request.metadata, code);
        response_handle
            .send_response(msg)
            .await
            .unwrap_or_else(|_| failed(request))
    }
}

/// Queries always arrive fully qualified; names given with or without the final dot mean the same.
fn fqdn(name: &str) -> LowerName {
    let mut name = Name::from_str(name).expect("a valid DNS name");
    name.set_fqdn(true);
    LowerName::from(name)
}

/// What to report for a query that got no response on the wire.
fn failed(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = ResponseCode::ServFail;
    ResponseInfo::from(hickory_server::proto::op::Header {
        metadata,
        counts: Default::default(),
    })
}

impl DnsServer {
    /// Binds UDP and TCP on `addr` (port 0 picks one free for both).
    pub async fn start(addr: SocketAddr) -> io::Result<DnsServer> {
        // UDP first on the requested port, then TCP on the same port; retry if TCP's is taken.
        for _ in 0..20 {
            let udp = tokio::net::UdpSocket::bind(addr).await?;
            let bound = udp.local_addr()?;
            let Ok(tcp) = tokio::net::TcpListener::bind(bound).await else {
                if addr.port() != 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("TCP {bound} in use"),
                    ));
                }
                continue;
            };
            let zone = Arc::new(Zone::default());
            let mut server = Server::new(Handler(zone.clone()));
            server.register_socket(udp);
            server.register_listener(tcp, Duration::from_secs(5), 64 * 1024);
            tokio::spawn(async move {
                let _ = server.block_until_done().await;
            });
            return Ok(DnsServer { addr: bound, zone });
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "no port free for both UDP and TCP",
        ))
    }

    pub fn set(&self, name: &str, rtype: RecordType, answer: Answer) {
        self.zone
            .answers
            .lock()
            .expect("zone lock")
            .insert((fqdn(name), rtype), answer);
    }

    /// A and AAAA records for `name` from `ips` (a headless service's answer).
    pub fn set_ips(&self, name: &str, ips: &[IpAddr], ttl: u32) {
        let (v4, v6): (Vec<IpAddr>, Vec<IpAddr>) = ips.iter().partition(|ip| ip.is_ipv4());
        let rdata = |ips: Vec<IpAddr>| -> Vec<RData> {
            ips.into_iter()
                .map(|ip| match ip {
                    IpAddr::V4(v4) => RData::A(A(v4)),
                    IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
                })
                .collect()
        };
        self.set(
            name,
            RecordType::A,
            Answer::Records {
                ttl,
                data: rdata(v4),
            },
        );
        self.set(
            name,
            RecordType::AAAA,
            Answer::Records {
                ttl,
                data: rdata(v6),
            },
        );
    }

    /// SRV records for `name`.
    pub fn set_srv(&self, name: &str, targets: &[SrvTarget], ttl: u32) {
        let data = targets
            .iter()
            .map(|t| {
                let target = Name::from(fqdn(&t.target));
                RData::SRV(SRV::new(t.priority, t.weight, t.port, target))
            })
            .collect();
        self.set(name, RecordType::SRV, Answer::Records { ttl, data });
    }

    /// Every record type of `name` answers the same failure (or silence).
    pub fn fail(&self, name: &str, answer: Answer) {
        for rtype in [RecordType::A, RecordType::AAAA, RecordType::SRV] {
            self.set(name, rtype, answer.clone());
        }
    }

    /// Forgets `name`: it is NXDOMAIN from now on.
    pub fn remove(&self, name: &str) {
        let name = fqdn(name);
        self.zone
            .answers
            .lock()
            .expect("zone lock")
            .retain(|(n, _), _| *n != name);
    }

    /// Queries answered (or ignored) so far.
    pub fn queries(&self) -> u64 {
        self.zone.queries.load(Ordering::Relaxed)
    }

    /// Of those, the ones that came over TCP (a resolver retrying a truncated UDP answer).
    pub fn tcp_queries(&self) -> u64 {
        self.zone.tcp_queries.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackendSource, DnsConfig, IpFamily};
    use crate::discovery::{DnsResolver, Outcome};

    fn resolver(server: &DnsServer) -> DnsResolver {
        DnsResolver::new(&DnsConfig {
            nameservers: Some(vec![server.addr]),
            timeout: Duration::from_secs(1),
            attempts: 1,
            refresh_min: Duration::from_secs(1),
            refresh_max: Duration::from_secs(1),
            jitter: 0.0,
            empty_hold: Duration::from_secs(1),
            family: IpFamily::Both,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn names_match_with_or_without_the_final_dot() {
        let server = DnsServer::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        server.set_ips("pod-0.svc.test", &["127.0.0.9".parse().unwrap()], 5);
        server.set_srv(
            "_http._tcp.svc.test",
            &[SrvTarget {
                priority: 0,
                weight: 1,
                port: 8080,
                target: "pod-0.svc.test".into(),
            }],
            5,
        );
        let r = resolver(&server);
        for name in ["_http._tcp.svc.test", "_http._tcp.svc.test."] {
            let outcome = r.resolve(&BackendSource::Srv { name: name.into() }).await;
            let Outcome::Found { members, .. } = outcome else {
                panic!("{name}: {outcome:?}")
            };
            assert_eq!(members[0].id, "pod-0.svc.test:8080");
            assert_eq!(members[0].address, "127.0.0.9:8080");
        }
    }
}
