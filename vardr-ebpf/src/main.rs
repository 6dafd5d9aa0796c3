//! vardr's kernel side: exec tracking and Layer 1 enforcement.
//!
//! Every hook follows the same steps: is the task governed (exemptions,
//! scope), what do the rule maps say, then deny (LSM return value or
//! SIGKILL in the fallback) and report through the ring buffer.
#![no_std]
#![no_main]

mod attr;
mod exec;
mod file;
mod guard;
mod header;
mod identity;
mod maps;
mod mmap;
mod mutate;
mod names;
mod net;
mod path_walk;
mod process;
mod raw_send;
mod resolve;
mod scope;
mod shared;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
