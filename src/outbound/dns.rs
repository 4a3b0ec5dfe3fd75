//! DNS for guests (`hostcall_dns_query_ip`, `hostcall_dns_query_raw`) through
//! hickory's resolver: the system's name servers and `/etc/hosts`, with its
//! cache. Only names on the site's allow-list are looked up.

use std::net::IpAddr;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_resolver::proto::rr::RecordType;

use super::AllowList;

/// Longest wire-format query a guest may forward.
pub const MAX_QUERY_BYTES: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("{0} is not in the site's outbound_hosts")]
    NotAllowed(String),
    #[error("invalid DNS query: {0}")]
    BadQuery(String),
    #[error("lookup of {name} failed: {reason}")]
    Lookup { name: String, reason: String },
}

pub struct Resolver {
    inner: TokioResolver,
}

impl Resolver {
    /// The system's configuration (`/etc/resolv.conf`), or none but the
    /// hosts file where it cannot be read; `/etc/hosts` is always consulted.
    pub fn from_system() -> anyhow::Result<Resolver> {
        let mut builder = TokioResolver::builder_tokio().unwrap_or_else(|e| {
            tracing::warn!("cannot read the system's DNS configuration ({e}); guests resolve from /etc/hosts only");
            TokioResolver::builder_with_config(ResolverConfig::from_parts(None, vec![], vec![]), TokioRuntimeProvider::default())
        });
        builder.options_mut().use_hosts_file = ResolveHosts::Always;
        Ok(Resolver { inner: builder.build()? })
    }

    /// The IPv4 (or IPv6) addresses of `name`.
    pub async fn query_ip(&self, allow: &AllowList, name: &str, ipv6: bool) -> Result<Vec<IpAddr>, DnsError> {
        if !allow.permits_name(name) {
            return Err(DnsError::NotAllowed(name.to_owned()));
        }
        if let Ok(ip) = name.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            return Ok(if ip.is_ipv6() == ipv6 { vec![ip] } else { Vec::new() });
        }
        let record_type = if ipv6 { RecordType::AAAA } else { RecordType::A };
        match self.inner.lookup(name, record_type).await {
            Ok(lookup) => Ok(lookup.answers().iter().filter_map(|record| record.data.ip_addr()).collect()),
            Err(e) if e.is_no_records_found() => Ok(Vec::new()),
            Err(e) => Err(DnsError::Lookup { name: name.to_owned(), reason: e.to_string() }),
        }
    }

    /// Answers a wire-format query with a wire-format response, as a
    /// recursive resolver would: NXDOMAIN and empty answers are answers.
    pub async fn query_raw(&self, allow: &AllowList, query: &[u8]) -> Result<Vec<u8>, DnsError> {
        if query.len() > MAX_QUERY_BYTES {
            return Err(DnsError::BadQuery(format!("{} bytes, over the limit of {MAX_QUERY_BYTES}", query.len())));
        }
        let message = Message::from_vec(query).map_err(|e| DnsError::BadQuery(e.to_string()))?;
        if message.metadata.message_type != MessageType::Query || message.metadata.op_code != OpCode::Query {
            return Err(DnsError::BadQuery("not a standard query".into()));
        }
        let [question] = message.queries.as_slice() else {
            return Err(DnsError::BadQuery(format!("{} questions, expected one", message.queries.len())));
        };
        let name = question.name().to_ascii();
        if !allow.permits_name(&name) {
            return Err(DnsError::NotAllowed(name));
        }
        let mut answer = Message::response(message.metadata.id, OpCode::Query);
        answer.metadata.recursion_desired = message.metadata.recursion_desired;
        answer.metadata.recursion_available = true;
        answer.add_query(question.clone());
        match self.inner.lookup(question.name().clone(), question.query_type()).await {
            Ok(lookup) => {
                answer.add_answers(lookup.answers().iter().cloned());
            }
            Err(e) if e.is_nx_domain() => answer.metadata.response_code = ResponseCode::NXDomain,
            Err(e) if e.is_no_records_found() => {}
            Err(e) => return Err(DnsError::Lookup { name, reason: e.to_string() }),
        }
        answer.to_vec().map_err(|e| DnsError::Lookup { name, reason: e.to_string() })
    }
}
