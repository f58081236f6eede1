//! Paddock's side of a jail: prepare the child's memory, clone, write its uid/gid maps,
//! move it into its cgroup if the clone could not, release it, and hand over the command.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use super::child::{Inherited, run};
use super::prepared::{SHELL_STACK_BYTES, prepare};
use super::spec::{JailCommand, JailSpec, NetMode};
use super::wire::EncodedCommand;
use super::{SpawnError, os};
use crate::process::PidFd;
use crate::syscalls::Mapping;

/// Creates a loopback-only network namespace (with `lo` up) and returns a descriptor that
/// keeps it alive. A short-lived thread of our own moves itself into a new network
/// namespace (`unshare(CLONE_NEWNET)` changes only the calling thread), brings `lo` up
/// there, opens its namespace and ends; nothing is forked, so the cost does not grow with
/// Paddock's memory. Creating (and later joining) a network namespace needs CAP_SYS_ADMIN
/// in Paddock's user namespace, so this is for a root Paddock. The namespace belongs to
/// Paddock's user namespace: a jail that joins it has no capability over it (its
/// capabilities are in the jail's own user namespace), so it cannot reconfigure it.
pub fn create_netns() -> io::Result<OwnedFd> {
    std::thread::Builder::new()
        .name("paddock-netns".into())
        .spawn(|| {
            // SAFETY: unshare affects only this thread, which ends right after; no other
            // code runs on it.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } < 0 {
                return Err(io::Error::last_os_error());
            }
            if let Err(e) = crate::syscalls::loopback_up() {
                return Err(io::Error::other(format!(
                    "could not bring up loopback in the new network namespace: {}",
                    io::Error::from_raw_os_error(e.0)
                )));
            }
            std::fs::File::open("/proc/thread-self/ns/net").map(OwnedFd::from)
        })?
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the network namespace thread panicked")))
}

/// Joins `target` on the calling thread for the duration of `f`, then returns to the
/// thread's previous network namespace. Only the calling thread is affected.
fn in_netns<T>(target: &OwnedFd, f: impl FnOnce() -> T) -> Result<T, SpawnError> {
    let home = std::fs::File::open("/proc/thread-self/ns/net")
        .map_err(os("open the spawner's network namespace"))?;
    // SAFETY: setns on valid namespace descriptors; affects only this thread.
    if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        return Err(os("join the sandbox's network namespace")(
            io::Error::last_os_error(),
        ));
    }
    let out = f();
    // SAFETY: as above.
    if unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        // The thread would stay in a sandbox's network and hand it to the next jail: never
        // let that happen.
        tracing::error!("could not return the spawner thread to its network namespace; aborting");
        std::process::abort();
    }
    Ok(out)
}

/// A built jail whose init waits for its command ([`PendingJail::start`]). Dropping it
/// kills and reaps init.
#[derive(Debug)]
pub struct PendingJail {
    parts: Option<(JailChild, OwnedFd)>,
}

impl PendingJail {
    /// The waiting init.
    pub fn init(&self) -> Option<&PidFd> {
        self.parts.as_ref().map(|(c, _)| &c.init)
    }

