//! Safe wrappers over the few process syscalls the runtime needs outside the jail child:
//! pidfds (race-free kill and wait of a jail's init), process-group kill for
//! `isolation: none`, ids, `statvfs` flags and `chown`.
//!
//! Invariant: a [`PidFd`] always refers to the process it was opened for, even after that
//! process died and its pid was reused, so killing through it never hits a stranger.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// How a reaped process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStatus {
    /// Exited with a code.
    Exited(i32),
    /// Killed by a signal.
    Signaled(i32),
}

impl WaitStatus {
    /// Decodes a raw `wait` status.
    pub fn from_raw(status: i32) -> Self {
        if libc::WIFSIGNALED(status) {
            Self::Signaled(libc::WTERMSIG(status))
        } else {
            Self::Exited(libc::WEXITSTATUS(status))
        }
    }
}

/// A process file descriptor of a child of this process.
#[derive(Debug)]
pub struct PidFd {
    fd: OwnedFd,
    pid: i32,
}

impl PidFd {
    /// Wraps a pidfd returned by `clone(CLONE_PIDFD)`.
    pub(crate) fn from_owned(fd: OwnedFd, pid: i32) -> Self {
        Self { fd, pid }
    }

    /// Opens a pidfd for `pid`.
    pub fn open(pid: i32) -> io::Result<Self> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let raw = RawFd::try_from(r).map_err(|_| io::Error::other("pidfd out of range"))?;
        // SAFETY: `raw` is a freshly opened descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Self { fd, pid })
    }

    /// The pid (in Paddock's pid namespace).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `sig`. A process that already exited is not an error.
    pub fn signal(&self, sig: i32) -> io::Result<()> {
        // SAFETY: pidfd_send_signal with a valid pidfd, a signal number, NULL info, no flags.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::c_void>(),
                0,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ESRCH) {
                return Ok(());
            }
            return Err(e);
        }
        Ok(())
    }

    /// SIGKILL. When the process is the init of a pid namespace, the kernel kills every
    /// process in that namespace with it.
    pub fn kill(&self) -> io::Result<()> {
        self.signal(libc::SIGKILL)
    }

    /// Reaps the process if it has exited (`None` while it runs).
    pub fn try_wait(&self) -> io::Result<Option<WaitStatus>> {
        // SAFETY: an all-zero siginfo_t is a valid value to be filled by waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on our own pidfd with a valid out-pointer.
        let r = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                self.fd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: waitid filled `info`; si_pid is 0 when nothing was reaped.
        let pid = unsafe { info.si_pid() };
        if pid == 0 {
            return Ok(None);
        }
        // SAFETY: as above; si_status is valid for CLD_* codes.
        let status = unsafe { info.si_status() };
        Ok(Some(if info.si_code == libc::CLD_EXITED {
            WaitStatus::Exited(status)
        } else {
            WaitStatus::Signaled(status)
        }))
    }

    /// Blocks until the process exits and reaps it.
    pub fn wait_blocking(&self) -> io::Result<WaitStatus> {
        loop {
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll on one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, -1) };
            if let Some(s) = self.try_wait()? {
                return Ok(s);
            }
        }
    }
}

/// Waits without blocking a thread until the process behind `pidfd` exits, then reaps it.
/// Needs a tokio runtime with I/O enabled.
pub async fn wait_exit(pidfd: std::sync::Arc<PidFd>) -> io::Result<WaitStatus> {
    // SAFETY: the Arc keeps the descriptor open for as long as the AsyncFd holds it, and
    // nothing closes or replaces it while registered (OwnedFd closes only on the last drop).
    let afd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(
            pidfd.clone(),
            tokio::io::Interest::READABLE,
        )?
    };
    loop {
        if let Some(s) = pidfd.try_wait()? {
            return Ok(s);
        }
        let mut guard = afd.readable().await?;
        guard.clear_ready();
    }
}

