//! Override on kprobes. The kprobe program decides (the hook's selectors,
//! in the kernel) and leaves the error in `GEN_OVERRIDE` under (thread,
//! hook); a `BPF_MODIFY_RETURN` ("fmod_ret") program of the hook on the
//! same function, which runs right after the kprobe at the function's
//! entry, takes the entry out and returns its error: the function does
//! not run and its caller gets the error. This is Tetragon's fmod_ret
//! override method; it needs no `CONFIG_BPF_KPROBE_OVERRIDE` (which
//! Debian's kernels lack), only BPF trampolines. The kernel allows it on
//! `security_*` functions, and on kernels with
//! `CONFIG_FUNCTION_ERROR_INJECTION` on functions marked
//! `ALLOW_ERROR_INJECTION` (system calls among them).
//!
//! The program is a few instructions, assembled here: aya 0.14 cannot
//! load fmod_ret programs.
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::backend::sys::bpf_fd;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_PROG_TYPE_TRACING: u32 = 26;
const BPF_MODIFY_RETURN: u32 = 26;
const BPF_PSEUDO_MAP_FD: u8 = 1;
const HELPER_MAP_LOOKUP: i32 = 1;
const HELPER_MAP_DELETE: i32 = 3;
const HELPER_PID_TGID: i32 = 14;

/// The `BPF_PROG_LOAD` member of `union bpf_attr`, up to `attach_btf_obj_fd`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
    attach_btf_obj_fd: u32,
    _pad: u32,
}

/// The `raw_tracepoint` member of `union bpf_attr` (also attaches tracing
/// programs: no name, the target is the program's).
#[repr(C)]
#[derive(Default)]
struct RawTpAttr {
    name: u64,
    prog_fd: u32,
    _pad: u32,
}

/// One instruction: opcode, registers, offset, immediate.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let o = off.to_le_bytes();
    let i = imm.to_le_bytes();
    [code, (src << 4) | dst, o[0], o[1], i[0], i[1], i[2], i[3]]
}

/// The program of hook `slot`: look up (this thread, `slot`) in the map;
/// found, delete it and return its error (the function is skipped), else
/// return 0 (the function runs).
fn program(map_fd: i32, slot: u32) -> Vec<[u8; 8]> {
    const R0: u8 = 0;
    const R1: u8 = 1;
    const R2: u8 = 2;
    const R6: u8 = 6;
    const FP: u8 = 10;
    let load_map = |out: &mut Vec<[u8; 8]>| {
        out.push(insn(0x18, R1, BPF_PSEUDO_MAP_FD, 0, map_fd)); // ld_imm64 r1 = map
        out.push(insn(0, 0, 0, 0, 0));
    };
    let key_ptr = |out: &mut Vec<[u8; 8]>| {
        out.push(insn(0xbf, R2, FP, 0, 0)); // r2 = r10
        out.push(insn(0x07, R2, 0, 0, -16)); // r2 += -16
    };
    let mut p = Vec::with_capacity(21);
    p.push(insn(0x85, 0, 0, 0, HELPER_PID_TGID)); // call get_current_pid_tgid
    p.push(insn(0x7b, FP, R0, -16, 0)); // *(u64 *)(r10 - 16) = r0
    p.push(insn(0x7a, FP, 0, -8, slot as i32)); // *(u64 *)(r10 - 8) = slot
    load_map(&mut p);
    key_ptr(&mut p);
    p.push(insn(0x85, 0, 0, 0, HELPER_MAP_LOOKUP)); // call map_lookup_elem
    p.push(insn(0x15, R0, 0, 10, 0)); // if r0 == 0 goto +10 (return 0)
    p.push(insn(0x61, R6, R0, 0, 0)); // r6 = *(u32 *)(r0 + 0)
    p.push(insn(0x67, R6, 0, 0, 32)); // r6 <<= 32
    p.push(insn(0xc7, R6, 0, 0, 32)); // r6 s>>= 32: the errno, sign-extended
    load_map(&mut p);
    key_ptr(&mut p);
    p.push(insn(0x85, 0, 0, 0, HELPER_MAP_DELETE)); // call map_delete_elem
    p.push(insn(0xbf, R0, R6, 0, 0)); // r0 = r6
    p.push(insn(0x95, 0, 0, 0, 0)); // exit
    p.push(insn(0xb7, R0, 0, 0, 0)); // r0 = 0
    p.push(insn(0x95, 0, 0, 0, 0)); // exit
    p
}

/// A hook's fmod_ret program, attached (dropped: detached and unloaded).
#[derive(Debug)]
pub struct OverrideLink {
    link: OwnedFd,
    _prog: OwnedFd,
}

