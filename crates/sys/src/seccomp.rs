//! The seccomp filter of every sandboxed command — the one reviewed table of what the
//! sandbox may not ask the kernel for, with the reason for each entry.
//!
//! The filter is a deny-list over a default of "allow": a sandbox runs arbitrary developer
//! tools, so an allow-list would break them, while the syscalls below are kernel attack
//! surface no ordinary program needs. Every denial returns `EPERM` (or `ENOSYS` for
//! `clone3`, so the C library falls back to `clone`, whose flags the filter can inspect).
//! Invariant: the table is the only source of the filter; [`build_program`] adds nothing
//! but the architecture check and the x32-ABI guard, and the unit tests pin both.

use std::collections::BTreeMap;

pub use seccompiler::BpfProgram;
use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch, sock_filter,
};

/// When an entry applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Always.
    Always,
    /// When `arg & mask != 0` (any of the bits set).
    AnyBits {
        /// Argument index.
        arg: u8,
        /// The bits.
        mask: u64,
    },
    /// When `arg == value` (32-bit compare, for ioctl request numbers).
    Equals {
        /// Argument index.
        arg: u8,
        /// The value.
        value: u64,
    },
}

/// One denied syscall (or syscall shape).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied {
    /// Syscall name (for review and for tests).
    pub name: &'static str,
    /// Its number on this architecture.
    pub nr: i64,
    /// Which calls.
    pub when: When,
    /// `errno` returned.
    pub errno: i32,
    /// Why it is denied.
    pub reason: &'static str,
}

const EPERM: i32 = libc::EPERM;
const CLONE_NEWUSER: u64 = libc::CLONE_NEWUSER as u64;

macro_rules! deny {
    ($name:literal, $nr:expr, $reason:literal) => {
        Denied {
            name: $name,
            nr: $nr as i64,
            when: When::Always,
            errno: EPERM,
            reason: $reason,
        }
    };
    ($name:literal, $nr:expr, $when:expr, $errno:expr, $reason:literal) => {
        Denied {
            name: $name,
            nr: $nr as i64,
            when: $when,
            errno: $errno,
            reason: $reason,
        }
    };
}

