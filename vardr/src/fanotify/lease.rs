//! The lease that lets the pinned open tracepoints stand by while this
//! agent's fanotify group answers file opens (`--keep-enforcing` on the
//! fallback backend). The answering thread renews it; it lapses by itself
//! when that thread stops, and the exit program ends it when the agent
//! process ends, before the kernel closes the group.
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use aya::maps::{Array, MapData};
use nix::time::{clock_gettime, ClockId};
use vardr_common::FanotifyLease;

/// How long one renewal holds.
const TERM: Duration = Duration::from_secs(2);
/// How often the answering thread renews (well inside the term).
pub const RENEW_EVERY: Duration = Duration::from_millis(500);

pub type LeaseMap = Array<MapData, FanotifyLease>;

pub struct Lease {
    map: Mutex<LeaseMap>,
    holder: u32,
    holder_start_ticks: u64,
    last: Mutex<Option<Instant>>,
    /// Set by [`Lease::release`]: no renewal after it (an answering thread
    /// still running must not take the lease back while its group closes).
    released: AtomicBool,
}

impl Lease {
    pub fn new(map: LeaseMap) -> Self {
        Self {
            map: Mutex::new(map),
            holder: std::process::id(),
            holder_start_ticks: crate::process::start_ticks(std::process::id()).unwrap_or(0),
            last: Mutex::new(None),
            released: AtomicBool::new(false),
        }
    }

    /// Renews the lease when the last renewal is older than [`RENEW_EVERY`].
    pub fn renew(&self) {
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        if self.released.load(Ordering::SeqCst) {
            return;
        }
        if last.is_some_and(|l| l.elapsed() < RENEW_EVERY) {
            return;
        }
        let Ok(now) = clock_gettime(ClockId::CLOCK_BOOTTIME) else {
            return;
        };
        let now_ns = now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64;
        if self.write(now_ns + TERM.as_nanos() as u64) {
            *last = Some(Instant::now());
        }
    }

    /// Hands file rules back to the tracepoints at once, for good.
    pub fn release(&self) {
        // Under the renewal lock: a renewal in progress finishes first.
        let _last = self.last.lock();
        self.released.store(true, Ordering::SeqCst);
        self.write(0);
    }

    fn write(&self, until_ns: u64) -> bool {
        let lease = FanotifyLease {
            holder_tgid: self.holder,
            _pad: 0,
            until_ns,
            holder_start_ticks: self.holder_start_ticks,
        };
        let Ok(mut map) = self.map.lock() else {
            return false;
        };
        match map.set(0, lease, 0) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!("fanotify lease: {e}");
                false
            }
        }
    }
}