impl AsRawFd for PidFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Sets `O_NONBLOCK` on a descriptor (a pipe end handed to the async runtime).
pub fn set_nonblocking(fd: &impl std::os::fd::AsRawFd) -> io::Result<()> {
    // SAFETY: fcntl on a valid descriptor.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// This process's effective uid.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no failure mode.
    unsafe { libc::geteuid() }
}

/// This process's effective gid.
pub fn egid() -> u32 {
    // SAFETY: getegid has no failure mode.
    unsafe { libc::getegid() }
}

/// How many CPUs are online (`None` when the C library cannot tell). No cpuset or affinity
/// mask can give a process more than these.
pub fn online_cpus() -> Option<u32> {
    // SAFETY: sysconf only reads system configuration.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    u32::try_from(n).ok().filter(|n| *n > 0)
}

/// The hard limit of an rlimit resource (`u64::MAX` for infinity).
pub fn rlimit_hard(resource: i32) -> io::Result<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills a valid out-pointer.
    if unsafe { libc::getrlimit(resource as _, &mut r) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r.rlim_max)
}

/// Kills a whole process group (`isolation: none`).
pub fn kill_process_group(pgid: i32, sig: i32) -> io::Result<()> {
    if pgid <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to signal process group <= 1",
        ));
    }
    // SAFETY: kill with a negative pid signals that process group.
    let r = unsafe { libc::kill(-pgid, sig) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        return Err(e);
    }
    Ok(())
}

/// A process left behind on purpose, to learn whether orphans are reaped here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Orphan {
    /// Its pid.
    pub pid: i32,
    /// Its start time (clock ticks after boot), which tells it from a later process that
    /// got the same pid.
    pub start_ticks: u64,
}

/// What became of an [`Orphan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrphanState {
    /// Reaped by whoever adopted it.
    Reaped,
    /// Still there (a zombie nobody waited for, so far).
    Waiting,
}

/// Leaves an orphan: a child forks a grandchild and exits, and the grandchild, once its
/// start time is known, exits too. It is adopted by whoever would adopt a jail's init
/// after this process is gone — the nearest subreaper above us or pid 1 of our pid
/// namespace — and whether that one reaps it ([`orphan_state`], asked later) says whether
/// processes left behind are reaped here. Not every pid 1 reaps (a container whose first
/// process is an application that never calls `wait`); then this one zombie stays.
pub fn leave_orphan() -> io::Result<Orphan> {
    let pipe = || -> io::Result<(OwnedFd, OwnedFd)> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two new descriptors into the array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both are fresh descriptors that nothing else owns.
        Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
    };
    // The grandchild's pid, from the child; and a pipe the grandchild waits on until we
    // have read its start time (its end of file is our closing the last write end).
    let (pid_rx, pid_tx) = pipe()?;
    let (hold_rx, hold_tx) = pipe()?;
    // SAFETY: the child and the grandchild only call async-signal-safe functions (fork,
    // close, read, write, _exit), so forking a process with other threads is sound.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(io::Error::last_os_error());
    }
    if child == 0 {
        // SAFETY: async-signal-safe calls only; neither process returns into Rust code.
        unsafe {
            let orphan = libc::fork();
            if orphan == 0 {
                libc::close(hold_tx.as_raw_fd());
                let mut b = 0u8;
                libc::read(hold_rx.as_raw_fd(), (&raw mut b).cast(), 1);
                libc::_exit(0);
            }
            let bytes = orphan.to_ne_bytes();
            libc::write(pid_tx.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
            libc::_exit(0);
        }
    }
    drop(pid_tx);
    drop(hold_rx);
    loop {
        let mut status = 0;
        // SAFETY: waits for our own child, with a valid out-pointer.
        if unsafe { libc::waitpid(child, &mut status, 0) } >= 0 {
            break;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => {}
            // Reaped by a thread of ours waiting for any child: it has exited all the same.
            Some(libc::ECHILD) => break,
            _ => return Err(e),
        }
    }
    let mut bytes = [0u8; 4];
    std::io::Read::read_exact(&mut std::fs::File::from(pid_rx), &mut bytes)?;
    let pid = i32::from_ne_bytes(bytes);
    if pid <= 0 {
        return Err(io::Error::other("the probe's child could not fork"));
    }
    // The grandchild waits for `hold_tx` to close, so it is still there to be looked at.
    let start_ticks = start_ticks(pid)?;
    drop(hold_tx);
    Ok(Orphan { pid, start_ticks })
}