impl OverrideLink {
    /// The link (to pin: the pin keeps the program attached).
    pub fn link_fd(&self) -> BorrowedFd<'_> {
        self.link.as_fd()
    }
}

/// Loads and attaches the override program of hook `slot` on `function`.
/// The error says why the kernel refused, in its words and ours.
pub fn attach(function: &str, slot: u32, map: BorrowedFd<'_>) -> Result<OverrideLink, String> {
    let btf_id = crate::kernel::btf::function_id(function).map_err(|e| e.to_string())?;
    let insns = program(map.as_raw_fd(), slot);
    let license = c"GPL";
    let mut log = vec![0u8; 4096];
    let mut name = [0u8; 16];
    name[..12].copy_from_slice(b"vardr_fmodrt");
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_TRACING,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        prog_name: name,
        expected_attach_type: BPF_MODIFY_RETURN,
        attach_btf_id: btf_id,
        ..ProgLoadAttr::default()
    };
    // SAFETY: a `BPF_PROG_LOAD` attr whose pointers (instructions,
    // license, log) outlive the call; the kernel writes at most `log_size`
    // bytes of log.
    let prog = unsafe { bpf_fd(BPF_PROG_LOAD, &mut attr) }.map_err(|e| {
        let text = String::from_utf8_lossy(&log[..log.iter().position(|&c| c == 0).unwrap_or(0)])
            .trim()
            .lines()
            .last()
            .unwrap_or_default()
            .to_string();
        refusal(function, &e, &text)
    })?;
    // SAFETY: the kernel returned a new descriptor, now owned here.
    let prog = unsafe { OwnedFd::from_raw_fd(prog) };
    let mut open = RawTpAttr {
        prog_fd: prog.as_raw_fd() as u32,
        ..RawTpAttr::default()
    };
    // SAFETY: a `BPF_RAW_TRACEPOINT_OPEN` attr without a name: the kernel
    // attaches the tracing program to its target.
    let link = unsafe { bpf_fd(BPF_RAW_TRACEPOINT_OPEN, &mut open) }
        .map_err(|e| format!("Override on {function}: attaching its fmod_ret program: {e}"))?;
    // SAFETY: as above.
    let link = unsafe { OwnedFd::from_raw_fd(link) };
    Ok(OverrideLink { link, _prog: prog })
}

/// Why the kernel refused an override program on `function`.
fn refusal(function: &str, e: &std::io::Error, verifier: &str) -> String {
    let said = if verifier.is_empty() {
        e.to_string()
    } else {
        format!("{e}: {verifier}")
    };
    match e.raw_os_error() {
        Some(libc::EINVAL) if !function.starts_with("security_") => format!(
            "Override on {function}: the kernel does not let a program fail this function ({said}); it allows it for security_* functions, and for functions marked ALLOW_ERROR_INJECTION (system calls with `syscall: true`, ...) only on kernels built with CONFIG_FUNCTION_ERROR_INJECTION; use a security_* function, an lsmhooks entry or Sigkill"
        ),
        Some(libc::EPERM | libc::EOPNOTSUPP) => format!(
            "Override on {function}: this kernel does not load BPF trampoline programs (fmod_ret), which Override needs ({said}); use Sigkill"
        ),
        _ => format!("Override on {function}: the kernel refused its fmod_ret program ({said})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_returns_the_error_it_finds_and_jumps_to_return_0_otherwise() {
        let p = program(7, 3);
        assert_eq!(p.len(), 21);
        // The jump over the found branch lands on `r0 = 0; exit`.
        let jump = p.iter().position(|i| i[0] == 0x15).expect("jeq");
        let off = i16::from_le_bytes([p[jump][2], p[jump][3]]) as usize;
        assert_eq!(p[jump + 1 + off], insn(0xb7, 0, 0, 0, 0));
        assert_eq!(p[jump + 2 + off], insn(0x95, 0, 0, 0, 0));
        // Both map loads carry the map's descriptor; the key holds the slot.
        let maps: Vec<_> = p.iter().filter(|i| i[0] == 0x18).collect();
        assert_eq!(maps.len(), 2);
        assert!(maps.iter().all(|i| i[1] == 0x11 && i[4] == 7));
        assert_eq!(p[2], insn(0x7a, 10, 0, -8, 3));
    }

    #[test]
    fn refusals_say_what_the_kernel_allows() {
        let e = std::io::Error::from_raw_os_error(libc::EINVAL);
        let m = refusal("do_mkdirat", &e, "do_mkdirat() is not modifiable");
        assert!(
            m.contains("security_*") && m.contains("is not modifiable"),
            "{m}"
        );
        let e = std::io::Error::from_raw_os_error(libc::EPERM);
        assert!(refusal("security_file_open", &e, "").contains("trampoline"));
    }
}
