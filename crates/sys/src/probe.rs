//! Kernel feature probes for `paddock doctor` and for refusing to start `isolated` on a
//! kernel that cannot provide it. Every probe *does* the thing in a throwaway child (create
//! the namespace, mount the tmpfs, pivot, install the filter, restrict with landlock,
//! create a cgroup) instead of reading a config knob, because knobs lie (distribution
//! patches, LSM policies, container runtimes' seccomp profiles).
//!
//! Invariant: probes leave nothing behind: children exit, probe cgroups are removed.

use std::io;

use crate::cgroup::{CgroupLimits, CgroupSet, Controller};

/// What a probe child does after its namespaces exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing (the namespace creation was the test).
    Nothing,
    /// Mount a tmpfs (mount namespace usable).
    Tmpfs,
    /// tmpfs + `pivot_root` into it.
    PivotRoot,
    /// tmpfs + an overlay mount.
    Overlay,
    /// Mount a procfs for the new pid namespace.
    Proc,
    /// Bring loopback up in the new network namespace.
    Loopback,
    /// Install Paddock's seccomp filter.
    Seccomp,
    /// Restrict with a landlock ruleset of the kernel's ABI.
    Landlock,
    /// Everything a jail needs, in one child (tmpfs, procfs, loopback when a network
    /// namespace was asked for, pivot_root, the seccomp filter): the cheap first check; the
    /// single probes then name what is missing when it fails.
    Jail,
}

/// Installs a seccomp program on the calling thread (no_new_privs must be set); returns
/// the raw `prctl` result.
///
/// # Safety
/// Only raw syscalls: safe to call in a cloned child before `_exit`.
unsafe fn install_filter(p: &[crate::seccomp::Insn]) -> i32 {
    let fprog = libc::sock_fprog {
        len: u16::try_from(p.len()).unwrap_or(u16::MAX),
        // `Insn` has the kernel's `sock_filter` layout (u16, u8, u8, u32).
        filter: p.as_ptr().cast_mut().cast::<libc::sock_filter>(),
    };
    // SAFETY: `fprog` points at `p`, which outlives the call; the kernel copies the program.
    unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &fprog as *const libc::sock_fprog as libc::c_ulong,
            0,
            0,
        )
    }
}