    /// Sends the command: init forks the shell and the jail runs. Blocks only while the pipe
    /// is full (a message over 64 KiB and an init still building the jail). When init is
    /// gone (setup failed, or it was killed) the write fails with `EPIPE`; a setup failure is
    /// then also waiting on the status pipe of the returned error's jail, which is dropped.
    pub fn start(mut self, cmd: &EncodedCommand) -> Result<JailChild, SpawnError> {
        let Some((child, pipe)) = self.parts.take() else {
            return Err(os("send the command")(io::Error::other(
                "jail already used",
            )));
        };
        let mut off = 0usize;
        let bytes = cmd.as_bytes();
        while off < bytes.len() {
            // SAFETY: writing from a live buffer to our pipe's write end.
            let n = unsafe {
                libc::write(
                    pipe.as_raw_fd(),
                    bytes[off..].as_ptr().cast(),
                    bytes.len() - off,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                self.parts = Some((child, pipe));
                return Err(os("send the command")(e));
            }
            off += n as usize;
        }
        Ok(child)
    }
}

impl Drop for PendingJail {
    fn drop(&mut self) {
        if let Some((child, pipe)) = self.parts.take() {
            drop(pipe);
            let _ = child.init.kill();
            let _ = child.init.wait_blocking();
        }
    }
}

/// A running jail.
#[derive(Debug)]
pub struct JailChild {
    /// The exec's init (pid 1 of its namespace).
    pub init: PidFd,
    /// Status records ([`super::StatusRecord`]); EOF when init is gone.
    pub status: OwnedFd,
    /// The shell's stdout (non-blocking).
    pub stdout: OwnedFd,
    /// The shell's stderr (non-blocking).
    pub stderr: OwnedFd,
}

/// Whether `program` can take the shell preload: an ELF executable with a dynamic loader
/// (`PT_INTERP`). A static shell ignores `LD_PRELOAD`, so its jails must not wait for it.
pub fn takes_preload(program: &Path) -> bool {
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(program) else {
        return false;
    };
    let mut head = [0u8; 64];
    if f.read_exact(&mut head).is_err() || &head[..4] != b"\x7fELF" || head[4] != 2 {
        return false;
    }
    // 64-bit, native byte order (this is the host's own shell).
    let u16_at = |b: &[u8], o: usize| u16::from_ne_bytes([b[o], b[o + 1]]) as usize;
    let u64_at = |b: &[u8], o: usize| {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[o..o + 8]);
        u64::from_ne_bytes(x)
    };
    let (phoff, phentsize, phnum) = (u64_at(&head, 32), u16_at(&head, 54), u16_at(&head, 56));
    if phentsize < 4 || phnum == 0 || phnum > 256 {
        return false;
    }
    let mut ph = vec![0u8; phentsize * phnum];
    use std::io::{Seek, SeekFrom};
    if f.seek(SeekFrom::Start(phoff)).is_err() || f.read_exact(&mut ph).is_err() {
        return false;
    }
    const PT_INTERP: u32 = 3;
    ph.chunks(phentsize)
        .any(|e| u32::from_ne_bytes([e[0], e[1], e[2], e[3]]) == PT_INTERP)
}

fn pipe_pair(step: &'static str) -> Result<(OwnedFd, OwnedFd), SpawnError> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(os(step)(io::Error::last_os_error()));
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((above_stdio(r, step)?, above_stdio(w, step)?))
}

/// Moves a descriptor to >= 3, so the child can close everything else by ranges and use
/// 0..=2 for the shell's stdio.
fn above_stdio(fd: OwnedFd, step: &'static str) -> Result<OwnedFd, SpawnError> {
    if fd.as_raw_fd() >= 3 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC duplicates a valid descriptor.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if n < 0 {
        return Err(os(step)(io::Error::last_os_error()));
    }
    // SAFETY: `n` is a fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    crate::process::set_nonblocking(fd)
}

/// Spawns the jail and starts `cmd` in it: [`build`] then [`PendingJail::start`].
pub fn spawn(spec: &JailSpec, cmd: &JailCommand) -> Result<JailChild, SpawnError> {
    let cmd = cmd.encode()?;
    build(spec)?.start(&cmd)
}

/// Builds the jail: returns once init is released and building the root; init then waits for
/// its command. Call it from a thread that lives as long as the jails it starts: init's
/// parent-death signal fires when *that thread* exits.
pub fn build(spec: &JailSpec) -> Result<PendingJail, SpawnError> {
    let (out_r, out_w) = pipe_pair("stdout pipe")?;
    let (err_r, err_w) = pipe_pair("stderr pipe")?;
    let cloned = clone_jail(spec, Some((&out_w, &err_w)), None)?;
    drop((out_w, err_w));
    let child = JailChild {
        init: cloned.init,
        status: cloned.status,
        stdout: out_r,
        stderr: err_r,
    };
    // From here on, dropping `pending` kills and reaps init.
    let pending = PendingJail {
        parts: Some((child, cloned.sync_w)),
    };
    cloned.setup?;
    if let Some((c, _)) = &pending.parts {
        set_nonblocking(&c.stdout).map_err(os("stdout pipe"))?;
        set_nonblocking(&c.stderr).map_err(os("stderr pipe"))?;
        set_nonblocking(&c.status).map_err(os("status pipe"))?;
    }
    Ok(pending)
}

