//! Domain names and the patterns policies match them with.
//!
//! Names are compared in one canonical form (see [`normalize`]) so that the
//! same host written `Example.COM.` in a policy, a DNS answer or a TLS server
//! name is one string. Patterns also have a kernel form: keys for an LPM trie
//! over *reversed* names, where the longest matching prefix is the most
//! specific pattern (see [`DomainPattern::kernel_key`]).

use std::fmt;

use thiserror::Error;

/// Longest name in presentation form without the trailing dot (RFC 1035:
/// 255 bytes on the wire, which is 253 characters written out).
pub const MAX_NAME_LEN: usize = 253;

/// Longest key [`DomainPattern::kernel_key`] and [`lookup_key`] produce: a
/// name plus its terminator byte, which sizes the kernel's LPM trie key.
pub const MAX_KEY_LEN: usize = MAX_NAME_LEN + 1;

/// Longest label (RFC 1035).
const MAX_LABEL_LEN: usize = 63;

/// Why a name or pattern was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DomainError {
    #[error("empty domain name")]
    Empty,
    #[error(
        "domain name {name:?} is not ASCII: write internationalized names in punycode (`xn--…`)"
    )]
    NonAscii { name: String },
    #[error("domain name {name:?} is {len} bytes long, more than {MAX_NAME_LEN}")]
    TooLong { name: String, len: usize },
    #[error("domain name {name:?} has an empty label")]
    EmptyLabel { name: String },
    #[error("domain name {name:?} has label {label:?} longer than {MAX_LABEL_LEN} bytes")]
    LabelTooLong { name: String, label: String },
    #[error(
        "domain name {name:?} contains {ch:?}: only letters, digits, `-`, `_` and dots are allowed"
    )]
    InvalidChar { name: String, ch: char },
    #[error("domain pattern {pattern:?}: only a leading `*.` is supported")]
    Wildcard { pattern: String },
}

/// Canonical form of a domain name: lowercase ASCII without the trailing dot.
///
/// Rejects what cannot be a host name on the wire (empty labels, labels over
/// 63 bytes, names over [`MAX_NAME_LEN`]) and characters other than
/// `[a-z0-9-_]` and dots. `_` is allowed because real names use it (SRV-style
/// and some CDN hosts). Non-ASCII is rejected rather than converted: IDNs must
/// be written in punycode, which is what DNS and TLS carry.
pub fn normalize(name: &str) -> Result<String, DomainError> {
    if !name.is_ascii() {
        return Err(DomainError::NonAscii { name: name.into() });
    }
    let stripped = name.strip_suffix('.').unwrap_or(name);
    if stripped.is_empty() {
        return Err(DomainError::Empty);
    }
    if stripped.len() > MAX_NAME_LEN {
        return Err(DomainError::TooLong {
            name: name.into(),
            len: stripped.len(),
        });
    }
    let lower = stripped.to_ascii_lowercase();
    for label in lower.split('.') {
        if label.is_empty() {
            return Err(DomainError::EmptyLabel { name: name.into() });
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(DomainError::LabelTooLong {
                name: name.into(),
                label: label.into(),
            });
        }
        if let Some(ch) = label
            .chars()
            .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-' | '_'))
        {
            return Err(DomainError::InvalidChar {
                name: name.into(),
                ch,
            });
        }
    }
    Ok(lower)
}

/// A name pattern from a policy; the name inside is normalized.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DomainPattern {
    /// Exactly this name.
    Exact(String),
    /// Any name strictly below this one (written `*.example.com`); the name
    /// itself does not match, as with TLS wildcard certificates.
    Suffix(String),
}