/// Runs `action` in a child created with `clone(flags)`; `Ok(())` when it succeeded, the
/// child's errno otherwise. `flags` containing `CLONE_NEWUSER` get identity uid/gid maps.
pub fn probe(flags: i32, action: Action) -> io::Result<()> {
    let seccomp = if matches!(action, Action::Seccomp | Action::Jail) {
        Some(crate::seccomp::build_program().map_err(io::Error::other)?)
    } else {
        None
    };
    let abi = crate::landlock::kernel_abi();
    let handled = if abi > 0 {
        crate::landlock::all_rights(abi)
    } else {
        0
    };
    let c = |s: &str| std::ffi::CString::new(s).map_err(io::Error::other);
    let (slash, tmp, tmpfs, dot, proc_s, overlay) = (
        c("/")?,
        c("/tmp")?,
        c("tmpfs")?,
        c(".")?,
        c("proc")?,
        c("overlay")?,
    );
    let dirs = [c("/tmp/l")?, c("/tmp/u")?, c("/tmp/w")?, c("/tmp/m")?];
    let tmp_proc = c("/tmp/proc")?;
    let ovl_opts = c("lowerdir=/tmp/l,upperdir=/tmp/u,workdir=/tmp/w")?;
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let (sync_r, sync_w) = (fds[0], fds[1]);
    let uid = crate::process::euid();
    let gid = crate::process::egid();
    // SAFETY: fork semantics (NULL stack); the child only runs raw syscalls on memory
    // prepared above and ends in _exit.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags as libc::c_ulong) | libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid == 0 {
        // SAFETY: child side, raw syscalls only.
        unsafe {
            // Keep only the read end: inherited write ends of sibling children created at the
            // same moment must not be held, or both wait for an EOF the other holds.
            let keep = sync_r as u32;
            if keep > 0 {
                libc::syscall(libc::SYS_close_range, 0u32, keep - 1, 0u32);
            }
            libc::syscall(libc::SYS_close_range, keep + 1, u32::MAX, 0u32);
            let mut b = [0u8; 1];
            if libc::read(sync_r, b.as_mut_ptr().cast(), 1) != 1 {
                libc::_exit(125);
            }
            let err = || {
                io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EIO)
            };
            macro_rules! t {
                ($e:expr) => {
                    if ($e) < 0 {
                        libc::_exit(err().clamp(1, 124));
                    }
                };
            }
            let private = (libc::MS_REC | libc::MS_PRIVATE) as libc::c_ulong;
            match action {
                Action::Nothing => {}
                Action::Tmpfs | Action::PivotRoot | Action::Overlay => {
                    t!(libc::mount(
                        std::ptr::null(),
                        slash.as_ptr(),
                        std::ptr::null(),
                        private,
                        std::ptr::null()
                    ));
                    t!(libc::mount(
                        tmpfs.as_ptr(),
                        tmp.as_ptr(),
                        tmpfs.as_ptr(),
                        0,
                        std::ptr::null()
                    ));
                    if action == Action::PivotRoot {
                        t!(libc::chdir(tmp.as_ptr()));
                        t!(libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) as i32);
                        t!(libc::umount2(dot.as_ptr(), libc::MNT_DETACH));
                    }
                    if action == Action::Overlay {
                        for d in &dirs {
                            t!(libc::mkdir(d.as_ptr(), 0o755));
                        }
                        t!(libc::mount(
                            overlay.as_ptr(),
                            dirs[3].as_ptr(),
                            overlay.as_ptr(),
                            0,
                            ovl_opts.as_ptr().cast()
                        ));
                    }
                }
                Action::Proc => {
                    t!(libc::mount(
                        std::ptr::null(),
                        slash.as_ptr(),
                        std::ptr::null(),
                        private,
                        std::ptr::null()
                    ));
                    t!(libc::mount(
                        proc_s.as_ptr(),
                        tmp.as_ptr(),
                        proc_s.as_ptr(),
                        0,
                        std::ptr::null()
                    ));
                }
                Action::Loopback => {
                    let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
                    t!(s);
                    let mut req: libc::ifreq = std::mem::zeroed();
                    req.ifr_name[0] = b'l' as libc::c_char;
                    req.ifr_name[1] = b'o' as libc::c_char;
                    t!(libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req));
                    req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
                    t!(libc::ioctl(s, libc::SIOCSIFFLAGS, &req));
                }
                Action::Jail => {
                    t!(libc::mount(
                        std::ptr::null(),
                        slash.as_ptr(),
                        std::ptr::null(),
                        private,
                        std::ptr::null()
                    ));
                    t!(libc::mount(
                        tmpfs.as_ptr(),
                        tmp.as_ptr(),
                        tmpfs.as_ptr(),
                        0,
                        std::ptr::null()
                    ));
                    t!(libc::mkdir(tmp_proc.as_ptr(), 0o755));
                    t!(libc::mount(
                        proc_s.as_ptr(),
                        tmp_proc.as_ptr(),
                        proc_s.as_ptr(),
                        0,
                        std::ptr::null()
                    ));
                    if flags & libc::CLONE_NEWNET != 0 {
                        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
                        t!(s);
                        let mut req: libc::ifreq = std::mem::zeroed();
                        req.ifr_name[0] = b'l' as libc::c_char;
                        req.ifr_name[1] = b'o' as libc::c_char;
                        t!(libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req));
                        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
                        t!(libc::ioctl(s, libc::SIOCSIFFLAGS, &req));
                    }
                    t!(libc::chdir(tmp.as_ptr()));
                    t!(libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) as i32);
                    t!(libc::umount2(dot.as_ptr(), libc::MNT_DETACH));
                    t!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0));
                    if let Some(p) = &seccomp {
                        t!(install_filter(p));
                    }
                    if libc::syscall(libc::SYS_keyctl, 0, 0, 0, 0, 0) >= 0 || err() != libc::EPERM {
                        libc::_exit(libc::ENOTSUP);
                    }
                }
                Action::Seccomp => {
                    t!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0));
                    if let Some(p) = &seccomp {
                        t!(install_filter(p));
                    }
                    // The filter must now refuse a denied syscall.
                    if libc::syscall(libc::SYS_keyctl, 0, 0, 0, 0, 0) >= 0 || err() != libc::EPERM {
                        libc::_exit(libc::ENOTSUP);
                    }
                }
                Action::Landlock => {
                    if abi < 1 {
                        libc::_exit(libc::ENOSYS);
                    }
                    let attr: [u64; 3] = [handled, 0, 0];
                    let fd = libc::syscall(
                        libc::SYS_landlock_create_ruleset,
                        attr.as_ptr(),
                        crate::landlock::ruleset_attr_size(abi.min(3)),
                        0u32,
                    );
                    t!(fd as i32);
                    t!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0));
                    t!(libc::syscall(libc::SYS_landlock_restrict_self, fd as i32, 0u32) as i32);
                    // Nothing is allowed now: reading / must fail.
                    if libc::open(slash.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) >= 0 {
                        libc::_exit(libc::ENOTSUP);
                    }
                }
            }
            libc::_exit(0);
        }
    }
    // SAFETY: closing our copy of the read end.
    unsafe { libc::close(sync_r) };
    if pid < 0 {
        let e = io::Error::last_os_error();
        // SAFETY: closing our write end.
        unsafe { libc::close(sync_w) };
        return Err(e);
    }
    let pid = pid as i32;
    let maps = (|| -> io::Result<()> {
        if flags & libc::CLONE_NEWUSER != 0 {
            if uid != 0 {
                std::fs::write(format!("/proc/{pid}/setgroups"), "deny")?;
            }
            std::fs::write(
                format!("/proc/{pid}/uid_map"),
                crate::uidmap::identity_map(uid),
            )?;
            std::fs::write(
                format!("/proc/{pid}/gid_map"),
                crate::uidmap::identity_map(gid),
            )?;
        }
        Ok(())
    })();
    let one = [1u8];
    // SAFETY: write one byte and close our end.
    unsafe {
        if maps.is_ok() {
            libc::write(sync_w, one.as_ptr().cast(), 1);
        }
        libc::close(sync_w);
    }
    let mut status = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    maps?;
    match crate::process::WaitStatus::from_raw(status) {
        crate::process::WaitStatus::Exited(0) => Ok(()),
        crate::process::WaitStatus::Exited(125) => {
            Err(io::Error::other("probe child was not released"))
        }
        crate::process::WaitStatus::Exited(code) => Err(io::Error::from_raw_os_error(code)),
        crate::process::WaitStatus::Signaled(s) => Err(io::Error::other(format!(
            "probe child killed by signal {s}"
        ))),
    }
}

