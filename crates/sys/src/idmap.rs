//! User namespaces that describe an idmapping, for idmapped mounts (`mount_setattr` with
//! `MOUNT_ATTR_IDMAP`): a directory owned by another program (DeerFlow's gateway) is shown to
//! the sandbox as owned by the sandbox's own ids, and files the sandbox creates there are
//! owned by that program on disk — no chown of someone else's files, whatever their modes.
//!
//! The namespace is made by a throwaway child cloned with `CLONE_NEWUSER` that only waits:
//! Paddock writes its maps, opens `/proc/{pid}/ns/user`, and lets it exit; the open
//! descriptor keeps the namespace. Only a root Paddock can write a map naming other ids.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A user namespace whose map shows host `owner` (uid, gid) as `to` (uid, gid) through an
/// idmapped mount.
pub fn userns_for(owner: (u32, u32), to: (u32, u32)) -> io::Result<OwnedFd> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills the array with two fresh descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fork semantics (no new stack); the child only reads one byte and exits.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid == 0 {
        // SAFETY: child: close the inherited write end (so a parent that dies releases us),
        // wait for end of file, exit. Raw syscalls only.
        unsafe {
            libc::close(w.as_raw_fd());
            let mut b = [0u8; 1];
            libc::read(r.as_raw_fd(), b.as_mut_ptr().cast(), 1);
            libc::_exit(0);
        }
    }
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    let pid = pid as i32;
    let made = (|| {
        let proc = format!("/proc/{pid}");
        std::fs::write(
            format!("{proc}/uid_map"),
            format!("{} {} 1\n", owner.0, to.0),
        )?;
        std::fs::write(
            format!("{proc}/gid_map"),
            format!("{} {} 1\n", owner.1, to.1),
        )?;
        std::fs::File::open(format!("{proc}/ns/user")).map(OwnedFd::from)
    })();
    drop(w);
    let mut status = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    made
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapping_namespace_is_made_and_its_child_reaped() {
        if crate::process::euid() != 0 {
            eprintln!("SKIPPED: mapping other ids needs root");
            return;
        }
        let ns = userns_for((4242, 4343), (951_000, 951_001)).unwrap();
        let link = std::fs::read_link(format!("/proc/self/fd/{}", ns.as_raw_fd())).unwrap();
        assert!(link.to_string_lossy().starts_with("user:["), "{link:?}");
    }
}