impl DomainPattern {
    /// Parses `name` as an exact pattern or `*.name` as a suffix pattern.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let (suffix, rest) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        if rest.contains('*') {
            return Err(DomainError::Wildcard { pattern: s.into() });
        }
        let name = normalize(rest)?;
        Ok(if suffix {
            Self::Suffix(name)
        } else {
            Self::Exact(name)
        })
    }

    /// Whether `name` (already [`normalize`]d) matches this pattern.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Self::Exact(exact) => name == exact,
            Self::Suffix(parent) => name
                .strip_suffix(parent.as_str())
                .and_then(|below| below.strip_suffix('.'))
                .is_some_and(|below| !below.is_empty()),
        }
    }

    /// Key bytes and prefix length in bits for an LPM trie over reversed names.
    ///
    /// An exact name is its reversed bytes plus a 0 terminator, so it only
    /// prefixes the [`lookup_key`] of that very name. A suffix is its reversed
    /// bytes plus `.`, so it prefixes the keys of names that continue below it
    /// but not the name itself (whose key has 0 there) nor a sibling such as
    /// `badexample.com`. A pattern only prefixes the keys of names it
    /// [`matches`](Self::matches), and a more specific pattern has a longer key
    /// (an exact name is longer than any of its parents, a deeper suffix longer
    /// than a shallower one), so the trie's longest-prefix match is the most
    /// specific pattern.
    pub fn kernel_key(&self) -> (Vec<u8>, u32) {
        let (name, end) = match self {
            Self::Exact(name) => (name, 0),
            Self::Suffix(name) => (name, b'.'),
        };
        let mut key = reversed(name);
        key.push(end);
        // At most MAX_KEY_LEN bytes for a normalized name, so the bit count fits.
        let bits = u32::try_from(key.len() * 8).unwrap_or(u32::MAX);
        (key, bits)
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Suffix(name) => write!(f, "*.{name}"),
        }
    }
}

/// The key the kernel looks a name up with: the [`normalize`]d `name`
/// reversed, plus the 0 terminator that [`DomainPattern::kernel_key`] relies on.
pub fn lookup_key(name: &str) -> Vec<u8> {
    let mut key = reversed(name);
    key.push(0);
    key
}