/// Creates and removes a probe cgroup with a limit for `c`; `Ok(version)` when it works.
pub fn probe_cgroup(c: Controller) -> Result<u8, String> {
    let layout = crate::cgroup::discover_self();
    let Some(loc) = layout.controllers.get(&c) else {
        return Err(format!(
            "no {} controller is mounted for this process (v1 or v2)",
            c.name()
        ));
    };
    let mut only = crate::cgroup::Layout::default();
    only.controllers.insert(c, loc.clone());
    let name = format!("paddock-probe-{}", std::process::id());
    let (set, failed) = CgroupSet::create(&only, &name);
    if let Some((_, e)) = failed.into_iter().next() {
        return Err(e.to_string());
    }
    let limits = CgroupLimits {
        memory_bytes: Some(64 << 20),
        pids: Some(16),
        cpus: Some(1.0),
    };
    let r = set
        .create_exec("x", &limits)
        .map(|cg| cg.remove())
        .map_err(|e| e.to_string());
    set.remove();
    r.map(|()| loc.version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_report_errors_without_panicking() {
        // Whatever this kernel supports, a probe returns and leaves no child behind.
        let r = probe(libc::CLONE_NEWUSER, Action::Nothing);
        if std::env::var_os("CI").is_some() {
            assert!(r.is_ok(), "user namespaces are required in CI: {r:?}");
        }
        // A plain fork with the seccomp filter must refuse keyctl everywhere seccomp exists.
        let r = probe(0, Action::Seccomp);
        if std::env::var_os("CI").is_some() {
            assert!(r.is_ok(), "{r:?}");
        }
    }
}
