//! Which names an address was recently given out for.
//!
//! A connect carries only an address; the DNS answer that produced it came
//! just before. This cache keeps that answer long enough to name the connect,
//! and bounded so a flood of answers cannot grow the agent without limit.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::dns::Answer;

/// Names kept per address: enough for a shared CDN address, few enough
/// that a lookup stays cheap and a hostile resolver cannot bloat an entry.
pub const MAX_NAMES_PER_ADDR: usize = 8;

/// Largest TTL DNS can express (32-bit seconds); longer bounds mean nothing
/// and would risk overflowing `Instant`.
const MAX_DNS_TTL: Duration = Duration::from_secs(u32::MAX as u64);

/// Address → recently answered names, each with its own expiry.
///
/// Bounded to `capacity` addresses. When a new address arrives and the cache
/// is full, expired addresses go first, then the one least recently inserted
/// or refreshed. Both are found through ordered indexes, so an insert costs
/// O(log n) amortized, never a scan.
#[derive(Debug)]
pub struct NameCache {
    capacity: usize,
    min_ttl: Duration,
    max_ttl: Duration,
    entries: HashMap<IpAddr, Entry>,
    /// Insertion sequence → address: the oldest is the first to evict.
    by_seq: BTreeMap<u64, IpAddr>,
    /// (latest expiry among the address's names, sequence): what has expired.
    by_expiry: BTreeSet<(Instant, u64)>,
    next_seq: u64,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    expires: Instant,
    /// Most recently seen first, at most [`MAX_NAMES_PER_ADDR`], unique.
    names: VecDeque<(String, Instant)>,
}

impl NameCache {
    /// A cache of at most `capacity` addresses (0 keeps nothing).
    ///
    /// Answer TTLs are clamped into `[min_ttl, max_ttl]`: the floor matters
    /// because the connect follows the answer, so even a TTL of 0 must name
    /// it; the ceiling bounds how stale a name can get. A `max_ttl` below
    /// `min_ttl` is raised to it.
    pub fn new(capacity: usize, min_ttl: Duration, max_ttl: Duration) -> Self {
        let min_ttl = min_ttl.min(MAX_DNS_TTL);
        let max_ttl = max_ttl.clamp(min_ttl, MAX_DNS_TTL);
        Self {
            capacity,
            min_ttl,
            max_ttl,
            entries: HashMap::new(),
            by_seq: BTreeMap::new(),
            by_expiry: BTreeSet::new(),
            next_seq: 0,
        }
    }

    /// Records `answers` seen at `now`.
    ///
    /// A name already known for an address moves to the front, and its
    /// expiry is extended, never shortened. Within one call, earlier answers
    /// rank before later ones (as [`parse_response`](super::dns::parse_response)
    /// puts the question name first).
    pub fn insert(&mut self, answers: &[Answer], now: Instant) {
        if self.capacity == 0 {
            return;
        }
        for answer in answers.iter().rev() {
            let ttl = Duration::from_secs(answer.ttl.into()).clamp(self.min_ttl, self.max_ttl);
            self.insert_one(answer.addr.to_canonical(), &answer.name, now + ttl, now);
        }
    }