/// The table. Review every change to it.
pub fn denied() -> Vec<Denied> {
    let mut v = vec![
        deny!(
            "mount",
            libc::SYS_mount,
            "remounting would undo the read-only binds of the jail"
        ),
        deny!(
            "umount2",
            libc::SYS_umount2,
            "unmounting could uncover what a mount hides"
        ),
        deny!(
            "pivot_root",
            libc::SYS_pivot_root,
            "changing the root is the jail's job only"
        ),
        deny!(
            "open_tree",
            libc::SYS_open_tree,
            "new mount API: same power as mount"
        ),
        deny!(
            "move_mount",
            libc::SYS_move_mount,
            "new mount API: same power as mount"
        ),
        deny!(
            "fsopen",
            libc::SYS_fsopen,
            "new mount API: creates filesystems"
        ),
        deny!(
            "fsconfig",
            libc::SYS_fsconfig,
            "new mount API: configures filesystems"
        ),
        deny!(
            "fsmount",
            libc::SYS_fsmount,
            "new mount API: mounts filesystems"
        ),
        deny!(
            "fspick",
            libc::SYS_fspick,
            "new mount API: reconfigures mounts"
        ),
        deny!(
            "mount_setattr",
            libc::SYS_mount_setattr,
            "could clear the read-only flag of a mount"
        ),
        deny!(
            "bpf",
            libc::SYS_bpf,
            "eBPF is a large kernel attack surface"
        ),
        deny!(
            "keyctl",
            libc::SYS_keyctl,
            "kernel keyrings are not namespaced and hold secrets"
        ),
        deny!(
            "add_key",
            libc::SYS_add_key,
            "kernel keyrings are not namespaced"
        ),
        deny!(
            "request_key",
            libc::SYS_request_key,
            "kernel keyrings are not namespaced"
        ),
        deny!("kexec_load", libc::SYS_kexec_load, "loading a new kernel"),
        deny!(
            "kexec_file_load",
            libc::SYS_kexec_file_load,
            "loading a new kernel"
        ),
        deny!(
            "init_module",
            libc::SYS_init_module,
            "loading kernel modules"
        ),
        deny!(
            "finit_module",
            libc::SYS_finit_module,
            "loading kernel modules"
        ),
        deny!(
            "delete_module",
            libc::SYS_delete_module,
            "unloading kernel modules"
        ),
        deny!(
            "ptrace",
            libc::SYS_ptrace,
            "tracing other processes; also a classic seccomp bypass"
        ),
        deny!(
            "process_vm_readv",
            libc::SYS_process_vm_readv,
            "reads another process's memory"
        ),
        deny!(
            "process_vm_writev",
            libc::SYS_process_vm_writev,
            "writes another process's memory"
        ),
        deny!(
            "kcmp",
            libc::SYS_kcmp,
            "leaks kernel pointers ordering between processes"
        ),
        deny!(
            "pidfd_getfd",
            libc::SYS_pidfd_getfd,
            "steals file descriptors of another process"
        ),
        deny!(
            "userfaultfd",
            libc::SYS_userfaultfd,
            "widely used to win kernel races in exploits"
        ),
        deny!(
            "io_uring_setup",
            libc::SYS_io_uring_setup,
            "io_uring bypasses seccomp for the operations it runs"
        ),
        deny!(
            "io_uring_enter",
            libc::SYS_io_uring_enter,
            "io_uring bypasses seccomp"
        ),
        deny!(
            "io_uring_register",
            libc::SYS_io_uring_register,
            "io_uring bypasses seccomp"
        ),
        deny!(
            "unshare",
            libc::SYS_unshare,
            When::AnyBits {
                arg: 0,
                mask: CLONE_NEWUSER
            },
            EPERM,
            "a nested user namespace regains every capability and exposes more kernel code"
        ),
        deny!(
            "clone",
            libc::SYS_clone,
            When::AnyBits {
                arg: 0,
                mask: CLONE_NEWUSER
            },
            EPERM,
            "a nested user namespace regains every capability and exposes more kernel code"
        ),
        deny!(
            "clone3",
            libc::SYS_clone3,
            When::Always,
            libc::ENOSYS,
            "its flags live in memory seccomp cannot read; ENOSYS makes libc fall back to clone"
        ),
        deny!("setns", libc::SYS_setns, "joining another namespace"),
        deny!(
            "perf_event_open",
            libc::SYS_perf_event_open,
            "performance counters leak host data and are attack surface"
        ),
        deny!(
            "open_by_handle_at",
            libc::SYS_open_by_handle_at,
            "opens files by handle, bypassing the mount root (shocker)"
        ),
        deny!(
            "name_to_handle_at",
            libc::SYS_name_to_handle_at,
            "companion of open_by_handle_at"
        ),
        deny!("swapon", libc::SYS_swapon, "host memory management"),
        deny!("swapoff", libc::SYS_swapoff, "host memory management"),
        deny!("reboot", libc::SYS_reboot, "host power state"),
        deny!("acct", libc::SYS_acct, "process accounting is host-wide"),
        deny!(
            "quotactl",
            libc::SYS_quotactl,
            "filesystem quotas are host-wide"
        ),
        deny!(
            "quotactl_fd",
            libc::SYS_quotactl_fd,
            "filesystem quotas are host-wide"
        ),
        deny!(
            "syslog",
            libc::SYS_syslog,
            "the kernel log leaks host data and addresses"
        ),
        deny!(
            "fanotify_init",
            libc::SYS_fanotify_init,
            "watching the host filesystem"
        ),
        deny!(
            "vhangup",
            libc::SYS_vhangup,
            "hangs up the controlling terminal"
        ),
        deny!(
            "settimeofday",
            libc::SYS_settimeofday,
            "the clock is host-wide"
        ),
        deny!(
            "clock_settime",
            libc::SYS_clock_settime,
            "the clock is host-wide"
        ),
        deny!("adjtimex", libc::SYS_adjtimex, "the clock is host-wide"),
        deny!(
            "clock_adjtime",
            libc::SYS_clock_adjtime,
            "the clock is host-wide"
        ),
        deny!(
            "ioctl(TIOCSTI)",
            libc::SYS_ioctl,
            When::Equals {
                arg: 1,
                value: libc::TIOCSTI
            },
            EPERM,
            "pushes characters into a terminal's input queue (terminal injection)"
        ),
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        deny!(
            "uselib",
            libc::SYS_uselib,
            "obsolete loader entry point, attack surface only"
        ),
        deny!("iopl", libc::SYS_iopl, "raw I/O port access"),
        deny!("ioperm", libc::SYS_ioperm, "raw I/O port access"),
    ]);
    v
}

/// Errors building the filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// This architecture is not supported by the filter compiler.
    #[error("seccomp: unsupported architecture {0}")]
    Arch(String),
    /// The filter compiler refused the table.
    #[error("seccomp: {0}")]
    Compile(String),
}

fn action(errno: i32) -> SeccompAction {
    SeccompAction::Errno(errno as u32)
}

