//! Addresses learned from DNS responses seen on the wire.
//!
//! The agent sees UDP payloads of responses going to local resolvers'
//! clients, possibly cut to their first bytes. Only the mapping "this address
//! was given out for this name" matters here, so everything but A and AAAA
//! records reached from the question is ignored.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use simple_dns::rdata::RData;
use simple_dns::{Packet, PacketFlag, ResourceRecord, CLASS, OPCODE, RCODE};
use thiserror::Error;

use super::domain::normalize;

/// Longest CNAME chain followed; real chains are a few hops, and the bound
/// keeps a hostile packet's loops and long chains cheap.
const MAX_CNAME_HOPS: usize = 16;

/// An address a DNS response gave out for a name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Answer {
    /// A normalized name the address was given for (see [`parse_response`]).
    pub name: String,
    pub addr: IpAddr,
    /// Seconds the answer may be cached: the smallest TTL along the chain.
    pub ttl: u32,
}

/// Why a payload could not be read as a DNS message.
#[derive(Debug, Error)]
pub enum DnsError {
    #[error("malformed or truncated DNS message: {0}")]
    Malformed(#[from] simple_dns::SimpleDnsError),
}

/// The A and AAAA answers in a DNS response payload.
///
/// Each address reached from a question name yields an [`Answer`] for the
/// question name, which is what the client asked for and so what policies and
/// TLS server names use. When it was reached through CNAMEs, a second
/// [`Answer`] carries the record's own name (`cdn.example.net` for
/// `www.example.com CNAME cdn.example.net`), so patterns written for the CDN
/// match too; intermediate CNAME targets are not reported. Records that no
/// question's CNAME chain reaches are ignored, as a stub resolver would.
///
/// A well-formed message that carries no answers (a query, an error rcode,
/// an opcode other than QUERY) gives an empty list; errors are kept for bytes
/// that are not a DNS message, so a caller can count them.
pub fn parse_response(payload: &[u8]) -> Result<Vec<Answer>, DnsError> {
    let packet = Packet::parse(payload)?;
    if !packet.has_flags(PacketFlag::RESPONSE)
        || packet.opcode() != OPCODE::StandardQuery
        || packet.rcode() != RCODE::NoError
    {
        return Ok(Vec::new());
    }

    let records: Vec<Record> = packet.answers.iter().filter_map(Record::new).collect();
    let cnames: HashMap<&str, (&str, u32)> = records
        .iter()
        .filter_map(|r| match &r.data {
            Data::Cname(target) => Some((r.name.as_str(), (target.as_str(), r.ttl))),
            Data::Addr(_) => None,
        })
        .collect();

    let mut answers = Vec::new();
    for question in &packet.questions {
        let Ok(qname) = normalize(&question.qname.to_string()) else {
            continue;
        };
        for (owner, chain_ttl) in chain(&qname, &cnames) {
            for record in records.iter().filter(|r| r.name == owner) {
                let Data::Addr(addr) = record.data else {
                    continue;
                };
                answers.push(Answer {
                    name: qname.clone(),
                    addr,
                    ttl: chain_ttl.min(record.ttl),
                });
                if owner != qname {
                    answers.push(Answer {
                        name: owner.to_owned(),
                        addr,
                        ttl: record.ttl,
                    });
                }
            }
        }
    }
    Ok(answers)
}

/// The names reached from `qname` through CNAMEs, each with the smallest TTL
/// of the CNAMEs leading to it; stops at a loop or after [`MAX_CNAME_HOPS`].
fn chain<'a>(qname: &'a str, cnames: &HashMap<&str, (&'a str, u32)>) -> Vec<(&'a str, u32)> {
    let mut chain = vec![(qname, u32::MAX)];
    let mut current = (qname, u32::MAX);
    while chain.len() <= MAX_CNAME_HOPS {
        let Some(&(target, ttl)) = cnames.get(current.0) else {
            break;
        };
        if chain.iter().any(|(name, _)| *name == target) {
            break;
        }
        current = (target, current.1.min(ttl));
        chain.push(current);
    }
    chain
}

/// An answer-section record this module uses, with its names normalized.
struct Record {
    name: String,
    ttl: u32,
    data: Data,
}

enum Data {
    Addr(IpAddr),
    Cname(String),
}

impl Record {
    /// `None` for other types and classes, and for names that are not host
    /// names (they cannot match a policy pattern).
    fn new(rr: &ResourceRecord<'_>) -> Option<Self> {
        if rr.class != CLASS::IN {
            return None;
        }
        let data = match &rr.rdata {
            RData::A(a) => Data::Addr(IpAddr::V4(Ipv4Addr::from(a.address))),
            RData::AAAA(aaaa) => Data::Addr(IpAddr::V6(Ipv6Addr::from(aaaa.address))),
            RData::CNAME(cname) => Data::Cname(normalize(&cname.0.to_string()).ok()?),
            _ => return None,
        };
        Some(Self {
            name: normalize(&rr.name.to_string()).ok()?,
            ttl: rr.ttl,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::rdata::{A, AAAA, CNAME, TXT};
    use simple_dns::{Name, Question, QCLASS, QTYPE, TYPE};

    fn rr<'a>(name: &'a str, ttl: u32, rdata: RData<'a>) -> ResourceRecord<'a> {
        ResourceRecord::new(Name::new_unchecked(name), CLASS::IN, ttl, rdata)
    }

    fn a(addr: [u8; 4]) -> RData<'static> {
        RData::A(A::from(Ipv4Addr::from(addr)))
    }

    fn response(qname: &str, answers: Vec<ResourceRecord<'_>>) -> Vec<u8> {
        let mut packet = Packet::new_reply(7);
        packet.questions.push(Question::new(
            Name::new_unchecked(qname),
            QTYPE::TYPE(TYPE::A),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        packet.answers = answers;
        packet.build_bytes_vec_compressed().unwrap()
    }

    fn answer(name: &str, addr: &str, ttl: u32) -> Answer {
        Answer {
            name: name.into(),
            addr: addr.parse().unwrap(),
            ttl,
        }
    }

    #[test]
    fn a_record() {
        let bytes = response(
            "Example.COM",
            vec![rr("example.com", 300, a([93, 184, 216, 34]))],
        );
        assert_eq!(
            parse_response(&bytes).unwrap(),
            [answer("example.com", "93.184.216.34", 300)]
        );
    }

    #[test]
    fn aaaa_records_and_other_types_ignored() {
        let v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let v6b: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let txt = TXT::new().with_string("hello").unwrap();
        let bytes = response(
            "example.com",
            vec![
                rr("example.com", 60, RData::AAAA(AAAA::from(v6))),
                rr("example.com", 60, RData::TXT(txt)),
                rr("example.com", 30, RData::AAAA(AAAA::from(v6b))),
            ],
        );
        assert_eq!(
            parse_response(&bytes).unwrap(),
            [
                answer("example.com", "2001:db8::1", 60),
                answer("example.com", "2001:db8::2", 30)
            ]
        );
    }

    #[test]
    fn cname_chain_names_question_and_owner() {
        let bytes = response(
            "www.example.com",
            vec![
                rr(
                    "www.example.com",
                    600,
                    RData::CNAME(CNAME(Name::new_unchecked("edge.example.net"))),
                ),
                rr(
                    "edge.example.net",
                    120,
                    RData::CNAME(CNAME(Name::new_unchecked("cdn.example.net"))),
                ),
                rr("cdn.example.net", 300, a([1, 2, 3, 4])),
            ],
        );
        assert_eq!(
            parse_response(&bytes).unwrap(),
            [
                answer("www.example.com", "1.2.3.4", 120),
                answer("cdn.example.net", "1.2.3.4", 300),
            ]
        );
    }

    #[test]
    fn records_off_the_chain_ignored() {
        let bytes = response(
            "www.example.com",
            vec![
                rr("www.example.com", 60, a([1, 1, 1, 1])),
                rr("bank.example", 60, a([6, 6, 6, 6])),
            ],
        );
        assert_eq!(
            parse_response(&bytes).unwrap(),
            [answer("www.example.com", "1.1.1.1", 60)]
        );
    }

    #[test]
    fn cname_loop_terminates() {
        let cname = |to| RData::CNAME(CNAME(Name::new_unchecked(to)));
        let bytes = response(
            "a.example",
            vec![
                rr("a.example", 60, cname("b.example")),
                rr("b.example", 60, cname("a.example")),
                rr("b.example", 60, a([2, 2, 2, 2])),
            ],
        );
        assert_eq!(
            parse_response(&bytes).unwrap(),
            [
                answer("a.example", "2.2.2.2", 60),
                answer("b.example", "2.2.2.2", 60)
            ]
        );
    }

    #[test]
    fn invalid_names_skipped() {
        let bytes = response(
            "bad name.example",
            vec![rr("bad name.example", 60, a([1, 2, 3, 4]))],
        );
        assert_eq!(parse_response(&bytes).unwrap(), []);
    }

    #[test]
    fn nxdomain_is_empty() {
        let mut packet = Packet::new_reply(1);
        *packet.rcode_mut() = RCODE::NameError;
        packet.questions.push(Question::new(
            Name::new_unchecked("nope.example"),
            QTYPE::TYPE(TYPE::A),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        // A record despite the rcode: still not trusted.
        packet.answers.push(rr("nope.example", 60, a([1, 2, 3, 4])));
        let bytes = packet.build_bytes_vec().unwrap();
        assert_eq!(parse_response(&bytes).unwrap(), []);
    }

    #[test]
    fn query_is_empty() {
        let mut packet = Packet::new_query(1);
        packet.questions.push(Question::new(
            Name::new_unchecked("example.com"),
            QTYPE::TYPE(TYPE::A),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        packet.answers.push(rr("example.com", 60, a([1, 2, 3, 4])));
        let bytes = packet.build_bytes_vec().unwrap();
        assert_eq!(parse_response(&bytes).unwrap(), []);
    }

    #[test]
    fn truncated_is_error() {
        let bytes = response("example.com", vec![rr("example.com", 60, a([1, 2, 3, 4]))]);
        assert!(parse_response(&bytes[..bytes.len() - 1]).is_err());
        assert!(parse_response(&bytes[..5]).is_err());
        assert!(parse_response(&[]).is_err());
    }

    #[test]
    fn garbage_is_error() {
        // Header claiming 0xffff of everything, then nothing.
        let mut bytes = vec![0x12, 0x34, 0x81, 0x80];
        bytes.extend([0xff; 8]);
        bytes.extend(b"garbage garbage garbage");
        assert!(parse_response(&bytes).is_err());
        // A name that points at itself.
        let mut looped = vec![0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
        looped.extend([0xc0, 12, 0, 1, 0, 1]);
        assert!(parse_response(&looped).is_err());
    }

    #[test]
    fn every_truncation_and_corruption_is_safe() {
        let bytes = response(
            "www.example.com",
            vec![
                rr(
                    "www.example.com",
                    600,
                    RData::CNAME(CNAME(Name::new_unchecked("cdn.example.net"))),
                ),
                rr("cdn.example.net", 300, a([1, 2, 3, 4])),
                rr(
                    "cdn.example.net",
                    300,
                    RData::AAAA(AAAA::from(Ipv6Addr::LOCALHOST)),
                ),
            ],
        );
        assert_eq!(parse_response(&bytes).unwrap().len(), 4);
        for len in 0..bytes.len() {
            assert!(parse_response(&bytes[..len]).is_err(), "length {len}");
        }
        // Any single corrupted byte: any result, but no panic.
        for i in 0..bytes.len() {
            for value in [0x00, 0x3f, 0xc0, 0xff] {
                let mut corrupt = bytes.clone();
                corrupt[i] = value;
                let _ = parse_response(&corrupt);
            }
        }
    }
}
