//! The seccomp filter of every sandboxed command — the one reviewed table of what the
//! sandbox may not ask the kernel for, with the reason for each entry.
//!
//! The filter is a deny-list over a default of "allow": a sandbox runs arbitrary developer
//! tools, so an allow-list would break them, while the syscalls below are kernel attack
//! surface no ordinary program needs. Every denial returns `EPERM` (or `ENOSYS` for
//! `clone3`, so the C library falls back to `clone`, whose flags the filter can inspect).
//! Invariant: the table is the only source of the filter; [`build_program`] adds nothing
//! but the architecture check and the x32-ABI guard. The unit tests run the compiled
//! program in a BPF interpreter for every syscall number and compare it with the table.

use std::collections::BTreeMap;

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
/// `S_ISUID | S_ISGID`.
const SETID_BITS: u64 = 0o6000;
/// `fchmodat2` (Linux 6.6), not yet in every libc.
const SYS_FCHMODAT2: i64 = 452;
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
        deny!(
            "fchmod(setuid/setgid)",
            libc::SYS_fchmod,
            When::AnyBits {
                arg: 1,
                mask: SETID_BITS
            },
            EPERM,
            "a set-id file the sandbox makes would run with its owner's ids on the host"
        ),
        deny!(
            "fchmodat(setuid/setgid)",
            libc::SYS_fchmodat,
            When::AnyBits {
                arg: 2,
                mask: SETID_BITS
            },
            EPERM,
            "a set-id file the sandbox makes would run with its owner's ids on the host"
        ),
        deny!(
            "fchmodat2(setuid/setgid)",
            SYS_FCHMODAT2,
            When::AnyBits {
                arg: 2,
                mask: SETID_BITS
            },
            EPERM,
            "a set-id file the sandbox makes would run with its owner's ids on the host"
        ),
        deny!(
            "openat(setuid/setgid mode)",
            libc::SYS_openat,
            When::AnyBits {
                arg: 3,
                mask: SETID_BITS
            },
            EPERM,
            "creating a set-id file (files of an idmapped mount are owned by their host owner)"
        ),
        deny!(
            "openat2",
            libc::SYS_openat2,
            When::Always,
            libc::ENOSYS,
            "its mode lives in memory seccomp cannot read; ENOSYS makes callers fall back to openat"
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
        deny!(
            "chmod(setuid/setgid)",
            libc::SYS_chmod,
            When::AnyBits {
                arg: 1,
                mask: SETID_BITS
            },
            EPERM,
            "a set-id file the sandbox makes would run with its owner's ids on the host"
        ),
        deny!(
            "open(setuid/setgid mode)",
            libc::SYS_open,
            When::AnyBits {
                arg: 2,
                mask: SETID_BITS
            },
            EPERM,
            "creating a set-id file (files of an idmapped mount are owned by their host owner)"
        ),
        deny!(
            "creat(setuid/setgid mode)",
            libc::SYS_creat,
            When::AnyBits {
                arg: 1,
                mask: SETID_BITS
            },
            EPERM,
            "creating a set-id file (files of an idmapped mount are owned by their host owner)"
        ),
    ]);
    v
}

/// Errors building the filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// This architecture is not supported by the filter compiler.
    #[error("seccomp: unsupported architecture {0}")]
    Arch(String),
    /// The table has an entry the compiler cannot express.
    #[error("seccomp: {0}")]
    Compile(String),
}

/// One classic BPF instruction, laid out as the kernel's `struct sock_filter`
/// (`u16 code; u8 jt; u8 jf; u32 k`), so a `&[Insn]` can be handed to the kernel as is.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u16,
    /// Jump offset when the condition holds.
    pub jt: u8,
    /// Jump offset when it does not.
    pub jf: u8,
    /// Operand.
    pub k: u32,
}

const _: () = assert!(std::mem::size_of::<Insn>() == std::mem::size_of::<libc::sock_filter>());