/// Compiles the table into a BPF program for this architecture.
///
/// The program is a short hand-written prefix followed by one seccompiler filter. The prefix
/// refuses x32-ABI numbers and answers the unconditional entries whose errno is not `EPERM`
/// (`clone3` → `ENOSYS`); seccompiler has a single match action per filter, so those cannot
/// live in it. Everything else is compiled by seccompiler with `EPERM` as its match action,
/// an architecture check first and "allow" as the default.
pub fn build_program() -> Result<BpfProgram, SeccompError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|_| SeccompError::Arch(std::env::consts::ARCH.to_owned()))?;
    let table = denied();
    let mut program: BpfProgram = x32_guard();
    let compile = |e: seccompiler::BackendError| SeccompError::Compile(e.to_string());
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for d in &table {
        if d.errno != EPERM {
            if d.when != When::Always {
                return Err(SeccompError::Compile(format!(
                    "{}: a non-EPERM entry must be unconditional",
                    d.name
                )));
            }
            let nr = u32::try_from(d.nr)
                .map_err(|_| SeccompError::Compile(format!("{}: bad number", d.name)))?;
            program.push(sock_filter {
                code: BPF_JMP_JEQ_K,
                jt: 0,
                jf: 1,
                k: nr,
            });
            program.push(stmt(
                BPF_RET_K,
                SECCOMP_RET_ERRNO | (d.errno as u32 & 0xffff),
            ));
            continue;
        }
        let entry = rules.entry(d.nr).or_default();
        match d.when {
            When::Always => {}
            When::AnyBits { arg, mask } => {
                // One rule per bit: "arg & bit == bit" for each bit set in the mask.
                for bit in (0..64).map(|b| 1u64 << b).filter(|b| mask & b != 0) {
                    let c = SeccompCondition::new(
                        arg,
                        SeccompCmpArgLen::Qword,
                        SeccompCmpOp::MaskedEq(bit),
                        bit,
                    )
                    .map_err(compile)?;
                    entry.push(SeccompRule::new(vec![c]).map_err(compile)?);
                }
            }
            When::Equals { arg, value } => {
                let c =
                    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
                        .map_err(compile)?;
                entry.push(SeccompRule::new(vec![c]).map_err(compile)?);
            }
        }
    }
    let filter =
        SeccompFilter::new(rules, SeccompAction::Allow, action(EPERM), arch).map_err(compile)?;
    let part: BpfProgram = filter.try_into().map_err(compile)?;
    program.extend(part);
    Ok(program)
}

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JGE_K: u16 = 0x35;
const BPF_JMP_JEQ_K: u16 = 0x15;
const BPF_RET_K: u16 = 0x06;
#[cfg(test)]
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
/// Syscall numbers at or above this are the x32 ABI on x86_64. They share the x86_64 audit
/// arch, so a deny-list keyed on x86_64 numbers would miss them.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

/// `if (nr >= X32_SYSCALL_BIT) return ENOSYS;` — placed before everything else.
fn x32_guard() -> BpfProgram {
    vec![
        stmt(BPF_LD_W_ABS, 0),
        sock_filter {
            code: BPF_JMP_JGE_K,
            jt: 0,
            jf: 1,
            k: X32_SYSCALL_BIT,
        },
        stmt(BPF_RET_K, SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_the_required_syscalls_with_reasons() {
        let t = denied();
        for name in [
            "mount",
            "umount2",
            "pivot_root",
            "bpf",
            "keyctl",
            "add_key",
            "request_key",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "userfaultfd",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "unshare",
            "setns",
            "clone",
            "perf_event_open",
            "open_by_handle_at",
            "swapon",
            "swapoff",
            "reboot",
            "acct",
            "quotactl",
            "name_to_handle_at",
        ] {
            let d = t
                .iter()
                .find(|d| d.name == name)
                .unwrap_or_else(|| panic!("{name} missing"));
            assert!(d.reason.len() > 10, "{name} needs a reason");
        }
        let clone = t.iter().find(|d| d.name == "clone").unwrap();
        assert_eq!(
            clone.when,
            When::AnyBits {
                arg: 0,
                mask: libc::CLONE_NEWUSER as u64
            }
        );
        let clone3 = t.iter().find(|d| d.name == "clone3").unwrap();
        assert_eq!(clone3.errno, libc::ENOSYS);
        let mut names: Vec<_> = t.iter().map(|d| d.name).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(n, names.len(), "duplicate entries");
    }

    #[test]
    fn program_starts_with_the_guards() {
        let p = build_program().unwrap();
        assert!(p.len() > 50);
        assert_eq!(p[0], stmt(BPF_LD_W_ABS, 0));
        assert_eq!(p[1].k, X32_SYSCALL_BIT);
        assert_eq!(p[2].k, SECCOMP_RET_ERRNO | libc::ENOSYS as u32);
        assert_eq!(
            p[3],
            sock_filter {
                code: BPF_JMP_JEQ_K,
                jt: 0,
                jf: 1,
                k: libc::SYS_clone3 as u32
            }
        );
        assert_eq!(p[4].k, SECCOMP_RET_ERRNO | libc::ENOSYS as u32);
        // The default is allow, and every EPERM return is the table's action.
        assert!(
            p.iter()
                .any(|i| i.code == BPF_RET_K && i.k == SECCOMP_RET_ALLOW)
        );
        assert!(
            p.iter()
                .any(|i| i.code == BPF_RET_K && i.k == SECCOMP_RET_ERRNO | libc::EPERM as u32)
        );
    }
}
