//! Kernel feature probes for `paddock doctor` and for refusing to start `isolated` on a
//! kernel that cannot provide it. Every probe *does* the thing in a throwaway child (create
//! the namespace, mount the tmpfs, pivot, install the filter, restrict with landlock,
//! create a cgroup) instead of reading a config knob, because knobs lie (distribution
//! patches, LSM policies, container runtimes' seccomp profiles).
//!
//! Invariant: probes leave nothing behind: children exit, probe cgroups are removed.

use std::ffi::CStr;
use std::io;

use crate::cgroup::{CgroupLimits, CgroupSet, Controller};
use crate::syscalls::{
    Errno, InChild, SysResult, Syscalls, close_all_but, make_mounts_private, pivot_into,
};

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

/// What a probe child does once released: `action` over `k`, returning the errno of the
/// first step that failed (`ENOTSUP` when a restriction did not restrict).
fn act<K: Syscalls>(
    k: &K,
    action: Action,
    flags: i32,
    seccomp: Option<&[crate::seccomp::Insn]>,
    landlock_abi: i32,
) -> SysResult {
    // A tmpfs on /tmp, not propagated back to the host.
    let tmpfs = || {
        make_mounts_private(k)?;
        k.mount(Some(c"tmpfs"), c"/tmp", Some(c"tmpfs"), 0, None)
    };
    let proc_at = |dir: &CStr| k.mount(Some(c"proc"), dir, Some(c"proc"), 0, None);
    let pivot = || pivot_into(k, c"/tmp").map_err(|(_, e)| e);
    // The filter must then refuse a denied syscall (keyctl).
    let seccomp_refuses = || {
        k.set_no_new_privs()?;
        if let Some(p) = seccomp {
            k.install_seccomp(p)?;
        }
        // SAFETY: keyctl with all-zero arguments reads and writes no memory.
        if unsafe { libc::syscall(libc::SYS_keyctl, 0, 0, 0, 0, 0) } >= 0
            || Errno::last() != Errno(libc::EPERM)
        {
            return Err(Errno(libc::ENOTSUP));
        }
        Ok(())
    };
    match action {
        Action::Nothing => Ok(()),
        Action::Tmpfs => tmpfs(),
        Action::PivotRoot => {
            tmpfs()?;
            pivot()
        }
        Action::Overlay => {
            tmpfs()?;
            for d in [c"/tmp/l", c"/tmp/u", c"/tmp/w", c"/tmp/m"] {
                k.mkdir(d, 0o755)?;
            }
            k.mount(
                Some(c"overlay"),
                c"/tmp/m",
                Some(c"overlay"),
                0,
                Some(c"lowerdir=/tmp/l,upperdir=/tmp/u,workdir=/tmp/w"),
            )
        }
        Action::Proc => {
            make_mounts_private(k)?;
            proc_at(c"/tmp")
        }
        Action::Loopback => k.loopback_up(),
        Action::Jail => {
            tmpfs()?;
            k.mkdir(c"/tmp/proc", 0o755)?;
            proc_at(c"/tmp/proc")?;
            if flags & libc::CLONE_NEWNET != 0 {
                k.loopback_up()?;
            }
            pivot()?;
            seccomp_refuses()
        }
        Action::Seccomp => seccomp_refuses(),
        Action::Landlock => {
            if landlock_abi < 1 {
                return Err(Errno(libc::ENOSYS));
            }
            let handled = crate::landlock::all_rights(landlock_abi);
            let fd = k.landlock_create_ruleset(landlock_abi.min(3), handled, 0)?;
            k.set_no_new_privs()?;
            k.landlock_restrict_self(fd)?;
            // Nothing is allowed now: reading / must fail.
            if k.open(c"/", libc::O_RDONLY | libc::O_DIRECTORY, 0).is_ok() {
                return Err(Errno(libc::ENOTSUP));
            }
            Ok(())
        }
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
        // SAFETY: we are the freshly cloned child, which ends in `exit` below.
        let k = unsafe { InChild::assume() };
        // Keep only the read end: inherited write ends of sibling children created at the
        // same moment must not be held, or both wait for an EOF the other holds.
        close_all_but(&k, &[sync_r as u32]);
        let mut b = [0u8; 1];
        if k.read(sync_r, &mut b) != Ok(1) {
            k.exit(125);
        }
        match act(&k, action, flags, seccomp.as_deref(), abi) {
            Ok(()) => k.exit(0),
            Err(e) => k.exit(e.0.clamp(1, 124)),
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
