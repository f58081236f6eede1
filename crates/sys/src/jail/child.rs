//! The jail's child: everything between `clone` and `execve`. Init builds the jail, waits
//! for its command (or starts a waiting shell), starts the shell with `CLONE_VFORK`, reaps
//! and reports; a sandbox's jail `execve`s its init instead.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;

use super::prepared::{COp, Prepared, SHELL_STACK_BYTES};
use super::spec::{COMMAND_MAX_ARGS, COMMAND_MAX_ENV};
use super::wire::preload::{ZYGOTE_CMD_FD, ZYGOTE_STATUS_FD};
use super::wire::{COMMAND_HEADER, StatusRecord, Step, TAG_EXIT, TAG_IDLE, TAG_SETUP};
use crate::landlock::ruleset_attr_size;
use crate::mountplan::ms;

pub(super) struct ChildFds<'a> {
    pub(super) sync_r: RawFd,
    pub(super) status_w: RawFd,
    /// The shell's stdout and stderr (one-shot jails; -1 in a sandbox's jail).
    pub(super) out_w: RawFd,
    pub(super) err_w: RawFd,
    /// A pidfd of Paddock's process (-1: none), readable once Paddock has ended.
    pub(super) parent: RawFd,
    /// A sandbox's jail: the child's end of init's control socket, and the init program
    /// (-1 both in a one-shot jail).
    pub(super) control: RawFd,
    pub(super) init_program: RawFd,
    /// Every descriptor the child keeps past its first `close_range`, sorted: the ones
    /// above, the cgroup files and the idmapping namespaces.
    pub(super) keep: &'a [u32],
    /// v1 `tasks` files to write `0` into (closed with the rest afterwards).
    pub(super) cgroup_tasks: &'a [RawFd],
    /// v1 `tasks` files the shell writes `0` into (see `JoinPlan::shell_tasks`); init keeps
    /// them open until the shell has started.
    pub(super) shell_cgroup_tasks: &'a [RawFd],
    /// `SHELL_STACK_BYTES` of memory the shell child runs on until its `execve`.
    pub(super) shell_stack: *mut u8,
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Writes a whole record; async-signal-safe.
unsafe fn put_record(fd: RawFd, rec: &[u8; StatusRecord::LEN]) {
    let mut off = 0usize;
    while off < rec.len() {
        // SAFETY: writing from a live stack buffer.
        let n = unsafe { libc::write(fd, rec[off..].as_ptr().cast(), rec.len() - off) };
        if n <= 0 {
            if n < 0 && errno() == libc::EINTR {
                continue;
            }
            return;
        }
        off += n as usize;
    }
}

/// Reports a failed step and exits.
unsafe fn fail(fd: RawFd, step: Step, err: i32) -> ! {
    let rec = StatusRecord::encode(TAG_SETUP, step as u32 as i32, err);
    // SAFETY: see put_record; _exit never returns.
    unsafe {
        put_record(fd, &rec);
        libc::_exit(126)
    }
}

/// Formats `/proc/self/fd/N` into `buf` (NUL-terminated) without allocating.
fn fd_path(buf: &mut [u8; 40], fd: RawFd) -> *const libc::c_char {
    const PREFIX: &[u8] = b"/proc/self/fd/";
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 12];
    let mut n = fd.max(0) as u32;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[PREFIX.len() + i] = digits[len - 1 - i];
    }
    buf[PREFIX.len() + len] = 0;
    buf.as_ptr().cast()
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

#[repr(C)]
struct LandlockRulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct LandlockPathBeneath {
    allowed_access: u64,
    parent_fd: i32,
}

/// Whether Paddock's process has ended (its pidfd, `fd`, is readable).
///
/// # Safety
/// Child only; a raw `poll`.
unsafe fn parent_gone(fd: RawFd) -> bool {
    if fd < 0 {
        return false;
    }
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one live pollfd, without waiting.
    unsafe { libc::poll(&mut p, 1, 0) > 0 && p.revents & libc::POLLIN != 0 }
}

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const OPEN_TREE_CLONE: u32 = 1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;

