//! Names the agent learns for addresses: TLS server names from the kernel,
//! DNS answers seen on the wire. A connect carries only an address, so these
//! are what let an event say which host it went to and a policy name hosts.

pub mod cache;
pub mod dns;
pub mod domain;
pub mod rules;

pub use cache::NameCache;
pub use dns::{parse_response, Answer, DnsError};
pub use domain::{lookup_key, normalize, DomainError, DomainPattern, MAX_KEY_LEN, MAX_NAME_LEN};
pub use rules::DomainRule;
