//! The file-descriptor [`Walker`] that drives `MountTable::walk`.
//!
//! Invariant: every directory on the stack was opened relative to the one below it with
//! `O_NOFOLLOW | O_DIRECTORY`, starting from a mount's host root. A symlink swapped in
//! between `lookup` and `descend` therefore makes `descend` fail; the kernel never follows
//! it, so the walk cannot be steered outside the mount by a concurrent writer. The stack
//! is a [`DirChain`], so a path of any depth holds at most [`crate::chain::CHAIN_MAX_FDS`]
//! descriptors.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use paddock_core::mount::{Mount, Node, Walker};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};

use crate::FsOptions;
use crate::chain::DirChain;

/// Flags of every directory on the stack: a handle for `*at` calls, nothing more.
pub(crate) const DIR_PATH_FLAGS: OFlags = OFlags::PATH
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Mode of directories created for a write (before the umask).
pub(crate) const NEW_DIR_MODE: u32 = 0o755;
/// Mode of directories created for a write in a thread's data when it is private
/// ([`crate::FsOptions::private_user_data`]).
pub(crate) const PRIVATE_DIR_MODE: u32 = 0o700;

/// A stack of directories, the top being the current directory of the walk.
#[derive(Debug)]
pub(crate) struct FdWalker<'o> {
    stack: DirChain,
    opts: &'o FsOptions,
    /// Per level of the stack: what a directory created there gets, from the mount it was
    /// entered from (its owner; whether it is a thread's data made private).
    levels: Vec<(Option<(u32, u32)>, bool)>,
}

impl<'o> FdWalker<'o> {
    /// A walker that gives directories it creates the owner and mode `opts` ask for in
    /// the mount they are created in.
    pub(crate) fn new(opts: &'o FsOptions) -> Self {
        Self {
            stack: DirChain::default(),
            opts,
            levels: Vec::new(),
        }
    }

    /// Takes the current directory, ending the walk.
    pub(crate) fn into_top(self) -> std::io::Result<OwnedFd> {
        self.stack.into_top()
    }
}

fn name_of(name: &str) -> std::io::Result<CString> {
    CString::new(name).map_err(|_| std::io::Error::other("name contains a NUL byte"))
}

/// Opens a mount's host root as an `O_PATH` directory handle (see [`open_host_root`]).
pub(crate) fn open_mount_root(mount: &Mount) -> std::io::Result<OwnedFd> {
    open_host_root(&mount.host, OFlags::PATH, mount.is_user_data())
}

/// Opens a mount's host root with `flags` (plus `O_DIRECTORY | O_CLOEXEC`). The roots of
/// a thread's data (`no_symlinks`) are canonical directories whose parent the tenant can
/// write (`user-data` holds `workspace`, `uploads` and `outputs`): a symlink anywhere in
/// their path was planted, so it is refused (`ELOOP`), never followed —
/// `openat2(RESOLVE_NO_SYMLINKS)`, or on a kernel without it a walk opening each component
/// `O_NOFOLLOW`. Other roots come from the operator's configuration, where following
/// symlinks is intended.
pub(crate) fn open_host_root(
    host: &Path,
    flags: OFlags,
    no_symlinks: bool,
) -> std::io::Result<OwnedFd> {
    let flags = flags | OFlags::DIRECTORY | OFlags::CLOEXEC;
    if !no_symlinks {
        return Ok(rustix::fs::open(host, flags, Mode::empty())?);
    }
    let resolve = ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    match rustix::fs::openat2(rustix::fs::CWD, host, flags, Mode::empty(), resolve) {
        Err(rustix::io::Errno::NOSYS) => {}
        r => return Ok(r?),
    }
    let start = if host.is_absolute() { "/" } else { "." };
    let mut cur = rustix::fs::open(start, DIR_PATH_FLAGS, Mode::empty())?;
    for part in host.iter().filter(|p| p.as_bytes() != b"/") {
        cur = rustix::fs::openat(&cur, part, DIR_PATH_FLAGS, Mode::empty())?;
    }
    Ok(rustix::fs::openat(&cur, ".", flags, Mode::empty())?)
}