    fn insert_one(&mut self, addr: IpAddr, name: &str, deadline: Instant, now: Instant) {
        if !self.entries.contains_key(&addr) && self.entries.len() >= self.capacity {
            self.make_room(now);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let entry = match self.entries.entry(addr) {
            MapEntry::Occupied(occupied) => {
                let entry = occupied.into_mut();
                self.by_seq.remove(&entry.seq);
                self.by_expiry.remove(&(entry.expires, entry.seq));
                entry
            }
            MapEntry::Vacant(vacant) => vacant.insert(Entry {
                seq,
                expires: deadline,
                names: VecDeque::with_capacity(1),
            }),
        };

        let mut deadline = deadline;
        if let Some(pos) = entry.names.iter().position(|(n, _)| n == name) {
            if let Some((_, old)) = entry.names.remove(pos) {
                deadline = deadline.max(old);
            }
        }
        entry.names.retain(|(_, expiry)| *expiry > now);
        entry.names.push_front((name.to_owned(), deadline));
        entry.names.truncate(MAX_NAMES_PER_ADDR);

        entry.seq = seq;
        entry.expires = entry
            .names
            .iter()
            .map(|(_, expiry)| *expiry)
            .max()
            .unwrap_or(deadline);
        self.by_seq.insert(seq, addr);
        self.by_expiry.insert((entry.expires, seq));
    }

    /// Frees at least one slot: every expired address, or else the oldest.
    fn make_room(&mut self, now: Instant) {
        self.remove_expired(now);
        if self.entries.len() >= self.capacity {
            if let Some((_, addr)) = self.by_seq.pop_first() {
                self.remove(addr);
            }
        }
    }

    /// Drops every address whose names have all expired.
    pub fn remove_expired(&mut self, now: Instant) {
        while let Some(&(expires, seq)) = self.by_expiry.first() {
            if expires > now {
                break;
            }
            match self.by_seq.get(&seq) {
                Some(&addr) => self.remove(addr),
                // Unreachable while the indexes agree; never loop on it.
                None => {
                    self.by_expiry.pop_first();
                }
            }
        }
    }

    fn remove(&mut self, addr: IpAddr) {
        if let Some(entry) = self.entries.remove(&addr) {
            self.by_seq.remove(&entry.seq);
            self.by_expiry.remove(&(entry.expires, entry.seq));
        }
    }

    /// The unexpired names for `addr`, most recently seen first.
    ///
    /// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what a dual-stack socket
    /// connects to) are looked up as the IPv4 address. Expired names found on
    /// the way are dropped, hence `&mut`.
    pub fn names(&mut self, addr: IpAddr, now: Instant) -> Vec<String> {
        let addr = addr.to_canonical();
        let Some(entry) = self.entries.get_mut(&addr) else {
            return Vec::new();
        };
        // The latest expiry stays in place, so the indexes need no update.
        entry.names.retain(|(_, expiry)| *expiry > now);
        if entry.names.is_empty() {
            self.remove(addr);
            return Vec::new();
        }
        entry.names.iter().map(|(name, _)| name.clone()).collect()
    }

    /// Addresses held, including expired ones not yet dropped.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn ans(name: &str, addr: &str, ttl: u32) -> Answer {
        Answer {
            name: name.into(),
            addr: addr.parse().unwrap(),
            ttl,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cache(capacity: usize) -> NameCache {
        NameCache::new(capacity, 5 * SEC, 3600 * SEC)
    }

    #[test]
    fn expiry() {
        let mut c = cache(10);
        let t0 = Instant::now();
        c.insert(
            &[
                ans("a.example", "10.0.0.1", 60),
                ans("b.example", "10.0.0.1", 30),
            ],
            t0,
        );
        assert_eq!(c.names(ip("10.0.0.1"), t0), ["a.example", "b.example"]);
        assert_eq!(c.names(ip("10.0.0.1"), t0 + 30 * SEC), ["a.example"]);
        assert_eq!(c.names(ip("10.0.0.1"), t0 + 60 * SEC), Vec::<String>::new());
        assert!(c.is_empty());
        assert_eq!(c.names(ip("10.0.0.2"), t0), Vec::<String>::new());
    }

    #[test]
    fn ttl_clamped() {
        let mut c = NameCache::new(10, 5 * SEC, 100 * SEC);
        let t0 = Instant::now();
        c.insert(
            &[
                ans("zero.example", "10.0.0.1", 0),
                ans("long.example", "10.0.0.2", u32::MAX),
            ],
            t0,
        );
        assert_eq!(c.names(ip("10.0.0.1"), t0 + 4 * SEC), ["zero.example"]);
        assert!(c.names(ip("10.0.0.1"), t0 + 5 * SEC).is_empty());
        assert_eq!(c.names(ip("10.0.0.2"), t0 + 99 * SEC), ["long.example"]);
        assert!(c.names(ip("10.0.0.2"), t0 + 100 * SEC).is_empty());

        // Inverted bounds: the floor wins; huge bounds do not overflow.
        let mut c = NameCache::new(10, 10 * SEC, SEC);
        c.insert(&[ans("x.example", "10.0.0.1", 0)], t0);
        assert_eq!(c.names(ip("10.0.0.1"), t0 + 9 * SEC), ["x.example"]);
        let mut c = NameCache::new(10, Duration::MAX, Duration::MAX);
        c.insert(&[ans("x.example", "10.0.0.1", 0)], t0);
        assert_eq!(c.names(ip("10.0.0.1"), t0 + 3600 * SEC), ["x.example"]);
    }

    #[test]
    fn capacity_evicts_oldest() {
        let mut c = cache(3);
        let t0 = Instant::now();
        for (i, addr) in ["10.0.0.1", "10.0.0.2", "10.0.0.3"].into_iter().enumerate() {
            c.insert(&[ans("n.example", addr, 60)], t0 + i as u32 * SEC);
        }
        // Refreshing .1 makes .2 the oldest.
        c.insert(&[ans("n.example", "10.0.0.1", 60)], t0 + 3 * SEC);
        c.insert(&[ans("n.example", "10.0.0.4", 60)], t0 + 4 * SEC);
        assert_eq!(c.len(), 3);
        let now = t0 + 5 * SEC;
        assert!(c.names(ip("10.0.0.2"), now).is_empty());
        for addr in ["10.0.0.1", "10.0.0.3", "10.0.0.4"] {
            assert_eq!(c.names(ip(addr), now), ["n.example"], "{addr}");
        }
    }

    #[test]
    fn capacity_drops_expired_first() {
        let mut c = cache(3);
        let t0 = Instant::now();
        c.insert(&[ans("old.example", "10.0.0.1", 600)], t0);
        c.insert(&[ans("short.example", "10.0.0.2", 10)], t0);
        c.insert(&[ans("short.example", "10.0.0.3", 10)], t0);
        // .2 and .3 have expired: both go, the older .1 stays.
        let later = t0 + 20 * SEC;
        c.insert(&[ans("new.example", "10.0.0.4", 60)], later);
        assert_eq!(c.len(), 2);
        assert_eq!(c.names(ip("10.0.0.1"), later), ["old.example"]);
        assert_eq!(c.names(ip("10.0.0.4"), later), ["new.example"]);
        c.remove_expired(t0 + 600 * SEC);
        assert!(c.is_empty());
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let mut c = cache(0);
        let t0 = Instant::now();
        c.insert(&[ans("a.example", "10.0.0.1", 60)], t0);
        assert!(c.is_empty());
        assert!(c.names(ip("10.0.0.1"), t0).is_empty());
    }

    #[test]
    fn mapped_ipv6_is_ipv4() {
        let mut c = cache(10);
        let t0 = Instant::now();
        c.insert(&[ans("a.example", "10.0.0.1", 60)], t0);
        c.insert(&[ans("b.example", "::ffff:10.0.0.1", 60)], t0);
        assert_eq!(c.len(), 1);
        assert_eq!(
            c.names(ip("::ffff:10.0.0.1"), t0),
            ["b.example", "a.example"]
        );
        assert_eq!(c.names(ip("10.0.0.1"), t0), ["b.example", "a.example"]);
        assert!(c.names(ip("::10.0.0.1"), t0).is_empty());
    }

    #[test]
    fn dedup_and_limit() {
        let mut c = cache(10);
        let t0 = Instant::now();
        let answers: Vec<Answer> = (0..12)
            .chain(0..3)
            .map(|i| ans(&format!("n{i}.example"), "10.0.0.1", 60))
            .collect();
        c.insert(&answers, t0);
        let names = c.names(ip("10.0.0.1"), t0);
        // The earliest in the batch rank first; each name appears once.
        assert_eq!(
            names,
            [
                "n0.example",
                "n1.example",
                "n2.example",
                "n3.example",
                "n4.example",
                "n5.example",
                "n6.example",
                "n7.example"
            ]
        );
    }

    #[test]
    fn refresh_moves_to_front_and_extends() {
        let mut c = cache(10);
        let t0 = Instant::now();
        c.insert(&[ans("a.example", "10.0.0.1", 100)], t0);
        c.insert(&[ans("b.example", "10.0.0.1", 100)], t0 + SEC);
        assert_eq!(
            c.names(ip("10.0.0.1"), t0 + SEC),
            ["b.example", "a.example"]
        );
        // A shorter TTL later does not cut the earlier, longer one.
        c.insert(&[ans("a.example", "10.0.0.1", 5)], t0 + 2 * SEC);
        assert_eq!(
            c.names(ip("10.0.0.1"), t0 + 2 * SEC),
            ["a.example", "b.example"]
        );
        assert_eq!(
            c.names(ip("10.0.0.1"), t0 + 99 * SEC),
            ["a.example", "b.example"]
        );
        assert_eq!(c.names(ip("10.0.0.1"), t0 + 100 * SEC), ["b.example"]);
        assert!(c.names(ip("10.0.0.1"), t0 + 101 * SEC).is_empty());
    }
}
