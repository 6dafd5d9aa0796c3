//! A reader of a BPF ring buffer that maps its data pages once.
//!
//! The kernel lays the data pages out twice in a row so that a record that
//! wraps around the end reads as one slice, and aya's `RingBuf` maps both
//! copies: every page of the buffer then counts twice in the agent's RSS
//! (24 MiB for 12 MiB of buffers), all of it resident from the `mmap` on.
//! Mapped once, a record that wraps (rare: records are small beside the
//! buffer) is copied into a scratch buffer instead.
use std::{
    num::NonZeroUsize,
    os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd},
    ptr::NonNull,
    sync::atomic::{fence, AtomicU32, AtomicUsize, Ordering},
};

use aya::maps::{Map, MapData, MapError};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

/// Record header: a `u32` length with these flags, then a `u32` page offset.
const BUSY_BIT: u32 = 1 << 31;
const DISCARD_BIT: u32 = 1 << 30;
const HEADER: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("map {0} is not a ring buffer")]
    NotRing(&'static str),
    #[error("reading the ring buffer {0}: {1}")]
    Info(&'static str, MapError),
    #[error("the ring buffer {0} has {1} data bytes, not a power of two of pages")]
    Size(&'static str, usize),
    #[error("mapping the ring buffer {0}: {1}")]
    Map(&'static str, nix::Error),
}

/// One shared mapping, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(
        name: &'static str,
        fd: BorrowedFd<'_>,
        len: usize,
        prot: ProtFlags,
        offset: usize,
    ) -> Result<Self, RingError> {
        let size = NonZeroUsize::new(len).ok_or(RingError::Size(name, len))?;
        let off = libc::off_t::try_from(offset).map_err(|_| RingError::Size(name, len))?;
        // SAFETY: a fresh shared mapping of the map's own pages at an
        // address the kernel picks; nothing else aliases it in this process.
        let ptr = unsafe { mmap(None, size, prot, MapFlags::MAP_SHARED, fd, off) }
            .map_err(|e| RingError::Map(name, e))?;
        Ok(Self {
            ptr: ptr.cast(),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, of that length; no borrow of it
        // outlives `self` (records borrow the ring that owns it).
        if let Err(e) = unsafe { munmap(self.ptr.cast(), self.len) } {
            tracing::warn!("unmapping a ring buffer: {e}");
        }
    }
}

// SAFETY: the mapping is plain shared memory, unmapped only on drop.
unsafe impl Send for Mapping {}

/// The consumer side of one BPF ring buffer.
pub struct EventRing {
    map: MapData,
    /// The consumer position page (read-write).
    _consumer: Mapping,
    /// The producer position page, then the data pages once (read-only).
    _producer: Mapping,
    cursor: Cursor,
}

impl EventRing {
    /// Maps the ring buffer `map` (named `name` in errors).
    pub fn new(name: &'static str, map: Map) -> Result<Self, RingError> {
        let Map::RingBuf(map) = map else {
            return Err(RingError::NotRing(name));
        };
        Self::from_data(name, map)
    }

    pub fn from_data(name: &'static str, map: MapData) -> Result<Self, RingError> {
        let size = map
            .info()
            .map_err(|e| RingError::Info(name, e))?
            .max_entries() as usize;
        let page = crate::kernel::page_size();
        if !size.is_power_of_two() || size < page {
            return Err(RingError::Size(name, size));
        }
        let fd = map.fd().as_fd();
        let rw = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
        let consumer = Mapping::new(name, fd, page, rw, 0)?;
        let producer = Mapping::new(name, fd, page + size, ProtFlags::PROT_READ, page)?;
        // SAFETY: the pages hold the kernel's `unsigned long` positions at
        // their start and the data pages follow the producer page; the
        // mappings live as long as the cursor (both owned by `self`).
        let cursor = unsafe {
            Cursor::new(
                consumer.ptr.cast(),
                producer.ptr.cast(),
                producer.ptr.as_ptr().add(page),
                size,
            )
        };
        Ok(Self {
            map,
            _consumer: consumer,
            _producer: producer,
            cursor,
        })
    }

    /// The next committed record, if any; it is released when dropped.
    /// `None` once the buffer is drained (or the next record is still
    /// being written): wait for the descriptor to be readable.
    #[allow(clippy::should_implement_trait)] // items borrow the ring
    pub fn next(&mut self) -> Option<Record<'_>> {
        self.cursor.next()
    }
}

/// Reading state over a ring buffer's positions and data pages.
struct Cursor {
    consumer: NonNull<AtomicUsize>,
    producer: NonNull<AtomicUsize>,
    data: *const u8,
    mask: usize,
    pos: usize,
    producer_cache: usize,
    needs_wakeup: bool,
    scratch: Vec<u8>,
}

// SAFETY: the pointers are into shared mappings (or, in tests, memory) that
// the cursor's owner keeps alive; only `&mut self` methods use them.
unsafe impl Send for Cursor {}

impl Cursor {
    /// # Safety
    /// `consumer` and `producer` point to the positions, `data` to `size`
    /// readable bytes (a power of two), all valid while the cursor lives.
    unsafe fn new(
        consumer: NonNull<AtomicUsize>,
        producer: NonNull<AtomicUsize>,
        data: *const u8,
        size: usize,
    ) -> Self {
        // SAFETY: valid per the contract. A pinned buffer carries on from
        // where the last reader stopped.
        let (pos, producer_cache) = unsafe {
            (
                consumer.as_ref().load(Ordering::Acquire),
                producer.as_ref().load(Ordering::Acquire),
            )
        };
        Self {
            consumer,
            producer,
            data,
            mask: size - 1,
            pos,
            producer_cache,
            needs_wakeup: false,
            scratch: Vec::new(),
        }
    }

    fn next(&mut self) -> Option<Record<'_>> {
        loop {
            if self.pos == self.producer_cache {
                if self.needs_wakeup {
                    // Either this load sees a new record, or its producer
                    // sees the released position and wakes the poller.
                    fence(Ordering::SeqCst);
                    self.needs_wakeup = false;
                }
                // SAFETY: valid per `new`'s contract.
                self.producer_cache = unsafe { self.producer.as_ref() }.load(Ordering::Acquire);
                if self.pos == self.producer_cache {
                    return None;
                }
            }
            // SAFETY: `pos & mask` is an 8-aligned offset in the data pages
            // (headers never wrap); the kernel commits a record with a fully
            // ordered exchange on this word.
            let header = unsafe {
                (*self.data.add(self.pos & self.mask).cast::<AtomicU32>()).load(Ordering::Acquire)
            };
            if header & BUSY_BIT != 0 {
                if !self.needs_wakeup {
                    return None;
                }
                fence(Ordering::SeqCst);
                self.needs_wakeup = false;
                continue;
            }
            let len = (header & !(BUSY_BIT | DISCARD_BIT)) as usize;
            let advance = (HEADER + len).next_multiple_of(8);
            if len > self.mask {
                // No kernel writes this (a record fits the buffer): the
                // stream cannot be followed past it; what is queued goes.
                tracing::error!(
                    "ring buffer record of {len} bytes in a buffer of {}: skipping what is queued",
                    self.mask + 1
                );
                let queued = self.producer_cache.wrapping_sub(self.pos);
                self.release(queued);
                continue;
            }
            if header & DISCARD_BIT != 0 {
                self.release(advance);
                continue;
            }
            let start = (self.pos + HEADER) & self.mask;
            let (ptr, len) = if start + len <= self.mask + 1 {
                // SAFETY: in bounds of the data pages (checked above).
                (unsafe { self.data.add(start) }, len)
            } else {
                let first = self.mask + 1 - start;
                self.scratch.clear();
                // SAFETY: both pieces lie in the data pages; the kernel does
                // not write a committed record before its release.
                unsafe {
                    self.scratch
                        .extend_from_slice(std::slice::from_raw_parts(self.data.add(start), first));
                    self.scratch
                        .extend_from_slice(std::slice::from_raw_parts(self.data, len - first));
                }
                (self.scratch.as_ptr(), len)
            };
            return Some(Record {
                cursor: self,
                ptr,
                len,
                advance,
            });
        }
    }

    /// Hands `advance` bytes back to the kernel.
    fn release(&mut self, advance: usize) {
        self.pos = self.pos.wrapping_add(advance);
        // The kernel pairs this with an acquire load before reusing the space.
        // SAFETY: valid per `new`'s contract.
        unsafe { self.consumer.as_ref() }.store(self.pos, Ordering::Release);
        self.needs_wakeup = true;
    }
}

impl AsFd for EventRing {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.map.fd().as_fd()
    }
}