/// Binds the directory `src` (an `O_PATH` descriptor) at `dst` through a mount idmapped by
/// the user namespace `userns`: a detached copy of the source (`open_tree`), the idmapping
/// set on it (`mount_setattr`), then attached (`move_mount`). Returns the raw result.
///
/// # Safety
/// Child only; raw syscalls on live descriptors and a NUL-terminated path.
unsafe fn idmapped_bind(src: RawFd, dst: &CString, userns: RawFd) -> i32 {
    // SAFETY: as the function's contract; `attr` and the empty path outlive the calls.
    unsafe {
        let empty = c"";
        let tree = libc::syscall(
            libc::SYS_open_tree,
            src,
            empty.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as u32 | libc::AT_EMPTY_PATH as u32,
        ) as RawFd;
        if tree < 0 {
            return -1;
        }
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_IDMAP,
            attr_clr: 0,
            propagation: 0,
            userns_fd: userns as u64,
        };
        let mut r = libc::syscall(
            libc::SYS_mount_setattr,
            tree,
            empty.as_ptr(),
            libc::AT_EMPTY_PATH as u32,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        ) as i32;
        if r == 0 {
            r = libc::syscall(
                libc::SYS_move_mount,
                tree,
                empty.as_ptr(),
                libc::AT_FDCWD,
                dst.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            ) as i32;
        }
        let e = errno();
        libc::close(tree);
        *libc::__errno_location() = e;
        r
    }
}

/// `struct open_how` of `openat2(2)`.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;

/// Opens every mount source (`O_PATH`) in the child's mount namespace. A source marked
/// `no_symlinks` is refused (ELOOP) when any component of its path is a symbolic link:
/// `openat2(RESOLVE_NO_SYMLINKS)`, or on a kernel without it a walk from `/` that opens each
/// component with `O_NOFOLLOW` and refuses a link it lands on.
///
/// # Safety
/// Child only; raw syscalls over prepared memory; fails through `fail`.
unsafe fn open_sources(p: &mut Prepared, st: RawFd) {
    // SAFETY: as the function's contract.
    unsafe {
        for i in 0..p.sources.len() {
            let src = &p.sources[i];
            let fd = match &p.source_parts[i] {
                None => libc::open(src.as_ptr(), libc::O_PATH | libc::O_CLOEXEC),
                Some(parts) => {
                    let how = OpenHow {
                        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
                        mode: 0,
                        resolve: RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
                    };
                    let r = libc::syscall(
                        libc::SYS_openat2,
                        libc::AT_FDCWD,
                        src.as_ptr(),
                        &how as *const OpenHow,
                        std::mem::size_of::<OpenHow>(),
                    ) as RawFd;
                    if r >= 0 || errno() != libc::ENOSYS {
                        r
                    } else {
                        walk_no_symlinks(p.slash.as_ptr(), parts)
                    }
                }
            };
            if fd < 0 {
                fail(st, Step::OpenSource, errno());
            }
            p.source_fds[i] = fd;
        }
    }
}

/// Opens `/` then each of `parts` with `O_PATH | O_NOFOLLOW`; a symlink anywhere is ELOOP.
///
/// # Safety
/// Child only; raw syscalls.
unsafe fn walk_no_symlinks(slash: *const libc::c_char, parts: &[CString]) -> RawFd {
    // SAFETY: raw open/openat/fstat/close over NUL-terminated strings and a stack stat.
    unsafe {
        let mut fd = libc::open(slash, libc::O_PATH | libc::O_CLOEXEC | libc::O_DIRECTORY);
        for part in parts {
            if fd < 0 {
                return fd;
            }
            let next = libc::openat(
                fd,
                part.as_ptr(),
                libc::O_PATH | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            );
            libc::close(fd);
            fd = next;
            if fd >= 0 {
                let mut sb: libc::stat = std::mem::zeroed();
                if libc::fstat(fd, &mut sb) < 0 || sb.st_mode & libc::S_IFMT == libc::S_IFLNK {
                    libc::close(fd);
                    *libc::__errno_location() = libc::ELOOP;
                    return -1;
                }
            }
        }
        fd
    }
}

