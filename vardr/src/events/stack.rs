//! Stack traces of a kprobe's call (Post with `kernelStackTrace` or
//! `userStackTrace`) as Tetragon's `StackTraceEntry`: kernel return
//! addresses named from `/proc/kallsyms`, user ones placed in the file
//! mapped there (`/proc/PID/maps`, read when the event arrives).
use serde::Serialize;
use vardr_common::generic::{GEN_ACT_KSTACK, GEN_ACT_USTACK};

use super::{generic::GenericCall, json::Body, JsonEvent};

/// Names the frames of the stacks a kprobe's call carries.
#[derive(Debug, Default)]
pub struct Symbolizer {
    /// Read at the first kernel stack; `None` until then.
    kallsyms: Option<Kallsyms>,
    /// The modules and where they were loaded when it was read: a module
    /// loaded or removed since has it read again.
    modules: String,
}

impl Symbolizer {
    /// Puts the stacks of `c` into its event `j` (a `process_kprobe`).
    pub fn fill(&mut self, c: &GenericCall, j: &mut JsonEvent) {
        let Body::ProcessKprobe(h) = &mut j.body else {
            return;
        };
        let (kernel, user) = (
            c.actions & GEN_ACT_KSTACK != 0,
            c.actions & GEN_ACT_USTACK != 0,
        );
        if (kernel && c.kstack.is_empty()) || (user && c.ustack.is_empty()) {
            // The helper fails on a task with no user context, or when a
            // frame cannot be read: the event says so.
            h.stack_trace_error = Some("the kernel could not take the stack");
        }
        if kernel && !c.kstack.is_empty() {
            // Names and load addresses only: use counts change all the time.
            let modules: String = std::fs::read_to_string("/proc/modules")
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    Some(format!("{} {}\n", f.first()?, f.last()?))
                })
                .collect();
            if modules != self.modules {
                self.kallsyms = None;
                self.modules = modules;
            }
            let k = self.kallsyms.get_or_insert_with(|| {
                Kallsyms::load().unwrap_or_else(|e| {
                    tracing::warn!("kernel stack traces without symbol names: /proc/kallsyms: {e}");
                    Kallsyms::default()
                })
            });
            h.kernel_stack_trace = c.kstack.iter().map(|&a| k.entry(a)).collect();
        }
        if user && !c.ustack.is_empty() {
            h.user_stack_trace = user_entries(c.header.pid, &c.ustack);
        }
    }
}

/// One frame (Tetragon's `StackTraceEntry`; its 64-bit numbers are
/// strings in the protobuf JSON mapping, as Tetragon writes them).
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct StackEntry {
    #[serde(serialize_with = "as_string")]
    pub address: u64,
    /// From the symbol's start (kernel) or the file's start (user).
    #[serde(serialize_with = "as_string")]
    pub offset: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub symbol: String,
    /// The kernel module, or the user file mapped at the address.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub module: String,
}

fn as_string<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// The kernel's text symbols, sorted by address: read once, when the first
/// stack trace arrives (about 4 MB for 120 000 symbols), kept while the
/// agent runs.
#[derive(Debug, Default)]
pub struct Kallsyms {
    syms: Vec<Sym>,
    names: String,
    modules: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
struct Sym {
    addr: u64,
    name: u32,
    len: u16,
    /// Index into `modules`, `u16::MAX` for the kernel image.
    module: u16,
}

impl Kallsyms {
    pub fn load() -> std::io::Result<Self> {
        Ok(Self::parse(&std::fs::read_to_string("/proc/kallsyms")?))
    }

    /// `/proc/kallsyms`'s text: `ADDR TYPE NAME [MODULE]`; text symbols
    /// only. Addresses all 0 (`kptr_restrict`) leave it empty.
    pub fn parse(text: &str) -> Self {
        let mut k = Self::default();
        for line in text.lines() {
            let mut f = line.split_whitespace();
            let (Some(addr), Some(ty), Some(name)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            if !matches!(ty, "t" | "T" | "w" | "W") {
                continue;
            }
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                continue;
            };
            if addr == 0 || name.len() > usize::from(u16::MAX) {
                continue;
            }
            let module = match f
                .next()
                .and_then(|m| m.strip_prefix('[')?.strip_suffix(']'))
            {
                None => u16::MAX,
                Some(m) => match k.modules.iter().position(|x| x == m) {
                    Some(i) => i as u16,
                    None if k.modules.len() < usize::from(u16::MAX) => {
                        k.modules.push(m.to_string());
                        (k.modules.len() - 1) as u16
                    }
                    None => continue,
                },
            };
            let Ok(at) = u32::try_from(k.names.len()) else {
                break;
            };
            k.names.push_str(name);
            k.syms.push(Sym {
                addr,
                name: at,
                len: name.len() as u16,
                module,
            });
        }
        k.syms.sort_unstable_by_key(|s| s.addr);
        k.names.shrink_to_fit();
        k.syms.shrink_to_fit();
        k
    }