impl AsRawFd for EventRing {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

/// One record, released to the kernel when dropped.
pub struct Record<'a> {
    cursor: &'a mut Cursor,
    ptr: *const u8,
    len: usize,
    advance: usize,
}

impl std::ops::Deref for Record<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: the record's bytes, in the data pages (not reused by the
        // kernel before the release in `drop`) or in the cursor's scratch
        // buffer (not touched while this borrow of the cursor lives).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Record<'_> {
    fn drop(&mut self) {
        self.cursor.release(self.advance);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ring of 64 data bytes in plain memory, written as the kernel does.
    struct Fake {
        consumer: Box<AtomicUsize>,
        producer: Box<AtomicUsize>,
        data: Box<[u64; 8]>,
    }

    impl Fake {
        fn new(start: usize) -> Self {
            Self {
                consumer: Box::new(AtomicUsize::new(start)),
                producer: Box::new(AtomicUsize::new(start)),
                data: Box::new([0; 8]),
            }
        }

        fn cursor(&mut self) -> Cursor {
            // SAFETY: the boxes outlive the cursor in every test.
            unsafe {
                Cursor::new(
                    NonNull::from(&*self.consumer),
                    NonNull::from(&*self.producer),
                    self.data.as_ptr().cast(),
                    64,
                )
            }
        }

        /// Writes a record with `header_flags` at the producer position.
        fn push(&mut self, body: &[u8], header_flags: u32) {
            let pos = self.producer.load(Ordering::Relaxed);
            let bytes: &mut [u8; 64] = bytemuck_bytes(&mut self.data);
            let at = pos & 63;
            bytes[at..at + 4].copy_from_slice(&(body.len() as u32 | header_flags).to_ne_bytes());
            for (i, b) in body.iter().enumerate() {
                bytes[(at + HEADER + i) & 63] = *b;
            }
            self.producer.store(
                pos + (HEADER + body.len()).next_multiple_of(8),
                Ordering::Release,
            );
        }
    }

    fn bytemuck_bytes(d: &mut [u64; 8]) -> &mut [u8; 64] {
        // SAFETY: same size, u8 has no alignment or validity requirement.
        unsafe { &mut *(d as *mut [u64; 8]).cast::<[u8; 64]>() }
    }

    #[test]
    fn records_come_in_order_and_are_released() {
        let mut f = Fake::new(0);
        f.push(b"first", 0);
        f.push(b"second record", 0);
        let mut c = f.cursor();
        assert_eq!(&*c.next().expect("first"), b"first");
        assert_eq!(&*c.next().expect("second"), b"second record");
        assert!(c.next().is_none());
        assert_eq!(f.consumer.load(Ordering::Relaxed), 16 + 24);
    }

    #[test]
    fn a_record_that_wraps_reads_whole() {
        // 40 bytes in, a 20-byte body runs from offset 48 past the end.
        let mut f = Fake::new(40);
        f.push(b"abcdefghijklmnopqrst", 0);
        let mut c = f.cursor();
        assert_eq!(&*c.next().expect("wrapped"), b"abcdefghijklmnopqrst");
        assert!(c.next().is_none());
        assert_eq!(f.consumer.load(Ordering::Relaxed), 40 + 32);
    }

    #[test]
    fn discarded_records_are_skipped_and_busy_ones_wait() {
        let mut f = Fake::new(0);
        f.push(b"gone", DISCARD_BIT);
        f.push(b"kept", 0);
        f.push(b"later", BUSY_BIT);
        let mut c = f.cursor();
        assert_eq!(&*c.next().expect("kept"), b"kept");
        assert!(c.next().is_none(), "a busy record is not read");
        assert_eq!(f.consumer.load(Ordering::Relaxed), 32, "stops before it");
    }

    /// A header no kernel writes (longer than the buffer) cannot be
    /// followed: what is queued is skipped, and reading goes on after it.
    #[test]
    fn an_impossible_length_skips_what_is_queued() {
        let mut f = Fake::new(0);
        f.push(b"first", 0);
        let bytes = bytemuck_bytes(&mut f.data);
        bytes[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        let mut c = f.cursor();
        assert!(c.next().is_none());
        assert_eq!(f.consumer.load(Ordering::Relaxed), 16);
        f.push(b"next", 0);
        assert_eq!(&*c.next().expect("after the skip"), b"next");
    }
}
