//! The jail's child: everything between `clone` and `execve`, in the order it happens.
//!
//! [`run`] is the entry right after the clone. It runs [`init`] over the real syscalls
//! ([`InChild`]) and ends the process the way `init` says: a failed step is written to the
//! status pipe as a [`StatusRecord`] and the child exits with 126. `init`:
//!
//! 1. arms the parent-death signal, joins the exec's v1 cgroups, closes every descriptor it
//!    does not need, and waits for the parent to write its maps ([`build_jail`]);
//! 2. enters a cgroup namespace, opens the mount sources, takes the sandbox's ids (inside a
//!    user namespace: now; as host root: after the mounts), builds the root on a tmpfs,
//!    sets the hostname, brings `lo` up, pivots into the root, creates the landlock ruleset,
//!    sets the rlimits, drops every capability, sets no_new_privs, becomes non-dumpable and
//!    installs the seccomp filter on itself;
//! 3. a sandbox's jail then `execve`s its init program ([`exec_init`]); a one-shot jail reads
//!    its command, or starts a waiting shell, with `CLONE_VFORK` ([`start_shell`]): the shell
//!    joins its cgroups, restricts itself with landlock, sets up stdio and its cwd and
//!    `execve`s ([`shell`]);
//! 4. init reaps until nothing is left, reports the shell's status, then says it is idle
//!    and waits to be killed ([`reap`]).
//!
//! Every function here is generic over [`Syscalls`], so the tests run the same code over a
//! recording fake and check the order of the steps for a spec.

use std::convert::Infallible;
use std::ffi::CStr;
use std::os::fd::RawFd;

use super::prepared::{COp, Prepared};
use super::wire::preload::{ZYGOTE_CMD_FD, ZYGOTE_STATUS_FD};
use super::wire::{self, StatusRecord, Step, TAG_EXIT, TAG_IDLE, TAG_SETUP};
use crate::mountplan::ms;
use crate::seccomp::Insn;
use crate::syscalls::{
    Errno, InChild, Mapping, PivotStage, Syscalls, close_all_but, make_mounts_private, pivot_into,
    write_all,
};

/// What the child inherits from the parent's frame besides [`Prepared`]: descriptors, the
/// filter, the shell's stack.
pub(super) struct Inherited<'a> {
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
    /// The seccomp program init installs on itself.
    pub(super) seccomp: &'a [Insn],
    /// The memory the shell child runs on until its `execve`.
    pub(super) shell_stack: &'a Mapping,
}

/// How the child's work ends before (or instead of) an `execve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// A step failed: its record goes to `status`, and the process exits with 126.
    Failed {
        /// Where the record goes.
        status: RawFd,
        /// The step.
        step: Step,
        /// Its error.
        errno: Errno,
    },
    /// Exit quietly with this code: the parent gave up or is gone, or the jail was
    /// abandoned before its command came.
    Exit(i32),
    /// Nothing is left in the jail: wait to be killed.
    Idle,
}

/// A sequence that ends only by stopping (an `execve` that works never returns).
type Ends = Result<Infallible, Stop>;

/// The error of `step`, reported on `status`.
fn at(status: RawFd, step: Step) -> impl FnOnce(Errno) -> Stop {
    move |errno| Stop::Failed {
        status,
        step,
        errno,
    }
}

/// The child's entry right after the clone.
///
/// # Safety
/// Only in a child just made by `clone` with fork semantics, from the parent's frame that
/// owns `p` and `inherited`; never returns.
pub(super) unsafe fn run(p: &mut Prepared, inherited: &Inherited) -> ! {
    // SAFETY: the caller's contract is `assume`'s.
    let k = unsafe { InChild::assume() };
    let stop = init(&k, p, inherited);
    match outcome(&k, stop) {
        Some(code) => k.exit(code),
        None => k.pause_forever(),
    }
}

/// Writes a failure's record; the exit code for `stop`, or `None` to wait to be killed.
fn outcome<K: Syscalls>(k: &K, stop: Stop) -> Option<i32> {
    match stop {
        Stop::Failed {
            status,
            step,
            errno,
        } => {
            put_record(
                k,
                status,
                &StatusRecord::encode(TAG_SETUP, step as u32 as i32, errno.0),
            );
            Some(126)
        }
        Stop::Exit(code) => Some(code),
        Stop::Idle => None,
    }
}