/// Takes the sandbox's uid and gid (and no supplementary groups).
///
/// # Safety
/// Child only; raw syscalls.
unsafe fn switch_ids(p: &Prepared, st: RawFd) {
    // SAFETY: raw set*id syscalls, not libc's wrappers: glibc's broadcast the change to
    // every thread it knows of, taking its thread-list lock — in this child those threads do
    // not exist and the lock may have been held by a parent thread at the clone: a deadlock.
    unsafe {
        if p.privileged
            && libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) < 0
        {
            fail(st, Step::SetGroups, errno());
        }
        if libc::syscall(libc::SYS_setresgid, p.gid, p.gid, p.gid) < 0 {
            fail(st, Step::SetGid, errno());
        }
        if libc::syscall(libc::SYS_setresuid, p.uid, p.uid, p.uid) < 0 {
            fail(st, Step::SetUid, errno());
        }
    }
}

/// The end of a sandbox jail's build: places the control socket and the landlock ruleset
/// where init expects them and `execve`s init from its memfd. The status pipe is
/// close-on-exec, so Paddock reads end of file once init runs.
///
/// # Safety
/// Child only; raw syscalls; never returns.
unsafe fn exec_init(p: &Prepared, fds: &ChildFds, ruleset: RawFd) -> ! {
    use crate::sandbox_jail::proto::{INIT_CTL_FD, INIT_RULESET_FD};
    let st = fds.status_w;
    // SAFETY: as the function's contract.
    unsafe {
        // Park everything above the numbers it goes to, then place it.
        let park = |fd: RawFd| {
            if fd < 0 {
                return -1;
            }
            libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 16)
        };
        let (ctl, rs, prog, status) = (
            park(fds.control),
            park(ruleset),
            park(fds.init_program),
            park(st),
        );
        if ctl < 0 || prog < 0 || status < 0 || (ruleset >= 0 && rs < 0) {
            fail(st, Step::ExecInit, errno());
        }
        let st = status;
        let place = |from: RawFd, to: RawFd, cloexec: bool| {
            let r = if cloexec {
                libc::syscall(libc::SYS_dup3, from, to, libc::O_CLOEXEC) as RawFd
            } else {
                libc::dup2(from, to)
            };
            if r < 0 {
                fail(st, Step::ExecInit, errno());
            }
        };
        place(ctl, INIT_CTL_FD, false);
        if rs >= 0 {
            place(rs, INIT_RULESET_FD, false);
        }
        place(prog, 5, true);
        place(st, 6, true);
        libc::syscall(libc::SYS_close_range, 0u32, 2u32, 0u32);
        if rs < 0 {
            libc::close(INIT_RULESET_FD);
        }
        libc::syscall(libc::SYS_close_range, 7u32, u32::MAX, 0u32);
        let envp: [*const libc::c_char; 1] = [std::ptr::null()];
        libc::syscall(
            libc::SYS_execveat,
            5,
            p.empty.as_ptr(),
            p.init_argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
        fail(6, Step::ExecInit, errno())
    }
}