fn reversed(name: &str) -> Vec<u8> {
    name.bytes().rev().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_canonical_form() {
        assert_eq!(normalize("Example.COM.").unwrap(), "example.com");
        assert_eq!(normalize("a-b_c.example").unwrap(), "a-b_c.example");
        assert_eq!(normalize("localhost").unwrap(), "localhost");
    }

    #[test]
    fn normalize_rejects() {
        assert_eq!(normalize(""), Err(DomainError::Empty));
        assert_eq!(normalize("."), Err(DomainError::Empty));
        assert!(matches!(
            normalize("example.com.."),
            Err(DomainError::EmptyLabel { .. })
        ));
        assert!(matches!(
            normalize(".example.com"),
            Err(DomainError::EmptyLabel { .. })
        ));
        assert!(matches!(
            normalize("a..b"),
            Err(DomainError::EmptyLabel { .. })
        ));
        assert!(matches!(
            normalize("a b.com"),
            Err(DomainError::InvalidChar { ch: ' ', .. })
        ));
        assert!(matches!(
            normalize("*.com"),
            Err(DomainError::InvalidChar { ch: '*', .. })
        ));
        let err = normalize("bücher.example").unwrap_err();
        assert!(matches!(err, DomainError::NonAscii { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains("bücher.example") && msg.contains("xn--"),
            "{msg}"
        );
    }

    #[test]
    fn normalize_lengths() {
        let label63 = "a".repeat(63);
        assert!(normalize(&format!("{label63}.com")).is_ok());
        let err = normalize(&format!("{}.com", "a".repeat(64))).unwrap_err();
        assert!(matches!(err, DomainError::LabelTooLong { .. }));

        // 4 * 63 + 3 dots = 255 bytes: too long; 253 bytes is fine.
        let long = [label63.as_str(); 4].join(".");
        assert!(matches!(
            normalize(&long),
            Err(DomainError::TooLong { len: 255, .. })
        ));
        let max = &long[..MAX_NAME_LEN];
        assert!(normalize(max).is_ok());
        assert!(normalize(&format!("{max}.")).is_ok());
    }

    #[test]
    fn parse_patterns() {
        assert_eq!(
            DomainPattern::parse("*.Example.com").unwrap(),
            DomainPattern::Suffix("example.com".into())
        );
        assert_eq!(
            DomainPattern::parse("example.com.").unwrap(),
            DomainPattern::Exact("example.com".into())
        );
        for bad in [
            "*",
            "*.",
            "a.*.com",
            "*example.com",
            "**.example.com",
            "*.*.com",
        ] {
            assert!(DomainPattern::parse(bad).is_err(), "{bad}");
        }
        let err = DomainPattern::parse("a.*.com").unwrap_err();
        assert!(err.to_string().contains("only a leading `*.`"), "{err}");
        assert!(err.to_string().contains("a.*.com"), "{err}");
    }

    #[test]
    fn display_round_trips() {
        for s in ["*.example.com", "example.com", "*.com"] {
            let p = DomainPattern::parse(s).unwrap();
            assert_eq!(p.to_string(), s);
            assert_eq!(DomainPattern::parse(&p.to_string()).unwrap(), p);
        }
    }

    #[test]
    fn matching() {
        let suffix = DomainPattern::parse("*.example.com").unwrap();
        assert!(suffix.matches("a.example.com"));
        assert!(suffix.matches("a.b.example.com"));
        assert!(!suffix.matches("example.com"));
        assert!(!suffix.matches("badexample.com"));
        assert!(!suffix.matches(".example.com"));
        let exact = DomainPattern::parse("example.com").unwrap();
        assert!(exact.matches("example.com"));
        assert!(!exact.matches("a.example.com"));
    }

    #[test]
    fn kernel_keys() {
        let (key, bits) = DomainPattern::parse("evil.example").unwrap().kernel_key();
        assert_eq!(key, b"elpmaxe.live\0");
        assert_eq!(bits, 13 * 8);
        let (key, bits) = DomainPattern::parse("*.example.com").unwrap().kernel_key();
        assert_eq!(key, b"moc.elpmaxe.");
        assert_eq!(bits, 12 * 8);
        assert_eq!(lookup_key("a.example.com"), b"moc.elpmaxe.a\0");
    }

    /// What the kernel's LPM trie answers: the pattern with the longest key
    /// that is a prefix of the lookup key.
    fn lpm<'a>(patterns: &'a [DomainPattern], name: &str) -> Option<&'a DomainPattern> {
        let lookup = lookup_key(name);
        patterns
            .iter()
            .filter(|p| {
                let (key, bits) = p.kernel_key();
                assert_eq!(bits as usize, key.len() * 8);
                lookup.starts_with(&key)
            })
            .max_by_key(|p| p.kernel_key().1)
    }

    fn patterns(list: &[&str]) -> Vec<DomainPattern> {
        list.iter()
            .map(|s| DomainPattern::parse(s).unwrap())
            .collect()
    }

    #[test]
    fn most_specific_pattern_wins() {
        let ps = patterns(&[
            "*.example.com",
            "*.corp.example.com",
            "a.example.com",
            "example.com",
        ]);
        let winner = |name| lpm(&ps, name).map(ToString::to_string);
        assert_eq!(winner("a.example.com").as_deref(), Some("a.example.com"));
        assert_eq!(
            winner("a.corp.example.com").as_deref(),
            Some("*.corp.example.com")
        );
        assert_eq!(winner("b.example.com").as_deref(), Some("*.example.com"));
        assert_eq!(winner("example.com").as_deref(), Some("example.com"));
        assert_eq!(winner("corp.example.com").as_deref(), Some("*.example.com"));
        assert_eq!(winner("badexample.com"), None);
        assert_eq!(winner("com"), None);

        let only_exact = patterns(&["example.com"]);
        assert_eq!(lpm(&only_exact, "a.example.com"), None);
    }

    #[test]
    fn key_prefix_agrees_with_matches() {
        let ps = patterns(&[
            "*.example.com",
            "*.corp.example.com",
            "a.example.com",
            "example.com",
            "*.com",
            "com",
            "*.xample.com",
        ]);
        let names = [
            "com",
            "example.com",
            "a.example.com",
            "a.corp.example.com",
            "corp.example.com",
            "xample.com",
            "badexample.com",
            "a.example.co",
            "example.com.evil",
        ];
        for p in &ps {
            let (key, _) = p.kernel_key();
            for name in names {
                assert_eq!(
                    lookup_key(name).starts_with(&key),
                    p.matches(name),
                    "{p} vs {name}"
                );
            }
        }
    }

    #[test]
    fn keys_fit_the_trie() {
        let name = ["a"; 127].join(".");
        assert_eq!(name.len(), MAX_NAME_LEN);
        let p = DomainPattern::parse(&name).unwrap();
        assert_eq!(p.kernel_key().0.len(), MAX_KEY_LEN);
        assert_eq!(lookup_key(&name).len(), MAX_KEY_LEN);
    }
}