/// Writes a whole record (a failure to write is not reported: there is nowhere to).
fn put_record<K: Syscalls>(k: &K, fd: RawFd, rec: &[u8; StatusRecord::LEN]) {
    let _ = write_all(k, fd, rec);
}

/// Init: builds the jail, then `execve`s a sandbox's init, or starts the shell and reaps.
pub(super) fn init<K: Syscalls>(k: &K, p: &mut Prepared, inh: &Inherited) -> Stop {
    let ended = (|| -> Ends {
        let ruleset = build_jail(k, p, inh)?;
        if inh.control >= 0 {
            return exec_init(k, p, inh, ruleset);
        }
        let shell = start_shell(k, p, inh, ruleset)?;
        Err(reap(k, inh.status_w, shell))
    })();
    match ended {
        Ok(never) => match never {},
        Err(stop) => stop,
    }
}

/// Steps 1 and 2 of the module's list: from the clone to a sealed jail. Returns the landlock
/// ruleset (-1: none) for the shell or the sandbox's init to restrict themselves with.
fn build_jail<K: Syscalls>(k: &K, p: &mut Prepared, inh: &Inherited) -> Result<RawFd, Stop> {
    let st = inh.status_w;
    // Before anything else: a jail must never outlive the process that builds it. The
    // signal fires when the cloning thread ends; a parent that ended before this line is
    // caught by `parent_gone` just below.
    k.kill_with_parent()
        .map_err(at(st, Step::ParentDeathSignal))?;
    if k.parent_gone(inh.parent) {
        return Err(Stop::Exit(125));
    }
    // Next, while single-threaded and before anything is charged to the wrong cgroup:
    // move ourselves into the jail's v1 cgroups. Everything forked later is born inside.
    join_cgroups(k, inh.cgroup_tasks).map_err(at(st, Step::JoinCgroup))?;
    // Keep only our own descriptors (and the shell's cgroup files, until it has joined):
    // init must not hold Paddock's sockets and files open for as long as it lives.
    close_all_but(k, inh.keep);
    wait_for_parent(k, inh.sync_r, st)?;
    // Commands see their cgroup paths from the jail's own cgroup down, never Paddock's
    // (its pid is in those names) or a neighbour's. Entered here, after joining, because
    // a namespace's root is the cgroup its creator is in at that moment.
    k.unshare(libc::CLONE_NEWCGROUP)
        .map_err(at(st, Step::CgroupNamespace))?;

    open_sources(k, p, st)?;
    if !p.privileged_mounts {
        // Inside a user namespace of our own: take the sandbox ids first, keeping the
        // capabilities the namespace gives us for the mounts below.
        switch_ids(k, p, st)?;
    }
    make_mounts_private(k).map_err(at(st, Step::MakePrivate))?;
    build_root(k, p, st)?;
    for fd in &p.source_fds {
        k.close(*fd);
    }
    k.set_hostname(&p.hostname)
        .map_err(at(st, Step::Hostname))?;
    if p.new_net {
        k.loopback_up().map_err(at(st, Step::Loopback))?;
    }
    pivot_into(k, &p.staging).map_err(|(stage, errno)| {
        let step = match stage {
            PivotStage::Pivot => Step::PivotRoot,
            PivotStage::Detach => Step::DetachOldRoot,
        };
        at(st, step)(errno)
    })?;

    let ruleset = landlock_ruleset(k, p, st)?;
    for l in &p.rlimits {
        k.set_rlimit(l.resource, l.value)
            .map_err(at(st, Step::Rlimit))?;
    }
    for cap in 0..=p.cap_last_cap {
        k.drop_bounding_cap(cap)
            .map_err(at(st, Step::DropBoundingSet))?;
    }
    if p.privileged_mounts {
        // Host root until here, so the root could be built from any host directory
        // whatever its owner and mode (a 0700 parent of a nested mount included). Now
        // the sandbox ids: leaving uid 0 clears every capability.
        switch_ids(k, p, st)?;
    }
    // A change of credentials clears the parent-death signal: arm it again, and look
    // once more for a parent that ended in between.
    k.kill_with_parent()
        .map_err(at(st, Step::ParentDeathSignal))?;
    if k.parent_gone(inh.parent) {
        return Err(Stop::Exit(125));
    }
    if inh.parent >= 0 {
        k.close(inh.parent);
    }
    k.clear_ambient_caps().map_err(at(st, Step::ClearAmbient))?;
    k.drop_capabilities()
        .map_err(at(st, Step::DropCapabilities))?;
    k.set_no_new_privs().map_err(at(st, Step::NoNewPrivs))?;
    k.set_not_dumpable().map_err(at(st, Step::NotDumpable))?;
    // The seccomp filter goes on init itself, before the command comes: the shell
    // inherits it, and attaching a filter (the kernel validates it and precomputes its
    // per-syscall cache) leaves the exec's critical path. What init does from here on —
    // read, clone without namespace flags, wait4, write, exit — the filter allows.
    k.install_seccomp(inh.seccomp)
        .map_err(at(st, Step::Seccomp))?;
    Ok(ruleset)
}