/// Whether `orphan` was reaped: its pid is gone, or now belongs to a later process.
pub fn orphan_state(orphan: &Orphan) -> OrphanState {
    match start_ticks(orphan.pid) {
        Ok(t) if t == orphan.start_ticks => OrphanState::Waiting,
        _ => OrphanState::Reaped,
    }
}

/// Field 22 of `/proc/PID/stat`: when the process started, in clock ticks after boot.
fn start_ticks(pid: i32) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces and parentheses: count from its end.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other("unexpected /proc/PID/stat"))?;
    rest.split_whitespace()
        .nth(19)
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| io::Error::other("unexpected /proc/PID/stat"))
}

/// Whether a process with this pid exists (any state but reaped).
pub fn pid_exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// `statvfs(path).f_flag`.
pub fn statvfs_flags(path: &Path) -> io::Result<u64> {
    let c = cpath(path)?;
    // SAFETY: an all-zero statvfs is valid to be filled in.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(s.f_flag)
}

/// `lchown(path, uid, gid)` (does not follow a final symlink).
pub fn lchown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let c = cpath(path)?;
    // SAFETY: valid C string.
    if unsafe { libc::lchown(c.as_ptr(), uid, gid) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Host pids of processes whose `/proc/PID/status` lists `NSpid` in a namespace below ours
/// and whose pid-namespace inode equals `ns_inode` — every process of one jail.
pub fn pids_in_pid_namespace(ns_inode: u64) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid_namespace_inode(pid) == Some(ns_inode) {
            out.push(pid);
        }
    }
    out
}

/// The inode of this process's pid namespace.
pub fn pid_namespace_inode_of_self() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino())
}

/// The inode of `/proc/PID/ns/pid` (identifies a pid namespace).
pub fn pid_namespace_inode(pid: i32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/pid"))
        .ok()
        .map(|m| m.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_ticks_tell_a_process_from_a_later_one_with_its_pid() {
        let me = std::process::id() as i32;
        let t = start_ticks(me).unwrap();
        assert_eq!(start_ticks(me).unwrap(), t);
        let o = Orphan {
            pid: me,
            start_ticks: t,
        };
        assert_eq!(orphan_state(&o), OrphanState::Waiting);
        let later = Orphan {
            start_ticks: t + 1,
            ..o
        };
        assert_eq!(orphan_state(&later), OrphanState::Reaped);
    }

    #[test]
    fn wait_status_decoding() {
        assert_eq!(WaitStatus::from_raw(3 << 8), WaitStatus::Exited(3));
        assert_eq!(WaitStatus::from_raw(9), WaitStatus::Signaled(9));
    }

    #[test]
    fn pidfd_of_a_child() {
        let mut c = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let fd = PidFd::open(c.id() as i32).unwrap();
        assert!(pid_exists(fd.pid()));
        fd.kill().unwrap();
        let st = c.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(st.signal(), Some(9));
        // Killing again after it is gone is fine.
        fd.kill().unwrap();
    }

    #[test]
    fn refuses_group_one() {
        assert!(kill_process_group(1, 0).is_err());
        assert!(kill_process_group(0, 0).is_err());
    }

    #[test]
    fn statvfs_of_root() {
        assert!(statvfs_flags(Path::new("/")).is_ok());
        assert!(statvfs_flags(Path::new("/definitely/not/here")).is_err());
    }
}