/// Classifies `name` in `dir` without following a symlink. A link is opened (`O_PATH |
/// O_NOFOLLOW`) and read through that descriptor, so an entry the tenant swaps between the
/// stat and the read is classified as what the descriptor holds, never misread.
pub(crate) fn lookup_at(dir: impl AsFd, name: &str) -> std::io::Result<Node> {
    let dir = dir.as_fd();
    let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(Node::Missing),
        Err(e) => return Err(e.into()),
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::Symlink {
        return Ok(node_of(st.st_mode));
    }
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(Node::Missing),
        Err(e) => return Err(e.into()),
    };
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Symlink {
        return Ok(node_of(st.st_mode));
    }
    let target = rustix::fs::readlinkat(&fd, "", Vec::new())?;
    // A non-UTF-8 target cannot name a virtual path; the walk treats an empty target as
    // dangling.
    Ok(Node::Symlink(target.into_string().unwrap_or_default()))
}

fn node_of(mode: u32) -> Node {
    match FileType::from_raw_mode(mode) {
        FileType::Directory => Node::Dir,
        FileType::RegularFile => Node::File,
        _ => Node::Other,
    }
}

impl Walker for FdWalker<'_> {
    fn reset(&mut self) {
        self.stack.clear();
        self.levels.clear();
    }

    fn push_mount(&mut self, mount: &Mount) -> std::io::Result<()> {
        self.stack
            .push_host_root(&mount.host, OFlags::PATH, mount.is_user_data())?;
        self.levels.push((
            self.opts.owner_for(mount),
            self.opts.private_user_data && mount.is_user_data(),
        ));
        Ok(())
    }

    fn lookup(&mut self, name: &str) -> std::io::Result<Node> {
        lookup_at(self.stack.top().map_err(|l| l.error)?, name)
    }

    fn descend(&mut self, name: &str) -> std::io::Result<()> {
        self.stack
            .push_child(&name_of(name)?, OFlags::PATH)
            .map_err(|l| l.error)?;
        let here = self
            .levels
            .last()
            .copied()
            .unwrap_or((self.opts.owner, false));
        self.levels.push(here);
        Ok(())
    }

    fn ascend(&mut self) {
        self.stack.pop();
        self.levels.pop();
    }

    fn mkdir(&mut self, name: &str) -> std::io::Result<()> {
        let (owner, private) = self
            .levels
            .last()
            .copied()
            .unwrap_or((self.opts.owner, false));
        let mode = if private {
            PRIVATE_DIR_MODE
        } else {
            NEW_DIR_MODE
        };
        let top = self.stack.top().map_err(|l| l.error)?;
        match rustix::fs::mkdirat(top, name, Mode::from_raw_mode(mode)) {
            Ok(()) => {
                if let Some((uid, gid)) = owner {
                    // SYMLINK_NOFOLLOW: if the new directory was swapped for a symlink,
                    // the link itself is chowned, never its target.
                    rustix::fs::chownat(
                        top,
                        name,
                        Some(rustix::fs::Uid::from_raw(uid)),
                        Some(rustix::fs::Gid::from_raw(gid)),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )?;
                }
                Ok(())
            }
            Err(rustix::io::Errno::EXIST) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paddock_core::VirtualPath;
    use paddock_core::mount::MountKind;

    fn mount(host: &std::path::Path) -> Mount {
        Mount {
            container: VirtualPath::parse("/m").expect("test setup"),
            host: host.to_path_buf(),
            read_only: false,
            kind: MountKind::Custom,
        }
    }

    #[test]
    fn classifies_and_refuses_to_descend_symlinks() {
        let tmp = tempfile::tempdir().expect("test setup");
        std::fs::create_dir(tmp.path().join("d")).expect("test setup");
        std::fs::write(tmp.path().join("f"), "x").expect("test setup");
        std::os::unix::fs::symlink("/etc", tmp.path().join("l")).expect("test setup");
        let opts = crate::FsOptions::default();
        let mut w = FdWalker::new(&opts);
        w.push_mount(&mount(tmp.path())).expect("test setup");
        assert_eq!(w.lookup("d").expect("test setup"), Node::Dir);
        assert_eq!(w.lookup("f").expect("test setup"), Node::File);
        assert_eq!(w.lookup("nope").expect("test setup"), Node::Missing);
        assert_eq!(
            w.lookup("l").expect("test setup"),
            Node::Symlink("/etc".into())
        );
        assert!(
            w.descend("l").is_err(),
            "descend must never follow a symlink"
        );
        assert!(w.descend("f").is_err());
        w.descend("d").expect("test setup");
        w.mkdir("new").expect("test setup");
        w.mkdir("new").expect("test setup");
        assert!(tmp.path().join("d/new").is_dir());
        w.ascend();
        assert_eq!(w.lookup("d").expect("test setup"), Node::Dir);
    }
}