/// Writes `0` (the writer itself) into each v1 `tasks` file.
fn join_cgroups<K: Syscalls>(k: &K, tasks: &[RawFd]) -> Result<(), Errno> {
    for fd in tasks {
        match k.write(*fd, b"0") {
            Ok(1) => {}
            Ok(_) => return Err(Errno(libc::EIO)),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Waits for the parent's byte on the sync pipe: it comes once the uid/gid maps are written.
fn wait_for_parent<K: Syscalls>(k: &K, sync_r: RawFd, st: RawFd) -> Result<(), Stop> {
    let mut b = [0u8; 1];
    loop {
        match k.read(sync_r, &mut b) {
            Ok(1) => return Ok(()),
            Err(Errno(libc::EINTR)) => {}
            Err(e) => return Err(at(st, Step::WaitForParent)(e)),
            // The parent gave up (it could not write our maps) or is gone: leave quietly.
            Ok(_) => return Err(Stop::Exit(125)),
        }
    }
}

/// Opens every mount source (`O_PATH`) in the child's mount namespace, while it still has
/// its original credentials. A source marked `no_symlinks` is refused (ELOOP) when any
/// component of its path is a symbolic link.
fn open_sources<K: Syscalls>(k: &K, p: &mut Prepared, st: RawFd) -> Result<(), Stop> {
    for i in 0..p.sources.len() {
        let src = &p.sources[i];
        let fd = match &p.source_parts[i] {
            None => k.open(src, libc::O_PATH | libc::O_CLOEXEC, 0),
            Some(parts) => k.open_no_symlinks(src, parts),
        }
        .map_err(at(st, Step::OpenSource))?;
        p.source_fds[i] = fd;
    }
    Ok(())
}

/// Takes the sandbox's uid and gid (and, for a root Paddock, no supplementary groups).
fn switch_ids<K: Syscalls>(k: &K, p: &Prepared, st: RawFd) -> Result<(), Stop> {
    if p.privileged {
        k.clear_groups().map_err(at(st, Step::SetGroups))?;
    }
    k.set_gid(p.gid).map_err(at(st, Step::SetGid))?;
    k.set_uid(p.uid).map_err(at(st, Step::SetUid))
}

/// The mount plan's operations, in order, on the staging directory.
fn build_root<K: Syscalls>(k: &K, p: &Prepared, st: RawFd) -> Result<(), Stop> {
    let source = |i: usize| p.source_fds.get(i).copied().unwrap_or(-1);
    for op in &p.ops {
        match op {
            COp::Tmpfs { dst, flags, data } => k
                .mount(Some(c"tmpfs"), dst, Some(c"tmpfs"), *flags, Some(data))
                .map_err(at(st, Step::MountTmpfs))?,
            COp::Mkdir { path } => match k.mkdir(path, 0o755) {
                Ok(()) | Err(Errno(libc::EEXIST)) => {}
                Err(e) => return Err(at(st, Step::Mkdir)(e)),
            },
            COp::Symlink { target, path } => {
                k.symlink(target, path).map_err(at(st, Step::Symlink))?
            }
            COp::Touch { path } => {
                let fd = k
                    .open(
                        path,
                        libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                        0o644,
                    )
                    .map_err(at(st, Step::DeviceMountPoint))?;
                k.close(fd);
            }
            COp::Bind {
                source: s,
                dst,
                recursive,
            } => k
                .bind_fd(source(*s), dst, *recursive)
                .map_err(at(st, Step::Bind))?,
            COp::IdmappedBind {
                source: s,
                dst,
                userns,
            } => k
                .idmapped_bind(source(*s), dst, *userns)
                .map_err(at(st, Step::IdmappedBind))?,
            COp::Remount { dst, flags } => k
                .mount(None, dst, None, ms::REMOUNT | ms::BIND | flags, None)
                .map_err(at(st, Step::Remount))?,
            COp::Proc { dst } => k
                .mount(
                    Some(c"proc"),
                    dst,
                    Some(c"proc"),
                    ms::NOSUID | ms::NODEV | ms::NOEXEC,
                    None,
                )
                .map_err(at(st, Step::MountProc))?,
            COp::Devpts { dst } => {
                // A private pty instance is a convenience (interactive tools); the jail
                // is complete without it, so a failure here is not fatal.
                let _ = k.mount(
                    Some(c"devpts"),
                    dst,
                    Some(c"devpts"),
                    ms::NOSUID | ms::NOEXEC,
                    Some(c"newinstance,ptmxmode=0666,mode=0620"),
                );
            }
            COp::File { path, data, mode } => {
                let fd = k
                    .open(
                        path,
                        libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC,
                        *mode,
                    )
                    .map_err(at(st, Step::WriteFile))?;
                write_all(k, fd, data).map_err(at(st, Step::WriteFile))?;
                k.close(fd);
            }
        }
    }
    Ok(())
}

/// Creates the landlock ruleset with a rule per planned path (-1 without landlock).
fn landlock_ruleset<K: Syscalls>(k: &K, p: &Prepared, st: RawFd) -> Result<RawFd, Stop> {
    let Some((abi, handled, scoped)) = p.ll else {
        return Ok(-1);
    };
    let ruleset = k
        .landlock_create_ruleset(abi, handled, scoped)
        .map_err(at(st, Step::LandlockCreate))?;
    for (path, access) in &p.ll_rules {
        let Ok(fd) = k.open(path, libc::O_PATH | libc::O_CLOEXEC, 0) else {
            // A planned path that does not exist (no /dev/tty on this host): nothing
            // beneath it can be written anyway.
            continue;
        };
        let added = k.landlock_add_path_rule(ruleset, fd, *access);
        k.close(fd);
        added.map_err(at(st, Step::LandlockRule))?;
    }
    Ok(ruleset)
}

/// The end of a sandbox jail's build: places the control socket and the landlock ruleset
/// where init expects them and `execve`s init from its memfd. The status pipe is
/// close-on-exec, so Paddock reads end of file once init runs.
fn exec_init<K: Syscalls>(k: &K, p: &Prepared, inh: &Inherited, ruleset: RawFd) -> Ends {
    use crate::sandbox_jail::proto::{INIT_CTL_FD, INIT_RULESET_FD};
    let st = inh.status_w;
    // Park everything above the numbers it goes to, then place it.
    let park = |fd: RawFd| if fd < 0 { Ok(-1) } else { k.dup_above(fd, 16) };
    let parked = (|| Ok((park(inh.control)?, park(ruleset)?, park(inh.init_program)?)))();
    let (ctl, rs, prog) = parked.map_err(at(st, Step::ExecInit))?;
    let st = park(st).map_err(at(st, Step::ExecInit))?;
    let place = |from: RawFd, to: RawFd, cloexec: bool| {
        k.dup_to(from, to, cloexec).map_err(at(st, Step::ExecInit))
    };
    place(ctl, INIT_CTL_FD, false)?;
    if rs >= 0 {
        place(rs, INIT_RULESET_FD, false)?;
    }
    place(prog, 5, true)?;
    place(st, 6, true)?;
    k.close_range(0, 2);
    if rs < 0 {
        k.close(INIT_RULESET_FD);
    }
    k.close_range(7, u32::MAX);
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: `init_argv` is NULL-terminated and points into `p`'s strings, `envp` is an
    // empty NULL-terminated array; all live across the call.
    let errno = unsafe { k.execve_fd(5, p.init_argv.as_ptr(), envp.as_ptr()) };
    Err(at(6, Step::ExecInit)(errno))
}

/// Step 3 of a one-shot jail: reads the command (unless a waiting shell reads it itself)
/// and starts the shell. Returns the shell's pid.
fn start_shell<K: Syscalls>(
    k: &K,
    p: &mut Prepared,
    inh: &Inherited,
    ruleset: RawFd,
) -> Result<i32, Stop> {
    let st = inh.status_w;
    // The jail is built: wait for the command, or start the shell now and let it read
    // the command itself (see `JailSpec::waiting_shell`).
    let waiting = p.waiting.is_some();
    if !waiting {
        read_command(k, p, inh.sync_r, st)?;
        k.close(inh.sync_r);
    }
    let p = &*p;
    let cwd = if waiting {
        c"/"
    } else {
        // The message starts with the cwd (`read_command` checked its NUL).
        CStr::from_bytes_until_nul(p.cmd_buf.as_slice()).unwrap_or(c"/")
    };

    // The shell shares init's memory until its execve (CLONE_VM | CLONE_VFORK, as
    // posix_spawn does), on its own stack: init is a copy of all of Paddock's address
    // space, and a plain fork would copy its page tables only for execve to throw them
    // away. Init sleeps until the execve (or the child's exit). Descriptors, cwd,
    // credentials, landlock and seccomp are per task, so the child's changes stay its own.
    let pid = k
        .spawn_vfork(inh.shell_stack, || {
            let Err(stop) = shell(k, p, inh, ruleset, cwd);
            outcome(k, stop).unwrap_or(126)
        })
        .map_err(at(st, Step::ForkShell))?;
    if waiting {
        k.close(inh.sync_r);
    }
    for fd in inh.shell_cgroup_tasks {
        k.close(*fd);
    }
    k.close(inh.out_w);
    k.close(inh.err_w);
    if ruleset >= 0 {
        k.close(ruleset);
    }
    Ok(pid)
}

/// The shell child: cgroups, landlock, stdio, cwd, execve (seccomp it inherited from init).
/// Landlock stays here, not on init: init outside the sandbox's landlock domain is what
/// keeps the command from signalling it (the domain's signal scope).
fn shell<K: Syscalls>(k: &K, p: &Prepared, inh: &Inherited, ruleset: RawFd, cwd: &CStr) -> Ends {
    let mut st = inh.status_w;
    // Into the cgroups init stays out of (see `JoinPlan::shell_tasks`), before the
    // command can fork. A single thread moving itself, as init did.
    join_cgroups(k, inh.shell_cgroup_tasks).map_err(at(st, Step::JoinCgroup))?;
    // Next, while the ruleset descriptor may still sit at 0..=2 (init closed those, so
    // the kernel may have handed one out), before stdio is set up over them.
    if ruleset >= 0 {
        k.landlock_restrict_self(ruleset)
            .map_err(at(st, Step::LandlockRestrict))?;
        k.close(ruleset);
    }
    let null = k
        .open(c"/dev/null", libc::O_RDONLY, 0)
        .map_err(at(st, Step::Stdio))?;
    if null != 0 {
        k.dup_to(null, 0, false).map_err(at(st, Step::Stdio))?;
        k.close(null);
    }
    k.dup_to(inh.out_w, 1, false).map_err(at(st, Step::Stdio))?;
    k.dup_to(inh.err_w, 2, false).map_err(at(st, Step::Stdio))?;
    k.close(inh.out_w);
    k.close(inh.err_w);
    k.setsid();
    // Paddock ignores SIGPIPE (a write to a closed pipe is an error it handles), and an
    // ignored signal stays ignored across execve: give the command the default, so
    // `yes | head -1` ends as it does everywhere.
    k.default_sigpipe();
    k.chdir(cwd).map_err(at(st, Step::Cwd))?;
    let (argv, env) = if let Some(w) = &p.waiting {
        // The preload's descriptors at the numbers it expects (copies first, so neither
        // original can be overwritten while still needed), inherited across execve.
        let c = k.dup_above(inh.sync_r, 5).map_err(at(st, Step::Stdio))?;
        let s = k.dup_above(st, 5).map_err(at(st, Step::Stdio))?;
        k.dup_to(s, ZYGOTE_STATUS_FD, false)
            .map_err(at(st, Step::Stdio))?;
        st = ZYGOTE_STATUS_FD;
        k.dup_to(c, ZYGOTE_CMD_FD, false)
            .map_err(at(st, Step::Stdio))?;
        k.close(c);
        k.close(s);
        (w.argv.as_ptr(), w.env.as_ptr())
    } else {
        (p.argv_ptrs.as_ptr(), p.env_ptrs.as_ptr())
    };
    // SAFETY: both arrays are NULL-terminated (`prepare` and `read_command` end them) and
    // point into `p`'s strings or its command buffer, all live across the call.
    let errno = unsafe { k.execve(&p.program, argv, env) };
    Err(at(st, Step::ExecShell)(errno))
}

/// Reads exactly `buf.len()` bytes; `Err(true)` on end of file before the first byte.
fn read_full<K: Syscalls>(k: &K, fd: RawFd, buf: &mut [u8]) -> Result<(), bool> {
    let mut off = 0usize;
    while off < buf.len() {
        match k.read(fd, &mut buf[off..]) {
            Err(Errno(libc::EINTR)) => {}
            Ok(0) | Err(_) => return Err(off == 0),
            Ok(n) => off += n,
        }
    }
    Ok(())
}

/// Init's side of the command message (see [`wire::EncodedCommand`]): reads it into the
/// buffer prepared before the clone and points `argv_ptrs`/`env_ptrs` into it (the cwd is
/// the message's first string). End of file before the message means the jail was
/// abandoned: exit quietly.
fn read_command<K: Syscalls>(k: &K, p: &mut Prepared, fd: RawFd, st: RawFd) -> Result<(), Stop> {
    let bad = at(st, Step::ReadCommand);
    let mut h = [0u8; wire::COMMAND_HEADER];
    match read_full(k, fd, &mut h) {
        Ok(()) => {}
        Err(true) => return Err(Stop::Exit(0)),
        Err(false) => return Err(bad(Errno(libc::EPIPE))),
    }
    let Some(layout) = wire::CommandLayout::parse(&h, p.cmd_buf.as_slice().len()) else {
        return Err(bad(Errno(libc::EINVAL)));
    };
    let body = &mut p.cmd_buf.as_mut_slice()[..layout.body];
    if read_full(k, fd, body).is_err() {
        return Err(bad(Errno(libc::EPIPE)));
    }
    let body = &p.cmd_buf.as_slice()[..layout.body];
    let (argv, env) = (&mut p.argv_ptrs, &mut p.env_ptrs);
    let split = layout.split(body, |part, at| {
        let ptr = body[at..].as_ptr().cast();
        match part {
            wire::Part::Cwd => {}
            wire::Part::Arg(i) => argv[i] = ptr,
            wire::Part::Env(i) => env[i] = ptr,
        }
    });
    if !split {
        return Err(bad(Errno(libc::EINVAL)));
    }
    argv[layout.argc] = std::ptr::null();
    env[layout.envc] = std::ptr::null();
    Ok(())
}

/// Step 4: reaps every process of the namespace, reports the shell's wait status as soon
/// as the shell exits, and once nothing is left says so.
fn reap<K: Syscalls>(k: &K, st: RawFd, shell: i32) -> Stop {
    loop {
        match k.wait_any() {
            Ok((pid, status)) if pid == shell => {
                put_record(k, st, &StatusRecord::encode(TAG_EXIT, status, 0));
            }
            Ok(_) | Err(Errno(libc::EINTR)) => {}
            Err(_) => break,
        }
    }
    // Nothing is left. Exiting now would tear the namespaces down (the mount tree, this
    // copy of Paddock's memory: about a millisecond of kernel work) while Paddock hands
    // the result over; say so and wait for Paddock's SIGKILL (or the parent-death
    // signal) instead, which comes once the result is out.
    put_record(k, st, &StatusRecord::encode(TAG_IDLE, 0, 0));
    Stop::Idle
}