    /// The frame of kernel address `addr`: the nearest symbol at or below.
    pub fn entry(&self, addr: u64) -> StackEntry {
        let i = self.syms.partition_point(|s| s.addr <= addr);
        let Some(s) = i.checked_sub(1).and_then(|i| self.syms.get(i)) else {
            return StackEntry {
                address: addr,
                offset: 0,
                symbol: String::new(),
                module: String::new(),
            };
        };
        let start = s.name as usize;
        StackEntry {
            address: addr,
            offset: addr - s.addr,
            symbol: self
                .names
                .get(start..start + usize::from(s.len))
                .unwrap_or_default()
                .to_string(),
            module: self
                .modules
                .get(usize::from(s.module))
                .cloned()
                .unwrap_or_default(),
        }
    }
}

/// The frames of user addresses `addrs` of process `pid`: each with the
/// file mapped there and its offset in that file (symbols are not read
/// from the files: `addr2line -e MODULE OFFSET` names them). A process gone
/// by then leaves the addresses alone.
pub fn user_entries(pid: u32, addrs: &[u64]) -> Vec<StackEntry> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    user_entries_in(&maps, addrs)
}

fn user_entries_in(maps: &str, addrs: &[u64]) -> Vec<StackEntry> {
    // start, end, file offset, path of each file mapping.
    let regions: Vec<(u64, u64, u64, &str)> = maps
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (lo, hi) = f.next()?.split_once('-')?;
            let _perms = f.next()?;
            let off = u64::from_str_radix(f.next()?, 16).ok()?;
            let (_dev, _inode) = (f.next()?, f.next()?);
            let path = f.next().filter(|p| p.starts_with('/'))?;
            Some((
                u64::from_str_radix(lo, 16).ok()?,
                u64::from_str_radix(hi, 16).ok()?,
                off,
                path,
            ))
        })
        .collect();
    addrs
        .iter()
        .map(|&a| {
            let r = regions.iter().find(|(lo, hi, _, _)| *lo <= a && a < *hi);
            StackEntry {
                address: a,
                offset: r.map_or(0, |(lo, _, off, _)| a - lo + off),
                symbol: String::new(),
                module: r.map_or_else(String::new, |r| r.3.to_string()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_addresses_name_the_nearest_symbol_below() {
        let k = Kallsyms::parse(
            "ffffffff81000100 T second\n\
             ffffffff81000000 T _stext\n\
             ffffffff81000200 D data_not_text\n\
             ffffffffc0001000 t mod_fn\t[ext4]\n\
             0000000000000000 T hidden\n",
        );
        let e = k.entry(0xffffffff81000150);
        assert_eq!((e.symbol.as_str(), e.offset), ("second", 0x50));
        assert!(e.module.is_empty());
        let e = k.entry(0xffffffffc0001008);
        assert_eq!(
            (e.symbol.as_str(), e.offset, e.module.as_str()),
            ("mod_fn", 8, "ext4")
        );
        // Below every symbol: the address alone.
        assert!(k.entry(0x1000).symbol.is_empty());
        // Data symbols are not functions: the text symbol below wins.
        assert_eq!(k.entry(0xffffffff81000208).symbol, "second");
        // Tetragon's JSON: 64-bit numbers as strings.
        let j = serde_json::to_value(k.entry(0xffffffff81000150)).unwrap();
        assert_eq!(j["address"], "18446744071578845520");
        assert_eq!(j["offset"], "80");
    }

    #[test]
    fn user_addresses_are_placed_in_their_files() {
        let maps = "5555000-5556000 r--p 00000000 08:01 12 /usr/bin/prog\n\
                    5556000-5558000 r-xp 00001000 08:01 12 /usr/bin/prog\n\
                    7fff000-7fff100 rw-p 00000000 00:00 0 [stack]\n";
        let e = user_entries_in(maps, &[0x5556010, 0x7fff010, 0x1]);
        assert_eq!(e[0].module, "/usr/bin/prog");
        assert_eq!(e[0].offset, 0x1010);
        assert!(e[1].module.is_empty() && e[2].module.is_empty());
    }
}
