//! Host-side operations on directory trees a tenant can write (a thread's user data):
//! creating directories below a trusted root, handing a tree to the sandbox's uid, removing
//! one. Everything goes through descriptors: each directory is opened relative to its
//! parent with `O_NOFOLLOW | O_DIRECTORY`, each change is made with `*at` calls and
//! `AT_SYMLINK_NOFOLLOW`, so a tenant that swaps a directory for a symlink while Paddock
//! (as root) walks its tree never makes Paddock create, chown or delete anything outside it.
//!
//! Invariant: no path below `root` is ever resolved by the kernel from a string; the number
//! of descriptors open at once is bounded by [`MAX_DEPTH`], whatever the tree's width.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Deepest directory level a walk goes to; below it the walk fails (and says so) rather
/// than hold more descriptors.
pub const MAX_DEPTH: usize = 256;

fn cstr(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn open_dir_at(dir: RawFd, name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: openat on a live directory descriptor with a NUL-terminated name.
    let fd = unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens `root` (a directory Paddock trusts: the operator's or its own data dir; symlinks
/// in its own path are allowed).
pub fn open_root(root: &Path) -> io::Result<OwnedFd> {
    let c = cstr(root.as_os_str().as_bytes())?;
    // SAFETY: open with a NUL-terminated path.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Creates `rel` (a relative path of plain components) below `root`, like `mkdir -p`,
/// never following a symlink: a component that is one fails with `ELOOP`/`ENOTDIR`.
pub fn mkdirs_beneath(root: &Path, rel: &str) -> io::Result<()> {
    let mut cur = open_root(root)?;
    for part in rel.split('/').filter(|p| !p.is_empty()) {
        if part == "." || part == ".." {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let c = cstr(part.as_bytes())?;
        // SAFETY: mkdirat on a live directory descriptor.
        if unsafe { libc::mkdirat(cur.as_raw_fd(), c.as_ptr(), 0o755) } < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(e);
            }
        }
        cur = open_dir_at(cur.as_raw_fd(), &c)?;
    }
    Ok(())
}

fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: fstat into a zeroed local.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(st)
    }
}

/// Reads the names of a directory (opened with [`open_dir_at`]), closing its stream.
fn names(dir: &OwnedFd) -> io::Result<Vec<CString>> {
    // fdopendir takes the descriptor: give it a duplicate.
    // SAFETY: F_DUPFD_CLOEXEC of a live descriptor.
    let dup = unsafe { libc::fcntl(dir.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fdopendir takes ownership of `dup`; closedir below releases both.
    let d = unsafe { libc::fdopendir(dup) };
    if d.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: `dup` was not taken.
        unsafe { libc::close(dup) };
        return Err(e);
    }
    let mut out = Vec::new();
    loop {
        // SAFETY: readdir on a live stream; errno is cleared first to tell end from error.
        let (ent, err) = unsafe {
            *libc::__errno_location() = 0;
            let e = libc::readdir(d);
            (e, *libc::__errno_location())
        };
        if ent.is_null() {
            // SAFETY: closing the stream we opened.
            unsafe { libc::closedir(d) };
            if err != 0 {
                return Err(io::Error::from_raw_os_error(err));
            }
            return Ok(out);
        }
        // SAFETY: d_name is a NUL-terminated array inside the entry.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        let b = name.to_bytes();
        if b != b"." && b != b".." {
            out.push(name.to_owned());
        }
    }
}

/// Gives `root` and everything below it to `uid:gid` (`fchownat` with
/// `AT_SYMLINK_NOFOLLOW`: a symlink itself is chowned, its target never), when `root` is
/// not owned by them already (the common case costs one `fstat`). A directory is entered
/// only through `O_NOFOLLOW`, so one swapped for a symlink mid-walk is not followed: the
/// walk reports `ELOOP`/`ENOTDIR` for it and goes on with the rest.
///
/// Returns how many entries could not be handed over (raced or unreadable).
pub fn chown_tree(root: &Path, uid: u32, gid: u32) -> io::Result<usize> {
    let top = open_root(root)?;
    let st = fstat(top.as_raw_fd())?;
    if st.st_uid == uid && st.st_gid == gid {
        return Ok(0);
    }
    // SAFETY: fchown on our own descriptor.
    if unsafe { libc::fchown(top.as_raw_fd(), uid, gid) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut failed = 0usize;
    // Depth-first, one open directory per level (bounded by MAX_DEPTH): each level holds
    // its directory and the names still to visit.
    let mut stack: Vec<(OwnedFd, Vec<CString>)> = vec![(top.try_clone()?, names(&top)?)];
    loop {
        let next = match stack.last_mut() {
            None => break,
            Some((dir, pending)) => pending.pop().map(|n| (dir.as_raw_fd(), n)),
        };
        let Some((dfd, name)) = next else {
            stack.pop();
            continue;
        };
        // SAFETY: fchownat relative to a live directory descriptor, never following.
        let r = unsafe { libc::fchownat(dfd, name.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) };
        if r < 0 {
            failed += 1;
            continue;
        }
        // Descend only into what is a directory now, opened without following.
        match open_dir_at(dfd, &name) {
            Ok(child) => {
                if stack.len() >= MAX_DEPTH {
                    failed += 1;
                    continue;
                }
                match names(&child) {
                    Ok(n) => stack.push((child, n)),
                    Err(_) => failed += 1,
                }
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR) | Some(libc::ELOOP)) => {}
            Err(_) => failed += 1,
        }
    }
    Ok(failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn mkdirs_never_follow_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir(&root).unwrap();
        mkdirs_beneath(&root, "a/b/c").unwrap();
        assert!(root.join("a/b/c").is_dir());
        mkdirs_beneath(&root, "a/b/c").unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        assert!(mkdirs_beneath(&root, "link/x").is_err());
        assert!(!outside.join("x").exists());
        assert!(mkdirs_beneath(&root, "../x").is_err());
    }

    #[test]
    fn chown_tree_hands_over_without_following_links() {
        if crate::process::euid() != 0 {
            eprintln!("SKIPPED: chown needs root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("ws");
        std::fs::create_dir_all(d.join("sub/deeper")).unwrap();
        std::fs::write(d.join("sub/f"), "x").unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "host").unwrap();
        std::os::unix::fs::symlink(&victim, d.join("link")).unwrap();
        assert_eq!(chown_tree(&d, 951_123, 951_124).unwrap(), 0);
        for p in ["sub", "sub/f", "sub/deeper"] {
            assert_eq!(std::fs::metadata(d.join(p)).unwrap().uid(), 951_123, "{p}");
        }
        assert_eq!(
            std::fs::symlink_metadata(d.join("link")).unwrap().uid(),
            951_123
        );
        assert_eq!(
            std::fs::metadata(&victim).unwrap().uid(),
            0,
            "target untouched"
        );
        // Already owned: nothing to do.
        assert_eq!(chown_tree(&d, 951_123, 951_124).unwrap(), 0);
    }
}