/// Init: builds the jail, forks the shell, reaps, reports.
///
/// # Safety
/// Must only be called in the child right after `clone`, never returns.
pub(super) unsafe fn child_main(p: &mut Prepared, fds: &ChildFds, fprog: &libc::sock_fprog) -> ! {
    let st = fds.status_w;
    macro_rules! check {
        ($step:expr, $e:expr) => {
            if $e < 0 {
                fail(st, $step, errno())
            }
        };
    }
    // SAFETY: raw syscalls with pointers into `p`, `fds`, `argv`, `envp` and stack buffers,
    // all alive until execve/_exit. Nothing allocates.
    unsafe {
        // Before anything else: a jail must never outlive the process that builds it. The
        // signal fires when the cloning thread ends; a parent that ended before this line is
        // caught by `parent_gone` just below.
        check!(
            Step::ParentDeathSignal,
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0
            )
        );
        if parent_gone(fds.parent) {
            libc::_exit(125);
        }
        // Next, while single-threaded and before anything is charged to the wrong cgroup:
        // move ourselves into the jail's v1 cgroups. Everything forked later is born inside.
        let zero = [b'0'];
        for fd in fds.cgroup_tasks {
            if libc::write(*fd, zero.as_ptr().cast(), 1) != 1 {
                fail(st, Step::JoinCgroup, errno());
            }
        }
        // Keep only our own descriptors (and the shell's cgroup files, until it has joined):
        // init must not hold Paddock's sockets and files open for as long as it lives.
        let mut lo = 0u32;
        for &k in fds.keep {
            if k > lo {
                libc::syscall(libc::SYS_close_range, lo, k - 1, 0);
            }
            lo = k.saturating_add(1);
        }
        if lo != 0 {
            libc::syscall(libc::SYS_close_range, lo, u32::MAX, 0);
        }

        let mut b = [0u8; 1];
        loop {
            let n = libc::read(fds.sync_r, b.as_mut_ptr().cast(), 1);
            if n == 1 {
                break;
            }
            if n < 0 && errno() == libc::EINTR {
                continue;
            }
            if n < 0 {
                fail(st, Step::WaitForParent, errno());
            }
            // The parent gave up (it could not write our maps) or is gone: leave quietly.
            libc::_exit(125);
        }
        // Commands see their cgroup paths from the jail's own cgroup down, never Paddock's
        // (its pid is in those names) or a neighbour's. Entered here, after joining, because
        // a namespace's root is the cgroup its creator is in at that moment.
        check!(Step::CgroupNamespace, libc::unshare(libc::CLONE_NEWCGROUP));

        open_sources(p, st);
        if !p.privileged_mounts {
            // Inside a user namespace of our own: take the sandbox ids first, keeping the
            // capabilities the namespace gives us for the mounts below.
            switch_ids(p, st);
        }
        check!(
            Step::MakePrivate,
            libc::mount(
                std::ptr::null(),
                p.slash.as_ptr(),
                std::ptr::null(),
                (ms::REC | ms::PRIVATE) as libc::c_ulong,
                std::ptr::null()
            )
        );
        let mut buf = [0u8; 40];
        for op in &p.ops {
            match op {
                COp::Tmpfs { dst, flags, data } => check!(
                    Step::MountTmpfs,
                    libc::mount(
                        p.tmpfs_s.as_ptr(),
                        dst.as_ptr(),
                        p.tmpfs_s.as_ptr(),
                        *flags as libc::c_ulong,
                        data.as_ptr().cast()
                    )
                ),
                COp::Mkdir { path } => {
                    if libc::mkdir(path.as_ptr(), 0o755) < 0 && errno() != libc::EEXIST {
                        fail(st, Step::Mkdir, errno());
                    }
                }
                COp::Symlink { target, path } => {
                    check!(Step::Symlink, libc::symlink(target.as_ptr(), path.as_ptr()))
                }
                COp::Touch { path } => {
                    let fd = libc::open(
                        path.as_ptr(),
                        libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                        0o644,
                    );
                    check!(Step::DeviceMountPoint, fd);
                    libc::close(fd);
                }
                COp::Bind {
                    source,
                    dst,
                    recursive,
                } => {
                    let fd = p.source_fds.get(*source).copied().unwrap_or(-1);
                    let src = fd_path(&mut buf, fd);
                    let flags = ms::BIND | if *recursive { ms::REC } else { 0 };
                    check!(
                        Step::Bind,
                        libc::mount(
                            src,
                            dst.as_ptr(),
                            std::ptr::null(),
                            flags as libc::c_ulong,
                            std::ptr::null()
                        )
                    );
                }
                COp::IdmappedBind {
                    source,
                    dst,
                    userns,
                } => {
                    let fd = p.source_fds.get(*source).copied().unwrap_or(-1);
                    check!(Step::IdmappedBind, idmapped_bind(fd, dst, *userns));
                }
                COp::Remount { dst, flags } => check!(
                    Step::Remount,
                    libc::mount(
                        std::ptr::null(),
                        dst.as_ptr(),
                        std::ptr::null(),
                        (ms::REMOUNT | ms::BIND | flags) as libc::c_ulong,
                        std::ptr::null()
                    )
                ),
                COp::Proc { dst } => check!(
                    Step::MountProc,
                    libc::mount(
                        p.proc_s.as_ptr(),
                        dst.as_ptr(),
                        p.proc_s.as_ptr(),
                        (ms::NOSUID | ms::NODEV | ms::NOEXEC) as libc::c_ulong,
                        std::ptr::null()
                    )
                ),
                COp::Devpts { dst } => {
                    // A private pty instance is a convenience (interactive tools); the jail
                    // is complete without it, so a failure here is not fatal.
                    libc::mount(
                        p.devpts_s.as_ptr(),
                        dst.as_ptr(),
                        p.devpts_s.as_ptr(),
                        (ms::NOSUID | ms::NOEXEC) as libc::c_ulong,
                        p.devpts_data.as_ptr().cast(),
                    );
                }
                COp::File { path, data, mode } => {
                    let fd = libc::open(
                        path.as_ptr(),
                        libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC,
                        *mode,
                    );
                    check!(Step::WriteFile, fd);
                    let mut off = 0usize;
                    while off < data.len() {
                        let n = libc::write(fd, data[off..].as_ptr().cast(), data.len() - off);
                        if n <= 0 {
                            if n < 0 && errno() == libc::EINTR {
                                continue;
                            }
                            fail(
                                st,
                                Step::WriteFile,
                                if n < 0 { errno() } else { libc::ENOSPC },
                            );
                        }
                        off += n as usize;
                    }
                    libc::close(fd);
                }
            }
        }
        for fd in &p.source_fds {
            libc::close(*fd);
        }
        check!(
            Step::Hostname,
            libc::sethostname(p.hostname.as_ptr(), p.hostname.as_bytes().len())
        );
        if p.new_net {
            check!(Step::Loopback, loopback_up());
        }
        check!(Step::PivotRoot, libc::chdir(p.staging.as_ptr()));
        check!(
            Step::PivotRoot,
            libc::syscall(libc::SYS_pivot_root, p.dot.as_ptr(), p.dot.as_ptr()) as i32
        );
        check!(
            Step::DetachOldRoot,
            libc::umount2(p.dot.as_ptr(), libc::MNT_DETACH)
        );
        check!(Step::DetachOldRoot, libc::chdir(p.slash.as_ptr()));

        let mut ruleset: RawFd = -1;
        if let Some((abi, handled, scoped)) = p.ll {
            let attr = LandlockRulesetAttr {
                handled_access_fs: handled,
                handled_access_net: 0,
                scoped,
            };
            let r = libc::syscall(
                libc::SYS_landlock_create_ruleset,
                &attr as *const LandlockRulesetAttr,
                ruleset_attr_size(abi),
                0u32,
            );
            check!(Step::LandlockCreate, r as i32);
            ruleset = r as RawFd;
            for (path, access) in &p.ll_rules {
                let fd = libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
                if fd < 0 {
                    // A planned path that does not exist (no /dev/tty on this host): nothing
                    // beneath it can be written anyway.
                    continue;
                }
                let rule = LandlockPathBeneath {
                    allowed_access: *access,
                    parent_fd: fd,
                };
                let r = libc::syscall(
                    libc::SYS_landlock_add_rule,
                    ruleset,
                    1 as libc::c_int, // LANDLOCK_RULE_PATH_BENEATH
                    &rule as *const LandlockPathBeneath,
                    0u32,
                );
                libc::close(fd);
                check!(Step::LandlockRule, r as i32);
            }
        }
        for l in &p.rlimits {
            let lim = libc::rlimit {
                rlim_cur: l.value,
                rlim_max: l.value,
            };
            check!(Step::Rlimit, libc::setrlimit(l.resource as _, &lim));
        }
        for cap in 0..=p.cap_last_cap {
            check!(
                Step::DropBoundingSet,
                libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0)
            );
        }
        if p.privileged_mounts {
            // Host root until here, so the root could be built from any host directory
            // whatever its owner and mode (a 0700 parent of a nested mount included). Now
            // the sandbox ids: leaving uid 0 clears every capability.
            switch_ids(p, st);
        }
        // A change of credentials clears the parent-death signal: arm it again, and look
        // once more for a parent that ended in between.
        check!(
            Step::ParentDeathSignal,
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0
            )
        );
        if parent_gone(fds.parent) {
            libc::_exit(125);
        }
        if fds.parent >= 0 {
            libc::close(fds.parent);
        }
        check!(
            Step::ClearAmbient,
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0
            )
        );
        let hdr = CapHeader {
            version: 0x2008_0522,
            pid: 0,
        };
        let data = [CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        check!(
            Step::DropCapabilities,
            libc::syscall(libc::SYS_capset, &hdr as *const CapHeader, data.as_ptr()) as i32
        );
        check!(
            Step::NoNewPrivs,
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        );
        check!(
            Step::NotDumpable,
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0)
        );
        // The seccomp filter goes on init itself, before the command comes: the shell
        // inherits it, and attaching a filter (the kernel validates it and precomputes its
        // per-syscall cache) leaves the exec's critical path. What init does from here on —
        // read, clone without namespace flags, wait4, write, exit — the filter allows.
        check!(
            Step::Seccomp,
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                fprog as *const libc::sock_fprog as libc::c_ulong,
                0,
                0
            )
        );
        if fds.control >= 0 {
            exec_init(p, fds, ruleset);
        }

        // The jail is built: wait for the command, or start the shell now and let it read
        // the command itself (see `JailSpec::waiting_shell`).
        let waiting = p.waiting.is_some();
        let cwd = if waiting {
            p.slash.as_ptr()
        } else {
            let cwd = read_command(p, fds.sync_r, st);
            libc::close(fds.sync_r);
            cwd
        };

        // The shell shares init's memory until its execve (CLONE_VM | CLONE_VFORK, as
        // posix_spawn does), on its own stack: init is a copy of all of Paddock's address
        // space, and a plain fork would copy its page tables only for execve to throw them
        // away. Init sleeps until the execve (or the child's exit). Descriptors, cwd,
        // credentials, landlock and seccomp are per task, so the child's changes stay its own.
        let args = ShellArgs {
            p: &*p,
            fds,
            ruleset,
            cwd,
        };
        let top = fds.shell_stack.add(SHELL_STACK_BYTES);
        let top = ((top as usize) & !15usize) as *mut libc::c_void;
        let shell = libc::clone(
            shell_entry,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&args as *const ShellArgs).cast_mut().cast(),
        );
        check!(Step::ForkShell, shell);
        if waiting {
            libc::close(fds.sync_r);
        }
        for fd in fds.shell_cgroup_tasks {
            libc::close(*fd);
        }
        libc::close(fds.out_w);
        libc::close(fds.err_w);
        if ruleset >= 0 {
            libc::close(ruleset);
        }
        loop {
            let mut status: libc::c_int = 0;
            let r = libc::waitpid(-1, &mut status, 0);
            if r < 0 {
                if errno() == libc::EINTR {
                    continue;
                }
                break;
            }
            if r == shell {
                put_record(st, &StatusRecord::encode(TAG_EXIT, status, 0));
            }
        }
        // Nothing is left. Exiting now would tear the namespaces down (the mount tree, this
        // copy of Paddock's memory: about a millisecond of kernel work) while Paddock hands
        // the result over; say so and wait for Paddock's SIGKILL (or the parent-death
        // signal) instead, which comes once the result is out.
        put_record(st, &StatusRecord::encode(TAG_IDLE, 0, 0));
        loop {
            libc::pause();
        }
    }
}