/// A jail that lives as long as its sandbox, on its way up: once the root is built its
/// child `execve`s the sandbox's init ([`crate::sandbox_jail`]). `status` reaches end of
/// file when init runs (the child's copy was close-on-exec), or carries the failed step.
#[derive(Debug)]
pub struct BuildingSandbox {
    /// The jail's pid 1 (first the child building the root, then init).
    pub init: PidFd,
    /// Setup failures; end of file once init runs.
    pub status: OwnedFd,
    /// Paddock's end of init's control socket.
    pub control: OwnedFd,
}

/// Builds a sandbox's jail and starts `init` (a sealed memfd holding the init program) as
/// its pid 1. Same thread rule as [`build`]. Killing `init` through the returned pidfd ends
/// the jail with everything in it.
pub fn build_sandbox(spec: &JailSpec, init: &OwnedFd) -> Result<BuildingSandbox, SpawnError> {
    let mut pair = [0 as RawFd; 2];
    // SAFETY: socketpair writes two fresh descriptors into the array.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            pair.as_mut_ptr(),
        )
    } < 0
    {
        return Err(os("control socket")(io::Error::last_os_error()));
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) };
    let theirs = above_stdio(theirs, "control socket")?;
    let cloned = clone_jail(spec, None, Some((&theirs, init)))?;
    drop(theirs);
    let building = BuildingSandbox {
        init: cloned.init,
        status: cloned.status,
        control: ours,
    };
    if let Err(e) = cloned.setup {
        let _ = building.init.kill();
        let _ = building.init.wait_blocking();
        return Err(e);
    }
    drop(cloned.sync_w);
    set_nonblocking(&building.status).map_err(os("status pipe"))?;
    Ok(building)
}

/// The pidfd of this process, inherited by every jail's child so it can tell whether
/// Paddock is still there at the moments its parent-death signal is not armed (`-1` on a
/// kernel without pidfds: the signal alone then).
fn own_pidfd() -> RawFd {
    static OWN: std::sync::OnceLock<Option<OwnedFd>> = std::sync::OnceLock::new();
    OWN.get_or_init(|| {
        // SAFETY: pidfd_open of our own pid; the result is a fresh descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        above_stdio(fd, "pidfd").ok()
    })
    .as_ref()
    .map_or(-1, |f| f.as_raw_fd())
}

/// What [`clone_jail`] made. `setup` is the parent's part after the clone (maps, cgroup,
/// release); when it failed the child is still there and must be killed by the caller.
struct Cloned {
    init: PidFd,
    status: OwnedFd,
    sync_w: OwnedFd,
    setup: Result<(), SpawnError>,
}

