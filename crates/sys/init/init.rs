//! A sandbox's init: pid 1 of the jail, for as long as the sandbox lives.
//!
//! Paddock builds a sandbox's jail once (namespaces, root, limits, seccomp) and then
//! `execve`s this program as the jail's pid 1 (from a sealed memfd, so nothing of it needs to
//! be in the sandbox's root). From then on every command of the sandbox is a child of this
//! init, as a container's `exec` is: Paddock sends a RUN message on the control socket
//! (`INIT_CTL_FD`, see `proto.rs`) with the command and the descriptors the child gets, and
//! init starts the shell and reports STARTED, then EXITED with its wait status (or FAILED
//! with the step and errno when it could not start it). Init reaps every process of the
//! jail, including the background processes a command leaves behind. When Paddock's end of
//! the socket closes (Paddock exited or dropped the sandbox), init exits, and the kernel
//! kills everything left in the pid namespace.
//!
//! Invariant: init never allocates and never trusts a message further than its bounds
//! checks: a malformed message ends init (and so the jail), never a wrong command.
//!
//! Built by `build.rs` with `rustc -C panic=abort -C target-feature=+crt-static`: a static
//! executable with no std, so it runs in any root (an image without glibc included) and
//! costs the sandbox a few hundred kilobytes of memory, not a copy of Paddock.
#![no_std]
#![no_main]
#![allow(clippy::missing_safety_doc)]

use core::ffi::{c_char, c_int, c_long, c_short, c_uint, c_void};

include!("proto.rs");

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // SAFETY: _exit ends the process; nothing else can run.
    unsafe { _exit(127) }
}

/// libcore is prebuilt with unwinding tables that name this symbol; with `panic=abort`
/// nothing ever calls it.
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}

#[repr(C)]
struct IoVec {
    base: *mut c_void,
    len: usize,
}

#[repr(C)]
struct MsgHdr {
    name: *mut c_void,
    namelen: c_uint,
    iov: *mut IoVec,
    iovlen: usize,
    control: *mut c_void,
    controllen: usize,
    flags: c_int,
}

#[repr(C)]
struct PollFd {
    fd: c_int,
    events: c_short,
    revents: c_short,
}

/// glibc's `sigset_t` (1024 bits).
#[repr(C)]
struct SigSet([u64; 16]);