/// What the shell child needs, passed through `clone`'s argument pointer.
struct ShellArgs<'a> {
    p: &'a Prepared,
    fds: &'a ChildFds<'a>,
    ruleset: RawFd,
    cwd: *const libc::c_char,
}

/// Entry point of the shell child on its own stack.
extern "C" fn shell_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points at the `ShellArgs` on init's stack; init is suspended (vfork) until
    // this child execs or exits, so it stays valid. shell_main never returns.
    unsafe {
        let a = &*(arg as *const ShellArgs);
        shell_main(a.p, a.fds, a.ruleset, a.cwd)
    }
}

/// The shell child: landlock, stdio, cwd, execve (seccomp it inherited from init). Landlock
/// stays here, not on init: init outside the sandbox's landlock domain is what keeps the
/// command from signalling it (the domain's signal scope).
unsafe fn shell_main(p: &Prepared, fds: &ChildFds, ruleset: RawFd, cwd: *const libc::c_char) -> ! {
    let mut st = fds.status_w;
    macro_rules! check {
        ($step:expr, $e:expr) => {
            if $e < 0 {
                fail(st, $step, errno())
            }
        };
    }
    // SAFETY: raw syscalls over prepared memory; ends in execve or _exit.
    unsafe {
        // Into the cgroups init stays out of (see `JoinPlan::shell_tasks`), before the
        // command can fork. A single thread moving itself, as init did.
        let zero = [b'0'];
        for fd in fds.shell_cgroup_tasks {
            if libc::write(*fd, zero.as_ptr().cast(), 1) != 1 {
                fail(st, Step::JoinCgroup, errno());
            }
        }
        // Next, while the ruleset descriptor may still sit at 0..=2 (init closed those, so
        // the kernel may have handed one out), before stdio is set up over them.
        if ruleset >= 0 {
            check!(
                Step::LandlockRestrict,
                libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32) as i32
            );
            libc::close(ruleset);
        }
        let null = libc::open(p.dev_null.as_ptr(), libc::O_RDONLY);
        check!(Step::Stdio, null);
        if null != 0 {
            check!(Step::Stdio, libc::dup2(null, 0));
            libc::close(null);
        }
        check!(Step::Stdio, libc::dup2(fds.out_w, 1));
        check!(Step::Stdio, libc::dup2(fds.err_w, 2));
        libc::close(fds.out_w);
        libc::close(fds.err_w);
        libc::setsid();
        // Paddock ignores SIGPIPE (a write to a closed pipe is an error it handles), and an
        // ignored signal stays ignored across execve: give the command the default, so
        // `yes | head -1` ends as it does everywhere. Without CLONE_SIGHAND this changes
        // only the child's own table.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        check!(Step::Cwd, libc::chdir(cwd));
        let (argv, env) = if let Some(w) = &p.waiting {
            // The preload's descriptors at the numbers it expects (copies first, so neither
            // original can be overwritten while still needed), inherited across execve.
            let c = libc::fcntl(fds.sync_r, libc::F_DUPFD_CLOEXEC, 5);
            check!(Step::Stdio, c);
            let s = libc::fcntl(st, libc::F_DUPFD_CLOEXEC, 5);
            check!(Step::Stdio, s);
            check!(Step::Stdio, libc::dup2(s, ZYGOTE_STATUS_FD));
            st = ZYGOTE_STATUS_FD;
            check!(Step::Stdio, libc::dup2(c, ZYGOTE_CMD_FD));
            libc::close(c);
            libc::close(s);
            (w.argv.as_ptr(), w.env.as_ptr())
        } else {
            (p.argv_ptrs.as_ptr(), p.env_ptrs.as_ptr())
        };
        libc::execve(p.program.as_ptr(), argv, env);
        fail(st, Step::ExecShell, errno())
    }
}