/// Clones the jail's child and releases it. `stdio`: the write ends of a one-shot jail's
/// stdout and stderr; `sandbox`: the child's end of init's control socket and the init
/// program, for a sandbox's jail.
fn clone_jail(
    spec: &JailSpec,
    stdio: Option<(&OwnedFd, &OwnedFd)>,
    sandbox: Option<(&OwnedFd, &OwnedFd)>,
) -> Result<Cloned, SpawnError> {
    let mut p = prepare(spec)?;
    if u16::try_from(spec.seccomp.len()).is_err() {
        return Err(SpawnError::Os {
            step: "seccomp program",
            source: io::Error::other("too long"),
        });
    }
    // Opened here, with Paddock's credentials (the kernel checks the opener's), and written
    // by the child: see `ExecCgroup::join_plan`.
    let open_all = |files: &[PathBuf]| {
        files
            .iter()
            .map(|f| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(f)
                    .map(OwnedFd::from)
            })
            .collect::<io::Result<Vec<OwnedFd>>>()
            .map_err(os("open the exec cgroup"))
    };
    let tasks = open_all(&spec.cgroup.self_tasks)?;
    let task_fds: Vec<RawFd> = tasks.iter().map(|f| f.as_raw_fd()).collect();
    let shell_tasks = open_all(&spec.cgroup.shell_tasks)?;
    let shell_task_fds: Vec<RawFd> = shell_tasks.iter().map(|f| f.as_raw_fd()).collect();
    if shell_task_fds.len() > MAX_SHELL_TASKS {
        return Err(SpawnError::Os {
            step: "open the exec cgroup",
            source: io::Error::other("too many cgroup hierarchies for the shell to join"),
        });
    }
    // The child's copy of this buffer is the shell's stack (see `child::start_shell`).
    let shell_stack = Mapping::new(SHELL_STACK_BYTES).map_err(os("map the shell stack"))?;
    let (sync_r, sync_w) = pipe_pair("sync pipe")?;
    let (status_r, status_w) = pipe_pair("status pipe")?;
    // The cgroup namespace is entered by the child once it has joined its cgroups (see
    // `child::build_jail`); the user namespace only when Paddock is not root.
    let mut flags = libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_PIDFD;
    if !spec.privileged_mounts() {
        flags |= libc::CLONE_NEWUSER;
    }
    if matches!(spec.net, NetMode::PerExec) {
        flags |= libc::CLONE_NEWNET;
    }
    let mut keep: Vec<u32> = [
        sync_r.as_raw_fd(),
        status_w.as_raw_fd(),
        stdio.map_or(-1, |(o, _)| o.as_raw_fd()),
        stdio.map_or(-1, |(_, e)| e.as_raw_fd()),
        own_pidfd(),
        sandbox.map_or(-1, |(c, _)| c.as_raw_fd()),
        sandbox.map_or(-1, |(_, i)| i.as_raw_fd()),
    ]
    .into_iter()
    .chain(shell_task_fds.iter().copied())
    .chain(spec.idmap_userns.iter().map(|f| f.as_raw_fd()))
    .filter_map(|fd| u32::try_from(fd).ok())
    .collect();
    keep.sort_unstable();
    keep.dedup();
    let inherited = Inherited {
        sync_r: sync_r.as_raw_fd(),
        status_w: status_w.as_raw_fd(),
        out_w: stdio.map_or(-1, |(o, _)| o.as_raw_fd()),
        err_w: stdio.map_or(-1, |(_, e)| e.as_raw_fd()),
        parent: own_pidfd(),
        control: sandbox.map_or(-1, |(c, _)| c.as_raw_fd()),
        init_program: sandbox.map_or(-1, |(_, i)| i.as_raw_fd()),
        keep: &keep,
        cgroup_tasks: &task_fds,
        shell_cgroup_tasks: &shell_task_fds,
        seccomp: &spec.seccomp,
        shell_stack: &shell_stack,
    };
    // The v2 cgroup init is created in (CLONE_INTO_CGROUP), opened with our credentials.
    let into = spec
        .cgroup
        .clone_into
        .as_ref()
        .map(|d| std::fs::File::open(d).map(OwnedFd::from))
        .transpose()
        .map_err(os("open the exec cgroup"))?;
    let mut pidfd: libc::c_int = -1;
    // Whether init was created inside its v2 cgroup (else the parent moves it there below).
    let mut joined_by_clone = false;
    let mut do_clone = |pidfd: &mut libc::c_int, joined: &mut bool| {
        let mut r = -1;
        if let Some(cg) = &into {
            let args = CloneArgs {
                flags: flags as u64 | CLONE_INTO_CGROUP,
                pidfd: pidfd as *mut libc::c_int as u64,
                exit_signal: libc::SIGCHLD as u64,
                cgroup: cg.as_raw_fd() as u64,
                ..CloneArgs::default()
            };
            // SAFETY: clone3 with no stack has fork semantics, as clone below; `args` and the
            // pidfd slot it points at are live locals.
            r = unsafe {
                libc::syscall(
                    libc::SYS_clone3,
                    &args as *const CloneArgs,
                    std::mem::size_of::<CloneArgs>(),
                )
            };
            *joined = r >= 0;
            // A kernel before 5.7 (no CLONE_INTO_CGROUP) or 5.3 (no clone3) refuses it: fall
            // back to clone, and the parent moves init afterwards.
            if r < 0
                && !matches!(
                    io::Error::last_os_error().raw_os_error(),
                    Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL)
                )
            {
                return r;
            }
        }
        if r < 0 {
            // SAFETY: clone with a NULL stack has fork semantics: the child runs on a private
            // copy of this thread's stack and memory. CLONE_PIDFD stores the pidfd through
            // the parent_tid pointer, which points at a live local.
            r = unsafe {
                libc::syscall(
                    libc::SYS_clone,
                    (flags as libc::c_ulong) | libc::SIGCHLD as libc::c_ulong,
                    std::ptr::null_mut::<libc::c_void>(),
                    pidfd as *mut libc::c_int,
                    std::ptr::null_mut::<libc::c_int>(),
                    0 as libc::c_ulong,
                )
            };
        }
        if r == 0 {
            // SAFETY: we are the freshly cloned child; `run` only makes raw syscalls
            // over the prepared memory and ends in execve or _exit — it never returns here,
            // so the child never runs the parent's code after the clone.
            unsafe { run(&mut p, &inherited) }
        }
        r
    };
    let pid = match &spec.net {
        NetMode::Join(ns) => in_netns(ns, || do_clone(&mut pidfd, &mut joined_by_clone))?,
        _ => do_clone(&mut pidfd, &mut joined_by_clone),
    };
    if pid < 0 {
        return Err(os("clone")(io::Error::last_os_error()));
    }
    let pid = i32::try_from(pid).map_err(|_| os("clone")(io::Error::other("pid out of range")))?;
    // SAFETY: CLONE_PIDFD filled in a fresh descriptor owned by us.
    let init = PidFd::from_owned(unsafe { OwnedFd::from_raw_fd(pidfd) }, pid);
    drop((sync_r, status_w, tasks));
    let setup = (|| -> Result<(), SpawnError> {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        if !spec.privileged_mounts() {
            if !spec.privileged {
                std::fs::write(proc.join("setgroups"), "deny").map_err(os("write setgroups"))?;
            }
            std::fs::write(proc.join("uid_map"), crate::uidmap::identity_map(spec.uid))
                .map_err(os("write uid_map"))?;
            std::fs::write(proc.join("gid_map"), crate::uidmap::identity_map(spec.gid))
                .map_err(os("write gid_map"))?;
        }
        if let (Some(dir), false) = (&spec.cgroup.clone_into, joined_by_clone) {
            std::fs::write(dir.join("cgroup.procs"), pid.to_string())
                .map_err(os("join the exec cgroup"))?;
        }
        let one = [1u8];
        // SAFETY: write one byte from a live buffer to our pipe.
        if unsafe { libc::write(sync_w.as_raw_fd(), one.as_ptr().cast(), 1) } != 1 {
            return Err(os("release the child")(io::Error::last_os_error()));
        }
        Ok(())
    })();
    Ok(Cloned {
        init,
        status: status_r,
        sync_w,
        setup,
    })
}

/// `struct clone_args` of `clone3(2)` (the 88-byte version with `cgroup`).
#[repr(C)]
#[derive(Default)]
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

/// At most this many v1 hierarchies are joined by the shell (`pids` is the only one).
pub(super) const MAX_SHELL_TASKS: usize = 3;

/// `CLONE_INTO_CGROUP` (Linux 5.7).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `/proc/sys/kernel/cap_last_cap` (40 when unreadable, the value of Linux 5.9+).
pub fn cap_last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}
