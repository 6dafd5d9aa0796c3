//! vardr: an eBPF runtime-security agent.
//!
//! - [`kernel`]: facts about the running kernel (mounts, BTF offsets, cgroups).
//! - [`bpf`]: the embedded BPF objects and how they are loaded.
//! - [`probe`]: what this kernel can do, and which backend each hook gets.
//! - [`events`]: decoding ring buffer records into JSON events.
//! - [`hooks`]: TracingPolicy kprobes and tracepoints at run time.
//! - [`agent`]: the long-running agent.
//! - [`pin`]: program sets pinned in bpffs (enforcement across restarts).
pub mod agent;
pub mod api;
pub mod backend;
pub mod bpf;
pub mod cedar;
pub mod compile;
pub mod events;
pub mod fanotify;
pub mod hooks;
pub mod kernel;
pub mod metrics;
pub mod names;
pub mod pin;
pub mod policy;
pub mod probe;
pub mod process;
pub mod sinks;