/// Reads `len` bytes from `fd` into `buf`; `Err(true)` on EOF before the first byte.
///
/// # Safety
/// `buf` must hold `len` bytes.
unsafe fn read_full(fd: RawFd, buf: *mut u8, len: usize) -> Result<(), bool> {
    let mut off = 0usize;
    while off < len {
        // SAFETY: `buf + off` stays within the `len` bytes the caller guarantees.
        let n = unsafe { libc::read(fd, buf.add(off).cast(), len - off) };
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            return Err(off == 0);
        }
        off += n as usize;
    }
    Ok(())
}

/// Init's side of the command message (see [`EncodedCommand`]): reads it into the buffer
/// prepared before the clone, points `argv_ptrs`/`env_ptrs` into it and returns the cwd.
/// EOF before the message means the jail was abandoned: exit quietly.
///
/// # Safety
/// Child only; raw syscalls over prepared memory.
unsafe fn read_command(p: &mut Prepared, fd: RawFd, st: RawFd) -> *const libc::c_char {
    let mut h = [0u8; COMMAND_HEADER];
    // SAFETY: reads into live buffers of the stated sizes; fail/_exit never return.
    unsafe {
        match read_full(fd, h.as_mut_ptr(), h.len()) {
            Ok(()) => {}
            Err(true) => libc::_exit(0),
            Err(false) => fail(st, Step::ReadCommand, libc::EPIPE),
        }
        let body = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let argc = u32::from_ne_bytes([h[4], h[5], h[6], h[7]]) as usize;
        let envc = u32::from_ne_bytes([h[8], h[9], h[10], h[11]]) as usize;
        if body == 0 || body > p.cmd_buf.len || argc == 0 || argc > COMMAND_MAX_ARGS {
            fail(st, Step::ReadCommand, libc::EINVAL);
        }
        if envc > COMMAND_MAX_ENV {
            fail(st, Step::ReadCommand, libc::EINVAL);
        }
        if read_full(fd, p.cmd_buf.ptr, body).is_err() {
            fail(st, Step::ReadCommand, libc::EPIPE);
        }
        let want = 1 + argc + envc;
        let base: *const u8 = p.cmd_buf.ptr;
        // SAFETY: the mapping holds `len` bytes and `body <= len`; only this process uses it.
        let buf = std::slice::from_raw_parts(base, body);
        let mut cwd: *const libc::c_char = std::ptr::null();
        let mut seen = 0usize;
        let mut start = 0usize;
        for (i, &b) in buf.iter().enumerate() {
            if b != 0 {
                continue;
            }
            if seen >= want {
                fail(st, Step::ReadCommand, libc::EINVAL);
            }
            let ptr: *const libc::c_char = base.add(start).cast();
            if seen == 0 {
                cwd = ptr;
            } else if seen <= argc {
                p.argv_ptrs[seen - 1] = ptr;
            } else {
                p.env_ptrs[seen - 1 - argc] = ptr;
            }
            seen += 1;
            start = i + 1;
        }
        if seen != want || start != body {
            fail(st, Step::ReadCommand, libc::EINVAL);
        }
        p.argv_ptrs[argc] = std::ptr::null();
        p.env_ptrs[envc] = std::ptr::null();
        cwd
    }
}

/// `ip link set lo up` with one ioctl pair on a throwaway socket.
pub(super) unsafe fn loopback_up() -> i32 {
    // SAFETY: socket/ioctl/close on a local ifreq.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return -1;
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        req.ifr_name[0] = b'l' as libc::c_char;
        req.ifr_name[1] = b'o' as libc::c_char;
        if libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req) < 0 {
            libc::close(s);
            return -1;
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        let r = libc::ioctl(s, libc::SIOCSIFFLAGS, &req);
        libc::close(s);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_paths_format_without_allocation() {
        let mut b = [0u8; 40];
        for (fd, want) in [
            (0, "/proc/self/fd/0"),
            (7, "/proc/self/fd/7"),
            (1234567, "/proc/self/fd/1234567"),
        ] {
            let p = fd_path(&mut b, fd);
            // SAFETY: fd_path returns a NUL-terminated string inside `b`.
            let s = unsafe { std::ffi::CStr::from_ptr(p) };
            assert_eq!(s.to_str().unwrap(), want);
        }
    }
}
