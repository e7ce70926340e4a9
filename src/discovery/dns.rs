//! DNS lookups for backend discovery (hickory-resolver): A/AAAA for a headless service's name,
//! SRV for service records, each answer classified as found / no records / failed so the
//! refresh loop can apply its policy. The resolver's cache is off: the refresh loop decides
//! when to ask again, from the records' TTL.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use hickory_resolver::TokioResolver;

use crate::backends::Member;
use crate::config::{BackendSource, DnsConfig, IpFamily};

/// The classified result of looking up one site's backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Records found: the members, and the smallest TTL among the records used.
    Found { members: Vec<Member>, ttl: Duration },
    /// The name does not exist (NXDOMAIN) or has no records of the type (empty answer).
    NoRecords { nxdomain: bool },
    /// The lookup failed: nothing is known about the set.
    Failed { kind: FailKind, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailKind {
    ServFail,
    Refused,
    Timeout,
    Error,
}

impl Outcome {
    /// The metrics label of this outcome.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Found { .. } => "ok",
            Outcome::NoRecords { nxdomain: true } => "nxdomain",
            Outcome::NoRecords { nxdomain: false } => "empty",
            Outcome::Failed { kind, .. } => match kind {
                FailKind::ServFail => "servfail",
                FailKind::Refused => "refused",
                FailKind::Timeout => "timeout",
                FailKind::Error => "error",
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot set up the DNS resolver: {0}")]
pub struct ResolverError(String);

pub struct DnsResolver {
    inner: TokioResolver,
    family: IpFamily,
}

/// One lookup's records, or how it failed.
enum Answer {
    Records(Vec<Record>),
    NoRecords { nxdomain: bool },
    Failed(FailKind, String),
}

impl DnsResolver {
    pub fn new(config: &DnsConfig) -> Result<DnsResolver, ResolverError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = match &config.nameservers {
            Some(servers) => {
                let servers = servers
                    .iter()
                    .map(|addr| {
                        // UDP first, TCP when the answer is truncated or UDP fails.
                        let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                        for conn in &mut ns.connections {
                            conn.port = addr.port();
                        }
                        ns
                    })
                    .collect();
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(servers),
                    provider,
                )
            }
            None => TokioResolver::builder(provider).map_err(|e| ResolverError(e.to_string()))?,
        };
        let opts = builder.options_mut();
        opts.timeout = config.timeout;
        opts.attempts = config.attempts;
        opts.cache_size = 0;
        let inner = builder.build().map_err(|e| ResolverError(e.to_string()))?;
        Ok(DnsResolver {
            inner,
            family: config.family,
        })
    }

    pub async fn resolve(&self, source: &BackendSource) -> Outcome {
        match source {
            BackendSource::Static(list) => Outcome::Found {
                members: crate::backends::static_members(list),
                ttl: Duration::MAX,
            },
            BackendSource::Dns { name, port } => self.resolve_addresses(name, *port).await,
            BackendSource::Srv { name } => self.resolve_srv(name).await,
        }
    }

    async fn lookup(&self, name: &str, rtype: RecordType) -> Answer {
        match self.inner.lookup(name, rtype).await {
            Ok(lookup) => {
                let records: Vec<Record> = lookup
                    .answers()
                    .iter()
                    .filter(|r| r.record_type() == rtype)
                    .cloned()
                    .collect();
                if records.is_empty() {
                    Answer::NoRecords { nxdomain: false }
                } else {
                    Answer::Records(records)
                }
            }
            Err(NetError::Dns(DnsError::NoRecordsFound(no))) => Answer::NoRecords {
                nxdomain: no.response_code == ResponseCode::NXDomain,
            },
            Err(NetError::Dns(DnsError::ResponseCode(code))) => match code {
                ResponseCode::Refused => {
                    Answer::Failed(FailKind::Refused, format!("{name}: refused"))
                }
                ResponseCode::NXDomain => Answer::NoRecords { nxdomain: true },
                other => Answer::Failed(FailKind::ServFail, format!("{name}: {other}")),
            },
            Err(NetError::Timeout) => {
                Answer::Failed(FailKind::Timeout, format!("{name}: timed out"))
            }
            Err(e) => Answer::Failed(FailKind::Error, format!("{name}: {e}")),
        }
    }

    /// The addresses of `name` (A and/or AAAA, by the configured family).
    async fn addresses(&self, name: &str) -> Result<(Vec<IpAddr>, Option<u32>), Outcome> {
        let types: &[RecordType] = match self.family {
            IpFamily::Both => &[RecordType::A, RecordType::AAAA],
            IpFamily::V4 => &[RecordType::A],
            IpFamily::V6 => &[RecordType::AAAA],
        };
        let (mut ips, mut ttl, mut nxdomain) = (Vec::new(), None::<u32>, false);
        for rtype in types {
            match self.lookup(name, *rtype).await {
                Answer::Records(records) => {
                    for r in records {
                        ttl = Some(ttl.map_or(r.ttl, |t| t.min(r.ttl)));
                        match r.data {
                            RData::A(a) => ips.push(IpAddr::V4(a.0)),
                            RData::AAAA(aaaa) => ips.push(IpAddr::V6(aaaa.0)),
                            _ => {}
                        }
                    }
                }
                Answer::NoRecords { nxdomain: nx } => nxdomain |= nx,
                // One family failing means the set is unknown, not smaller: keep what we had.
                Answer::Failed(kind, reason) => return Err(Outcome::Failed { kind, reason }),
            }
        }
        if ips.is_empty() {
            return Err(Outcome::NoRecords { nxdomain });
        }
        ips.sort();
        ips.dedup();
        Ok((ips, ttl))
    }

    async fn resolve_addresses(&self, name: &str, port: u16) -> Outcome {
        match self.addresses(name).await {
            Err(outcome) => outcome,
            Ok((ips, ttl)) => Outcome::Found {
                members: ips
                    .into_iter()
                    .map(|ip| {
                        let addr = SocketAddr::new(ip, port).to_string();
                        Member {
                            id: addr.clone(),
                            address: addr,
                            priority: 0,
                            weight: 1,
                        }
                    })
                    .collect(),
                ttl: Duration::from_secs(u64::from(ttl.unwrap_or(0))),
            },
        }
    }

    async fn resolve_srv(&self, name: &str) -> Outcome {
        let records = match self.lookup(name, RecordType::SRV).await {
            Answer::Records(records) => records,
            Answer::NoRecords { nxdomain } => return Outcome::NoRecords { nxdomain },
            Answer::Failed(kind, reason) => return Outcome::Failed { kind, reason },
        };
        let mut ttl = records.iter().map(|r| r.ttl).min().unwrap_or(0);
        // One member per target:port; the same target listed twice keeps its best priority.
        let mut targets: BTreeMap<(String, u16), (u16, u16)> = BTreeMap::new();
        for r in &records {
            if let RData::SRV(srv) = &r.data {
                let target = srv.target.to_utf8().trim_end_matches('.').to_string();
                let entry = targets
                    .entry((target, srv.port))
                    .or_insert((srv.priority, srv.weight));
                if srv.priority < entry.0 {
                    *entry = (srv.priority, srv.weight);
                }
            }
        }
        let mut members = Vec::new();
        for ((target, port), (priority, weight)) in targets {
            match self.addresses(&format!("{target}.")).await {
                Ok((ips, addr_ttl)) => {
                    ttl = ttl.min(addr_ttl.unwrap_or(ttl));
                    members.push(Member {
                        id: format!("{target}:{port}"),
                        address: SocketAddr::new(ips[0], port).to_string(),
                        priority,
                        weight,
                    });
                }
                // A target without addresses is a pod that is going away: leave it out.
                Err(Outcome::NoRecords { .. }) => {}
                Err(failed) => return failed,
            }
        }
        if members.is_empty() {
            return Outcome::NoRecords { nxdomain: false };
        }
        Outcome::Found {
            members,
            ttl: Duration::from_secs(u64::from(ttl)),
        }
    }
}