/// A compiled filter.
pub type BpfProgram = Vec<Insn>;

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JA: u16 = 0x05;
const BPF_JMP_JEQ_K: u16 = 0x15;
const BPF_JMP_JGE_K: u16 = 0x35;
const BPF_JMP_JSET_K: u16 = 0x45;
const BPF_RET_K: u16 = 0x06;
const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
/// Offsets in the kernel's `struct seccomp_data`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
const DATA_ARGS: u32 = 16;
/// Syscall numbers at or above this are the x32 ABI on x86_64. They share the x86_64 audit
/// arch, so a deny-list keyed on x86_64 numbers would miss them.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The audit architecture the syscall numbers of [`denied`] belong to.
fn audit_arch() -> Result<u32, SeccompError> {
    match std::env::consts::ARCH {
        "x86_64" => Ok(0xc000_003e),
        "aarch64" => Ok(0xc000_00b7),
        "riscv64" => Ok(0xc000_00f3),
        other => Err(SeccompError::Arch(other.to_owned())),
    }
}

fn stmt(code: u16, k: u32) -> Insn {
    Insn {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Insn {
    Insn { code, jt, jf, k }
}

fn ret_errno(errno: i32) -> Insn {
    stmt(BPF_RET_K, SECCOMP_RET_ERRNO | (errno as u32 & 0xffff))
}

/// What one syscall number gets: its table entries, merged.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// Always this errno.
    Always(i32),
    /// `EPERM` when any of these conditions holds, else allowed.
    When(Vec<When>),
}

/// Groups the table by syscall number. Two unconditional entries for one number, or a
/// conditional entry whose errno is not `EPERM`, are refused: the filter could not say
/// which one applies.
fn verdicts(table: &[Denied]) -> Result<BTreeMap<u32, Verdict>, SeccompError> {
    let mut out: BTreeMap<u32, Verdict> = BTreeMap::new();
    for d in table {
        let nr = u32::try_from(d.nr)
            .map_err(|_| SeccompError::Compile(format!("{}: bad number {}", d.name, d.nr)))?;
        let next = match d.when {
            When::Always => Verdict::Always(d.errno),
            w if d.errno == EPERM => Verdict::When(vec![w]),
            _ => {
                return Err(SeccompError::Compile(format!(
                    "{}: a conditional entry must return EPERM",
                    d.name
                )));
            }
        };
        match (out.remove(&nr), next) {
            (None, v) => {
                out.insert(nr, v);
            }
            (Some(Verdict::When(mut a)), Verdict::When(b)) => {
                a.extend(b);
                out.insert(nr, Verdict::When(a));
            }
            (Some(Verdict::Always(_)), _) | (Some(_), Verdict::Always(_)) => {
                return Err(SeccompError::Compile(format!(
                    "{}: an unconditional entry must be the only one for its number",
                    d.name
                )));
            }
        }
    }
    Ok(out)
}

/// Code that returns `EPERM` when any condition holds, else allows. Expects nothing in A.
fn conditions(when: &[When]) -> Result<Vec<Insn>, SeccompError> {
    // Each test is (load, jset/jeq); the jump target "deny" is the last instruction.
    let mut tests: Vec<(u32, u16, u32)> = Vec::new();
    for w in when {
        match *w {
            When::Always => {}
            When::AnyBits { arg, mask } => {
                let off = DATA_ARGS + 8 * u32::from(arg);
                let (lo, hi) = (mask as u32, (mask >> 32) as u32);
                if lo != 0 {
                    tests.push((off, BPF_JMP_JSET_K, lo));
                }
                if hi != 0 {
                    tests.push((off + 4, BPF_JMP_JSET_K, hi));
                }
            }
            When::Equals { arg, value } => {
                let v = u32::try_from(value).map_err(|_| {
                    SeccompError::Compile(format!("a 32-bit compare with {value:#x}"))
                })?;
                tests.push((DATA_ARGS + 8 * u32::from(arg), BPF_JMP_JEQ_K, v));
            }
        }
        if let When::AnyBits { arg, .. } | When::Equals { arg, .. } = *w
            && arg > 5
        {
            return Err(SeccompError::Compile(format!(
                "argument {arg} out of range"
            )));
        }
    }
    let mut code = Vec::with_capacity(tests.len() * 2 + 2);
    let n = tests.len();
    for (i, (off, op, k)) in tests.into_iter().enumerate() {
        // Instructions left after this jump before "deny": the remaining tests, "allow".
        let to_deny = u8::try_from(2 * (n - i - 1) + 1)
            .map_err(|_| SeccompError::Compile("too many conditions on one syscall".into()))?;
        code.push(stmt(BPF_LD_W_ABS, off));
        code.push(jump(op, k, to_deny, 0));
    }
    code.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
    code.push(ret_errno(EPERM));
    Ok(code)
}

/// An instruction whose jump goes to a handler placed after the tree.
enum Slot {
    Insn(Insn),
    /// `ja` to the handler of this syscall number.
    ToHandler(u32),
}

/// A binary search over the sorted numbers in `keys`, with A holding the syscall number:
/// two instructions per level, then a leaf. Every number not in `keys` ends in "allow".
fn tree(keys: &[(u32, &Verdict)], out: &mut Vec<Slot>) -> Result<(), SeccompError> {
    match keys {
        [] => out.push(Slot::Insn(stmt(BPF_RET_K, SECCOMP_RET_ALLOW))),
        [(nr, verdict)] => {
            out.push(Slot::Insn(jump(BPF_JMP_JEQ_K, *nr, 0, 1)));
            out.push(match verdict {
                Verdict::Always(errno) => Slot::Insn(ret_errno(*errno)),
                Verdict::When(_) => Slot::ToHandler(*nr),
            });
            out.push(Slot::Insn(stmt(BPF_RET_K, SECCOMP_RET_ALLOW)));
        }
        _ => {
            let (left, right) = keys.split_at(keys.len() / 2);
            let mut l = Vec::new();
            tree(left, &mut l)?;
            // `jge right[0]`: taken → jump over the left subtree; else fall into it.
            let over = u8::try_from(l.len())
                .map_err(|_| SeccompError::Compile("the table is too large".into()))?;
            out.push(Slot::Insn(jump(BPF_JMP_JGE_K, right[0].0, over, 0)));
            out.append(&mut l);
            tree(right, out)?;
        }
    }
    Ok(())
}

/// Compiles the table into a BPF program for this architecture.
///
/// Layout: a wrong architecture kills the process (the numbers below mean other syscalls
/// there); on x86_64 an x32-ABI number gets `ENOSYS`; then a binary search over the
/// table's syscall numbers, whose leaves return the entry's errno, jump to the entry's
/// argument checks, or allow. A search rather than a chain keeps the kernel's work small:
/// when the filter is attached the kernel runs it once per syscall number to find the
/// ones it may allow without running it again, and a chain of every entry made that the
/// costliest step of starting a jail.
pub fn build_program() -> Result<BpfProgram, SeccompError> {
    compile(&denied())
}

/// The filter of a sandbox's init: the table without its `clone3` entry. Init creates
/// commands in their cgroup slots with `clone3(CLONE_INTO_CGROUP)`, and every child of init
/// adds a filter of its own refusing `clone3` (`init/init.rs`) before it runs anything, so
/// the commands get exactly [`build_program`]'s verdicts: filters stack, and the sandbox can
/// never remove one.
pub fn build_init_program() -> Result<BpfProgram, SeccompError> {
    let table: Vec<Denied> = denied()
        .into_iter()
        .filter(|d| d.name != "clone3")
        .collect();
    compile(&table)
}

fn compile(table: &[Denied]) -> Result<BpfProgram, SeccompError> {
    let arch = audit_arch()?;
    let verdicts = verdicts(table)?;
    let mut program: BpfProgram = vec![
        stmt(BPF_LD_W_ABS, DATA_ARCH),
        jump(BPF_JMP_JEQ_K, arch, 1, 0),
        stmt(BPF_RET_K, SECCOMP_RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, DATA_NR),
    ];
    #[cfg(target_arch = "x86_64")]
    program.extend([
        jump(BPF_JMP_JGE_K, X32_SYSCALL_BIT, 0, 1),
        ret_errno(libc::ENOSYS),
    ]);
    let keys: Vec<(u32, &Verdict)> = verdicts.iter().map(|(nr, v)| (*nr, v)).collect();
    let mut slots = Vec::new();
    tree(&keys, &mut slots)?;
    // Handlers follow the tree, in number order.
    let tree_start = program.len();
    let mut handler_at: BTreeMap<u32, usize> = BTreeMap::new();
    let mut handlers: Vec<Insn> = Vec::new();
    for (nr, v) in &verdicts {
        if let Verdict::When(w) = v {
            handler_at.insert(*nr, tree_start + slots.len() + handlers.len());
            handlers.extend(conditions(w)?);
        }
    }
    for (i, slot) in slots.into_iter().enumerate() {
        program.push(match slot {
            Slot::Insn(insn) => insn,
            Slot::ToHandler(nr) => {
                let target = handler_at[&nr];
                let pc = tree_start + i;
                let off = u32::try_from(target - pc - 1)
                    .map_err(|_| SeccompError::Compile("program too long".into()))?;
                stmt(BPF_JMP_JA, off)
            }
        });
    }
    program.extend(handlers);
    if program.len() > usize::from(u16::MAX) {
        return Err(SeccompError::Compile("program too long".into()));
    }
    Ok(program)
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

    fn run(program: &[Insn], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
        run_counting(program, nr, arch, args).0
    }

    /// A classic BPF interpreter for what the compiler emits: the seccomp result of
    /// `program` for one call, and how many instructions it ran.
    fn run_counting(program: &[Insn], nr: u32, arch: u32, args: [u64; 6]) -> (u32, usize) {
        let word = |off: u32| -> u32 {
            match off {
                DATA_NR => nr,
                DATA_ARCH => arch,
                o if (DATA_ARGS..DATA_ARGS + 48).contains(&o) && o.is_multiple_of(4) => {
                    let a = args[((o - DATA_ARGS) / 8) as usize];
                    if (o - DATA_ARGS).is_multiple_of(8) {
                        a as u32
                    } else {
                        (a >> 32) as u32
                    }
                }
                o => panic!("load of offset {o}"),
            }
        };
        let (mut pc, mut acc, mut steps) = (0usize, 0u32, 0usize);
        loop {
            let i = program[pc];
            pc += 1;
            steps += 1;
            let cond = |t: bool| if t { i.jt as usize } else { i.jf as usize };
            match i.code {
                BPF_LD_W_ABS => acc = word(i.k),
                BPF_RET_K => return (i.k, steps),
                BPF_JMP_JA => pc += i.k as usize,
                BPF_JMP_JEQ_K => pc += cond(acc == i.k),
                BPF_JMP_JGE_K => pc += cond(acc >= i.k),
                BPF_JMP_JSET_K => pc += cond(acc & i.k != 0),
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    /// What the table says one call gets.
    fn expected(table: &[Denied], nr: u32, args: [u64; 6]) -> u32 {
        #[cfg(target_arch = "x86_64")]
        if nr >= X32_SYSCALL_BIT {
            return SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
        }
        for d in table.iter().filter(|d| d.nr == i64::from(nr)) {
            let hit = match d.when {
                When::Always => true,
                When::AnyBits { arg, mask } => args[arg as usize] & mask != 0,
                When::Equals { arg, value } => args[arg as usize] as u32 == value as u32,
            };
            if hit {
                return SECCOMP_RET_ERRNO | d.errno as u32;
            }
        }
        SECCOMP_RET_ALLOW
    }

    fn interesting_args(table: &[Denied]) -> Vec<[u64; 6]> {
        let mut v = vec![
            [0; 6],
            [u64::MAX; 6],
            [0xffff_ffff; 6],
            [0xffff_ffff_0000_0000; 6],
        ];
        for d in table {
            match d.when {
                When::Always => {}
                When::AnyBits { arg, mask } => {
                    for bits in [mask, mask | 1, !mask, mask << 32, mask.wrapping_sub(1)] {
                        let mut a = [0; 6];
                        a[arg as usize] = bits;
                        v.push(a);
                    }
                }
                When::Equals { arg, value } => {
                    for x in [value, value + 1, value.wrapping_sub(1), value | 1 << 40] {
                        let mut a = [0; 6];
                        a[arg as usize] = x;
                        v.push(a);
                    }
                }
            }
        }
        v
    }

    #[test]
    fn the_program_does_what_the_table_says_for_every_syscall_number() {
        let table = denied();
        let p = build_program().unwrap();
        let arch = audit_arch().unwrap();
        let args = interesting_args(&table);
        let mut numbers: Vec<u32> = (0..1024).collect();
        numbers.extend([u32::MAX, 0x4000_0000, 0x4000_0000 + libc::SYS_mount as u32]);
        let mut denied_seen = 0;
        for nr in numbers {
            for a in &args {
                let got = run(&p, nr, arch, *a);
                assert_eq!(got, expected(&table, nr, *a), "nr {nr} args {a:x?}");
                denied_seen += usize::from(got != SECCOMP_RET_ALLOW);
            }
        }
        assert!(denied_seen > table.len());
    }

    #[test]
    fn inits_program_differs_only_in_allowing_clone3() {
        let table = denied();
        let (full, init) = (build_program().unwrap(), build_init_program().unwrap());
        let arch = audit_arch().unwrap();
        for a in interesting_args(&table) {
            for nr in 0..1024u32 {
                let (f, i) = (run(&full, nr, arch, a), run(&init, nr, arch, a));
                if nr == libc::SYS_clone3 as u32 {
                    assert_eq!(i, SECCOMP_RET_ALLOW);
                    assert_eq!(f, SECCOMP_RET_ERRNO | libc::ENOSYS as u32);
                } else {
                    assert_eq!(f, i, "nr {nr}");
                }
            }
        }
    }

    #[test]
    fn spot_checks_of_the_compiled_program() {
        let p = build_program().unwrap();
        let arch = audit_arch().unwrap();
        let eperm = SECCOMP_RET_ERRNO | libc::EPERM as u32;
        assert_eq!(run(&p, libc::SYS_mount as u32, arch, [0; 6]), eperm);
        assert_eq!(
            run(&p, libc::SYS_read as u32, arch, [0; 6]),
            SECCOMP_RET_ALLOW
        );
        assert_eq!(
            run(&p, libc::SYS_clone3 as u32, arch, [0; 6]),
            SECCOMP_RET_ERRNO | libc::ENOSYS as u32
        );
        let newuser = [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0];
        assert_eq!(run(&p, libc::SYS_clone as u32, arch, newuser), eperm);
        assert_eq!(run(&p, libc::SYS_unshare as u32, arch, newuser), eperm);
        let newns = [libc::CLONE_NEWNS as u64, 0, 0, 0, 0, 0];
        assert_eq!(
            run(&p, libc::SYS_unshare as u32, arch, newns),
            SECCOMP_RET_ALLOW
        );
        let tiocsti = [0, libc::TIOCSTI, 0, 0, 0, 0];
        assert_eq!(run(&p, libc::SYS_ioctl as u32, arch, tiocsti), eperm);
        let tcgets = [0, libc::TCGETS, 0, 0, 0, 0];
        assert_eq!(
            run(&p, libc::SYS_ioctl as u32, arch, tcgets),
            SECCOMP_RET_ALLOW
        );
        // Another architecture's numbers mean other syscalls: the process is killed.
        assert_eq!(
            run(&p, libc::SYS_read as u32, 0x4000_0003, [0; 6]),
            SECCOMP_RET_KILL_PROCESS
        );
    }

    #[test]
    fn every_syscall_number_is_decided_in_a_few_instructions() {
        // The kernel runs the filter once per syscall number when it is attached; a search
        // keeps that cheap. Count the instructions each number runs through.
        let p = build_program().unwrap();
        let arch = audit_arch().unwrap();
        let table_len = denied().len();
        let worst = (0..512)
            .map(|nr| run_counting(&p, nr, arch, [0; 6]).1)
            .max()
            .unwrap();
        let depth = usize::BITS - table_len.leading_zeros();
        assert!(
            worst <= 6 + depth as usize + 8,
            "{worst} instructions for one number (table of {table_len})"
        );
    }

    #[test]
    fn conflicting_entries_are_refused() {
        let d = |when, errno| Denied {
            name: "x",
            nr: 1,
            when,
            errno,
            reason: "test entry",
        };
        assert!(verdicts(&[d(When::Always, EPERM), d(When::Always, libc::ENOSYS)]).is_err());
        let bits = When::AnyBits { arg: 0, mask: 1 };
        assert!(verdicts(&[d(bits, libc::ENOSYS)]).is_err());
        assert!(verdicts(&[d(bits, EPERM), d(When::Always, EPERM)]).is_err());
        assert!(verdicts(&[d(bits, EPERM), d(When::Equals { arg: 1, value: 2 }, EPERM)]).is_ok());
        assert!(
            conditions(&[When::Equals {
                arg: 1,
                value: 1 << 33
            }])
            .is_err()
        );
        assert!(conditions(&[When::AnyBits { arg: 6, mask: 1 }]).is_err());
    }
}