#[link(name = "c")]
unsafe extern "C" {
    fn read(fd: c_int, buf: *mut c_void, n: usize) -> isize;
    fn pipe2(fds: *mut c_int, flags: c_int) -> c_int;
    fn send(fd: c_int, buf: *const c_void, n: usize, flags: c_int) -> isize;
    fn recvmsg(fd: c_int, msg: *mut MsgHdr, flags: c_int) -> isize;
    fn poll(fds: *mut PollFd, n: u64, timeout: c_int) -> c_int;
    fn close(fd: c_int) -> c_int;
    fn fcntl(fd: c_int, cmd: c_int, arg: c_int) -> c_int;
    fn dup2(a: c_int, b: c_int) -> c_int;
    fn write(fd: c_int, buf: *const c_void, n: usize) -> isize;
    fn chdir(p: *const c_char) -> c_int;
    fn setsid() -> c_int;
    fn execve(p: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int;
    fn _exit(c: c_int) -> !;
    fn mmap(a: *mut c_void, l: usize, p: c_int, f: c_int, fd: c_int, o: i64) -> *mut c_void;
    fn clone(
        f: extern "C" fn(*mut c_void) -> c_int,
        stack: *mut c_void,
        flags: c_int,
        arg: *mut c_void, ...
    ) -> c_int;
    fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
    fn kill(pid: c_int, sig: c_int) -> c_int;
    fn prctl(op: c_int, ...) -> c_int;
    fn sigemptyset(set: *mut SigSet) -> c_int;
    fn sigaddset(set: *mut SigSet, sig: c_int) -> c_int;
    fn sigprocmask(how: c_int, set: *const SigSet, old: *mut SigSet) -> c_int;
    fn signalfd(fd: c_int, mask: *const SigSet, flags: c_int) -> c_int;
    fn signal(sig: c_int, handler: usize) -> usize;
    fn syscall(n: c_long, ...) -> c_long;
    fn __errno_location() -> *mut c_int;
}

const EINTR: c_int = 4;
const EAGAIN: c_int = 11;
const ENOSYS: c_int = 38;
const F_DUPFD: c_int = 0;
const SOL_SOCKET: c_int = 1;
const SCM_RIGHTS: c_int = 1;
const MSG_CMSG_CLOEXEC: c_int = 0x4000_0000;
const MSG_NOSIGNAL: c_int = 0x4000;
const POLLIN: c_short = 1;
const POLLERR: c_short = 8;
const POLLHUP: c_short = 0x10;
const SIGKILL: c_int = 9;
const SIGCHLD: c_int = 17;
const SIG_SETMASK: c_int = 2;
const SIG_BLOCK: c_int = 0;
const SIG_DFL: usize = 0;
const SFD_NONBLOCK: c_int = 0o4000;
const SFD_CLOEXEC: c_int = 0o2_000_000;
const WNOHANG: c_int = 1;
const CLONE_VM: c_int = 0x100;
const CLONE_VFORK: c_int = 0x4000;
const PR_SET_PDEATHSIG: c_int = 1;
const PR_SET_DUMPABLE: c_int = 4;
const PROT_RW: c_int = 0x1 | 0x2;
const MAP_PRIVATE_ANON_NORESERVE: c_int = 0x02 | 0x20 | 0x4000;
const SYS_CLOSE_RANGE: c_long = 436;
const SYS_LANDLOCK_RESTRICT_SELF: c_long = 446;
/// Where a child parks the descriptors it was given before placing them at 0..n.
const PARK_FD: c_int = 64;

fn errno() -> c_int {
    // SAFETY: libc's thread-local errno.
    unsafe { *__errno_location() }
}

/// What a child needs, shared with it (it runs on init's memory until its `execve`).
struct Spawn {
    program: *const c_char,
    cwd: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    fds: [c_int; INIT_MAX_FDS],
    nfds: usize,
    cgroups: [c_int; INIT_MAX_CGROUPS],
    ncgroups: usize,
    /// Set by a child that failed: the step, and its errno (a vfork child writes them
    /// here; a forked one also sends them on `report`).
    failed: u32,
    errno: c_int,
    /// A forked child's end of the failure pipe (close-on-exec), or -1.
    report: c_int,
}

/// The child's stack until its `execve` (a dozen syscalls, no formatting).
#[repr(C, align(16))]
struct Stack([u8; 64 * 1024]);
static mut STACK: Stack = Stack([0; 64 * 1024]);

static mut ARGV: [*const c_char; INIT_MAX_ARGS + 1] = [core::ptr::null(); INIT_MAX_ARGS + 1];
static mut ENVP: [*const c_char; INIT_MAX_ENV + 1] = [core::ptr::null(); INIT_MAX_ENV + 1];
/// Whether init has entered its landlock domain.
static mut RESTRICTED: bool = false;
/// Running shells: (pid, exec id); pid 0 marks a free slot.
static mut LIVE: [(c_int, u32); INIT_MAX_LIVE] = [(0, 0); INIT_MAX_LIVE];

/// One classic BPF instruction (`struct sock_filter`).
#[repr(C)]
struct Insn {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

#[repr(C)]
struct Fprog {
    len: u16,
    filter: *const Insn,
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;
const NR_CLONE3: u32 = 435;
const ENOSYS_U: u32 = 38;

/// The filter every child adds before it runs anything: `clone3` gets `ENOSYS` (its flags
/// live in memory seccomp cannot read; libc then falls back to `clone`, which the jail's
/// filter inspects). Init's own filter allows `clone3`, which init needs to create commands
/// in their cgroups; filters stack, so a command can never undo this one.
static NO_CLONE3: [Insn; 6] = [
    // A = arch; a foreign arch is refused outright.
    Insn { code: 0x20, jt: 0, jf: 0, k: 4 },
    Insn { code: 0x15, jt: 1, jf: 0, k: AUDIT_ARCH },
    Insn { code: 0x06, jt: 0, jf: 0, k: 0x8000_0000 },
    // A = nr; clone3 -> ERRNO(ENOSYS), else allow.
    Insn { code: 0x20, jt: 0, jf: 0, k: 0 },
    Insn { code: 0x15, jt: 0, jf: 1, k: NR_CLONE3 },
    Insn { code: 0x06, jt: 0, jf: 0, k: 0x0005_0000 | ENOSYS_U },
];
static ALLOW: Insn = Insn { code: 0x06, jt: 0, jf: 0, k: 0x7fff_0000 };
const PR_SET_SECCOMP: c_int = 22;
const SECCOMP_MODE_FILTER: usize = 2;

/// The child: its own filter, into its cgroups, stdio, session, cwd, `execve` (landlock
/// is init's, inherited).
extern "C" fn child(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `Spawn` on init's stack; init is suspended (CLONE_VFORK) until
    // this child execs or exits. Only raw libc calls follow, ending in execve or _exit.
    unsafe {
        let s = &mut *(arg as *mut Spawn);
        let fail = |s: &mut Spawn, step: u32| -> ! {
            s.failed = step;
            s.errno = errno();
            if s.report >= 0 {
                let mut r = [0u8; 8];
                r[..4].copy_from_slice(&step.to_ne_bytes());
                r[4..].copy_from_slice(&s.errno.to_ne_bytes());
                write(s.report, r.as_ptr().cast(), r.len());
            }
            _exit(127)
        };
        let mut prog = [const { Insn { code: 0, jt: 0, jf: 0, k: 0 } }; 7];
        for (i, insn) in NO_CLONE3.iter().enumerate() {
            prog[i] = Insn { ..*insn };
        }
        prog[6] = Insn { ..ALLOW };
        let fprog = Fprog {
            len: 7,
            filter: prog.as_ptr(),
        };
        if prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog as *const Fprog as usize) < 0 {
            fail(s, INIT_S_SECCOMP);
        }
        for i in 0..s.ncgroups {
            if write(s.cgroups[i], b"0".as_ptr().cast(), 1) != 1 {
                fail(s, INIT_S_CGROUP);
            }
        }
        // Park every given descriptor above the ones they go to, then place them: a plain
        // dup2 in order could overwrite one still to be placed.
        for i in 0..s.nfds {
            let p = fcntl(s.fds[i], F_DUPFD, PARK_FD);
            if p < 0 {
                fail(s, INIT_S_STDIO);
            }
            s.fds[i] = p;
        }
        for i in 0..s.nfds {
            if dup2(s.fds[i], i as c_int) < 0 {
                fail(s, INIT_S_STDIO);
            }
        }
        // Everything else goes, but the failure pipe (close-on-exec) until the execve.
        let keep = if s.report >= 0 { s.report } else { c_int::MAX };
        let lo = s.nfds as c_int;
        let ok = if keep > lo && keep != c_int::MAX {
            syscall(SYS_CLOSE_RANGE, lo as c_uint, (keep - 1) as c_uint, 0u32) >= 0
                && syscall(SYS_CLOSE_RANGE, (keep + 1) as c_uint, c_uint::MAX, 0u32) >= 0
        } else if keep == lo {
            syscall(SYS_CLOSE_RANGE, (lo + 1) as c_uint, c_uint::MAX, 0u32) >= 0
        } else {
            syscall(SYS_CLOSE_RANGE, lo as c_uint, c_uint::MAX, 0u32) >= 0
        };
        if !ok {
            if errno() != ENOSYS {
                fail(s, INIT_S_STDIO);
            }
            for fd in lo..4096 {
                if fd != keep {
                    close(fd);
                }
            }
        }
        setsid();
        let mut empty = SigSet([0; 16]);
        sigemptyset(&mut empty);
        sigprocmask(SIG_SETMASK, &empty, core::ptr::null_mut());
        if chdir(s.cwd) < 0 {
            fail(s, INIT_S_CWD);
        }
        execve(s.program, s.argv, s.envp);
        fail(s, INIT_S_EXEC)
    }
}

/// Sends one record; a Paddock that is gone ends init.
fn record(tag: u32, id: u32, a: i32, b: i32) {
    let mut r = [0u8; INIT_REC_LEN];
    r[0..4].copy_from_slice(&tag.to_ne_bytes());
    r[4..8].copy_from_slice(&id.to_ne_bytes());
    r[8..12].copy_from_slice(&a.to_ne_bytes());
    r[12..16].copy_from_slice(&b.to_ne_bytes());
    let mut off = 0;
    while off < r.len() {
        // SAFETY: sending from a live stack buffer.
        let n = unsafe {
            send(
                INIT_CTL_FD,
                r[off..].as_ptr().cast(),
                r.len() - off,
                MSG_NOSIGNAL,
            )
        };
        if n < 0 && errno() == EINTR {
            continue;
        }
        if n <= 0 {
            // SAFETY: ends the process (and the jail with it).
            unsafe { _exit(0) }
        }
        off += n as usize;
    }
}

/// Reads exactly `len` bytes of the control socket, or ends init.
unsafe fn read_full(buf: *mut u8, len: usize) {
    let mut off = 0;
    while off < len {
        // SAFETY: `buf` holds `len` bytes.
        let n = unsafe { read(INIT_CTL_FD, buf.add(off).cast(), len - off) };
        if n < 0 && errno() == EINTR {
            continue;
        }
        if n <= 0 {
            // SAFETY: Paddock is gone or sent a torn message: end the jail.
            unsafe { _exit(0) }
        }
        off += n as usize;
    }
}

fn word(h: &[u8; INIT_HEADER_LEN], i: usize) -> u32 {
    u32::from_ne_bytes([h[4 * i], h[4 * i + 1], h[4 * i + 2], h[4 * i + 3]])
}

/// Reaps every child that has ended, reporting the shells.
fn reap() {
    loop {
        let mut st: c_int = 0;
        // SAFETY: waitpid with a live status slot.
        let pid = unsafe { waitpid(-1, &mut st, WNOHANG) };
        if pid < 0 && errno() == EINTR {
            continue;
        }
        if pid <= 0 {
            return;
        }
        // SAFETY: init is single-threaded; LIVE is only touched here and in `run`.
        let live = unsafe { &mut *core::ptr::addr_of_mut!(LIVE) };
        if let Some(slot) = live.iter_mut().find(|(p, _)| *p == pid) {
            let id = slot.1;
            *slot = (0, 0);
            record(INIT_REC_EXITED, id, st, 0);
        }
    }
}

/// Handles one message; `buf` holds `INIT_MAX_BODY` bytes.
unsafe fn message(buf: *mut u8, landlock: bool) {
    let mut h = [0u8; INIT_HEADER_LEN];
    let mut iov = IoVec {
        base: h.as_mut_ptr().cast(),
        len: h.len(),
    };
    // Room for the largest SCM_RIGHTS message: a 16-byte header and the descriptors.
    let mut cbuf = [0u64; 2 + (INIT_MAX_FDS + INIT_MAX_CGROUPS) / 2 + 1];
    let mut m = MsgHdr {
        name: core::ptr::null_mut(),
        namelen: 0,
        iov: &mut iov,
        iovlen: 1,
        control: cbuf.as_mut_ptr().cast(),
        controllen: core::mem::size_of_val(&cbuf),
        flags: 0,
    };
    // SAFETY: every pointer in `m` points at a live local of the stated size.
    let n = loop {
        let n = unsafe { recvmsg(INIT_CTL_FD, &mut m, MSG_CMSG_CLOEXEC) };
        if n < 0 && errno() == EINTR {
            continue;
        }
        break n;
    };
    if n <= 0 {
        // SAFETY: Paddock closed its end: the sandbox is gone.
        unsafe { _exit(0) }
    }
    // The descriptors came with the first byte; the rest of the header may follow.
    let mut got: [c_int; INIT_MAX_FDS + INIT_MAX_CGROUPS] = [-1; INIT_MAX_FDS + INIT_MAX_CGROUPS];
    let mut ngot = 0usize;
    if m.controllen >= 16 {
        let p = cbuf.as_ptr() as *const u8;
        // SAFETY: the kernel wrote a cmsghdr at the start of `cbuf` (controllen >= 16).
        let (len, level, kind) = unsafe {
            (
                *(p as *const usize),
                *(p.add(8) as *const c_int),
                *(p.add(12) as *const c_int),
            )
        };
        if level == SOL_SOCKET && kind == SCM_RIGHTS && len >= 16 {
            ngot = ((len - 16) / 4).min(got.len());
            for (i, slot) in got.iter_mut().enumerate().take(ngot) {
                // SAFETY: `ngot` descriptors follow the header inside `cbuf`.
                *slot = unsafe { *(p.add(16 + 4 * i) as *const c_int) };
            }
        }
    }
    let n = n as usize;
    if n < INIT_HEADER_LEN {
        // SAFETY: the rest of the header into the same buffer.
        unsafe { read_full(h.as_mut_ptr().add(n), INIT_HEADER_LEN - n) };
    }
    let close_all = |got: &[c_int]| {
        for fd in got {
            if *fd >= 0 {
                // SAFETY: closing descriptors received above.
                unsafe { close(*fd) };
            }
        }
    };
    let (tag, id) = (word(&h, 0), word(&h, 1));
    if tag == INIT_MSG_SIGNAL {
        close_all(&got[..ngot]);
        let (sig, group) = (word(&h, 2) as c_int, word(&h, 3));
        // SAFETY: LIVE is init's own table.
        let live = unsafe { &*core::ptr::addr_of!(LIVE) };
        if let Some((pid, _)) = live.iter().find(|(p, i)| *p > 0 && *i == id) {
            // SAFETY: plain kill(2).
            unsafe { kill(if group == 1 { -*pid } else { *pid }, sig) };
        }
        return;
    }
    if tag != INIT_MSG_RUN {
        // SAFETY: a message init does not know: refuse to go on guessing.
        unsafe { _exit(2) }
    }
    let (body, argc, envc) = (word(&h, 2) as usize, word(&h, 3) as usize, word(&h, 4) as usize);
    let (nfds, ncg) = (word(&h, 5) as usize, word(&h, 6) as usize);
    if body == 0
        || body > INIT_MAX_BODY
        || argc == 0
        || argc > INIT_MAX_ARGS
        || envc > INIT_MAX_ENV
        || nfds > INIT_MAX_FDS
        || ncg > INIT_MAX_CGROUPS
        || nfds + ncg != ngot
    {
        // SAFETY: a malformed message: end the jail rather than run something else.
        unsafe { _exit(2) }
    }
    // SAFETY: `buf` holds INIT_MAX_BODY >= body bytes.
    unsafe { read_full(buf, body) };
    // SAFETY: reading the body just received.
    let bytes = unsafe { core::slice::from_raw_parts(buf, body) };
    if bytes[body - 1] != 0 {
        // SAFETY: as above.
        unsafe { _exit(2) }
    }
    // SAFETY: init is single-threaded; the arrays are only used here.
    let (argv, envp) = unsafe {
        (
            &mut *core::ptr::addr_of_mut!(ARGV),
            &mut *core::ptr::addr_of_mut!(ENVP),
        )
    };
    let want = 2 + argc + envc;
    let (mut seen, mut from) = (0usize, 0usize);
    let (mut program, mut cwd): (*const c_char, *const c_char) =
        (core::ptr::null(), core::ptr::null());
    for (i, b) in bytes.iter().enumerate() {
        if *b != 0 {
            continue;
        }
        if seen >= want {
            // SAFETY: as above.
            unsafe { _exit(2) }
        }
        // SAFETY: `from` < body: a string inside the buffer.
        let s = unsafe { buf.add(from) } as *const c_char;
        match seen {
            0 => program = s,
            1 => cwd = s,
            k if k < 2 + argc => argv[k - 2] = s,
            k => envp[k - 2 - argc] = s,
        }
        seen += 1;
        from = i + 1;
    }
    if seen != want {
        // SAFETY: as above.
        unsafe { _exit(2) }
    }
    argv[argc] = core::ptr::null();
    envp[envc] = core::ptr::null();
    // SAFETY: LIVE is init's own table.
    let live = unsafe { &mut *core::ptr::addr_of_mut!(LIVE) };
    let Some(slot) = live.iter_mut().position(|(p, _)| *p == 0) else {
        close_all(&got[..ngot]);
        record(INIT_REC_FAILED, id, INIT_S_BUSY as i32, EAGAIN);
        return;
    };
    // Init enters the landlock domain itself, before its first child: every command of the
    // sandbox is then in one domain, as a container's processes are, so a command can
    // signal (and `kill`) the background processes an earlier one left, while nothing in
    // the sandbox can signal anything outside it. (A domain per command would scope each
    // command's signals to itself.) Not at start: init runs from a memfd that the ruleset
    // would not let it execute, and a failure here is reported like any spawn's.
    // SAFETY: init is single-threaded; RESTRICTED is only used here.
    let restricted = unsafe { &mut *core::ptr::addr_of_mut!(RESTRICTED) };
    if landlock && !*restricted {
        // SAFETY: landlock_restrict_self(2) on the ruleset Paddock placed at
        // INIT_RULESET_FD; `no_new_privs` is set, as it requires.
        if unsafe { syscall(SYS_LANDLOCK_RESTRICT_SELF, INIT_RULESET_FD, 0u32) } < 0 {
            close_all(&got[..ngot]);
            record(INIT_REC_FAILED, id, INIT_S_LANDLOCK as i32, errno());
            return;
        }
        // SAFETY: the ruleset is no longer needed.
        unsafe { close(INIT_RULESET_FD) };
        *restricted = true;
    }
    let clone_into = word(&h, 7) & INIT_RUN_CLONE_INTO != 0 && ncg > 0;
    let mut s = Spawn {
        program,
        cwd,
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        fds: [-1; INIT_MAX_FDS],
        nfds,
        cgroups: [-1; INIT_MAX_CGROUPS],
        ncgroups: if clone_into { ncg - 1 } else { ncg },
        failed: 0,
        errno: 0,
        report: -1,
    };
    s.fds[..nfds].copy_from_slice(&got[..nfds]);
    s.cgroups[..ncg].copy_from_slice(&got[nfds..nfds + ncg]);
    let (pid, fork_errno) = if clone_into {
        // SAFETY: forks into the cgroup; see `fork_into`.
        unsafe { fork_into(&mut s, got[nfds + ncg - 1]) }
    } else {
        // SAFETY: the child runs on STACK (its top, 16-aligned) with CLONE_VM |
        // CLONE_VFORK: init is suspended until the child's execve or exit, so `s` outlives
        // its use.
        let pid = unsafe {
            let top =
                (core::ptr::addr_of_mut!(STACK) as *mut u8).add(core::mem::size_of::<Stack>());
            clone(
                child,
                top.cast(),
                CLONE_VM | CLONE_VFORK | SIGCHLD,
                (&mut s as *mut Spawn).cast(),
            )
        };
        (pid, errno())
    };
    close_all(&got[..ngot]);
    if pid < 0 {
        record(INIT_REC_FAILED, id, INIT_S_FORK as i32, fork_errno);
        return;
    }
    if s.failed != 0 {
        // Its exit is reaped like any orphan's; the failure is what Paddock needs.
        record(INIT_REC_FAILED, id, s.failed as i32, s.errno);
        return;
    }
    live[slot] = (pid, id);
    record(INIT_REC_STARTED, id, pid, 0);
}

/// `struct clone_args` of `clone3(2)` (the version with `cgroup`).
#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const SYS_CLONE3: c_long = 435;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
const O_CLOEXEC: c_int = 0o2_000_000;

/// Forks the child straight into the cgroup directory `cg` (`clone3` with
/// `CLONE_INTO_CGROUP`, fork semantics: init's copy is small), and waits until it has
/// `execve`d (its end of a close-on-exec pipe closes) or failed (it sends step and errno
/// there, also recorded in `s`). Returns the pid (or -1) and the clone's errno.
///
/// # Safety
/// Init only; `s` points at live strings and descriptors.
unsafe fn fork_into(s: &mut Spawn, cg: c_int) -> (c_int, c_int) {
    // SAFETY: as the function's contract.
    unsafe {
        let mut p = [-1 as c_int; 2];
        if pipe2(p.as_mut_ptr(), O_CLOEXEC) < 0 {
            return (-1, errno());
        }
        s.report = p[1];
        let args = CloneArgs {
            flags: CLONE_INTO_CGROUP,
            pidfd: 0,
            child_tid: 0,
            parent_tid: 0,
            exit_signal: SIGCHLD as u64,
            stack: 0,
            stack_size: 0,
            tls: 0,
            set_tid: 0,
            set_tid_size: 0,
            cgroup: cg as u64,
        };
        let pid = syscall(
            SYS_CLONE3,
            &args as *const CloneArgs,
            core::mem::size_of::<CloneArgs>(),
        ) as c_int;
        if pid == 0 {
            child((s as *mut Spawn).cast());
            _exit(127);
        }
        let e = errno();
        close(p[1]);
        s.report = -1;
        if pid > 0 {
            let mut r = [0u8; 8];
            let mut off = 0usize;
            while off < r.len() {
                let n = read(p[0], r.as_mut_ptr().add(off).cast(), r.len() - off);
                if n < 0 && errno() == EINTR {
                    continue;
                }
                if n <= 0 {
                    break;
                }
                off += n as usize;
            }
            if off == r.len() {
                s.failed = u32::from_ne_bytes([r[0], r[1], r[2], r[3]]);
                s.errno = c_int::from_ne_bytes([r[4], r[5], r[6], r[7]]);
            }
        }
        close(p[0]);
        (pid, e)
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn main(argc: c_int, argv: *const *const u8) -> c_int {
    // SAFETY: raw libc calls on init's own state; `argv` is the process's argument vector.
    unsafe {
        // The parent-death signal does not survive the credential change before this
        // program was started: arm it again. A Paddock that died before this line is seen
        // below as the hang-up of the control socket.
        prctl(PR_SET_PDEATHSIG, SIGKILL as usize);
        prctl(PR_SET_DUMPABLE, 0usize);
        let mut landlock = false;
        if argc > 1 {
            let a = *argv.add(1);
            landlock = INIT_ARG_LANDLOCK
                .iter()
                .enumerate()
                .all(|(i, b)| *a.add(i) == *b)
                && *a.add(INIT_ARG_LANDLOCK.len()) == 0;
        }
        // Signals Paddock ignored stay ignored across execve: give init's children the
        // defaults (SIGPIPE above all, so `yes | head -1` ends as it does everywhere).
        for sig in 1..32 {
            if sig != SIGKILL && sig != 19 {
                signal(sig, SIG_DFL);
            }
        }
        let mut set = SigSet([0; 16]);
        sigemptyset(&mut set);
        sigaddset(&mut set, SIGCHLD);
        sigprocmask(SIG_BLOCK, &set, core::ptr::null_mut());
        let sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
        if sfd < 0 {
            return 3;
        }
        let buf = mmap(
            core::ptr::null_mut(),
            INIT_MAX_BODY,
            PROT_RW,
            MAP_PRIVATE_ANON_NORESERVE,
            -1,
            0,
        ) as *mut u8;
        if buf as isize == -1 {
            return 4;
        }
        let mut drain = [0u8; 128 * 8];
        loop {
            let mut fds = [
                PollFd {
                    fd: INIT_CTL_FD,
                    events: POLLIN,
                    revents: 0,
                },
                PollFd {
                    fd: sfd,
                    events: POLLIN,
                    revents: 0,
                },
            ];
            let r = poll(fds.as_mut_ptr(), 2, -1);
            if r < 0 {
                if errno() == EINTR {
                    continue;
                }
                return 5;
            }
            if fds[1].revents & POLLIN != 0 {
                while read(sfd, drain.as_mut_ptr().cast(), drain.len()) > 0 {}
                reap();
            }
            if fds[0].revents & POLLIN != 0 {
                // A hang-up with a message still queued: the message first; the read of
                // end-of-file then ends init.
                message(buf, landlock);
            } else if fds[0].revents & (POLLHUP | POLLERR) != 0 {
                return 0;
            }
        }
    }
}
